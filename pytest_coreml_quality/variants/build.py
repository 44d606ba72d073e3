"""The coremltools calls behind each recipe step: build one compressed model file.

NeuralNetwork recipes go through ``quantization_utils.quantize_weights`` (or, for 1 to 8
bits, :mod:`.nn_fast_quantize`, which writes the same bytes much faster). ML Program
recipes go through ``coremltools.optimize.coreml``; in a joint recipe every step after
the first passes ``joint_compression=True``, as coremltools requires.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_coreml_quality.errors import RecipeError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.variants import nn_fast_quantize
from pytest_coreml_quality.variants.quiet import quiet_coremltools
from pytest_coreml_quality.variants.nn_fusion import networks, optimize_nn
from pytest_coreml_quality.variants.reproducible import make_reproducible
from pytest_coreml_quality.variants.recipes import LinearQuantize, NNQuantize, Palettize, Prune, Recipe, Step

# The lookup table of a palN-int8lut recipe: one int8 scale for the whole table.
INT8_LUT_CONFIG = {"mode": "linear_symmetric", "dtype": "int8", "granularity": "per_tensor"}


def build_recipe(model: Model, recipe: Recipe, out_path: Path, *, fast_nn: bool = True) -> str:
    """Compress ``model`` with ``recipe`` and save the result at ``out_path``.

    ``out_path`` must carry the model's suffix (``.mlmodel`` or ``.mlpackage``). Returns
    the name of the path taken (``"fast"`` or ``"coremltools"``) for the progress line.
    coremltools' prints, bars and warnings are captured; if it fails, a
    :class:`RecipeError` carries its message and the tail of what it printed.
    """
    recipe.check_applies_to(model)
    if recipe.is_base:
        raise ValueError("the base recipe is the model itself: nothing to build")
    with quiet_coremltools() as captured:
        try:
            if recipe.family == "neuralNetwork":
                return _build_neural_network(model, recipe.steps[0], out_path, fast_nn)  # type: ignore[arg-type]
            _build_ml_program(model, recipe.steps, out_path)
            return "coremltools"
        except RecipeError:
            raise
        except Exception as exc:  # coremltools raises plain Exception/ValueError for bad combinations
            detail = f"{type(exc).__name__}: {exc}"
            tail = captured.tail()
            if tail:
                detail += f"\ncoremltools output:\n{tail}"
            raise RecipeError(
                f"coremltools could not build recipe '{recipe.name}': {detail}", path=model.path, field="recipe"
            ) from exc


def _build_neural_network(model: Model, step: NNQuantize, out_path: Path, fast_nn: bool) -> str:
    import coremltools as ct

    if fast_nn and step.nbits <= 8:
        try:
            nn_fast_quantize.quantize_file(model.path, out_path, step.nbits, step.mode)
        except nn_fast_quantize.NotCovered:
            pass  # coremltools below reads the model afresh
        else:
            return "fast"
    from coremltools.models.neural_network import quantization_utils

    mlmodel = ct.models.MLModel(str(model.path), skip_model_load=True)
    if step.nbits < 16:
        # quantize_weights fuses layers first and fails on conv + batch norm (coremltools 9):
        # fuse them correctly beforehand, so its own pass finds nothing left to fold.
        spec = mlmodel.get_spec()
        keep = {o.name for o in spec.description.output}
        fused = sum(optimize_nn(net.layers, keep) for net in networks(spec))
        if fused:
            mlmodel = ct.models.MLModel(spec, skip_model_load=True)
    quantized = quantization_utils.quantize_weights(mlmodel, nbits=step.nbits, quantization_mode=step.mode)
    quantized.save(str(out_path))
    make_reproducible(out_path)  # same bytes in every process: a rebuilt variant keeps its hash
    return "coremltools"


def _build_ml_program(model: Model, steps: tuple[Step, ...], out_path: Path) -> None:
    import coremltools as ct

    mlmodel = ct.models.MLModel(str(model.path), skip_model_load=True)
    for index, step in enumerate(steps):
        mlmodel = apply_step(mlmodel, step, joint=index > 0)
    mlmodel.save(str(out_path))
    make_reproducible(out_path)  # same bytes in every process: a rebuilt variant keeps its hash


def apply_step(mlmodel: Any, step: Step, *, joint: bool) -> Any:
    """Apply one ML Program step with ``coremltools.optimize.coreml``; return the new MLModel."""
    import coremltools.optimize.coreml as cto

    def config(op_config: Any) -> Any:
        return cto.OptimizationConfig(global_config=op_config)

    if isinstance(step, LinearQuantize):
        op = cto.OpLinearQuantizerConfig(**linear_config_kwargs(step))
        return cto.linear_quantize_weights(mlmodel, config(op), joint_compression=joint)
    if isinstance(step, Palettize):
        op = cto.OpPalettizerConfig(**palettize_config_kwargs(step))
        out = cto.palettize_weights(mlmodel, config(op), joint_compression=joint)
        if step.int8_lut:
            lut = cto.OpLinearQuantizerConfig(**INT8_LUT_CONFIG)
            out = cto.linear_quantize_weights(out, config(lut), joint_compression=True)
        return out
    if isinstance(step, Prune):
        op = cto.OpMagnitudePrunerConfig(**prune_config_kwargs(step))
        return cto.prune_weights(mlmodel, config(op), joint_compression=joint)
    raise TypeError(f"not an ML Program step: {step!r}")


def linear_config_kwargs(step: LinearQuantize) -> dict[str, Any]:
    """``OpLinearQuantizerConfig`` arguments for an ``int..`` step."""
    kwargs: dict[str, Any] = {
        "mode": "linear_symmetric" if step.symmetric else "linear",
        "dtype": step.dtype,
        "granularity": step.granularity,
    }
    if step.block_size is not None:
        kwargs["block_size"] = step.block_size
    return kwargs


def palettize_config_kwargs(step: Palettize) -> dict[str, Any]:
    """``OpPalettizerConfig`` arguments for a ``pal..`` step (without the int8 LUT pass)."""
    kwargs: dict[str, Any] = {"mode": step.mode, "nbits": step.nbits}
    if step.group_size is not None:
        kwargs.update(granularity="per_grouped_channel", group_size=step.group_size)
    return kwargs


def prune_config_kwargs(step: Prune) -> dict[str, Any]:
    """``OpMagnitudePrunerConfig`` arguments for a ``prune..`` step."""
    if step.n_m is not None:
        return {"n_m_ratio": step.n_m}
    kwargs: dict[str, Any] = {"target_sparsity": (step.percent or 0) / 100}
    if step.block_size is not None:
        kwargs["block_size"] = step.block_size
    return kwargs


def coremltools_call(recipe: Recipe) -> str:
    """The coremltools call(s) a recipe makes, as Python source, for docs and reports."""
    if recipe.is_base:
        return "(none: the model as given)"
    calls = []
    for index, step in enumerate(recipe.steps):
        joint = ", joint_compression=True" if index > 0 else ""
        if isinstance(step, NNQuantize):
            calls.append(f"quantization_utils.quantize_weights(model, nbits={step.nbits}, quantization_mode={step.mode!r})")
        elif isinstance(step, LinearQuantize):
            calls.append(f"linear_quantize_weights(m, OptimizationConfig(OpLinearQuantizerConfig({_kw(linear_config_kwargs(step))})){joint})")
        elif isinstance(step, Palettize):
            calls.append(f"palettize_weights(m, OptimizationConfig(OpPalettizerConfig({_kw(palettize_config_kwargs(step))})){joint})")
            if step.int8_lut:
                calls.append(
                    f"linear_quantize_weights(m, OptimizationConfig(OpLinearQuantizerConfig({_kw(INT8_LUT_CONFIG)})), joint_compression=True)"
                )
        elif isinstance(step, Prune):
            calls.append(f"prune_weights(m, OptimizationConfig(OpMagnitudePrunerConfig({_kw(prune_config_kwargs(step))})){joint})")
    return " -> ".join(calls)


def _kw(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())

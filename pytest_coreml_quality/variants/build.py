"""The coremltools calls behind each recipe step: build one compressed model file.

NeuralNetwork recipes go through ``quantization_utils.quantize_weights`` (or, for 1 to 8 and 16
bits, :mod:`.nn_fast_quantize`, which writes the same bytes much faster). ML Program
recipes go through ``coremltools.optimize.coreml``; in a joint recipe every step after
the first passes ``joint_compression=True``, as coremltools requires.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_coreml_quality.errors import RecipeError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.variants import nn_fast_quantize, nn_requantize
from pytest_coreml_quality.quiet import quiet_coremltools
from pytest_coreml_quality.variants.kmeans1d import DistinctMemo
from pytest_coreml_quality.variants.nn_fusion import networks, optimize_nn
from pytest_coreml_quality.variants.recipes import MLStep, NNQuantize, Recipe, Step
from pytest_coreml_quality.variants.reproducible import make_reproducible, save_spec


def build_recipe(
    model: Model, recipe: Recipe, out_path: Path, *, fast_nn: bool = True, memo: DistinctMemo | None = None
) -> str:
    """Compress ``model`` with ``recipe`` and save the result at ``out_path``.

    ``out_path`` ends in ``.mlmodel`` for a NeuralNetwork (even one the user shipped in a
    package), else in the model's suffix. Returns
    the name of the path taken (``"fast"`` or ``"coremltools"``) for the progress line.
    coremltools' prints, bars and warnings are captured; if it fails, a
    :class:`RecipeError` carries its message and the tail of what it printed. ``memo``
    shares k-means sorts between the builds of one sweep (:class:`.kmeans1d.DistinctMemo`).
    """
    recipe.check_applies_to(model)
    if recipe.is_base:
        raise ValueError("the base recipe is the model itself: nothing to build")
    with quiet_coremltools() as captured:
        try:
            if recipe.family == "neuralNetwork":
                return _build_neural_network(model, recipe.steps[0], out_path, fast_nn, memo)  # type: ignore[arg-type]
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


def _build_neural_network(model: Model, step: NNQuantize, out_path: Path, fast_nn: bool, memo: DistinctMemo | None) -> str:
    import coremltools as ct

    # Weights already stored with more bits than asked (q4 of an 8-bit model) are expanded
    # to float first, since quantize_weights would skip them; None: nothing to expand.
    spec = _dequantized_spec(model, step.nbits) if step.nbits < 16 else None
    if fast_nn and (step.nbits <= 8 or (step.nbits == 16 and spec is None)):
        try:
            if step.nbits == 16:
                nn_fast_quantize.fp16_file(model.path, out_path)
            elif spec is None:
                nn_fast_quantize.quantize_file(model.path, out_path, step.nbits, step.mode, memo)
            else:
                save_spec(nn_fast_quantize.quantize_spec(_copy(spec), step.nbits, step.mode), out_path)
        except nn_fast_quantize.NotCovered:
            pass  # coremltools below reads the model afresh
        else:
            return "fast"
    from coremltools.models.neural_network import quantization_utils

    mlmodel = ct.models.MLModel(str(model.path) if spec is None else _copy(spec), skip_model_load=True)
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


def _dequantized_spec(model: Model, nbits: int) -> Any | None:
    """A copy of the model's spec with weights stored above ``nbits`` bits expanded to float, or None."""
    try:
        if next(nn_requantize.fields_above(model.spec, nbits), None) is None:
            return None  # the common case (a float model): no copy of a large spec
        spec = _copy(model.spec)
        nn_requantize.dequantize_above(spec, nbits)
    except nn_fast_quantize.NotCovered:
        return None  # a layout we cannot read: quantize_weights skips those weights, the note says so
    return spec


def _copy(spec: Any) -> Any:
    out = type(spec)()
    out.CopyFrom(spec)
    return out


def _build_ml_program(model: Model, steps: tuple[Step, ...], out_path: Path) -> None:
    import coremltools as ct

    mlmodel = ct.models.MLModel(str(model.path), skip_model_load=True)
    for index, step in enumerate(steps):
        mlmodel = apply_step(mlmodel, step, joint=index > 0)
    mlmodel.save(str(out_path))
    make_reproducible(out_path)  # same bytes in every process: a rebuilt variant keeps its hash


def apply_step(mlmodel: Any, step: MLStep, *, joint: bool) -> Any:
    """Apply one ML Program step's calls with ``coremltools.optimize.coreml``; return the new MLModel."""
    import coremltools.optimize.coreml as cto

    for index, call in enumerate(step.calls()):
        config = cto.OptimizationConfig(global_config=getattr(cto, call.config)(**call.kwargs))
        # Every call after a model's first compression must say so: coremltools requires it.
        mlmodel = getattr(cto, call.function)(mlmodel, config, joint_compression=joint or index > 0)
    return mlmodel


def coremltools_call(recipe: Recipe) -> str:
    """The coremltools call(s) a recipe makes, as Python source, for docs and reports."""
    if recipe.is_base:
        return "(none: the model as given)"
    return " -> ".join(step.source(joint=index > 0) for index, step in enumerate(recipe.steps))

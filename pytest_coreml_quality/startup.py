"""Start of a run: open what the user named and check everything that can be checked before any work.

Models, golden set and recipes are opened; settings that need the models or this machine
(backend, output names, cache directory, report paths, bounds that need ground truth) are
checked; and how each model's output becomes a mask is decided on the base model's first
image. Every problem here is a usage error before any test runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.lanes import plan_lanes
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.results import ModelResults, tool_versions

if TYPE_CHECKING:
    from pytest_coreml_quality.preprocess import Preprocessor
    from pytest_coreml_quality.session import QualitySession

# Bump when the way --coreml-mask=auto decides changes meaning.
MASK_DECISION_FORMAT = "mask-auto-v1"


def open_everything(session: QualitySession) -> None:
    """Open the models and golden set, parse the recipes and check everything that can be checked now."""
    settings = session.settings
    session.results.versions = tool_versions()
    if settings.merging:
        from pytest_coreml_quality.merge import open_merge

        open_merge(session)
        check_outputs(session)
        return
    problems: list[str] = []
    for index, path in enumerate(settings.models):
        try:
            session.models.append(Model.open(path))
        except CoreMLQualityError as exc:
            problems.append(f"{settings.for_model(index).origin}: {exc}")
    if problems:
        raise CoreMLQualityError("; ".join(problems))
    if not session.models:
        return
    session.per_model = {session.key(m): settings.for_model(i) for i, m in enumerate(session.models)}
    if settings.shard is not None:
        from pytest_coreml_quality.shard import check_shard_run

        check_shard_run(session)
    check_before_any_work(session)
    session.lanes = plan_lanes(session.backend_names, settings.compute_units, settings.precision)
    from pytest_coreml_quality.variants import parse_recipes
    from pytest_coreml_quality.variants.sweep import SweepBudget, split_sweep, sweep_recipes

    if settings.sweep_budget is not None and any(split_sweep(own.variants)[1] for own in session.per_model.values()):
        session.sweep_budget = SweepBudget(settings.sweep_budget)
    for model in session.models:
        own = session.model_settings(session.key(model))
        named, sweep = split_sweep(own.variants)
        try:
            recipes = [str(r) for r in parse_recipes(named, model)]
        except CoreMLQualityError as exc:
            if "coreml_variants" not in own.origins:
                raise
            raise CoreMLQualityError(f"{own.where('coreml_variants')}: {exc}") from None
        if sweep:
            # A named recipe stays named (its failures fail the run) even if the sweep has it too.
            swept = [str(r) for r in sweep_recipes(model) if str(r) not in recipes]
            session.swept[session.key(model)] = swept
            recipes += swept
        session.recipes[session.key(model)] = recipes
        entry = session.results.models.setdefault(
            session.key(model),
            ModelResults(model=session.key(model), path=str(model.path), content_hash=model.content_hash, kind=model.kind),
        )
        entry.backend = session.backend_label
        for recipe in session.recipes[session.key(model)]:
            for key in session.run_keys(recipe):
                entry.variant(key)
    if settings.dataset is not None:
        from pytest_coreml_quality.dataset import Dataset

        session.dataset = Dataset.open(settings.dataset, shard=settings.shard)
        if settings.shard is not None and not session.dataset.ids:
            whole = len(session.dataset.whole.ids)  # type: ignore[union-attr]
            raise CoreMLQualityError(
                f"shard {settings.shard[0]}/{settings.shard[1]} holds no image: the golden set "
                f"{settings.dataset} has {whole}",
                field="--coreml-shard",
                expected=f"at most {whole} shards",
            )
        from pytest_coreml_quality.labels import read_labels

        session.labels = read_labels(session.dataset)
        dataset_hash = session.dataset.content_hash
        for entry in session.results.models.values():
            entry.dataset = str(settings.dataset)
            entry.dataset_images = len(session.dataset.ids)
            entry.dataset_hash = dataset_hash
    check_outputs(session)
    if session.dataset is not None:
        check_truth_bounds(session)
        decide_masks(session)
        check_kind_bounds(session)


def check_kind_bounds(session: QualitySession) -> None:
    """A bound on a figure no model's output kind has (PSNR of a tensor on a segmenter) is never judged: say so now."""
    from pytest_coreml_quality import catalogue
    from pytest_coreml_quality.settings import threshold_options

    kinds = {session.kinds.get(session.key(model), "mask") for model in session.models}
    flags = []
    for spec in threshold_options():
        figure = catalogue.by_option(spec.dest)
        shown = figure.column.kinds if figure.column is not None else None
        # Only figures of other kinds: mask figures may still be measured for tensors.
        if spec.dest in session.settings.thresholds and shown is not None and "mask" not in shown and kinds.isdisjoint(shown):
            flags.append(f"{spec.flag} ({', '.join(shown)} outputs)")
    if flags:
        read_as = ", ".join(sorted(kinds))
        raise CoreMLQualityError(
            f"{'; '.join(flags)}: bounds a figure that is not measured here, since the model's output is read as: {read_as}",
            field="--coreml-output-kind",
            expected="bounds on the figures of that kind (e.g. --coreml-min-iou, --coreml-max-drift for a mask), "
            "or --coreml-output-kind set to the kind these bounds are for",
        )


def check_truth_bounds(session: QualitySession) -> None:
    """A bound on a figure against the ground truth cannot be judged on an image-only set: say so now."""
    from pytest_coreml_quality import catalogue
    from pytest_coreml_quality.settings import threshold_options

    assert session.dataset is not None
    bounded = [spec for spec in threshold_options() if spec.dest in session.settings.thresholds]
    on_labels = [s.flag for s in bounded if catalogue.by_option(s.dest).key in catalogue.LABEL_FIGURES]
    if on_labels and session.labels is None:
        raise CoreMLQualityError(
            f"{', '.join(on_labels)}: the golden set {session.settings.dataset} has no labels.csv",
            field="--coreml-dataset",
            expected="labels.csv with columns image,label next to images/",
        )
    if session.dataset.has_truth:
        return
    flags = [
        s.flag for s in bounded
        if catalogue.by_option(s.dest).family == "quality" and catalogue.by_option(s.dest).key not in catalogue.LABEL_FIGURES
    ]
    if flags:
        raise CoreMLQualityError(
            f"{', '.join(flags)}: the golden set {session.settings.dataset} has no ground-truth masks, "
            "so figures against the ground truth are not measured",
            field="--coreml-dataset",
            expected="masks/ (or a manifest 'mask' column) for these bounds, or drift bounds such as --coreml-max-drift",
        )


def check_outputs(session: QualitySession) -> None:
    """Refuse report paths that cannot be written or would overwrite the user's files."""
    from pytest_coreml_quality.outputs import check_output_paths

    s = session.settings
    outputs = {
        flag: path
        for flag, path in (
            ("--coreml-report-json", s.report_json),
            ("--coreml-report-html", s.report_html),
            ("--coreml-save-baseline", s.save_baseline),
            ("--coreml-plot", s.plot),
        )
        if path is not None
    }
    dataset_files = []
    if session.dataset is not None:
        dataset_files = [p for e in session.dataset.entries for p in (e.image_path, e.mask_path) if p is not None]
        if session.dataset.source.is_file():
            dataset_files.append(session.dataset.source)
    protected = {"the model": [m.path for m in session.models], "a golden-set file": dataset_files}
    if session.merged is not None:
        protected["a shard report"] = [p.path for p in session.merged.partials]
    if s.baseline is not None and s.baseline != s.save_baseline:
        # Saving over the compared baseline is how a team accepts new figures; anything else is not.
        protected["the baseline compared against"] = [s.baseline]
    check_output_paths(outputs, protected)


def decide_masks(session: QualitySession) -> None:
    """Decide ``--coreml-mask=auto`` (or check an explicit contract) once per model, on the base model's first image.

    Runs before any variant is built or scored, so an output that ``auto`` cannot
    read safely, or that the given contract does not fit, is a usage error up front.
    The outcome is cached on disk (per model bytes, backend, preprocessing and first
    image) so later runs and xdist workers do not run the model again for it.
    """
    if session.dataset is None or not (session.dataset.whole or session.dataset).ids:
        return
    from pytest_coreml_quality.preprocess import Preprocessor

    from pytest_coreml_quality import catalogue
    from pytest_coreml_quality.output_checks import NonFiniteOutputError

    kind = session.settings.output_kind
    for model in session.models:
        has_probabilities = any(f.type == "dictionary" for f in model.outputs)
        if kind == "classifier" or (kind == "auto" and has_probabilities and session.settings.output is None):
            truth = "no labels.csv, so no accuracy"
            if session.labels:
                truth = "top-1/top-5 accuracy against labels.csv" + labels_note(session, model)
            compare_as_tensors(session, model, "classifier", truth)
            continue
        if kind in catalogue.TENSOR_KINDS:
            compare_as_tensors(session, model, kind, f"--coreml-output-kind={kind}")
            continue
        # Inputs and outputs that cannot give a mask (a colour image output, an
        # ambiguous output) are usage errors now, not one failure per variant later.
        settings = session._model_preprocess(session.key(model))
        try:
            pre = Preprocessor(model, settings)
            if pre.output.is_image and pre.output.color_layout != "GRAYSCALE_FLOAT16":
                check_image_output_contract(model, pre)
                continue  # 8-bit grayscale image outputs are read as they are; float16 ones hold raw values
            decided = read_first_mask(session, model, pre)
        except CoreMLQualityError as exc:
            # Without ground truth there is nothing to score a mask against: 'auto' compares
            # what the model returns with the base model's output instead.
            if kind != "auto" or session.dataset.has_truth or isinstance(exc, NonFiniteOutputError):
                raise
            import dataclasses

            Preprocessor(model, dataclasses.replace(settings, output_kind="tensor"))  # input problems stay errors
            compare_as_tensors(session, model, "tensor", f"not read as a mask ({exc.message})")
            continue
        if decided is not None:
            session.masks[session.key(model)], note = decided
            if note:
                session.mask_notes[session.key(model)] = note


def check_image_output_contract(model: Model, pre: "Preprocessor") -> None:
    """Refuse a mask contract an 8-bit grayscale image output cannot follow.

    Its pixels are probabilities (``auto``, ``prob``: value / 255) or class indices
    (``class:K``); it has no logits and one channel, so ``logits`` and ``channel:K``
    would be ignored and the mask scored as if they had not been given.
    """
    from pytest_coreml_quality.masks import MaskError

    if pre.mask_spec.kind in ("logits", "channel"):
        raise MaskError(
            f"output '{pre.output.name}' is an 8-bit grayscale image: one channel of pixels 0..255, "
            f"which '{pre.mask_spec}' cannot read",
            path=model.path,
            field="--coreml-mask",
            expected="auto or prob (pixels / 255 as probabilities) or class:K (pixel values as class indices)",
        )


def labels_note(session: QualitySession, model: Model) -> str:
    """labels.csv checked against the classifier's classes: a usage error if none fits, else a note."""
    from pytest_coreml_quality.labels import check_labels, labels_path
    from pytest_coreml_quality.tensors import class_labels

    assert session.labels is not None and session.dataset is not None
    path = labels_path(session.dataset)
    note = check_labels(session.labels, class_labels(model), path or session.dataset.root, model.name)
    return f"; {note}" if note else ""


def compare_as_tensors(session: QualitySession, model: Model, kind: str, why: str) -> None:
    """Compare this model's outputs raw with the base model's (drift only), and say so in the header."""
    import dataclasses

    from pytest_coreml_quality.preprocess import Preprocessor

    key = session.key(model)
    settings = dataclasses.replace(session._model_preprocess(key), output_kind=kind)
    names = ", ".join(f"'{f.name}'" for f in Preprocessor(model, settings).tensor_outputs())
    session.kinds[key] = kind
    session.results.models[key].output_kind = kind
    if kind == "classifier":
        session.output_notes[key] = f"{names} compared as class probabilities with the base model's; {why}"
        return
    what = "keypoint heat maps" if kind == "heatmap" else "tensors"
    session.output_notes[key] = f"{names} compared as {what} with the base model's output, {why}; no ground truth used"


def read_first_mask(session: QualitySession, model: Model, pre: "Preprocessor") -> tuple[str, str | None] | None:
    """(contract, header note) from the base model's output on the first image; None if it cannot run."""
    import json

    from pytest_coreml_quality.cachefs import atomic_write_text, build_lock, parts_digest
    from pytest_coreml_quality.evaluate import backend_key
    from pytest_coreml_quality.masks import MaskError, decide_auto, describe, parse_mask_spec, read_mask

    assert session.dataset is not None
    sample = next(iter(session.dataset.whole or session.dataset))  # a shard decides on the whole set's first image too
    backend, options = session.backend(), session.runtime_options()
    key = parts_digest(MASK_DECISION_FORMAT, model.content_hash, backend_key(backend.name, options), pre.settings.cache_key(), sample.image_hash)
    path = session.cache_dir / "masks" / f"{key}.json"
    with build_lock(path):
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            return str(stored["mask"]), stored.get("note")
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent or damaged: decide again
        try:
            outputs = backend.load(model, options).predict(pre.prepare(sample.image))
        except CoreMLQualityError:
            return None  # a model that cannot run fails its items with this error
        if pre.output.name not in outputs:
            return None
        value, name = outputs[pre.output.name], pre.output.name
        from pytest_coreml_quality.output_checks import require_finite

        require_finite(value, model=model, output=name, image=sample.id)  # NaN must not decide a contract
        try:
            spec = parse_mask_spec(pre.settings.mask)
            if spec.kind == "auto":
                spec, note = decide_auto(value, name, where=f" on the first image ({sample.id})")
            else:
                read_mask(value, spec, name)  # a contract that does not fit this output fails here
                note = describe(value, spec)
        except MaskError as exc:
            raise MaskError(exc.message, path=model.path, field=exc.field, expected=exc.expected) from None
        atomic_write_text(path, json.dumps({"mask": str(spec), "note": note}))
        return str(spec), note


def check_before_any_work(session: QualitySession) -> None:
    """Settings that need the models or this machine: fail now, not in every item."""
    from pytest_coreml_quality.cachecheck import check_cache_dir
    from pytest_coreml_quality.pipeline_stage import leading_stages
    from pytest_coreml_quality.runtime import coreml_available

    settings = session.settings
    if "coreml" in (settings.backend, settings.compare_backend) and not coreml_available():
        raise CoreMLQualityError(
            "coreml backend needs macOS; use onnx or auto", field="--coreml-backend", expected="onnx or auto"
        )
    if settings.plot is not None:
        from pytest_coreml_quality.report.plot import INSTALL_HINT, plot_available

        if not plot_available():
            raise CoreMLQualityError(
                "the size-vs-quality plot needs matplotlib, which is not installed",
                field="--coreml-plot",
                expected=f"matplotlib: {INSTALL_HINT}",
            )
    problem = check_cache_dir(session.cache_dir)
    if problem is not None:
        flag = "--coreml-cache-dir" if settings.cache_dir is not None else None
        raise CoreMLQualityError(
            f"the cache directory {session.cache_dir} {problem}",
            field=flag,
            expected="a writable directory with free space (set --coreml-cache-dir)",
        )
    for index, model in enumerate(list(session.models)):
        own = session.model_settings(session.key(model))
        if own.output is None:
            continue
        stage = leading_stages(model, own.output, session.cache_dir)
        if stage is not None:
            # The output comes from an earlier pipeline stage: check the stages up to it.
            old_key = session.key(model)
            model, note = stage
            session.models[index] = model
            session.per_model[session.key(model)] = session.per_model.pop(old_key)
            session.header_notes.append(note)
        # Model.output names the model and lists the outputs it does have.
        where = own.where("coreml_output")
        try:
            feature = model.output(own.output)
        except CoreMLQualityError as exc:
            raise CoreMLQualityError(f"{where}: {exc}") from None
        if not (feature.is_image or feature.is_multiarray):
            raise CoreMLQualityError(
                f"{where}: {model.path}: output '{feature.name}' is a {feature.type}",
                expected="an image or multiarray output",
            )

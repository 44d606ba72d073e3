"""Score an earlier stage of a pipeline whose last stages cannot run here.

Detection and matting pipelines often end in a stage the onnx runtime cannot run
(non-maximum suppression, a custom model) while the mask the team cares about is the
output of an earlier NeuralNetwork stage. When ``--coreml-output`` names such an
intermediate output, the plugin writes the pipeline's stages up to the one producing it as
a model of their own (in the cache, under the original file name, so ids and reports keep
it) and checks that, saying so in the report header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_coreml_quality.cachefs import atomic_write_bytes
from pytest_coreml_quality.model import Model

PIPELINE_KINDS = ("pipeline", "pipelineClassifier", "pipelineRegressor")


def _stages(spec: Any) -> list[Any]:
    holder = getattr(spec, spec.WhichOneof("Type"))
    pipe = holder if spec.WhichOneof("Type") == "pipeline" else holder.pipeline
    return list(pipe.models)


def stage_producing(model: Model, output: str) -> int | None:
    """Index of the pipeline stage that produces ``output``, when it is not a final output."""
    if model.kind not in PIPELINE_KINDS or output in {o.name for o in model.outputs}:
        return None
    for index, stage in enumerate(_stages(model.spec)):
        if output in {o.name for o in stage.description.output}:
            return index
    return None


def leading_stages(model: Model, output: str, cache_dir: Path) -> tuple[Model, str] | None:
    """The pipeline cut after the stage that produces ``output``, and a header note; None when not applicable.

    The cut model keeps the pipeline's inputs and the stages up to that one, and declares
    ``output`` as its only output. It is written deterministically, so its content hash
    (and every cache entry keyed by it) is the same in every run.
    """
    index = stage_producing(model, output)
    if index is None:
        return None
    from coremltools.proto import Model_pb2

    stages = _stages(model.spec)
    cut = Model_pb2.Model()
    cut.specificationVersion = model.spec.specificationVersion
    cut.description.input.extend(model.spec.description.input)
    cut.description.output.extend(o for o in stages[index].description.output if o.name == output)
    cut.pipeline.models.extend(stages[: index + 1])
    data = cut.SerializeToString(deterministic=True)
    import hashlib

    digest = hashlib.blake2b(data, digest_size=10).hexdigest()
    path = cache_dir / "stages" / f"{digest}-{output}" / model.name
    if not path.is_file() or path.read_bytes() != data:
        atomic_write_bytes(path, data)
    left_out = ", ".join(
        f"{i} '{s.WhichOneof('Type')}'" for i, s in enumerate(stages) if i > index
    )
    note = (
        f"{model.name}: scoring pipeline stages 0..{index} of {len(stages)} (output '{output}'); "
        f"stage(s) {left_out} not run"
    )
    return Model.open(path), note

"""The spatial, scatter, sampling and sequence MIL ops (pixel_unshuffle ... sliding_windows), built
with coremltools' MIL builder, translated and compared with numpy references of the op
definitions (tests/runtime/mil_refs.py); each suite program is also read by both readers."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch builds the ML Program test models (test-only dependency)")

from pytest_coreml_quality.errors import UnsupportedModelError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.onnx.builder import GraphBuilder
from pytest_coreml_quality.runtime.onnx.mlprogram import translate_mlprogram
from tests.runtime import mil_crosscheck, mil_refs, mil_zoo

pytestmark = pytest.mark.filterwarnings("ignore")

SHAPE = (2, 4, 6, 8)
BOUND = 1e-5
RNG = np.random.default_rng(7)

Case = tuple[Callable[[Any, Any], Any], Callable[[np.ndarray], np.ndarray]]

# --- constants the cases use (fixed seed) -------------------------------------------------------

SCATTER_IDX = np.array([3, 0, 3], dtype=np.int32)  # a duplicate, for the accumulating modes
SCATTER_IDX_UNIQUE = np.array([-1, 0, 2], dtype=np.int32)  # a negative index (iOS15/16 allow them)
ALONG_IDX = RNG.integers(0, 6, size=(2, 4, 3, 8)).astype(np.int32)  # axis 2, duplicates likely
ALONG_IDX_UNIQUE = np.argsort(RNG.random((2, 4, 6, 8)), axis=2)[:, :, :3].astype(np.int32)
ND_IDX = np.array([[1, 2], [0, 5], [1, 2], [1, -1]], dtype=np.int32)  # rows of x as [8, 6, 8]; [1, -1] is [1, 5]
ND_IDX_UNIQUE = np.array([[1, 2], [0, 5], [1, 3]], dtype=np.int32)
LENGTHS = np.array([3, 0, 6, 1], dtype=np.int32)
COORDS = RNG.uniform(-1.3, 1.3, size=(2, 5, 7, 2)).astype(np.float32)
COORDS_PIXELS = RNG.uniform(-2.5, 9.5, size=(2, 5, 7, 2)).astype(np.float32)
THETA_ONE = np.array([[0.9, -0.3, 0.1, 0.25, 1.1, -0.2]], dtype=np.float32)
THETA_PER_BATCH = np.array([[1.2, 0.2, -0.1, -0.1, 0.8, 0.3], [0.7, 0.0, 0.4, 0.3, -0.9, 0.0]], dtype=np.float32)


def _positive(mb: Any, v: Any) -> Any:
    """Updates away from zero (x in [-2, 2] -> [2.5, 3.5]), so ``div`` is well conditioned."""
    return mb.add(x=mb.mul(x=v, y=0.25), y=3.0)


def _updates(mb: Any, x: Any, size: int, axis: int) -> Any:
    """The first ``size`` entries of ``x`` along ``axis``, made positive."""
    end = list(SHAPE)
    end[axis] = size
    return _positive(mb, mb.slice_by_size(x=x, begin=[0, 0, 0, 0], size=end))


def _upd(v: np.ndarray, size: int, axis: int) -> np.ndarray:
    return np.take(v, range(size), axis=axis) * 0.25 + 3.0


SCATTER_MODES = ("update", "add", "sub", "mul", "div", "max", "min")


def _scatter_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for mode in SCATTER_MODES:
        unique = mode in ("update", "div")  # update: duplicates have no defined winner; div: refused
        idx = SCATTER_IDX_UNIQUE if unique else SCATTER_IDX
        cases[f"scatter_{mode}"] = (
            (lambda mode, idx: lambda mb, x: mb.scatter(data=x, indices=idx, updates=_updates(mb, x, 3, 1), axis=-3,
                                                         mode=mode))(mode, idx),
            (lambda mode, idx: lambda v: mil_refs.scatter(v, idx, _upd(v, 3, 1), axis=1, mode=mode))(mode, idx),
        )
        idx = ALONG_IDX_UNIQUE if unique else ALONG_IDX
        cases[f"scatter_along_axis_{mode}"] = (
            (lambda mode, idx: lambda mb, x: mb.scatter_along_axis(
                data=x, indices=idx, updates=_updates(mb, x, 3, 2), axis=-2, mode=mode))(mode, idx),
            (lambda mode, idx: lambda v: mil_refs.scatter_along_axis(v, idx, _upd(v, 3, 2), 2, mode))(mode, idx),
        )
        idx = ND_IDX_UNIQUE if unique else ND_IDX
        cases[f"scatter_nd_{mode}"] = (
            (lambda mode, idx: lambda mb, x: mb.scatter_nd(
                data=mb.reshape(x=x, shape=[8, 6, 8]), indices=idx, updates=_nd_updates(mb, x, len(idx)),
                mode=mode))(mode, idx),
            (lambda mode, idx: lambda v: mil_refs.scatter_nd(v.reshape(8, 6, 8), idx, _nd_upd(v, len(idx)), mode))(mode, idx),
        )
    # The default mode is "add" (coremltools' DefaultInputs), not "update".
    cases["scatter_default_mode"] = (
        lambda mb, x: mb.scatter(data=x, indices=SCATTER_IDX, updates=_updates(mb, x, 3, 1), axis=1),
        lambda v: mil_refs.scatter(v, SCATTER_IDX, _upd(v, 3, 1), axis=1, mode="add"),
    )
    return cases


def _nd_updates(mb: Any, x: Any, count: int) -> Any:
    """``[count, 8]`` updates for indices addressing rows ``[i, j]`` of x viewed as ``[8, 6, 8]``."""
    rows = mb.reshape(x=x, shape=[48, 8])
    return _positive(mb, mb.slice_by_size(x=rows, begin=[0, 0], size=[count, 8]))


def _nd_upd(v: np.ndarray, count: int) -> np.ndarray:
    return v.reshape(48, 8)[:count] * 0.25 + 3.0


def _lrn(size: int, alpha: float, beta: float, k: float, rank3: bool = False) -> Case:
    def build(mb: Any, x: Any) -> Any:
        x = mb.reshape(x=x, shape=[2, 4, 48]) if rank3 else x
        y = mb.local_response_norm(x=x, size=size, alpha=alpha, beta=beta, k=k)
        return mb.reshape(x=y, shape=list(SHAPE)) if rank3 else y

    return build, lambda v: mil_refs.local_response_norm(v, size, alpha, beta, k)


# name -> (MIL construction from x in [-2, 2] of SHAPE, numpy reference); an iOS16 program.
CASES_IOS16: dict[str, Case] = {
    "pixel_unshuffle": (
        lambda mb, x: mb.pixel_unshuffle(x=x, downscale_factor=np.uint32(2)),
        lambda v: mil_refs.pixel_unshuffle(v, 2),
    ),
    "local_response_norm_3": _lrn(3, 0.3, 0.75, 1.0),
    "local_response_norm_5": _lrn(5, 1e-1, 0.6, 2.0),
    "local_response_norm_rank3": _lrn(3, 0.5, 0.9, 1.5, rank3=True),
    "space_to_batch": (
        lambda mb, x: mb.space_to_batch(x=x, block_shape=[2, 2], paddings=[[0, 2], [2, 0]]),
        lambda v: mil_refs.space_to_batch(v, (2, 2), [[0, 2], [2, 0]]),
    ),
    "space_to_batch_3x2_no_pad": (
        lambda mb, x: mb.space_to_batch(x=x, block_shape=[3, 2], paddings=[[0, 0], [0, 0]]),
        lambda v: mil_refs.space_to_batch(v, (3, 2), [[0, 0], [0, 0]]),
    ),
    "batch_to_space": (
        lambda mb, x: mb.batch_to_space(x=mb.reshape(x=x, shape=[8, 1, 6, 8]), block_shape=[2, 2],
                                        crops=[[1, 1], [0, 3]]),
        lambda v: mil_refs.batch_to_space(v.reshape(8, 1, 6, 8), (2, 2), [[1, 1], [0, 3]]),
    ),
    "space_to_batch_round_trip": (
        lambda mb, x: mb.batch_to_space(x=mb.space_to_batch(x=x, block_shape=[2, 4], paddings=[[2, 0], [1, 3]]),
                                        block_shape=[2, 4], crops=[[2, 0], [1, 3]]),
        lambda v: v,
    ),
    **_scatter_cases(),
    "reverse_sequence": (
        lambda mb, x: mb.reverse_sequence(x=x, lengths=LENGTHS, seq_axis=-2, batch_axis=1),
        lambda v: mil_refs.reverse_sequence(v, LENGTHS, seq_axis=2, batch_axis=1),
    ),
    "reverse_sequence_batch_after_seq": (
        lambda mb, x: mb.reverse_sequence(x=x, lengths=np.array([8, 2], dtype=np.int32), seq_axis=3, batch_axis=0),
        lambda v: mil_refs.reverse_sequence(v, np.array([8, 2]), seq_axis=3, batch_axis=0),
    ),
    "sliding_windows": (
        lambda mb, x: mb.sliding_windows(x=x, axis=-1, size=3, stride=2),
        lambda v: mil_refs.sliding_windows(v, -1, 3, 2),
    ),
    "sliding_windows_axis1": (
        lambda mb, x: mb.sliding_windows(x=x, axis=1, size=2),
        lambda v: mil_refs.sliding_windows(v, 1, 2, 1),
    ),
}

# --- grid sampling (iOS16 program): every sampling x padding x coordinates mode x align_corners ------

PADDINGS = [("constant", 0.0), ("constant", 0.5), ("border", 0.0), ("reflection", 0.0), ("symmetric", 0.0)]
COORD_MODES = ("normalized_minus_one_to_one", "normalized_zero_to_one", "unnormalized")


def _coords_for(mode: str) -> np.ndarray:
    if mode == "unnormalized":
        return COORDS_PIXELS
    return COORDS if mode == "normalized_minus_one_to_one" else (COORDS + 1) / 2


def _resample_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for sampling, (padding, value), coord_mode, align in itertools.product(
        ("bilinear", "nearest"), PADDINGS, COORD_MODES, (True, False)
    ):
        name = f"resample_{sampling}_{padding}{'_v' if value else ''}_{coord_mode}_{'ac' if align else 'noac'}"
        coords = _coords_for(coord_mode)
        cases[name] = (
            (lambda s, p, v, m, a, c: lambda mb, x: mb.resample(
                x=x, coordinates=c, sampling_mode=s, padding_mode=p, padding_value=v, coordinates_mode=m,
                align_corners=a))(sampling, padding, value, coord_mode, align, coords),
            (lambda s, p, v, m, a, c: lambda x: mil_refs.resample(x, c, s, p, v, m, a))(
                sampling, padding, value, coord_mode, align, coords),
        )
    for theta, align in itertools.product(("one", "per_batch"), (True, False)):
        matrix = THETA_ONE if theta == "one" else THETA_PER_BATCH
        cases[f"affine_{theta}_{'ac' if align else 'noac'}"] = (
            (lambda m, a: lambda mb, x: mb.affine(
                x=x, transform_matrix=m, output_height=5, output_width=9, sampling_mode="bilinear",
                padding_mode="constant", padding_value=0.0, coordinates_mode="normalized_minus_one_to_one",
                align_corners=a))(matrix, align),
            (lambda m, a: lambda x: mil_refs.resample(
                x, mil_refs.affine_grid(m, 2, 5, 9, a), "bilinear", "constant", 0.0, "normalized_minus_one_to_one",
                a))(matrix, align),
        )
    return cases


BOX_MODES = ("CORNERS_HEIGHT_FIRST", "CORNERS_WIDTH_FIRST", "CENTER_SIZE_HEIGHT_FIRST", "CENTER_SIZE_WIDTH_FIRST")
BOXES_PIXELS = RNG.uniform(-1.5, 7.5, size=(3, 4)).astype(np.float32)  # some samples fall outside the image
BOXES_NORMALIZED = RNG.uniform(-0.2, 1.2, size=(3, 4)).astype(np.float32)
BOX_IMAGES = np.array([1, 0, 1], dtype=np.int32)


def _crop_ref(v: np.ndarray, boxes: np.ndarray, images: list[int] | None, th: int, tw: int, mode: str,
              box_mode: str, normalized: bool, scale: float, pad: float) -> np.ndarray:
    """``[N, B, C, th, tw]`` (``images`` None: every box on every image) or ``[N, C, th, tw]``."""
    corners = mil_refs.box_corners(boxes, box_mode, normalized, scale, v.shape[2], v.shape[3])
    if images is None:
        return np.stack([np.stack([mil_refs.crop_and_resize(img, box, th, tw, mode, pad) for img in v])
                         for box in corners])
    return np.stack([mil_refs.crop_and_resize(v[i], box, th, tw, mode, pad) for i, box in zip(images, corners)])


def _crop_cases() -> dict[str, Case]:
    """iOS16 ``roi`` forms: ``[N, 1, 4, 1, 1]`` (every box on every image) and ``[N, 1, 5, 1, 1]``
    (the first value picks the image)."""
    cases: dict[str, Case] = {}
    settings = [  # (box mode, normalized, spatial scale, sampling mode, target size, pad value, roi with index)
        ("CORNERS_HEIGHT_FIRST", False, 1.0, "ALIGN_CORNERS", (5, 4), 0.0, False),
        ("CORNERS_WIDTH_FIRST", True, 1.0, "ALIGN_CORNERS", (3, 7), 0.7, True),
        ("CENTER_SIZE_HEIGHT_FIRST", False, 0.5, "STRICT_ALIGN_CORNERS", (4, 4), -0.4, True),
        ("CENTER_SIZE_WIDTH_FIRST", True, 1.0, "STRICT_ALIGN_CORNERS", (2, 5), 0.0, False),
        ("CORNERS_HEIGHT_FIRST", True, 1.0, "ALIGN_CORNERS", (1, 1), 0.0, True),  # the box centre
        ("CORNERS_HEIGHT_FIRST", False, 1.0, "STRICT_ALIGN_CORNERS", (1, 3), 0.0, True),  # the box start
    ]
    for box_mode, normalized, scale, mode, (th, tw), pad, indexed in settings:
        boxes = BOXES_NORMALIZED if normalized else BOXES_PIXELS
        roi = np.concatenate([BOX_IMAGES[:, None].astype(np.float32), boxes], axis=1) if indexed else boxes
        roi = roi.reshape(3, 1, roi.shape[1], 1, 1)
        name = f"crop_resize_{box_mode.lower()}_{mode.lower()}_{th}x{tw}{'_norm' if normalized else ''}"
        cases[name] = (
            (lambda roi, kw: lambda mb, x: mb.crop_resize(x=x, roi=roi, **kw))(roi, dict(
                target_height=th, target_width=tw, normalized_coordinates=normalized, spatial_scale=scale,
                box_coordinate_mode=box_mode, sampling_mode=mode, pad_value=pad)),
            (lambda args, indexed: lambda v: (_crop_ref(v, *args)[:, None] if indexed else _crop_ref(v, *args)))(
                (boxes, list(BOX_IMAGES) if indexed else None, th, tw, mode, box_mode, normalized, scale, pad), indexed),
        )
    return cases


CASES_SAMPLING = {**_resample_cases(), **_crop_cases()}

# --- iOS17 resize, iOS18 slice_update --------------------------------------------------------------

RESIZE_MODES = ("DEFAULT", "STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "OFFSET_CORNERS", "UNALIGN_CORNERS")


def _resize_case(shape: list[int], dims: int, mode: str, out: tuple[int, ...]) -> Case:
    return (
        lambda mb, x: mb.resize(x=x, shape=np.array(shape, dtype=np.int32), resized_dims=np.uint32(dims),
                                interpolation_mode="LINEAR", sampling_mode=mode),
        lambda v: mil_refs.resize_linear(v, out, mode, dims),
    )


CASES_IOS17: dict[str, Case] = {}
for _mode in RESIZE_MODES:
    # Two axes of a 4-D tensor (one ONNX Resize), three axes (axis by axis, a 0 keeps a size),
    # one axis, and an output size of 1 (ALIGN_CORNERS samples the middle).
    CASES_IOS17[f"resize_2d_{_mode.lower()}"] = _resize_case([9, 13], 2, _mode, (2, 4, 9, 13))
    CASES_IOS17[f"resize_3d_{_mode.lower()}"] = _resize_case([7, 0, 5], 3, _mode, (2, 7, 6, 5))
    CASES_IOS17[f"resize_1d_{_mode.lower()}"] = _resize_case([1, 1, 11], 1, _mode, (2, 4, 6, 11))
    CASES_IOS17[f"resize_to_1_{_mode.lower()}"] = _resize_case([1, 3], 2, _mode, (2, 4, 1, 3))

# iOS17 crop_resize: boxes [N, 4] with box_indices, or without (box i on image i).
CASES_IOS17["crop_resize_ios17_indices"] = (
    lambda mb, x: mb.crop_resize(x=x, boxes=BOXES_PIXELS, box_indices=BOX_IMAGES, target_height=4, target_width=6,
                                 sampling_mode="ALIGN_CORNERS", pad_value=1.5),
    lambda v: _crop_ref(v, BOXES_PIXELS, list(BOX_IMAGES), 4, 6, "ALIGN_CORNERS", "CORNERS_HEIGHT_FIRST", False, 1.0,
                        1.5),
)
CASES_IOS17["crop_resize_ios17_default_indices"] = (
    lambda mb, x: mb.crop_resize(x=x, boxes=BOXES_NORMALIZED[:2], target_height=3, target_width=3,
                                 normalized_coordinates=True, box_coordinate_mode="CENTER_SIZE_WIDTH_FIRST",
                                 sampling_mode="STRICT_ALIGN_CORNERS"),
    lambda v: _crop_ref(v, BOXES_NORMALIZED[:2], [0, 1], 3, 3, "STRICT_ALIGN_CORNERS", "CENTER_SIZE_WIDTH_FIRST", True,
                        1.0, 0.0),
)



def _assign(v: np.ndarray, index: tuple[Any, ...], update: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    out = v.copy()
    out[index] = update(v)
    return out


CASES_IOS18: dict[str, Case] = {
    # x[:, 1:3] = 2 * x[:, :2]  (what a PyTorch slice assignment becomes)
    "slice_update_channels": (
        lambda mb, x: mb.slice_update(x=x, update=mb.mul(x=mb.slice_by_size(x=x, begin=[0, 0, 0, 0], size=[2, 2, 6, 8]),
                                                          y=2.0), begin=[0, 1, 0, 0], end=[2, 3, 6, 8]),
        lambda v: _assign(v, (slice(None), slice(1, 3)), lambda v: 2 * v[:, :2]),
    ),
    # x[1, ::2, 5:1:-2, -3:] = -x[0, :2, :2, :3]: squeeze, masks, a negative stride and begin
    "slice_update_strided": (
        lambda mb, x: mb.slice_update(
            x=x, update=mb.mul(x=mb.slice_by_index(x=x, begin=[0, 0, 0, 0], end=[1, 2, 2, 3],
                                                   squeeze_mask=[True, False, False, False]), y=-1.0),
            begin=[1, 0, 5, -3], end=[2, 0, 1, 0], stride=[1, 2, -2, 1], begin_mask=[False, True, False, False],
            end_mask=[False, True, False, True], squeeze_mask=[True, False, False, False]),
        lambda v: _assign(v, (1, slice(None, None, 2), slice(5, 1, -2), slice(-3, None)), lambda v: -v[0, :2, :2, :3]),
    ),
    "slice_update_whole": (
        lambda mb, x: mb.slice_update(x=x, update=mb.mul(x=x, y=3.0), begin=[0, 0, 0, 0], end=[2, 4, 6, 8]),
        lambda v: 3 * v,
    ),
}


def _program(cases: dict[str, Case], target: str) -> Any:
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=SHAPE)], opset_version=getattr(ct.target, target))
    def prog(x: Any) -> Any:
        x = mb.sub(x=mb.mul(x=x, y=4.0), y=2.0)
        return tuple(mb.identity(x=build(mb, x), name=name) for name, (build, _) in cases.items())

    return prog


SUITES = {
    "ios16": (CASES_IOS16, "iOS16"),
    "sampling": (CASES_SAMPLING, "iOS16"),
    "ios17": (CASES_IOS17, "iOS17"),
    "ios18": (CASES_IOS18, "iOS18"),
}


@pytest.fixture(scope="module")
def suites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mil_spatial")
    return {name: mil_zoo.save_program(_program(cases, target), root / f"{name}.mlpackage", target=target)
            for name, (cases, target) in SUITES.items()}


@pytest.fixture(scope="module")
def outputs(suites: dict[str, Path]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    x = mil_zoo.sample_input(SHAPE, seed=5)
    got: dict[str, np.ndarray] = {}
    for path in suites.values():
        got.update(mil_zoo.run(path, {Model.open(path).inputs[0].name: x}))
    return x * 4 - 2, got


ALL_CASES = {**CASES_IOS16, **CASES_SAMPLING, **CASES_IOS17, **CASES_IOS18}


@pytest.mark.parametrize("case", list(ALL_CASES))
def test_op_matches_reference(case: str, outputs: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
    x, got = outputs
    expected = ALL_CASES[case][1](x.astype(np.float64))
    assert got[case].shape == expected.shape
    assert np.abs(got[case] - expected).max() <= BOUND * max(1.0, float(np.abs(expected).max()))


@pytest.mark.parametrize("suite", list(SUITES))
def test_protobuf_reader_gives_coremltools_graph(suite: str, suites: dict[str, Path]) -> None:
    mil_crosscheck.assert_same_translation(suites[suite])


def test_suites_contain_the_new_ops(suites: dict[str, Path]) -> None:
    covered = set().union(*(mil_zoo.op_types(path) for path in suites.values()))
    assert {"pixel_unshuffle", "local_response_norm", "space_to_batch", "batch_to_space", "scatter",
            "scatter_along_axis", "scatter_nd", "slice_update", "resize", "resample", "affine",
            "reverse_sequence", "sliding_windows", "crop_resize"} <= covered


# --- run-time indices, and the modes that are refused rather than approximated -------------------


def _save(tmp_path: Path, build: Callable[[Any, Any, Any], Any], target: str = "iOS16",
          idx_shape: tuple[int, ...] = (3,)) -> Path:
    """A program with a float input ``x`` of SHAPE and an int32 input ``idx`` of ``idx_shape``."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.TensorSpec(shape=SHAPE), mb.TensorSpec(shape=idx_shape, dtype=types.int32)],
                opset_version=getattr(ct.target, target))
    def prog(x: Any, idx: Any) -> Any:
        return mb.identity(x=build(mb, x, idx), name="y")

    return mil_zoo.save_program(prog, tmp_path / "op.mlpackage", target=target)


def test_scatter_with_run_time_indices(tmp_path: Path) -> None:
    path = _save(tmp_path, lambda mb, x, idx: mb.scatter(data=x, indices=idx, updates=_updates(mb, x, 3, 2),
                                                         axis=2, mode="sub"))
    mil_crosscheck.assert_same_translation(path)
    x = mil_zoo.sample_input(SHAPE, seed=3)
    for idx in ([5, 0, 5], [1, 2, 3]):
        got = mil_zoo.run(path, {"x": x, "idx": np.array(idx, dtype=np.float32)})["y"]
        expected = mil_refs.scatter(x.astype(np.float64), np.array(idx), _upd(x.astype(np.float64), 3, 2), 2, "sub")
        assert np.abs(got - expected).max() <= BOUND * 4


def _stacked(mb: Any, x: Any) -> Any:
    """``[3, 4, 6, 8]`` positive updates: x's two images and the first one again."""
    first = mb.slice_by_size(x=x, begin=[0, 0, 0, 0], size=[1, 4, 6, 8])
    return _positive(mb, mb.concat(values=[x, first], axis=0))


# name -> (construction from x and the int32 input idx, target, op type, what the error says)
@pytest.mark.parametrize("emulate_fp16", [False, True])
def test_reverse_sequence_with_run_time_lengths(emulate_fp16: bool, tmp_path: Path) -> None:
    # The source positions are gathered from constants (no integer arithmetic node), so the
    # fp16 emulation, which rounds every arithmetic node's output, leaves them alone.
    path = _save(tmp_path, lambda mb, x, idx: mb.reverse_sequence(x=x, lengths=idx, seq_axis=3, batch_axis=1),
                 idx_shape=(4,))
    mil_crosscheck.assert_same_translation(path)
    x = mil_zoo.sample_input(SHAPE, seed=4)
    for lengths in ([8, 0, 3, 1], [2, 7, 8, 5]):
        got = mil_zoo.run(path, {"x": x, "idx": np.array(lengths, dtype=np.float32)}, emulate_fp16)["y"]
        expected = mil_refs.reverse_sequence(x.astype(np.float64), np.array(lengths), seq_axis=3, batch_axis=1)
        assert np.abs(got - expected).max() <= (1e-3 if emulate_fp16 else 0.0)


def test_reverse_sequence_with_constant_lengths_under_fp16_emulation(outputs: Any, suites: dict[str, Path]) -> None:
    x = mil_zoo.sample_input(SHAPE, seed=5)
    got = mil_zoo.run(suites["ios16"], {Model.open(suites["ios16"]).inputs[0].name: x}, emulate_fp16=True)
    for case in ("reverse_sequence", "reverse_sequence_batch_after_seq"):
        assert np.abs(got[case] - outputs[1][case]).max() <= 2e-3  # only x's fp16 rounding differs


REFUSED: dict[str, tuple[Callable[[Any, Any, Any], Any], str, str, str]] = {
    "local_response_norm_even_size": (
        lambda mb, x, idx: mb.local_response_norm(x=x, size=4), "iOS16", "local_response_norm", "size 4 is even"),
    "scatter_div_run_time_indices": (
        lambda mb, x, idx: mb.scatter(data=x, indices=idx, updates=_updates(mb, x, 3, 1), axis=1, mode="div"),
        "iOS16", "scatter", "mode 'div' is only translated with compile-time indices"),
    "scatter_nd_div_duplicate_indices": (
        lambda mb, x, idx: mb.scatter_nd(data=x, indices=np.array([[1], [0], [1]], dtype=np.int32),
                                         updates=_stacked(mb, x), mode="div"),
        "iOS16", "scatter_nd", "mode 'div' with an index written more than once"),
    "crop_resize_default_sampling": (
        lambda mb, x, idx: mb.crop_resize(x=x, roi=BOXES_PIXELS.reshape(3, 1, 4, 1, 1), target_height=2, target_width=2),
        "iOS16", "crop_resize", "sampling_mode 'DEFAULT' is not translated"),
    "scatter_div_integer_data": (
        lambda mb, x, idx: mb.scatter(data=idx, indices=np.array([0, 2], dtype=np.int32),
                                      updates=np.array([2, 3], dtype=np.int32), mode="div"),
        "iOS16", "scatter", "mode 'div' on integer data is not translated"),
    "resize_nearest_neighbor": (
        lambda mb, x, idx: mb.resize(x=x, shape=np.array([12, 16], dtype=np.int32), resized_dims=np.uint32(2),
                                     interpolation_mode="NEAREST_NEIGHBOR"),
        "iOS17", "resize", "interpolation_mode 'NEAREST_NEIGHBOR' is not translated"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_untranslatable_modes_are_refused_by_name(case: str, tmp_path: Path) -> None:
    build, target, op_type, message = REFUSED[case]
    path = _save(tmp_path, build, target)
    with pytest.raises(UnsupportedModelError) as info:
        translate_mlprogram(Model.open(path), GraphBuilder())
    text = str(info.value)
    assert str(path) in text and f"{op_type} op '" in text and message in text, text

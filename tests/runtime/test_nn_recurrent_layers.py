"""simpleRecurrent, gru, uniDirectionalLSTM and biDirectionalLSTM against numpy loops of the
NeuralNetwork.proto equations (clip to [-50, 50], peepholes, coupled gates, forget bias,
cell clip, reversed input, initial and final states)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_coreml_quality.errors import UnsupportedModelError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.runtime.base import RuntimeOptions
from pytest_coreml_quality.runtime.onnx.backend import OnnxBackend
from tests.runtime import nn_zoo

ct = pytest.importorskip("coremltools")

S, B, I, H = 4, 2, 3, 5  # sequence, batch, input and output vector sizes

ACTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "SIGMOID": lambda v: 1 / (1 + np.exp(-v)),
    "TANH": np.tanh,
    "RELU": lambda v: np.maximum(v, 0),
    "LINEAR": lambda v: v,
    "SIGMOID_HARD": lambda v: np.clip(0.2 * v + 0.5, 0, 1),  # the proto's fixed alpha, beta
    "SCALED_TANH": lambda v: 1.7159 * np.tanh(2 / 3 * v),
}


def clip(v: np.ndarray) -> np.ndarray:
    return np.clip(v, -50, 50)


def _w(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(-1, 1, shape) * scale).astype(np.float32)


def run(feeds: dict[str, np.ndarray], outputs: list[str], add: Callable[[Any], None], tmp_path: Path,
        options: RuntimeOptions) -> list[np.ndarray]:
    path = nn_zoo.build_nd({k: v.shape for k, v in feeds.items()}, add, tmp_path / "rnn.mlmodel", outputs)
    out = OnnxBackend().load(Model.open(path), options).predict(feeds)
    return [out[o] for o in outputs]


def _seq(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], x.shape[1], -1)  # [S, B, I, 1, 1] -> [S, B, I]


def _blob(steps: list[np.ndarray]) -> np.ndarray:
    return np.stack(steps)[..., None, None]  # [S', B, H, 1, 1]


X = _w((S, B, I, 1, 1), 0, 2.0)
H0, C0 = _w((1, B, H, 1, 1), 1), _w((1, B, H, 1, 1), 2)


# --- simpleRecurrent ----------------------------------------------------------------------


def ref_simple(x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray, act: str, y: np.ndarray,
               reverse: bool) -> list[np.ndarray]:
    outs = []
    for t in (reversed(range(len(x))) if reverse else range(len(x))):
        y = ACTS[act](clip(x[t] @ w.T + y @ r.T + b))
        outs.append(y)
    return outs


@pytest.mark.parametrize(("act", "output_all", "reverse", "with_state"),
                         [("TANH", True, False, False), ("RELU", False, False, True), ("SIGMOID", False, True, True),
                          ("SCALED_TANH", True, False, True)])
def test_simple_recurrent(act: str, output_all: bool, reverse: bool, with_state: bool, tmp_path: Path,
                          fp32_options: RuntimeOptions) -> None:
    w, r, b = _w((H, I), 3), _w((H, H), 4), _w((H,), 5)
    feeds = {"x": X, "h0": H0} if with_state else {"x": X}
    got_y, got_h = run(feeds, ["y", "h"], lambda nb: nb.add_simple_rnn(
        "rnn", r, w, b, H, I, act, list(feeds), ["y", "h"], output_all=output_all, reverse_input=reverse),
        tmp_path, fp32_options)
    outs = ref_simple(_seq(X), w, r, b, act, H0[0, :, :, 0, 0] if with_state else np.zeros((B, H)), reverse)
    np.testing.assert_allclose(got_y, _blob(outs if output_all else outs[-1:]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_h, _blob(outs[-1:]), rtol=1e-5, atol=1e-5)


# --- gru ----------------------------------------------------------------------------------


def ref_gru(x: np.ndarray, ws: list[np.ndarray], rs: list[np.ndarray], bs: list[np.ndarray], f: str, g: str,
            y: np.ndarray) -> list[np.ndarray]:
    (wz, wr, wo), (rz, rr, ro), (bz, br, bo) = ws, rs, bs
    outs = []
    for xt in x:
        z = ACTS[f](clip(xt @ wz.T + y @ rz.T + bz))
        r = ACTS[f](clip(xt @ wr.T + y @ rr.T + br))
        o = ACTS[g](clip(xt @ wo.T + (y * r) @ ro.T + bo))
        y = (1 - z) * o + z * y
        outs.append(y)
    return outs


@pytest.mark.parametrize(("inner", "act", "output_all", "has_bias"),
                         [("SIGMOID_HARD", "TANH", True, True), ("SIGMOID", "LINEAR", False, False)])
def test_gru(inner: str, act: str, output_all: bool, has_bias: bool, tmp_path: Path,
             fp32_options: RuntimeOptions) -> None:
    ws, rs = [_w((H, I), 10 + k) for k in range(3)], [_w((H, H), 20 + k) for k in range(3)]
    bs = [_w((H,), 30 + k) for k in range(3)]
    got_y, got_h = run({"x": X, "h0": H0}, ["y", "h"], lambda nb: nb.add_gru(
        "gru", rs, ws, bs if has_bias else None, H, I, ["x", "h0"], ["y", "h"], activation=act,
        inner_activation=inner, output_all=output_all), tmp_path, fp32_options)
    outs = ref_gru(_seq(X), ws, rs, bs if has_bias else [0, 0, 0], inner, act, H0[0, :, :, 0, 0])
    np.testing.assert_allclose(got_y, _blob(outs if output_all else outs[-1:]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_h, _blob(outs[-1:]), rtol=1e-5, atol=1e-5)


# --- LSTMs --------------------------------------------------------------------------------


def _lstm_weights(seed: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """coremltools' order: W, R, b as [i, f, o, z]; peepholes [i, f, o]."""
    return ([_w((H, I), seed + k) for k in range(4)], [_w((H, H), seed + 10 + k) for k in range(4)],
            [_w((H,), seed + 20 + k) for k in range(4)], [_w((H,), seed + 30 + k) for k in range(3)])


def ref_lstm(x: np.ndarray, weights: tuple, y: np.ndarray, c: np.ndarray, peep: bool, forget_bias: bool,
             coupled: bool, cell_clip: float, reverse: bool, acts: tuple[str, str, str] = ("SIGMOID", "TANH", "TANH")
             ) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]:
    (wi, wf, wo, wz), (ri, rf, ro, rz), (bi, bf, bo, bz), (pi, pf, po) = weights
    if not peep:
        pi = pf = po = np.zeros(H)
    f, g, h = (ACTS[a] for a in acts)
    outs = {}
    for t in (reversed(range(len(x))) if reverse else range(len(x))):
        xt = x[t]
        i = f(clip(xt @ wi.T + y @ ri.T + pi * c + bi))
        fg = 1 - i if coupled else f(clip(xt @ wf.T + y @ rf.T + pf * c + bf + (1.0 if forget_bias else 0.0)))
        z = g(clip(xt @ wz.T + y @ rz.T + bz))
        c = np.clip(c * fg + i * z, -cell_clip, cell_clip)
        o = f(clip(xt @ wo.T + y @ ro.T + po * c + bo))
        y = h(c) * o
        outs[t] = y
    return outs, y, c


@pytest.mark.parametrize(("peep", "forget_bias", "coupled", "cell_clip", "output_all", "reverse"), [
    (False, False, False, 50.0, True, False),
    (True, True, False, 0.4, True, False),  # a small cell clip that binds
    (True, False, True, 50.0, False, True),  # reversed: final state only
])
def test_uni_lstm(peep: bool, forget_bias: bool, coupled: bool, cell_clip: float, output_all: bool, reverse: bool,
                  tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    weights = _lstm_weights(40)
    w, r, b, p = weights
    got = run({"x": X, "h0": H0, "c0": C0}, ["y", "h", "c"], lambda nb: nb.add_unilstm(
        "lstm", r, w, b, H, I, ["x", "h0", "c0"], ["y", "h", "c"], peep=p if peep else None, output_all=output_all,
        forget_bias=forget_bias, coupled_input_forget_gate=coupled, cell_clip_threshold=cell_clip,
        reverse_input=reverse), tmp_path, fp32_options)
    outs, y, c = ref_lstm(_seq(X), weights, H0[0, :, :, 0, 0], C0[0, :, :, 0, 0], peep, forget_bias, coupled,
                          cell_clip, reverse)
    if cell_clip < 1:
        assert np.abs(c).max() == pytest.approx(cell_clip)
    seq = [outs[t] for t in range(S)] if output_all else [y]
    for g_, r_ in zip(got, [_blob(seq), _blob([y]), _blob([c])]):
        np.testing.assert_allclose(g_, r_, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output_all", [True, False])
def test_bi_lstm(output_all: bool, tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    fwd, bwd = _lstm_weights(60), _lstm_weights(160)
    acts = ("SIGMOID_HARD", "TANH", "SCALED_TANH")
    feeds = {"x": X, "h0": H0, "c0": C0, "h0b": C0 * 0.5, "c0b": H0 * 0.5}
    names = ["y", "h", "c", "hb", "cb"]
    got = run(feeds, names, lambda nb: nb.add_bidirlstm(
        "bi", fwd[1], fwd[0], fwd[2], bwd[1], bwd[0], bwd[2], H, I, list(feeds), names, inner_activation=acts[0],
        cell_state_update_activation=acts[1], output_activation=acts[2], peep=fwd[3], peep_back=bwd[3],
        output_all=output_all, forget_bias=True), tmp_path, fp32_options)
    x = _seq(X)
    fo, fy, fc = ref_lstm(x, fwd, H0[0, :, :, 0, 0], C0[0, :, :, 0, 0], True, True, False, 50.0, False, acts)
    bo, by, bc = ref_lstm(x, bwd, 0.5 * C0[0, :, :, 0, 0], 0.5 * H0[0, :, :, 0, 0], True, True, False, 50.0, True,
                          acts)
    # Step t: [forward after x_1..x_t, backward after x_S..x_t]; the last output is [yf_S, yb_1].
    steps = [np.concatenate([fo[t], bo[t]], -1) for t in range(S)] if output_all else [np.concatenate([fy, by], -1)]
    for g_, r_ in zip(got, [_blob(steps), _blob([fy]), _blob([fc]), _blob([by]), _blob([bc])]):
        np.testing.assert_allclose(g_, r_, rtol=1e-5, atol=1e-5)


def test_rank4_sequence_blob_is_seq_with_batch_1(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    x = X[:, :1].reshape(S, I, 1, 1)
    w, r, b = _w((H, I), 3), _w((H, H), 4), _w((H,), 5)
    (got,) = run({"x": x}, ["y"], lambda nb: nb.add_simple_rnn("rnn", r, w, b, H, I, "TANH", ["x"], ["y"],
                                                               output_all=True), tmp_path, fp32_options)
    outs = ref_simple(x.reshape(S, 1, I), w, r, b, "TANH", np.zeros((1, H)), False)
    np.testing.assert_allclose(got, np.stack(outs).reshape(S, H, 1, 1), rtol=1e-5, atol=1e-5)


def test_reversed_sequence_output_is_unsupported(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    w, r, b = _w((H, I), 3), _w((H, H), 4), _w((H,), 5)
    with pytest.raises(UnsupportedModelError, match=r"\(simpleRecurrent\).*reverseInput with sequenceOutput"):
        run({"x": X}, ["y"], lambda nb: nb.add_simple_rnn("rnn", r, w, b, H, I, "TANH", ["x"], ["y"], output_all=True,
                                                          reverse_input=True), tmp_path, fp32_options)


def test_hard_sigmoid_with_other_parameters_is_unsupported(tmp_path: Path, fp32_options: RuntimeOptions) -> None:
    def add(nb: Any) -> None:
        layer = nb.add_gru("gru", [_w((H, H), k) for k in range(3)], [_w((H, I), k) for k in range(3)], None, H, I,
                           ["x"], ["y"])
        layer.gru.activations[0].sigmoidHard.alpha = 0.3  # the proto supports only 0.2, 0.5

    with pytest.raises(UnsupportedModelError, match=r"\(gru\).*sigmoidHard with alpha 0.3.*activations\[0\]"):
        run({"x": X}, ["y"], add, tmp_path, fp32_options)

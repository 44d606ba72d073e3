"""Recurrent layers (simpleRecurrent, gru, uniDirectionalLSTM, biDirectionalLSTM), unrolled
over the static sequence length with the exact equations of NeuralNetwork.proto (gate inputs
clipped to [-50, 50], the LSTM cell to +-cellClipThreshold).

Input blobs are [Seq, Batch, inputVectorSize, 1, 1]; a rank-4 blob (Seq and Batch folded
into axis 0) is taken as [Seq, inputVectorSize, 1, 1] with Batch 1. Optional inputs after
the first are initial states ([1, Batch, outputVectorSize, 1, 1]; zeros when absent);
optional outputs after the first are final states.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pytest_coreml_quality.runtime.onnx.nn_layers import nn_layer
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext

_CLIP = 50.0


# The proto fixes these recurrent activations' parameters ("currently only supported for
# alpha = 1.7159, beta = 2/3" and "alpha = 0.2, beta = 0.5"; linear is the identity), and
# coremltools' builder leaves the stored alpha and beta at 0: either is accepted.
_FIXED = {"linear": (1.0, 0.0), "scaledTanh": (1.7159, 2.0 / 3.0), "sigmoidHard": (0.2, 0.5)}


def _activation(ctx: LayerContext, a: Any, field: str) -> Callable[[str], str]:
    """The nonlinearity of one ActivationParams, among those the proto allows in recurrent layers."""
    kind = a.WhichOneof("NonlinearityType")
    if kind in _FIXED:
        stored = (float(getattr(a, kind).alpha), float(getattr(a, kind).beta))
        alpha, beta = _FIXED[kind]
        if stored != (0.0, 0.0) and not np.allclose(stored, (alpha, beta), rtol=1e-4, atol=0):
            raise ctx.unsupported(f"uses {kind} with alpha {stored[0]:g}, beta {stored[1]:g} in {field}",
                                  expected=f"alpha {alpha:g}, beta {beta:g} (the only values recurrent layers support)")
        if kind == "linear":
            return lambda x: x
        if kind == "scaledTanh":
            a_c, b_c = ctx.const(np.float32(alpha), name="alpha"), ctx.const(np.float32(beta), name="beta")
            return lambda x: ctx.node("Mul", [ctx.node("Tanh", [ctx.node("Mul", [x, b_c])]), a_c])
        return lambda x: ctx.node("HardSigmoid", [x], alpha=alpha, beta=beta)
    if kind == "sigmoid":
        return lambda x: ctx.node("Sigmoid", [x])
    if kind == "tanh":
        return lambda x: ctx.node("Tanh", [x])
    if kind == "ReLU":
        return lambda x: ctx.node("Relu", [x])
    raise ctx.unsupported(f"uses activation '{kind}' in {field}",
                          expected="linear, sigmoid, tanh, ReLU, scaledTanh or sigmoidHard (the recurrent activations)")


def _activations(ctx: LayerContext, acts: Any, n: int, field: str) -> list[Callable[[str], str]]:
    if len(acts) != n:
        raise ctx.format_error(f"has {len(acts)} activations", field=field, expected=f"{n} activations")
    return [_activation(ctx, a, f"{field}[{i}]") for i, a in enumerate(acts)]


class _Unroll:
    """Shared plumbing: the sequence as [1, B, I] steps, weights as constants, step outputs."""

    def __init__(self, ctx: LayerContext, x: str, in_size: int, out_size: int) -> None:
        self.ctx = ctx
        shape = ctx.shape(x)
        if len(shape) not in (4, 5) or tuple(shape[-2:]) != (1, 1) or shape[-3] != in_size:
            raise ctx.format_error(f"has an input of shape {list(shape)}", field="inputVectorSize",
                                   expected=f"[Seq, Batch, {in_size}, 1, 1]")
        self.rank = len(shape)
        self.seq, self.batch = shape[0], (shape[1] if len(shape) == 5 else 1)
        self.hidden = out_size
        self.x = ctx.reshape(x, [self.seq, self.batch, in_size])
        self.in_size = in_size
        self.clip_lo, self.clip_hi = ctx.const(np.float32(-_CLIP), name="clip_lo"), ctx.const(np.float32(_CLIP),
                                                                                             name="clip_hi")

    def matrix(self, wp: Any, cols: int, field: str) -> str:
        """A [H, cols] row-major matrix, transposed for x @ W.T."""
        w = self.ctx.weights(wp, (self.hidden, cols), field)
        return self.ctx.const(np.ascontiguousarray(w.T), name=field.rsplit(".", 1)[-1])

    def vector(self, wp: Any, field: str, plus: float = 0.0) -> str:
        return self.ctx.const(self.ctx.weights(wp, (self.hidden,), field) + plus, name=field.rsplit(".", 1)[-1])

    def inputs_times(self, w: str) -> list[str]:
        """W x_t for every step, as [1, B, H] values (one MatMul over the whole sequence)."""
        wx = self.ctx.node("MatMul", [self.x, w])
        if self.seq == 1:
            return [wx]
        return list(self.ctx.node("Split", [wx], self.seq, axis=0, num_outputs=self.seq))

    def state(self, inputs: list[str], i: int) -> str:
        """Initial state from input ``i`` (any [.., B, H, 1, 1] blob of B*H values), else zeros."""
        ctx = self.ctx
        if i < len(inputs) and inputs[i]:
            n = int(np.prod(ctx.shape(inputs[i])))
            if n != self.batch * self.hidden:
                raise ctx.format_error(f"has an initial state of {n} values", field=f"input[{i}]",
                                       expected=f"{self.batch * self.hidden} (Batch x outputVectorSize)")
            return ctx.reshape(inputs[i], [1, self.batch, self.hidden])
        return ctx.const(np.zeros((1, self.batch, self.hidden), np.float32), name="zeros")

    def gate(self, parts: list[str], act: Callable[[str], str]) -> str:
        s = parts[0]
        for p in parts[1:]:
            s = self.ctx.node("Add", [s, p])
        return act(self.ctx.node("Clip", [s, self.clip_lo, self.clip_hi]))

    def blob(self, steps: list[str], channels: int | None = None) -> str:
        """[S', B, H] steps (concatenated on the sequence axis) as an output blob of the input's rank."""
        ctx = self.ctx
        y = steps[0] if len(steps) == 1 else ctx.node("Concat", steps, axis=0)
        c = channels or self.hidden
        shape = [len(steps), self.batch, c, 1, 1] if self.rank == 5 else [len(steps) * self.batch, c, 1, 1]
        return ctx.reshape(y, shape)


def _outputs(layer: Any, values: list[str]) -> list[str]:
    return values[: len(layer.output)]


def _refuse_reversed_sequence(ctx: LayerContext, p: Any, sequence_output: bool) -> None:
    # The proto does not say in which order a reversed layer lays out its sequence output
    # (processing order, or aligned with the input positions), so only the final state is translated.
    if p.reverseInput and sequence_output:
        raise ctx.unsupported("has reverseInput with sequenceOutput: NeuralNetwork.proto does not define the order "
                              "of the output sequence", expected="reverseInput = false, or sequenceOutput = false")


@nn_layer("simpleRecurrent")
def simple_recurrent(ctx: LayerContext, layer: Any, inputs: list[str]) -> list[str]:
    """y_t = f(clip(W x_t + R y_{t-1} + b))."""
    p = layer.simpleRecurrent
    _refuse_reversed_sequence(ctx, p, p.sequenceOutput)
    u = _Unroll(ctx, inputs[0], int(p.inputVectorSize), int(p.outputVectorSize))
    f = _activation(ctx, p.activation, "activation")
    wx = u.inputs_times(u.matrix(p.weightMatrix, u.in_size, "weightMatrix"))
    r = u.matrix(p.recursionMatrix, u.hidden, "recursionMatrix")
    bias = [u.vector(p.biasVector, "biasVector")] if p.hasBiasVector else []
    y, outs = u.state(inputs, 1), []
    for t in (reversed(range(u.seq)) if p.reverseInput else range(u.seq)):
        y = u.gate([wx[t], ctx.node("MatMul", [y, r]), *bias], f)
        outs.append(y)
    return _outputs(layer, [u.blob(outs if p.sequenceOutput else [y]), u.blob([y])])


@nn_layer("gru")
def gru(ctx: LayerContext, layer: Any, inputs: list[str]) -> list[str]:
    """z, r = f(..); o = g(clip(W_o x + R_o (y ⊙ r) + b_o)); y = (1 - z) ⊙ o + z ⊙ y."""
    p = layer.gru
    _refuse_reversed_sequence(ctx, p, p.sequenceOutput)
    u = _Unroll(ctx, inputs[0], int(p.inputVectorSize), int(p.outputVectorSize))
    f, g = _activations(ctx, p.activations, 2, "activations")
    wz, wr, wo = (u.inputs_times(u.matrix(getattr(p, f"{k}GateWeightMatrix"), u.in_size, f"{k}GateWeightMatrix"))
                  for k in ("update", "reset", "output"))
    rz, rr, ro = (u.matrix(getattr(p, f"{k}GateRecursionMatrix"), u.hidden, f"{k}GateRecursionMatrix")
                  for k in ("update", "reset", "output"))
    if p.hasBiasVectors:
        bz, br, bo = ([u.vector(getattr(p, f"{k}GateBiasVector"), f"{k}GateBiasVector")]
                      for k in ("update", "reset", "output"))
    else:
        bz = br = bo = []
    one = ctx.const(np.float32(1), name="one")
    y, outs = u.state(inputs, 1), []
    for t in (reversed(range(u.seq)) if p.reverseInput else range(u.seq)):
        z = u.gate([wz[t], ctx.node("MatMul", [y, rz]), *bz], f)
        r = u.gate([wr[t], ctx.node("MatMul", [y, rr]), *br], f)
        o = u.gate([wo[t], ctx.node("MatMul", [ctx.node("Mul", [y, r]), ro]), *bo], g)
        y = ctx.node("Add", [ctx.node("Mul", [ctx.node("Sub", [one, z]), o]), ctx.node("Mul", [z, y])])
        outs.append(y)
    return _outputs(layer, [u.blob(outs if p.sequenceOutput else [y]), u.blob([y])])


_LSTM_GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")


def _lstm(ctx: LayerContext, u: _Unroll, p: Any, w: Any, acts: list[Callable[[str], str]], reverse: bool,
          y: str, c: str, field: str) -> tuple[list[str], str, str]:
    """One direction of an LSTM; returns the per-step outputs (in input order when ``reverse``,
    as the bidirectional layer defines them) and the final y and c."""
    f_act, g_act, h_act = acts
    wx = {k: u.inputs_times(u.matrix(getattr(w, f"{k}WeightMatrix"), u.in_size, f"{field}.{k}WeightMatrix"))
          for k in _LSTM_GATES}
    rm = {k: u.matrix(getattr(w, f"{k}RecursionMatrix"), u.hidden, f"{field}.{k}RecursionMatrix") for k in _LSTM_GATES}
    bias: dict[str, list[str]] = {k: [] for k in _LSTM_GATES}
    if p.hasBiasVectors:
        bias = {k: [u.vector(getattr(w, f"{k}BiasVector"), f"{field}.{k}BiasVector",
                             plus=1.0 if k == "forgetGate" and p.forgetBias else 0.0)] for k in _LSTM_GATES}
    elif p.forgetBias:
        raise ctx.unsupported("has forgetBias without bias vectors: NeuralNetwork.proto adds 1 to b_f, which "
                              "hasBiasVectors = false leaves out", expected="forgetBias with hasBiasVectors")
    peep = {k: [] for k in ("inputGate", "forgetGate", "outputGate")}
    if p.hasPeepholeVectors:
        peep = {k: [u.vector(getattr(w, f"{k}PeepholeVector"), f"{field}.{k}PeepholeVector")] for k in peep}
    limit = float(p.cellClipThreshold) or 50.0
    c_lo, c_hi = ctx.const(np.float32(-limit), name="cell_lo"), ctx.const(np.float32(limit), name="cell_hi")
    one = ctx.const(np.float32(1), name="one")
    steps = list(reversed(range(u.seq))) if reverse else list(range(u.seq))
    outs: dict[int, str] = {}
    for t in steps:
        def gate(k: str, act: Callable[[str], str], cell: str) -> str:
            parts = [wx[k][t], ctx.node("MatMul", [y, rm[k]]), *bias[k]]
            parts += [ctx.node("Mul", [pv, cell]) for pv in peep.get(k, [])]
            return u.gate(parts, act)

        i = gate("inputGate", f_act, c)
        z = gate("blockInput", g_act, c)
        if p.coupledInputAndForgetGate:
            keep = ctx.node("Sub", [one, i])
        else:
            keep = gate("forgetGate", f_act, c)
        c = ctx.node("Clip", [ctx.node("Add", [ctx.node("Mul", [c, keep]), ctx.node("Mul", [i, z])]), c_lo, c_hi])
        o = gate("outputGate", f_act, c)
        y = ctx.node("Mul", [h_act(c), o])
        outs[t] = y
    return [outs[t] for t in range(u.seq)] if reverse else [outs[t] for t in steps], y, c


@nn_layer("uniDirectionalLSTM")
def uni_lstm(ctx: LayerContext, layer: Any, inputs: list[str]) -> list[str]:
    """LSTMParams equations (peepholes, coupled input/forget gate, forget bias, cell clip)."""
    p = layer.uniDirectionalLSTM
    _refuse_reversed_sequence(ctx, p, p.params.sequenceOutput)
    u = _Unroll(ctx, inputs[0], int(p.inputVectorSize), int(p.outputVectorSize))
    acts = _activations(ctx, p.activations, 3, "activations")
    steps, y, c = _lstm(ctx, u, p.params, p.weightParams, acts, bool(p.reverseInput), u.state(inputs, 1),
                        u.state(inputs, 2), "weightParams")
    return _outputs(layer, [u.blob(steps if p.params.sequenceOutput else [y]), u.blob([y]), u.blob([c])])


@nn_layer("biDirectionalLSTM")
def bi_lstm(ctx: LayerContext, layer: Any, inputs: list[str]) -> list[str]:
    """A forward and a backward LSTM; output channels [forward, backward], the backward output
    at step t being the one after x_S .. x_t (so the final one is at step 1)."""
    p = layer.biDirectionalLSTM
    if len(p.weightParams) != 2:
        raise ctx.format_error(f"has {len(p.weightParams)} weightParams", field="weightParams",
                               expected="2 (forward, backward)")
    u = _Unroll(ctx, inputs[0], int(p.inputVectorSize), int(p.outputVectorSize))
    fwd_acts = _activations(ctx, p.activationsForwardLSTM, 3, "activationsForwardLSTM")
    bwd_acts = (_activations(ctx, p.activationsBackwardLSTM, 3, "activationsBackwardLSTM")
                if len(p.activationsBackwardLSTM) else fwd_acts)
    fs, fy, fc = _lstm(ctx, u, p.params, p.weightParams[0], fwd_acts, False, u.state(inputs, 1), u.state(inputs, 2),
                       "weightParams[0]")
    bs, by, bc = _lstm(ctx, u, p.params, p.weightParams[1], bwd_acts, True, u.state(inputs, 3), u.state(inputs, 4),
                       "weightParams[1]")
    pairs = list(zip(fs, bs)) if p.params.sequenceOutput else [(fy, by)]
    y = u.blob([ctx.node("Concat", [a, b], axis=2) for a, b in pairs], channels=2 * u.hidden)
    return _outputs(layer, [y, u.blob([fy]), u.blob([fc]), u.blob([by]), u.blob([bc])])

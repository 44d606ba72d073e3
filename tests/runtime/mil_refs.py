"""numpy references of MIL op semantics (from the op definitions' docs), written element by
element so they share no code or trick with the ONNX translation they check."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

_APPLY: dict[str, Callable[[float, float], float]] = {
    "update": lambda old, new: new,
    "add": lambda old, new: old + new,
    "sub": lambda old, new: old - new,
    "mul": lambda old, new: old * new,
    "div": lambda old, new: old / new,
    "max": max,
    "min": min,
}


def scatter(data: np.ndarray, indices: np.ndarray, updates: np.ndarray, axis: int, mode: str) -> np.ndarray:
    out = data.copy()
    axis %= data.ndim
    for pos in np.ndindex(*updates.shape):
        target = list(pos)
        target[axis] = int(indices[pos[axis]])
        out[tuple(target)] = _APPLY[mode](out[tuple(target)], updates[pos])
    return out


def scatter_along_axis(data: np.ndarray, indices: np.ndarray, updates: np.ndarray, axis: int, mode: str) -> np.ndarray:
    out = data.copy()
    axis %= data.ndim
    for pos in np.ndindex(*updates.shape):
        target = list(pos)
        target[axis] = int(indices[pos])
        out[tuple(target)] = _APPLY[mode](out[tuple(target)], updates[pos])
    return out


def scatter_nd(data: np.ndarray, indices: np.ndarray, updates: np.ndarray, mode: str) -> np.ndarray:
    out = data.copy()
    k = indices.shape[-1]
    for pos in np.ndindex(*indices.shape[:-1]):
        head = tuple(int(i) for i in indices[pos])
        for tail in np.ndindex(*data.shape[k:]):
            out[head + tail] = _APPLY[mode](out[head + tail], updates[pos + tail])
    return out


def pixel_unshuffle(x: np.ndarray, f: int) -> np.ndarray:
    n, c, h, w = x.shape
    out = np.zeros((n, c * f * f, h // f, w // f), x.dtype)
    for ci, i, j in itertools.product(range(c), range(f), range(f)):
        out[:, ci * f * f + i * f + j] = x[:, ci, i::f, j::f]
    return out


def local_response_norm(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    out = np.empty_like(x)
    channels = x.shape[1]
    half = (size - 1) // 2
    for c in range(channels):
        window = x[:, max(0, c - half): min(channels, c + half + 1)]
        out[:, c] = x[:, c] / (k + alpha / size * (window**2).sum(axis=1)) ** beta
    return out


def space_to_batch(x: np.ndarray, block: tuple[int, int], pads: list[list[int]]) -> np.ndarray:
    padded = np.pad(x, [(0, 0), (0, 0), tuple(pads[0]), tuple(pads[1])])
    n = x.shape[0]
    bh, bw = block
    outs = [padded[b, :, i::bh, j::bw] for i in range(bh) for j in range(bw) for b in range(n)]
    return np.stack(outs)


def batch_to_space(x: np.ndarray, block: tuple[int, int], crops: list[list[int]]) -> np.ndarray:
    bh, bw = block
    n = x.shape[0] // (bh * bw)
    _, c, h, w = x.shape
    full = np.zeros((n, c, h * bh, w * bw), x.dtype)
    for i, j, b in itertools.product(range(bh), range(bw), range(n)):
        full[b, :, i::bh, j::bw] = x[(i * bw + j) * n + b]
    (top, bottom), (left, right) = crops
    return full[:, :, top: h * bh - bottom, left: w * bw - right]


def reverse_sequence(x: np.ndarray, lengths: np.ndarray, seq_axis: int, batch_axis: int) -> np.ndarray:
    out = x.copy()
    seq_axis %= x.ndim
    batch_axis %= x.ndim
    for pos in np.ndindex(*x.shape):
        b, t = pos[batch_axis], pos[seq_axis]
        if t < lengths[b]:
            src = list(pos)
            src[seq_axis] = lengths[b] - 1 - t
            out[pos] = x[tuple(src)]
    return out


def sliding_windows(x: np.ndarray, axis: int, size: int, stride: int) -> np.ndarray:
    axis %= x.ndim
    count = (x.shape[axis] - size) // stride + 1
    windows = [np.take(x, range(i * stride, i * stride + size), axis=axis) for i in range(count)]
    return np.stack(windows, axis=axis)


def sampling_grid(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """Sampling positions of MIL's ``sampling_mode`` (resize_bilinear's documented formulas)."""
    i = np.arange(n_out, dtype=np.float64)
    if mode == "ALIGN_CORNERS" and n_out == 1:
        g = np.full(1, (n_in - 1) / 2)
    elif mode in ("STRICT_ALIGN_CORNERS", "DEFAULT") and n_out == 1:
        g = np.zeros(1)  # i * spacing at i = 0 (the spacing itself divides by zero)
    elif mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        g = i * (n_in - 1) / (n_out - 1)
    elif mode == "DEFAULT":
        g = i * (n_in - n_in / n_out) / (n_out - 1)
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        g = 0.5 * delta + i * delta
    else:  # UNALIGN_CORNERS
        g = i * n_in / n_out + 0.5 * n_in / n_out - 0.5
    return np.clip(g, 0, n_in - 1)


def resize_linear(x: np.ndarray, out_shape: tuple[int, ...], mode: str, resized_dims: int) -> np.ndarray:
    """Separable linear interpolation of the last ``resized_dims`` axes (identity where a size is kept,
    except for OFFSET_CORNERS, whose grid is offset even then)."""
    y = x.astype(np.float64)
    for axis, (n_in, n_out) in enumerate(zip(x.shape, out_shape)):
        if axis < x.ndim - resized_dims or (n_in == n_out and mode != "OFFSET_CORNERS"):
            continue
        g = sampling_grid(n_in, n_out, mode)
        lo = np.floor(g).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = (g - lo).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
        y = np.take(y, lo, axis=axis) * (1 - frac) + np.take(y, hi, axis=axis) * frac
    return y


def _padded_value(img: np.ndarray, i: int, j: int, padding: str, value: float) -> float:
    """``img[i, j]`` of the image padded by MIL's rule (constant/border/reflection/symmetric)."""
    h, w = img.shape

    def fold(k: int, n: int) -> int | None:
        if 0 <= k < n:
            return k
        if padding == "constant":
            return None
        if padding == "border":
            return min(max(k, 0), n - 1)
        if padding == "reflection":  # |1 2 3| -> 3 2 |1 2 3| 2 1: period 2(n - 1)
            period = 2 * (n - 1)
            k %= period
            return k if k < n else period - k
        period = 2 * n  # symmetric: 2 1 |1 2 3| 3 2
        k %= period
        return k if k < n else period - 1 - k

    fi, fj = fold(i, h), fold(j, w)
    return value if fi is None or fj is None else float(img[fi, fj])


def resample(x: np.ndarray, coords: np.ndarray, sampling: str, padding: str, value: float, coord_mode: str,
             align: bool) -> np.ndarray:
    """MIL resample: coordinates ``[B, H2, W2, 2]`` in (w, h) order, sampled from the padded image."""
    bsz, channels, h, w = x.shape
    out = np.zeros((bsz, channels, coords.shape[1], coords.shape[2]))
    sizes = np.array([w, h], dtype=np.float64)
    g = coords.astype(np.float64)
    if coord_mode == "normalized_minus_one_to_one":
        g = (g + 1) / 2
    if coord_mode != "unnormalized":
        g = g * (sizes - 1) if align else g * sizes - 0.5
    for b, c in itertools.product(range(bsz), range(channels)):
        img = x[b, c]
        for p, q in np.ndindex(*coords.shape[1:3]):
            cw, ch = g[b, p, q]
            if sampling == "nearest":
                out[b, c, p, q] = _padded_value(img, int(np.round(ch)), int(np.round(cw)), padding, value)
                continue
            i0, j0 = int(np.floor(ch)), int(np.floor(cw))
            fi, fj = ch - i0, cw - j0
            out[b, c, p, q] = sum(
                wt * _padded_value(img, i, j, padding, value)
                for i, j, wt in (
                    (i0, j0, (1 - fi) * (1 - fj)), (i0, j0 + 1, (1 - fi) * fj),
                    (i0 + 1, j0, fi * (1 - fj)), (i0 + 1, j0 + 1, fi * fj),
                )
            )
    return out


def affine_grid(theta: np.ndarray, bsz: int, out_h: int, out_w: int, align: bool) -> np.ndarray:
    """The [-1, 1] sampling coordinates of MIL's affine (``theta``: ``[D, 6]``, D = 1 or B)."""

    def positions(n: int) -> np.ndarray:
        return np.linspace(-1, 1, n) if align else (np.arange(n) + 0.5) * 2 / n - 1

    grid = np.zeros((bsz, out_h, out_w, 2))
    for b in range(bsz):
        a0, a1, a2, b0, b1, b2 = theta[b if theta.shape[0] > 1 else 0]
        for p, yy in enumerate(positions(out_h)):
            for q, xx in enumerate(positions(out_w)):
                grid[b, p, q] = (a0 * xx + a1 * yy + a2, b0 * xx + b1 * yy + b2)
    return grid


def box_corners(boxes: np.ndarray, mode: str, normalized: bool, scale: float, h: int, w: int) -> np.ndarray:
    """MIL boxes in ``box_coordinate_mode`` -> ``[h_start, w_start, h_end, w_end]`` in pixels."""
    out = []
    for a, b_, c, d in boxes.astype(np.float64):
        if mode == "CORNERS_HEIGHT_FIRST":
            box = [a, b_, c, d]
        elif mode == "CORNERS_WIDTH_FIRST":
            box = [b_, a, d, c]
        elif mode == "CENTER_SIZE_HEIGHT_FIRST":
            box = [a - c / 2, b_ - d / 2, a + c / 2, b_ + d / 2]
        else:  # CENTER_SIZE_WIDTH_FIRST: [w_centre, h_centre, width, height]
            box = [b_ - d / 2, a - c / 2, b_ + d / 2, a + c / 2]
        if normalized:
            box = [box[0] * (h - 1), box[1] * (w - 1), box[2] * (h - 1), box[3] * (w - 1)]
        out.append([v * scale for v in box])
    return np.array(out)


def crop_and_resize(image: np.ndarray, box: np.ndarray, th: int, tw: int, mode: str, pad: float) -> np.ndarray:
    """TensorFlow's crop_and_resize of one ``[C, H, W]`` image and one pixel box (corner-aligned grid;
    a sample outside the image is ``pad``)."""
    channels, h, w = image.shape

    def positions(start: float, end: float, n: int) -> list[float]:
        if n == 1:
            return [(start + end) / 2 if mode == "ALIGN_CORNERS" else start]
        return [start + i * (end - start) / (n - 1) for i in range(n)]

    out = np.full((channels, th, tw), pad, dtype=np.float64)
    for p, r in enumerate(positions(box[0], box[2], th)):
        for q, c in enumerate(positions(box[1], box[3], tw)):
            if not (0 <= r <= h - 1 and 0 <= c <= w - 1):
                continue
            r0, c0 = int(np.floor(r)), int(np.floor(c))
            r1, c1 = min(r0 + 1, h - 1), min(c0 + 1, w - 1)
            fr, fc = r - r0, c - c0
            top = image[:, r0, c0] * (1 - fc) + image[:, r0, c1] * fc
            bottom = image[:, r1, c0] * (1 - fc) + image[:, r1, c1] * fc
            out[:, p, q] = top * (1 - fr) + bottom * fr
    return out

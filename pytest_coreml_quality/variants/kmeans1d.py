"""Exact, deterministic k-means of one-dimensional weights (the ``kmeans_lut`` tables).

coremltools clusters each weight tensor with scikit-learn's general ``KMeans``, which
computes every point-to-centre distance at each iteration: about 43 s for the 488k
weights of the fixture model at 8 bits. In one dimension clusters are contiguous runs
of the sorted values, so after one sort (of the distinct values, weighted by their
counts) a Lloyd iteration only needs the ``k - 1`` boundaries (midpoints between
neighbouring centres, located with ``np.searchsorted``) and prefix sums
(``centre = (S[b] - S[a]) / (N[b] - N[a])``): its cost does not depend on the number of
weights, so iterating to exact convergence (a Lloyd fixed point, not necessarily the
global optimum) is cheap, and so are swap moves that escape poor fixed points. The result
is a deterministic function of the values (no random initialisation).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

import numpy as np

# Caps only: Lloyd's partition stops changing, and swaps stop paying, well before.
MAX_ITERATIONS = 10_000
MAX_SWAPS = 1_000


def kmeans_1d(
    values: np.ndarray, n_clusters: int, *, memo: "DistinctMemo | None" = None, key: Hashable = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the values of ``values`` (any shape) into at most ``n_clusters`` centres.

    Returns ``(centres, labels)``: centres ascending (float64, as many as there are clusters,
    at most the number of distinct values), and for each value (flattened, C order) the
    index of its nearest centre, ties going to the lower centre.

    With a ``memo`` and a ``key`` that names these exact values (the caller vouches for
    it), the sort is shared with earlier calls for the same key: a sweep clusters each
    weight tensor at five bit widths, and the sort costs more than the clustering.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    if flat.size == 0 or n_clusters < 1:
        raise ValueError("kmeans_1d needs at least one value and one cluster")
    if memo is not None and key is not None:
        distinct, inverse, counts = memo.distinct(key, flat)
    else:
        distinct, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if distinct.size <= n_clusters:  # every distinct value is its own centre: zero error
        return distinct.copy(), inverse.reshape(-1).astype(np.intp)  # a copy: the memo keeps its own
    centres = lloyd_sorted(distinct, counts.astype(np.float64), n_clusters)
    labels = np.searchsorted(_boundaries(centres), distinct, side="left")
    return centres, labels[inverse.reshape(-1)]


class DistinctMemo:
    """The sorted distinct values, inverse indices and counts of tensors, by caller-given key.

    Exactly ``np.unique(values, return_inverse=True, return_counts=True)``, computed once per
    key. Bounded: once ``max_bytes`` are held, new tensors are sorted but not kept (keeping
    the first ones, rather than evicting, still saves their sorts when a sweep walks the
    same tensors in the same order at every bit width). Thread-safe.
    """

    def __init__(self, max_bytes: int = 512 << 20) -> None:
        self.max_bytes = max_bytes
        self.held_bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: dict[Hashable, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def distinct(self, key: Hashable, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(distinct, inverse, counts)`` of ``flat`` (float64, 1-D), from the memo when known."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found[1].size == flat.size:
                self.hits += 1
                distinct, inverse, counts = found
                return distinct, inverse, counts
        distinct, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        # The smallest index type that holds the distinct count: a quarter of int64's memory.
        small = inverse.astype(np.min_scalar_type(max(distinct.size - 1, 0)))
        size = distinct.nbytes + small.nbytes + counts.nbytes
        with self._lock:
            self.misses += 1
            if key not in self._entries and self.held_bytes + size <= self.max_bytes:
                self._entries[key] = (distinct, small, counts)
                self.held_bytes += size
        return distinct, inverse, counts


def lloyd_sorted(distinct: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """k-means of ascending distinct ``distinct`` values weighted by ``counts`` (k < len).

    Lloyd's iterations run from two initialisations, each until the partition no longer
    changes (each centre is then the mean of its run, each value nearest its own centre),
    then improves by swaps (:func:`_swap`); the smaller squared error wins. Lloyd on
    discrete values stops in a local optimum: quantiles of the weights fit the bulk of a
    distribution; quantiles of the density to the power 1/3 (the asymptotically optimal
    spacing of quantizer levels) also reach into heavy tails, which dominate the error
    there. (Swapping only from the better start halves the time but ends 5% worse than
    scikit-learn on one fixture layer at 5 bits.)
    """
    sums = _PrefixSums(distinct, counts)
    best, best_error = distinct[:0], np.inf
    for weights in (counts, _companding_weights(distinct, counts)):
        centres = _lloyd(distinct, sums, distinct[_quantile_starts(np.concatenate(([0.0], np.cumsum(weights))), k)])
        centres = _swap(distinct, sums, centres, sums.error(distinct, centres))
        error = sums.error(distinct, centres)
        if error < best_error:  # strict: ties keep the first, so the result is deterministic
            best, best_error = centres, error
    return best


class _PrefixSums:
    """Prefix sums of counts, centred values and their squares over the sorted distinct values."""

    def __init__(self, distinct: np.ndarray, counts: np.ndarray) -> None:
        self.shift = float(np.dot(distinct, counts) / counts.sum())  # centred sums lose less precision
        centred = distinct - self.shift
        self.n = np.concatenate(([0.0], np.cumsum(counts)))
        self.s = np.concatenate(([0.0], np.cumsum(centred * counts)))
        self.q = np.concatenate(([0.0], np.cumsum(centred * centred * counts)))
        self.padded = np.concatenate(([-np.inf], distinct, [np.inf]))  # padded[i] = distinct[i - 1]

    def runs(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(count, centred sum) of each run ``[edges[j], edges[j+1])``."""
        return self.n[edges[1:]] - self.n[edges[:-1]], self.s[edges[1:]] - self.s[edges[:-1]]

    def segment_error(self, a: np.ndarray, b: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """Squared error of each run ``[a, b)`` against a given centre."""
        c = centre - self.shift
        return (self.q[b] - self.q[a]) - 2 * c * (self.s[b] - self.s[a]) + c * c * (self.n[b] - self.n[a])

    def error(self, distinct: np.ndarray, centres: np.ndarray) -> float:
        """Total squared error of the values against their nearest centres."""
        edges = _edges(distinct, centres)
        n, s = self.runs(edges)
        q = self.q[edges[1:]] - self.q[edges[:-1]]
        c = centres - self.shift
        return float(np.sum(q - 2 * c * s + c * c * n))


def _edges(distinct: np.ndarray, centres: np.ndarray) -> np.ndarray:
    cut = np.searchsorted(distinct, _boundaries(centres), side="right")  # run j = [cut[j-1], cut[j])
    return np.concatenate(([0], cut, [distinct.size]))


def _lloyd(distinct: np.ndarray, sums: _PrefixSums, centres: np.ndarray) -> np.ndarray:
    # Thousands of iterations per tensor, each on a few hundred centres: the cost is numpy's
    # per-call overhead, so each iteration makes as few calls as it can. Between iterations
    # most boundaries stay between the same two values, so the previous cuts are checked
    # first (two lookups) and only the boundaries that crossed a value are searched again.
    # Every quantity is computed as the plain version would (same operations, same order).
    padded = sums.padded
    cut: np.ndarray | None = None
    edges = np.empty(centres.size + 1, dtype=np.intp)
    edges[0], edges[-1] = 0, distinct.size
    for _ in range(MAX_ITERATIONS):
        bounds = (centres[:-1] + centres[1:]) / 2
        if cut is None:
            cut = distinct.searchsorted(bounds, side="right")  # run j = [cut[j-1], cut[j])
        else:
            # cut[j] is the number of values <= bounds[j]: unchanged while padded[cut] <= b < padded[cut + 1].
            moved = ~((padded[cut] <= bounds) & (bounds < padded[cut + 1]))
            if not moved.any():
                break
            cut = cut.copy()
            cut[moved] = distinct.searchsorted(bounds[moved], side="right")
        edges[1:-1] = cut
        at_n, at_s = sums.n[edges], sums.s[edges]
        n, s = at_n[1:] - at_n[:-1], at_s[1:] - at_s[:-1]
        if not n.all():  # a centre lost all its values: move it to the worst-fitted value
            full = n != 0
            centres = _reseed(distinct, s[full] / n[full] + sums.shift, int(n.size - full.sum()))
            edges = np.empty(centres.size + 1, dtype=np.intp)
            edges[0], edges[-1] = 0, distinct.size
            cut = None
            continue
        centres = s / n + sums.shift
    return centres


def _swap(distinct: np.ndarray, sums: _PrefixSums, centres: np.ndarray, error: float) -> np.ndarray:
    """Escape Lloyd's local optima: while it pays, drop the centre whose loss costs least and
    split the run whose split gains most (at its mean), then let Lloyd settle again."""
    for _ in range(MAX_SWAPS):
        edges = _edges(distinct, centres)
        n, s = sums.runs(edges)
        pivot = np.searchsorted(distinct, centres, side="right").clip(edges[:-1], edges[1:])
        nl, sl = sums.n[pivot] - sums.n[edges[:-1]], sums.s[pivot] - sums.s[edges[:-1]]
        nr, sr = n - nl, s - sl
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where((nl > 0) & (nr > 0), sl * sl / nl + sr * sr / nr - s * s / n, 0.0)
        g = int(np.argmax(gain))
        if gain[g] <= 0:
            break
        costs = _removal_costs(distinct, sums, centres, edges)
        costs[g] = np.inf
        r = int(np.argmin(costs))
        if costs[r] >= gain[g]:
            break
        split = np.array([sl[g] / nl[g], sr[g] / nr[g]]) + sums.shift
        trial = _lloyd(distinct, sums, np.sort(np.concatenate((np.delete(centres, [g, r]), split))))
        trial_error = sums.error(distinct, trial)
        if trial_error >= error * (1 - 1e-9):
            break
        centres, error = trial, trial_error
    return centres


def _removal_costs(distinct: np.ndarray, sums: _PrefixSums, centres: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """For each centre, how much the error grows when it goes and its run joins its neighbours."""
    lower = np.concatenate(([np.nan], centres[:-2], [centres[-2]]))  # end centres: one neighbour
    upper = np.concatenate(([centres[1]], centres[2:], [np.nan]))
    middle = np.where(np.isnan(lower), -np.inf, np.where(np.isnan(upper), np.inf, (lower + upper) / 2))
    a, b = edges[:-1], edges[1:]
    p = np.searchsorted(distinct, middle, side="right").clip(a, b)
    left = sums.segment_error(a, p, np.nan_to_num(lower))
    right = sums.segment_error(p, b, np.nan_to_num(upper))
    return left + right - sums.segment_error(a, b, centres)


def _companding_weights(distinct: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per distinct value, its share of the integral of density**(1/3) (estimated from gaps)."""
    gaps = np.diff(distinct)
    mass = (counts[:-1] + counts[1:]) / 2  # the values that share each gap, half each side
    part = np.cbrt(mass) * np.cbrt(gaps) ** 2  # (mass/width)**(1/3) * width, up to a constant
    return np.concatenate(([0.0], part)) / 2 + np.concatenate((part, [0.0])) / 2


def _boundaries(centres: np.ndarray) -> np.ndarray:
    return (centres[:-1] + centres[1:]) / 2


def _quantile_starts(cum_n: np.ndarray, k: int) -> np.ndarray:
    """Indices of k distinct values at the (j + 1/2)/k quantiles of the weighted values."""
    m = cum_n.size - 1
    targets = (np.arange(k) + 0.5) / k * cum_n[-1]
    idx = np.searchsorted(cum_n[1:], targets, side="right").clip(0, m - 1)
    # Many equal weights (zeros, say) put several quantiles on one value: spread them so
    # that every centre starts on its own distinct value.
    idx = np.maximum(idx, np.arange(k))
    idx = np.maximum.accumulate(idx - np.arange(k)) + np.arange(k)
    idx = np.minimum(idx, m - k + np.arange(k))
    return idx


def _reseed(distinct: np.ndarray, kept: np.ndarray, missing: int) -> np.ndarray:
    """Add ``missing`` centres to ``kept``, each on the value farthest from its nearest centre."""
    centres = np.sort(kept)
    for _ in range(missing):
        nearest = centres[np.searchsorted(_boundaries(centres), distinct, side="left")]
        far = distinct[int(np.argmax(np.abs(distinct - nearest)))]  # not a centre: more values than centres
        centres = np.sort(np.append(centres, far))
    return centres

"""Input normalization fitted on the train split only.

* ``standard``: subtract the mean, divide by the standard deviation, per coordinate.
* ``rank-gauss``: map each coordinate through its empirical CDF (quantile knots from the train
  split) and then the standard normal quantile function. MI is invariant under invertible
  per-coordinate maps, so this changes nothing in the target quantity while turning heavy-tailed
  inputs (where neural critics see a few huge values and collapse) into well-scaled Gaussians.
* ``none``: leave inputs as they are.

Statistics are sufficient summaries (mean/std or quantile knots), so a fitted normalizer is small,
serializable, and can be fitted from a streamed sample by the distributed pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

METHODS = ("standard", "rank-gauss", "none")
_KNOTS = 1001
APPLY_BLOCK_VALUES = 1 << 22


@dataclass(frozen=True)
class Normalizer:
    """A fitted per-coordinate transform. Build with :func:`fit`."""

    method: str
    mean: np.ndarray | None = None  # (d,)
    std: np.ndarray | None = None  # (d,)
    knots: list = field(default_factory=list)  # per coordinate: (values, levels) strictly increasing
    passthrough: np.ndarray | None = None  # (d,) bool: columns left untouched (one-hot categoricals)

    def apply(self, a: np.ndarray) -> np.ndarray:
        """Transform an ``(n, d)`` array; returns float32.

        Computed in float64 on blocks of about :data:`APPLY_BLOCK_VALUES` values written into the
        float32 result, so the extra memory is a few float64 blocks (32 MB each), not several
        float64 copies of the whole input (for 1M x 768 float32 rows about 10-15 GB more;
        benchmarks/normalize_memory.py). Every value is a function of its own input value only,
        so blocks change nothing.
        """
        a = np.asarray(a)
        out = np.empty(a.shape, dtype=np.float32)
        rows = max(1, APPLY_BLOCK_VALUES // max(1, a.shape[1] if a.ndim == 2 else 1))
        for s in range(0, a.shape[0], rows):
            out[s:s + rows] = self._apply64(np.asarray(a[s:s + rows], dtype=np.float64))
        return out

    def _apply64(self, a: np.ndarray) -> np.ndarray:
        if self.method == "none":
            return a
        if self.method == "standard":
            out = (a - self.mean) / self.std
        else:
            tables = self.__dict__.get("_tables")
            if tables is None:  # built once per normalizer, on first use (a read task's first block)
                tables = [_Lookup(vals, levels) for vals, levels in self.knots]
                object.__setattr__(self, "_tables", tables)
            at = np.ascontiguousarray(a.T)  # one contiguous row per coordinate
            u = np.empty_like(at)
            for j, t in enumerate(tables):
                u[j] = t.interp(at[j])
            out = torch.special.ndtri(torch.from_numpy(u)).numpy().T
        if self.passthrough is not None and self.passthrough.any():
            out[:, self.passthrough] = a[:, self.passthrough]
        return out

    def to_dict(self) -> dict:
        """What the record stores: method and the summary (not the knots themselves)."""
        d: dict = {"method": self.method}
        if self.method == "standard":
            d["mean"] = [round(float(v), 6) for v in self.mean]
            d["std"] = [round(float(v), 6) for v in self.std]
        return d


LOOKUP_BINS = 4096
LOOKUP_MAX_SPAN = 3


class _Lookup:
    """``np.interp(x, vals, levels)``, value for value, without its binary search per value (the
    read tasks' largest cost on wide embeddings: 1,001 knots, 10 comparisons a value). A uniform
    grid of :data:`LOOKUP_BINS` bins over ``[vals[0], vals[-1]]`` gives each value's knot interval
    up to :data:`LOOKUP_MAX_SPAN` knots, which a few vectorized steps settle; then np.interp's own
    formula ``slope[j] * (x - vals[j]) + levels[j]`` with its end and exact-knot cases. Columns
    whose knots crowd into a few bins (heavy tails: a Cauchy's range is ~10^5 of its bulk) keep
    ``np.interp``. tests/test_normalize.py checks equality with np.interp bit for bit."""

    def __init__(self, vals: np.ndarray, levels: np.ndarray):
        self.vals, self.levels = vals, levels
        self.inv_w = None
        w = (vals[-1] - vals[0]) / LOOKUP_BINS
        if not (np.isfinite(w) and w > 0):
            return
        edges = vals[0] + w * np.arange(LOOKUP_BINS + 1)
        lo = np.searchsorted(vals, edges[:-1], side="right") - 1
        hi = np.searchsorted(vals, edges[1:], side="right") - 1
        self.span = int((hi - lo).max())
        if self.span > LOOKUP_MAX_SPAN:
            return
        self.lo = np.clip(lo, 0, None).astype(np.int16)  # <= 1,001 knots
        self.slopes = np.diff(levels) / np.diff(vals)
        self.inv_w = 1.0 / w

    def interp(self, x: np.ndarray) -> np.ndarray:
        vals, levels = self.vals, self.levels
        if self.inv_w is None:
            return np.interp(x, vals, levels)
        k = vals.size
        with np.errstate(invalid="ignore"):  # NaN / inf inputs: their bin is clipped, their value set below
            b = ((x - vals[0]) * self.inv_w).astype(np.int64)
        np.clip(b, 0, LOOKUP_BINS - 1, out=b)
        i = self.lo[b].astype(np.int64)
        for _ in range(self.span + 1):  # to the last knot <= x
            i += (vals[np.minimum(i + 1, k - 1)] <= x) & (i < k - 1)
        # A value within rounding of a bin edge can land in the next bin, past a knot that lies
        # between it and the edge: one step back settles it.
        i -= (vals[i] > x) & (i > 0)
        np.minimum(i, k - 2, out=i)
        out = self.slopes[i] * (x - vals[i]) + levels[i]
        out = np.where(x == vals[i], levels[i], out)
        out = np.where(x <= vals[0], levels[0], out)
        return np.where(x >= vals[-1], levels[-1], out)


def fit(method: str, train: np.ndarray, name: str = "x", passthrough: np.ndarray | None = None) -> Normalizer:
    """Fit a normalizer on the train split.

    Args:
        method: one of ``standard``, ``rank-gauss``, ``none``.
        train: (n, d) train-split values.
        name: which input this is (``x`` or ``z``), for error messages.
        passthrough: (d,) bool mask of columns to leave as they are (e.g. one-hot codes).

    Raises:
        ValueError: unknown method, or a non-passthrough column constant on the train split.
    """
    if method not in METHODS:
        raise ValueError(f"normalize must be one of {METHODS}; got {method!r}")
    train = np.asarray(train, dtype=np.float64)
    d = train.shape[1]
    keep = np.zeros(d, bool) if passthrough is None else np.asarray(passthrough, bool)
    std = train.std(axis=0)
    constant = np.flatnonzero((std == 0) & ~keep)
    if constant.size:
        raise ValueError(
            f"{name} column(s) {constant.tolist()[:10]} are constant on the train split "
            f"(value {train[0, constant[0]]!r}); they carry no information: drop them"
        )
    if method == "none":
        return Normalizer("none", passthrough=keep)
    if method == "standard":
        return Normalizer("standard", mean=train.mean(axis=0), std=np.where(std == 0, 1.0, std), passthrough=keep)
    n = train.shape[0]
    probs = np.linspace(0.0, 1.0, min(n, _KNOTS))
    q = np.quantile(train, probs, axis=0)  # (K, d)
    eps = 0.5 / n
    knots = []
    for j in range(d):
        # Ties (discrete values) get the mean level of their run, so equal inputs map equally.
        vals, inverse = np.unique(q[:, j], return_inverse=True)
        levels = np.bincount(inverse, weights=probs) / np.bincount(inverse)
        levels = np.clip(levels, eps, 1.0 - eps)
        if vals.size == 1:  # only reachable for passthrough columns
            vals, levels = np.array([vals[0] - 1, vals[0] + 1]), np.array([0.5, 0.5])
        knots.append((vals, levels))
    return Normalizer("rank-gauss", knots=knots, passthrough=keep)

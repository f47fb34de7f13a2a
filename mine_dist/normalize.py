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
            out = np.empty_like(a)
            for j, (vals, levels) in enumerate(self.knots):
                u = np.interp(a[:, j], vals, levels)
                out[:, j] = torch.special.ndtri(torch.from_numpy(u)).numpy()
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

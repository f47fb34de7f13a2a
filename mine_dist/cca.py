"""The canonical-correlation basis of (x, z), fit on train rows: what the joint critic starts from.

An invertible linear map of x and one of z leave I(X;Z) unchanged. The CCA maps
``x' = A (x - mean_x)``, ``z' = B (z - mean_z)`` make each side white and the cross-covariance
diagonal, with the canonical correlations ``rho_1 >= rho_2 >= ...`` on it. In that basis the optimal
critic of a Gaussian pair is a sum over pairs,
``sum_i rho_i/(1-rho_i^2) x'_i z'_i - rho_i^2/(2(1-rho_i^2)) (x'_i^2 + z'_i^2)`` (+ a constant), which
:class:`mine_dist.critics.JointCritic` holds beside its MLP and starts there. After rank-gauss
normalization this is also the optimal critic of any Gaussian copula; the MLP learns the rest.

Only pairs whose train correlation clears what independent noise would show are used
(:func:`noise_edge`): with d_x, d_z of several hundred and a few thousand rows, pure noise has
canonical correlations of 0.2-0.3, and a critic started on them fits the train rows only. And the
start is scaled down where the validation rows say the Gaussian critic is wrong
(``Trainer.choose_start``): two embeddings of the same names have train correlations near 1 on
hundreds of pairs, and the full Gaussian start read -20 nats on held-out rows.
Everything here is numpy and fit on train rows only; the estimate is read on held-out test rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The pairs kept have rho^2 above NOISE_MARGIN x the noise edge (measured on the suite: 1.25 keeps
# embed-256's 4 real pairs out of 256 and every real pair of the Gaussian tasks; docs/benchmarks.md).
NOISE_MARGIN = 1.25
FIT_MAX_ROWS = 100_000  # rows the basis is fit on (a seeded sample above this): ~10 s at 768 + 768 dims
RIDGE = 1e-6  # times trace / d, added to each covariance: keeps the maps finite for constant or one-hot columns
_BLOCK = 8192


@dataclass(frozen=True)
class Basis:
    """``x' = ax @ (x - mx)``, ``z' = az @ (z - mz)``; ``rho`` the canonical correlations (descending),
    ``n`` the rows fit on, ``pairs`` how many clear the noise edge."""

    ax: np.ndarray  # (dx, dx)
    mx: np.ndarray  # (dx,)
    az: np.ndarray  # (dz, dz)
    mz: np.ndarray  # (dz,)
    rho: np.ndarray  # (min(dx, dz),)
    n: int
    pairs: int

    def to_dict(self) -> dict:
        """Plain arrays and ints (for a Ray Train worker's config)."""
        return {k: getattr(self, k) for k in ("ax", "mx", "az", "mz", "rho", "n", "pairs")}

    @classmethod
    def from_dict(cls, d: dict) -> "Basis":
        return cls(**{k: np.asarray(d[k]) if k not in ("n", "pairs") else int(d[k]) for k in d})


def noise_edge(dx: int, dz: int, n: int) -> float:
    """The largest squared canonical correlation of independent Gaussian x, z with n rows, for
    large n (the upper edge of the Wachter distribution): (sqrt(gx (1-gz)) + sqrt(gz (1-gx)))^2
    with g = d / n."""
    gx, gz = min(dx / n, 1.0), min(dz / n, 1.0)
    return (math.sqrt(gx * (1 - gz)) + math.sqrt(gz * (1 - gx))) ** 2


def fit(x: np.ndarray, z: np.ndarray, ridge: float = RIDGE, margin: float = NOISE_MARGIN) -> Basis:
    """The CCA basis of row-aligned ``x`` (n, dx) and ``z`` (n, dz).

    Moments are accumulated in float64 over blocks of rows (memory O(d^2), whatever n). Both
    maps are square and invertible: the unmatched dimensions of the wider side are its remaining
    whitened directions.
    """
    n, dx = x.shape
    dz = z.shape[1]
    if n < 2:
        raise ValueError(f"the CCA basis needs at least 2 rows; got {n}")
    sx, sz = np.zeros(dx), np.zeros(dz)
    sxx, szz, sxz = np.zeros((dx, dx)), np.zeros((dz, dz)), np.zeros((dx, dz))
    for s in range(0, n, _BLOCK):
        xb = np.asarray(x[s:s + _BLOCK], np.float64)
        zb = np.asarray(z[s:s + _BLOCK], np.float64)
        sx += xb.sum(0)
        sz += zb.sum(0)
        sxx += xb.T @ xb
        szz += zb.T @ zb
        sxz += xb.T @ zb
    mx, mz = sx / n, sz / n
    cxx = (sxx - n * np.outer(mx, mx)) / (n - 1)
    czz = (szz - n * np.outer(mz, mz)) / (n - 1)
    cxz = (sxz - n * np.outer(mx, mz)) / (n - 1)
    wx, wz = _inv_sqrt(cxx, ridge), _inv_sqrt(czz, ridge)
    u, s, vt = np.linalg.svd(wx @ cxz @ wz, full_matrices=True)
    rho = np.clip(s, 0.0, 1.0)
    pairs = int(np.sum(rho ** 2 > margin * noise_edge(dx, dz, n)))
    return Basis(u.T @ wx, mx, vt @ wz, mz, rho, n, pairs)


def _inv_sqrt(c: np.ndarray, ridge: float) -> np.ndarray:
    d = c.shape[0]
    c = c + ridge * max(np.trace(c) / d, 1e-12) * np.eye(d)
    w, v = np.linalg.eigh(c)
    return (v / np.sqrt(np.maximum(w, 1e-300))) @ v.T


def fit_rows(n: int, seed: int) -> np.ndarray | None:
    """Positions of the rows to fit on: None (all) up to :data:`FIT_MAX_ROWS`, else a seeded sorted sample."""
    if n <= FIT_MAX_ROWS:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, FIT_MAX_ROWS, replace=False))

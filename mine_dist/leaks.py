"""Leaks and degenerate inputs, found on a sample of rows before training.

An estimate only means something when I(X;Z) is finite and the columns carry information. Three
cases make the number meaningless or misleading, and all are cheap to see on the driver's sample:

* a coordinate of x equal to a coordinate of z (a leaked feature: for continuous columns the true MI
  is infinite, and any finite estimate is an artefact of the critic and the sample size) — an error
  unless the user allows it; an almost-equal pair (|correlation| above :data:`NEAR_IDENTICAL`) is a
  warning;
* z a deterministic function of x on the sample (x rows repeat, and every repeated x row has a
  single z): then I(X;Z) = H(Z) for a discrete z, and infinite for a continuous one;
* constant columns, which carry no information.

Pure numpy; the callers pass raw (un-normalized) values and the column sets that name them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mine_dist.io import ColumnSet

NEAR_IDENTICAL = 0.999  # |Pearson r| between an x and a z coordinate that is flagged
MAX_SAMPLE = 20_000  # rows looked at
MAX_CORR_ROWS = 4096  # rows used for the x-z correlation matrix (d_x * d_z * rows flops)


@dataclass(frozen=True)
class Findings:
    identical: tuple[str, ...]  # "x[0] == z[1]"
    warnings: tuple[str, ...]


def coordinate_names(cs: ColumnSet) -> list[str]:
    """A name per encoded coordinate: ``emb[3]``, a scalar column's name, or ``label=cat``."""
    if cs.kind == "list":
        return [f"{cs.columns[0]}[{j}]" for j in range(cs.dim)]
    if cs.kind == "categorical":
        return [f"{cs.columns[0]}={v}" for v in cs.vocabulary]
    return list(cs.columns)


def inspect_sample(x: np.ndarray, z: np.ndarray, xs: ColumnSet, zs: ColumnSet) -> Findings:
    """Identical / near-identical x-z coordinates, z determined by x, constant columns.

    Args:
        x: (n, d_x) raw values (one-hot for a categorical side), n >= 2.
        z: (n, d_z) raw values.
        xs, zs: the column sets that produced them (for names in the messages).
    """
    x, z = np.asarray(x[:MAX_SAMPLE], np.float64), np.asarray(z[:MAX_SAMPLE], np.float64)
    xn, zn = coordinate_names(xs), coordinate_names(zs)
    identical, warnings = [], []
    # Exact copies: compare column fingerprints, then confirm.
    zkeys: dict[bytes, list[int]] = {}
    for j in range(z.shape[1]):
        zkeys.setdefault(np.ascontiguousarray(z[:, j]).tobytes(), []).append(j)
    for i in range(x.shape[1]):
        for j in zkeys.get(np.ascontiguousarray(x[:, i]).tobytes(), []):
            if np.std(x[:, i]) > 0:  # two equal constant columns are reported as constant instead
                identical.append(f"{xn[i]} == {zn[j]}")
    if not identical and xs.kind != "categorical" and zs.kind != "categorical":
        r = _abs_corr(x[:MAX_CORR_ROWS], z[:MAX_CORR_ROWS])
        if r is not None and r.size:
            i, j = np.unravel_index(int(np.nanargmax(r)), r.shape)
            if r[i, j] > NEAR_IDENTICAL:
                n_pairs = int((r > NEAR_IDENTICAL).sum())
                warnings.append(f"{xn[i]} and {zn[j]} are almost identical (|correlation| {r[i, j]:.5f}"
                                f"{f'; {n_pairs} such x-z pairs' if n_pairs > 1 else ''}): a leaked feature? "
                                f"MI is then very large and the estimate mostly reflects the sample size")
    if not identical and _determined(x, z):  # identical columns are reported by the caller
        what = "I(X;Z) = H(Z)" if zs.kind == "categorical" else "I(X;Z) is infinite for a continuous z"
        warnings.append(f"z is a deterministic function of x on a {len(x)}-row sample (every repeated x row has "
                        f"one z value): {what}")
    for side, a, names in (("x", x, xn), ("z", z, zn)):
        const = [names[j] for j in range(a.shape[1]) if np.all(a[:, j] == a[0, j])]
        if const and (side == "x" and xs.kind != "categorical" or side == "z" and zs.kind != "categorical"):
            shown = ", ".join(const[:5]) + (f" (+{len(const) - 5} more)" if len(const) > 5 else "")
            warnings.append(f"constant {side} column(s) on a {len(a)}-row sample: {shown}; they carry no information")
    return Findings(tuple(identical), tuple(warnings))


def identical_message(identical: tuple[str, ...]) -> str:
    """What identical x-z columns mean (the warning kept with ``--allow-identical``; the error adds how to go on)."""
    shown = ", ".join(identical[:5]) + (f" (+{len(identical) - 5} more)" if len(identical) > 5 else "")
    return (f"x and z share identical columns ({shown}): I(X;Z) is unbounded for continuous values (H(z) for "
            f"discrete ones), so no estimate is meaningful")


def _abs_corr(x: np.ndarray, z: np.ndarray) -> np.ndarray | None:
    if len(x) < 3:
        return None
    sx, sz = x.std(0), z.std(0)
    xs = (x - x.mean(0)) / np.where(sx > 0, sx, np.inf)
    zs = (z - z.mean(0)) / np.where(sz > 0, sz, np.inf)
    return np.abs(xs.T @ zs) / len(x)


def _determined(x: np.ndarray, z: np.ndarray) -> bool:
    """x rows repeat (at most half the rows are distinct) and each distinct x row has a single z."""
    _, inv_x = np.unique(x, axis=0, return_inverse=True)
    inv_x = inv_x.ravel()
    groups = int(inv_x.max()) + 1
    if groups > len(x) // 2:
        return False  # continuous x: every row is its own group, nothing can be concluded
    _, inv_z = np.unique(z, axis=0, return_inverse=True)
    pairs = np.unique(np.stack([inv_x, inv_z.ravel()], axis=1), axis=0)
    return len(pairs) == groups and len(np.unique(inv_z)) > 1


def check(x: np.ndarray, z: np.ndarray, xs: ColumnSet, zs: ColumnSet, allow_identical: bool) -> list[str]:
    """Run :func:`inspect_sample`; identical columns raise unless allowed. Returns the warnings.

    Raises:
        DataError: x and z share identical columns and ``allow_identical`` is False.
    """
    from mine_dist.io import DataError

    f = inspect_sample(x, z, xs, zs)
    if f.identical and not allow_identical:
        raise DataError(identical_message(f.identical) + "; drop them, or pass --allow-identical to estimate anyway")
    return ([identical_message(f.identical)] if f.identical else []) + list(f.warnings)

"""Rows/s of what a Ray Data read task does to one row group of wide x, z list columns: ``read_unit``
(Parquet -> arrays, split mask, NaN check) and ``Normalizer.apply`` on x and z, for ``standard``,
``rank-gauss`` (its grid lookup, :class:`mine_dist.normalize._Lookup`) and ``rank-gauss`` through the
per-column ``np.interp`` loop it replaced, side by side in one process on the same rows (values
checked equal). Prints a Markdown table.

    .venv/bin/python benchmarks/normalize_speed.py --dim 384 --rows 16384
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mine_dist import io, normalize, split
from mine_dist.distributed import data as D


def per_column_interp(nz: normalize.Normalizer, a: np.ndarray) -> np.ndarray:
    """The rank-gauss apply before the grid lookup: np.interp, then ndtri, one column at a time."""
    out = np.empty(a.shape, dtype=np.float32)
    a64 = np.asarray(a, dtype=np.float64)
    for j, (vals, levels) in enumerate(nz.knots):
        out[:, j] = torch.special.ndtri(torch.from_numpy(np.interp(a64[:, j], vals, levels))).numpy()
    return out


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--rows", type=int, default=16384, help="rows of the one row group")
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs per row")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.rows, a.dim)).astype(np.float32)
    z = (0.5 * x + rng.standard_normal((a.rows, a.dim))).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="mine-normspeed-") as d:
        t = pa.table({c: pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), a.dim) for c, v in (("x", x), ("z", z))})
        pq.write_table(t, os.path.join(d, "part-0.parquet"), row_group_size=a.rows)
        info = io.inspect(d, "x", "z", None)
        u = D.units(info)[0]
        t_read, (xa, za) = best_of(lambda: D.read_unit(u, info, split.TRAIN, 0.1, 0.2, False), a.repeats)
    n = xa.shape[0]
    rows = [("read_unit (Parquet -> float32 arrays, split mask, NaN check)", t_read)]
    ref = None
    for label, method, fn in (("apply x + z: standard", "standard", None),
                              ("apply x + z: rank-gauss, grid lookup (now)", "rank-gauss", None),
                              ("apply x + z: rank-gauss, np.interp per column (before)", "rank-gauss", per_column_interp)):
        nx, nz = normalize.fit(method, xa, "x"), normalize.fit(method, za, "z")
        run = (lambda: (nx.apply(xa), nz.apply(za))) if fn is None else (lambda: (fn(nx, xa), fn(nz, za)))
        dt, out = best_of(run, a.repeats)
        rows.append((label, dt))
        if method == "rank-gauss":
            if ref is not None:
                assert all(np.array_equal(o, r) for o, r in zip(out, ref)), "the lookup and np.interp differ"
            ref = out
    print(f"one row group: {a.rows:,} rows ({n:,} train rows) of {a.dim}-d x and z, float32 on disk; "
          f"torch threads 1; best of {a.repeats}; load average {os.getloadavg()[0]:.2f}\n")
    print("| step | seconds | train rows/s |\n|---|---:|---:|")
    for label, dt in rows:
        print(f"| {label} | {dt:.3f} | {n / dt:,.0f} |")
    print("\n(the two rank-gauss rows give equal values, checked)")


if __name__ == "__main__":
    main()

"""Peak memory of ``Normalizer.apply`` (blocked, float32 result) vs the whole-array float64 way it
used to compute (``np.asarray(a, float64)``, the transform, ``.astype(float32)``), on the same
rows, measured with ``tracemalloc`` (numpy's allocations are traced). Prints a Markdown table.

    .venv/bin/python benchmarks/normalize_memory.py --rows 200000 --dim 256
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import torch

from mine_dist import normalize


def whole_array(nz: normalize.Normalizer, a: np.ndarray) -> np.ndarray:
    """The pre-blocking computation: every intermediate as a float64 copy of the whole input."""
    return nz._apply64(np.asarray(a, dtype=np.float64)).astype(np.float32)


def peak(fn, *args) -> tuple[float, float, np.ndarray]:
    tracemalloc.start()
    t = time.perf_counter()
    out = fn(*args)
    dt = time.perf_counter() - t
    _, p = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return p / 2**20, dt, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=256)
    args = p.parse_args()
    torch.set_num_threads(1)
    a = np.random.default_rng(0).normal(size=(args.rows, args.dim)).astype(np.float32)
    print(f"{args.rows:,} x {args.dim} float32 rows ({a.nbytes / 2**20:.0f} MiB; the float32 result is as large)\n")
    print("| method | whole-array float64 peak MiB | blocked peak MiB | s (whole, blocked) | same values |")
    print("|---|---:|---:|---|---|")
    for method in ("standard", "rank-gauss"):
        nz = normalize.fit(method, a[:20_000])
        p0, t0, ref = peak(whole_array, nz, a)
        p1, t1, out = peak(nz.apply, a)
        print(f"| {method} | {p0:,.0f} | {p1:,.0f} | {t0:.1f}, {t1:.1f} | {np.array_equal(ref, out)} |")


if __name__ == "__main__":
    main()

"""Count Parquet footer parses of one run's driver-side and per-task reads (on S3 each is a round trip).

    .venv/bin/python benchmarks/footer_reads.py [--files 8] [--row-groups 4]

Counts every ``pyarrow.parquet.ParquetFile`` opened without a pre-parsed footer (``metadata=None``)
while running, in this process and without Ray, what a run does: the driver's validation
(``io.inspect``), the in-process read (``io.read_arrays``), and the Ray path's pieces: the scan's
per-row-group task body, one epoch of per-row-group reads, and the driver's test-split read. Prints
a table: phase, footers parsed, and per file (F) / per row group (G).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--row-groups", type=int, default=4)
    args = ap.parse_args()

    from mine_dist import io, normalize, split, synthetic
    from mine_dist.distributed import data as D

    count = [0]
    orig = pq.ParquetFile.__init__

    def counting(self, source, *a, metadata=None, **k):
        if metadata is None:
            count[0] += 1
        return orig(self, source, *a, metadata=metadata, **k)

    pq.ParquetFile.__init__ = counting
    rows_per_file = 2000 * args.row_groups
    with tempfile.TemporaryDirectory() as d:
        spec = synthetic.Spec(kind="gaussian", dim=2, rho=0.6)
        synthetic.write_dataset(spec, rows_per_file * args.files, args.files, d, row_group_size=2000)
        fr = (0.1, 0.1)
        phases = []

        def phase(name, fn):
            before = count[0]
            out = fn()
            phases.append((name, count[0] - before))
            return out

        info = phase("io.inspect (driver validation)", lambda: io.inspect(d, "x", "z"))
        phase("io.read_arrays (in-process read)", lambda: io.read_arrays(info))
        us = phase("units (Ray path work units)", lambda: D.units(info))
        phase("scan: one task body per row group", lambda: [D._scan_unit(u, info, fr, False, 10, 10, 0) for u in us])
        phase("one epoch of train reads (per row group)",
              lambda: [D.read_unit(u, info, split.TRAIN, *fr, False) for u in us])
        nx = normalize.fit("standard", io.read_arrays(info)[0], "x")  # not counted: not a phase of a run
        phase("test split on the driver (collect_split)",
              lambda: D.collect_split(info, split.TEST, *fr, False, nx, nx, 10**9))
    pq.ParquetFile.__init__ = orig
    F, G = args.files, args.files * args.row_groups
    print(f"| phase | footers parsed (F = {F} files, G = {G} row groups) |")
    print("|---|---|")
    for name, n in phases:
        print(f"| {name} | {n} |")
    print(f"| **total** | **{sum(n for _, n in phases)}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time and peak memory of the Ray path vs rows streamed (claim: time linear, memory flat).

For each size (default 1e5, 1e6, 1e7 rows of a Gaussian dim-16 dataset written under /tmp with
``mine_dist.synthetic.write_dataset`` and deleted afterwards) this runs
``mine-dist estimate --workers 1`` (``cli.run_estimate`` -> ``EstimateJob.run`` -> ``fit_on_ray``) with
``--steps`` = one pass over the train split (``--passes`` passes; train rows ~70%, so
``steps = passes * 0.7 * rows * 0.995 // batch``), ``--patience 0`` and the library's defaults
otherwise (validation every 200 steps on 10k rows, test split capped at 500k rows, 1000-resample
bootstrap). The critic is narrower than the library default (``--width 64``) so that 1e7 rows fit
the time budget; the claim is about streaming, not the critic.

Measured per size, in one process (so each size sees the same warm private Ray):

* time of each phase: driver scan (before ``fit()``), ``fit()`` (start-up to the first step,
  the steps, teardown), after ``fit()`` (test split read on the driver, scoring, bootstrap, run
  files); the steady-state training rate comes from timers in the worker (see
  ``benchmarks/ray_train_throughput.py``);
* peak memory: PSS summed over this process and every descendant (the private Ray's GCS, raylet,
  dashboard, train worker, Ray Data workers, read from ``/proc/<pid>/smaps_rollup`` every 0.25 s
  by a background thread every 1 s), the largest single process's PSS, and this driver's RSS (sampled, and
  its exact high-water mark ``VmHWM``, reset before each size via ``/proc/self/clear_refs``). The
  idle tree before each size is reported too; the growth over it is what the run added.

From the third size on, each size's time is projected from the largest size measured before it
(generation and training steps scaled with rows, test scoring with the capped test rows, the rest
fixed); a size projected above ``--max-size-s`` is replaced by the
largest of ``--fallback`` that fits, and the output says so.

    .venv/bin/python benchmarks/scaling_rows.py                          # ~10 min
    .venv/bin/python benchmarks/scaling_rows.py --rows 100000 300000 --width 256
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ray_train_throughput import (
    TreeSampler,
    header,
    make_dataset,
    run_ray_estimate,
    start_ray,
    worker_breakdown,
)

GB = 1024**3


def reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def project(done: list[dict], rows: int, max_test_rows: int = 500_000) -> float | None:
    """Seconds for generation + run at ``rows``, from the largest size measured: its generation
    and training steps scale with rows, its test scoring with the test rows (20%, capped at
    ``--max-test-rows``), and the rest (scan, start-up, teardown) is taken as fixed."""
    if len(done) < 2:  # the smallest size is all start-up: measure one more before projecting
        return None
    d = max(done, key=lambda r: r["rows"])
    k = rows / d["rows"]
    fixed = d["total_s"] - d["train_s"] - d["after_s"]
    after = d["after_s"] * min(0.2 * rows, max_test_rows) / max(d["n_test"], 1)
    return float(fixed + (d["train_s"] + d["gen_s"]) * k + after)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    p.add_argument("--fallback", type=float, nargs="+", default=[5e6, 3e6, 2e6],
                   help="sizes to try instead of one projected above --max-size-s")
    p.add_argument("--max-size-s", type=float, default=360.0, help="projected seconds allowed for one size")
    p.add_argument("--passes", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--rows-per-shard", type=int, default=500_000)
    p.add_argument("--interval", type=float, default=1.0,
                   help="memory sampling period (s); one sample of ~30 processes costs ~0.07 CPU-s here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    sizes = [int(r) for r in a.rows]

    header("Ray path: time and peak memory vs rows streamed",
           [(f"data: gaussian dim 16 rho 0.5, {a.rows_per_shard:,} rows per Parquet shard (row groups of 65,536) "
             f"under /tmp, deleted after each size; `mine-dist estimate --workers 1 --patience 0 --width {a.width} "
             f"--depth {a.depth} --batch-size {a.batch_size} --eval-every {a.eval_every}` with steps = "
             f"{a.passes:g} pass(es) over the train split; library defaults otherwise")])

    t_ray = start_ray()
    reset_ok = reset_hwm()
    notes = []
    done: list[dict] = []
    t_all = time.monotonic()
    for rows in sizes:
        proj = project(done, rows)
        if proj is not None and proj > a.max_size_s:
            biggest = max(d["rows"] for d in done)
            alt = next((int(f) for f in sorted(a.fallback, reverse=True)
                        if biggest < f < rows and project(done, int(f)) <= a.max_size_s), None)
            notes.append(f"{rows:.0e} rows projected at {proj:.0f} s (generation + run, scaled from the largest "
                         f"size measured) > {a.max_size_s:.0f} s; "
                         + (f"measured {alt:.0e} rows instead (projected {project(done, alt):.0f} s)"
                            if alt else "skipped"))
            print(notes[-1], file=sys.stderr, flush=True)
            if alt is None:
                continue
            rows = alt
        shards = max(1, math.ceil(rows / a.rows_per_shard))
        data_dir, gen_s = make_dataset(rows, shards)
        out_dir = tempfile.mkdtemp(prefix="mine_bench_runs_", dir="/tmp")
        steps = max(1, int(a.passes * 0.7 * rows * 0.995) // a.batch_size)
        try:
            with TreeSampler(interval=a.interval) as s:
                time.sleep(2.0)  # idle baseline of the tree (previous sizes' Ray workers may linger)
                t_idle = time.monotonic()
                reset_hwm()
                res = run_ray_estimate(data_dir, out_dir, [
                    "--steps", str(steps), "--patience", "0", "--batch-size", str(a.batch_size),
                    "--width", str(a.width), "--depth", str(a.depth), "--eval-every", str(a.eval_every),
                    # Streaming, the path for data larger than the object store (small splits are
                    # otherwise read once into the object store: --materialize auto).
                    "--materialize", "never"])
                drv_hwm = hwm()
                time.sleep(0.5)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
            shutil.rmtree(out_dir, ignore_errors=True)
        d, rec = res["driver"], res["record"]
        br = worker_breakdown(res["worker"], d, a.batch_size)
        idle = s.peak(-np.inf, t_idle)
        phases = {"scan": s.peak(d["start"], d["fit0"]), "fit": s.peak(d["fit0"], d["fit1"]),
                  "after": s.peak(d["fit1"], d["end"]), "all": s.peak(d["start"], d["end"])}
        r = {"rows": rows, "shards": shards, "gen_s": gen_s, "steps": br["n_steps"], "n_train": rec["n_train"],
             "epochs": br["n_epochs"], "scan_s": d["fit0"] - d["start"], "fit_s": d["fit1"] - d["fit0"],
             "startup_s": br["fit_to_first_step_s"], "teardown_s": br["last_step_to_fit_return_s"],
             "train_s": br["fit_wall_s"] - br["fit_to_first_step_s"] - br["last_step_to_fit_return_s"],
             "steady": br.get("steady_rate"), "after_s": d["end"] - d["fit1"], "total_s": d["end"] - d["start"],
             "idle": idle, "phases": phases, "drv_hwm": drv_hwm, "n_test": rec["n_test"],
             "groups": {"idle": s.peak_by_group(-np.inf, t_idle), "scan": s.peak_by_group(d["start"], d["fit0"]),
                        "fit": s.peak_by_group(d["fit0"], d["fit1"]), "after": s.peak_by_group(d["fit1"], d["end"])}}
        if br["n_steps"] < steps:  # the worker was restarted from a checkpoint (Ray Train FailureConfig)
            notes.append(f"{rows:.0e} rows: the Train worker ran only the last {br['n_steps']:,} of {steps:,} steps: it "
                         f"was restarted from a checkpoint after a worker failure, so this size's fit time includes "
                         f"the lost attempt and its start-up / steps columns describe the restarted worker only")
            print(notes[-1], file=sys.stderr, flush=True)
        done.append(r)
        print(f"done {rows:.0e}: total {r['total_s']:.0f} s, gen {gen_s:.0f} s, peak PSS "
              f"{phases['all'].get('pss', 0) / GB:.2f} GB", file=sys.stderr, flush=True)

    print("### Time per phase (s)\n")
    print("| rows | train rows | shards | steps | epochs | generate | CLI start -> fit (inspect + scan) | fit | "
          "... start-up to 1st step | ... steps | ... teardown | steady samples/s | after fit (test rows) | "
          "run total |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in done:
        print(f"| {r['rows']:,} | {r['n_train']:,} | {r['shards']} | {r['steps']:,} | {r['epochs']} | {r['gen_s']:.1f} | "
              f"{r['scan_s']:.1f} | {r['fit_s']:.1f} | {r['startup_s']:.1f} | {r['train_s']:.1f} | "
              f"{r['teardown_s']:.1f} | {r['steady'] or float('nan'):,.0f} | {r['after_s']:.1f} ({r['n_test']:,}) | "
              f"{r['total_s']:.1f} |")
    print()
    if len(done) >= 2:
        xs = np.array([r["rows"] for r in done], float)
        for key, label in (("scan_s", "scan"), ("train_s", "training steps"), ("total_s", "run total")):
            ys = np.array([r[key] for r in done])
            slope, icpt = np.polyfit(xs, ys, 1)
            print(f"- {label}: linear fit {icpt:.1f} s + {slope * 1e6:.2f} s per 1M rows; per 1M rows at each size: "
                  + ", ".join(f"{y / x * 1e6:.1f}" for x, y in zip(xs, ys)) + "  ")
        print()

    print("### Peak memory (GiB)\n")
    print("| rows | idle tree PSS before | tree PSS peak: scan | fit | after fit | tree PSS growth over idle | "
          "tree RSS peak (double-counts shared) | largest process PSS | processes | driver RSS: idle before / peak "
          "in scan / fit / after | driver VmHWM |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in done:
        ph, idle = r["phases"], r["idle"]
        g = lambda k, key="pss", ph=ph: ph[k].get(key, float("nan")) / GB
        print(f"| {r['rows']:,} | {idle.get('pss', float('nan')) / GB:.2f} | {g('scan'):.2f} | {g('fit'):.2f} | "
              f"{g('after'):.2f} | {(ph['all'].get('pss', 0) - idle.get('pss', 0)) / GB:+.2f} | {g('all', 'rss'):.2f} | "
              f"{g('all', 'max_proc_pss'):.2f} | {ph['all'].get('nproc', 0)} | "
              f"{idle.get('driver_rss', float('nan')) / GB:.2f} / "
              f"{g('scan', 'driver_rss'):.2f} / {g('fit', 'driver_rss'):.2f} / {g('after', 'driver_rss'):.2f} | "
              f"{r['drv_hwm'] / GB if reset_ok else float('nan'):.2f} |")
    print()
    print("### Peak PSS by process group (GiB): idle before the size -> peak during scan / fit / after fit\n")
    groups = [gname for gname in TreeSampler.GROUPS if any(gname in r["groups"]["fit"] for r in done)]
    print("| rows | " + " | ".join(groups) + " |")
    print("|---:|" + "---|" * len(groups))
    for r in done:
        gg = r["groups"]
        cells = [f"{gg['idle'].get(k, 0) / GB:.2f} -> {gg['scan'].get(k, 0) / GB:.2f} / {gg['fit'].get(k, 0) / GB:.2f} / "
                 f"{gg['after'].get(k, 0) / GB:.2f}" for k in groups]
        print(f"| {r['rows']:,} | " + " | ".join(cells) + " |")
    print()
    print("### Private heap vs shared memory during fit (GiB): peak RssAnon / peak RssShmem summed over the group\n")
    print("RssShmem is mostly Ray object store pages (/dev/shm) the processes touched; RssAnon is their own heap.\n")
    print("| rows | " + " | ".join(groups) + " |")
    print("|---:|" + "---|" * len(groups))
    for r in done:
        f = r["groups"]["fit"]
        print(f"| {r['rows']:,} | " + " | ".join(f"{f.get(k + ' anon', 0) / GB:.2f} / {f.get(k + ' shmem', 0) / GB:.2f}"
                                             for k in groups) + " |")
    print()
    for n in notes:
        print(f"- note: {n}  ")
    print(f"- memory sampled every {a.interval} s ({sum(r['phases']['all'].get('n_samples', 0) for r in done)} "
          f"samples during runs); PSS splits shared pages (object store in /dev/shm, shared libraries) among the "
          f"processes mapping them, so the tree sum counts them once. driver VmHWM is exact (reset per size: "
          f"{'yes' if reset_ok else 'no, not permitted'}).  ")
    print(f"- `ray.init` {t_ray:.1f} s, not included. Whole script {time.monotonic() - t_all:.0f} s after `ray.init`. "
          f"Load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}.")


if __name__ == "__main__":
    main()

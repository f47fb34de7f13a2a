"""Cost of a training step vs the input dimension d (d_x = d_z = d), in-process and on Ray Train.

MINE's claim (Belghazi et al. 2018, Sec. 3.3-3.4) is a cost linear in dimension and sample size.
This measures, for the joint critic (MLP on concat(x, z)) and the separable critic (f(x) . g(z)),
``EstimatorConfig`` defaults otherwise (width 256, depth 2, embed_dim 32, batch 512, bound mine):

* **in-process**: ``mine_dist.estimator.Trainer(cfg, d, d, cpu).step`` (the same ``train_step``
  ``MINE.estimate`` and the Ray worker run) on pre-made random batches, torch threads 1 (as a Ray
  Train worker has); each (critic, d) cell is timed ``--rounds`` times, cells interleaved, and the
  median is reported (steps per timed run chosen so a run takes ~``--target-s`` CPU seconds), as
  thread CPU time per step (what the step costs, and much less sensitive to other load on a
  shared machine than wall time) and as wall time;
* **Ray Train, 1 worker**: ``mine-dist estimate --workers 1`` on a Gaussian dataset of that d
  (``run_ray_estimate`` of ``benchmarks/ray_train_throughput.py``: the library's own path, with
  timers installed around ``Trainer.step``, batch fetches, validation and reports in the worker);
  reported: the median ``Trainer.step`` thread CPU (and wall) inside the worker, and the steady-state ms per step
  (steps + batch fetches + validation every ``--eval-every`` steps + checkpointed reports, from
  the first to the last non-final report).

What "linear" is tested against: the step's arithmetic is a + b*d (the first layer costs
O(B * d * width), the rest does not depend on d), so two fits are printed per column: the slope of
log(time) vs log(d) over d >= ``--tail-from`` (1 when the d-term dominates; the fixed part pulls it
below 1 at small d), and a least-squares fit time = a + b*d over every d with its largest
relative residual (small when the cost is linear in d).

    .venv/bin/python benchmarks/scaling_dim.py --quick     # 6 dims in-process, 2 on Ray: ~16 min at load 20 (Ray start-up)
    .venv/bin/python benchmarks/scaling_dim.py             # 10 dims in-process, 4 on Ray (8 Ray runs)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def time_steps(trainer, batches, steps: int) -> tuple[float, float]:
    """(wall, thread CPU) seconds per step over ``steps`` steps."""
    t0, c0 = time.perf_counter(), time.thread_time()
    for i in range(steps):
        trainer.step(*batches[i % len(batches)])
    return (time.perf_counter() - t0) / steps, (time.thread_time() - c0) / steps


def fits(ds: list[int], ts: list[float], tail_from: int) -> dict:
    """Log-log slope over d >= tail_from (and over all d), and the linear fit t = a + b d."""
    d, t = np.asarray(ds, float), np.asarray(ts, float)
    tail = d >= tail_from
    out = {"slope_all": float(np.polyfit(np.log(d), np.log(t), 1)[0])}
    out["slope_tail"] = float(np.polyfit(np.log(d[tail]), np.log(t[tail]), 1)[0]) if tail.sum() >= 2 else float("nan")
    A = np.stack([np.ones_like(d), d], 1)
    (a, b), *_ = np.linalg.lstsq(A, t, rcond=None)
    out.update(a=float(a), b=float(b), max_rel_resid=float(np.max(np.abs(A @ [a, b] - t) / t)))
    return out


def fit_line(f: dict, unit: float = 1e3) -> str:
    return (f"log-log slope {f['slope_tail']:.2f} (d >= tail), {f['slope_all']:.2f} (all d); "
            f"t = {f['a'] * unit:.2f} ms + {f['b'] * unit * 1e3:.2f} us x d, largest residual "
            f"{100 * f['max_rel_resid']:.0f}%")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])
    p.add_argument("--ray-dims", type=int, nargs="+", default=[2, 64, 256, 1024], help="dims also run on Ray Train")
    p.add_argument("--critics", nargs="+", default=["joint", "separable"], choices=["joint", "separable"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--target-s", type=float, default=1.0, help="seconds per timed in-process run")
    p.add_argument("--tail-from", type=int, default=128)
    p.add_argument("--ray-rows", type=int, default=60_000, help="rows of each Ray dataset (70%% train)")
    p.add_argument("--ray-steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--quick", action="store_true", help="dims 2, 8, 32, 128, 512, 1024; Ray at 2 and 1024")
    a = p.parse_args(argv)
    if a.quick:
        a.dims, a.ray_dims, a.rounds, a.target_s, a.ray_steps = [2, 8, 32, 128, 512, 1024], [2, 1024], 2, 0.5, 300
    torch.set_num_threads(1)
    sys.path.insert(0, HERE)
    from ray_train_throughput import header

    from mine_dist.critics import CriticConfig
    from mine_dist.estimator import EstimatorConfig, Trainer

    # bound "mine": the default for a continuous z (what `bound: auto` resolves to here)
    cfgs = {k: EstimatorConfig(bound="mine", critic=CriticConfig(kind=k)) for k in a.critics}
    B = cfgs[a.critics[0]].batch_size
    header("Training step cost vs dimension (d_x = d_z = d)",
           [f"critics: {', '.join(f'{k} {c.critic}' for k, c in cfgs.items())}; batch {B}, bound mine; "
            f"torch.set_num_threads(1); in-process: median of {a.rounds} interleaved rounds of ~{a.target_s:g} s"])

    # ---- in-process
    cells = {}
    for k, cfg in cfgs.items():
        for d in a.dims:
            g = torch.Generator().manual_seed(d)
            batches = [(torch.randn(B, d, generator=g), torch.randn(B, d, generator=g)) for _ in range(4)]
            tr = Trainer(cfg, d, d, torch.device("cpu"))
            time_steps(tr, batches, 5)  # warm-up
            per = time_steps(tr, batches, 5)[1]  # sizes the timed runs
            cells[k, d] = {"trainer": tr, "batches": batches, "steps": max(5, int(a.target_s / per)), "times": [],
                           "params": sum(q.numel() for q in tr.critic.parameters())}
    for _ in range(a.rounds):
        for c in cells.values():
            c["times"].append(time_steps(c["trainer"], c["batches"], c["steps"]))
    for c in cells.values():
        c["t"] = statistics.median(w for w, _ in c["times"])
        c["cpu"] = statistics.median(u for _, u in c["times"])
        del c["trainer"], c["batches"]
    print("done: in-process", file=sys.stderr, flush=True)

    # ---- Ray Train
    ray_cells = {}
    if not a.no_ray:
        from ray_train_throughput import make_dataset, run_ray_estimate, start_ray, worker_breakdown

        start_ray()
        for d in a.ray_dims:
            data_dir, _ = make_dataset(a.ray_rows, 4, dim=d)
            try:
                for k in a.critics:
                    out_dir = tempfile.mkdtemp(prefix="mine_scaling_dim_", dir="/tmp")
                    try:
                        args = ["--steps", str(a.ray_steps), "--eval-every", str(a.eval_every), "--patience", "0",
                                "--critic", k, "--bootstrap", "100", "--max-test-rows", "20000"]
                        res = run_ray_estimate(data_dir, out_dir, args)
                        br = worker_breakdown(res["worker"], res["driver"], B)
                        ray_cells[k, d] = {"step_ms": br["step_wall_ms"], "step_cpu_ms": br["step_cpu_ms"],
                                           "steady_ms": 1e3 * br["window_s"] / br["window_steps"]
                                           if "window_s" in br else float("nan"),
                                           "fit_s": br["fit_wall_s"], "start_s": br["fit_to_first_step_s"],
                                           "materialized": res["record"].get("train_split_materialized")}
                        print(f"done: ray {k} d={d}: {ray_cells[k, d]}", file=sys.stderr, flush=True)
                    finally:
                        shutil.rmtree(out_dir, ignore_errors=True)
            finally:
                shutil.rmtree(data_dir, ignore_errors=True)

    # ---- table
    print("| critic | d | params | in-process ms/step: CPU (wall) | in-process samples/s (wall) | Ray worker "
          "`Trainer.step` ms: CPU (wall) | Ray steady ms/step (incl. fetch, validation, reports) | Ray samples/s "
          "(steady) | Ray fit() s (start-up s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in a.critics:
        for d in a.dims:
            c = cells[k, d]
            r = ray_cells.get((k, d))
            ray = (f"{r['step_cpu_ms']:.2f} ({r['step_ms']:.2f}) | {r['steady_ms']:.2f} | {1e3 * B / r['steady_ms']:,.0f} | "
                   f"{r['fit_s']:.1f} ({r['start_s']:.1f})" if r else " | | | ")
            print(f"| {k} | {d} | {c['params']:,} | {1e3 * c['cpu']:.2f} ({1e3 * c['t']:.2f}) | {B / c['t']:,.0f} | {ray} |")
    print()
    for k in a.critics:
        for key, name in (("cpu", "CPU"), ("t", "wall")):
            f = fits(a.dims, [cells[k, d][key] for d in a.dims], a.tail_from)
            print(f"- {k}, in-process, {name} per step: {fit_line(f)}.")
        rd = [d for d in a.ray_dims if (k, d) in ray_cells]
        if len(rd) >= 2:
            for key, name in (("step_cpu_ms", "Ray worker Trainer.step CPU"), ("steady_ms", "Ray steady state wall")):
                f = fits(rd, [ray_cells[k, d][key] / 1e3 for d in rd], a.tail_from)
                print(f"- {k}, {name} (d = {', '.join(map(str, rd))}): {fit_line(f)}.")
    print(f"\n(d >= tail: d >= {a.tail_from}.) Ray runs: `mine-dist estimate --workers 1 --steps {a.ray_steps} "
          f"--eval-every {a.eval_every} --patience 0 --critic K` on {a.ray_rows:,} Gaussian rows (rho 0.5) per d; "
          f"train split materialized in the object store: "
          f"{sorted({str(r['materialized']) for r in ray_cells.values()}) or 'n/a'}. Load average at end: "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}.")


if __name__ == "__main__":
    main()

"""Coverage of the true MI by the interval, one critic vs replicates (issue 11).

For each ground-truth task and data seed, ``MINE(EstimatorConfig(replicates=K))`` at the default
flags except ``--steps`` (and fewer bootstrap resamples); replicate 0 of that run is exactly the
single-critic run (seed + 0, split_seed + 0, the base scoring seed), so both are read from one fit.
Printed per task: truth, the single critic's and the K-replicate mean's estimate, how often each
two-sided interval covers the truth, how often each one-sided lower limit is below it, and the
mean interval widths; then the totals and the time per fit.

    .venv/bin/python benchmarks/replicate_coverage.py                     # 6 tasks x 3 seeds, K = 3
    .venv/bin/python benchmarks/replicate_coverage.py --seeds 5 --replicates 5 --rows 8000 --steps 1500
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

TASKS = [
    ("gauss-1x1", "gaussian", {"dim": 1, "rho": 0.6}),
    ("dense-5x5", "mapped", {"dim_x": 5, "dim_z": 5, "structure": "dense", "rho": 0.5}),
    ("gauss-5x5-r0.8", "gaussian", {"dim": 5, "rho": 0.8}),
    ("student-2x2-df1", "student", {"dim_x": 2, "dim_z": 2, "df": 1.0, "rho": 0.5}),
    ("normcdf-3x3", "mapped", {"dim_x": 3, "dim_z": 3, "rho": 0.7, "maps": "normcdf"}),
    ("halfcube-5x5", "mapped", {"dim_x": 5, "dim_z": 5, "rho": 0.6, "maps": "halfcube"}),
]


def one(args) -> dict:
    name, kind, params, seed, rows, steps, k = args
    import numpy as np
    import torch

    from mine_dist.estimator import MINE, EstimatorConfig
    from mine_dist.synthetic import make_spec

    torch.set_num_threads(1)
    spec = make_spec(kind, **params)
    truth = spec.truth()["mi_nats"]
    x, z = spec.sample(rows, np.random.default_rng(1000 + seed))
    t0 = time.perf_counter()
    est = MINE(EstimatorConfig(steps=steps, bootstrap=400, replicates=k, seed=seed)).estimate(x, z)
    wall = time.perf_counter() - t0
    r0 = est.replicates[0]
    return {"task": name, "seed": seed, "truth": truth, "k": k, "wall_s": wall,
            "single": r0["bound_nats"], "single_ci": r0["bound_ci95_nats"],
            "mean": est.bound_nats, "mean_ci": list(est.bound_ci95_nats), "mean_lower": est.bound_lower95_nats,
            "values": [r["bound_nats"] for r in est.replicates]}


def report(rows: list[dict]) -> None:
    k = rows[0]["k"]
    print(f"| task | truth | single est | {k}-rep est | single covers | {k}-rep covers | single width | {k}-rep width |")
    print("|---|---|---|---|---|---|---|---|")
    by = {}
    for r in rows:
        by.setdefault(r["task"], []).append(r)
    tot = {"s": 0, "m": 0, "ml": 0, "n": 0}
    for task, rs in by.items():
        t = rs[0]["truth"]
        sc = sum(r["single_ci"][0] <= t <= r["single_ci"][1] for r in rs)
        mc = sum(r["mean_ci"][0] <= t <= r["mean_ci"][1] for r in rs)
        tot["s"] += sc
        tot["m"] += mc
        tot["ml"] += sum(r["mean_lower"] <= t for r in rs)
        tot["n"] += len(rs)
        print(f"| {task} | {t:.3f} | {statistics.mean(r['single'] for r in rs):.3f} | "
              f"{statistics.mean(r['mean'] for r in rs):.3f} | {sc}/{len(rs)} | {mc}/{len(rs)} | "
              f"{statistics.mean(r['single_ci'][1] - r['single_ci'][0] for r in rs):.3f} | "
              f"{statistics.mean(r['mean_ci'][1] - r['mean_ci'][0] for r in rs):.3f} |")
    n = tot["n"]
    print(f"\ntwo-sided 95% interval covers the truth: single critic {tot['s']}/{n}, mean of {k} replicates "
          f"{tot['m']}/{n}; one-sided lower95 of the mean below the truth: {tot['ml']}/{n}")
    print(f"median time per fit of {k} replicates: {statistics.median(r['wall_s'] for r in rows):.1f} s "
          f"(one critic: about 1/{k} of it)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--replicates", type=int, default=3)
    p.add_argument("--rows", type=int, default=8000)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--jsonl", default=None)
    p.add_argument("--report", default=None, metavar="JSONL")
    a = p.parse_args(argv)
    if a.report:
        with open(a.report) as f:
            return report([json.loads(line) for line in f if line.strip()])
    jobs = [(n, k, pr, s, a.rows, a.steps, a.replicates) for n, k, pr in TASKS for s in range(a.seeds)]
    rows = []
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(a.parallel) as pool:
        for r in pool.map(one, jobs):
            rows.append(r)
            print(f"{r['task']} seed {r['seed']}: truth {r['truth']:.3f} single {r['single']:.3f} "
                  f"mean {r['mean']:.3f} {r['mean_ci']} ({r['wall_s']:.0f} s)", file=sys.stderr, flush=True)
            if a.jsonl:
                with open(a.jsonl, "a") as f:
                    f.write(json.dumps(r) + "\n")
    print(f"\n{len(TASKS)} tasks x {a.seeds} data seeds, {a.rows} rows, {a.steps} steps, K = {a.replicates}\n")
    report(rows)


if __name__ == "__main__":
    main()

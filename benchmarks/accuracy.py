"""Estimate vs ground truth over a grid of (dim, rho), sample sizes, bounds and seeds.

Prints a Markdown table (one row per case, mean and spread over seeds) and optionally writes
every run as JSON lines. Runs in-process (``--workers 0`` path), one torch thread.

    .venv/bin/python benchmarks/accuracy.py                       # default grid
    .venv/bin/python benchmarks/accuracy.py --dims 20 --rhos 0.6 --bounds mine smile --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np
import torch

from mine_dist import MINE, CriticConfig, EstimatorConfig
from mine_dist.synthetic import Spec


def run_case(dim, rho, n, bound, seed, steps, batch, lr, transform="none", normalize="standard"):
    spec = Spec(kind="gaussian", dim=dim, rho=rho, transform=transform)
    x, z = spec.sample(n, np.random.default_rng(seed))
    critic = CriticConfig(kind="separable") if bound == "infonce" else CriticConfig()
    cfg = EstimatorConfig(bound=bound, steps=steps, batch_size=batch, lr=lr, seed=seed, critic=critic,
                          normalize=normalize)
    t0 = time.perf_counter()
    est = MINE(cfg).estimate(x, z)
    return {"dim": dim, "rho": rho, "n": n, "bound": bound, "seed": seed, "transform": transform,
            "normalize": normalize, "truth": spec.truth()["mi_nats"], "est": est.mi_nats,
            "lo": est.ci95_nats[0], "hi": est.ci95_nats[1], "cap": est.cap_nats, "steps": est.steps,
            "wall_s": time.perf_counter() - t0}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[1, 5, 20])
    p.add_argument("--rhos", type=float, nargs="+", default=[0.3, 0.6, 0.9])
    p.add_argument("--ns", type=int, nargs="+", default=[10000, 50000])
    p.add_argument("--bounds", nargs="+", default=["mine", "mine-f", "smile", "infonce"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--transform", default="none")
    p.add_argument("--normalize", default="standard")
    p.add_argument("--max-mi", type=float, default=6.0, help="skip cases whose truth exceeds this (nats)")
    p.add_argument("--jsonl", default=None, help="append every run here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    out = open(a.jsonl, "a") if a.jsonl else None
    for dim in a.dims:
        for rho in a.rhos:
            truth = -0.5 * dim * math.log1p(-rho * rho)
            if truth > a.max_mi:
                print(f"skip d={dim} rho={rho}: truth {truth:.2f} > --max-mi", file=sys.stderr)
                continue
            for n in a.ns:
                for bound in a.bounds:
                    runs = []
                    for seed in a.seeds:
                        r = run_case(dim, rho, n, bound, seed, a.steps, a.batch_size, a.lr, a.transform, a.normalize)
                        runs.append(r)
                        if out:
                            out.write(json.dumps(r) + "\n")
                            out.flush()
                        print(f"d={dim} rho={rho} n={n} {bound} seed={seed}: {r['est']:.3f} "
                              f"(truth {r['truth']:.3f}) {r['wall_s']:.1f}s", file=sys.stderr, flush=True)
                    rows.append(runs)
    print(f"\n| d | rho | n | bound | truth | estimate (mean over {len(a.seeds)} seed(s)) | sd | error | "
          "mean 95% CI width | CI covers truth | cap | s/run |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for runs in rows:
        r0 = runs[0]
        ests = [r["est"] for r in runs]
        sd = statistics.stdev(ests) if len(ests) > 1 else float("nan")
        cover = sum(r["lo"] <= r["truth"] <= r["hi"] for r in runs)
        width = statistics.mean(r["hi"] - r["lo"] for r in runs)
        cap = f"{r0['cap']:.2f}" if r0["cap"] else "-"
        print(f"| {r0['dim']} | {r0['rho']} | {r0['n']} | {r0['bound']} | {r0['truth']:.3f} | "
              f"{statistics.mean(ests):.3f} | {sd:.3f} | {statistics.mean(ests) - r0['truth']:+.3f} | "
              f"{width:.3f} | {cover}/{len(runs)} | {cap} | {statistics.mean(r['wall_s'] for r in runs):.1f} |")


if __name__ == "__main__":
    main()

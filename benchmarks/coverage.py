"""Coverage of the held-out interval with a fixed critic whose population bound is known exactly.

For a d-dimensional Gaussian pair with per-coordinate correlation rho, the optimal critic
T*(x, z) = log p(x, z) / (p(x) p(z)) is known in closed form and E_{p(x)p(z)}[e^T*] = 1, so with
T* held fixed the population DV value is exactly I = -(d/2) log(1 - rho^2), and NWJ with T* + 1
is exactly I too. A z-dependent term, T* + a z_1 ("+a z1" rows), lowers the population DV value
to I - a^2/2 and makes the variance from shared negatives larger: it is the case where a row's
weight on its own negatives misses most. InfoNCE has no closed-form population value for a
block of K candidates; its estimate (a mean of per-row terms) is unbiased for it, so the target
is the mean over repetitions (its Monte-Carlo error is the sd / sqrt(reps)).

Each repetition draws fresh test rows, scores them with ``score_rows`` (the estimator's own
layout: joint critic with K offsets, or every other row of the block for separable scoring) and
computes the old interval (each row's weight on its own negatives only) and the new one
(``bootstrap_ci`` with the layout: each pair weighted by both rows) from the same Poisson weights
seed. Coverage counts how often each covers the population value: two-sided 95% and one-sided
95% lower limit (the headline ``lower95_nats``), over all repetitions and over those where the ESS
warning does not fire. Prints a Markdown table.

    .venv/bin/python benchmarks/coverage.py                          # the table in docs/benchmarks.md
    .venv/bin/python benchmarks/coverage.py --reps 50 --levels 2 4   # quicker
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import torch

from mine_dist.critics import CriticConfig
from mine_dist.estimator import (MIN_ESS, EstimatorConfig, _marginal_terms, bootstrap_ci, bound_from_scores,
                                 marginal_ess, readout_reliable, score_rows)


class GaussianCritic(torch.nn.Module):
    """T*(x, z) + a z_1 + shift for a Gaussian pair (float64), with the critics' interface."""

    def __init__(self, rho: float, a: float = 0.0, shift: float = 0.0):
        super().__init__()
        self.rho, self.a, self.shift = rho, a, shift

    def pairs(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        r = self.rho
        t = -0.5 * math.log(1 - r * r) - (r * r * x * x - 2 * r * x * z + r * r * z * z) / (2 * (1 - r * r))
        return t.sum(-1) + self.a * z[..., 0] + self.shift

    def forward(self, x, z, marg_index=None, matrix=True):
        # all pairs at once: T* is c - q (|x|^2 + |z|^2) + b x.z
        r = self.rho
        q, b = r * r / (2 * (1 - r * r)), r / (1 - r * r)
        s = (-0.5 * x.shape[1] * math.log(1 - r * r) - q * (x * x).sum(1, keepdim=True) - q * (z * z).sum(1)
             + b * x @ z.T + self.a * z[:, 0] + self.shift)
        m = s.shape[0]
        return s.diagonal(), s[~torch.eye(m, dtype=torch.bool)].reshape(m, m - 1), s


def one_case(level: float, kind: str, bound: str, a: float, reps: int, n: int, dim: int, resamples: int,
             seed: int, dump=None) -> dict:
    rho = math.sqrt(1 - math.exp(-2 * level / dim))
    critic = GaussianCritic(rho, a, 1.0 if bound == "mine-f" else 0.0)
    cfg = EstimatorConfig(bound=bound, critic=CriticConfig(kind=kind), bootstrap=resamples)
    full = kind == "separable" or bound == "infonce"
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(reps):
        x = rng.standard_normal((n, dim))
        z = rho * x + math.sqrt(1 - rho * rho) * rng.standard_normal((n, dim))
        tj, tm = score_rows(critic, torch.from_numpy(x), torch.from_numpy(z), cfg, seed=seed + r)
        terms = None if bound == "infonce" else _marginal_terms(bound, tm, cfg.smile_tau)
        old = bootstrap_ci(bound, tj, tm, cfg.smile_tau, resamples, seed + r, terms=terms)
        new = bootstrap_ci(bound, tj, tm, cfg.smile_tau, resamples, seed + r, batch_size=cfg.batch_size, full=full,
                           terms=terms)
        rows.append((bound_from_scores(bound, tj, tm, terms=terms), old, new, marginal_ess(bound, tm, terms=terms)))
    est = np.array([v[0] for v in rows])
    target = float(est.mean()) if bound == "infonce" else level - a * a / 2
    ok = np.array([readout_reliable(v[0], v[3]) for v in rows])
    if dump is not None:
        for v in rows:
            dump.write(json.dumps({"level": level, "kind": kind, "bound": bound, "a": a, "target": target, "n": n,
                                   "est": v[0], "old": v[1], "new": v[2], "ess": v[3]}) + "\n")

    def cover(i, mask):
        lims = np.array([v[i] for v in rows])[mask]
        if not len(lims):
            return math.nan, math.nan
        return (float(np.mean((lims[:, 0] <= target) & (target <= lims[:, 1]))),
                float(np.mean(lims[:, 2] <= target)))

    allm = np.ones(reps, bool)
    return {
        "level": level, "kind": kind, "bound": bound, "a": a, "target": target, "bias": float(est.mean() - target),
        "sd": float(est.std(ddof=1)),
        "old_sd": float(np.mean([(v[1][1] - v[1][0]) / (2 * 1.96) for v in rows])),
        "new_sd": float(np.mean([(v[2][1] - v[2][0]) / (2 * 1.96) for v in rows])),
        "ess": None if rows[0][3] is None else float(np.median([v[3] for v in rows])),
        "ess_fires": float(1 - ok.mean()), "n_ok": int(ok.sum()),
        "old": cover(1, allm), "new": cover(2, allm), "old_ok": cover(1, ok), "new_ok": cover(2, ok),
    }


def speed(rows_list, resamples: int) -> None:
    """Seconds for bootstrap_ci (old row weights vs the pairing-aware one) and for the whole
    finish_estimate readout, on random scores in score_rows' layout."""
    from mine_dist.estimator import block_sizes, finish_estimate

    print("| test rows | scoring | negatives per row | old interval (s) | new interval (s) | finish_estimate (s) |")
    print("|---|---|---|---|---|---|")
    for rows in rows_list:
        for kind in ("joint", "separable"):
            cfg = EstimatorConfig(critic=CriticConfig(kind=kind), bootstrap=resamples)
            k = int(block_sizes(rows, cfg.batch_size).max()) - 1 if kind == "separable" else cfg.eval_negatives
            rng = np.random.default_rng(0)
            tj, tm = 1.0 + rng.standard_normal(rows), rng.standard_normal((rows, k))
            t0 = time.perf_counter()
            bootstrap_ci("mine", tj, tm, 5.0, resamples, 0)
            t1 = time.perf_counter()
            bootstrap_ci("mine", tj, tm, 5.0, resamples, 0, batch_size=cfg.batch_size, full=kind == "separable")
            t2 = time.perf_counter()
            finish_estimate(cfg, tj, tm, n_train=1, n_val=1, steps=1, best_step=1, stopped_early=False, wall=0.0,
                            curves=[], normalization={})
            t3 = time.perf_counter()
            print(f"| {rows:,} | {kind} | {k} | {t1 - t0:.1f} | {t2 - t1:.1f} | {t3 - t2:.1f} |", flush=True)
            del tm


def ess_bins(path: str) -> None:
    """One-sided coverage (new and old) by marginal ESS and by the readout warning, from a dump."""
    rows = [json.loads(line) for line in open(path)]
    ess, est = np.array([r["ess"] for r in rows]), np.array([r["est"] for r in rows])
    tgt = np.array([r["target"] for r in rows])
    new = np.array([r["new"][2] for r in rows]) <= tgt
    old = np.array([r["old"][2] for r in rows]) <= tgt
    ok = np.array([readout_reliable(r["est"], r["ess"]) for r in rows])
    print(f"{len(rows)} repetitions from {path}, levels {sorted({r['level'] for r in rows})}")
    print("| marginal ESS | repetitions | value <= log ESS | new one-sided | old one-sided |")
    print("|---|---|---|---|---|")
    edges = [0, 50, 100, 150, 200, 300, 500, 1000, 3000, math.inf]
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (ess >= lo) & (ess < hi)
        if m.any():
            name = f"{lo:g}-{hi:g}" if math.isfinite(hi) else f">= {lo:g}"
            print(f"| {name} | {m.sum()} | {100 * np.mean(est[m] <= np.log(ess[m])):.0f}% | {100 * new[m].mean():.1f} | "
                  f"{100 * old[m].mean():.1f} |")
    for name, m in (("no readout warning", ok), ("readout warning", ~ok)):
        print(f"| {name} | {m.sum()} | | {100 * new[m].mean():.1f} | {100 * old[m].mean():.1f} |")


def fmt(c) -> str:
    return "-" if math.isnan(c[0]) else f"{100 * c[0]:.1f} / {100 * c[1]:.1f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", type=float, nargs="+", default=[0.5, 1, 2, 4, 6, 8])
    p.add_argument("--kinds", nargs="+", default=["joint", "separable"])
    p.add_argument("--bounds", nargs="+", default=["mine"], help="mine (DV readout), mine-f (NWJ), infonce")
    p.add_argument("--z-term", type=float, nargs="*", default=[0.0], help="values of a in T* + a z_1 (DV, NWJ)")
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--rows", type=int, default=4000, help="test rows per repetition (20k rows x 0.2 test share)")
    p.add_argument("--dim", type=int, default=5)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dump", help="also write every repetition as a JSON line to this file")
    p.add_argument("--ess-bins", metavar="DUMP", help="instead: coverage of the one-sided limit by marginal ESS, "
                   "from a --dump file")
    p.add_argument("--speed", type=int, nargs="*", metavar="ROWS",
                   help="instead: time the old and new interval (1000 resamples) on random scores of ROWS test rows")
    args = p.parse_args(argv)
    dump = open(args.dump, "w") if args.dump else None
    torch.set_num_threads(1)
    if args.speed:
        return speed(args.speed, args.resamples)
    if args.ess_bins:
        return ess_bins(args.ess_bins)
    print(f"fixed optimal critic of a {args.dim}-d Gaussian pair, {args.rows} test rows, {args.reps} repetitions, "
          f"{args.resamples} resamples, batch_size 512 blocks, joint K = 16 offsets; coverage % two-sided 95% / "
          f"one-sided 95% lower limit; 'ESS ok' = repetitions without the readout warning (ESS >= {MIN_ESS:.0f} and "
          f"value <= log ESS)", file=sys.stderr)
    print("| scoring | bound | MI (nats) | target | mean - target | sd of estimate | old interval sd | new interval sd "
          "| median ESS | ESS fires | old: all | new: all | old: ESS ok | new: ESS ok |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for kind in args.kinds:
        for bound in args.bounds:
            for a in (args.z_term if bound != "infonce" else [0.0]):
                for level in args.levels:
                    r = one_case(level, kind, bound, a, args.reps, args.rows, args.dim, args.resamples,
                                 args.seed + int(100 * level), dump)
                    name = {"mine": "DV", "mine-f": "NWJ (T*+1)", "infonce": "InfoNCE"}[bound] + (f" +{a:g} z1" if a else "")
                    ess = "-" if r["ess"] is None else f"{r['ess']:.0f}"
                    print(f"| {kind} | {name} | {level:g} | {r['target']:.3f} | {r['bias']:+.3f} | {r['sd']:.4f} | "
                          f"{r['old_sd']:.4f} | {r['new_sd']:.4f} | {ess} | {100 * r['ess_fires']:.0f}% | "
                          f"{fmt(r['old'])} | {fmt(r['new'])} | {fmt(r['old_ok'])} | {fmt(r['new_ok'])} |", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()

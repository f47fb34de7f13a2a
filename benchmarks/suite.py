"""The project's ground-truth suite (issue 12): mine-dist at its default flags, and a plain PyTorch
MINE loop, on hard distributions with known MI.

Each task is a ``mine_dist.synthetic`` distribution (``make_spec(kind, **params)``), written with
``write_dataset`` (20,000 rows, 4 shards, seed 0) to a temporary directory. Then, each in its own
Python process (so import cost is included in the whole-process time):

* **mine-dist**: ``io.inspect`` + ``io.read_arrays`` + ``MINE(EstimatorConfig()).estimate(...)``,
  the in-process path of ``mine-dist estimate --workers 0`` (1 torch thread) without writing the
  run directory (estimate.json, curves.parquet/png);
* **plain**: ``benchmarks/plain_mine.py`` (concat critic 64-32 ReLU, batch 256, 3,000 steps, Adam
  1e-3, held-out DV).

Timed: ``fit s`` is the ``estimate()`` call; ``proc s`` the whole mine-dist process (interpreter
start, imports, reading the Parquet data, fit); ``plain s`` the whole plain-loop process; ``ratio``
= proc s / plain s (wall clock); ``cpu ratio`` the same for the processes' CPU time (user +
system), which a machine shared with other work disturbs less than wall time. Data generation is
not timed. The tasks run one after another, each process on one torch thread.

    .venv/bin/python benchmarks/suite.py                        # every task, 20k rows
    .venv/bin/python benchmarks/suite.py --tasks spiral-5x5 embed-256 --rows 20000
    .venv/bin/python benchmarks/suite.py --quick                # smoke test: 3 tasks, 4k rows, 300 steps

Prints progress to stderr and a Markdown table plus a summary to stdout; ``--jsonl`` keeps every
task's result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import resource
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# name, kind, parameters. 1x1 to 50x50, one 256-d embedding pair, 0.22 to 8 nats.
TASKS = [
    ("gauss-1x1", "gaussian", {"dim": 1, "rho": 0.6}),
    ("student-1x1-df1", "student", {"dim_x": 1, "dim_z": 1, "df": 1.0, "rho": 0.5}),
    ("noise-1x1-e0.75", "additive-noise", {"noise": 0.75}),
    ("noise-1x1-e0.1", "additive-noise", {"noise": 0.1}),
    ("normcdf-3x3", "mapped", {"dim_x": 3, "dim_z": 3, "rho": 0.7, "maps": "normcdf"}),
    ("dense-5x5", "mapped", {"dim_x": 5, "dim_z": 5, "structure": "dense", "rho": 0.5}),
    ("student-5x5-df3", "student", {"dim_x": 5, "dim_z": 5, "df": 3.0}),
    ("asinh-student-5x5-df1", "student", {"dim_x": 5, "dim_z": 5, "df": 1.0, "maps": "asinh"}),
    ("spiral-5x5", "mapped", {"dim_x": 5, "dim_z": 5, "pairs": 2, "mi": 1.0, "maps": "spiral"}),
    ("compose-10x10", "mapped", {"dim_x": 10, "dim_z": 10, "rho": 0.5, "maps": "halfcube,spiral,asinh"}),
    ("halfcube-25x25", "mapped", {"dim_x": 25, "dim_z": 25, "pairs": 2, "mi": 1.0, "maps": "halfcube"}),
    ("gauss-50x50", "mapped", {"dim_x": 50, "dim_z": 50, "rho": 0.3}),
    ("embed-256", "embedding", {"dim_x": 256, "dim_z": 256, "latent": 4, "rho": 0.8}),
    ("embed-cat-256", "embedding-categorical", {"dim_x": 256, "latent": 10, "classes": 10, "sep": 2.0}),
    ("high-5x5", "mapped", {"dim_x": 5, "dim_z": 5, "mi": 8.0}),
    ("high-25x25", "mapped", {"dim_x": 25, "dim_z": 25, "mi": 6.0}),
]
QUICK = ("gauss-1x1", "spiral-5x5", "embed-cat-256")


def within(err: float, truth: float) -> bool:
    """The issue's accuracy criterion: |error| <= max(0.1 nat, 10% of the truth)."""
    return abs(err) <= max(0.1, 0.1 * truth)


def config_overrides(items: list[str]) -> dict:
    """``--set`` items ``key=value`` (``critic.width=128``; values read as JSON, else strings) as a
    nested dict for ``EstimatorConfig.from_dict``."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = key.split(".")
        d = out
        for k in parents:
            d = d.setdefault(k, {})
        d[leaf] = value
    return out


def mine_child(data: str, steps: int | None, overrides: dict | None = None) -> None:
    """The mine-dist process: the in-process path of ``mine-dist estimate --workers 0``."""
    t_start = time.perf_counter()
    import torch

    from mine_dist import io
    from mine_dist.estimator import MINE, EstimatorConfig

    torch.set_num_threads(1)
    import_s = time.perf_counter() - t_start
    info = io.inspect(data, "x", "z", None)
    x, z, keys, _ = io.read_arrays(info)
    d = EstimatorConfig().to_dict()
    for k, v in (overrides or {}).items():
        d[k] = {**d[k], **v} if isinstance(v, dict) else v
    if steps is not None:
        d["steps"] = steps
    cfg = EstimatorConfig.from_dict(d)
    t0 = time.perf_counter()
    est = MINE(cfg).estimate(x, z, row_keys=keys, passthrough_x=io.passthrough_mask(info.x),
                             passthrough_z=io.passthrough_mask(info.z))
    print(json.dumps({"mi_nats": est.mi_nats, "ci95_nats": list(est.ci95_nats), "fit_s": time.perf_counter() - t0,
                      "import_s": import_s, "steps": est.steps, "best_step": est.best_step,
                      "warnings": est.warnings,
                      "dims": f"{info.x.dim}x{info.z.dim}" + (" (labels)" if info.z.kind == "categorical" else "")}),
          flush=True)


def _cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _run(cmd: list[str]) -> tuple[dict, float, float]:
    """Run one process; its result line, wall seconds and CPU seconds (user + system)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    c0, t0 = _cpu_children(), time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall, cpu = time.perf_counter() - t0, _cpu_children() - c0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), wall, cpu


def run_task(name: str, kind: str, params: dict, rows: int, workdir: str, steps: int | None,
             overrides: dict | None = None, plain_from: dict | None = None) -> dict:
    from mine_dist import synthetic

    data = os.path.join(workdir, name)
    truth = synthetic.write_dataset(synthetic.make_spec(kind, **params), rows, 4, data, seed=0)
    mine, mine_wall, mine_cpu = _run([sys.executable, os.path.abspath(__file__), "--child", data]
                                     + ([] if steps is None else ["--child-steps", str(steps)])
                                     + (["--child-config", json.dumps(overrides)] if overrides else []))
    if plain_from is not None:  # the plain loop's result from an earlier run of the same task and rows
        plain, plain_wall, plain_cpu = plain_from["plain"], plain_from["plain_proc_s"], plain_from["plain_cpu_s"]
    else:
        plain, plain_wall, plain_cpu = _run([sys.executable, os.path.join(HERE, "plain_mine.py"), data]
                                            + ([] if steps is None else ["--steps", str(steps)]))
    return {"task": name, "kind": kind, "params": params, "dims": mine.pop("dims"), "truth": truth["mi_nats"],
            "truth_se": truth["mi_stderr_nats"], "rows": rows, "mine": mine, "mine_proc_s": mine_wall,
            "mine_cpu_s": mine_cpu, "plain": plain, "plain_proc_s": plain_wall, "plain_cpu_s": plain_cpu,
            "load_avg": os.getloadavg()[0], "overrides": overrides or {}, "plain_reused": plain_from is not None}


def table(results: list[dict]) -> str:
    lines = ["| task | dims | truth | estimate | 95% CI | covers | error | fit s | proc s | plain est | "
             "plain error | plain s | ratio | cpu ratio |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        m, p, t = r["mine"], r["plain"], r["truth"]
        lo, hi = m["ci95_nats"]
        lines.append(f"| {r['task']} | {r['dims']} | {t:.3f} | {m['mi_nats']:.3f} | [{lo:.3f}, {hi:.3f}] | "
                     f"{'yes' if lo <= t <= hi else 'no'} | {m['mi_nats'] - t:+.3f} | {m['fit_s']:.1f} | "
                     f"{r['mine_proc_s']:.1f} | {p['mi_nats']:.3f} | {p['mi_nats'] - t:+.3f} | "
                     f"{r['plain_proc_s']:.1f} | {r['mine_proc_s'] / r['plain_proc_s']:.2f} | "
                     f"{r['mine_cpu_s'] / r['plain_cpu_s']:.2f} |")
    return "\n".join(lines)


def summary(results: list[dict]) -> str:
    err = [r["mine"]["mi_nats"] - r["truth"] for r in results]
    perr = [r["plain"]["mi_nats"] - r["truth"] for r in results]
    n = len(results)
    cover = sum(r["mine"]["ci95_nats"][0] <= r["truth"] <= r["mine"]["ci95_nats"][1] for r in results)
    ok = sum(within(e, r["truth"]) for e, r in zip(err, results))
    pok = sum(within(e, r["truth"]) for e, r in zip(perr, results))
    not_worse = sum(abs(e) <= abs(pe) for e, pe in zip(err, perr))
    ratios = [r["mine_proc_s"] / r["plain_proc_s"] for r in results]
    cpu_ratios = [r["mine_cpu_s"] / r["plain_cpu_s"] for r in results]
    return "\n".join([
        f"tasks: {n}",
        f"mine-dist: mean absolute error {statistics.mean(abs(e) for e in err):.3f} nats; within max(0.1 nat, 10%): "
        f"{ok}/{n}; 95% interval covers the truth: {cover}/{n}; median fit {statistics.median(r['mine']['fit_s'] for r in results):.1f} s; "
        f"median process {statistics.median(r['mine_proc_s'] for r in results):.1f} s wall, "
        f"{statistics.median(r['mine_cpu_s'] for r in results):.1f} s CPU",
        f"plain loop: mean absolute error {statistics.mean(abs(e) for e in perr):.3f} nats; within: {pok}/{n}; "
        f"median process {statistics.median(r['plain_proc_s'] for r in results):.1f} s wall, "
        f"{statistics.median(r['plain_cpu_s'] for r in results):.1f} s CPU",
        f"median time ratio (mine-dist process / plain process): {statistics.median(ratios):.2f} wall, "
        f"{statistics.median(cpu_ratios):.2f} CPU; "
        f"mine-dist error <= plain error on {not_worse}/{n} tasks",
    ])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=None, help=f"subset of: {' '.join(t[0] for t in TASKS)}")
    p.add_argument("--rows", type=int, default=None, help="rows per task (default 20000; --quick 4000)")
    p.add_argument("--quick", action="store_true", help="smoke test: 3 tasks, 4000 rows, 300 steps for both "
                   "(not the default configuration)")
    p.add_argument("--jsonl", default=None, help="append each task's result here")
    p.add_argument("--report", default=None, metavar="JSONL", help="print the table and summary of results saved "
                   "with --jsonl (e.g. of an interrupted run) and exit")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="estimator setting for mine-dist instead of its default (repeatable; critic.width=128)")
    p.add_argument("--plain-from", default=None, metavar="JSONL",
                   help="take the plain loop's results from an earlier --jsonl of the same tasks and rows "
                        "instead of running it again (its times then come from that run)")
    p.add_argument("--parallel", type=int, default=1, help="tasks run at once (times then share the CPUs)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-config", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return mine_child(a.child, a.child_steps, json.loads(a.child_config) if a.child_config else None)
    if a.report:
        with open(a.report) as f:
            return report([json.loads(line) for line in f if line.strip()], "")
    known = {t[0]: t for t in TASKS}
    names = a.tasks or (list(QUICK) if a.quick else list(known))
    unknown = [t for t in names if t not in known]
    if unknown:
        p.error(f"unknown task(s) {unknown}; known: {list(known)}")
    rows = a.rows or (4000 if a.quick else 20000)
    steps = 300 if a.quick else None
    overrides = config_overrides(a.set)
    plain = {}
    if a.plain_from:
        with open(a.plain_from) as f:
            plain = {(r["task"], r["rows"]): r for r in map(json.loads, filter(str.strip, f))}
    results = []
    from concurrent.futures import ThreadPoolExecutor

    def one(name):
        _, kind, params = known[name]
        return run_task(name, kind, params, rows, work, steps, overrides, plain.get((name, rows)))

    with tempfile.TemporaryDirectory(prefix="mine-suite-") as work, ThreadPoolExecutor(max(1, a.parallel)) as pool:
        t0 = time.perf_counter()
        for name, r in zip(names, pool.map(one, names)):
            results.append(r)
            print(f"{name}: truth {r['truth']:.3f}, mine-dist {r['mine']['mi_nats']:.3f} "
                  f"({r['mine_proc_s']:.1f} s), plain {r['plain']['mi_nats']:.3f} ({r['plain_proc_s']:.1f} s); "
                  f"{time.perf_counter() - t0:.0f} s since start", file=sys.stderr, flush=True)
            if a.jsonl:
                with open(a.jsonl, "a") as f:
                    f.write(json.dumps(r) + "\n")
    report(results, " (quick: 300 steps, not the defaults)" if a.quick else "")


def report(results: list[dict], note: str) -> None:
    print(f"\n{len(results)} tasks, {results[0]['rows']} rows each{note}\n")
    print(table(results))
    print()
    print(summary(results))
    loads = [r["load_avg"] for r in results]
    print(f"1-minute load average after each task: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()

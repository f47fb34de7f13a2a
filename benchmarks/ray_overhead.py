"""Ray job overhead: submit-to-result of a short estimate on a running local Ray cluster, by phase.

Starts its own head (``ray start --head --block`` on free ports, ``--num-cpus`` logical CPUs,
token auth off, a private ``--temp-dir``; stopped by its process id at the end, never with
``ray stop``), writes a Gaussian dataset, then for each repeat submits

    ray job submit --working-dir . -- python pipelines/estimate.py --steps 400 ...

and splits the time from submit to the CLI's return into phases from the wall-clock marks the code
path writes (``mine_dist.distributed.runtime.mark``: the job driver, ``fit_on_ray`` and rank 0 of
the Train workers append to the file named by ``MINE_DIST_PHASE_LOG``, passed in the job's
runtime environment). The same estimate in-process (``mine-dist estimate --workers 0``, a fresh
process; and ``EstimateJob.run()`` in this warm process) is the reference.

``--audit N`` also submits ``pipelines/audit.py`` with an audit of N ``workers: 1`` checks of the same
400-step estimate, once per ``--audit-modes`` entry: ``train`` (every check a Ray Train run:
``MINE_DIST_IN_PROCESS_MAX_VALUES=0``), ``auto`` (the size rule: these small checks train in-process
in the job), and compares its submit-to-result with N x the in-process time.

``--floor N`` first submits, N times each, two jobs that do no mine-dist work: ``python -c pass``
(Ray Jobs' own submit-to-result: CLI, upload, job supervisor, driver process, exit) and one that
only imports what the estimate's driver imports (torch, ray.train, mine_dist): the part of the
fixed overhead that no change to the pipeline can remove.

    .venv/bin/python benchmarks/ray_overhead.py                          # ~3 min on 2 cores
    .venv/bin/python benchmarks/ray_overhead.py --repeats 3 --audit 4 --audit-modes train,auto
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
RAY = os.path.join(os.path.dirname(PY), "ray")

# (label, from mark, to mark): consecutive intervals of one run. "submit" and "result" are this
# script's own clock readings around `ray job submit`.
PHASES = [
    ("job submit -> driver process (CLI, upload, supervisor)", "submit", "driver_start"),
    ("driver imports (torch, ray, mine_dist)", "driver_start", "driver_imports"),
    ("validate, inspect data, claim run dir", "driver_imports", "ray_init_start"),
    ("ray.init (join the cluster)", "ray_init_start", "ray_connected"),
    ("data scan (Ray tasks)", "ray_connected", "scan_done"),
    ("leak check, normalizers, train dataset", "scan_done", "dataset_built"),
    ("TorchTrainer setup -> fit()", "dataset_built", "fit_start"),
    ("Train controller + placement group + worker spawn", "fit_start", "worker_spawned"),
    ("worker start-up and imports", "worker_spawned", "worker_entered"),
    ("worker setup (critic, DDP, checkpoint)", "worker_entered", "worker_ready"),
    ("dataset start (first batch)", "worker_ready", "first_batch"),
    ("training (400 steps, checks, checkpoints)", "first_batch", "train_done"),
    ("final report + worker return", "train_done", "worker_done"),
    ("Train teardown (fit() returns)", "worker_done", "fit_done"),
    ("test scoring on the driver", "fit_done", "test_done"),
    ("record, curves, plot", "test_done", "driver_end"),
    ("driver exit -> CLI returns", "driver_end", "result"),
]


# Jobs for --floor: (label, python -c code).
FLOOR_JOBS = [
    ("`python -c pass`", "pass"),
    ("`python -c 'import torch, ray.train, mine_dist.distributed.train'` (the driver's imports)",
     "import torch, ray.train, mine_dist.distributed.train"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def head(num_cpus: float, tmp: str):
    """A Ray head of our own: ``ray start --head --block`` in a new session, stopped by its pid."""
    ports = {k: free_port() for k in ("port", "dashboard-port", "ray-client-server-port", "node-manager-port",
                                       "object-manager-port", "dashboard-agent-listen-port",
                                       "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
                                       "min-worker-port")}
    ports["max-worker-port"] = ports["min-worker-port"] + 200  # not chosen free; a clash only fails a worker
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [RAY, "start", "--head", "--block", f"--num-cpus={num_cpus:g}", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", f"--temp-dir={tmp}/ray",
           "--disable-usage-stats"] + [f"--{k}={v}" for k, v in ports.items()]
    log = open(os.path.join(tmp, "head.log"), "w")
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        for _ in range(240):
            with contextlib.suppress(Exception):
                urllib.request.urlopen(f"{url}/api/version", timeout=2).read()
                break
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited {proc.returncode}; see {tmp}/head.log")
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the head's dashboard did not answer at {url}")
        print(f"head up in {time.time() - t0:.1f} s at {url} ({num_cpus:g} CPUs, pid {proc.pid})", file=sys.stderr)
        yield url, f"127.0.0.1:{ports['port']}", env
    finally:
        proc.send_signal(signal.SIGTERM)  # --block: `ray start` stops the processes it started
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):  # anything of our session still alive
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def submit(url: str, env: dict, phase_log: str, args: list[str], extra_env: dict | None = None) -> tuple[float, float, str]:
    """``ray job submit`` and wait: (submit time, result time, job log)."""
    runtime_env = {"env_vars": {"MINE_DIST_PHASE_LOG": phase_log, "RAY_USAGE_STATS_ENABLED": "0",
                                "OMP_NUM_THREADS": "1", **(extra_env or {})}}
    cmd = [RAY, "job", "submit", "--address", url, "--working-dir", ROOT, "--runtime-env-json",
           json.dumps(runtime_env), "--", PY, *args]
    t0 = time.time()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    t1 = time.time()
    with open(phase_log, "a") as f:  # this script's clock readings beside the job's marks
        f.write(json.dumps({"phase": "submit", "t": t0}) + "\n" + json.dumps({"phase": "result", "t": t1}) + "\n")
    if out.returncode != 0:
        raise RuntimeError(f"job failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return t0, t1, out.stdout + out.stderr


def read_marks(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def phase_times(marks: list[dict], t_submit: float, t_result: float) -> dict[str, float]:
    """Seconds per phase of one estimate run (its marks, first occurrence of each)."""
    at = {"submit": t_submit, "result": t_result}
    for m in marks:
        at.setdefault(m["phase"], m["t"])
    # A pooled worker process started before fit(): its start-up is not part of this run.
    if "fit_start" in at:  # absent when the size rule trained in the driver (--workers auto)
        at["worker_spawned"] = max(at.get("worker_process_start", at["fit_start"]), at["fit_start"])
    out = {label: at[b] - at[a] for label, a, b in PHASES if a in at and b in at}
    # Time between marks that did not both occur (the in-process path has no Train marks).
    out["other (between marks not written on this path)"] = (t_result - t_submit) - sum(out.values())
    out["total (submit -> result)"] = t_result - t_submit
    out["fixed overhead (total - training)"] = out["total (submit -> result)"] - out.get(PHASES[11][0], 0.0)
    return out


def table(rows: list[dict[str, float]], title: str) -> str:
    labels = [label for label, *_ in PHASES] + ["other (between marks not written on this path)",
                                                 "total (submit -> result)", "fixed overhead (total - training)"]
    head_ = f"| phase | " + " | ".join(f"run {i + 1} (s)" for i in range(len(rows))) + " | median (s) |"
    lines = [f"#### {title}", "", head_, "|---|" + "---:|" * (len(rows) + 1)]
    for label in labels:
        vals = [r.get(label) for r in rows]
        known = [v for v in vals if v is not None]
        cells = " | ".join("-" if v is None else f"{v:.2f}" for v in vals)
        med = f"{statistics.median(known):.2f}" if known else "-"
        bold = "**" if label.startswith(("total", "fixed")) else ""
        lines.append(f"| {bold}{label}{bold} | {cells} | {bold}{med}{bold} |")
    return "\n".join(lines)


def estimate_args(data: str, out: str, run_id: str, steps: int, workers) -> list[str]:
    return ["--data", data, "--output", out, "--run-id", run_id, "--steps", str(steps), "--batch-size", "256",
            "--eval-every", "100", "--bound", "mine", "--no-progress", "--workers", str(workers)]


def in_process(data: str, out: str, steps: int) -> tuple[float, float]:
    """(wall of a fresh ``mine-dist estimate --workers 0`` process, wall of ``EstimateJob.run()`` here)."""
    t0 = time.time()
    subprocess.run([PY, "-m", "mine_dist.cli", "estimate", *estimate_args(data, out, "inproc-cli", steps, 0)],
                   check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    fresh = time.time() - t0
    import torch

    from mine_dist.estimator import EstimatorConfig
    from mine_dist.io import DataSpec
    from mine_dist.jobs import EstimateJob

    torch.set_num_threads(1)
    cfg = EstimatorConfig(bound="mine", steps=steps, batch_size=256, eval_every=100)
    EstimateJob(DataSpec(data), cfg, output=out, run_id="inproc-warmup", progress=False).run()
    t0 = time.time()
    EstimateJob(DataSpec(data), cfg, output=out, run_id="inproc-warm", progress=False).run()
    return fresh, time.time() - t0


def audit_spec(path: str, data: str, n: int, steps: int) -> None:
    lines = ["audit: overhead", "workers: 1", "checks:"]
    for i in range(n):
        lines += [f"  - name: c{i}", f"    data: {data}", "    x: x", "    z: z",
                  f"    estimator: {{bound: mine, steps: {steps}, batch_size: 256, eval_every: 100, seed: {i}}}"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=5)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workers", default="1", help="--workers of the estimate: N Ray Train workers, or auto (the "
                   "size rule: this small estimate then trains in the job's driver); a comma list runs each, "
                   "alternating, one table each")
    p.add_argument("--num-cpus", type=float, default=2, help="logical CPUs of the head")
    p.add_argument("--audit", type=int, default=0, help="also an audit of N checks (0: none)")
    p.add_argument("--audit-modes", default="train,auto", help="comma list of train (a Ray Train run per check), "
                   "auto (the size rule decides)")
    p.add_argument("--floor", type=int, default=0, help="also N submits each of a no-op job and an imports-only job")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (data, runs, logs)")
    a = p.parse_args()

    tmp = tempfile.mkdtemp(prefix="ray_overhead_")
    data, out = os.path.join(tmp, "data"), os.path.join(tmp, "runs")
    subprocess.run([PY, "-m", "mine_dist.cli", "make-data", "gaussian", "--dim", str(a.dim), "--rho", "0.8", "--rows",
                    str(a.rows), "--shards", "4", "--output", data], check=True, capture_output=True)
    load0 = os.getloadavg()
    fresh, warm = in_process(data, out, a.steps)
    print(f"in-process {a.steps} steps: fresh `mine-dist estimate --workers 0` {fresh:.2f} s, "
          f"EstimateJob.run() in a warm process {warm:.2f} s", file=sys.stderr)
    modes = a.workers.split(",")
    rows, audits, floors = {m: [] for m in modes}, [], {}
    try:
        with head(a.num_cpus, tmp) as (url, _gcs, env):
            for what, code in FLOOR_JOBS if a.floor else []:
                for i in range(a.floor):
                    t0, t1, _ = submit(url, env, os.path.join(tmp, "phases-floor.jsonl"), ["-c", code])
                    floors.setdefault(what, []).append(t1 - t0)
                print(f"floor, {what}: {', '.join(f'{t:.1f}' for t in floors[what])} s", file=sys.stderr)
            for i in range(a.repeats):
                for m in modes:
                    phase_log = os.path.join(tmp, f"phases-{m}-{i}.jsonl")
                    t0, t1, _ = submit(url, env, phase_log, ["pipelines/estimate.py", *estimate_args(
                        data, out, f"ray-{m}-{i}", a.steps, m)])
                    rows[m].append(phase_times(read_marks(phase_log), t0, t1))
                    print(f"--workers {m}, run {i + 1}: {t1 - t0:.1f} s submit -> result", file=sys.stderr)
            for mode in a.audit_modes.split(",") if a.audit else []:
                spec = os.path.join(tmp, f"audit-{mode}.yaml")
                audit_spec(spec, data, a.audit, a.steps)
                t0, t1, _ = submit(url, env, os.path.join(tmp, f"phases-audit-{mode}.jsonl"),
                                   ["pipelines/audit.py", "--spec", spec, "--output", os.path.join(tmp, f"audit-{mode}"),
                                    "--run-id", "s1", "--no-progress"],
                                   {"MINE_DIST_IN_PROCESS_MAX_VALUES": "0"} if mode == "train" else {})
                audits.append((mode, t1 - t0))
                print(f"audit of {a.audit} checks, {mode}: {t1 - t0:.1f} s", file=sys.stderr)
    finally:
        load1 = os.getloadavg()
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)
    print(f"# {a.steps}-step estimate, {a.rows} rows x dim {a.dim}, head with "
          f"{a.num_cpus:g} CPUs on {os.cpu_count()} cores; load average {load0[0]:.1f} before, {load1[0]:.1f} after\n")
    for m in modes:
        print(table(rows[m], f"submit -> result of `ray job submit -- python pipelines/estimate.py --steps {a.steps} "
                             f"--workers {m}`") + "\n")
    print(f"\nin-process reference: fresh `mine-dist estimate --workers 0` process {fresh:.2f} s; "
          f"`EstimateJob.run()` in a warm process {warm:.2f} s")
    if floors:
        print(f"\n#### Ray Jobs floor: submit -> result of jobs that do no mine-dist work ({a.floor} each)\n")
        print("| job | runs (s) | median (s) |")
        print("|---|---|---:|")
        for what, ts in floors.items():
            print(f"| {what} | {', '.join(f'{t:.2f}' for t in ts)} | {statistics.median(ts):.2f} |")
    if audits:
        print(f"\n#### audit of {a.audit} checks of {a.steps} steps, one `ray job submit -- python pipelines/audit.py`\n")
        print("| checks run as | submit -> result (s) | per check (s) | N x fresh in-process (s) | ratio | "
              "N x warm in-process (s) | ratio |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for mode, t in audits:
            what = {"train": "a 1-worker Ray Train run each", "auto": "in-process in the job (size rule)"}[mode]
            print(f"| {what} | {t:.1f} | {t / a.audit:.1f} | {a.audit * fresh:.1f} | {t / (a.audit * fresh):.2f} | "
                  f"{a.audit * warm:.1f} | {t / (a.audit * warm):.2f} |")


if __name__ == "__main__":
    main()

"""Steady-state training throughput on the Ray path vs in-process loops, in one run.

Three ways of training the same critic (``EstimatorConfig`` defaults unless overridden: joint MLP
width 256, depth 2, batch 512, ``bound=mine``) on 16 + 16 dimensional rows:

* **plain**: a hand-written PyTorch MINE loop (``PlainMINE`` from ``benchmarks/throughput.py``)
  over pre-made in-memory batches;
* **Trainer.step**: the library's in-process step (``mine_dist.estimator.Trainer.step``) over the
  same in-memory batches;
* **Ray**: ``mine-dist estimate --workers 1`` (``mine_dist.cli.run_estimate`` -> ``fit_on_ray``:
  driver scan, Ray Data from local Parquet, ``TorchTrainer`` running ``worker_loop``) on a
  synthetic Gaussian dataset written under /tmp with ``mine_dist.synthetic.write_dataset``.

The Ray run is the library's own code path; the benchmark only wraps, at run time, a few of its
functions with timers (nothing in the library is modified): ``worker_loop`` is replaced for this
run by a closure that installs timers in the worker around ``Trainer.step``, each batch fetch of
``iter_torch_batches``, ``score_rows`` (validation) and ``ray.train.report`` (metrics + checkpoint)
and then calls the real ``worker_loop``; in the driver, ``data.scan`` and ``TorchTrainer.fit`` are
timed. All timestamps are ``time.monotonic`` (one clock for every process on the machine).

Steady state on the Ray path is the window from the end of the first validation report (step
``eval_every``) to the end of the last one before the final report: joint samples per second of
wall time in that window, including everything the worker does in it (steps, batch fetches, epoch
restarts of the Ray Data pipeline, validation, checkpoint + report). The table also splits the
window into those parts. Start-up (``fit()`` call -> first training step) and the whole ``fit()``
wall are reported separately.

A fourth row, **Trainer.step + validation**, adds to (ii) the validation check the worker does
every ``eval_every`` steps (the in-process ``MINE.estimate`` does the same), to separate the cost of
the estimator's protocol from the cost of Ray.

The in-memory loops are timed in rounds before and after the Ray run (alternating plain /
Trainer.step / Trainer.step + validation), so a slow spell on a shared machine shows up as spread rather than as a bias.

    .venv/bin/python benchmarks/ray_train_throughput.py                 # ~3 min
    .venv/bin/python benchmarks/ray_train_throughput.py --rows 200000 --steps 1000 --eval-every 100

Helpers here (``header``, ``make_dataset``, ``run_ray_estimate``, ``worker_breakdown``,
``TreeSampler``) are imported by ``benchmarks/ray_input.py`` and ``benchmarks/scaling_rows.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- common helpers


def header(title: str, notes: list[str] = ()) -> None:
    """The exact command, versions and machine state, as Markdown lines."""
    import pyarrow

    try:
        import ray

        ray_v = ray.__version__
    except ImportError:  # pragma: no cover
        ray_v = "not installed"
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, check=False,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        rev += " (+ uncommitted changes in tracked files)" if dirty else ""
    except Exception:  # noqa: BLE001
        rev = "?"
    cmd = " ".join(shlex.quote(s) for s in [os.path.relpath(sys.executable)] + sys.argv)
    print(f"## {title}\n")
    print(f"command: `{cmd}` (cwd: repo root)  ")
    print(f"python {platform.python_version()}, torch {torch.__version__} (threads {torch.get_num_threads()}), "
          f"ray {ray_v}, pyarrow {pyarrow.__version__}, numpy {np.__version__}; mine_dist git {rev}  ")
    print(f"{platform.machine()}, os.cpu_count {os.cpu_count()}, load average at start "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} (machine shared with other work)  ")
    for n in notes:
        print(n + "  ")
    print()


def make_dataset(rows: int, shards: int, parent: str = "/tmp", dim: int = 16, rho: float = 0.5,
                 seed: int = 0) -> tuple[str, float]:
    """Write a Gaussian dataset with ``write_dataset`` in a child process (so the generator's
    memory never counts against this process); returns (directory, seconds)."""
    d = tempfile.mkdtemp(prefix=f"mine_bench_{rows}_", dir=parent)
    code = ("import sys; from mine_dist.synthetic import Spec, write_dataset; "
            f"write_dataset(Spec(kind='gaussian', dim={dim}, rho={rho}), {rows}, {shards}, sys.argv[1], seed={seed})")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, d], check=True, cwd=REPO)
    return d, time.perf_counter() - t0


def start_ray() -> float:
    """``ensure_ray(num_cpus=2)`` (a private local Ray unless RAY_ADDRESS is set); returns seconds."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from mine_dist.distributed.runtime import ensure_ray

    t0 = time.perf_counter()
    ensure_ray(num_cpus=2, log_to_driver=False)
    return time.perf_counter() - t0


def make_instrumented_worker_loop(rec_path: str):
    """A Ray Train function that times the real ``worker_loop`` from the inside.

    It is a closure (pickled by value, so workers need not import this file); every import is
    inside it. Rank 0 writes the timings as JSON to ``rec_path``.
    """

    def instrumented_worker_loop(conf: dict):
        import json as _json
        import os as _os
        import time as _time

        import ray.train
        import torch as _torch

        import mine_dist.distributed.train as T

        now = _time.monotonic
        rec = {"enter": now(), "cpu_enter": _time.process_time(), "threads": _torch.get_num_threads(),
               "omp": _os.environ.get("OMP_NUM_THREADS"), "steps": [], "fetch": [], "epochs": [],
               "checks": [], "reports": [], "record_check": [], "bound": [], "save": []}
        orig_trainer, orig_score, orig_bound, orig_save = T.Trainer, T.score_rows, T.bound_from_scores, _torch.save
        orig_report, orig_shard = ray.train.report, ray.train.get_dataset_shard

        class TimedTrainer(orig_trainer):
            def step(self, x, z):
                t, c = now(), _time.thread_time()
                out = super().step(x, z)
                rec["steps"].append((t, now(), _time.thread_time() - c))
                return out

            def record_check(self, val):
                t = now()
                super().record_check(val)
                rec["record_check"].append((t, now()))

        def timed(fn, key):
            def wrapper(*a, **k):
                t = now()
                out = fn(*a, **k)
                rec[key].append((t, now()))
                return out
            return wrapper

        def score_rows(*a, **k):
            t = now()
            out = orig_score(*a, **k)
            rec["checks"].append((t, now()))
            return out

        def report(metrics, *a, **k):
            t = now()
            r = orig_report(metrics, *a, **k)
            rec["reports"].append({"t0": t, "t1": now(), "metrics": {
                key: v for key, v in metrics.items() if isinstance(v, (int, float, bool))}})
            return r

        class Shard:
            def __init__(self, s):
                self._s = s

            def __getattr__(self, name):
                return getattr(self._s, name)

            def iter_torch_batches(self, **kw):
                ep = {"start": now(), "batches": 0}
                rec["epochs"].append(ep)
                it = iter(self._s.iter_torch_batches(**kw))
                while True:
                    t = now()
                    try:
                        b = next(it)
                    except StopIteration:
                        ep["end"] = now()
                        ep["stop_t0"] = t  # the next() that found the epoch exhausted
                        return
                    t1 = now()
                    rec["fetch"].append((t, t1))
                    ep["batches"] += 1
                    if ep["batches"] == 1:
                        ep["first"] = t1
                    yield b

        T.Trainer, T.score_rows = TimedTrainer, score_rows
        T.bound_from_scores, _torch.save = timed(orig_bound, "bound"), timed(orig_save, "save")
        ray.train.report, ray.train.get_dataset_shard = report, (lambda name: Shard(orig_shard(name)))
        try:
            return T.worker_loop(conf)
        finally:
            T.Trainer, T.score_rows = orig_trainer, orig_score
            T.bound_from_scores, _torch.save = orig_bound, orig_save
            ray.train.report, ray.train.get_dataset_shard = orig_report, orig_shard
            rec["exit"], rec["cpu_exit"] = now(), _time.process_time()
            if ray.train.get_context().get_world_rank() == 0:
                with open(rec_path, "w") as f:
                    _json.dump(rec, f)

    return instrumented_worker_loop


@contextlib.contextmanager
def _patched(obj, name, value):
    had = name in vars(obj)
    old = vars(obj).get(name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


def run_ray_estimate(data_dir: str, out_dir: str, cli_args: list[str], instrument: bool = True) -> dict:
    """``mine-dist estimate --workers 1 ...`` through ``cli.run_estimate`` with phase timers.

    Returns the run record plus ``driver`` (monotonic timestamps: start, scan, fit, end) and
    ``worker`` (the instrumented worker's timings, or None).
    """
    import ray.train.torch as rtt

    import mine_dist.distributed.data as D
    import mine_dist.distributed.train as T
    from mine_dist import cli

    rec_path = os.path.join(out_dir, "worker_timings.json")
    drv: dict = {}
    orig_scan, orig_collect = D.scan, D.collect_split
    orig_fit = rtt.TorchTrainer.fit

    def scan(*a, **k):
        drv["scan0"] = time.monotonic()
        try:
            return orig_scan(*a, **k)
        finally:
            drv["scan1"] = time.monotonic()

    def collect_split(*a, **k):
        drv.setdefault("test0", time.monotonic())
        return orig_collect(*a, **k)

    def fit(self, *a, **k):
        drv["fit0"] = time.monotonic()
        try:
            return orig_fit(self, *a, **k)
        finally:
            drv["fit1"] = time.monotonic()

    args = cli.build_parser().parse_args(["estimate", "--data", data_dir, "--output", out_dir, "--workers", "1",
                                          "--no-progress", *cli_args])
    with contextlib.ExitStack() as st:
        st.enter_context(_patched(D, "scan", scan))
        st.enter_context(_patched(D, "collect_split", collect_split))
        st.enter_context(_patched(rtt.TorchTrainer, "fit", fit))
        if instrument:
            st.enter_context(_patched(T, "worker_loop", make_instrumented_worker_loop(rec_path)))
        drv["start"] = time.monotonic()
        record = cli.run_estimate(args)
        drv["end"] = time.monotonic()
    worker = None
    if instrument and os.path.exists(rec_path):
        with open(rec_path) as f:
            worker = json.load(f)
    return {"record": record, "driver": drv, "worker": worker}


def worker_breakdown(w: dict, drv: dict, batch: int) -> dict:
    """Steady-state rate and where the time goes, from the instrumented worker's timings."""
    steps = np.array(w["steps"])
    fetch = np.array(w["fetch"])
    reps = [r for r in w["reports"] if not r["metrics"].get("final")]
    epochs = w["epochs"]
    out: dict = {"n_steps": len(steps), "n_epochs": len(epochs), "threads": w["threads"], "omp": w["omp"]}
    first_fetches = {round(e["first"], 6) for e in epochs if "first" in e}
    out["epoch_first_batch_s"] = [e["first"] - e["start"] for e in epochs if "first" in e]
    out["worker_cpu_s"] = w["cpu_exit"] - w["cpu_enter"]
    out["worker_wall_s"] = w["exit"] - w["enter"]
    out["step_only_rate"] = batch * len(steps) / float((steps[:, 1] - steps[:, 0]).sum())
    out["step_wall_ms"] = 1e3 * float(np.median(steps[:, 1] - steps[:, 0]))
    out["step_cpu_ms"] = 1e3 * float(np.median(steps[:, 2]))
    out["metric_samples_per_s"] = reps[-1]["metrics"].get("samples_per_s") if reps else None
    # start-up / teardown
    t_fit0, t_fit1 = drv.get("fit0"), drv.get("fit1")
    out["fit_wall_s"] = t_fit1 - t_fit0
    out["fit_to_worker_s"] = w["enter"] - t_fit0
    out["worker_to_first_iter_s"] = epochs[0]["start"] - w["enter"]
    out["first_batch_s"] = epochs[0]["first"] - epochs[0]["start"]
    out["fit_to_first_step_s"] = steps[0, 0] - t_fit0
    out["last_step_to_fit_return_s"] = t_fit1 - steps[-1, 1]
    out["worker_exit_to_fit_return_s"] = t_fit1 - w["exit"]
    out["scan_s"] = drv["scan1"] - drv["scan0"] if "scan0" in drv else None
    out["before_fit_s"] = t_fit0 - drv["start"]
    out["after_fit_s"] = drv["end"] - t_fit1
    out["total_s"] = drv["end"] - drv["start"]
    # steady-state window
    if len(reps) >= 2:
        a, b = reps[0], reps[-1]
        t0, t1 = a["t1"], b["t1"]
        n = b["metrics"]["step"] - a["metrics"]["step"]
        win = t1 - t0
        out["window_steps"], out["window_s"] = n, win
        out["steady_rate"] = batch * n / win
        iv = [batch * (r2["metrics"]["step"] - r1["metrics"]["step"]) / (r2["t1"] - r1["t1"])
              for r1, r2 in itertools.pairwise(reps)]
        out["interval_rates"] = iv

        def inside(arr):
            if len(arr) == 0:
                return np.zeros((0, 2))
            arr = np.asarray(arr)
            return arr[(arr[:, 0] >= t0) & (arr[:, 1] <= t1)]

        out["window"] = (t0, t1)
        s = inside(steps[:, :2])
        f = inside(fetch)
        is_first = np.array([round(x, 6) in first_fetches for x in f[:, 1]], bool) if len(f) else np.zeros(0, bool)
        c = inside(w["checks"])
        r = inside([(x["t0"], x["t1"]) for x in reps[1:]])
        dur = lambda arr: float((arr[:, 1] - arr[:, 0]).sum())
        parts = {
            "training steps (Trainer.step)": dur(s),
            "batch fetch, within an epoch": dur(f[~is_first]),
            "batch fetch, first of an epoch (pipeline restart)": dur(f[is_first]),
            "validation: score_rows": dur(c),
            "validation: bound_from_scores + record_check (best-critic copy)": dur(inside(w["bound"]))
            + dur(inside(w["record_check"])),
            "checkpoint: torch.save of the trainer state": dur(inside(w["save"])),
            "ray.train.report (metrics + checkpoint upload)": dur(r),
        }
        stops = inside([(e["stop_t0"], e["end"]) for e in epochs if "stop_t0" in e])
        parts["end of an epoch: the next() that finds the iterator exhausted"] = dur(stops)
        # Untimed time: split into gaps after a step that triggered a check (temp dir,
        # Checkpoint.from_directory, metrics dict) and all other gaps (loop, timers, preemption).
        timed = sorted([tuple(x) for x in s] + [tuple(x) for x in f] + [tuple(x) for x in c]
                       + [tuple(x) for x in r] + [tuple(x) for x in stops]
                       + [tuple(x) for k in ("bound", "record_check", "save") for x in inside(w[k])])
        starts = np.array([x[0] for x in timed])
        ends = np.array([x[1] for x in timed])
        check_t = c[:, 0] if len(c) else np.zeros(0)
        untimed_check = 0.0
        for k in range(len(s) - 1):
            g0 = s[k, 1]
            g1 = f[np.searchsorted(f[:, 0], g0), 0] if np.searchsorted(f[:, 0], g0) < len(f) else t1
            if not ((check_t >= g0) & (check_t <= g1)).any():
                continue
            i0, i1 = np.searchsorted(starts, g0), np.searchsorted(starts, g1)
            untimed_check += (g1 - g0) - float((ends[i0:i1] - starts[i0:i1]).sum())
        rest = win - sum(parts.values())
        parts["untimed, around checks (temp dir, Checkpoint.from_directory, metrics)"] = untimed_check
        parts["untimed, between ordinary steps (loop, timers, preemption)"] = rest - untimed_check
        out["parts"] = parts
        out["counts"] = [len(s), int((~is_first).sum()), int(is_first.sum()), len(c), len(c),
                         len(inside(w["save"])), len(r), len(stops), len(c), None]
    return out


class TreeSampler:
    """Samples, in a background thread, this process and all its descendants (a private local
    Ray's GCS, raylet, dashboard and workers are children of the driver): PSS / RSS summed from
    ``/proc/<pid>/smaps_rollup`` (``memory=True``), CPU time per process from ``/proc/<pid>/stat``,
    and this process's own RSS."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, interval: float = 0.25, memory: bool = True):
        self.interval, self.memory = interval, memory
        self.samples: list[tuple] = []  # t, pss, rss, driver_rss, nproc, max_pss
        self.cpu: dict[int, list[tuple[float, float, str]]] = {}  # pid -> [(t, cpu seconds, title)]
        self.group_samples: list[tuple[float, dict[str, int]]] = []  # t, PSS bytes per process group
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.root = os.getpid()

    @staticmethod
    def _kb(path: str, keys: tuple[str, ...]) -> dict:
        out = {}
        try:
            with open(path) as f:
                for line in f:
                    k = line.split(":", 1)[0]
                    if k in keys:
                        out[k] = int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return out

    def _tree(self) -> dict[int, float]:
        """pid -> CPU seconds, for the root and its descendants."""
        children: dict[int, list[int]] = {}
        cpu: dict[int, float] = {}
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields_ = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            children.setdefault(int(fields_[1]), []).append(int(p))
            cpu[int(p)] = (int(fields_[11]) + int(fields_[12])) / self.TICK
        out, todo = {}, [self.root]
        while todo:
            q = todo.pop()
            out[q] = cpu.get(q, 0.0)
            todo.extend(children.get(q, []))
        return out

    @staticmethod
    def _title(p: int) -> str:
        """A short process title: ``ray::<actor or task>`` for Ray workers, else the program."""
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return "?"
        if cmd.startswith("ray::"):
            return cmd.split(" ")[0]
        words = cmd.split(" ")
        name = os.path.basename(words[0])
        if name.startswith("python") and len(words) > 1:
            arg = next((w for w in words[1:] if not w.startswith("-")), words[1])
            name = f"{name} {os.path.basename(arg)}"
        return name[:60]

    def sample(self) -> tuple:
        with self._lock:
            return self._sample()

    def _sample(self) -> tuple:
        t = time.monotonic()
        pss = rss = mx = 0
        pids = self._tree()
        groups: dict[str, int] = {}
        for p, c in pids.items():
            title = self._title(p)
            self.cpu.setdefault(p, []).append((t, c, title))
            if self.memory:
                v = self._kb(f"/proc/{p}/smaps_rollup", ("Pss", "Rss"))
                pss += v.get("Pss", 0)
                rss += v.get("Rss", 0)
                mx = max(mx, v.get("Pss", 0))
                g = "driver" if p == self.root else self.group(title)
                groups[g] = groups.get(g, 0) + v.get("Pss", 0) * 1024
                st = self._kb(f"/proc/{p}/status", ("RssAnon", "RssShmem"))
                groups[g + " anon"] = groups.get(g + " anon", 0) + st.get("RssAnon", 0) * 1024
                groups[g + " shmem"] = groups.get(g + " shmem", 0) + st.get("RssShmem", 0) * 1024
        drv = self._kb("/proc/self/status", ("VmRSS",)).get("VmRSS", 0)
        s = (t, pss * 1024, rss * 1024, drv * 1024, len(pids), mx * 1024)
        self.samples.append(s)
        if self.memory:
            self.group_samples.append((t, groups))
        return s

    GROUPS = ("driver", "Train worker", "Ray Data executor (SplitCoordinator)",
              "Ray task workers (read/scan tasks, idle pool)", "raylet (incl. object store pages)", "GCS",
              "dashboard + agents", "other Ray actors (Train controller, ...)", "other")

    @staticmethod
    def group(title: str) -> str:
        if title.startswith("ray::RayTrainWorker"):
            return "Train worker"
        if title.startswith("ray::SplitCoordinator"):
            return "Ray Data executor (SplitCoordinator)"
        if title.startswith(("ray::IDLE", "ray::MapBatches", "ray::Read", "ray::task", "ray::_scan")) or \
                "default_worker.py" in title or "setup_worker.py" in title:
            return "Ray task workers (read/scan tasks, idle pool)"
        if title.startswith("raylet"):
            return "raylet (incl. object store pages)"
        if title.startswith("gcs_server"):
            return "GCS"
        if "dashboard" in title.lower() or title.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent")):
            return "dashboard + agents"
        if title.startswith("ray::"):
            return "other Ray actors (Train controller, ...)"
        return "other"

    def new_processes(self, t0: float, t1: float) -> list[tuple[int, str, float]]:
        """Processes of the tree first seen in (t0, t1]: (pid, last title, CPU seconds up to t1)."""
        out = []
        with self._lock:
            items = list(self.cpu.items())
        for p, series in items:
            if t0 < series[0][0] <= t1:
                upto = [x for x in series if x[0] <= t1]
                titles = [x[2] for x in upto if x[2] not in ("ray::IDLE", "?")]
                out.append((p, titles[-1] if titles else upto[-1][2], upto[-1][1]))
        return out

    def peak_by_group(self, t0: float, t1: float) -> dict[str, float]:
        """Largest PSS (bytes) each process group reached in [t0, t1]; keys ``<group> anon`` and
        ``<group> shmem``: largest RssAnon (private heap) and RssShmem (shared memory: the object
        store's pages in /dev/shm) summed over the group."""
        out: dict[str, float] = {}
        with self._lock:
            gs = list(self.group_samples)
        for t, g in gs:
            if t0 <= t <= t1:
                for k, v in g.items():
                    out[k] = max(out.get(k, 0.0), v)
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak(self, t0: float = -np.inf, t1: float = np.inf) -> dict:
        with self._lock:
            sel = [s for s in self.samples if t0 <= s[0] <= t1]
        if not sel:
            return {}
        arr = np.array(sel, dtype=np.float64)
        return {"pss": arr[:, 1].max(), "rss": arr[:, 2].max(), "driver_rss": arr[:, 3].max(),
                "nproc": int(arr[:, 4].max()), "max_proc_pss": arr[:, 5].max(), "n_samples": len(sel)}

    def cpu_between(self, t0: float, t1: float) -> dict[str, float]:
        """CPU seconds used in [t0, t1] (to sampling resolution), summed by process title.

        Each interval between two samples of a process is charged to its title at the later
        sample (a Ray pool worker's title names the task it runs), or at the earlier one when the
        later one is ``ray::IDLE``."""
        out: dict[str, float] = {}
        with self._lock:
            items = [(p, list(series)) for p, series in self.cpu.items()]
        for p, series in items:
            prev = None
            for t, c, title in series:
                if t > t1:
                    break
                if t <= t0:
                    prev = (t, c, title)
                    continue
                base, ptitle = (prev[1], prev[2]) if prev else (0.0, title)  # new process: all its CPU
                name = ptitle if title == "ray::IDLE" and ptitle != "?" else title
                name = "driver (this script)" if p == self.root else name
                out[name] = out.get(name, 0.0) + (c - base)
                prev = (t, c, title)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def fmt_s(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


# ----------------------------------------------------------------------------- this benchmark


def inmem_round(plain, trainer, checked, batches, steps: int) -> tuple:
    """Rates (samples/s) and CPU s/step of plain, Trainer.step and Trainer.step + validation
    checks, timed back to back: (plain, lib, checked, plain_cpu, lib_cpu, checked_cpu)."""
    out = []
    for fn in (plain.step, trainer.step, checked):
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(steps):
            fn(*batches[i % len(batches)])
        out.append((time.perf_counter() - t0, time.process_time() - c0))
    b = batches[0][0].shape[0]
    return tuple(b * steps / w for w, _ in out) + tuple(c / steps for _, c in out)


def checked_stepper(trainer, cfg, xv, zv):
    """``Trainer.step`` plus, every ``eval_every`` steps, the validation check the worker does
    (``score_rows`` on the validation rows, ``bound_from_scores``, ``record_check``)."""
    from mine_dist.estimator import bound_from_scores, score_rows

    def step(x, z):
        trainer.step(x, z)
        if trainer.step_count % cfg.eval_every == 0:
            tj, tm = score_rows(trainer.module, xv, zv, cfg, seed=cfg.seed + 7, negatives=cfg.val_negatives)
            trainer.record_check(bound_from_scores(cfg.bound, tj, tm, cfg.smile_tau))
    return step


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=500_000, help="rows in the Parquet dataset (70%% train)")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--steps", type=int, default=3000, help="Ray training steps")
    p.add_argument("--eval-every", type=int, default=200, help="Ray validation + checkpoint interval")
    p.add_argument("--inmem-steps", type=int, default=400, help="steps per in-memory timed run")
    p.add_argument("--inmem-rounds", type=int, default=2, help="alternating rounds before and again after the Ray run")
    p.add_argument("--keep", action="store_true", help="keep the generated data and run directory")
    p.add_argument("--ray-args", default="", help="extra `mine-dist estimate` options for the Ray run, e.g. "
                   "'--materialize never'")
    a = p.parse_args(argv)
    torch.set_num_threads(1)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from throughput import PlainMINE, make_batches

    from mine_dist.critics import CriticConfig
    from mine_dist.estimator import EstimatorConfig, Trainer

    header("Ray Train vs in-process training throughput",
           [(f"data: gaussian dim {a.dim} rho 0.5, {a.rows:,} rows in {a.shards} Parquet shards (row groups of "
             f"65,536) under /tmp; critic joint MLP width {a.width} depth {a.depth}, batch {a.batch_size}, bound mine, "
             f"torch.set_num_threads(1) in the driver"),
            (f"Ray: `mine-dist estimate --workers 1 --steps {a.steps} --eval-every {a.eval_every} --patience 0` "
             f"(library defaults otherwise: shuffle auto, shuffle buffer max(4B, 16384), CPUs per worker from "
             f"`auto_cpus_per_worker`)")])

    cfg = EstimatorConfig(batch_size=a.batch_size, critic=CriticConfig(width=a.width, depth=a.depth))
    trainer = Trainer(cfg, a.dim, a.dim, torch.device("cpu"))
    g = torch.Generator().manual_seed(2)
    xv, zv = (torch.randn(cfg.max_eval_rows, a.dim, generator=g) for _ in range(2))
    checked = checked_stepper(Trainer(cfg, a.dim, a.dim, torch.device("cpu")), cfg, xv, zv)
    plain = PlainMINE(a.dim, a.dim, a.width, a.depth, cfg.lr, cfg.ema_rate, cfg.seed)
    assert sum(q.numel() for q in trainer.critic.parameters()) == sum(q.numel() for q in plain.net.parameters())
    batches = make_batches(8, a.batch_size, a.dim, a.dim, seed=1)
    inmem_round(plain, trainer, checked, batches, 20)  # warm up

    t_ray = start_ray()
    data_dir, t_gen = make_dataset(a.rows, a.shards, dim=a.dim)
    out_dir = tempfile.mkdtemp(prefix="mine_bench_runs_", dir="/tmp")
    try:
        rounds = [inmem_round(plain, trainer, checked, batches, a.inmem_steps) for _ in range(a.inmem_rounds)]
        cli_args = ["--steps", str(a.steps), "--eval-every", str(a.eval_every), "--patience", "0",
                    "--batch-size", str(a.batch_size), "--width", str(a.width), "--depth", str(a.depth),
                    "--bootstrap", "100", "--max-test-rows", "20000", *shlex.split(a.ray_args)]
        with TreeSampler(interval=0.5, memory=False) as sampler:
            res = run_ray_estimate(data_dir, out_dir, cli_args)
        rounds += [inmem_round(plain, trainer, checked, batches, a.inmem_steps) for _ in range(a.inmem_rounds)]
    finally:
        if not a.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
            shutil.rmtree(out_dir, ignore_errors=True)

    B = a.batch_size
    rec = res["record"]
    br = worker_breakdown(res["worker"], res["driver"], B)
    plain_r = statistics.median(r[0] for r in rounds)
    lib_r = statistics.median(r[1] for r in rounds)
    rng = lambda i: f"{min(r[i] for r in rounds):,.0f}-{max(r[i] for r in rounds):,.0f}"
    chk_r = statistics.median(r[2] for r in rounds)
    plain_cpu = statistics.median(r[3] for r in rounds)
    lib_cpu = statistics.median(r[4] for r in rounds)
    chk_cpu = statistics.median(r[5] for r in rounds)

    print("### Steady-state training throughput (joint samples/s)\n")
    print("| path | samples/s | / plain | notes |")
    print("|---|---:|---:|---|")
    print(f"| (i) plain PyTorch MINE loop, in-memory | {plain_r:,.0f} | 1.000 | median of {len(rounds)} runs of "
          f"{a.inmem_steps} steps (range {rng(0)}); CPU {plain_cpu * 1e3:.2f} ms/step |")
    print(f"| (ii) `Trainer.step`, in-memory | {lib_r:,.0f} | {lib_r / plain_r:.3f} | median of {len(rounds)} "
          f"(range {rng(1)}); CPU {lib_cpu * 1e3:.2f} ms/step |")
    print(f"| (ii') `Trainer.step` + validation every {a.eval_every} steps, in-memory | {chk_r:,.0f} | "
          f"{chk_r / plain_r:.3f} | as (ii) plus the worker's check (`score_rows` on {cfg.max_eval_rows:,} rows x "
          f"{cfg.val_negatives} negatives, `bound_from_scores`, `record_check`), no checkpoint (range {rng(2)}); "
          f"CPU {chk_cpu * 1e3:.2f} ms/step |")
    if "steady_rate" in br:
        iv = br["interval_rates"]
        print(f"| (iii) Ray Train, 1 worker, Ray Data from Parquet: steady state | {br['steady_rate']:,.0f} | "
              f"{br['steady_rate'] / plain_r:.3f} | steps {br['window_steps'] + 0} in {br['window_s']:.1f} s "
              f"(from the step-{a.eval_every} report to the last report before the final one); per-interval "
              f"{min(iv):,.0f}-{max(iv):,.0f}, median {statistics.median(iv):,.0f} |")
        pt = br["parts"]
        no_checks = B * br["window_steps"] / (pt["training steps (Trainer.step)"] + pt["batch fetch, within an epoch"]
                                               + pt["batch fetch, first of an epoch (pipeline restart)"])
        print(f"| (iii) same window without validation/report/checkpoint time | {no_checks:,.0f} | "
              f"{no_checks / plain_r:.3f} | steps + batch fetches only |")
    print(f"| (iii) time inside `Trainer.step` only, in the Ray worker | {br['step_only_rate']:,.0f} | "
          f"{br['step_only_rate'] / plain_r:.3f} | all {br['n_steps']} steps; median step {br['step_wall_ms']:.2f} ms "
          f"wall, {br['step_cpu_ms']:.2f} ms thread CPU; worker torch threads {br['threads']}, "
          f"OMP_NUM_THREADS={br['omp']} |")
    if br["metric_samples_per_s"] is not None:
        print(f"| (iii) worker's reported `samples_per_s` (last report) | {br['metric_samples_per_s']:,.0f} | "
              f"{br['metric_samples_per_s'] / plain_r:.3f} | steps and batch fetches since the previous report |")
    rate_all = B * br["n_steps"] / br["fit_wall_s"]
    print(f"| (iii) whole `fit()` (steps x batch / fit wall) | {rate_all:,.0f} | {rate_all / plain_r:.3f} | "
          f"incl. start-up and teardown |")
    print()
    if "steady_rate" in br:
        print(f"Like for like: Ray steady state (iii) / in-process with the same validation checks (ii') = "
              f"**{br['steady_rate'] / chk_r:.3f}**; Ray training only (steps + fetches) / plain loop (i) = "
              f"**{no_checks / plain_r:.3f}**.\n")

    if "parts" in br:
        print(f"### Where the Ray worker's steady-state window goes ({br['window_s']:.2f} s, "
              f"{br['window_steps']} steps)\n")
        print("| part | s | % of window | count | ms each |")
        print("|---|---:|---:|---:|---:|")
        counts = br["counts"]
        for (name, v), n in zip(br["parts"].items(), counts):
            each = f"{v / n * 1e3:.2f}" if n else ""
            print(f"| {name} | {v:.2f} | {100 * v / br['window_s']:.1f} | {n if n is not None else ''} | {each} |")
        print()
        extra = 1e3 * (br["window_s"] / br["window_steps"]) - 1e3 * B / plain_r
        print(f"Per step in the window: {1e3 * br['window_s'] / br['window_steps']:.2f} ms on the Ray path vs "
              f"{1e3 * B / plain_r:.2f} ms for the plain loop (+{extra:.2f} ms).  ")
        eps = br["epoch_first_batch_s"]
        print(f"Epochs started: {br['n_epochs']} ({rec['n_train']:,} train rows = "
              f"{rec['n_train'] // B} full batches per epoch); first batch of each epoch after "
              f"`iter_torch_batches` was called: {', '.join(f'{e:.2f}' for e in eps)} s.  ")
        print(f"Worker process CPU {br['worker_cpu_s']:.1f} s over {br['worker_wall_s']:.1f} s of wall "
              f"(Ray Data read tasks run in other processes, on the other CPU).\n")
        w0, w1 = br["window"]
        cpu = sampler.cpu_between(w0, w1)
        tot = sum(cpu.values())
        print(f"CPU seconds used by this benchmark's process tree (driver + private Ray) in the window, "
              f"by process (sampled every 0.5 s from /proc/<pid>/stat); total {tot:.2f} CPU-s over "
              f"{w1 - w0:.2f} s of wall = {tot / (w1 - w0):.2f} cores; per 1M samples trained: "
              f"{tot / (B * br['window_steps']) * 1e6:.1f} CPU-s on the Ray path vs {plain_cpu / B * 1e6:.1f} "
              f"for the plain loop.\n")
        print("| process | CPU-s | share |")
        print("|---|---:|---:|")
        for name, v in list(cpu.items())[:10]:
            if v > 0:
                print(f"| `{name[:70]}` | {v:.2f} | {100 * v / max(tot, 1e-9):.1f}% |")
        print()
        new = sampler.new_processes(w0, w1)
        if new:
            kinds: dict[str, list[float]] = {}
            for _, title, c in new:
                kinds.setdefault(title, []).append(c)
            print(f"Worker churn: {len(new)} process(es) of the tree were started inside the steady window "
                  f"({sum(c for _, _, c in new):.2f} CPU-s up to its end, included above): "
                  + ", ".join(f"{len(v)} x `{k}` ({sum(v):.2f} CPU-s)" for k, v in kinds.items())
                  + ". A Ray pool worker that idles past Ray's idle-worker timeout while the pool is above "
                    "its soft limit is killed, and the next read task pays for a new Python process.\n")
        else:
            print("Worker churn: no process of the tree was started inside the steady window.\n")

    print("### Start-up and totals (Ray path)\n")
    print("| phase | s |")
    print("|---|---:|")
    from mine_dist.distributed.train import auto_cpus_per_worker

    print(f"| `ray.init` (ensure_ray, once per process, not part of the run; the worker reserved "
          f"{auto_cpus_per_worker(1, False):g} of {os.cpu_count()} CPUs) | {t_ray:.2f} |")
    print(f"| CLI start -> `fit()` call (inspect footers, driver scan of all row groups, normalizer, "
          f"dataset plan) | {br['before_fit_s']:.2f} |")
    print(f"| ... of which the scan (one Ray task per row group) | {fmt_s(br['scan_s'])} |")
    print(f"| `fit()` call -> train function entered on the worker (controller, placement group, worker "
          f"process, setup) | {br['fit_to_worker_s']:.2f} |")
    print(f"| worker entered -> first `iter_torch_batches` (Trainer, checkpoint lookup, shard) | "
          f"{br['worker_to_first_iter_s']:.2f} |")
    print(f"| first `iter_torch_batches` -> first batch (Ray Data start, first row group, shuffle buffer) | "
          f"{br['first_batch_s']:.2f} |")
    print(f"| **`fit()` call -> first training step** | **{br['fit_to_first_step_s']:.2f}** |")
    print(f"| last training step -> `fit()` returns (final report, shutdown) | {br['last_step_to_fit_return_s']:.2f} |")
    print(f"| **`fit()` wall, total** ({br['n_steps']} steps) | **{br['fit_wall_s']:.2f}** |")
    print(f"| after `fit()`: test split read + scoring + bootstrap + run files | {br['after_fit_s']:.2f} |")
    print(f"| whole `run_estimate` | {br['total_s']:.2f} |")
    print()
    print(f"Dataset generation (child process, not timed above): {t_gen:.1f} s. Estimate: "
          f"{rec['mi_nats']:.3f} nats (truth {rec.get('ground_truth', {}).get('mi_nats', float('nan')):.3f}; "
          f"{a.steps} steps, not tuned for accuracy). Load average at end: "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}.")


if __name__ == "__main__":
    main()

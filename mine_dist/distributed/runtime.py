"""Starting or joining Ray, the one place that decides how."""

from __future__ import annotations

import os
import time

PHASE_LOG_ENV = "MINE_DIST_PHASE_LOG"


def mark(phase: str, at: float | None = None) -> None:
    """Append ``{"phase": ..., "t": wall-clock seconds, "pid": ...}`` to the file named by
    ``MINE_DIST_PHASE_LOG`` (benchmarks/ray_overhead.py splits a run into phases from these); a
    no-op when it is unset. Wall clock, not a monotonic clock: the marks come from several
    processes (job driver, Train workers) of one machine."""
    path = os.environ.get(PHASE_LOG_ENV)
    if not path:
        return
    import json

    line = json.dumps({"phase": phase, "t": time.time() if at is None else at, "pid": os.getpid()}) + "\n"
    with open(path, "a") as f:  # one short O_APPEND write per mark: lines from processes do not interleave
        f.write(line)


def ensure_ray(**kwargs) -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (as under ``ray job submit``), else start a
    private local Ray. ``address="local"`` avoids a stale ``ray_current_cluster`` file making a
    bare ``ray.init()`` retry a dead head forever."""
    import ray

    quiet_ray_data()  # also inside a Ray task or actor, where Ray is already up
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray Train's controller takes reported results every 2 s by default and a worker's report
    # blocks while the previous one is unconsumed: with checks every ~2 s that cost ~190 ms per
    # report (docs/benchmarks.md). Inherited by the processes of a local Ray; set it on clusters.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    address = os.environ.get("RAY_ADDRESS") or "local"
    level = log_level()
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", level)  # inherited by the processes of a local Ray
    opts = {"include_dashboard": True, "log_to_driver": True,
            "logging_config": ray.LoggingConfig(log_level=level), **kwargs}
    if address != "local":
        opts.pop("include_dashboard")
    mark("ray_init_start")
    ray.init(address=address, **opts)
    mark("ray_connected")


def log_level() -> str:
    """Ray's own INFO logs (every checkpoint report, every dataset execution, worker-group start)
    drown the run's progress lines; MINE_DIST_RAY_LOG_LEVEL=INFO brings them back."""
    return os.environ.get("MINE_DIST_RAY_LOG_LEVEL", "WARNING").upper()


def train_logging_config(level: str | None = None):
    """Ray Train's ``LoggingConfig`` (controller and worker console logs) at :func:`log_level`."""
    from ray.train import LoggingConfig

    return LoggingConfig(log_level=level or log_level())


def quiet_ray_data() -> None:
    """No progress bars or per-execution banners from datasets built in this process (Ray Data
    copies the creating process's DataContext into the operators that run them)."""
    import logging
    import warnings

    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    # Ray Data configured its logger at import, before RAY_DATA_LOG_LEVEL could be set here.
    logging.getLogger("ray.data").setLevel(log_level())
    warnings.filterwarnings("ignore", message=r".*ExecutionOptions.exclude_resources.*")


def quiet_ray_train_worker() -> None:
    """Keep a Train worker's log to our progress lines: Ray Train 2.60 logs every report at INFO
    ("Reporting training result ...") on a logger named after its source file."""
    import logging

    for name in ("ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except (ImportError, AttributeError):  # another Ray version: only the noise comes back
        pass


def release_orphan_placement_groups(confirm_s: float = 3.0) -> int:
    """Remove placement groups that no live actor uses any more; returns how many.

    Ray Train runs launched from Tune trials leave their worker placement group behind when the
    trial ends (Ray 2.60: the PlacementGroupCleaner does not always catch it), and on a small
    cluster the next trial or Ray Data's read tasks then wait forever for those CPUs. A group is
    only removed if it is CREATED and no actor (alive or being created) is placed in it at two
    looks ``confirm_s`` apart, so a group whose workers are just starting is left alone.
    """
    import time

    import ray
    from ray.util import placement_group_table, remove_placement_group
    from ray.util.placement_group import PlacementGroup
    from ray.util.state import list_actors

    def unused() -> set[str]:
        created = {k for k, v in placement_group_table().items() if v["state"] == "CREATED"}
        used = {a.placement_group_id for a in list_actors(address=ray.get_runtime_context().gcs_address, detail=True,
                                                          limit=10000, raise_on_missing_output=False)
                if a.state != "DEAD" and a.placement_group_id}
        return created - used

    try:
        first = unused()
        if not first:
            return 0
        time.sleep(confirm_s)
        orphans = first & unused()
        for pg_id in orphans:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
        return len(orphans)
    except Exception:  # noqa: BLE001 - a best-effort safety net: never fail a run because of it
        return 0

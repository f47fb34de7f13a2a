"""Running an audit's checks concurrently on Ray: one Ray task per check.

Each task runs the check function the caller passes (``mine_dist.jobs.audit.run_check``, the same
one the sequential path runs in the driver, so the history row, the run directory and the alerts
are identical); a check with ``workers >= 1`` launches its own ``TorchTrainer`` from inside its
task, the way Tune trials do. Nothing here imports the CLI or the jobs layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from mine_dist.distributed.train import RESERVED_CPUS


def plan_concurrency(workers: list[int], requested: int | None, total_cpus: float | None) -> int:
    """How many checks run at once.

    ``requested`` (the spec's ``concurrent`` or ``--concurrent``) wins, capped at the number of
    checks. Otherwise, without a Ray cluster (``total_cpus`` None) one at a time; with one, as many
    as fit when every Ray worker, or in-process check, gets a CPU and ``RESERVED_CPUS`` stay free.
    """
    if not workers:
        return 1
    if requested is not None:
        return max(1, min(requested, len(workers)))
    if total_cpus is None:
        return 1
    per_check = max(1, max(workers))
    return max(1, min(len(workers), int(math.floor((total_cpus - RESERVED_CPUS) / per_check))))


def task_resources(workers: int, n: int, total_cpus: float) -> tuple[float, float | None]:
    """(CPUs for the check's task, CPUs per Ray Train worker) when ``n`` checks share the cluster.

    An in-process check (``workers == 0``) trains inside its task: it takes a CPU (less when more
    checks were asked for than there are CPUs, so they still run side by side). A Ray Train check's
    task only waits on its trainer (0 CPUs); its workers share what ``RESERVED_CPUS`` leaves.
    """
    if workers == 0:
        return min(1.0, total_cpus / n), None
    return 0.0, max(0.1, min(1.0, (total_cpus - RESERVED_CPUS) / (n * workers)))


def run_checks(run_one: Callable, on_error: Callable, pending: list, requested: int | None, log,
               label: str = "") -> dict:
    """Run ``pending`` = [(check, cfg, h_z, prev)] on Ray (started here or joined), as many at once as
    :func:`plan_concurrency` allows; returns {check name: (history row, alerts)}.

    ``run_one(check, cfg, h_z, prev, cpus_per_worker)`` estimates one check and records it (it runs
    inside a Ray task, so it must be picklable); ``on_error(check, cfg, h_z, message)`` records a
    check whose task itself died. With a concurrency of 1 the checks run one by one in this process.
    """
    import ray

    from mine_dist.distributed.pool import run_all
    from mine_dist.distributed.runtime import ensure_ray

    ensure_ray()
    total = float(ray.cluster_resources().get("CPU", 1.0))
    n = plan_concurrency([c.workers for c, *_ in pending], requested, total)
    if n <= 1:
        return {c.name: run_one(c, cfg, h_z, prev) for c, cfg, h_z, prev in pending}
    log(f"[{label}] {len(pending)} check(s), {n} at a time on Ray ({total:g} CPUs)")
    calls = []
    for c, cfg, h_z, prev in pending:
        cpus, cpw = task_resources(c.workers, n, total)
        calls.append((c.name, (c, cfg, h_z, prev, cpw), {"num_cpus": cpus, "name": f"audit-check-{c.name}"}))
    done = run_all(run_one, calls, n)
    out = {}
    for c, cfg, h_z, _ in pending:
        ok, value = done[c.name]
        out[c.name] = value if ok else (on_error(c, cfg, h_z, f"check task failed: {value}"), [])
    return out

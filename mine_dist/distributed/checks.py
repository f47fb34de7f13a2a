"""Running an audit's checks concurrently on Ray: one Ray task per check.

Each task runs the same ``mine_dist.cli._run_check`` the sequential path runs in the driver (so
the history row, the run directory and the alerts are identical); a check with ``workers >= 1``
launches its own ``TorchTrainer`` from inside its task, the way Tune trials do.
"""

from __future__ import annotations

import math

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


def _run_check_task(args, audit_name, slot, check, cfg, h_z, prev, cpus_per_worker):
    from mine_dist.cli import _run_check

    return _run_check(args, audit_name, slot, check, cfg, h_z, prev, cpus_per_worker=cpus_per_worker)


def run_checks(args, audit_name: str, slot: str, pending: list, requested: int | None, log) -> dict:
    """Run ``pending`` = [(check, cfg, h_z, prev)] on Ray (started here or joined); returns
    {check name: (history row, alerts)}. With a concurrency of 1 they run one by one in this process."""
    import ray

    from mine_dist.cli import _error_row, _run_checks_here
    from mine_dist.distributed.runtime import ensure_ray

    ensure_ray()
    total = float(ray.cluster_resources().get("CPU", 1.0))
    workers = [c.workers for c, *_ in pending]
    n = plan_concurrency(workers, requested, total)
    if n <= 1:
        return _run_checks_here(args, audit_name, slot, pending)

    log(f"[{audit_name}/{slot}] {len(pending)} check(s), {n} at a time on Ray ({total:g} CPUs)")
    task = ray.remote(max_retries=0)(_run_check_task)
    queue, running, out = list(pending), {}, {}
    while queue or running:
        while queue and len(running) < n:
            c, cfg, h_z, prev = queue.pop(0)
            cpus, cpw = task_resources(c.workers, n, total)
            ref = task.options(num_cpus=cpus, name=f"audit-check-{c.name}").remote(args, audit_name, slot, c, cfg,
                                                                                    h_z, prev, cpw)
            running[ref] = (c, cfg, h_z)
        ready, _ = ray.wait(list(running), num_returns=1)
        c, cfg, h_z = running.pop(ready[0])
        try:
            out[c.name] = ray.get(ready[0])
        except Exception as e:  # noqa: BLE001 - the task itself died (node lost, OOM): record it, go on
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            out[c.name] = (_error_row(args, audit_name, slot, c, cfg, h_z, f"check task failed: {msg}"), [])
    return out


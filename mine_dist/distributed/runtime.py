"""Starting or joining Ray, the one place that decides how."""

from __future__ import annotations

import os


def ensure_ray(**kwargs) -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (as under ``ray job submit``), else start a
    private local Ray. ``address="local"`` avoids a stale ``ray_current_cluster`` file making a
    bare ``ray.init()`` retry a dead head forever."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    address = os.environ.get("RAY_ADDRESS") or "local"
    # Ray's own INFO logs (every checkpoint, every dataset execution) drown the run's progress
    # lines; MINE_DIST_RAY_LOG_LEVEL=INFO brings them back.
    level = os.environ.get("MINE_DIST_RAY_LOG_LEVEL", "WARNING")
    opts = {"include_dashboard": True, "log_to_driver": True,
            "logging_config": ray.LoggingConfig(log_level=level), **kwargs}
    if address != "local":
        opts.pop("include_dashboard")
    ray.init(address=address, **opts)

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

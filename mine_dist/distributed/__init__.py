"""Ray at the edges: Ray Data input, Ray Train data-parallel MINE, Tune sweeps, a task pool.

The only package that imports ray (lazily, inside the functions that need it); it never imports
``mine_dist.cli`` or ``mine_dist.jobs``.
"""

from mine_dist.distributed.options import RayOptions

__all__ = ["RayOptions"]

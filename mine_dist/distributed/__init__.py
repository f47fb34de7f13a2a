"""Ray at the edges: Ray Data input, Ray Train data-parallel MINE. The only package importing ray."""

from mine_dist.distributed.train import run_distributed

__all__ = ["run_distributed"]

"""Cross-process reductions of the estimator's sufficient statistics.

The estimator never talks to ``torch.distributed`` itself: it receives a :class:`Collective`.
:data:`LOCAL` is the single-process no-op; :class:`TorchDistributed` reduces over the default
process group (gloo on CPU, NCCL on GPU), as set up by Ray Train or ``torchrun``.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.distributed as dist


class Collective(Protocol):
    world_size: int

    def logsumexp_count(self, lse: float, n: int) -> tuple[float, int]:
        """Global ``(logsumexp, count)`` from every rank's local pair."""

    def mean(self, values: list[float]) -> list[float]:
        """Element-wise mean of a list of floats over ranks."""

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's ``(B, ...)`` tensor stacked in rank order, ``(world_size * B, ...)``,
        differentiable: the gradient each rank receives is its own rows' slice of the gradient
        it computed, which is complete when every rank computes the same global loss."""


class Local:
    """Single process: every reduction is the identity."""

    world_size = 1

    def logsumexp_count(self, lse: float, n: int) -> tuple[float, int]:
        return lse, n

    def mean(self, values: list[float]) -> list[float]:
        return list(values)

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return t


LOCAL = Local()


class TorchDistributed:
    """Reductions over the default ``torch.distributed`` process group.

    ``logsumexp_count`` all-gathers each rank's pair (2 numbers per rank) in float64 and combines
    them in log space, so the result is exact for any spread of scores and identical on all ranks.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("TorchDistributed needs an initialized torch.distributed process group")
        self.world_size = dist.get_world_size()
        self.device = torch.device(device)

    def logsumexp_count(self, lse: float, n: int) -> tuple[float, int]:
        mine = torch.tensor([lse, float(n)], dtype=torch.float64, device=self.device)
        parts = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(parts, mine)
        allv = torch.stack(parts).cpu()
        return float(torch.logsumexp(allv[:, 0], 0)), int(round(float(allv[:, 1].sum())))

    def mean(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return (t / self.world_size).cpu().tolist()

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return _GatherRows.apply(t)


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 whose backward keeps this rank's slice of the incoming gradient.

    Used where every rank evaluates the same global loss on the gathered rows (the separable
    critic's global negative pool): the gradient a rank computes for its own rows then already
    holds every rank's contribution, so no collective is needed in backward (which gloo's
    reduce-scatter would not support). Needs the same number of rows on every rank.
    """

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.contiguous()
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, t)
        ctx.rank, ctx.rows = dist.get_rank(), t.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def collective_for_current_process(device: torch.device | str = "cpu") -> Collective:
    """``TorchDistributed`` when a process group with more than one rank exists, else ``LOCAL``."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return TorchDistributed(device)
    return LOCAL


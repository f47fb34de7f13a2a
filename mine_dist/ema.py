"""The moving average behind MINE's bias-corrected gradient, as explicit log-space state.

The DV bound's minibatch gradient

    G_B = E_B[grad T(joint)] - E_B[e^T grad T(marg)] / E_B[e^T(marg)]

is biased because the denominator is a batch mean. MINE (sec. 3.2) replaces the denominator by an
exponential moving average of ``mean(exp(t_marg))`` over steps. Here that average is kept as
``log_value`` (so large scores never overflow) together with the number of updates, and is read
debiased like Adam's moments: ``log_value - log(1 - (1 - rate)**count)``. The first read therefore
equals the first batch value exactly (not a 1/rate-times inflated one, and not an arbitrary
initial 1.0).

Workers synchronize *sufficient statistics*: each contributes ``(logsumexp(t_marg), len(t_marg))``
and a reduction (see :mod:`mine_dist.sync`) combines them, so every rank applies the same update
and holds the same state without a broadcast.

References:
    Belghazi et al., "Mutual Information Neural Estimation", ICML 2018, sec. 3.2.
    Kingma & Ba, "Adam", ICLR 2015, sec. 3 (initialization bias correction).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

Reduce = Callable[[float, int], "tuple[float, int]"]
"""Maps a rank's ``(logsumexp, count)`` to the global ``(logsumexp, count)``."""


class EMAState(NamedTuple):
    """Log-space EMA of mean(exp(t_marg)). ``count == 0`` means no update yet."""

    log_value: float = -math.inf
    count: int = 0

    def to_dict(self) -> dict:
        return {"log_value": self.log_value, "count": self.count}

    @classmethod
    def from_dict(cls, d: dict) -> "EMAState":
        return cls(float(d["log_value"]), int(d["count"]))


def _check_rate(rate: float) -> None:
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"ema rate must be in (0, 1]; got {rate}")


def batch_statistic(t_marg: torch.Tensor) -> tuple[float, int]:
    """A rank's sufficient statistic ``(logsumexp(t_marg), numel)`` as Python numbers.

    Args:
        t_marg: (M,) marginal scores of this rank's batch.
    """
    return float(torch.logsumexp(t_marg.detach().reshape(-1), 0)), int(t_marg.numel())


def update(
    state: EMAState, log_sum_exp: float, n: int, rate: float, reduce: Reduce | None = None
) -> EMAState:
    """One EMA step with the (optionally reduced) batch statistic.

    ``value <- (1 - rate) * value + rate * batch_mean`` evaluated in log space.

    Args:
        state: current state.
        log_sum_exp: logsumexp of this rank's marginal scores.
        n: number of marginal scores on this rank (> 0).
        rate: weight of the new batch, in (0, 1]. MINE reproductions use 0.01.
        reduce: combines ranks' statistics; ``None`` for a single process.
    """
    _check_rate(rate)
    if reduce is not None:
        log_sum_exp, n = reduce(log_sum_exp, n)
    if n <= 0:
        raise ValueError(f"ema update needs at least one marginal score; got n={n}")
    batch = log_sum_exp - math.log(n)
    if not math.isfinite(batch):
        raise FloatingPointError(f"marginal term log mean exp(T) is {batch}; critic scores diverged")
    new = math.log(rate) + batch
    if state.count > 0 and rate < 1.0:
        old = math.log1p(-rate) + state.log_value
        hi, lo = (old, new) if old > new else (new, old)
        new = hi + math.log1p(math.exp(lo - hi))  # logaddexp
    return EMAState(new, state.count + 1)


def read(state: EMAState, rate: float) -> float:
    """The debiased log of the moving average; raises before the first update."""
    _check_rate(rate)
    if state.count == 0:
        raise ValueError("ema has no value before its first update")
    if rate >= 1.0:
        return state.log_value
    # log(1 - (1-rate)^count), stable for small rate * count.
    return state.log_value - math.log(-math.expm1(state.count * math.log1p(-rate)))


def corrected_objective(
    t_joint: torch.Tensor, t_marg: torch.Tensor, log_denominator: float
) -> torch.Tensor:
    """Surrogate whose gradient is MINE's bias-corrected DV gradient.

    ``mean(t_joint) - mean(exp(t_marg - log_denominator))`` with the denominator a constant.
    Its gradient is ``E[grad T_joint] - E[e^T grad T_marg] / ema``. It is linear in per-sample
    terms, so DDP's gradient averaging across equal-sized shards equals the gradient on the
    concatenated batch. Its *value* is not a bound; report :func:`mine_dist.bounds.dv` instead.

    Args:
        t_joint: (B,) joint scores.
        t_marg: (M,) marginal scores.
        log_denominator: the debiased log EMA (:func:`read`), treated as a constant.
    """
    return t_joint.mean() - torch.exp(t_marg - log_denominator).mean()

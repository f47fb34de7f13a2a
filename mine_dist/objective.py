"""Mutual information as a differentiable term of someone else's loss.

:class:`MutualInformation` owns a critic T(x, z), MINE's moving average and the critic's Adam
optimizer. Each training-mode call on a batch ``(x, z)``

1. takes ``config.critic_steps`` (default 1) gradient-ascent steps of the critic on the batch with
   the inputs detached, each one :func:`mine_dist.estimator.train_step`, the estimator's own step
   (the EMA statistic reduced by the injected :class:`~mine_dist.sync.Collective`, so every rank
   holds the same EMA);
2. scores the batch again with the updated critic, its parameters held constant, and returns a
   0-d tensor whose **value** is the bound on the (global) batch and whose **gradient** with respect
   to ``x`` and ``z`` is MINE's bias-corrected gradient,

       E_B[grad T(x_i, z_i)] - E_B[e^T grad T(x_i, z_j)] / EMA(E[e^T]),

   (for NWJ, the plain gradient of the bound, already unbiased). The caller adds it to its loss
   with the sign it needs: ``loss - beta * mi`` to maximize (a GAN's code and sample, MINE sec. 5.1),
   ``loss + beta * mi`` to minimize (an Information Bottleneck, sec. 5.3). In the second case the
   critic still maximizes the bound: the two play a min-max game, as in the paper.

In eval mode a call updates nothing (no critic step, no EMA update) and just returns the estimate.

Distributed use (DDP): build the module with ``collective=TorchDistributed()`` on every rank and keep
it **outside** the caller's DDP wrapper. The critic step then runs through a private
``DistributedDataParallel`` of the critic (rank 0's initial parameters are broadcast), and the
returned term is linear in per-sample terms with a globally synchronized denominator, so the
caller's DDP gradient average over equal-sized shards equals the gradient of the term on the
concatenated batch. ``tests/test_objective.py`` checks 2 gloo processes against 1 process.

References:
    Belghazi et al., "Mutual Information Neural Estimation", ICML 2018: sec. 3.2 (bias-corrected
    gradient), sec. 5.1 (maximizing MI against mode collapse), sec. 5.3 (Information Bottleneck),
    the appendix's adaptive gradient clipping.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import torch
from torch import nn

from mine_dist import bounds as B
from mine_dist import ema as E
from mine_dist.critics import CriticConfig, build_critic
from mine_dist.estimator import EstimatorConfig, train_step
from mine_dist.sync import LOCAL, Collective

OBJECTIVE_BOUNDS = ("mine", "mine-f")
"""``mine``: DV value, EMA-corrected gradient (the paper's default); ``mine-f``: NWJ."""


@dataclass(frozen=True)
class ObjectiveConfig:
    """How the MI term is estimated. Validated on construction.

    Attributes:
        bound: ``mine`` (Donsker-Varadhan with the EMA-corrected gradient) or ``mine-f`` (NWJ).
        critic: the critic architecture (:class:`~mine_dist.critics.CriticConfig`; its ``cca`` is
            not used here: the inputs change as the model trains, so no basis fit once on data applies).
        lr: the critic's Adam learning rate.
        ema_rate: weight of each new batch in the moving average of E[e^T] (paper: 0.01).
        seed: seeds the negative pairs (a random cyclic shift of z within the batch). Under DDP pass
            ``seed + rank``.
        critic_steps: critic updates per training-mode call, on the same batch (new negatives
            each time unless the caller fixes them). More than 1 helps the critic keep up when the
            caller minimizes the term and so works against it.
    """

    bound: str = "mine"
    critic: CriticConfig = field(default_factory=lambda: CriticConfig(width=128, depth=2))
    lr: float = 1e-4
    ema_rate: float = 0.01
    seed: int = 0
    critic_steps: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.critic, dict):
            object.__setattr__(self, "critic", CriticConfig(**self.critic))
        if self.bound not in OBJECTIVE_BOUNDS:
            raise ValueError(f"bound must be one of {OBJECTIVE_BOUNDS}; got {self.bound!r}")
        if not isinstance(self.critic, CriticConfig):
            raise ValueError(f"critic must be a CriticConfig; got {type(self.critic).__name__}")
        if isinstance(self.lr, bool) or not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0; got {self.lr!r}")
        if isinstance(self.ema_rate, bool) or not (isinstance(self.ema_rate, (int, float)) and 0 < self.ema_rate <= 1):
            raise ValueError(f"ema_rate must be in (0, 1]; got {self.ema_rate!r}")
        for name, lo in (("seed", 0), ("critic_steps", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}; got {v!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def step_config(self) -> EstimatorConfig:
        """The estimator config that :func:`~mine_dist.estimator.train_step` reads (bound, critic
        kind, lr, ema_rate; the rest are the estimator's defaults and unused by the step)."""
        return EstimatorConfig(bound=self.bound, critic=self.critic, lr=self.lr, ema_rate=self.ema_rate)


class MutualInformation(nn.Module):
    """A differentiable MINE estimate of I(X; Z) with its own critic, EMA and critic optimizer.

    Example::

        mi = MutualInformation(dim_x=2, dim_z=3, config=ObjectiveConfig())
        term = mi(generated, code)            # one critic step, then the estimate
        (gan_loss - beta * term).backward()   # maximize I(G(eps, c); c)

    The module steps its own critic: leave its parameters out of the caller's optimizer (and, under
    DDP, out of the caller's ``DistributedDataParallel``).

    Args:
        dim_x: width of ``x``. dim_z: width of ``z``.
        config: estimation options.
        collective: cross-rank reductions; ``LOCAL`` in one process, ``TorchDistributed()`` under
            DDP (then the critic step is data-parallel too).

    Attributes:
        ema: the moving-average state (:class:`~mine_dist.ema.EMAState`), part of ``state_dict``.
        critic_bound: the bound on the last training batch *before* its first critic step (nats).
    """

    def __init__(self, dim_x: int, dim_z: int, config: ObjectiveConfig | None = None,
                 collective: Collective = LOCAL):
        super().__init__()
        self.config = config or ObjectiveConfig()
        self.dim_x, self.dim_z = dim_x, dim_z
        self.critic = build_critic(dim_x, dim_z, replace(self.config.critic, cca=False))
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=self.config.lr)
        self.collective = collective
        self.ema = E.EMAState()
        self.critic_bound = math.nan
        self._step_cfg = self.config.step_config()
        self._gen = torch.Generator().manual_seed(self.config.seed)
        # The data-parallel view of the critic for its own step, kept out of the registered
        # submodules so state_dict keys are the same with and without DDP. Built on first use, after
        # the caller has moved the module to its device.
        self._ddp: nn.Module | None = None

    def forward(self, x: torch.Tensor, z: torch.Tensor, marg_index: torch.Tensor | int | None = None) -> torch.Tensor:
        """The estimate of I(X; Z) on this batch, differentiable with respect to ``x`` and ``z``.

        Args:
            x: (B, dim_x). z: (B, dim_z), paired row by row with ``x``; B >= 2 (per rank).
            marg_index: the negative pairing for joint critics, as in
                :meth:`~mine_dist.critics.JointCritic.forward` (default: a random cyclic shift).

        Returns:
            0-d tensor in nats: the global batch bound (DV or NWJ) as value, the bias-corrected
            gradient as gradient. The critic's parameters receive no gradient from it.
        """
        self._check(x, z)
        if self.training and not torch.is_grad_enabled():
            raise RuntimeError("a training-mode call takes a critic step and needs gradients enabled; "
                               "call .eval() first to only read the estimate under torch.no_grad()")
        fixed = marg_index is not None or self.config.critic.kind != "joint"
        for k in range(self.config.critic_steps if self.training else 0):
            if not fixed:
                marg_index = self._shift(x.shape[0])
            out = train_step(self._step_critic(), self.optimizer, self.ema, x.detach(), z.detach(),
                             self._step_cfg, self._gen, self.collective, marg_index=marg_index)
            self.ema = out.ema
            if k == 0:
                self.critic_bound = out.bound
        if not fixed and not self.training:
            marg_index = self._shift(x.shape[0])
        frozen = {name: p.detach() for name, p in self.critic.named_parameters()}
        t_joint, t_marg, _ = torch.func.functional_call(self.critic, frozen, (x, z), {"marg_index": marg_index})
        return self._estimate(t_joint, t_marg)

    def _estimate(self, t_joint: torch.Tensor, t_marg: torch.Tensor) -> torch.Tensor:
        """Global value with the local bias-corrected (linear, DDP-averageable) gradient."""
        if self.config.bound == "mine-f":
            surrogate = B.nwj(t_joint, t_marg)
            (value,) = self.collective.mean([float(surrogate.detach())])
        else:
            tj_local, lse = torch.stack([t_joint.detach().mean(), torch.logsumexp(t_marg.detach(), 0)]).tolist()
            glse, gn = self.collective.logsumexp_count(lse, t_marg.numel())
            (tj_mean,) = self.collective.mean([tj_local])
            log_batch = glse - math.log(gn)
            value = tj_mean - log_batch
            # Before any critic step (eval mode on a fresh module) the batch itself is the denominator,
            # which is also what the debiased EMA reads after its first update.
            log_den = E.read(self.ema, self.config.ema_rate) if self.ema.count else log_batch
            surrogate = E.corrected_objective(t_joint, t_marg, log_den)
        if not math.isfinite(value):
            raise FloatingPointError(
                f"the {self.config.bound} estimate on the batch is {value}; critic scores diverged "
                f"(lower lr, now {self.config.lr})"
            )
        return surrogate + (value - surrogate.detach())

    def _shift(self, b: int) -> int:
        # Batch rows are a random sample, so a random cyclic shift is a derangement (as in train_step).
        return int(torch.randint(1, b, (1,), generator=self._gen))

    def _step_critic(self) -> nn.Module:
        if self.collective.world_size == 1:
            return self.critic
        if self._ddp is None:
            from torch.nn.parallel import DistributedDataParallel

            dev = next(self.critic.parameters()).device
            ddp = DistributedDataParallel(self.critic, device_ids=[dev] if dev.type == "cuda" else None)
            object.__setattr__(self, "_ddp", ddp)  # not a registered submodule (see __init__)
        return self._ddp

    def _check(self, x: torch.Tensor, z: torch.Tensor) -> None:
        if x.ndim != 2 or z.ndim != 2 or x.shape[0] != z.shape[0] or x.shape[1] != self.dim_x or z.shape[1] != self.dim_z:
            raise ValueError(
                f"x and z must be (B, {self.dim_x}) and (B, {self.dim_z}) with the same B; "
                f"got {tuple(x.shape)} and {tuple(z.shape)}"
            )
        if x.shape[0] < 2:
            raise ValueError(f"batch must have at least 2 rows (negatives come from other rows); got {x.shape[0]}")

    def get_extra_state(self) -> dict:
        """EMA, critic optimizer and negative-sampling RNG, so a restored module continues exactly."""
        return {"ema": self.ema.to_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self._gen.get_state(), "config": self.config.to_dict()}

    def set_extra_state(self, state: dict) -> None:
        if state["config"] != self.config.to_dict():
            raise ValueError(
                f"state_dict was saved with config {state['config']}; this module has {self.config.to_dict()}"
            )
        self.ema = E.EMAState.from_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._gen.set_state(state["generator"])


# ----------------------------------------------------------------------------- adaptive clipping


def adaptive_clip(mi_grads: Sequence[torch.Tensor], main_grads: Sequence[torch.Tensor],
                  factor: float = 1.0) -> list[torch.Tensor]:
    """Scale the MI term's gradient so its norm is at most ``factor`` times the main loss's.

    ``g_a = min(||g_m||, factor * ||g_u||) * g_m / ||g_m||`` (MINE, appendix, "adaptive clipping", with
    ``factor = 1``), norms over all tensors together. The MI term then steers the update without
    ever dominating the main objective, whatever beta is. Returns new tensors.

    Args:
        mi_grads: the MI term's gradient, one tensor per parameter.
        main_grads: the main loss's gradient, the same shapes in the same order.
        factor: > 0, the allowed ratio of norms.
    """
    if isinstance(factor, bool) or not (isinstance(factor, (int, float)) and factor > 0 and math.isfinite(factor)):
        raise ValueError(f"factor must be a finite number > 0; got {factor!r}")
    if len(mi_grads) != len(main_grads) or any(a.shape != b.shape for a, b in zip(mi_grads, main_grads)):
        raise ValueError(
            f"mi_grads and main_grads must have the same shapes; got {[tuple(g.shape) for g in mi_grads]} "
            f"and {[tuple(g.shape) for g in main_grads]}"
        )
    if not mi_grads:
        return []
    mi_norm, main_norm = (torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gs]))
                          for gs in (mi_grads, main_grads))
    limit = factor * main_norm
    if mi_norm <= limit:
        return [g.clone() for g in mi_grads]
    return [g * (limit / mi_norm) for g in mi_grads]


def backward_with_adaptive_clip(main_loss: torch.Tensor, mi_loss: torch.Tensor,
                                params: Sequence[torch.Tensor], factor: float = 1.0) -> None:
    """Set ``p.grad = grad(main_loss) + adaptive_clip(grad(mi_loss), grad(main_loss), factor)``.

    ``mi_loss`` is the MI term with its sign and weight applied (e.g. ``-beta * mi``). Parameters
    that a loss does not reach get a zero gradient from it. Single process only: under DDP the
    two gradients would have to be all-reduced before their norms are compared (not provided).

    Args:
        main_loss: 0-d tensor. mi_loss: 0-d tensor. params: the parameters to update.
        factor: > 0, see :func:`adaptive_clip`.
    """
    params = list(params)
    g_u = torch.autograd.grad(main_loss, params, retain_graph=True, allow_unused=True)
    g_m = torch.autograd.grad(mi_loss, params, allow_unused=True)
    g_u = [torch.zeros_like(p) if g is None else g for g, p in zip(g_u, params)]
    g_m = [torch.zeros_like(p) if g is None else g for g, p in zip(g_m, params)]
    for p, u, a in zip(params, g_u, adaptive_clip(g_m, g_u, factor)):
        p.grad = u + a

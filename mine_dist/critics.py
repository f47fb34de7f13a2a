"""Critic networks T(x, z), built from a frozen config.

Two families:
    * ``joint``: an MLP on ``concat(x, z)``. Most expressive; each score costs one network
      evaluation, so marginal pairs come from a derangement of z within the batch (B pairs).
    * ``separable``: ``f(x) . g(z)`` with two MLP encoders. All ``B x B`` scores cost two encoder
      passes, so every off-diagonal pair is a free marginal sample (B*(B-1) pairs).

Every critic's ``forward(x, z, marg_index, matrix)`` returns ``(t_joint, t_marg, scores)``
following the score convention of :mod:`mine_dist.bounds`; ``scores`` is the ``(B, B)`` matrix
when one is computed (always for separable critics; for joint critics only when ``matrix=True``,
at ``B**2`` evaluations, which InfoNCE needs) and ``None`` otherwise. One forward computes joint
and marginal scores together, so DDP sees a single call per step.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

from mine_dist.bounds import offdiagonal

AUTO_WIDTH = "auto"
NARROW_INPUTS, NARROW_WIDTH, WIDE_WIDTH = 20, 128, 256
"""``width: auto``: WIDE_WIDTH hidden units when dx + dz > NARROW_INPUTS for an MLP that works
alone (a joint critic with ``cca: false``, a separable critic), else NARROW_WIDTH."""
ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
KINDS = ("joint", "separable", "classifier")


@dataclass(frozen=True)
class CriticConfig:
    """Architecture of the critic.

    Attributes:
        kind: ``joint`` (MLP on concat(x, z)), ``separable`` (f(x) . g(z)), or ``classifier``
            (log q(z | x) = log_softmax(f(x))[z] for a one-hot z: the critic of the ``ba`` bound).
        width: hidden units per layer, or ``auto`` (the default, :meth:`sized`): 128, except 256
            for wide inputs (dx + dz > 20) of an MLP that works alone (a joint critic with
            ``cca: false``, a separable critic). On the ground-truth suite the narrow tasks read
            the same or better at 128 for under half the step cost; without the CCA path the wide
            ones (25x25, 50x50) read 0.12-0.41 nats lower at 128 than at 256, with it (and for the
            classifier critic) the same or better at 128 on two seeds, for half the time
            (docs/benchmarks.md, "Defaults after issue 12, part 4").
        depth: number of hidden layers (>= 1).
        activation: one of ``relu, elu, gelu, silu, tanh``.
        embed_dim: output size of f and g for separable critics.
        quadratic: rank of a quadratic path beside a joint critic's MLP, ``||A v||^2 - ||B v||^2``
            on ``v = concat(x, z)`` with A, B of ``min(quadratic, dim v)`` rows (0: MLP only). The
            optimal critic of a Gaussian pair (and of a Gaussian copula after rank-gauss) is a
            quadratic form in v, which ReLU MLPs approximate poorly at high MI.
        cca: joint critics only. The critic reads x and z in their train rows' canonical
            correlation basis (a fixed invertible linear map, :mod:`mine_dist.cca`: I(X;Z) is
            unchanged) and adds a diagonal quadratic path ``sum_i a_i x'_i z'_i + b_i x'_i^2 +
            c_i z'_i^2`` on the canonical pairs that clear the noise edge, started at the Gaussian
            critic of the train correlations scaled by the factor (1, 0.5, 0.25, 0.1 or 0) that
            reads best on the validation rows (``Trainer.choose_start``). Only when x and z are both
            numeric (no one-hot columns). On the ground-truth suite this took the mean absolute
            error from 0.31 to about 0.10 nats (gauss-50x50, high MI, the 256-d embedding; tables
            in docs/benchmarks.md). The basis is set from data by the estimator; a critic built
            without it (``build_critic`` alone) starts from the identity and a zero path.
    """

    kind: str = "joint"
    width: int | str = AUTO_WIDTH
    depth: int = 2
    activation: str = "relu"
    embed_dim: int = 32
    quadratic: int = 0
    cca: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"critic kind must be one of {KINDS}; got {self.kind!r}")
        for name in ("width", "depth", "embed_dim"):
            v = getattr(self, name)
            if name == "width" and v == AUTO_WIDTH:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"critic {name} must be an int >= 1; got {v!r}")
        if not isinstance(self.cca, bool):
            raise ValueError(f"critic cca must be true or false; got {self.cca!r}")
        if not isinstance(self.quadratic, int) or isinstance(self.quadratic, bool) or self.quadratic < 0:
            raise ValueError(f"critic quadratic must be an int >= 0 (a rank; 0 turns it off); got {self.quadratic!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"critic activation must be one of {tuple(ACTIVATIONS)}; got {self.activation!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    def sized(self, dx: int, dz: int) -> "CriticConfig":
        """This config with ``width: auto`` decided for inputs of dimension ``dx`` and ``dz``."""
        if self.width != AUTO_WIDTH:
            return self
        # The Gaussian path of the CCA basis (and a classifier's softmax) carry what the wide MLP
        # was there for: at 128 the suite's wide tasks read the same or better, on two seeds.
        wide_mlp = dx + dz > NARROW_INPUTS and (self.kind == "separable" or (self.kind == "joint" and not self.cca))
        return replace(self, width=WIDE_WIDTH if wide_mlp else NARROW_WIDTH)


def mlp(d_in: int, d_out: int, cfg: CriticConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(cfg.depth):
        layers += [nn.Linear(d, cfg.width), ACTIVATIONS[cfg.activation]()]
        d = cfg.width
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


class Quadratic(nn.Module):
    """``q(v) = ||A v||^2 - ||B v||^2``: any symmetric quadratic form of rank <= 2r on v (r rows
    each), started near 0 so that training begins from the MLP alone."""

    def __init__(self, d: int, rank: int):
        super().__init__()
        r = min(rank, d)
        self.proj = nn.Linear(d, 2 * r, bias=False)
        nn.init.normal_(self.proj.weight, std=0.01 / d ** 0.5)
        self.r = r

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        h = self.proj(v).square()
        return h[..., : self.r].sum(-1) - h[..., self.r:].sum(-1)


def _no_autocast(x: torch.Tensor):
    """Autocast off for this block when it is on (entering the context costs time every step)."""
    return torch.autocast(device_type=x.device.type, enabled=False) if torch.is_autocast_enabled(x.device.type) \
        else contextlib.nullcontext()


class CCABasis(nn.Module):
    """The fixed maps ``x' = (x - mx) ax^T``, ``z' = (z - mz) az^T`` (buffers: saved in checkpoints,
    not trained); the identity until :meth:`JointCritic.set_basis`. Computed in the inputs' precision
    even under autocast (a bf16 rotation would round every input to 3 digits)."""

    def __init__(self, dx: int, dz: int):
        super().__init__()
        self.register_buffer("ax", torch.eye(dx))
        self.register_buffer("mx", torch.zeros(dx))
        self.register_buffer("az", torch.eye(dz))
        self.register_buffer("mz", torch.zeros(dz))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with _no_autocast(x):
            return (x - self.mx) @ self.ax.T, (z - self.mz) @ self.az.T


class DiagQuadratic(nn.Module):
    """``q(x', z') = sum_i a_i x'_i z'_i + sum_j b_j x'_j^2 + sum_j c_j z'_j^2`` over the kept pairs
    (``keep`` buffers; i < min(dx, dz)): the optimal critic of a Gaussian pair in its CCA basis, up
    to a constant. Zero (and every pair kept) until :meth:`start`."""

    def __init__(self, dx: int, dz: int):
        super().__init__()
        self.dx, self.k = dx, min(dx, dz)
        self.a = nn.Parameter(torch.zeros(self.k))
        self.b = nn.Parameter(torch.zeros(dx))
        self.c = nn.Parameter(torch.zeros(dz))
        self.register_buffer("keep_x", torch.ones(dx))
        self.register_buffer("keep_z", torch.ones(dz))

    @torch.no_grad()
    def start(self, rho, pairs: int) -> None:
        """Keep the first ``pairs`` canonical pairs (their squares too; the rest are off) and start
        at the Gaussian critic of correlations ``rho``: a = r/(1-r^2), b = c = -r^2/(2(1-r^2))."""
        r = torch.as_tensor(np.asarray(rho), dtype=self.a.dtype).clamp(0.0, 0.999)[: self.k]
        self.a.copy_(r / (1 - r ** 2))
        self.b.zero_()[: self.k].copy_(-r ** 2 / (2 * (1 - r ** 2)))
        self.c.zero_()[: self.k].copy_(-r ** 2 / (2 * (1 - r ** 2)))
        self.keep_x.zero_()[:pairs] = 1.0
        self.keep_z.zero_()[:pairs] = 1.0

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        with _no_autocast(x):  # one matrix-vector product over [x'z', x'^2, z'^2]: fewer ops per step
            feats = torch.cat([x[..., : self.k] * z[..., : self.k], x.square(), z.square()], dim=-1)
            coef = torch.cat([self.a * self.keep_x[: self.k], self.b * self.keep_x, self.c * self.keep_z])
            return feats @ coef


class JointCritic(nn.Module):
    """T(x, z) = MLP(concat(x', z')) [+ the diagonal Gaussian path (x', z')] [+ a quadratic form of
    concat(x', z')], with (x', z') = (x, z) in the CCA basis when ``cfg.cca`` (else x, z)."""

    def __init__(self, dx: int, dz: int, cfg: CriticConfig):
        super().__init__()
        self.dx = dx
        self.net = mlp(dx + dz, 1, cfg)
        self.quad = Quadratic(dx + dz, cfg.quadratic) if cfg.quadratic else None
        self.basis = CCABasis(dx, dz) if cfg.cca else None
        self.diag = DiagQuadratic(dx, dz) if cfg.cca else None

    @torch.no_grad()
    def set_basis(self, basis) -> None:
        """Read inputs in ``basis`` (a :class:`mine_dist.cca.Basis` fit on train rows) and start the
        diagonal path at its Gaussian critic."""
        if self.basis is None:
            raise ValueError("this critic was built with cca: false")
        dev = self.basis.ax.device
        for name in ("ax", "mx", "az", "mz"):
            getattr(self.basis, name).copy_(torch.as_tensor(np.asarray(getattr(basis, name)), device=dev))
        self.diag.start(basis.rho, basis.pairs)

    def _score(self, v: torch.Tensor) -> torch.Tensor:
        t = self.net(v).squeeze(-1)
        if self.diag is not None:
            q = self.diag(v[..., : self.dx], v[..., self.dx:])  # in the inputs' precision, not autocast's
            t = t.to(q.dtype) + q
        return t if self.quad is None else t + self.quad(v)

    def _in(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x, z) if self.basis is None else self.basis(x, z)

    def pairs(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(n,) scores T(x_i, z_i) for row-aligned (n, dx) and (n, dz) inputs."""
        x, z = self._in(x, z)
        return self._score(torch.cat([x, z], dim=1))

    def forward(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        marg_index: torch.Tensor | int | None = None,
        matrix: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Scores for a batch.

        Args:
            x: (B, dx). z: (B, dz).
            marg_index: (B,) derangement, marginal pair i being (x_i, z[marg_index[i]]); or an int
                shift k in [1, B-1], pairing x_i with z[(i - k) mod B] (a cyclic derangement, as
                random as any other when batch rows are a random sample). Required unless
                ``matrix`` is true.
            matrix: evaluate all B*B pairs (InfoNCE); marginals are then the off-diagonal.
        """
        b = x.shape[0]
        x, z = self._in(x, z)
        if matrix:
            xx = x.unsqueeze(1).expand(b, b, x.shape[1])
            zz = z.unsqueeze(0).expand(b, b, z.shape[1])
            scores = self._score(torch.cat([xx, zz], dim=2))
            return scores.diagonal(), offdiagonal(scores), scores
        if marg_index is None:
            raise ValueError("JointCritic needs marg_index (a derangement of the batch) or matrix=True")
        zm = torch.roll(z, marg_index, 0) if isinstance(marg_index, int) else z.index_select(0, marg_index)
        xz = torch.cat([torch.cat([x, z], dim=1), torch.cat([x, zm], dim=1)])
        t = self._score(xz)
        return t[:b], t[b:], None


class SeparableCritic(nn.Module):
    """T(x, z) = f(x) . g(z): all B*B scores from two encoder passes."""

    def __init__(self, dx: int, dz: int, cfg: CriticConfig):
        super().__init__()
        self.f = mlp(dx, cfg.embed_dim, cfg)
        self.g = mlp(dz, cfg.embed_dim, cfg)

    def forward(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        marg_index: torch.Tensor | None = None,
        matrix: bool = True,
        gather=None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores for a batch; ``marg_index`` and ``matrix`` are ignored (all pairs are free).

        ``gather`` (a :meth:`~mine_dist.sync.Collective.gather_rows`) pools the encodings of every
        rank's batch first, so the scores are the global ``(N*B, N*B)`` matrix: every worker's rows
        are negatives for every other's, as in one process with an N-times batch.
        """
        fx, gz = self.f(x), self.g(z)
        if gather is not None:
            fx, gz = gather(fx), gather(gz)
        scores = fx @ gz.T
        return scores.diagonal(), offdiagonal(scores), scores


class ClassifierCritic(nn.Module):
    """log q(z | x) for a one-hot z of ``dz`` classes: an MLP from x to ``dz`` logits, read at z's
    class through a log-softmax. The Barber-Agakov bound (``ba``) adds H(Z) to its mean."""

    def __init__(self, dx: int, dz: int, cfg: CriticConfig):
        super().__init__()
        if dz < 2:
            raise ValueError(f"a classifier critic needs a one-hot z of >= 2 classes; got dz = {dz}")
        self.net = mlp(dx, dz, cfg)

    def pairs(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(n,) values log q(z_i | x_i) for one-hot rows ``z``."""
        return (torch.log_softmax(self.net(x), dim=1) * z).sum(1)

    def forward(self, x: torch.Tensor, z: torch.Tensor, marg_index=None, matrix: bool = False):
        """``(log q(z_i | x_i) (B,), z (B, dz), None)``: the one-hot labels stand where the other
        critics return marginal scores (the bound needs the batch's class counts, not pairs)."""
        return self.pairs(x, z), z, None


def build_critic(dx: int, dz: int, cfg: CriticConfig) -> nn.Module:
    """A freshly initialized critic for inputs of dimension ``dx`` and ``dz``."""
    for name, d in (("dx", dx), ("dz", dz)):
        if not isinstance(d, int) or d < 1:
            raise ValueError(f"critic input dimension {name} must be an int >= 1; got {d!r}")
    cfg = cfg.sized(dx, dz)
    return {"joint": JointCritic, "separable": SeparableCritic, "classifier": ClassifierCritic}[cfg.kind](dx, dz, cfg)


def derangement(b: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """A uniformly random single-cycle permutation of ``range(b)``: no index maps to itself.

    A plain random permutation leaves about one pair per batch in place, so one "marginal" sample
    is really a joint one; a b-cycle never does.
    """
    if b < 2:
        raise ValueError(f"a derangement needs b >= 2; got {b}")
    p = torch.randperm(b, generator=generator)
    d = torch.empty_like(p)
    d[p] = p.roll(-1)
    return d if device is None else d.to(device)

"""The single-process MINE estimator and the step function every runner shares.

``train_step`` is the one training step of the project: the in-process estimator below and the
Ray Train worker (:mod:`mine_dist.distributed`) both call it; the distributed run differs only by
the :class:`~mine_dist.sync.Collective` it passes (the EMA statistic is reduced across ranks) and
by DDP around the critic. Held-out scoring (``score_rows``) and the bound / interval arithmetic
(``bound_from_scores``, ``bootstrap_ci``) are likewise shared.

Protocol (DESIGN.md): rows are split deterministically into train / validation / test; inputs are
normalized with train statistics; the critic is trained on train, checked on validation every
``eval_every`` steps (best checkpoint kept, early stop after ``patience`` checks without
improvement), and the bound is reported on **test only**, with a 95% row-bootstrap interval.

References:
    Belghazi et al., "Mutual Information Neural Estimation", ICML 2018, Algorithm 1 and sec. 3.2.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import torch

from mine_dist import bounds as B
from mine_dist import ema as E
from mine_dist import normalize, split
from mine_dist.critics import CriticConfig, build_critic
from mine_dist.sync import LOCAL, Collective

LN2 = math.log(2.0)

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class EstimatorConfig:
    """Every hyperparameter of an estimate. Validated on construction.

    Attributes:
        bound: ``mine`` (DV + EMA-corrected gradient), ``mine-f`` (NWJ), ``infonce``, ``smile``,
            ``dv`` (DV with the plain, biased minibatch gradient).
        critic: the critic architecture.
        batch_size: joint samples per step (per worker in a distributed run).
        lr: Adam learning rate.
        steps: maximum training steps.
        ema_rate: weight of each new batch in MINE's moving average (paper reproductions: 0.01).
        smile_tau: SMILE clip threshold.
        eval_every: steps between validation checks.
        patience: validation checks without improvement before stopping (0 disables).
        val_fraction, test_fraction: shares of rows held out (deterministic split by row key).
        normalize: ``standard``, ``rank-gauss`` or ``none``.
        eval_negatives: marginal pairs per held-out test row for joint critics (separable critics
            and InfoNCE use every other row of the evaluation block).
        val_negatives: the same for the validation checks during training. Fewer than for the
            test estimate: a check runs every ``eval_every`` steps and only ranks checkpoints
            (the same rows and pairs every time), and with 16 negatives on 10,000 rows it cost
            ~20% of training time (docs/benchmarks.md).
        max_eval_rows: validation rows scored at each check (a fixed subsample when larger).
        bootstrap: resamples for the 95% interval.
        seed: seeds initialization, batch order and negative sampling.
        device: ``cpu``, ``cuda`` or ``auto``.
        precision: ``fp32``, or ``bf16``: the critic's forward pass in training runs under
            ``torch.autocast`` with bfloat16 (the bound, the EMA and the optimizer stay float32;
            validation and test scoring stay float32). For GPUs with bf16 units.
    """

    bound: str = "mine"
    critic: CriticConfig = field(default_factory=CriticConfig)
    batch_size: int = 512
    lr: float = 5e-4
    steps: int = 4000
    ema_rate: float = 0.01
    smile_tau: float = 5.0
    eval_every: int = 200
    patience: int = 5
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    normalize: str = "standard"
    eval_negatives: int = 16
    val_negatives: int = 4
    max_eval_rows: int = 10000
    bootstrap: int = 1000
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if isinstance(self.critic, dict):
            object.__setattr__(self, "critic", CriticConfig(**self.critic))
        if self.bound not in B.BOUNDS:
            raise ValueError(f"bound must be one of {B.BOUNDS}; got {self.bound!r}")
        ints = {"batch_size": 2, "steps": 1, "eval_every": 1, "patience": 0, "eval_negatives": 1, "val_negatives": 1,
                "max_eval_rows": 2, "bootstrap": 0, "seed": 0}
        for name, lo in ints.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}; got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0; got {self.lr!r}")
        if not 0 < self.ema_rate <= 1:
            raise ValueError(f"ema_rate must be in (0, 1]; got {self.ema_rate!r}")
        if not self.smile_tau > 0:
            raise ValueError(f"smile_tau must be > 0; got {self.smile_tau!r}")
        split.assign(np.zeros(0, np.uint64), self.val_fraction, self.test_fraction)
        if self.val_fraction <= 0 or self.test_fraction <= 0:
            raise ValueError(
                f"val_fraction and test_fraction must be > 0 (selection and reporting need held-out "
                f"rows); got {self.val_fraction} and {self.test_fraction}"
            )
        if self.normalize not in normalize.METHODS:
            raise ValueError(f"normalize must be one of {normalize.METHODS}; got {self.normalize!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device must be cpu, cuda or auto; got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {self.precision!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EstimatorConfig":
        """Build from a plain dict (e.g. a record's ``config``); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown estimator config key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


# ----------------------------------------------------------------------------- training step


@dataclass
class StepOutput:
    ema: E.EMAState
    bound: float  # the bound on this (global) batch, in nats


def train_step(
    critic: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: E.EMAState,
    x: torch.Tensor,
    z: torch.Tensor,
    cfg: EstimatorConfig,
    generator: torch.Generator,
    collective: Collective = LOCAL,
    marg_index: torch.Tensor | None = None,
) -> StepOutput:
    """One gradient-ascent step on the configured bound.

    For ``mine`` the EMA statistic is reduced by ``collective`` before the update, so every rank
    holds the same EMA; the loss is linear in per-sample terms, so DDP's averaged gradient equals
    the gradient on the concatenated global batch.

    Args:
        critic: the critic (possibly DDP-wrapped).
        optimizer: its optimizer.
        ema: the moving-average state (only used by ``mine``).
        x: (B, dx) batch. z: (B, dz) batch, paired row by row with x.
        cfg: configuration.
        generator: CPU generator for negative sampling (seed it with ``seed + rank``).
        collective: cross-rank reductions (``LOCAL`` in one process).
        marg_index: optional (B,) derangement (or int shift) to use instead of drawing one (tests).
    """
    joint_pairs = cfg.critic.kind == "joint" and cfg.bound != "infonce"
    if joint_pairs and marg_index is None:
        # Batch rows are a random sample, so a random cyclic shift is a derangement as good as a
        # uniform one, at a fraction of the cost of drawing a permutation every step.
        marg_index = int(torch.randint(1, x.shape[0], (1,), generator=generator))
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        t_joint, t_marg, scores = critic(x, z, marg_index=marg_index, matrix=cfg.bound == "infonce")
    if cfg.precision != "fp32":  # the bounds' exp / logsumexp in float32
        t_joint, t_marg = t_joint.float(), t_marg.float()
        scores = scores.float() if scores is not None else None
    if cfg.bound == "mine":
        # One host sync for both statistics; the log-space reduction happens on Python floats.
        tj_local, lse = torch.stack([t_joint.detach().mean(), torch.logsumexp(t_marg.detach(), 0)]).tolist()
        n = t_marg.numel()
        glse, gn = collective.logsumexp_count(lse, n)
        ema = E.update(ema, glse, gn, cfg.ema_rate)
        objective = E.corrected_objective(t_joint, t_marg, E.read(ema, cfg.ema_rate))
        (tj_mean,) = collective.mean([tj_local])
        value = tj_mean - (glse - math.log(gn))
    else:
        if cfg.bound == "dv":
            objective = B.dv(t_joint, t_marg)
        elif cfg.bound == "mine-f":
            objective = B.nwj(t_joint, t_marg)
        elif cfg.bound == "smile":
            objective = B.smile(t_joint, t_marg, cfg.smile_tau)
        else:
            objective = B.infonce(scores)
        (value,) = collective.mean([float(objective.detach())])
    if not math.isfinite(value):
        raise FloatingPointError(
            f"training diverged: the {cfg.bound} bound on the batch is {value}; "
            f"lower lr (now {cfg.lr}) or use bound=smile"
        )
    optimizer.zero_grad(set_to_none=True)
    (-objective).backward()
    optimizer.step()
    return StepOutput(ema, value)


# ----------------------------------------------------------------------------- held-out scoring


@torch.no_grad()
def score_rows(
    critic: torch.nn.Module, x: torch.Tensor, z: torch.Tensor, cfg: EstimatorConfig, seed: int,
    negatives: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Critic scores for held-out rows: ``(t_joint (n,), t_marg (n, K))`` as float64 numpy.

    ``critic`` is the bare module (not DDP-wrapped): scoring is local and gradient-free.

    Rows are shuffled with ``seed`` (so data sorted by z still gets honest negatives) and cut into
    blocks of about ``batch_size``; each row's K negatives are other rows of its block: all of them
    for separable critics and InfoNCE, else ``negatives`` (default ``cfg.eval_negatives``; the
    validation checks pass ``cfg.val_negatives``) distinct random ones.
    Rows that do not fill a block of 2 are dropped.
    """
    n = x.shape[0]
    nblocks = max(1, n // cfg.batch_size)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    tj_out, tm_out = [], []
    full = cfg.critic.kind == "separable" or cfg.bound == "infonce"
    for idx in torch.tensor_split(order, nblocks):
        m = idx.numel()
        if m < 2:
            continue
        xb, zb = x[idx], z[idx]
        if full:
            tj, _, s = critic(xb, zb, matrix=True)
            tm = s[~torch.eye(m, dtype=torch.bool, device=s.device)].reshape(m, m - 1)
        else:
            k = min(negatives or cfg.eval_negatives, m - 1)
            shifts = torch.randperm(m - 1, generator=g)[:k] + 1  # distinct offsets in 1..m-1
            ar = torch.arange(m, device=xb.device)
            zs = torch.cat([zb[torch.roll(ar, -s_)] for s_ in shifts.tolist()])
            tj = critic.pairs(xb, zb)
            tm = critic.pairs(xb.repeat(k, 1), zs).reshape(k, m).T
        tj_out.append(tj.double().cpu().numpy())
        tm_out.append(tm.double().cpu().numpy())
    # Blocks can differ in size by one row; pad negatives with -inf (exp(-inf) = 0 contributes
    # nothing) only for the full-block case, where K = m - 1 varies.
    kmax = max(t.shape[1] for t in tm_out)
    tm_pad = [np.pad(t, ((0, 0), (0, kmax - t.shape[1])), constant_values=-np.inf) for t in tm_out]
    return np.concatenate(tj_out), np.concatenate(tm_pad)


def _row_partition(tm: np.ndarray) -> np.ndarray:
    """Per-row sum of exp(t_marg) and count, shifted for stability: returns (n, 2) [sum, count]."""
    finite = np.isfinite(tm)
    return np.stack([np.where(finite, np.exp(np.where(finite, tm, 0.0)), 0.0).sum(1), finite.sum(1)], 1)


def bound_from_scores(bound: str, tj: np.ndarray, tm: np.ndarray, tau: float = 5.0) -> float:
    """The bound's value from held-out scores (``-inf`` entries of ``tm`` are padding).

    ``mine`` and ``dv`` report the DV bound; ``smile`` the DV bound with clipped partition
    scores; ``mine-f`` NWJ; ``infonce`` the per-row InfoNCE with the row's block as candidates.
    """
    return float(_bound_weighted(bound, tj, tm, tau, np.ones((1, tj.shape[0])))[0])


def _bound_weighted(bound: str, tj, tm, tau, w) -> np.ndarray:
    """Bound under row weights ``w`` (R, n) (bootstrap counts); returns (R,)."""
    wsum = w.sum(1)
    tj_mean = w @ tj / wsum
    if bound == "infonce":
        k = np.isfinite(tm).sum(1)
        allc = np.concatenate([tj[:, None], tm], 1)
        mx = allc.max(1)
        lse = mx + np.log(np.exp(allc - mx[:, None]).sum(1))
        terms = tj - lse + np.log(k + 1)
        return w @ terms / wsum
    if bound == "smile":
        tm = np.where(np.isfinite(tm), np.clip(tm, -tau, tau), -np.inf)
    if bound == "mine-f":
        finite = np.isfinite(tm)
        s = np.where(finite, np.exp(np.where(finite, tm, 0.0) - 1.0), 0.0).sum(1)
        return tj_mean - (w @ s) / (w @ finite.sum(1))
    # DV family: log of the pooled mean of exp over all marginal pairs, computed shifted.
    c = np.max(tm[np.isfinite(tm)])
    part = _row_partition(tm - c)
    return tj_mean - (np.log(w @ part[:, 0]) - np.log(w @ part[:, 1]) + c)


def bootstrap_ci(
    bound: str, tj: np.ndarray, tm: np.ndarray, tau: float, resamples: int, seed: int
) -> tuple[float, float]:
    """95% percentile interval from resampling held-out rows (with their negatives).

    Poisson(1) row weights (the standard large-n approximation of the multinomial bootstrap):
    O(rows) work per resample with small chunks, where multinomial draws over 500k rows took
    over a minute and a gigabyte."""
    if resamples == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    n = tj.shape[0]
    vals = []
    for start in range(0, resamples, 16):
        r = min(16, resamples - start)
        w = rng.poisson(1.0, size=(r, n)).astype(np.float64)
        vals.append(_bound_weighted(bound, tj, tm, tau, w))
    v = np.concatenate(vals)
    lo, hi = np.quantile(v, [0.025, 0.975])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------- result


@dataclass(frozen=True)
class MIEstimate:
    """An estimate on held-out test rows.

    Attributes:
        mi_nats, mi_bits: the bound on the test split, clipped at 0 (MI >= 0).
        ci95_nats, ci95_bits: 95% interval (``ci_method`` says how it was obtained), clipped at 0.
        bound_nats, bound_ci95_nats: the raw (unclipped) test bound and its interval.
        bound: which bound was trained and reported.
        cap_nats: the largest value the bound can take here (InfoNCE: log of the candidates),
            or None when uncapped.
        ceiling_nats: for the other bounds, log of the number of held-out marginal pairs: above
            it a held-out value cannot be certified from this sample (a high-confidence lower
            bound on MI from N samples is at most about log N; McAllester & Stratos, AISTATS 2020).
            Estimates above it come with a warning.
        warnings: what the reader must know before using the number (empty when nothing).
        n_train, n_val, n_test: rows per split. steps: steps taken. best_step: the step whose
            critic (best validation bound) produced the estimate.
        curves: per check: step, train (mean batch bound since the previous check), val, ema.
        normalization: how inputs were normalized (x and z).
        config: every hyperparameter and the seed.
    """

    mi_nats: float
    mi_bits: float
    ci95_nats: tuple[float, float]
    ci95_bits: tuple[float, float]
    bound_nats: float
    bound_ci95_nats: tuple[float, float]
    bound: str
    cap_nats: float | None
    n_train: int
    n_val: int
    n_test: int
    steps: int
    best_step: int
    stopped_early: bool
    ci_method: str
    train_wall_s: float
    curves: list = field(repr=False)
    normalization: dict = field(repr=False)
    config: dict = field(repr=False)
    ceiling_nats: float | None = None
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci95_nats"] = list(self.ci95_nats)
        d["ci95_bits"] = list(self.ci95_bits)
        d["bound_ci95_nats"] = list(self.bound_ci95_nats)
        return d


def _bits(v: float) -> float:
    return v / LN2


# ----------------------------------------------------------------------------- the estimator


def check_pair(x, z) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert an (x, z) pair to 2-D float64 arrays with the same number of rows."""
    out = []
    for name, a in (("x", x), ("z", z)):
        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().numpy()
        a = np.asarray(a)
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise TypeError(f"{name} must be numeric; got dtype {a.dtype}")
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise ValueError(f"{name} must have shape (n, d) or (n,); got shape {a.shape}")
        a = a.astype(np.float64)
        bad = ~np.isfinite(a)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(
                f"{name} has {int(bad.sum())} NaN/Inf value(s); first at row {r}, column {c} ({a[r, c]})"
            )
        out.append(a)
    if out[0].shape[0] != out[1].shape[0]:
        raise ValueError(
            f"x and z must have the same number of rows; got x {out[0].shape} and z {out[1].shape}"
        )
    return out[0], out[1]


class MINE:
    """Mutual information estimator: config in the constructor, data in :meth:`estimate`.

    Example:
        >>> est = MINE(EstimatorConfig(steps=500)).estimate(x, z)
        >>> est.mi_nats, est.ci95_nats
    """

    def __init__(self, config: EstimatorConfig | None = None):
        self.config = config or EstimatorConfig()

    def estimate(
        self,
        x,
        z,
        row_keys: np.ndarray | None = None,
        passthrough_x: np.ndarray | None = None,
        passthrough_z: np.ndarray | None = None,
        progress: bool = False,
    ) -> MIEstimate:
        """Estimate I(X; Z) from paired samples.

        Args:
            x: (n, dx) or (n,) array or tensor. z: (n, dz) or (n,), row-aligned with x.
            row_keys: (n,) integer keys deciding each row's split (default: row positions).
            passthrough_x, passthrough_z: bool masks of columns not to normalize (one-hot codes).
            progress: show a progress bar on stderr.

        Raises:
            ValueError / TypeError: bad shapes, dtypes, NaN/Inf, constant columns, too few rows.
        """
        cfg = self.config
        x, z = check_pair(x, z)
        n = x.shape[0]
        keys = np.arange(n, dtype=np.uint64) if row_keys is None else np.asarray(row_keys)
        if keys.shape != (n,):
            raise ValueError(f"row_keys must have shape ({n},); got {keys.shape}")
        which = split.assign(keys, cfg.val_fraction, cfg.test_fraction)
        tr, va, te = (np.flatnonzero(which == s) for s in (split.TRAIN, split.VAL, split.TEST))
        if tr.size < cfg.batch_size:
            raise ValueError(
                f"too few rows: {tr.size} train rows (of {n}) for batch_size {cfg.batch_size}; "
                f"need at least batch_size train rows, so use more data or a smaller batch_size"
            )
        if va.size < 2 or te.size < 2:
            raise ValueError(f"too few rows: {n} rows leave {va.size} validation and {te.size} test rows; need >= 2 each")
        nx = normalize.fit(cfg.normalize, x[tr], "x", passthrough_x)
        nz = normalize.fit(cfg.normalize, z[tr], "z", passthrough_z)
        dev = cfg.resolved_device()
        X = torch.from_numpy(nx.apply(x)).to(dev)
        Z = torch.from_numpy(nz.apply(z)).to(dev)
        trainer = Trainer(cfg, X.shape[1], Z.shape[1], dev)
        va_eval = va
        if va.size > cfg.max_eval_rows:
            va_eval = np.sort(np.random.default_rng(cfg.seed).choice(va, cfg.max_eval_rows, replace=False))
        Xv, Zv = X[va_eval], Z[va_eval]
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        tr_t = torch.from_numpy(tr)
        bar = _progress(cfg.steps, progress)

        def batches():
            while True:
                perm = tr_t[torch.randperm(tr_t.numel(), generator=gen)]
                for i in range(0, perm.numel() - cfg.batch_size + 1, cfg.batch_size):
                    idx = perm[i : i + cfg.batch_size].to(dev)
                    yield X[idx], Z[idx]

        for xb, zb in batches():
            trainer.step(xb, zb)
            if bar is not None:
                bar.update(1)
            if trainer.step_count % cfg.eval_every == 0 or trainer.step_count == cfg.steps:
                tj, tm = score_rows(trainer.critic, Xv, Zv, cfg, seed=cfg.seed + 7, negatives=cfg.val_negatives)
                val = bound_from_scores(cfg.bound, tj, tm, cfg.smile_tau)
                trainer.record_check(val)
                if bar is not None:
                    bar.set_postfix(train=f"{trainer.curves[-1]['train']:.3f}", val=f"{val:.3f}")
            if trainer.done():
                break
        if bar is not None:
            bar.close()
        wall = time.perf_counter() - t0
        trainer.restore_best()
        tj, tm = score_rows(trainer.critic, X[te], Z[te], cfg, seed=cfg.seed + 11)
        return finish_estimate(
            cfg, tj, tm, n_train=tr.size, n_val=va.size, steps=trainer.step_count,
            best_step=trainer.best_step, stopped_early=trainer.stopped_early, wall=wall,
            curves=trainer.curves, normalization={"x": nx.to_dict(), "z": nz.to_dict()},
        )


def sample_ceiling(tm: np.ndarray) -> float:
    """log of the number of held-out marginal pairs in ``tm`` (``-inf`` entries are padding): the
    most a held-out bound from these scores can certify (McAllester & Stratos, AISTATS 2020)."""
    return float(np.log(max(int(np.isfinite(tm).sum()), 1)))


def finish_estimate(cfg: EstimatorConfig, tj, tm, *, n_train, n_val, steps, best_step, stopped_early,
                    wall, curves, normalization) -> MIEstimate:
    """Turn held-out test scores into the reported :class:`MIEstimate`.

    MI is non-negative, so ``max(0, bound)`` is still a lower bound: the reported ``mi_nats`` and
    ``ci95_nats`` are clipped at 0, and the raw test bound and its interval are kept beside them
    (``bound_nats``, ``bound_ci95_nats``). A raw value below 0 means the critic found no dependence
    that generalizes to held-out rows.
    """
    raw = bound_from_scores(cfg.bound, tj, tm, cfg.smile_tau)
    lo, hi = bootstrap_ci(cfg.bound, tj, tm, cfg.smile_tau, cfg.bootstrap, cfg.seed + 13)
    mi, clo, chi = max(raw, 0.0), max(lo, 0.0), max(hi, 0.0)
    cap = float(np.log(np.isfinite(tm).sum(1).min() + 1)) if cfg.bound == "infonce" else None
    ceiling = None if cap is not None else sample_ceiling(tm)
    notes = []
    if ceiling is not None and raw > ceiling:
        notes.append(f"the estimate {raw:.2f} nats exceeds log(held-out marginal pairs) = {ceiling:.2f} nats, the "
                     f"most this test sample can certify (McAllester & Stratos 2020): it is not reliable; more "
                     f"test rows (--max-test-rows) or --eval-negatives raise the ceiling")
    if cfg.bound == "smile":
        notes.append("smile is not a strict lower bound (clipped partition term): it can exceed the true MI")
    return MIEstimate(
        mi_nats=mi, mi_bits=_bits(mi), ci95_nats=(clo, chi), ci95_bits=(_bits(clo), _bits(chi)),
        bound_nats=raw, bound_ci95_nats=(lo, hi),
        bound=cfg.bound, cap_nats=cap, n_train=int(n_train), n_val=int(n_val), n_test=int(tj.shape[0]),
        steps=int(steps), best_step=int(best_step), stopped_early=bool(stopped_early),
        ci_method=f"percentile bootstrap (Poisson weights) over test rows with their negatives, {cfg.bootstrap} resamples",
        train_wall_s=round(wall, 3), curves=curves, normalization=normalization, config=cfg.to_dict(),
        ceiling_nats=ceiling, warnings=notes,
    )


class Trainer:
    """Critic, optimizer, EMA and early-stopping state, advanced one batch at a time.

    The in-process estimator feeds it from memory; the Ray Train worker feeds it from a Ray Data
    shard with a distributed collective. ``state_dict`` / ``load_state_dict`` make it resumable.
    """

    def __init__(self, cfg: EstimatorConfig, dx: int, dz: int, device: torch.device,
                 collective: Collective = LOCAL, rank: int = 0, wrap=None):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)  # identical initial parameters on every rank
        critic = build_critic(dx, dz, cfg.critic).to(device)
        self.module = critic
        self.critic = wrap(critic) if wrap is not None else critic
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)
        self.ema = E.EMAState()
        self.collective = collective
        self.generator = torch.Generator().manual_seed(cfg.seed * 1000 + 17 + rank)
        self.step_count = 0
        self.curves: list[dict] = []
        self._train_sum = 0.0
        self._train_n = 0
        self.best_val = -math.inf
        self.best_step = 0
        self.best_state: dict | None = None
        self.bad_checks = 0
        self.stopped_early = False

    def step(self, x: torch.Tensor, z: torch.Tensor) -> float:
        out = train_step(self.critic, self.optimizer, self.ema, x, z, self.cfg, self.generator, self.collective)
        self.ema = out.ema
        self.step_count += 1
        self._train_sum += out.bound
        self._train_n += 1
        return out.bound

    def record_check(self, val: float) -> None:
        """Log a validation check; keep the best critic; count checks without improvement."""
        ema_log = E.read(self.ema, self.cfg.ema_rate) if self.ema.count else None
        self.curves.append({
            "step": self.step_count,
            "train": self._train_sum / max(self._train_n, 1),
            "val": val,
            "ema_log": ema_log,
        })
        self._train_sum, self._train_n = 0.0, 0
        if val > self.best_val:
            self.best_val, self.best_step, self.bad_checks = val, self.step_count, 0
            self.best_state = copy.deepcopy(self.module.state_dict())
        else:
            self.bad_checks += 1

    def done(self) -> bool:
        if self.step_count >= self.cfg.steps:
            return True
        if self.cfg.patience and self.bad_checks >= self.cfg.patience:
            self.stopped_early = True
            return True
        return False

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.module.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {
            "critic": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.to_dict(), "step": self.step_count, "curves": self.curves,
            "best_val": self.best_val, "best_step": self.best_step, "best_state": self.best_state,
            "bad_checks": self.bad_checks, "generator": self.generator.get_state(),
            "config": self.cfg.to_dict(),
        }

    def load_state_dict(self, st: dict) -> None:
        self.module.load_state_dict(st["critic"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.ema = E.EMAState.from_dict(st["ema"])
        self.step_count = int(st["step"])
        self.curves = list(st["curves"])
        self.best_val, self.best_step = float(st["best_val"]), int(st["best_step"])
        self.best_state = st["best_state"]
        self.bad_checks = int(st["bad_checks"])
        self.generator.set_state(st["generator"])


class _LineProgress:
    """Progress for logs (no TTY, e.g. a Ray job): one line per validation check."""

    def __init__(self, total: int):
        self.total, self.n, self.t0 = total, 0, time.perf_counter()

    def update(self, k: int) -> None:
        self.n += k

    def set_postfix(self, **kw) -> None:
        rate = self.n / max(time.perf_counter() - self.t0, 1e-9)
        extra = " ".join(f"{k} {v}" for k, v in kw.items())
        print(f"step {self.n}/{self.total} ({rate:.0f} steps/s) {extra}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    """A tqdm bar on a terminal, one log line per check otherwise, nothing when disabled."""
    if not enabled:
        return None
    if not sys.stderr.isatty():
        return _LineProgress(total)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="training", unit="step", dynamic_ncols=True, leave=False)


__all__ = [
    "EstimatorConfig", "MINE", "MIEstimate", "Trainer", "train_step", "score_rows",
    "bound_from_scores", "bootstrap_ci", "finish_estimate", "check_pair", "replace",
]

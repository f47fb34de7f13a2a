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
from mine_dist import cca, normalize, split
from mine_dist.critics import CriticConfig, build_critic
from mine_dist.sync import LOCAL, Collective

LN2 = math.log(2.0)

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class EstimatorConfig:
    """Every hyperparameter of an estimate. Validated on construction.

    Attributes:
        bound: ``auto`` (the default: ``ba`` when z is one categorical column, else ``mine``;
            :meth:`resolved`), ``mine`` (DV + EMA-corrected gradient), ``mine-f`` (NWJ),
            ``infonce``, ``smile``, ``dv`` (DV with the plain, biased minibatch gradient), ``ba``
            (Barber-Agakov: H(Z) - cross-entropy of a classifier critic; categorical z).
        critic: the critic architecture.
        batch_size: joint samples per step (per worker in a distributed run).
        lr: Adam learning rate.
        steps: maximum training steps.
        ema_rate: weight of each new batch in MINE's moving average (paper reproductions: 0.01).
        smile_tau: SMILE clip threshold.
        eval_every: steps between validation checks.
        patience: validation checks without improvement before stopping (0 disables).
        min_gain: a check counts as an improvement only when it beats the last counted one by
            ``min_gain`` standard errors of the check's own value (a 64-resample bootstrap of the
            validation rows); 0 counts any gain. The critic kept is still the best check's. The
            default 1.0 stopped the ground-truth suite's runs after 37% fewer steps in all
            with the same estimates (docs/benchmarks.md): gains smaller than the check's own noise
            no longer restart the patience.
        val_fraction, test_fraction: shares of rows held out (deterministic split by row key).
        normalize: ``rank-gauss`` (the default: each numeric coordinate through its train-split
            ranks to a standard normal; MI is invariant under such monotone maps, and heavy tails,
            which made the critic collapse under ``standard``, become Gaussian), ``standard`` or
            ``none``. One-hot (categorical) columns are always left as they are.
        eval_negatives: marginal pairs per held-out test row for joint critics (separable critics
            and InfoNCE use every other row of the evaluation block).
        val_negatives: the same for the validation checks during training. Fewer than for the
            test estimate: a check runs every ``eval_every`` steps and only ranks checkpoints
            (the same rows and pairs every time), and with 16 negatives on 10,000 rows it cost
            ~20% of training time (docs/benchmarks.md).
        max_eval_rows: validation rows scored at each check (a fixed subsample when larger).
        bootstrap: resamples for the 95% interval.
        seed: seeds initialization, batch order and negative sampling.
        replicates: critics trained (replicate r: :meth:`replicate`) and averaged; the interval
            then adds their spread (training variance) to test sampling. In-process they train one
            after another, on Ray side by side.
        split_seed: which train / validation assignment of the non-test rows (test rows fixed).
        device: ``cpu``, ``cuda`` or ``auto``.
        precision: ``fp32``, or ``bf16``: the critic's forward pass in training runs under
            ``torch.autocast`` with bfloat16 (the bound, the EMA and the optimizer stay float32;
            validation and test scoring stay float32). For GPUs with bf16 units.
    """

    bound: str = B.AUTO
    critic: CriticConfig = field(default_factory=CriticConfig)
    batch_size: int = 512
    lr: float = 5e-4
    steps: int = 4000
    ema_rate: float = 0.01
    smile_tau: float = 5.0
    eval_every: int = 200
    patience: int = 5
    min_gain: float = 1.0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    normalize: str = "rank-gauss"
    eval_negatives: int = 16
    val_negatives: int = 4
    max_eval_rows: int = 10000
    bootstrap: int = 1000
    seed: int = 0
    replicates: int = 1
    split_seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if isinstance(self.critic, dict):
            object.__setattr__(self, "critic", CriticConfig(**self.critic))
        if self.bound not in B.CHOICES:
            raise ValueError(f"bound must be one of {B.CHOICES}; got {self.bound!r}")
        if self.bound == "ba" and self.critic.kind == "joint":  # ba trains a classifier q(z|x)
            object.__setattr__(self, "critic", replace(self.critic, kind="classifier"))
        if self.bound == "ba" and self.critic.kind != "classifier":
            raise ValueError(f"bound ba trains a classifier critic; got critic kind {self.critic.kind!r}")
        if self.critic.kind == "classifier" and self.bound not in ("ba", B.AUTO):
            raise ValueError(f"critic kind classifier goes with bound ba; got bound {self.bound!r}")
        ints = {"batch_size": 2, "steps": 1, "eval_every": 1, "patience": 0, "eval_negatives": 1, "val_negatives": 1,
                "max_eval_rows": 2, "bootstrap": 0, "seed": 0, "replicates": 1, "split_seed": 0}
        for name, lo in ints.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}; got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0; got {self.lr!r}")
        if not 0 < self.ema_rate <= 1:
            raise ValueError(f"ema_rate must be in (0, 1]; got {self.ema_rate!r}")
        if isinstance(self.min_gain, bool) or not (isinstance(self.min_gain, (int, float)) and 0 <= self.min_gain < math.inf):
            raise ValueError(f"min_gain must be a finite number >= 0 (standard errors); got {self.min_gain!r}")
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

    def resolved(self, z_categorical: bool, z_what: str = "z is not",
                 dims: tuple[int, int] | None = None) -> "EstimatorConfig":
        """This config with ``bound: auto`` decided for the data (``ba`` for one categorical z
        column, else ``mine``; an ``auto`` classifier critic falls back to ``joint`` for ``mine``)
        and, given the critic's input ``dims`` (dx, dz after encoding), ``critic.width: auto`` too.

        Raises:
            ValueError: ``ba`` for a z that is not one categorical column.
        """
        bound = B.resolve(self.bound, z_categorical, z_what)
        critic = self.critic
        if bound != "ba" and critic.kind == "classifier":
            critic = replace(critic, kind="joint")
        if dims is not None:
            critic = critic.sized(*dims)
        return self if (bound, critic) == (self.bound, self.critic) else replace(self, bound=bound, critic=critic)

    def replicate(self, r: int) -> "EstimatorConfig":
        """Replicate r's config: seed + r and split_seed + r (new initialization, batch order and
        train / validation rows; the test rows never move), a single critic."""
        return replace(self, replicates=1, seed=self.seed + r, split_seed=self.split_seed + r)

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
    the gradient on the concatenated global batch. Separable critics all-gather their encodings
    (``collective.gather_rows``), so each rank's negatives are the whole global batch: N workers
    with batch B train exactly as one process with batch N*B (tests/test_sync_equivalence.py).

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
    bound = B.spec(cfg.bound)
    joint_pairs = cfg.critic.kind == "joint" and not bound.all_pairs
    if joint_pairs and marg_index is None:
        # Batch rows are a random sample, so a random cyclic shift is a derangement as good as a
        # uniform one, at a fraction of the cost of drawing a permutation every step.
        marg_index = int(torch.randint(1, x.shape[0], (1,), generator=generator))
    # Separable critics pool every rank's encodings (the global negative pool): each rank then
    # scores the whole global batch and every statistic is already global, so the reductions are
    # local and the loss is scaled by N to undo DDP's gradient average (each rank's gradient holds
    # only its own rows' encoder paths; together they sum to the global batch's gradient).
    pooled = cfg.critic.kind == "separable" and collective.world_size > 1
    extra = {"gather": collective.gather_rows} if pooled else {}
    scale = collective.world_size if pooled else 1
    if pooled:
        collective = LOCAL
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        t_joint, t_marg, scores = critic(x, z, marg_index=marg_index, matrix=bound.all_pairs, **extra)
    if cfg.precision != "fp32":  # the bounds' exp / logsumexp in float32
        t_joint, t_marg = t_joint.float(), t_marg.float()
        scores = scores.float() if scores is not None else None
    if bound.objective is None:  # mine: the EMA-corrected surrogate
        # One host sync for both statistics; the log-space reduction happens on Python floats.
        tj_local, lse = torch.stack([t_joint.detach().mean(), torch.logsumexp(t_marg.detach(), 0)]).tolist()
        n = t_marg.numel()
        glse, gn = collective.logsumexp_count(lse, n)
        ema = E.update(ema, glse, gn, cfg.ema_rate)
        objective = E.corrected_objective(t_joint, t_marg, E.read(ema, cfg.ema_rate))
        (tj_mean,) = collective.mean([tj_local])
        value = tj_mean - (glse - math.log(gn))
    else:
        objective = bound.objective(t_joint, t_marg, scores, cfg.smile_tau)
        (value,) = collective.mean([float(objective.detach())])
    if not math.isfinite(value):
        raise FloatingPointError(
            f"training diverged: the {cfg.bound} bound on the batch is {value}; "
            f"lower lr (now {cfg.lr}) or use bound=smile"
        )
    optimizer.zero_grad(set_to_none=True)
    (-scale * objective).backward()
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

    For ``ba`` (a classifier critic) the pair is ``(log q(z_i | x_i) (n,), the one-hot z (n, K))``
    in row order: no negatives.

    Rows are shuffled with ``seed`` (so data sorted by z still gets honest negatives) and cut into
    blocks of about ``batch_size`` (:func:`block_sizes`); each row's K negatives are other rows of
    its block: all of them for separable critics and InfoNCE (column c of row r pairs x_r with
    z_c for c < r, else z_(c+1)), else ``negatives`` (default ``cfg.eval_negatives``; the
    validation checks pass ``cfg.val_negatives``): column c pairs x_r with z_((r+c+1) mod m).
    Rows are in shuffled order, blocks contiguous. The layout is a function of ``n`` and ``cfg``
    only, so :func:`bootstrap_ci` can find which rows' z each negative used (the rows are a
    random sample, so fixed offsets pair as randomly as random ones).
    """
    n = x.shape[0]
    if B.spec(cfg.bound).readout == "ba":  # per-row log q(z|x); the one-hot labels give H(Z)
        tj = torch.cat([critic.pairs(xb, zb) for xb, zb in zip(torch.split(x, 65536), torch.split(z, 65536))])
        return tj.double().cpu().numpy(), z.double().cpu().numpy()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    tj_out, tm_out = [], []
    full = _full_pairs(cfg)
    for idx in torch.split(order, block_sizes(n, cfg.batch_size).tolist()):
        m = idx.numel()
        if m < 2:
            continue
        xb, zb = x[idx], z[idx]
        if full:
            tj, _, s = critic(xb, zb, matrix=True)
            tm = s[~torch.eye(m, dtype=torch.bool, device=s.device)].reshape(m, m - 1)
        else:
            k = min(negatives or cfg.eval_negatives, m - 1)
            ar = torch.arange(m, device=xb.device)
            zs = torch.cat([zb[torch.roll(ar, -s_)] for s_ in range(1, k + 1)])
            tj = critic.pairs(xb, zb)
            tm = critic.pairs(xb.repeat(k, 1), zs).reshape(k, m).T
        tj_out.append(tj.double().cpu().numpy())
        tm_out.append(tm.double().cpu().numpy())
    # Blocks can differ in size by one row; pad negatives with -inf (exp(-inf) = 0 contributes
    # nothing) where K = m - 1 varies.
    kmax = max(t.shape[1] for t in tm_out)
    tm_pad = [np.pad(t, ((0, 0), (0, kmax - t.shape[1])), constant_values=-np.inf) for t in tm_out]
    return np.concatenate(tj_out), np.concatenate(tm_pad)


def check_value(cfg: EstimatorConfig, tj: np.ndarray, tm: np.ndarray) -> tuple[float, float]:
    """A validation check's value and, when ``cfg.min_gain`` asks for it, its standard error (a
    64-resample bootstrap of the checked rows, fixed seed; 0.0 otherwise)."""
    # One pass over the partition scores serves the value and the resamples (as in finish_estimate).
    terms = None if B.spec(cfg.bound).readout in ("infonce", "ba") else _marginal_terms(cfg.bound, tm, cfg.smile_tau)
    val = bound_from_scores(cfg.bound, tj, tm, cfg.smile_tau, terms)
    if not cfg.min_gain:
        return val, 0.0
    with np.errstate(invalid="ignore", divide="ignore"):  # a tiny check can draw an all-zero resample
        v = bootstrap_values(cfg.bound, tj, tm, cfg.smile_tau, 64, cfg.seed + 5, cfg.batch_size, _full_pairs(cfg),
                             terms)
    v = v[np.isfinite(v)]
    return val, float(np.std(v, ddof=1)) if v.size >= 2 else 0.0


def _full_pairs(cfg: EstimatorConfig) -> bool:
    """Whether held-out rows are scored against every other row of their block."""
    return cfg.critic.kind == "separable" or B.spec(cfg.bound).all_pairs


def block_sizes(n: int, batch_size: int) -> np.ndarray:
    """Sizes of the blocks :func:`score_rows` cuts ``n`` shuffled rows into: ``n // batch_size``
    blocks (at least one), the first ``n % blocks`` of them one row larger."""
    nb = max(1, n // batch_size)
    q, r = divmod(n, nb)
    return np.array([q + 1] * r + [q] * (nb - r), dtype=np.int64)


def bound_from_scores(bound: str, tj: np.ndarray, tm: np.ndarray, tau: float = 5.0, terms=None) -> float:
    """The bound's value from held-out scores (``-inf`` entries of ``tm`` are padding).

    ``mine`` and ``dv`` report the DV bound; ``smile`` the DV bound with clipped partition
    scores; ``mine-f`` NWJ; ``infonce`` the per-row InfoNCE with the row's block as candidates.
    ``terms``: this bound's ``_marginal_terms(bound, tm, tau)`` when already computed (one pass
    over the scores is shared by the value, the interval and the ESS).
    """
    if B.spec(bound).readout == "infonce":
        return float(np.mean(_infonce_terms(tj, tm)[0]))
    if B.spec(bound).readout == "ba":
        return float(tj.mean() + _entropy(tm.sum(0)))
    e, shift = terms or _marginal_terms(bound, tm, tau)
    return float(_bound_of_sums(bound, tj.mean(), e.sum(), np.isfinite(tm).sum(), shift))


def _entropy(counts: np.ndarray) -> np.ndarray:
    """Plug-in entropy (nats) of class counts ``(..., K)``, possibly weighted (resamples x K)."""
    counts = np.asarray(counts, dtype=np.float64)
    p = counts / counts.sum(-1, keepdims=True)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), -1)


def _marginal_terms(bound: str, tm: np.ndarray, tau: float) -> tuple[np.ndarray, float]:
    """Per-pair terms of the partition function, ``(e (n, K), shift)``: exp(t - shift) for the DV
    family (SMILE: t clipped to +-tau), exp(t - 1 - shift) for NWJ; 0 on padding (exp(-inf))."""
    spec = B.spec(bound)
    if spec.clipped:
        tm = np.where(np.isfinite(tm), np.clip(tm, -tau, tau), -np.inf)
    offset = 1.0 if spec.readout == "nwj" else 0.0
    shift = float(np.max(tm)) - offset
    e = np.subtract(tm, shift + offset)
    return np.exp(e, out=e), shift


def _bound_of_sums(bound: str, tj_mean, e_sum, count, shift):
    """The DV family / NWJ value from the joint mean and the (shifted) partition sum and count;
    works on arrays of resampled sums too."""
    if B.spec(bound).readout == "nwj":
        return tj_mean - np.exp(shift) * e_sum / count
    return tj_mean - (np.log(e_sum) - np.log(count) + shift)


def _infonce_terms(tj: np.ndarray, tm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row InfoNCE terms (n,), the joint candidate's softmax weight (n,), and the negatives'
    softmax weights (n, K), the row's block (joint pair included) being its candidates."""
    k = np.isfinite(tm).sum(1)
    allc = np.concatenate([tj[:, None], tm], 1)
    mx = allc.max(1)
    p = np.exp(allc - mx[:, None])
    tot = p.sum(1)
    terms = tj - (mx + np.log(tot)) + np.log(k + 1)
    p /= tot[:, None]
    return terms, p[:, 0], p[:, 1:]


def _in_layout(k: int, sizes: np.ndarray, full: bool) -> bool:
    """Whether K columns of negatives fit score_rows' layout for these block sizes."""
    return k == int(sizes.max()) - 1 if full else 1 <= k <= int(sizes.max()) - 1


def _z_side_sums(v: np.ndarray, sizes: np.ndarray, full: bool) -> np.ndarray:
    """For per-pair values ``v`` (n, K) in the layout of :func:`score_rows` (0 on padding), the sum
    over the pairs that used each row's z: (n,). Row sums are the x side; this is the other."""
    n = v.shape[0]
    out = np.zeros(n)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    if not _in_layout(v.shape[1], sizes, full):
        raise ValueError(f"marginal scores of shape {v.shape} are not in score_rows' layout for blocks of "
                         f"{sorted(set(sizes.tolist()))} rows ({'all other rows' if full else 'K offsets'} as negatives)")
    if not full:
        k = v.shape[1]
        for m in np.unique(sizes):  # at most two block sizes: one vectorized pass each
            rows = np.concatenate([np.arange(s, s + m) for s in starts[sizes == m]])
            local = rows - np.repeat(starts[sizes == m], m)
            partner = rows[:, None] - local[:, None] + (local[:, None] + np.arange(1, k + 1)) % m
            out += np.bincount(partner.ravel(), v[rows].ravel(), minlength=n)
        return out
    off = ~np.eye(int(sizes.max()), dtype=bool)
    for s, m in zip(starts.tolist(), sizes.tolist()):
        mat = np.zeros((m, m))
        mat[off[:m, :m]] = v[s:s + m, : m - 1].ravel()
        out[s:s + m] = mat.sum(0)
    return out


def marginal_ess(bound: str, tm: np.ndarray, tau: float = 5.0, terms=None) -> float | None:
    """Effective sample size of the normalized partition weights over the held-out marginal pairs,
    ``(sum e)^2 / sum e^2`` with ``e = exp(t_marg)`` as the bound's readout uses it (SMILE: clipped;
    None for InfoNCE, whose per-row normalizers are bounded by its cap). When a few pairs carry most
    of the weight, the held-out mean of e^T is decided by the tail the sample happened to contain:
    the DV / NWJ value then reads high and its interval is too narrow (docs/benchmarks.md)."""
    if B.spec(bound).readout in ("infonce", "ba"):
        return None
    e, _ = terms or _marginal_terms(bound, tm, tau)
    return float(e.sum() ** 2 / np.einsum("ij,ij->", e, e))


def _row_statistics(bound: str, tj, tm, tau, sizes: np.ndarray, full: bool, terms=None) -> tuple[np.ndarray, float]:
    """Per-row columns whose weighted sums give a resampled bound, and the exponent shift.

    The marginal pair (x_i, z_j) depends on two rows, so a resample weights it by both rows'
    weights. To first order the product weight ``w_i w_j`` is ``w_i + w_j - 1``: the pair's term
    is then counted in row i's sum (its x) and in row j's (its z). Columns: DV family / NWJ
    ``[1, t_joint, x-side + z-side partition terms, their counts]``; InfoNCE ``[1, term, z-side
    influence]`` (the first-order effect of re-weighting row j as a candidate in every row's
    normalizer: sum_i 1/(k_i + 1) - p_ij, the joint candidate included).
    """
    ones = np.ones_like(tj)
    if B.spec(bound).readout == "infonce":
        terms, p_joint, p_neg = _infonce_terms(tj, tm)
        q = np.where(np.isfinite(tm), 1.0 / (np.isfinite(tm).sum(1, keepdims=True) + 1) - p_neg, 0.0)
        own = 1.0 / (np.isfinite(tm).sum(1) + 1) - p_joint
        return np.stack([ones, terms, _z_side_sums(q, sizes, full) + own], 1), 0.0
    e, shift = terms or _marginal_terms(bound, tm, tau)
    # In both layouts a row's z is used by as many negatives as the row has (K offsets, or the
    # other m - 1 rows of its block), so the row's pair count is twice its negatives.
    counts = 2.0 * np.isfinite(tm).sum(1)
    return np.stack([ones, tj, e.sum(1) + _z_side_sums(e, sizes, full), counts], 1), shift


def _resampled_bounds(bound: str, stats: np.ndarray, shift: float, w: np.ndarray) -> np.ndarray:
    """Bounds (R,) under row weights ``w`` (R, n), from :func:`_row_statistics`."""
    sums, tot = w @ stats, stats.sum(0)  # (R, columns), (columns,); tot[0] = rows
    if B.spec(bound).readout == "infonce":
        return sums[:, 1] / sums[:, 0] + (sums[:, 2] - tot[2]) / tot[0]
    # sum_i w_i (x-side + z-side) minus the unweighted total: sum over pairs of (w_i + w_j - 1) e_ij.
    # In a far tail the linear weights could push the sum to <= 0; floor it (the ESS warning fires there).
    e_sum = np.maximum(sums[:, 2] - tot[2] / 2, 1e-12 * tot[2])
    count = sums[:, 3] - tot[3] / 2
    return _bound_of_sums(bound, sums[:, 1] / sums[:, 0], e_sum, count, shift)


def bootstrap_ci(
    bound: str, tj: np.ndarray, tm: np.ndarray, tau: float, resamples: int, seed: int,
    batch_size: int | None = None, full: bool = False, terms=None,
) -> tuple[float, float, float]:
    """95% percentile interval and one-sided 95% lower limit ``(lo, hi, lower)`` for the bound
    (the quantiles of :func:`bootstrap_values`)."""
    return _limits(bootstrap_values(bound, tj, tm, tau, resamples, seed, batch_size, full, terms))


def _limits(v: np.ndarray | None) -> tuple[float, float, float]:
    """(2.5%, 97.5%, 5%) quantiles of resampled bounds; NaNs without resamples."""
    if v is None or v.size == 0:
        return (math.nan, math.nan, math.nan)
    lo, hi, lower = np.quantile(v, [0.025, 0.975, 0.05])
    return float(lo), float(hi), float(lower)


def bootstrap_values(
    bound: str, tj: np.ndarray, tm: np.ndarray, tau: float, resamples: int, seed: int,
    batch_size: int | None = None, full: bool = False, terms=None,
) -> np.ndarray | None:
    """The bound under ``resamples`` bootstrap re-weightings of the test rows: (R,) or None.

    The weights depend on ``seed`` and the number of rows only, so critics scored on the same
    rows in the same order (replicates) are re-weighted identically and their values average.

    Poisson(1) row weights (the large-n approximation of the multinomial bootstrap), O(rows) per
    resample. Each marginal pair is weighted by both of its rows (first order of the product
    weight w_i * w_j, the pigeonhole / product-weight bootstrap of Owen 2007 and Owen & Eckles
    2012): weighting a row's negatives by that row alone (the old interval) misses the variance
    from each z being shared by K other rows' negatives, and covered 79-89% (docs/benchmarks.md).

    Args:
        bound: the bound's name. tj: (n,) joint scores. tm: (n, K) marginal scores in the layout of
            :func:`score_rows` (``-inf`` is padding). tau: SMILE's clip. resamples: how many
            (0: no interval, NaNs). seed: the weights' seed.
        batch_size, full: the layout ``score_rows`` used (its ``cfg.batch_size`` and whether every
            other block row was a negative); ``batch_size=None`` treats negatives as belonging to
            their row only (the old row bootstrap, kept for comparison).
        terms: ``_marginal_terms(bound, tm, tau)`` when already computed.

    References:
        Owen, "The pigeonhole bootstrap", Ann. Appl. Stat. 2007; Owen & Eckles, "Bootstrapping
        data arrays of arbitrary order", Ann. Appl. Stat. 2012.
    """
    if resamples == 0:
        return None
    n = tj.shape[0]
    if B.spec(bound).readout == "ba":
        # Rows are independent (a classifier scores each row alone): the row bootstrap is exact;
        # each resample re-weights the mean log q and the label counts behind H(Z).
        stats, shift, resample = np.column_stack([np.ones_like(tj), tj, tm]), 0.0, _ba_bounds
    elif batch_size is None:
        stats, shift = _row_only_statistics(bound, tj, tm, tau, terms)
        resample = _row_only_bounds
    else:
        stats, shift = _row_statistics(bound, tj, tm, tau, block_sizes(n, batch_size), full, terms)
        if n > BOOTSTRAP_GROUPS:
            # Resample groups of rows i = g mod G instead of rows: the rows of a group lie in
            # different blocks (G > any block), so they share no pair and the group sums have the
            # rows' first-order variance, at O(G) per resample instead of O(n).
            stats = np.add.reduceat(stats[np.argsort(np.arange(n) % BOOTSTRAP_GROUPS, kind="stable")],
                                    np.arange(BOOTSTRAP_GROUPS) * (n // BOOTSTRAP_GROUPS)
                                    + np.minimum(np.arange(BOOTSTRAP_GROUPS), n % BOOTSTRAP_GROUPS), axis=0)
        resample = _resampled_bounds
    rng = np.random.default_rng(seed)
    return np.concatenate([resample(bound, stats, shift, _poisson1(rng, (min(16, resamples - start), stats.shape[0])))
                           for start in range(0, resamples, 16)])


BOOTSTRAP_GROUPS = 50_000
# Poisson(1) quantile table on 16-bit uniforms: one random byte pair and a lookup per weight,
# about 3x faster than Generator.poisson; probabilities are exact to 2^-16 (mean and variance
# within 1e-4 of 1).
_POISSON1 = np.searchsorted(np.cumsum([math.exp(-1) / math.factorial(k) for k in range(20)]),
                            (np.arange(65536) + 0.5) / 65536).astype(np.float64)


def _poisson1(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Poisson(1) bootstrap weights of ``shape``."""
    return _POISSON1[np.frombuffer(rng.bytes(2 * shape[0] * shape[1]), dtype=np.uint16).reshape(shape)]


def _row_only_statistics(bound: str, tj, tm, tau, terms=None) -> tuple[np.ndarray, float]:
    """The old row bootstrap's columns: each row's weight on its joint score and its own negatives."""
    ones = np.ones_like(tj)
    if B.spec(bound).readout == "infonce":
        return np.stack([ones, _infonce_terms(tj, tm)[0]], 1), 0.0
    e, shift = terms or _marginal_terms(bound, tm, tau)
    return np.stack([ones, tj, e.sum(1), np.isfinite(tm).sum(1)], 1), shift


def _ba_bounds(bound: str, stats: np.ndarray, shift: float, w: np.ndarray) -> np.ndarray:
    """BA under row weights ``w`` (R, n), from the columns ``[1, log q(z|x), one-hot z]``."""
    sums = w @ stats
    return sums[:, 1] / sums[:, 0] + _entropy(sums[:, 2:])


def _row_only_bounds(bound: str, stats: np.ndarray, shift: float, w: np.ndarray) -> np.ndarray:
    sums = w @ stats
    if B.spec(bound).readout == "infonce":
        return sums[:, 1] / sums[:, 0]
    return _bound_of_sums(bound, sums[:, 1] / sums[:, 0], sums[:, 2], sums[:, 3], shift)



# ----------------------------------------------------------------------------- result


@dataclass(frozen=True)
class MIEstimate:
    """An estimate on held-out test rows.

    Attributes:
        mi_nats, mi_bits: the bound on the test split, clipped at 0 (MI >= 0): a lower bound on
            I(X;Z) read on held-out rows, with the critic held fixed.
        lower95_nats, lower95_bits: one-sided 95% lower confidence limit of that bound, clipped at
            0. The critic's population bound is at most I(X;Z) (SMILE excepted), so this is also a
            95% lower confidence limit for I(X;Z), whatever the training variance.
        ci95_nats, ci95_bits: two-sided 95% interval of the critic's bound (``ci_method`` says how),
            clipped at 0. Its upper end is NOT an upper limit for I(X;Z): the bound can lie far below.
        bound_nats, bound_ci95_nats, bound_lower95_nats: the raw (unclipped) test bound and limits.
        bound: which bound was trained and reported.
        cap_nats: the largest value the bound can take here (InfoNCE: the mean over test rows of
            log(candidates), the value being the mean of per-row values), or None when uncapped.
        ceiling_nats: for the other bounds, log(test rows): no high-confidence lower bound on MI
            from N samples exceeds about log N (McAllester & Stratos, AISTATS 2020). Estimates above
            it come with a warning. A hard limit, reached late; ``marginal_ess`` warns earlier.
        marginal_ess: effective sample size of the normalized e^T weights over the held-out marginal
            pairs (None for InfoNCE); below ``MIN_ESS`` the value reads high and the interval is
            too narrow, and a warning says so.
        warnings: what the reader must know before using the number (empty when nothing): above
            the ceiling, readout unreliable (low ESS), not converged, overfit, SMILE not strict.
        n_train, n_val, n_test: rows per split. steps: steps taken. best_step: the step whose
            critic (best validation bound) produced the estimate.
        curves: per check: step, train (mean batch bound since the previous check), val, ema.
        normalization: how inputs were normalized (x and z).
        config: every hyperparameter and the seed.
        replicates: with ``config.replicates`` > 1, each replicate's seed, split_seed, value,
            interval, steps and warnings (the estimate is their mean); None for one critic.
        resamples: the raw bound under each bootstrap re-weighting (not in ``to_dict``).
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
    lower95_nats: float = math.nan
    lower95_bits: float = math.nan
    bound_lower95_nats: float = math.nan
    marginal_ess: float | None = None
    replicates: list | None = None
    resamples: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        d = asdict(replace(self, resamples=None))
        d.pop("resamples")
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
        checkpoints=None,
    ) -> MIEstimate:
        """Estimate I(X; Z) from paired samples.

        Args:
            x: (n, dx) or (n,) array or tensor. z: (n, dz) or (n,), row-aligned with x.
            row_keys: (n,) integer keys deciding each row's split (default: row positions).
            passthrough_x, passthrough_z: bool masks of columns not to normalize (one-hot codes).
            progress: show a progress bar on stderr.
            checkpoints: where training states go after every validation check and where a
                resumed run starts from: an object with ``load() -> dict | None`` and
                ``save(state, step)`` (e.g. :class:`mine_dist.rundir.InProcessCheckpoints`);
                None keeps none. A restored run continues from the saved step with a fresh pass
                over the train rows. Not with ``replicates`` > 1.

        Raises:
            ValueError / TypeError: bad shapes, dtypes, NaN/Inf, constant columns, too few rows.
        """
        x, z = check_pair(x, z)
        categorical = passthrough_z is not None and bool(np.all(passthrough_z)) and z.shape[1] >= 2 \
            and bool(np.all((z == 0) | (z == 1))) and bool(np.all(z.sum(1) == 1))
        cfg = self.config.resolved(categorical, "z is not (pass one-hot rows and passthrough_z)",
                                   dims=(x.shape[1], z.shape[1]))
        n = x.shape[0]
        keys = np.arange(n, dtype=np.uint64) if row_keys is None else np.asarray(row_keys)
        if keys.shape != (n,):
            raise ValueError(f"row_keys must have shape ({n},); got {keys.shape}")
        if cfg.replicates > 1:
            if checkpoints is not None:
                raise ValueError("checkpoints are not kept for replicates > 1 (each replicate would need its own)")
            return self._replicated(cfg, x, z, keys, passthrough_x, passthrough_z, progress)
        return self._estimate_one(cfg, x, z, keys, passthrough_x, passthrough_z, progress, checkpoints=checkpoints)

    def _replicated(self, cfg, x, z, keys, passthrough_x, passthrough_z, progress) -> MIEstimate:
        """K critics one after another (seed + r, split_seed + r), scored on the same test rows
        with the same row order and bootstrap weights, then combined (:func:`combine_replicates`)."""
        ests = []
        for r in range(cfg.replicates):
            cfg_r = cfg.replicate(r)
            if progress:
                print(f"replicate {r + 1}/{cfg.replicates} (seed {cfg_r.seed}, split_seed {cfg_r.split_seed})",
                      file=sys.stderr, flush=True)
            ests.append(self._estimate_one(cfg_r, x, z, keys, passthrough_x, passthrough_z, progress,
                                           score_seed=cfg.seed))
        return combine_replicates(cfg, ests)

    def _estimate_one(self, cfg, x, z, keys, passthrough_x, passthrough_z, progress, score_seed=None,
                      checkpoints=None) -> MIEstimate:
        n = x.shape[0]
        score_seed = cfg.seed if score_seed is None else score_seed
        which = split.assign(keys, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
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
        xn, zn = nx.apply(x), nz.apply(z)
        basis = fit_basis(cfg, xn, zn, tr, passthrough_x, passthrough_z)
        X = torch.from_numpy(xn).to(dev)
        Z = torch.from_numpy(zn).to(dev)
        del xn, zn
        trainer = Trainer(cfg, X.shape[1], Z.shape[1], dev, basis=basis)
        va_eval = va
        if va.size > cfg.max_eval_rows:
            va_eval = np.sort(np.random.default_rng(cfg.seed).choice(va, cfg.max_eval_rows, replace=False))
        Xv, Zv = X[va_eval], Z[va_eval]
        state = checkpoints.load() if checkpoints is not None else None
        if state is not None:
            trainer.load_state_dict(state)
        else:
            trainer.choose_start(Xv, Zv)
        t0 = time.perf_counter()
        # A restored run starts a fresh pass over the train rows, in an order of its own step.
        gen = torch.Generator().manual_seed(cfg.seed + 1 + trainer.step_count)
        tr_t = torch.from_numpy(tr)
        bar = _progress(cfg.steps, progress)
        if bar is not None and trainer.step_count:
            bar.update(min(trainer.step_count, cfg.steps))

        def batches():
            while True:
                perm = tr_t[torch.randperm(tr_t.numel(), generator=gen)]
                for i in range(0, perm.numel() - cfg.batch_size + 1, cfg.batch_size):
                    idx = perm[i : i + cfg.batch_size].to(dev)
                    yield X[idx], Z[idx]

        for xb, zb in batches():
            if trainer.done():  # at the top: a run restored at its end takes no step
                break
            trainer.step(xb, zb)
            if bar is not None:
                bar.update(1)
            if trainer.step_count % cfg.eval_every == 0 or trainer.step_count == cfg.steps:
                tj, tm = score_rows(trainer.critic, Xv, Zv, cfg, seed=cfg.seed + 7, negatives=cfg.val_negatives)
                trainer.record_check(*check_value(cfg, tj, tm))
                if checkpoints is not None:
                    checkpoints.save(trainer.state_dict(), trainer.step_count)
                if bar is not None:
                    bar.set_postfix(train=f"{trainer.curves[-1]['train']:.3f}", val=f"{trainer.curves[-1]['val']:.3f}")
        if bar is not None:
            bar.close()
        wall = time.perf_counter() - t0
        trainer.restore_best()
        tj, tm = score_rows(trainer.critic, X[te], Z[te], cfg, seed=score_seed + 11)
        return finish_estimate(
            cfg, tj, tm, n_train=tr.size, n_val=va.size, steps=trainer.step_count,
            best_step=trainer.best_step, stopped_early=trainer.stopped_early, wall=wall,
            curves=trainer.curves, normalization={"x": nx.to_dict(), "z": nz.to_dict()}, bootstrap_seed=score_seed + 13,
        )


def wants_basis(cfg: EstimatorConfig, passthrough_x: np.ndarray | None = None,
                passthrough_z: np.ndarray | None = None) -> bool:
    """Whether :func:`fit_basis` fits one: a joint critic with ``cca`` on and no one-hot columns."""
    return cfg.critic.kind == "joint" and cfg.critic.cca and not any(
        m is not None and np.any(m) for m in (passthrough_x, passthrough_z))


def fit_basis(cfg: EstimatorConfig, x: np.ndarray, z: np.ndarray, rows: np.ndarray | None = None,
              passthrough_x: np.ndarray | None = None, passthrough_z: np.ndarray | None = None):
    """The CCA basis (:mod:`mine_dist.cca`) of normalized train rows (``rows`` of ``x``, ``z``;
    None: all; a seeded sample of at most ``cca.FIT_MAX_ROWS``) for a joint critic with ``cca``
    on and numeric columns on both sides, else None. One-hot codes (``passthrough_*``) are not
    Gaussian-like in any basis: on the names example a DV check of an embedding against a one-hot
    gender read 0.02-0.06 nats lower with the basis than without."""
    if not wants_basis(cfg, passthrough_x, passthrough_z):
        return None
    rows = np.arange(x.shape[0]) if rows is None else np.asarray(rows)
    pick = cca.fit_rows(rows.size, cfg.seed)
    rows = rows if pick is None else rows[pick]
    return cca.fit(x[rows], z[rows])


def _reported(v: float, ceiling: float | None) -> float:
    """A reported value: clipped at 0 (MI >= 0) and at the sample ceiling log(test rows) (no
    held-out value above it is certifiable; a DV readout there overshoots when the marginal pairs
    miss the tail of e^T, so clipping only moves it toward any truth). ``bound_*`` keep the raw."""
    v = max(v, 0.0)
    return v if ceiling is None else min(v, ceiling)


def sample_ceiling(tm: np.ndarray) -> float:
    """log of the number of held-out rows scored in ``tm``: McAllester & Stratos (AISTATS 2020)
    show that no high-confidence lower bound on MI from N samples exceeds about log N, and N is
    the number of paired rows (the marginal pairs built from them are not independent samples)."""
    return float(np.log(max(int(tm.shape[0]), 1)))


# Warning thresholds, each measured (docs/benchmarks.md, "Coverage of the held-out interval"):
# with a fixed optimal critic, repetitions with ESS < MIN_ESS or a value above log(ESS) are those
# where the interval stops covering (the sample missed the tail that carries E[e^T]).
MIN_ESS = 100.0
# not converged: the best check is one of the last CONVERGE_LAST and beats every earlier check
# by more than max(RISE_NATS, RISE_SHARE * |best|) (on a plateau, records improve by less).
CONVERGE_LAST, RISE_NATS, RISE_SHARE = 3, 0.02, 0.01
# overfit: train bound minus validation bound at the selected check above max(GAP_NATS, GAP_SHARE * |val|).
GAP_NATS, GAP_SHARE = 0.25, 0.25


def readout_reliable(raw: float, ess: float | None) -> bool:
    """Whether the held-out readout can be believed: the partition term is carried by at least
    :data:`MIN_ESS` marginal pairs, and the value does not exceed log(ESS), the log of the effective
    number of pairs carrying it (the McAllester & Stratos limit, log N, with N the pairs that count).
    Always true for InfoNCE (``ess`` None), whose per-row normalizers are bounded by its cap."""
    return ess is None or (ess >= MIN_ESS and raw <= math.log(ess))


def readout_warnings(cfg: EstimatorConfig, raw: float, n_test: int, ess: float | None, pairs: int) -> list[str]:
    """Warnings about the held-out value itself: above log(test rows), or a partition term carried
    by a few marginal pairs (effective sample size below :data:`MIN_ESS`)."""
    notes = []
    ceiling = math.log(max(n_test, 1))
    if not B.spec(cfg.bound).capped and raw > ceiling:
        notes.append(f"the estimate {raw:.2f} nats exceeds log(test rows) = {ceiling:.2f} nats, the most {n_test} "
                     f"held-out rows can certify (McAllester & Stratos 2020): it is not reliable and is reported as "
                     f"{ceiling:.2f} (bound_nats keeps {raw:.2f}); use more test rows (--max-test-rows)")
    if not readout_reliable(raw, ess):
        why = f"< {MIN_ESS:.0f}" if ess < MIN_ESS else f"and the value {raw:.2f} exceeds log(ESS) = {math.log(ess):.2f}"
        notes.append(f"readout unreliable: the effective sample size of the e^T weights over the {pairs} held-out "
                     f"marginal pairs is {ess:.0f} ({why}): a few pairs decide the partition term, so the "
                     f"value tends to read high and its interval to be too narrow; use more test rows or read a "
                     f"lower MI (fewer or coarser features)")
    if not B.spec(cfg.bound).strict:
        notes.append(f"{cfg.bound} is not a strict lower bound (clipped partition term): it can exceed the true MI")
    return notes


def training_warnings(cfg: EstimatorConfig, curves: list, steps: int, best_step: int, stopped_early: bool) -> list[str]:
    """Warnings from the validation curve: *not converged* (the budget ran out while validation was
    still rising) and *overfit* (the critic's train bound well above its validation bound)."""
    notes = []
    checks = [c for c in curves if c.get("val") is not None and math.isfinite(c["val"])]
    if not checks:
        return notes
    vals = [c["val"] for c in checks]
    last = min(CONVERGE_LAST, len(checks))
    if not stopped_early and steps >= cfg.steps and best_step >= checks[-last]["step"]:
        best = max(vals)
        before = max(vals[:-last]) if len(vals) > last else -math.inf
        rise = best - before
        if rise > max(RISE_NATS, RISE_SHARE * abs(best)):
            since = f"+{rise:.3f} nats over the best before the last {last} checks" if math.isfinite(rise) else \
                "fewer checks than that"
            notes.append(f"not converged: the selected step {best_step} is within the last {last} checks of the "
                         f"{cfg.steps}-step budget and validation was still rising ({since}); raise --steps")
    at_best = [c for c in checks if c["step"] == best_step]
    if at_best and at_best[-1].get("train") is not None and math.isfinite(at_best[-1]["train"]):
        train, val = at_best[-1]["train"], at_best[-1]["val"]
        if train - val > max(GAP_NATS, GAP_SHARE * abs(val)):
            notes.append(f"overfit: at the selected step the train bound {train:.3f} exceeds the validation bound "
                         f"{val:.3f} by {train - val:.3f} nats: the critic fits its train rows better than new ones; "
                         f"use more rows, a smaller critic, or a lower --lr")
    return notes


def finish_estimate(cfg: EstimatorConfig, tj, tm, *, n_train, n_val, steps, best_step, stopped_early,
                    wall, curves, normalization, bootstrap_seed: int | None = None) -> MIEstimate:
    """Turn held-out test scores (in the layout of :func:`score_rows`) into the :class:`MIEstimate`.

    The value is a lower bound on I(X;Z) evaluated on held-out rows. MI is non-negative, so
    ``max(0, bound)`` is still one: ``mi_nats``, ``ci95_nats`` and ``lower95_nats`` are clipped at
    0, and for uncapped bounds also at ``ceiling_nats`` = log(test rows), the most those rows can
    certify; the raw test bound and its limits are kept beside them (``bound_nats``,
    ``bound_ci95_nats``, ``bound_lower95_nats``). A raw value below 0 means the critic found no
    dependence that generalizes to held-out rows.
    """
    spec = B.spec(cfg.bound)
    terms = None if spec.readout in ("infonce", "ba") else _marginal_terms(cfg.bound, tm, cfg.smile_tau)
    raw = bound_from_scores(cfg.bound, tj, tm, cfg.smile_tau, terms)
    sizes, full = block_sizes(tj.shape[0], cfg.batch_size), _full_pairs(cfg)
    # Scores not in score_rows' layout (built by hand) fall back to the row bootstrap, and say so.
    paired = spec.readout != "ba" and _in_layout(tm.shape[1], sizes, full)
    values = bootstrap_values(cfg.bound, tj, tm, cfg.smile_tau, cfg.bootstrap,
                              cfg.seed + 13 if bootstrap_seed is None else bootstrap_seed,
                              batch_size=cfg.batch_size if paired else None, full=full, terms=terms)
    lo, hi, lower = _limits(values)
    # InfoNCE averages per-row values, each at most log(its candidates): the cap is their mean.
    # BA is at most the plug-in H(Z) of the test labels.
    cap = None if not spec.capped else float(_entropy(tm.sum(0))) if spec.readout == "ba" else \
        float(np.mean(np.log(np.isfinite(tm).sum(1) + 1)))
    ceiling = None if cap is not None else sample_ceiling(tm)
    mi, clo, chi, clower = (_reported(v, ceiling) for v in (raw, lo, hi, lower))
    ess = marginal_ess(cfg.bound, tm, cfg.smile_tau, terms)
    notes = (readout_warnings(cfg, raw, int(tj.shape[0]), ess, int(np.isfinite(tm).sum()))
             + training_warnings(cfg, curves, steps, best_step, stopped_early))
    return MIEstimate(
        mi_nats=mi, mi_bits=_bits(mi), ci95_nats=(clo, chi), ci95_bits=(_bits(clo), _bits(chi)),
        bound_nats=raw, bound_ci95_nats=(lo, hi),
        bound=spec.name, cap_nats=cap, n_train=int(n_train), n_val=int(n_val), n_test=int(tj.shape[0]),
        steps=int(steps), best_step=int(best_step), stopped_early=bool(stopped_early),
        ci_method=(f"percentile bootstrap over test rows, {cfg.bootstrap} resamples of Poisson(1) row weights; "
                   + ("rows independent (a classifier scores each row alone): each weight applies to the row's "
                      "log q(z|x) and to its label's count in H(Z)" if spec.readout == "ba" else
                      "each marginal pair (x_i, z_j) weighted by both rows (w_i + w_j - 1, first order of w_i * w_j)"
                      if paired else "each row's weight on its own negatives only (scores not in score_rows' layout)")
                   + "; lower95 = the 5% quantile (one-sided). Test sampling only: the critic is held fixed"),
        train_wall_s=round(wall, 3), curves=curves, normalization=normalization, config=cfg.to_dict(),
        ceiling_nats=ceiling, warnings=notes, lower95_nats=clower, lower95_bits=_bits(clower),
        bound_lower95_nats=lower, marginal_ess=ess, resamples=values,
    )


# Student-t quantiles for 1..30 degrees of freedom (then the normal's), at 0.975 and 0.95.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
_T95 = (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796, 1.782, 1.771, 1.761,
        1.753, 1.746, 1.740, 1.734, 1.729, 1.725, 1.721, 1.717, 1.714, 1.711, 1.708, 1.706, 1.703, 1.701,
        1.699, 1.697)


def _t_quantile(p: float, df: int) -> float:
    """The Student-t quantile (p = 0.975 or 0.95): tabled to 30 df, then z + (z^3 + z) / (4 df)."""
    table, z = {0.975: (_T975, 1.959964), 0.95: (_T95, 1.644854)}[p]
    return table[df - 1] if df <= len(table) else z + (z ** 3 + z) / (4 * df)


def combine_replicates(cfg: EstimatorConfig, ests: list[MIEstimate]) -> MIEstimate:
    """The mean of K replicate estimates scored on the same test rows, with an interval for both
    sources of error.

    * Test sampling: every replicate was re-weighted by the same bootstrap weights (same rows, same
      order, same seed), so the mean of their resampled values is the resampled mean; its
      quantiles give its spread, the correlation between replicates included.
    * Training: the replicates differ in initialization, batch order and train / validation rows
      only; their sample standard deviation s over sqrt(K), with a Student-t quantile (K - 1 df),
      is the training error of the mean.

    The two are added in quadrature on each side: ``lo = m - sqrt((m - q2.5)^2 + (t.975 s / sqrt K)^2)``,
    likewise ``hi`` and the one-sided ``lower`` (q5, t.95). Replicates disagreeing beyond their own
    intervals (two values further apart than the sum of their half-widths) add an *unstable* warning.
    """
    k = len(ests)
    raw = np.array([e.bound_nats for e in ests])
    m = float(raw.mean())
    sd = float(raw.std(ddof=1)) if k > 1 else 0.0
    if all(e.resamples is not None for e in ests):
        v = np.mean([e.resamples for e in ests], axis=0)
        q_lo, q_hi, q_lower = _limits(v)
        mean_v = float(np.mean(v))
        # centre the resample quantiles on the mean: their offsets are the test-sampling half-widths
        d_lo, d_hi, d_lower = mean_v - q_lo, q_hi - mean_v, mean_v - q_lower
    else:
        v, d_lo, d_hi, d_lower = None, math.nan, math.nan, math.nan
    t975, t95 = (_t_quantile(0.975, k - 1), _t_quantile(0.95, k - 1)) if k > 1 else (0.0, 0.0)
    tr975, tr95 = t975 * sd / math.sqrt(k), t95 * sd / math.sqrt(k)
    lo = m - math.hypot(d_lo, tr975)
    hi = m + math.hypot(d_hi, tr975)
    lower = m - math.hypot(d_lower, tr95)
    halfw = [(e.bound_ci95_nats[1] - e.bound_ci95_nats[0]) / 2 for e in ests]
    notes: list[str] = []
    for e in ests:
        for w in e.warnings:
            if w not in notes:
                notes.append(w)
    worst = max(((abs(raw[i] - raw[j]) - halfw[i] - halfw[j], i, j) for i in range(k) for j in range(i + 1, k)),
                default=(-1.0, 0, 0))
    if worst[0] > 0:
        i, j = worst[1], worst[2]
        notes.append(f"unstable: replicates {i} and {j} disagree beyond their intervals ({raw[i]:.3f} vs {raw[j]:.3f} "
                     f"nats; between-replicate sd {sd:.3f}): training decides the number more than the test rows "
                     f"do; use more rows, more --steps, or more --replicates")
    first = ests[0]
    mi, clo, chi, clower = (_reported(v, first.ceiling_nats) for v in (m, lo, hi, lower))
    caps = [e.cap_nats for e in ests if e.cap_nats is not None]
    ess = [e.marginal_ess for e in ests if e.marginal_ess is not None]
    return replace(
        first, mi_nats=mi, mi_bits=_bits(mi), ci95_nats=(clo, chi), ci95_bits=(_bits(clo), _bits(chi)),
        bound_nats=m, bound_ci95_nats=(lo, hi), lower95_nats=clower, lower95_bits=_bits(clower),
        bound_lower95_nats=lower, cap_nats=float(np.mean(caps)) if caps else None,
        marginal_ess=float(min(ess)) if ess else None, warnings=notes, config=cfg.to_dict(),
        train_wall_s=round(sum(e.train_wall_s for e in ests), 3), resamples=v,
        ci_method=(f"mean of {k} replicates (seed + r, split_seed + r: different initialization, batch order and "
                   f"train/validation rows; the same test rows); test sampling: {first.ci_method.split('; lower95')[0]}, "
                   f"the same weights for every replicate, quantiles of the replicates' mean; training: "
                   f"t({k - 1}) quantile x between-replicate sd / sqrt({k}); the two added in quadrature on each side; "
                   f"lower95 likewise one-sided (5% quantile, t 0.95)"),
        replicates=[{"replicate": r, "seed": e.config["seed"], "split_seed": e.config["split_seed"],
                     "bound_nats": e.bound_nats, "bound_ci95_nats": list(e.bound_ci95_nats), "steps": e.steps,
                     "best_step": e.best_step, "n_train": e.n_train, "n_val": e.n_val, "warnings": e.warnings}
                    for r, e in enumerate(ests)],
    )


# Scales of the train correlations tried for the Gaussian path's start (Trainer.choose_start).
START_SHRINK = (1.0, 0.5, 0.25, 0.1, 0.0)


class Trainer:
    """Critic, optimizer, EMA and early-stopping state, advanced one batch at a time.

    The in-process estimator feeds it from memory; the Ray Train worker feeds it from a Ray Data
    shard with a distributed collective. ``state_dict`` / ``load_state_dict`` make it resumable.
    """

    def __init__(self, cfg: EstimatorConfig, dx: int, dz: int, device: torch.device,
                 collective: Collective = LOCAL, rank: int = 0, wrap=None, basis=None):
        cfg = cfg.resolved(False) if cfg.bound == B.AUTO else cfg  # no data here: auto is mine
        cfg = replace(cfg, critic=cfg.critic.sized(dx, dz))
        self.cfg = cfg
        torch.manual_seed(cfg.seed)  # identical initial parameters on every rank
        critic = build_critic(dx, dz, cfg.critic).to(device)
        self.basis = basis if getattr(critic, "basis", None) is not None else None
        if self.basis is not None:
            critic.set_basis(basis)  # the train rows' CCA basis (mine_dist.cca), the same on every rank
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
        self.gain_ref = -math.inf  # the last check that counted as an improvement
        self.stopped_early = False

    @torch.no_grad()
    def choose_start(self, xv: torch.Tensor, zv: torch.Tensor) -> float | None:
        """With a CCA basis: start the Gaussian path at the train correlations scaled by the factor
        of :data:`START_SHRINK` whose critic reads best on the validation rows, before any step.
        The full Gaussian start can be far off where the data is not Gaussian in that basis (two
        embeddings of the same names: train rho near 1 on hundreds of pairs, -20 nats held out);
        0 is the path at zero, the MLP alone. The same rows on every rank: the same choice."""
        if self.basis is None:
            return None
        best = None
        for s in START_SHRINK:
            self.module.diag.start(self.basis.rho * s, self.basis.pairs)
            tj, tm = score_rows(self.module, xv, zv, self.cfg, seed=self.cfg.seed + 7, negatives=self.cfg.val_negatives)
            v = check_value(self.cfg, tj, tm)[0]
            if math.isfinite(v) and (best is None or v > best[0]):
                best = (v, s)
        s = best[1] if best is not None else 0.0
        self.module.diag.start(self.basis.rho * s, self.basis.pairs)
        return s

    def step(self, x: torch.Tensor, z: torch.Tensor) -> float:
        out = train_step(self.critic, self.optimizer, self.ema, x, z, self.cfg, self.generator, self.collective)
        self.ema = out.ema
        self.step_count += 1
        self._train_sum += out.bound
        self._train_n += 1
        return out.bound

    def record_check(self, val: float, se: float = 0.0) -> None:
        """Log a validation check; keep the best critic; count checks without improvement (a gain
        of less than ``cfg.min_gain`` standard errors ``se`` over the last counted one is none)."""
        ema_log = E.read(self.ema, self.cfg.ema_rate) if self.ema.count else None
        self.curves.append({
            "step": self.step_count,
            "train": self._train_sum / max(self._train_n, 1),
            "val": val,
            "val_se": se,
            "ema_log": ema_log,
        })
        self._train_sum, self._train_n = 0.0, 0
        if val > self.best_val:
            self.best_val, self.best_step = val, self.step_count
            self.best_state = copy.deepcopy(self.module.state_dict())
        if val > self.gain_ref + self.cfg.min_gain * se:
            self.gain_ref, self.bad_checks = val, 0
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
            "bad_checks": self.bad_checks, "gain_ref": self.gain_ref, "generator": self.generator.get_state(),
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
        self.gain_ref = float(st.get("gain_ref", self.best_val))
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
    "bound_from_scores", "bootstrap_ci", "finish_estimate", "check_pair", "replace", "block_sizes",
    "marginal_ess", "sample_ceiling", "combine_replicates", "bootstrap_values", "readout_reliable", "readout_warnings", "training_warnings", "MIN_ESS",
]

"""Variational lower bounds on mutual information, as pure functions of critic scores.

Score convention (the whole module):
    * ``t_joint``: shape ``(B,)``, critic scores T(x_i, z_i) on samples of the joint P_XZ.
    * ``t_marg``: shape ``(M,)``, critic scores T(x_i, z_j) on samples of the product of
      marginals P_X x P_Z (pairs with i != j). ``M`` need not equal ``B``.
    * ``scores``: shape ``(B, B)``, the matrix S[i, j] = T(x_i, z_j); its diagonal is the joint,
      its off-diagonal the product of marginals. Used by InfoNCE, which needs every candidate.

Every function returns a 0-d tensor in nats, never mutates its inputs and never picks a device.

References:
    Belghazi et al., "Mutual Information Neural Estimation", ICML 2018 (MINE), eqs. 6 and 10.
    Nguyen, Wainwright, Jordan, "Estimating divergence functionals ...", IEEE T-IT 2010 (NWJ).
    van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018.
    Poole et al., "On Variational Bounds of Mutual Information", ICML 2019.
    Song & Ermon, "Understanding the Limitations of Variational MI Estimators", ICLR 2020 (SMILE).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def logmeanexp(t: torch.Tensor) -> torch.Tensor:
    """``log(mean(exp(t)))`` over all elements, computed stably via logsumexp.

    Args:
        t: any shape, at least one element.
    """
    if t.numel() == 0:
        raise ValueError("logmeanexp needs at least one score; got an empty tensor")
    return torch.logsumexp(t.reshape(-1), dim=0) - math.log(t.numel())


def offdiagonal(scores: torch.Tensor) -> torch.Tensor:
    """The ``B*(B-1)`` off-diagonal entries of a ``(B, B)`` score matrix, flattened."""
    _check_square(scores)
    b = scores.shape[0]
    mask = ~torch.eye(b, dtype=torch.bool, device=scores.device)
    return scores[mask]


def dv(t_joint: torch.Tensor, t_marg: torch.Tensor) -> torch.Tensor:
    """Donsker-Varadhan bound ``E_P[T] - log E_Q[e^T]`` (MINE paper, eq. 6).

    Its minibatch gradient is biased (the log of a batch mean); :mod:`mine_dist.ema` provides the
    paper's moving-average correction. The value itself is what MINE reports.

    Args:
        t_joint: (B,) scores on joint samples.
        t_marg: (M,) scores on product-of-marginals samples.
    """
    return t_joint.mean() - logmeanexp(t_marg)


def nwj(t_joint: torch.Tensor, t_marg: torch.Tensor) -> torch.Tensor:
    """NWJ / f-divergence bound ``E_P[T] - E_Q[e^(T-1)]`` (MINE-f; MINE paper, eq. 10).

    Unbiased minibatch gradient, looser than DV for a fixed T, variance grows as e^I.

    Args:
        t_joint: (B,) scores on joint samples.
        t_marg: (M,) scores on product-of-marginals samples.
    """
    return t_joint.mean() - torch.exp(t_marg - 1.0).mean()


def infonce(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE ``mean_i [S_ii - log mean_j exp S_ij]`` (van den Oord 2018; Poole 2019, eq. 12).

    Each positive competes with all B candidates in its row, so the bound can never exceed
    ``log B``: callers must report that cap.

    Args:
        scores: (B, B) matrix S[i, j] = T(x_i, z_j).
    """
    _check_square(scores)
    return (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean() + math.log(scores.shape[0])


def js_fgan(t_joint: torch.Tensor, t_marg: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon f-GAN objective ``E_P[-softplus(-T)] - E_Q[softplus(T)]``.

    Not a bound on MI; it is the training signal of SMILE (Song & Ermon 2020, sec. 4).
    """
    return -F.softplus(-t_joint).mean() - F.softplus(t_marg).mean()


def smile(t_joint: torch.Tensor, t_marg: torch.Tensor, tau: float = 5.0) -> torch.Tensor:
    """SMILE: the DV value with the partition term's scores clipped to ``[-tau, tau]``.

    The value returned is ``E_P[T] - log E_Q[e^clip(T)]``; its gradient is that of the JS
    objective (Song & Ermon 2020, eq. 17 and their reference code), which trains stably.

    Args:
        t_joint: (B,) scores on joint samples.
        t_marg: (M,) scores on product-of-marginals samples.
        tau: clip threshold, > 0. Smaller tau: lower variance, more bias.
    """
    if not tau > 0:
        raise ValueError(f"smile tau must be > 0; got {tau}")
    value = t_joint.mean() - logmeanexp(torch.clamp(t_marg, -tau, tau))
    js = js_fgan(t_joint, t_marg)
    return js + (value - js).detach()


def _check_square(scores: torch.Tensor) -> None:
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
        raise ValueError(
            f"scores must be a square (B, B) matrix with B >= 2; got shape {tuple(scores.shape)}"
        )


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Bound:
    """Everything the rest of mine-dist needs to know about one bound, in one place.

    Attributes:
        name: what users choose (``--bound``, a config's ``bound``).
        objective: ``(t_joint, t_marg, scores, tau) -> 0-d tensor``, the batch value whose gradient
            trains the critic; None for ``mine``, whose EMA-corrected surrogate needs the
            synchronized moving average (``estimator.train_step``).
        readout: the held-out value read from test scores: ``dv`` (E_P[T] - log E_Q[e^T]), ``nwj``
            (E_P[T] - E_Q[e^(T-1)]) or ``infonce`` (per-row, the row's block as candidates).
        clipped: the readout clips the partition scores to +-tau (SMILE).
        all_pairs: training and scoring need every pair of a block (the B x B matrix).
        capped: the value cannot exceed log(candidates); the record states the cap.
        strict: a lower bound on MI for any critic (SMILE's clipped value is not).
        sweepable: a sweep may select it (only strict bounds: a sweep rewards overshooting).
        summary: one line for help texts.
    """

    name: str
    objective: Callable | None
    readout: str
    clipped: bool = False
    all_pairs: bool = False
    capped: bool = False
    strict: bool = True
    sweepable: bool = True
    summary: str = ""


REGISTRY: dict[str, Bound] = {b.name: b for b in (
    Bound("mine", None, "dv", summary="DV with the paper's EMA-corrected gradient (the default)"),
    Bound("mine-f", lambda tj, tm, s, tau: nwj(tj, tm), "nwj", summary="NWJ (MINE-f): unbiased gradient, looser"),
    Bound("infonce", lambda tj, tm, s, tau: infonce(s), "infonce", all_pairs=True, capped=True,
          summary="InfoNCE: every candidate of a block; capped at log(candidates)"),
    Bound("smile", lambda tj, tm, s, tau: smile(tj, tm, tau), "dv", clipped=True, strict=False, sweepable=False,
          summary="SMILE: JS training, DV value with clipped partition scores; can overshoot"),
    Bound("dv", lambda tj, tm, s, tau: dv(tj, tm), "dv", summary="DV with the plain (biased) minibatch gradient"),
)}
BOUNDS = tuple(REGISTRY)
"""Names accepted wherever a bound is chosen. ``mine`` is DV with the EMA-corrected gradient."""


def spec(name: str) -> Bound:
    """The registry entry of ``name``.

    Raises:
        ValueError: not a known bound.
    """
    if name not in REGISTRY:
        raise ValueError(f"bound must be one of {BOUNDS}; got {name!r}")
    return REGISTRY[name]

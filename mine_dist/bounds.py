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


def plugin_entropy(counts: torch.Tensor) -> torch.Tensor:
    """Plug-in entropy ``-sum p log p`` (nats) of class counts ``(K,)`` (empty classes add 0)."""
    p = counts[counts > 0] / counts.sum()
    return -(p * torch.log(p)).sum()


def ba(log_q: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Barber-Agakov bound ``H(Z) - CE(q(z|x)) = H(Z) + E_P[log q(z|x)]`` for a categorical z
    (Barber & Agakov 2003; Poole et al. 2019, eq. 2): at most H(Z), and at most I(X;Z) for any
    classifier q because E[log q(z|x)] <= E[log p(z|x)]. H(Z) is the plug-in entropy of the rows'
    labels; the gradient is the classifier's (per-sample) log-likelihood.

    Args:
        log_q: (B,) log q(z_i | x_i). onehot: (B, K) one-hot labels z_i.
    """
    return log_q.mean() + plugin_entropy(onehot.sum(0)).detach()


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
            (E_P[T] - E_Q[e^(T-1)]), ``infonce`` (per-row, the row's block as candidates) or ``ba``
            (H(Z) of the test labels + the mean of log q(z|x); a classifier critic, no pairs).
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
    Bound("ba", lambda tj, tm, s, tau: ba(tj, tm), "ba", capped=True,
          summary="Barber-Agakov: H(Z) - cross-entropy of a classifier q(z|x); z one categorical column; capped at H(Z)"),
)}
BOUNDS = tuple(REGISTRY)
"""Names of the bounds. ``mine`` is DV with the EMA-corrected gradient."""
AUTO = "auto"
"""The default choice: ``ba`` when z is one categorical column, else ``mine`` (:func:`resolve`)."""
CHOICES = (AUTO, *BOUNDS)
"""Names accepted wherever a bound is chosen."""


def resolve(name: str, z_categorical: bool, z_what: str = "z is not") -> str:
    """The bound to train: ``auto`` becomes ``ba`` for a categorical z (a classifier reads the label
    directly: no marginal pairs, no e^T tail, capped at H(Z)) and ``mine`` otherwise.

    Raises:
        ValueError: ``ba`` for a z that is not one categorical column; an unknown name.
    """
    if name == AUTO:
        return "ba" if z_categorical else "mine"
    if spec(name).readout == "ba" and not z_categorical:
        raise ValueError(f"bound ba needs z to be one categorical column (a label); {z_what}: "
                         f"use --bound auto or mine")
    return name


def spec(name: str) -> Bound:
    """The registry entry of ``name`` (``auto``: ``mine``'s; :func:`resolve` decides it for data).

    Raises:
        ValueError: not a known bound.
    """
    if name == AUTO:  # where the data is not known (a batch of scores), auto can only be mine
        return REGISTRY["mine"]
    if name not in REGISTRY:
        raise ValueError(f"bound must be one of {CHOICES}; got {name!r}")
    return REGISTRY[name]

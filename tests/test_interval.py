"""The held-out interval (pairing-aware bootstrap), the readout diagnostics and the warnings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mine_dist.critics import CriticConfig
from mine_dist.estimator import (MIN_ESS, EstimatorConfig, _resampled_bounds, _row_statistics, block_sizes,
                                 bootstrap_ci, bound_from_scores, finish_estimate, marginal_ess, score_rows,
                                 training_warnings)

torch.set_num_threads(1)


class IndexCritic(torch.nn.Module):
    """T(x, z) = (x * 1000 + z) / 1e6 on row ids, so each score says which x and z it paired."""

    def pairs(self, x, z):
        return (x[..., 0] * 1000 + z[..., 0]) / 1e6

    def forward(self, x, z, marg_index=None, matrix=True):
        s = self.pairs(x.unsqueeze(1), z.unsqueeze(0))
        m = s.shape[0]
        return s.diagonal(), s[~torch.eye(m, dtype=torch.bool)].reshape(m, m - 1), s


def _partners(tj, tm):
    """(x row, z row) of every finite marginal score, decoded from IndexCritic's scores."""
    code = np.rint(tm * 1e6)
    fin = np.isfinite(tm)
    return np.rint(tj * 1e6 // 1000)[:, None].repeat(tm.shape[1], 1)[fin].astype(int), (code[fin] % 1000).astype(int)


@pytest.mark.parametrize("kind,bound", [("joint", "mine"), ("separable", "mine"), ("joint", "mine-f"),
                                        ("separable", "smile"), ("separable", "infonce")])
def test_resampled_bound_weights_each_pair_by_both_rows(kind, bound):
    # 203 rows in blocks of 50/51: both block sizes, padding for the full layout.
    n = 203
    ids = torch.arange(n, dtype=torch.float64)[:, None]
    cfg = EstimatorConfig(bound=bound, critic=CriticConfig(kind=kind), batch_size=50, eval_negatives=7)
    tj, tm = score_rows(IndexCritic(), ids, ids, cfg, seed=3)
    xrow, zrow = _partners(tj, tm)
    order = np.rint(tj * 1e6 // 1000).astype(int)  # the id of the row at each output position
    assert np.array_equal(np.rint(tj * 1e6) % 1000, order)  # joint pairs are (x_i, z_i)
    assert len(set(zip(xrow, zrow))) == len(xrow) and not np.any(xrow == zrow)  # distinct true negatives
    full = kind == "separable" or bound == "infonce"
    assert len(xrow) == (sum(m * (m - 1) for m in block_sizes(n, 50)) if full else 7 * n)
    stats, shift = _row_statistics(bound, tj, tm, 5.0, block_sizes(n, 50), full)
    w = np.random.default_rng(0).poisson(1.0, (3, n)).astype(float)
    got = _resampled_bounds(bound, stats, shift, w)
    # Brute force over pairs: the weight of (x_i, z_j) is w_i + w_j - 1 (row weights by row id).
    wid = np.empty_like(w)
    wid[:, order] = w
    pos = np.empty(n, int)
    pos[order] = np.arange(n)
    fin = np.isfinite(tm)
    t = np.clip(tm[fin], -5, 5) if bound == "smile" else tm[fin]
    for r in range(3):
        pw = wid[r, xrow] + wid[r, zrow] - 1
        wj = wid[r, order]
        if bound == "infonce":
            base = bound_from_scores(bound, tj, tm)
            # first-order change of each row's normalizer when candidates carry their rows' weights
            allc = np.concatenate([tj[:, None], tm], 1)
            p = np.exp(allc - allc.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            k1 = fin.sum(1) + 1
            q = np.where(np.concatenate([np.ones((n, 1), bool), fin], 1), 1 / k1[:, None] - p, 0)
            cand = np.concatenate([order[:, None], (np.rint(np.where(fin, tm, 0) * 1e6) % 1000).astype(int)], 1)
            dz = np.sum(q * (wid[r, cand] - 1)) / n
            terms = np.array([bound_from_scores(bound, tj[i:i + 1], tm[i:i + 1]) for i in range(n)])
            want = np.sum(wj * terms) / wj.sum() + dz
            assert base == pytest.approx(terms.mean())
        else:
            e = np.exp(t - 1.0) if bound == "mine-f" else np.exp(t)
            mean_e = np.sum(pw * e) / np.sum(pw)
            joint = np.sum(wj * tj) / wj.sum()
            want = joint - (mean_e if bound == "mine-f" else math.log(mean_e))
        assert got[r] == pytest.approx(want, rel=1e-9, abs=1e-12)


def _finish(tj, tm, cfg=None, curves=(), steps=1, best_step=1, stopped_early=False):
    cfg = cfg or EstimatorConfig(bootstrap=200)
    return finish_estimate(cfg, tj, tm, n_train=1, n_val=1, steps=steps, best_step=best_step,
                           stopped_early=stopped_early, wall=0.0, curves=list(curves), normalization={})


def test_scores_outside_the_layout_are_refused_by_the_paired_bootstrap():
    tj, tm = np.zeros(100), np.zeros((100, 4))
    with pytest.raises(ValueError, match=r"not in score_rows' layout for blocks of \[100\] rows \(all other rows"):
        bootstrap_ci("mine", tj, tm, 5.0, 10, 0, batch_size=512, full=True)
    # finish_estimate falls back to the row bootstrap for hand-made scores, and says so
    est = _finish(tj, tm, EstimatorConfig(bootstrap=20, critic=CriticConfig(kind="separable")))
    assert "own negatives only" in est.ci_method


def test_one_sided_limit_lies_between_the_two_sided_ends_and_is_clipped_like_them():
    rng = np.random.default_rng(0)
    est = _finish(1.0 + 0.3 * rng.standard_normal(400), 0.3 * rng.standard_normal((400, 16)))
    assert est.bound_ci95_nats[0] < est.bound_lower95_nats < est.bound_nats < est.bound_ci95_nats[1]
    assert est.lower95_nats == est.bound_lower95_nats and est.lower95_bits == pytest.approx(est.lower95_nats / math.log(2))
    low = _finish(-1.0 + 0.3 * rng.standard_normal(400), 0.3 * rng.standard_normal((400, 16)))
    assert low.bound_lower95_nats < 0 and low.lower95_nats == 0.0 and low.mi_nats == 0.0
    assert math.isnan(_finish(np.zeros(50), np.zeros((50, 4)), EstimatorConfig(bootstrap=0)).lower95_nats)


def test_infonce_cap_is_the_mean_of_the_per_row_caps():
    # Blocks of 3 and 4 rows: 2 or 3 negatives. A critic that always picks the joint pair reaches
    # each row's log(candidates), so the value is their mean: above the smallest cap (the old rule).
    cfg = EstimatorConfig(bound="infonce", batch_size=3, bootstrap=0, critic=CriticConfig(kind="separable"))
    tj = np.full(10, 50.0)
    tm = np.zeros((10, 3))
    sizes = block_sizes(10, 3)
    assert sizes.tolist() == [4, 3, 3]
    tm[4:, 2] = -np.inf
    est = _finish(tj, tm, cfg)
    assert est.mi_nats <= est.cap_nats + 1e-12
    assert est.mi_nats > math.log(3) + 0.1  # above the old cap min(log(k + 1))
    assert est.cap_nats == pytest.approx((4 * math.log(4) + 6 * math.log(3)) / 10)


def test_marginal_ess_is_the_effective_size_of_the_partition_weights():
    tm = np.array([[0.0, 0.0], [0.0, 0.0], [math.log(2.0), -np.inf]])  # e^T: 1, 1, 1, 1, 2
    assert marginal_ess("mine", tm) == pytest.approx(36 / 8)
    assert marginal_ess("mine-f", tm) == pytest.approx(36 / 8)
    assert marginal_ess("infonce", tm) is None
    assert marginal_ess("smile", np.array([[0.0, 20.0]]), tau=1.0) == pytest.approx((1 + math.e) ** 2 / (1 + math.e ** 2))


def test_readout_unreliable_fires_when_a_few_pairs_carry_the_partition_term():
    rng = np.random.default_rng(1)
    n = 2000
    calm = _finish(1.0 + rng.standard_normal(n), 0.3 * rng.standard_normal((n, 16)))
    assert calm.marginal_ess > 0.9 * n * 16 and calm.warnings == []
    # e^T log-normal with sigma 4: a handful of the 32,000 pairs carry most of the weight
    heavy = _finish(1.0 + rng.standard_normal(n), -8.0 + 4.0 * rng.standard_normal((n, 16)))
    assert heavy.marginal_ess < MIN_ESS
    assert any(w.startswith("readout unreliable: the effective sample size") and "32000 held-out" in w
               for w in heavy.warnings)
    # many pairs carry the weight, but the value is above the log of their effective number
    high = _finish(12.0 + rng.standard_normal(n), 0.3 * rng.standard_normal((n, 16)))
    assert high.marginal_ess > MIN_ESS
    assert any("exceeds log(ESS) = " in w for w in high.warnings)
    assert any("exceeds log(test rows) = 7.60 nats" in w for w in high.warnings)


def _curves(vals, train=None, every=100):
    train = train or [v + 0.05 for v in vals]
    return [{"step": every * (i + 1), "train": t, "val": v, "ema_log": None} for i, (t, v) in enumerate(zip(train, vals))]


def test_not_converged_fires_when_the_budget_ends_while_validation_rises():
    cfg = EstimatorConfig(steps=600, eval_every=100)
    rising = _curves([0.5, 1.0, 1.4, 1.7, 1.9, 2.0])
    (note,) = training_warnings(cfg, rising, 600, 600, False)
    assert note.startswith("not converged: the selected step 600") and note.endswith("raise --steps")
    assert "+0.600 nats" in note  # 2.0 vs the best before the last 3 checks (1.4)
    # silent: a plateau whose last check is a new record by noise (0.01 < max(0.02, 1% of 2.33))
    plateau = _curves([2.0, 2.31, 2.30, 2.32, 2.31, 2.33])
    assert training_warnings(cfg, plateau, 600, 600, False) == []
    assert training_warnings(cfg, rising, 600, 300, False) == []  # the best check is earlier
    assert training_warnings(cfg, rising, 500, 500, True) == []  # stopped early: converged by patience
    assert training_warnings(cfg, [], 600, 0, False) == []


def test_overfit_fires_on_a_large_train_validation_gap_at_the_selected_step():
    cfg = EstimatorConfig(steps=600, eval_every=100)
    gap = _curves([1.0, 1.2, 1.1], train=[1.5, 2.4, 3.0])
    (note,) = training_warnings(cfg, gap, 300, 200, True)
    assert note.startswith("overfit: at the selected step the train bound 2.400 exceeds the validation bound 1.200")
    assert training_warnings(cfg, _curves([1.0, 1.2, 1.1], train=[1.1, 1.3, 1.2]), 300, 200, True) == []
    # the threshold grows with the value: 0.4 nats on 2 nats is within max(0.25, 25%)
    assert training_warnings(cfg, _curves([2.0], train=[2.4]), 100, 100, True) == []


def test_real_runs_short_budget_warns_not_converged_and_an_early_stopped_run_is_silent():
    from mine_dist import MINE

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 2))
    z = 0.8 * x + 0.6 * rng.standard_normal((2000, 2))  # I = -log(0.36) = 1.02 nats
    # Measured on seeds 0-2: the 40-step run warns on all three, the early-stopped one (120 steps
    # at the defaults, 240-320 before the CCA start) on none, and reads 1.03-1.13 nats on its 400 test rows.
    # The short run's critic is the bare MLP: with the CCA basis (the default) the Gaussian path
    # starts at this Gaussian pair's optimal critic, so there is no climb left for the warning to see.
    short = MINE(EstimatorConfig(steps=40, eval_every=10, batch_size=128, seed=0,
                                 critic=CriticConfig(cca=False))).estimate(x, z)
    assert [w for w in short.warnings if w.startswith("not converged")], short.curves
    done = MINE(EstimatorConfig(steps=4000, eval_every=40, patience=2, batch_size=128, seed=0)).estimate(x, z)
    assert done.stopped_early and done.warnings == []
    assert 0.8 < done.mi_nats < 1.25 and done.lower95_nats < done.mi_nats  # a lower bound with its limit below


def test_summary_calls_the_number_a_lower_bound_with_its_one_sided_limit():
    from mine_dist.runs import summary

    rec = {"mi_nats": 1.2, "mi_bits": 1.2 / math.log(2), "ci95_nats": [1.1, 1.3], "ci95_bits": [1.6, 1.9],
           "lower95_nats": 1.12, "lower95_bits": 1.12 / math.log(2), "bound": "mine", "bound_nats": 1.2,
           "bound_ci95_nats": [1.1, 1.3], "n_test": 10, "n_train": 10, "steps": 1, "best_step": 1, "workers": 0,
           "wall_s": 1.0, "marginal_ess": 812.0, "warnings": []}
    text = summary(rec)
    assert text.startswith("lower bound on I(X;Z) on held-out rows: >= 1.2000 nats, 95% one-sided >= 1.1200 nats")
    assert "[1.1000, 1.3000] nats (not an upper limit on I(X;Z))" in text and "CI" not in text and "~=" not in text
    assert "raw mine bound" not in text and "ESS of marginal pairs 812" in text
    clipped = dict(rec, mi_nats=0.0, mi_bits=0.0, ci95_nats=[0.0, 0.0], lower95_nats=0.0, lower95_bits=0.0,
                   bound_nats=-5.5, bound_ci95_nats=[-6.0, -5.1])
    assert "raw mine bound -5.5000 nats (95% interval [-6.0000, -5.1000]), clipped at 0" in summary(clipped)
    assert ">= 0.0000 nats" in summary({k: v for k, v in clipped.items() if k not in ("lower95_nats", "lower95_bits")})

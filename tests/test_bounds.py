import math

import pytest
import torch
import torch.nn.functional as F

from mine_dist import bounds as B


def test_logmeanexp_matches_naive_and_is_stable():
    t = torch.tensor([0.1, -2.0, 3.0, 0.5], dtype=torch.float64)
    assert B.logmeanexp(t).item() == pytest.approx(math.log(torch.exp(t).mean().item()), rel=1e-12)
    big = torch.tensor([1000.0, 1000.0], dtype=torch.float64)
    assert B.logmeanexp(big).item() == pytest.approx(1000.0)


def test_logmeanexp_rejects_empty():
    with pytest.raises(ValueError, match="at least one score"):
        B.logmeanexp(torch.tensor([]))


def test_dv_hand_computed():
    tj = torch.tensor([1.0, 2.0], dtype=torch.float64)
    tm = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64)
    # mean(tj) = 1.5, log mean exp(tm) = log 2
    assert B.dv(tj, tm).item() == pytest.approx(1.5 - math.log(2.0), rel=1e-12)


def test_nwj_hand_computed():
    tj = torch.tensor([1.0, 3.0], dtype=torch.float64)
    tm = torch.tensor([1.0, 1.0 + math.log(2.0)], dtype=torch.float64)
    # mean(tj) = 2, mean(exp(tm - 1)) = 1.5
    assert B.nwj(tj, tm).item() == pytest.approx(0.5, rel=1e-12)


def test_dv_dominates_nwj_for_the_same_critic():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        tj, tm = torch.randn(16, generator=g), torch.randn(40, generator=g)
        assert B.dv(tj, tm) >= B.nwj(tj, tm) - 1e-6


def test_nwj_at_optimal_shift_equals_dv():
    # NWJ(T + c) is maximized over c at c* = 1 - log E_Q e^T, where it equals DV(T).
    g = torch.Generator().manual_seed(1)
    tj, tm = torch.randn(32, generator=g, dtype=torch.float64), torch.randn(64, generator=g, dtype=torch.float64)
    c = 1.0 - B.logmeanexp(tm)
    assert B.nwj(tj + c, tm + c).item() == pytest.approx(B.dv(tj, tm).item(), rel=1e-10)


def test_infonce_equals_log_b_minus_cross_entropy():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(8, 8, generator=g, dtype=torch.float64)
    ce = F.cross_entropy(s, torch.arange(8))
    assert B.infonce(s).item() == pytest.approx(math.log(8) - ce.item(), rel=1e-10)


def test_infonce_is_capped_at_log_b():
    s = torch.full((6, 6), -50.0, dtype=torch.float64)
    s.fill_diagonal_(50.0)
    assert B.infonce(s).item() == pytest.approx(math.log(6), abs=1e-9)
    assert B.infonce(s).item() <= math.log(6)


def test_infonce_rejects_non_square():
    with pytest.raises(ValueError, match=r"square \(B, B\) matrix"):
        B.infonce(torch.zeros(3, 4))


def test_offdiagonal():
    s = torch.arange(9.0).reshape(3, 3)
    assert B.offdiagonal(s).tolist() == [1.0, 2.0, 3.0, 5.0, 6.0, 7.0]


def test_smile_value_is_dv_when_clip_inactive_and_gradient_is_js():
    g = torch.Generator().manual_seed(3)
    tj = torch.randn(10, generator=g, dtype=torch.float64, requires_grad=True)
    tm = torch.randn(30, generator=g, dtype=torch.float64, requires_grad=True)
    v = B.smile(tj, tm, tau=100.0)
    assert v.item() == pytest.approx(B.dv(tj, tm).item(), rel=1e-12)
    v.backward()
    gj, gm = tj.grad.clone(), tm.grad.clone()
    tj.grad = tm.grad = None
    B.js_fgan(tj, tm).backward()
    torch.testing.assert_close(gj, tj.grad)
    torch.testing.assert_close(gm, tm.grad)


def test_smile_clips_partition_scores():
    tj = torch.tensor([0.0], dtype=torch.float64)
    tm = torch.tensor([10.0, -10.0], dtype=torch.float64)
    expected = -math.log((math.exp(2.0) + math.exp(-2.0)) / 2)
    assert B.smile(tj, tm, tau=2.0).item() == pytest.approx(expected, rel=1e-12)


def test_smile_rejects_bad_tau():
    with pytest.raises(ValueError, match="tau must be > 0"):
        B.smile(torch.zeros(2), torch.zeros(2), tau=0.0)


def test_bounds_do_not_mutate_inputs():
    tj, tm = torch.randn(5), torch.randn(7)
    tj0, tm0 = tj.clone(), tm.clone()
    for f in (B.dv, B.nwj, B.js_fgan, B.smile):
        f(tj, tm)
    B.infonce(torch.outer(tj, tj))
    assert torch.equal(tj, tj0) and torch.equal(tm, tm0)

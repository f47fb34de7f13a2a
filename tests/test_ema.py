import math

import pytest
import torch

from mine_dist import ema as E


def _lme(t):
    return math.log(torch.exp(t.double()).mean().item())


def test_first_update_reads_the_batch_value():
    t = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    st = E.update(E.EMAState(), *E.batch_statistic(t), rate=0.01)
    assert st.count == 1
    assert E.read(st, 0.01) == pytest.approx(_lme(t), rel=1e-12)


def test_matches_plain_debiased_ema():
    g = torch.Generator().manual_seed(0)
    rate, st, plain = 0.1, E.EMAState(), 0.0
    for k in range(1, 30):
        t = torch.randn(50, generator=g, dtype=torch.float64) * 2
        st = E.update(st, *E.batch_statistic(t), rate=rate)
        plain = (1 - rate) * plain + rate * torch.exp(t).mean().item()
        assert E.read(st, rate) == pytest.approx(math.log(plain / (1 - (1 - rate) ** k)), rel=1e-10)


def test_log_space_survives_huge_scores():
    st = E.update(E.EMAState(), *E.batch_statistic(torch.tensor([800.0, 801.0], dtype=torch.float64)), rate=0.5)
    st = E.update(st, *E.batch_statistic(torch.tensor([900.0], dtype=torch.float64)), rate=0.5)
    assert math.isfinite(E.read(st, 0.5))


def test_reduction_of_halves_equals_full_batch():
    g = torch.Generator().manual_seed(1)
    t = torch.randn(64, generator=g, dtype=torch.float64)
    a, b = E.batch_statistic(t[:32]), E.batch_statistic(t[32:])

    def reduce(lse, n):  # what an all-gather over two ranks computes
        return float(torch.logsumexp(torch.tensor([a[0], b[0]], dtype=torch.float64), 0)), a[1] + b[1]

    full = E.update(E.EMAState(), *E.batch_statistic(t), rate=0.01)
    red = E.update(E.EMAState(), *a, rate=0.01, reduce=reduce)
    assert red.log_value == pytest.approx(full.log_value, rel=1e-12) and red.count == full.count


def test_corrected_objective_gradient_is_the_bias_corrected_gradient():
    # Linear critic T(v) = w . v: per-sample gradients are the inputs themselves.
    g = torch.Generator().manual_seed(2)
    vj = torch.randn(12, 3, generator=g, dtype=torch.float64)
    vm = torch.randn(20, 3, generator=g, dtype=torch.float64)
    w = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    log_ema = 0.7
    E.corrected_objective(vj @ w, vm @ w, log_ema).backward()
    with torch.no_grad():
        tm = vm @ w
        analytic = vj.mean(0) - (torch.exp(tm)[:, None] * vm).mean(0) / math.exp(log_ema)
    torch.testing.assert_close(w.grad, analytic)


def test_corrected_gradient_with_batch_denominator_equals_dv_gradient():
    from mine_dist.bounds import dv

    g = torch.Generator().manual_seed(3)
    vj, vm = torch.randn(8, 2, generator=g, dtype=torch.float64), torch.randn(8, 2, generator=g, dtype=torch.float64)
    w = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    dv(vj @ w, vm @ w).backward()
    g_dv = w.grad.clone()
    w.grad = None
    lme = _lme((vm @ w).detach())
    E.corrected_objective(vj @ w, vm @ w, lme).backward()
    torch.testing.assert_close(w.grad, g_dv)


def test_state_round_trips_through_a_dict():
    st = E.EMAState(-0.25, 7)
    assert E.EMAState.from_dict(st.to_dict()) == st


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_bad_rate(rate):
    with pytest.raises(ValueError, match=r"ema rate must be in \(0, 1\]"):
        E.update(E.EMAState(), 0.0, 1, rate=rate)


def test_read_before_update():
    with pytest.raises(ValueError, match="before its first update"):
        E.read(E.EMAState(), 0.01)


def test_empty_statistic():
    with pytest.raises(ValueError, match="at least one marginal score"):
        E.update(E.EMAState(), 0.0, 0, rate=0.01)


def test_diverged_scores():
    with pytest.raises(FloatingPointError, match="diverged"):
        E.update(E.EMAState(), math.inf, 3, rate=0.01)

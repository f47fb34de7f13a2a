"""Early stopping with a minimum gain: a validation check counts as an improvement only when it
beats the last counted one by ``min_gain`` standard errors; the critic kept is the best check's."""

import math

import numpy as np
import pytest
import torch

from mine_dist.critics import CriticConfig
from mine_dist.estimator import EstimatorConfig, Trainer, check_value


def _trainer(**kw):
    cfg = EstimatorConfig(critic=CriticConfig(width=4, depth=1), patience=3, steps=10_000, **kw)
    return Trainer(cfg, 2, 2, torch.device("cpu"))


def test_any_gain_resets_patience_without_min_gain():
    t = _trainer(min_gain=0.0)
    for v in [0.10, 0.11, 0.12, 0.13, 0.14]:
        t.record_check(v, se=0.1)
    assert t.bad_checks == 0 and not t.done()


def test_gains_below_min_gain_standard_errors_run_out_patience_but_best_is_kept():
    t = _trainer(min_gain=1.0)
    vals = [0.10, 0.13, 0.16, 0.19]  # +0.03 a check, se 0.1: no check beats 0.10 + 0.1
    for i, v in enumerate(vals):
        t.step_count = 200 * (i + 1)
        t.record_check(v, se=0.1)
    assert t.done() and t.stopped_early
    assert t.best_val == pytest.approx(0.19) and t.best_step == 800  # the best check is still kept
    assert [c["val_se"] for c in t.curves] == [0.1] * 4


def test_slow_gains_add_up_to_a_counted_improvement():
    t = _trainer(min_gain=1.0)
    for v in [0.10, 0.15, 0.21]:  # 0.21 > 0.10 + 0.1: counted, patience restarts from 0.21
        t.record_check(v, se=0.1)
    assert t.bad_checks == 0 and t.gain_ref == pytest.approx(0.21)
    t.record_check(0.30, se=0.1)
    assert t.bad_checks == 1


def test_gain_reference_survives_a_checkpoint():
    t = _trainer(min_gain=2.0)
    t.record_check(0.5, se=0.01)
    t.record_check(0.51, se=0.01)
    u = _trainer(min_gain=2.0)
    u.load_state_dict(t.state_dict())
    assert (u.gain_ref, u.bad_checks) == (t.gain_ref, t.bad_checks) == (0.5, 1)


@pytest.mark.parametrize("bad", [-0.5, math.inf, math.nan, True, "1"])
def test_min_gain_is_validated(bad):
    with pytest.raises(ValueError, match="min_gain"):
        EstimatorConfig(min_gain=bad)


def test_check_value_standard_error_only_when_asked():
    rng = np.random.default_rng(0)
    tj, tm = rng.normal(0.5, 1, 2000), rng.normal(0, 1, (2000, 4))
    v0, se0 = check_value(EstimatorConfig(bound="mine", min_gain=0.0), tj, tm)
    v1, se1 = check_value(EstimatorConfig(bound="mine"), tj, tm)  # the default min_gain 1.0
    assert v0 == v1 and se0 == 0.0
    # The DV value's sampling sd for such scores is 0.027 (400 independent draws of tj and tm,
    # measured); a 64-resample bootstrap lands within a third of it.
    assert 0.018 < se1 < 0.036


def test_check_value_of_a_tiny_check_has_a_finite_standard_error():
    # 4 validation rows: some of the 64 resamples weight every row 0 (the value is then undefined);
    # those are left out, so a tiny check still compares (a NaN would count as no improvement, ever).
    rng = np.random.default_rng(1)
    tj, tm = rng.normal(0.5, 1, 4), rng.normal(0, 1, (4, 3))
    with np.errstate(all="raise"):
        _, se = check_value(EstimatorConfig(bound="mine", batch_size=4), tj, tm)
    assert math.isfinite(se) and se >= 0


def test_progress_bar_shows_each_check(capsys):
    from mine_dist.estimator import MINE

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 2))
    z = x + rng.normal(size=(1500, 2))
    cfg = EstimatorConfig(steps=40, eval_every=20, batch_size=64, bootstrap=20, critic=CriticConfig(width=8))
    est = MINE(cfg).estimate(x, z, progress=True)
    assert est.steps == 40 and len(est.curves) == 2
    err = capsys.readouterr().err  # not a TTY: one line per check, with the check's value
    assert "step 20/40" in err and "step 40/40" in err and err.count(" val ") == 2

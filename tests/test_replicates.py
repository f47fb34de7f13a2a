"""Replicates (issue 11): K critics with different seeds and train/validation rows, averaged on the
same test rows, with an interval that adds their spread to test sampling."""

import math
from dataclasses import replace

import numpy as np
import pytest

from mine_dist import io, split
from mine_dist.critics import CriticConfig
from mine_dist.estimator import MINE, EstimatorConfig, combine_replicates
from mine_dist.jobs.estimate import EstimateJob
from mine_dist.distributed.options import RayOptions


def test_split_seed_redraws_validation_rows_and_keeps_test_rows():
    keys = np.arange(200_000, dtype=np.uint64)
    base = split.assign(keys, 0.1, 0.2)
    other = split.assign(keys, 0.1, 0.2, split_seed=1)
    assert np.array_equal(base == split.TEST, other == split.TEST)
    assert abs((other == split.VAL).mean() - 0.1) < 0.003
    both = ((base == split.VAL) & (other == split.VAL)).sum() / (base == split.VAL).sum()
    assert abs(both - 0.1 / 0.8) < 0.01  # independent draws among the non-test rows
    assert np.array_equal(split.assign(keys, 0.1, 0.2, split_seed=0), base)


def _gauss(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    return x, 0.8 * x + 0.6 * rng.normal(size=(n, 2))


CFG = EstimatorConfig(steps=300, eval_every=100, batch_size=256, critic=CriticConfig(width=64), bootstrap=300)


def test_replicates_average_on_the_same_test_rows_and_widen_the_interval():
    x, z = _gauss()
    est = MINE(replace(CFG, replicates=3)).estimate(x, z)
    reps = est.replicates
    assert [r["seed"] for r in reps] == [0, 1, 2] and [r["split_seed"] for r in reps] == [0, 1, 2]
    assert len({r["n_val"] for r in reps}) > 1  # different validation rows
    assert est.bound_nats == pytest.approx(np.mean([r["bound_nats"] for r in reps]))
    assert est.n_test == MINE(CFG).estimate(x, z).n_test
    lo, hi = est.bound_ci95_nats
    assert lo < est.bound_nats < hi
    # Test sampling alone gives about one replicate's width; the training part only adds to it.
    single = np.mean([r["bound_ci95_nats"][1] - r["bound_ci95_nats"][0] for r in reps])
    assert hi - lo >= 0.8 * single
    assert est.ci_method.startswith("mean of 3 replicates")
    assert est.to_dict()["replicates"][0]["replicate"] == 0 and "resamples" not in est.to_dict()
    truth = -2 * math.log(0.6)
    assert abs(est.mi_nats - truth) < 0.15


def _fake(value, half):
    x, z = _gauss(3000)
    base = MINE(replace(CFG, steps=100)).estimate(x, z)
    return replace(base, bound_nats=value, bound_ci95_nats=(value - half, value + half),
                   resamples=base.resamples - base.bound_nats + value)


def test_unstable_warning_fires_when_replicates_disagree_beyond_their_intervals():
    agree = combine_replicates(replace(CFG, replicates=2), [_fake(1.00, 0.05), _fake(1.04, 0.05)])
    assert not any(w.startswith("unstable") for w in agree.warnings)
    apart = combine_replicates(replace(CFG, replicates=2), [_fake(1.00, 0.05), _fake(1.20, 0.05)])
    assert any(w.startswith("unstable: replicates 0 and 1 disagree beyond their intervals (1.000 vs 1.200")
               for w in apart.warnings)
    assert apart.bound_ci95_nats[1] - apart.bound_ci95_nats[0] > 0.2  # training spread in the interval


def test_replicates_errors():
    with pytest.raises(ValueError, match="replicates must be an int >= 1; got 0"):
        EstimatorConfig(replicates=0)
    job = EstimateJob(io.DataSpec("nowhere"), replace(CFG, replicates=2), ray=RayOptions(workers=1), resume="r1")
    with pytest.raises(ValueError, match=r"--resume does not continue a run of --replicates 2 \(each replicate keeps"):
        job.run()


def test_t_quantiles_without_scipy():
    from mine_dist.estimator import _t_quantile

    assert _t_quantile(0.975, 2) == 4.303 and _t_quantile(0.95, 4) == 2.132
    assert _t_quantile(0.975, 100) == pytest.approx(1.984, abs=0.002)  # beyond the table
    assert _t_quantile(0.95, 60) == pytest.approx(1.671, abs=0.002)


def test_a_failed_ray_replicate_fails_the_run_naming_it(monkeypatch):
    # The Ray side without a cluster: the pool reports replicate 1's task error.
    import ray

    from mine_dist.distributed import pool, runtime, train

    monkeypatch.setattr(runtime, "ensure_ray", lambda *a, **k: None)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    seen = {}

    def fake_run_all(fn, calls, limit):
        seen["calls"], seen["limit"] = calls, limit
        return {"0": (True, None), "1": (False, "worker died (OOM)")}

    monkeypatch.setattr(pool, "run_all", fake_run_all)
    with pytest.raises(RuntimeError, match=r"replicate 1 of 2 failed: worker died \(OOM\)"):
        train.fit_replicates_on_ray(None, None, replace(CFG, replicates=2), RayOptions(workers=1), "/tmp/run-x")
    (k0, args0, opt0), (k1, args1, _) = seen["calls"]
    assert seen["limit"] == 2 and opt0["num_cpus"] == 0
    assert (args0[2].seed, args0[2].split_seed, args1[2].seed, args1[2].split_seed) == (0, 0, 1, 1)
    assert args1[4].endswith("replicates/1") and args1[6] == 0  # its own directory; the base scoring seed

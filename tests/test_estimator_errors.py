"""Every raise of the estimator's input checks and config, pinned by message."""

import numpy as np
import pytest
import torch

from mine_dist import MINE, CriticConfig, EstimatorConfig


@pytest.fixture
def xz(rng):
    return rng.normal(size=(400, 2)), rng.normal(size=(400, 3))


def est(**kw):
    return MINE(EstimatorConfig(**{"steps": 2, "batch_size": 32, "bootstrap": 0, **kw}))


def test_nan_is_rejected_with_position(xz):
    x, z = xz
    x[17, 1] = np.nan
    with pytest.raises(ValueError, match=r"x has 1 NaN/Inf value\(s\); first at row 17, column 1"):
        est().estimate(x, z)


def test_inf_is_rejected(xz):
    x, z = xz
    z[3, 0] = np.inf
    with pytest.raises(ValueError, match=r"z has 1 NaN/Inf value\(s\); first at row 3, column 0 \(inf\)"):
        est().estimate(x, z)


def test_mismatched_rows(xz):
    x, z = xz
    with pytest.raises(ValueError, match=r"same number of rows; got x \(400, 2\) and z \(399, 3\)"):
        est().estimate(x, z[:-1])


def test_wrong_ndim(xz):
    x, z = xz
    with pytest.raises(ValueError, match=r"x must have shape \(n, d\) or \(n,\); got shape \(400, 2, 1\)"):
        est().estimate(x[:, :, None], z)


def test_non_numeric(xz):
    _, z = xz
    with pytest.raises(TypeError, match="x must be numeric; got dtype <U1"):
        est().estimate(np.array(["a"] * 400), z)


def test_constant_column(xz):
    x, z = xz
    x[:, 0] = 2.5
    with pytest.raises(ValueError, match=r"x column\(s\) \[0\] are constant on the train split"):
        est().estimate(x, z)


def test_too_few_rows_for_batch(xz):
    x, z = xz
    with pytest.raises(ValueError, match=r"too few rows: \d+ train rows \(of 400\) for batch_size 512"):
        est(batch_size=512).estimate(x, z)


def test_row_keys_shape(xz):
    x, z = xz
    with pytest.raises(ValueError, match=r"row_keys must have shape \(400,\)"):
        est().estimate(x, z, row_keys=np.arange(3))


def test_tensors_and_1d_inputs_are_accepted(rng):
    x = torch.from_numpy(rng.normal(size=300))
    z = rng.normal(size=300)
    r = est(steps=3, eval_every=1).estimate(x, z)
    assert r.n_train + r.n_val + r.n_test <= 300 and r.steps == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bound": "kl"}, "bound must be one of"),
        ({"batch_size": 1}, "batch_size must be an int >= 2; got 1"),
        ({"lr": -1e-3}, "lr must be a finite number > 0; got -0.001"),
        ({"ema_rate": 0.0}, r"ema_rate must be in \(0, 1\]; got 0.0"),
        ({"smile_tau": 0}, "smile_tau must be > 0"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "sum < 1"),
        ({"val_fraction": 0.0}, "val_fraction and test_fraction must be > 0"),
        ({"normalize": "minmax"}, "normalize must be one of"),
        ({"device": "tpu"}, "device must be cpu, cuda or auto"),
        ({"steps": 0}, "steps must be an int >= 1; got 0"),
        ({"precision": "fp16"}, r"precision must be one of \('fp32', 'bf16'\); got 'fp16'"),
        ({"val_negatives": 0}, "val_negatives must be an int >= 1; got 0"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EstimatorConfig(**kwargs)


def test_config_round_trip_and_unknown_keys():
    cfg = EstimatorConfig(bound="smile", critic=CriticConfig(kind="separable", width=8))
    assert EstimatorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown estimator config key\(s\) \['lr_decay'\]"):
        EstimatorConfig.from_dict({"lr_decay": 0.1})


@pytest.mark.parametrize("bound, match", [("mine", "critic scores diverged"), ("mine-f", "training diverged")])
def test_divergence_raises_not_nan(bound, match):
    from mine_dist.critics import build_critic
    from mine_dist.estimator import train_step
    from mine_dist.ema import EMAState

    cfg = EstimatorConfig(bound=bound, batch_size=8, critic=CriticConfig(width=4, depth=1))
    critic = build_critic(2, 2, cfg.critic)
    with torch.no_grad():
        critic.net[0].weight[0, 0] = float("nan")
    opt = torch.optim.Adam(critic.parameters())
    with pytest.raises(FloatingPointError, match=match):
        train_step(critic, opt, EMAState(), torch.randn(8, 2), torch.randn(8, 2), cfg, torch.Generator())


def test_bf16_precision_autocasts_the_training_forward_only():
    from mine_dist.critics import build_critic
    from mine_dist.ema import EMAState
    from mine_dist.estimator import train_step

    cfg = EstimatorConfig(precision="bf16", batch_size=64, critic=CriticConfig(width=32))
    critic = build_critic(3, 2, cfg.critic)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
    seen, out_dtype = [], []
    critic.net.register_forward_hook(lambda m, i, o: seen.append(o.dtype))  # the MLP
    critic.register_forward_hook(lambda m, i, o: out_dtype.append(o[0].dtype))
    g = torch.Generator().manual_seed(0)
    out = train_step(critic, opt, EMAState(), torch.randn(64, 3, generator=g), torch.randn(64, 2, generator=g), cfg,
                     torch.Generator())
    assert seen == [torch.bfloat16]  # the critic's MLP ran in bfloat16 ...
    assert out_dtype == [torch.float32]  # ... the CCA basis and Gaussian path in float32 (critics.CCABasis)
    assert all(p.dtype == torch.float32 for p in critic.parameters())  # ... its weights and Adam stay float32
    assert isinstance(out.bound, float) and np.isfinite(out.bound)


def test_estimate_above_the_sample_ceiling_is_flagged():
    from mine_dist.estimator import finish_estimate

    def est(tj_value, bound="mine"):
        rng = np.random.default_rng(0)
        tj = tj_value + 0.1 * rng.standard_normal(100)
        tm = 0.1 * rng.standard_normal((100, 4))  # 100 held-out rows: ceiling log 100 = 4.61
        return finish_estimate(EstimatorConfig(bound=bound, bootstrap=50), tj, tm, n_train=1, n_val=1, steps=1,
                               best_step=1, stopped_early=False, wall=0.0, curves=[], normalization={})

    high = est(9.0)
    assert high.ceiling_nats == pytest.approx(np.log(100))  # McAllester-Stratos N: test rows, not pairs (issue 11)
    assert high.bound_nats > high.ceiling_nats and "exceeds log(test rows) = 4.61 nats" in high.warnings[0]
    # What is reported stops at the ceiling (the raw value stays in bound_*), interval and limit too.
    assert high.mi_nats == high.ceiling_nats and "reported as 4.61" in high.warnings[0]
    assert high.ci95_nats[1] == high.ceiling_nats and high.lower95_nats <= high.ceiling_nats
    assert high.bound_ci95_nats[1] > high.ceiling_nats
    low = est(2.0)
    assert low.mi_nats < low.ceiling_nats and low.warnings == []
    assert "not a strict lower bound" in est(2.0, "smile").warnings[0]
    assert est(2.0, "infonce").ceiling_nats is None  # InfoNCE has its own hard cap (cap_nats)

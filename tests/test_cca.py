"""The CCA basis (mine_dist.cca) and the joint critic that starts at its Gaussian critic."""

import math

import numpy as np
import pytest
import torch

from mine_dist import cca
from mine_dist.critics import CriticConfig, build_critic
from mine_dist.estimator import MINE, EstimatorConfig, Trainer, bound_from_scores, score_rows


def _pair(n, rhos, extra_x=0, extra_z=0, seed=0):
    """Independent pairs (x_i, z_i) with correlations ``rhos``, extra independent noise dims, and a
    random rotation of each side (the canonical correlations are still ``rhos``)."""
    rng = np.random.default_rng(seed)
    k = len(rhos)
    u = rng.standard_normal((n, k))
    v = np.asarray(rhos) * u + np.sqrt(1 - np.asarray(rhos) ** 2) * rng.standard_normal((n, k))
    x = np.hstack([u, rng.standard_normal((n, extra_x))])
    z = np.hstack([v, rng.standard_normal((n, extra_z))])
    qx, _ = np.linalg.qr(rng.standard_normal((x.shape[1],) * 2))
    qz, _ = np.linalg.qr(rng.standard_normal((z.shape[1],) * 2))
    return x @ qx, z @ qz


def test_basis_whitens_and_diagonalizes_with_the_canonical_correlations():
    x, z = _pair(40_000, [0.9, 0.6, 0.3], extra_x=2, extra_z=4)
    b = cca.fit(x, z)
    xp, zp = (x - b.mx) @ b.ax.T, (z - b.mz) @ b.az.T
    n = x.shape[0]
    np.testing.assert_allclose(np.cov(xp.T), np.eye(5), atol=1e-4)
    np.testing.assert_allclose(np.cov(zp.T), np.eye(7), atol=1e-4)
    cross = (xp - xp.mean(0)).T @ (zp - zp.mean(0)) / (n - 1)
    np.testing.assert_allclose(cross[:, :5], np.diag(b.rho), atol=1e-4)  # diagonal: rho_i on it, 0 elsewhere
    np.testing.assert_allclose(cross[:, 5:], 0, atol=1e-4)
    np.testing.assert_allclose(b.rho[:3], [0.9, 0.6, 0.3], atol=0.01)  # the planted pairs, through the rotations
    assert b.pairs == 3 and b.rho[3:].max() < 0.03
    assert abs(np.linalg.det(b.ax)) > 0 and abs(np.linalg.det(b.az)) > 0  # invertible: I(X';Z') = I(X;Z)


def test_blocked_moments_equal_the_whole_array_computation():
    x, z = _pair(20_000, [0.7, 0.2], extra_x=3, extra_z=1, seed=3)
    b = cca.fit(x, z)
    c = np.cov(np.hstack([x, z]).T)
    cxx, czz, cxz = c[:5, :5], c[5:, 5:], c[:5, 5:]
    wx = np.linalg.inv(np.linalg.cholesky(cxx)).T  # any whitener: canonical correlations are basis-free
    wz = np.linalg.inv(np.linalg.cholesky(czz)).T
    s = np.linalg.svd(wx.T @ cxz @ wz, compute_uv=False)
    np.testing.assert_allclose(b.rho, s, atol=1e-6)


@pytest.mark.parametrize("d, n", [(50, 2000), (256, 14000)])
def test_independent_noise_keeps_no_pair(d, n):
    x, z = _pair(n, [], extra_x=d, extra_z=d, seed=1)
    b = cca.fit(x, z)
    # Noise alone reaches close to the edge (so the top pairs would be fit as signal)...
    assert b.rho[0] ** 2 > 0.8 * cca.noise_edge(d, d, n)
    assert b.pairs == 0  # ...but none clears it with the margin


def test_a_planted_pair_among_many_noise_dims_is_kept():
    x, z = _pair(14_000, [0.6, 0.5], extra_x=254, extra_z=254, seed=2)
    assert cca.fit(x, z).pairs == 2


def test_critic_started_at_the_gaussian_critic_reads_the_closed_form_without_training():
    rhos = [0.95, 0.8, 0.5, 0.3, 0.1]
    truth = -0.5 * sum(math.log(1 - r * r) for r in rhos)  # 2.10 nats
    x, z = _pair(30_000, rhos, seed=4)
    b = cca.fit(x[:20_000], z[:20_000])
    critic = build_critic(5, 5, CriticConfig(width=16))
    torch.nn.init.zeros_(critic.net[-1].weight)  # silence the MLP: the Gaussian path alone
    torch.nn.init.zeros_(critic.net[-1].bias)
    critic.set_basis(b)
    xt, zt = torch.from_numpy(x[20_000:]).float(), torch.from_numpy(z[20_000:]).float()
    tj, tm = score_rows(critic, xt, zt, EstimatorConfig(), seed=0)
    assert bound_from_scores("dv", tj, tm) == pytest.approx(truth, abs=0.06)  # held-out rows


def test_state_round_trip_keeps_the_basis_and_cca_off_has_none():
    x, z = _pair(5000, [0.8], extra_x=1, extra_z=2, seed=5)
    t = Trainer(EstimatorConfig(critic={"width": 16}), 2, 3, torch.device("cpu"), basis=cca.fit(x, z))
    fresh = build_critic(2, 3, t.cfg.critic)
    fresh.load_state_dict(t.module.state_dict())
    v = torch.from_numpy(x[:7]).float(), torch.from_numpy(z[:7]).float()
    assert torch.equal(fresh.pairs(*v), t.module.pairs(*v))
    assert not torch.equal(fresh.basis.ax, torch.eye(2))
    off = build_critic(2, 3, CriticConfig(width=16, cca=False))
    assert off.basis is None and off.diag is None
    with pytest.raises(ValueError, match="cca: false"):
        off.set_basis(cca.fit(x, z))
    with pytest.raises(ValueError, match="critic cca must be true or false"):
        CriticConfig(cca="yes")


def test_basis_and_gaussian_path_stay_in_float32_under_bf16_autocast():
    x, z = _pair(4000, [0.9], extra_x=1, extra_z=1, seed=6)
    critic = build_critic(2, 2, CriticConfig(width=16))
    critic.set_basis(cca.fit(x, z))
    xt, zt = torch.from_numpy(x[:64]).float(), torch.from_numpy(z[:64]).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        xp, zp = critic.basis(xt, zt)
        q = critic.diag(xp, zp)
    assert xp.dtype == zp.dtype == q.dtype == torch.float32


def test_estimator_uses_the_basis_only_for_a_joint_critic_with_cca():
    x, z = _pair(3000, [0.8, 0.4], seed=7)
    fast = dict(steps=100, batch_size=64, eval_every=50, bootstrap=50, critic={"width": 16})
    on = MINE(EstimatorConfig(**fast)).estimate(x, z)
    off = MINE(EstimatorConfig(**{**fast, "critic": {"width": 16, "cca": False}})).estimate(x, z)
    truth = -0.5 * (math.log(1 - 0.64) + math.log(1 - 0.16))
    # 100 steps at width 16: the MLP alone is still far off; the Gaussian start is already there.
    assert on.mi_nats == pytest.approx(truth, abs=0.08) and off.mi_nats < truth - 0.15


def test_no_cca_flag():
    from mine_dist.cli import build_parser, config_from_args

    args = ["estimate", "--data", "d"]
    assert config_from_args(build_parser().parse_args(args)).critic.cca is True
    assert config_from_args(build_parser().parse_args([*args, "--no-cca"])).critic.cca is False


def test_the_start_is_scaled_down_where_validation_says_the_gaussian_critic_is_wrong():
    x, z = _pair(8000, [0.95, 0.9, 0.8], seed=8)
    t = Trainer(EstimatorConfig(critic={"width": 16}), 3, 3, torch.device("cpu"), basis=cca.fit(x[:6000], z[:6000]))
    xv, zv = torch.from_numpy(x[6000:]).float(), torch.from_numpy(z[6000:]).float()
    assert t.choose_start(xv, zv) == 1.0  # validation rows of the same pair: the full Gaussian start
    a_full = t.module.diag.a.clone()
    rng = np.random.default_rng(9)
    zi = torch.from_numpy(rng.permutation(z[6000:])).float()  # validation rows where z is independent of x
    assert t.choose_start(xv, zi) == 0.0 and torch.all(t.module.diag.a == 0)  # the MLP alone
    assert torch.all(a_full > 1)
    off = Trainer(EstimatorConfig(critic={"width": 16, "cca": False}), 3, 3, torch.device("cpu"))
    assert off.choose_start(xv, zv) is None


def test_no_basis_when_either_side_has_one_hot_columns():
    from mine_dist.estimator import fit_basis

    x, z = _pair(2000, [0.8], extra_x=1, extra_z=1, seed=10)
    cfg = EstimatorConfig()
    assert fit_basis(cfg, x, z) is not None
    assert fit_basis(cfg, x, z, None, None, np.array([True, False])) is None
    assert fit_basis(cfg, x, z, None, np.array([False, True]), None) is None
    assert fit_basis(EstimatorConfig(critic={"kind": "separable"}), x, z) is None

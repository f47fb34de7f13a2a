"""GPU path (run by benchmarks/gpu_check.sh on a GPU machine; skipped where torch sees no CUDA device)."""

import json

import numpy as np
import pytest
import torch

from mine_dist import MINE, CriticConfig, EstimatorConfig
from mine_dist.critics import build_critic
from mine_dist.ema import EMAState
from mine_dist.estimator import train_step
from mine_dist.synthetic import Spec

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_gpu_steps_equal_cpu_steps():
    """The same k steps (same data, pairing, init; float64) on the GPU and on the CPU."""
    cfg = EstimatorConfig(batch_size=64, lr=1e-3, critic=CriticConfig(width=32, depth=2))
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(64, 3, generator=g, dtype=torch.float64), torch.randn(64, 2, generator=g, dtype=torch.float64))
            for _ in range(5)]
    out = {}
    for dev in ("cpu", "cuda"):
        torch.manual_seed(0)
        critic = build_critic(3, 2, cfg.critic).double().to(dev)
        opt = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
        ema, values = EMAState(), []
        for x, z in data:
            o = train_step(critic, opt, ema, x.to(dev), z.to(dev), cfg, torch.Generator(), marg_index=7)
            ema, values = o.ema, values + [o.bound]
        out[dev] = ([p.detach().cpu() for p in critic.parameters()], ema, values)
    for a, b in zip(out["cpu"][0], out["cuda"][0]):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)
    assert out["cpu"][1].log_value == pytest.approx(out["cuda"][1].log_value, abs=1e-9)
    assert out["cpu"][2] == pytest.approx(out["cuda"][2], abs=1e-9)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gpu_estimate_matches_truth(precision):
    spec = Spec(dim=5, rho=0.6)
    x, z = spec.sample(20000, np.random.default_rng(0))
    est = MINE(EstimatorConfig(device="cuda", precision=precision, steps=2000, batch_size=512, lr=1e-3,
                               bootstrap=300)).estimate(x, z)
    truth = spec.truth()["mi_nats"]
    assert est.ci95_nats[0] <= truth + 0.01 and est.mi_nats >= 0.75 * truth - 0.02, (precision, est.mi_nats, truth)


@pytest.mark.slow
@pytest.mark.ray
def test_ray_train_gpu_worker(tmp_path):
    ray = pytest.importorskip("ray")
    from mine_dist.cli import main

    data = tmp_path / "data"
    assert main(["make-data", "gaussian", "--dim", "5", "--rho", "0.6", "--rows", "40000", "--shards", "4",
                 "--output", str(data)]) == 0
    try:
        rc = main(["estimate", "--data", str(data), "--output", str(tmp_path / "runs"), "--run-id", "gpu",
                   "--workers", "1", "--gpu", "--steps", "1500", "--lr", "1e-3", "--no-progress"])
    finally:
        ray.shutdown()
    assert rc == 0
    rec = json.loads((tmp_path / "runs" / "gpu" / "estimate.json").read_text())
    truth = rec["ground_truth"]["mi_nats"]
    assert rec["config"]["device"] == "cuda"
    assert rec["ci95_nats"][0] <= truth + 0.01 and rec["mi_nats"] >= 0.75 * truth - 0.02

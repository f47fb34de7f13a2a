"""The central test: N data-parallel processes == 1 process with an N-times batch.

Two gloo processes (no Ray) each take a batch of B rows and draw their own derangement; the
reference process takes the 2B rows with the block-diagonal pairing of those derangements. After
k steps of Adam (float64: in float32 Adam normalizes near-zero gradient coordinates, where
all-reduce rounding flips signs, see shared/research/ray.md) the EMA, the reported bound and every
parameter agree to 1e-9.

Separable critics pool their encodings across ranks (the global negative pool): the reference is
one process scoring the whole (2B, 2B) matrix, so every row has 2B - 1 negatives on both sides.
"""

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from mine_dist.critics import CriticConfig, build_critic, derangement
from mine_dist.ema import EMAState
from mine_dist.estimator import EstimatorConfig, train_step

B, DX, DZ, STEPS, WORLD = 16, 3, 2, 5, 2


def _cfg(bound, kind="joint"):
    return EstimatorConfig(bound=bound, batch_size=B, lr=1e-2, critic=CriticConfig(kind=kind, width=16, depth=2, embed_dim=8))


def _data():
    g = torch.Generator().manual_seed(123)
    return [(torch.randn(WORLD * B, DX, generator=g, dtype=torch.float64),
             torch.randn(WORLD * B, DZ, generator=g, dtype=torch.float64)) for _ in range(STEPS)]


def _perms():
    gens = [torch.Generator().manual_seed(1000 + r) for r in range(WORLD)]
    return [[derangement(B, gens[r]) for r in range(WORLD)] for _ in range(STEPS)]


def _critic(cfg):
    torch.manual_seed(0)
    return build_critic(DX, DZ, cfg.critic).double()


def run_rank_steps(critic, collective, rank: int, bound: str, kind: str = "joint") -> dict:
    """Rank ``rank``'s share of the STEPS steps (its B rows, its own derangement); shared by the
    gloo processes here and the Ray Train workers in test_ray_pipeline.py."""
    cfg = _cfg(bound, kind)
    opt = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
    ema, values = EMAState(), []
    for (x, z), perms in zip(_data(), _perms()):
        sl = slice(rank * B, (rank + 1) * B)
        o = train_step(critic, opt, ema, x[sl], z[sl], cfg, torch.Generator(), collective, marg_index=perms[rank])
        ema = o.ema
        values.append(o.bound)
    return {"params": [p.detach() for p in critic.module.parameters()], "ema": tuple(ema), "values": values}


def _rank_main(rank, init_file, bound, kind, out):
    from mine_dist.sync import TorchDistributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    critic = DistributedDataParallel(_critic(_cfg(bound, kind)))
    torch.save(run_rank_steps(critic, TorchDistributed(), rank, bound, kind), f"{out}.{rank}")
    # Both ranks done before either tears down: a rank that exits while the other's gloo
    # threads still talk to it can abort the other (SIGABRT, "terminate called without an active
    # exception"; seen once in a full run).
    dist.barrier()
    dist.destroy_process_group()


def _single(bound, kind="joint"):
    cfg = _cfg(bound, kind)
    critic = _critic(cfg)
    opt = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
    ema, values = EMAState(), []
    for (x, z), perms in zip(_data(), _perms()):
        block = torch.cat([perms[r] + r * B for r in range(WORLD)])
        o = train_step(critic, opt, ema, x, z, cfg, torch.Generator(), marg_index=block)
        ema = o.ema
        values.append(o.bound)
    return {"params": [p.detach() for p in critic.parameters()], "ema": tuple(ema), "values": values}


@pytest.mark.slow
@pytest.mark.parametrize("bound,kind", [("mine", "joint"), ("mine-f", "joint"), ("mine", "separable"),
                                        ("infonce", "separable")])
def test_two_gloo_processes_equal_one_process_with_double_batch(tmp_path, bound, kind):
    out = str(tmp_path / "res")
    mp.start_processes(_rank_main, args=(str(tmp_path / "init"), bound, kind, out), nprocs=WORLD, start_method="spawn")
    ref = _single(bound, kind)
    for r in range(WORLD):
        got = torch.load(f"{out}.{r}", weights_only=True)
        moved = max((a - b).abs().max().item() for a, b in zip(ref["params"], _critic(_cfg(bound, kind)).parameters()))
        assert moved > 1e-3  # the parameters really moved, so equality is not vacuous
        for a, b in zip(got["params"], ref["params"]):
            torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
        assert got["values"] == pytest.approx(ref["values"], abs=1e-9)
        if bound == "mine":
            assert got["ema"][1] == ref["ema"][1] == STEPS
            assert got["ema"][0] == pytest.approx(ref["ema"][0], abs=1e-9)
            assert math.isfinite(got["ema"][0])

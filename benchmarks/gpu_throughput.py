"""GPU training throughput: plain PyTorch MINE loop vs the library's step, fp32 vs bf16 autocast.

Same critic (joint MLP, depth 2), same batch, pre-made batches already on the GPU; each timed run
ends with ``torch.cuda.synchronize()``. Alternating rounds, medians. Run by benchmarks/gpu_check.sh.

    python benchmarks/gpu_throughput.py
    python benchmarks/gpu_throughput.py --widths 256 1024 --batches 4096 65536
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from throughput import PlainMINE  # noqa: E402

from mine_dist.critics import CriticConfig  # noqa: E402
from mine_dist.estimator import EstimatorConfig, Trainer  # noqa: E402


def timed(step, batches, steps: int) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(*batches[i % len(batches)])
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def cell(width: int, batch: int, a) -> dict:
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(width + batch)
    batches = [(torch.randn(batch, a.dim, generator=g).to(dev), torch.randn(batch, a.dim, generator=g).to(dev))
               for _ in range(8)]
    runners = {}
    for prec in ("fp32", "bf16"):
        cfg = EstimatorConfig(batch_size=batch, critic=CriticConfig(width=width, depth=2), device="cuda",
                              precision=prec)
        runners[f"library {prec}"] = Trainer(cfg, a.dim, a.dim, dev).step
    plain = PlainMINE(a.dim, a.dim, width, 2, 5e-4, 0.01, 0)
    plain.net.to(dev)
    plain.opt = torch.optim.Adam(plain.net.parameters(), lr=5e-4)
    runners = {"plain fp32": plain.step, **runners}
    for step in runners.values():
        timed(step, batches, a.warmup)
    per = timed(runners["plain fp32"], batches, a.warmup) / max(a.warmup, 1)
    steps = int(min(a.max_steps, max(20, a.target_s / max(per, 1e-6))))
    rates = {k: [] for k in runners}
    for _ in range(a.repeats):
        for k, step in runners.items():
            rates[k].append(batch * steps / timed(step, batches, steps))
    return {k: statistics.median(v) for k, v in rates.items()} | {"steps": steps}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--batches", type=int, nargs="+", default=[1024, 8192, 65536])
    p.add_argument("--dim", type=int, default=64, help="dx = dz")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--target-s", type=float, default=1.0, help="seconds per timed run")
    p.add_argument("--max-steps", type=int, default=5000)
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch")
    print(f"command: `{' '.join(sys.argv)}`  ")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, bf16 supported "
          f"{torch.cuda.is_bf16_supported()}; dx = dz = {a.dim}, critic joint depth 2, bound mine  \n")
    print("| width | batch | plain fp32 samples/s | library fp32 | library/plain | library bf16 | bf16/fp32 | steps/run |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in a.widths:
        for b in a.batches:
            r = cell(w, b, a)
            print(f"| {w} | {b} | {r['plain fp32']:,.0f} | {r['library fp32']:,.0f} | "
                  f"{r['library fp32'] / r['plain fp32']:.3f} | {r['library bf16']:,.0f} | "
                  f"{r['library bf16'] / r['library fp32']:.3f} | {r['steps']} |", flush=True)


if __name__ == "__main__":
    main()

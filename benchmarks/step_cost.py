"""CPU time per training step of ``Trainer.step`` by critic width and batch size, beside the plain
64-32 loop of ``benchmarks/suite.py``'s reference, in one process (process CPU time, one torch
thread, so other work on the machine disturbs it less than wall time). Prints a Markdown table.

    .venv/bin/python benchmarks/step_cost.py --dim 5
"""

from __future__ import annotations

import argparse
import time

import torch

from mine_dist.critics import CriticConfig
from mine_dist.estimator import EstimatorConfig, Trainer


def _timed(step, n: int) -> float:
    for _ in range(30):
        step()
    t = time.process_time()
    for _ in range(n):
        step()
    return (time.process_time() - t) / n * 1e3


def trainer_ms(width: int, batch: int, d: int, n: int, cca: bool = True) -> float:
    tr = Trainer(EstimatorConfig(batch_size=batch, critic=CriticConfig(width=width, cca=cca)), d, d,
                 torch.device("cpu"))
    x, z = torch.randn(batch, d), torch.randn(batch, d)
    return _timed(lambda: tr.step(x, z), n)


def plain_ms(d: int, n: int) -> float:
    net = torch.nn.Sequential(torch.nn.Linear(2 * d, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 1))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, z = torch.randn(256, d), torch.randn(256, d)

    def step():
        tj = net(torch.cat([x, z], 1)).squeeze(-1)
        tm = net(torch.cat([x, z[torch.randperm(256)]], 1)).squeeze(-1)
        loss = -(tj.mean() - (torch.logsumexp(tm, 0) - torch.log(torch.tensor(256.0))))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return _timed(step, n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=5, help="d_x = d_z")
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"d_x = d_z = {args.dim}; ms of process CPU time per step ({args.steps} steps after 30 warm-up)\n")
    print("| critic | batch | ms / step |\n|---|---:|---:|")
    print(f"| plain loop 64-32 | 256 | {plain_ms(args.dim, args.steps):.2f} |")
    for width, batch in [(256, 512), (128, 512), (256, 256), (128, 256)]:
        print(f"| mine-dist joint 2x{width} | {batch} | {trainer_ms(width, batch, args.dim, args.steps):.2f} |")
    for width, batch in [(256, 512), (128, 512)]:  # the CCA basis and Gaussian path are what cca adds
        print(f"| mine-dist joint 2x{width}, `cca: false` | {batch} | "
              f"{trainer_ms(width, batch, args.dim, args.steps, cca=False):.2f} |")


if __name__ == "__main__":
    main()

"""Steady-state training throughput: the library's MINE step vs a plain hand-written PyTorch loop.

Both sides train the same critic shape (an MLP on ``concat(x, z)``: ``depth`` hidden layers of
``width`` units, ReLU, one output) with Adam at the same learning rate on the same pre-made random
batches, in the same process, and are timed in alternation (library, plain, library, plain, ...)
for ``--repeats`` rounds; the table reports the median of each side, so slow spells on a shared
machine hit both sides alike. Throughput is joint samples (the batch size) per second of training.

* library: ``mine_dist.estimator.Trainer(cfg, dx, dz, cpu).step(x, z)``, exactly the per-step work
  ``MINE.estimate`` does (derangement marginals, log-space debiased EMA, the batch bound value),
  with ``EstimatorConfig(bound="mine", batch_size=B, critic=CriticConfig(width=W, depth=2))``.
* plain: the classic MINE reproduction a user would write: marginals from ``torch.roll(z, 1)``,
  one forward over ``cat(joint, marginal)``, ``ema = (1-a)*ema + a*mean(exp(t_marg)).item()``
  and ``loss = -(mean(t_joint) - mean(exp(t_marg)) / ema)``.

Steps per timed run are chosen per cell from the warmup timing (``--steps auto``, aiming at
``--target-s`` seconds per run) unless ``--steps N`` fixes them; both sides of a cell always run
the same number of steps.

    .venv/bin/python benchmarks/throughput.py                          # default grid (~5 min)
    .venv/bin/python benchmarks/throughput.py --widths 64 --batches 256 --steps 500 --repeats 7
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time

import torch
from torch import nn

from mine_dist.critics import CriticConfig
from mine_dist.estimator import EstimatorConfig, Trainer


class PlainMINE:
    """A minimal, independent MINE training loop (Belghazi et al. 2018, Algorithm 1 + EMA)."""

    def __init__(self, dx: int, dz: int, width: int, depth: int, lr: float, ema_rate: float, seed: int):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        d = dx + dz
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.rate = ema_rate
        self.ema = 1.0

    def step(self, x: torch.Tensor, z: torch.Tensor) -> float:
        b = x.shape[0]
        z_marg = torch.roll(z, 1, 0)
        t = self.net(torch.cat([torch.cat([x, z], 1), torch.cat([x, z_marg], 1)])).squeeze(-1)
        t_joint, t_marg = t[:b], t[b:]
        et = torch.exp(t_marg).mean()
        self.ema = (1 - self.rate) * self.ema + self.rate * et.item()
        loss = -(t_joint.mean() - et / self.ema)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return -loss.item()


def make_batches(n: int, b: int, dx: int, dz: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, dx, generator=g), torch.randn(b, dz, generator=g)) for _ in range(n)]


def run(step, batches, steps: int) -> tuple[float, float]:
    """(wall seconds by perf_counter, process CPU seconds) for ``steps`` calls of ``step``."""
    nb = len(batches)
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(steps):
        x, z = batches[i % nb]
        step(x, z)
    return time.perf_counter() - t0, time.process_time() - c0


def bench_cell(width: int, batch: int, a) -> dict:
    cfg = EstimatorConfig(bound="mine", batch_size=batch, critic=CriticConfig(width=width, depth=2))
    trainer = Trainer(cfg, a.dx, a.dz, torch.device("cpu"))
    plain = PlainMINE(a.dx, a.dz, width, 2, cfg.lr, cfg.ema_rate, cfg.seed)
    n_lib = sum(p.numel() for p in trainer.critic.parameters())
    n_plain = sum(p.numel() for p in plain.net.parameters())
    assert n_lib == n_plain, (n_lib, n_plain)
    batches = make_batches(a.n_batches, batch, a.dx, a.dz, seed=width * 100003 + batch)

    # Warmup (excluded), also used to size the timed runs.
    t_lib = run(trainer.step, batches, a.warmup)[0]
    t_plain = run(plain.step, batches, a.warmup)[0]
    if a.steps == "auto":
        per_step = max(t_lib, t_plain) / max(a.warmup, 1)
        steps = int(min(a.max_steps, max(a.min_steps, round(a.target_s / max(per_step, 1e-7)))))
    else:
        steps = int(a.steps)

    lib_t, plain_t = [], []
    for _ in range(a.repeats):
        lib_t.append(run(trainer.step, batches, steps))
        plain_t.append(run(plain.step, batches, steps))
    lib = statistics.median(batch * steps / w for w, _ in lib_t)
    pl = statistics.median(batch * steps / w for w, _ in plain_t)
    ratios = sorted(p[0] / l[0] for l, p in zip(lib_t, plain_t))  # per round, library/plain rate
    cpu_ratio = statistics.median(p[1] for p in plain_t) / max(statistics.median(l[1] for l in lib_t), 1e-12)
    return {"width": width, "batch": batch, "steps": steps, "plain": pl, "lib": lib,
            "ratio": lib / pl, "ratio_lo": ratios[0], "ratio_hi": ratios[-1], "cpu_ratio": cpu_ratio}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096, 8192])
    p.add_argument("--steps", default="auto",
                   help="timed steps per run per side, or 'auto' (sized from warmup to ~--target-s)")
    p.add_argument("--target-s", type=float, default=0.75, help="seconds per timed run with --steps auto")
    p.add_argument("--min-steps", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per side before timing")
    p.add_argument("--repeats", type=int, default=9, help="alternating library/plain rounds (median)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--dx", type=int, default=16)
    p.add_argument("--dz", type=int, default=16)
    p.add_argument("--n-batches", type=int, default=8, help="distinct pre-made batches cycled over")
    a = p.parse_args(argv)
    if a.steps != "auto":
        a.steps = int(a.steps)
        if a.steps < 1:
            p.error("--steps must be >= 1 or 'auto'")
    if a.warmup < 1 and a.steps == "auto":
        p.error("--steps auto needs --warmup >= 1")
    if a.repeats < 1:
        p.error("--repeats must be >= 1")
    torch.set_num_threads(a.threads)

    cmd = " ".join(shlex.quote(s) for s in [os.path.relpath(sys.executable)] + sys.argv)
    print(f"command: `{cmd}`  ")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()} "
          f"(interop {torch.get_num_interop_threads()}), python {platform.python_version()}, "
          f"{platform.machine()}, os.cpu_count {os.cpu_count()}  ")
    print(f"dx={a.dx} dz={a.dz}, critic depth 2, bound=mine, warmup {a.warmup}, "
          f"steps {a.steps if a.steps != 'auto' else f'auto (~{a.target_s:g} s/run)'}, "
          f"repeats {a.repeats} (median, library/plain alternated)")
    print()
    print("| width | batch | plain samples/s | library samples/s | library/plain | per-round range "
          "| library/plain by CPU time | steps/run |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    t0 = time.perf_counter()
    worst = None
    for w in a.widths:
        for b in a.batches:
            r = bench_cell(w, b, a)
            print(f"| {w} | {b} | {r['plain']:,.0f} | {r['lib']:,.0f} | {r['ratio']:.3f} | "
                  f"{r['ratio_lo']:.2f}-{r['ratio_hi']:.2f} | {r['cpu_ratio']:.3f} | {r['steps']} |", flush=True)
            if worst is None or r["ratio"] < worst["ratio"]:
                worst = r
    print()
    print("samples/s = joint samples (batch rows) per second of wall time (perf_counter), median over "
          "rounds; per-round range = min-max of library/plain within one round; the CPU-time ratio "
          "(process_time, medians) is less sensitive to other processes on a shared machine.  ")
    print(f"total wall {time.perf_counter() - t0:.0f} s; lowest library/plain {worst['ratio']:.3f} "
          f"at width {worst['width']}, batch {worst['batch']}")


if __name__ == "__main__":
    main()

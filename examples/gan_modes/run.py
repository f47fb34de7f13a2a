"""Mode collapse on the 25-Gaussians grid, with and without MINE's mutual-information term.

A small GAN maps ``[eps, c]`` (noise and code, both standard normal) to the plane; the data are 25
Gaussians with sd 0.05 centred on the grid {-4, -2, 0, 2, 4}^2. With ``beta > 0`` the generator's
loss is ``L_GAN - beta * I(G([eps, c]); c)``, the MI term estimated by
:class:`mine_dist.objective.MutualInformation` (DV with the EMA-corrected gradient) and its
gradient adaptively clipped to the GAN gradient's norm (MINE, sec. 5.1 and the appendix).

Metrics on 2,500 generated samples: a sample is *high quality* when it lies within 3 sd of its
nearest mode; a mode is *captured* when at least 20 high-quality samples (a fifth of its fair share
of 100) fall on it. Each variant runs with every seed; the table gives mean, sd, min and max.

    .venv/bin/python examples/gan_modes/run.py                       # the documented run (3 seeds)
    .venv/bin/python examples/gan_modes/run.py --steps 200 --seeds 1 # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn

from mine_dist.critics import CriticConfig

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import pyplot, summary, write_outputs  # noqa: E402  (examples/common.py)
from mine_dist.objective import MutualInformation, ObjectiveConfig, backward_with_adaptive_clip

HERE = os.path.dirname(os.path.abspath(__file__))
SD = 0.05
MODES = torch.tensor([(a, b) for a in (-4.0, -2.0, 0.0, 2.0, 4.0) for b in (-4.0, -2.0, 0.0, 2.0, 4.0)])


def mlp(d_in: int, d_out: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, d_out))


def real_batch(n: int, g: torch.Generator) -> torch.Tensor:
    return MODES[torch.randint(0, len(MODES), (n,), generator=g)] + SD * torch.randn(n, 2, generator=g)


def mode_metrics(samples: torch.Tensor, min_count: int = 20) -> dict:
    """Modes captured and share of high-quality samples (within 3 sd of the nearest mode)."""
    d = torch.cdist(samples, MODES)
    dist, nearest = d.min(1)
    good = dist <= 3 * SD
    counts = torch.bincount(nearest[good], minlength=len(MODES))
    return {"modes": int((counts >= min_count).sum()), "high_quality": float(good.float().mean())}


def train(seed: int, beta: float, args) -> tuple[dict, torch.Tensor]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(10_000 + seed)
    dim_in = args.noise_dim + args.code_dim
    gen, disc = mlp(dim_in, 2, args.width), mlp(2, 1, args.width)
    opt_g = torch.optim.Adam(gen.parameters(), lr=args.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr, betas=(0.5, 0.999))
    mi = MutualInformation(2, args.code_dim, ObjectiveConfig(critic=CriticConfig(width=args.width, depth=2),
                                                             lr=args.mi_lr, seed=seed))
    bce = nn.BCEWithLogitsLoss()
    ones, zeros = torch.ones(args.batch, 1), torch.zeros(args.batch, 1)
    mi_values = []
    for step in range(args.steps):
        latent = torch.randn(args.batch, dim_in, generator=g)
        fake = gen(latent)
        d_loss = bce(disc(real_batch(args.batch, g)), ones) + bce(disc(fake.detach()), zeros)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        gan_loss = bce(disc(fake), ones)  # non-saturating generator loss
        opt_g.zero_grad(set_to_none=True)
        if beta > 0:
            term = mi(fake, latent[:, args.noise_dim:])  # I(G([eps, c]); c)
            backward_with_adaptive_clip(gan_loss, -beta * term, list(gen.parameters()), factor=args.clip)
            mi_values.append(float(term.detach()))
        else:
            gan_loss.backward()
        opt_g.step()
    with torch.no_grad():
        samples = gen(torch.randn(args.samples, dim_in, generator=g))
    out = {"seed": seed, "beta": beta, **mode_metrics(samples)}
    if mi_values:
        out["mi_nats_last_500"] = float(np.mean(mi_values[-500:]))
    return out, samples


def plot(samples: dict):  # -> matplotlib Figure
    plt = pyplot()
    fig, axes = plt.subplots(1, len(samples), figsize=(4.2 * len(samples), 4.4), squeeze=False)
    for ax, (title, s) in zip(axes[0], samples.items()):
        ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.4, color="tab:blue", label="generated")
        ax.scatter(MODES[:, 0], MODES[:, 1], s=30, marker="x", color="tab:red", label="modes")
        ax.set_xlim(-6, 6), ax.set_ylim(-6, 6), ax.set_aspect("equal"), ax.set_title(title, fontsize=9)
    axes[0][0].legend(loc="lower left", fontsize=7)
    return fig


def print_table(table: dict) -> None:
    """The markdown table of docs/objective.md: mean ± sd [min, max] over seeds."""
    print("| variant | modes captured (of 25): mean ± sd [min, max] | high-quality share |\n|---|---|---|")
    for name, s in table.items():
        m, h = s["modes"], s["high_quality"]
        print(f"| {name} | {m['mean']:.1f} ± {m['sd']:.1f} [{m['min']:.0f}, {m['max']:.0f}] "
              f"| {100 * h['mean']:.1f}% ± {100 * h['sd']:.1f} [{100 * h['min']:.1f}, {100 * h['max']:.1f}] |")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="run seeds FIRST .. FIRST+SEEDS-1")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--beta", type=float, default=1.0, help="weight of the MI term in the MI variant")
    p.add_argument("--clip", type=float, default=1.0, help="adaptive clipping factor (MI grad norm <= clip * GAN grad norm)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--noise-dim", type=int, default=8)
    p.add_argument("--code-dim", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--mi-lr", type=float, default=1e-3)
    p.add_argument("--samples", type=int, default=2500)
    p.add_argument("--out", default=os.path.join(HERE, "out"), help="directory for results.json")
    p.add_argument("--png", default=None, help="samples figure (default: OUT/gan_modes.png)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows, first = [], {}
    t0 = time.time()
    for beta in (0.0, args.beta):
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            r, samples = train(seed, beta, args)
            rows.append(r)
            print(json.dumps(r), f"({time.time() - t0:.0f} s)", file=sys.stderr)
            if seed == args.first_seed:
                name = "GAN" if beta == 0 else f"GAN + {beta:g} I(G(eps,c); c)"
                first[f"{name}\nseed {seed}: {r['modes']}/25 modes, {100 * r['high_quality']:.0f}% high quality"] = samples
    table = {}
    for beta in (0.0, args.beta):
        sub = [r for r in rows if r["beta"] == beta]
        table[f"beta={beta:g}"] = {k: summary(sub, k) for k in ("modes", "high_quality")}
    result = {"args": vars(args), "runs": rows, "summary": table, "wall_s": time.time() - t0}
    write_outputs(result, args.out, plot(first), args.png or os.path.join(args.out, "gan_modes.png"))
    print_table(table)
    return result


if __name__ == "__main__":
    main()

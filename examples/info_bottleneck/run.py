"""Information Bottleneck on scikit-learn's digits with MINE's I(X; Z) as the compression term.

A stochastic encoder ``z = mu(x) + sigma(x) * eps`` (K = 16) feeds a linear softmax classifier.
Three variants, each over the same seeds and the same fixed train/test split (1,297 / 500 images):

* ``deterministic``: ``z = mu(x)``, cross-entropy only (the deterministic-bottleneck baseline);
* ``stochastic``: the noisy encoder, cross-entropy only (beta = 0);
* ``stochastic + beta I(X;Z)``: cross-entropy + beta * I(X; Z), the MI term estimated by
  :class:`mine_dist.objective.MutualInformation` (DV, EMA-corrected gradient) on each batch
  (MINE, sec. 5.3); the critic maximizes the bound while the encoder minimizes it.

Every variant trains the same kind of MI module on (x, z), so the information plane is measured
the same way for all three (with weight 0 in the loss of the first two). Every ``--eval-every``
epochs, on the test images: I(X; Z) is the DV bound of that critic (eval mode, one pass over the
500 test rows, negatives from a cyclic shift), and I(Z; Y) is the Barber-Agakov lower bound
``H(Y) - CE(test)`` with z sampled. Both are lower bounds in nats. After training, I(X; Z) of the
final encoder is also re-estimated by a fresh critic trained on the train rows with the encoder
frozen (``--final-critic-steps``), which does not depend on how well the online critic kept up.

    .venv/bin/python examples/info_bottleneck/run.py                        # the documented run
    .venv/bin/python examples/info_bottleneck/run.py --epochs 3 --seeds 1   # a smoke run (seconds)
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
import torch.nn.functional as F
from torch import nn

from mine_dist.critics import CriticConfig

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import pyplot, summary, write_outputs  # noqa: E402  (examples/common.py)
from mine_dist.objective import MutualInformation, ObjectiveConfig

HERE = os.path.dirname(os.path.abspath(__file__))
N_TEST = 500


def load_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixels scaled to [0, 1]; a fixed split (seed 0, not the training seed), stratified by label."""
    d = np.load(os.path.join(HERE, "data", "digits.npz"))
    x = torch.tensor(d["images"], dtype=torch.float32) / 16.0
    y = torch.tensor(d["labels"], dtype=torch.long)
    rng = np.random.default_rng(0)
    test = np.concatenate([rng.permutation(np.flatnonzero(d["labels"] == c))[: N_TEST // 10] for c in range(10)])
    mask = np.zeros(len(y), bool)
    mask[test] = True
    return x[~mask], y[~mask], x[mask], y[mask]


class Encoder(nn.Module):
    """x -> (mu, log sigma) -> z = mu + sigma * eps; ``stochastic=False`` returns mu.

    ``noise="learned"``: sigma(x) is an output of the network (as in VIB); ``"fixed"``: sigma = 1, so
    the only way to carry more information is to spread mu out against the unit noise.
    """

    def __init__(self, d_in: int, k: int, width: int, stochastic: bool, noise: str = "learned"):
        super().__init__()
        self.learned = noise == "learned"
        self.net = nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, (2 if self.learned else 1) * k))
        self.k, self.stochastic = k, stochastic

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma), each (n, k)."""
        h = self.net(x)
        if not self.learned:
            return h, torch.zeros_like(h)
        return h[:, : self.k], h[:, self.k:]

    def forward(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        mu, log_sigma = self.moments(x)
        if not self.stochastic:
            return mu
        return mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=g)


@torch.no_grad()
def known_density_bracket(enc: Encoder, x: torch.Tensor, g: torch.Generator, draws: int = 4) -> tuple[float, float]:
    """I(X; Z) between two bounds that use the encoder's own Gaussian density q(z | x).

    With S[i, j] = log q(z_i | x_j) on n rows: ``mean_i S_ii - log mean_j exp S_ij`` is InfoNCE with
    the optimal critic (a lower bound, at most log n); leaving j = i out of the mean gives the
    leave-one-out upper bound (Poole et al., ICML 2019, sec. 2.2 and eq. 13). Only for stochastic
    encoders; a yardstick for the critic-based estimates.
    """
    mu, log_sigma = (t.double() for t in enc.moments(x))  # float64: a learned sigma can get tiny
    n = len(x)
    lo, hi = [], []
    for _ in range(draws):
        eps = torch.randn(mu.shape, generator=g, dtype=torch.float64)
        z = mu + torch.exp(log_sigma) * eps
        u = (z[:, None, :] - mu[None, :, :]) * torch.exp(-log_sigma)[None, :, :]
        u.diagonal(dim1=0, dim2=1).copy_(eps.T)  # exactly eps on the diagonal, even where sigma underflows
        s = (-0.5 * u**2 - log_sigma[None, :, :]).sum(2)  # log q(z_i | x_j) up to a constant
        diag = s.diagonal()
        lo.append(float((diag - torch.logsumexp(s, 1)).mean()) + math.log(n))
        off = s.masked_fill(torch.eye(n, dtype=torch.bool), -math.inf)
        hi.append(float((diag - torch.logsumexp(off, 1)).mean()) + math.log(n - 1))
    return float(np.mean(lo)), float(np.mean(hi))


@torch.no_grad()
def noise_share(enc: Encoder, x: torch.Tensor) -> float:
    """Share of z's variance that is encoder noise: mean sigma^2 / (Var mu + mean sigma^2), per dim."""
    if not enc.stochastic:
        return 0.0
    mu, log_sigma = enc.moments(x)
    noise = torch.exp(2 * log_sigma).mean(0)
    return float((noise / (mu.var(0) + noise)).mean())


def mi_module(k: int, args, seed: int, critic_steps: int) -> MutualInformation:
    cfg = ObjectiveConfig(critic=CriticConfig(width=args.critic_width, depth=2), lr=args.mi_lr, seed=seed,
                          critic_steps=critic_steps)
    return MutualInformation(64, k, cfg)


@torch.no_grad()
def evaluate(enc, clf, mi, x, y, h_y: float, g) -> dict:
    z = enc(x, g)
    logits = clf(z)
    was = mi.training
    mi.eval()
    ixz = float(mi(x, z))
    mi.train(was)
    out = {"test_error": float((logits.argmax(1) != y).float().mean()),
           "izy_nats": h_y - float(F.cross_entropy(logits, y)), "ixz_nats": ixz}
    if enc.stochastic:
        out["ixz_lower_nats"], out["ixz_upper_nats"] = known_density_bracket(enc, x, g)
    return out


def final_ixz(enc, x_tr, x_te, args, seed: int, g) -> float:
    """I(X; Z) of the frozen encoder: a fresh critic trained on train rows, DV read on test rows."""
    mi = mi_module(enc.k, args, 5000 + seed, critic_steps=1)
    for _ in range(args.final_critic_steps):
        idx = torch.randint(0, len(x_tr), (args.batch,), generator=g)
        mi(x_tr[idx], enc(x_tr[idx], g).detach())
    mi.eval()
    with torch.no_grad():
        return float(mi(x_te, enc(x_te, g)))


def variant_beta(variant: str) -> float:
    return float(variant.split("=")[1]) if variant.startswith("beta=") else 0.0


def train(variant: str, seed: int, args, data) -> dict:
    x_tr, y_tr, x_te, y_te = data
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(20_000 + seed)
    beta = variant_beta(variant)
    enc = Encoder(64, args.k, args.width, stochastic=variant != "deterministic", noise=args.noise)
    clf = nn.Linear(args.k, 10)
    opt = torch.optim.Adam([*enc.parameters(), *clf.parameters()], lr=args.lr)
    mi = mi_module(args.k, args, seed, args.critic_steps)
    p = torch.bincount(y_te, minlength=10).float() / len(y_te)
    h_y = float(-(p * p.log()).sum())
    curve = []
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(x_tr), generator=g)
        for idx in order[: len(order) // args.batch * args.batch].split(args.batch):
            x, y = x_tr[idx], y_tr[idx]
            z = enc(x, g)
            loss = F.cross_entropy(clf(z), y)
            term = mi(x, z if beta > 0 else z.detach())  # the critic trains in every variant
            if beta > 0:
                loss = loss + beta * term
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            curve.append({"epoch": epoch, **evaluate(enc, clf, mi, x_te, y_te, h_y, g)})
    last = curve[-1]
    return {"variant": variant, "seed": seed, "beta": beta, "test_error": last["test_error"],
            "izy_nats": last["izy_nats"], "ixz_online_nats": last["ixz_nats"],
            "ixz_final_nats": final_ixz(enc, x_tr, x_te, args, seed, g),
            "ixz_lower_nats": last.get("ixz_lower_nats", math.nan), "ixz_upper_nats": last.get("ixz_upper_nats", math.nan),
            "noise_share": noise_share(enc, x_te), "curve": curve}


COLORS = ("tab:gray", "tab:blue", "tab:red", "tab:orange", "tab:green", "tab:purple")


def plot(rows: list[dict], labels: dict):  # -> matplotlib Figure
    plt = pyplot()
    fig, (ax, cx, bx) = plt.subplots(1, 3, figsize=(16, 4.6))
    for r in rows:
        c, color = r["curve"], COLORS[list(labels).index(r["variant"]) % len(COLORS)]
        lab = labels[r["variant"]] if r["seed"] == 0 else None
        izy = [p["izy_nats"] for p in c]
        planes = [(ax, "ixz_nats")] + ([(cx, "ixz_lower_nats")] if "ixz_lower_nats" in c[0] else [])
        for axis, key in planes:
            ixz = [p[key] for p in c]
            axis.plot(ixz, izy, "-", color=color, alpha=0.5, lw=1)
            axis.scatter(ixz, izy, c=[p["epoch"] for p in c], cmap="viridis", s=10, zorder=3)
            axis.plot(ixz[-1:], izy[-1:], "o", mfc="none", mec=color, ms=9, label=lab)
        bx.plot([p["epoch"] for p in c], [100 * p["test_error"] for p in c], color=color, alpha=0.7, lw=1, label=lab)
    ax.set_xlabel("I(X; Z), nats: DV bound of the MINE critic (online), test rows")
    cx.set_xlabel("I(X; Z), nats: InfoNCE bound with the encoder's density, test rows")
    cap = math.log(N_TEST)  # InfoNCE over n rows never exceeds log n
    cx.axvline(cap, color="k", lw=0.5, ls="--")
    cx.text(cap, 0.75, " log 500: the most\n 500 test rows certify", transform=cx.get_xaxis_transform(), fontsize=7, ha="right")
    cx.set_xlim(0, cap + 0.5)
    for axis, where in ((ax, "lower right"), (cx, "center left")):
        axis.set_ylabel("I(Z; Y), nats: H(Y) - CE, test rows")
        axis.axhline(math.log(10), color="k", lw=0.5, ls=":")
        axis.legend(fontsize=7, loc=where)
    ax.set_title("information plane, MINE estimate (dots: epochs, dark = early; rings: end)", fontsize=9)
    cx.set_title("information plane, known-density bound (stochastic encoders)", fontsize=9)
    bx.set_xlabel("epoch"), bx.set_ylabel("test error, %"), bx.set_ylim(0, 15)
    bx.set_title("test error (500 images), every seed", fontsize=9)
    bx.legend(fontsize=7)
    return fig


def print_table(table: dict) -> None:
    """The markdown table of docs/objective.md: mean ± sd over seeds ([min, max] where they span decades)."""
    def ms(st, k):
        return f"{st[k]['mean']:.2f} ± {st[k]['sd']:.2f}" if k in st else "—"

    def span(st, k):
        return f"[{st[k]['min']:.3g}, {st[k]['max']:.3g}]" if k in st else "—"

    print("| variant | test error %: mean ± sd [min, max] | I(Z;Y) | I(X;Z) MINE online | I(X;Z) MINE fresh critic "
          "| I(X;Z) known-density lower | upper [min, max] | noise share [min, max] |\n|---|---|---|---|---|---|---|---|")
    for name, st in table.items():
        e = st["test_error"]
        err = f"{100 * e['mean']:.2f} ± {100 * e['sd']:.2f} [{100 * e['min']:.1f}, {100 * e['max']:.1f}]"
        cells = [err, ms(st, "izy_nats"), ms(st, "ixz_online_nats"), ms(st, "ixz_final_nats"), ms(st, "ixz_lower_nats"),
                 span(st, "ixz_upper_nats"), span(st, "noise_share") if "ixz_lower_nats" in st else "—"]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--betas", default="0.01,0.1", help="comma list: one MI-regularized variant per beta")
    p.add_argument("--k", type=int, default=16, help="bottleneck width")
    p.add_argument("--noise", choices=("learned", "fixed"), default="learned", help="encoder noise sd: learned or 1")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--critic-width", type=int, default=128)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--mi-lr", type=float, default=1e-3)
    p.add_argument("--critic-steps", type=int, default=1, help="critic updates per training batch")
    p.add_argument("--final-critic-steps", type=int, default=2000)
    p.add_argument("--out", default=os.path.join(HERE, "out"), help="directory for results.json")
    p.add_argument("--png", default=None, help="information-plane figure (default: OUT/info_plane.png)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = load_digits()
    labels = {"deterministic": "deterministic, CE", "stochastic": "stochastic, CE"}
    labels.update({f"beta={float(b):g}": f"stochastic, CE + {float(b):g} I(X;Z)" for b in args.betas.split(",")})
    rows, t0 = [], time.time()
    for variant in labels:
        for seed in range(args.seeds):
            rows.append(train(variant, seed, args, data))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "curve"}), f"({time.time() - t0:.0f} s)",
                  file=sys.stderr)
    keys = ("test_error", "izy_nats", "ixz_online_nats", "ixz_final_nats", "ixz_lower_nats", "ixz_upper_nats",
            "noise_share")
    table = {}
    for v in labels:
        sub = [r for r in rows if r["variant"] == v]
        table[labels[v]] = {k: summary(sub, k) for k in keys if math.isfinite(sub[0][k])}
    result = {"args": vars(args), "runs": rows, "summary": table, "wall_s": time.time() - t0}
    write_outputs(result, args.out, plot(rows, labels), args.png or os.path.join(args.out, "info_plane.png"))
    print_table(table)
    return result


if __name__ == "__main__":
    main()

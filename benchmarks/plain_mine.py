"""A plain PyTorch MINE loop: the yardstick ``benchmarks/suite.py`` runs beside mine-dist (issue 12).

What a user would write from the paper: concat critic 64-32 ReLU, batch 256, 3,000 steps, Adam
1e-3, the DV objective with marginal pairs from a shuffle of z within the batch (plain minibatch
gradient), inputs standardized with training statistics, 80% train / 20% held out, and the DV
bound on the held-out rows (16 shifted pairings of a shuffled test set as marginal pairs). A
categorical z (an integer column) is one-hot encoded.

    .venv/bin/python benchmarks/plain_mine.py DATA_DIR [--steps 3000] [--seed 0]

Prints one JSON line: ``mi_nats``, ``fit_s`` (training + held-out scoring), ``import_s``.
"""

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402


def load(path):
    t = pq.read_table(sorted(glob.glob(os.path.join(path, "*.parquet"))), columns=["x", "z"])
    x = t.column("x").combine_chunks().values.to_numpy().reshape(t.num_rows, -1)
    z = t.column("z").combine_chunks()
    if hasattr(z, "values"):
        z = z.values.to_numpy().reshape(t.num_rows, -1)
    else:  # an integer label: one-hot
        z = z.to_numpy()
        z = np.eye(int(z.max()) + 1, dtype=np.float32)[z]
    return x.astype(np.float32), z.astype(np.float32)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    import_s = time.perf_counter() - T_START
    x, z = load(a.data)
    perm = np.random.default_rng(a.seed).permutation(len(x))
    tr, te = perm[: int(0.8 * len(x))], perm[int(0.8 * len(x)):]
    mx, sx, mz, sz = x[tr].mean(0), x[tr].std(0) + 1e-6, z[tr].mean(0), z[tr].std(0) + 1e-6
    X, Z = torch.from_numpy((x - mx) / sx), torch.from_numpy((z - mz) / sz)
    critic = torch.nn.Sequential(torch.nn.Linear(X.shape[1] + Z.shape[1], 64), torch.nn.ReLU(),
                                 torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    Xtr, Ztr = X[tr], Z[tr]
    for _ in range(a.steps):
        idx = torch.randint(0, len(tr), (256,))
        xb, zb = Xtr[idx], Ztr[idx]
        t_joint = critic(torch.cat([xb, zb], 1))
        t_marg = critic(torch.cat([xb, zb[torch.randperm(256)]], 1))
        dv = t_joint.mean() - (torch.logsumexp(t_marg, 0) - math.log(256))
        opt.zero_grad()
        (-dv).backward()
        opt.step()
    with torch.no_grad():
        xt, zt = X[te], Z[te]
        t_joint = critic(torch.cat([xt, zt], 1)).squeeze(1)
        t_marg = torch.cat([critic(torch.cat([xt, zt.roll(k, 0)], 1)).squeeze(1) for k in range(1, 17)])
        dv = t_joint.mean() - (torch.logsumexp(t_marg, 0) - math.log(t_marg.numel()))
    print(json.dumps({"mi_nats": float(dv), "fit_s": time.perf_counter() - t0, "import_s": import_s,
                      "steps": a.steps}), flush=True)


if __name__ == "__main__":
    main()

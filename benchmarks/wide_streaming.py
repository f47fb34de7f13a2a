"""Wide embeddings at scale: streaming vs materialized vs raw pyarrow, samples/s and memory, in one run.

For each (dim, dtype on disk) a dataset of ``--rows`` rows is written under ``--parent`` (pyarrow
defaults: snappy, dictionary encoding on; row groups of ``--row-group`` rows, ``--shards`` files)
by a child process, read by each path below, then deleted:

* **raw pyarrow**: ``ParquetFile.iter_batches(B, columns=[x, z])`` -> ``flatten().to_numpy()``
  (zero-copy) -> reshape -> float32 torch tensors, every row: the floor of what reading costs;
* **streaming (as the Train worker gets it)**: ``data.split_dataset(info, TRAIN, ...)`` (one Ray
  Data task per row group: ``read_unit`` + normalizer) through ``streaming_split(1, equal=True)``
  (what ``DataConfig(datasets_to_split=["train"])`` does), ``iter_torch_batches(B, drop_last=True,
  local_shuffle_buffer_size=max(4B, 16384))`` as ``worker_loop`` calls it, Ray Data limited to the
  CPUs the one Train worker leaves free (cluster CPUs - ``train.auto_cpus_per_worker(1, False)``);
  the train rows (~70%) are delivered. At these sizes ``--materialize auto`` keeps the split out
  of the object store (it takes more than a quarter of it), so this is the path training takes;
* **materialized (in-process)**: what ``mine-dist estimate --workers 0`` does: ``io.read_arrays``
  (float64 in memory) of the first ``--materialize-rows`` rows, split, normalizer fitted on the
  train rows, ``nx.apply`` of every row, torch tensors, then shuffled batches ``X[idx]`` of the
  train rows as ``MINE.estimate`` draws them. Its memory grows with the rows (float64 x and z plus
  the float32 copy), so it is capped: 1M x 768 would need more than this 24 GiB machine has;
* **training fed by each path**: ``Trainer.step`` (``EstimatorConfig`` defaults: joint critic
  256 x 2, batch 512) on ``--train-steps`` batches from the streaming iterator vs from the
  materialized tensors, alternated, in this process (torch threads 1, as a Ray Train worker).

Memory: peak RSS of this process (the consumer, as the Train worker is) during each pass, its
anonymous part (private heap) and shared part (object-store pages it maps), and the peak PSS of
the Ray task workers running the read tasks, sampled every 0.25 s from /proc. "Flat in rows":
the streaming pass of the first configuration is repeated on ``--memory-rows`` rows.

The data: x ~ N(0, I_d) and z_i = rho x_i + sqrt(1 - rho^2) e_i for the first ``--latent``
coordinates, independent N(0, 1) for the rest (rho 0.8): I(X;Z) = -(latent/2) ln(1 - rho^2)
= 8.17 nats for 16 latent pairs. Rounding to float32 / float16 is a function of each variable, so
the stored pair's MI is at most that (data processing inequality); ``ground_truth.json`` records it.

    .venv/bin/python benchmarks/wide_streaming.py --quick        # 100k rows, 384/768-d, float32/float16: ~10 min at load 20
    .venv/bin/python benchmarks/wide_streaming.py                # 1M rows, 6 configs: long (~25 min for 2 configs at load 20), 6 GB of /tmp at a time
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RHO = 0.8


def write_pair(out: str, rows: int, dim: int, dtype: str, shards: int, row_group: int, latent: int,
               seed: int = 0) -> dict:
    """Write the dataset (see the module docstring); ``dtype`` float32, float16, or float16-plain
    (float16 without dictionary encoding). Memory: one shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    np_dtype = np.float16 if dtype.startswith("float16") else np.float32
    opts = {"use_dictionary": False} if dtype.endswith("-plain") else {}
    bounds = np.linspace(0, rows, shards + 1).astype(np.int64)
    c = math.sqrt(1 - RHO**2)
    for s in range(shards):
        n = int(bounds[s + 1] - bounds[s])
        rng = np.random.default_rng([seed, s])
        x = rng.standard_normal((n, dim), dtype=np.float32)
        z = rng.standard_normal((n, dim), dtype=np.float32)
        z[:, :latent] *= c
        z[:, :latent] += RHO * x[:, :latent]
        cols = {k: pa.FixedSizeListArray.from_arrays(pa.array(v.astype(np_dtype, copy=False).reshape(-1)), dim)
                for k, v in (("x", x), ("z", z))}
        pq.write_table(pa.table(cols), os.path.join(out, f"part-{s:05d}.parquet"), row_group_size=row_group, **opts)
        del x, z, cols
    mi = -(latent / 2) * math.log(1 - RHO**2)
    truth = {"name": "latent-gaussian-in-noise", "dim_x": dim, "dim_z": dim, "latent": latent, "rho": RHO,
             "dtype_on_disk": dtype, "mi_nats": mi, "mi_bits": mi / math.log(2),
             "note": "MI of the float64 construction; the stored (rounded) pair's MI is at most this",
             "rows": rows, "shards": shards, "seed": seed}
    with open(os.path.join(out, "ground_truth.json"), "w") as f:
        json.dump(truth, f, indent=2)
    return truth


def make(parent: str, rows: int, dim: int, dtype: str, a) -> tuple[str, float, int]:
    """Write one dataset in a child process (its memory stays out of this one); (dir, s, bytes)."""
    d = tempfile.mkdtemp(prefix=f"mine_wide_{dim}_{dtype}_", dir=parent)
    code = (f"import sys; sys.path.insert(0, {HERE!r}); from wide_streaming import write_pair; "
            f"write_pair(sys.argv[1], {rows}, {dim}, {dtype!r}, {a.shards}, {a.row_group}, {a.latent})")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, d], check=True)
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    return d, time.perf_counter() - t0, size


def raw_batches(files, b: int, dim: int):
    import pyarrow.parquet as pq
    import torch

    for f in files:
        for rb in pq.ParquetFile(f).iter_batches(batch_size=b, columns=["x", "z"]):
            x = torch.from_numpy(rb.column(0).flatten().to_numpy().reshape(-1, dim)).float()
            z = torch.from_numpy(rb.column(1).flatten().to_numpy().reshape(-1, dim)).float()
            yield x.shape[0] + 0 * z.shape[0]


def materialize(info, max_rows: int, b: int, method: str):
    """The in-process path up to its first batch: (X, Z, train index, load seconds)."""
    import torch

    from mine_dist import io, normalize, split

    t0 = time.perf_counter()
    x, z, keys, _ = io.read_arrays(info, max_rows)
    tr = np.flatnonzero(split.assign(keys, 0.1, 0.2) == split.TRAIN)
    nx = normalize.fit(method, x[tr], "x")
    nz = normalize.fit(method, z[tr], "z")
    X, Z = torch.from_numpy(nx.apply(x)), torch.from_numpy(nz.apply(z))
    del x, z
    return X, Z, torch.from_numpy(tr), time.perf_counter() - t0


def memory_batches(X, Z, tr, b: int, step=None, limit: int | None = None):
    """Shuffled batches of the train rows as ``MINE.estimate`` draws them (one epoch, or ``limit``)."""
    import torch

    gen = torch.Generator().manual_seed(1)
    perm = tr[torch.randperm(tr.numel(), generator=gen)]
    for k, i in enumerate(range(0, perm.numel() - b + 1, b)):
        if limit is not None and k >= limit:
            return
        idx = perm[i:i + b]
        xb, zb = X[idx], Z[idx]
        if step is not None:
            step(xb, zb)
        yield b


def mem_summary(sampler, t0: float, t1: float) -> dict:
    g = sampler.peak_by_group(t0, t1)
    p = sampler.peak(t0, t1)
    return {"rss": p.get("driver_rss", 0.0), "anon": g.get("driver anon", 0.0), "shmem": g.get("driver shmem", 0.0),
            "tasks": g.get("Ray task workers (read/scan tasks, idle pool)", 0.0), "tree_pss": p.get("pss", 0.0)}


def measured(sampler, fn) -> tuple[dict, dict]:
    from ray_input import timed_pass

    t0 = time.monotonic()
    q = timed_pass(fn(), sampler)
    time.sleep(0.3)  # one more memory sample after the pass
    return q, mem_summary(sampler, t0, time.monotonic())


def gib(v: float) -> str:
    return f"{v / 2**30:.2f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dims", type=int, nargs="+", default=[384, 768])
    p.add_argument("--dtypes", nargs="+", default=["float32", "float16", "float16-plain"],
                   choices=["float32", "float16", "float16-plain"],
                   help="on-disk types; float16-plain: float16 written without dictionary encoding")
    p.add_argument("--configs", nargs="+", metavar="DIM:DTYPE",
                   help="explicit (dim, dtype) pairs instead of every --dims x --dtypes, e.g. 384:float32 768:float16")
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--row-group", type=int, default=16384)
    p.add_argument("--latent", type=int, default=16)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--materialize-rows", type=int, default=100_000, help="rows the materialized path reads")
    p.add_argument("--memory-rows", type=int, default=250_000,
                   help="the first configuration's streaming pass again on this many rows (memory flat in rows)")
    p.add_argument("--train-steps", type=int, default=200, help="Trainer.step batches per fed run")
    p.add_argument("--fed-only", action="store_true", help="only the fed-training comparison (no input passes)")
    p.add_argument("--normalize", choices=["standard", "rank-gauss"], default="standard",
                   help="normalizer of both paths (the tables in docs/benchmarks.md before 2026-12-02 used "
                        "standard; the estimator's default is rank-gauss)")
    p.add_argument("--parent", default="/tmp")
    p.add_argument("--quick", action="store_true", help="100k rows, 384/768-d float32/float16, short runs")
    a = p.parse_args(argv)
    if a.quick:
        a.rows, a.dtypes, a.shards = 100_000, ["float32", "float16"], 4
        a.materialize_rows, a.memory_rows, a.train_steps = 50_000, 25_000, 60
    a.memory_rows = min(a.memory_rows, a.rows)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    sys.path.insert(0, HERE)

    import torch

    torch.set_num_threads(1)
    from ray_train_throughput import TreeSampler, header, start_ray
    from ray_input import lazy_split, ray_batches

    worst = max(a.dims) * 2 * a.rows * 4
    free = shutil.disk_usage(a.parent).free
    header("Wide embeddings: streaming vs materialized vs raw pyarrow",
           [f"data: {a.rows:,} rows of x, z fixed-size lists (d_x = d_z = d), {a.shards} Parquet files, row groups "
            f"of {a.row_group:,} rows, pyarrow defaults (snappy, dictionary encoding on) unless -plain; one dataset "
            f"on disk at a time (largest {gib(worst)} GiB, {gib(free)} GiB free in {a.parent} at start); batch "
            f"{a.batch}; torch.set_num_threads(1)"])
    if worst > 0.8 * free:
        raise SystemExit(f"not enough disk in {a.parent}: {gib(worst)} GiB needed, {gib(free)} GiB free")

    import ray
    from ray.data import DataContext, ExecutionResources

    from mine_dist import io, split
    from mine_dist.distributed.data import read_unit, split_dataset, units
    from mine_dist.distributed.train import auto_cpus_per_worker
    from mine_dist.estimator import EstimatorConfig, Trainer

    t_ray = start_ray()
    ctx = DataContext.get_current()
    worker_cpus = auto_cpus_per_worker(1, False)
    data_cpus = float(ray.cluster_resources().get("CPU", 1.0)) - worker_cpus
    ctx.execution_options.resource_limits = ExecutionResources(cpu=data_cpus)
    shuffle = max(4 * a.batch, 16384)
    cfg = EstimatorConfig(bound="mine", batch_size=a.batch)  # the default bound for a continuous z

    def streaming(info, max_rows=None):
        # Normalizers fitted on the first row group's train rows (the pipeline fits them on the
        # scan's sample; the values do not change the cost).
        return split_dataset(info, split.TRAIN, 0.1, 0.2, False, *_fit(info, read_unit, units, a.normalize), shuffle_units=True,
                             seed=0, max_rows=max_rows)

    results, memrows, t_cold = [], [], float("nan")
    sampler = TreeSampler(interval=0.25, memory=True).__enter__()
    try:
        configs = ([(int(c.split(":")[0]), c.split(":")[1]) for c in a.configs] if a.configs
                   else [(d, t) for d in a.dims for t in a.dtypes])
        for ci, (dim, dtype) in enumerate(configs):
            data_dir, t_gen, size = make(a.parent, a.rows, dim, dtype, a)
            try:
                info = io.inspect(data_dir, "x", "z")
                ds = streaming(info)
                if ci == 0:
                    # Untimed: the first Ray Data execution also starts the worker processes that
                    # run its tasks (each importing the library); later executions reuse them.
                    t0 = time.monotonic()
                    cold = ray_batches(streaming(info, a.row_group).streaming_split(1, equal=True)[0], a.batch, None)
                    sum(cold)
                    t_cold = time.monotonic() - t0
                r = {"dim": dim, "dtype": dtype, "gen": t_gen, "bytes": size, "rows": info.rows}
                if a.fed_only:
                    none = {"rows": 0, "rate": math.nan, "rate_after_first": math.nan, "first": math.nan, "wall": 1.0}
                    r["raw"] = r["stream"] = none
                    r["raw_mem"] = r["stream_mem"] = {"rss": 0, "anon": 0, "shmem": 0, "tasks": 0, "tree_pss": 0}
                else:
                    r["raw"], r["raw_mem"] = measured(sampler, lambda: raw_batches(info.files, a.batch, dim))
                    get = lazy_split(ds)
                    r["stream"], r["stream_mem"] = measured(sampler, lambda: ray_batches(get(), a.batch, shuffle))
                print(f"done: {dim} {dtype} raw {r['raw']['rate']:,.0f} stream {r['stream']['rate']:,.0f} rows/s",
                      file=sys.stderr, flush=True)
                t0 = time.monotonic()
                X, Z, tr, load = materialize(info, a.materialize_rows, a.batch, a.normalize)
                q = {"load": load, "n": int(X.shape[0])}
                q["iter"], _ = measured(sampler, lambda: memory_batches(X, Z, tr, a.batch))
                r["mat"], r["mat_mem"] = q, mem_summary(sampler, t0, time.monotonic())
                # Training fed by each path, alternated (streaming from a fresh split, so a
                # half-consumed epoch of the previous reader is not in the way).
                tr_s = Trainer(cfg, dim, dim, torch.device("cpu"))
                tr_m = Trainer(cfg, dim, dim, torch.device("cpu"))
                list(memory_batches(X, Z, tr, a.batch, tr_m.step, limit=5))  # warm up
                # In-memory runs before and after one streaming run of the same length. The
                # streaming run is one epoch of a fresh split after 3 untimed batches (start-up),
                # long enough (``--train-steps`` x B rows, many row groups) that what Ray Data read
                # ahead during start-up is a small part of it: the worker's steady state.
                fed = {"stream": [], "mat": []}
                mat_run = lambda: memory_batches(X, Z, tr, a.batch, tr_m.step, limit=a.train_steps)  # noqa: E731
                fed["mat"].append(measured(sampler, mat_run)[0])
                stream = ray_batches(ds.streaming_split(1, equal=True)[0], a.batch, shuffle, step=tr_s.step)
                list(itertools.islice(stream, 3))
                fed["stream"].append(measured(sampler, lambda: itertools.islice(stream, a.train_steps))[0])
                fed["mat"].append(measured(sampler, mat_run)[0])
                r["fed"] = fed
                del X, Z
                if ci == 0 and a.memory_rows < a.rows and not a.fed_only:
                    g2 = lazy_split(streaming(info, a.memory_rows))
                    q, m = measured(sampler, lambda: ray_batches(g2(), a.batch, shuffle))
                    memrows = [(sum(u.rows for u in units(info, a.memory_rows)), q, m),
                               (info.rows, r["stream"], r["stream_mem"])]
                results.append(r)
            finally:
                shutil.rmtree(data_dir, ignore_errors=True)
    finally:
        sampler.__exit__(None, None, None)

    print(f"Ray Data limited to {data_cpus:g} CPU(s) (the one Train worker reserves {worker_cpus:g}); "
          f"`ray.init` {t_ray:.1f} s and a cold-start pass over one row group ({t_cold:.1f} s, the first Ray Data "
          f"execution: worker processes start) not included.\n")
    print("### Input: rows/s delivered and memory per pass\n")
    print("| d | on disk | file GiB | path | rows | rows/s | rows/s after 1st batch | MB/s (float32) | 1st batch s | "
          "peak RSS GiB (anon + shared) | read tasks PSS GiB | streaming / materialized |")
    print("|---:|---|---:|---|---:|---:|---:|---:|---:|---|---:|---|")
    for r in results:
        mb = lambda rate: f"{rate * 2 * r['dim'] * 4 / 1e6:,.0f}"  # noqa: E731
        rm, sm, mm = r["raw_mem"], r["stream_mem"], r["mat_mem"]
        m = r["mat"]
        mat_epoch = m["iter"]["rows"] / (m["load"] + m["iter"]["wall"])
        read_rate = m["n"] / m["load"]
        s = r["stream"]["rate"]
        common = f"| {r['dim']} | {r['dtype']} | {r['bytes'] / 2**30:.2f} |"
        print(f"{common} raw pyarrow (all rows) | {r['raw']['rows']:,} | {r['raw']['rate']:,.0f} | "
              f"{r['raw']['rate_after_first']:,.0f} | {mb(r['raw']['rate'])} | {r['raw']['first']:.2f} | {gib(rm['rss'])} ({gib(rm['anon'])} + "
              f"{gib(rm['shmem'])}) | | |")
        print(f"{common} streaming, as the Train worker (train rows) | {r['stream']['rows']:,} | {s:,.0f} | "
              f"{r['stream']['rate_after_first']:,.0f} | {mb(s)} | "
              f"{r['stream']['first']:.2f} | {gib(sm['rss'])} ({gib(sm['anon'])} + {gib(sm['shmem'])}) | "
              f"{gib(sm['tasks'])} | |")
        print(f"{common} materialized: read_arrays + normalize ({m['n']:,} rows read) | {m['n']:,} | {read_rate:,.0f} | "
              f"| {mb(read_rate)} | | {gib(mm['rss'])} ({gib(mm['anon'])} + {gib(mm['shmem'])}) | | "
              f"**{s / read_rate:.2f}x** (vs load) |")
        print(f"{common} materialized: one epoch of batches from memory | {m['iter']['rows']:,} | "
              f"{m['iter']['rate']:,.0f} | | {mb(m['iter']['rate'])} | | | | {s / m['iter']['rate']:.2f}x |")
        print(f"{common} materialized: first epoch incl. load | {m['iter']['rows']:,} | {mat_epoch:,.0f} | | "
              f"{mb(mat_epoch)} | | | | **{s / mat_epoch:.2f}x** |")
    print()
    print("rows/s: rows delivered / pass wall (start-up included; the streaming pass starts Ray Data's split "
          "coordinator and read tasks). MB/s: as float32 x and z. Peak RSS: this process (the consumer) during the "
          "pass, from /proc every 0.25 s; shared = pages mapped from the object store (/dev/shm). Materialized memory "
          "grows with the rows it holds (float64 arrays + float32 tensors).\n")
    print(f"### Training fed by each path: `Trainer.step` samples/s (EstimatorConfig defaults, batch {a.batch})\n")
    print("| d | on disk | fed from memory (materialized): before, after | fed by streaming (as the Train worker) | "
          "streaming / materialized |")
    print("|---:|---|---:|---:|---:|")
    for r in results:
        fm = [q["rate"] for q in r["fed"]["mat"]]
        fs = [q["rate"] for q in r["fed"]["stream"]]
        print(f"| {r['dim']} | {r['dtype']} | {', '.join(f'{v:,.0f}' for v in fm)} | {fs[0]:,.0f} | "
              f"**{fs[0] / statistics.mean(fm):.2f}x** |")
    print(f"\nEach run: {a.train_steps} steps; in-memory runs right before and after the streaming run; streaming: "
          "one epoch of a fresh split, its first 3 batches (start-up) untimed. Ratio: streaming over the mean of the "
          "two in-memory runs.\n")
    if memrows:
        r0 = results[0]
        print(f"### Memory flat in rows (streaming, d {r0['dim']}, {r0['dtype']})\n")
        print("| rows in dataset | rows delivered | rows/s | consumer peak RSS GiB | anon | shared | read tasks PSS GiB "
              "| whole tree PSS GiB |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n, q, m in memrows:
            print(f"| {n:,} | {q['rows']:,} | {q['rate']:,.0f} | {gib(m['rss'])} | {gib(m['anon'])} | "
                  f"{gib(m['shmem'])} | {gib(m['tasks'])} | {gib(m['tree_pss'])} |")
        print()
    gens = ", ".join(f"{r['dim']}/{r['dtype']} {r['gen']:.0f} s" for r in results)
    print(f"Data generation (child process, not timed above): {gens}. Load average at end: "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}.")


def _fit(info, read_unit, units, method: str):
    from mine_dist import normalize, split

    x0, z0 = read_unit(units(info)[0], info, split.TRAIN, 0.1, 0.2, False)
    return normalize.fit(method, x0, "x"), normalize.fit(method, z0, "z")


if __name__ == "__main__":
    main()

"""Input throughput from local Parquet: raw pyarrow vs the pipeline's Ray Dataset, in one run.

The same synthetic Gaussian dataset (dim 16, written under /tmp with
``mine_dist.synthetic.write_dataset``) is read, for each batch size B, by:

* **pyarrow**: ``pq.ParquetFile(f).iter_batches(batch_size=B, columns=[x, z])`` -> numpy -> torch,
  every row of every file (no split, no normalization): the floor of what reading costs;
* **library, no Ray**: the pipeline's per-row-group function (``data.read_unit``: read the row
  group, split keys, keep the train rows, NaN check) + normalizer + float32, called in this
  process, cut into batches of B and turned into tensors: the pipeline's work without Ray;
* **Ray Dataset**: ``data.split_dataset(info, split.TRAIN, ...)`` iterated with
  ``iter_torch_batches(batch_size=B, drop_last=True, device="cpu")``, Ray Data free to use both CPUs;
* **Ray, as the Train worker gets it**: the same Dataset through ``streaming_split(1, equal=True)``
  (what ``DataConfig(datasets_to_split=["train"])`` does), ``local_shuffle_buffer_size=max(4B,
  16384)`` as ``fit_on_ray`` sets it, and Ray Data limited to the CPUs the Train worker
  leaves free (cluster CPUs - ``train.auto_cpus_per_worker(1, False)``);
* **Trainer.step fed by Ray** (batch ``--train-batch`` only): the previous reader with a
  ``Trainer.step`` on every batch, in this process, as the Train worker consumes it, with
  ``prefetch_batches=1`` (the default, used by ``worker_loop``) and 0 (no background formatting
  thread): its rate against ``Trainer.step`` over in-memory batches isolates the cost of being
  fed by Ray Data from the cost of Ray Train.

Each reader makes ``--passes`` passes; the table reports the pass rate including its start-up,
the rate after the first batch, the time to the first batch (for the streaming_split readers,
the first pass also starts the split coordinator actor; later passes are what every later training
epoch pays) and the CPU it cost (this process +
its Ray processes, from /proc, in CPU-seconds per million rows delivered). Rows/s count rows
delivered: all rows for pyarrow, the ~70% train rows for the others (the "rows read/s" column
counts rows read from disk). The reference training rate is ``Trainer.step`` at batch
``--train-batch`` timed in the same run.

    .venv/bin/python benchmarks/ray_input.py                  # ~3 min
    .venv/bin/python benchmarks/ray_input.py --rows 200000 --batch-sizes 512 --passes 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ray_train_throughput import TreeSampler, header, make_dataset, start_ray


def timed_pass(batches, sampler: TreeSampler | None) -> dict:
    """Consume an iterable of (rows, ...) batches; wall, time to first batch, CPU of the tree."""
    c0 = time.process_time()
    s0 = sampler.sample()[0] if sampler is not None else None
    t0 = time.monotonic()
    first = None
    rows = 0
    for n in batches:
        if first is None:
            first = time.monotonic()
            rows_first = n
        rows += n
    t1 = time.monotonic()
    by_proc, new = None, []
    if sampler is not None:
        s1 = sampler.sample()[0]
        by_proc = sampler.cpu_between(s0, s1)
        cpu = sum(by_proc.values())
        new = sampler.new_processes(s0, s1)
    else:
        cpu = time.process_time() - c0
    return {"wall": t1 - t0, "first": (first or t1) - t0, "rows": rows,
            "rate": rows / (t1 - t0), "rate_after_first": (rows - rows_first) / max(t1 - first, 1e-9) if first else 0.0,
            "cpu": cpu, "by_proc": by_proc, "new_procs": len(new), "new_cpu": sum(c for _, _, c in new)}


def pyarrow_batches(files, b: int, dim: int):
    import pyarrow.parquet as pq

    for f in files:
        pf = pq.ParquetFile(f)
        for rb in pf.iter_batches(batch_size=b, columns=["x", "z"]):
            x = torch.from_numpy(rb.column(0).flatten().to_numpy().reshape(-1, dim))
            z = torch.from_numpy(rb.column(1).flatten().to_numpy().reshape(-1, dim))
            yield x.shape[0] + 0 * z.shape[0]


def library_batches(info, nx, nz, b: int):
    from mine_dist import split
    from mine_dist.distributed.data import read_unit, units

    for u in units(info):
        x, z = read_unit(u, info, split.TRAIN, 0.1, 0.2, False)
        x = torch.from_numpy(nx.apply(x).astype(np.float32))
        z = torch.from_numpy(nz.apply(z).astype(np.float32))
        for s in range(0, x.shape[0] - b + 1, b):  # drop_last within a row group
            yield x[s:s + b].shape[0] + 0 * z[s:s + b].shape[0]


def ray_batches(it, b: int, shuffle_buffer: int | None, step=None, prefetch_batches: int = 1):
    """Batches of a Ray Dataset / DataIterator; ``step(x, z)`` trains on each one if given."""
    for batch in it.iter_torch_batches(batch_size=b, drop_last=True, device="cpu", prefetch_batches=prefetch_batches,
                                       local_shuffle_buffer_size=shuffle_buffer, local_shuffle_seed=0):
        if step is not None:
            step(batch["x"], batch["z"])
        yield batch["x"].shape[0] + 0 * batch["z"].shape[0]


def lazy_split(ds):
    """A getter for one ``streaming_split(1, equal=True)`` iterator, made on first use and then
    reused for every pass, as the Train worker reuses its shard across epochs."""
    holder = []

    def get():
        if not holder:
            holder.append(ds.streaming_split(1, equal=True)[0])
        return holder[0]
    return get


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=500_000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512, 4096])
    p.add_argument("--passes", type=int, default=3, help="passes per reader and batch size")
    p.add_argument("--train-batch", type=int, default=512, help="batch of the reference Trainer.step rate")
    p.add_argument("--keep", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

    header("Input throughput: raw pyarrow vs the pipeline's Ray Dataset",
           [(f"data: gaussian dim {a.dim} rho 0.5, {a.rows:,} rows in {a.shards} Parquet shards (row groups of "
             f"65,536) under /tmp; {a.passes} passes per reader and batch size; torch.set_num_threads(1)")])

    from ray.data import DataContext, ExecutionResources

    from mine_dist import io, normalize, split
    from mine_dist.critics import CriticConfig
    from mine_dist.distributed.data import read_unit, split_dataset, units
    from mine_dist.estimator import EstimatorConfig, Trainer

    t_ray = start_ray()
    data_dir, t_gen = make_dataset(a.rows, a.shards, dim=a.dim)
    try:
        info = io.inspect(data_dir, "x", "z")
        # Normalizers fitted on the first row group's train rows (the pipeline fits them on a
        # sample of train rows from the scan; the values do not change the cost).
        x0, z0 = read_unit(units(info)[0], info, split.TRAIN, 0.1, 0.2, False)
        nx = normalize.fit("standard", x0, "x", io.passthrough_mask(info.x))
        nz = normalize.fit("standard", z0, "z", io.passthrough_mask(info.z))
        ds = split_dataset(info, split.TRAIN, 0.1, 0.2, False, nx, nz, shuffle_units=True, seed=0)
        ctx = DataContext.get_current()
        import ray

        from mine_dist.distributed.train import auto_cpus_per_worker

        worker_cpus = auto_cpus_per_worker(1, False)
        data_cpus = float(ray.cluster_resources().get("CPU", 1.0)) - worker_cpus
        default_limits = ctx.execution_options.resource_limits

        # Reference: what training consumes, timed here too.
        cfg = EstimatorConfig(batch_size=a.train_batch, critic=CriticConfig())
        tr = Trainer(cfg, a.dim, a.dim, torch.device("cpu"))
        g = torch.Generator().manual_seed(0)
        tb = [(torch.randn(a.train_batch, a.dim, generator=g), torch.randn(a.train_batch, a.dim, generator=g))
              for _ in range(8)]

        def train_rate(steps=200):
            t0 = time.perf_counter()
            for i in range(steps):
                tr.step(*tb[i % 8])
            return a.train_batch * steps / (time.perf_counter() - t0)

        train_rate(20)
        train_rates = [train_rate()]

        results = []
        # CPU of every process of the tree, sampled every 0.5 s in the background (so processes
        # that start and exit within a pass are counted) and at the start and end of each pass.
        sampler = TreeSampler(interval=0.5, memory=False).__enter__()
        # One untimed pass first: the first Ray Data execution in a fresh cluster also starts the
        # worker processes that run its tasks (reported, not part of the table).
        cold = timed_pass(ray_batches(ds, a.batch_sizes[0], None), sampler)
        s0 = sampler.sample()[0]
        time.sleep(3.0)
        idle_cores = sum(sampler.cpu_between(s0, sampler.sample()[0]).values()) / 3.0
        for b in a.batch_sizes:
            split_get = lazy_split(ds)
            readers = [
                ("pyarrow iter_batches -> numpy -> torch (all rows)",
                 lambda b=b: pyarrow_batches(info.files, b, a.dim), False),
                ("library read_unit + normalize, no Ray (train rows)",
                 lambda b=b: library_batches(info, nx, nz, b), False),
                ("Ray Dataset iter_torch_batches, Ray Data on 2 CPUs", lambda b=b: ray_batches(ds, b, None), True),
                ((f"Ray as in training: streaming_split(1), shuffle buffer {max(4 * b, 16384)}, "
                  f"Ray Data on {data_cpus:g} CPU"),
                 lambda b=b, get=split_get: ray_batches(get(), b, max(4 * b, 16384)), True),
            ]
            if b == a.train_batch:
                for pf in (1, 0):
                    fed_get = lazy_split(ds)
                    readers.append((
                        f"Trainer.step on each batch, fed as in training, prefetch_batches={pf}"
                        + (" (the default, as worker_loop)" if pf == 1 else "") + f", Ray Data on {data_cpus:g} CPU",
                        lambda b=b, pf=pf, get=fed_get: ray_batches(
                            get(), b, max(4 * b, 16384), step=tr.step, prefetch_batches=pf), True))
            for name, make, is_ray in readers:
                if f"Ray Data on {data_cpus:g} CPU" in name:
                    ctx.execution_options.resource_limits = ExecutionResources(cpu=data_cpus)
                fed = "Trainer.step on each batch" in name
                try:
                    passes = []
                    for _ in range(a.passes):
                        # Fed readers: an in-memory Trainer.step run of about the same length right
                        # before each pass, so each ratio compares neighbours in time.
                        ref = train_rate(steps=int(0.7 * a.rows) // b) if fed else None
                        passes.append(timed_pass(make(), sampler if is_ray else None))
                        passes[-1]["ref"] = ref
                finally:
                    ctx.execution_options.resource_limits = default_limits
                results.append((b, name, passes))
                print(f"done: B={b} {name}: {[round(q['rate']) for q in passes]}", file=sys.stderr, flush=True)
            train_rates.append(train_rate())
        sampler.__exit__(None, None, None)
    finally:
        if not a.keep:
            shutil.rmtree(data_dir, ignore_errors=True)

    tr_rate = statistics.median(train_rates)
    read_rows = info.rows
    print(f"Reference: `Trainer.step` (width 256, depth 2, batch {a.train_batch}) in this process: "
          f"{tr_rate:,.0f} samples/s (median of {len(train_rates)} runs of 200 steps interleaved with the readers: "
          f"{', '.join(f'{r:,.0f}' for r in train_rates)}).  ")
    print(f"Rows: {read_rows:,} in the files, {results[-1][2][0]['rows']:,} train rows delivered per pass "
          f"(Ray readers; full batches only).\n")
    print("| B | reader | rows/s, pass incl. start | rows/s after 1st batch | 1st batch s | rows read/s | "
          "CPU-s per 1M rows | / training rate |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for b, name, passes in results:
        rate = statistics.median(q["rate"] for q in passes)
        after = statistics.median(q["rate_after_first"] for q in passes)
        first = ", ".join(f"{q['first']:.2f}" for q in passes)
        frac = read_rows / passes[0]["rows"]  # rows read from disk per row delivered
        cpu = statistics.median(q["cpu"] / q["rows"] * 1e6 for q in passes)
        if passes[0].get("ref"):
            vs = statistics.median(q["rate"] / q["ref"] for q in passes)
            vs_s = (f"**{vs:.2f}x** of in-memory Trainer.step run just before each pass (after 1st batch: "
                    f"{statistics.median(q['rate_after_first'] / q['ref'] for q in passes):.2f}x; in-memory "
                    f"{', '.join(format(q['ref'], ',.0f') for q in passes)})")
        else:
            vs_s = f"{rate / tr_rate:.1f}x"
        print(f"| {b} | {name} | {rate:,.0f} | {after:,.0f} | {first} | {rate * frac:,.0f} | {cpu:.2f} | {vs_s} |")
    print()
    print("rows/s: median over passes of rows delivered / pass wall (start-up included); after 1st batch: "
          "excluding the time to the first batch; 1st batch: per pass. CPU: for Ray readers the CPU of this "
          "process and all its Ray processes (driver, executor, read tasks, raylet, GCS, dashboard) during the "
          "pass, sampled from /proc every 0.5 s by a background thread of this process; for in-process readers this process's CPU time. `/ training rate`: "
          "input rows/s (incl. start-up) over the Trainer.step samples/s above; for the Trainer.step-fed "
          "readers, their training rate over an in-memory Trainer.step run of the same length just before each "
          "pass (median of the per-pass ratios).  ")
    print(f"As in training: the library reserves {worker_cpus:g} CPU for the one Train worker "
          f"(`auto_cpus_per_worker(1, False)`), so Ray Data is limited to {data_cpus:g} CPU(s) here.  ")
    print(f"Idle CPU of this process tree (driver + idle private Ray: GCS, raylet, dashboard, ...), measured "
          f"over 3 s before the readers: {idle_cores:.2f} cores; it is included in the Ray readers' CPU.  ")
    for b, name, passes in results:
        if b == a.train_batch and ("as in training" in name or "prefetch_batches=1" in name):
            q = passes[-1]
            print(f"\nCPU by process, last pass of B={b} \"{name}\" ({q['wall']:.2f} s, {q['rows']:,} rows): "
                  + ", ".join(f"`{k}` {v:.2f} s" for k, v in list(q["by_proc"].items())[:8] if v > 0.005) + ".  ")
            print(f"Processes started during the passes of this reader: "
                  f"{', '.join(str(x['new_procs']) for x in passes)} (CPU-s they used: "
                  f"{', '.join(format(x['new_cpu'], '.2f') for x in passes)}).  ")
    print()
    print(f"Cold start (untimed warm-up pass, first Ray Data execution after `ray.init`, B={a.batch_sizes[0]}): "
          f"{cold['wall']:.2f} s for the pass, {cold['first']:.2f} s to the first batch.  ")
    print(f"`ray.init` {t_ray:.1f} s and data generation {t_gen:.1f} s are not included. Load average at end: "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}.")


if __name__ == "__main__":
    main()

"""Ray Train data-parallel MINE: the worker loop and the driver that launches it.

The worker runs the library's :class:`~mine_dist.estimator.Trainer` (the same ``train_step`` as
the in-process estimator) with two differences: the critic is wrapped in DDP by
``prepare_model`` and the EMA statistic is reduced across ranks by
:class:`~mine_dist.sync.TorchDistributed`. Every rank validates on the same validation rows with
identical parameters, so every rank takes the same early-stopping decision without a broadcast;
only rank 0 writes checkpoints. The test split is scored on the driver after training.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import sys
import tempfile
import time

from dataclasses import dataclass

import numpy as np
import torch

from mine_dist import leaks, split, storage
from mine_dist.cca import Basis
from mine_dist.distributed.data import Scan
from mine_dist.distributed.options import RayOptions
from mine_dist.estimator import (EstimatorConfig, MIEstimate, Trainer, bound_from_scores, check_value,
                                 finish_estimate, fit_basis, sample_ceiling, score_rows, wants_basis)
from mine_dist.io import DataSpec
from mine_dist.normalize import Normalizer

CHECKPOINT_FILE = "state.pt"
# CPUs of the cluster left free for Ray Data's read tasks and Tune's trial actors.
RESERVED_CPUS = 1.5
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def worker_loop(conf: dict) -> dict:
    """Ray Train worker: train the critic on this rank's shard of the train split."""
    import ray.train
    from ray.train.torch import prepare_model

    from mine_dist.distributed.runtime import mark as phase, quiet_ray_train_worker
    from mine_dist.sync import collective_for_current_process

    cfg = EstimatorConfig.from_dict(conf["config"])
    if conf.get("log_level", "WARNING") != "INFO":
        quiet_ray_train_worker()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if rank == 0:
        started = _process_start_time()
        if started is not None:
            phase("worker_process_start", started)
        phase("worker_entered")
    device = ray.train.torch.get_device() if conf["use_gpu"] else torch.device("cpu")
    collective = collective_for_current_process(device)
    basis = conf.get("basis")
    trainer = Trainer(cfg, conf["dx"], conf["dz"], device, collective, rank,
                      wrap=prepare_model if world > 1 else None,
                      basis=None if basis is None else Basis.from_dict(basis))
    xv = torch.from_numpy(np.array(conf["val_x"])).to(device)  # copy: Ray hands read-only arrays
    zv = torch.from_numpy(np.array(conf["val_z"])).to(device)
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        trainer.choose_start(xv, zv)  # every rank: the same validation rows, the same choice
    restored = 0  # times this run's training state was restored: worker-group restarts and --resume
    if ckpt is not None:
        with ckpt.as_directory() as d:
            st = torch.load(os.path.join(d, CHECKPOINT_FILE), weights_only=True, map_location=device)
        trainer.load_state_dict(st)
        restored = int(st.get("restored", 0)) + 1
    if rank == 0 and conf.get("run_dir"):
        # One file per worker-group start of this invocation: the driver counts restarts from them.
        storage.write_text_atomic(storage.join(conf["run_dir"], "attempts",
                                               f"{conf['invocation']}-{os.getpid()}-{time.time_ns()}"), str(restored))
    shard = ray.train.get_dataset_shard("train")
    if rank == 0:
        phase("worker_ready")
    # Throughput since the previous report (all ranks' samples), so start-up and the first batch's
    # latency only weigh on the first report, not on every later one.
    mark = {"t": time.perf_counter(), "step": trainer.step_count}

    def check_and_report(final: bool = False) -> None:
        now = time.perf_counter()
        rate = (trainer.step_count - mark["step"]) * cfg.batch_size * world / max(now - mark["t"], 1e-9)
        if not final:
            tj, tm = score_rows(trainer.module, xv, zv, cfg, seed=cfg.seed + 7, negatives=cfg.val_negatives)
            trainer.record_check(*check_value(cfg, tj, tm))
            # The DV bound of the same scores: a lower bound whatever the critic was trained on,
            # so sweeps compare trials of different bounds on it (SMILE's clipped value is not one).
            trainer.curves[-1]["val_dv"] = bound_from_scores("dv", tj, tm)
            trainer.curves[-1]["val_ceiling"] = sample_ceiling(tm)  # the most a check can certify
        last = trainer.curves[-1] if trainer.curves else {"train": math.nan, "val": math.nan}
        at_best = [c for c in trainer.curves if c["step"] == trainer.best_step]
        metrics = {"step": trainer.step_count, "train": last["train"], "val": last["val"],
                   "val_dv": last.get("val_dv", math.nan), "best_val": trainer.best_val,
                   "best_val_dv": at_best[-1].get("val_dv", math.nan) if at_best else math.nan,
                   "val_ceiling": last.get("val_ceiling", math.nan),
                   "samples_per_s": rate, "final": final}
        if rank == 0 and conf.get("progress", True) and not final:
            # sys.stderr.write, not print: Ray Train patches print() in workers to also log each
            # line, which shows every line twice on the driver.
            sys.stderr.write(f"{conf.get('label', '')}step {trainer.step_count}/{cfg.steps}  train {last['train']:.4f}  "
                             f"val {last['val']:.4f}  best val {trainer.best_val:.4f} (step {trainer.best_step})  "
                             f"{rate:,.0f} samples/s\n")
            sys.stderr.flush()
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if rank == 0:
                torch.save({**trainer.state_dict(), "restored": restored}, os.path.join(d, CHECKPOINT_FILE))
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=checkpoint,
                             checkpoint_dir_name=f"step_{trainer.step_count:08d}{'_final' if final else ''}")
        mark.update(t=time.perf_counter(), step=trainer.step_count)

    while not trainer.done():
        stepped = 0
        for batch in shard.iter_torch_batches(batch_size=cfg.batch_size, drop_last=True, device=device,
                                              local_shuffle_buffer_size=conf["shuffle_buffer"],
                                              local_shuffle_seed=cfg.seed + rank + trainer.step_count):
            if rank == 0 and trainer.step_count == 0 and stepped == 0:
                phase("first_batch")
            trainer.step(batch["x"], batch["z"])
            stepped += 1
            if trainer.step_count % cfg.eval_every == 0 or trainer.step_count == cfg.steps:
                check_and_report()
            if trainer.done():
                break
        if stepped == 0:
            raise RuntimeError(f"rank {rank} got no full batch of {cfg.batch_size} train rows in an epoch; "
                               f"use a smaller --batch-size or fewer --workers")
    if rank == 0:
        phase("train_done")
    check_and_report(final=True)
    nodes = [ray.get_runtime_context().get_node_id()]
    if world > 1:
        import torch.distributed as dist

        gathered: list = [None] * world
        dist.all_gather_object(gathered, nodes[0])
        nodes = gathered
    if rank == 0:
        phase("worker_done")
    return {"steps": trainer.step_count, "best_step": trainer.best_step, "nodes": sorted(set(nodes))}


def auto_cpus_per_worker(workers: int, use_gpu: bool) -> float:
    """CPUs each worker reserves. Leave RESERVED_CPUS of the cluster for Ray Data's read tasks (0.5
    each) and Tune's trial actors: when workers take every CPU, reads starve (or prefetching reads
    hold the CPUs a starting worker group waits for) and the run hangs."""
    import ray

    total = float(ray.cluster_resources().get("CPU", 1.0))
    if use_gpu:
        return max(1.0, min(4.0, (total - RESERVED_CPUS) / workers))
    return max(0.1, min(1.0, (total - RESERVED_CPUS) / workers))


@dataclass(frozen=True)
class Prepared:
    """What the driver prepares before any Ray Train worker starts (shared by estimates and sweeps)."""

    scan: Scan
    nx: Normalizer
    nz: Normalizer
    val_x: np.ndarray  # normalized validation rows every rank checks on
    val_z: np.ndarray
    shuffle: str  # "blocks" or "global"
    materialized: bool
    train_ds: object  # the Ray Dataset of normalized train rows
    warnings: tuple[str, ...]  # leaks and degenerate columns found on the scan sample
    basis: Basis | None = None  # the joint critic's CCA basis, fit on the normalized train sample

    def basis_conf(self) -> dict:
        """The worker config's ``basis`` entry (None without one)."""
        return {"basis": None if self.basis is None else self.basis.to_dict()}


def prepare_inputs(info, data: DataSpec, cfg: EstimatorConfig, opts: RayOptions, batch_size: int | None = None,
                   log=None) -> Prepared:
    """Scan every row group (counts, NaN/Inf, samples, grouping), check for leaks, fit the
    normalizers on the train sample and build the train dataset.

    Raises:
        DataError: bad values, identical x-z columns (unless allowed).
        ValueError: too few rows for the batch size and workers, or for validation and test.
    """
    from mine_dist import normalize
    from mine_dist.distributed.data import scan, split_dataset
    from mine_dist.distributed.runtime import mark

    log = log or _stderr
    mark("scan_start")
    fractions = (cfg.val_fraction, cfg.test_fraction, cfg.split_seed)  # split_seed: replicates' validation rows
    batch_size = batch_size or cfg.batch_size
    rows = info.rows if data.max_rows is None else min(info.rows, data.max_rows)
    # Small data is read in this process: starting a Ray task per row group (a fresh process that
    # imports torch and pyarrow) costs more than the read (docs/benchmarks.md, Ray job overhead).
    in_driver = rows * (info.x.dim + info.z.dim) <= opts.driver_read_max_values
    sc = scan(info, fractions, data.drop_nonfinite, sample_rows=200_000, val_rows=cfg.max_eval_rows, seed=cfg.seed,
              max_rows=data.max_rows, in_driver=in_driver)
    if sc.dropped:
        log(f"dropped {sc.dropped} row(s) with NaN/Inf")
    mark("scan_done")
    found = leaks.check(sc.sample_x, sc.sample_z, info.x, info.z, data.allow_identical)
    counts = sc.counts
    if counts[split.TRAIN] < batch_size * opts.workers:
        raise ValueError(f"too few rows: {counts[split.TRAIN]} train rows for {opts.workers} worker(s) x "
                         f"batch_size {batch_size}")
    if counts[split.VAL] < 2 or counts[split.TEST] < 2:
        raise ValueError(f"too few rows: {counts[split.VAL]} validation and {counts[split.TEST]} test rows; need >= 2 each")
    nx = normalize.fit(cfg.normalize, sc.sample_x, "x", _mask(info.x))
    nz = normalize.fit(cfg.normalize, sc.sample_z, "z", _mask(info.z))
    shuffle = opts.shuffle if opts.shuffle != "auto" else ("global" if sc.grouped else "blocks")
    if shuffle == "global":
        log(f"rows look grouped or sorted (within-row-group variance share {sc.grouping:.2f}): shuffling "
            f"all train rows every epoch")
    cache = materialize_train(opts.materialize, counts[split.TRAIN], info.x.dim + info.z.dim)
    train_ds = split_dataset(info, split.TRAIN, cfg.val_fraction, cfg.test_fraction, data.drop_nonfinite, nx, nz,
                             shuffle_units=True, seed=cfg.seed, max_rows=data.max_rows,
                             global_shuffle=shuffle == "global", materialize=cache, in_driver=in_driver,
                             split_seed=cfg.split_seed)
    mx, mz = _mask(info.x), _mask(info.z)
    basis = fit_basis(cfg, nx.apply(sc.sample_x), nz.apply(sc.sample_z), None, mx, mz) \
        if wants_basis(cfg, mx, mz) else None  # no normalized copy of the sample when none is fit
    mark("dataset_built")
    return Prepared(sc, nx, nz, nx.apply(sc.val_x), nz.apply(sc.val_z), shuffle, cache, train_ds, tuple(found), basis)


def fit_on_ray(info, data: DataSpec, cfg: EstimatorConfig, opts: RayOptions, run_dir: str,
               log=None, score_seed: int | None = None) -> tuple[MIEstimate, dict]:
    """Fit on Ray Train with ``opts.workers`` workers, checkpointing under ``<run_dir>/checkpoints``;
    score the validation-selected critic on the test split on the driver (``score_seed``: see
    :func:`estimate_on_test`).

    Returns:
        The estimate (the same type as the in-process estimator's) and the Ray run's facts for the
        record (dropped rows, shuffle, materialization, nodes, restarts, data warnings).
    """
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from mine_dist.distributed.runtime import ensure_ray, log_level, mark, train_logging_config

    ensure_ray()
    if opts.gpu:
        cfg = EstimatorConfig.from_dict({**cfg.to_dict(), "device": "cuda"})
    prep = prepare_inputs(info, data, cfg, opts, log=log)
    sc = prep.scan
    fs, path = storage.resolve(run_dir)
    cpw = opts.cpus_per_worker or auto_cpus_per_worker(opts.workers, opts.gpu)
    conf = {"config": cfg.to_dict(), "dx": info.x.dim, "dz": info.z.dim, "val_x": prep.val_x, "val_z": prep.val_z,
            "use_gpu": opts.gpu, "shuffle_buffer": max(4 * cfg.batch_size, 16384),
            "progress": opts.progress, "log_level": log_level(), "label": run_label(run_dir),
            "run_dir": run_dir, "invocation": secrets.token_hex(6), **prep.basis_conf()}
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config=conf,
        scaling_config=ScalingConfig(num_workers=opts.workers, use_gpu=opts.gpu,
                                     resources_per_worker={"CPU": cpw, **({"GPU": 1} if opts.gpu else {})},
                                     placement_strategy=opts.placement),
        run_config=RunConfig(
            storage_path=path, storage_filesystem=fs, name="checkpoints",
            failure_config=FailureConfig(max_failures=opts.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=train_logging_config(),
        ),
        datasets={"train": prep.train_ds},
        # One worker iterates the whole dataset itself: no split coordinator actor to start.
        dataset_config=DataConfig(datasets_to_split=["train"] if opts.workers > 1 else []),
    )
    t0 = time.perf_counter()
    mark("fit_start")
    with train_env(single_node=_single_node()):
        result = trainer.fit()
    wall = time.perf_counter() - t0
    mark("fit_done")
    with result.checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, CHECKPOINT_FILE), weights_only=True, map_location="cpu")
    est = estimate_on_test(info, data, cfg, state, prep, opts.max_test_rows, wall, score_seed)
    mark("test_done")
    attempts = storage.join(run_dir, "attempts")
    starts = ([f for f in storage.list_files(attempts) if f.rsplit("/", 1)[-1].startswith(conf["invocation"])]
              if storage.exists(attempts) else [])
    facts = {"data_warnings": list(prep.warnings), "n_test_rows_in_split": sc.counts[split.TEST],
             "dropped_nonfinite": sc.dropped, "train_split_materialized": prep.materialized,
             "shuffle": {"mode": prep.shuffle, "within_row_group_variance_share": round(sc.grouping, 4)},
             "checkpoints": storage.describe(storage.join(run_dir, "checkpoints")),
             "nodes": len((result.return_value or {}).get("nodes", [])) or None,
             "restored_from_checkpoint": int(state.get("restored", 0)),
             "worker_restarts": max(len(starts) - 1, 0)}
    return est, facts


def fit_replicates_on_ray(info, data: DataSpec, cfg: EstimatorConfig, opts: RayOptions, run_dir: str,
                          log=None) -> tuple[MIEstimate, dict]:
    """``cfg.replicates`` Ray Train runs side by side, one Ray task each (as concurrent audit checks
    run), replicate r with seed + r and split_seed + r, checkpointing under
    ``<run_dir>/replicates/<r>/``; all are scored on the same test rows with the same order and
    bootstrap weights (the base seed) and combined by :func:`~mine_dist.estimator.combine_replicates`.
    On a cluster with room for them the K runs cost the wall time of one.

    Raises:
        RuntimeError: a replicate failed (its one-line error; the others' runs are discarded).
    """
    import ray
    from dataclasses import replace

    from mine_dist.distributed.checks import task_resources
    from mine_dist.distributed.pool import run_all
    from mine_dist.distributed.runtime import ensure_ray
    from mine_dist.estimator import combine_replicates

    ensure_ray()
    k = cfg.replicates
    total = float(ray.cluster_resources().get("CPU", 1.0))
    _, cpw = task_resources(opts.workers, k, total)
    opts_r = replace(opts, cpus_per_worker=opts.cpus_per_worker or cpw)
    (log or _stderr)(f"{k} replicates side by side on Ray ({total:g} CPUs, {opts_r.cpus_per_worker:g} per worker)")
    calls = [(str(r), (info, data, cfg.replicate(r), opts_r, storage.join(run_dir, "replicates", str(r)), None,
                       cfg.seed), {"num_cpus": 0, "name": f"replicate-{r}"}) for r in range(k)]
    done = run_all(fit_on_ray, calls, k)
    failed = sorted((int(key), v) for key, (ok, v) in done.items() if not ok)
    if failed:
        raise RuntimeError(f"replicate {failed[0][0]} of {k} failed: {failed[0][1]}")
    ests, facts = zip(*(done[str(r)][1] for r in range(k)))
    out = dict(facts[0])
    out["worker_restarts"] = sum(f.get("worker_restarts", 0) for f in facts)
    out["restored_from_checkpoint"] = sum(f.get("restored_from_checkpoint", 0) for f in facts)
    out["checkpoints"] = [f.get("checkpoints") for f in facts]
    return combine_replicates(cfg, list(ests)), out


def estimate_on_test(info, data: DataSpec, cfg: EstimatorConfig, state: dict, prep: Prepared, max_test_rows: int,
                     wall: float, score_seed: int | None = None) -> MIEstimate:
    """Score the test split on the driver with the checkpoint's validation-selected critic.

    ``score_seed`` (default ``cfg.seed``) seeds the test subsample, the row order and the bootstrap
    weights: replicates pass the base seed so that their resamples re-weight the same rows."""
    score_seed = cfg.seed if score_seed is None else score_seed
    from mine_dist.critics import build_critic
    from mine_dist.distributed.data import collect_split

    critic = build_critic(info.x.dim, info.z.dim, cfg.critic)
    critic.load_state_dict(state["best_state"] or state["critic"])
    critic.eval()
    sc = prep.scan
    test_x, test_z = collect_split(info, split.TEST, cfg.val_fraction, cfg.test_fraction, data.drop_nonfinite,
                                   prep.nx, prep.nz, max_test_rows, seed=score_seed, max_dataset_rows=data.max_rows)
    tj, tm = score_rows(critic, torch.from_numpy(test_x), torch.from_numpy(test_z), cfg, seed=score_seed + 11)
    return finish_estimate(cfg, tj, tm, n_train=sc.counts[split.TRAIN], n_val=sc.counts[split.VAL],
                           steps=state["step"], best_step=state["best_step"], stopped_early=state["step"] < cfg.steps,
                           wall=wall, curves=state["curves"],
                           normalization={"x": prep.nx.to_dict(), "z": prep.nz.to_dict()},
                           bootstrap_seed=score_seed + 13)


def _single_node() -> bool:
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive")) <= 1


@contextlib.contextmanager
def train_env(single_node: bool):
    """Ray Train settings read from the driver's environment when ``fit()`` starts (Train passes
    them on to its controller and workers), unless the user set them.

    On a one-node cluster the preemption watcher (an extra actor process per run, which watches
    for nodes being drained) has nothing to watch: a drained node there takes the whole cluster.
    Worker-group restarts from checkpoints (``max_failures``) do not depend on it.
    """
    set_here = []
    if single_node and PREEMPTION_WATCHER_ENV not in os.environ:
        os.environ[PREEMPTION_WATCHER_ENV] = "0"
        set_here.append(PREEMPTION_WATCHER_ENV)
    try:
        yield
    finally:
        for k in set_here:
            os.environ.pop(k, None)


def materialize_train(mode: str, train_rows: int, dim: int) -> bool:
    """``--materialize``: auto = when the normalized train split takes at most a quarter of the
    object store. Then the files are read once, not once per epoch, and the read tasks stop
    competing with training for CPUs (docs/benchmarks.md)."""
    from mine_dist.distributed.data import fits_object_store

    if mode == "auto":
        return fits_object_store(train_rows, dim)
    return mode == "always"


def _process_start_time() -> float | None:
    """When this process started (wall clock): a Train worker's process may have been started
    before its run (Ray pools idle workers), then its start-up is not part of the run."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - a benchmark mark only
        return None


def run_label(run_dir: str) -> str:
    """Prefix of the worker's progress lines: the run id, so concurrent runs can be told apart."""
    return f"[{run_dir.rstrip('/').rsplit('/', 1)[-1]}] "


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _mask(cs):
    from mine_dist import io

    return io.passthrough_mask(cs)

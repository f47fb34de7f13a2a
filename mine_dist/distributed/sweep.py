"""Ray Tune sweeps over estimator configurations, with honest selection.

Each trial is a Ray Train run of :func:`mine_dist.distributed.train.worker_loop` launched from a
Tune function trainable (the pattern Ray 2.60 supports; ``Tuner(trainer)`` no longer works). ASHA
stops weak trials early on the validation bound every worker reports at each check.

Selection and reporting use different data: the winner is the trial with the best validation
bound; only the winner's validation-selected critic is then scored on the test split, and that
test number (with its interval) is what ``best.json`` reports. The winner's validation bound is
recorded beside it (``validation_bound_nats``) and is never the estimate.

Trials are compared (by ASHA and for the winner) on one yardstick: the DV bound of each trial's
critic on the validation rows (``best_val_dv``), a lower bound on MI whichever bound the critic
was trained on. Comparing each trial's own bound would reward the ones that are not bounds: SMILE's
clipped value overshot the truth by 1.7 nats in a 20-d sweep and won it (docs/benchmarks.md).
A trial whose validation DV exceeds log(validation marginal pairs), the most the validation rows
can certify, is not selectable (status says so): its value reflects unsampled tails, not MI.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time

import torch

from mine_dist import io, rundir, storage
from mine_dist.distributed.options import RayOptions
from mine_dist.distributed.train import (CHECKPOINT_FILE, auto_cpus_per_worker, estimate_on_test, prepare_inputs,
                                         worker_loop)
from mine_dist.estimator import EstimatorConfig, MIEstimate, fit_basis, wants_basis
from mine_dist.io import DataSpec


SELECTION_METRIC = "best_val_dv"  # what ASHA and the final choice compare (see the module docstring)


def _trial_name(i: int) -> str:
    return f"trial-{i:03d}"


def run_sweep(configs: list[EstimatorConfig], info, data: DataSpec, opts: RayOptions, sweep_dir: str, *,
              concurrent: int | None = None, grace_steps: int | None = None, resume: bool = False,
              log=None) -> tuple[MIEstimate, dict]:
    """Run (or resume) the sweep; write trials.parquet, trials.png, best_checkpoint/; return the
    winner's test estimate and the sweep's facts for the record."""
    import ray
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.tune.schedulers import ASHAScheduler

    from mine_dist.distributed.runtime import ensure_ray, log_level, release_orphan_placement_groups

    ensure_ray()
    base = configs[0]
    batch_max = max(c.batch_size for c in configs)
    # One scan, normalization and train dataset for every trial (normalize is not swept), so trials
    # differ only in the estimator; materialized once, every trial iterates the same blocks.
    prep = prepare_inputs(info, data, base, opts, batch_size=batch_max, log=log)
    mx, mz = io.passthrough_mask(info.x), io.passthrough_mask(info.z)
    joint = next((c for c in configs if wants_basis(c, mx, mz)), None)
    if prep.basis is None and joint is not None:  # the base config's critic is not joint; a trial's is
        prep = dataclasses.replace(prep, basis=fit_basis(joint, prep.nx.apply(prep.scan.sample_x),
                                                         prep.nz.apply(prep.scan.sample_z), None, mx, mz))
    sc, val_x, val_z, train_ds = prep.scan, prep.val_x, prep.val_z, prep.train_ds
    fs, path = storage.resolve(sweep_dir)
    use_gpu = opts.gpu
    if use_gpu:
        configs = [EstimatorConfig.from_dict({**c.to_dict(), "device": "cuda"}) for c in configs]
    cpw = opts.cpus_per_worker or auto_cpus_per_worker(opts.workers, use_gpu)
    total_cpu = float(ray.cluster_resources().get("CPU", 1.0))
    concurrent = concurrent or max(1, int((total_cpu - 0.5) // (opts.workers * cpw + 0.01)))
    cfg_dicts = [c.to_dict() for c in configs]
    common = {"dx": info.x.dim, "dz": info.z.dim, "val_x": val_x, "val_z": val_z, "use_gpu": use_gpu,
              "progress": False, "log_level": log_level(),
              "shuffle_buffer": max(4 * batch_max, 16384), **prep.basis_conf()}
    steps = max(c.steps for c in configs)
    eval_every = min(c.eval_every for c in configs)

    def trial_fn(tconf: dict) -> None:
        from mine_dist.distributed.runtime import release_orphan_placement_groups, train_logging_config

        i = int(tconf["trial"])
        release_orphan_placement_groups()  # earlier trials' worker groups (see its docstring)
        TorchTrainer(
            worker_loop,
            train_loop_config={**common, "config": cfg_dicts[i]},
            scaling_config=ScalingConfig(num_workers=opts.workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": cpw, **({"GPU": 1} if use_gpu else {})}),
            run_config=RunConfig(storage_path=path, storage_filesystem=fs, name=_trial_name(i),
                                 callbacks=[TuneReportCallback()], failure_config=FailureConfig(max_failures=1),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2),
                                 logging_config=train_logging_config(common["log_level"])),
            datasets={"train": train_ds},
        ).fit()

    trainable = tune.with_resources(trial_fn, {"cpu": 0.01})
    tune_dir = storage.join(sweep_dir, "tune")
    scheduler = ASHAScheduler(time_attr="step", grace_period=max(eval_every, grace_steps or 2 * eval_every),
                              max_t=steps, reduction_factor=2)
    t0 = time.perf_counter()
    if resume and storage.exists(storage.join(tune_dir, "tuner.pkl")):
        _, tpath = storage.resolve(tune_dir)
        tuner = tune.Tuner.restore(tpath, trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=fs)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(list(range(len(configs))))},
            tune_config=tune.TuneConfig(metric=SELECTION_METRIC, mode="max", scheduler=scheduler,
                                        max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(storage_path=path, storage_filesystem=fs, name="tune", verbose=0),
        )
    grid = tuner.fit()
    release_orphan_placement_groups()
    wall = time.perf_counter() - t0
    rows, curves = [], {}
    for res in grid:
        i = int(res.config["trial"])
        df = res.metrics_dataframe
        hist = ([] if df is None or "val_dv" not in df
                else df[["step", "val_dv"]].dropna().rename(columns={"val_dv": "val"}).to_dict("records"))
        curves[i] = hist
        m = res.metrics or {}
        c = cfg_dicts[i]
        # A trial that reached its step budget is complete even when ASHA's max_t ended it first.
        done = m.get("final") or int(m.get("step", 0) or 0) >= c["steps"]
        status = "error" if res.error else ("completed" if done else "stopped early (ASHA)")
        dv, ceiling = float(m.get(SELECTION_METRIC, math.nan)), float(m.get("val_ceiling", math.nan))
        rows.append({"trial": i, "status": status, "best_val_dv_nats": dv, "val_ceiling_nats": ceiling,
                     "best_val_nats": float(m.get("best_val", math.nan)),
                     "last_step": int(m.get("step", 0) or 0), "error": str(res.error).splitlines()[0] if res.error else None,
                     "bound": c["bound"], "critic": c["critic"]["kind"], "depth": c["critic"]["depth"],
                     "width": c["critic"]["width"], "activation": c["critic"]["activation"], "lr": c["lr"],
                     "batch_size": c["batch_size"], "ema_rate": c["ema_rate"], "config": json.dumps(c)})
    rows.sort(key=lambda r: r["trial"])
    win = select_winner(rows)
    state = _latest_checkpoint_state(storage.join(sweep_dir, _trial_name(win["trial"])))
    storage.write_bytes_atomic(storage.join(sweep_dir, "best_checkpoint", CHECKPOINT_FILE), _torch_bytes(state))
    est = estimate_on_test(info, data, configs[win["trial"]], state, prep, opts.max_test_rows, wall)
    _write_trials(sweep_dir, rows, curves, win["trial"])
    out = {"data_warnings": list(prep.warnings)}
    out.update({"validation_bound_nats": win["best_val_nats"], "validation_dv_nats": win["best_val_dv_nats"],
                "selection": "highest DV bound of the trial's critic on the validation split", "winner_trial": win["trial"],
                "trials": len(rows), "trials_completed": sum(r["status"] == "completed" for r in rows),
                "trials_stopped_early": sum(r["status"].startswith("stopped") for r in rows),
                "trials_failed": sum(r["status"] == "error" for r in rows),
                "trials_above_ceiling": sum(r["status"] == ABOVE_CEILING for r in rows), "concurrent_trials": concurrent,
                "shuffle": {"mode": prep.shuffle, "within_row_group_variance_share": round(sc.grouping, 4)}})
    print(f"sweep: {len(rows)} trials, winner trial {win['trial']} (validation DV {win['best_val_dv_nats']:.4f} nats); "
          f"test estimate {est.mi_nats:.4f} nats", file=sys.stderr, flush=True)
    return est, out


ABOVE_CEILING = "above the validation ceiling (not selectable)"


def select_winner(rows: list[dict]) -> dict:
    """The trial with the highest validation DV bound among those that can be selected; marks
    (in place) the trials whose value exceeds their validation ceiling (``val_ceiling_nats``)."""
    for r in rows:
        if r["status"] != "error" and r["best_val_dv_nats"] > r["val_ceiling_nats"]:
            r["status"] = ABOVE_CEILING
    ok = [r for r in rows if r["status"] in ("completed", "stopped early (ASHA)") and math.isfinite(r["best_val_dv_nats"])]
    if ok:
        return max(ok, key=lambda r: r["best_val_dv_nats"])
    if any(r["status"] == ABOVE_CEILING for r in rows):
        raise RuntimeError("every trial's validation DV bound is above log(validation marginal pairs), the most the "
                           "validation split can certify: the MI is too high for this many validation rows; use more "
                           "data (or a larger --val-fraction / --val-negatives)")
    raise RuntimeError(f"every trial failed; first error: {rows[0]['error'] if rows else 'no trials ran'}")


def _latest_checkpoint_state(train_run_dir: str) -> dict:
    state = rundir.latest_checkpoint_state(train_run_dir)
    if state is None:
        raise RuntimeError(f"no checkpoint found under {storage.describe(train_run_dir)}")
    return state


def _torch_bytes(state: dict) -> bytes:
    import io as _io

    buf = _io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _write_trials(sweep_dir: str, rows: list[dict], curves: dict, winner: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mine_dist import plots

    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    storage.write_bytes_atomic(storage.join(sweep_dir, "trials.parquet"), buf.getvalue().to_pybytes())
    storage.write_bytes_atomic(storage.join(sweep_dir, "trials.png"), plots.sweep_trials(curves, winner))


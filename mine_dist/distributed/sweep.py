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

import json
import math
import sys
import time

import torch

from mine_dist import leaks, rundir, split, storage
from mine_dist.estimator import EstimatorConfig
from mine_dist.distributed.train import (CHECKPOINT_FILE, auto_cpus_per_worker, estimate_on_test,
                                         materialize_train, worker_loop)


SELECTION_METRIC = "best_val_dv"  # what ASHA and the final choice compare (see the module docstring)


def _trial_name(i: int) -> str:
    return f"trial-{i:03d}"


def run_sweep(args, configs: list[EstimatorConfig], info, sweep_dir: str) -> dict:
    """Run (or resume) the sweep; write trials.parquet, trials.png, best_checkpoint/; return the
    winner's result dict (the fields of an estimate) plus sweep details."""
    import ray
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.tune.schedulers import ASHAScheduler

    from mine_dist import normalize
    from mine_dist.distributed.data import scan, split_dataset
    from mine_dist.distributed.runtime import ensure_ray, log_level, release_orphan_placement_groups
    from mine_dist.distributed.train import _mask

    ensure_ray()
    base = configs[0]
    fractions = (base.val_fraction, base.test_fraction)
    drop = args.drop_nonfinite
    batch_max = max(c.batch_size for c in configs)
    sc = scan(info, fractions, drop, sample_rows=200_000, val_rows=base.max_eval_rows, seed=base.seed,
              max_rows=args.max_rows)
    found = leaks.check(sc.sample_x, sc.sample_z, info.x, info.z, bool(getattr(args, "allow_identical", False)))
    if sc.counts[split.TRAIN] < batch_max * args.workers:
        raise ValueError(f"too few rows: {sc.counts[split.TRAIN]} train rows for {args.workers} worker(s) x "
                         f"batch_size up to {batch_max}")
    # One normalization for every trial (normalize is not swept), so trials differ only in the estimator.
    nx = normalize.fit(base.normalize, sc.sample_x, "x", _mask(info.x))
    nz = normalize.fit(base.normalize, sc.sample_z, "z", _mask(info.z))
    val_x, val_z = nx.apply(sc.val_x), nz.apply(sc.val_z)
    shuffle = args.shuffle if args.shuffle != "auto" else ("global" if sc.grouped else "blocks")
    # Materialized once here, every trial iterates the same blocks instead of re-reading the files.
    cache = materialize_train(args, sc.counts[split.TRAIN], info.x.dim + info.z.dim)
    train_ds = split_dataset(info, split.TRAIN, *fractions, drop, nx, nz, shuffle_units=True, seed=base.seed,
                             max_rows=args.max_rows, global_shuffle=shuffle == "global", materialize=cache)
    fs, path = storage.resolve(sweep_dir)
    use_gpu = bool(getattr(args, "gpu", False))
    if use_gpu:
        configs = [EstimatorConfig.from_dict({**c.to_dict(), "device": "cuda"}) for c in configs]
    cpw = args.cpus_per_worker or auto_cpus_per_worker(args.workers, use_gpu)
    total_cpu = float(ray.cluster_resources().get("CPU", 1.0))
    concurrent = args.concurrent or max(1, int((total_cpu - 0.5) // (args.workers * cpw + 0.01)))
    cfg_dicts = [c.to_dict() for c in configs]
    common = {"dx": info.x.dim, "dz": info.z.dim, "val_x": val_x, "val_z": val_z, "use_gpu": use_gpu,
              "progress": False, "log_level": log_level(),
              "shuffle_buffer": max(4 * batch_max, 16384)}
    steps = max(c.steps for c in configs)
    eval_every = min(c.eval_every for c in configs)

    def trial_fn(tconf: dict) -> None:
        from mine_dist.distributed.runtime import release_orphan_placement_groups, train_logging_config

        i = int(tconf["trial"])
        release_orphan_placement_groups()  # earlier trials' worker groups (see its docstring)
        TorchTrainer(
            worker_loop,
            train_loop_config={**common, "config": cfg_dicts[i]},
            scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": cpw, **({"GPU": 1} if use_gpu else {})}),
            run_config=RunConfig(storage_path=path, storage_filesystem=fs, name=_trial_name(i),
                                 callbacks=[TuneReportCallback()], failure_config=FailureConfig(max_failures=1),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2),
                                 logging_config=train_logging_config(common["log_level"])),
            datasets={"train": train_ds},
        ).fit()

    trainable = tune.with_resources(trial_fn, {"cpu": 0.01})
    tune_dir = storage.join(sweep_dir, "tune")
    scheduler = ASHAScheduler(time_attr="step", grace_period=max(eval_every, args.grace_steps or 2 * eval_every),
                              max_t=steps, reduction_factor=2)
    t0 = time.perf_counter()
    if args.resume and storage.exists(storage.join(tune_dir, "tuner.pkl")):
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
    est = estimate_on_test(info, configs[win["trial"]], state, nx, nz, sc, args, wall)
    _write_trials(sweep_dir, rows, curves, win["trial"])
    out = est.to_dict()
    out["warnings"] = found + list(out.get("warnings") or [])
    out.update({"validation_bound_nats": win["best_val_nats"], "validation_dv_nats": win["best_val_dv_nats"],
                "selection": "highest DV bound of the trial's critic on the validation split", "winner_trial": win["trial"],
                "trials": len(rows), "trials_completed": sum(r["status"] == "completed" for r in rows),
                "trials_stopped_early": sum(r["status"].startswith("stopped") for r in rows),
                "trials_failed": sum(r["status"] == "error" for r in rows),
                "trials_above_ceiling": sum(r["status"] == ABOVE_CEILING for r in rows), "concurrent_trials": concurrent,
                "shuffle": {"mode": shuffle, "within_row_group_variance_share": round(sc.grouping, 4)}})
    print(f"sweep: {len(rows)} trials, winner trial {win['trial']} (validation DV {win['best_val_dv_nats']:.4f} nats); "
          f"test estimate {est.mi_nats:.4f} nats", file=sys.stderr, flush=True)
    return out


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
    import io as _io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    storage.write_bytes_atomic(storage.join(sweep_dir, "trials.parquet"), buf.getvalue().to_pybytes())
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for i, hist in sorted(curves.items()):
        if not hist:
            continue
        st = [h["step"] for h in hist]
        v = [h["val"] for h in hist]
        lw, alpha = (2.5, 1.0) if i == winner else (1.0, 0.6)
        ax.plot(st, v, marker=".", lw=lw, alpha=alpha, label=f"trial {i}" + (" (winner)" if i == winner else ""))
    ax.set_xlabel("training step")
    ax.set_ylabel("validation DV bound (nats)")
    ax.set_title("sweep: validation DV bound per trial (selection only; the estimate is on test)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out = _io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    storage.write_bytes_atomic(storage.join(sweep_dir, "trials.png"), out.getvalue())


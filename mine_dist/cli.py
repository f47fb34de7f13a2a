"""The ``mine-dist`` command line: ``make-data`` and ``estimate``.

Options are turned into frozen config dataclasses here, in one place; the library never sees a
raw dict or an argparse namespace. Errors in input, configuration or storage end with one line on
stderr (``mine-dist: error: ...``) and a non-zero exit; progress and logs go to stderr, and
``--json`` prints the record as the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields

from mine_dist import rundir, runs, storage, yamlio
from mine_dist.critics import CriticConfig
from mine_dist.estimator import EstimatorConfig

EXIT_USAGE, EXIT_DATA, EXIT_STORAGE, EXIT_FAILED, EXIT_ALERT, EXIT_INTERRUPTED = 2, 3, 4, 5, 6, 130
EXIT_MEANINGS = {0: "ok", 1: "unexpected error", EXIT_USAGE: "usage or configuration error", EXIT_DATA: "data error",
                 EXIT_STORAGE: "storage error", EXIT_FAILED: "training failed", EXIT_ALERT: "audit alert fired",
                 EXIT_INTERRUPTED: "interrupted"}

# CLI flag -> EstimatorConfig / CriticConfig field. Defaults are None so a --config file's values
# are only overridden by flags the user actually gave.
_EST_FLAGS = {
    "bound": str, "batch_size": int, "lr": float, "steps": int, "ema_rate": float, "smile_tau": float,
    "eval_every": int, "patience": int, "val_fraction": float, "test_fraction": float,
    "normalize": str, "eval_negatives": int, "val_negatives": int, "precision": str, "bootstrap": int, "seed": int,
    "device": str,
}
_CRITIC_FLAGS = {"critic": ("kind", str), "width": ("width", int), "depth": ("depth", int),
                 "activation": ("activation", str), "embed_dim": ("embed_dim", int)}


def add_estimate_args(p: argparse.ArgumentParser) -> None:
    """The options of ``mine-dist estimate`` (shared verbatim by ``pipelines/estimate.py``)."""
    d = EstimatorConfig()
    c = CriticConfig()
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, help="Parquet file, directory or glob; any URI (path, file://, s3://, gs://)")
    g.add_argument("--x", default="x", help="x columns: one list column, a comma list / glob of scalars, "
                   "or one categorical column; suffix :num or :cat to force (default: x)")
    g.add_argument("--z", default="z", help="z columns, as for --x (default: z)")
    g.add_argument("--row-id", default=None, help="integer column whose value decides each row's split "
                   "(default: file name and row position)")
    g.add_argument("--max-rows", type=int, default=None, help="read at most this many rows")
    g.add_argument("--drop-nonfinite", action="store_true", help="drop rows with NaN/Inf instead of failing")
    g.add_argument("--allow-identical", action="store_true", help="estimate even when x and z share identical "
                   "columns (MI is then unbounded; the record keeps a warning)")
    g = p.add_argument_group("estimator")
    g.add_argument("--config", default=None, help="JSON file with an estimator config, e.g. a sweep's best.json "
                   "(its 'config' key); flags given here override it")
    g.add_argument("--bound", choices=["mine", "mine-f", "infonce", "smile", "dv"], help=f"default {d.bound}")
    g.add_argument("--steps", type=int, help=f"maximum training steps (default {d.steps})")
    g.add_argument("--batch-size", type=int, help=f"per-worker batch (default {d.batch_size})")
    g.add_argument("--lr", type=float, help=f"Adam learning rate (default {d.lr})")
    g.add_argument("--ema-rate", type=float, help=f"MINE moving-average rate (default {d.ema_rate})")
    g.add_argument("--smile-tau", type=float, help=f"SMILE clip (default {d.smile_tau})")
    g.add_argument("--eval-every", type=int, help=f"steps between validation checks (default {d.eval_every})")
    g.add_argument("--patience", type=int, help=f"checks without improvement before stopping, 0 = never (default {d.patience})")
    g.add_argument("--val-fraction", type=float, help=f"default {d.val_fraction}")
    g.add_argument("--test-fraction", type=float, help=f"default {d.test_fraction}")
    g.add_argument("--normalize", choices=["standard", "rank-gauss", "none"], help=f"default {d.normalize}")
    g.add_argument("--eval-negatives", type=int, help=f"marginal pairs per test row, joint critic (default {d.eval_negatives})")
    g.add_argument("--val-negatives", type=int, help=f"marginal pairs per validation row at each check (default {d.val_negatives})")
    g.add_argument("--bootstrap", type=int, help=f"bootstrap resamples for the interval (default {d.bootstrap})")
    g.add_argument("--seed", type=int, help=f"default {d.seed}")
    g.add_argument("--device", choices=["cpu", "cuda", "auto"], help=f"default {d.device}")
    g.add_argument("--precision", choices=["fp32", "bf16"], help=f"bf16: autocast the critic's training forward "
                   f"pass to bfloat16, for GPUs (default {d.precision})")
    g.add_argument("--critic", choices=["joint", "separable"], help=f"critic family (default {c.kind})")
    g.add_argument("--width", type=int, help=f"hidden units (default {c.width})")
    g.add_argument("--depth", type=int, help=f"hidden layers (default {c.depth})")
    g.add_argument("--activation", choices=["relu", "elu", "gelu", "silu", "tanh"], help=f"default {c.activation}")
    g.add_argument("--embed-dim", type=int, help=f"separable critic embedding size (default {c.embed_dim})")
    g = p.add_argument_group("execution and output")
    g.add_argument("--workers", type=int, default=0, help="0: train in this process (no Ray); N: Ray Train with N workers")
    g.add_argument("--gpu", action="store_true", help="one GPU per Ray worker (NCCL)")
    g.add_argument("--cpus-per-worker", type=float, default=None,
                   help="CPUs each Ray worker reserves (default: leave one CPU for data reading)")
    g.add_argument("--max-failures", type=int, default=2, help="worker failures to recover from via checkpoints")
    g.add_argument("--max-test-rows", type=int, default=500_000, help="test rows scored for the estimate (Ray path)")
    g.add_argument("--shuffle", choices=["auto", "blocks", "global"], default="auto",
                   help="Ray path: 'blocks' = random row-group order + local buffer (fast); 'global' = full "
                        "shuffle each epoch; 'auto' = global when the scan finds rows sorted or grouped")
    g.add_argument("--materialize", choices=["auto", "always", "never"], default="auto",
                   help="Ray path: read the train split once into the object store instead of once per epoch; "
                        "auto = when it takes at most a quarter of the object store")
    g.add_argument("--placement", choices=["PACK", "SPREAD"], default="PACK", help="Ray Train placement strategy")
    g.add_argument("--threads", type=int, default=1, help="torch threads in this process (default 1: fastest for small critics)")
    g.add_argument("--output", default="runs", help="where runs are written: <output>/<run_id>/ (default ./runs)")
    g.add_argument("--run-id", default=None, help="name of this run (default: time + random suffix)")
    g.add_argument("--resume", default=None, metavar="RUN_ID",
                   help="continue a stopped Ray run from its latest checkpoint (same options as the first run)")
    g.add_argument("--json", action="store_true", help="print the record as JSON on the last line of stdout")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> EstimatorConfig:
    """Defaults, then the ``--config`` file, then explicit flags."""
    base: dict = {}
    if args.config:
        try:
            base = runs.read_config_file(args.config)
        except ValueError as e:
            raise ValueError(f"--config: {e}") from None
    critic = dict(base.pop("critic", {}) or {})
    for flag in _EST_FLAGS:
        v = getattr(args, flag, None)
        if v is not None:
            base[flag] = v
    for flag, (field_, _) in _CRITIC_FLAGS.items():
        v = getattr(args, flag, None)
        if v is not None:
            critic[field_] = v
    known = {f.name for f in fields(CriticConfig)}
    bad = sorted(set(critic) - known)
    if bad:
        raise ValueError(f"unknown critic config key(s) {bad}; known: {sorted(known)}")
    base["critic"] = CriticConfig(**critic)
    return EstimatorConfig.from_dict(base)


def run_estimate(args: argparse.Namespace, cfg: EstimatorConfig | None = None) -> dict:
    """Validate, estimate (in-process or on Ray), write the run; returns the record.

    A failure from bad input removes the run directory (nothing partial stays in storage); a
    training failure or interruption keeps its checkpoints so ``--resume RUN_ID`` can continue.
    ``cfg`` overrides the estimator options of ``args`` (audits build it from their spec).
    """
    cfg = cfg or config_from_args(args)
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0; got {args.workers}")
    if args.max_rows is not None and args.max_rows < 2:
        raise ValueError(f"--max-rows must be >= 2; got {args.max_rows}")
    if args.resume and args.run_id and args.resume != args.run_id:
        raise ValueError(f"--resume {args.resume} and --run-id {args.run_id} name different runs")
    run_id = _given_id(args) if _given_id(args) is not None else runs.new_run_id()
    what = "--resume" if args.resume is not None else "--run-id"
    rundir.validate_id(run_id, what)
    if args.resume and args.workers == 0:
        raise ValueError("--resume needs the Ray path (--workers >= 1): in-process runs keep no checkpoints")
    _check_execution(args, cfg)
    storage.check_reachable(args.output, for_write=True)
    run_dir = runs.check_run_dir_free(args.output, run_id)
    ckpt_dir = storage.join(run_dir, "checkpoints")
    has_ckpt = storage.exists(ckpt_dir) and bool(storage.list_files(ckpt_dir))
    if has_ckpt and not args.resume:
        raise FileExistsError(f"run {run_id!r} has checkpoints in {storage.describe(run_dir)}; "
                              f"pass --resume {run_id} to continue it, or choose another --run-id")
    if args.resume and not has_ckpt:
        raise FileNotFoundError(f"--resume {run_id}: no checkpoints in {storage.describe(run_dir)}")
    if args.resume:
        ran = {**cfg.to_dict(), **({"device": "cuda"} if args.gpu else {})}  # what the Ray workers trained with
        rundir.check_resume(run_dir, ran, _data_request(args))
    claim = rundir.claim(args.output, run_id, what, request=_data_request(args))
    started, t0 = runs.now_iso(), time.perf_counter()
    try:
        record = _estimate_and_write(args, cfg, run_id, run_dir, started, t0)
    except (ValueError, TypeError, storage.StorageError, FileNotFoundError):
        # Bad input or configuration: nothing of this run is worth keeping (a resumed run keeps
        # what its first attempt wrote).
        if not args.resume:
            claim.release()
        raise
    except BaseException as e:
        # Training failed or was interrupted: keep checkpoints so the run can be resumed.
        if storage.exists(storage.join(run_dir, "checkpoints")):
            _write_failure(run_dir, run_id, e)
            _log(f"run {run_id} stopped; continue it with --resume {run_id}")
        else:
            claim.release()
        raise
    return record


def _write_failure(run_dir: str, run_id: str, e: BaseException) -> None:
    """``failure.json`` beside the kept checkpoints: the exit code and the error, so a run's outcome
    can be read from storage (``ray job submit`` only says FAILED). Best effort: never masks ``e``."""
    code = EXIT_INTERRUPTED if isinstance(e, KeyboardInterrupt) else EXIT_FAILED
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    try:
        storage.write_json_atomic(storage.join(run_dir, "failure.json"),
                                  {"run_id": run_id, "exit_code": code, "meaning": EXIT_MEANINGS[code],
                                   "error": f"{type(e).__name__}: {msg}", "failed_at": runs.now_iso(),
                                   "resume": f"--resume {run_id}"})
    except Exception:  # noqa: BLE001 - the original failure is what the user must see
        pass


def _given_id(args) -> str | None:
    """--resume or --run-id as given; an empty string is kept, so that it is refused, not replaced."""
    return args.resume if args.resume is not None else args.run_id


def _data_request(args) -> dict:
    """What a run reads, as kept in its directory's marker (compared on --resume)."""
    return {"data": storage.describe(args.data), "x": args.x, "z": args.z, "row_id": args.row_id,
            "max_rows": args.max_rows, "drop_nonfinite": bool(args.drop_nonfinite)}


def _check_execution(args, cfg: EstimatorConfig) -> None:
    """Options that cannot work on this machine or path, refused before anything is written."""
    if args.gpu and args.workers == 0:
        raise ValueError("--gpu asks Ray Train for GPU workers and needs --workers >= 1; "
                         "for an in-process run on a GPU use --device cuda")
    if cfg.device == "cuda":
        if args.workers > 0 and not args.gpu:
            raise ValueError("--device cuda with --workers >= 1: Ray workers get GPUs with --gpu")
        if args.workers == 0:
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"--device cuda: no CUDA device is available to this process "
                                 f"(torch {torch.__version__}); use --device cpu or auto")
    check_not_in_ray_job_dir(args.output, args.data)


def check_not_in_ray_job_dir(output: str | None, data: str | None = None) -> None:
    """Under ``ray job submit --working-dir``, the process runs in Ray's temporary copy of the
    working dir: a relative output would be written there, where the user never sees it (and is
    deleted with the job's files). A relative input is read from the copy, which is fine when it
    was uploaded with it; when it is not there, say why.

    Raises:
        ValueError: naming the option and where it would have gone.
    """
    cwd = os.getcwd()
    if "/runtime_resources/working_dir_files/" not in cwd + "/":
        return
    for flag, loc in (("--output", output), ("--data", data)):
        if not loc or "://" in loc or os.path.isabs(os.path.expanduser(loc)):
            continue
        if flag == "--data" and (os.path.exists(loc) or any(c in loc for c in "*?[")):
            continue
        raise ValueError(f"{flag} {loc!r} is relative, and this Ray job runs in Ray's temporary copy of the "
                         f"working dir: it would {'be written to' if flag == '--output' else 'be read from'} "
                         f"{os.path.abspath(loc)}; give an absolute path or a URI (s3://..., file:///...)")


def _estimate_and_write(args, cfg, run_id, run_dir, started, t0) -> dict:
    import torch

    from mine_dist import io, leaks
    from mine_dist.estimator import MINE

    info = io.inspect(args.data, args.x, args.z, args.row_id)
    _log(f"data: {info.rows} rows in {len(info.files)} file(s); x = {info.x.kind} {list(info.x.columns)} "
         f"(dim {info.x.dim}), z = {info.z.kind} {list(info.z.columns)} (dim {info.z.dim})")
    truth = runs.read_ground_truth(args.data)
    if args.workers == 0:
        torch.set_num_threads(max(1, args.threads))
        x, z, keys, dropped = io.read_arrays(info, args.max_rows, args.drop_nonfinite)
        if dropped:
            _log(f"dropped {dropped} row(s) with NaN/Inf")
        found = leaks.check(x, z, info.x, info.z, args.allow_identical)
        est = MINE(cfg).estimate(x, z, row_keys=keys, passthrough_x=io.passthrough_mask(info.x),
                                 passthrough_z=io.passthrough_mask(info.z), progress=not args.no_progress)
        result = est.to_dict()
        result["dropped_nonfinite"] = dropped
        result["warnings"] = found + list(result.get("warnings") or [])
    else:
        from mine_dist.distributed import run_distributed  # Ray is imported only on this path

        result = run_distributed(args, cfg, info, run_dir)
    record = _record(run_id, result, args.workers, info, truth, started, t0, run_dir)
    runs.write_run(run_dir, record, result["curves"], truth)
    storage.delete_tree(storage.join(run_dir, "failure.json"))  # an earlier attempt's, now resumed to the end
    return record


def _record(run_id, result, workers, info, truth, started, t0, run_dir) -> dict:
    """The estimate record of DESIGN.md (shared by ``estimate`` and ``sweep``'s best.json)."""
    return {
        "run_id": run_id,
        **{k: v for k, v in result.items() if k != "curves"},
        "workers": workers,
        "data": info.record(),
        "x_columns": info.x.to_dict(),
        "z_columns": info.z.to_dict(),
        "ground_truth": truth,
        "versions": runs.versions(),
        "started_at": started,
        "finished_at": runs.now_iso(),
        "wall_s": round(time.perf_counter() - t0, 3),
        "run_dir": storage.describe(run_dir),
        "exit_code": 0,
    }


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    """Options of ``mine-dist sweep`` (shared by ``pipelines/sweep.py``): the data and estimator
    options of ``estimate`` (the estimator options set the base configuration, trial 0) plus the
    search."""
    add_estimate_args(p)
    g = p.add_argument_group("sweep")
    g.add_argument("--trials", type=int, default=8, help="configurations to try (trial 0 is the base configuration)")
    g.add_argument("--space", default=None, help="YAML search space (default: critic kind, depth, width, activation, "
                   "lr, batch size, EMA rate; see mine_dist/sweep.py)")
    g.add_argument("--sweep-seed", type=int, default=0, help="seed for drawing the trials")
    g.add_argument("--concurrent", type=int, default=None, help="trials at once (default: what the CPUs allow)")
    g.add_argument("--grace-steps", type=int, default=None, help="ASHA: steps before a trial can be stopped "
                   "(default 2 x eval_every)")
    p.set_defaults(workers=1)


def run_sweep_command(args: argparse.Namespace) -> dict:
    """Validate the space and every trial's config on the driver, run the sweep, write best.json."""
    from mine_dist import io, sweep

    if args.workers < 1:
        raise ValueError(f"sweep trials run on Ray Train: --workers must be >= 1; got {args.workers}")
    base = config_from_args(args)
    if base.bound == "smile":
        raise ValueError(f"--bound smile cannot be a sweep's base configuration: {sweep.NOT_A_BOUND}")
    raw = yamlio.read(args.space, f"--space {args.space}") if args.space else None
    space = sweep.parse_space(raw, where=f"--space {args.space}" if args.space else "default search space")
    configs = sweep.sample_trials(space, base, args.trials, args.sweep_seed)
    sweep_id = _given_id(args) if _given_id(args) is not None else runs.new_run_id("sweep")
    what = "--resume" if args.resume is not None else "--run-id"
    rundir.validate_id(sweep_id, what)
    _check_execution(args, base)
    storage.check_reachable(args.output, for_write=True)
    sweep_dir = storage.join(args.output, sweep_id)
    if storage.exists(storage.join(sweep_dir, "best.json")):
        raise FileExistsError(f"sweep {sweep_id!r} already finished in {storage.describe(args.output)}")
    if storage.exists(storage.join(sweep_dir, "tune")) and not args.resume:
        raise FileExistsError(f"sweep {sweep_id!r} has started in {storage.describe(args.output)}; "
                              f"pass --resume {sweep_id} to continue it")
    claim = rundir.claim(args.output, sweep_id, what, request=_data_request(args))
    started, t0 = runs.now_iso(), time.perf_counter()
    try:
        info = io.inspect(args.data, args.x, args.z, args.row_id)
        truth = runs.read_ground_truth(args.data)
        from mine_dist.distributed.sweep import run_sweep

        result = run_sweep(args, configs, info, sweep_dir)
    except (ValueError, TypeError, storage.StorageError):
        if not args.resume:
            claim.release()
        raise
    except BaseException:
        _log(f"sweep {sweep_id} stopped; continue it with --resume {sweep_id}")
        raise
    record = _record(sweep_id, result, args.workers, info, truth, started, t0, sweep_dir)
    record["search_space"] = space.to_dict()
    runs.write_run(sweep_dir, record, result["curves"], truth)
    storage.write_text_atomic(storage.join(sweep_dir, "best.json"), json.dumps(runs._jsonable(record), indent=2))
    return record


def add_audit_args(p: argparse.ArgumentParser) -> None:
    """Options of ``mine-dist audit`` (shared by ``pipelines/audit.py``)."""
    p.add_argument("--spec", required=True, help="audit spec YAML (see mine_dist/audit.py)")
    p.add_argument("--output", required=True, help="where history/ and runs/ live (any URI)")
    p.add_argument("--run-id", default=None, help="the scheduled slot (default: today's UTC date); re-running a "
                   "slot adds no rows and only runs checks not yet recorded as ok")
    p.add_argument("--concurrent", type=int, default=None,
                   help="checks run at once, each as a Ray task (default: the spec's 'concurrent', else auto: "
                        "what the Ray cluster's CPUs allow; one at a time without Ray)")
    p.add_argument("--json", action="store_true", help="print the slot's results as JSON on the last line")
    p.add_argument("--no-progress", action="store_true")



def run_audit_command(args: argparse.Namespace) -> tuple[dict, int]:
    """Validate the whole spec (data, columns, units) first, then run each pending check."""
    from mine_dist import audit, io

    raw = yamlio.read(args.spec, f"--spec {args.spec}")
    # Relative data / config paths in a spec are taken from the spec's own folder.
    base_dir = os.path.dirname(os.path.abspath(args.spec)) if "://" not in args.spec else args.spec.rsplit("/", 1)[0]
    spec = audit.parse_spec(raw, base_dir=base_dir)
    slot = rundir.validate_id(audit.default_slot() if args.run_id is None else args.run_id, "--run-id (the audit slot)")
    check_not_in_ray_job_dir(args.output)
    storage.check_reachable(args.output, for_write=True)
    # Everything that can be checked without estimating, for every check, before any estimation.
    prepared = []
    for c in spec.checks:
        cfg = audit.estimator_config(c)
        try:
            info = io.inspect(c.data, c.x, c.z, c.row_id)
        except io.DataError as e:
            raise io.DataError(f"check {c.name!r}: {e}") from None
        h_z = audit.categorical_entropy(info) if info.z.kind == "categorical" else None
        if c.max_mi is not None and c.max_mi.unit == "fraction_of_h_z" and h_z is None:
            raise audit.SpecError(f"check {c.name!r}.alerts.max_mi: unit fraction_of_h_z needs a categorical z; "
                                  f"{c.z!r} is {info.z.kind}")
        prepared.append((c, cfg, h_z))
    history = audit.read_history(storage.join(args.output, "history"), spec.audit)
    done = {r["check"] for r in history if r["slot"] == slot and r["status"] == "ok"}
    prevs = {c.name: audit.previous_ok(history, c.name, slot) for c, _, _ in prepared}
    pending = [(c, cfg, h_z, prevs[c.name]) for c, cfg, h_z in prepared if c.name not in done]
    requested = args.concurrent if args.concurrent is not None else spec.concurrent
    if requested is not None and requested < 1:
        raise ValueError(f"--concurrent must be >= 1; got {requested}")
    if pending and (requested or 1) == 1 and all(c.workers == 0 for c, *_ in pending) \
            and not os.environ.get("RAY_ADDRESS"):
        ran = _run_checks_here(args, spec.audit, slot, pending)
    elif pending:
        from mine_dist.distributed.checks import run_checks  # Ray is imported only on this path

        ran = run_checks(args, spec.audit, slot, pending, requested, _log)
    else:
        ran = {}
    results, alerts = [], []
    for c, _, _ in prepared:
        prev = prevs[c.name]
        if c.name in done:
            row = next(r for r in history if r["slot"] == slot and r["check"] == c.name)
            _log(f"[{spec.audit}/{slot}] {c.name}: already recorded in this slot, skipped")
            fired = json.loads(row["alerts"] or "[]")
        else:
            row, fired = ran[c.name]
        results.append((c, row, prev))
        alerts += fired
    table = _audit_table(spec.audit, slot, results)
    print(table, file=sys.stderr if args.json else sys.stdout, flush=True)
    slot_dir = storage.join(args.output, "runs", spec.audit, slot)
    storage.write_text_atomic(storage.join(slot_dir, "alerts.json"),
                              json.dumps(runs._jsonable({"audit": spec.audit, "slot": slot, "alerts": alerts}), indent=2))
    for a in alerts:
        _log(f"ALERT {a['rule']}: {a['message']}")
    failed = [r for _, r, _ in results if r["status"] != "ok"]
    summary = {"audit": spec.audit, "slot": slot, "alerts": alerts,
               "checks": [{k: r.get(k) for k in ("check", "status", "mi_nats", "ci95_low_nats", "ci95_high_nats", "error")}
                          for _, r, _ in results]}
    if failed:
        _log(f"mine-dist: error: {len(failed)} check(s) failed: " + "; ".join(f"{r['check']}: {r['error']}" for r in failed))
        return summary, EXIT_FAILED
    return summary, (EXIT_ALERT if alerts else 0)


def _run_checks_here(args, audit_name, slot, pending) -> dict:
    """Run ``pending`` = [(check, cfg, h_z, prev)] one by one in this process: {name: (row, alerts)}."""
    return {c.name: _run_check(args, audit_name, slot, c, cfg, h_z, prev) for c, cfg, h_z, prev in pending}


def _check_row(audit_name, slot, check, h_z, started: str) -> dict:
    """The identifying part of a check's history row (completed by the outcome)."""
    return {"audit": audit_name, "slot": slot, "check": check.name, "started_at": started, "h_z_nats": h_z,
            "data_uri": storage.describe(check.data)}


def _run_check(args, audit_name, slot, check, cfg, h_z, prev, cpus_per_worker=None) -> tuple[dict, list]:
    """Estimate one check and write its history row (also what a concurrent check's Ray task runs)."""
    from mine_dist import audit

    ns = build_parser().parse_args(["estimate", "--data", check.data, "--x", check.x, "--z", check.z,
                                    "--output", storage.join(args.output, "runs", audit_name, slot),
                                    "--run-id", check.name, "--workers", str(check.workers)]
                                   + (["--row-id", check.row_id] if check.row_id else [])
                                   + (["--max-rows", str(check.max_rows)] if check.max_rows else [])
                                   + (["--cpus-per-worker", str(cpus_per_worker)] if cpus_per_worker else [])
                                   + (["--no-progress"] if args.no_progress else []))
    run_dir = storage.join(ns.output, check.name)
    if storage.exists(storage.join(run_dir, "estimate.json")):
        rundir.remove_owned(run_dir)  # a previous attempt of this slot finished the run but not the row
    elif storage.exists(storage.join(run_dir, "checkpoints")):
        ns.resume = check.name  # a previous attempt was killed mid-training: continue it
    started = runs.now_iso()
    row = _check_row(audit_name, slot, check, h_z, started)
    _log(f"[{audit_name}/{slot}] {check.name}: estimating I({check.x}; {check.z}) on {storage.describe(check.data)}")
    try:
        rec = run_estimate(ns, cfg)
    except Exception as e:  # noqa: BLE001 - one failing check must not lose the others
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return _error_row(args, audit_name, slot, check, cfg, h_z, msg, started), []
    fired = audit.evaluate_alerts(check, rec["mi_nats"], h_z, prev, tuple(rec["ci95_nats"]))
    row.update({"status": "ok", "error": None, "mi_nats": rec["mi_nats"], "mi_bits": rec["mi_bits"],
                "ci95_low_nats": rec["ci95_nats"][0], "ci95_high_nats": rec["ci95_nats"][1], "bound": rec["bound"],
                "n_test": rec["n_test"], "data_fingerprint": rec["data"]["fingerprint"],
                "config": json.dumps(rec["config"]), "versions": json.dumps(rec["versions"]),
                "run_dir": rec["run_dir"], "alerts": json.dumps(runs._jsonable(fired)),
                "warnings": json.dumps(rec.get("warnings") or []), "finished_at": runs.now_iso()})
    audit.write_history_row(args.output, row)
    return row, fired


def _error_row(args, audit_name, slot, check, cfg, h_z, msg: str, started: str | None = None) -> dict:
    """Record a failed check in the history (the others' results are kept)."""
    from mine_dist import audit

    row = {**_check_row(audit_name, slot, check, h_z, started or runs.now_iso()), "status": "error", "error": msg,
           "finished_at": runs.now_iso(), "alerts": "[]", "config": json.dumps(cfg.to_dict()),
           "versions": json.dumps(runs.versions())}
    audit.write_history_row(args.output, row)
    return row


def _audit_table(audit_name, slot, results) -> str:
    lines = [f"audit {audit_name}, slot {slot}",
             f"{'check':24s} {'previous':>18s} {'current (95% CI)':>30s} {'change':>9s}  status"]
    for c, r, prev in results:
        p = f"{prev['mi_nats']:.4f} ({prev['slot']})" if prev else "-"
        if r["status"] == "ok":
            cur = f"{r['mi_nats']:.4f} [{r['ci95_low_nats']:.4f}, {r['ci95_high_nats']:.4f}]"
            ch = f"{r['mi_nats'] - prev['mi_nats']:+.4f}" if prev else "-"
            fired = json.loads(r["alerts"] or "[]")
            st = "ALERT " + ",".join(a["rule"] for a in fired) if fired else "ok"
        else:
            cur, ch, st = "-", "-", f"error: {r['error']}"
        lines.append(f"{c.name:24s} {p:>18s} {cur:>30s} {ch:>9s}  {st}")
    return "\n".join(lines)


def run_report_command(args: argparse.Namespace) -> str:
    from mine_dist import audit

    rows = audit.read_history(args.history, args.audit)
    if not rows:
        raise ValueError(f"no history for audit {args.audit!r} under {storage.describe(args.history)}")
    lines = [f"{'slot':12s} {'check':24s} {'status':7s} {'mi_nats':>8s} {'95% CI':>20s} {'mi_bits':>8s}  alerts"]
    for r in rows:
        if r["status"] == "ok":
            alerts = ",".join(a["rule"] for a in json.loads(r["alerts"] or "[]")) or "-"
            lines.append(f"{r['slot']:12s} {r['check']:24s} ok      {r['mi_nats']:8.4f} "
                         f"[{r['ci95_low_nats']:.4f}, {r['ci95_high_nats']:.4f}] {r['mi_bits']:8.4f}  {alerts}")
        else:
            lines.append(f"{r['slot']:12s} {r['check']:24s} error   {'':8s} {'':>20s} {'':8s}  {r['error']}")
    plot = args.plot or storage.join(args.history.rstrip("/").rsplit("/", 1)[0], f"report-{args.audit}.png")
    storage.write_bytes_atomic(plot, _report_png(args.audit, rows))
    lines.append(f"plot written to {storage.describe(plot)}")
    return "\n".join(lines)


def _report_png(audit_name: str, rows: list[dict]) -> bytes:
    import io as _io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checks = sorted({r["check"] for r in rows})
    slots = sorted({r["slot"] for r in rows})
    fig, axes = plt.subplots(len(checks), 1, figsize=(7, 2.6 * len(checks)), dpi=110, squeeze=False)
    for ax, c in zip(axes[:, 0], checks):
        ok = [r for r in rows if r["check"] == c and r["status"] == "ok"]
        xs = [slots.index(r["slot"]) for r in ok]
        ys = [r["mi_nats"] for r in ok]
        lo = [r["mi_nats"] - r["ci95_low_nats"] for r in ok]
        hi = [r["ci95_high_nats"] - r["mi_nats"] for r in ok]
        if ok:
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=4, label="MI (95% CI)")
        fired = [(r, a) for r in ok for a in json.loads(r["alerts"] or "[]")]
        for i, (r, a) in enumerate(fired):
            ax.plot(slots.index(r["slot"]), r["mi_nats"], "rx", ms=12, mew=2,
                    label="alert fired" if i == 0 else None)
            ax.annotate(a["rule"], (slots.index(r["slot"]), r["mi_nats"]), textcoords="offset points",
                        xytext=(8, 6), fontsize=7, color="red")
        limits = {a["rule"]: a for _, a in fired}
        if "max_mi" in limits:
            ax.axhline(limits["max_mi"]["limit_nats"], color="red", ls="--", lw=1,
                       label=f"max_mi limit {limits['max_mi']['limit_nats']:.3f}")
        if "max_change" in limits:
            ax.plot([], [], " ", label=f"max_change limit {limits['max_change']['limit_nats']:.3f} nats")
        h = [r["h_z_nats"] for r in ok if r.get("h_z_nats")]
        if h:
            ax.axhline(h[-1], color="grey", ls=":", lw=1, label=f"H(z) = {h[-1]:.3f}")
        # A failed check has no estimate: mark the slot itself (not a value of 0, which would read as MI = 0).
        bad = [r for r in rows if r["check"] == c and r["status"] != "ok"]
        for i, r in enumerate(bad):
            xb = slots.index(r["slot"])
            ax.axvspan(xb - 0.3, xb + 0.3, color="black", alpha=0.08, lw=0, label="failed (no estimate)" if i == 0 else None)
            err = (r.get("error") or "error")
            ax.text(xb, 0.5, err[:60] + ("..." if len(err) > 60 else ""), transform=ax.get_xaxis_transform(),
                    rotation=90, ha="center", va="center", fontsize=6, color="black")
        ax.set_title(f"{audit_name} / {c}", fontsize=9)
        ax.set_ylabel("nats")
        ax.set_xticks(range(len(slots)), slots, rotation=30, fontsize=7)
        ax.set_xlim(-0.6, len(slots) - 0.4)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = _io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def run_make_data(args: argparse.Namespace) -> dict:
    from mine_dist import synthetic

    spec = synthetic.Spec(kind=args.kind, dim=args.dim, rho=args.rho, transform=args.transform,
                          classes=args.classes, sep=args.sep)
    gt_uri = storage.join(args.output, "ground_truth.json")
    check_not_in_ray_job_dir(args.output)
    if storage.exists(args.output):
        if storage.exists(gt_uri) and not args.overwrite:
            raise FileExistsError(f"{storage.describe(args.output)} already holds a dataset; pass --overwrite to replace it")
        others = [f for f in storage.list_files(args.output)
                  if not (f.endswith(".parquet") or f.endswith("/ground_truth.json"))]
        if others or (storage.list_files(args.output) and not storage.exists(gt_uri)):
            raise FileExistsError(f"{storage.describe(args.output)} holds files that are not a mine-dist dataset "
                                  f"(e.g. {storage.describe((others or storage.list_files(args.output))[0])}); "
                                  f"choose an empty or new --output")
        if args.overwrite:
            storage.delete_tree(args.output)
    t0 = time.perf_counter()
    truth = synthetic.write_dataset(spec, args.rows, args.shards, args.output, seed=args.seed)
    _log(f"wrote {args.rows} rows in {args.shards} shard(s) to {storage.describe(args.output)} "
         f"in {time.perf_counter() - t0:.1f} s; true MI {truth['mi_nats']:.4f} nats ({truth['mi_bits']:.4f} bits)")
    return truth


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mine-dist", description="Mutual information neural estimation at scale.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("estimate", help="estimate I(X;Z) from a Parquet dataset")
    add_estimate_args(e)
    w = sub.add_parser("sweep", help="Ray Tune sweep of estimator configurations; best.json holds the winner's "
                       "config and its test-split estimate")
    add_sweep_args(w)
    a = sub.add_parser("audit", help="run a scheduled MI audit: every check of a spec, history, alerts "
                       f"(exit {EXIT_ALERT} when an alert fires)")
    add_audit_args(a)
    r = sub.add_parser("report", help="print an audit's history and plot MI over time per check")
    r.add_argument("--history", required=True, help="<output>/history of an audit")
    r.add_argument("--audit", required=True, help="audit name")
    r.add_argument("--plot", default=None, help="PNG to write (default <output>/report-<audit>.png)")
    m = sub.add_parser("make-data", help="write a synthetic dataset with known MI")
    m.add_argument("kind", choices=["gaussian", "independent", "mixture"])
    m.add_argument("--dim", type=int, default=5)
    m.add_argument("--rho", type=float, default=0.8, help="per-coordinate correlation (gaussian)")
    m.add_argument("--transform", default="none", choices=["none", "cubic", "exp", "cauchy"],
                   help="invertible per-coordinate map of x and z (MI unchanged)")
    m.add_argument("--classes", type=int, default=10, help="labels (mixture)")
    m.add_argument("--sep", type=float, default=2.0, help="class mean separation (mixture)")
    m.add_argument("--rows", type=int, default=100_000)
    m.add_argument("--shards", type=int, default=8)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--output", required=True)
    m.add_argument("--overwrite", action="store_true")
    m.add_argument("--json", action="store_true")
    return p


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return dispatch(args)


def dispatch(args: argparse.Namespace) -> int:
    """Run a parsed command; map failures to one stderr line and an exit code."""
    from mine_dist.io import DataError

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if args.command == "make-data":
            record = run_make_data(args)
            text = json.dumps(record) if args.json else None
        elif args.command == "audit":
            record, code = run_audit_command(args)
            if args.json:
                print(json.dumps(runs._jsonable(record)), flush=True)
            return code
        elif args.command == "report":
            record, text = None, run_report_command(args)
        elif args.command in ("estimate", "sweep"):
            record = run_estimate(args) if args.command == "estimate" else run_sweep_command(args)
            text = json.dumps(runs._jsonable(record)) if args.json else runs.summary(record)
        else:  # pragma: no cover - argparse enforces the choices
            raise ValueError(f"unknown command {args.command!r}")
    except DataError as e:
        return _fail(e, EXIT_DATA)
    except storage.StorageError as e:
        return _fail(e, EXIT_STORAGE)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as e:
        return _fail(e, EXIT_USAGE)
    except FloatingPointError as e:
        return _fail(e, EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except Exception as e:  # noqa: BLE001 - training failures (e.g. Ray worker errors): one line, non-zero
        cause = getattr(e, "cause", None) or e.__cause__ or e
        return _fail(f"{type(e).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else cause!r}",
                     EXIT_FAILED)
    if text is not None:
        print(text, flush=True)
    return 0


def run_entry_point(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """A ``pipelines/`` script: dispatch, then print the exit code as the last stderr line.

    ``ray job submit`` reports any non-zero exit as a FAILED job with exit status 1, so the tool's
    own code is only readable from the job log: its last line is ``mine-dist: exit code N (meaning)``.
    """
    code = dispatch(parser.parse_args(argv))
    print(f"mine-dist: exit code {code} ({EXIT_MEANINGS.get(code, 'unknown')})", file=sys.stderr, flush=True)
    return code


def _fail(e, code: int) -> int:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"mine-dist: error: {msg}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``mine-dist`` command line: flags -> typed jobs, dispatch, exit codes, printing.

Every command is a thin shell over ``mine_dist.jobs`` (estimate, sweep, audit, report, make-data):
flags become frozen specs here, in one place, and the library never sees a raw dict or an argparse
namespace. Errors end with one line on stderr (``mine-dist: error: ...``) and the exit code of the
table in ``docs/reliability.md``; progress and logs go to stderr, and ``--json`` prints the record
as the last line of stdout. Nothing imports this module but ``pipelines/`` and ``__main__``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields

from mine_dist import bounds as B
from mine_dist import critics, normalize, runs, storage, synthetic
from mine_dist.critics import CriticConfig
from mine_dist.distributed.options import MATERIALIZE_MODES, PLACEMENTS, SHUFFLE_MODES, RayOptions
from mine_dist.estimator import EstimatorConfig
from mine_dist.io import DataSpec
from mine_dist.jobs.common import (EXIT_ALERT, EXIT_DATA, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_MEANINGS,  # noqa: F401
                                   EXIT_STORAGE, EXIT_USAGE, log)

# CLI flag -> EstimatorConfig / CriticConfig field. Defaults are None so a --config file's values
# are only overridden by flags the user actually gave.
_EST_FLAGS = {
    "bound": str, "batch_size": int, "lr": float, "steps": int, "ema_rate": float, "smile_tau": float,
    "eval_every": int, "patience": int, "min_gain": float, "val_fraction": float, "test_fraction": float,
    "normalize": str, "eval_negatives": int, "val_negatives": int, "precision": str, "bootstrap": int, "seed": int,
    "device": str, "replicates": int,
}
_CRITIC_FLAGS = {"critic": ("kind", str), "width": ("width", int), "depth": ("depth", int),
                 "activation": ("activation", str), "embed_dim": ("embed_dim", int), "cca": ("cca", bool)}


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
    g.add_argument("--bound", choices=B.CHOICES,
                   help=f"default {d.bound}: ba (a classifier, capped at H(Z)) when z is one categorical column, else mine")
    g.add_argument("--steps", type=int, help=f"maximum training steps (default {d.steps})")
    g.add_argument("--batch-size", type=int, help=f"per-worker batch (default {d.batch_size})")
    g.add_argument("--lr", type=float, help=f"Adam learning rate (default {d.lr})")
    g.add_argument("--ema-rate", type=float, help=f"MINE moving-average rate (default {d.ema_rate})")
    g.add_argument("--smile-tau", type=float, help=f"SMILE clip (default {d.smile_tau})")
    g.add_argument("--eval-every", type=int, help=f"steps between validation checks (default {d.eval_every})")
    g.add_argument("--patience", type=int, help=f"checks without improvement before stopping, 0 = never (default {d.patience})")
    g.add_argument("--min-gain", type=float, help=f"a check improves only when it beats the last improvement by this "
                   f"many standard errors of its value; 0 = any gain (default {d.min_gain})")
    g.add_argument("--val-fraction", type=float, help=f"default {d.val_fraction}")
    g.add_argument("--test-fraction", type=float, help=f"default {d.test_fraction}")
    g.add_argument("--normalize", choices=normalize.METHODS, help=f"default {d.normalize}")
    g.add_argument("--eval-negatives", type=int, help=f"marginal pairs per test row, joint critic (default {d.eval_negatives})")
    g.add_argument("--val-negatives", type=int, help=f"marginal pairs per validation row at each check (default {d.val_negatives})")
    g.add_argument("--bootstrap", type=int, help=f"bootstrap resamples for the interval (default {d.bootstrap})")
    g.add_argument("--seed", type=int, help=f"default {d.seed}")
    g.add_argument("--replicates", type=int, help=f"critics trained with different seeds and train/validation rows, "
                   f"averaged; the interval adds their spread to test sampling (on Ray side by side; default {d.replicates})")
    g.add_argument("--device", choices=["cpu", "cuda", "auto"], help=f"default {d.device}")
    g.add_argument("--precision", choices=["fp32", "bf16"], help=f"bf16: autocast the critic's training forward "
                   f"pass to bfloat16, for GPUs (default {d.precision})")
    g.add_argument("--critic", choices=critics.KINDS, help=f"critic family (default {c.kind}; ba uses classifier)")
    g.add_argument("--width", type=int, help="hidden units (default auto: 128 when dim x + dim z <= 20, else 256)")
    g.add_argument("--depth", type=int, help=f"hidden layers (default {c.depth})")
    g.add_argument("--activation", choices=list(critics.ACTIVATIONS), help=f"default {c.activation}")
    g.add_argument("--embed-dim", type=int, help=f"separable critic embedding size (default {c.embed_dim})")
    g.add_argument("--no-cca", dest="cca", action="store_const", const=False, default=None,
                   help="joint critic: read x, z as given, without the train rows' CCA basis and the Gaussian "
                        "path started from it (default: on; see mine_dist/cca.py)")
    g = p.add_argument_group("execution and output")
    g.add_argument("--workers", type=_workers, default=0,
                   help="0: train in this process (no Ray); N: Ray Train with N workers; auto: 1 Ray Train worker, "
                        "or this process for data of at most MINE_DIST_IN_PROCESS_MAX_VALUES (default 10,000,000) "
                        "values, rows x (dim x + dim z), without --gpu (pipelines/estimate.py's default)")
    g.add_argument("--gpu", action="store_true", help="one GPU per Ray worker (NCCL)")
    g.add_argument("--cpus-per-worker", type=float, default=None,
                   help="CPUs each Ray worker reserves (default: leave one CPU for data reading)")
    g.add_argument("--max-failures", type=int, default=2, help="worker failures to recover from via checkpoints")
    g.add_argument("--max-test-rows", type=int, default=500_000, help="test rows scored for the estimate (Ray path)")
    g.add_argument("--shuffle", choices=SHUFFLE_MODES, default="auto",
                   help="Ray path: 'blocks' = random row-group order + local buffer (fast); 'global' = full "
                        "shuffle each epoch; 'auto' = global when the scan finds rows sorted or grouped")
    g.add_argument("--materialize", choices=MATERIALIZE_MODES, default="auto",
                   help="Ray path: read the train split once into the object store instead of once per epoch; "
                        "auto = when it takes at most a quarter of the object store")
    g.add_argument("--placement", choices=PLACEMENTS, default="PACK", help="Ray Train placement strategy")
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


def data_spec(args: argparse.Namespace) -> DataSpec:
    return DataSpec(args.data, args.x, args.z, args.row_id, args.max_rows, args.drop_nonfinite, args.allow_identical)


def _workers(v: str):
    """``--workers``: an int or ``auto``."""
    if v == "auto":
        return v
    try:
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int or 'auto'; got {v!r}") from None


def ray_options(args: argparse.Namespace) -> RayOptions | None:
    """None for ``--workers 0`` (in-process); ``auto`` is one worker (the size rule may train in-process)."""
    workers = 1 if args.workers == "auto" else args.workers
    if workers < 0:
        raise ValueError(f"--workers must be >= 0; got {workers}")
    if workers == 0:
        if args.gpu:
            raise ValueError("--gpu asks Ray Train for GPU workers and needs --workers >= 1; "
                             "for an in-process run on a GPU use --device cuda")
        return None
    return RayOptions(workers=workers, gpu=args.gpu, cpus_per_worker=args.cpus_per_worker,
                      max_failures=args.max_failures, max_test_rows=args.max_test_rows, shuffle=args.shuffle,
                      materialize=args.materialize, placement=args.placement, progress=not args.no_progress)


def estimate_job(args: argparse.Namespace, cfg: EstimatorConfig | None = None):
    from mine_dist.jobs.common import in_process_max_values
    from mine_dist.jobs.estimate import EstimateJob

    return EstimateJob(data_spec(args), cfg or config_from_args(args), output=args.output, run_id=args.run_id, resume=args.resume,
                       ray=ray_options(args), threads=args.threads, progress=not args.no_progress,
                       in_process_max_values=in_process_max_values() if args.workers == "auto" else 0)


def run_estimate(args: argparse.Namespace, cfg: EstimatorConfig | None = None) -> dict:
    """``mine-dist estimate``: the record of the finished run (benchmarks call this too)."""
    return estimate_job(args, cfg).run().record


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
    from mine_dist.jobs.sweep import SweepJob

    if args.workers == "auto" or args.workers < 1:
        raise ValueError(f"sweep trials run on Ray Train: --workers must be >= 1; got {args.workers}")
    return SweepJob(data_spec(args), config_from_args(args), space=args.space, trials=args.trials,
                    sweep_seed=args.sweep_seed, concurrent=args.concurrent, grace_steps=args.grace_steps,
                    output=args.output, run_id=args.run_id, resume=args.resume, ray=ray_options(args)).run()


def add_audit_args(p: argparse.ArgumentParser) -> None:
    """Options of ``mine-dist audit`` (shared by ``pipelines/audit.py``)."""
    p.add_argument("--spec", required=True, help="audit spec YAML (see mine_dist/audit.py)")
    p.add_argument("--output", required=True, help="where history/ and runs/ live (any URI)")
    p.add_argument("--run-id", default=None, help="the scheduled slot (default: today's UTC date); re-running a "
                   "slot adds no rows and only runs checks not yet recorded as ok")
    p.add_argument("--concurrent", type=int, default=None,
                   help="checks run at once, each as a Ray task (default: the spec's 'concurrent', else auto: "
                        "what the Ray cluster's CPUs allow; one at a time without Ray)")
    p.add_argument("--in-process-max-values", type=_nonnegative_int, default=None, metavar="N",
                   help="checks of 'workers: 1' on at most N values (rows x (dim x + dim z)) train in-process "
                        "instead of as a Ray Train run (0: never; default 10,000,000 or the environment's "
                        "MINE_DIST_IN_PROCESS_MAX_VALUES)")
    p.add_argument("--json", action="store_true", help="print the slot's results as JSON on the last line")
    p.add_argument("--no-progress", action="store_true")


def _nonnegative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0; got {text!r}")
    return v


def run_audit_command(args: argparse.Namespace) -> tuple[dict, int]:
    """Run the slot; the table goes to stdout (stderr with --json); exit 5 if a check failed, 6 on alerts."""
    from mine_dist.jobs.audit import AuditJob

    limit = {} if args.in_process_max_values is None else {"in_process_max_values": args.in_process_max_values}
    res = AuditJob(args.spec, args.output, slot=args.run_id, concurrent=args.concurrent,
                   progress=not args.no_progress, **limit).run()
    print(res.table, file=sys.stderr if args.json else sys.stdout, flush=True)
    for a in res.alerts:
        log(f"ALERT {a['rule']}: {a['message']}")
    if res.failed:
        log(f"mine-dist: error: {len(res.failed)} check(s) failed: "
            + "; ".join(f"{r['check']}: {r['error']}" for r in res.failed))
        return res.summary, EXIT_FAILED
    return res.summary, (EXIT_ALERT if res.alerts else 0)


def add_make_data_args(p: argparse.ArgumentParser) -> None:
    """``make-data KIND``: one option per parameter of the kinds in ``synthetic.KINDS`` (a kind takes
    only its own; ``mine-dist make-data KIND --help`` lists them all)."""
    p.add_argument("kind", choices=list(synthetic.KINDS),
                   help="; ".join(f"{k.name}: {k.help}" for k in synthetic.KINDS.values()))
    seen: dict = {}
    for k in synthetic.KINDS.values():
        for prm in k.params:
            seen.setdefault(prm.name, (prm, []))[1].append(k.name)
    g = p.add_argument_group("distribution parameters (each names the kinds that take it)")
    for name, (prm, kinds) in seen.items():
        g.add_argument(f"--{name.replace('_', '-')}", dest=f"p_{name}", type=prm.type, default=None,
                       choices=prm.choices or None, help=f"{prm.help} [{', '.join(kinds)}]")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace a mine-dist dataset (and nothing else)")
    p.add_argument("--json", action="store_true")


def run_make_data(args: argparse.Namespace) -> dict:
    from mine_dist.jobs.make_data import make_data

    params = {k[2:]: v for k, v in vars(args).items() if k.startswith("p_") and v is not None}
    return make_data(args.kind, params, args.rows, args.shards, args.output, args.seed, args.overwrite)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mine-dist", description="Mutual information neural estimation at scale.")
    sub = p.add_subparsers(dest="command", required=True)
    add_estimate_args(sub.add_parser("estimate", help="estimate I(X;Z) from a Parquet dataset"))
    add_sweep_args(sub.add_parser("sweep", help="Ray Tune sweep of estimator configurations; best.json holds "
                                  "the winner's config and its test-split estimate"))
    add_audit_args(sub.add_parser("audit", help="run a scheduled MI audit: every check of a spec, history, alerts "
                                  f"(exit {EXIT_ALERT} when an alert fires)"))
    r = sub.add_parser("report", help="print an audit's history and plot MI over time per check")
    r.add_argument("--history", required=True, help="<output>/history of an audit")
    r.add_argument("--audit", required=True, help="audit name")
    r.add_argument("--plot", default=None, help="PNG to write (default <output>/report-<audit>.png)")
    add_make_data_args(sub.add_parser("make-data", help="write a synthetic dataset with known MI"))
    return p


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser().parse_args(argv))


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
            from mine_dist.jobs.report import report

            text = report(args.history, args.audit, args.plot)
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

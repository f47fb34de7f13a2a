"""What every job shares: the exit-code table, logging, the record, and path checks."""

from __future__ import annotations

import os
import sys

from mine_dist import rundir, runs, storage

EXIT_USAGE, EXIT_DATA, EXIT_STORAGE, EXIT_FAILED, EXIT_ALERT, EXIT_INTERRUPTED = 2, 3, 4, 5, 6, 130
EXIT_MEANINGS = {0: "ok", 1: "unexpected error", EXIT_USAGE: "usage or configuration error", EXIT_DATA: "data error",
                 EXIT_STORAGE: "storage error", EXIT_FAILED: "training failed", EXIT_ALERT: "audit alert fired",
                 EXIT_INTERRUPTED: "interrupted"}


# The size rule: a run asking for one Ray Train worker (no GPU) on at most this many values (rows x
# (dim x + dim z); 10M float64 values = 80 MB in memory) trains in-process instead (an audit check,
# or `pipelines/estimate.py --workers auto`): the same steps and checkpoints on one process, without
# Ray Train's fixed start-up (docs/benchmarks.md, "Ray job overhead"). Worker-group restarts
# (--max-failures) are what it gives up; --resume still continues a killed run.
IN_PROCESS_MAX_VALUES = 10_000_000
IN_PROCESS_ENV = "MINE_DIST_IN_PROCESS_MAX_VALUES"


def env_int(name: str, default: int) -> int:
    """An int from the environment (``ray job submit --runtime-env-json`` reaches a job this way)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an int; got {raw!r}") from None


def in_process_max_values() -> int:
    """The size rule's limit: ``MINE_DIST_IN_PROCESS_MAX_VALUES`` or :data:`IN_PROCESS_MAX_VALUES`."""
    return env_int(IN_PROCESS_ENV, IN_PROCESS_MAX_VALUES)


def data_values(info, max_rows: int | None) -> int:
    """What the size rule counts: rows read (``max_rows`` at most) x (dim x + dim z)."""
    rows = info.rows if max_rows is None else min(info.rows, max_rows)
    return rows * (info.x.dim + info.z.dim)


def log(msg: str) -> None:
    """Progress and notes go to stderr (stdout is kept for the result)."""
    print(msg, file=sys.stderr, flush=True)


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def write_failure(run_dir: str, run_id: str, e: BaseException) -> None:
    """``failure.json`` beside the kept checkpoints: the exit code and the error, so a run's outcome
    can be read from storage (``ray job submit`` only says FAILED). Best effort: never masks ``e``."""
    code = EXIT_INTERRUPTED if isinstance(e, KeyboardInterrupt) else EXIT_FAILED
    try:
        storage.write_json_atomic(storage.join(run_dir, "failure.json"),
                                  {"run_id": run_id, "exit_code": code, "meaning": EXIT_MEANINGS[code],
                                   "error": f"{type(e).__name__}: {first_line(e)}", "failed_at": runs.now_iso(),
                                   "resume": f"--resume {run_id}"})
    except Exception:  # noqa: BLE001 - the original failure is what the user must see
        pass


def check_device(device: str, workers: int, gpu: bool) -> None:
    """A device that cannot work on this machine or path, refused before anything is written."""
    if device == "cuda":
        if workers > 0 and not gpu:
            raise ValueError("--device cuda with --workers >= 1: Ray workers get GPUs with --gpu")
        if workers == 0:
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"--device cuda: no CUDA device is available to this process "
                                 f"(torch {torch.__version__}); use --device cpu or auto")


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


def run_id_or_new(run_id: str | None, resume: str | None, prefix: str = "run") -> tuple[str, str]:
    """The id a run writes under, validated (:func:`rundir.validate_id`), and the option that named
    it (``--resume`` or ``--run-id``).

    Raises:
        ValueError: both given and different, or not a safe path segment.
    """
    if resume is not None and run_id is not None and resume != run_id:
        raise ValueError(f"--resume {resume} and --run-id {run_id} name different runs")
    if resume is not None:
        return rundir.validate_id(resume, "--resume"), "--resume"
    return rundir.validate_id(run_id if run_id is not None else runs.new_run_id(prefix), "--run-id"), "--run-id"

"""An estimate as a job: validate, claim the run directory, estimate (in-process or on Ray), write.

A failure from bad input removes the run directory (only one the run itself created; nothing
partial stays in storage); a training failure or interruption after the first validation check
keeps its checkpoints (Ray Train's under ``checkpoints/``, an in-process run's under
``checkpoints/in-process/``), writes ``failure.json`` and says how to ``--resume``. A run resumes
on the path that trained it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mine_dist import io, rundir, runs, storage
from mine_dist.distributed.options import RayOptions
from mine_dist.estimator import EstimatorConfig, MIEstimate
from mine_dist.jobs.common import (check_device, check_not_in_ray_job_dir, data_values, log, run_id_or_new,
                                   write_failure)


@dataclass(frozen=True)
class EstimateResult:
    """A finished run: the estimate, the record written as ``estimate.json``, and where."""

    estimate: MIEstimate
    record: dict
    run_dir: str


@dataclass(frozen=True)
class EstimateJob:
    """One estimate of I(X;Z).

    Attributes:
        data: what to read.
        config: the estimator.
        output: where runs are written (``<output>/<run_id>/``), any URI.
        run_id: the run's name (default: time + random suffix); one safe path segment.
        resume: continue this run from its latest checkpoint (its options must match; on the
            path, in-process or Ray, that trained it).
        ray: Ray Train execution; None trains in this process (no Ray start-up).
        threads: torch threads for an in-process run.
        progress: a progress bar (in-process) or a line per validation check (Ray).
        in_process_max_values: the size rule (``--workers auto``): with ``ray`` of one worker
            and no GPU, data of at most this many values (rows x (dim x + dim z)) trains in this
            process instead of on Ray Train (0: never). A resumed run keeps the path that trained it.
    """

    data: io.DataSpec
    config: EstimatorConfig = field(default_factory=EstimatorConfig)
    output: str = "runs"
    run_id: str | None = None
    resume: str | None = None
    ray: RayOptions | None = None
    threads: int = 1
    progress: bool = True
    in_process_max_values: int = 0

    @property
    def workers(self) -> int:
        return self.ray.workers if self.ray else 0

    def _size_rule_applies(self) -> bool:
        return bool(self.in_process_max_values and self.ray is not None and self.ray.workers == 1
                    and not self.ray.gpu)

    def run(self) -> EstimateResult:
        """Run the estimate and write its record.

        Raises:
            ValueError, FileExistsError, FileNotFoundError: bad options, ids or run state (exit 2).
            DataError: bad input data (exit 3). StorageError: storage problems (exit 4).
        """
        run_id, what = run_id_or_new(self.run_id, self.resume)
        if self.config.replicates > 1 and self.resume is not None:
            raise ValueError(f"--resume does not continue a run of --replicates {self.config.replicates} "
                             f"(each replicate keeps its own checkpoints); start it again")
        check_device(self.config.device, self.workers, bool(self.ray and self.ray.gpu))
        check_not_in_ray_job_dir(self.output, self.data.uri)
        storage.check_reachable(self.output, for_write=True)
        run_dir = runs.check_run_dir_free(self.output, run_id)
        ckpt_dir = storage.join(run_dir, "checkpoints")
        has_ckpt = storage.exists(ckpt_dir) and bool(storage.list_files(ckpt_dir))
        if has_ckpt and self.resume is None:
            raise FileExistsError(f"run {run_id!r} has checkpoints in {storage.describe(run_dir)}; "
                                  f"pass --resume {run_id} to continue it, or choose another --run-id")
        if self.resume is not None and not has_ckpt:
            raise FileNotFoundError(f"--resume {run_id}: no checkpoints in {storage.describe(run_dir)}")
        ray, size_rule = self.ray, None  # the size rule may choose this process instead of Ray Train
        if self.resume is not None:
            in_process = storage.exists(storage.join(ckpt_dir, rundir.IN_PROCESS_CHECKPOINTS))
            if in_process and self._size_rule_applies():
                log(f"run {run_id} was trained in-process (the size rule): resuming it in this process")
                ray, size_rule = None, "resumed in this process: the run was trained in-process"
            if in_process != (ray is None):
                raise ValueError(f"--resume {run_id}: the run was trained {'in-process' if in_process else 'on Ray Train'}; "
                                 f"resume it the same way ({'--workers 0' if in_process else '--workers >= 1'})")
        info = self.data.inspect()
        if self.resume is None and self._size_rule_applies():
            values = data_values(info, self.data.max_rows)
            if values <= self.in_process_max_values:
                size_rule = (f"{values:,} values <= {self.in_process_max_values:,} (--workers auto): trained in "
                             f"this process, not as a 1-worker Ray Train run")
                log(size_rule.replace("trained", "training"))
                ray = None
        cfg = self.config.resolved(info.z.kind == "categorical", f"z {list(info.z.columns)} is {info.z.kind}",
                                   dims=(info.x.dim, info.z.dim))
        if self.resume is not None:
            # What the Ray workers trained with (--gpu runs them on cuda).
            ran = {**cfg.to_dict(), **({"device": "cuda"} if ray and ray.gpu else {})}
            rundir.check_resume(run_dir, ran, self.data.request())
        claim = rundir.claim(self.output, run_id, what, request=self.data.request())
        started, t0 = runs.now_iso(), time.perf_counter()
        try:
            est, record = self._estimate_and_write(info, cfg, run_id, run_dir, started, t0, ray, size_rule)
        except (ValueError, TypeError, storage.StorageError, FileNotFoundError):
            # Bad input or configuration: nothing of this run is worth keeping (a resumed run keeps
            # what its first attempt wrote).
            if self.resume is None:
                claim.release()
            raise
        except BaseException as e:
            # Training failed or was interrupted: keep checkpoints so the run can be resumed.
            # Ray Train's own SIGINT handler aborts the run and ends the driver with SystemExit:
            # that is an interruption (exit 130), not a training failure.
            stop = KeyboardInterrupt(f"Ray Train run aborted (SystemExit {e.code})") \
                if isinstance(e, SystemExit) and ray is not None else e
            if storage.exists(storage.join(run_dir, "checkpoints")):
                write_failure(run_dir, run_id, stop)
                log(f"run {run_id} stopped; continue it with --resume {run_id}")
            else:
                claim.release()
            if stop is not e:
                raise stop from None
            raise
        return EstimateResult(est, record, run_dir)

    def _estimate_and_write(self, info, cfg: EstimatorConfig, run_id: str, run_dir: str, started: str,
                            t0: float, ray: RayOptions | None, size_rule: str | None) -> tuple[MIEstimate, dict]:
        log(f"data: {info.rows} rows in {len(info.files)} file(s); x = {info.x.kind} {list(info.x.columns)} "
            f"(dim {info.x.dim}), z = {info.z.kind} {list(info.z.columns)} (dim {info.z.dim})")
        truth = runs.read_ground_truth(self.data.uri)
        if ray is None:
            ckpts = None if cfg.replicates > 1 else rundir.InProcessCheckpoints(
                storage.join(run_dir, "checkpoints", rundir.IN_PROCESS_CHECKPOINTS))
            est, facts = fit_in_process(info, self.data, cfg, self.threads, self.progress, ckpts)
            if size_rule:
                facts["size_rule"] = size_rule
        else:
            from mine_dist.distributed.train import fit_on_ray, fit_replicates_on_ray  # Ray only on this path

            fit = fit_replicates_on_ray if cfg.replicates > 1 else fit_on_ray
            est, facts = fit(info, self.data, cfg, ray, run_dir, log=log)
        result = result_fields(est, facts)
        record = runs.build_record(run_id, result, ray.workers if ray else 0, info, truth, started, t0, run_dir)
        runs.write_run(run_dir, record, result["curves"], truth)
        storage.delete_tree(storage.join(run_dir, "failure.json"))  # an earlier attempt's, now resumed to the end
        return est, record


def fit_in_process(info, data: io.DataSpec, cfg: EstimatorConfig, threads: int = 1,
                   progress: bool = True, checkpoints=None) -> tuple[MIEstimate, dict]:
    """Read every row into memory, check for leaks, train in this process (``--workers 0``),
    saving the training state after every check to ``checkpoints`` (a
    :class:`~mine_dist.rundir.InProcessCheckpoints`; None: none) and starting from its newest."""
    import torch

    from mine_dist import leaks
    from mine_dist.estimator import MINE

    from mine_dist.distributed.runtime import mark  # a no-op unless benchmarks/ray_overhead.py asks

    torch.set_num_threads(max(1, threads))
    x, z, keys, dropped = io.read_arrays(info, data.max_rows, data.drop_nonfinite)
    if dropped:
        log(f"dropped {dropped} row(s) with NaN/Inf")
    found = leaks.check(x, z, info.x, info.z, data.allow_identical)
    mark("first_batch")  # in-process: the interval to train_done is normalizing, training and test scoring
    est = MINE(cfg).estimate(x, z, row_keys=keys, passthrough_x=io.passthrough_mask(info.x),
                             passthrough_z=io.passthrough_mask(info.z), progress=progress,
                             checkpoints=checkpoints)
    mark("train_done")
    facts = {"dropped_nonfinite": dropped, "data_warnings": found}
    if checkpoints is not None:
        facts.update(checkpoints=storage.describe(checkpoints.root), restored_from_checkpoint=checkpoints.restored)
    return est, facts


def result_fields(est: MIEstimate, facts: dict) -> dict:
    """The estimate's fields and the run's facts, with the data warnings first in ``warnings``."""
    out = est.to_dict()
    facts = dict(facts)
    out["warnings"] = list(facts.pop("data_warnings", [])) + list(out.get("warnings") or [])
    out.update(facts)
    return out

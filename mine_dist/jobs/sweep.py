"""A Tune sweep as a job: validate the space and every trial's config on the driver, run the
trials on Ray, write ``best.json`` (the winner's config and its test-split estimate)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from mine_dist import bounds as B
from mine_dist import io, rundir, runs, storage, sweep, yamlio
from mine_dist.distributed.options import RayOptions
from mine_dist.estimator import EstimatorConfig
from mine_dist.jobs.common import check_device, check_not_in_ray_job_dir, log, run_id_or_new
from mine_dist.jobs.estimate import result_fields


@dataclass(frozen=True)
class SweepJob:
    """A sweep of estimator configurations around ``base`` (trial 0).

    Attributes:
        space: a YAML search-space URI (None: the default space of ``mine_dist.sweep``).
        trials, sweep_seed: how many configurations, drawn with which seed.
        concurrent: trials at once (None: what the CPUs allow). grace_steps: ASHA's grace period.
    """

    data: io.DataSpec
    base: EstimatorConfig = field(default_factory=EstimatorConfig)
    space: str | None = None
    trials: int = 8
    sweep_seed: int = 0
    concurrent: int | None = None
    grace_steps: int | None = None
    output: str = "sweeps"
    run_id: str | None = None
    resume: str | None = None
    ray: RayOptions = field(default_factory=RayOptions)

    def run(self) -> dict:
        """Run (or resume) the sweep; returns the record written as ``best.json``."""
        # Trials are compared on the DV bound of their critic on validation rows, which needs a
        # pair critic: auto means mine here, whatever z is.
        base = self.base.resolved(False) if self.base.bound == B.AUTO else self.base
        if base.bound == "ba":
            raise ValueError(f"--bound ba cannot be a sweep's base configuration: {sweep.NOT_SWEPT_BA}")
        if not B.spec(base.bound).sweepable:
            raise ValueError(f"--bound {base.bound} cannot be a sweep's base configuration: {sweep.NOT_A_BOUND}")
        raw = yamlio.read(self.space, f"--space {self.space}") if self.space else None
        space = sweep.parse_space(raw, where=f"--space {self.space}" if self.space else "default search space")
        configs = sweep.sample_trials(space, base, self.trials, self.sweep_seed)
        sweep_id, what = run_id_or_new(self.run_id, self.resume, "sweep")
        check_device(self.base.device, self.ray.workers, self.ray.gpu)
        check_not_in_ray_job_dir(self.output, self.data.uri)
        storage.check_reachable(self.output, for_write=True)
        sweep_dir = storage.join(self.output, sweep_id)
        if storage.exists(storage.join(sweep_dir, "best.json")):
            raise FileExistsError(f"sweep {sweep_id!r} already finished in {storage.describe(self.output)}")
        if storage.exists(storage.join(sweep_dir, "tune")) and self.resume is None:
            raise FileExistsError(f"sweep {sweep_id!r} has started in {storage.describe(self.output)}; "
                                  f"pass --resume {sweep_id} to continue it")
        claim = rundir.claim(self.output, sweep_id, what, request=self.data.request())
        started, t0 = runs.now_iso(), time.perf_counter()
        try:
            info = self.data.inspect()
            # critic.width auto, decided for the data's dims (trials that draw a width keep theirs)
            configs = [c.resolved(False, dims=(info.x.dim, info.z.dim)) for c in configs]
            truth = runs.read_ground_truth(self.data.uri)
            from mine_dist.distributed.sweep import run_sweep  # Ray is imported only here

            est, facts = run_sweep(configs, info, self.data, self.ray, sweep_dir, concurrent=self.concurrent,
                                   grace_steps=self.grace_steps, resume=self.resume is not None, log=log)
        except (ValueError, TypeError, storage.StorageError):
            if self.resume is None:
                claim.release()
            raise
        except BaseException:
            log(f"sweep {sweep_id} stopped; continue it with --resume {sweep_id}")
            raise
        result = result_fields(est, facts)
        record = runs.build_record(sweep_id, result, self.ray.workers, info, truth, started, t0, sweep_dir)
        record["search_space"] = space.to_dict()
        runs.write_run(sweep_dir, record, result["curves"], truth)
        storage.write_text_atomic(storage.join(sweep_dir, "best.json"), json.dumps(runs._jsonable(record), indent=2))
        return record

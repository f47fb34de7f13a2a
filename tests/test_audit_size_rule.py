"""The audit's size rule: a ``workers: 1`` check on at most ``in_process_max_values`` values (rows x
(dim x + dim z)) trains in-process; larger checks, multi-worker checks and a limit of 0 keep Ray Train.
``mine-dist audit --in-process-max-values`` and ``MINE_DIST_IN_PROCESS_MAX_VALUES`` set the limit.
The same rule is ``pipelines/estimate.py``'s default, ``--workers auto``."""

import dataclasses

import pytest

from mine_dist import audit, synthetic
from mine_dist.cli import main
from mine_dist.jobs import audit as audit_job


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("d") / "g"
    synthetic.write_dataset(synthetic.make_spec("gaussian", dim=2, rho=0.5), 1000, 2, str(out), seed=0)
    return str(out)  # 1000 rows x (2 + 2) = 4000 values


@pytest.mark.parametrize("workers,limit,expect", [(1, 4000, 0), (1, 3999, 1), (1, 0, 1), (2, 10**9, 2), (0, 0, 0)])
def test_small_one_worker_checks_train_in_process(data, workers, limit, expect):
    c = audit.Check(name="c", data=data, x="x", z="z", workers=workers)
    got, _, _ = audit_job._prepare(c, limit)
    assert got.workers == expect


def test_max_rows_counts_not_the_whole_dataset(data):
    c = audit.Check(name="c", data=data, x="x", z="z", workers=1, max_rows=500)
    assert audit_job._prepare(c, 2000)[0].workers == 0
    assert audit_job._prepare(c, 1999)[0].workers == 1


def test_limit_from_environment_and_cli(monkeypatch, tmp_path):
    monkeypatch.setenv("MINE_DIST_IN_PROCESS_MAX_VALUES", "123")
    assert audit_job.AuditJob("s.yaml", "out").in_process_max_values == 123
    seen = {}

    def fake_run(self):
        seen["limit"] = self.in_process_max_values
        raise SystemExit(0)

    monkeypatch.setattr(audit_job.AuditJob, "run", fake_run)
    with pytest.raises(SystemExit):
        main(["audit", "--spec", "s.yaml", "--output", str(tmp_path), "--in-process-max-values", "0"])
    assert seen["limit"] == 0
    with pytest.raises(SystemExit):
        main(["audit", "--spec", "s.yaml", "--output", str(tmp_path)])
    assert seen["limit"] == 123  # no flag: the environment's value


def test_bad_limit_is_a_usage_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["audit", "--spec", "s.yaml", "--output", str(tmp_path), "--in-process-max-values", "-5"])
    assert e.value.code == 2 and "expected an int >= 0; got '-5'" in capsys.readouterr().err


# ---------------------------------------------------------------- pipelines/estimate.py --workers auto

FAST = dict(steps=200, batch_size=64, eval_every=100, bootstrap=50, critic={"width": 16})


def _pipeline_args(*argv):
    import argparse

    from mine_dist.cli import add_estimate_args

    p = argparse.ArgumentParser()
    add_estimate_args(p)
    p.set_defaults(workers="auto", command="estimate")  # as pipelines/estimate.py
    return p.parse_args(list(argv))


def test_pipeline_default_is_auto_with_the_size_rule_limit(monkeypatch, tmp_path):
    from mine_dist.cli import estimate_job

    src = open("pipelines/estimate.py").read()
    assert 'set_defaults(workers="auto"' in src
    job = estimate_job(_pipeline_args("--data", "d", "--output", str(tmp_path)))
    assert job.ray.workers == 1 and job.in_process_max_values == 10_000_000
    monkeypatch.setenv("MINE_DIST_IN_PROCESS_MAX_VALUES", "0")
    assert estimate_job(_pipeline_args("--data", "d", "--output", str(tmp_path))).in_process_max_values == 0
    # An explicit worker count is Ray Train whatever the size.
    assert estimate_job(_pipeline_args("--data", "d", "--output", str(tmp_path), "--workers", "1")).in_process_max_values == 0


def _job(data, tmp_path, limit, **kw):
    from mine_dist.distributed.options import RayOptions
    from mine_dist.estimator import EstimatorConfig
    from mine_dist.io import DataSpec
    from mine_dist.jobs import EstimateJob

    return EstimateJob(DataSpec(data), EstimatorConfig(**FAST), output=str(tmp_path), run_id="r",
                       ray=RayOptions(workers=1, **kw), progress=False, in_process_max_values=limit)


def test_auto_trains_small_data_in_process_with_checkpoints(data, tmp_path):
    rec = _job(data, tmp_path, 4000).run().record
    assert rec["workers"] == 0 and "4,000 values <= 4,000 (--workers auto)" in rec["size_rule"]
    assert (tmp_path / "r" / "checkpoints" / "in-process" / "step_00000200" / "state.pt").exists()


@pytest.mark.parametrize("limit, kw", [(3999, {}), (10**9, {"gpu": True})])
def test_auto_keeps_ray_train_above_the_limit_or_with_a_gpu(data, tmp_path, monkeypatch, limit, kw):
    from mine_dist.distributed import train
    from mine_dist.jobs import estimate

    def on_ray(*a, **k):
        raise RuntimeError("went to Ray Train")

    monkeypatch.setattr(train, "fit_on_ray", on_ray)
    monkeypatch.setattr(estimate, "check_device", lambda *a: None)  # no CUDA here; only the path matters
    with pytest.raises(RuntimeError, match="went to Ray Train"):
        _job(data, tmp_path, limit, **kw).run()


def test_auto_resumes_an_in_process_run_in_process(data, tmp_path, monkeypatch):
    from mine_dist import rundir

    orig = rundir.InProcessCheckpoints.save

    def save(self, state, step):
        orig(self, state, step)
        raise KeyboardInterrupt  # stopped right after the first check

    monkeypatch.setattr(rundir.InProcessCheckpoints, "save", save)
    with pytest.raises(KeyboardInterrupt):
        _job(data, tmp_path, 4000).run()
    monkeypatch.setattr(rundir.InProcessCheckpoints, "save", orig)
    # The limit no longer admits the data, but the run continues on the path that trained it.
    rec = dataclasses.replace(_job(data, tmp_path, 1), run_id=None, resume="r").run().record
    assert rec["workers"] == 0 and rec["restored_from_checkpoint"] == 1 and rec["steps"] == 200
    assert rec["size_rule"] == "resumed in this process: the run was trained in-process"

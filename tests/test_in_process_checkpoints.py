"""In-process runs keep checkpoints (``checkpoints/in-process/``) and resume from them."""

import json
import math

import numpy as np
import pytest

from mine_dist import rundir
from mine_dist.distributed.options import RayOptions
from mine_dist.estimator import MINE, EstimatorConfig
from mine_dist.io import DataSpec
from mine_dist.jobs import EstimateJob
from tests.conftest import make_gaussian_dataset

CFG = dict(steps=400, batch_size=64, eval_every=100, bootstrap=100, patience=0, critic={"width": 32})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_gaussian_dataset(tmp_path_factory, "ckpt", rows=3000, shards=2, dim=2, rho=0.7)


def _pair(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2))
    return x, 0.8 * x + 0.6 * rng.standard_normal((n, 2))


def test_saves_after_every_check_and_keeps_the_newest_two(tmp_path):
    x, z = _pair()
    store = rundir.InProcessCheckpoints(str(tmp_path / "ck"))
    est = MINE(EstimatorConfig(**CFG)).estimate(x, z, checkpoints=store)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["step_00000300", "step_00000400"]
    state = rundir.latest_checkpoint_state(str(tmp_path / "ck"))
    assert state["step"] == 400 and state["restored"] == 0 and len(state["curves"]) == 4
    assert state["best_step"] == est.best_step and math.isclose(state["best_val"], max(c["val"] for c in est.curves))


def test_a_run_restored_at_its_end_reports_the_same_estimate(tmp_path):
    x, z = _pair()
    first = MINE(EstimatorConfig(**CFG)).estimate(x, z, checkpoints=rundir.InProcessCheckpoints(str(tmp_path / "ck")))
    store = rundir.InProcessCheckpoints(str(tmp_path / "ck"))
    again = MINE(EstimatorConfig(**CFG)).estimate(x, z, checkpoints=store)
    assert store.restored == 1
    # No step taken: the restored best critic scores the same test rows the same way.
    assert again.mi_nats == first.mi_nats and again.ci95_nats == first.ci95_nats and again.steps == 400


def test_a_resumed_run_continues_from_the_saved_step(tmp_path):
    x, z = _pair()
    MINE(EstimatorConfig(**CFG)).estimate(x, z, checkpoints=rundir.InProcessCheckpoints(str(tmp_path / "ck")))
    first_curves = rundir.latest_checkpoint_state(str(tmp_path / "ck"))["curves"]
    longer = MINE(EstimatorConfig(**{**CFG, "steps": 700})).estimate(
        x, z, checkpoints=rundir.InProcessCheckpoints(str(tmp_path / "ck")))
    assert longer.steps == 700
    assert [c["step"] for c in longer.curves] == [100, 200, 300, 400, 500, 600, 700]
    assert longer.curves[:4] == first_curves  # the first attempt's checks, then new ones from step 400


def test_replicates_refuse_checkpoints(tmp_path):
    x, z = _pair()
    with pytest.raises(ValueError, match="replicates"):
        MINE(EstimatorConfig(**{**CFG, "replicates": 2})).estimate(
            x, z, checkpoints=rundir.InProcessCheckpoints(str(tmp_path / "ck")))


def _interrupt_after(monkeypatch, n_saves: int):
    """Make the in-process run stop with KeyboardInterrupt right after its n-th checkpoint."""
    orig = rundir.InProcessCheckpoints.save
    calls = {"n": 0}

    def save(self, state, step):
        orig(self, state, step)
        calls["n"] += 1
        if calls["n"] == n_saves:
            raise KeyboardInterrupt

    monkeypatch.setattr(rundir.InProcessCheckpoints, "save", save)
    return orig


def test_interrupted_in_process_job_keeps_its_checkpoints_and_resumes(data, tmp_path, monkeypatch):
    cfg = EstimatorConfig(**CFG)
    orig = _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        EstimateJob(DataSpec(str(data)), cfg, output=str(tmp_path), run_id="r", progress=False).run()
    run = tmp_path / "r"
    assert (run / "failure.json").exists() and not (run / "estimate.json").exists()
    assert sorted(p.name for p in (run / "checkpoints" / "in-process").iterdir()) == ["step_00000100", "step_00000200"]
    # Without --resume the run id is taken; on the Ray path the resume is refused up front.
    with pytest.raises(FileExistsError, match="--resume r"):
        EstimateJob(DataSpec(str(data)), cfg, output=str(tmp_path), run_id="r", progress=False).run()
    with pytest.raises(ValueError, match=r"trained in-process; resume it the same way \(--workers 0\)"):
        EstimateJob(DataSpec(str(data)), cfg, output=str(tmp_path), run_id="r", resume="r",
                    ray=RayOptions(workers=1), progress=False).run()
    # A setting that shapes training may not change on resume.
    with pytest.raises(ValueError, match="lr"):
        EstimateJob(DataSpec(str(data)), EstimatorConfig(**{**CFG, "lr": 3e-3}), output=str(tmp_path), run_id="r",
                    resume="r", progress=False).run()
    monkeypatch.setattr(rundir.InProcessCheckpoints, "save", orig)
    res = EstimateJob(DataSpec(str(data)), cfg, output=str(tmp_path), resume="r", progress=False).run()
    rec = json.loads((run / "estimate.json").read_text())
    assert rec["steps"] == 400 and rec["restored_from_checkpoint"] == 1
    assert [c["step"] for c in res.estimate.curves] == [100, 200, 300, 400]
    assert not (run / "failure.json").exists()
    truth = rec["ground_truth"]["mi_nats"]
    assert rec["ci95_nats"][0] - 0.15 <= truth  # a 400-step critic at width 32: a lower bound, roughly there


def test_a_ray_trained_run_is_not_resumed_in_process(data, tmp_path):
    run = tmp_path / "r"
    rundir.claim(str(tmp_path), "r")
    (run / "checkpoints" / "step_00000100").mkdir(parents=True)
    (run / "checkpoints" / "step_00000100" / "state.pt").write_bytes(b"x")  # Ray Train's layout
    with pytest.raises(ValueError, match=r"trained on Ray Train; resume it the same way \(--workers >= 1\)"):
        EstimateJob(DataSpec(str(data)), EstimatorConfig(**CFG), output=str(tmp_path), resume="r",
                    progress=False).run()
    assert (run / "checkpoints" / "step_00000100" / "state.pt").read_bytes() == b"x"

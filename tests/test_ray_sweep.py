"""A small Tune sweep end to end: honest selection, outputs, resume without re-running trials."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from tests.conftest import make_gaussian_dataset

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 2 trials: the base configuration (joint critic) and one drawn from the space (a separable critic
# for sweep seed 0), so the selection still chooses between critics on the DV yardstick. Every
# trial costs a Ray Train worker-group start (~25 s on a 2-core CI box), far more than its steps.
ARGS = ["--trials", "2", "--steps", "300", "--eval-every", "100", "--batch-size", "256", "--bootstrap", "200",
        "--no-progress", "--lr", "1e-3", "--grace-steps", "200", "--concurrent", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_gaussian_dataset(tmp_path_factory, "sweepdata", rows=12000, shards=2)


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    p = tmp_path_factory.mktemp("space") / "space.yaml"
    p.write_text("width: [32, 64]\nlr: {loguniform: [3.0e-4, 3.0e-3]}\ncritic: [joint, separable]\n")
    return p


def test_sweep_selects_on_validation_reports_on_test(data, space, tmp_path, local_ray):
    from mine_dist.cli import main

    assert main(["sweep", "--data", str(data), "--output", str(tmp_path), "--run-id", "sw", "--space",
                 str(space), *ARGS]) == 0
    d = tmp_path / "sw"
    best = json.loads((d / "best.json").read_text())
    trials = pq.read_table(d / "trials.parquet").to_pylist()
    assert len(trials) == 2 and {t["trial"] for t in trials} == {0, 1}
    assert {t["critic"] for t in trials} == {"joint", "separable"}
    ok = [t for t in trials if t["status"] in ("completed", "stopped early (ASHA)")]
    assert all(t["best_val_dv_nats"] <= t["val_ceiling_nats"] for t in ok)  # ~1 nat vs log(validation pairs)
    # Trials are compared on the DV bound of their critic on validation (= their own bound for mine).
    assert best["winner_trial"] == max(ok, key=lambda t: t["best_val_dv_nats"])["trial"]
    assert best["validation_dv_nats"] == pytest.approx(max(t["best_val_dv_nats"] for t in ok))
    assert best["validation_bound_nats"] == pytest.approx(best["validation_dv_nats"], abs=1e-9)
    # The reported number is the test-split estimate, not the validation bound that chose the winner.
    assert best["mi_nats"] != best["validation_bound_nats"]
    truth = best["ground_truth"]["mi_nats"]
    assert best["ci95_nats"][0] <= truth + 0.01 and best["mi_nats"] >= 0.75 * truth
    assert best["config"] == json.loads(trials[best["winner_trial"]]["config"])
    assert (d / "best_checkpoint" / "state.pt").exists() and (d / "trials.png").exists()
    # best.json is a valid --config for estimate
    assert main(["estimate", "--data", str(data), "--output", str(tmp_path), "--run-id", "reuse", "--workers", "0",
                 "--config", str(d / "best.json"), "--steps", "100", "--no-progress"]) == 0
    reuse = json.loads((tmp_path / "reuse" / "estimate.json").read_text())
    assert reuse["config"]["critic"] == best["config"]["critic"] and reuse["config"]["lr"] == best["config"]["lr"]


def _final_checkpoints(sweep_dir):
    out = {}
    for t in sorted(os.listdir(sweep_dir)):
        if t.startswith("trial-"):
            finals = [c for c in os.listdir(os.path.join(sweep_dir, t)) if c.endswith("_final")]
            if finals:
                out[t] = os.path.getmtime(os.path.join(sweep_dir, t, finals[0]))
    return out


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(data, space, tmp_path, no_local_ray):
    import ray

    assert not ray.is_initialized()
    args = ARGS  # 2 trials: interrupt after the first, resume the second
    cmd = [sys.executable, os.path.join(ROOT, "pipelines", "sweep.py"), "--data", str(data), "--output",
           str(tmp_path), "--space", str(space), *args]
    d = str(tmp_path / "rs")
    p = subprocess.Popen([*cmd, "--run-id", "rs"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 400 and not (os.path.isdir(d) and _final_checkpoints(d)):
            time.sleep(1)
        done_before = _final_checkpoints(d)
        assert done_before, "no trial finished before the interruption"
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    time.sleep(3)
    assert not os.path.exists(os.path.join(d, "best.json"))
    r = subprocess.run([*cmd, "--resume", "rs", "--json"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    best = json.loads(r.stdout.strip().splitlines()[-1])
    assert best["trials"] == 2
    after = _final_checkpoints(d)
    for trial, mtime in done_before.items():
        assert after[trial] == mtime, f"{trial} was re-run"

"""Fault tolerance and resume on the Ray path: a killed worker, and a killed driver."""

import json
import os
import runpy
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import make_gaussian_dataset

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--steps", "400", "--batch-size", "256", "--eval-every", "100", "--bootstrap", "200", "--no-progress",
        "--lr", "1e-3", "--patience", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_gaussian_dataset(tmp_path_factory, "faultdata", rows=16000, shards=4)


def _wait_for_checkpoint(run_dir, timeout=300):
    """Wait until Ray Train has *registered* a checkpoint: a ``step_*`` folder appears while it is
    still being uploaded, and a driver killed then leaves nothing to resume from (a flaky CI run);
    the controller lists a checkpoint in ``checkpoint_manager_snapshot.json`` once it is persisted."""
    t0 = time.time()
    snap = os.path.join(run_dir, "checkpoints", "checkpoint_manager_snapshot.json")
    while time.time() - t0 < timeout:
        try:
            with open(snap) as f:
                if "step_" in f.read():
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    return False


def _parent(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _descends_from_us(pid):
    """Whether ``pid`` is a descendant of this process (the Ray node that ensure_ray started here),
    so that another Ray instance's workers on a shared machine are never touched."""
    me = os.getpid()
    while pid > 1:
        if pid == me:
            return True
        pid = _parent(pid)
    return False


def _train_workers():
    """PIDs of this test's Ray Train worker processes (Ray sets their title to ray::RayTrainWorker...)."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if b"RayTrainWorker" in f.read() and _descends_from_us(int(d)):
                        pids.append(int(d))
            except OSError:
                pass
    return pids


def test_killed_worker_resumes_from_checkpoint(data, tmp_path):
    from mine_dist.cli import main
    from mine_dist.distributed.runtime import ensure_ray

    ensure_ray(num_cpus=2)
    run_dir = str(tmp_path / "ft")
    killed = []

    def killer():
        if _wait_for_checkpoint(run_dir):
            for pid in _train_workers()[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    rc = main(["estimate", "--data", str(data), "--output", str(tmp_path), "--run-id", "ft", "--workers", "1",
               "--max-failures", "2", *ARGS])
    t.join(timeout=5)
    import ray

    ray.shutdown()
    assert killed, "no Ray Train worker was found to kill"
    assert rc == 0
    assert sorted(n for n in os.listdir(run_dir) if n.endswith(".json")) == ["estimate.json"]
    rec = json.loads(open(os.path.join(run_dir, "estimate.json")).read())
    truth = rec["ground_truth"]["mi_nats"]
    assert rec["steps"] == 400
    assert rec["worker_restarts"] >= 1  # the worker restart is in the record
    assert rec["ci95_nats"][0] <= truth + 0.01 and rec["mi_nats"] >= 0.75 * truth


def test_killed_driver_is_resumed_with_resume_flag(data, tmp_path, capsys, monkeypatch):
    import ray

    assert not ray.is_initialized()
    cmd = [sys.executable, os.path.join(ROOT, "pipelines", "estimate.py"), "--data", str(data), "--output",
           str(tmp_path), "--workers", "1", *ARGS]
    run_dir = str(tmp_path / "rs")
    p = subprocess.Popen([*cmd, "--run-id", "rs"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        assert _wait_for_checkpoint(run_dir), "first run wrote no checkpoint"
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    time.sleep(3)
    assert not os.path.exists(os.path.join(run_dir, "estimate.json"))
    # Without --resume the same run id is refused (Ray would silently resume otherwise). The refusal
    # comes before Ray starts, so the same script runs in this process (runpy, as __main__) instead
    # of in a fresh interpreter that spends seconds importing torch and Ray to print one line.
    monkeypatch.setattr(sys, "argv", [*cmd[1:], "--run-id", "rs"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        runpy.run_path(cmd[1], run_name="__main__")
    assert refused.value.code == 2 and "pass --resume rs" in capsys.readouterr().err
    assert not ray.is_initialized()
    monkeypatch.undo()
    r = subprocess.run([*cmd, "--resume", "rs", "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["steps"] == 400 and rec["run_id"] == "rs" and rec["restored_from_checkpoint"] >= 1
    steps = [c["step"] for c in __import__("pyarrow.parquet", fromlist=["x"]).read_table(
        os.path.join(run_dir, "curves.parquet")).to_pylist()]
    assert steps == sorted(set(steps)) and steps[0] == 100 and steps[-1] == 400  # one curve across both drivers

"""Ray Data + Ray Train path, on the session's local Ray instance (2 CPUs, tests/conftest.py)."""

import json
import math
import os

import pytest

from tests.conftest import make_gaussian_dataset
import torch

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ray = pytest.importorskip("ray")


@pytest.fixture
def ray_session(local_ray):
    """The session's local Ray (tests/conftest.py), kept running after this module for the next."""
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "30")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_gaussian_dataset(tmp_path_factory, "raydata", rows=16000, shards=4)


def _estimate(data, out, run_id, *extra):
    from mine_dist.cli import main

    args = ["estimate", "--data", str(data), "--output", str(out), "--run-id", run_id, "--steps", "400",
            "--batch-size", "256", "--eval-every", "100", "--bootstrap", "200", "--no-progress", "--lr", "1e-3", *extra]
    assert main(args) == 0
    return json.loads((out / run_id / "estimate.json").read_text())


def test_one_worker_matches_truth_and_in_process_split(ray_session, data, tmp_path):
    rec = _estimate(data, tmp_path, "ray1", "--workers", "1")
    ref = _estimate(data, tmp_path, "local", "--workers", "0")
    truth = rec["ground_truth"]["mi_nats"]
    assert rec["workers"] == 1 and rec["train_split_materialized"] is True  # small data: read once
    assert (rec["n_train"], rec["n_val"]) == (ref["n_train"], ref["n_val"])
    assert rec["ci95_nats"][0] <= truth + 0.01
    assert rec["mi_nats"] >= 0.75 * truth
    assert abs(rec["mi_nats"] - ref["mi_nats"]) < 0.15 * truth
    ckpts = os.listdir(tmp_path / "ray1" / "checkpoints")
    assert any(c.startswith("step_") for c in ckpts)
    assert (tmp_path / "ray1" / "curves.png").exists()


def test_two_workers_estimate(ray_session, data, tmp_path):
    # Streaming from the files every epoch (the path for data larger than the object store).
    rec = _estimate(data, tmp_path, "ray2", "--workers", "2", "--batch-size", "128", "--materialize", "never")
    truth = rec["ground_truth"]["mi_nats"]
    assert rec["workers"] == 2 and rec["train_split_materialized"] is False
    assert rec["ci95_nats"][0] <= truth + 0.01 and rec["mi_nats"] >= 0.75 * truth


def test_replicates_run_side_by_side_with_the_in_process_splits(ray_session, data, tmp_path):
    # Two Ray Train runs at once (one Ray task each); replicate r trains on the same train /
    # validation rows as the in-process replicate r (split_seed + r), all on the same test rows.
    rec = _estimate(data, tmp_path, "rep", "--workers", "1", "--replicates", "2", "--steps", "200")
    ref = _estimate(data, tmp_path, "rep-local", "--workers", "0", "--replicates", "2", "--steps", "200")
    assert [r["split_seed"] for r in rec["replicates"]] == [0, 1]
    assert [(r["n_train"], r["n_val"]) for r in rec["replicates"]] == \
        [(r["n_train"], r["n_val"]) for r in ref["replicates"]]
    assert rec["replicates"][0]["n_val"] != rec["replicates"][1]["n_val"]
    assert rec["n_test"] == ref["n_test"]
    assert rec["bound_nats"] == pytest.approx(sum(r["bound_nats"] for r in rec["replicates"]) / 2)
    assert rec["ci_method"].startswith("mean of 2 replicates")
    for r in range(2):
        assert any(c.startswith("step_") for c in os.listdir(tmp_path / "rep" / "replicates" / str(r) / "checkpoints"))


def _train_fn(conf):
    """Ray Train worker: the same steps as tests/test_sync_equivalence.py, with Ray's process group."""
    import ray.train
    from ray.train.torch import prepare_model

    from mine_dist.sync import collective_for_current_process
    from tests.test_sync_equivalence import _cfg, _critic, run_rank_steps

    rank = ray.train.get_context().get_world_rank()
    coll = collective_for_current_process()
    out = run_rank_steps(prepare_model(_critic(_cfg(conf["bound"]))), coll, rank, conf["bound"])
    return {"params": [p.numpy().tolist() for p in out["params"]], "ema": list(out["ema"]), "values": out["values"],
            "world": coll.world_size}


def test_ray_train_two_workers_equal_single_process(ray_session):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from tests.test_sync_equivalence import _single

    res = TorchTrainer(_train_fn, train_loop_config={"bound": "mine"},
                       scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                       run_config=RunConfig(name=f"eq-{os.getpid()}", storage_path="/tmp/mine-dist-ray-tests")).fit()
    got, ref = res.return_value, _single("mine")
    assert got["world"] == 2
    for a, b in zip(got["params"], ref["params"]):
        torch.testing.assert_close(torch.tensor(a, dtype=torch.float64), b, atol=1e-9, rtol=1e-9)
    assert got["values"] == pytest.approx(ref["values"], abs=1e-9)
    assert got["ema"][1] == ref["ema"][1] and math.isclose(got["ema"][0], ref["ema"][0], abs_tol=1e-9)

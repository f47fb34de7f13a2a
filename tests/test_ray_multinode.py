"""Two simulated nodes (ray.cluster_utils.Cluster): workers spread across them, same estimate;
and data written sorted by z, which the scan detects and the pipeline shuffles fully."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ray = pytest.importorskip("ray")
ARGS = ["--steps", "400", "--batch-size", "128", "--eval-every", "100", "--bootstrap", "200", "--no-progress",
        "--lr", "1e-3"]


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    from mine_dist.distributed.runtime import ensure_ray

    assert not ray.is_initialized()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    import os

    os.environ["RAY_ADDRESS"] = c.address
    try:
        ensure_ray()
        yield c
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        ray.shutdown()
        c.shutdown()


def _write(path, x, z, rows_per_group):
    path.mkdir(parents=True, exist_ok=True)
    for i, idx in enumerate(np.array_split(np.arange(len(x)), 4)):
        t = pa.table({f: pa.FixedSizeListArray.from_arrays(pa.array(a[idx].astype(np.float32).reshape(-1)), a.shape[1])
                      for f, a in (("x", x), ("z", z))})
        pq.write_table(t, path / f"part-{i}.parquet", row_group_size=rows_per_group)
    (path / "ground_truth.json").write_text(json.dumps({"mi_nats": -1.5 * np.log(1 - 0.7**2)}))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from mine_dist.synthetic import Spec

    base = tmp_path_factory.mktemp("mn")
    x, z = Spec(dim=3, rho=0.7).sample(24000, np.random.default_rng(0))
    _write(base / "shuffled", x, z, 500)
    order = np.argsort(z[:, 0])
    _write(base / "sorted", x[order], z[order], 500)
    return base


def _run(data, out, run_id, *extra):
    from mine_dist.cli import main

    assert main(["estimate", "--data", str(data), "--output", str(out), "--run-id", run_id, *ARGS, *extra]) == 0
    return json.loads((out / run_id / "estimate.json").read_text())


def test_workers_spread_over_two_nodes(cluster, datasets, tmp_path):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    rec = _run(datasets / "shuffled", tmp_path, "spread", "--workers", "2", "--placement", "SPREAD",
               "--cpus-per-worker", "0.5")
    ref = _run(datasets / "shuffled", tmp_path, "local", "--workers", "0")
    truth = rec["ground_truth"]["mi_nats"]
    assert rec["nodes"] == 2 and rec["workers"] == 2
    assert rec["ci95_nats"][0] <= truth + 0.01 and rec["mi_nats"] >= 0.75 * truth
    assert abs(rec["mi_nats"] - ref["mi_nats"]) < 0.15 * truth


def test_sorted_shards_are_detected_and_give_the_same_estimate(cluster, datasets, tmp_path):
    shuffled = _run(datasets / "shuffled", tmp_path, "shuf", "--workers", "1")
    sorted_ = _run(datasets / "sorted", tmp_path, "sort", "--workers", "1")
    truth = shuffled["ground_truth"]["mi_nats"]
    assert shuffled["shuffle"]["mode"] == "blocks" and sorted_["shuffle"]["mode"] == "global"
    assert sorted_["shuffle"]["within_row_group_variance_share"] < 0.1
    assert abs(sorted_["mi_nats"] - shuffled["mi_nats"]) < 0.1 * truth
    assert sorted_["ci95_nats"][0] <= truth + 0.01 and sorted_["mi_nats"] >= 0.75 * truth

"""End to end against a real S3-compatible server (SeaweedFS on 127.0.0.1, SigV4 auth on):
data written with a real S3 client, estimates read back from the bucket, bad input refused."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mine_dist import rundir, storage
from mine_dist.cli import main

pytestmark = [pytest.mark.s3, pytest.mark.slow]

FAST = ["--steps", "200", "--batch-size", "128", "--eval-every", "100", "--bootstrap", "100", "--no-progress",
        "--width", "32"]


@pytest.fixture(scope="module")
def bucket(s3_server):
    return s3_server.make_bucket()


@pytest.fixture(scope="module")
def s3_data(bucket):
    uri = f"{bucket}/data/g"
    assert main(["make-data", "gaussian", "--dim", "2", "--rho", "0.8", "--rows", "6000", "--shards", "3",
                 "--output", uri]) == 0
    return uri


def _objects(prefix):
    try:
        return storage.list_files(prefix)
    except storage.StorageError:
        return []


def test_in_process_s3_in_and_out(s3_data, bucket, capsys):
    out = f"{bucket}/runs"
    assert main(["estimate", "--data", s3_data, "--output", out, "--run-id", "s3a", "--workers", "0", "--json",
                 *FAST]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rec = storage.read_json(f"{out}/s3a/estimate.json")
    assert rec == printed
    assert rec["data"]["uri"].startswith("s3://") and rec["data"]["files"] == 3
    assert rec["ground_truth"]["mi_nats"] > 0
    objs = _objects(f"{out}/s3a")
    assert {f.rsplit("/", 1)[-1] for f in objs} == {"estimate.json", "curves.parquet", "curves.png", "state.pt"}
    # The in-process checkpoints on S3: the newest 2 steps, each a state.pt that loads (weights_only)
    ckpts = sorted(f for f in objs if f.endswith("state.pt"))
    assert len(ckpts) == 2 and all("/checkpoints/in-process/step_" in f for f in ckpts)
    assert rundir.latest_checkpoint_state(f"{out}/s3a/checkpoints")["step"] == rec["steps"]
    text = json.dumps(rec)
    assert "mine-dist-test-secret" not in text and "mine-dist-test-key" not in text


@pytest.mark.ray
def test_ray_path_s3_in_and_out(s3_data, bucket):
    from mine_dist.distributed.runtime import ensure_ray

    ensure_ray(num_cpus=2)
    out = f"{bucket}/runs"
    assert main(["estimate", "--data", s3_data, "--output", out, "--run-id", "s3ray", "--workers", "1", *FAST]) == 0
    rec = storage.read_json(f"{out}/s3ray/estimate.json")
    truth = rec["ground_truth"]["mi_nats"]
    assert rec["workers"] == 1 and 0.6 * truth <= rec["mi_nats"] and rec["ci95_nats"][0] <= truth + 0.01
    assert any("/checkpoints/" in f for f in _objects(f"{out}/s3ray"))


def _write(uri, table):
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    storage.write_bytes_atomic(uri, buf.getvalue().to_pybytes())


def _fixed(a):
    a = np.asarray(a, np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


@pytest.fixture(scope="module")
def bad_data(bucket):
    rng = np.random.default_rng(0)
    good = pa.table({"x": _fixed(rng.normal(size=(500, 2))), "z": _fixed(rng.normal(size=(500, 2)))})
    _write(f"{bucket}/bad/lists/a.parquet", good)
    _write(f"{bucket}/bad/lists/b.parquet",
           pa.table({"x": _fixed(rng.normal(size=(500, 3))), "z": _fixed(rng.normal(size=(500, 2)))}))
    _write(f"{bucket}/bad/corrupt/a.parquet", good)
    buf = pa.BufferOutputStream()
    pq.write_table(good, buf)
    storage.write_bytes_atomic(f"{bucket}/bad/corrupt/b.parquet", buf.getvalue().to_pybytes()[:300])
    x = rng.normal(size=(500, 2))
    x[123, 1] = np.nan
    _write(f"{bucket}/bad/nan/a.parquet", pa.table({"x": _fixed(x), "z": _fixed(rng.normal(size=(500, 2)))}))
    _write(f"{bucket}/bad/empty/a.parquet", good.slice(0, 0))
    return bucket


@pytest.mark.parametrize(
    "data, extra, code, match",
    [
        ("s3://no-such-bucket-mine/data", [], 4, "bucket 'no-such-bucket-mine' does not exist"),  # storage, as for --output
        ("{b}/bad/lists", [], 3, "column 'x' has type fixed_size_list<element: float>[3] in s3://"),
        ("{b}/bad/corrupt", [], 3, "corrupt or unreadable Parquet file s3://"),
        ("{b}/bad/nan", [], 3, "with NaN/Inf in --x x of s3://"),
        ("{b}/bad/empty", [], 3, "hold 0 rows"),
        ("{b}/data/g", ["--x", "emb"], 3, "--x: column 'emb' not found"),
    ],
)
def test_bad_input_one_line_nonzero_nothing_written(bad_data, s3_data, capsys, data, extra, code, match):
    out = f"{bad_data}/badruns"
    rc = main(["estimate", "--data", data.format(b=bad_data), "--output", out, "--run-id", "r", "--workers", "0",
               *FAST, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code, err
    assert err[-1].startswith("mine-dist: error:") and match in err[-1]
    assert _objects(f"{out}/r") == []


@pytest.mark.ray
def test_nan_found_before_ray_workers_start(bad_data, capsys):
    from mine_dist.distributed.runtime import ensure_ray

    ensure_ray(num_cpus=2)
    out = f"{bad_data}/badruns"
    rc = main(["estimate", "--data", f"{bad_data}/bad/nan", "--output", out, "--run-id", "rn", "--workers", "1",
               *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and "NaN/Inf" in err[-1] and "a.parquet" in err[-1]
    assert _objects(f"{out}/rn") == []


def test_missing_output_bucket(s3_data, capsys):
    rc = main(["estimate", "--data", s3_data, "--output", "s3://no-such-out-bucket/runs", "--workers", "0", *FAST])
    assert rc == 4 and "bucket 'no-such-out-bucket' does not exist" in capsys.readouterr().err


def test_bad_credentials(s3_data, monkeypatch, capsys):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    rc = main(["estimate", "--data", s3_data, "--output", f"{s3_data}-runs", "--workers", "0", *FAST])
    err = capsys.readouterr().err
    assert rc == 4 and "access denied" in err and "wrong-secret" not in err

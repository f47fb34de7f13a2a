"""The `mine-dist` command line, in-process (`--workers 0`): outputs, --json, and failures."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from mine_dist.cli import main

FAST = ["--steps", "200", "--batch-size", "128", "--eval-every", "100", "--bootstrap", "100",
        "--no-progress", "--width", "32"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "gauss"
    assert main(["make-data", "gaussian", "--dim", "2", "--rho", "0.7", "--rows", "4000",
                 "--shards", "3", "--output", str(out)]) == 0
    return out


def test_make_data_writes_shards_and_truth(data):
    truth = json.loads((data / "ground_truth.json").read_text())
    assert truth["rows"] == 4000 and truth["shards"] == 3
    assert truth["mi_nats"] == pytest.approx(-(2 / 2) * __import__("math").log(1 - 0.49))
    t = pq.read_table(data / "part-00000.parquet")
    assert t.schema.field("x").type.list_size == 2 and t.num_rows == 1333


def test_make_data_refuses_to_overwrite(data, capsys):
    assert main(["make-data", "gaussian", "--rows", "10", "--shards", "1", "--output", str(data)]) == 2
    assert "already holds a dataset" in capsys.readouterr().err


def test_estimate_writes_record_curves_and_plot(data, tmp_path, capsys):
    rc = main(["estimate", "--data", str(data), "--output", str(tmp_path), "--run-id", "r1", "--json", *FAST])
    assert rc == 0
    out = capsys.readouterr().out.strip().splitlines()
    record = json.loads(out[-1])
    on_disk = json.loads((tmp_path / "r1" / "estimate.json").read_text())
    assert record == on_disk
    for key in ("mi_nats", "mi_bits", "ci95_nats", "bound", "n_train", "n_val", "n_test", "steps", "workers",
                "data", "x_columns", "z_columns", "config", "versions", "started_at", "finished_at", "wall_s"):
        assert key in record, key
    lo, hi = record["ci95_nats"]
    assert lo <= record["mi_nats"] <= hi
    assert record["ground_truth"]["mi_nats"] > 0 and record["workers"] == 0
    assert record["mi_bits"] == pytest.approx(record["mi_nats"] / 0.6931471805599453)
    assert record["config"]["steps"] == 200 and record["config"]["critic"]["width"] == 32
    curves = pq.read_table(tmp_path / "r1" / "curves.parquet").to_pylist()
    assert [c["step"] for c in curves] == [100, 200]
    assert (tmp_path / "r1" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_same_run_id_is_refused(data, tmp_path, capsys):
    assert main(["estimate", "--data", str(data), "--output", str(tmp_path), "--run-id", "r", *FAST]) == 0
    assert main(["estimate", "--data", str(data), "--output", str(tmp_path), "--run-id", "r", *FAST]) == 2
    assert "run 'r' already finished" in capsys.readouterr().err


def test_config_file_then_flags(data, tmp_path, capsys):
    cfg = tmp_path / "best.json"
    cfg.write_text(json.dumps({"config": {"bound": "mine-f", "lr": 0.002, "critic": {"width": 16}}}))
    assert main(["estimate", "--data", str(data), "--output", str(tmp_path), "--run-id", "c", "--config", str(cfg),
                 "--lr", "0.001", "--json", *[a for a in FAST if a not in ("--width", "32")]]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["bound"] == "mine-f" and rec["config"]["lr"] == 0.001 and rec["config"]["critic"]["width"] == 16


@pytest.mark.parametrize(
    "args, code, match",
    [
        (["--x", "nope"], 3, "--x: column 'nope' not found in"),
        (["--bound", "mine", "--batch-size", "1"], 2, "batch_size must be an int >= 2; got 1"),
        (["--lr", "-1"], 2, "lr must be a finite number > 0"),
        (["--batch-size", "100000"], 2, "too few rows"),
    ],
)
def test_errors_are_one_line_with_exit_code_and_leave_nothing(data, tmp_path, capsys, args, code, match):
    out = tmp_path / "out"
    rc = main(["estimate", "--data", str(data), "--output", str(out), "--run-id", "bad", *FAST, *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code
    assert err[-1].startswith("mine-dist: error: ") and match in err[-1]
    assert not (out / "bad").exists()


def test_missing_dataset(tmp_path, capsys):
    assert main(["estimate", "--data", str(tmp_path / "none"), "--output", str(tmp_path), *FAST]) == 3
    assert "dataset not found" in capsys.readouterr().err


def test_nan_in_a_shard_names_the_file(tmp_path, capsys):
    import numpy as np
    import pyarrow as pa

    x = np.random.default_rng(0).normal(size=(600, 1))
    x[5, 0] = np.nan
    pq.write_table(pa.table({"a": x[:, 0], "b": np.random.default_rng(1).normal(size=600)}), tmp_path / "s.parquet")
    rc = main(["estimate", "--data", str(tmp_path), "--x", "a", "--z", "b", "--output", str(tmp_path / "o"), *FAST])
    assert rc == 3
    assert "s.parquet" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_python_dash_m_entry_point(data, tmp_path):
    r = subprocess.run([sys.executable, "-m", "mine_dist", "estimate", "--data", str(data), "--output", str(tmp_path),
                        "--json", *FAST], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["bound"] == "mine"


def test_library_does_not_import_ray():
    code = ("import sys, mine_dist, mine_dist.estimator, mine_dist.cli, mine_dist.io, mine_dist.synthetic, "
            "mine_dist.runs, mine_dist.sync; assert 'ray' not in sys.modules, 'ray imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_make_data_builds_every_registered_kind_from_its_options(tmp_path, capsys):
    from mine_dist import synthetic

    out = tmp_path / "t"
    assert main(["make-data", "student", "--df", "1", "--dim-x", "2", "--dim-z", "2", "--rows", "200",
                 "--shards", "2", "--output", str(out)]) == 0
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["mi_nats"] == pytest.approx(synthetic.make_spec("student", df=1.0, dim_x=2, dim_z=2).truth()["mi_nats"])
    assert truth["parameters"]["df"] == 1.0
    rc = main(["make-data", "student", "--classes", "3", "--rows", "20", "--output", str(tmp_path / "bad")])
    assert rc == 2 and "kind 'student' has no parameter 'classes'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

"""Scheduled audits: spec validation before any estimation, history, alerts, idempotent slots."""

import json
import math
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mine_dist import audit, storage
from mine_dist.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST_EST = {"steps": 300, "batch_size": 128, "eval_every": 100, "bootstrap": 100, "lr": 0.002,
            "critic": {"width": 32}}


def _fixed(a):
    a = np.asarray(a, np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def _leak_table(strength, n=3000, seed=0, nan_row=None):
    """An embedding and a binary attribute; `strength` controls how much the embedding reveals."""
    rng = np.random.default_rng(seed)
    attr = rng.integers(0, 2, n)
    emb = rng.normal(size=(n, 4))
    if nan_row is not None:
        emb[nan_row, 1] = np.nan
    emb[:, 0] += strength * (2 * attr - 1)
    other = emb[:, :2] + 0.5 * rng.normal(size=(n, 2))
    return pa.table({"emb": _fixed(emb), "other": _fixed(other), "attr": pa.array(attr)})


def _write(uri, table):
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    storage.write_bytes_atomic(uri, buf.getvalue().to_pybytes())


def _spec(path, checks, workers=0):
    path.write_text(yaml.safe_dump({"audit": "t", "workers": workers, "checks": checks}))
    return str(path)


def _check(name, data, x="emb", z="attr", **kw):
    return {"name": name, "data": data, "x": x, "z": z, "estimator": FAST_EST, **kw}


# ------------------------------------------------------------------------ spec validation


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"audit": "a", "checks": [{"name": "c", "data": "d", "x": "x", "z": "z", "treshold": 1}]},
         r"check 'c': unknown field\(s\) \['treshold'\]"),
        ({"audit": "a", "checks": [], "extra": 1}, r"unknown key\(s\) \['extra'\]"),
        ({"audit": "a", "concurrent": 0, "checks": [{"name": "c", "data": "d", "x": "x", "z": "z"}]},
         r"'concurrent' must be 'auto' or an int >= 1; got 0"),
        ({"audit": "a", "checks": []}, r"'checks' must be a non-empty list"),
        ({"audit": "a b", "checks": [{}]}, r"'audit' must be a name"),
        ({"audit": "a", "checks": [{"name": "c", "x": "x", "z": "z"}]}, r"check 'c': field 'data' is required"),
        ({"audit": "a", "checks": [{"name": "c", "data": "d", "x": "x", "z": "z",
                                    "alerts": {"max_mi": {"value": 0.1, "unit": "percent"}}}]},
         r"check 'c'.alerts.max_mi.unit must be one of \('nats', 'bits', 'fraction_of_h_z'\); got 'percent'"),
        ({"audit": "a", "checks": [{"name": "c", "data": "d", "x": "x", "z": "z",
                                    "alerts": {"max_change": {"value": 0.1, "unit": "fraction_of_h_z"}}}]},
         r"check 'c'.alerts.max_change.unit must be one of \('nats', 'bits'\)"),
        ({"audit": "a", "checks": [{"name": "c", "data": "d", "x": "x", "z": "z",
                                    "alerts": {"max_mi": {"value": -1}}}]},
         r"check 'c'.alerts.max_mi.value must be a number >= 0; got -1"),
        ({"audit": "a", "checks": [{"name": "c", "data": "d", "x": "x", "z": "z"},
                                   {"name": "c", "data": "d", "x": "x", "z": "z"}]}, r"check 'c': duplicate"),
        ({"audit": "a", "checks": [{"name": "c", "data": "d", "x": "x", "z": "z", "estimator": {}, "config": "b"}]},
         r"check 'c': give either 'estimator'"),
    ],
)
def test_spec_errors_name_check_and_field(raw, match):
    with pytest.raises(audit.SpecError, match=match):
        audit.parse_spec(raw)


@pytest.fixture
def local_data(tmp_path):
    _write(str(tmp_path / "d1" / "a.parquet"), _leak_table(0.3))
    return tmp_path


@pytest.mark.parametrize(
    "check, match, code",
    [  # exit 3 for bad data, 2 for a bad spec (the table in docs/reliability.md)
        (_check("c1", "nope"), "check 'c1': dataset not found", 3),
        (_check("c1", "d1", x="emb2"), "check 'c1': --x: column 'emb2' not found", 3),
        (_check("c1", "d1", z="other", alerts={"max_mi": {"value": 0.5, "unit": "fraction_of_h_z"}}),
         "check 'c1'.alerts.max_mi: unit fraction_of_h_z needs a categorical z", 2),
        (_check("c1", "d1", estimator={"lr": -1}), "check 'c1'.estimator: lr must be a finite number > 0", 2),
    ],
)
def test_bad_specs_fail_before_any_estimation(local_data, capsys, check, match, code):
    good = _check("c0", "d1")
    spec = _spec(local_data / "s.yaml", [good, check])
    rc = main(["audit", "--spec", spec, "--output", str(local_data / "out"), "--run-id", "s1"])
    err = capsys.readouterr().err
    assert rc == code and match in err
    assert not (local_data / "out" / "history").exists()  # not even the good check ran


# ------------------------------------------------------------------------ prepare on first use

_PREPARE = """import os, sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
open("ran.log", "a").write("x\\n")
if os.environ.get("PREPARE_FAIL"):
    sys.exit(7)
if not os.environ.get("PREPARE_NOTHING"):
    os.makedirs("made", exist_ok=True)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(600, 2)).astype(np.float32)
    pq.write_table(pa.table({"emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), 2),
                             "attr": pa.array((emb[:, 0] > 0).astype(np.int64))}), "made/a.parquet")
"""


def _prepare_spec(tmp_path):
    (tmp_path / "prep.py").write_text(_PREPARE)
    est = {**FAST_EST, "steps": 100}
    tmp_path.joinpath("s.yaml").write_text(yaml.safe_dump(
        {"audit": "t", "workers": 0, "prepare": "prep.py", "checks": [_check("c", "made", estimator=est)]}))
    return str(tmp_path / "s.yaml")


def test_prepare_script_runs_once_when_the_data_is_missing(tmp_path):
    spec = _prepare_spec(tmp_path)
    for _ in range(2):  # the second run finds the data (and the check already recorded in the slot)
        assert main(["audit", "--spec", spec, "--output", str(tmp_path / "out"), "--run-id", "s1",
                     "--no-progress"]) == 0
    assert (tmp_path / "ran.log").read_text() == "x\n"  # made on first use, then reused
    assert [r["status"] for r in audit.read_history(str(tmp_path / "out" / "history"), "t")] == ["ok"]


@pytest.mark.parametrize("env, match", [("PREPARE_FAIL", r"prep.py exited with code 7"),
                                        ("PREPARE_NOTHING", r"prep.py ran but check 'c'.s data .*made is still missing")])
def test_a_failing_prepare_script_is_a_data_error(tmp_path, capsys, monkeypatch, env, match):
    monkeypatch.setenv(env, "1")
    rc = main(["audit", "--spec", _prepare_spec(tmp_path), "--output", str(tmp_path / "out"), "--run-id", "s1"])
    assert rc == 3 and re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "out" / "history").exists()


@pytest.mark.parametrize("prepare, match", [("s3://b/prep.py", r"'prepare' must be the path of a local Python script"),
                                            ("nope.py", r"'prepare' script not found: .*nope.py")])
def test_prepare_must_name_a_local_script(tmp_path, prepare, match):
    raw = {"audit": "a", "prepare": prepare, "checks": [{"name": "c", "data": "d", "x": "x", "z": "z"}]}
    with pytest.raises(audit.SpecError, match=match):
        audit.parse_spec(raw, base_dir=str(tmp_path))


# ------------------------------------------------------------------------ behaviour, in-process


def test_failing_check_is_recorded_and_others_kept_and_rerun_finishes(local_data, capsys):
    # A NaN is only found while reading values, i.e. during that check's estimation.
    _write(str(local_data / "bad.parquet"), _leak_table(0.3, nan_row=7))
    spec = _spec(local_data / "s.yaml", [_check("good", "d1"), _check("broken", "bad.parquet")])
    out = str(local_data / "out")
    rc = main(["audit", "--spec", spec, "--output", out, "--run-id", "s1", "--no-progress"])
    assert rc == 5 and "1 check(s) failed: broken" in capsys.readouterr().err
    rows = audit.read_history(os.path.join(out, "history"), "t")
    assert {(r["check"], r["status"]) for r in rows} == {("good", "ok"), ("broken", "error")}
    assert "NaN/Inf" in next(r for r in rows if r["check"] == "broken")["error"]
    # Fix the data and re-run the slot: only the broken check runs, still one row per check.
    _write(str(local_data / "bad.parquet"), _leak_table(0.3, seed=1))
    good_before = next(r for r in rows if r["check"] == "good")
    rc = main(["audit", "--spec", spec, "--output", out, "--run-id", "s1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0 and "good: already recorded in this slot, skipped" in err
    rows = audit.read_history(os.path.join(out, "history"), "t")
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert next(r for r in rows if r["check"] == "good") == good_before


def test_a_check_interrupted_in_training_resumes_from_its_checkpoint(local_data, capsys, monkeypatch):
    from mine_dist import rundir

    spec = _spec(local_data / "s.yaml", [_check("c", "d1")])
    out = str(local_data / "out")
    orig, calls = rundir.InProcessCheckpoints.save, []

    def save(self, state, step):  # the driver is stopped right after the second validation check
        orig(self, state, step)
        calls.append(step)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(rundir.InProcessCheckpoints, "save", save)
    assert main(["audit", "--spec", spec, "--output", out, "--run-id", "s1", "--no-progress"]) == 130
    run = os.path.join(out, "runs", "t", "s1", "c")
    assert os.path.exists(os.path.join(run, "checkpoints", "in-process", "step_00000200", "state.pt"))
    assert not os.path.exists(os.path.join(out, "history")) or not audit.read_history(os.path.join(out, "history"), "t")
    monkeypatch.setattr(rundir.InProcessCheckpoints, "save", orig)
    assert main(["audit", "--spec", spec, "--output", out, "--run-id", "s1", "--no-progress"]) == 0
    rec = json.load(open(os.path.join(run, "estimate.json")))
    assert rec["restored_from_checkpoint"] == 1 and rec["steps"] == 300
    assert [r["status"] for r in audit.read_history(os.path.join(out, "history"), "t")] == ["ok"]


def test_absolute_limit_in_fraction_of_entropy(local_data, capsys):
    spec = _spec(local_data / "s.yaml", [_check("leak", "d1", alerts={"max_mi": {"value": 0.001,
                                                                               "unit": "fraction_of_h_z"}})])
    out = str(local_data / "out")
    rc = main(["audit", "--spec", spec, "--output", out, "--run-id", "s1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 6 and "ALERT max_mi: leak: MI" in err
    alerts = json.loads(open(os.path.join(out, "runs", "t", "s1", "alerts.json")).read())["alerts"]
    assert alerts[0]["rule"] == "max_mi"
    assert alerts[0]["limit_nats"] == pytest.approx(0.001 * alerts[0]["h_z_nats"])
    assert alerts[0]["h_z_nats"] == pytest.approx(math.log(2), abs=0.01)


# ------------------------------------------------------------------------ concurrency


def test_plan_concurrency():
    from mine_dist.distributed.checks import plan_concurrency, task_resources

    assert plan_concurrency([1, 1, 1], None, None) == 1          # no Ray cluster: one at a time
    assert plan_concurrency([1, 1, 1], None, 2.0) == 1           # a 2-CPU laptop: 0.5 CPU free for a check
    assert plan_concurrency([1, 1, 1], None, 16.0) == 3          # capped at the number of checks
    assert plan_concurrency([2] * 10, None, 16.0) == 7           # 14.5 free CPUs / 2 workers per check
    assert plan_concurrency([0, 0], 5, None) == 2                # asked for more than there are checks
    assert task_resources(0, 2, 2.0) == (1.0, None)              # in-process check: its task trains
    assert task_resources(0, 4, 2.0) == (0.5, None)
    assert task_resources(2, 3, 16.0) == (0.0, 1.0)              # Ray Train check: the task only waits
    assert task_resources(1, 2, 2.0) == (0.0, 0.25)              # workers share the CPUs left to them


@pytest.mark.slow
@pytest.mark.ray
def test_checks_run_concurrently_as_ray_tasks(local_data, capsys):
    ray = pytest.importorskip("ray")
    est = {**FAST_EST, "steps": 1500, "patience": 0}
    _write(str(local_data / "bad.parquet"), _leak_table(0.3, nan_row=7))
    spec = _spec(local_data / "s.yaml", [_check("a", "d1", estimator=est), _check("b", "d1", z="other", estimator=est),
                                         _check("broken", "bad.parquet")])
    out = str(local_data / "out")
    try:
        from mine_dist.distributed.runtime import ensure_ray

        ensure_ray(num_cpus=2, include_dashboard=False)
        rc = main(["audit", "--spec", spec, "--output", out, "--run-id", "s1", "--no-progress", "--concurrent", "2"])
    finally:
        ray.shutdown()
    err = capsys.readouterr().err
    assert rc == 5 and "3 check(s), 2 at a time on Ray (2 CPUs)" in err
    rows = {r["check"]: r for r in audit.read_history(os.path.join(out, "history"), "t")}
    assert {k: r["status"] for k, r in rows.items()} == {"a": "ok", "b": "ok", "broken": "error"}
    assert "NaN/Inf" in rows["broken"]["error"]
    a, b = rows["a"], rows["b"]
    # The two good checks ran side by side: each started before the other finished.
    assert max(a["started_at"], b["started_at"]) < min(a["finished_at"], b["finished_at"])
    # Each task ran the same seeded in-process estimate the driver runs one check at a time.
    assert main(["audit", "--spec", spec, "--output", str(local_data / "seq"), "--run-id", "s1", "--no-progress",
                 "--concurrent", "1"]) == 5
    seq = {r["check"]: r for r in audit.read_history(str(local_data / "seq" / "history"), "t")}
    for k in ("a", "b"):
        assert rows[k]["mi_nats"] == pytest.approx(seq[k]["mi_nats"], abs=1e-6)
        assert rows[k]["ci95_low_nats"] == pytest.approx(seq[k]["ci95_low_nats"], abs=1e-6)


# ------------------------------------------------------------------------ against S3


@pytest.mark.s3
@pytest.mark.slow
def test_two_check_audit_twice_on_s3_with_planted_change(s3_server, tmp_path, capsys):
    bucket = s3_server.make_bucket()
    _write(f"{bucket}/emb/v1/a.parquet", _leak_table(0.2))
    _write(f"{bucket}/emb/v2/a.parquet", _leak_table(1.5, seed=1))  # the attribute leaks much more
    alerts = {"max_change": {"value": 0.1, "unit": "nats"}}
    out = f"{bucket}/audits"

    def run(slot, leak_data):
        spec = _spec(tmp_path / f"{slot}.yaml", [
            _check("emb-vs-attr", leak_data, alerts=alerts),
            _check("emb-vs-other", f"{bucket}/emb/v1", z="other"),
        ])
        return main(["audit", "--spec", spec, "--output", out, "--run-id", slot, "--no-progress"])

    assert run("2026-11-01", f"{bucket}/emb/v1") == 0
    capsys.readouterr()
    assert run("2026-11-02", f"{bucket}/emb/v2") == 6
    cap = capsys.readouterr()
    assert "ALERT max_change: emb-vs-attr: MI changed by +" in cap.err
    assert "since slot 2026-11-01" in cap.err
    rows = audit.read_history(f"{out}/history", "t")
    assert sorted((r["slot"], r["check"]) for r in rows) == [
        ("2026-11-01", "emb-vs-attr"), ("2026-11-01", "emb-vs-other"),
        ("2026-11-02", "emb-vs-attr"), ("2026-11-02", "emb-vs-other")]
    fired = storage.read_json(f"{out}/runs/t/2026-11-02/alerts.json")["alerts"]
    assert [a["rule"] for a in fired] == ["max_change"] and fired[0]["change_nats"] > 0.1
    # Re-running the same slot adds no rows (and still reports the alert).
    assert run("2026-11-02", f"{bucket}/emb/v2") == 6
    assert len(audit.read_history(f"{out}/history", "t")) == 4
    assert main(["report", "--history", f"{out}/history", "--audit", "t", "--plot", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------ the shipped example


@pytest.mark.slow
def test_digits_example_runs_from_a_fresh_checkout(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    rc = main(["audit", "--spec", "examples/digits/audit.yaml", "--output", str(tmp_path), "--run-id", "ex",
               "--no-progress", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    by = {c["check"]: c for c in res["checks"]}
    label = by["embedding-vs-label"]
    assert label["status"] == "ok" and by["v1-vs-v2"]["status"] == "ok"
    width = label["ci95_high_nats"] - label["ci95_low_nats"]
    assert 0.5 < label["mi_nats"] < math.log(10) + width  # a real dependence, below H(label)


def test_max_change_fires_only_beyond_the_noise_of_the_difference_unless_raw():
    sig = audit.parse_spec({"audit": "a", "checks": [
        {"name": "c", "data": "d", "x": "x", "z": "z", "alerts": {"max_change": {"value": 0.1, "unit": "nats"}}}]})
    raw = audit.parse_spec({"audit": "a", "checks": [
        {"name": "c", "data": "d", "x": "x", "z": "z",
         "alerts": {"max_change": {"value": 0.1, "unit": "nats", "rule": "raw"}}}]})
    prev = {"mi_nats": 1.0, "slot": "s0", "ci95_low_nats": 0.7, "ci95_high_nats": 1.3}
    noise = audit.change_noise_nats((0.9, 1.5), (0.7, 1.3))
    assert noise == pytest.approx(np.hypot(0.3, 0.3))  # each half-width is 1.96 se: they add in quadrature
    assert audit.evaluate_alerts(sig.checks[0], 1.2, None, prev, (0.9, 1.5)) == []  # 0.2 > 0.1 but within noise
    fired = audit.evaluate_alerts(raw.checks[0], 1.2, None, prev, (0.9, 1.5))
    assert [a["rule"] for a in fired] == ["max_change"] and fired[0]["change_rule"] == "raw"
    big = audit.evaluate_alerts(sig.checks[0], 2.0, None, prev, (1.9, 2.1))
    assert big[0]["noise_nats"] == pytest.approx(np.hypot(0.1, 0.3))
    assert "beyond the 95% noise of the difference" in big[0]["message"]
    with pytest.raises(audit.SpecError, match=r"alerts.max_change.rule must be one of \('significant', 'raw'\)"):
        audit.parse_spec({"audit": "a", "checks": [{"name": "c", "data": "d", "x": "x", "z": "z",
                                                    "alerts": {"max_change": {"value": 0.1, "rule": "z"}}}]})


def test_untrusted_alert_fires_only_on_estimates_with_warnings():
    spec = audit.parse_spec({"audit": "a", "checks": [
        {"name": "c", "data": "d", "x": "x", "z": "z", "alerts": {"untrusted": True}}]})
    c = spec.checks[0]
    assert audit.evaluate_alerts(c, 1.0, None, None, (0.9, 1.1), []) == []
    fired = audit.evaluate_alerts(c, 1.0, None, None, (0.9, 1.1), ["not converged: the selected step ... raise --steps"])
    assert [a["rule"] for a in fired] == ["untrusted"] and "is not to be trusted: not converged" in fired[0]["message"]
    quiet = audit.parse_spec({"audit": "a", "checks": [{"name": "c", "data": "d", "x": "x", "z": "z"}]}).checks[0]
    assert audit.evaluate_alerts(quiet, 1.0, None, None, (0.9, 1.1), ["not converged"]) == []
    with pytest.raises(audit.SpecError, match=r"alerts.untrusted must be true or false; got 'yes please'"):
        audit.parse_spec({"audit": "a", "checks": [{"name": "c", "data": "d", "x": "x", "z": "z",
                                                    "alerts": {"untrusted": "yes please"}}]})

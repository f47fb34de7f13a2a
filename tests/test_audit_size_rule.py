"""The audit's size rule: a ``workers: 1`` check on at most ``in_process_max_values`` values (rows x
(dim x + dim z)) trains in-process; larger checks, multi-worker checks and a limit of 0 keep Ray Train.
``mine-dist audit --in-process-max-values`` and ``MINE_DIST_IN_PROCESS_MAX_VALUES`` set the limit."""

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

"""Run ids, sweep ids, resume ids and audit slots can never reach outside ``<output>/<id>/``, and
clean-up after a failure deletes only the directory the run itself created."""

import os

import pytest

from mine_dist import rundir, storage
from mine_dist.cli import main
from tests.conftest import make_gaussian_dataset

FAST = ["--steps", "100", "--batch-size", "64", "--eval-every", "50", "--bootstrap", "50", "--no-progress",
        "--width", "16"]
HOSTILE = ["..", ".", "/", "./", "../x", "../../escape", "/tmp/abs", "", "a/b", ".hidden", "-x", "x\n",
           "a" * 200, "ok..\\..", "~", "*"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_gaussian_dataset(tmp_path_factory, "ids", rows=1500, shards=2, dim=2, rho=0.6)


def _victim(root):
    """sandbox/victim/{keep.txt, out/old-run/estimate.json}: what no run may touch."""
    (root / "victim" / "out" / "old-run").mkdir(parents=True)
    (root / "victim" / "keep.txt").write_text("precious")
    (root / "victim" / "out" / "old-run" / "estimate.json").write_text('{"run_id": "old-run"}')
    return root / "victim" / "out"


def _tree(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@pytest.mark.parametrize("rid", HOSTILE)
@pytest.mark.parametrize("flag", ["--run-id", "--resume"])
@pytest.mark.parametrize("bad_column", [True, False])
def test_hostile_ids_are_refused_and_nothing_is_touched(data, tmp_path, capsys, rid, flag, bad_column):
    out = _victim(tmp_path / "sandbox")
    before = _tree(tmp_path)
    extra = ["--x", "nope"] if bad_column else []
    workers = ["--workers", "1"] if flag == "--resume" else ["--workers", "0"]
    rc = main(["estimate", "--data", str(data), "--output", str(out), f"{flag}={rid}", *workers, *FAST, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert err[-1].startswith(f"mine-dist: error: {flag} must be one path segment")
    assert _tree(tmp_path) == before


def test_validate_id_accepts_ordinary_ids_and_names_the_option():
    for ok in ("run-20260101-000000-abc123", "r1", "A.b_c-9", "x" * 128):
        assert rundir.validate_id(ok) == ok
    with pytest.raises(ValueError, match=r"--resume must be one path segment .* got '\.\.'"):
        rundir.validate_id("..", "--resume")
    with pytest.raises(ValueError, match=r"at most 128 characters; got 'xxx"):
        rundir.validate_id("x" * 129)
    with pytest.raises(ValueError, match=r"got 3"):
        rundir.validate_id(3)


def test_failed_run_removes_exactly_its_own_directory(data, tmp_path):
    out = _victim(tmp_path / "sandbox")
    assert main(["estimate", "--data", str(data), "--output", str(out), "--run-id", "good", "--workers", "0",
                 *FAST]) == 0
    before = _tree(tmp_path)
    assert main(["estimate", "--data", str(data), "--output", str(out), "--run-id", "bad", "--workers", "0",
                 "--x", "nope", *FAST]) == 3
    assert _tree(tmp_path) == before and not (out / "bad").exists()
    assert (out / "good" / "estimate.json").exists() and (out / "good" / rundir.MARKER).exists()


def test_existing_directory_not_made_by_mine_dist_is_refused(data, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "mine").mkdir(parents=True)
    (out / "mine" / "notes.txt").write_text("mine")
    (out / "mine" / ".hidden").write_text("also mine")
    rc = main(["estimate", "--data", str(data), "--output", str(out), "--run-id", "mine", "--workers", "0", *FAST])
    assert rc == 2 and "exists and was not created by mine-dist" in capsys.readouterr().err
    assert _tree(out) == ["mine/.hidden", "mine/notes.txt"]


def test_existing_empty_directory_is_used_but_never_removed(data, tmp_path):
    out = tmp_path / "out"
    (out / "empty").mkdir(parents=True)
    assert main(["estimate", "--data", str(data), "--output", str(out), "--run-id", "empty", "--workers", "0",
                 "--x", "nope", *FAST]) == 3
    assert (out / "empty").is_dir() and _tree(out) == []


def test_release_never_deletes_a_directory_claimed_by_someone_else(tmp_path):
    first = rundir.claim(str(tmp_path), "r")
    second = rundir.claim(str(tmp_path), "r")  # a later attempt took the directory over
    (tmp_path / "r" / "curves.png").write_bytes(b"x")
    first.release()
    assert (tmp_path / "r" / "curves.png").exists()
    second.release()
    assert not (tmp_path / "r").exists()


def test_remove_owned_refuses_foreign_directories(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "estimate.json").write_text('{"run_id": "someone-else"}')
    with pytest.raises(FileExistsError, match="was not written by mine-dist; not removing it"):
        rundir.remove_owned(str(tmp_path / "foreign"))
    assert (tmp_path / "foreign" / "estimate.json").exists()
    rundir.claim(str(tmp_path), "ours")
    rundir.remove_owned(str(tmp_path / "ours"))
    assert not (tmp_path / "ours").exists()


@pytest.mark.parametrize("rid", ["..", ".", "/", "../x"])
def test_sweep_and_audit_ids_are_refused(data, tmp_path, capsys, rid):
    out = _victim(tmp_path / "sandbox")
    before = _tree(tmp_path)
    assert main(["sweep", "--data", str(data), "--output", str(out), "--run-id", rid, "--trials", "1", *FAST]) == 2
    assert "--run-id must be one path segment" in capsys.readouterr().err
    spec = tmp_path / "a.yaml"
    spec.write_text(f"audit: a\nworkers: 0\nchecks:\n  - {{name: c, data: {data}, x: x, z: z}}\n")
    before = _tree(tmp_path)
    assert main(["audit", "--spec", str(spec), "--output", str(out), "--run-id", rid]) == 2
    assert "--run-id (the audit slot) must be one path segment" in capsys.readouterr().err
    assert _tree(tmp_path) == before


def test_make_data_overwrite_only_replaces_a_dataset(tmp_path, capsys):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "thesis.tex").write_text("years of work")
    rc = main(["make-data", "gaussian", "--rows", "20", "--shards", "1", "--output", str(d), "--overwrite"])
    assert rc == 2 and "holds files that are not a mine-dist dataset" in capsys.readouterr().err
    assert _tree(d) == ["thesis.tex"]
    g = tmp_path / "g"
    assert main(["make-data", "gaussian", "--rows", "20", "--shards", "1", "--output", str(g)]) == 0
    assert main(["make-data", "gaussian", "--rows", "30", "--shards", "2", "--output", str(g), "--overwrite"]) == 0
    assert len([f for f in _tree(g) if f.endswith(".parquet")]) == 2


@pytest.mark.s3
@pytest.mark.parametrize("rid", ["/", "..", ".", "../x"])
def test_hostile_ids_on_s3_leave_every_object(s3_server, data, rid, capsys):
    bucket = s3_server.make_bucket()
    for key in ("victim/keep.txt", "victim/out/old-run/estimate.json", "victim/out/other.txt"):
        storage.write_text_atomic(f"{bucket}/{key}", "x")
    before = storage.list_files(f"{bucket}/victim")
    rc = main(["estimate", "--data", str(data), "--output", f"{bucket}/victim/out", "--run-id", rid,
               "--workers", "0", "--x", "nope", *FAST])
    assert rc == 2 and "must be one path segment" in capsys.readouterr().err
    assert storage.list_files(f"{bucket}/victim") == before and len(before) == 3


def _fake_checkpoint(out, run_id, cfg, request=None):
    import torch

    c = rundir.claim(str(out), run_id, request=request)
    d = out / run_id / "checkpoints" / "step_00000100"
    d.mkdir(parents=True)
    torch.save({"config": cfg.to_dict(), "step": 100}, d / "state.pt")
    return c


def test_resume_refuses_changed_training_options_up_front(data, tmp_path, capsys):
    from mine_dist.cli import build_parser, config_from_args

    args = ["estimate", "--data", str(data), "--output", str(tmp_path), "--workers", "1", *FAST]
    cfg = config_from_args(build_parser().parse_args(args))
    _fake_checkpoint(tmp_path, "r", cfg)
    before = _tree(tmp_path)
    assert main([*args, "--resume", "r", "--lr", "0.002", "--width", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--resume r: options differ from the run being resumed" in err
    assert f"lr {cfg.lr!r} -> 0.002" in err and "critic.width 16 -> 64" in err
    assert _tree(tmp_path) == before  # checkpoints kept, nothing written


def test_resume_refuses_other_data_and_allows_a_raised_step_budget(data, tmp_path, capsys):
    from mine_dist.estimator import EstimatorConfig

    cfg = EstimatorConfig()
    _fake_checkpoint(tmp_path, "r", cfg, request={"data": "/elsewhere", "x": "x", "z": "z"})
    with pytest.raises(ValueError, match=r"data '/elsewhere' -> '/other'; x 'x' -> 'emb'"):
        rundir.check_resume(str(tmp_path / "r"), cfg.to_dict(), {"data": "/other", "x": "emb", "z": "z"})
    more = {**cfg.to_dict(), "steps": cfg.steps * 2, "bootstrap": 10}
    rundir.check_resume(str(tmp_path / "r"), more, {"data": "/elsewhere", "x": "x", "z": "z"})
    assert rundir.resume_conflicts({"critic": {"width": 1}}, {"critic": {"width": 2}}) == ["critic.width 1 -> 2"]

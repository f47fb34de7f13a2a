"""Leaked features and degenerate inputs are flagged before training; corrupted pages in files
without checksums fail as data errors naming the file and row group."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mine_dist import io, leaks
from mine_dist.cli import main

FAST = ["--steps", "100", "--batch-size", "64", "--eval-every", "50", "--bootstrap", "50", "--no-progress",
        "--width", "16", "--workers", "0"]


def _fixed(a):
    a = np.asarray(a, np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.ravel()), a.shape[1])


def _write(path, x, z, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = {"x": _fixed(x)}
    cols["z"] = pa.array(z) if np.ndim(z) == 1 else _fixed(z)
    pq.write_table(pa.table(cols), path, **kw)
    return path


def _cs(role, kind, dim, vocab=()):
    return io.ColumnSet(role, (role,), kind, dim, tuple(vocab))


def test_identical_columns_are_an_error_unless_allowed(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1500, 3))
    z = np.column_stack([rng.standard_normal(1500), x[:, 1]])
    d = _write(tmp_path / "d" / "a.parquet", x, z)
    rc = main(["estimate", "--data", str(d), "--output", str(tmp_path / "o"), "--run-id", "r", *FAST])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 3 and "x and z share identical columns (x[1] == z[1])" in err and "--allow-identical" in err
    assert not (tmp_path / "o" / "r").exists()
    assert main(["estimate", "--data", str(d), "--output", str(tmp_path / "o"), "--run-id", "r", "--allow-identical",
                 *FAST]) == 0
    rec = json.loads((tmp_path / "o" / "r" / "estimate.json").read_text())
    assert any("share identical columns (x[1] == z[1])" in w for w in rec["warnings"])


def test_near_identical_constant_and_determined_columns_warn():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 2))
    z = np.column_stack([x[:, 0] + 1e-2 * rng.standard_normal(3000), rng.standard_normal(3000)])
    f = leaks.inspect_sample(x, z, _cs("x", "list", 2), _cs("z", "list", 2))
    assert f.identical == () and len(f.warnings) == 1
    assert f.warnings[0].startswith("x[0] and z[0] are almost identical (|correlation| 0.9999")
    const = np.column_stack([x, np.full(3000, 2.0)])
    f = leaks.inspect_sample(const, rng.standard_normal((3000, 2)), _cs("x", "list", 3), _cs("z", "list", 2))
    assert f.warnings == ("constant x column(s) on a 3000-row sample: x[2]; they carry no information",)
    # A categorical z that is a function of a discrete x: MI = H(z).
    xd = rng.integers(0, 20, (3000, 1)).astype(float)
    zc = np.eye(2)[(xd[:, 0] % 2).astype(int)]
    f = leaks.inspect_sample(xd, zc, _cs("x", "scalars", 1), _cs("z", "categorical", 2, ("a", "b")))
    assert f.warnings == ("z is a deterministic function of x on a 3000-row sample (every repeated x row has one "
                          "z value): I(X;Z) = H(Z)",)


def test_well_behaved_data_raises_no_flag():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5000, 8))
    z = 0.9 * x + np.sqrt(1 - 0.81) * rng.standard_normal((5000, 8))
    assert leaks.inspect_sample(x, z, _cs("x", "list", 8), _cs("z", "list", 8)) == leaks.Findings((), ())
    xd = rng.integers(0, 20, (3000, 1)).astype(float)  # repeated x rows, but z is not determined by them
    zc = np.eye(2)[rng.integers(0, 2, 3000)]
    assert leaks.inspect_sample(xd, zc, _cs("x", "scalars", 1), _cs("z", "categorical", 2, "ab")).warnings == ()


def _flip_value(path, value: np.float32, new: np.float32):
    raw = bytearray(path.read_bytes())
    at = raw.find(np.float32(value).tobytes())
    assert at > 0
    raw[at:at + 4] = np.float32(new).tobytes()
    path.write_bytes(bytes(raw))


def test_corrupted_page_without_checksums_is_a_data_error_naming_file_and_row_group(tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 2)).astype(np.float32)
    z = (0.8 * x + 0.6 * rng.standard_normal((3000, 2))).astype(np.float32)
    d = tmp_path / "d"
    f = _write(d / "a.parquet", x, z, compression="none", use_dictionary=False, row_group_size=1000)
    info = io.inspect(str(d), "x", "z")
    assert info.checksums is False and info.record()["checksums"] is False
    _flip_value(f, x[1500, 1], np.float32(3.0e38))  # a value in row group 1
    rc = main(["estimate", "--data", str(d), "--output", str(tmp_path / "o"), "--run-id", "r", *FAST])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 3, err
    assert f"{f}, row group 1: column 'x' holds 3.0" in err and "the file is corrupt" in err
    assert not (tmp_path / "o" / "r").exists()


def test_checksummed_files_are_recorded_and_verified(tmp_path, capsys):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2000, 2)).astype(np.float32)
    d = tmp_path / "d"
    f = _write(d / "a.parquet", x, x[:, ::-1] + 1, compression="none", use_dictionary=False,
               write_page_checksum=True)
    assert io.inspect(str(d), "x", "z").checksums is True
    _flip_value(f, x[100, 0], x[101, 0])  # within the range: only the checksum can tell
    rc = main(["estimate", "--data", str(d), "--output", str(tmp_path / "o"), *FAST])
    assert rc == 3 and "CRC" in capsys.readouterr().err


@pytest.mark.parametrize("kw", [{}, {"compression": "snappy"}])
def test_pyarrow_default_files_report_no_checksums(tmp_path, kw):
    rng = np.random.default_rng(5)
    _write(tmp_path / "a.parquet", rng.standard_normal((50, 2)), rng.standard_normal((50, 2)), **kw)
    assert io.inspect(str(tmp_path), "x", "z").checksums is False

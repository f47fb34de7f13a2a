"""Reading Parquet datasets: column selection, validation errors (each pinned), conversion."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mine_dist import io
from mine_dist.io import DataError


def fixed(a):
    a = np.asarray(a, np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


@pytest.fixture
def ds(tmp_path, rng):
    """Two shards: x (fixed list 3), z (fixed list 2), scalars a, b, a string label, an int label."""
    for s in range(2):
        n = 50
        t = pa.table({
            "row_id": pa.array(np.arange(s * n, (s + 1) * n)),
            "x": fixed(rng.normal(size=(n, 3))),
            "z": fixed(rng.normal(size=(n, 2))),
            "f_a": rng.normal(size=n), "f_b": rng.normal(size=n),
            "label": pa.array(rng.choice(["cat", "dog", "eel"], size=n)),
            "klass": pa.array(rng.integers(0, 4, size=n)),
            "vec": pa.array([list(r) for r in rng.normal(size=(n, 4))], pa.list_(pa.float64())),
        })
        pq.write_table(t, tmp_path / f"part-{s}.parquet")
    return tmp_path


def test_list_columns(ds):
    info = io.inspect(str(ds), "x", "z")
    assert (info.x.kind, info.x.dim, info.z.dim, info.rows, len(info.files)) == ("list", 3, 2, 100, 2)
    x, z, keys, dropped = io.read_arrays(info)
    assert x.shape == (100, 3) and z.shape == (100, 2) and keys.shape == (100,) and dropped == 0
    assert len(set(keys.tolist())) == 100


def test_scalar_glob_and_categorical(ds):
    info = io.inspect(str(ds), "f_*", "label")
    assert info.x.columns == ("f_a", "f_b") and info.x.kind == "scalars"
    assert info.z.kind == "categorical" and info.z.vocabulary == ("cat", "dog", "eel")
    x, z, _, _ = io.read_arrays(info)
    assert np.array_equal(z.sum(1), np.ones(100))


def test_integer_single_column_is_categorical_unless_forced(ds):
    assert io.inspect(str(ds), "x", "klass").z.kind == "categorical"
    assert io.inspect(str(ds), "x", "klass:num").z.kind == "scalars"


def test_variable_lists(ds):
    info = io.inspect(str(ds), "vec", "z")
    assert info.x.dim == 4
    assert io.read_arrays(info)[0].shape == (100, 4)


def test_row_id_column_decides_keys(ds):
    info = io.inspect(str(ds), "x", "z", row_id="row_id")
    assert sorted(io.read_arrays(info)[2].tolist()) == list(range(100))


def test_fingerprint_is_stable(ds):
    assert io.inspect(str(ds), "x", "z").fingerprint == io.inspect(str(ds), "x", "z").fingerprint


def test_missing_column(ds):
    with pytest.raises(DataError, match=r"--z: column 'emb' not found in .*part-0.parquet; columns are"):
        io.inspect(str(ds), "x", "emb")


def test_missing_dataset(tmp_path):
    with pytest.raises(DataError, match="dataset not found"):
        io.inspect(str(tmp_path / "nope"), "x", "z")


def test_empty_directory(tmp_path):
    with pytest.raises(DataError, match="dataset is empty: no .parquet files"):
        io.inspect(str(tmp_path), "x", "z")


def test_zero_rows(tmp_path):
    pq.write_table(pa.table({"x": pa.array([], pa.float64()), "z": pa.array([], pa.float64())}), tmp_path / "a.parquet")
    with pytest.raises(DataError, match="hold 0 rows"):
        io.inspect(str(tmp_path), "x", "z")


def test_non_numeric_list(tmp_path):
    pq.write_table(pa.table({"x": pa.array([["a"], ["b"]]), "z": [1.0, 2.0]}), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"--x: column 'x' is a list of string, not of numbers"):
        io.inspect(str(tmp_path), "x", "z")


def test_several_columns_must_be_numeric(ds):
    with pytest.raises(DataError, match=r"--x: column 'label' has type string; several columns must all be numeric"):
        io.inspect(str(ds), "f_a,label", "z")


def test_same_column_on_both_sides(ds):
    with pytest.raises(DataError, match=r"column\(s\) \['f_a'\] are in both --x and --z"):
        io.inspect(str(ds), "f_a,f_b", "f_a")


def test_list_size_differs_across_shards(ds, rng):
    pq.write_table(pa.table({"x": fixed(rng.normal(size=(5, 4))), "z": fixed(rng.normal(size=(5, 2)))}),
                   ds / "part-9.parquet")
    with pytest.raises(DataError, match=r"column 'x' has type fixed_size_list<element: float>\[4\] in .*part-9.parquet but"):
        io.inspect(str(ds), "x", "z")


def test_column_missing_in_one_shard(ds, rng):
    pq.write_table(pa.table({"x": fixed(rng.normal(size=(5, 3)))}), ds / "part-9.parquet")
    with pytest.raises(DataError, match=r"column 'z' missing in .*part-9.parquet"):
        io.inspect(str(ds), "x", "z")


def test_corrupt_shard(ds):
    data = (ds / "part-1.parquet").read_bytes()
    (ds / "part-1.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"corrupt or unreadable Parquet file .*part-1.parquet"):
        io.inspect(str(ds), "x", "z")


def test_ragged_variable_lists(tmp_path):
    t = pa.table({"x": pa.array([[1.0, 2.0], [3.0], [4.0, 5.0]]), "z": [1.0, 2.0, 3.0]})
    pq.write_table(t, tmp_path / "a.parquet")
    info = io.inspect(str(tmp_path), "x", "z")
    with pytest.raises(DataError, match=r"column 'x' has a list of length 1 at row 1 of .*a.parquet; expected 2"):
        io.read_arrays(info)


def test_nan_names_file_and_row(tmp_path):
    t = pa.table({"x": [1.0, float("nan"), 3.0, 4.0], "z": [1.0, 2.0, 3.0, 5.0]})
    pq.write_table(t, tmp_path / "a.parquet")
    info = io.inspect(str(tmp_path), "x", "z")
    with pytest.raises(DataError, match=r"1 row\(s\) with NaN/Inf in --x x of .*a.parquet \(first at row 1\)"):
        io.read_arrays(info)
    x, z, _, dropped = io.read_arrays(info, drop_nonfinite=True)
    assert dropped == 1 and x.shape == (3, 1)


def test_nulls(tmp_path):
    pq.write_table(pa.table({"x": [1.0, None], "z": [1.0, 2.0]}), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"column 'x' has 1 null value\(s\) in .*a.parquet"):
        io.read_arrays(io.inspect(str(tmp_path), "x", "z"))


def test_single_valued_categorical(tmp_path):
    pq.write_table(pa.table({"x": [1.0, 2.0], "z": ["a", "a"]}), tmp_path / "a.parquet")
    with pytest.raises(DataError, match="has a single value"):
        io.inspect(str(tmp_path), "x", "z")


def test_max_rows(ds):
    x, _, _, _ = io.read_arrays(io.inspect(str(ds), "x", "z"), max_rows=60)
    assert x.shape[0] == 60


def test_glob_relative_and_absolute(ds, monkeypatch):
    assert len(io.inspect(str(ds / "part-1*.parquet"), "x", "z").files) == 1
    monkeypatch.chdir(ds.parent)
    assert len(io.inspect(f"{ds.name}/part-*.parquet", "x", "z").files) == 2


def test_each_footer_is_parsed_once_per_run(tmp_path):
    """inspect parses every footer; the in-process read, the Ray path's work units, scan task body,
    epoch reads and test-split read reuse them (benchmarks/footer_reads.py: 128 -> 8 for 8 files)."""
    from mine_dist import normalize, split, synthetic
    from mine_dist.distributed import data as D

    synthetic.write_dataset(synthetic.Spec(kind="gaussian", dim=2, rho=0.6), 4000, 2, str(tmp_path),
                            row_group_size=1000)
    before = io.FOOTER_READS[0]
    info = io.inspect(str(tmp_path), "x", "z")
    assert io.FOOTER_READS[0] - before == 2
    x, _, _, _ = io.read_arrays(info)
    us = D.units(info)
    assert len(us) == 4
    for u in us:
        D._scan_unit(u, info, (0.1, 0.1), False, 5, 5, 0)
        D.read_unit(u, info, split.TRAIN, 0.1, 0.1, False)
    nx = normalize.fit("standard", x, "x")
    D.collect_split(info, split.TEST, 0.1, 0.1, False, nx, nx, 10**6)
    assert io.FOOTER_READS[0] - before == 2
    import pickle

    assert pickle.loads(pickle.dumps(info)).metadata[0].num_rows == 2000  # travels to Ray tasks with the info

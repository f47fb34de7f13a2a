import numpy as np
import pytest

from mine_dist import split


def test_assignment_is_deterministic_and_order_free():
    keys = np.arange(10000, dtype=np.uint64)
    a = split.assign(keys, 0.1, 0.2)
    perm = np.random.default_rng(0).permutation(10000)
    assert np.array_equal(split.assign(keys[perm], 0.1, 0.2), a[perm])


def test_fractions():
    a = split.assign(np.arange(100000), 0.1, 0.2)
    assert abs((a == split.TEST).mean() - 0.2) < 0.01
    assert abs((a == split.VAL).mean() - 0.1) < 0.01


def _write(path, n, seed):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": rng.normal(size=n), "z": rng.normal(size=n)}), path)


def test_file_keys_use_the_path_below_the_dataset_folder(tmp_path):
    from mine_dist import io

    # Hive-style partitions with equal file names: their rows must not share keys.
    for part in ("a=1", "a=2"):
        _write(tmp_path / "hive" / part / "part-0.parquet", 50, 0)
    info = io.inspect(str(tmp_path / "hive"), "x", "z")
    names = sorted(info.key_name(f) for f in info.files)
    assert names == ["a=1/part-0.parquet", "a=2/part-0.parquet"]
    _, _, keys, _ = io.read_arrays(info)
    assert np.unique(keys).size == 100
    # Moving (or copying) the dataset keeps every key: names are relative to its folder.
    import shutil

    shutil.copytree(tmp_path / "hive", tmp_path / "elsewhere" / "copy")
    moved = io.inspect(str(tmp_path / "elsewhere" / "copy"), "x", "z")
    assert np.array_equal(io.read_arrays(moved)[2], keys)
    # One folder of files: the base name, as before.
    for i in range(2):
        _write(tmp_path / "flat" / f"part-{i}.parquet", 10, i)
    flat = io.inspect(str(tmp_path / "flat"), "x", "z")
    assert sorted(flat.key_name(f) for f in flat.files) == ["part-0.parquet", "part-1.parquet"]
    assert np.array_equal(split.row_keys(5, 10, "part-0.parquet"), split.row_keys(5, 10, "part-0.parquet"))
    assert not np.array_equal(split.row_keys(5, 10, "part-0.parquet"), split.row_keys(5, 10, "part-1.parquet"))


def test_bad_fractions():
    with pytest.raises(ValueError, match="sum < 1"):
        split.assign(np.arange(3), 0.5, 0.5)

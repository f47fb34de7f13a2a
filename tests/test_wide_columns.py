"""Wide embedding columns: float16 lists on disk, and the Arrow -> numpy conversion without copies.

benchmarks/wide_streaming.py measures what these conversions buy at 384-d and 768-d.
"""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mine_dist import io, normalize, split
from mine_dist.distributed import data as D
from mine_dist.io import DataError


def fixed(a):
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def variable(a):
    offsets = pa.array(np.arange(0, a.size + 1, a.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(a.reshape(-1)))


@pytest.fixture
def f16(tmp_path, rng):
    """Two shards of float16 embeddings: x a fixed-size list (8), z a variable-size list (6)."""
    parts = []
    for s in range(2):
        x = rng.normal(size=(300, 8)).astype(np.float16)
        z = (x[:, :6] + 0.5 * rng.normal(size=(300, 6))).astype(np.float16)
        pq.write_table(pa.table({"x": fixed(x), "z": variable(z)}), tmp_path / f"part-{s}.parquet", row_group_size=100)
        parts.append((x, z))
    return tmp_path, parts


def test_float16_lists_read_exactly(f16):
    path, parts = f16
    info = io.inspect(str(path), "x", "z")
    assert (info.x.kind, info.x.dim, info.z.kind, info.z.dim) == ("list", 8, "list", 6)
    x, z, _, dropped = io.read_arrays(info)  # also checks each row group against its footer's min/max
    assert x.dtype == np.float64 and dropped == 0
    np.testing.assert_array_equal(x, np.concatenate([p[0] for p in parts]).astype(np.float64))
    np.testing.assert_array_equal(z, np.concatenate([p[1] for p in parts]).astype(np.float64))


def test_float16_statistics_catch_out_of_range_values(f16):
    path, _ = f16
    info = io.inspect(str(path), "x", "z")
    pf = info.open(info.files[0])
    t = pf.read_row_group(0, columns=["x", "z"])
    io.check_statistics(pf.metadata, 0, t, (info.x, info.z), "f")  # footer stats are 2-byte float16s
    bad = np.full((t.num_rows, 8), 1000.0, np.float16)
    t = t.set_column(0, "x", fixed(bad))
    with pytest.raises(DataError, match=r"column 'x' holds 1000.0, outside the range .* the file is corrupt"):
        io.check_statistics(pf.metadata, 0, t, (info.x, info.z), "f")


def test_float16_nonfinite_named(tmp_path):
    x = np.ones((10, 4), np.float16)
    x[3, 1] = np.inf
    pq.write_table(pa.table({"x": fixed(x), "z": fixed(np.ones((10, 4), np.float16))}), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"1 row\(s\) with NaN/Inf in --x x of .*a.parquet \(first at row 3\)"):
        io.read_arrays(io.inspect(str(tmp_path), "x", "z"))


def _buffer(col: pa.Array) -> int:
    return col.values.buffers()[1].address


@pytest.mark.parametrize("kind", ["fixed", "variable"])
def test_float32_lists_are_viewed_not_copied(rng, kind):
    a = rng.normal(size=(50, 16)).astype(np.float32)
    col = (fixed if kind == "fixed" else variable)(a)
    cs = io.ColumnSet("x", ("x",), "list", 16)
    out = io.to_array(pa.table({"x": col}), cs, "w", keep_float32=True)
    assert out.dtype == np.float32 and out.shape == (50, 16) and not out.flags.writeable
    assert out.ctypes.data == _buffer(col)  # the Arrow values buffer itself
    np.testing.assert_array_equal(out, a)
    sliced = col.slice(7, 20)  # an array offset: the view starts at row 7
    v = io.list_values(sliced, 16, keep_float32=True)
    assert v.ctypes.data == _buffer(col) + 7 * 16 * 4
    np.testing.assert_array_equal(v, a[7:27])
    default = io.to_array(pa.table({"x": col}), cs, "w")  # the float64 contract is unchanged
    assert default.dtype == np.float64 and default.flags.writeable
    np.testing.assert_array_equal(default, a.astype(np.float64))


@pytest.mark.parametrize("dtype,expect", [(np.float16, np.float32), (np.float64, np.float64), (np.int32, np.float64)])
def test_keep_float32_casts_only_exactly(rng, dtype, expect):
    a = (rng.normal(size=(20, 4)) * 10).astype(dtype)
    out = io.list_values(fixed(a), 4, keep_float32=True)
    assert out.dtype == expect
    np.testing.assert_array_equal(out, a.astype(expect))


def test_null_elements_rejected(rng):
    col = pa.FixedSizeListArray.from_arrays(pa.array([1.0, None, 2.0, 3.0], pa.float32()), 2)
    with pytest.raises(DataError, match=r"column 'x' has 1 null element\(s\) in w"):
        io.list_values(col, 2, True, "x", "w")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_read_unit_normalized_values_unchanged(tmp_path, rng, dtype):
    """The Ray path's row groups, read as float32 where exact, normalize to the same float32 values
    as the float64 conversion gave."""
    x = rng.normal(3.0, 2.0, size=(400, 12)).astype(dtype)
    z = rng.normal(size=(400, 5)).astype(dtype)
    pq.write_table(pa.table({"x": fixed(x), "z": variable(z)}), tmp_path / "a.parquet", row_group_size=200)
    info = io.inspect(str(tmp_path), "x", "z")
    nx = normalize.fit("standard", x.astype(np.float64), "x")
    nz = normalize.fit("rank-gauss", z.astype(np.float64), "z")
    for u in D.units(info):
        rx, rz = D.read_unit(u, info, split.TRAIN, 0.1, 0.2, False)
        assert rx.dtype == (np.float64 if dtype == np.float64 else np.float32)
        t = info.open(u.file).read_row_group(u.row_group)
        keep = split.assign(split.row_keys(u.rows, u.start, info.key_name(u.file)), 0.1, 0.2) == split.TRAIN
        np.testing.assert_array_equal(nx.apply(rx), nx.apply(io.to_array(t, info.x, "w")[keep]))
        np.testing.assert_array_equal(nz.apply(rz), nz.apply(io.to_array(t, info.z, "w")[keep]))

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


def test_file_keys_depend_on_base_name_only():
    k1 = split.row_keys(5, 10, "s3://b/data/part-0.parquet")
    k2 = split.row_keys(5, 10, "/local/copy/part-0.parquet")
    k3 = split.row_keys(5, 10, "/local/copy/part-1.parquet")
    assert np.array_equal(k1, k2) and not np.array_equal(k1, k3)


def test_bad_fractions():
    with pytest.raises(ValueError, match="sum < 1"):
        split.assign(np.arange(3), 0.5, 0.5)

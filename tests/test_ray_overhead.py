"""The Ray path's start-up cuts (docs/benchmarks.md, "Ray job overhead"): small data is scanned and
materialized on the driver with the same result as by Ray tasks; small 1-worker audit checks
train in-process."""

import numpy as np
import pytest

from tests.conftest import make_gaussian_dataset


def test_driver_read_max_values_is_validated():
    from mine_dist.distributed import RayOptions

    with pytest.raises(ValueError, match=r"driver_read_max_values must be an int >= 0; got -1"):
        RayOptions(driver_read_max_values=-1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_gaussian_dataset(tmp_path_factory, "overhead", rows=3000, shards=3)


def test_small_one_worker_checks_train_in_process(data):
    from mine_dist import audit
    from mine_dist.jobs.audit import _prepare

    check = audit.Check(name="c", data=str(data), x="x", z="z", workers=1)
    assert _prepare(check, 3000 * 6)[0].workers == 0      # 3000 rows x (3 + 3) values: small
    assert _prepare(check, 3000 * 6 - 1)[0].workers == 1  # one value more than the limit: Ray Train
    assert _prepare(audit.Check(name="c", data=str(data), x="x", z="z", workers=2), 10**9)[0].workers == 2


@pytest.mark.slow
@pytest.mark.ray
def test_driver_scan_and_materialize_equal_the_ray_tasks(data, local_ray):  # the session's Ray (conftest)
    from mine_dist import io, normalize, split
    from mine_dist.distributed.data import scan, split_dataset

    info = io.inspect(str(data), "x", "z")
    fr = (0.15, 0.15)
    a = scan(info, fr, False, sample_rows=10_000, val_rows=10_000, seed=0)
    b = scan(info, fr, False, sample_rows=10_000, val_rows=10_000, seed=0, in_driver=True)
    assert a.counts == b.counts and a.dropped == b.dropped and a.grouping == pytest.approx(b.grouping)
    # Every row is sampled at this size: the same rows, in another order (tasks finish in any order).
    for u, v in ((a.sample_x, b.sample_x), (a.val_z, b.val_z)):
        np.testing.assert_array_equal(np.sort(u, axis=0), np.sort(v, axis=0))
    nx = normalize.fit("standard", b.sample_x, "x", io.passthrough_mask(info.x))
    nz = normalize.fit("standard", b.sample_z, "z", io.passthrough_mask(info.z))
    rows = []
    for in_driver in (False, True):
        ds = split_dataset(info, split.TRAIN, *fr, False, nx, nz, shuffle_units=True, seed=0, materialize=True,
                           in_driver=in_driver)
        got = np.concatenate([np.concatenate([t["x"], t["z"]], 1) for t in ds.iter_batches(batch_size=None)])
        rows.append(np.sort(got, axis=0))
    assert rows[0].shape == (a.counts[split.TRAIN], 6) and rows[0].dtype == np.float32
    np.testing.assert_array_equal(rows[0], rows[1])

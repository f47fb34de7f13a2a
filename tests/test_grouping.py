import numpy as np

from mine_dist.distributed.data import GROUPED_BELOW, within_share


def _stats(groups):
    return [np.stack([np.full(g.shape[1], len(g), float), g.sum(0), (g**2).sum(0)]) for g in groups]


def test_random_order_is_not_grouped():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3))
    assert within_share(_stats(np.array_split(a, 20))) > 0.98


def test_sorted_rows_are_grouped():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 1))
    a = a[np.argsort(a[:, 0])]
    assert within_share(_stats(np.array_split(a, 20))) < 0.1 < GROUPED_BELOW


def test_sorted_by_one_of_four_coordinates_is_still_detected():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 4))
    a = a[np.argsort(a[:, 0])]
    assert within_share(_stats(np.array_split(a, 20))) < GROUPED_BELOW


def test_sorted_by_one_of_twenty_coordinates_is_detected():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20000, 20))
    a = a[np.argsort(a[:, 7])]
    assert within_share(_stats(np.array_split(a, 20))) < GROUPED_BELOW
    assert within_share(_stats(np.array_split(rng.normal(size=(20000, 20)), 20))) > 0.95

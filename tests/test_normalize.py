import numpy as np
import pytest

from mine_dist import normalize


def test_standard(rng):
    a = rng.normal(3.0, 2.0, size=(5000, 3))
    out = normalize.fit("standard", a).apply(a)
    assert np.allclose(out.mean(0), 0, atol=1e-4) and np.allclose(out.std(0), 1, atol=1e-3)


def test_rank_gauss_makes_heavy_tails_gaussian(rng):
    a = rng.standard_cauchy(size=(20000, 2))
    out = normalize.fit("rank-gauss", a).apply(a)
    assert np.abs(out).max() < 5.0
    assert np.allclose(out.std(0), 1, atol=0.05)
    # monotone per coordinate: the order of values is preserved
    o = np.argsort(a[:, 0])
    assert np.all(np.diff(out[o, 0]) >= 0)


def test_rank_gauss_maps_ties_equally(rng):
    a = rng.integers(0, 3, size=(1000, 1)).astype(float)
    out = normalize.fit("rank-gauss", a).apply(a)
    for v in range(3):
        assert np.ptp(out[a[:, 0] == v, 0]) == 0


def test_passthrough_columns_untouched(rng):
    a = np.c_[rng.normal(size=100), np.eye(2)[rng.integers(0, 2, 100)]]
    mask = np.array([False, True, True])
    out = normalize.fit("standard", a, passthrough=mask).apply(a)
    assert np.array_equal(out[:, 1:], a[:, 1:].astype(np.float32))


def test_constant_column_is_rejected(rng):
    a = np.c_[rng.normal(size=50), np.full(50, 4.0)]
    with pytest.raises(ValueError, match=r"x column\(s\) \[1\] are constant on the train split"):
        normalize.fit("standard", a, "x")


def test_unknown_method():
    with pytest.raises(ValueError, match="normalize must be one of"):
        normalize.fit("minmax", np.zeros((2, 1)))


@pytest.mark.parametrize("method", normalize.METHODS)
def test_blocked_apply_equals_one_block(monkeypatch, method):
    rng = np.random.default_rng(3)
    a = np.column_stack([rng.standard_t(1, 1000), rng.normal(size=1000), (rng.random(1000) < 0.3)]).astype(np.float32)
    nz = normalize.fit(method, a, passthrough=np.array([False, False, True]))
    whole = nz.apply(a)
    monkeypatch.setattr(normalize, "APPLY_BLOCK_VALUES", 21)  # 7 rows a block: 143 blocks, the last one short
    blocked = nz.apply(a)
    assert blocked.dtype == np.float32 and np.array_equal(blocked, whole)
    assert np.array_equal(blocked[:, 2], a[:, 2])  # the passthrough column is untouched
    assert nz.apply(a[:0]).shape == (0, 3)


def test_rank_gauss_lookup_equals_np_interp_bit_for_bit():
    """The grid lookup of ``Normalizer.apply`` (normalize._Lookup) gives np.interp's values exactly:
    Gaussian, float32-rounded, discrete and heavy-tailed (the np.interp fallback) columns, with
    knots, both ends, beyond them, NaN and +-inf among the inputs."""
    import torch

    from mine_dist import normalize as N

    rng = np.random.default_rng(3)
    n = 6000
    cols = [rng.standard_normal(n), rng.standard_normal(n).astype(np.float32).astype(np.float64),
            rng.integers(0, 5, n).astype(np.float64), rng.standard_cauchy(n), rng.exponential(size=n),
            rng.uniform(-1, 1, n) ** 3]
    train = np.stack(cols, axis=1)
    nz = N.fit("rank-gauss", train[:4000], "x")
    fast = [N._Lookup(v, l).inv_w is not None for v, l in nz.knots]
    assert fast[:3] == [True, True, True] and not fast[3]  # Gaussian-like: the grid; Cauchy: np.interp
    a = train.copy()
    for j, (vals, _) in enumerate(nz.knots):
        a[:8, j] = [vals[0], vals[-1], vals[len(vals) // 2], vals[0] - 1.0, vals[-1] + 1.0, np.nan, np.inf, -np.inf]
    ref = np.empty_like(a)
    for j, (vals, levels) in enumerate(nz.knots):  # the per-column np.interp it replaced
        ref[:, j] = torch.special.ndtri(torch.from_numpy(np.interp(a[:, j], vals, levels))).numpy()
    got = nz.apply(a)
    assert np.array_equal(got, ref.astype(np.float32), equal_nan=True)


def test_rank_gauss_lookup_at_bin_edges():
    """Values on and within rounding of the grid's bin edges, and knots placed on those edges,
    still give np.interp's values exactly."""
    from mine_dist import normalize as N

    rng = np.random.default_rng(4)
    vals = np.unique(np.concatenate([np.sort(rng.standard_normal(900)), [0.0]]))
    levels = np.linspace(0.01, 0.99, vals.size)
    w = (vals[-1] - vals[0]) / N.LOOKUP_BINS
    edges = vals[0] + w * np.arange(1, N.LOOKUP_BINS)
    inner = (vals > vals[0]) & (vals < vals[-1])
    vals = np.unique(np.concatenate([vals[inner][::2], edges[::37], vals[[0, -1]]]))  # knots on edges
    levels = np.linspace(0.01, 0.99, vals.size)
    t = N._Lookup(vals, levels)
    assert t.inv_w is not None
    x = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), vals,
                        np.nextafter(vals, -np.inf), np.nextafter(vals, np.inf)])
    assert np.array_equal(t.interp(x), np.interp(x, vals, levels))

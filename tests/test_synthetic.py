"""Ground-truth distributions: every truth against a Monte-Carlo estimate of
E[log p(x,z) - log p(x) - log p(z)] from the known densities, the maps' invertibility, the
registry behind ``make-data KIND``, and every error.

The Monte-Carlo check draws rows with ``sample`` (so it also checks the sampler), maps them back
to the base variables and averages the pointwise MI; the tolerance is 5 standard errors (plus the
truth's own Monte-Carlo error where it has one), so a wrong formula, a wrong constant or a sampler
that does not follow the stated density fails.
"""

import json
import math

import numpy as np
import pytest
import torch

from mine_dist import synthetic as S

N_MC = 40_000


def assert_truth_matches_mc(spec, n=N_MC, seed=1):
    truth = spec.truth()
    mc, se = spec.monte_carlo_mi(n, seed)
    tol = 5 * math.hypot(se, truth["mi_stderr_nats"])
    assert abs(mc - truth["mi_nats"]) <= tol, (spec, truth["mi_nats"], mc, se)
    assert truth["mi_bits"] == pytest.approx(truth["mi_nats"] / math.log(2))
    return truth


def test_digamma_matches_torch():
    xs = [0.05, 0.5, 1.0, 1.5, 2.5, 3.0, 5.5, 7.0, 40.0, 513.5]
    ref = torch.special.digamma(torch.tensor(xs, dtype=torch.float64)).tolist()
    assert [S._digamma(x) for x in xs] == pytest.approx(ref, abs=1e-11)


@pytest.mark.parametrize("df", [1.0, 2.0, 3.0, 4.0, 5.0])
@pytest.mark.parametrize("dims", [(1, 1), (3, 2), (5, 5)])
def test_student_t_closed_form_vs_monte_carlo(df, dims):
    truth = assert_truth_matches_mc(S.PairSpec(*dims, df=df, rho=0.0))
    assert truth["mi_nats"] > 0  # identity dispersion: dependent through the shared scale only


@pytest.mark.parametrize("spec", [
    S.PairSpec(5, 5, rho=0.6, df=1.0, maps="asinh"),
    S.PairSpec(4, 6, structure="dense", rho=0.3, df=2.5, maps="halfcube"),
    S.PairSpec(3, 3, pairs=1, rho=-0.7, df=4.0),
], ids=repr)
def test_student_t_with_dispersion_and_maps(spec):
    truth = assert_truth_matches_mc(spec)
    gauss = S.gaussian_cov_mi(spec.covariance(), spec.dim_x)
    assert truth["mi_nats"] == pytest.approx(gauss + S.student_t_term(spec.df, spec.dim_x, spec.dim_z))


@pytest.mark.parametrize("spec", [
    S.PairSpec(5, 5, rho=0.8, maps="spiral"),
    S.PairSpec(25, 25, pairs=2, rho=0.8, maps="halfcube"),
    S.PairSpec(3, 3, structure="dense", rho=0.5, maps="normcdf"),
    S.PairSpec(2, 4, structure="dense", rho=-0.15, maps="asinh"),
    S.PairSpec(5, 5, rho=0.7, maps="halfcube,spiral,asinh"),
    S.PairSpec(1, 1, rho=0.9, maps="cubic,exp"),
    S.PairSpec(2, 2, rho=0.5, maps="cauchy"),
], ids=repr)
def test_mapped_gaussian_closed_form_vs_monte_carlo(spec):
    assert_truth_matches_mc(spec)


def test_sparse_truth_is_the_per_coordinate_formula():
    spec = S.PairSpec(7, 9, pairs=4, rho=0.6)
    assert spec.truth()["mi_nats"] == pytest.approx(S.gaussian_mi(4, 0.6), abs=1e-12)


@pytest.mark.parametrize("dims, mi, structure", [((5, 5), 8.0, "sparse"), ((25, 25), 6.0, "sparse"),
                                                 ((5, 5), 5.0, "dense"), ((25, 25), 10.0, "dense")])
def test_high_mi_by_target(dims, mi, structure):
    spec = S.make_spec("mapped", dim_x=dims[0], dim_z=dims[1], structure=structure, mi=mi)
    truth = assert_truth_matches_mc(spec, n=20_000)
    assert truth["mi_nats"] == pytest.approx(mi, abs=1e-6)


def test_student_mi_target_includes_the_t_term():
    spec = S.make_spec("student", dim_x=5, dim_z=5, df=1, mi=3.0, maps="asinh")
    assert spec.truth()["mi_nats"] == pytest.approx(3.0, abs=1e-9)
    assert_truth_matches_mc(spec)


@pytest.mark.parametrize("noise", [0.05, 0.3, 0.5, 0.75, 2.0])
@pytest.mark.parametrize("dim", [1, 2])
def test_additive_noise_closed_form_vs_monte_carlo(noise, dim):
    truth = assert_truth_matches_mc(S.AdditiveNoiseSpec(dim, noise))
    assert truth["mi_nats"] == pytest.approx(dim * S.additive_noise_mi(noise))


def test_additive_noise_formula_is_continuous_at_one_half():
    assert S.additive_noise_mi(0.5) == pytest.approx(0.5)
    assert S.additive_noise_mi(0.5 - 1e-9) == pytest.approx(S.additive_noise_mi(0.5 + 1e-9), abs=1e-8)


@pytest.mark.parametrize("spec", [
    S.EmbeddingSpec(16, 12, latent=3, rho=0.8),
    S.EmbeddingSpec(64, 64, latent=2, rho=0.9, maps="spiral,asinh", rotation_seed=5),
    S.EmbeddingSpec(32, latent=5, classes=5, sep=2.0, maps="halfcube"),
], ids=repr)
def test_embedding_truth_vs_monte_carlo_through_the_rotation(spec):
    assert_truth_matches_mc(spec, n=20_000)


def test_embedding_mixes_every_coordinate_and_keeps_mi():
    spec = S.make_spec("embedding", dim_x=32, dim_z=32, latent=2, rho=0.9)
    x, z = spec.sample(20_000, np.random.default_rng(0))
    assert x.shape == (20_000, 32) and z.shape == (20_000, 32)
    q = S.random_rotation(32, 0)
    np.testing.assert_allclose(q @ q.T, np.eye(32), atol=1e-12)
    # no single coordinate carries the latent signal, but the canonical correlations are the latent's
    c = np.corrcoef(x.T, z.T)
    assert np.abs(c[:32, 32:]).max() < 0.5
    wx, wz = (np.linalg.inv(np.linalg.cholesky(c[s, s])) for s in (slice(0, 32), slice(32, 64)))
    canon = np.linalg.svd(wx @ c[:32, 32:] @ wz.T, compute_uv=False)
    np.testing.assert_allclose(canon[:2], 0.9, atol=0.01)
    assert canon[2] < 0.1
    assert spec.truth()["mi_nats"] == pytest.approx(S.gaussian_mi(2, 0.9))


def test_categorical_embedding_is_below_entropy_and_labels_are_ints():
    spec = S.make_spec("embedding-categorical", dim_x=20, latent=4, classes=4, sep=3.0)
    x, z = spec.sample(100, np.random.default_rng(0))
    assert x.shape == (100, 20) and z.dtype == np.int64 and set(z) <= set(range(4))
    truth = spec.truth(mc_samples=50_000)
    assert 0 < truth["mi_nats"] < math.log(4) and truth["mi_stderr_nats"] > 0
    assert "dim_z" not in truth["parameters"] and "rho" not in truth["parameters"]


@pytest.mark.parametrize("maps", list(S.MAPS) + ["spiral,halfcube,asinh,normcdf"])
def test_maps_are_invertible(maps):
    v = np.random.default_rng(0).standard_normal((2000, 4)) * 1.5
    back = S.apply_maps(S.apply_maps(v, maps), maps, inverse=True)
    np.testing.assert_allclose(back, v, rtol=1e-6, atol=1e-6)


def test_spiral_rotates_by_an_angle_growing_with_the_radius():
    v = np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    out = S.apply_maps(v, "spiral", speed=0.5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), [1.0, 2.0])
    np.testing.assert_allclose(np.arctan2(out[:, 1], out[:, 0]), [0.5, 2.0], atol=1e-12)


# ----------------------------------------------------------------------------- registry


def test_every_kind_builds_with_its_defaults_and_samples():
    for name, kind in S.KINDS.items():
        spec = S.make_spec(name)
        assert spec.kind == name
        x, z = spec.sample(7, np.random.default_rng(0))
        assert x.shape[0] == z.shape[0] == 7
        truth = spec.truth(**({"mc_samples": 2000} if name in ("mixture", "embedding-categorical") else {}))
        assert math.isfinite(truth["mi_nats"]) and truth["mi_nats"] >= 0
        assert truth["distribution"]["kind"] == name and truth["formula"] and isinstance(truth["parameters"], dict)
        assert kind.help and all(p.help for p in kind.params)


def test_parameter_names_have_one_type_across_kinds():
    # so a command line can declare one typed option per name
    types = {}
    for kind in S.KINDS.values():
        for p in kind.params:
            assert types.setdefault(p.name, p.type) is p.type, p.name
            assert p.default is None or isinstance(p.default, p.type)


def test_param_options_cover_every_kind_once_per_name():
    opts = {p.name: p for p in S.param_options()}
    assert len(opts) == len(S.param_options())
    for kind in S.KINDS.values():
        for p in kind.params:
            assert opts[p.name].type is p.type and opts[p.name].default is None
            assert kind.name in opts[p.name].help
    assert "dim_x" in opts and opts["structure"].choices == S.STRUCTURES


def test_make_spec_keeps_the_original_kinds_identical():
    for kind, kw in [("gaussian", dict(dim=3, rho=0.5, transform="cauchy")), ("independent", dict(dim=2)),
                     ("mixture", dict(dim=6, classes=3, sep=1.5, transform="cubic"))]:
        assert S.make_spec(kind, **kw) == S.Spec(kind=kind, **kw)


def test_make_spec_ignores_none_and_coerces_ints_to_floats():
    spec = S.make_spec("student", dim_x=2, dim_z=2, df=3, rho=None, mi=None, maps=None)
    assert spec == S.PairSpec(2, 2, df=3.0, rho=0.0)
    assert isinstance(spec.df, float)


def test_parse_params():
    p = S.parse_params("mapped", ["dim-x=3", "dim_z = 4", "maps=spiral,asinh", "mi=2.5"])
    assert p == {"dim_x": 3, "dim_z": 4, "maps": "spiral,asinh", "mi": 2.5}
    assert S.make_spec("mapped", **p).truth()["mi_nats"] == pytest.approx(2.5)


def test_write_dataset_records_the_truth_and_reads_back(tmp_path):
    from mine_dist import io

    spec = S.make_spec("embedding-categorical", dim_x=12, latent=3, classes=3)
    truth = S.write_dataset(spec, 300, 2, str(tmp_path / "d"), seed=4)
    on_disk = json.loads((tmp_path / "d" / "ground_truth.json").read_text())
    assert on_disk == json.loads(json.dumps(truth))
    for key in ("mi_nats", "mi_bits", "formula", "parameters", "distribution", "mi_stderr_nats", "rows", "seed"):
        assert key in on_disk
    info = io.inspect(str(tmp_path / "d"), "x", "z")
    assert info.rows == 300 and info.x.dim == 12 and info.z.kind == "categorical"


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("build, match", [
    (lambda: S.make_spec("nope"), r"kind must be one of \['gaussian'"),
    (lambda: S.make_spec("gaussian", df=3.0), r"kind 'gaussian' has no parameter 'df'"),
    (lambda: S.make_spec("student", df="3"), r"student parameter df must be float; got '3'"),
    (lambda: S.make_spec("mapped", dim_x=2.0), r"mapped parameter dim_x must be int; got 2.0"),
    (lambda: S.make_spec("mapped", dim_x=True), r"mapped parameter dim_x must be int; got True"),
    (lambda: S.make_spec("mapped", structure="banded"), r"structure must be one of \('sparse', 'dense'\)"),
    (lambda: S.make_spec("mapped", rho=0.5, mi=1.0), r"give rho or mi, not both"),
    (lambda: S.make_spec("mapped", mi=-1.0), r"mi must be a finite number > 0; got -1.0"),
    (lambda: S.make_spec("student", df=1.0, dim_x=5, dim_z=5, mi=0.1), r"mi must exceed the Student-t term"),
    (lambda: S.make_spec("embedding", rho=0.5, mi=1.0), r"give rho or mi, not both"),
    (lambda: S.parse_params("nope", []), r"kind must be one of"),
    (lambda: S.parse_params("mapped", ["dim_x"]), r"a parameter must be NAME=VALUE; got 'dim_x'"),
    (lambda: S.parse_params("mapped", ["dim_x=2.5"]), r"mapped parameter dim_x must be int; got '2.5'"),
    (lambda: S.parse_params("mapped", ["depth=2"]), r"kind 'mapped' has no parameter 'depth'"),
    (lambda: S.PairSpec(0, 3), r"dim_x must be an int >= 1; got 0"),
    (lambda: S.PairSpec(3, 3, structure="dense", pairs=1), r"pairs applies to the sparse structure only"),
    (lambda: S.PairSpec(3, 2, pairs=3), r"pairs must be <= min\(dim_x, dim_z\) = 2; got 3"),
    (lambda: S.PairSpec(3, 3, rho=1.0), r"rho must be in \(-1, 1\); got 1.0"),
    (lambda: S.PairSpec(3, 3, structure="dense", rho=-0.4), r"dense rho must be in \(-0.2, 1\) for 6 coordinates"),
    (lambda: S.PairSpec(3, 3, df=0.0), r"df must be a finite number > 0; got 0.0"),
    (lambda: S.PairSpec(3, 3, speed=float("nan")), r"speed must be a finite number; got nan"),
    (lambda: S.PairSpec(1, 3, maps="spiral"), r"spiral map rotates a plane and needs >= 2 dimensions; got \{'dim_x': 1\}"),
    (lambda: S.PairSpec(3, 3, maps="swirl"), r"maps must be 'none' or a comma list of .*; got 'swirl'"),
    (lambda: S.PairSpec(3, 3, maps=","), r"maps must be 'none' or a comma list"),
    (lambda: S.PairSpec(3, 3, maps=None), r"maps must be a string"),
    (lambda: S.AdditiveNoiseSpec(1, 0.0), r"noise must be a finite number > 0; got 0.0"),
    (lambda: S.AdditiveNoiseSpec(0, 0.1), r"dim must be an int >= 1; got 0"),
    (lambda: S.EmbeddingSpec(3, 8, latent=4), r"dim_x must be an int >= 4; got 3"),
    (lambda: S.EmbeddingSpec(8, 3, latent=4), r"dim_z must be an int >= 4; got 3"),
    (lambda: S.EmbeddingSpec(8, latent=0), r"latent must be an int >= 1; got 0"),
    (lambda: S.EmbeddingSpec(8, latent=2, classes=3), r"needs classes <= latent .*; got classes=3, latent=2"),
    (lambda: S.EmbeddingSpec(8, latent=2, classes=1), r"classes must be an int >= 2; got 1"),
    (lambda: S.EmbeddingSpec(8, latent=2, classes=2, sep=float("inf")), r"sep must be a finite number; got inf"),
    (lambda: S.EmbeddingSpec(8, latent=1, classes=0, maps="spiral"), r"needs >= 2 dimensions"),
    (lambda: S.EmbeddingSpec(8, latent=2, classes=2, maps="twist"), r"maps must be 'none' or a comma list"),
    (lambda: S.EmbeddingSpec(8, latent=3, classes=2, maps="spiral", rotation_seed=-1), r"rotation_seed must be an int >= 0"),
    (lambda: S.solve_rho(float("inf"), 2, 2, "sparse"), r"mi must be a finite number > 0; got inf"),
])
def test_errors_name_the_parameter_and_value(build, match):
    with pytest.raises(ValueError, match=match):
        build()

import pytest
import torch

from mine_dist.critics import CriticConfig, build_critic, derangement


def test_derangement_is_a_permutation_without_fixed_points():
    g = torch.Generator().manual_seed(0)
    for b in (2, 3, 17, 256):
        d = derangement(b, g)
        assert sorted(d.tolist()) == list(range(b))
        assert not (d == torch.arange(b)).any()


def test_derangement_needs_two():
    with pytest.raises(ValueError, match="b >= 2"):
        derangement(1)


def test_joint_critic_scores_agree_across_paths():
    torch.manual_seed(0)
    c = build_critic(3, 2, CriticConfig(width=16, depth=2))
    x, z = torch.randn(5, 3), torch.randn(5, 2)
    perm = derangement(5, torch.Generator().manual_seed(1))
    tj, tm, s = c(x, z, marg_index=perm)
    assert s is None and tj.shape == (5,) and tm.shape == (5,)
    torch.testing.assert_close(tj, c.pairs(x, z))
    torch.testing.assert_close(tm, c.pairs(x, z[perm]))
    tj2, tm2, s2 = c(x, z, matrix=True)
    assert s2.shape == (5, 5) and tm2.shape == (20,)
    torch.testing.assert_close(tj2, tj)
    torch.testing.assert_close(s2[0, perm[0]], tm[0])


def test_joint_critic_needs_pairs_or_matrix():
    c = build_critic(1, 1, CriticConfig(width=4, depth=1))
    with pytest.raises(ValueError, match="needs marg_index"):
        c(torch.zeros(2, 1), torch.zeros(2, 1))


def test_separable_critic_matrix():
    torch.manual_seed(0)
    c = build_critic(3, 4, CriticConfig(kind="separable", width=8, depth=1, embed_dim=5))
    x, z = torch.randn(6, 3), torch.randn(6, 4)
    tj, tm, s = c(x, z)
    torch.testing.assert_close(s, c.f(x) @ c.g(z).T)
    torch.testing.assert_close(tj, s.diagonal())
    assert tm.shape == (30,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "conv"}, "critic kind must be one of"),
        ({"width": 0}, "critic width must be an int >= 1; got 0"),
        ({"depth": 1.5}, "critic depth must be an int >= 1"),
        ({"activation": "swish"}, "critic activation must be one of"),
        ({"embed_dim": -1}, "critic embed_dim must be an int >= 1"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CriticConfig(**kwargs)


def test_bad_input_dim():
    with pytest.raises(ValueError, match="critic input dimension dz must be an int >= 1"):
        build_critic(3, 0, CriticConfig())


def test_integer_shift_is_a_cyclic_derangement():
    torch.manual_seed(0)
    c = build_critic(2, 2, CriticConfig(width=8, depth=1))
    x, z = torch.randn(6, 2), torch.randn(6, 2)
    _, tm, _ = c(x, z, marg_index=2)
    torch.testing.assert_close(tm, c.pairs(x, torch.roll(z, 2, 0)))


def test_quadratic_path_adds_a_quadratic_form_of_concat_x_z():
    torch.manual_seed(0)
    c = build_critic(2, 1, CriticConfig(width=8, quadratic=2))
    x, z = torch.randn(5, 2), torch.randn(5, 1)
    v = torch.cat([x, z], 1)
    assert c.quad.r == 2 and c.quad.proj.weight.shape == (4, 3)
    mlp = c.net(v).squeeze(-1)
    assert torch.allclose(c.pairs(x, z), mlp, atol=1e-3)  # started near 0: the MLP alone at first
    a, b = torch.tensor([[1.0, 0, 2], [0, 1, 0]]), torch.tensor([[0, 0, 1.0], [1, 1, 0]])
    with torch.no_grad():
        c.quad.proj.weight.copy_(torch.cat([a, b]))
    want = mlp + (v @ a.T).square().sum(1) - (v @ b.T).square().sum(1)
    assert torch.allclose(c.pairs(x, z), want, atol=1e-5)
    tj, tm, _ = c(x, z, marg_index=1)  # the training forward goes through the same score
    assert torch.allclose(tj, want, atol=1e-5)
    assert build_critic(2, 1, CriticConfig(quadratic=9)).quad.r == 3  # rank capped at dim(v)
    with pytest.raises(ValueError, match=r"critic quadratic must be an int >= 0 \(a rank; 0 turns it off\); got -1"):
        CriticConfig(quadratic=-1)


def test_auto_width_is_wide_only_for_an_mlp_that_works_alone():
    """width auto (docs/benchmarks.md, part 4): 256 only for wide inputs of a joint critic without
    the CCA path or a separable critic; the CCA joint critic and the classifier stay at 128."""
    assert CriticConfig().sized(5, 5).width == 128
    assert CriticConfig().sized(50, 50).width == 128  # joint with cca (the default)
    assert CriticConfig(cca=False).sized(50, 50).width == 256
    assert CriticConfig(cca=False).sized(10, 10).width == 128
    assert CriticConfig(kind="classifier").sized(256, 10).width == 128
    assert CriticConfig(kind="separable").sized(256, 256).width == 256
    assert CriticConfig(width=64, cca=False).sized(50, 50).width == 64  # an explicit width is kept

"""mine_dist.objective: the MI term's gradient, state, DDP equivalence, clipping, and the examples."""

import copy
import importlib.util
import io
import json
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from mine_dist import bounds
from mine_dist.critics import CriticConfig, derangement
from mine_dist.objective import (
    MutualInformation,
    ObjectiveConfig,
    adaptive_clip,
    backward_with_adaptive_clip,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DX, DZ, B, RATE = 3, 2, 8, 0.3


def _module(bound="mine", seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ObjectiveConfig(bound=bound, critic=CriticConfig(width=8, depth=1, activation="tanh"), lr=0.05,
                          ema_rate=RATE, **kw)
    return MutualInformation(DX, DZ, cfg).double()


def _batch(seed, n=B):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, DX, generator=g, dtype=torch.float64)
    return x, 0.7 * x[:, :DZ] + torch.randn(n, DZ, generator=g, dtype=torch.float64)


def _per_score_grads(critic, x, z, marg):
    """Scores and, for each score separately, its gradient w.r.t. every parameter and w.r.t. z
    (by one autograd call per score: no vectorized formula shared with the code under test)."""
    z = z.clone().requires_grad_(True)
    params = list(critic.parameters())
    out = []
    for xi, zi in [(x[i], z[i]) for i in range(B)] + [(x[i], z[marg[i]]) for i in range(B)]:
        t = critic.net(torch.cat([xi, zi])).squeeze()
        *gp, gz = torch.autograd.grad(t, params + [z])
        out.append((float(t.detach()), gp, gz))
    return out[:B], out[B:]


# ----------------------------------------------------------------------------- gradient by hand


def test_gradients_equal_the_hand_computed_bias_corrected_gradient():
    mi = _module()
    marg = derangement(B, torch.Generator().manual_seed(5))
    (x1, z1), (x2, z2) = _batch(1), _batch(2)
    theta0 = copy.deepcopy(mi.critic)
    mi(x1, z1, marg_index=marg)
    theta1 = copy.deepcopy(mi.critic)
    z2 = z2.clone().requires_grad_(True)
    term = mi(x2, z2, marg_index=marg)
    term.backward()

    # The EMA by hand: debiased (1-a) a m1 + a m2 over 1 - (1-a)^2, m_k = mean exp(T_marg) at step k.
    m = [sum(math.exp(t) for t, _, _ in _per_score_grads(c, x, z, marg)[1]) / B
         for c, (x, z) in ((theta0, (x1, z1)), (theta1, (x2, z2.detach())))]
    ema = ((1 - RATE) * RATE * m[0] + RATE * m[1]) / (1 - (1 - RATE) ** 2)
    assert mi.ema.count == 2 and math.exp(mi.ema.log_value) / (1 - (1 - RATE) ** 2) == pytest.approx(ema, rel=1e-12)

    # Critic step 2 (at theta1): grad of -(E[dT_joint] - E[e^T dT_marg] / ema).
    joint, margs = _per_score_grads(theta1, x2, z2.detach(), marg)
    for k, p in enumerate(mi.critic.parameters()):
        hand = sum(gp[k] for _, gp, _ in joint) / B - sum(math.exp(t) * gp[k] for t, gp, _ in margs) / (B * ema)
        torch.testing.assert_close(p.grad, -hand, rtol=1e-10, atol=1e-12)

    # The returned term at the updated critic: value DV, gradient w.r.t. z bias-corrected.
    joint, margs = _per_score_grads(mi.critic, x2, z2.detach(), marg)
    tj = torch.tensor([t for t, _, _ in joint], dtype=torch.float64)
    tm = torch.tensor([t for t, _, _ in margs], dtype=torch.float64)
    assert float(term.detach()) == pytest.approx(float(bounds.dv(tj, tm)), rel=1e-12)
    hand_z = sum(gz for _, _, gz in joint) / B - sum(math.exp(t) * gz for t, _, gz in margs) / (B * ema)
    torch.testing.assert_close(z2.grad, hand_z, rtol=1e-10, atol=1e-12)
    assert z2.grad.abs().max() > 1e-3  # not vacuous
    pre = [torch.tensor([t for t, _, _ in s], dtype=torch.float64) for s in _per_score_grads(theta1, x2, z2.detach(), marg)]
    assert mi.critic_bound == pytest.approx(float(bounds.dv(*pre)), rel=1e-12)  # the batch bound before the step


def test_nwj_term_has_the_nwj_value_and_gradient():
    mi = _module("mine-f")
    marg = derangement(B, torch.Generator().manual_seed(5))
    x, z = _batch(3)
    z = z.clone().requires_grad_(True)
    term = mi(x, z, marg_index=marg)
    term.backward()
    ref = copy.deepcopy(mi.critic)
    z_ref = z.detach().clone().requires_grad_(True)
    tj, tm, _ = ref(x, z_ref, marg_index=marg)
    expected = bounds.nwj(tj, tm)
    expected.backward()
    assert float(term.detach()) == pytest.approx(float(expected.detach()), rel=1e-12)
    torch.testing.assert_close(z.grad, z_ref.grad)
    assert mi.ema.count == 0  # NWJ keeps no moving average


def test_critic_steps_equal_repeated_calls_on_the_same_batch():
    x, z = _batch(8)
    many, one = _module(critic_steps=3), _module()
    v_many = many(x, z, marg_index=2)
    for _ in range(3):
        v_one = one(x, z, marg_index=2)
    assert many.ema == one.ema and many.ema.count == 3
    assert float(v_many) == pytest.approx(float(v_one), rel=1e-12)
    for p, q in zip(many.critic.parameters(), one.critic.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_eval_mode_updates_nothing_and_reads_the_batch_bound():
    mi = _module()
    x, z = _batch(4)
    before = [p.detach().clone() for p in mi.critic.parameters()]
    mi.eval()
    with torch.no_grad():
        v = mi(x, z, marg_index=1)
    tj, tm, _ = mi.critic(x, z, marg_index=1)
    assert float(v) == pytest.approx(float(bounds.dv(tj, tm).detach()), rel=1e-12)
    assert mi.ema.count == 0 and all(torch.equal(a, b) for a, b in zip(before, mi.critic.parameters()))


def test_separable_critic_uses_every_off_diagonal_pair():
    torch.manual_seed(0)
    mi = MutualInformation(DX, DZ, ObjectiveConfig(critic=CriticConfig(kind="separable", width=8, depth=1))).double()
    x, z = _batch(6)
    mi.eval()
    with torch.no_grad():
        v = mi(x, z)
        s = mi.critic.f(x) @ mi.critic.g(z).T
    assert float(v) == pytest.approx(float(bounds.dv(s.diagonal(), bounds.offdiagonal(s))), rel=1e-12)


def test_critic_learns_a_correlated_gaussian():
    torch.manual_seed(0)
    mi = MutualInformation(2, 2, ObjectiveConfig(lr=1e-3, critic=CriticConfig(width=32, depth=1)))
    g = torch.Generator().manual_seed(0)
    for _ in range(600):
        x = torch.randn(128, 2, generator=g)
        vals = mi(x, 0.8 * x + 0.6 * torch.randn(128, 2, generator=g))
    assert 0.4 < float(vals) < 1.0 + 0.5  # truth -ln(1 - 0.64) = 1.02 nats; a lower bound, noisy on 128 rows


# ----------------------------------------------------------------------------- state


def test_state_dict_round_trip_keeps_ema_optimizer_and_rng():
    a = _module()
    for s in range(3):
        a(*_batch(s))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = _module(seed=99)  # other initial weights, fresh EMA, RNG and optimizer
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert b.ema == a.ema and b.ema.count == 3 and math.isfinite(b.ema.log_value)
    x, z = _batch(7)
    va, vb = a(x, z), b(x, z)  # negatives drawn from the restored RNG, Adam from its restored moments
    assert float(va) == float(vb) and a.ema == b.ema
    for p, q in zip(a.critic.parameters(), b.critic.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_state_dict_from_another_config_is_refused():
    sd = _module().state_dict()
    with pytest.raises(ValueError, match="state_dict was saved with config"):
        _module(seed=1, bound="mine-f").load_state_dict(sd)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kw, match", [
    ({"bound": "infonce"}, r"bound must be one of \('mine', 'mine-f'\); got 'infonce'"),
    ({"critic": 3}, "critic must be a CriticConfig; got int"),
    ({"lr": 0.0}, "lr must be a finite number > 0; got 0.0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0; got nan"),
    ({"ema_rate": 1.5}, r"ema_rate must be in \(0, 1\]; got 1.5"),
    ({"seed": -1}, "seed must be an int >= 0; got -1"),
    ({"critic_steps": 0}, "critic_steps must be an int >= 1; got 0"),
])
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        ObjectiveConfig(**kw)


def test_config_accepts_a_critic_dict():
    assert ObjectiveConfig(critic={"width": 4}).critic == CriticConfig(width=4)


def test_input_errors():
    mi = _module()
    x, z = _batch(0)
    with pytest.raises(ValueError, match=r"x and z must be \(B, 3\) and \(B, 2\) with the same B; got \(8, 3\) and \(7, 2\)"):
        mi(x, z[:7])
    with pytest.raises(ValueError, match="batch must have at least 2 rows .*; got 1"):
        mi(x[:1], z[:1])


def test_training_call_without_gradients_raises():
    with pytest.raises(RuntimeError, match=r"needs gradients enabled; call .eval\(\) first"):
        with torch.no_grad():
            _module()(*_batch(0))


def test_diverged_scores_raise():
    mi = _module().eval()
    x, z = _batch(0)
    x[0, 0] = math.nan
    with pytest.raises(FloatingPointError, match="critic scores diverged"):
        mi(x, z)


# ----------------------------------------------------------------------------- adaptive clipping


def test_adaptive_clip_never_exceeds_the_bound():
    g = torch.Generator().manual_seed(0)
    clipped = 0
    for trial in range(200):
        shapes = [(3, 4), (4,), (2, 2, 2)][: 1 + trial % 3]
        mi_g = [torch.randn(s, generator=g, dtype=torch.float64) * 10 ** float(torch.randn(1, generator=g) * 2) for s in shapes]
        main_g = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
        factor = [0.1, 1.0, 3.0][trial % 3]
        out = adaptive_clip(mi_g, main_g, factor)
        norm = lambda gs: float(torch.sqrt(sum((t**2).sum() for t in gs)))  # noqa: E731
        assert norm(out) <= factor * norm(main_g) * (1 + 1e-12) or norm(out) == pytest.approx(norm(mi_g))
        assert norm(out) <= norm(mi_g) * (1 + 1e-12)  # never raises the MI gradient's own norm either
        if norm(mi_g) > factor * norm(main_g):
            clipped += 1
            assert norm(out) == pytest.approx(factor * norm(main_g), rel=1e-12)
            cos = sum((a * b).sum() for a, b in zip(out, mi_g)) / (norm(out) * norm(mi_g))
            assert float(cos) == pytest.approx(1.0, abs=1e-12)  # direction kept
        else:
            assert all(torch.equal(a, b) for a, b in zip(out, mi_g))
    assert 20 < clipped < 180  # both branches exercised


def test_backward_with_adaptive_clip_sets_the_combined_gradient():
    w = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    main = (w**2).sum()            # grad (2, 4), norm sqrt(20); v unused
    mi_loss = 100 * (w.sum() + v.sum())  # grad 100 * (1, 1, 1), norm 100 sqrt(3)
    backward_with_adaptive_clip(main, mi_loss, [w, v], factor=0.5)
    scale = 0.5 * math.sqrt(20) / (100 * math.sqrt(3))
    torch.testing.assert_close(w.grad, torch.tensor([2.0, 4.0], dtype=torch.float64) + 100 * scale)
    torch.testing.assert_close(v.grad, torch.tensor([100 * scale], dtype=torch.float64))


def test_adaptive_clip_errors():
    with pytest.raises(ValueError, match="factor must be a finite number > 0; got 0"):
        adaptive_clip([torch.ones(2)], [torch.ones(2)], 0)
    with pytest.raises(ValueError, match=r"mi_grads and main_grads must have the same shapes; got \[\(2,\)\] and \[\(3,\)\]"):
        adaptive_clip([torch.ones(2)], [torch.ones(3)])
    assert adaptive_clip([], []) == []


# ----------------------------------------------------------------------------- DDP


WORLD, DDP_STEPS = 2, 4


def _ddp_data():
    g = torch.Generator().manual_seed(123)
    return [torch.randn(WORLD * B, DX, generator=g, dtype=torch.float64) for _ in range(DDP_STEPS)]


def _ddp_perms():
    gens = [torch.Generator().manual_seed(1000 + r) for r in range(WORLD)]
    return [[derangement(B, gens[r]) for r in range(WORLD)] for _ in range(DDP_STEPS)]


def _ddp_parts(bound, collective):
    """Encoder and MI term, identically initialized on every process."""
    from mine_dist.sync import LOCAL

    torch.manual_seed(0)
    enc = torch.nn.Linear(DX, DZ).double()
    cfg = ObjectiveConfig(bound=bound, critic=CriticConfig(width=16, depth=2), lr=1e-2, ema_rate=RATE)
    return enc, MutualInformation(DX, DZ, cfg, collective=collective or LOCAL).double()


def _ddp_run(bound, enc, mi, rows, marg):
    """DDP_STEPS steps of an Information-Bottleneck-like encoder: loss = mean(z^2 - x0 z0) + 0.5 * I(X; Z)."""
    opt = torch.optim.Adam(enc.parameters(), lr=1e-2)
    values = []
    for s, x in enumerate(_ddp_data()):
        x = x[rows]
        z = enc(x)
        term = mi(x, z, marg_index=marg(s))
        loss = (z**2 - x[:, :1] * z[:, :1]).mean() + 0.5 * term
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(float(term.detach()))
    bare = enc.module if hasattr(enc, "module") else enc
    return {"enc": [p.detach().clone() for p in bare.parameters()],
            "critic": [p.detach().clone() for p in mi.critic.parameters()],
            "ema": tuple(mi.ema), "values": values}


def _ddp_rank_main(rank, init_file, out):
    from mine_dist.sync import TorchDistributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    res = {}
    for bound in ("mine", "mine-f"):
        enc, mi = _ddp_parts(bound, TorchDistributed())
        perms = _ddp_perms()
        res[bound] = _ddp_run(bound, DistributedDataParallel(enc), mi, slice(rank * B, (rank + 1) * B),
                              lambda s: perms[s][rank])
    torch.save(res, f"{out}.{rank}")
    # Both ranks done before either tears down: a rank that exits while the other's gloo
    # threads still talk to it can abort the other (SIGABRT, "terminate called without an active
    # exception"; seen once in a full run).
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_double_batch(tmp_path):
    out = str(tmp_path / "res")
    mp.start_processes(_ddp_rank_main, args=(str(tmp_path / "init"), out), nprocs=WORLD, start_method="spawn")
    perms = _ddp_perms()
    for bound in ("mine", "mine-f"):
        enc0, _ = _ddp_parts(bound, None)
        ref = _ddp_run(bound, *_ddp_parts(bound, None), slice(None),
                       lambda s: torch.cat([perms[s][r] + r * B for r in range(WORLD)]))
        assert max((a - b).abs().max().item() for a, b in zip(ref["enc"], enc0.parameters())) > 1e-3  # moved
        for r in range(WORLD):
            got = torch.load(f"{out}.{r}", weights_only=True)[bound]
            for key in ("enc", "critic"):
                for a, b in zip(got[key], ref[key]):
                    torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
            assert got["values"] == pytest.approx(ref["values"], abs=1e-9)
            assert got["ema"][1] == ref["ema"][1] == (DDP_STEPS if bound == "mine" else 0)
            if bound == "mine":
                assert got["ema"][0] == pytest.approx(ref["ema"][0], abs=1e-9)


# ----------------------------------------------------------------------------- examples
# (That mine_dist.objective imports no Ray is checked by tests/test_cli.py: `import mine_dist` imports it.)


def _example(name):
    path = os.path.join(ROOT, "examples", name, "run.py")
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gan_modes_example_short_run(tmp_path):
    res = _example("gan_modes").main(["--steps", "10", "--seeds", "2", "--samples", "300", "--width", "8",
                                      "--out", str(tmp_path)])
    assert len(res["runs"]) == 4 and {r["beta"] for r in res["runs"]} == {0.0, 1.0}
    for r in res["runs"]:
        assert 0 <= r["modes"] <= 25 and 0.0 <= r["high_quality"] <= 1.0
        assert r["beta"] == 0.0 or math.isfinite(r["mi_nats_last_500"])
    for s in res["summary"].values():
        assert all(math.isfinite(v) for m in s.values() for v in m.values())
    assert json.loads((tmp_path / "results.json").read_text())["summary"] == res["summary"]
    assert (tmp_path / "gan_modes.png").stat().st_size > 10_000


def test_gan_mode_metrics_count_modes_and_quality():
    mod = _example("gan_modes")
    g = torch.Generator().manual_seed(0)
    on_modes = mod.MODES[:3].repeat(30, 1) + 0.01 * torch.randn(90, 2, generator=g)  # 3 modes, 30 each
    far = torch.full((10, 2), 1.0)  # between modes: low quality
    m = mod.mode_metrics(torch.cat([on_modes, far]))
    assert m["modes"] == 3 and m["high_quality"] == pytest.approx(0.9)


def test_info_bottleneck_example_short_run(tmp_path):
    res = _example("info_bottleneck").main(["--epochs", "2", "--eval-every", "1", "--seeds", "2", "--betas", "0.1",
                                            "--width", "16", "--critic-width", "8", "--k", "4",
                                            "--final-critic-steps", "5",
                                            "--out", str(tmp_path)])
    assert {r["variant"] for r in res["runs"]} == {"deterministic", "stochastic", "beta=0.1"}
    for r in res["runs"]:
        assert len(r["curve"]) == 2 and 0.0 <= r["test_error"] <= 1.0
        assert all(math.isfinite(r[k]) for k in ("izy_nats", "ixz_online_nats", "ixz_final_nats"))
        assert r["izy_nats"] <= math.log(10) + 1e-6  # a lower bound of I(Z;Y) <= H(Y) <= log 10
    for s in res["summary"].values():
        assert all(math.isfinite(v) for m in s.values() for v in m.values())
    assert (tmp_path / "info_plane.png").stat().st_size > 10_000


def test_info_bottleneck_split_is_fixed_and_stratified():
    x_tr, y_tr, x_te, y_te = _example("info_bottleneck").load_digits()
    assert x_tr.shape == (1297, 64) and x_te.shape == (500, 64) and float(x_tr.max()) == 1.0
    assert torch.bincount(y_te).tolist() == [50] * 10

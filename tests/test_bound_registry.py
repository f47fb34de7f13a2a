"""One registry entry per bound: the torch value trained on a batch and the numpy held-out readout
agree on the same scores, for every bound the registry holds."""

import math

import numpy as np
import pytest
import torch

from mine_dist import bounds as B
from mine_dist.estimator import EstimatorConfig, bound_from_scores, marginal_ess


def _scores(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, n, generator=g, dtype=torch.float64) + 2.0 * torch.eye(n, dtype=torch.float64)
    return s


@pytest.mark.parametrize("name", B.BOUNDS)
def test_torch_value_and_held_out_readout_agree(name):
    b = B.spec(name)
    if b.readout == "ba":  # a classifier's log q(z|x) per row and the one-hot labels, no pairs
        g = torch.Generator().manual_seed(1)
        logits = torch.randn(40, 3, generator=g, dtype=torch.float64)
        onehot = torch.eye(3, dtype=torch.float64)[torch.randint(0, 3, (40,), generator=g)]
        log_q = (torch.log_softmax(logits, 1) * onehot).sum(1)
        readout = bound_from_scores(name, log_q.numpy(), onehot.numpy())
        assert readout == pytest.approx(float(b.objective(log_q, onehot, None, 1.0)), abs=1e-9)
        assert marginal_ess(name, onehot.numpy()) is None
        EstimatorConfig(bound=name)
        return
    s = _scores()
    tj = s.diagonal()
    off = ~torch.eye(s.shape[0], dtype=torch.bool)
    tm = s[off].reshape(s.shape[0], -1)  # every other row of the block as negatives, row by row
    tau = 1.5
    if b.objective is None:  # mine trains on the EMA-corrected surrogate; its value is DV
        torch_value = B.dv(tj, tm.reshape(-1))
    else:
        torch_value = b.objective(tj, tm.reshape(-1), s, tau)
    readout = bound_from_scores(name, tj.numpy(), tm.numpy(), tau)
    assert readout == pytest.approx(float(torch_value), abs=1e-9), name
    # The registry's properties are what the rest of the code sees.
    assert (marginal_ess(name, tm.numpy(), tau) is None) == (b.readout in ("infonce", "ba"))
    assert b.sweepable <= b.strict  # only strict bounds may be swept
    EstimatorConfig(bound=name)  # every registered bound is a valid config


def test_registry_lists_every_bound_once_with_its_semantics():
    assert B.BOUNDS == ("mine", "mine-f", "infonce", "smile", "dv", "ba")
    assert B.CHOICES == ("auto", *B.BOUNDS)
    assert [n for n, b in B.REGISTRY.items() if b.capped] == ["infonce", "ba"]
    assert [n for n, b in B.REGISTRY.items() if not b.strict] == ["smile"]
    assert all(b.summary for b in B.REGISTRY.values())
    with pytest.raises(ValueError, match=r"bound must be one of \('auto', 'mine', 'mine-f', 'infonce', 'smile', 'dv', 'ba'\); got 'x'"):
        B.spec("x")
    assert B.spec("auto") is B.REGISTRY["mine"]  # where no data says otherwise
    assert math.isfinite(float(B.REGISTRY["dv"].objective(torch.zeros(3), torch.zeros(4), None, 1.0)))

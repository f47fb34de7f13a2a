"""benchmarks/suite.py's task list covers what issue 12 asks of the suite, and its criterion."""

import importlib.util
import os

import numpy as np

from mine_dist import synthetic as S

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "suite.py")
_spec = importlib.util.spec_from_file_location("suite", _PATH)
suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite)


def test_suite_covers_the_issue_range():
    truths, dims = [], []
    for name, kind, params in suite.TASKS:
        spec = S.make_spec(kind, **params)
        truths.append(spec.truth(**({"mc_samples": 20_000} if kind == "embedding-categorical" else {}))["mi_nats"])
        x, z = spec.sample(2, np.random.default_rng(0))
        dims.append((x.shape[1], 1 if z.ndim == 1 else z.shape[1]))
    assert len(suite.TASKS) >= 14 and len({t[0] for t in suite.TASKS}) == len(suite.TASKS)
    assert (1, 1) in dims and (50, 50) in dims
    assert any(k.startswith("embedding") and dx >= 256 for (_, k, _), (dx, _) in zip(suite.TASKS, dims))
    assert 0.2 <= min(truths) < 0.3 and 7.5 <= max(truths) <= 10
    assert set(suite.QUICK) <= {t[0] for t in suite.TASKS}


def test_within_is_max_of_a_tenth_nat_and_ten_percent():
    assert suite.within(0.1, 0.5) and not suite.within(0.11, 0.5)
    assert suite.within(-0.6, 6.0) and not suite.within(-0.61, 6.0)

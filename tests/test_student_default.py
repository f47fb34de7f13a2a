"""Issue 11: the default estimator on true multivariate Student-t pairs (closed-form MI), where the
old default normalization (``standard``) collapsed: dof 1 and 2, 1x1, 2x2 and 5x5."""

import numpy as np
import pytest

from mine_dist.estimator import MINE, EstimatorConfig
from mine_dist.synthetic import make_spec

# (dim, df, rho, tolerance): the 1x1 and first 2x2 cases have a correlation, the others only the
# dependence of the shared scale (the t copula). Measured with data and training seeds 0 and 1
# (estimate / truth): 1x1 dof 1: 1.035, 1.006; 2x2 dof 1: 0.898, 0.892; 2x2 dof 2: 0.974, 0.910;
# 5x5 dof 2: 0.632, 0.662 (a radial dependence in 10 dimensions: the critic learns it slowly; the
# suite's 20k-row 5x5 tasks show the same). Each tolerance leaves about 1.5-3x the shortfall seen.
# Re-measured after the defaults became width auto (128 here) and min_gain 1.0: 1.045, 0.994;
# 0.874, 0.864; 0.979, 0.954; 0.677, 0.607.
CASES = [(1, 1.0, 0.5, 0.75), (2, 1.0, 0.5, 0.75), (2, 2.0, 0.0, 0.75), (5, 2.0, 0.0, 0.45)]
ROWS = 8000
# Default flags except a shorter budget and fewer bootstrap resamples for the test's time.
CFG = EstimatorConfig(steps=1200, bootstrap=200)


@pytest.mark.slow
@pytest.mark.parametrize("dim,df,rho,tolerance", CASES)
def test_default_normalization_does_not_collapse_on_student_t(dim, df, rho, tolerance):
    spec = make_spec("student", dim_x=dim, dim_z=dim, df=df, rho=rho)
    truth = spec.truth()["mi_nats"]
    x, z = spec.sample(ROWS, np.random.default_rng(0))
    est = MINE(CFG).estimate(x, z)
    assert est.normalization["x"]["method"] == "rank-gauss"
    # A lower bound: at most the truth plus test noise (3 interval half-widths)...
    lo, hi = est.bound_ci95_nats
    assert est.bound_nats <= truth + 1.5 * (hi - lo), (est.bound_nats, truth)
    # ... and near it (standard normalization read 0.03 of 0.43 nats at 2x2 dof 1, 0.00 at 1x1).
    assert est.mi_nats >= tolerance * truth, (est.mi_nats, truth)


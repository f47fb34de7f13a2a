"""Distributions with known mutual information, and a writer of sharded Parquet datasets.

Every distribution has ``sample(n, rng) -> (x, z)`` and ``truth() -> dict`` (``mi_nats``,
``mi_bits``, ``mi_method``, ``mi_stderr_nats``, ``formula``, ``parameters``, ``distribution``).
``KINDS`` maps each kind's name to its parameters (type, default, help) and ``make_spec(kind,
**params)`` builds one, so a command line can offer every kind generically.

The original kinds (:class:`Spec`):

* ``gaussian``: x ~ N(0, I_d), z = rho x + sqrt(1 - rho^2) e, so each coordinate pair has
  correlation rho and ``I(X; Z) = -(d/2) ln(1 - rho^2)`` exactly.
* ``transform``: an invertible per-coordinate map applied to x and z of a Gaussian pair
  (``cubic``: v^3, ``exp``: e^v, ``cauchy``: the Cauchy quantile of Phi(v), heavy-tailed with no
  mean). MI is invariant under such maps, so the truth is the Gaussian's.
* ``independent``: x and z independent Gaussians, MI 0.
* ``mixture``: a categorical label z uniform over K classes and x | z ~ N(sep * mu_z, I_d) with
  orthonormal class means. MI has no closed form; it is computed from the exact densities by Monte
  Carlo (``mi_stderr_nats`` recorded) and is below H(z) = ln K.

The harder families (issue 12; the task shapes follow Czyz et al., "Beyond Normal", NeurIPS 2023):

* ``mapped`` (:class:`PairSpec`): a Gaussian pair with a ``sparse`` (correlation rho between x_i
  and z_i for the first ``pairs`` coordinates) or ``dense`` (every off-diagonal entry of the joint
  correlation matrix rho) structure, pushed through a composition of invertible maps of each
  variable (``MAPS``: spiral, halfcube, asinh, normcdf, ...). The maps leave MI unchanged, so
  ``I = 1/2 ln(det S_xx det S_zz / det S)``. ``mi=`` solves rho for a target MI (high-MI tasks).
* ``student`` (:class:`PairSpec` with ``df``): the multivariate Student-t with the same dispersion
  S and ``df`` degrees of freedom; ``I`` is the Gaussian term plus the t copula's term
  ``c(dx) + c(dz) - c(dx + dz)``, ``c(d) = ln G(nu/2) - ln G((nu+d)/2) + (nu+d)/2 (psi((nu+d)/2) - psi(nu/2))``
  (positive even for S = I: x and z share the chi-square scale).
* ``additive-noise`` (:class:`AdditiveNoiseSpec`): X ~ U(0,1), Z = X + U(-e, e) per coordinate;
  ``I = e - ln(2e)`` for e <= 1/2, ``1/(4e)`` above.
* ``embedding`` / ``embedding-categorical`` (:class:`EmbeddingSpec`): a low-dimensional dependent
  pair (a sparse Gaussian pair, or a label and a Gaussian mixture) padded with independent N(0, 1)
  noise dimensions to d_x, d_z (up to thousands) and rotated by a fixed random orthogonal matrix,
  so every coordinate mixes signal and noise; the rotation and the independent noise leave MI
  unchanged.

Every truth is checked in ``tests/test_synthetic.py`` against ``monte_carlo_mi``: the mean of
log p(x,z) - log p(x) - log p(z) over samples drawn by ``sample`` and mapped back to the base
variables (the Jacobians of the invertible maps and the noise densities cancel in that difference).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from typing import Callable, ClassVar, Protocol

import numpy as np

TRANSFORMS = ("none", "cubic", "exp", "cauchy")
LN2 = math.log(2.0)
_SPEC_KINDS = ("gaussian", "independent", "mixture")


def gaussian_mi(dim: int, rho: float) -> float:
    """I(X; Z) in nats for ``dim`` independent coordinate pairs of correlation ``rho``."""
    return -0.5 * dim * math.log1p(-rho * rho)


def _torch_f64(v: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64))


def _cauchy(v: np.ndarray) -> np.ndarray:
    # Phi(v) then the Cauchy quantile tan(pi (u - 1/2)), i.e. tan(pi/2 * erf(v / sqrt 2)).
    import torch

    return np.tan(0.5 * np.pi * torch.erf(torch.from_numpy(v / math.sqrt(2.0))).numpy())


def _apply_transform(v: np.ndarray, name: str) -> np.ndarray:
    if name == "none":
        return v
    if name == "cubic":
        return v**3
    if name == "exp":
        return np.exp(v)
    if name == "cauchy":
        return _cauchy(v)
    raise ValueError(f"transform must be one of {TRANSFORMS}; got {name!r}")


# ----------------------------------------------------------------------------- invertible maps


# The spiral's default speed, as in the Beyond Normal benchmark's spiral tasks (cbg-ethz/bmi).
SPIRAL_SPEED = 1.0 / 3.0


def _spiral(v: np.ndarray, speed: float, sign: float = 1.0) -> np.ndarray:
    # Rotate the plane of the first two coordinates by an angle speed * |v|^2. A rotation keeps
    # |v|, so the inverse rotates back by the same angle read from the output.
    theta = sign * speed * np.einsum("ij,ij->i", v, v)
    c, s = np.cos(theta), np.sin(theta)
    out = v.copy()
    out[:, 0] = c * v[:, 0] - s * v[:, 1]
    out[:, 1] = s * v[:, 0] + c * v[:, 1]
    return out


def _ndtr(v):
    import torch

    return torch.special.ndtr(_torch_f64(v)).numpy()


def _ndtri(v):
    import torch

    return torch.special.ndtri(_torch_f64(v)).numpy()


# name -> (forward, inverse), each (v: (n, d) float64, speed) -> (n, d). All are bijections of
# each variable, so I(f(X); f(Z)) = I(X; Z). ``normcdf`` is for Gaussian-tailed inputs: Phi(v)
# rounds to 1 above v ~ 8.3 in float64 (~5.4 once written as float32), which heavy tails reach.
MAPS: dict[str, tuple[Callable, Callable]] = {
    "spiral": (lambda v, s: _spiral(v, s), lambda v, s: _spiral(v, s, -1.0)),
    "halfcube": (lambda v, s: v * np.sqrt(np.abs(v)), lambda v, s: np.sign(v) * np.abs(v) ** (2.0 / 3.0)),
    "asinh": (lambda v, s: np.arcsinh(v), lambda v, s: np.sinh(v)),
    "normcdf": (lambda v, s: _ndtr(v), lambda v, s: _ndtri(v)),
    "cubic": (lambda v, s: v**3, lambda v, s: np.cbrt(v)),
    "exp": (lambda v, s: np.exp(v), lambda v, s: np.log(v)),
    "cauchy": (lambda v, s: _cauchy(v), lambda v, s: _ndtri(np.arctan(v) / np.pi + 0.5)),
}


def parse_maps(maps: str) -> tuple[str, ...]:
    """``"none"`` or a comma list of ``MAPS`` names, applied left to right."""
    if not isinstance(maps, str):
        raise ValueError(f"maps must be a string ('none' or a comma list of {sorted(MAPS)}); got {maps!r}")
    names = tuple(m.strip() for m in maps.split(",") if m.strip())
    if names == ("none",):
        return ()
    bad = [m for m in names if m not in MAPS]
    if bad or not names:
        raise ValueError(f"maps must be 'none' or a comma list of {sorted(MAPS)}; got {maps!r}")
    return names


def apply_maps(v: np.ndarray, maps: str, speed: float = SPIRAL_SPEED, inverse: bool = False) -> np.ndarray:
    """Apply the composition ``maps`` (or its inverse) to the rows of v, shape (n, d)."""
    names = parse_maps(maps)
    for name in reversed(names) if inverse else names:
        v = MAPS[name][1 if inverse else 0](v, speed)
    return v


def _check_maps(maps: str, dims: dict[str, int]) -> None:
    if "spiral" in parse_maps(maps):
        small = {k: d for k, d in dims.items() if d < 2}
        if small:
            raise ValueError(f"the spiral map rotates a plane and needs >= 2 dimensions; got {small}")


# ----------------------------------------------------------------------------- densities


def _digamma(x: float) -> float:
    """psi(x) for x > 0: recurrence up to x >= 6, then the asymptotic series (error < 1e-12)."""
    r = 0.0
    while x < 6.0:
        r -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    return r + math.log(x) - 0.5 / x - f * (1 / 12 - f * (1 / 120 - f * (1 / 252 - f * (1 / 240 - f / 132))))


def _t_entropy_term(df: float, d: int) -> float:
    """The part of a d-dim Student-t entropy that is not 1/2 ln det S + d/2 ln(df pi)."""
    a = (df + d) / 2.0
    return math.lgamma(df / 2.0) - math.lgamma(a) + a * (_digamma(a) - _digamma(df / 2.0))


def student_t_term(df: float, dx: int, dz: int) -> float:
    """MI of a multivariate t beyond its dispersion's Gaussian MI (the t copula's share), nats."""
    return _t_entropy_term(df, dx) + _t_entropy_term(df, dz) - _t_entropy_term(df, dx + dz)


def _log_elliptical(v: np.ndarray, cov: np.ndarray, df: float | None) -> np.ndarray:
    """log density of N(0, cov) (df None) or of the multivariate t(df, 0, cov) at rows of v."""
    d = cov.shape[0]
    chol = np.linalg.cholesky(cov)
    sol = np.linalg.solve(chol, v.T)
    maha = np.einsum("ij,ij->j", sol, sol)
    logdet = 2.0 * np.log(np.diag(chol)).sum()
    if df is None:
        return -0.5 * (maha + logdet + d * math.log(2 * math.pi))
    return (math.lgamma((df + d) / 2) - math.lgamma(df / 2) - 0.5 * d * math.log(df * math.pi)
            - 0.5 * logdet - 0.5 * (df + d) * np.log1p(maha / df))


def _mean_se(terms: np.ndarray) -> tuple[float, float]:
    return float(terms.mean()), float(terms.std(ddof=1) / math.sqrt(terms.size))


class Distribution(Protocol):
    """What ``write_dataset`` needs: rows and the truth."""

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]: ...

    def truth(self) -> dict: ...


def _truth(kind: str, params: dict, mi: float, method: str, formula: str, se: float = 0.0) -> dict:
    return {"mi_nats": mi, "mi_bits": mi / LN2, "mi_method": method, "mi_stderr_nats": se, "formula": formula,
            "parameters": params, "distribution": {"kind": kind, **params}}


def _check_int(name: str, v, lo: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}; got {v!r}")


# ----------------------------------------------------------------------------- original kinds


@dataclass(frozen=True)
class Spec:
    """A synthetic distribution. ``truth()`` gives its MI; ``sample(n, rng)`` draws rows."""

    kind: str = "gaussian"
    dim: int = 5
    rho: float = 0.8
    transform: str = "none"
    classes: int = 10
    sep: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in _SPEC_KINDS:
            raise ValueError(f"kind must be one of {_SPEC_KINDS}; got {self.kind!r}")
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"dim must be an int >= 1; got {self.dim!r}")
        if not -1 < self.rho < 1:
            raise ValueError(f"rho must be in (-1, 1); got {self.rho!r}")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}; got {self.transform!r}")
        if self.kind == "mixture" and not (2 <= self.classes <= self.dim):
            raise ValueError(f"mixture needs 2 <= classes <= dim; got classes={self.classes}, dim={self.dim}")

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw n rows: x (n, dim) float64 and z ((n, dim) float64, or (n,) int64 labels for mixture)."""
        if self.kind == "mixture":
            z = rng.integers(0, self.classes, size=n)
            x = rng.standard_normal((n, self.dim)) + self.sep * self._means()[z]
            return _apply_transform(x, self.transform), z.astype(np.int64)
        x = rng.standard_normal((n, self.dim))
        e = rng.standard_normal((n, self.dim))
        z = e if self.kind == "independent" else self.rho * x + math.sqrt(1 - self.rho**2) * e
        return _apply_transform(x, self.transform), _apply_transform(z, self.transform)

    def _means(self) -> np.ndarray:
        return np.eye(self.classes, self.dim)

    def truth(self, mc_samples: int = 400_000, seed: int = 12345) -> dict:
        """Ground truth: ``mi_nats``, ``mi_bits`` and how they were obtained."""
        if self.kind == "gaussian":
            mi, method, se = gaussian_mi(self.dim, self.rho), "closed form -(d/2) ln(1-rho^2)", 0.0
            formula = "-(d/2) ln(1 - rho^2)"
        elif self.kind == "independent":
            mi, method, se, formula = 0.0, "independent", 0.0, "0 (x and z independent)"
        else:
            mi, se = self._mixture_mi(mc_samples, seed)
            method = f"Monte Carlo over exact densities, {mc_samples} samples"
            formula = "E[log N(x; sep mu_z, I) - log mean_k N(x; sep mu_k, I)]"
        params = {k: v for k, v in asdict(self).items() if k != "kind"}
        return {"mi_nats": mi, "mi_bits": mi / LN2, "mi_method": method, "mi_stderr_nats": se,
                "distribution": asdict(self), "formula": formula, "parameters": params}

    def _mixture_mi(self, n: int, seed: int) -> tuple[float, float]:
        # I = E[log p(x|y) - log p(x)], p(x) = mean_k p(x|k); the Gaussian normalizers cancel.
        # Computed on the untransformed x: MI is invariant under the per-coordinate transform.
        rng = np.random.default_rng(seed)
        y = rng.integers(0, self.classes, size=n)
        mu = self.sep * self._means()
        x = rng.standard_normal((n, self.dim)) + mu[y]
        return _mean_se(_mixture_pmi(x, y, mu))


def _mixture_pmi(x: np.ndarray, y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """log p(x|y) - log p(x) for x | y ~ N(mu_y, I), y uniform over the rows of mu."""
    logp = -0.5 * ((x[:, None, :] - mu[None, :, :]) ** 2).sum(-1)  # (n, K) up to a constant
    mx = logp.max(1, keepdims=True)
    log_mix = (mx + np.log(np.exp(logp - mx).mean(1, keepdims=True)))[:, 0]
    return logp[np.arange(x.shape[0]), y] - log_mix


# ----------------------------------------------------------------------------- Gaussian / Student-t pairs

STRUCTURES = ("sparse", "dense")


def pair_covariance(dim_x: int, dim_z: int, structure: str, rho: float, pairs: int | None = None) -> np.ndarray:
    """The (dim_x + dim_z) joint correlation matrix of x then z.

    ``sparse``: corr(x_i, z_i) = rho for i < pairs (default min(dim_x, dim_z)), all else 0.
    ``dense``: every off-diagonal entry rho (within x, within z and across).
    """
    d = dim_x + dim_z
    if structure == "dense":
        cov = np.full((d, d), float(rho))
        np.fill_diagonal(cov, 1.0)
        return cov
    cov = np.eye(d)
    k = min(dim_x, dim_z) if pairs is None else pairs
    idx = np.arange(k)
    cov[idx, dim_x + idx] = cov[dim_x + idx, idx] = rho
    return cov


def gaussian_cov_mi(cov: np.ndarray, dim_x: int) -> float:
    """1/2 ln(det S_xx det S_zz / det S) for a joint covariance of x (first dim_x) then z."""
    ld = [np.linalg.slogdet(m)[1] for m in (cov[:dim_x, :dim_x], cov[dim_x:, dim_x:], cov)]
    return 0.5 * (ld[0] + ld[1] - ld[2])


def solve_rho(mi: float, dim_x: int, dim_z: int, structure: str, pairs: int | None = None) -> float:
    """The rho >= 0 whose Gaussian pair of this structure has MI ``mi`` nats (bisection)."""
    if not (isinstance(mi, (int, float)) and mi > 0 and math.isfinite(mi)):
        raise ValueError(f"mi must be a finite number > 0; got {mi!r}")
    lo, hi = 0.0, 1.0 - 1e-15
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if gaussian_cov_mi(pair_covariance(dim_x, dim_z, structure, mid, pairs), dim_x) < mi:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class PairSpec:
    """A Gaussian (``df`` None) or Student-t pair with dispersion ``pair_covariance(...)``, each
    variable then pushed through the invertible composition ``maps``."""

    dim_x: int = 5
    dim_z: int = 5
    structure: str = "sparse"
    rho: float = 0.8
    pairs: int | None = None
    df: float | None = None
    maps: str = "none"
    speed: float = SPIRAL_SPEED

    def __post_init__(self) -> None:
        _check_int("dim_x", self.dim_x, 1)
        _check_int("dim_z", self.dim_z, 1)
        if self.structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}; got {self.structure!r}")
        if self.pairs is not None:
            if self.structure != "sparse":
                raise ValueError(f"pairs applies to the sparse structure only; got pairs={self.pairs!r} "
                                 f"with structure {self.structure!r}")
            _check_int("pairs", self.pairs, 0)
            if self.pairs > min(self.dim_x, self.dim_z):
                raise ValueError(f"pairs must be <= min(dim_x, dim_z) = {min(self.dim_x, self.dim_z)}; "
                                 f"got {self.pairs}")
        if not (isinstance(self.rho, (int, float)) and -1 < self.rho < 1):
            raise ValueError(f"rho must be in (-1, 1); got {self.rho!r}")
        if self.structure == "dense" and np.linalg.eigvalsh(self.covariance()).min() <= 1e-12:
            d = self.dim_x + self.dim_z
            raise ValueError(f"dense rho must be in ({-1 / (d - 1):.4g}, 1) for {d} coordinates "
                             f"(a positive definite correlation matrix); got {self.rho!r}")
        if self.df is not None and not (isinstance(self.df, (int, float)) and self.df > 0 and math.isfinite(self.df)):
            raise ValueError(f"df must be a finite number > 0; got {self.df!r}")
        if not (isinstance(self.speed, (int, float)) and math.isfinite(self.speed)):
            raise ValueError(f"speed must be a finite number; got {self.speed!r}")
        _check_maps(self.maps, {"dim_x": self.dim_x, "dim_z": self.dim_z})

    @property
    def kind(self) -> str:
        return "mapped" if self.df is None else "student"

    def covariance(self) -> np.ndarray:
        return pair_covariance(self.dim_x, self.dim_z, self.structure, self.rho, self.pairs)

    def _sample_base(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        v = rng.standard_normal((n, self.dim_x + self.dim_z)) @ np.linalg.cholesky(self.covariance()).T
        if self.df is not None:
            v *= np.sqrt(self.df / rng.chisquare(self.df, size=n))[:, None]
        return v[:, : self.dim_x], v[:, self.dim_x :]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw n rows: x (n, dim_x) and z (n, dim_z), float64."""
        x, z = self._sample_base(n, rng)
        return apply_maps(x, self.maps, self.speed), apply_maps(z, self.maps, self.speed)

    def truth(self) -> dict:
        gauss = gaussian_cov_mi(self.covariance(), self.dim_x)
        formula = "1/2 ln(det S_xx det S_zz / det S)"
        if self.df is None:
            mi, method = gauss, "closed form (Gaussian pair; invertible maps keep MI)"
        else:
            mi = gauss + student_t_term(self.df, self.dim_x, self.dim_z)
            method = "closed form (multivariate Student-t; invertible maps keep MI)"
            formula += (" + c(dx) + c(dz) - c(dx+dz), c(d) = ln G(nu/2) - ln G((nu+d)/2)"
                        " + (nu+d)/2 (psi((nu+d)/2) - psi(nu/2))")
        return _truth(self.kind, asdict(self), mi, method, formula)

    def pointwise_mi(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """log p(x,z) - log p(x) - log p(z) at rows of the base (unmapped) variables."""
        cov = self.covariance()
        dx = self.dim_x
        return (_log_elliptical(np.hstack([x, z]), cov, self.df) - _log_elliptical(x, cov[:dx, :dx], self.df)
                - _log_elliptical(z, cov[dx:, dx:], self.df))

    def monte_carlo_mi(self, n: int, seed: int) -> tuple[float, float]:
        """(mean, standard error) of the pointwise MI over n rows of ``sample``, mapped back."""
        x, z = self.sample(n, np.random.default_rng(seed))
        x, z = (apply_maps(v, self.maps, self.speed, inverse=True) for v in (x, z))
        return _mean_se(self.pointwise_mi(x, z))


# ----------------------------------------------------------------------------- additive noise


def additive_noise_mi(noise: float) -> float:
    """I(X; X + U(-e, e)) for X ~ U(0, 1), in nats."""
    return noise - math.log(2 * noise) if noise <= 0.5 else 1.0 / (4 * noise)


@dataclass(frozen=True)
class AdditiveNoiseSpec:
    """``dim`` independent coordinates, each X ~ U(0, 1) and Z = X + U(-noise, noise)."""

    kind: ClassVar[str] = "additive-noise"
    dim: int = 1
    noise: float = 0.1

    def __post_init__(self) -> None:
        _check_int("dim", self.dim, 1)
        if not (isinstance(self.noise, (int, float)) and self.noise > 0 and math.isfinite(self.noise)):
            raise ValueError(f"noise must be a finite number > 0; got {self.noise!r}")

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.uniform(0.0, 1.0, (n, self.dim))
        return x, x + rng.uniform(-self.noise, self.noise, (n, self.dim))

    def truth(self) -> dict:
        return _truth(self.kind, asdict(self), self.dim * additive_noise_mi(self.noise), "closed form",
                      "dim * (e - ln(2e)) for e <= 1/2, dim / (4e) for e > 1/2")

    def pointwise_mi(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        # p(z | x) = 1/(2e) on the support; p(z) is the trapezoid min(z + e, 1, e - z + 1, 2e) / (2e)
        # clipped at 0 (the convolution of U(0, 1) and U(-e, e)).
        e = self.noise
        pz = np.minimum.reduce([z + e, np.ones_like(z), 1 + e - z, np.full_like(z, 2 * e)]) / (2 * e)
        return (-np.log(2 * e) - np.log(pz)).sum(1)

    def monte_carlo_mi(self, n: int, seed: int) -> tuple[float, float]:
        return _mean_se(self.pointwise_mi(*self.sample(n, np.random.default_rng(seed))))


# ----------------------------------------------------------------------------- embedding-like


@functools.lru_cache(maxsize=8)
def random_rotation(dim: int, seed: int) -> np.ndarray:
    """A Haar-random (dim, dim) orthogonal matrix, fixed by ``seed`` (QR with the sign fix)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))
    q.setflags(write=False)
    return q


@dataclass(frozen=True)
class EmbeddingSpec:
    """A low-dimensional dependent pair embedded in many dimensions.

    Continuous z (``classes`` 0): a sparse Gaussian pair of ``latent`` coordinates each (corr rho),
    each variable mapped by ``maps``. Categorical z (``classes`` >= 2): z uniform over the classes
    and the ``latent`` coordinates of x | z ~ N(sep * e_z, I), mapped by ``maps``; MI by Monte
    Carlo. Each variable is padded with independent N(0, 1) dimensions to dim_x (dim_z) and
    multiplied by a fixed random orthogonal matrix (seeds ``rotation_seed`` and
    ``rotation_seed + 1``); neither changes MI.
    """

    dim_x: int = 256
    dim_z: int = 256
    latent: int = 4
    rho: float = 0.8
    classes: int = 0
    sep: float = 2.0
    maps: str = "none"
    speed: float = SPIRAL_SPEED
    rotation_seed: int = 0

    def __post_init__(self) -> None:
        _check_int("latent", self.latent, 1)
        _check_int("dim_x", self.dim_x, self.latent)
        _check_int("rotation_seed", self.rotation_seed, 0)
        if self.classes:
            _check_int("classes", self.classes, 2)
            if self.classes > self.latent:
                raise ValueError(f"categorical embedding needs classes <= latent (orthonormal class means); "
                                 f"got classes={self.classes}, latent={self.latent}")
            if not (isinstance(self.sep, (int, float)) and math.isfinite(self.sep)):
                raise ValueError(f"sep must be a finite number; got {self.sep!r}")
            _check_maps(self.maps, {"latent": self.latent})
        else:
            _check_int("dim_z", self.dim_z, self.latent)
            self._pair()  # validates rho, maps and speed

    @property
    def kind(self) -> str:
        return "embedding-categorical" if self.classes else "embedding"

    def _pair(self) -> PairSpec:
        return PairSpec(self.latent, self.latent, "sparse", self.rho, maps=self.maps, speed=self.speed)

    def _means(self) -> np.ndarray:
        return self.sep * np.eye(self.classes, self.latent)

    def _embed(self, v: np.ndarray, dim: int, seed: int, rng: np.random.Generator) -> np.ndarray:
        full = np.hstack([v, rng.standard_normal((v.shape[0], dim - v.shape[1]))])
        return full @ random_rotation(dim, seed).T

    def _unembed(self, v: np.ndarray, seed: int) -> np.ndarray:
        return (v @ random_rotation(v.shape[1], seed))[:, : self.latent]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """x (n, dim_x) float64; z (n, dim_z) float64, or (n,) int64 labels when categorical."""
        if self.classes:
            z = rng.integers(0, self.classes, size=n)
            lx = apply_maps(rng.standard_normal((n, self.latent)) + self._means()[z], self.maps, self.speed)
            return self._embed(lx, self.dim_x, self.rotation_seed, rng), z.astype(np.int64)
        lx, lz = self._pair().sample(n, rng)
        return (self._embed(lx, self.dim_x, self.rotation_seed, rng),
                self._embed(lz, self.dim_z, self.rotation_seed + 1, rng))

    def _params(self) -> dict:
        p = asdict(self)
        drop = ("rho", "dim_z") if self.classes else ("classes", "sep")
        return {k: v for k, v in p.items() if k not in drop}

    def truth(self, mc_samples: int = 400_000, seed: int = 12345) -> dict:
        if self.classes:
            mu = self._means()
            rng = np.random.default_rng(seed)
            y = rng.integers(0, self.classes, size=mc_samples)
            mi, se = _mean_se(_mixture_pmi(rng.standard_normal((mc_samples, self.latent)) + mu[y], y, mu))
            return _truth(self.kind, self._params(), mi,
                          f"Monte Carlo over exact densities, {mc_samples} samples (latent space)",
                          "E[log N(l; sep e_z, I) - log mean_k N(l; sep e_k, I)], l the latent part of x", se)
        return _truth(self.kind, self._params(), gaussian_mi(self.latent, self.rho),
                      "closed form (latent Gaussian pair; noise dims, rotation and maps keep MI)",
                      "-(latent/2) ln(1 - rho^2)")

    def monte_carlo_mi(self, n: int, seed: int) -> tuple[float, float]:
        """Pointwise MI over n rows of ``sample``, rotated back, latent part un-mapped."""
        x, z = self.sample(n, np.random.default_rng(seed))
        lx = apply_maps(self._unembed(x, self.rotation_seed), self.maps, self.speed, inverse=True)
        if self.classes:
            return _mean_se(_mixture_pmi(lx, z, self._means()))
        lz = apply_maps(self._unembed(z, self.rotation_seed + 1), self.maps, self.speed, inverse=True)
        return _mean_se(self._pair().pointwise_mi(lx, lz))


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Param:
    """One parameter of a kind: ``type`` is int, float or str; ``default`` None means 'see help'."""

    name: str
    type: type
    default: object
    help: str
    choices: tuple = ()


@dataclass(frozen=True)
class Kind:
    """A ``make-data`` kind: its parameters and the function that builds it from them."""

    name: str
    help: str
    params: tuple[Param, ...]
    build: Callable[..., Distribution]

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ValueError(f"kind {self.name!r} has no parameter {name!r}; its parameters: "
                         f"{[p.name for p in self.params]}")


def _rho_or_mi(rho, mi, default: float, solve: Callable[[float], float]) -> float:
    if mi is None:
        return default if rho is None else rho
    if rho is not None:
        raise ValueError(f"give rho or mi, not both; got rho={rho!r} and mi={mi!r}")
    return solve(mi)


def _build_pair(dim_x, dim_z, structure, rho, mi, pairs, maps, speed, df=None):
    extra = 0.0 if df is None else student_t_term(df, dim_x, dim_z)
    default = 0.0 if df is not None else 0.8

    def solve(target: float) -> float:
        if df is not None and target <= extra:
            raise ValueError(f"mi must exceed the Student-t term {extra:.4f} nats at df={df}, "
                             f"dim_x={dim_x}, dim_z={dim_z} (the MI at rho=0); got {target!r}")
        PairSpec(dim_x, dim_z, structure, 0.0, pairs, df, maps, speed)  # validates before solving
        return solve_rho(target - extra, dim_x, dim_z, structure, pairs)

    return PairSpec(dim_x, dim_z, structure, _rho_or_mi(rho, mi, default, solve), pairs, df, maps, speed)


def _build_embedding(dim_x, dim_z, latent, rho, mi, maps, speed, rotation_seed):
    rho = _rho_or_mi(rho, mi, 0.8, lambda t: solve_rho(t, latent, latent, "sparse"))
    return EmbeddingSpec(dim_x, dim_z, latent, rho, 0, 2.0, maps, speed, rotation_seed)


_MAPS_HELP = "'none' or a comma list of invertible maps applied to x and to z, left to right: " + ", ".join(MAPS)
_DIMS = (Param("dim_x", int, 5, "dimensions of x"), Param("dim_z", int, 5, "dimensions of z"))
_MAP_PARAMS = (Param("maps", str, "none", _MAPS_HELP),
               Param("speed", float, SPIRAL_SPEED, "spiral: rotation angle per unit of |v|^2 (default 1/3)"))
_PAIR = (Param("structure", str, "sparse", "sparse: corr(x_i, z_i) = rho for the first `pairs` coordinates; "
               "dense: every off-diagonal correlation rho", STRUCTURES),
         Param("pairs", int, None, "sparse: correlated coordinate pairs (default min(dim_x, dim_z))"))

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("gaussian", "x ~ N(0, I), z = rho x + sqrt(1-rho^2) e per coordinate; -(d/2) ln(1-rho^2)",
         (Param("dim", int, 5, "dimensions of x and of z"), Param("rho", float, 0.8, "per-coordinate correlation"),
          Param("transform", str, "none", "invertible per-coordinate map of x and z (MI unchanged)", TRANSFORMS)),
         lambda dim, rho, transform: Spec("gaussian", dim, rho, transform)),
    Kind("independent", "independent x and z Gaussians; MI 0",
         (Param("dim", int, 5, "dimensions of x and of z"),
          Param("transform", str, "none", "invertible per-coordinate map of x and z", TRANSFORMS)),
         lambda dim, transform: Spec("independent", dim, transform=transform)),
    Kind("mixture", "label z uniform over classes, x | z ~ N(sep mu_z, I); MI by Monte Carlo",
         (Param("dim", int, 10, "dimensions of x (>= classes)"), Param("classes", int, 10, "labels"),
          Param("sep", float, 2.0, "class mean separation"),
          Param("transform", str, "none", "invertible per-coordinate map of x", TRANSFORMS)),
         lambda dim, classes, sep, transform: Spec("mixture", dim, transform=transform, classes=classes, sep=sep)),
    Kind("mapped", "a sparse or dense Gaussian pair through invertible maps (spiral, halfcube, asinh, normcdf, ...)",
         (*_DIMS, *_PAIR, Param("rho", float, None, "correlation (default 0.8; or give mi)"),
          Param("mi", float, None, "target MI in nats: solves rho (instead of rho)"), *_MAP_PARAMS),
         lambda dim_x, dim_z, structure, pairs, rho, mi, maps, speed:
             _build_pair(dim_x, dim_z, structure, rho, mi, pairs, maps, speed)),
    Kind("student", "multivariate Student-t pair (dispersion as for mapped, default identity); closed-form MI",
         (*_DIMS, Param("df", float, 3.0, "degrees of freedom (1 is Cauchy-like)"), *_PAIR,
          Param("rho", float, None, "dispersion correlation (default 0: identity dispersion; or give mi)"),
          Param("mi", float, None, "target MI in nats: solves rho (instead of rho)"), *_MAP_PARAMS),
         lambda dim_x, dim_z, df, structure, pairs, rho, mi, maps, speed:
             _build_pair(dim_x, dim_z, structure, rho, mi, pairs, maps, speed, df)),
    Kind("additive-noise", "X ~ U(0,1), Z = X + U(-noise, noise) per coordinate; closed form",
         (Param("dim", int, 1, "independent coordinate pairs"), Param("noise", float, 0.1, "half-width e")),
         lambda dim, noise: AdditiveNoiseSpec(dim, noise)),
    Kind("embedding", "a latent Gaussian pair padded with noise dims and randomly rotated (continuous z)",
         (Param("dim_x", int, 256, "dimensions of x"), Param("dim_z", int, 256, "dimensions of z"),
          Param("latent", int, 4, "dependent latent dimensions per side"),
          Param("rho", float, None, "latent correlation (default 0.8; or give mi)"),
          Param("mi", float, None, "target MI in nats: solves rho (instead of rho)"), *_MAP_PARAMS,
          Param("rotation_seed", int, 0, "seed of the random rotations (x: seed, z: seed + 1)")),
         _build_embedding),
    Kind("embedding-categorical", "a label z and an embedded Gaussian-mixture x; MI by Monte Carlo",
         (Param("dim_x", int, 256, "dimensions of x"), Param("latent", int, 10, "latent dimensions of x (>= classes)"),
          Param("classes", int, 10, "labels"), Param("sep", float, 2.0, "class mean separation"), *_MAP_PARAMS,
          Param("rotation_seed", int, 0, "seed of the random rotation")),
         lambda dim_x, latent, classes, sep, maps, speed, rotation_seed:
             EmbeddingSpec(dim_x, latent, latent, 0.0, classes, sep, maps, speed, rotation_seed)),
)}


def _coerce(kind: str, p: Param, v):
    if p.type is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, p.type) or isinstance(v, bool):
        raise ValueError(f"{kind} parameter {p.name} must be {p.type.__name__}; got {v!r}")
    if p.choices and v not in p.choices:
        raise ValueError(f"{kind} parameter {p.name} must be one of {p.choices}; got {v!r}")
    return v


def make_spec(kind: str, **params) -> Distribution:
    """Build a distribution of ``kind`` from its parameters (``KINDS[kind].params``).

    Parameters passed as None count as not given (their default applies), so a command line can
    pass every option it has. Unknown parameters, or ones another kind takes, are an error.

    Raises:
        ValueError: unknown kind or parameter, wrong type or value.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}; got {kind!r}")
    k = KINDS[kind]
    given = {n: v for n, v in params.items() if v is not None}
    values = {p.name: p.default for p in k.params}
    for n, v in given.items():
        values[n] = _coerce(kind, k.param(n), v)
    return k.build(**values)


def param_options() -> list[Param]:
    """One parameter per name over all kinds (a name has one type everywhere), default None, the
    help naming the kinds that take it: what a command line declares as ``--name`` options before
    passing them all to ``make_spec`` (each kind then fills its own defaults)."""
    by_name: dict[str, list[tuple[str, Param]]] = {}
    for kind in KINDS.values():
        for p in kind.params:
            by_name.setdefault(p.name, []).append((kind.name, p))
    out = []
    for name, uses in by_name.items():
        first = uses[0][1]
        where = ", ".join(k if p.default is None else f"{k} (default {p.default:g})" if p.type is float
                          else f"{k} (default {p.default})" for k, p in uses)
        out.append(Param(name, first.type, None, f"{first.help}; for {where}", first.choices))
    return out


def parse_params(kind: str, items: list[str]) -> dict:
    """``["name=value", ...]`` (e.g. ``--param maps=spiral``) -> typed parameters of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}; got {kind!r}")
    out = {}
    for item in items:
        name, eq, text = item.partition("=")
        if not eq:
            raise ValueError(f"a parameter must be NAME=VALUE; got {item!r}")
        p = KINDS[kind].param(name.strip().replace("-", "_"))
        try:
            out[p.name] = p.type(text.strip())
        except ValueError:
            raise ValueError(f"{kind} parameter {p.name} must be {p.type.__name__}; got {text!r}") from None
    return out


# ----------------------------------------------------------------------------- writer


def write_dataset(spec: Distribution, rows: int, shards: int, output: str, seed: int = 0,
                  row_group_size: int = 65536) -> dict:
    """Write ``rows`` samples of ``spec`` as ``shards`` Parquet files plus ``ground_truth.json``.

    Columns: ``row_id`` (int64), ``x`` (fixed-size list<float32>[dim]) and ``z`` (the same, or an
    int64 label for categorical kinds). Each shard is generated from its own seed, so memory is
    bounded by one shard and the dataset is identical for a given seed whatever the machine. Page
    checksums are written so readers can detect corrupted pages.

    Returns:
        The ground-truth record (also written to ``<output>/ground_truth.json``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mine_dist import storage

    if not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be an int >= 1; got {rows!r}")
    if not isinstance(shards, int) or not 1 <= shards <= rows:
        raise ValueError(f"shards must be an int in [1, rows]; got {shards!r}")
    bounds = np.linspace(0, rows, shards + 1).astype(np.int64)
    files = []
    for s in range(shards):
        n = int(bounds[s + 1] - bounds[s])
        x, z = spec.sample(n, np.random.default_rng([seed, s]))
        cols = {"row_id": pa.array(np.arange(bounds[s], bounds[s + 1], dtype=np.int64)), "x": _fixed_list(x)}
        cols["z"] = pa.array(z) if z.ndim == 1 else _fixed_list(z)
        table = pa.table(cols)
        name = f"part-{s:05d}.parquet"
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, row_group_size=row_group_size, write_page_checksum=True)
        storage.write_bytes_atomic(storage.join(output, name), buf.getvalue().to_pybytes())
        files.append(name)
    truth = spec.truth()
    truth.update({"rows": rows, "shards": shards, "seed": seed, "files": files,
                  "columns": {"x": "x", "z": "z", "row_id": "row_id"}})
    storage.write_text_atomic(storage.join(output, "ground_truth.json"), json.dumps(truth, indent=2))
    return truth


def _fixed_list(a: np.ndarray):
    import pyarrow as pa

    a = np.ascontiguousarray(a, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])

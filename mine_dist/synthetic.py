"""Distributions with known mutual information, and a writer of sharded Parquet datasets.

* ``gaussian``: x ~ N(0, I_d), z = rho x + sqrt(1 - rho^2) e, so each coordinate pair has
  correlation rho and ``I(X; Z) = -(d/2) ln(1 - rho^2)`` exactly.
* ``transform``: an invertible per-coordinate map applied to x and z of a Gaussian pair
  (``cubic``: v^3, ``exp``: e^v, ``cauchy``: the Cauchy quantile of Phi(v), heavy-tailed with no
  mean). MI is invariant under such maps, so the truth is the Gaussian's.
* ``independent``: x and z independent Gaussians, MI 0.
* ``mixture``: a categorical label z uniform over K classes and x | z ~ N(sep * mu_z, I_d) with
  orthonormal class means. MI has no closed form; it is computed from the exact densities by Monte
  Carlo (``mi_stderr_nats`` recorded) and is below H(z) = ln K.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

KINDS = ("gaussian", "independent", "mixture")
TRANSFORMS = ("none", "cubic", "exp", "cauchy")
LN2 = math.log(2.0)


def gaussian_mi(dim: int, rho: float) -> float:
    """I(X; Z) in nats for ``dim`` independent coordinate pairs of correlation ``rho``."""
    return -0.5 * dim * math.log1p(-rho * rho)


def _apply_transform(v: np.ndarray, name: str) -> np.ndarray:
    if name == "none":
        return v
    if name == "cubic":
        return v**3
    if name == "exp":
        return np.exp(v)
    if name == "cauchy":
        # Phi(v) then the Cauchy quantile tan(pi (u - 1/2)), i.e. tan(pi/2 * erf(v / sqrt 2)).
        import torch

        return np.tan(0.5 * np.pi * torch.erf(torch.from_numpy(v / math.sqrt(2.0))).numpy())
    raise ValueError(f"transform must be one of {TRANSFORMS}; got {name!r}")


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
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {self.kind!r}")
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
        elif self.kind == "independent":
            mi, method, se = 0.0, "independent", 0.0
        else:
            mi, se = self._mixture_mi(mc_samples, seed)
            method = f"Monte Carlo over exact densities, {mc_samples} samples"
        return {"mi_nats": mi, "mi_bits": mi / LN2, "mi_method": method, "mi_stderr_nats": se,
                "distribution": asdict(self)}

    def _mixture_mi(self, n: int, seed: int) -> tuple[float, float]:
        # I = E[log p(x|y) - log p(x)], p(x) = mean_k p(x|k); the Gaussian normalizers cancel.
        # Computed on the untransformed x: MI is invariant under the per-coordinate transform.
        rng = np.random.default_rng(seed)
        y = rng.integers(0, self.classes, size=n)
        mu = self.sep * self._means()
        x = rng.standard_normal((n, self.dim)) + mu[y]
        logp = -0.5 * ((x[:, None, :] - mu[None, :, :]) ** 2).sum(-1)  # (n, K) up to a constant
        mx = logp.max(1, keepdims=True)
        log_mix = (mx + np.log(np.exp(logp - mx).mean(1, keepdims=True)))[:, 0]
        terms = logp[np.arange(n), y] - log_mix
        return float(terms.mean()), float(terms.std(ddof=1) / math.sqrt(n))


def write_dataset(spec: Spec, rows: int, shards: int, output: str, seed: int = 0,
                  row_group_size: int = 65536) -> dict:
    """Write ``rows`` samples of ``spec`` as ``shards`` Parquet files plus ``ground_truth.json``.

    Columns: ``row_id`` (int64), ``x`` (fixed-size list<float32>[dim]) and ``z`` (the same, or an
    int64 label for ``mixture``). Each shard is generated from its own seed, so memory is bounded
    by one shard and the dataset is identical for a given seed whatever the machine. Page checksums
    are written so readers can detect corrupted pages.

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

"""Deterministic train / validation / test assignment of rows.

A row's split is a function of a 64-bit row key only (a row-id column when the data has one,
otherwise a hash of the file name and the row's position in it), never of the run's seed, the
worker count or the order rows arrive in. The same row therefore lands in the same split in every
run, on one process or on a cluster, and a test row can never leak into training.
"""

from __future__ import annotations

import hashlib

import numpy as np

TRAIN, VAL, TEST = 0, 1, 2
_SALT = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer: a fast, well-mixed bijection on uint64."""
    with np.errstate(over="ignore"):
        z = (x.astype(np.uint64) + _SALT).astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def file_key(name: str) -> np.uint64:
    """A stable 64-bit key for a file's name: callers pass its path relative to the dataset's
    folder (``DatasetInfo.key_name``), so moving the dataset keeps splits and Hive partitions with
    equal file names differ. A leading "/" or scheme is not stripped: pass relative names."""
    return np.uint64(int.from_bytes(hashlib.blake2b(name.rstrip("/").encode(), digest_size=8).digest(), "little"))


def row_keys(n: int, start: int = 0, file: str | None = None) -> np.ndarray:
    """Keys for rows ``start .. start+n-1`` of a file (or of an in-memory array if ``file`` is None)."""
    pos = np.arange(start, start + n, dtype=np.uint64)
    if file is None:
        return pos
    with np.errstate(over="ignore"):
        return _splitmix64(pos) ^ file_key(file)


def assign(keys: np.ndarray, val_fraction: float, test_fraction: float, split_seed: int = 0) -> np.ndarray:
    """Split code (TRAIN=0, VAL=1, TEST=2) for each key.

    Args:
        keys: (n,) integer row keys (any integer dtype; row ids are used as they are).
        val_fraction, test_fraction: fractions in [0, 1) with a sum below 1.
        split_seed: which train / validation assignment of the non-test rows (0: the canonical
            one). The test rows never depend on it: replicates re-draw validation rows only.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction and test_fraction must be in [0, 1) with sum < 1; "
            f"got {val_fraction} and {test_fraction}"
        )
    u = (_splitmix64(np.asarray(keys).astype(np.uint64)) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    out = np.full(u.shape, TRAIN, dtype=np.int8)
    if split_seed:
        with np.errstate(over="ignore"):
            salted = np.asarray(keys).astype(np.uint64) ^ _splitmix64(np.full(1, split_seed, np.uint64))
        u2 = (_splitmix64(salted) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        out[u2 < val_fraction / (1.0 - test_fraction)] = VAL
    else:
        out[u < val_fraction + test_fraction] = VAL
    out[u < test_fraction] = TEST
    return out

"""Ray Data input: validated Parquet row groups -> normalized (x, z) batches of one split.

The unit of work is one Parquet row group. Each Ray Data task reads its row group with pyarrow
(only the needed columns), converts it with the same code as the in-process path
(:func:`mine_dist.io.to_array`), assigns each row its deterministic split from the same row keys
(file name + position, or the row-id column), keeps the rows of the requested split and applies
the normalizer fitted on the train split. Only one row group per task is ever in memory, so
memory stays flat whatever the number of rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from mine_dist import io, split
from mine_dist.normalize import Normalizer


@dataclass(frozen=True)
class Unit:
    file: str
    row_group: int
    start: int  # position of the row group's first row within its file
    rows: int


def units(info: io.DatasetInfo, max_rows: int | None = None) -> list[Unit]:
    """One work unit per row group of every file (the first row groups holding ``max_rows``)."""
    out = []
    total = 0
    for f in info.files:
        if max_rows is not None and total >= max_rows:
            break
        md = info.open(f).metadata
        start = 0
        for i in range(md.num_row_groups):
            n = md.row_group(i).num_rows
            if n and (max_rows is None or total < max_rows):
                out.append(Unit(f, i, start, n))
                total += n
            start += n
    return out


def read_unit(u: Unit, info: io.DatasetInfo, which: int, val_fraction: float, test_fraction: float,
              drop_nonfinite: bool, split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of split ``which`` in one row group, as (n, dx), (n, dz) arrays: float32 for float16 /
    float32 list columns (read from the Arrow buffers without a float64 copy; ``Normalizer.apply``
    gives the same values as from float64), float64 otherwise."""
    from mine_dist import storage

    cols = list(dict.fromkeys(list(info.x.columns) + list(info.z.columns) + ([info.row_id] if info.row_id else [])))
    where = storage.describe(u.file)
    try:
        t: pa.Table = info.open(u.file).read_row_group(u.row_group, columns=cols)
    except (OSError, pa.ArrowException) as e:
        raise io.DataError(f"failed reading {where}: {str(e).splitlines()[0]}") from None
    keys = (t.column(info.row_id).to_numpy().astype(np.uint64) if info.row_id
            else split.row_keys(t.num_rows, u.start, info.key_name(u.file)))
    keep = split.assign(keys, val_fraction, test_fraction, split_seed) == which
    x = io.to_array(t, info.x, where, keep_float32=True)[keep]
    z = io.to_array(t, info.z, where, keep_float32=True)[keep]
    bad = io.nonfinite_rows(x) | io.nonfinite_rows(z)
    if bad.any():
        if not drop_nonfinite:
            raise io.DataError(f"{int(bad.sum())} row(s) with NaN/Inf in {where} (row group {u.row_group}); "
                               f"pass --drop-nonfinite to skip them")
        x, z = x[~bad], z[~bad]
    return x, z


GROUPED_BELOW = 0.9


@dataclass
class Scan:
    """What one pass over every row group tells the driver before training starts."""

    counts: dict  # split code -> rows
    dropped: int  # non-finite rows dropped
    sample_x: np.ndarray  # train rows sampled uniformly (for fitting the normalizer)
    sample_z: np.ndarray
    val_x: np.ndarray  # validation rows sampled uniformly (raw values)
    val_z: np.ndarray
    grouping: float  # within-row-group share of the variance of (x, z): ~1 for i.i.d. row order

    @property
    def grouped(self) -> bool:
        """Rows are sorted or grouped: a row group sees only part of the distribution."""
        return self.grouping < GROUPED_BELOW


def _scan_unit(u: Unit, info: io.DatasetInfo, fractions, drop_nonfinite: bool, k_train: int, k_val: int,
               seed: int) -> dict:
    from mine_dist import storage

    cols = list(dict.fromkeys(list(info.x.columns) + list(info.z.columns) + ([info.row_id] if info.row_id else [])))
    where = storage.describe(u.file)
    try:
        pf = info.open(u.file)
        t = pf.read_row_group(u.row_group, columns=cols)
    except (OSError, pa.ArrowException) as e:
        raise io.DataError(f"failed reading {where}: {str(e).splitlines()[0]}") from None
    io.check_statistics(pf.metadata, u.row_group, t, (info.x, info.z), where)
    x, z = io.to_array(t, info.x, where), io.to_array(t, info.z, where)
    keys = (t.column(info.row_id).to_numpy().astype(np.uint64) if info.row_id
            else split.row_keys(t.num_rows, u.start, info.key_name(u.file)))
    codes = split.assign(keys, *fractions)
    bad = io.nonfinite_rows(x) | io.nonfinite_rows(z)
    if bad.any() and not drop_nonfinite:
        r = int(np.flatnonzero(bad)[0])
        side = "x" if not np.isfinite(x[r]).all() else "z"
        raise io.DataError(
            f"{int(bad.sum())} row(s) with NaN/Inf in --{side} of {where} (first at row {u.start + r}); "
            f"pass --drop-nonfinite to skip them")
    good = ~bad
    xz = np.concatenate([x[good], z[good]], axis=1)
    # Sufficient statistics of this row group's values, to detect sorted / grouped row order.
    stats = np.stack([np.full(xz.shape[1], xz.shape[0], np.float64), xz.sum(0), (xz**2).sum(0)])
    rng = np.random.default_rng([seed, u.row_group, int(split.file_key(u.file) % (1 << 32))])
    out = {"dropped": int(bad.sum()), "stats": stats}
    for code in (split.TRAIN, split.VAL, split.TEST):
        out[f"n{code}"] = int(((codes == code) & good).sum())
    for code, k, name in ((split.TRAIN, k_train, "s"), (split.VAL, k_val, "v")):
        idx = np.flatnonzero((codes == code) & good)
        if idx.size > k:
            idx = np.sort(rng.choice(idx, k, replace=False))
        out[name + "x"], out[name + "z"] = x[idx], z[idx]
    return out


def scan(info: io.DatasetInfo, fractions, drop_nonfinite: bool, sample_rows: int, val_rows: int,
         seed: int = 0, max_rows: int | None = None, in_driver: bool = False) -> Scan:
    """One parallel pass (Ray tasks, one per row group) over the whole dataset, before training;
    ``in_driver``: the same pass in this process (small data: no task start-up).

    Counts rows per split, rejects NaN/Inf naming the file (or counts the rows dropped), and keeps a
    uniform sample of train rows (normalizer) and of validation rows (early stopping), each row group
    contributing in proportion to its size.

    Raises:
        DataError: non-finite values, nulls, ragged lists, unreadable row groups.
    """
    import ray

    us = units(info, max_rows)
    total = max(1, sum(u.rows for u in us))

    @ray.remote(num_cpus=0.5)
    def task(u, k_train, k_val):
        return _scan_unit(u, info, fractions, drop_nonfinite, k_train, k_val, seed)

    quota = [(int(np.ceil(sample_rows * u.rows / total)) + 1, int(np.ceil(val_rows * u.rows / total)) + 1) for u in us]
    if in_driver:
        try:
            parts = [_scan_unit(u, info, fractions, drop_nonfinite, kt, kv, seed) for u, (kt, kv) in zip(us, quota)]
        except io.DataError:
            raise
        except Exception as e:  # noqa: BLE001 - as a failed scan task reports it
            raise io.DataError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
        return _combine(parts, sample_rows, val_rows)
    refs = [task.remote(u, kt, kv) for u, (kt, kv) in zip(us, quota)]
    index = {r: i for i, r in enumerate(refs)}
    parts = [None] * len(refs)
    try:
        while refs:  # collect as they finish; the first data error cancels the rest
            done, refs = ray.wait(refs, num_returns=1)
            # in unit order, whatever the completion order: the normalizer sample and the
            # validation rows are then the same in every run (and as in the driver-side scan)
            parts[index[done[0]]] = ray.get(done[0])
    except ray.exceptions.RayTaskError as e:
        for r in refs:
            ray.cancel(r)
        cause = e.cause if isinstance(getattr(e, "cause", None), Exception) else e
        raise (cause if isinstance(cause, io.DataError) else io.DataError(str(cause).splitlines()[0])) from None
    return _combine(parts, sample_rows, val_rows)


def _combine(parts: list[dict], sample_rows: int, val_rows: int) -> Scan:
    counts = {c: sum(p[f"n{c}"] for p in parts) for c in (split.TRAIN, split.VAL, split.TEST)}
    cat = lambda k: np.concatenate([p[k] for p in parts])  # noqa: E731
    return Scan(counts, sum(p["dropped"] for p in parts), cat("sx")[:sample_rows], cat("sz")[:sample_rows],
                cat("vx")[:val_rows], cat("vz")[:val_rows], within_share([p["stats"] for p in parts]))


def within_share(stats: list[np.ndarray]) -> float:
    """Share of the total variance that lies within row groups (the smallest over coordinates).

    Each element is a (3, d) array [count, sum, sum of squares] for one row group. For rows in
    random order this is ~1 on every coordinate; data sorted or grouped by any coordinate shows a
    share well below 1 on that coordinate.
    """
    st = np.stack([s for s in stats if s[0, 0] > 1])
    if len(st) < 2:
        return 1.0
    n, s1, s2 = st[:, 0], st[:, 1], st[:, 2]
    within = (s2 - s1**2 / n).sum(0)
    N, S1, S2 = n.sum(0), s1.sum(0), s2.sum(0)
    total = S2 - S1**2 / N
    ok = total > 0
    return float(np.min(within[ok] / total[ok])) if ok.any() else 1.0


def split_dataset(info: io.DatasetInfo, which: int, val_fraction: float, test_fraction: float,
                  drop_nonfinite: bool, nx: Normalizer | None = None, nz: Normalizer | None = None,
                  shuffle_units: bool = False, seed: int = 0, max_rows: int | None = None,
                  global_shuffle: bool = False, materialize: bool = False, in_driver: bool = False,
                  split_seed: int = 0):
    """A Ray Dataset with float32 columns ``x`` (n, dx) and ``z`` (n, dz) for one split.

    Args:
        which: :data:`split.TRAIN`, :data:`split.VAL` or :data:`split.TEST`.
        nx, nz: normalizers to apply (``None``: raw values, used to fit them).
        shuffle_units: visit row groups in a random order (training).
        global_shuffle: shuffle all rows (an all-to-all stage); needed when rows are sorted or
            grouped (see :func:`within_share`).
        materialize: read and normalize the split once into the object store; every epoch then
            iterates those blocks (in a new random order, or reshuffled) instead of re-reading the
            files. Only for splits that fit the object store (see :func:`fits_object_store`).
        in_driver: with ``materialize``, read the row groups in this process and put the same
            blocks (one per row group) in the object store: no Ray Data execution (small data).
    """
    import ray.data

    us = units(info, max_rows)
    if shuffle_units:
        us = [us[i] for i in np.random.default_rng(seed).permutation(len(us))]

    def load(batch: dict) -> dict:
        xs, zs = [], []
        for f, rg, start, rows in zip(batch["file"], batch["row_group"], batch["start"], batch["rows"]):
            u = Unit(str(f), int(rg), int(start), int(rows))
            x, z = read_unit(u, info, which, val_fraction, test_fraction, drop_nonfinite, split_seed)
            xs.append(x if nx is None else nx.apply(x))
            zs.append(z if nz is None else nz.apply(z))
        # One row group per call (batch_size=1): no concatenate, and no astype copy of what is
        # already float32: no copies beyond the split mask's and the normalizer's.
        one = lambda a: (a[0] if len(a) == 1 else np.concatenate(a)).astype(np.float32, copy=False)  # noqa: E731
        return {"x": one(xs), "z": one(zs)}

    if materialize and in_driver:
        from ray.data.block import BlockAccessor

        blocks = [load({"file": [u.file], "row_group": [u.row_group], "start": [u.start], "rows": [u.rows]}) for u in us]
        ds = ray.data.from_blocks([BlockAccessor.batch_to_block(b) for b in blocks if len(b["x"])])
        ds = ds if global_shuffle else ds.randomize_block_order()
        return ds.random_shuffle(seed=seed) if global_shuffle else ds
    ds = ray.data.from_items([asdict(u) for u in us], override_num_blocks=len(us))
    # Half a CPU per read task: a worker holding a fractional CPU on a small node must leave room
    # for at least one read task, or Ray Data waits forever for a whole free CPU.
    ds = ds.map_batches(load, batch_size=1, batch_format="numpy", num_cpus=0.5)
    if materialize:
        ds = ds.materialize()
        if not global_shuffle:
            ds = ds.randomize_block_order()  # a new row-group order every epoch
    # A full shuffle every epoch when rows are grouped: row-group order plus a local buffer would
    # hand each batch rows from a few regions only, and the in-batch "marginal" pairs would not
    # come from the product of marginals.
    return ds.random_shuffle(seed=seed) if global_shuffle else ds


def fits_object_store(rows: int, dim: int, share: float = 0.25) -> bool:
    """Whether ``rows`` float32 rows of ``dim`` values take at most ``share`` of the cluster's
    object store (leaving the rest for streaming, shuffles and other runs)."""
    import ray

    store = float(ray.cluster_resources().get("object_store_memory", 0.0))
    return rows * dim * 4 <= share * store


def collect_split(info: io.DatasetInfo, which: int, val_fraction: float, test_fraction: float,
                  drop_nonfinite: bool, nx: Normalizer, nz: Normalizer, max_rows: int, seed: int = 0,
                  max_dataset_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read up to ``max_rows`` rows of one split on the driver with pyarrow, row groups in a seeded
    random order (so a capped sample of sorted data still spans it), normalized, float32.

    For the held-out test split: a driver-side pass is much cheaper than a Ray Data execution for
    the few hundred thousand rows an estimate needs."""
    us = units(info, max_dataset_rows)
    xs, zs, n = [], [], 0
    for i in np.random.default_rng(seed).permutation(len(us)):
        x, z = read_unit(us[i], info, which, val_fraction, test_fraction, drop_nonfinite)
        if len(x):
            xs.append(nx.apply(x))
            zs.append(nz.apply(z))
            n += len(x)
        if n >= max_rows:
            break
    if not xs:
        return np.zeros((0, info.x.dim), np.float32), np.zeros((0, info.z.dim), np.float32)
    return np.concatenate(xs)[:max_rows], np.concatenate(zs)[:max_rows]

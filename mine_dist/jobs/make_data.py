"""Generated datasets with known MI as a job: guard the output, write shards and ground_truth.json."""

from __future__ import annotations

import time

from mine_dist import storage, synthetic
from mine_dist.jobs.common import check_not_in_ray_job_dir, log


def make_data(kind: str, params: dict, rows: int, shards: int, output: str, seed: int = 0,
              overwrite: bool = False) -> dict:
    """Write ``rows`` samples of ``synthetic.make_spec(kind, **params)`` to ``output``.

    ``overwrite`` replaces only a directory that holds a mine-dist dataset (``*.parquet`` and
    ``ground_truth.json``), never anything else.

    Returns:
        The ground-truth record.

    Raises:
        ValueError: unknown kind or parameter. FileExistsError: the output holds a dataset (without
            ``overwrite``) or files that are not one.
    """
    spec = synthetic.make_spec(kind, **params)
    gt_uri = storage.join(output, "ground_truth.json")
    check_not_in_ray_job_dir(output)
    if storage.exists(output):
        if storage.exists(gt_uri) and not overwrite:
            raise FileExistsError(f"{storage.describe(output)} already holds a dataset; pass --overwrite to replace it")
        files = storage.list_files(output)
        others = [f for f in files if not (f.endswith(".parquet") or f.endswith("/ground_truth.json"))]
        if others or (files and not storage.exists(gt_uri)):
            raise FileExistsError(f"{storage.describe(output)} holds files that are not a mine-dist dataset "
                                  f"(e.g. {storage.describe((others or files)[0])}); choose an empty or new --output")
        if overwrite:
            storage.delete_tree(output)
    t0 = time.perf_counter()
    truth = synthetic.write_dataset(spec, rows, shards, output, seed=seed)
    log(f"wrote {rows} rows in {shards} shard(s) to {storage.describe(output)} in {time.perf_counter() - t0:.1f} s; "
        f"true MI {truth['mi_nats']:.4f} nats ({truth['mi_bits']:.4f} bits)")
    return truth

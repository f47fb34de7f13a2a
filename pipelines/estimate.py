"""Estimate I(X;Z) on Ray: Ray Data streams the Parquet rows, Ray Train fits the critic.

Local (starts a private Ray automatically):
    python pipelines/estimate.py --data demo/data --output demo/runs

On a cluster (the same options; data and output in object storage):
    ray job submit --working-dir . -- python pipelines/estimate.py \
        --data s3://bucket/embeddings/ --x emb --z label --output s3://bucket/mi-runs/ --workers 4

Options are exactly those of ``mine-dist estimate``; here ``--workers`` defaults to ``auto``: one
Ray Train worker, or, for data of at most 10M values (rows x (dim x + dim z);
``MINE_DIST_IN_PROCESS_MAX_VALUES``, 0: never) and no ``--gpu``, training in this job's driver,
with the same steps and checkpoints and without Ray Train's start-up (about 20 s). ``--workers 1``
always uses Ray Train.
"""

import time

STARTED = time.time()  # noqa: E402 - before the imports: benchmarks/ray_overhead.py times them

import argparse  # noqa: E402
import sys  # noqa: E402

from mine_dist.cli import add_estimate_args, run_entry_point  # noqa: E402
from mine_dist.distributed.runtime import mark  # noqa: E402

if __name__ == "__main__":
    mark("driver_start", STARTED)
    mark("driver_imports")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_estimate_args(parser)
    parser.set_defaults(workers="auto", command="estimate")
    code = run_entry_point(parser)
    mark("driver_end")
    sys.exit(code)

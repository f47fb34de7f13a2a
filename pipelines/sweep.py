"""Sweep estimator configurations with Ray Tune (each trial a Ray Train run), select on the
validation split, report the winner on the test split.

Local:
    python pipelines/sweep.py --data demo/data --output demo/sweeps --trials 8 --steps 2000

On a cluster:
    ray job submit --working-dir . -- python pipelines/sweep.py \
        --data s3://bucket/embeddings/ --x emb --z label --output s3://bucket/mi-sweeps/ \
        --trials 32 --workers 2 --space sweeps/space.yaml

Writes <output>/<sweep_id>/: best.json (winner's config + test estimate), trials.parquet,
trials.png, best_checkpoint/, estimate.json/curves.* of the winner. `mine-dist estimate --config
<output>/<sweep_id>/best.json` reuses the winning configuration. Options: `mine-dist sweep --help`.
"""

import argparse
import sys

from mine_dist.cli import add_sweep_args, run_entry_point

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sweep_args(parser)
    parser.set_defaults(command="sweep")
    sys.exit(run_entry_point(parser))

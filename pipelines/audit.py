"""Run a scheduled MI audit: every check of a spec as an estimate, one history row per check,
alerts on absolute limits and on change since the previous slot (exit 6 when one fires).

Local:
    python pipelines/audit.py --spec examples/digits/audit.yaml --output audits-out

Scheduled on a cluster (see cluster/README.md):
    ray job submit --working-dir . -- python pipelines/audit.py \
        --spec cluster/audits/nightly.yaml --output s3://bucket/audits --run-id 2026-11-29

Re-running the same --run-id (slot) adds no history rows and only runs checks not yet recorded.
History: mine-dist report --history <output>/history --audit NAME
"""

import argparse
import sys

from mine_dist.cli import add_audit_args, run_entry_point

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_audit_args(parser)
    parser.set_defaults(command="audit")
    sys.exit(run_entry_point(parser))

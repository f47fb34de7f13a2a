"""The application layer: typed jobs over the library (estimate, sweep, audit, report).

No argparse here: the CLI (``mine_dist.cli``) turns flags into these frozen specs, and a Python user
can build them directly::

    from mine_dist.io import DataSpec
    from mine_dist.jobs import EstimateJob

    result = EstimateJob(DataSpec("data/g5"), output="runs").run()
    print(result.estimate.mi_nats, result.run_dir)
"""

from mine_dist.jobs.estimate import EstimateJob, EstimateResult

__all__ = ["EstimateJob", "EstimateResult"]

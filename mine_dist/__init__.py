"""mine-dist: Mutual Information Neural Estimation (MINE) at data-lake scale.

The library layers (imports point down only): ``bounds``/``ema`` (pure tensor math) <- ``critics``
<- ``estimator`` <- ``sync`` reductions; ``synthetic``, ``io``, ``storage`` for data; Ray only in
``mine_dist.distributed`` and ``pipelines/``.
"""

from mine_dist.critics import CriticConfig
from mine_dist.estimator import MINE, EstimatorConfig, MIEstimate
from mine_dist.objective import MutualInformation, ObjectiveConfig

__all__ = ["MINE", "EstimatorConfig", "CriticConfig", "MIEstimate", "MutualInformation", "ObjectiveConfig"]
__version__ = "0.1.0"

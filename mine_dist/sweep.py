"""Search spaces for estimator sweeps: validated from YAML, sampled deterministically.

A space maps estimator settings to either a list of choices or a log-uniform range::

    critic: [joint, separable]
    depth: [1, 2, 3]
    width: [64, 128, 256]
    activation: [relu, elu]
    lr: {loguniform: [1.0e-4, 3.0e-3]}
    batch_size: [128, 256, 512]
    ema_rate: [0.01, 0.05]
    bound: [mine, mine-f]

Trials are drawn here with a seeded generator (not by Tune's searcher), so a sweep's list of
configurations is a pure function of (space, trials, seed): a resumed sweep re-creates exactly the
same trials, and every configuration is validated on the driver before any trial starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mine_dist import bounds as B
from mine_dist.critics import CriticConfig
from mine_dist.estimator import EstimatorConfig

CRITIC_KEYS = {"critic": "kind", "depth": "depth", "width": "width", "activation": "activation",
               "embed_dim": "embed_dim"}
ESTIMATOR_KEYS = ("lr", "batch_size", "ema_rate", "bound", "smile_tau", "normalize")
KEYS = tuple(CRITIC_KEYS) + ESTIMATOR_KEYS
POSITIVE = ("lr", "batch_size", "ema_rate", "depth", "width", "embed_dim", "smile_tau")

# Why sweeps refuse SMILE (measured: docs/benchmarks.md, "Sweep vs default configuration").
NOT_SWEPT_BA = ("trials are compared on the DV bound of their critic on the validation rows, which needs a pair "
                "critic T(x, z); ba's classifier and auto's choice of it are not swept (estimate ba directly)")
NOT_A_BOUND = ("its clipped value is not a lower bound and can exceed the true MI, and a sweep picks the "
               "highest validation value, which rewards exactly that overshoot (a 20-d sweep picked a SMILE "
               "trial reporting 22.4 nats for a truth of 16.6); sweep the lower bounds (mine, dv, mine-f, "
               "infonce) and run smile on its own")

DEFAULT_SPACE = {
    "critic": ["joint", "separable"],
    "depth": [1, 2, 3],
    "width": [64, 128, 256],
    "activation": ["relu", "elu"],
    "lr": {"loguniform": [1e-4, 3e-3]},
    "batch_size": [128, 256, 512],
    "ema_rate": [0.01, 0.05],
}


@dataclass(frozen=True)
class SearchSpace:
    """Validated search space: ``choices`` (key -> tuple) and ``loguniform`` (key -> (lo, hi))."""

    choices: dict = field(default_factory=dict)
    loguniform: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: list(v) for k, v in self.choices.items()}
        d.update({k: {"loguniform": list(v)} for k, v in self.loguniform.items()})
        return d


def parse_space(raw: dict | None, where: str = "search space") -> SearchSpace:
    """Validate a space given as a dict (from YAML). Errors name the key and the value.

    Raises:
        ValueError: not a mapping, unknown key, empty choice list, non-positive numbers, bad range.
    """
    if raw is None:
        raw = DEFAULT_SPACE
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{where} must be a non-empty mapping of setting -> choices; got {raw!r}")
    choices, logu = {}, {}
    for key, spec in raw.items():
        if key not in KEYS:
            raise ValueError(f"{where}: unknown key {key!r}; known keys: {sorted(KEYS)}")
        if isinstance(spec, dict):
            if set(spec) != {"loguniform"}:
                raise ValueError(f"{where}: {key} must be a list of choices or {{loguniform: [low, high]}}; got {spec!r}")
            r = spec["loguniform"]
            if (not isinstance(r, (list, tuple)) or len(r) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)):
                raise ValueError(f"{where}: {key} loguniform needs [low, high] numbers; got {r!r}")
            lo, hi = float(r[0]), float(r[1])
            if not (0 < lo <= hi and math.isfinite(hi)):
                raise ValueError(f"{where}: {key} loguniform range must satisfy 0 < low <= high; got [{lo}, {hi}]")
            logu[key] = (lo, hi)
            continue
        vals = spec if isinstance(spec, (list, tuple)) else [spec]
        if len(vals) == 0:
            raise ValueError(f"{where}: {key} has an empty choice list")
        if key in POSITIVE:
            for v in vals:
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                    raise ValueError(f"{where}: {key} choices must be positive numbers; got {v!r}")
        choices[key] = tuple(vals)
    for name in choices.get("bound", ()):
        if name == B.AUTO or (name in B.REGISTRY and B.REGISTRY[name].readout == "ba"):
            raise ValueError(f"{where}: bound {name!r} cannot be swept: {NOT_SWEPT_BA}")
        if name in B.REGISTRY and not B.REGISTRY[name].sweepable:
            raise ValueError(f"{where}: bound {name!r} cannot be swept: {NOT_A_BOUND}")
    space = SearchSpace(choices, logu)
    # Every combination's parts must be valid: build one config per choice to fail early.
    for key, vals in choices.items():
        for v in vals:
            try:
                config_from_draw(EstimatorConfig(), {key: v})
            except ValueError as e:
                raise ValueError(f"{where}: {key}={v!r} is invalid: {e}") from None
    return space


def config_from_draw(base: EstimatorConfig, draw: dict) -> EstimatorConfig:
    """``base`` with the drawn settings applied (critic keys go into the critic config)."""
    d = base.to_dict()
    critic = dict(d.pop("critic"))
    for k, v in draw.items():
        if k in CRITIC_KEYS:
            critic[CRITIC_KEYS[k]] = v
        else:
            d[k] = v
    d["critic"] = CriticConfig(**critic)
    return EstimatorConfig.from_dict(d)


def sample_trials(space: SearchSpace, base: EstimatorConfig, trials: int, seed: int) -> list[EstimatorConfig]:
    """``trials`` configurations drawn from ``space`` (trial 0 is ``base`` itself: the default is
    always in the comparison), deterministic in ``seed``."""
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be an int >= 1; got {trials!r}")
    rng = np.random.default_rng(seed)
    out = [base]
    while len(out) < trials:
        draw = {k: vals[int(rng.integers(len(vals)))] for k, vals in space.choices.items()}
        draw = {k: (v.item() if hasattr(v, "item") else v) for k, v in draw.items()}
        for k, (lo, hi) in space.loguniform.items():
            draw[k] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        out.append(config_from_draw(base, draw))
    return out

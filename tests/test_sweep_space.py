"""Search spaces: validation on the driver (every raise pinned) and deterministic trials."""

import pytest

from mine_dist.estimator import EstimatorConfig
from mine_dist.sweep import DEFAULT_SPACE, parse_space, sample_trials


def test_default_space_samples_valid_distinct_trials():
    space = parse_space(None)
    base = EstimatorConfig()
    trials = sample_trials(space, base, 6, seed=3)
    assert trials[0] == base and len(trials) == 6
    assert len({t for t in trials}) > 1
    assert all(1e-4 <= t.lr <= 3e-3 for t in trials[1:])
    assert sample_trials(space, base, 6, seed=3) == trials  # deterministic
    assert set(space.to_dict()) == set(DEFAULT_SPACE)


def test_scalar_is_a_single_choice():
    t = sample_trials(parse_space({"width": 32}), EstimatorConfig(), 2, seed=0)[1]
    assert t.critic.width == 32


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"learning_rate": [1e-3]}, r"unknown key 'learning_rate'; known keys"),
        ({"lr": {"loguniform": [-1e-3, 1e-2]}}, r"lr loguniform range must satisfy 0 < low <= high"),
        ({"lr": [-0.001]}, r"lr choices must be positive numbers; got -0.001"),
        ({"width": []}, r"width has an empty choice list"),
        ({"bound": ["mine", "kl"]}, r"bound='kl' is invalid: bound must be one of"),
        ({"bound": ["mine", "smile"]}, r"bound 'smile' cannot be swept: its clipped value is not a lower bound"),
        ({"activation": ["swish"]}, r"activation='swish' is invalid"),
        ({"bound": ["mine", "ba"]}, r"bound 'ba' cannot be swept: trials are compared on the DV bound"),
        ({"bound": ["auto"]}, r"bound 'auto' cannot be swept: trials are compared on the DV bound"),
        ({"lr": {"uniform": [1, 2]}}, r"lr must be a list of choices or \{loguniform: \[low, high\]\}"),
        ({"lr": {"loguniform": [1e-3]}}, r"lr loguniform needs \[low, high\] numbers"),
        ([1, 2], r"must be a non-empty mapping"),
        ({}, r"must be a non-empty mapping"),
    ],
)
def test_bad_spaces_fail_before_any_trial(raw, match):
    with pytest.raises(ValueError, match=match):
        parse_space(raw, where="space.yaml")


def test_trials_must_be_positive():
    with pytest.raises(ValueError, match="trials must be an int >= 1; got 0"):
        sample_trials(parse_space(None), EstimatorConfig(), 0, seed=0)


def test_cli_rejects_bad_space_file_before_ray(tmp_path, capsys):
    from mine_dist.cli import main

    (tmp_path / "s.yaml").write_text("lr: [0.001, -1]\n")
    rc = main(["sweep", "--data", str(tmp_path), "--space", str(tmp_path / "s.yaml"), "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "lr choices must be positive numbers; got -1" in err
    assert not any(p.name.startswith("sweep-") for p in tmp_path.iterdir())


def test_winner_is_the_best_selectable_trial_and_ceiling_breakers_are_marked():
    pytest.importorskip("ray")
    from mine_dist.distributed.sweep import ABOVE_CEILING, select_winner

    def row(i, status, dv, ceiling=10.0):
        return {"trial": i, "status": status, "best_val_dv_nats": dv, "val_ceiling_nats": ceiling, "error": None}

    rows = [row(0, "completed", 3.0), row(1, "stopped early (ASHA)", 4.0), row(2, "completed", 12.0),
            row(3, "error", float("nan")), row(4, "completed", 5.0, ceiling=4.5)]
    assert select_winner(rows)["trial"] == 1
    assert [r["status"] for r in rows] == ["completed", "stopped early (ASHA)", ABOVE_CEILING, "error", ABOVE_CEILING]
    with pytest.raises(RuntimeError, match=r"above log\(validation marginal pairs\)"):
        select_winner([row(0, "completed", 12.0)])
    with pytest.raises(RuntimeError, match="every trial failed"):
        select_winner([row(0, "error", float("nan"))])


def test_sweep_base_auto_is_mine_and_ba_is_refused():
    from mine_dist.io import DataSpec
    from mine_dist.jobs.sweep import SweepJob

    with pytest.raises(ValueError, match=r"--bound ba cannot be a sweep's base configuration: trials are compared"):
        SweepJob(DataSpec("nowhere"), EstimatorConfig(bound="ba")).run()
    trials = sample_trials(parse_space(None), EstimatorConfig().resolved(False), 3, seed=0)
    assert trials[0].bound == "mine"

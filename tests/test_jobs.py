"""The job API without the CLI (the README's Python example), and the typed options' errors."""

import json

import pytest

from mine_dist.distributed import RayOptions
from mine_dist.estimator import EstimatorConfig
from mine_dist.io import DataSpec
from mine_dist.jobs import EstimateJob
from tests.conftest import make_gaussian_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_gaussian_dataset(tmp_path_factory, "jobs", rows=3000, shards=2, dim=2, rho=0.7)


def test_readme_example_runs_an_estimate_through_the_job_api(data, tmp_path):
    cfg = EstimatorConfig.from_dict({"steps": 200, "batch_size": 128, "eval_every": 100, "bootstrap": 100})
    result = EstimateJob(DataSpec(str(data), x="x", z="z"), cfg, output=str(tmp_path), run_id="py",
                         progress=False).run()
    on_disk = json.loads((tmp_path / "py" / "estimate.json").read_text())
    assert result.run_dir == str(tmp_path / "py") and on_disk["run_id"] == "py"
    assert on_disk["mi_nats"] == pytest.approx(result.estimate.mi_nats) == pytest.approx(result.record["mi_nats"])
    truth = on_disk["ground_truth"]["mi_nats"]
    assert 0.5 * truth < result.estimate.mi_nats < truth + 0.1 and on_disk["workers"] == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"workers": 0}, r"workers must be an int >= 1 on the Ray path; got 0"),
    ({"shuffle": "random"}, r"shuffle must be one of \('auto', 'blocks', 'global'\); got 'random'"),
    ({"materialize": "yes"}, r"materialize must be one of"),
    ({"placement": "STRICT"}, r"placement must be one of \('PACK', 'SPREAD'\)"),
    ({"cpus_per_worker": 0}, r"cpus_per_worker must be a number > 0; got 0"),
    ({"max_failures": -1}, r"max_failures must be an int >= 0; got -1"),
    ({"max_test_rows": 1}, r"max_test_rows must be an int >= 2; got 1"),
])
def test_ray_options_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RayOptions(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"uri": ""}, r"--data must name a dataset; got ''"),
    ({"uri": "d", "x": " "}, r"--x must name at least one column"),
    ({"uri": "d", "max_rows": 1}, r"--max-rows must be >= 2; got 1"),
])
def test_data_spec_is_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataSpec(**kwargs)

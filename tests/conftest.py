import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray workers import test helpers (tests.*): they inherit PYTHONPATH from the driver at ray.init.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# Small critics are fastest on one thread, and a 2-core CI box is easily oversubscribed.
torch.set_num_threads(1)


def gaussian_pair(n: int, d: int, rho: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    z = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((n, d))
    return x, z


def make_gaussian_dataset(tmp_path_factory, name: str, rows: int, shards: int, dim: int = 3, rho: float = 0.7):
    """A sharded Gaussian dataset with ground_truth.json, written through the CLI (module fixtures)."""
    from mine_dist.cli import main

    out = tmp_path_factory.mktemp(name) / "g"
    assert main(["make-data", "gaussian", "--dim", str(dim), "--rho", str(rho), "--rows", str(rows),
                 "--shards", str(shards), "--output", str(out)]) == 0
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def _ray_off_at_exit():
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def local_ray(_ray_off_at_exit):
    """The session's local Ray (2 CPUs), started by the first test that asks for it and left running
    for the next one (on a 2-core box a start and shutdown cost ~10 s). Tests that need Ray off in
    this process (a subprocess driver starts its own) take ``no_local_ray`` first."""
    from mine_dist.distributed.runtime import ensure_ray

    ensure_ray(num_cpus=2)


@pytest.fixture
def no_local_ray():
    """Shut down the Ray that an earlier test left running in this process."""
    import ray

    ray.shutdown()

from tests.s3_server import s3_server  # noqa: E402,F401  (session fixture: a real SeaweedFS S3 server)

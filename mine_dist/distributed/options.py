"""How a run uses a Ray cluster, as one frozen, validated value (no Ray import here)."""

from __future__ import annotations

from dataclasses import dataclass

SHUFFLE_MODES = ("auto", "blocks", "global")
MATERIALIZE_MODES = ("auto", "always", "never")
PLACEMENTS = ("PACK", "SPREAD")


@dataclass(frozen=True)
class RayOptions:
    """Ray Train execution of an estimate, a sweep's trials or an audit check.

    Attributes:
        workers: Ray Train workers (>= 1; in-process runs carry no RayOptions).
        gpu: one GPU per worker (NCCL).
        cpus_per_worker: CPUs each worker reserves (None: leave room for data reads).
        max_failures: worker-group failures recovered from the latest checkpoint.
        max_test_rows: test rows scored on the driver.
        shuffle: ``blocks`` (random row-group order + local buffer), ``global`` (full shuffle each
            epoch) or ``auto`` (global when the scan finds rows sorted or grouped).
        materialize: read the train split once into the object store: ``auto`` (when it takes at
            most a quarter of it), ``always`` or ``never``.
        placement: Ray Train placement strategy.
        progress: rank 0 prints a line per validation check.
        driver_read_max_values: data of at most this many values (rows x (dim x + dim z)) is
            scanned, and its train split materialized, in the driver process instead of by Ray
            tasks (0: always Ray tasks). Training still runs on Ray Train workers.
    """

    workers: int = 1
    gpu: bool = False
    cpus_per_worker: float | None = None
    max_failures: int = 2
    max_test_rows: int = 500_000
    shuffle: str = "auto"
    materialize: str = "auto"
    placement: str = "PACK"
    progress: bool = True
    driver_read_max_values: int = 20_000_000

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1:
            raise ValueError(f"workers must be an int >= 1 on the Ray path; got {self.workers!r}")
        if self.cpus_per_worker is not None and not (isinstance(self.cpus_per_worker, (int, float))
                                                     and self.cpus_per_worker > 0):
            raise ValueError(f"cpus_per_worker must be a number > 0; got {self.cpus_per_worker!r}")
        if not isinstance(self.max_failures, int) or self.max_failures < 0:
            raise ValueError(f"max_failures must be an int >= 0; got {self.max_failures!r}")
        if not isinstance(self.max_test_rows, int) or self.max_test_rows < 2:
            raise ValueError(f"max_test_rows must be an int >= 2; got {self.max_test_rows!r}")
        if not isinstance(self.driver_read_max_values, int) or self.driver_read_max_values < 0:
            raise ValueError(f"driver_read_max_values must be an int >= 0; got {self.driver_read_max_values!r}")
        for name, allowed in (("shuffle", SHUFFLE_MODES), ("materialize", MATERIALIZE_MODES),
                              ("placement", PLACEMENTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {getattr(self, name)!r}")

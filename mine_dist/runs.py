"""Run records and artifacts: ``estimate.json``, ``curves.parquet``, ``curves.png``.

Layout under ``<output>/<run_id>/``. ``estimate.json`` is written last and atomically, so its
presence means the run is complete; a failed run removes its directory, so nothing partial stays
in storage. Credentials never enter a record (URIs go through :func:`storage.describe`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import platform
import secrets
import time

from mine_dist import storage


def new_run_id(prefix: str = "run") -> str:
    return f"{prefix}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    import numpy
    import pyarrow
    import torch

    import mine_dist

    v = {"mine_dist": mine_dist.__version__, "python": platform.python_version(), "torch": torch.__version__,
         "numpy": numpy.__version__, "pyarrow": pyarrow.__version__}
    try:
        from importlib.metadata import version

        v["ray"] = version("ray")
    except Exception:  # noqa: BLE001 - ray is optional for the in-process path
        pass
    return v


def build_record(run_id: str, result: dict, workers: int, info, truth: dict | None, started: str, t0: float,
                 run_dir: str) -> dict:
    """The estimate record (``estimate.json``, and a sweep's ``best.json``): the estimator's fields
    (``result``), then where the data came from, the versions, times and the run directory."""
    return {
        "run_id": run_id,
        **{k: v for k, v in result.items() if k != "curves"},
        "workers": workers,
        "data": info.record(),
        "x_columns": info.x.to_dict(),
        "z_columns": info.z.to_dict(),
        "ground_truth": truth,
        "versions": versions(),
        "started_at": started,
        "finished_at": now_iso(),
        "wall_s": round(time.perf_counter() - t0, 3),
        "run_dir": storage.describe(run_dir),
        "exit_code": 0,
    }


def read_config_file(uri: str) -> dict:
    """Estimator settings from a JSON file: a bare config, or a record / best.json (its ``config``).

    Raises:
        ValueError: unreadable or not JSON, with the URI named.
    """
    try:
        loaded = json.loads(storage.read_bytes(uri))
    except (storage.StorageError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read config {storage.describe(uri)}: {e}") from None
    cfg = loaded.get("config", loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(cfg, dict):
        raise ValueError(f"config {storage.describe(uri)} must hold a JSON object of estimator settings (or a "
                         f"record with a 'config' object); got {type(cfg).__name__}")
    return dict(cfg)


def read_ground_truth(data_uri: str) -> dict | None:
    """``ground_truth.json`` beside a generated dataset, if there is one."""
    base = data_uri.rstrip("/")
    if base.endswith(".parquet") or any(c in base for c in "*?["):
        base = base.rsplit("/", 1)[0]
    uri = storage.join(base, "ground_truth.json")
    try:
        return storage.read_json(uri) if storage.exists(uri) else None
    except storage.StorageError:
        return None


def check_run_dir_free(output: str, run_id: str) -> str:
    """The run directory URI; refuses to reuse one that holds a finished run."""
    run_dir = storage.join(output, run_id)
    if storage.exists(storage.join(run_dir, "estimate.json")):
        raise FileExistsError(f"run {run_id!r} already finished in {storage.describe(output)}; choose another --run-id")
    return run_dir


def write_run(run_dir: str, record: dict, curves: list[dict], truth: dict | None) -> None:
    """Write curves (parquet + png) and then the record, atomically and in that order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(curves) if curves else pa.table({"step": pa.array([], pa.int64())})
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    storage.write_bytes_atomic(storage.join(run_dir, "curves.parquet"), buf.getvalue().to_pybytes())
    storage.write_bytes_atomic(storage.join(run_dir, "curves.png"), plot_curves(record, curves, truth))
    storage.write_text_atomic(storage.join(run_dir, "estimate.json"), json.dumps(_jsonable(record), indent=2))


def _jsonable(o):
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    return o


def plot_curves(record: dict, curves: list[dict], truth: dict | None) -> bytes:
    """``curves.png`` (drawn by :func:`mine_dist.plots.run_curves`)."""
    from mine_dist import plots

    return plots.run_curves(record, curves, truth)


def summary(record: dict) -> str:
    """Human summary of a record (several lines).

    The number is a lower bound on I(X;Z) read on held-out rows, so it is printed as ``>= m`` with
    its one-sided 95% lower confidence limit; the two-sided interval is that of the critic's bound
    (test sampling), labelled so: its upper end is no upper limit for I(X;Z).
    """
    lo, hi = record["ci95_nats"]
    lower, lower_bits = record.get("lower95_nats"), record.get("lower95_bits")

    def one_sided(v, unit):
        return f", 95% one-sided >= {v:.4f} {unit}" if v is not None and math.isfinite(v) else ""

    lines = [
        f"lower bound on I(X;Z) on held-out rows: >= {record['mi_nats']:.4f} nats{one_sided(lower, 'nats')}",
        f"                                        >= {record['mi_bits']:.4f} bits{one_sided(lower_bits, 'bits')}",
    ]
    raw = record.get("bound_nats")
    if raw is not None and record["mi_nats"] == 0.0 and raw < 0:
        blo, bhi = record.get("bound_ci95_nats") or (math.nan, math.nan)
        lines.append(f"raw {record['bound']} bound {raw:.4f} nats (95% interval [{blo:.4f}, {bhi:.4f}]), clipped at 0 as "
                     f"MI >= 0: the critic found no dependence that holds on held-out rows")
    lines += [
        f"bound {record['bound']}: "
        + (f"95% interval of the mean of {len(record['replicates'])} replicates (test sampling and training) "
           if record.get("replicates") else "test-sampling 95% interval of this critic's bound ")
        + f"[{lo:.4f}, {hi:.4f}] nats "
        f"(not an upper limit on I(X;Z)); ESS of marginal pairs "
        + (f"{record['marginal_ess']:.0f}" if record.get("marginal_ess") is not None else "n/a"),
        f"test rows {record['n_test']}, train rows {record['n_train']}, "
        f"steps {record['steps']} (selected {record['best_step']}), workers {record['workers']}, "
        f"{record['wall_s']:.1f} s",
    ]
    if record.get("cap_nats") and record.get("bound") == "ba":
        lines.append(f"note: ba cannot exceed H(Z) = {record['cap_nats']:.3f} nats of the test labels "
                     f"({record['cap_nats'] / math.log(2):.3f} bits)")
    elif record.get("cap_nats"):
        lines.append(f"note: InfoNCE cannot exceed the mean log K = {record['cap_nats']:.3f} nats here")
    for w in record.get("warnings") or []:
        lines.append(f"WARNING: {w}")
    gt = record.get("ground_truth")
    if gt and gt.get("mi_nats") is not None:
        lines.append(f"ground truth {gt['mi_nats']:.4f} nats ({gt.get('mi_method', '')}); "
                     f"error {record['mi_nats'] - gt['mi_nats']:+.4f} nats")
    if record.get("run_dir"):
        lines.append(f"written to {record['run_dir']}")
    return "\n".join(lines)

"""Scheduled MI audits: a YAML spec of checks, an append-only history, alerts.

Spec (validated into frozen dataclasses; errors name the check and the field)::

    audit: nightly-embeddings
    workers: 1                      # per check; 0 = in-process
    concurrent: auto                # checks at once: auto (what the Ray cluster's CPUs allow) or N
    prepare: prepare.py             # optional: a Python script (relative to the spec) that makes the data;
                                    # run once, before anything else, when a check's data path is missing
    checks:
      - name: emb-vs-gender
        data: s3://bucket/embeddings/          # any URI; relative paths are from the spec's folder
        x: emb
        z: gender
        max_rows: 200000            # sample budget (rows streamed)
        estimator: {bound: mine, steps: 2000}  # inline settings, or
        # config: s3://bucket/sweeps/sweep-x/best.json   (a sweep's winner)
        alerts:
          max_mi: {value: 0.05, unit: fraction_of_h_z}  # nats | bits | fraction_of_h_z (categorical z)
          max_change: {value: 0.1, unit: nats}          # vs the previous slot of this check
          untrusted: true           # alert when the estimate carries warnings (not converged, ...)

History: one Parquet file per (audit, slot, check) under
``<output>/history/audit=<name>/slot=<slot>/<check>.parquet``, written atomically. Re-running a slot
overwrites the same keys, so rows are never duplicated, and checks already recorded as ``ok`` in that
slot are skipped, so a run killed half-way finishes the rest when re-run.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np

from mine_dist import rundir, storage

LN2 = math.log(2.0)
UNITS_MI = ("nats", "bits", "fraction_of_h_z")
UNITS_CHANGE = ("nats", "bits")
_NAME = rundir.ID_PATTERN  # audit and check names are path segments too
_CHECK_KEYS = {"name", "data", "x", "z", "row_id", "max_rows", "estimator", "config", "alerts", "workers"}
_TOP_KEYS = {"audit", "checks", "workers", "concurrent", "prepare"}


class SpecError(ValueError):
    """An invalid audit spec; the message names the check and the field."""


CHANGE_RULES = ("significant", "raw")
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Limit:
    value: float
    unit: str
    rule: str = "significant"  # max_change only: "significant" also needs the change to exceed the noise

    def nats(self, h_z: float | None) -> float:
        if self.unit == "nats":
            return self.value
        if self.unit == "bits":
            return self.value * LN2
        return self.value * (h_z if h_z is not None else math.nan)


@dataclass(frozen=True)
class Check:
    name: str
    data: str
    x: str
    z: str
    row_id: str | None = None
    max_rows: int | None = None
    estimator: dict = field(default_factory=dict)
    config: str | None = None
    workers: int = 1
    max_mi: Limit | None = None
    max_change: Limit | None = None
    untrusted: bool = False  # an alert when the estimate carries warnings


@dataclass(frozen=True)
class AuditSpec:
    audit: str
    checks: tuple[Check, ...]
    concurrent: int | None = None  # None = auto
    prepare: str | None = None  # a local script that makes missing check data (see ensure_data)


def _limit(raw, where: str, units: tuple, rules: tuple = ()) -> Limit:
    keys = {"value", "unit"} | ({"rule"} if rules else set())
    if not isinstance(raw, dict) or set(raw) - keys or "value" not in raw:
        extra = f", rule: {'|'.join(rules)}" if rules else ""
        raise SpecError(f"{where} must be {{value: NUMBER, unit: {'|'.join(units)}{extra}}}; got {raw!r}")
    v, unit = raw["value"], raw.get("unit", "nats")
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0 or not math.isfinite(v):
        raise SpecError(f"{where}.value must be a number >= 0; got {v!r}")
    if unit not in units:
        raise SpecError(f"{where}.unit must be one of {units}; got {unit!r}")
    rule = raw.get("rule", rules[0] if rules else "significant")
    if rules and rule not in rules:
        raise SpecError(f"{where}.rule must be one of {rules}; got {rule!r}")
    return Limit(float(v), unit, rule)


def parse_spec(raw, base_dir: str = ".") -> AuditSpec:
    """Validate a loaded YAML spec. Relative ``data`` / ``config`` paths are taken from ``base_dir``.

    Raises:
        SpecError: unknown keys, missing fields, bad names, units or thresholds.
    """
    if not isinstance(raw, dict):
        raise SpecError(f"audit spec must be a mapping with 'audit' and 'checks'; got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise SpecError(f"audit spec: unknown key(s) {unknown}; known: {sorted(_TOP_KEYS)}")
    name = raw.get("audit")
    if not isinstance(name, str) or not (_NAME.fullmatch(name) and len(name) <= rundir.MAX_ID_LEN):
        raise SpecError(f"audit spec: 'audit' must be a name of letters, digits, '.', '_', '-'; got {name!r}")
    checks_raw = raw.get("checks")
    if not isinstance(checks_raw, list) or not checks_raw:
        raise SpecError("audit spec: 'checks' must be a non-empty list")
    default_workers = raw.get("workers", 1)
    concurrent = raw.get("concurrent", "auto")
    if concurrent == "auto":
        concurrent = None
    elif not isinstance(concurrent, int) or isinstance(concurrent, bool) or concurrent < 1:
        raise SpecError(f"audit spec: 'concurrent' must be 'auto' or an int >= 1; got {concurrent!r}")
    prepare = raw.get("prepare")
    if prepare is not None:
        if not isinstance(prepare, str) or not prepare.strip() or "://" in prepare or "://" in base_dir:
            raise SpecError(f"audit spec: 'prepare' must be the path of a local Python script (relative to the "
                            f"spec's folder, itself local); got {prepare!r} (spec folder {base_dir!r})")
        prepare = _rel(prepare, base_dir)
        if not os.path.isfile(prepare):
            raise SpecError(f"audit spec: 'prepare' script not found: {prepare}")
    checks, seen = [], set()
    for i, c in enumerate(checks_raw):
        where = f"check #{i + 1}"
        if not isinstance(c, dict):
            raise SpecError(f"{where} must be a mapping; got {c!r}")
        cname = c.get("name")
        if not isinstance(cname, str) or not (_NAME.fullmatch(cname) and len(cname) <= rundir.MAX_ID_LEN):
            raise SpecError(f"{where}: 'name' must be a name of letters, digits, '.', '_', '-'; got {cname!r}")
        where = f"check {cname!r}"
        if cname in seen:
            raise SpecError(f"{where}: duplicate check name")
        seen.add(cname)
        unknown = sorted(set(c) - _CHECK_KEYS)
        if unknown:
            raise SpecError(f"{where}: unknown field(s) {unknown}; known: {sorted(_CHECK_KEYS)}")
        for req in ("data", "x", "z"):
            if not isinstance(c.get(req), str) or not c[req].strip():
                raise SpecError(f"{where}: field '{req}' is required (a string)")
        if "estimator" in c and "config" in c:
            raise SpecError(f"{where}: give either 'estimator' (inline) or 'config' (a best.json), not both")
        est = c.get("estimator", {}) or {}
        if not isinstance(est, dict):
            raise SpecError(f"{where}.estimator must be a mapping of estimator settings; got {est!r}")
        max_rows = c.get("max_rows")
        if max_rows is not None and (not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 2):
            raise SpecError(f"{where}.max_rows must be an int >= 2; got {max_rows!r}")
        workers = c.get("workers", default_workers)
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
            raise SpecError(f"{where}.workers must be an int >= 0; got {workers!r}")
        alerts = c.get("alerts", {}) or {}
        if not isinstance(alerts, dict) or set(alerts) - {"max_mi", "max_change", "untrusted"}:
            raise SpecError(f"{where}.alerts may only have max_mi, max_change and untrusted; got {alerts!r}")
        if not isinstance(alerts.get("untrusted", False), bool):
            raise SpecError(f"{where}.alerts.untrusted must be true or false; got {alerts['untrusted']!r}")
        checks.append(Check(
            name=cname, data=_rel(c["data"], base_dir), x=c["x"], z=c["z"], row_id=c.get("row_id"),
            max_rows=max_rows, estimator=dict(est), config=_rel(c["config"], base_dir) if c.get("config") else None,
            workers=workers,
            max_mi=_limit(alerts["max_mi"], f"{where}.alerts.max_mi", UNITS_MI) if "max_mi" in alerts else None,
            max_change=(_limit(alerts["max_change"], f"{where}.alerts.max_change", UNITS_CHANGE, CHANGE_RULES)
                        if "max_change" in alerts else None),
            untrusted=alerts.get("untrusted", False),
        ))
    return AuditSpec(name, tuple(checks), concurrent, prepare)


def ensure_data(spec: AuditSpec, log=print) -> None:
    """Run the spec's ``prepare`` script when a check's data path does not exist (data made on first
    use, then reused). The script runs with this Python, in its own folder; it should write its output
    atomically, so an interrupted run is redone rather than taken for data. Paths with glob characters
    are not checked.

    Raises:
        io.DataError: the script failed, or ran but left a check's data missing.
    """
    from mine_dist.io import DataError

    if spec.prepare is None:
        return
    missing = [c for c in spec.checks if not any(ch in c.data for ch in "*?[") and not storage.exists(c.data)]
    if not missing:
        return
    log(f"[{spec.audit}] {missing[0].data} is missing: running {spec.prepare}")
    try:  # the script's output goes to stderr with the audit's progress (stdout may carry --json)
        out = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # sys.stderr replaced (e.g. captured): the process's fd 2
        out = 2
    proc = subprocess.run([sys.executable, spec.prepare], cwd=os.path.dirname(spec.prepare), stdout=out)
    if proc.returncode != 0:
        raise DataError(f"audit spec: prepare script {spec.prepare} exited with code {proc.returncode} "
                        f"(its messages are above); check {missing[0].name!r} needs {missing[0].data}")
    still = [c for c in missing if not storage.exists(c.data)]
    if still:
        raise DataError(f"audit spec: prepare script {spec.prepare} ran but check {still[0].name!r}'s data "
                        f"{still[0].data} is still missing")


def _rel(uri: str, base_dir: str) -> str:
    if "://" in uri or os.path.isabs(uri):
        return uri
    if "://" in base_dir:
        return storage.join(base_dir, uri)
    return os.path.normpath(os.path.join(base_dir, uri))


def estimator_config(check: Check):
    """The check's EstimatorConfig (inline settings, or a sweep's best.json ``config``)."""
    from mine_dist.estimator import EstimatorConfig

    where = f"check {check.name!r}"
    if check.config:
        from mine_dist.runs import read_config_file

        try:
            d = read_config_file(check.config)
        except ValueError as e:
            raise SpecError(f"{where}.config: {e}") from None
    else:
        d = dict(check.estimator)
    try:
        return EstimatorConfig.from_dict(d)
    except (ValueError, TypeError) as e:
        raise SpecError(f"{where}.{'config' if check.config else 'estimator'}: {e}") from None


def entropy_nats(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def categorical_entropy(info) -> float:
    """H(z) in nats of a categorical z column, from the data (all files)."""
    import pyarrow.compute as pc

    col = info.z.columns[0]
    counts: dict = {}
    for f in info.files:
        t = info.open(f).read(columns=[col]).column(0)
        if hasattr(t.type, "value_type"):
            t = t.cast(t.type.value_type)
        for row in pc.value_counts(t).to_pylist():
            counts[row["values"]] = counts.get(row["values"], 0) + row["counts"]
    return entropy_nats(np.array(list(counts.values()), dtype=np.float64))


def default_slot() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")


# ----------------------------------------------------------------------------- history


HISTORY_COLUMNS = ("audit", "slot", "check", "status", "error", "mi_nats", "mi_bits", "ci95_low_nats",
                   "ci95_high_nats", "bound", "h_z_nats", "n_test", "data_uri", "data_fingerprint", "config",
                   "versions", "run_dir", "alerts", "warnings", "started_at", "finished_at")


def history_key(output: str, audit: str, slot: str, check: str) -> str:
    return storage.join(output, "history", f"audit={audit}", f"slot={slot}", f"{check}.parquet")


def write_history_row(output: str, row: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    full = {k: row.get(k) for k in HISTORY_COLUMNS}
    schema = pa.schema([(k, pa.float64() if k in ("mi_nats", "mi_bits", "ci95_low_nats", "ci95_high_nats",
                                                   "h_z_nats") else pa.int64() if k == "n_test" else pa.string())
                        for k in HISTORY_COLUMNS])
    table = pa.Table.from_pylist([full], schema=schema)
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    storage.write_bytes_atomic(history_key(output, row["audit"], row["slot"], row["check"]),
                               buf.getvalue().to_pybytes())


def read_history(history: str, audit: str | None = None) -> list[dict]:
    """Every history row (optionally of one audit), sorted by slot then check."""
    import pyarrow.parquet as pq

    try:
        files = [f for f in storage.list_files(history) if f.endswith(".parquet")] if storage.exists(history) else []
    except storage.StorageError:
        files = []
    rows = []
    for f in files:
        if audit is not None and f"/audit={audit}/" not in f:
            continue
        fs, path = storage.resolve(f)
        with fs.open_input_file(path) as fh:
            rows += pq.read_table(fh).to_pylist()
    rows.sort(key=lambda r: (r["slot"], r["check"]))
    return rows


def previous_ok(rows: list[dict], check: str, slot: str) -> dict | None:
    """The latest ``ok`` row of ``check`` from a slot before ``slot``."""
    prev = [r for r in rows if r["check"] == check and r["slot"] < slot and r["status"] == "ok"]
    return prev[-1] if prev else None


def change_noise_nats(ci_now: tuple | None, ci_prev: tuple | None) -> float:
    """Half-width of a 95% interval for the difference of two independent estimates: each 95% interval
    is read as +-1.96 standard errors, the errors add in quadrature. 0 when an interval is missing."""
    if not ci_now or not ci_prev or None in (*ci_now, *ci_prev):
        return 0.0
    se = [(hi - lo) / (2 * Z95) for lo, hi in (ci_now, ci_prev)]
    return Z95 * math.hypot(*se)


def evaluate_alerts(check: Check, mi_nats: float, h_z: float | None, prev: dict | None,
                    ci95: tuple | None = None, warnings: list | tuple = ()) -> list[dict]:
    """The rules that fire for this estimate (empty list when none).

    ``max_change`` with ``rule: significant`` (the default) fires when the change since the previous
    slot exceeds the limit *and* the 95% noise of the difference (:func:`change_noise_nats`, from
    both estimates' intervals); ``rule: raw`` compares the change with the limit alone.
    ``untrusted: true`` fires when the estimate carries warnings (not converged, readout
    unreliable, overfit, leaked columns, ...), so a schedule can treat "not to be believed" like a
    breach.
    """
    fired = []
    if check.untrusted and warnings:
        fired.append({"check": check.name, "rule": "untrusted", "value_nats": mi_nats, "warnings": list(warnings),
                      "message": f"{check.name}: the estimate {mi_nats:.4f} nats is not to be trusted: "
                                 + "; ".join(str(w).split(":")[0] for w in warnings)})
    if check.max_mi is not None:
        limit = check.max_mi.nats(h_z)
        if mi_nats > limit:
            fired.append({"check": check.name, "rule": "max_mi", "value_nats": mi_nats, "limit_nats": limit,
                          "limit": {"value": check.max_mi.value, "unit": check.max_mi.unit}, "h_z_nats": h_z,
                          "message": f"{check.name}: MI {mi_nats:.4f} nats exceeds the limit {limit:.4f} nats "
                                     f"({check.max_mi.value} {check.max_mi.unit})"})
    if check.max_change is not None and prev is not None and prev.get("mi_nats") is not None:
        limit = check.max_change.nats(None)
        change = mi_nats - prev["mi_nats"]
        noise = (change_noise_nats(ci95, (prev.get("ci95_low_nats"), prev.get("ci95_high_nats")))
                 if check.max_change.rule == "significant" else 0.0)
        if abs(change) > limit and abs(change) > noise:
            beyond = f", beyond the 95% noise of the difference {noise:.4f}" if check.max_change.rule == "significant" else ""
            fired.append({"check": check.name, "rule": "max_change", "value_nats": mi_nats,
                          "previous_nats": prev["mi_nats"], "previous_slot": prev["slot"], "change_nats": change,
                          "limit_nats": limit, "noise_nats": noise, "change_rule": check.max_change.rule,
                          "limit": {"value": check.max_change.value, "unit": check.max_change.unit},
                          "message": f"{check.name}: MI changed by {change:+.4f} nats since slot {prev['slot']} "
                                     f"({prev['mi_nats']:.4f} -> {mi_nats:.4f}); limit {limit:.4f} nats{beyond}"})
    return fired

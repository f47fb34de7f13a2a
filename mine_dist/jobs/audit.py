"""A scheduled audit as a job: validate the whole spec first, then estimate each pending check
(one by one in this process, or side by side as Ray tasks), write history rows and alerts."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass

from mine_dist import audit, io, rundir, runs, storage, yamlio
from mine_dist.distributed.options import RayOptions
from mine_dist.estimator import EstimatorConfig
from mine_dist.jobs.common import (check_not_in_ray_job_dir, data_values, first_line,
                                   in_process_max_values as size_rule_limit, log)
from mine_dist.jobs.estimate import EstimateJob



@dataclass(frozen=True)
class AuditResult:
    """One slot of an audit: its summary (the JSON the CLI prints), the table, alerts, failures."""

    summary: dict
    table: str
    alerts: list
    failed: list  # history rows of the checks that failed


@dataclass(frozen=True)
class AuditJob:
    """Run the checks of an audit spec for one scheduled slot.

    Attributes:
        spec: the audit spec YAML (any URI); relative paths in it are taken from its folder.
        output: where ``history/`` and ``runs/`` live.
        slot: the scheduled slot (default: today's UTC date); re-running it adds no rows.
        concurrent: checks at once (None: the spec's, else auto from the Ray cluster's CPUs).
        in_process_max_values: checks of ``workers: 1`` on at most this many values train
            in-process (0: never; default ``jobs.common.IN_PROCESS_MAX_VALUES`` or the environment's
            ``MINE_DIST_IN_PROCESS_MAX_VALUES``).
    """

    spec: str
    output: str
    slot: str | None = None
    concurrent: int | None = None
    progress: bool = True
    in_process_max_values: int = dataclasses.field(default_factory=size_rule_limit)

    def run(self) -> AuditResult:
        raw = yamlio.read(self.spec, f"--spec {self.spec}")
        base_dir = os.path.dirname(os.path.abspath(self.spec)) if "://" not in self.spec else self.spec.rsplit("/", 1)[0]
        spec = audit.parse_spec(raw, base_dir=base_dir)
        slot = rundir.validate_id(audit.default_slot() if self.slot is None else self.slot, "--run-id (the audit slot)")
        check_not_in_ray_job_dir(self.output)
        storage.check_reachable(self.output, for_write=True)
        audit.ensure_data(spec, log)
        # everything checkable without estimating, first
        prepared = [_prepare(c, self.in_process_max_values) for c in spec.checks]
        history = audit.read_history(storage.join(self.output, "history"), spec.audit)
        done = {r["check"] for r in history if r["slot"] == slot and r["status"] == "ok"}
        prevs = {c.name: audit.previous_ok(history, c.name, slot) for c, _, _ in prepared}
        pending = [(c, cfg, h_z, prevs[c.name]) for c, cfg, h_z in prepared if c.name not in done]
        requested = self.concurrent if self.concurrent is not None else spec.concurrent
        if requested is not None and requested < 1:
            raise ValueError(f"--concurrent must be >= 1; got {requested}")
        run_one = functools.partial(run_check, output=self.output, audit_name=spec.audit, slot=slot,
                                    progress=self.progress)
        if pending and (requested or 1) == 1 and all(c.workers == 0 for c, *_ in pending) \
                and not os.environ.get("RAY_ADDRESS"):
            ran = {c.name: run_one(c, cfg, h_z, prev) for c, cfg, h_z, prev in pending}
        elif pending:
            from mine_dist.distributed.checks import run_checks  # Ray is imported only on this path

            on_error = functools.partial(error_row, output=self.output, audit_name=spec.audit, slot=slot)
            ran = run_checks(run_one, on_error, pending, requested, log, label=f"{spec.audit}/{slot}")
        else:
            ran = {}
        results, alerts = [], []
        for c, _, _ in prepared:
            if c.name in done:
                row = next(r for r in history if r["slot"] == slot and r["check"] == c.name)
                log(f"[{spec.audit}/{slot}] {c.name}: already recorded in this slot, skipped")
                fired = json.loads(row["alerts"] or "[]")
            else:
                row, fired = ran[c.name]
            results.append((c, row, prevs[c.name]))
            alerts += fired
        slot_dir = storage.join(self.output, "runs", spec.audit, slot)
        storage.write_text_atomic(storage.join(slot_dir, "alerts.json"),
                                  json.dumps(runs._jsonable({"audit": spec.audit, "slot": slot, "alerts": alerts}),
                                             indent=2))
        summary = {"audit": spec.audit, "slot": slot, "alerts": alerts,
                   "checks": [{k: r.get(k) for k in ("check", "status", "mi_nats", "ci95_low_nats", "ci95_high_nats",
                                                      "error")} for _, r, _ in results]}
        return AuditResult(summary, audit_table(spec.audit, slot, results), alerts,
                           [r for _, r, _ in results if r["status"] != "ok"])


def _prepare(c: audit.Check, in_process_max_values: int = 0) -> tuple[audit.Check, EstimatorConfig, float | None]:
    """A check's config and H(z), with its data validated (exit 3 naming the check); a small
    ``workers: 1`` check comes back with ``workers`` 0 (see ``jobs.common.IN_PROCESS_MAX_VALUES``)."""
    cfg = audit.estimator_config(c)
    try:
        info = io.inspect(c.data, c.x, c.z, c.row_id)
    except io.DataError as e:
        raise io.DataError(f"check {c.name!r}: {e}") from None
    h_z = audit.categorical_entropy(info) if info.z.kind == "categorical" else None
    values = data_values(info, c.max_rows)
    if c.workers == 1 and values <= in_process_max_values:
        log(f"check {c.name}: {values:,} values <= {in_process_max_values:,}: trains in-process, not as a "
            f"1-worker Ray Train run")
        c = dataclasses.replace(c, workers=0)
    if c.max_mi is not None and c.max_mi.unit == "fraction_of_h_z" and h_z is None:
        raise audit.SpecError(f"check {c.name!r}.alerts.max_mi: unit fraction_of_h_z needs a categorical z; "
                              f"{c.z!r} is {info.z.kind}")
    return c, cfg, h_z


def _check_row(audit_name: str, slot: str, check: audit.Check, h_z, started: str) -> dict:
    """The identifying part of a check's history row (completed by the outcome)."""
    return {"audit": audit_name, "slot": slot, "check": check.name, "started_at": started, "h_z_nats": h_z,
            "data_uri": storage.describe(check.data)}


def run_check(check: audit.Check, cfg: EstimatorConfig, h_z: float | None, prev: dict | None,
              cpus_per_worker: float | None = None, *, output: str, audit_name: str, slot: str,
              progress: bool = True) -> tuple[dict, list]:
    """Estimate one check and write its history row (also what a concurrent check's Ray task runs)."""
    runs_dir = storage.join(output, "runs", audit_name, slot)
    run_dir = storage.join(runs_dir, check.name)
    resume = None
    if storage.exists(storage.join(run_dir, "estimate.json")):
        rundir.remove_owned(run_dir)  # a previous attempt of this slot finished the run but not the row
    elif storage.exists(storage.join(run_dir, "checkpoints")):
        resume = check.name  # a previous attempt was killed mid-training: continue it
    started = runs.now_iso()
    row = _check_row(audit_name, slot, check, h_z, started)
    log(f"[{audit_name}/{slot}] {check.name}: estimating I({check.x}; {check.z}) on {storage.describe(check.data)}")
    try:
        ray = RayOptions(workers=check.workers, cpus_per_worker=cpus_per_worker, progress=progress) \
            if check.workers else None
        job = EstimateJob(io.DataSpec(check.data, check.x, check.z, check.row_id, check.max_rows), cfg,
                          output=runs_dir, run_id=check.name, resume=resume, ray=ray, progress=progress)
        rec = job.run().record
    except Exception as e:  # noqa: BLE001 - one failing check must not lose the others
        return error_row(check, cfg, h_z, first_line(e), started, output=output, audit_name=audit_name, slot=slot), []
    fired = audit.evaluate_alerts(check, rec["mi_nats"], h_z, prev, tuple(rec["ci95_nats"]),
                                  rec.get("warnings") or [])
    row.update({"status": "ok", "error": None, "mi_nats": rec["mi_nats"], "mi_bits": rec["mi_bits"],
                "ci95_low_nats": rec["ci95_nats"][0], "ci95_high_nats": rec["ci95_nats"][1], "bound": rec["bound"],
                "n_test": rec["n_test"], "data_fingerprint": rec["data"]["fingerprint"],
                "config": json.dumps(rec["config"]), "versions": json.dumps(rec["versions"]),
                "run_dir": rec["run_dir"], "alerts": json.dumps(runs._jsonable(fired)),
                "warnings": json.dumps(rec.get("warnings") or []), "finished_at": runs.now_iso()})
    audit.write_history_row(output, row)
    return row, fired


def error_row(check: audit.Check, cfg: EstimatorConfig, h_z: float | None, msg: str, started: str | None = None, *,
              output: str, audit_name: str, slot: str) -> dict:
    """Record a failed check in the history (the others' results are kept)."""
    row = {**_check_row(audit_name, slot, check, h_z, started or runs.now_iso()), "status": "error", "error": msg,
           "finished_at": runs.now_iso(), "alerts": "[]", "config": json.dumps(cfg.to_dict()),
           "versions": json.dumps(runs.versions())}
    audit.write_history_row(output, row)
    return row


def audit_table(audit_name: str, slot: str, results) -> str:
    lines = [f"audit {audit_name}, slot {slot}",
             f"{'check':24s} {'previous':>18s} {'current (95% CI)':>30s} {'change':>9s}  status"]
    for c, r, prev in results:
        p = f"{prev['mi_nats']:.4f} ({prev['slot']})" if prev else "-"
        if r["status"] == "ok":
            cur = f"{r['mi_nats']:.4f} [{r['ci95_low_nats']:.4f}, {r['ci95_high_nats']:.4f}]"
            ch = f"{r['mi_nats'] - prev['mi_nats']:+.4f}" if prev else "-"
            fired = json.loads(r["alerts"] or "[]")
            st = "ALERT " + ",".join(a["rule"] for a in fired) if fired else "ok"
        else:
            cur, ch, st = "-", "-", f"error: {r['error']}"
        lines.append(f"{c.name:24s} {p:>18s} {cur:>30s} {ch:>9s}  {st}")
    return "\n".join(lines)

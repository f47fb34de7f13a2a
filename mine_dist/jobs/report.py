"""An audit's history as a table and a PNG (MI over slots per check)."""

from __future__ import annotations

import json

from mine_dist import audit, plots, storage


def report(history: str, audit_name: str, plot: str | None = None) -> str:
    """The history table of ``audit_name`` under ``history`` (``<output>/history``); writes the PNG
    to ``plot`` (default ``<output>/report-<audit>.png``).

    Raises:
        ValueError: no history for that audit.
    """
    rows = audit.read_history(history, audit_name)
    if not rows:
        raise ValueError(f"no history for audit {audit_name!r} under {storage.describe(history)}")
    lines = [f"{'slot':12s} {'check':24s} {'status':7s} {'mi_nats':>8s} {'95% CI':>20s} {'mi_bits':>8s}  alerts"]
    for r in rows:
        if r["status"] == "ok":
            alerts = ",".join(a["rule"] for a in json.loads(r["alerts"] or "[]")) or "-"
            lines.append(f"{r['slot']:12s} {r['check']:24s} ok      {r['mi_nats']:8.4f} "
                         f"[{r['ci95_low_nats']:.4f}, {r['ci95_high_nats']:.4f}] {r['mi_bits']:8.4f}  {alerts}")
        else:
            lines.append(f"{r['slot']:12s} {r['check']:24s} error   {'':8s} {'':>20s} {'':8s}  {r['error']}")
    plot = plot or storage.join(history.rstrip("/").rsplit("/", 1)[0], f"report-{audit_name}.png")
    storage.write_bytes_atomic(plot, plots.audit_report(audit_name, rows))
    lines.append(f"plot written to {storage.describe(plot)}")
    return "\n".join(lines)

"""Every PNG mine-dist writes, through one matplotlib helper (Agg, in memory, closed after use)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable


def png(draw: Callable, figsize=(7, 4), dpi: int = 110, nrows: int | None = None) -> bytes:
    """Draw with ``draw(fig, axes)`` on a fresh figure and return the PNG bytes. ``axes`` is one
    Axes, or with ``nrows`` a list of that many stacked Axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows or 1, 1, figsize=figsize, dpi=dpi, squeeze=False)
    try:
        draw(fig, axes[0, 0] if nrows is None else list(axes[:, 0]))
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png")
        return out.getvalue()
    finally:
        plt.close(fig)


def run_curves(record: dict, curves: list[dict], truth: dict | None) -> bytes:
    """The train and validation bound over steps, the test estimate with its interval and one-sided
    lower limit, the selected step, and the ground truth when known (a run's ``curves.png``)."""
    def draw(fig, ax):
        steps = [c["step"] for c in curves]
        if curves:
            ax.plot(steps, [c["train"] for c in curves], label="train (batch mean)", color="#8da0cb")
            ax.plot(steps, [c["val"] for c in curves], label="validation", color="#1b6fb3", marker=".")
        lo, hi = record["ci95_nats"]
        xmax = max(steps) if steps else 1
        ax.axhspan(lo, hi, color="#fc8d62", alpha=0.25, label=f"95% interval of the test bound [{lo:.3f}, {hi:.3f}]")
        ax.axhline(record["mi_nats"], color="#e34a33", lw=2, label=f"test lower bound {record['mi_nats']:.3f} nats")
        lower = record.get("lower95_nats")
        if lower is not None and math.isfinite(lower):
            ax.axhline(lower, color="#e34a33", ls="--", lw=1, label=f"95% one-sided lower limit {lower:.3f}")
        if record.get("best_step"):
            ax.axvline(record["best_step"], color="grey", ls=":", lw=1, label=f"selected step {record['best_step']}")
        if truth is not None and truth.get("mi_nats") is not None:
            ax.axhline(truth["mi_nats"], color="black", ls="--", lw=1.2, label=f"ground truth {truth['mi_nats']:.3f}")
        if record.get("cap_nats"):
            ax.axhline(record["cap_nats"], color="purple", ls="-.", lw=1, label=f"InfoNCE cap (mean log K) = {record['cap_nats']:.2f}")
        ax.set_xlim(0, xmax)
        ys = [lo, hi] + [c["val"] for c in curves] + ([truth["mi_nats"]] if truth and truth.get("mi_nats") is not None else [])
        ys = [y for y in ys if y is not None and math.isfinite(y)]
        if ys:
            pad = 0.1 * (max(ys) - min(ys) + 0.05)
            ax.set_ylim(min(ys) - 3 * pad, max(ys) + pad)
        ax.set_xlabel("training step")
        ax.set_ylabel("bound (nats)")
        where = f"{record['workers']} Ray worker(s)" if record.get("workers") else "in-process"
        ax.set_title(f"{record['bound']} estimate of I(X;Z), {where}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")

    return png(draw)


def sweep_trials(curves: dict, winner: int) -> bytes:
    """Validation DV bound per trial over steps, the winner highlighted."""
    def draw(fig, ax):
        for i, hist in sorted(curves.items()):
            if not hist:
                continue
            lw, alpha = (2.5, 1.0) if i == winner else (1.0, 0.6)
            ax.plot([h["step"] for h in hist], [h["val"] for h in hist], marker=".", lw=lw, alpha=alpha,
                    label=f"trial {i}" + (" (winner)" if i == winner else ""))
        ax.set_xlabel("training step")
        ax.set_ylabel("validation DV bound (nats)")
        ax.set_title("sweep: validation DV bound per trial (selection only; the estimate is on test)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)

    return png(draw)


def audit_report(audit_name: str, rows: list[dict]) -> bytes:
    """MI over slots per check, with intervals, fired alerts, limits, H(z) and failed slots."""
    checks = sorted({r["check"] for r in rows})
    slots = sorted({r["slot"] for r in rows})

    def draw(fig, axes):
        for ax, c in zip(axes, checks):
            ok = [r for r in rows if r["check"] == c and r["status"] == "ok"]
            xs = [slots.index(r["slot"]) for r in ok]
            ys = [r["mi_nats"] for r in ok]
            lo = [r["mi_nats"] - r["ci95_low_nats"] for r in ok]
            hi = [r["ci95_high_nats"] - r["mi_nats"] for r in ok]
            if ok:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=4, label="MI (95% CI)")
            fired = [(r, a) for r in ok for a in json.loads(r["alerts"] or "[]")]
            for i, (r, a) in enumerate(fired):
                ax.plot(slots.index(r["slot"]), r["mi_nats"], "rx", ms=12, mew=2,
                        label="alert fired" if i == 0 else None)
                ax.annotate(a["rule"], (slots.index(r["slot"]), r["mi_nats"]), textcoords="offset points",
                            xytext=(8, 6), fontsize=7, color="red")
            limits = {a["rule"]: a for _, a in fired}
            if "max_mi" in limits:
                ax.axhline(limits["max_mi"]["limit_nats"], color="red", ls="--", lw=1,
                           label=f"max_mi limit {limits['max_mi']['limit_nats']:.3f}")
            if "max_change" in limits:
                ax.plot([], [], " ", label=f"max_change limit {limits['max_change']['limit_nats']:.3f} nats")
            h = [r["h_z_nats"] for r in ok if r.get("h_z_nats")]
            if h:
                ax.axhline(h[-1], color="grey", ls=":", lw=1, label=f"H(z) = {h[-1]:.3f}")
            # A failed check has no estimate: mark the slot itself (not a value of 0, which would read as MI = 0).
            bad = [r for r in rows if r["check"] == c and r["status"] != "ok"]
            for i, r in enumerate(bad):
                xb = slots.index(r["slot"])
                ax.axvspan(xb - 0.3, xb + 0.3, color="black", alpha=0.08, lw=0, label="failed (no estimate)" if i == 0 else None)
                err = (r.get("error") or "error")
                ax.text(xb, 0.5, err[:60] + ("..." if len(err) > 60 else ""), transform=ax.get_xaxis_transform(),
                        rotation=90, ha="center", va="center", fontsize=6, color="black")
            ax.set_title(f"{audit_name} / {c}", fontsize=9)
            ax.set_ylabel("nats")
            ax.set_xticks(range(len(slots)), slots, rotation=30, fontsize=7)
            ax.set_xlim(-0.6, len(slots) - 0.4)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)

    return png(draw, figsize=(7, 2.6 * len(checks)), nrows=len(checks))

"""Helpers the example scripts share: seed summaries and writing their outputs.

The scripts put ``examples/`` on ``sys.path`` and import this module as ``common``.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np


def summary(rows: list[dict], key: str) -> dict:
    """Mean, sample sd (nan for one seed), min and max of ``row[key]`` over runs."""
    v = np.array([r[key] for r in rows], dtype=float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
            "min": float(v.min()), "max": float(v.max())}


def write_outputs(result: dict, out_dir: str, fig, png: str) -> None:
    """``out_dir/results.json`` and the figure at ``png`` (directories created)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    pyplot().close(fig)


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

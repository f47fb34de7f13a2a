"""Imports point down only: library layers never pull in the jobs layer, the CLI or Ray, and the
Ray package never imports the layers above it (docs/architecture.md)."""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "mine_dist"
LOWER = ["bounds", "ema", "sync", "critics", "estimator", "io", "storage", "normalize", "split", "synthetic", "runs",
         "rundir", "leaks", "yamlio", "plots", "audit", "sweep", "objective"]
DISTRIBUTED = ["distributed", "distributed.options", "distributed.train", "distributed.data", "distributed.sweep",
               "distributed.checks", "distributed.pool", "distributed.runtime"]
JOBS = ["jobs", "jobs.common", "jobs.estimate", "jobs.sweep", "jobs.audit", "jobs.report", "jobs.make_data"]


def _loaded_after(modules: list[str]) -> set:
    """The mine_dist / ray modules a fresh interpreter holds after importing ``modules`` (one
    interpreter per layer: if any module of the layer pulled in a layer above, it shows here)."""
    code = ("import sys, json; " + "; ".join(f"import mine_dist.{m}" for m in modules) + "; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('mine_dist', 'ray'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("layer, modules", [("library", LOWER), ("distributed", DISTRIBUTED), ("jobs", JOBS)])
def test_imports_point_down(layer, modules):
    loaded = _loaded_after(modules)
    assert "mine_dist.cli" not in loaded
    assert "ray" not in loaded, f"the {layer} layer imports ray at import time"
    if layer != "jobs":
        assert not any(m.startswith("mine_dist.jobs") for m in loaded), sorted(loaded)
    if layer == "library":
        assert not any(m.startswith("mine_dist.distributed.") and m != "mine_dist.distributed.options"
                       for m in loaded), sorted(loaded)


def _imports(path: pathlib.Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names


def test_only_the_cli_imports_argparse():
    users = {str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if any(n.split(".")[0] == "argparse"
                                                                        for n in _imports(p))}
    assert sorted(users) == ["cli.py"]


def test_the_ray_package_never_imports_cli_or_jobs():
    for path in (PKG / "distributed").glob("*.py"):
        bad = [n for n in _imports(path) if n.startswith(("mine_dist.cli", "mine_dist.jobs"))]
        assert not bad, (path.name, bad)

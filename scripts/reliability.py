"""Run every bad input and fault case against the real command line and print the table of
``docs/reliability.md``: the exit code, the message (last stderr line) and what is left in storage.

    .venv/bin/python scripts/reliability.py            # print the table (about 3 minutes on 2 cores)
    .venv/bin/python scripts/reliability.py --write    # also rewrite the table in docs/reliability.md
    .venv/bin/python scripts/reliability.py --only nan # cases whose name contains 'nan'

Each case runs ``python -m mine_dist ...`` as a subprocess in a fresh sandbox that also holds
"victim" files (an unrelated file and an earlier finished run next to the output); the table says
whether they survived. S3 cases run against the project's SeaweedFS test server when ``weed`` is
installed (``make setup`` installs it), and are skipped otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FAST = ["--steps", "100", "--batch-size", "64", "--eval-every", "50", "--bootstrap", "50", "--no-progress",
        "--width", "16"]
BEGIN, END = "<!-- reliability table: begin -->", "<!-- reliability table: end -->"


@dataclass
class Case:
    name: str
    what: str  # the bad input or fault, for the table
    argv: list[str]  # after `python -m mine_dist`; {data}, {out}, {sb} are filled in
    expect: int
    setup: object = None  # callable(sandbox) run before the command
    env: dict = field(default_factory=dict)
    cwd: str | None = None  # relative to the sandbox
    sigint_after: float | None = None  # send SIGINT once the run directory exists, plus this many seconds
    s3: bool = False


def _fixed(a):
    a = np.asarray(a, np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.ravel()), a.shape[1])


def _pair(n=1500, seed=0, d=2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x, (0.7 * x + 0.7 * rng.standard_normal((n, d))).astype(np.float32)


def _write(path: Path, table: pa.Table, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **kw)


def _table(x, z):
    return pa.table({"x": _fixed(x), "z": _fixed(z)})


def data_good(sb):
    x, z = _pair()
    _write(sb / "good" / "a.parquet", _table(x, z))


def data_nan(sb):
    x, z = _pair()
    x[7, 1] = np.nan
    _write(sb / "bad" / "a.parquet", _table(x, z))


def data_ragged(sb):
    x, z = _pair(200)
    xs = [list(r) for r in x]
    xs[5] = xs[5][:1]
    _write(sb / "bad" / "a.parquet", pa.table({"x": pa.array(xs, pa.list_(pa.float32())), "z": _fixed(z)}))


def data_strings(sb):
    _, z = _pair(200)
    _write(sb / "bad" / "a.parquet", pa.table({"x": pa.array([["a", "b"]] * 200), "z": _fixed(z)}))


def data_empty_shard(sb):
    x, z = _pair(0)
    _write(sb / "bad" / "a.parquet", _table(x, z))


def data_truncated(sb):
    data_good(sb)
    raw = (sb / "good" / "a.parquet").read_bytes()
    (sb / "bad").mkdir()
    (sb / "bad" / "a.parquet").write_bytes(raw[: len(raw) // 2])


def data_flipped(sb):
    x, z = _pair(3000)
    f = sb / "bad" / "a.parquet"
    _write(f, _table(x, z), compression="none", use_dictionary=False, row_group_size=1000)
    raw = bytearray(f.read_bytes())
    at = raw.find(np.float32(x[1500, 1]).tobytes())
    raw[at:at + 4] = np.float32(3.0e38).tobytes()
    f.write_bytes(bytes(raw))


def data_drift(sb):
    x, z = _pair()
    _write(sb / "bad" / "a.parquet", _table(x, z))
    _write(sb / "bad" / "b.parquet", pa.table({"x": _fixed(np.c_[x, x[:, :1]]), "z": _fixed(z)}))


def data_identical(sb):
    x, _ = _pair()
    _write(sb / "bad" / "a.parquet", _table(x, x[:, ::-1].copy()))


def victims(sb):
    (sb / "victim" / "out" / "old-run").mkdir(parents=True)
    (sb / "victim" / "keep.txt").write_text("precious")
    (sb / "victim" / "out" / "old-run" / "estimate.json").write_text('{"run_id": "old-run"}')


def with_(*fns):
    def run(sb):
        for f in fns:
            f(sb)
    return run


def fake_checkpoint(sb):
    import torch

    from mine_dist import rundir
    from mine_dist.cli import build_parser, config_from_args

    data_good(sb)
    victims(sb)
    # What a real checkpoint holds: the config the workers trained with (auto resolved to mine).
    cfg = config_from_args(build_parser().parse_args(["estimate", "--data", "x", *FAST])).resolved(False)
    rundir.claim(str(sb / "victim" / "out"), "r1", request={})
    d = sb / "victim" / "out" / "r1" / "checkpoints" / "step_00000100"
    d.mkdir(parents=True)
    torch.save({"config": cfg.to_dict(), "step": 100}, d / "state.pt")


def audit_spec(check: dict, alerts: dict | None = None, top: dict | None = None):
    def run(sb):
        data_good(sb)
        victims(sb)
        c = {"name": "c1", "x": "x", "z": "z", "estimator": {"steps": 100, "batch_size": 64, "eval_every": 50,
                                                             "bootstrap": 50, "critic": {"width": 16}}, **check}
        if alerts:
            c["alerts"] = alerts
        (sb / "spec.yaml").write_text(json.dumps({"audit": "a", "workers": 0, "checks": [c], **(top or {})}))
    return run


def config_file(content: str):
    def run(sb):
        with_(data_good, victims)(sb)
        (sb / "cfg.json").write_text(content)
    return run


def space_file(content: str):
    def run(sb):
        with_(data_good, victims)(sb)
        (sb / "space.yaml").write_text(content)
    return run


def ray_job_dir(sb):
    with_(data_good, victims)(sb)
    (sb / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_1").mkdir(parents=True)


def not_a_dataset(sb):
    victims(sb)
    (sb / "victim" / "out" / "thesis.tex").write_text("years of work")


def output_is_a_file(sb):
    with_(data_good, victims)(sb)
    (sb / "victim" / "out" / "file").write_text("a file")


EST = ["estimate", "--workers", "0", *FAST]
OUT = ["--output", "{sb}/victim/out"]
CASES = [
    Case("ok", "a good run (baseline)", [*EST, "--data", "{sb}/good", *OUT, "--run-id", "r1"], 0, with_(data_good, victims)),
    Case("id-dotdot", "`--run-id ..` with a bad column (the run fails)", [*EST, "--data", "{sb}/good", "--x", "nope", *OUT,
         "--run-id=.."], 2, with_(data_good, victims)),
    Case("id-dot", "`--run-id .`", [*EST, "--data", "{sb}/good", *OUT, "--run-id=."], 2, with_(data_good, victims)),
    Case("id-slash", "`--run-id /`", [*EST, "--data", "{sb}/good", *OUT, "--run-id=/"], 2, with_(data_good, victims)),
    Case("id-escape", "`--run-id ../../escape` with good data", [*EST, "--data", "{sb}/good", *OUT,
         "--run-id=../../escape"], 2, with_(data_good, victims)),
    Case("id-abs", "`--run-id /tmp/abs`", [*EST, "--data", "{sb}/good", *OUT, "--run-id=/tmp/abs"], 2,
         with_(data_good, victims)),
    Case("id-empty", "`--run-id ''`", [*EST, "--data", "{sb}/good", *OUT, "--run-id="], 2, with_(data_good, victims)),
    Case("id-long", "a 300-character run id", [*EST, "--data", "{sb}/good", *OUT, "--run-id=" + "a" * 300], 2,
         with_(data_good, victims)),
    Case("id-sweep", "`mine-dist sweep --run-id .`", ["sweep", *FAST, "--data", "{sb}/good", *OUT, "--run-id=.",
         "--trials", "1"], 2, with_(data_good, victims)),
    Case("id-slot", "`mine-dist audit --run-id ../x` (the slot)", ["audit", "--spec", "{sb}/spec.yaml", *OUT,
         "--run-id=../x"], 2, audit_spec({"data": "{sb}/good"})),
    Case("id-foreign", "`--run-id` naming an existing directory mine-dist did not create",
         [*EST, "--data", "{sb}/good", "--output", "{sb}/victim", "--run-id", "out"], 2, with_(data_good, victims)),
    Case("resume-lr", "`--resume R --lr 0.002 --width 64` (options differ from the checkpoint)",
         ["estimate", "--workers", "1", *FAST, "--data", "{sb}/good", *OUT, "--resume", "r1", "--lr", "0.002",
          "--width", "64"], 2, fake_checkpoint),
    Case("resume-inproc", "`--resume` with `--workers 0` of a run Ray Train trained",
         [*EST, "--data", "{sb}/good", *OUT, "--resume", "r1"], 2, fake_checkpoint),
    Case("missing-data", "dataset path does not exist", [*EST, "--data", "{sb}/nope", *OUT], 3, victims),
    Case("missing-col", "`--x` names a missing column", [*EST, "--data", "{sb}/good", "--x", "emb", *OUT], 3,
         with_(data_good, victims)),
    Case("dtype", "x is a list of strings", [*EST, "--data", "{sb}/bad", *OUT], 3, with_(data_strings, victims)),
    Case("nan", "a NaN in x", [*EST, "--data", "{sb}/bad", *OUT], 3, with_(data_nan, victims)),
    Case("nan-drop", "a NaN in x with `--drop-nonfinite`", [*EST, "--data", "{sb}/bad", *OUT, "--drop-nonfinite",
         "--run-id", "r1"], 0, with_(data_nan, victims)),
    Case("ragged", "ragged embedding lists", [*EST, "--data", "{sb}/bad", *OUT], 3, with_(data_ragged, victims)),
    Case("empty", "a dataset whose only shard has 0 rows", [*EST, "--data", "{sb}/bad", *OUT], 3,
         with_(data_empty_shard, victims)),
    Case("truncated", "a truncated Parquet file", [*EST, "--data", "{sb}/bad", *OUT], 3, with_(data_truncated, victims)),
    Case("flipped", "a flipped value in an uncompressed page (no page checksums)", [*EST, "--data", "{sb}/bad", *OUT],
         3, with_(data_flipped, victims)),
    Case("drift", "schema drift across shards (list size 2 vs 3)", [*EST, "--data", "{sb}/bad", *OUT], 3,
         with_(data_drift, victims)),
    Case("identical", "x and z share identical columns", [*EST, "--data", "{sb}/bad", *OUT], 3,
         with_(data_identical, victims)),
    Case("identical-ok", "identical columns with `--allow-identical`", [*EST, "--data", "{sb}/bad", *OUT,
         "--allow-identical", "--run-id", "r1"], 0, with_(data_identical, victims)),
    Case("out-file", "`--output` below a file", [*EST, "--data", "{sb}/good", "--output", "{sb}/victim/out/file/runs"],
         4, output_is_a_file),
    Case("cfg-list", "`--config` holding a JSON list", [*EST, "--data", "{sb}/good", *OUT, "--config", "{sb}/cfg.json"],
         2, config_file("[1, 2]")),
    Case("cfg-missing", "`--config` file missing", [*EST, "--data", "{sb}/good", *OUT, "--config", "{sb}/none.json"], 2,
         with_(data_good, victims)),
    Case("bad-lr", "`--lr -1`", [*EST, "--data", "{sb}/good", *OUT, "--lr", "-1"], 2, with_(data_good, victims)),
    Case("gpu-inproc", "`--gpu --workers 0`", [*EST, "--data", "{sb}/good", *OUT, "--gpu"], 2, with_(data_good, victims)),
    Case("cuda", "`--device cuda` on a machine without CUDA", [*EST, "--data", "{sb}/good", *OUT, "--device", "cuda"], 2,
         with_(data_good, victims)),
    Case("space-yaml", "a sweep space that is not valid YAML", ["sweep", *FAST, "--data", "{sb}/good", *OUT, "--space",
         "{sb}/space.yaml"], 2, space_file("lr: [1e-4, 1e-3\n")),
    Case("space-float", "`lr: {loguniform: [1e-4, 1e-2]}` with an unknown key beside it (1e-4 is read as a number)",
         ["sweep", *FAST, "--data", "{sb}/good", *OUT, "--space", "{sb}/space.yaml"], 2,
         space_file("lr: {loguniform: [1e-4, 1e-2]}\nwidht: [8]\n")),
    Case("audit-data", "an audit check whose dataset is missing", ["audit", "--spec", "{sb}/spec.yaml", *OUT,
         "--run-id", "s1"], 3, audit_spec({"data": "{sb}/nope"})),
    Case("audit-spec", "an audit spec with an unknown field", ["audit", "--spec", "{sb}/spec.yaml", *OUT, "--run-id",
         "s1"], 2, audit_spec({"data": "{sb}/good", "treshold": 1})),
    Case("audit-alert", "an audit whose max_mi alert fires", ["audit", "--spec", "{sb}/spec.yaml", *OUT, "--run-id", "s1",
         "--no-progress"], 6, audit_spec({"data": "{sb}/good"}, {"max_mi": {"value": 0.01, "unit": "nats"}})),
    Case("audit-prepare-missing", "an audit spec whose `prepare:` script does not exist", ["audit", "--spec",
         "{sb}/spec.yaml", *OUT, "--run-id", "s1"], 2, audit_spec({"data": "{sb}/nope"}, top={"prepare": "{sb}/nope.py"})),
    Case("audit-prepare-uri", "an audit spec whose `prepare:` is a URI", ["audit", "--spec", "{sb}/spec.yaml", *OUT,
         "--run-id", "s1"], 2, audit_spec({"data": "{sb}/nope"}, top={"prepare": "s3://b/prepare.py"})),
    Case("audit-inproc", "`mine-dist audit --in-process-max-values -1`", ["audit", "--spec", "{sb}/spec.yaml", *OUT,
         "--in-process-max-values", "-1"], 2, audit_spec({"data": "{sb}/good"})),
    Case("ba-continuous", "`--bound ba` with a continuous z", [*EST, "--data", "{sb}/good", *OUT, "--bound", "ba"], 2,
         with_(data_good, victims)),
    Case("resume-replicates", "`--resume R --replicates 2`", ["estimate", "--workers", "1", *FAST, "--data", "{sb}/good",
         *OUT, "--resume", "r1", "--replicates", "2"], 2, fake_checkpoint),
    Case("report-none", "`mine-dist report` of an audit with no history", ["report", "--history", "{sb}/victim/out/history",
         "--audit", "a"], 2, victims),
    Case("overwrite", "`make-data --overwrite` into a directory that is not a dataset",
         ["make-data", "gaussian", "--rows", "20", "--shards", "1", "--output", "{sb}/victim/out", "--overwrite"], 2,
         not_a_dataset),
    Case("ray-job-rel", "relative `--output` inside a Ray job's working dir", [*EST, "--data", "{sb}/good", "--output",
         "runs"], 2, ray_job_dir, cwd="session_1/runtime_resources/working_dir_files/_ray_pkg_1"),
    Case("sigint", "SIGINT during in-process training", ["estimate", "--workers", "0", "--steps", "1000000", "--patience", "0",
         "--no-progress", "--data", "{sb}/good", *OUT, "--run-id", "r1"], 130, with_(data_good, victims),
         sigint_after=1.0),
    Case("s3-unreachable", "S3 endpoint not listening", [*EST, "--data", "s3://b/data", "--output", "s3://b/out"], 4,
         env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}),
    Case("s3-bucket", "`--data` in a bucket that does not exist", [*EST, "--data", "s3://no-such-bucket-x/d",
         "--output", "{bucket}/out"], 4, s3=True),
    Case("s3-creds", "wrong S3 secret key", [*EST, "--data", "{bucket}/d", "--output", "{bucket}/out"], 4,
         env={"AWS_SECRET_ACCESS_KEY": "wrong-secret"}, s3=True),
    Case("s3-id", "`--output s3://b/victim/out --run-id /` with a bad column", [*EST, "--data", "{bucket}/d", "--x",
         "nope", "--output", "{bucket}/victim/out", "--run-id=/"], 2, s3=True),
]


def _snapshot(sb: Path) -> set[str]:
    return {str(p.relative_to(sb)) for p in sb.rglob("*") if p.is_file()}


def _s3_listing(bucket: str | None) -> set[str]:
    if not bucket:
        return set()
    from mine_dist import storage

    return {f[len(bucket) + 1:] for f in storage.list_files(bucket)}


def run_case(c: Case, bucket: str | None, s3_env: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="rel-") as tmp:
        sb = Path(tmp)
        if c.setup:
            c.setup(sb)
        if (sb / "spec.yaml").exists():
            (sb / "spec.yaml").write_text((sb / "spec.yaml").read_text().replace("{sb}", str(sb)))
        fill = {"sb": str(sb), "bucket": bucket or ""}
        argv = [a.format(**fill) for a in c.argv]
        env = {**os.environ, **(s3_env if c.s3 else {}), **c.env,
               "RAY_USAGE_STATS_ENABLED": "0"}
        before, s3_before = _snapshot(sb), _s3_listing(bucket) if c.s3 else set()
        cmd = [sys.executable, "-m", "mine_dist", *argv]
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=str(sb / c.cwd) if c.cwd else str(ROOT), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        if c.sigint_after is not None:
            run_dir = sb / "victim" / "out" / "r1"
            while not run_dir.exists() and p.poll() is None and time.perf_counter() - t0 < 120:
                time.sleep(0.1)
            time.sleep(c.sigint_after)
            p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=600)
        after, s3_after = _snapshot(sb), _s3_listing(bucket) if c.s3 else set()
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        lost = sorted((before - after) | (s3_before - s3_after))
        new = sorted((after - before) | (s3_after - s3_before))
        return {"case": c.name, "what": c.what, "expect": c.expect, "rc": p.returncode,
                "message": lines[-1] if lines else "", "lost": lost, "new": new, "wall_s": time.perf_counter() - t0}


def _left(r: dict) -> str:
    if r["lost"]:
        return "**deleted: " + ", ".join(r["lost"][:4]) + "**"
    new = [n for n in r["new"] if "/.mine-dist-run" not in n or r["rc"] == 0]
    if not new:
        return "nothing new; victims intact"
    runs = sorted({n.split("/")[2] if n.startswith("victim/out/") and n.count("/") >= 3 else n for n in new})
    return "victims intact; new: " + ", ".join(runs[:3]) + ("" if len(runs) <= 3 else f" (+{len(runs) - 3})")


def markdown(results: list[dict]) -> str:
    rows = ["| case | bad input or fault | exit (expected) | message (last stderr line) | left in storage |",
            "|---|---|---|---|---|"]
    for r in results:
        if r.get("skipped"):
            rows.append(f"| {r['case']} | {r['what']} | skipped | {r['skipped']} | |")
            continue
        ok = "" if r["rc"] == r["expect"] else " **MISMATCH**"
        msg = r["message"].replace("|", "\\|")
        msg = msg if len(msg) <= 230 else msg[:227] + "..."
        rows.append(f"| {r['case']} | {r['what']} | {r['rc']} ({r['expect']}){ok} | `{msg}` | {_left(r)} |")
    return "\n".join(rows)


def _s3_server(stack):
    from tests.s3_server import SCRIPT, _session_env, _start, find_weed

    weed = find_weed()
    if weed is None:
        return None, {}
    d = Path(tempfile.mkdtemp(prefix="rel-s3-"))
    server = _start(d, weed)
    stack.append(lambda: (subprocess.run(["bash", str(SCRIPT), "stop", str(d)], capture_output=True, timeout=60),
                          shutil.rmtree(d, ignore_errors=True)))
    env = {k: v for k, v in _session_env(server).items() if v is not None}
    for k, v in _session_env(server).items():  # this process writes the victims; the S3 cases inherit it
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    from mine_dist import storage

    server.filesystem(allow_bucket_creation=True).create_dir("rel")
    for key in ("victim/keep.txt", "victim/out/old-run/estimate.json"):
        storage.write_text_atomic(f"s3://rel/{key}", "x")
    x, z = _pair()
    buf = pa.BufferOutputStream()
    pq.write_table(_table(x, z), buf)
    storage.write_bytes_atomic("s3://rel/d/a.parquet", buf.getvalue().to_pybytes())
    return "s3://rel", env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the table in docs/reliability.md")
    ap.add_argument("--only", default=None, help="run the cases whose name contains this")
    args = ap.parse_args()
    cleanup: list = []
    try:
        cases = [c for c in CASES if not args.only or args.only in c.name]
        bucket, s3_env = _s3_server(cleanup) if any(c.s3 for c in cases) else (None, {})
        results = []
        for c in cases:
            if c.s3 and not bucket:
                results.append({"case": c.name, "what": c.what, "skipped": "no S3 server (weed not installed)"})
                continue
            r = run_case(c, bucket, s3_env)
            flag = "ok" if r["rc"] == r["expect"] else "MISMATCH"
            print(f"{c.name:16s} exit {r['rc']:3d} (expected {c.expect:3d}) {flag:8s} {r['wall_s']:5.1f}s  {r['message'][:90]}",
                  file=sys.stderr, flush=True)
            results.append(r)
    finally:
        for f in cleanup:
            f()
    table = markdown(results)
    print(table)
    if args.write:
        doc = ROOT / "docs" / "reliability.md"
        text = doc.read_text()
        head, rest = text.split(BEGIN, 1)
        doc.write_text(head + BEGIN + "\n" + table + "\n" + END + rest.split(END, 1)[1])
    bad = [r for r in results if not r.get("skipped") and (r["rc"] != r["expect"] or r["lost"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

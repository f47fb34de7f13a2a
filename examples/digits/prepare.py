"""Build the digits example's embeddings (shipped in data/, so the audit runs offline as is).

scikit-learn's 8x8 digit images (1,797, shipped inside the package) are embedded two ways:
  * emb_v1: PCA to 16 dimensions ("model v1");
  * emb_v2: PCA to 16 dimensions of the same images with independent pixel noise added ("model
    v2", a retrained model that sees slightly different inputs), so I(v1; v2) is high but finite;
  * emb_leaky: emb_v1 with the one-hot label appended at a small scale: a planted leak (used to
    show the max_mi alert).
with the label in `digit`. Regenerate with:  .venv/bin/pip install scikit-learn && .venv/bin/python examples/digits/prepare.py
"""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA


def fixed(a):
    a = np.ascontiguousarray(a, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def main() -> None:
    rng = np.random.default_rng(0)
    d = load_digits()
    x, y = d.data.astype(np.float64), d.target.astype(np.int64)
    v1 = PCA(16, random_state=0).fit_transform(x)
    v2 = PCA(16, random_state=1).fit_transform(x + rng.normal(0, 4.0, size=x.shape))
    leaky = np.c_[v1, 3.0 * np.eye(10)[y] + rng.normal(0, 0.5, size=(len(y), 10))]
    t = pa.table({"row_id": pa.array(np.arange(len(y))), "emb_v1": fixed(v1), "emb_v2": fixed(v2),
                  "emb_leaky": fixed(leaky), "digit": pa.array(y)})
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "digits_embeddings.parquet")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    pq.write_table(t, out, write_page_checksum=True)
    print(f"wrote {len(y)} rows to {out}")


if __name__ == "__main__":
    main()

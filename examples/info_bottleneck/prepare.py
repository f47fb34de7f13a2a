"""Write data/digits.npz from scikit-learn's digits (shipped, so the example runs offline as is).

scikit-learn's copy of the UCI "Optical Recognition of Handwritten Digits" test set: 1,797 images
of 8x8 pixels with values 0..16, labels 0..9 (Alpaydin & Kaynak, 1998; CC BY 4.0). Stored as
``images`` (1797, 64) uint8 and ``labels`` (1797,) uint8. Regenerate with
``pip install scikit-learn && python examples/info_bottleneck/prepare.py``.
"""

import os

import numpy as np
from sklearn.datasets import load_digits


def main() -> None:
    d = load_digits()
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "digits.npz")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    np.savez_compressed(out, images=d.data.astype(np.uint8), labels=d.target.astype(np.uint8))
    print(f"wrote {len(d.target)} images to {out}")


if __name__ == "__main__":
    main()

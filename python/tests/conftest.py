import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
if os.path.join(ROOT, "python") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "python"))

VECTORS = os.path.join(ROOT, "examples", "chrysalis", "vectors.f32")
RECORDS = os.path.join(ROOT, "examples", "chrysalis", "records.jsonl")
GOLDEN = os.path.join(ROOT, "tests", "data", "chrysalis", "golden")


def cli_path():
    p = os.environ.get("CHRYS_CLI")
    if p and os.path.exists(p):
        return p
    for b in ("build/py", "build/release"):
        q = os.path.join(ROOT, b, "chrysalis")
        if os.path.exists(q):
            return q
    return None


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def clustered(rng, n, dim, n_clusters=8, spread=0.05):
    c = unit(rng.standard_normal((n_clusters, dim)))
    lab = rng.integers(0, n_clusters, n)
    return unit(c[lab] + spread / np.sqrt(dim) * rng.standard_normal((n, dim)))

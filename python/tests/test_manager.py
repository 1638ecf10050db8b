"""IndexManager (FAISSIndexManager): string ids, true cosine, save/load to a directory."""
import os
import warnings

import numpy as np
import pytest

import chrysalis
from conftest import clustered


@pytest.mark.parametrize("kind", ["Flat", "IVFFlat", "HNSW", "IVF8,SQ8", "IVF8,SQ8,RFlat", "HNSW16,SQ8,RFlat"])
def test_build_search_save_load(tmp_path, rng, kind):
    X = clustered(rng, 2000, 64, n_clusters=20, spread=0.4).astype(np.float32)
    names = [f"legend_{i}" for i in range(len(X))]
    m = chrysalis.IndexManager(dimension=64, index_type=kind, nlist=16)
    m.build_index(X, names)
    assert len(m) == 2000
    res = m.search(X[5], k=5, similarity_threshold=0.5)
    # exact scores, except codes-only SQ8 (int8 codes: scores within the quantisation error)
    tol = 1e-2 if kind.endswith(",SQ8") else 1e-3
    assert res[0][0] == "legend_5" and abs(res[0][1] - 1.0) < tol
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    for name, cos in res:
        j = int(name.split("_")[1])
        assert abs(cos - float(Xn[5] @ Xn[j])) < 2e-2 and cos >= 0.5  # true cosine, not 1/(1+L2)
    m.save(tmp_path / "mgr")
    # one store file (and the writer lock's sidecar, PATH.lock)
    assert sorted(os.listdir(tmp_path / "mgr")) in (["index.chrys"], ["index.chrys", "index.chrys.lock"])
    m2 = chrysalis.FAISSIndexManager(dimension=64, index_type=kind)
    m2.load(tmp_path / "mgr")
    assert m2.search(X[5], k=5, similarity_threshold=0.5) == res


def test_threshold_is_cosine(rng):
    m = chrysalis.IndexManager(dimension=3, index_type="Flat")
    m.build_index(np.array([[1, 0, 0], [0.85, np.sqrt(1 - 0.85 ** 2), 0]], np.float32), ["a", "b"])
    res = m.search([1, 0, 0], k=10, similarity_threshold=0.85)
    assert [r[0] for r in res] == ["a", "b"] and abs(res[1][1] - 0.85) < 1e-6


def test_bad_arguments_and_gpu(tmp_path, rng):
    with pytest.warns(RuntimeWarning, match="GPU"):
        chrysalis.IndexManager(dimension=8, use_gpu=True)
    with pytest.raises(chrysalis.InvalidInputError):
        chrysalis.IndexManager(dimension=0)
    with pytest.raises(chrysalis.InvalidInputError):
        chrysalis.IndexManager(dimension=8, nlist=0)
    with pytest.raises(chrysalis.InvalidInputError):
        chrysalis.IndexManager(dimension=8, index_type="LSH")
    m = chrysalis.IndexManager(dimension=8, index_type="Flat")
    assert m.search(np.ones(8), k=3) == []
    X = rng.standard_normal((4, 8)).astype(np.float32)
    with pytest.raises(chrysalis.DuplicateIdError):
        m.build_index(X, ["a", "b", "a", "c"])
    with pytest.raises(TypeError):
        m.build_index(X, [1, 2, 3, 4])
    with pytest.raises(chrysalis.InvalidInputError):
        m.build_index(X, ["a"])
    with pytest.raises(chrysalis.DimensionError):
        m.build_index(np.ones((2, 9), np.float32), ["a", "b"])
    with pytest.raises(chrysalis.InvalidInputError):
        m.save(tmp_path / "x")
    m.build_index(X, ["a", "b", "c", "d"])
    m.add(X[:1] * 2, ["e"])
    with pytest.raises(chrysalis.DuplicateIdError):
        m.add(X[:1], ["a"])
    assert m.search(X[0], k=2, similarity_threshold=0.99)[0][0] in ("a", "e")
    with pytest.raises(chrysalis.InvalidInputError):
        m.search(np.ones((2, 8)))
    m.save(tmp_path / "d")
    with pytest.raises(chrysalis.DimensionError):
        chrysalis.IndexManager(dimension=16).load(tmp_path / "d")
    with pytest.raises(chrysalis.StoreIOError):
        chrysalis.IndexManager(dimension=8).load(tmp_path / "missing")

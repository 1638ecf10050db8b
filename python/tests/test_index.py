"""chrysalis.Index: exact search equals a numpy brute force (exact search is the oracle), every
bad argument, padding, remove/update/get, save/load, mmap, pickling, corrupt stores."""
import os
import pickle

import numpy as np
import pytest

import chrysalis
from conftest import clustered


def brute(X, Q, k, metric):
    X = X.astype(np.float64)
    Q = Q.astype(np.float64)
    if metric == "cosine":
        S = (Q / np.linalg.norm(Q, axis=1, keepdims=True)) @ (X / np.linalg.norm(X, axis=1, keepdims=True)).T
        order = np.lexsort((np.broadcast_to(np.arange(len(X)), S.shape), -S), axis=1)
    elif metric == "ip":
        S = Q @ X.T
        order = np.lexsort((np.broadcast_to(np.arange(len(X)), S.shape), -S), axis=1)
    else:
        S = ((Q[:, None, :] - X[None, :, :]) ** 2).sum(-1)
        order = np.lexsort((np.broadcast_to(np.arange(len(X)), S.shape), S), axis=1)
    top = order[:, :k]
    return np.take_along_axis(S, top, 1), top


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("dim", [3, 64, 200])
def test_exact_equals_brute_force(rng, metric, dim):
    X = rng.standard_normal((500, dim)).astype(np.float32)
    Q = rng.standard_normal((37, dim)).astype(np.float32)
    ix = chrysalis.Index(dim, metric, "Flat")
    ix.add(X)
    s, i = ix.search(Q, k=10)
    assert s.dtype == np.float32 and i.dtype == np.int64 and s.shape == (37, 10)
    bs, bi = brute(X, Q, 10, metric)
    assert np.array_equal(i, bi)
    assert np.allclose(s, bs, rtol=1e-5, atol=1e-5)


def test_padding_threshold_filter(rng):
    X = rng.standard_normal((5, 8)).astype(np.float32)
    ix = chrysalis.Index(8)
    ix.add(X, ids=[10, 20, 30, 40, 50])
    s, i = ix.search(X[0], k=8)
    assert i[0, 0] == 10 and (i[0, 5:] == -1).all() and np.isneginf(s[0, 5:]).all()
    s, i = ix.search(X[0], k=3, threshold=0.99)
    assert i[0].tolist() == [10, -1, -1]
    s, i = ix.search(X[0], k=5, filter=[20, 40])
    assert set(i[0][i[0] >= 0].tolist()) == {20, 40}
    l2 = chrysalis.Index(8, "l2")
    l2.add(X)
    s, i = l2.search(X[0], k=8)
    assert np.isposinf(s[0, 5:]).all() and (i[0, 5:] == -1).all()


def test_no_copy_and_conversion(rng):
    X = rng.standard_normal((50, 16))
    ix = chrysalis.Index(16, "ip")
    ix.add(X)                        # float64: converted once
    ix.add(np.asfortranarray(X))     # strided
    ix.add(X.astype(np.float32)[:, :])
    assert len(ix) == 150
    assert np.allclose(ix.get(0), X[0].astype(np.float32))
    assert np.allclose(ix.get([50, 100]), X[[0, 0]].astype(np.float32))


def test_ids_remove_update_get_meta(rng):
    X = rng.standard_normal((20, 8)).astype(np.float32)
    ix = chrysalis.Index(8)
    ids = ix.add(X[:10])
    assert ids.tolist() == list(range(10))
    assert ix.add(X[10:12], meta=[{"name": "a"}, None]).tolist() == [10, 11]
    assert ix.get_meta(10) == {"name": "a"} and ix.get_meta(11) is None
    assert 3 in ix and 99 not in ix and "x" not in ix
    ix.remove([3, 4])
    assert len(ix) == 10 and 3 not in ix
    with pytest.raises(chrysalis.NotFoundError):
        ix.remove([5, 3])
    assert 5 in ix  # all or nothing
    ix.update(5, X[19])
    s, i = ix.search(X[19], k=1)
    assert i[0, 0] == 5
    with pytest.raises(KeyError):
        ix.get(3)
    assert sorted(ix.ids().tolist()) == [0, 1, 2, 5, 6, 7, 8, 9, 10, 11]
    info = ix.info()
    assert info["count"] == 10 and info["dim"] == 8 and info["metric"] == "cosine"
    assert "Index" in repr(ix)


def test_bad_arguments(rng):
    with pytest.raises(chrysalis.InvalidInputError):
        chrysalis.Index(0)
    with pytest.raises(chrysalis.InvalidInputError):
        chrysalis.Index(100000)
    with pytest.raises(TypeError):
        chrysalis.Index("8")
    with pytest.raises(chrysalis.InvalidInputError):
        chrysalis.Index(8, metric="hamming")
    with pytest.raises(chrysalis.InvalidInputError, match="IVF"):
        chrysalis.Index(8, spec="IVFX")
    ix = chrysalis.Index(4)
    X = rng.standard_normal((3, 4)).astype(np.float32)
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(chrysalis.InvalidInputError, match="row 2"):
        ix.add(bad)
    bad[2] = 0
    with pytest.raises(chrysalis.InvalidInputError, match="row 2.*zero"):
        ix.add(bad)
    with pytest.raises(chrysalis.DimensionError):
        ix.add(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError):
        ix.add(np.zeros((2, 2, 4), np.float32))
    with pytest.raises(chrysalis.DuplicateIdError, match="row 1"):
        ix.add(X[:2], ids=[7, 7])
    ix.add(X, ids=[1, 2, 3])
    with pytest.raises(chrysalis.DuplicateIdError):
        ix.add(X[:1], ids=[2])
    with pytest.raises(chrysalis.InvalidInputError, match="negative"):
        ix.add(X[:1], ids=[-1])
    with pytest.raises(chrysalis.InvalidInputError):
        ix.add(X[:1], ids=[1, 2])
    with pytest.raises(chrysalis.InvalidInputError):
        ix.add(X[:1], ids=["a"])
    with pytest.raises(chrysalis.InvalidInputError):
        ix.add(X[:1], meta="x")
    with pytest.raises(chrysalis.InvalidInputError):
        ix.add(X[:1], meta=[object()])
    with pytest.raises(chrysalis.InvalidInputError):
        ix.add([["a", "b", "c", "d"]])
    assert len(ix) == 3  # nothing of a failed add was kept
    with pytest.raises(chrysalis.InvalidInputError):
        ix.search(X, k=0)
    with pytest.raises(chrysalis.InvalidInputError):
        ix.search(X, k=chrysalis._chrysalis.MAX_K + 1)
    with pytest.raises(TypeError):
        ix.search(X, k=1.5)
    with pytest.raises(chrysalis.InvalidInputError, match="row 0"):
        ix.search(np.zeros(4, np.float32))
    with pytest.raises(chrysalis.InvalidInputError, match="row 1"):
        ix.search(np.array([[1, 0, 0, 0], [np.inf, 0, 0, 0]], np.float32))
    with pytest.raises(chrysalis.DimensionError):
        ix.search(np.ones(3, np.float32))
    with pytest.raises(chrysalis.InvalidInputError):
        ix.search(X, threshold=float("nan"))
    with pytest.raises(chrysalis.InvalidInputError):
        ix.search(X, ef_search=0)
    with pytest.raises(chrysalis.InvalidInputError):
        ix.search(X, threads=-1)
    with pytest.raises(chrysalis.InvalidInputError):
        ix.update([1], np.zeros((1, 4), np.float32))
    with pytest.raises(chrysalis.NotFoundError):
        ix.update([99], X[:1])
    for e in (chrysalis.InvalidInputError, chrysalis.DimensionError, chrysalis.DuplicateIdError,
              chrysalis.NotFoundError, chrysalis.CorruptStoreError, chrysalis.StoreIOError,
              chrysalis.UnsupportedFormatError, chrysalis.LimitError):
        assert issubclass(e, chrysalis.Error)
    u = chrysalis.Index.__new__(chrysalis.Index)
    with pytest.raises(chrysalis.Error):
        u.search(X)


def test_save_load_mmap_pickle(tmp_path, rng):
    X = rng.standard_normal((300, 32)).astype(np.float32)
    for spec in ("Flat", "SQ8", "HNSW16", "IVF4,Flat"):
        ix = chrysalis.Index(32, spec=spec)
        ix.add(X, meta=[{"i": i} for i in range(300)])
        s0, i0 = ix.search(X[:20], k=5)
        p = tmp_path / f"{spec.replace(',', '_')}.chrys"
        ix.save(p)
        for loaded in (chrysalis.Index.load(p), chrysalis.Index.load(str(p), mmap=True),
                       pickle.loads(pickle.dumps(ix)), chrysalis.Index.from_bytes(p.read_bytes())):
            s1, i1 = loaded.search(X[:20], k=5)
            assert np.array_equal(i0, i1) and np.array_equal(s0, s1)
            assert loaded.get_meta(7) == {"i": 7}
        assert ix.to_bytes() == p.read_bytes()
    mm = chrysalis.Index.load(p, mmap=True)
    assert mm.info()["mmap"]
    with pytest.raises(chrysalis.Error, match="read-only"):
        mm.add(X[:1])
    # ids continue after a load
    back = chrysalis.Index.load(p)
    assert back.add(X[:1]).tolist() == [300]


def test_corrupt_and_missing_stores(tmp_path, rng):
    ix = chrysalis.Index(8)
    ix.add(rng.standard_normal((50, 8)).astype(np.float32))
    p = tmp_path / "a.chrys"
    ix.save(p)
    data = p.read_bytes()
    (tmp_path / "t.chrys").write_bytes(data[: len(data) // 2])
    with pytest.raises(chrysalis.CorruptStoreError):
        chrysalis.Index.load(tmp_path / "t.chrys")
    flipped = bytearray(data)
    flipped[len(data) - 100] ^= 0x10
    (tmp_path / "f.chrys").write_bytes(bytes(flipped))
    with pytest.raises(chrysalis.CorruptStoreError):
        chrysalis.Index.load(tmp_path / "f.chrys")
    with pytest.raises(chrysalis.CorruptStoreError):
        chrysalis.Index.from_bytes(data[:100])
    with pytest.raises(chrysalis.CorruptStoreError):
        pickle.loads(pickle.dumps(ix).replace(data[200:210], b"\0" * 10)) if data[200:210] != b"\0" * 10 \
            else chrysalis.Index.from_bytes(data[:-1])
    with pytest.raises(chrysalis.StoreIOError):
        chrysalis.Index.load(tmp_path / "missing.chrys")
    with pytest.raises(OSError):
        ix.save(tmp_path / "no" / "such" / "dir.chrys")


def test_hnsw_recall_against_exact(rng):
    X = clustered(rng, 3000, 48, n_clusters=30, spread=0.5).astype(np.float32)
    Q = clustered(rng, 100, 48, n_clusters=30, spread=0.5).astype(np.float32)
    flat = chrysalis.Index(48, spec="Flat")
    flat.add(X)
    hn = chrysalis.Index(48, spec="HNSW16")
    hn.add(X)
    _, gi = flat.search(Q, k=10)
    _, hi = hn.search(Q, k=10, ef_search=128)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(gi, hi)])
    assert recall >= 0.95
    assert hn.info()["kind"] == "hnsw"


def test_auto_planner_and_help():
    ix = chrysalis.Index(8)
    assert ix.info()["planned"]
    assert "cosine" in chrysalis.Index.__doc__
    assert chrysalis.Index.search.__doc__ and chrysalis.Index.add.__doc__


# ---- string ids -------------------------------------------------------------------------------

def test_string_ids_everywhere(tmp_path):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((500, 24)).astype(np.float32)
    names = [f"skill {i}" for i in range(500)]
    ix = chrysalis.Index(24, spec="Flat", string_ids=True)
    assert ix.add(X, names, meta=[{"n": i} if i % 3 == 0 else None for i in range(500)]) == names
    assert ix.info()["string_ids"] and len(ix) == 500
    # search: the exact oracle, names instead of integers, None in unused slots
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    scores, ids = ix.search(X[:20], k=5)
    want = np.argsort(-(Xn[:20] @ Xn.T), axis=1, kind="stable")[:, :5]
    assert ids.dtype == object and [[names[j] for j in row] for row in want] == ids.tolist()
    s, i = ix.search(X[:1], k=3, filter=["skill 9", "skill 10", "not there"])
    assert i.tolist() == [["skill 9", "skill 10", None]] or i.tolist() == [["skill 10", "skill 9", None]]
    assert s[0, 2] == -np.inf
    # get, get_meta, in, ids
    assert np.allclose(ix.get("skill 4"), X[4], atol=1e-6) and ix.get(["skill 4", "skill 5"]).shape == (2, 24)
    assert ix.get_meta("skill 3") == {"n": 3} and ix.get_meta("skill 4") is None
    assert "skill 4" in ix and 4 not in ix and "nope" not in ix
    assert sorted(ix.ids()) == sorted(names)
    # update and remove by name
    ix.update("skill 1", X[2:3])
    assert ix.search(X[2:3], k=2)[1].tolist() == [["skill 1", "skill 2"]]
    ix.remove(["skill 0", "skill 1"])
    assert len(ix) == 498 and "skill 0" not in ix
    ix.add(X[:1], ["skill 0"])  # a removed name can come back
    assert ix.search(X[:1], k=1)[1].tolist() == [["skill 0"]]
    # save/load and pickling keep the names (they live in the store file)
    ix.save(tmp_path / "s.chrys")
    back = chrysalis.Index.load(tmp_path / "s.chrys")
    assert back.info()["string_ids"] and back.search(X[:20], k=5)[1].tolist() == ix.search(X[:20], k=5)[1].tolist()
    assert back.get_meta("skill 3") == {"n": 3}
    back.add(X[5:6], ["after load"])  # integer ids continue after the largest
    assert back.search(X[5:6], k=2)[1].tolist()[0][0] in ("after load", "skill 5")
    again = pickle.loads(pickle.dumps(ix))
    assert again.search(X[7:8], k=1)[1].tolist() == [["skill 7"]]


def test_string_ids_bad_input(tmp_path):
    X = np.eye(4, dtype=np.float32)
    ix = chrysalis.Index(4, spec="Flat", string_ids=True)
    with pytest.raises(ValueError, match="string ids"):
        ix.add(X)  # names required
    with pytest.raises(TypeError, match=r"ids\[1\]"):
        ix.add(X[:2], ["a", 2])
    with pytest.raises(chrysalis.DuplicateIdError, match="row 1.*repeats row 0"):
        ix.add(X[:2], ["a", "a"])
    assert len(ix) == 0
    ix.add(X[:2], ["a", "b"])
    with pytest.raises(chrysalis.DuplicateIdError, match="already in the index"):
        ix.add(X[2:3], ["a"])
    with pytest.raises(chrysalis.NotFoundError, match="'zz' not found"):
        ix.remove(["b", "zz"])
    assert "b" in ix and len(ix) == 2  # all or nothing
    with pytest.raises(chrysalis.InvalidInputError, match="row 0"):
        ix.add(np.full((1, 4), np.nan, dtype=np.float32), ["nan"])
    assert "nan" not in ix  # a refused add leaves no name behind
    # a plain store is not a string-id store
    plain = chrysalis.Index(4, spec="Flat")
    plain.add(X)
    plain.save(tmp_path / "p.chrys")
    assert not chrysalis.Index.load(tmp_path / "p.chrys").info()["string_ids"]
    with pytest.raises(chrysalis.CorruptStoreError, match="no string id"):
        chrysalis.Index.load(tmp_path / "p.chrys", string_ids=True)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_score_is_exact_searchs_double(metric):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((300, 20)).astype(np.float32)
    Q = rng.standard_normal((9, 20)).astype(np.float32)
    ix = chrysalis.Index(20, metric=metric, spec="Flat")
    ix.add(X)
    s, ids = ix.search(Q, k=12)
    sc = ix.score(Q, ids)
    assert sc.dtype == np.float64 and sc.shape == (9, 12)
    assert np.array_equal(sc.astype(np.float32), s)  # search returns these doubles rounded
    Xd = X.astype(np.float64)
    Qd = Q.astype(np.float64)
    if metric == "cosine":
        Xd /= np.linalg.norm(Xd, axis=1, keepdims=True)
        Qd /= np.linalg.norm(Qd, axis=1, keepdims=True)
    ref = ((Qd[:, None, :] - Xd[ids]) ** 2).sum(-1) if metric == "l2" else np.einsum("qd,qkd->qk", Qd, Xd[ids])
    assert np.allclose(sc, ref, atol=1e-5)
    one = ix.score(Q, [3, 4])  # a 1-d id list scores against every query
    assert one.shape == (9, 2) and one[0, 0] == ix.score(Q[:1], [[3]])[0, 0]
    with pytest.raises(chrysalis.NotFoundError):
        ix.score(Q, [3, 9999])
    if metric == "cosine":
        with pytest.raises(chrysalis.InvalidInputError, match="row 1"):
            ix.score(np.stack([Q[0], np.zeros(20, np.float32)]), [1])


def test_search_failure_raises_the_library_message(rng):
    """A search the library refuses raises with the library's own message (chrys_index_errmsg,
    kept per thread for a search), not a guess: the query row at fault is named. The low-level
    _search is called so the Python-side checks of Index.search do not catch the row first."""
    ix = chrysalis.Index(4)
    ix.add(rng.standard_normal((5, 4)).astype(np.float32))
    q = rng.standard_normal((3, 4)).astype(np.float32)
    q[2, 0] = np.inf
    scores = np.empty((3, 2), np.float32)
    ids = np.empty((3, 2), np.int64)
    with pytest.raises(chrysalis.InvalidInputError, match="query row 2") as e:
        ix._search(q, 3, 2, None, 0, 0, 0, None, scores, ids)
    assert "invalid search arguments" not in str(e.value)

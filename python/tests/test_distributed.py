"""chrysalis.distributed on a LocalCluster of 2 worker processes, against one process as the oracle:
sharded Flat search equals chrysalis.Index, the sharded merger equals chrysalis.Merger(exact=True)
(entries, vectors bit for bit, counts, assignments, metadata), continued from a saved directory;
workers killed between and during calls; bad input refused before any shard changes; embed's
de-duplication and cache."""
import os
import time

import numpy as np
import pytest

import chrysalis

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (python3-distributed)")
from chrysalis import distributed as cd  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


@pytest.fixture(scope="module")
def cluster():
    pp = os.path.join(ROOT, "python")
    os.environ["PYTHONPATH"] = pp + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    cl = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=50)
    client = distributed.Client(cl)
    yield cl, client
    client.close()
    cl.close()


@pytest.fixture
def client(cluster):
    cl, c = cluster
    c.wait_for_workers(2, timeout=60)
    return c


def clustered(rng, n, dim, centres=12, spread=0.35):
    c = rng.standard_normal((centres, dim))
    lab = rng.integers(0, centres, n)
    return (c[lab] + spread * rng.standard_normal((n, dim))).astype(np.float32)


def near_threshold(rng, n, dim, thr=0.85):
    """Pairs whose cosine lies within +-0.004 of the threshold, plus exact duplicates (ties)."""
    base = rng.standard_normal((n // 3, dim))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    out = []
    for b in base:
        out.append(b)
        t = thr + rng.uniform(-0.004, 0.004)
        o = rng.standard_normal(dim)
        o -= o.dot(b) * b
        o /= np.linalg.norm(o)
        out.append(t * b + np.sqrt(1 - t * t) * o)
        out.append(b.copy())  # a duplicate: equal scores
    a = np.array(out, np.float32)
    return a[rng.permutation(len(a))]


def single(vectors, ids=None, meta=None, threshold=0.85, state=None, variant="embedding"):
    m = state or chrysalis.Merger(None, dim=vectors.shape[1], threshold=threshold, exact=True, variant=variant)
    m.merge(vectors, ids=ids, meta=meta)
    return m


def assert_same(sm, m, records=None):
    a, b = sm.entries(), m.entries()
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["entry"] == y["entry"] and x["merged_count"] == y["merged_count"]
        assert x["first_record"] == y["first_record"]
        assert (x["similarity_score"] is None) == (y["similarity_score"] is None)
        if x["similarity_score"] is not None:
            assert x["similarity_score"] == y["similarity_score"]  # the same double
        assert x["meta"] == y["meta"]
        assert np.array_equal(x["embedding"], y["embedding"])  # bit for bit
    for r in records if records is not None else []:
        assert sm.lookup(r) == m.lookup(r)


# -- ShardedIndex -------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_sharded_flat_search_equals_one_process(client, rng, metric, tmp_path):
    X = rng.standard_normal((900, 24)).astype(np.float32)
    X[100:110] = X[5]  # duplicates: ties must break by smaller id as in one process
    Q = np.concatenate([rng.standard_normal((40, 24)).astype(np.float32), X[5:6]])
    ix = chrysalis.Index(24, metric=metric, spec="Flat")
    ix.add(X)
    sx = cd.ShardedIndex(client, 24, n_shards=3, metric=metric)
    sx.add(X[:500])
    sx.add(X[500:], ids=np.arange(500, 900))
    assert len(sx) == 900
    s1, i1 = ix.search(Q, k=15)
    s2, i2 = sx.search(Q, k=15)
    assert np.array_equal(i1, i2) and np.array_equal(s1, s2)
    sx.save(tmp_path / "ix")
    sy = cd.ShardedIndex.load(client, tmp_path / "ix")
    s3, i3 = sy.search(Q, k=15)
    assert np.array_equal(i1, i3) and np.array_equal(s1, s3)
    stores = sorted(f for f in os.listdir(tmp_path / "ix") if f.endswith(".chrys"))
    assert stores == [f"shard-{s:04d}.g1.chrys" for s in range(3)]
    sx.add(X[:5] + 1, ids=np.arange(1000, 1005))
    sx.save(tmp_path / "ix")  # a second save: a new generation, the old files removed after the manifest
    stores = sorted(f for f in os.listdir(tmp_path / "ix") if f.endswith(".chrys"))
    assert stores == [f"shard-{s:04d}.g2.chrys" for s in range(3)]
    assert len(cd.ShardedIndex.load(client, tmp_path / "ix")) == 905
    sx.close()
    sy.close()


def test_sharded_index_bad_input_changes_nothing(client, rng):
    sx = cd.ShardedIndex(client, 8, n_shards=2)
    sx.add(rng.standard_normal((10, 8)))
    bad = rng.standard_normal((4, 8)).astype(np.float32)
    bad[2, 3] = np.nan
    with pytest.raises(chrysalis.InvalidInputError, match="row 2"):
        sx.add(bad, ids=[20, 21, 22, 23])
    z = rng.standard_normal((3, 8)).astype(np.float32)
    z[1] = 0
    with pytest.raises(chrysalis.InvalidInputError, match="row 1"):
        sx.add(z, ids=[30, 31, 32])
    with pytest.raises(chrysalis.DimensionError):
        sx.add(rng.standard_normal((2, 9)))
    with pytest.raises(chrysalis.DuplicateIdError, match="row 1"):
        sx.add(rng.standard_normal((2, 8)), ids=[40, 40])
    with pytest.raises(chrysalis.DuplicateIdError, match="already in the index"):
        sx.add(rng.standard_normal((3, 8)), ids=[41, 3, 42])  # 41 and 42 would land on other shards
    assert len(sx) == 10
    _, ids = sx.search(rng.standard_normal((1, 8)), k=20)
    assert sorted(i for i in ids[0].tolist() if i >= 0) == list(range(10))
    sx.close()


# -- ShardedMerger ------------------------------------------------------------------------------
def test_sharded_merge_equals_single_clustered_and_continues(client, rng, tmp_path):
    dim = 32
    X = clustered(rng, 700, dim)
    meta = [{"name": f"r{i}", "descriptors": [f"d{i % 7}", "x"], "processed_at": f"t{i}"} for i in range(700)]
    d = tmp_path / "m"
    sm = cd.ShardedMerger(client, d, dim=dim, n_shards=3, batch_size=128)
    s = sm.merge(X[:400], meta=meta[:400])
    m = single(X[:400], meta=meta[:400])
    assert s["merged"] > 50 and s["added"] > 10  # both kinds of decision happen
    assert_same(sm, m, range(400))
    assert s["entries"] == len(m.entries(vectors=False))
    hist = {}
    for e in m.entries(vectors=False):
        hist[str(e["merged_count"])] = hist.get(str(e["merged_count"]), 0) + 1
    assert s["merged_count_histogram"] == {k: hist[k] for k in sorted(hist, key=int)}
    sm.close()
    # continued from the saved directory, by a new client-side object
    sm2 = cd.ShardedMerger.open(client, d)
    s2 = sm2.merge(X[400:], ids=np.arange(400, 700), meta=meta[400:])
    m.merge(X[400:], ids=np.arange(400, 700), meta=meta[400:])
    assert_same(sm2, m, range(700))
    assert s2["records"] == 300 and sm2.stats()["records"] == 700 and sm2.stats()["runs"] == 2
    sm2.close()


def test_sharded_merge_near_threshold_and_ties(client, rng, tmp_path):
    dim = 16
    X = near_threshold(rng, 600, dim)
    sm = cd.ShardedMerger(client, tmp_path / "n", dim=dim, n_shards=2, batch_size=64)
    s = sm.merge(X)
    m = single(X)
    assert s["merged"] > 100
    assert_same(sm, m, range(len(X)))
    # a single batch holding records that match each other, and mean_update / skill variant
    Y = np.repeat(rng.standard_normal((5, dim)).astype(np.float32), 8, axis=0)
    Y += 0.05 * rng.standard_normal(Y.shape).astype(np.float32)
    sk = cd.ShardedMerger(client, tmp_path / "k", dim=dim, n_shards=3, variant="skill", mean_update=True)
    meta = [{"salts_used": [i % 3, "s"]} for i in range(len(Y))]
    sk.merge(Y, meta=meta)
    mk = chrysalis.Merger(None, dim=dim, variant="skill", mean_update=True, exact=True)
    mk.merge(Y, meta=meta)
    assert_same(sk, mk, range(len(Y)))
    sm.close()
    sk.close()


def test_sharded_merge_bad_input_changes_nothing(client, rng, tmp_path):
    dim = 8
    d = tmp_path / "b"
    sm = cd.ShardedMerger(client, d, dim=dim, n_shards=2)
    X = rng.standard_normal((20, dim)).astype(np.float32)
    sm.merge(X)
    before = sm.entries()
    manifest = (d / "MANIFEST.json").read_text()
    bad = rng.standard_normal((5, dim)).astype(np.float32)
    bad[3, 0] = np.inf
    with pytest.raises(chrysalis.InvalidInputError, match="row 3"):
        sm.merge(bad)
    bad[3] = 0
    with pytest.raises(chrysalis.InvalidInputError, match="row 3"):
        sm.merge(bad)
    with pytest.raises(chrysalis.DimensionError):
        sm.merge(rng.standard_normal((2, dim + 1)))
    with pytest.raises(chrysalis.DuplicateIdError, match="already merged"):
        sm.merge(rng.standard_normal((2, dim)), ids=[100, 4])
    with pytest.raises(chrysalis.DuplicateIdError, match="twice"):
        sm.merge(rng.standard_normal((2, dim)), ids=[100, 100])
    with pytest.raises(chrysalis.InvalidInputError, match="record 1.*JSON object"):
        sm.merge(rng.standard_normal((2, dim)), meta=[{"a": 1}, "[1, 2]"])
    after = sm.entries()
    assert len(after) == len(before) and all(np.array_equal(x["embedding"], y["embedding"]) for x, y in zip(before, after))
    assert (d / "MANIFEST.json").read_text() == manifest
    with pytest.raises(TypeError, match="renormalize"):
        cd.ShardedMerger(client, tmp_path / "r", dim=dim, renormalize=True)
    sm.close()


def _kill_worker_of(client, sm, shard):
    addr = sm._sh.where[shard]
    # the worker process exits 0.1 s after answering (the nanny then starts a fresh, empty one)
    client.run(exec, "import os, threading; threading.Timer(0.1, os._exit, (1,)).start()", workers=[addr])
    t = time.time()
    while addr in client.scheduler_info()["workers"] and time.time() - t < 30:
        time.sleep(0.1)


def test_worker_killed_between_calls_recovers_exactly(client, rng, tmp_path):
    dim = 16
    X = clustered(rng, 300, dim, centres=6)
    sm = cd.ShardedMerger(client, tmp_path / "w", dim=dim, n_shards=2, batch_size=50)
    sm.merge(X[:150])
    _kill_worker_of(client, sm, 0)
    s = sm.merge(X[150:])  # notices, reloads shard 0 from its saved store, exact result
    assert s["distributed"]["reloads"] >= 1
    m = single(X)
    assert_same(sm, m, range(300))
    sm.close()
    # an index changed since its save cannot be restored: a clear error naming the shard
    client.wait_for_workers(2, timeout=60)
    sx = cd.ShardedIndex(client, dim, n_shards=2)
    sx.add(X)
    _kill_worker_of(client, sx, 1)
    with pytest.raises(cd.ShardLostError, match="shard 1"):
        sx.search(X[:3], k=5)
    client.wait_for_workers(2, timeout=60)
    sx.close()


def test_worker_killed_mid_merge(client, rng, tmp_path):
    """A worker dies while a merge call is in progress (after some blocks were applied): the call
    restarts from the saved state and gives the exact result; if it cannot, a ShardLostError and
    the directory reopens to the state before the call."""
    dim = 16
    X = clustered(rng, 400, dim, centres=6)
    d = tmp_path / "mid"
    sm = cd.ShardedMerger(client, d, dim=dim, n_shards=2, batch_size=40)
    sm.merge(X[:200])
    manifest = (d / "MANIFEST.json").read_text()
    orig = cd._w_apply
    calls = {"n": 0}

    def apply_then_die(key, token, adds, updates):  # runs in the worker: dies on the 3rd apply of shard 1
        return orig(key, token, adds, updates)

    killed = {"done": False}
    real_call = sm._sh.call

    def call(fn, args, shards=None, retry=True):
        if fn is cd._w_apply:
            calls["n"] += 1
            if calls["n"] == 3 and not killed["done"]:
                killed["done"] = True
                _kill_worker_of(client, sm, 1)
        return real_call(fn, args, shards=shards, retry=retry)

    sm._sh.call = call
    s = sm.merge(X[200:])
    assert killed["done"] and s["distributed"]["restarted"] == 1
    m = single(X)
    assert_same(sm, m, range(400))
    # now make recovery impossible: the saved store of shard 0 is damaged, then its worker dies
    client.wait_for_workers(2, timeout=60)
    manifest = (d / "MANIFEST.json").read_text()
    calls["n"] = 0
    killed["done"] = False
    st = sm.st["generation"]
    victim = d / f"shard-0000.g{st}.chrys"

    def call2(fn, args, shards=None, retry=True):
        if fn is cd._w_apply and not killed["done"]:
            killed["done"] = True
            victim.write_bytes(b"damaged")
            _kill_worker_of(client, sm, 0)
        return real_call(fn, args, shards=shards, retry=retry)

    sm._sh.call = call2
    with pytest.raises(cd.ShardLostError, match="shard|reloaded"):
        sm.merge(rng.standard_normal((50, dim)).astype(np.float32))
    assert (d / "MANIFEST.json").read_text() == manifest  # the pre-call state is what the directory holds


def test_embed_dedup_and_cache(client, tmp_path):
    texts = ["alpha", "beta", "alpha", "gamma", "beta", "alpha"] + [f"t{i}" for i in range(40)]
    cache = tmp_path / "emb.db"
    X, st = cd.embed(client, texts, cache=cache, chunk=8, return_stats=True)
    assert st["texts"] == 46 and st["unique"] == 43 and st["provider_texts"] == 43
    ref = np.stack([chrysalis.embed_deterministic(t) for t in texts])
    assert np.array_equal(X, ref)
    X2, st2 = cd.embed(client, texts, cache=cache, chunk=8, return_stats=True)
    assert np.array_equal(X2, ref)
    assert st2["cache_hits"] == 43 and st2["provider_texts"] == 0
    e = chrysalis.Embedder("deterministic", cache=str(cache))
    e.embed(texts[:3])
    assert e.stats()["cache_hits"] == 3


def test_sharded_merge_all_candidates_changed_in_block(client, rng, tmp_path):
    """Every candidate a shard listed for a record was changed earlier in the same block: the shard
    is asked again (excluding them) and the decision is still the single process's."""
    dim = 24
    E = rng.standard_normal((30, dim)).astype(np.float32)
    recs = []
    for r in range(3):  # each entry pulled three times in one block
        recs.append(E + 0.02 * rng.standard_normal(E.shape).astype(np.float32))
    probe = (E[:12].sum(0) / 12).astype(np.float32)[None]  # near many changed entries, below the threshold
    blk = np.concatenate(recs + [probe, E[29:30] * 0.5 + E[3:4] * 0.5])
    sm = cd.ShardedMerger(client, tmp_path / "ac", dim=dim, n_shards=2, batch_size=len(blk))
    sm.merge(E)
    s = sm.merge(blk, ids=np.arange(100, 100 + len(blk)))
    m = single(E)
    m.merge(blk, ids=np.arange(100, 100 + len(blk)))
    assert s["distributed"]["rechecks"] > 0
    assert_same(sm, m, list(range(30)) + list(range(100, 100 + len(blk))))
    sm.close()

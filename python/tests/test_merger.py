"""chrysalis.Merger: the same entries as `chrysalis merge` on the same data, the --json summary's
keys, save/open, continuation, bad input; chrysalis.Embedder."""
import json
import os
import subprocess

import numpy as np
import pytest

import chrysalis
from conftest import RECORDS, VECTORS, cli_path, clustered


@pytest.fixture(scope="module")
def legend():
    X = np.fromfile(VECTORS, dtype="<f4").reshape(-1, 1024)
    recs = [json.loads(line) for line in open(RECORDS)]
    return X, recs


@pytest.mark.parametrize("thr,variant", [(0.85, "embedding"), (0.77, "embedding"), (0.9, "skill")])
def test_same_entries_as_cli(tmp_path, legend, thr, variant):
    cli = cli_path()
    if cli is None:
        pytest.skip("the CLI is not built (make cli)")
    X, recs = legend
    store = tmp_path / "cli.chrys"
    out = subprocess.run([cli, "merge", str(store), VECTORS, "--dim", "1024", "--meta", RECORDS, "--json",
                          "--threshold", str(thr), "--variant", variant], capture_output=True, text=True, check=True)
    cli_summary = json.loads(out.stdout.strip().splitlines()[-1])
    m = chrysalis.Merger(tmp_path / "py.chrys", dim=1024, threshold=thr, variant=variant)
    summary = m.merge(X, ids=[r["id"] for r in recs], meta=recs)
    assert set(summary) == set(cli_summary)
    assert set(summary["index_backed"]) == set(cli_summary["index_backed"])
    for k in ("records", "merged", "added", "skipped", "entries", "threshold", "variant", "merged_count_histogram"):
        assert summary[k] == cli_summary[k], k
    m.save()
    c = chrysalis.Merger.open(store)
    a, b = m.entries(), c.entries()
    assert [e["merged_count"] for e in a] == [e["merged_count"] for e in b]
    assert [e["first_record"] for e in a] == [e["first_record"] for e in b]
    assert np.array_equal(m.vectors(), c.vectors())
    for r in range(0, 926, 37):
        assert m.lookup(r) == c.lookup(r)
    # the store the Python merger wrote continues like the CLI's
    p = chrysalis.Merger.open(tmp_path / "py.chrys")
    assert p.stats()["entries"] == summary["entries"] and len(p.history()) == 1


def test_merger_api(tmp_path, rng):
    X = clustered(rng, 400, 32, n_clusters=20, spread=0.2).astype(np.float32)
    m = chrysalis.Merger(dim=32, threshold=0.9)
    s1 = m.merge(X[:200])
    s2, entry, score, action = m.merge(X[200:], return_results=True)
    assert s1["records"] == 200 and s2["records"] == 200
    assert s1["merged"] + s1["added"] == 200 and (action == 2).sum() == s2["merged"]
    assert entry.dtype == np.int64 and (entry >= 0).all()
    st = m.stats()
    assert st["records"] == 400 and st["entries"] == s2["entries"] and st["runs"] == 2
    e = m.entries()
    assert sum(x["merged_count"] for x in e) == 400
    assert e[0]["embedding"].shape == (32,)
    sc, ids = m.search(X[:3], k=2)
    assert ids.shape == (3, 2)
    with pytest.raises(chrysalis.InvalidInputError):
        m.save()
    p = tmp_path / "m.chrys"
    m.save(p)
    m2 = chrysalis.Merger(p)
    assert m2.stats()["entries"] == st["entries"]
    m2.merge(X[:5], ids=[1000, 1001, 1002, 1003, 1004])
    with pytest.raises(chrysalis.DuplicateIdError):
        m2.merge(X[:1], ids=[1000])
    # an empty record is skipped and counted
    s = m2.merge([X[0].tolist(), [], None])
    assert s["skipped"] == 2 and s["records"] == 3
    # a loaded store refuses other dimensions
    with pytest.raises(chrysalis.DimensionError):
        chrysalis.Merger(p, dim=16)
    with pytest.raises(chrysalis.DimensionError):
        m2.merge(np.ones((1, 16), np.float32))
    bad = X[:3].copy()
    bad[1, 0] = np.nan
    before = m2.stats()["records"]
    with pytest.raises(chrysalis.InvalidInputError, match="record 1"):
        m2.merge(bad)
    assert m2.stats()["records"] == before
    with pytest.raises(chrysalis.InvalidInputError):
        chrysalis.Merger()
    with pytest.raises(TypeError):
        chrysalis.Merger(dim=8, colour="red")
    with pytest.raises(chrysalis.InvalidInputError):
        chrysalis.Merger(dim=8, variant="other")
    with pytest.raises(chrysalis.InvalidInputError):
        chrysalis.Merger(dim=8, threads=-1)
    sk = chrysalis.Merger(dim=8, variant="skill")
    assert sk.threshold == 0.9 and sk.options()["variant"] == "skill"
    with pytest.raises(chrysalis.CorruptStoreError):
        (tmp_path / "bad.chrys").write_bytes(p.read_bytes()[:500])
        chrysalis.Merger.open(tmp_path / "bad.chrys")


def test_embedder(tmp_path):
    e = chrysalis.Embedder(cache=tmp_path / "c.db")
    v = e.embed(["hello", "world", "hello"])
    assert v.shape == (3, 1024) and v.dtype == np.float32
    assert np.array_equal(v[0], v[2]) and abs(np.linalg.norm(v[0]) - 1) < 1e-5
    assert np.array_equal(v[0], chrysalis.embed_deterministic("hello"))
    e2 = chrysalis.Embedder(cache=tmp_path / "c.db")
    e2.embed(["hello", "world"])
    st = e2.stats()
    assert st["cache_hits"] == 2 and st["texts"] == 2
    assert e.embed([]).shape == (0, 1024)
    assert e.embed("one").shape == (1, 1024)
    with pytest.raises(TypeError):
        e.embed([1, 2])
    with pytest.raises(chrysalis.InvalidInputError):
        chrysalis.Embedder(provider="nope")
    small = chrysalis.Embedder(dim=16)
    assert small.embed(["a"]).shape == (1, 16)


def test_store_lock(tmp_path, rng):
    """The writer lock applies to the Python writers: held by a Merger(lock=True), another taker
    gets StoreLockedError (no wait) or waits; saves under the held lock write without waiting."""
    import multiprocessing as mp
    p = tmp_path / "l.chrys"
    X = rng.standard_normal((20, 8)).astype(np.float32)
    with chrysalis.Merger(p, dim=8, lock=True) as m:
        m.merge(X)
        m.save()  # writes under the held lock
        ctx = mp.get_context("fork")
        q = ctx.Queue()

        def child():
            try:
                chrysalis.store_lock(str(p), timeout=0)
                q.put("got it")
            except chrysalis.StoreLockedError as e:
                q.put("locked: " + str(e))
        pr = ctx.Process(target=child)
        pr.start()
        pr.join(30)
        assert q.get(timeout=5).startswith("locked")
    with chrysalis.store_lock(p, timeout=5) as lk:  # released by the with block above
        assert lk.held
        chrysalis.Index(8).save(tmp_path / "other.chrys")
    assert not lk.held
    assert issubclass(chrysalis.StoreLockedError, chrysalis.Error)
    with pytest.raises(chrysalis.InvalidInputError):
        chrysalis.Merger(dim=8, lock=True)

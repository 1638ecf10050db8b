"""Reference and memory leaks: 100,000 calls of each hot entry point; RSS and tracemalloc must stay
flat (after a warm-up, growth far below what one leaked object per call would cost)."""
import gc
import pickle
import sys
import tracemalloc

import numpy as np

import chrysalis


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def loop(fn, n=100_000):
    """Growth (tracemalloc bytes, RSS KiB) over the second of two windows of n/2 calls each, after
    a warm-up: a one-time allocation (a cache filled on first use) cannot recur, a leak does."""
    tracemalloc.start()
    for _ in range(1000):
        fn()
    for _ in range(n // 2):
        fn()
    gc.collect()
    r0 = rss_kib()
    t0 = tracemalloc.take_snapshot()
    for _ in range(n // 2):
        fn()
    gc.collect()
    t1 = tracemalloc.take_snapshot()
    r1 = rss_kib()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in t1.compare_to(t0, "filename"))
    return grown, r1 - r0


def test_no_leaks(rng):
    X = rng.standard_normal((200, 16)).astype(np.float32)
    ix = chrysalis.Index(16, spec="Flat")
    ix.add(X, meta=[{"i": i} for i in range(200)])
    q = X[:2]
    m = chrysalis.EmbeddingMerger(0.99)
    entries = []
    for v in X[:50]:
        m.merge_similar_embeddings(entries, {"embedding": v.tolist()})
    newv = {"embedding": X[60].tolist()}
    small = chrysalis.Index(4)
    small.add(np.eye(4, dtype=np.float32))
    blob = pickle.dumps(small)
    calls = {
        "search": lambda: ix.search(q, k=5),
        "get": lambda: ix.get(3),
        "meta": lambda: ix.get_meta(5),
        "info": lambda: ix.info(),
        "find_best": lambda: m.find_best(entries, newv["embedding"]),
        "cosine": lambda: m.cosine_similarity(entries[0]["embedding"], entries[1]["embedding"]),
        "average": lambda: m.average_embeddings([entries[0]["embedding"], entries[1]["embedding"]], [0.4, 0.6]),
        "pickle": lambda: pickle.loads(blob),
        "errors": lambda: _raises(lambda: ix.search(np.zeros(16, np.float32))),
    }
    for name, fn in calls.items():
        n = 100_000 if name not in ("pickle", "find_best") else 20_000
        grown, rss = loop(fn, n)
        # one leaked 32-byte object per call would be >= 320 KB over 10,000 calls
        assert grown < 100_000, (name, grown)
        assert rss < 20_000, (name, rss)  # KiB


def _raises(fn):
    try:
        fn()
    except chrysalis.Error:
        return
    raise AssertionError("no error")

#!/usr/bin/python3
"""Exact batch search, chrysalis Flat vs FAISS IndexFlatIP, one process per (threads, library):
  /usr/bin/python3 bench/exact_ab.py THREADS chrysalis|faiss N   (CHRYS_FLAT_SGEMM=1: the old sgemm path)"""
import os, sys, time
th = int(sys.argv[1]); who = sys.argv[2]
os.environ["OPENBLAS_NUM_THREADS"] = str(th); os.environ["OMP_NUM_THREADS"] = str(th)
import numpy as np
rng = np.random.default_rng(7)
n, d, nq = int(sys.argv[3]), 1024, 1000
C = rng.standard_normal((200, d)).astype(np.float32)
X = (C[rng.integers(0, 200, n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32))
X /= np.linalg.norm(X, axis=1, keepdims=True)
Q = X[rng.integers(0, n, nq)] + 0.3 * rng.standard_normal((nq, d)).astype(np.float32)
Q /= np.linalg.norm(Q, axis=1, keepdims=True); Q = np.ascontiguousarray(Q, dtype=np.float32)
if who == "faiss":
    import faiss; faiss.omp_set_num_threads(th); ix = faiss.IndexFlatIP(d); ix.add(X); f = lambda: ix.search(Q, 10)[1]
else:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python")); import chrysalis
    ix = chrysalis.Index(d, "cosine", "Flat"); ix.add(X); f = lambda: ix.search(Q, k=10, threads=th)[1]
best = 1e9
for _ in range(3):
    t = time.perf_counter(); ids = f(); best = min(best, time.perf_counter() - t)
G = (Q @ X.T).argsort(axis=1)[:, ::-1][:, :10] if n <= 100000 else None
rec = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, G)]) if G is not None else float("nan")
print(f"{who:12s} n={n} threads={th}: {nq/best:7.0f} QPS  R@10 {rec:.3f}", flush=True)

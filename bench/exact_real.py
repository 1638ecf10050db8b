#!/usr/bin/python3
"""Exact batch search on a shared fvecs set (base/query/groundtruth), chrysalis Flat vs FAISS, one process per point:
  /usr/bin/python3 bench/exact_real.py THREADS chrysalis|faiss DIR cosine|l2   (CHRYS_FLAT_SGEMM=1: the old path)"""
import os, sys, time
th = int(sys.argv[1]); who = sys.argv[2]; D = sys.argv[3]; metric = sys.argv[4]
os.environ["OPENBLAS_NUM_THREADS"] = str(th); os.environ["OMP_NUM_THREADS"] = str(th)
import numpy as np
def rv(p, dt):
    a = np.fromfile(p, dtype=np.int32); d = a[0]; return a.reshape(-1, d + 1)[:, 1:].view(dt).copy()
X = rv(D + "/base.fvecs", np.float32); Q = np.ascontiguousarray(rv(D + "/query.fvecs", np.float32)); GT = rv(D + "/groundtruth.ivecs", np.int32)[:, :10]
if metric == "cosine":
    X /= np.linalg.norm(X, axis=1, keepdims=True); Q /= np.linalg.norm(Q, axis=1, keepdims=True)
if who == "faiss":
    import faiss; faiss.omp_set_num_threads(th); ix = faiss.IndexFlatL2(X.shape[1]) if metric == "l2" else faiss.IndexFlatIP(X.shape[1]); ix.add(X); f = lambda: ix.search(Q, 10)[1]
else:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python")); import chrysalis
    ix = chrysalis.Index(X.shape[1], metric, "Flat"); ix.add(X); f = lambda: ix.search(Q, k=10, threads=th)[1]
best = 1e9
for _ in range(7):
    t = time.perf_counter(); ids = f(); best = min(best, time.perf_counter() - t)
rec = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, GT)])
print(f"{os.path.basename(D)[:12]} {who:10s} {os.environ.get('CHRYS_FLAT_SGEMM','')} threads={th}: {len(Q)/best:8.0f} QPS  R@10 {rec:.3f}", flush=True)

#!/usr/bin/python3
"""The semantic merger as a FAISS user of the roadmap would write it, with the original rule.

For each record in order: search the entries' index for k=1; if the best cosine >= threshold,
entry := w_old * entry + w_new * record (weights divided by their sum, not renormalised, as the
original merger) and the index's copy of that entry is overwritten in place; else the record is
appended. The index holds unit-length copies of the entries (inner product = cosine), beside an
array of the entries themselves:

  --index flat   IndexFlatIP (exact)
  --index hnsw   IndexHNSWFlat(d, M, METRIC_INNER_PRODUCT), efConstruction and efSearch as given;
                 an overwritten row keeps its links (FAISS has no update)

Writes a JSON summary and the entry each record ended in (--assign FILE.npy, int64), from which
bench/merge_numpy.py's agreement() compares decisions with chrysalis.

  /usr/bin/python3 bench/merge_faiss.py --base base.fvecs --n 100000 --index hnsw --json out.json
"""
import argparse
import json
import os
import sys
import time

import numpy as np


def read_fvecs(path, n):
    with open(path, "rb") as f:
        d = int(np.frombuffer(f.read(4), dtype="<i4")[0])
    row = 4 + 4 * d
    mm = np.memmap(path, dtype="<f4", mode="r")
    return np.asarray(mm[: n * (d + 1)]).reshape(n, d + 1)[:, 1:], d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--index", choices=["flat", "hnsw"], default="hnsw")
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--ef-search", type=int, default=64)
    ap.add_argument("--threshold", type=float, default=0.85)
    ap.add_argument("--w-old", type=float, default=0.4)
    ap.add_argument("--w-new", type=float, default=0.6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--assign")
    a = ap.parse_args()
    import faiss
    faiss.omp_set_num_threads(a.threads)
    X, d = read_fvecs(a.base, a.n)
    n = a.n
    wo, wn = a.w_old / (a.w_old + a.w_new), a.w_new / (a.w_old + a.w_new)
    if a.index == "flat":
        index = faiss.IndexFlatIP(d)
        flat = index
    else:
        index = faiss.IndexHNSWFlat(d, a.M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = a.ef_construction
        index.hnsw.efSearch = a.ef_search
        flat = faiss.downcast_index(index.storage)
    E = np.empty((n, d), dtype=np.float32)  # the entries (raw, not renormalised)
    assign = np.empty(n, dtype=np.int64)
    m = merges = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    for i in range(n):
        x = np.ascontiguousarray(X[i], dtype=np.float32)
        xn = x / np.linalg.norm(x)
        if m:
            D, I = index.search(xn.reshape(1, d), 1)
            j = int(I[0, 0])
            if j >= 0 and D[0, 0] >= a.threshold:
                E[j] = wo * E[j] + wn * x
                xb = faiss.rev_swig_ptr(flat.get_xb(), m * d).reshape(m, d)
                xb[j] = E[j] / np.linalg.norm(E[j])
                assign[i] = j
                merges += 1
                continue
        E[m] = x
        index.add(xn.reshape(1, d))
        assign[i] = m
        m += 1
    total = time.perf_counter() - t0
    r = dict(method=f"faiss_{a.index}", n=n, d=d, entries=m, merges=merges, total_s=round(total, 3),
             cpu_s=round(time.process_time() - c0, 3), threads=a.threads, threshold=a.threshold,
             faiss_version=faiss.__version__,
             params=(dict(M=a.M, efConstruction=a.ef_construction, efSearch=a.ef_search) if a.index == "hnsw" else {}))
    print(json.dumps(r), flush=True)
    if a.json:
        json.dump(r, open(a.json, "w"), indent=1)
    if a.assign:
        np.save(a.assign, assign)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""FAISS IndexIVFScalarQuantizer (QT_8bit, codes only) measured the way bench/bench_ivf_sq8.c
measures a chrysalis index, for bench/run_ivf_sq8.sh: same base, queries and ground truth, same
nlist, same nprobe values, inner product on the unit vectors (= cosine), trained on the same
base (FAISS, like chrysalis, samples at most 256 points per list for k-means).

  faiss_ivf_sq8_anchor.py --base B.fvecs --query Q.fvecs --gt GT.ivecs --nlist 256 \
      --index-file OUT.faiss [--threads 1,2] [--nprobe 1,2,4,8,16,32,64] [--json OUT.json]

Build: train + add, timed, with the largest thread count. Bytes on disk: faiss.write_index's
file. Bytes in memory: growth of VmRSS over faiss.read_index of that file in a fresh process
(`--rss-of FILE`: faiss imported first; so the allocator cannot reuse memory this process freed).
Search: all queries in one call, the fastest of up to three runs (one once a run takes > 2 s).
"""
import argparse
import gc
import json
import os
import sys
import time

import numpy as np


def read_fvecs(path):
    a = np.fromfile(path, dtype=np.int32)
    d = a[0]
    return a.reshape(-1, d + 1)[:, 1:].copy().view(np.float32)


def read_ivecs(path):
    a = np.fromfile(path, dtype=np.int32)
    d = a[0]
    return a.reshape(-1, d + 1)[:, 1:].copy()


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return -1


def rss_of(path):
    import faiss
    r0 = rss_bytes()
    index = faiss.read_index(path)
    r1 = rss_bytes()
    assert index.ntotal > 0
    print(r1 - r0)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--rss-of":
        return rss_of(sys.argv[2])
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--query", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--nlist", type=int, required=True)
    ap.add_argument("--index-file", required=True)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--nprobe", default="1,2,4,8,16,32,64")
    ap.add_argument("--json")
    ap.add_argument("--by-residual", type=int, default=1,
                    help="1: FAISS's default (codes of x - centroid); 0: codes of x, as chrysalis encodes")
    a = ap.parse_args()
    import faiss
    threads = [int(t) for t in a.threads.split(",")]
    xb = read_fvecs(a.base)
    xq = read_fvecs(a.query)
    gt = read_ivecs(a.gt)[:, :10]
    n, d = xb.shape
    faiss.omp_set_num_threads(max(threads))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, a.nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT,
                                          bool(a.by_residual))
    t0 = time.perf_counter()
    index.train(xb)
    t1 = time.perf_counter()
    index.add(xb)
    t2 = time.perf_counter()
    faiss.write_index(index, a.index_file)
    disk = os.path.getsize(a.index_file)
    del index, quantizer, xb
    gc.collect()
    import subprocess
    rss_load = int(subprocess.check_output([sys.executable, os.path.abspath(__file__), "--rss-of", a.index_file]))
    index = faiss.read_index(a.index_file)
    out = dict(method="faiss IndexIVFScalarQuantizer QT_8bit" + ("" if a.by_residual else " by_residual=False"), spec="IVF%d,SQ8" % a.nlist, n=n, d=d, nq=len(xq),
               nlist=a.nlist, build_s=round(t2 - t0, 3), train_s=round(t1 - t0, 3), add_s=round(t2 - t1, 3),
               build_threads=max(threads), disk_bytes=disk, rss_load_bytes=rss_load,
               faiss=faiss.__version__ + " " + faiss.get_compile_options().strip(), runs=[])
    print("faiss IVF%d,SQ8 (by_residual %d) on %d x %d: train %.2f s, add %.2f s, file %d B, RSS +%d KiB on load (%s)" % (
        a.nlist, a.by_residual, n, d, t1 - t0, t2 - t1, disk, rss_load // 1024, out["faiss"]), file=sys.stderr)
    for t in threads:
        faiss.omp_set_num_threads(t)
        for p in [int(x) for x in a.nprobe.split(",")]:
            if p > a.nlist:
                continue
            index.nprobe = p
            best = 1e30
            for _ in range(3):
                s0 = time.perf_counter()
                _, I = index.search(xq, 10)
                s = time.perf_counter() - s0
                best = min(best, s)
                if s > 2.0:
                    break
            found = sum(len(set(I[i]) & set(gt[i])) for i in range(len(xq)))
            rec = found / (10.0 * len(xq))
            out["runs"].append(dict(threads=t, nprobe=p, search_s=round(best, 6), qps=round(len(xq) / best, 1),
                                    recall10=round(rec, 4)))
            print("  faiss T%d nprobe %d: %.0f QPS, recall@10 %.4f" % (t, p, len(xq) / best, rec), file=sys.stderr)
    text = json.dumps(out, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()

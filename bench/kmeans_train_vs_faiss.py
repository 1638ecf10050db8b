#!/usr/bin/python3
"""IVF training + add, ours vs FAISS IndexIVFFlat, side by side, 1 and 2 threads, with the k-means
objective (sum over ALL n rows of the squared L2 distance to the nearest centroid, float64).

  /usr/bin/python3 bench/kmeans_train_vs_faiss.py [--sets fashion-mnist,clustered200k] [--threads 1,2]

Data: bench/out/data/<set>/base.fvecs (bench/run_ivf.sh makes them), unit-normalised here and
written once as base_norm.fvecs. nlist = round(4 sqrt(n)) (anchors.py's). Ours:
build/release/bench_kmeans (BENCH_KMEANS to override), "IVF<nlist>,Flat" cosine, build_threads = T,
OpenBLAS pinned to T. FAISS 1.7.3: IndexIVFFlat(IndexFlatIP, nlist, METRIC_INNER_PRODUCT), its
defaults (10 iterations, at most 256 points per centroid, seed 1234), train + add, in a child
process with OPENBLAS_NUM_THREADS/OMP_NUM_THREADS = T set before the import.
"""
import argparse, json, math, os, subprocess, sys, tempfile
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(HERE, "out", "data")


def rd(p):
    a = np.fromfile(p, dtype=np.int32)
    d = a[0]
    return a.reshape(-1, d + 1)[:, 1:].view(np.float32).copy()


def wr(p, x):
    n, d = x.shape
    a = np.empty((n, d + 1), dtype=np.int32)
    a[:, 0] = d
    a[:, 1:] = x.view(np.int32)
    a.tofile(p)


def objective(x, c, block=8192):
    c = np.ascontiguousarray(c, dtype=np.float32)
    cc = (c.astype(np.float64) ** 2).sum(1)
    tot = 0.0
    for s in range(0, x.shape[0], block):
        xb = x[s:s + block]
        d = (xb.astype(np.float64) ** 2).sum(1)[:, None] - 2.0 * (xb @ c.T).astype(np.float64) + cc[None, :]
        tot += float(np.maximum(d.min(1), 0).sum())
    return tot


FAISS_CHILD = r"""
import sys, time, numpy as np
import faiss
x = np.load(sys.argv[1]); nlist = int(sys.argv[2]); t = int(sys.argv[3])
faiss.omp_set_num_threads(t)
q = faiss.IndexFlatIP(x.shape[1])
ix = faiss.IndexIVFFlat(q, x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
t0 = time.time(); ix.train(x); t1 = time.time(); ix.add(x); t2 = time.time()
np.save(sys.argv[4], q.reconstruct_n(0, nlist))
print("%.4f %.4f" % (t1 - t0, t2 - t1))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="fashion-mnist,clustered200k")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--json")
    a = ap.parse_args()
    bench = os.environ.get("BENCH_KMEANS", os.path.join(ROOT, "build", "release", "bench_kmeans"))
    rows = []
    tmp = tempfile.mkdtemp()
    for s in a.sets.split(","):
        src = os.path.join(DATA, s, "base.fvecs")
        norm = os.path.join(DATA, s, "base_norm.fvecs")
        x = rd(src)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
        x = x.astype(np.float32)
        if not os.path.exists(norm):
            wr(norm, x)
        npy = os.path.join(tmp, s + ".npy")
        np.save(npy, x)
        n, d = x.shape
        nlist = int(round(4 * math.sqrt(n)))
        for t in [int(v) for v in a.threads.split(",")]:
            env = dict(os.environ, OPENBLAS_NUM_THREADS=str(t), OMP_NUM_THREADS=str(t))
            cf = os.path.join(tmp, "ours.fvecs")
            r = json.loads(subprocess.check_output([bench, "--base", norm, "--nlist", str(nlist), "--threads", str(t),
                                                    "--centroids", cf], env=env).decode().strip().splitlines()[-1])
            ours_obj = objective(x, rd(cf))
            fc = os.path.join(tmp, "faiss_c.npy")
            out = subprocess.check_output([sys.executable, "-c", FAISS_CHILD, npy, str(nlist), str(t), fc], env=env)
            ft, fa = [float(v) for v in out.decode().split()]
            f_obj = objective(x, np.load(fc))
            row = {"set": s, "n": n, "d": d, "nlist": nlist, "threads": t, "ours_s": r["build_s"], "ours_obj": ours_obj,
                   "faiss_train_s": ft, "faiss_add_s": fa, "faiss_s": ft + fa, "faiss_obj": f_obj}
            rows.append(row)
            print("%-14s T=%d nlist %d: ours %.2f s obj %.2f | FAISS %.2f s (train %.2f add %.2f) obj %.2f | time ours/FAISS %.3f, obj ours/FAISS %.4f"
                  % (s, t, nlist, row["ours_s"], ours_obj, row["faiss_s"], ft, fa, f_obj, row["ours_s"] / row["faiss_s"],
                     ours_obj / f_obj), flush=True)
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()

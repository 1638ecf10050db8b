#!/usr/bin/python3
"""The Python package's benchmark, in one Python process per part (run it under the heavy lock):

  flock /tmp/chrys-heavy.lock /usr/bin/python3 bench/bench_python.py index  --data DIR [--json OUT]
  flock /tmp/chrys-heavy.lock /usr/bin/python3 bench/bench_python.py dropin [--json OUT]

index: chrysalis.Index against FAISS 1.7.3 and hnswlib 0.6.2 on a clustered set written by
  ../shared/tools/gen_clustered.py (base.fvecs, query.fvecs, groundtruth.ivecs; cosine = inner
  product of unit vectors): exact search (chrysalis Flat vs faiss IndexFlatIP) and HNSW (M 16,
  ef_construction 200; chrysalis HNSW16 vs hnswlib vs faiss IndexHNSWFlat), QPS on 1 and 2 threads
  over the whole query batch (--reps calls alternating between the methods; the median call's QPS,
  the fastest beside it; FAISS's OpenBLAS pinned to the same thread count), recall@10 against the ground truth beside every QPS, the smallest
  ef_search reaching recall@10 >= 0.95, build time and resident-memory growth while building.
dropin: chrysalis.EmbeddingMerger against the pure-Python oracle of the original
  (python/tests/oracle.py, which does the original's per-call Python rescans) on random unit
  1024-d vectors (nothing merges: n(n-1)/2 cosines, the worst case) at 1,000 and 2,000 records,
  decisions compared; the drop-in alone at 10,000, the original extrapolated from its measured
  seconds per cosine; and the 926 real legend rows at 0.85 (all_t085).
"""
import argparse
import gc
import json
import os
import platform
import sys
import time

import numpy as np

# FAISS's idle OpenMP workers must not spin on a core into the next method's timed call (libgomp
# busy-waits after each parallel region by default: on 2 cores that took a third of the next
# 2-thread call's time); set before faiss is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "python", "tests"))

import chrysalis  # noqa: E402


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=dtype)
    d = raw[:1].view(np.int32)[0]
    return raw.reshape(-1, d + 1)[:, 1:]


def recall10(ids, gt):
    return float(np.mean([len(set(a[:10].tolist()) & set(b[:10].tolist())) / 10 for a, b in zip(ids, gt)]))


def timed(fn, reps=1):
    best = float("inf")
    out = None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def blas_threads(n):
    """Pin OpenBLAS (FAISS's sgemm) to n threads: faiss.omp_set_num_threads alone leaves OpenBLAS's
    own threads running on every core."""
    import ctypes
    done = set()
    for line in open("/proc/self/maps"):
        path = line.split()[-1]
        if "openblas" in path and path.endswith(".so") and path not in done:
            done.add(path)
            ctypes.CDLL(path).openblas_set_num_threads(n)


def machine():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__, "simd": chrysalis.simd_name(),
            "loadavg_start": os.getloadavg()[0]}


# ------------------------------------------------------------------------------------------------

def bench_index(a):
    import faiss
    import hnswlib
    X = np.ascontiguousarray(read_vecs(os.path.join(a.data, "base.fvecs"), np.float32))
    Q = np.ascontiguousarray(read_vecs(os.path.join(a.data, "query.fvecs"), np.float32))
    GT = read_vecs(os.path.join(a.data, "groundtruth.ivecs"), np.int32)
    if a.n:
        X = X[: a.n]
        flat = chrysalis.Index(X.shape[1], a.metric, "Flat")
        flat.add(X)
        GT = flat.search(Q, k=10)[1]
        del flat
    n, d = X.shape
    l2 = a.metric == "l2"
    res = {"machine": machine(), "n": n, "d": d, "metric": a.metric, "nq": len(Q), "data": os.path.basename(a.data.rstrip("/")),
           "results": []}
    efs = [int(e) for e in a.ef.split(",")]
    threads = [1, 2]

    def add(rec):
        print(json.dumps(rec), flush=True)
        res["results"].append(rec)

    # Build every index first (build time and resident-memory growth each), then time the searches
    # side by side: for each thread count (and ef_search), the methods' calls alternate, a.reps
    # rounds, and each method's fastest call counts. (On a shared VM the speed of a core changes
    # by a third from one second to the next; timing one method's sweep after another's compares
    # two machine states, not two libraries.)
    def build(fn):
        gc.collect()
        r0 = rss_mb()
        t = time.perf_counter()
        obj = fn()
        return obj, time.perf_counter() - t, rss_mb() - r0

    def mk_cf():
        ix = chrysalis.Index(d, a.metric, "Flat")
        ix.add(X)
        return ix

    def mk_ff():
        ix = faiss.IndexFlatL2(d) if l2 else faiss.IndexFlatIP(d)
        ix.add(X)
        return ix

    def mk_ch():  # HNSW, M 16, ef_construction 200, built on 2 threads
        ix = chrysalis.Index(d, a.metric, "HNSW16", ef_construction=200, build_threads=2)
        ix.add(X)
        return ix

    def mk_hl():
        ix = hnswlib.Index(space="l2" if l2 else "ip", dim=d)
        ix.init_index(max_elements=n, M=16, ef_construction=200, random_seed=42)
        ix.add_items(X, np.arange(n), num_threads=2)
        return ix

    def mk_fh():
        faiss.omp_set_num_threads(2)
        blas_threads(2)
        ix = faiss.IndexHNSWFlat(d, 16, faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT)
        ix.hnsw.efConstruction = 200
        ix.add(X)
        return ix

    flat_name = "faiss IndexFlatL2" if l2 else "faiss IndexFlatIP"
    built = {}
    makers = (("chrysalis Flat", mk_cf), (flat_name, mk_ff), ("chrysalis HNSW16", mk_ch),
              ("hnswlib M16", mk_hl), ("faiss IndexHNSWFlat M16", mk_fh))
    for name, mk in makers[:2] if a.exact_only else makers:
        built[name] = build(mk)
        print(f"# built {name}: {built[name][1]:.2f} s, {built[name][2]:.0f} MB", flush=True)
    cf, ff, ch, hl, fh = (list(built[k][0] for k in built) + [None] * 3)[:5]

    def threads_for(th):
        faiss.omp_set_num_threads(th)
        blas_threads(th)

    def hl_search(ef, th):
        hl.set_ef(max(ef, 10))
        return hl.knn_query(Q, k=10, num_threads=th)[0]

    def fh_search(ef, th):
        fh.hnsw.efSearch = max(ef, 10)
        return fh.search(Q, 10)[1]

    def side_by_side(calls, th, ef=None):
        """calls: {name: fn returning the ids}; alternate them a.reps rounds."""
        threads_for(th)
        times = {k: [] for k in calls}
        ids = {}
        for _ in range(a.reps):
            for k, fn in calls.items():
                t = time.perf_counter()
                ids[k] = fn()
                times[k].append(time.perf_counter() - t)
        out = []
        for k in calls:
            ts = sorted(times[k])
            # qps: the median call (this VM's cores switch between a fast and a slow state from one
            # second to the next, and both cores are seldom fast at once: the fastest call compares
            # lucky samples); qps_best: the fastest call
            rec = {"method": k, "threads": th, "qps": len(Q) / ts[len(ts) // 2], "qps_best": len(Q) / ts[0],
                   "recall10": recall10(ids[k], GT), "build_s": built[k][1], "mem_mb": built[k][2]}
            if ef is not None:
                rec["ef"] = ef
            add(rec)
            out.append(rec)
        return out

    for th in threads:
        side_by_side({"chrysalis Flat": lambda: cf.search(Q, k=10, threads=th)[1],
                      flat_name: lambda: ff.search(Q, 10)[1]}, th)
    for th in threads if not a.exact_only else ():
        first = {}
        for ef in efs:
            for rec in side_by_side({"chrysalis HNSW16": lambda: ch.search(Q, k=10, ef_search=ef, threads=th)[1],
                                     "hnswlib M16": lambda: hl_search(ef, th),
                                     "faiss IndexHNSWFlat M16": lambda: fh_search(ef, th)}, th, ef):
                if rec["recall10"] >= 0.95 and rec["method"] not in first:
                    first[rec["method"]] = rec
        for rec in first.values():
            add(dict(rec, at_095=True))
    res["machine"]["loadavg_end"] = os.getloadavg()[0]
    return res


# ------------------------------------------------------------------------------------------------

def bench_dropin(a):
    import copy
    import oracle
    res = {"machine": machine(), "results": []}
    rng = np.random.default_rng(20240611)

    def items(X):
        return [{"row": i, "embedding": X[i].tolist(), "descriptors": [], "processed_at": ""} for i in range(len(X))]

    def run_dropin(its, thr=0.85):
        m = chrysalis.EmbeddingMerger(thr)
        ex, dec = [], []
        t = time.perf_counter()
        for it in its:
            dec.append(m.merge_similar_embeddings(ex, it)[1])
        return time.perf_counter() - t, dec, ex

    def run_oracle(its, thr=0.85):
        st = oracle.OracleStats()
        ex, dec = [], []
        t = time.perf_counter()
        for it in its:
            ex, merged, _ = oracle.merge_embedding(ex, it, thr, st)
            dec.append(merged)
        return time.perf_counter() - t, dec, ex, st.cosines

    us_per_cos = None
    for n in a.sizes:
        X = rng.standard_normal((n, 1024)).astype(np.float32).astype(np.float64)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        its = items(X)
        t_new, dec_new, ex_new = run_dropin(copy.deepcopy(its))
        rec = {"n": n, "dropin_s": t_new, "cosines": n * (n - 1) // 2}
        if n <= a.oracle_max:
            t_old, dec_old, ex_old, cos = run_oracle(copy.deepcopy(its))
            us_per_cos = 1e6 * t_old / max(1, cos)
            same = dec_old == dec_new and all(x["embedding"] == y["embedding"] for x, y in zip(ex_old, ex_new))
            rec.update(original_s=t_old, original_measured=True, us_per_cosine=us_per_cos, same_decisions=same,
                       cosines=cos)
        else:
            rec.update(original_s=rec["cosines"] * us_per_cos * 1e-6, original_measured=False,
                       us_per_cosine=us_per_cos)
        rec["speedup"] = rec["original_s"] / t_new
        print(json.dumps(rec), flush=True)
        res["results"].append(rec)
    # the real rows
    Xr = np.fromfile(os.path.join(ROOT, "examples", "chrysalis", "vectors.f32"), dtype="<f4").reshape(-1, 1024)
    its = items(Xr.astype(np.float64))
    t_new, dec_new, ex_new = run_dropin(copy.deepcopy(its))
    t_old, dec_old, ex_old, cos = run_oracle(copy.deepcopy(its))
    rec = {"n": len(Xr), "set": "chrysalis all_t085", "dropin_s": t_new, "original_s": t_old, "cosines": cos,
           "original_measured": True, "speedup": t_old / t_new, "same_decisions": dec_old == dec_new,
           "entries": len(ex_new), "merges": sum(dec_new)}
    print(json.dumps(rec), flush=True)
    res["results"].append(rec)
    # chrysalis.Merger (numpy in, the library's batch merge) against the numpy merger a numpy user
    # writes (E[:m] @ x, argmax, 0.4/0.6 update, no renormalisation; cosine from kept norms)
    n = a.merger_n
    X = rng.standard_normal((n, 1024)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    t = time.perf_counter()
    E = np.empty_like(X)
    nrm = np.empty(n, dtype=np.float32)
    e = 0
    for i in range(n):
        x = X[i]
        if e:
            sc = (E[:e] @ x) / nrm[:e]
            j = int(np.argmax(sc))
            if sc[j] >= 0.85:
                E[j] = 0.4 * E[j] + 0.6 * x
                nrm[j] = np.linalg.norm(E[j])
                continue
        E[e] = x
        nrm[e] = 1.0
        e += 1
    t_np = time.perf_counter() - t
    m = chrysalis.Merger(dim=1024, threshold=0.85)
    t = time.perf_counter()
    st = m.merge(X)
    t_c = time.perf_counter() - t
    rec = {"n": n, "set": "Merger vs numpy merger, random unit 1024-d", "numpy_s": t_np, "merger_s": t_c,
           "speedup": t_np / t_c, "entries_numpy": e, "entries_merger": st["entries"]}
    print(json.dumps(rec), flush=True)
    res["merger"] = rec
    res["machine"]["loadavg_end"] = os.getloadavg()[0]
    return res


def report(a):
    """bench/PYTHON.md's tables from the two JSON files."""
    ix = json.load(open(a.index_json)) if a.index_json and os.path.exists(a.index_json) else None
    dr = json.load(open(a.dropin_json)) if a.dropin_json and os.path.exists(a.dropin_json) else None
    out = []
    if ix:
        m = ix["machine"]
        out.append(f"### Index: {ix.get('data', 'clustered')} {ix['n']:,} x {ix['d']} ({ix.get('metric', 'cosine')}), {ix['nq']} queries, k = 10 "
                   f"({m['date']}, {m['cpu']}, {m['cores']} cores, SIMD {m['simd']}, load {m['loadavg_start']:.1f}"
                   f" -> {m.get('loadavg_end', 0):.1f})\n")
        out.append("| method | QPS 1 thread (R@10; median call, best call) | QPS 2 threads (same) | build | memory |")
        out.append("|---|---|---|---|---|")
        rows = {}
        for r in ix["results"]:
            if "ef" in r and not r.get("at_095"):
                continue
            key = r["method"]
            rows.setdefault(key, {})[r["threads"]] = r
        for name, by in rows.items():
            def cell(t):
                r = by.get(t)
                if not r:
                    return "no ef reached 0.95"
                ef = f", ef {r['ef']}" if "ef" in r else ""
                best = f", best {r['qps_best']:,.0f}" if "qps_best" in r else ""
                return f"{r['qps']:,.0f} ({r['recall10']:.3f}{ef}{best})"
            any_r = next(iter(by.values()))
            out.append(f"| {name} | {cell(1)} | {cell(2)} | {any_r['build_s']:.1f} s | {any_r['mem_mb']:,.0f} MB |")
        out.append("")
        out.append("Every ef_search swept (QPS, recall@10):\n")
        out.append("| method | threads | ef | QPS | R@10 |")
        out.append("|---|---|---|---|---|")
        for r in ix["results"]:
            if "ef" in r and not r.get("at_095"):
                out.append(f"| {r['method']} | {r['threads']} | {r['ef']} | {r['qps']:,.0f} | {r['recall10']:.3f} |")
        out.append("")
    if dr:
        m = dr["machine"]
        out.append(f"### Drop-in merger vs the original's semantics ({m['date']}, load {m['loadavg_start']:.1f}"
                   f" -> {m.get('loadavg_end', 0):.1f})\n")
        out.append("| records | data | original (pure Python) | drop-in | speedup | same decisions |")
        out.append("|---|---|---|---|---|---|")
        for r in dr["results"]:
            orig = f"{r['original_s']:,.1f} s" + ("" if r["original_measured"] else
                                                 f" (extrapolated: {r['cosines']:,} cosines x {r['us_per_cosine']:.1f} us)")
            same = {True: "yes", False: "NO"}.get(r.get("same_decisions"), "(not run)")
            data = r.get("set", "random unit 1024-d (nothing merges)")
            out.append(f"| {r['n']:,} | {data} | {orig} | {r['dropin_s']:.3f} s | {r['speedup']:,.0f}x | {same} |")
        out.append("")
        mr = dr.get("merger")
        if mr:
            out.append(f"chrysalis.Merger.merge on {mr['n']:,} random unit 1024-d records: {mr['merger_s']:.2f} s; the "
                       f"numpy merger (one E @ x per record): {mr['numpy_s']:.1f} s (Merger {mr['speedup']:.2f}x the numpy merger's speed); entries "
                       f"{mr['entries_merger']:,} / {mr['entries_numpy']:,}.\n")
    print("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["index", "dropin", "report"])
    ap.add_argument("--index-json", default="bench/out/python_index_200k.json")
    ap.add_argument("--dropin-json", default="bench/out/python_dropin.json")
    ap.add_argument("--data", help="gen_clustered.py output directory (index)")
    ap.add_argument("--metric", choices=("cosine", "l2"), default="cosine",
                    help="cosine (inner product of unit vectors; FAISS IndexFlatIP) or l2 (SIFT; IndexFlatL2)")
    ap.add_argument("--n", type=int, default=0, help="use the first N base rows (ground truth recomputed)")
    ap.add_argument("--ef", default="16,24,32,48,64,96,128,192,256")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 10000])
    ap.add_argument("--oracle-max", type=int, default=2000)
    ap.add_argument("--merger-n", type=int, default=10000)
    ap.add_argument("--exact-only", action="store_true", help="index: the exact searches alone")
    ap.add_argument("--reps", type=int, default=3, help="calls per point, the fastest counts (index)")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.part == "report":
        report(a)
        return
    res = bench_index(a) if a.part == "index" else bench_dropin(a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()

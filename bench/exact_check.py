#!/usr/bin/python3
"""Exactness check of chrysalis Flat search against a float64 brute force.

For each data set (a folder with base.fvecs and query.fvecs), builds a cosine store with the CLI
(`chrysalis build`) and covers every search path of src/flat.c:
  - `chrysalis search --json -k K` with all queries in one call (nq >= 64: BLAS sgemm),
  - the same with the first 31 queries (4..63: the register-blocked dot_block kernel),
  - the same with the first 3 queries (1..3: the SIMD row kernel, rows split over workers),
  - bench_anchor's loop of one-query calls (nq = 1, the latency path; ids only, as many queries
    as its --budget allows),
and compares the returned ids with a float64 brute force: cosine = dot product of float64
normalised copies of the float32 vectors, top-K with ties broken by smaller id (the library's rule).

A query "differs" when its ordered top-K id list is not identical to the float64 one. For each
differing position we report the float64 score gap between the item we returned and the item
float64 puts there; a difference is a near-exact tie when that gap is at most --tie-tol (default
1e-6, about 8 float32 ulps at 1.0: the float32 normalisation of the stored vectors alone moves
scores by ~1e-7). Also reports the largest error of the returned scores against float64.

  /usr/bin/python3 bench/exact_check.py [--set NAME=DIR ...] [--json bench/out/exact_check.json]
Default sets: luceneutil-minilm-384-cosine and bench/out/data/clustered200k.
Exit status 0 when every difference is a near-exact tie, 1 otherwise.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_fvecs(path):
    raw = np.fromfile(path, dtype=np.int32)
    d = int(raw[0])
    raw = raw.reshape(-1, d + 1)
    assert (raw[:, 0] == d).all(), path
    return raw[:, 1:].view(np.float32)


def write_fvecs(path, x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((x.shape[0], x.shape[1] + 1), dtype=np.float32)
    out[:, 0] = np.array([x.shape[1]], dtype=np.int32).view(np.float32)[0]
    out[:, 1:] = x
    out.tofile(path)


def norm64(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute64(xb32, q64, k, block=20000):
    """float64 top-k (ids, scores), ties broken by smaller id."""
    nq = q64.shape[0]
    best_s = np.full((nq, k), -np.inf)
    best_i = np.full((nq, k), -1, dtype=np.int64)
    for s in range(0, xb32.shape[0], block):
        b = norm64(xb32[s:s + block])
        sims = q64 @ b.T
        kk = min(k, sims.shape[1])
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        cs = np.concatenate([best_s, np.take_along_axis(sims, part, 1)], 1)
        ci = np.concatenate([best_i, part + s], 1)
        order = np.lexsort((ci, -cs), axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cs, order, 1), np.take_along_axis(ci, order, 1)
    return best_i, best_s


def chrysalis_search(cli, store, queries, k, threads):
    out = subprocess.run([cli, "search", store, queries, "--json", "-k", str(k), "--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    ids, scores = [], []
    for line in out.splitlines():
        rec = json.loads(line)
        ids.append([h["id"] for h in rec["hits"]])
        scores.append([h["score"] for h in rec["hits"]])
    return np.array(ids, dtype=np.int64), np.array(scores, dtype=np.float64)


def single_query_ids(bench, base, query, k, work, budget):
    """Ids from bench_anchor's loop of one-query calls (1 thread)."""
    out = os.path.join(work, "bench_single")
    os.makedirs(out, exist_ok=True)
    subprocess.run([bench, "--base", base, "--query", query, "--k", str(k), "--threads", "1", "--out", out,
                    "--batch-reps", "1", "--budget", str(budget)], check=True, stderr=subprocess.DEVNULL)
    raw = np.fromfile(os.path.join(out, "single_ids_1.ivecs"), dtype=np.int32)
    return raw.reshape(-1, k + 1)[:, 1:].astype(np.int64)


def compare(ours, our_scores, ref_ids, ref_scores, xb32, q64, tie_tol):
    k = ref_ids.shape[1]
    diffs, max_gap, max_score_err = [], 0.0, 0.0
    for qi in range(ours.shape[0]):
        o = ours[qi]
        # true float64 score of every id we returned
        s_o = norm64(xb32[o]) @ q64[qi]
        if our_scores is not None:
            max_score_err = max(max_score_err, float(np.max(np.abs(s_o - our_scores[qi]))))
        if np.array_equal(o, ref_ids[qi]):
            continue
        gaps = []
        for j in range(k):
            if o[j] != ref_ids[qi, j]:
                gaps.append(dict(pos=j, ours=int(o[j]), ref=int(ref_ids[qi, j]),
                                 gap=float(abs(ref_scores[qi, j] - s_o[j]))))
        g = max(x["gap"] for x in gaps)
        max_gap = max(max_gap, g)
        diffs.append(dict(query=qi, set_differs=bool(set(o) != set(ref_ids[qi])), max_gap=g,
                          tie=g <= tie_tol, positions=gaps))
    return diffs, max_gap, max_score_err


def check_set(name, d, cli, bench, budget, work, k, tie_tol, threads, simd_nq):
    base, query = os.path.join(d, "base.fvecs"), os.path.join(d, "query.fvecs")
    os.makedirs(work, exist_ok=True)
    store = os.path.join(work, name + ".chrys")
    t0 = time.time()
    if not os.path.exists(store) or os.path.getmtime(store) < os.path.getmtime(base) \
            or os.path.getmtime(store) < os.path.getmtime(cli):
        subprocess.run([cli, "build", store, base, "--metric", "cosine", "--index", "Flat", "--force", "-q"],
                       check=True)
    xb32 = read_fvecs(base)
    xq32 = read_fvecs(query)
    q64 = norm64(xq32)
    ref_ids, ref_scores = brute64(xb32, q64, k)
    t_ref = time.time()
    res = dict(dataset=name, n=int(xb32.shape[0]), d=int(xb32.shape[1]), k=k, tie_tol=tie_tol, paths={})
    runs = [("cli blas (nq=%d)" % xq32.shape[0], query, xq32.shape[0])]
    for m, label in ((simd_nq, "cli dot_block"), (3, "cli simd rows")):
        small = os.path.join(work, name + ".q%d.fvecs" % m)
        write_fvecs(small, xq32[:m])
        runs.append(("%s (nq=%d)" % (label, m), small, m))
    if bench and os.path.exists(bench):
        runs.append(("bench_anchor nq=1 calls", None, None))
    for path, qfile, nq in runs:
        if qfile is None:
            ours = single_query_ids(bench, base, query, k, work, budget)
            nq, our_scores = ours.shape[0], None
            path = "bench_anchor 1-query calls (nq=1, %d queries)" % nq
        else:
            ours, our_scores = chrysalis_search(cli, store, qfile, k, threads)
        assert ours.shape == (nq, k), (ours.shape, nq, k)
        diffs, max_gap, max_err = compare(ours, our_scores, ref_ids[:nq], ref_scores[:nq], xb32, q64[:nq],
                                          tie_tol)
        res["paths"][path] = dict(nq=int(nq), queries_differing=len(diffs),
                                  queries_set_differing=sum(x["set_differs"] for x in diffs),
                                  non_tie=sum(not x["tie"] for x in diffs), max_gap=max_gap,
                                  max_returned_score_err=max_err, diffs=diffs[:50])
        print("%-30s %-32s differing top-%d: %d (set differs: %d), max f64 gap %.3g, "
              "non-tie %d, max |score - f64| %s" % (
                  name, path, k, len(diffs), res["paths"][path]["queries_set_differing"], max_gap,
                  res["paths"][path]["non_tie"], "%.3g" % max_err if our_scores is not None else "-"),
              flush=True)
        for x in diffs[:10]:
            print("    query %d: %s" % (x["query"], ", ".join(
                "pos %d ours %d vs f64 %d (gap %.3g)" % (p["pos"], p["ours"], p["ref"], p["gap"])
                for p in x["positions"])))
    res["seconds"] = round(time.time() - t0, 1)
    res["ref_seconds"] = round(t_ref - t0, 1)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=[], help="NAME=DIR (with base.fvecs, query.fvecs)")
    ap.add_argument("--cli", default=os.path.join(ROOT, "build/release/chrysalis"))
    ap.add_argument("--bench", default=os.path.join(ROOT, "build/release/bench_anchor"),
                    help="bench_anchor, for the one-query path ('' to skip)")
    ap.add_argument("--budget", type=float, default=8.0, help="seconds for bench_anchor's one-query loop")
    ap.add_argument("--work", default=os.path.join(ROOT, "bench/out/data/exact"))
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--simd-nq", type=int, default=31)
    ap.add_argument("--tie-tol", type=float, default=1e-6)
    ap.add_argument("--json", help="write the report here")
    a = ap.parse_args()
    sets = a.set or ["luceneutil-minilm-384-cosine=" + os.path.join(ROOT, "../shared/data/luceneutil-minilm-384-cosine"),
                     "clustered200k=" + os.path.join(ROOT, "bench/out/data/clustered200k")]
    results = []
    for s in sets:
        name, d = s.split("=", 1)
        results.append(check_set(name, d, a.cli, a.bench, a.budget, a.work, a.k, a.tie_tol, a.threads, a.simd_nq))
    bad = sum(p["non_tie"] for r in results for p in r["paths"].values())
    ndiff = sum(p["queries_differing"] for r in results for p in r["paths"].values())
    if bad:
        verdict = "NOT EXACT: %d queries differ from float64 by more than a near-tie (gap > %g)" % (bad, a.tie_tol)
    elif ndiff:
        verdict = "EXACT up to near-ties: %d queries differ, all by float64 score gaps <= %g" % (ndiff, a.tie_tol)
    else:
        verdict = "EXACT: every top-%d list is identical to the float64 brute force" % a.k
    print("verdict: " + verdict)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(verdict=verdict, results=results), f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

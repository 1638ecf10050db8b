#!/usr/bin/python3
"""Table of the Core (exact Flat) benchmark from bench/out/core_*.json (anchors.py results).

  /usr/bin/python3 bench/report_core.py [--markdown] [FILES...]
Per data set, method and thread count: batch QPS with recall@10 beside it, single-query latency
(median / p99), and for chrysalis the ratios against FAISS IndexFlatIP. A data set may have been
run several times (run_core.sh RUNS=N): every figure is then the median over the runs (the QPS
range is shown), and each ratio is taken within one run (ours and FAISS measured minutes apart
on the same machine state) before the median over runs.
Ratios: batch QPS ours/FAISS at the same thread count (>= 1.0 is the target); ours/FAISS's best
over its thread counts (FAISS 1.7.3 here is often slower at 2 threads than at 1: OpenMP plus
OpenBLAS threads oversubscribe 2 cores); single-query latency FAISS/ours (> 1: ours is faster).
"""
import glob
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = ["luceneutil-minilm-384-cosine", "ngt-sift-5k-euclidean", "chrysalis", "clustered200k"]
METHODS = ["faiss-flat", "numpy-flat", "chrysalis"]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    md = "--markdown" in sys.argv
    files = [a for a in sys.argv[1:] if not a.startswith("--")] or sorted(glob.glob(os.path.join(HERE, "out/core_*.json")))
    runs = {}   # dataset -> list of (rows, meta)
    for fn in files:
        with open(fn) as f:
            r = json.load(f)
        runs.setdefault(r["dataset"]["name"], []).append(r)
    sets = sorted(runs, key=lambda s: ORDER.index(s) if s in ORDER else 99)
    hdr = ["dataset (N x d, nq)", "method", "T", "batch QPS", "(range)", "R@10", "single ms med", "single ms p99",
           "ours/FAISS batch", "ours/FAISS-best-T batch", "FAISS/ours single"]
    out = []
    if md:
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" * len(hdr))
    else:
        fmt = "%-34s %-10s %2s %9s %19s %6s %13s %13s %16s %23s %17s"
        out.append(fmt % tuple(hdr))
        out.append("-" * 180)
    for ds in sets:
        rs_all = runs[ds]
        m = rs_all[0]["dataset"]
        label = "%s (%d x %d, %d)" % (ds, m["n"], m["d"], m["nq"])
        keys = sorted({(r["method"], r["threads"]) for run in rs_all for r in run["rows"]},
                      key=lambda t: (METHODS.index(t[0]) if t[0] in METHODS else 9, t[1]))
        for meth, T in keys:
            per = []   # one dict per run
            for run in rs_all:
                rows = {(r["method"], r["threads"]): r for r in run["rows"]}
                r = rows.get((meth, T))
                if r is None:
                    continue
                f = rows.get(("faiss-flat", T))
                fbest = max([x["qps"] for (mm, _), x in rows.items() if mm == "faiss-flat"] or [None])
                per.append(dict(qps=r["qps"], r10=r["recall10"], lat=r.get("lat_ms_median"), p99=r.get("lat_ms_p99"),
                                rq=f and r["qps"] / f["qps"], rb=fbest and r["qps"] / fbest,
                                rl=f and r.get("lat_ms_median") and f.get("lat_ms_median") and
                                f["lat_ms_median"] / r["lat_ms_median"]))
            qps = [p["qps"] for p in per]
            ours = meth == "chrysalis"
            cells = [label, meth, str(T), "%.1f" % med(qps),
                     ("%.1f-%.1f (%d runs)" % (min(qps), max(qps), len(qps))) if len(qps) > 1 else "",
                     "%.4f" % min(p["r10"] for p in per),
                     "%.3f" % med([p["lat"] for p in per]) if med([p["lat"] for p in per]) is not None else "-",
                     "%.3f" % med([p["p99"] for p in per]) if med([p["p99"] for p in per]) is not None else "-",
                     "%.2fx" % med([p["rq"] for p in per]) if ours and med([p["rq"] for p in per]) else "",
                     "%.2fx" % med([p["rb"] for p in per]) if ours and med([p["rb"] for p in per]) else "",
                     "%.2fx" % med([p["rl"] for p in per]) if ours and med([p["rl"] for p in per]) else ""]
            out.append(("| " + " | ".join(cells) + " |") if md else fmt % tuple(cells))
    print("\n".join(out))
    errs = [e for rs in runs.values() for run in rs for e in run["errors"]]
    if errs:
        print("\nerrors: %s" % errs)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Table of the Core (exact Flat) benchmark from bench/out/core_*.json (anchors.py results).

  /usr/bin/python3 bench/report_core.py [--markdown] [FILES...]
Per data set, method and thread count: batch QPS with recall@10 beside it, single-query latency
(median / p99), and for chrysalis the ratios against FAISS IndexFlatIP measured in the same run
(batch QPS ours/FAISS: >= 1.0 is the target; single-query latency FAISS/ours: > 1 means faster).
"""
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = ["luceneutil-minilm-384-cosine", "ngt-sift-5k-euclidean", "chrysalis", "clustered200k"]


def load(files):
    rows, meta = [], {}
    for fn in files:
        with open(fn) as f:
            r = json.load(f)
        ds = r["dataset"]["name"]
        meta[ds] = dict(r["dataset"], machine=r["machine"], time=r["time"], errors=r["errors"])
        rows += r["rows"]
    return rows, meta


def main():
    md = "--markdown" in sys.argv
    files = [a for a in sys.argv[1:] if not a.startswith("--")] or sorted(glob.glob(os.path.join(HERE, "out/core_*.json")))
    rows, meta = load(files)
    sets = sorted(meta, key=lambda s: ORDER.index(s) if s in ORDER else 99)
    hdr = ["dataset (N x d, nq)", "method", "T", "batch QPS", "R@10", "single ms med", "single ms p99",
           "ours/FAISS batch QPS", "FAISS/ours single ms"]
    out = []
    if md:
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" * len(hdr))
    else:
        fmt = "%-40s %-11s %2s %11s %7s %13s %13s %20s %20s"
        out.append(fmt % tuple(hdr))
        out.append("-" * 145)
    for ds in sets:
        m = meta[ds]
        label = "%s (%d x %d, %d)" % (ds, m["n"], m["d"], m["nq"])
        rs = [r for r in rows if r["dataset"] == ds]
        faiss = {r["threads"]: r for r in rs if r["method"].startswith("faiss-flat")}
        for r in sorted(rs, key=lambda r: (["faiss-flat", "numpy-flat", "chrysalis"].index(r["method"])
                                           if r["method"] in ("faiss-flat", "numpy-flat", "chrysalis") else 9,
                                           r["threads"])):
            f = faiss.get(r["threads"])
            rq = rl = ""
            if r["method"] == "chrysalis" and f:
                rq = "%.2fx" % (r["qps"] / f["qps"])
                if r.get("lat_ms_median") and f.get("lat_ms_median"):
                    rl = "%.2fx" % (f["lat_ms_median"] / r["lat_ms_median"])
            cells = [label, r["method"], str(r["threads"]), "%.1f" % r["qps"], "%.4f" % r["recall10"],
                     "%.3f" % r["lat_ms_median"] if r.get("lat_ms_median") is not None else "-",
                     "%.3f" % r["lat_ms_p99"] if r.get("lat_ms_p99") is not None else "-", rq, rl]
            out.append(("| " + " | ".join(cells) + " |") if md else fmt % tuple(cells))
    print("\n".join(out))
    errs = [e for m in meta.values() for e in m["errors"]]
    if errs:
        print("\nerrors: %s" % errs)


if __name__ == "__main__":
    main()

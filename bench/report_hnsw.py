#!/usr/bin/python3
"""report_hnsw.py OUT: the HNSW benchmark's table and curves from bench/out/hnsw_<set>.json.

For each data set, method and thread count: build seconds, memory (the index's own bytes, and the
growth of the program's resident memory while it built the index), and QPS at the first swept
ef_search whose recall@10 (tie-aware) reaches 0.90, 0.95 and 0.99. Ratios are against hnswlib
compiled natively (the strong anchor), same thread count: QPS at R>=0.95, build time, memory growth.
Writes OUT/hnsw_table.json and OUT/hnsw_curves.png (recall@10 against QPS, as ann-benchmarks
draws them, one panel per data set, one thread solid and two dashed)."""
import glob
import json
import os
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "bench/out"
TARGETS = (0.90, 0.95, 0.99)
ORDER = ["luceneutil-minilm-384-cosine", "ngt-sift-5k-euclidean", "chrysalis", "fashion-mnist", "clustered200k",
         "clustered1m"]


def short(m):
    return m.split("(")[0]


def interp_at(rs, t):
    """QPS at recall@10 = t on the method's recall-QPS frontier: log-linear between the two swept
    points around t (ann-benchmarks reads its curves the same way); None when no point reaches t,
    the fastest point's QPS when even that one is above t."""
    pts = sorted({(r["recall10"], r["qps"]) for r in rs})
    front = []  # keep points not beaten by a faster one with higher recall
    for rec, q in sorted(pts, key=lambda p: -p[0]):
        if not front or q > front[-1][1]:
            front.append((rec, q))
    front.sort()
    above = [p for p in front if p[0] >= t]
    if not above:
        return None
    hi = above[0]
    below = [p for p in front if p[0] < t]
    if not below:
        return hi[1]
    lo = below[-1]
    import math
    f = (t - lo[0]) / (hi[0] - lo[0])
    return math.exp(math.log(lo[1]) + f * (math.log(hi[1]) - math.log(lo[1])))


def first_at(rs, t):
    for r in sorted(rs, key=lambda r: -r["qps"]):  # fastest point reaching the target
        if r["recall10"] >= t:
            return r
    return None


files = [f for f in glob.glob(os.path.join(out, "hnsw_*.json")) if not f.endswith("hnsw_table.json")]
files.sort(key=lambda f: (ORDER.index(os.path.basename(f)[5:-5]) if os.path.basename(f)[5:-5] in ORDER else 99))
rows_out, lines, curves = [], [], []
hdr = "%-22s %-26s %1s %8s %9s %9s | %16s %16s %16s | %7s | %8s | %7s %7s %7s %7s" % (
    "dataset", "method", "T", "build_s", "index_MB", "dRSS_MB", "QPS@R>=0.90", "QPS@R>=0.95", "QPS@R>=0.99", "maxR@10",
    "QPS@.95i", "QPS95x", "QPS95ix", "buildx", "memx")
lines += [hdr, "-" * len(hdr)]
for f in files:
    with open(f) as fh:
        res = json.load(fh)
    if "rows" not in res:
        continue
    ds = res["dataset"]
    groups = {}
    for r in res["rows"]:
        groups.setdefault((short(r["method"]), r["threads"]), []).append(r)
    recs = {}
    for (m, T), rs in groups.items():
        r0 = rs[0]
        rec = dict(dataset=ds["name"], n=ds["n"], d=ds["d"], nq=ds["nq"], method=m, threads=T,
                   build_s=r0["build_s"], index_mb=r0.get("index_mb"), rss_growth_mb=r0.get("rss_growth_mb"),
                   peak_rss_mb=r0.get("peak_rss_mb"), max_recall10=max(r["recall10"] for r in rs),
                   curve=sorted([(r["recall10"], r["qps"], r["param"]) for r in rs], key=lambda c: c[2]))
        rec["qps_interp_0.95"] = interp_at(rs, 0.95)
        for t in TARGETS:
            b = first_at(rs, t)
            rec["qps_%.2f" % t] = b and b["qps"]
            rec["ef_%.2f" % t] = b and b["param"]
            rec["recall_%.2f" % t] = b and b["recall10"]
        recs[(m, T)] = rec
    names = sorted({m for m, _ in recs}, key=lambda m: (not m.startswith("chrysalis"), m))
    for T in sorted({T for _, T in recs}):
        nat = recs.get(("hnswlib-native", T))
        for m in names:
            rec = recs.get((m, T))
            if not rec:
                continue
            q = qi = b = mem = None
            if nat and rec is not nat:
                if rec["qps_0.95"] and nat["qps_0.95"]:
                    q = rec["qps_0.95"] / nat["qps_0.95"]
                if rec["qps_interp_0.95"] and nat["qps_interp_0.95"]:
                    qi = rec["qps_interp_0.95"] / nat["qps_interp_0.95"]
                if nat["build_s"]:
                    b = rec["build_s"] / nat["build_s"]
                if rec["rss_growth_mb"] and nat["rss_growth_mb"]:
                    mem = rec["rss_growth_mb"] / nat["rss_growth_mb"]
            rec.update(qps95_vs_native=q and round(q, 3), qps95_interp_vs_native=qi and round(qi, 3), build_vs_native=b and round(b, 3), mem_vs_native=mem and round(mem, 3))
            cell = lambda t: "-" if rec["qps_%.2f" % t] is None else "%.0f(ef%s,%.3f)" % (
                rec["qps_%.2f" % t], rec["ef_%.2f" % t], rec["recall_%.2f" % t])
            fmt = lambda v: "-" if v is None else "%.2fx" % v
            qi95 = rec["qps_interp_0.95"]
            lines.append("%-22s %-26s %1s %8.2f %9s %9s | %16s %16s %16s | %7.4f | %8s | %7s %7s %7s %7s" % (
                rec["dataset"][:22], m[:26], T, rec["build_s"], rec["index_mb"], rec["rss_growth_mb"], cell(0.90),
                cell(0.95), cell(0.99), rec["max_recall10"], "-" if qi95 is None else "%.0f" % qi95, fmt(q), fmt(qi),
                fmt(b), fmt(mem)))
            rows_out.append(rec)
    lines.append("")
    curves.append((ds["name"], ds["n"], ds["d"], recs))
print("QPS@R>=t: QPS(ef, recall@10) at the fastest swept ef_search reaching recall@10 >= t (tie-aware);")
print("QPS@.95i: QPS interpolated at recall@10 = 0.95 on the recall-QPS frontier (log-linear between the swept")
print("points around it), free of the ef grid's steps; QPS95ix compares those.")
print("build_s: seconds to build with 2 threads; index_MB: the index's own bytes; dRSS_MB: resident memory growth while")
print("building (what the index really holds); x: ours / hnswlib-native at the same thread count (QPS at R>=0.95,")
print("build time, dRSS). All methods M=%s, ef_construction=%s." % (os.environ.get("M", "16"), os.environ.get("EFC", "200")))
print()
print("\n".join(lines))
with open(os.path.join(out, "hnsw_table.json"), "w") as fh:
    json.dump(rows_out, fh, indent=1)
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("(matplotlib missing: no PNG; apt-get install python3-matplotlib)")
    sys.exit(0)
if curves:
    cols = min(3, len(curves))
    rowsn = (len(curves) + cols - 1) // cols
    fig, axes = plt.subplots(rowsn, cols, figsize=(6 * cols, 4.5 * rowsn), squeeze=False)
    colors = {}
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, n, d, recs) in enumerate(curves):
        ax = axes[i // cols][i % cols]
        for (m, T), rec in sorted(recs.items()):
            c = colors.setdefault(m, palette[len(colors) % len(palette)])
            xs = [p[0] for p in rec["curve"]]
            ys = [p[1] for p in rec["curve"]]
            ax.plot(xs, ys, marker="o" if T == 1 else "x", ms=3, ls="-" if T == 1 else "--", color=c,
                    label="%s T%d" % (m, T))
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries per second")
        ax.set_title("%s (%d x %d)" % (name, n, d))
        ax.set_xlim(0.8, 1.001)
        ax.grid(True, which="both", alpha=0.3)
        ax.axvline(0.95, color="grey", lw=0.8)
    for j in range(len(curves), rowsn * cols):
        axes[j // cols][j % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(os.path.join(out, "hnsw_curves.png"), dpi=110)
    print("curves: %s" % os.path.join(out, "hnsw_curves.png"))

#!/usr/bin/env bash
# run_ivf.sh: the IVF issue's benchmark: chrysalis IVF-Flat and IVF-SQ8 (build/release/bench_ivf,
# an external backend) against FAISS IndexIVFFlat (anchors.py's "ivf") and IndexIVFScalarQuantizer
# (bench/faiss_ivfsq8.py), all in the same ../shared/tools/anchors.py run, same nlist
# (round(4 sqrt(n))), nprobe swept 1..512, recall@10 (tie-aware), QPS, train+add time.
#
#   bash bench/run_ivf.sh             (from the repository root; ~40 minutes on 2 cores)
#
# Environment: THREADS (default 1,2), BUDGET (seconds per measured point, default 4),
# SETS (space-separated subset of: minilm sift chrysalis fashion-mnist clustered200k clustered1m;
# default: all but clustered1m), QUIET_WAIT (seconds to wait, before each data set, until nothing else
# uses more than 0.3 core; default 1800, 0 = don't wait), SKIP_KMEANS=1 to skip
# bench/kmeans_objective.py. OPENBLAS_CORETYPE is left as the environment sets it.
#
# Writes bench/out/ivf_<set>.json and .log, bench/out/ivf_table.txt (bench/out/ivf_table.json),
# bench/out/ivf_kmeans.txt/.json, bench/out/ivf_cpu_monitor.log (other jobs that used a core meanwhile). Large files (Fashion-MNIST as fvecs, the generated clustered
# sets, anchors.py's cache) go under bench/out/data/, which is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
SHARED=../shared
TOOLS=$SHARED/tools
OUT=bench/out
DATA=$OUT/data
CACHE=$DATA/anchors-cache
THREADS=${THREADS:-1,2}
BUDGET=${BUDGET:-4}
SETS=${SETS:-minilm sift chrysalis fashion-mnist clustered200k}
QUIET_WAIT=${QUIET_WAIT:-1800}
mkdir -p "$OUT" "$DATA" "$CACHE"

make -s bench
BENCH=build/release/bench_ivf
LIBREV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src include 2>/dev/null || echo -dirty)"
DIFFSUM=$(git diff HEAD -- src include bench/bench_ivf.c 2>/dev/null | sha1sum | cut -c1-12)
echo "== library at $LIBREV (uncommitted src/include/bench_ivf.c diff sha1 $DIFFSUM; bench_ivf built" \
    "$(date -r $BENCH '+%F %T'))" | tee "$OUT/ivf_run_info.txt"
echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<unset>}," \
    "faiss $($PY -c 'import faiss; print(faiss.__version__, faiss.get_compile_options().strip())')" | tee -a "$OUT/ivf_run_info.txt"

. bench/lib.sh
monitor $$ >> "$OUT/ivf_cpu_monitor.log" 2>&1 &
echo "== $(date '+%F %T') run_ivf.sh SETS=$SETS" >> "$OUT/ivf_cpu_monitor.log"

anchors() { # name, anchors args...
    local name=$1
    shift
    echo "== $name"
    wait_quiet | tee "$OUT/ivf_$name.log"
    $PY $TOOLS/anchors.py "$@" --name "$name" --methods ivf --threads "$THREADS" --budget "$BUDGET" \
        --cache "$CACHE" --cli "chrysalis-ivf=$BENCH" --py bench/faiss_ivfsq8.py:FaissIVFSQ8 \
        --cli "chrysalis-ivfsq8=$BENCH --sq8" --json "$OUT/ivf_$name.json" 2>&1 | tee -a "$OUT/ivf_$name.log"
}

for s in $SETS; do
    case $s in
    minilm)
        d=$SHARED/data/luceneutil-minilm-384-cosine
        anchors luceneutil-minilm-384-cosine --base $d/base.fvecs --query $d/query.fvecs --gt $d/groundtruth.ivecs ;;
    sift)
        d=$SHARED/data/ngt-sift-5k-euclidean
        anchors ngt-sift-5k-euclidean --base $d/base.fvecs --query $d/query.fvecs --gt $d/groundtruth.ivecs ;;
    chrysalis)
        anchors chrysalis --base $SHARED/data/chrysalis/vectors.fvecs ;; # holdout queries
    fashion-mnist)
        fashion_mnist
        d=$DATA/fashion-mnist
        anchors fashion-mnist --base $d/base.fvecs --query $d/query.fvecs ;; # exact gt computed by anchors.py
    clustered200k|clustered1m)
        n=200000
        [ $s = clustered1m ] && n=1000000
        d=$DATA/$s
        clustered_set $s $n "$OUT/ivf_gen_$s.log"
        anchors $s --base $d/base.fvecs --query $d/query.fvecs --gt $d/groundtruth.ivecs ;;
    *) echo "unknown set $s" >&2; exit 2 ;;
    esac
done

echo
echo "== table"
$PY - "$OUT" <<'EOF' | tee "$OUT/ivf_table.txt"
import glob, json, os, sys
out = sys.argv[1]
TARGETS = (0.90, 0.95, 0.99)
def first_at(rs, t):  # cheapest swept nprobe reaching the target (anchors.py's rule)
    for r in rs:
        if r["recall10"] >= t:
            return r
    return None
def family(m):
    if m.startswith("faiss-ivfflat"): return ("flat", "faiss")
    if m.startswith("faiss-ivfsq8"): return ("sq8", "faiss")
    if m.startswith("chrysalis-ivfsq8"): return ("sq8", "ours")
    if m.startswith("chrysalis-ivf"): return ("flat", "ours")
    return (None, None)
order = ["luceneutil-minilm-384-cosine", "ngt-sift-5k-euclidean", "chrysalis", "fashion-mnist", "clustered200k", "clustered1m"]
files = sorted(glob.glob(os.path.join(out, "ivf_*.json")), key=lambda f: (order.index(os.path.basename(f)[4:-5]) if os.path.basename(f)[4:-5] in order else 99, f))
rows_out, lines = [], []
hdr = "%-28s %-18s %1s %5s %9s %9s | %14s %14s %14s | %7s | %9s %9s" % (
    "dataset", "method", "T", "nlist", "train+add", "(tr/add)", "QPS@R>=0.90", "QPS@R>=0.95", "QPS@R>=0.99", "maxR@10",
    "QPS95 x", "build x")
lines += [hdr, "-" * len(hdr)]
for f in files:
    name = os.path.basename(f)[4:-5]
    if name in ("table", "kmeans"):
        continue
    with open(f) as fh:
        res = json.load(fh)
    if "rows" not in res:
        continue
    ds = res["dataset"]
    n = ds["n"]
    groups = {}
    for r in res["rows"]:
        groups.setdefault((r["method"], r["threads"]), []).append(r)
    recs = {}
    for (m, T), rs in groups.items():
        fam, who = family(m)
        r0 = rs[0]
        nlist = r0.get("nlist") or round(4 * n ** 0.5)
        if "train_s" in r0:
            ta, split = r0["train_s"] + r0["add_s"], "%.1f/%.1f" % (r0["train_s"], r0["add_s"])
        else:
            ta, split = r0["build_s"], "-"
        rec = dict(dataset=ds["name"], n=n, d=ds["d"], nq=ds["nq"], method=m, family=fam, who=who, threads=T,
                   nlist=nlist, train_add_s=round(ta, 3), split=split, max_recall10=max(r["recall10"] for r in rs))
        for t in TARGETS:
            b = first_at(rs, t)
            rec["qps_%.2f" % t] = b and b["qps"]
            rec["nprobe_%.2f" % t] = b and b["param"]
            rec["recall_%.2f" % t] = b and b["recall10"]
        recs[(fam, who, T)] = rec
    for rec in sorted(recs.values(), key=lambda r: (r["family"] or "", r["threads"], r["who"] != "ours")):
        other = recs.get((rec["family"], "faiss", rec["threads"])) if rec["who"] == "ours" else None
        q95x = bx = None
        if other:
            if rec["qps_0.95"] and other["qps_0.95"]:
                q95x = rec["qps_0.95"] / other["qps_0.95"]
            bx = rec["train_add_s"] / other["train_add_s"] if other["train_add_s"] else None
        rec["qps95_ratio_vs_faiss"] = q95x and round(q95x, 3)
        rec["train_add_ratio_vs_faiss"] = bx and round(bx, 3)
        cell = lambda t: "-" if rec["qps_%.2f" % t] is None else "%.0f(np%s,%.3f)" % (
            rec["qps_%.2f" % t], rec["nprobe_%.2f" % t], rec["recall_%.2f" % t])
        lines.append("%-28s %-18s %1s %5s %9.2f %9s | %14s %14s %14s | %7.4f | %9s %9s" % (
            rec["dataset"][:28], rec["method"].split("(")[0][:18], rec["threads"], rec["nlist"], rec["train_add_s"],
            rec["split"], cell(0.90), cell(0.95), cell(0.99), rec["max_recall10"],
            "-" if q95x is None else "%.2fx" % q95x, "-" if bx is None else "%.2fx" % bx))
        rows_out.append(rec)
    lines.append("")
print("QPS@R>=t: QPS(nprobe, recall@10) at the first swept nprobe reaching recall@10 >= t (tie-aware);")
print("train+add: seconds to train k-means and add all vectors, built with 2 threads (FAISS: train/add split);")
print("QPS95 x, build x: ours / FAISS of the same family (IVF-Flat vs faiss-ivfflat, IVF-SQ8 vs faiss-ivfsq8), same T.")
print()
print("\n".join(lines))
with open(os.path.join(out, "ivf_table.json"), "w") as fh:
    json.dump(rows_out, fh, indent=1)
EOF

if [ "${SKIP_KMEANS:-0}" != 1 ]; then
    echo
    echo "== k-means objective (bench/kmeans_objective.py)"
    wait_quiet
    $PY bench/kmeans_objective.py --json "$OUT/ivf_kmeans.json" 2>&1 | tee "$OUT/ivf_kmeans.txt"
fi

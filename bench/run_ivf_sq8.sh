#!/usr/bin/env bash
# run_ivf_sq8.sh: codes-only IVF,SQ8 (issue 12 item 4) against FAISS IndexIVFScalarQuantizer
# (QT_8bit, codes only) on seeded clustered data, like for like: same base, queries and exact
# ground truth (../shared/tools/gen_clustered.py), same nlist, same nprobe values, both trained on
# the same base (each samples at most 256 points per list for k-means), built with 2 threads,
# searched with 1 and 2 threads, all queries in one call. Beside them, for reference:
# chrysalis Flat (exact) and IVF,SQ8,RFlat (codes + float32 rows, exact re-ranking).
#
#   flock /tmp/chrys-heavy.lock bash bench/run_ivf_sq8.sh      (from the repository root; ~5 min)
#
# FAISS runs twice: by_residual=False (codes of x, as chrysalis encodes them: the like-for-like
# row) and its default by_residual=True (codes of x - centroid: finer codes, same bytes).
#
# Environment: N (default 100000), NLIST (default 256), NPROBE (default 1,2,4,8,16,32,64,128),
# FAISS_NPROBE (default 1,2,4,8,16,32: Debian's generic FAISS build is slow at high nprobe),
# THREADS (default 1,2), BUILD (default build/release), QUIET_WAIT (seconds to wait, before each
# method, until no other process uses more than 0.3 core: the lock keeps other heavy runs out, not
# everything; default 120). OPENBLAS_CORETYPE is left as it is.
# Writes bench/out/ivf_sq8_<method>.json, bench/out/ivf_sq8_table.md and bench/out/ivf_sq8_run.txt;
# the data set goes to bench/out/tmp/data/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
N=${N:-100000}
NLIST=${NLIST:-256}
NPROBE=${NPROBE:-1,2,4,8,16,32,64,128}
FAISS_NPROBE=${FAISS_NPROBE:-1,2,4,8,16,32} # FAISS 1.7.3 from Debian (generic build) scans ~0.5M codes/s
THREADS=${THREADS:-1,2}
BUILD=${BUILD:-build/release}
OUT=bench/out
DATA=$OUT/tmp/data/clustered$((N / 1000))k
QUIET_WAIT=${QUIET_WAIT:-120}
mkdir -p "$OUT/tmp"
. bench/lib.sh
monitor $$ > "$OUT/ivf_sq8_cpu_monitor.log" 2>&1 &
make -s BUILD="$BUILD" MODE=release "$BUILD/bench_ivf_sq8"
if [ ! -f "$DATA/groundtruth.ivecs" ]; then
    $PY ../shared/tools/gen_clustered.py --n "$N" --d 1024 --nq 1000 --out "$DATA"
fi
{
    echo "date: $(date -u '+%F %T UTC')"
    echo "library: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src include bench 2>/dev/null || echo -dirty)"
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB," \
        "load $(cut -d' ' -f1-3 /proc/loadavg), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<unset>}"
    echo "faiss: $($PY -c 'import faiss; print(faiss.__version__, faiss.get_compile_options().strip())')"
    echo "data: gen_clustered.py --n $N --d 1024 --nq 1000 (seed default), nlist $NLIST, nprobe $NPROBE, threads $THREADS"
} | tee "$OUT/ivf_sq8_run.txt"
B="--base $DATA/base.fvecs --query $DATA/query.fvecs --gt $DATA/groundtruth.ivecs"
for spec in Flat "IVF$NLIST,SQ8" "IVF$NLIST,SQ8,RFlat"; do
    name=$(echo "$spec" | tr ',' '_')
    echo "== $spec $(wait_quiet 2>&1)" | tee -a "$OUT/ivf_sq8_run.txt"
    "$BUILD/bench_ivf_sq8" $B --spec "$spec" --store "$OUT/tmp/ivf_sq8.chrys" --threads "$THREADS" --nprobe "$NPROBE" \
        --json "$OUT/ivf_sq8_chrysalis_$name.json" 2>&1 | tee -a "$OUT/ivf_sq8_run.txt"
done
for res in 0 1; do # 0: codes of x, as chrysalis encodes (like for like); 1: FAISS's default, codes of x - centroid
    echo "== faiss by_residual=$res $(wait_quiet 2>&1)" | tee -a "$OUT/ivf_sq8_run.txt"
    $PY bench/faiss_ivf_sq8_anchor.py $B --nlist "$NLIST" --index-file "$OUT/tmp/ivf_sq8.faiss" --threads "$THREADS" \
        --nprobe "$FAISS_NPROBE" --by-residual $res --json "$OUT/ivf_sq8_faiss_res$res.json" 2>&1 | tee -a "$OUT/ivf_sq8_run.txt"
done
rm -f "$OUT/tmp/ivf_sq8.chrys" "$OUT/tmp/ivf_sq8.faiss"

$PY - "$OUT" "$NLIST" <<'P' | tee "$OUT/ivf_sq8_table.md"
import json, sys
out, nlist = sys.argv[1], sys.argv[2]
files = ["chrysalis_Flat", "chrysalis_IVF%s_SQ8" % nlist, "faiss_res0", "chrysalis_IVF%s_SQ8_RFlat" % nlist, "faiss_res1"]
res = [json.load(open("%s/ivf_sq8_%s.json" % (out, f))) for f in files]
flat = res[0]
mib = lambda b: b / 1048576.0
print("| method | build s | disk MiB (x Flat) | memory MiB, RSS on load (x Flat) | library count MiB |")
print("|---|---|---|---|---|")
for r in res:
    lib = "%.1f" % mib(r["memory_bytes"]) if "memory_bytes" in r else "-"
    print("| %s | %.2f | %.1f (%.3fx) | %.1f (%.3fx) | %s |" % (r["method"], r["build_s"], mib(r["disk_bytes"]),
          r["disk_bytes"] / flat["disk_bytes"], mib(r["rss_load_bytes"]), r["rss_load_bytes"] / flat["rss_load_bytes"], lib))
print()
threads = sorted({x["threads"] for x in res[1]["runs"]})
probes = sorted({x["nprobe"] for x in res[1]["runs"]})
names = ("ours", "FAISS", "ours/FAISS", "FAISS residual", "RFlat")
hdr = "| nprobe | " + " | ".join("%s T%d" % (name, t) for t in threads for name in names) + " |"
print("QPS (recall@10) by nprobe; ours = chrysalis IVF%s,SQ8 (codes only), FAISS = IndexIVFScalarQuantizer QT_8bit with by_residual=False "
      "(codes of x, like ours), FAISS residual = its default by_residual=True, RFlat = chrysalis IVF%s,SQ8,RFlat (reference)" % (nlist, nlist))
print()
print(hdr)
print("|" + "---|" * (1 + len(names) * len(threads)))
def get(r, t, p):
    for x in r["runs"]:
        if x["threads"] == t and x["nprobe"] == p:
            return x
for p in probes:
    cells = []
    for t in threads:
        a, b, c, e = get(res[1], t, p), get(res[2], t, p), get(res[3], t, p), get(res[4], t, p)
        f = lambda x: "%.0f (%.3f)" % (x["qps"], x["recall10"]) if x else "-"
        cells += [f(a), f(b), "%.2fx" % (a["qps"] / b["qps"]) if a and b else "-", f(e), f(c)]
    print("| %d | %s |" % (p, " | ".join(cells)))
print()
for t in threads:
    x = get(flat, t, 0)
    if x:
        print("Flat (exact) T%d: %.0f QPS, recall@10 %.3f." % (t, x["qps"], x["recall10"]))
for r in res[1:]:
    print("%s: max recall@10 %.4f." % (r["method"], max(x["recall10"] for x in r["runs"])))
P

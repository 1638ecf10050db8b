#!/usr/bin/env bash
# run_hnsw.sh: the HNSW issue's benchmark. In one ../shared/tools/anchors.py run per data set:
#   chrysalis HNSW float32, HNSW SQ8 (codes only), HNSW SQ8,RFlat, and HNSW SQ8,RFlat opened with
#   mmap (float32 rows left in the file, read only for re-ranking) (build/release/bench_hnsw),
#   hnswlib compiled here with -O3 -march=native (../shared/tools/hnswlib_native.cpp, the strong
#   anchor), Debian's hnswlib 0.6.2 and FAISS 1.7.3 IndexHNSWFlat (generic SSE2 builds),
# all with M=16 and ef_construction=200, ef_search swept, recall@10 (tie-aware) beside QPS, build
# time on 2 threads, memory (our index's own bytes and each program's peak RSS).
#
#   bash bench/run_hnsw.sh             (from the repository root; ~1 hour on 2 cores)
#
# Environment: THREADS (default 1,2), BUDGET (seconds per measured point, default 4), SETS (subset of:
# minilm sift chrysalis fashion-mnist clustered200k clustered1m; default all but clustered1m),
# QUIET_WAIT (seconds to wait for a quiet machine before each set, default 1800; 0 = don't),
# M (default 16), EFC (default 200), ANCHOR_METHODS (anchors.py's own methods, default hnsw16,hnswlib16:
# FAISS IndexHNSWFlat and Debian's hnswlib; empty for none, e.g. on the 1M set).
# Writes bench/out/hnsw_<set>.json and .log, bench/out/hnsw_table.txt (.json), bench/out/hnsw_curves.png.
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
M=${M:-16}
EFC=${EFC:-200}
EFS=10,16,24,32,48,64,96,128,192,256,384,512
mkdir -p "$OUT" "$DATA" "$CACHE"
. bench/lib.sh

make -s bench build/release/hnswlib_native
BENCH=build/release/bench_hnsw
NATIVE=build/release/hnswlib_native
LIBREV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src include 2>/dev/null || echo -dirty)"
echo "== library at $LIBREV; machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)," \
    "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<unset>}, SIMD $(build/release/chrysalis version)" | tee "$OUT/hnsw_run_info.txt"
monitor $$ >> "$OUT/hnsw_cpu_monitor.log" 2>&1 &
echo "== $(date '+%F %T') run_hnsw.sh SETS=$SETS" >> "$OUT/hnsw_cpu_monitor.log"

ours=()
for v in ${VARIANTS:-float sq8 rflat rflat-mmap}; do
    case $v in
    float) ours+=(--cli "chrysalis-hnsw=$BENCH --M $M --efc $EFC --efs $EFS") ;;
    sq8) ours+=(--cli "chrysalis-hnsw-sq8=$BENCH --M $M --efc $EFC --efs $EFS --sq8") ;;
    rflat) ours+=(--cli "chrysalis-hnsw-sq8-rflat=$BENCH --M $M --efc $EFC --efs $EFS --rflat") ;;
    rflat-mmap) ours+=(--cli "chrysalis-hnsw-sq8-rflat-mmap=$BENCH --M $M --efc $EFC --efs $EFS --rflat --mmap") ;;
    *) echo "unknown variant $v" >&2; exit 2 ;;
    esac
done

anchors() { # name, anchors args...
    local name=$1
    shift
    echo "== $name"
    wait_quiet | tee "$OUT/hnsw_$name.log"
    $PY $TOOLS/anchors.py "$@" --name "$name" --methods "${ANCHOR_METHODS-hnsw$M,hnswlib$M}" --threads "$THREADS" --budget "$BUDGET" \
        --cache "$CACHE" \
        --cli "hnswlib-native=$NATIVE --M $M --efc $EFC --efs $EFS" "${ours[@]}" \
        --json "$OUT/hnsw_$name.json" 2>&1 | tee -a "$OUT/hnsw_$name.log"
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
        anchors fashion-mnist --base $d/base.fvecs --query $d/query.fvecs ;;
    clustered200k|clustered1m)
        n=200000
        [ $s = clustered1m ] && n=1000000
        clustered_set $s $n "$OUT/hnsw_gen_$s.log"
        d=$DATA/$s
        anchors $s --base $d/base.fvecs --query $d/query.fvecs --gt $d/groundtruth.ivecs ;;
    *) echo "unknown set $s" >&2; exit 2 ;;
    esac
done

echo
echo "== table and curves"
$PY bench/report_hnsw.py "$OUT" | tee "$OUT/hnsw_table.txt"

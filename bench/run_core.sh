#!/usr/bin/env bash
# run_core.sh: the Core issue's benchmark: exact Flat search, chrysalis vs FAISS IndexFlatIP and
# numpy in the same run (../shared/tools/anchors.py, with bench_anchor as an external backend).
#
#   bash bench/run_core.sh            (from the repository root; about 10 minutes on 2 cores)
#
# Environment: THREADS (default 1,2), BUDGET (seconds per measured point, default 8),
# SETS (space-separated subset of: minilm sift chrysalis clustered200k), RUNS (repeats of each
# set, default 3: the table reports medians, as this 2-core VM is shared), SKIP_EXACT=1 to skip
# bench/exact_check.py, QUIET_WAIT (seconds to wait, before each measurement, for the 1-minute
# load average to fall below QUIET_LOAD=0.3; default 600, 0 = don't wait).
# OPENBLAS_CORETYPE is left as the environment sets it.
#
# Writes bench/out/core_<set>.run<R>.json and .log, bench/out/core_table.txt,
# bench/out/bounds.txt, bench/out/membw_{1,2}t.txt (this VM's measured read ceiling, from
# bench/membw.c), bench/out/exact_check.{txt,json}. Large files (the generated 200k x 1024
# set, anchors.py's cache, stores) go under bench/out/data/, which is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
SHARED=../shared
TOOLS=$SHARED/tools
OUT=bench/out
DATA=$OUT/data
CACHE=$DATA/anchors-cache
THREADS=${THREADS:-1,2}
BUDGET=${BUDGET:-8}
SETS=${SETS:-minilm sift chrysalis clustered200k}
RUNS=${RUNS:-3}
mkdir -p "$OUT" "$DATA" "$CACHE"

make -s bench cli
BENCH=build/release/bench_anchor
LIBREV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src include 2>/dev/null || echo -dirty)"
echo "== library at $LIBREV (bench_anchor built $(date -r $BENCH '+%F %T'))" | tee "$OUT/run_info.txt"

if [ ! -f "$DATA/clustered200k/groundtruth.ivecs" ]; then
    echo "== generating $DATA/clustered200k (200,000 x 1024, 1000 queries; ~1.6 GB RAM)"
    $PY $TOOLS/gen_clustered.py --n 200000 --d 1024 --nq 1000 --out "$DATA/clustered200k" \
        | tee "$OUT/gen_clustered200k.log"
fi

QUIET_WAIT=${QUIET_WAIT:-600}
QUIET_LOAD=${QUIET_LOAD:-0.3}
wait_quiet() { # the machine is shared: timings are only meaningful when nothing else runs
    local waited=0
    while awk -v l="$QUIET_LOAD" '{exit !($1 >= l)}' /proc/loadavg && [ "$waited" -lt "$QUIET_WAIT" ]; do
        sleep 10
        waited=$((waited + 10))
    done
    echo "   (load average $(cut -d' ' -f1-3 /proc/loadavg) after waiting ${waited}s)"
}

echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<unset>}"

anchors() { # name, anchors args...
    local name=$1
    shift
    rm -f "$OUT/core_$name".*json "$OUT/core_$name".*log
    for r in $(seq 1 "$RUNS"); do
        echo "== $name (run $r of $RUNS)"
        wait_quiet
        $PY $TOOLS/anchors.py "$@" --name "$name" --methods flat,numpy_flat --threads "$THREADS" \
            --budget "$BUDGET" --cache "$CACHE" --cli chrysalis=$BENCH --json "$OUT/core_$name.run$r.json" \
            2>&1 | tee "$OUT/core_$name.run$r.log"
    done
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
    clustered200k)
        d=$DATA/clustered200k
        anchors clustered200k --base $d/base.fvecs --query $d/query.fvecs --gt $d/groundtruth.ivecs ;;
    *) echo "unknown set $s" >&2; exit 2 ;;
    esac
done

{
    echo "== bounds (../shared/tools/bounds.py), 200k x 1024, 1000 queries"
    echo "-- 1 thread";  $PY $TOOLS/bounds.py --n 200000 --d 1024 --q 1000
    echo "-- 2 threads"; $PY $TOOLS/bounds.py --n 200000 --d 1024 --q 1000 --threads 2
} | tee "$OUT/bounds.txt"

# This VM's read ceiling now (the bound above assumes 41.5 / 73 GB/s, quiet-machine medians).
cc -std=c11 -D_GNU_SOURCE -O2 -mavx512f -mfma -Iinclude -Isrc bench/membw.c build/release/libchrysalis.a \
    -lopenblas -lcjson -lm -pthread -o build/release/membw
for t in 1 2; do
    wait_quiet
    build/release/membw --threads $t --reps 7 | tee "$OUT/membw_${t}t.txt"
done

echo
echo "== results (recall@10 is tie-aware, from anchors.py)"
$PY bench/report_core.py | tee "$OUT/core_table.txt"

if [ "${SKIP_EXACT:-0}" != 1 ]; then
    echo
    echo "== exactness vs float64 brute force"
    $PY bench/exact_check.py --json "$OUT/exact_check.json" | tee "$OUT/exact_check.txt"
fi

#!/usr/bin/env bash
# Long libFuzzer runs behind docs/RELIABILITY.md: each target for SECONDS (default 600) from the
# committed seed corpus into a temporary output corpus, with -print_final_stats=1. Each target is
# its own `flock LOCK` command so other heavy jobs on a shared machine can run between targets.
#   bash bench/reliability_fuzz.sh [SECONDS] [LOGDIR]      (after `make fuzz`)
#   TARGETS="fvecs hnsw" bash bench/reliability_fuzz.sh ...  (some targets only)
#   SUMMARY_ONLY=1 bash bench/reliability_fuzz.sh 600 LOGDIR (the summary lines of an earlier run)
# fuzz_load gets -max_len=32768 (the seed stores are 15-22 KB; at 4096 libFuzzer would cut every
# IVF/SQ8/merger seed to its first 4 KB and only ever fuzz truncated files); the others 4096, as
# tests/run_all.sh. Prints one summary line per target: executions, exec/s, coverage (cov) and
# features (ft) from the seed corpus to the end, and crashes (files left in LOGDIR/artifacts_T).
set -u
cd "$(dirname "$0")/.."
SECS=${1:-600}
LOGDIR=${2:-$(mktemp -d)}
LOCK=${CHRYS_HEAVY_LOCK:-/tmp/chrys-heavy.lock}
mkdir -p "$LOGDIR"
for t in ${TARGETS:-load jsonl fvecs hnsw}; do
    maxlen=4096; [ "$t" = load ] && maxlen=32768
    out="$LOGDIR/corpus_$t"; art="$LOGDIR/artifacts_$t/"
    mkdir -p "$out" "$art"
    rc=?
    if [ "${SUMMARY_ONLY:-0}" != 1 ]; then # SUMMARY_ONLY=1: only summarise the logs already in LOGDIR
        flock "$LOCK" build/fuzz/fuzz_$t -max_total_time="$SECS" -max_len=$maxlen -print_final_stats=1 \
            -artifact_prefix="$art" "$out" tests/fuzz/corpus/$t >"$LOGDIR/fuzz_$t.log" 2>&1
        rc=$?
    fi
    log="$LOGDIR/fuzz_$t.log"
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    secs=$(grep -o 'runs in [0-9]* second' "$log" | grep -o '[0-9]*' | tail -1)
    eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$')
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*')
    ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*')
    init=$(grep -E 'INITED' "$log" | head -1)
    cov0=$(echo "$init" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*')
    ft0=$(echo "$init" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*')
    crashes=$(ls "$art" | wc -l)
    echo "fuzz_$t: rc=$rc executions=${execs:-?} seconds=${secs:-?} exec/s=${eps:-?} cov=${cov0:-?}->${cov:-?} ft=${ft0:-?}->${ft:-?} crashes=$crashes max_len=$maxlen"
done

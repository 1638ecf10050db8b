#!/usr/bin/env bash
# arch_check.sh: the before/after figures of the architecture issue (a refactor: every figure
# must stay within noise). One run measures, with the binaries of BUILD (copied first, so a
# rebuild cannot change what is measured):
#   golden   the 926 Chrysalis legend records merged as scripts/example.sh does (wall, entries)
#   batch    the unit test test_merge_batch_equals_sequential (pass, wall)
#   merge    chrysalis merge, default, of a seeded clustered 100,000 x 1024 stream (wall, entries)
#   hnsw     HNSW16 efc 200 on a seeded clustered 200,000 x 1024 set: build on 2 threads, then
#            QPS at the smallest ef_search reaching recall@10 >= 0.95, on 1 and 2 threads
#   flat     exact Flat batch search, 100,000 x 1024, 1,000 queries, 1 and 2 threads (bench_anchor)
#
#   bash bench/arch_check.sh [BUILD] [LABEL]     (BUILD default build/release; ~15 minutes)
# Data under bench/out/data (git-ignored); results appended to bench/out/arch_check.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
BUILD=${1:-build/release}
LABEL=${2:-$(git rev-parse --short HEAD)}
DATA=bench/out/data
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cp "$BUILD/chrysalis" "$BUILD/bench_hnsw" "$BUILD/bench_anchor" "$BUILD/unit_tests" "$W/"
mkdir -p "$DATA"
gen() { [ -f "$1/meta.json" ] || $PY ../shared/tools/gen_clustered.py "${@:2}" --out "$1" >/dev/null; }
gen "$DATA/merge100k" --n 100000 --d 1024 --nq 10 --gt-k 10 --clusters 1000 --s-min 0.25 --s-max 0.8 --seed 20240611
gen "$DATA/clustered200k" --n 200000 --d 1024 --nq 1000 --seed 20240101
gen "$DATA/flat100k" --n 100000 --d 1024 --nq 1000 --seed 7
res=bench/out/arch_check.txt
log() { echo "$LABEL $*" | tee -a "$res"; }
now() { date +%s.%N; }
export CHRYS_NO_PROGRESS=1

t0=$(now); rm -f "$W/legends.chrys"
"$W/chrysalis" merge "$W/legends.chrys" examples/chrysalis/vectors.f32 --dim 1024 \
    --meta examples/chrysalis/records.jsonl --threshold 0.85 --json > "$W/golden.json"
t1=$(now)
log "golden wall_s=$(echo "$t1 - $t0" | bc) $($PY -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print("merged=%s entries=%s" % (d.get("merged"), d.get("entries")))' "$W/golden.json")"

t0=$(now); "$W/unit_tests" test_merge_batch_equals_sequential > "$W/batch.log" 2>&1; t1=$(now)
log "batch wall_s=$(echo "$t1 - $t0" | bc) $(tail -1 "$W/batch.log")"

for r in 1 2; do
    rm -f "$W/m.chrys"; t0=$(now)
    "$W/chrysalis" merge "$W/m.chrys" "$DATA/merge100k/base.fvecs" --json > "$W/m.json"; t1=$(now)
    log "merge100k run$r wall_s=$(echo "$t1 - $t0" | bc) $($PY -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print("merged=%s entries=%s" % (d.get("merged"), d.get("entries")))' "$W/m.json")"
done

mkdir -p "$W/h"
"$W/bench_hnsw" --base "$DATA/clustered200k/base.fvecs" --query "$DATA/clustered200k/query.fvecs" --k 10 \
    --threads 1,2 --out "$W/h" --M 16 --efc 200 --efs 16,24,32,48,64,96,128 2> "$W/h.log"
$PY - "$W/h" "$DATA/clustered200k/groundtruth.ivecs" <<'PY' | while read -r l; do log "$l"; done
import json, sys, numpy as np
d, gtp = sys.argv[1], sys.argv[2]
def iv(p):
    a = np.fromfile(p, dtype=np.int32); k = a[0]; return a.reshape(-1, k + 1)[:, 1:]
gt = iv(gtp)[:, :10]
r = json.load(open(d + "/result.json"))
print("hnsw200k build_s=%.2f threads=%d" % (r["build_s"], r["build_threads"]))
for t in (1, 2):
    for run in sorted((x for x in r["runs"] if x["threads"] == t), key=lambda x: x["param"]):
        ids = iv(d + "/" + run["ids"])[:, :10]
        rec = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, gt)])
        if rec >= 0.95:
            print("hnsw200k threads=%d ef=%d recall=%.4f qps=%.0f" % (t, run["param"], rec, run["nq"] / run["search_s"]))
            break
PY

mkdir -p "$W/f"
"$W/bench_anchor" --base "$DATA/flat100k/base.fvecs" --query "$DATA/flat100k/query.fvecs" --k 10 --threads 1,2 \
    --out "$W/f" --budget 6 --no-single 2> "$W/f.log"
$PY - "$W/f/result.json" <<'PY' | while read -r l; do log "$l"; done
import json, sys
r = json.load(open(sys.argv[1]))
for run in r["runs"]:
    print("flat100k threads=%d qps=%.0f (best of %d batch runs)" % (run["threads"], run["nq"] / run["search_s"], run["batch_runs"]))
PY

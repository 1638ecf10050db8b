#!/usr/bin/env bash
# run_merge.sh: the merger issue's benchmark. chrysalis merge vs the original Python merger
# (bench/merge_python.py, a faithful pure-Python re-implementation) and a numpy linear merge
# (bench/merge_numpy.py), at 1,000, 10,000 and 100,000 clustered 1024-d vectors; also the
# FAISS-style merger of ../shared/tools/merge_anchor.py. See bench/MERGE.md.
#
#   bash bench/run_merge.sh          (from anywhere; about 30 minutes on 2 cores, plus waits for a quiet machine)
#
# Idempotent: the data set is generated only if missing and each measurement is skipped when its
# result file bench/out/merge_runs/<name>.json exists (FORCE=1 redoes them all). Environment:
#   NUMPY_LIMIT   seconds after which a numpy run stops and the rest is extrapolated (default 540)
#   PY_NS         N values the pure-Python merger really runs (default "1000 2000")
#   REPS          repetitions of each chrysalis run at N <= 10,000 (default 3; 2 at 100,000; the
#                 minimum is kept)
#   QUIET_WAIT    seconds to wait, before each timed run, while another benchmark (anchors.py,
#                 bench_anchor, gen_clustered, exact_check.py, run_core.sh, membw) is running or
#                 others keep more than 25% of the CPU busy (default 7200; checked every 30 s)
# Writes bench/out/merge_runs/*.json (one per measurement), bench/out/merge_results.json,
# bench/out/merge_table.txt, bench/out/merge_run.log. Data and stores go under bench/out/data/.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
TOOLS=../shared/tools
OUT=bench/out
RUNS=$OUT/merge_runs
DATA=$OUT/data/merge100k
WORK=$OUT/data/merge_work
NUMPY_LIMIT=${NUMPY_LIMIT:-540}
PY_NS=${PY_NS:-1000 2000}
REPS=${REPS:-3}
QUIET_WAIT=${QUIET_WAIT:-7200}
FORCE=${FORCE:-0}
CLI=build/release/chrysalis
mkdir -p "$RUNS" "$WORK"
exec > >(tee -a "$OUT/merge_run.log") 2>&1
echo "== run_merge.sh $(date '+%F %T')"

make -s cli
LIBREV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src include 2>/dev/null || echo -dirty)"
# a private copy, so a rebuild of build/release during the run cannot change what is measured
CLI=$WORK/chrysalis
cp build/release/chrysalis "$CLI"
LIBREV="$LIBREV binary:$(sha256sum "$CLI" | cut -c1-12)"
export LIBREV
echo "== library at $LIBREV, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"

# ---- data: 100,000 x 1024 seeded clustered unit vectors; 1k / 10k are prefixes of the same stream
GEN_ARGS="--n 100000 --d 1024 --nq 10 --gt-k 10 --clusters 1000 --s-min 0.25 --s-max 0.8 --seed 20240611"
if [ ! -f "$DATA/meta.json" ]; then
    echo "== generating $DATA ($GEN_ARGS)"
    $PY $TOOLS/gen_clustered.py $GEN_ARGS --out "$DATA"
fi
prefix() {  # prefix N -> path of the first N records (fvecs rows are 4 + 4*1024 bytes)
    local n=$1 p
    if [ "$n" = 100000 ]; then echo "$DATA/base.fvecs"; return; fi
    p=$WORK/p$n.fvecs
    [ -f "$p" ] && [ "$(stat -c %s "$p")" = $((n * 4100)) ] || head -c $((n * 4100)) "$DATA/base.fvecs" > "$p"
    echo "$p"
}

busy() {  # another benchmark or test run going on? Prints what, or nothing when quiet.
    # (1) the other benchmarks of this repository by name; (2) any CPU use by others: between our
    # timed runs nothing of ours runs, so less than 1.5 of the 2 cores idle over 3 s means
    # someone else is working (a build, the test suite)
    ps -eo pid=,args= | grep -E 'anchors\.py|bench_anchor|gen_clustered|exact_check\.py|run_core\.sh|membw' \
        | grep -v -E 'grep|run_merge' || true
    local a b
    a=($(head -1 /proc/stat)); sleep 3; b=($(head -1 /proc/stat))
    local tot=0 i
    for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
    local idle=$((b[4] - a[4] + b[5] - a[5]))
    [ "$tot" -gt 0 ] && [ $((100 * idle / tot)) -lt 75 ] && echo "cpu busy: $((100 - 100 * idle / tot))% of all cores used by others"
    return 0
}
wait_quiet() {
    local waited=0 b
    while b=$(busy) && [ -n "$b" ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
        [ "$waited" = 0 ] && echo "   (waiting for: $(echo "$b" | head -2 | cut -c1-100 | tr '\n' ';'))"
        sleep 30; waited=$((waited + 30))
    done
    [ "$waited" -ge "$QUIET_WAIT" ] && echo "   WARNING: still busy after ${QUIET_WAIT}s; measuring anyway" || true
}
todo() { [ "$FORCE" = 1 ] || [ ! -f "$RUNS/$1.json" ]; }
cpu_busy_s() {  # non-idle CPU jiffies of the whole machine so far, and jiffies per second
    local a; a=($(head -1 /proc/stat))
    echo $(( a[1] + a[2] + a[3] + a[6] + a[7] + a[8] )) $(getconf CLK_TCK)
}
timed() {  # timed RESULTFILE CMD... : runs CMD, writes "wall_s peak_rss_kib others_cpu_s" to RESULTFILE
    # others_cpu_s: CPU seconds used on the machine by anything but CMD while it ran (noise indicator)
    local res=$1; shift
    local b0 b1 hz rc=0
    read -r b0 hz < <(cpu_busy_s)
    /usr/bin/time -f "%e %M %U %S" -o "$WORK/time.txt" "$@" || rc=$?
    read -r b1 hz < <(cpu_busy_s)
    read -r wall rss usr sys < "$WORK/time.txt"
    awk -v w="$wall" -v r="$rss" -v u="$usr" -v s="$sys" -v d=$((b1 - b0)) -v hz="$hz" \
        'BEGIN { o = d / hz - u - s; if (o < 0) o = 0; printf "%s %s %.1f\n", w, r, o }' > "$res"
    return $rc
}
note_others() {  # note_others JSON: adds process wall, peak RSS and others_cpu_s ($WORK/timed.txt)
    $PY - "$1" "$WORK/timed.txt" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
w, rss, o = open(sys.argv[2]).read().split()
r.update(process_wall_s=float(w), peak_rss_kib=int(rss), others_cpu_s=float(o))
json.dump(r, open(sys.argv[1], "w"), indent=1)
EOF
}

# ---- 0. the Python re-implementation against the golden output of the real original
if todo golden_python; then
    echo "== merge_python.py golden (926 real rows, 0.85; expect 638 slots, 288 merges)"
    wait_quiet
    $PY bench/merge_python.py golden --json "$RUNS/golden_python.json"
fi

# ---- 1. chrysalis merge (fresh store each run), 1 and 2 (default) threads
ours() {  # ours N T [extra options...]  -> $RUNS/chrysalis_<tag>_N.json
    local n=$1 t=$2; shift 2
    local tag="t$t" reps=$REPS
    [ $# -gt 0 ] && tag="t${t}_renorm"
    [ "$n" -gt 10000 ] && reps=2
    local name=chrysalis_${tag}_$n store=$WORK/ours_${tag}_$n.chrys data
    todo "$name" || return 0
    data=$(prefix "$n")
    local thr_opt=(--threads "$t")
    echo "== chrysalis merge N=$n threads=$t $* ($reps run(s))"
    local r walls=() others=() best="" bestline=""
    for r in $(seq "$reps"); do
        wait_quiet
        rm -f "$store"
        timed "$WORK/timed.txt" $CLI merge "$store" "$data" "${thr_opt[@]}" "$@" --json > "$WORK/ours.json"
        read -r wall rss oth < "$WORK/timed.txt"
        echo "   run $r: wall ${wall}s, peak RSS ${rss} KiB, others' CPU ${oth}s: $(cut -c1-120 "$WORK/ours.json")"
        walls+=("$wall"); others+=("$oth")
        if [ -z "$best" ] || awk "BEGIN{exit !($wall < $best)}"; then best=$wall; bestline="$wall $rss $oth"; cp "$WORK/ours.json" "$WORK/ours_best.json"; fi
    done
    $PY - "$WORK/ours_best.json" "$RUNS/$name.json" "$n" "$t" "$tag" "$bestline" "${walls[*]}" "$store" "${others[*]}" <<'EOF'
import json, sys
import os
src, dst, n, t, tag, best, walls, store, others = sys.argv[1:]
cli = json.load(open(src))
wall, rss, oth = best.split()
out = dict(method=f"chrysalis_{tag}", n=int(n), threads=int(t), seconds=float(wall), extrapolated=False,
           seconds_all_runs=[float(w) for w in walls.split()], peak_rss_kib=int(rss), others_cpu_s=float(oth),
           others_cpu_s_all_runs=[float(o) for o in others.split()],
           library=os.environ.get("LIBREV", ""), cli_merge_seconds=cli.get("seconds"), merges=cli["merged"], entries=cli["entries"],
           added=cli["added"], searches=cli.get("searches"), store=store,
           merged_count_histogram_size=len(cli.get("merged_count_histogram", {})))
json.dump(out, open(dst, "w"), indent=1)
EOF
    # per-record assignments and the original's cosine-call count from the store
    [ "$tag" = t2 ] && $PY bench/merge_numpy.py store "$store" --json "$RUNS/trace_$n.json" > /dev/null
    return 0
}
for n in 1000 10000 100000; do ours $n 2; ours $n 1; done
# threads 1 and 2 must give the same decisions
for n in 1000 10000 100000; do
    if todo same_t1_t2_$n; then
        $PY - "$WORK/ours_t1_$n.chrys" "$WORK/ours_t2_$n.chrys" "$RUNS/same_t1_t2_$n.json" <<'EOF'
import json, sys
sys.path.insert(0, "bench")
from merge_numpy import store_assignments, compare_assign
a = store_assignments(sys.argv[1])[1]; b = store_assignments(sys.argv[2])[1]
r = compare_assign(a, b); r["check"] = "chrysalis --threads 1 vs 2"
print(json.dumps(r)); json.dump(r, open(sys.argv[3], "w"), indent=1)
EOF
    fi
done

# ---- 1b. where chrysalis's time goes (not the timed runs): the searches' own time, from
# --metrics-log, and `chrysalis build` of the same file (read + normalise + atomic save, no merging)
for n in 1000 10000 100000; do
    todo breakdown_$n || continue
    echo "== chrysalis breakdown N=$n"
    wait_quiet
    rm -f "$WORK/bd.chrys" "$WORK/bd_build.chrys" "$WORK/bd_metrics.log"
    timed "$WORK/timed.txt" $CLI merge "$WORK/bd.chrys" "$(prefix "$n")" --metrics-log "$WORK/bd_metrics.log" --json > "$WORK/bd.json"
    cp "$WORK/timed.txt" "$WORK/timed_merge.txt"
    wait_quiet
    timed "$WORK/timed.txt" $CLI build "$WORK/bd_build.chrys" "$(prefix "$n")" -q
    $PY - "$n" "$WORK/bd.json" "$WORK/bd_metrics.log" "$WORK/timed_merge.txt" "$WORK/timed.txt" "$RUNS/breakdown_$n.json" <<'EOF'
import json, sys
n, cli, log, tm, tb, dst = sys.argv[1:]
L = [json.loads(l) for l in open(log)]
paths = {}
for x in L:
    paths[x["path"]] = round(paths.get(x["path"], 0) + x["seconds"], 3)
import os
out = dict(check="chrysalis time breakdown (untimed extra run)", n=int(n), library=os.environ.get("LIBREV", ""),
           merge_wall_s=float(open(tm).read().split()[0]), cli_seconds=json.load(open(cli))["seconds"],
           search_seconds=round(sum(x["seconds"] for x in L), 3), searches=len(L), search_seconds_by_path=paths,
           build_same_file_wall_s=float(open(tb).read().split()[0]), ok=True)
print(json.dumps(out)); json.dump(out, open(dst, "w"), indent=1)
EOF
    rm -f "$WORK/bd.chrys" "$WORK/bd_build.chrys"
done

# ---- 2. the original Python merger (pure Python), really run at small N
for n in $PY_NS; do
    if todo python_original_$n; then
        ref=()   # a longer prefix's store serves too: the first N decisions depend on the first N records
        if [ "$n" -le 1000 ]; then ref=(--ref "$WORK/ours_t2_1000.chrys")
        elif [ "$n" -le 10000 ]; then ref=(--ref "$WORK/ours_t2_10000.chrys"); fi
        echo "== merge_python.py N=$n"
        wait_quiet
        timed "$WORK/timed.txt" $PY bench/merge_python.py run --data "$(prefix "$n")" --n "$n" "${ref[@]}" \
            --json "$RUNS/python_original_$n.json"
        note_others "$RUNS/python_original_$n.json"
    fi
done

# ---- 3. numpy linear merge, float32 and float64 (decisions compared with chrysalis)
for n in 1000 10000 100000; do
    for dt in float32 float64; do
        name=numpy_${dt}_$n
        todo "$name" || continue
        echo "== merge_numpy.py N=$n dtype=$dt (stops after ${NUMPY_LIMIT}s; the rest extrapolated)"
        wait_quiet
        timed "$WORK/timed.txt" $PY bench/merge_numpy.py run --data "$(prefix "$n")" --n "$n" --dtype $dt \
            --ref "$WORK/ours_t2_$n.chrys" --time-limit "$NUMPY_LIMIT" --json "$RUNS/$name.json" \
            || echo "   WARNING: numpy decisions differ from chrysalis (see $RUNS/$name.json)"
        note_others "$RUNS/$name.json"
    done
done

# ---- 4. FAISS / numpy the way merge_anchor.py does it. Its FAISS variant (IndexFlatIP, k=1, row
# overwritten in place) needs unit-length entries, i.e. the renormalising merger, so it is
# compared with `chrysalis merge --renormalize`; its numpy variant runs the original rule (--no-renorm).
for n in 1000 10000; do
    ours $n 2 --renormalize
    for impl in faiss_inplace numpy; do
        name=anchor_${impl}_$n
        todo "$name" || continue
        opt=(); [ "$impl" = numpy ] && opt=(--no-renorm)
        echo "== merge_anchor.py --impl $impl ${opt[*]} N=$n"
        wait_quiet
        timed "$WORK/timed.txt" $PY $TOOLS/merge_anchor.py --base "$(prefix "$n")" --n "$n" --impl "$impl" \
            "${opt[@]}" --threads 2 --json "$WORK/anchor.json"
        $PY - "$WORK/anchor.json" "$RUNS/$name.json" "$impl" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))[0]
tag = "renorm" if r["renorm"] else "norenorm"
out = dict(method=f"merge_anchor_{sys.argv[3]}_{tag}", n=r["n"], seconds=r["total_s"], extrapolated=False,
           merges=r["merges"], entries=r["entries"], threads=r["threads"], renorm=r["renorm"],
           scanned_rows=r["scanned_rows"], scan_GBps=r["scan_GBps"],
           ratio_base="chrysalis_t2_renorm" if r["renorm"] else "chrysalis_t2")
json.dump(out, open(sys.argv[2], "w"), indent=1)
EOF
        note_others "$RUNS/$name.json"
    done
done

# ---- 5. results and table (Python at 10k / 100k extrapolated from the cosine-call counts)
$PY bench/merge_numpy.py collect --runs "$RUNS" --results "$OUT/merge_results.json" \
    --table "$OUT/merge_table.txt" --data-meta "$DATA/meta.json" --librev "$LIBREV"

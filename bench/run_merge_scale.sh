#!/usr/bin/env bash
# run_merge_scale.sh: the merger-at-scale benchmark (issue "the merger at scale"). `chrysalis merge`
# with its default planner (exact Flat below 1,000 entries, then HNSW16,SQ8,RFlat) against the
# FAISS-based merger a roadmap user would write (bench/merge_faiss.py: IndexHNSWFlat or IndexFlatIP,
# k=1 per record, merged row overwritten in place, the original rule), in the same run, on seeded
# clustered 1024-d streams of 100,000 and 1,000,000 records. Reports wall time, peak RSS and
# decision agreement with the exact merger (`chrysalis merge --exact`; at 1M over the first
# PREFIX records, whose decisions do not depend on what follows).
#
#   bash bench/run_merge_scale.sh      (about 70 minutes on 2 cores; FAISS Flat at 100k is 25 of them)
#
# Environment: FORCE=1 redoes every measurement (otherwise each is skipped when its result file
# exists); FAISS_FLAT=0 skips the FAISS IndexFlatIP merger at 100k; FAISS_1M=0 skips the FAISS
# HNSW merger at 1M; PREFIX (default 300000) records of the 1M stream merged exactly for agreement.
# Writes bench/out/merge_scale/*.json, bench/out/merge_scale_results.json, bench/out/merge_scale_table.txt,
# bench/out/merge_scale_run.log. Data under bench/out/data (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
TOOLS=../shared/tools
OUT=bench/out
DATA=$OUT/data
RUNS=$OUT/merge_scale
WORK=$DATA/merge_scale_work
FORCE=${FORCE:-0}
FAISS_FLAT=${FAISS_FLAT:-1}
FAISS_1M=${FAISS_1M:-1}
PREFIX=${PREFIX:-300000}
mkdir -p "$RUNS" "$WORK"
exec > >(tee -a "$OUT/merge_scale_run.log") 2>&1
. bench/lib.sh
echo "== run_merge_scale.sh $(date '+%F %T')"
make -s cli
CLI=$WORK/chrysalis
cp build/release/chrysalis "$CLI" # a private copy: a rebuild during the run cannot change what is measured
LIBREV="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src include cli || echo -dirty) binary:$(sha256sum "$CLI" | cut -c1-12)"
echo "== library at $LIBREV, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, $(nproc) cores"

# ---- data: the 100k stream of the merger benchmark (1,000 clusters) and a 1M stream with 10,000
# clusters, same spreads and seed (about half of each merges at 0.85)
gen() { # gen DIR N CLUSTERS
    [ -f "$1/meta.json" ] && return 0
    echo "== generating $1"
    $PY $TOOLS/gen_clustered.py --n "$2" --d 1024 --nq 10 --gt-k 10 --clusters "$3" --s-min 0.25 --s-max 0.8 \
        --seed 20240611 --out "$1"
}
gen "$DATA/merge100k" 100000 1000
gen "$DATA/merge1m" 1000000 10000
B100K=$DATA/merge100k/base.fvecs
B1M=$DATA/merge1m/base.fvecs
BPRE=$WORK/prefix_$PREFIX.fvecs
[ -f "$BPRE" ] && [ "$(stat -c %s "$BPRE")" = $((PREFIX * 4100)) ] || head -c $((PREFIX * 4100)) "$B1M" > "$BPRE"

todo() { [ "$FORCE" = 1 ] || [ ! -f "$RUNS/$1.json" ]; }
# timed NAME CMD...: run CMD under /usr/bin/time; NAME.json gets wall, peak RSS, the command's JSON
# (its last line of stdout) and the CPU others used meanwhile (noise)
timed() {
    local name=$1; shift
    wait_quiet
    local c0 c1
    c0=$(awk '/^cpu /{print $2+$3+$4+$7+$8; exit}' /proc/stat)
    /usr/bin/time -f "%e %M %U %S" -o "$WORK/time.txt" "$@" > "$WORK/out.txt"
    c1=$(awk '/^cpu /{print $2+$3+$4+$7+$8; exit}' /proc/stat)
    $PY - "$name" "$WORK/time.txt" "$WORK/out.txt" "$RUNS/$name.json" "$((c1 - c0))" "$(getconf CLK_TCK)" "$LIBREV" <<'PYEOF'
import json, sys
name, tf, of, dst, jif, hz, rev = sys.argv[1:]
wall, rss, usr, sys_ = open(tf).read().split()[-4:]
lines = [l for l in open(of).read().splitlines() if l.startswith("{")]
r = json.loads(lines[-1]) if lines else {}
others = max(0.0, int(jif) / int(hz) - float(usr) - float(sys_))
out = dict(name=name, wall_s=float(wall), peak_rss_mib=round(int(rss) / 1024, 1), cpu_s=round(float(usr) + float(sys_), 1),
           others_cpu_s=round(others, 1), library=rev, out=r)
json.dump(out, open(dst, "w"), indent=1)
print(f"   {name}: {wall} s, peak RSS {int(rss) / 1024:.0f} MiB, others' CPU {others:.1f} s")
PYEOF
}
ours() { # ours NAME DATA [options...]: a fresh store
    local name=$1 data=$2; shift 2
    todo "$name" || return 0
    echo "== chrysalis merge $name $*"
    rm -f "$WORK/$name.chrys"
    timed "$name" "$CLI" merge "$WORK/$name.chrys" "$data" --json --metrics-log "$WORK/$name.metrics" "$@"
}
faiss() { # faiss NAME DATA N INDEX
    todo "$1" || return 0
    echo "== bench/merge_faiss.py $1 (--index $4, n $3)"
    timed "$1" $PY bench/merge_faiss.py --base "$2" --n "$3" --index "$4" --assign "$WORK/$1.npy"
}

# ---- 100,000 records
ours ours_100k "$B100K"
ours ours_100k_rep "$B100K"
ours exact_100k "$B100K" --exact
ours verify_100k "$B100K" --verify
faiss faiss_hnsw_100k "$B100K" 100000 hnsw
[ "$FAISS_FLAT" = 1 ] && faiss faiss_flat_100k "$B100K" 100000 flat
# ---- 1,000,000 records
ours ours_1m "$B1M"
ours exact_1m_prefix "$BPRE" --exact
[ "$FAISS_1M" = 1 ] && faiss faiss_hnsw_1m "$B1M" 1000000 hnsw

# ---- agreement and the table
$PY - "$RUNS" "$WORK" "$PREFIX" "$OUT/merge_scale_results.json" "$OUT/merge_scale_table.txt" <<'PYEOF'
import glob, json, os, sys
import numpy as np
sys.path.insert(0, "bench")
from merge_numpy import store_assignments, agreement
runs, work, prefix, res_path, table_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
R = {os.path.basename(p)[:-5]: json.load(open(p)) for p in glob.glob(runs + "/*.json")}
def assign(name):
    if os.path.exists(f"{work}/{name}.npy"):
        return np.load(f"{work}/{name}.npy")
    return store_assignments(f"{work}/{name}.chrys")[1]
ref = {"100k": assign("exact_100k") if "exact_100k" in R else None,
       "1m": assign("exact_1m_prefix") if "exact_1m_prefix" in R else None}
rows = []
for name, r in sorted(R.items()):
    scale = "1m" if "1m" in name else "100k"
    o = r["out"]
    row = dict(name=name, n=1000000 if scale == "1m" else 100000, wall_s=r["wall_s"], peak_rss_mib=r["peak_rss_mib"],
               others_cpu_s=r["others_cpu_s"], merges=o.get("merged", o.get("merges")), entries=o.get("entries"),
               library=r["library"])
    if "index_backed" in o:
        row.update(index_records=o["index_backed"]["records"], confirmed=o["index_backed"]["confirmed"],
                   verified=o["index_backed"]["verified"], disagreements=o["index_backed"]["disagreements"])
    if ref[scale] is not None and not name.startswith("exact"):
        a = assign(name)
        base = ref[scale]
        k = len(base)
        row["agreement"] = agreement(base, a[:k])
        row["agreement_over"] = k
    rows.append(row)
json.dump(dict(prefix=prefix, rows=rows), open(res_path, "w"), indent=1)
with open(table_path, "w") as f:
    f.write("# merger at scale: seeded clustered 1024-d streams (gen_clustered.py, seed 20240611, spreads 0.25..0.8;\n")
    f.write("# 100k: 1,000 clusters; 1M: 10,000 clusters), threshold 0.85, original rule, 2 cores.\n")
    f.write(f"# agreement: records whose entry was created by the same record as in `chrysalis merge --exact`\n")
    f.write(f"# (at 1M over the first {prefix:,} records). wall: whole process (read, merge, atomic save for ours).\n")
    f.write(f"# library {rows[0]['library'] if rows else ''}\n\n")
    f.write(f"{'run':18s} {'records':>9s} {'wall s':>8s} {'peak MiB':>9s} {'merges':>8s} {'entries':>8s} {'agreement':>10s} {'confirmed':>10s} {'verify':>14s}\n")
    for r in rows:
        ag = f"{100 * r['agreement']['rate']:.3f}%" if "agreement" in r else "-"
        ver = f"{r['disagreements']}/{r['verified']}" if r.get("verified") else "-"
        f.write(f"{r['name']:18s} {r['n'] if 'prefix' not in r['name'] else prefix:>9,} {r['wall_s']:>8.1f} {r['peak_rss_mib']:>9.0f} "
                f"{r['merges'] or 0:>8,} {r['entries'] or 0:>8,} {ag:>10s} {r.get('confirmed', '-')!s:>10s} {ver:>14s}\n")
print(open(table_path).read())
PYEOF

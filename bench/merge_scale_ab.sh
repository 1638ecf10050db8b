#!/usr/bin/env bash
# merge_scale_ab.sh: the merger-at-scale benchmark's 100k and 1M points, the default `chrysalis
# merge` of this tree against the one of an older commit, in the same run, alternating (the
# performance issue's "no slower than today"). Same streams as run_merge_scale.sh (gen_clustered
# seed 20240611, spreads 0.25-0.8; 100k around 1,000 centres, 1M around 10,000).
#
#   bash bench/merge_scale_ab.sh OLD_COMMIT [REPS_100K]      (about 35 minutes on 2 cores)
#
# Writes bench/out/merge_scale_ab/{old,new}_{100k_R,1m}.json (wall s, peak RSS, entries, merges)
# and bench/out/merge_scale_ab/table.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: merge_scale_ab.sh OLD_COMMIT [REPS_100K]}
REPS=${2:-2}
PY=/usr/bin/python3
TOOLS=../shared/tools
DATA=bench/out/data
OUT=bench/out/merge_scale_ab
WT=$OUT/old-tree
mkdir -p "$OUT"
export CHRYS_NO_PROGRESS=1
make -s cli
cp build/release/chrysalis "$OUT/new-chrysalis"
if [ ! -x "$OUT/old-chrysalis" ] || [ "$(cat "$OUT/old-commit" 2>/dev/null)" != "$OLD" ]; then
    rm -rf "$WT"
    git worktree add -f --detach "$WT" "$OLD" >/dev/null
    make -s -C "$WT" cli >/dev/null
    cp "$WT/build/release/chrysalis" "$OUT/old-chrysalis"
    echo "$OLD" > "$OUT/old-commit"
    git worktree remove --force "$WT"
fi
gen() { # gen DIR N CLUSTERS
    [ -f "$1/meta.json" ] && return 0
    $PY $TOOLS/gen_clustered.py --n "$2" --d 1024 --nq 10 --gt-k 10 --clusters "$3" --s-min 0.25 --s-max 0.8 \
        --seed 20240611 --out "$1" >/dev/null
}
gen "$DATA/merge100k" 100000 1000
gen "$DATA/merge1m" 1000000 10000
run() { # run NAME BIN DATA
    rm -f "$OUT/s.chrys"*
    /usr/bin/time -f "%e %M" -o "$OUT/time.txt" "$2" merge "$OUT/s.chrys" "$3" --json > "$OUT/out.json"
    $PY - "$1" "$OUT/time.txt" "$OUT/out.json" "$OUT/$1.json" <<'P'
import json, sys
name, tf, of, dst = sys.argv[1:]
wall, rss = open(tf).read().split()[-2:]
r = json.loads([l for l in open(of).read().splitlines() if l.startswith("{")][-1])
out = dict(name=name, wall_s=float(wall), peak_rss_mib=round(int(rss) / 1024), entries=r.get("entries"),
           merged=r.get("merged"), index=r.get("index"), index_backed=r.get("index_backed"))
json.dump(out, open(dst, "w"), indent=1)
print(f"{name:10s} {float(wall):8.1f} s  peak {int(rss) / 1024:6.0f} MiB  entries {r.get('entries')}")
P
    rm -f "$OUT/s.chrys"*
}
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')  new: $(git rev-parse --short HEAD)  old: $(git rev-parse --short "$OLD")"
    for r in $(seq "$REPS"); do
        run "old_100k_$r" "$OUT/old-chrysalis" "$DATA/merge100k/base.fvecs"
        run "new_100k_$r" "$OUT/new-chrysalis" "$DATA/merge100k/base.fvecs"
    done
    run new_1m "$OUT/new-chrysalis" "$DATA/merge1m/base.fvecs"
    run old_1m "$OUT/old-chrysalis" "$DATA/merge1m/base.fvecs"
} | tee "$OUT/table.txt"

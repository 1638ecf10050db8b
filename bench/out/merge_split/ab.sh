#!/usr/bin/env bash
# before/after of the merge.c split, second round: ABBA order, wall and user+sys seconds
set -u
cd "$(dirname "$0")/../../.."
export CHRYS_NO_PROGRESS=1
T=bench/out/tmp; mkdir -p $T
run() { # name version args...
  local name=$1 v=$2; shift 2
  rm -f $T/r_${name}_$v.chrys
  /usr/bin/time -f "%e %U %S" -o $T/time.txt bench/out/bin/chrysalis-$v merge $T/r_${name}_$v.chrys "$@" --json > $T/r_${name}_$v.json 2>$T/r.err
  echo "$name $v: wall/user/sys $(cat $T/time.txt) seconds_field $(grep -o '"seconds":[0-9.]*' $T/r_${name}_$v.json)"
}
for name in golden default exact; do
  case $name in
    golden) A=(examples/chrysalis/vectors.f32 --dim 1024 --meta examples/chrysalis/records.jsonl --threshold 0.85);;
    default) A=(bench/out/data/base.fvecs);;
    exact) A=(bench/out/data/base.fvecs --exact);;
  esac
  for order in "before after" "after before" "before after"; do
    for v in $order; do rm -f $T/r_${name}_$v.chrys; run $name $v "${A[@]}"; done
  done
  bench/out/bin/chrysalis-after export $T/r_${name}_before.chrys > $T/e1; bench/out/bin/chrysalis-after export $T/r_${name}_after.chrys > $T/e2
  cmp -s $T/e1 $T/e2 && echo "$name export same ($(wc -l < $T/e2) entries)" || echo "$name export DIFFERS"
done
# store bytes: two runs of the same binary differ where the run history's timestamp is
rm -f $T/s1.chrys $T/s2.chrys
bench/out/bin/chrysalis-before merge $T/s1.chrys examples/chrysalis/vectors.f32 --dim 1024 --meta examples/chrysalis/records.jsonl > /dev/null 2>&1
sleep 1.1
bench/out/bin/chrysalis-before merge $T/s2.chrys examples/chrysalis/vectors.f32 --dim 1024 --meta examples/chrysalis/records.jsonl > /dev/null 2>&1
echo "before vs before store: $(cmp -l $T/s1.chrys $T/s2.chrys | wc -l) bytes differ"
echo "before vs after golden store: $(cmp -l $T/r_golden_before.chrys $T/r_golden_after.chrys | wc -l) bytes differ"

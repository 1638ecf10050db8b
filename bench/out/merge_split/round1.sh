#!/usr/bin/env bash
# before/after of the merge.c split: golden legends and the 20k x 1024 clustered merge, interleaved
set -u
cd "$(dirname "$0")/../../.."
export CHRYS_NO_PROGRESS=1
T=bench/out/tmp; mkdir -p $T
tm() { local s=$(date +%s.%N); "$@" > $T/last.json 2>$T/last.err; local rc=$?; local e=$(date +%s.%N); echo "$(echo "$e - $s" | bc) rc=$rc"; }
for rep in 1 2 3; do
  for v in before after; do
    B=bench/out/bin/chrysalis-$v
    rm -f $T/g_$v.chrys
    echo "golden $v run $rep: $(tm $B merge $T/g_$v.chrys examples/chrysalis/vectors.f32 --dim 1024 --meta examples/chrysalis/records.jsonl --threshold 0.85 --json)"
    cp $T/last.json $T/g_$v.json
  done
done
for mode in default exact; do
  for rep in 1 2 3; do
    for v in before after; do
      B=bench/out/bin/chrysalis-$v
      rm -f $T/c_${mode}_$v.chrys
      X=""; [ $mode = exact ] && X=--exact
      echo "20k $mode $v run $rep: $(tm $B merge $T/c_${mode}_$v.chrys bench/out/data/base.fvecs --json $X)"
      cp $T/last.json $T/c_${mode}_$v.json
    done
  done
done
for f in g c_default c_exact; do
  s=$f; [ $f = g ] && s=g
  cmp -s $T/${s}_before.json $T/${s}_after.json && echo "$f json: same" || { echo "$f json differs"; diff $T/${s}_before.json $T/${s}_after.json | head; }
  bench/out/bin/chrysalis-after export $T/${s}_before.chrys > $T/${s}_before.export 2>&1
  bench/out/bin/chrysalis-after export $T/${s}_after.chrys > $T/${s}_after.export 2>&1
  cmp -s $T/${s}_before.export $T/${s}_after.export && echo "$f export: same ($(wc -l < $T/${s}_after.export) lines)" || echo "$f export differs"
  cmp $T/${s}_before.chrys $T/${s}_after.chrys && echo "$f store bytes: same" || echo "$f store bytes differ (history timestamps?)"
done
cat $T/g_after.json; echo; cat $T/c_default_after.json; echo; cat $T/c_exact_after.json

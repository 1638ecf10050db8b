#!/bin/bash
# same-run: old default, new default, --exact, numpy; N=10000, 20000 clustered seed 20240611
cd "$(dirname "$0")/.."
# data: /usr/bin/python3 ../shared/tools/gen_clustered.py --n 20000 --d 1024 --nq 10 --gt-k 1 --clusters 1000 --s-min 0.25 --s-max 0.8 --seed 20240611 --out /tmp/mg/c20k
# old = a build of the parent commit (switch at 1,000) in build/merger-old; run under flock /tmp/chrys-heavy.lock
D=/tmp/mg/c20k/base.fvecs
for n in 10000 20000; do
  head -c $((n*4100)) $D > /tmp/mg/p$n.fvecs
  for v in old new exact; do
    B=build/merger/chrysalis; X=""
    [ $v = old ] && B=build/merger-old/chrysalis
    [ $v = exact ] && X=--exact
    for t in 2; do
      rm -f /tmp/mg/s_$v$n.chrys*
      s=$(date +%s.%N); $B merge /tmp/mg/s_$v$n.chrys /tmp/mg/p$n.fvecs --threads $t $X --json > /tmp/mg/j_$v$n.json; e=$(date +%s.%N)
      echo "$v n=$n t=$t wall=$(echo "$e-$s"|bc) entries=$(grep -o '"entries":[0-9]*' /tmp/mg/j_$v$n.json)"
    done
  done
  s=$(date +%s.%N); /usr/bin/python3 bench/merge_numpy.py run --data /tmp/mg/p$n.fvecs --n $n --ref /tmp/mg/s_exact$n.chrys --json /tmp/mg/np$n.json > /tmp/mg/np$n.txt 2>&1; e=$(date +%s.%N)
  echo "numpy n=$n wall=$(echo "$e-$s"|bc)"; tail -3 /tmp/mg/np$n.txt
done

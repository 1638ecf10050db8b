#!/usr/bin/env bash
# CLI tests of the writer lock (STORE.lock): concurrent merges lose nothing, a second writer waits
# and says so once, --no-wait exits 5 naming the holder's pid and leaves the store unchanged, a
# holder killed with kill -9 leaves no stale lock, readers never wait, cache prune waits for
# another pruner (same lock) and for an SQLite writer (busy timeout), and a kill -9 loop at
# random moments of merge and of add leaves the old or the new store, never a broken one, and
# no temporary file after the next writer.
# Data is generated here (/usr/bin/python3 + numpy). The lock is held from outside with a small
# Python holder that speaks the lock file's protocol (flock + pid, docs/FORMAT.md).
# Usage: tests/cli/test_lock_cli.sh path/to/chrysalis. Ends with "N passed, N failed".
set -u
BIN=${1:-build/release/chrysalis}
T=$(mktemp -d)
HOLDER=
trap '[ -n "$HOLDER" ] && kill -9 $HOLDER 2>/dev/null; rm -rf "$T"' EXIT
export CHRYS_NO_PROGRESS=1
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PY=/usr/bin/python3
SEED=${TEST_SEED:-$(date +%s)}
RANDOM=$((SEED % 32768))
echo "lock CLI tests (seed $SEED)"

if ! $PY -c "import numpy" 2>/dev/null; then
    bad "numpy for the test data" "/usr/bin/python3 has no numpy"
    finish "lock CLI tests"
    exit 1
fi
$PY - "$T" <<'P'
import sys, numpy as np
t = sys.argv[1]
def jsonl(path, start, n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    with open(path, "w") as f:
        for i in range(n):
            f.write('{"id":%d,"embedding":[%s]}\n' % (start + i, ",".join("%.6g" % v for v in x[i])))
def fvecs(path, n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    a = np.empty((n, d + 1), dtype=np.int32)
    a[:, 0] = d
    a[:, 1:] = x.view(np.int32)
    a.tofile(path)
jsonl(t + "/base.jsonl", 0, 6000, 32, 1)
jsonl(t + "/a.jsonl", 6000, 3000, 32, 2)
jsonl(t + "/b.jsonl", 9000, 3000, 32, 3)
jsonl(t + "/c.jsonl", 20000, 3000, 32, 9)
fvecs(t + "/small.fvecs", 200, 32, 4)
fvecs(t + "/k0.fvecs", 4000, 64, 5)
fvecs(t + "/k1.fvecs", 1000, 64, 6)
fvecs(t + "/i0.fvecs", 40000, 64, 7)
fvecs(t + "/i1.fvecs", 500, 64, 8)
P
cat > "$T/hold.py" <<'P'
# hold.py STORE READY: take STORE.lock as chrysalis does, write our pid, touch READY, sleep until killed
import fcntl, os, sys, time
fd = os.open(sys.argv[1] + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, b"%d\n" % os.getpid())
open(sys.argv[2], "w").close()
time.sleep(600)
P
# hold STORE: start a holder of STORE's lock in the background; sets HOLDER to its pid
hold() {
    rm -f "$T/ready"
    $PY "$T/hold.py" "$1" "$T/ready" &
    HOLDER=$!
    for _ in $(seq 200); do [ -e "$T/ready" ] && return 0; sleep 0.05; done
    return 1
}
release() { kill -9 "$HOLDER" 2>/dev/null; wait "$HOLDER" 2>/dev/null; HOLDER=; }
# field NAME FILE: the first "NAME":N of `info --json`, or "bad" when info fails (corrupt store)
field() { "$BIN" info "$2" --json 2>/dev/null | grep -o "\"$1\":[0-9]*" | head -1 | cut -d: -f2 || true; }
ntmp() { ls "$1".tmp-* 2>/dev/null | wc -l; }

# 1. Two merges started at the same moment on one store: all records kept, two more runs.
S=$T/s.chrys
"$BIN" merge "$S" "$T/base.jsonl" -q
"$BIN" merge "$S" "$T/a.jsonl" -q 2>"$T/e1" &
p1=$!
"$BIN" merge "$S" "$T/b.jsonl" -q 2>"$T/e2" &
p2=$!
wait $p1; r1=$?
wait $p2; r2=$?
[ "$r1" -eq 0 ] && [ "$r2" -eq 0 ] && ok "two concurrent merges both succeed" || bad "two concurrent merges both succeed" "$r1 $r2"
n=$(field records "$S"); e=$(field entries "$S")
[ "$n" = 12000 ] && [ "$e" = 12000 ] && ok "concurrent merges: all 12000 records kept" || bad "concurrent merges: all 12000 records kept" "records $n entries $e"
expect "concurrent merges: history has 3 runs" 0 "history:  3 runs" -- "$BIN" info "$S"

# 1b. The same made deterministic: a holder has the lock while both start; both wait, say so
#     once, naming the holder's pid, and run one after the other once it lets go.
S=$T/d.chrys
"$BIN" merge "$S" "$T/base.jsonl" -q
hold "$S" && ok "holder has the lock" || bad "holder has the lock"
hp=$HOLDER
"$BIN" merge "$S" "$T/a.jsonl" -q 2>"$T/e1" &
p1=$!
"$BIN" merge "$S" "$T/b.jsonl" -q 2>"$T/e2" &
p2=$!
for _ in $(seq 200); do
    grep -q "waiting for" "$T/e1" && grep -q "waiting for" "$T/e2" && break
    sleep 0.05
done
w1=$(grep -c "waiting for $S: locked by pid $hp" "$T/e1"); w2=$(grep -c "waiting for $S: locked by pid $hp" "$T/e2")
[ "$w1" -eq 1 ] && [ "$w2" -eq 1 ] && ok "both writers wait, saying so once with the holder's pid" ||
    bad "both writers wait, saying so once with the holder's pid" "$(cat "$T/e1" "$T/e2")"
kill -0 $p1 2>/dev/null && kill -0 $p2 2>/dev/null && ok "both still waiting while held" || bad "both still waiting while held"
[ "$(field records "$S")" = 6000 ] && ok "store untouched while held" || bad "store untouched while held"
release
wait $p1; r1=$?
wait $p2; r2=$?
n=$(field records "$S")
[ "$r1" -eq 0 ] && [ "$r2" -eq 0 ] && [ "$n" = 12000 ] && ok "after the release both merge: 12000 records" ||
    bad "after the release both merge: 12000 records" "exit $r1 $r2, records $n"
expect "deterministic overlap: history has 3 runs" 0 "history:  3 runs" -- "$BIN" info "$S"
grep -c "waiting" "$T/e1" "$T/e2" | grep -qv ":1$" && bad "waiting line printed once only" "$(cat "$T/e1" "$T/e2")" || ok "waiting line printed once only"

# 2. --no-wait against a held lock: exit 5, the holder's pid, store unchanged; every writer.
hold "$S"
hp=$HOLDER
cp "$S" "$T/d.bak"
expect "merge --no-wait: exit 5 with the pid" 5 "$S: locked by pid $hp" -- "$BIN" merge "$S" "$T/small.fvecs" --no-wait
cmp -s "$S" "$T/d.bak" && ok "merge --no-wait left the store unchanged" || bad "merge --no-wait left the store unchanged"
expect "readers never wait: info" 0 "records" -- timeout 10 "$BIN" info "$S"
expect "readers never wait: search" 0 "id" -- timeout 10 "$BIN" search "$S" "$T/small.fvecs" -k 1
expect "readers never wait: export" 0 "" -- timeout 10 sh -c "'$BIN' export '$S' > '$T/x.jsonl'"
release
I=$T/i.chrys
"$BIN" build "$I" "$T/small.fvecs" -q
cp "$I" "$T/i.bak"
hold "$I"
hp=$HOLDER
expect "add --no-wait: exit 5" 5 "$I: locked by pid $hp" -- "$BIN" add "$I" "$T/small.fvecs" --no-wait
expect "build --force --no-wait: exit 5" 5 "locked by pid $hp" -- "$BIN" build "$I" "$T/small.fvecs" --force --no-wait
expect "retrain --no-wait: exit 5" 5 "locked by pid $hp" -- "$BIN" retrain "$I" --no-wait
cmp -s "$I" "$T/i.bak" && ok "index store unchanged by every refused writer" || bad "index store unchanged by every refused writer"
release
hold "$T/new.chrys"
expect "build (new) --no-wait: exit 5" 5 "locked by pid $HOLDER" -- "$BIN" build "$T/new.chrys" "$T/small.fvecs" --no-wait
[ ! -e "$T/new.chrys" ] && ok "refused build created no store" || bad "refused build created no store"
release
expect "exit 5 is documented in --help" 0 "5 store locked by another writer" -- "$BIN" --help
expect "--no-wait in merge --help" 0 "--no-wait" -- "$BIN" merge --help

# Two builds of one new store at once: one builds it, the other finds it and refuses (exit 2).
"$BIN" build "$T/nb.chrys" "$T/i1.fvecs" -q 2>"$T/e1" &
p1=$!
"$BIN" build "$T/nb.chrys" "$T/i1.fvecs" -q 2>"$T/e2" &
p2=$!
wait $p1; r1=$?
wait $p2; r2=$?
[ $((r1 + r2)) -eq 2 ] && [ "$(field count "$T/nb.chrys")" = 500 ] && ok "concurrent builds of one new store: one builds, one refuses" ||
    bad "concurrent builds of one new store: one builds, one refuses" "exit $r1 $r2: $(cat "$T/e1" "$T/e2")"

# 3. A holder killed with kill -9 leaves no stale lock: the next writer proceeds at once.
hold "$S"
kill -9 "$HOLDER"; wait "$HOLDER" 2>/dev/null; HOLDER=
expect "after kill -9 of the holder, --no-wait proceeds" 0 "merged 200 records" -- "$BIN" merge "$S" "$T/small.fvecs" --no-wait
"$BIN" merge "$S" "$T/c.jsonl" -q 2>/dev/null & # a real writer, killed mid-run
p1=$!
sleep 0.2
kill -9 $p1 2>/dev/null; wait $p1 2>/dev/null
expect "after kill -9 of a merging chrysalis, --no-wait proceeds" 0 "merged 200 records" -- "$BIN" merge "$S" "$T/small.fvecs" --no-wait
[ "$(ntmp "$S")" -eq 0 ] && ok "no temporary file left after the next writer" || bad "no temporary file left after the next writer"

# Cache prune: one pruner at a time (CACHE.lock), and it waits for an SQLite writer.
printf '{"id": %d, "text": "text number %d"}\n' $(seq 1 60 | awk '{print $1, $1}') > "$T/texts.jsonl"
"$BIN" embed "$T/texts.jsonl" --cache "$T/c.db" -o "$T/t.fvecs" 2>/dev/null
hold "$T/c.db"
expect "cache prune --no-wait: exit 5" 5 "$T/c.db: locked by pid $HOLDER" -- "$BIN" cache prune "$T/c.db" --max-entries 50 --no-wait
"$BIN" cache prune "$T/c.db" --max-entries 50 >"$T/o1" 2>"$T/e1" &
p1=$!
for _ in $(seq 200); do grep -q "waiting for" "$T/e1" && break; sleep 0.05; done
grep -q "waiting for $T/c.db: locked by pid $HOLDER" "$T/e1" && ok "cache prune waits for another pruner, saying so" ||
    bad "cache prune waits for another pruner, saying so" "$(cat "$T/e1")"
release
wait $p1; r1=$?
[ "$r1" -eq 0 ] && grep -q "removed 10 entries" "$T/o1" && ok "the waiting prune ran after the release" || bad "the waiting prune ran after the release" "$r1 $(cat "$T/o1" "$T/e1")"
$PY - "$T/c.db" "$T/sqlready" <<'P' &
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("UPDATE emb SET used = used")
open(sys.argv[2], "w").close()
time.sleep(1.5)
db.execute("COMMIT")
P
p2=$!
for _ in $(seq 200); do [ -e "$T/sqlready" ] && break; sleep 0.05; done
t0=$(date +%s.%N)
expect "cache prune waits for an SQLite writer (busy timeout), no SQLITE_BUSY" 0 "removed 20 entries" -- \
    "$BIN" cache prune "$T/c.db" --max-entries 30
t1=$(date +%s.%N)
wait $p2
awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a >= 0.5) }' && ok "cache prune waited for the SQLite transaction" ||
    bad "cache prune waited for the SQLite transaction" "took $(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}') s"

# 4. kill -9 at random moments of merge (merger save) and of add (index save): after each kill
#    `info` verifies every checksum and finds exactly the old or the new counts; a kill that
#    left a temporary file is followed by a writer run to the end, after which none remains.
#    rand_delay T: uniform in [0, 1.2 T] seconds.
rand_delay() { awk -v r=$RANDOM -v t="$1" 'BEGIN { printf "%.3f", r / 32767 * t * 1.2 }'; }
kills=0 old=0 new=0 corrupt=0 intmp=0 cleaned=0 notclean=0
kill_loop() { # kill_loop STORE FIELD ROUNDS COMMAND...: the store must exist; COMMAND adds records
    local st=$1 fld=$2 rounds=$3
    shift 3
    local t0 t1 tf cur want got
    t0=$(date +%s.%N); "$@" -q >/dev/null 2>&1; t1=$(date +%s.%N)
    tf=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    cur=$(field "$fld" "$st")
    local step=$((cur - prev_count))
    for _ in $(seq "$rounds"); do
        want=$((cur + step))
        "$@" -q >/dev/null 2>&1 &
        local p=$!
        sleep "$(rand_delay "$tf")"
        kill -9 $p 2>/dev/null
        wait $p 2>/dev/null
        kills=$((kills + 1))
        got=$(field "$fld" "$st")
        if [ "$got" = "$cur" ]; then old=$((old + 1))
        elif [ "$got" = "$want" ]; then new=$((new + 1)); cur=$want
        else corrupt=$((corrupt + 1)); echo "        after kill $kills: $fld '$got', expected $cur or $want"; fi
        if [ "$(ntmp "$st")" -gt 0 ]; then
            intmp=$((intmp + 1))
            "$@" -q >/dev/null 2>&1 && cur=$((cur + step))
            if [ "$(ntmp "$st")" -eq 0 ] && [ "$(field "$fld" "$st")" = "$cur" ]; then cleaned=$((cleaned + 1)); else notclean=$((notclean + 1)); fi
        fi
    done
    echo "        ($fld after the loop: $cur; one full run took $tf s)"
}
K=$T/k.chrys
"$BIN" merge "$K" "$T/k0.fvecs" -q
prev_count=$(field records "$K")
kill_loop "$K" records 14 "$BIN" merge "$K" "$T/k1.fvecs"
mk=$kills mo=$old mn=$new mc=$corrupt mt=$intmp
echo "kill loop (merge): $mk kills, $mo old, $mn new, $mc corrupt, $mt inside the write (temporary file left)"
IX=$T/ix.chrys
"$BIN" build "$IX" "$T/i0.fvecs" --index Flat -q
prev_count=$(field count "$IX")
kill_loop "$IX" count 14 "$BIN" add "$IX" "$T/i1.fvecs"
echo "kill loop (add): $((kills - mk)) kills, $((old - mo)) old, $((new - mn)) new, $((corrupt - mc)) corrupt, $((intmp - mt)) inside the write (temporary file left)"
echo "kill loop: $kills kills, $old old, $new new, $corrupt corrupt; $intmp left a temporary file, removed by the next writer in $cleaned"
[ "$kills" -ge 20 ] && [ "$corrupt" -eq 0 ] && [ $((old + new)) -eq "$kills" ] &&
    ok "kill loop: every kill left the old or the new store" || bad "kill loop: every kill left the old or the new store"
[ "$notclean" -eq 0 ] && [ "$cleaned" -eq "$intmp" ] && ok "kill loop: the next writer removed every temporary file" ||
    bad "kill loop: the next writer removed every temporary file" "$notclean not cleaned"
"$BIN" merge "$K" "$T/k1.fvecs" -q
"$BIN" add "$IX" "$T/i1.fvecs" -q
[ "$(ntmp "$K")" -eq 0 ] && [ "$(ntmp "$IX")" -eq 0 ] && ok "kill loop: no temporary file after a last writer" || bad "kill loop: no temporary file after a last writer"
expect "kill loop: merger store verifies" 0 "checksums ok" -- "$BIN" info "$K"
expect "kill loop: index store verifies" 0 "checksums ok" -- "$BIN" info "$IX"

finish "lock CLI tests"

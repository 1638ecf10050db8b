#!/usr/bin/env bash
# CLI tests: exit codes, messages that name the file and record, and the store left untouched by
# every failure. Usage: tests/cli/test_cli.sh path/to/chrysalis. Ends with "N passed, N failed".
set -u
BIN=${1:-build/release/chrysalis}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export CHRYS_NO_PROGRESS=1
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

py() { /usr/bin/python3 "$@"; }

# Small inputs, written without numpy: 4 vectors of dim 3 as JSONL and fvecs.
cat > "$T/a.jsonl" <<'J'
{"id": 1, "embedding": [1, 0, 0], "title": "x"}
{"id": 2, "embedding": [0, 1, 0]}
{"id": 3, "embedding": [0.9, 0.1, 0]}
{"id": 4, "embedding": [0, 0, 2], "title": "z"}
J
printf '{"embedding": [1, 0.05, 0]}\n{"embedding": [0, 0, 1]}\n' > "$T/q.jsonl"

# The shared library exports the public API and nothing else (no test hooks).
SO="$(dirname "$BIN")/libchrysalis.so"
if [ -f "$SO" ]; then
    syms=$(nm -D --defined-only "$SO" | awk '{print $3}')
    echo "$syms" | grep -qx chrys_index_new && ! echo "$syms" | grep -v '^chrys_[a-z]' | grep -q . &&
        ok "libchrysalis.so exports only chrys_* API symbols" ||
        bad "libchrysalis.so exports only chrys_* API symbols" "$(echo "$syms" | grep -v '^chrys_[a-z]' | head -5)"
else
    bad "libchrysalis.so exports only chrys_* API symbols" "$SO missing"
fi

expect "help" 0 "usage: chrysalis [--config FILE] COMMAND" -- "$BIN" --help
expect "help per command" 0 "usage: chrysalis search" -- "$BIN" search --help
expect "unknown command" 2 "unknown command" -- "$BIN" frobnicate
expect "version" 0 "simd:" -- "$BIN" version
expect "build" 0 "stored 4 vectors" -- "$BIN" build "$T/s.chrys" "$T/a.jsonl"
expect "build refuses to overwrite" 2 "already exists" -- "$BIN" build "$T/s.chrys" "$T/a.jsonl"
expect "info" 0 "vectors:  4" -- "$BIN" info "$T/s.chrys"
expect "info json" 0 '"count":4' -- "$BIN" info --json "$T/s.chrys"
out=$("$BIN" search "$T/s.chrys" "$T/q.jsonl" -k 2 --json)
# cos([1,.05,0],[1,0,0]) = 1/sqrt(1.0025) = 0.99875234; cos(., [.9,.1,0]) = .905/sqrt(1.0025*.82) = 0.99815839
want='{"query":0,"hits":[{"id":1,"score":0.998752356},{"id":3,"score":0.998158395}]}'
if [ "$(echo "$out" | head -1)" = "$want" ]; then ok "search json exact scores"; else bad "search json exact scores" "$out"; fi
expect "search human" 0 "id 4" -- "$BIN" search "$T/s.chrys" "$T/q.jsonl" -k 1
expect "search threshold" 0 '"hits":[{"id":1' -- "$BIN" search "$T/s.chrys" "$T/q.jsonl" -k 4 --threshold 0.99 --json
n=$("$BIN" search "$T/s.chrys" "$T/q.jsonl" -k 4 --threshold 0.99 --json | head -1 | grep -o '"id"' | wc -l)
[ "$n" -eq 2 ] && ok "threshold keeps only hits >= t" || bad "threshold keeps only hits >= t" "$n hits"
expect "search meta" 0 '"meta":{"title":"x"}' -- "$BIN" search "$T/s.chrys" "$T/q.jsonl" -k 1 --json --meta

cp "$T/s.chrys" "$T/orig.chrys"
unchanged() { cmp -s "$T/s.chrys" "$T/orig.chrys" && ok "$1: store unchanged" || bad "$1: store unchanged"; }
printf '{"embedding": [1, 2, 3]}\n{"embedding": [1, NaN, 3]}\n' > "$T/nan.jsonl"
expect "add NaN" 3 "nan.jsonl:2: malformed JSON" -- "$BIN" add "$T/s.chrys" "$T/nan.jsonl"
unchanged "add NaN"
printf '{"embedding": [1, 2, 3]}\n{"embedding": [1, 1e39, 3]}\n' > "$T/inf.jsonl"
expect "add Inf" 3 "inf.jsonl:2: embedding[1] is not a finite float32" -- "$BIN" add "$T/s.chrys" "$T/inf.jsonl"
unchanged "add Inf"
printf '{"id": 9, "embedding": [1, 2, 3]}\n{"id": 2, "embedding": [1, 2, 3]}\n' > "$T/dup.jsonl"
expect "add duplicate id" 3 "dup.jsonl: record 1: duplicate id 2" -- "$BIN" add "$T/s.chrys" "$T/dup.jsonl"
unchanged "add duplicate id"
printf '{"embedding": [1, 2, 3, 4]}\n' > "$T/d4.jsonl"
expect "add wrong dimension" 3 "dimension 4 but the store has 3" -- "$BIN" add "$T/s.chrys" "$T/d4.jsonl"
unchanged "add wrong dimension"
printf '{"embedding": [0, 0, 0]}\n' > "$T/zero.jsonl"
expect "add zero vector (cosine)" 3 "zero vector" -- "$BIN" add "$T/s.chrys" "$T/zero.jsonl"
unchanged "add zero vector"
expect "search zero query" 3 "zero query" -- "$BIN" search "$T/s.chrys" "$T/zero.jsonl"
expect "search wrong dimension" 3 "queries have dimension 4" -- "$BIN" search "$T/s.chrys" "$T/d4.jsonl"
expect "missing input" 1 "nope.fvecs: cannot open" -- "$BIN" add "$T/s.chrys" "$T/nope.fvecs"
unchanged "missing input"
expect "bad k" 2 "-k: expected" -- "$BIN" search "$T/s.chrys" "$T/q.jsonl" -k 0
expect "bad metric" 2 "--metric: expected" -- "$BIN" build "$T/x.chrys" "$T/a.jsonl" --metric foo

# add with generated ids continues after the largest id
printf '{"embedding": [1, 1, 1]}\n{"embedding": [1, 2, 1]}\n' > "$T/noid.jsonl"
expect "add generated ids" 0 "6 in store" -- "$BIN" add "$T/s.chrys" "$T/noid.jsonl"
out=$("$BIN" search "$T/s.chrys" "$T/noid.jsonl" -k 1 --json | grep -o '"id":[0-9]*' | tr '\n' ' ')
[ "$out" = '"id":5 "id":6 ' ] && ok "generated ids follow the largest id" || bad "generated ids follow the largest id" "$out"

# corrupted stores: truncation and a flipped byte give exit 4 and name the file
cp "$T/orig.chrys" "$T/c.chrys"
size=$(stat -c %s "$T/c.chrys")
head -c $((size - 10)) "$T/orig.chrys" > "$T/c.chrys"
expect "truncated store" 4 "c.chrys: header says" -- "$BIN" info "$T/c.chrys"
cp "$T/orig.chrys" "$T/c.chrys"
printf '\x55' | dd of="$T/c.chrys" bs=1 seek=200 conv=notrunc 2>/dev/null
expect "flipped byte in store" 4 "c.chrys" -- "$BIN" search "$T/c.chrys" "$T/q.jsonl"
cp "$T/c.chrys" "$T/c2.chrys"
expect "add to corrupt store" 4 "checksum" -- "$BIN" add "$T/c.chrys" "$T/noid.jsonl"
cmp -s "$T/c.chrys" "$T/c2.chrys" && ok "corrupt store left as it was" || bad "corrupt store left as it was"
printf 'not a store, just text that is longer than the sixty-four byte header of a store\n' > "$T/text.chrys"
expect "not a store" 4 "bad magic" -- "$BIN" info "$T/text.chrys"

# fvecs / npy / raw / stdin
if py -c "import numpy" 2>/dev/null; then
    py - "$T" <<'P'
import sys, numpy as np
t = sys.argv[1]
x = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
d = np.empty((50, 9), np.float32); d[:, 0] = np.array([8], np.int32).view(np.float32); d[:, 1:] = x
d.tofile(t + "/x.fvecs"); np.save(t + "/x.npy", x); np.save(t + "/x64.npy", x.astype(np.float64)); x.tofile(t + "/x.f32")
P
    expect "build fvecs" 0 "stored 50" -- "$BIN" build "$T/f.chrys" "$T/x.fvecs"
    expect "add npy" 0 "added 50" -- "$BIN" add "$T/f.chrys" "$T/x.npy"
    expect "add npy float64 note" 0 "float64 input converted" -- "$BIN" add "$T/f.chrys" "$T/x64.npy"
    expect "add raw" 0 "200 in store" -- "$BIN" add "$T/f.chrys" "$T/x.f32" --dim 8
    expect "raw needs dim" 3 "--dim" -- "$BIN" add "$T/f.chrys" "$T/x.f32"
    expect "stdin" 0 "250 in store" -- sh -c "cat '$T/x.fvecs' | '$BIN' add '$T/f.chrys' - --format fvecs"
    # a self-query finds itself first (ids 0..49 are the first copy, ties with later copies break by id)
    out=$("$BIN" search "$T/f.chrys" "$T/x.fvecs" -k 1 --json | head -3 | grep -o '"id":[0-9]*' | tr '\n' ' ')
    [ "$out" = '"id":0 "id":1 "id":2 ' ] && ok "self query" || bad "self query" "$out"
    # OpenBLAS is loaded at first use (src/dynlib.c): not by --version; by a large batch on the
    # scalar kernels (no block kernel there: the sgemm path); and without it (CHRYS_LIBBLAS naming
    # no file) that search runs on the library's own kernels, with the same results
    cat "$T/x.fvecs" "$T/x.fvecs" > "$T/q100.fvecs"
    n=$(LD_DEBUG=libs "$BIN" --version 2>&1 | grep -c 'calling init: .*libopenblas')
    [ "$n" -eq 0 ] && ok "no OpenBLAS at start" || bad "no OpenBLAS at start" "$n"
    n=$(CHRYS_SIMD=scalar LD_DEBUG=libs "$BIN" search "$T/f.chrys" "$T/q100.fvecs" -k 5 2>&1 >/dev/null | grep -c 'calling init: .*libopenblas')
    [ "$n" -ge 1 ] && ok "OpenBLAS loaded by the sgemm path" || bad "OpenBLAS loaded by the sgemm path" "$n"
    a=$(CHRYS_SIMD=scalar "$BIN" search "$T/f.chrys" "$T/q100.fvecs" -k 5 --json)
    b=$(CHRYS_SIMD=scalar CHRYS_LIBBLAS=/nonexistent/libopenblas.so.0 "$BIN" search "$T/f.chrys" "$T/q100.fvecs" -k 5 --json)
    [ "$(printf '%s\n' "$a" | wc -l)" -eq 100 ] && [ "$a" = "$b" ] && ok "same results without OpenBLAS" || bad "same results without OpenBLAS" "$(printf '%s\n' "$a" | head -2) / $(printf '%s\n' "$b" | head -2)"
    expect "l2 metric" 0 "stored 50" -- "$BIN" build "$T/l2.chrys" "$T/x.fvecs" --metric l2
    out=$("$BIN" search "$T/l2.chrys" "$T/x.fvecs" -k 1 --json | head -1)
    case "$out" in *'"id":0,"score":0}'*) ok "l2 self distance 0" ;; *) bad "l2 self distance 0" "$out" ;; esac
fi

# The library's structured error info names the row of a batch; the CLI adds the chunk's start,
# so a bad record past the first chunk (16,384 rows) is named by its number in the file, and
# nothing of the input is stored.
py - "$T" <<'P'
import struct, sys
t = sys.argv[1]
with open(t + "/big.f32", "wb") as f:
    for i in range(20000):
        f.write(struct.pack("<4f", *((0.0, 0.0, 0.0, 0.0) if i == 17001 else (1.0, i % 7, 2.0, i % 5))))
with open(t + "/mid.jsonl", "w") as f:
    for i in range(40):
        f.write('{"id": %d, "embedding": [%s]}\n' % (7 if i == 25 else 100 + i, "0, 0, 0" if i == 31 else "1, %d, 2" % i))
P
expect "build: zero vector in the second chunk named by its record" 3 "big.f32: record 17001: zero vector has no cosine similarity" -- \
    "$BIN" build "$T/big.chrys" "$T/big.f32" --dim 4
[ ! -e "$T/big.chrys" ] && ok "build: failed input leaves no store" || bad "build: failed input leaves no store"
"$BIN" build "$T/mid.chrys" "$T/a.jsonl" -q
cp "$T/mid.chrys" "$T/mid.bak"
printf '{"id": 7, "embedding": [1, 1, 1]}\n' > "$T/seven.jsonl"
"$BIN" add "$T/mid.chrys" "$T/seven.jsonl" -q && cp "$T/mid.chrys" "$T/mid.bak"
expect "add: duplicate id in the middle named by its record" 3 "mid.jsonl: record 25: duplicate id 7 (already in the index)" -- \
    "$BIN" add "$T/mid.chrys" "$T/mid.jsonl"
cmp -s "$T/mid.chrys" "$T/mid.bak" && ok "add: store unchanged after a bad record" || bad "add: store unchanged after a bad record"
expect "merge: zero vector named by record and id" 3 "mid2.jsonl: record 25 (id 7): zero vector" -- \
    sh -c "sed 's/\"id\": 7,/\"id\": 7, \"x\": 1,/; 26s/\\[1, 25, 2\\]/[0, 0, 0]/' '$T/mid.jsonl' > '$T/mid2.jsonl' && '$BIN' merge '$T/m.chrys' '$T/mid2.jsonl'"

# One option parser: errors name the option as typed, with its range; --dim is checked by every
# command that takes it; --threads means one thing everywhere; the embed options name themselves.
expect "search --dim checked" 2 "--dim: expected 1..16384, got '0'" -- "$BIN" search "$T/s.chrys" "$T/q.jsonl" --dim 0
expect "merge --dim checked" 2 "--dim: expected 1..16384, got '4x'" -- "$BIN" merge "$T/m2.chrys" "$T/a.jsonl" --dim 4x
expect "build --dim checked" 2 "--dim: expected 1..16384, got '99999'" -- "$BIN" build "$T/x.chrys" "$T/a.jsonl" --dim 99999
expect "build --threads range" 2 "--threads: expected 0..256, got '300'" -- "$BIN" build "$T/x.chrys" "$T/a.jsonl" --threads 300
expect "search --threads range" 2 "--threads: expected 0..256, got 'two'" -- "$BIN" search "$T/s.chrys" "$T/q.jsonl" --threads two
expect "search --threads 0 is all cores" 0 "query 1" -- "$BIN" search "$T/s.chrys" "$T/q.jsonl" --threads 0
expect "merge --embed-dim names itself" 2 "--embed-dim: expected 1..16384, got '0'" -- "$BIN" merge "$T/m3.chrys" "$T/a.jsonl" --embed --embed-dim 0
expect "embed --embed-batch names itself" 2 "--embed-batch: expected 1..100000, got '0'" -- "$BIN" embed "$T/a.jsonl" --embed-batch 0
expect "option=value" 0 '"query":0' -- "$BIN" search "$T/s.chrys" "$T/q.jsonl" --json --threshold=-1
expect "unknown option" 2 "unknown option '--bogus'" -- "$BIN" info "$T/s.chrys" --bogus
expect "missing value" 2 "--threshold needs a value" -- "$BIN" search "$T/s.chrys" "$T/q.jsonl" --threshold

# One record-id rule for every JSONL reader (vectors, embed's texts, merge's --meta): a number up
# to 2^53 or a string of digits above it, on every record or none.
printf '{"id": "9007199254740993", "text": "a"}\n{"id": 5, "text": "b"}\n' > "$T/tid.jsonl"
expect "embed: a string id above 2^53 is kept" 0 '"id":9007199254740993,' -- "$BIN" embed "$T/tid.jsonl" --embed-dim 8
printf '{"id": 1, "text": "a"}\n{"text": "b"}\n' > "$T/tmix.jsonl"
expect "embed: ids on every record or none" 3 "tmix.jsonl:2: \"id\" must be given on every record or on none" -- "$BIN" embed "$T/tmix.jsonl" --embed-dim 8
printf '{"id": 1.5, "text": "a"}\n' > "$T/tfrac.jsonl"
expect "embed: a fractional id is refused" 3 "tfrac.jsonl:1: \"id\" must be a non-negative integer" -- "$BIN" embed "$T/tfrac.jsonl" --embed-dim 8
py -c "import struct; open('$T/v2.f32','wb').write(struct.pack('<6f', 1, 0, 0, 0, 1, 0))"
printf '{"id": "9007199254740993"}\n{"id": 4}\n' > "$T/vmeta.jsonl"
expect "merge --meta: a string id above 2^53 is kept" 0 '"records":2' -- "$BIN" merge "$T/vm.chrys" "$T/v2.f32" --dim 3 --meta "$T/vmeta.jsonl" --json
expect "merge --meta: the id is the record's" 0 '"first_record":9007199254740993' -- "$BIN" export "$T/vm.chrys"
printf '{"id": 1}\n{"x": 2}\n' > "$T/vmix.jsonl"
expect "merge --meta: ids on every line or none" 3 "vmix.jsonl:2: \"id\" must be given on every record or on none" -- \
    "$BIN" merge "$T/vm2.chrys" "$T/v2.f32" --dim 3 --meta "$T/vmix.jsonl"

finish "cli"

#!/usr/bin/env bash
# CLI tests of `chrysalis embed`, `chrysalis cache` and `chrysalis merge --embed`.
# Usage: tests/cli/test_embed_cli.sh path/to/chrysalis. Ends with "N passed, N failed".
set -u
BIN=${1:-build/release/chrysalis}
T=$(mktemp -d)
SRV=
trap '[ -n "$SRV" ] && kill $SRV 2>/dev/null; rm -rf "$T"' EXIT
export CHRYS_NO_PROGRESS=1
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The Chrysalis texts of the bundled data, as JSONL {"id", "text"} (deterministic rows only).
grep '"provider": "deterministic"' examples/chrysalis/records.jsonl | head -300 |
    sed -E 's/^\{"id": ([0-9]+),.*"embedded_text": ("([^"\\]|\\.)*").*$/{"id": \1, "text": \2}/' > "$T/texts.jsonl"
n=$(wc -l < "$T/texts.jsonl")
[ "$n" -eq 300 ] && ok "test corpus" || bad "test corpus" "$n lines"
# distinct texts (skills repeat across runs): each is embedded once
u=$(python3 -c "import json,sys;print(len({json.loads(l)['text'] for l in open(sys.argv[1])}))" "$T/texts.jsonl")
reqs=$(( (u + 127) / 128 ))

expect "embed deterministic" 0 "$u by the provider" -- "$BIN" embed "$T/texts.jsonl" --cache "$T/c.db" -o "$T/e.fvecs"
# the vectors equal the stored Chrysalis rows bit for bit
python3 - "$T" <<'P' && ok "embed output equals the Chrysalis vectors" || bad "embed output equals the Chrysalis vectors"
import json, sys, struct
t = sys.argv[1]
ids = [json.loads(l)["id"] for l in open(t + "/texts.jsonl")]
raw = open("examples/chrysalis/vectors.f32", "rb").read()
out = open(t + "/e.fvecs", "rb").read()
assert len(out) == len(ids) * 4100
for k, i in enumerate(ids):
    assert out[k * 4100 + 4:(k + 1) * 4100] == raw[i * 4096:(i + 1) * 4096], i
P
expect "second run from the cache" 0 "300 from the cache (API calls saved), 0 by the provider" -- \
    "$BIN" embed "$T/texts.jsonl" --cache "$T/c.db" -o "$T/e2.fvecs"
cmp -s "$T/e.fvecs" "$T/e2.fvecs" && ok "cached vectors identical" || bad "cached vectors identical"
expect "embed jsonl keeps fields" 0 '"id":1,"text":"Name: Ada Lovelace' -- sh -c "'$BIN' embed '$T/texts.jsonl' --cache '$T/c.db' | head -1"
expect "cache stats" 0 "$u entries" -- "$BIN" cache stats "$T/c.db"
expect "cache prune" 0 "removed $((u - 100)) entries" -- "$BIN" cache prune "$T/c.db" --max-entries 100
expect "cache stats json" 0 '"entries":100' -- "$BIN" cache stats "$T/c.db" --json
printf '{"id": 1, "txt": "x"}\n' > "$T/bad.jsonl"
expect "missing text field" 3 'bad.jsonl:1: field "text" missing' -- "$BIN" embed "$T/bad.jsonl"
expect "bad provider" 2 "--provider: expected" -- "$BIN" embed "$T/texts.jsonl" --provider nope
expect "missing key variable" 2 "CHRYS_NO_SUCH_KEY" -- sh -c "'$BIN' embed '$T/texts.jsonl' --provider openai --base-url http://127.0.0.1:9/v1 --api-key-env CHRYS_NO_SUCH_KEY --retries 0 2>&1; exit 2"
# libcurl and SQLite are loaded at their first use (src/dynlib.c): a command that embeds nothing
# loads neither (nor OpenSSL, no longer linked), and a missing one is an error naming the file
libs=$(LD_DEBUG=libs "$BIN" --version 2>&1 | grep 'calling init' | grep -c 'libcurl\|libsqlite3\|libcrypto\|libssl')
[ "$libs" -eq 0 ] && ok "no libcurl, SQLite or OpenSSL at start" || bad "no libcurl, SQLite or OpenSSL at start" "$libs loaded"
expect "libcurl missing" 2 "cannot load /nonexistent/libcurl.so.4" -- env CHRYS_LIBCURL=/nonexistent/libcurl.so.4 \
    "$BIN" embed "$T/texts.jsonl" --provider openai --base-url http://127.0.0.1:9/v1 --retries 0 -o "$T/none.fvecs"
expect "SQLite missing" 2 "none.db: cannot open cache: cannot load /nonexistent/libsqlite3.so.0" -- \
    env CHRYS_LIBSQLITE=/nonexistent/libsqlite3.so.0 "$BIN" embed "$T/texts.jsonl" --cache "$T/none.db" -o "$T/none.fvecs"

# merge --embed: text records merged through the cache; the same texts as vectors give the same store
expect "merge --embed" 0 '"merged":' -- "$BIN" merge "$T/m.chrys" "$T/texts.jsonl" --embed --cache "$T/c.db" --json
python3 - "$T" <<'P'
import json, sys
t = sys.argv[1]
ids = [json.loads(l)["id"] for l in open(t + "/texts.jsonl")]
raw = open("examples/chrysalis/vectors.f32", "rb").read()
with open(t + "/v.jsonl", "w") as f:
    for i in ids:
        import struct
        v = struct.unpack("1024f", raw[i * 4096:(i + 1) * 4096])
        f.write(json.dumps({"id": i, "embedding": list(v)}) + "\n")
P
"$BIN" merge "$T/v.chrys" "$T/v.jsonl" -q
"$BIN" export "$T/m.chrys" --format fvecs -o "$T/m.fvecs"
"$BIN" export "$T/v.chrys" --format fvecs -o "$T/v.fvecs"
cmp -s "$T/m.fvecs" "$T/v.fvecs" && ok "merge --embed == merge of the stored vectors" || bad "merge --embed == merge of the stored vectors"

# an HTTP provider against the loopback server of the tests
python3 tests/http/fake_embeddings.py > "$T/port" &
SRV=$!
for _ in $(seq 50); do [ -s "$T/port" ] && break; sleep 0.1; done
PORT=$(head -1 "$T/port")
export CHRYS_FAKE_KEY=sk-cli-SECRET
expect "openai-compatible provider" 0 "$u by the provider in $reqs requests" -- \
    "$BIN" embed "$T/texts.jsonl" --provider openai --base-url "http://127.0.0.1:$PORT/v1" --model ok --embed-dim 16 \
    --api-key-env CHRYS_FAKE_KEY --cache "$T/h.db" -o "$T/h.fvecs"
expect "wrong dimensions are an error" 3 "returned 15 dimensions, expected 16" -- \
    "$BIN" embed "$T/texts.jsonl" --provider openai --base-url "http://127.0.0.1:$PORT/v1" --model wrongdim --embed-dim 16 \
    --api-key-env CHRYS_FAKE_KEY
out=$("$BIN" embed "$T/texts.jsonl" --provider openai --base-url "http://127.0.0.1:$PORT/v1" --model unauth --embed-dim 16 --api-key-env CHRYS_FAKE_KEY 2>&1)
case "$out" in *SECRET*) bad "key never printed" "$out" ;; *"HTTP 401"*) ok "401 reported, key never printed" ;; *) bad "401 reported" "$out" ;; esac
expect "fallback reported" 0 "FALLBACK" -- \
    "$BIN" embed "$T/texts.jsonl" --provider openai --base-url "http://127.0.0.1:$PORT/v1" --model badjson --embed-dim 16 \
    --api-key-env CHRYS_FAKE_KEY --fallback-deterministic -o "$T/f.fvecs"

# kill -9 in the middle of a concurrent run: the batches that completed stay in the cache, the
# rerun sends only the missing texts, and its output equals a clean run's
sstat() { python3 -c "import json,sys,urllib.request;d=json.loads(urllib.request.urlopen('http://127.0.0.1:$PORT/'+sys.argv[1]).read());print(d['requests'],d['texts'])" "$1"; }
kargs=(--provider openai --base-url "http://127.0.0.1:$PORT/v1" --model delay200 --embed-dim 16 --api-key-env CHRYS_FAKE_KEY --embed-batch 8 --concurrency 4)
"$BIN" embed "$T/texts.jsonl" "${kargs[@]}" -o "$T/clean.fvecs" 2> /dev/null
sstat reset > /dev/null
"$BIN" embed "$T/texts.jsonl" "${kargs[@]}" --cache "$T/k.db" -o "$T/k.fvecs" 2> /dev/null &
KP=$!
entries() { python3 -c "import sqlite3,sys;print(sqlite3.connect(sys.argv[1]).execute('select count(*) from emb').fetchone()[0])" "$1" 2> /dev/null || echo 0; }
for _ in $(seq 500); do [ "$(entries "$T/k.db")" -ge 16 ] && break; sleep 0.02; done # two batches committed
kill -9 $KP 2> /dev/null
wait $KP 2> /dev/null
kept=$(entries "$T/k.db")
if [ "$kept" -ge 16 ] && [ "$kept" -lt "$u" ]; then ok "killed run kept $kept of $u texts in the cache"; else bad "killed run kept completed batches" "kept $kept of $u"; fi
sstat reset > /dev/null
"$BIN" embed "$T/texts.jsonl" "${kargs[@]}" --cache "$T/k.db" -o "$T/k.fvecs" 2> /dev/null && ok "rerun after kill -9" || bad "rerun after kill -9"
read -r rq tx <<< "$(sstat stats)"
miss=$((u - kept))
[ "$tx" -eq "$miss" ] && [ "$rq" -eq $(( (miss + 7) / 8 )) ] && ok "rerun sent only the $miss missing texts in $rq requests" ||
    bad "rerun sent only the missing texts" "sent $tx texts in $rq requests, $miss were missing"
cmp -s "$T/clean.fvecs" "$T/k.fvecs" && ok "rerun output equals a clean run's" || bad "rerun output equals a clean run's"

for bad in 0 -1 99999999999999999999 abc ""; do
    expect "bad --concurrency '$bad' refused" 2 "--concurrency: expected requests in flight 1..256" -- \
        "$BIN" embed "$T/texts.jsonl" --concurrency "$bad" -o "$T/c.fvecs"
done
CHRYSALIS_EMBED_CONCURRENCY=0 expect "embed_concurrency 0 refused" 2 "embed_concurrency: expected requests in flight" -- \
    "$BIN" embed "$T/texts.jsonl" -o "$T/c.fvecs"

finish "embed cli"

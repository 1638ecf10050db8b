#!/usr/bin/env bash
# Benchmark of the embedding cache and providers (issue: incremental embeddings).
#  1. A corpus of 10,000 texts through an OpenAI-compatible provider (the loopback server of the
#     tests, tests/http/fake_embeddings.py) with a fresh cache: the first run makes exactly
#     ceil(10000/128) = 79 requests; the second run makes 0; after editing 10% of the texts, only
#     those 1,000 are re-embedded (ceil(1000/128) = 8 requests).
#  2. The deterministic provider's throughput on one core (bench_embed).
# Writes bench/out/embed_results.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s cli build/release/bench_embed
BIN=build/release/chrysalis
T=$(mktemp -d)
trap 'kill $SRV 2>/dev/null; rm -rf "$T"' EXIT
export CHRYS_NO_PROGRESS=1
out=bench/out/embed_results.txt
mkdir -p bench/out
python3 - "$T" <<'P'
import json, sys
t = sys.argv[1]
with open(t + "/a.jsonl", "w") as a, open(t + "/b.jsonl", "w") as b:
    for i in range(10000):
        a.write(json.dumps({"id": i, "text": "corpus text %d: Skill: salt %d - as demonstrated by legend %d" % (i, i % 211, i % 49)}) + "\n")
        txt = "corpus text %d: Skill: salt %d - as demonstrated by legend %d" % (i, i % 211, i % 49)
        if i % 10 == 3:
            txt += " (revised)"
        b.write(json.dumps({"id": i, "text": txt}) + "\n")
P
python3 tests/http/fake_embeddings.py > "$T/port" &
SRV=$!
for _ in $(seq 50); do [ -s "$T/port" ] && break; sleep 0.1; done
PORT=$(head -1 "$T/port")
export FAKE_KEY=sk-bench
stats() { python3 -c "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:$PORT/stats').read().decode())"; }
run() {
    local label=$1 input=$2
    local before after t0 t1
    before=$(stats | python3 -c "import json,sys;d=json.load(sys.stdin);print(d['requests'],d['texts'])")
    t0=$(date +%s.%N)
    "$BIN" embed "$input" --provider openai --base-url "http://127.0.0.1:$PORT/v1" --model ok --embed-dim 1024 \
        --api-key-env FAKE_KEY --cache "$T/cache.db" -o "$T/out.fvecs" 2> "$T/log"
    t1=$(date +%s.%N)
    after=$(stats | python3 -c "import json,sys;d=json.load(sys.stdin);print(d['requests'],d['texts'])")
    python3 - "$label" "$before" "$after" "$t0" "$t1" "$(cat "$T/log")" <<'P'
import sys
label, b, a, t0, t1, log = sys.argv[1:]
br, bt = map(int, b.split()); ar, at = map(int, a.split())
print("%-28s requests %4d  texts sent %6d  wall %.2f s   [%s]" % (label, ar - br, at - bt, float(t1) - float(t0), log.replace("chrysalis: ", "")))
P
}
{
    echo "== embedding cache, 10,000 texts, batches of 128, loopback OpenAI-compatible server"
    run "first run (empty cache)" "$T/a.jsonl"
    run "second run (same texts)" "$T/a.jsonl"
    run "10% of texts edited" "$T/b.jsonl"
    "$BIN" cache stats "$T/cache.db"
    echo "== concurrency: 10,000 texts, batches of 128, server answers each request after 200 ms (model delay200)"
    for c in 1 8; do
        python3 -c "import urllib.request;urllib.request.urlopen('http://127.0.0.1:$PORT/reset').read()"
        t0=$(date +%s.%N)
        "$BIN" embed "$T/a.jsonl" --provider openai --base-url "http://127.0.0.1:$PORT/v1" --model delay200 --embed-dim 1024 \
            --api-key-env FAKE_KEY --concurrency $c -o "$T/conc$c.fvecs" 2> /dev/null
        t1=$(date +%s.%N)
        stats | python3 -c "import json,sys;d=json.load(sys.stdin);print('concurrency %d: wall %.2f s, requests %d, texts %d, max in flight %d' % ($c, $t1 - $t0, d['requests'], d['texts'], d['max_inflight']))"
    done
    cmp "$T/conc1.fvecs" "$T/conc8.fvecs" && echo "concurrency 1 and 8: outputs identical byte for byte"
    echo "== deterministic provider (Chrysalis-compatible), one core"
    build/release/bench_embed 100000
} | tee "$out"

#!/usr/bin/env bash
# CLI tests of `chrysalis merge` / `export` / `info` on merger stores, on the bundled Chrysalis
# data: the original's figures reproduced, continuation across runs, legend files, bad records
# (store unchanged), --skip-invalid, metrics log and slow-search warning.
# Usage: tests/cli/test_merge_cli.sh path/to/chrysalis. Ends with "N passed, N failed".
set -u
BIN=${1:-build/release/chrysalis}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export CHRYS_NO_PROGRESS=1
EX=examples/chrysalis
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# 1. The bundled data at 0.85 gives the original merger's all_t085 figures.
expect "merge bundled data" 0 '"merged":288,"added":638,"skipped":0,"entries":638' -- \
    "$BIN" merge "$T/all.chrys" $EX/vectors.f32 --dim 1024 --meta $EX/records.jsonl --json
expect "histogram" 0 '"merged_count_histogram":{"1":420,"2":148,"3":70}' -- \
    "$BIN" merge "$T/all77.chrys" $EX/vectors.f32 --dim 1024 --meta $EX/records.jsonl --json --threshold 0.85
expect "stress pass 0.77" 0 '"entries":11' -- \
    "$BIN" merge "$T/t77.chrys" $EX/vectors.f32 --dim 1024 --meta $EX/records.jsonl --json --threshold 0.77
expect "info shows the merger" 0 "entries:  638 from 926 records (288 merged" -- "$BIN" info "$T/all.chrys"
n=$("$BIN" export "$T/all.chrys" | wc -l)
[ "$n" -eq 638 ] && ok "export jsonl: one line per entry" || bad "export jsonl: one line per entry" "$n"
"$BIN" export "$T/all.chrys" --format fvecs -o "$T/e.fvecs"
[ "$(stat -c %s "$T/e.fvecs")" -eq $((638 * 4100)) ] && ok "export fvecs" || bad "export fvecs"
expect "exported entry 0 merged rows 0 and 3" 0 '"id":0,"merged_count":2,"similarity_score":0.8985700' -- \
    sh -c "'$BIN' export '$T/all.chrys' | head -1"
expect "searchable" 0 "id 0 " -- "$BIN" search "$T/all.chrys" "$T/e.fvecs" -k 1

# 2. Two runs (first 500 rows, then the rest) end where one run ends.
head -c $((500 * 4096)) $EX/vectors.f32 > "$T/a.f32"
tail -c $((426 * 4096)) $EX/vectors.f32 > "$T/b.f32"
head -n 500 $EX/records.jsonl > "$T/a.jsonl"
tail -n 426 $EX/records.jsonl > "$T/b.jsonl"
"$BIN" merge "$T/two.chrys" "$T/a.f32" --dim 1024 --meta "$T/a.jsonl" -q
expect "second run continues" 0 '"entries":638' -- "$BIN" merge "$T/two.chrys" "$T/b.f32" --dim 1024 --meta "$T/b.jsonl" --json
"$BIN" export "$T/two.chrys" > "$T/two.jsonl"
"$BIN" export "$T/all.chrys" > "$T/one.jsonl"
cmp -s "$T/two.jsonl" "$T/one.jsonl" && ok "two runs == one run (entries, counts, vectors, metadata)" || bad "two runs == one run"
expect "history has two runs" 0 "history:  2 runs" -- "$BIN" info "$T/two.chrys"
cp "$T/two.chrys" "$T/two.bak"
expect "re-merging the same ids is refused" 3 "was already merged" -- "$BIN" merge "$T/two.chrys" "$T/b.f32" --dim 1024 --meta "$T/b.jsonl"
cmp -s "$T/two.chrys" "$T/two.bak" && ok "refused run left the store unchanged" || bad "refused run left the store unchanged"

# 3. Legend files (*_embeddings_full.json) built from the bundled data in the pipeline's shape.
if /usr/bin/python3 -c "import numpy" 2>/dev/null; then
    mkdir -p "$T/legends"
    /usr/bin/python3 - "$EX" "$T/legends" <<'P'
import json, sys, numpy as np
ex, out = sys.argv[1], sys.argv[2]
x = np.fromfile(ex + "/vectors.f32", dtype=np.float32).reshape(-1, 1024)
recs = [json.loads(l) for l in open(ex + "/records.jsonl")]
by = {}
for r in recs:
    by.setdefault(r["legend_order"], []).append(r)
for order, rows in sorted(by.items()):
    kb = [r for r in rows if r["kind"] == "knowledge_builder"]
    sb = [r for r in rows if r["kind"] == "skill_builder"]
    sk = [r for r in rows if r["kind"] == "skill"]
    def emb(r): return [float(v) for v in x[r["id"]]]
    doc = {"name": rows[0]["legend"], "processed_at": rows[0]["processed_at"], "run_count": 3,
           "knowledge_builder_runs": [{"source": "knowledge_builder", "run_number": r["run_number"], "embedding": emb(r),
                                       "descriptors": r["descriptors"], "descriptor_strategy": r["descriptor_strategy"]} for r in kb],
           "skill_builder_runs": []}
    for r in sb:
        doc["skill_builder_runs"].append({"source": "skill_builder", "run_number": r["run_number"], "embedding": emb(r),
            "descriptors": r["descriptors"], "salts_used": r["salts_used"], "descriptor_strategy": r["descriptor_strategy"],
            "skill_embeddings": [{"skill_name": s["skill_name"], "embedding": emb(s)} for s in sk if s["run_number"] == r["run_number"]]})
    json.dump(doc, open("%s/%02d_%s_embeddings_full.json" % (out, order, rows[0]["legend"].replace(" ", "_").lower()), "w"))
P
    expect "legend files: skills, skill merger 0.90" 0 '"merged":286,"added":346' -- \
        "$BIN" merge "$T/sk.chrys" "$T"/legends/*_embeddings_full.json --select skill --variant skill --json
    expect "legend files: skill merger default threshold" 0 '"variant":"skill","threshold":0.9' -- \
        "$BIN" info --json "$T/sk.chrys"
    expect "legend files: salts_used unioned" 0 '"salts_used":[' -- sh -c "'$BIN' export '$T/sk.chrys' | head -1"
    expect "legend files: kb only" 0 '"merged":0,"added":147' -- \
        "$BIN" merge "$T/kb.chrys" "$T"/legends/*_embeddings_full.json --select kb --json
    expect "legend files: all" 0 '"merged":288,"added":638' -- \
        "$BIN" merge "$T/lall.chrys" "$T"/legends/*_embeddings_full.json --json
    "$BIN" export "$T/lall.chrys" --format fvecs -o "$T/l.fvecs"
    cmp -s "$T/l.fvecs" "$T/e.fvecs" && ok "legend files give the same entries as the flat data" || bad "legend files give the same entries"
    # an empty skill embedding is skipped and counted
    /usr/bin/python3 - "$T/legends" <<'P'
import json, sys, glob
p = sorted(glob.glob(sys.argv[1] + "/*_embeddings_full.json"))[0]
d = json.load(open(p)); d["skill_builder_runs"][0]["skill_embeddings"][0]["embedding"] = []
json.dump(d, open(sys.argv[1] + "/empty_embeddings_full.json", "w"))
P
    expect "empty embedding skipped" 0 '"skipped":1' -- "$BIN" merge "$T/emp.chrys" "$T/legends/empty_embeddings_full.json" --json
fi

# 4. Bad records: a clear error naming the record, the store unchanged; --skip-invalid counts them.
printf '{"id": 1, "embedding": [1, 0, 0]}\n{"id": 2, "embedding": [1, "x", 0]}\n{"id": 3, "embedding": [0, 1, 0]}\n' > "$T/bad.jsonl"
printf '{"id": 10, "embedding": [1, 0, 0.1]}\n' > "$T/ok.jsonl"
"$BIN" merge "$T/s.chrys" "$T/ok.jsonl" -q
cp "$T/s.chrys" "$T/s.bak"
expect "wrong type names the line" 3 "bad.jsonl:2: embedding[1] is not a number" -- "$BIN" merge "$T/s.chrys" "$T/bad.jsonl"
cmp -s "$T/s.chrys" "$T/s.bak" && ok "bad record: store unchanged" || bad "bad record: store unchanged"
printf '{"id": 4, "embedding": [1, 0]}\n' > "$T/d2.jsonl"
expect "dimension mismatch" 3 "dimension 2 but" -- "$BIN" merge "$T/s.chrys" "$T/d2.jsonl"
printf '{"id": 5, "embedding": [0, 0, 0]}\n' > "$T/zero.jsonl"
expect "zero vector names the record" 3 "zero.jsonl: record 0 (id 5): zero vector" -- "$BIN" merge "$T/s.chrys" "$T/zero.jsonl"
cmp -s "$T/s.chrys" "$T/s.bak" && ok "failed runs: store unchanged" || bad "failed runs: store unchanged"
expect "skip-invalid counts" 0 '"records":3,"merged":1,"added":1,"skipped":1' -- "$BIN" merge "$T/s.chrys" "$T/bad.jsonl" --skip-invalid --json
"$BIN" build "$T/idx.chrys" "$T/ok.jsonl" -q
expect "index store is not a merger store" 2 "not a merger store" -- "$BIN" merge "$T/idx.chrys" "$T/ok.jsonl"
expect "bad threshold" 2 "--threshold" -- "$BIN" merge "$T/s.chrys" "$T/ok.jsonl" --threshold 2

# 5. Metrics log and slow-search warning.
expect "slow search warning" 0 "warning: a merge search took" -- \
    "$BIN" merge "$T/m.chrys" $EX/vectors.f32 --dim 1024 --slow-search 0.0000001 --metrics-log "$T/metrics.jsonl" -q
head -1 "$T/metrics.jsonl" | grep -q '"seconds":.*"entries":.*"ms_per_record":.*"path":"flat-' && ok "metrics log lines" || bad "metrics log lines" "$(head -1 "$T/metrics.jsonl")"

# 6. Streamed fvecs (read a chunk of 65,536 records at a time): errors name the record by its
# place in the file, also past the first chunk, and leave the store unchanged; the graph.
/usr/bin/python3 - "$T" <<'P'
import sys, numpy as np
t = sys.argv[1]
def fvecs(path, x):
    d = np.empty((x.shape[0], x.shape[1] + 1), np.float32)
    d[:, 0] = np.array([x.shape[1]], np.int32).view(np.float32)[0]; d[:, 1:] = x; d.tofile(path)
rng = np.random.default_rng(5)
x = rng.standard_normal((3, 3)).astype(np.float32)
fvecs(t + "/hdr.fvecs", x)
b = bytearray(open(t + "/hdr.fvecs", "rb").read()); b[16:20] = np.array([4], np.int32).tobytes()
open(t + "/hdr.fvecs", "wb").write(b)
x[2, 1] = np.nan; fvecs(t + "/nan.fvecs", x)
big = rng.standard_normal((65600, 4)).astype(np.float32); big[65541] = 0; fvecs(t + "/big.fvecs", big)
g = rng.standard_normal((3000, 16)).astype(np.float32); fvecs(t + "/g1.fvecs", g[:1500]); fvecs(t + "/g2.fvecs", g[1500:])
fvecs(t + "/small4.fvecs", rng.standard_normal((10, 4)).astype(np.float32))
P
expect "streamed: dimension header" 3 "hdr.fvecs: record 1 (byte offset 16): dimension 4 differs from 3" -- "$BIN" merge "$T/s3.chrys" "$T/hdr.fvecs"
expect "streamed: NaN" 3 "nan.fvecs: record 2 (byte offset 40): component 1 is NaN" -- "$BIN" merge "$T/s3.chrys" "$T/nan.fvecs"
[ ! -e "$T/s3.chrys" ] && ok "failed first run writes no store" || bad "failed first run writes no store"
"$BIN" merge "$T/s4.chrys" "$T/small4.fvecs" -q
cp "$T/s4.chrys" "$T/s4.bak"
expect "streamed: error in the second chunk" 3 "big.fvecs: record 65541 (id 65551): zero vector" -- "$BIN" merge "$T/s4.chrys" "$T/big.fvecs" --dim 4 --format fvecs
cmp -s "$T/s4.chrys" "$T/s4.bak" && ok "second-chunk error: store unchanged" || bad "second-chunk error: store unchanged"
# the switch point is given: the merger default (20,000 entries) is past this stream
expect "graph: planner switches during the merge" 0 "plan:     1000 vectors >= threshold 1000: HNSW32,SQ8,RFlat" -- \
    sh -c "'$BIN' merge '$T/gr.chrys' '$T/g1.fvecs' --auto-threshold 1000 -q && '$BIN' info '$T/gr.chrys'"
expect "graph: continued store, verify" 0 " of 1500 decisions differ from the exact scan" -- "$BIN" merge "$T/gr.chrys" "$T/g2.fvecs" --verify --ef 32
expect "graph: history of two runs" 0 "history:  2 runs" -- "$BIN" info "$T/gr.chrys"
expect "bad --ef" 2 "--ef: expected 1..100000" -- "$BIN" merge "$T/gr.chrys" "$T/g2.fvecs" --ef 0

finish "merge cli"

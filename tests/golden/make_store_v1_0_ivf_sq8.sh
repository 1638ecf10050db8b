#!/usr/bin/env bash
# Regenerates tests/golden/store_v1_0_ivf_sq8.chrys: an IVF4,SQ8 store as chrysalis wrote it
# before IVF,SQ8 became codes-only (float32 rows kept beside the codes; format 1.0). It was made
# with the CLI built from commit 729952f (`bash tests/golden/make_store_v1_0_ivf_sq8.sh BIN`);
# the committed file must never be regenerated with a later build: it pins the old layout.
# Data: 240 rows of dim 16, 4 seeded clusters, ids 500 + 7i, metadata {"i": i} on every third row.
set -euo pipefail
BIN=${1:?usage: $0 path/to/chrysalis}
OUT=${2:-tests/golden/store_v1_0_ivf_sq8.chrys}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 - "$TMP/rows.jsonl" <<'PY'
import json, random, sys
r = random.Random(20260301)
centres = [[r.uniform(-1, 1) for _ in range(16)] for _ in range(4)]
with open(sys.argv[1], "w") as f:
    for i in range(240):
        c = centres[i % 4]
        v = [round(x + r.gauss(0, 0.15), 6) for x in c]
        rec = {"id": 500 + 7 * i, "embedding": v}
        if i % 3 == 0:
            rec["i"] = i
        f.write(json.dumps(rec) + "\n")
PY
"$BIN" build "$OUT" "$TMP/rows.jsonl" --index IVF4,SQ8 --force -q

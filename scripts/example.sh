#!/usr/bin/env bash
# The main job on the bundled example data: installs what it needs, builds chrysalis, and merges
# the 926 Chrysalis legend embeddings (examples/chrysalis: vectors plus their records) the way the
# Chrysalis pipeline does (cosine >= 0.85: fold into the entry, else append), then prints the
# summary, the store's description, and the entries that absorbed other records.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
make -s -j"$(nproc)" cli
BIN=build/release/chrysalis
OUT=${OUT:-build/example}
mkdir -p "$OUT"
rm -f "$OUT/legends.chrys"
export CHRYS_NO_PROGRESS=1
"$BIN" merge "$OUT/legends.chrys" examples/chrysalis/vectors.f32 --dim 1024 \
    --meta examples/chrysalis/records.jsonl --threshold 0.85
"$BIN" info "$OUT/legends.chrys"
echo "the real-API entries that absorbed a second record (the rest are exact duplicates):"
"$BIN" export "$OUT/legends.chrys" | grep -E '"similarity_score":0\.(9[0-8]|[0-8][0-9])' | cut -c1-160

#!/usr/bin/env bash
# The main job on the bundled example data: installs what it needs, builds chrysalis, stores the
# 926 Chrysalis legend embeddings (examples/chrysalis) in one file, and finds each of the first
# rows' near-duplicates at the merger's threshold (cosine >= 0.85).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
make -s -j"$(nproc)" cli
BIN=build/release/chrysalis
OUT=${OUT:-build/example}
mkdir -p "$OUT"
export CHRYS_NO_PROGRESS=1
"$BIN" build --force "$OUT/legends.chrys" examples/chrysalis/vectors.f32 --dim 1024
"$BIN" info "$OUT/legends.chrys"
# Queries: rows 0..9 (Ada Lovelace: knowledge, skill-builder and skill vectors).
head -c $((10 * 1024 * 4)) examples/chrysalis/vectors.f32 > "$OUT/queries.f32"
echo "near-duplicates (cosine >= 0.85) of rows 0..9:"
"$BIN" search "$OUT/legends.chrys" "$OUT/queries.f32" --dim 1024 -k 5 --threshold 0.85

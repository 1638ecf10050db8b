#!/usr/bin/env python3
"""Write (or check) the compact copy of the original merger's golden outputs used by the tests.

Source: the golden outputs of the unmodified Python merger (Replicant-Partners/Chrysalis,
scripts/semantic_embedding_merger.py at 8d4b874), described in golden/README.md. The copy is
lossless for everything the tests compare:

  <p>.rows.i32, <p>.assign.i32, <p>.merged_count.i32, <p>.slot_first_row.i32   verbatim
  <p>.slots.json   per slot: similarity_score and descriptors_sorted / salts_used_sorted (as in
                   the source's "slots"; other fields dropped)
  <p>.final.delta  the final slot vectors that are not bit-identical to the input row that created
                   the slot: int32 count, then per vector int32 slot + 1024 float32 (little-endian).
                   Every other slot's final vector is exactly examples/chrysalis/vectors.f32 row
                   slot_first_row[slot], so the test rebuilds <p>.final.f32 from the two.
  final.sha256     SHA-256 of each source <p>.final.f32; the test checks its rebuilt copy against it.
  per_legend_{kb,sb,skills}.slot_first_row.i32 / .final.delta   the same for the per-legend pass.

Usage: make_golden.py SRC_GOLDEN_DIR [--check]   (SRC: the shared golden/ folder)
--check rebuilds every file in memory and compares it with the committed copy (exit 1 on any
difference), so CI can prove the copy still matches its source.
"""
import hashlib, json, os, struct, sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "golden")
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DIM = 1024
PASSES = ["kb_t085", "sb_t085", "skill_t085", "all_t085", "all_t077", "skill_skillmerger_t090"]
PER_LEGEND = {"per_legend_kb": "kb", "per_legend_sb": "sb", "per_legend_skills": "skills"}


def delta(final, first_rows, vecs):
    diff = [s for s in range(len(final)) if not np.array_equal(final[s], vecs[first_rows[s]])]
    b = struct.pack("<i", len(diff))
    for s in diff:
        b += struct.pack("<i", s) + final[s].astype("<f4").tobytes()
    return b


def build(src):
    vecs = np.fromfile(os.path.join(ROOT, "examples/chrysalis/vectors.f32"), dtype="<f4").reshape(-1, DIM)
    files, sums = {}, []
    for p in PASSES:
        for ext in ("rows", "assign", "merged_count", "slot_first_row"):
            with open(os.path.join(src, f"{p}.{ext}.i32"), "rb") as f:
                files[f"{p}.{ext}.i32"] = f.read()
        j = json.load(open(os.path.join(src, f"{p}.json")))
        keep = ("similarity_score", "descriptors_sorted", "salts_used_sorted")
        slots = [{k: s[k] for k in keep if k in s} for s in j["slots"]]
        files[f"{p}.slots.json"] = json.dumps({"slots": slots}, separators=(",", ":")).encode() + b"\n"
        raw = open(os.path.join(src, f"{p}.final.f32"), "rb").read()
        sums.append(f"{hashlib.sha256(raw).hexdigest()}  {p}.final.f32")
        final = np.frombuffer(raw, dtype="<f4").reshape(-1, DIM)
        first = np.frombuffer(files[f"{p}.slot_first_row.i32"], dtype="<i4")
        files[f"{p}.final.delta"] = delta(final, first, vecs)
    legends = json.load(open(os.path.join(src, "per_legend.json")))["legends"]
    for name, key in PER_LEGEND.items():
        first = [s["first_row"] for lg in legends[key] for s in lg["slots"]]
        files[f"{name}.slot_first_row.i32"] = np.array(first, dtype="<i4").tobytes()
        raw = open(os.path.join(src, f"{name}.final.f32"), "rb").read()
        sums.append(f"{hashlib.sha256(raw).hexdigest()}  {name}.final.f32")
        final = np.frombuffer(raw, dtype="<f4").reshape(-1, DIM)
        files[f"{name}.final.delta"] = delta(final, first, vecs)
    files["final.sha256"] = ("\n".join(sums) + "\n").encode()
    return files


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    files = build(sys.argv[1])
    if "--check" in sys.argv[2:]:
        bad = [n for n, b in files.items()
               if not os.path.exists(os.path.join(OUT, n)) or open(os.path.join(OUT, n), "rb").read() != b]
        print(f"golden copy: {len(files) - len(bad)} of {len(files)} files match the source" +
              (f"; differ: {', '.join(bad)}" if bad else ""))
        sys.exit(1 if bad else 0)
    os.makedirs(OUT, exist_ok=True)
    for n, b in files.items():
        with open(os.path.join(OUT, n), "wb") as f:
            f.write(b)
    print(f"wrote {len(files)} files, {sum(len(b) for b in files.values())} bytes")


if __name__ == "__main__":
    main()

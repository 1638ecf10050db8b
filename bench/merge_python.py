#!/usr/bin/python3
"""Pure-Python re-implementation of the original Chrysalis merger (the benchmark's baseline).

The loop of `EmbeddingMerger.merge_similar_embeddings` from Chrysalis'
scripts/semantic_embedding_merger.py, as docs/MERGER.md and
../shared/data/chrysalis/golden/README.md describe it (no upstream code is copied here):
embeddings are lists of Python floats; each new item is compared with every existing entry in
order by a pure-Python cosine (sum of products over sqrt(sum of squares) x sqrt(sum of squares));
the best starts at 0.0 and is replaced on a strictly greater similarity (first index wins ties);
if best >= threshold the entry becomes the weighted average 0.4 old + 0.6 new (weights divided by
their sum, no renormalisation), merged_count + 1, similarity_score and last_merged_at set and
descriptors unioned; otherwise the item is appended with merged_count 1.

  merge_python.py run    --data X.fvecs --n N [--ref STORE] --json OUT
  merge_python.py golden --json OUT      (926 real rows at 0.85 vs golden all_t085)

Times only the merge loop (the conversion of the input to lists of floats is excluded) and counts
the cosine calls, so larger N can be extrapolated: calls(N) x seconds per call.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from merge_numpy import (read_fvecs, store_assignments, compare_assign, histogram,  # noqa: E402
                         loadavg)

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "chrysalis"))


class EmbeddingMerger:
    """The original's merge step, re-implemented from its documented behaviour."""

    def __init__(self, similarity_threshold=0.85):
        self.similarity_threshold = similarity_threshold
        self.cosine_calls = 0

    def cosine_similarity(self, vec1, vec2):
        self.cosine_calls += 1
        if not vec1 or not vec2 or len(vec1) != len(vec2):
            return 0.0
        dot_product = sum(a * b for a, b in zip(vec1, vec2))
        magnitude1 = math.sqrt(sum(a * a for a in vec1))
        magnitude2 = math.sqrt(sum(b * b for b in vec2))
        if magnitude1 == 0 or magnitude2 == 0:
            return 0.0
        return dot_product / (magnitude1 * magnitude2)

    def weighted_average(self, vec1, vec2, weights=(0.4, 0.6)):
        # the original's average_embeddings([old, new], [0.4, 0.6]): weights divided by their
        # sum, accumulated element by element into a list of zeros (same arithmetic and cost)
        total = sum(weights)
        norm_w = [w / total for w in weights]
        out = [0.0] * len(vec1)
        for emb, w in zip((vec1, vec2), norm_w):
            for i in range(len(out)):
                out[i] += emb[i] * w
        return out

    def merge_similar_embeddings(self, existing_embeddings, new_embedding_data):
        """Returns (list, merged?, index of the entry the item went to)."""
        new_embedding = new_embedding_data.get("embedding", [])
        if not new_embedding:
            return existing_embeddings, False, None
        best_match_idx = None
        best_similarity = 0.0
        for idx, existing in enumerate(existing_embeddings):
            similarity = self.cosine_similarity(new_embedding, existing.get("embedding", []))
            if similarity > best_similarity:
                best_similarity = similarity
                best_match_idx = idx
        if best_match_idx is not None and best_similarity >= self.similarity_threshold:
            existing = existing_embeddings[best_match_idx]
            existing["embedding"] = self.weighted_average(existing["embedding"], new_embedding)
            existing["merged_count"] = existing.get("merged_count", 1) + 1
            existing["last_merged_at"] = new_embedding_data.get("processed_at", "")
            existing["similarity_score"] = best_similarity
            if "descriptors" in new_embedding_data:
                existing["descriptors"] = list(set(existing.get("descriptors", []))
                                               | set(new_embedding_data["descriptors"]))
            return existing_embeddings, True, best_match_idx
        new_embedding_data["merged_count"] = 1
        existing_embeddings.append(new_embedding_data)
        return existing_embeddings, False, len(existing_embeddings) - 1


def run_merger(X, threshold, progress=False):
    """X: float32 array; each row widened to Python floats (as the golden passes did)."""
    items = [{"row": i, "embedding": X[i].tolist(), "descriptors": [], "processed_at": ""}
             for i in range(len(X))]
    mg = EmbeddingMerger(threshold)
    entries = []
    assign = []
    merges = 0
    t0 = time.perf_counter()
    for k, it in enumerate(items):
        entries, merged, idx = mg.merge_similar_embeddings(entries, it)
        merges += merged
        assign.append(idx)
        if progress and (k + 1) % 200 == 0:
            print(f"  {k + 1}/{len(items)} records, {len(entries)} entries, "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    secs = time.perf_counter() - t0
    return dict(seconds=secs, cosine_calls=mg.cosine_calls, merges=merges, entries=len(entries),
                us_per_cosine=1e6 * secs / max(1, mg.cosine_calls)), np.array(assign), entries


def cmd_run(a):
    X = read_fvecs(a.data, a.n)
    la = loadavg()
    r, assign, _ = run_merger(X, a.threshold, progress=a.progress)
    out = dict(method="python_original", n=len(X), threshold=a.threshold, loadavg1_start=la,
               seconds=round(r["seconds"], 3), extrapolated=False, cosine_calls=r["cosine_calls"],
               us_per_cosine=round(r["us_per_cosine"], 2), merges=r["merges"], entries=r["entries"],
               merged_count_histogram=histogram(assign))
    if a.ref:
        # the store may hold a longer prefix of the same stream: the first N decisions only
        # depend on the first N records, so its first N assignments are chrysalis's at N
        _, ref = store_assignments(a.ref)
        out["agreement_vs_chrysalis"] = compare_assign(assign, ref[:len(assign)])
        out["agreement_vs_chrysalis"]["ref_store"] = a.ref
    print(json.dumps(out), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if not a.ref or out["agreement_vs_chrysalis"]["equal"] else 1


def cmd_golden(a):
    g = os.path.join(SHARED, "golden")
    X = np.fromfile(os.path.join(SHARED, "vectors.f32"), dtype="<f4").reshape(-1, 1024)
    rows = np.fromfile(os.path.join(g, "all_t085.rows.i32"), dtype="<i4")
    gassign = np.fromfile(os.path.join(g, "all_t085.assign.i32"), dtype="<i4")
    gmc = np.fromfile(os.path.join(g, "all_t085.merged_count.i32"), dtype="<i4")
    gfinal = np.fromfile(os.path.join(g, "all_t085.final.f32"), dtype="<f4").reshape(-1, 1024)
    summ = json.load(open(os.path.join(g, "summary.json")))["all_t085"]
    r, assign, entries = run_merger(X[rows], 0.85)
    final = np.array([e["embedding"] for e in entries])
    mc = np.array([e["merged_count"] for e in entries])
    out = dict(check="golden all_t085 (926 real rows, threshold 0.85)",
               slots=r["entries"], merges=r["merges"], expected_slots=int(len(gmc)),
               expected_merges=int(len(rows) - len(gmc)),
               assignments_equal=bool(np.array_equal(assign, gassign)),
               merged_counts_equal=bool(np.array_equal(mc, gmc)),
               final_max_abs_diff=float(np.max(np.abs(final - gfinal))) if final.shape == gfinal.shape else None,
               cosine_calls=r["cosine_calls"], expected_cosine_calls=summ.get("cosine_calls"),
               seconds=round(r["seconds"], 3), us_per_cosine=round(r["us_per_cosine"], 2),
               original_seconds=summ.get("python_seconds_retimed_min_of_2"),
               original_us_per_cosine=round(summ.get("us_per_cosine"), 2), loadavg1_start=loadavg())
    out["ok"] = bool(out["slots"] == out["expected_slots"] and out["merges"] == out["expected_merges"]
                     and out["assignments_equal"] and out["merged_counts_equal"]
                     and out["final_max_abs_diff"] is not None and out["final_max_abs_diff"] < 1e-6
                     and out["cosine_calls"] == out["expected_cosine_calls"])
    print(json.dumps(out), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if out["ok"] else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("--data", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--threshold", type=float, default=0.85)
    p.add_argument("--ref", help="chrysalis store of the same stream, >= N records (first N decisions compared)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json")
    p = sub.add_parser("golden")
    p.add_argument("--json")
    a = ap.parse_args()
    return {"run": cmd_run, "golden": cmd_golden}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

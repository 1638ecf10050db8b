"""A pure-Python oracle of the original Chrysalis merger's semantics (EmbeddingMerger, SkillMerger
of scripts/semantic_embedding_merger.py), written from docs/MERGER.md and the golden data notes,
independent of the package. It does the same per-call Python rescans as the original, so it also
reproduces the original's cost (bench/bench_python.py times it).

Semantics: cosine = sum of products / (sqrt(sum of squares) * sqrt(sum of squares)) in double
precision, 0.0 for an empty vector, a length mismatch (logged) or a zero magnitude; the best entry
starts at index -1 with score 0.0 and moves on a strictly greater score (first index wins ties);
merge when best >= threshold: embedding := weighted average with weights [0.4, 0.6] divided by
their sum, accumulated element by element into zeros; merged_count := old (default 1) + 1;
EmbeddingMerger also sets last_merged_at, similarity_score and the descriptor union (when the new
item has descriptors); SkillMerger sets similarity_score and the salts_used union. Otherwise the
item gets merged_count 1 and is appended.
"""
import logging
import math

log = logging.getLogger("oracle")


class OracleStats:
    def __init__(self):
        self.cosines = 0


def cosine(a, b, stats=None):
    if stats is not None:
        stats.cosines += 1
    if not a or not b:
        return 0.0
    if len(a) != len(b):
        log.warning("Dimension mismatch in cosine_similarity: vec1=%d dims, vec2=%d dims", len(a), len(b))
        return 0.0
    num = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    if na == 0 or nb == 0:
        return 0.0
    return num / (na * nb)


def average(embs, weights=None):
    if not embs:
        return []
    if not isinstance(embs, list):
        raise TypeError("embeddings")
    if not all(isinstance(e, list) for e in embs):
        raise TypeError("embeddings")
    if weights is None:
        weights = [1.0] * len(embs)
    if not isinstance(weights, list):
        raise TypeError("weights")
    if len(weights) != len(embs):
        raise ValueError("counts")
    tot = sum(weights)
    if tot < 1e-10:
        weights = [1.0] * len(embs)
        tot = len(embs)
    ws = [w / tot for w in weights]
    out = [0.0] * len(embs[0])
    for e, w in zip(embs, ws):
        for i in range(len(out)):
            out[i] += e[i] * w
    return out


def best_of(entries, emb, stats=None):
    best_i, best_s = -1, 0.0
    for i, e in enumerate(entries):
        v = e.get("embedding", [])
        if not v:
            continue
        s = cosine(emb, v, stats)
        if s > best_s:
            best_i, best_s = i, s
    return best_i, best_s


def merge_embedding(entries, item, threshold, stats=None):
    """One EmbeddingMerger.merge_similar_embeddings call: returns (entries, merged, best_index)."""
    emb = item.get("embedding", [])
    if not emb:
        return entries, False, None
    i, s = best_of(entries, emb, stats)
    if s >= threshold and i >= 0:
        e = entries[i]
        e["embedding"] = average([e["embedding"], emb], [0.4, 0.6])
        e["merged_count"] = e.get("merged_count", 1) + 1
        e["last_merged_at"] = item.get("processed_at", "")
        e["similarity_score"] = s
        if "descriptors" in item:
            e["descriptors"] = list(set(e.get("descriptors", [])) | set(item.get("descriptors", [])))
        return entries, True, i
    item["merged_count"] = 1
    entries.append(item)
    return entries, False, len(entries) - 1


def merge_skills(existing, new_skills, threshold, stats=None):
    out = existing.copy()
    added = merged = skipped = 0
    for sk in new_skills:
        emb = sk.get("embedding", [])
        if not emb:
            skipped += 1
            continue
        i, s = best_of(out, emb, stats)
        if s >= threshold and i >= 0:
            e = out[i]
            e["embedding"] = average([e["embedding"], emb], [0.4, 0.6])
            e["merged_count"] = e.get("merged_count", 1) + 1
            e["similarity_score"] = s
            e["salts_used"] = list(set(e.get("salts_used", [])) | set(sk.get("salts_used", [])))
            merged += 1
        else:
            sk["merged_count"] = 1
            out.append(sk)
            added += 1
    return {"merged_skills": out, "added_count": added, "merged_count": merged, "skipped_count": skipped}

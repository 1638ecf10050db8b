"""Drop-in replacements for the Chrysalis pipeline's EmbeddingMerger and SkillMerger.

Same methods, arguments, return values and side effects on the caller's lists and dicts as
scripts/semantic_embedding_merger.py; change the import line and get the same entries, faster.

How it is fast without changing a decision. The original compares each new embedding with every
stored embedding list in pure Python. Here the entries are kept in the library between calls,
tied to the caller's objects: for each position of the list, the entry dict, its "embedding" list
object and that list's length. Each call revalidates those three by identity in one C pass and
re-reads only the positions that changed. Two screens then find the few entries that can
possibly be the best or reach the threshold, with rigorous error bounds:
  1. int8 codes (one byte per component, scale per entry): each entry's exact cosine lies within
     approx -/+ bound, bound = sq/2 |e|_1 + se/2 |q|_1 + dim sq se / 4 (+ float32 rounding); an
     entry whose upper bound is below the threshold or below the best lower bound is out. If at
     most 64 remain they are the candidates.
  2. otherwise the float32 unit rows in a Flat inner-product index (libchrysalis), searched with
     the threshold minus eps = 1.2e-7 x (dim + 16) (the float32 rounding of a unit-vector cosine),
     keeping every hit within 2 eps of the best.
Only the candidates are scored with the original's exact double-precision cosine (the same Python
expressions, evaluated in C in the same order, checked against sum() at import), and the winner
is chosen exactly as the original's loop does (strictly greater from 0.0, first index wins ties).

Outside edits the cache notices (each is re-read on the next call):
  - a different list object, or the same list with items appended, inserted, removed or replaced;
  - an entry dict replaced by another object at a position;
  - an entry's "embedding" key rebound to another object, or deleted;
  - an embedding list whose length changed (append, extend, pop, del, slice assignment that
    changes the length).
Not noticed: an element of an embedding list assigned in place with the length unchanged
(entry["embedding"][i] = x). After such an edit call invalidate() (or assign a new list).
Anything the fast path does not handle (entries that are not dicts, embeddings that are not lists
of floats/ints, a subclass overriding cosine_similarity) runs the original algorithm in Python.
"""
from __future__ import annotations

import logging
import math
import sys
from typing import Any, Dict, List, Optional, Tuple

from . import _chrysalis as _c
from ._chrysalis import DimensionError

logger = logging.getLogger(__name__)


def _choose_sum_mode() -> None:
    """Find how this interpreter's sum() adds floats (in order up to 3.11, compensated from 3.12)
    and check the C emulation against sum() itself; if neither matches, the exact fast paths are
    off and the Python code runs."""
    import random
    rng = random.Random(12345)
    samples = [[rng.uniform(-1, 1) * 10 ** rng.randint(-8, 8) for _ in range(rng.randint(1, 300))]
               for _ in range(200)]
    samples += [[1e16, 1.0, -1e16], [0.1] * 10, [-0.0], [-0.0, -0.0], [1e308, 1e308, -1e308]]
    for mode in (0, 1):
        if all(_same(_c._pysum(s, mode), sum(s)) for s in samples):
            _c._set_sum_mode(mode)
            return
    _c._set_sum_mode(-1)


def _same(a: float, b: float) -> bool:
    return (a == b and math.copysign(1, a) == math.copysign(1, b)) or (a != a and b != b)


_choose_sum_mode()


def _py_cosine(vec1, vec2) -> float:
    """The original's arithmetic in Python (lengths already equal, both non-empty)."""
    dot_product = sum(a * b for a, b in zip(vec1, vec2))
    magnitude1 = math.sqrt(sum(a * a for a in vec1))
    magnitude2 = math.sqrt(sum(b * b for b in vec2))
    if magnitude1 == 0 or magnitude2 == 0:
        return 0.0
    return dot_product / (magnitude1 * magnitude2)


def _mismatch_message(n1: int, n2: int) -> str:
    return f"Dimension mismatch in cosine_similarity: vec1={n1} dims, vec2={n2} dims"


class EmbeddingMerger:
    """Merge embeddings using semantic similarity (drop-in for Chrysalis' EmbeddingMerger).

    EmbeddingMerger(similarity_threshold=0.85, strict=False)

    similarity_threshold: cosine similarity at or above which a new embedding is merged into the
    most similar existing one. strict=True (not in the original): raise chrysalis.DimensionError
    when an existing embedding has a different length from the new one, instead of logging a
    warning and scoring the pair 0.0 (which silently never merges after a provider switch).
    """

    def __init__(self, similarity_threshold: float = 0.85, strict: bool = False) -> None:
        self.similarity_threshold = similarity_threshold
        self.strict = strict
        self._cache = _c._DropinCache()

    # -- the original's public methods ------------------------------------------------------
    def cosine_similarity(self, vec1: List[float], vec2: List[float]) -> float:
        """Cosine similarity of two vectors: 0.0 if either is empty, 0.0 with a logged warning if
        their lengths differ, 0.0 if either has zero magnitude; computed in double precision exactly
        as the original (same sums in the same order)."""
        if not vec1 or not vec2:
            return 0.0
        if len(vec1) != len(vec2):
            logger.warning(_mismatch_message(len(vec1), len(vec2)))
            return 0.0
        r = _c.cosine_exact(vec1, vec2)
        if r is not None:
            return r
        return _py_cosine(vec1, vec2)

    def average_embeddings(self, embeddings: List[List[float]], weights: Optional[List[float]] = None
                           ) -> List[float]:
        """Weighted average of embeddings (default equal weights). Weights are divided by their sum
        (all 1.0 if the sum is below 1e-10). Raises TypeError if embeddings (or any of them) or
        weights is not a list, ValueError if their counts differ. Returns [] for no embeddings. The
        result equals the original's element for element."""
        if not embeddings:
            return []
        if not isinstance(embeddings, list):
            raise TypeError(f"embeddings must be a list, got {type(embeddings)}")
        if not all(isinstance(emb, list) for emb in embeddings):
            raise TypeError("All embeddings must be lists")
        if weights is None:
            weights = [1.0] * len(embeddings)
        if not isinstance(weights, list):
            raise TypeError(f"weights must be a list, got {type(weights)}")
        if len(embeddings) != len(weights):
            raise ValueError(
                f"Number of embeddings ({len(embeddings)}) must match "
                f"number of weights ({len(weights)})"
            )
        total_weight = sum(weights)
        if total_weight < 1e-10:
            weights = [1.0] * len(embeddings)
            total_weight = len(embeddings)
        normalized_weights = [w / total_weight for w in weights]
        r = _c.average_exact(embeddings, normalized_weights)
        if r is not None:
            return r
        dim = len(embeddings[0])
        averaged = [0.0] * dim
        for emb, weight in zip(embeddings, normalized_weights):
            for i in range(dim):
                averaged[i] += emb[i] * weight
        return averaged

    def merge_similar_embeddings(self, existing: List[Dict[str, Any]], new: Dict[str, Any]
                                 ) -> Tuple[List[Dict[str, Any]], bool]:
        """Merge new into the most similar entry of existing when their cosine similarity reaches the
        threshold, else append it. Returns (existing, was_merged); existing is mutated in place.
        Merged entry: embedding := 0.4 old + 0.6 new (not renormalised), merged_count + 1,
        last_merged_at := new's processed_at (or ""), similarity_score := the similarity, and the
        union of descriptors when new has them. Appended: new gets merged_count = 1. An entry
        without an embedding is never matched; a new item without one returns (existing, False)."""
        new_embedding = new.get("embedding", [])
        if not new_embedding:
            return existing, False
        best_match_idx, best_similarity = self._find_best(existing, new_embedding)
        if best_similarity >= self.similarity_threshold and best_match_idx >= 0:
            existing_entry = existing[best_match_idx]
            existing_emb = existing_entry["embedding"]
            merged_emb = self.average_embeddings([existing_emb, new_embedding], weights=[0.4, 0.6])
            existing[best_match_idx]["embedding"] = merged_emb
            existing[best_match_idx]["merged_count"] = existing_entry.get("merged_count", 1) + 1
            existing[best_match_idx]["last_merged_at"] = new.get("processed_at", "")
            existing[best_match_idx]["similarity_score"] = best_similarity
            if "descriptors" in new:
                old_descriptors = set(existing_entry.get("descriptors", []))
                new_descriptors = set(new.get("descriptors", []))
                existing[best_match_idx]["descriptors"] = list(old_descriptors | new_descriptors)
            return existing, True
        new["merged_count"] = 1
        existing.append(new)
        return existing, False

    # -- beyond the original ----------------------------------------------------------------
    def invalidate(self) -> None:
        """Forget the cached entries (the next call re-reads every entry). Needed only after editing
        an element of an embedding list in place without changing its length."""
        self._cache.invalidate()

    def cache_stats(self) -> Dict[str, int]:
        """positions, indexed, resynced (entries read into the library), searches, candidates
        (entries scored exactly), dimensions."""
        return self._cache.stats()

    def find_best(self, existing: List[Dict[str, Any]], new_embedding: List[float]) -> Tuple[int, float]:
        """(best index, best similarity) as the original's loop finds them: -1 and 0.0 when no entry
        has a positive similarity. (The merge itself only needs the best among entries that can
        reach the threshold, which is cheaper.)"""
        return self._find_best(existing, new_embedding, -2.0)

    def _find_best(self, existing, new_embedding, screen=None) -> Tuple[int, float]:
        thr = self.similarity_threshold if screen is None else screen
        r = None
        if (type(self).cosine_similarity is EmbeddingMerger.cosine_similarity
                and isinstance(thr, (int, float)) and not isinstance(thr, bool)):
            r = self._cache.step(existing, new_embedding, float(thr))
        if r is None:
            return self._scan(existing, new_embedding)
        candidates, mismatched = r
        if mismatched:
            n1 = len(new_embedding)
            if self.strict:
                raise DimensionError(f"the new embedding has {n1} dimensions but {len(mismatched)} existing "
                                     f"entries have another length (first: {mismatched[0]})")
            for n2 in mismatched:
                logger.warning(_mismatch_message(n1, n2))
        best_match_idx = -1
        best_similarity = 0.0
        for idx in candidates:
            similarity = self.cosine_similarity(new_embedding, existing[idx]["embedding"])
            if similarity > best_similarity:
                best_similarity = similarity
                best_match_idx = idx
        return best_match_idx, best_similarity

    def _scan(self, existing, new_embedding) -> Tuple[int, float]:
        """The original loop, in Python (the path for input the cache does not handle)."""
        best_match_idx = -1
        best_similarity = 0.0
        for idx, entry in enumerate(existing):
            existing_emb = entry.get("embedding", [])
            if not existing_emb:
                continue
            if self.strict and len(existing_emb) != len(new_embedding):
                raise DimensionError(f"entry {idx} has {len(existing_emb)} dimensions, the new embedding "
                                     f"{len(new_embedding)}")
            similarity = self.cosine_similarity(new_embedding, existing_emb)
            if similarity > best_similarity:
                best_similarity = similarity
                best_match_idx = idx
        return best_match_idx, best_similarity


class SkillMerger:
    """Merge skills using semantic similarity of their embeddings (drop-in for Chrysalis' SkillMerger).

    SkillMerger(similarity_threshold=0.90, strict=False); the threshold lives in
    self.embedding_merger.similarity_threshold, as in the original.
    """

    def __init__(self, similarity_threshold: float = 0.90, strict: bool = False) -> None:
        self.embedding_merger = EmbeddingMerger(similarity_threshold, strict=strict)

    @property
    def similarity_threshold(self) -> float:
        """The embedding merger's threshold (a convenience; the original has only embedding_merger)."""
        return self.embedding_merger.similarity_threshold

    @similarity_threshold.setter
    def similarity_threshold(self, v: float) -> None:
        self.embedding_merger.similarity_threshold = v

    def merge_skills(self, existing_skills: List[Dict[str, Any]], new_skills: List[Dict[str, Any]]
                     ) -> Dict[str, Any]:
        """Merge each new skill, in order, into a copy of existing_skills (the list is copied; its
        dicts are shared and updated in place). Returns {"merged_skills", "added_count",
        "merged_count", "skipped_count"}. A merged skill: embedding := 0.4 old + 0.6 new,
        merged_count + 1, similarity_score, salts_used := the union. A skill without an embedding is
        skipped and counted."""
        merged_skills = existing_skills.copy()
        added = 0
        merged = 0
        skipped = 0
        em = self.embedding_merger
        find = getattr(em, "_find_best", None)
        for new_skill in new_skills:
            new_emb = new_skill.get("embedding", [])
            if not new_emb:
                skipped += 1
                continue
            if find is not None:
                best_match_idx, best_similarity = find(merged_skills, new_emb)
            else:  # an embedding_merger of another class: the original loop through its methods
                best_match_idx, best_similarity = -1, 0.0
                for idx, existing_skill in enumerate(merged_skills):
                    existing_emb = existing_skill.get("embedding", [])
                    if not existing_emb:
                        continue
                    similarity = em.cosine_similarity(new_emb, existing_emb)
                    if similarity > best_similarity:
                        best_similarity = similarity
                        best_match_idx = idx
            if best_similarity >= em.similarity_threshold and best_match_idx >= 0:
                existing_skill = merged_skills[best_match_idx]
                merged_emb = em.average_embeddings([existing_skill["embedding"], new_emb], weights=[0.4, 0.6])
                merged_skills[best_match_idx]["embedding"] = merged_emb
                merged_skills[best_match_idx]["merged_count"] = existing_skill.get("merged_count", 1) + 1
                merged_skills[best_match_idx]["similarity_score"] = best_similarity
                old_salts = set(existing_skill.get("salts_used", []))
                new_salts = set(new_skill.get("salts_used", []))
                merged_skills[best_match_idx]["salts_used"] = list(old_salts | new_salts)
                merged += 1
            else:
                new_skill["merged_count"] = 1
                merged_skills.append(new_skill)
                added += 1
        return {
            "merged_skills": merged_skills,
            "added_count": added,
            "merged_count": merged,
            "skipped_count": skipped,
        }

"""The drop-in merger reproduces the original's golden passes over the 926 bundled legend rows
(examples/chrysalis/vectors.f32, tests/data/chrysalis/golden): the slot of every input, merged
counts, first rows, similarity scores (bit for bit), descriptor / salt unions, and the final
vectors (the original's doubles rounded to float32, equal bit for bit)."""
import hashlib
import json
import os

import numpy as np
import pytest

import chrysalis
from conftest import GOLDEN, RECORDS, VECTORS

PASSES = {"kb_t085": 0.85, "sb_t085": 0.85, "skill_t085": 0.85, "all_t085": 0.85, "all_t077": 0.77,
          "skill_skillmerger_t090": 0.90}


def i32(name):
    return np.fromfile(os.path.join(GOLDEN, name), dtype="<i4")


@pytest.fixture(scope="module")
def data():
    X = np.fromfile(VECTORS, dtype="<f4").reshape(-1, 1024)
    recs = [json.loads(line) for line in open(RECORDS)]
    return X, recs


def final_vectors(name, X):
    first = i32(f"{name}.slot_first_row.i32")
    F = X[first].copy()
    with open(os.path.join(GOLDEN, f"{name}.final.delta"), "rb") as f:
        n = int(np.frombuffer(f.read(4), "<i4")[0])
        for _ in range(n):
            slot = int(np.frombuffer(f.read(4), "<i4")[0])
            F[slot] = np.frombuffer(f.read(4096), "<f4")
    sums = dict(line.split()[::-1] for line in open(os.path.join(GOLDEN, "final.sha256")) if line.strip())
    key = next(k for k in sums if os.path.basename(k).startswith(name + ".final"))
    assert hashlib.sha256(F.astype("<f4").tobytes()).hexdigest() == sums[key]
    return F


@pytest.mark.parametrize("name", list(PASSES))
def test_golden_pass(data, name):
    X, recs = data
    thr = PASSES[name]
    rows = i32(f"{name}.rows.i32")
    skill = name.startswith("skill_skillmerger")
    if skill:
        items = [{"skill_name": recs[r]["skill_name"], "embedding": X[r].astype(np.float64).tolist(),
                  "salts_used": list(recs[r]["salts_used"] or []), "row": int(r)} for r in rows]
        out = chrysalis.SkillMerger(thr).merge_skills([], items)
        entries = out["merged_skills"]
        assert out["added_count"] + out["merged_count"] == len(rows)
    else:
        items = [{"row": int(r), "embedding": X[r].astype(np.float64).tolist(),
                  "descriptors": list(recs[r]["descriptors"] or []),
                  "processed_at": recs[r]["processed_at"]} for r in rows]
        m = chrysalis.EmbeddingMerger(thr)
        entries = []
        for it in items:
            m.merge_similar_embeddings(entries, it)
    # slot of each input: the entry whose first row created it, or into which it merged
    first = i32(f"{name}.slot_first_row.i32")
    assert [e["row"] for e in entries] == first.tolist()
    assert [e["merged_count"] for e in entries] == i32(f"{name}.merged_count.i32").tolist()
    slots = json.load(open(os.path.join(GOLDEN, f"{name}.slots.json")))["slots"]
    for e, s in zip(entries, slots):
        assert e.get("similarity_score") == s["similarity_score"]
        if "descriptors_sorted" in s:
            assert sorted(e["descriptors"]) == s["descriptors_sorted"]
        if "salts_used_sorted" in s:
            assert sorted(e["salts_used"]) == s["salts_used_sorted"]
    F = final_vectors(name, X)
    got = np.array([e["embedding"] for e in entries], dtype=np.float64).astype(np.float32)
    assert np.array_equal(got, F)

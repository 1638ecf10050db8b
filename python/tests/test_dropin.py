"""The drop-in EmbeddingMerger / SkillMerger against the pure-Python oracle of the original:
identical decisions and equal lists on random, clustered, near-threshold and tie data; the
original's argument checks and side effects; every outside edit the cache notices."""
import copy
import logging
import math

import numpy as np
import pytest

import chrysalis
import oracle
from conftest import clustered, unit


def items_from(X, rng=None, descriptors=True):
    out = []
    for i, v in enumerate(X):
        d = {"row": i, "embedding": [float(x) for x in v], "processed_at": f"t{i}"}
        if descriptors:
            d["descriptors"] = [f"d{i % 5}", f"e{i % 3}"]
        out.append(d)
    return out


def canon(entries):
    """Entries with the unions (set order is arbitrary upstream) sorted."""
    out = []
    for e in entries:
        e = dict(e)
        for k in ("descriptors", "salts_used"):
            if k in e:
                e[k] = sorted(e[k])
        out.append(e)
    return out


def run_both(items, threshold):
    a, b = copy.deepcopy(items), copy.deepcopy(items)
    ref, got = [], []
    m = chrysalis.EmbeddingMerger(threshold)
    dec_ref, dec_got = [], []
    for x, y in zip(a, b):
        ref, merged, _ = oracle.merge_embedding(ref, x, threshold)
        dec_ref.append(merged)
        out, merged2 = m.merge_similar_embeddings(got, y)
        assert out is got
        dec_got.append(merged2)
    return ref, got, dec_ref, dec_got, m


def assert_same(ref, got, dec_ref, dec_got):
    assert dec_got == dec_ref
    assert len(got) == len(ref)
    for i, (r, g) in enumerate(zip(canon(ref), canon(got))):
        assert r == g, f"entry {i} differs"
        # lists equal element for element (not merely close)
        assert all(x == y for x, y in zip(r["embedding"], g["embedding"]))


# -- cosine_similarity and average_embeddings ------------------------------------------------------

def test_cosine_matches_oracle_bitwise(rng):
    m = chrysalis.EmbeddingMerger()
    for dim in (1, 2, 3, 17, 128, 1024):
        for _ in range(20):
            a = (rng.standard_normal(dim) * 10.0 ** rng.integers(-5, 5)).tolist()
            b = (rng.standard_normal(dim) * 10.0 ** rng.integers(-5, 5)).tolist()
            assert m.cosine_similarity(a, b) == oracle.cosine(a, b)
    assert m.cosine_similarity([1, 2, 3], [3, 2, 1]) == oracle.cosine([1, 2, 3], [3, 2, 1])
    assert m.cosine_similarity((1.0, 2.0), (2.0, 1.0)) == oracle.cosine((1.0, 2.0), (2.0, 1.0))


def test_cosine_edge_cases(caplog):
    m = chrysalis.EmbeddingMerger()
    assert m.cosine_similarity([], [1.0]) == 0.0
    assert m.cosine_similarity([1.0], []) == 0.0
    assert m.cosine_similarity([0.0, 0.0], [1.0, 0.0]) == 0.0
    assert math.isnan(m.cosine_similarity([float("nan"), 1.0], [1.0, 0.0]))
    with caplog.at_level(logging.WARNING):
        assert m.cosine_similarity([1.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert any("Dimension mismatch in cosine_similarity: vec1=2 dims, vec2=3 dims" in r.message
               for r in caplog.records)


def test_average_checks_and_values(rng):
    m = chrysalis.EmbeddingMerger()
    assert m.average_embeddings([]) == []
    assert m.average_embeddings(()) == []
    with pytest.raises(TypeError):
        m.average_embeddings(([1.0], [2.0]))
    with pytest.raises(TypeError):
        m.average_embeddings([[1.0], (2.0,)])
    with pytest.raises(TypeError):
        m.average_embeddings([[1.0], [2.0]], weights=(0.5, 0.5))
    with pytest.raises(ValueError):
        m.average_embeddings([[1.0], [2.0]], weights=[1.0])
    assert m.average_embeddings([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]) == [0.5, 0.5, 0.0]
    assert m.average_embeddings([[1.0, 2.0], [3.0, 4.0]], [0.0, 0.0]) == oracle.average([[1.0, 2.0], [3.0, 4.0]], [0.0, 0.0])
    assert m.average_embeddings([[1, 2], [3, 4]], [1, 3]) == oracle.average([[1, 2], [3, 4]], [1, 3])
    with pytest.raises(IndexError):
        m.average_embeddings([[1.0, 2.0], [3.0]])
    for n in (1, 2, 3, 5):
        embs = [rng.standard_normal(257).tolist() for _ in range(n)]
        ws = rng.random(n).tolist()
        got = m.average_embeddings(embs, ws)
        ref = oracle.average(embs, ws)
        assert got == ref and all(x == y for x, y in zip(got, ref))
        assert m.average_embeddings(embs) == oracle.average(embs)
    # -0.0 stays as the original's 0.0 + (-0.0) = 0.0
    r = m.average_embeddings([[-0.0], [-0.0]], [0.4, 0.6])
    assert math.copysign(1, r[0]) == math.copysign(1, oracle.average([[-0.0], [-0.0]], [0.4, 0.6])[0])


# -- merge_similar_embeddings against the oracle ------------------------------------------------------

@pytest.mark.parametrize("dim,n,thr", [(8, 300, 0.85), (64, 300, 0.85), (64, 300, 0.5), (1024, 120, 0.85)])
def test_random_data(rng, dim, n, thr):
    X = unit(rng.standard_normal((n, dim)))
    assert_same(*run_both(items_from(X), thr)[:4])


@pytest.mark.parametrize("dim,spread,thr", [(32, 0.3, 0.85), (64, 0.5, 0.9), (128, 0.7, 0.77), (1024, 0.3, 0.85)])
def test_clustered_data(rng, dim, spread, thr):
    X = clustered(rng, 200, dim, n_clusters=6, spread=spread)
    ref, got, dr, dg, m = run_both(items_from(X), thr)
    assert sum(dr) > 0  # the data do merge
    assert_same(ref, got, dr, dg)


def test_near_threshold_and_ties(rng):
    dim, thr = 48, 0.85
    base = unit(rng.standard_normal(dim))
    X = [base]
    for delta in (1e-15, -1e-15, 1e-12, -1e-12, 1e-9, -1e-9, 1e-7, -1e-7, 1e-5, -1e-5, 1e-4, -1e-4, 0.0):
        v = rng.standard_normal(dim)
        v -= v.dot(base) * base
        v = unit(v)
        t = thr + delta
        X.append(t * base + math.sqrt(1 - t * t) * v)
    X.append(base.copy())  # an exact duplicate: ties with entry 0
    X.append(base.copy())
    X = np.array(X)
    items = items_from(X)
    # duplicates of earlier rows everywhere: the first index must win each tie
    items += copy.deepcopy(items[:5])
    assert_same(*run_both(items, thr)[:4])
    # and with near-threshold scores above eps of the float32 screen
    for thr2 in (0.85 + 1e-6, 0.85 - 1e-6, 0.8500001):
        assert_same(*run_both(items, thr2)[:4])


def test_odd_entries_like_the_original(rng, caplog):
    """Entries without an embedding, empty ones, other dimensions, zero and NaN vectors, int
    components: the same decisions, the same warnings."""
    X = unit(rng.standard_normal((6, 16)))
    items = items_from(X)
    items.insert(2, {"row": "noemb", "processed_at": "x"})
    items.insert(3, {"row": "empty", "embedding": []})
    items.insert(4, {"row": "short", "embedding": [0.1] * 8})
    items.insert(5, {"row": "zero", "embedding": [0.0] * 16})
    items.insert(6, {"row": "nan", "embedding": [float("nan")] + [0.1] * 15})
    items.insert(7, {"row": "ints", "embedding": [1] * 16})
    items.append({"row": "ints2", "embedding": [1] * 15 + [2]})
    items.append(copy.deepcopy(items[0]))
    with caplog.at_level(logging.WARNING):
        ref, got, dr, dg, _ = run_both(items, 0.85)
    ours = [r.message for r in caplog.records if r.name.startswith("chrysalis")]
    theirs = [r.getMessage() for r in caplog.records if r.name == "oracle"]
    assert ours == theirs and len(ours) > 0
    assert dr == dg
    assert canon(ref)[0]["embedding"] == canon(got)[0]["embedding"]
    for r, g in zip(canon(ref), canon(got)):
        assert str(r) == str(g)  # NaN compares unequal to itself; the printed lists must agree


def test_new_without_embedding():
    m = chrysalis.EmbeddingMerger()
    ex = [{"embedding": [1.0, 0.0]}]
    assert m.merge_similar_embeddings(ex, {"processed_at": "x"}) == (ex, False)
    assert m.merge_similar_embeddings(ex, {"embedding": []}) == (ex, False)
    assert len(ex) == 1


def test_original_selftest_cases():
    m = chrysalis.EmbeddingMerger(similarity_threshold=0.85)
    existing = [{"embedding": [1.0, 0.0, 0.0], "merged_count": 1}]
    new = {"embedding": [0.95, 0.05, 0.0], "processed_at": "2024-01-01"}
    updated, was_merged = m.merge_similar_embeddings(existing, new)
    assert was_merged and updated is existing and updated[0]["merged_count"] == 2
    assert updated[0]["last_merged_at"] == "2024-01-01"
    assert "descriptors" not in updated[0]
    sm = chrysalis.SkillMerger(similarity_threshold=0.90)
    assert sm.embedding_merger.similarity_threshold == 0.90 and sm.similarity_threshold == 0.90
    res = sm.merge_skills([{"skill_name": "programming", "embedding": [1.0, 0.0, 0.0], "merged_count": 1}],
                          [{"skill_name": "coding", "embedding": [0.95, 0.05, 0.0]}])
    assert res["merged_count"] == 1 and res["added_count"] == 0 and res["skipped_count"] == 0
    assert res["merged_skills"][0]["skill_name"] == "programming"
    assert res["merged_skills"][0]["salts_used"] == []


def test_strict_dimension_mismatch():
    m = chrysalis.EmbeddingMerger(strict=True)
    ex = [{"embedding": [1.0, 0.0, 0.0]}]
    with pytest.raises(chrysalis.DimensionError):
        m.merge_similar_embeddings(ex, {"embedding": [1.0, 0.0]})
    assert len(ex) == 1
    assert issubclass(chrysalis.DimensionError, ValueError)
    # not strict: never merges, appends (the original's behaviour)
    m2 = chrysalis.EmbeddingMerger()
    assert m2.merge_similar_embeddings(ex, {"embedding": [1.0, 0.0]})[1] is False
    assert len(ex) == 2


def test_threshold_attribute_is_read_each_call(rng):
    m = chrysalis.EmbeddingMerger(0.99)
    ex = []
    v = unit(rng.standard_normal(8))
    w = unit(v + 0.3 * unit(rng.standard_normal(8)))
    m.merge_similar_embeddings(ex, {"embedding": v.tolist()})
    assert m.merge_similar_embeddings(ex, {"embedding": w.tolist()})[1] is False
    m.similarity_threshold = 0.5
    assert m.merge_similar_embeddings(ex, {"embedding": w.tolist()})[1] is True


def test_subclass_override_is_honoured():
    class Always(chrysalis.EmbeddingMerger):
        def cosine_similarity(self, a, b):
            return 0.99
    m = Always()
    ex = [{"embedding": [1.0, 0.0]}]
    assert m.merge_similar_embeddings(ex, {"embedding": [0.0, 1.0]})[1] is True


# -- merge_skills -------------------------------------------------------------------------------------

def test_merge_skills_against_oracle(rng):
    X = clustered(rng, 150, 64, n_clusters=10, spread=0.3)
    skills = []
    for i, v in enumerate(X):
        s = {"skill_name": f"s{i}", "embedding": v.tolist(), "salts_used": [f"salt{i % 7}", f"x{i % 4}"]}
        if i % 17 == 0:
            s = {"skill_name": f"empty{i}", "embedding": []}
        skills.append(s)
    existing = [{"skill_name": "seed", "embedding": X[0].tolist(), "merged_count": 3}]
    a_ex, a_new = copy.deepcopy(existing), copy.deepcopy(skills)
    b_ex, b_new = copy.deepcopy(existing), copy.deepcopy(skills)
    ref = oracle.merge_skills(a_ex, a_new, 0.90)
    sm = chrysalis.SkillMerger()
    got = sm.merge_skills(b_ex, b_new)
    assert set(got) == {"merged_skills", "added_count", "merged_count", "skipped_count"}
    assert (got["added_count"], got["merged_count"], got["skipped_count"]) == \
        (ref["added_count"], ref["merged_count"], ref["skipped_count"])
    assert got["merged_count"] > 0 and got["skipped_count"] > 0
    assert canon(got["merged_skills"]) == canon(ref["merged_skills"])
    assert got["merged_skills"] is not b_ex and len(b_ex) == 1  # the list is copied
    assert b_ex[0]["merged_count"] == a_ex[0]["merged_count"]   # its dicts are updated in place
    # a second call continuing from the result (a new list object holding the same dicts)
    more = [dict(s, skill_name=s.get("skill_name", "") + "b") for s in copy.deepcopy(skills[:40])]
    ref2 = oracle.merge_skills(ref["merged_skills"], copy.deepcopy(more), 0.90)
    got2 = sm.merge_skills(got["merged_skills"], copy.deepcopy(more))
    assert canon(got2["merged_skills"]) == canon(ref2["merged_skills"])


# -- outside edits the cache notices -------------------------------------------------------------------

def _setup(rng, n=40, dim=32):
    X = clustered(rng, n, dim, n_clusters=5, spread=0.8)
    m = chrysalis.EmbeddingMerger(0.8)
    ex = []
    for it in items_from(X):
        m.merge_similar_embeddings(ex, it)
    return m, ex, dim


def _check_against_oracle(m, ex, probes):
    for p in probes:
        i_ref, s_ref = oracle.best_of(ex, p)
        assert m.find_best(ex, p) == (i_ref, s_ref)


def test_edit_new_list_object(rng):
    m, ex, dim = _setup(rng)
    probes = [unit(rng.standard_normal(dim)).tolist() for _ in range(5)] + [ex[3]["embedding"]]
    ex2 = list(reversed(ex))           # a different list object, other order
    _check_against_oracle(m, ex2, probes)
    _check_against_oracle(m, ex[:10], probes)
    _check_against_oracle(m, ex, probes)


def test_edit_dict_replaced_and_key_rebound(rng):
    m, ex, dim = _setup(rng)
    target = unit(rng.standard_normal(dim)).tolist()
    ex[5] = {"embedding": list(target)}                  # a dict replaced
    _check_against_oracle(m, ex, [target])
    assert m.find_best(ex, target)[0] == 5
    other = unit(rng.standard_normal(dim)).tolist()
    ex[7]["embedding"] = list(other)                      # the key rebound to a new list
    assert m.find_best(ex, other)[0] == 7
    del ex[7]["embedding"]                                # the key deleted
    _check_against_oracle(m, ex, [other])
    ex[7]["embedding"] = []                               # emptied
    _check_against_oracle(m, ex, [other])


def test_edit_length_changes(rng):
    m, ex, dim = _setup(rng)
    v = ex[4]["embedding"]
    probe = list(v)
    v.append(0.5)                                         # now another dimension: never matched
    _check_against_oracle(m, ex, [probe])
    v.pop()
    _check_against_oracle(m, ex, [probe])
    assert m.find_best(ex, probe)[0] == 4


def test_edit_insert_remove(rng):
    m, ex, dim = _setup(rng)
    probes = [e["embedding"] for e in ex[::7]]
    ex.insert(0, {"embedding": unit(rng.standard_normal(dim)).tolist()})
    _check_against_oracle(m, ex, probes)
    del ex[10]
    _check_against_oracle(m, ex, probes)
    ex.clear()
    assert m.find_best(ex, probes[0]) == (-1, 0.0)


def test_edit_in_place_item_needs_invalidate(rng):
    """Documented: an element assigned in place (same length) is not noticed until invalidate()."""
    m, ex, dim = _setup(rng)
    target = unit(rng.standard_normal(dim)).tolist()
    emb = ex[2]["embedding"]
    for i in range(dim):
        emb[i] = target[i]                                # same list object, same length
    m.invalidate()
    _check_against_oracle(m, ex, [target])
    assert m.find_best(ex, target)[0] == 2


def test_non_dict_entries_use_the_python_path(rng):
    class D(dict):
        pass
    m = chrysalis.EmbeddingMerger()
    ex = [D(embedding=[1.0, 0.0]), {"embedding": (0.0, 1.0)}]
    assert m.merge_similar_embeddings(ex, {"embedding": [0.99, 0.01]})[1] is True
    # a tuple embedding scores as in the original, whose average_embeddings then refuses it
    with pytest.raises(TypeError):
        m.merge_similar_embeddings(ex, {"embedding": (0.01, 0.99)})
    with pytest.raises(AttributeError):
        m.merge_similar_embeddings([1, 2], {"embedding": [1.0]})


def test_golden_style_large_duplicates(rng):
    """Many exact duplicates at 1024-d: the cache's candidates include every tie."""
    X = unit(rng.standard_normal((30, 1024)))
    items = items_from(np.concatenate([X, X, X[:10]]))
    assert_same(*run_both(items, 0.85)[:4])


def test_both_screens_many_near_threshold_candidates(rng):
    """Hundreds of entries within 0.01 of the threshold: the int8 screen leaves too many candidates
    and the float32 screen decides; elsewhere the int8 screen decides. Same decisions either way."""
    dim, thr = 256, 0.85
    u = unit(rng.standard_normal(dim))
    ents = []
    for t in rng.uniform(thr - 0.01, thr + 0.01, 300):
        v = rng.standard_normal(dim)
        v = unit(v - v.dot(u) * u)
        ents.append(t * u + np.sqrt(1 - t * t) * v)
    items = items_from(np.array(ents))
    probes = items_from(np.array([u, u, unit(u + 0.01 * rng.standard_normal(dim))]))
    ref, got, dr, dg, m = run_both(items + probes, thr)
    assert_same(ref, got, dr, dg)
    st = m.cache_stats()
    assert st["searches"] > 0 and st["int8_decided"] > 0
    assert sum(dr[-3:]) >= 1

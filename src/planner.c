/*
 * planner.c: the planner: when an index trains, re-trains or becomes another kind, and which.
 * index.c calls it after every add (planner_after_add); it calls the builders (ivf.c, hnsw.c,
 * sq8.c), which return a code (and ivf_train a message), never touching the handle's message:
 * the planner records it.
 *
 * Planner (spec "auto"): Flat below auto_threshold vectors; at the threshold the index becomes
 * IVF with nlist = clamp(sqrt(n), 16, 65536) (and at most n/39 lists, FAISS's minimum of 39
 * points per centroid), with SQ8 when the float32 rows alone would exceed the memory budget. It
 * re-plans (retrains with a new nlist) when the index has grown 4x since its last training. Its
 * policy (plan_policy: what to build at the threshold) is set by the caller: the merger asks for
 * an HNSW graph.
 */
#include <math.h>
#include <stdio.h>

#include "hnsw.h"
#include "index.h"
#include "planner.h"
#include "spec.h"
#include "sq8.h"

uint32_t ivf_plan_nlist(size_t n)
{
    double s = sqrt((double)n);
    uint32_t k = (uint32_t)(s < IVF_PLAN_MIN_NLIST ? IVF_PLAN_MIN_NLIST : s > IVF_PLAN_MAX_NLIST ? IVF_PLAN_MAX_NLIST : s);
    uint32_t cap = (uint32_t)(n / IVF_MIN_POINTS_PER_LIST);
    if (k > cap) k = cap;
    return k < 1 ? 1 : k;
}

void index_set_plan_policy(chrys_index *ix, const plan_policy *p)
{
    ix->plan_kind = p->kind;
    ix->plan_m = p->hnsw_m;
    ix->plan_efc = p->ef_construction;
    ix->plan_why = p->why;
}

/* ivf_train, its message recorded on the handle. */
static int train(chrys_index *ix, uint32_t nlist)
{
    char why[160];
    int rc = ivf_train(ix, nlist, why, sizeof why);
    return rc ? index_fail(ix, rc, "%s", why) : CHRYS_OK;
}

int chrys_index_retrain(chrys_index *ix)
{
    if (!ix) return CHRYS_INVALID;
    if (index_check_writable(ix)) return CHRYS_INVALID;
    if (ix->kind != CHRYS_INDEX_IVF) return index_fail(ix, CHRYS_INVALID, "retrain: the index is not IVF");
    /* the planner's choice (auto, or IVFFlat without nlist) is made again for the current size */
    uint32_t nlist = !ix->want_nlist ? ivf_plan_nlist(ix->n) : ix->nlist ? ix->nlist : ix->want_nlist;
    return train(ix, nlist);
}

/* The planner's HNSW (plan_kind HNSW, merger stores): an HNSW graph over the rows, SQ8 codes for
 * the walk, float32 rows kept (the merger rescores, confirms and updates entries with them).
 * Replaces a Flat or IVF index in place; on failure (memory) the index is left as it was. */
static int plan_hnsw(chrys_index *ix)
{
    if (!ix->vecs) return index_fail(ix, CHRYS_INVALID, "planning HNSW: the index keeps no float32 rows");
    if (hnsw_create(ix, ix->plan_m, ix->plan_efc)) return index_fail(ix, CHRYS_NOMEM, "out of memory planning HNSW");
    /* The graph gets its own codes and ranges; the old index's are kept until it is built. */
    sq8_store codes;
    if (hnsw_reserve(ix, ix->cap) || sq8_store_alloc(ix, ix->cap, &codes)) {
        hnsw_free(ix);
        return index_fail(ix, CHRYS_NOMEM, "out of memory planning HNSW");
    }
    chrys_index_kind kind = ix->kind;
    int sq8 = ix->sq8, refine = ix->refine;
    sq8_swap(ix, &codes); /* codes: the old index's from here */
    ix->kind = CHRYS_INDEX_HNSW;
    ix->sq8 = 1;
    ix->refine = 1;
    ix->pending = 0;
    int rc = hnsw_after_add(ix, 0, ix->vecs); /* fails only before it links anything */
    if (rc) {
        hnsw_free(ix);
        sq8_swap(ix, &codes);
        sq8_store_free(&codes);
        ix->kind = kind;
        ix->sq8 = sq8;
        ix->refine = refine;
        return index_fail(ix, rc, "out of memory building the planned HNSW graph");
    }
    ivf_free_lists(ix); /* IVF lists (if any) and their codes: from here the rows alone are the index */
    sq8_store_free(&codes);
    snprintf(ix->plan_reason, sizeof ix->plan_reason, "%zu vectors >= threshold %llu: HNSW%u,SQ8,RFlat (%s)", ix->n,
             (unsigned long long)ix->auto_threshold, ix->plan_m, ix->plan_why ? ix->plan_why : "the caller's policy");
    return CHRYS_OK;
}

/* The planner: choose and build the index for the current size. */
static int plan(chrys_index *ix)
{
    if (ix->plan_kind == CHRYS_INDEX_HNSW) return plan_hnsw(ix);
    size_t n = ix->n;
    uint32_t nlist = ivf_plan_nlist(n);
    uint64_t float_bytes = (uint64_t)n * ix->dim * 4;
    /* SQ8 codes only when the rows exceed the budget (and for good once the rows are gone) */
    int sq8 = (ix->memory_budget && float_bytes > ix->memory_budget) || !ix->vecs;
    char spec[32];
    int old_sq8 = ix->sq8;
    ix->sq8 = sq8;
    ix->refine = 0;
    int rc = train(ix, nlist);
    if (rc) {
        ix->sq8 = old_sq8; /* ivf_train changed nothing */
        return rc;
    }
    index_spec_string(ix, spec, sizeof spec);
    snprintf(ix->plan_reason, sizeof ix->plan_reason,
             "%zu vectors >= threshold %llu: %s (nlist ~ sqrt(n), >= %d points per list)%s", n,
             (unsigned long long)ix->auto_threshold, spec, IVF_MIN_POINTS_PER_LIST,
             sq8 ? "; SQ8 codes: float32 rows exceed the memory budget" : "");
    return CHRYS_OK;
}

int index_replan(chrys_index *ix) { return plan(ix); }

int planner_after_add(chrys_index *ix, size_t first, const float *rows)
{
    if (ix->planned && ix->kind == CHRYS_INDEX_FLAT) {
        if (ix->n >= ix->auto_threshold && ix->n >= IVF_MIN_POINTS_PER_LIST) return plan(ix);
        return CHRYS_OK; /* exact Flat below the threshold: nothing to assign */
    }
    if (ix->kind == CHRYS_INDEX_IVF && !ix->nlist) {
        /* untrained (its rows are kept, index_has_floats): searches are exact until it trains, at
         * 8 x nlist vectors, or at auto_threshold with the planner's nlist (IVFFlat without nlist) */
        uint32_t want = ix->want_nlist;
        if (!want && ix->n >= ix->auto_threshold && ix->n >= IVF_MIN_POINTS_PER_LIST)
            return train(ix, ivf_plan_nlist(ix->n));
        if (want && ix->n >= (size_t)want * 8) return train(ix, want);
        return CHRYS_OK;
    }
    if (ix->kind == CHRYS_INDEX_FLAT && ix->sq8 && !ix->sq_min) { /* Flat SQ8,RFlat: ranges from the first batch */
        int rc = sq8_train_all(ix);
        if (rc) return index_fail(ix, rc, "out of memory training SQ8");
        return CHRYS_OK;
    }
    /* Codes first: they cannot fail, and a re-plan of a codes-only index reads them (after a
     * failed add these slots are past n again and never read). */
    if (ix->sq8) sq8_encode_rows(ix, first, rows);
    /* The planner's nlist (auto, or IVFFlat without nlist) is chosen again once the index has grown
     * 4x since its training (a codes-only index trains on its decoded codes); the training lists
     * every row, the new ones too. */
    if (ix->kind == CHRYS_INDEX_IVF && ix->nlist && !ix->want_nlist && ix->n >= 4 * ix->trained_on)
        return ix->planned ? plan(ix) : train(ix, ivf_plan_nlist(ix->n));
    int rc = ivf_add_rows(ix, first, rows);
    return rc ? index_fail(ix, rc, "out of memory adding to IVF lists") : CHRYS_OK;
}

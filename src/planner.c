/*
 * planner.c: the automatic planner (spec "auto") and the planner's list count.
 *
 * Planner (spec "auto"): Flat below auto_threshold vectors; at the threshold the index becomes
 * IVF with nlist = clamp(sqrt(n), 16, 65536) (and at most n/39 lists, FAISS's minimum of 39
 * points per centroid), with SQ8 when the float32 rows alone would exceed the memory budget. It
 * re-plans (retrains with a new nlist) when the index has grown 4x since its last training.
 */
#include <math.h>
#include <stdio.h>

#include "hnsw.h"
#include "index.h"
#include "planner.h"

uint32_t ivf_plan_nlist(size_t n)
{
    double s = sqrt((double)n);
    uint32_t k = (uint32_t)(s < 16 ? 16 : s > 65536 ? 65536 : s);
    uint32_t cap = (uint32_t)(n / IVF_MIN_POINTS_PER_LIST);
    if (k > cap) k = cap;
    return k < 1 ? 1 : k;
}

int chrys_index_retrain(chrys_index *ix)
{
    if (!ix) return CHRYS_INVALID;
    if (index_check_writable(ix)) return CHRYS_INVALID;
    if (ix->kind != CHRYS_INDEX_IVF) return index_fail(ix, CHRYS_INVALID, "retrain: the index is not IVF");
    /* the planner's choice (auto, or IVFFlat without nlist) is made again for the current size */
    uint32_t nlist = !ix->want_nlist ? ivf_plan_nlist(ix->n) : ix->nlist ? ix->nlist : ix->want_nlist;
    return ivf_train(ix, nlist);
}

/* The planner for merger stores (plan_kind HNSW): an HNSW graph over the rows, SQ8 codes for the
 * walk, float32 rows kept (the merger rescores, confirms and updates entries with them). Replaces
 * a Flat or IVF index in place; on failure (memory) the index is left exact (Flat). */
static int plan_hnsw(chrys_index *ix)
{
    size_t cap = ix->cap, dim = ix->dim;
    if (!ix->vecs) return index_fail(ix, CHRYS_INVALID, "planning HNSW: the index keeps no float32 rows");
    if (hnsw_create(ix, MERGE_PLAN_M, ix->plan_efc)) return index_fail(ix, CHRYS_NOMEM, "out of memory planning HNSW");
    uint8_t *codes = NULL;
    float *csq = NULL;
    if (hnsw_reserve(ix, cap) || !(codes = chrys_malloc_aligned(cap * dim)) ||
        (ix->metric == CHRYS_METRIC_L2 && !(csq = chrys_malloc(cap * sizeof *csq)))) {
        chrys_free_aligned(codes);
        hnsw_free(ix);
        return index_fail(ix, CHRYS_NOMEM, "out of memory planning HNSW");
    }
    /* The graph gets its own codes and ranges; the old index's are kept until it is built. */
    chrys_index_kind kind = ix->kind;
    int sq8 = ix->sq8, refine = ix->refine;
    uint8_t *old_codes = ix->codes;
    float *old_csq = ix->sq_csq, *old_min = ix->sq_min, *old_step = ix->sq_step;
    ix->kind = CHRYS_INDEX_HNSW;
    ix->sq8 = 1;
    ix->refine = 1;
    ix->codes = codes;
    ix->sq_csq = csq;
    ix->sq_min = ix->sq_step = NULL;
    ix->pending = 0;
    int rc = hnsw_after_add(ix, 0, ix->vecs); /* fails only before it links anything */
    if (rc) {
        hnsw_free(ix);
        chrys_free_aligned(codes);
        chrys_free(csq);
        ix->kind = kind;
        ix->sq8 = sq8;
        ix->refine = refine;
        ix->codes = old_codes;
        ix->sq_csq = old_csq;
        ix->sq_min = old_min;
        ix->sq_step = old_step;
        return index_fail(ix, rc, "out of memory building the planned HNSW graph");
    }
    ivf_free_lists(ix); /* IVF lists (if any) and their codes: from here the rows alone are the index */
    chrys_free_aligned(old_codes);
    chrys_free(old_csq);
    chrys_free(old_min);
    chrys_free(old_step);
    snprintf(ix->plan_reason, sizeof ix->plan_reason,
             "%zu vectors >= threshold %llu: HNSW%u,SQ8,RFlat (entries move and grow one at a time: "
             "a graph, no retraining; float32 kept for exact merging)",
             ix->n, (unsigned long long)ix->auto_threshold, MERGE_PLAN_M);
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
    int rc = ivf_train(ix, nlist);
    if (rc) {
        ix->sq8 = old_sq8; /* ivf_train changed nothing */
        return rc;
    }
    ivf_spec_string(ix, spec, sizeof spec);
    snprintf(ix->plan_reason, sizeof ix->plan_reason,
             "%zu vectors >= threshold %llu: %s (nlist ~ sqrt(n), >= %d points per list)%s", n,
             (unsigned long long)ix->auto_threshold, spec, IVF_MIN_POINTS_PER_LIST,
             sq8 ? "; SQ8 codes: float32 rows exceed the memory budget" : "");
    return CHRYS_OK;
}

int index_replan(chrys_index *ix) { return plan(ix); }

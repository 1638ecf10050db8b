/*
 * planner.h: the planner (planner.c), private to the library. It chooses and builds the index
 * for the current size: index.c calls it after every add; it calls the builders (ivf.c, hnsw.c,
 * sq8.c), which never call back.
 */
#ifndef CHRYS_PLANNER_H
#define CHRYS_PLANNER_H

#include "chrys_limits.h"
#include "index.h"

/* What the planner builds at auto_threshold vectors. The default (all zero): IVF, with nlist
 * ivf_plan_nlist(n) and SQ8 codes when the float32 rows exceed the memory budget. */
typedef struct plan_policy {
    chrys_index_kind kind;    /* CHRYS_INDEX_HNSW: an HNSW<hnsw_m>,SQ8,RFlat graph; otherwise IVF */
    uint32_t hnsw_m;          /* HNSW: links per node */
    uint32_t ef_construction; /* HNSW: 0 = HNSW_DEFAULT_EFC */
    const char *why;          /* HNSW: the reason given in plan_reason (static text) */
} plan_policy;
/* Set the policy (never stored: the caller sets it again after loading, as the merger does). */
CHRYS_PRIVATE void index_set_plan_policy(chrys_index *ix, const plan_policy *p);

/* The rows [first_slot, n) were just stored (index.c, every kind but HNSW): train, plan or re-plan
 * when due, else encode them and add them to their lists. rows: those rows as stored (unit under
 * cosine), (n - first_slot) x dim: ix->vecs + first_slot * dim when rows are kept, else the
 * caller's temporary copy. On failure nothing has changed and the message is on the handle. */
CHRYS_PRIVATE int planner_after_add(chrys_index *ix, size_t first_slot, const float *rows);
/* Run the planner now (ix->planned): build the index it chooses for the current size. */
CHRYS_PRIVATE int index_replan(chrys_index *ix);
/* The planner's list count for n vectors: clamp(sqrt(n), 16, 65536), at most n/39, at least 1. */
CHRYS_PRIVATE uint32_t ivf_plan_nlist(size_t n);

#endif

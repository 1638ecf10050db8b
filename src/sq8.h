/*
 * sq8.h: int8 scalar quantisation (SQ8) shared by Flat, IVF and HNSW, private to the library.
 *
 * Per dimension d: value = min[d] + code * step[d], code in 0..255, ranges from the first batch
 * added (or the IVF training set); codes are stored and loaded as they are, never re-quantised.
 * A query q is prepared once: int8 weights w[d] ~ q[d] * step[d] / scale (one scale per query)
 * and bias = sum q[d] * min[d], so q . x ~ bias + scale * sum w[d] * code[d] (an exact int32 sum:
 * the VNNI kernel). The final candidates are scored again with float weights (or the float32
 * rows when kept) in double.
 */
#ifndef CHRYS_SQ8_H
#define CHRYS_SQ8_H

#include "index.h"

typedef struct sq8_query {
    const float *f; /* the float query (unit under cosine) */
    const int8_t *w8;
    float scale, bias, qsq; /* qsq = |q|^2 (L2) */
} sq8_query;

/* Allocate (once) and compute the per-dimension ranges from rows[0..n). */
CHRYS_PRIVATE int sq8_train(chrys_index *ix, const float *rows, size_t n);
/* Encode row (dim floats) as slot's codes; keeps |decoded|^2 under L2. */
CHRYS_PRIVATE void sq8_encode(chrys_index *ix, size_t slot, const float *row);
CHRYS_PRIVATE void sq8_decode(const chrys_index *ix, size_t slot, float *out);
/* |decoded|^2 of every slot (after loading codes), when the index keeps them. */
CHRYS_PRIVATE void sq8_refresh_norms(chrys_index *ix);
/* Prepare v as a query: q->w8 = w8 (dim bytes, caller's). */
CHRYS_PRIVATE void sq8_prepare(const chrys_index *ix, const float *v, sq8_query *q, int8_t *w8);
/* Approximate score (higher is better: inner product, or minus squared L2) of slot. */
static inline float sq8_score_i32(const chrys_index *ix, const sq8_query *q, int32_t dot, size_t slot)
{
    float ip = q->bias + q->scale * (float)dot;
    return ix->metric == CHRYS_METRIC_L2 ? 2 * ip - ix->sq_csq[slot] - q->qsq : ip;
}

/* Final ranking of candidate slots c[0..nc) for query qv (prepared: unit under cosine): scores
 * from the float32 rows in double when kept, else from the codes with float weights (wf: dim
 * floats of scratch); best k (ties by id) into ids/scores, cut at the threshold, padded. fin:
 * nc items of scratch. */
typedef struct sq8_fin {
    double s;
    uint64_t id;
} sq8_fin;
CHRYS_PRIVATE void sq8_finish(const chrys_index *ix, const float *qv, const uint32_t *c, size_t nc, size_t k, int use_thr,
                              double thr, uint64_t *ids, double *scores, float *wf, sq8_fin *fin);

/* Exact-scan search of a Flat index that keeps codes only (or codes and float32 rows, "RFlat"):
 * every row scored with the int8 kernel, the best max(4k, k + 32) ranked by sq8_finish. */
CHRYS_PRIVATE int sq8_flat_search(const chrys_index *ix, size_t nq, const float *q, size_t k, int use_thr, double thr,
                                  unsigned n_threads, uint64_t *ids, double *scores, const search_filter *filter);

/* ---- Code storage (every kind keeps its codes here) ----
 * ix->codes (cap*dim), ix->sq_csq (cap, L2 only), ix->sq_min/sq_step (dim each, once trained). */
typedef struct sq8_store {
    uint8_t *codes;
    float *csq, *min, *step;
    int retrain; /* sq8_retrain_prepare: new ranges to install */
} sq8_store;
/* Grow the codes (and |code|^2) of an SQ8 index to cap slots; nothing otherwise. */
CHRYS_PRIVATE int sq8_reserve(chrys_index *ix, size_t cap);
/* Free the index's codes, ranges and |code|^2. */
CHRYS_PRIVATE void sq8_free(chrys_index *ix);
CHRYS_PRIVATE void sq8_store_init(sq8_store *st);
CHRYS_PRIVATE void sq8_store_free(sq8_store *st);
/* Exchange the index's code storage with st (a rebuild keeps the old codes aside until the new
 * index is built, and puts them back if it fails). */
CHRYS_PRIVATE void sq8_swap(chrys_index *ix, sq8_store *st);
/* Empty codes (and |code|^2 under L2) for cap slots, no ranges (the first add trains them). */
CHRYS_PRIVATE int sq8_store_alloc(const chrys_index *ix, size_t cap, sq8_store *st);
/* Before a retraining of an SQ8 index that keeps float32 rows: allocate new ranges, and codes and
 * |code|^2 for cap slots where the index has none, so that sq8_retrain_commit cannot fail.
 * Nothing for an index without codes or with codes only (their codes are kept, never
 * re-quantised). CHRYS_NOMEM: nothing allocated, nothing changed. */
CHRYS_PRIVATE int sq8_retrain_prepare(const chrys_index *ix, size_t cap, sq8_store *st);
/* Install what sq8_retrain_prepare allocated, train the ranges on rows[0..n) and encode every
 * row (the index's slot order). Cannot fail; nothing when nothing was prepared. */
CHRYS_PRIVATE void sq8_retrain_commit(chrys_index *ix, sq8_store *st, const float *rows, size_t n);
/* Flat SQ8,RFlat at its first add: ranges from the float32 rows, every row encoded; on failure
 * (CHRYS_NOMEM) nothing has changed. */
CHRYS_PRIVATE int sq8_train_all(chrys_index *ix);
/* Encode rows as slots [first, n). */
CHRYS_PRIVATE void sq8_encode_rows(chrys_index *ix, size_t first, const float *rows);
/* Slot `last` moved into the hole at slot (removal): its codes follow. */
CHRYS_PRIVATE void sq8_move(chrys_index *ix, uint32_t slot, uint32_t last);
/* Rows [s0, s0 + m) decoded into out (m x dim), made unit under cosine as the stored rows were
 * (training and assignment of a codes-only index). */
CHRYS_PRIVATE void sq8_decode_rows(const chrys_index *ix, size_t s0, size_t m, float *out);

#endif

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

#endif

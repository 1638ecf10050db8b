/*
 * search.c: the one search path: chrys_index_search validates and prepares the queries and
 * dispatches to the kind's search.
 */
#include <math.h>

#include "hnsw.h"
#include "index.h"
#include "sq8.h"

int flat_prepare_queries(const chrys_index *ix, size_t nq, const float *queries, float **prepared)
{
    size_t dim = ix->dim;
    *prepared = NULL;
    for (size_t i = 0; i < nq; i++)
        if (vec_first_nonfinite(queries + i * dim, dim) >= 0) return CHRYS_INVALID;
    if (ix->metric != CHRYS_METRIC_COSINE) return CHRYS_OK;
    size_t bytes;
    if (chrys_mul_size(nq, dim * sizeof(float), &bytes)) return CHRYS_LIMIT;
    float *qn = chrys_malloc_aligned(bytes);
    if (!qn) return CHRYS_NOMEM;
    for (size_t i = 0; i < nq; i++) {
        const float *v = queries + i * dim;
        double nr = vec_norm(v, dim);
        if (nr == 0 || !isfinite(nr)) {
            chrys_free_aligned(qn);
            return CHRYS_INVALID;
        }
        vec_scale_to(qn + i * dim, v, dim, nr);
    }
    *prepared = qn;
    return CHRYS_OK;
}

int flat_search(const chrys_index *ix, size_t nq, const float *queries, const chrys_search_opts *o,
                chrys_hit *hits)
{
    size_t k = o->k;
    float *qn = NULL;
    uint64_t *ids = NULL;
    double *scores = NULL;
    int rc = flat_prepare_queries(ix, nq, queries, &qn);
    if (rc) return rc;
    size_t cnt;
    if (chrys_mul_size(nq, k, &cnt)) {
        rc = CHRYS_LIMIT;
        goto done;
    }
    ids = chrys_malloc(cnt * sizeof *ids);
    scores = chrys_malloc(cnt * sizeof *scores);
    if (!ids || !scores) {
        rc = CHRYS_NOMEM;
        goto done;
    }
    search_filter f = {NULL, NULL};
    if (o->struct_size >= offsetof(chrys_search_opts, allow_ctx) + sizeof(void *) && o->allow) {
        f.allow = o->allow;
        f.ctx = o->allow_ctx;
    }
    const search_filter *fp = f.allow ? &f : NULL;
    if (ix->kind == CHRYS_INDEX_HNSW)
        rc = hnsw_search(ix, nq, qn ? qn : queries, k, o->use_threshold, o->threshold, o->n_threads,
                         o->struct_size >= offsetof(chrys_search_opts, ef_search) + sizeof(uint32_t) ? o->ef_search : 0,
                         ids, scores, fp);
    else if (ix->kind == CHRYS_INDEX_FLAT && ix->sq8 && ix->sq_min)
        rc = sq8_flat_search(ix, nq, qn ? qn : queries, k, o->use_threshold, o->threshold, o->n_threads, ids, scores, fp);
    else if (ix->kind == CHRYS_INDEX_IVF && ix->nlist)
        rc = ivf_search(ix, nq, qn ? qn : queries, k, o->use_threshold, o->threshold, o->n_threads,
                        o->struct_size >= offsetof(chrys_search_opts, nprobe) + sizeof(uint32_t) ? o->nprobe : 0, ids,
                        scores, fp);
    else
        rc = flat_search_prepared(ix, nq, qn ? qn : queries, k, o->use_threshold, o->threshold,
                                  o->n_threads, ids, scores, fp);
    for (size_t i = 0; !rc && i < cnt; i++) {
        hits[i].id = ids[i];
        hits[i].score = (float)scores[i];
        hits[i]._pad = 0;
    }
done:
    chrys_free_aligned(qn);
    chrys_free(ids);
    chrys_free(scores);
    return rc;
}

int chrys_index_search(const chrys_index *ix, size_t nq, const float *queries,
                       const chrys_search_opts *opts, chrys_hit *hits)
{
    if (!ix || (nq && (!queries || !hits))) return CHRYS_INVALID;
    chrys_search_opts o;
    chrys_search_opts_init(&o);
    if (opts) {
        size_t sz = opts->struct_size < sizeof o ? opts->struct_size : sizeof o;
        if (sz < offsetof(chrys_search_opts, k) + sizeof(uint32_t)) return CHRYS_INVALID;
        memcpy(&o, opts, sz);
    }
    if (o.k < 1 || o.k > CHRYS_MAX_K) return CHRYS_INVALID;
    if (o.use_threshold && !isfinite(o.threshold)) return CHRYS_INVALID;
    if (nq == 0) return CHRYS_OK;
    return flat_search(ix, nq, queries, &o, hits); /* dispatches to IVF when trained */
}

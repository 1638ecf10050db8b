/*
 * search.c: the one search path.
 *
 * chrys_index_search (public) and index_search_prepared (the merger, and every other internal
 * caller) end here. The public entry checks the options, validates and prepares the queries
 * (unit length under cosine), dispatches through the per-kind operations table below, and turns
 * the kind's double results into chrys_hit, padding included, in one place. Each kind's search
 * chooses its own storage: the Flat op scans the float32 rows (flat.c) or the SQ8 codes (sq8.c),
 * the IVF op its lists (ivf.c; an untrained index is scanned exactly), the HNSW op walks the
 * graph (hnsw.c); wherever float32 candidates are ranked again in double, the depth of that
 * re-ranking follows one rule, rerank_slack below.
 *
 * Messages: a failing search records why (the query row and the cause) where
 * chrys_index_errmsg finds it. Searches take a const handle that several threads may share, so
 * the message is kept per thread (the handle's own message belongs to non-const calls):
 * chrys_index_errmsg returns it on the thread whose search failed, until that thread's next
 * message-recording call on the handle (index_fail) or the handle is freed.
 */
#include <math.h>
#include <stdio.h>

#include "hnsw.h"
#include "index.h"
#include "sq8.h"

/* ------------------------------------------------------------------------------------------
 * Messages
 */

static _Thread_local struct {
    const chrys_index *ix; /* the handle the message is about; NULL when none */
    char text[256];
} search_msg;

const char *index_search_msg(const chrys_index *ix)
{
    return ix && search_msg.ix == ix ? search_msg.text : NULL;
}

void index_search_msg_forget(const chrys_index *ix)
{
    if (search_msg.ix == ix) search_msg.ix = NULL;
}

static int search_fail(const chrys_index *ix, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int search_fail(const chrys_index *ix, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(search_msg.text, sizeof search_msg.text, fmt, ap);
    va_end(ap);
    search_msg.ix = ix;
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * The re-ranking rule
 */

double rerank_slack(const chrys_index *ix, const float *q, double kth, const uint32_t *slots, size_t n)
{
    size_t dim = ix->dim;
    /* dim + 2 terms: the L2 form's subtraction and product roundings; under cosine the 2 also
     * covers the unit vectors' own rounding (their norms are within 2u of 1). */
    double g = f32_gamma((double)dim + 2);
    double e; /* bound on one candidate's float32 error */
    if (ix->metric == CHRYS_METRIC_COSINE) {
        e = g;
    } else if (ix->metric == CHRYS_METRIC_L2) {
        /* |fl(d) - d| <= g d for d = sum (q_i - x_i)^2; with d <= d_f / (1 - g) over the band */
        e = g / (1 - g) * fabs(kth) * (1 + 2 * g / (1 - g));
    } else {
        double xmax = 0;
        for (size_t j = 0; j < n; j++)
            if (ix->norms[slots[j]] > xmax) xmax = ix->norms[slots[j]];
        e = g * vec_norm(q, dim) * xmax;
    }
    /* 2e: the k-th may be e too high and a left-out candidate e too low; 2^-22 |kth| covers the
     * float32 evaluation of kth - slack at the call sites */
    return 2 * e + 0x1p-22 * fabs(kth);
}

/* ------------------------------------------------------------------------------------------
 * Query preparation
 */

int search_prepare_queries(const chrys_index *ix, size_t nq, const float *queries, float **prepared,
                           char *why, size_t why_cap)
{
    size_t dim = ix->dim;
    *prepared = NULL;
    for (size_t i = 0; i < nq; i++) {
        long c = vec_first_nonfinite(queries + i * dim, dim);
        if (c >= 0) {
            if (why)
                snprintf(why, why_cap, "query row %zu: component %ld is %s (queries must be finite)", i, c,
                         isnan(queries[i * dim + (size_t)c]) ? "NaN" : "infinite");
            return CHRYS_INVALID;
        }
    }
    if (ix->metric != CHRYS_METRIC_COSINE) return CHRYS_OK;
    size_t bytes;
    if (chrys_mul_size(nq, dim * sizeof(float), &bytes)) {
        if (why) snprintf(why, why_cap, "%zu queries of dimension %zu overflow the address space", nq, dim);
        return CHRYS_LIMIT;
    }
    float *qn = chrys_malloc_aligned(bytes);
    if (!qn) {
        if (why) snprintf(why, why_cap, "out of memory for %zu normalised queries of dimension %zu", nq, dim);
        return CHRYS_NOMEM;
    }
    for (size_t i = 0; i < nq; i++) {
        const float *v = queries + i * dim;
        double nr = vec_norm(v, dim);
        if (nr == 0 || !isfinite(nr)) {
            chrys_free_aligned(qn);
            if (why)
                snprintf(why, why_cap, "query row %zu is a zero vector: cosine needs a non-zero query", i);
            return CHRYS_INVALID;
        }
        vec_scale_to(qn + i * dim, v, dim, nr);
    }
    *prepared = qn;
    return CHRYS_OK;
}

/* ------------------------------------------------------------------------------------------
 * The per-kind operations
 */

typedef int (*search_fn)(const chrys_index *ix, size_t nq, const float *q, const search_params *p, uint64_t *ids,
                         double *scores);

static int exact_op(const chrys_index *ix, size_t nq, const float *q, const search_params *p, uint64_t *ids,
                    double *scores)
{
    return flat_search_prepared(ix, nq, q, p->k, p->use_thr, p->thr, p->n_threads, ids, scores, p->filter);
}

/* Flat: the float32 rows, or the SQ8 codes once trained (the first add). */
static int flat_op(const chrys_index *ix, size_t nq, const float *q, const search_params *p, uint64_t *ids,
                   double *scores)
{
    if (!(ix->sq8 && ix->sq_min)) return exact_op(ix, nq, q, p, ids, scores);
    int rc = index_rows_ready(ix); /* RFlat re-ranks from the rows (the exact scan checks its own) */
    return rc ? rc : sq8_flat_search(ix, nq, q, p->k, p->use_thr, p->thr, p->n_threads, ids, scores, p->filter);
}

/* IVF: its lists once trained; until then (all rows kept as float32) the exact scan. */
static int ivf_op(const chrys_index *ix, size_t nq, const float *q, const search_params *p, uint64_t *ids,
                  double *scores)
{
    if (!ix->nlist) return exact_op(ix, nq, q, p, ids, scores);
    int rc = index_rows_ready(ix);
    return rc ? rc : ivf_search(ix, nq, q, p->k, p->use_thr, p->thr, p->n_threads, p->nprobe, ids, scores, p->filter);
}

static int hnsw_op(const chrys_index *ix, size_t nq, const float *q, const search_params *p, uint64_t *ids,
                   double *scores)
{
    int rc = index_rows_ready(ix);
    return rc ? rc : hnsw_search(ix, nq, q, p->k, p->use_thr, p->thr, p->n_threads, p->ef_search, ids, scores, p->filter);
}

static const search_fn search_ops[] = {
    [CHRYS_INDEX_FLAT] = flat_op,
    [CHRYS_INDEX_IVF] = ivf_op,
    [CHRYS_INDEX_HNSW] = hnsw_op,
};

int index_search_prepared(const chrys_index *ix, size_t nq, const float *q, const search_params *p, uint64_t *ids,
                          double *scores)
{
    if (p->exact) return exact_op(ix, nq, q, p, ids, scores);
    if (NEVER((size_t)ix->kind >= sizeof search_ops / sizeof *search_ops)) return CHRYS_INVALID;
    return search_ops[ix->kind](ix, nq, q, p, ids, scores);
}

/* ------------------------------------------------------------------------------------------
 * The public entry
 */

/* The options as given, the fields past opts->struct_size at their defaults; a message on error. */
static int read_opts(const chrys_index *ix, const chrys_search_opts *opts, chrys_search_opts *o, search_filter *f)
{
    chrys_search_opts_init(o);
    if (opts) {
        size_t sz = opts->struct_size < sizeof *o ? opts->struct_size : sizeof *o;
        if (sz < offsetof(chrys_search_opts, k) + sizeof(uint32_t))
            return search_fail(ix, CHRYS_INVALID, "search options: struct_size %u is too small (at least %zu)",
                               opts->struct_size, offsetof(chrys_search_opts, k) + sizeof(uint32_t));
        memcpy(o, opts, sz);
    }
    if (o->k < 1 || o->k > CHRYS_MAX_K)
        return search_fail(ix, CHRYS_INVALID, "search options: k = %u is out of range (1..%d)", o->k, CHRYS_MAX_K);
    if (o->use_threshold && !isfinite(o->threshold))
        return search_fail(ix, CHRYS_INVALID, "search options: threshold is %s (it must be finite)",
                           isnan(o->threshold) ? "NaN" : "infinite");
    f->allow = NULL;
    f->ctx = NULL;
    if (o->struct_size >= offsetof(chrys_search_opts, allow_ctx) + sizeof(void *) && o->allow) {
        f->allow = o->allow;
        f->ctx = o->allow_ctx;
    }
    return CHRYS_OK;
}

int chrys_index_search(const chrys_index *ix, size_t nq, const float *queries, const chrys_search_opts *opts,
                       chrys_hit *hits)
{
    if (!ix) return CHRYS_INVALID;
    if (nq && !queries) return search_fail(ix, CHRYS_INVALID, "search: queries is NULL (nq = %zu)", nq);
    if (nq && !hits) return search_fail(ix, CHRYS_INVALID, "search: hits is NULL (nq = %zu)", nq);
    chrys_search_opts o;
    search_filter f;
    int rc = read_opts(ix, opts, &o, &f);
    if (rc || nq == 0) return rc;
    size_t k = o.k, cnt;
    if (chrys_mul_size(nq, k, &cnt) || cnt > SIZE_MAX / sizeof(double))
        return search_fail(ix, CHRYS_LIMIT, "search: %zu queries x k = %zu results overflow the address space", nq, k);
    float *qn = NULL;
    char why[200];
    if ((rc = search_prepare_queries(ix, nq, queries, &qn, why, sizeof why)))
        return search_fail(ix, rc, "search: %s", why);
    uint64_t *ids = chrys_malloc(cnt * sizeof *ids);
    double *scores = chrys_malloc(cnt * sizeof *scores);
    if (!ids || !scores) {
        rc = search_fail(ix, CHRYS_NOMEM, "search: out of memory for %zu x %zu results", nq, k);
        goto done;
    }
    search_params p = {k, o.use_threshold, o.threshold, o.n_threads,
                       o.struct_size >= offsetof(chrys_search_opts, ef_search) + sizeof(uint32_t) ? o.ef_search : 0,
                       o.struct_size >= offsetof(chrys_search_opts, nprobe) + sizeof(uint32_t) ? o.nprobe : 0,
                       0, f.allow ? &f : NULL};
    if ((rc = index_search_prepared(ix, nq, qn ? qn : queries, &p, ids, scores))) {
        rc = *index_rows_msg(ix) ? search_fail(ix, rc, "%s", index_rows_msg(ix))
           : rc == CHRYS_NOMEM ? search_fail(ix, rc, "search: out of memory searching %zu queries (k = %zu)", nq, k)
                               : search_fail(ix, rc, "search of %zu queries (k = %zu) failed: %s", nq, k,
                                             chrys_errstr(rc));
        goto done;
    }
    /* the one conversion to hits: float scores; padding (CHRYS_NO_ID) scores the worst possible */
    float pad = ix->metric == CHRYS_METRIC_L2 ? INFINITY : -INFINITY;
    for (size_t i = 0; i < cnt; i++) {
        hits[i].id = ids[i];
        hits[i].score = ids[i] == CHRYS_NO_ID ? pad : (float)scores[i];
        hits[i]._pad = 0;
    }
done:
    chrys_free_aligned(qn);
    chrys_free(ids);
    chrys_free(scores);
    return rc;
}

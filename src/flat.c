/*
 * flat.c: exact search, the oracle of every other path.
 *
 * Two scans produce candidates, then one finishing step ranks them:
 *  - Small batches (nq < FLAT_BLAS_MIN_NQ): the rows are split over the workers; each worker walks
 *    its rows in blocks small enough to stay in L2 and, for every query, scores the block with the
 *    SIMD row kernel. The base is read from memory once per batch, not once per query.
 *  - Large batches: BLAS sgemm scores a tile of queries against a tile of rows (as FAISS does),
 *    and the workers split the tile's queries to pick candidates.
 * Both keep a pool of P = k + max(k, 16) candidates per query in float32. The finishing step
 * rescores the pool in double precision, applies the threshold to the double score, and keeps the
 * best k with ties broken by id. So the returned scores are the true quantity to double accuracy,
 * and the ranking equals a float64 brute force unless a float32 error (about 1e-7 relative) pushed
 * a true top-k row below P-k others, which the extra pool makes vanishingly rare.
 *
 * Internally higher is better: L2 distances are negated while scanning.
 * Thread safety: the index is only read; all scratch is allocated per call.
 */
#include <math.h>
#include <stdlib.h>

#ifdef CHRYS_HAVE_BLAS
#include <cblas.h>
#endif

#include "index.h"
#include "kernels/dist.h"

#define FLAT_BLAS_MIN_NQ 32 /* below this, SIMD kernels; at and above, sgemm */
#define FLAT_ROW_BLOCK 128  /* rows per block in the SIMD scan (128 x 4 KiB stays in L2) */
#define FLAT_TILE_Q 512     /* sgemm tile: queries */
#define FLAT_TILE_R 2048    /* sgemm tile: rows */
#define FLAT_PAR_MIN_FLOATS (1u << 18) /* below this much work per worker, stay single-threaded */

typedef struct search_ctx {
    const chrys_index *ix;
    const chrys_kernels *kr;
    const float *q;      /* nq*dim queries (normalised under cosine) */
    size_t nq, pool;     /* pool = candidates kept per query */
    float floor0;        /* internal threshold minus slack, or -inf */
    topk_item *items;    /* per worker: nq*pool items (SIMD path) or nq*pool (BLAS path) */
    topk *heaps;         /* per worker: nq heaps (SIMD path); nq heaps (BLAS path) */
    float *tile;         /* BLAS path: FLAT_TILE_Q x FLAT_TILE_R scores */
    float *qsq;          /* BLAS path, L2: |q|^2 per query */
    size_t q0, nq_tile, r0, nr_tile; /* BLAS path: current tile */
    unsigned n_workers;
} search_ctx;

static inline void push_block(topk *h, const float *s, size_t n, size_t slot0,
                              const uint64_t *ids, float floor0)
{
    float fl = topk_floor(h);
    if (fl < floor0) fl = floor0;
    for (size_t r = 0; r < n; r++) {
        if (s[r] >= fl) {
            topk_push(h, s[r], (uint32_t)(slot0 + r), ids[slot0 + r]);
            fl = topk_floor(h);
            if (fl < floor0) fl = floor0;
        }
    }
}

/* SIMD path: worker scans rows [begin, end) for all queries. */
static void scan_rows(void *arg, unsigned w, size_t begin, size_t end)
{
    search_ctx *c = arg;
    const chrys_index *ix = c->ix;
    size_t dim = ix->dim;
    topk *heaps = c->heaps + (size_t)w * c->nq;
    float buf[FLAT_ROW_BLOCK];
    int l2 = ix->metric == CHRYS_METRIC_L2;
    for (size_t r0 = begin; r0 < end; r0 += FLAT_ROW_BLOCK) {
        size_t nr = end - r0 < FLAT_ROW_BLOCK ? end - r0 : FLAT_ROW_BLOCK;
        const float *x = ix->vecs + r0 * dim;
        for (size_t qi = 0; qi < c->nq; qi++) {
            const float *q = c->q + qi * dim;
            if (l2) {
                c->kr->l2sq_rows(q, x, nr, dim, buf);
                for (size_t r = 0; r < nr; r++) buf[r] = -buf[r];
            } else {
                c->kr->dot_rows(q, x, nr, dim, buf);
            }
            push_block(&heaps[qi], buf, nr, r0, ix->ids, c->floor0);
        }
    }
}

#ifdef CHRYS_HAVE_BLAS
/* BLAS path: worker picks candidates for queries [begin, end) of the current tile. */
static void select_tile(void *arg, unsigned w, size_t begin, size_t end)
{
    (void)w;
    search_ctx *c = arg;
    const chrys_index *ix = c->ix;
    int l2 = ix->metric == CHRYS_METRIC_L2;
    for (size_t i = begin; i < end; i++) {
        float *s = c->tile + i * c->nr_tile;
        if (l2) {
            /* |q-x|^2 = |q|^2 + |x|^2 - 2 q.x, negated */
            float qq = c->qsq[c->q0 + i];
            for (size_t r = 0; r < c->nr_tile; r++) {
                float xn = ix->norms[c->r0 + r];
                s[r] = -(qq + xn * xn - 2.0f * s[r]);
            }
        }
        push_block(&c->heaps[c->q0 + i], s, c->nr_tile, c->r0, ix->ids, c->floor0);
    }
}
#endif

typedef struct rescored {
    double score; /* internal: higher is better */
    uint64_t id;
} rescored;

static int cmp_best_first(const void *pa, const void *pb)
{
    const rescored *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return a->id < b->id ? -1 : (a->id > b->id);
}

/* Rank one query's candidates in double precision and write k hits. buf holds cand->n items. */
static void finish_query(const chrys_index *ix, const float *q, const topk *cand, size_t k,
                         const chrys_search_opts *o, rescored *buf, chrys_hit *out)
{
    size_t dim = ix->dim, n = cand->n;
    int l2 = ix->metric == CHRYS_METRIC_L2;
    for (size_t j = 0; j < n; j++) {
        const float *x = ix->vecs + (size_t)cand->items[j].slot * dim;
        buf[j].score = l2 ? -vec_l2sq_f64(q, x, dim) : vec_dot_f64(q, x, dim);
        buf[j].id = cand->items[j].id;
    }
    qsort(buf, n, sizeof *buf, cmp_best_first);
    size_t m = 0;
    for (size_t j = 0; j < n && m < k; j++) {
        double s = l2 ? -buf[j].score : buf[j].score;
        if (o->use_threshold && (l2 ? s > o->threshold : s < o->threshold)) break;
        out[m].id = buf[j].id;
        out[m].score = (float)s;
        out[m]._pad = 0;
        m++;
    }
    for (; m < k; m++) {
        out[m].id = CHRYS_NO_ID;
        out[m].score = l2 ? INFINITY : -INFINITY;
        out[m]._pad = 0;
    }
}

int flat_search(const chrys_index *ix, size_t nq, const float *queries,
                const chrys_search_opts *o, chrys_hit *hits)
{
    size_t dim = ix->dim, k = o->k, n = ix->n;
    int rc = CHRYS_OK;
    float *qn = NULL, *qsq = NULL, *tile = NULL;
    topk_item *items = NULL;
    topk *heaps = NULL;
    rescored *buf = NULL;
    /* Validate and (cosine) normalise the queries. */
    const float *q = queries;
    if (ix->metric == CHRYS_METRIC_COSINE) {
        size_t bytes;
        if (chrys_mul_size(nq, dim * sizeof(float), &bytes)) return CHRYS_LIMIT;
        if (!(qn = chrys_malloc_aligned(bytes))) return CHRYS_NOMEM;
    }
    for (size_t i = 0; i < nq; i++) {
        const float *v = queries + i * dim;
        if (vec_first_nonfinite(v, dim) >= 0) {
            rc = CHRYS_INVALID;
            goto done;
        }
        if (qn) {
            double nr = vec_norm(v, dim);
            if (nr == 0 || !isfinite(nr)) {
                rc = CHRYS_INVALID;
                goto done;
            }
            vec_scale_to(qn + i * dim, v, dim, nr);
        }
    }
    if (qn) q = qn;

    size_t pool = k + (k > 16 ? k : 16);
    if (pool > n) pool = n;
    float floor0 = -INFINITY;
    if (o->use_threshold) {
        float t = ix->metric == CHRYS_METRIC_L2 ? -o->threshold : o->threshold;
        floor0 = t - 1e-4f * fmaxf(1.0f, fabsf(t)); /* float32 slack; decided in double later */
    }
    unsigned nt = o->n_threads ? o->n_threads : chrys_online_cpus();
    search_ctx c = {ix, chrys_kernels_active(), q, nq, pool, floor0, NULL, NULL, NULL, NULL, 0, 0, 0, 0, 1};
    if (n == 0 || pool == 0) goto finish;

#ifdef CHRYS_HAVE_BLAS
    if (nq >= FLAT_BLAS_MIN_NQ) {
        size_t cnt;
        if (chrys_mul_size(nq, pool, &cnt)) { rc = CHRYS_LIMIT; goto done; }
        items = chrys_malloc(cnt * sizeof *items);
        heaps = chrys_malloc(nq * sizeof *heaps);
        tile = chrys_malloc_aligned((size_t)FLAT_TILE_Q * FLAT_TILE_R * sizeof(float));
        if (ix->metric == CHRYS_METRIC_L2) qsq = chrys_malloc(nq * sizeof *qsq);
        if (!items || !heaps || !tile || (ix->metric == CHRYS_METRIC_L2 && !qsq)) {
            rc = CHRYS_NOMEM;
            goto done;
        }
        for (size_t i = 0; i < nq; i++) {
            topk_init(&heaps[i], items + i * pool, pool);
            if (qsq) {
                double s = vec_norm(q + i * dim, dim);
                qsq[i] = (float)(s * s);
            }
        }
        c.items = items;
        c.heaps = heaps;
        c.tile = tile;
        c.qsq = qsq;
        for (size_t q0 = 0; q0 < nq; q0 += FLAT_TILE_Q) {
            size_t nqt = nq - q0 < FLAT_TILE_Q ? nq - q0 : FLAT_TILE_Q;
            for (size_t r0 = 0; r0 < n; r0 += FLAT_TILE_R) {
                size_t nrt = n - r0 < FLAT_TILE_R ? n - r0 : FLAT_TILE_R;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nqt, (int)nrt, (int)dim,
                            1.0f, q + q0 * dim, (int)dim, ix->vecs + r0 * dim, (int)dim, 0.0f, tile,
                            (int)nrt);
                c.q0 = q0;
                c.nq_tile = nqt;
                c.r0 = r0;
                c.nr_tile = nrt;
                chrys_parallel_for(nt, nqt, select_tile, &c);
            }
        }
        goto finish;
    }
#endif
    {
        /* SIMD path: one set of heaps per worker, merged afterwards. */
        size_t work = n * dim * nq;
        unsigned nw = nt;
        if (work / FLAT_PAR_MIN_FLOATS < nw) nw = (unsigned)(work / FLAT_PAR_MIN_FLOATS);
        if (nw < 1) nw = 1;
        if (nw > n) nw = (unsigned)n;
        size_t cnt;
        if (chrys_mul_size((size_t)nw * nq, pool, &cnt)) { rc = CHRYS_LIMIT; goto done; }
        items = chrys_malloc(cnt * sizeof *items);
        heaps = chrys_malloc((size_t)nw * nq * sizeof *heaps);
        if (!items || !heaps) {
            rc = CHRYS_NOMEM;
            goto done;
        }
        for (size_t i = 0; i < (size_t)nw * nq; i++) topk_init(&heaps[i], items + i * pool, pool);
        c.items = items;
        c.heaps = heaps;
        c.n_workers = nw;
        chrys_parallel_for(nw, n, scan_rows, &c);
        /* Merge worker heaps into worker 0's. */
        for (unsigned w = 1; w < nw; w++)
            for (size_t i = 0; i < nq; i++) {
                topk *src = &heaps[(size_t)w * nq + i];
                for (size_t j = 0; j < src->n; j++)
                    topk_push(&heaps[i], src->items[j].score, src->items[j].slot, src->items[j].id);
            }
    }
finish:
    if (!(buf = chrys_malloc((pool ? pool : 1) * sizeof *buf))) {
        rc = CHRYS_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < nq; i++) {
        topk empty = {NULL, 0, 0};
        finish_query(ix, q + i * dim, heaps ? &heaps[i] : &empty, k, o, buf, hits + i * k);
    }
done:
    chrys_free_aligned(qn);
    chrys_free_aligned(tile);
    chrys_free(qsq);
    chrys_free(items);
    chrys_free(heaps);
    chrys_free(buf);
    return rc;
}

/*
 * flat.c: exact search, the oracle of every other path, and nothing else: search.c dispatches
 * the kinds and sends here Flat float32 rows, IVF before training and every exact request.
 *
 * Three scans produce candidates (choose_path), then one finishing step ranks them:
 *  - Small batches (nq < FLAT_BLAS_MIN_NQ): the rows are split over the workers; each worker walks
 *    its rows in blocks small enough to stay in L2 and scores every query against the block, with
 *    the register-blocked dot_block kernel (4 queries x 4 rows per tile; AVX-512) or the SIMD row
 *    kernel. The base is read from memory once per batch, not once per query. On this machine the
 *    block kernel runs about 2x OpenBLAS sgemm's speed for 16 queries and about equal for 256.
 *  - Large batches at the AVX-512 level: the fused kernel (score_scan) streams the rows past a
 *    packed block of queries and pushes only scores that beat each query's running floor.
 *  - Otherwise large batches over large bases (>= FLAT_BLAS_MIN_ROWS rows, or under L2): BLAS
 *    sgemm scores a tile of queries against a tile of rows (as FAISS does), and the workers split
 *    the tile's queries to pick candidates.
 * All keep a pool of P = k + max(k, 16) candidates per query in float32. The finishing step
 * rescores the pool in double precision, applies the threshold to the double score, and keeps the
 * best k with ties broken by id. So the returned scores are the true quantity to double accuracy,
 * and the ranking equals a float64 brute force: when a float32 error could have pushed a true
 * top-k row below the pool's others, the query's pool widens until it provably holds them.
 * flat__test_force_path forces one scan so the tests can compare them.
 *
 * Internally higher is better: L2 distances are negated while scanning.
 * Thread safety: the index is only read; all scratch is allocated per call.
 */
#include <math.h>
#include <stdlib.h>

#include "dynlib.h" /* OpenBLAS's sgemm, loaded at first use */

#include "index.h"
#include "kernels/dist.h"
#include "topk.h"

#define FLAT_BLOCK_MAX_NQ 64 /* queries per dot_block call */
#define FLAT_BLAS_MIN_ROWS 65536 /* with the block kernel, sgemm only for bases at least this large */
#define FLAT_ROW_BLOCK 128  /* rows per block in the SIMD scan (128 x 4 KiB stays in L2) */
#define FLAT_TILE_Q 1024    /* sgemm tile: queries */
#define FLAT_TILE_R 1024    /* sgemm tile: rows (4 MiB of scores per tile) */
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
    const search_filter *filter;
    rows_part *parts;    /* SIMD path on a mapped index whose rows are still owed their checks: each
                          * worker checks its run of rows block by block, just before scoring it */
    size_t k;            /* fused path: the results wanted (its buffers keep what can still rank) */
    double max_norm;     /* the largest row norm (score_eps) */
} search_ctx;

static inline void push_block(topk *h, const float *s, size_t n, size_t slot0,
                              const chrys_index *ix, float floor0, const search_filter *f)
{
    float fl = topk_floor(h);
    if (fl < floor0) fl = floor0;
    for (size_t r = 0; r < n; r++) {
        if (s[r] >= fl) {
            if (!index_slot_live(ix, slot0 + r)) continue;
            if (f && !f->allow(ix->ids[slot0 + r], f->ctx)) continue;
            topk_push(h, s[r], (uint32_t)(slot0 + r), ix->ids[slot0 + r]);
            fl = topk_floor(h);
            if (fl < floor0) fl = floor0;
        }
    }
}

/* One query over rows [begin, end) as four far-apart streams (the quarters of the range, read
 * together by the four-row kernels): on this VM one stream reads about 37 GB/s from memory, four
 * about 40 (bench/membw.c, "read4"). Each score is the one-row kernels' sum shape (sixteen lanes
 * of dim/16 steps, then a reduction), within the SIMD path's bound. Blocks of each quarter go to
 * the heap as the plain loop's do; the heap's order is total, so the visiting order is free. */
static void scan_rows_4(search_ctx *c, topk *h, size_t begin, size_t end)
{
    const chrys_index *ix = c->ix;
    size_t dim = ix->dim, len = (end - begin) / 4;
    int l2 = ix->metric == CHRYS_METRIC_L2;
    float buf[4][FLAT_ROW_BLOCK];
    for (size_t b = 0; b < len; b += FLAT_ROW_BLOCK) {
        size_t nr = len - b < FLAT_ROW_BLOCK ? len - b : FLAT_ROW_BLOCK;
        for (size_t r = 0; r < nr; r++) {
            const float *x[4];
            float o[4];
            for (size_t s = 0; s < 4; s++) x[s] = ix->vecs + (begin + s * len + b + r) * dim;
            if (l2) c->kr->l2sq_x4(c->q, x, dim, o);
            else c->kr->dot_x4(c->q, x, dim, o);
            for (size_t s = 0; s < 4; s++) buf[s][r] = l2 ? -o[s] : o[s];
        }
        for (size_t s = 0; s < 4; s++) push_block(h, buf[s], nr, begin + s * len + b, ix, c->floor0, c->filter);
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
    int block = !l2 && c->kr->dot_block && c->nq >= 4;
    float tile[FLAT_BLOCK_MAX_NQ * FLAT_ROW_BLOCK];
    if (c->parts) index_rows_map_in(ix, begin, end); /* mapped rows at their first use */
    if (c->nq == 1 && !c->parts && end - begin >= 4 * FLAT_ROW_BLOCK) {
        /* one query, rows already checked: four streams, then the last few rows below */
        scan_rows_4(c, heaps, begin, end);
        begin += (end - begin) / 4 * 4;
    }
    for (size_t r0 = begin; r0 < end; r0 += FLAT_ROW_BLOCK) {
        size_t nr = end - r0 < FLAT_ROW_BLOCK ? end - r0 : FLAT_ROW_BLOCK;
        const float *x = ix->vecs + r0 * dim;
        if (c->parts) index_rows_check_range(ix, r0, r0 + nr, &c->parts[w]); /* the block is in cache next */
        if (block) {
            /* register-blocked kernel: the queries, a chunk at a time, against the row block */
            for (size_t q0 = 0; q0 < c->nq; q0 += FLAT_BLOCK_MAX_NQ) {
                size_t nqc = c->nq - q0 < FLAT_BLOCK_MAX_NQ ? c->nq - q0 : FLAT_BLOCK_MAX_NQ;
                c->kr->dot_block(c->q + q0 * dim, nqc, x, nr, dim, tile, FLAT_ROW_BLOCK);
                for (size_t qi = 0; qi < nqc; qi++)
                    push_block(&heaps[q0 + qi], tile + qi * FLAT_ROW_BLOCK, nr, r0, ix, c->floor0, c->filter);
            }
            continue;
        }
        for (size_t qi = 0; qi < c->nq; qi++) {
            const float *q = c->q + qi * dim;
            if (l2) {
                c->kr->l2sq_rows(q, x, nr, dim, buf);
                for (size_t r = 0; r < nr; r++) buf[r] = -buf[r];
            } else {
                c->kr->dot_rows(q, x, nr, dim, buf);
            }
            push_block(&heaps[qi], buf, nr, r0, ix, c->floor0, c->filter);
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
        push_block(&c->heaps[c->q0 + i], s, c->nr_tile, c->r0, ix, c->floor0, c->filter);
    }
}
#endif

/* The bound on the float32 error of query q's scores (internal units): gamma times |q| max|x|, or
 * (|q| + max|x|)^2 under L2; the finishing step's and the fused buffers' alike. */
static double score_eps(const chrys_index *ix, const float *q, double gamma, double max_norm)
{
    double qnorm = ix->metric == CHRYS_METRIC_COSINE ? 1.0 : vec_norm(q, ix->dim);
    double scale = ix->metric == CHRYS_METRIC_L2 ? (qnorm + max_norm) * (qnorm + max_norm) : qnorm * max_norm;
    return gamma * (scale > 1e-30 ? scale : 1e-30);
}

/* Fused AVX-512 path: the workers split the batch in 32-query panels; each packs a block of its
 * queries (sized for L2) and scans every row against it. A score that beats its query's running
 * threshold is appended, as a key (dist.h), to the query's buffer of 2P. A full buffer keeps only
 * the keys that can still rank in the top k: those at or above the k-th best score so far minus
 * twice the error bound (finish_query's cut, applied early: any other row has k rows above it in
 * double), and the threshold rises to that cut. Where more than P keys pass (many near-ties), it
 * keeps the best P and the threshold is the P-th, as a heap of P would; the finishing step then
 * widens the pool if its worst is close to the k-th. Which of two rows tied in float32 at the
 * P-th place is kept (the smaller row here, the smaller id on the heap paths) does not change a
 * result, by that same rule. At the end the kept keys, sorted best first, are the candidates.
 * Against the P-th as the threshold (a heap's rule), the k-th minus the bound passes about half
 * the scores on the shared real sets. */
typedef struct fused_ctx {
    const chrys_index *ix;
    const chrys_kernels *kr;
    const float *q;
    size_t nq, pool, k;
    topk *heaps;
    float floor0;
    double max_norm; /* the largest row norm (score_eps) */
    const search_filter *filter;
    int rc; /* set by a worker that could not allocate */
} fused_ctx;

typedef struct fused_buf {
    chrys_cand_sink sink;
    const chrys_kernels *kr;
    uint64_t *tmp;   /* keys_top's scratch */
    uint32_t *clean; /* per query: keys at the front of its buffer already found live and allowed */
    const chrys_index *ix;
    const search_filter *filter;
    int check; /* rows to check as they leave the buffer: tombstones (n_dead) or a filter */
    size_t pool, k;
    float floor0;
    double *eps2; /* per query of the block: twice its error bound */
} fused_buf;

/* Drop the keys of query qi past its clean prefix whose row is deleted or not allowed. */
static uint32_t fused_filter(fused_buf *fb, size_t qi)
{
    uint64_t *k = fb->sink.keys + qi * fb->sink.cap;
    const uint64_t *ids = fb->ix->ids;
    const search_filter *f = fb->filter;
    uint32_t n = fb->sink.n[qi], w = fb->clean[qi];
    if (!fb->check) return n; /* no tombstones, no filter: every row passes */
    for (uint32_t j = w; j < n; j++) {
        uint64_t id = ids[topk_key_slot(k[j])];
        if (id == CHRYS_NO_ID || (f && !f->allow(id, f->ctx))) continue;
        k[w++] = k[j];
    }
    return w;
}

/* Keep query qi's keys that can still rank in its top k (at most P of them) and return its new
 * threshold (see above); the buffer holds n of them after. */
static float fused_keep(fused_buf *fb, size_t qi)
{
    uint64_t *a = fb->sink.keys + qi * fb->sink.cap;
    uint32_t n = fused_filter(fb, qi);
    float thr = fb->floor0;
    if (n >= fb->k) {
        uint64_t *cp = fb->tmp; /* keys_top reorders what it is given: a copy */
        memcpy(cp, a, n * sizeof *a);
        double cd = (double)topk_key_score(fb->kr->keys_top(cp, n, fb->k, cp + n)) - fb->eps2[qi];
        float cut = (float)cd;
        if ((double)cut > cd) cut = nextafterf(cut, -INFINITY); /* at most finish_query's cut */
        if (cut > thr) thr = cut;
        uint64_t lowest = chrys_score_key(thr, UINT32_MAX); /* the smallest key of score thr */
        uint32_t m = 0;
        for (uint32_t j = 0; j < n; j++) {
            a[m] = a[j];
            m += a[j] >= lowest;
        }
        n = m;
    }
    if (n > fb->pool) { /* more than P near the top: the best P, as a heap of P would keep */
        float s = topk_key_score(fb->kr->keys_top(a, n, fb->pool, fb->tmp));
        n = (uint32_t)fb->pool;
        if (s > thr) thr = s;
    }
    fb->sink.n[qi] = fb->clean[qi] = n;
    return thr;
}

static float fused_full(void *arg, size_t qi) { return fused_keep(arg, qi); }

/* Query qi's kept keys, sorted best first, as its candidates. */
static void fused_finish(fused_buf *fb, size_t qi, topk *h)
{
    uint64_t *k = fb->sink.keys + qi * fb->sink.cap;
    fused_keep(fb, qi);
    uint32_t n = fb->sink.n[qi];
    fb->kr->keys_sort(k, n, fb->tmp);
    for (uint32_t j = 0; j < n; j++) {
        uint32_t slot = topk_key_slot(k[j]);
        h->items[j] = (topk_item){topk_key_score(k[j]), slot, fb->ix->ids[slot]};
    }
    h->n = n;
}

static void fused_scan(void *arg, unsigned w, size_t begin, size_t end)
{
    (void)w;
    fused_ctx *c = arg;
    const chrys_index *ix = c->ix;
    size_t dim = ix->dim;
    int l2 = ix->metric == CHRYS_METRIC_L2;
    /* query block: about 512 KiB packed, so it stays in L2 while the rows stream past */
    size_t mc = ((512u << 10) / (dim * sizeof(float))) & ~(size_t)31;
    if (mc < 32) mc = 32;
    size_t qb = begin * 32, qe = end * 32 < c->nq ? end * 32 : c->nq;
    if (qe - qb < mc) mc = (qe - qb + 31) & ~(size_t)31;
    size_t cap = 2 * c->pool; /* measured 2P..6P: within 4%, 2P best once a full buffer keeps about k */
    float *qp = chrys_malloc_aligned(mc * dim * sizeof(float));
    float *thr = chrys_malloc(mc * sizeof(float)), *qsq = chrys_malloc(mc * sizeof(float));
    fused_buf fb = {{NULL, NULL, (uint32_t)cap, fused_full, NULL}, c->kr, NULL, NULL, ix, c->filter,
                    ix->n_dead > 0 || c->filter, c->pool, c->k, c->floor0, NULL};
    fb.sink.ctx = &fb;
    size_t nkeys;
    if (cap > UINT32_MAX || chrys_mul_size(mc, cap, &nkeys) || chrys_mul_size(nkeys, sizeof(uint64_t), &nkeys)) {
        c->rc = CHRYS_LIMIT;
        goto done;
    }
    fb.sink.keys = chrys_malloc(nkeys);
    fb.sink.n = chrys_malloc(mc * sizeof(uint32_t));
    fb.clean = chrys_malloc(mc * sizeof(uint32_t));
    fb.tmp = chrys_malloc((4 * cap + 24) * sizeof(uint64_t)); /* a copy of a buffer and keys_top's 3n + 24 */
    fb.eps2 = chrys_malloc(mc * sizeof(double));
    if (!qp || !thr || !qsq || !fb.sink.keys || !fb.sink.n || !fb.clean || !fb.tmp || !fb.eps2) {
        c->rc = CHRYS_NOMEM;
        goto done;
    }
    for (size_t q0 = qb; q0 < qe; q0 += mc) {
        size_t m = qe - q0 < mc ? qe - q0 : mc;
        chrys_score_pack_q(c->q + q0 * dim, m, dim, qp);
        for (size_t i = 0; i < mc; i++) {
            thr[i] = i < m ? c->floor0 : NAN; /* padding lanes never pass */
            qsq[i] = 0;
            fb.sink.n[i] = fb.clean[i] = 0;
            if (i < m) fb.eps2[i] = 2 * score_eps(ix, c->q + (q0 + i) * dim, 2.0 * f32_gamma((double)dim), c->max_norm);
            if (l2 && i < m) {
                double nr = vec_norm(c->q + (q0 + i) * dim, dim);
                qsq[i] = (float)(nr * nr);
            }
        }
        c->kr->score_scan(qp, m, ix->vecs, 0, ix->n, dim, l2, qsq, ix->norms, thr, &fb.sink);
        for (size_t i = 0; i < m; i++) fused_finish(&fb, i, &c->heaps[q0 + i]);
    }
done:
    chrys_free_aligned(qp);
    chrys_free(thr);
    chrys_free(qsq);
    chrys_free(fb.sink.keys);
    chrys_free(fb.sink.n);
    chrys_free(fb.clean);
    chrys_free(fb.tmp);
    chrys_free(fb.eps2);
}

/* Rank one query's candidates in double precision and write its k results (ids, true scores).
 * eps bounds the float32 error of a candidate's score. Only candidates whose float32 score lies
 * within 2*eps of the k-th best float32 score are rescored: any other is provably below k of them.
 * Returns 1 if the pool may have missed a row: it was full (a row was left out) and its worst
 * float32 score lies within eps of the k-th double score, so a left-out row could rank higher. */
static int finish_query(const chrys_index *ix, const float *q, topk *cand, size_t k, int use_thr, double thr,
                        double eps, size_t n_rows, ranked *buf, uint64_t *out_ids, double *out_scores)
{
    size_t dim = ix->dim, n = cand->n;
    int l2 = ix->metric == CHRYS_METRIC_L2;
    const chrys_kernels *kr = chrys_kernels_active();
    size_t m = n; /* cand: sorted best first by float32 score */
    if (n > k) {
        double cut = (double)cand->items[k - 1].score - 2 * eps;
        m = k;
        while (m < n && (double)cand->items[m].score >= cut) m++;
    }
    for (size_t j = 0; j < m; j += 4) { /* four rows at a time (the same bits as one by one) */
        const float *x[4];
        double d[4];
        for (size_t r = 0; r < 4; r++) x[r] = ix->vecs + (size_t)cand->items[j + r < m ? j + r : j].slot * dim;
        if (l2) kr->l2sq_f64_x4(q, x, dim, d);
        else kr->dot_f64_x4(q, x, dim, d);
        for (size_t r = 0; r < 4 && j + r < m; r++) {
            buf[j + r].score = l2 ? -d[r] : d[r];
            buf[j + r].id = cand->items[j + r].id;
        }
    }
    qsort(buf, m, sizeof *buf, ranked_cmp_best_first);
    float worst = n ? cand->items[n - 1].score : INFINITY;
    if (n == cand->cap && n < n_rows && n >= k && (double)worst >= buf[k - 1].score - eps) return 1;
    size_t out = 0;
    for (size_t j = 0; j < m && out < k; j++) {
        double s = l2 ? -buf[j].score : buf[j].score;
        if (use_thr && (l2 ? s > thr : s < thr)) break;
        out_ids[out] = buf[j].id;
        out_scores[out] = s;
        out++;
    }
    for (; out < k; out++) {
        out_ids[out] = CHRYS_NO_ID;
        out_scores[out] = l2 ? INFINITY : -INFINITY;
    }
    return 0;
}

static flat_path forced_path; /* flat__test_force_path; FLAT_PATH_AUTO in normal use */
static int last_path;         /* flat__test_last_path (atomic: searches may run at once) */

flat_path flat__test_last_path(void) { return (flat_path)__atomic_load_n(&last_path, __ATOMIC_RELAXED); }

int flat__test_force_path(flat_path p)
{
    if (p == FLAT_PATH_FUSED && !chrys_kernels_active()->score_scan) return CHRYS_INVALID;
    if (p == FLAT_PATH_SGEMM && !chrys_blas()) return CHRYS_INVALID;
    forced_path = p;
    return CHRYS_OK;
}

/* The scan for nq queries: the fused kernel (AVX-512) for large batches, else sgemm for large
 * batches over large bases (or without the block kernel, or under L2), else the SIMD kernels.
 * first_pass = 0 (widening one query's pool): always the SIMD kernels, whose bound it uses. */
static flat_path choose_path(const chrys_index *ix, const chrys_kernels *kr, size_t nq, int first_pass)
{
    if (!first_pass) return FLAT_PATH_SIMD;
    if (forced_path != FLAT_PATH_AUTO) return forced_path;
    if (nq >= FLAT_BLAS_MIN_NQ && kr->score_scan && !getenv("CHRYS_FLAT_SGEMM")) return FLAT_PATH_FUSED;
#ifdef CHRYS_HAVE_BLAS
    /* sgemm for large batches over large bases; below FLAT_BLAS_MIN_ROWS our block kernel, free
     * of BLAS's thread start-up and spinning, measured faster (Chrysalis 926 rows: 31.8k vs 29.7k
     * QPS; MiniLM 1,580 rows: 45.7k vs 43.5k; the merger at 10k records 0.81 s vs 0.99 s), and
     * sgemm faster at 200k rows (236 vs 219 QPS, one thread). */
    int blas_ok = !kr->dot_block || ((ix->metric == CHRYS_METRIC_L2 || ix->n >= FLAT_BLAS_MIN_ROWS) && chrys_blas_fast());
    if (nq >= FLAT_BLAS_MIN_NQ && blas_ok && chrys_blas()) return FLAT_PATH_SGEMM;
#else
    (void)ix;
#endif
    return FLAT_PATH_SIMD;
}

/* Fused path: every score one sequential float32 sum of dim products (the same bound as sgemm). */
static int collect_fused(search_ctx *c, unsigned nt)
{
    const chrys_index *ix = c->ix;
    size_t nq = c->nq, n = ix->n, dim = ix->dim;
    for (size_t i = 0; i < nq; i++) topk_init(&c->heaps[i], c->items + i * c->pool, c->pool);
    fused_ctx fc = {ix, c->kr, c->q, nq, c->pool, c->k, c->heaps, c->floor0, c->max_norm, c->filter, CHRYS_OK};
    size_t panels = (nq + 31) / 32;
    unsigned nw = nt;
    if (n * dim * nq / FLAT_PAR_MIN_FLOATS < nw) nw = (unsigned)(n * dim * nq / FLAT_PAR_MIN_FLOATS);
    if (nw < 1) nw = 1;
    chrys_parallel_for(nw, panels, fused_scan, &fc);
    return fc.rc;
}

#ifdef CHRYS_HAVE_BLAS
static int collect_sgemm(search_ctx *c, unsigned nt)
{
    const chrys_index *ix = c->ix;
    size_t nq = c->nq, n = ix->n, dim = ix->dim;
    const float *q = c->q;
    /* only as large as this search needs: a fresh multi-MiB block costs page faults per call */
    size_t tq = nq < FLAT_TILE_Q ? nq : FLAT_TILE_Q, tr = n < FLAT_TILE_R ? n : FLAT_TILE_R;
    c->tile = chrys_malloc_aligned(tq * tr * sizeof(float));
    if (ix->metric == CHRYS_METRIC_L2) c->qsq = chrys_malloc(nq * sizeof *c->qsq);
    if (!c->tile || (ix->metric == CHRYS_METRIC_L2 && !c->qsq)) return CHRYS_NOMEM;
    for (size_t i = 0; i < nq; i++) {
        topk_init(&c->heaps[i], c->items + i * c->pool, c->pool);
        if (c->qsq) {
            double s = vec_norm(q + i * dim, dim);
            c->qsq[i] = (float)(s * s);
        }
    }
    for (size_t q0 = 0; q0 < nq; q0 += FLAT_TILE_Q) {
        size_t nqt = nq - q0 < FLAT_TILE_Q ? nq - q0 : FLAT_TILE_Q;
        for (size_t r0 = 0; r0 < n; r0 += FLAT_TILE_R) {
            size_t nrt = n - r0 < FLAT_TILE_R ? n - r0 : FLAT_TILE_R;
            chrys_blas()->sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nqt, (int)nrt, (int)dim, 1.0f, q + q0 * dim,
                        (int)dim, ix->vecs + r0 * dim, (int)dim, 0.0f, c->tile, (int)nrt);
            c->q0 = q0;
            c->nq_tile = nqt;
            c->r0 = r0;
            c->nr_tile = nrt;
            chrys_parallel_for(nt, nqt, select_tile, c);
        }
    }
    return CHRYS_OK;
}
#endif

/* SIMD path: one set of heaps per worker (c->heaps holds nw * nq), merged into worker 0's. */
static void collect_simd(search_ctx *c, unsigned nw)
{
    size_t nq = c->nq;
    for (size_t i = 0; i < (size_t)nw * nq; i++) topk_init(&c->heaps[i], c->items + i * c->pool, c->pool);
    c->n_workers = nw;
    chrys_parallel_for(nw, c->ix->n, scan_rows, c);
    for (unsigned w = 1; w < nw; w++)
        for (size_t i = 0; i < nq; i++) {
            topk *src = &c->heaps[(size_t)w * nq + i];
            for (size_t j = 0; j < src->n; j++)
                topk_push(&c->heaps[i], src->items[j].score, src->items[j].slot, src->items[j].id);
        }
}

/* Collect float32 candidates (pool per query) for nq prepared queries into heaps[0..nq).
 * *path_out: the path that scored them (its rounding bound differs). */
static int collect(const chrys_index *ix, size_t nq, const float *q, size_t k, size_t pool, float floor0,
                   double max_norm, unsigned nt, int first_pass, topk_item **items_out, topk **heaps_out,
                   flat_path *path_out, const search_filter *filter)
{
    size_t dim = ix->dim, n = ix->n;
    search_ctx c = {ix, chrys_kernels_active(), q, nq, pool, floor0, NULL, NULL, NULL, NULL, 0, 0, 0, 0, 1, filter,
                    NULL, k, max_norm};
    flat_path path = choose_path(ix, c.kr, nq, first_pass);
    *path_out = path;
    if (first_pass) __atomic_store_n(&last_path, (int)path, __ATOMIC_RELAXED);
    unsigned nw = 1; /* sets of heaps: one per worker on the SIMD path */
    if (path == FLAT_PATH_SIMD) {
        size_t work = n * dim * nq;
        nw = nt;
        if (work / FLAT_PAR_MIN_FLOATS < nw) nw = (unsigned)(work / FLAT_PAR_MIN_FLOATS);
        if (nw < 1) nw = 1;
        if (nw > n) nw = (unsigned)n;
    }
    size_t cnt;
    if (chrys_mul_size((size_t)nw * nq, pool, &cnt)) return CHRYS_LIMIT;
    /* rows still owed their checks (a mapped store opened with CHRYS_MMAP_CHECK_ON_USE): the SIMD
     * scan reads every row anyway and checks each block as it comes; any other path first */
    int verify = first_pass && path == FLAT_PATH_SIMD && index_rows_state(ix) == ROWS_OWED;
    int rc = verify ? CHRYS_OK : index_rows_ready(ix);
    if (rc) return rc;
    if (verify) {
        if (!(c.parts = chrys_malloc((size_t)nw * sizeof *c.parts))) return CHRYS_NOMEM;
        for (unsigned w = 0; w < nw; w++) c.parts[w] = (rows_part){0, 0, SIZE_MAX};
    }
    c.items = chrys_malloc(cnt * sizeof *c.items);
    c.heaps = chrys_malloc((size_t)nw * nq * sizeof *c.heaps);
    if (!c.items || !c.heaps) rc = CHRYS_NOMEM;
    if (!rc && path == FLAT_PATH_FUSED) rc = collect_fused(&c, nt);
#ifdef CHRYS_HAVE_BLAS
    else if (!rc && path == FLAT_PATH_SGEMM) rc = collect_sgemm(&c, nt);
#endif
    else if (!rc) collect_simd(&c, nw);
    if (!rc && verify) rc = index_rows_verdict(ix, c.parts, nw);
    chrys_free(c.parts);
    chrys_free_aligned(c.tile);
    chrys_free(c.qsq);
    if (rc) {
        chrys_free(c.items);
        chrys_free(c.heaps);
        return rc;
    }
    *items_out = c.items;
    *heaps_out = c.heaps;
    return CHRYS_OK;
}

/* The float32 floor below which no row can pass the threshold t (internal: higher is better):
 * t minus the rounding bound of any path's score (search.c's rule with the expanded L2 form's
 * extra roundings: gamma_{d+8} times |q||x|, or (|q|+|x|)^2 under L2, at the batch's largest
 * norms), and minus the rounding of t and of the floor themselves. Decided in double later. */
static float threshold_floor(const chrys_index *ix, size_t nq, const float *q, double t, double max_norm)
{
    double qmax = 1.0;
    if (ix->metric != CHRYS_METRIC_COSINE) {
        qmax = 0;
        for (size_t i = 0; i < nq; i++) {
            double v = vec_norm(q + i * ix->dim, ix->dim);
            if (v > qmax) qmax = v;
        }
    }
    double scale = ix->metric == CHRYS_METRIC_L2 ? (qmax + max_norm) * (qmax + max_norm) : qmax * max_norm;
    return (float)(t - f32_gamma((double)ix->dim + 8) * scale - 0x1p-22 * fabs(t));
}

int flat_search_prepared(const chrys_index *ix, size_t nq, const float *q, size_t k, int use_thr,
                         double thr, unsigned nt, uint64_t *ids, double *scores, const search_filter *filter)
{
    size_t dim = ix->dim, n = ix->n;
    int l2 = ix->metric == CHRYS_METRIC_L2;
    if (!ix->vecs && n) return CHRYS_INVALID; /* SQ8-only HNSW: no float32 rows to scan */
    if (nt == 0) nt = chrys_online_cpus();
    size_t pool = k + (k > 16 ? k : 16);
    if (pool > n) pool = n;
    double max_norm = 0; /* the largest row norm */
    if (ix->metric == CHRYS_METRIC_COSINE) max_norm = n ? 1.0 : 0.0;
    else
        for (size_t r = 0; r < n; r++)
            if (ix->norms[r] > max_norm) max_norm = ix->norms[r];
    float floor0 = use_thr ? threshold_floor(ix, nq, q, l2 ? -thr : thr, max_norm) : -INFINITY;
    topk_item *items = NULL;
    topk *heaps = NULL;
    ranked *buf = NULL;
    int rc = CHRYS_OK;
    flat_path path = FLAT_PATH_SIMD, wpath;
    if (n > 0 && (rc = collect(ix, nq, q, k, pool, floor0, max_norm, nt, 1, &items, &heaps, &path, filter))) return rc;
    /* Bound on the float32 error of a score, relative to |q||x| ((|q|+|x|)^2 for L2): a sum of d
     * products rounded d times at most (sgemm, whose order is unknown, and the fused kernel), or,
     * for the SIMD kernels, about d/16 sequential additions per lane plus the reductions; with a
     * 2x margin. */
    double gamma = 2.0 * f32_gamma(path != FLAT_PATH_SIMD ? (double)dim : dim / 16.0 + 8.0);
    size_t cap = pool ? pool : 1;
    if (!(buf = chrys_malloc(cap * sizeof *buf))) {
        rc = CHRYS_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < nq; i++) {
        const float *qi = q + i * dim;
        double eps = score_eps(ix, qi, gamma, max_norm);
        topk empty = {NULL, 0, 0};
        topk *cand = heaps ? &heaps[i] : &empty;
        if (path != FLAT_PATH_FUSED) topk_sort(cand); /* the fused path's come sorted */
        if (!finish_query(ix, qi, cand, k, use_thr, thr, eps, n, buf, ids + i * k, scores + i * k))
            continue;
        /* Rare: near-ties at the pool boundary. Widen the pool for this query until it is
         * provably complete (or holds every row). */
        size_t wide = pool;
        for (;;) {
            wide = wide * 4 < n ? wide * 4 : n;
            topk_item *wi = NULL;
            topk *wh = NULL;
            ranked *wb = chrys_malloc(wide * sizeof *wb);
            if (!wb || (rc = collect(ix, 1, qi, k, wide, floor0, max_norm, nt, 0, &wi, &wh, &wpath, filter))) {
                chrys_free(wb);
                rc = rc ? rc : CHRYS_NOMEM;
                goto done;
            }
            double weps = score_eps(ix, qi, 2.0 * f32_gamma(dim / 16.0 + 8.0), max_norm); /* SIMD path */
            topk_sort(wh);
            int again = finish_query(ix, qi, wh, k, use_thr, thr, weps, n, wb, ids + i * k, scores + i * k);
            chrys_free(wi);
            chrys_free(wh);
            chrys_free(wb);
            if (!again) break;
        }
    }
done:
    chrys_free(items);
    chrys_free(heaps);
    chrys_free(buf);
    return rc;
}

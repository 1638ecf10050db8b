/*
 * sq8.c: int8 scalar quantisation shared by the index kinds (see sq8.h), and the scan of a Flat
 * index kept as codes.
 */
#include <math.h>
#include <stdlib.h>

#include "kernels/dist.h"
#include "sq8.h"

int sq8_train(chrys_index *ix, const float *rows, size_t n)
{
    if (!ix->sq_min) {
        float *mn = chrys_malloc(ix->dim * sizeof(float)), *st = chrys_malloc(ix->dim * sizeof(float));
        if (!mn || !st) {
            chrys_free(mn);
            chrys_free(st);
            return CHRYS_NOMEM;
        }
        ix->sq_min = mn;
        ix->sq_step = st;
    }
    for (uint32_t d = 0; d < ix->dim; d++) {
        float lo = INFINITY, hi = -INFINITY;
        for (size_t i = 0; i < n; i++) {
            float x = rows[i * ix->dim + d];
            lo = x < lo ? x : lo;
            hi = x > hi ? x : hi;
        }
        if (n == 0) lo = hi = 0;
        ix->sq_min[d] = lo;
        ix->sq_step[d] = (float)(((double)hi - lo) / 255.0); /* in double: hi - lo may overflow float */
    }
    return CHRYS_OK;
}

void sq8_encode(chrys_index *ix, size_t slot, const float *x)
{
    uint8_t *c = ix->codes + slot * ix->dim;
    double sq = 0;
    for (uint32_t d = 0; d < ix->dim; d++) {
        float t = ix->sq_step[d] > 0 ? (x[d] - ix->sq_min[d]) / ix->sq_step[d] : 0;
        t = t < 0 ? 0 : t > 255 ? 255 : t; /* clamp first: lrintf of a huge t is undefined */
        c[d] = (uint8_t)lrintf(t);
        double y = ix->sq_min[d] + (double)ix->sq_step[d] * c[d];
        sq += y * y;
    }
    if (ix->sq_csq) ix->sq_csq[slot] = (float)sq;
}

void sq8_decode(const chrys_index *ix, size_t slot, float *out)
{
    const uint8_t *c = ix->codes + slot * ix->dim;
    for (size_t d = 0; d < ix->dim; d++) out[d] = ix->sq_min[d] + ix->sq_step[d] * c[d];
}

void sq8_refresh_norms(chrys_index *ix)
{
    if (!ix->sq_csq || !ix->codes || !ix->sq_min) return;
    for (size_t v = 0; v < ix->n; v++) {
        double sq = 0;
        const uint8_t *c = ix->codes + v * ix->dim;
        for (size_t d = 0; d < ix->dim; d++) {
            double y = ix->sq_min[d] + (double)ix->sq_step[d] * c[d];
            sq += y * y;
        }
        ix->sq_csq[v] = (float)sq;
    }
}

void sq8_prepare(const chrys_index *ix, const float *v, sq8_query *q, int8_t *w8)
{
    size_t dim = ix->dim, d = 0;
    /* 16 independent lanes so the compiler vectorises the sums (the lanes are added in double) */
    float mx[16] = {0}, bs[16] = {0}, qs[16] = {0};
    for (; d + 16 <= dim; d += 16)
        for (int l = 0; l < 16; l++) {
            float x = v[d + l], w = fabsf(x * ix->sq_step[d + l]);
            mx[l] = w > mx[l] ? w : mx[l];
            bs[l] += x * ix->sq_min[d + l];
            qs[l] += x * x;
        }
    for (; d < dim; d++) {
        float x = v[d], w = fabsf(x * ix->sq_step[d]);
        mx[0] = w > mx[0] ? w : mx[0];
        bs[0] += x * ix->sq_min[d];
        qs[0] += x * x;
    }
    float m = 0;
    double bias = 0, qsq = 0;
    for (int l = 0; l < 16; l++) {
        m = mx[l] > m ? mx[l] : m;
        bias += bs[l];
        qsq += qs[l];
    }
    float inv = m > 0 ? 127.0f / m : 0;
    for (d = 0; d < dim; d++) { /* |t| <= 127; rounded half away from zero (vectorises, no libm call) */
        float t = v[d] * ix->sq_step[d] * inv;
        w8[d] = (int8_t)(int)(t + (t >= 0 ? 0.5f : -0.5f));
    }
    q->f = v;
    q->w8 = w8;
    q->scale = m > 0 ? m / 127.0f : 0;
    q->bias = (float)bias;
    q->qsq = (float)qsq;
}

static int cmp_fin(const void *pa, const void *pb)
{
    const sq8_fin *a = pa, *b = pb;
    if (rank_worse(b->s, b->id, a->s, a->id)) return -1; /* the one ranking order (internal.h) */
    return rank_worse(a->s, a->id, b->s, b->id);
}

static void sort_fin(sq8_fin *fin, size_t nc)
{
    if (nc <= 48) { /* the usual few candidates: insertion sort, no comparator calls */
        for (size_t i = 1; i < nc; i++) {
            sq8_fin x = fin[i];
            size_t j = i;
            while (j > 0 && rank_worse(fin[j - 1].s, fin[j - 1].id, x.s, x.id)) {
                fin[j] = fin[j - 1];
                j--;
            }
            fin[j] = x;
        }
    } else {
        qsort(fin, nc, sizeof *fin, cmp_fin);
    }
}

void sq8_finish(const chrys_index *ix, const float *qv, const uint32_t *c, size_t nc, size_t k, int use_thr, double thr,
                uint64_t *ids, double *scores, float *wf, sq8_fin *fin)
{
    const chrys_kernels *kr = chrys_kernels_active();
    size_t dim = ix->dim;
    int l2 = ix->metric == CHRYS_METRIC_L2;
    double bias = 0, qsq = 0;
    if (!ix->vecs) {
        for (size_t d = 0; d < dim; d++) {
            wf[d] = qv[d] * ix->sq_step[d];
            bias += (double)qv[d] * ix->sq_min[d];
            qsq += (double)qv[d] * qv[d];
        }
    }
    if (ix->vecs && k > 0 && nc > k + 8) {
        /* Float32 rows: score every candidate in float32, then again in double only the k best
         * and those within float32 error of the k-th (only they can be in the top k). */
        for (size_t j = 0; j < nc; j++) {
            const float *x = ix->vecs + (size_t)c[j] * dim;
            fin[j] = (sq8_fin){l2 ? -kr->l2sq(qv, x, dim) : kr->dot(qv, x, dim), j};
        }
        sort_fin(fin, nc);
        double kth = fin[k - 1].s, tol = rerank_slack(ix, qv, kth, c, nc);
        size_t depth = k;
        while (depth < nc && fin[depth].s >= kth - tol) depth++;
        for (size_t j = 0; j < depth; j++) {
            uint32_t v = c[fin[j].id];
            const float *x = ix->vecs + (size_t)v * dim;
            fin[j] = (sq8_fin){l2 ? -kr->l2sq_f64(qv, x, dim) : kr->dot_f64(qv, x, dim), ix->ids[v]};
        }
        nc = depth;
    } else {
        for (size_t j = 0; j < nc; j++) {
            uint32_t v = c[j];
            double sc;
            if (ix->vecs) {
                const float *x = ix->vecs + (size_t)v * dim;
                sc = l2 ? -kr->l2sq_f64(qv, x, dim) : kr->dot_f64(qv, x, dim);
            } else {
                double ip = bias + kr->dot_u8(wf, ix->codes + (size_t)v * dim, dim);
                sc = l2 ? 2 * ip - ix->sq_csq[v] - qsq : ip;
            }
            fin[j] = (sq8_fin){sc, ix->ids[v]};
        }
    }
    sort_fin(fin, nc);
    size_t m = 0;
    for (size_t j = 0; j < nc && m < k; j++) {
        double sc = l2 ? -fin[j].s : fin[j].s;
        if (use_thr && (l2 ? sc > thr : sc < thr)) break;
        ids[m] = fin[j].id;
        scores[m] = sc;
        m++;
    }
    for (; m < k; m++) {
        ids[m] = CHRYS_NO_ID;
        scores[m] = l2 ? INFINITY : -INFINITY;
    }
}

/* ------------------------------------------------------------------------------------------
 * Flat scan over codes
 */

static void flat_range(void *arg, unsigned w, size_t b, size_t e)
{
    (void)w;
    search_job *c = arg;
    const chrys_index *ix = c->ix;
    const chrys_kernels *kr = chrys_kernels_active();
    size_t dim = ix->dim, n = ix->n;
    int8_t *w8 = chrys_malloc(dim);
    float *wf = chrys_malloc(dim * sizeof *wf);
    topk_item *items = chrys_malloc(c->pool * sizeof *items);
    uint32_t *slots = chrys_malloc(c->pool * sizeof *slots);
    sq8_fin *fin = chrys_malloc(c->pool * sizeof *fin);
    if (!w8 || !wf || !items || !slots || !fin) {
        c->rc = CHRYS_NOMEM;
        goto out;
    }
    for (size_t qi = b; qi < e; qi++) {
        const float *qv = c->q + qi * dim;
        sq8_query q;
        sq8_prepare(ix, qv, &q, w8);
        topk best;
        topk_init(&best, items, c->pool);
        size_t r = 0;
        for (; r + 4 <= n; r += 4) {
            const uint8_t *cs[4] = {ix->codes + r * dim, ix->codes + (r + 1) * dim, ix->codes + (r + 2) * dim,
                                    ix->codes + (r + 3) * dim};
            int32_t d4[4];
            kr->dot_u8i8_x4(cs, w8, dim, d4);
            for (int t = 0; t < 4; t++) {
                float sc = sq8_score_i32(ix, &q, d4[t], r + t);
                uint64_t id = ix->ids[r + t];
                if (sc >= topk_floor(&best) && id != CHRYS_NO_ID && (!c->filter || c->filter->allow(id, c->filter->ctx)))
                    topk_push(&best, sc, (uint32_t)(r + t), id);
            }
        }
        for (; r < n; r++) {
            float sc = sq8_score_i32(ix, &q, kr->dot_u8i8(ix->codes + r * dim, w8, dim), r);
            uint64_t id = ix->ids[r];
            if (sc >= topk_floor(&best) && id != CHRYS_NO_ID && (!c->filter || c->filter->allow(id, c->filter->ctx)))
                topk_push(&best, sc, (uint32_t)r, id);
        }
        for (size_t j = 0; j < best.n; j++) slots[j] = best.items[j].slot;
        sq8_finish(ix, qv, slots, best.n, c->k, c->use_thr, c->thr, c->ids + qi * c->k, c->scores + qi * c->k, wf, fin);
    }
out:
    chrys_free(w8);
    chrys_free(wf);
    chrys_free(items);
    chrys_free(slots);
    chrys_free(fin);
}

int sq8_flat_search(const chrys_index *ix, size_t nq, const float *q, size_t k, int use_thr, double thr, unsigned nt,
                    uint64_t *ids, double *scores, const search_filter *filter)
{
    size_t pool = k * 4 > k + 32 ? k * 4 : k + 32;
    search_job c = {ix, q, k, use_thr, thr, ids, scores, filter, pool, 0, CHRYS_OK};
    if (nt == 0) nt = chrys_online_cpus();
    chrys_parallel_chunks(nq >= 2 * (size_t)nt ? nt : 1, nq, 0, flat_range, &c);
    return c.rc;
}

/* ------------------------------------------------------------------------------------------
 * Code storage: the codes, ranges and |code|^2 of every slot, for every index kind.
 */
int sq8_reserve(chrys_index *ix, size_t cap)
{
    if (!ix->sq8) return CHRYS_OK;
    uint8_t *c = chrys_realloc_aligned(ix->codes, ix->n * (size_t)ix->dim, cap * (size_t)ix->dim);
    if (!c) return CHRYS_NOMEM;
    ix->codes = c;
    if (ix->metric == CHRYS_METRIC_L2) {
        float *q = chrys_realloc(ix->sq_csq, cap * sizeof *q);
        if (!q) return CHRYS_NOMEM;
        ix->sq_csq = q;
    }
    return CHRYS_OK;
}

void sq8_free(chrys_index *ix)
{
    sq8_store st;
    sq8_store_init(&st);
    sq8_swap(ix, &st);
    sq8_store_free(&st);
}

void sq8_store_init(sq8_store *st) { memset(st, 0, sizeof *st); }

void sq8_store_free(sq8_store *st)
{
    chrys_free_aligned(st->codes);
    chrys_free(st->csq);
    chrys_free(st->min);
    chrys_free(st->step);
    sq8_store_init(st);
}

void sq8_swap(chrys_index *ix, sq8_store *st)
{
    sq8_store mine = {ix->codes, ix->sq_csq, ix->sq_min, ix->sq_step, 0};
    ix->codes = st->codes;
    ix->sq_csq = st->csq;
    ix->sq_min = st->min;
    ix->sq_step = st->step;
    *st = mine;
}

int sq8_store_alloc(const chrys_index *ix, size_t cap, sq8_store *st)
{
    sq8_store_init(st);
    if (!(st->codes = chrys_malloc_aligned((cap ? cap : 1) * (size_t)ix->dim)) ||
        (ix->metric == CHRYS_METRIC_L2 && !(st->csq = chrys_malloc((cap ? cap : 1) * sizeof *st->csq)))) {
        sq8_store_free(st);
        return CHRYS_NOMEM;
    }
    return CHRYS_OK;
}

int sq8_retrain_prepare(const chrys_index *ix, size_t cap, sq8_store *st)
{
    sq8_store_init(st);
    if (!ix->sq8 || !ix->vecs) return CHRYS_OK; /* no codes, or codes only: kept as they are */
    st->min = chrys_malloc(ix->dim * sizeof(float));
    st->step = chrys_malloc(ix->dim * sizeof(float));
    st->codes = !ix->codes ? chrys_malloc_aligned(cap * (size_t)ix->dim) : NULL;
    st->csq = ix->metric == CHRYS_METRIC_L2 && !ix->sq_csq ? chrys_malloc(cap * sizeof *st->csq) : NULL;
    if (!st->min || !st->step || (!ix->codes && !st->codes) || (ix->metric == CHRYS_METRIC_L2 && !ix->sq_csq && !st->csq)) {
        sq8_store_free(st);
        return CHRYS_NOMEM;
    }
    st->retrain = 1;
    return CHRYS_OK;
}

void sq8_retrain_commit(chrys_index *ix, sq8_store *st, const float *rows, size_t n)
{
    if (!st->retrain) return;
    chrys_free(ix->sq_min);
    chrys_free(ix->sq_step);
    ix->sq_min = st->min;
    ix->sq_step = st->step;
    if (st->codes) ix->codes = st->codes;
    if (st->csq) ix->sq_csq = st->csq;
    sq8_store_init(st);
    sq8_train(ix, rows, n); /* ranges into the arrays just installed: cannot fail */
    for (size_t i = 0; i < n; i++) sq8_encode(ix, i, rows + i * ix->dim);
}

int sq8_train_all(chrys_index *ix)
{
    size_t cap = ix->cap ? ix->cap : 1;
    float *csq = NULL;
    uint8_t *codes = NULL;
    if ((ix->metric == CHRYS_METRIC_L2 && !ix->sq_csq && !(csq = chrys_malloc(cap * sizeof *csq))) ||
        (!ix->codes && !(codes = chrys_malloc_aligned(cap * (size_t)ix->dim))) || sq8_train(ix, ix->vecs, ix->n)) {
        chrys_free(csq);
        chrys_free_aligned(codes);
        return CHRYS_NOMEM; /* (sq8_train allocates nothing, or frees what it allocated) */
    }
    if (csq) ix->sq_csq = csq;
    if (codes) ix->codes = codes;
    for (size_t i = 0; i < ix->n; i++) sq8_encode(ix, i, ix->vecs + i * ix->dim);
    return CHRYS_OK;
}

void sq8_encode_rows(chrys_index *ix, size_t first, const float *rows)
{
    for (size_t s = first; s < ix->n; s++) sq8_encode(ix, s, rows + (s - first) * ix->dim);
}

void sq8_move(chrys_index *ix, uint32_t slot, uint32_t last)
{
    if (!ix->sq8 || !ix->codes || slot == last) return;
    memcpy(ix->codes + (size_t)slot * ix->dim, ix->codes + (size_t)last * ix->dim, ix->dim);
    if (ix->sq_csq) ix->sq_csq[slot] = ix->sq_csq[last];
}

void sq8_decode_rows(const chrys_index *ix, size_t s0, size_t m, float *out)
{
    for (size_t i = 0; i < m; i++) {
        float *o = out + i * ix->dim;
        sq8_decode(ix, s0 + i, o);
        if (ix->metric == CHRYS_METRIC_COSINE) {
            double nr = vec_norm(o, ix->dim);
            if (nr > 0) vec_scale_to(o, o, ix->dim, nr);
        }
    }
}

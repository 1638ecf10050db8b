/*
 * ivf.c: the IVF index: its lists, their training (k-means, kmeans.c) and search. The SQ8 codes
 * are sq8.c's, and when to train is the planner's (planner.c).
 *
 * Layout: an IVF index keeps its rows where a Flat index does (contiguous, slot order); the lists
 * are arrays of slots, so adding, removing and updating rows stays O(1) and exact search over the
 * same index remains possible. With SQ8, each row has dim one-byte codes,
 * value = min[d] + code * step[d] (per-dimension range from the training set, codes clamped), kept
 * where a codes-only Flat or HNSW index keeps them (sq8.c); a search scans the codes with the int8
 * kernel and ranks its best candidates with sq8_finish. "IVF<n>,SQ8" keeps the codes only: the
 * float32 rows stay until k-means has trained on them (an untrained index searches them exactly)
 * and are then dropped, so a retrain or re-plan trains on decoded codes (the codes themselves are
 * kept, never re-quantised); "IVF<n>,SQ8,RFlat" keeps the rows and re-ranks exactly in double.
 *
 * Threads: search reads only; training and mutation need exclusive access (the index contract).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "chrys_limits.h"
#include "index.h"
#include "kmeans.h"
#include "sq8.h"
#include "kernels/dist.h"

/* ------------------------------------------------------------------------------------------
 * Lists
 */
void ivf_free_lists(chrys_index *ix)
{
    if (ix->lists)
        for (uint32_t l = 0; l < ix->nlist; l++) chrys_free(ix->lists[l]);
    chrys_free(ix->lists);
    chrys_free(ix->list_n);
    chrys_free(ix->list_cap);
    chrys_free_aligned(ix->centroids);
    chrys_free(ix->list_of);
    chrys_free(ix->pos_in_list);
    ix->lists = NULL;
    ix->list_n = ix->list_cap = NULL;
    ix->centroids = NULL;
    ix->list_of = ix->pos_in_list = NULL;
    ix->nlist = 0;
}

int ivf_reserve(chrys_index *ix, size_t cap)
{
    if (ix->kind == CHRYS_INDEX_IVF || ix->list_of) {
        uint32_t *a = chrys_realloc(ix->list_of, cap * sizeof *a);
        if (!a) return CHRYS_NOMEM;
        ix->list_of = a;
        uint32_t *b = chrys_realloc(ix->pos_in_list, cap * sizeof *b);
        if (!b) return CHRYS_NOMEM;
        ix->pos_in_list = b;
    }
    return CHRYS_OK;
}

/* Room in list l for `more` further slots (capacity doubling from 16); CHRYS_NOMEM leaves the
 * list as it was. */
static int list_reserve(chrys_index *ix, uint32_t l, uint64_t more)
{
    uint64_t want = ix->list_n[l] + more;
    if (want <= ix->list_cap[l]) return CHRYS_OK;
    uint64_t nc = chrys_grow_cap(ix->list_cap[l], want, 16);
    uint32_t *p = nc <= UINT32_MAX ? chrys_realloc(ix->lists[l], nc * sizeof *p) : NULL;
    if (!p) return CHRYS_NOMEM;
    ix->lists[l] = p;
    ix->list_cap[l] = (uint32_t)nc;
    return CHRYS_OK;
}

static int list_push(chrys_index *ix, uint32_t l, uint32_t slot)
{
    if (list_reserve(ix, l, 1)) return CHRYS_NOMEM;
    ix->pos_in_list[slot] = ix->list_n[l];
    ix->list_of[slot] = l;
    ix->lists[l][ix->list_n[l]++] = slot;
    return CHRYS_OK;
}

static void list_pop(chrys_index *ix, uint32_t slot)
{
    uint32_t l = ix->list_of[slot], p = ix->pos_in_list[slot], lastp = --ix->list_n[l];
    uint32_t moved = ix->lists[l][lastp];
    ix->lists[l][p] = moved;
    ix->pos_in_list[moved] = p;
}

static uint32_t nearest_list(const chrys_index *ix, const float *v)
{
    const chrys_kernels *kr = chrys_kernels_active();
    int l2 = ix->metric == CHRYS_METRIC_L2;
    uint32_t best = 0;
    float bs = -INFINITY;
    for (uint32_t l = 0; l < ix->nlist; l++) {
        const float *c = ix->centroids + (size_t)l * ix->dim;
        float s = l2 ? -kr->l2sq(v, c, ix->dim) : kr->dot(v, c, ix->dim);
        if (s > bs) bs = s, best = l;
    }
    return best;
}

double ivf_imbalance(const chrys_index *ix)
{
    if (!ix->nlist || !ix->n) return 1.0;
    double s = 0;
    for (uint32_t l = 0; l < ix->nlist; l++) s += (double)ix->list_n[l] * ix->list_n[l];
    return s * ix->nlist / ((double)ix->n * ix->n);
}

/* Nearest centroid of every row: the float32 rows in place, or a codes-only index's rows decoded
 * in blocks (never all at once: that would be the float32 memory the codes save). */
static unsigned train_threads(const chrys_index *ix) { return ix->build_threads ? ix->build_threads : chrys_online_cpus(); }

static int assign_rows(const chrys_index *ix, const float *cent, uint32_t nlist, int spherical, uint32_t *asg, float *c_sq)
{
    if (ix->vecs) return kmeans_assign(ix->vecs, ix->n, ix->dim, cent, nlist, spherical, train_threads(ix), asg, NULL, c_sq);
    const size_t B = 4096;
    float *blk = chrys_malloc_aligned((ix->n < B ? ix->n : B) * (size_t)ix->dim * sizeof(float) + 64);
    if (!blk) return CHRYS_NOMEM;
    int rc = CHRYS_OK;
    for (size_t s0 = 0; s0 < ix->n && !rc; s0 += B) {
        size_t m = ix->n - s0 < B ? ix->n - s0 : B;
        sq8_decode_rows(ix, s0, m, blk);
        rc = kmeans_assign(blk, m, ix->dim, cent, nlist, spherical, train_threads(ix), asg + s0, NULL, c_sq);
    }
    chrys_free_aligned(blk);
    return rc;
}

/* Train nlist lists and replace the index's lists with them. k-means runs on the float32 rows
 * when kept; for a codes-only index (IVF,SQ8 after its first training) on the decoded codes of at
 * most 256 rows per list, evenly spaced over the slots (k-means samples no more than that anyway).
 * The codes and their ranges of a codes-only index are kept as they are (never re-quantised);
 * with float32 rows the ranges are trained again and every row re-encoded. A codes-only spec drops
 * its float32 rows here, once the lists and codes exist.
 * All or nothing: every allocation comes before the first change, so on failure the index is
 * exactly as it was. */
int ivf_train(chrys_index *ix, uint32_t nlist, char *why, size_t why_cap)
{
    if (nlist < 1 || ix->n < nlist) {
        snprintf(why, why_cap, "IVF%u needs at least %u vectors to train, the index has %zu", nlist, nlist, ix->n);
        return CHRYS_INVALID;
    }
    int spherical = ix->metric != CHRYS_METRIC_L2, rc = CHRYS_NOMEM;
    size_t cap = ix->cap ? ix->cap : 1, n = ix->n;
    float *cent = chrys_malloc_aligned((size_t)nlist * ix->dim * sizeof(float));
    uint32_t **lists = chrys_calloc(nlist, sizeof *lists);
    uint32_t *list_n = chrys_calloc(nlist, sizeof *list_n), *list_cap = chrys_calloc(nlist, sizeof *list_cap);
    uint32_t *list_of = chrys_malloc(cap * sizeof *list_of), *pos = chrys_malloc(cap * sizeof *pos);
    uint32_t *asg = chrys_malloc((n ? n : 1) * sizeof *asg);
    float *c_sq = chrys_malloc(nlist * sizeof *c_sq);
    float *dec = NULL;
    /* SQ8 with float32 rows: new ranges and codes, installed once the lists are built */
    sq8_store codes;
    sq8_store_init(&codes);
    if (!cent || !lists || !list_n || !list_cap || !list_of || !pos || !asg || !c_sq ||
        sq8_retrain_prepare(ix, cap, &codes))
        goto fail;
    const float *train_x = ix->vecs;
    size_t train_n = n;
    if (!ix->vecs) { /* codes only: train on decoded codes */
        if (!ix->codes || !ix->sq_min) {
            rc = CHRYS_INVALID;
            goto fail;
        }
        size_t max_pts = (size_t)nlist * KM_MAX_POINTS_PER_CENTROID;
        train_n = n < max_pts ? n : max_pts;
        if (!(dec = chrys_malloc_aligned(train_n * (size_t)ix->dim * sizeof(float)))) goto fail;
        for (size_t i = 0; i < train_n; i++) sq8_decode_rows(ix, (size_t)((double)i * n / train_n), 1, dec + i * ix->dim);
        train_x = dec;
    }
    if ((rc = kmeans_train(train_x, train_n, ix->dim, nlist, spherical, ix->seed, KM_ITERS, train_threads(ix), cent, NULL)))
        goto fail;
    if ((rc = assign_rows(ix, cent, nlist, spherical, asg, c_sq))) goto fail;
    rc = CHRYS_NOMEM;
    for (size_t i = 0; i < n; i++) list_n[asg[i]]++;
    for (uint32_t l = 0; l < nlist; l++) {
        list_cap[l] = list_n[l] > 16 ? list_n[l] : 16;
        if (!(lists[l] = chrys_malloc(list_cap[l] * sizeof **lists))) goto fail;
        list_n[l] = 0;
    }
    /* From here nothing can fail. */
    for (size_t i = 0; i < n; i++) {
        uint32_t l = asg[i];
        pos[i] = list_n[l];
        list_of[i] = l;
        lists[l][list_n[l]++] = (uint32_t)i;
    }
    ivf_free_lists(ix);
    ix->kind = CHRYS_INDEX_IVF;
    ix->centroids = cent;
    ix->nlist = nlist;
    ix->lists = lists;
    ix->list_n = list_n;
    ix->list_cap = list_cap;
    ix->list_of = list_of;
    ix->pos_in_list = pos;
    sq8_retrain_commit(ix, &codes, ix->vecs, n);
    if (!index_keeps_floats(ix) && ix->vecs && !ix->map_base) { /* codes only from here on */
        chrys_free_aligned(ix->vecs);
        ix->vecs = NULL;
    }
    chrys_free_aligned(dec);
    chrys_free(asg);
    chrys_free(c_sq);
    ix->trained_on = n;
    ix->train_imbalance = ivf_imbalance(ix);
    return CHRYS_OK;
fail:
    if (lists)
        for (uint32_t l = 0; l < nlist; l++) chrys_free(lists[l]);
    chrys_free_aligned(cent);
    chrys_free(lists);
    chrys_free(list_n);
    chrys_free(list_cap);
    chrys_free(list_of);
    chrys_free(pos);
    chrys_free(asg);
    chrys_free(c_sq);
    sq8_store_free(&codes);
    chrys_free_aligned(dec);
    if (rc == CHRYS_INVALID) snprintf(why, why_cap, "retrain: the index keeps neither float32 rows nor codes");
    else snprintf(why, why_cap, rc == CHRYS_NOMEM ? "out of memory training IVF%u" : "k-means for IVF%u failed", nlist);
    return rc;
}

int ivf_add_rows(chrys_index *ix, size_t first, const float *rows)
{
    if (!ix->nlist) return CHRYS_OK;
    /* room in every list first, then the pushes cannot fail */
    size_t m = ix->n - first;
    uint32_t *near = chrys_malloc((m ? m : 1) * sizeof *near), *need = chrys_calloc(ix->nlist, sizeof *need);
    int rc = near && need ? CHRYS_OK : CHRYS_NOMEM;
    for (size_t i = 0; i < m && !rc; i++) need[near[i] = nearest_list(ix, rows + i * ix->dim)]++;
    for (uint32_t l = 0; l < ix->nlist && !rc; l++) rc = list_reserve(ix, l, need[l]);
    for (size_t i = 0; i < m && !rc; i++) list_push(ix, near[i], (uint32_t)(first + i));
    chrys_free(near);
    chrys_free(need);
    return rc;
}

void ivf_before_remove(chrys_index *ix, uint32_t slot, uint32_t last)
{
    if (ix->nlist) {
        list_pop(ix, slot);
        if (slot != last) {
            uint32_t l = ix->list_of[last], p = ix->pos_in_list[last];
            ix->lists[l][p] = slot;
            ix->list_of[slot] = l;
            ix->pos_in_list[slot] = p;
        }
    }
}

/* The row of slot has changed (row: the new row as stored): its codes and its list follow. Room
 * in the new list comes first, so on failure (CHRYS_NOMEM) nothing here has changed. */
int ivf_after_update(chrys_index *ix, uint32_t slot, const float *row)
{
    uint32_t l = ix->nlist ? nearest_list(ix, row) : 0;
    if (ix->nlist && l != ix->list_of[slot] && list_reserve(ix, l, 1)) return CHRYS_NOMEM;
    if (ix->sq8 && ix->codes && ix->sq_min) sq8_encode(ix, slot, row);
    if (ix->nlist && l != ix->list_of[slot]) {
        list_pop(ix, slot);
        list_push(ix, l, slot); /* room made above: cannot fail */
    }
    return CHRYS_OK;
}

/* ------------------------------------------------------------------------------------------
 * Search
 */

static int cmp_desc(const void *a, const void *b)
{
    const topk_item *x = a, *y = b;
    if (topk_worse(y->score, y->id, x->score, x->id)) return -1; /* the one ranking order (internal.h) */
    return topk_worse(x->score, x->id, y->score, y->id);
}

/* One query's scan of its nprobe lists over SQ8 codes: each row costs one exact int32 dot product
 * of its code bytes with the query's int8 weights (sq8.h; the VNNI kernel, four rows at a time);
 * the best c->pool candidates are ranked by sq8_finish, with the float32 rows in double when kept
 * (",RFlat"), else from the codes with float weights. */
static void scan_sq8(const search_job *c, const chrys_index *ix, const chrys_kernels *kr, const float *qv,
                     const topk *probe, topk *best, int8_t *w8)
{
    size_t dim = ix->dim;
    sq8_query q;
    sq8_prepare(ix, qv, &q, w8);
    for (size_t p = 0; p < probe->n; p++) {
        uint32_t l = probe->items[p].slot, ln = ix->list_n[l];
        const uint32_t *slots = ix->lists[l];
        uint32_t j = 0;
        for (; j + 4 <= ln; j += 4) {
            const uint8_t *cs[4] = {ix->codes + (size_t)slots[j] * dim, ix->codes + (size_t)slots[j + 1] * dim,
                                    ix->codes + (size_t)slots[j + 2] * dim, ix->codes + (size_t)slots[j + 3] * dim};
            int32_t d4[4];
            kr->dot_u8i8_x4(cs, w8, dim, d4);
            for (int t = 0; t < 4; t++) {
                uint32_t s = slots[j + t];
                float sc = sq8_score_i32(ix, &q, d4[t], s);
                if (sc >= topk_floor(best) && (!c->filter || c->filter->allow(ix->ids[s], c->filter->ctx)))
                    topk_push(best, sc, s, ix->ids[s]);
            }
        }
        for (; j < ln; j++) {
            uint32_t s = slots[j];
            float sc = sq8_score_i32(ix, &q, kr->dot_u8i8(ix->codes + (size_t)s * dim, w8, dim), s);
            if (sc >= topk_floor(best) && (!c->filter || c->filter->allow(ix->ids[s], c->filter->ctx)))
                topk_push(best, sc, s, ix->ids[s]);
        }
    }
}

static void ivf_query_range(void *arg, unsigned w, size_t begin, size_t end)
{
    (void)w;
    search_job *c = arg;
    const chrys_index *ix = c->ix;
    const chrys_kernels *kr = chrys_kernels_active();
    size_t dim = ix->dim;
    int l2 = ix->metric == CHRYS_METRIC_L2;
    uint32_t nl = ix->nlist, np = c->nprobe < nl ? c->nprobe : nl;
    float *cs = chrys_malloc(nl * sizeof *cs);
    topk_item *pitems = chrys_malloc(np * sizeof *pitems), *items = chrys_malloc(c->pool * sizeof *items);
    int8_t *w8 = chrys_malloc(dim);
    float *wf = chrys_malloc(dim * sizeof *wf);
    uint32_t *cand = chrys_malloc(c->pool * sizeof *cand);
    sq8_fin *fin = chrys_malloc(c->pool * sizeof *fin);
    if (!cs || !pitems || !items || !w8 || !wf || !cand || !fin) {
        c->rc = CHRYS_NOMEM;
        goto out;
    }
    for (size_t qi = begin; qi < end; qi++) {
        const float *q = c->q + qi * dim;
        /* 1. the nprobe nearest lists */
        if (l2) kr->l2sq_rows(q, ix->centroids, nl, dim, cs);
        else kr->dot_rows(q, ix->centroids, nl, dim, cs);
        topk probe;
        topk_init(&probe, pitems, np);
        for (uint32_t l = 0; l < nl; l++) topk_push(&probe, l2 ? -cs[l] : cs[l], l, l);
        /* 2. scan them (float32 rows, or SQ8 codes) */
        topk best;
        topk_init(&best, items, c->pool);
        if (ix->sq8) {
            scan_sq8(c, ix, kr, q, &probe, &best, w8);
            for (size_t j = 0; j < best.n; j++) cand[j] = best.items[j].slot;
            sq8_finish(ix, q, cand, best.n, c->k, c->use_thr, c->thr, c->ids + qi * c->k, c->scores + qi * c->k, wf, fin);
            continue;
        }
        for (size_t p = 0; p < probe.n; p++) {
            uint32_t l = probe.items[p].slot;
            const uint32_t *slots = ix->lists[l];
            for (uint32_t j = 0; j < ix->list_n[l]; j++) {
                uint32_t s = slots[j];
                float sc = l2 ? -kr->l2sq(q, ix->vecs + (size_t)s * dim, dim) : kr->dot(q, ix->vecs + (size_t)s * dim, dim);
                if (sc >= topk_floor(&best) && (!c->filter || c->filter->allow(ix->ids[s], c->filter->ctx)))
                    topk_push(&best, sc, s, ix->ids[s]);
            }
        }
        /* 3. re-rank the candidates with the float32 rows, in double */
        for (size_t j = 0; j < best.n; j++) {
            const float *x = ix->vecs + (size_t)best.items[j].slot * dim;
            double s = l2 ? -kr->l2sq_f64(q, x, dim) : kr->dot_f64(q, x, dim);
            best.items[j].score = (float)s; /* ordering in float; reported in double below */
        }
        qsort(best.items, best.n, sizeof *best.items, cmp_desc);
        size_t m = 0;
        for (size_t j = 0; j < best.n && m < c->k; j++) {
            const float *x = ix->vecs + (size_t)best.items[j].slot * dim;
            double s = l2 ? kr->l2sq_f64(q, x, dim) : kr->dot_f64(q, x, dim);
            if (c->use_thr && (l2 ? s > c->thr : s < c->thr)) break;
            c->ids[qi * c->k + m] = best.items[j].id;
            c->scores[qi * c->k + m] = s;
            m++;
        }
        for (; m < c->k; m++) {
            c->ids[qi * c->k + m] = CHRYS_NO_ID;
            c->scores[qi * c->k + m] = l2 ? INFINITY : -INFINITY;
        }
    }
out:
    chrys_free(cs);
    chrys_free(pitems);
    chrys_free(items);
    chrys_free(w8);
    chrys_free(wf);
    chrys_free(cand);
    chrys_free(fin);
}

int ivf_search(const chrys_index *ix, size_t nq, const float *q, size_t k, int use_thr, double thr, unsigned nt,
               uint32_t nprobe, uint64_t *ids, double *scores, const search_filter *filter)
{
    if (!nprobe) nprobe = ix->nlist / 16 > 1 ? ix->nlist / 16 : 1;
    size_t pool = ix->sq8 ? (k * 4 > k + 32 ? k * 4 : k + 32) : k + 8;
    search_job c = {ix, q, k, use_thr, thr, ids, scores, filter, pool, nprobe, CHRYS_OK};
    if (nt == 0) nt = chrys_online_cpus();
    chrys_parallel_chunks(nq >= nt * 2 ? nt : 1, nq, 0, ivf_query_range, &c);
    return c.rc;
}

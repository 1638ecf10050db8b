/*
 * hnsw.c: Hierarchical Navigable Small World graphs (Malkov and Yashunin, 2016/2018), with the
 * neighbour-selection heuristic (their Algorithm 4), in-place updates with link repair,
 * tombstone deletes with repair, compaction, parallel build and SQ8 codes.
 *
 * Layout. Node = slot of the chrys_index. Level-0 links live in one array l0 (1 + M0 u32 per
 * node: the count, then the links), upper levels in a per-node array up[slot] (level x (1 + M)
 * u32), allocated only for the ~1/M of nodes above level 0. Rows stay in the index (float32 in
 * ix->vecs, SQ8 codes in ix->codes), so the graph costs about (1 + M0) * 4 bytes per node.
 *
 * Scores are "higher is better" floats while walking: cosine or inner product, or minus squared
 * L2. With SQ8 the walk never reads float32: the query's per-dimension weights q[d]*step[d] are
 * quantised to int8 with one scale, and each visited node costs one exact integer dot product
 * of its dim code bytes with those weights (AVX-512 VNNI vpdpbusd: 64 products per instruction),
 * a quarter of the memory traffic of float32. The best candidates are then re-ranked: with the
 * float32 rows when kept ("HNSW<M>,SQ8,RFlat"), else with the codes and float weights.
 *
 * Concurrency. Searches on a const index are safe from any number of threads: each borrows a
 * scratch (visited marks by epoch, two heaps, buffers) from a pool under a mutex, and nothing
 * per node is written. The parallel build links nodes from several workers; every read or write
 * of a node's link list then holds that node's spin lock (one byte per node), and the entry
 * point moves under a mutex held by the inserting worker, as hnswlib does.
 *
 * Files. This one: the graph's arrays, the scratch pool, the walk (greedy descent and beam search
 * of a level) and search. hnsw_build.c: insert and link, the parallel build, relinking, updates,
 * deletes with repair, compaction. hnsw_store.c: the sections and the loader's checks.
 * hnsw_graph.h: the layout and inline pieces the three share. The walk's heaps are topk.h's.
 */
#include <math.h>
#include <stdlib.h>

#include "hnsw_graph.h"

/* ------------------------------------------------------------------------------------------
 * Scoring: prepared queries
 */
/* Prepare stored node v as a query (its float32 row when kept, else its decoded codes). */
void hnsw_prepare_node(const chrys_index *ix, uint32_t v, hq *q, int8_t *w8, float *fbuf)
{
    if (ix->vecs) {
        prepare_vec(ix, ix->vecs + (size_t)v * ix->dim, q, w8);
    } else {
        sq8_decode(ix, v, fbuf);
        prepare_vec(ix, fbuf, q, w8);
    }
}

/* ------------------------------------------------------------------------------------------
 * Scratch
 */
static void scratch_free(hscratch *s)
{
    if (!s) return;
    chrys_free(s->mark);
    chrys_free(s->cand);
    chrys_free(s->res);
    chrys_free(s->tmp);
    chrys_free(s->w8);
    chrys_free(s->wsc);
    chrys_free(s->fbuf);
    chrys_free(s->nb);
    chrys_free(s->sel);
    chrys_free(s);
}

static hscratch *scratch_new(const chrys_index *ix)
{
    const hnsw *h = ix->hnsw;
    hscratch *s = chrys_calloc(1, sizeof *s);
    if (!s) return NULL;
    size_t dim = ix->dim, m = h->M0 + 2;
    s->w8 = chrys_malloc(m * dim);
    s->wsc = chrys_malloc(m * 3 * sizeof(float));
    s->fbuf = chrys_malloc(2 * dim * sizeof(float));
    s->nb = chrys_malloc((h->M0 + 1) * sizeof(uint32_t));
    s->sel = chrys_malloc((h->M0 + 1) * sizeof(topk_item));
    if (!s->w8 || !s->wsc || !s->fbuf || !s->nb || !s->sel) {
        scratch_free(s);
        return NULL;
    }
    return s;
}

int hnsw_grow(topk_item **a, size_t *cap, size_t need)
{
    if (need <= *cap) return CHRYS_OK;
    size_t c = chrys_grow_cap(*cap, need, 64), bytes;
    if (chrys_mul_size(c, sizeof **a, &bytes)) return CHRYS_NOMEM;
    topk_item *p = chrys_realloc(*a, bytes);
    if (!p) return CHRYS_NOMEM;
    *a = p;
    *cap = c;
    return CHRYS_OK;
}

/* Size s for a walk over n nodes with lists of up to ef results. */
int hnsw_scratch_fit(hscratch *s, size_t n, size_t ef, size_t m0)
{
    if (s->mark_n < n) {
        size_t c = n + n / 4 + 64;
        uint32_t *m = chrys_realloc(s->mark, c * sizeof *m);
        if (!m) return CHRYS_NOMEM;
        memset(m + s->mark_n, 0, (c - s->mark_n) * sizeof *m);
        s->mark = m;
        s->mark_n = c;
    }
    /* tmp also holds a full list plus one in connect(): M0 + 1 items, which ef need not cover */
    if (hnsw_grow(&s->res, &s->res_cap, ef + 1) || hnsw_grow(&s->cand, &s->cand_cap, ef + 64) ||
        hnsw_grow(&s->tmp, &s->tmp_cap, ef + 64 > m0 + 2 ? ef + 64 : m0 + 2))
        return CHRYS_NOMEM;
    return CHRYS_OK;
}


hscratch *hnsw_scratch_get(const chrys_index *ix)
{
    hnsw *h = ix->hnsw; /* the pool is the one mutable part of a const index, under its mutex */
    hscratch *s = NULL;
    pthread_mutex_lock(&h->pool_lock);
    if (h->pool_n > 0) s = h->pool[--h->pool_n];
    pthread_mutex_unlock(&h->pool_lock);
    return s ? s : scratch_new(ix);
}

void hnsw_scratch_put(const chrys_index *ix, hscratch *s)
{
    hnsw *h = ix->hnsw;
    pthread_mutex_lock(&h->pool_lock);
    if (h->pool_n < POOL_MAX) {
        h->pool[h->pool_n++] = s;
        s = NULL;
    }
    pthread_mutex_unlock(&h->pool_lock);
    scratch_free(s);
}

/* ------------------------------------------------------------------------------------------
 * The walk
 */

/* Greedy descent through one upper level: returns the best node reached from *cur. */
void hnsw_greedy(const walk *w, const hq *q, int l, uint32_t *cur, float *cur_s)
{
    for (int changed = 1; changed;) {
        changed = 0;
        uint32_t n = copy_links(w->h, *cur, l, w->s->nb, w->locked);
        for (uint32_t j = 0; j < n; j++) {
            uint32_t v = w->s->nb[j];
            float sc = score(w->ix, w->kr, q, v);
            if (topk_worse(*cur_s, *cur, sc, v)) {
                *cur_s = sc;
                *cur = v;
                changed = 1;
            }
        }
    }
}

/* Beam search of one level from ep (Algorithm 2): leaves up to ef acceptable nodes in the
 * min-heap s->res (s->res_n returned). Unacceptable nodes (tombstones, filtered out, the excluded
 * node) are walked through but never kept. */
size_t hnsw_search_level(const walk *w, const hq *q, uint32_t ep, float ep_s, size_t ef, int l)
{
    hscratch *s = w->s;
    const chrys_index *ix = w->ix;
    size_t nc = 0, nr = 0;
    /* a plain search of a graph without tombstones keeps every node it scores: no per-node
     * look-up of the id (a random read) to learn that */
    int keep_all = !w->filter && w->exclude == CHRYS_NO_SLOT && ix->n_dead == 0;
    /* both heaps as topk.h keys: the candidates in cand's room (two keys per topk_item), the
     * results in tmp's (ef + 64 items, twice the ef + 1 keys needed), copied to res at the end */
    uint64_t *kc = (uint64_t *)s->cand, *kr = (uint64_t *)s->tmp;
    size_t kc_cap = 2 * s->cand_cap;
    new_epoch(s);
    uint32_t *mark = s->mark, epoch = s->epoch;
    mark[ep] = epoch;
    topk_kheap_push(kc, &nc, topk_key(ep_s, ep), 1);
    if (acceptable(w, ep)) topk_kheap_push(kr, &nr, topk_key(ep_s, ep), 0);
    uint32_t *nb = s->nb;
    while (nc > 0) {
        uint64_t c = kc[0];
        if (nr >= ef && (c >> 32) < (kr[0] >> 32)) break; /* its score below the worst kept */
        topk_kheap_pop(kc, &nc, 1);
        if (nc > 0) PREFETCH(links(w->h, topk_key_slot(kc[0]), l)); /* the next node expanded, likely */
        const uint32_t *ls;
        uint32_t n;
        if (w->locked) {
            n = copy_links(w->h, topk_key_slot(c), l, nb, 1);
            ls = nb;
        } else {
            ls = links(w->h, topk_key_slot(c), l);
            n = *ls++;
        }
        /* Row prefetches were measured and left out: on SIFT 5k (rows in L2) prefetching the
         * rows of the unvisited, or the whole row of the next four, cost 3-8% QPS; the visited
         * filter without a branch (whether a neighbour is new is a coin toss) gained 17%. */
        uint32_t m = 0;
        for (uint32_t j = 0; j < n; j++) { /* keep the unvisited (no branch: half are, at random) */
            uint32_t v = ls[j];
            nb[m] = v;
            m += mark[v] != epoch;
            mark[v] = epoch;
        }
        float sc4[4];
        for (uint32_t j = 0; j < m; j++) {
            uint32_t v = nb[j];
            float sc;
            if ((j & 3) == 0 && j + 4 <= m) score4(ix, w->kr, q, nb + j, sc4); /* four rows at once */
            sc = j < (m & ~3u) ? sc4[j & 3] : score(ix, w->kr, q, v);
            uint64_t key = topk_key(sc, v);
            if (nr < ef || (key >> 32) > (kr[0] >> 32)) {
                /* (walks that change the graph reserved n + 1 candidates first: one per node) */
                if (nc + 1 > kc_cap) {
                    if (hnsw_grow(&s->cand, &s->cand_cap, nc / 2 + 1)) {
                        s->oom = 1; /* never a silently worse answer: the caller reports CHRYS_NOMEM */
                        break;
                    }
                    kc = (uint64_t *)s->cand;
                    kc_cap = 2 * s->cand_cap;
                }
                topk_kheap_push(kc, &nc, key, 1);
                if (keep_all || acceptable(w, v)) {
                    /* the ef best: sc beats the worst kept once there are ef (checked above) */
                    if (nr < ef) topk_kheap_push(kr, &nr, key, 0);
                    else topk_kheap_sift_down(kr, nr, key, 0);
                }
            }
        }
        if (s->oom) break;
    }
    /* a worst-on-top heap of keys is one of topk_items in the same order */
    for (size_t i = 0; i < nr; i++) s->res[i] = slot_item(topk_key_score(kr[i]), topk_key_slot(kr[i]));
    return nr;
}

/* ------------------------------------------------------------------------------------------
 * Create, grow, free
 */
int hnsw_create(chrys_index *ix, uint32_t M, uint32_t efc)
{
    hnsw *h = chrys_calloc(1, sizeof *h);
    if (!h) return CHRYS_NOMEM;
    h->M = M;
    h->M0 = 2 * M;
    h->efc = efc ? efc : HNSW_DEFAULT_EFC;
    h->ml = 1.0 / log((double)(M > 1 ? M : 2));
    h->rng = ix->seed ^ 0x484e5357ull; /* "HNSW" */
    h->entry = CHRYS_NO_SLOT;
    h->max_level = -1;
    pthread_mutex_init(&h->glock, NULL);
    pthread_mutex_init(&h->pool_lock, NULL);
    ix->hnsw = h;
    return CHRYS_OK;
}

void hnsw_free(chrys_index *ix)
{
    hnsw *h = ix->hnsw;
    if (!h) return;
    for (size_t v = 0; v < ix->n && v < h->cap && h->up; v++) chrys_free(h->up[v]);
    chrys_free(h->up);
    chrys_free_aligned(h->l0);
    chrys_free(h->level);
    chrys_free((void *)h->locks);
    for (int i = 0; i < h->pool_n; i++) scratch_free(h->pool[i]);
    pthread_mutex_destroy(&h->glock);
    pthread_mutex_destroy(&h->pool_lock);
    chrys_free(h);
    ix->hnsw = NULL;
}

int hnsw_reserve(chrys_index *ix, size_t cap)
{
    hnsw *h = ix->hnsw;
    if (!h || cap <= h->cap) return CHRYS_OK;
    /* aligned, and on 2 MiB pages when large: the walk reads link lists at random */
    uint32_t *l0 = chrys_realloc_aligned(h->l0, h->cap * (1 + (size_t)h->M0) * sizeof *l0, cap * (1 + (size_t)h->M0) * sizeof *l0);
    if (!l0) return CHRYS_NOMEM;
    /* unused link slots are saved too: zero, so a store never carries stale heap bytes and the
     * same index always writes the same file */
    memset(l0 + h->cap * (1 + (size_t)h->M0), 0, (cap - h->cap) * (1 + (size_t)h->M0) * sizeof *l0);
    h->l0 = l0;
    uint8_t *lv = chrys_realloc(h->level, cap);
    if (!lv) return CHRYS_NOMEM;
    h->level = lv;
    uint32_t **up = chrys_realloc(h->up, cap * sizeof *up);
    if (!up) return CHRYS_NOMEM;
    h->up = up;
    for (size_t v = h->cap; v < cap; v++) h->up[v] = NULL; /* before anything else can fail */
    atomic_uchar *lk = chrys_realloc((void *)h->locks, cap * sizeof *lk);
    if (!lk) return CHRYS_NOMEM;
    h->locks = lk;
    for (size_t v = h->cap; v < cap; v++) atomic_init(&h->locks[v], 0);
    h->cap = cap; /* (SQ8 codes are grown by ivf_reserve, for every kind) */
    return CHRYS_OK;
}

size_t hnsw_memory(const chrys_index *ix)
{
    const hnsw *h = ix->hnsw;
    if (!h) return 0;
    size_t b = sizeof *h + h->cap * ((1 + (size_t)h->M0) * 4 + 1 + sizeof(uint32_t *) + 1);
    for (size_t v = 0; v < ix->n; v++)
        if (h->up[v]) b += (size_t)h->level[v] * (1 + h->M) * 4;
    return b;
}

uint32_t hnsw_entry(const chrys_index *ix) { return ix->hnsw ? ix->hnsw->entry : CHRYS_NO_SLOT; }

void hnsw_params(const chrys_index *ix, uint32_t *M, uint32_t *efc, int *max_level)
{
    const hnsw *h = ix->hnsw;
    *M = h ? h->M : 0;
    *efc = h ? h->efc : 0;
    *max_level = h ? h->max_level : -1;
}

/* ------------------------------------------------------------------------------------------
 * Search
 */

static void search_range(void *arg, unsigned wk, size_t b, size_t e)
{
    (void)wk;
    search_job *c = arg;
    const chrys_index *ix = c->ix;
    const hnsw *h = ix->hnsw;
    size_t dim = ix->dim, k = c->k;
    int l2 = ix->metric == CHRYS_METRIC_L2;
    hscratch *s = hnsw_scratch_get(ix);
    sq8_fin *f = chrys_malloc((c->pool + 1) * sizeof *f);
    uint32_t *slots = chrys_malloc((c->pool + 1) * sizeof *slots);
    if (!s || !f || !slots || hnsw_scratch_fit(s, ix->n, c->pool, h->M0)) {
        c->rc = CHRYS_NOMEM;
        goto out;
    }
    walk w = {ix, h, chrys_kernels_active(), s, 0, CHRYS_NO_SLOT, c->filter};
    for (size_t qi = b; qi < e; qi++) {
        const float *qv = c->q + qi * dim;
        uint64_t *oid = c->ids + qi * k;
        double *osc = c->scores + qi * k;
        size_t m = 0;
        if (h->entry != CHRYS_NO_SLOT) {
            hq q;
            prepare_vec(ix, qv, &q, s->w8);
            uint32_t ep = h->entry;
            float ep_s = score(ix, w.kr, &q, ep);
            for (int l = h->max_level; l > 0; l--) hnsw_greedy(&w, &q, l, &ep, &ep_s);
            size_t nr = hnsw_search_level(&w, &q, ep, ep_s, c->pool, 0);
            if (s->oom) {
                s->oom = 0;
                c->rc = CHRYS_NOMEM;
                goto out;
            }
            /* re-rank: exact from float32 rows, else from the codes with float weights */
            topk_item *r = s->tmp;
            memcpy(r, s->res, nr * sizeof *r);
            topk_heap_sort(r, nr);
            /* float32 walk: only the k best and those within float32 error of the k-th can be
             * in the top k, so only they are scored again in double (the codes' walk: all ef) */
            size_t depth = nr;
            for (size_t j = 0; j < nr; j++) slots[j] = r[j].slot;
            if (!ix->sq8 && nr > k) {
                float kth = r[k - 1].score, tol = (float)rerank_slack(ix, qv, kth, slots, nr);
                depth = k;
                while (depth < nr && r[depth].score >= kth - tol) depth++;
            }
            sq8_finish(ix, qv, slots, depth, k, c->use_thr, c->thr, oid, osc, s->fbuf, f);
            m = k;
        }
        for (; m < k; m++) {
            oid[m] = CHRYS_NO_ID;
            osc[m] = l2 ? INFINITY : -INFINITY;
        }
    }
out:
    chrys_free(f);
    chrys_free(slots);
    if (s) hnsw_scratch_put(ix, s);
}

int hnsw_search(const chrys_index *ix, size_t nq, const float *q, size_t k, int use_thr, double thr, unsigned nt,
                uint32_t ef, uint64_t *ids, double *scores, const search_filter *filter)
{
    size_t e = ef ? ef : HNSW_DEFAULT_EF;
    if (e < k) e = k;
    search_job c = {ix, q, k, use_thr, thr, ids, scores, filter, e, 0, CHRYS_OK};
    if (nt == 0) nt = chrys_online_cpus();
    chrys_parallel_chunks(nq >= 2 * (size_t)nt ? nt : 1, nq, 0, search_range, &c);
    return c.rc;
}

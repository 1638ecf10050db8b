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
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "hnsw.h"
#include "kernels/dist.h"
#include "sq8.h"
#include "store/codec.h"
#include "store/store.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#define PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
#else
#define CPU_RELAX() ((void)0)
#define PREFETCH(p) __builtin_prefetch(p)
#endif

#define POOL_MAX 64
#define HNSW_MAX_EXTRA 4096 /* candidates gathered through tombstones when compacting one list */

typedef struct hitem {
    float s;
    uint32_t v;
} hitem;

typedef struct hscratch {
    uint32_t *mark; /* visited: mark[v] == epoch */
    size_t mark_n;
    uint32_t epoch;
    hitem *cand, *res, *tmp; /* candidates (max-heap), results (min-heap), sort space */
    size_t cand_cap, res_cap, tmp_cap;
    int8_t *w8;   /* (M0 + 2) * dim: [0] the query's weights, [1 + j] the j-th selected node's */
    float *wsc;   /* (M0 + 2) * 3: scale, bias, |v|^2 of each prepared row */
    float *fbuf;  /* 2 * dim: decoded rows, float weights */
    uint32_t *nb; /* M0 + 1: a copy of one link list */
    hitem *sel;   /* M0 + 1 */
    int oom;      /* a search's candidate heap could not grow: the search fails with CHRYS_NOMEM */
} hscratch;

struct hnsw {
    uint32_t M, M0, efc;
    double ml; /* level multiplier 1 / ln(M) */
    uint64_t rng;
    size_t cap;
    uint32_t *l0;   /* cap * (1 + M0) */
    uint8_t *level; /* cap */
    uint32_t **up;  /* cap: NULL, or level[v] * (1 + M) */
    atomic_uchar *locks;
    uint32_t entry; /* CHRYS_NO_SLOT when the graph is empty */
    int max_level;
    pthread_mutex_t glock;
    pthread_mutex_t pool_lock;
    hscratch *pool[POOL_MAX];
    int pool_n;
};

/* ------------------------------------------------------------------------------------------
 * Small pieces
 */
static inline uint32_t *links(const hnsw *h, uint32_t v, int l)
{
    return l == 0 ? h->l0 + (size_t)v * (1 + h->M0) : h->up[v] + (size_t)(l - 1) * (1 + h->M);
}
static inline uint32_t max_links(const hnsw *h, int l) { return l == 0 ? h->M0 : h->M; }

static inline void node_lock(const hnsw *h, uint32_t v)
{
    while (atomic_exchange_explicit(&h->locks[v], 1, memory_order_acquire))
        while (atomic_load_explicit(&h->locks[v], memory_order_relaxed)) CPU_RELAX();
}
static inline void node_unlock(const hnsw *h, uint32_t v) { atomic_store_explicit(&h->locks[v], 0, memory_order_release); }

/* Copy v's links at level l into out (locked when other workers may write them). */
static inline uint32_t copy_links(const hnsw *h, uint32_t v, int l, uint32_t *out, int locked)
{
    if (locked) node_lock(h, v);
    const uint32_t *ls = links(h, v, l);
    uint32_t n = ls[0];
    memcpy(out, ls + 1, n * sizeof *out);
    if (locked) node_unlock(h, v);
    return n;
}

static inline int alive(const chrys_index *ix, uint32_t v) { return ix->ids[v] != CHRYS_NO_ID; }

/* Heaps of hitem: cand is a max-heap (best on top), res a min-heap (worst on top). */
#define HEAP_FUNCS(NAME, BETTER)                                                                 \
    static inline void NAME##_push(hitem *a, size_t *n, hitem x)                                 \
    {                                                                                            \
        size_t i = (*n)++;                                                                       \
        while (i > 0) {                                                                          \
            size_t p = (i - 1) / 2;                                                              \
            if (!(BETTER(x, a[p]))) break;                                                       \
            a[i] = a[p];                                                                         \
            i = p;                                                                               \
        }                                                                                        \
        a[i] = x;                                                                                \
    }                                                                                            \
    static inline hitem NAME##_pop(hitem *a, size_t *n)                                          \
    {                                                                                            \
        hitem top = a[0], x = a[--*n];                                                           \
        size_t i = 0, m = *n;                                                                    \
        for (;;) {                                                                               \
            size_t c = 2 * i + 1;                                                                \
            if (c >= m) break;                                                                   \
            if (c + 1 < m && BETTER(a[c + 1], a[c])) c++;                                        \
            if (!(BETTER(a[c], x))) break;                                                       \
            a[i] = a[c];                                                                         \
            i = c;                                                                               \
        }                                                                                        \
        if (m) a[i] = x;                                                                         \
        return top;                                                                              \
    }
#define HI_BETTER(x, y) ((x).s > (y).s || ((x).s == (y).s && (x).v < (y).v))
#define HI_WORSE(x, y) ((x).s < (y).s || ((x).s == (y).s && (x).v > (y).v))
HEAP_FUNCS(maxh, HI_BETTER)
HEAP_FUNCS(minh, HI_WORSE)

/* Sort a min-heap (worst on top, e.g. a copy of the results) best first, in place: each pop
 * frees the last slot, which takes the item popped. Same order as cmp_hitem, no comparator calls. */
static void heap_sort_best_first(hitem *a, size_t n)
{
    size_t m = n;
    while (m > 1) {
        hitem worst = minh_pop(a, &m);
        a[m] = worst;
    }
}

static int cmp_hitem(const void *pa, const void *pb)
{
    const hitem *a = pa, *b = pb;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    return a->v < b->v ? -1 : (a->v > b->v);
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int draw_level(hnsw *h)
{
    double u = ((rng_next(&h->rng) >> 11) + 1) * (1.0 / 9007199254740993.0); /* (0, 1] */
    double l = -log(u) * h->ml;
    return l >= HNSW_MAX_LEVEL - 1 ? HNSW_MAX_LEVEL - 1 : (int)l;
}

/* ------------------------------------------------------------------------------------------
 * Scoring: prepared queries
 */
typedef sq8_query hq;

/* Prepare a float row (unit under cosine) as a query; w8 receives dim int8 weights (SQ8). */
static inline void prepare_vec(const chrys_index *ix, const float *v, hq *q, int8_t *w8)
{
    if (ix->sq8) {
        sq8_prepare(ix, v, q, w8);
    } else {
        q->f = v;
        q->w8 = w8;
        q->scale = q->bias = q->qsq = 0;
    }
}

/* Prepare stored node v as a query (its float32 row when kept, else its decoded codes). */
static void prepare_node(const chrys_index *ix, uint32_t v, hq *q, int8_t *w8, float *fbuf)
{
    if (ix->vecs) {
        prepare_vec(ix, ix->vecs + (size_t)v * ix->dim, q, w8);
    } else {
        sq8_decode(ix, v, fbuf);
        prepare_vec(ix, fbuf, q, w8);
    }
}

static inline float score(const chrys_index *ix, const chrys_kernels *kr, const hq *q, uint32_t v)
{
    size_t dim = ix->dim;
    if (!ix->sq8) {
        const float *x = ix->vecs + (size_t)v * dim;
        return ix->metric == CHRYS_METRIC_L2 ? -kr->l2sq(q->f, x, dim) : kr->dot(q->f, x, dim);
    }
    return sq8_score_i32(ix, q, kr->dot_u8i8(ix->codes + (size_t)v * dim, q->w8, dim), v);
}

/* score() of four nodes at once (the four-row kernels). */
static inline void score4(const chrys_index *ix, const chrys_kernels *kr, const hq *q, const uint32_t *v, float out[4])
{
    size_t dim = ix->dim;
    int l2 = ix->metric == CHRYS_METRIC_L2;
    if (!ix->sq8) {
        const float *x[4] = {ix->vecs + (size_t)v[0] * dim, ix->vecs + (size_t)v[1] * dim, ix->vecs + (size_t)v[2] * dim,
                             ix->vecs + (size_t)v[3] * dim};
        if (l2) {
            kr->l2sq_x4(q->f, x, dim, out);
            for (int r = 0; r < 4; r++) out[r] = -out[r];
        } else {
            kr->dot_x4(q->f, x, dim, out);
        }
        return;
    }
    const uint8_t *c[4] = {ix->codes + (size_t)v[0] * dim, ix->codes + (size_t)v[1] * dim, ix->codes + (size_t)v[2] * dim,
                           ix->codes + (size_t)v[3] * dim};
    int32_t d[4];
    kr->dot_u8i8_x4(c, q->w8, dim, d);
    for (int r = 0; r < 4; r++) out[r] = sq8_score_i32(ix, q, d[r], v[r]);
}

static inline void prefetch_row(const chrys_index *ix, uint32_t v)
{
    if (ix->sq8) {
        const char *p = (const char *)(ix->codes + (size_t)v * ix->dim);
        PREFETCH(p);
        if (ix->dim > 64) PREFETCH(p + 64);
    } else {
        const char *p = (const char *)(ix->vecs + (size_t)v * ix->dim);
        PREFETCH(p);
        PREFETCH(p + 64);
    }
}

/* The whole row, for the neighbour scored next. */
static inline void prefetch_full(const chrys_index *ix, uint32_t v)
{
    size_t bytes = ix->sq8 ? ix->dim : ix->dim * sizeof(float);
    const char *p = ix->sq8 ? (const char *)(ix->codes + (size_t)v * ix->dim) : (const char *)(ix->vecs + (size_t)v * ix->dim);
    for (size_t o = 128; o < bytes; o += 64) PREFETCH(p + o);
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
    s->sel = chrys_malloc((h->M0 + 1) * sizeof(hitem));
    if (!s->w8 || !s->wsc || !s->fbuf || !s->nb || !s->sel) {
        scratch_free(s);
        return NULL;
    }
    return s;
}

static int grow(hitem **a, size_t *cap, size_t need)
{
    if (need <= *cap) return CHRYS_OK;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    hitem *p = chrys_realloc(*a, c * sizeof *p);
    if (!p) return CHRYS_NOMEM;
    *a = p;
    *cap = c;
    return CHRYS_OK;
}

/* Size s for a walk over n nodes with lists of up to ef results. */
static int scratch_fit(hscratch *s, size_t n, size_t ef, size_t m0)
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
    if (grow(&s->res, &s->res_cap, ef + 1) || grow(&s->cand, &s->cand_cap, ef + 64) ||
        grow(&s->tmp, &s->tmp_cap, ef + 64 > m0 + 2 ? ef + 64 : m0 + 2))
        return CHRYS_NOMEM;
    return CHRYS_OK;
}

static void new_epoch(hscratch *s)
{
    if (++s->epoch == 0) {
        memset(s->mark, 0, s->mark_n * sizeof *s->mark);
        s->epoch = 1;
    }
}

static hscratch *scratch_get(const chrys_index *ix)
{
    hnsw *h = ix->hnsw; /* the pool is the one mutable part of a const index, under its mutex */
    hscratch *s = NULL;
    pthread_mutex_lock(&h->pool_lock);
    if (h->pool_n > 0) s = h->pool[--h->pool_n];
    pthread_mutex_unlock(&h->pool_lock);
    return s ? s : scratch_new(ix);
}

static void scratch_put(const chrys_index *ix, hscratch *s)
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
typedef struct walk {
    const chrys_index *ix;
    const hnsw *h;
    const chrys_kernels *kr;
    hscratch *s;
    int locked;                 /* other workers may be writing links */
    uint32_t exclude;           /* never a result (the node being linked), or CHRYS_NO_SLOT */
    const search_filter *filter;
} walk;

static inline int acceptable(const walk *w, uint32_t v)
{
    if (v == w->exclude || !alive(w->ix, v)) return 0;
    return !w->filter || w->filter->allow(w->ix->ids[v], w->filter->ctx);
}

/* Greedy descent through one upper level: returns the best node reached from *cur. */
static void greedy(const walk *w, const hq *q, int l, uint32_t *cur, float *cur_s)
{
    for (int changed = 1; changed;) {
        changed = 0;
        uint32_t n = copy_links(w->h, *cur, l, w->s->nb, w->locked);
        for (uint32_t j = 0; j < n; j++) {
            uint32_t v = w->s->nb[j];
            float sc = score(w->ix, w->kr, q, v);
            if (sc > *cur_s || (sc == *cur_s && v < *cur)) {
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
static size_t search_level(const walk *w, const hq *q, uint32_t ep, float ep_s, size_t ef, int l)
{
    hscratch *s = w->s;
    const chrys_index *ix = w->ix;
    size_t nc = 0, nr = 0;
    new_epoch(s);
    s->mark[ep] = s->epoch;
    maxh_push(s->cand, &nc, (hitem){ep_s, ep});
    if (acceptable(w, ep)) minh_push(s->res, &nr, (hitem){ep_s, ep});
    uint32_t *nb = s->nb;
    while (nc > 0) {
        hitem c = s->cand[0];
        if (nr >= ef && c.s < s->res[0].s) break;
        maxh_pop(s->cand, &nc);
        if (nc > 0) PREFETCH(links(w->h, s->cand[0].v, l)); /* the next node expanded, likely */
        const uint32_t *ls;
        uint32_t n;
        if (w->locked) {
            n = copy_links(w->h, c.v, l, nb, 1);
            ls = nb;
        } else {
            ls = links(w->h, c.v, l);
            n = *ls++;
        }
        uint32_t m = 0;
        for (uint32_t j = 0; j < n; j++) { /* keep the unvisited, fetch their rows early */
            uint32_t v = ls[j];
            if (s->mark[v] == s->epoch) continue;
            s->mark[v] = s->epoch;
            prefetch_row(ix, v);
            nb[m++] = v;
        }
        float sc4[4];
        for (uint32_t j = 0; j < m; j++) {
            uint32_t v = nb[j];
            float sc;
            if ((j & 3) == 0 && j + 4 <= m) { /* four rows in flight, the next four fetched meanwhile */
                for (uint32_t t = j + 4; t < j + 8 && t < m; t++) prefetch_full(ix, nb[t]);
                score4(ix, w->kr, q, nb + j, sc4);
            }
            if (j < (m & ~3u)) {
                sc = sc4[j & 3];
            } else {
                if (j + 1 < m) prefetch_full(ix, nb[j + 1]);
                sc = score(ix, w->kr, q, v);
            }
            if (nr < ef || sc > s->res[0].s) {
                /* (walks that change the graph reserved n + 1 candidates first: one per node) */
                if (nc + 1 > s->cand_cap && grow(&s->cand, &s->cand_cap, nc + 1)) {
                    s->oom = 1; /* never a silently worse answer: the caller reports CHRYS_NOMEM */
                    return nr;
                }
                maxh_push(s->cand, &nc, (hitem){sc, v});
                if (acceptable(w, v)) {
                    minh_push(s->res, &nr, (hitem){sc, v});
                    if (nr > ef) minh_pop(s->res, &nr);
                }
            }
        }
    }
    return nr;
}

/* The neighbour-selection heuristic (Algorithm 4, without extending or keeping pruned links):
 * c[0..nc) sorted best first by score to the base; a candidate is kept unless it is closer to an
 * already kept node than to the base. Kept items go to out (at most maxm); returns how many. */
static size_t select_neighbours(const walk *w, const hitem *c, size_t nc, size_t maxm, hitem *out)
{
    const chrys_index *ix = w->ix;
    hscratch *s = w->s;
    size_t dim = ix->dim, k = 0;
    if (nc <= maxm) {
        memcpy(out, c, nc * sizeof *out);
        return nc;
    }
    for (size_t i = 0; i < nc && k < maxm; i++) {
        int good = 1;
        for (size_t j = 0; j < k && good; j++) {
            float sc;
            if (!ix->sq8) {
                const float *a = ix->vecs + (size_t)out[j].v * dim, *b = ix->vecs + (size_t)c[i].v * dim;
                sc = ix->metric == CHRYS_METRIC_L2 ? -w->kr->l2sq(a, b, dim) : w->kr->dot(a, b, dim);
            } else {
                hq q = {NULL, s->w8 + (1 + j) * dim, s->wsc[3 * (1 + j)], s->wsc[3 * (1 + j) + 1], s->wsc[3 * (1 + j) + 2]};
                sc = score(ix, w->kr, &q, c[i].v);
            }
            if (sc > c[i].s) good = 0;
        }
        if (!good) continue;
        if (ix->sq8) { /* prepare the kept node once, for the comparisons that follow */
            hq q;
            prepare_node(ix, c[i].v, &q, s->w8 + (1 + k) * dim, s->fbuf + dim);
            s->wsc[3 * (1 + k)] = q.scale;
            s->wsc[3 * (1 + k) + 1] = q.bias;
            s->wsc[3 * (1 + k) + 2] = q.qsq;
        }
        out[k++] = c[i];
    }
    return k;
}

/* Give v a link to x at level l (x scored sx against v); when v's list is full, re-select it
 * from its links plus x with the heuristic. */
static void connect(const walk *w, uint32_t v, uint32_t x, float sx, int l)
{
    const hnsw *h = w->h;
    hscratch *s = w->s;
    uint32_t cap = max_links(h, l);
    if (w->locked) node_lock(h, v);
    uint32_t *ls = links(h, v, l);
    uint32_t n = ls[0];
    for (uint32_t j = 0; j < n; j++)
        if (ls[1 + j] == x) goto out;
    if (n < cap) {
        ls[1 + n] = x;
        ls[0] = n + 1;
        goto out;
    }
    hq q;
    prepare_node(w->ix, v, &q, s->w8, s->fbuf);
    hitem *c = s->tmp; /* tmp holds at least ef + 64 >= M0 + 1 items */
    for (uint32_t j = 0; j < n; j++) c[j] = (hitem){score(w->ix, w->kr, &q, ls[1 + j]), ls[1 + j]};
    c[n] = (hitem){sx, x};
    qsort(c, n + 1, sizeof *c, cmp_hitem);
    size_t k = select_neighbours(w, c, n + 1, cap, s->sel);
    for (size_t j = 0; j < k; j++) ls[1 + j] = s->sel[j].v;
    ls[0] = (uint32_t)k;
out:
    if (w->locked) node_unlock(h, v);
}

/* Link node x (row xv, level lx) into the graph: Algorithm 1. */
static void link_node(walk *w, uint32_t x, const float *xv)
{
    hnsw *h = (hnsw *)w->h;
    hscratch *s = w->s;
    int lx = h->level[x];
    if (w->locked) pthread_mutex_lock(&h->glock);
    uint32_t ep = h->entry;
    int maxl = h->max_level;
    int hold = lx > maxl; /* a new top level: keep the entry point to ourselves until linked */
    if (ep == CHRYS_NO_SLOT || ep == x) {
        h->entry = x;
        h->max_level = lx;
        if (w->locked) pthread_mutex_unlock(&h->glock);
        return;
    }
    if (w->locked && !hold) pthread_mutex_unlock(&h->glock);
    hq q;
    prepare_vec(w->ix, xv, &q, s->w8);
    float ep_s = score(w->ix, w->kr, &q, ep);
    for (int l = maxl; l > lx; l--) greedy(w, &q, l, &ep, &ep_s);
    w->exclude = x;
    for (int l = lx < maxl ? lx : maxl; l >= 0; l--) {
        size_t nr = search_level(w, &q, ep, ep_s, h->efc, l);
        hitem *c = s->tmp;
        memcpy(c, s->res, nr * sizeof *c);
        heap_sort_best_first(c, nr);
        if (nr > 0) { /* the next level starts from the closest node found */
            ep = c[0].v;
            ep_s = c[0].s;
        }
        /* the heuristic may prepare kept nodes into w8[1..]; the query's own weights stay in w8[0] */
        size_t k = select_neighbours(w, c, nr, h->M, s->sel);
        hitem sel[2 * 128 + 1];
        memcpy(sel, s->sel, k * sizeof *sel);
        if (w->locked) node_lock(h, x);
        uint32_t *ls = links(h, x, l), had = ls[0], cap = max_links(h, l), keep[2 * 128];
        /* in a parallel build another worker may already have linked to x here (it reached x
         * through a level above): keep those back-links after the selected ones */
        memcpy(keep, ls + 1, had * sizeof *keep);
        for (size_t j = 0; j < k; j++) ls[1 + j] = sel[j].v;
        uint32_t cnt = (uint32_t)k;
        for (uint32_t i = 0; i < had && cnt < cap; i++) {
            int dup = 0;
            for (size_t j = 0; j < k && !dup; j++) dup = sel[j].v == keep[i];
            if (!dup) ls[1 + cnt++] = keep[i];
        }
        ls[0] = cnt;
        if (w->locked) node_unlock(h, x);
        for (size_t j = 0; j < k; j++) connect(w, sel[j].v, x, sel[j].s, l);
        prepare_vec(w->ix, xv, &q, s->w8); /* connect() reused w8[0] */
    }
    w->exclude = CHRYS_NO_SLOT;
    if (hold) {
        h->entry = x;
        h->max_level = lx;
        if (w->locked) pthread_mutex_unlock(&h->glock);
    }
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
 * Add (parallel build)
 */
typedef struct build_ctx {
    chrys_index *ix;
    size_t first, end;    /* items [first, end): slots, or indexes into slots */
    const float *rows;    /* row of slot v at rows + (v - first) * dim (new nodes) */
    const uint32_t *slots; /* non-NULL: relink these slots, rows from ix->vecs */
    atomic_size_t next, done;
    hscratch **scratch;
    int locked;
} build_ctx;

static void build_worker(void *arg, unsigned wk, size_t b, size_t e)
{
    (void)b;
    (void)e;
    build_ctx *c = arg;
    chrys_index *ix = c->ix;
    walk w = {ix, ix->hnsw, chrys_kernels_active(), c->scratch[wk], c->locked, CHRYS_NO_SLOT, NULL};
    for (;;) {
        size_t i0 = atomic_fetch_add(&c->next, 16);
        if (i0 >= c->end) break;
        size_t i1 = i0 + 16 < c->end ? i0 + 16 : c->end;
        for (size_t i = i0; i < i1; i++) {
            uint32_t v = c->slots ? c->slots[i] : (uint32_t)i;
            link_node(&w, v, c->slots ? ix->vecs + (size_t)v * ix->dim : c->rows + (i - c->first) * ix->dim);
        }
        size_t d = atomic_fetch_add(&c->done, i1 - i0) + (i1 - i0);
        if (wk == 0 && ix->progress && !c->slots) ix->progress(d, c->end - c->first, ix->progress_ctx);
    }
}

/* Workers for n links: all cores (build_threads) unless n is small; one scratch each. */
static unsigned link_workers(const chrys_index *ix, size_t n)
{
    unsigned nt = ix->build_threads ? ix->build_threads : chrys_online_cpus();
    if (nt > 64) nt = 64;
    return n < 64 ? 1 : nt; /* (a thread start costs about one insertion) */
}

static int scratch_get_all(chrys_index *ix, unsigned nt, hscratch **scr)
{
    for (unsigned t = 0; t < nt; t++)
        if (!(scr[t] = scratch_get(ix)) || scratch_fit(scr[t], ix->n, ix->hnsw->efc, ix->hnsw->M0) ||
            grow(&scr[t]->cand, &scr[t]->cand_cap, ix->n + 1)) /* a walk visits each node once */
            return CHRYS_NOMEM;
    return CHRYS_OK;
}

static void scratch_put_all(chrys_index *ix, unsigned nt, hscratch **scr)
{
    for (unsigned t = 0; t < nt; t++)
        if (scr[t]) scratch_put(ix, scr[t]);
}

int hnsw_relink(chrys_index *ix, const uint32_t *slots, size_t n)
{
    if (n == 0) return CHRYS_OK;
    unsigned nt = link_workers(ix, n);
    hscratch *scr[64] = {0};
    int rc = scratch_get_all(ix, nt, scr);
    if (!rc) {
        build_ctx c = {ix, 0, n, NULL, slots, 0, 0, scr, nt > 1};
        chrys_parallel_for(nt, nt, build_worker, &c);
    }
    scratch_put_all(ix, nt, scr);
    return rc;
}

int hnsw_after_add(chrys_index *ix, size_t first, const float *rows)
{
    hnsw *h = ix->hnsw;
    size_t n = ix->n - first;
    if (n == 0) return CHRYS_OK;
    /* Everything that can fail comes first: SQ8 ranges, upper-level lists, scratch. */
    int trained_now = 0;
    if (ix->sq8 && !ix->sq_min) {
        trained_now = 1;
        if (sq8_train(ix, rows, n)) return CHRYS_NOMEM;
    }
    unsigned nt = link_workers(ix, n);
    hscratch *scr[64] = {0};
    uint64_t rng0 = h->rng;
    int rc = CHRYS_OK;
    for (size_t v = first; v < ix->n; v++) {
        int l = draw_level(h);
        h->level[v] = (uint8_t)l;
        h->l0[v * (1 + (size_t)h->M0)] = 0;
        h->up[v] = NULL;
        if (l > 0 && !(h->up[v] = chrys_calloc((size_t)l * (1 + h->M), sizeof(uint32_t)))) rc = CHRYS_NOMEM;
    }
    if (!rc) rc = scratch_get_all(ix, nt, scr);
    if (rc) {
        for (size_t v = first; v < ix->n; v++) {
            chrys_free(h->up[v]);
            h->up[v] = NULL;
        }
        h->rng = rng0;
        if (trained_now) { /* the ranges came from rows the caller takes back */
            chrys_free(ix->sq_min);
            chrys_free(ix->sq_step);
            ix->sq_min = ix->sq_step = NULL;
        }
        scratch_put_all(ix, nt, scr);
        return rc;
    }
    /* From here nothing fails. */
    if (ix->sq8)
        for (size_t v = first; v < ix->n; v++) sq8_encode(ix, v, rows + (v - first) * ix->dim);
    build_ctx c = {ix, first, ix->n, rows, NULL, first, 0, scr, nt > 1};
    chrys_parallel_for(nt, nt, build_worker, &c);
    scratch_put_all(ix, nt, scr);
    return CHRYS_OK;
}

/* ------------------------------------------------------------------------------------------
 * Repair, update, remove, compact
 */

/* Re-select u's links at level l from its own links plus extra[0..ne), dropping 'drop' and
 * tombstones, with the heuristic (u as the base). */
static void relink_from(walk *w, uint32_t u, int l, const uint32_t *extra, uint32_t ne, uint32_t drop)
{
    const chrys_index *ix = w->ix;
    const hnsw *h = w->h;
    hscratch *s = w->s;
    uint32_t *ls = links(h, u, l);
    hitem *c = s->tmp;
    size_t nc = 0;
    hq q;
    prepare_node(ix, u, &q, s->w8, s->fbuf);
    new_epoch(s);
    s->mark[u] = s->epoch;
    for (int pass = 0; pass < 2; pass++) {
        const uint32_t *src = pass == 0 ? ls + 1 : extra;
        uint32_t n = pass == 0 ? ls[0] : ne;
        for (uint32_t j = 0; j < n; j++) {
            uint32_t v = src[j];
            if (v == drop || s->mark[v] == s->epoch || !alive(ix, v) || h->level[v] < l) continue;
            s->mark[v] = s->epoch;
            c[nc++] = (hitem){score(ix, w->kr, &q, v), v};
        }
    }
    qsort(c, nc, sizeof *c, cmp_hitem);
    size_t k = select_neighbours(w, c, nc, max_links(h, l), s->sel);
    /* The heuristic alone would leave u sparser than an insert does (inserts append back-links
     * unpruned until the list is full): refill with the closest pruned candidates up to u's
     * former degree, so repairs do not thin the graph. */
    size_t want = ls[0];
    for (size_t i = 0; i < nc && k < want; i++) {
        int kept = 0;
        for (size_t j = 0; j < k && !kept; j++) kept = s->sel[j].v == c[i].v;
        if (!kept) s->sel[k++] = c[i];
    }
    for (size_t j = 0; j < k; j++) ls[1 + j] = s->sel[j].v;
    ls[0] = (uint32_t)k;
}

static int list_has(const uint32_t *ls, uint32_t x)
{
    for (uint32_t j = 0; j < ls[0]; j++)
        if (ls[1 + j] == x) return 1;
    return 0;
}

/* The nodes that link to x, within two hops of it (where almost all of its in-links are: the
 * graph has no reverse links), re-select their links from theirs plus x's. With drop == x, x
 * leaves their lists (delete); otherwise x stays a candidate at its new place (update). Finding
 * them costs list scans only; distances are computed just for the lists that change. */
static void repair_neighbourhood(walk *w, uint32_t x, uint32_t drop)
{
    const hnsw *h = w->h;
    hscratch *s = w->s;
    uint32_t xs[2 * 128], extra[2 * 128 + 1];
    hitem *found = s->cand; /* exclusive_walk made room for (M0 + 1)^2 */
    for (int l = 0; l <= h->level[x]; l++) {
        const uint32_t *lx = links(h, x, l);
        uint32_t nx = lx[0], nf = 0;
        memcpy(xs, lx + 1, nx * sizeof *xs);
        /* candidates they can take instead: x's other neighbours, and x unless dropped */
        new_epoch(s);
        s->mark[x] = s->epoch;
        for (uint32_t j = 0; j < nx; j++) {
            uint32_t u = xs[j];
            if (s->mark[u] != s->epoch) {
                s->mark[u] = s->epoch;
                if (alive(w->ix, u) && list_has(links(h, u, l), x)) found[nf++].v = u;
            }
            const uint32_t *lu = links(h, u, l);
            for (uint32_t i = 0; i < lu[0]; i++) {
                uint32_t v = lu[1 + i];
                if (s->mark[v] == s->epoch) continue;
                s->mark[v] = s->epoch;
                if (alive(w->ix, v) && list_has(links(h, v, l), x)) found[nf++].v = v;
            }
        }
        for (uint32_t j = 0; j < nf; j++) {
            uint32_t u = found[j].v, ne = 0;
            for (uint32_t i = 0; i < nx; i++)
                if (xs[i] != u) extra[ne++] = xs[i];
            if (drop != x) extra[ne++] = x;
            relink_from(w, u, l, extra, ne, drop);
        }
    }
}

static int exclusive_walk(chrys_index *ix, walk *w)
{
    hscratch *s = scratch_get(ix);
    size_t m1 = ix->hnsw->M0 + 1;
    if (!s || scratch_fit(s, ix->n, ix->hnsw->efc + HNSW_MAX_EXTRA + 2 * (size_t)ix->hnsw->M0 + 2, ix->hnsw->M0) ||
        grow(&s->cand, &s->cand_cap, m1 * m1 > ix->n + 1 ? m1 * m1 : ix->n + 1)) {
        if (s) scratch_put(ix, s);
        return CHRYS_NOMEM;
    }
    *w = (walk){ix, ix->hnsw, chrys_kernels_active(), s, 0, CHRYS_NO_SLOT, NULL};
    return CHRYS_OK;
}

/* Make the highest-level live node other than 'except' the entry point (CHRYS_NO_SLOT when none). */
static void pick_entry(chrys_index *ix, uint32_t except)
{
    hnsw *h = ix->hnsw;
    h->entry = CHRYS_NO_SLOT;
    h->max_level = -1;
    for (size_t v = 0; v < ix->n; v++)
        if (v != except && alive(ix, (uint32_t)v) && (int)h->level[v] > h->max_level) {
            h->entry = (uint32_t)v;
            h->max_level = h->level[v];
        }
}

int hnsw_update(chrys_index *ix, uint32_t x, const float *v)
{
    walk w;
    if (exclusive_walk(ix, &w)) return CHRYS_NOMEM;
    if (ix->sq8) sq8_encode(ix, x, v);
    repair_neighbourhood(&w, x, CHRYS_NO_SLOT);
    /* relink x from scratch: clear its lists, then insert it again at its level */
    hnsw *h = ix->hnsw;
    for (int l = 0; l <= h->level[x]; l++) links(h, x, l)[0] = 0;
    if (h->entry == x) { /* start the descent from another node so x can find its new place */
        int lx = h->max_level;
        pick_entry(ix, x);
        if (h->entry == CHRYS_NO_SLOT) { /* x is the only live node: it stays the entry */
            h->entry = x;
            h->max_level = lx;
            scratch_put(ix, w.s);
            return CHRYS_OK;
        }
    }
    link_node(&w, x, v);
    scratch_put(ix, w.s);
    return CHRYS_OK;
}

int hnsw_remove(chrys_index *ix, uint32_t x)
{
    walk w;
    if (exclusive_walk(ix, &w)) return CHRYS_NOMEM;
    /* the caller has unmapped the id; mark the tombstone first so repairs skip it */
    ix->ids[x] = CHRYS_NO_ID;
    repair_neighbourhood(&w, x, x);
    scratch_put(ix, w.s);
    if (ix->hnsw->entry == x) pick_entry(ix, CHRYS_NO_SLOT);
    return CHRYS_OK;
}

int hnsw_compact(chrys_index *ix)
{
    hnsw *h = ix->hnsw;
    if (!h || ix->n_dead == 0) return CHRYS_OK;
    size_t n = ix->n;
    uint32_t *map = chrys_malloc((n ? n : 1) * sizeof *map);
    walk w;
    if (!map || exclusive_walk(ix, &w)) {
        chrys_free(map);
        return CHRYS_NOMEM;
    }
    uint32_t live = 0;
    for (size_t v = 0; v < n; v++) map[v] = alive(ix, (uint32_t)v) ? live++ : CHRYS_NO_SLOT;
    /* 1. lists that point at tombstones: re-select from the live links plus the tombstones'
     * live links (one hop through each removed node) */
    uint32_t extra[HNSW_MAX_EXTRA];
    for (size_t u = 0; u < n; u++) {
        if (!alive(ix, (uint32_t)u)) continue;
        for (int l = 0; l <= h->level[u]; l++) {
            uint32_t *ls = links(h, (uint32_t)u, l), ne = 0;
            int stale = 0;
            for (uint32_t j = 0; j < ls[0]; j++) {
                uint32_t d = ls[1 + j];
                if (alive(ix, d)) continue;
                stale = 1;
                const uint32_t *ld = links(h, d, l);
                for (uint32_t i = 0; i < ld[0] && ne < HNSW_MAX_EXTRA; i++)
                    if (alive(ix, ld[1 + i])) extra[ne++] = ld[1 + i];
            }
            if (stale) relink_from(&w, (uint32_t)u, l, extra, ne, CHRYS_NO_SLOT);
        }
    }
    scratch_put(ix, w.s);
    /* 2. move the live nodes down and renumber their links */
    size_t dim = ix->dim;
    for (size_t v = 0; v < n; v++) {
        uint32_t t = map[v];
        if (t == CHRYS_NO_SLOT) {
            chrys_free(h->up[v]);
            h->up[v] = NULL;
            continue;
        }
        for (int l = 0; l <= h->level[v]; l++) {
            uint32_t *ls = links(h, (uint32_t)v, l);
            for (uint32_t j = 0; j < ls[0]; j++) ls[1 + j] = map[ls[1 + j]]; /* all live after step 1 */
        }
        if (t == v) continue;
        if (ix->vecs) memcpy(ix->vecs + (size_t)t * dim, ix->vecs + v * dim, dim * sizeof(float));
        if (ix->codes) memcpy(ix->codes + (size_t)t * dim, ix->codes + v * dim, dim);
        if (ix->sq_csq) ix->sq_csq[t] = ix->sq_csq[v];
        ix->norms[t] = ix->norms[v];
        ix->ids[t] = ix->ids[v];
        ix->meta[t] = ix->meta[v];
        memcpy(links(h, t, 0), links(h, (uint32_t)v, 0), (1 + (size_t)h->M0) * sizeof(uint32_t));
        h->level[t] = h->level[v];
        h->up[t] = h->up[v];
        h->up[v] = NULL;
        idmap_put(&ix->map, ix->ids[t], t); /* existing key: cannot fail */
    }
    uint32_t e = h->entry;
    ix->n = live;
    ix->n_dead = 0;
    if (e != CHRYS_NO_SLOT && map[e] != CHRYS_NO_SLOT) h->entry = map[e];
    else pick_entry(ix, CHRYS_NO_SLOT);
    chrys_free(map);
    return CHRYS_OK;
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
    hscratch *s = scratch_get(ix);
    sq8_fin *f = chrys_malloc((c->pool + 1) * sizeof *f);
    uint32_t *slots = chrys_malloc((c->pool + 1) * sizeof *slots);
    if (!s || !f || !slots || scratch_fit(s, ix->n, c->pool, h->M0)) {
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
            for (int l = h->max_level; l > 0; l--) greedy(&w, &q, l, &ep, &ep_s);
            size_t nr = search_level(&w, &q, ep, ep_s, c->pool, 0);
            if (s->oom) {
                s->oom = 0;
                c->rc = CHRYS_NOMEM;
                goto out;
            }
            /* re-rank: exact from float32 rows, else from the codes with float weights */
            hitem *r = s->tmp;
            memcpy(r, s->res, nr * sizeof *r);
            heap_sort_best_first(r, nr);
            /* float32 walk: only the k best and those within float32 error of the k-th can be
             * in the top k, so only they are scored again in double (the codes' walk: all ef) */
            size_t depth = nr;
            for (size_t j = 0; j < nr; j++) slots[j] = r[j].v;
            if (!ix->sq8 && nr > k) {
                float kth = r[k - 1].s, tol = (float)rerank_slack(ix, qv, kth, slots, nr);
                depth = k;
                while (depth < nr && r[depth].s >= kth - tol) depth++;
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
    if (s) scratch_put(ix, s);
}

int hnsw_search(const chrys_index *ix, size_t nq, const float *q, size_t k, int use_thr, double thr, unsigned nt,
                uint32_t ef, uint64_t *ids, double *scores, const search_filter *filter)
{
    size_t e = ef ? ef : HNSW_DEFAULT_EF;
    if (e < k) e = k;
    search_job c = {ix, q, k, use_thr, thr, ids, scores, filter, e, 0, CHRYS_OK};
    if (nt == 0) nt = chrys_online_cpus();
    chrys_parallel_for(nq >= 2 * (size_t)nt ? nt : 1, nq, search_range, &c);
    return c.rc;
}

/* ------------------------------------------------------------------------------------------
 * Persistence
 */
#define HH_M 0
#define HH_M0 4
#define HH_EFC 8
#define HH_MAXLEVEL 12 /* i32 */
#define HH_ENTRY 16
#define HH_RESERVED0 20
#define HH_RNG 24
#define HH_UPWORDS 32 /* u64: u32 words in HNUP */
#define HH_RESERVED1 40
#define HH_SIZE 64

int hnsw_store_sections(const chrys_index *ix, store_section *secs, uint32_t *ns, unsigned char *hdr,
                        unsigned char **up_out)
{
    const hnsw *h = ix->hnsw;
    uint32_t n = 0;
    uint64_t words = 0;
    for (size_t v = 0; v < ix->n; v++) words += (uint64_t)h->level[v] * (1 + h->M);
    unsigned char *up = chrys_malloc(words ? words * 4 : 1);
    if (!up) return CHRYS_NOMEM;
    size_t o = 0;
    for (size_t v = 0; v < ix->n; v++)
        for (size_t i = 0; i < (size_t)h->level[v] * (1 + h->M); i++, o += 4) put_u32le(up + o, h->up[v][i]);
    memset(hdr, 0, HH_SIZE);
    put_u32le(hdr + HH_M, h->M);
    put_u32le(hdr + HH_M0, h->M0);
    put_u32le(hdr + HH_EFC, h->efc);
    put_u32le(hdr + HH_MAXLEVEL, (uint32_t)h->max_level);
    put_u32le(hdr + HH_ENTRY, h->entry);
    put_u64le(hdr + HH_RNG, h->rng);
    put_u64le(hdr + HH_UPWORDS, words);
    secs[n++] = (store_section){TAG_HNSW, 0, hdr, HH_SIZE};
    secs[n++] = (store_section){TAG_HNLV, 0, h->level, ix->n};
    secs[n++] = (store_section){TAG_HNL0, 0, h->l0, ix->n * (1 + (uint64_t)h->M0) * 4};
    secs[n++] = (store_section){TAG_HNUP, 0, up, words * 4};
    *ns = n;
    *up_out = up;
    return CHRYS_OK;
}

static int bad_list(const chrys_index *ix, const hnsw *h, uint32_t v, int l, const uint32_t *ls, char *why, size_t cap)
{
    if (ls[0] > max_links(h, l)) return snprintf(why, cap, "node %u level %d has %u links (cap %u)", v, l, ls[0], max_links(h, l));
    for (uint32_t j = 0; j < ls[0]; j++) {
        uint32_t t = ls[1 + j];
        if (t >= ix->n) return snprintf(why, cap, "node %u level %d links to %u of %zu nodes", v, l, t, ix->n);
        if (t == v) return snprintf(why, cap, "node %u level %d links to itself", v, l);
        if (h->level[t] < l) return snprintf(why, cap, "node %u level %d links to node %u of level %u", v, l, t, h->level[t]);
        for (uint32_t i = 0; i < j; i++)
            if (ls[1 + i] == t) return snprintf(why, cap, "node %u level %d links twice to %u", v, l, t);
    }
    return 0;
}

int hnsw_read_header(store_reader *r, unsigned char *hdr, uint32_t *M, uint32_t *efc, char **errmsg)
{
    int ih = store_find(r, TAG_HNSW);
    if (ih < 0) return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNSW index without its graph sections", r->name);
    if (r->sec[ih].len != HH_SIZE)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNSW header has %llu bytes", r->name, (unsigned long long)r->sec[ih].len);
    int rc = store_read_section(r, ih, hdr, errmsg);
    if (rc) return rc;
    uint32_t m = get_u32le(hdr + HH_M), m0 = get_u32le(hdr + HH_M0), e = get_u32le(hdr + HH_EFC);
    int32_t maxl = (int32_t)get_u32le(hdr + HH_MAXLEVEL);
    int bad = get_u32le(hdr + HH_RESERVED0) != 0;
    for (int i = HH_RESERVED1; i < HH_SIZE; i++) bad |= hdr[i];
    if (bad || m < 2 || m > 128 || m0 != 2 * m || e < 1 || e > 1000000 || maxl < -1 || maxl >= HNSW_MAX_LEVEL)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNSW header is invalid (M %u, M0 %u, efc %u, max level %d)", r->name,
                                m, m0, e, maxl);
    *M = m;
    *efc = e;
    return CHRYS_OK;
}

int hnsw_load(store_reader *r, const unsigned char *hdr, chrys_index *ix, char **errmsg)
{
    int il = store_find(r, TAG_HNLV), i0 = store_find(r, TAG_HNL0), iu = store_find(r, TAG_HNUP), rc;
    if (il < 0 || i0 < 0 || iu < 0)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNSW index without its graph sections", r->name);
    hnsw *h = ix->hnsw; /* created with the header's M and ef_construction (hnsw_read_header) */
    uint32_t M = h->M, M0 = h->M0;
    int32_t maxl = (int32_t)get_u32le(hdr + HH_MAXLEVEL);
    uint32_t entry = get_u32le(hdr + HH_ENTRY);
    uint64_t words = get_u64le(hdr + HH_UPWORDS);
    if (r->sec[il].len != ix->n || r->sec[i0].len != ix->n * (1 + (uint64_t)M0) * 4 || r->sec[iu].len != words * 4)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNSW sections do not match %zu nodes", r->name, ix->n);
    h->rng = get_u64le(hdr + HH_RNG);
    if ((rc = hnsw_reserve(ix, ix->cap ? ix->cap : 1))) /* index_reserve sized it unless the index is empty */
        return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", r->name);
    if ((rc = store_read_section(r, il, h->level, errmsg)) || (rc = store_read_section(r, i0, h->l0, errmsg))) return rc;
    uint64_t want = 0;
    for (size_t v = 0; v < ix->n; v++) {
        /* a tombstone may sit above the live maximum (it was the entry point when removed) */
        if ((int)h->level[v] > (alive(ix, (uint32_t)v) ? maxl : HNSW_MAX_LEVEL - 1))
            return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNLV: node %zu has level %u above the maximum %d", r->name, v,
                                    h->level[v], alive(ix, (uint32_t)v) ? maxl : HNSW_MAX_LEVEL - 1);
        want += (uint64_t)h->level[v] * (1 + M);
    }
    if (want != words) return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNUP: %llu words, levels need %llu", r->name,
                                                (unsigned long long)words, (unsigned long long)want);
    unsigned char *up = chrys_malloc(words ? words * 4 : 1);
    if (!up) return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", r->name);
    if ((rc = store_read_section(r, iu, up, errmsg))) {
        chrys_free(up);
        return rc;
    }
    size_t o = 0;
    for (size_t v = 0; v < ix->n && !rc; v++) {
        size_t nw = (size_t)h->level[v] * (1 + M);
        if (!nw) continue;
        if (!(h->up[v] = chrys_malloc(nw * 4))) rc = CHRYS_NOMEM;
        for (size_t i = 0; i < nw && !rc; i++, o += 4) h->up[v][i] = get_u32le(up + o);
    }
    chrys_free(up);
    if (rc) return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", r->name);
    char why[160];
    for (size_t v = 0; v < ix->n; v++)
        for (int l = 0; l <= h->level[v]; l++)
            if (bad_list(ix, h, (uint32_t)v, l, links(h, (uint32_t)v, l), why, sizeof why))
                return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNSW graph: %s", r->name, why);
    size_t live = ix->n - ix->n_dead;
    if (live == 0 ? entry != CHRYS_NO_SLOT && entry >= ix->n
                  : entry >= ix->n || !alive(ix, entry) || (int)h->level[entry] != maxl)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNSW entry point %u is invalid", r->name, entry);
    h->entry = live ? entry : CHRYS_NO_SLOT;
    h->max_level = live ? maxl : -1;
    return CHRYS_OK;
}

/*
 * hnsw_graph.h: the HNSW graph's layout and the pieces its three files share (private to
 * hnsw.c, the graph and search; hnsw_build.c, insert, link, relink, repair; hnsw_store.c, its
 * sections and the loader's checks). See hnsw.c for the layout and the concurrency rules.
 */
#ifndef CHRYS_HNSW_GRAPH_H
#define CHRYS_HNSW_GRAPH_H

#include <pthread.h>
#include <stdatomic.h>

#include "hnsw.h"
#include "kernels/dist.h"
#include "sq8.h"
#include "topk.h"

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

typedef struct hscratch {
    uint32_t *mark; /* visited: mark[v] == epoch */
    size_t mark_n;
    uint32_t epoch;
    topk_item *cand, *res, *tmp; /* topk.h heaps: candidates (best on top), results (worst on top); sort space */
    size_t cand_cap, res_cap, tmp_cap;
    int8_t *w8;   /* (M0 + 2) * dim: [0] the query's weights, [1 + j] the j-th selected node's */
    float *wsc;   /* (M0 + 2) * 3: scale, bias, |v|^2 of each prepared row */
    float *fbuf;  /* 2 * dim: decoded rows, float weights */
    uint32_t *nb; /* M0 + 1: a copy of one link list */
    topk_item *sel; /* M0 + 1 */
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

/* Walk items are topk_items (topk.h) ordered by topk_worse, ties by slot: id = slot. */
static inline topk_item slot_item(float s, uint32_t v) { return (topk_item){s, v, v}; }

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

static inline void new_epoch(hscratch *s)
{
    if (++s->epoch == 0) {
        memset(s->mark, 0, s->mark_n * sizeof *s->mark);
        s->epoch = 1;
    }
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

/* hnsw.c: scratch from the graph's pool, sized for a walk over n nodes with lists of up to ef */
CHRYS_PRIVATE hscratch *hnsw_scratch_get(const chrys_index *ix);
CHRYS_PRIVATE void hnsw_scratch_put(const chrys_index *ix, hscratch *s);
CHRYS_PRIVATE int hnsw_scratch_fit(hscratch *s, size_t n, size_t ef, size_t m0);
CHRYS_PRIVATE int hnsw_grow(topk_item **a, size_t *cap, size_t need);
CHRYS_PRIVATE void hnsw_prepare_node(const chrys_index *ix, uint32_t v, hq *q, int8_t *w8, float *fbuf);
CHRYS_PRIVATE void hnsw_greedy(const walk *w, const hq *q, int l, uint32_t *cur, float *cur_s);
CHRYS_PRIVATE size_t hnsw_search_level(const walk *w, const hq *q, uint32_t ep, float ep_s, size_t ef, int l);

#endif

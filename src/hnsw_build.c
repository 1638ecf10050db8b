/*
 * hnsw_build.c: building and changing the HNSW graph: insert (Algorithm 1) and link with the
 * neighbour-selection heuristic, the parallel build, relinking moved nodes, and updates and
 * deletes with neighbourhood repair, compaction. The layout and the locking rules: hnsw.c.
 */
#include <math.h>
#include <stdlib.h>

#include "hnsw_graph.h"

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
/* The neighbour-selection heuristic (Algorithm 4, without extending or keeping pruned links):
 * c[0..nc) sorted best first by score to the base; a candidate is kept unless it is closer to an
 * already kept node than to the base. Kept items go to out (at most maxm); returns how many. */
static size_t select_neighbours(const walk *w, const topk_item *c, size_t nc, size_t maxm, topk_item *out)
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
                const float *a = ix->vecs + (size_t)out[j].slot * dim, *b = ix->vecs + (size_t)c[i].slot * dim;
                sc = ix->metric == CHRYS_METRIC_L2 ? -w->kr->l2sq(a, b, dim) : w->kr->dot(a, b, dim);
            } else {
                hq q = {NULL, s->w8 + (1 + j) * dim, s->wsc[3 * (1 + j)], s->wsc[3 * (1 + j) + 1], s->wsc[3 * (1 + j) + 2]};
                sc = score(ix, w->kr, &q, c[i].slot);
            }
            if (sc > c[i].score) good = 0;
        }
        if (!good) continue;
        if (ix->sq8) { /* prepare the kept node once, for the comparisons that follow */
            hq q;
            hnsw_prepare_node(ix, c[i].slot, &q, s->w8 + (1 + k) * dim, s->fbuf + dim);
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
    hnsw_prepare_node(w->ix, v, &q, s->w8, s->fbuf);
    topk_item *c = s->tmp; /* tmp holds at least ef + 64 >= M0 + 1 items */
    for (uint32_t j = 0; j < n; j++) c[j] = slot_item(score(w->ix, w->kr, &q, ls[1 + j]), ls[1 + j]);
    c[n] = slot_item(sx, x);
    topk_sort_items(c, n + 1);
    size_t k = select_neighbours(w, c, n + 1, cap, s->sel);
    for (size_t j = 0; j < k; j++) ls[1 + j] = s->sel[j].slot;
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
    for (int l = maxl; l > lx; l--) hnsw_greedy(w, &q, l, &ep, &ep_s);
    w->exclude = x;
    for (int l = lx < maxl ? lx : maxl; l >= 0; l--) {
        size_t nr = hnsw_search_level(w, &q, ep, ep_s, h->efc, l);
        topk_item *c = s->tmp;
        memcpy(c, s->res, nr * sizeof *c);
        topk_heap_sort(c, nr);
        if (nr > 0) { /* the next level starts from the closest node found */
            ep = c[0].slot;
            ep_s = c[0].score;
        }
        /* the heuristic may prepare kept nodes into w8[1..]; the query's own weights stay in w8[0] */
        size_t k = select_neighbours(w, c, nr, h->M, s->sel);
        topk_item sel[2 * HNSW_MAX_M + 1];
        memcpy(sel, s->sel, k * sizeof *sel);
        if (w->locked) node_lock(h, x);
        uint32_t *ls = links(h, x, l), had = ls[0], cap = max_links(h, l), keep[2 * HNSW_MAX_M];
        /* in a parallel build another worker may already have linked to x here (it reached x
         * through a level above): keep those back-links after the selected ones */
        memcpy(keep, ls + 1, had * sizeof *keep);
        for (size_t j = 0; j < k; j++) ls[1 + j] = sel[j].slot;
        uint32_t cnt = (uint32_t)k;
        for (uint32_t i = 0; i < had && cnt < cap; i++) {
            int dup = 0;
            for (size_t j = 0; j < k && !dup; j++) dup = sel[j].slot == keep[i];
            if (!dup) ls[1 + cnt++] = keep[i];
        }
        ls[0] = cnt;
        if (w->locked) node_unlock(h, x);
        for (size_t j = 0; j < k; j++) connect(w, sel[j].slot, x, sel[j].score, l);
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
 * Add (parallel build)
 */
typedef struct build_ctx {
    chrys_index *ix;
    size_t first, end;    /* items [first, end): slots, or indexes into slots */
    const float *rows;    /* row of slot v at rows + (v - first) * dim (new nodes) */
    const uint32_t *slots; /* non-NULL: relink these slots, rows from ix->vecs */
    atomic_size_t done;
    hscratch **scratch;
    int locked;
} build_ctx;

/* Link items [first + b, first + e): one chunk of 16 (chrys_parallel_chunks). */
static void build_chunk(void *arg, unsigned wk, size_t b, size_t e)
{
    build_ctx *c = arg;
    chrys_index *ix = c->ix;
    walk w = {ix, ix->hnsw, chrys_kernels_active(), c->scratch[wk], c->locked, CHRYS_NO_SLOT, NULL};
    for (size_t i = c->first + b; i < c->first + e; i++) {
        uint32_t v = c->slots ? c->slots[i] : (uint32_t)i;
        link_node(&w, v, c->slots ? ix->vecs + (size_t)v * ix->dim : c->rows + (i - c->first) * ix->dim);
    }
    size_t d = atomic_fetch_add(&c->done, e - b) + (e - b);
    if (wk == 0 && ix->progress && !c->slots) ix->progress(d, c->end - c->first, ix->progress_ctx);
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
        if (!(scr[t] = hnsw_scratch_get(ix)) || hnsw_scratch_fit(scr[t], ix->n, ix->hnsw->efc, ix->hnsw->M0) ||
            hnsw_grow(&scr[t]->cand, &scr[t]->cand_cap, ix->n + 1)) /* a walk visits each node once */
            return CHRYS_NOMEM;
    return CHRYS_OK;
}

static void scratch_put_all(chrys_index *ix, unsigned nt, hscratch **scr)
{
    for (unsigned t = 0; t < nt; t++)
        if (scr[t]) hnsw_scratch_put(ix, scr[t]);
}

int hnsw_relink(chrys_index *ix, const uint32_t *slots, size_t n)
{
    if (n == 0) return CHRYS_OK;
    unsigned nt = link_workers(ix, n);
    hscratch *scr[64] = {0};
    int rc = scratch_get_all(ix, nt, scr);
    if (!rc) {
        build_ctx c = {ix, 0, n, NULL, slots, 0, scr, nt > 1};
        chrys_parallel_chunks(nt, n, 16, build_chunk, &c);
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
    build_ctx c = {ix, first, ix->n, rows, NULL, 0, scr, nt > 1};
    chrys_parallel_chunks(nt, n, 16, build_chunk, &c);
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
    topk_item *c = s->tmp;
    size_t nc = 0;
    hq q;
    hnsw_prepare_node(ix, u, &q, s->w8, s->fbuf);
    new_epoch(s);
    s->mark[u] = s->epoch;
    for (int pass = 0; pass < 2; pass++) {
        const uint32_t *src = pass == 0 ? ls + 1 : extra;
        uint32_t n = pass == 0 ? ls[0] : ne;
        for (uint32_t j = 0; j < n; j++) {
            uint32_t v = src[j];
            if (v == drop || s->mark[v] == s->epoch || !alive(ix, v) || h->level[v] < l) continue;
            s->mark[v] = s->epoch;
            c[nc++] = slot_item(score(ix, w->kr, &q, v), v);
        }
    }
    topk_sort_items(c, nc);
    size_t k = select_neighbours(w, c, nc, max_links(h, l), s->sel);
    /* The heuristic alone would leave u sparser than an insert does (inserts append back-links
     * unpruned until the list is full): refill with the closest pruned candidates up to u's
     * former degree, so repairs do not thin the graph. */
    size_t want = ls[0];
    for (size_t i = 0; i < nc && k < want; i++) {
        int kept = 0;
        for (size_t j = 0; j < k && !kept; j++) kept = s->sel[j].slot == c[i].slot;
        if (!kept) s->sel[k++] = c[i];
    }
    for (size_t j = 0; j < k; j++) ls[1 + j] = s->sel[j].slot;
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
    uint32_t xs[2 * HNSW_MAX_M], extra[2 * HNSW_MAX_M + 1];
    topk_item *found = s->cand; /* exclusive_walk made room for (M0 + 1)^2 */
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
                if (alive(w->ix, u) && list_has(links(h, u, l), x)) found[nf++].slot = u;
            }
            const uint32_t *lu = links(h, u, l);
            for (uint32_t i = 0; i < lu[0]; i++) {
                uint32_t v = lu[1 + i];
                if (s->mark[v] == s->epoch) continue;
                s->mark[v] = s->epoch;
                if (alive(w->ix, v) && list_has(links(h, v, l), x)) found[nf++].slot = v;
            }
        }
        for (uint32_t j = 0; j < nf; j++) {
            uint32_t u = found[j].slot, ne = 0;
            for (uint32_t i = 0; i < nx; i++)
                if (xs[i] != u) extra[ne++] = xs[i];
            if (drop != x) extra[ne++] = x;
            relink_from(w, u, l, extra, ne, drop);
        }
    }
}

static int exclusive_walk(chrys_index *ix, walk *w)
{
    hscratch *s = hnsw_scratch_get(ix);
    size_t m1 = ix->hnsw->M0 + 1;
    if (!s || hnsw_scratch_fit(s, ix->n, ix->hnsw->efc + HNSW_MAX_EXTRA + 2 * (size_t)ix->hnsw->M0 + 2, ix->hnsw->M0) ||
        hnsw_grow(&s->cand, &s->cand_cap, m1 * m1 > ix->n + 1 ? m1 * m1 : ix->n + 1)) {
        if (s) hnsw_scratch_put(ix, s);
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
            hnsw_scratch_put(ix, w.s);
            return CHRYS_OK;
        }
    }
    link_node(&w, x, v);
    hnsw_scratch_put(ix, w.s);
    return CHRYS_OK;
}

int hnsw_remove(chrys_index *ix, uint32_t x)
{
    walk w;
    if (exclusive_walk(ix, &w)) return CHRYS_NOMEM;
    /* the caller has unmapped the id; mark the tombstone first so repairs skip it */
    ix->ids[x] = CHRYS_NO_ID;
    repair_neighbourhood(&w, x, x);
    hnsw_scratch_put(ix, w.s);
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
    hnsw_scratch_put(ix, w.s);
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

/*
 * merge_block.c: chrys_merger_merge, the batch merge (validation, block search, settling, relinking).
 *
 * The rule, for each record in order (the original's, see docs/MERGER.md):
 *   best := none, score 0; for each entry in creation order, if cos(record, entry) > best score
 *   it becomes the best (so the oldest entry wins ties and cos <= 0 never matches);
 *   if best exists and its score >= threshold: entry := w_old*entry + w_new*record, merged_count
 *   += 1, similarity_score := score, and metadata updated; else the record becomes a new entry.
 * "cos" is computed in double precision (the kernel table's dot_f64) on the unit-length float32
 * copies the index holds, as the exact scan's rescoring does, so every path below agrees
 * to the last bit.
 *
 * Batch merge, exact: records are taken in blocks of B. One parallel search finds each record's
 * top-K entries in the state before the block. Settling the block in order, record i's best entry
 * is the better of (a) its first candidate that no earlier record of the block changed (entries
 * untouched in the block still have the score the search computed, and the candidate list is in
 * exact order, so this is the best untouched entry), and (b) a rescoring, against the record, of
 * every entry changed or created earlier in the block. If all K candidates were changed, the
 * record is searched again against the live index. Decisions therefore equal the one-at-a-time
 * algorithm's exactly; tests/unit/test_merge.c checks this against an independent oracle.
 *
 * Index-backed (past the planner's threshold, docs/MERGER.md): the block's candidates come from
 * the planner's HNSW graph (or an IVF index) instead of the exact scan; records whose best
 * candidate lies within confirm_margin of the threshold get exact candidates from one exact scan
 * for the block; settling is the same. Merges rewrite an entry's row and code in place; at the
 * block's end the new entries are linked and those that moved far are linked again.
 *
 */
#include <math.h>
#include <stdio.h>
#include <time.h>

#include "hnsw.h"
#include "kernels/dist.h"
#include "merge.h"
#include "planner.h"

/* ------------------------------------------------------------------------------------------
 * Validation: everything is checked before the first change.
 */
typedef struct rec_check {
    double norm; /* vec_norm of the embedding (0: all zero) */
    long bad;    /* its first non-finite component, or -1 */
} rec_check;

typedef struct check_job {
    const chrys_merge_record *recs;
    uint32_t dim;
    rec_check *chk;
} check_job;

static void check_range(void *arg, unsigned wk, size_t b, size_t e)
{
    (void)wk;
    check_job *j = arg;
    for (size_t i = b; i < e; i++) {
        const chrys_merge_record *r = &j->recs[i];
        rec_check *c = &j->chk[i];
        c->norm = 0;
        c->bad = -1;
        if (!r->vec || r->dim != j->dim) continue;
        /* one pass: a finite sum of squares (double: no float squared overflows) means every
         * component is finite; the bad one is looked for only otherwise */
        c->norm = vec_norm(r->vec, j->dim);
        if (!isfinite(c->norm) && (c->bad = vec_first_nonfinite(r->vec, j->dim)) >= 0) c->norm = 0;
    }
}

/* Everything is checked before the first change. The numeric checks (finite components, not all
 * zero: norm 0 exactly when every component is +-0, the squares being exact in double) run on all
 * cores, one pass over each embedding, and keep the norms for the block's queries and appends. */
static int validate(chrys_merger *m, size_t n, const chrys_merge_record *recs, unsigned char *skip, rec_check *chk,
                    unsigned nt)
{
    uint32_t dim = m->opts.dim;
    check_job cj = {recs, dim, chk};
    chrys_parallel_for((double)n * dim >= (1 << 18) ? nt : 1, n, check_range, &cj);
    idmap batch = {0};
    int rc = idmap_init(&batch, n);
    if (rc) return merger_fail(m, CHRYS_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const chrys_merge_record *r = &recs[i];
        int bad = CHRYS_OK;
        char why[160] = "";
        skip[i] = 0;
        if (r->id == CHRYS_NO_ID) {
            bad = CHRYS_INVALID;
            snprintf(why, sizeof why, "id %llu is reserved", (unsigned long long)r->id);
        } else if (idmap_get(&m->seen, r->id) != CHRYS_NO_SLOT) {
            bad = CHRYS_EXISTS;
            snprintf(why, sizeof why, "id %llu was already merged", (unsigned long long)r->id);
        } else if (idmap_get(&batch, r->id) != CHRYS_NO_SLOT) {
            bad = CHRYS_EXISTS;
            snprintf(why, sizeof why, "id %llu appears twice in the batch", (unsigned long long)r->id);
        } else if (!r->vec || r->dim == 0) {
            skip[i] = 2; /* empty embedding: skipped and counted, as the original does */
        } else if (r->dim != dim) {
            bad = CHRYS_DIM;
            snprintf(why, sizeof why, "embedding has %u components, the merger has %u", r->dim, dim);
        } else {
            long j = chk[i].bad;
            if (j >= 0) {
                bad = CHRYS_INVALID;
                snprintf(why, sizeof why, "component %ld is %s", j, isnan(r->vec[j]) ? "NaN" : "infinite");
            } else if (chk[i].norm == 0) {
                bad = CHRYS_INVALID;
                snprintf(why, sizeof why, "zero vector has no cosine similarity");
            } else if (r->meta && !merger_meta_is_object(r->meta)) {
                bad = CHRYS_INVALID;
                snprintf(why, sizeof why, "metadata is not a JSON object");
            }
        }
        if (bad) {
            if (!m->opts.skip_invalid) {
                idmap_free(&batch);
                return merger_fail_record(m, bad, i, r->id, "%s", why);
            }
            skip[i] = 1;
        }
        if (r->id != CHRYS_NO_ID && bad != CHRYS_EXISTS && idmap_put(&batch, r->id, (uint32_t)i)) {
            idmap_free(&batch);
            return merger_fail(m, CHRYS_NOMEM, "out of memory");
        }
    }
    idmap_free(&batch);
    return CHRYS_OK;
}

/* ------------------------------------------------------------------------------------------
 * Applying one decision.
 */
static int apply_merge(chrys_merger *m, uint64_t e, double score, const chrys_merge_record *r,
                       float *tmp_old, float *tmp_new)
{
    uint32_t dim = m->opts.dim;
    chrys_index_get(m->ix, e, tmp_old);
    uint32_t c = m->merged_count[e];
    double wo, wn;
    if (m->opts.mean_update) {
        wo = (double)c / (c + 1.0);
        wn = 1.0 / (c + 1.0);
    } else {
        double tot = m->opts.weight_old + m->opts.weight_new; /* the original normalises weights */
        wo = m->opts.weight_old / tot;
        wn = m->opts.weight_new / tot;
    }
    chrys_kernels_active()->mix(tmp_new, tmp_old, wo, r->vec, wn, dim);
    if (m->opts.renormalize) {
        double nr = vec_norm(tmp_new, dim);
        if (nr > 0) vec_scale_to(tmp_new, tmp_new, dim, nr);
    }
    if (vec_all_zero(tmp_new, dim)) {
        /* w_old*old + w_new*new cancelled out exactly: keep the old vector (cosine needs a direction). */
        memcpy(tmp_new, tmp_old, dim * sizeof(float));
    }
    const char *old_meta = NULL;
    chrys_index_get_meta(m->ix, e, &old_meta);
    int rc;
    char *meta = merger_merged_meta(m, old_meta, r->meta, &rc);
    if (rc) return merger_fail(m, rc, "entry %llu: %s", (unsigned long long)e,
                        rc == CHRYS_CORRUPT ? "stored metadata is not a JSON object" : "out of memory merging metadata");
    if ((rc = index_update_keep_links(m->ix, idmap_get(&m->ix->map, e), tmp_new))) {
        chrys_free(meta);
        return merger_fail(m, rc, "updating entry %llu: %s", (unsigned long long)e, chrys_index_errmsg(m->ix));
    }
    if (meta || old_meta) {
        /* replace the row's metadata in place (the index owns it) */
        uint32_t slot = idmap_get(&m->ix->map, e);
        index_set_meta(m->ix, slot, meta);
    }
    m->merged_count[e] = c + 1;
    if (m->ix->kind == CHRYS_INDEX_HNSW) { /* how far the entry moved: relinked at the block's end past a limit */
        double no = vec_norm(tmp_old, dim), nn = vec_norm(tmp_new, dim);
        double cs = no > 0 && nn > 0 ? vec_dot_f64(tmp_old, tmp_new, dim) / (no * nn) : 1;
        m->drift[e] += (float)acos(cs > 1 ? 1 : cs < -1 ? -1 : cs);
    }
    m->similarity[e] = score;
    return CHRYS_OK;
}

/* The record as a new entry: its prepared query row (unit, its norm), as the index would store
 * r->vec, so not checked or scaled again. */
static int apply_append(chrys_merger *m, const chrys_merge_record *r, const float *unit, double norm, uint64_t *e_out)
{
    uint64_t e = m->n_entries;
    int rc = index_add_unit_unlinked(m->ix, e, unit, norm, r->meta); /* HNSW: linked at the block's end */
    if (rc) return merger_fail(m, rc, "adding entry: %s", chrys_index_errmsg(m->ix));
    m->merged_count[e] = 1;
    m->drift[e] = 0;
    m->similarity[e] = NAN;
    m->first_record[e] = r->id;
    m->n_entries++;
    *e_out = e;
    return CHRYS_OK;
}

static void report(const chrys_merger *m, double t0, size_t entries, size_t records, const char *path)
{
    if (!m->opts.on_search) return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    chrys_merge_metrics mm = {ts.tv_sec + ts.tv_nsec * 1e-9 - t0, entries, records, path, 0};
    mm.slow = mm.seconds > m->opts.slow_search_s;
    m->opts.on_search(m->opts.user, &mm);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------------------------
 * The batch merge.
 */

/* Whether this block's candidates come from the index (approximate) rather than an exact scan. */
static int use_index(const chrys_merger *m)
{
    const chrys_index *ix = m->ix;
    if (m->opts.exact) return 0;
    if (ix->kind == CHRYS_INDEX_HNSW) return 1;
    /* IVF pays only once its lists are many (a scan of nprobe of them is then a small part) */
    return ix->kind == CHRYS_INDEX_IVF && ix->nlist && (m->opts.nprobe || ix->nlist >= MERGE_MIN_NLIST);
}

/* The index's (approximate) top-k for prepared queries; scores exact (double, current rows). */
static int index_search(const chrys_merger *m, size_t nq, const float *q, size_t k, unsigned nt, uint64_t *ids,
                        double *sc)
{
    const chrys_index *ix = m->ix;
    uint32_t ef = m->opts.ef_search ? m->opts.ef_search : MERGE_HNSW_EF;
    uint32_t np = m->opts.nprobe ? m->opts.nprobe : (ix->nlist / 8 > 16 ? ix->nlist / 8 : 16);
    search_params p = {k, 0, 0, nt, ef < k ? (uint32_t)k : ef, np, 0, NULL};
    return index_search_prepared(ix, nq, q, &p, ids, sc);
}

/* The best of a candidate list (computed before the block, in (score, id) order): its first
 * entry that no earlier record of the block changed. *all_dirty: all k were changed (the list then
 * says nothing about the untouched entries). */
static void first_untouched(const uint64_t *cid, const double *csc, size_t k, const unsigned char *dirty,
                            uint64_t *best, double *best_s, int *all_dirty)
{
    *best = CHRYS_NO_ID;
    *best_s = 0.0;
    *all_dirty = k > 0;
    for (size_t c = 0; c < k; c++) {
        uint64_t e = cid[c];
        if (e == CHRYS_NO_ID) {
            *all_dirty = 0;
            return;
        }
        if (dirty[e]) continue;
        *all_dirty = 0;
        if (csc[c] > 0) {
            *best_s = csc[c];
            *best = e;
        }
        return;
    }
}

/* Rescore the entries changed or created earlier in the block against qn and keep the best (ties:
 * smaller id). A float32 score screens each one; only those that could win are scored in double,
 * with the function the searches use. */
static void rescore_dirty(const chrys_merger *m, const float *qn, const uint64_t *dlist, size_t nd, uint64_t *best,
                          double *best_s)
{
    const chrys_kernels *kr = chrys_kernels_active();
    uint32_t dim = m->opts.dim;
    /* a float32 dot product of unit rows, summed in any order, is within (dim + 1) 2^-24 of the
     * score (1e-4 covers 1,600 dimensions; above, the bound itself) */
    double slack = fmax(1e-4, (dim + 2) * ldexp(1.0, -24) * 1.01);
    for (size_t d0 = 0; d0 < nd; d0 += 4) {
        /* four rows' float32 scores at once (independent sums in flight), then in list order */
        size_t c = nd - d0 < 4 ? nd - d0 : 4;
        const float *rows[4];
        float s32[4];
        for (size_t i = 0; i < 4; i++)
            rows[i] = m->ix->vecs + (size_t)idmap_get(&m->ix->map, dlist[d0 + (i < c ? i : 0)]) * dim;
        kr->dot_x4(qn, rows, dim, s32);
        for (size_t i = 0; i < c; i++) {
            uint64_t e = dlist[d0 + i];
            if ((double)s32[i] < *best_s - slack) continue;
            double s = kr->dot_f64(qn, rows[i], dim);
            if (s > *best_s || (s == *best_s && *best != CHRYS_NO_ID && e < *best)) {
                *best_s = s;
                *best = e;
            }
        }
    }
}

/* Best over the live state by one search: exact (every row, linked or not), or the index's
 * candidates (which cannot see rows still waiting to be linked: the caller rescores those). */
static int live_best(chrys_merger *m, const float *qn, int exact, unsigned nt, uint64_t *best, double *best_s)
{
    uint64_t lid[MERGE_K];
    double ls[MERGE_K];
    double t0 = now_s();
    size_t k = exact ? 1 : MERGE_K;
    search_params xp = {1, 0, 0, nt, 0, 0, 1, NULL}; /* exact */
    int rc = exact ? index_search_prepared(m->ix, 1, qn, &xp, lid, ls) : index_search(m, 1, qn, k, nt, lid, ls);
    if (rc) return merger_fail(m, rc, "search failed");
    report(m, t0, m->n_entries, 1, exact ? "flat-recheck" : "index-recheck");
    *best = CHRYS_NO_ID;
    *best_s = 0.0;
    for (size_t c = 0; c < k; c++)
        if (lid[c] != CHRYS_NO_ID && ls[c] > *best_s) { /* (score, id) order: the first is the best */
            *best = lid[c];
            *best_s = ls[c];
            break;
        }
    return CHRYS_OK;
}

/* One record's decision from its candidate list: the first untouched candidate and the entries
 * changed in the block; when every candidate was changed, a search of the live state. */
static int decide(chrys_merger *m, const float *qn, const uint64_t *cid, const double *csc, size_t k, int exact,
                  int can_recheck, const unsigned char *dirty, const uint64_t *dlist, size_t nd, unsigned nt,
                  uint64_t *best, double *best_s)
{
    int all_dirty;
    first_untouched(cid, csc, k, dirty, best, best_s, &all_dirty);
    rescore_dirty(m, qn, dlist, nd, best, best_s);
    /* Every candidate was changed: an untouched entry outside the list scores at most the last
     * candidate's score, so a changed entry above that is the best; otherwise search again. */
    if (all_dirty && can_recheck && !(*best != CHRYS_NO_ID && *best_s > csc[k - 1])) {
        uint64_t lb;
        double ls;
        int rc = live_best(m, qn, exact, nt, &lb, &ls);
        if (rc) return rc;
        if (exact) { /* complete: every row was scanned */
            *best = lb;
            *best_s = ls;
        } else if (lb != CHRYS_NO_ID && (ls > *best_s || (ls == *best_s && lb < *best))) {
            *best = lb; /* (the index cannot see rows still waiting to be linked: rescored above) */
            *best_s = ls;
        }
    }
    return CHRYS_OK;
}

/* Everything a merge checks and reserves before its first change: the records (skip[i] set for
 * those skipped), room for all of them, the build threads, and a store an earlier version
 * planned as IVF re-planned as the merger's graph. */
static int merge_begin(chrys_merger *m, size_t n, const chrys_merge_record *recs, unsigned char *skip, rec_check *chk,
                       unsigned nt)
{
    int rc;
    if ((rc = validate(m, n, recs, skip, chk, nt))) return rc;
    if ((rc = merger_reserve_entries(m, n)) || (rc = merger_reserve_records(m, n)) || (rc = index_reserve(m->ix, n)))
        return merger_fail(m, CHRYS_NOMEM, "out of memory reserving for %zu records", n);
    index_set_build_threads(m->ix, nt);
    if (m->ix->planned && m->ix->kind == CHRYS_INDEX_IVF && m->ix->plan_kind == CHRYS_INDEX_HNSW &&
        (rc = index_replan(m->ix))) /* a store an earlier version planned as IVF */
        return merger_fail(m, rc, "re-planning the entries' index: %s", chrys_index_errmsg(m->ix));
    return CHRYS_OK;
}

/* One merge's scratch, sized for its largest block, and the state of the block being settled. */
typedef struct block_work {
    unsigned nt;                   /* workers */
    float *qblock, *xq;            /* max_b x dim: the block's prepared queries; those confirmed exactly */
    const rec_check *chk;          /* the call's records' checks: each one's norm */
    float *tmp_old, *tmp_new;      /* dim: an entry before and after a merge */
    uint64_t *cid, *xid;           /* max_b x MERGE_K: candidates (block search; exact confirmation) */
    double *csc, *xsc;             /* their scores */
    uint32_t *xpos;                /* max_b: row of each query in xid/xsc (UINT32_MAX: none) */
    unsigned char *conf;           /* max_b: the query's best candidate is near the threshold */
    uint64_t *dlist;               /* max_b: entries changed or created in the block */
    uint32_t *relink;              /* max_b: slots to link again at the block's end */
    unsigned char *dirty;          /* dirty_cap: entry changed or created in the block */
    size_t dirty_cap;
    /* the block */
    int approx;                    /* candidates from the index (else the exact scan) */
    size_t b, nb;                  /* records; records searched (not skipped) */
    size_t e_before, k, nx;        /* entries before it; candidates per query; queries confirmed */
    size_t left;                   /* records of the call from this block on */
    size_t nd;                     /* entries in dlist */
    int can_recheck;
    double floor;                  /* candidates scoring below it are not wanted (see below) */
    merge_screen scr;              /* int8 codes of the entries, for the exact search (merge_screen.c) */
    const chrys_merge_record *recs; /* the call's records (the screen's basis samples them) */
    const unsigned char *skip;
    size_t n, i0;                  /* records of the call; the block's first */
} block_work;

static int work_alloc(block_work *w, size_t max_b, uint32_t dim)
{
    w->qblock = chrys_malloc_aligned(max_b * dim * sizeof(float));
    w->xq = chrys_malloc_aligned(max_b * dim * sizeof(float));
    w->tmp_old = chrys_malloc(dim * sizeof(float));
    w->tmp_new = chrys_malloc(dim * sizeof(float));
    w->cid = chrys_malloc(max_b * MERGE_K * sizeof *w->cid);
    w->csc = chrys_malloc(max_b * MERGE_K * sizeof *w->csc);
    w->xid = chrys_malloc(max_b * MERGE_K * sizeof *w->xid);
    w->xsc = chrys_malloc(max_b * MERGE_K * sizeof *w->xsc);
    w->xpos = chrys_malloc(max_b * sizeof *w->xpos);
    w->conf = chrys_malloc(max_b);
    w->dlist = chrys_malloc(max_b * sizeof *w->dlist);
    w->relink = chrys_malloc(max_b * sizeof *w->relink);
    if (!w->qblock || !w->xq || !w->tmp_old || !w->tmp_new || !w->cid || !w->csc || !w->xid || !w->xsc ||
        !w->xpos || !w->conf || !w->dlist || !w->relink)
        return CHRYS_NOMEM;
    return CHRYS_OK;
}

static void work_free(block_work *w)
{
    chrys_free_aligned(w->qblock);
    chrys_free_aligned(w->xq);
    chrys_free(w->tmp_old);
    chrys_free(w->tmp_new);
    chrys_free(w->cid);
    chrys_free(w->csc);
    chrys_free(w->xid);
    chrys_free(w->xsc);
    chrys_free(w->xpos);
    chrys_free(w->conf);
    chrys_free(w->dirty);
    chrys_free(w->dlist);
    merge_screen_free(&w->scr);
    chrys_free(w->relink);
}

/* Block size. Exact: the settle step costs about B^2/2 rescorings against B*E for the search, so
 * B grows with the number of entries E (measured on 20,000 clustered records at 1024-d: B = E/16
 * spent 0.28 s settling and E/64 0.12 s, the search the same). Index: the search costs the same per record whatever B;
 * B is large enough that one scan of the entries serves all of the block's exact confirmations.
 * B: the caller's batch_size (0: automatic); at most max_b and the records left. */
static size_t block_size(const chrys_merger *m, size_t B, int approx, size_t max_b, size_t left)
{
    size_t b = B;
    if (!b && approx) { /* each block costs one scan of the entries for its confirmations, each
                           record about B/2 rescorings of the block's changed entries: B ~ sqrt(E) */
        b = (size_t)(2.5 * sqrt((double)m->n_entries));
        if (b < 256) b = 256;
    }
    if (!b) { /* E/64: the settling's rescorings stay a small part, and a block still feeds every
                 core with groups of queries (merge_screen.c takes 32 at a time) */
        b = m->n_entries / 64;
        if (b < 64) b = 64;
        if (b > MERGE_MAX_BLOCK) b = MERGE_MAX_BLOCK;
    }
    if (b > max_b) b = max_b;
    if (b > left) b = left;
    return b;
}

/* The block's queries (unit length, as the index's rescoring expects), skipped records left out;
 * returns how many. */
static size_t prepare_queries(uint32_t dim, const chrys_merge_record *recs, const unsigned char *skip,
                              const rec_check *chk, size_t b, float *qblock)
{
    size_t nb = 0;
    for (size_t j = 0; j < b; j++) {
        if (skip[j]) continue;
        vec_scale_to(qblock + nb * dim, recs[j].vec, dim, chk[j].norm);
        nb++;
    }
    return nb;
}

/* The screen's basis, from up to PREFIX_SAMPLE unit rows spread over the call's records from this
 * block on, then over the entries. */
static int draw_basis(chrys_merger *m, block_work *w)
{
    uint32_t dim = m->opts.dim;
    const float *rows[PREFIX_SAMPLE];
    double norms[PREFIX_SAMPLE];
    size_t ns = 0, left = w->n - w->i0, step = left > PREFIX_SAMPLE ? left / PREFIX_SAMPLE : 1;
    for (size_t i = w->i0; i < w->n && ns < PREFIX_SAMPLE; i += step)
        if (!w->skip[i]) rows[ns] = w->recs[i].vec, norms[ns++] = w->chk[i].norm;
    size_t ne = m->ix->n, want = PREFIX_SAMPLE - ns;
    step = want && ne > want ? ne / want : 1;
    for (size_t v = 0; v < ne && ns < PREFIX_SAMPLE; v += step) /* (unit rows) */
        rows[ns] = m->ix->vecs + v * dim, norms[ns++] = 1.0;
    int rc = ns ? merge_screen_basis(&w->scr, rows, norms, ns, dim) : CHRYS_OK;
    return rc == CHRYS_ERROR ? CHRYS_OK : rc; /* (a basis that came out loose: none, the search is the same) */
}

/* The block's search in the state before it: each query's top-k candidates (cid/csc), and, when
 * they come from the index, the near-threshold safeguard. */
static int block_search(chrys_merger *m, block_work *w)
{
    uint32_t dim = m->opts.dim;
    size_t nb = w->nb, k = w->k;
    int approx = w->approx, rc;
    w->nx = 0; /* queries with exact candidates too (xid/xsc, at xpos[q]) */
    if (!nb || !k) return CHRYS_OK;
    double t0 = now_s();
    search_params xp = {k, 0, 0, w->nt, 0, 0, 1, NULL}; /* exact */
    int screen = !approx && merge_screen_usable(m->ix, w->e_before, nb);
    if (screen && merge_screen_wants_basis(&w->scr, dim, (double)w->left * ((double)w->e_before + 0.5 * (double)w->left)) &&
        (rc = draw_basis(m, w)))
        return merger_fail(m, rc, "out of memory");
    if (screen) { /* the entries the previous block changed (dlist) are coded again */
        rc = merge_screen_sync_search(&w->scr, m->ix, w->dlist, w->nd, w->e_before + w->left, nb, w->qblock, k,
                                      w->floor, w->nt, w->cid, w->csc);
    } else {
        w->scr.n = 0; /* codes not kept up to date: coded afresh when next used */
        rc = approx ? index_search(m, nb, w->qblock, k, w->nt, w->cid, w->csc)
                    : index_search_prepared(m->ix, nb, w->qblock, &xp, w->cid, w->csc);
    }
    if (rc) return merger_fail(m, rc, "search failed");
    report(m, t0, w->e_before, nb, screen  ? "flat-int8"
                                   : !approx ? (nb >= FLAT_BLAS_MIN_NQ ? "flat-sgemm" : "flat-simd")
                                   : m->ix->kind == CHRYS_INDEX_HNSW ? "hnsw"
                                                                     : "ivf");
    /* Near-threshold safeguard, in one exact scan for the whole block: a record whose best
     * candidate lies within confirm_margin of the threshold (or that has none) gets exact
     * candidates; so does every record under verify. */
    for (size_t q = 0; approx && q < nb; q++) {
        double s0 = w->cid[q * k] == CHRYS_NO_ID ? 0.0 : w->csc[q * k];
        w->conf[q] = s0 <= 0 || fabs(s0 - m->opts.threshold) < m->opts.confirm_margin;
        w->xpos[q] = UINT32_MAX;
        if (w->conf[q] || m->opts.verify) {
            memcpy(w->xq + w->nx * dim, w->qblock + q * dim, dim * sizeof(float));
            w->xpos[q] = (uint32_t)w->nx++;
        }
    }
    if (w->nx) {
        t0 = now_s();
        if ((rc = index_search_prepared(m->ix, w->nx, w->xq, &xp, w->xid, w->xsc)))
            return merger_fail(m, rc, "search failed");
        report(m, t0, w->e_before, w->nx, "flat-confirm");
    }
    return CHRYS_OK;
}

/* Room in the dirty map for every entry the block can reach. */
static int grow_dirty(chrys_merger *m, block_work *w)
{
    if (w->dirty_cap >= m->n_entries + w->b) return CHRYS_OK;
    size_t nc = chrys_grow_cap(w->dirty_cap, m->n_entries + w->b, 64);
    unsigned char *d = chrys_realloc(w->dirty, nc);
    if (!d) return merger_fail(m, CHRYS_NOMEM, "out of memory");
    memset(d + w->dirty_cap, 0, nc - w->dirty_cap);
    w->dirty = d;
    w->dirty_cap = nc;
    return CHRYS_OK;
}

/* Under verify: the exact decision on the same state, counted as a disagreement when it differs
 * from the one taken (best, best_s). */
static int verify_decision(chrys_merger *m, block_work *w, const float *qn, size_t q, uint64_t best, double best_s)
{
    size_t k = w->k;
    uint64_t xbest = best;
    double xs = best_s;
    int rc;
    if (w->approx && k &&
        (rc = decide(m, qn, w->xid + (size_t)w->xpos[q] * k, w->xsc + (size_t)w->xpos[q] * k, k, 1, w->can_recheck,
                     w->dirty, w->dlist, w->nd, w->nt, &xbest, &xs)))
        return rc;
    int x_merge = xbest != CHRYS_NO_ID && xs >= m->opts.threshold;
    int a_merge = best != CHRYS_NO_ID && best_s >= m->opts.threshold;
    m->verified++;
    if (x_merge != a_merge || (x_merge && xbest != best)) m->disagreements++;
    return CHRYS_OK;
}

/* Settle record r (norm: its embedding's, from validation), the block's q-th searched record, on
 * the state the block's earlier records left: decide, apply, and record the assignment. */
static int settle_record(chrys_merger *m, block_work *w, const chrys_merge_record *r, double norm, size_t q,
                         chrys_merge_result *res)
{
    size_t k = w->k;
    int approx = w->approx, rc;
    const float *qn = w->qblock + q * m->opts.dim;
    uint64_t best;
    double best_s;
    int exact_cands = !approx || !k || w->conf[q];
    const uint64_t *ci = exact_cands && approx && k ? w->xid + (size_t)w->xpos[q] * k : w->cid + q * k;
    const double *cs = exact_cands && approx && k ? w->xsc + (size_t)w->xpos[q] * k : w->csc + q * k;
    if ((rc = decide(m, qn, ci, cs, k, exact_cands, w->can_recheck, w->dirty, w->dlist, w->nd, w->nt, &best,
                     &best_s)))
        return rc;
    if (approx) {
        m->approx_records++;
        if (exact_cands) m->confirmations++;
        else if (best == CHRYS_NO_ID || fabs(best_s - m->opts.threshold) < m->opts.confirm_margin) {
            /* the block's changes brought it near the threshold: confirm on the live state */
            if ((rc = live_best(m, qn, 1, w->nt, &best, &best_s))) return rc;
            m->confirmations++;
        }
    }
    if (m->opts.verify && (rc = verify_decision(m, w, qn, q, best, best_s))) return rc;
    res->score = best == CHRYS_NO_ID ? NAN : best_s;
    if (best != CHRYS_NO_ID && best_s >= m->opts.threshold) {
        if ((rc = apply_merge(m, best, best_s, r, w->tmp_old, w->tmp_new))) return rc;
        m->merged++;
        res->action = CHRYS_MERGE_MERGED;
        res->entry = best;
    } else {
        if ((rc = apply_append(m, r, qn, norm, &res->entry))) return rc;
        m->added++;
        res->action = CHRYS_MERGE_ADDED;
        if (res->entry >= w->dirty_cap) /* cannot happen: reserved above */
            return merger_fail(m, CHRYS_ERROR, "internal: dirty map too small");
    }
    if (!w->dirty[res->entry]) {
        w->dirty[res->entry] = 1;
        w->dlist[w->nd++] = res->entry;
    }
    uint32_t a = (uint32_t)m->n_asn++;
    m->asn_rec[a] = r->id;
    m->asn_entry[a] = res->entry;
    idmap_put(&m->seen, r->id, a); /* reserved: cannot fail */
    return CHRYS_OK;
}

/* Settle the block's records [i0, i0 + b) in order. */
static int settle_block(chrys_merger *m, block_work *w, const chrys_merge_record *recs, const unsigned char *skip,
                        size_t i0, chrys_merge_result *results)
{
    int rc;
    if ((rc = grow_dirty(m, w))) return rc;
    size_t q = 0;
    w->nd = 0;
    w->can_recheck = w->k == MERGE_K && w->e_before > w->k;
    for (size_t j = 0; j < w->b; j++) {
        size_t i = i0 + j;
        chrys_merge_result res = {CHRYS_NO_ID, NAN, CHRYS_MERGE_SKIPPED, 0};
        m->records++;
        if (skip[i]) {
            m->skipped++;
            if (results) results[i] = res;
            continue;
        }
        if ((rc = settle_record(m, w, &recs[i], w->chk[i].norm, q, &res))) return rc;
        if (results) results[i] = res;
        q++;
    }
    for (size_t d = 0; d < w->nd; d++) w->dirty[w->dlist[d]] = 0;
    return CHRYS_OK;
}

/* Before the next block's search, on all cores: the block's new entries join the graph, and
 * entries that moved more than MERGE_RELINK_DRIFT since they were linked are linked again from
 * where they are now (without it, an entry that many merges dragged across its cluster is missed
 * by walks from its new neighbourhood). */
static int link_block(chrys_merger *m, block_work *w)
{
    if (m->ix->kind != CHRYS_INDEX_HNSW) return CHRYS_OK;
    double t0 = now_s();
    size_t np = m->ix->pending, nr = 0, linked = m->ix->n - np;
    for (size_t d = 0; d < w->nd; d++) {
        uint64_t e = w->dlist[d];
        if (!(m->drift[e] > MERGE_RELINK_DRIFT)) continue;
        m->drift[e] = 0;
        uint32_t slot = idmap_get(&m->ix->map, e);
        if (slot < linked) w->relink[nr++] = slot; /* (a new entry is linked where it is now) */
    }
    int rc;
    if ((rc = index_link_pending(m->ix)) || (rc = hnsw_relink(m->ix, w->relink, nr)))
        return merger_fail(m, rc, "out of memory linking entries into the graph");
    m->relinks += nr;
    if (np + nr) report(m, t0, m->n_entries, np + nr, "hnsw-link");
    return CHRYS_OK;
}

int chrys_merger_merge(chrys_merger *m, size_t n, const chrys_merge_record *recs, chrys_merge_result *results)
{
    if (!m || (n && !recs)) return CHRYS_INVALID;
    if (n == 0) return CHRYS_OK;
    unsigned char *skip = chrys_malloc(n);
    rec_check *chk = chrys_malloc(n * sizeof *chk);
    if (!skip || !chk) {
        chrys_free(skip);
        chrys_free(chk);
        return merger_fail(m, CHRYS_NOMEM, "out of memory");
    }
    unsigned nt = m->opts.n_threads ? m->opts.n_threads : chrys_online_cpus();
    int rc = merge_begin(m, n, recs, skip, chk, nt);
    if (rc) {
        chrys_free(skip);
        chrys_free(chk);
        return rc;
    }
    size_t B = m->opts.batch_size;
    size_t max_b = B ? B : MERGE_MAX_BLOCK;
    if (max_b > n) max_b = n;
    block_work w = {0};
    w.nt = nt;
    w.chk = chk;
    w.recs = recs;
    w.skip = skip;
    w.n = n;
    /* Without per-record results, nobody asks for the best score of a record that is appended:
     * the screen then wants only the entries that reach the threshold (decisions are the same:
     * a candidate list that ends before K entries is complete above the threshold, and entries
     * changed in the block are rescored whatever their score). */
    w.floor = results ? -INFINITY : m->opts.threshold;
    if (work_alloc(&w, max_b, m->opts.dim)) {
        rc = merger_fail(m, CHRYS_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i0 = 0; i0 < n; i0 += w.b) {
        w.approx = use_index(m);
        w.b = block_size(m, B, w.approx, max_b, n - i0);
        w.nb = prepare_queries(m->opts.dim, recs + i0, skip + i0, chk + i0, w.b, w.qblock);
        w.e_before = m->n_entries;
        w.left = n - i0;
        w.i0 = i0;
        w.k = MERGE_K < w.e_before ? MERGE_K : w.e_before;
        if ((rc = block_search(m, &w)) || (rc = settle_block(m, &w, recs, skip, i0, results)) ||
            (rc = link_block(m, &w)))
            goto done;
    }
done:
    if (m->ix->pending && index_link_pending(m->ix) && !rc) rc = merger_fail(m, CHRYS_NOMEM, "%s", chrys_index_errmsg(m->ix));
    work_free(&w);
    chrys_free(skip);
    chrys_free(chk);
    return rc;
}

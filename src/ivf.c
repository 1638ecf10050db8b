/*
 * ivf.c: k-means, the IVF index, int8 scalar quantisation (SQ8), index specifications and the
 * automatic planner.
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
 * Specifications: FAISS's index_factory forms plus the Chrysalis roadmap's names in any case
 * (Flat; IVFFlat, whose nlist comes from chrys_index_opts.nlist or, when 0, from the planner's
 * ivf_plan_nlist(n) each time it trains: at auto_threshold vectors and again at 4x growth; HNSW =
 * HNSW32). They are resolved here so that every caller (CLI, C, bindings) reads them alike.
 *
 * k-means: greedy k-means++ seeding (plain k-means++ above 256 centroids; seeded, on a sample of at
 * most 16 points per centroid), then Lloyd
 * iterations (at most 10, as FAISS trains IVF; fewer once no point changes cluster) on a sample of at most 256 points
 * per centroid (as FAISS samples), assignments on
 * all cores; an empty cluster takes half of the largest one (its centroid split in two);
 * spherical (centroids renormalised) for cosine and inner product, Euclidean for L2.
 *
 * Planner (spec "auto"): Flat below auto_threshold vectors; at the threshold the index becomes
 * IVF with nlist = clamp(sqrt(n), 16, 65536) (and at most n/39 lists, FAISS's minimum of 39
 * points per centroid), with SQ8 when the float32 rows alone would exceed the memory budget. It
 * re-plans (retrains with a new nlist) when the index has grown 4x since its last training.
 *
 * Threads: search reads only; training and mutation need exclusive access (the index contract).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#ifdef CHRYS_HAVE_BLAS
#include <cblas.h>
#endif

#include "hnsw.h"
#include "index.h"
#include "sq8.h"
#include "kernels/dist.h"

#define KM_MAX_POINTS_PER_CENTROID 256
#define KM_INIT_POINTS_PER_CENTROID 16
#define KM_ITERS 10 /* FAISS trains IVF quantizers with 10 iterations (IndexIVF cp.niter) */
#define IVF_MIN_POINTS_PER_LIST 39
#define MERGE_PLAN_M 32 /* HNSW links per node when the planner builds a graph for a merger store (16: 4x the
                           disagreements on the 1M stream's first 100k records, bench/MERGE_SCALE.md) */

/* ------------------------------------------------------------------------------------------
 * Specifications
 */
int chrys_index_spec_parse(const char *spec, chrys_index_kind *kind, uint32_t *nlist, int *sq8, int *is_auto,
                           char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    static const char *expected = "expected Flat, SQ8, SQ8,RFlat, IVFFlat, IVF<nlist>,Flat, IVF<nlist>,SQ8, "
                                  "IVF<nlist>,SQ8,RFlat, HNSW, HNSW<M>, HNSW<M>,SQ8, HNSW<M>,SQ8,RFlat or auto";
    *kind = CHRYS_INDEX_FLAT;
    *nlist = 0;
    *sq8 = 0;
    *is_auto = 0;
    if (!spec) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec missing: %s", expected);
    if (!strcasecmp(spec, "auto")) {
        *is_auto = 1;
        return CHRYS_OK;
    }
    /* The Chrysalis roadmap's index types (FAISS_INDEX_TYPE), in any case: Flat; IVFFlat, whose
     * list count comes from chrys_index_opts.nlist or, when that is 0, from the planner when the
     * index trains; HNSW, with M 32. */
    if (!strcasecmp(spec, "Flat")) return CHRYS_OK;
    if (!strcasecmp(spec, "IVFFlat")) {
        *kind = CHRYS_INDEX_IVF;
        return CHRYS_OK;
    }
    if (!strcasecmp(spec, "HNSW")) {
        *kind = CHRYS_INDEX_HNSW;
        *nlist = CHRYS_HNSW_DEFAULT_M;
        return CHRYS_OK;
    }
    if (!strcmp(spec, "SQ8") || !strcmp(spec, "SQ8,RFlat")) {
        *sq8 = spec[3] ? 2 : 1;
        return CHRYS_OK;
    }
    const char *p = spec;
    int ivf = !strncmp(p, "IVF", 3), is_hnsw = !strncmp(p, "HNSW", 4);
    if (ivf || is_hnsw) {
        p += ivf ? 3 : 4;
        char *end;
        if (*p < '0' || *p > '9')
            return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec '%s': a number must follow %s (%s)", spec,
                                    ivf ? "IVF" : "HNSW", expected);
        unsigned long v = strtoul(p, &end, 10);
        const char *rest = end;
        int with_sq8 = 0;
        if (!strcmp(rest, ",SQ8")) with_sq8 = 1;
        else if (!strcmp(rest, ",SQ8,RFlat")) with_sq8 = 2;
        else if (ivf ? strcmp(rest, ",Flat") != 0 : (*rest != 0 && strcmp(rest, ",Flat") != 0))
            return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec '%s': unexpected '%s' (%s)", spec, rest, expected);
        if (ivf && (v < 1 || v > 1u << 20))
            return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec '%s': nlist must be 1..%u", spec, 1u << 20);
        if (is_hnsw) {
            if (v < 2 || v > 128)
                return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec '%s': M must be 2..128", spec);
            *kind = CHRYS_INDEX_HNSW;
            *nlist = (uint32_t)v;
            *sq8 = with_sq8;
            return CHRYS_OK;
        }
        *kind = CHRYS_INDEX_IVF;
        *nlist = (uint32_t)v;
        *sq8 = with_sq8;
        return CHRYS_OK;
    }
    return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec '%s' not understood: %s", spec, expected);
}

void ivf_spec_string(const chrys_index *ix, char *buf, size_t cap)
{
    if (ix->kind == CHRYS_INDEX_HNSW) {
        uint32_t M, efc;
        int ml;
        hnsw_params(ix, &M, &efc, &ml);
        snprintf(buf, cap, "HNSW%u%s", M, !ix->sq8 ? "" : ix->refine ? ",SQ8,RFlat" : ",SQ8");
    } else if (ix->kind == CHRYS_INDEX_IVF) {
        uint32_t nl = ix->nlist ? ix->nlist : ix->want_nlist;
        const char *codes = !ix->sq8 ? "Flat" : ix->refine ? "SQ8,RFlat" : "SQ8";
        if (nl) snprintf(buf, cap, "IVF%u,%s", nl, codes);
        else snprintf(buf, cap, "IVF%s%s", ix->sq8 ? "," : "", codes); /* untrained, nlist from the planner */
    }
    else snprintf(buf, cap, "%s", !ix->sq8 ? "Flat" : ix->refine ? "SQ8,RFlat" : "SQ8");
}

uint32_t ivf_plan_nlist(size_t n)
{
    double s = sqrt((double)n);
    uint32_t k = (uint32_t)(s < 16 ? 16 : s > 65536 ? 65536 : s);
    uint32_t cap = (uint32_t)(n / IVF_MIN_POINTS_PER_LIST);
    if (k > cap) k = cap;
    return k < 1 ? 1 : k;
}

/* ------------------------------------------------------------------------------------------
 * Small helpers
 */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static double rng_unit(uint64_t *s) { return (rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }

static void normalize_row(float *v, size_t dim)
{
    double nr = vec_norm(v, dim);
    if (nr > 0) vec_scale_to(v, v, dim, nr);
}

/* Nearest centroid of each row (spherical: largest dot; else smallest L2), in blocks. */
typedef struct assign_ctx {
    const float *x, *c;
    const float *c_sq; /* |c|^2 (L2) */
    size_t n, dim, k;
    int spherical;
    uint32_t *out;
    float *dist; /* optional: squared distance to the assigned centroid */
    const chrys_kernels *kr;
    float *tiles; /* one ASSIGN_RB x k score tile per worker */
} assign_ctx;

enum { ASSIGN_RB = 64 }; /* rows per score tile */

static void assign_range(void *arg, unsigned w, size_t begin, size_t end)
{
    assign_ctx *a = arg;
    enum { RB = ASSIGN_RB };
    float *tile = a->tiles + (size_t)w * RB * a->k; /* allocated by assign_all: nothing fails here */
    for (size_t r0 = begin; r0 < end; r0 += RB) {
        size_t nr = end - r0 < RB ? end - r0 : RB;
        const float *xr = a->x + r0 * a->dim;
        if (a->kr->dot_block) a->kr->dot_block(xr, nr, a->c, a->k, a->dim, tile, a->k);
        else
            for (size_t i = 0; i < nr; i++) a->kr->dot_rows(xr + i * a->dim, a->c, a->k, a->dim, tile + i * a->k);
        for (size_t i = 0; i < nr; i++) {
            const float *s = tile + i * a->k;
            size_t best = 0;
            float bs = -INFINITY;
            for (size_t j = 0; j < a->k; j++) {
                float v = a->spherical ? s[j] : 2.0f * s[j] - a->c_sq[j];
                if (v > bs) bs = v, best = j;
            }
            a->out[r0 + i] = (uint32_t)best;
            if (a->dist) {
                const float *xi = xr + i * a->dim;
                a->dist[r0 + i] = a->kr->l2sq(xi, a->c + best * a->dim, a->dim);
            }
        }
    }
}

#ifdef CHRYS_HAVE_BLAS
/* argmax of precomputed scores (sgemm path) */
typedef struct argmax_ctx {
    const float *scores, *c_sq;
    size_t k, r0;
    int spherical;
    uint32_t *out;
} argmax_ctx;

static void argmax_range(void *arg, unsigned w, size_t begin, size_t end)
{
    (void)w;
    argmax_ctx *a = arg;
    for (size_t i = begin; i < end; i++) {
        const float *s = a->scores + i * a->k;
        size_t best = 0;
        float bs = -INFINITY;
        for (size_t j = 0; j < a->k; j++) {
            float v = a->spherical ? s[j] : 2.0f * s[j] - a->c_sq[j];
            if (v > bs) bs = v, best = j;
        }
        a->out[a->r0 + i] = (uint32_t)best;
    }
}
#endif

/* Nearest centroid of every row. All memory is taken first, so the only failure is
 * CHRYS_NOMEM, before any work (no slower fallback that could give other assignments). */
static int assign_all(const float *x, size_t n, size_t dim, const float *c, size_t k, int spherical,
                      unsigned nt, uint32_t *out, float *dist, float *c_sq)
{
    const chrys_kernels *kr = chrys_kernels_active();
    if (!spherical)
        for (size_t j = 0; j < k; j++) c_sq[j] = kr->dot(c + j * dim, c + j * dim, dim);
#ifdef CHRYS_HAVE_BLAS
    /* Large problems: BLAS sgemm on blocks of rows, as FAISS trains (measured on 200k x 1024 with
     * 1789 centroids: about 2x our block kernel there, whose centroid matrix does not fit L2). */
    if (!dist && k >= 256 && n >= 4096) {
        const size_t RB = 4096; /* fewer sgemm calls: each one wakes and syncs OpenBLAS's threads */
        float *scores = chrys_malloc(RB * k * sizeof(float));
        if (!scores) return CHRYS_NOMEM;
        for (size_t r0 = 0; r0 < n; r0 += RB) {
            size_t nr = n - r0 < RB ? n - r0 : RB;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)k, (int)dim, 1.0f, x + r0 * dim,
                        (int)dim, c, (int)dim, 0.0f, scores, (int)k);
            argmax_ctx am = {scores, c_sq, k, r0, spherical, out};
            chrys_parallel_for(nt, nr, argmax_range, &am);
        }
        chrys_free(scores);
        return CHRYS_OK;
    }
#endif
    unsigned nw = nt;
    if (n * k * dim < (1u << 20)) nw = 1;
    if (nw > n) nw = (unsigned)(n ? n : 1);
    if (nw > 64) nw = 64; /* chrys_parallel_for's most workers */
    size_t tile_bytes;
    if (chrys_mul_size((size_t)nw * ASSIGN_RB, k * sizeof(float), &tile_bytes)) return CHRYS_NOMEM;
    float *tiles = chrys_malloc(tile_bytes);
    if (!tiles) return CHRYS_NOMEM;
    assign_ctx a = {x, c, c_sq, n, dim, k, spherical, out, dist, kr, tiles};
    chrys_parallel_for(nw, n, assign_range, &a);
    chrys_free(tiles);
    return CHRYS_OK;
}

/* ------------------------------------------------------------------------------------------
 * k-means
 */
/* k-means++ seeding: out[i] = min(prev[i], |x_i - c|^2) (prev NULL: the distance alone). Each
 * row on its own, so any split over workers gives the same values. */
typedef struct seed_ctx {
    const float *x, *c;
    size_t dim;
    const double *prev;
    double *out;
    const chrys_kernels *kr;
} seed_ctx;

static void seed_range(void *arg, unsigned w, size_t begin, size_t end)
{
    (void)w;
    const seed_ctx *a = arg;
    for (size_t i = begin; i < end; i++) {
        double dd = a->kr->l2sq(a->x + i * a->dim, a->c, a->dim);
        a->out[i] = a->prev && a->prev[i] < dd ? a->prev[i] : dd;
    }
}

/* a thread start costs about as much as 100k multiply-adds: fewer workers for small steps */
static unsigned seed_workers(unsigned nt, size_t n, size_t dim) { return n * dim < (1u << 18) ? 1 : nt; }

/* Lloyd update: each worker sums a range of dimensions over every row in row order, so the
 * centroids are bit-identical at any thread count. */
typedef struct update_ctx {
    const float *x;
    size_t n, dim, k;
    const uint32_t *asg, *cnt;
    double *acc;
    float *cent;
} update_ctx;

static void update_range(void *arg, unsigned w, size_t d0, size_t d1)
{
    (void)w;
    const update_ctx *u = arg;
    size_t dim = u->dim, nd = d1 - d0;
    for (size_t c = 0; c < u->k; c++) memset(u->acc + c * dim + d0, 0, nd * sizeof *u->acc);
    for (size_t i = 0; i < u->n; i++) {
        double *a = u->acc + (size_t)u->asg[i] * dim;
        const float *xi = u->x + i * dim;
        for (size_t d = d0; d < d1; d++) a[d] += xi[d];
    }
    for (size_t c = 0; c < u->k; c++)
        if (u->cnt[c])
            for (size_t d = d0; d < d1; d++) u->cent[c * dim + d] = (float)(u->acc[c * dim + d] / u->cnt[c]);
}

static unsigned update_workers(unsigned nt, size_t n, size_t dim)
{
    if (n * dim < (1u << 18) || dim < 64) return 1;
    return nt > dim / 32 ? (unsigned)(dim / 32) : nt;
}

int kmeans_train(const float *x_all, size_t n_all, size_t dim, uint32_t k, int spherical, uint64_t seed, int iters,
                 unsigned nt, float *cent, double *objective)
{
    if (k < 1 || n_all < k) return CHRYS_INVALID;
    uint64_t rs = seed ^ 0x5DEECE66DULL;
    int rc = CHRYS_OK;
    /* Training sample (seeded): at most 256 points per centroid. */
    size_t n = n_all, max_pts = (size_t)k * KM_MAX_POINTS_PER_CENTROID;
    float *x = (float *)x_all, *sample = NULL;
    size_t *perm = NULL;
    if (n_all > max_pts) {
        perm = chrys_malloc(n_all * sizeof *perm);
        sample = chrys_malloc_aligned(max_pts * dim * sizeof(float));
        if (!perm || !sample) {
            rc = CHRYS_NOMEM;
            goto done;
        }
        for (size_t i = 0; i < n_all; i++) perm[i] = i;
        for (size_t i = 0; i < max_pts; i++) { /* partial Fisher-Yates */
            size_t j = i + (size_t)(rng_next(&rs) % (n_all - i));
            size_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
            memcpy(sample + i * dim, x_all + perm[i] * dim, dim * sizeof(float));
        }
        x = sample;
        n = max_pts;
    }
    const chrys_kernels *kr = chrys_kernels_active();
    /* seeding on the first min(n, 16k) sample points (a random subset already when sampled) */
    size_t ni = n < (size_t)k * KM_INIT_POINTS_PER_CENTROID ? n : (size_t)k * KM_INIT_POINTS_PER_CENTROID;
    double *d2 = chrys_malloc(ni * sizeof *d2);
    uint32_t *asg = chrys_malloc(n * sizeof *asg);
    uint32_t *cnt = chrys_malloc(k * sizeof *cnt);
    double *acc = chrys_malloc((size_t)k * dim * sizeof *acc);
    float *c_sq = chrys_malloc(k * sizeof *c_sq), *dist = chrys_malloc(n * sizeof *dist);
    if (!d2 || !asg || !cnt || !acc || !c_sq || !dist) {
        rc = CHRYS_NOMEM;
        goto free_all;
    }
    /* Greedy k-means++ (as scikit-learn): at each step draw 2 + ln(k) candidates by D^2 and keep
     * the one that lowers the potential most. Plain k-means++ leaves a cluster uncovered too
     * often when clusters are many and tight (measured: 3 seeds of 6 on 20 separated clusters). */
    /* Greedy seeding costs trials x ni x k distances; past 256 centroids plain k-means++ (one
     * trial) keeps training time below FAISS's, and with many lists an uncovered cluster costs
     * little (Lloyd and the empty-cluster repair move centroids there). */
    size_t trials = k <= 256 ? 2 + (size_t)log((double)k) : 1;
    double *cand_d2 = chrys_malloc(ni * sizeof *cand_d2), *best_d2 = chrys_malloc(ni * sizeof *best_d2);
    if (!cand_d2 || !best_d2) {
        chrys_free(cand_d2);
        chrys_free(best_d2);
        rc = CHRYS_NOMEM;
        goto free_all;
    }
    size_t first = (size_t)(rng_next(&rs) % ni);
    memcpy(cent, x + first * dim, dim * sizeof(float));
    seed_ctx sc = {x, cent, dim, NULL, d2, kr};
    chrys_parallel_for(seed_workers(nt, ni, dim), ni, seed_range, &sc);
    for (uint32_t c = 1; c < k; c++) {
        double tot = 0;
        for (size_t i = 0; i < ni; i++) tot += d2[i];
        size_t best_pick = 0;
        double best_pot = INFINITY;
        for (size_t t = 0; t < trials; t++) {
            size_t pick = (size_t)(rng_next(&rs) % ni);
            if (tot > 0) {
                double r = rng_unit(&rs) * tot, run = 0;
                for (size_t i = 0; i < ni; i++) {
                    run += d2[i];
                    if (run >= r) {
                        pick = i;
                        break;
                    }
                }
            }
            seed_ctx cc = {x, x + pick * dim, dim, d2, cand_d2, kr};
            chrys_parallel_for(seed_workers(nt, ni, dim), ni, seed_range, &cc);
            double pot = 0; /* summed in row order: the same potential at any thread count */
            for (size_t i = 0; i < ni; i++) pot += cand_d2[i];
            if (pot < best_pot) {
                best_pot = pot;
                best_pick = pick;
                double *tmp = best_d2;
                best_d2 = cand_d2;
                cand_d2 = tmp;
            }
        }
        memcpy(cent + (size_t)c * dim, x + best_pick * dim, dim * sizeof(float));
        memcpy(d2, best_d2, ni * sizeof *d2);
    }
    chrys_free(cand_d2);
    chrys_free(best_d2);
    if (spherical)
        for (uint32_t c = 0; c < k; c++) normalize_row(cent + (size_t)c * dim, dim);
    /* Lloyd iterations. */
    uint32_t *prev = chrys_malloc(n * sizeof *prev);
    if (!prev) {
        rc = CHRYS_NOMEM;
        goto free_all;
    }
    for (int it = 0; it < iters; it++) {
        if ((rc = assign_all(x, n, dim, cent, k, spherical, nt, asg, NULL, c_sq))) {
            chrys_free(prev);
            goto free_all;
        }
        /* converged: no point changed cluster, so another update would give the same centroids */
        if (it > 0 && memcmp(prev, asg, n * sizeof *asg) == 0) break;
        memcpy(prev, asg, n * sizeof *asg);
        memset(cnt, 0, k * sizeof *cnt);
        for (size_t i = 0; i < n; i++) cnt[asg[i]]++;
        update_ctx uc = {x, n, dim, k, asg, cnt, acc, cent};
        chrys_parallel_for(update_workers(nt, n, dim), dim, update_range, &uc);
        /* Empty clusters take half of the largest one: its centroid, nudged apart. */
        for (uint32_t c = 0; c < k; c++) {
            if (cnt[c]) continue;
            uint32_t big = 0;
            for (uint32_t j = 1; j < k; j++)
                if (cnt[j] > cnt[big]) big = j;
            float *cb = cent + (size_t)big * dim, *ce = cent + (size_t)c * dim;
            for (size_t d = 0; d < dim; d++) {
                float e = (float)((rng_unit(&rs) - 0.5) * 2e-3) * (fabsf(cb[d]) + 1e-6f);
                ce[d] = cb[d] + e;
                cb[d] = cb[d] - e;
            }
            cnt[c] = cnt[big] / 2;
            cnt[big] -= cnt[c];
        }
        if (spherical)
            for (uint32_t c = 0; c < k; c++) normalize_row(cent + (size_t)c * dim, dim);
    }
    chrys_free(prev);
    if (objective) {
        if ((rc = assign_all(x, n, dim, cent, k, spherical, nt, asg, dist, c_sq))) goto free_all;
        double obj = 0;
        for (size_t i = 0; i < n; i++) obj += dist[i];
        *objective = obj;
    }
    for (size_t i = 0; i < (size_t)k * dim; i++)
        if (!isfinite(cent[i])) rc = CHRYS_ERROR; /* never expected: inputs are finite */
free_all:
    chrys_free(d2);
    chrys_free(asg);
    chrys_free(cnt);
    chrys_free(acc);
    chrys_free(c_sq);
    chrys_free(dist);
done:
    chrys_free(perm);
    chrys_free_aligned(sample);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * Lists and codes
 */
/* The lists and centroids only (the SQ8 ranges and codes stay). */
static void ivf_free_lists(chrys_index *ix)
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

void ivf_free(chrys_index *ix)
{
    ivf_free_lists(ix);
    chrys_free(ix->sq_min);
    chrys_free(ix->sq_step);
    chrys_free_aligned(ix->codes);
    chrys_free(ix->sq_csq);
    ix->sq_csq = NULL;
    ix->sq_min = ix->sq_step = NULL;
    ix->codes = NULL;
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
    if (ix->sq8) { /* (HNSW too: its codes live here) */
        uint8_t *c = chrys_realloc_aligned(ix->codes, ix->n * (size_t)ix->dim, cap * (size_t)ix->dim);
        if (!c) return CHRYS_NOMEM;
        ix->codes = c;
        if (ix->metric == CHRYS_METRIC_L2) {
            float *q = chrys_realloc(ix->sq_csq, cap * sizeof *q);
            if (!q) return CHRYS_NOMEM;
            ix->sq_csq = q;
        }
    }
    return CHRYS_OK;
}

/* SQ8 ranges from the float32 rows (ix->vecs), then every row encoded; on failure nothing has
 * changed. */
static int train_sq8(chrys_index *ix)
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

/* Rows [s0, s0 + m) decoded from the codes into out (m x dim), made unit under cosine as the
 * stored rows were (training and assignment of a codes-only index). */
static void decode_rows(const chrys_index *ix, size_t s0, size_t m, float *out)
{
    for (size_t i = 0; i < m; i++) {
        float *o = out + i * ix->dim;
        sq8_decode(ix, s0 + i, o);
        if (ix->metric == CHRYS_METRIC_COSINE) normalize_row(o, ix->dim);
    }
}

/* Room in list l for `more` further slots (capacity doubling from 16); CHRYS_NOMEM leaves the
 * list as it was. */
static int list_reserve(chrys_index *ix, uint32_t l, uint64_t more)
{
    uint64_t want = ix->list_n[l] + more;
    if (want <= ix->list_cap[l]) return CHRYS_OK;
    uint64_t nc = ix->list_cap[l] ? ix->list_cap[l] : 16;
    while (nc < want) nc *= 2;
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
    if (ix->vecs) return assign_all(ix->vecs, ix->n, ix->dim, cent, nlist, spherical, train_threads(ix), asg, NULL, c_sq);
    const size_t B = 4096;
    float *blk = chrys_malloc_aligned((ix->n < B ? ix->n : B) * (size_t)ix->dim * sizeof(float) + 64);
    if (!blk) return CHRYS_NOMEM;
    int rc = CHRYS_OK;
    for (size_t s0 = 0; s0 < ix->n && !rc; s0 += B) {
        size_t m = ix->n - s0 < B ? ix->n - s0 : B;
        decode_rows(ix, s0, m, blk);
        rc = assign_all(blk, m, ix->dim, cent, nlist, spherical, train_threads(ix), asg + s0, NULL, c_sq);
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
int ivf_train(chrys_index *ix, uint32_t nlist)
{
    if (nlist < 1 || ix->n < nlist)
        return index_fail(ix, CHRYS_INVALID, "IVF%u needs at least %u vectors to train, the index has %zu", nlist, nlist, ix->n);
    int spherical = ix->metric != CHRYS_METRIC_L2, rc = CHRYS_NOMEM;
    size_t cap = ix->cap ? ix->cap : 1, n = ix->n;
    float *cent = chrys_malloc_aligned((size_t)nlist * ix->dim * sizeof(float));
    uint32_t **lists = chrys_calloc(nlist, sizeof *lists);
    uint32_t *list_n = chrys_calloc(nlist, sizeof *list_n), *list_cap = chrys_calloc(nlist, sizeof *list_cap);
    uint32_t *list_of = chrys_malloc(cap * sizeof *list_of), *pos = chrys_malloc(cap * sizeof *pos);
    uint32_t *asg = chrys_malloc((n ? n : 1) * sizeof *asg);
    float *c_sq = chrys_malloc(nlist * sizeof *c_sq);
    float *dec = NULL;
    /* SQ8 with float32 rows: new ranges, and the codes (and |code|^2 for L2) where none exist yet */
    int sq8 = ix->sq8 && ix->vecs;
    float *smin = sq8 ? chrys_malloc(ix->dim * sizeof(float)) : NULL;
    float *sstep = sq8 ? chrys_malloc(ix->dim * sizeof(float)) : NULL;
    uint8_t *codes = sq8 && !ix->codes ? chrys_malloc_aligned(cap * (size_t)ix->dim) : NULL;
    float *csq = sq8 && ix->metric == CHRYS_METRIC_L2 && !ix->sq_csq ? chrys_malloc(cap * sizeof *csq) : NULL;
    if (!cent || !lists || !list_n || !list_cap || !list_of || !pos || !asg || !c_sq ||
        (sq8 && (!smin || !sstep || (!ix->codes && !codes) || (ix->metric == CHRYS_METRIC_L2 && !ix->sq_csq && !csq))))
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
        for (size_t i = 0; i < train_n; i++) decode_rows(ix, (size_t)((double)i * n / train_n), 1, dec + i * ix->dim);
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
    if (sq8) {
        chrys_free(ix->sq_min);
        chrys_free(ix->sq_step);
        ix->sq_min = smin;
        ix->sq_step = sstep;
        if (codes) ix->codes = codes;
        if (csq) ix->sq_csq = csq;
        sq8_train(ix, ix->vecs, n); /* ranges into the arrays just installed: cannot fail */
        for (size_t i = 0; i < n; i++) sq8_encode(ix, i, ix->vecs + i * ix->dim);
    }
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
    chrys_free(smin);
    chrys_free(sstep);
    chrys_free_aligned(codes);
    chrys_free(csq);
    chrys_free_aligned(dec);
    if (rc == CHRYS_INVALID) return index_fail(ix, rc, "retrain: the index keeps neither float32 rows nor codes");
    return index_fail(ix, rc, rc == CHRYS_NOMEM ? "out of memory training IVF%u" : "k-means for IVF%u failed", nlist);
}

int chrys_index_retrain(chrys_index *ix)
{
    if (!ix) return CHRYS_INVALID;
    if (index_check_writable(ix)) return CHRYS_INVALID;
    if (ix->kind != CHRYS_INDEX_IVF) return index_fail(ix, CHRYS_INVALID, "retrain: the index is not IVF");
    /* the planner's choice (auto, or IVFFlat without nlist) is made again for the current size */
    uint32_t nlist = !ix->want_nlist ? ivf_plan_nlist(ix->n) : ix->nlist ? ix->nlist : ix->want_nlist;
    return ivf_train(ix, nlist);
}

/* The planner for merger stores (plan_kind HNSW): an HNSW graph over the rows, SQ8 codes for the
 * walk, float32 rows kept (the merger rescores, confirms and updates entries with them). Replaces
 * a Flat or IVF index in place; on failure (memory) the index is left exact (Flat). */
static int plan_hnsw(chrys_index *ix)
{
    size_t cap = ix->cap, dim = ix->dim;
    if (!ix->vecs) return index_fail(ix, CHRYS_INVALID, "planning HNSW: the index keeps no float32 rows");
    if (hnsw_create(ix, MERGE_PLAN_M, ix->plan_efc)) return index_fail(ix, CHRYS_NOMEM, "out of memory planning HNSW");
    uint8_t *codes = NULL;
    float *csq = NULL;
    if (hnsw_reserve(ix, cap) || !(codes = chrys_malloc_aligned(cap * dim)) ||
        (ix->metric == CHRYS_METRIC_L2 && !(csq = chrys_malloc(cap * sizeof *csq)))) {
        chrys_free_aligned(codes);
        hnsw_free(ix);
        return index_fail(ix, CHRYS_NOMEM, "out of memory planning HNSW");
    }
    /* The graph gets its own codes and ranges; the old index's are kept until it is built. */
    chrys_index_kind kind = ix->kind;
    int sq8 = ix->sq8, refine = ix->refine;
    uint8_t *old_codes = ix->codes;
    float *old_csq = ix->sq_csq, *old_min = ix->sq_min, *old_step = ix->sq_step;
    ix->kind = CHRYS_INDEX_HNSW;
    ix->sq8 = 1;
    ix->refine = 1;
    ix->codes = codes;
    ix->sq_csq = csq;
    ix->sq_min = ix->sq_step = NULL;
    ix->pending = 0;
    int rc = hnsw_after_add(ix, 0, ix->vecs); /* fails only before it links anything */
    if (rc) {
        hnsw_free(ix);
        chrys_free_aligned(codes);
        chrys_free(csq);
        ix->kind = kind;
        ix->sq8 = sq8;
        ix->refine = refine;
        ix->codes = old_codes;
        ix->sq_csq = old_csq;
        ix->sq_min = old_min;
        ix->sq_step = old_step;
        return index_fail(ix, rc, "out of memory building the planned HNSW graph");
    }
    ivf_free_lists(ix); /* IVF lists (if any) and their codes: from here the rows alone are the index */
    chrys_free_aligned(old_codes);
    chrys_free(old_csq);
    chrys_free(old_min);
    chrys_free(old_step);
    snprintf(ix->plan_reason, sizeof ix->plan_reason,
             "%zu vectors >= threshold %llu: HNSW%u,SQ8,RFlat (entries move and grow one at a time: "
             "a graph, no retraining; float32 kept for exact merging)",
             ix->n, (unsigned long long)ix->auto_threshold, MERGE_PLAN_M);
    return CHRYS_OK;
}

/* The planner: choose and build the index for the current size. */
static int plan(chrys_index *ix)
{
    if (ix->plan_kind == CHRYS_INDEX_HNSW) return plan_hnsw(ix);
    size_t n = ix->n;
    uint32_t nlist = ivf_plan_nlist(n);
    uint64_t float_bytes = (uint64_t)n * ix->dim * 4;
    /* SQ8 codes only when the rows exceed the budget (and for good once the rows are gone) */
    int sq8 = (ix->memory_budget && float_bytes > ix->memory_budget) || !ix->vecs;
    char spec[32];
    int old_sq8 = ix->sq8;
    ix->sq8 = sq8;
    ix->refine = 0;
    int rc = ivf_train(ix, nlist);
    if (rc) {
        ix->sq8 = old_sq8; /* ivf_train changed nothing */
        return rc;
    }
    ivf_spec_string(ix, spec, sizeof spec);
    snprintf(ix->plan_reason, sizeof ix->plan_reason,
             "%zu vectors >= threshold %llu: %s (nlist ~ sqrt(n), >= %d points per list)%s", n,
             (unsigned long long)ix->auto_threshold, spec, IVF_MIN_POINTS_PER_LIST,
             sq8 ? "; SQ8 codes: float32 rows exceed the memory budget" : "");
    return CHRYS_OK;
}

int index_replan(chrys_index *ix) { return plan(ix); }

int ivf_after_add(chrys_index *ix, size_t first, const float *rows)
{
    size_t dim = ix->dim;
    if (ix->planned && ix->kind == CHRYS_INDEX_FLAT) {
        if (ix->n >= ix->auto_threshold && ix->n >= IVF_MIN_POINTS_PER_LIST) return plan(ix);
        return CHRYS_OK; /* exact Flat below the threshold: nothing to assign */
    }
    if (ix->kind == CHRYS_INDEX_IVF && !ix->nlist) {
        /* untrained (its rows are kept, index_has_floats): searches are exact until it trains, at
         * 8 x nlist vectors, or at auto_threshold with the planner's nlist (IVFFlat without nlist) */
        uint32_t want = ix->want_nlist;
        if (!want && ix->n >= ix->auto_threshold && ix->n >= IVF_MIN_POINTS_PER_LIST)
            return ivf_train(ix, ivf_plan_nlist(ix->n));
        if (want && ix->n >= (size_t)want * 8) return ivf_train(ix, want);
        return CHRYS_OK;
    }
    if (ix->kind == CHRYS_INDEX_FLAT && ix->sq8 && !ix->sq_min) { /* Flat SQ8,RFlat: ranges from the first batch */
        int rc = train_sq8(ix);
        if (rc) return index_fail(ix, rc, "out of memory training SQ8");
        return CHRYS_OK;
    }
    /* Codes first: they cannot fail, and a re-plan of a codes-only index reads them (after a
     * failed add these slots are past n again and never read). */
    if (ix->sq8)
        for (size_t s = first; s < ix->n; s++) sq8_encode(ix, s, rows + (s - first) * dim);
    /* The planner's nlist (auto, or IVFFlat without nlist) is chosen again once the index has grown
     * 4x since its training (a codes-only index trains on its decoded codes); the training lists
     * every row, the new ones too. */
    if (ix->kind == CHRYS_INDEX_IVF && ix->nlist && !ix->want_nlist && ix->n >= 4 * ix->trained_on)
        return ix->planned ? plan(ix) : ivf_train(ix, ivf_plan_nlist(ix->n));
    if (ix->nlist) { /* room in every list first, then the pushes cannot fail */
        size_t m = ix->n - first;
        uint32_t *near = chrys_malloc((m ? m : 1) * sizeof *near), *need = chrys_calloc(ix->nlist, sizeof *need);
        int rc = near && need ? CHRYS_OK : CHRYS_NOMEM;
        for (size_t i = 0; i < m && !rc; i++) need[near[i] = nearest_list(ix, rows + i * dim)]++;
        for (uint32_t l = 0; l < ix->nlist && !rc; l++) rc = list_reserve(ix, l, need[l]);
        for (size_t i = 0; i < m && !rc; i++) list_push(ix, near[i], (uint32_t)(first + i));
        chrys_free(near);
        chrys_free(need);
        if (rc) return index_fail(ix, rc, "out of memory adding to IVF lists");
    }
    return CHRYS_OK;
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
    if (ix->sq8 && ix->codes && slot != last) {
        memcpy(ix->codes + (size_t)slot * ix->dim, ix->codes + (size_t)last * ix->dim, ix->dim);
        if (ix->sq_csq) ix->sq_csq[slot] = ix->sq_csq[last];
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
    chrys_parallel_for(nq >= nt * 2 ? nt : 1, nq, ivf_query_range, &c);
    return c.rc;
}

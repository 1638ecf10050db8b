/*
 * kmeans.c: k-means for the IVF lists.
 *
 * k-means: greedy k-means++ seeding up to 256 centroids (on a sample of at most 16 points per
 * centroid), k distinct random sample points above (as FAISS seeds), then Lloyd
 * iterations (at most 10, as FAISS trains IVF; fewer once no point changes cluster) on a sample of at most 256 points
 * per centroid (as FAISS samples), assignments on
 * all cores; an empty cluster takes half of the largest one (its centroid split in two);
 * spherical (centroids renormalised) for cosine and inner product, Euclidean for L2.
 */
#include <math.h>
#include <stdlib.h>

#include "dynlib.h" /* OpenBLAS's sgemm, loaded at first use */

#include "kmeans.h"
#include "kernels/dist.h"

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
    float *tile = a->tiles + (size_t)w * RB * a->k; /* allocated by kmeans_assign: nothing fails here */
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
int kmeans_assign(const float *x, size_t n, size_t dim, const float *c, size_t k, int spherical,
                  unsigned nt, uint32_t *out, float *dist, float *c_sq)
{
    const chrys_kernels *kr = chrys_kernels_active();
    if (!spherical)
        for (size_t j = 0; j < k; j++) c_sq[j] = kr->dot(c + j * dim, c + j * dim, dim);
#ifdef CHRYS_HAVE_BLAS
    /* Large problems: BLAS sgemm on blocks of rows, as FAISS trains (measured on 200k x 1024 with
     * 1789 centroids: about 2x our block kernel there, whose centroid matrix does not fit L2),
     * when BLAS has a fast kernel here (chrys_blas_fast) or we have no block kernel. */
    if (!dist && k >= 256 && n >= 4096 && (chrys_blas_fast() || !kr->dot_block) && chrys_blas()) {
        const size_t RB = 4096; /* fewer sgemm calls: each one wakes and syncs OpenBLAS's threads */
        float *scores = chrys_malloc(RB * k * sizeof(float));
        if (!scores) return CHRYS_NOMEM;
        for (size_t r0 = 0; r0 < n; r0 += RB) {
            size_t nr = n - r0 < RB ? n - r0 : RB;
            chrys_blas()->sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)k, (int)dim, 1.0f, x + r0 * dim,
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

/* The training sample (seeded): at most max_pts rows of x_all, drawn by a partial Fisher-Yates
 * shuffle, into *sample (aligned; NULL when x_all is small enough to train on as it is). */
static int km_sample(const float *x_all, size_t n_all, size_t dim, size_t max_pts, uint64_t *rs, float **sample)
{
    *sample = NULL;
    if (n_all <= max_pts) return CHRYS_OK;
    size_t *perm = chrys_malloc(n_all * sizeof *perm);
    float *smp = chrys_malloc_aligned(max_pts * dim * sizeof(float));
    if (!perm || !smp) {
        chrys_free(perm);
        chrys_free_aligned(smp);
        return CHRYS_NOMEM;
    }
    for (size_t i = 0; i < n_all; i++) perm[i] = i;
    for (size_t i = 0; i < max_pts; i++) { /* partial Fisher-Yates */
        size_t j = i + (size_t)(rng_next(rs) % (n_all - i));
        size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        memcpy(smp + i * dim, x_all + perm[i] * dim, dim * sizeof(float));
    }
    chrys_free(perm);
    *sample = smp;
    return CHRYS_OK;
}

/* Greedy k-means++ (as scikit-learn) on the first ni rows of x: at each step draw `trials`
 * candidates by D^2 and keep the one that lowers the potential most. d2: ni doubles of scratch. */
static int km_seed(const float *x, size_t ni, size_t dim, uint32_t k, size_t trials, unsigned nt, uint64_t *rs,
                   double *d2, float *cent)
{
    const chrys_kernels *kr = chrys_kernels_active();
    double *cand_d2 = chrys_malloc(ni * sizeof *cand_d2), *best_d2 = chrys_malloc(ni * sizeof *best_d2);
    if (!cand_d2 || !best_d2) {
        chrys_free(cand_d2);
        chrys_free(best_d2);
        return CHRYS_NOMEM;
    }
    size_t first = (size_t)(rng_next(rs) % ni);
    memcpy(cent, x + first * dim, dim * sizeof(float));
    seed_ctx sc = {x, cent, dim, NULL, d2, kr};
    chrys_parallel_for(seed_workers(nt, ni, dim), ni, seed_range, &sc);
    for (uint32_t c = 1; c < k; c++) {
        double tot = 0;
        for (size_t i = 0; i < ni; i++) tot += d2[i];
        size_t best_pick = 0;
        double best_pot = INFINITY;
        for (size_t t = 0; t < trials; t++) {
            size_t pick = (size_t)(rng_next(rs) % ni);
            if (tot > 0) {
                double r = rng_unit(rs) * tot, run = 0;
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
    return CHRYS_OK;
}

/* k distinct rows of x drawn uniformly (a partial Fisher-Yates shuffle of the row numbers). */
static int km_seed_random(const float *x, size_t n, size_t dim, uint32_t k, uint64_t *rs, float *cent)
{
    uint32_t *perm = chrys_malloc(n * sizeof *perm);
    if (!perm) return CHRYS_NOMEM;
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    for (uint32_t c = 0; c < k; c++) {
        size_t j = c + (size_t)(rng_next(rs) % (n - c));
        uint32_t t = perm[c];
        perm[c] = perm[j];
        perm[j] = t;
        memcpy(cent + (size_t)c * dim, x + (size_t)perm[c] * dim, dim * sizeof(float));
    }
    chrys_free(perm);
    return CHRYS_OK;
}

/* Empty clusters take half of the largest one: its centroid, nudged apart. */
static void km_split_empty(float *cent, uint32_t *cnt, size_t dim, uint32_t k, uint64_t *rs)
{
    for (uint32_t c = 0; c < k; c++) {
        if (cnt[c]) continue;
        uint32_t big = 0;
        for (uint32_t j = 1; j < k; j++)
            if (cnt[j] > cnt[big]) big = j;
        float *cb = cent + (size_t)big * dim, *ce = cent + (size_t)c * dim;
        for (size_t d = 0; d < dim; d++) {
            float e = (float)((rng_unit(rs) - 0.5) * 2e-3) * (fabsf(cb[d]) + 1e-6f);
            ce[d] = cb[d] + e;
            cb[d] = cb[d] - e;
        }
        cnt[c] = cnt[big] / 2;
        cnt[big] -= cnt[c];
    }
}

/* Lloyd iterations (at most iters; fewer once no point changes cluster). asg: n, cnt: k, acc:
 * k x dim doubles, c_sq: k floats, all scratch. */
static int km_lloyd(const float *x, size_t n, size_t dim, uint32_t k, int spherical, int iters, unsigned nt,
                    uint64_t *rs, float *cent, uint32_t *asg, uint32_t *cnt, double *acc, float *c_sq)
{
    uint32_t *prev = chrys_malloc(n * sizeof *prev);
    if (!prev) return CHRYS_NOMEM;
    int rc = CHRYS_OK;
    for (int it = 0; it < iters; it++) {
        if ((rc = kmeans_assign(x, n, dim, cent, k, spherical, nt, asg, NULL, c_sq))) break;
        /* converged: no point changed cluster, so another update would give the same centroids */
        if (it > 0 && memcmp(prev, asg, n * sizeof *asg) == 0) break;
        memcpy(prev, asg, n * sizeof *asg);
        memset(cnt, 0, k * sizeof *cnt);
        for (size_t i = 0; i < n; i++) cnt[asg[i]]++;
        update_ctx uc = {x, n, dim, k, asg, cnt, acc, cent};
        chrys_parallel_for(update_workers(nt, n, dim), dim, update_range, &uc);
        km_split_empty(cent, cnt, dim, k, rs);
        if (spherical)
            for (uint32_t c = 0; c < k; c++) normalize_row(cent + (size_t)c * dim, dim);
    }
    chrys_free(prev);
    return rc;
}

int kmeans_train(const float *x_all, size_t n_all, size_t dim, uint32_t k, int spherical, uint64_t seed, int iters,
                 unsigned nt, float *cent, double *objective)
{
    if (k < 1 || n_all < k) return CHRYS_INVALID;
    uint64_t rs = seed ^ 0x5DEECE66DULL;
    /* Training sample (seeded): at most 256 points per centroid. */
    size_t max_pts = (size_t)k * KM_MAX_POINTS_PER_CENTROID;
    float *sample;
    int rc = km_sample(x_all, n_all, dim, max_pts, &rs, &sample);
    if (rc) return rc;
    const float *x = sample ? sample : x_all;
    size_t n = sample ? max_pts : n_all;
    /* seeding on the first min(n, 16k) sample points (a random subset already when sampled) */
    size_t ni = n < (size_t)k * KM_INIT_POINTS_PER_CENTROID ? n : (size_t)k * KM_INIT_POINTS_PER_CENTROID;
    double *d2 = chrys_malloc(ni * sizeof *d2);
    uint32_t *asg = chrys_malloc(n * sizeof *asg);
    uint32_t *cnt = chrys_malloc(k * sizeof *cnt);
    double *acc = chrys_malloc((size_t)k * dim * sizeof *acc);
    float *c_sq = chrys_malloc(k * sizeof *c_sq), *dist = chrys_malloc(n * sizeof *dist);
    if (!d2 || !asg || !cnt || !acc || !c_sq || !dist) {
        rc = CHRYS_NOMEM;
        goto done;
    }
    /* Few centroids: plain k-means++ leaves a cluster uncovered too often when clusters are few
     * and tight (measured: 3 seeds of 6 on 20 separated clusters), hence greedy k-means++ with
     * 2 + ln(k) trials. Many centroids (past 256, where greedy seeding, trials x ni x k distances,
     * would cost more than FAISS's whole training): random sample points, as FAISS seeds. They
     * place centroids where the points are, and after 10 Lloyd iterations end lower than
     * k-means++, which spends centroids on the sparse outskirts: clustered 200k x 1024 (1000
     * clusters of uneven spread), 1789 centroids, seeds 0/1/2: objective 62,872 / 62,686 / 62,954
     * against plain k-means++ 64,049 / 64,201 / 63,645 and FAISS's 63,338 (its own seed), in
     * 56-61 s instead of 71-75 s; Fashion-MNIST 60,000 x 784, 980 centroids: 7,175.7 against
     * k-means++ 7,163.0 and FAISS 7,189.0. */
    if (k > 256) rc = km_seed_random(x, n, dim, k, &rs, cent);
    else rc = km_seed(x, ni, dim, k, 2 + (size_t)log((double)k), nt, &rs, d2, cent);
    if (rc) goto done;
    if (spherical)
        for (uint32_t c = 0; c < k; c++) normalize_row(cent + (size_t)c * dim, dim);
    if ((rc = km_lloyd(x, n, dim, k, spherical, iters, nt, &rs, cent, asg, cnt, acc, c_sq))) goto done;
    if (objective) {
        if ((rc = kmeans_assign(x, n, dim, cent, k, spherical, nt, asg, dist, c_sq))) goto done;
        double obj = 0;
        for (size_t i = 0; i < n; i++) obj += dist[i];
        *objective = obj;
    }
    for (size_t i = 0; i < (size_t)k * dim; i++)
        if (!isfinite(cent[i])) rc = CHRYS_ERROR; /* never expected: inputs are finite */
done:
    chrys_free(d2);
    chrys_free(asg);
    chrys_free(cnt);
    chrys_free(acc);
    chrys_free(c_sq);
    chrys_free(dist);
    chrys_free_aligned(sample);
    return rc;
}

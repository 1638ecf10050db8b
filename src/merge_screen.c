/*
 * merge_screen.c: the exact merge's block search through int8 codes, with the exact answer.
 *
 * The exact merger's block search wants, for each record of a block, the K best entries by the
 * double-precision cosine (dot_f64 of the unit float32 rows, ties to the older entry), exactly as
 * the Flat scan returns them. Almost all of that scan's work is spent on entries nowhere near the
 * top. Here every entry and query is also held as int8 codes with one scale per row
 * (x ~ s * c, c = round(x / s) in [-127, 127], s = max|x_i| / 127), and an integer dot product of
 * codes (AVX-512 VNNI: 64 byte products per instruction, a quarter of the bytes of float32) gives
 * an estimate a = s_q s_x (c_q . c_x) of q . x with a bound that holds for every pair:
 *
 *   q.x - a = q.(x - s_x c_x) + (q - s_q c_q).(s_x c_x)
 *   |q.x - a| <= |q| |e_x| + |e_q| |s_x c_x|        (Cauchy-Schwarz; |e| = the row's own error)
 *
 * plus a margin for dot_f64's own rounding. A row can be among a query's K best only if its upper
 * bound a + b reaches L, the K-th largest lower bound a - b over all rows (at least K rows score at
 * least L), and, when the caller wants only rows scoring at least a floor (the merger's threshold,
 * when no per-record result asks for the best score below it), the floor: L = max(that, floor).
 * So only those rows are scored exactly, with dot_f64, and ranked as the Flat scan ranks them:
 * the K best are the Flat scan's, bit for bit (tests/unit/test_merge.c compares both, and whole
 * merges with the screen forced on and off).
 *
 * The first stage (a basis B of MERGE_PREFIX_DIM rows, drawn once per merge call): every row and
 * query also keeps its projection z = Bx as int8 codes, and with r = x - B^T z,
 *
 *   q.x <= z_q.z_x + 3 eta |z_q||z_x| + |z_q| eps_x + |z_x| eps_q + |r_q||r_x|
 *
 * (eta bounds |B B^T - I|, eps the projection's float32 error; see prefix_slot and merge_screen_basis),
 * with z_q.z_x bounded through its codes as above. Only rows whose first-stage bound reaches L are
 * given the whole row's bound (stage 2), and only rows whose stage-2 bound reaches L are scored.
 *
 * Layout: prefix codes in panels of 16 rows, [MERGE_PREFIX_DIM/4][16 rows][4 bytes], so that one
 * 64-byte load feeds 16 vpdpbusd, one per query of a group of 16 whose 4 code bytes are broadcast
 * (chrys_screen_dots_vnni), and chrys_screen_mask_vnni takes the 16 rows' bounds in one register;
 * whole rows' codes row by row (stage 2 reads a row's bytes in one run).
 *
 * The codes live for one chrys_merger_merge call (block_work): all rows are coded at the first
 * block that uses the screen; later blocks recode the entries the previous block changed and
 * code the new ones, on all cores as the search's first work items. A block that does not use it
 * drops them (coded again when next used).
 */
#include <math.h>
#include <sched.h>
#include <stdatomic.h>

#include "kernels/dist.h"
#include "merge.h"

#define SCREEN_CHUNK 32   /* queries scanned together: two groups of 16 */
#define PREFIX_TILE 64    /* prefix panels (64 KB) scanned by all of a chunk's queries while in cache */
/* stage 1's float32 evaluation is within 1e-6 of its real value (dist.h; about ten roundings of
 * terms at most 3), and dot_f64 within 1e-12 of q.x: a row is dropped only below bar - 1e-5 */
#define PREFIX_MARGIN 1e-5

static int screen_mode = -1; /* merge__test_screen: -1 automatic, 0 never, 1 whenever possible */
static int prefix_mode = -1; /* merge__test_prefix: the same for the first stage */

int merge__test_screen(int mode)
{
    screen_mode = mode;
    return CHRYS_OK;
}

int merge__test_prefix(int mode)
{
    prefix_mode = mode;
    return CHRYS_OK;
}

int merge_screen_usable(const chrys_index *ix, size_t entries, size_t nq)
{
    if (screen_mode == 0 || ix->kind != CHRYS_INDEX_FLAT || !ix->vecs || ix->sq8 || ix->metric != CHRYS_METRIC_COSINE ||
        entries == 0 || ix->n != entries)
        return 0;
    if (screen_mode == 1) return 1;
    /* automatic: with VNNI only (without it the integer dot product is not cheaper than the float
     * scan), and where the scan outweighs coding the entries once per merge call */
    return chrys_kernels_active()->dot_u8i8 == chrys_dot_u8i8_vnni && entries >= SCREEN_MIN_ENTRIES &&
           nq >= SCREEN_MIN_QUERIES;
}

int merge_screen_wants_basis(const merge_screen *s, uint32_t dim, double pairs)
{
    if (s->basis || prefix_mode == 0 || dim < 2 * MERGE_PREFIX_DIM) return 0;
    return prefix_mode == 1 || pairs >= SCREEN_PREFIX_MIN_PAIRS;
}

void merge_screen_free(merge_screen *s)
{
    chrys_free_aligned(s->codes);
    chrys_free(s->scale);
    chrys_free(s->err);
    chrys_free(s->nhat);
    chrys_free_aligned(s->basis);
    chrys_free_aligned(s->pcodes);
    chrys_free_aligned(s->pf);
    memset(s, 0, sizeof *s);
}

/* Codes of one row (chrys_screen_code_ref's contract, at the active kernel level; any rounding to
 * codes would do: the error is measured, not assumed). */
static int64_t code_row(const float *x, uint32_t dim, uint8_t *out, size_t stride4, int unsigned_codes, double *scale,
                        double *err, double *nhat)
{
    return chrys_kernels_active()->screen_code(x, dim, out, stride4, unsigned_codes, scale, err, nhat);
}

static void dot_block(const float *q, size_t nq, const float *x, size_t nx, size_t dim, float *out, size_t ldo)
{
    const chrys_kernels *kr = chrys_kernels_active();
    if (kr->dot_block) kr->dot_block(q, nq, x, nx, dim, out, ldo);
    else chrys_dot_block_ref(q, nq, x, nx, dim, out, ldo);
}

/* a float at least v (v >= 0) */
static inline float up(double v)
{
    return (float)(v * (1 + 1e-6) + 1e-30);
}

/* ------------------------------------------------------------------------------------------
 * The basis: PK orthonormal directions that hold most of the rows' length
 *
 * Any PK x dim matrix B gives a valid bound (below); one whose span holds most of every row makes
 * it tight. Randomised range finding (Halko, Martinsson and Tropp) on a sample S of the rows: the
 * span of S^T S W for a random W (one power step), orthonormalised. Its cost, about three small
 * GEMMs of 512 x 1024 x 64, is paid once per merge call that uses it.
 */

static void random_signs(float *v, uint32_t dim, uint64_t *rng)
{
    for (uint32_t t = 0; t < dim; t++) { /* splitmix64 */
        uint64_t z = (*rng += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        v[t] = ((z ^ (z >> 31)) & 1) ? 1.0f : -1.0f;
    }
}

static void transpose(const float *a, size_t rows, size_t cols, float *out)
{
    for (size_t i0 = 0; i0 < rows; i0 += 16)
        for (size_t j = 0; j < cols; j++)
            for (size_t i = i0; i < i0 + 16 && i < rows; i++) out[j * rows + i] = a[i * cols + j];
}

/* Gram-Schmidt twice on the rows of y (PK x dim), in double sums; a row that vanishes (a sample of
 * rank below PK) is replaced by a fresh pseudo-random one. The slow way, for what cholqr cannot
 * do. */
static void gram_schmidt(float *y, uint32_t dim, uint64_t *rng)
{
    const chrys_kernels *kr = chrys_kernels_active();
    for (size_t j = 0; j < MERGE_PREFIX_DIM; j++) {
        float *v = y + j * dim;
        for (int tries = 0; tries < 8; tries++) {
            double n0 = sqrt(kr->dot_f64(v, v, dim));
            for (int pass = 0; pass < 2; pass++)
                for (size_t i = 0; i < j; i++) {
                    const float *u = y + i * dim;
                    float c = (float)kr->dot_f64(u, v, dim);
                    for (uint32_t t = 0; t < dim; t++) v[t] -= c * u[t];
                }
            double n1 = sqrt(kr->dot_f64(v, v, dim));
            if (n1 > 1e-3 * n0 && n1 > 0) {
                vec_scale_to(v, v, dim, n1);
                break;
            }
            random_signs(v, dim, rng);
        }
    }
}

/* One Cholesky QR step on the rows of y: G = Y Y^T = L L^T (double), Y := L^-1 Y (as a float
 * GEMM). 0: done; 1: G is not safely positive definite (rank below PK). tmp: PK x dim floats. */
static int cholqr(float *y, uint32_t dim, float *tmp)
{
    const size_t K = MERGE_PREFIX_DIM;
    const chrys_kernels *kr = chrys_kernels_active();
    double g[MERGE_PREFIX_DIM][MERGE_PREFIX_DIM], l[MERGE_PREFIX_DIM][MERGE_PREFIX_DIM];
    float mi[MERGE_PREFIX_DIM * MERGE_PREFIX_DIM];
    for (size_t i = 0; i < K; i++)
        for (size_t j = 0; j <= i; j++) g[i][j] = kr->dot_f64(y + i * dim, y + j * dim, dim);
    double gmax = 0;
    for (size_t i = 0; i < K; i++) gmax = g[i][i] > gmax ? g[i][i] : gmax;
    for (size_t j = 0; j < K; j++) {
        double d = g[j][j];
        for (size_t t = 0; t < j; t++) d -= l[j][t] * l[j][t];
        if (!(d > 1e-8 * gmax)) return 1;
        l[j][j] = sqrt(d);
        for (size_t i = j + 1; i < K; i++) {
            double v = g[i][j];
            for (size_t t = 0; t < j; t++) v -= l[i][t] * l[j][t];
            l[i][j] = v / l[j][j];
        }
    }
    for (size_t c = 0; c < K; c++) /* M = L^-1, column by column (forward substitution) */
        for (size_t i = 0; i < K; i++) {
            double v = i == c ? 1.0 : 0.0;
            for (size_t t = c; t < i; t++) v -= l[i][t] * mi[t * K + c];
            mi[i * K + c] = i < c ? 0.0f : (float)(v / l[i][i]);
        }
    transpose(y, K, dim, tmp); /* Y^T: dim x K */
    dot_block(mi, K, tmp, dim, K, y, dim); /* Y[j][t] = sum_i M[j][i] Y[i][t] */
    return 0;
}

/* Orthonormal rows (to float precision) spanning y's: Cholesky QR twice, Gram-Schmidt when the
 * rows are (nearly) dependent. */
static void orthonormalise(float *y, uint32_t dim, float *tmp, uint64_t *rng)
{
    if (cholqr(y, dim, tmp) || cholqr(y, dim, tmp)) gram_schmidt(y, dim, rng);
}

int merge_screen_basis(merge_screen *s, const float *const *rows, const double *norms, size_t m, uint32_t dim)
{
    const size_t K = MERGE_PREFIX_DIM;
    if (m == 0 || dim < K) return CHRYS_INVALID;
    /* one scratch block (fresh memory: on huge pages): the sample S and its transpose, P, P^T,
     * and the orthonormalisation's Y^T */
    size_t md = m * (size_t)dim, fl = 2 * md + 2 * m * K + K * (size_t)dim;
    float *y = chrys_malloc_aligned(K * dim * sizeof *y), *sc = chrys_malloc_huge(fl * sizeof *sc);
    int rc = CHRYS_NOMEM;
    if (!y || !sc) goto out;
    float *smp = sc, *st = sc + md, *p = st + md, *pt = p + m * K, *tmp = pt + m * K;
    for (size_t i = 0; i < m; i++) vec_scale_to(smp + i * dim, rows[i], dim, norms ? norms[i] : 1.0);
    uint64_t rng = 0x243F6A8885A308D3ull;
    for (size_t j = 0; j < K; j++) random_signs(y + j * dim, dim, &rng);
    transpose(smp, m, dim, st);
    for (int step = 0; step < 2; step++) {
        dot_block(smp, m, y, K, dim, p, K); /* P = S Y^T */
        transpose(p, m, K, pt);
        dot_block(pt, K, st, dim, m, y, dim); /* Y = P^T S */
        orthonormalise(y, dim, tmp, &rng);
    }
    /* how far from orthonormal the float rows are: eta >= |B B^T - I|_F >= |B B^T - I|_2 (each
     * entry a double sum of exact products, within dim * 2^-53 of its value) */
    const chrys_kernels *kr = chrys_kernels_active();
    double e2 = 0, f2 = 0;
    for (size_t i = 0; i < K; i++) {
        for (size_t j = i; j < K; j++) {
            double g = kr->dot_f64(y + i * dim, y + j * dim, dim) - (i == j);
            e2 += (i == j ? 1 : 2) * g * g;
        }
        f2 += kr->dot_f64(y + i * dim, y + i * dim, dim);
    }
    s->eta = sqrt(e2) * (1 + 1e-9) + 1e-12;
    /* a float32 dot product of dim terms, in any order, with or without FMA, is within
     * gamma = (dim + 1) u / (1 - (dim + 1) u) (u = 2^-24) of sum |x_i b_i| <= |x| |b|: the
     * projection z of x is within gam |x| of B x (gam = gamma |B|_F) */
    double u = ldexp(1.0, -24), g = (dim + 1) * u / (1 - (dim + 1) * u);
    s->gam = g * sqrt(f2) * (1 + 1e-9);
    if (s->eta > 1e-3) { /* cannot happen with a working kernel: the bound would be loose */
        rc = CHRYS_ERROR;
        goto out;
    }
    chrys_free_aligned(s->basis);
    s->basis = y;
    y = NULL;
    s->n = 0; /* every row is coded again, with its prefix */
    rc = CHRYS_OK;
out:
    chrys_free_aligned(y);
    chrys_free_aligned(sc);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * Coding
 */

/* Room for n rows: room rows when that is enough (merge_screen_sync), else grown geometrically. */
static int screen_reserve(merge_screen *s, uint32_t dim, size_t n, size_t room)
{
    size_t rs = ((size_t)dim + 63) & ~(size_t)63;
    int prefix = s->basis != NULL;
    if (n <= s->cap && (!prefix || s->pcodes)) return CHRYS_OK;
    size_t cap = n <= s->cap ? s->cap : ((room >= n ? room : chrys_grow_cap(s->cap, n, 1024)) + 15) & ~(size_t)15, bytes;
    if (chrys_mul_size(cap, rs, &bytes)) return CHRYS_NOMEM;
    /* (room never used is never touched: the rows of a panel past the coded ones hold whatever
     * the memory held, and the search takes only coded rows from a panel's bounds) */
    uint8_t *c = chrys_realloc_aligned(s->codes, s->cap * rs, bytes);
    if (!c) return CHRYS_NOMEM;
    s->codes = c;
    double *a = chrys_realloc(s->scale, cap * sizeof *a);
    if (!a) return CHRYS_NOMEM;
    s->scale = a;
    a = chrys_realloc(s->err, cap * sizeof *a);
    if (!a) return CHRYS_NOMEM;
    s->err = a;
    a = chrys_realloc(s->nhat, cap * sizeof *a);
    if (!a) return CHRYS_NOMEM;
    s->nhat = a;
    if (prefix) {
        size_t old = s->pcodes ? s->cap / 16 : 0;
        c = chrys_realloc_aligned(s->pcodes, old * PREFIX_PANEL, cap / 16 * PREFIX_PANEL);
        if (!c) return CHRYS_NOMEM;
        s->pcodes = c;
        float *f = chrys_realloc_aligned(s->pf, old * 64 * sizeof *f, cap / 16 * 64 * sizeof *f);
        if (!f) return CHRYS_NOMEM;
        s->pf = f;
    }
    s->cap = cap;
    s->rstride = rs;
    return CHRYS_OK;
}

/* A row's or query's first-stage terms from its projection z (coded into out, stride4 apart) and
 * xn >= |x|: the code scale s, the code error |z - s c|, |s c|, |z| and R >= |x - B^T z|, each
 * rounded up; returns the codes' sum. |x - B^T z|^2 = |x|^2 - 2 z.(Bx) + z^T B B^T z
 * <= |x|^2 - (1 - eta)|z|^2 + 2 |z| eps, with |z - Bx| <= eps = gam |x|. */
static int64_t prefix_terms(const merge_screen *s, const float *z, double xn, uint8_t *out, size_t stride4,
                            int unsigned_codes, double *ps, double *pe, double *ph, double *zn, double *r)
{
    const size_t K = MERGE_PREFIX_DIM;
    double zz = 0;
    int64_t sum = code_row(z, (uint32_t)K, out, stride4, unsigned_codes, ps, pe, ph);
    for (size_t i = 0; i < K; i++) zz += (double)z[i] * z[i];
    *zn = sqrt(zz) * (1 + 1e-9);
    double r2 = xn * xn - (1 - s->eta) * zz * (1 - 1e-12) + 2 * *zn * s->gam * xn;
    *r = sqrt(r2 > 0 ? r2 : 0) * (1 + 1e-9);
    return sum;
}

/* Row v's prefix: codes in its panel and its four terms of the bound (see the search). xn: an
 * upper bound of |x|. */
static void prefix_slot(const merge_screen *s, size_t v, const float *z, double xn)
{
    double ps, pe, ph, zn, r;
    prefix_terms(s, z, xn, s->pcodes + (v / 16) * PREFIX_PANEL + (v % 16) * 4, 64, 1, &ps, &pe, &ph, &zn, &r);
    float *f = s->pf + (v / 16) * 64 + v % 16;
    f[0] = (float)ps;
    f[16] = up(pe + s->gam * xn);
    f[32] = up(ph > zn ? ph : zn);
    f[48] = up(r);
}

/* Code CODE_GROUP rows at most (their whole rows, and with a basis their prefixes): slots[i], or
 * first + i when slots is NULL. gx: CODE_GROUP x dim floats, z: CODE_GROUP x MERGE_PREFIX_DIM
 * (scratch). Rows are independent: groups run on any core, in any order. */
#define CODE_GROUP 32
static void code_group(const merge_screen *s, const chrys_index *ix, const uint32_t *slots, size_t first, size_t m,
                       float *gx, float *z)
{
    const size_t K = MERGE_PREFIX_DIM;
    size_t dim = ix->dim;
    for (size_t i = 0; i < m; i++) {
        size_t v = slots ? slots[i] : first + i;
        code_row(ix->vecs + v * dim, ix->dim, s->codes + v * s->rstride, 4, 1, &s->scale[v], &s->err[v], &s->nhat[v]);
    }
    if (!s->basis) return;
    const float *x = ix->vecs + first * dim;
    if (slots) {
        for (size_t i = 0; i < m; i++) memcpy(gx + i * dim, ix->vecs + (size_t)slots[i] * dim, dim * sizeof *gx);
        x = gx;
    }
    dot_block(x, m, s->basis, K, dim, z, K);
    for (size_t i = 0; i < m; i++) {
        size_t v = slots ? slots[i] : first + i;
        prefix_slot(s, v, z + i * K, s->nhat[v] + s->err[v]); /* |x| <= |s c| + |x - s c| */
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* What a sync codes: the rows merged into since they were coded (slots, *n_re of them) and the
 * new ones (old..ix->n). Room made first; s->n is the index's after. */
static int sync_begin(merge_screen *s, const chrys_index *ix, const uint64_t *changed, size_t n_changed, size_t room,
                      uint32_t **re, size_t *n_re, size_t *old)
{
    *old = s->n;
    *n_re = 0;
    *re = NULL;
    int rc = screen_reserve(s, ix->dim, ix->n, room);
    if (rc) return rc;
    if (n_changed && *old && !(*re = chrys_malloc(n_changed * sizeof **re))) return CHRYS_NOMEM;
    for (size_t j = 0; j < n_changed && *old; j++) {
        uint32_t v = idmap_get(&ix->map, changed[j]);
        if (v != CHRYS_NO_SLOT && v < *old) (*re)[(*n_re)++] = v;
    }
    /* in slot order, each once (two groups must not code one row at once) */
    if (*n_re > 1) qsort(*re, *n_re, sizeof **re, cmp_u32);
    size_t u = 0;
    for (size_t j = 0; j < *n_re; j++)
        if (!u || (*re)[u - 1] != (*re)[j]) (*re)[u++] = (*re)[j];
    *n_re = u;
    s->n = ix->n;
    return CHRYS_OK;
}

/* Coding items of a sync: groups of the changed rows, then of the new ones. */
static size_t code_items(size_t n_re, size_t old, size_t n)
{
    return (n_re + CODE_GROUP - 1) / CODE_GROUP + (n - old + CODE_GROUP - 1) / CODE_GROUP;
}

static void code_item(const merge_screen *s, const chrys_index *ix, const uint32_t *re, size_t n_re, size_t old,
                      size_t it, float *gx, float *z)
{
    size_t gre = (n_re + CODE_GROUP - 1) / CODE_GROUP;
    if (it < gre) {
        size_t b = it * CODE_GROUP, m = n_re - b < CODE_GROUP ? n_re - b : CODE_GROUP;
        code_group(s, ix, re + b, 0, m, gx, z);
    } else {
        size_t b = old + (it - gre) * CODE_GROUP, m = ix->n - b < CODE_GROUP ? ix->n - b : CODE_GROUP;
        code_group(s, ix, NULL, b, m, gx, z);
    }
}

int merge_screen_sync(merge_screen *s, const chrys_index *ix, const uint64_t *changed, size_t n_changed, size_t room)
{
    uint32_t *re;
    size_t n_re, old;
    int rc = sync_begin(s, ix, changed, n_changed, room, &re, &n_re, &old);
    float *gx = chrys_malloc_aligned((size_t)CODE_GROUP * (ix->dim + MERGE_PREFIX_DIM) * sizeof *gx);
    if (!rc && !gx) rc = CHRYS_NOMEM;
    if (!rc)
        for (size_t it = 0, ni = code_items(n_re, old, ix->n); it < ni; it++)
            code_item(s, ix, re, n_re, old, it, gx, gx + (size_t)CODE_GROUP * ix->dim);
    if (rc) s->n = 0; /* coded afresh next time */
    chrys_free(re);
    chrys_free_aligned(gx);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * The search
 */
typedef struct cand {
    uint32_t slot;
    double hi; /* upper bound of its score */
} cand;

typedef struct qstate {
    int8_t *c;        /* dim codes */
    int8_t *pc;       /* the prefix's codes */
    double s, e, qn, margin; /* scale, |error|, |q|, dot_f64's rounding */
    double floor;     /* rows scoring below it are not wanted */
    int64_t sum;      /* sum of the codes (the kernel's unsigned offset: 128 * sum) */
    double *lo;       /* k: min-heap of the k largest lower bounds */
    size_t nlo;
    cand *cs;         /* rows whose upper bound reached the k-th lower bound when seen */
    size_t ncs, cap;
    int oom;
} qstate;

/* A worker's buffers. */
typedef struct screen_scratch {
    int8_t *codes, *pcodes; /* a chunk's codes: whole rows (d4 * 4 bytes each), prefixes */
    float *z;               /* the chunk's prefixes (projections) */
    chrys_screen_qp qp[SCREEN_CHUNK];
    int32_t out[16 * 16];
} screen_scratch;

/* Work items: a chunk of SCREEN_CHUNK queries against one part of the panels. With few chunks
 * (a block of the merger has E/64 records, 2-5 chunks at 10,000 entries) the panels are split in
 * nt parts, so every core has work: each part keeps its own bounds, a superset of the candidates
 * (its bar is at most the whole scan's), and the last part of a chunk to finish merges them. */
typedef struct screen_job {
    const merge_screen *s;
    const chrys_index *ix;
    const float *q;
    size_t nq, k;
    double floor;
    uint64_t *ids;
    double *scores;
    size_t nparts;
    qstate *st;           /* items x SCREEN_CHUNK */
    double *lo;           /* items x SCREEN_CHUNK x k */
    atomic_uint *done;    /* per chunk: parts finished */
    atomic_int rc;
    /* the sync's coding, as the first items (code_item) */
    const uint32_t *re;
    size_t n_re, old, ncode;
    atomic_size_t coded;  /* coding items finished */
} screen_job;

static void lo_push(qstate *st, size_t k, double lo)
{
    double *h = st->lo;
    if (st->nlo < k) { /* sift up */
        size_t i = st->nlo++;
        while (i > 0 && h[(i - 1) / 2] > lo) {
            h[i] = h[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        h[i] = lo;
        return;
    }
    if (!(lo > h[0])) return;
    size_t i = 0; /* replace the smallest, sift down */
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= k) break;
        if (c + 1 < k && h[c + 1] < h[c]) c++;
        if (!(h[c] < lo)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = lo;
}

static void cand_push(qstate *st, uint32_t slot, double hi)
{
    if (st->ncs == st->cap) {
        size_t cap = chrys_grow_cap(st->cap, st->ncs + 1, 64);
        cand *p = chrys_realloc(st->cs, cap * sizeof *p);
        if (!p) {
            st->oom = 1;
            return;
        }
        st->cs = p;
        st->cap = cap;
    }
    st->cs[st->ncs++] = (cand){slot, hi};
}

/* The bar a row's upper bound must reach: the k-th largest lower bound seen, or the floor. */
static inline double bar(const qstate *st, size_t k)
{
    return st->nlo == k && st->lo[0] > st->floor ? st->lo[0] : st->floor;
}

/* One estimated row: its bounds into the query's state. */
static inline void take(qstate *st, const merge_screen *s, size_t k, uint32_t v, int32_t dot)
{
    double a = st->s * s->scale[v] * (double)((int64_t)dot - 128 * st->sum);
    double b = st->qn * s->err[v] + st->e * s->nhat[v] + st->margin;
    if (a + b >= bar(st, k)) cand_push(st, v, a + b);
    /* (a lower bound under the floor never becomes L: the heap keeps only those at or above it) */
    if (a - b >= st->floor) lo_push(st, k, a - b);
}

/* The k-th largest of the parts' lower bounds (each part's heap holds its k largest at or above
 * the floor), or the floor: the bar of the whole scan (with one part, that part's bar). */
static double merged_bar(const screen_job *j, size_t item0, size_t qi, double *tmp)
{
    size_t k = j->k, m = 0;
    for (size_t p = 0; p < j->nparts; p++) {
        const qstate *t = &j->st[(item0 + p) * SCREEN_CHUNK + qi];
        for (size_t i = 0; i < t->nlo; i++) tmp[m++] = t->lo[i];
    }
    if (m < k) return j->floor;
    /* k-th largest of m <= nparts * k values: partial selection sort (k is at most MERGE_K) */
    for (size_t r = 0; r < k; r++) {
        size_t bi = r;
        for (size_t i = r + 1; i < m; i++)
            if (tmp[i] > tmp[bi]) bi = i;
        double x = tmp[r];
        tmp[r] = tmp[bi];
        tmp[bi] = x;
    }
    return tmp[k - 1] > j->floor ? tmp[k - 1] : j->floor;
}

/* Exact scores for the rows of query q0 + qi that may be in its top k (from every part of the
 * panels), ranked as the Flat scan ranks them. */
static int finish(const screen_job *j, size_t item0, size_t q0, size_t qi, ranked **buf, size_t *bufcap, double *tmp)
{
    const chrys_index *ix = j->ix;
    const chrys_kernels *kr = chrys_kernels_active();
    size_t dim = ix->dim, k = j->k, m = 0, total = 0;
    for (size_t p = 0; p < j->nparts; p++) total += j->st[(item0 + p) * SCREEN_CHUNK + qi].ncs;
    if (total > *bufcap) {
        ranked *nb = chrys_realloc(*buf, total * sizeof *nb);
        if (!nb) return CHRYS_NOMEM;
        *buf = nb;
        *bufcap = total;
    }
    double L = merged_bar(j, item0, qi, tmp);
    const float *q = j->q + (q0 + qi) * dim;
    for (size_t p = 0; p < j->nparts; p++) {
        const qstate *st = &j->st[(item0 + p) * SCREEN_CHUNK + qi];
        for (size_t i = 0; i < st->ncs; i++) {
            if (st->cs[i].hi < L) continue;
            uint32_t v = st->cs[i].slot;
            double sc = kr->dot_f64(q, ix->vecs + (size_t)v * dim, dim);
            if (sc >= j->floor) (*buf)[m++] = (ranked){sc, ix->ids[v]};
        }
    }
    qsort(*buf, m, sizeof **buf, ranked_cmp_best_first);
    size_t qg = q0 + qi;
    for (size_t r = 0; r < k; r++) {
        j->ids[qg * k + r] = r < m ? (*buf)[r].id : CHRYS_NO_ID;
        j->scores[qg * k + r] = r < m ? (*buf)[r].score : -INFINITY;
    }
    return CHRYS_OK;
}

/* Stage 2 for row v: its bounds from the whole row's codes, into the query's state. */
static inline void stage2(qstate *t, const merge_screen *s, size_t k, size_t v, size_t dim,
                          int32_t (*dot)(const uint8_t *, const int8_t *, size_t))
{
    take(t, s, k, (uint32_t)v, dot(s->codes + v * s->rstride, t->c, dim));
}

/* The prefix terms of a query (the search's stage 1; see merge_screen_search). */
static void prefix_query(const merge_screen *s, qstate *t, const float *z, chrys_screen_qp *qp)
{
    double ps, pe, ph, zn, r;
    int64_t sum = prefix_terms(s, z, t->qn, (uint8_t *)t->pc, 4, 0, &ps, &pe, &ph, &zn, &r);
    qp->s = (float)ps;
    qp->zq = up(zn);
    qp->eq = up(pe + s->gam * t->qn + 3 * s->eta * zn);
    qp->rq = up(r);
    qp->off = (int32_t)(128 * sum);
}

/* One item: chunk it / nparts of the queries against part it % nparts of the rows. */
static void screen_item(screen_job *j, size_t it, screen_scratch *w, ranked **buf, size_t *bufcap, double *tmp)
{
    const merge_screen *s = j->s;
    const chrys_index *ix = j->ix;
    const chrys_kernels *kr = chrys_kernels_active();
    const size_t K = MERGE_PREFIX_DIM;
    size_t dim = ix->dim, d4 = (dim + 3) / 4, n = s->n, k = j->k, np = (n + 15) / 16;
    size_t c = it / j->nparts, part = it % j->nparts, q0 = c * SCREEN_CHUNK;
    size_t nq = j->nq - q0 < SCREEN_CHUNK ? j->nq - q0 : SCREEN_CHUNK;
    size_t pa = np * part / j->nparts, pe = np * (part + 1) / j->nparts;
    int vnni = kr->dot_u8i8 == chrys_dot_u8i8_vnni;
    void (*dots)(const uint8_t *, size_t, const int8_t *, size_t, int32_t *) =
        vnni ? chrys_screen_dots_vnni : chrys_screen_dots_ref;
    void (*mask)(const int32_t *, size_t, const float *, const chrys_screen_qp *, uint16_t *) =
        vnni ? chrys_screen_mask_vnni : chrys_screen_mask_ref;
    int32_t (*dot)(const uint8_t *, const int8_t *, size_t) = kr->dot_u8i8;
    qstate *st = j->st + it * SCREEN_CHUNK;
    memset(w->pcodes, 0, SCREEN_CHUNK * K); /* queries past nq code 0 */
    if (s->basis) dot_block(j->q + q0 * dim, nq, s->basis, K, dim, w->z, K);
    for (size_t i = 0; i < nq; i++) {
        qstate *t = &st[i];
        const float *q = j->q + (q0 + i) * dim;
        double nh;
        t->c = w->codes + i * d4 * 4;
        t->pc = w->pcodes + i * K;
        t->sum = code_row(q, (uint32_t)dim, (uint8_t *)t->c, 4, 0, &t->s, &t->e, &nh);
        t->qn = sqrt(vec_dot_f64(q, q, dim)) * (1 + 1e-9);
        /* dot_f64 of unit-length rows is within dim * 2^-53 of the true q.x (products exact,
         * each partial sum rounded once); four times that, and the estimate's own rounding */
        t->margin = ((double)dim + 4) * 2.3e-16 * (t->qn + 1) * 2;
        t->floor = j->floor;
        t->lo = j->lo + (it * SCREEN_CHUNK + i) * k;
        t->nlo = 0;
        t->ncs = 0;
        if (s->basis) prefix_query(s, t, w->z + i * K, &w->qp[i]);
    }
    if (!s->basis) { /* stage 2 alone: every row */
        size_t v1 = pe * 16 < n ? pe * 16 : n;
        for (size_t i = 0; i < nq; i++)
            for (size_t v = pa * 16; v < v1; v++) stage2(&st[i], s, k, v, dim, dot);
    }
    for (size_t p0 = pa; s->basis && p0 < pe; p0 += PREFIX_TILE) {
        size_t p1 = p0 + PREFIX_TILE < pe ? p0 + PREFIX_TILE : pe;
        for (size_t g = 0; g < nq; g += 16) {
            size_t ng = nq - g < 16 ? nq - g : 16;
            for (size_t p = p0; p < p1; p++) {
                dots(s->pcodes + p * PREFIX_PANEL, K / 4, w->pcodes + g * K, K, w->out);
                for (size_t i = 0; i < ng; i++) w->qp[g + i].thr = (float)(bar(&st[g + i], k) - PREFIX_MARGIN);
                uint16_t m16[16];
                mask(w->out, ng, s->pf + p * 64, w->qp + g, m16);
                size_t rows = n - p * 16 < 16 ? n - p * 16 : 16;
                unsigned lim = rows < 16 ? (1u << rows) - 1 : 0xffffu;
                for (size_t i = 0; i < ng; i++)
                    for (unsigned mm = m16[i] & lim; mm; mm &= mm - 1)
                        stage2(&st[g + i], s, k, p * 16 + (size_t)__builtin_ctz(mm), dim, dot);
            }
        }
    }
    for (size_t i = 0; i < nq; i++)
        if (st[i].oom) atomic_store(&j->rc, CHRYS_NOMEM);
    /* the last part of the chunk to finish ranks its queries (the atomic orders the other parts'
     * writes before these reads) */
    if (j->nparts > 1 && atomic_fetch_add(&j->done[c], 1) + 1 < j->nparts) return;
    if (atomic_load(&j->rc)) return;
    for (size_t i = 0; i < nq; i++)
        if (finish(j, c * j->nparts, q0, i, buf, bufcap, tmp)) {
            atomic_store(&j->rc, CHRYS_NOMEM);
            return;
        }
}

static void screen_range(void *arg, unsigned wk, size_t b, size_t e)
{
    (void)wk;
    screen_job *j = arg;
    size_t dim = j->ix->dim, d4 = (dim + 3) / 4;
    if (b < j->ncode) { /* coding items: each worker takes them before any search item */
        float *gx = chrys_malloc_aligned((size_t)CODE_GROUP * (dim + MERGE_PREFIX_DIM) * sizeof *gx);
        if (!gx) atomic_store(&j->rc, CHRYS_NOMEM);
        for (; b < e && b < j->ncode; b++) {
            if (gx) code_item(j->s, j->ix, j->re, j->n_re, j->old, b, gx, gx + (size_t)CODE_GROUP * dim);
            atomic_fetch_add_explicit(&j->coded, 1, memory_order_release);
        }
        chrys_free_aligned(gx);
        if (b == e) return;
    }
    /* the search reads every row's codes: wait for the coding items taken by other workers
     * (items are handed out in order, so all are taken by now, each by a running worker) */
    while (atomic_load_explicit(&j->coded, memory_order_acquire) < j->ncode) sched_yield();
    screen_scratch w;
    w.codes = chrys_malloc_aligned((size_t)SCREEN_CHUNK * d4 * 4);
    w.pcodes = chrys_malloc_aligned((size_t)SCREEN_CHUNK * MERGE_PREFIX_DIM);
    w.z = chrys_malloc_aligned((size_t)SCREEN_CHUNK * MERGE_PREFIX_DIM * sizeof *w.z);
    double *tmp = chrys_malloc(j->nparts * j->k * sizeof *tmp);
    size_t bufcap = 256;
    ranked *buf = chrys_malloc(bufcap * sizeof *buf);
    if (!w.codes || !w.pcodes || !w.z || !tmp || !buf) atomic_store(&j->rc, CHRYS_NOMEM);
    else
        for (size_t it = b; it < e && !atomic_load(&j->rc); it++) screen_item(j, it - j->ncode, &w, &buf, &bufcap, tmp);
    chrys_free_aligned(w.codes);
    chrys_free_aligned(w.pcodes);
    chrys_free_aligned(w.z);
    chrys_free(tmp);
    chrys_free(buf);
}

/* The search, after coding re (n_re rows merged into) and the rows from old on, in one parallel
 * pass: coding items first, then the search's. */
static int search_impl(merge_screen *s, const chrys_index *ix, const uint32_t *re, size_t n_re, size_t old, size_t nq,
                       const float *q, size_t k, double floor, unsigned nt, uint64_t *ids, double *scores)
{
    if (s->n != ix->n || k == 0 || isnan(floor)) return CHRYS_INVALID;
    if (!nt) nt = chrys_online_cpus();
    size_t chunks = (nq + SCREEN_CHUNK - 1) / SCREEN_CHUNK, np = (s->n + 15) / 16;
    /* fewer than four chunks a core: each chunk's panels in one part per core (at least 64
     * panels, 1,024 rows, a part) */
    size_t nparts = nt > 1 && chunks < 4 * (size_t)nt ? nt : 1;
    while (nparts > 1 && np / nparts < 64) nparts--;
    size_t items = chunks * nparts, n_st;
    screen_job j = {s, ix, q, nq, k, floor, ids, scores, nparts, NULL, NULL, NULL, CHRYS_OK, re, n_re, old,
                    code_items(n_re, old, ix->n), 0};
    if (chrys_mul_size(items, SCREEN_CHUNK, &n_st)) return CHRYS_NOMEM;
    j.st = chrys_calloc(n_st, sizeof *j.st);
    j.lo = chrys_malloc(n_st * k * sizeof *j.lo);
    j.done = chrys_malloc(chunks * sizeof *j.done);
    int rc = CHRYS_NOMEM;
    if (j.st && j.lo && j.done) {
        for (size_t c = 0; c < chunks; c++) atomic_init(&j.done[c], 0);
        atomic_init(&j.coded, 0);
        /* work items: coding groups, then (chunk, part) pairs, taken one at a time */
        chrys_parallel_chunks(nt, j.ncode + items, 1, screen_range, &j);
        rc = atomic_load(&j.rc);
    }
    if (j.st)
        for (size_t i = 0; i < n_st; i++) chrys_free(j.st[i].cs);
    chrys_free(j.st);
    chrys_free(j.lo);
    chrys_free(j.done);
    return rc;
}

int merge_screen_search(merge_screen *s, const chrys_index *ix, size_t nq, const float *q, size_t k, double floor,
                        unsigned nt, uint64_t *ids, double *scores)
{
    return search_impl(s, ix, NULL, 0, s->n, nq, q, k, floor, nt, ids, scores);
}

int merge_screen_sync_search(merge_screen *s, const chrys_index *ix, const uint64_t *changed, size_t n_changed,
                             size_t room, size_t nq, const float *q, size_t k, double floor, unsigned nt,
                             uint64_t *ids, double *scores)
{
    uint32_t *re;
    size_t n_re, old;
    int rc = sync_begin(s, ix, changed, n_changed, room, &re, &n_re, &old);
    if (!rc) rc = search_impl(s, ix, re, n_re, old, nq, q, k, floor, nt, ids, scores);
    if (rc) s->n = 0; /* coded afresh next time */
    chrys_free(re);
    return rc;
}

int merge__test_prefix_pass(const merge_screen *s, const chrys_index *ix, const float *q, const double *bar,
                            unsigned char *pass)
{
    const size_t K = MERGE_PREFIX_DIM;
    if (!s->basis || s->n != ix->n) return CHRYS_INVALID;
    int vnni = chrys_kernels_active()->dot_u8i8 == chrys_dot_u8i8_vnni;
    float z[MERGE_PREFIX_DIM];
    int8_t *pc = chrys_calloc(16 * K, 1);
    if (!pc) return CHRYS_NOMEM;
    qstate t = {0};
    t.pc = pc;
    t.qn = sqrt(vec_dot_f64(q, q, ix->dim)) * (1 + 1e-9);
    chrys_screen_qp qp;
    dot_block(q, 1, s->basis, K, ix->dim, z, K);
    prefix_query(s, &t, z, &qp);
    int32_t out[256];
    for (size_t p = 0; p * 16 < s->n; p++) {
        (vnni ? chrys_screen_dots_vnni : chrys_screen_dots_ref)(s->pcodes + p * PREFIX_PANEL, K / 4, pc, K, out);
        for (size_t v = p * 16; v < p * 16 + 16 && v < s->n; v++) {
            uint16_t m;
            qp.thr = (float)(bar[v] - PREFIX_MARGIN); /* as the search sets it */
            (vnni ? chrys_screen_mask_vnni : chrys_screen_mask_ref)(out, 1, s->pf + p * 64, &qp, &m);
            pass[v] = (m >> (v % 16)) & 1;
        }
    }
    chrys_free(pc);
    return CHRYS_OK;
}

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
 * when no per-record result asks for the best score below it), the floor: L = max(that, floor),
 * which from the first row on passes over almost every panel. So only those rows are scored
 * exactly, with dot_f64, and ranked as the Flat scan ranks them: the K best are the Flat scan's,
 * bit for bit (tests/unit/test_merge.c compares both, and whole merges with the screen forced on
 * and off).
 *
 * Layout: rows in panels of 16, [dim/4][16 rows][4 bytes], so that one 64-byte load feeds 16
 * vpdpbusd, one per query of a group of 16 whose 4 code bytes are broadcast
 * (chrys_screen_dots_vnni): 16 rows' sums per register, no reduction across lanes.
 *
 * The codes live for one chrys_merger_merge call (block_work): all rows are coded at the first
 * block that uses the screen; later blocks recode the entries the previous block changed and
 * code the new ones. A block that does not use it drops them (coded again when next used).
 */
#include <math.h>
#include <stdatomic.h>

#include "kernels/dist.h"
#include "merge.h"

#define SCREEN_TILE 8    /* panels (128 rows, 128 KB at 1024-d) scanned by all of a chunk's queries while in cache */
#define SCREEN_CHUNK 32  /* queries scanned together: two groups of 16 */

static int screen_mode = -1; /* merge__test_screen: -1 automatic, 0 never, 1 whenever possible */

int merge__test_screen(int mode)
{
    screen_mode = mode;
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

void merge_screen_free(merge_screen *s)
{
    chrys_free_aligned(s->codes);
    chrys_free(s->scale);
    chrys_free(s->err);
    chrys_free(s->nhat);
    chrys_free(s->pb);
    memset(s, 0, sizeof *s);
}

/* Codes of one row (chrys_screen_code_ref's contract, at the active kernel level; any rounding to
 * codes would do: the error is measured, not assumed). */
static int64_t code_row(const float *x, uint32_t dim, uint8_t *out, size_t stride4, int unsigned_codes, double *scale,
                        double *err, double *nhat)
{
    return chrys_kernels_active()->screen_code(x, dim, out, stride4, unsigned_codes, scale, err, nhat);
}

/* Room for n rows: room rows when that is enough (merge_screen_sync), else grown geometrically. */
static int screen_reserve(merge_screen *s, uint32_t dim, size_t n, size_t room)
{
    size_t d4 = (dim + 3) / 4, panel = d4 * 64;
    if (n <= s->cap) return CHRYS_OK;
    size_t cap = ((room >= n ? room : chrys_grow_cap(s->cap, n, 1024)) + 15) & ~(size_t)15, bytes;
    if (chrys_mul_size(cap / 16, panel, &bytes)) return CHRYS_NOMEM;
    /* (room never used is never touched: a panel's rows past the coded ones hold whatever the
     * memory held, and the search takes only coded rows from a panel's dots) */
    uint8_t *c = chrys_realloc_aligned(s->codes, s->cap / 16 * panel, bytes);
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
    a = chrys_realloc(s->pb, cap / 16 * 4 * sizeof *a);
    if (!a) return CHRYS_NOMEM;
    s->pb = a;
    s->cap = cap;
    s->d4 = d4;
    return CHRYS_OK;
}

static void code_slot(merge_screen *s, const chrys_index *ix, size_t v)
{
    uint8_t *p = s->codes + (v / 16) * s->d4 * 64 + (v % 16) * 4;
    code_row(ix->vecs + v * ix->dim, ix->dim, p, 64, 1, &s->scale[v], &s->err[v], &s->nhat[v]);
}

/* A panel's extremes (of its coded rows): a whole panel is passed over for a query when even
 * its best possible row could not reach the query's k best (screen_range). */
static void panel_bounds(merge_screen *s, size_t p, size_t n)
{
    double smin = INFINITY, smax = 0, emax = 0, hmax = 0;
    for (size_t v = p * 16; v < p * 16 + 16 && v < n; v++) {
        smin = fmin(smin, s->scale[v]);
        smax = fmax(smax, s->scale[v]);
        emax = fmax(emax, s->err[v]);
        hmax = fmax(hmax, s->nhat[v]);
    }
    s->pb[4 * p] = smin, s->pb[4 * p + 1] = smax, s->pb[4 * p + 2] = emax, s->pb[4 * p + 3] = hmax;
}

int merge_screen_sync(merge_screen *s, const chrys_index *ix, const uint64_t *changed, size_t n_changed, size_t room)
{
    size_t old = s->n;
    int rc = screen_reserve(s, ix->dim, ix->n, room);
    if (rc) return rc;
    for (size_t j = 0; j < n_changed && old; j++) { /* rows merged into since they were coded */
        uint32_t v = idmap_get(&ix->map, changed[j]);
        if (v != CHRYS_NO_SLOT && v < old) {
            code_slot(s, ix, v);
            panel_bounds(s, v / 16, old);
        }
    }
    for (size_t v = old; v < ix->n; v++) code_slot(s, ix, v);
    for (size_t p = old / 16; p * 16 < ix->n; p++) panel_bounds(s, p, ix->n);
    s->n = ix->n;
    return CHRYS_OK;
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
    double s, e, qn, margin; /* scale, |error|, |q|, dot_f64's rounding */
    double floor;     /* rows scoring below it are not wanted */
    int64_t sum;      /* sum of the codes (the kernel's unsigned offset: 128 * sum) */
    double *lo;       /* k: min-heap of the k largest lower bounds */
    size_t nlo;
    cand *cs;         /* rows whose upper bound reached the k-th lower bound when seen */
    size_t ncs, cap;
    int oom;
} qstate;

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

/* One item: chunk it / nparts of the queries against part it % nparts of the panels. */
static void screen_item(screen_job *j, size_t it, int8_t *codes, int32_t *out, ranked **buf, size_t *bufcap,
                        double *tmp)
{
    const merge_screen *s = j->s;
    const chrys_index *ix = j->ix;
    size_t dim = ix->dim, d4 = s->d4, n = s->n, k = j->k, np = (n + 15) / 16;
    size_t c = it / j->nparts, part = it % j->nparts, q0 = c * SCREEN_CHUNK;
    size_t nq = j->nq - q0 < SCREEN_CHUNK ? j->nq - q0 : SCREEN_CHUNK;
    size_t pa = np * part / j->nparts, pe = np * (part + 1) / j->nparts;
    void (*dots)(const uint8_t *, size_t, const int8_t *, size_t, int32_t *) =
        chrys_kernels_active()->dot_u8i8 == chrys_dot_u8i8_vnni ? chrys_screen_dots_vnni : chrys_screen_dots_ref;
    qstate *st = j->st + it * SCREEN_CHUNK;
    memset(codes, 0, (size_t)SCREEN_CHUNK * d4 * 4); /* queries past nq, and every tail, code 0 */
    for (size_t i = 0; i < nq; i++) {
        qstate *t = &st[i];
        const float *q = j->q + (q0 + i) * dim;
        double nh;
        t->c = codes + i * d4 * 4;
        t->sum = code_row(q, (uint32_t)dim, (uint8_t *)t->c, 4, 0, &t->s, &t->e, &nh);
        t->qn = sqrt(vec_dot_f64(q, q, dim)) * (1 + 1e-9);
        /* dot_f64 of unit-length rows is within dim * 2^-53 of the true q.x (products exact,
         * each partial sum rounded once); four times that, and the estimate's own rounding */
        t->margin = ((double)dim + 4) * 2.3e-16 * (t->qn + 1) * 2;
        t->floor = j->floor;
        t->lo = j->lo + (it * SCREEN_CHUNK + i) * k;
        t->nlo = 0;
        t->ncs = 0;
    }
    for (size_t p0 = pa; p0 < pe; p0 += SCREEN_TILE) {
        size_t p1 = p0 + SCREEN_TILE < pe ? p0 + SCREEN_TILE : pe;
        for (size_t g = 0; g < nq; g += 16)
            for (size_t p = p0; p < p1; p++) {
                dots(s->codes + p * d4 * 64, d4, codes + g * d4 * 4, d4 * 4, out);
                size_t rows = n - p * 16 < 16 ? n - p * 16 : 16;
                const double *pb = s->pb + 4 * p;
                for (size_t i = g; i < nq && i < g + 16; i++) {
                    qstate *t = &st[i];
                    const int32_t *o = out + (i - g) * 16;
                    double L = bar(t, k);
                    if (L > -INFINITY) { /* the panel's best upper bound below L: nothing to take */
                        int32_t dmax = o[0];
                        for (size_t r = 1; r < rows; r++) dmax = o[r] > dmax ? o[r] : dmax;
                        double dm = (double)((int64_t)dmax - 128 * t->sum);
                        double hi = t->s * (dm >= 0 ? pb[1] : pb[0]) * dm + t->qn * pb[2] + t->e * pb[3] + t->margin;
                        if (hi + fabs(hi) * 1e-12 < L) continue;
                    }
                    for (size_t r = 0; r < rows; r++) take(t, s, k, (uint32_t)(p * 16 + r), o[r]);
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
    size_t d4 = j->s->d4;
    int8_t *codes = chrys_malloc((size_t)SCREEN_CHUNK * d4 * 4);
    double *tmp = chrys_malloc(j->nparts * j->k * sizeof *tmp);
    int32_t out[16 * 16];
    size_t bufcap = 256;
    ranked *buf = chrys_malloc(bufcap * sizeof *buf);
    if (!codes || !tmp || !buf) atomic_store(&j->rc, CHRYS_NOMEM);
    else
        for (size_t it = b; it < e && !atomic_load(&j->rc); it++) screen_item(j, it, codes, out, &buf, &bufcap, tmp);
    chrys_free(codes);
    chrys_free(tmp);
    chrys_free(buf);
}

int merge_screen_search(const merge_screen *s, const chrys_index *ix, size_t nq, const float *q, size_t k,
                        double floor, unsigned nt, uint64_t *ids, double *scores)
{
    if (s->n != ix->n || k == 0 || isnan(floor)) return CHRYS_INVALID;
    if (!nt) nt = chrys_online_cpus();
    size_t chunks = (nq + SCREEN_CHUNK - 1) / SCREEN_CHUNK, np = (s->n + 15) / 16;
    /* fewer than four chunks a core: each chunk's panels in one part per core (at least 64
     * panels, 1,024 rows, a part) */
    size_t nparts = nt > 1 && chunks < 4 * (size_t)nt ? nt : 1;
    while (nparts > 1 && np / nparts < 64) nparts--;
    size_t items = chunks * nparts, n_st;
    screen_job j = {s, ix, q, nq, k, floor, ids, scores, nparts, NULL, NULL, NULL, CHRYS_OK};
    if (chrys_mul_size(items, SCREEN_CHUNK, &n_st)) return CHRYS_NOMEM;
    j.st = chrys_calloc(n_st, sizeof *j.st);
    j.lo = chrys_malloc(n_st * k * sizeof *j.lo);
    j.done = chrys_malloc(chunks * sizeof *j.done);
    int rc = CHRYS_NOMEM;
    if (j.st && j.lo && j.done) {
        for (size_t c = 0; c < chunks; c++) atomic_init(&j.done[c], 0);
        /* work items: (chunk, part) pairs, taken one at a time */
        chrys_parallel_chunks(nt, items, 1, screen_range, &j);
        rc = atomic_load(&j.rc);
    }
    if (j.st)
        for (size_t i = 0; i < n_st; i++) chrys_free(j.st[i].cs);
    chrys_free(j.st);
    chrys_free(j.lo);
    chrys_free(j.done);
    return rc;
}

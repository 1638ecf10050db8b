/*
 * membw.c: diagnostic for the single-query Flat scan: how fast can one query stream a
 * 200,000 x 1024 float32 base from DRAM, and what in the scan costs bandwidth?
 *
 * Not part of the build (the Makefile is not ours to change); build and run by hand:
 *   cc -std=c11 -D_GNU_SOURCE -O2 -mavx512f -mfma -Iinclude -Isrc bench/membw.c \
 *      build/release/libchrysalis.a -lopenblas -lcjson -lm -pthread -o build/release/membw
 *   build/release/membw [--n 200000] [--d 1024] [--reps 7] [--threads 1|2]
 *
 * Each variant scans the whole base once per rep (one query, like a 1-query search); the variants
 * take turns within each rep (this VM's bandwidth drifts, so only same-rep comparisons are fair),
 * and the median and best GB/s over reps are reported, on 4 KiB pages and on memory madvise(MADV_HUGEPAGE)d (THP is in
 * "madvise" mode here, so the library's plain malloc gets 4 KiB pages):
 *   read      : plain AVX-512 sum of every float (the read-bandwidth ceiling)
 *   read+pf   : the same with software prefetch 4 KiB ahead
 *   read4     : four far-apart streams (quarters of the range) read together
 *   lib       : the library's active dot_rows kernel over 128-row blocks (what scan_rows does,
 *               without the top-k pushes); four rows interleaved up to commit 60f4b95, one row
 *               at a time since d29410d (the change this diagnostic motivated)
 *   lib+pf    : the same, with software prefetch of the next block issued row by row
 *   rows4+pf  : the library's 4-row kernel plus, in its inner loop, prefetches of the same offsets
 *               8 rows ahead (a proposed change to dot_rows_avx512)
 *   row1      : one row at a time, 4 accumulators, no software prefetch
 *   row1+pf   : one row at a time, 4 accumulators, prefetching 2 KiB .. 8 rows ahead
 *   search    : chrys_index_search with nq=1 on an index holding the same rows (in the library's
 *               own allocation: madvise(MADV_HUGEPAGE) since d29410d)
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "chrysalis.h"
#include "kernels/dist.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct task {
    int kind;
    const float *x, *q;
    size_t r0, r1, d;
    float *out;
    double sink;
} task;

enum { K_READ, K_READPF, K_READ4, K_LIB, K_LIBPF, K_ROWS4PF, K_ROW1, K_ROW1PF, K_N };
static const char *KNAME[K_N] = {"read", "read+pf", "read4", "lib", "lib+pf", "rows4+pf", "row1", "row1+pf"};

static float row_dot_pf(const float *q, const float *x, size_t d, const char *pf, size_t pf_len)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t p = 0;
    for (size_t i = 0; i < d; i += 64) {
        if (p < pf_len) {
            _mm_prefetch(pf + p, _MM_HINT_T0);
            _mm_prefetch(pf + p + 64, _MM_HINT_T0);
            _mm_prefetch(pf + p + 128, _MM_HINT_T0);
            _mm_prefetch(pf + p + 192, _MM_HINT_T0);
            p += 256;
        }
        a0 = _mm512_fmadd_ps(_mm512_load_ps(q + i), _mm512_load_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_load_ps(q + i + 16), _mm512_load_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_load_ps(q + i + 32), _mm512_load_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_load_ps(q + i + 48), _mm512_load_ps(x + i + 48), a3);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* The library's 4-row AVX-512 dot_rows with, in the inner loop, a prefetch of the same offset
 * PF_ROWS rows ahead for each of the 4 rows (so 4 prefetch streams run PF_ROWS*4 KiB ahead). */
#define PF_ROWS 8
static void rows4_pf(const float *q, const float *x, size_t n_rows, size_t n_total_after, size_t dim,
                     float *out)
{
    for (size_t r = 0; r + 4 <= n_rows; r += 4) {
        const float *x0 = x + r * dim, *x1 = x0 + dim, *x2 = x1 + dim, *x3 = x2 + dim;
        int pf = r + PF_ROWS + 4 <= n_total_after;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (size_t i = 0; i < dim; i += 32) {
            if (pf) {
                _mm_prefetch((const char *)(x0 + PF_ROWS * dim + i), _MM_HINT_T0);
                _mm_prefetch((const char *)(x1 + PF_ROWS * dim + i), _MM_HINT_T0);
                _mm_prefetch((const char *)(x2 + PF_ROWS * dim + i), _MM_HINT_T0);
                _mm_prefetch((const char *)(x3 + PF_ROWS * dim + i), _MM_HINT_T0);
                _mm_prefetch((const char *)(x0 + PF_ROWS * dim + i + 16), _MM_HINT_T0);
                _mm_prefetch((const char *)(x1 + PF_ROWS * dim + i + 16), _MM_HINT_T0);
                _mm_prefetch((const char *)(x2 + PF_ROWS * dim + i + 16), _MM_HINT_T0);
                _mm_prefetch((const char *)(x3 + PF_ROWS * dim + i + 16), _MM_HINT_T0);
            }
            __m512 q0 = _mm512_loadu_ps(q + i), q1 = _mm512_loadu_ps(q + i + 16);
            a0 = _mm512_fmadd_ps(q0, _mm512_loadu_ps(x0 + i), a0);
            a1 = _mm512_fmadd_ps(q0, _mm512_loadu_ps(x1 + i), a1);
            a2 = _mm512_fmadd_ps(q0, _mm512_loadu_ps(x2 + i), a2);
            a3 = _mm512_fmadd_ps(q0, _mm512_loadu_ps(x3 + i), a3);
            b0 = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x0 + i + 16), b0);
            b1 = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x1 + i + 16), b1);
            b2 = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x2 + i + 16), b2);
            b3 = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x3 + i + 16), b3);
        }
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
        out[r + 1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
        out[r + 2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
        out[r + 3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
    }
}

static void *run_task(void *arg)
{
    task *t = arg;
    const chrys_kernels *kr = chrys_kernels_active();
    size_t d = t->d;
    double s = 0;
    if (t->kind == K_READ) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *p = t->x + t->r0 * d, *e = t->x + t->r1 * d;
        for (; p < e; p += 64) {
            a0 = _mm512_add_ps(a0, _mm512_load_ps(p));
            a1 = _mm512_add_ps(a1, _mm512_load_ps(p + 16));
            a2 = _mm512_add_ps(a2, _mm512_load_ps(p + 32));
            a3 = _mm512_add_ps(a3, _mm512_load_ps(p + 48));
        }
        s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    } else if (t->kind == K_READPF) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *p = t->x + t->r0 * d, *e = t->x + t->r1 * d;
        for (; p < e; p += 64) {
            _mm_prefetch((const char *)(p + 1024), _MM_HINT_T0); /* 4 KiB ahead */
            _mm_prefetch((const char *)(p + 1024 + 16), _MM_HINT_T0);
            _mm_prefetch((const char *)(p + 1024 + 32), _MM_HINT_T0);
            _mm_prefetch((const char *)(p + 1024 + 48), _MM_HINT_T0);
            a0 = _mm512_add_ps(a0, _mm512_load_ps(p));
            a1 = _mm512_add_ps(a1, _mm512_load_ps(p + 16));
            a2 = _mm512_add_ps(a2, _mm512_load_ps(p + 32));
            a3 = _mm512_add_ps(a3, _mm512_load_ps(p + 48));
        }
        s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    } else if (t->kind == K_READ4) {
        /* four far-apart streams (quarters of the range) consumed together */
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        size_t len = (t->r1 - t->r0) * d / 4 / 16 * 16;
        const float *p0 = t->x + t->r0 * d, *p1 = p0 + len, *p2 = p1 + len, *p3 = p2 + len;
        for (size_t i = 0; i < len; i += 16) {
            a0 = _mm512_add_ps(a0, _mm512_load_ps(p0 + i));
            a1 = _mm512_add_ps(a1, _mm512_load_ps(p1 + i));
            a2 = _mm512_add_ps(a2, _mm512_load_ps(p2 + i));
            a3 = _mm512_add_ps(a3, _mm512_load_ps(p3 + i));
        }
        s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    } else if (t->kind == K_LIB || t->kind == K_LIBPF) {
        for (size_t r = t->r0; r < t->r1; r += 128) {
            size_t nr = t->r1 - r < 128 ? t->r1 - r : 128;
            if (t->kind == K_LIBPF) {
                /* prefetch the next block's first 2 KiB of each of 16 rows (cheap hint) */
                size_t nxt = r + 128;
                for (size_t j = 0; j < 16 && nxt + j < t->r1; j++)
                    _mm_prefetch((const char *)(t->x + (nxt + j) * d), _MM_HINT_T1);
            }
            kr->dot_rows(t->q, t->x + r * d, nr, d, t->out);
            s += t->out[0];
        }
    } else if (t->kind == K_ROWS4PF) {
        for (size_t r = t->r0; r < t->r1; r += 128) {
            size_t nr = t->r1 - r < 128 ? t->r1 - r : 128;
            rows4_pf(t->q, t->x + r * d, nr, t->r1 - r, d, t->out);
            s += t->out[0];
        }
    } else {
        size_t rowb = d * sizeof(float), ahead = 8 * rowb;
        const char *base = (const char *)t->x, *end = (const char *)(t->x + t->r1 * d);
        for (size_t r = t->r0; r < t->r1; r++) {
            const char *pf = base + r * rowb + ahead;
            size_t len = pf < end ? (size_t)(end - pf) : 0;
            if (len > rowb) len = rowb;
            if (t->kind == K_ROW1) len = 0;
            s += row_dot_pf(t->q, t->x + r * d, d, pf, len);
        }
    }
    t->sink = s;
    return NULL;
}

static double scan(int kind, const float *x, const float *q, size_t n, size_t d, int nt, float *outs)
{
    task t[2];
    pthread_t tid;
    for (int w = 0; w < nt; w++)
        t[w] = (task){kind, x, q, n * w / nt, n * (w + 1) / nt, d, outs + w * 128, 0};
    double t0 = now();
    if (nt == 2) pthread_create(&tid, NULL, run_task, &t[1]);
    run_task(&t[0]);
    if (nt == 2) pthread_join(tid, NULL);
    return now() - t0;
}

int main(int argc, char **argv)
{
    size_t n = 200000, d = 1024;
    int reps = 7, nt = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--n")) n = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--d")) d = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) nt = atoi(argv[i + 1]) == 2 ? 2 : 1;
    }
    if (d % 64) {
        fprintf(stderr, "membw: d must be a multiple of 64\n");
        return 2;
    }
    size_t bytes = n * d * sizeof(float);
    printf("membw: %zu x %zu float32 = %.1f MB, %d thread(s), SIMD %s, %d reps (median / best GB/s)\n", n, d,
           bytes / 1e6, nt, chrys_simd_name(), reps);
    float *q = aligned_alloc(64, d * sizeof(float)), outs[256];
    srand(1);
    for (size_t i = 0; i < d; i++) q[i] = (float)rand() / RAND_MAX - 0.5f;
    double *tm = malloc(reps * sizeof *tm), *tk = malloc((size_t)K_N * reps * sizeof *tk);
    for (int huge = 0; huge <= 1; huge++) {
        size_t al = 2u << 20, sz = (bytes + al - 1) / al * al;
        float *x = aligned_alloc(al, sz);
        if (!x) return 1;
        if (huge) madvise(x, sz, MADV_HUGEPAGE);
        uint32_t lcg = 12345u; /* random rows: no near-ties, so search never widens its pool */
        for (size_t i = 0; i < n * d; i++) {
            lcg = lcg * 1664525u + 1013904223u;
            x[i] = (float)(lcg >> 8) * (1.0f / 16777216.0f) - 0.5f;
        }
        for (int k = 0; k < K_N; k++) scan(k, x, q, n, d, nt, outs); /* warm */
        for (int r = 0; r < reps; r++)
            for (int k = 0; k < K_N; k++) tk[k * reps + r] = scan(k, x, q, n, d, nt, outs);
        for (int k = 0; k < K_N; k++) {
            double *t = tk + k * reps;
            qsort(t, reps, sizeof *t, cmpd);
            printf("  %-9s %-10s %6.2f ms median  %6.1f GB/s median  %6.1f GB/s best\n", KNAME[k],
                   huge ? "2M (THP)" : "4K pages", t[reps / 2] * 1e3, bytes / t[reps / 2] / 1e9,
                   bytes / t[0] / 1e9);
        }
        if (!huge) {
            /* the library itself, same rows */
            chrys_index_opts io;
            chrys_index_opts_init(&io);
            io.dim = (uint32_t)d;
            io.metric = CHRYS_METRIC_IP;
            chrys_index *ix;
            uint64_t *ids = malloc(n * sizeof *ids);
            for (size_t i = 0; i < n; i++) ids[i] = i;
            if (chrys_index_new(&io, &ix, NULL) || chrys_index_add(ix, n, ids, x, NULL)) return 1;
            free(ids);
            chrys_search_opts so;
            chrys_search_opts_init(&so);
            so.n_threads = (uint32_t)nt;
            chrys_hit hits[10];
            chrys_index_search(ix, 1, q, &so, hits);
            for (int r = 0; r < reps; r++) {
                double t0 = now();
                chrys_index_search(ix, 1, q, &so, hits);
                tm[r] = now() - t0;
            }
            qsort(tm, reps, sizeof *tm, cmpd);
            printf("  %-9s %-10s %6.2f ms median  %6.1f GB/s median  %6.1f GB/s best\n", "search", "lib alloc",
                   tm[reps / 2] * 1e3, bytes / tm[reps / 2] / 1e9, bytes / tm[0] / 1e9);
            chrys_index_free(ix);
        }
        free(x);
    }
    free(q);
    free(tm);
    free(tk);
    return 0;
}

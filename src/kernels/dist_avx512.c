/*
 * dist_avx512.c: AVX-512F kernels. Compiled with -mavx512f -mavx512bw -mavx512vl -mfma only;
 * reached through the dispatch table after CPUID/XGETBV confirmed ZMM state is enabled.
 *
 * Tails use a lane mask, so loads never fault past the end.
 * Row kernels stream one row after another (see dot_rows_avx512).
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "dist.h"

static inline __mmask16 tail_mask16(size_t r) { return (__mmask16)((1u << r) - 1u); }

static float dot_avx512(const float *a, const float *b, size_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        __mmask16 m = tail_mask16(n - i);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static float l2sq_avx512(const float *a, const float *b, size_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
        __m512 d2 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32));
        __m512 d3 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48));
        s0 = _mm512_fmadd_ps(d0, d0, s0);
        s1 = _mm512_fmadd_ps(d1, d1, s1);
        s2 = _mm512_fmadd_ps(d2, d2, s2);
        s3 = _mm512_fmadd_ps(d3, d3, s3);
    }
    for (; i + 16 <= n; i += 16) {
        __m512 d = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        s0 = _mm512_fmadd_ps(d, d, s0);
    }
    if (i < n) {
        __mmask16 m = tail_mask16(n - i);
        __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
        s1 = _mm512_fmadd_ps(d, d, s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

/* One row at a time: measured on 200k x 1024 (bench/membw.c), streaming rows one after another
 * with four accumulators reads memory about 25% faster than interleaving four rows. */
static void dot_rows_avx512(const float *q, const float *x, size_t n_rows, size_t dim, float *out)
{
    for (size_t r = 0; r < n_rows; r++) out[r] = dot_avx512(q, x + r * dim, dim);
}

static void l2sq_rows_avx512(const float *q, const float *x, size_t n_rows, size_t dim, float *out)
{
    for (size_t r = 0; r < n_rows; r++) out[r] = l2sq_avx512(q, x + r * dim, dim);
}

/* Double-precision accumulation: 8 floats widened per step, two accumulators, masked tail. */
static double dot_f64_avx512(const float *a, const float *b, size_t n)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = s0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(a + i)), _mm512_cvtps_pd(_mm256_loadu_ps(b + i)), s0);
        s1 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(a + i + 8)), _mm512_cvtps_pd(_mm256_loadu_ps(b + i + 8)), s1);
    }
    for (; i < n; i += 8) {
        __mmask8 m = n - i >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (n - i)) - 1u);
        s0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, a + i)),
                             _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, b + i)), s0);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

static double l2sq_f64_avx512(const float *a, const float *b, size_t n)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = s0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512d d0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(a + i)), _mm512_cvtps_pd(_mm256_loadu_ps(b + i)));
        __m512d d1 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(a + i + 8)), _mm512_cvtps_pd(_mm256_loadu_ps(b + i + 8)));
        s0 = _mm512_fmadd_pd(d0, d0, s0);
        s1 = _mm512_fmadd_pd(d1, d1, s1);
    }
    for (; i < n; i += 8) {
        __mmask8 m = n - i >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (n - i)) - 1u);
        __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, a + i)),
                                  _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, b + i)));
        s0 = _mm512_fmadd_pd(d, d, s0);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

/* Four rows at once, each summed exactly as the one-row kernels above: the same two running sums
 * per row over 16 floats at a step, the same masked tail into the first, the same reduction.
 * Named accumulators (an array of them was kept in memory by the compiler: a store-forwarding
 * chain per step). */
#define F64X4_STEP(OP, lo, hi, off)                                                                  \
    do {                                                                                             \
        a0 = OP(q0, x0 + (off), a0, lo), b0 = OP(q1, x0 + (off) + 8, b0, hi);                        \
        a1 = OP(q0, x1 + (off), a1, lo), b1 = OP(q1, x1 + (off) + 8, b1, hi);                        \
        a2 = OP(q0, x2 + (off), a2, lo), b2 = OP(q1, x2 + (off) + 8, b2, hi);                        \
        a3 = OP(q0, x3 + (off), a3, lo), b3 = OP(q1, x3 + (off) + 8, b3, hi);                        \
    } while (0)
static inline __m512d dot_acc(__m512d q, const float *x, __m512d s, __mmask8 m)
{
    return _mm512_fmadd_pd(q, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, x)), s);
}
static inline __m512d l2_acc(__m512d q, const float *x, __m512d s, __mmask8 m)
{
    __m512d d = _mm512_sub_pd(q, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, x)));
    return _mm512_fmadd_pd(d, d, s);
}
#define F64X4(NAME, OP)                                                                              \
    static void NAME(const float *q, const float *const x[4], size_t n, double out[4])               \
    {                                                                                                \
        const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];                                 \
        __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0; \
        size_t i = 0;                                                                                \
        for (; i + 16 <= n; i += 16) {                                                               \
            __m512d q0 = _mm512_cvtps_pd(_mm256_loadu_ps(q + i)), q1 = _mm512_cvtps_pd(_mm256_loadu_ps(q + i + 8)); \
            F64X4_STEP(OP, 0xff, 0xff, i);                                                           \
        }                                                                                            \
        for (; i < n; i += 8) {                                                                      \
            __mmask8 m = n - i >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (n - i)) - 1u);            \
            __m512d q0 = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, q + i));                           \
            a0 = OP(q0, x0 + i, a0, m), a1 = OP(q0, x1 + i, a1, m);                                  \
            a2 = OP(q0, x2 + i, a2, m), a3 = OP(q0, x3 + i, a3, m);                                  \
        }                                                                                            \
        out[0] = _mm512_reduce_add_pd(_mm512_add_pd(a0, b0));                                        \
        out[1] = _mm512_reduce_add_pd(_mm512_add_pd(a1, b1));                                        \
        out[2] = _mm512_reduce_add_pd(_mm512_add_pd(a2, b2));                                        \
        out[3] = _mm512_reduce_add_pd(_mm512_add_pd(a3, b3));                                        \
    }
F64X4(dot_f64_x4_avx512, dot_acc)
F64X4(l2sq_f64_x4_avx512, l2_acc)

/* ---- dot_block: a register-blocked small GEMM (Q X^T) ----
 * A 4 x 4 tile of (query, row) pairs keeps 16 zmm accumulators; each 16-float step loads four
 * query chunks and four row chunks (8 loads) for 16 FMAs, so the FMA units, not the loads, set
 * the pace. Rows are taken four at a time against every query of the block, so the row tile
 * (4 x dim floats) stays in L1 while the query block streams from L2. With OPENBLAS_CORETYPE
 * pinned to Haswell (AVX2), OpenBLAS sgemm uses half of this machine's vector width; this kernel
 * measured about 1.6-1.9x its throughput on 1024-d blocks (bench/README.md). */
static inline void tile4x4(const float *q, const float *x, size_t dim, size_t qs, size_t xs, float *out,
                           size_t ldo, size_t mq, size_t mx)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00,
           c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    const float *q0 = q, *q1 = q + (mq > 1 ? qs : 0), *q2 = q + (mq > 2 ? 2 * qs : 0), *q3 = q + (mq > 3 ? 3 * qs : 0);
    const float *x0 = x, *x1 = x + (mx > 1 ? xs : 0), *x2 = x + (mx > 2 ? 2 * xs : 0), *x3 = x + (mx > 3 ? 3 * xs : 0);
#define CHRYS_TILE_STEP(LOAD)                                                                   \
    {                                                                                           \
        __m512 a0 = LOAD(q0 + i), a1 = LOAD(q1 + i), a2 = LOAD(q2 + i), a3 = LOAD(q3 + i);      \
        __m512 b = LOAD(x0 + i);                                                                \
        c00 = _mm512_fmadd_ps(a0, b, c00);                                                      \
        c10 = _mm512_fmadd_ps(a1, b, c10);                                                      \
        c20 = _mm512_fmadd_ps(a2, b, c20);                                                      \
        c30 = _mm512_fmadd_ps(a3, b, c30);                                                      \
        b = LOAD(x1 + i);                                                                       \
        c01 = _mm512_fmadd_ps(a0, b, c01);                                                      \
        c11 = _mm512_fmadd_ps(a1, b, c11);                                                      \
        c21 = _mm512_fmadd_ps(a2, b, c21);                                                      \
        c31 = _mm512_fmadd_ps(a3, b, c31);                                                      \
        b = LOAD(x2 + i);                                                                       \
        c02 = _mm512_fmadd_ps(a0, b, c02);                                                      \
        c12 = _mm512_fmadd_ps(a1, b, c12);                                                      \
        c22 = _mm512_fmadd_ps(a2, b, c22);                                                      \
        c32 = _mm512_fmadd_ps(a3, b, c32);                                                      \
        b = LOAD(x3 + i);                                                                       \
        c03 = _mm512_fmadd_ps(a0, b, c03);                                                      \
        c13 = _mm512_fmadd_ps(a1, b, c13);                                                      \
        c23 = _mm512_fmadd_ps(a2, b, c23);                                                      \
        c33 = _mm512_fmadd_ps(a3, b, c33);                                                      \
    }
    size_t i = 0;
    for (; i + 16 <= dim; i += 16) CHRYS_TILE_STEP(_mm512_loadu_ps)
    if (i < dim) {
        __mmask16 m = tail_mask16(dim - i);
#define CHRYS_MASKED_LOAD(p) _mm512_maskz_loadu_ps(m, (p))
        CHRYS_TILE_STEP(CHRYS_MASKED_LOAD)
#undef CHRYS_MASKED_LOAD
    }
#undef CHRYS_TILE_STEP
    float r[4][4];
    r[0][0] = _mm512_reduce_add_ps(c00), r[0][1] = _mm512_reduce_add_ps(c01);
    r[0][2] = _mm512_reduce_add_ps(c02), r[0][3] = _mm512_reduce_add_ps(c03);
    r[1][0] = _mm512_reduce_add_ps(c10), r[1][1] = _mm512_reduce_add_ps(c11);
    r[1][2] = _mm512_reduce_add_ps(c12), r[1][3] = _mm512_reduce_add_ps(c13);
    r[2][0] = _mm512_reduce_add_ps(c20), r[2][1] = _mm512_reduce_add_ps(c21);
    r[2][2] = _mm512_reduce_add_ps(c22), r[2][3] = _mm512_reduce_add_ps(c23);
    r[3][0] = _mm512_reduce_add_ps(c30), r[3][1] = _mm512_reduce_add_ps(c31);
    r[3][2] = _mm512_reduce_add_ps(c32), r[3][3] = _mm512_reduce_add_ps(c33);
    for (size_t a = 0; a < mq; a++)
        for (size_t c = 0; c < mx; c++) out[a * ldo + c] = r[a][c];
}

static void dot_block_avx512(const float *q, size_t nq, const float *x, size_t nx, size_t dim, float *out,
                             size_t ldo)
{
    /* Queries in groups of about 192 KiB (they stay in L2 while the rows stream past). */
    size_t qg = (192u << 10) / (dim * sizeof(float));
    qg = qg < 4 ? 4 : qg & ~(size_t)3;
    for (size_t i0 = 0; i0 < nq; i0 += qg) {
        size_t nqg = nq - i0 < qg ? nq - i0 : qg;
        for (size_t j = 0; j < nx; j += 4) {
            size_t mx = nx - j < 4 ? nx - j : 4;
            for (size_t i = i0; i < i0 + nqg; i += 4) {
                size_t mq = i0 + nqg - i < 4 ? i0 + nqg - i : 4;
                tile4x4(q + i * dim, x + j * dim, dim, dim, dim, out + i * ldo + j, ldo, mq, mx);
            }
        }
    }
}

/* SQ8 scan: 16 codes widened to floats per step, masked tail. */
static float dot_u8_avx512(const float *w, const uint8_t *c, size_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 f0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(c + i))));
        __m512 f1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(c + i + 16))));
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), f0, s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), f1, s1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : tail_mask16(n - i);
        __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, c + i)));
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + i), f, s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

/* u8 x s8 without VNNI: 32 codes widened to 16 bits per step, vpmaddwd into 32 bits. */
static int32_t dot_u8i8_avx512(const uint8_t *c, const int8_t *w, size_t n)
{
    __m512i acc = _mm512_setzero_si512();
    size_t i = 0;
    for (; i < n; i += 32) {
        __mmask32 m = n - i >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << (n - i)) - 1);
        __m512i a = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, c + i));
        __m512i b = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, w + i));
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
    }
    return _mm512_reduce_add_epi32(acc);
}

static void dot_x4_avx512(const float *q, const float *const x[4], size_t n, float out[4])
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 a = _mm512_loadu_ps(q + i);
        s0 = _mm512_fmadd_ps(a, _mm512_loadu_ps(x[0] + i), s0);
        s1 = _mm512_fmadd_ps(a, _mm512_loadu_ps(x[1] + i), s1);
        s2 = _mm512_fmadd_ps(a, _mm512_loadu_ps(x[2] + i), s2);
        s3 = _mm512_fmadd_ps(a, _mm512_loadu_ps(x[3] + i), s3);
    }
    if (i < n) {
        __mmask16 m = tail_mask16(n - i);
        __m512 a = _mm512_maskz_loadu_ps(m, q + i);
        s0 = _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(m, x[0] + i), s0);
        s1 = _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(m, x[1] + i), s1);
        s2 = _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(m, x[2] + i), s2);
        s3 = _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(m, x[3] + i), s3);
    }
    out[0] = _mm512_reduce_add_ps(s0), out[1] = _mm512_reduce_add_ps(s1);
    out[2] = _mm512_reduce_add_ps(s2), out[3] = _mm512_reduce_add_ps(s3);
}

static void l2sq_x4_avx512(const float *q, const float *const x[4], size_t n, float out[4])
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : tail_mask16(n - i);
        __m512 a = _mm512_maskz_loadu_ps(m, q + i);
        __m512 d0 = _mm512_sub_ps(a, _mm512_maskz_loadu_ps(m, x[0] + i));
        __m512 d1 = _mm512_sub_ps(a, _mm512_maskz_loadu_ps(m, x[1] + i));
        __m512 d2 = _mm512_sub_ps(a, _mm512_maskz_loadu_ps(m, x[2] + i));
        __m512 d3 = _mm512_sub_ps(a, _mm512_maskz_loadu_ps(m, x[3] + i));
        s0 = _mm512_fmadd_ps(d0, d0, s0);
        s1 = _mm512_fmadd_ps(d1, d1, s1);
        s2 = _mm512_fmadd_ps(d2, d2, s2);
        s3 = _mm512_fmadd_ps(d3, d3, s3);
    }
    out[0] = _mm512_reduce_add_ps(s0), out[1] = _mm512_reduce_add_ps(s1);
    out[2] = _mm512_reduce_add_ps(s2), out[3] = _mm512_reduce_add_ps(s3);
}

static void dot_u8i8_x4_avx512(const uint8_t *const c[4], const int8_t *w, size_t n, int32_t out[4])
{
    for (int r = 0; r < 4; r++) out[r] = dot_u8i8_avx512(c[r], w, n);
}

/* chrys_sumsq_ref in two registers of eight sums (a square is exact in double, so the FMA's one
 * rounding is the reference's add) */
static double sumsq_avx512(const float *v, size_t n)
{
    __m512d a0 = _mm512_setzero_pd(), a1 = a0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512d x0 = _mm512_cvtps_pd(_mm256_loadu_ps(v + i)), x1 = _mm512_cvtps_pd(_mm256_loadu_ps(v + i + 8));
        a0 = _mm512_fmadd_pd(x0, x0, a0);
        a1 = _mm512_fmadd_pd(x1, x1, a1);
    }
    double acc[16];
    _mm512_storeu_pd(acc, a0), _mm512_storeu_pd(acc + 8, a1);
    for (; i < n; i++) acc[i & 15] += (double)v[i] * v[i];
    return chrys_sumsq_total(acc);
}

/* chrys_mix_ref and chrys_mul_ref eight components a step: the same IEEE operations in the same
 * order (no FMA), so the same bits */
static void mix_avx512(float *out, const float *a, double wa, const float *b, double wb, size_t n)
{
    __m512d va = _mm512_set1_pd(wa), vb = _mm512_set1_pd(wb);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m512d x = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(a + i)), va);
        __m512d y = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(b + i)), vb);
        _mm256_storeu_ps(out + i, _mm512_cvtpd_ps(_mm512_add_pd(x, y)));
    }
    chrys_mix_ref(out + i, a + i, wa, b + i, wb, n - i);
}

static void mul_avx512(float *out, const float *v, double w, size_t n)
{
    __m512d vw = _mm512_set1_pd(w);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(v + i)), vw)));
    chrys_mul_ref(out + i, v + i, w, n - i);
}

static void scale_to_avx512(float *out, const float *v, size_t n, double norm)
{
    __m512d d = _mm512_set1_pd(norm);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm512_cvtpd_ps(_mm512_div_pd(_mm512_cvtps_pd(_mm256_loadu_ps(v + i)), d)));
    chrys_scale_to_ref(out + i, v + i, n - i, norm);
}

/* chrys_screen_code_ref, 16 components a step: the same codes (the same double product, rounded
 * to nearest even), the norms summed in 8 lanes. */
static int64_t screen_code_avx512(const float *x, uint32_t dim, uint8_t *out, size_t stride4, int unsigned_codes,
                                  double *scale, double *err, double *nhat)
{
    __m512 amax = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= dim; i += 16) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
    if (i < dim) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_maskz_loadu_ps(tail_mask16(dim - i), x + i)));
    float mx = _mm512_reduce_max_ps(amax);
    double s = mx > 0 ? (double)mx / 127.0 : 0, inv = mx > 0 ? 127.0 / (double)mx : 0;
    __m512d vinv = _mm512_set1_pd(inv), vs = _mm512_set1_pd(s), e2 = _mm512_setzero_pd(), h2 = e2;
    __m512i sum = _mm512_setzero_si512(), lo127 = _mm512_set1_epi32(-127), hi127 = _mm512_set1_epi32(127);
    size_t d4 = ((size_t)dim + 3) / 4;
    for (i = 0; i < dim; i += 16) {
        size_t left = dim - i;
        __mmask16 m = left >= 16 ? (__mmask16)0xffff : tail_mask16(left);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        __m512d xa = _mm512_cvtps_pd(_mm512_castps512_ps256(xv));
        __m512d xb = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(xv), 1)));
        __m256i ca = _mm512_cvt_roundpd_epi32(_mm512_mul_pd(xa, vinv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256i cb = _mm512_cvt_roundpd_epi32(_mm512_mul_pd(xb, vinv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512i c = _mm512_inserti64x4(_mm512_castsi256_si512(ca), cb, 1);
        c = _mm512_max_epi32(_mm512_min_epi32(c, hi127), lo127);
        __m512d va = _mm512_cvtepi32_pd(_mm512_castsi512_si256(c)), vb = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(c, 1));
        __m512d da = _mm512_sub_pd(xa, _mm512_mul_pd(vs, va)), db = _mm512_sub_pd(xb, _mm512_mul_pd(vs, vb));
        e2 = _mm512_add_pd(e2, _mm512_add_pd(_mm512_mul_pd(da, da), _mm512_mul_pd(db, db)));
        h2 = _mm512_add_pd(h2, _mm512_add_pd(_mm512_mul_pd(va, va), _mm512_mul_pd(vb, vb)));
        sum = _mm512_add_epi32(sum, c);
        __m128i b = _mm512_cvtepi32_epi8(c);
        if (unsigned_codes) b = _mm_xor_si128(b, _mm_set1_epi8((char)0x80));
        if (stride4 == 4) _mm_mask_storeu_epi8(out + i, m, b);
        else {
            uint32_t g4[4];
            _mm_storeu_si128((__m128i *)(void *)g4, b);
            /* four groups of 4 codes; a last partial group's padding bytes take the zero code,
             * which is what they hold */
            for (size_t g = 0; g < 4 && i / 4 + g < d4; g++) memcpy(out + (i / 4 + g) * stride4, &g4[g], 4);
        }
    }
    *scale = s;
    *err = sqrt(_mm512_reduce_add_pd(e2)) * (1 + 1e-9);
    *nhat = s * sqrt(_mm512_reduce_add_pd(h2)) * (1 + 1e-9);
    return (int64_t)_mm512_reduce_add_epi32(sum);
}

const chrys_kernels chrys_kernels_avx512 = {"avx512", dot_avx512, l2sq_avx512, dot_rows_avx512,
                                            l2sq_rows_avx512, dot_f64_avx512, l2sq_f64_avx512,
                                            dot_block_avx512, dot_u8_avx512, dot_u8i8_avx512, dot_x4_avx512,
                                            l2sq_x4_avx512, dot_u8i8_x4_avx512,
                                            chrys_score_scan_avx512, scale_to_avx512, screen_code_avx512,
                                            sumsq_avx512, mix_avx512, mul_avx512, chrys_keys_top_avx512, chrys_keys_sort_avx512,
                                            dot_f64_x4_avx512, l2sq_f64_x4_avx512};
const chrys_kernels chrys_kernels_avx512_vnni = {"avx512+vnni", dot_avx512, l2sq_avx512, dot_rows_avx512,
                                                 l2sq_rows_avx512, dot_f64_avx512, l2sq_f64_avx512,
                                                 dot_block_avx512, dot_u8_avx512, chrys_dot_u8i8_vnni, dot_x4_avx512,
                                                 l2sq_x4_avx512, chrys_dot_u8i8_x4_vnni,
                                                 chrys_score_scan_avx512, scale_to_avx512, screen_code_avx512,
                                            sumsq_avx512, mix_avx512, mul_avx512, chrys_keys_top_avx512, chrys_keys_sort_avx512,
                                            dot_f64_x4_avx512, l2sq_f64_x4_avx512};

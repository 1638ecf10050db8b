/*
 * dist_avx512.c: AVX-512F kernels. Compiled with -mavx512f -mavx512bw -mavx512vl -mfma only;
 * reached through the dispatch table after CPUID/XGETBV confirmed ZMM state is enabled.
 *
 * Tails use a lane mask, so loads never fault past the end.
 * Row kernels stream one row after another (see dot_rows_avx512).
 */
#include <immintrin.h>

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

const chrys_kernels chrys_kernels_avx512 = {"avx512", dot_avx512, l2sq_avx512, dot_rows_avx512,
                                            l2sq_rows_avx512, dot_f64_avx512, l2sq_f64_avx512};

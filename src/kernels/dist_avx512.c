/*
 * dist_avx512.c: AVX-512F kernels. Compiled with -mavx512f -mavx512bw -mavx512vl -mfma only;
 * reached through the dispatch table after CPUID/XGETBV confirmed ZMM state is enabled.
 *
 * Tails use a lane mask, so loads never fault past the end. dot_rows processes four rows per
 * pass with two accumulators each (eight independent FMA chains, enough to cover FMA latency)
 * and loads each query chunk once per four rows.
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

static void dot_rows_avx512(const float *q, const float *x, size_t n_rows, size_t dim, float *out)
{
    size_t r = 0;
    for (; r + 4 <= n_rows; r += 4) {
        const float *x0 = x + r * dim, *x1 = x0 + dim, *x2 = x1 + dim, *x3 = x2 + dim;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        size_t i = 0;
        for (; i + 32 <= dim; i += 32) {
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
        for (; i < dim; i += 16) {
            __mmask16 m = dim - i >= 16 ? (__mmask16)0xffff : tail_mask16(dim - i);
            __m512 qv = _mm512_maskz_loadu_ps(m, q + i);
            a0 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, x0 + i), a0);
            a1 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, x1 + i), a1);
            a2 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, x2 + i), a2);
            a3 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, x3 + i), a3);
        }
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
        out[r + 1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
        out[r + 2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
        out[r + 3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
    }
    for (; r < n_rows; r++) out[r] = dot_avx512(q, x + r * dim, dim);
}

static void l2sq_rows_avx512(const float *q, const float *x, size_t n_rows, size_t dim, float *out)
{
    for (size_t r = 0; r < n_rows; r++) out[r] = l2sq_avx512(q, x + r * dim, dim);
}

const chrys_kernels chrys_kernels_avx512 = {"avx512", dot_avx512, l2sq_avx512, dot_rows_avx512,
                                            l2sq_rows_avx512};

/*
 * dist_avx2.c: AVX2+FMA kernels. Compiled with -mavx2 -mfma and nothing else; reached only
 * through the dispatch table after CPUID/XGETBV said yes.
 *
 * Tails use masked loads (vmaskmovps), which never touch memory past the end of the array.
 * dot_rows works on four rows at a time so each query chunk is loaded once per four rows.
 */
#include <immintrin.h>

#include "dist.h"

static inline float hsum256(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 0x55));
    return _mm_cvtss_f32(lo);
}

static inline __m256i tail_mask(size_t r)
{
    /* r in 1..7: lanes [0, r) active */
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)r), idx);
}

static float dot_avx2(const float *a, const float *b, size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    if (i < n) {
        __m256i m = tail_mask(n - i);
        s1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), s1);
    }
    return hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

static float l2sq_avx2(const float *a, const float *b, size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        __m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16));
        __m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24));
        s0 = _mm256_fmadd_ps(d0, d0, s0);
        s1 = _mm256_fmadd_ps(d1, d1, s1);
        s2 = _mm256_fmadd_ps(d2, d2, s2);
        s3 = _mm256_fmadd_ps(d3, d3, s3);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        s0 = _mm256_fmadd_ps(d, d, s0);
    }
    if (i < n) {
        __m256i m = tail_mask(n - i);
        __m256 d = _mm256_sub_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m));
        s1 = _mm256_fmadd_ps(d, d, s1);
    }
    return hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

static void dot_rows_avx2(const float *q, const float *x, size_t n_rows, size_t dim, float *out)
{
    size_t r = 0;
    for (; r + 4 <= n_rows; r += 4) {
        const float *x0 = x + r * dim, *x1 = x0 + dim, *x2 = x1 + dim, *x3 = x2 + dim;
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        size_t i = 0;
        for (; i + 8 <= dim; i += 8) {
            __m256 qv = _mm256_loadu_ps(q + i);
            s0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(x0 + i), s0);
            s1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(x1 + i), s1);
            s2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(x2 + i), s2);
            s3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(x3 + i), s3);
        }
        if (i < dim) {
            __m256i m = tail_mask(dim - i);
            __m256 qv = _mm256_maskload_ps(q + i, m);
            s0 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(x0 + i, m), s0);
            s1 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(x1 + i, m), s1);
            s2 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(x2 + i, m), s2);
            s3 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(x3 + i, m), s3);
        }
        out[r] = hsum256(s0);
        out[r + 1] = hsum256(s1);
        out[r + 2] = hsum256(s2);
        out[r + 3] = hsum256(s3);
    }
    for (; r < n_rows; r++) out[r] = dot_avx2(q, x + r * dim, dim);
}

static void l2sq_rows_avx2(const float *q, const float *x, size_t n_rows, size_t dim, float *out)
{
    for (size_t r = 0; r < n_rows; r++) out[r] = l2sq_avx2(q, x + r * dim, dim);
}

static inline double hsum256d(__m256d v)
{
    __m128d lo = _mm256_castpd256_pd128(v), hi = _mm256_extractf128_pd(v, 1);
    lo = _mm_add_pd(lo, hi);
    return _mm_cvtsd_f64(_mm_add_sd(lo, _mm_unpackhi_pd(lo, lo)));
}

/* Double-precision accumulation: 4 floats widened per step, two accumulators. */
static double dot_f64_avx2(const float *a, const float *b, size_t n)
{
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + i)), _mm256_cvtps_pd(_mm_loadu_ps(b + i)), s0);
        s1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + i + 4)), _mm256_cvtps_pd(_mm_loadu_ps(b + i + 4)), s1);
    }
    double s = hsum256d(_mm256_add_pd(s0, s1));
    for (; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static double l2sq_f64_avx2(const float *a, const float *b, size_t n)
{
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + i)), _mm256_cvtps_pd(_mm_loadu_ps(b + i)));
        __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + i + 4)), _mm256_cvtps_pd(_mm_loadu_ps(b + i + 4)));
        s0 = _mm256_fmadd_pd(d0, d0, s0);
        s1 = _mm256_fmadd_pd(d1, d1, s1);
    }
    double s = hsum256d(_mm256_add_pd(s0, s1));
    for (; i < n; i++) {
        double d = (double)a[i] - b[i];
        s += d * d;
    }
    return s;
}

static float dot_u8_avx2(const float *w, const uint8_t *c, size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i b = _mm_loadu_si128((const __m128i *)(c + i));
        __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
        __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(b, 8)));
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), f0, s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), f1, s1);
    }
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += w[i] * c[i];
    return s;
}

/* u8 x s8: both widened to 16 bits, then pairwise multiply-add into 32 bits (no saturation). */
static int32_t dot_u8i8_avx2(const uint8_t *c, const int8_t *w, size_t n)
{
    __m256i acc = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(c + i)));
        __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + i)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
    }
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    int32_t r = _mm_cvtsi128_si32(s);
    for (; i < n; i++) r += (int32_t)c[i] * w[i];
    return r;
}

static void dot_x4_avx2(const float *q, const float *const x[4], size_t n, float out[4])
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(q + i);
        s0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(x[0] + i), s0);
        s1 = _mm256_fmadd_ps(a, _mm256_loadu_ps(x[1] + i), s1);
        s2 = _mm256_fmadd_ps(a, _mm256_loadu_ps(x[2] + i), s2);
        s3 = _mm256_fmadd_ps(a, _mm256_loadu_ps(x[3] + i), s3);
    }
    out[0] = hsum256(s0), out[1] = hsum256(s1), out[2] = hsum256(s2), out[3] = hsum256(s3);
    for (; i < n; i++)
        for (int r = 0; r < 4; r++) out[r] += q[i] * x[r][i];
}

static void l2sq_x4_avx2(const float *q, const float *const x[4], size_t n, float out[4])
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(q + i);
        __m256 d0 = _mm256_sub_ps(a, _mm256_loadu_ps(x[0] + i)), d1 = _mm256_sub_ps(a, _mm256_loadu_ps(x[1] + i));
        __m256 d2 = _mm256_sub_ps(a, _mm256_loadu_ps(x[2] + i)), d3 = _mm256_sub_ps(a, _mm256_loadu_ps(x[3] + i));
        s0 = _mm256_fmadd_ps(d0, d0, s0);
        s1 = _mm256_fmadd_ps(d1, d1, s1);
        s2 = _mm256_fmadd_ps(d2, d2, s2);
        s3 = _mm256_fmadd_ps(d3, d3, s3);
    }
    out[0] = hsum256(s0), out[1] = hsum256(s1), out[2] = hsum256(s2), out[3] = hsum256(s3);
    for (; i < n; i++)
        for (int r = 0; r < 4; r++) {
            float d = q[i] - x[r][i];
            out[r] += d * d;
        }
}

static void dot_u8i8_x4_avx2(const uint8_t *const c[4], const int8_t *w, size_t n, int32_t out[4])
{
    for (int r = 0; r < 4; r++) out[r] = dot_u8i8_avx2(c[r], w, n);
}

/* chrys_sumsq_ref in four registers of four sums (the same sums, the same order) */
static double sumsq_avx2(const float *v, size_t n)
{
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256d x0 = _mm256_cvtps_pd(_mm_loadu_ps(v + i)), x1 = _mm256_cvtps_pd(_mm_loadu_ps(v + i + 4));
        __m256d x2 = _mm256_cvtps_pd(_mm_loadu_ps(v + i + 8)), x3 = _mm256_cvtps_pd(_mm_loadu_ps(v + i + 12));
        a0 = _mm256_add_pd(a0, _mm256_mul_pd(x0, x0)), a1 = _mm256_add_pd(a1, _mm256_mul_pd(x1, x1));
        a2 = _mm256_add_pd(a2, _mm256_mul_pd(x2, x2)), a3 = _mm256_add_pd(a3, _mm256_mul_pd(x3, x3));
    }
    double acc[16];
    _mm256_storeu_pd(acc, a0), _mm256_storeu_pd(acc + 4, a1), _mm256_storeu_pd(acc + 8, a2), _mm256_storeu_pd(acc + 12, a3);
    for (; i < n; i++) acc[i & 15] += (double)v[i] * v[i];
    return chrys_sumsq_total(acc);
}

static void scale_to_avx2(float *out, const float *v, size_t n, double norm)
{
    __m256d d = _mm256_set1_pd(norm);
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        _mm_storeu_ps(out + i, _mm256_cvtpd_ps(_mm256_div_pd(_mm256_cvtps_pd(_mm_loadu_ps(v + i)), d)));
    chrys_scale_to_ref(out + i, v + i, n - i, norm);
}

/* four rows, one at a time: the same bits as the one-row kernels */
static void dot_f64_x4_avx2(const float *q, const float *const x[4], size_t n, double out[4])
{
    for (int r = 0; r < 4; r++) out[r] = dot_f64_avx2(q, x[r], n);
}

static void l2sq_f64_x4_avx2(const float *q, const float *const x[4], size_t n, double out[4])
{
    for (int r = 0; r < 4; r++) out[r] = l2sq_f64_avx2(q, x[r], n);
}

const chrys_kernels chrys_kernels_avx2 = {"avx2", dot_avx2, l2sq_avx2, dot_rows_avx2,
                                          l2sq_rows_avx2, dot_f64_avx2, l2sq_f64_avx2, NULL,
                                          dot_u8_avx2, dot_u8i8_avx2, dot_x4_avx2, l2sq_x4_avx2, dot_u8i8_x4_avx2,
                                          NULL, scale_to_avx2, chrys_screen_code_ref, sumsq_avx2,
                                          chrys_mix_ref, chrys_mul_ref, chrys_keys_top_ref, chrys_keys_sort_ref, dot_f64_x4_avx2, l2sq_f64_x4_avx2};

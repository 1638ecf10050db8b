/*
 * score_avx512.c: the exact-search score kernel with the top-k threshold fused in (AVX-512).
 *
 * A register-blocked GEMM (queries x rows) that never writes a score matrix. The queries are
 * packed once per batch block, 32 to a panel, transposed ([p][32]: one zmm pair per dimension);
 * the base rows are read in place, 8 at a time, one float of each broadcast per dimension. The
 * microkernel holds 32 queries x 8 rows = 16 zmm accumulators over the whole dimension (no
 * partial sums leave the registers), so each score is one sequential float32 sum of dim products,
 * the same error bound as a BLAS sgemm of unknown order (flat.c: gamma = 2 dim u).
 * Epilogue: the 32 scores of each row are compared, one mask per 16, with the queries' running
 * thresholds; only a score at or above its query's threshold calls back (push into its top-k,
 * which returns the new threshold). Rows are visited in increasing order, as the other scans do.
 * Loop order: rows outer (8 rows, 8 x dim floats, stay in L1/L2), query panels inner (the packed
 * block, sized by the caller to stay in L2).
 */
#include <immintrin.h>
#include <string.h>

#include "dist.h"

void chrys_score_pack_q(const float *q, size_t nq, size_t dim, float *out)
{
    size_t np = (nq + 31) / 32;
    for (size_t b = 0; b < np; b++) {
        float *o = out + b * 32 * dim;
        for (size_t i = 0; i < 32; i++) {
            size_t qi = b * 32 + i;
            if (qi < nq) {
                const float *src = q + qi * dim;
                for (size_t p = 0; p < dim; p++) o[p * 32 + i] = src[p];
            } else {
                for (size_t p = 0; p < dim; p++) o[p * 32 + i] = 0.0f;
            }
        }
    }
}

#define FMA2(k, xp)                                                                                  \
    do {                                                                                             \
        __m512 b_ = _mm512_set1_ps((xp)[p]);                                                         \
        a##k##0 = _mm512_fmadd_ps(q0, b_, a##k##0);                                                  \
        a##k##1 = _mm512_fmadd_ps(q1, b_, a##k##1);                                                  \
    } while (0)

static void epilogue(__m512 s0, __m512 s1, size_t b, size_t row, int l2, const float *qsq, const float *xnorm,
                     float *thr, chrys_cand_fn fn, void *ctx)
{
    if (l2) {
        /* -(|q|^2 + |x|^2 - 2 q.x) */
        float xn = xnorm[row];
        __m512 xx = _mm512_set1_ps(xn * xn);
        s0 = _mm512_sub_ps(_mm512_sub_ps(_mm512_add_ps(s0, s0), _mm512_loadu_ps(qsq + b * 32)), xx);
        s1 = _mm512_sub_ps(_mm512_sub_ps(_mm512_add_ps(s1, s1), _mm512_loadu_ps(qsq + b * 32 + 16)), xx);
    }
    __mmask16 m0 = _mm512_cmp_ps_mask(s0, _mm512_loadu_ps(thr + b * 32), _CMP_GE_OQ);
    __mmask16 m1 = _mm512_cmp_ps_mask(s1, _mm512_loadu_ps(thr + b * 32 + 16), _CMP_GE_OQ);
    if (!(m0 | m1)) return;
    float s[32];
    _mm512_storeu_ps(s, s0);
    _mm512_storeu_ps(s + 16, s1);
    uint32_t m = (uint32_t)m0 | ((uint32_t)m1 << 16);
    while (m) {
        unsigned i = (unsigned)__builtin_ctz(m);
        m &= m - 1;
        size_t qi = b * 32 + i;
        if (s[i] >= thr[qi]) thr[qi] = fn(ctx, qi, row, s[i]);
    }
}

void chrys_score_scan_avx512(const float *qp, size_t nq, const float *x, size_t row0, size_t nx, size_t dim,
                             int l2, const float *qsq, const float *xnorm, float *thr, chrys_cand_fn fn, void *ctx)
{
    size_t np = (nq + 31) / 32;
    for (size_t j = 0; j < nx; j += 8) {
        size_t nr = nx - j < 8 ? nx - j : 8;
        const float *xr[8];
        for (size_t r = 0; r < 8; r++) xr[r] = x + (j + (r < nr ? r : 0)) * dim;
        const float *x0 = xr[0], *x1 = xr[1], *x2 = xr[2], *x3 = xr[3];
        const float *x4 = xr[4], *x5 = xr[5], *x6 = xr[6], *x7 = xr[7];
        for (size_t b = 0; b < np; b++) {
            const float *qb = qp + b * 32 * dim;
            __m512 a00 = _mm512_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
            __m512 a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
            __m512 a60 = a00, a61 = a00, a70 = a00, a71 = a00;
#pragma GCC unroll 2
            for (size_t p = 0; p < dim; p++) {
                __m512 q0 = _mm512_load_ps(qb + p * 32), q1 = _mm512_load_ps(qb + p * 32 + 16);
                FMA2(0, x0);
                FMA2(1, x1);
                FMA2(2, x2);
                FMA2(3, x3);
                FMA2(4, x4);
                FMA2(5, x5);
                FMA2(6, x6);
                FMA2(7, x7);
            }
            size_t r0 = row0 + j;
            epilogue(a00, a01, b, r0, l2, qsq, xnorm, thr, fn, ctx);
            if (nr > 1) epilogue(a10, a11, b, r0 + 1, l2, qsq, xnorm, thr, fn, ctx);
            if (nr > 2) epilogue(a20, a21, b, r0 + 2, l2, qsq, xnorm, thr, fn, ctx);
            if (nr > 3) epilogue(a30, a31, b, r0 + 3, l2, qsq, xnorm, thr, fn, ctx);
            if (nr > 4) epilogue(a40, a41, b, r0 + 4, l2, qsq, xnorm, thr, fn, ctx);
            if (nr > 5) epilogue(a50, a51, b, r0 + 5, l2, qsq, xnorm, thr, fn, ctx);
            if (nr > 6) epilogue(a60, a61, b, r0 + 6, l2, qsq, xnorm, thr, fn, ctx);
            if (nr > 7) epilogue(a70, a71, b, r0 + 7, l2, qsq, xnorm, thr, fn, ctx);
        }
    }
}

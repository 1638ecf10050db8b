/*
 * dist_vnni.c: the int8 dot product with AVX-512 VNNI (vpdpbusd: 64 unsigned x signed byte
 * products summed into 16 int32 lanes per instruction). Compiled with -mavx512vnni; dispatch.c
 * uses it only when CPUID reports AVX512_VNNI, through the "avx512+vnni" kernel table.
 */
#include <immintrin.h>

#include "dist.h"

int32_t chrys_dot_u8i8_vnni(const uint8_t *c, const int8_t *w, size_t n)
{
    __m512i a0 = _mm512_setzero_si512(), a1 = a0;
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512(c + i), _mm512_loadu_si512(w + i));
        a1 = _mm512_dpbusd_epi32(a1, _mm512_loadu_si512(c + i + 64), _mm512_loadu_si512(w + i + 64));
    }
    for (; i < n; i += 64) {
        size_t r = n - i;
        __mmask64 m = r >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << r) - 1);
        a0 = _mm512_dpbusd_epi32(a0, _mm512_maskz_loadu_epi8(m, c + i), _mm512_maskz_loadu_epi8(m, w + i));
    }
    return _mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1));
}

void chrys_dot_u8i8_x4_vnni(const uint8_t *const c[4], const int8_t *w, size_t n, int32_t out[4])
{
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += 64) {
        size_t r = n - i;
        __mmask64 m = r >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << r) - 1);
        __m512i b = _mm512_maskz_loadu_epi8(m, w + i);
        a0 = _mm512_dpbusd_epi32(a0, _mm512_maskz_loadu_epi8(m, c[0] + i), b);
        a1 = _mm512_dpbusd_epi32(a1, _mm512_maskz_loadu_epi8(m, c[1] + i), b);
        a2 = _mm512_dpbusd_epi32(a2, _mm512_maskz_loadu_epi8(m, c[2] + i), b);
        a3 = _mm512_dpbusd_epi32(a3, _mm512_maskz_loadu_epi8(m, c[3] + i), b);
    }
    out[0] = _mm512_reduce_add_epi32(a0), out[1] = _mm512_reduce_add_epi32(a1);
    out[2] = _mm512_reduce_add_epi32(a2), out[3] = _mm512_reduce_add_epi32(a3);
}

/* The merger's int8 screen (merge_screen.c): one panel of 16 rows, packed [dim/4][16 rows][4
 * bytes] (unsigned codes), against 16 queries of signed codes (4-byte groups broadcast):
 * out[i * 16 + r] = sum over the row's bytes of panel code times query i's code. Each step loads
 * one 64-byte panel slice and feeds it to 16 vpdpbusd, one per query, with the query's 4 bytes
 * broadcast from memory: no reduction across lanes, 16 rows' sums in each accumulator. */
void chrys_screen_dots_vnni(const uint8_t *panel, size_t d4, const int8_t *q, size_t q_stride, int32_t *out)
{
    /* named accumulators and inline asm: GCC 12 copies every vpdpbusd accumulator through a
     * spare register when written with the intrinsic (twice the instructions); here each step is
     * one vpdpbusd with the query's 4 bytes broadcast straight from memory ({1to16}) */
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    __m512i a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
    for (size_t k = 0; k < d4; k++) {
        __m512i r = _mm512_load_si512(panel + k * 64);
        const int8_t *qk = q + 4 * k;
#define STEP(acc, i) __asm__("vpdpbusd %1%{1to16%}, %2, %0" : "+v"(acc) : "m"(*(const int32_t *)(const void *)(qk + (i) * q_stride)), "v"(r))
        STEP(a0, 0); STEP(a1, 1); STEP(a2, 2); STEP(a3, 3); STEP(a4, 4); STEP(a5, 5); STEP(a6, 6); STEP(a7, 7);
        STEP(a8, 8); STEP(a9, 9); STEP(a10, 10); STEP(a11, 11); STEP(a12, 12); STEP(a13, 13); STEP(a14, 14); STEP(a15, 15);
#undef STEP
    }
    __m512i *o = (__m512i *)(void *)out;
    _mm512_storeu_si512(o + 0, a0), _mm512_storeu_si512(o + 1, a1), _mm512_storeu_si512(o + 2, a2), _mm512_storeu_si512(o + 3, a3);
    _mm512_storeu_si512(o + 4, a4), _mm512_storeu_si512(o + 5, a5), _mm512_storeu_si512(o + 6, a6), _mm512_storeu_si512(o + 7, a7);
    _mm512_storeu_si512(o + 8, a8), _mm512_storeu_si512(o + 9, a9), _mm512_storeu_si512(o + 10, a10), _mm512_storeu_si512(o + 11, a11);
    _mm512_storeu_si512(o + 12, a12), _mm512_storeu_si512(o + 13, a13), _mm512_storeu_si512(o + 14, a14), _mm512_storeu_si512(o + 15, a15);
}

/* The screen's first stage: 16 rows' upper bounds per query in one register (see dist.h). */
void chrys_screen_mask_vnni(const int32_t *dots, size_t nq, const float *rowp, const chrys_screen_qp *qp,
                            uint16_t *mask)
{
    __m512 rs = _mm512_loadu_ps(rowp), ra = _mm512_loadu_ps(rowp + 16), rh = _mm512_loadu_ps(rowp + 32),
           rr = _mm512_loadu_ps(rowp + 48);
    for (size_t i = 0; i < nq; i++) {
        __m512i d = _mm512_sub_epi32(_mm512_loadu_si512(dots + i * 16), _mm512_set1_epi32(qp[i].off));
        __m512 ub = _mm512_mul_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(_mm512_set1_ps(qp[i].s), rs));
        ub = _mm512_fmadd_ps(_mm512_set1_ps(qp[i].zq), ra, ub);
        ub = _mm512_fmadd_ps(_mm512_set1_ps(qp[i].eq), rh, ub);
        ub = _mm512_fmadd_ps(_mm512_set1_ps(qp[i].rq), rr, ub);
        mask[i] = (uint16_t)_mm512_cmp_ps_mask(ub, _mm512_set1_ps(qp[i].thr), _CMP_GE_OQ);
    }
}

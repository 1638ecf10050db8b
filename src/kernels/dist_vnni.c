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

/*
 * crc32c_sse42.c: CRC32C with the SSE4.2 crc32 instruction, eight bytes per step.
 * Compiled with -msse4.2 only; called only when CPUID reports SSE4.2 (dispatch.c).
 */
#include <nmmintrin.h>
#include <string.h>

#include "dist.h"

uint32_t chrys_crc32c_hw(uint32_t crc, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    uint64_t c = ~crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}

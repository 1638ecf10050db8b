/*
 * crc32c_sw.c: CRC32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven, byte at a
 * time. The portable reference; crc32c_sse42.c is the fast path and is tested against this one.
 * The checksum uses the standard pre/post inversion, so crc32c("123456789") = 0xE3069283.
 */
#include "dist.h"

#include <pthread.h>

static uint32_t table[256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void build_table(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[i] = c;
    }
}

uint32_t chrys_crc32c_sw(uint32_t crc, const void *buf, size_t n)
{
    pthread_once(&table_once, build_table);
    const unsigned char *p = buf;
    crc = ~crc;
    while (n--) crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* a(x) b(x) mod P(x) in the reflected order of the register (bit 31 is x^0). */
static uint32_t gf2_mulmod(uint32_t a, uint32_t b)
{
    uint32_t p = 0;
    for (uint32_t m = 1u << 31; m; m >>= 1) {
        if (a & m) p ^= b;
        b = (b & 1) ? (b >> 1) ^ 0x82F63B78u : b >> 1; /* b *= x */
    }
    return p;
}

/* x^(8 n) mod P: what a register state is multiplied by when n zero bytes pass through it. */
static uint32_t xpow8n(uint64_t n)
{
    uint32_t r = 1u << 31, base = 1u << 23; /* x^0, x^8 */
    for (; n; n >>= 1) {
        if (n & 1) r = gf2_mulmod(r, base);
        base = gf2_mulmod(base, base);
    }
    return r;
}

uint32_t chrys_crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t len2)
{
    /* the inversions before and after each checksum cancel in the sum (as in zlib's crc32_combine) */
    return gf2_mulmod(xpow8n(len2), crc1) ^ crc2;
}

void chrys_crc32c_shift_tables(uint64_t n, uint32_t tab[4][256])
{
    uint32_t k = xpow8n(n);
    for (int j = 0; j < 4; j++)
        for (uint32_t b = 0; b < 256; b++) tab[j][b] = gf2_mulmod(k, b << (8 * j));
}

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

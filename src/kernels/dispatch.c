/*
 * dispatch.c: CPU detection and one-time kernel selection.
 *
 * On x86-64 we read CPUID for the instruction sets and XGETBV for what the OS actually saves on
 * a context switch (YMM for AVX2, ZMM/opmask for AVX-512): a CPU that has AVX-512 under an OS
 * that does not enable it must not get the AVX-512 table. The choice is made once under
 * pthread_once and stored in the only process-wide mutable state of the library.
 * CHRYS_SIMD=scalar|avx2|avx512 forces a level no higher than the detected one.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "../dynlib.h" /* OpenBLAS, loaded at first use */
#include "../internal.h"
#include "dist.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define CHRYS_X86 1
#endif

enum { LVL_SCALAR = 0, LVL_AVX2 = 1, LVL_AVX512 = 2 };

static const chrys_kernels *g_active;
static int g_max_level;
static int g_sse42;
static int g_vnni; /* AVX512_VNNI present (with the avx512 level) */
static int g_vpclmul; /* VPCLMULQDQ present, at the avx512 level chosen (CHRYS_SIMD lowers the checksum too) */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

#ifdef CHRYS_X86
static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

static int detect_level(void)
{
#ifdef CHRYS_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return LVL_SCALAR;
    g_sse42 = (c >> 20) & 1;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx) return LVL_SCALAR;
    uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return LVL_SCALAR; /* XMM and YMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return LVL_SCALAR;
    int avx2 = (b >> 5) & 1;
    int avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
    int level = (avx2 && fma) ? LVL_AVX2 : LVL_SCALAR;
    if (level == LVL_AVX2 && avx512f && avx512bw && avx512vl && (xcr0 & 0xe6) == 0xe6)
        level = LVL_AVX512; /* opmask, ZMM_Hi256, Hi16_ZMM state */
    g_vnni = level == LVL_AVX512 && ((c >> 11) & 1); /* AVX512_VNNI */
    g_vpclmul = level == LVL_AVX512 && g_sse42 && ((c >> 10) & 1); /* VPCLMULQDQ */
    return level;
#else
    return LVL_SCALAR;
#endif
}

static const chrys_kernels *table_for(int level)
{
    switch (level) {
    case LVL_AVX512: return g_vnni ? &chrys_kernels_avx512_vnni : &chrys_kernels_avx512;
    case LVL_AVX2: return &chrys_kernels_avx2;
    default: return &chrys_kernels_scalar;
    }
}

static void select_once(void)
{
    g_max_level = detect_level();
    int level = g_max_level;
    const char *force = getenv("CHRYS_SIMD");
    if (force && *force) {
        int want = level;
        if (!strcmp(force, "scalar")) want = LVL_SCALAR;
        else if (!strcmp(force, "avx2")) want = LVL_AVX2;
        else if (!strcmp(force, "avx512")) want = LVL_AVX512;
        if (want < level) level = want; /* never above what the CPU supports */
    }
    g_active = table_for(level);
    if (level < LVL_AVX512) g_vpclmul = 0;
}

const chrys_kernels *chrys_kernels_active(void)
{
    pthread_once(&g_once, select_once);
    return g_active;
}

const chrys_kernels *chrys_kernels_level(const char *name)
{
    pthread_once(&g_once, select_once);
    int want = !strcmp(name, "scalar") ? LVL_SCALAR
             : !strcmp(name, "avx2")   ? LVL_AVX2
             : !strcmp(name, "avx512") || !strcmp(name, "avx512+vnni") ? LVL_AVX512
                                       : -1;
    if (want < 0 || want > g_max_level) return NULL;
    return table_for(want);
}

const char *chrys_simd_name(void) { return chrys_kernels_active()->name; }

int chrys_cpu_has_sse42(void)
{
    pthread_once(&g_once, select_once);
    return g_sse42;
}

int chrys_cpu_has_vpclmul(void)
{
    pthread_once(&g_once, select_once);
    return g_vpclmul;
}

uint32_t chrys_crc32c(uint32_t crc, const void *buf, size_t n)
{
    pthread_once(&g_once, select_once);
    if (g_vpclmul) return chrys_crc32c_vpclmul(crc, buf, n);
    return g_sse42 ? chrys_crc32c_hw(crc, buf, n) : chrys_crc32c_sw(crc, buf, n);
}

/* Whether BLAS sgemm runs a vector kernel at least as wide as AVX2 with FMA. OpenBLAS picks its
 * kernel from OPENBLAS_CORETYPE or the CPU model; on a model it does not know (seen: an Intel
 * Xeon model 207 with OpenBLAS 0.3.21) it falls back to "Prescott", SSE3 only, and its sgemm is
 * then 4x slower than this library's own AVX-512 block kernel (k-means on Fashion-MNIST, 980
 * centroids: 27.8 s against 6.9 s). Callers that have their own kernel use BLAS only when true. */
int chrys_blas_fast(void)
{
#ifdef CHRYS_HAVE_BLAS
    static const char *fast[] = {"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids", NULL};
    const chrys_blas_api *b = chrys_blas();
    const char *c = b ? b->get_corename() : NULL;
    for (int i = 0; c && fast[i]; i++)
        if (!strcasecmp(c, fast[i])) return 1;
#endif
    return 0;
}

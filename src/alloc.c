/*
 * alloc.c: the one allocator of libchrysalis.
 *
 * All memory the library takes goes through these functions, so a host can redirect them
 * (chrys_config_allocator) and tests can make the Nth allocation fail to prove that every error
 * path frees what it took. Aligned blocks (vector data) are carved out of an ordinary block with
 * the offset stored just before the returned pointer, so the hooks need no aligned variant.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>

#define CHRYS_ALLOC_IMPL /* the one file that calls the libc allocator */
#include "internal.h"

static void *(*g_malloc)(size_t) = malloc;
static void *(*g_realloc)(void *, size_t) = realloc;
static void (*g_free)(void *) = free;
static atomic_int g_used;
static atomic_long g_fail_after; /* test hook: fail when it counts down to 1 */
static atomic_long g_alloc_count;
static atomic_long g_write_fail_after;

int chrys_config_allocator(void *(*m)(size_t), void *(*r)(void *, size_t), void (*f)(void *))
{
    if (atomic_load(&g_used)) return CHRYS_INVALID;
    g_malloc = m ? m : malloc;
    g_realloc = r ? r : realloc;
    g_free = f ? f : free;
    return CHRYS_OK;
}

void chrys__test_fail_alloc_after(long n) { atomic_store(&g_fail_after, n); }
long chrys__test_alloc_count(void) { return atomic_load(&g_alloc_count); }
void chrys__test_fail_write_after(long n) { atomic_store(&g_write_fail_after, n); }

int chrys__write_should_fail(void)
{
    long v = atomic_load(&g_write_fail_after);
    if (v <= 0) return 0;
    if (v == 1) {
        atomic_store(&g_write_fail_after, 0);
        return 1;
    }
    atomic_store(&g_write_fail_after, v - 1);
    return 0;
}

static int should_fail(void)
{
    atomic_fetch_add(&g_alloc_count, 1);
    long v = atomic_load(&g_fail_after);
    if (v <= 0) return 0;
    if (v == 1) {
        atomic_store(&g_fail_after, 0);
        return 1;
    }
    atomic_store(&g_fail_after, v - 1);
    return 0;
}

void *chrys_malloc(size_t n)
{
    atomic_store(&g_used, 1);
    if (should_fail()) return NULL;
    return g_malloc(n ? n : 1);
}

void *chrys_calloc(size_t n, size_t size)
{
    size_t total;
    if (chrys_mul_size(n, size, &total)) return NULL;
    void *p = chrys_malloc(total);
    if (p) memset(p, 0, total);
    return p;
}

void *chrys_realloc(void *p, size_t n)
{
    atomic_store(&g_used, 1);
    if (should_fail()) return NULL;
    return g_realloc(p, n ? n : 1);
}

void chrys_free(void *p)
{
    if (p) g_free(p);
}

void *chrys_malloc_aligned(size_t n)
{
    size_t total;
    if (chrys_add_size(n, 64 + sizeof(size_t), &total)) return NULL;
    unsigned char *raw = chrys_malloc(total);
    if (!raw) return NULL;
    uintptr_t start = (uintptr_t)(raw + sizeof(size_t));
    uintptr_t aligned = (start + 63) & ~(uintptr_t)63;
    size_t off = (size_t)(aligned - (uintptr_t)raw);
    memcpy((unsigned char *)aligned - sizeof(size_t), &off, sizeof off);
    chrys_advise_huge((void *)aligned, n); /* before the first touch, so faults get huge pages */
    return (void *)aligned;
}

void *chrys_malloc_huge(size_t n)
{
    const size_t huge = (size_t)2 << 20;
    size_t span, total;
    if (chrys_add_size(n, huge - 1, &span)) return NULL;
    span &= ~(huge - 1); /* whole huge pages */
    if (chrys_add_size(span, huge + sizeof(size_t), &total)) return NULL;
    unsigned char *raw = chrys_malloc(total);
    if (!raw) return NULL;
    uintptr_t aligned = ((uintptr_t)(raw + sizeof(size_t)) + huge - 1) & ~(uintptr_t)(huge - 1);
    size_t off = (size_t)(aligned - (uintptr_t)raw);
    memcpy((unsigned char *)aligned - sizeof(size_t), &off, sizeof off);
#ifdef MADV_HUGEPAGE
    madvise((void *)aligned, span, MADV_HUGEPAGE); /* advice only */
#endif
    return (void *)aligned;
}

void chrys_free_aligned(void *p)
{
    if (!p) return;
    size_t off;
    memcpy(&off, (unsigned char *)p - sizeof(size_t), sizeof off);
    chrys_free((unsigned char *)p - off);
}

void *chrys_realloc_aligned(void *p, size_t old_n, size_t new_n)
{
    if (!p) return chrys_malloc_aligned(new_n);
    /* Grown in place by the host's realloc (glibc moves large blocks with mremap: no copy, and no
     * moment holding both the old and the new block), then the rows are moved if the new block's
     * alignment offset differs from the old one's. */
    size_t off, total;
    if (chrys_add_size(new_n, 64 + sizeof(size_t), &total)) return NULL;
    memcpy(&off, (unsigned char *)p - sizeof(size_t), sizeof off);
    unsigned char *raw = chrys_realloc((unsigned char *)p - off, total);
    if (!raw) return NULL;
    uintptr_t start = (uintptr_t)(raw + sizeof(size_t));
    uintptr_t aligned = (start + 63) & ~(uintptr_t)63;
    size_t noff = (size_t)(aligned - (uintptr_t)raw);
    if (noff != off) memmove(raw + noff, raw + off, old_n < new_n ? old_n : new_n);
    memcpy((unsigned char *)aligned - sizeof(size_t), &noff, sizeof noff);
    chrys_advise_huge((void *)aligned, new_n);
    return (void *)aligned;
}

char *chrys_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = chrys_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void chrys_advise_huge(void *p, size_t n)
{
#ifdef MADV_HUGEPAGE
    /* Vector arrays are streamed end to end by every scan; 2 MiB pages cut TLB misses (measured
     * 24 -> 29 GB/s single-thread on 200k x 1024, bench/membw.c). Advice only: errors ignored. */
    const uintptr_t huge = 2u << 20;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), e = ((uintptr_t)p + n) & ~(huge - 1);
    if (n >= 4 * huge && e > a) madvise((void *)a, e - a, MADV_HUGEPAGE);
#else
    (void)p;
    (void)n;
#endif
}

/*
 * internal.h: types, limits and helpers shared inside libchrysalis (never installed).
 *
 * Every allocation goes through chrys_malloc/chrys_realloc/chrys_free (alloc.c); the libc names
 * are poisoned at the end of this header in every library source (the Makefile defines
 * CHRYS_LIB_SOURCE for src/) but alloc.c (which defines CHRYS_ALLOC_IMPL), so a stray malloc()
 * in the library fails to compile. System headers that declare those
 * names are included here first, so a file may include them after this header too. Sizes are computed with the checked helpers, which report overflow instead of wrapping.
 */
#ifndef CHRYS_INTERNAL_H
#define CHRYS_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "chrysalis.h"

#define CHRYS_PRIVATE __attribute__((visibility("hidden")))

/* Slots are internal 32-bit row numbers; ids are the caller's 64-bit keys. */
#define CHRYS_MAX_SLOTS 0xFFFFFFFEu
#define CHRYS_NO_SLOT 0xFFFFFFFFu

/* Defensive checks that should never fire; they do not crash a release build. */
#ifdef NDEBUG
#define ALWAYS(x) (x)
#define NEVER(x) (x)
#else
#include <assert.h>
#define ALWAYS(x) ((x) ? 1 : (assert(0 && #x), 0))
#define NEVER(x) ((x) ? (assert(0 && #x), 1) : 0)
#endif

/* ---- allocation (alloc.c) ---- */
CHRYS_PRIVATE void *chrys_malloc(size_t n);
CHRYS_PRIVATE void *chrys_calloc(size_t n, size_t size);
CHRYS_PRIVATE void *chrys_realloc(void *p, size_t n);
/* 64-byte aligned block for vector data (SIMD loads, mmap-compatible layout); free with chrys_free_aligned. */
CHRYS_PRIVATE void *chrys_malloc_aligned(size_t n);
CHRYS_PRIVATE void *chrys_realloc_aligned(void *p, size_t old_n, size_t new_n);
CHRYS_PRIVATE void chrys_free_aligned(void *p);
/* A scratch block on whole 2 MiB pages, advised huge before its first touch: one fault a huge
 * page, where a fresh 4 KiB page costs microseconds (a virtual machine's shadow page tables:
 * 2 MiB of fresh pages measured 5 ms in 4 KiB pages). Free with chrys_free_aligned. */
CHRYS_PRIVATE void *chrys_malloc_huge(size_t n);
CHRYS_PRIVATE char *chrys_strdup(const char *s);
/* Ask for transparent huge pages on a large block (advice only). */
CHRYS_PRIVATE void chrys_advise_huge(void *p, size_t n);
/* Test hooks, linked into the tests from the static library and never exported by the shared
 * one (tests/cli/test_cli.sh checks its dynamic symbols). Make the Nth allocation from now fail
 * (0 disables); count allocations. */
CHRYS_PRIVATE void chrys__test_fail_alloc_after(long n);
CHRYS_PRIVATE long chrys__test_alloc_count(void);
/* Test hook: make the Nth write() of the store writer fail with ENOSPC (0 disables). */
CHRYS_PRIVATE void chrys__test_fail_write_after(long n);
CHRYS_PRIVATE int chrys__write_should_fail(void);

/* ---- checked arithmetic ---- */
static inline int chrys_mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return CHRYS_LIMIT;
    *out = a * b;
    return CHRYS_OK;
}
static inline int chrys_add_size(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a) return CHRYS_LIMIT;
    *out = a + b;
    return CHRYS_OK;
}

/* ---- growth of arrays ---- */
/* The one growth rule of every growable array in the library: the capacity (in elements) to
 * grow an array of capacity cap to hold need, starting at first, growing by half each step
 * (amortised O(1) appends, at most 50% slack; 2x leaves up to 100% unused on the large row
 * arrays). Never wraps: where half again would overflow it returns need itself, and callers
 * check the byte count as usual (0 only for need 0 with first 0). (The id -> slot hash table,
 * vec.c, is the exception: it keeps a power-of-two size for its mask.) */
static inline size_t chrys_grow_cap(size_t cap, size_t need, size_t first)
{
    size_t c = cap ? cap : first;
    while (c < need) {
        if (c > (SIZE_MAX - 1) / 3 * 2) return need;
        c += c / 2 + 1;
    }
    return c;
}

/* ---- messages (error.c) ---- */
/* printf into a newly allocated string (NULL on OOM). */
CHRYS_PRIVATE char *chrys_vmprintf(const char *fmt, va_list ap);
CHRYS_PRIVATE char *chrys_mprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Set *errmsg (if errmsg != NULL) to a formatted message; returns rc for tail calls. */
CHRYS_PRIVATE int chrys_set_errmsg(char **errmsg, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The structured part of a handle's last failure (chrys_error_info less the strings). A handle
 * keeps one beside its char *errmsg; zero-initialised means "no failure". */
typedef struct chrys_errpos {
    int code;
    int64_t record, byte_offset; /* -1: none */
    size_t reason_at;            /* where the reason starts in the message (after the prefix) */
} chrys_errpos;
/* The one "record an error on a handle" helper: replaces *msg with prefix + the formatted reason
 * and *pos with (rc, record, byte_offset -1); prefix may be NULL (no record prefix), record -1
 * (no single record at fault). On OOM the old message is dropped ("" then). Returns rc. */
CHRYS_PRIVATE int chrys_fail_v(char **msg, chrys_errpos *pos, int rc, int64_t record, const char *prefix,
                               const char *fmt, va_list ap);
/* Forget the structured part (a call that may set the message without the helper starts so). */
CHRYS_PRIVATE void chrys_errpos_reset(chrys_errpos *pos);
/* Fill a public chrys_error_info from a handle's message and position, field by field up to its
 * struct_size. Returns CHRYS_OK or CHRYS_INVALID (NULL, or struct_size too small for code). */
CHRYS_PRIVATE int chrys_error_info_fill(const char *msg, const chrys_errpos *pos, chrys_error_info *info);

/* ---- public structs that begin with uint32_t struct_size (vec.c) ----
 * Every options, info and stats struct of chrysalis.h is read and written only as far as the
 * caller's struct_size reaches: a caller built against an older, shorter header is never read or
 * written past its end, and one built against a newer, longer header gets zeros in the fields this
 * library does not know. */
#define CHRYS_STRUCT_SIZE_MAX 65536u /* above this a struct_size is garbage, not a newer header */
/* Read a caller's input struct into the library's full one: *dst (dst_size bytes, holding the
 * defaults) takes the first min(src->struct_size, dst_size) bytes of src, the rest keeps its
 * defaults, and dst->struct_size becomes dst_size. Returns CHRYS_INVALID when src is NULL or its
 * struct_size is below min_size (the fields every version had). */
CHRYS_PRIVATE int chrys_struct_in(void *dst, size_t dst_size, const void *src, size_t min_size);
/* Write the library's full struct *src (src_size bytes) into the caller's *dst: the first
 * min(dst->struct_size, src_size) bytes (struct_size 0: all src_size), zeros from src_size up to a
 * larger struct_size, and dst->struct_size set to the bytes taken from src. Returns CHRYS_OK, or
 * CHRYS_INVALID (nothing written) when struct_size exceeds CHRYS_STRUCT_SIZE_MAX. */
CHRYS_PRIVATE int chrys_struct_out(void *dst, const void *src, size_t src_size);

/* ---- vectors (vec.c) ---- */
/* Check that v[0..dim) are finite. Returns the index of the first bad component or -1. */
CHRYS_PRIVATE long vec_first_nonfinite(const float *v, size_t dim);
/* L2 norm computed in double. */
CHRYS_PRIVATE double vec_norm(const float *v, size_t dim);
/* 1 when every component is +0 or -0 (the norm is 0 exactly then; a finite float row's norm is
 * never infinite in double: 16384 * FLT_MAX^2 < DBL_MAX). */
CHRYS_PRIVATE int vec_all_zero(const float *v, size_t dim);
/* out = v / norm, each component divided in double then rounded. */
CHRYS_PRIVATE void vec_scale_to(float *out, const float *v, size_t dim, double norm);
/* Dot product / squared L2 in double (oracle and rescoring). */
CHRYS_PRIVATE double vec_dot_f64(const float *a, const float *b, size_t dim);
CHRYS_PRIVATE double vec_l2sq_f64(const float *a, const float *b, size_t dim);

/* id -> slot map: open addressing with linear probing and backward-shift deletion. */
typedef struct idmap {
    uint64_t *keys;  /* CHRYS_NO_ID marks an empty bucket */
    uint32_t *vals;
    size_t cap;      /* power of two */
    size_t count;
} idmap;
CHRYS_PRIVATE int idmap_init(idmap *m, size_t expected);
CHRYS_PRIVATE void idmap_free(idmap *m);
CHRYS_PRIVATE uint32_t idmap_get(const idmap *m, uint64_t key); /* CHRYS_NO_SLOT if absent */
CHRYS_PRIVATE int idmap_put(idmap *m, uint64_t key, uint32_t val); /* overwrites */
CHRYS_PRIVATE int idmap_del(idmap *m, uint64_t key);                /* 1 if removed */
CHRYS_PRIVATE int idmap_reserve(idmap *m, size_t n);
CHRYS_PRIVATE size_t idmap_bytes(const idmap *m);

/* ---- top-k (topk.c; the heap and its one order, topk_worse: topk.h) ----
 * Internally every score is "higher is better" (L2 distances are negated). A topk holds the best
 * `cap` (score, id) pairs seen so far as a min-heap whose root is the worst kept pair. */
typedef struct topk_item {
    float score;
    uint32_t slot;
    uint64_t id;
} topk_item;
typedef struct topk {
    topk_item *items;
    size_t n, cap;
} topk;
/* a is worse than b: lower score, or equal score and larger id. The one ranking order of every
 * search, for the float32 candidates of a topk and the double scores they are rescored to alike
 * (a float converts to double exactly, so topk_worse orders floats as they compare). */
static inline int rank_worse(double sa, uint64_t ia, double sb, uint64_t ib)
{
    return sa < sb || (sa == sb && ia > ib);
}
static inline int topk_worse(float sa, uint64_t ia, float sb, uint64_t ib)
{
    return rank_worse(sa, ia, sb, ib);
}
/* A candidate rescored in double (internal score: higher is better). */
typedef struct ranked {
    double score;
    uint64_t id;
} ranked;
/* qsort comparator for ranked: best first, in rank_worse's order. */
CHRYS_PRIVATE int ranked_cmp_best_first(const void *a, const void *b);
CHRYS_PRIVATE void topk_init(topk *t, topk_item *storage, size_t cap);
CHRYS_PRIVATE void topk_push(topk *t, float score, uint32_t slot, uint64_t id);
/* Lowest score still able to enter (-inf while not full). */
static inline float topk_floor(const topk *t)
{
    return t->n < t->cap ? -__builtin_inff() : t->items[0].score;
}
/* Sort the kept items best first (destroys the heap order). */
CHRYS_PRIVATE void topk_sort(topk *t);

/* ---- CPU count ---- */
CHRYS_PRIVATE unsigned chrys_online_cpus(void);

/* ---- the libc allocator names, poisoned (see the top of this header) ---- */
#if defined(CHRYS_LIB_SOURCE) && !defined(CHRYS_ALLOC_IMPL)
#include <stdio.h>
#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <mm_malloc.h> /* the intrinsics headers' _mm_malloc uses malloc and posix_memalign */
#endif
#pragma GCC poison malloc calloc realloc free strdup strndup aligned_alloc posix_memalign
#endif

/* sha256.c: the SHA-256 digest of n bytes */
CHRYS_PRIVATE void chrys_sha256(const void *data, size_t n, unsigned char out[32]);

#endif

/*
 * vec.c: vector validation and normalisation, double-precision oracles, and the id -> slot map.
 *
 * Input is checked once, at the boundary (chrys_index_add/update/search); the kernels trust it.
 * Norms and normalisation are computed in double so that a vector that is already unit length to
 * float precision comes out (almost always) bit-identical.
 */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "kernels/dist.h"

long vec_first_nonfinite(const float *v, size_t dim)
{
    /* a branch-free pass over the exponent bits (vectorised), the search only when one is there */
    uint32_t bad = 0;
    for (size_t i = 0; i < dim; i++) {
        uint32_t u;
        memcpy(&u, v + i, 4);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    if (!bad) return -1;
    for (size_t i = 0; i < dim; i++)
        if (!isfinite(v[i])) return (long)i;
    return -1;
}

double vec_norm(const float *v, size_t dim)
{
    /* sixteen running sums (the kernel's; the same bits at every level): one sequential sum waited
     * on each add, 1.4 us a 1024-d row, and a merge takes one a record and one a merged entry */
    return sqrt(chrys_kernels_active()->sumsq(v, dim));
}

int vec_all_zero(const float *v, size_t dim)
{
    uint32_t any = 0;
    for (size_t i = 0; i < dim; i++) {
        uint32_t u;
        memcpy(&u, v + i, 4);
        any |= u & 0x7fffffffu;
    }
    return any == 0;
}

void vec_scale_to(float *out, const float *v, size_t dim, double norm)
{
    chrys_kernels_active()->scale_to(out, v, dim, norm); /* the same bits at every level */
}

double vec_dot_f64(const float *a, const float *b, size_t dim)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= dim; i += 4) {
        s0 += (double)a[i] * b[i];
        s1 += (double)a[i + 1] * b[i + 1];
        s2 += (double)a[i + 2] * b[i + 2];
        s3 += (double)a[i + 3] * b[i + 3];
    }
    for (; i < dim; i++) s0 += (double)a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

double vec_l2sq_f64(const float *a, const float *b, size_t dim)
{
    double s0 = 0, s1 = 0;
    size_t i = 0;
    for (; i + 2 <= dim; i += 2) {
        double d0 = (double)a[i] - b[i], d1 = (double)a[i + 1] - b[i + 1];
        s0 += d0 * d0;
        s1 += d1 * d1;
    }
    for (; i < dim; i++) {
        double d = (double)a[i] - b[i];
        s0 += d * d;
    }
    return s0 + s1;
}

unsigned chrys_online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 256 ? 256 : (unsigned)n);
}

/* ---- id map ---- */

static inline size_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (size_t)x;
}

static int idmap_alloc(idmap *m, size_t cap)
{
    m->keys = chrys_malloc(cap * sizeof *m->keys);
    m->vals = chrys_malloc(cap * sizeof *m->vals);
    if (!m->keys || !m->vals) {
        chrys_free(m->keys);
        chrys_free(m->vals);
        m->keys = NULL;
        m->vals = NULL;
        return CHRYS_NOMEM;
    }
    memset(m->keys, 0xff, cap * sizeof *m->keys);
    m->cap = cap;
    m->count = 0;
    return CHRYS_OK;
}

int idmap_init(idmap *m, size_t expected)
{
    size_t cap = 16;
    while (cap < expected * 2) cap *= 2;
    return idmap_alloc(m, cap);
}

void idmap_free(idmap *m)
{
    chrys_free(m->keys);
    chrys_free(m->vals);
    memset(m, 0, sizeof *m);
}

uint32_t idmap_get(const idmap *m, uint64_t key)
{
    if (key == CHRYS_NO_ID) return CHRYS_NO_SLOT; /* the empty-slot marker: never a key */
    size_t mask = m->cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        if (m->keys[i] == key) return m->vals[i];
        if (m->keys[i] == CHRYS_NO_ID) return CHRYS_NO_SLOT;
    }
}

static void put_nogrow(idmap *m, uint64_t key, uint32_t val)
{
    size_t mask = m->cap - 1;
    size_t i = hash_u64(key) & mask;
    while (m->keys[i] != CHRYS_NO_ID && m->keys[i] != key) i = (i + 1) & mask;
    if (m->keys[i] == CHRYS_NO_ID) m->count++;
    m->keys[i] = key;
    m->vals[i] = val;
}

int idmap_reserve(idmap *m, size_t n)
{
    if (n * 2 <= m->cap) return CHRYS_OK;
    size_t cap = m->cap;
    while (cap < n * 2) {
        if (cap > SIZE_MAX / 4) return CHRYS_LIMIT;
        cap *= 2;
    }
    idmap old = *m;
    int rc = idmap_alloc(m, cap);
    if (rc) {
        *m = old;
        return rc;
    }
    for (size_t i = 0; i < old.cap; i++)
        if (old.keys[i] != CHRYS_NO_ID) put_nogrow(m, old.keys[i], old.vals[i]);
    idmap_free(&old);
    return CHRYS_OK;
}

int idmap_put(idmap *m, uint64_t key, uint32_t val)
{
    int rc = idmap_reserve(m, m->count + 1);
    if (rc) return rc;
    put_nogrow(m, key, val);
    return CHRYS_OK;
}

int idmap_del(idmap *m, uint64_t key)
{
    size_t mask = m->cap - 1;
    size_t i = hash_u64(key) & mask;
    while (m->keys[i] != key) {
        if (m->keys[i] == CHRYS_NO_ID) return 0;
        i = (i + 1) & mask;
    }
    /* Backward-shift deletion keeps every probe chain unbroken without tombstones. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (m->keys[j] == CHRYS_NO_ID) break;
        size_t home = hash_u64(m->keys[j]) & mask;
        /* Move j into the hole at i unless its home lies cyclically in (i, j]. */
        int in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            i = j;
        }
    }
    m->keys[i] = CHRYS_NO_ID;
    m->count--;
    return 1;
}

size_t idmap_bytes(const idmap *m) { return m->cap * (sizeof *m->keys + sizeof *m->vals); }

/* ---- struct_size (internal.h) ----
 * The rule of chrysalis.h for structs that begin with struct_size, in one place. Fields are only
 * ever appended, each version's fields after the previous version's sizeof, so a prefix of the
 * bytes is a whole number of fields of some version. */
int chrys_struct_in(void *dst, size_t dst_size, const void *src, size_t min_size)
{
    if (!src) return CHRYS_INVALID;
    uint32_t have;
    memcpy(&have, src, sizeof have);
    if (have < min_size) return CHRYS_INVALID;
    memcpy(dst, src, have < dst_size ? have : dst_size);
    uint32_t full = (uint32_t)dst_size;
    memcpy(dst, &full, sizeof full);
    return CHRYS_OK;
}

int chrys_struct_out(void *dst, const void *src, size_t src_size)
{
    uint32_t want;
    memcpy(&want, dst, sizeof want);
    if (want > CHRYS_STRUCT_SIZE_MAX) return CHRYS_INVALID;
    size_t n = want && want < src_size ? want : src_size;
    memcpy(dst, src, n);
    if (want > src_size) memset((char *)dst + src_size, 0, want - src_size);
    uint32_t got = (uint32_t)n;
    memcpy(dst, &got, sizeof got);
    return CHRYS_OK;
}

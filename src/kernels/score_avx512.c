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
 * thresholds; only a score at or above its query's threshold is appended, as one key, to that
 * query's candidate buffer (dist.h); a full buffer calls back, and the caller keeps the best and
 * raises the threshold. Appending costs a store, where a heap push costs a sift (measured: heap
 * pushes were a quarter of a MiniLM batch). Rows are visited in increasing order.
 * Loop order: rows outer (8 rows, 8 x dim floats, stay in L1/L2), query panels inner (the packed
 * block, sized by the caller to stay in L2).
 */
#include <immintrin.h>
#include <string.h>

#include "dist.h"

/* Sixteen rows of sixteen floats, transposed in registers: r[j] becomes column j. Unpacks pair
 * the rows within 128-bit lanes (u[4i+c], lane L: column 4L+c of rows 4i..4i+3), then a 4 x 4
 * transpose of lanes across u[c], u[4+c], u[8+c], u[12+c] puts column 4L+c in one register. */
static inline void transpose16(__m512 r[16])
{
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        u[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44), v3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
        r[c] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        r[8 + c] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
}

/* The packing, sixteen queries by sixteen dimensions at a time through transpose16 (the plain
 * loop's strided stores were 2-3% of a MiniLM batch). */
void chrys_score_pack_q(const float *q, size_t nq, size_t dim, float *out)
{
    size_t np = (nq + 31) / 32;
    for (size_t b = 0; b < np; b++)
        for (size_t g = 0; g < 2; g++) {
            size_t q0 = b * 32 + g * 16;
            float *o = out + b * 32 * dim + g * 16;
            for (size_t p0 = 0; p0 < dim; p0 += 16) {
                size_t w = dim - p0 < 16 ? dim - p0 : 16;
                __mmask16 m = (__mmask16)((1u << w) - 1);
                __m512 r[16];
                for (size_t i = 0; i < 16; i++)
                    r[i] = q0 + i < nq ? _mm512_maskz_loadu_ps(m, q + (q0 + i) * dim + p0) : _mm512_setzero_ps();
                transpose16(r);
                for (size_t j = 0; j < w; j++) _mm512_store_ps(o + (p0 + j) * 32, r[j]);
            }
        }
}

#define FMA2(k, xp)                                                                                  \
    do {                                                                                             \
        __m512 b_ = _mm512_set1_ps((xp)[p]);                                                         \
        a##k##0 = _mm512_fmadd_ps(q0, b_, a##k##0);                                                  \
        a##k##1 = _mm512_fmadd_ps(q1, b_, a##k##1);                                                  \
    } while (0)

static inline void epilogue(__m512 s0, __m512 s1, size_t b, size_t row, int l2, const float *qsq,
                            const float *xnorm, float *thr, const chrys_cand_sink *sink)
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
    /* each set bit is a different query, so no threshold changes under another's feet */
    while (m) {
        unsigned i = (unsigned)__builtin_ctz(m);
        m &= m - 1;
        size_t qi = b * 32 + i;
        uint32_t c = sink->n[qi];
        sink->keys[qi * sink->cap + c] = chrys_score_key(s[i], (uint32_t)row);
        sink->n[qi] = ++c;
        if (c == sink->cap) thr[qi] = sink->full(sink->ctx, qi);
    }
}

void chrys_score_scan_avx512(const float *qp, size_t nq, const float *x, size_t row0, size_t nx, size_t dim,
                             int l2, const float *qsq, const float *xnorm, float *thr, const chrys_cand_sink *sink)
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
            epilogue(a00, a01, b, r0, l2, qsq, xnorm, thr, sink);
            if (nr > 1) epilogue(a10, a11, b, r0 + 1, l2, qsq, xnorm, thr, sink);
            if (nr > 2) epilogue(a20, a21, b, r0 + 2, l2, qsq, xnorm, thr, sink);
            if (nr > 3) epilogue(a30, a31, b, r0 + 3, l2, qsq, xnorm, thr, sink);
            if (nr > 4) epilogue(a40, a41, b, r0 + 4, l2, qsq, xnorm, thr, sink);
            if (nr > 5) epilogue(a50, a51, b, r0 + 5, l2, qsq, xnorm, thr, sink);
            if (nr > 6) epilogue(a60, a61, b, r0 + 6, l2, qsq, xnorm, thr, sink);
            if (nr > 7) epilogue(a70, a71, b, r0 + 7, l2, qsq, xnorm, thr, sink);
        }
    }
}

/* The fused path's selection (dist.h). Each pass partitions the run by a pivot, eight keys to a
 * compare, each side compressed in a register and stored whole (the memory form of vpcompressq is
 * slow on some CPUs): no per-key branch. Keys are distinct (the low half is the row), so a median
 * of three distinct keys leaves both sides non-empty and every pass makes progress. The run moves
 * between three scratch buffers; only keys known to be kept are copied back to a. A run of at
 * most 24 is finished by ranks: each key counts the keys above it (three compares). */
#define KEYS_RANK_MAX 24
uint64_t chrys_keys_top_avx512(uint64_t *a, size_t n, size_t t, uint64_t *tmp)
{
    size_t out = 0, need = t, m = n; /* a[0..out) are kept; `need` more come from the run */
    uint64_t *buf[3] = {tmp, tmp + n + 8, tmp + 2 * (n + 8)};
    const uint64_t *run = a;
    int cur = -1; /* the buffer holding the run (-1: a) */
    while (m > KEYS_RANK_MAX) {
        uint64_t x = run[m / 4], y = run[m / 2], z = run[3 * m / 4];
        uint64_t p = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y)); /* median */
        __m512i pv = _mm512_set1_epi64((long long)p);
        static const int spare[4][2] = {{0, 1}, {1, 2}, {0, 2}, {0, 1}}; /* by cur + 1: the other two */
        int fa = spare[cur + 1][0], fb = spare[cur + 1][1];
        uint64_t *ga = buf[fa], *lb = buf[fb];
        size_t g = 0, l = 0;
        for (size_t i = 0; i < m; i += 8) {
            __mmask8 valid = m - i >= 8 ? 0xff : (__mmask8)((1u << (m - i)) - 1);
            __m512i v = _mm512_maskz_loadu_epi64(valid, run + i);
            __mmask8 ge = _mm512_mask_cmpge_epu64_mask(valid, v, pv), lt = valid & (__mmask8)~ge;
            _mm512_storeu_si512(ga + g, _mm512_maskz_compress_epi64(ge, v));
            _mm512_storeu_si512(lb + l, _mm512_maskz_compress_epi64(lt, v));
            g += (size_t)__builtin_popcount(ge);
            l += (size_t)__builtin_popcount(lt);
        }
        if (g > need) { /* the run becomes the keys >= p */
            run = ga, m = g, cur = fa;
            continue;
        }
        memcpy(a + out, ga, g * sizeof *a); /* all of them kept */
        if (g == need) return p;            /* the pivot is the smallest of the keys >= it */
        out += g, need -= g;
        run = lb, m = l, cur = fb; /* the run becomes the rest */
    }
    /* ranks: key i is kept when fewer than `need` keys of the run are above it */
    __mmask8 v0 = m >= 8 ? 0xff : (__mmask8)((1u << m) - 1);
    __mmask8 v1 = m >= 16 ? 0xff : m > 8 ? (__mmask8)((1u << (m - 8)) - 1) : 0;
    __mmask8 v2 = m > 16 ? (__mmask8)((1u << (m - 16)) - 1) : 0;
    __m512i r0 = _mm512_maskz_loadu_epi64(v0, run), r1 = _mm512_maskz_loadu_epi64(v1, run + 8);
    __m512i r2 = _mm512_maskz_loadu_epi64(v2, run + 16);
    uint64_t kth = 0, keep[KEYS_RANK_MAX];
    size_t w = 0;
    for (size_t i = 0; i < m; i++) {
        __m512i e = _mm512_set1_epi64((long long)run[i]);
        size_t above = (size_t)__builtin_popcount(_mm512_mask_cmpgt_epu64_mask(v0, r0, e)) +
                       (size_t)__builtin_popcount(_mm512_mask_cmpgt_epu64_mask(v1, r1, e)) +
                       (size_t)__builtin_popcount(_mm512_mask_cmpgt_epu64_mask(v2, r2, e));
        keep[w] = run[i];
        w += above < need;
        kth = above == need - 1 ? run[i] : kth;
    }
    memcpy(a + out, keep, w * sizeof *a);
    return kth;
}

/* keys_sort (dist.h): up to 32 keys by ranks (each key counts the keys above it: four compares,
 * and goes to that place); more by the reference. No per-key branch. */
void chrys_keys_sort_avx512(uint64_t *a, size_t n, uint64_t *tmp)
{
    if (n > 32) {
        chrys_keys_sort_ref(a, n, tmp);
        return;
    }
    __m512i r[4];
    __mmask8 v[4];
    for (size_t b = 0; b < 4; b++) {
        size_t lo = b * 8;
        v[b] = n >= lo + 8 ? 0xff : n > lo ? (__mmask8)((1u << (n - lo)) - 1) : 0;
        r[b] = _mm512_maskz_loadu_epi64(v[b], a + lo);
    }
    for (size_t i = 0; i < n; i++) {
        __m512i e = _mm512_set1_epi64((long long)a[i]);
        size_t above = 0;
        for (size_t b = 0; b < 4; b++) above += (size_t)__builtin_popcount(_mm512_mask_cmpgt_epu64_mask(v[b], r[b], e));
        tmp[above] = a[i];
    }
    memcpy(a, tmp, n * sizeof *a);
}

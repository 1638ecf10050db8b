/*
 * dist.h: the distance kernel table.
 *
 * One table per SIMD level (scalar, avx2, avx512), each filled by a file compiled with only its own
 * ISA flags. dispatch.c picks the best level the CPU and OS support, once (pthread_once), and
 * CHRYS_SIMD may force a lower one. Hot loops fetch the table once per search, never per distance.
 *
 * Contract for every kernel: any n >= 1 (and n_rows >= 0), any alignment, no precondition on n
 * modulo a vector width. Results differ between levels only in float rounding.
 */
#ifndef CHRYS_DIST_H
#define CHRYS_DIST_H

#include <stddef.h>
#include <stdint.h>

/* score_scan's candidate buffers. A candidate is one uint64_t key whose unsigned order is the
 * ranking's: the score's bits in an order-preserving form in the high half (-0 as +0) and the
 * row's complement in the low half (of equal scores the smaller row ranks higher); topk.h's
 * topk_key encodes the same. Query qi appends to keys[qi*cap ..] and counts in n[qi]; when a
 * buffer fills (n[qi] == cap), full(ctx, qi) must make room (n[qi] < cap) and return the
 * query's new threshold. */
typedef struct chrys_cand_sink {
    uint64_t *keys;
    uint32_t *n;
    uint32_t cap;
    float (*full)(void *ctx, size_t qi);
    void *ctx;
} chrys_cand_sink;
static inline uint64_t chrys_score_key(float s, uint32_t row)
{
    uint32_t u;
    s += 0.0f; /* -0 -> +0 */
    __builtin_memcpy(&u, &s, sizeof u);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((uint64_t)u << 32) | (uint32_t)~row;
}

typedef struct chrys_kernels {
    const char *name;
    /* sum a[i]*b[i] */
    float (*dot)(const float *a, const float *b, size_t n);
    /* sum (a[i]-b[i])^2 */
    float (*l2sq)(const float *a, const float *b, size_t n);
    /* out[r] = dot(q, x + r*dim) for r in [0, n_rows) */
    void (*dot_rows)(const float *q, const float *x, size_t n_rows, size_t dim, float *out);
    /* out[r] = l2sq(q, x + r*dim) */
    void (*l2sq_rows)(const float *q, const float *x, size_t n_rows, size_t dim, float *out);
    /* The same two quantities accumulated in double precision (exact rescoring of candidates).
     * Every exact path of the library uses these entries, so equal inputs give equal bits. */
    double (*dot_f64)(const float *a, const float *b, size_t n);
    double (*l2sq_f64)(const float *a, const float *b, size_t n);
    /* out[i*ldo + j] = dot(q + i*dim, x + j*dim) for i < nq, j < nx: a block of inner products
     * (a small GEMM, Q X^T). NULL when this level has no kernel faster than BLAS sgemm. */
    void (*dot_block)(const float *q, size_t nq, const float *x, size_t nx, size_t dim, float *out,
                      size_t ldo);
    /* sum w[i] * c[i] over one-byte codes (SQ8 scan: w = query * step) */
    float (*dot_u8)(const float *w, const uint8_t *c, size_t n);
    /* sum c[i] * w[i] in exact int32 arithmetic, unsigned codes times signed int8 weights (the
     * HNSW SQ8 graph walk; AVX-512 VNNI vpdpbusd where present). n <= 2^16 keeps it exact. */
    int32_t (*dot_u8i8)(const uint8_t *c, const int8_t *w, size_t n);
    /* The same for four rows at once (scattered pointers): out[r] = dot(q, x[r]), l2sq(q, x[r]),
     * dot_u8i8(c[r], w). Four streams in flight hide memory latency in graph walks (FAISS's
     * HNSW batches four distances for the same reason). Results equal the one-row kernels up to
     * float rounding (the int8 one exactly). */
    void (*dot_x4)(const float *q, const float *const x[4], size_t n, float out[4]);
    void (*l2sq_x4)(const float *q, const float *const x[4], size_t n, float out[4]);
    void (*dot_u8i8_x4)(const uint8_t *const c[4], const int8_t *w, size_t n, int32_t out[4]);
    /* Fused exact scan (score_avx512.c; NULL below AVX-512): scores nq packed queries (qp, from
     * chrys_score_pack_q) against rows x[0..nx) (global row numbers row0..), internal scores
     * (dot, or -(|q|^2+|x|^2-2q.x) under l2 with qsq per query and xnorm per global row), and
     * appends every score >= thr[query] to that query's buffer in the sink, rows in increasing
     * order (a full buffer calls sink->full, which returns the query's new threshold). thr and
     * qsq hold ceil(nq/32)*32 floats (padding: thr NaN, never met). Each score is one sequential
     * float32 sum. Rows are numbered below 2^32. */
    void (*score_scan)(const float *qp, size_t nq, const float *x, size_t row0, size_t nx, size_t dim, int l2,
                       const float *qsq, const float *xnorm, float *thr, const chrys_cand_sink *sink);
    /* out[i] = (float)((double)v[i] / norm): every level gives the scalar loop's bits (one
     * correctly rounded division and conversion per component). out may be v. */
    void (*scale_to)(float *out, const float *v, size_t n, double norm);
    /* The merger's int8 screen codes of one row (merge_screen.c): see chrys_screen_code_ref. */
    int64_t (*screen_code)(const float *x, uint32_t dim, uint8_t *out, size_t stride4, int unsigned_codes,
                           double *scale, double *err, double *nhat);
    /* sum v[i]^2 in double (vec_norm): sixteen running sums, v[i] into sum i % 16, then summed
     * pairwise in a fixed order (chrys_sumsq_ref); every level gives its bits. */
    double (*sumsq)(const float *v, size_t n);
    /* out[i] = (float)((double)a[i] * wa + (double)b[i] * wb), two products and a sum in double,
     * rounded once (the merger's update; chrys_mix_ref: every level gives its bits). out may be a. */
    void (*mix)(float *out, const float *a, double wa, const float *b, double wb, size_t n);
    /* out[i] = (float)((double)v[i] * w) (a stored unit row times its norm; chrys_mul_ref). */
    void (*mul)(float *out, const float *v, double w, size_t n);
    /* Move the t largest of n distinct keys to a[0..t) (any order; a[t..n) is left undefined) and
     * return the t-th largest; 1 <= t <= n; tmp holds 3n + 24 keys (the fused scan's buffers; chrys_keys_top_ref). */
    uint64_t (*keys_top)(uint64_t *a, size_t n, size_t t, uint64_t *tmp);
    /* Sort n distinct keys largest first; tmp holds n keys. */
    void (*keys_sort)(uint64_t *a, size_t n, uint64_t *tmp);
    /* dot_f64 and l2sq_f64 of q against four rows at once, each out[r] bit for bit the one-row
     * kernel's at this level (the exact rescoring of candidates: four sums in flight). */
    void (*dot_f64_x4)(const float *q, const float *const x[4], size_t n, double out[4]);
    void (*l2sq_f64_x4)(const float *q, const float *const x[4], size_t n, double out[4]);
} chrys_kernels;

/* dispatch.c: BLAS sgemm runs an AVX2-or-wider kernel (OpenBLAS's core name); see there. */
int chrys_blas_fast(void);

/* The active table (selected on first call). */
const chrys_kernels *chrys_kernels_active(void);
/* A specific level's table, or NULL when not compiled in or not supported by this CPU/OS.
 * level: "scalar", "avx2", "avx512". Used by tests to compare every level with the scalar one. */
const chrys_kernels *chrys_kernels_level(const char *level);

void chrys_dot_block_ref(const float *q, size_t nq, const float *x, size_t nx, size_t dim, float *out,
                         size_t ldo);

float chrys_dot_u8_ref(const float *w, const uint8_t *c, size_t n);
int32_t chrys_dot_u8i8_ref(const uint8_t *c, const int8_t *w, size_t n);
/* dist_vnni.c: the VNNI version of dot_u8i8 (compiled with -mavx512vnni; used only when CPUID says so). */
int32_t chrys_dot_u8i8_vnni(const uint8_t *c, const int8_t *w, size_t n);
void chrys_dot_u8i8_x4_vnni(const uint8_t *const c[4], const int8_t *w, size_t n, int32_t out[4]);
double chrys_sumsq_ref(const float *v, size_t n);
void chrys_mix_ref(float *out, const float *a, double wa, const float *b, double wb, size_t n);
void chrys_mul_ref(float *out, const float *v, double w, size_t n);
/* The sixteen running sums' fixed pairwise total (every level's sumsq ends with it). */
double chrys_sumsq_total(double acc[16]);
/* out = v / norm, each component in double and rounded once (every level's scale_to gives these bits). */
void chrys_scale_to_ref(float *out, const float *v, size_t n, double norm);
/* Code one finite row x into bytes out[pos(i)] (pos(i) = (i / 4) * stride4 + i % 4), c_i =
 * round(x_i / s) in [-127, 127] with s = max|x_i| / 127: code + 128 when unsigned_codes (the
 * panels' side of the screen), else the signed code; bytes past dim are left alone. Its scale s,
 * the norms of its error |x - s c| and of its coded version |s c|, both rounded up (by a relative
 * 1e-9, far above any order of summation's rounding). Returns the sum of the signed codes. Every
 * level gives the same codes, scale and sum; the two norms may differ in their last bits. */
int64_t chrys_screen_code_ref(const float *x, uint32_t dim, uint8_t *out, size_t stride4, int unsigned_codes,
                              double *scale, double *err, double *nhat);
/* The merger's int8 screen: a panel of 16 rows packed [d4][16][4] (unsigned codes, 64-byte
 * aligned) against 16 queries of signed codes (d4 * 4 bytes each, q_stride apart, 4-byte
 * aligned): out[i * 16 + r] = the exact int32 dot of row r with query i. _ref: the same in C. */
void chrys_screen_dots_vnni(const uint8_t *panel, size_t d4, const int8_t *q, size_t q_stride, int32_t *out);
void chrys_screen_dots_ref(const uint8_t *panel, size_t d4, const int8_t *q, size_t q_stride, int32_t *out);
/* The screen's first stage (merge_screen.c): a query's terms of its upper bound against the 16
 * rows of a prefix panel. For row r of query i (dots = chrys_screen_dots_* output, 16 per query):
 *   ub = (float)(dots[i*16 + r] - off) * (s * rs[r]) + zq * ra[r] + eq * rh[r] + rq * rr[r]
 * evaluated in float32 in exactly this order (one rounding per product, an FMA for each of the
 * last three terms); bit r of mask[i] is set when ub >= thr. rowp holds [4][16] floats: rs, ra,
 * rh, rr. Every level gives the same bits (the _ref uses fmaf). */
typedef struct chrys_screen_qp {
    float s, zq, eq, rq, thr;
    int32_t off;
} chrys_screen_qp;
void chrys_screen_mask_vnni(const int32_t *dots, size_t nq, const float *rowp, const chrys_screen_qp *qp,
                            uint16_t *mask);
void chrys_screen_mask_ref(const int32_t *dots, size_t nq, const float *rowp, const chrys_screen_qp *qp,
                           uint16_t *mask);

/* score_avx512.c: transpose nq queries into 32-query panels ([p][32], zero padded; buffer of
 * ceil(nq/32)*32*dim floats, 64-byte aligned) for score_scan. */
void chrys_score_pack_q(const float *q, size_t nq, size_t dim, float *out);
/* keys_top: by vector partitions (score_avx512.c), and the scalar quickselect (dist_scalar.c) */
uint64_t chrys_keys_top_avx512(uint64_t *a, size_t n, size_t t, uint64_t *tmp);
uint64_t chrys_keys_top_ref(uint64_t *a, size_t n, size_t t, uint64_t *tmp);
void chrys_keys_sort_avx512(uint64_t *a, size_t n, uint64_t *tmp);
void chrys_keys_sort_ref(uint64_t *a, size_t n, uint64_t *tmp);
void chrys_score_scan_avx512(const float *qp, size_t nq, const float *x, size_t row0, size_t nx, size_t dim,
                             int l2, const float *qsq, const float *xnorm, float *thr, const chrys_cand_sink *sink);

extern const chrys_kernels chrys_kernels_scalar;
extern const chrys_kernels chrys_kernels_avx2;
extern const chrys_kernels chrys_kernels_avx512;
extern const chrys_kernels chrys_kernels_avx512_vnni; /* avx512 with the VNNI dot_u8i8 */

/* CRC32C (Castagnoli) of buf, continuing from crc (start with 0). Hardware (SSE4.2) when present. */
uint32_t chrys_crc32c(uint32_t crc, const void *buf, size_t n);
uint32_t chrys_crc32c_sw(uint32_t crc, const void *buf, size_t n);
uint32_t chrys_crc32c_hw(uint32_t crc, const void *buf, size_t n);
/* crc32c_vpclmul.c: by carry-less multiplication (AVX-512 VPCLMULQDQ; used only when CPUID says so) */
uint32_t chrys_crc32c_vpclmul(uint32_t crc, const void *buf, size_t n);
/* The CRC32C of A||B from crc1 = CRC32C(A), crc2 = CRC32C(B) and len2 = |B|. */
uint32_t chrys_crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t len2);
/* tab[j][b]: the register state b << 8j moved over n zero bytes (a linear map; xor the four). */
void chrys_crc32c_shift_tables(uint64_t n, uint32_t tab[4][256]);
int chrys_cpu_has_sse42(void);
int chrys_cpu_has_vpclmul(void); /* VPCLMULQDQ with the AVX-512 level */

#endif

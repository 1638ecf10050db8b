/*
 * dist_scalar.c: reference kernels, the oracle for every SIMD level and the fallback.
 * Compiled with baseline flags only. Plain loops with four independent accumulators.
 */
#include <math.h>
#include <stdlib.h>

#include "dist.h"

static float dot_scalar(const float *a, const float *b, size_t n)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static float l2sq_scalar(const float *a, const float *b, size_t n)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float d0 = a[i] - b[i], d1 = a[i + 1] - b[i + 1];
        float d2 = a[i + 2] - b[i + 2], d3 = a[i + 3] - b[i + 3];
        s0 += d0 * d0;
        s1 += d1 * d1;
        s2 += d2 * d2;
        s3 += d3 * d3;
    }
    for (; i < n; i++) {
        float d = a[i] - b[i];
        s0 += d * d;
    }
    return (s0 + s1) + (s2 + s3);
}

static void dot_rows_scalar(const float *q, const float *x, size_t n_rows, size_t dim, float *out)
{
    for (size_t r = 0; r < n_rows; r++) out[r] = dot_scalar(q, x + r * dim, dim);
}

static void l2sq_rows_scalar(const float *q, const float *x, size_t n_rows, size_t dim, float *out)
{
    for (size_t r = 0; r < n_rows; r++) out[r] = l2sq_scalar(q, x + r * dim, dim);
}

static double dot_f64_scalar(const float *a, const float *b, size_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += (double)a[i] * b[i];
        s1 += (double)a[i + 1] * b[i + 1];
        s2 += (double)a[i + 2] * b[i + 2];
        s3 += (double)a[i + 3] * b[i + 3];
    }
    for (; i < n; i++) s0 += (double)a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static double l2sq_f64_scalar(const float *a, const float *b, size_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        double d0 = (double)a[i] - b[i], d1 = (double)a[i + 1] - b[i + 1];
        double d2 = (double)a[i + 2] - b[i + 2], d3 = (double)a[i + 3] - b[i + 3];
        s0 += d0 * d0;
        s1 += d1 * d1;
        s2 += d2 * d2;
        s3 += d3 * d3;
    }
    for (; i < n; i++) {
        double d = (double)a[i] - b[i];
        s0 += d * d;
    }
    return (s0 + s1) + (s2 + s3);
}

static float dot_u8_scalar(const float *w, const uint8_t *c, size_t n)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += w[i] * c[i];
        s1 += w[i + 1] * c[i + 1];
        s2 += w[i + 2] * c[i + 2];
        s3 += w[i + 3] * c[i + 3];
    }
    for (; i < n; i++) s0 += w[i] * c[i];
    return (s0 + s1) + (s2 + s3);
}

static int32_t dot_u8i8_scalar(const uint8_t *c, const int8_t *w, size_t n)
{
    int32_t s = 0;
    for (size_t i = 0; i < n; i++) s += (int32_t)c[i] * w[i];
    return s;
}

static void dot_x4_scalar(const float *q, const float *const x[4], size_t n, float out[4])
{
    for (int r = 0; r < 4; r++) out[r] = dot_scalar(q, x[r], n);
}

static void l2sq_x4_scalar(const float *q, const float *const x[4], size_t n, float out[4])
{
    for (int r = 0; r < 4; r++) out[r] = l2sq_scalar(q, x[r], n);
}

static void dot_u8i8_x4_scalar(const uint8_t *const c[4], const int8_t *w, size_t n, int32_t out[4])
{
    for (int r = 0; r < 4; r++) out[r] = dot_u8i8_scalar(c[r], w, n);
}

/* Reference for dot_block implementations (tests compare them with this). */
void chrys_dot_block_ref(const float *q, size_t nq, const float *x, size_t nx, size_t dim, float *out, size_t ldo)
{
    for (size_t i = 0; i < nq; i++)
        for (size_t j = 0; j < nx; j++) out[i * ldo + j] = dot_scalar(q + i * dim, x + j * dim, dim);
}

float chrys_dot_u8_ref(const float *w, const uint8_t *c, size_t n) { return dot_u8_scalar(w, c, n); }
int32_t chrys_dot_u8i8_ref(const uint8_t *c, const int8_t *w, size_t n) { return dot_u8i8_scalar(c, w, n); }

void chrys_scale_to_ref(float *out, const float *v, size_t n, double norm)
{
    for (size_t i = 0; i < n; i++) out[i] = (float)((double)v[i] / norm);
}

int64_t chrys_screen_code_ref(const float *x, uint32_t dim, uint8_t *out, size_t stride4, int unsigned_codes,
                              double *scale, double *err, double *nhat)
{
    float mx = 0;
    for (uint32_t i = 0; i < dim; i++) {
        float a = fabsf(x[i]);
        if (a > mx) mx = a;
    }
    double s = mx > 0 ? (double)mx / 127.0 : 0, inv = mx > 0 ? 127.0 / (double)mx : 0, e2 = 0, h2 = 0;
    int64_t sum = 0;
    for (uint32_t i = 0; i < dim; i++) {
        int v = (int)nearbyint((double)x[i] * inv); /* to nearest even, as the SIMD conversions */
        if (v > 127) v = 127;
        if (v < -127) v = -127;
        out[(i / 4) * stride4 + i % 4] = unsigned_codes ? (uint8_t)(v + 128) : (uint8_t)(int8_t)v;
        double d = (double)x[i] - s * (double)v;
        e2 += d * d;
        h2 += (double)v * (double)v;
        sum += v;
    }
    *scale = s; /* a zero row: scale 0, every estimate 0 and exact */
    *err = sqrt(e2) * (1 + 1e-9);
    *nhat = s * sqrt(h2) * (1 + 1e-9);
    return sum;
}

double chrys_sumsq_total(double acc[16])
{
    for (int j = 0; j < 8; j++) acc[j] += acc[j + 8];
    for (int j = 0; j < 4; j++) acc[j] += acc[j + 4];
    for (int j = 0; j < 2; j++) acc[j] += acc[j + 2];
    return acc[0] + acc[1];
}

/* Each square is exact in double (24-bit mantissas), so a sum's bits depend only on its order. */
double chrys_sumsq_ref(const float *v, size_t n)
{
    double acc[16] = {0};
    for (size_t i = 0; i < n; i++) acc[i & 15] += (double)v[i] * v[i];
    return chrys_sumsq_total(acc);
}

void chrys_mix_ref(float *out, const float *a, double wa, const float *b, double wb, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = (float)((double)a[i] * wa + (double)b[i] * wb);
}

void chrys_mul_ref(float *out, const float *v, double w, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = (float)((double)v[i] * w);
}

/* keys_top by quickselect (the reference, and the level below AVX-512). */
static void keys_sort_desc(uint64_t *a, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        uint64_t x = a[i];
        size_t j = i;
        for (; j > 0 && a[j - 1] < x; j--) a[j] = a[j - 1];
        a[j] = x;
    }
}

static int keys_cmp_desc(const void *pa, const void *pb)
{
    uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
    return (a < b) - (a > b);
}

void chrys_keys_sort_ref(uint64_t *a, size_t n, uint64_t *tmp)
{
    (void)tmp;
    if (n <= 32) keys_sort_desc(a, n);
    else qsort(a, n, sizeof *a, keys_cmp_desc);
}

uint64_t chrys_keys_top_ref(uint64_t *a, size_t n, size_t t, uint64_t *tmp)
{
    (void)tmp;
    size_t lo = 0, hi = n - 1, want = t - 1; /* a[want] becomes the t-th largest */
    while (hi - lo > 16) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t x = a[lo], y = a[mid], z = a[hi];
        uint64_t p = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y)); /* median */
        size_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] > p) i++;
            while (a[j] < p) j--;
            if (i <= j) {
                uint64_t s = a[i];
                a[i++] = a[j];
                a[j--] = s;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return a[want]; /* a[j+1..i) is the pivot */
    }
    keys_sort_desc(a + lo, hi - lo + 1);
    return a[want];
}

/* four rows, one at a time: the same bits as the one-row kernels */
static void dot_f64_x4_scalar(const float *q, const float *const x[4], size_t n, double out[4])
{
    for (int r = 0; r < 4; r++) out[r] = dot_f64_scalar(q, x[r], n);
}

static void l2sq_f64_x4_scalar(const float *q, const float *const x[4], size_t n, double out[4])
{
    for (int r = 0; r < 4; r++) out[r] = l2sq_f64_scalar(q, x[r], n);
}

const chrys_kernels chrys_kernels_scalar = {"scalar", dot_scalar, l2sq_scalar, dot_rows_scalar,
                                            l2sq_rows_scalar, dot_f64_scalar, l2sq_f64_scalar, NULL,
                                            dot_u8_scalar, dot_u8i8_scalar, dot_x4_scalar, l2sq_x4_scalar,
                                            dot_u8i8_x4_scalar, NULL, chrys_scale_to_ref, chrys_screen_code_ref,
                                            chrys_sumsq_ref, chrys_mix_ref, chrys_mul_ref, chrys_keys_top_ref, chrys_keys_sort_ref, dot_f64_x4_scalar, l2sq_f64_x4_scalar};

void chrys_screen_dots_ref(const uint8_t *panel, size_t d4, const int8_t *q, size_t q_stride, int32_t *out)
{
    for (size_t i = 0; i < 16; i++)
        for (size_t r = 0; r < 16; r++) {
            int32_t s = 0;
            for (size_t k = 0; k < d4; k++)
                for (size_t j = 0; j < 4; j++) s += (int32_t)panel[k * 64 + r * 4 + j] * q[i * q_stride + 4 * k + j];
            out[i * 16 + r] = s;
        }
}

void chrys_screen_mask_ref(const int32_t *dots, size_t nq, const float *rowp, const chrys_screen_qp *qp,
                           uint16_t *mask)
{
    for (size_t i = 0; i < nq; i++) {
        uint16_t m = 0;
        float s = qp[i].s, zq = qp[i].zq, eq = qp[i].eq, rq = qp[i].rq, thr = qp[i].thr;
        for (size_t r = 0; r < 16; r++) {
            float t = s * rowp[r];
            float ub = (float)(dots[i * 16 + r] - qp[i].off) * t;
            ub = fmaf(zq, rowp[16 + r], ub);
            ub = fmaf(eq, rowp[32 + r], ub);
            ub = fmaf(rq, rowp[48 + r], ub);
            if (ub >= thr) m |= (uint16_t)(1u << r);
        }
        mask[i] = m;
    }
}

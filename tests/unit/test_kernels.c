/*
 * test_kernels.c: every compiled SIMD level against the scalar reference (the oracle), for every
 * length 1..300 and some large ones, on unaligned pointers; CRC32C hardware vs software.
 */
#include "../harness.h"
#include "chrysalis.h"
#include "internal.h"
#include "kernels/dist.h"
#include "topk.h"
#include "tests.h"

static const char *LEVELS[] = {"avx2", "avx512"};

/* |got - want| within a relative bound of the absolute-value sum (float32 reassociation error). */
static int close_enough(double got, double want, double abs_sum)
{
    return fabs(got - want) <= 2e-6 * abs_sum + 1e-6;
}

void test_kernels_vs_scalar(void)
{
    uint64_t s = h_seed;
    const size_t big[] = {511, 1000, 1024, 1536, 3072, 4099, 65537};
    float *a = malloc((65537 + 8) * sizeof(float)), *b = malloc((65537 + 8) * sizeof(float));
    for (size_t i = 0; i < 65537 + 8; i++) {
        a[i] = h_gauss(&s);
        b[i] = h_gauss(&s);
    }
    const chrys_kernels *ref = chrys_kernels_level("scalar");
    CHECK(ref != NULL);
    int tested_levels = 0;
    for (size_t l = 0; l < sizeof LEVELS / sizeof *LEVELS; l++) {
        const chrys_kernels *k = chrys_kernels_level(LEVELS[l]);
        if (!k) continue; /* not supported on this CPU */
        tested_levels++;
        for (size_t t = 0; t < 300 + sizeof big / sizeof *big; t++) {
            size_t n = t < 300 ? t + 1 : big[t - 300];
            for (size_t off = 0; off < 3; off += 2) { /* aligned-ish and off by 2 floats */
                const float *pa = a + off + 1, *pb = b + off;
                double abs_dot = 0, abs_l2 = 0;
                for (size_t i = 0; i < n; i++) {
                    abs_dot += fabs((double)pa[i] * pb[i]);
                    abs_l2 += ((double)pa[i] - pb[i]) * ((double)pa[i] - pb[i]);
                }
                double rd = ref->dot(pa, pb, n), kd = k->dot(pa, pb, n);
                double rl = ref->l2sq(pa, pb, n), kl = k->l2sq(pa, pb, n);
                if (!close_enough(kd, rd, abs_dot)) {
                    h_fail(__FILE__, __LINE__, "%s dot n=%zu: %.9g vs scalar %.9g", k->name, n, kd, rd);
                    break;
                }
                double rd64 = ref->dot_f64(pa, pb, n), kd64 = k->dot_f64(pa, pb, n);
                double rl64 = ref->l2sq_f64(pa, pb, n), kl64 = k->l2sq_f64(pa, pb, n);
                if (fabs(rd64 - kd64) > 1e-13 * abs_dot + 1e-15 || fabs(rl64 - kl64) > 1e-13 * abs_l2 + 1e-15) {
                    h_fail(__FILE__, __LINE__, "%s f64 kernels n=%zu: %.17g/%.17g vs scalar %.17g/%.17g", k->name, n,
                           kd64, kl64, rd64, rl64);
                    break;
                }
                if (!close_enough(kl, rl, abs_l2)) {
                    h_fail(__FILE__, __LINE__, "%s l2sq n=%zu: %.9g vs scalar %.9g", k->name, n, kl, rl);
                    break;
                }
            }
        }
    }
    /* This machine class has AVX-512; if detection found nothing, dispatch is broken. */
    if (!getenv("CHRYS_SIMD")) CHECK(tested_levels >= 1 || !chrys_kernels_level("avx2"));
    free(a);
    free(b);
}

void test_kernels_rows_vs_scalar(void)
{
    uint64_t s = h_seed + 1;
    const chrys_kernels *ref = chrys_kernels_level("scalar");
    for (size_t l = 0; l < sizeof LEVELS / sizeof *LEVELS; l++) {
        const chrys_kernels *k = chrys_kernels_level(LEVELS[l]);
        if (!k) continue;
        const size_t dims[] = {1, 3, 7, 15, 16, 17, 31, 33, 100, 128, 384, 385, 1024};
        for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
            size_t d = dims[di];
            for (size_t nr = 0; nr <= 9; nr++) {
                float *q = malloc((d + 1) * sizeof(float)), *x = malloc((nr * d + 1) * sizeof(float));
                float out_r[9], out_k[9];
                for (size_t i = 0; i < d + 1; i++) q[i] = h_gauss(&s);
                for (size_t i = 0; i < nr * d + 1; i++) x[i] = h_gauss(&s);
                const float *qp = q + 1, *xp = x + 1; /* unaligned */
                ref->dot_rows(qp, xp, nr, d, out_r);
                k->dot_rows(qp, xp, nr, d, out_k);
                for (size_t r = 0; r < nr; r++) {
                    double abs_sum = 0;
                    for (size_t i = 0; i < d; i++) abs_sum += fabs((double)qp[i] * xp[r * d + i]);
                    if (!close_enough(out_k[r], out_r[r], abs_sum))
                        h_fail(__FILE__, __LINE__, "%s dot_rows d=%zu row %zu: %g vs %g", k->name, d, r, out_k[r], out_r[r]);
                }
                ref->l2sq_rows(qp, xp, nr, d, out_r);
                k->l2sq_rows(qp, xp, nr, d, out_k);
                for (size_t r = 0; r < nr; r++)
                    if (!close_enough(out_k[r], out_r[r], out_r[r]))
                        h_fail(__FILE__, __LINE__, "%s l2sq_rows d=%zu row %zu: %g vs %g", k->name, d, r, out_k[r], out_r[r]);
                free(q);
                free(x);
            }
        }
    }
}

/* The int8 kernel is exact integer arithmetic: every level must equal the reference bit for bit,
 * including the extremes (255 x -128) and every tail length. */
void test_kernels_u8i8(void)
{
    uint64_t s = h_seed;
    size_t nmax = 65536 + 64;
    uint8_t *c = malloc(nmax);
    int8_t *w = malloc(nmax);
    for (size_t i = 0; i < nmax; i++) {
        c[i] = (uint8_t)h_rand(&s);
        w[i] = (int8_t)(h_rand(&s) & 0xff);
    }
    const chrys_kernels *tables[] = {chrys_kernels_level("avx2"), chrys_kernels_level("avx512") ? &chrys_kernels_avx512 : NULL,
                                     chrys_kernels_level("avx512")};
    const size_t big[] = {511, 1000, 1024, 1536, 3072, 65536};
    for (size_t t = 0; t < 3; t++) {
        const chrys_kernels *k = tables[t];
        if (!k) continue;
        for (size_t j = 0; j < 300 + sizeof big / sizeof *big; j++) {
            size_t n = j < 300 ? j + 1 : big[j - 300];
            for (size_t off = 0; off < 3; off += 2)
                if (k->dot_u8i8(c + off, w + 1, n) != chrys_dot_u8i8_ref(c + off, w + 1, n)) {
                    h_fail(__FILE__, __LINE__, "%s dot_u8i8 n=%zu: %d vs %d", k->name, n, k->dot_u8i8(c + off, w + 1, n),
                           chrys_dot_u8i8_ref(c + off, w + 1, n));
                    break;
                }
        }
        memset(c, 255, 4096);
        memset(w, 0x80, 4096);
        CHECK_EQ(k->dot_u8i8(c, w, 4096), 4096 * 255 * -128);
    }
    free(c);
    free(w);
}

/* The four-row kernels against four one-row scalar calls, every level, every tail length. */
void test_kernels_x4(void)
{
    uint64_t s = h_seed + 9;
    size_t nmax = 1100;
    float *q = malloc(nmax * sizeof(float)), *x = malloc(4 * nmax * sizeof(float));
    uint8_t *c = malloc(4 * nmax);
    int8_t *w = malloc(nmax);
    for (size_t i = 0; i < nmax; i++) {
        q[i] = h_gauss(&s);
        w[i] = (int8_t)(h_rand(&s) & 0xff);
    }
    for (size_t i = 0; i < 4 * nmax; i++) {
        x[i] = h_gauss(&s);
        c[i] = (uint8_t)h_rand(&s);
    }
    const chrys_kernels *ref = chrys_kernels_level("scalar");
    const chrys_kernels *tables[] = {ref, chrys_kernels_level("avx2"), chrys_kernels_level("avx512") ? &chrys_kernels_avx512 : NULL,
                                     chrys_kernels_level("avx512")};
    for (size_t t = 0; t < 4; t++) {
        const chrys_kernels *k = tables[t];
        if (!k) continue;
        for (size_t n = 1; n <= 1100; n += n < 70 ? 1 : 97) {
            /* rows in scrambled order, at odd offsets */
            const float *xs[4] = {x + 3 * nmax + 1, x + 1, x + 2 * nmax + 3, x + nmax};
            const uint8_t *cs[4] = {c + 2 * nmax + 1, c + 5, c + 3 * nmax, c + nmax + 7};
            float d4[4], l4[4];
            int32_t i4[4];
            k->dot_x4(q, xs, n, d4);
            k->l2sq_x4(q, xs, n, l4);
            k->dot_u8i8_x4(cs, w, n, i4);
            double f4[4], g4[4];
            k->dot_f64_x4(q, xs, n, f4);
            k->l2sq_f64_x4(q, xs, n, g4);
            for (int r = 0; r < 4; r++) /* the exact rescoring: bit for bit the one-row kernels */
                if (f4[r] != k->dot_f64(q, xs[r], n) || g4[r] != k->l2sq_f64(q, xs[r], n))
                    h_fail(__FILE__, __LINE__, "%s f64 x4 n=%zu row %d: %.17g/%.17g vs %.17g/%.17g", k->name, n, r, f4[r], g4[r],
                           k->dot_f64(q, xs[r], n), k->l2sq_f64(q, xs[r], n));
            for (int r = 0; r < 4; r++) {
                double abs_dot = 0, l2 = ref->l2sq_f64(q, xs[r], n);
                for (size_t i = 0; i < n; i++) abs_dot += fabs((double)q[i] * xs[r][i]);
                double rd = ref->dot_f64(q, xs[r], n);
                if (!close_enough(d4[r], rd, abs_dot) || !close_enough(l4[r], l2, l2) ||
                    i4[r] != chrys_dot_u8i8_ref(cs[r], w, n)) {
                    h_fail(__FILE__, __LINE__, "%s x4 kernels n=%zu row %d: %.9g/%.9g/%d vs %.9g/%.9g/%d", k->name, n, r, d4[r],
                           l4[r], i4[r], rd, l2, chrys_dot_u8i8_ref(cs[r], w, n));
                    n = 2000;
                    break;
                }
            }
        }
    }
    free(q);
    free(x);
    free(c);
    free(w);
}

void test_kernels_forced_level(void)
{
    /* The CPU's own view (the compiler's cpuid reader, independent of dispatch.c) bounds what the
     * dispatcher may pick: AVX2 needs AVX2+FMA, the AVX-512 table F+BW+VL. (The OS-state check in
     * dispatch.c can only lower the level, so a level above these flags is always a bug.) */
    __builtin_cpu_init();
    int cpu_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int cpu_avx512 = cpu_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                     __builtin_cpu_supports("avx512vl");
    if (!cpu_avx2) CHECK(chrys_kernels_level("avx2") == NULL);
    if (!cpu_avx512) CHECK(chrys_kernels_level("avx512") == NULL);
    CHECK(chrys_kernels_level("scalar") != NULL);
    CHECK(chrys_kernels_level("neon-or-anything") == NULL);
    /* The highest level the dispatcher offers; every level up to it is offered. */
    static const char *const levels[] = {"scalar", "avx2", "avx512"};
    int max = 0;
    for (int i = 0; i < 3; i++)
        if (chrys_kernels_level(levels[i])) max = i;
    for (int i = 0; i <= max; i++) CHECK(chrys_kernels_level(levels[i]) != NULL);
    /* The active table is the forced level clamped to that maximum, or the maximum itself. */
    const char *force = getenv("CHRYS_SIMD");
    int want = max;
    if (force && *force)
        for (int i = 0; i < 3; i++)
            if (!strcmp(force, levels[i]) && i < max) want = i;
    const chrys_kernels *active = chrys_kernels_active();
    CHECK(active == chrys_kernels_level(levels[want]));
    CHECK(!strncmp(chrys_simd_name(), levels[want], strlen(levels[want])));
    CHECK(!strcmp(chrys_simd_name(), active->name));
}

void test_crc32c(void)
{
    CHECK_EQ(chrys_crc32c_sw(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ(chrys_crc32c(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ(chrys_crc32c_sw(0, "", 0), 0u);
    uint64_t s = h_seed;
    unsigned char buf[1000];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)h_rand(&s);
    for (size_t n = 0; n < sizeof buf; n += 1 + n / 7) {
        uint32_t sw = chrys_crc32c_sw(0, buf + 1, n - (n > 0));
        CHECK_EQ(chrys_crc32c(0, buf + 1, n - (n > 0)), sw);
        if (chrys_cpu_has_sse42()) CHECK_EQ(chrys_crc32c_hw(0, buf + 1, n - (n > 0)), sw);
        if (chrys_cpu_has_vpclmul()) CHECK_EQ(chrys_crc32c_vpclmul(0, buf + 1, n - (n > 0)), sw);
    }
    /* Incremental == one-shot. */
    uint32_t one = chrys_crc32c(0, buf, 999), inc = chrys_crc32c(chrys_crc32c(0, buf, 333), buf + 333, 666);
    CHECK_EQ(one, inc);
    /* Long inputs take the three-stream path (blocks of 2 KiB) or the folding one (rounds of 256
     * bytes, then 64, then the last bytes): every length around a round of each and its multiples,
     * at odd offsets, against the byte-at-a-time reference; and the
     * combination of two checksums equals the checksum of the whole. */
    size_t big = 40000;
    unsigned char *b = malloc(big);
    CHECK(b != NULL);
    if (!b) return;
    for (size_t i = 0; i < big; i++) b[i] = (unsigned char)h_rand(&s);
    static const size_t lens[] = {255, 256, 257, 319, 320, 511, 512, 513, 575, 767, 6143, 6144, 6145, 6151, 12287,
                                  12288, 12295, 18432, 24577, 39990};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        size_t off = i % 5;
        uint32_t sw = chrys_crc32c_sw(0, b + off, lens[i]);
        CHECK_EQ(chrys_crc32c(0, b + off, lens[i]), sw);
        if (chrys_cpu_has_sse42()) CHECK_EQ(chrys_crc32c_hw(0x1234567u, b + off, lens[i]), chrys_crc32c_sw(0x1234567u, b + off, lens[i]));
        if (chrys_cpu_has_vpclmul())
            CHECK_EQ(chrys_crc32c_vpclmul(0x1234567u, b + off, lens[i]), chrys_crc32c_sw(0x1234567u, b + off, lens[i]));
        for (size_t cut = 0; cut <= lens[i]; cut += 1 + lens[i] / 3) {
            uint32_t a = chrys_crc32c_sw(0, b + off, cut), c = chrys_crc32c_sw(0, b + off + cut, lens[i] - cut);
            CHECK_EQ(chrys_crc32c_combine(a, c, lens[i] - cut), sw);
        }
    }
    CHECK_EQ(chrys_crc32c_combine(0xE3069283u, 0, 0), 0xE3069283u);
    free(b);
}

void test_kernels_dot_block(void)
{
    uint64_t s = h_seed + 7;
    for (size_t l = 0; l < sizeof LEVELS / sizeof *LEVELS; l++) {
        const chrys_kernels *k = chrys_kernels_level(LEVELS[l]);
        if (!k || !k->dot_block) continue;
        const size_t dims[] = {1, 5, 16, 17, 100, 384, 1024, 1031};
        for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
            size_t d = dims[di];
            for (size_t nq = 1; nq <= 9; nq += 2)
                for (size_t nx = 1; nx <= 11; nx += 3) {
                    float *q = malloc(nq * d * sizeof(float)), *x = malloc(nx * d * sizeof(float));
                    float *o1 = malloc(nq * 16 * sizeof(float)), *o2 = malloc(nq * 16 * sizeof(float));
                    for (size_t i = 0; i < nq * d; i++) q[i] = h_gauss(&s);
                    for (size_t i = 0; i < nx * d; i++) x[i] = h_gauss(&s);
                    for (size_t i = 0; i < nq * 16; i++) o1[i] = o2[i] = -7.0f; /* ldo 16 > nx: gaps untouched */
                    chrys_dot_block_ref(q, nq, x, nx, d, o1, 16);
                    k->dot_block(q, nq, x, nx, d, o2, 16);
                    size_t bad = 0;
                    for (size_t i = 0; i < nq; i++)
                        for (size_t j = 0; j < 16; j++) {
                            double abs_sum = 0;
                            if (j < nx)
                                for (size_t t = 0; t < d; t++) abs_sum += fabs((double)q[i * d + t] * x[j * d + t]);
                            if (j < nx ? !close_enough(o2[i * 16 + j], o1[i * 16 + j], abs_sum) : o2[i * 16 + j] != -7.0f) bad++;
                        }
                    if (bad) h_fail(__FILE__, __LINE__, "%s dot_block d=%zu nq=%zu nx=%zu: %zu wrong", k->name, d, nq, nx, bad);
                    free(q);
                    free(x);
                    free(o1);
                    free(o2);
                }
        }
    }
}

/* score_scan (the fused exact-search kernel): every (query, row) score at or above the query's
 * threshold reaches the query's buffer exactly once, in increasing row order, as the key of its
 * value (dot, or -|q-x|^2 under l2) and row; nothing below it does; a full buffer calls back
 * (buffers of 1, 3 and 64 keys). Ragged sizes: nq around the 32-query panel, nx around the 8-row
 * block, d not a multiple of 16. */
typedef struct scan_rec {
    size_t nq, nx, row0;
    float *got;     /* nq*nx, NAN until seen */
    size_t *last;   /* per query: last row + 1 seen */
    size_t calls, out_of_order, twice, bad_key, overfull;
    const float *fixed_thr; /* per query, returned as the new threshold */
    chrys_cand_sink sink;
} scan_rec;

/* take query qi's buffered keys into the record and empty the buffer */
static void scan_take(scan_rec *r, size_t qi)
{
    if (r->sink.n[qi] > r->sink.cap) r->overfull++;
    for (uint32_t j = 0; j < r->sink.n[qi] && j < r->sink.cap; j++) {
        uint64_t key = r->sink.keys[qi * r->sink.cap + j];
        size_t row = topk_key_slot(key);
        float sc = topk_key_score(key);
        if (chrys_score_key(sc, (uint32_t)row) != key || row < r->row0 || row >= r->row0 + r->nx) {
            r->bad_key++;
            continue;
        }
        r->calls++;
        row -= r->row0;
        if (row + 1 <= r->last[qi]) r->out_of_order++;
        r->last[qi] = row + 1;
        if (!isnan(r->got[qi * r->nx + row])) r->twice++;
        r->got[qi * r->nx + row] = sc;
    }
    r->sink.n[qi] = 0;
}

static float scan_full(void *ctx, size_t qi)
{
    scan_rec *r = ctx;
    if (r->sink.n[qi] != r->sink.cap) r->overfull++; /* called only when exactly full */
    scan_take(r, qi);
    return r->fixed_thr[qi];
}

void test_kernels_score_scan(void)
{
    uint64_t s = h_seed + 11;
    const chrys_kernels *k = chrys_kernels_level("avx512");
    /* the kernel's keys are topk.h's: the same order, the same score and row back */
    const float probe[] = {-INFINITY, -3.5f, -1e-30f, -0.0f, 0.0f, 1e-38f, 0.25f, 7.0f, INFINITY};
    for (size_t i = 0; i < sizeof probe / sizeof *probe; i++)
        for (uint32_t row = 0; row < 3; row++) {
            CHECK_EQ(chrys_score_key(probe[i], row * 1000003u), topk_key(probe[i], row * 1000003u));
            CHECK(topk_key_score(chrys_score_key(probe[i], row)) == probe[i]);
            if (i) CHECK(chrys_score_key(probe[i], row) > chrys_score_key(probe[i - 1], row) || probe[i] == probe[i - 1]);
        }
    if (!k || !k->score_scan) return; /* only the AVX-512 level has it (dist.h) */
    const size_t dims[] = {1, 15, 16, 17, 100, 384, 1031};
    const size_t nqs[] = {1, 5, 31, 32, 33, 70};
    const size_t nxs[] = {1, 7, 8, 9, 50};
    for (size_t di = 0; di < sizeof dims / sizeof *dims; di++)
        for (size_t qi = 0; qi < sizeof nqs / sizeof *nqs; qi++)
            for (size_t xi = 0; xi < sizeof nxs / sizeof *nxs; xi++)
                for (int l2 = 0; l2 <= 1; l2++)
                    for (int mode = 0; mode <= 1; mode++) /* 0: threshold -inf (all), 1: threshold 0 */
                        for (uint32_t cap = 1; cap <= 64; cap = cap == 1 ? 3 : cap == 3 ? 64 : 65) {
                        size_t d = dims[di], nq = nqs[qi], nx = nxs[xi], pad = (nq + 31) / 32 * 32;
                        size_t row0 = 3; /* global row numbers start past 0 */
                        float *q = malloc(nq * d * sizeof(float)), *x = malloc(nx * d * sizeof(float));
                        float *qp = aligned_alloc(64, (pad * d * sizeof(float) + 63) / 64 * 64);
                        float *thr = malloc(pad * sizeof(float)), *qsq = calloc(pad, sizeof(float));
                        float *xn = malloc((row0 + nx) * sizeof(float)), *ft = malloc(pad * sizeof(float));
                        scan_rec r = {nq, nx, row0, malloc(nq * nx * sizeof(float)), calloc(nq, sizeof(size_t)), 0, 0, 0, 0, 0, ft,
                                      {calloc(pad * cap, sizeof(uint64_t)), calloc(pad, sizeof(uint32_t)), cap, scan_full, NULL}};
                        r.sink.ctx = &r;
                        for (size_t i = 0; i < nq * d; i++) q[i] = h_gauss(&s);
                        for (size_t i = 0; i < nx * d; i++) x[i] = h_gauss(&s);
                        if (nx > 1) memcpy(x + d, x, d * sizeof(float)); /* a tie: rows 0 and 1 equal */
                        for (size_t j = 0; j < nx; j++) xn[row0 + j] = (float)sqrt(chrys_kernels_scalar.dot_f64(x + j * d, x + j * d, d));
                        for (size_t i = 0; i < pad; i++) {
                            thr[i] = i < nq ? (mode ? 0.0f : -INFINITY) : NAN;
                            ft[i] = thr[i];
                            if (i < nq) qsq[i] = (float)chrys_kernels_scalar.dot_f64(q + i * d, q + i * d, d);
                        }
                        if (l2 && mode) /* threshold at minus the median-ish distance */
                            for (size_t i = 0; i < nq; i++) thr[i] = ft[i] = -2.0f * (float)d;
                        for (size_t i = 0; i < nq * nx; i++) r.got[i] = NAN;
                        chrys_score_pack_q(q, nq, d, qp);
                        size_t misplaced = 0; /* the layout: [panel][p][32], zero past nq */
                        for (size_t i = 0; i < pad; i++)
                            for (size_t p = 0; p < d; p++)
                                misplaced += qp[(i / 32) * 32 * d + p * 32 + i % 32] != (i < nq ? q[i * d + p] : 0.0f);
                        CHECK_EQ(misplaced, 0);
                        k->score_scan(qp, nq, x, row0, nx, d, l2, qsq, xn, thr, &r.sink);
                        size_t padded = 0;
                        for (size_t i = nq; i < pad; i++) padded += r.sink.n[i];
                        for (size_t i = 0; i < nq; i++) scan_take(&r, i);
                        size_t bad = 0, missing = 0, extra = 0;
                        for (size_t i = 0; i < nq; i++)
                            for (size_t j = 0; j < nx; j++) {
                                double want = l2 ? -chrys_kernels_scalar.l2sq_f64(q + i * d, x + j * d, d)
                                                 : chrys_kernels_scalar.dot_f64(q + i * d, x + j * d, d);
                                double tol = 4e-6 * (double)d * (l2 ? qsq[i] + xn[row0 + j] * xn[row0 + j] + 1 : sqrt(qsq[i]) * xn[row0 + j] + 1);
                                float g = r.got[i * nx + j];
                                if (want >= ft[i] + tol && isnan(g)) missing++;
                                if (want < ft[i] - tol && !isnan(g)) extra++;
                                if (!isnan(g) && fabs(g - want) > tol) bad++;
                            }
                        if (bad || missing || extra || r.out_of_order || r.twice || r.bad_key || r.overfull || padded)
                            h_fail(__FILE__, __LINE__, "score_scan d=%zu nq=%zu nx=%zu l2=%d thr=%d cap=%u: %zu wrong, %zu missing, %zu extra, "
                                   "%zu out of order, %zu twice, %zu bad keys, %zu overfull, %zu in padding",
                                   d, nq, nx, l2, mode, cap, bad, missing, extra, r.out_of_order, r.twice, r.bad_key, r.overfull, padded);
                        if (!mode) CHECK_EQ(r.calls, nq * nx);
                        free(q), free(x), free(qp), free(thr), free(qsq), free(xn), free(ft);
                        free(r.got), free(r.last), free(r.sink.keys), free(r.sink.n);
                    }
}

static int cmp_u64_desc(const void *pa, const void *pb)
{
    uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
    return (a < b) - (a > b);
}

/* keys_top and keys_sort (the fused scan's selection and order) at every level and the
 * reference: a[0..t) holds exactly the t largest keys and the return is the t-th, for every t of
 * n = 1..130; keys_sort gives qsort's order; on random keys, keys in rising and falling order,
 * and keys sharing their score (high half). */
void test_kernels_keys_top(void)
{
    uint64_t s = h_seed + 17;
    uint64_t *a = malloc(130 * sizeof *a), *orig = malloc(130 * sizeof *a), *sorted = malloc(130 * sizeof *a);
    uint64_t *got = malloc(130 * sizeof *a), *tmp = malloc((3 * 130 + 24) * sizeof *a);
    const chrys_kernels *levels[4] = {&chrys_kernels_scalar, chrys_kernels_level("avx2"), chrys_kernels_level("avx512"), NULL};
    size_t bad = 0, cases = 0;
    for (int l = 0; l < 3; l++) {
        const chrys_kernels *k = levels[l];
        if (!k) continue;
        for (size_t n = 1; n <= 130; n += n < 40 ? 1 : 9)
            for (int pat = 0; pat < 4; pat++) {
                for (size_t i = 0; i < n; i++) { /* distinct: the row in the low half */
                    uint64_t hi = pat == 0 ? h_rand(&s) : pat == 1 ? i : pat == 2 ? n - i : h_rand(&s) % 3;
                    orig[i] = (hi << 32) | (uint32_t)~(uint32_t)(i * 7919u % 1000003u);
                }
                memcpy(sorted, orig, n * sizeof *a);
                qsort(sorted, n, sizeof *a, cmp_u64_desc);
                memcpy(a, orig, n * sizeof *a);
                k->keys_sort(a, n, tmp);
                cases++;
                if (memcmp(a, sorted, n * sizeof *a)) bad++;
                for (size_t t = 1; t <= n; t++) {
                    memcpy(a, orig, n * sizeof *a);
                    uint64_t kth = k->keys_top(a, n, t, tmp);
                    memcpy(got, a, t * sizeof *a);
                    qsort(got, t, sizeof *a, cmp_u64_desc);
                    cases++;
                    if (kth != sorted[t - 1] || memcmp(got, sorted, t * sizeof *a)) bad++;
                }
            }
    }
    if (bad) h_fail(__FILE__, __LINE__, "keys_top: %zu of %zu selections wrong", bad, cases);
    free(a), free(orig), free(sorted), free(got), free(tmp);
}

/* The merger's int8 screen kernel (16 rows of a packed panel x 16 queries) equals its C
 * reference exactly, extreme codes included, at several depths. */
void test_kernels_screen_dots(void)
{
    if (chrys_kernels_active()->dot_u8i8 != chrys_dot_u8i8_vnni) {
        fprintf(stderr, "    (no VNNI here: the reference alone is used)\n");
        return;
    }
    uint64_t s = 99;
    const size_t depths[3] = {1, 25, 256};
    for (int t = 0; t < 3; t++) {
        size_t d4 = depths[t];
        uint8_t *panel = chrys_malloc_aligned(d4 * 64);
        int8_t *q = malloc(16 * d4 * 4 + 4);
        for (size_t i = 0; i < d4 * 64; i++) panel[i] = t == 2 && i % 3 == 0 ? 255 : (uint8_t)h_rand(&s);
        for (size_t i = 0; i < 16 * d4 * 4; i++) q[i] = t == 2 && i % 5 == 0 ? -128 : (int8_t)h_rand(&s);
        int32_t a[256], b[256];
        chrys_screen_dots_vnni(panel, d4, q, d4 * 4, a);
        chrys_screen_dots_ref(panel, d4, q, d4 * 4, b);
        CHECK(!memcmp(a, b, sizeof a));
        chrys_free_aligned(panel);
        free(q);
    }
}

/* sumsq (vec_norm), mix (the merger's update) and mul (a stored row times its norm): every
 * level gives the reference's bits; sumsq at every length and alignment, with
 * values over many binades; zero exactly when every component is +-0. */
void test_kernels_sumsq(void)
{
    uint64_t s = h_seed + 93;
    float *v = malloc(1200 * sizeof *v);
    int tested = 0;
    for (size_t l = 0; l < sizeof LEVELS / sizeof *LEVELS; l++) {
        const chrys_kernels *k = chrys_kernels_level(LEVELS[l]);
        if (!k) continue;
        tested++;
        for (size_t n = 1; n <= 1100; n += n < 40 ? 1 : 61)
            for (size_t off = 0; off < 3; off++) {
                for (size_t i = 0; i < n + off; i++) v[i] = h_gauss(&s) * ldexpf(1.0f, (int)(h_rand(&s) % 40) - 20);
                CHECK(k->sumsq(v + off, n) == chrys_sumsq_ref(v + off, n));
            }
        /* mix and mul: the reference's bits (signed zeros, subnormals and large values too) */
        float *a = malloc(1200 * sizeof *a), *b = malloc(1200 * sizeof *b), *o1 = malloc(1200 * sizeof *o1),
              *o2 = malloc(1200 * sizeof *o2);
        for (size_t n = 1; n <= 1100; n += n < 40 ? 1 : 61) {
            for (size_t i = 0; i < n; i++) {
                a[i] = i % 17 == 0 ? -0.0f : h_gauss(&s) * ldexpf(1.0f, (int)(h_rand(&s) % 60) - 30);
                b[i] = i % 13 == 0 ? 1e-41f : h_gauss(&s) * ldexpf(1.0f, (int)(h_rand(&s) % 60) - 30);
            }
            double wa = 0.4 / 1.0000001, wb = 0.6 * 1.0000003;
            chrys_mix_ref(o1, a, wa, b, wb, n);
            k->mix(o2, a, wa, b, wb, n);
            CHECK(!memcmp(o1, o2, n * sizeof *o1));
            chrys_mul_ref(o1, a, 3.14159265358979, n);
            k->mul(o2, a, 3.14159265358979, n);
            CHECK(!memcmp(o1, o2, n * sizeof *o1));
        }
        free(a);
        free(b);
        free(o1);
        free(o2);
        for (size_t i = 0; i < 100; i++) v[i] = i % 3 ? 0.0f : -0.0f;
        CHECK(k->sumsq(v, 100) == 0.0);
        v[77] = 1e-45f; /* the smallest subnormal: its square is not zero in double */
        CHECK(k->sumsq(v, 100) > 0.0);
    }
    CHECK(tested >= 1);
    /* the reference is the sum it says: sixteen running sums, totalled pairwise */
    for (size_t i = 0; i < 40; i++) v[i] = (float)i;
    double want = 0;
    for (size_t i = 0; i < 40; i++) want += (double)i * i;
    CHECK(chrys_sumsq_ref(v, 40) == want); /* (small integers: exact in any order) */
    free(v);
}

/* The first stage's bound: the VNNI mask equals the reference's (fmaf, the same order) bit for
 * bit, on random terms and at thresholds placed exactly on bounds. */
void test_kernels_screen_mask(void)
{
    if (chrys_kernels_active()->dot_u8i8 != chrys_dot_u8i8_vnni) {
        fprintf(stderr, "    (no VNNI here: the reference alone is used)\n");
        return;
    }
    uint64_t s = h_seed + 91;
    size_t set = 0, total = 0;
    for (int t = 0; t < 200; t++) {
        int32_t dots[256];
        float rowp[64];
        chrys_screen_qp qp[16];
        for (int i = 0; i < 256; i++) dots[i] = (int32_t)(h_rand(&s) % 4000001) - 2000000;
        for (int i = 0; i < 64; i++) rowp[i] = (float)(h_rand(&s) % 100000) * (i < 16 ? 1e-9f : 1e-5f);
        size_t nq = 1 + (size_t)t % 16;
        for (size_t i = 0; i < nq; i++) {
            qp[i] = (chrys_screen_qp){(float)(h_rand(&s) % 1000) * 1e-5f, (float)(h_rand(&s) % 1000) * 1e-3f,
                                      (float)(h_rand(&s) % 1000) * 1e-5f, (float)(h_rand(&s) % 1000) * 1e-3f,
                                      0.0f, (int32_t)(h_rand(&s) % 200001) - 100000};
            /* a threshold on one row's bound exactly (computed as the reference does), or random */
            size_t r = h_rand(&s) % 16;
            float ub = (float)(dots[i * 16 + r] - qp[i].off) * (qp[i].s * rowp[r]);
            ub = fmaf(qp[i].zq, rowp[16 + r], ub);
            ub = fmaf(qp[i].eq, rowp[32 + r], ub);
            ub = fmaf(qp[i].rq, rowp[48 + r], ub);
            qp[i].thr = t % 2 ? ub : (float)(h_rand(&s) % 2000) * 1e-3f - 1.0f;
        }
        uint16_t a[16], b[16];
        chrys_screen_mask_vnni(dots, nq, rowp, qp, a);
        chrys_screen_mask_ref(dots, nq, rowp, qp, b);
        CHECK(!memcmp(a, b, nq * sizeof *a));
        for (size_t i = 0; i < nq; i++) set += (size_t)__builtin_popcount(a[i]), total += 16;
    }
    CHECK(set > total / 10 && set < total * 9 / 10); /* the thresholds cut */
}

/* vec_scale_to's kernels give the scalar loop's bits at every level, in place too; the screen's
 * coding gives the reference's codes, scale and sum (both layouts, both signs of code, every
 * tail length), and its two error norms to within rounding. */
void test_kernels_scale_and_code(void)
{
    const chrys_kernels *ref = chrys_kernels_level("scalar");
    CHECK(ref != NULL && ref->scale_to && ref->screen_code);
    uint64_t s = h_seed + 77;
    const size_t nmax = 1100;
    float *v = malloc(nmax * sizeof *v), *a = malloc(nmax * sizeof *a), *b = malloc(nmax * sizeof *b);
    uint8_t *ca = malloc((nmax / 4 + 1) * 64), *cb = malloc((nmax / 4 + 1) * 64);
    int tested = 0;
    for (size_t l = 0; l < sizeof LEVELS / sizeof *LEVELS; l++) {
        const chrys_kernels *k = chrys_kernels_level(LEVELS[l]);
        if (!k) continue;
        tested++;
        for (size_t n = 1; n <= nmax; n += n < 70 ? 1 : 97) {
            for (size_t i = 0; i < n; i++) v[i] = h_gauss(&s) * (i % 7 == 3 ? 1e-3f : 1.0f);
            if (n > 8) v[n / 2] = -4.0f * fabsf(v[n / 2]) - 3.0f; /* a clear maximum, negative */
            double nr = vec_norm(v, n);
            ref->scale_to(a, v, n, nr);
            k->scale_to(b, v, n, nr);
            CHECK(!memcmp(a, b, n * sizeof *a));
            memcpy(b, v, n * sizeof *b);
            k->scale_to(b, b, n, nr);
            CHECK(!memcmp(a, b, n * sizeof *a));
            for (int layout = 0; layout < 2; layout++)
                for (int uns = 0; uns < 2; uns++) {
                    size_t stride4 = layout ? 64 : 4, bytes = ((n + 3) / 4) * stride4;
                    memset(ca, 0xA5, bytes);
                    memset(cb, 0xA5, bytes);
                    double sa, ea, ha, sb, eb, hb;
                    int64_t suma = ref->screen_code(a, (uint32_t)n, ca, stride4, uns, &sa, &ea, &ha);
                    int64_t sumb = k->screen_code(a, (uint32_t)n, cb, stride4, uns, &sb, &eb, &hb);
                    size_t bad = 0;
                    for (size_t i = 0; i < n; i++) bad += ca[(i / 4) * stride4 + i % 4] != cb[(i / 4) * stride4 + i % 4];
                    if (bad) h_fail(__FILE__, __LINE__, "%s screen_code n=%zu layout %d: %zu codes differ", k->name, n, layout, bad);
                    CHECK_EQ(suma, sumb);
                    CHECK(sa == sb);
                    CHECK(fabs(ea - eb) <= 1e-12 * ea + 1e-300 && fabs(ha - hb) <= 1e-12 * ha);
                    /* the error norm bounds the true error: |x - s c| from the codes */
                    double e2 = 0;
                    for (size_t i = 0; i < n; i++) {
                        int c = uns ? (int)cb[(i / 4) * stride4 + i % 4] - 128 : (int)(int8_t)cb[(i / 4) * stride4 + i % 4];
                        CHECK(c >= -127 && c <= 127);
                        double d = (double)a[i] - sb * c;
                        e2 += d * d;
                    }
                    CHECK(sqrt(e2) <= eb);
                }
        }
    }
    CHECK(tested >= 1 || !chrys_kernels_level("avx2"));
    free(v);
    free(a);
    free(b);
    free(ca);
    free(cb);
}

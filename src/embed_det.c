/*
 * embed_det.c: the deterministic offline embedding provider, bit-for-bit compatible with the
 * Chrysalis pipeline's (projects/KnowledgeBuilder/src/utils/embeddings.py, _deterministic_embed):
 *
 *     h = sha256(text.encode("utf-8")).hexdigest(); seed = int(h[:8], 16)
 *     vec = numpy.random.default_rng(seed).random(dim, dtype=float32)
 *     vec = vec / numpy.linalg.norm(vec)
 *
 * Reproducing that needs three pieces of numpy, written out here:
 *  1. SeedSequence(seed): the entropy-mixing hash that turns the seed into a 128-bit state and
 *     increment (numpy/random/bit_generator.pyx: hashmix, mix, mix_entropy, generate_state);
 *  2. PCG64 (XSL-RR 128/64) seeded from those four words, and numpy's float32 draw:
 *     (next_uint32 >> 8) * 2^-24, with next_uint32 handing out the low then the high half of
 *     each 64-bit output;
 *  3. the float32 norm. Its bits depend on the order of the float32 sum of squares, which is
 *     the BLAS sdot of the machine that made the data. Searching the orders against the 920
 *     deterministic rows of ../shared/data/chrysalis found exactly one that reproduces all 920:
 *     8 accumulators of 4 lanes with fused multiply-add (a NEON-style kernel: 32 floats per
 *     step), accumulators added in adjacent pairs ((a0+a1)+(a2+a3))+((a4+a5)+(a6+a7)), then the 4
 *     lanes in adjacent pairs (l0+l1)+(l2+l3). Then sqrt in float32 and a float32 division.
 *     Verified bit for bit at dim 1024 (tests/unit/test_embed.c); for a dim that is not a
 *     multiple of 32 the remaining squares are added one by one afterwards (our choice: no
 *     reference data exists for those).
 * Speed: about 1 us of SHA-256 and 2-3 us of PCG64 per 1024-d text, far above 50,000 texts/s.
 */
#include <math.h>

#include "embed.h"

/* ---- numpy SeedSequence (pool size 4, uint32 words) ---- */
#define SS_INIT_A 0x43b0d7e5u
#define SS_MULT_A 0x931e8875u
#define SS_INIT_B 0x8b51f9ddu
#define SS_MULT_B 0x58f38dedu
#define SS_MIX_MULT_L 0xca01f9ddu
#define SS_MIX_MULT_R 0x4973f715u
#define SS_XSHIFT 16

static uint32_t hashmix(uint32_t value, uint32_t *hash_const)
{
    value ^= *hash_const;
    *hash_const *= SS_MULT_A;
    value *= *hash_const;
    value ^= value >> SS_XSHIFT;
    return value;
}

static uint32_t mix(uint32_t x, uint32_t y)
{
    uint32_t r = SS_MIX_MULT_L * x - SS_MIX_MULT_R * y;
    return r ^ (r >> SS_XSHIFT);
}

/* SeedSequence(entropy).generate_state(4, uint64) for a seed below 2^32 (one entropy word). */
static void seed_sequence_4x64(uint32_t seed, uint64_t out[4])
{
    uint32_t pool[4], hc = SS_INIT_A;
    const uint32_t entropy[1] = {seed};
    for (int i = 0; i < 4; i++) pool[i] = hashmix(i < 1 ? entropy[i] : 0u, &hc);
    for (int src = 0; src < 4; src++)
        for (int dst = 0; dst < 4; dst++)
            if (src != dst) pool[dst] = mix(pool[dst], hashmix(pool[src], &hc));
    uint32_t words[8], hb = SS_INIT_B;
    for (int i = 0; i < 8; i++) {
        uint32_t v = pool[i % 4];
        v ^= hb;
        hb *= SS_MULT_B;
        v *= hb;
        v ^= v >> SS_XSHIFT;
        words[i] = v;
    }
    for (int i = 0; i < 4; i++) out[i] = (uint64_t)words[2 * i] | ((uint64_t)words[2 * i + 1] << 32);
}

/* ---- PCG64 (XSL-RR), as numpy's pcg64.h ---- */
typedef unsigned __int128 u128;
typedef struct pcg64 {
    u128 state, inc;
    int has_u32;
    uint32_t u32;
} pcg64;

static const u128 PCG_MULT = ((u128)0x2360ED051FC65DA4ULL << 64) | 0x4385DF649FCCF645ULL;

static inline void pcg_step(pcg64 *r) { r->state = r->state * PCG_MULT + r->inc; }

static inline uint64_t pcg_next64(pcg64 *r)
{
    pcg_step(r);
    uint64_t x = (uint64_t)(r->state >> 64) ^ (uint64_t)r->state;
    unsigned rot = (unsigned)(r->state >> 122);
    return (x >> rot) | (x << ((64 - rot) & 63));
}

static inline uint32_t pcg_next32(pcg64 *r)
{
    if (r->has_u32) {
        r->has_u32 = 0;
        return r->u32;
    }
    uint64_t v = pcg_next64(r);
    r->has_u32 = 1;
    r->u32 = (uint32_t)(v >> 32);
    return (uint32_t)v;
}

static void pcg_seed(pcg64 *r, uint32_t seed)
{
    uint64_t w[4];
    seed_sequence_4x64(seed, w);
    u128 initstate = ((u128)w[0] << 64) | w[1], initseq = ((u128)w[2] << 64) | w[3];
    r->state = 0;
    r->inc = (initseq << 1) | 1u;
    pcg_step(r);
    r->state += initstate;
    pcg_step(r);
    r->has_u32 = 0;
    r->u32 = 0;
}

/* float32 norm in the order described at the top of the file. */
static float norm_f32(const float *v, size_t n)
{
    float acc[8][4] = {{0}};
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int a = 0; a < 8; a++)
            for (int l = 0; l < 4; l++) acc[a][l] = fmaf(v[i + 4 * a + l], v[i + 4 * a + l], acc[a][l]);
    float p[4];
    for (int l = 0; l < 4; l++) {
        float s01 = acc[0][l] + acc[1][l], s23 = acc[2][l] + acc[3][l];
        float s45 = acc[4][l] + acc[5][l], s67 = acc[6][l] + acc[7][l];
        p[l] = (s01 + s23) + (s45 + s67);
    }
    float s = (p[0] + p[1]) + (p[2] + p[3]);
    for (; i < n; i++) s = fmaf(v[i], v[i], s);
    return sqrtf(s);
}

uint32_t embed_det_seed(const char *text, size_t len)
{
    unsigned char d[32];
    chrys_sha256(text, len, d);
    return ((uint32_t)d[0] << 24) | ((uint32_t)d[1] << 16) | ((uint32_t)d[2] << 8) | d[3];
}

int chrys_embed_deterministic(const char *text, size_t len, uint32_t dim, float *out)
{
    if ((!text && len) || !out || dim < 1 || dim > CHRYS_MAX_DIM) return CHRYS_INVALID;
    pcg64 r;
    pcg_seed(&r, embed_det_seed(text ? text : "", len));
    for (uint32_t i = 0; i < dim; i++) out[i] = (float)(pcg_next32(&r) >> 8) * (1.0f / 16777216.0f);
    float nrm = norm_f32(out, dim);
    if (nrm > 0)
        for (uint32_t i = 0; i < dim; i++) out[i] = out[i] / nrm;
    return CHRYS_OK;
}

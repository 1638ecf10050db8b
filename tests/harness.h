/*
 * harness.h: a small test harness. CHECK* work under NDEBUG (never assert()), report file, line
 * and expression, and let the test go on; a test fails if any of its checks failed. The runner
 * ends with the line "N passed, N failed". Randomised tests take their seed from TEST_SEED
 * (default fixed) and print it when they fail.
 */
#ifndef CHRYS_TEST_HARNESS_H
#define CHRYS_TEST_HARNESS_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int h_check_failures;
extern uint64_t h_seed;
void h_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The whole file, NUL-terminated (free it); NULL if it cannot be read. */
void *h_read_file(const char *path, size_t *len);

#define CHECK(x)                                                        \
    do {                                                                \
        if (!(x)) h_fail(__FILE__, __LINE__, "CHECK(%s)", #x);          \
    } while (0)
#define CHECK_EQ(a, b)                                                                        \
    do {                                                                                      \
        long long _a = (long long)(a), _b = (long long)(b);                                   \
        if (_a != _b) h_fail(__FILE__, __LINE__, "CHECK_EQ(%s, %s): %lld != %lld", #a, #b, _a, _b); \
    } while (0)
#define CHECK_NEAR(a, b, tol)                                                                     \
    do {                                                                                          \
        double _a = (double)(a), _b = (double)(b), _t = (double)(tol);                            \
        if (!(fabs(_a - _b) <= _t))                                                               \
            h_fail(__FILE__, __LINE__, "CHECK_NEAR(%s, %s, %s): %.9g vs %.9g", #a, #b, #tol, _a, _b); \
    } while (0)
#define CHECK_STR_CONTAINS(s, sub)                                                              \
    do {                                                                                        \
        const char *_s = (s);                                                                   \
        if (!_s || !strstr(_s, (sub)))                                                          \
            h_fail(__FILE__, __LINE__, "CHECK_STR_CONTAINS(%s, \"%s\"): got \"%s\"", #s, (sub), \
                   _s ? _s : "(null)");                                                         \
    } while (0)

typedef struct test_case {
    const char *name;
    void (*fn)(void);
} test_case;

/* Deterministic PRNG for tests (splitmix64). */
static inline uint64_t h_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static inline float h_uniform(uint64_t *s) { return (float)((h_rand(s) >> 11) * (1.0 / 9007199254740992.0)); }
static inline float h_gauss(uint64_t *s)
{
    double u1 = ((h_rand(s) >> 11) + 1.0) * (1.0 / 9007199254740993.0), u2 = h_uniform(s);
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

/* n x d rows around nc Gaussian centres, spread = noise / centre scale (caller frees). */
static inline float *h_clustered(uint64_t *s, size_t n, size_t d, size_t nc, float spread)
{
    float *c = malloc(nc * d * sizeof(float)), *x = malloc(n * d * sizeof(float));
    for (size_t i = 0; i < nc * d; i++) c[i] = h_gauss(s);
    for (size_t r = 0; r < n; r++) {
        size_t k = h_rand(s) % nc;
        for (size_t i = 0; i < d; i++) x[r * d + i] = c[k * d + i] + spread * h_gauss(s);
    }
    free(c);
    return x;
}

#endif

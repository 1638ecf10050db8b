/*
 * test_index.c: the Flat index against a float64 brute-force oracle written here, on every search
 * path (single query, small batch on SIMD kernels, large batch on sgemm; 1 and 2 threads; all
 * three metrics), plus ties, thresholds, mutation, bad input and concurrent readers.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../harness.h"
#include "chrysalis.h"
#include "index.h"
#include "internal.h"
#include "tests.h"

/* float64 brute force: the library's score of (query, row) (cosine: both scaled to unit); shared
 * with test_search.c. */
double h_oracle_score(int metric, const float *q, const float *x, size_t d)
{
    double dot = 0, qq = 0, xx = 0, l2 = 0;
    for (size_t i = 0; i < d; i++) {
        dot += (double)q[i] * x[i];
        qq += (double)q[i] * q[i];
        xx += (double)x[i] * x[i];
        l2 += ((double)q[i] - x[i]) * ((double)q[i] - x[i]);
    }
    if (metric == CHRYS_METRIC_COSINE) return dot / (sqrt(qq) * sqrt(xx));
    if (metric == CHRYS_METRIC_IP) return dot;
    return l2;
}

static chrys_index *make_index(int metric, uint32_t d)
{
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = d;
    o.metric = (chrys_metric)metric;
    chrys_index *ix = NULL;
    CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_OK);
    return ix;
}

/* Clustered random data: rows near a few centres, so scores are close together (a hard case). */
static float *random_data(uint64_t *s, size_t n, size_t d, int clustered)
{
    float *x = malloc(n * d * sizeof(float));
    float *c = malloc(8 * d * sizeof(float));
    for (size_t i = 0; i < 8 * d; i++) c[i] = h_gauss(s);
    for (size_t r = 0; r < n; r++)
        for (size_t i = 0; i < d; i++)
            x[r * d + i] = clustered ? c[(r % 8) * d + i] + 0.3f * h_gauss(s) : h_gauss(s);
    free(c);
    return x;
}

/* Compare hits with the oracle: same scores (to 1e-5 relative), and a different id at a rank is
 * allowed only where the oracle's two scores are within 1e-5 (a near-tie). */
static void check_against_oracle(int metric, const float *base, const uint64_t *ids, size_t n, size_t d,
                                 const float *q, size_t nq, const chrys_hit *hits, size_t k, const char *what)
{
    double *sc = malloc(n * sizeof(double));
    size_t *order = malloc(n * sizeof(size_t));
    int reported = 0;
    for (size_t qi = 0; qi < nq && reported < 3; qi++) {
        for (size_t r = 0; r < n; r++) {
            sc[r] = h_oracle_score(metric, q + qi * d, base + r * d, d);
            order[r] = r;
        }
        /* partial selection sort of the k best (higher better, L2 lower better; ties by id) */
        for (size_t j = 0; j < k && j < n; j++) {
            size_t best = j;
            for (size_t r = j + 1; r < n; r++) {
                double a = sc[order[r]], b = sc[order[best]];
                int better = metric == CHRYS_METRIC_L2 ? a < b : a > b;
                if (better || (a == b && ids[order[r]] < ids[order[best]])) best = r;
            }
            size_t t = order[j];
            order[j] = order[best];
            order[best] = t;
        }
        for (size_t j = 0; j < k; j++) {
            const chrys_hit *h = &hits[qi * k + j];
            if (j >= n) {
                if (h->id != CHRYS_NO_ID) {
                    h_fail(__FILE__, __LINE__, "%s: query %zu rank %zu should be padding", what, qi, j);
                    reported++;
                }
                continue;
            }
            double want = sc[order[j]];
            double tol = 1e-5 * (1 + fabs(want));
            if (fabs(h->score - want) > tol) {
                h_fail(__FILE__, __LINE__, "%s: query %zu rank %zu: score %.9g, oracle %.9g", what, qi, j, h->score, want);
                reported++;
            }
            if (h->id != ids[order[j]]) {
                size_t slot = n;
                for (size_t r = 0; r < n; r++)
                    if (ids[r] == h->id) slot = r;
                if (slot == n || fabs(sc[slot] - want) > tol) {
                    h_fail(__FILE__, __LINE__, "%s: query %zu rank %zu: id %llu, oracle id %llu", what, qi, j,
                           (unsigned long long)h->id, (unsigned long long)ids[order[j]]);
                    reported++;
                }
            }
        }
    }
    free(sc);
    free(order);
}

void test_index_exact_all_paths(void)
{
    uint64_t s = h_seed;
    const size_t dims[] = {1, 7, 64, 129};
    for (int metric = 0; metric < 3; metric++)
        for (size_t di = 0; di < 4; di++) {
            size_t d = dims[di], n = 700;
            float *base = random_data(&s, n, d, di % 2);
            uint64_t *ids = malloc(n * sizeof *ids);
            for (size_t i = 0; i < n; i++) ids[i] = (i * 7919) % 100003; /* scrambled, unique */
            chrys_index *ix = make_index(metric, (uint32_t)d);
            CHECK_EQ(chrys_index_add(ix, n, ids, base, NULL), CHRYS_OK);
            /* 100: the queries split over the workers (a small base) and, for l2, the sgemm path */
            const size_t nqs[] = {1, 5, 40, 100};
            for (size_t qn = 0; qn < 4; qn++) {
                size_t nq = nqs[qn];
                float *q = random_data(&s, nq, d, di % 2);
                for (uint32_t threads = 1; threads <= 2; threads++) {
                    const size_t ks[] = {1, 10, 800};
                    for (size_t ki = 0; ki < 3; ki++) {
                        size_t k = ks[ki];
                        chrys_search_opts so;
                        chrys_search_opts_init(&so);
                        so.k = (uint32_t)k;
                        so.n_threads = threads;
                        chrys_hit *hits = malloc(nq * k * sizeof *hits);
                        CHECK_EQ(chrys_index_search(ix, nq, q, &so, hits), CHRYS_OK);
                        char what[96];
                        snprintf(what, sizeof what, "metric %d dim %zu nq %zu k %zu threads %u", metric, d, nq, k, threads);
                        check_against_oracle(metric, base, ids, n, d, q, nq, hits, k, what);
                        free(hits);
                    }
                }
                free(q);
            }
            chrys_index_free(ix);
            free(base);
            free(ids);
        }
}

void test_index_ties_break_by_id(void)
{
    /* 50 identical vectors inserted with descending ids: every path must return ascending ids. */
    size_t d = 32, n = 50;
    float *x = malloc(n * d * sizeof(float));
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t r = 0; r < n; r++) {
        for (size_t i = 0; i < d; i++) x[r * d + i] = (float)(i % 5) + 1;
        ids[r] = 1000 - r * 3;
    }
    for (int metric = 0; metric < 3; metric++) {
        chrys_index *ix = make_index(metric, (uint32_t)d);
        CHECK_EQ(chrys_index_add(ix, n, ids, x, NULL), CHRYS_OK);
        for (size_t nq = 1; nq <= 64; nq += 63) {
            chrys_search_opts so;
            chrys_search_opts_init(&so);
            so.k = 10;
            chrys_hit *hits = malloc(nq * 10 * sizeof *hits);
            float *q = malloc(nq * d * sizeof(float));
            for (size_t i = 0; i < nq * d; i++) q[i] = x[i % d];
            CHECK_EQ(chrys_index_search(ix, nq, q, &so, hits), CHRYS_OK);
            for (size_t qi = 0; qi < nq; qi++)
                for (size_t j = 0; j < 10; j++) CHECK_EQ(hits[qi * 10 + j].id, 1000 - (n - 1 - j) * 3);
            free(hits);
            free(q);
        }
        chrys_index_free(ix);
    }
    free(x);
    free(ids);
}

void test_index_threshold(void)
{
    uint64_t s = h_seed + 5;
    size_t d = 16, n = 300;
    float *x = random_data(&s, n, d, 1);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i;
    for (int metric = 0; metric < 3; metric++) {
        chrys_index *ix = make_index(metric, (uint32_t)d);
        CHECK_EQ(chrys_index_add(ix, n, ids, x, NULL), CHRYS_OK);
        for (size_t nq = 1; nq <= 40; nq += 39) {
            chrys_search_opts so;
            chrys_search_opts_init(&so);
            so.k = 300;
            so.use_threshold = 1;
            so.threshold = metric == CHRYS_METRIC_COSINE ? 0.85f : metric == CHRYS_METRIC_IP ? 5.0f : 10.0f;
            chrys_hit *hits = malloc(nq * so.k * sizeof *hits);
            CHECK_EQ(chrys_index_search(ix, nq, x, &so, hits), CHRYS_OK);
            for (size_t qi = 0; qi < nq; qi++) {
                size_t expect = 0, got = 0;
                for (size_t r = 0; r < n; r++) {
                    double sc = h_oracle_score(metric, x + qi * d, x + r * d, d);
                    if (metric == CHRYS_METRIC_L2 ? sc <= so.threshold : sc >= so.threshold) expect++;
                }
                for (size_t j = 0; j < so.k; j++) {
                    const chrys_hit *h = &hits[qi * so.k + j];
                    if (h->id == CHRYS_NO_ID) break;
                    got++;
                    CHECK(metric == CHRYS_METRIC_L2 ? h->score <= so.threshold : h->score >= so.threshold);
                }
                CHECK_EQ(got, expect);
                CHECK(expect >= 1); /* the query itself is in the index */
            }
            free(hits);
        }
        chrys_index_free(ix);
    }
    free(x);
    free(ids);
}

void test_index_mutation(void)
{
    size_t d = 8;
    chrys_index *ix = make_index(CHRYS_METRIC_COSINE, (uint32_t)d);
    float v[3][8] = {{1, 0, 0, 0, 0, 0, 0, 0}, {0, 2, 0, 0, 0, 0, 0, 0}, {0, 0, 3, 0, 0, 0, 0, 0}};
    uint64_t ids[3] = {10, 20, 30};
    const char *meta[3] = {"{\"a\":1}", NULL, "{\"c\":3}"};
    CHECK_EQ(chrys_index_add(ix, 3, ids, &v[0][0], meta), CHRYS_OK);
    float out[8];
    CHECK_EQ(chrys_index_get(ix, 20, out), CHRYS_OK);
    CHECK_NEAR(out[1], 2.0, 1e-6); /* get returns the vector as given (norm kept) */
    const char *m;
    CHECK_EQ(chrys_index_get_meta(ix, 10, &m), CHRYS_OK);
    CHECK(m && !strcmp(m, "{\"a\":1}"));
    CHECK_EQ(chrys_index_get_meta(ix, 20, &m), CHRYS_OK);
    CHECK(m == NULL);
    CHECK_EQ(chrys_index_remove(ix, 10), CHRYS_OK);
    CHECK_EQ(chrys_index_remove(ix, 10), CHRYS_NOTFOUND);
    CHECK(!chrys_index_contains(ix, 10));
    CHECK(chrys_index_contains(ix, 30));
    CHECK_EQ(chrys_index_get_meta(ix, 30, &m), CHRYS_OK); /* moved into the freed slot */
    CHECK(m && !strcmp(m, "{\"c\":3}"));
    float nv[8] = {0, 0, 0, 0, 0, 0, 0, 5};
    CHECK_EQ(chrys_index_update(ix, 30, nv), CHRYS_OK);
    CHECK_EQ(chrys_index_update(ix, 99, nv), CHRYS_NOTFOUND);
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.k = 2;
    chrys_hit hits[2];
    CHECK_EQ(chrys_index_search(ix, 1, nv, &so, hits), CHRYS_OK);
    CHECK_EQ(hits[0].id, 30);
    CHECK_NEAR(hits[0].score, 1.0, 1e-6);
    CHECK_EQ(hits[1].id, 20);
    CHECK_NEAR(hits[1].score, 0.0, 1e-6);
    chrys_index_info info = {sizeof info};
    CHECK_EQ(chrys_index_get_info(ix, &info), CHRYS_OK);
    CHECK_EQ(info.count, 2);
    CHECK_EQ(info.dim, 8);
    /* k larger than the index: padded. */
    so.k = 4;
    chrys_hit h4[4];
    CHECK_EQ(chrys_index_search(ix, 1, nv, &so, h4), CHRYS_OK);
    CHECK_EQ(h4[2].id, CHRYS_NO_ID);
    CHECK(isinf(h4[3].score) && h4[3].score < 0);
    chrys_index_free(ix);
    /* Many removes interleaved with adds keep the id map and rows consistent. */
    uint64_t s = h_seed + 9;
    ix = make_index(CHRYS_METRIC_L2, 4);
    char present[2000] = {0};
    for (int step = 0; step < 20000; step++) {
        uint64_t id = h_rand(&s) % 2000;
        float row[4] = {(float)id, 1, 2, 3};
        if (present[id]) {
            CHECK_EQ(chrys_index_remove(ix, id), CHRYS_OK);
            present[id] = 0;
        } else {
            CHECK_EQ(chrys_index_add(ix, 1, &id, row, NULL), CHRYS_OK);
            present[id] = 1;
        }
    }
    size_t count = 0;
    for (uint64_t id = 0; id < 2000; id++) {
        CHECK_EQ(chrys_index_contains(ix, id), present[id]);
        if (present[id]) {
            count++;
            float row[4];
            CHECK_EQ(chrys_index_get(ix, id, row), CHRYS_OK);
            CHECK_EQ((long long)row[0], (long long)id);
        }
    }
    CHECK_EQ(chrys_index_get_info(ix, &info), CHRYS_OK);
    CHECK_EQ(info.count, count);
    chrys_index_free(ix);
}

void test_index_bad_input(void)
{
    size_t d = 4;
    chrys_index *ix = make_index(CHRYS_METRIC_COSINE, (uint32_t)d);
    float good[8] = {1, 2, 3, 4, 4, 3, 2, 1};
    uint64_t ids[2] = {1, 2};
    CHECK_EQ(chrys_index_add(ix, 2, ids, good, NULL), CHRYS_OK);
    float nan_rows[8] = {1, 2, 3, 4, 1, NAN, 3, 4};
    uint64_t ids2[2] = {3, 4};
    CHECK_EQ(chrys_index_add(ix, 2, ids2, nan_rows, NULL), CHRYS_INVALID);
    CHECK_STR_CONTAINS(chrys_index_errmsg(ix), "row 1: component 1 is NaN");
    float inf_rows[4] = {INFINITY, 0, 0, 0};
    CHECK_EQ(chrys_index_add(ix, 1, ids2, inf_rows, NULL), CHRYS_INVALID);
    CHECK_STR_CONTAINS(chrys_index_errmsg(ix), "infinite");
    float zero[4] = {0, 0, 0, 0};
    CHECK_EQ(chrys_index_add(ix, 1, ids2, zero, NULL), CHRYS_INVALID);
    CHECK_STR_CONTAINS(chrys_index_errmsg(ix), "zero vector");
    uint64_t dup[2] = {5, 5};
    CHECK_EQ(chrys_index_add(ix, 2, dup, good, NULL), CHRYS_EXISTS);
    CHECK_STR_CONTAINS(chrys_index_errmsg(ix), "duplicate id 5");
    uint64_t dup_existing[2] = {6, 1};
    CHECK_EQ(chrys_index_add(ix, 2, dup_existing, good, NULL), CHRYS_EXISTS);
    CHECK_STR_CONTAINS(chrys_index_errmsg(ix), "row 1: duplicate id 1");
    uint64_t reserved = CHRYS_NO_ID;
    CHECK_EQ(chrys_index_add(ix, 1, &reserved, good, NULL), CHRYS_INVALID);
    CHECK_EQ(chrys_index_update(ix, 1, nan_rows + 4), CHRYS_INVALID);
    CHECK_EQ(chrys_index_update(ix, 1, zero), CHRYS_INVALID);
    /* Nothing of the failed batches went in; id 6 was not half-added. */
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(ix, &info);
    CHECK_EQ(info.count, 2);
    CHECK(!chrys_index_contains(ix, 6));
    CHECK(!chrys_index_contains(ix, 3));
    /* Search argument checks. */
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    chrys_hit h[10];
    so.k = 0;
    CHECK_EQ(chrys_index_search(ix, 1, good, &so, h), CHRYS_INVALID);
    so.k = 1;
    CHECK_EQ(chrys_index_search(ix, 1, zero, &so, h), CHRYS_INVALID);
    CHECK_EQ(chrys_index_search(ix, 1, nan_rows + 4, &so, h), CHRYS_INVALID);
    so.use_threshold = 1;
    so.threshold = NAN;
    CHECK_EQ(chrys_index_search(ix, 1, good, &so, h), CHRYS_INVALID);
    chrys_index_free(ix);
    /* Zero vectors are fine under L2 and IP. */
    ix = make_index(CHRYS_METRIC_L2, 4);
    CHECK_EQ(chrys_index_add(ix, 1, ids, zero, NULL), CHRYS_OK);
    chrys_index_free(ix);
    /* Bad options. */
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    char *msg = NULL;
    CHECK_EQ(chrys_index_new(&o, &ix, &msg), CHRYS_INVALID);
    CHECK(ix == NULL);
    CHECK_STR_CONTAINS(msg, "dim 0 out of range");
    chrys_free(msg);
    o.dim = CHRYS_MAX_DIM + 1;
    CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_INVALID);
    o.dim = 4;
    o.metric = (chrys_metric)7;
    CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_INVALID);
}

typedef struct conc_arg {
    const chrys_index *ix;
    const float *q;
    size_t nq;
    const chrys_hit *expect;
    int mismatches;
} conc_arg;

static void *conc_worker(void *p)
{
    conc_arg *a = p;
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.k = 10;
    so.n_threads = 2;
    chrys_hit *h = malloc(a->nq * 10 * sizeof *h);
    for (int rep = 0; rep < 5; rep++) {
        size_t nq = rep % 2 ? a->nq : 3; /* both paths */
        if (chrys_index_search(a->ix, nq, a->q, &so, h) != CHRYS_OK) a->mismatches++;
        for (size_t i = 0; i < nq * 10; i++)
            if (h[i].id != a->expect[i].id || h[i].score != a->expect[i].score) a->mismatches++;
    }
    free(h);
    return NULL;
}

void test_index_concurrent_search(void)
{
    uint64_t s = h_seed + 11;
    size_t d = 48, n = 3000, nq = 40;
    float *x = random_data(&s, n, d, 1), *q = random_data(&s, nq, d, 1);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i * 3;
    chrys_index *ix = make_index(CHRYS_METRIC_COSINE, (uint32_t)d);
    CHECK_EQ(chrys_index_add(ix, n, ids, x, NULL), CHRYS_OK);
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.k = 10;
    chrys_hit *expect = malloc(nq * 10 * sizeof *expect), *small = malloc(3 * 10 * sizeof *small);
    CHECK_EQ(chrys_index_search(ix, nq, q, &so, expect), CHRYS_OK);
    CHECK_EQ(chrys_index_search(ix, 3, q, &so, small), CHRYS_OK);
    /* The SIMD path (3 queries) and the sgemm path (40) agree exactly after double rescoring. */
    for (size_t i = 0; i < 30; i++) {
        CHECK_EQ(small[i].id, expect[i].id);
        CHECK(small[i].score == expect[i].score);
    }
    pthread_t t[4];
    conc_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (conc_arg){ix, q, nq, expect, 0};
        pthread_create(&t[i], NULL, conc_worker, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(args[i].mismatches, 0);
    }
    chrys_index_free(ix);
    free(x);
    free(q);
    free(ids);
    free(expect);
    free(small);
}

void test_index_near_ties_exact(void)
{
    /* 400 rows whose inner products with the query differ by about 1e-7 relative: float32 cannot
     * rank them, so the candidate pool must widen until the double-precision top-k is certain.
     * The result must equal a float64 brute force exactly (ids and order). */
    uint64_t s = h_seed + 21;
    size_t d = 64, n = 400, k = 10;
    float *x = malloc(n * d * sizeof(float)), q[64];
    for (size_t i = 0; i < d; i++) q[i] = 1.0f + 0.25f * h_uniform(&s);
    for (size_t r = 0; r < n; r++)
        for (size_t i = 0; i < d; i++) x[r * d + i] = q[i] * (1.0f + 2e-7f * (float)(h_rand(&s) % 3));
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t r = 0; r < n; r++) ids[r] = n - r;
    for (int pass = 0; pass < 2; pass++) {
        chrys_index *ix = make_index(CHRYS_METRIC_IP, (uint32_t)d);
        CHECK_EQ(chrys_index_add(ix, n, ids, x, NULL), CHRYS_OK);
        size_t nq = pass ? 40 : 1; /* SIMD path and sgemm path */
        float *qs = malloc(nq * d * sizeof(float));
        for (size_t i = 0; i < nq; i++) memcpy(qs + i * d, q, sizeof q);
        chrys_search_opts so;
        chrys_search_opts_init(&so);
        so.k = (uint32_t)k;
        chrys_hit *hits = malloc(nq * k * sizeof *hits);
        CHECK_EQ(chrys_index_search(ix, nq, qs, &so, hits), CHRYS_OK);
        double sc[400];
        size_t order[400];
        for (size_t r = 0; r < n; r++) {
            sc[r] = 0;
            for (size_t i = 0; i < d; i++) sc[r] += (double)q[i] * x[r * d + i];
            order[r] = r;
        }
        for (size_t j = 0; j < k; j++) {
            size_t b = j;
            for (size_t r = j + 1; r < n; r++)
                if (sc[order[r]] > sc[order[b]] || (sc[order[r]] == sc[order[b]] && ids[order[r]] < ids[order[b]])) b = r;
            size_t t = order[j];
            order[j] = order[b];
            order[b] = t;
        }
        size_t wrong = 0;
        for (size_t qi = 0; qi < nq; qi++)
            for (size_t j = 0; j < k; j++) wrong += hits[qi * k + j].id != ids[order[j]];
        CHECK_EQ(wrong, 0);
        free(hits);
        free(qs);
        chrys_index_free(ix);
    }
    free(x);
    free(ids);
}

/* chrys_index_score: the exact double of each chosen row, equal (rounded to float) to the score
 * search returns for it; missing ids and bad queries refused. */
void test_index_score_exact(void)
{
    size_t n = 300, d = 24, nq = 7, k = 10;
    uint64_t s = h_seed;
    for (int metric = 0; metric < 3; metric++) {
        float *x = random_data(&s, n, d, 1), *q = random_data(&s, nq, d, 1);
        chrys_index *ix = make_index(metric, (uint32_t)d);
        uint64_t *ids = malloc(n * sizeof *ids);
        for (size_t i = 0; i < n; i++) ids[i] = 1000 + i;
        CHECK_EQ(chrys_index_add(ix, n, ids, x, NULL), CHRYS_OK);
        chrys_search_opts so;
        chrys_search_opts_init(&so);
        so.k = (uint32_t)k;
        chrys_hit hits[7 * 10];
        CHECK_EQ(chrys_index_search(ix, nq, q, &so, hits), CHRYS_OK);
        uint64_t hid[7 * 10];
        double sc[7 * 10];
        for (size_t i = 0; i < nq * k; i++) hid[i] = hits[i].id;
        CHECK_EQ(chrys_index_score(ix, nq, q, k, hid, sc), CHRYS_OK);
        for (size_t i = 0; i < nq * k; i++) CHECK((float)sc[i] == hits[i].score);
        for (size_t i = 0; i < nq; i++) /* best first: the doubles are in order too */
            for (size_t j = 1; j < k; j++)
                CHECK(metric == CHRYS_METRIC_L2 ? sc[i * k + j] >= sc[i * k + j - 1] : sc[i * k + j] <= sc[i * k + j - 1]);
        uint64_t bad[2] = {1000, 7};
        CHECK_EQ(chrys_index_score(ix, 1, q, 2, bad, sc), CHRYS_NOTFOUND);
        if (metric == CHRYS_METRIC_COSINE) {
            float z[24] = {0};
            CHECK_EQ(chrys_index_score(ix, 1, z, 1, bad, sc), CHRYS_INVALID);
        }
        chrys_index_free(ix);
        free(ids);
        free(x);
        free(q);
    }
}

/* chrys_parallel_for's kept workers: every range of every call covered exactly once, at every
 * worker count, over many calls (the same workers again and again); a call nested inside a
 * worker and calls from two threads at once (one of them on threads of its own); and a child of
 * fork, which has none of its parent's workers, still gets every range. */
typedef struct pp_ctx {
    atomic_uint *hits;
    unsigned nested; /* workers for a nested call, 0: none */
    size_t n;
} pp_ctx;

static void pp_range(void *arg, unsigned wk, size_t b, size_t e)
{
    (void)wk;
    pp_ctx *c = arg;
    for (size_t i = b; i < e; i++) atomic_fetch_add(&c->hits[i], 1);
    if (c->nested) {
        pp_ctx inner = {c->hits + c->n, 0, c->n};
        chrys_parallel_for(c->nested, c->n, pp_range, &inner);
    }
}

static int pp_run(unsigned workers, size_t n, unsigned nested)
{
    atomic_uint *hits = calloc(2 * n, sizeof *hits);
    pp_ctx c = {hits, nested, n};
    chrys_parallel_for(workers, n, pp_range, &c);
    size_t bad = 0;
    size_t per_inner = nested ? (workers < n ? workers : n) : 0; /* each outer range runs the inner call once */
    for (size_t i = 0; i < n; i++) bad += atomic_load(&hits[i]) != 1 || atomic_load(&hits[n + i]) != per_inner;
    free(hits);
    return bad == 0;
}

static void *pp_thread(void *arg)
{
    int *ok = arg;
    for (int r = 0; r < 200; r++) *ok &= pp_run(1 + (unsigned)r % 5, 1000 + (size_t)r, 0);
    return NULL;
}

void test_parallel_pool_concurrent(void)
{
    for (int r = 0; r < 300; r++) CHECK(pp_run(1 + (unsigned)r % 9, (size_t)r % 50 + 1, 0));
    CHECK(pp_run(64, 5000, 0));
    CHECK(pp_run(3, 200, 2)); /* nested: the inner calls find the workers busy */
    int ok1 = 1, ok2 = 1;
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, pp_thread, &ok1), 0);
    pp_thread(&ok2);
    pthread_join(t, NULL);
    CHECK(ok1 && ok2);
#ifndef __SANITIZE_THREAD__ /* (TSan refuses to start threads in a child of a threaded fork) */
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) _exit(pp_run(4, 777, 0) && pp_run(2, 5, 0) ? 0 : 1);
    int st = 0;
    CHECK_EQ(waitpid(pid, &st, 0), pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
#endif
}

/*
 * test_search.c: the one search path (search.c): the exact scan's three paths (SIMD kernels,
 * fused AVX-512 kernel, BLAS sgemm) forced in turn on the same queries must agree bit for bit,
 * and each with a float64 brute force; every failing search names its cause.
 */
#include <pthread.h>

#include "../harness.h"
#include "chrysalis.h"
#include "index.h"
#include "topk.h"
#include "tests.h"

static int allow_even(uint64_t id, void *ctx)
{
    (void)ctx;
    return id % 2 == 0;
}

/* Each hit's score is the brute force's to 1e-6 (relative), scores run best first, and every
 * allowed row better than the last hit by more than 1e-6 was returned (nothing exact search
 * should have found is missing). */
static void check_exact(int metric, const float *x, const uint64_t *ids, size_t n, size_t d, const float *q,
                        const chrys_hit *h, size_t k, int use_thr, float thr, int filter, const char *what)
{
    int l2 = metric == CHRYS_METRIC_L2;
    size_t got = 0;
    for (size_t j = 0; j < k && h[j].id != CHRYS_NO_ID; j++) {
        got++;
        size_t r = (size_t)(h[j].id - 1000);
        double s = h_oracle_score(metric, q, x + r * d, d);
        if (fabs(s - h[j].score) > 1e-6 * (1 + fabs(s))) h_fail(__FILE__, __LINE__, "%s: rank %zu score", what, j);
        if (j && (l2 ? h[j].score < h[j - 1].score : h[j].score > h[j - 1].score))
            h_fail(__FILE__, __LINE__, "%s: rank %zu out of order", what, j);
    }
    double last = got ? h[got - 1].score : (l2 ? INFINITY : -INFINITY), tol = 1e-6 * (1 + fabs(last));
    size_t qualify = 0;
    for (size_t r = 0; r < n; r++) {
        if (filter && ids[r] % 2) continue;
        double s = h_oracle_score(metric, q, x + r * d, d);
        if (use_thr && (l2 ? s > thr : s < thr)) continue;
        qualify++;
        /* with fewer than k hits every qualifying row; else every row clearly better than the last */
        if (got == k && !(l2 ? s < last - tol : s > last + tol)) continue;
        int found = 0;
        for (size_t j = 0; j < got; j++) found |= h[j].id == ids[r];
        if (!found) h_fail(__FILE__, __LINE__, "%s: row %zu (score %.9g, last %.9g) missing", what, r, s, last);
    }
    if (got < k && qualify != got) h_fail(__FILE__, __LINE__, "%s: %zu rows qualify, %zu returned", what, qualify, got);
}

/* The exact scan's paths: the same queries (single, 5 and 70 at once) through the SIMD, fused and
 * sgemm paths, forced by flat__test_force_path, on cosine, IP and L2, with exact ties (duplicate
 * rows under other ids, queries equal to rows), a threshold and a filter, on 1 and 2 threads:
 * identical ids and identical scores (every path rescores in double), and each equal to a float64
 * brute force. Before the hook these sizes (under 65,536 rows) never reached sgemm. */
void test_search_flat_paths_agree(void)
{
    uint64_t s = h_seed + 131;
    size_t n = 1503, d = 40, nq = 70, k = 12; /* one query: four streams of 375 rows and a tail of 3 */
    float *x = h_clustered(&s, n, d, 6, 0.2f);
    for (size_t r = 1; r < n; r += 7) memcpy(x + r * d, x + (r - 1) * d, d * sizeof(float)); /* ties */
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t r = 0; r < n; r++) ids[r] = 1000 + r;
    float *q = malloc(nq * d * sizeof(float));
    for (size_t i = 0; i < nq; i++) {
        if (i % 3 == 0) memcpy(q + i * d, x + (i * 11) * d, d * sizeof(float)); /* a query equal to a row */
        else
            for (size_t j = 0; j < d; j++) q[i * d + j] = x[(i * 13) * d + j] + 0.3f * h_gauss(&s);
    }
    flat_path paths[3] = {FLAT_PATH_SIMD, FLAT_PATH_FUSED, FLAT_PATH_SGEMM};
    const char *pname[3] = {"simd", "fused", "sgemm"};
    size_t sizes[3] = {1, 5, nq};
    chrys_hit *ref = malloc(nq * k * sizeof *ref), *hits = malloc(nq * k * sizeof *hits);
    int reached = 0;
    for (int metric = 0; metric < 3; metric++) {
        chrys_index_opts io;
        chrys_index_opts_init(&io);
        io.dim = (uint32_t)d;
        io.metric = (chrys_metric)metric;
        chrys_index *ix = NULL;
        CHECK_EQ(chrys_index_new(&io, &ix, NULL), CHRYS_OK);
        CHECK_EQ(chrys_index_add(ix, n, ids, x, NULL), CHRYS_OK);
        for (int mode = 0; mode < 3; mode++) { /* plain, threshold, filter */
            chrys_search_opts so;
            chrys_search_opts_init(&so);
            so.k = (uint32_t)k;
            if (mode == 1) {
                so.use_threshold = 1;
                so.threshold = metric == CHRYS_METRIC_L2 ? 6.0f : metric == CHRYS_METRIC_IP ? 30.0f : 0.93f;
            }
            if (mode == 2) so.allow = allow_even;
            for (int si = 0; si < 3; si++)
                for (unsigned nt = 1; nt <= 2; nt++) {
                    so.n_threads = nt;
                    size_t m = sizes[si];
                    int have_ref = 0;
                    for (int p = 0; p < 3; p++) {
                        if (flat__test_force_path(paths[p]) != CHRYS_OK) continue; /* not in this build/CPU */
                        memset(hits, 0xab, m * k * sizeof *hits);
                        CHECK_EQ(chrys_index_search(ix, m, q, &so, hits), CHRYS_OK);
                        CHECK_EQ(flat__test_last_path(), paths[p]);
                        reached |= 1 << p;
                        if (!have_ref) {
                            memcpy(ref, hits, m * k * sizeof *hits);
                            have_ref = 1;
                            for (size_t i = 0; i < m; i++)
                                check_exact(metric, x, ids, n, d, q + i * d, hits + i * k, k, so.use_threshold,
                                            so.threshold, mode == 2, pname[p]);
                            continue;
                        }
                        for (size_t i = 0; i < m * k; i++)
                            if (hits[i].id != ref[i].id || memcmp(&hits[i].score, &ref[i].score, sizeof(float))) {
                                h_fail(__FILE__, __LINE__, "metric %d mode %d nq %zu threads %u: %s differs from %s at %zu",
                                       metric, mode, m, nt, pname[p], pname[0], i);
                                break;
                            }
                    }
                }
        }
        chrys_index_free(ix);
    }
    flat__test_force_path(FLAT_PATH_AUTO);
    CHECK(reached & 1);
#ifdef CHRYS_HAVE_BLAS
    CHECK(reached & 4); /* the sgemm path really ran */
#endif
    free(x);
    free(ids);
    free(q);
    free(ref);
    free(hits);
}

/* The fused path's buffers under many near-ties: 70 copies of one row, and 30 rows a few ulps
 * apart, each group larger than the pool of k + 16, with queries at and near them (k = 10 and
 * 40, a threshold, a filter): the fused path returns the SIMD path's ids and scores, and each
 * query equals a float64 brute force. Its buffers then hold more than P keys above the cut, so
 * the pool saturates and the finishing step must widen it. */
void test_search_fused_near_ties(void)
{
    if (flat__test_force_path(FLAT_PATH_FUSED) != CHRYS_OK) {
        fprintf(stderr, "    (no fused path at this level)\n");
        return;
    }
    uint64_t s = h_seed + 151;
    size_t n = 2000, d = 32, nq = 64;
    float *x = h_clustered(&s, n, d, 8, 0.3f);
    for (size_t r = 501; r < 570; r++) memcpy(x + r * d, x + 500 * d, d * sizeof(float));
    for (size_t r = 1001; r < 1030; r++)
        for (size_t j = 0; j < d; j++) x[r * d + j] = x[1000 * d + j] * (1.0f + 1e-7f * (float)(r - 1000));
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t r = 0; r < n; r++) ids[r] = 1000 + r;
    float *q = malloc(nq * d * sizeof(float));
    for (size_t i = 0; i < nq; i++)
        for (size_t j = 0; j < d; j++)
            q[i * d + j] = x[(i % 2 ? 1000 : 500) * d + j] + (i % 4 < 2 ? 0.0f : 0.05f * h_gauss(&s));
    chrys_hit *a = malloc(nq * 40 * sizeof *a), *b = malloc(nq * 40 * sizeof *b);
    for (int metric = 0; metric < 3; metric++)
        for (size_t k = 10; k <= 40; k += 30)
            for (int mode = 0; mode < 3; mode++) {
                chrys_index_opts io;
                chrys_index_opts_init(&io);
                io.dim = (uint32_t)d;
                io.metric = (chrys_metric)metric;
                chrys_index *ix = NULL;
                CHECK_EQ(chrys_index_new(&io, &ix, NULL), CHRYS_OK);
                CHECK_EQ(chrys_index_add(ix, n, ids, x, NULL), CHRYS_OK);
                chrys_search_opts so;
                chrys_search_opts_init(&so);
                so.k = (uint32_t)k;
                so.n_threads = 2;
                if (mode == 1) {
                    so.use_threshold = 1;
                    so.threshold = metric == CHRYS_METRIC_L2 ? 1.0f : metric == CHRYS_METRIC_IP ? 1.0f : 0.99f;
                }
                if (mode == 2) so.allow = allow_even;
                CHECK_EQ(flat__test_force_path(FLAT_PATH_FUSED), CHRYS_OK);
                CHECK_EQ(chrys_index_search(ix, nq, q, &so, a), CHRYS_OK);
                CHECK_EQ(flat__test_last_path(), FLAT_PATH_FUSED);
                CHECK_EQ(flat__test_force_path(FLAT_PATH_SIMD), CHRYS_OK);
                CHECK_EQ(chrys_index_search(ix, nq, q, &so, b), CHRYS_OK);
                for (size_t i = 0; i < nq * k; i++)
                    if (a[i].id != b[i].id || memcmp(&a[i].score, &b[i].score, sizeof(float))) {
                        h_fail(__FILE__, __LINE__, "metric %d k %zu mode %d: fused differs from simd at %zu", metric, k, mode, i);
                        break;
                    }
                for (size_t i = 0; i < nq; i++)
                    check_exact(metric, x, ids, n, d, q + i * d, a + i * k, k, so.use_threshold, so.threshold, mode == 2, "fused ties");
                chrys_index_free(ix);
            }
    flat__test_force_path(FLAT_PATH_AUTO);
    free(x), free(ids), free(q), free(a), free(b);
}

typedef struct msg_arg {
    const chrys_index *ix;
    char seen[256];
} msg_arg;

static void *other_thread(void *p)
{
    msg_arg *a = p;
    snprintf(a->seen, sizeof a->seen, "%s", chrys_index_errmsg(a->ix));
    return NULL;
}

/* Every failing search records why on the handle, naming the query row and the cause (the CLI
 * used to guess "zero query vector under cosine?" for any failure); the message is this
 * thread's (searches share a const handle), and the next recorded message replaces it. */
void test_search_failure_messages(void)
{
    size_t d = 8;
    chrys_index_opts io;
    chrys_index_opts_init(&io);
    io.dim = (uint32_t)d;
    chrys_index *ix = NULL;
    CHECK_EQ(chrys_index_new(&io, &ix, NULL), CHRYS_OK);
    float x[4 * 8];
    for (size_t i = 0; i < 4 * d; i++) x[i] = (float)(i % 5) + 1.0f;
    uint64_t ids[4] = {1, 2, 3, 4};
    CHECK_EQ(chrys_index_add(ix, 4, ids, x, NULL), CHRYS_OK);
    float q[3 * 8];
    memcpy(q, x, sizeof q);
    chrys_hit hits[3 * 10];
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    CHECK_EQ(chrys_index_search(ix, 3, q, &so, hits), CHRYS_OK);
    CHECK_EQ(strlen(chrys_index_errmsg(ix)), 0);
    q[2 * d + 5] = NAN;
    CHECK_EQ(chrys_index_search(ix, 3, q, &so, hits), CHRYS_INVALID);
    CHECK_STR_CONTAINS(chrys_index_errmsg(ix), "query row 2");
    CHECK_STR_CONTAINS(chrys_index_errmsg(ix), "component 5 is NaN");
    q[2 * d + 5] = INFINITY;
    CHECK_EQ(chrys_index_search(ix, 3, q, &so, hits), CHRYS_INVALID);
    CHECK_STR_CONTAINS(chrys_index_errmsg(ix), "infinite");
    q[2 * d + 5] = 1.0f;
    memset(q + d, 0, d * sizeof(float));
    CHECK_EQ(chrys_index_search(ix, 3, q, &so, hits), CHRYS_INVALID);
    CHECK_STR_CONTAINS(chrys_index_errmsg(ix), "query row 1 is a zero vector");
    /* another thread sees none of it */
    msg_arg a = {ix, "unset"};
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, other_thread, &a), 0);
    pthread_join(t, NULL);
    CHECK_EQ(strlen(a.seen), 0);
    memcpy(q + d, x, d * sizeof(float));
    so.k = 0;
    CHECK_EQ(chrys_index_search(ix, 3, q, &so, hits), CHRYS_INVALID);
    CHECK_STR_CONTAINS(chrys_index_errmsg(ix), "k = 0 is out of range");
    so.k = 10;
    so.use_threshold = 1;
    so.threshold = NAN;
    CHECK_EQ(chrys_index_search(ix, 3, q, &so, hits), CHRYS_INVALID);
    CHECK_STR_CONTAINS(chrys_index_errmsg(ix), "threshold is NaN");
    so.use_threshold = 0;
    CHECK_EQ(chrys_index_search(ix, 3, NULL, &so, hits), CHRYS_INVALID);
    CHECK_STR_CONTAINS(chrys_index_errmsg(ix), "queries is NULL");
    /* out of memory: each of the search's allocations in turn */
    int oom_seen = 0;
    for (long f = 1; f <= 8; f++) {
        chrys__test_fail_alloc_after(f);
        int rc = chrys_index_search(ix, 3, q, &so, hits);
        chrys__test_fail_alloc_after(0);
        if (rc == CHRYS_OK) continue;
        CHECK_EQ(rc, CHRYS_NOMEM);
        CHECK_STR_CONTAINS(chrys_index_errmsg(ix), "out of memory");
        oom_seen++;
    }
    CHECK(oom_seen >= 3);
    /* a later message on the handle (a failing non-const call) replaces the search's */
    CHECK_EQ(chrys_index_remove(ix, 999), CHRYS_NOTFOUND);
    const char *m = chrys_index_errmsg(ix);
    CHECK_STR_CONTAINS(m, "id 999 not found");
    chrys_index_free(ix);
}

/* The re-ranking band under IP follows the float32 error of a dot product, gamma_d |q||x|, not the
 * score: with rows of norm ~1000 nearly orthogonal to the query, every score is within a few
 * 1e-3 of 0 while the float32 error is of that size, so the former band (1e-4 max(1, |k-th|))
 * rescored too few of the walk's candidates and HNSW, even visiting every row, ranked them by
 * float32 noise. With ef >= n on a small graph every row is a candidate: the result must then be
 * the exact search's, ids and scores. */
void test_regress_rerank_band_ip_large_norms(void)
{
    uint64_t s = h_seed + 977;
    size_t d = 256, n = 300, k = 10, nq = 8;
    float *x = malloc(n * d * sizeof(float)), *q = malloc(nq * d * sizeof(float));
    for (size_t qi = 0; qi < nq; qi++)
        for (size_t i = 0; i < d; i++) q[qi * d + i] = 62.5f * h_gauss(&s);
    /* an orthonormal basis of the queries' span (double Gram-Schmidt) */
    double *b = malloc(nq * d * sizeof(double));
    for (size_t m = 0; m < nq; m++) {
        for (size_t i = 0; i < d; i++) b[m * d + i] = q[m * d + i];
        for (size_t p = 0; p < m; p++) {
            double t = 0;
            for (size_t i = 0; i < d; i++) t += b[m * d + i] * b[p * d + i];
            for (size_t i = 0; i < d; i++) b[m * d + i] -= t * b[p * d + i];
        }
        double nr = 0;
        for (size_t i = 0; i < d; i++) nr += b[m * d + i] * b[m * d + i];
        for (size_t i = 0; i < d; i++) b[m * d + i] /= sqrt(nr);
    }
    /* rows of norm ~1000 orthogonal to every query, rounded to float32: true scores a few 1e-3 */
    double w[256];
    for (size_t r = 0; r < n; r++) {
        for (size_t i = 0; i < d; i++) w[i] = 62.5 * h_gauss(&s);
        for (size_t m = 0; m < nq; m++) {
            double t = 0;
            for (size_t i = 0; i < d; i++) t += w[i] * b[m * d + i];
            for (size_t i = 0; i < d; i++) w[i] -= t * b[m * d + i];
        }
        for (size_t i = 0; i < d; i++) x[r * d + i] = (float)w[i];
    }
    free(b);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t r = 0; r < n; r++) ids[r] = r + 1;
    chrys_index *ix[2] = {NULL, NULL};
    const char *spec[2] = {"Flat", "HNSW16"};
    for (int j = 0; j < 2; j++) {
        chrys_index_opts io;
        chrys_index_opts_init(&io);
        io.dim = (uint32_t)d;
        io.metric = CHRYS_METRIC_IP;
        io.spec = spec[j];
        CHECK_EQ(chrys_index_new(&io, &ix[j], NULL), CHRYS_OK);
        CHECK_EQ(chrys_index_add(ix[j], n, ids, x, NULL), CHRYS_OK);
    }
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.k = (uint32_t)k;
    so.ef_search = (uint32_t)n;
    so.n_threads = 1;
    chrys_hit *a = malloc(nq * k * sizeof *a), *bh = malloc(nq * k * sizeof *bh);
    CHECK_EQ(chrys_index_search(ix[0], nq, q, &so, a), CHRYS_OK);
    CHECK_EQ(chrys_index_search(ix[1], nq, q, &so, bh), CHRYS_OK);
    size_t differ = 0;
    for (size_t i = 0; i < nq * k; i++) differ += a[i].id != bh[i].id || a[i].score != bh[i].score;
    CHECK_EQ(differ, 0);
    for (int j = 0; j < 2; j++) chrys_index_free(ix[j]);
    free(x);
    free(q);
    free(ids);
    free(a);
    free(bh);
}

/* The HNSW walk's heap keys (topk.h) order exactly as topk_worse does, -0 and +0 alike, and give
 * back the score and slot they were made of. */
void test_topk_key_order(void)
{
    uint64_t seed = 7;
    enum { N = 400 };
    float sc[N];
    uint32_t sl[N];
    const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, 1e-38f, -1e-38f, 1e-45f, -1e-45f, 3e38f, -3e38f};
    for (int i = 0; i < N; i++) {
        /* few distinct scores, so that equal scores (ordered by slot) are common */
        sc[i] = i < 40 ? special[i % 10] : (float)(h_rand(&seed) % 9) * 0.25f - 1.0f + (i % 3 ? 0 : h_gauss(&seed));
        sl[i] = i % 5 == 0 ? 0xffffffffu - (uint32_t)i : (uint32_t)(h_rand(&seed) % 50);
    }
    for (int i = 0; i < N; i++) {
        uint64_t ki = topk_key(sc[i], sl[i]);
        CHECK(topk_key_score(ki) == sc[i]);
        CHECK_EQ(topk_key_slot(ki), sl[i]);
        for (int j = 0; j < N; j++) {
            uint64_t kj = topk_key(sc[j], sl[j]);
            int same = sc[i] == sc[j] && sl[i] == sl[j];
            if (same) CHECK(ki == kj);
            else CHECK_EQ(ki < kj, topk_worse(sc[i], sl[i], sc[j], sl[j]));
        }
    }
}

/* Graph and list searches hand queries to workers in chunks as they finish: 1, 2 and 3 threads
 * give the same hits, bit for bit (HNSW, IVF, SQ8 codes). */
void test_search_chunked_threads_agree(void)
{
    uint64_t seed = 11;
    size_t n = 3000, d = 24, nq = 301, k = 7;
    float *x = h_clustered(&seed, n, d, 30, 0.4f), *q = h_clustered(&seed, nq, d, 30, 0.4f);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t r = 0; r < n; r++) ids[r] = r * 3 + 1;
    const char *spec[3] = {"HNSW16", "IVF32,Flat", "SQ8"};
    chrys_hit *h[3];
    for (int t = 0; t < 3; t++) h[t] = malloc(nq * k * sizeof **h);
    for (int j = 0; j < 3; j++) {
        chrys_index_opts io;
        chrys_index_opts_init(&io);
        io.dim = (uint32_t)d;
        io.spec = spec[j];
        chrys_index *ix = NULL;
        CHECK_EQ(chrys_index_new(&io, &ix, NULL), CHRYS_OK);
        CHECK_EQ(chrys_index_add(ix, n, ids, x, NULL), CHRYS_OK);
        for (unsigned t = 0; t < 3; t++) {
            chrys_search_opts so;
            chrys_search_opts_init(&so);
            so.k = (uint32_t)k;
            so.n_threads = t + 1;
            so.nprobe = 4;
            so.ef_search = 24;
            CHECK_EQ(chrys_index_search(ix, nq, q, &so, h[t]), CHRYS_OK);
        }
        size_t differ = 0, found = 0;
        for (size_t i = 0; i < nq * k; i++) {
            found += h[0][i].id != CHRYS_NO_ID;
            for (int t = 1; t < 3; t++) differ += h[t][i].id != h[0][i].id || h[t][i].score != h[0][i].score;
        }
        CHECK_EQ(differ, 0);
        CHECK_EQ(found, nq * k);
        chrys_index_free(ix);
    }
    for (int t = 0; t < 3; t++) free(h[t]);
    free(x);
    free(q);
    free(ids);
}

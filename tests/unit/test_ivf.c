/*
 * test_ivf.c: index specifications, k-means, IVF-Flat / IVF-SQ8 / Flat-SQ8 against the exact
 * Flat oracle, mutation and persistence of IVF lists and SQ8 codes, and the planner.
 */
#include <pthread.h>
#include <unistd.h>

#include "../harness.h"
#include "chrysalis.h"
#include "index.h"
#include "tests.h"

void test_ivf_spec_parse(void)
{
    chrys_index_kind kind;
    uint32_t nlist;
    int sq8, is_auto;
    char *msg = NULL;
    CHECK_EQ(chrys_index_spec_parse("Flat", &kind, &nlist, &sq8, &is_auto, NULL), CHRYS_OK);
    CHECK(kind == CHRYS_INDEX_FLAT && !sq8 && !is_auto);
    CHECK_EQ(chrys_index_spec_parse("SQ8", &kind, &nlist, &sq8, &is_auto, NULL), CHRYS_OK);
    CHECK(kind == CHRYS_INDEX_FLAT && sq8);
    CHECK_EQ(chrys_index_spec_parse("IVF256,Flat", &kind, &nlist, &sq8, &is_auto, NULL), CHRYS_OK);
    CHECK(kind == CHRYS_INDEX_IVF && nlist == 256 && !sq8);
    CHECK_EQ(chrys_index_spec_parse("IVF64,SQ8", &kind, &nlist, &sq8, &is_auto, NULL), CHRYS_OK);
    CHECK(kind == CHRYS_INDEX_IVF && nlist == 64 && sq8);
    CHECK_EQ(chrys_index_spec_parse("auto", &kind, &nlist, &sq8, &is_auto, NULL), CHRYS_OK);
    CHECK(is_auto);
    const char *bad[] = {"IVF", "IVF,Flat", "IVF12", "IVF12,PQ8", "ivf12,flat", "IVF0,Flat", "Flat ", "", "HNSW", "HNSW1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_EQ(chrys_index_spec_parse(bad[i], &kind, &nlist, &sq8, &is_auto, &msg), CHRYS_INVALID);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
        CHECK_STR_CONTAINS(msg, quoted); /* names the spec at fault */
        chrys_free(msg);
        msg = NULL;
    }
    CHECK_EQ(chrys_index_spec_parse("IVF12,PQ8", &kind, &nlist, &sq8, &is_auto, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "unexpected ',PQ8' (expected Flat, SQ8, SQ8,RFlat, IVF<nlist>,Flat");
    chrys_free(msg);
    CHECK_EQ(chrys_index_spec_parse("HNSW32", &kind, &nlist, &sq8, &is_auto, &msg), CHRYS_OK); /* test_hnsw.c */
    CHECK(kind == CHRYS_INDEX_HNSW && nlist == 32);
}

void test_kmeans_basics(void)
{
    uint64_t s = h_seed;
    size_t n = 4000, d = 16;
    float *x = h_clustered(&s, n, d, 20, 0.1f);
    float *c1 = malloc(20 * d * sizeof(float)), *c2 = malloc(20 * d * sizeof(float));
    double o1, o2, o_few;
    CHECK_EQ(kmeans_train(x, n, d, 20, 0, 7, 20, 2, c1, &o1), CHRYS_OK);
    CHECK_EQ(kmeans_train(x, n, d, 20, 0, 7, 20, 1, c2, &o2), CHRYS_OK);
    CHECK(memcmp(c1, c2, 20 * d * sizeof(float)) == 0); /* seeded: same result, any thread count */
    CHECK(o1 == o2);
    CHECK_EQ(kmeans_train(x, n, d, 20, 0, 7, 0, 1, c2, &o_few), CHRYS_OK);
    CHECK(o1 <= o_few); /* iterations never make k-means++ seeding worse */
    /* 20 clusters of spread 0.1 in 16-d: the true partition costs about 0.16 per point; Lloyd from
     * greedy k-means++ seeding covers every cluster. */
    if (!(o1 / n < 0.2)) h_fail(__FILE__, __LINE__, "k-means objective per point %.4f", o1 / n);
    /* duplicates: 1000 points, only 5 distinct, 8 clusters: no NaN, no crash (empty clusters split) */
    float *dup = malloc(1000 * d * sizeof(float));
    for (size_t r = 0; r < 1000; r++) memcpy(dup + r * d, x + (r % 5) * d, d * sizeof(float));
    CHECK_EQ(kmeans_train(dup, 1000, d, 8, 0, 1, 10, 2, c1, &o1), CHRYS_OK);
    CHECK(vec_first_nonfinite(c1, 8 * d) < 0);
    /* each distinct point gets a centroid; the split ones sit within about 1e-3 of their point */
    if (!(o1 < 1e-2)) h_fail(__FILE__, __LINE__, "objective on 5 distinct points with 8 clusters: %g", o1);
    CHECK_EQ(kmeans_train(x, 10, d, 20, 0, 1, 10, 1, c1, NULL), CHRYS_INVALID); /* fewer points than k */
    /* uniform clusters, separated: converges to the true partition (0.16 per point) */
    float *u = malloc(n * d * sizeof(float)), *uc = malloc(20 * d * sizeof(float));
    for (size_t i = 0; i < 20 * d; i++) uc[i] = (h_uniform(&s) - 0.5f) * 3.4f;
    for (size_t r = 0; r < n; r++) {
        size_t k = h_rand(&s) % 20;
        for (size_t i = 0; i < d; i++) u[r * d + i] = uc[k * d + i] + 0.1f * (h_uniform(&s) - 0.5f) * 3.4641f;
    }
    CHECK_EQ(kmeans_train(u, n, d, 20, 0, 7, 20, 2, c1, &o1), CHRYS_OK);
    if (!(o1 / n < 0.17)) h_fail(__FILE__, __LINE__, "uniform clusters: objective per point %.4f (expected 0.16)", o1 / n);
    /* spherical: centroids are unit vectors */
    CHECK_EQ(kmeans_train(u, n, d, 20, 1, 7, 10, 2, c1, NULL), CHRYS_OK);
    CHECK_NEAR(vec_norm(c1 + 5 * d, d), 1.0, 1e-5);
    free(u);
    free(uc);
    free(dup);
    free(c1);
    free(c2);
    free(x);
}

static double recall_vs_flat(const chrys_index *ivf, const chrys_index *flat, const float *q, size_t nq, size_t k,
                             uint32_t nprobe)
{
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.k = (uint32_t)k;
    so.nprobe = nprobe;
    chrys_hit *a = malloc(nq * k * sizeof *a), *b = malloc(nq * k * sizeof *b);
    chrys_index_search(ivf, nq, q, &so, a);
    chrys_index_search(flat, nq, q, &so, b);
    size_t hit = 0;
    for (size_t i = 0; i < nq; i++)
        for (size_t j = 0; j < k; j++)
            for (size_t t = 0; t < k; t++)
                if (a[i * k + j].id == b[i * k + t].id) {
                    hit++;
                    break;
                }
    free(a);
    free(b);
    return (double)hit / (nq * k);
}

static chrys_index *build(const char *spec, int metric, size_t d, size_t n, const float *x, const uint64_t *ids)
{
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = (uint32_t)d;
    o.metric = (chrys_metric)metric;
    o.spec = spec;
    chrys_index *ix = NULL;
    char *msg = NULL;
    CHECK_EQ(chrys_index_new(&o, &ix, &msg), CHRYS_OK);
    chrys_free(msg);
    if (ix) CHECK_EQ(chrys_index_add(ix, n, ids, x, NULL), CHRYS_OK);
    return ix;
}

void test_ivf_recall_and_mutation(void)
{
    uint64_t s = h_seed + 2;
    size_t n = 6000, d = 48, nq = 200;
    float *x = h_clustered(&s, n + nq, d, 60, 0.6f);
    const float *q = x + n * d;
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i * 11 + 3;
    for (int metric = 0; metric < 3; metric += 2) { /* cosine and L2 */
        /* SQ8,RFlat: codes scanned, float32 re-ranking; SQ8: codes only (about a quarter of the memory) */
        const char *specs[] = {"IVF64,Flat", "IVF64,SQ8", "SQ8,RFlat", "SQ8"};
        const double flat_sq8_min[] = {0, 0, 0.99, 0.95};
        for (int si = 0; si < 4; si++) {
            chrys_index *flat = build("Flat", metric, d, n, x, ids);
            chrys_index *ix = build(specs[si], metric, d, n, x, ids);
            chrys_index_info info = {sizeof info};
            chrys_index_get_info(ix, &info);
            CHECK(!strcmp(info.spec, specs[si]));
            if (si < 2) {
                CHECK_EQ(info.kind, CHRYS_INDEX_IVF);
                CHECK_EQ(info.nlist, 64);
                double r8 = recall_vs_flat(ix, flat, q, nq, 10, 8), rall = recall_vs_flat(ix, flat, q, nq, 10, 64);
                if (r8 < 0.85 || rall < 0.995)
                    h_fail(__FILE__, __LINE__, "%s metric %d: recall@10 %.3f (nprobe 8), %.4f (all lists)", specs[si], metric, r8, rall);
                CHECK(info.imbalance >= 1.0 && info.imbalance < 3.0);
            } else {
                double r = recall_vs_flat(ix, flat, q, nq, 10, 0);
                if (r < flat_sq8_min[si]) h_fail(__FILE__, __LINE__, "Flat %s metric %d: recall@10 %.4f", specs[si], metric, r);
                CHECK(si == 2 ? info.vector_bytes >= (uint64_t)n * d * 5 : info.vector_bytes < (uint64_t)n * d * 2);
            }
            /* mutation: remove 10%, update 10%; searching every list must match the exact index */
            for (size_t i = 0; i < n; i += 10) {
                CHECK_EQ(chrys_index_remove(ix, ids[i]), CHRYS_OK);
                CHECK_EQ(chrys_index_remove(flat, ids[i]), CHRYS_OK);
                CHECK_EQ(chrys_index_add(ix, 1, &ids[i], x + ((i + 5) % n) * d, NULL), CHRYS_OK);
                CHECK_EQ(chrys_index_add(flat, 1, &ids[i], x + ((i + 5) % n) * d, NULL), CHRYS_OK);
            }
            for (size_t i = 3; i < n; i += 10) {
                CHECK_EQ(chrys_index_update(ix, ids[i], x + ((i + 7) % n) * d), CHRYS_OK);
                CHECK_EQ(chrys_index_update(flat, ids[i], x + ((i + 7) % n) * d), CHRYS_OK);
            }
            double after = recall_vs_flat(ix, flat, q, nq, 10, si < 2 ? 64 : 0);
            if (after < (si == 3 ? 0.95 : 0.99)) h_fail(__FILE__, __LINE__, "%s metric %d after mutation: recall %.4f", specs[si], metric, after);
            /* persistence: same answers after save/load; codes and lists as stored */
            char path[128];
            snprintf(path, sizeof path, "/tmp/chrys_ivf_%d.chrys", (int)getpid());
            CHECK_EQ(chrys_index_save(ix, path, NULL), CHRYS_OK);
            chrys_index *back = NULL;
            char *msg = NULL;
            CHECK_EQ(chrys_index_load(path, &back, &msg), CHRYS_OK);
            if (msg) fprintf(stderr, "    %s\n", msg);
            chrys_free(msg);
            if (back) {
                chrys_search_opts so;
                chrys_search_opts_init(&so);
                so.nprobe = 8;
                chrys_hit h1[50 * 10], h2[50 * 10];
                CHECK_EQ(chrys_index_search(ix, 50, q, &so, h1), CHRYS_OK);
                CHECK_EQ(chrys_index_search(back, 50, q, &so, h2), CHRYS_OK);
                CHECK(memcmp(h1, h2, sizeof h1) == 0);
                chrys_index_info bi = {sizeof bi};
                chrys_index_get_info(back, &bi);
                CHECK(!strcmp(bi.spec, specs[si]));
            }
            chrys_index_free(back);
            unlink(path);
            chrys_index_free(ix);
            chrys_index_free(flat);
        }
    }
    /* retrain on an IVF index reassigns everything */
    chrys_index *ix = build("IVF32,Flat", 0, d, n, x, ids);
    CHECK_EQ(chrys_index_retrain(ix), CHRYS_OK);
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(ix, &info);
    CHECK_EQ(info.trained_on, n);
    CHECK_NEAR(info.drift, 1.0, 1e-9);
    chrys_index_free(ix);
    free(ids);
    free(x);
}

void test_ivf_planner(void)
{
    uint64_t s = h_seed + 4;
    size_t d = 32, n = 3000;
    float *x = h_clustered(&s, n, d, 30, 0.5f);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i;
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = (uint32_t)d;
    o.spec = "auto";
    o.auto_threshold = 1000;
    chrys_index *ix = NULL;
    CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_OK);
    chrys_index_info info = {sizeof info};
    CHECK_EQ(chrys_index_add(ix, 999, ids, x, NULL), CHRYS_OK);
    chrys_index_get_info(ix, &info);
    CHECK_EQ(info.kind, CHRYS_INDEX_FLAT); /* below the threshold: exact */
    CHECK(info.planned);
    CHECK_STR_CONTAINS(info.plan_reason, "exact Flat");
    CHECK_EQ(chrys_index_add(ix, 1, ids + 999, x + 999 * d, NULL), CHRYS_OK);
    chrys_index_get_info(ix, &info);
    CHECK_EQ(info.kind, CHRYS_INDEX_IVF); /* crossed it: switched by itself */
    CHECK(info.nlist >= 16 && info.nlist <= 1000 / 39 + 1);
    CHECK_STR_CONTAINS(info.plan_reason, "1000 vectors >= threshold 1000");
    CHECK_EQ(chrys_index_add(ix, n - 1000, ids + 1000, x + 1000 * d, NULL), CHRYS_OK);
    chrys_index_get_info(ix, &info);
    CHECK_EQ(info.count, n);
    CHECK_EQ(info.trained_on, 1000); /* 3x growth: not re-planned yet */
    chrys_index_free(ix);
    /* a small memory budget makes the planner choose SQ8 */
    o.memory_budget = 1000 * d; /* bytes: less than the float32 rows */
    CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_add(ix, 1500, ids, x, NULL), CHRYS_OK);
    chrys_index_get_info(ix, &info);
    CHECK(info.sq8);
    CHECK_STR_CONTAINS(info.spec, ",SQ8");
    CHECK_STR_CONTAINS(info.plan_reason, "memory budget");
    chrys_index_free(ix);
    free(ids);
    free(x);
}

static int allow_even(uint64_t id, void *ctx)
{
    (void)ctx;
    return id % 2 == 0;
}

void test_search_filter(void)
{
    uint64_t s = h_seed + 8;
    size_t n = 3000, d = 24, nq = 70; /* 70 queries: the sgemm path; 3: the SIMD path */
    float *x = h_clustered(&s, n + nq, d, 20, 0.5f);
    uint64_t *ids = malloc(n * sizeof *ids), *even = malloc(n * sizeof *even);
    size_t ne = 0;
    for (size_t i = 0; i < n; i++) ids[i] = i;
    for (size_t i = 0; i < n; i += 2) even[ne++] = i;
    float *xe = malloc(ne * d * sizeof(float));
    for (size_t i = 0; i < ne; i++) memcpy(xe + i * d, x + even[i] * d, d * sizeof(float));
    const char *specs[] = {"Flat", "IVF16,Flat", "IVF16,SQ8"};
    for (int si = 0; si < 3; si++) {
        chrys_index *ix = build(specs[si], 0, d, n, x, ids), *ref = build("Flat", 0, d, ne, xe, even);
        for (size_t qn = 3; qn <= nq; qn += nq - 3) {
            chrys_search_opts so;
            chrys_search_opts_init(&so);
            so.k = 10;
            so.nprobe = 16;
            so.allow = allow_even;
            chrys_hit *a = malloc(qn * 10 * sizeof *a), *b = malloc(qn * 10 * sizeof *b);
            CHECK_EQ(chrys_index_search(ix, qn, x + n * d, &so, a), CHRYS_OK);
            so.allow = NULL;
            CHECK_EQ(chrys_index_search(ref, qn, x + n * d, &so, b), CHRYS_OK);
            size_t odd = 0, diff = 0;
            for (size_t i = 0; i < qn * 10; i++) {
                odd += a[i].id % 2 != 0;
                diff += a[i].id != b[i].id;
            }
            CHECK_EQ(odd, 0);
            /* with every list probed, filtered search equals searching only the allowed rows */
            if (diff) h_fail(__FILE__, __LINE__, "%s nq %zu: %zu results differ from the allowed-only index", specs[si], qn, diff);
            free(a);
            free(b);
        }
        chrys_index_free(ix);
        chrys_index_free(ref);
    }
    free(ids);
    free(even);
    free(xe);
    free(x);
}

/* ------------------------------------------------------------------------------------------
 * Concurrency (run under ThreadSanitizer by `make tsan`: `unit_tests concurrent`)
 */

typedef struct conc_job {
    const chrys_index *ix;
    const float *q;
    size_t nq, d;
    const chrys_hit *expect; /* nq x 10, from one single-threaded search */
    size_t mismatches;
} conc_job;

/* Search the same queries several times, as one batch on 2 workers and one query at a time, and
 * count every hit that differs (id or score, bit for bit) from the single-threaded result. */
static void *conc_job_run(void *arg)
{
    conc_job *j = arg;
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.k = 10;
    so.nprobe = 4;
    so.ef_search = 48;
    chrys_hit *h = malloc(j->nq * 10 * sizeof *h);
    for (int rep = 0; rep < 2; rep++) {
        so.n_threads = 2;
        if (chrys_index_search(j->ix, j->nq, j->q, &so, h) != CHRYS_OK) j->mismatches++;
        so.n_threads = 1;
        for (size_t i = 0; i < j->nq; i += 4)
            if (chrys_index_search(j->ix, 1, j->q + i * j->d, &so, h + i * 10) != CHRYS_OK) j->mismatches++;
        for (size_t i = 0; i < j->nq * 10; i++)
            if (h[i].id != j->expect[i].id || h[i].score != j->expect[i].score) j->mismatches++;
    }
    free(h);
    return NULL;
}

static chrys_index *build_threads(const char *spec, int metric, size_t d, size_t n, const float *x,
                                  const uint64_t *ids, uint32_t threads)
{
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = (uint32_t)d;
    o.metric = (chrys_metric)metric;
    o.spec = spec;
    o.ef_construction = 64;
    o.build_threads = threads;
    chrys_index *ix = NULL;
    CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_OK);
    if (ix) CHECK_EQ(chrys_index_add(ix, n, ids, x, NULL), CHRYS_OK);
    return ix;
}

/* Every index kind searched by 4 threads at once (each also splitting its batch over 2 workers)
 * returns exactly the single-threaded result; HNSW graphs built by 2 and 3 workers pass the
 * loader's graph checks and reach the recall of the single-threaded build against the exact
 * Flat result. (Flat and float32 HNSW are also covered by test_index_concurrent_search and
 * test_hnsw_parallel_build_and_concurrent_search.) */
void test_ivf_concurrent_search_every_kind(void)
{
    uint64_t s = h_seed + 31;
    size_t n = 2000, d = 32, nq = 24;
    float *x = h_clustered(&s, n + nq, d, 24, 0.4f);
    const float *q = x + n * d;
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i * 7 + 1;
    const char *specs[] = {"Flat", "SQ8", "SQ8,RFlat", "IVF16,Flat", "IVF16,SQ8", "HNSW16", "HNSW16,SQ8", "HNSW16,SQ8,RFlat"};
    for (int si = 0; si < 8; si++) {
        int metric = si % 3; /* cosine, IP, L2 in turn */
        chrys_index *ix = build_threads(specs[si], metric, d, n, x, ids, 1);
        if (!ix) continue;
        chrys_search_opts so;
        chrys_search_opts_init(&so);
        so.k = 10;
        so.nprobe = 4;
        so.ef_search = 48;
        so.n_threads = 1;
        chrys_hit *expect = malloc(nq * 10 * sizeof *expect);
        CHECK_EQ(chrys_index_search(ix, nq, q, &so, expect), CHRYS_OK);
        pthread_t t[4];
        conc_job jobs[4];
        for (int i = 0; i < 4; i++) {
            jobs[i] = (conc_job){ix, q, nq, d, expect, 0};
            pthread_create(&t[i], NULL, conc_job_run, &jobs[i]);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(t[i], NULL);
            if (jobs[i].mismatches)
                h_fail(__FILE__, __LINE__, "%s: thread %d saw %zu hits differ from the single-threaded search",
                       specs[si], i, jobs[i].mismatches);
        }
        if (!strncmp(specs[si], "HNSW", 4)) {
            /* parallel builds: valid graphs (the loader checks them), recall near the 1-worker build */
            chrys_index *f = build_threads("Flat", metric, d, n, x, ids, 1);
            chrys_hit *exact = malloc(nq * 10 * sizeof *exact), *got = malloc(nq * 10 * sizeof *got);
            CHECK_EQ(chrys_index_search(f, nq, q, &so, exact), CHRYS_OK);
            size_t base = 0;
            for (size_t i = 0; i < nq * 10; i++)
                for (size_t j = i / 10 * 10; j < i / 10 * 10 + 10; j++) base += expect[i].id == exact[j].id;
            for (uint32_t workers = 2; workers <= 3; workers++) {
                chrys_index *p = build_threads(specs[si], metric, d, n, x, ids, workers);
                char path[] = "/tmp/chrys_conc_XXXXXX";
                int fd = mkstemp(path);
                close(fd);
                CHECK_EQ(chrys_index_save(p, path, NULL), CHRYS_OK);
                chrys_index *back = NULL;
                CHECK_EQ(chrys_index_load(path, &back, NULL), CHRYS_OK);
                unlink(path);
                CHECK_EQ(chrys_index_search(back ? back : p, nq, q, &so, got), CHRYS_OK);
                size_t hit = 0;
                for (size_t i = 0; i < nq * 10; i++)
                    for (size_t j = i / 10 * 10; j < i / 10 * 10 + 10; j++) hit += got[i].id == exact[j].id;
                if (hit + nq * 10 * 3 / 100 < base) /* within 3 points of recall */
                    h_fail(__FILE__, __LINE__, "%s built by %u workers: recall %zu/%zu vs %zu for 1 worker", specs[si],
                           workers, hit, nq * 10, base);
                chrys_index_free(back);
                chrys_index_free(p);
            }
            free(exact);
            free(got);
            chrys_index_free(f);
        }
        free(expect);
        chrys_index_free(ix);
    }
    free(ids);
    free(x);
}

/* k-means on several workers (the block-kernel assignment, and the sgemm path with 256+
 * centroids) gives the single-threaded centroids bit for bit, and so does an IVF index, which
 * trains on all cores. */
void test_ivf_concurrent_kmeans(void)
{
    uint64_t s = h_seed + 32;
    struct { size_t n, d; uint32_t k; } cases[] = {{4000, 16, 20}, {4096, 8, 256}};
    for (int ci = 0; ci < 2; ci++) {
        size_t n = cases[ci].n, d = cases[ci].d;
        uint32_t k = cases[ci].k;
        float *x = h_clustered(&s, n, d, k, 0.2f);
        float *c1 = malloc(k * d * sizeof(float)), *cn = malloc(k * d * sizeof(float));
        double o1, on;
        CHECK_EQ(kmeans_train(x, n, d, k, ci, 5, 4, 1, c1, &o1), CHRYS_OK);
        for (unsigned nt = 2; nt <= 4; nt += 2) {
            CHECK_EQ(kmeans_train(x, n, d, k, ci, 5, 4, nt, cn, &on), CHRYS_OK);
            if (memcmp(c1, cn, k * d * sizeof(float)) != 0 || o1 != on)
                h_fail(__FILE__, __LINE__, "k-means n %zu k %u: %u workers differ from 1", n, k, nt);
        }
        free(c1);
        free(cn);
        free(x);
    }
    /* an IVF index trains on all cores (chrys_online_cpus) and gets the 1-worker centroids */
    size_t n = 3000, d = 24;
    float *x = h_clustered(&s, n, d, 30, 0.3f);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i;
    chrys_index *a = build("IVF32,Flat", CHRYS_METRIC_L2, d, n, x, ids);
    float *c1 = malloc(32 * d * sizeof(float));
    if (a) {
        CHECK_EQ(kmeans_train(x, n, d, 32, 0, a->seed, 10 /* KM_ITERS */, 1, c1, NULL), CHRYS_OK);
        CHECK_EQ(a->nlist, 32);
        if (a->nlist == 32) CHECK(memcmp(a->centroids, c1, 32 * d * sizeof(float)) == 0);
    }
    free(c1);
    chrys_index_free(a);
    free(ids);
    free(x);
}

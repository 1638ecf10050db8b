/*
 * test_ivf.c: index specifications, k-means, IVF-Flat / IVF-SQ8 / Flat-SQ8 against the exact
 * Flat oracle, mutation and persistence of IVF lists and SQ8 codes, and the planner.
 */
#include <math.h>
#include <stdio.h>
#include <sys/types.h>
#include <pthread.h>
#include <unistd.h>

#include "../harness.h"
#include "chrysalis.h"
#include "index.h"
#include "kmeans.h"
#include "planner.h"
#include "tests.h"

void test_ivf_spec_parse(void)
{
    chrys_index_spec sp = {sizeof sp};
    char *msg = NULL;
    CHECK_EQ(chrys_index_spec_parse("Flat", &sp, NULL), CHRYS_OK);
    CHECK(sp.kind == CHRYS_INDEX_FLAT && !sp.sq8 && !sp.is_auto);
    CHECK_EQ(chrys_index_spec_parse("SQ8", &sp, NULL), CHRYS_OK);
    CHECK(sp.kind == CHRYS_INDEX_FLAT && sp.sq8 && !sp.refine);
    CHECK_EQ(chrys_index_spec_parse("SQ8,RFlat", &sp, NULL), CHRYS_OK);
    CHECK(sp.kind == CHRYS_INDEX_FLAT && sp.sq8 && sp.refine);
    CHECK_EQ(chrys_index_spec_parse("IVF256,Flat", &sp, NULL), CHRYS_OK);
    CHECK(sp.kind == CHRYS_INDEX_IVF && sp.nlist == 256 && sp.hnsw_m == 0 && !sp.sq8);
    CHECK_EQ(chrys_index_spec_parse("IVF64,SQ8", &sp, NULL), CHRYS_OK);
    CHECK(sp.kind == CHRYS_INDEX_IVF && sp.nlist == 64 && sp.sq8 && !sp.refine);
    CHECK_EQ(chrys_index_spec_parse("auto", &sp, NULL), CHRYS_OK);
    CHECK(sp.is_auto);
    const char *bad[] = {"IVF", "IVF,Flat", "IVF12", "IVF12,PQ8", "ivf12,flat", "IVF0,Flat", "Flat ", "", "HNSW1",
                         "IVFFlat,SQ8", "IVF12,RFlat", "HNSW32x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_EQ(chrys_index_spec_parse(bad[i], &sp, &msg), CHRYS_INVALID);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
        CHECK_STR_CONTAINS(msg, quoted); /* names the spec at fault */
        chrys_free(msg);
        msg = NULL;
    }
    CHECK_EQ(chrys_index_spec_parse("IVF12,PQ8", &sp, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "unexpected ',PQ8' (expected Flat, SQ8, SQ8,RFlat, IVFFlat, IVF<nlist>,Flat, IVF<nlist>,SQ8, "
                            "IVF<nlist>,SQ8,RFlat, HNSW");
    chrys_free(msg);
    CHECK_EQ(chrys_index_spec_parse("IVF1048577,Flat", &sp, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "nlist must be 1..1048576");
    chrys_free(msg);
    CHECK_EQ(chrys_index_spec_parse("HNSW32", &sp, &msg), CHRYS_OK); /* test_hnsw.c */
    CHECK(sp.kind == CHRYS_INDEX_HNSW && sp.hnsw_m == 32 && sp.nlist == 0); /* M in its own field */
    /* the roadmap's names, in any case: IVFFlat leaves nlist to opts.nlist or the planner; HNSW is M 32 */
    const char *ivfflat[] = {"IVFFlat", "ivfflat", "IVFFLAT", "IvfFlat"};
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(chrys_index_spec_parse(ivfflat[i], &sp, NULL), CHRYS_OK);
        CHECK(sp.kind == CHRYS_INDEX_IVF && sp.nlist == 0 && !sp.sq8 && !sp.is_auto);
    }
    const char *hnsw[] = {"HNSW", "hnsw", "Hnsw"};
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(chrys_index_spec_parse(hnsw[i], &sp, NULL), CHRYS_OK);
        CHECK(sp.kind == CHRYS_INDEX_HNSW && sp.hnsw_m == 32 && !sp.sq8);
    }
    const char *flat[] = {"flat", "FLAT", "Flat"};
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(chrys_index_spec_parse(flat[i], &sp, NULL), CHRYS_OK);
        CHECK(sp.kind == CHRYS_INDEX_FLAT && !sp.sq8 && !sp.is_auto);
    }
    CHECK_EQ(chrys_index_spec_parse("IVF16,SQ8,RFlat", &sp, NULL), CHRYS_OK);
    CHECK(sp.kind == CHRYS_INDEX_IVF && sp.nlist == 16 && sp.sq8 && sp.refine);
    CHECK_EQ(chrys_index_spec_parse("IVF16,SQ8", &sp, NULL), CHRYS_OK);
    CHECK(sp.kind == CHRYS_INDEX_IVF && sp.nlist == 16 && sp.sq8 && !sp.refine);
    /* struct_size 0: the full struct */
    chrys_index_spec z = {0};
    CHECK_EQ(chrys_index_spec_parse("HNSW16,SQ8,RFlat", &z, NULL), CHRYS_OK);
    CHECK(z.kind == CHRYS_INDEX_HNSW && z.hnsw_m == 16 && z.sq8 && z.refine && !z.is_auto);
    CHECK_EQ(chrys_index_spec_parse("auto", NULL, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "out is NULL");
    chrys_free(msg);
}

/* A caller built against a smaller chrys_index_spec (struct_size up to nlist) gets the fields it
 * has and nothing past them; a struct_size short of kind is refused. */
void test_ivf_spec_parse_struct_size(void)
{
    unsigned char buf[sizeof(chrys_index_spec) + 16];
    memset(buf, 0xAB, sizeof buf);
    chrys_index_spec *sp = (chrys_index_spec *)(void *)buf;
    size_t small = offsetof(chrys_index_spec, nlist) + sizeof sp->nlist;
    sp->struct_size = small;
    CHECK_EQ(chrys_index_spec_parse("IVF32,SQ8,RFlat", sp, NULL), CHRYS_OK);
    CHECK(sp->kind == CHRYS_INDEX_IVF && sp->nlist == 32);
    for (size_t i = small; i < sizeof buf; i++) CHECK_EQ(buf[i], 0xAB); /* nothing written past struct_size */
    sp->struct_size = offsetof(chrys_index_spec, kind) + sizeof sp->kind;
    sp->nlist = 77;
    CHECK_EQ(chrys_index_spec_parse("IVF32,Flat", sp, NULL), CHRYS_OK);
    CHECK(sp->kind == CHRYS_INDEX_IVF && sp->nlist == 77);
    char *msg = NULL;
    sp->struct_size = sizeof(size_t);
    CHECK_EQ(chrys_index_spec_parse("Flat", sp, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "struct_size");
    chrys_free(msg);
}

/* The planner builds what its policy says (index_set_plan_policy), not a hard-coded graph: an
 * HNSW policy with M 12 and ef_construction 50 gives HNSW12,SQ8,RFlat at the threshold, with the
 * policy's reason, whose search agrees with exact search (the oracle) on the same rows. */
void test_ivf_planner_policy(void)
{
    uint64_t s = h_seed + 41;
    size_t d = 16, n = 600, nq = 50, k = 5;
    float *x = h_clustered(&s, n, d, 12, 0.4f);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i;
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = (uint32_t)d;
    o.spec = "auto";
    o.auto_threshold = 400;
    chrys_index *ix = NULL, *flat = NULL;
    CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_OK);
    plan_policy p = {CHRYS_INDEX_HNSW, 12, 50, "a test's policy"};
    index_set_plan_policy(ix, &p);
    CHECK_EQ(chrys_index_add(ix, 399, ids, x, NULL), CHRYS_OK);
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(ix, &info);
    CHECK_EQ(info.kind, CHRYS_INDEX_FLAT);
    CHECK_EQ(chrys_index_add(ix, n - 399, ids + 399, x + 399 * d, NULL), CHRYS_OK);
    chrys_index_get_info(ix, &info);
    CHECK_EQ(info.kind, CHRYS_INDEX_HNSW);
    CHECK_EQ(info.hnsw_m, 12);
    CHECK_EQ(info.ef_construction, 50);
    CHECK(!strcmp(info.spec, "HNSW12,SQ8,RFlat"));
    CHECK_STR_CONTAINS(info.plan_reason, "600 vectors >= threshold 400: HNSW12,SQ8,RFlat (a test's policy)");
    o.spec = "Flat";
    CHECK_EQ(chrys_index_new(&o, &flat, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_add(flat, n, ids, x, NULL), CHRYS_OK);
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.k = (uint32_t)k;
    so.ef_search = 64;
    chrys_hit *a = malloc(nq * k * sizeof *a), *b = malloc(nq * k * sizeof *b);
    CHECK_EQ(chrys_index_search(ix, nq, x, &so, a), CHRYS_OK);
    CHECK_EQ(chrys_index_search(flat, nq, x, &so, b), CHRYS_OK);
    size_t same = 0;
    for (size_t i = 0; i < nq * k; i++) same += a[i].id == b[i].id;
    CHECK(same >= nq * k * 95 / 100); /* the graph over 600 rows at ef 64: at least 95% of the exact top 5 */
    for (size_t q = 0; q < nq; q++) CHECK_EQ(a[q * k].id, q); /* each row finds itself first */
    free(a);
    free(b);
    chrys_index_free(flat);
    chrys_index_free(ix);
    free(ids);
    free(x);
}

/* One cap per quantity (src/chrys_limits.h): M 2..128 in a spec; ef_construction at most
 * 1,000,000 for an index and a merger alike (the merger allowed only 100,000 before), each
 * refusal naming the cap. */
void test_ivf_caps_agree(void)
{
    chrys_index_spec sp = {sizeof sp};
    char *msg = NULL;
    CHECK_EQ(chrys_index_spec_parse("HNSW128", &sp, NULL), CHRYS_OK);
    CHECK_EQ(sp.hnsw_m, 128);
    CHECK_EQ(chrys_index_spec_parse("HNSW129,SQ8", &sp, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "M must be 2..128");
    chrys_free(msg);
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = 8;
    o.spec = "HNSW16";
    chrys_index *ix = NULL;
    o.ef_construction = 1000000;
    CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_OK);
    chrys_index_info info = {sizeof info};
    CHECK_EQ(chrys_index_get_info(ix, &info), CHRYS_OK);
    CHECK_EQ(info.ef_construction, 1000000);
    chrys_index_free(ix);
    o.ef_construction = 1000001;
    CHECK_EQ(chrys_index_new(&o, &ix, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "ef_construction 1000001 out of range 0..1000000");
    chrys_free(msg);
    chrys_merge_opts mo;
    chrys_merge_opts_init(&mo);
    mo.dim = 8;
    mo.ef_construction = 1000000; /* above the merger's old 100,000 */
    chrys_merger *m = NULL;
    CHECK_EQ(chrys_merger_new(&mo, &m, NULL), CHRYS_OK);
    chrys_merger_free(m);
    mo.ef_construction = 1000001;
    CHECK_EQ(chrys_merger_new(&mo, &m, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "ef_construction at most 1000000");
    chrys_free(msg);
    mo.ef_construction = 0;
    mo.ef_search = 100001;
    CHECK_EQ(chrys_merger_new(&mo, &m, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "ef_search must be at most 100000");
    chrys_free(msg);
}

/* chrysalis build --sq8's spec rewrite, in the library: every kind's SQ8 form, a spec with SQ8
 * already unchanged, and the specs without one refused by name. */
void test_ivf_spec_with_sq8(void)
{
    const char *in[] = {"Flat", "flat", "IVF64,Flat", "HNSW32", "HNSW16,Flat", "hnsw", "IVF8,SQ8", "HNSW16,SQ8,RFlat", "SQ8,RFlat"};
    const char *want[] = {"SQ8", "SQ8", "IVF64,SQ8", "HNSW32,SQ8", "HNSW16,SQ8", "HNSW32,SQ8", "IVF8,SQ8", "HNSW16,SQ8,RFlat", "SQ8,RFlat"};
    char out[64];
    for (size_t i = 0; i < sizeof in / sizeof *in; i++) {
        CHECK_EQ(chrys_index_spec_with_sq8(in[i], out, sizeof out, NULL), CHRYS_OK);
        CHECK(!strcmp(out, want[i]));
        chrys_index_spec sp = {sizeof sp};
        CHECK_EQ(chrys_index_spec_parse(out, &sp, NULL), CHRYS_OK); /* and the result parses, with codes */
        CHECK(sp.sq8);
    }
    char *msg = NULL;
    CHECK_EQ(chrys_index_spec_with_sq8("auto", out, sizeof out, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "index 'auto' has no SQ8 form");
    chrys_free(msg);
    CHECK_EQ(chrys_index_spec_with_sq8("IVFFlat", out, sizeof out, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "IVFFlat needs a list count");
    chrys_free(msg);
    CHECK_EQ(chrys_index_spec_with_sq8("IVF12,PQ8", out, sizeof out, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "'IVF12,PQ8'");
    chrys_free(msg);
    CHECK_EQ(chrys_index_spec_with_sq8("IVF64,Flat", out, 6, &msg), CHRYS_LIMIT);
    CHECK(!strcmp(out, ""));
    chrys_free(msg);
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
        /* ,RFlat: codes scanned, float32 re-ranking; SQ8 without it: codes only (about a quarter of
         * the memory, approximate scores) */
        const char *specs[] = {"IVF64,Flat", "IVF64,SQ8,RFlat", "IVF64,SQ8", "SQ8,RFlat", "SQ8"};
        const double flat_sq8_min[] = {0, 0, 0, 0.99, 0.95};
        for (int si = 0; si < 5; si++) {
            int is_ivf = si < 3, codes_only = si == 2 || si == 4;
            chrys_index *flat = build("Flat", metric, d, n, x, ids);
            chrys_index *ix = build(specs[si], metric, d, n, x, ids);
            chrys_index_info info = {sizeof info};
            chrys_index_get_info(ix, &info);
            CHECK(!strcmp(info.spec, specs[si]));
            if (is_ivf) {
                CHECK_EQ(info.kind, CHRYS_INDEX_IVF);
                CHECK_EQ(info.nlist, 64);
                double r8 = recall_vs_flat(ix, flat, q, nq, 10, 8), rall = recall_vs_flat(ix, flat, q, nq, 10, 64);
                if (r8 < 0.85 || rall < (codes_only ? 0.95 : 0.995))
                    h_fail(__FILE__, __LINE__, "%s metric %d: recall@10 %.3f (nprobe 8), %.4f (all lists)", specs[si], metric, r8, rall);
                CHECK(info.imbalance >= 1.0 && info.imbalance < 3.0);
            } else {
                double r = recall_vs_flat(ix, flat, q, nq, 10, 0);
                if (r < flat_sq8_min[si]) h_fail(__FILE__, __LINE__, "Flat %s metric %d: recall@10 %.4f", specs[si], metric, r);
            }
            if (si > 0) CHECK(!codes_only ? info.vector_bytes >= (uint64_t)n * d * 5 : info.vector_bytes < (uint64_t)n * d * 2);
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
            double after = recall_vs_flat(ix, flat, q, nq, 10, is_ivf ? 64 : 0);
            if (after < (codes_only ? 0.95 : 0.99)) h_fail(__FILE__, __LINE__, "%s metric %d after mutation: recall %.4f", specs[si], metric, after);
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
    CHECK(!strstr(info.spec, "RFlat"));
    CHECK(info.vector_bytes < (uint64_t)info.count * d * 2); /* codes only: a quarter of the rows */
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
    const char *specs[] = {"Flat", "IVF16,Flat", "IVF16,SQ8,RFlat", "IVF16,SQ8"};
    for (int si = 0; si < 4; si++) {
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
            size_t odd = 0, diff = 0, found = 0;
            for (size_t i = 0; i < qn * 10; i++) {
                odd += a[i].id % 2 != 0;
                diff += a[i].id != b[i].id;
                for (size_t t = i / 10 * 10; t < i / 10 * 10 + 10; t++) found += a[i].id == b[t].id;
            }
            CHECK_EQ(odd, 0);
            /* with every list probed, filtered search equals searching only the allowed rows (codes
             * only: approximate scores, so nearly) */
            if (si == 3 ? found < qn * 10 * 9 / 10 : diff != 0)
                h_fail(__FILE__, __LINE__, "%s nq %zu: %zu results differ from the allowed-only index (%zu of %zu found)",
                       specs[si], qn, diff, found, qn * 10);
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

static chrys_index *new_index(const char *spec, uint32_t nlist, int metric, size_t d, uint64_t threshold)
{
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = (uint32_t)d;
    o.metric = (chrys_metric)metric;
    o.spec = spec;
    o.nlist = nlist;
    o.auto_threshold = threshold;
    chrys_index *ix = NULL;
    char *msg = NULL;
    CHECK_EQ(chrys_index_new(&o, &ix, &msg), CHRYS_OK);
    if (msg) h_fail(__FILE__, __LINE__, "%s: %s", spec, msg);
    chrys_free(msg);
    return ix;
}

static off_t file_bytes(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    off_t n = ftell(f);
    fclose(f);
    return n;
}

/* The roadmap's index names (FAISS_INDEX_TYPE=IVFFlat, HNSW, Flat) through chrys_index_opts.spec,
 * and IVFFlat's list count from opts.nlist or, when 0, from the planner when it trains. */
void test_ivf_roadmap_names(void)
{
    uint64_t s = h_seed + 21;
    size_t d = 16, n = 6000;
    float *x = h_clustered(&s, n, d, 30, 0.5f);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i;
    chrys_index_info info = {sizeof info};
    /* IVFFlat, nlist 0: exact until auto_threshold vectors, then ivf_plan_nlist(n) lists */
    const char *names[] = {"IVFFlat", "ivfflat"};
    for (int i = 0; i < 2; i++) {
        chrys_index *ix = new_index(names[i], 0, 0, d, 1000);
        chrys_index_get_info(ix, &info);
        CHECK_EQ(info.kind, CHRYS_INDEX_IVF);
        CHECK(!strcmp(info.spec, "IVFFlat"));
        CHECK_EQ(chrys_index_add(ix, 999, ids, x, NULL), CHRYS_OK);
        chrys_index_get_info(ix, &info);
        CHECK_EQ(info.nlist, 0); /* untrained below the threshold */
        CHECK_EQ(chrys_index_add(ix, 501, ids + 999, x + 999 * d, NULL), CHRYS_OK);
        chrys_index_get_info(ix, &info);
        CHECK_EQ(info.nlist, ivf_plan_nlist(1500));
        CHECK_EQ(info.trained_on, 1500);
        CHECK(!info.planned && !info.sq8);
        /* grown 4x since training: the planner's nlist is chosen again */
        CHECK_EQ(chrys_index_add(ix, n - 1500, ids + 1500, x + 1500 * d, NULL), CHRYS_OK);
        chrys_index_get_info(ix, &info);
        CHECK_EQ(info.nlist, ivf_plan_nlist(n));
        CHECK_EQ(info.trained_on, n);
        /* it persists as "nlist from the planner" */
        char path[128];
        snprintf(path, sizeof path, "/tmp/chrys_ivfflat_%d.chrys", (int)getpid());
        CHECK_EQ(chrys_index_save(ix, path, NULL), CHRYS_OK);
        chrys_index *back = NULL;
        CHECK_EQ(chrys_index_load(path, &back, NULL), CHRYS_OK);
        if (back) {
            CHECK_EQ(chrys_index_retrain(back), CHRYS_OK);
            chrys_index_get_info(back, &info);
            CHECK_EQ(info.nlist, ivf_plan_nlist(n));
        }
        chrys_index_free(back);
        unlink(path);
        chrys_index_free(ix);
    }
    /* IVFFlat with nlist: trains at 8 x nlist vectors with that many lists */
    chrys_index *ix = new_index("IVFFlat", 24, 0, d, 1000);
    CHECK_EQ(chrys_index_add(ix, 200, ids, x, NULL), CHRYS_OK);
    chrys_index_get_info(ix, &info);
    CHECK_EQ(info.nlist, 24);
    CHECK(!strcmp(info.spec, "IVF24,Flat"));
    chrys_index_free(ix);
    /* a spec that names its count must agree with a non-zero nlist; other kinds ignore nlist */
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = (uint32_t)d;
    o.spec = "IVF128,Flat";
    o.nlist = 64;
    char *msg = NULL;
    CHECK_EQ(chrys_index_new(&o, &ix, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "names 128 lists but nlist is 64");
    chrys_free(msg);
    o.nlist = 128;
    CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_OK);
    chrys_index_free(ix);
    /* HNSW: the graph with M 32; flat: exact */
    const char *hn[] = {"HNSW", "hnsw"};
    for (int i = 0; i < 2; i++) {
        ix = new_index(hn[i], 77, 0, d, 1000);
        chrys_index_get_info(ix, &info);
        CHECK_EQ(info.kind, CHRYS_INDEX_HNSW);
        CHECK_EQ(info.hnsw_m, 32);
        CHECK(!strcmp(info.spec, "HNSW32"));
        chrys_index_free(ix);
    }
    ix = new_index("flat", 0, 0, d, 1000);
    CHECK_EQ(chrys_index_add(ix, 3000, ids, x, NULL), CHRYS_OK);
    chrys_index_get_info(ix, &info);
    CHECK(info.kind == CHRYS_INDEX_FLAT && !info.planned && !strcmp(info.spec, "Flat"));
    chrys_index_free(ix);
    free(ids);
    free(x);
}

/* IVF<n>,SQ8 keeps int8 codes only: at 1024 dimensions its store file and its in-memory vectors
 * are at most 0.3x the Flat index's; its search agrees with exact search to recall@10 >= 0.90 on
 * clustered data; it round-trips through save/load (also mapped), survives add / remove / update,
 * and retrains on its decoded codes. */
void test_ivf_sq8_codes_only(void)
{
    uint64_t s = h_seed + 22;
    size_t n = 3000, d = 1024, nq = 100;
    float *x = h_clustered(&s, n + nq + 300, d, 40, 0.5f);
    const float *q = x + n * d, *extra = x + (n + nq) * d;
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = 7 * i + 1;
    for (int metric = 0; metric < 3; metric += 2) {
        chrys_index *flat = build("Flat", metric, d, n, x, ids);
        chrys_index *ix = build("IVF32,SQ8", metric, d, n, x, ids);
        chrys_index *rf = build("IVF32,SQ8,RFlat", metric, d, n, x, ids);
        chrys_index_info fi = {sizeof fi}, info = {sizeof info}, ri = {sizeof ri};
        chrys_index_get_info(flat, &fi);
        chrys_index_get_info(ix, &info);
        chrys_index_get_info(rf, &ri);
        CHECK(!strcmp(info.spec, "IVF32,SQ8") && info.nlist == 32 && info.sq8);
        CHECK(!strcmp(ri.spec, "IVF32,SQ8,RFlat"));
        /* memory: codes only */
        if (!(info.vector_bytes <= 0.3 * fi.vector_bytes && info.memory_bytes <= 0.3 * fi.memory_bytes))
            h_fail(__FILE__, __LINE__, "IVF32,SQ8 metric %d: vectors %llu B (Flat %llu), memory %llu B (Flat %llu)", metric,
                   (unsigned long long)info.vector_bytes, (unsigned long long)fi.vector_bytes,
                   (unsigned long long)info.memory_bytes, (unsigned long long)fi.memory_bytes);
        CHECK(ri.vector_bytes > fi.vector_bytes); /* RFlat: rows and codes */
        /* disk */
        char pf[128], pi[128], pr[128];
        snprintf(pf, sizeof pf, "/tmp/chrys_sq8f_%d.chrys", (int)getpid());
        snprintf(pi, sizeof pi, "/tmp/chrys_sq8i_%d.chrys", (int)getpid());
        snprintf(pr, sizeof pr, "/tmp/chrys_sq8r_%d.chrys", (int)getpid());
        CHECK_EQ(chrys_index_save(flat, pf, NULL), CHRYS_OK);
        CHECK_EQ(chrys_index_save(ix, pi, NULL), CHRYS_OK);
        CHECK_EQ(chrys_index_save(rf, pr, NULL), CHRYS_OK);
        off_t bf = file_bytes(pf), bi = file_bytes(pi), br = file_bytes(pr);
        if (!(bi > 0 && bi <= 0.3 * bf)) h_fail(__FILE__, __LINE__, "IVF32,SQ8 store %lld B, Flat %lld B", (long long)bi, (long long)bf);
        CHECK(br > bf);
        chrys_store_meta sm = {sizeof sm};
        CHECK_EQ(chrys_store_peek(pi, &sm, NULL), CHRYS_OK);
        CHECK_EQ(sm.format_minor, 2u);
        /* recall against the exact oracle */
        double r = recall_vs_flat(ix, flat, q, nq, 10, 8), rall = recall_vs_flat(ix, flat, q, nq, 10, 32);
        if (r < 0.90 || rall < 0.90)
            h_fail(__FILE__, __LINE__, "IVF32,SQ8 metric %d: recall@10 %.3f (nprobe 8), %.3f (all lists)", metric, r, rall);
        /* round trip: same answers, load and mmap; codes-only (no rows) */
        chrys_search_opts so;
        chrys_search_opts_init(&so);
        so.nprobe = 8;
        chrys_hit *h1 = malloc(nq * 10 * sizeof *h1), *h2 = malloc(nq * 10 * sizeof *h2);
        CHECK_EQ(chrys_index_search(ix, nq, q, &so, h1), CHRYS_OK);
        for (int mapped = 0; mapped < 2; mapped++) {
            chrys_index *back = NULL;
            char *msg = NULL;
            CHECK_EQ(mapped ? chrys_index_open_mmap(pi, &back, &msg) : chrys_index_load(pi, &back, &msg), CHRYS_OK);
            if (msg) h_fail(__FILE__, __LINE__, "%s", msg);
            chrys_free(msg);
            if (!back) continue;
            chrys_index_info bi2 = {sizeof bi2};
            chrys_index_get_info(back, &bi2);
            CHECK(!strcmp(bi2.spec, "IVF32,SQ8"));
            CHECK(bi2.vector_bytes < (uint64_t)n * d * 2);
            CHECK_EQ(chrys_index_search(back, nq, q, &so, h2), CHRYS_OK);
            CHECK(memcmp(h1, h2, nq * 10 * sizeof *h1) == 0);
            chrys_index_free(back);
        }
        /* get: the decoded codes, within a quantisation step of the input */
        float got[1024];
        CHECK_EQ(chrys_index_get(ix, ids[5], got), CHRYS_OK);
        double err = 0, nr = vec_norm(x + 5 * d, d);
        for (size_t i = 0; i < d; i++) err += fabs((double)got[i] - x[5 * d + i]);
        CHECK(err / d < 0.02 * (metric == 0 ? nr : 1) + 0.02);
        /* mutation: remove 10%, re-add them elsewhere, update 10%, add new rows */
        for (size_t i = 0; i < n; i += 10) {
            CHECK_EQ(chrys_index_remove(ix, ids[i]), CHRYS_OK);
            CHECK_EQ(chrys_index_remove(flat, ids[i]), CHRYS_OK);
            CHECK_EQ(chrys_index_get(ix, ids[i], got), CHRYS_NOTFOUND);
            CHECK_EQ(chrys_index_add(ix, 1, &ids[i], x + ((i + 5) % n) * d, NULL), CHRYS_OK);
            CHECK_EQ(chrys_index_add(flat, 1, &ids[i], x + ((i + 5) % n) * d, NULL), CHRYS_OK);
        }
        for (size_t i = 3; i < n; i += 10) {
            CHECK_EQ(chrys_index_update(ix, ids[i], extra + (i % 300) * d), CHRYS_OK);
            CHECK_EQ(chrys_index_update(flat, ids[i], extra + (i % 300) * d), CHRYS_OK);
        }
        uint64_t more[50];
        for (int i = 0; i < 50; i++) more[i] = 1000000 + (uint64_t)i;
        CHECK_EQ(chrys_index_add(ix, 50, more, extra + 200 * d, NULL), CHRYS_OK);
        CHECK_EQ(chrys_index_add(flat, 50, more, extra + 200 * d, NULL), CHRYS_OK);
        chrys_index_get_info(ix, &info);
        CHECK_EQ(info.count, n + 50);
        CHECK_EQ(info.nlist, 32);
        double after = recall_vs_flat(ix, flat, q, nq, 10, 32);
        if (after < 0.90) h_fail(__FILE__, __LINE__, "IVF32,SQ8 metric %d after mutation: recall %.3f", metric, after);
        /* an updated row is found by its new vector, in the list nearest to it */
        chrys_hit hh[10];
        so.k = 10;
        so.nprobe = 1;
        CHECK_EQ(chrys_index_search(ix, 1, extra + (13 % 300) * d, &so, hh), CHRYS_OK);
        int seen = 0;
        for (int i = 0; i < 10; i++) seen |= hh[i].id == ids[13];
        CHECK(seen);
        /* retrain: k-means on the decoded codes (no float32 rows to train on) */
        CHECK_EQ(chrys_index_retrain(ix), CHRYS_OK);
        chrys_index_get_info(ix, &info);
        CHECK_EQ(info.trained_on, n + 50);
        CHECK(info.vector_bytes < (uint64_t)(n + 50) * d * 2);
        after = recall_vs_flat(ix, flat, q, nq, 10, 8);
        if (after < 0.85) h_fail(__FILE__, __LINE__, "IVF32,SQ8 metric %d after retraining on codes: recall %.3f", metric, after);
        /* save/load after mutation */
        CHECK_EQ(chrys_index_save(ix, pi, NULL), CHRYS_OK);
        chrys_index *back = NULL;
        CHECK_EQ(chrys_index_load(pi, &back, NULL), CHRYS_OK);
        so.nprobe = 8;
        if (back) {
            CHECK_EQ(chrys_index_search(ix, nq, q, &so, h1), CHRYS_OK);
            CHECK_EQ(chrys_index_search(back, nq, q, &so, h2), CHRYS_OK);
            CHECK(memcmp(h1, h2, nq * 10 * sizeof *h1) == 0);
        }
        chrys_index_free(back);
        free(h1);
        free(h2);
        unlink(pf);
        unlink(pi);
        unlink(pr);
        chrys_index_free(ix);
        chrys_index_free(rf);
        chrys_index_free(flat);
    }
    free(ids);
    free(x);
}

/* IVF,SQ8,RFlat re-ranks with the float32 rows: every hit it returns carries the exact score
 * (the oracle's, in double), where codes-only IVF,SQ8 carries an approximation. */
void test_ivf_sq8_rflat_exact(void)
{
    uint64_t s = h_seed + 23;
    size_t n = 4000, d = 64, nq = 60;
    float *x = h_clustered(&s, n + nq, d, 30, 0.5f);
    const float *q = x + n * d;
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i + 10;
    for (int metric = 0; metric < 3; metric++) {
        chrys_index *rf = build("IVF32,SQ8,RFlat", metric, d, n, x, ids), *co = build("IVF32,SQ8", metric, d, n, x, ids);
        chrys_search_opts so;
        chrys_search_opts_init(&so);
        so.nprobe = 4;
        chrys_hit hr[10], hc[10];
        float row[64];
        double worst_rf = 0, worst_co = 0;
        for (size_t qi = 0; qi < nq; qi++) {
            const float *qv = q + qi * d;
            double qn = metric == 0 ? vec_norm(qv, d) : 1;
            CHECK_EQ(chrys_index_search(rf, 1, qv, &so, hr), CHRYS_OK);
            CHECK_EQ(chrys_index_search(co, 1, qv, &so, hc), CHRYS_OK);
            for (int j = 0; j < 10; j++) {
                for (int t = 0; t < 2; t++) {
                    chrys_hit *h = t ? &hc[j] : &hr[j];
                    if (h->id == CHRYS_NO_ID) continue;
                    CHECK_EQ(chrys_index_get(rf, h->id, row), CHRYS_OK); /* the row as given (float32) */
                    double exact;
                    if (metric == 2) exact = vec_l2sq_f64(qv, row, d);
                    else {
                        double rn = metric == 0 ? vec_norm(row, d) : 1;
                        exact = vec_dot_f64(qv, row, d) / (qn * rn);
                    }
                    double e = fabs(h->score - exact) / (fabs(exact) > 1 ? fabs(exact) : 1);
                    if (t) worst_co = e > worst_co ? e : worst_co;
                    else worst_rf = e > worst_rf ? e : worst_rf;
                }
                if (j && hr[j].id != CHRYS_NO_ID) /* best first */
                    CHECK(metric == 2 ? hr[j].score >= hr[j - 1].score : hr[j].score <= hr[j - 1].score);
            }
        }
        if (worst_rf > 2e-6) h_fail(__FILE__, __LINE__, "IVF32,SQ8,RFlat metric %d: score off by %.2e (relative)", metric, worst_rf);
        if (!(worst_co > 1e-5 && worst_co < 0.1))
            h_fail(__FILE__, __LINE__, "IVF32,SQ8 metric %d: scores off by %.2e (expected approximate)", metric, worst_co);
        chrys_index_free(rf);
        chrys_index_free(co);
    }
    free(ids);
    free(x);
}

/* A store written before IVF,SQ8 became codes-only (tests/golden/store_v1_0_ivf_sq8.chrys, made
 * by tests/golden/make_store_v1_0_ivf_sq8.sh with the CLI of 729952f: IVF4,SQ8 whose float32
 * rows were kept) loads as IVF4,SQ8,RFlat, searches exactly with every list probed, and saves
 * as a 1.2 file that loads back the same. */
#define GOLDEN_IVF_SQ8 "tests/golden/store_v1_0_ivf_sq8.chrys"
void test_ivf_golden_v1_0_sq8(void)
{
    chrys_index *g = NULL;
    char *msg = NULL;
    CHECK_EQ(chrys_index_load(GOLDEN_IVF_SQ8, &g, &msg), CHRYS_OK);
    if (msg) h_fail(__FILE__, __LINE__, "%s", msg);
    chrys_free(msg);
    if (!g) return;
    chrys_store_meta sm = {sizeof sm};
    CHECK_EQ(chrys_store_peek(GOLDEN_IVF_SQ8, &sm, NULL), CHRYS_OK);
    CHECK_EQ(sm.format_minor, 0u);
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(g, &info);
    CHECK(!strcmp(info.spec, "IVF4,SQ8,RFlat"));
    CHECK_EQ(info.count, 240u);
    CHECK_EQ(info.nlist, 4u);
    CHECK_EQ(info.dim, 16u);
    CHECK(info.vector_bytes >= 240u * 16 * 5); /* rows and codes */
    const char *meta = NULL;
    CHECK_EQ(chrys_index_get_meta(g, 500, &meta), CHRYS_OK);
    CHECK(meta && strstr(meta, "\"i\""));
    CHECK_EQ(chrys_index_get_meta(g, 507, &meta), CHRYS_OK);
    CHECK(meta == NULL);
    /* the oracle: a Flat index of the same rows */
    float *rows = malloc(240 * 16 * sizeof(float));
    uint64_t ids[240];
    size_t n_ids;
    CHECK_EQ(chrys_index_get_ids(g, ids, 240, &n_ids), CHRYS_OK);
    CHECK_EQ(n_ids, 240);
    for (int i = 0; i < 240; i++) CHECK_EQ(chrys_index_get(g, ids[i], rows + i * 16), CHRYS_OK);
    chrys_index *flat = build("Flat", 0, 16, 240, rows, ids);
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.nprobe = 4;
    so.k = 5;
    chrys_hit a[40 * 5], b[40 * 5];
    CHECK_EQ(chrys_index_search(g, 40, rows, &so, a), CHRYS_OK);
    CHECK_EQ(chrys_index_search(flat, 40, rows, &so, b), CHRYS_OK);
    for (int i = 0; i < 40 * 5; i++) {
        CHECK_EQ(a[i].id, b[i].id);
        CHECK_NEAR(a[i].score, b[i].score, 1e-6);
    }
    char path[128];
    snprintf(path, sizeof path, "/tmp/chrys_gold_ivf_%d.chrys", (int)getpid());
    CHECK_EQ(chrys_index_save(g, path, NULL), CHRYS_OK);
    CHECK_EQ(chrys_store_peek(path, &sm, NULL), CHRYS_OK);
    CHECK_EQ(sm.format_minor, 2u);
    chrys_index *back = NULL;
    CHECK_EQ(chrys_index_load(path, &back, NULL), CHRYS_OK);
    if (back) {
        chrys_index_get_info(back, &info);
        CHECK(!strcmp(info.spec, "IVF4,SQ8,RFlat"));
        CHECK_EQ(chrys_index_search(back, 40, rows, &so, b), CHRYS_OK);
        CHECK(memcmp(a, b, sizeof a) == 0);
    }
    chrys_index_free(back);
    unlink(path);
    chrys_index_free(flat);
    chrys_index_free(g);
    free(rows);
}

/* A trained IVF index that removals left with fewer rows than lists saved a store its loader
 * refused ("PLAN section is invalid"); it must load, also as codes only and also empty. */
void test_regress_ivf_store_fewer_rows_than_lists(void)
{
    uint64_t s = h_seed + 24;
    size_t n = 400, d = 16;
    float *x = h_clustered(&s, n, d, 8, 0.5f);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i;
    const char *specs[] = {"IVF8,Flat", "IVF8,SQ8", "IVF8,SQ8,RFlat"};
    for (int si = 0; si < 3; si++) {
        chrys_index *ix = build(specs[si], 0, d, n, x, ids);
        const size_t keeps[] = {3, 0};
        for (int ki = 0; ki < 2; ki++) {
            size_t keep = keeps[ki];
            chrys_index_info info = {sizeof info};
            chrys_index_get_info(ix, &info);
            while (info.count > keep) {
                uint64_t *cur = malloc(info.count * sizeof *cur);
                size_t n_cur;
                chrys_index_get_ids(ix, cur, info.count, &n_cur);
                CHECK_EQ(chrys_index_remove(ix, cur[0]), CHRYS_OK);
                free(cur);
                chrys_index_get_info(ix, &info);
            }
            CHECK_EQ(info.nlist, 8);
            char path[128];
            snprintf(path, sizeof path, "/tmp/chrys_ivf_few_%d.chrys", (int)getpid());
            CHECK_EQ(chrys_index_save(ix, path, NULL), CHRYS_OK);
            chrys_index *back = NULL;
            char *msg = NULL;
            CHECK_EQ(chrys_index_load(path, &back, &msg), CHRYS_OK);
            if (msg) h_fail(__FILE__, __LINE__, "%s with %zu rows: %s", specs[si], keep, msg);
            chrys_free(msg);
            if (back) {
                chrys_index_get_info(back, &info);
                CHECK_EQ(info.count, keep);
                CHECK(!strcmp(info.spec, specs[si]));
                chrys_hit h[3];
                chrys_search_opts so;
                chrys_search_opts_init(&so);
                so.k = 3;
                so.nprobe = 8;
                CHECK_EQ(chrys_index_search(back, 1, x, &so, h), CHRYS_OK);
                CHECK(keep ? h[0].id != CHRYS_NO_ID : h[0].id == CHRYS_NO_ID);
            }
            chrys_index_free(back);
            unlink(path);
        }
        chrys_index_free(ix);
    }
    free(ids);
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
    /* the third case is large enough for the parallel k-means++ distances (16 k x d >= 2^18) and
     * the parallel Lloyd update (n x d >= 2^18, d >= 64: workers over dimension ranges) */
    struct { size_t n, d; uint32_t k; } cases[] = {{4000, 16, 20}, {4096, 8, 256}, {8192, 96, 300}};
    for (int ci = 0; ci < 3; ci++) {
        size_t n = cases[ci].n, d = cases[ci].d;
        uint32_t k = cases[ci].k;
        float *x = h_clustered(&s, n, d, k, 0.2f);
        float *c1 = malloc(k * d * sizeof(float)), *cn = malloc(k * d * sizeof(float));
        double o1, on;
        CHECK_EQ(kmeans_train(x, n, d, k, ci & 1, 5, 4, 1, c1, &o1), CHRYS_OK);
        for (unsigned nt = 2; nt <= 4; nt += 2) {
            CHECK_EQ(kmeans_train(x, n, d, k, ci & 1, 5, 4, nt, cn, &on), CHRYS_OK);
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

/* Past 256 centroids the seeds are random training points, as FAISS seeds, so they follow the
 * density: 9,000 near-copies of one direction and 1,000 scattered points, 300 centroids and no
 * Lloyd iteration: about 270 seeds land on the dense direction (k-means++'s D^2 draw put nearly
 * all of them on the scattered points, which on clustered 200k x 1024 cost 1-2% of objective
 * against FAISS). Every seed is a distinct training row. */
void test_kmeans_many_centroids_seed_by_density(void)
{
    enum { N = 10000, D = 32, K = 300 };
    uint64_t s = h_seed + 5;
    float *x = malloc((size_t)N * D * sizeof *x), *c = malloc((size_t)K * D * sizeof *c);
    CHECK(x && c);
    if (!x || !c) return;
    float a[D];
    for (size_t i = 0; i < D; i++) a[i] = h_gauss(&s);
    for (size_t r = 0; r < N; r++) {
        float *v = x + r * D;
        for (size_t i = 0; i < D; i++) v[i] = r % 10 != 9 ? a[i] + 1e-3f * h_gauss(&s) : h_gauss(&s); /* every tenth scattered */
        double nn = 0;
        for (size_t i = 0; i < D; i++) nn += (double)v[i] * v[i];
        for (size_t i = 0; i < D; i++) v[i] = (float)(v[i] / sqrt(nn));
    }
    CHECK_EQ(kmeans_train(x, N, D, K, 0, 11, 0, 2, c, NULL), CHRYS_OK); /* L2: seeds kept as drawn */
    size_t dense = 0, rows = 0;
    for (size_t k = 0; k < K; k++) {
        const float *ck = c + k * D;
        double dot = 0;
        for (size_t i = 0; i < D; i++) dot += (double)ck[i] * x[i];
        if (dot > 0.999) dense++; /* x[0] is one of the near-copies */
        for (size_t r = 0; r < N; r++)
            if (memcmp(ck, x + r * D, sizeof(float) * D) == 0) {
                rows++;
                break;
            }
    }
    if (!(dense >= 230 && dense <= 300)) h_fail(__FILE__, __LINE__, "%zu of %d seeds on the dense direction", dense, K);
    CHECK_EQ(rows, (size_t)K);
    for (size_t k = 1; k < K; k++)
        for (size_t j = 0; j < k; j++) CHECK(memcmp(c + k * D, c + j * D, sizeof(float) * D) != 0);
    free(x);
    free(c);
}

/*
 * test_hnsw.c: the HNSW index against the exact Flat oracle: recall on every metric and storage
 * (float32, SQ8 codes only, SQ8 with float32 re-ranking), thresholds, filters, updates and
 * deletes against a freshly built index, compaction, parallel build, concurrent searches, and
 * persistence with a loader that rejects a corrupted graph.
 */
#include <pthread.h>
#include <unistd.h>

#include "../harness.h"
#include "chrysalis.h"
#include "hnsw.h"
#include "index.h"
#include "store/format.h"
#include "store/store.h"
#include "tests.h"

static chrys_index *make_index(const char *spec, uint32_t dim, chrys_metric metric, uint32_t efc, uint32_t threads)
{
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = dim;
    o.metric = metric;
    o.spec = spec;
    o.ef_construction = efc;
    o.build_threads = threads;
    chrys_index *ix = NULL;
    char *msg = NULL;
    int rc = chrys_index_new(&o, &ix, &msg);
    if (rc) h_fail(__FILE__, __LINE__, "chrys_index_new(%s): %s", spec, msg ? msg : "?");
    chrys_free(msg);
    return ix;
}

/* recall@k of ix against the exact answer of oracle (a Flat index over the same live vectors),
 * counting an id as found when its exact score reaches the k-th exact score (ties). */
static double recall_vs(const chrys_index *ix, const chrys_index *oracle, const float *q, size_t nq, size_t dim,
                        uint32_t k, uint32_t ef, const chrys_search_opts *extra)
{
    chrys_search_opts so;
    if (extra) so = *extra;
    else chrys_search_opts_init(&so);
    so.k = k;
    so.ef_search = ef;
    chrys_hit *got = malloc(nq * k * sizeof *got), *want = malloc(nq * k * sizeof *want);
    CHECK_EQ(chrys_index_search(ix, nq, q, &so, got), CHRYS_OK);
    CHECK_EQ(chrys_index_search(oracle, nq, q, &so, want), CHRYS_OK);
    size_t hit = 0, total = 0;
    (void)dim;
    for (size_t i = 0; i < nq; i++) {
        size_t nw = 0;
        for (size_t j = 0; j < k; j++) nw += want[i * k + j].id != CHRYS_NO_ID;
        total += nw;
        for (size_t j = 0; j < k; j++) {
            uint64_t id = got[i * k + j].id;
            if (id == CHRYS_NO_ID) continue;
            for (size_t t = 0; t < nw; t++)
                if (want[i * k + t].id == id) {
                    hit++;
                    break;
                }
        }
    }
    free(got);
    free(want);
    return total ? (double)hit / total : 1.0;
}

static chrys_index *oracle_of(const float *x, const uint64_t *ids, size_t n, size_t dim, chrys_metric metric)
{
    chrys_index *f = make_index("Flat", (uint32_t)dim, metric, 0, 0);
    if (!f) return NULL;
    CHECK_EQ(chrys_index_add(f, n, ids, x, NULL), CHRYS_OK);
    return f;
}

void test_hnsw_recall_vs_exact(void)
{
    uint64_t s = h_seed;
    size_t n = 4000, d = 48, nq = 200;
    float *x = h_clustered(&s, n + nq, d, 40, 0.6f);
    const float *q = x + n * d;
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = 1000 + 7 * i;
    const chrys_metric metrics[] = {CHRYS_METRIC_COSINE, CHRYS_METRIC_IP, CHRYS_METRIC_L2};
    const char *specs[] = {"HNSW16", "HNSW16,SQ8,RFlat", "HNSW16,SQ8"};
    const double want_recall[] = {0.97, 0.97, 0.90};
    for (size_t m = 0; m < 3; m++) {
        chrys_index *f = oracle_of(x, ids, n, d, metrics[m]);
        for (size_t sp = 0; sp < 3; sp++) {
            chrys_index *h = make_index(specs[sp], (uint32_t)d, metrics[m], 100, 1);
            /* two batches: the second one links into an existing graph */
            CHECK_EQ(chrys_index_add(h, n / 2, ids, x, NULL), CHRYS_OK);
            CHECK_EQ(chrys_index_add(h, n - n / 2, ids + n / 2, x + (n / 2) * d, NULL), CHRYS_OK);
            double r = recall_vs(h, f, q, nq, d, 10, 64, NULL);
            if (r < want_recall[sp])
                h_fail(__FILE__, __LINE__, "%s metric %d: recall@10 %.3f < %.2f", specs[sp], (int)metrics[m], r, want_recall[sp]);
            /* more ef, more recall */
            double r2 = recall_vs(h, f, q, nq, d, 10, 256, NULL);
            CHECK(r2 >= r - 0.005);
            if (sp == 0) CHECK(r2 >= 0.995);
            /* scores: with float32 rows, a hit's score is the exact one (same id, same score as
             * the oracle's); SQ8 only: within the quantisation error */
            chrys_search_opts so;
            chrys_search_opts_init(&so);
            so.k = 5;
            so.ef_search = 256;
            chrys_hit hits[20 * 5], exact[20 * 5];
            CHECK_EQ(chrys_index_search(h, 20, q, &so, hits), CHRYS_OK);
            CHECK_EQ(chrys_index_search(f, 20, q, &so, exact), CHRYS_OK);
            size_t same = 0;
            for (int j = 0; j < 20 * 5; j++) {
                if (j % 5) CHECK(metrics[m] == CHRYS_METRIC_L2 ? hits[j].score >= hits[j - 1].score : hits[j].score <= hits[j - 1].score);
                if (sp < 2) { /* float32 rows: the exact answer, ids and scores */
                    if (hits[j].id != exact[j].id) continue;
                    same++;
                    if (fabs(hits[j].score - exact[j].score) > 1e-6 * (1 + fabs(exact[j].score)))
                        h_fail(__FILE__, __LINE__, "%s: score %.9g vs exact %.9g", specs[sp], hits[j].score, exact[j].score);
                } else { /* codes only: the same set, scores within the quantisation error */
                    for (int t = j - j % 5; t < j - j % 5 + 5; t++)
                        if (exact[t].id == hits[j].id) {
                            same++;
                            /* (the second batch's values outside the first batch's ranges are clamped) */
                            if (fabs(hits[j].score - exact[t].score) > 0.05 * (1 + fabs(exact[t].score)))
                                h_fail(__FILE__, __LINE__, "%s: score %.9g vs exact %.9g", specs[sp], hits[j].score, exact[t].score);
                        }
                }
            }
            CHECK(same >= (sp < 2 ? 95u : 85u));
            chrys_index_info info;
            info.struct_size = 0;
            CHECK_EQ(chrys_index_get_info(h, &info), CHRYS_OK);
            CHECK_EQ(info.count, n);
            CHECK_EQ(info.kind, CHRYS_INDEX_HNSW);
            CHECK_EQ(info.hnsw_m, 16u);
            CHECK_EQ(info.ef_construction, 100u);
            CHECK(info.max_level >= 1);
            CHECK_EQ(strcmp(info.spec, specs[sp]), 0);
            chrys_index_free(h);
        }
        chrys_index_free(f);
    }
    free(ids);
    free(x);
}

/* SQ8 only keeps about a quarter of the float32 index's vector memory; get() decodes. */
void test_hnsw_sq8_memory_and_get(void)
{
    uint64_t s = h_seed + 1;
    size_t n = 3000, d = 128;
    float *x = h_clustered(&s, n, d, 20, 0.5f);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i;
    chrys_index *a = make_index("HNSW16", (uint32_t)d, CHRYS_METRIC_COSINE, 64, 0);
    chrys_index *b = make_index("HNSW16,SQ8", (uint32_t)d, CHRYS_METRIC_COSINE, 64, 0);
    chrys_index *c = make_index("HNSW16,SQ8,RFlat", (uint32_t)d, CHRYS_METRIC_COSINE, 64, 0);
    CHECK_EQ(chrys_index_add(a, n, ids, x, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_add(b, n, ids, x, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_add(c, n, ids, x, NULL), CHRYS_OK);
    chrys_index_info ia = {sizeof ia}, ib = {sizeof ib}, ic = {sizeof ic};
    chrys_index_get_info(a, &ia);
    chrys_index_get_info(b, &ib);
    chrys_index_get_info(c, &ic);
    CHECK(ib.vector_bytes * 4 <= ia.vector_bytes);
    CHECK(ib.memory_bytes < ia.memory_bytes * 0.5); /* at 128-d the graph and ids weigh as much as the codes */
    CHECK(ic.vector_bytes > ia.vector_bytes);
    /* decoded rows are within half a quantisation step per dimension of the input */
    float got[128];
    double norm = 0;
    for (size_t i = 0; i < d; i++) norm += (double)x[5 * d + i] * x[5 * d + i];
    norm = sqrt(norm);
    CHECK_EQ(chrys_index_get(b, 5, got), CHRYS_OK);
    double err = 0;
    for (size_t i = 0; i < d; i++) err = fmax(err, fabs(got[i] - x[5 * d + i]) / norm);
    CHECK(err < 0.02);
    CHECK(err > 0); /* really quantised */
    /* an exact scan needs float32 rows: refused on SQ8-only, not a crash */
    float *qn = NULL;
    CHECK_EQ(search_prepare_queries(b, 1, x, &qn, NULL, 0), CHRYS_OK);
    uint64_t oid;
    double osc;
    CHECK_EQ(flat_search_prepared(b, 1, qn ? qn : x, 1, 0, 0, 1, &oid, &osc, NULL), CHRYS_INVALID);
    chrys_free_aligned(qn);
    chrys_index_free(a);
    chrys_index_free(b);
    chrys_index_free(c);
    free(ids);
    free(x);
}

/* After 20% of the entries are updated and 10% deleted, recall stays within 0.01 of an index
 * built fresh from the final vectors; deleted ids never come back; compaction keeps it. */
void test_hnsw_update_delete_recall(void)
{
    uint64_t s = h_seed + 2;
    size_t n = 5000, d = 32, nq = 300;
    float *x = h_clustered(&s, n + n / 5 + nq, d, 50, 0.5f);
    float *moved = x + n * d, *q = x + (n + n / 5) * d;
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i;
    for (int sq = 0; sq < 2; sq++) {
        const char *spec = sq ? "HNSW12,SQ8,RFlat" : "HNSW12";
        chrys_index *h = make_index(spec, (uint32_t)d, CHRYS_METRIC_COSINE, 80, 2);
        CHECK_EQ(chrys_index_add(h, n, ids, x, NULL), CHRYS_OK);
        float *final = malloc(n * d * sizeof(float));
        memcpy(final, x, n * d * sizeof(float));
        /* update 20%: each to a vector of another cluster (a real move) */
        for (size_t i = 0; i < n / 5; i++) {
            size_t id = (i * 5 + 3) % n;
            CHECK_EQ(chrys_index_update(h, id, moved + i * d), CHRYS_OK);
            memcpy(final + id * d, moved + i * d, d * sizeof(float));
        }
        /* delete 10% */
        char *dead = calloc(n, 1);
        for (size_t i = 0; i < n / 10; i++) {
            size_t id = (i * 10 + 1) % n;
            CHECK_EQ(chrys_index_remove(h, id), CHRYS_OK);
            dead[id] = 1;
        }
        CHECK_EQ(chrys_index_remove(h, 1), CHRYS_NOTFOUND);
        size_t nl = 0;
        float *lx = malloc(n * d * sizeof(float));
        uint64_t *lid = malloc(n * sizeof *lid);
        for (size_t i = 0; i < n; i++)
            if (!dead[i]) {
                memcpy(lx + nl * d, final + i * d, d * sizeof(float));
                lid[nl++] = i;
            }
        chrys_index *f = oracle_of(lx, lid, nl, d, CHRYS_METRIC_COSINE);
        chrys_index *fresh = make_index(spec, (uint32_t)d, CHRYS_METRIC_COSINE, 80, 2);
        CHECK_EQ(chrys_index_add(fresh, nl, lid, lx, NULL), CHRYS_OK);
        for (uint32_t ef = 12; ef <= 64; ef *= 2) {
            double r_mut = recall_vs(h, f, q, nq, d, 10, ef, NULL), r_fresh = recall_vs(fresh, f, q, nq, d, 10, ef, NULL);
            if (r_mut < r_fresh - 0.01)
                h_fail(__FILE__, __LINE__, "%s ef %u: recall after updates/deletes %.4f vs fresh %.4f", spec, ef, r_mut, r_fresh);
        }
        /* no deleted id is ever returned, even with a huge k */
        chrys_search_opts so;
        chrys_search_opts_init(&so);
        so.k = 200;
        so.ef_search = 400;
        chrys_hit *hits = malloc(20 * 200 * sizeof *hits);
        CHECK_EQ(chrys_index_search(h, 20, q, &so, hits), CHRYS_OK);
        for (size_t i = 0; i < 20 * 200; i++)
            if (hits[i].id != CHRYS_NO_ID && dead[hits[i].id]) {
                h_fail(__FILE__, __LINE__, "deleted id %llu returned", (unsigned long long)hits[i].id);
                break;
            }
        chrys_index_info info = {sizeof info};
        chrys_index_get_info(h, &info);
        CHECK_EQ(info.count, nl);
        CHECK_EQ(info.deleted, n / 10);
        uint64_t *all = malloc(n * sizeof *all);
        size_t n_all;
        CHECK_EQ(chrys_index_get_ids(h, all, n, &n_all), CHRYS_OK);
        CHECK_EQ(n_all, nl);
        for (size_t i = 0; i < nl; i++) CHECK(!dead[all[i]]);
        /* updated rows read back */
        float row[32];
        CHECK_EQ(chrys_index_get(h, 3, row), CHRYS_OK);
        for (size_t i = 0; i < d; i++) CHECK_NEAR(row[i], moved[i], 1e-5 * (1 + fabs(moved[i])));
        /* compaction: tombstones gone, recall unchanged within 0.01, ids and rows intact */
        double before = recall_vs(h, f, q, nq, d, 10, 32, NULL);
        CHECK_EQ(chrys_index_compact(h), CHRYS_OK);
        chrys_index_get_info(h, &info);
        CHECK_EQ(info.deleted, 0u);
        CHECK_EQ(info.count, nl);
        CHECK_EQ(h->n, nl);
        double after = recall_vs(h, f, q, nq, d, 10, 32, NULL);
        CHECK(after >= before - 0.01);
        CHECK_EQ(chrys_index_get(h, 3, row), CHRYS_OK);
        CHECK_NEAR(row[0], moved[0], 1e-5 * (1 + fabs(moved[0])));
        CHECK_EQ(chrys_index_contains(h, 1), 0);
        CHECK_EQ(chrys_index_contains(h, 2), 1);
        /* still a valid graph: save and load pass the invariant checks */
        char path[] = "/tmp/chrys_hnsw_compact_XXXXXX";
        int fd = mkstemp(path);
        close(fd);
        char *msg = NULL;
        CHECK_EQ(chrys_index_save(h, path, &msg), CHRYS_OK);
        chrys_index *back = NULL;
        CHECK_EQ(chrys_index_load(path, &back, &msg), CHRYS_OK);
        if (msg) h_fail(__FILE__, __LINE__, "%s", msg);
        chrys_free(msg);
        CHECK(back && recall_vs(back, f, q, nq, d, 10, 32, NULL) == after);
        chrys_index_free(back);
        unlink(path);
        free(all);
        free(hits);
        free(lx);
        free(lid);
        free(dead);
        free(final);
        chrys_index_free(f);
        chrys_index_free(fresh);
        chrys_index_free(h);
    }
    free(ids);
    free(x);
}

/* Removing most nodes (including the entry point, repeatedly) compacts by itself and search
 * keeps working down to an empty index; re-adding removed ids works. */
void test_hnsw_remove_all(void)
{
    uint64_t s = h_seed + 3;
    size_t n = 600, d = 8;
    float *x = h_clustered(&s, n, d, 5, 0.5f);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i + 1;
    chrys_index *h = make_index("HNSW8", (uint32_t)d, CHRYS_METRIC_L2, 32, 1);
    CHECK_EQ(chrys_index_add(h, n, ids, x, NULL), CHRYS_OK);
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.k = 3;
    chrys_hit hits[3];
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ(chrys_index_remove(h, ids[i]), CHRYS_OK);
        CHECK_EQ(chrys_index_search(h, 1, x + ((i * 7) % n) * d, &so, hits), CHRYS_OK);
        if (i + 1 < n) {
            CHECK(hits[0].id != CHRYS_NO_ID);
            CHECK(hits[0].id > ids[i]); /* removed ones never come back */
        } else {
            CHECK_EQ(hits[0].id, CHRYS_NO_ID);
        }
        if (i + 1 < n && (i + 1) % 100 == 0) { /* automatic compaction at half tombstones */
            chrys_index_info info = {sizeof info};
            chrys_index_get_info(h, &info);
            CHECK(info.deleted * 2 <= n - i - 1 + info.deleted);
        }
    }
    CHECK_EQ(chrys_index_add(h, 10, ids, x, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_search(h, 1, x, &so, hits), CHRYS_OK);
    CHECK_EQ(hits[0].id, ids[0]);
    chrys_index_free(h);
    free(ids);
    free(x);
}

static int allow_even(uint64_t id, void *ctx)
{
    (*(size_t *)ctx)++;
    return id % 2 == 0;
}

void test_hnsw_filter_and_threshold(void)
{
    uint64_t s = h_seed + 4;
    size_t n = 3000, d = 24, nq = 100;
    float *x = h_clustered(&s, n + nq, d, 30, 0.5f);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i;
    chrys_index *h = make_index("HNSW16", (uint32_t)d, CHRYS_METRIC_COSINE, 64, 1);
    chrys_index *f = oracle_of(x, ids, n, d, CHRYS_METRIC_COSINE);
    CHECK_EQ(chrys_index_add(h, n, ids, x, NULL), CHRYS_OK);
    size_t calls = 0;
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.allow = allow_even;
    so.allow_ctx = &calls;
    so.n_threads = 1;
    double r = recall_vs(h, f, x + n * d, nq, d, 10, 64, &so);
    CHECK(r >= 0.95);
    CHECK(calls > 0);
    chrys_hit hits[10 * 100];
    so.k = 10;
    so.ef_search = 64;
    CHECK_EQ(chrys_index_search(h, nq, x + n * d, &so, hits), CHRYS_OK);
    for (size_t i = 0; i < nq * 10; i++) CHECK(hits[i].id == CHRYS_NO_ID || hits[i].id % 2 == 0);
    /* threshold: every hit reaches it; the hits equal the exact ones above it (recall ~1 at high ef) */
    chrys_search_opts st;
    chrys_search_opts_init(&st);
    st.k = 10;
    st.ef_search = 200;
    st.use_threshold = 1;
    st.threshold = 0.8f;
    chrys_hit a[10 * 100], b[10 * 100];
    CHECK_EQ(chrys_index_search(h, nq, x + n * d, &st, a), CHRYS_OK);
    CHECK_EQ(chrys_index_search(f, nq, x + n * d, &st, b), CHRYS_OK);
    size_t same = 0, total = 0;
    for (size_t i = 0; i < nq * 10; i++) {
        if (a[i].id != CHRYS_NO_ID) CHECK(a[i].score >= 0.8f);
        if (b[i].id != CHRYS_NO_ID) {
            total++;
            same += a[i].id == b[i].id;
        }
    }
    CHECK(total > 0 && same >= total * 0.98);
    chrys_index_free(h);
    chrys_index_free(f);
    free(ids);
    free(x);
}

typedef struct conc {
    const chrys_index *ix;
    const float *q;
    size_t nq;
    chrys_hit *out;
} conc;

static void *conc_search(void *arg)
{
    conc *c = arg;
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.n_threads = 1;
    for (int rep = 0; rep < 3; rep++)
        for (size_t i = 0; i < c->nq; i++) chrys_index_search(c->ix, 1, c->q + i * 16, &so, c->out + i * 10);
    return NULL;
}

/* Parallel build gives a valid graph of the same quality; concurrent searches on one index
 * return what a lone search returns. */
void test_hnsw_parallel_build_and_concurrent_search(void)
{
    uint64_t s = h_seed + 5;
    size_t n = 6000, d = 16, nq = 200;
    float *x = h_clustered(&s, n + nq, d, 60, 0.4f);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i * 3;
    chrys_index *one = make_index("HNSW16", (uint32_t)d, CHRYS_METRIC_L2, 100, 1);
    chrys_index *two = make_index("HNSW16", (uint32_t)d, CHRYS_METRIC_L2, 100, 4); /* more workers than cores */
    chrys_index *f = oracle_of(x, ids, n, d, CHRYS_METRIC_L2);
    CHECK_EQ(chrys_index_add(one, n, ids, x, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_add(two, n, ids, x, NULL), CHRYS_OK);
    double r1 = recall_vs(one, f, x + n * d, nq, d, 10, 32, NULL), r2 = recall_vs(two, f, x + n * d, nq, d, 10, 32, NULL);
    CHECK(r1 >= 0.95);
    CHECK(r2 >= r1 - 0.02);
    /* single-thread builds are deterministic */
    chrys_index *again = make_index("HNSW16", (uint32_t)d, CHRYS_METRIC_L2, 100, 1);
    CHECK_EQ(chrys_index_add(again, n, ids, x, NULL), CHRYS_OK);
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    chrys_hit *ref = malloc(nq * 10 * sizeof *ref), *ref2 = malloc(nq * 10 * sizeof *ref2);
    CHECK_EQ(chrys_index_search(one, nq, x + n * d, &so, ref), CHRYS_OK);
    CHECK_EQ(chrys_index_search(again, nq, x + n * d, &so, ref2), CHRYS_OK);
    CHECK_EQ(memcmp(ref, ref2, nq * 10 * sizeof *ref), 0);
    /* the graph of the parallel build passes the loader's invariant checks */
    char path[] = "/tmp/chrys_hnsw_par_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK_EQ(chrys_index_save(two, path, NULL), CHRYS_OK);
    chrys_index *back = NULL;
    CHECK_EQ(chrys_index_load(path, &back, NULL), CHRYS_OK);
    chrys_index_free(back);
    unlink(path);
    conc c[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        c[i] = (conc){one, x + n * d, nq, malloc(nq * 10 * sizeof(chrys_hit))};
        pthread_create(&t[i], NULL, conc_search, &c[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(memcmp(c[i].out, ref, nq * 10 * sizeof *ref), 0);
        free(c[i].out);
    }
    free(ref);
    free(ref2);
    chrys_index_free(one);
    chrys_index_free(two);
    chrys_index_free(again);
    chrys_index_free(f);
    free(ids);
    free(x);
}

/* Write ix with one section's payload replaced by patch(copy), checksums made valid again. */
static int save_patched(const chrys_index *ix, const char *path, uint32_t tag, void (*patch)(unsigned char *, size_t))
{
    store_section secs[INDEX_MAX_SECTIONS];
    index_sections is = {secs};
    if (index_store_sections(ix, &is)) return -1;
    unsigned char *copy = NULL;
    for (uint32_t i = 0; i < is.n; i++)
        if (secs[i].tag == tag) {
            copy = malloc(secs[i].len + 1);
            memcpy(copy, secs[i].data, secs[i].len);
            patch(copy, secs[i].len);
            secs[i].data = copy;
        }
    int rc = store_write(path, secs, is.n, NULL);
    free(copy);
    index_sections_free(&is);
    return rc;
}

static void self_link(unsigned char *p, size_t n)
{
    (void)n;
    /* node 3's level-0 list: make its first link point at node 3 */
    uint32_t m0 = 2 * 8;
    uint32_t *node = (uint32_t *)(p + 3 * (1 + m0) * 4);
    node[1] = 3;
}
static void out_of_range(unsigned char *p, size_t n)
{
    (void)n;
    uint32_t *node = (uint32_t *)(p + 5 * (1 + 16) * 4);
    node[1] = 1000000;
}
static void over_degree(unsigned char *p, size_t n)
{
    (void)n;
    uint32_t *node = (uint32_t *)(p + 7 * (1 + 16) * 4);
    node[0] = 17;
}
static void bad_entry(unsigned char *p, size_t n)
{
    (void)n;
    p[16] ^= 0x40; /* entry point */
}
static void bad_level(unsigned char *p, size_t n)
{
    (void)n;
    p[2] = 15;
}
static void bad_m(unsigned char *p, size_t n)
{
    (void)n;
    p[0] = 1; /* M = 1 */
}

void test_hnsw_store(void)
{
    uint64_t s = h_seed + 6;
    size_t n = 800, d = 12;
    float *x = h_clustered(&s, n, d, 8, 0.5f);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = 10 * i + 1;
    char path[] = "/tmp/chrys_hnsw_store_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    const char *specs[] = {"HNSW8", "HNSW8,SQ8", "HNSW8,SQ8,RFlat"};
    for (int sp = 0; sp < 3; sp++) {
        chrys_index *h = make_index(specs[sp], (uint32_t)d, sp == 1 ? CHRYS_METRIC_L2 : CHRYS_METRIC_COSINE, 40, 1);
        CHECK_EQ(chrys_index_add(h, n, ids, x, NULL), CHRYS_OK);
        CHECK_EQ(chrys_index_remove(h, ids[17]), CHRYS_OK); /* a tombstone travels too */
        char *msg = NULL;
        CHECK_EQ(chrys_index_save(h, path, &msg), CHRYS_OK);
        chrys_index *back = NULL;
        CHECK_EQ(chrys_index_load(path, &back, &msg), CHRYS_OK);
        if (msg) h_fail(__FILE__, __LINE__, "%s: %s", specs[sp], msg);
        chrys_free(msg);
        msg = NULL;
        chrys_search_opts so;
        chrys_search_opts_init(&so);
        chrys_hit a[50 * 10], b[50 * 10];
        CHECK_EQ(chrys_index_search(h, 50, x, &so, a), CHRYS_OK);
        CHECK_EQ(chrys_index_search(back, 50, x, &so, b), CHRYS_OK);
        CHECK_EQ(memcmp(a, b, sizeof a), 0);
        chrys_index_info ia = {sizeof ia}, ib = {sizeof ib};
        chrys_index_get_info(h, &ia);
        chrys_index_get_info(back, &ib);
        CHECK_EQ(strcmp(ia.spec, ib.spec), 0);
        CHECK_EQ(ib.deleted, 1u);
        CHECK_EQ(ib.count, n - 1);
        /* the loaded index keeps growing and searching */
        uint64_t extra = 999999;
        CHECK_EQ(chrys_index_add(back, 1, &extra, x + 3 * d, NULL), CHRYS_OK);
        so.k = 2;
        chrys_hit two[2];
        CHECK_EQ(chrys_index_search(back, 1, x + 3 * d, &so, two), CHRYS_OK);
        CHECK(two[0].id == extra || two[0].id == ids[3]);
        chrys_index_free(back);
        if (sp == 0) {
            struct {
                uint32_t tag;
                void (*fn)(unsigned char *, size_t);
                const char *expect;
            } bad[] = {{TAG_HNL0, self_link, "links to itself"},
                       {TAG_HNL0, out_of_range, "links to 1000000"},
                       {TAG_HNL0, over_degree, "has 17 links (cap 16)"},
                       {TAG_HNSW, bad_entry, "entry point"},
                       {TAG_HNLV, bad_level, "above the maximum"},
                       {TAG_HNSW, bad_m, "HNSW header is invalid"}};
            for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
                CHECK_EQ(save_patched(h, path, bad[i].tag, bad[i].fn), CHRYS_OK);
                chrys_index *c = NULL;
                CHECK_EQ(chrys_index_load(path, &c, &msg) & 0xff, CHRYS_CORRUPT);
                CHECK(c == NULL);
                CHECK_STR_CONTAINS(msg, bad[i].expect);
                CHECK_STR_CONTAINS(msg, path);
                chrys_free(msg);
                msg = NULL;
            }
        }
        chrys_index_free(h);
    }
    unlink(path);
    free(ids);
    free(x);
}

void test_hnsw_bad_input(void)
{
    chrys_index_spec sp = {sizeof sp};
    char *msg = NULL;
    CHECK_EQ(chrys_index_spec_parse("HNSW32", &sp, NULL), CHRYS_OK);
    CHECK(sp.kind == CHRYS_INDEX_HNSW && sp.hnsw_m == 32 && !sp.sq8);
    CHECK_EQ(chrys_index_spec_parse("HNSW16,Flat", &sp, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_spec_parse("HNSW16,SQ8", &sp, NULL), CHRYS_OK);
    CHECK(sp.sq8 && !sp.refine);
    CHECK_EQ(chrys_index_spec_parse("HNSW16,SQ8,RFlat", &sp, NULL), CHRYS_OK);
    CHECK(sp.sq8 && sp.refine);
    /* ("HNSW" alone is the roadmap's name for HNSW32 and "IVF16,SQ8,RFlat" a valid IVF spec: test_ivf.c) */
    const char *bad[] = {"HNSW1", "HNSW129", "HNSW16,PQ8", "HNSW16,RFlat", "HNSW16,SQ8,rflat"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_EQ(chrys_index_spec_parse(bad[i], &sp, &msg), CHRYS_INVALID);
        CHECK_STR_CONTAINS(msg, bad[i]);
        chrys_free(msg);
        msg = NULL;
    }
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = 4;
    o.spec = "HNSW8";
    o.ef_construction = 2000000;
    chrys_index *ix = NULL;
    CHECK_EQ(chrys_index_new(&o, &ix, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "ef_construction");
    chrys_free(msg);
    o.ef_construction = 0;
    CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_OK);
    float v[8] = {1, 0, 0, 0, NAN, 0, 0, 0};
    uint64_t ids[2] = {1, 2};
    CHECK_EQ(chrys_index_add(ix, 2, ids, v, NULL), CHRYS_INVALID); /* all or nothing */
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(ix, &info);
    CHECK_EQ(info.count, 0u);
    CHECK_EQ(chrys_index_add(ix, 1, ids, v, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_add(ix, 1, ids, v, NULL), CHRYS_EXISTS);
    float z[4] = {0, 0, 0, 0};
    CHECK_EQ(chrys_index_update(ix, 1, z), CHRYS_INVALID);
    CHECK_EQ(chrys_index_update(ix, 7, v), CHRYS_NOTFOUND);
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    chrys_hit hits[10];
    CHECK_EQ(chrys_index_search(ix, 1, z, &so, hits), CHRYS_INVALID); /* zero query under cosine */
    CHECK_EQ(chrys_index_search(ix, 1, v, &so, hits), CHRYS_OK);
    CHECK_EQ(hits[0].id, 1u);
    CHECK_EQ(hits[1].id, CHRYS_NO_ID);
    /* the only node updated, then removed, then the index reused */
    float w[4] = {0, 1, 0, 0};
    CHECK_EQ(chrys_index_update(ix, 1, w), CHRYS_OK);
    CHECK_EQ(chrys_index_search(ix, 1, w, &so, hits), CHRYS_OK);
    CHECK_EQ(hits[0].id, 1u);
    CHECK_NEAR(hits[0].score, 1.0, 1e-6);
    CHECK_EQ(chrys_index_remove(ix, 1), CHRYS_OK);
    CHECK_EQ(chrys_index_search(ix, 1, w, &so, hits), CHRYS_OK);
    CHECK_EQ(hits[0].id, CHRYS_NO_ID);
    chrys_index_free(ix);
}

/* A committed HNSW store (format 1.1, written by an earlier build of this library) must load
 * forever, search correctly, and save back byte for byte. (A fresh build of the same data need
 * not give the same graph: the build algorithm may improve; the format may not change.)
 * CHRYS_WRITE_GOLDEN=1 rewrites it from golden_hnsw() (only when the format changes on purpose). */
#define GOLDEN_HNSW "tests/golden/store_v1_1_hnsw.chrys"
static chrys_index *golden_hnsw(void)
{
    uint64_t s = 20261124; /* fixed: not the test seed */
    size_t n = 120, d = 8;
    float *x = h_clustered(&s, n, d, 6, 0.4f);
    uint64_t ids[120];
    for (size_t i = 0; i < n; i++) ids[i] = 1000 + 3 * i;
    chrys_index *h = make_index("HNSW4,SQ8,RFlat", (uint32_t)d, CHRYS_METRIC_COSINE, 16, 1);
    CHECK_EQ(chrys_index_add(h, n, ids, x, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_update(h, ids[7], x + 50 * d), CHRYS_OK);
    CHECK_EQ(chrys_index_remove(h, ids[11]), CHRYS_OK);
    free(x);
    return h;
}

void test_hnsw_golden_v1_1(void)
{
    chrys_index *h = golden_hnsw();
    if (getenv("CHRYS_WRITE_GOLDEN")) CHECK_EQ(chrys_index_save(h, GOLDEN_HNSW, NULL), CHRYS_OK);
    chrys_index *g = NULL;
    char *msg = NULL;
    CHECK_EQ(chrys_index_load(GOLDEN_HNSW, &g, &msg), CHRYS_OK);
    if (msg) h_fail(__FILE__, __LINE__, "%s", msg);
    chrys_free(msg);
    if (g) {
        chrys_store_meta sm = {sizeof sm};
        CHECK_EQ(chrys_store_peek(GOLDEN_HNSW, &sm, NULL), CHRYS_OK);
        CHECK_EQ(sm.format_major, 1u);
        CHECK_EQ(sm.format_minor, 1u);
        chrys_index_info info = {sizeof info};
        chrys_index_get_info(g, &info);
        CHECK_EQ(info.count, 119u);
        CHECK_EQ(info.deleted, 1u);
        CHECK_EQ(strcmp(info.spec, "HNSW4,SQ8,RFlat"), 0);
        /* every live point finds itself first; the removed id is gone; the updated one moved */
        chrys_search_opts so;
        chrys_search_opts_init(&so);
        so.k = 3;
        so.ef_search = 32;
        float q[8];
        for (uint64_t i = 0; i < 120; i++) {
            uint64_t id = 1000 + 3 * i;
            if (i == 11) {
                CHECK_EQ(chrys_index_get(g, id, q), CHRYS_NOTFOUND);
                continue;
            }
            CHECK_EQ(chrys_index_get(g, id, q), CHRYS_OK);
            chrys_hit hits[3];
            CHECK_EQ(chrys_index_search(g, 1, q, &so, hits), CHRYS_OK);
            if (hits[0].id != id) { /* only an exact duplicate of the point may come first (a tie) */
                float first_row[8];
                CHECK_EQ(chrys_index_get(g, hits[0].id, first_row), CHRYS_OK);
                CHECK_EQ(memcmp(first_row, q, sizeof q), 0);
            }
        }
        float moved[8];
        CHECK_EQ(chrys_index_get(h, 1000 + 3 * 7, moved), CHRYS_OK);
        CHECK_EQ(chrys_index_get(g, 1000 + 3 * 7, q), CHRYS_OK);
        for (int i = 0; i < 8; i++) CHECK_NEAR(q[i], moved[i], 1e-5);
        char path[] = "/tmp/chrys_hnsw_golden_XXXXXX";
        int fd = mkstemp(path);
        close(fd);
        CHECK_EQ(chrys_index_save(g, path, NULL), CHRYS_OK);
        /* byte-identical but for the writer version (the golden file is chrysalis 0.1.0's) */
        size_t l1 = 0, l2 = 0;
        unsigned char *b1 = h_read_file(path, &l1), *b2 = h_read_file(GOLDEN_HNSW, &l2);
        CHECK_EQ(b2 ? h_restamp_writer_version(b2, l2) : 0, 0x000100u);
        CHECK(b1 && b2 && l1 == l2 && memcmp(b1, b2, l1) == 0);
        free(b1);
        free(b2);
        unlink(path);
    }
    chrys_index_free(g);
    chrys_index_free(h);
}

/* A graph built from a fixed seed on one worker is the same bit for bit as the one the code built
 * when the golden file was written (tests/golden/hnsw_build_bits.chrys, from 9e6fdd4, before
 * hnsw.c was split and its heap became topk.h's): two batches, updates (repair and relink), removes
 * (repair, the entry point moved), then a compaction, so insert, the heuristic, connect's
 * re-selection, repair, relink_from and compaction must all decide as they did. SQ8 codes only: the
 * walk's scores are exact integer dot products, the same at every SIMD level (float32 rows would
 * make the graph depend on the kernel's rounding). CHRYS_WRITE_GOLDEN=1 rewrites it. */
#define GOLDEN_HNSW_BUILD "tests/golden/hnsw_build_bits.chrys"
void test_regress_hnsw_build_bits(void)
{
    uint64_t s = 20261202; /* fixed: not the test seed */
    size_t n = 300, d = 8;
    float *x = h_clustered(&s, n, d, 7, 0.4f);
    uint64_t ids[300];
    for (size_t i = 0; i < n; i++) ids[i] = 5 + 2 * i;
    chrys_index *h = make_index("HNSW6,SQ8", (uint32_t)d, CHRYS_METRIC_COSINE, 40, 1);
    CHECK_EQ(chrys_index_add(h, 180, ids, x, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_add(h, n - 180, ids + 180, x + 180 * d, NULL), CHRYS_OK);
    for (size_t i = 3; i < n; i += 29) CHECK_EQ(chrys_index_update(h, ids[i], x + ((i * 7 + 11) % n) * d), CHRYS_OK);
    uint32_t e = hnsw_entry(h);
    CHECK(e != CHRYS_NO_SLOT);
    CHECK_EQ(chrys_index_remove(h, h->ids[e]), CHRYS_OK);
    for (size_t i = 1; i < n; i += 23)
        if (chrys_index_contains(h, ids[i])) CHECK_EQ(chrys_index_remove(h, ids[i]), CHRYS_OK);
    CHECK_EQ(chrys_index_compact(h), CHRYS_OK);
    CHECK_EQ(h->n_dead, 0u);
    if (getenv("CHRYS_WRITE_GOLDEN")) CHECK_EQ(chrys_index_save(h, GOLDEN_HNSW_BUILD, NULL), CHRYS_OK);
    char path[] = "/tmp/chrys_hnsw_bits_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK_EQ(chrys_index_save(h, path, NULL), CHRYS_OK);
    /* byte for byte, but for the header's writer version (information only: the golden file is
     * chrysalis 0.1.0's), which h_restamp_writer_version sets to this library's */
    unsigned char *b[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    const char *names[2] = {path, GOLDEN_HNSW_BUILD};
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(names[i], "rb");
        CHECK(f != NULL);
        if (!f) continue;
        fseek(f, 0, SEEK_END);
        len[i] = (size_t)ftell(f);
        rewind(f);
        b[i] = malloc(len[i] ? len[i] : 1);
        CHECK(b[i] && fread(b[i], 1, len[i], f) == len[i]);
        fclose(f);
    }
    if (b[0] && b[1]) {
        CHECK_EQ(h_restamp_writer_version(b[1], len[1]), 0x000100u);
        long at = -1;
        for (size_t i = 0; i < len[0] && i < len[1]; i++)
            if (b[0][i] != b[1][i]) {
                at = (long)i;
                break;
            }
        if (at < 0 && len[0] != len[1]) at = (long)(len[0] < len[1] ? len[0] : len[1]);
        if (at >= 0) h_fail(__FILE__, __LINE__, "the graph built from the fixed seed differs from %s at byte %ld", GOLDEN_HNSW_BUILD, at);
    }
    free(b[0]);
    free(b[1]);
    unlink(path);
    chrys_index_free(h);
    free(x);
}

static void clear_refine_flag(unsigned char *p, size_t n)
{
    (void)n;
    p[0] &= (unsigned char)~4u; /* PLAN flags: as a 1.0 writer wrote a Flat SQ8 store */
}

/* A Flat SQ8 store of format 1.0 kept float32 rows beside the codes without the RFlat flag: it
 * must load as "SQ8,RFlat" with its rows; a codes-only Flat store has an empty VF32. */
void test_flat_sq8_storage_and_compat(void)
{
    uint64_t s = h_seed + 7;
    size_t n = 500, d = 16;
    float *x = h_clustered(&s, n, d, 5, 0.5f);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i;
    chrys_index *rf = make_index("SQ8,RFlat", (uint32_t)d, CHRYS_METRIC_COSINE, 0, 0);
    chrys_index *co = make_index("SQ8", (uint32_t)d, CHRYS_METRIC_L2, 0, 0);
    CHECK_EQ(chrys_index_add(rf, n, ids, x, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_add(co, n, ids, x, NULL), CHRYS_OK);
    char path[] = "/tmp/chrys_flat_sq8_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK_EQ(save_patched(rf, path, TAG_PLAN, clear_refine_flag), CHRYS_OK);
    chrys_index *back = NULL;
    char *msg = NULL;
    CHECK_EQ(chrys_index_load(path, &back, &msg), CHRYS_OK);
    if (msg) h_fail(__FILE__, __LINE__, "%s", msg);
    chrys_free(msg);
    chrys_index_info info = {sizeof info};
    if (back) {
        chrys_index_get_info(back, &info);
        CHECK_EQ(strcmp(info.spec, "SQ8,RFlat"), 0);
        float row[16];
        CHECK_EQ(chrys_index_get(back, 9, row), CHRYS_OK);
        for (size_t i = 0; i < d; i++) CHECK_NEAR(row[i], x[9 * d + i], 1e-5 * (1 + fabs(x[9 * d + i])));
    }
    chrys_index_free(back);
    /* codes only: saved without float32 rows, loaded back the same, L2 scores approximate */
    CHECK_EQ(chrys_index_save(co, path, NULL), CHRYS_OK);
    back = NULL;
    CHECK_EQ(chrys_index_load(path, &back, NULL), CHRYS_OK);
    chrys_store_meta sm = {sizeof sm};
    CHECK_EQ(chrys_store_peek(path, &sm, NULL), CHRYS_OK);
    CHECK(sm.file_bytes < n * d * 4); /* no float32 rows in the file */
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    chrys_hit a[10], b[10];
    CHECK_EQ(chrys_index_search(co, 1, x + 3 * d, &so, a), CHRYS_OK);
    CHECK_EQ(chrys_index_search(back, 1, x + 3 * d, &so, b), CHRYS_OK);
    CHECK_EQ(memcmp(a, b, sizeof a), 0);
    CHECK_EQ(a[0].id, 3u);
    CHECK(a[0].score < 0.05); /* squared L2 to itself through the codes: small, not exactly 0 */
    chrys_index_free(back);
    unlink(path);
    chrys_index_free(rf);
    chrys_index_free(co);
    free(ids);
    free(x);
}

/* chrys_index_open_mmap: the same answers as a load, float32 rows left in the file, every
 * mutation refused, a damaged file refused like chrys_index_load refuses it. */
void test_hnsw_open_mmap(void)
{
    uint64_t s = h_seed + 8;
    size_t n = 2000, d = 32;
    float *x = h_clustered(&s, n, d, 20, 0.5f);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i + 5;
    char path[] = "/tmp/chrys_mmap_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    const char *specs[] = {"HNSW16,SQ8,RFlat", "HNSW16", "SQ8,RFlat", "Flat", "HNSW16,SQ8"};
    for (int sp = 0; sp < 5; sp++) {
        chrys_index *h = make_index(specs[sp], (uint32_t)d, CHRYS_METRIC_COSINE, 40, 0);
        CHECK_EQ(chrys_index_add(h, n, ids, x, NULL), CHRYS_OK);
        CHECK_EQ(chrys_index_save(h, path, NULL), CHRYS_OK);
        chrys_index *m = NULL;
        char *msg = NULL;
        CHECK_EQ(chrys_index_open_mmap(path, &m, &msg), CHRYS_OK);
        if (msg) h_fail(__FILE__, __LINE__, "%s: %s", specs[sp], msg);
        chrys_free(msg);
        msg = NULL;
        if (!m) continue;
        chrys_search_opts so;
        chrys_search_opts_init(&so);
        chrys_hit a[40 * 10], b[40 * 10];
        CHECK_EQ(chrys_index_search(h, 40, x, &so, a), CHRYS_OK);
        CHECK_EQ(chrys_index_search(m, 40, x, &so, b), CHRYS_OK);
        CHECK_EQ(memcmp(a, b, sizeof a), 0);
        chrys_index_info ih = {sizeof ih}, im = {sizeof im};
        chrys_index_get_info(h, &ih);
        chrys_index_get_info(m, &im);
        int codes_only = sp == 4;
        CHECK_EQ(im.mapped_bytes > 0, !codes_only);
        if (sp == 0 || sp == 2) CHECK(im.vector_bytes * 4 <= ih.vector_bytes); /* only the codes in memory */
        float row[32];
        CHECK_EQ(chrys_index_get(m, ids[7], row), CHRYS_OK);
        uint64_t extra = 99999;
        CHECK_EQ(chrys_index_add(m, 1, &extra, x, NULL), CHRYS_INVALID);
        CHECK_STR_CONTAINS(chrys_index_errmsg(m), "read-only");
        CHECK_EQ(chrys_index_remove(m, ids[0]), CHRYS_INVALID);
        CHECK_EQ(chrys_index_update(m, ids[0], x), CHRYS_INVALID);
        CHECK_EQ(chrys_index_compact(m), CHRYS_INVALID);
        CHECK_EQ(chrys_index_contains(m, ids[0]), 1);
        /* saving a mapped index writes the same file */
        char path2[] = "/tmp/chrys_mmap2_XXXXXX";
        int fd2 = mkstemp(path2);
        close(fd2);
        CHECK_EQ(chrys_index_save(m, path2, NULL), CHRYS_OK);
        chrys_index *again = NULL;
        CHECK_EQ(chrys_index_load(path2, &again, NULL), CHRYS_OK);
        CHECK_EQ(chrys_index_search(again, 40, x, &so, b), CHRYS_OK);
        CHECK_EQ(memcmp(a, b, sizeof a), 0);
        chrys_index_free(again);
        unlink(path2);
        chrys_index_free(m);
        chrys_index_free(h);
    }
    /* damaged: one flipped byte in the rows' section is a checksum error, as with a load */
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    if (f) {
        fseek(f, 64 + 32 * 4 + 100, SEEK_SET); /* inside the sections, past header and table */
        int c = fgetc(f);
        fseek(f, -1, SEEK_CUR);
        fputc(c ^ 0x10, f);
        fclose(f);
    }
    chrys_index *m = NULL;
    char *msg = NULL;
    CHECK_EQ(chrys_index_open_mmap(path, &m, &msg) & 0xff, CHRYS_CORRUPT);
    CHECK(m == NULL);
    CHECK_STR_CONTAINS(msg, path);
    chrys_free(msg);
    CHECK_EQ(chrys_index_open_mmap("/nonexistent/x.chrys", &m, &msg), CHRYS_IO);
    chrys_free(msg);
    unlink(path);
    free(ids);
    free(x);
}

/* Regressions found in review: tombstones above the live top level survive save/load; a large M
 * with a small ef_construction (full lists re-selected in connect) stays in bounds; an HNSW SQ8
 * store without its codes is refused; out-of-range values clamp to the last code. */
void test_regress_hnsw_review(void)
{
    uint64_t s = h_seed + 10;
    size_t n = 600, d = 8;
    float *x = h_clustered(&s, n, d, 6, 0.5f);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i + 1;
    char path[] = "/tmp/chrys_hnsw_rev_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    /* remove all of a small index (no compaction below 64 tombstones), then the entry point only */
    chrys_index *h = make_index("HNSW16", (uint32_t)d, CHRYS_METRIC_COSINE, 32, 1);
    CHECK_EQ(chrys_index_add(h, 10, ids, x, NULL), CHRYS_OK);
    for (int i = 0; i < 10; i++) CHECK_EQ(chrys_index_remove(h, ids[i]), CHRYS_OK);
    char *msg = NULL;
    chrys_index *back = NULL;
    CHECK_EQ(chrys_index_save(h, path, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_load(path, &back, &msg), CHRYS_OK);
    if (msg) h_fail(__FILE__, __LINE__, "%s", msg);
    chrys_free(msg);
    msg = NULL;
    chrys_index_free(back);
    chrys_index_free(h);
    h = make_index("HNSW16", (uint32_t)d, CHRYS_METRIC_COSINE, 32, 1);
    CHECK_EQ(chrys_index_add(h, 200, ids, x, NULL), CHRYS_OK);
    for (int rep = 0; rep < 3; rep++) { /* the entry point, three times */
        uint32_t e = hnsw_entry(h);
        CHECK(e != CHRYS_NO_SLOT);
        uint64_t top = h->ids[e];
        CHECK_EQ(chrys_index_remove(h, top), CHRYS_OK);
        CHECK_EQ(chrys_index_save(h, path, NULL), CHRYS_OK);
        back = NULL;
        CHECK_EQ(chrys_index_load(path, &back, &msg), CHRYS_OK);
        if (msg) h_fail(__FILE__, __LINE__, "%s", msg);
        chrys_free(msg);
        msg = NULL;
        chrys_index_free(back);
    }
    chrys_index_free(h);
    /* M 128, ef_construction 16: level-0 lists of 256 fill up and are re-selected */
    h = make_index("HNSW128", (uint32_t)d, CHRYS_METRIC_L2, 16, 2);
    CHECK_EQ(chrys_index_add(h, n, ids, x, NULL), CHRYS_OK);
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    chrys_hit hit;
    so.k = 1;
    CHECK_EQ(chrys_index_search(h, 1, x + 9 * d, &so, &hit), CHRYS_OK);
    CHECK_EQ(hit.id, ids[9]);
    chrys_index_free(h);
    /* an HNSW SQ8,RFlat store whose codes were dropped */
    h = make_index("HNSW8,SQ8,RFlat", (uint32_t)d, CHRYS_METRIC_COSINE, 16, 1);
    CHECK_EQ(chrys_index_add(h, 50, ids, x, NULL), CHRYS_OK);
    store_section secs[INDEX_MAX_SECTIONS];
    index_sections is = {secs};
    CHECK_EQ(index_store_sections(h, &is), CHRYS_OK);
    uint32_t kept = 0;
    for (uint32_t i = 0; i < is.n; i++)
        if (secs[i].tag != TAG_SQ8P && secs[i].tag != TAG_SQ8P + 1 && secs[i].tag != TAG_VSQ8) secs[kept++] = secs[i];
    CHECK_EQ(store_write(path, secs, kept, NULL), CHRYS_OK);
    index_sections_free(&is);
    back = NULL;
    CHECK_EQ(chrys_index_load(path, &back, &msg) & 0xff, CHRYS_CORRUPT);
    CHECK_STR_CONTAINS(msg, "without its codes");
    chrys_free(msg);
    chrys_index_free(h);
    /* values far outside the first batch's ranges clamp to the extreme codes */
    chrys_index *f = make_index("SQ8", 2, CHRYS_METRIC_L2, 0, 0);
    float first[4] = {0, 0, 1, 1}, far[2] = {1e30f, -1e30f}, got[2];
    uint64_t fid[2] = {1, 2}, gid = 3;
    CHECK_EQ(chrys_index_add(f, 2, fid, first, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_add(f, 1, &gid, far, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_get(f, 3, got), CHRYS_OK);
    CHECK_NEAR(got[0], 1.0, 1e-6);
    CHECK_NEAR(got[1], 0.0, 1e-6);
    chrys_index_free(f);
    unlink(path);
    free(ids);
    free(x);
}

/*
 * test_alloc.c: fault injection. Each mutating call of each index kind (Flat, SQ8, IVF, IVF+SQ8,
 * the planner's switch to IVF, HNSW, HNSW+SQ8), of the merger (including its switch to the graph)
 * and of save is run once for every allocation it makes, with that allocation failing. Each run
 * must end one of two ways:
 *   - CHRYS_OK, with exactly the state a run without injection gives, or
 *   - CHRYS_NOMEM, with exactly the state from before the call.
 * "State" is everything a save writes (rows, ids, metadata, lists, codes, graph, random state,
 * merger bookkeeping), compared byte for byte, plus the results of a batch of searches. A call that
 * swallowed a failure (a silently worse graph, a list left out, an IVF untrained) gives a third
 * state and fails the test. The ASan build also proves that no path leaks or crashes.
 */
#include <unistd.h>

#include "../harness.h"
#include "chrysalis.h"
#include "internal.h"
#include "tests.h"

#define AF_DIM 16
#define AF_N 400
#define AF_NQ 6
#define AF_K 5

static float g_rows[(AF_N + 64) * AF_DIM];
static char g_fp_path[256];
static chrys_hit g_op_hits[AF_NQ * AF_K]; /* what the call under test (a search) returned */

static void make_rows(void)
{
    uint64_t s = 12345;
    for (size_t i = 0; i < sizeof g_rows / sizeof *g_rows; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        int cluster = (int)((i / AF_DIM) % 7);
        g_rows[i] = (float)((s >> 40) % 1000) / 1000.0f - 0.5f + (float)((i % AF_DIM) == (size_t)cluster);
    }
    /* tmpfs when there is one: the fingerprints are saves, and each save fsyncs */
    snprintf(g_fp_path, sizeof g_fp_path, "%s/chrys_alloc_fp_%d.chrys", access("/dev/shm", W_OK) ? "/tmp" : "/dev/shm",
             (int)getpid());
}

/* The state of an index: its saved bytes and the hits of a batch of searches. Taken with
 * injection off. */
typedef struct fp {
    unsigned char *bytes;
    size_t len;
    chrys_hit hits[AF_NQ * AF_K];
    int search_rc;
} fp;

static void fp_index(const chrys_index *ix, fp *f)
{
    char *msg = NULL;
    memset(f, 0, sizeof *f);
    unlink(g_fp_path);
    if (chrys_index_save(ix, g_fp_path, &msg) == CHRYS_OK) f->bytes = h_read_file(g_fp_path, &f->len);
    chrys_free(msg);
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.k = AF_K;
    so.nprobe = 4;
    so.ef_search = 32;
    f->search_rc = chrys_index_search(ix, AF_NQ, g_rows + 3 * AF_DIM, &so, f->hits);
    unlink(g_fp_path);
}

static int fp_same(const fp *a, const fp *b)
{
    return a->bytes && b->bytes && a->len == b->len && !memcmp(a->bytes, b->bytes, a->len) &&
           a->search_rc == b->search_rc && !memcmp(a->hits, b->hits, sizeof a->hits);
}

typedef struct scenario {
    const char *name;
    const char *spec;
    uint64_t auto_threshold; /* planner ("auto" spec) */
    size_t n_before;         /* vectors added before the call */
    int op;                  /* what the call does */
} scenario;

enum { OP_ADD, OP_REMOVE, OP_UPDATE, OP_RETRAIN, OP_COMPACT, OP_SEARCH };

static chrys_index *prepare(const scenario *sc)
{
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = AF_DIM;
    o.spec = sc->spec;
    o.auto_threshold = sc->auto_threshold;
    o.build_threads = 1;
    o.ef_construction = 40;
    chrys_index *ix = NULL;
    char *msg = NULL;
    if (chrys_index_new(&o, &ix, &msg)) {
        h_fail(__FILE__, __LINE__, "%s: %s", sc->name, msg ? msg : "create failed");
        chrys_free(msg);
        return NULL;
    }
    uint64_t ids[AF_N];
    const char *meta[AF_N];
    for (size_t i = 0; i < sc->n_before; i++) ids[i] = 10 * i + 1, meta[i] = i % 3 ? NULL : "{\"k\":1}";
    if (sc->n_before && chrys_index_add(ix, sc->n_before, ids, g_rows, meta)) {
        h_fail(__FILE__, __LINE__, "%s: prepare add: %s", sc->name, chrys_index_errmsg(ix));
        chrys_index_free(ix);
        return NULL;
    }
    if (sc->op == OP_COMPACT)
        for (size_t i = 0; i < sc->n_before; i += 5) chrys_index_remove(ix, 10 * i + 1);
    return ix;
}

static int run_op(const scenario *sc, chrys_index *ix)
{
    switch (sc->op) {
    case OP_ADD: {
        uint64_t ids[64];
        const char *meta[64];
        for (size_t i = 0; i < 64; i++) ids[i] = 100000 + i, meta[i] = i % 2 ? "{\"new\":true}" : NULL;
        return chrys_index_add(ix, 64, ids, g_rows + (sc->n_before ? AF_N : 0) * AF_DIM, meta);
    }
    case OP_REMOVE: return chrys_index_remove(ix, 10 * 17 + 1);
    case OP_UPDATE: return chrys_index_update(ix, 10 * 23 + 1, g_rows + (AF_N + 5) * AF_DIM);
    case OP_RETRAIN: return chrys_index_retrain(ix);
    case OP_COMPACT: return chrys_index_compact(ix);
    case OP_SEARCH: {
        chrys_search_opts so;
        chrys_search_opts_init(&so);
        so.k = AF_K;
        so.nprobe = 4;
        so.ef_search = 32;
        return chrys_index_search(ix, AF_NQ, g_rows + 3 * AF_DIM, &so, g_op_hits);
    }
    }
    return CHRYS_ERROR;
}

/* Fail each allocation of the call in turn. Returns the number of allocation points. */
static long inject_index(const scenario *sc)
{
    chrys_index *ix = prepare(sc);
    if (!ix) return 0;
    fp after;
    long c0 = chrys__test_alloc_count();
    int rc = run_op(sc, ix);
    long total = chrys__test_alloc_count() - c0;
    if (rc != CHRYS_OK) h_fail(__FILE__, __LINE__, "%s: the call fails without injection: rc %d %s", sc->name, rc, chrys_index_errmsg(ix));
    fp_index(ix, &after);
    chrys_index_free(ix);
    chrys_hit want_hits[AF_NQ * AF_K];
    memcpy(want_hits, g_op_hits, sizeof want_hits);
    long bad = 0;
    for (long n = 1; n <= total; n++) {
        ix = prepare(sc);
        if (!ix) break;
        fp before, now;
        fp_index(ix, &before);
        chrys__test_fail_alloc_after(n);
        rc = run_op(sc, ix);
        chrys__test_fail_alloc_after(0);
        fp_index(ix, &now);
        int ok = rc == CHRYS_OK ? fp_same(&now, &after) && (sc->op != OP_SEARCH || !memcmp(g_op_hits, want_hits, sizeof want_hits))
                                : (rc & 0xff) == CHRYS_NOMEM && fp_same(&now, &before);
        if (!ok && bad++ < 3)
            h_fail(__FILE__, __LINE__, "%s: allocation %ld of %ld failing: rc %d, the index is %s", sc->name, n, total, rc,
                   rc == CHRYS_OK ? "not what a clean run gives" : (rc & 0xff) == CHRYS_NOMEM ? "changed" : "(wrong code)");
        free(before.bytes);
        free(now.bytes);
        chrys_index_free(ix);
    }
    free(after.bytes);
    return total;
}

void test_alloc_index_calls(void)
{
    make_rows();
    static const scenario scs[] = {
        {"Flat add", "Flat", 0, AF_N, OP_ADD},
        {"Flat first add", "Flat", 0, 0, OP_ADD},
        {"Flat remove", "Flat", 0, AF_N, OP_REMOVE},
        {"Flat update", "Flat", 0, AF_N, OP_UPDATE},
        {"Flat search", "Flat", 0, AF_N, OP_SEARCH},
        {"SQ8 first add", "SQ8", 0, 0, OP_ADD},
        {"SQ8,RFlat add", "SQ8,RFlat", 0, AF_N, OP_ADD},
        {"IVF add (lists grow)", "IVF8,Flat", 0, AF_N, OP_ADD},
        {"IVF add (trains)", "IVF2,Flat", 0, 0, OP_ADD},
        {"IVF retrain", "IVF8,Flat", 0, AF_N, OP_RETRAIN},
        {"IVF remove", "IVF8,Flat", 0, AF_N, OP_REMOVE},
        {"IVF update", "IVF8,Flat", 0, AF_N, OP_UPDATE},
        {"IVF search", "IVF8,Flat", 0, AF_N, OP_SEARCH},
        {"IVF,SQ8 add (codes only)", "IVF8,SQ8", 0, AF_N, OP_ADD},
        {"IVF,SQ8 retrain (codes only)", "IVF8,SQ8", 0, AF_N, OP_RETRAIN},
        {"IVF,SQ8 update (codes only)", "IVF8,SQ8", 0, AF_N, OP_UPDATE},
        {"IVF,SQ8 first add (trains, drops rows)", "IVF2,SQ8", 0, 0, OP_ADD},
        {"IVF,SQ8,RFlat add", "IVF8,SQ8,RFlat", 0, AF_N, OP_ADD},
        {"IVFFlat (planner's nlist) add", "IVFFlat", 100, AF_N, OP_ADD},
        {"planner switch to IVF", "auto", 420, AF_N, OP_ADD},
        {"HNSW add", "HNSW8", 0, AF_N, OP_ADD},
        {"HNSW first add", "HNSW8", 0, 0, OP_ADD},
        {"HNSW remove", "HNSW8", 0, AF_N, OP_REMOVE},
        {"HNSW update", "HNSW8", 0, AF_N, OP_UPDATE},
        {"HNSW compact", "HNSW8", 0, AF_N, OP_COMPACT},
        {"HNSW search", "HNSW8", 0, AF_N, OP_SEARCH},
        {"HNSW,SQ8 add", "HNSW8,SQ8", 0, AF_N, OP_ADD},
        {"HNSW,SQ8,RFlat add", "HNSW8,SQ8,RFlat", 0, AF_N, OP_ADD},
    };
    long points = 0;
    for (size_t i = 0; i < sizeof scs / sizeof *scs; i++) {
        points += inject_index(&scs[i]);
    }
    CHECK(points > 500);
    if (getenv("CHRYS_TEST_VERBOSE")) fprintf(stderr, "    index calls: %ld allocation points\n", points);
}

/* ---- save, load and the merger: the store file is the state ---- */

/* Put old[] back at path, run op(ctx) with allocation n failing, for n = 1, 2, ... until n is past
 * op's last allocation: each time the file must be new[] when op succeeded and old[] when it
 * returned CHRYS_NOMEM, byte for byte. Returns the number of allocation points. */
static long inject_store(const char *path, const unsigned char *old, size_t old_len, const unsigned char *new_b,
                         size_t new_len, int (*op)(void *ctx), void *ctx, const char *what)
{
    long total = 0, bad = 0;
    for (long n = 1;; n++) {
        FILE *f = fopen(path, "wb");
        fwrite(old, 1, old_len, f);
        fclose(f);
        long c0 = chrys__test_alloc_count();
        chrys__test_fail_alloc_after(n);
        int rc = op(ctx);
        chrys__test_fail_alloc_after(0);
        size_t len;
        unsigned char *b = h_read_file(path, &len);
        int ok = rc == CHRYS_OK ? len == new_len && !memcmp(b, new_b, len)
                                : (rc & 0xff) == CHRYS_NOMEM && len == old_len && !memcmp(b, old, len);
        if (!ok && bad++ < 3) h_fail(__FILE__, __LINE__, "%s: allocation %ld failing: rc %d, store not old or new", what, n, rc);
        free(b);
        if (chrys__test_alloc_count() - c0 < n) break; /* the failure point was past the last allocation */
        total++;
    }
    return total;
}

typedef struct save_job {
    const chrys_index *ix;
    const char *path;
} save_job;

static int save_op(void *ctx)
{
    save_job *j = ctx;
    char *msg = NULL;
    int rc = chrys_index_save(j->ix, j->path, &msg);
    chrys_free(msg);
    return rc;
}

/* Save over an existing store with each allocation failing: the file is the old one or the new
 * one, never anything else; a load with each allocation failing gives NOMEM or the index. */
static long inject_save_load(const char *spec)
{
    char path[300];
    snprintf(path, sizeof path, "%s.%s", g_fp_path, spec);
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = AF_DIM;
    o.spec = spec;
    o.build_threads = 1;
    chrys_index *ix = NULL;
    char *msg = NULL;
    uint64_t ids[AF_N];
    for (size_t i = 0; i < AF_N; i++) ids[i] = i * 3;
    CHECK_EQ(chrys_index_new(&o, &ix, &msg), CHRYS_OK);
    CHECK_EQ(chrys_index_add(ix, 200, ids, g_rows, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_save(ix, path, &msg), CHRYS_OK);
    size_t old_len, new_len;
    unsigned char *old_bytes = h_read_file(path, &old_len);
    CHECK_EQ(chrys_index_add(ix, 100, ids + 200, g_rows + 200 * AF_DIM, NULL), CHRYS_OK);
    char path2[320];
    snprintf(path2, sizeof path2, "%s.new", path);
    CHECK_EQ(chrys_index_save(ix, path2, &msg), CHRYS_OK);
    unsigned char *new_bytes = h_read_file(path2, &new_len);
    unlink(path2);
    char what[64];
    snprintf(what, sizeof what, "save %s", spec);
    save_job job = {ix, path};
    long total = inject_store(path, old_bytes, old_len, new_bytes, new_len, save_op, &job, what);
    /* load: NOMEM with nothing returned, or the index */
    for (long n = 1;; n++) {
        chrys_index *back = NULL;
        long c0 = chrys__test_alloc_count();
        chrys__test_fail_alloc_after(n);
        int rc = chrys_index_load(path, &back, &msg);
        chrys__test_fail_alloc_after(0);
        chrys_free(msg);
        msg = NULL;
        if (rc == CHRYS_OK) {
            fp a, b;
            fp_index(back, &a);
            fp_index(ix, &b);
            CHECK(fp_same(&a, &b));
            free(a.bytes);
            free(b.bytes);
        } else {
            CHECK_EQ(rc & 0xff, CHRYS_NOMEM);
            CHECK(back == NULL);
        }
        chrys_index_free(back);
        if (chrys__test_alloc_count() - c0 < n) break;
        total++;
    }
    free(old_bytes);
    free(new_bytes);
    unlink(path);
    chrys_index_free(ix);
    return total;
}

void test_alloc_save_load(void)
{
    make_rows();
    const char *specs[] = {"Flat", "SQ8", "IVF8,Flat", "IVF8,SQ8", "HNSW8", "HNSW8,SQ8,RFlat"};
    long points = 0;
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        long t = inject_save_load(specs[i]);
        CHECK(t > 10);
        points += t;
    }
    if (getenv("CHRYS_TEST_VERBOSE")) fprintf(stderr, "    save and load: %ld allocation points\n", points);
}

/* The merger, as the CLI drives it: open the store, merge a batch, save. With any allocation of
 * the three failing, the store holds the old state or the new one, byte for byte. The batch
 * crosses auto_threshold, so the planner's switch to the graph is inside it. */
static int merge_step(const char *path, size_t first, size_t n);

static int merge_op(void *path) { return merge_step(path, 100, 200); }

static int merge_step(const char *path, size_t first, size_t n)
{
    chrys_merger *m = NULL;
    char *msg = NULL;
    int rc = chrys_merger_open(path, &m, &msg);
    if (!rc) { /* one thread: a parallel graph build links in a timing-dependent order */
        chrys_merge_opts o = {sizeof o};
        chrys_merger_get_opts(m, &o);
        o.n_threads = 1;
        rc = chrys_merger_configure(m, &o);
    }
    chrys_merge_record recs[AF_N];
    char metas[AF_N][40];
    for (size_t i = 0; i < n; i++) {
        snprintf(metas[i], sizeof metas[i], "{\"descriptors\":[\"d%zu\"]}", (first + i) % 9);
        /* rows repeat every 150 records, so part of the batch merges */
        recs[i] = (chrys_merge_record){first + i, g_rows + ((first + i) % 150) * AF_DIM, AF_DIM, metas[i]};
    }
    if (!rc) rc = chrys_merger_merge(m, n, recs, NULL);
    if (!rc) rc = chrys_merger_save(m, path, &msg);
    chrys_free(msg);
    chrys_merger_free(m);
    return rc;
}

void test_alloc_merger(void)
{
    make_rows();
    char path[300];
    snprintf(path, sizeof path, "%s.merge", g_fp_path);
    chrys_merge_opts o;
    chrys_merge_opts_init(&o);
    o.dim = AF_DIM;
    o.threshold = 0.98;
    o.auto_threshold = 120;
    o.n_threads = 1;
    o.ef_construction = 40;
    chrys_merger *m = NULL;
    char *msg = NULL;
    CHECK_EQ(chrys_merger_new(&o, &m, &msg), CHRYS_OK);
    CHECK_EQ(chrys_merger_save(m, path, &msg), CHRYS_OK);
    chrys_merger_free(m);
    CHECK_EQ(merge_step(path, 0, 100), CHRYS_OK);
    size_t old_len, new_len;
    unsigned char *old_bytes = h_read_file(path, &old_len);
    CHECK_EQ(merge_step(path, 100, 200), CHRYS_OK); /* 100 -> past 120 entries: the graph */
    unsigned char *new_bytes = h_read_file(path, &new_len);
    chrys_merger *chk = NULL;
    CHECK_EQ(chrys_merger_open(path, &chk, &msg), CHRYS_OK);
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(chrys_merger_index(chk), &info);
    CHECK_EQ(info.kind, CHRYS_INDEX_HNSW);
    chrys_merger_free(chk);
    long points = inject_store(path, old_bytes, old_len, new_bytes, new_len, merge_op, path, "merge");
    CHECK(points > 50);
    if (getenv("CHRYS_TEST_VERBOSE")) fprintf(stderr, "    merger open + merge + save: %ld allocation points\n", points);
    free(old_bytes);
    free(new_bytes);
    unlink(path);
}

/* The one growth rule: at least need, grows by half from first, never wraps. */
void test_alloc_grow_cap(void)
{
    CHECK_EQ(chrys_grow_cap(0, 1, 64), 64u);
    CHECK_EQ(chrys_grow_cap(0, 100, 64), 146u); /* 64 -> 97 -> 146 */
    CHECK_EQ(chrys_grow_cap(97, 97, 64), 97u); /* already enough: unchanged */
    size_t c = 0;
    for (size_t need = 1; need < 1000000; need = need * 3 + 1) {
        size_t n = chrys_grow_cap(c, need, 16);
        CHECK(n >= need && n >= c);
        CHECK(c == 0 || n <= (need > c ? need : c) * 3 / 2 + 2); /* at most half again */
        c = n;
    }
    CHECK_EQ(chrys_grow_cap(SIZE_MAX / 2, SIZE_MAX - 1, 64), (size_t)(SIZE_MAX - 1));
    CHECK(chrys_grow_cap(SIZE_MAX / 4 * 3, SIZE_MAX, 64) == SIZE_MAX);
}

static void fill(unsigned char *p, size_t from, size_t to, unsigned seed)
{
    for (size_t i = from; i < to; i += 4093) p[i] = (unsigned char)(i * 31 + seed);
}

static int same(const unsigned char *p, size_t from, size_t to, unsigned seed)
{
    for (size_t i = from; i < to; i += 4093)
        if (p[i] != (unsigned char)(i * 31 + seed)) return 0;
    return 1;
}

/* Aligned blocks from small to large: 64-byte aligned at every size, contents kept through
 * growth (heap to mmap-sized blocks and beyond), shrinking, and a failed growth that leaves the
 * block as it was. */
void test_alloc_aligned_blocks(void)
{
    size_t mb = (size_t)1 << 20;
    unsigned char *p = chrys_malloc_aligned(mb);
    CHECK(p && (uintptr_t)p % 64 == 0);
    fill(p, 0, mb, 1);
    p = chrys_realloc_aligned(p, mb, 6 * mb); /* grown */
    CHECK(p && (uintptr_t)p % 64 == 0 && same(p, 0, mb, 1));
    fill(p, mb, 6 * mb, 2);
    unsigned char *q = chrys_realloc_aligned(p, 6 * mb, 48 * mb); /* grown again */
    CHECK(q && (uintptr_t)q % 64 == 0 && same(q, 0, mb, 1) && same(q, mb, 6 * mb, 2));
    q[48 * mb - 1] = 7;
    q = chrys_realloc_aligned(q, 48 * mb, 96 * mb);
    CHECK(q && same(q, 0, mb, 1) && same(q, mb, 6 * mb, 2) && q[48 * mb - 1] == 7);
    chrys__test_fail_alloc_after(1); /* a failed growth: NULL, the block untouched */
    CHECK(chrys_realloc_aligned(q, 96 * mb, 200 * mb) == NULL);
    CHECK(same(q, 0, mb, 1) && same(q, mb, 6 * mb, 2) && q[48 * mb - 1] == 7);
    q = chrys_realloc_aligned(q, 96 * mb, 5 * mb); /* shrunk */
    CHECK(q && same(q, 0, mb, 1) && same(q, mb, 5 * mb, 2));
    chrys_free_aligned(q);
    chrys__test_fail_alloc_after(1);
    CHECK(chrys_malloc_aligned(8 * mb) == NULL);
    unsigned char *r = chrys_malloc_aligned(8 * mb);
    CHECK(r && (uintptr_t)r % 64 == 0);
    memset(r, 3, 8 * mb);
    chrys_free_aligned(r);
}

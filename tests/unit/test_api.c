/*
 * test_api.c: the rules of chrysalis.h that hold for every call (version 0.2).
 *  - struct_size: every options struct is read, and every info/stats struct written, only as far
 *    as the caller's struct_size reaches: an older (shorter) struct's bytes past its end are never
 *    read or written, a newer (longer) one gets zeros past the fields this library knows, 0 means
 *    the whole struct for outputs, and a garbage size (> 65536) is refused with nothing written.
 *  - capacities: an output array whose length the library decides (ids, run history) comes with a
 *    capacity; too small is CHRYS_LIMIT_CAPACITY with the count needed and nothing written.
 *  - the run history is an array of chrys_merge_run with named fields, kept across save/open.
 *  - save/load through memory buffers: the buffer chrys_index_save_buffer returns is owned by the
 *    caller, the loaded index keeps no pointer into it, and every truncation and many bit flips of
 *    it are refused with a message naming the buffer.
 */
#include <stddef.h>
#include <unistd.h>

#include "../harness.h"
#include "chrysalis.h"
#include "tests.h"

#define PAD 64             /* bytes past the full struct that a caller's buffer holds */
#define SENTINEL 0xA5

static chrys_index *small_index(const char *spec, size_t n, uint32_t dim, uint64_t seed)
{
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = dim;
    o.spec = spec;
    chrys_index *ix = NULL;
    CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_OK);
    if (!ix) return NULL;
    float *x = malloc(n * dim * sizeof *x);
    uint64_t *ids = malloc(n * sizeof *ids);
    uint64_t s = seed;
    for (size_t i = 0; i < n * dim; i++) x[i] = h_gauss(&s);
    for (size_t i = 0; i < n; i++) ids[i] = 100 + 3 * i;
    CHECK_EQ(chrys_index_add(ix, n, ids, x, NULL), CHRYS_OK);
    free(x);
    free(ids);
    return ix;
}

/* ------------------------------------------------------------------------------------------
 * Output structs: one check for all of them
 */

typedef int (*get_fn)(void *ctx, void *out);

static int all_bytes(const unsigned char *p, size_t n, unsigned char v)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != v) return 0;
    return 1;
}

/* get(ctx, out) fills a struct of `full` bytes that begins with struct_size. `cut` is the offset
 * of a middle field: a caller whose struct ends there gets the fields before it, and nothing at or
 * after it is touched. */
static void check_out_struct(const char *what, get_fn get, void *ctx, size_t full, size_t cut)
{
    unsigned char *ref = calloc(1, full), *buf = malloc(full + PAD);
    uint32_t ss = (uint32_t)full;
    memcpy(ref, &ss, 4);
    CHECK_EQ(get(ctx, ref), CHRYS_OK);
    memcpy(&ss, ref, 4);
    if (ss != full) h_fail(__FILE__, __LINE__, "%s: full struct_size came back %u, not %zu", what, ss, full);

    /* an older, shorter struct: written up to cut, untouched from there */
    memset(buf, SENTINEL, full + PAD);
    ss = (uint32_t)cut;
    memcpy(buf, &ss, 4);
    CHECK_EQ(get(ctx, buf), CHRYS_OK);
    memcpy(&ss, buf, 4);
    if (ss != cut) h_fail(__FILE__, __LINE__, "%s: struct_size %zu came back %u", what, cut, ss);
    if (memcmp(buf + 4, ref + 4, cut - 4))
        h_fail(__FILE__, __LINE__, "%s: the fields before offset %zu differ from a full call", what, cut);
    if (!all_bytes(buf + cut, full + PAD - cut, SENTINEL))
        h_fail(__FILE__, __LINE__, "%s: bytes at or past struct_size %zu were written", what, cut);

    /* a newer, longer struct: every known field, then zeros up to its struct_size */
    memset(buf, SENTINEL, full + PAD);
    ss = (uint32_t)(full + PAD / 2);
    memcpy(buf, &ss, 4);
    CHECK_EQ(get(ctx, buf), CHRYS_OK);
    memcpy(&ss, buf, 4);
    if (ss != full) h_fail(__FILE__, __LINE__, "%s: a longer struct's struct_size came back %u, not %zu", what, ss, full);
    if (memcmp(buf + 4, ref + 4, full - 4)) h_fail(__FILE__, __LINE__, "%s: a longer struct's fields differ", what);
    if (!all_bytes(buf + full, PAD / 2, 0)) h_fail(__FILE__, __LINE__, "%s: the unknown tail is not zero", what);
    if (!all_bytes(buf + full + PAD / 2, PAD / 2, SENTINEL))
        h_fail(__FILE__, __LINE__, "%s: bytes past a longer struct_size were written", what);

    /* 0: the whole struct */
    memset(buf, SENTINEL, full + PAD);
    ss = 0;
    memcpy(buf, &ss, 4);
    CHECK_EQ(get(ctx, buf), CHRYS_OK);
    memcpy(&ss, buf, 4);
    if (ss != full || memcmp(buf + 4, ref + 4, full - 4) || !all_bytes(buf + full, PAD, SENTINEL))
        h_fail(__FILE__, __LINE__, "%s: struct_size 0 did not give exactly the whole struct", what);

    /* garbage: refused, nothing written */
    memset(buf, SENTINEL, full + PAD);
    ss = 70000;
    memcpy(buf, &ss, 4);
    CHECK_EQ(get(ctx, buf), CHRYS_INVALID);
    memcpy(&ss, buf, 4);
    if (ss != 70000 || !all_bytes(buf + 4, full + PAD - 4, SENTINEL))
        h_fail(__FILE__, __LINE__, "%s: a refused struct_size wrote into the struct", what);
    free(ref);
    free(buf);
}

static int get_index_info(void *ix, void *out) { return chrys_index_get_info(ix, out); }
static int get_merge_stats(void *m, void *out) { return chrys_merger_get_stats(m, out); }
static int get_merge_opts(void *m, void *out) { return chrys_merger_get_opts(m, out); }
static int get_merge_entry(void *m, void *out) { return chrys_merger_get_entry(m, 1, out, NULL); }
static int get_embed_stats(void *e, void *out) { return chrys_embedder_get_stats(e, out); }
static int get_cache_info(void *path, void *out) { return chrys_cache_get_info(path, out, NULL); }
static int get_store_meta(void *path, void *out) { return chrys_store_peek(path, out, NULL); }

static chrys_merger *small_merger(void)
{
    chrys_merge_opts o;
    chrys_merge_opts_init(&o);
    o.dim = 4;
    chrys_merger *m = NULL;
    CHECK_EQ(chrys_merger_new(&o, &m, NULL), CHRYS_OK);
    if (!m) return NULL;
    float v[3][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {1, 0.01f, 0, 0}};
    chrys_merge_record r[3];
    for (int i = 0; i < 3; i++) r[i] = (chrys_merge_record){(uint64_t)i + 1, v[i], 4, i ? NULL : "{\"a\": 1}"};
    CHECK_EQ(chrys_merger_merge(m, 3, r, NULL), CHRYS_OK);
    return m;
}

void test_api_struct_size_outputs(void)
{
    chrys_index *ix = small_index("HNSW8", 50, 8, 1);
    if (ix) {
        check_out_struct("chrys_index_info", get_index_info, ix, sizeof(chrys_index_info),
                         offsetof(chrys_index_info, nlist));
        check_out_struct("chrys_index_info (cut at plan_reason)", get_index_info, ix, sizeof(chrys_index_info),
                         offsetof(chrys_index_info, plan_reason));
    }
    chrys_merger *m = small_merger();
    if (m) {
        check_out_struct("chrys_merge_stats", get_merge_stats, m, sizeof(chrys_merge_stats),
                         offsetof(chrys_merge_stats, approx_records));
        check_out_struct("chrys_merge_opts", get_merge_opts, m, sizeof(chrys_merge_opts),
                         offsetof(chrys_merge_opts, index_spec));
        check_out_struct("chrys_merge_entry", get_merge_entry, m, sizeof(chrys_merge_entry),
                         offsetof(chrys_merge_entry, first_record));
    }
    char dir[] = "/tmp/chrys_api_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char cache[64], store[64];
    snprintf(cache, sizeof cache, "%s/cache.db", dir);
    snprintf(store, sizeof store, "%s/ix.chrys", dir);
    chrys_embed_opts eo;
    chrys_embed_opts_init(&eo);
    eo.dim = 16;
    eo.cache_path = cache;
    chrys_embedder *e = NULL;
    CHECK_EQ(chrys_embedder_new(&eo, &e, NULL), CHRYS_OK);
    if (e) {
        const char *texts[2] = {"a", "b"};
        float out[32];
        CHECK_EQ(chrys_embedder_embed(e, 2, texts, out), CHRYS_OK);
        check_out_struct("chrys_embed_stats", get_embed_stats, e, sizeof(chrys_embed_stats),
                         offsetof(chrys_embed_stats, requests));
        check_out_struct("chrys_cache_info", get_cache_info, cache, sizeof(chrys_cache_info),
                         offsetof(chrys_cache_info, hits));
    }
    if (ix && chrys_index_save(ix, store, NULL) == CHRYS_OK)
        check_out_struct("chrys_store_meta", get_store_meta, store, sizeof(chrys_store_meta),
                         offsetof(chrys_store_meta, count));
    else
        h_fail(__FILE__, __LINE__, "cannot save %s", store);
    chrys_embedder_free(e);
    chrys_merger_free(m);
    chrys_index_free(ix);
    unlink(cache);
    unlink(store);
    char lock[80];
    snprintf(lock, sizeof lock, "%s.lock", store);
    unlink(lock);
    rmdir(dir);
}

/* ------------------------------------------------------------------------------------------
 * Input structs
 */

/* A caller's struct of `size` bytes in a buffer whose tail (from `size` on) holds garbage. */
static void *older_struct(const void *full, size_t full_size, size_t size)
{
    unsigned char *b = malloc(full_size + PAD);
    memset(b, 0xAB, full_size + PAD);
    memcpy(b, full, size < full_size ? size : full_size);
    uint32_t ss = (uint32_t)size;
    memcpy(b, &ss, 4);
    return b;
}

void test_api_struct_size_index_opts(void)
{
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = 8;
    o.kind = CHRYS_INDEX_HNSW;
    o.spec = "IVF4,Flat"; /* not read by a caller of the first version */
    o.nlist = 3;          /* disagrees with the spec: refused only when both are read */
    chrys_index *ix = NULL;
    char *msg = NULL;
    /* the whole struct: spec and nlist are read, and disagree */
    CHECK_EQ(chrys_index_new(&o, &ix, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "nlist is 3");
    chrys_free(msg);
    msg = NULL;
    /* the first version (through seed): kind HNSW from the kind field, nothing after it read
     * (the garbage tail would be an ef_construction of 0xABABABAB, refused if read) */
    void *v1 = older_struct(&o, sizeof o, offsetof(chrys_index_opts, spec));
    CHECK_EQ(chrys_index_new(v1, &ix, &msg), CHRYS_OK);
    if (ix) {
        chrys_index_info info = {sizeof info};
        chrys_index_get_info(ix, &info);
        CHECK_EQ(info.kind, CHRYS_INDEX_HNSW);
        CHECK_EQ(info.hnsw_m, 16);          /* default M */
        CHECK_EQ(info.ef_construction, 200); /* the default */
        chrys_index_free(ix);
        ix = NULL;
    }
    free(v1);
    /* cut in the middle: the spec is read, nlist (after the cut) is not */
    void *v2 = older_struct(&o, sizeof o, offsetof(chrys_index_opts, ef_construction));
    CHECK_EQ(chrys_index_new(v2, &ix, &msg), CHRYS_OK);
    if (ix) {
        chrys_index_info info = {sizeof info};
        chrys_index_get_info(ix, &info);
        CHECK_EQ(info.kind, CHRYS_INDEX_IVF);
        CHECK(!strcmp(info.spec, "IVF4,Flat"));
        chrys_index_free(ix);
        ix = NULL;
    }
    free(v2);
    /* a newer, longer struct: the known fields are read, the unknown tail is ignored */
    o.nlist = 4;
    void *v9 = older_struct(&o, sizeof o, sizeof o + PAD / 2);
    CHECK_EQ(chrys_index_new(v9, &ix, &msg), CHRYS_OK);
    if (ix) {
        chrys_index_info info = {sizeof info};
        chrys_index_get_info(ix, &info);
        CHECK(!strcmp(info.spec, "IVF4,Flat"));
        chrys_index_free(ix);
        ix = NULL;
    }
    free(v9);
    /* below the first version's fields: refused with a message */
    void *v0 = older_struct(&o, sizeof o, offsetof(chrys_index_opts, seed));
    CHECK_EQ(chrys_index_new(v0, &ix, &msg), CHRYS_INVALID);
    CHECK(ix == NULL);
    CHECK_STR_CONTAINS(msg, "struct_size");
    chrys_free(msg);
    free(v0);
}

static int allow_none(uint64_t id, void *ctx)
{
    (void)id;
    (void)ctx;
    return 0;
}

void test_api_struct_size_search_opts(void)
{
    chrys_index *ix = small_index("Flat", 20, 4, 2);
    if (!ix) return;
    float q[4] = {1, 0, 0, 0};
    chrys_hit hits[3];
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.k = 3;
    so.allow = allow_none;
    /* the whole struct: the filter is read and allows nothing */
    CHECK_EQ(chrys_index_search(ix, 1, q, &so, hits), CHRYS_OK);
    CHECK(hits[0].id == CHRYS_NO_ID);
    /* a caller whose struct ends before the filter: it is not read, three hits come back */
    void *old = older_struct(&so, sizeof so, offsetof(chrys_search_opts, allow));
    CHECK_EQ(chrys_index_search(ix, 1, q, old, hits), CHRYS_OK);
    for (int i = 0; i < 3; i++) CHECK(hits[i].id != CHRYS_NO_ID);
    free(old);
    /* k is the first field every version has */
    old = older_struct(&so, sizeof so, offsetof(chrys_search_opts, k));
    CHECK_EQ(chrys_index_search(ix, 1, q, old, hits), CHRYS_INVALID);
    free(old);
    chrys_index_free(ix);
}

void test_api_struct_size_merge_and_embed_opts(void)
{
    /* merger: index_spec and ef_construction are read only when struct_size covers them */
    chrys_merge_opts mo;
    chrys_merge_opts_init(&mo);
    mo.dim = 4;
    mo.index_spec = "NoSuchSpec";
    chrys_merger *m = NULL;
    char *msg = NULL;
    CHECK_EQ(chrys_merger_new(&mo, &m, &msg), CHRYS_INVALID);
    chrys_free(msg);
    msg = NULL;
    void *old = older_struct(&mo, sizeof mo, offsetof(chrys_merge_opts, index_spec));
    CHECK_EQ(chrys_merger_new(old, &m, &msg), CHRYS_OK);
    chrys_merger_free(m);
    m = NULL;
    free(old);
    mo.index_spec = NULL;
    mo.ef_construction = 999999999;
    CHECK_EQ(chrys_merger_new(&mo, &m, &msg), CHRYS_INVALID);
    chrys_free(msg);
    msg = NULL;
    old = older_struct(&mo, sizeof mo, offsetof(chrys_merge_opts, ef_construction));
    CHECK_EQ(chrys_merger_new(old, &m, &msg), CHRYS_OK);
    if (m) {
        chrys_merge_opts got = {sizeof got};
        CHECK_EQ(chrys_merger_get_opts(m, &got), CHRYS_OK);
        CHECK_EQ(got.ef_construction, 0); /* the default, not the caller's garbage */
    }
    chrys_merger_free(m);
    m = NULL;
    free(old);

    /* embedder: concurrency (the field after the first version) likewise */
    chrys_embed_opts eo;
    chrys_embed_opts_init(&eo);
    eo.dim = 8;
    chrys_embedder *e = NULL;
    eo.concurrency = 0;
    CHECK_EQ(chrys_embedder_new(&eo, &e, &msg), CHRYS_INVALID);
    chrys_free(msg);
    msg = NULL;
    old = older_struct(&eo, sizeof eo, offsetof(chrys_embed_opts, concurrency));
    CHECK_EQ(chrys_embedder_new(old, &e, &msg), CHRYS_OK); /* an older caller gets 4 */
    chrys_embedder_free(e);
    free(old);
    old = older_struct(&eo, sizeof eo, offsetof(chrys_embed_opts, seed));
    CHECK_EQ(chrys_embedder_new(old, &e, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "struct_size");
    chrys_free(msg);
    free(old);
}

/* ------------------------------------------------------------------------------------------
 * Capacities
 */

void test_api_get_ids_capacity(void)
{
    chrys_index *ix = small_index("Flat", 10, 4, 3);
    if (!ix) return;
    CHECK_EQ(chrys_index_remove(ix, 100 + 3 * 4), CHRYS_OK); /* 9 left */
    size_t n = 12345;
    CHECK_EQ(chrys_index_get_ids(ix, NULL, 0, &n), CHRYS_OK); /* the count alone */
    CHECK_EQ(n, 9);
    uint64_t ids[16];
    for (int i = 0; i < 16; i++) ids[i] = 7;
    n = 0;
    int rc = chrys_index_get_ids(ix, ids, 8, &n);
    CHECK_EQ(rc, CHRYS_LIMIT_CAPACITY);
    CHECK_EQ(rc & 0xff, CHRYS_LIMIT);
    CHECK_EQ(n, 9);
    for (int i = 0; i < 16; i++) CHECK_EQ(ids[i], 7); /* nothing written */
    CHECK_STR_CONTAINS(chrys_errstr(rc), "too small");
    CHECK_EQ(chrys_index_get_ids(ix, ids, 9, &n), CHRYS_OK);
    CHECK_EQ(n, 9);
    int seen[10] = {0}; /* each id present once, in whatever order storage keeps them */
    for (size_t i = 0; i < 9; i++)
        if (ids[i] >= 100 && ids[i] < 130 && (ids[i] - 100) % 3 == 0) seen[(ids[i] - 100) / 3]++;
    for (int i = 0; i < 10; i++) CHECK_EQ(seen[i], i == 4 ? 0 : 1);
    CHECK_EQ(ids[9], 7);
    CHECK_EQ(chrys_index_get_ids(ix, ids, 16, &n), CHRYS_OK);
    CHECK_EQ(n, 9);
    CHECK_EQ(ids[9], 7);
    CHECK_EQ(chrys_index_get_ids(ix, ids, 16, NULL), CHRYS_INVALID);
    CHECK_EQ(chrys_index_get_ids(ix, NULL, 4, &n), CHRYS_INVALID);
    CHECK_EQ(chrys_index_get_ids(NULL, ids, 16, &n), CHRYS_INVALID);
    chrys_index_free(ix);
}

void test_api_merge_history_runs(void)
{
    chrys_merge_opts o;
    chrys_merge_opts_init(&o);
    o.dim = 3;
    o.skip_invalid = 1;
    chrys_merger *m = NULL;
    CHECK_EQ(chrys_merger_new(&o, &m, NULL), CHRYS_OK);
    if (!m) return;
    float a[3] = {1, 0, 0}, b[3] = {0, 1, 0}, a2[3] = {1, 0.05f, 0}, c[3] = {0, 0, 1};
    /* run 1: two new entries and one merge; run 2: one new, one empty (skipped) */
    chrys_merge_record r1[3] = {{1, a, 3, NULL}, {2, b, 3, NULL}, {3, a2, 3, NULL}};
    chrys_merge_record r2[2] = {{4, c, 3, NULL}, {5, NULL, 0, NULL}};
    CHECK_EQ(chrys_merger_merge(m, 3, r1, NULL), CHRYS_OK);
    CHECK_EQ(chrys_merger_mark_run(m), CHRYS_OK);
    CHECK_EQ(chrys_merger_merge(m, 2, r2, NULL), CHRYS_OK);
    CHECK_EQ(chrys_merger_mark_run(m), CHRYS_OK);
    size_t n = 0;
    CHECK_EQ(chrys_merger_get_history(m, NULL, 0, &n), CHRYS_OK);
    CHECK_EQ(n, 2);
    chrys_merge_run runs[3];
    memset(runs, 0x5A, sizeof runs);
    CHECK_EQ(chrys_merger_get_history(m, runs, 1, &n), CHRYS_LIMIT_CAPACITY);
    CHECK_EQ(n, 2);
    CHECK(all_bytes((unsigned char *)runs, sizeof runs, 0x5A));
    CHECK_EQ(chrys_merger_get_history(m, runs, 3, &n), CHRYS_OK);
    CHECK_EQ(n, 2);
    CHECK_EQ(runs[0].records, 3);
    CHECK_EQ(runs[0].added, 2);
    CHECK_EQ(runs[0].merged, 1);
    CHECK_EQ(runs[0].skipped, 0);
    CHECK_EQ(runs[1].records, 2);
    CHECK_EQ(runs[1].added, 1);
    CHECK_EQ(runs[1].merged, 0);
    CHECK_EQ(runs[1].skipped, 1);
    CHECK(runs[0].unix_time > 1700000000u && runs[1].unix_time >= runs[0].unix_time);
    CHECK(all_bytes((unsigned char *)&runs[2], sizeof runs[2], 0x5A));
    /* the history survives save and open, field by field */
    char path[] = "/tmp/chrys_api_hist_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK_EQ(chrys_merger_save(m, path, NULL), CHRYS_OK);
    chrys_merger *back = NULL;
    CHECK_EQ(chrys_merger_open(path, &back, NULL), CHRYS_OK);
    if (back) {
        chrys_merge_run again[2];
        CHECK_EQ(chrys_merger_get_history(back, again, 2, &n), CHRYS_OK);
        CHECK_EQ(n, 2);
        CHECK(!memcmp(again, runs, sizeof again));
    }
    chrys_merger_free(back);
    chrys_merger_free(m);
    unlink(path);
    char lock[64];
    snprintf(lock, sizeof lock, "%s.lock", path);
    unlink(lock);
}

/* ------------------------------------------------------------------------------------------
 * Memory buffers
 */

void test_api_buffer_roundtrip_and_damage(void)
{
    chrys_index *ix = small_index("HNSW4,SQ8,RFlat", 40, 8, 4);
    if (!ix) return;
    void *buf = NULL;
    size_t len = 0;
    CHECK_EQ(chrys_index_save_buffer(ix, &buf, &len, NULL), CHRYS_OK);
    if (!buf) {
        chrys_index_free(ix);
        return;
    }
    unsigned char *copy = malloc(len);
    memcpy(copy, buf, len);
    chrys_index *back = NULL;
    char *msg = NULL;
    CHECK_EQ(chrys_index_load_buffer(copy, len, "pickle", &back, &msg), CHRYS_OK);
    /* the loaded index keeps no pointer into the caller's buffer */
    memset(copy, 0, len);
    free(copy);
    float q[8] = {1, -1, 0.5f, 0, 0, 0.25f, 0, 1};
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.k = 5;
    chrys_hit h1[5], h2[5];
    CHECK_EQ(chrys_index_search(ix, 1, q, &so, h1), CHRYS_OK);
    if (back) {
        CHECK_EQ(chrys_index_search(back, 1, q, &so, h2), CHRYS_OK);
        for (int i = 0; i < 5; i++) {
            CHECK_EQ(h1[i].id, h2[i].id);
            CHECK(h1[i].score == h2[i].score);
        }
    }
    chrys_index_free(back);
    /* every truncation: CHRYS_CORRUPT with a message naming the buffer, nothing returned */
    unsigned char *b = buf;
    int undetected = 0;
    for (size_t cut = 0; cut < len; cut++) {
        back = NULL;
        int rc = chrys_index_load_buffer(b, cut, "pickle", &back, &msg);
        if ((rc & 0xff) != CHRYS_CORRUPT || back || !msg || !strstr(msg, "pickle")) undetected++;
        chrys_index_free(back);
        chrys_free(msg);
        msg = NULL;
    }
    CHECK_EQ(undetected, 0);
    /* one bit flipped, every 5th bit of the buffer: never accepted */
    for (size_t bit = 0; bit < len * 8; bit += 5) {
        back = NULL;
        b[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        int rc = chrys_index_load_buffer(b, len, "pickle", &back, &msg);
        if (rc == CHRYS_OK || back || !msg) undetected++;
        chrys_index_free(back);
        chrys_free(msg);
        msg = NULL;
        b[bit / 8] ^= (unsigned char)(1u << (bit % 8));
    }
    CHECK_EQ(undetected, 0);
    /* the undamaged buffer still loads (the flips were undone), then is freed the library's way */
    CHECK_EQ(chrys_index_load_buffer(b, len, "pickle", &back, NULL), CHRYS_OK);
    chrys_index_free(back);
    chrys_free(buf);
    /* bad arguments */
    back = (chrys_index *)1;
    CHECK_EQ(chrys_index_load_buffer(NULL, 10, "x", &back, &msg), CHRYS_INVALID);
    CHECK(back == NULL);
    CHECK(msg != NULL);
    chrys_free(msg);
    chrys_index_free(ix);
}

/*
 * test_store.c: the single-file store: round trips, determinism, the committed golden file,
 * every truncation, every bit flip, crafted hostile headers, unknown sections, and atomic save
 * under injected write failures.
 */
#include <dirent.h>
#include <pthread.h>
#include <unistd.h>

#include "../harness.h"
#include "chrysalis.h"
#include "internal.h"
#include "store/codec.h"
#include "store/store.h"
#include "kernels/dist.h"
#include "tests.h"

#define GOLDEN_V1 "tests/golden/store_v1_0.chrys"

static char *tmp_path(const char *name)
{
    static char buf[4][256];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/chrys_test_%d_%s", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid(), name);
    return buf[i];
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

/* The deterministic index behind the golden file: 5 rows of dim 3, cosine, with metadata. */
static chrys_index *golden_index(void)
{
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = 3;
    chrys_index *ix = NULL;
    chrys_index_new(&o, &ix, NULL);
    float v[15] = {1, 0, 0, 0, 2, 0, 1, 1, 0, 3, 4, 0, -1, 0.5f, 0.25f};
    uint64_t ids[5] = {5, 4, 3, 1000000000000ULL, 0};
    const char *meta[5] = {"{\"name\":\"x\"}", NULL, "{\"name\":\"diag\",\"tags\":[1,2]}", NULL, "{}"};
    chrys_index_add(ix, 5, ids, v, meta);
    return ix;
}

static void check_same_index(const chrys_index *a, const chrys_index *b)
{
    chrys_index_info ia = {sizeof ia}, ib = {sizeof ib};
    chrys_index_get_info(a, &ia);
    chrys_index_get_info(b, &ib);
    CHECK_EQ(ia.dim, ib.dim);
    CHECK_EQ(ia.metric, ib.metric);
    CHECK_EQ(ia.count, ib.count);
    uint64_t *ids = malloc(ia.count * sizeof *ids + 1);
    size_t n_ids;
    chrys_index_get_ids(a, ids, ia.count, &n_ids);
    float *va = malloc(ia.dim * sizeof(float)), *vb = malloc(ia.dim * sizeof(float));
    for (size_t i = 0; i < ia.count; i++) {
        CHECK(chrys_index_contains(b, ids[i]));
        chrys_index_get(a, ids[i], va);
        chrys_index_get(b, ids[i], vb);
        CHECK(memcmp(va, vb, ia.dim * sizeof(float)) == 0);
        const char *ma, *mb;
        chrys_index_get_meta(a, ids[i], &ma);
        chrys_index_get_meta(b, ids[i], &mb);
        CHECK((ma == NULL) == (mb == NULL));
        if (ma && mb) CHECK(!strcmp(ma, mb));
    }
    free(ids);
    free(va);
    free(vb);
}

void test_store_roundtrip_and_determinism(void)
{
    uint64_t s = h_seed;
    for (int metric = 0; metric < 3; metric++) {
        chrys_index_opts o;
        chrys_index_opts_init(&o);
        o.dim = 37;
        o.metric = (chrys_metric)metric;
        chrys_index *ix = NULL;
        CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_OK);
        size_t n = 500;
        float *x = malloc(n * 37 * sizeof(float));
        uint64_t *ids = malloc(n * sizeof *ids);
        char **meta = calloc(n, sizeof *meta);
        for (size_t i = 0; i < n * 37; i++) x[i] = h_gauss(&s);
        for (size_t i = 0; i < n; i++) {
            ids[i] = h_rand(&s) >> 1;
            if (i % 3 == 0) {
                meta[i] = malloc(32);
                snprintf(meta[i], 32, "{\"i\":%zu}", i);
            }
        }
        CHECK_EQ(chrys_index_add(ix, n, ids, x, (const char *const *)meta), CHRYS_OK);
        CHECK_EQ(chrys_index_remove(ix, ids[7]), CHRYS_OK);
        char *p1 = tmp_path("rt1.chrys"), *p2 = tmp_path("rt2.chrys");
        CHECK_EQ(chrys_index_save(ix, p1, NULL), CHRYS_OK);
        chrys_index *back = NULL;
        char *msg = NULL;
        CHECK_EQ(chrys_index_load(p1, &back, &msg), CHRYS_OK);
        if (back) {
            check_same_index(ix, back);
            /* Same results after load. */
            chrys_search_opts so;
            chrys_search_opts_init(&so);
            chrys_hit h1[100], h2[100];
            CHECK_EQ(chrys_index_search(ix, 10, x, &so, h1), CHRYS_OK);
            CHECK_EQ(chrys_index_search(back, 10, x, &so, h2), CHRYS_OK);
            CHECK(memcmp(h1, h2, sizeof h1) == 0);
            /* Saving the loaded index gives the same bytes. */
            CHECK_EQ(chrys_index_save(back, p2, NULL), CHRYS_OK);
            size_t l1, l2;
            unsigned char *b1 = slurp(p1, &l1), *b2 = slurp(p2, &l2);
            CHECK(b1 && b2 && l1 == l2 && memcmp(b1, b2, l1) == 0);
            free(b1);
            free(b2);
        }
        chrys_index_free(back);
        chrys_free(msg);
        chrys_store_meta sm = {sizeof sm};
        CHECK_EQ(chrys_store_peek(p1, &sm, NULL), CHRYS_OK);
        CHECK_EQ(sm.count, n - 1);
        CHECK_EQ(sm.dim, 37);
        CHECK_EQ(sm.metric, metric);
        CHECK_EQ(sm.format_major, 1);
        unlink(p1);
        unlink(p2);
        for (size_t i = 0; i < n; i++) free(meta[i]);
        free(meta);
        free(x);
        free(ids);
        chrys_index_free(ix);
    }
}

/* A committed golden file as this library writes the same content: the header's writer version
 * (information only, docs/FORMAT.md) restamped to this library's and the header CRC recomputed;
 * every other byte stays. Returns the writer version the file carried (0 if too short). */
uint32_t h_restamp_writer_version(unsigned char *b, size_t len)
{
    if (len < STORE_HEADER_SIZE) return 0;
    uint32_t was = get_u32le(b + HDR_WRITER_VERSION);
    put_u32le(b + HDR_WRITER_VERSION,
              (CHRYS_VERSION_MAJOR << 16) | (CHRYS_VERSION_MINOR << 8) | CHRYS_VERSION_PATCH);
    put_u32le(b + HDR_CRC, chrys_crc32c(0, b, HDR_CRC));
    return was;
}

void test_store_golden_v1(void)
{
    chrys_index *ix = golden_index();
    if (getenv("CHRYS_WRITE_GOLDEN")) CHECK_EQ(chrys_index_save(ix, GOLDEN_V1, NULL), CHRYS_OK);
    chrys_index *g = NULL;
    char *msg = NULL;
    int rc = chrys_index_load(GOLDEN_V1, &g, &msg);
    CHECK_EQ(rc, CHRYS_OK);
    if (rc) fprintf(stderr, "    %s\n", msg ? msg : "");
    if (g) {
        check_same_index(ix, g);
        /* A fresh save of the same content is byte-identical to the committed file (written by
         * chrysalis 0.1.0) but for the writer version in the header and so the header's CRC. */
        char *p = tmp_path("golden.chrys");
        CHECK_EQ(chrys_index_save(ix, p, NULL), CHRYS_OK);
        size_t l1, l2;
        unsigned char *b1 = slurp(p, &l1), *b2 = slurp(GOLDEN_V1, &l2);
        CHECK_EQ(b2 ? h_restamp_writer_version(b2, l2) : 0, 0x000100u);
        CHECK(b1 && b2 && l1 == l2 && memcmp(b1, b2, l1) == 0);
        free(b1);
        free(b2);
        unlink(p);
    }
    chrys_free(msg);
    chrys_index_free(g);
    chrys_index_free(ix);
}

static void flip_everything(chrys_index *ix);

/* An IVF + SQ8 index: PLAN, IVFC, IVFL, SQ8P, TQ8P and VSQ8 sections. */
static chrys_index *ivf_sq8_index(void)
{
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = 4;
    o.spec = "IVF2,SQ8";
    chrys_index *ix = NULL;
    chrys_index_new(&o, &ix, NULL);
    float v[40 * 4];
    uint64_t ids[40];
    for (int i = 0; i < 40 * 4; i++) v[i] = (float)((i * 7919) % 101) / 50.0f - 1.0f + (i % 4 == 0);
    for (int i = 0; i < 40; i++) ids[i] = (uint64_t)i * 3;
    chrys_index_add(ix, 40, ids, v, NULL);
    return ix;
}

void test_store_every_truncation_and_bitflip(void)
{
    flip_everything(golden_index());
    chrys_index *ix = ivf_sq8_index();
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(ix, &info);
    CHECK(!strcmp(info.spec, "IVF2,SQ8") && info.nlist == 2);
    flip_everything(ix);
}

/* The section tags on disk are the ones docs/FORMAT.md names: the SQ8 step section is 'TQ8P'
 * (written as TAG_SQ8P + 1 since format 1.0), never the 'SQ8Q' the docs once said. */
void test_store_sq8_section_tags_on_disk(void)
{
    chrys_index *ix = ivf_sq8_index();
    char *p = tmp_path("tags.chrys");
    CHECK_EQ(chrys_index_save(ix, p, NULL), CHRYS_OK);
    chrys_index_free(ix);
    size_t len;
    unsigned char *buf = slurp(p, &len);
    unlink(p);
    CHECK(buf != NULL);
    static const char *const present[] = {"PLAN", "IVFC", "IVFL", "SQ8P", "TQ8P", "VSQ8"};
    for (size_t i = 0; i < sizeof present / sizeof *present; i++) CHECK(memmem(buf, len, present[i], 4) != NULL);
    CHECK(memmem(buf, len, "SQ8Q", 4) == NULL);
    free(buf);
}

static void flip_everything(chrys_index *ix)
{
    char *p = tmp_path("flip.chrys");
    CHECK_EQ(chrys_index_save(ix, p, NULL), CHRYS_OK);
    chrys_index_free(ix);
    size_t len;
    unsigned char *buf = slurp(p, &len);
    unlink(p);
    CHECK(buf != NULL && len > 64);
    chrys_index *out = NULL;
    char *msg = NULL;
    CHECK_EQ(chrys_index_load_buffer(buf, len, "good", &out, &msg), CHRYS_OK);
    chrys_index_free(out);
    int undetected = 0;
    for (size_t cut = 0; cut < len; cut++) {
        int rc = chrys_index_load_buffer(buf, cut, "cut", &out, &msg);
        if ((rc & 0xff) != CHRYS_CORRUPT || out != NULL) undetected++;
        CHECK(msg != NULL);
        chrys_free(msg);
        msg = NULL;
    }
    CHECK_EQ(undetected, 0);
    for (size_t bit = 0; bit < len * 8; bit++) {
        buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        int rc = chrys_index_load_buffer(buf, len, "flip", &out, &msg);
        if (rc == CHRYS_OK) {
            undetected++;
            chrys_index_free(out);
        }
        chrys_free(msg);
        msg = NULL;
        buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
    }
    CHECK_EQ(undetected, 0);
    /* Trailing bytes are detected too. */
    unsigned char *longer = malloc(len + 64);
    memcpy(longer, buf, len);
    memset(longer + len, 0, 64);
    CHECK_EQ(chrys_index_load_buffer(longer, len + 64, "long", &out, &msg) & 0xff, CHRYS_CORRUPT);
    CHECK_STR_CONTAINS(msg, "trailing data");
    chrys_free(msg);
    free(longer);
    free(buf);
}

/* chrys_index_save_buffer gives the bytes chrys_index_save writes, and they load back. */
void test_store_save_buffer(void)
{
    chrys_index *ix = golden_index();
    char *p = tmp_path("buf.chrys");
    CHECK_EQ(chrys_index_save(ix, p, NULL), CHRYS_OK);
    size_t flen;
    unsigned char *fbuf = slurp(p, &flen);
    unlink(p);
    void *buf = NULL;
    size_t len = 0;
    char *msg = NULL;
    CHECK_EQ(chrys_index_save_buffer(ix, &buf, &len, &msg), CHRYS_OK);
    CHECK(msg == NULL);
    CHECK(fbuf != NULL && buf != NULL && len == flen && !memcmp(buf, fbuf, len));
    chrys_index *back = NULL;
    CHECK_EQ(chrys_index_load_buffer(buf, len, "buf", &back, &msg), CHRYS_OK);
    chrys_index_info a = {sizeof a}, b = {sizeof b};
    chrys_index_get_info(ix, &a);
    chrys_index_get_info(back, &b);
    CHECK_EQ(a.count, b.count);
    CHECK_EQ(a.dim, b.dim);
    chrys_index_free(back);
    chrys_free(buf);
    free(fbuf);
    /* NULL arguments are refused with a message and nothing allocated. */
    CHECK_EQ(chrys_index_save_buffer(ix, NULL, &len, &msg), CHRYS_INVALID);
    CHECK(msg != NULL);
    chrys_free(msg);
    CHECK_EQ(chrys_index_save_buffer(NULL, &buf, &len, NULL), CHRYS_INVALID);
    CHECK(buf == NULL && len == 0);
    chrys_index_free(ix);
}

/* Build a file from hand-made sections with valid checksums (hostile but well-formed). */
static int craft(const char *path, uint32_t dim, uint64_t count, uint32_t extra_tag, uint32_t extra_flags)
{
    unsigned char meta[META_SIZE] = {0};
    put_u32le(meta + META_DIM, dim);
    put_u64le(meta + META_COUNT, count);
    static uint64_t ids[2] = {1, 2};
    static float norms[2] = {1, 1};
    static float vec[2] = {1, 1};
    store_section secs[5] = {{TAG_META, 0, meta, META_SIZE},
                             {TAG_IDS, 0, ids, 2 * 8},
                             {TAG_NORM, 0, norms, 2 * 4},
                             {TAG_VF32, 0, vec, 2 * 4},
                             {extra_tag, extra_flags, "hello", 5}};
    return store_write(path, secs, extra_tag ? 5 : 4, NULL);
}

void test_store_hostile_headers(void)
{
    char *p = tmp_path("craft.chrys");
    chrys_index *ix = NULL;
    char *msg = NULL;
    /* A valid crafted file loads (sanity of the crafting itself). */
    CHECK_EQ(craft(p, 1, 2, 0, 0), CHRYS_OK);
    CHECK_EQ(chrys_index_load(p, &ix, &msg), CHRYS_OK);
    chrys_index_free(ix);
    ix = NULL;
    /* Huge counts: rejected from the section sizes, before any allocation (a real attempt to
     * allocate 2^32 x 64 KiB would fail with CHRYS_NOMEM, not CHRYS_CORRUPT). */
    CHECK_EQ(craft(p, CHRYS_MAX_DIM, 0xFFFFFFFEull, 0, 0), CHRYS_OK);
    CHECK_EQ(chrys_index_load(p, &ix, &msg) & 0xff, CHRYS_CORRUPT);
    CHECK(ix == NULL);
    CHECK_STR_CONTAINS(msg, "expected");
    chrys_free(msg);
    CHECK_EQ(craft(p, 1, 1ull << 40, 0, 0), CHRYS_OK);
    CHECK_EQ(chrys_index_load(p, &ix, &msg) & 0xff, CHRYS_CORRUPT);
    CHECK_STR_CONTAINS(msg, "count");
    chrys_free(msg);
    CHECK_EQ(craft(p, 0, 2, 0, 0), CHRYS_OK);
    CHECK_EQ(chrys_index_load(p, &ix, &msg) & 0xff, CHRYS_CORRUPT);
    CHECK_STR_CONTAINS(msg, "dim 0");
    chrys_free(msg);
    /* Unknown required section: FORMAT; unknown optional section: skipped. */
    CHECK_EQ(craft(p, 1, 2, FOURCC('Z', 'Z', 'Z', 'Z'), 0), CHRYS_OK);
    CHECK_EQ(chrys_index_load(p, &ix, &msg), CHRYS_FORMAT);
    CHECK_STR_CONTAINS(msg, "ZZZZ");
    chrys_free(msg);
    CHECK_EQ(craft(p, 1, 2, FOURCC('Z', 'Z', 'Z', 'Z'), SEC_OPTIONAL), CHRYS_OK);
    CHECK_EQ(chrys_index_load(p, &ix, &msg), CHRYS_OK);
    chrys_index_free(ix);
    ix = NULL;
    /* Duplicate ids inside a checksummed file. */
    {
        unsigned char meta[META_SIZE] = {0};
        put_u32le(meta + META_DIM, 1);
        put_u64le(meta + META_COUNT, 2);
        uint64_t ids[2] = {9, 9};
        float norms[2] = {1, 1}, vec[2] = {1, 1};
        store_section secs[4] = {{TAG_META, 0, meta, META_SIZE}, {TAG_IDS, 0, ids, 16}, {TAG_NORM, 0, norms, 8}, {TAG_VF32, 0, vec, 8}};
        CHECK_EQ(store_write(p, secs, 4, NULL), CHRYS_OK);
        CHECK_EQ(chrys_index_load(p, &ix, &msg) & 0xff, CHRYS_CORRUPT);
        CHECK_STR_CONTAINS(msg, "duplicate id 9");
        chrys_free(msg);
        /* NaN in vectors. */
        ids[1] = 10;
        vec[1] = NAN;
        CHECK_EQ(store_write(p, secs, 4, NULL), CHRYS_OK);
        CHECK_EQ(chrys_index_load(p, &ix, &msg) & 0xff, CHRYS_CORRUPT);
        CHECK_STR_CONTAINS(msg, "row 1");
        chrys_free(msg);
        /* Infinity; and under cosine (metric 0) a row that is not unit length. */
        const float bad[2] = {INFINITY, 2.0f};
        for (int j = 0; j < 2; j++) {
            vec[1] = bad[j];
            CHECK_EQ(store_write(p, secs, 4, NULL), CHRYS_OK);
            CHECK_EQ(chrys_index_load(p, &ix, &msg) & 0xff, CHRYS_CORRUPT);
            CHECK(ix == NULL);
            CHECK_STR_CONTAINS(msg, "row 1 (id 10): invalid vector or norm");
            chrys_free(msg);
        }
    }
    /* A newer major version: FORMAT, not CORRUPT. */
    CHECK_EQ(craft(p, 1, 2, 0, 0), CHRYS_OK);
    size_t len;
    unsigned char *b = slurp(p, &len);
    put_u16le(b + HDR_MAJOR, 2);
    put_u32le(b + HDR_CRC, chrys_crc32c(0, b, HDR_CRC));
    CHECK_EQ(chrys_index_load_buffer(b, len, p, &ix, &msg), CHRYS_FORMAT);
    CHECK_STR_CONTAINS(msg, "version 2.0");
    chrys_free(msg);
    /* Unknown incompat feature bit. */
    put_u16le(b + HDR_MAJOR, 1);
    put_u32le(b + HDR_INCOMPAT, 0x80);
    put_u32le(b + HDR_CRC, chrys_crc32c(0, b, HDR_CRC));
    CHECK_EQ(chrys_index_load_buffer(b, len, p, &ix, &msg), CHRYS_FORMAT);
    chrys_free(msg);
    free(b);
    /* Not a store at all; a missing file. */
    CHECK_EQ(chrys_index_load_buffer("hello world, not a store at all......................................", 70, "txt", &ix, &msg) & 0xff,
             CHRYS_CORRUPT);
    CHECK_STR_CONTAINS(msg, "bad magic");
    chrys_free(msg);
    CHECK_EQ(chrys_index_load("/nonexistent/dir/x.chrys", &ix, &msg), CHRYS_IO);
    CHECK_STR_CONTAINS(msg, "/nonexistent/dir/x.chrys");
    chrys_free(msg);
    unlink(p);
}

static int count_tmp_files(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, prefix, strlen(prefix)) && strstr(e->d_name, ".tmp-")) n++;
    if (d) closedir(d);
    return n;
}

void test_store_failed_save_keeps_old_file(void)
{
    char *p = tmp_path("atomic.chrys");
    chrys_index *old = golden_index();
    CHECK_EQ(chrys_index_save(old, p, NULL), CHRYS_OK);
    size_t old_len;
    unsigned char *old_bytes = slurp(p, &old_len);
    /* A bigger index whose save fails at each write in turn. */
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = 3;
    chrys_index *nw = NULL;
    chrys_index_new(&o, &nw, NULL);
    float v[300];
    uint64_t ids[100];
    for (int i = 0; i < 300; i++) v[i] = (float)(i % 7) + 1;
    for (int i = 0; i < 100; i++) ids[i] = (uint64_t)i;
    CHECK_EQ(chrys_index_add(nw, 100, ids, v, NULL), CHRYS_OK);
    int failures = 0;
    for (long nth = 1; nth < 50; nth++) {
        chrys__test_fail_write_after(nth);
        char *msg = NULL;
        int rc = chrys_index_save(nw, p, &msg);
        chrys__test_fail_write_after(0);
        if (rc == CHRYS_OK) break; /* past the last write */
        failures++;
        CHECK_EQ(rc & 0xff, CHRYS_IO);
        CHECK_STR_CONTAINS(msg, "unchanged");
        chrys_free(msg);
        size_t l;
        unsigned char *now = slurp(p, &l);
        CHECK(now && l == old_len && memcmp(now, old_bytes, l) == 0);
        free(now);
    }
    CHECK(failures >= 3);
    const char *slash = strrchr(p, '/');
    CHECK_EQ(count_tmp_files(getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", slash + 1), 0);
    /* Saving into a missing directory reports the path. */
    char *msg = NULL;
    CHECK_EQ(chrys_index_save(nw, "/nonexistent/dir/y.chrys", &msg) & 0xff, CHRYS_IO);
    CHECK_STR_CONTAINS(msg, "/nonexistent/dir/y.chrys");
    chrys_free(msg);
    unlink(p);
    free(old_bytes);
    chrys_index_free(old);
    chrys_index_free(nw);
}

/* A store of n x d uniform random rows (ids id0, id0 + step, ...) saved at path, Flat or of the
 * given spec (an IVF one trained): the index, its rows and ids, the file's bytes and where its
 * VF32 section starts in them. */
typedef struct rows_store {
    chrys_index *ix;
    float *x;
    uint64_t *ids;
    unsigned char *b;
    size_t len, vf32, d;
} rows_store;

static int rows_store_make(rows_store *rs, const char *path, const char *spec, size_t n, size_t d, uint64_t seed,
                           uint64_t id0, uint64_t step)
{
    *rs = (rows_store){.x = malloc(n * d * sizeof(float)), .ids = malloc(n * sizeof(uint64_t)), .d = d};
    CHECK(rs->x && rs->ids);
    if (!rs->x || !rs->ids) return 0;
    for (size_t i = 0; i < n * d; i++) rs->x[i] = h_uniform(&seed) - 0.5f;
    for (size_t i = 0; i < n; i++) rs->ids[i] = id0 + step * i;
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = (uint32_t)d;
    o.kind = CHRYS_INDEX_FLAT;
    o.spec = spec;
    CHECK_EQ(chrys_index_new(&o, &rs->ix, NULL), CHRYS_OK);
    CHECK_EQ(chrys_index_add(rs->ix, n, rs->ids, rs->x, NULL), CHRYS_OK);
    if (spec && !strncmp(spec, "IVF", 3)) CHECK_EQ(chrys_index_retrain(rs->ix), CHRYS_OK);
    CHECK_EQ(chrys_index_save(rs->ix, path, NULL), CHRYS_OK);
    rs->b = slurp(path, &rs->len);
    store_reader r;
    CHECK_EQ(store_reader_open_buffer(&r, rs->b, rs->len, "rows", NULL), CHRYS_OK);
    int iv = store_find(&r, TAG_VF32);
    CHECK(iv >= 0);
    rs->vf32 = iv >= 0 ? (size_t)r.sec[iv].off : 0;
    return iv >= 0;
}

/* Toggle one bit of row `row` (the low mantissa byte of component 17: a value still finite, a row
 * still near unit length, so only the checksum can tell) and write the file; again to undo. */
static void rows_store_flip(rows_store *rs, const char *path, size_t row)
{
    rs->b[rs->vf32 + (row * rs->d + 17) * 4] ^= 0x04;
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(rs->b, 1, rs->len, f) == rs->len);
    if (f) fclose(f);
}

static void rows_store_free(rows_store *rs)
{
    chrys_index_free(rs->ix);
    free(rs->x);
    free(rs->ids);
    free(rs->b);
}

/* The float32 rows are checksummed in the pass that checks them, split over workers whose
 * checksums are then combined: a store whose rows span two workers (18 MB) loads, and a single
 * flipped mantissa bit is refused by both chrys_index_load and chrys_index_open_mmap, near the
 * start and in the second half of the rows. */
void test_store_rows_checksum_split(void)
{
    enum { D = 1024, N = 4500 };
    char *p = tmp_path("rows_crc.chrys");
    rows_store rs;
    if (!rows_store_make(&rs, p, NULL, N, D, h_seed + 31, 1, 7)) {
        rows_store_free(&rs);
        return;
    }
    chrys_index *out = NULL;
    CHECK_EQ(chrys_index_load(p, &out, NULL), CHRYS_OK);
    chrys_index_info info = {sizeof info};
    CHECK_EQ(chrys_index_get_info(out, &info), CHRYS_OK);
    CHECK_EQ(info.count, (uint64_t)N);
    chrys_index_free(out);
    out = NULL;
    CHECK_EQ(chrys_index_open_mmap(p, &out, NULL), CHRYS_OK);
    chrys_index_free(out);
    out = NULL;
    static const size_t rows[2] = {10, 4000};
    for (int t = 0; t < 2; t++) {
        rows_store_flip(&rs, p, rows[t]);
        for (int m = 0; m < 2; m++) {
            char *msg = NULL;
            int rc = m ? chrys_index_open_mmap(p, &out, &msg) : chrys_index_load(p, &out, &msg);
            CHECK_EQ(rc, CHRYS_CORRUPT_CHECKSUM);
            CHECK(out == NULL && msg && strstr(msg, "VF32") && strstr(msg, "checksum"));
            chrys_free(msg);
        }
        rows_store_flip(&rs, p, rows[t]);
    }
    remove(p);
    rows_store_free(&rs);
}

/* The row check decides from the float32 sum of squares where it cannot differ from the double
 * one, and from the double one elsewhere: both decisions are compared with the rule itself
 * (components finite, and under cosine |norm - 1| <= 1e-3 by the double sum) on rows clear of
 * the band's edges, rows within the float sum's error of them, and (under l2) rows whose float
 * squares overflow although every component is finite, by chrys_index_load and open_mmap. */
void test_store_row_check_edges(void)
{
    enum { D = 1024 };
    uint64_t s = h_seed + 41;
    static float vec[2 * D];
    double e[D], ss = 0;
    for (size_t j = 0; j < D; j++) {
        e[j] = h_uniform(&s) - 0.5;
        ss += e[j] * e[j];
    }
    for (size_t j = 0; j < D; j++) vec[j] = (float)(e[j] / sqrt(ss));
    unsigned char meta[META_SIZE] = {0};
    put_u32le(meta + META_DIM, D);
    put_u64le(meta + META_COUNT, 2);
    uint64_t ids[2] = {5, 6};
    float norms[2] = {1, 1};
    store_section secs[4] = {{TAG_META, 0, meta, META_SIZE}, {TAG_IDS, 0, ids, 16}, {TAG_NORM, 0, norms, 8},
                             {TAG_VF32, 0, vec, sizeof vec}};
    char *p = tmp_path("row_edges.chrys");
    /* cosine: row 1 is row 0 times t (the float sum's margin here is 1.2e-4 of the squared norm) */
    static const double ts[] = {1.0, 1.0005, 0.9995, 1.0015, 0.9985, 1.00095, 1.00105, 0.99905, 0.99895, 1.001, 0.999};
    int accepted = 0, refused = 0;
    for (size_t t = 0; t < sizeof ts / sizeof *ts; t++) {
        for (size_t j = 0; j < D; j++) vec[D + j] = (float)(ts[t] * vec[j]);
        int ok = fabs(sqrt(vec_dot_f64(vec + D, vec + D, D)) - 1.0) <= 1e-3;
        accepted += ok;
        refused += !ok;
        CHECK_EQ(store_write(p, secs, 4, NULL), CHRYS_OK);
        for (int m = 0; m < 2; m++) {
            chrys_index *ix = NULL;
            char *msg = NULL;
            int rc = m ? chrys_index_open_mmap(p, &ix, &msg) : chrys_index_load(p, &ix, &msg);
            if (ok) {
                CHECK_EQ(rc, CHRYS_OK);
            } else {
                CHECK_EQ(rc & 0xff, CHRYS_CORRUPT);
                CHECK_STR_CONTAINS(msg, "row 1 (id 6): invalid vector or norm");
            }
            chrys_free(msg);
            chrys_index_free(ix);
        }
    }
    CHECK(accepted >= 5 && refused >= 4);
    /* l2 (metric 2): finite components whose float squares overflow, alone or summed */
    put_u32le(meta + META_METRIC, CHRYS_METRIC_L2);
    norms[0] = norms[1] = 1e30f;
    for (int c = 0; c < 3; c++) {
        for (size_t j = 0; j < 2 * D; j++) vec[j] = 0.5f;
        if (c == 0) vec[D + 3] = 3e19f;
        if (c == 1)
            for (size_t j = 0; j < D; j++) vec[D + j] = 1e18f;
        if (c == 2) vec[D + 3] = INFINITY;
        CHECK_EQ(store_write(p, secs, 4, NULL), CHRYS_OK);
        for (int m = 0; m < 2; m++) {
            chrys_index *ix = NULL;
            char *msg = NULL;
            int rc = m ? chrys_index_open_mmap(p, &ix, &msg) : chrys_index_load(p, &ix, &msg);
            if (c < 2) {
                CHECK_EQ(rc, CHRYS_OK);
            } else {
                CHECK_EQ(rc & 0xff, CHRYS_CORRUPT);
                CHECK_STR_CONTAINS(msg, "row 1 (id 6)");
            }
            chrys_free(msg);
            chrys_index_free(ix);
        }
    }
    remove(p);
}

/* chrys_index_open_mmap_ex with CHRYS_MMAP_CHECK_ON_USE: a whole store opens and answers as a
 * loaded one, by the fused scan (one query, its rows split over four workers) and by the paths
 * that check first (a batch of 70, chrys_index_get); a flipped mantissa bit in either half of
 * the rows opens, then fails every search, get and save with the checksum error naming the
 * file, also when four threads make the first search at once; an invalid row under a sound
 * checksum fails with its row and id, whichever use comes first. The graph and IVF searches, and
 * SQ8 with re-ranking, which read the rows without scanning them all, check them first: whole,
 * they answer as loaded; flipped, they fail. */
typedef struct mmap_race {
    const chrys_index *ix;
    const float *q;
    int rc;
    chrys_hit hits[10];
} mmap_race;

static void *mmap_race_run(void *arg)
{
    mmap_race *m = arg;
    chrys_search_opts o;
    chrys_search_opts_init(&o);
    o.k = 10;
    o.n_threads = 2;
    m->rc = chrys_index_search(m->ix, 1, m->q, &o, m->hits);
    return NULL;
}

/* Four threads make m's first search with q at once: each gets want, and (when OK) ref's hits. */
static void mmap_race_check(const chrys_index *m, const float *q, int want, const chrys_hit *ref)
{
    pthread_t th[4];
    mmap_race mr[4];
    for (int i = 0; i < 4; i++) {
        mr[i] = (mmap_race){m, q, -1, {{0}}};
        CHECK_EQ(pthread_create(&th[i], NULL, mmap_race_run, &mr[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(mr[i].rc, want);
        if (want == CHRYS_OK) CHECK(!memcmp(mr[i].hits, ref, 10 * sizeof *ref));
    }
}

void test_store_mmap_check_on_use_concurrent(void)
{
    enum { D = 1024, N = 4500, NQ = 70 };
    uint64_t s = h_seed + 54;
    char *p = tmp_path("mmap_on_use.chrys");
    rows_store rs;
    float *q = malloc((size_t)NQ * D * sizeof *q), *v = malloc(D * sizeof *v);
    chrys_hit *ref = malloc((size_t)NQ * 10 * sizeof *ref), *got = malloc((size_t)NQ * 10 * sizeof *got);
    CHECK(q && v && ref && got);
    if (!rows_store_make(&rs, p, NULL, N, D, h_seed + 53, 2, 3) || !q || !v || !ref || !got) goto out;
    for (size_t i = 0; i < (size_t)NQ * D; i++) q[i] = h_uniform(&s) - 0.5f;
    const uint64_t *ids = rs.ids;
    const float *x = rs.x;
    chrys_index *m = NULL;
    chrys_search_opts o;
    chrys_search_opts_init(&o);
    o.k = 10;
    o.n_threads = 4; /* four runs of rows, whatever the machine */
    CHECK_EQ(chrys_index_search(rs.ix, NQ, q, &o, ref), CHRYS_OK);
    char *msg = NULL;
    CHECK_EQ(chrys_index_open_mmap_ex(p, 0x80, &m, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "flags");
    chrys_free(msg);
    msg = NULL;
    /* whole: the fused scan, then a batch, then a row, as loaded */
    for (int first = 0; first < 3; first++) {
        CHECK_EQ(chrys_index_open_mmap_ex(p, CHRYS_MMAP_CHECK_ON_USE, &m, NULL), CHRYS_OK);
        if (first == 2) CHECK_EQ(chrys_index_get(m, ids[7], v), CHRYS_OK);
        if (first == 1) {
            CHECK_EQ(chrys_index_search(m, NQ, q, &o, got), CHRYS_OK);
            CHECK(!memcmp(got, ref, (size_t)NQ * 10 * sizeof *got));
        }
        CHECK_EQ(chrys_index_search(m, 1, q, &o, got), CHRYS_OK);
        CHECK(!memcmp(got, ref, 10 * sizeof *got));
        CHECK_EQ(chrys_index_search(m, NQ, q, &o, got), CHRYS_OK);
        CHECK(!memcmp(got, ref, (size_t)NQ * 10 * sizeof *got));
        CHECK_EQ(chrys_index_get(m, ids[7], v), CHRYS_OK);
        CHECK(fabsf(v[3] - x[7 * D + 3]) < 1e-6f);
        chrys_index_free(m);
        m = NULL;
    }
    /* one flipped bit, in the first worker's run or the last's */
    static const size_t rows[2] = {10, 4000};
    for (int t = 0; t < 2; t++) {
        rows_store_flip(&rs, p, rows[t]);
        for (int first = 0; first < 3; first++) {
            CHECK_EQ(chrys_index_open_mmap_ex(p, CHRYS_MMAP_CHECK_ON_USE, &m, NULL), CHRYS_OK);
            if (first == 0) {
                CHECK_EQ(chrys_index_search(m, 1, q, &o, got), CHRYS_CORRUPT_CHECKSUM);
                CHECK_STR_CONTAINS(chrys_index_errmsg(m), p);
                CHECK_STR_CONTAINS(chrys_index_errmsg(m), "VF32 checksum mismatch");
            } else if (first == 1) {
                CHECK_EQ(chrys_index_get(m, ids[7], v), CHRYS_CORRUPT_CHECKSUM);
            } else {
                mmap_race_check(m, q, CHRYS_CORRUPT_CHECKSUM, NULL);
            }
            /* and every later use */
            CHECK_EQ(chrys_index_search(m, 1, q, &o, got), CHRYS_CORRUPT_CHECKSUM);
            CHECK_EQ(chrys_index_search(m, NQ, q, &o, got), CHRYS_CORRUPT_CHECKSUM);
            CHECK_EQ(chrys_index_get(m, ids[7], v), CHRYS_CORRUPT_CHECKSUM);
            void *buf = NULL;
            size_t bl = 0;
            msg = NULL;
            CHECK_EQ(chrys_index_save_buffer(m, &buf, &bl, &msg), CHRYS_CORRUPT_CHECKSUM);
            CHECK(buf == NULL);
            CHECK_STR_CONTAINS(msg, "VF32 checksum mismatch");
            chrys_free(msg);
            chrys_index_free(m);
            m = NULL;
        }
        rows_store_flip(&rs, p, rows[t]); /* whole again */
    }
    /* the same race on a whole store: every first search answers as loaded */
    CHECK_EQ(chrys_index_open_mmap_ex(p, CHRYS_MMAP_CHECK_ON_USE, &m, NULL), CHRYS_OK);
    mmap_race_check(m, q, CHRYS_OK, ref);
    chrys_index_free(m);
    m = NULL;
    /* the other search paths */
    static const char *specs[] = {"HNSW16", "IVF8,Flat", "HNSW16,SQ8,RFlat", "SQ8,RFlat"};
    for (size_t sp = 0; sp < sizeof specs / sizeof *specs; sp++) {
        enum { D2 = 32, N2 = 600 };
        rows_store rk;
        if (rows_store_make(&rk, p, specs[sp], N2, D2, h_seed + 60 + sp, 1, 1)) {
            chrys_hit want[10], h2[10];
            chrys_search_opts o2;
            chrys_search_opts_init(&o2);
            o2.k = 10;
            CHECK_EQ(chrys_index_search(rk.ix, 1, rk.x + 9 * D2, &o2, want), CHRYS_OK);
            CHECK_EQ(chrys_index_open_mmap_ex(p, CHRYS_MMAP_CHECK_ON_USE, &m, NULL), CHRYS_OK);
            CHECK_EQ(chrys_index_search(m, 1, rk.x + 9 * D2, &o2, h2), CHRYS_OK);
            CHECK(!memcmp(h2, want, sizeof want));
            chrys_index_free(m);
            rows_store_flip(&rk, p, 5);
            CHECK_EQ(chrys_index_open_mmap_ex(p, CHRYS_MMAP_CHECK_ON_USE, &m, NULL), CHRYS_OK);
            CHECK_EQ(chrys_index_search(m, 1, rk.x + 9 * D2, &o2, h2), CHRYS_CORRUPT_CHECKSUM);
            CHECK_STR_CONTAINS(chrys_index_errmsg(m), "VF32 checksum mismatch");
            chrys_index_free(m);
            m = NULL;
        }
        rows_store_free(&rk);
    }
    /* an invalid row under a sound checksum (crafted): the row and its id */
    {
        unsigned char meta[META_SIZE] = {0};
        put_u32le(meta + META_DIM, 1);
        put_u64le(meta + META_COUNT, 2);
        uint64_t cids[2] = {9, 10};
        float norms[2] = {1, 1}, vec[2] = {1, NAN}, q1 = 1;
        store_section secs[4] = {{TAG_META, 0, meta, META_SIZE}, {TAG_IDS, 0, cids, 16}, {TAG_NORM, 0, norms, 8},
                                 {TAG_VF32, 0, vec, 8}};
        CHECK_EQ(store_write(p, secs, 4, NULL), CHRYS_OK);
        chrys_search_opts o1;
        chrys_search_opts_init(&o1);
        o1.k = 1;
        for (int first = 0; first < 2; first++) {
            CHECK_EQ(chrys_index_open_mmap_ex(p, CHRYS_MMAP_CHECK_ON_USE, &m, NULL), CHRYS_OK);
            chrys_hit h;
            if (first) CHECK_EQ(chrys_index_get(m, 9, v), CHRYS_CORRUPT);
            CHECK_EQ(chrys_index_search(m, 1, &q1, &o1, &h), CHRYS_CORRUPT);
            CHECK_STR_CONTAINS(chrys_index_errmsg(m), "row 1 (id 10): invalid vector or norm");
            chrys_index_free(m);
            m = NULL;
        }
    }
    remove(p);
out:
    rows_store_free(&rs);
    free(q);
    free(v);
    free(ref);
    free(got);
}

/* A mapped store reads its ids and norms in place, and builds no id map when its ids strictly
 * increase (the order proves them unique; lookups bisect them). Both orders answer every lookup
 * as a load does, present and absent ids alike; a mapped store of n rows holds less than 2n
 * bytes beyond its metadata slots (before: ids, norms, the slots and the map, about 45n); out-of-order ids still get
 * their duplicate and reserved-id checks at open. */
void test_store_mmap_ids_in_place(void)
{
    enum { N = 4096, D = 8 };
    char *p = tmp_path("ids_in_place.chrys");
    float *v = malloc(sizeof(float) * N * D);
    uint64_t *ids = malloc(sizeof(uint64_t) * N);
    const char **meta = calloc(N, sizeof *meta);
    uint64_t rng = 7;
    for (size_t i = 0; i < (size_t)N * D; i++) {
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        v[i] = (float)((rng >> 40) & 0xffff) / 65536.0f - 0.5f;
    }
    meta[3] = "{\"n\":3}";
    meta[N - 1] = "{\"last\":true}";
    for (int order = 0; order < 2; order++) { /* 0: ids 10, 20, ...; 1: the same ids shuffled */
        for (size_t i = 0; i < N; i++) ids[i] = 10 * (i + 1);
        for (size_t i = N - 1; order && i > 0; i--) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t j = (size_t)(rng >> 33) % (i + 1);
            uint64_t t = ids[i];
            ids[i] = ids[j];
            ids[j] = t;
        }
        chrys_index_opts o;
        chrys_index_opts_init(&o);
        o.dim = D;
        chrys_index *ix = NULL, *m = NULL;
        CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_OK);
        CHECK_EQ(chrys_index_add(ix, N, ids, v, meta), CHRYS_OK);
        CHECK_EQ(chrys_index_save(ix, p, NULL), CHRYS_OK);
        for (unsigned flags = 0; flags < 2; flags++) {
            CHECK_EQ(chrys_index_open_mmap_ex(p, flags, &m, NULL), CHRYS_OK);
            chrys_index_info info = {sizeof info};
            CHECK_EQ(chrys_index_get_info(m, &info), CHRYS_OK);
            if (order == 0) CHECK(info.memory_bytes < 10u * N); /* the metadata slots, 8n */
            else CHECK(info.memory_bytes > 20u * N); /* and its id map */
            float a[D], b[D];
            double sa, sb;
            int bad = 0;
            for (uint64_t id = 0; id <= 10 * (N + 1) + 3; id++) {
                int in = id % 10 == 0 && id >= 10 && id <= 10 * N;
                bad += chrys_index_contains(m, id) != in;
                int ra = chrys_index_get(ix, id, a), rb = chrys_index_get(m, id, b);
                bad += ra != rb || ra != (in ? CHRYS_OK : CHRYS_NOTFOUND) || (in && memcmp(a, b, sizeof a));
                const char *ma = NULL, *mb = NULL;
                ra = chrys_index_get_meta(ix, id, &ma), rb = chrys_index_get_meta(m, id, &mb);
                bad += ra != rb || (ma == NULL) != (mb == NULL) || (ma && strcmp(ma, mb));
                if (in) {
                    bad += chrys_index_score(ix, 1, v, 1, &id, &sa) || chrys_index_score(m, 1, v, 1, &id, &sb) || sa != sb;
                } else {
                    bad += chrys_index_score(m, 1, v, 1, &id, &sb) != CHRYS_NOTFOUND;
                }
            }
            uint64_t far[2] = {UINT64_MAX - 1, CHRYS_NO_ID};
            for (int j = 0; j < 2; j++) /* the reserved id too, which an empty id-map slot once matched */
                bad += chrys_index_contains(m, far[j]) || chrys_index_get(m, far[j], b) != CHRYS_NOTFOUND ||
                       chrys_index_contains(ix, far[j]) || chrys_index_get(ix, far[j], b) != CHRYS_NOTFOUND;
            CHECK_EQ(bad, 0);
            const char *mm = NULL;
            CHECK_EQ(chrys_index_get_meta(m, 10 * (order ? 0 : 4), &mm), order ? CHRYS_NOTFOUND : CHRYS_OK);
            if (!order) CHECK_STR_CONTAINS(mm, "\"n\":3");
            /* a copy saved from the mapped store is the same file */
            char *q = tmp_path("ids_in_place_copy.chrys");
            CHECK_EQ(chrys_index_save(m, q, NULL), CHRYS_OK);
            size_t la, lb;
            unsigned char *fa = slurp(p, &la), *fb = slurp(q, &lb);
            CHECK(fa && fb && la == lb && memcmp(fa, fb, la) == 0);
            free(fa);
            free(fb);
            unlink(q);
            chrys_index_free(m);
            m = NULL;
        }
        chrys_index_free(ix);
    }
    /* Out of order, duplicate; in order, but ending in the reserved id; in order with a NaN row:
     * refused by a mapped open as by a load, naming the id or the row. */
    unsigned char md[META_SIZE] = {0};
    put_u32le(md + META_DIM, 1);
    put_u64le(md + META_COUNT, 3);
    put_u32le(md + META_METRIC, 1); /* inner product: any finite row */
    struct {
        uint64_t ids[3];
        float last;
        const char *msg;
    } cases[3] = {{{9, 4, 9}, 1, "duplicate id 9"}, {{1, 2, CHRYS_NO_ID}, 1, "reserved id"}, {{1, 2, 3}, NAN, "row 2 (id 3)"}};
    for (int c = 0; c < 3; c++) {
        float norms[3] = {1, 1, 1}, vec[3] = {1, 1, cases[c].last};
        store_section secs[4] = {{TAG_META, 0, md, META_SIZE}, {TAG_IDS, 0, cases[c].ids, 24}, {TAG_NORM, 0, norms, 12}, {TAG_VF32, 0, vec, 12}};
        CHECK_EQ(store_write(p, secs, 4, NULL), CHRYS_OK);
        for (int way = 0; way < 2; way++) {
            chrys_index *m = NULL;
            char *msg = NULL;
            int rc = way ? chrys_index_open_mmap(p, &m, &msg) : chrys_index_load(p, &m, &msg);
            CHECK_EQ(rc & 0xff, CHRYS_CORRUPT);
            CHECK(m == NULL);
            CHECK_STR_CONTAINS(msg, cases[c].msg);
            chrys_free(msg);
        }
    }
    unlink(p);
    free(v);
    free(ids);
    free(meta);
}

/* Resident pages of this process's mappings of path (kB, /proc/self/smaps); -1 if unreadable. */
static long mapped_rss_kb(const char *path)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[4096];
    long kb = 0;
    int ours = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        char name[4096] = "";
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %4095s", &a, &b, name) >= 2 && strchr(line, '-') < strchr(line, ' '))
            ours = strcmp(name, path) == 0;
        else if (ours && !strncmp(line, "Rss:", 4))
            kb += atol(line + 4);
    }
    fclose(f);
    return kb;
}

/* Which mapped pages a mapped open leaves in the process: a plain Flat store keeps the rows its
 * checks read (every search reads them all; dropping them made the first search fault them all
 * back), an SQ8,RFlat store drops them (searches re-rank a few rows), and with
 * CHRYS_MMAP_CHECK_ON_USE the open maps none of the rows and the first search maps them all. */
void test_store_mmap_resident(void)
{
    enum { N = 2048, D = 256 };
    const long rows_kb = (long)N * D * 4 / 1024;
    char *p = tmp_path("resident.chrys");
    if (mapped_rss_kb(p) < 0) return; /* no /proc */
    const char *specs[2] = {"Flat", "SQ8,RFlat"};
    for (int s = 0; s < 2; s++) {
        rows_store rs;
        if (!rows_store_make(&rs, p, specs[s], N, D, 5, 0, 1)) return;
        chrys_index *m = NULL;
        CHECK_EQ(chrys_index_open_mmap(p, &m, NULL), CHRYS_OK);
        long kb = mapped_rss_kb(p);
        if (s == 0) CHECK(kb >= rows_kb * 9 / 10);
        else CHECK(kb < rows_kb / 10);
        chrys_index_free(m);
        if (s == 0) {
            CHECK_EQ(chrys_index_open_mmap_ex(p, CHRYS_MMAP_CHECK_ON_USE, &m, NULL), CHRYS_OK);
            CHECK(mapped_rss_kb(p) < rows_kb / 10);
            chrys_search_opts so;
            chrys_search_opts_init(&so);
            chrys_hit hits[10];
            CHECK_EQ(chrys_index_search(m, 1, rs.x, &so, hits), CHRYS_OK);
            CHECK_EQ(hits[0].id, 0);
            CHECK(mapped_rss_kb(p) >= rows_kb * 9 / 10);
            chrys_index_free(m);
        }
        CHECK_EQ(mapped_rss_kb(p), 0); /* unmapped by the free */
        rows_store_free(&rs);
    }
    unlink(p);
}

/*
 * test_io.c: the CLI's input readers (fvecs, npy, raw, JSONL): good input, and bad input whose
 * error names the file and the record, line or byte offset.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "../harness.h"
#include "../../cli/cli.h"
#include "tests.h"

static int parse(const char *name, vec_format fmt, uint32_t dim, const void *data, size_t len, vecset *vs, char *err)
{
    unsigned char *buf = malloc(len ? len : 1);
    memcpy(buf, data, len);
    char note[256];
    return vecset_parse(name, fmt, dim, buf, len, vs, err, 512, note, sizeof note);
}

void test_io_fvecs(void)
{
    unsigned char f[2 * 16];
    int32_t d = 3;
    float a[3] = {1, 2, 3}, b[3] = {4, 5, 6};
    memcpy(f, &d, 4);
    memcpy(f + 4, a, 12);
    memcpy(f + 16, &d, 4);
    memcpy(f + 20, b, 12);
    vecset vs;
    char err[512];
    CHECK_EQ(parse("x.fvecs", FMT_AUTO, 0, f, sizeof f, &vs, err), CHRYS_OK);
    CHECK_EQ(vs.n, 2);
    CHECK_EQ(vs.dim, 3);
    CHECK(vs.data[5] == 6.0f && vs.data[0] == 1.0f);
    CHECK(vs.ids == NULL);
    vecset_free(&vs);
    CHECK_EQ(parse("x.fvecs", FMT_FVECS, 0, f, sizeof f - 3, &vs, err), CHRYS_INVALID);
    CHECK_STR_CONTAINS(err, "x.fvecs");
    CHECK_STR_CONTAINS(err, "record 1 (byte offset 16) is truncated");
    int32_t d4 = 4;
    unsigned char g[32];
    memcpy(g, f, 32);
    memcpy(g + 16, &d4, 4);
    CHECK_EQ(parse("y.fvecs", FMT_FVECS, 0, g, sizeof g, &vs, err), CHRYS_DIM);
    CHECK_STR_CONTAINS(err, "record 1 (byte offset 16): dimension 4 differs from 3");
    float nan = NAN;
    memcpy(g, f, 32);
    memcpy(g + 24, &nan, 4);
    CHECK_EQ(parse("z.fvecs", FMT_FVECS, 0, g, sizeof g, &vs, err), CHRYS_INVALID);
    CHECK_STR_CONTAINS(err, "z.fvecs: record 1 (byte offset 24): component 1 is NaN");
    int32_t huge = 1 << 30;
    memcpy(g, &huge, 4);
    CHECK_EQ(parse("h.fvecs", FMT_FVECS, 0, g, sizeof g, &vs, err), CHRYS_INVALID);
    CHECK_STR_CONTAINS(err, "out of range");
    CHECK_EQ(parse("e.fvecs", FMT_FVECS, 0, g, 0, &vs, err), CHRYS_INVALID);
}

void test_io_raw_and_npy(void)
{
    float raw[6] = {1, 2, 3, 4, 5, 6};
    vecset vs;
    char err[512];
    CHECK_EQ(parse("r.f32", FMT_AUTO, 2, raw, sizeof raw, &vs, err), CHRYS_OK);
    CHECK_EQ(vs.n, 3);
    vecset_free(&vs);
    CHECK_EQ(parse("r.f32", FMT_RAW, 4, raw, sizeof raw, &vs, err), CHRYS_INVALID);
    CHECK_STR_CONTAINS(err, "not a positive multiple");
    CHECK_EQ(parse("r.f32", FMT_RAW, 0, raw, sizeof raw, &vs, err), CHRYS_INVALID);
    CHECK_STR_CONTAINS(err, "--dim");
    /* npy v1.0, float32, shape (2, 3) */
    const char *hdr32 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    unsigned char npy[256];
    size_t hl = 118; /* header padded so data starts at 128 */
    memcpy(npy, "\x93NUMPY\x01\x00", 8);
    npy[8] = (unsigned char)hl;
    npy[9] = 0;
    memset(npy + 10, ' ', hl);
    memcpy(npy + 10, hdr32, strlen(hdr32));
    npy[10 + hl - 1] = '\n';
    memcpy(npy + 128, raw, sizeof raw);
    CHECK_EQ(parse("a.npy", FMT_AUTO, 0, npy, 128 + sizeof raw, &vs, err), CHRYS_OK);
    CHECK_EQ(vs.n, 2);
    CHECK_EQ(vs.dim, 3);
    CHECK(vs.data[4] == 5.0f);
    vecset_free(&vs);
    CHECK_EQ(parse("a.npy", FMT_NPY, 0, npy, 128 + sizeof raw - 4, &vs, err), CHRYS_INVALID);
    CHECK_STR_CONTAINS(err, "truncated");
    /* float64 is converted, with a note */
    const char *hdr64 = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }";
    memset(npy + 10, ' ', hl);
    memcpy(npy + 10, hdr64, strlen(hdr64));
    npy[10 + hl - 1] = '\n';
    double dv[3] = {0.5, -1.25, 3};
    memcpy(npy + 128, dv, sizeof dv);
    unsigned char *buf = malloc(128 + sizeof dv);
    memcpy(buf, npy, 128 + sizeof dv);
    char note[256];
    CHECK_EQ(vecset_parse("b.npy", FMT_AUTO, 0, buf, 128 + sizeof dv, &vs, err, 512, note, sizeof note), CHRYS_OK);
    CHECK_EQ(vs.n, 1);
    CHECK_EQ(vs.dim, 3);
    CHECK(vs.data[1] == -1.25f);
    CHECK_STR_CONTAINS(note, "float64");
    vecset_free(&vs);
    const char *hdri = "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }";
    memset(npy + 10, ' ', hl);
    memcpy(npy + 10, hdri, strlen(hdri));
    CHECK_EQ(parse("c.npy", FMT_NPY, 0, npy, 128 + 12, &vs, err), CHRYS_INVALID);
    CHECK_STR_CONTAINS(err, "dtype");
    CHECK_EQ(parse("d.npy", FMT_NPY, 0, "\x93NUMPX", 6, &vs, err), CHRYS_INVALID);
}

void test_io_jsonl(void)
{
    const char *good = "{\"id\": 7, \"embedding\": [1, 2.5, -3], \"name\": \"x\"}\n"
                       "\n"
                       "{\"id\": \"18446744073709551000\", \"embedding\": [0, 0, 1e-3]}\n";
    vecset vs;
    char err[512];
    CHECK_EQ(parse("g.jsonl", FMT_AUTO, 0, good, strlen(good), &vs, err), CHRYS_OK);
    CHECK_EQ(vs.n, 2);
    CHECK_EQ(vs.dim, 3);
    CHECK(vs.ids && vs.ids[0] == 7 && vs.ids[1] == 18446744073709551000ull);
    CHECK(vs.data[1] == 2.5f);
    CHECK(vs.meta && vs.meta[0] && !strcmp(vs.meta[0], "{\"name\":\"x\"}"));
    CHECK(vs.meta[1] == NULL);
    vecset_free(&vs);
    struct {
        const char *in, *msg;
        int rc;
    } bad[] = {
        {"{\"embedding\": [1, 2]}\n{\"embedding\": [1, 2, 3]}\n", "b.jsonl:2: embedding has 3 components, earlier records have 2", CHRYS_DIM},
        {"{\"embedding\": [1, 2]}\n{\"embedding\": [1, 2}\n", "b.jsonl:2: malformed JSON", CHRYS_INVALID},
        {"{\"vec\": [1, 2]}\n", "b.jsonl:1: missing \"embedding\"", CHRYS_INVALID},
        {"{\"embedding\": \"1,2\"}\n", "must be an array", CHRYS_INVALID},
        {"{\"embedding\": [1, \"2\"]}\n", "b.jsonl:1: embedding[1] is not a number", CHRYS_INVALID},
        {"{\"embedding\": [1, 1e999]}\n", "embedding[1] is not a finite float32", CHRYS_INVALID},
        {"{\"embedding\": [1, 1e39]}\n", "embedding[1] is not a finite float32", CHRYS_INVALID},
        {"{\"id\": 1, \"embedding\": [1]}\n{\"embedding\": [1]}\n", "b.jsonl:2: \"id\" must be given on every record or on none", CHRYS_INVALID},
        {"{\"id\": -1, \"embedding\": [1]}\n", "non-negative integer", CHRYS_INVALID},
        {"{\"id\": 1.5, \"embedding\": [1]}\n", "non-negative integer", CHRYS_INVALID},
        {"[1, 2]\n", "expected a JSON object", CHRYS_INVALID},
        {"{\"embedding\": []}\n", "embedding has 0 components", CHRYS_DIM},
        {"\n\n", "no records", CHRYS_INVALID},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = 0;
        int rc = parse("b.jsonl", FMT_JSONL, 0, bad[i].in, strlen(bad[i].in), &vs, err);
        CHECK_EQ(rc, bad[i].rc);
        CHECK_STR_CONTAINS(err, bad[i].msg);
    }
}

/* The streamed fvecs reader (the merge's input), mapped and read (the path taken when mmap
 * fails): the same rows in chunks, the chunk's file offsets, a bad record header named by record
 * and byte offset, and NaN refused only when check_finite is set. */
void test_io_vstream(void)
{
    enum { D = 5, N = 700 };
    char path[] = "/tmp/chrys_vstream_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    FILE *f = fdopen(fd, "wb");
    for (int r = 0; r < N; r++) {
        int32_t d = D;
        float v[D];
        for (int i = 0; i < D; i++) v[i] = (float)(r * 10 + i);
        if (r == 600) v[2] = NAN;
        fwrite(&d, 4, 1, f);
        fwrite(v, 4, D, f);
    }
    fclose(f);
    char err[512];
    for (int mapped = 1; mapped >= 0; mapped--)
        for (int fin = 0; fin < 2; fin++) {
            vstream s;
            CHECK_EQ(vstream_open(path, FMT_FVECS, 0, &s), CHRYS_OK);
            if (!mapped) { /* as if mmap had failed: read through the file */
                munmap((void *)s.map, s.map_len);
                s.map = NULL;
            }
            s.check_finite = fin;
            size_t seen = 0;
            int rc = CHRYS_OK;
            for (;;) {
                vecset vs;
                if ((rc = vstream_next(&s, 256, &vs, err, sizeof err)) != CHRYS_OK || vs.n == 0) break;
                CHECK_EQ(vs.dim, D);
                CHECK_EQ(vs.file_off, seen * (4 + 4 * D) + 4);
                CHECK_EQ(vs.row_bytes, 4 + 4 * D);
                size_t stride = vs.stride ? vs.stride : D;
                for (size_t r = 0; r < vs.n; r++)
                    for (int i = 0; i < D; i++)
                        if (!(seen + r == 600 && i == 2)) CHECK(vs.data[r * stride + i] == (float)((seen + r) * 10 + i));
                seen += vs.n;
                vecset_free(&vs);
            }
            if (fin) {
                CHECK_EQ(rc, CHRYS_INVALID);
                CHECK_STR_CONTAINS(err, "record 600 (byte offset 14412): component 2 is NaN");
                CHECK_EQ(seen, 512);
            } else {
                CHECK_EQ(rc, CHRYS_OK);
                CHECK_EQ(seen, N);
            }
            vstream_close(&s);
        }
    /* a record whose header is not the dimension */
    f = fopen(path, "r+b");
    int32_t bad = 4;
    fseek(f, 300 * (4 + 4 * D), SEEK_SET);
    fwrite(&bad, 4, 1, f);
    fclose(f);
    for (int mapped = 1; mapped >= 0; mapped--) {
        vstream s;
        CHECK_EQ(vstream_open(path, FMT_FVECS, 0, &s), CHRYS_OK);
        if (!mapped) {
            munmap((void *)s.map, s.map_len);
            s.map = NULL;
        }
        vecset vs;
        CHECK_EQ(vstream_next(&s, 256, &vs, err, sizeof err), CHRYS_OK);
        vecset_free(&vs);
        CHECK_EQ(vstream_next(&s, 256, &vs, err, sizeof err), CHRYS_DIM);
        CHECK_STR_CONTAINS(err, "record 300 (byte offset 7200): dimension 4 differs from 5");
        vstream_close(&s);
    }
    unlink(path);
}

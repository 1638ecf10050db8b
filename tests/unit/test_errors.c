/*
 * test_errors.c: the structured error info (chrys_*_error_info): the record at fault in the
 * middle of a batch, the code, the reason without its prefix, nothing of the batch applied, and
 * struct_size honoured field by field.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "chrysalis.h"
#include "tests.h"

static void fill_rows(float *v, size_t n, size_t d)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++) v[i * d + j] = (float)((i * 7 + j * 3) % 11) + 1.0f;
}

void test_error_info_index_add(void)
{
    enum { N = 64, D = 8, BAD = 37 };
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = D;
    chrys_index *ix = NULL;
    CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_OK);
    chrys_error_info ei = {sizeof ei};
    CHECK_EQ(chrys_index_get_error_info(ix, &ei), CHRYS_OK); /* a fresh handle: no failure */
    CHECK_EQ(ei.code, CHRYS_OK);
    CHECK_EQ(ei.record, -1);
    CHECK_EQ(ei.message[0], 0);
    static float v[N * D];
    uint64_t ids[N];
    fill_rows(v, N, D);
    for (size_t i = 0; i < N; i++) ids[i] = 1000 + i;
    v[BAD * D + 5] = NAN; /* a bad row in the middle of the batch */
    CHECK_EQ(chrys_index_add(ix, N, ids, v, NULL), CHRYS_INVALID);
    CHECK_EQ(chrys_index_get_error_info(ix, &ei), CHRYS_OK);
    CHECK_EQ(ei.code, CHRYS_INVALID);
    CHECK_EQ(ei.record, BAD);
    CHECK_EQ(ei.byte_offset, -1);
    CHECK_STR_CONTAINS(ei.message, "row 37: component 5 is NaN");
    CHECK(!strcmp(ei.reason, "component 5 is NaN"));
    CHECK(ei.message == chrys_index_errmsg(ix));
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(ix, &info);
    CHECK_EQ(info.count, 0); /* nothing of the batch was added */
    CHECK(!chrys_index_contains(ix, 1000));
    /* a duplicate id late in the batch: that row, code EXISTS */
    v[BAD * D + 5] = 1;
    ids[N - 2] = ids[3];
    CHECK_EQ(chrys_index_add(ix, N, ids, v, NULL), CHRYS_EXISTS);
    CHECK_EQ(chrys_index_get_error_info(ix, &ei), CHRYS_OK);
    CHECK_EQ(ei.code, CHRYS_EXISTS);
    CHECK_EQ(ei.record, N - 2);
    CHECK(!strcmp(ei.reason, "duplicate id 1003 (also row 3 of this batch)"));
    chrys_index_get_info(ix, &info);
    CHECK_EQ(info.count, 0);
    /* a failure that names no row: record -1, the reason is the whole message */
    CHECK_EQ(chrys_index_remove(ix, 5), CHRYS_NOTFOUND);
    CHECK_EQ(chrys_index_get_error_info(ix, &ei), CHRYS_OK);
    CHECK_EQ(ei.code, CHRYS_NOTFOUND);
    CHECK_EQ(ei.record, -1);
    CHECK(ei.reason == ei.message);
    /* an older, shorter struct: only its fields are written */
    struct {
        chrys_error_info head;
        int canary;
    } small;
    memset(&small, 0x5a, sizeof small);
    small.head.struct_size = offsetof(chrys_error_info, record) + sizeof(int64_t);
    CHECK_EQ(chrys_index_get_error_info(ix, &small.head), CHRYS_OK);
    CHECK_EQ(small.head.code, CHRYS_NOTFOUND);
    CHECK_EQ(small.head.record, -1);
    unsigned char after[sizeof small.head.byte_offset];
    memset(after, 0x5a, sizeof after);
    CHECK(!memcmp(&small.head.byte_offset, after, sizeof after));
    small.head.struct_size = 4;
    CHECK_EQ(chrys_index_get_error_info(ix, &small.head), CHRYS_INVALID);
    CHECK_EQ(chrys_index_get_error_info(NULL, &ei), CHRYS_INVALID);
    chrys_index_free(ix);
}

void test_error_info_merger(void)
{
    enum { N = 40, D = 6, BAD = 23 };
    chrys_merge_opts o;
    chrys_merge_opts_init(&o);
    o.dim = D;
    chrys_merger *m = NULL;
    CHECK_EQ(chrys_merger_new(&o, &m, NULL), CHRYS_OK);
    static float v[N * D];
    fill_rows(v, N, D);
    chrys_merge_record recs[N];
    for (size_t i = 0; i < N; i++) recs[i] = (chrys_merge_record){500 + i, v + i * D, D, NULL};
    memset(v + BAD * D, 0, D * sizeof(float)); /* a zero vector in the middle */
    CHECK(chrys_merger_merge(m, N, recs, NULL) == CHRYS_INVALID);
    chrys_error_info ei = {sizeof ei};
    CHECK_EQ(chrys_merger_get_error_info(m, &ei), CHRYS_OK);
    CHECK_EQ(ei.code, CHRYS_INVALID);
    CHECK_EQ(ei.record, BAD);
    CHECK_STR_CONTAINS(ei.message, "record 23 (id 523): zero vector");
    CHECK(!strcmp(ei.reason, "zero vector has no cosine similarity"));
    chrys_merge_stats st = {sizeof st};
    chrys_merger_get_stats(m, &st);
    CHECK_EQ(st.records, 0); /* nothing of the batch was merged */
    CHECK_EQ(st.entries, 0);
    CHECK_EQ(chrys_merger_get_error_info(NULL, &ei), CHRYS_INVALID);
    chrys_merger_free(m);
}

void test_error_info_embedder(void)
{
    chrys_embed_opts o;
    chrys_embed_opts_init(&o);
    o.dim = 16;
    chrys_embedder *e = NULL;
    CHECK_EQ(chrys_embedder_new(&o, &e, NULL), CHRYS_OK);
    const char *texts[5] = {"a", "b", "c", NULL, "e"};
    float out[5 * 16];
    CHECK_EQ(chrys_embedder_embed(e, 5, texts, out), CHRYS_INVALID);
    chrys_error_info ei = {sizeof ei};
    CHECK_EQ(chrys_embedder_get_error_info(e, &ei), CHRYS_OK);
    CHECK_EQ(ei.code, CHRYS_INVALID);
    CHECK_EQ(ei.record, 3);
    CHECK_STR_CONTAINS(ei.message, "text 3 is NULL");
    CHECK(!strcmp(ei.reason, "is NULL"));
    chrys_embed_stats st = {sizeof st};
    chrys_embedder_get_stats(e, &st);
    CHECK_EQ(st.texts, 0); /* the call was refused before anything was embedded */
    /* a later good call clears the structured part */
    texts[3] = "d";
    CHECK_EQ(chrys_embedder_embed(e, 5, texts, out), CHRYS_OK);
    CHECK_EQ(chrys_embedder_get_error_info(e, &ei), CHRYS_OK);
    CHECK_EQ(ei.code, CHRYS_OK);
    CHECK_EQ(ei.record, -1);
    chrys_embedder_free(e);
}

/*
 * fuzz_targets.c: fuzz targets for hostile input.
 *   fuzz_load:  bytes -> store loader (then search and re-save the loaded index, which must work)
 *   fuzz_jsonl: bytes -> JSONL reader (plain and merge-input modes) and legend-file reader
 *   fuzz_fvecs: bytes -> fvecs/npy/raw readers (format picked by the first byte)
 *   fuzz_hnsw:  bytes -> edits of a valid HNSW store's graph sections, checksums made valid again, so
 *               the loader's graph checks (not the CRCs) must stop a bad graph; a graph that loads
 *               must survive search, update, remove, add, compact and save
 * Built with -DCHRYS_LIBFUZZER under clang for libFuzzer (`make fuzz`); otherwise replay_main.c
 * replays the committed corpus through the same functions under ASan+UBSan (part of `make test`).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../cli/cli.h"
#include "chrysalis.h"
#include "fuzz.h"
#include "index.h"
#include "store/format.h"
#include "store/store.h"

int fuzz_load_one(const uint8_t *data, size_t size)
{
    chrys_index *ix = NULL;
    char *msg = NULL;
    int rc = chrys_index_load_buffer(data, size, "fuzz", &ix, &msg);
    if (rc == CHRYS_OK) {
        /* A file that loads must be fully usable. */
        chrys_index_info info = {sizeof info};
        chrys_index_get_info(ix, &info);
        float *q = calloc(info.dim, sizeof(float));
        q[0] = 1;
        chrys_search_opts so;
        chrys_search_opts_init(&so);
        so.k = 3;
        chrys_hit hits[3];
        if (chrys_index_search(ix, 1, q, &so, hits) != CHRYS_OK) abort();
        free(q);
    } else if (!msg) {
        abort(); /* every failure must explain itself */
    }
    chrys_free(msg);
    chrys_index_free(ix);
    /* the same bytes as a merger store (its loader checks more) */
    char path[64];
    snprintf(path, sizeof path, "/tmp/chrys_fuzz_%d.chrys", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, size, f);
        fclose(f);
        chrys_merger *m = NULL;
        msg = NULL;
        if (chrys_merger_open(path, &m, &msg) == CHRYS_OK) {
            chrys_merge_stats st = {sizeof st};
            chrys_merger_get_stats(m, &st);
            for (uint64_t e = 0; e < st.entries && e < 4; e++) {
                chrys_merge_entry en = {sizeof en};
                if (chrys_merger_get_entry(m, e, &en, NULL) != CHRYS_OK) abort();
            }
        } else if (!msg) {
            abort();
        }
        chrys_free(msg);
        chrys_merger_free(m);
        unlink(path);
    }
    return 0;
}

int fuzz_jsonl_one(const uint8_t *data, size_t size)
{
    vecset vs;
    char err[512];
    if (vecset_parse_jsonl("fuzz.jsonl", (const char *)data, size, &vs, err, sizeof err) == CHRYS_OK) {
        if (vs.n == 0 || vs.dim == 0) abort();
        vecset_free(&vs);
    }
    /* merge input: empty embeddings kept, invalid records skipped */
    if (vecset_parse_jsonl_ex("fuzz.jsonl", (const char *)data, size, JSONL_ALLOW_EMPTY | JSONL_SKIP_INVALID, &vs, err,
                              sizeof err) == CHRYS_OK)
        vecset_free(&vs);
    /* legend files */
    if (vecset_parse_legend("fuzz_embeddings_full.json", (const char *)data, size, "all", &vs, err, sizeof err) == CHRYS_OK)
        vecset_free(&vs);
    return 0;
}

int fuzz_fvecs_one(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    vec_format fmt = data[0] % 3 == 0 ? FMT_FVECS : data[0] % 3 == 1 ? FMT_NPY : FMT_RAW;
    unsigned char *buf = malloc(size);
    memcpy(buf, data + 1, size - 1);
    vecset vs;
    char err[512], note[256];
    if (vecset_parse("fuzz", fmt, 4, buf, size - 1, &vs, err, sizeof err, note, sizeof note) == CHRYS_OK)
        vecset_free(&vs);
    return 0;
}

/* A small valid HNSW index (built once): 60 nodes, M 3, two metrics. */
static chrys_index *hnsw_base(int sq8)
{
    static chrys_index *base[2];
    if (base[sq8]) return base[sq8];
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = 4;
    o.metric = sq8 ? CHRYS_METRIC_L2 : CHRYS_METRIC_COSINE;
    o.spec = sq8 ? "HNSW3,SQ8" : "HNSW3";
    o.ef_construction = 8;
    o.build_threads = 1;
    if (chrys_index_new(&o, &base[sq8], NULL)) abort();
    float x[60 * 4];
    uint64_t ids[60];
    uint64_t st = 7;
    for (int i = 0; i < 60 * 4; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((st >> 40) % 1000) / 500.0f - 1.0f;
    }
    for (int i = 0; i < 60; i++) {
        ids[i] = 100 + (uint64_t)i;
        x[i * 4] += 0.01f; /* no zero rows */
    }
    if (chrys_index_add(base[sq8], 60, ids, x, NULL)) abort();
    chrys_index_remove(base[sq8], 105); /* a tombstone */
    return base[sq8];
}

int fuzz_hnsw_one(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    chrys_index *b = hnsw_base(data[0] & 1);
    static const uint32_t tags[] = {TAG_HNSW, TAG_HNLV, TAG_HNL0, TAG_HNUP, TAG_IDS};
    uint32_t tag = tags[(data[0] >> 1) % 5];
    store_section secs[INDEX_MAX_SECTIONS];
    index_sections is = {secs};
    if (index_store_sections(b, &is)) abort();
    unsigned char *copy = NULL;
    for (uint32_t i = 0; i < is.n; i++) {
        if (secs[i].tag != tag) continue;
        /* data[1..]: pairs (offset, byte) written into the section; a length change when odd */
        size_t len = (size_t)secs[i].len;
        if ((data[1] & 1) && size > 2) len = len > data[2] ? len - data[2] : 0;
        copy = malloc(secs[i].len + 1);
        memcpy(copy, secs[i].data, secs[i].len);
        for (size_t j = 3; j + 1 < size && len; j += 2) copy[data[j] % len] = data[j + 1];
        secs[i].data = copy;
        secs[i].len = len;
    }
    char path[64];
    snprintf(path, sizeof path, "/tmp/chrys_fuzz_hnsw_%d.chrys", (int)getpid());
    if (store_write(path, secs, is.n, NULL)) abort();
    free(copy);
    index_sections_free(&is);
    chrys_index *ix = NULL;
    char *msg = NULL;
    if (chrys_index_load(path, &ix, &msg) == CHRYS_OK) {
        float q[4] = {0.5f, -0.25f, 1, 0.125f};
        chrys_search_opts so;
        chrys_search_opts_init(&so);
        so.k = 5;
        so.ef_search = 16;
        chrys_hit hits[5];
        if (chrys_index_search(ix, 1, q, &so, hits) != CHRYS_OK) abort();
        uint64_t ids[60];
        chrys_index_info info = {sizeof info};
        chrys_index_get_info(ix, &info);
        size_t n_ids;
        if (info.count > 60 || chrys_index_get_ids(ix, ids, 60, &n_ids) || n_ids != info.count) abort();
        if (info.count) {
            chrys_index_update(ix, ids[0], q);
            chrys_index_remove(ix, ids[info.count - 1]);
        }
        uint64_t nid = 5000;
        if (chrys_index_add(ix, 1, &nid, q, NULL)) abort();
        if (chrys_index_compact(ix)) abort();
        if (chrys_index_search(ix, 1, q, &so, hits) != CHRYS_OK || hits[0].id == CHRYS_NO_ID) abort();
        if (chrys_index_save(ix, path, NULL)) abort();
        chrys_index *again = NULL;
        if (chrys_index_load(path, &again, NULL)) abort(); /* what we repaired and saved is valid */
        chrys_index_free(again);
    } else if (!msg) {
        abort();
    }
    chrys_free(msg);
    chrys_index_free(ix);
    unlink(path);
    return 0;
}

#ifdef CHRYS_LIBFUZZER
#ifndef FUZZ_TARGET
#define FUZZ_TARGET fuzz_load_one
#endif
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return FUZZ_TARGET(data, size); }
#endif

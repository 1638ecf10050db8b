/*
 * fuzz_targets.c: fuzz targets for hostile input.
 *   fuzz_load:  bytes -> store loader (then search and re-save the loaded index, which must work)
 *   fuzz_jsonl: bytes -> JSONL reader (plain and merge-input modes) and legend-file reader
 *   fuzz_fvecs: bytes -> fvecs/npy/raw readers (format picked by the first byte)
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

#ifdef CHRYS_LIBFUZZER
#ifndef FUZZ_TARGET
#define FUZZ_TARGET fuzz_load_one
#endif
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return FUZZ_TARGET(data, size); }
#endif

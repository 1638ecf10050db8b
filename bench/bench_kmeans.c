/*
 * bench_kmeans.c: IVF training + add time of libchrysalis at a given thread count, for
 * bench/kmeans_train_vs_faiss.py (FAISS IndexIVFFlat train + add side by side).
 *
 *   bench_kmeans --base B.fvecs --nlist N --threads T [--centroids OUT.fvecs] [--repeat R]
 *
 * Builds "IVF<N>,Flat" (cosine) with build_threads = T and OpenBLAS pinned to T threads, adds
 * every row in one chrys_index_add (the index trains itself on that batch, then lists every row)
 * and prints build_s (the fastest of R builds); --centroids writes the trained centroids.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cli/cli.h"
#include "backend.h"
#include "chrysalis.h"
#include "index.h"

void openblas_set_num_threads(int);

static void die(const char *what, const char *msg) { bk_die("bench_kmeans", what, msg); }

int main(int argc, char **argv)
{
    const char *base = NULL, *cent_path = NULL;
    long nlist = 0, threads = 1, repeat = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--base")) base = v;
        else if (!strcmp(a, "--nlist")) nlist = strtol(v, NULL, 10);
        else if (!strcmp(a, "--threads")) threads = strtol(v, NULL, 10);
        else if (!strcmp(a, "--repeat")) repeat = strtol(v, NULL, 10);
        else if (!strcmp(a, "--centroids")) cent_path = v;
        else die("unknown option", a);
    }
    if (!base || nlist < 1 || threads < 1 || repeat < 1)
        die("usage", "bench_kmeans --base B.fvecs --nlist N --threads T [--centroids OUT] [--repeat R]");
    vecset xb;
    char err[512], note[256];
    if (vecset_read(base, FMT_FVECS, 0, &xb, err, sizeof err, note, sizeof note)) die(base, err);
    openblas_set_num_threads((int)threads);
    char spec[64];
    snprintf(spec, sizeof spec, "IVF%ld,Flat", nlist);
    uint64_t *ids = malloc(xb.n * sizeof *ids);
    for (size_t i = 0; i < xb.n; i++) ids[i] = i;
    double best = 1e30;
    for (long r = 0; r < repeat; r++) {
        chrys_index_opts o;
        chrys_index_opts_init(&o);
        o.dim = xb.dim;
        o.spec = spec;
        o.build_threads = (uint32_t)threads;
        chrys_index *ix = NULL;
        char *msg = NULL;
        if (chrys_index_new(&o, &ix, &msg)) die(spec, msg);
        double t0 = bk_now();
        if (chrys_index_add(ix, xb.n, ids, xb.data, NULL)) die("add", chrys_index_errmsg(ix));
        chrys_index_info info = {sizeof info};
        chrys_index_get_info(ix, &info);
        if (!info.nlist && chrys_index_retrain(ix)) die("retrain", chrys_index_errmsg(ix));
        double s = bk_now() - t0;
        if (s < best) best = s;
        if (r == repeat - 1 && cent_path) {
            FILE *f = fopen(cent_path, "wb");
            if (!f) die(cent_path, "cannot open");
            for (uint32_t c = 0; c < ix->nlist; c++) {
                int32_t d = (int32_t)xb.dim;
                fwrite(&d, 4, 1, f);
                fwrite(ix->centroids + (size_t)c * xb.dim, 4, xb.dim, f);
            }
            fclose(f);
        }
        chrys_index_free(ix);
    }
    printf("{\"build_s\": %.4f, \"threads\": %ld, \"n\": %zu, \"dim\": %u, \"nlist\": %ld}\n", best, threads, xb.n,
           (unsigned)xb.dim, nlist);
    return 0;
}

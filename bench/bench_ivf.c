/*
 * bench_ivf.c: libchrysalis IVF as an external backend of ../shared/tools/anchors.py
 * (`--cli NAME=COMMAND`), sweeping nprobe like anchors.py's FAISS IVF backend.
 *
 *   bench_ivf --base B.fvecs --query Q.fvecs --k K --threads T1,T2 --out DIR
 *             [--sq8] [--nlist N] [--centroids FILE.fvecs]
 *
 * nlist defaults to round(4 sqrt(n)), the value anchors.py gives FAISS IndexIVFFlat. Build time
 * (k-means training + adding every vector) is build_s. For each thread count and each nprobe in
 * 1, 2, 4, ..., 512 (<= nlist), all queries go in one chrys_index_search call; the fastest of up
 * to three runs counts. --centroids writes the trained centroids (to compare k-means objectives).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../cli/cli.h"
#include "backend.h"
#include "chrysalis.h"
#include "index.h"

void openblas_set_num_threads(int);

#define now bk_now
static void die(const char *what, const char *msg) { bk_die("bench_ivf", what, msg); }

int main(int argc, char **argv)
{
    const char *base = NULL, *query = NULL, *out = NULL, *threads = "1", *cent_path = NULL;
    long k = 10, nlist = 0;
    int sq8 = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sq8")) {
            sq8 = 1;
            continue;
        }
        if (i + 1 >= argc) die("usage", "bench_ivf --base B --query Q --k K --threads T --out DIR [--sq8] [--nlist N]");
        const char *a = argv[i], *v = argv[++i];
        if (!strcmp(a, "--base")) base = v;
        else if (!strcmp(a, "--query")) query = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--threads")) threads = v;
        else if (!strcmp(a, "--k")) k = strtol(v, NULL, 10);
        else if (!strcmp(a, "--nlist")) nlist = strtol(v, NULL, 10);
        else if (!strcmp(a, "--centroids")) cent_path = v;
        else if (!strcmp(a, "--budget")) (void)v;
        else die("unknown option", a);
    }
    if (!base || !query || !out) die("usage", "need --base, --query and --out");
    vecset xb, xq;
    char err[512], note[256];
    if (vecset_read(base, FMT_FVECS, 0, &xb, err, sizeof err, note, sizeof note)) die(base, err);
    if (vecset_read(query, FMT_FVECS, 0, &xq, err, sizeof err, note, sizeof note)) die(query, err);
    if (!nlist) nlist = lround(4 * sqrt((double)xb.n));
    char spec[64];
    snprintf(spec, sizeof spec, "IVF%ld,%s", nlist, sq8 ? "SQ8" : "Flat");
    /* build with the largest thread count (as anchors.py does) */
    int max_t = bk_max_threads(threads);
    openblas_set_num_threads(max_t);
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = xb.dim;
    o.spec = spec;
    chrys_index *ix = NULL;
    char *msg = NULL;
    if (chrys_index_new(&o, &ix, &msg)) die(spec, msg);
    uint64_t *ids = malloc(xb.n * sizeof *ids);
    for (size_t i = 0; i < xb.n; i++) ids[i] = i;
    double t0 = now();
    /* train on everything at once, then add: the index trains itself when the first batch arrives */
    if (chrys_index_add(ix, xb.n, ids, xb.data, NULL)) die("add", chrys_index_errmsg(ix));
    chrys_index_info pre = {sizeof pre};
    chrys_index_get_info(ix, &pre);
    /* fewer than 8 vectors per list: the index stays exact until trained; train it explicitly,
     * as FAISS users must */
    if (!pre.nlist && chrys_index_retrain(ix)) die("retrain", chrys_index_errmsg(ix));
    double build_s = now() - t0;
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(ix, &info);
    fprintf(stderr, "bench_ivf: %s on %zu x %u: build %.2f s, imbalance %.2f, SIMD %s\n", info.spec, xb.n, xb.dim, build_s,
            info.imbalance, chrys_simd_name());
    if (cent_path) {
        FILE *f = fopen(cent_path, "wb");
        for (uint32_t c = 0; f && c < ix->nlist; c++) {
            int32_t d = (int32_t)xb.dim;
            fwrite(&d, 4, 1, f);
            fwrite(ix->centroids + (size_t)c * xb.dim, 4, xb.dim, f);
        }
        if (f) fclose(f);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/result.json", out);
    FILE *rj = fopen(path, "w");
    if (!rj) die(path, strerror(errno));
    fprintf(rj, "{\"build_s\": %.6f, \"build_threads\": %d, \"index_bytes\": %llu, \"nlist\": %ld, \"runs\": [", build_s, max_t,
            (unsigned long long)info.memory_bytes, nlist);
    chrys_hit *hits = malloc(xq.n * (size_t)k * sizeof *hits);
    int first = 1;
    for (const char *p = threads; p && *p;) {
        int t = atoi(p);
        openblas_set_num_threads(t);
        for (long np = 1; np <= 512 && np <= nlist; np *= 2) {
            chrys_search_opts so;
            chrys_search_opts_init(&so);
            so.k = (uint32_t)k;
            so.nprobe = (uint32_t)np;
            so.n_threads = (uint32_t)t;
            double best = bk_time_search(ix, xq.n, xq.data, &so, hits, "bench_ivf");
            char name[64];
            snprintf(name, sizeof name, "ids_%d_%ld.ivecs", t, np);
            bk_write_ids(out, name, hits, xq.n, k);
            fprintf(rj, "%s\n {\"param\": %ld, \"threads\": %d, \"search_s\": %.6f, \"nq\": %zu, \"ids\": \"ids_%d_%ld.ivecs\"}",
                    first ? "" : ",", np, t, best, xq.n, t, np);
            first = 0;
        }
        p = strchr(p, ',');
        if (p) p++;
    }
    fprintf(rj, "\n]}\n");
    fclose(rj);
    free(hits);
    free(ids);
    chrys_index_free(ix);
    vecset_free(&xb);
    vecset_free(&xq);
    return 0;
}

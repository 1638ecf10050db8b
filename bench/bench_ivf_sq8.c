/*
 * bench_ivf_sq8.c: one libchrysalis index on one data set, measured the way bench/run_ivf_sq8.sh
 * compares it with FAISS IndexIVFScalarQuantizer (bench/faiss_ivf_sq8_anchor.py does the same for
 * FAISS): build time, bytes on disk, bytes in memory, and QPS with recall@10 for each thread count
 * and nprobe.
 *
 *   bench_ivf_sq8 --base B.fvecs --query Q.fvecs --gt GT.ivecs --spec IVF256,SQ8 --store S.chrys
 *                 [--threads 1,2] [--nprobe 1,2,4,8,16,32,64] [--json OUT.json]
 *
 * Build: one chrys_index_add of every base vector (an IVF index trains itself on its first batch,
 * k-means on a seeded sample of at most 256 vectors per list, all cores), timed. The store is then
 * saved (its size is "bytes on disk"), the index and the input freed, and the store loaded again:
 * "bytes in memory" is the growth of the process's resident set (VmRSS) over that load, beside the
 * library's own count (chrys_index_info.memory_bytes, vector_bytes). Search: all queries in one
 * chrys_index_search call, the fastest of up to three runs; recall@10 is |found ∩ true top 10| / 10
 * averaged over the queries (ground truth: the exact top 100 of gen_clustered.py).
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../cli/cli.h"
#include "backend.h"
#include "chrysalis.h"

void openblas_set_num_threads(int);

static void die(const char *what, const char *msg) { bk_die("bench_ivf_sq8", what, msg); }

static int32_t *read_ivecs(const char *path, size_t *n, int *k)
{
    FILE *f = fopen(path, "rb");
    if (!f) die(path, strerror(errno));
    int32_t d;
    if (fread(&d, 4, 1, f) != 1 || d < 1) die(path, "bad ivecs");
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    *n = (size_t)sz / (4 * ((size_t)d + 1));
    *k = d;
    int32_t *all = malloc((size_t)sz);
    if (!all || fread(all, 1, (size_t)sz, f) != (size_t)sz) die(path, "short read");
    fclose(f);
    int32_t *out = malloc(*n * (size_t)d * 4);
    for (size_t i = 0; i < *n; i++) memcpy(out + i * d, all + i * (d + 1) + 1, (size_t)d * 4);
    free(all);
    return out;
}

int main(int argc, char **argv)
{
    const char *base = NULL, *query = NULL, *gtp = NULL, *spec = NULL, *store = NULL, *json = NULL;
    const char *threads = "1,2", *nprobes = "1,2,4,8,16,32,64";
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--base")) base = v;
        else if (!strcmp(a, "--query")) query = v;
        else if (!strcmp(a, "--gt")) gtp = v;
        else if (!strcmp(a, "--spec")) spec = v;
        else if (!strcmp(a, "--store")) store = v;
        else if (!strcmp(a, "--json")) json = v;
        else if (!strcmp(a, "--threads")) threads = v;
        else if (!strcmp(a, "--nprobe")) nprobes = v;
        else die("unknown option", a);
    }
    if (!base || !query || !gtp || !spec || !store) die("usage", "need --base, --query, --gt, --spec and --store");
    vecset xb, xq;
    char err[512], note[256];
    if (vecset_read(base, FMT_FVECS, 0, &xb, err, sizeof err, note, sizeof note)) die(base, err);
    if (vecset_read(query, FMT_FVECS, 0, &xq, err, sizeof err, note, sizeof note)) die(query, err);
    size_t ngt;
    int gk;
    int32_t *gt = read_ivecs(gtp, &ngt, &gk);
    if (ngt < xq.n || gk < 10) die(gtp, "ground truth too small");
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
    double t0 = bk_now();
    if (chrys_index_add(ix, xb.n, ids, xb.data, NULL)) die("add", chrys_index_errmsg(ix));
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(ix, &info);
    if (info.kind == CHRYS_INDEX_IVF && !info.nlist && chrys_index_retrain(ix)) die("retrain", chrys_index_errmsg(ix));
    double build_s = bk_now() - t0;
    chrys_index_get_info(ix, &info);
    if (chrys_index_save(ix, store, &msg)) die(store, msg);
    struct stat st;
    stat(store, &st);
    chrys_index_free(ix);
    vecset_free(&xb);
    free(ids);
    malloc_trim(0);
    long rss_before = bk_rss_kb();
    if (chrys_index_load(store, &ix, &msg)) die(store, msg);
    long rss_after = bk_rss_kb();
    chrys_index_info li = {sizeof li};
    chrys_index_get_info(ix, &li);
    fprintf(stderr, "bench_ivf_sq8: %s (%s) on %llu x %u: build %.2f s, store %lld B, RSS +%ld KiB on load, SIMD %s\n",
            spec, li.spec, (unsigned long long)li.count, li.dim, build_s, (long long)st.st_size, rss_after - rss_before,
            chrys_simd_name());
    FILE *out = json ? fopen(json, "w") : stdout;
    if (!out) die(json, strerror(errno));
    fprintf(out, "{\"method\": \"chrysalis %s\", \"spec\": \"%s\", \"n\": %llu, \"d\": %u, \"nq\": %zu, \"nlist\": %u, "
                 "\"build_s\": %.3f, \"build_threads\": %d, \"disk_bytes\": %lld, \"rss_load_bytes\": %ld, "
                 "\"memory_bytes\": %llu, \"vector_bytes\": %llu, \"simd\": \"%s\", \"runs\": [",
            li.spec, li.spec, (unsigned long long)li.count, li.dim, xq.n, li.nlist, build_s, max_t, (long long)st.st_size,
            (rss_after - rss_before) * 1024, (unsigned long long)li.memory_bytes, (unsigned long long)li.vector_bytes,
            chrys_simd_name());
    chrys_hit *hits = malloc(xq.n * 10 * sizeof *hits);
    int first = 1;
    for (const char *p = threads; p && *p;) {
        int t = atoi(p);
        openblas_set_num_threads(t);
        for (const char *q = nprobes; q && *q;) {
            long np = atol(q);
            q = strchr(q, ',');
            if (q) q++;
            if (li.kind != CHRYS_INDEX_IVF && np != atol(nprobes)) continue; /* Flat: one point */
            if (li.kind == CHRYS_INDEX_IVF && np > (long)li.nlist) continue;
            chrys_search_opts so;
            chrys_search_opts_init(&so);
            so.k = 10;
            so.nprobe = (uint32_t)np;
            so.n_threads = (uint32_t)t;
            double best = bk_time_search(ix, xq.n, xq.data, &so, hits, "bench_ivf_sq8");
            size_t found = 0;
            for (size_t i = 0; i < xq.n; i++)
                for (int j = 0; j < 10; j++)
                    for (int g = 0; g < 10; g++)
                        if (hits[i * 10 + j].id == (uint64_t)gt[i * gk + g]) {
                            found++;
                            break;
                        }
            double recall = (double)found / (10.0 * xq.n);
            fprintf(out, "%s\n  {\"threads\": %d, \"nprobe\": %ld, \"search_s\": %.6f, \"qps\": %.1f, \"recall10\": %.4f}",
                    first ? "" : ",", t, li.kind == CHRYS_INDEX_IVF ? np : 0, best, xq.n / best, recall);
            fflush(out);
            fprintf(stderr, "  %s T%d nprobe %ld: %.0f QPS, recall@10 %.4f\n", li.spec, t, np, xq.n / best, recall);
            first = 0;
        }
        p = strchr(p, ',');
        if (p) p++;
    }
    fprintf(out, "\n]}\n");
    if (json) fclose(out);
    free(hits);
    free(gt);
    chrys_index_free(ix);
    vecset_free(&xq);
    return 0;
}

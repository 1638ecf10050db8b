/*
 * bench_hnsw.c: libchrysalis HNSW as an external backend of ../shared/tools/anchors.py
 * (`--cli NAME=COMMAND`), with the protocol of ../shared/tools/hnswlib_native.cpp so the two
 * run side by side: same M, same ef_construction, the same ef_search sweep.
 *
 *   bench_hnsw --base B.fvecs --query Q.fvecs --k K --threads T1,T2 --out DIR
 *              [--M 16] [--efc 200] [--efs 10,16,...] [--sq8] [--rflat] [--mmap] [--save FILE]
 *
 * Build: every vector in one chrys_index_add on the largest thread count (build_s). Search: for
 * each thread count and ef, all queries in one chrys_index_search call (the library splits them
 * over the workers); the fastest of up to three runs counts. index_bytes is the library's own
 * memory_bytes (vectors, graph, ids, id map). --mmap saves the index under --out, frees it and
 * searches it opened with chrys_index_open_mmap (rows left in the file; rss_growth_mb is then the
 * growth from opening it). --save FILE keeps the index; --load FILE searches a
 * saved one instead of building (for quick search-only comparisons).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../cli/cli.h"
#include "backend.h"
#include "chrysalis.h"

#define now bk_now
#define rss_kb bk_rss_kb
static void die(const char *what, const char *msg) { bk_die("bench_hnsw", what, msg); }

int main(int argc, char **argv)
{
    const char *base = NULL, *query = NULL, *out = NULL, *threads = "1", *save = NULL, *load = NULL;
    const char *efs = "10,16,24,32,48,64,96,128,192,256,384,512";
    long k = 10, M = 16, efc = 200;
    int sq8 = 0, rflat = 0, use_mmap = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sq8")) {
            sq8 = 1;
            continue;
        }
        if (!strcmp(argv[i], "--rflat")) {
            sq8 = rflat = 1;
            continue;
        }
        if (!strcmp(argv[i], "--mmap")) { /* build, save next to --out, search the store opened with mmap */
            use_mmap = 1;
            continue;
        }
        if (i + 1 >= argc) die("usage", "bench_hnsw --base B --query Q --k K --threads T --out DIR [--M 16] [--efc 200] [--efs LIST] [--sq8] [--rflat]");
        const char *a = argv[i], *v = argv[++i];
        if (!strcmp(a, "--base")) base = v;
        else if (!strcmp(a, "--query")) query = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--threads")) threads = v;
        else if (!strcmp(a, "--k")) k = strtol(v, NULL, 10);
        else if (!strcmp(a, "--M")) M = strtol(v, NULL, 10);
        else if (!strcmp(a, "--efc")) efc = strtol(v, NULL, 10);
        else if (!strcmp(a, "--efs")) efs = v;
        else if (!strcmp(a, "--save")) save = v;
        else if (!strcmp(a, "--load")) load = v; /* search a saved index (build_s is then the load time) */
        else if (!strcmp(a, "--budget")) (void)v;
        else die("unknown option", a);
    }
    if (!base || !query || !out) die("usage", "need --base, --query and --out");
    vecset xb, xq;
    char err[512], note[256];
    if (vecset_read(base, FMT_FVECS, 0, &xb, err, sizeof err, note, sizeof note)) die(base, err);
    if (vecset_read(query, FMT_FVECS, 0, &xq, err, sizeof err, note, sizeof note)) die(query, err);
    char spec[64];
    snprintf(spec, sizeof spec, "HNSW%ld%s", M, rflat ? ",SQ8,RFlat" : sq8 ? ",SQ8" : "");
    int max_t = bk_max_threads(threads);
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = xb.dim;
    o.metric = CHRYS_METRIC_IP; /* anchors.py hands over unit vectors: inner product = cosine */
    o.spec = spec;
    o.ef_construction = (uint32_t)efc;
    o.build_threads = (uint32_t)max_t;
    chrys_index *ix = NULL;
    char *msg = NULL;
    if (chrys_index_new(&o, &ix, &msg)) die(spec, msg);
    uint64_t *ids = malloc(xb.n * sizeof *ids);
    for (size_t i = 0; i < xb.n; i++) ids[i] = i;
    long rss0 = rss_kb();
    double t0 = now();
    if (load) {
        chrys_index_free(ix);
        if (chrys_index_load(load, &ix, &msg)) die(load, msg);
    } else if (chrys_index_add(ix, xb.n, ids, xb.data, NULL)) {
        die("add", chrys_index_errmsg(ix));
    }
    double build_s = now() - t0;
    long rss1 = rss_kb();
    char mpath[4096];
    if (use_mmap) { /* memory is then what the opened index holds, the rows staying in the file */
        snprintf(mpath, sizeof mpath, "%s/index.chrys", out);
        if (chrys_index_save(ix, mpath, &msg)) die(mpath, msg);
        chrys_index_free(ix);
        rss0 = rss_kb();
        if (chrys_index_open_mmap(mpath, &ix, &msg)) die(mpath, msg);
        rss1 = rss_kb();
    }
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(ix, &info);
    fprintf(stderr, "bench_hnsw: %s efc %ld on %zu x %u: build %.2f s on %d threads, %.1f MB (vectors %.1f MB)%s, max level %d, SIMD %s\n",
            info.spec, efc, xb.n, xb.dim, build_s, max_t, info.memory_bytes / 1e6, info.vector_bytes / 1e6,
            use_mmap ? ", opened with mmap" : "", info.max_level, chrys_simd_name());
    if (save && chrys_index_save(ix, save, &msg)) die(save, msg);
    char path[4096];
    snprintf(path, sizeof path, "%s/result.json", out);
    FILE *rj = fopen(path, "w");
    if (!rj) die(path, strerror(errno));
    fprintf(rj, "{\"build_s\": %.6f, \"build_threads\": %d, \"index_bytes\": %llu, \"vector_bytes\": %llu, \"spec\": \"%s\", \"runs\": [",
            build_s, max_t, (unsigned long long)info.memory_bytes, (unsigned long long)info.vector_bytes, info.spec);
    chrys_hit *hits = malloc(xq.n * (size_t)k * sizeof *hits);
    int first = 1;
    for (const char *p = threads; p && *p;) {
        int t = atoi(p);
        for (const char *e = efs; e && *e;) {
            long ef = atol(e);
            chrys_search_opts so;
            chrys_search_opts_init(&so);
            so.k = (uint32_t)k;
            so.ef_search = (uint32_t)ef;
            so.n_threads = (uint32_t)t;
            double best = bk_time_search(ix, xq.n, xq.data, &so, hits, "bench_hnsw");
            char name[64];
            snprintf(name, sizeof name, "ids_%d_%ld.ivecs", t, ef);
            bk_write_ids(out, name, hits, xq.n, k);
            fprintf(rj, "%s\n {\"param\": %ld, \"threads\": %d, \"search_s\": %.6f, \"nq\": %zu, \"ids\": \"ids_%d_%ld.ivecs\", \"rss_growth_mb\": %.1f}",
                    first ? "" : ",", ef, t, best, xq.n, t, ef, (rss1 - rss0) / 1024.0);
            first = 0;
            e = strchr(e, ',');
            if (e) e++;
        }
        p = strchr(p, ',');
        if (p) p++;
    }
    fprintf(rj, "\n]}\n");
    fclose(rj);
    if (use_mmap) { /* what the searches made resident: anonymous (the index) and file pages (rows read) */
        FILE *st = fopen("/proc/self/status", "r");
        char line[256];
        while (st && fgets(line, sizeof line, st))
            if (!strncmp(line, "RssAnon:", 8) || !strncmp(line, "RssFile:", 8)) fprintf(stderr, "bench_hnsw: after the searches %s", line);
        if (st) fclose(st);
        chrys_index_free(ix);
        ix = NULL;
        unlink(mpath);
    }
    free(hits);
    free(ids);
    chrys_index_free(ix);
    vecset_free(&xb);
    vecset_free(&xq);
    return 0;
}

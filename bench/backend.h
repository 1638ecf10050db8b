/*
 * backend.h: what the anchors.py external backends (bench_ivf.c, bench_hnsw.c) share: timing,
 * the thread-list flag, the fastest-of-three batched search, and the ids file anchors.py reads.
 */
#ifndef CHRYS_BENCH_BACKEND_H
#define CHRYS_BENCH_BACKEND_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chrysalis.h"

static inline double bk_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline void bk_die(const char *prog, const char *what, const char *msg)
{
    fprintf(stderr, "%s: %s: %s\n", prog, what, msg);
    exit(1);
}

/* Resident memory of this process in KiB (-1 if unknown). */
static inline long bk_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) v = atol(line + 6);
    if (f) fclose(f);
    return v;
}

/* The largest entry of a comma-separated list ("1,2" -> 2). */
static inline int bk_max_threads(const char *list)
{
    int m = 1;
    for (const char *p = list; p && *p;) {
        int t = atoi(p);
        if (t > m) m = t;
        p = strchr(p, ',');
        if (p) p++;
    }
    return m;
}

/* All queries in one call; the fastest of up to three runs (stop early once one takes > 2 s). */
static inline double bk_time_search(const chrys_index *ix, size_t nq, const float *q, const chrys_search_opts *so,
                                    chrys_hit *hits, const char *prog)
{
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double s0 = bk_now();
        if (chrys_index_search(ix, nq, q, so, hits)) bk_die(prog, "search", "failed");
        double s = bk_now() - s0;
        if (s < best) best = s;
        if (s > 2.0) break;
    }
    return best;
}

/* DIR/NAME as ivecs: nq rows of k ids (-1 for an empty slot). */
static inline void bk_write_ids(const char *dir, const char *name, const chrys_hit *hits, size_t nq, long k)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    for (size_t i = 0; f && i < nq; i++) {
        int32_t row[1 + 1024];
        row[0] = (int32_t)k;
        for (long j = 0; j < k && j < 1024; j++) row[j + 1] = hits[i * k + j].id == CHRYS_NO_ID ? -1 : (int32_t)hits[i * k + j].id;
        fwrite(row, 4, (size_t)k + 1, f);
    }
    if (f) fclose(f);
}

#endif

/*
 * bench_anchor.c: libchrysalis Flat search as an external backend of ../shared/tools/anchors.py.
 *
 *   bench_anchor --base B.fvecs --query Q.fvecs --k K --threads T1,T2 --out DIR [--budget S]
 *                [--batch-reps N] [--no-single]
 *
 * anchors.py gives unit vectors; we build a cosine Flat index over them (ids = row numbers) and,
 * for each thread count T (OpenBLAS is set to T threads too, so sgemm and our workers agree):
 *  - batch: every query in one chrys_index_search call; a short warm-up, then up to three timed
 *    runs (stopping once they took budget/2 seconds, as anchors.py's timed_batch does), median
 *    (--batch-reps N: exactly N runs, for profiling);
 *  - single: a loop of one-query calls (at least 10, until the budget is spent); median, p99, mean
 *    (--no-single skips it).
 * Writes DIR/ids_T.ivecs (nq x k row ids, -1 for padding), DIR/single_ids_T.ivecs (the ids of the
 * one-query calls, for the queries the latency loop reached; used by exact_check.py) and
 * DIR/result.json (see anchors.py).
 * Progress and notes go to stderr.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chrysalis.h"
#include "../cli/cli.h"

void openblas_set_num_threads(int);

#define MAX_T 16
#define MAX_REPS 1000

static void die(const char *what, int rc, const char *msg)
{
    fprintf(stderr, "bench_anchor: %s: %s%s%s\n", what, chrys_errstr(rc), msg && *msg ? ": " : "",
            msg ? msg : "");
    exit(1);
}

static int cmp_double(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

/* numpy.percentile (linear interpolation) of a sorted array. */
static double percentile(const double *s, size_t n, double p)
{
    if (n == 0) return 0;
    double pos = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)pos;
    if (lo + 1 >= n) return s[n - 1];
    return s[lo] + (pos - (double)lo) * (s[lo + 1] - s[lo]);
}

static void read_set(const char *path, vecset *v)
{
    char err[512] = "", note[256] = "";
    int rc = vecset_read(path, FMT_FVECS, 0, v, err, sizeof err, note, sizeof note);
    if (rc) die(path, rc, err);
    if (*note) fprintf(stderr, "bench_anchor: %s\n", note);
}

static void write_ivecs(const char *path, const chrys_hit *hits, size_t nq, uint32_t k)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "bench_anchor: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    int32_t *row = malloc((k + 1) * sizeof *row);
    if (!row) die("ivecs", CHRYS_NOMEM, NULL);
    row[0] = (int32_t)k;
    for (size_t i = 0; i < nq; i++) {
        for (uint32_t j = 0; j < k; j++) {
            uint64_t id = hits[i * k + j].id;
            row[j + 1] = id == CHRYS_NO_ID ? -1 : (int32_t)id;
        }
        if (fwrite(row, sizeof *row, k + 1, f) != k + 1) {
            fprintf(stderr, "bench_anchor: %s: short write\n", path);
            exit(1);
        }
    }
    free(row);
    if (fclose(f)) {
        fprintf(stderr, "bench_anchor: %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

typedef struct run_result {
    unsigned threads;
    size_t nq, single_nq;
    double search_s, lat_median, lat_p99, lat_mean;
    int batch_runs;
} run_result;

static void usage(void)
{
    fprintf(stderr, "usage: bench_anchor --base B.fvecs --query Q.fvecs --k K --threads T1,T2 --out DIR "
                    "[--budget S] [--batch-reps N] [--no-single]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *base_path = NULL, *query_path = NULL, *out_dir = NULL, *threads_arg = "1";
    long k = 10;
    double budget = 8.0;
    int batch_reps = 0, single = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-single")) {
            single = 0;
            continue;
        }
        if (i + 1 >= argc) usage();
        const char *a = argv[i], *v = argv[++i];
        if (!strcmp(a, "--base")) base_path = v;
        else if (!strcmp(a, "--query")) query_path = v;
        else if (!strcmp(a, "--out")) out_dir = v;
        else if (!strcmp(a, "--threads")) threads_arg = v;
        else if (!strcmp(a, "--k")) k = strtol(v, NULL, 10);
        else if (!strcmp(a, "--budget")) budget = strtod(v, NULL);
        else if (!strcmp(a, "--batch-reps")) batch_reps = atoi(v);
        else usage();
    }
    if (!base_path || !query_path || !out_dir || k < 1 || k > CHRYS_MAX_K || !(budget > 0) || batch_reps < 0 ||
        batch_reps > MAX_REPS)
        usage();

    unsigned threads[MAX_T];
    size_t n_threads = 0;
    for (const char *p = threads_arg; *p && n_threads < MAX_T;) {
        char *end;
        long t = strtol(p, &end, 10);
        if (end == p || t < 1 || t > 256) usage();
        threads[n_threads++] = (unsigned)t;
        p = *end == ',' ? end + 1 : end;
    }
    if (n_threads == 0) usage();

    vecset base, query;
    read_set(base_path, &base);
    read_set(query_path, &query);
    if (base.dim != query.dim) die("query", CHRYS_DIM, "base and query dimensions differ");
    size_t nb = base.n, nq = query.n;
    uint32_t dim = base.dim;
    fprintf(stderr, "bench_anchor: libchrysalis %s, SIMD %s, N=%zu d=%u nq=%zu k=%ld\n", chrys_version(),
            chrys_simd_name(), nb, dim, nq, k);

    /* Build. */
    unsigned max_t = threads[0];
    for (size_t i = 1; i < n_threads; i++)
        if (threads[i] > max_t) max_t = threads[i];
    openblas_set_num_threads((int)max_t);
    uint64_t *ids = malloc(nb * sizeof *ids);
    if (!ids) die("ids", CHRYS_NOMEM, NULL);
    for (size_t i = 0; i < nb; i++) ids[i] = i;
    chrys_index_opts io;
    chrys_index_opts_init(&io);
    io.dim = dim;
    io.metric = CHRYS_METRIC_COSINE;
    io.kind = CHRYS_INDEX_FLAT; /* exact search: this benchmark is about Flat, whatever the default */
    chrys_index *ix;
    char *errmsg = NULL;
    double t0 = now_seconds();
    int rc = chrys_index_new(&io, &ix, &errmsg);
    if (rc) die("chrys_index_new", rc, errmsg);
    rc = chrys_index_add(ix, nb, ids, base.data, NULL);
    if (rc) die("chrys_index_add", rc, chrys_index_errmsg(ix));
    double build_s = now_seconds() - t0;
    free(ids);
    vecset_free(&base);
    chrys_index_info info = {.struct_size = sizeof info};
    chrys_index_get_info(ix, &info);
    if (info.kind != CHRYS_INDEX_FLAT) die("chrys_index_new", CHRYS_INVALID, "index is not Flat");

    /* Search. */
    chrys_hit *hits = malloc(nq * (size_t)k * sizeof *hits);
    chrys_hit *one = malloc((nq ? nq : 1) * (size_t)k * sizeof *one);
    double *lat = malloc((nq ? nq : 1) * sizeof *lat);
    if (!hits || !one || !lat) die("search buffers", CHRYS_NOMEM, NULL);
    run_result res[MAX_T];
    for (size_t ti = 0; ti < n_threads; ti++) {
        unsigned T = threads[ti];
        run_result *r = &res[ti];
        memset(r, 0, sizeof *r);
        r->threads = T;
        r->nq = nq;
        openblas_set_num_threads((int)T);
        chrys_search_opts so;
        chrys_search_opts_init(&so);
        so.k = (uint32_t)k;
        so.n_threads = T;

        /* Batch: warm-up on a slice, then up to 3 timed runs, median. */
        size_t warm = nq < 64 ? nq : 64;
        if ((rc = chrys_index_search(ix, warm, query.data, &so, hits))) die("search", rc, NULL);
        static double times[MAX_REPS];
        double spent = 0;
        int runs = 0;
        while (runs < (batch_reps ? batch_reps : 3)) {
            t0 = now_seconds();
            if ((rc = chrys_index_search(ix, nq, query.data, &so, hits))) die("search", rc, NULL);
            times[runs] = now_seconds() - t0;
            spent += times[runs++];
            if (!batch_reps && spent > budget / 2) break;
        }
        qsort(times, (size_t)runs, sizeof *times, cmp_double);
        r->search_s = runs == 2 ? 0.5 * (times[0] + times[1]) : times[runs / 2];
        r->batch_runs = runs;
        char path[4096];
        snprintf(path, sizeof path, "%s/ids_%u.ivecs", out_dir, T);
        write_ivecs(path, hits, nq, (uint32_t)k);

        /* Single-query latency: a loop of one-query calls. */
        double start = now_seconds(), sum = 0;
        size_t m = 0;
        for (size_t i = 0; single && i < nq; i++) {
            t0 = now_seconds();
            if ((rc = chrys_index_search(ix, 1, query.data + i * dim, &so, one + i * (size_t)k)))
                die("search", rc, NULL);
            double t1 = now_seconds();
            lat[m++] = (t1 - t0) * 1e3;
            sum += t1 - t0;
            if (t1 - start > budget && m >= 10) break;
        }
        snprintf(path, sizeof path, "%s/single_ids_%u.ivecs", out_dir, T);
        write_ivecs(path, one, m, (uint32_t)k);
        qsort(lat, m, sizeof *lat, cmp_double);
        r->single_nq = m;
        r->lat_median = percentile(lat, m, 50);
        r->lat_p99 = percentile(lat, m, 99);
        r->lat_mean = m ? sum * 1e3 / (double)m : 0;
        fprintf(stderr, "bench_anchor: T=%u batch %.4f s (%d runs, %.1f QPS); single median %.3f ms p99 %.3f ms (%zu q)\n",
                T, r->search_s, runs, (double)nq / r->search_s, r->lat_median, r->lat_p99, m);
    }

    char path[4096];
    snprintf(path, sizeof path, "%s/result.json", out_dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench_anchor: %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(f, "{\"build_s\": %.6f, \"build_threads\": %u, \"index_bytes\": %llu, \"simd\": \"%s\", \"runs\": [",
            build_s, max_t, (unsigned long long)info.memory_bytes, chrys_simd_name());
    for (size_t ti = 0; ti < n_threads; ti++) {
        const run_result *r = &res[ti];
        fprintf(f,
                "%s\n {\"param\": \"flat\", \"threads\": %u, \"search_s\": %.6f, \"nq\": %zu, "
                "\"ids\": \"ids_%u.ivecs\", \"batch_runs\": %d, \"lat_ms_median\": %.6f, \"lat_ms_p99\": %.6f, "
                "\"lat_ms_mean\": %.6f, \"single_qps\": %.3f, \"single_nq\": %zu, "
                "\"single_ids\": \"single_ids_%u.ivecs\"}",
                ti ? "," : "", r->threads, r->search_s, r->nq, r->threads, r->batch_runs, r->lat_median,
                r->lat_p99, r->lat_mean, r->lat_mean > 0 ? 1e3 / r->lat_mean : 0.0, r->single_nq, r->threads);
    }
    fprintf(f, "\n]}\n");
    if (fclose(f)) {
        fprintf(stderr, "bench_anchor: %s: %s\n", path, strerror(errno));
        return 1;
    }
    free(hits);
    free(one);
    free(lat);
    vecset_free(&query);
    chrys_index_free(ix);
    return 0;
}

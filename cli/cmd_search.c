/*
 * cmd_search.c: `chrysalis search STORE QUERIES`.
 *
 * Human output: per query a ranked table. --json: one JSON object per query and line,
 *   {"query": 0, "hits": [{"id": 12, "score": 0.93, "meta": {...}}, ...]}
 * (meta only with --meta). Scores are the true quantity of the store's metric.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *HELP_SEARCH =
    "usage: chrysalis search STORE QUERIES [options]\n"
    "\n"
    "For each query vector, print the k most similar stored vectors, best first (ties: smaller id).\n"
    "Scores: cosine similarity (cosine stores), inner product (ip) or squared L2 distance (l2).\n"
    "\n"
    "options:\n"
    "  -k N                   results per query (default 10)\n"
    "  --threshold T          only hits with score >= T (cosine, ip) or <= T (l2)\n"
    "  --json                 one JSON object per query\n"
    "  --meta                 include stored metadata (with --json)\n"
    "  --threads N            worker threads, 0..256 (default 0: all cores)\n"
    "  --nprobe N             IVF stores: lists searched (default nlist/16; more = higher recall)\n"
    "  --ef N                 HNSW stores: candidates kept during the walk (default 64, at least k;\n"
    "                         more = higher recall, slower)\n"
    "  --mmap                 open the store read-only with its float32 rows left in the file\n"
    "                         (fast open; with SQ8,RFlat specs memory holds only the codes)\n"
    "  --format F, --dim D    query input format, as for build (--dim: raw input, 1..16384)\n";

typedef struct search_args {
    chrys_search_opts so;
    int json, with_meta, fmt, use_mmap;
    long dim;
    const char *store, *qpath;
} search_args;

/* Options into *sa; -1 to go on, else the exit code. */
static int search_options(int argc, char **argv, search_args *sa)
{
    chrys_search_opts_init(&sa->so);
    long k = sa->so.k;
    double threshold = NAN;
    const cli_opt tab[] = {
        {NULL, 'k', OPT_LONG, &k, 1, CHRYS_MAX_K},
        {"threshold", 0, OPT_DOUBLE, &threshold, -INFINITY, INFINITY, "a number"},
        OPT_JSON(&sa->json),
        {"meta", 0, OPT_FLAG, &sa->with_meta},
        OPT_THREADS,
        {"nprobe", 0, OPT_STRING, NULL, .cfg = "nprobe"},
        {"ef", 0, OPT_STRING, NULL, .cfg = "ef_search"},
        {"mmap", 0, OPT_FLAG, &sa->use_mmap},
        OPT_FORMAT(&sa->fmt),
        OPT_DIM(&sa->dim),
        {0},
    };
    int npos, code = opts_run(tab, argc, argv, HELP_SEARCH, NULL, &npos);
    if (code >= 0) return code;
    if (npos != 2) {
        cli_error("search: need STORE and QUERIES");
        fputs(HELP_SEARCH, stderr);
        return EXIT_USAGE;
    }
    sa->so.k = (uint32_t)k;
    if (!isnan(threshold)) {
        sa->so.threshold = (float)threshold;
        sa->so.use_threshold = 1;
    }
    sa->so.nprobe = (uint32_t)cfg_uint("nprobe");
    sa->so.ef_search = (uint32_t)cfg_uint("ef_search");
    sa->so.n_threads = (uint32_t)cfg_uint("threads");
    sa->store = argv[1];
    sa->qpath = argv[2];
    return -1;
}

/* Search every query, in chunks (the progress bar moves between them). */
static int search_all(const chrys_index *ix, const search_args *sa, const vecset *qs, chrys_hit *hits)
{
    progress pb;
    progress_start(&pb, "search", qs->n);
    size_t chunk = qs->n > 4096 ? 4096 : qs->n;
    for (size_t i = 0; i < qs->n; i += chunk) {
        size_t m = qs->n - i < chunk ? qs->n - i : chunk;
        int rc = chrys_index_search(ix, m, qs->data + i * qs->dim, &sa->so, hits + i * sa->so.k);
        if (rc) {
            progress_end(&pb);
            chrys_error_info ei = {sizeof ei};
            chrys_index_get_error_info(ix, &ei);
            if ((rc & 0xff) == CHRYS_CORRUPT) /* a mapped store's rows, checked by this first search */
                cli_error("%s", chrys_index_errmsg(ix)[0] ? chrys_index_errmsg(ix) : chrys_errstr(rc));
            else if (ei.code == rc && ei.record >= 0) /* the library names the query row of the chunk */
                cli_error("%s: query %zu: %s", sa->qpath, i + (size_t)ei.record, ei.reason);
            else { /* the search's own message (this thread's), where it left one */
                const char *why = ei.code == rc ? ei.message : chrys_index_errmsg(ix);
                cli_error("%s: queries %zu..%zu: %s (zero query vector under cosine?)", sa->qpath, i, i + m - 1,
                          why[0] ? why : chrys_errstr(rc));
            }
            return cli_exit_for(rc);
        }
        progress_update(&pb, i + m);
    }
    progress_end(&pb);
    return EXIT_OK;
}

static void print_hits(const chrys_index *ix, const search_args *sa, const vecset *qs, const chrys_hit *hits)
{
    uint32_t k = sa->so.k;
    for (size_t q = 0; q < qs->n; q++) {
        const chrys_hit *h = hits + q * k;
        if (sa->json) {
            printf("{\"query\":%zu", q);
            if (qs->ids) printf(",\"query_id\":%llu", (unsigned long long)qs->ids[q]);
            printf(",\"hits\":[");
            for (uint32_t j = 0; j < k && h[j].id != CHRYS_NO_ID; j++) {
                printf("%s{\"id\":%llu,\"score\":%.9g", j ? "," : "", (unsigned long long)h[j].id, (double)h[j].score);
                const char *m = NULL;
                if (sa->with_meta && chrys_index_get_meta(ix, h[j].id, &m) == CHRYS_OK && m) printf(",\"meta\":%s", m);
                printf("}");
            }
            printf("]}\n");
        } else {
            printf("query %zu", q);
            if (qs->ids) printf(" (id %llu)", (unsigned long long)qs->ids[q]);
            printf("\n");
            if (h[0].id == CHRYS_NO_ID) printf("  (no hits)\n");
            for (uint32_t j = 0; j < k && h[j].id != CHRYS_NO_ID; j++)
                printf("  %3u  id %-12llu score %.6f\n", j + 1, (unsigned long long)h[j].id, (double)h[j].score);
        }
    }
}

int cmd_search(int argc, char **argv)
{
    search_args sa = {.fmt = FMT_AUTO};
    int code = search_options(argc, argv, &sa);
    if (code >= 0) return code;
    cli_set_threads(sa.so.n_threads);
    chrys_index *ix = NULL;
    char *msg = NULL, err[512], note[256];
    vecset qs = {0};
    chrys_hit *hits = NULL;
    /* mapped: the rows are checked by the search that reads them (one pass over them, not two) */
    int rc = sa.use_mmap ? chrys_index_open_mmap_ex(sa.store, CHRYS_MMAP_CHECK_ON_USE, &ix, &msg)
                         : chrys_index_load(sa.store, &ix, &msg);
    if (rc) {
        cli_error("%s", msg ? msg : chrys_errstr(rc));
        chrys_free(msg);
        return cli_exit_for(rc);
    }
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(ix, &info);
    code = EXIT_OK;
    if ((rc = vecset_read(sa.qpath, (vec_format)sa.fmt, (uint32_t)sa.dim, &qs, err, sizeof err, note, sizeof note))) {
        cli_error("%s", err);
        code = cli_exit_for(rc);
        goto done;
    }
    if (note[0]) fprintf(stderr, "chrysalis: note: %s\n", note);
    if (qs.dim != info.dim) {
        cli_error("%s: queries have dimension %u but %s has %u", sa.qpath, qs.dim, sa.store, info.dim);
        code = EXIT_DATA;
        goto done;
    }
    if (!(hits = malloc(qs.n * sa.so.k * sizeof *hits))) {
        cli_error("out of memory for %zu x %u results", qs.n, sa.so.k);
        code = EXIT_FAIL;
        goto done;
    }
    if (!(code = search_all(ix, &sa, &qs, hits))) print_hits(ix, &sa, &qs, hits);
done:
    free(hits);
    vecset_free(&qs);
    chrys_free(msg);
    chrys_index_free(ix);
    return code;
}

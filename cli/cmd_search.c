/*
 * cmd_search.c: `chrysalis search STORE QUERIES`.
 *
 * Human output: per query a ranked table. --json: one JSON object per query and line,
 *   {"query": 0, "hits": [{"id": 12, "score": 0.93, "meta": {...}}, ...]}
 * (meta only with --meta). Scores are the true quantity of the store's metric.
 */
#include <cJSON.h>
#include <getopt.h>
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
    "  --threads N            worker threads (default: all cores)\n"
    "  --nprobe N             IVF stores: lists searched (default nlist/16; more = higher recall)\n"
    "  --ef N                 HNSW stores: candidates kept during the walk (default 64, at least k;\n"
    "                         more = higher recall, slower)\n"
    "  --mmap                 open the store read-only with its float32 rows left in the file\n"
    "                         (fast open; with SQ8,RFlat specs memory holds only the codes)\n"
    "  --format F, --dim D    query input format, as for build\n";

int cmd_search(int argc, char **argv)
{
    static const struct option opts[] = {{"threshold", required_argument, 0, 't'},
                                         {"json", no_argument, 0, 'j'},
                                         {"meta", no_argument, 0, 'M'},
                                         {"threads", required_argument, 0, 'T'},
                                         {"nprobe", required_argument, 0, 'P'},
                                         {"ef", required_argument, 0, 'E'},
                                         {"mmap", no_argument, 0, 'm'},
                                         {"format", required_argument, 0, 'f'},
                                         {"dim", required_argument, 0, 'd'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.nprobe = (uint32_t)cfg_uint("nprobe");
    so.ef_search = (uint32_t)cfg_uint("ef_search");
    so.n_threads = (uint32_t)cfg_uint("threads");
    int json = 0, with_meta = 0, fmt = FMT_AUTO, use_mmap = 0, c;
    long dim = 0;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "k:h", opts, NULL)) != -1) {
        switch (c) {
        case 'k': {
            long k = strtol(optarg, &end, 10);
            if (*end || k < 1 || k > CHRYS_MAX_K) {
                cli_error("-k: expected 1..%d, got '%s'", CHRYS_MAX_K, optarg);
                return EXIT_USAGE;
            }
            so.k = (uint32_t)k;
            break;
        }
        case 't':
            so.threshold = strtof(optarg, &end);
            if (*end || !isfinite(so.threshold)) {
                cli_error("--threshold: expected a number, got '%s'", optarg);
                return EXIT_USAGE;
            }
            so.use_threshold = 1;
            break;
        case 'j': json = 1; break;
        case 'm': use_mmap = 1; break;
        case 'M': with_meta = 1; break;
        case 'T': {
            long t = strtol(optarg, &end, 10);
            if (*end || t < 1 || t > 256) {
                cli_error("--threads: expected 1..256, got '%s'", optarg);
                return EXIT_USAGE;
            }
            so.n_threads = (uint32_t)t;
            break;
        }
        case 'P':
            if (cfg_set_flag("nprobe", optarg, "--nprobe")) return EXIT_USAGE;
            so.nprobe = (uint32_t)cfg_uint("nprobe");
            break;
        case 'E':
            if (cfg_set_flag("ef_search", optarg, "--ef")) return EXIT_USAGE;
            so.ef_search = (uint32_t)cfg_uint("ef_search");
            break;
        case 'f':
            if ((fmt = vec_format_parse(optarg)) < 0) {
                cli_error("--format: expected fvecs, npy, raw, jsonl or auto, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'd': dim = strtol(optarg, NULL, 10); break;
        case 'h': fputs(HELP_SEARCH, stdout); return EXIT_OK;
        default: fputs(HELP_SEARCH, stderr); return EXIT_USAGE;
        }
    }
    if (argc - optind != 2) {
        cli_error("search: need STORE and QUERIES");
        fputs(HELP_SEARCH, stderr);
        return EXIT_USAGE;
    }
    const char *store = argv[optind], *qpath = argv[optind + 1];
    cli_set_threads(so.n_threads);
    chrys_index *ix = NULL;
    char *msg = NULL, err[512], note[256];
    vecset qs = {0};
    chrys_hit *hits = NULL;
    int rc, code = EXIT_OK;
    if ((rc = use_mmap ? chrys_index_open_mmap(store, &ix, &msg) : chrys_index_load(store, &ix, &msg))) {
        cli_error("%s", msg ? msg : chrys_errstr(rc));
        chrys_free(msg);
        return cli_exit_for(rc);
    }
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(ix, &info);
    if ((rc = vecset_read(qpath, (vec_format)fmt, (uint32_t)dim, &qs, err, sizeof err, note, sizeof note))) {
        cli_error("%s", err);
        code = cli_exit_for(rc);
        goto done;
    }
    if (note[0]) fprintf(stderr, "chrysalis: note: %s\n", note);
    if (qs.dim != info.dim) {
        cli_error("%s: queries have dimension %u but %s has %u", qpath, qs.dim, store, info.dim);
        code = EXIT_DATA;
        goto done;
    }
    if (!(hits = malloc(qs.n * so.k * sizeof *hits))) {
        cli_error("out of memory for %zu x %u results", qs.n, so.k);
        code = EXIT_FAIL;
        goto done;
    }
    progress pb;
    progress_start(&pb, "search", qs.n);
    size_t chunk = qs.n > 4096 ? 4096 : qs.n;
    for (size_t i = 0; i < qs.n; i += chunk) {
        size_t m = qs.n - i < chunk ? qs.n - i : chunk;
        if ((rc = chrys_index_search(ix, m, qs.data + i * qs.dim, &so, hits + i * so.k))) {
            progress_end(&pb);
            cli_error("%s: queries %zu..%zu: %s (zero query vector under cosine?)", qpath, i, i + m - 1,
                      chrys_errstr(rc));
            code = cli_exit_for(rc);
            goto done;
        }
        progress_update(&pb, i + m);
    }
    progress_end(&pb);
    for (size_t q = 0; q < qs.n; q++) {
        const chrys_hit *h = hits + q * so.k;
        if (json) {
            printf("{\"query\":%zu", q);
            if (qs.ids) printf(",\"query_id\":%llu", (unsigned long long)qs.ids[q]);
            printf(",\"hits\":[");
            for (uint32_t j = 0; j < so.k && h[j].id != CHRYS_NO_ID; j++) {
                printf("%s{\"id\":%llu,\"score\":%.9g", j ? "," : "", (unsigned long long)h[j].id,
                       (double)h[j].score);
                const char *m = NULL;
                if (with_meta && chrys_index_get_meta(ix, h[j].id, &m) == CHRYS_OK && m)
                    printf(",\"meta\":%s", m);
                printf("}");
            }
            printf("]}\n");
        } else {
            printf("query %zu", q);
            if (qs.ids) printf(" (id %llu)", (unsigned long long)qs.ids[q]);
            printf("\n");
            if (h[0].id == CHRYS_NO_ID) printf("  (no hits)\n");
            for (uint32_t j = 0; j < so.k && h[j].id != CHRYS_NO_ID; j++)
                printf("  %3u  id %-12llu score %.6f\n", j + 1, (unsigned long long)h[j].id, (double)h[j].score);
        }
    }
done:
    free(hits);
    vecset_free(&qs);
    chrys_free(msg);
    chrys_index_free(ix);
    return code;
}

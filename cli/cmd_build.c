/*
 * cmd_build.c: `chrysalis build` and `chrysalis add`.
 *
 * Both read every input fully and add it to an in-memory index before the store is written, and
 * the store is written atomically: a bad record anywhere, or a failed write, leaves the store file
 * exactly as it was (or absent, for build). Each holds STORE's writer lock (STORE.lock) from
 * before it looks at STORE until after the rename.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cli.h"

static const char *HELP_BUILD =
    "usage: chrysalis build STORE INPUT... [options]\n"
    "       chrysalis add STORE INPUT... [options]\n"
    "\n"
    "build creates STORE from the inputs; add appends them to an existing STORE.\n"
    "Inputs without ids get consecutive ids after the largest id in the store.\n"
    "\n"
    "options:\n"
    "  --metric cosine|ip|l2   distance (build only; default cosine: vectors normalised on insert)\n"
    "  --format F              fvecs|npy|raw|jsonl|auto (default auto: by extension, then content)\n"
    "  --dim D                 dimension of raw float32 input\n"
    "  --index SPEC            build: auto (default), Flat, SQ8 (int8 codes only), SQ8,RFlat,\n"
    "                          IVFFlat (nlist lists, or the planner's), IVF<nlist>,Flat,\n"
    "                          IVF<nlist>,SQ8 (int8 codes only), IVF<nlist>,SQ8,RFlat (codes + float32\n"
    "                          rows, exact re-ranking), HNSW (= HNSW32), HNSW<M>, HNSW<M>,SQ8 (codes only),\n"
    "                          HNSW<M>,SQ8,RFlat; the names Flat, IVFFlat and HNSW in any case\n"
    "  --nlist N               build: IVF lists for IVFFlat (default 0: the planner's, ~sqrt(n), when it\n"
    "                          trains at --auto-threshold vectors)\n"
    "  --sq8                   build: add int8 codes to the --index spec (HNSW32 -> HNSW32,SQ8)\n"
    "  --ef-construction N     build: HNSW candidates kept while linking (default 200)\n"
    "  --threads N             workers linking HNSW nodes (default: all cores)\n"
    "  --auto-threshold N      build: the planner's size threshold (default 1000)\n"
    "  --memory-budget BYTES   build: the planner's budget for vectors (e.g. 8G)\n"
    "  --force                 build: replace an existing STORE\n"
    "  -q, --quiet             no summary line\n"
    "  --no-wait               fail at once (exit 5) when another writer holds STORE's lock, instead\n"
    "                          of waiting for it\n";

static int parse_metric(const char *s)
{
    if (!strcmp(s, "cosine")) return CHRYS_METRIC_COSINE;
    if (!strcmp(s, "ip")) return CHRYS_METRIC_IP;
    if (!strcmp(s, "l2")) return CHRYS_METRIC_L2;
    return -1;
}

typedef struct build_progress {
    progress *pb;
    size_t base; /* rows added before the current chunk */
} build_progress;

static void on_progress(uint64_t done, uint64_t total, void *ctx)
{
    (void)total;
    build_progress *bp = ctx;
    progress_update(bp->pb, bp->base + done);
}

int cmd_build(int argc, char **argv, int is_add)
{
    static const struct option opts[] = {{"metric", required_argument, 0, 'm'},
                                         {"format", required_argument, 0, 'f'},
                                         {"dim", required_argument, 0, 'd'},
                                         {"force", no_argument, 0, 'F'},
                                         {"index", required_argument, 0, 'i'},
                                         {"nlist", required_argument, 0, 'n'},
                                         {"auto-threshold", required_argument, 0, 'a'},
                                         {"memory-budget", required_argument, 0, 'b'},
                                         {"sq8", no_argument, 0, 'S'},
                                         {"ef-construction", required_argument, 0, 'e'},
                                         {"threads", required_argument, 0, 'T'},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"no-wait", no_argument, 0, 'N'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int metric = CHRYS_METRIC_COSINE, fmt = FMT_AUTO, force = 0, quiet = 0, sq8 = 0, no_wait = 0, c;
    long dim = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            if ((metric = parse_metric(optarg)) < 0) {
                cli_error("--metric: expected cosine, ip or l2, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'f':
            if ((fmt = vec_format_parse(optarg)) < 0) {
                cli_error("--format: expected fvecs, npy, raw, jsonl or auto, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'd':
            dim = strtol(optarg, NULL, 10);
            if (dim < 1 || dim > CHRYS_MAX_DIM) {
                cli_error("--dim: expected 1..%d, got '%s'", CHRYS_MAX_DIM, optarg);
                return EXIT_USAGE;
            }
            break;
        case 'F': force = 1; break;
        case 'i':
            if (cfg_set_flag("index", optarg, "--index")) return EXIT_USAGE;
            break;
        case 'n':
            if (cfg_set_flag("nlist", optarg, "--nlist")) return EXIT_USAGE;
            break;
        case 'a':
            if (cfg_set_flag("auto_threshold", optarg, "--auto-threshold")) return EXIT_USAGE;
            break;
        case 'b':
            if (cfg_set_flag("memory_budget", optarg, "--memory-budget")) return EXIT_USAGE;
            break;
        case 'S': sq8 = 1; break;
        case 'e':
            if (cfg_set_flag("ef_construction", optarg, "--ef-construction")) return EXIT_USAGE;
            break;
        case 'T':
            if (cfg_set_flag("threads", optarg, "--threads")) return EXIT_USAGE;
            break;
        case 'q': quiet = 1; break;
        case 'N': no_wait = 1; break;
        case 'h': fputs(HELP_BUILD, stdout); return EXIT_OK;
        default: fputs(HELP_BUILD, stderr); return EXIT_USAGE;
        }
    }
    if (argc - optind < 2) {
        cli_error("%s: need STORE and at least one INPUT", is_add ? "add" : "build");
        fputs(HELP_BUILD, stderr);
        return EXIT_USAGE;
    }
    const char *store = argv[optind];
    struct stat st;
    double t0 = now_seconds();
    chrys_index *ix = NULL;
    char *msg = NULL;
    int rc, code = EXIT_OK;
    uint64_t next_id = 0;
    size_t added = 0;
    /* The writer lock, from before the store is looked at until after its rename: two builds of
     * one new store cannot both find it missing, and an add reads the last writer's store. */
    chrys_lock *lock = NULL;
    if ((code = cli_lock_store(store, no_wait, &lock))) return code;
    if (!is_add && !force && stat(store, &st) == 0) {
        cli_error("%s already exists (use 'chrysalis add' to extend it, or --force to replace it)", store);
        code = EXIT_USAGE;
        goto done;
    }
    if (is_add) {
        if ((rc = chrys_index_load(store, &ix, &msg))) {
            cli_error("%s", msg ? msg : chrys_errstr(rc));
            code = cli_exit_for(rc);
            goto done;
        }
        chrys_index_info info = {sizeof info};
        chrys_index_get_info(ix, &info);
        if (info.count) {
            uint64_t *ids = malloc(info.count * sizeof *ids);
            if (!ids) {
                cli_error("out of memory");
                code = EXIT_FAIL;
                goto done;
            }
            chrys_index_ids(ix, ids);
            for (size_t i = 0; i < info.count; i++)
                if (ids[i] + 1 > next_id) next_id = ids[i] + 1;
            free(ids);
        }
    }
    for (int a = optind + 1; a < argc; a++) {
        vecset vs;
        char err[512], note[256];
        if ((rc = vecset_read(argv[a], (vec_format)fmt, (uint32_t)dim, &vs, err, sizeof err, note, sizeof note))) {
            cli_error("%s", err);
            code = cli_exit_for(rc);
            goto done;
        }
        if (note[0]) fprintf(stderr, "chrysalis: note: %s\n", note);
        if (!ix) {
            chrys_index_opts o;
            chrys_index_opts_init(&o);
            o.dim = vs.dim;
            o.metric = (chrys_metric)metric;
            char spec[64];
            const char *eff = cfg_index_spec();
            if (!eff) {
                vecset_free(&vs);
                code = EXIT_USAGE;
                goto done;
            }
            snprintf(spec, sizeof spec, "%s", eff);
            if (sq8) { /* --sq8: HNSW32 -> HNSW32,SQ8; IVF64,Flat -> IVF64,SQ8; Flat -> SQ8 */
                char *why = NULL;
                if (chrys_index_spec_with_sq8(eff, spec, sizeof spec, &why)) {
                    cli_error("--sq8: %s", why ? why : "invalid index spec");
                    chrys_free(why);
                    vecset_free(&vs);
                    code = EXIT_USAGE;
                    goto done;
                }
            }
            o.spec = spec;
            o.auto_threshold = cfg_uint("auto_threshold");
            o.memory_budget = cfg_uint("memory_budget");
            o.ef_construction = (uint32_t)cfg_uint("ef_construction");
            o.build_threads = (uint32_t)cfg_uint("threads");
            if ((rc = chrys_index_new(&o, &ix, &msg))) {
                cli_error("%s", msg ? msg : chrys_errstr(rc));
                vecset_free(&vs);
                code = cli_exit_for(rc);
                goto done;
            }
        }
        chrys_index_info info = {sizeof info};
        chrys_index_get_info(ix, &info);
        if (vs.dim != info.dim) {
            cli_error("%s: vectors have dimension %u but the store has %u", argv[a], vs.dim, info.dim);
            vecset_free(&vs);
            code = EXIT_DATA;
            goto done;
        }
        if (!vs.ids) {
            vs.ids = malloc((vs.n ? vs.n : 1) * sizeof *vs.ids);
            if (!vs.ids) {
                cli_error("out of memory");
                vecset_free(&vs);
                code = EXIT_FAIL;
                goto done;
            }
            for (size_t i = 0; i < vs.n; i++) vs.ids[i] = next_id + i;
        }
        /* Chunked so the progress bar moves; the store is written only if every chunk succeeds. */
        progress pb;
        progress_start(&pb, is_add ? "add" : "build", vs.n);
        const size_t chunk = 16384;
        build_progress bp = {&pb, 0};
        chrys_index_set_progress(ix, on_progress, &bp); /* HNSW reports within a chunk */
        for (size_t i = 0; i < vs.n; i += chunk) {
            size_t m = vs.n - i < chunk ? vs.n - i : chunk;
            bp.base = i;
            rc = chrys_index_add(ix, m, vs.ids + i, vs.data + i * vs.dim,
                                 vs.meta ? (const char *const *)vs.meta + i : NULL);
            if (rc) {
                progress_end(&pb);
                /* The library counts rows within the chunk; report the record in the file. */
                const char *em = chrys_index_errmsg(ix);
                size_t row;
                const char *rest;
                if (sscanf(em, "row %zu:", &row) == 1 && (rest = strchr(em, ':')))
                    cli_error("%s: record %zu:%s", argv[a], i + row, rest + 1);
                else
                    cli_error("%s: %s", argv[a], em);
                vecset_free(&vs);
                code = cli_exit_for(rc);
                goto done;
            }
            progress_update(&pb, i + m);
        }
        progress_end(&pb);
        for (size_t i = 0; i < vs.n; i++)
            if (vs.ids[i] + 1 > next_id) next_id = vs.ids[i] + 1;
        added += vs.n;
        vecset_free(&vs);
    }
    if ((rc = chrys_index_save(ix, store, &msg))) {
        cli_error("%s", msg ? msg : chrys_errstr(rc));
        code = cli_exit_for(rc);
        goto done;
    }
    if (!quiet) {
        chrys_index_info info = {sizeof info};
        chrys_index_get_info(ix, &info);
        printf("%s: %s %zu vectors, %llu in store (dim %u), %.3f s\n", store, is_add ? "added" : "stored",
               added, (unsigned long long)info.count, info.dim, now_seconds() - t0);
    }
done:
    chrys_store_unlock(lock);
    chrys_free(msg);
    chrys_index_free(ix);
    return code;
}

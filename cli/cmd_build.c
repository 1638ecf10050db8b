/*
 * cmd_build.c: `chrysalis build` and `chrysalis add`.
 *
 * Both read every input fully and add it to an in-memory index before the store is written, and
 * the store is written atomically: a bad record anywhere, or a failed write, leaves the store file
 * exactly as it was (or absent, for build). Each holds STORE's writer lock (STORE.lock) from
 * before it looks at STORE until after the rename.
 */
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
    "  --dim D                 dimension of raw float32 input, 1..16384\n"
    "  --index SPEC            build: auto (default), Flat, SQ8 (int8 codes only), SQ8,RFlat,\n"
    "                          IVFFlat (nlist lists, or the planner's), IVF<nlist>,Flat,\n"
    "                          IVF<nlist>,SQ8 (int8 codes only), IVF<nlist>,SQ8,RFlat (codes + float32\n"
    "                          rows, exact re-ranking), HNSW (= HNSW32), HNSW<M>, HNSW<M>,SQ8 (codes only),\n"
    "                          HNSW<M>,SQ8,RFlat; the names Flat, IVFFlat and HNSW in any case\n"
    "  --nlist N               build: IVF lists for IVFFlat (default 0: the planner's, ~sqrt(n), when it\n"
    "                          trains at --auto-threshold vectors)\n"
    "  --sq8                   build: add int8 codes to the --index spec (HNSW32 -> HNSW32,SQ8)\n"
    "  --ef-construction N     build: HNSW candidates kept while linking (default 200)\n"
    "  --threads N             workers linking HNSW nodes, 0..256 (default 0: all cores)\n"
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

typedef struct build_args {
    int is_add, metric, fmt, force, quiet, sq8, no_wait;
    long dim;
    const char *store;
    char **inputs;
    int n_inputs;
} build_args;

/* Options into *ba; -1 to go on, else the exit code. */
static int build_options(int argc, char **argv, build_args *ba)
{
    const char *metric = "cosine";
    const cli_opt tab[] = {
        {"metric", 0, OPT_CHOICE, &metric, .choices = "cosine|ip|l2"},
        OPT_FORMAT(&ba->fmt),
        OPT_DIM(&ba->dim),
        {"force", 0, OPT_FLAG, &ba->force},
        {"index", 0, OPT_STRING, NULL, .cfg = "index"},
        {"nlist", 0, OPT_STRING, NULL, .cfg = "nlist"},
        {"auto-threshold", 0, OPT_STRING, NULL, .cfg = "auto_threshold"},
        {"memory-budget", 0, OPT_STRING, NULL, .cfg = "memory_budget"},
        {"sq8", 0, OPT_FLAG, &ba->sq8},
        {"ef-construction", 0, OPT_STRING, NULL, .cfg = "ef_construction"},
        OPT_THREADS,
        OPT_QUIET(&ba->quiet),
        OPT_NO_WAIT(&ba->no_wait),
        {0},
    };
    int npos, code = opts_run(tab, argc, argv, HELP_BUILD, NULL, &npos);
    if (code >= 0) return code;
    if (npos < 2) {
        cli_error("%s: need STORE and at least one INPUT", ba->is_add ? "add" : "build");
        fputs(HELP_BUILD, stderr);
        return EXIT_USAGE;
    }
    ba->metric = parse_metric(metric);
    ba->store = argv[1];
    ba->inputs = argv + 2;
    ba->n_inputs = npos - 1;
    return -1;
}

/* add: load STORE; *next_id = one past its largest id. */
static int load_existing(const char *store, chrys_index **ix, uint64_t *next_id)
{
    char *msg = NULL;
    int rc = chrys_index_load(store, ix, &msg);
    if (rc) {
        cli_error("%s", msg ? msg : chrys_errstr(rc));
        chrys_free(msg);
        return cli_exit_for(rc);
    }
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(*ix, &info);
    if (!info.count) return EXIT_OK;
    uint64_t *ids = malloc(info.count * sizeof *ids);
    if (!ids) {
        cli_error("out of memory");
        return EXIT_FAIL;
    }
    size_t n_ids;
    chrys_index_get_ids(*ix, ids, info.count, &n_ids);
    for (size_t i = 0; i < info.count; i++)
        if (ids[i] + 1 > *next_id) *next_id = ids[i] + 1;
    free(ids);
    return EXIT_OK;
}

/* The effective index spec of a new store into spec[cap], with --sq8 applied; 0 or EXIT_USAGE. */
static int build_spec(int sq8, char *spec, size_t cap)
{
    const char *eff = cfg_index_spec();
    if (!eff) return EXIT_USAGE;
    snprintf(spec, cap, "%s", eff);
    if (sq8) { /* --sq8: HNSW32 -> HNSW32,SQ8; IVF64,Flat -> IVF64,SQ8; Flat -> SQ8 (spec.c) */
        char *why = NULL;
        if (chrys_index_spec_with_sq8(eff, spec, cap, &why)) {
            cli_error("--sq8: %s", why ? why : "invalid index spec");
            chrys_free(why);
            return EXIT_USAGE;
        }
    }
    return EXIT_OK;
}

/* build: the new index, of the first input's dimension. */
static int new_index(const build_args *ba, uint32_t dim, chrys_index **ix)
{
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = dim;
    o.metric = (chrys_metric)ba->metric;
    char spec[64];
    if (build_spec(ba->sq8, spec, sizeof spec)) return EXIT_USAGE;
    o.spec = spec;
    o.auto_threshold = cfg_uint("auto_threshold");
    o.memory_budget = cfg_uint("memory_budget");
    o.ef_construction = (uint32_t)cfg_uint("ef_construction");
    o.build_threads = (uint32_t)cfg_uint("threads");
    char *msg = NULL;
    int rc = chrys_index_new(&o, ix, &msg);
    if (rc) cli_error("%s", msg ? msg : chrys_errstr(rc));
    chrys_free(msg);
    return rc ? cli_exit_for(rc) : EXIT_OK;
}

/* Add one input's records, in chunks so the progress bar moves; a failure names the record of
 * the file (the library's row within the chunk, from its error info, plus the chunk's start). */
static int add_records(chrys_index *ix, const build_args *ba, const char *path, vecset *vs, uint64_t next_id)
{
    if (!vs->ids) {
        vs->ids = malloc((vs->n ? vs->n : 1) * sizeof *vs->ids);
        if (!vs->ids) {
            cli_error("out of memory");
            return EXIT_FAIL;
        }
        for (size_t i = 0; i < vs->n; i++) vs->ids[i] = next_id + i;
    }
    progress pb;
    progress_start(&pb, ba->is_add ? "add" : "build", vs->n);
    const size_t chunk = 16384;
    build_progress bp = {&pb, 0};
    chrys_index_set_progress(ix, on_progress, &bp); /* HNSW reports within a chunk */
    for (size_t i = 0; i < vs->n; i += chunk) {
        size_t m = vs->n - i < chunk ? vs->n - i : chunk;
        bp.base = i;
        int rc = chrys_index_add(ix, m, vs->ids + i, vs->data + i * vs->dim,
                                 vs->meta ? (const char *const *)vs->meta + i : NULL);
        if (rc) {
            progress_end(&pb);
            chrys_error_info ei = {sizeof ei};
            chrys_index_get_error_info(ix, &ei);
            if (ei.record >= 0) cli_error("%s: record %zu: %s", path, i + (size_t)ei.record, ei.reason);
            else cli_error("%s: %s", path, ei.message);
            return cli_exit_for(rc);
        }
        progress_update(&pb, i + m);
    }
    progress_end(&pb);
    return EXIT_OK;
}

/* Read one input and add it (creating the index from the first one). */
static int add_input(chrys_index **ix, const build_args *ba, const char *path, uint64_t *next_id, size_t *added)
{
    vecset vs;
    char err[512], note[256];
    int rc = vecset_read(path, (vec_format)ba->fmt, (uint32_t)ba->dim, &vs, err, sizeof err, note, sizeof note);
    if (rc) {
        cli_error("%s", err);
        return cli_exit_for(rc);
    }
    if (note[0]) fprintf(stderr, "chrysalis: note: %s\n", note);
    int code = *ix ? EXIT_OK : new_index(ba, vs.dim, ix);
    chrys_index_info info = {sizeof info};
    if (!code) chrys_index_get_info(*ix, &info);
    if (!code && vs.dim != info.dim) {
        cli_error("%s: vectors have dimension %u but the store has %u", path, vs.dim, info.dim);
        code = EXIT_DATA;
    }
    if (!code) code = add_records(*ix, ba, path, &vs, *next_id);
    if (!code) {
        for (size_t i = 0; i < vs.n; i++)
            if (vs.ids[i] + 1 > *next_id) *next_id = vs.ids[i] + 1;
        *added += vs.n;
    }
    vecset_free(&vs);
    return code;
}

int cmd_build(int argc, char **argv, int is_add)
{
    build_args ba = {.is_add = is_add, .fmt = FMT_AUTO};
    int code = build_options(argc, argv, &ba);
    if (code >= 0) return code;
    const char *store = ba.store;
    struct stat st;
    double t0 = now_seconds();
    chrys_index *ix = NULL;
    char *msg = NULL;
    uint64_t next_id = 0;
    size_t added = 0;
    /* The writer lock, from before the store is looked at until after its rename: two builds of
     * one new store cannot both find it missing, and an add reads the last writer's store. */
    chrys_lock *lock = NULL;
    if ((code = cli_lock_store(store, ba.no_wait, &lock))) return code;
    if (!is_add && !ba.force && stat(store, &st) == 0) {
        cli_error("%s already exists (use 'chrysalis add' to extend it, or --force to replace it)", store);
        code = EXIT_USAGE;
        goto done;
    }
    if (is_add && (code = load_existing(store, &ix, &next_id))) goto done;
    for (int a = 0; a < ba.n_inputs; a++)
        if ((code = add_input(&ix, &ba, ba.inputs[a], &next_id, &added))) goto done;
    int rc = chrys_index_save(ix, store, &msg);
    if (rc) {
        cli_error("%s", msg ? msg : chrys_errstr(rc));
        code = cli_exit_for(rc);
        goto done;
    }
    if (!ba.quiet) {
        chrys_index_info info = {sizeof info};
        chrys_index_get_info(ix, &info);
        printf("%s: %s %zu vectors, %llu in store (dim %u), %.3f s\n", store, is_add ? "added" : "stored", added,
               (unsigned long long)info.count, info.dim, now_seconds() - t0);
    }
done:
    chrys_store_unlock(lock);
    chrys_free(msg);
    chrys_index_free(ix);
    return code;
}

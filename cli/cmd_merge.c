/*
 * cmd_merge.c: `chrysalis merge STORE INPUT...`.
 *
 * merge opens STORE if it exists (continuing where the last run stopped) or creates it, merges
 * every record of every input in order, and writes STORE atomically at the end: a bad record or
 * a failure leaves the store exactly as it was. The whole run, from before STORE is read until
 * after its rename, holds STORE's writer lock (STORE.lock), so concurrent merges run one after
 * the other and each lands on top of the last. Options given on the command line replace the
 * stored ones; the others keep their stored values.
 */
#include <cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

static const char *HELP_MERGE =
    "usage: chrysalis merge STORE INPUT... [options]\n"
    "\n"
    "Merge embeddings into STORE the way the Chrysalis merger does: each record joins the most similar\n"
    "entry when their cosine similarity reaches the threshold (entry := 0.4 old + 0.6 new,\n"
    "merged_count + 1), else it becomes a new entry. STORE is created if missing; an existing STORE\n"
    "continues where its last run stopped. Inputs: JSONL records ({\"id\", \"embedding\", ...metadata}),\n"
    "fvecs/npy/raw vectors (ids generated; --meta adds metadata), and Chrysalis legend files\n"
    "(*_embeddings_full.json).\n"
    "\n"
    "options (a given option replaces the stored value):\n"
    "  --threshold T          merge when cosine >= T (default 0.85; 0.90 with --variant skill)\n"
    "  --variant V            embedding (union descriptors, set last_merged_at) or skill (union salts_used)\n"
    "  --select S             kb, sb, skill or all (default): which vectors of legend files, or of\n"
    "                         JSONL records carrying a \"kind\" field, to merge\n"
    "  --weights OLD,NEW      merge weights (default 0.4,0.6)\n"
    "  --renormalize          renormalise entries to unit length after each merge\n"
    "  --mean-update          entry := running mean of its records (count-weighted)\n"
    "  --original             restore the original's behaviour (no renormalise, no mean update)\n"
    "  --meta FILE            JSONL metadata for vector inputs, line i for vector i (\"id\" = record id)\n"
    "  --skip-invalid         skip and count bad records instead of failing\n"
    "  --batch N              records searched together (default automatic; 1 = one at a time)\n"
    "  --threads N            worker threads (default: all cores)\n"
    "  --metrics-log FILE     append one JSON line per search (time, entries, path)\n"
    "  --slow-search S        warn when a search takes longer than S seconds (default 5)\n"
    "  --json                 print the summary as JSON\n"
    "  --index SPEC           new store: the entries' index (default auto: Flat, then an HNSW graph\n"
    "                         past the planner's threshold)\n"
    "  --auto-threshold N     new store: entries at which the merge moves from exact scan to the\n"
    "                         HNSW graph (default 20000; below it decisions are --exact's)\n"
    "  --exact                always decide by exact scan (default: once the index is HNSW or IVF,\n"
    "                         take its candidates and confirm near-threshold decisions by exact scan)\n"
    "  --ef N                 HNSW candidates kept per record's search (default 64)\n"
    "  --ef-construction N    new store: HNSW candidates kept while linking an entry (default 100)\n"
    "  --nprobe N             IVF lists searched per record (default max(16, nlist/8))\n"
    "  --confirm-margin M     confirm by exact scan when |best - threshold| < M (default 0.01)\n"
    "  --verify               also check every decision against an exact scan and report disagreements\n"
    "  --format F, --dim D    input format, as for build\n"
    "  -q, --quiet            no summary\n"
    "  --no-wait              fail at once (exit 5) when another writer holds STORE's lock, instead\n"
    "                         of waiting for it\n"
    "  --embed                JSONL inputs carry text, not vectors: embed the --text-field of each\n"
    "                         record first (through --cache), with these provider options:\n";

#define MERGE_STREAM_ROWS 65536 /* records per chunk of a streamed input */

typedef struct metrics_ctx {
    FILE *log;
    double warn_s;
    size_t n_searches, n_slow;
    double total_s;
} metrics_ctx;

static void on_search(void *user, const chrys_merge_metrics *mm)
{
    metrics_ctx *c = user;
    c->n_searches++;
    c->total_s += mm->seconds;
    if (c->log)
        fprintf(c->log,
                "{\"time\":%lld,\"seconds\":%.6f,\"entries\":%llu,\"records\":%llu,\"ms_per_record\":%.6f,"
                "\"path\":\"%s\",\"slow\":%s}\n",
                (long long)time(NULL), mm->seconds, (unsigned long long)mm->entries,
                (unsigned long long)mm->records, mm->records ? mm->seconds * 1e3 / mm->records : 0.0, mm->path,
                mm->slow ? "true" : "false");
    if (mm->slow) {
        c->n_slow++;
        fprintf(stderr, "chrysalis: warning: a merge search took %.2f s over %llu entries (%llu records, %s); limit %.2f s\n",
                mm->seconds, (unsigned long long)mm->entries, (unsigned long long)mm->records, mm->path, c->warn_s);
    }
}

/* Keep only records of the selected kind (JSONL records with a "kind" field). */
static void select_kind(vecset *vs, const char *select)
{
    if (!strcmp(select, "all") || !vs->meta) return;
    const char *want = !strcmp(select, "kb") ? "knowledge_builder" : !strcmp(select, "sb") ? "skill_builder" : "skill";
    size_t w = 0;
    for (size_t i = 0; i < vs->n; i++) {
        int keep = 0;
        cJSON *o = vs->meta[i] ? cJSON_Parse(vs->meta[i]) : NULL;
        const cJSON *k = o ? cJSON_GetObjectItemCaseSensitive(o, "kind") : NULL;
        keep = cJSON_IsString(k) && !strcmp(k->valuestring, want);
        cJSON_Delete(o);
        if (!keep) {
            free(vs->meta[i]);
            continue;
        }
        if (w != i) {
            memmove(vs->data + w * vs->dim, vs->data + i * vs->dim, vs->dim * sizeof(float));
            vs->meta[w] = vs->meta[i];
            if (vs->ids) vs->ids[w] = vs->ids[i];
            if (vs->empty) vs->empty[w] = vs->empty[i];
        }
        w++;
    }
    vs->n = w;
}

/* Attach a JSONL metadata sidecar to vector input. */
static int attach_meta(vecset *vs, const char *path, char *err, size_t errlen)
{
    unsigned char *buf;
    size_t len;
    int rc = read_all(path, &buf, &len, err, errlen);
    if (rc) return rc;
    size_t line = 0, n = 0, pos = 0;
    vs->meta = calloc(vs->n ? vs->n : 1, sizeof *vs->meta);
    int has_ids = -1;
    while (pos < len && !rc) {
        char *start = (char *)buf + pos;
        char *nl = memchr(start, '\n', len - pos);
        size_t l = nl ? (size_t)(nl - start) : len - pos;
        pos += l + (nl ? 1 : 0);
        line++;
        if (l == 0) continue;
        cJSON *o = cJSON_ParseWithLength(start, l);
        if (!cJSON_IsObject(o)) {
            snprintf(err, errlen, "%s:%zu: expected a JSON object", path, line);
            rc = CHRYS_INVALID;
        } else if (n >= vs->n) {
            snprintf(err, errlen, "%s:%zu: more metadata lines than vectors (%zu)", path, line, vs->n);
            rc = CHRYS_INVALID;
        } else {
            cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
            if (has_ids < 0) {
                has_ids = id != NULL;
                if (has_ids) vs->ids = calloc(vs->n, sizeof *vs->ids);
            }
            if ((id != NULL) != has_ids || (id && (!cJSON_IsNumber(id) || id->valuedouble < 0 ||
                                                   id->valuedouble != floor(id->valuedouble)))) {
                snprintf(err, errlen, "%s:%zu: \"id\" must be a non-negative integer on every line or on none", path, line);
                rc = CHRYS_INVALID;
            } else {
                if (id) vs->ids[n] = (uint64_t)id->valuedouble;
                cJSON_DeleteItemFromObjectCaseSensitive(o, "id");
                vs->meta[n++] = cJSON_PrintUnformatted(o);
            }
        }
        cJSON_Delete(o);
    }
    free(buf);
    if (!rc && n != vs->n) {
        snprintf(err, errlen, "%s: %zu metadata lines for %zu vectors", path, n, vs->n);
        rc = CHRYS_INVALID;
    }
    return rc;
}

static int read_input(const char *path, int fmt, uint32_t dim, const char *select, int skip_invalid,
                      const char *meta_path, vecset *vs, char *err, size_t errlen)
{
    unsigned char *buf;
    size_t len;
    int rc = read_all(path, &buf, &len, err, errlen);
    if (rc) return rc;
    const char *name = strcmp(path, "-") ? path : "(stdin)";
    char note[256] = "";
    if (fmt == FMT_AUTO && is_legend_file(name, buf, len)) {
        rc = vecset_parse_legend(name, (const char *)buf, len, select, vs, err, errlen);
        free(buf);
        return rc;
    }
    const char *dot = strrchr(name, '.');
    int jsonl = fmt == FMT_JSONL || (fmt == FMT_AUTO && dot && (!strcmp(dot, ".jsonl") || !strcmp(dot, ".json") ||
                                                               !strcmp(dot, ".ndjson")));
    if (!jsonl && fmt == FMT_AUTO && !dot) {
        size_t i = 0;
        while (i < len && (buf[i] == ' ' || buf[i] == '\n')) i++;
        jsonl = i < len && buf[i] == '{';
    }
    if (jsonl) {
        rc = vecset_parse_jsonl_ex(name, (const char *)buf, len, JSONL_ALLOW_EMPTY | (skip_invalid ? JSONL_SKIP_INVALID : 0),
                                   vs, err, errlen);
        free(buf);
    } else {
        rc = vecset_parse(name, (vec_format)fmt, dim, buf, len, vs, err, errlen, note, sizeof note);
        if (!rc && note[0]) fprintf(stderr, "chrysalis: note: %s\n", note);
        if (!rc && meta_path) rc = attach_meta(vs, meta_path, err, errlen);
    }
    if (!rc) select_kind(vs, select);
    return rc;
}

/* --embed: text records -> vectors through the embedder (and its cache). */
static int embed_input(const char *path, const embed_cli *ec, chrys_embedder *e, const char *select, vecset *vs,
                       char *err, size_t errlen)
{
    unsigned char *buf;
    size_t len, n;
    memset(vs, 0, sizeof *vs);
    int rc = read_all(path, &buf, &len, err, errlen), has_ids;
    if (rc) return rc;
    char **texts, **metas;
    uint64_t *ids;
    rc = embed_jsonl_records(strcmp(path, "-") ? path : "(stdin)", (const char *)buf, len, ec->text_field, &texts,
                             &metas, &ids, &has_ids, &n, err, errlen);
    free(buf);
    if (rc) return rc;
    vs->n = n;
    vs->dim = (uint32_t)ec->dim;
    vs->data = malloc(n * vs->dim * sizeof(float));
    vs->meta = metas;
    if (has_ids == 1) vs->ids = ids;
    else free(ids);
    if (!vs->data) rc = CHRYS_NOMEM;
    else if ((rc = chrys_embedder_embed(e, n, (const char *const *)texts, vs->data)))
        snprintf(err, errlen, "%s: embedding failed: %s", path, chrys_embedder_errmsg(e));
    for (size_t i = 0; i < n; i++) free(texts[i]);
    free(texts);
    if (rc) {
        vecset_free(vs);
        return rc;
    }
    select_kind(vs, select);
    return CHRYS_OK;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int cmd_merge(int argc, char **argv)
{
    static const struct option opts[] = {{"threshold", required_argument, 0, 't'},
                                         {"variant", required_argument, 0, 'V'},
                                         {"select", required_argument, 0, 'S'},
                                         {"weights", required_argument, 0, 'W'},
                                         {"renormalize", no_argument, 0, 'R'},
                                         {"mean-update", no_argument, 0, 'U'},
                                         {"original", no_argument, 0, 'O'},
                                         {"meta", required_argument, 0, 'M'},
                                         {"skip-invalid", no_argument, 0, 'I'},
                                         {"batch", required_argument, 0, 'B'},
                                         {"threads", required_argument, 0, 'T'},
                                         {"metrics-log", required_argument, 0, 'L'},
                                         {"slow-search", required_argument, 0, 'w'},
                                         {"json", no_argument, 0, 'j'},
                                         {"format", required_argument, 0, 'f'},
                                         {"dim", required_argument, 0, 'd'},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},
                                         {"embed", no_argument, 0, 'E'},
                                         {"index", required_argument, 0, 'X'},
                                         {"auto-threshold", required_argument, 0, 'A'},
                                         {"exact", no_argument, 0, 'x'},
                                         {"nprobe", required_argument, 0, 'p'},
                                         {"confirm-margin", required_argument, 0, 'c'},
                                         {"verify", no_argument, 0, 'v'},
                                         {"ef", required_argument, 0, 'e'},
                                         {"ef-construction", required_argument, 0, 'C'},
                                         {"no-wait", no_argument, 0, 'N'},
                                         EMBED_LONG_OPTIONS,
                                         {0, 0, 0, 0}};
    embed_cli ec;
    embed_cli_init(&ec);
    chrys_embedder *embedder = NULL;
    int do_embed = 0, er, exact = 0, verify = 0, no_wait = 0;
    long nprobe = (long)cfg_uint("nprobe");
    long ef = (long)cfg_uint("ef_search");
    long efc = strcmp(cfg_source("ef_construction"), "default") ? (long)cfg_uint("ef_construction") : 0;
    double margin = 0.01;
    double threshold = NAN, w_old = NAN, w_new = NAN, slow = cfg_double("slow_search");
    int variant = -1, renorm = -1, mean = -1, skip_invalid = 0, json = 0, quiet = 0, fmt = FMT_AUTO, c;
    long batch = -1, threads = (long)cfg_uint("threads"), dim = 0;
    const char *select = "all", *meta_path = NULL, *log_path = NULL;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        if ((er = embed_opt(&ec, c, optarg)) < 0) return EXIT_USAGE;
        if (er) continue;
        switch (c) {
        case 'E': do_embed = 1; break;
        case 'N': no_wait = 1; break;
        case 'x': exact = 1; break;
        case 'v': verify = 1; break;
        case 'p':
            nprobe = strtol(optarg, &end, 10);
            if (*end || nprobe < 0 || nprobe > 1 << 20) {
                cli_error("--nprobe: expected 0..%d, got '%s'", 1 << 20, optarg);
                return EXIT_USAGE;
            }
            break;
        case 'e':
        case 'C': {
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 100000) {
                cli_error("--%s: expected 1..100000, got '%s'", c == 'e' ? "ef" : "ef-construction", optarg);
                return EXIT_USAGE;
            }
            if (c == 'e') ef = v;
            else efc = v;
            break;
        }
        case 'c':
            margin = strtod(optarg, &end);
            if (*end || !(margin >= 0 && margin <= 2)) {
                cli_error("--confirm-margin: expected 0..2, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'X':
            if (cfg_set_flag("index", optarg, "--index")) return EXIT_USAGE;
            break;
        case 'A':
            if (cfg_set_flag("auto_threshold", optarg, "--auto-threshold")) return EXIT_USAGE;
            break;
        case 't':
            threshold = strtod(optarg, &end);
            if (*end || !(threshold >= -1 && threshold <= 1)) {
                cli_error("--threshold: expected a cosine in [-1, 1], got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'V':
            if (!strcmp(optarg, "embedding")) variant = CHRYS_MERGE_EMBEDDING;
            else if (!strcmp(optarg, "skill")) variant = CHRYS_MERGE_SKILL;
            else {
                cli_error("--variant: expected embedding or skill, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'S':
            if (strcmp(optarg, "kb") && strcmp(optarg, "sb") && strcmp(optarg, "skill") && strcmp(optarg, "all")) {
                cli_error("--select: expected kb, sb, skill or all, got '%s'", optarg);
                return EXIT_USAGE;
            }
            select = optarg;
            break;
        case 'W':
            if (sscanf(optarg, "%lf,%lf", &w_old, &w_new) != 2 || !(w_old >= 0) || !(w_new >= 0) || w_old + w_new <= 0) {
                cli_error("--weights: expected OLD,NEW (non-negative, not both zero), got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'R': renorm = 1; break;
        case 'U': mean = 1; break;
        case 'O': renorm = 0; mean = 0; break;
        case 'M': meta_path = optarg; break;
        case 'I': skip_invalid = 1; break;
        case 'B':
            batch = strtol(optarg, &end, 10);
            if (*end || batch < 0 || batch > 1000000) {
                cli_error("--batch: expected 0..1000000, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'T':
            threads = strtol(optarg, &end, 10);
            if (*end || threads < 1 || threads > 256) {
                cli_error("--threads: expected 1..256, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'L': log_path = optarg; break;
        case 'w':
            slow = strtod(optarg, &end);
            if (*end || !(slow > 0)) {
                cli_error("--slow-search: expected seconds > 0, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'j': json = 1; break;
        case 'f':
            if ((fmt = vec_format_parse(optarg)) < 0) {
                cli_error("--format: expected fvecs, npy, raw, jsonl or auto, got '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'd': dim = strtol(optarg, NULL, 10); break;
        case 'q': quiet = 1; break;
        case 'h':
            fputs(HELP_MERGE, stdout);
            fputs(EMBED_OPTIONS_HELP, stdout);
            return EXIT_OK;
        default: fputs(HELP_MERGE, stderr); return EXIT_USAGE;
        }
    }
    if (argc - optind < 2) {
        cli_error("merge: need STORE and at least one INPUT");
        fputs(HELP_MERGE, stderr);
        return EXIT_USAGE;
    }
    const char *store = argv[optind];
    cli_set_threads(threads);
    double t0 = now_seconds();
    metrics_ctx mc = {NULL, slow, 0, 0, 0};
    if (log_path && !(mc.log = fopen(log_path, "a"))) {
        cli_error("--metrics-log: cannot open %s", log_path);
        return EXIT_FAIL;
    }
    chrys_merger *m = NULL;
    vstream vsm = {0};
    char *msg = NULL, err[512];
    int rc, code = EXIT_OK;
    size_t read_records = 0, parse_skipped = 0;
    chrys_merge_stats before = {sizeof before};
    struct stat st;
    chrys_lock *lock = NULL;
    /* Held from before the store is read until after its rename: a concurrent merge waits here
     * and then reads the store this one wrote, so neither run's records are lost. */
    if ((code = cli_lock_store(store, no_wait, &lock))) goto done;
    if (stat(store, &st) == 0) {
        chrys_store_meta sm = {sizeof sm};
        if ((rc = chrys_store_peek(store, &sm, &msg))) {
            cli_error("%s", msg ? msg : chrys_errstr(rc));
            code = cli_exit_for(rc);
            goto done;
        }
        if (!sm.has_merger) {
            cli_error("%s is an index store, not a merger store (use 'chrysalis add' or a new file)", store);
            code = EXIT_USAGE;
            goto done;
        }
        if ((rc = chrys_merger_open(store, &m, &msg))) {
            cli_error("%s", msg ? msg : chrys_errstr(rc));
            code = cli_exit_for(rc);
            goto done;
        }
        chrys_merger_get_stats(m, &before);
    }
    if (do_embed && embed_cli_make(&ec, &embedder)) {
        code = EXIT_USAGE;
        goto done;
    }
    for (int a = optind + 1; a < argc; a++) {
        /* a large fvecs / raw file is merged a chunk at a time, never read whole */
        int streaming = !do_embed && !meta_path && !strcmp(select, "all") &&
                        vstream_open(argv[a], fmt, (uint32_t)dim, &vsm) == CHRYS_OK;
        progress pb;
        int pb_on = 0;
        size_t base = 0; /* records of this input merged before the current chunk */
        for (;;) {
            vecset vs;
            if (streaming) rc = vstream_next(&vsm, MERGE_STREAM_ROWS, &vs, err, sizeof err);
            else if (do_embed) rc = embed_input(argv[a], &ec, embedder, select, &vs, err, sizeof err);
            else rc = read_input(argv[a], fmt, (uint32_t)dim, select, skip_invalid, meta_path, &vs, err, sizeof err);
            if (rc) {
                if (pb_on) progress_end(&pb);
                cli_error("%s", err);
                code = cli_exit_for(rc);
                goto done;
            }
            if (streaming && vs.n == 0) break; /* the end of a streamed file */
            if (embedder) embed_cli_report(embedder);
            parse_skipped += vs.n_skipped;
            if (vs.n_skipped) fprintf(stderr, "chrysalis: %s: skipped %zu invalid records\n", argv[a], vs.n_skipped);
            chrys_merge_opts o;
            if (!m) {
                chrys_merge_opts_init(&o);
                o.dim = vs.dim;
                /* threshold: the flag, else the configured one, else 0.85 (0.90 for the skill merger) */
                if (strcmp(cfg_source("merge_threshold"), "default")) o.threshold = cfg_double("merge_threshold");
                else if (variant == CHRYS_MERGE_SKILL) o.threshold = 0.90;
                if (!(o.index_spec = cfg_index_spec())) {
                    vecset_free(&vs);
                    code = EXIT_USAGE;
                    goto done;
                }
                /* the merger's own default switch point (20,000) unless one was set */
                if (strcmp(cfg_source("auto_threshold"), "default")) o.auto_threshold = cfg_uint("auto_threshold");
                o.memory_budget = cfg_uint("memory_budget");
                o.ef_construction = (uint32_t)efc;
                if ((rc = chrys_merger_new(&o, &m, &msg))) {
                    cli_error("%s", msg ? msg : chrys_errstr(rc));
                    vecset_free(&vs);
                    code = cli_exit_for(rc);
                    goto done;
                }
            }
            o.struct_size = sizeof o;
            chrys_merger_get_opts(m, &o);
            if (vs.n && vs.dim != o.dim) {
                cli_error("%s: vectors have dimension %u but %s has %u", argv[a], vs.dim, store, o.dim);
                vecset_free(&vs);
                code = EXIT_DATA;
                goto done;
            }
            if (!isnan(threshold)) o.threshold = threshold;
            if (variant >= 0) o.variant = (chrys_merge_variant)variant;
            if (!isnan(w_old)) {
                o.weight_old = w_old;
                o.weight_new = w_new;
            }
            if (renorm >= 0) o.renormalize = renorm;
            if (mean >= 0) o.mean_update = mean;
            o.skip_invalid = skip_invalid;
            if (batch >= 0) o.batch_size = (uint32_t)batch;
            o.n_threads = (uint32_t)threads;
            o.slow_search_s = slow;
            o.on_search = on_search;
            o.user = &mc;
            o.exact = exact;
            o.verify = verify;
            o.nprobe = (uint32_t)nprobe;
            o.confirm_margin = margin;
            o.ef_search = (uint32_t)ef;
            if ((rc = chrys_merger_configure(m, &o))) {
                cli_error("%s", chrys_merger_errmsg(m));
                vecset_free(&vs);
                code = EXIT_USAGE;
                goto done;
            }
            chrys_merge_stats now = {sizeof now};
            chrys_merger_get_stats(m, &now);
            chrys_merge_record *recs = malloc((vs.n ? vs.n : 1) * sizeof *recs);
            if (!recs) {
                cli_error("out of memory");
                vecset_free(&vs);
                code = EXIT_FAIL;
                goto done;
            }
            for (size_t i = 0; i < vs.n; i++) {
                int empty = vs.empty && vs.empty[i];
                recs[i] = (chrys_merge_record){vs.ids ? vs.ids[i] : now.next_record_id + i, empty ? NULL : vs.data + i * vs.dim,
                                               empty ? 0 : vs.dim, vs.meta ? vs.meta[i] : NULL};
            }
            if (!pb_on) progress_start(&pb, "merge", streaming ? vsm.n : vs.n);
            pb_on = 1;
            const size_t chunk = 8192;
            for (size_t i = 0; i < vs.n; i += chunk) {
                size_t n = vs.n - i < chunk ? vs.n - i : chunk;
                if ((rc = chrys_merger_merge(m, n, recs + i, NULL))) {
                    progress_end(&pb);
                    const char *em = chrys_merger_errmsg(m);
                    size_t row;
                    const char *rest;
                    if (sscanf(em, "record %zu", &row) == 1 && (rest = strchr(em, ' ')) && (rest = strchr(rest + 1, ' ')))
                        cli_error("%s: record %zu %s", argv[a], base + i + row, rest + 1);
                    else
                        cli_error("%s: %s", argv[a], em);
                    free(recs);
                    vecset_free(&vs);
                    code = cli_exit_for(rc);
                    goto done;
                }
                progress_update(&pb, base + i + n);
            }
            read_records += vs.n;
            base += vs.n;
            free(recs);
            vecset_free(&vs);
            if (!streaming) break;
        }
        if (pb_on) progress_end(&pb);
        vstream_close(&vsm);
    }
    if ((rc = chrys_merger_mark_run(m)) || (rc = chrys_merger_save(m, store, &msg))) {
        cli_error("%s", msg ? msg : chrys_merger_errmsg(m));
        code = cli_exit_for(rc);
        goto done;
    }
    if (!quiet) {
        chrys_merge_stats after = {sizeof after};
        chrys_merger_get_stats(m, &after);
        uint32_t *counts = malloc((after.entries ? after.entries : 1) * sizeof *counts);
        for (uint64_t e = 0; e < after.entries; e++) {
            chrys_merge_entry en = {sizeof en};
            chrys_merger_get_entry(m, e, &en, NULL);
            counts[e] = en.merged_count;
        }
        qsort(counts, after.entries, sizeof *counts, cmp_u32);
        double secs = now_seconds() - t0;
        uint64_t merged = after.merged - before.merged, added = after.added - before.added;
        uint64_t skipped = after.skipped - before.skipped + parse_skipped;
        chrys_merge_opts o = {sizeof o};
        chrys_merger_get_opts(m, &o);
        /* which path decided: the exact scan (the exact merger's decisions) or the HNSW graph */
        chrys_index_info ii = {sizeof ii};
        chrys_index_get_info(chrys_merger_index(m), &ii);
        int graph = ii.kind != CHRYS_INDEX_FLAT;
        const char *how = !graph    ? "exact scan (the exact merger's decisions)"
                          : o.exact ? "exact scan (--exact; the graph is kept but not used to decide)"
                                    : "the graph's candidates, near-threshold decisions confirmed by exact scan";
        if (json) {
            printf("{\"store\":\"%s\",\"records\":%zu,\"merged\":%llu,\"added\":%llu,\"skipped\":%llu,\"entries\":%llu,"
                   "\"threshold\":%g,\"variant\":\"%s\",\"seconds\":%.3f,\"searches\":%zu,\"slow_searches\":%zu,"
                   "\"merged_count_histogram\":{",
                   store, read_records + parse_skipped, (unsigned long long)merged, (unsigned long long)added,
                   (unsigned long long)skipped, (unsigned long long)after.entries, o.threshold,
                   o.variant == CHRYS_MERGE_SKILL ? "skill" : "embedding", secs, mc.n_searches, mc.n_slow);
            for (uint64_t e = 0, first = 1; e < after.entries;) {
                uint64_t f = e;
                while (f < after.entries && counts[f] == counts[e]) f++;
                printf("%s\"%u\":%llu", first ? "" : ",", counts[e], (unsigned long long)(f - e));
                first = 0;
                e = f;
            }
            printf("},\"index_backed\":{\"records\":%llu,\"confirmed\":%llu,\"verified\":%llu,\"disagreements\":%llu,"
                   "\"relinked\":%llu},\"index\":{\"spec\":\"%s\",\"graph\":%s,\"exact\":%s,\"plan_reason\":\"%s\"}}\n",
                   (unsigned long long)after.approx_records, (unsigned long long)after.confirmations,
                   (unsigned long long)after.verified, (unsigned long long)after.disagreements,
                   (unsigned long long)after.relinks, ii.spec, graph ? "true" : "false",
                   !graph || o.exact ? "true" : "false", ii.plan_reason);
        } else {
            printf("%s: merged %zu records in %.3f s (threshold %g, %s merger)\n", store, read_records + parse_skipped,
                   secs, o.threshold, o.variant == CHRYS_MERGE_SKILL ? "skill" : "embedding");
            printf("  merged:   %llu\n  added:    %llu\n  skipped:  %llu\n  entries:  %llu (store total)\n",
                   (unsigned long long)merged, (unsigned long long)added, (unsigned long long)skipped,
                   (unsigned long long)after.entries);
            printf("  merged_count histogram:");
            for (uint64_t e = 0; e < after.entries;) {
                uint64_t f = e;
                while (f < after.entries && counts[f] == counts[e]) f++;
                printf(" %u:%llu", counts[e], (unsigned long long)(f - e));
                e = f;
            }
            printf("\n  searches: %zu (%.3f s), slow: %zu\n", mc.n_searches, mc.total_s, mc.n_slow);
            printf("  index:    %s, %s%s%s\n", ii.spec, how, ii.plan_reason[0] ? "; planner: " : "", ii.plan_reason);
            if (after.approx_records)
                printf("  index-backed: %llu records from the index's candidates, %llu confirmed by exact scan, "
                       "%llu entries relinked\n",
                       (unsigned long long)after.approx_records, (unsigned long long)after.confirmations,
                       (unsigned long long)after.relinks);
            if (after.verified)
                printf("  verify: %llu of %llu decisions differ from the exact scan (%.4f%%)\n",
                       (unsigned long long)after.disagreements, (unsigned long long)after.verified,
                       100.0 * after.disagreements / after.verified);
        }
        free(counts);
    }
done:
    chrys_store_unlock(lock);
    vstream_close(&vsm);
    if (mc.log) fclose(mc.log);
    chrys_free(msg);
    chrys_merger_free(m);
    chrys_embedder_free(embedder);
    return code;
}

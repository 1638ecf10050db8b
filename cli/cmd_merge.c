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
    "  --threads N            worker threads, 0..256 (default 0: all cores)\n"
    "  --metrics-log FILE     append one JSON line per search (time, entries, path)\n"
    "  --slow-search S        warn when a search takes longer than S seconds (default 5)\n"
    "  --json                 print the summary as JSON\n"
    "  --index SPEC           new store: the entries' index (default auto: Flat, then an HNSW graph\n"
    "                         past the planner's threshold)\n"
    "  --auto-threshold N     new store: entries at which the merge moves from exact scan to the\n"
    "                         HNSW graph (default 50000; below it decisions are --exact's)\n"
    "  --exact                always decide by exact scan (default: once the index is HNSW or IVF,\n"
    "                         take its candidates and confirm near-threshold decisions by exact scan)\n"
    "  --ef N                 HNSW candidates kept per record's search (default 64)\n"
    "  --ef-construction N    new store: HNSW candidates kept while linking an entry (default 100)\n"
    "  --nprobe N             IVF lists searched per record (default max(16, nlist/8))\n"
    "  --confirm-margin M     confirm by exact scan when |best - threshold| < M (default 0.01)\n"
    "  --verify               also check every decision against an exact scan and report disagreements\n"
    "  --format F, --dim D    input format, as for build (--dim: raw input, 1..16384)\n"
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
            uint64_t id;
            int first = has_ids < 0;
            if (!(rc = jsonl_record_id(o, &has_ids, &id, path, line, err, errlen))) {
                if (first && has_ids && !(vs->ids = calloc(vs->n ? vs->n : 1, sizeof *vs->ids))) {
                    snprintf(err, errlen, "%s: out of memory", path);
                    rc = CHRYS_NOMEM;
                }
                if (has_ids && vs->ids) vs->ids[n] = id;
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
        if (!rc && meta_path && (rc = attach_meta(vs, meta_path, err, errlen))) vecset_free(vs); /* nothing leaks */
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

typedef struct merge_args {
    embed_cli ec;
    int do_embed, exact, verify, no_wait, variant, renorm, mean, skip_invalid, json, quiet, fmt;
    long nprobe, ef, efc, batch, threads, dim;
    double margin, threshold, w[2], slow;
    const char *select, *meta_path, *log_path, *store;
    char **inputs;
    int n_inputs;
} merge_args;

static int opt_weights(const char *typed, const char *arg, void *dest)
{
    double *w = dest;
    if (sscanf(arg, "%lf,%lf", &w[0], &w[1]) != 2 || !(w[0] >= 0) || !(w[1] >= 0) || w[0] + w[1] <= 0) {
        cli_error("%s: expected OLD,NEW (non-negative, not both zero), got '%s'", typed, arg);
        return -1;
    }
    return 0;
}

static int opt_original(const char *typed, const char *arg, void *dest)
{
    (void)typed, (void)arg;
    merge_args *ma = dest;
    ma->renorm = ma->mean = 0; /* the original: no renormalise, no mean update */
    return 0;
}

/* Options into *ma; -1 to go on, else the exit code. */
static int merge_options(int argc, char **argv, merge_args *ma)
{
    const char *variant = NULL;
    embed_cli_init(&ma->ec);
    cli_opt etab[EMBED_N_OPTIONS];
    embed_cli_options(&ma->ec, etab);
    const cli_opt tab[] = {
        {"threshold", 0, OPT_DOUBLE, &ma->threshold, -1, 1, "a cosine in", .flags = OPT_BRACKETS},
        {"variant", 0, OPT_CHOICE, &variant, .choices = "embedding|skill"},
        {"select", 0, OPT_CHOICE, &ma->select, .choices = "kb|sb|skill|all"},
        {"weights", 0, OPT_CALL, ma->w, .call = opt_weights},
        {"renormalize", 0, OPT_FLAG, &ma->renorm},
        {"mean-update", 0, OPT_FLAG, &ma->mean},
        {"original", 0, OPT_ACTION, ma, .call = opt_original},
        {"meta", 0, OPT_STRING, &ma->meta_path},
        {"skip-invalid", 0, OPT_FLAG, &ma->skip_invalid},
        {"batch", 0, OPT_LONG, &ma->batch, 0, 1000000},
        OPT_THREADS,
        {"metrics-log", 0, OPT_STRING, &ma->log_path},
        {"slow-search", 0, OPT_DOUBLE, &ma->slow, 0, INFINITY, "seconds", .flags = OPT_MIN_EXCL},
        OPT_JSON(&ma->json),
        OPT_FORMAT(&ma->fmt),
        OPT_DIM(&ma->dim),
        OPT_QUIET(&ma->quiet),
        {"embed", 0, OPT_FLAG, &ma->do_embed},
        {"index", 0, OPT_STRING, NULL, .cfg = "index"},
        {"auto-threshold", 0, OPT_STRING, NULL, .cfg = "auto_threshold"},
        {"exact", 0, OPT_FLAG, &ma->exact},
        {"nprobe", 0, OPT_LONG, &ma->nprobe, 0, 1 << 20},
        {"confirm-margin", 0, OPT_DOUBLE, &ma->margin, 0, 2},
        {"verify", 0, OPT_FLAG, &ma->verify},
        {"ef", 0, OPT_LONG, &ma->ef, 1, 100000},
        {"ef-construction", 0, OPT_LONG, &ma->efc, 1, 1000000}, /* the library's cap (src/chrys_limits.h) */
        OPT_NO_WAIT(&ma->no_wait),
        {.kind = OPT_INCLUDE, .sub = etab},
        {0},
    };
    int npos, code = opts_run(tab, argc, argv, HELP_MERGE, EMBED_OPTIONS_HELP, &npos);
    if (code >= 0) return code;
    if (npos < 2) {
        cli_error("merge: need STORE and at least one INPUT");
        fputs(HELP_MERGE, stderr);
        return EXIT_USAGE;
    }
    if (variant) ma->variant = !strcmp(variant, "skill") ? CHRYS_MERGE_SKILL : CHRYS_MERGE_EMBEDDING;
    ma->threads = (long)cfg_uint("threads");
    ma->store = argv[1];
    ma->inputs = argv + 2;
    ma->n_inputs = npos - 1;
    return -1;
}

/* An existing STORE: open it (it must be a merger store). Absent: *m stays NULL. */
static int merge_open(const char *store, chrys_merger **m)
{
    struct stat st;
    if (stat(store, &st) != 0) return EXIT_OK;
    char *msg = NULL;
    chrys_store_meta sm = {sizeof sm};
    int rc = chrys_store_peek(store, &sm, &msg), code = EXIT_OK;
    if (rc) {
        cli_error("%s", msg ? msg : chrys_errstr(rc));
        code = cli_exit_for(rc);
    } else if (!sm.has_merger) {
        cli_error("%s is an index store, not a merger store (use 'chrysalis add' or a new file)", store);
        code = EXIT_USAGE;
    } else if ((rc = chrys_merger_open(store, m, &msg))) {
        cli_error("%s", msg ? msg : chrys_errstr(rc));
        code = cli_exit_for(rc);
    }
    chrys_free(msg);
    return code;
}

/* A new merger for the first input's dimension. */
static int merge_create(const merge_args *ma, uint32_t dim, chrys_merger **m)
{
    chrys_merge_opts o;
    chrys_merge_opts_init(&o);
    o.dim = dim;
    /* threshold: the flag, else the configured one, else 0.85 (0.90 for the skill merger) */
    if (strcmp(cfg_source("merge_threshold"), "default")) o.threshold = cfg_double("merge_threshold");
    else if (ma->variant == CHRYS_MERGE_SKILL) o.threshold = 0.90;
    if (!(o.index_spec = cfg_index_spec())) return EXIT_USAGE;
    /* the merger's own default switch point (50,000) unless one was set */
    if (strcmp(cfg_source("auto_threshold"), "default")) o.auto_threshold = cfg_uint("auto_threshold");
    o.memory_budget = cfg_uint("memory_budget");
    o.ef_construction = (uint32_t)ma->efc;
    char *msg = NULL;
    int rc = chrys_merger_new(&o, m, &msg);
    if (rc) cli_error("%s", msg ? msg : chrys_errstr(rc));
    chrys_free(msg);
    return rc ? cli_exit_for(rc) : EXIT_OK;
}

/* The options given replace the stored ones; the others keep their stored values. */
static int merge_configure(chrys_merger *m, const merge_args *ma, metrics_ctx *mc)
{
    chrys_merge_opts o = {sizeof o};
    chrys_merger_get_opts(m, &o);
    if (!isnan(ma->threshold)) o.threshold = ma->threshold;
    if (ma->variant >= 0) o.variant = (chrys_merge_variant)ma->variant;
    if (!isnan(ma->w[0])) {
        o.weight_old = ma->w[0];
        o.weight_new = ma->w[1];
    }
    if (ma->renorm >= 0) o.renormalize = ma->renorm;
    if (ma->mean >= 0) o.mean_update = ma->mean;
    o.skip_invalid = ma->skip_invalid;
    if (ma->batch >= 0) o.batch_size = (uint32_t)ma->batch;
    o.n_threads = (uint32_t)ma->threads;
    o.slow_search_s = ma->slow;
    o.on_search = on_search;
    o.user = mc;
    o.exact = ma->exact;
    o.verify = ma->verify;
    o.nprobe = (uint32_t)ma->nprobe;
    o.confirm_margin = ma->margin;
    o.ef_search = (uint32_t)ma->ef;
    if (chrys_merger_configure(m, &o)) {
        cli_error("%s", chrys_merger_errmsg(m));
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* Merge one read chunk of an input; base: its records merged before this chunk. A failing record
 * is named by its number in the input (the library's record of the batch, from its error info). */
static int merge_records(chrys_merger *m, const char *path, const vecset *vs, size_t base, progress *pb)
{
    chrys_merge_stats now = {sizeof now};
    chrys_merger_get_stats(m, &now);
    chrys_merge_record *recs = malloc((vs->n ? vs->n : 1) * sizeof *recs);
    if (!recs) {
        cli_error("out of memory");
        return EXIT_FAIL;
    }
    for (size_t i = 0; i < vs->n; i++) {
        int empty = vs->empty && vs->empty[i];
        recs[i] = (chrys_merge_record){vs->ids ? vs->ids[i] : now.next_record_id + i, empty ? NULL : vs->data + i * (vs->stride ? vs->stride : vs->dim),
                                       empty ? 0 : vs->dim, vs->meta ? vs->meta[i] : NULL};
    }
    /* A library call per chunk (the progress line moves between calls). On the exact path each
     * call codes every entry for its screen and draws a basis, so calls are large there (8,192
     * cost a 20,000-record merge 3 codings and bases). On the graph a call reserves room for
     * all its records before the first change, and a larger reservation grew the index once
     * more near the end of the 1M-record benchmark (peak 3.3 -> 4.8 GB, the copy of a glibc
     * realloc): 8,192 there. */
    chrys_merge_opts o = {sizeof o};
    chrys_merger_get_opts(m, &o);
    uint64_t graph_at = o.auto_threshold ? o.auto_threshold : 50000;
    int code = EXIT_OK;
    for (size_t i = 0, chunk; i < vs->n && !code; i += chunk) {
        chrys_merge_stats st = {sizeof st};
        chrys_merger_get_stats(m, &st);
        chunk = o.exact || st.entries < graph_at ? MERGE_STREAM_ROWS : 8192;
        size_t n = vs->n - i < chunk ? vs->n - i : chunk;
        int rc = chrys_merger_merge(m, n, recs + i, NULL);
        if (rc) {
            progress_end(pb);
            chrys_error_info ei = {sizeof ei};
            chrys_merger_get_error_info(m, &ei);
            size_t r = i + (size_t)ei.record;
            long j = ei.record >= 0 && vs->row_bytes && recs[r].vec ? vec_first_nonfinite_cli(recs[r].vec, vs->dim) : -1;
            if (j >= 0) /* a streamed file, not checked when read: named as the reader names it */
                cli_error("%s: record %zu (byte offset %zu): component %ld is %s", path, base + r,
                          vs->file_off + r * vs->row_bytes + (size_t)j * 4, j, isnan(recs[r].vec[j]) ? "NaN" : "infinite");
            else if (ei.record >= 0)
                cli_error("%s: record %zu (id %llu): %s", path, base + r, (unsigned long long)recs[r].id, ei.reason);
            else cli_error("%s: %s", path, ei.message);
            code = cli_exit_for(rc);
        } else progress_update(pb, base + i + n);
    }
    free(recs);
    return code;
}

typedef struct merge_run {
    chrys_merger *m;
    chrys_embedder *embedder;
    metrics_ctx mc;
    size_t read_records, parse_skipped;
} merge_run;

/* Read the next part of input path: the whole input, or a streamed fvecs/raw file's next chunk. */
static int merge_read(const merge_args *ma, merge_run *r, const char *path, vstream *vsm, int streaming, vecset *vs)
{
    char err[512];
    int rc;
    memset(vs, 0, sizeof *vs);
    if (streaming) rc = vstream_next(vsm, MERGE_STREAM_ROWS, vs, err, sizeof err);
    else if (ma->do_embed) rc = embed_input(path, &ma->ec, r->embedder, ma->select, vs, err, sizeof err);
    else rc = read_input(path, ma->fmt, (uint32_t)ma->dim, ma->select, ma->skip_invalid, ma->meta_path, vs, err, sizeof err);
    if (rc) cli_error("%s", err);
    return rc ? cli_exit_for(rc) : EXIT_OK;
}

/* Merge one input: read (a chunk at a time for a large fvecs / raw file, never whole), create the
 * merger from the first records if the store is new, apply the options, merge. */
static int merge_input(const merge_args *ma, merge_run *r, const char *path)
{
    vstream vsm = {0};
    int streaming = !ma->do_embed && !ma->meta_path && !strcmp(ma->select, "all") &&
                    vstream_open(path, ma->fmt, (uint32_t)ma->dim, &vsm) == CHRYS_OK;
    /* the merger's validation checks every component before the first decision (and names the
     * record, turned into the reader's message above); --skip-invalid keeps the reader's check,
     * which fails on a NaN in a streamed file rather than skipping it */
    vsm.check_finite = ma->skip_invalid;
    progress pb;
    int pb_on = 0, code = EXIT_OK;
    size_t base = 0; /* records of this input merged before the current chunk */
    while (!code) {
        vecset vs;
        if ((code = merge_read(ma, r, path, &vsm, streaming, &vs))) {
            if (pb_on) progress_end(&pb);
            break;
        }
        if (streaming && vs.n == 0) break; /* the end of a streamed file */
        if (r->embedder) embed_cli_report(r->embedder);
        r->parse_skipped += vs.n_skipped;
        if (vs.n_skipped) fprintf(stderr, "chrysalis: %s: skipped %zu invalid records\n", path, vs.n_skipped);
        if (!r->m) code = merge_create(ma, vs.dim, &r->m);
        chrys_merge_opts o = {sizeof o};
        if (!code) chrys_merger_get_opts(r->m, &o);
        if (!code && vs.n && vs.dim != o.dim) {
            cli_error("%s: vectors have dimension %u but %s has %u", path, vs.dim, ma->store, o.dim);
            code = EXIT_DATA;
        }
        if (!code) code = merge_configure(r->m, ma, &r->mc);
        if (!code && !pb_on) {
            progress_start(&pb, "merge", streaming ? vsm.n : vs.n);
            pb_on = 1;
        }
        if (!code) code = merge_records(r->m, path, &vs, base, &pb);
        if (!code) {
            r->read_records += vs.n;
            base += vs.n;
        }
        vecset_free(&vs);
        if (!streaming) break;
    }
    if (pb_on && !code) progress_end(&pb);
    vstream_close(&vsm);
    return code;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The entries' merged_count, sorted (for the histogram). */
static uint32_t *sorted_counts(chrys_merger *m, uint64_t entries)
{
    uint32_t *counts = malloc((entries ? entries : 1) * sizeof *counts);
    if (!counts) return NULL;
    for (uint64_t e = 0; e < entries; e++) {
        chrys_merge_entry en = {sizeof en};
        chrys_merger_get_entry(m, e, &en, NULL);
        counts[e] = en.merged_count;
    }
    qsort(counts, entries, sizeof *counts, cmp_u32);
    return counts;
}

typedef struct merge_summary {
    const char *store;
    chrys_merge_stats after;
    chrys_merge_opts o;
    chrys_index_info ii;
    uint64_t merged, added, skipped;
    size_t records;
    double secs;
    int graph;
    const uint32_t *counts;
} merge_summary;

static void print_summary_json(const merge_summary *sm, const metrics_ctx *mc)
{
    const chrys_merge_stats *a = &sm->after;
    printf("{\"store\":\"%s\",\"records\":%zu,\"merged\":%llu,\"added\":%llu,\"skipped\":%llu,\"entries\":%llu,"
           "\"threshold\":%g,\"variant\":\"%s\",\"seconds\":%.3f,\"searches\":%zu,\"slow_searches\":%zu,"
           "\"merged_count_histogram\":{",
           sm->store, sm->records, (unsigned long long)sm->merged, (unsigned long long)sm->added,
           (unsigned long long)sm->skipped, (unsigned long long)a->entries, sm->o.threshold,
           sm->o.variant == CHRYS_MERGE_SKILL ? "skill" : "embedding", sm->secs, mc->n_searches, mc->n_slow);
    for (uint64_t e = 0, first = 1; e < a->entries;) {
        uint64_t f = e;
        while (f < a->entries && sm->counts[f] == sm->counts[e]) f++;
        printf("%s\"%u\":%llu", first ? "" : ",", sm->counts[e], (unsigned long long)(f - e));
        first = 0;
        e = f;
    }
    printf("},\"index_backed\":{\"records\":%llu,\"confirmed\":%llu,\"verified\":%llu,\"disagreements\":%llu,"
           "\"relinked\":%llu},\"index\":{\"spec\":\"%s\",\"graph\":%s,\"exact\":%s,\"plan_reason\":\"%s\"}}\n",
           (unsigned long long)a->approx_records, (unsigned long long)a->confirmations,
           (unsigned long long)a->verified, (unsigned long long)a->disagreements, (unsigned long long)a->relinks,
           sm->ii.spec, sm->graph ? "true" : "false", !sm->graph || sm->o.exact ? "true" : "false", sm->ii.plan_reason);
}

static void print_summary_text(const merge_summary *sm, const metrics_ctx *mc)
{
    const chrys_merge_stats *a = &sm->after;
    /* which path decided: the exact scan (the exact merger's decisions) or the HNSW graph */
    const char *how = !sm->graph    ? "exact scan (the exact merger's decisions)"
                      : sm->o.exact ? "exact scan (--exact; the graph is kept but not used to decide)"
                                    : "the graph's candidates, near-threshold decisions confirmed by exact scan";
    printf("%s: merged %zu records in %.3f s (threshold %g, %s merger)\n", sm->store, sm->records, sm->secs,
           sm->o.threshold, sm->o.variant == CHRYS_MERGE_SKILL ? "skill" : "embedding");
    printf("  merged:   %llu\n  added:    %llu\n  skipped:  %llu\n  entries:  %llu (store total)\n",
           (unsigned long long)sm->merged, (unsigned long long)sm->added, (unsigned long long)sm->skipped,
           (unsigned long long)a->entries);
    printf("  merged_count histogram:");
    for (uint64_t e = 0; e < a->entries;) {
        uint64_t f = e;
        while (f < a->entries && sm->counts[f] == sm->counts[e]) f++;
        printf(" %u:%llu", sm->counts[e], (unsigned long long)(f - e));
        e = f;
    }
    printf("\n  searches: %zu (%.3f s), slow: %zu\n", mc->n_searches, mc->total_s, mc->n_slow);
    printf("  index:    %s, %s%s%s\n", sm->ii.spec, how, sm->ii.plan_reason[0] ? "; planner: " : "", sm->ii.plan_reason);
    if (a->approx_records)
        printf("  index-backed: %llu records from the index's candidates, %llu confirmed by exact scan, "
               "%llu entries relinked\n",
               (unsigned long long)a->approx_records, (unsigned long long)a->confirmations,
               (unsigned long long)a->relinks);
    if (a->verified)
        printf("  verify: %llu of %llu decisions differ from the exact scan (%.4f%%)\n",
               (unsigned long long)a->disagreements, (unsigned long long)a->verified,
               100.0 * a->disagreements / a->verified);
}

static void print_summary(const merge_args *ma, const merge_run *r, const chrys_merge_stats *before, double t0)
{
    merge_summary sm = {.store = ma->store, .after = {sizeof sm.after}, .o = {sizeof sm.o}, .ii = {sizeof sm.ii}};
    chrys_merger_get_stats(r->m, &sm.after);
    uint32_t *counts = sorted_counts(r->m, sm.after.entries);
    if (!counts) {
        cli_error("out of memory");
        return;
    }
    sm.counts = counts;
    sm.secs = now_seconds() - t0;
    sm.merged = sm.after.merged - before->merged;
    sm.added = sm.after.added - before->added;
    sm.skipped = sm.after.skipped - before->skipped + r->parse_skipped;
    sm.records = r->read_records + r->parse_skipped;
    chrys_merger_get_opts(r->m, &sm.o);
    chrys_index_get_info(chrys_merger_index(r->m), &sm.ii);
    sm.graph = sm.ii.kind != CHRYS_INDEX_FLAT;
    if (ma->json) print_summary_json(&sm, &r->mc);
    else print_summary_text(&sm, &r->mc);
    free(counts);
}

int cmd_merge(int argc, char **argv)
{
    merge_args ma = {.variant = -1, .renorm = -1, .mean = -1, .fmt = FMT_AUTO, .batch = -1, .select = "all",
                     .margin = 0.01, .threshold = NAN, .w = {NAN, NAN}};
    ma.nprobe = (long)cfg_uint("nprobe");
    ma.ef = (long)cfg_uint("ef_search");
    ma.efc = strcmp(cfg_source("ef_construction"), "default") ? (long)cfg_uint("ef_construction") : 0;
    ma.slow = cfg_double("slow_search");
    int code = merge_options(argc, argv, &ma);
    if (code >= 0) return code;
    cli_set_threads(ma.threads);
    double t0 = now_seconds();
    merge_run r = {.mc = {NULL, ma.slow, 0, 0, 0}};
    if (ma.log_path && !(r.mc.log = fopen(ma.log_path, "a"))) {
        cli_error("--metrics-log: cannot open %s", ma.log_path);
        return EXIT_FAIL;
    }
    char *msg = NULL;
    chrys_merge_stats before = {sizeof before};
    chrys_lock *lock = NULL;
    /* Held from before the store is read until after its rename: a concurrent merge waits here
     * and then reads the store this one wrote, so neither run's records are lost. */
    if ((code = cli_lock_store(ma.store, ma.no_wait, &lock)) || (code = merge_open(ma.store, &r.m))) goto done;
    if (r.m) chrys_merger_get_stats(r.m, &before);
    if (ma.do_embed && embed_cli_make(&ma.ec, &r.embedder)) {
        code = EXIT_USAGE;
        goto done;
    }
    for (int a = 0; a < ma.n_inputs; a++)
        if ((code = merge_input(&ma, &r, ma.inputs[a]))) goto done;
    int rc;
    if ((rc = chrys_merger_mark_run(r.m)) || (rc = chrys_merger_save(r.m, ma.store, &msg))) {
        cli_error("%s", msg ? msg : chrys_merger_errmsg(r.m));
        code = cli_exit_for(rc);
        goto done;
    }
    if (!ma.quiet) print_summary(&ma, &r, &before, t0);
done:
    chrys_store_unlock(lock);
    if (r.mc.log) fclose(r.mc.log);
    chrys_free(msg);
    chrys_merger_free(r.m);
    chrys_embedder_free(r.embedder);
    return code;
}

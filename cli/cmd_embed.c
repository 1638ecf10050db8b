/*
 * cmd_embed.c: `chrysalis embed INPUT.jsonl`, plus the option
 * parsing for providers shared with `chrysalis merge --embed`.
 */
#include <cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char *EMBED_OPTIONS_HELP =
    "  --provider P           deterministic (default; Chrysalis-compatible, offline), openai, voyage, ollama\n"
    "  --model M              e.g. voyage-3, text-embedding-3-large, nomic-embed-text\n"
    "  --embed-dim D          dimensions expected (default 1024; sent as \"dimensions\" for openai)\n"
    "  --base-url URL         API base (defaults: openai https://api.openai.com/v1, voyage\n"
    "                         https://api.voyageai.com/v1, ollama http://localhost:11434)\n"
    "  --api-key-env VAR      environment variable holding the key (defaults OPENAI_API_KEY,\n"
    "                         VOYAGE_API_KEY; none for ollama). The key is never printed.\n"
    "  --text-field F         JSONL field holding the text (default \"text\")\n"
    "  --cache FILE           SQLite embedding cache (default: none); --no-cache\n"
    "  --embed-batch N        texts per request (default 128)\n"
    "  --timeout S, --retries N, --rate R   per-request time-out, retries, requests per second\n"
    "  --concurrency N        requests in flight at once, 1..256 (default 4; config embed_concurrency)\n"
    "  --fallback-deterministic            if the provider fails for good, use the deterministic one\n";

int embed_opt(embed_cli *ec, int c, const char *arg)
{
    char *end;
    switch (c) {
    case 1001:
        ec->provider = arg;
        if (strcmp(arg, "deterministic") && strcmp(arg, "openai") && strcmp(arg, "voyage") && strcmp(arg, "ollama")) {
            cli_error("--provider: expected deterministic, openai, voyage or ollama, got '%s'", arg);
            return -1;
        }
        return 1;
    case 1002: ec->model = arg; return 1;
    case 1003:
        ec->dim = strtol(arg, &end, 10);
        if (*end || ec->dim < 1 || ec->dim > CHRYS_MAX_DIM) {
            cli_error("--dim: expected 1..%d, got '%s'", CHRYS_MAX_DIM, arg);
            return -1;
        }
        return 1;
    case 1004: ec->base_url = arg; return 1;
    case 1005: ec->key_env = arg; return 1;
    case 1006: ec->text_field = arg; return 1;
    case 1007: ec->cache = arg; return 1;
    case 1008: ec->cache = NULL; ec->no_cache = 1; return 1;
    case 1009:
        ec->batch = strtol(arg, &end, 10);
        if (*end || ec->batch < 1 || ec->batch > 100000) {
            cli_error("--batch: expected 1..100000, got '%s'", arg);
            return -1;
        }
        return 1;
    case 1010:
        ec->timeout = strtod(arg, &end);
        if (*end || !(ec->timeout > 0)) {
            cli_error("--timeout: expected seconds > 0, got '%s'", arg);
            return -1;
        }
        return 1;
    case 1011:
        ec->retries = strtol(arg, &end, 10);
        if (*end || ec->retries < 0 || ec->retries > 100) {
            cli_error("--retries: expected 0..100, got '%s'", arg);
            return -1;
        }
        return 1;
    case 1012:
        ec->rate = strtod(arg, &end);
        if (*end || ec->rate < 0) {
            cli_error("--rate: expected requests per second >= 0, got '%s'", arg);
            return -1;
        }
        return 1;
    case 1013: ec->fallback = 1; return 1;
    case 1014:
        errno = 0;
        ec->concurrency = strtol(arg, &end, 10);
        if (!*arg || *end || errno || ec->concurrency < 1 || ec->concurrency > CHRYS_MAX_CONCURRENCY) {
            cli_error("--concurrency: expected requests in flight 1..%d, got '%s'", CHRYS_MAX_CONCURRENCY, arg);
            return -1;
        }
        return 1;
    default: return 0;
    }
}

void embed_cli_init(embed_cli *ec)
{
    memset(ec, 0, sizeof *ec);
    ec->cache = cfg_get("cache")[0] ? cfg_get("cache") : NULL; /* --cache / --no-cache override */
    ec->provider = "deterministic";
    ec->dim = 1024;
    ec->text_field = "text";
    ec->retries = -1;
}

int embed_cli_make(const embed_cli *ec, chrys_embedder **out)
{
    chrys_embed_opts o;
    chrys_embed_opts_init(&o);
    o.dim = (uint32_t)ec->dim;
    if (!strcmp(ec->provider, "openai")) {
        o.provider = CHRYS_PROVIDER_OPENAI;
        o.base_url = ec->base_url ? ec->base_url : "https://api.openai.com/v1";
        o.model = ec->model ? ec->model : "text-embedding-3-large";
        o.api_key_env = ec->key_env ? ec->key_env : "OPENAI_API_KEY";
        o.send_dimensions = 1;
    } else if (!strcmp(ec->provider, "voyage")) {
        o.provider = CHRYS_PROVIDER_OPENAI;
        o.base_url = ec->base_url ? ec->base_url : "https://api.voyageai.com/v1";
        o.model = ec->model ? ec->model : "voyage-3";
        o.api_key_env = ec->key_env ? ec->key_env : "VOYAGE_API_KEY";
    } else if (!strcmp(ec->provider, "ollama")) {
        o.provider = CHRYS_PROVIDER_OLLAMA;
        o.base_url = ec->base_url ? ec->base_url : "http://localhost:11434";
        o.model = ec->model ? ec->model : "nomic-embed-text";
        o.api_key_env = ec->key_env;
    }
    if (ec->batch) o.batch_max_items = (uint32_t)ec->batch;
    if (ec->timeout > 0) o.timeout_s = ec->timeout;
    if (ec->retries >= 0) o.max_retries = (uint32_t)ec->retries;
    o.rate_per_s = ec->rate;
    o.fallback_deterministic = ec->fallback;
    if (ec->concurrency) o.concurrency = (uint32_t)ec->concurrency;
    else {
        uint64_t c = cfg_uint("embed_concurrency");
        if (c < 1 || c > CHRYS_MAX_CONCURRENCY) {
            cli_error("embed_concurrency: expected requests in flight 1..%d, got %llu", CHRYS_MAX_CONCURRENCY,
                      (unsigned long long)c);
            return CHRYS_INVALID;
        }
        o.concurrency = (uint32_t)c;
    }
    o.cache_path = ec->cache;
    char *msg = NULL;
    int rc = chrys_embedder_new(&o, out, &msg);
    if (rc) cli_error("%s", msg ? msg : chrys_errstr(rc));
    chrys_free(msg);
    return rc;
}

void embed_cli_report(chrys_embedder *e)
{
    chrys_embed_stats st = {sizeof st};
    chrys_embedder_stats(e, &st);
    fprintf(stderr,
            "chrysalis: embedded %llu texts: %llu from the cache (API calls saved), %llu by the provider in %llu "
            "requests (%llu retries)%s",
            (unsigned long long)st.texts, (unsigned long long)st.cache_hits, (unsigned long long)st.provider_texts,
            (unsigned long long)st.requests, (unsigned long long)st.retries, st.fallback_texts ? "" : "\n");
    if (st.fallback_texts)
        fprintf(stderr, "; %llu by the deterministic FALLBACK after provider errors: %s\n",
                (unsigned long long)st.fallback_texts, chrys_embedder_errmsg(e));
}

/* Embed the text field of every record of a JSONL buffer. texts and metas are parallel arrays. */
int embed_jsonl_records(const char *name, const char *buf, size_t len, const char *field, char ***texts_out,
                        char ***metas_out, uint64_t **ids_out, int *has_ids, size_t *n_out, char *err, size_t errlen)
{
    size_t cap = 0, n = 0, line = 0, pos = 0;
    char **texts = NULL, **metas = NULL;
    uint64_t *ids = NULL;
    *has_ids = -1;
    int rc = CHRYS_OK;
    while (pos < len && !rc) {
        const char *start = buf + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t l = nl ? (size_t)(nl - start) : len - pos;
        pos += l + (nl ? 1 : 0);
        line++;
        size_t i = 0;
        while (i < l && (start[i] == ' ' || start[i] == '\t' || start[i] == '\r')) i++;
        if (i == l) continue;
        cJSON *o = cJSON_ParseWithLength(start, l);
        const cJSON *t = o ? cJSON_GetObjectItemCaseSensitive(o, field) : NULL;
        const cJSON *id = o ? cJSON_GetObjectItemCaseSensitive(o, "id") : NULL;
        if (!cJSON_IsObject(o)) {
            snprintf(err, errlen, "%s:%zu: malformed JSON object", name, line);
            rc = CHRYS_INVALID;
        } else if (!cJSON_IsString(t)) {
            snprintf(err, errlen, "%s:%zu: field \"%s\" missing or not a string", name, line, field);
            rc = CHRYS_INVALID;
        } else if ((*has_ids >= 0 && *has_ids != (id != NULL)) ||
                   (id && (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble != floor(id->valuedouble)))) {
            snprintf(err, errlen, "%s:%zu: \"id\" must be a non-negative integer on every record or on none", name, line);
            rc = CHRYS_INVALID;
        } else {
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                texts = realloc(texts, cap * sizeof *texts);
                metas = realloc(metas, cap * sizeof *metas);
                ids = realloc(ids, cap * sizeof *ids);
            }
            *has_ids = id != NULL;
            ids[n] = id ? (uint64_t)id->valuedouble : 0;
            texts[n] = strdup(t->valuestring);
            cJSON_DeleteItemFromObjectCaseSensitive(o, "id");
            cJSON_DeleteItemFromObjectCaseSensitive(o, "embedding");
            metas[n] = cJSON_PrintUnformatted(o);
            n++;
        }
        cJSON_Delete(o);
    }
    if (!rc && n == 0) {
        snprintf(err, errlen, "%s: no records", name);
        rc = CHRYS_INVALID;
    }
    if (rc) {
        for (size_t i = 0; i < n; i++) {
            free(texts[i]);
            free(metas[i]);
        }
        free(texts);
        free(metas);
        free(ids);
        return rc;
    }
    *texts_out = texts;
    *metas_out = metas;
    *ids_out = ids;
    *n_out = n;
    return CHRYS_OK;
}

static const char *HELP_EMBED =
    "usage: chrysalis embed INPUT.jsonl [options] [-o OUT.jsonl|OUT.fvecs]\n"
    "\n"
    "Embed the text of each JSONL record. Output: JSONL (the record with \"embedding\" added; default,\n"
    "on stdout) or fvecs (by the -o extension or --format). With --cache, texts embedded before by\n"
    "the same provider, model and dimensions are never sent again.\n"
    "\n"
    "options:\n";

int cmd_embed(int argc, char **argv)
{
    static const struct option opts[] = {EMBED_LONG_OPTIONS,
                                         {"output", required_argument, 0, 'o'},
                                         {"format", required_argument, 0, 'f'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    embed_cli ec;
    embed_cli_init(&ec);
    const char *out_path = NULL, *format = NULL;
    int c, r;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        if ((r = embed_opt(&ec, c, optarg)) < 0) return EXIT_USAGE;
        if (r) continue;
        if (c == 'o') out_path = optarg;
        else if (c == 'f') format = optarg;
        else if (c == 'h') {
            fputs(HELP_EMBED, stdout);
            fputs(EMBED_OPTIONS_HELP, stdout);
            puts("  -o FILE, --format jsonl|fvecs");
            return EXIT_OK;
        } else {
            fputs(HELP_EMBED, stderr);
            return EXIT_USAGE;
        }
    }
    if (argc - optind != 1) {
        cli_error("embed: need exactly one INPUT.jsonl");
        return EXIT_USAGE;
    }
    if (!format) {
        const char *dot = out_path ? strrchr(out_path, '.') : NULL;
        format = dot && !strcmp(dot, ".fvecs") ? "fvecs" : "jsonl";
    }
    if (strcmp(format, "jsonl") && strcmp(format, "fvecs")) {
        cli_error("--format: expected jsonl or fvecs, got '%s'", format);
        return EXIT_USAGE;
    }
    const char *in = argv[optind];
    unsigned char *buf;
    size_t len, n = 0;
    char err[512];
    int rc = read_all(in, &buf, &len, err, sizeof err), code = EXIT_OK, has_ids;
    if (rc) {
        cli_error("%s", err);
        return cli_exit_for(rc);
    }
    char **texts = NULL, **metas = NULL;
    uint64_t *ids = NULL;
    rc = embed_jsonl_records(strcmp(in, "-") ? in : "(stdin)", (const char *)buf, len, ec.text_field, &texts, &metas,
                             &ids, &has_ids, &n, err, sizeof err);
    free(buf);
    if (rc) {
        cli_error("%s", err);
        return cli_exit_for(rc);
    }
    chrys_embedder *e = NULL;
    float *v = malloc(n * (size_t)ec.dim * sizeof(float));
    FILE *out = NULL;
    if (!v) {
        cli_error("out of memory");
        code = EXIT_FAIL;
        goto done;
    }
    if (embed_cli_make(&ec, &e)) {
        code = EXIT_USAGE;
        goto done;
    }
    if ((rc = chrys_embedder_embed(e, n, (const char *const *)texts, v))) {
        cli_error("%s: %s", in, chrys_embedder_errmsg(e));
        code = cli_exit_for(rc);
        goto done;
    }
    embed_cli_report(e);
    out = out_path ? fopen(out_path, "wb") : stdout;
    if (!out) {
        cli_error("%s: cannot open for writing", out_path);
        code = EXIT_FAIL;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const float *row = v + i * ec.dim;
        if (!strcmp(format, "fvecs")) {
            int32_t d = (int32_t)ec.dim;
            fwrite(&d, 4, 1, out);
            fwrite(row, 4, (size_t)ec.dim, out);
            continue;
        }
        fputc('{', out);
        if (has_ids == 1) fprintf(out, "\"id\":%llu,", (unsigned long long)ids[i]);
        const char *m = metas[i];
        if (m && m[0] == '{' && m[1] != '}') fprintf(out, "%.*s,", (int)strlen(m) - 2, m + 1);
        fputs("\"embedding\":[", out);
        for (long j = 0; j < ec.dim; j++) fprintf(out, j ? ",%.9g" : "%.9g", (double)row[j]);
        fputs("]}\n", out);
    }
    if (ferror(out)) {
        cli_error("write error");
        code = EXIT_FAIL;
    }
done:
    if (out && out != stdout) fclose(out);
    chrys_embedder_free(e);
    for (size_t i = 0; i < n; i++) {
        free(texts[i]);
        free(metas[i]);
    }
    free(texts);
    free(metas);
    free(ids);
    free(v);
    return code;
}

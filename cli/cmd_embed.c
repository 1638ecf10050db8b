/*
 * cmd_embed.c: `chrysalis embed INPUT.jsonl`, plus the option
 * parsing for providers shared with `chrysalis merge --embed`.
 */
#include <cJSON.h>
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

void embed_cli_options(embed_cli *ec, cli_opt tab[EMBED_N_OPTIONS])
{
    const cli_opt t[EMBED_N_OPTIONS] = {
        {"provider", 0, OPT_CHOICE, &ec->provider, .choices = "deterministic|openai|voyage|ollama"},
        {"model", 0, OPT_STRING, &ec->model},
        {"embed-dim", 0, OPT_LONG, &ec->dim, 1, CHRYS_MAX_DIM},
        {"base-url", 0, OPT_STRING, &ec->base_url},
        {"api-key-env", 0, OPT_STRING, &ec->key_env},
        {"text-field", 0, OPT_STRING, &ec->text_field},
        {"cache", 0, OPT_STRING, &ec->cache},
        {"no-cache", 0, OPT_UNSET, &ec->cache},
        {"embed-batch", 0, OPT_LONG, &ec->batch, 1, 100000},
        {"timeout", 0, OPT_DOUBLE, &ec->timeout, 0, INFINITY, "seconds", .flags = OPT_MIN_EXCL},
        {"retries", 0, OPT_LONG, &ec->retries, 0, 100},
        {"rate", 0, OPT_DOUBLE, &ec->rate, 0, INFINITY, "requests per second"},
        {"fallback-deterministic", 0, OPT_FLAG, &ec->fallback},
        {"concurrency", 0, OPT_LONG, &ec->concurrency, 1, CHRYS_MAX_CONCURRENCY, "requests in flight"},
        {0},
    };
    memcpy(tab, t, sizeof t);
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
    chrys_embedder_get_stats(e, &st);
    fprintf(stderr,
            "chrysalis: embedded %llu texts: %llu from the cache (API calls saved), %llu by the provider in %llu "
            "requests (%llu retries)%s",
            (unsigned long long)st.texts, (unsigned long long)st.cache_hits, (unsigned long long)st.provider_texts,
            (unsigned long long)st.requests, (unsigned long long)st.retries, st.fallback_texts ? "" : "\n");
    if (st.fallback_texts)
        fprintf(stderr, "; %llu by the deterministic FALLBACK after provider errors: %s\n",
                (unsigned long long)st.fallback_texts, chrys_embedder_errmsg(e));
}

static void free_text_records(char **texts, char **metas, uint64_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(texts[i]);
        free(metas[i]);
    }
    free(texts);
    free(metas);
    free(ids);
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
        uint64_t id = 0;
        if (!cJSON_IsObject(o)) {
            snprintf(err, errlen, "%s:%zu: malformed JSON object", name, line);
            rc = CHRYS_INVALID;
        } else if (!cJSON_IsString(t)) {
            snprintf(err, errlen, "%s:%zu: field \"%s\" missing or not a string", name, line, field);
            rc = CHRYS_INVALID;
        } else if (!(rc = jsonl_record_id(o, has_ids, &id, name, line, err, errlen))) {
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                texts = realloc(texts, cap * sizeof *texts);
                metas = realloc(metas, cap * sizeof *metas);
                ids = realloc(ids, cap * sizeof *ids);
            }
            ids[n] = id;
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
        free_text_records(texts, metas, ids, n);
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
    "options:\n"
    "  -o FILE, --output FILE output file (default: stdout)\n"
    "  --format jsonl|fvecs   output format (default: by the -o extension, else jsonl)\n";

int cmd_embed(int argc, char **argv)
{
    embed_cli ec;
    embed_cli_init(&ec);
    const char *out_path = NULL, *format = NULL;
    cli_opt etab[EMBED_N_OPTIONS];
    embed_cli_options(&ec, etab);
    const cli_opt tab[] = {
        {.kind = OPT_INCLUDE, .sub = etab},
        {"output", 'o', OPT_STRING, &out_path},
        {"format", 0, OPT_CHOICE, &format, .choices = "jsonl|fvecs"},
        {0},
    };
    int npos, code = opts_run(tab, argc, argv, HELP_EMBED, EMBED_OPTIONS_HELP, &npos);
    if (code >= 0) return code;
    if (npos != 1) {
        cli_error("embed: need exactly one INPUT.jsonl");
        return EXIT_USAGE;
    }
    if (!format) {
        const char *dot = out_path ? strrchr(out_path, '.') : NULL;
        format = dot && !strcmp(dot, ".fvecs") ? "fvecs" : "jsonl";
    }
    const char *in = argv[1];
    unsigned char *buf;
    size_t len, n = 0;
    char err[512];
    int rc = read_all(in, &buf, &len, err, sizeof err), has_ids;
    code = EXIT_OK;
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
    free_text_records(texts, metas, ids, n);
    free(v);
    return code;
}

/*
 * embed.c: the embedder: providers, HTTP behaviour and the cache put together.
 *
 * embed(texts): every text's cache key is SHA-256(provider \0 model \0 dim \0 text); hits are
 * copied out; the distinct missing texts are sent to the provider in batches bounded by count and
 * bytes; each successful batch is validated (one vector per text, each of the expected size,
 * every value finite) and only then cached. HTTP requests go through a token bucket, time out,
 * and are retried on timeouts, connection errors, 429 and 5xx with exponential backoff and full
 * jitter, honouring Retry-After. Other 4xx replies, malformed JSON and wrong sizes fail at once.
 * A provider that fails for good is an error, unless fallback_deterministic was asked for: then
 * the deterministic provider fills in and stats.fallback_texts says so. The API key is read from
 * the named environment variable at each request and appears in no message.
 */
#include <cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "dynlib.h"
#include "embed.h"

struct chrys_embedder {
    chrys_embed_opts o;
    char *base_url, *model, *api_key_env, *cache_path;
    const char *provider_name; /* part of the cache key */
    const chrys_curl_api *cu; /* libcurl, loaded by the first HTTP embedder (dynlib.c) */
    CURLM *multi;
    CURL **easy; /* concurrency handles, one per slot */
    embcache cache;
    int has_cache;
    double tokens, last_refill;
    uint64_t rng;
    chrys_embed_stats st;
    char *errmsg;
    chrys_errpos errpos; /* the structured part of errmsg (chrys_embedder_get_error_info) */
};

static int efail(chrys_embedder *e, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int efail(chrys_embedder *e, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    chrys_fail_v(&e->errmsg, &e->errpos, rc, -1, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

/* A failure of text i of the call: "text I " + reason, i in the error info. */
static int efail_text(chrys_embedder *e, int rc, size_t i, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int efail_text(chrys_embedder *e, int rc, size_t i, const char *fmt, ...)
{
    char prefix[40];
    snprintf(prefix, sizeof prefix, "text %zu ", i);
    va_list ap;
    va_start(ap, fmt);
    chrys_fail_v(&e->errmsg, &e->errpos, rc, (int64_t)i, prefix, fmt, ap);
    va_end(ap);
    return rc;
}

const char *chrys_embedder_errmsg(const chrys_embedder *e) { return e && e->errmsg ? e->errmsg : ""; }

int chrys_embedder_get_error_info(const chrys_embedder *e, chrys_error_info *info)
{
    return e ? chrys_error_info_fill(e->errmsg, &e->errpos, info) : CHRYS_INVALID;
}

void chrys_embed_opts_init(chrys_embed_opts *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->provider = CHRYS_PROVIDER_DETERMINISTIC;
    o->model = "deterministic";
    o->dim = 1024;
    o->batch_max_items = 128;
    o->batch_max_bytes = 256u << 10;
    o->timeout_s = 30;
    o->max_retries = 5;
    o->backoff_base_s = 0.5;
    o->backoff_max_s = 30;
    o->rate_burst = 1;
    o->seed = 42;
    o->concurrency = 4;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_s(double s)
{
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static char *dup_or_null(const char *s) { return s ? chrys_strdup(s) : NULL; }

void chrys_embedder_free(chrys_embedder *e)
{
    if (!e) return;
    if (e->easy)
        for (uint32_t i = 0; i < e->o.concurrency; i++)
            if (e->easy[i]) e->cu->easy_cleanup(e->easy[i]);
    chrys_free(e->easy);
    if (e->multi) e->cu->multi_cleanup(e->multi);
    if (e->has_cache) cache_close(&e->cache);
    chrys_free(e->base_url);
    chrys_free(e->model);
    chrys_free(e->api_key_env);
    chrys_free(e->cache_path);
    chrys_free(e->errmsg);
    chrys_free(e);
}

int chrys_embedder_new(const chrys_embed_opts *opts, chrys_embedder **out, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!out) return CHRYS_INVALID;
    *out = NULL;
    /* field by field: a caller built against an older header has a shorter struct */
    chrys_embed_opts full;
    chrys_embed_opts_init(&full);
    if (chrys_struct_in(&full, sizeof full, opts, offsetof(chrys_embed_opts, seed) + sizeof(uint64_t)))
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "embed opts missing or struct_size too small");
    const chrys_embed_opts *o = &full;
    if (o->concurrency < 1 || o->concurrency > CHRYS_MAX_CONCURRENCY)
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "concurrency %u out of range 1..%d", o->concurrency,
                                CHRYS_MAX_CONCURRENCY);
    if ((unsigned)o->provider > CHRYS_PROVIDER_OLLAMA)
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "unknown provider %d", (int)o->provider);
    if (o->dim < 1 || o->dim > CHRYS_MAX_DIM)
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "dim %u out of range 1..%d", o->dim, CHRYS_MAX_DIM);
    if (o->provider != CHRYS_PROVIDER_DETERMINISTIC && (!o->base_url || !*o->base_url || !o->model || !*o->model))
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "an HTTP provider needs a base URL and a model");
    if (o->batch_max_items < 1 || o->batch_max_bytes < 1 || !(o->timeout_s > 0) || o->backoff_base_s < 0 ||
        o->backoff_max_s < 0 || o->rate_per_s < 0)
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "batch limits and timeout must be positive");
    chrys_embedder *e = chrys_calloc(1, sizeof *e);
    if (!e) return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "out of memory");
    e->o = *o;
    e->base_url = dup_or_null(o->base_url);
    e->model = chrys_strdup(o->provider == CHRYS_PROVIDER_DETERMINISTIC ? "deterministic" : o->model);
    e->api_key_env = dup_or_null(o->api_key_env);
    e->cache_path = dup_or_null(o->cache_path);
    e->provider_name = o->provider == CHRYS_PROVIDER_DETERMINISTIC ? "deterministic"
                       : o->provider == CHRYS_PROVIDER_OPENAI    ? "openai"
                                                                 : "ollama";
    e->o.base_url = e->base_url;
    e->o.model = e->model;
    e->o.api_key_env = e->api_key_env;
    e->o.cache_path = e->cache_path;
    e->tokens = o->rate_burst > 0 ? o->rate_burst : 1;
    e->last_refill = mono_now();
    e->rng = o->seed ? o->seed : 42;
    e->st.struct_size = sizeof e->st;
    int rc = CHRYS_OK;
    if (!e->model || (o->base_url && !e->base_url)) rc = chrys_set_errmsg(errmsg, CHRYS_NOMEM, "out of memory");
    if (!rc && o->provider != CHRYS_PROVIDER_DETERMINISTIC) {
        if (!(e->cu = chrys_curl(errmsg))) rc = CHRYS_ERROR;
        else if (!(e->multi = e->cu->multi_init()) ||
            !(e->easy = chrys_calloc(o->concurrency, sizeof *e->easy)))
            rc = chrys_set_errmsg(errmsg, CHRYS_NOMEM, "cannot initialise libcurl");
        for (uint32_t i = 0; !rc && i < o->concurrency; i++)
            if (!(e->easy[i] = e->cu->easy_init())) rc = chrys_set_errmsg(errmsg, CHRYS_NOMEM, "cannot initialise libcurl");
    }
    if (!rc && o->cache_path) {
        rc = cache_open(&e->cache, e->cache_path, o->cache_ttl_s, o->cache_max_entries, errmsg);
        e->has_cache = rc == CHRYS_OK;
    }
    if (rc) {
        chrys_embedder_free(e);
        return rc;
    }
    *out = e;
    return CHRYS_OK;
}

int chrys_embedder_get_stats(const chrys_embedder *e, chrys_embed_stats *st)
{
    if (!e || !st) return CHRYS_INVALID;
    return chrys_struct_out(st, &e->st, sizeof e->st);
}

/* ------------------------------------------------------------------------------------------
 * HTTP
 */
typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    buf *b = ud;
    size_t n = size * nmemb;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *p = chrys_realloc(b->p, cap);
        if (!p) return 0; /* makes curl fail the transfer */
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = 0;
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    double *retry_after = ud;
    size_t n = size * nmemb;
    if (n > 12 && !strncasecmp(data, "Retry-After:", 12)) {
        char tmp[64];
        size_t l = n - 12 < sizeof tmp - 1 ? n - 12 : sizeof tmp - 1;
        memcpy(tmp, data + 12, l);
        tmp[l] = 0;
        char *end;
        double v = strtod(tmp, &end);
        if (end != tmp && v >= 0) *retry_after = v; /* delta-seconds; an HTTP-date is ignored */
    }
    return n;
}

static double jitter(chrys_embedder *e)
{
    e->rng ^= e->rng << 13;
    e->rng ^= e->rng >> 7;
    e->rng ^= e->rng << 17;
    return (e->rng >> 11) * (1.0 / 9007199254740992.0);
}

/* A short, key-free excerpt of an error reply: its "error" message if it is JSON. */
static void reply_excerpt(const char *body, char *out, size_t cap)
{
    out[0] = 0;
    if (!body) return;
    cJSON *j = cJSON_Parse(body);
    const cJSON *err = j ? cJSON_GetObjectItemCaseSensitive(j, "error") : NULL;
    const cJSON *msg = cJSON_IsObject(err) ? cJSON_GetObjectItemCaseSensitive(err, "message") : err;
    if (cJSON_IsString(msg)) snprintf(out, cap, ": %s", msg->valuestring);
    else snprintf(out, cap, ": %.120s", body);
    cJSON_Delete(j);
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
}

/* The JSON request body for one batch (owned, free with cJSON_free), or NULL when out of memory. */
static char *batch_body(chrys_embedder *e, size_t count, const char *const *texts)
{
    cJSON *req = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    char *body = NULL;
    if (req && arr) {
        cJSON_AddStringToObject(req, "model", e->model);
        for (size_t i = 0; i < count; i++) cJSON_AddItemToArray(arr, cJSON_CreateString(texts[i]));
        cJSON_AddItemToObject(req, "input", arr);
        arr = NULL;
        if (e->o.provider == CHRYS_PROVIDER_OPENAI && e->o.send_dimensions) cJSON_AddNumberToObject(req, "dimensions", e->o.dim);
        body = cJSON_PrintUnformatted(req);
    }
    cJSON_Delete(req);
    cJSON_Delete(arr);
    return body;
}

/* Parse and validate one batch's reply; vectors into out[count*dim]. */
static int parse_reply(chrys_embedder *e, const char *url, const char *reply, size_t count, float *out)
{
    int openai = e->o.provider == CHRYS_PROVIDER_OPENAI, rc = CHRYS_OK;
    if (embed_reply_fast(reply, openai, count, e->o.dim, out)) { /* src/embed_json.c */
        e->st.provider_texts += count;
        return CHRYS_OK;
    }
    cJSON *rep = cJSON_Parse(reply ? reply : "");
    const cJSON *list = rep ? cJSON_GetObjectItemCaseSensitive(rep, openai ? "data" : "embeddings") : NULL;
    if (!cJSON_IsArray(list) || (size_t)cJSON_GetArraySize(list) != count) {
        rc = efail(e, CHRYS_INVALID, "%s: malformed reply (expected %zu embeddings in \"%s\")", url, count,
                   openai ? "data" : "embeddings");
        goto done;
    }
    size_t k = 0;
    for (const cJSON *it = list->child; it; it = it->next, k++) {
        size_t slot = k;
        const cJSON *vec = it;
        if (openai) {
            const cJSON *idx = cJSON_GetObjectItemCaseSensitive(it, "index");
            vec = cJSON_GetObjectItemCaseSensitive(it, "embedding");
            if (cJSON_IsNumber(idx)) {
                if (idx->valuedouble < 0 || idx->valuedouble >= (double)count) {
                    rc = efail(e, CHRYS_INVALID, "%s: malformed reply (index %g out of range)", url, idx->valuedouble);
                    goto done;
                }
                slot = (size_t)idx->valuedouble;
            }
        }
        if (!cJSON_IsArray(vec)) {
            rc = efail(e, CHRYS_INVALID, "%s: malformed reply (embedding %zu is not an array)", url, k);
            goto done;
        }
        int d = cJSON_GetArraySize(vec);
        if ((uint32_t)d != e->o.dim) {
            rc = efail(e, CHRYS_DIM, "%s: the provider returned %d dimensions, expected %u", url, d, e->o.dim);
            goto done;
        }
        float *row = out + slot * e->o.dim;
        int j = 0;
        for (const cJSON *v = vec->child; v; v = v->next, j++) {
            float f = cJSON_IsNumber(v) ? (float)v->valuedouble : NAN;
            if (!isfinite(f)) {
                rc = efail(e, CHRYS_INVALID, "%s: malformed reply (embedding %zu, component %d is not a finite number)", url, k, j);
                goto done;
            }
            row[j] = f;
        }
    }
    e->st.provider_texts += count;
done:
    cJSON_Delete(rep);
    return rc;
}

/* Token bucket without sleeping: 0 when a token was taken, else the seconds until one is due. */
static double rate_take(chrys_embedder *e, double now)
{
    if (e->o.rate_per_s <= 0) return 0;
    double burst = e->o.rate_burst > 0 ? e->o.rate_burst : 1;
    e->tokens += (now - e->last_refill) * e->o.rate_per_s;
    if (e->tokens > burst) e->tokens = burst;
    e->last_refill = now;
    if (e->tokens < 1) return (1 - e->tokens) / e->o.rate_per_s;
    e->tokens -= 1;
    return 0;
}

/* One batch of the HTTP pool. */
typedef struct hbatch {
    size_t m0, cnt;      /* miss[m0 .. m0+cnt) */
    char *body;          /* built when first sent */
    uint32_t attempt;    /* attempts made so far */
    double not_before;   /* backoff: not sent again before this time */
    int state;           /* 0 waiting, 1 in flight, 2 done */
    double retry_after;  /* from the reply being received */
} hbatch;

/* ------------------------------------------------------------------------------------------
 * embed
 */
/* SHA-256 of provider \0 model \0 dim \0 text. Returns 0, or -1 when out of memory. */
static int cache_key(const chrys_embedder *e, const char *text, unsigned char key[32])
{
    char dim[16];
    int dl = snprintf(dim, sizeof dim, "%u", e->o.dim);
    size_t lp = strlen(e->provider_name) + 1, lm = strlen(e->model) + 1, lt = strlen(text);
    size_t len = lp + lm + (size_t)dl + 1 + lt;
    unsigned char stackbuf[1024], *b = len <= sizeof stackbuf ? stackbuf : chrys_malloc(len);
    if (!b) return -1;
    memcpy(b, e->provider_name, lp);
    memcpy(b + lp, e->model, lm);
    memcpy(b + lp + lm, dim, (size_t)dl + 1);
    memcpy(b + lp + lm + dl + 1, text, lt);
    chrys_sha256(b, len, key);
    if (b != stackbuf) chrys_free(b);
    return 0;
}

/* Store one finished batch's vectors in the cache, in its own transaction, as soon as it returns:
 * a process killed later keeps every batch that completed. */
static int cache_batch(chrys_embedder *e, const unsigned char *keys, const size_t *miss, const char *const *texts,
                       const float *out, size_t m0, size_t cnt)
{
    if (!e->has_cache) return CHRYS_OK;
    int rc = cache_begin(&e->cache, &e->errmsg);
    if (rc) return rc;
    for (size_t j = 0; j < cnt && !rc; j++) {
        size_t i = miss[m0 + j];
        rc = cache_put(&e->cache, keys + i * 32, e->provider_name, e->model, e->o.dim, texts[i], out + i * e->o.dim,
                       &e->errmsg);
    }
    if (rc) {
        cache_rollback(&e->cache);
        return rc;
    }
    return cache_commit(&e->cache, &e->errmsg);
}

/* The HTTP provider: every batch through a pool of e->o.concurrency transfers on one thread
 * (libcurl's multi interface). A batch is sent when a slot is free, its backoff has passed, the
 * pool is not paused by a Retry-After and the token bucket has a token; the lowest-numbered ready
 * batch goes first. Each reply is validated and written to its texts' rows of out (so the order
 * of replies does not matter) and cached at once. After a batch fails for good no new batch is
 * started; those in flight finish (and are cached), and the first failure is returned. */

/* The pool's state, shared by the steps below (pool_open .. pool_close). */
typedef struct hpool {
    chrys_embedder *e;
    size_t nb;                /* batches */
    hbatch *bs;
    const size_t *miss;
    const char *const *texts;
    const unsigned char *keys;
    float *out, *bvec;        /* out[input rows], bvec: one batch's reply */
    char *url, *auth;
    struct curl_slist *hdr;
    uint32_t conc;
    size_t *slot_batch;       /* the batch in each slot, SIZE_MAX when free */
    buf *sbuf;                /* one reply buffer per slot, reused: a reply is 2.6 MB at 128 x 1024 */
    buf *spare;               /* a second per slot: a finished reply waits there to be read while
                                 the slot's next request is already out (pool_drive) */
    struct pend { uint32_t s; size_t b; CURLcode cc; long status; } *pend; /* replies waiting, oldest first */
    size_t npend;
    const char **bt;          /* one batch's texts, for batch_body */
    int rc, stop;             /* the first failure; no new batch is started */
    size_t done, next_unsent, in_flight;
    double pause_until;       /* a Retry-After pauses the whole pool */
} hpool;

/* The URL, the headers (with the API key) and the per-slot buffers; the failure in p->rc. */
static void pool_open(hpool *p)
{
    chrys_embedder *e = p->e;
    int openai = e->o.provider == CHRYS_PROVIDER_OPENAI;
    p->url = chrys_mprintf("%s%s", e->base_url, openai ? "/embeddings" : "/api/embed");
    const char *key = e->api_key_env ? getenv(e->api_key_env) : NULL;
    if (!p->url) {
        p->rc = efail(e, CHRYS_NOMEM, "out of memory");
        return;
    }
    if (e->api_key_env && (!key || !*key)) {
        p->rc = efail(e, CHRYS_INVALID, "%s: the API key variable %s is not set", p->url, e->api_key_env);
        return;
    }
    p->hdr = e->cu->slist_append(NULL, "Content-Type: application/json");
    p->auth = key ? chrys_mprintf("Authorization: Bearer %s", key) : NULL;
    if (p->auth) p->hdr = e->cu->slist_append(p->hdr, p->auth);
    p->conc = e->o.concurrency;
    p->slot_batch = chrys_calloc(p->conc, sizeof *p->slot_batch);
    p->sbuf = chrys_calloc(p->conc, sizeof *p->sbuf);
    p->spare = chrys_calloc(p->conc, sizeof *p->spare);
    p->pend = chrys_calloc(p->conc, sizeof *p->pend);
    p->bt = chrys_malloc((e->o.batch_max_items + 1) * sizeof *p->bt);
    if (!p->hdr || (key && !p->auth) || !p->slot_batch || !p->sbuf || !p->spare || !p->pend || !p->bt)
        p->rc = efail(e, CHRYS_NOMEM, "out of memory");
    for (uint32_t s = 0; p->slot_batch && s < p->conc; s++) p->slot_batch[s] = SIZE_MAX;
}

/* The next batch to send: a retry whose backoff has passed (oldest first), else the next unsent
 * one; SIZE_MAX when none, with *wait shortened to the earliest backoff. */
static size_t pool_pick(const hpool *p, double now, double *wait)
{
    size_t pick = SIZE_MAX;
    for (size_t b = 0; b < p->next_unsent && pick == SIZE_MAX; b++) /* retries first, oldest first */
        if (p->bs[b].state == 0 && p->bs[b].attempt > 0) {
            if (p->bs[b].not_before <= now) pick = b;
            else *wait = fmin(*wait, p->bs[b].not_before - now);
        }
    if (pick == SIZE_MAX && p->next_unsent < p->nb) pick = p->next_unsent;
    return pick;
}

/* Set up slot s's easy handle for batch b's request (reply into the slot's buffer). */
static void pool_setup_transfer(hpool *p, uint32_t s, hbatch *b)
{
    chrys_embedder *e = p->e;
    CURL *h = e->easy[s];
    e->cu->easy_reset(h);
    p->sbuf[s].n = 0;
    if (p->sbuf[s].p) p->sbuf[s].p[0] = 0;
    b->retry_after = -1;
    e->cu->easy_setopt(h, CURLOPT_URL, p->url);
    e->cu->easy_setopt(h, CURLOPT_HTTPHEADER, p->hdr);
    e->cu->easy_setopt(h, CURLOPT_POSTFIELDS, b->body);
    e->cu->easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(e->o.timeout_s * 1000));
    e->cu->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    e->cu->easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    e->cu->easy_setopt(h, CURLOPT_WRITEDATA, &p->sbuf[s]);
    e->cu->easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024); /* 2.6 MB replies: fewer reads than 16 KB ones */
    e->cu->easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    e->cu->easy_setopt(h, CURLOPT_HEADERDATA, &b->retry_after);
    e->cu->easy_setopt(h, CURLOPT_PRIVATE, (void *)(uintptr_t)s);
}

/* Send batch pick in a free slot (its body built on first send). Returns 0, or nonzero with
 * p->rc and p->stop set. */
static int pool_send(hpool *p, size_t pick)
{
    chrys_embedder *e = p->e;
    hbatch *b = &p->bs[pick];
    if (!b->body) {
        for (size_t j = 0; j < b->cnt; j++) p->bt[j] = p->texts[p->miss[b->m0 + j]];
        if (!(b->body = batch_body(e, b->cnt, p->bt))) {
            p->rc = efail(e, CHRYS_NOMEM, "out of memory");
            p->stop = 1;
            return -1;
        }
    }
    uint32_t s = 0;
    while (p->slot_batch[s] != SIZE_MAX) s++;
    pool_setup_transfer(p, s, b);
    if (e->cu->multi_add_handle(e->multi, e->easy[s]) != CURLM_OK) {
        p->rc = efail(e, CHRYS_NOMEM, "cannot start a transfer");
        p->stop = 1;
        return -1;
    }
    p->slot_batch[s] = pick;
    b->state = 1;
    b->attempt++;
    p->in_flight++;
    e->st.requests++;
    return 0;
}

/* Start what may start: until the slots are full, the pool is paused, no batch is ready or the
 * token bucket is empty; *wait shortened to when something may start. */
static void pool_start(hpool *p, double now, double *wait)
{
    while (!p->stop && p->in_flight < p->conc) {
        if (now < p->pause_until) {
            *wait = fmin(*wait, p->pause_until - now);
            break;
        }
        size_t pick = pool_pick(p, now, wait);
        if (pick == SIZE_MAX) break;
        double tw = rate_take(p->e, now);
        if (tw > 0) {
            *wait = fmin(*wait, tw);
            break;
        }
        if (pick == p->next_unsent) p->next_unsent++;
        if (pool_send(p, pick)) break;
    }
}

/* Sort a finished transfer: 1 for a 2xx reply, else 0 with the reason in last and *retryable
 * set for timeouts, connection errors, 429 and 5xx. */
static int pool_classify(const chrys_curl_api *cu, CURLcode cc, long status, const char *body, char *last, size_t cap, int *retryable)
{
    *retryable = 0;
    if (cc != CURLE_OK) {
        snprintf(last, cap, "%s", cu->easy_strerror(cc));
        *retryable = 1;
        return 0;
    }
    if (status >= 200 && status < 300) return 1;
    char ex[200];
    reply_excerpt(body, ex, sizeof ex);
    snprintf(last, cap, "HTTP %ld%s", status, ex);
    *retryable = status == 429 || status >= 500;
    return 0;
}

/* A 2xx reply: validated, written to its texts' rows of out and cached. Returns the
 * batch's failure (a cache failure goes to p->rc only). */
static int pool_accept(hpool *p, const char *reply, const hbatch *b)
{
    chrys_embedder *e = p->e;
    uint32_t dim = e->o.dim;
    int brc = parse_reply(e, p->url, reply, b->cnt, p->bvec);
    if (!brc) {
        for (size_t j = 0; j < b->cnt; j++)
            memcpy(p->out + p->miss[b->m0 + j] * dim, p->bvec + j * dim, dim * sizeof(float));
        int crc = cache_batch(e, p->keys, p->miss, p->texts, p->out, b->m0, b->cnt);
        if (crc && !p->rc) p->rc = crc;
    }
    return brc;
}

/* Put batch b back to wait: exponential backoff with full jitter, or the provider's Retry-After,
 * which pauses the whole pool. */
static void pool_retry(hpool *p, hbatch *b)
{
    chrys_embedder *e = p->e;
    double delay = e->o.backoff_base_s * pow(2.0, b->attempt - 1);
    if (delay > e->o.backoff_max_s) delay = e->o.backoff_max_s;
    delay *= jitter(e); /* full jitter */
    double t = mono_now();
    if (b->retry_after >= 0) { /* the provider says when: the whole pool waits */
        delay = b->retry_after > e->o.backoff_max_s ? e->o.backoff_max_s : b->retry_after;
        if (t + delay > p->pause_until) p->pause_until = t + delay;
    }
    b->not_before = t + delay;
    b->state = 0;
    e->st.retries++;
}

/* Batch bi failed for good with brc: the deterministic fallback fills its rows, or the first
 * such failure becomes p->rc, its message naming the batch and its texts. */
static void pool_batch_failed(hpool *p, size_t bi, int brc)
{
    chrys_embedder *e = p->e;
    const hbatch *b = &p->bs[bi];
    uint32_t dim = e->o.dim;
    size_t a0 = p->miss[b->m0], a1 = p->miss[b->m0 + b->cnt - 1];
    if (e->o.fallback_deterministic) {
        for (size_t j = 0; j < b->cnt; j++) {
            const char *t = p->texts[p->miss[b->m0 + j]];
            chrys_embed_deterministic(t, strlen(t), dim, p->out + p->miss[b->m0 + j] * dim);
        }
        e->st.fallback_texts += b->cnt; /* reported; never cached under the provider's key */
    } else if (!p->rc) {
        /* name the batch and its texts (input positions) */
        char *msg = chrys_mprintf("batch %zu of %zu (texts %zu..%zu): %s", bi + 1, p->nb, a0, a1,
                                  e->errmsg ? e->errmsg : "");
        if (msg) {
            chrys_free(e->errmsg);
            e->errmsg = msg;
        }
        p->rc = brc;
    }
}

/* A finished transfer of batch bi, its reply in r: accept it, schedule a retry, or fail the batch
 * for good. */
static void pool_settle(hpool *p, size_t bi, CURLcode cc, long status, const char *reply)
{
    chrys_embedder *e = p->e;
    hbatch *b = &p->bs[bi];
    char last[256] = "";
    int retryable = 0, brc = CHRYS_OK;
    if (pool_classify(p->e->cu, cc, status, reply, last, sizeof last, &retryable)) {
        brc = pool_accept(p, reply, b);
    } else if (retryable && b->attempt <= e->o.max_retries) {
        pool_retry(p, b);
        return;
    } else {
        brc = efail(e, CHRYS_IO, "%s: %s (after %u attempt%s)", p->url, last, b->attempt, b->attempt > 1 ? "s" : "");
    }
    if (brc) pool_batch_failed(p, bi, brc);
    b->state = 2;
    p->done++;
}

/* Read the oldest waiting reply (pend[i]) and drop it from the queue. */
static void pool_settle_pending(hpool *p, size_t i)
{
    struct pend q = p->pend[i];
    memmove(p->pend + i, p->pend + i + 1, (p->npend - i - 1) * sizeof *p->pend);
    p->npend--;
    pool_settle(p, q.b, q.cc, q.status, p->spare[q.s].p);
}

/* Take the finished transfers: each frees its slot at once, its reply moved to the slot's spare
 * buffer and queued to be read (a slot whose spare still holds an unread reply has that one read
 * first). Returns how many finished. */
static int pool_gather(hpool *p)
{
    chrys_embedder *e = p->e;
    CURLMsg *m;
    int left, finished = 0;
    while ((m = e->cu->multi_info_read(e->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        CURL *h = m->easy_handle;
        void *priv = NULL;
        e->cu->easy_getinfo(h, CURLINFO_PRIVATE, (char **)&priv);
        uint32_t s = (uint32_t)(uintptr_t)priv;
        long status = 0;
        e->cu->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        CURLcode cc = m->data.result;
        e->cu->multi_remove_handle(e->multi, h);
        for (size_t i = 0; i < p->npend; i++) /* (at most one reply waits per slot) */
            if (p->pend[i].s == s) {
                pool_settle_pending(p, i);
                break;
            }
        buf t = p->sbuf[s]; /* the reply to the spare; the slot takes the spare's memory */
        p->sbuf[s] = p->spare[s];
        p->spare[s] = t;
        p->pend[p->npend++] = (struct pend){s, p->slot_batch[s], cc, status};
        p->slot_batch[s] = SIZE_MAX;
        p->in_flight--;
        finished++;
    }
    return finished;
}

/* Drive the transfers. Finished ones free their slots, the freed slots' next requests go out,
 * and only then are the replies read, one at a time with the transfers driven in between:
 * reading a 2.6 MB reply takes several milliseconds of this one thread, which would otherwise
 * hold back every other slot's reply and next request (8 slots finishing together waited up to
 * 8 readings). Returns how many finished. */
static int pool_drive(hpool *p)
{
    chrys_embedder *e = p->e;
    int running = 0, total = 0;
    for (;;) {
        e->cu->multi_perform(e->multi, &running);
        int f = pool_gather(p);
        total += f;
        if (f) {
            double wait = 1.0;
            pool_start(p, mono_now(), &wait);
            e->cu->multi_perform(e->multi, &running); /* the new requests leave now */
        }
        if (!p->npend) break;
        pool_settle_pending(p, 0);
    }
    return total;
}

/* Detach what is still in flight and free the pool (the key wiped from memory first). */
static void pool_close(hpool *p)
{
    chrys_embedder *e = p->e;
    for (uint32_t s = 0; s < p->conc; s++)
        if (p->slot_batch && p->slot_batch[s] != SIZE_MAX) e->cu->multi_remove_handle(e->multi, e->easy[s]);
    e->cu->slist_free_all(p->hdr);
    if (p->auth) {
        memset(p->auth, 0, strlen(p->auth)); /* do not leave the key in freed memory */
        chrys_free(p->auth);
    }
    chrys_free(p->slot_batch);
    for (uint32_t s = 0; p->sbuf && s < p->conc; s++) chrys_free(p->sbuf[s].p);
    for (uint32_t s = 0; p->spare && s < p->conc; s++) chrys_free(p->spare[s].p);
    chrys_free(p->sbuf);
    chrys_free(p->spare);
    chrys_free(p->pend);
    chrys_free(p->bt);
    chrys_free(p->url);
}

/* The pool's loop: start what may start, drive the transfers, wait; until every batch is done
 * or, after a failure, until nothing is in flight. */
static int http_pool(chrys_embedder *e, size_t nb, hbatch *bs, const size_t *miss, const char *const *texts,
                     const unsigned char *keys, float *out, float *bvec)
{
    hpool p = {.e = e, .nb = nb, .bs = bs, .miss = miss, .texts = texts, .keys = keys, .out = out, .bvec = bvec};
    pool_open(&p);
    while (!p.rc || p.in_flight) {
        if (p.rc) p.stop = 1;
        if (!p.stop && p.done == nb) break;
        double now = mono_now(), wait = 1.0;
        pool_start(&p, now, &wait);
        if (!p.in_flight) {
            if (p.stop || p.done == nb) break;
            sleep_s(wait); /* paused, backing off or rate limited, nothing to wait on */
            continue;
        }
        int finished = pool_drive(&p);
        if (!finished && p.in_flight) e->cu->multi_poll(e->multi, NULL, 0, (int)(fmin(wait, 0.1) * 1000) + 1, NULL);
    }
    pool_close(&p);
    return p.rc;
}

/* Cut miss[0 .. n_miss) into batches of at most batch_max_items texts and batch_max_bytes bytes
 * (a longer text goes alone): *nb_out batches in an array of *nb_out + 1, or NULL when out of
 * memory. */
static hbatch *plan_batches(const chrys_embedder *e, const char *const *texts, const size_t *miss, size_t n_miss,
                            size_t *nb_out)
{
    size_t bcap = e->o.batch_max_items, nb = 0;
    hbatch *bs = NULL;
    for (size_t pass = 0; pass < 2; pass++) { /* count, then fill, the batches */
        nb = 0;
        for (size_t m0 = 0; m0 < n_miss; nb++) {
            size_t cnt = 0, bytes = 0;
            while (m0 + cnt < n_miss && cnt < bcap) {
                size_t l = strlen(texts[miss[m0 + cnt]]);
                if (cnt > 0 && bytes + l > e->o.batch_max_bytes) break;
                cnt++;
                bytes += l;
            }
            if (bs) bs[nb] = (hbatch){.m0 = m0, .cnt = cnt};
            m0 += cnt;
        }
        if (!pass && !(bs = chrys_calloc(nb + 1, sizeof *bs))) return NULL;
    }
    *nb_out = nb;
    return bs;
}

int chrys_embedder_embed(chrys_embedder *e, size_t n, const char *const *texts, float *out)
{
    if (!e || (n && (!texts || !out))) return CHRYS_INVALID;
    chrys_errpos_reset(&e->errpos); /* the cache's messages are set without the helper */
    for (size_t i = 0; i < n; i++)
        if (!texts[i]) return efail_text(e, CHRYS_INVALID, i, "is NULL");
    uint32_t dim = e->o.dim;
    e->st.texts += n;
    if (e->o.provider == CHRYS_PROVIDER_DETERMINISTIC && !e->has_cache) {
        for (size_t i = 0; i < n; i++) chrys_embed_deterministic(texts[i], strlen(texts[i]), dim, out + i * dim);
        e->st.cache_misses += n;
        e->st.provider_texts += n;
        return CHRYS_OK;
    }
    int rc = CHRYS_OK;
    unsigned char *keys = chrys_malloc(n * 32 + 1);
    size_t *miss = chrys_malloc((n + 1) * sizeof *miss), *first = chrys_malloc((n + 1) * sizeof *first);
    const char **batch = chrys_malloc((n + 1) * sizeof *batch);
    float *bvec = NULL;
    size_t n_miss = 0, hits = 0;
    idmap seen = {0};
    if (!keys || !miss || !first || !batch || idmap_init(&seen, n)) {
        rc = efail(e, CHRYS_NOMEM, "out of memory");
        goto done;
    }
    /* 1. cache lookups, in one short transaction */
    if (e->has_cache && (rc = cache_begin(&e->cache, &e->errmsg))) goto done;
    for (size_t i = 0; i < n; i++) {
        if (cache_key(e, texts[i], keys + i * 32)) {
            rc = efail(e, CHRYS_NOMEM, "out of memory");
            if (e->has_cache) cache_rollback(&e->cache);
            goto done;
        }
        if (e->has_cache && cache_get(&e->cache, keys + i * 32, e->provider_name, e->model, dim, texts[i], out + i * dim)) {
            hits++;
            first[i] = i;
            continue;
        }
        /* a text repeated in this call is requested once (first 8 key bytes + full text check) */
        uint64_t h;
        memcpy(&h, keys + i * 32, 8);
        if (h == CHRYS_NO_ID) h--;
        uint32_t prev = idmap_get(&seen, h);
        if (prev != CHRYS_NO_SLOT && !strcmp(texts[prev], texts[i])) {
            first[i] = prev;
            continue;
        }
        if (prev == CHRYS_NO_SLOT) idmap_put(&seen, h, (uint32_t)i);
        first[i] = i;
        miss[n_miss++] = i;
    }
    if (e->has_cache) {
        if (!rc) rc = cache_commit(&e->cache, &e->errmsg);
        if (rc) goto done;
    }
    e->st.cache_hits += hits;
    e->st.cache_misses += n - hits;
    /* 2. the provider, in batches bounded by count and bytes */
    size_t bcap = e->o.batch_max_items;
    if (!(bvec = chrys_malloc(bcap * dim * sizeof(float)))) {
        rc = efail(e, CHRYS_NOMEM, "out of memory");
        goto done;
    }
    size_t nb = 0;
    hbatch *bs = plan_batches(e, texts, miss, n_miss, &nb);
    if (!bs) {
        rc = efail(e, CHRYS_NOMEM, "out of memory");
        goto done;
    }
    if (e->o.provider == CHRYS_PROVIDER_DETERMINISTIC) {
        for (size_t b = 0; b < nb && !rc; b++) {
            for (size_t j = 0; j < bs[b].cnt; j++) {
                size_t i = miss[bs[b].m0 + j];
                chrys_embed_deterministic(texts[i], strlen(texts[i]), dim, out + i * dim);
            }
            e->st.provider_texts += bs[b].cnt;
            rc = cache_batch(e, keys, miss, texts, out, bs[b].m0, bs[b].cnt);
        }
    } else {
        rc = http_pool(e, nb, bs, miss, texts, keys, out, bvec);
    }
    for (size_t b = 0; b < nb; b++) {
        if (bs[b].body) cJSON_free(bs[b].body);
    }
    chrys_free(bs);
    if (rc) goto done;
    for (size_t i = 0; i < n; i++)
        if (first[i] != i) memcpy(out + i * dim, out + first[i] * dim, dim * sizeof(float));
    /* 3. bookkeeping: lifetime counters and the size bound */
    if (e->has_cache) {
        if ((rc = cache_begin(&e->cache, &e->errmsg))) goto done;
        rc = cache_add_stats(&e->cache, hits, n - hits, &e->errmsg);
        if (!rc && (e->o.cache_max_entries || e->o.cache_ttl_s > 0))
            rc = cache_evict(&e->cache, e->o.cache_ttl_s, e->o.cache_max_entries, NULL, &e->errmsg);
        if (rc) cache_rollback(&e->cache);
        else rc = cache_commit(&e->cache, &e->errmsg);
    }
done:
    if (rc && !e->errpos.code) e->errpos.code = rc; /* a cache or batch message: no single text */
    idmap_free(&seen);
    chrys_free(keys);
    chrys_free(miss);
    chrys_free(first);
    chrys_free(batch);
    chrys_free(bvec);
    return rc;
}

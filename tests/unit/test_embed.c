/*
 * test_embed.c: embedding providers and the cache.
 *  - the deterministic provider reproduces the 920 deterministic Chrysalis rows bit for bit;
 *  - the cache: a second run makes no provider call, a 10% change re-embeds exactly that 10%,
 *    the full key is checked (another model misses), TTL and LRU bound, prune, two processes;
 *  - HTTP against a loopback server the test starts (tests/http/fake_embeddings.py): OpenAI and
 *    Ollama shapes, 429 with Retry-After, 500 retried, time-outs, malformed JSON, wrong
 *    dimensions (never cached), 401 not retried, the key sent but never in a message, fallback.
 */
#include <cJSON.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../harness.h"
#include "chrysalis.h"
#include "embed.h"
#include "tests.h"

void test_embed_deterministic_chrysalis_rows(void)
{
    FILE *f = fopen("examples/chrysalis/vectors.f32", "rb");
    FILE *r = fopen("examples/chrysalis/records.jsonl", "rb");
    if (!f || !r) {
        h_fail(__FILE__, __LINE__, "examples/chrysalis missing");
        if (f) fclose(f);
        if (r) fclose(r);
        return;
    }
    float *x = malloc(926 * 1024 * sizeof(float));
    CHECK_EQ(fread(x, sizeof(float), 926 * 1024, f), 926 * 1024);
    fclose(f);
    static char line[1 << 20];
    int rows = 0, exact = 0;
    float v[1024];
    while (fgets(line, sizeof line, r)) {
        cJSON *o = cJSON_Parse(line);
        const cJSON *prov = cJSON_GetObjectItem(o, "provider"), *txt = cJSON_GetObjectItem(o, "embedded_text");
        if (cJSON_IsString(prov) && !strcmp(prov->valuestring, "deterministic") && cJSON_IsString(txt)) {
            int id = cJSON_GetObjectItem(o, "id")->valueint;
            CHECK_EQ(chrys_embed_deterministic(txt->valuestring, strlen(txt->valuestring), 1024, v), CHRYS_OK);
            rows++;
            exact += memcmp(v, x + (size_t)id * 1024, sizeof v) == 0;
        }
        cJSON_Delete(o);
    }
    fclose(r);
    free(x);
    CHECK_EQ(rows, 920);
    CHECK_EQ(exact, 920);
    /* other sizes work and are unit length */
    float w[100];
    CHECK_EQ(chrys_embed_deterministic("hello", 5, 100, w), CHRYS_OK);
    double nn = 0;
    for (int i = 0; i < 100; i++) nn += (double)w[i] * w[i];
    CHECK_NEAR(nn, 1.0, 1e-5);
    CHECK_EQ(chrys_embed_deterministic("x", 1, 0, w), CHRYS_INVALID);
}

static char *tmpfile_path(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "/tmp/chrys_embed_%d_%s", (int)getpid(), name);
    return buf[k];
}

static void rm_cache(const char *p)
{
    char b[300];
    unlink(p);
    snprintf(b, sizeof b, "%s-wal", p);
    unlink(b);
    snprintf(b, sizeof b, "%s-shm", p);
    unlink(b);
}

static char **make_texts(size_t n, int variant_every, int variant)
{
    char **t = malloc(n * sizeof *t);
    for (size_t i = 0; i < n; i++) {
        t[i] = malloc(64);
        int changed = variant_every && i % variant_every == 0;
        snprintf(t[i], 64, "text number %zu%s", i, changed ? (variant ? " (edited)" : "") : "");
    }
    return t;
}

static void free_texts(char **t, size_t n)
{
    for (size_t i = 0; i < n; i++) free(t[i]);
    free(t);
}

void test_embed_cache_incremental(void)
{
    char *cp = tmpfile_path("inc.db");
    rm_cache(cp);
    chrys_embed_opts o;
    chrys_embed_opts_init(&o);
    o.cache_path = cp;
    const size_t n = 2000;
    char **a = make_texts(n, 0, 0), **b = make_texts(n, 10, 1);
    float *va = malloc(n * 1024 * sizeof(float)), *vb = malloc(n * 1024 * sizeof(float));
    float ref[1024];
    for (int run = 0; run < 3; run++) {
        chrys_embedder *e = NULL;
        char *msg = NULL;
        CHECK_EQ(chrys_embedder_new(&o, &e, &msg), CHRYS_OK);
        if (!e) {
            fprintf(stderr, "    %s\n", msg ? msg : "");
            chrys_free(msg);
            break;
        }
        char **t = run < 2 ? a : b;
        float *v = run < 2 ? va : vb;
        CHECK_EQ(chrys_embedder_embed(e, n, (const char *const *)t, v), CHRYS_OK);
        chrys_embed_stats st = {sizeof st};
        chrys_embedder_get_stats(e, &st);
        if (run == 0) CHECK_EQ(st.provider_texts, n);     /* first run: everything */
        if (run == 1) CHECK_EQ(st.provider_texts, 0);     /* second run: nothing */
        if (run == 1) CHECK_EQ(st.cache_hits, n);
        if (run == 2) CHECK_EQ(st.provider_texts, n / 10); /* 10% edited: only those */
        for (size_t i = 0; i < n; i += 97) {
            chrys_embed_deterministic(t[i], strlen(t[i]), 1024, ref);
            CHECK(memcmp(ref, v + i * 1024, sizeof ref) == 0);
        }
        chrys_embedder_free(e);
    }
    chrys_cache_info ci = {sizeof ci};
    CHECK_EQ(chrys_cache_get_info(cp, &ci, NULL), CHRYS_OK);
    CHECK_EQ(ci.entries, n + n / 10);
    CHECK_EQ(ci.hits, n + n - n / 10);
    CHECK_EQ(ci.misses, n + n / 10);
    /* prune to a bound keeps the most recently used */
    uint64_t removed = 0;
    CHECK_EQ(chrys_cache_prune(cp, 0, 100, &removed, NULL), CHRYS_OK);
    CHECK_EQ(removed, n + n / 10 - 100);
    CHECK_EQ(chrys_cache_get_info(cp, &ci, NULL), CHRYS_OK);
    CHECK_EQ(ci.entries, 100);
    /* a different model (or size) never hits the other's entries */
    chrys_embed_opts o2 = o;
    o2.dim = 512;
    chrys_embedder *e = NULL;
    CHECK_EQ(chrys_embedder_new(&o2, &e, NULL), CHRYS_OK);
    CHECK_EQ(chrys_embedder_embed(e, 10, (const char *const *)b + n - 10, vb), CHRYS_OK);
    chrys_embed_stats st = {sizeof st};
    chrys_embedder_get_stats(e, &st);
    CHECK_EQ(st.cache_hits, 0);
    chrys_embedder_free(e);
    /* TTL: entries older than the TTL are misses */
    o2.dim = 1024;
    o2.cache_ttl_s = 0.05;
    usleep(100000);
    CHECK_EQ(chrys_embedder_new(&o2, &e, NULL), CHRYS_OK);
    CHECK_EQ(chrys_embedder_embed(e, 10, (const char *const *)b + n - 10, vb), CHRYS_OK);
    chrys_embedder_get_stats(e, &st);
    CHECK_EQ(st.cache_hits, 0);
    chrys_embedder_free(e);
    /* LRU bound during use */
    o2.cache_ttl_s = 0;
    o2.cache_max_entries = 50;
    CHECK_EQ(chrys_embedder_new(&o2, &e, NULL), CHRYS_OK);
    CHECK_EQ(chrys_embedder_embed(e, 300, (const char *const *)a, va), CHRYS_OK);
    chrys_embedder_free(e);
    CHECK_EQ(chrys_cache_get_info(cp, &ci, NULL), CHRYS_OK);
    CHECK(ci.entries <= 50);
    free_texts(a, n);
    free_texts(b, n);
    free(va);
    free(vb);
    rm_cache(cp);
}

void test_embed_cache_two_processes(void)
{
    char *cp = tmpfile_path("two.db");
    rm_cache(cp);
    const size_t n = 1500;
    char **t = make_texts(n, 0, 0);
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            chrys_embed_opts o;
            chrys_embed_opts_init(&o);
            o.cache_path = cp;
            o.batch_max_items = 50; /* many small write transactions, interleaving with the other */
            chrys_embedder *e = NULL;
            float *v = malloc(n * 1024 * sizeof(float));
            char *omsg = NULL;
            int rc = chrys_embedder_new(&o, &e, &omsg);
            if (rc) fprintf(stderr, "    child %d: %s\n", k, omsg ? omsg : "");
            /* the two children take overlapping halves */
            char *msg = NULL;
            int rc2 = rc;
            if (!rc) rc = chrys_embedder_embed(e, n * 2 / 3, (const char *const *)t + (k ? n / 3 : 0), v);
            if (rc) fprintf(stderr, "    child %d: rc %d: %s\n", k, rc, rc2 ? "open failed" : chrys_embedder_errmsg(e));
            chrys_free(msg);
            chrys_embedder_free(e);
            _exit(rc ? 1 : 0);
        }
    }
    for (int k = 0; k < 2; k++) {
        int status = 0;
        waitpid(kids[k], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    chrys_cache_info ci = {sizeof ci};
    CHECK_EQ(chrys_cache_get_info(cp, &ci, NULL), CHRYS_OK);
    CHECK_EQ(ci.entries, n);
    /* everything now comes from the cache, and it is right */
    chrys_embed_opts o;
    chrys_embed_opts_init(&o);
    o.cache_path = cp;
    chrys_embedder *e = NULL;
    float *v = malloc(n * 1024 * sizeof(float)), ref[1024];
    CHECK_EQ(chrys_embedder_new(&o, &e, NULL), CHRYS_OK);
    CHECK_EQ(chrys_embedder_embed(e, n, (const char *const *)t, v), CHRYS_OK);
    chrys_embed_stats st = {sizeof st};
    chrys_embedder_get_stats(e, &st);
    CHECK_EQ(st.cache_hits, n);
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++) {
        chrys_embed_deterministic(t[i], strlen(t[i]), 1024, ref);
        wrong += memcmp(ref, v + i * 1024, sizeof ref) != 0;
    }
    CHECK_EQ(wrong, 0);
    chrys_embedder_free(e);
    free(v);
    free_texts(t, n);
    rm_cache(cp);
}

/* ---- HTTP ---- */

static pid_t server_pid;
static int server_port;
static int server_fd = -1; /* kept open: the server must never write into a closed pipe */

static int start_server(void)
{
    int fd[2];
    if (pipe(fd)) return -1;
    server_pid = fork();
    if (server_pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        execlp("python3", "python3", "tests/http/fake_embeddings.py", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    char line[32] = {0};
    ssize_t got = read(fd[0], line, sizeof line - 1);
    server_fd = fd[0];
    server_port = got > 0 ? atoi(line) : 0;
    return server_port > 0 ? 0 : -1;
}

static void stop_server(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
    }
    if (server_fd >= 0) close(server_fd);
    server_fd = -1;
    server_pid = 0;
}

static int http_embed(const char *model, chrys_provider prov, uint32_t dim, size_t n, const char *const *texts,
                      float *out, const char *cache, chrys_embed_stats *st, char **msg_out, double timeout,
                      int fallback)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", server_port, prov == CHRYS_PROVIDER_OPENAI ? "/v1" : "");
    chrys_embed_opts o;
    chrys_embed_opts_init(&o);
    o.provider = prov;
    o.base_url = url;
    o.model = model;
    o.dim = dim;
    o.send_dimensions = 1;
    o.api_key_env = "CHRYS_TEST_API_KEY";
    o.batch_max_items = 16;
    o.timeout_s = timeout;
    o.max_retries = 3;
    o.backoff_base_s = 0.05;
    o.backoff_max_s = 2;
    o.cache_path = cache;
    o.fallback_deterministic = fallback;
    chrys_embedder *e = NULL;
    int rc = chrys_embedder_new(&o, &e, NULL);
    if (!rc) rc = chrys_embedder_embed(e, n, texts, out);
    if (st) {
        st->struct_size = sizeof *st;
        chrys_embedder_get_stats(e, st);
    }
    if (msg_out) *msg_out = strdup(chrys_embedder_errmsg(e));
    chrys_embedder_free(e);
    return rc;
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void test_embed_http_providers(void)
{
    if (start_server()) {
        h_fail(__FILE__, __LINE__, "could not start tests/http/fake_embeddings.py (python3 needed)");
        return;
    }
    setenv("CHRYS_TEST_API_KEY", "sk-test-SECRET-123", 1);
    const size_t n = 40;
    char **t = make_texts(n, 0, 0);
    const char *const *tt = (const char *const *)t;
    float *v = malloc(n * 8 * sizeof(float));
    chrys_embed_stats st;
    char *msg = NULL;
    char *cp = tmpfile_path("http.db");
    rm_cache(cp);
    /* OpenAI shape, out-of-order "index" fields, 40 texts in batches of 16: 3 requests */
    CHECK_EQ(http_embed("ok", CHRYS_PROVIDER_OPENAI, 8, n, tt, v, cp, &st, &msg, 5, 0), CHRYS_OK);
    CHECK_EQ(st.requests, 3);
    CHECK_EQ(st.provider_texts, n);
    CHECK(v[0] > 0 && v[8] != v[0]);
    free(msg);
    float v0 = v[5 * 8 + 3];
    /* the key was sent as a bearer token */
    {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "python3 -c \"import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:%d/stats').read().decode())\"", server_port);
        FILE *p = popen(cmd, "r");
        char out[512] = {0};
        if (p) {
            size_t got = fread(out, 1, sizeof out - 1, p);
            out[got] = 0;
            pclose(p);
        }
        CHECK_STR_CONTAINS(out, "Bearer sk-test-SECRET-123");
    }
    /* second run: all from the cache, zero requests */
    CHECK_EQ(http_embed("ok", CHRYS_PROVIDER_OPENAI, 8, n, tt, v, cp, &st, &msg, 5, 0), CHRYS_OK);
    CHECK_EQ(st.requests, 0);
    CHECK_EQ(st.cache_hits, n);
    CHECK(v[5 * 8 + 3] == v0);
    free(msg);
    /* Ollama shape */
    CHECK_EQ(http_embed("ok", CHRYS_PROVIDER_OLLAMA, 8, n, tt, v, NULL, &st, &msg, 5, 0), CHRYS_OK);
    CHECK(v[5 * 8 + 3] == v0); /* same fake vectors */
    free(msg);
    /* 429 with Retry-After: 1 on the first try of each batch: honoured, then success */
    double t0 = mono();
    CHECK_EQ(http_embed("flaky429", CHRYS_PROVIDER_OPENAI, 8, 10, tt, v, NULL, &st, &msg, 5, 0), CHRYS_OK);
    CHECK(mono() - t0 >= 0.95);
    CHECK_EQ(st.retries, 1);
    free(msg);
    /* 500 twice, then success */
    CHECK_EQ(http_embed("flaky500", CHRYS_PROVIDER_OPENAI, 8, 10, tt, v, NULL, &st, &msg, 5, 0), CHRYS_OK);
    CHECK_EQ(st.retries, 2);
    free(msg);
    /* time-out: retried, then a clear error */
    t0 = mono();
    CHECK_EQ(http_embed("slow", CHRYS_PROVIDER_OPENAI, 8, 2, tt, v, NULL, &st, &msg, 0.3, 0), CHRYS_IO);
    CHECK_STR_CONTAINS(msg, "imeout");
    CHECK_STR_CONTAINS(msg, "after 4 attempts");
    CHECK(mono() - t0 < 10);
    free(msg);
    /* malformed JSON */
    CHECK_EQ(http_embed("badjson", CHRYS_PROVIDER_OPENAI, 8, 2, tt, v, cp, &st, &msg, 5, 0), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "malformed reply");
    free(msg);
    /* wrong dimensions: an error, and nothing cached */
    chrys_cache_info ci = {sizeof ci}, ci2 = {sizeof ci2};
    chrys_cache_get_info(cp, &ci, NULL);
    CHECK_EQ(http_embed("wrongdim", CHRYS_PROVIDER_OPENAI, 8, 5, tt, v, cp, &st, &msg, 5, 0), CHRYS_DIM);
    CHECK_STR_CONTAINS(msg, "returned 7 dimensions, expected 8");
    free(msg);
    chrys_cache_get_info(cp, &ci2, NULL);
    CHECK_EQ(ci2.entries, ci.entries);
    /* 401: not retried; the server's message is shown; the key never is */
    CHECK_EQ(http_embed("unauth", CHRYS_PROVIDER_OPENAI, 8, 2, tt, v, NULL, &st, &msg, 5, 0), CHRYS_IO);
    CHECK_EQ(st.requests, 1);
    CHECK_STR_CONTAINS(msg, "HTTP 401: invalid api key");
    CHECK(msg && !strstr(msg, "SECRET"));
    free(msg);
    /* fallback only when configured, and reported */
    CHECK_EQ(http_embed("badjson", CHRYS_PROVIDER_OPENAI, 8, 3, tt, v, NULL, &st, &msg, 5, 1), CHRYS_OK);
    CHECK_EQ(st.fallback_texts, 3);
    float ref[8];
    chrys_embed_deterministic(t[1], strlen(t[1]), 8, ref);
    CHECK(memcmp(ref, v + 8, sizeof ref) == 0);
    free(msg);
    /* a missing key variable is named */
    unsetenv("CHRYS_TEST_API_KEY");
    CHECK_EQ(http_embed("ok", CHRYS_PROVIDER_OPENAI, 8, 2, tt, v, NULL, &st, &msg, 5, 0), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "CHRYS_TEST_API_KEY is not set");
    free(msg);
    stop_server();
    free(v);
    free_texts(t, n);
    rm_cache(cp);
}

/* ---- concurrency: facts the loopback server observed ---- */
static void server_stats(char *out, size_t cap, const char *path)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd, "python3 -c \"import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:%d%s').read().decode())\"", server_port, path);
    FILE *p = popen(cmd, "r");
    out[0] = 0;
    if (p) {
        size_t got = fread(out, 1, cap - 1, p);
        out[got] = 0;
        pclose(p);
    }
}

static int conc_embed(const char *model, uint32_t conc, double rate, size_t n, const char *const *texts, float *out,
                      const char *cache, chrys_embed_stats *st, char **msg)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", server_port);
    chrys_embed_opts o;
    chrys_embed_opts_init(&o);
    o.provider = CHRYS_PROVIDER_OPENAI;
    o.base_url = url;
    o.model = model;
    o.dim = 8;
    o.send_dimensions = 1;
    o.batch_max_items = 4;
    o.max_retries = 2;
    o.backoff_base_s = 0.05;
    o.backoff_max_s = 2;
    o.rate_per_s = rate;
    o.concurrency = conc;
    o.cache_path = cache;
    chrys_embedder *e = NULL;
    int rc = chrys_embedder_new(&o, &e, msg);
    if (!rc) rc = chrys_embedder_embed(e, n, texts, out);
    st->struct_size = sizeof *st;
    chrys_embedder_get_stats(e, st);
    if (e) *msg = strdup(chrys_embedder_errmsg(e));
    chrys_embedder_free(e);
    return rc;
}

static double json_num(const char *js, const char *key)
{
    cJSON *j = cJSON_Parse(js);
    const cJSON *v = cJSON_GetObjectItem(j, key);
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    cJSON_Delete(j);
    return d;
}

void test_embed_http_concurrency(void)
{
    if (start_server()) {
        h_fail(__FILE__, __LINE__, "could not start tests/http/fake_embeddings.py (python3 needed)");
        return;
    }
    const size_t n = 64; /* 16 batches of 4 */
    char **t = make_texts(n, 0, 0);
    const char *const *tt = (const char *const *)t;
    float *v1 = malloc(n * 8 * sizeof(float)), *v8 = malloc(n * 8 * sizeof(float));
    chrys_embed_stats st;
    char *msg = NULL, js[1 << 16];
    /* concurrency 1: one request at a time */
    server_stats(js, sizeof js, "/reset");
    CHECK_EQ(conc_embed("jitter", 1, 0, n, tt, v1, NULL, &st, &msg), CHRYS_OK);
    free(msg);
    server_stats(js, sizeof js, "/stats");
    CHECK_EQ(json_num(js, "max_inflight"), 1);
    CHECK_EQ(json_num(js, "requests"), 16);
    /* concurrency 8, replies out of order: more than one in flight, same vectors, same count */
    server_stats(js, sizeof js, "/reset");
    CHECK_EQ(conc_embed("jitter", 8, 0, n, tt, v8, NULL, &st, &msg), CHRYS_OK);
    free(msg);
    server_stats(js, sizeof js, "/stats");
    CHECK(json_num(js, "max_inflight") > 1);
    CHECK_EQ(json_num(js, "requests"), 16);
    CHECK_EQ(st.requests, 16);
    CHECK(memcmp(v1, v8, n * 8 * sizeof(float)) == 0);
    /* early requests answered last (slowfirst): replies really come back out of order, and the
     * output is still in input order */
    server_stats(js, sizeof js, "/reset");
    memset(v8, 0, n * 8 * sizeof(float));
    CHECK_EQ(conc_embed("slowfirst", 8, 0, n, tt, v8, NULL, &st, &msg), CHRYS_OK);
    free(msg);
    server_stats(js, sizeof js, "/stats");
    CHECK_EQ(json_num(js, "requests"), 16);
    {
        cJSON *j = cJSON_Parse(js);
        const cJSON *c = cJSON_GetObjectItem(j, "completions");
        CHECK_EQ(cJSON_GetArraySize(c), 16);
        int inversions = 0, prev = 0;
        for (const cJSON *a = c ? c->child : NULL; a; a = a->next) {
            inversions += a->valueint < prev;
            prev = a->valueint;
        }
        CHECK(inversions >= 4);
        CHECK(cJSON_GetArrayItem(c, 0)->valueint != 1); /* the first request was not answered first */
        cJSON_Delete(j);
    }
    CHECK(memcmp(v1, v8, n * 8 * sizeof(float)) == 0);
    /* Retry-After on the 3rd request pauses the whole pool: no request arrives during the pause */
    server_stats(js, sizeof js, "/reset");
    CHECK_EQ(conc_embed("pause429", 8, 0, n, tt, v8, NULL, &st, &msg), CHRYS_OK);
    free(msg);
    server_stats(js, sizeof js, "/stats");
    CHECK_EQ(json_num(js, "requests"), 17);
    CHECK_EQ(st.retries, 1);
    {   /* requests already on the wire when the 429 came back arrive at once; after that, none for 1 s */
        double t429 = json_num(js, "t429");
        CHECK(t429 >= 0);
        cJSON *j = cJSON_Parse(js);
        int during = 0, after = 0;
        for (const cJSON *a = cJSON_GetObjectItem(j, "arrivals")->child; a; a = a->next) {
            during += a->valuedouble > t429 + 0.15 && a->valuedouble < t429 + 0.9;
            after += a->valuedouble >= t429 + 0.9;
        }
        CHECK_EQ(during, 0);
        CHECK(after > 0);
        cJSON_Delete(j);
    }
    CHECK(memcmp(v1, v8, n * 8 * sizeof(float)) == 0);
    /* rate limit with concurrency 8: 4 requests per second, burst 1 -> arrivals >= ~0.25 s apart */
    server_stats(js, sizeof js, "/reset");
    CHECK_EQ(conc_embed("jitter", 8, 4, 24, tt, v8, NULL, &st, &msg), CHRYS_OK);
    free(msg);
    server_stats(js, sizeof js, "/stats");
    {
        cJSON *j = cJSON_Parse(js);
        const cJSON *arr = cJSON_GetObjectItem(j, "arrivals");
        CHECK_EQ(cJSON_GetArraySize(arr), 6);
        double prev = -1, mingap = 1e9;
        for (const cJSON *a = arr ? arr->child : NULL; a; a = a->next) {
            if (prev >= 0 && a->valuedouble - prev < mingap) mingap = a->valuedouble - prev;
            prev = a->valuedouble;
        }
        CHECK(mingap >= 0.2);
        cJSON_Delete(j);
    }
    /* a failing batch in the middle: named; the batches that completed are cached */
    char *cp = tmpfile_path("conc.db");
    rm_cache(cp);
    char *keep = t[37];
    t[37] = strdup("text with POISON inside");
    CHECK_EQ(conc_embed("failmid", 8, 0, n, tt, v8, cp, &st, &msg), CHRYS_IO);
    CHECK_STR_CONTAINS(msg, "batch 10 of 16 (texts 36..39)");
    CHECK_STR_CONTAINS(msg, "HTTP 400: bad input");
    free(msg);
    chrys_cache_info ci = {sizeof ci};
    CHECK_EQ(chrys_cache_get_info(cp, &ci, NULL), CHRYS_OK);
    CHECK(ci.entries >= 4 && ci.entries <= n - 4);
    CHECK_EQ(ci.entries % 4, 0);
    free(t[37]);
    t[37] = keep;
    /* bad values are refused and named */
    CHECK_EQ(conc_embed("ok", 0, 0, 1, tt, v8, NULL, &st, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "concurrency 0 out of range");
    free(msg);
    CHECK_EQ(conc_embed("ok", 100000, 0, 1, tt, v8, NULL, &st, &msg), CHRYS_INVALID);
    CHECK_STR_CONTAINS(msg, "concurrency 100000 out of range");
    free(msg);
    stop_server();
    rm_cache(cp);
    free(v1);
    free(v8);
    free_texts(t, n);
}

/* ---- the fast reply reader (src/embed_json.c) against cJSON, the reading it replaces ---- */
/* The reference: what parse_reply reads with cJSON from a well-formed reply. */
static int ref_read(const char *reply, int openai, size_t count, uint32_t dim, float *out)
{
    cJSON *j = cJSON_Parse(reply);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, openai ? "data" : "embeddings");
    int ok = cJSON_IsArray(list) && (size_t)cJSON_GetArraySize(list) == count;
    size_t k = 0;
    for (const cJSON *it = ok ? list->child : NULL; it; it = it->next, k++) {
        const cJSON *v = openai ? cJSON_GetObjectItemCaseSensitive(it, "embedding") : it;
        const cJSON *idx = openai ? cJSON_GetObjectItemCaseSensitive(it, "index") : NULL;
        size_t slot = cJSON_IsNumber(idx) ? (size_t)idx->valuedouble : k;
        int d = 0;
        for (const cJSON *c = v ? v->child : NULL; c; c = c->next, d++) out[slot * dim + d] = (float)c->valuedouble;
        ok &= d == (int)dim;
    }
    cJSON_Delete(j);
    return ok;
}

static size_t rand_number(char *p, uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    uint64_t r = *s >> 20;
    double x = ((double)(r % 2000003) - 1000001) / (double)(1 + (r >> 24) % 100000);
    switch ((r >> 40) % 5) {
    case 0: return (size_t)sprintf(p, "%.17g", x);
    case 1: return (size_t)sprintf(p, "%.9e", x * 1e-30);
    case 2: return (size_t)sprintf(p, "%.3E", x * 1e20);
    case 3: return (size_t)sprintf(p, "%d", (int)x);
    default: return (size_t)sprintf(p, "%.25f", x / 7);
    }
}

void test_embed_reply_fast(void)
{
    enum { COUNT = 7, DIM = 33 };
    static char js[1 << 16];
    float a[COUNT * DIM], b[COUNT * DIM];
    uint64_t seed = 42;
    for (int rep = 0; rep < 200; rep++) {
        int openai = rep % 4 != 3;
        char *p = js;
        p += sprintf(p, openai ? "{\"object\": \"list\", \"data\":[" : "{\n\t\"model\":\"m\",\"embeddings\" : [");
        for (int i = 0; i < COUNT; i++) {
            int slot = (rep % 2) ? COUNT - 1 - i : i; /* reversed order, said by "index" */
            if (i) p += sprintf(p, rep % 3 ? "," : " ,\r\n ");
            if (openai) p += sprintf(p, "{\"object\":\"embedding\",\"x\":[true,false,null,{\"k\":-0.5e+3}],\"index\": %d, \"embedding\": ", slot);
            *p++ = '[';
            for (int d = 0; d < DIM; d++) {
                if (d) *p++ = ',';
                if (rep % 5 == 0) *p++ = ' ';
                p += rand_number(p, &seed);
            }
            *p++ = ']';
            if (openai) *p++ = '}';
        }
        p += sprintf(p, "], \"usage\": {\"total_tokens\": 12}}\n");
        memset(a, 0, sizeof a);
        memset(b, 0xff, sizeof b);
        CHECK(ref_read(js, openai, COUNT, DIM, a));
        CHECK_EQ(embed_reply_fast(js, openai, COUNT, DIM, b), 1);
        CHECK(memcmp(a, b, sizeof a) == 0);
    }
    /* the number conversion against strtod on many numbers of the shapes providers write */
    {
        enum { ND = 40000 };
        char *big = malloc((size_t)ND * 40 + 64), *q = big;
        float *got = malloc(ND * sizeof(float)), *want = malloc(ND * sizeof(float));
        q += sprintf(q, "{\"embeddings\":[[");
        for (int i = 0; i < ND; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            double x = (double)(seed >> 11) * (1.0 / 9007199254740992.0) - 0.5;
            char *s0 = q + (i ? 1 : 0);
            if (i) *q++ = ',';
            switch (i % 6) {
            case 0: q += sprintf(q, "%.17g", x); break;             /* repr-like, 17 digits */
            case 1: q += sprintf(q, "%.16g", x * 3); break;
            case 2: q += sprintf(q, "%.9g", x / 1000); break;       /* float-sized */
            case 3: q += sprintf(q, "%.17g", (double)(float)x); break;
            case 4: q += sprintf(q, "%.20e", x * 1e-7); break;
            default: q += sprintf(q, "%.6f", x * 100); break;
            }
            want[i] = (float)strtod(s0, NULL);
        }
        q += sprintf(q, "]]}");
        CHECK_EQ(embed_reply_fast(big, 0, 1, ND, got), 1);
        CHECK(memcmp(got, want, ND * sizeof(float)) == 0);
        free(big);
        free(got);
        free(want);
    }
    /* replies it leaves to cJSON (which reads them or names the error): 0, never a wrong vector */
    const char *left[] = {
        "{\"data\":[{\"index\":0,\"embedding\":[1,2]}]} x",            /* trailing text */
        "{\"d\\u0061ta\":[{\"index\":0,\"embedding\":[1,2]}]}",        /* escaped key */
        "{\"data\":[{\"index\":0,\"embedding\":[1,2]}],\"data\":[]}",  /* repeated key */
        "{\"data\":[{\"index\":0,\"embedding\":[1,2,3]}]}",            /* wrong dimension */
        "{\"data\":[{\"index\":0,\"embedding\":[1]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[1,1e39]}]}",           /* not finite as float */
        "{\"data\":[{\"index\":0,\"embedding\":[01,2]}]}",             /* not JSON grammar */
        "{\"data\":[{\"index\":0,\"embedding\":[+1,2]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[1.,2]}]}",
        "{\"data\":[{\"index\":1.0,\"embedding\":[1,2]}]}",            /* index not a plain integer */
        "{\"data\":[{\"index\":-0,\"embedding\":[1,2]}]}",
        "{\"data\":[{\"index\":1,\"embedding\":[1,2]}]}",              /* index out of range */
        "{\"data\":[{\"index\":0,\"embedding\":[1,2]},{\"index\":0,\"embedding\":[3,4]}]}",
        "{\"data\":[{\"index\":0}]}",                                  /* no embedding */
        "{\"data\":[{\"index\":0,\"embedding\":[1,2]},{\"embedding\":[3,4]}]}", /* too many */
        "{\"data\":[]}",
        "{\"data\":{}}",
        "{not json",
        "",
        "\xef\xbb\xbf{\"data\":[{\"index\":0,\"embedding\":[1,2]}]}",   /* BOM */
    };
    for (size_t i = 0; i < sizeof left / sizeof *left; i++) {
        b[0] = b[1] = 7;
        CHECK_EQ(embed_reply_fast(left[i], 1, 1, 2, b), 0);
    }
    CHECK_EQ(embed_reply_fast(NULL, 1, 1, 2, b), 0);
    /* the same, accepted: one item, two components */
    CHECK_EQ(embed_reply_fast(" {\"data\":[{\"index\":0,\"embedding\":[1.5,-2e-1]}]} ", 1, 1, 2, b), 1);
    CHECK(b[0] == 1.5f && b[1] == -0.2f);
    CHECK_EQ(embed_reply_fast("{\"embeddings\":[[0.25,4]]}", 0, 1, 2, b), 1);
    CHECK(b[0] == 0.25f && b[1] == 4.0f);
}

/* src/sha256.c (cache keys, deterministic seeds): the FIPS 180-4 examples, and OpenSSL's SHA256
 * (linked by the tests only) at every length 0..300, across the 55/56/64-byte padding edges. */
#include <openssl/sha.h>
void test_sha256(void)
{
    static const struct {
        const char *msg;
        const char *hex;
    } fips[3] = {{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
                 {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
                 {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"}};
    unsigned char d[32], ref[32];
    char hex[65];
    for (int i = 0; i < 3; i++) {
        chrys_sha256(fips[i].msg, strlen(fips[i].msg), d);
        for (int j = 0; j < 32; j++) snprintf(hex + 2 * j, 3, "%02x", d[j]);
        CHECK(strcmp(hex, fips[i].hex) == 0);
    }
    char *million = malloc(1000000);
    memset(million, 'a', 1000000);
    chrys_sha256(million, 1000000, d);
    for (int j = 0; j < 32; j++) snprintf(hex + 2 * j, 3, "%02x", d[j]);
    CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
    unsigned char buf[300];
    uint64_t r = 99;
    for (size_t i = 0; i < sizeof buf; i++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        buf[i] = (unsigned char)(r >> 56);
    }
    int differ = 0;
    for (size_t n = 0; n <= sizeof buf; n++) {
        chrys_sha256(buf, n, d);
        SHA256(buf, n, ref);
        differ += memcmp(d, ref, 32) != 0;
    }
    CHECK_EQ(differ, 0);
    free(million);
}

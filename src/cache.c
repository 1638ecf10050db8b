/*
 * cache.c: the embedding cache, one SQLite file.
 *
 * Table emb(key, provider, model, dim, text, vec, created, used): key is SHA-256 of
 * provider \0 model \0 dim \0 text; a hit is confirmed by comparing provider, model, dim and the
 * full text, and the stored vector must have dim floats, so neither a hash collision nor a
 * changed model can return a wrong vector. Only successful provider results are ever written.
 * `used` (time of last use) drives LRU eviction when a size bound is set; `created` drives the TTL.
 * Lifetime hit and miss counts live in table stats.
 *
 * Two processes: the file is in WAL mode with a busy timeout, reads and writes happen in short
 * transactions (never across an HTTP request), and writes use BEGIN IMMEDIATE, so concurrent
 * users wait for each other instead of failing.
 */
#include <stdio.h>
#include <time.h>

#include "dynlib.h"
#include "embed.h"

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int sql_fail(embcache *c, char **errmsg, const char *what)
{
    return chrys_set_errmsg(errmsg, CHRYS_IO, "%s: %s: %s", c->path ? c->path : "cache", what,
                            c->db ? c->sq->errmsg(c->db) : "cannot open");
}

/* Run a statement. SQLITE_BUSY can still come back despite the busy timeout (setting WAL mode or
 * creating tables while another process opens the file does not wait), so retry for a while. */
static int exec(embcache *c, const char *sql, char **errmsg)
{
    for (int attempt = 0;; attempt++) {
        int rc = c->sq->exec(c->db, sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK) return CHRYS_OK;
        if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || attempt >= 300) return sql_fail(c, errmsg, sql);
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int cache_open(embcache *c, const char *path, double ttl_s, uint64_t max_entries, char **errmsg)
{
    memset(c, 0, sizeof *c);
    c->path = path;
    c->ttl_s = ttl_s;
    c->max_entries = max_entries;
    char *why = NULL;
    if (!(c->sq = chrys_sqlite(&why))) {
        int rc = chrys_set_errmsg(errmsg, CHRYS_ERROR, "%s: cannot open cache: %s", path, why ? why : "SQLite not loaded");
        chrys_free(why);
        return rc;
    }
    if (c->sq->open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
        int rc = sql_fail(c, errmsg, "cannot open cache");
        cache_close(c);
        return rc;
    }
    c->sq->busy_timeout(c->db, 30000);
    int rc = exec(c, "PRAGMA journal_mode=WAL", errmsg);
    if (!rc) rc = exec(c, "PRAGMA synchronous=NORMAL", errmsg);
    if (!rc)
        rc = exec(c,
                  "CREATE TABLE IF NOT EXISTS emb(key BLOB PRIMARY KEY, provider TEXT NOT NULL, model TEXT NOT NULL,"
                  " dim INTEGER NOT NULL, text TEXT NOT NULL, vec BLOB NOT NULL, created REAL NOT NULL,"
                  " used REAL NOT NULL);"
                  "CREATE INDEX IF NOT EXISTS emb_used ON emb(used);"
                  "CREATE TABLE IF NOT EXISTS stats(name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
                  errmsg);
    if (!rc && (c->sq->prepare_v2(c->db, "SELECT provider, model, dim, text, vec, created FROM emb WHERE key=?", -1, &c->get, NULL) ||
                c->sq->prepare_v2(c->db, "INSERT OR REPLACE INTO emb VALUES(?,?,?,?,?,?,?,?)", -1, &c->put, NULL) ||
                c->sq->prepare_v2(c->db, "UPDATE emb SET used=? WHERE key=?", -1, &c->touch, NULL)))
        rc = sql_fail(c, errmsg, "cannot prepare statements");
    if (rc) cache_close(c);
    return rc;
}

void cache_close(embcache *c)
{
    if (!c->sq) return; /* SQLite never loaded: nothing opened */
    c->sq->finalize(c->get);
    c->sq->finalize(c->put);
    c->sq->finalize(c->touch);
    if (c->db) c->sq->close(c->db);
    memset(c, 0, sizeof *c);
}

int cache_begin(embcache *c, char **errmsg) { return exec(c, "BEGIN IMMEDIATE", errmsg); }
int cache_commit(embcache *c, char **errmsg) { return exec(c, "COMMIT", errmsg); }
void cache_rollback(embcache *c) { c->sq->exec(c->db, "ROLLBACK", NULL, NULL, NULL); }

int cache_get(embcache *c, const unsigned char key[32], const char *provider, const char *model,
              uint32_t dim, const char *text, float *out)
{
    c->sq->reset(c->get);
    c->sq->bind_blob(c->get, 1, key, 32, SQLITE_STATIC);
    int hit = 0;
    if (c->sq->step(c->get) == SQLITE_ROW) {
        const char *p = (const char *)c->sq->column_text(c->get, 0), *m = (const char *)c->sq->column_text(c->get, 1);
        const char *t = (const char *)c->sq->column_text(c->get, 3);
        const void *v = c->sq->column_blob(c->get, 4);
        int vlen = c->sq->column_bytes(c->get, 4);
        double created = c->sq->column_double(c->get, 5);
        hit = p && m && t && v && !strcmp(p, provider) && !strcmp(m, model) &&
              (uint32_t)c->sq->column_int64(c->get, 2) == dim && !strcmp(t, text) &&
              vlen == (int)(dim * sizeof(float)) && (c->ttl_s <= 0 || wall_now() - created <= c->ttl_s);
        if (hit) memcpy(out, v, dim * sizeof(float));
    }
    c->sq->reset(c->get);
    if (hit) {
        c->sq->reset(c->touch);
        c->sq->bind_double(c->touch, 1, wall_now());
        c->sq->bind_blob(c->touch, 2, key, 32, SQLITE_STATIC);
        c->sq->step(c->touch);
        c->sq->reset(c->touch);
    }
    return hit;
}

int cache_put(embcache *c, const unsigned char key[32], const char *provider, const char *model,
              uint32_t dim, const char *text, const float *vec, char **errmsg)
{
    double now = wall_now();
    c->sq->reset(c->put);
    c->sq->bind_blob(c->put, 1, key, 32, SQLITE_STATIC);
    c->sq->bind_text(c->put, 2, provider, -1, SQLITE_STATIC);
    c->sq->bind_text(c->put, 3, model, -1, SQLITE_STATIC);
    c->sq->bind_int64(c->put, 4, dim);
    c->sq->bind_text(c->put, 5, text, -1, SQLITE_STATIC);
    c->sq->bind_blob(c->put, 6, vec, (int)(dim * sizeof(float)), SQLITE_STATIC);
    c->sq->bind_double(c->put, 7, now);
    c->sq->bind_double(c->put, 8, now);
    int ok = c->sq->step(c->put) == SQLITE_DONE;
    c->sq->reset(c->put);
    return ok ? CHRYS_OK : sql_fail(c, errmsg, "cannot store a vector");
}

int cache_add_stats(embcache *c, uint64_t hits, uint64_t misses, char **errmsg)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO stats VALUES('hits',%llu) ON CONFLICT(name) DO UPDATE SET value=value+%llu;"
             "INSERT INTO stats VALUES('misses',%llu) ON CONFLICT(name) DO UPDATE SET value=value+%llu;",
             (unsigned long long)hits, (unsigned long long)hits, (unsigned long long)misses, (unsigned long long)misses);
    return exec(c, sql, errmsg);
}

int cache_evict(embcache *c, double ttl_s, uint64_t max_entries, uint64_t *removed, char **errmsg)
{
    char sql[256];
    int rc = CHRYS_OK;
    uint64_t n = 0;
    if (ttl_s > 0) {
        snprintf(sql, sizeof sql, "DELETE FROM emb WHERE created < %.6f", wall_now() - ttl_s);
        if ((rc = exec(c, sql, errmsg))) return rc;
        n += (uint64_t)c->sq->changes(c->db);
    }
    if (max_entries > 0) {
        snprintf(sql, sizeof sql,
                 "DELETE FROM emb WHERE key IN (SELECT key FROM emb ORDER BY used DESC LIMIT -1 OFFSET %llu)",
                 (unsigned long long)max_entries);
        if ((rc = exec(c, sql, errmsg))) return rc;
        n += (uint64_t)c->sq->changes(c->db);
    }
    if (removed) *removed = n;
    return CHRYS_OK;
}

int chrys_cache_get_info(const char *path, chrys_cache_info *info, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!path || !info) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "path and info are required");
    embcache c;
    int rc = cache_open(&c, path, 0, 0, errmsg);
    if (rc) return rc;
    chrys_cache_info x;
    memset(&x, 0, sizeof x);
    x.struct_size = sizeof x;
    sqlite3_stmt *st = NULL;
    if (c.sq->prepare_v2(c.db, "SELECT count(*), coalesce(sum(length(vec)+length(text)),0) FROM emb", -1, &st, NULL) == SQLITE_OK &&
        c.sq->step(st) == SQLITE_ROW) {
        x.entries = (uint64_t)c.sq->column_int64(st, 0);
        x.bytes = (uint64_t)c.sq->column_int64(st, 1);
    }
    c.sq->finalize(st);
    if (c.sq->prepare_v2(c.db, "SELECT name, value FROM stats", -1, &st, NULL) == SQLITE_OK)
        while (c.sq->step(st) == SQLITE_ROW) {
            const char *nm = (const char *)c.sq->column_text(st, 0);
            if (nm && !strcmp(nm, "hits")) x.hits = (uint64_t)c.sq->column_int64(st, 1);
            if (nm && !strcmp(nm, "misses")) x.misses = (uint64_t)c.sq->column_int64(st, 1);
        }
    c.sq->finalize(st);
    cache_close(&c);
    return chrys_struct_out(info, &x, sizeof x);
}

int chrys_cache_prune(const char *path, double ttl_s, uint64_t max_entries, uint64_t *removed, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!path) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "path is required");
    embcache c;
    int rc = cache_open(&c, path, 0, 0, errmsg);
    if (rc) return rc;
    if (!(rc = cache_begin(&c, errmsg))) {
        rc = cache_evict(&c, ttl_s, max_entries, removed, errmsg);
        if (!rc) rc = cache_commit(&c, errmsg);
        else cache_rollback(&c);
    }
    cache_close(&c);
    return rc;
}

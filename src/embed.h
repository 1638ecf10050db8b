/*
 * embed.h: internals shared by the embedder (embed.c), its cache (cache.c) and the deterministic
 * provider (embed_det.c).
 */
#ifndef CHRYS_EMBED_H
#define CHRYS_EMBED_H

#include "internal.h"

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;

typedef struct embcache {
    const char *path;
    const struct chrys_sqlite_api *sq; /* SQLite, loaded by the first cache opened (dynlib.c) */
    sqlite3 *db;
    sqlite3_stmt *get, *put, *touch;
    double ttl_s;
    uint64_t max_entries;
} embcache;

CHRYS_PRIVATE int cache_open(embcache *c, const char *path, double ttl_s, uint64_t max_entries, char **errmsg);
CHRYS_PRIVATE void cache_close(embcache *c);
CHRYS_PRIVATE int cache_begin(embcache *c, char **errmsg);
CHRYS_PRIVATE int cache_commit(embcache *c, char **errmsg);
CHRYS_PRIVATE void cache_rollback(embcache *c);
/* 1 on a confirmed, unexpired hit (vector copied to out), 0 otherwise. */
CHRYS_PRIVATE int cache_get(embcache *c, const unsigned char key[32], const char *provider, const char *model,
                            uint32_t dim, const char *text, float *out);
CHRYS_PRIVATE int cache_put(embcache *c, const unsigned char key[32], const char *provider, const char *model,
                            uint32_t dim, const char *text, const float *vec, char **errmsg);
CHRYS_PRIVATE int cache_add_stats(embcache *c, uint64_t hits, uint64_t misses, char **errmsg);
CHRYS_PRIVATE int cache_evict(embcache *c, double ttl_s, uint64_t max_entries, uint64_t *removed, char **errmsg);

CHRYS_PRIVATE uint32_t embed_det_seed(const char *text, size_t len);

/* embed_json.c: read a well-formed embeddings reply (OpenAI "data" or Ollama "embeddings") of
 * count vectors of dim into out[count*dim], exactly as the cJSON reading would. 1 when done; 0
 * when the reply is anything it does not handle (then read it with cJSON, for the same result or
 * the same error). */
CHRYS_PRIVATE int embed_reply_fast(const char *reply, int openai, size_t count, uint32_t dim, float *out);

#endif

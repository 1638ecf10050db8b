/*
 * cmd_cache.c: `chrysalis cache stats|prune CACHE`: inspect or trim an embedding cache.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *HELP_CACHE =
    "usage: chrysalis cache stats CACHE [--json]\n"
    "       chrysalis cache prune CACHE [--ttl SECONDS] [--max-entries N] [--no-wait]\n"
    "\nstats: entries, bytes, lifetime hits and misses. prune: drop entries older than the TTL and\n"
    "the least recently used beyond N. Safe while another process uses the cache: one prune at a\n"
    "time (CACHE.lock; a second waits, or with --no-wait exits 5), and SQLite's busy timeout makes\n"
    "it wait for an embedder's write instead of failing.\n";

int cmd_cache(int argc, char **argv)
{
    double ttl = 0;
    long max = 0;
    int json = 0, no_wait = 0, npos;
    const cli_opt tab[] = {
        {"ttl", 0, OPT_DOUBLE, &ttl, 0, INFINITY, "seconds"},
        {"max-entries", 0, OPT_LONG, &max, 0, INFINITY, "a count"},
        OPT_JSON(&json),
        OPT_NO_WAIT(&no_wait),
        {0},
    };
    int code = opts_run(tab, argc, argv, HELP_CACHE, NULL, &npos);
    if (code >= 0) return code;
    if (npos != 2 || (strcmp(argv[1], "stats") && strcmp(argv[1], "prune"))) {
        cli_error("cache: expected 'stats CACHE' or 'prune CACHE'");
        return EXIT_USAGE;
    }
    const char *path = argv[2];
    char *msg = NULL;
    int rc;
    if (!strcmp(argv[1], "prune")) {
        uint64_t removed = 0;
        chrys_lock *lock = NULL;
        code = cli_lock_store(path, no_wait, &lock); /* one pruner at a time, with the store's messages */
        if (code) return code;
        rc = chrys_cache_prune(path, ttl, (uint64_t)max, &removed, &msg);
        chrys_store_unlock(lock);
        if (rc) {
            cli_error("%s", msg ? msg : chrys_errstr(rc));
            chrys_free(msg);
            return cli_exit_for(rc);
        }
        printf("%s: removed %llu entries\n", path, (unsigned long long)removed);
    }
    chrys_cache_info ci = {sizeof ci};
    if ((rc = chrys_cache_get_info(path, &ci, &msg))) {
        cli_error("%s", msg ? msg : chrys_errstr(rc));
        chrys_free(msg);
        return cli_exit_for(rc);
    }
    double hit_rate = ci.hits + ci.misses ? 100.0 * ci.hits / (ci.hits + ci.misses) : 0;
    if (json)
        printf("{\"cache\":\"%s\",\"entries\":%llu,\"bytes\":%llu,\"hits\":%llu,\"misses\":%llu,\"calls_saved\":%llu}\n", path,
               (unsigned long long)ci.entries, (unsigned long long)ci.bytes, (unsigned long long)ci.hits,
               (unsigned long long)ci.misses, (unsigned long long)ci.hits);
    else
        printf("%s: %llu entries, %.1f MiB; lifetime %llu hits (embeddings not requested again), %llu misses, %.1f%% hit rate\n",
               path, (unsigned long long)ci.entries, ci.bytes / 1048576.0, (unsigned long long)ci.hits,
               (unsigned long long)ci.misses, hit_rate);
    return EXIT_OK;
}

/*
 * cmd_cache.c: `chrysalis cache stats|prune CACHE`: inspect or trim an embedding cache.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_cache(int argc, char **argv)
{
    static const struct option opts[] = {{"ttl", required_argument, 0, 't'},
                                         {"max-entries", required_argument, 0, 'm'},
                                         {"json", no_argument, 0, 'j'},
                                         {"no-wait", no_argument, 0, 'N'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    double ttl = 0;
    long long max = 0;
    int json = 0, no_wait = 0, c;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 't') {
            ttl = strtod(optarg, &end);
            if (*end || ttl < 0) {
                cli_error("--ttl: expected seconds >= 0, got '%s'", optarg);
                return EXIT_USAGE;
            }
        } else if (c == 'm') {
            max = strtoll(optarg, &end, 10);
            if (*end || max < 0) {
                cli_error("--max-entries: expected a count >= 0, got '%s'", optarg);
                return EXIT_USAGE;
            }
        } else if (c == 'j') json = 1;
        else if (c == 'N') no_wait = 1;
        else if (c == 'h') {
            puts("usage: chrysalis cache stats CACHE [--json]\n"
                 "       chrysalis cache prune CACHE [--ttl SECONDS] [--max-entries N] [--no-wait]\n"
                 "\nstats: entries, bytes, lifetime hits and misses. prune: drop entries older than the TTL and\n"
                 "the least recently used beyond N. Safe while another process uses the cache: one prune at a\n"
                 "time (CACHE.lock; a second waits, or with --no-wait exits 5), and SQLite's busy timeout makes\n"
                 "it wait for an embedder's write instead of failing.");
            return EXIT_OK;
        } else return EXIT_USAGE;
    }
    if (argc - optind != 2 || (strcmp(argv[optind], "stats") && strcmp(argv[optind], "prune"))) {
        cli_error("cache: expected 'stats CACHE' or 'prune CACHE'");
        return EXIT_USAGE;
    }
    const char *path = argv[optind + 1];
    char *msg = NULL;
    int rc;
    if (!strcmp(argv[optind], "prune")) {
        uint64_t removed = 0;
        chrys_lock *lock = NULL;
        int code = cli_lock_store(path, no_wait, &lock); /* one pruner at a time, with the store's messages */
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
    if ((rc = chrys_cache_info_get(path, &ci, &msg))) {
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

/*
 * cmd_retrain.c: `chrysalis retrain STORE`: retrain an IVF store's lists on its current vectors
 * and write it back atomically, under STORE's writer lock.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_retrain(int argc, char **argv)
{
    int no_wait = 0, a = 1;
    const char *store = NULL;
    for (; a < argc; a++) {
        if (!strcmp(argv[a], "--no-wait")) no_wait = 1;
        else if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) break;
        else if (argv[a][0] == '-' || store) break;
        else store = argv[a];
    }
    if (a < argc || !store) {
        int help = a < argc && (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h"));
        fputs("usage: chrysalis retrain STORE [--no-wait]\n\nRetrain an IVF store's k-means lists on all its vectors "
              "(when 'info' shows drift)\nand write the store back atomically. --no-wait: fail at once (exit 5) when "
              "another writer\nholds STORE's lock, instead of waiting for it.\n",
              help ? stdout : stderr);
        return help ? EXIT_OK : EXIT_USAGE;
    }
    char *msg = NULL;
    chrys_lock *lock = NULL;
    chrys_index *ix = NULL;
    int code = cli_lock_store(store, no_wait, &lock); /* before the store is read */
    if (code) return code;
    chrys_store_meta sm = {sizeof sm};
    int rc = chrys_store_peek(store, &sm, &msg);
    if (!rc && sm.has_merger) {
        cli_error("%s: retraining a merger store is not supported yet (its planner re-plans by itself)", store);
        code = EXIT_USAGE;
        goto done;
    }
    if (!rc) rc = chrys_index_load(store, &ix, &msg);
    if (!rc && (rc = chrys_index_retrain(ix))) {
        cli_error("%s: %s", store, chrys_index_errmsg(ix));
        code = cli_exit_for(rc);
        goto done;
    }
    if (!rc) rc = chrys_index_save(ix, store, &msg);
    if (rc) {
        cli_error("%s", msg ? msg : chrys_errstr(rc));
        code = cli_exit_for(rc);
        goto done;
    }
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(ix, &info);
    printf("%s: retrained %s on %llu vectors (imbalance %.2f)\n", store, info.spec, (unsigned long long)info.count,
           info.imbalance);
done:
    chrys_store_unlock(lock);
    chrys_free(msg);
    chrys_index_free(ix);
    return code;
}

/*
 * cmd_retrain.c: `chrysalis retrain STORE`: retrain an IVF store's lists on its current vectors
 * and write it back atomically, under STORE's writer lock.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *HELP_RETRAIN =
    "usage: chrysalis retrain STORE [--no-wait]\n\nRetrain an IVF store's k-means lists on all its vectors "
    "(when 'info' shows drift)\nand write the store back atomically. --no-wait: fail at once (exit 5) when "
    "another writer\nholds STORE's lock, instead of waiting for it.\n";

int cmd_retrain(int argc, char **argv)
{
    int no_wait = 0, npos;
    const cli_opt tab[] = {OPT_NO_WAIT(&no_wait), {0}};
    int code = opts_run(tab, argc, argv, HELP_RETRAIN, NULL, &npos);
    if (code >= 0) return code;
    if (npos != 1) {
        fputs(HELP_RETRAIN, stderr);
        return EXIT_USAGE;
    }
    const char *store = argv[1];
    char *msg = NULL;
    chrys_lock *lock = NULL;
    chrys_index *ix = NULL;
    code = cli_lock_store(store, no_wait, &lock); /* before the store is read */
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

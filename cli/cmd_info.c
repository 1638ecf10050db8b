/*
 * cmd_info.c: `chrysalis info STORE`: what a store holds, read without trusting it (the whole
 * file is loaded and verified, so info doubles as an integrity check).
 */
#include <getopt.h>
#include <string.h>

#include "cli.h"

static const char *metric_name(chrys_metric m)
{
    return m == CHRYS_METRIC_COSINE ? "cosine" : m == CHRYS_METRIC_IP ? "ip" : "l2";
}

int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j') json = 1;
        else if (c == 'h') {
            puts("usage: chrysalis info STORE [--json]\n\nVerify STORE (every checksum) and describe it.");
            return EXIT_OK;
        } else return EXIT_USAGE;
    }
    if (argc - optind != 1) {
        cli_error("info: need exactly one STORE");
        return EXIT_USAGE;
    }
    const char *store = argv[optind];
    char *msg = NULL;
    chrys_store_meta sm = {sizeof sm};
    chrys_index *ix = NULL;
    int rc = chrys_store_peek(store, &sm, &msg);
    if (!rc) rc = chrys_index_load(store, &ix, &msg);
    if (rc) {
        cli_error("%s", msg ? msg : chrys_errstr(rc));
        chrys_free(msg);
        return cli_exit_for(rc);
    }
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(ix, &info);
    unsigned wv = sm.writer_version;
    if (json) {
        printf("{\"store\":\"%s\",\"format\":\"%u.%u\",\"writer\":\"%u.%u.%u\",\"file_bytes\":%llu,"
               "\"index\":\"Flat\",\"metric\":\"%s\",\"dim\":%u,\"count\":%llu,\"memory_bytes\":%llu,"
               "\"sections\":%u}\n",
               store, sm.format_major, sm.format_minor, wv >> 16, (wv >> 8) & 0xff, wv & 0xff,
               (unsigned long long)sm.file_bytes, metric_name(info.metric), info.dim,
               (unsigned long long)info.count, (unsigned long long)info.memory_bytes, sm.n_sections);
    } else {
        printf("store:    %s\n", store);
        printf("format:   %u.%u (written by chrysalis %u.%u.%u), %llu bytes, %u sections, checksums ok\n",
               sm.format_major, sm.format_minor, wv >> 16, (wv >> 8) & 0xff, wv & 0xff,
               (unsigned long long)sm.file_bytes, sm.n_sections);
        printf("index:    Flat (exact)\n");
        printf("metric:   %s\n", metric_name(info.metric));
        printf("dim:      %u\n", info.dim);
        printf("vectors:  %llu\n", (unsigned long long)info.count);
        printf("memory:   %.1f MiB\n", info.memory_bytes / 1048576.0);
    }
    chrys_index_free(ix);
    return EXIT_OK;
}

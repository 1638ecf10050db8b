/*
 * cmd_info.c: `chrysalis info STORE`: what a store holds, read without trusting it (the whole
 * file is loaded and verified, so info doubles as an integrity check).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char *metric_name(chrys_metric m)
{
    return m == CHRYS_METRIC_COSINE ? "cosine" : m == CHRYS_METRIC_IP ? "ip" : "l2";
}

int cmd_info(int argc, char **argv)
{
    int json = 0, npos;
    const cli_opt tab[] = {OPT_JSON(&json), {0}};
    int code = opts_run(tab, argc, argv, "usage: chrysalis info STORE [--json]\n\nVerify STORE (every checksum) and describe it.\n",
                        NULL, &npos);
    if (code >= 0) return code;
    if (npos != 1) {
        cli_error("info: need exactly one STORE");
        return EXIT_USAGE;
    }
    const char *store = argv[1];
    chrys_store_meta sm = {sizeof sm};
    chrys_index *ix = NULL;
    chrys_merger *m = NULL;
    if ((code = cli_open_store(store, &sm, &m, &ix))) return code;
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(m ? chrys_merger_index(m) : ix, &info);
    chrys_merge_stats ms = {sizeof ms};
    chrys_merge_opts mo = {sizeof mo};
    size_t n_hist = 0;
    chrys_merge_run *hist = NULL;
    if (m) {
        chrys_merger_get_stats(m, &ms);
        chrys_merger_get_opts(m, &mo);
        chrys_merger_get_history(m, NULL, 0, &n_hist);
        hist = calloc(n_hist ? n_hist : 1, sizeof *hist);
        chrys_merger_get_history(m, hist, n_hist, &n_hist);
    }
    unsigned wv = sm.writer_version;
    if (json) {
        printf("{\"store\":\"%s\",\"format\":\"%u.%u\",\"writer\":\"%u.%u.%u\",\"file_bytes\":%llu,"
               "\"index\":\"%s\",\"nlist\":%u,\"planned\":%s,\"plan_reason\":\"%s\",\"imbalance\":%.3f,"
               "\"drift\":%.3f,\"metric\":\"%s\",\"dim\":%u,\"count\":%llu,\"memory_bytes\":%llu,\"sections\":%u",
               store, sm.format_major, sm.format_minor, wv >> 16, (wv >> 8) & 0xff, wv & 0xff,
               (unsigned long long)sm.file_bytes, info.spec, info.nlist, info.planned ? "true" : "false",
               info.plan_reason, info.imbalance, info.drift, metric_name(info.metric), info.dim,
               (unsigned long long)info.count, (unsigned long long)info.memory_bytes, sm.n_sections);
        if (info.kind == CHRYS_INDEX_HNSW)
            printf(",\"hnsw\":{\"M\":%u,\"ef_construction\":%u,\"max_level\":%d,\"deleted\":%llu}", info.hnsw_m,
                   info.ef_construction, info.max_level, (unsigned long long)info.deleted);
        if (m) {
            printf(",\"merger\":{\"variant\":\"%s\",\"threshold\":%g,\"weights\":[%g,%g],\"renormalize\":%s,"
                   "\"mean_update\":%s,\"entries\":%llu,\"records\":%llu,\"merged\":%llu,\"added\":%llu,"
                   "\"skipped\":%llu,\"runs\":[",
                   mo.variant == CHRYS_MERGE_SKILL ? "skill" : "embedding", mo.threshold, mo.weight_old,
                   mo.weight_new, mo.renormalize ? "true" : "false", mo.mean_update ? "true" : "false",
                   (unsigned long long)ms.entries, (unsigned long long)ms.records, (unsigned long long)ms.merged,
                   (unsigned long long)ms.added, (unsigned long long)ms.skipped);
            for (size_t h = 0; h < n_hist; h++)
                printf("%s{\"time\":%llu,\"records\":%llu,\"merged\":%llu,\"added\":%llu,\"skipped\":%llu}",
                       h ? "," : "", (unsigned long long)hist[h].unix_time, (unsigned long long)hist[h].records,
                       (unsigned long long)hist[h].merged, (unsigned long long)hist[h].added, (unsigned long long)hist[h].skipped);
            printf("]}");
        }
        printf("}\n");
    } else {
        printf("store:    %s\n", store);
        printf("format:   %u.%u (written by chrysalis %u.%u.%u), %llu bytes, %u sections, checksums ok\n",
               sm.format_major, sm.format_minor, wv >> 16, (wv >> 8) & 0xff, wv & 0xff,
               (unsigned long long)sm.file_bytes, sm.n_sections);
        if (info.kind == CHRYS_INDEX_IVF)
            printf("index:    %s%s (%u lists, imbalance %.2f, drift %.2f since training on %llu vectors%s%s)\n", info.spec,
                   info.planned ? " (auto)" : "", info.nlist, info.imbalance, info.drift,
                   (unsigned long long)info.trained_on, info.drift > 1.5 ? "; consider 'chrysalis retrain'" : "",
                   !info.sq8 ? "" : strstr(info.spec, "RFlat") ? "; int8 codes scanned, float32 re-ranking"
                                                            : "; int8 codes only, scores approximate");
        else if (info.kind == CHRYS_INDEX_HNSW)
            printf("index:    %s (M %u, ef_construction %u, %d levels above 0%s%s)\n", info.spec, info.hnsw_m, info.ef_construction,
                   info.max_level > 0 ? info.max_level : 0,
                   !info.sq8 ? "" : strstr(info.spec, "RFlat") ? "; int8 codes walked, float32 re-ranking"
                                                                : "; int8 codes only, scores approximate",
                   info.deleted ? "; tombstones pending compaction" : "");
        else
            printf("index:    %s%s (%s)\n", info.spec, info.planned ? " (auto)" : "",
                   !info.sq8 ? "exact" : strstr(info.spec, "RFlat") ? "int8 codes scanned, float32 re-ranking"
                                                              : "int8 codes only, scores approximate");
        if (info.planned) printf("plan:     %s\n", info.plan_reason);
        printf("metric:   %s\n", metric_name(info.metric));
        printf("dim:      %u\n", info.dim);
        printf("vectors:  %llu\n", (unsigned long long)info.count);
        printf("memory:   %.1f MiB\n", info.memory_bytes / 1048576.0);
        if (m) {
            printf("merger:   %s, threshold %g, weights %g/%g%s%s\n", mo.variant == CHRYS_MERGE_SKILL ? "skill" : "embedding",
                   mo.threshold, mo.weight_old, mo.weight_new, mo.renormalize ? ", renormalise" : "",
                   mo.mean_update ? ", mean update" : "");
            printf("entries:  %llu from %llu records (%llu merged, %llu added, %llu skipped)\n",
                   (unsigned long long)ms.entries, (unsigned long long)ms.records, (unsigned long long)ms.merged,
                   (unsigned long long)ms.added, (unsigned long long)ms.skipped);
            printf("history:  %zu run%s\n", n_hist, n_hist == 1 ? "" : "s");
            for (size_t h = 0; h < n_hist; h++) {
                time_t t = (time_t)hist[h].unix_time;
                char when[32];
                strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", gmtime(&t));
                printf("  run %zu  %s UTC  records %llu  merged %llu  added %llu  skipped %llu\n", h + 1, when,
                       (unsigned long long)hist[h].records, (unsigned long long)hist[h].merged, (unsigned long long)hist[h].added,
                       (unsigned long long)hist[h].skipped);
            }
        }
    }
    free(hist);
    chrys_merger_free(m);
    chrys_index_free(ix);
    return EXIT_OK;
}

/*
 * cmd_export.c: `chrysalis export STORE`: a store's entries (merger) or vectors (index) as JSONL
 * or fvecs.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *HELP_EXPORT =
    "usage: chrysalis export STORE [--format jsonl|fvecs] [-o FILE]\n"
    "\n"
    "Write the entries of a merger store (or the vectors of an index store). JSONL lines hold\n"
    "{\"id\", \"merged_count\", \"similarity_score\", \"first_record\", ...metadata, \"embedding\"};\n"
    "fvecs holds the vectors only, in id order. Default: JSONL on stdout.\n";

int cmd_export(int argc, char **argv)
{
    const char *format = "jsonl", *out_path = NULL;
    const cli_opt tab[] = {
        {"format", 0, OPT_CHOICE, &format, .choices = "jsonl|fvecs"},
        {"output", 'o', OPT_STRING, &out_path},
        {0},
    };
    int npos, code = opts_run(tab, argc, argv, HELP_EXPORT, NULL, &npos);
    if (code >= 0) return code;
    if (npos != 1) {
        cli_error("export: need exactly one STORE");
        return EXIT_USAGE;
    }
    const char *store = argv[1];
    chrys_store_meta sm = {sizeof sm};
    chrys_merger *m = NULL;
    chrys_index *ix = NULL;
    if ((code = cli_open_store(store, &sm, &m, &ix))) return code;
    const chrys_index *idx = m ? chrys_merger_index(m) : ix;
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(idx, &info);
    FILE *out = out_path ? fopen(out_path, "wb") : stdout;
    code = EXIT_OK;
    uint64_t *ids = malloc((info.count ? info.count : 1) * sizeof *ids);
    float *v = malloc(info.dim * sizeof *v);
    if (!out || !ids || !v) {
        cli_error("%s: cannot write", out_path ? out_path : "stdout");
        code = EXIT_FAIL;
        goto done;
    }
    size_t n_ids;
    chrys_index_get_ids(idx, ids, info.count, &n_ids);
    for (uint64_t i = 0; i < info.count; i++) {
        uint64_t id = m ? i : ids[i]; /* merger entries in entry order */
        const char *meta = NULL;
        chrys_merge_entry en = {sizeof en};
        if (m) {
            chrys_merger_get_entry(m, id, &en, v);
            meta = en.meta;
        } else {
            chrys_index_get(idx, id, v);
            chrys_index_get_meta(idx, id, &meta);
        }
        if (!strcmp(format, "fvecs")) {
            int32_t d = (int32_t)info.dim;
            fwrite(&d, 4, 1, out);
            fwrite(v, 4, info.dim, out);
            continue;
        }
        fprintf(out, "{\"id\":%llu", (unsigned long long)id);
        if (m) {
            fprintf(out, ",\"merged_count\":%u", en.merged_count);
            if (isnan(en.similarity_score)) fprintf(out, ",\"similarity_score\":null");
            else fprintf(out, ",\"similarity_score\":%.17g", en.similarity_score);
            fprintf(out, ",\"first_record\":%llu", (unsigned long long)en.first_record);
        }
        if (meta && meta[0] == '{' && meta[1] != '}') fprintf(out, ",%.*s", (int)strlen(meta) - 2, meta + 1);
        fprintf(out, ",\"embedding\":[");
        for (uint32_t j = 0; j < info.dim; j++) fprintf(out, j ? ",%.9g" : "%.9g", (double)v[j]);
        fprintf(out, "]}\n");
    }
    if (ferror(out)) {
        cli_error("%s: write error", out_path ? out_path : "stdout");
        code = EXIT_FAIL;
    }
done:
    if (out && out != stdout) fclose(out);
    free(ids);
    free(v);
    chrys_merger_free(m);
    chrys_index_free(ix);
    return code;
}

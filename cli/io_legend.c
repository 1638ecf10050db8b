/*
 * io_legend.c: the Chrysalis pipeline legend files (Replicants/Embeddings/NAME_embeddings_full.json),
 * as scripts/process_legends.py writes them: one JSON object per legend,
 *   {"name": ..., "processed_at": ..., "knowledge_builder_runs": [{"run_number", "embedding",
 *    "descriptors", ...}], "skill_builder_runs": [{"run_number", "embedding", "descriptors",
 *    "salts_used", "skill_embeddings": [{"skill_name", "embedding"}], ...}]}
 * Records come out in the pipeline's order: the knowledge-builder run vectors, then the
 * skill-builder run vectors, then the per-skill vectors (run 1's skills in list order, then run
 * 2's, ...). select picks "kb", "sb", "skill" or "all". Each record's metadata is what the
 * original merger was given: KB/SB rows {"legend", "kind", "run_number", "descriptors",
 * "processed_at"[, "salts_used"]}; skills the save_skill_artifacts() shape {"legend_name",
 * "skill_name", "run_number", "descriptor_strategy", "salts_used"}. An empty or missing
 * embedding gives an empty record (skipped and counted by the merger, as upstream).
 */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int is_legend_file(const char *name, const unsigned char *buf, size_t len)
{
    size_t nl = strlen(name);
    if (nl >= 20 && !strcmp(name + nl - 20, "_embeddings_full.json")) return 1;
    /* Content sniff: a JSON object mentioning the run arrays near its start. */
    size_t i = 0;
    while (i < len && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t')) i++;
    if (i >= len || buf[i] != '{') return 0;
    size_t window = len - i < 65536 ? len - i : 65536;
    const char *p = (const char *)buf + i;
    for (size_t j = 0; j + 22 <= window; j++)
        if (!memcmp(p + j, "knowledge_builder_runs", 22) || !memcmp(p + j, "skill_builder_runs", 18)) return 1;
    return 0;
}

typedef struct legend_out {
    vecset *vs;
    size_t cap;
    const char *name;
    char *err;
    size_t errlen;
} legend_out;

static void dup_into(cJSON *dst, const char *key, const cJSON *src_obj, const char *src_key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(src_obj, src_key);
    if (v) cJSON_AddItemToObject(dst, key, cJSON_Duplicate(v, 1));
}

/* Append one record (takes ownership of meta). */
static int add_record(legend_out *lo, const cJSON *emb, cJSON *meta, const char *where)
{
    vecset *vs = lo->vs;
    int d = cJSON_IsArray(emb) ? cJSON_GetArraySize(emb) : 0;
    int empty = d == 0;
    if (emb && !cJSON_IsArray(emb)) {
        snprintf(lo->err, lo->errlen, "%s: %s: \"embedding\" must be an array of numbers", lo->name, where);
        cJSON_Delete(meta);
        return CHRYS_INVALID;
    }
    if (!empty) {
        if (d > CHRYS_MAX_DIM || (vs->dim && (uint32_t)d != vs->dim)) {
            snprintf(lo->err, lo->errlen, "%s: %s: embedding has %d components, expected %u", lo->name, where, d,
                     vs->dim ? vs->dim : CHRYS_MAX_DIM);
            cJSON_Delete(meta);
            return CHRYS_DIM;
        }
        if (!vs->dim) {
            vs->dim = (uint32_t)d;
            float *nd = realloc(vs->data, (lo->cap ? lo->cap : 1) * vs->dim * sizeof(float));
            if (!nd) goto nomem;
            vs->data = nd;
            memset(vs->data, 0, vs->n * vs->dim * sizeof(float));
        }
    }
    if (vs->n == lo->cap) {
        size_t nc = lo->cap ? lo->cap * 2 : 64;
        float *nd = realloc(vs->data, nc * (vs->dim ? vs->dim : 1) * sizeof(float));
        if (!nd) goto nomem;
        vs->data = nd;
        char **nm = realloc(vs->meta, nc * sizeof(char *));
        if (!nm) goto nomem;
        vs->meta = nm;
        unsigned char *ne = realloc(vs->empty, nc);
        if (!ne) goto nomem;
        vs->empty = ne;
        lo->cap = nc;
    }
    if (vs->dim) {
        float *row = vs->data + vs->n * vs->dim;
        memset(row, 0, vs->dim * sizeof(float));
        int j = 0;
        for (const cJSON *c = empty ? NULL : emb->child; c; c = c->next, j++) {
            float f = cJSON_IsNumber(c) ? (float)c->valuedouble : NAN;
            if (!isfinite(f)) {
                snprintf(lo->err, lo->errlen, "%s: %s: embedding[%d] is not a finite number", lo->name, where, j);
                cJSON_Delete(meta);
                return CHRYS_INVALID;
            }
            row[j] = f;
        }
    }
    char *m = cJSON_PrintUnformatted(meta);
    cJSON_Delete(meta);
    if (!m) goto nomem_nometa;
    vs->meta[vs->n] = m;
    vs->empty[vs->n] = (unsigned char)empty;
    vs->n++;
    return CHRYS_OK;
nomem:
    cJSON_Delete(meta);
nomem_nometa:
    snprintf(lo->err, lo->errlen, "%s: out of memory", lo->name);
    return CHRYS_NOMEM;
}

int vecset_parse_legend(const char *name, const char *buf, size_t len, const char *select, vecset *out,
                        char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int want_kb = !strcmp(select, "all") || !strcmp(select, "kb");
    int want_sb = !strcmp(select, "all") || !strcmp(select, "sb");
    int want_sk = !strcmp(select, "all") || !strcmp(select, "skill");
    if (!want_kb && !want_sb && !want_sk) {
        snprintf(err, errlen, "--select: expected kb, sb, skill or all, got '%s'", select);
        return CHRYS_INVALID;
    }
    cJSON *root = cJSON_ParseWithLength(buf, len);
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "%s: not a JSON object (malformed legend file)", name);
        cJSON_Delete(root);
        return CHRYS_INVALID;
    }
    legend_out lo = {out, 0, name, err, errlen};
    const cJSON *legend = cJSON_GetObjectItemCaseSensitive(root, "name");
    const cJSON *kb = cJSON_GetObjectItemCaseSensitive(root, "knowledge_builder_runs");
    const cJSON *sb = cJSON_GetObjectItemCaseSensitive(root, "skill_builder_runs");
    int rc = CHRYS_OK;
    char where[96];
    if ((kb && !cJSON_IsArray(kb)) || (sb && !cJSON_IsArray(sb)) || (!kb && !sb)) {
        snprintf(err, errlen, "%s: knowledge_builder_runs / skill_builder_runs must be arrays", name);
        rc = CHRYS_INVALID;
        goto done;
    }
    for (int pass = 0; pass < 2 && !rc; pass++) {
        const cJSON *runs = pass == 0 ? kb : sb;
        if (!(pass == 0 ? want_kb : want_sb)) continue;
        int i = 0;
        for (const cJSON *run = runs ? runs->child : NULL; run && !rc; run = run->next, i++) {
            snprintf(where, sizeof where, "%s[%d]", pass == 0 ? "knowledge_builder_runs" : "skill_builder_runs", i);
            cJSON *meta = cJSON_CreateObject();
            if (legend) cJSON_AddItemToObject(meta, "legend", cJSON_Duplicate(legend, 1));
            cJSON_AddStringToObject(meta, "kind", pass == 0 ? "knowledge_builder" : "skill_builder");
            dup_into(meta, "run_number", run, "run_number");
            dup_into(meta, "descriptor_strategy", run, "descriptor_strategy");
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(run, "descriptors");
            cJSON_AddItemToObject(meta, "descriptors", cJSON_IsArray(d) ? cJSON_Duplicate(d, 1) : cJSON_CreateArray());
            if (pass == 1) dup_into(meta, "salts_used", run, "salts_used");
            dup_into(meta, "processed_at", root, "processed_at");
            rc = add_record(&lo, cJSON_GetObjectItemCaseSensitive(run, "embedding"), meta, where);
        }
    }
    if (want_sk && !rc) {
        int i = 0;
        for (const cJSON *run = sb ? sb->child : NULL; run && !rc; run = run->next, i++) {
            const cJSON *skills = cJSON_GetObjectItemCaseSensitive(run, "skill_embeddings");
            int j = 0;
            for (const cJSON *sk = cJSON_IsArray(skills) ? skills->child : NULL; sk && !rc; sk = sk->next, j++) {
                snprintf(where, sizeof where, "skill_builder_runs[%d].skill_embeddings[%d]", i, j);
                cJSON *meta = cJSON_CreateObject();
                if (legend) cJSON_AddItemToObject(meta, "legend_name", cJSON_Duplicate(legend, 1));
                cJSON_AddStringToObject(meta, "kind", "skill");
                dup_into(meta, "skill_name", sk, "skill_name");
                dup_into(meta, "run_number", run, "run_number");
                dup_into(meta, "descriptor_strategy", run, "descriptor_strategy");
                const cJSON *s = cJSON_GetObjectItemCaseSensitive(run, "salts_used");
                cJSON_AddItemToObject(meta, "salts_used", cJSON_IsArray(s) ? cJSON_Duplicate(s, 1) : cJSON_CreateArray());
                rc = add_record(&lo, cJSON_GetObjectItemCaseSensitive(sk, "embedding"), meta, where);
            }
        }
    }
done:
    cJSON_Delete(root);
    if (rc) vecset_free(out);
    return rc;
}

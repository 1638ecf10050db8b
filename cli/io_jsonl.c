/*
 * io_jsonl.c: JSON Lines input: one object per line,
 *   {"id": 7, "embedding": [0.1, ...], "any": "other fields"}
 * "embedding" is required (an array of numbers, the same length on every line). "id" is optional
 * but all-or-none: a non-negative integer (up to 2^53 as a JSON number; larger as a string of
 * decimal digits). Every other field is kept, as compact JSON, as the record's metadata.
 * Blank lines are skipped. Errors name the file and the line.
 */
#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int parse_id(const cJSON *v, uint64_t *id)
{
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return -1;
        *id = (uint64_t)d;
        return 0;
    }
    if (cJSON_IsString(v) && v->valuestring[0]) {
        const char *s = v->valuestring;
        for (const char *p = s; *p; p++)
            if (!isdigit((unsigned char)*p)) return -1;
        errno = 0;
        char *end;
        unsigned long long x = strtoull(s, &end, 10);
        if (errno || *end || x == UINT64_MAX) return -1;
        *id = x;
        return 0;
    }
    return -1;
}

int vecset_parse_jsonl(const char *name, const char *buf, size_t len, vecset *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    size_t cap = 0, line = 0;
    int rc = CHRYS_OK, has_ids = -1;
    cJSON *obj = NULL;
    size_t pos = 0;
    while (pos < len) {
        const char *start = buf + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t llen = nl ? (size_t)(nl - start) : len - pos;
        pos += llen + (nl ? 1 : 0);
        line++;
        size_t i = 0;
        while (i < llen && isspace((unsigned char)start[i])) i++;
        if (i == llen) continue;
        obj = cJSON_ParseWithLength(start, llen);
        if (!obj) {
            const char *e = cJSON_GetErrorPtr();
            size_t col = (e && e >= start && e <= start + llen) ? (size_t)(e - start) + 1 : 0;
            snprintf(err, errlen, "%s:%zu: malformed JSON (near column %zu)", name, line, col);
            rc = CHRYS_INVALID;
            goto fail;
        }
        if (!cJSON_IsObject(obj)) {
            snprintf(err, errlen, "%s:%zu: expected a JSON object", name, line);
            rc = CHRYS_INVALID;
            goto fail;
        }
        cJSON *emb = cJSON_GetObjectItemCaseSensitive(obj, "embedding");
        if (!emb) {
            snprintf(err, errlen, "%s:%zu: missing \"embedding\"", name, line);
            rc = CHRYS_INVALID;
            goto fail;
        }
        if (!cJSON_IsArray(emb)) {
            snprintf(err, errlen, "%s:%zu: \"embedding\" must be an array of numbers", name, line);
            rc = CHRYS_INVALID;
            goto fail;
        }
        int d = cJSON_GetArraySize(emb);
        if (d < 1 || d > CHRYS_MAX_DIM) {
            snprintf(err, errlen, "%s:%zu: embedding has %d components (need 1..%d)", name, line, d, CHRYS_MAX_DIM);
            rc = CHRYS_DIM;
            goto fail;
        }
        if (out->n == 0) out->dim = (uint32_t)d;
        else if ((uint32_t)d != out->dim) {
            snprintf(err, errlen, "%s:%zu: embedding has %d components, earlier records have %u", name, line, d, out->dim);
            rc = CHRYS_DIM;
            goto fail;
        }
        cJSON *idv = cJSON_GetObjectItemCaseSensitive(obj, "id");
        int this_has = idv != NULL;
        if (has_ids < 0) has_ids = this_has;
        else if (has_ids != this_has) {
            snprintf(err, errlen, "%s:%zu: \"id\" must be given on every record or on none", name, line);
            rc = CHRYS_INVALID;
            goto fail;
        }
        if (out->n == cap) {
            size_t nc = cap ? cap * 2 : 256;
            float *nd = realloc(out->data, nc * out->dim * sizeof(float));
            if (nd) out->data = nd;
            char **nm = nd ? realloc(out->meta, nc * sizeof(char *)) : NULL;
            if (nm) out->meta = nm;
            uint64_t *ni = (nm && has_ids) ? realloc(out->ids, nc * sizeof(uint64_t)) : NULL;
            if (ni) out->ids = ni;
            if (!nd || !nm || (has_ids && !ni)) {
                snprintf(err, errlen, "%s:%zu: out of memory", name, line);
                rc = CHRYS_NOMEM;
                goto fail;
            }
            cap = nc;
        }
        float *row = out->data + out->n * out->dim;
        int j = 0;
        for (cJSON *c = emb->child; c; c = c->next, j++) {
            if (!cJSON_IsNumber(c)) {
                snprintf(err, errlen, "%s:%zu: embedding[%d] is not a number", name, line, j);
                rc = CHRYS_INVALID;
                goto fail;
            }
            float f = (float)c->valuedouble;
            if (!isfinite(f)) {
                snprintf(err, errlen, "%s:%zu: embedding[%d] is not a finite float32", name, line, j);
                rc = CHRYS_INVALID;
                goto fail;
            }
            row[j] = f;
        }
        if (has_ids && parse_id(idv, &out->ids[out->n])) {
            snprintf(err, errlen, "%s:%zu: \"id\" must be a non-negative integer (as a string above 2^53)", name, line);
            rc = CHRYS_INVALID;
            goto fail;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(obj, "embedding");
        cJSON_DeleteItemFromObjectCaseSensitive(obj, "id");
        char *meta = NULL;
        if (obj->child && !(meta = cJSON_PrintUnformatted(obj))) {
            snprintf(err, errlen, "%s:%zu: out of memory", name, line);
            rc = CHRYS_NOMEM;
            goto fail;
        }
        out->meta[out->n++] = meta;
        cJSON_Delete(obj);
        obj = NULL;
    }
    if (out->n == 0) {
        snprintf(err, errlen, "%s: no records", name);
        rc = CHRYS_INVALID;
        goto fail;
    }
    return CHRYS_OK;
fail:
    cJSON_Delete(obj);
    vecset_free(out);
    return rc;
}

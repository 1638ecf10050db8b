/*
 * io_jsonl.c: JSON Lines input: one object per line,
 *   {"id": 7, "embedding": [0.1, ...], "any": "other fields"}
 * "embedding" is required (an array of numbers, the same length on every line). "id" is optional
 * but all-or-none: a non-negative integer (up to 2^53 as a JSON number; larger as a string of
 * decimal digits); jsonl_record_id is that rule, for every JSONL reader of the CLI (this one, embed's
 * text records and merge's --meta sidecar). Every other field is kept, as compact JSON, as the
 * record's metadata.
 * Blank lines are skipped. Errors name the file and the line.
 *
 * For merge input (flags): JSONL_ALLOW_EMPTY keeps records whose embedding is empty or missing
 * (the merger skips and counts them, as the original does); JSONL_SKIP_INVALID drops malformed
 * records and counts them instead of failing.
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

int jsonl_record_id(const cJSON *rec, int *has_ids, uint64_t *id, const char *name, size_t line, char *err,
                    size_t errlen)
{
    const cJSON *idv = cJSON_GetObjectItemCaseSensitive(rec, "id");
    *id = 0;
    if (*has_ids >= 0 && *has_ids != (idv != NULL)) {
        snprintf(err, errlen, "%s:%zu: \"id\" must be given on every record or on none", name, line);
        return CHRYS_INVALID;
    }
    if (idv && parse_id(idv, id)) {
        snprintf(err, errlen, "%s:%zu: \"id\" must be a non-negative integer (as a string above 2^53)", name, line);
        return CHRYS_INVALID;
    }
    *has_ids = idv != NULL;
    return CHRYS_OK;
}

int vecset_parse_jsonl(const char *name, const char *buf, size_t len, vecset *out, char *err, size_t errlen)
{
    return vecset_parse_jsonl_ex(name, buf, len, 0, out, err, errlen);
}

/* Make room for one more record. */
static int grow(vecset *out, size_t *cap, int has_ids, int track_empty)
{
    if (out->n < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 256;
    float *nd = realloc(out->data, nc * (out->dim ? out->dim : 1) * sizeof(float));
    if (!nd) return -1;
    out->data = nd;
    char **nm = realloc(out->meta, nc * sizeof(char *));
    if (!nm) return -1;
    out->meta = nm;
    if (has_ids) {
        uint64_t *ni = realloc(out->ids, nc * sizeof(uint64_t));
        if (!ni) return -1;
        out->ids = ni;
    }
    if (track_empty) {
        unsigned char *ne = realloc(out->empty, nc);
        if (!ne) return -1;
        out->empty = ne;
    }
    *cap = nc;
    return 0;
}

/* The record's "embedding" into *row (grown as needed): its length in *d, or *is_empty for an
 * empty / missing one where allow_empty. Returns CHRYS_OK, the code of a bad record (err set), or
 * CHRYS_NOMEM. */
static int parse_embedding(const cJSON *obj, int allow_empty, uint32_t dim, float **row, size_t *row_cap, int *d_out,
                           int *is_empty, const char *name, size_t line, char *err, size_t errlen)
{
    const cJSON *emb = cJSON_GetObjectItemCaseSensitive(obj, "embedding");
    int d = emb && cJSON_IsArray(emb) ? cJSON_GetArraySize(emb) : -1;
    *d_out = d;
    *is_empty = allow_empty && (!emb || d == 0);
    if (*is_empty) return CHRYS_OK;
    if (!emb) {
        snprintf(err, errlen, "%s:%zu: missing \"embedding\"", name, line);
        return CHRYS_INVALID;
    }
    if (d < 0) {
        snprintf(err, errlen, "%s:%zu: \"embedding\" must be an array of numbers", name, line);
        return CHRYS_INVALID;
    }
    if (d < 1 || d > CHRYS_MAX_DIM) {
        snprintf(err, errlen, "%s:%zu: embedding has %d components (need 1..%d)", name, line, d, CHRYS_MAX_DIM);
        return CHRYS_DIM;
    }
    if (dim && (uint32_t)d != dim) {
        snprintf(err, errlen, "%s:%zu: embedding has %d components, earlier records have %u", name, line, d, dim);
        return CHRYS_DIM;
    }
    if ((size_t)d > *row_cap) {
        float *nr = realloc(*row, (size_t)d * sizeof(float));
        if (!nr) {
            snprintf(err, errlen, "%s:%zu: out of memory", name, line);
            return CHRYS_NOMEM;
        }
        *row = nr;
        *row_cap = (size_t)d;
    }
    int j = 0;
    for (const cJSON *c = emb->child; c; c = c->next, j++) {
        if (!cJSON_IsNumber(c)) {
            snprintf(err, errlen, "%s:%zu: embedding[%d] is not a number", name, line, j);
            return CHRYS_INVALID;
        }
        float f = (float)c->valuedouble;
        if (!isfinite(f)) {
            snprintf(err, errlen, "%s:%zu: embedding[%d] is not a finite float32", name, line, j);
            return CHRYS_INVALID;
        }
        (*row)[j] = f;
    }
    return CHRYS_OK;
}

int vecset_parse_jsonl_ex(const char *name, const char *buf, size_t len, int flags, vecset *out,
                          char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    size_t cap = 0, line = 0, pos = 0;
    int rc = CHRYS_OK, has_ids = -1;
    int allow_empty = flags & JSONL_ALLOW_EMPTY, skip_invalid = flags & JSONL_SKIP_INVALID;
    cJSON *obj = NULL;
    float *row = NULL; /* the current record's values, until it is accepted */
    size_t row_cap = 0;
    /* Empty records seen before the dimension is known keep no values; fixed up at the end. */
    while (pos < len) {
        const char *start = buf + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t llen = nl ? (size_t)(nl - start) : len - pos;
        pos += llen + (nl ? 1 : 0);
        line++;
        size_t i = 0;
        while (i < llen && isspace((unsigned char)start[i])) i++;
        if (i == llen) continue;
        int bad = CHRYS_OK;
        obj = cJSON_ParseWithLength(start, llen);
        if (!obj) {
            const char *e = cJSON_GetErrorPtr();
            size_t col = (e && e >= start && e <= start + llen) ? (size_t)(e - start) + 1 : 0;
            snprintf(err, errlen, "%s:%zu: malformed JSON (near column %zu)", name, line, col);
            bad = CHRYS_INVALID;
            goto record_done;
        }
        if (!cJSON_IsObject(obj)) {
            snprintf(err, errlen, "%s:%zu: expected a JSON object", name, line);
            bad = CHRYS_INVALID;
            goto record_done;
        }
        int d, is_empty;
        if ((bad = parse_embedding(obj, allow_empty, out->dim, &row, &row_cap, &d, &is_empty, name, line, err, errlen))) {
            if (bad != CHRYS_NOMEM) goto record_done;
            rc = bad;
            goto fail;
        }
        uint64_t id = 0;
        if ((bad = jsonl_record_id(obj, &has_ids, &id, name, line, err, errlen))) goto record_done;
        /* Accepted. */
        if (!is_empty && !out->dim) {
            out->dim = (uint32_t)d;
            /* records accepted so far were all empty: give them room for dim values */
            float *nd = realloc(out->data, (cap ? cap : 1) * out->dim * sizeof(float));
            if (!nd) {
                rc = CHRYS_NOMEM;
                goto fail;
            }
            out->data = nd;
            memset(out->data, 0, out->n * out->dim * sizeof(float));
        }
        if (grow(out, &cap, has_ids, allow_empty)) {
            snprintf(err, errlen, "%s:%zu: out of memory", name, line);
            rc = CHRYS_NOMEM;
            goto fail;
        }
        if (out->dim) {
            if (is_empty) memset(out->data + out->n * out->dim, 0, out->dim * sizeof(float));
            else memcpy(out->data + out->n * out->dim, row, out->dim * sizeof(float));
        }
        if (has_ids) out->ids[out->n] = id;
        if (allow_empty) out->empty[out->n] = (unsigned char)is_empty;
        cJSON_DeleteItemFromObjectCaseSensitive(obj, "embedding");
        cJSON_DeleteItemFromObjectCaseSensitive(obj, "id");
        char *meta = NULL;
        if (obj->child && !(meta = cJSON_PrintUnformatted(obj))) {
            snprintf(err, errlen, "%s:%zu: out of memory", name, line);
            rc = CHRYS_NOMEM;
            goto fail;
        }
        out->meta[out->n++] = meta;
    record_done:
        cJSON_Delete(obj);
        obj = NULL;
        if (bad) {
            if (!skip_invalid) {
                rc = bad;
                goto fail;
            }
            out->n_skipped++;
        }
    }
    if (out->n == 0 && !(skip_invalid && out->n_skipped)) {
        snprintf(err, errlen, "%s: no records", name);
        rc = CHRYS_INVALID;
        goto fail;
    }
    if (out->dim == 0 && out->n > 0) {
        snprintf(err, errlen, "%s: every record has an empty embedding", name);
        rc = CHRYS_DIM;
        goto fail;
    }
    free(row);
    return CHRYS_OK;
fail:
    free(row);
    cJSON_Delete(obj);
    vecset_free(out);
    return rc;
}

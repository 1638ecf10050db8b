/*
 * embed_json.c: a fast path for reading an embeddings reply.
 *
 * A reply of 128 x 1024 components is 2.6 MB of JSON; cJSON turns it into 131,000 nodes (one
 * malloc, one copy of the digits and one localeconv() each) before parse_reply reads them, and
 * that was most of the client's time per reply. This reader walks the same text once and converts
 * each component with the same strtod cJSON uses, straight into the output rows.
 *
 * It is deliberately strict and only ever says "handled" for replies that cJSON would accept and
 * read to exactly the same floats: plain JSON whitespace, keys without escapes, no key of
 * interest repeated, numbers in strict JSON grammar (at most 63 characters, as cJSON copies),
 * "index" a non-negative integer below count with no slot given twice, every embedding an array of
 * exactly dim finite numbers, nothing after the document. Anything else returns 0 and the caller
 * falls back to the cJSON reading, which produces the same result or the same error as before.
 */
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "embed.h"

typedef struct rd {
    const char *p;
} rd;

static void ws(rd *r)
{
    while (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r') r->p++;
}

/* A string without escapes or control characters; *s, *len its contents. 0 when not one. */
static int str(rd *r, const char **s, size_t *len)
{
    if (*r->p != '"') return 0;
    const char *q = ++r->p;
    while (*q != '"') {
        if (*q == '\\' || (unsigned char)*q < 0x20) return 0; /* also the terminating NUL */
        q++;
    }
    *s = r->p;
    *len = (size_t)(q - r->p);
    r->p = q + 1;
    return 1;
}

/* A number in strict JSON grammar, converted as cJSON converts it. 0 when not one. */
static int num(rd *r, double *v)
{
    const char *q = r->p;
    if (*q == '-') q++;
    if (*q == '0') q++;
    else if (*q >= '1' && *q <= '9') while (*q >= '0' && *q <= '9') q++;
    else return 0;
    if (*q == '.') {
        q++;
        if (!(*q >= '0' && *q <= '9')) return 0;
        while (*q >= '0' && *q <= '9') q++;
    }
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-') q++;
        if (!(*q >= '0' && *q <= '9')) return 0;
        while (*q >= '0' && *q <= '9') q++;
    }
    if (q - r->p > 63) return 0;
    char *end;
    *v = strtod(r->p, &end);
    if (end != q) return 0;
    r->p = q;
    return 1;
}

/* Skip any value (bounded nesting). 0 when it is not one this reader accepts. */
static int skip(rd *r, int depth)
{
    const char *s;
    size_t l;
    double v;
    if (depth > 64) return 0;
    ws(r);
    switch (*r->p) {
    case '"': return str(r, &s, &l);
    case 't': return !strncmp(r->p, "true", 4) ? (r->p += 4, 1) : 0;
    case 'f': return !strncmp(r->p, "false", 5) ? (r->p += 5, 1) : 0;
    case 'n': return !strncmp(r->p, "null", 4) ? (r->p += 4, 1) : 0;
    case '[':
    case '{': {
        char close = *r->p == '[' ? ']' : '}';
        int obj = close == '}';
        r->p++;
        ws(r);
        if (*r->p == close) return r->p++, 1;
        for (;;) {
            if (obj) {
                ws(r);
                if (!str(r, &s, &l)) return 0;
                ws(r);
                if (*r->p++ != ':') return 0;
            }
            if (!skip(r, depth + 1)) return 0;
            ws(r);
            if (*r->p == ',') r->p++;
            else if (*r->p == close) return r->p++, 1;
            else return 0;
        }
    }
    default: return num(r, &v);
    }
}

/* An array of exactly dim finite numbers into row. */
static int vec(rd *r, uint32_t dim, float *row)
{
    ws(r);
    if (*r->p++ != '[') return 0;
    for (uint32_t j = 0; j < dim; j++) {
        double v;
        ws(r);
        if (!num(r, &v)) return 0;
        float f = (float)v;
        if (!isfinite(f)) return 0;
        row[j] = f;
        ws(r);
        if (*r->p == ',' && j + 1 < dim) r->p++;
        else if (!(*r->p == ']' && j + 1 == dim)) return 0;
    }
    if (!dim) ws(r);
    return *r->p++ == ']';
}

static int key_is(const char *s, size_t l, const char *k) { return l == strlen(k) && !memcmp(s, k, l); }

/* One item of "data": {"index": i, "embedding": [...], anything else}. */
static int item(rd *r, size_t k, size_t count, uint32_t dim, float *out, float *tmp, unsigned char *used)
{
    ws(r);
    if (*r->p++ != '{') return 0;
    int have_idx = 0, have_vec = 0;
    size_t slot = k;
    const float *vrow = NULL;
    ws(r);
    if (*r->p == '}') return 0; /* no embedding */
    for (;;) {
        const char *s;
        size_t l;
        ws(r);
        if (!str(r, &s, &l)) return 0;
        ws(r);
        if (*r->p++ != ':') return 0;
        ws(r);
        if (key_is(s, l, "index")) {
            double v;
            const char *q = r->p;
            if (have_idx++ || !num(r, &v)) return 0;
            for (; q < r->p; q++) /* a plain non-negative integer */
                if (*q < '0' || *q > '9') return 0;
            if (v >= (double)count) return 0;
            slot = (size_t)v;
        } else if (key_is(s, l, "embedding")) {
            if (have_vec++ || !vec(r, dim, tmp)) return 0;
            vrow = tmp;
        } else if (!skip(r, 2)) {
            return 0;
        }
        ws(r);
        if (*r->p == ',') r->p++;
        else if (*r->p == '}') break;
        else return 0;
    }
    r->p++;
    if (!vrow || used[slot]) return 0;
    used[slot] = 1;
    memcpy(out + slot * dim, vrow, dim * sizeof(float));
    return 1;
}

int embed_reply_fast(const char *reply, int openai, size_t count, uint32_t dim, float *out)
{
    if (!reply || !count) return 0;
    const struct lconv *lc = localeconv();
    if (!lc || !lc->decimal_point || strcmp(lc->decimal_point, ".")) return 0;
    unsigned char *used = chrys_calloc(count, 1);
    float *tmp = chrys_malloc(dim * sizeof(float)); /* an item's row, until its "index" is known */
    if (!used || !tmp) {
        chrys_free(used);
        chrys_free(tmp);
        return 0;
    }
    rd r = {reply};
    int ok = 0, have_list = 0;
    size_t n = 0;
    ws(&r);
    if (*r.p++ != '{') goto done;
    ws(&r);
    if (*r.p == '}') goto done;
    for (;;) {
        const char *s;
        size_t l;
        ws(&r);
        if (!str(&r, &s, &l)) goto done;
        ws(&r);
        if (*r.p++ != ':') goto done;
        if (key_is(s, l, openai ? "data" : "embeddings")) {
            if (have_list++) goto done;
            ws(&r);
            if (*r.p++ != '[') goto done;
            ws(&r);
            if (*r.p == ']') goto done; /* count > 0 */
            for (;;) {
                if (n == count) goto done;
                if (openai) {
                    if (!item(&r, n, count, dim, out, tmp, used)) goto done;
                } else {
                    if (!vec(&r, dim, out + n * dim)) goto done;
                }
                n++;
                ws(&r);
                if (*r.p == ',') r.p++;
                else if (*r.p == ']') break;
                else goto done;
            }
            r.p++;
        } else if (!skip(&r, 1)) {
            goto done;
        }
        ws(&r);
        if (*r.p == ',') r.p++;
        else if (*r.p == '}') break;
        else goto done;
    }
    r.p++;
    ws(&r);
    ok = have_list && n == count && *r.p == 0;
done:
    chrys_free(used);
    chrys_free(tmp);
    return ok;
}

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
#include <stdint.h>
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

/* strtod's result for the decimal m x 10^k (m < 2^64, |k| <= 27, both exact in long double), or
 * -1 when it cannot say for sure. One x87 operation rounds the exact value once to 64 bits; that
 * rounded to double is the correctly rounded double (strtod's) unless the 64-bit result lies on
 * or next to a midpoint between two doubles (low 11 bits 0x3ff..0x401), which is left to strtod. */
static const long double P10[28] = {1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,  1e7L,  1e8L,  1e9L,
                                    1e10L, 1e11L, 1e12L, 1e13L, 1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L,
                                    1e20L, 1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L};
static int fast_decimal(uint64_t m, int k, int neg, double *v)
{
#if defined(__x86_64__) && defined(__LDBL_MANT_DIG__) && __LDBL_MANT_DIG__ == 64
    if (k < -27 || k > 27) return 0;
    if (!m) {
        *v = neg ? -0.0 : 0.0;
        return 1;
    }
    long double q = k < 0 ? (long double)m / P10[-k] : (long double)m * P10[k];
    uint64_t mant;
    memcpy(&mant, &q, 8); /* the x87 significand, explicit integer bit */
    unsigned low = (unsigned)(mant & 0x7ff);
    if (low >= 0x3ff && low <= 0x401) return 0;
    *v = neg ? -(double)q : (double)q;
    return 1;
#else
    (void)m, (void)k, (void)neg, (void)v;
    return 0;
#endif
}

/* A number in strict JSON grammar, converted as cJSON converts it (strtod). 0 when not one. */
static int num(rd *r, double *v)
{
    const char *q = r->p;
    uint64_t m = 0;
    int nd = 0, k = 0, neg = 0, exact = 1;
    if (*q == '-') q++, neg = 1;
    if (*q == '0') q++;
    else if (*q >= '1' && *q <= '9')
        for (; *q >= '0' && *q <= '9'; q++) {
            if (nd < 19) m = m * 10 + (uint64_t)(*q - '0'), nd++;
            else exact = 0;
        }
    else return 0;
    if (*q == '.') {
        q++;
        if (!(*q >= '0' && *q <= '9')) return 0;
        for (; *q >= '0' && *q <= '9'; q++) {
            if (!m && *q == '0') k--; /* leading zeros of the fraction */
            else if (nd < 19) m = m * 10 + (uint64_t)(*q - '0'), nd++, k--;
            else exact = 0;
        }
    }
    if (*q == 'e' || *q == 'E') {
        q++;
        int es = 1, e = 0;
        if (*q == '+' || *q == '-') es = *q++ == '-' ? -1 : 1;
        if (!(*q >= '0' && *q <= '9')) return 0;
        for (; *q >= '0' && *q <= '9'; q++)
            if (e < 10000) e = e * 10 + (*q - '0');
        k += es * e;
    }
    if (q - r->p > 63) return 0;
    if (!exact || !fast_decimal(m, k, neg, v)) {
        char *end;
        *v = strtod(r->p, &end);
        if (end != q) return 0;
    }
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

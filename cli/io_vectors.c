/*
 * io_vectors.c: fvecs, npy and raw float32 input.
 *
 * Each reader takes the whole input as one buffer and rearranges it in place into a dense
 * row-major float array, so a large file costs its own size in memory once. Every count read
 * from the input is checked against the bytes actually present before it is used; messages
 * name the file and the record and byte offset at fault.
 */
#include <ctype.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cli.h"

int vec_format_parse(const char *s)
{
    if (!strcmp(s, "auto")) return FMT_AUTO;
    if (!strcmp(s, "fvecs")) return FMT_FVECS;
    if (!strcmp(s, "npy")) return FMT_NPY;
    if (!strcmp(s, "raw") || !strcmp(s, "f32")) return FMT_RAW;
    if (!strcmp(s, "jsonl") || !strcmp(s, "json")) return FMT_JSONL;
    return -1;
}

static vec_format guess_format(const char *path, const unsigned char *buf, size_t len)
{
    const char *dot = strrchr(path, '.');
    if (dot) {
        if (!strcmp(dot, ".fvecs")) return FMT_FVECS;
        if (!strcmp(dot, ".npy")) return FMT_NPY;
        if (!strcmp(dot, ".f32") || !strcmp(dot, ".raw") || !strcmp(dot, ".bin")) return FMT_RAW;
        if (!strcmp(dot, ".jsonl") || !strcmp(dot, ".json") || !strcmp(dot, ".ndjson")) return FMT_JSONL;
    }
    if (len >= 6 && memcmp(buf, "\x93NUMPY", 6) == 0) return FMT_NPY;
    size_t i = 0;
    while (i < len && isspace(buf[i])) i++;
    if (i < len && buf[i] == '{') return FMT_JSONL;
    return FMT_FVECS;
}

void vecset_free(vecset *v)
{
    if (v->meta)
        for (size_t i = 0; i < v->n; i++) free(v->meta[i]);
    free(v->meta);
    free(v->ids);
    if (!v->borrowed) free(v->data);
    free(v->empty);
    memset(v, 0, sizeof *v);
}

static int check_finite(const char *name, const float *x, size_t n, uint32_t dim,
                        size_t (*offset_of)(size_t row, uint32_t dim, size_t base), size_t base,
                        char *err, size_t errlen)
{
    for (size_t r = 0; r < n; r++)
        for (uint32_t j = 0; j < dim; j++)
            if (!isfinite(x[r * dim + j])) {
                snprintf(err, errlen, "%s: record %zu (byte offset %zu): component %u is %s", name, r,
                         offset_of(r, dim, base) + (size_t)j * 4, j,
                         isnan(x[r * dim + j]) ? "NaN" : "infinite");
                return CHRYS_INVALID;
            }
    return CHRYS_OK;
}

static size_t fvecs_offset(size_t r, uint32_t dim, size_t base)
{
    (void)base;
    return r * (4 + (size_t)dim * 4) + 4;
}
static size_t dense_offset(size_t r, uint32_t dim, size_t base) { return base + r * (size_t)dim * 4; }

static int parse_fvecs(const char *name, unsigned char *buf, size_t len, vecset *out, char *err, size_t errlen)
{
    if (len == 0) {
        snprintf(err, errlen, "%s: empty fvecs input", name);
        return CHRYS_INVALID;
    }
    if (len < 4) {
        snprintf(err, errlen, "%s: truncated fvecs header (%zu bytes)", name, len);
        return CHRYS_INVALID;
    }
    int32_t d;
    memcpy(&d, buf, 4);
    if (d < 1 || d > CHRYS_MAX_DIM) {
        snprintf(err, errlen, "%s: record 0 (byte offset 0): dimension %d out of range 1..%d", name, d, CHRYS_MAX_DIM);
        return CHRYS_INVALID;
    }
    size_t row = 4 + (size_t)d * 4;
    if (len % row) {
        snprintf(err, errlen, "%s: size %zu is not a multiple of the %zu-byte record for dim %d: record %zu (byte offset %zu) is truncated",
                 name, len, row, d, len / row, (len / row) * row);
        return CHRYS_INVALID;
    }
    size_t n = len / row;
    for (size_t r = 0; r < n; r++) {
        int32_t dr;
        memcpy(&dr, buf + r * row, 4);
        if (dr != d) {
            snprintf(err, errlen, "%s: record %zu (byte offset %zu): dimension %d differs from %d", name, r, r * row, dr, d);
            return CHRYS_DIM;
        }
    }
    /* Compact in place: row r's floats move from r*row+4 to r*d*4 (always leftwards). */
    for (size_t r = 0; r < n; r++) memmove(buf + r * (size_t)d * 4, buf + r * row + 4, (size_t)d * 4);
    out->n = n;
    out->dim = (uint32_t)d;
    out->data = (float *)buf;
    int rc = check_finite(name, out->data, n, out->dim, fvecs_offset, 0, err, errlen);
    if (rc) return rc;
    /* Give back the bytes of the dropped headers; on success buf now belongs to out->data. */
    float *shrunk = realloc(buf, n * (size_t)d * 4);
    if (shrunk) out->data = shrunk;
    return CHRYS_OK;
}

static int parse_raw(const char *name, unsigned char *buf, size_t len, uint32_t dim, vecset *out, char *err, size_t errlen)
{
    if (dim < 1 || dim > CHRYS_MAX_DIM) {
        snprintf(err, errlen, "%s: raw float32 input needs --dim (1..%d)", name, CHRYS_MAX_DIM);
        return CHRYS_INVALID;
    }
    size_t row = (size_t)dim * 4;
    if (len == 0 || len % row) {
        snprintf(err, errlen, "%s: size %zu is not a positive multiple of %zu bytes (dim %u): record %zu is truncated",
                 name, len, row, dim, len / row);
        return CHRYS_INVALID;
    }
    out->n = len / row;
    out->dim = dim;
    out->data = (float *)buf;
    return check_finite(name, out->data, out->n, dim, dense_offset, 0, err, errlen);
}

/* Find "'key':" in an npy header dict and return a pointer after the colon, or NULL. */
static const char *npy_field(const char *hdr, const char *key)
{
    const char *p = strstr(hdr, key);
    if (!p) return NULL;
    p = strchr(p + strlen(key), ':');
    if (!p) return NULL;
    p++;
    while (*p == ' ') p++;
    return p;
}

static int parse_npy(const char *name, unsigned char *buf, size_t len, vecset *out, char *err, size_t errlen,
                     char *note, size_t notelen)
{
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) {
        snprintf(err, errlen, "%s: not an npy file (bad magic)", name);
        return CHRYS_INVALID;
    }
    unsigned major = buf[6];
    size_t hlen, hstart;
    if (major == 1) {
        hlen = buf[8] | ((size_t)buf[9] << 8);
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12) goto truncated;
        hlen = buf[8] | ((size_t)buf[9] << 8) | ((size_t)buf[10] << 16) | ((size_t)buf[11] << 24);
        hstart = 12;
    } else {
        snprintf(err, errlen, "%s: npy version %u is not supported", name, major);
        return CHRYS_INVALID;
    }
    if (hlen > len - hstart || hlen > 65536) goto truncated;
    char hdr[65537];
    memcpy(hdr, buf + hstart, hlen);
    hdr[hlen] = 0;
    const char *descr = npy_field(hdr, "'descr'"), *fo = npy_field(hdr, "'fortran_order'"),
               *shape = npy_field(hdr, "'shape'");
    if (!descr || !fo || !shape) {
        snprintf(err, errlen, "%s: npy header lacks descr, fortran_order or shape", name);
        return CHRYS_INVALID;
    }
    int f64;
    if (!strncmp(descr, "'<f4'", 5)) f64 = 0;
    else if (!strncmp(descr, "'<f8'", 5)) f64 = 1;
    else {
        snprintf(err, errlen, "%s: npy dtype %.8s is not supported (need little-endian float32 or float64)", name, descr);
        return CHRYS_INVALID;
    }
    if (strncmp(fo, "False", 5) != 0) {
        snprintf(err, errlen, "%s: Fortran-ordered npy arrays are not supported", name);
        return CHRYS_INVALID;
    }
    unsigned long long dims[2];
    int nd = 0;
    const char *p = shape;
    if (*p++ != '(') goto bad_shape;
    while (*p && *p != ')') {
        while (*p == ' ' || *p == ',') p++;
        if (*p == ')') break;
        if (!isdigit((unsigned char)*p) || nd == 2) goto bad_shape;
        char *end;
        dims[nd++] = strtoull(p, &end, 10);
        p = end;
    }
    if (nd == 0) goto bad_shape;
    unsigned long long n = nd == 2 ? dims[0] : 1, d = nd == 2 ? dims[1] : dims[0];
    if (d < 1 || d > CHRYS_MAX_DIM) {
        snprintf(err, errlen, "%s: npy dimension %llu out of range 1..%d", name, d, CHRYS_MAX_DIM);
        return CHRYS_INVALID;
    }
    size_t esz = f64 ? 8 : 4, data_off = hstart + hlen;
    if (n > (len - data_off) / (d * esz)) goto truncated;
    if ((len - data_off) != n * d * esz) {
        snprintf(err, errlen, "%s: npy data is %zu bytes, shape says %llu", name, len - data_off, n * d * esz);
        return CHRYS_INVALID;
    }
    float *dst = (float *)buf;
    if (f64) {
        for (size_t i = 0; i < n * d; i++) {
            double v;
            memcpy(&v, buf + data_off + i * 8, 8);
            dst[i] = (float)v; /* dst index i*4 < source index data_off + i*8: safe in place */
        }
        snprintf(note, notelen, "%s: float64 input converted to float32", name);
    } else {
        memmove(dst, buf + data_off, n * d * 4);
    }
    out->n = n;
    out->dim = (uint32_t)d;
    out->data = dst;
    return check_finite(name, dst, n, (uint32_t)d, dense_offset, data_off, err, errlen);
bad_shape:
    snprintf(err, errlen, "%s: npy shape must be (n, d) or (d,)", name);
    return CHRYS_INVALID;
truncated:
    snprintf(err, errlen, "%s: npy file truncated (%zu bytes)", name, len);
    return CHRYS_INVALID;
}

int vecset_parse(const char *name, vec_format fmt, uint32_t raw_dim, unsigned char *buf, size_t len,
                 vecset *out, char *err, size_t errlen, char *note, size_t notelen)
{
    memset(out, 0, sizeof *out);
    if (note && notelen) note[0] = 0;
    if (fmt == FMT_AUTO) fmt = guess_format(name, buf, len);
    int rc;
    switch (fmt) {
    case FMT_FVECS: rc = parse_fvecs(name, buf, len, out, err, errlen); break;
    case FMT_RAW: rc = parse_raw(name, buf, len, raw_dim, out, err, errlen); break;
    case FMT_NPY: rc = parse_npy(name, buf, len, out, err, errlen, note, notelen); break;
    case FMT_JSONL:
        rc = vecset_parse_jsonl(name, (const char *)buf, len, out, err, errlen);
        free(buf);
        return rc;
    default: rc = CHRYS_INVALID; snprintf(err, errlen, "%s: unknown format", name);
    }
    if (rc) {
        free(buf); /* on failure out->data is either NULL or buf itself */
        memset(out, 0, sizeof *out);
    }
    return rc;
}

int vecset_read(const char *path, vec_format fmt, uint32_t raw_dim, vecset *out, char *err, size_t errlen,
                char *note, size_t notelen)
{
    unsigned char *buf;
    size_t len;
    memset(out, 0, sizeof *out);
    int rc = read_all(path, &buf, &len, err, errlen);
    if (rc) return rc;
    return vecset_parse(strcmp(path, "-") ? path : "(stdin)", fmt, raw_dim, buf, len, out, err, errlen, note, notelen);
}

/* ------------------------------------------------------------------------------------------
 * Streaming: large fvecs / raw float32 files read a chunk of rows at a time (merge), so the
 * file is never in memory whole. The file's size is checked against its record size first;
 * each chunk is checked (dimension headers, NaN/Inf) as it is read, with the same messages.
 */
/* The first NaN or infinite component of v[0..dim), or -1: a branch-free pass over the exponent
 * bits (vectorised by the compiler), then the search only when one is there. */
long vec_first_nonfinite_cli(const float *v, uint32_t dim)
{
    uint32_t bad = 0;
    for (uint32_t i = 0; i < dim; i++) {
        uint32_t u;
        memcpy(&u, v + i, 4);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    if (!bad) return -1;
    for (uint32_t i = 0; i < dim; i++)
        if (!isfinite(v[i])) return (long)i;
    return -1;
}

/* Mapped input. Reading the file through read(2) costs a copy into freshly allocated memory,
 * and first touches of fresh pages are what a large merge input costs most where page faults
 * are dear (a virtual machine with shadow page tables: about 3 us a page, against about 1 us for
 * a mapped page of the page cache). A mapped file is read where it lies. */
static char sigbus_msg[1200];
static size_t sigbus_len;

static void on_sigbus(int sig)
{
    (void)sig;
    ssize_t w = write(2, sigbus_msg, sigbus_len);
    (void)w;
    _exit(4); /* EXIT_IO: nothing written yet (the store is saved only after the whole input) */
}

static void map_input(vstream *s, size_t len)
{
    void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fileno(s->f), 0);
    if (p == MAP_FAILED) return; /* read in chunks instead */
    madvise(p, len, MADV_SEQUENTIAL);
    int n = snprintf(sigbus_msg, sizeof sigbus_msg,
                     "chrysalis: %s: the file became shorter while it was read (SIGBUS); nothing was written\n",
                     s->name);
    sigbus_len = n > 0 && (size_t)n < sizeof sigbus_msg ? (size_t)n : 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigbus;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
    s->map = p;
    s->map_len = len;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif

/* The mapped chunk [first, first + n) as out; the previous chunk is unmapped (its pages stay in
 * the page cache), so a long input never holds more than a chunk or two mapped. */
static void map_chunk(vstream *s, size_t first, size_t n, vecset *out)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t from = first * s->row / pg * pg, to = (first + n) * s->row;
    if (from > s->mapped_from) madvise((void *)(s->map + s->mapped_from), from - s->mapped_from, MADV_DONTNEED);
    s->mapped_from = from;
    /* fault the chunk in with one call (ignored where the kernel predates it) */
    madvise((void *)(s->map + from), to - from, MADV_POPULATE_READ);
    out->data = (float *)(void *)(s->map + first * s->row + (s->fvecs ? 4 : 0));
    out->stride = s->row / 4;
    out->borrowed = 1;
}

int vstream_open(const char *path, int fmt, uint32_t raw_dim, vstream *s)
{
    memset(s, 0, sizeof *s);
    s->check_finite = 1;
    if (!strcmp(path, "-")) return 1;
    FILE *f = fopen(path, "rb");
    if (!f) return 1; /* the whole-file reader reports it */
    struct stat st;
    unsigned char head[64];
    size_t got = fread(head, 1, sizeof head, f);
    if (fmt == FMT_AUTO) fmt = guess_format(path, head, got); /* as the whole-file reader decides */
    if ((fmt != FMT_FVECS && fmt != FMT_RAW) || fstat(fileno(f), &st) || !S_ISREG(st.st_mode) || st.st_size == 0) {
        fclose(f);
        return 1;
    }
    size_t len = (size_t)st.st_size;
    uint32_t d = raw_dim;
    if (fmt == FMT_FVECS) {
        int32_t hd = 0;
        if (got >= 4) memcpy(&hd, head, 4);
        if (hd < 1 || hd > CHRYS_MAX_DIM) {
            fclose(f);
            return 1;
        }
        d = (uint32_t)hd;
    } else if (d < 1 || d > CHRYS_MAX_DIM) {
        fclose(f);
        return 1;
    }
    size_t row = (fmt == FMT_FVECS ? 4 : 0) + (size_t)d * 4;
    if (len % row) { /* the whole-file reader names the truncated record */
        fclose(f);
        return 1;
    }
    snprintf(s->name, sizeof s->name, "%s", path);
    s->f = f;
    s->fvecs = fmt == FMT_FVECS;
    s->dim = d;
    s->row = row;
    s->n = len / row;
    map_input(s, len);
    return CHRYS_OK;
}

/* The first of n fvecs records (row bytes apart) whose header is not dim, or n. A mapped chunk's
 * pages are first touched here, and a first touch is dear where page tables are shadowed (a
 * virtual machine: about 1.5 us a page, 15 ms for 10,000 records of 1024-d); the pages' costs
 * overlap on several cores (measured 18 -> 7 ms at 2), so large chunks are split between
 * threads. */
typedef struct hdr_job {
    const unsigned char *buf;
    size_t row, begin, end, bad;
    uint32_t dim;
} hdr_job;

static void *hdr_scan(void *arg)
{
    hdr_job *j = arg;
    j->bad = j->end;
    for (size_t r = j->begin; r < j->end; r++) {
        int32_t dr;
        memcpy(&dr, j->buf + r * j->row, 4);
        if (dr != (int32_t)j->dim) {
            j->bad = r;
            break;
        }
    }
    return NULL;
}

static size_t first_bad_header(const unsigned char *buf, size_t row, size_t n, uint32_t dim)
{
    enum { MAXT = 8 };
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nt = n * row >= ((size_t)4 << 20) && cpus > 1 ? (size_t)(cpus < MAXT ? cpus : MAXT) : 1;
    hdr_job jobs[MAXT];
    pthread_t tid[MAXT];
    int started[MAXT] = {0};
    for (size_t t = 0; t < nt; t++) {
        jobs[t] = (hdr_job){buf, row, n * t / nt, n * (t + 1) / nt, 0, dim};
        if (t > 0) started[t] = pthread_create(&tid[t], NULL, hdr_scan, &jobs[t]) == 0;
    }
    hdr_scan(&jobs[0]);
    size_t bad = n;
    for (size_t t = 0; t < nt; t++) {
        if (t > 0 && started[t]) pthread_join(tid[t], NULL);
        else if (t > 0) hdr_scan(&jobs[t]);
        if (jobs[t].bad < jobs[t].end && jobs[t].bad < bad) bad = jobs[t].bad;
    }
    return bad;
}

int vstream_next(vstream *s, size_t max_rows, vecset *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    size_t n = s->n - s->next < max_rows ? s->n - s->next : max_rows;
    if (n == 0) return CHRYS_OK;
    const unsigned char *buf; /* the chunk's bytes, as in the file */
    unsigned char *own = NULL;
    if (s->map) {
        buf = s->map + s->next * s->row;
        map_chunk(s, s->next, n, out);
    } else {
        own = malloc(n * s->row);
        if (!own) {
            snprintf(err, errlen, "%s: out of memory reading %zu records", s->name, n);
            return CHRYS_NOMEM;
        }
        if (fseeko(s->f, (off_t)(s->next * s->row), SEEK_SET) || fread(own, s->row, n, s->f) != n) {
            snprintf(err, errlen, "%s: read error at record %zu", s->name, s->next);
            free(own);
            return CHRYS_IO;
        }
        buf = own;
    }
    size_t bad = s->fvecs ? first_bad_header(buf, s->row, n, s->dim) : n;
    if (bad < n) {
        int32_t dr;
        memcpy(&dr, buf + bad * s->row, 4);
        snprintf(err, errlen, "%s: record %zu (byte offset %zu): dimension %d differs from %u", s->name, s->next + bad,
                 (s->next + bad) * s->row, dr, s->dim);
        free(own);
        return CHRYS_DIM;
    }
    for (size_t r = 0; own && s->fvecs && r < n; r++) /* read, not mapped: rows packed without their headers */
        memmove(own + r * (size_t)s->dim * 4, own + r * s->row + 4, (size_t)s->dim * 4);
    const float *x = own ? (const float *)(void *)own : out->data;
    size_t stride = own ? s->dim : out->stride;
    for (size_t r = 0; s->check_finite && r < n; r++) {
        long j = vec_first_nonfinite_cli(x + r * stride, s->dim);
        if (j >= 0) {
            const float *row = x + r * stride;
            snprintf(err, errlen, "%s: record %zu (byte offset %zu): component %ld is %s", s->name, s->next + r,
                     (s->next + r) * s->row + (s->fvecs ? 4 : 0) + (size_t)j * 4, j,
                     isnan(row[j]) ? "NaN" : "infinite");
            free(own);
            return CHRYS_INVALID;
        }
    }
    if (own) out->data = (float *)(void *)own;
    out->file_off = s->next * s->row + (s->fvecs ? 4 : 0);
    out->row_bytes = s->row;
    out->n = n;
    out->dim = s->dim;
    s->next += n;
    return CHRYS_OK;
}

void vstream_close(vstream *s)
{
    if (s->map) {
        munmap((void *)s->map, s->map_len);
        signal(SIGBUS, SIG_DFL);
        s->map = NULL;
    }
    if (s->f) fclose(s->f);
    s->f = NULL;
}

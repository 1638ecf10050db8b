/*
 * util.c: CLI helpers: exit codes, error printing, whole-file reads, the progress bar.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "dynlib.h" /* chrys_blas_set_threads */

int cli_exit_for(int rc)
{
    switch (rc & 0xff) {
    case CHRYS_OK: return EXIT_OK;
    case CHRYS_INVALID:
    case CHRYS_DIM:
    case CHRYS_EXISTS:
    case CHRYS_NOTFOUND: return EXIT_DATA;
    case CHRYS_CORRUPT:
    case CHRYS_FORMAT: return EXIT_STORE;
    case CHRYS_LOCKED: return EXIT_LOCKED;
    default: return EXIT_FAIL;
    }
}

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("chrysalis: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int read_all(const char *path, unsigned char **buf, size_t *len, char *err, size_t errlen)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    *buf = NULL;
    *len = 0;
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return CHRYS_IO;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *b = malloc(cap);
    int rc = CHRYS_OK;
    if (!b) {
        rc = CHRYS_NOMEM;
        snprintf(err, errlen, "%s: out of memory", path);
        goto done;
    }
    for (;;) {
        if (n == cap) {
            unsigned char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(b, cap * 2);
            if (!nb) {
                rc = CHRYS_NOMEM;
                snprintf(err, errlen, "%s: out of memory reading input", path);
                goto done;
            }
            b = nb;
            cap *= 2;
        }
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                rc = CHRYS_IO;
                snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
            }
            break;
        }
    }
done:
    if (f != stdin) fclose(f);
    if (rc) {
        free(b);
        return rc;
    }
    *buf = b;
    *len = n;
    return CHRYS_OK;
}

double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void progress_start(progress *p, const char *label, size_t total)
{
    p->enabled = isatty(2) && total > 0 && !getenv("CHRYS_NO_PROGRESS");
    p->label = label;
    p->total = total;
    p->last_shown = (size_t)-1;
    p->t0 = now_seconds();
}

void progress_update(progress *p, size_t done)
{
    if (!p->enabled) return;
    size_t pct = p->total ? done * 100 / p->total : 100;
    if (pct == p->last_shown) return;
    p->last_shown = pct;
    int width = 30, fill = (int)(pct * width / 100);
    fprintf(stderr, "\r%-10s [", p->label);
    for (int i = 0; i < width; i++) fputc(i < fill ? '#' : '.', stderr);
    fprintf(stderr, "] %3zu%%  %zu/%zu  %.1fs", pct, done, p->total, now_seconds() - p->t0);
    fflush(stderr);
}

void progress_end(progress *p)
{
    if (!p->enabled) return;
    progress_update(p, p->total);
    fputc('\n', stderr);
}

void cli_set_threads(long n)
{
    /* The CLI owns its process: --threads bounds BLAS's threads too, so "1 thread" means one core
     * (applied when the library first loads OpenBLAS, which a command that never calls sgemm
     * does not: OpenBLAS's worker threads, which spin on sched_yield for about 2^28 cycles
     * after each call, then never start either). */
    if (n > 0 && n <= INT32_MAX) chrys_blas_set_threads((int)n);
}

static void on_lock_wait(void *user, const char *path, int64_t holder_pid)
{
    (void)user;
    if (holder_pid) fprintf(stderr, "chrysalis: waiting for %s: locked by pid %lld\n", path, (long long)holder_pid);
    else fprintf(stderr, "chrysalis: waiting for %s: locked by another process\n", path);
    fflush(stderr);
}

int cli_lock_store(const char *path, int no_wait, chrys_lock **lk)
{
    char *msg = NULL;
    int rc = chrys_store_lock_ex(path, no_wait ? CHRYS_LOCK_NOWAIT : 0, -1, on_lock_wait, NULL, lk, &msg);
    if (rc) {
        if ((rc & 0xff) == CHRYS_LOCKED) cli_error("%s (--no-wait)", msg ? msg : chrys_errstr(rc));
        else cli_error("%s", msg ? msg : chrys_errstr(rc));
    }
    chrys_free(msg);
    return rc ? cli_exit_for(rc) : EXIT_OK;
}

int cli_open_store(const char *store, chrys_store_meta *sm, chrys_merger **m, chrys_index **ix)
{
    char *msg = NULL;
    *m = NULL;
    *ix = NULL;
    int rc = chrys_store_peek(store, sm, &msg);
    if (!rc) rc = sm->has_merger ? chrys_merger_open(store, m, &msg) : chrys_index_load(store, ix, &msg);
    if (rc) cli_error("%s", msg ? msg : chrys_errstr(rc));
    chrys_free(msg);
    return rc ? cli_exit_for(rc) : EXIT_OK;
}

/*
 * error.c: result-code text and message formatting.
 *
 * The library never prints. A failure is a code (chrysalis.h) plus, where a handle or an errmsg
 * out-parameter exists, an owned English message that names the argument, record, file or offset.
 */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

const char *chrys_errstr(int rc)
{
    switch (rc) {
    case CHRYS_IO_SHORT_READ: return "short read (file truncated?)";
    case CHRYS_IO_WRITE: return "write failed";
    case CHRYS_CORRUPT_CHECKSUM: return "checksum mismatch";
    case CHRYS_CORRUPT_TRUNCATED: return "file truncated";
    case CHRYS_LIMIT_CAPACITY: return "output array too small (the count needed is in *n_out)";
    default: break;
    }
    switch (rc & 0xff) {
    case CHRYS_OK: return "ok";
    case CHRYS_ERROR: return "internal error";
    case CHRYS_NOMEM: return "out of memory";
    case CHRYS_INVALID: return "invalid argument";
    case CHRYS_DIM: return "wrong dimension";
    case CHRYS_NOTFOUND: return "not found";
    case CHRYS_EXISTS: return "already exists";
    case CHRYS_IO: return "I/O error";
    case CHRYS_CORRUPT: return "corrupt file";
    case CHRYS_FORMAT: return "unsupported file format";
    case CHRYS_LIMIT: return "limit exceeded";
    case CHRYS_MPI: return "MPI error";
    case CHRYS_LOCKED: return "store locked by another writer";
    default: return "unknown error";
    }
}

const char *chrys_version(void) { return CHRYS_VERSION_STRING; }

char *chrys_vmprintf(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) return NULL;
    char *s = chrys_malloc((size_t)n + 1);
    if (s) vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

char *chrys_mprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = chrys_vmprintf(fmt, ap);
    va_end(ap);
    return s;
}

int chrys_set_errmsg(char **errmsg, int rc, const char *fmt, ...)
{
    if (errmsg) {
        va_list ap;
        va_start(ap, fmt);
        chrys_free(*errmsg);
        *errmsg = chrys_vmprintf(fmt, ap);
        va_end(ap);
    }
    return rc;
}

/*
 * error.c: result-code text and message formatting.
 *
 * The library never prints. A failure is a code (chrysalis.h) plus, where a handle or an errmsg
 * out-parameter exists, an owned English message that names the argument, record, file or offset.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int chrys_fail_v(char **msg, chrys_errpos *pos, int rc, int64_t record, const char *prefix, const char *fmt,
                 va_list ap)
{
    char *reason = chrys_vmprintf(fmt, ap);
    size_t plen = prefix ? strlen(prefix) : 0, rlen = reason ? strlen(reason) : 0;
    char *m = reason && plen ? chrys_malloc(plen + rlen + 1) : reason;
    if (m && m != reason) {
        memcpy(m, prefix, plen);
        memcpy(m + plen, reason, rlen + 1);
        chrys_free(reason);
    } else if (!m) {
        chrys_free(reason);
    }
    chrys_free(*msg);
    *msg = m;
    pos->code = rc;
    pos->record = record;
    pos->byte_offset = -1;
    pos->reason_at = m ? plen : 0;
    return rc;
}

void chrys_errpos_reset(chrys_errpos *pos)
{
    pos->code = CHRYS_OK;
    pos->record = -1;
    pos->byte_offset = -1;
    pos->reason_at = 0;
}

int chrys_error_info_fill(const char *msg, const chrys_errpos *pos, chrys_error_info *info)
{
    if (!info || info->struct_size < offsetof(chrys_error_info, code) + sizeof info->code) return CHRYS_INVALID;
    const char *m = msg ? msg : "";
    int failed = pos->code != CHRYS_OK;
    chrys_error_info full = {
        .struct_size = info->struct_size < sizeof full ? info->struct_size : sizeof full,
        .code = pos->code,
        .record = failed ? pos->record : -1,
        .byte_offset = failed ? pos->byte_offset : -1,
        .message = m,
        .reason = pos->reason_at <= strlen(m) ? m + pos->reason_at : m,
    };
    memcpy(info, &full, full.struct_size); /* field by field: only what the caller's struct holds */
    return CHRYS_OK;
}

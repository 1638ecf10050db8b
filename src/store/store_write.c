/*
 * store_write.c: atomic writer of the single-file store (docs/FORMAT.md).
 *
 * Layout: 64-byte header, the section table (32 bytes per entry), then each section at the next
 * 64-byte boundary, zero padding between. CRCs are computed first, so the file is written in
 * one forward pass. The bytes go to "<path>.tmp-XXXXXX" in the target directory; only after
 * every byte is written and fsynced is it renamed over <path>, and the directory is fsynced so
 * the rename itself is durable. Any failure unlinks the temporary file: the old file, if any,
 * is untouched.
 *
 * The whole write runs under <path>'s writer lock (store_lock.c): the caller's, when its process
 * holds one from chrys_store_lock, else one taken here for the duration of the write.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kernels/dist.h"
#include "codec.h"
#include "store.h"

static uint64_t align_up(uint64_t x) { return (x + STORE_ALIGN - 1) & ~(uint64_t)(STORE_ALIGN - 1); }

/* Written in 4 MiB pieces, each handed to writeback as soon as it is in the page cache
 * (sync_file_range, asynchronous): the disk works while the next pieces are copied, and the
 * fsync before the rename waits for what is left (20 MiB store: write 17 ms + fsync 20 ms one
 * after the other before). */
static int write_all(int fd, const void *data, uint64_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        if (chrys__write_should_fail()) {
            errno = ENOSPC;
            return -1;
        }
        size_t chunk = len > (4u << 20) ? (4u << 20) : (size_t)len;
        ssize_t w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
#ifdef SYNC_FILE_RANGE_WRITE
        if (w >= (1 << 20)) { /* advice only: the fsync below is what makes it durable */
            off_t end = lseek(fd, 0, SEEK_CUR);
            if (end > 0) sync_file_range(fd, end - w, w, SYNC_FILE_RANGE_WRITE);
        }
#endif
        p += w;
        len -= (uint64_t)w;
    }
    return 0;
}

static int write_zeros(int fd, uint64_t len)
{
    static const unsigned char zeros[STORE_ALIGN];
    return len ? write_all(fd, zeros, len) : 0;
}

const char *store_tag_name(uint32_t tag, char out[5])
{
    for (int i = 0; i < 4; i++) {
        unsigned char c = (unsigned char)(tag >> (8 * i));
        out[i] = (c >= 32 && c < 127) ? (char)c : '?';
    }
    out[4] = 0;
    return out;
}

/* Fill the header and the section table for these sections (CRCs computed here).
 * out: hdr[STORE_HEADER_SIZE], table[n * STORE_ENTRY_SIZE] (zeroed by the caller), *file_len. */
static void build_header(const store_section *secs, uint32_t n, unsigned char *hdr, unsigned char *table,
                         uint64_t *file_len_out)
{
    uint64_t off = align_up(STORE_HEADER_SIZE + (uint64_t)n * STORE_ENTRY_SIZE);
    for (uint32_t i = 0; i < n; i++) {
        unsigned char *e = table + i * STORE_ENTRY_SIZE;
        put_u32le(e, secs[i].tag);
        put_u32le(e + 4, secs[i].flags);
        put_u64le(e + 8, off);
        put_u64le(e + 16, secs[i].len);
        put_u32le(e + 24, chrys_crc32c(0, secs[i].data, secs[i].len));
        off = align_up(off + secs[i].len);
    }
    uint64_t file_len = off;
    memcpy(hdr + HDR_MAGIC, STORE_MAGIC, STORE_MAGIC_LEN);
    put_u16le(hdr + HDR_MAJOR, STORE_FORMAT_MAJOR);
    /* the lowest minor version that has every section written: a file without 1.1 features
     * stays a 1.0 file, byte for byte (tests/golden/store_v1_0.chrys) */
    int minor = 0;
    uint64_t ids_len = 0, vf32_len = 0;
    const unsigned char *meta = NULL, *plan = NULL;
    for (uint32_t i = 0; i < n; i++) {
        if (secs[i].tag == TAG_HNSW) minor = 1;
        if (secs[i].tag == TAG_IDS) ids_len = secs[i].len;
        if (secs[i].tag == TAG_VF32) vf32_len = secs[i].len;
        if (secs[i].tag == TAG_META && secs[i].len == META_SIZE) meta = secs[i].data;
        if (secs[i].tag == TAG_PLAN && secs[i].len == PLAN_SIZE) plan = secs[i].data;
    }
    if (ids_len && !vf32_len) minor = 1; /* codes only (1.1) */
    /* IVF with SQ8 (1.2): codes only unless PLAN bit 2 (",RFlat"); a reader takes an older IVF SQ8
     * file, whose rows were always kept, as ",RFlat" */
    if (meta && plan && get_u32le(meta + META_KIND) == CHRYS_INDEX_IVF && (get_u32le(plan + PLAN_FLAGS) & 2)) minor = 2;
    put_u16le(hdr + HDR_MINOR, (uint16_t)(minor < STORE_FORMAT_MINOR ? minor : STORE_FORMAT_MINOR));
    put_u32le(hdr + HDR_N_SECTIONS, n);
    put_u32le(hdr + HDR_TABLE_CRC, chrys_crc32c(0, table, (size_t)n * STORE_ENTRY_SIZE));
    put_u64le(hdr + HDR_TABLE_OFFSET, STORE_HEADER_SIZE);
    put_u64le(hdr + HDR_FILE_LENGTH, file_len);
    put_u32le(hdr + HDR_WRITER_VERSION, (CHRYS_VERSION_MAJOR << 16) | (CHRYS_VERSION_MINOR << 8) |
                                            CHRYS_VERSION_PATCH);
    put_u32le(hdr + HDR_CRC, chrys_crc32c(0, hdr, HDR_CRC));
    *file_len_out = file_len;
}

int store_write(const char *path, const store_section *secs, uint32_t n, char **errmsg)
{
    if (n > STORE_MAX_SECTIONS)
        return chrys_set_errmsg(errmsg, CHRYS_LIMIT, "%s: too many sections (%u)", path, n);
    unsigned char hdr[STORE_HEADER_SIZE] = {0};
    unsigned char table[STORE_MAX_SECTIONS * STORE_ENTRY_SIZE] = {0};
    uint64_t file_len;
    build_header(secs, n, hdr, table, &file_len);
    (void)file_len;
    int rc = CHRYS_OK, fd = -1, dfd = -1;
    chrys_lock *lock = NULL;
    char *tmp = NULL;
    char *dir_copy = chrys_strdup(path);
    /* one writer at a time: from before the temporary file exists until after the rename */
    if (dir_copy && (rc = store_lock_for_write(path, &lock, errmsg))) goto done;
    tmp = chrys_mprintf("%s.tmp-XXXXXX", path);
    if (!tmp || !dir_copy) {
        rc = chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", path);
        goto done;
    }
    fd = mkstemp(tmp);
    if (fd < 0) {
        rc = chrys_set_errmsg(errmsg, CHRYS_IO, "%s: cannot create temporary file: %s", path,
                              strerror(errno));
        chrys_free(tmp);
        tmp = NULL;
        goto done;
    }
    uint64_t pos = STORE_HEADER_SIZE + (uint64_t)n * STORE_ENTRY_SIZE;
    if (write_all(fd, hdr, sizeof hdr) || write_all(fd, table, (uint64_t)n * STORE_ENTRY_SIZE))
        goto io_fail;
    for (uint32_t i = 0; i < n; i++) {
        if (write_zeros(fd, align_up(pos) - pos)) goto io_fail;
        pos = align_up(pos);
        if (write_all(fd, secs[i].data, secs[i].len)) goto io_fail;
        pos += secs[i].len;
    }
    if (write_zeros(fd, align_up(pos) - pos)) goto io_fail;
    if (fchmod(fd, 0644) != 0 || fsync(fd) != 0) goto io_fail;
    if (close(fd) != 0) {
        fd = -1;
        goto io_fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) goto io_fail;
    chrys_free(tmp);
    tmp = NULL;
    dfd = open(dirname(dir_copy), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd); /* best effort: some file systems refuse fsync on a directory */
        close(dfd);
    }
    goto done;
io_fail:
    rc = chrys_set_errmsg(errmsg, CHRYS_IO_WRITE, "%s: write failed: %s (the previous file, if any, is unchanged)",
                          path, strerror(errno));
done:
    if (fd >= 0) close(fd);
    if (tmp) {
        unlink(tmp);
        chrys_free(tmp);
    }
    chrys_free(dir_copy);
    chrys_store_unlock(lock);
    return rc;
}

int store_write_buffer(const store_section *secs, uint32_t n, void **out, size_t *size, char **errmsg)
{
    *out = NULL;
    *size = 0;
    if (n > STORE_MAX_SECTIONS)
        return chrys_set_errmsg(errmsg, CHRYS_LIMIT, "buffer: too many sections (%u)", n);
    unsigned char hdr[STORE_HEADER_SIZE] = {0};
    unsigned char table[STORE_MAX_SECTIONS * STORE_ENTRY_SIZE] = {0};
    uint64_t file_len;
    build_header(secs, n, hdr, table, &file_len);
    if (file_len > SIZE_MAX) return chrys_set_errmsg(errmsg, CHRYS_LIMIT, "buffer: store too large");
    unsigned char *buf = chrys_malloc((size_t)file_len);
    if (!buf) return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "buffer: out of memory (%llu bytes)",
                                      (unsigned long long)file_len);
    memset(buf, 0, (size_t)file_len); /* the padding between sections is zero */
    memcpy(buf, hdr, sizeof hdr);
    memcpy(buf + STORE_HEADER_SIZE, table, (size_t)n * STORE_ENTRY_SIZE);
    uint64_t pos = STORE_HEADER_SIZE + (uint64_t)n * STORE_ENTRY_SIZE;
    for (uint32_t i = 0; i < n; i++) {
        pos = align_up(pos);
        if (secs[i].len) memcpy(buf + pos, secs[i].data, (size_t)secs[i].len);
        pos += secs[i].len;
    }
    *out = buf;
    *size = (size_t)file_len;
    return CHRYS_OK;
}

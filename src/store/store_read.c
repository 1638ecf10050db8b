/*
 * store_read.c: the store reader, written for hostile input.
 *
 * Order of trust: the header is checked (magic, CRC, version, feature bits, reserved bytes, and
 * its file length against the real size) before the table is read; the table is checked (CRC,
 * every entry inside the file, 64-byte aligned, in increasing order without overlap, reserved
 * zero, no duplicate tag) before any section is; every byte outside header, table and sections
 * must be zero, so no bit of the file escapes a check. Only then may callers allocate from
 * section lengths, which are therefore bounded by the file size. Sections are read straight
 * into their destination and their CRC is verified there.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kernels/dist.h"
#include "codec.h"
#include "store.h"

static int read_at(store_reader *r, uint64_t off, void *dst, uint64_t len, char **errmsg)
{
    if (off > r->size || len > r->size - off)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT_TRUNCATED, "%s: read past end of file at offset %llu",
                                r->name, (unsigned long long)off);
    if (r->fd < 0) {
        memcpy(dst, r->buf + off, (size_t)len);
        return CHRYS_OK;
    }
    unsigned char *p = dst;
    while (len > 0) {
        size_t chunk = len > (1u << 30) ? (1u << 30) : (size_t)len;
        ssize_t got = pread(r->fd, p, chunk, (off_t)off);
        if (got < 0) {
            if (errno == EINTR) continue;
            return chrys_set_errmsg(errmsg, CHRYS_IO, "%s: read error at offset %llu: %s", r->name,
                                    (unsigned long long)off, strerror(errno));
        }
        if (got == 0)
            return chrys_set_errmsg(errmsg, CHRYS_IO_SHORT_READ, "%s: file shrank while reading (offset %llu)",
                                    r->name, (unsigned long long)off);
        p += got;
        off += (uint64_t)got;
        len -= (uint64_t)got;
    }
    return CHRYS_OK;
}

static int check_zero(store_reader *r, uint64_t off, uint64_t len, char **errmsg)
{
    unsigned char buf[256];
    while (len > 0) {
        uint64_t c = len > sizeof buf ? sizeof buf : len;
        int rc = read_at(r, off, buf, c, errmsg);
        if (rc) return rc;
        for (uint64_t i = 0; i < c; i++)
            if (buf[i])
                return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: non-zero padding byte at offset %llu",
                                        r->name, (unsigned long long)(off + i));
        off += c;
        len -= c;
    }
    return CHRYS_OK;
}

static int parse(store_reader *r, char **errmsg)
{
    unsigned char hdr[STORE_HEADER_SIZE];
    char t[5];
    if (r->size < STORE_HEADER_SIZE)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT_TRUNCATED,
                                "%s: %llu bytes is too short for a chrysalis store (header is 64 bytes)",
                                r->name, (unsigned long long)r->size);
    int rc = read_at(r, 0, hdr, sizeof hdr, errmsg);
    if (rc) return rc;
    if (memcmp(hdr, STORE_MAGIC, STORE_MAGIC_LEN) != 0)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: not a chrysalis store (bad magic bytes)", r->name);
    if (get_u32le(hdr + HDR_CRC) != chrys_crc32c(0, hdr, HDR_CRC))
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT_CHECKSUM, "%s: header checksum mismatch", r->name);
    r->major = get_u16le(hdr + HDR_MAJOR);
    r->minor = get_u16le(hdr + HDR_MINOR);
    r->compat = get_u32le(hdr + HDR_COMPAT);
    r->ro_compat = get_u32le(hdr + HDR_RO_COMPAT);
    r->incompat = get_u32le(hdr + HDR_INCOMPAT);
    r->writer_version = get_u32le(hdr + HDR_WRITER_VERSION);
    if (r->major != STORE_FORMAT_MAJOR)
        return chrys_set_errmsg(errmsg, CHRYS_FORMAT, "%s: format version %u.%u is not supported (this library reads %d.x)",
                                r->name, r->major, r->minor, STORE_FORMAT_MAJOR);
    if (r->incompat & ~STORE_INCOMPAT_KNOWN)
        return chrys_set_errmsg(errmsg, CHRYS_FORMAT, "%s: uses unknown incompatible features 0x%x",
                                r->name, r->incompat & ~STORE_INCOMPAT_KNOWN);
    for (int i = HDR_RESERVED; i < HDR_CRC; i++)
        if (hdr[i]) return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: reserved header byte %d is not zero", r->name, i);
    uint64_t flen = get_u64le(hdr + HDR_FILE_LENGTH);
    if (flen != r->size)
        return chrys_set_errmsg(errmsg, flen > r->size ? CHRYS_CORRUPT_TRUNCATED : CHRYS_CORRUPT,
                                "%s: header says %llu bytes but the file has %llu (%s)", r->name,
                                (unsigned long long)flen, (unsigned long long)r->size,
                                flen > r->size ? "truncated" : "trailing data");
    r->n_sections = get_u32le(hdr + HDR_N_SECTIONS);
    if (r->n_sections > STORE_MAX_SECTIONS)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: section count %u exceeds %d", r->name,
                                r->n_sections, STORE_MAX_SECTIONS);
    if (get_u64le(hdr + HDR_TABLE_OFFSET) != STORE_HEADER_SIZE)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: section table offset is not 64", r->name);
    uint64_t table_len = (uint64_t)r->n_sections * STORE_ENTRY_SIZE;
    if (table_len > r->size - STORE_HEADER_SIZE)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT_TRUNCATED, "%s: section table runs past end of file", r->name);
    unsigned char table[STORE_MAX_SECTIONS * STORE_ENTRY_SIZE];
    if ((rc = read_at(r, STORE_HEADER_SIZE, table, table_len, errmsg))) return rc;
    if (get_u32le(hdr + HDR_TABLE_CRC) != chrys_crc32c(0, table, (size_t)table_len))
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT_CHECKSUM, "%s: section table checksum mismatch", r->name);
    uint64_t prev_end = STORE_HEADER_SIZE + table_len;
    for (uint32_t i = 0; i < r->n_sections; i++) {
        const unsigned char *e = table + i * STORE_ENTRY_SIZE;
        store_entry *s = &r->sec[i];
        s->tag = get_u32le(e);
        s->flags = get_u32le(e + 4);
        s->off = get_u64le(e + 8);
        s->len = get_u64le(e + 16);
        s->crc = get_u32le(e + 24);
        store_tag_name(s->tag, t);
        if (get_u32le(e + 28) != 0 || (s->flags & ~SEC_FLAGS_KNOWN))
            return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: section %u (%s): reserved bits set", r->name, i, t);
        if (s->off % STORE_ALIGN || s->off < prev_end || s->off > r->size || s->len > r->size - s->off)
            return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: section %u (%s): offset %llu length %llu outside the file or misplaced",
                                    r->name, i, t, (unsigned long long)s->off, (unsigned long long)s->len);
        for (uint32_t j = 0; j < i; j++)
            if (r->sec[j].tag == s->tag)
                return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: section %s appears twice", r->name, t);
        if ((rc = check_zero(r, prev_end, s->off - prev_end, errmsg))) return rc;
        prev_end = s->off + s->len;
    }
    return check_zero(r, prev_end, r->size - prev_end, errmsg);
}

int store_reader_open_buffer(store_reader *r, const void *buf, size_t size, const char *name, char **errmsg)
{
    memset(r, 0, sizeof *r);
    r->fd = -1;
    r->buf = buf;
    r->size = size;
    r->name = name ? name : "(buffer)";
    return parse(r, errmsg);
}

int store_reader_open_file(store_reader *r, const char *path, char **errmsg)
{
    memset(r, 0, sizeof *r);
    r->name = path;
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) return chrys_set_errmsg(errmsg, CHRYS_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(r->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int rc = chrys_set_errmsg(errmsg, CHRYS_IO, "%s: not a regular file", path);
        store_reader_close(r);
        return rc;
    }
    r->size = (uint64_t)st.st_size;
    int rc = parse(r, errmsg);
    if (rc) store_reader_close(r);
    return rc;
}

void store_reader_close(store_reader *r)
{
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
}

int store_find(const store_reader *r, uint32_t tag)
{
    for (uint32_t i = 0; i < r->n_sections; i++)
        if (r->sec[i].tag == tag) return (int)i;
    return -1;
}

int store_check_crc(const store_reader *r, int i, uint32_t crc, char **errmsg)
{
    const store_entry *s = &r->sec[i];
    if (crc == s->crc) return CHRYS_OK;
    char t[5];
    return chrys_set_errmsg(errmsg, CHRYS_CORRUPT_CHECKSUM, "%s: section %s checksum mismatch", r->name,
                            store_tag_name(s->tag, t));
}

int store_read_section_unchecked(store_reader *r, int i, void *dst, char **errmsg)
{
    return read_at(r, r->sec[i].off, dst, r->sec[i].len, errmsg);
}

int store_read_section(store_reader *r, int i, void *dst, char **errmsg)
{
    int rc = store_read_section_unchecked(r, i, dst, errmsg);
    return rc ? rc : store_check_crc(r, i, chrys_crc32c(0, dst, (size_t)r->sec[i].len), errmsg);
}

int store_map_section_unchecked(store_reader *r, int i, const void **out, char **errmsg)
{
    *out = NULL;
    if (!r->buf) return chrys_set_errmsg(errmsg, CHRYS_ERROR, "%s: not a mapped store", r->name);
    *out = r->buf + r->sec[i].off; /* bounds checked when the table was read */
    return CHRYS_OK;
}

int store_map_section(store_reader *r, int i, const void **out, char **errmsg)
{
    int rc = store_map_section_unchecked(r, i, out, errmsg);
    if (!rc && (rc = store_check_crc(r, i, chrys_crc32c(0, *out, (size_t)r->sec[i].len), errmsg))) *out = NULL;
    return rc;
}

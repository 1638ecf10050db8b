/*
 * store.h: the single-file container (header, section table, checksummed sections).
 *
 * The writer takes a list of sections and produces a complete file atomically (temporary file,
 * fsync, rename, fsync of the directory). The reader validates the header and the table against
 * the real file size before anything else, then reads sections on demand straight into their final
 * buffers, verifying each CRC32C. Index and merger code build on these two calls.
 */
#ifndef CHRYS_STORE_H
#define CHRYS_STORE_H

#include "../internal.h"
#include "format.h"

typedef struct store_section {
    uint32_t tag, flags;
    const void *data;
    uint64_t len;
} store_section;

CHRYS_PRIVATE int store_write(const char *path, const store_section *secs, uint32_t n,
                              char **errmsg);
/* The same bytes as store_write would put in a file, into one buffer (owned: *out, free with
 * chrys_free; *size bytes). Returns CHRYS_OK, CHRYS_LIMIT, CHRYS_NOMEM. */
CHRYS_PRIVATE int store_write_buffer(const store_section *secs, uint32_t n, void **out, size_t *size,
                                     char **errmsg);

/* A save's own writer lock (store_lock.c): waits for path.lock; *out = NULL (nothing to release)
 * when this process holds it through chrys_store_lock. Release with chrys_store_unlock. */
CHRYS_PRIVATE int store_lock_for_write(const char *path, chrys_lock **out, char **errmsg);

typedef struct store_entry {
    uint32_t tag, flags, crc;
    uint64_t off, len;
} store_entry;

typedef struct store_reader {
    const char *name;          /* file name for messages */
    int fd;                    /* -1 for a buffer */
    const unsigned char *buf;  /* buffer source */
    uint64_t size;
    uint32_t major, minor, writer_version, compat, ro_compat, incompat;
    uint32_t n_sections;
    store_entry sec[STORE_MAX_SECTIONS];
} store_reader;

/* Open and validate header, table and padding. On failure the reader holds nothing. */
CHRYS_PRIVATE int store_reader_open_file(store_reader *r, const char *path, char **errmsg);
CHRYS_PRIVATE int store_reader_open_buffer(store_reader *r, const void *buf, size_t size,
                                           const char *name, char **errmsg);
CHRYS_PRIVATE void store_reader_close(store_reader *r);
/* Index of the section with this tag, or -1. */
CHRYS_PRIVATE int store_find(const store_reader *r, uint32_t tag);
/* Read section i (its whole length) into dst and verify its CRC. */
CHRYS_PRIVATE int store_read_section(store_reader *r, int i, void *dst, char **errmsg);
/* A buffer reader's section i in place (no copy), its CRC verified. */
CHRYS_PRIVATE int store_map_section(store_reader *r, int i, const void **out, char **errmsg);
/* The same two without the CRC, for a caller that checksums the bytes in its own pass over them
 * (the float32 rows: one pass for the checksum and the row checks) and then calls
 * store_check_crc with what it computed. */
CHRYS_PRIVATE int store_read_section_unchecked(store_reader *r, int i, void *dst, char **errmsg);
CHRYS_PRIVATE int store_map_section_unchecked(store_reader *r, int i, const void **out, char **errmsg);
/* CHRYS_OK when crc is section i's recorded CRC, else a checksum error naming the section. */
CHRYS_PRIVATE int store_check_crc(const store_reader *r, int i, uint32_t crc, char **errmsg);
/* Name of a tag as 4 printable characters (buffer of 5). */
CHRYS_PRIVATE const char *store_tag_name(uint32_t tag, char out[5]);

#endif

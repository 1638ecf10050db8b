/*
 * chrysalis.h: the public interface of libchrysalis.
 *
 * libchrysalis stores embedding vectors under 64-bit ids, searches them exactly (and, later,
 * approximately), and keeps everything in one checksummed little-endian file. This header is the
 * only one a user includes. It is C99 and exposes no internal struct: handles are opaque and
 * options structs begin with `struct_size` so fields can be added without breaking the ABI.
 *
 * Conventions (see docs/ARCHITECTURE.md):
 *  - Every fallible call returns an int: CHRYS_OK (0) or a code; `rc & 0xff` is the primary code.
 *  - Objects come back through `T **out`; `*out` is NULL on failure.
 *  - Output arrays are owned by the caller. Strings the library returns are either "owned" (free
 *    with chrys_free) or "borrowed" (valid until the next non-const call on the handle).
 *  - Threads: any number of threads may call functions taking `const chrys_index *` at once; a
 *    call taking a non-const handle needs exclusive access, which the caller provides.
 */
#ifndef CHRYSALIS_H
#define CHRYSALIS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define CHRYS_API __declspec(dllexport)
#else
#define CHRYS_API __attribute__((visibility("default")))
#endif

#define CHRYS_VERSION_MAJOR 0
#define CHRYS_VERSION_MINOR 1
#define CHRYS_VERSION_PATCH 0
#define CHRYS_VERSION_STRING "0.1.0"

/* ---- Result codes. Primary codes are in the low byte; never renumbered. ---- */
#define CHRYS_OK 0
#define CHRYS_ERROR 1    /* internal error */
#define CHRYS_NOMEM 2    /* allocation failed */
#define CHRYS_INVALID 3  /* bad argument or misuse (NaN/Inf, zero vector under cosine, k == 0) */
#define CHRYS_DIM 4      /* wrong dimension */
#define CHRYS_NOTFOUND 5 /* id not present */
#define CHRYS_EXISTS 6   /* id already present (duplicate id) */
#define CHRYS_IO 7       /* operating-system I/O error; the message carries strerror(errno) */
#define CHRYS_CORRUPT 8  /* the file is damaged: bad magic, checksum, size or structure */
#define CHRYS_FORMAT 9   /* a valid file this library cannot read (newer version, unknown feature) */
#define CHRYS_LIMIT 10   /* a size or count beyond a documented cap, or arithmetic overflow */
#define CHRYS_MPI 11     /* distributed layer error */
/* Extended codes: detail above the low byte. */
#define CHRYS_IO_SHORT_READ (CHRYS_IO | (1 << 8))
#define CHRYS_IO_WRITE (CHRYS_IO | (2 << 8))
#define CHRYS_CORRUPT_CHECKSUM (CHRYS_CORRUPT | (1 << 8))
#define CHRYS_CORRUPT_TRUNCATED (CHRYS_CORRUPT | (2 << 8))

/* Id value that pads unused result slots. */
#define CHRYS_NO_ID UINT64_MAX

/* Hard caps, shared by the API checks and the file loader. */
#define CHRYS_MAX_DIM 16384
#define CHRYS_MAX_K 100000
#define CHRYS_MAX_META_BYTES (16u << 20) /* per record */

/* ---- Basics ---- */

/* Library version string, e.g. "0.1.0". Static storage. Thread-safe. */
CHRYS_API const char *chrys_version(void);

/* Name of the SIMD level chosen for the distance kernels: "scalar", "avx2" or "avx512".
 * The level is chosen once, at first use, from CPUID/XGETBV; the environment variable
 * CHRYS_SIMD=scalar|avx2|avx512 forces a lower level (never a higher one). Thread-safe. */
CHRYS_API const char *chrys_simd_name(void);

/* Static English text for a result code (primary or extended). Never NULL. Thread-safe. */
CHRYS_API const char *chrys_errstr(int rc);

/* Free memory the library returned as "owned" (error messages, etc.). NULL-safe. */
CHRYS_API void chrys_free(void *p);

/* Redirect every allocation of the library. Call before any other chrys_ call; any argument
 * NULL restores the libc function. Returns CHRYS_OK, or CHRYS_INVALID once the library has
 * allocated anything. Not thread-safe. */
CHRYS_API int chrys_config_allocator(void *(*malloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                                     void (*free_fn)(void *));

/* ---- Index ---- */

typedef struct chrys_index chrys_index;

typedef enum chrys_metric {
    CHRYS_METRIC_COSINE = 0, /* score = cosine similarity in [-1, 1]; higher is better */
    CHRYS_METRIC_IP = 1,     /* score = inner product; higher is better */
    CHRYS_METRIC_L2 = 2      /* score = squared L2 distance; lower is better */
} chrys_metric;

typedef enum chrys_index_kind {
    CHRYS_INDEX_FLAT = 0 /* exact search over float32 vectors */
} chrys_index_kind;

typedef struct chrys_index_opts {
    uint32_t struct_size; /* sizeof(chrys_index_opts), set by chrys_index_opts_init */
    uint32_t dim;         /* vector dimension, 1..CHRYS_MAX_DIM (required) */
    chrys_metric metric;  /* default CHRYS_METRIC_COSINE */
    chrys_index_kind kind; /* default CHRYS_INDEX_FLAT */
    uint64_t seed;        /* seed for any randomness (default 42) */
} chrys_index_opts;

/* Fill *opts with the defaults (dim 0: the caller must set it). */
CHRYS_API void chrys_index_opts_init(chrys_index_opts *opts);

/* Create an empty index.
 * in: opts (copied). out: *out, the new handle (free with chrys_index_free), NULL on failure.
 * out: *errmsg (optional; owned, free with chrys_free) describes a failure.
 * Returns CHRYS_OK, CHRYS_INVALID (bad opts), CHRYS_NOMEM. */
CHRYS_API int chrys_index_new(const chrys_index_opts *opts, chrys_index **out, char **errmsg);

/* Free an index. NULL-safe. */
CHRYS_API void chrys_index_free(chrys_index *ix);

/* Last error message recorded on the handle by a non-const call (borrowed; "" if none). */
CHRYS_API const char *chrys_index_errmsg(const chrys_index *ix);

/* Add n vectors with external ids.
 * in: ids[n] (unique, not present yet, != CHRYS_NO_ID), vecs[n*dim] row-major float32,
 *     meta (optional, NULL or n pointers to NUL-terminated UTF-8 strings, NULL entries allowed;
 *     each copied, at most CHRYS_MAX_META_BYTES).
 * The batch is all-or-nothing: on any error nothing is added.
 * Under cosine, each vector is normalised once here (its norm is kept).
 * Returns CHRYS_OK, CHRYS_INVALID (NaN/Inf component, zero vector under cosine; the message
 * names the row), CHRYS_EXISTS (duplicate id, in the batch or the index), CHRYS_LIMIT, CHRYS_NOMEM. */
CHRYS_API int chrys_index_add(chrys_index *ix, size_t n, const uint64_t *ids, const float *vecs,
                              const char *const *meta);

/* Remove the vector with this id. Returns CHRYS_OK or CHRYS_NOTFOUND. */
CHRYS_API int chrys_index_remove(chrys_index *ix, uint64_t id);

/* Replace the vector stored under id (its metadata is kept).
 * Returns CHRYS_OK, CHRYS_NOTFOUND, CHRYS_INVALID (NaN/Inf, zero vector under cosine). */
CHRYS_API int chrys_index_update(chrys_index *ix, uint64_t id, const float *vec);

/* Copy the vector stored under id into out[dim]. Under cosine this is the normalised vector
 * times the norm kept at insert (equal to the input up to float rounding).
 * Returns CHRYS_OK or CHRYS_NOTFOUND. Thread-safe (const). */
CHRYS_API int chrys_index_get(const chrys_index *ix, uint64_t id, float *out);

/* Borrow the metadata string stored with id (NULL if none).
 * out: *meta (borrowed: valid until the next non-const call on ix). Returns CHRYS_OK or CHRYS_NOTFOUND. */
CHRYS_API int chrys_index_get_meta(const chrys_index *ix, uint64_t id, const char **meta);

/* Whether an id is present (1) or not (0). */
CHRYS_API int chrys_index_contains(const chrys_index *ix, uint64_t id);

/* Copy the ids in storage order into out[count] (count from chrys_index_info). */
CHRYS_API int chrys_index_ids(const chrys_index *ix, uint64_t *out);

typedef struct chrys_index_info {
    uint32_t struct_size;
    uint32_t dim;
    chrys_metric metric;
    chrys_index_kind kind;
    uint64_t count;        /* number of vectors */
    uint64_t memory_bytes; /* bytes held by the index */
    uint64_t seed;
} chrys_index_info;

/* Describe an index. in/out: info (set struct_size = sizeof before the call, or 0 for the full
 * struct). Returns CHRYS_OK. */
CHRYS_API int chrys_index_get_info(const chrys_index *ix, chrys_index_info *info);

/* ---- Search ---- */

typedef struct chrys_hit {
    uint64_t id; /* CHRYS_NO_ID in unused slots */
    float score; /* cosine similarity, inner product or squared L2 distance (see chrys_metric);
                    -inf (cosine, IP) or +inf (L2) in unused slots */
    uint32_t _pad;
} chrys_hit;

typedef struct chrys_search_opts {
    uint32_t struct_size;
    uint32_t k;           /* results per query, 1..CHRYS_MAX_K (default 10) */
    int use_threshold;    /* if non-zero, keep only hits with score >= threshold (cosine, IP) or
                             score <= threshold (L2) */
    float threshold;
    uint32_t n_threads;   /* worker threads; 0 = one per online core (default 0) */
} chrys_search_opts;

CHRYS_API void chrys_search_opts_init(chrys_search_opts *opts);

/* Search nq queries (row-major float32, nq*dim) for their k best vectors.
 * out: hits[nq*k], caller-owned; each query's hits sorted best first, ties broken by smaller id,
 *      unused slots padded (id CHRYS_NO_ID). Scores are the true quantity, computed in double
 *      precision for the returned hits.
 * in: opts (NULL for defaults).
 * Large batches use BLAS sgemm, small ones the SIMD kernels; both split the work over n_threads.
 * Returns CHRYS_OK, CHRYS_INVALID (k out of range, NaN/Inf query, zero query under cosine), CHRYS_NOMEM.
 * Thread-safe (const): several threads may search one index at once. Sets no message. */
CHRYS_API int chrys_index_search(const chrys_index *ix, size_t nq, const float *queries,
                                 const chrys_search_opts *opts, chrys_hit *hits);

/* ---- Store (single file) ---- */

/* Save the index to one file (docs/FORMAT.md). The file is written to a temporary file in the
 * same directory, fsynced and renamed over path, so a failure leaves any old file intact.
 * out: *errmsg (optional; owned). Returns CHRYS_OK, CHRYS_IO, CHRYS_NOMEM. Thread-safe (const). */
CHRYS_API int chrys_index_save(const chrys_index *ix, const char *path, char **errmsg);

/* Load an index saved by chrys_index_save. Every size is checked against the file size before any
 * allocation and every checksum is verified.
 * out: *out (free with chrys_index_free), *errmsg (optional; owned; names the file and the part at fault).
 * Returns CHRYS_OK, CHRYS_IO, CHRYS_CORRUPT, CHRYS_FORMAT, CHRYS_LIMIT, CHRYS_NOMEM. */
CHRYS_API int chrys_index_load(const char *path, chrys_index **out, char **errmsg);

/* Load from a memory buffer (same checks as chrys_index_load; 'name' labels messages). */
CHRYS_API int chrys_index_load_buffer(const void *buf, size_t size, const char *name,
                                      chrys_index **out, char **errmsg);

typedef struct chrys_store_meta {
    uint32_t struct_size;
    uint32_t format_major;
    uint32_t format_minor;
    uint32_t writer_version; /* (major << 16) | (minor << 8) | patch of the writing library */
    uint32_t n_sections;
    uint32_t dim;
    chrys_metric metric;
    chrys_index_kind kind;
    uint64_t count;
    uint64_t file_bytes;
} chrys_store_meta;

/* Read a store file's header and META section without loading vectors (checksums of those two
 * are verified). Returns CHRYS_OK, CHRYS_IO, CHRYS_CORRUPT, CHRYS_FORMAT. */
CHRYS_API int chrys_store_peek(const char *path, chrys_store_meta *meta, char **errmsg);

#ifdef __cplusplus
}
#endif
#endif /* CHRYSALIS_H */

/*
 * chrysalis.h: the public interface of libchrysalis.
 *
 * libchrysalis stores embedding vectors under 64-bit ids, searches them exactly (Flat) or
 * approximately (IVF lists, HNSW graphs, optionally over int8 SQ8 codes with exact re-ranking),
 * folds near-duplicate records into entries (the semantic merger), turns text into vectors
 * through embedding providers with a cache, and keeps an index or a merger in one checksummed
 * little-endian file. This header is the only one a user includes. It is C99 and exposes no
 * internal struct: handles are opaque and options, info and stats structs begin with
 * `struct_size` so fields can be added without breaking the ABI.
 *
 * Version 0.2 made the API consistent (0.x: the API may still change between minor versions):
 * one name for every getter, a capacity on every output array whose length the library decides,
 * a struct per merge run, an optional message from search, and struct_size honoured everywhere.
 *
 * Conventions (see docs/ARCHITECTURE.md):
 *  - Every fallible call returns an int: CHRYS_OK (0) or a code; `rc & 0xff` is the primary code.
 *  - Objects come back through `T **out`; `*out` is NULL on failure.
 *  - Output arrays are owned by the caller. An array whose length the arguments fix (hits[nq*k],
 *    out[dim], results[n]) is documented with that length. An array whose length the library
 *    decides (ids, run history) comes with a capacity `cap` and a count `*n_out`: *n_out is always
 *    set to the number of elements there are; out NULL (with cap 0) asks for the count alone
 *    (CHRYS_OK); when cap < *n_out the call writes nothing and returns CHRYS_LIMIT_CAPACITY.
 *  - Getters are named chrys_<handle>_get_<what> and fill a caller's struct (chrys_index_get_info,
 *    chrys_merger_get_stats, chrys_merger_get_opts, chrys_merger_get_entry,
 *    chrys_embedder_get_stats, chrys_cache_get_info), or a caller's array with a capacity
 *    (chrys_index_get_ids, chrys_merger_get_history).
 *  - struct_size: set it to sizeof the struct you compiled against (the chrys_*_opts_init
 *    functions do; for info and stats structs, 0 also means "all of it"). The library reads and
 *    writes only the fields that struct_size covers. Options: fields beyond a smaller (older)
 *    struct take their defaults; a struct_size below the first version's fields is CHRYS_INVALID.
 *    Info and stats: fields beyond a smaller struct are left untouched; a larger (newer) struct
 *    gets zeros past the fields this library knows; struct_size comes back as the bytes the
 *    library filled. A struct_size above 65536 is CHRYS_INVALID. Start a struct with its opts_init
 *    (or zero it) so that padding holds no garbage.
 *  - Strings the library returns are either "owned" (free with chrys_free) or "borrowed" (valid
 *    until the next non-const call on the handle).
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
#define CHRYS_VERSION_MINOR 2 /* 0.2: the consistent API (getters, capacities, chrys_merge_run) */
#define CHRYS_VERSION_PATCH 0
#define CHRYS_VERSION_STRING "0.2.0"

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
#define CHRYS_LOCKED 12  /* another writer holds the store's lock (CHRYS_LOCK_NOWAIT, or the wait timed out) */
/* Extended codes: detail above the low byte. */
#define CHRYS_IO_SHORT_READ (CHRYS_IO | (1 << 8))
#define CHRYS_IO_WRITE (CHRYS_IO | (2 << 8))
#define CHRYS_CORRUPT_CHECKSUM (CHRYS_CORRUPT | (1 << 8))
#define CHRYS_CORRUPT_TRUNCATED (CHRYS_CORRUPT | (2 << 8))
/* An output array's capacity is below the count the call reports in *n_out (nothing written). */
#define CHRYS_LIMIT_CAPACITY (CHRYS_LIMIT | (1 << 8))

/* Id value that pads unused result slots. */
#define CHRYS_NO_ID UINT64_MAX

/* Hard caps, shared by the API checks and the file loader. */
#define CHRYS_MAX_DIM 16384
#define CHRYS_MAX_K 100000
#define CHRYS_MAX_META_BYTES (16u << 20) /* per record */

/* ---- Basics ---- */

/* Library version string, e.g. "0.2.0" (CHRYS_VERSION_STRING of the library actually linked).
 * Static storage. Thread-safe. */
CHRYS_API const char *chrys_version(void);

/* Name of the SIMD level chosen for the distance kernels: "scalar", "avx2", "avx512" or
 * "avx512+vnni" (AVX-512 with the VNNI int8 dot product, used by the SQ8 kernels).
 * The level is chosen once, at first use, from CPUID/XGETBV; the environment variable
 * CHRYS_SIMD=scalar|avx2|avx512 forces a lower level (never a higher one). Thread-safe. */
CHRYS_API const char *chrys_simd_name(void);

/* Static English text for a result code (primary or extended). Never NULL. Thread-safe. */
CHRYS_API const char *chrys_errstr(int rc);

/* Free memory the library returned as "owned" (error messages, etc.). NULL-safe. */
CHRYS_API void chrys_free(void *p);

/* What the last failure recorded on a handle was about, structurally (chrys_index_get_error_info,
 * chrys_merger_get_error_info, chrys_embedder_get_error_info fill it): a caller can name the record in
 * its own terms (a file's line, a record number across chunks) without parsing the message.
 * Set struct_size to sizeof before the call; fields past it are left untouched. */
typedef struct chrys_error_info {
    size_t struct_size;
    int code;            /* result code of the last failure on the handle; CHRYS_OK if none */
    int64_t record;      /* 0-based position, in the failing call's batch, of the row (add), record
                          * (merge), text (embed) or query (search) at fault; -1 when no single
                          * one is */
    int64_t byte_offset; /* byte offset in an input buffer at fault; -1 when none (the handle
                          * operations take arrays, not buffers: they report -1 today) */
    const char *message; /* the whole message ("" if none), as the *_errmsg getter returns it */
    const char *reason;  /* the message without its record prefix ("row 3: ", "record 3 (id 7): ",
                          * "text 3 "): what is wrong with that record */
} chrys_error_info;

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
    CHRYS_INDEX_FLAT = 0, /* exact search over all vectors */
    CHRYS_INDEX_IVF = 1,  /* inverted file: k-means lists, nprobe of them searched */
    CHRYS_INDEX_HNSW = 2  /* hierarchical navigable small-world graph, ef_search candidates */
} chrys_index_kind;

typedef struct chrys_index_opts {
    uint32_t struct_size; /* sizeof(chrys_index_opts), set by chrys_index_opts_init */
    uint32_t dim;         /* vector dimension, 1..CHRYS_MAX_DIM (required) */
    chrys_metric metric;  /* default CHRYS_METRIC_COSINE */
    chrys_index_kind kind; /* default CHRYS_INDEX_FLAT */
    uint64_t seed;        /* seed for any randomness (default 42) */
    /* Index specification, as FAISS's index_factory spells them: "Flat", "SQ8", "SQ8,RFlat",
     * "IVF<nlist>,Flat", "IVF<nlist>,SQ8", "IVF<nlist>,SQ8,RFlat", "HNSW<M>" (or "HNSW<M>,Flat"),
     * "HNSW<M>,SQ8", "HNSW<M>,SQ8,RFlat", or "auto" (the planner: Flat below auto_threshold
     * vectors, an IVF index chosen from size, dimension and memory budget above, switched
     * automatically when an add crosses the threshold). The Chrysalis roadmap's names are
     * accepted in any case: "Flat", "IVFFlat" (IVF over float32 rows with the list count of
     * the nlist field below, or when that is 0 the planner's, ivf_plan_nlist(n) ~ sqrt(n), chosen
     * when the index trains at auto_threshold vectors and again when it has grown 4x) and "HNSW"
     * (M 32). NULL: from kind (HNSW: M 16).
     * SQ8 keeps int8 codes (per-dimension scale and offset, from the first batch added or the
     * IVF training set) that are scanned first. "SQ8", "IVF<nlist>,SQ8" and "HNSW<M>,SQ8" keep
     * only the codes (about a quarter of the memory; scores are then approximate; an IVF index
     * keeps its float32 rows until it has trained on them); ",RFlat" keeps float32 rows too, for
     * exact re-ranking of the best candidates. */
    const char *spec;
    uint64_t auto_threshold; /* default 1000 */
    uint64_t memory_budget;  /* bytes the planner may use for vectors (0 = unlimited) */
    /* HNSW (fields from here on are read only when struct_size covers them) */
    uint32_t ef_construction; /* candidates kept while linking a node (0 = 200) */
    uint32_t build_threads;   /* workers linking a batch (HNSW), training k-means (IVF) (0 = one per online core) */
    /* IVF lists for a spec that names none ("IVFFlat"); 0 = the planner's choice when the index
     * trains. A spec that names a count ("IVF256,Flat") must agree with a non-zero nlist;
     * other kinds ignore it. (Read only when struct_size covers it.) */
    uint32_t nlist;
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

/* Last error message recorded on the handle: by a non-const call, or by a failed chrys_index_search
 * on the calling thread (see there). Borrowed: valid until the next non-const call on ix or this
 * thread's next search of ix; "" if none. */
CHRYS_API const char *chrys_index_errmsg(const chrys_index *ix);
/* The last failure on the handle (see chrys_error_info). Borrowed strings, valid until the next
 * non-const call. Returns CHRYS_OK, or CHRYS_INVALID for a NULL argument or a struct_size too
 * small to hold code. Thread-safe against other const calls. */
CHRYS_API int chrys_index_get_error_info(const chrys_index *ix, chrys_error_info *info);

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

/* Remove the vector with this id. Returns CHRYS_OK, CHRYS_NOTFOUND, CHRYS_INVALID (read-only
 * index), CHRYS_NOMEM. Flat and IVF: the last row moves into the freed slot (storage order changes).
 * HNSW: the node becomes a tombstone (searches walk through it but never return it) and the
 * neighbours that linked to it are re-linked with the selection heuristic; the space comes back
 * with chrys_index_compact, or by itself once there are at least 64 tombstones and they make up
 * half of the nodes. */
CHRYS_API int chrys_index_remove(chrys_index *ix, uint64_t id);

/* HNSW: drop the tombstones, renumber the live nodes densely and repair every link that pointed
 * at a tombstone. Other kinds: nothing to do. Returns CHRYS_OK, CHRYS_INVALID (read-only index),
 * CHRYS_NOMEM. */
CHRYS_API int chrys_index_compact(chrys_index *ix);

/* Progress of long operations (the HNSW build of an added batch): fn(done, total, ctx) from the
 * calling thread, about every 16 nodes it links (total: the batch's nodes). NULL fn switches it
 * off. */
CHRYS_API void chrys_index_set_progress(chrys_index *ix, void (*fn)(uint64_t done, uint64_t total, void *ctx),
                                        void *ctx);

/* Replace the vector stored under id (its metadata is kept). HNSW: the node's old neighbours are
 * re-linked and the node is linked again at its new place, so recall does not decay.
 * Returns CHRYS_OK, CHRYS_NOTFOUND, CHRYS_INVALID (NaN/Inf, zero vector under cosine). */
CHRYS_API int chrys_index_update(chrys_index *ix, uint64_t id, const float *vec);

/* Copy the vector stored under id into out[dim] (caller-owned). Under cosine this is the
 * normalised vector times the norm kept at insert (equal to the input up to float rounding); an
 * index holding SQ8 codes only returns the decoded codes (approximate).
 * Returns CHRYS_OK, CHRYS_NOTFOUND, CHRYS_INVALID (NULL argument). Thread-safe (const). */
CHRYS_API int chrys_index_get(const chrys_index *ix, uint64_t id, float *out);

/* Borrow the metadata string stored with id (NULL if none).
 * out: *meta (borrowed: valid until the next non-const call on ix). Returns CHRYS_OK or CHRYS_NOTFOUND. */
CHRYS_API int chrys_index_get_meta(const chrys_index *ix, uint64_t id, const char **meta);

/* Whether an id is present (1) or not (0). */
CHRYS_API int chrys_index_contains(const chrys_index *ix, uint64_t id);

/* The ids present, in storage order (removed ids are skipped).
 * out: *n_out, the number of ids (always set); out[0..*n_out) when out is non-NULL and
 * cap >= *n_out (caller-owned; out NULL with cap 0 asks for the count alone).
 * Returns CHRYS_OK, CHRYS_LIMIT_CAPACITY (cap < *n_out: nothing written), CHRYS_INVALID (ix or
 * n_out NULL, or out NULL with cap > 0). Thread-safe (const). */
CHRYS_API int chrys_index_get_ids(const chrys_index *ix, uint64_t *out, size_t cap, size_t *n_out);

typedef struct chrys_index_info {
    uint32_t struct_size;
    uint32_t dim;
    chrys_metric metric;
    chrys_index_kind kind;
    uint64_t count;        /* number of vectors */
    uint64_t memory_bytes; /* bytes held by the index */
    uint64_t seed;
    uint32_t nlist;        /* IVF lists (0 for Flat) */
    int sq8;               /* int8 codes kept */
    int planned;           /* created with spec "auto" */
    double imbalance;      /* IVF: sum(list_size^2) * nlist / n^2 (1 = perfectly balanced) */
    double drift;          /* IVF: imbalance now / at training; retrain when it grows (e.g. > 1.5) */
    uint64_t trained_on;   /* IVF: vectors present at the last training */
    char spec[32];         /* e.g. "IVF64,SQ8" */
    char plan_reason[160]; /* why the planner chose this index ("" if not planned) */
    /* HNSW */
    uint32_t hnsw_m, ef_construction;
    int32_t max_level;     /* -1 when empty */
    uint64_t deleted;      /* tombstones not yet compacted */
    uint64_t vector_bytes; /* of memory_bytes: float32 rows and SQ8 codes in memory */
    uint64_t mapped_bytes; /* chrys_index_open_mmap: the mapped file (rows read from it, not counted above) */
} chrys_index_info;

/* A parsed index specification (chrys_index_spec_parse). */
typedef struct chrys_index_spec {
    size_t struct_size;    /* sizeof(chrys_index_spec), or 0 for the full struct */
    chrys_index_kind kind;
    uint32_t nlist;        /* IVF lists; 0 = not named (chrys_index_opts.nlist or the planner's) */
    uint32_t hnsw_m;       /* HNSW links per node (32 for "HNSW"); 0 for the other kinds */
    int sq8;               /* int8 codes kept */
    int refine;            /* with sq8: float32 rows kept for exact re-ranking (",RFlat") */
    int is_auto;           /* "auto": the planner chooses */
} chrys_index_spec;

/* Parse an index specification (see chrys_index_opts.spec; the roadmap's names Flat, IVFFlat and
 * HNSW in any case). out: set struct_size before the call (or 0 for the full struct); only the
 * fields it covers are written. Returns CHRYS_OK, or CHRYS_INVALID with *errmsg (may be NULL; free
 * with chrys_free) saying what was expected; CHRYS_INVALID too when out is NULL or struct_size
 * does not cover kind. */
CHRYS_API int chrys_index_spec_parse(const char *spec, chrys_index_spec *out, char **errmsg);

/* The SQ8 form of spec (chrysalis build --sq8): Flat -> SQ8, IVF<n>,Flat -> IVF<n>,SQ8,
 * HNSW<M>[,Flat] -> HNSW<M>,SQ8; a spec with SQ8 already is returned as it is. Writes the result
 * into out (cap bytes). Returns CHRYS_OK, or CHRYS_INVALID with *errmsg for a spec that has no
 * SQ8 form (auto, IVFFlat without a list count) or does not parse, CHRYS_LIMIT when cap is too
 * small. */
CHRYS_API int chrys_index_spec_with_sq8(const char *spec, char *out, size_t cap, char **errmsg);

/* IVF: (re)train the lists with k-means on the vectors present and reassign every vector.
 * Returns CHRYS_OK, CHRYS_INVALID (not IVF, or fewer vectors than lists), CHRYS_NOMEM. */
CHRYS_API int chrys_index_retrain(chrys_index *ix);

/* Describe an index. in/out: info (set struct_size = sizeof before the call, or 0 for the full
 * struct; only the fields it covers are written, see struct_size above).
 * Returns CHRYS_OK, CHRYS_INVALID (NULL argument, struct_size above 65536). Thread-safe (const). */
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
    uint32_t nprobe;      /* IVF: lists searched (0 = the index's default, nlist/16 at least 1) */
    /* Optional filter: only ids for which allow(id, allow_ctx) returns non-zero can be returned
     * (consulted during the scan, only for rows good enough to enter the results). Must be
     * thread-safe when several threads search. */
    int (*allow)(uint64_t id, void *allow_ctx);
    void *allow_ctx;
    uint32_t ef_search;   /* HNSW: candidates kept during the walk (0 = 64; at least k) */
} chrys_search_opts;

/* Fill *opts with the defaults (k 10, every other field 0: the index's defaults). */
CHRYS_API void chrys_search_opts_init(chrys_search_opts *opts);

/* Search nq queries (row-major float32, nq*dim) for their k best vectors: exactly (Flat), or
 * approximately (IVF: the nprobe nearest lists; HNSW: a graph walk keeping ef_search candidates;
 * a true neighbour can be missed, raise nprobe / ef_search for recall).
 * out: hits[nq*k], caller-owned; each query's hits sorted best first, ties broken by smaller id,
 *      unused slots padded (id CHRYS_NO_ID). Scores are the true quantity, computed in double
 *      precision for the returned hits, wherever float32 rows are kept (SQ8 codes are scanned
 *      first and the best candidates re-ranked on the rows); an index holding SQ8 codes only
 *      scores from the codes (approximate).
 * in: opts (NULL for defaults; only the fields its struct_size covers are read).
 * Exact search of a batch of at least 64 queries uses the fused AVX-512 scan, or without AVX-512
 * BLAS sgemm (over at least 65,536 rows under cosine and IP); smaller batches the SIMD row
 * kernels. Every path returns the same hits, and splits the work over n_threads.
 * Returns CHRYS_OK, CHRYS_INVALID (k out of range, NaN/Inf query, zero query under cosine; a NULL
 * argument), CHRYS_LIMIT (nq*k beyond the address space), CHRYS_NOMEM.
 * Message (optional to read; the code alone says what kind of failure it was): a failed search
 * records why, naming the option or the query row at fault, and chrys_index_errmsg(ix) returns it
 * when called on the same thread right after the call. The message is kept per thread, so
 * threads searching one index at once each read their own; the thread's next message-recording
 * call on ix replaces it.
 * Thread-safe (const): several threads may search one index at once. */
CHRYS_API int chrys_index_search(const chrys_index *ix, size_t nq, const float *queries,
                                 const chrys_search_opts *opts, chrys_hit *hits);

/* Exact scores of chosen rows: out[i*m + j] = the score of row ids[i*m + j] for query i, in double
 * precision, the same bits exact search and the merger compute for that pair (cosine: the query
 * scaled to unit length, dot with the stored unit row; IP: dot; L2: squared distance).
 * Returns CHRYS_OK, CHRYS_NOTFOUND (an id not present), CHRYS_INVALID (NaN/Inf or zero query
 * under cosine; an index holding int8 codes only). Thread-safe (const). */
CHRYS_API int chrys_index_score(const chrys_index *ix, size_t nq, const float *queries, size_t m,
                                const uint64_t *ids, double *out);

/* ---- Store (single file) ---- */

/* Save the index to one file (docs/FORMAT.md). The file is written to a temporary file in the
 * same directory, fsynced and renamed over path, so a failure leaves any old file intact. The
 * write happens under path's writer lock (path.lock): taken here, waiting for another writer,
 * unless this process already holds it through chrys_store_lock (see "Writer lock" below; for
 * read-modify-write, take chrys_store_lock before chrys_index_load).
 * out: *errmsg (optional; owned). Returns CHRYS_OK, CHRYS_IO, CHRYS_NOMEM. Thread-safe (const). */
CHRYS_API int chrys_index_save(const chrys_index *ix, const char *path, char **errmsg);

/* Load an index saved by chrys_index_save. Every size is checked against the file size before any
 * allocation and every checksum is verified.
 * out: *out (free with chrys_index_free), *errmsg (optional; owned; names the file and the part at fault).
 * Returns CHRYS_OK, CHRYS_IO, CHRYS_CORRUPT, CHRYS_FORMAT, CHRYS_LIMIT, CHRYS_NOMEM. */
CHRYS_API int chrys_index_load(const char *path, chrys_index **out, char **errmsg);

/* Open a store read-only with its float32 rows left in the file: the file is mapped (mmap), every
 * check of chrys_index_load runs, then only the rows a search touches are read (the page cache
 * holds them; the process keeps the graph and SQ8 codes, and reads the ids and norms in place
 * too; a plain Flat store keeps the rows its checks mapped, since every search reads them all,
 * the other kinds drop them from the process). Opening is fast and, for
 * "HNSW<M>,SQ8,RFlat" or "SQ8,RFlat", memory is about that of the codes while the best candidates
 * are still re-ranked exactly. Searches are thread-safe as usual; add, remove, update, compact and
 * retrain return CHRYS_INVALID. The file must not be rewritten in place while open (chrysalis
 * saves by rename, which leaves the mapped old file intact). Same return codes as chrys_index_load. */
CHRYS_API int chrys_index_open_mmap(const char *path, chrys_index **out, char **errmsg);

/* chrys_index_open_mmap with flags (0: the same call).
 * CHRYS_MMAP_CHECK_ON_USE: the float32 rows' checksum and per-row checks run at their first use
 * instead of at open (everything else is still checked at open): so opening reads none of the
 * rows, and an exact Flat search of a few queries (fewer than 64) checks them within its own pass
 * over them, one read of the rows instead of two. The first search, chrys_index_get,
 * chrys_index_score or save runs the checks if they are still owed; if they fail it returns
 * CHRYS_CORRUPT_CHECKSUM or CHRYS_CORRUPT (chrys_index_errmsg names the file and the row), and so
 * does every later one. `chrysalis search --mmap` opens this way. Other bits: CHRYS_INVALID. */
#define CHRYS_MMAP_CHECK_ON_USE 1u
CHRYS_API int chrys_index_open_mmap_ex(const char *path, unsigned flags, chrys_index **out, char **errmsg);

/* Save the index into one memory buffer: the same bytes chrys_index_save writes to a file (so
 * chrys_index_load_buffer reads it back, and writing it out gives a valid store file).
 * out: *buf (owned; free with chrys_free), *size (bytes), *errmsg (optional; owned). *buf is NULL
 * on failure. Returns CHRYS_OK, CHRYS_INVALID (a NULL argument), CHRYS_LIMIT, CHRYS_NOMEM.
 * Thread-safe (const). */
CHRYS_API int chrys_index_save_buffer(const chrys_index *ix, void **buf, size_t *size, char **errmsg);

/* Load an index from a memory buffer holding a store (chrys_index_save_buffer's, or a store
 * file's bytes), with every check of chrys_index_load: a truncated or damaged buffer is
 * CHRYS_CORRUPT (or CHRYS_FORMAT), never a crash. in: buf[size] (read during the call only: the
 * index keeps no pointer into it), name (optional; labels messages, e.g. "pickle").
 * out: *out (free with chrys_index_free), NULL on failure; *errmsg (optional; owned; for a
 * damaged buffer it names it). Returns chrys_index_load's codes, or CHRYS_INVALID (out NULL, or buf NULL with size > 0). */
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
    int has_merger; /* 1 if the file holds merger state (open it with chrys_merger_open) */
} chrys_store_meta;

/* Read a store file's header and META section without loading vectors (the checksums of the
 * header, the section table and META are verified). in/out: meta (struct_size as for
 * chrys_index_get_info). out: *errmsg (optional; owned). Returns CHRYS_OK, CHRYS_INVALID,
 * CHRYS_IO, CHRYS_CORRUPT, CHRYS_FORMAT. */
CHRYS_API int chrys_store_peek(const char *path, chrys_store_meta *meta, char **errmsg);

/* ---- Writer lock: one writer at a time per store ----
 *
 * A store is replaced by renaming a complete temporary file over it, so readers never need a
 * lock: chrys_index_load, chrys_index_open_mmap, chrys_merger_open and chrys_store_peek never
 * lock and never wait, and always see one whole version of the file. Writers are serialised by a
 * lock on the sidecar file PATH.lock (created on first use, never removed; flock(2), so the
 * kernel releases it when its holder exits, kill -9 included: there is no stale lock). The holder
 * keeps its pid in PATH.lock; the first writer to take the lock removes the PATH.tmp-XXXXXX
 * temporaries of a writer that was killed.
 *
 * Which calls lock: chrys_index_save and chrys_merger_save take PATH's lock for the duration of
 * their write (waiting for it as long as it takes), unless this process already holds it through
 * chrys_store_lock, in which case they write under that lock. Nothing else locks.
 *
 * A save alone only makes each write whole; it does not stop two processes that both loaded the
 * old file from losing one another's changes (each saves its own version; the last rename wins).
 * For read-modify-write safety a caller must take the lock BEFORE reading:
 *
 *     chrys_store_lock(path, 0, &lk, &err);     // waits for the other writer
 *     chrys_merger_open(path, &m, &err);          // read afresh, under the lock
 *     chrys_merger_merge(m, n, recs, NULL);  chrys_merger_mark_run(m);
 *     chrys_merger_save(m, path, &err);           // writes under lk (no second lock)
 *     chrys_store_unlock(lk);                     // after the rename
 *
 * (the same with chrys_index_load / chrys_index_add / chrys_index_save). The chrysalis CLI does
 * exactly this in merge, add, build, retrain and cache prune.
 *
 * Threads: the lock belongs to the process. Any thread may take and release it; while one thread
 * holds it, a save of PATH from any thread of the process writes without waiting (coordinating
 * threads of one process is the caller's job, as for every non-const call), chrys_store_lock of
 * PATH from another thread waits (or returns CHRYS_LOCKED), and from the same thread returns
 * CHRYS_INVALID instead of deadlocking. A child made by fork() shares a held lock until it exits
 * (it is not a holder: its own chrys_store_lock of PATH returns CHRYS_LOCKED under NOWAIT). */

typedef struct chrys_lock chrys_lock;

#define CHRYS_LOCK_NOWAIT 1 /* chrys_store_lock: fail with CHRYS_LOCKED at once instead of waiting */

/* Called once, from the waiting thread, when chrys_store_lock_ex has to wait: path as given, and
 * the holder's pid (0 when it cannot be read). */
typedef void (*chrys_lock_wait_fn)(void *user, const char *path, int64_t holder_pid);

/* Take the writer lock of the store at path (the file need not exist yet).
 * in: path (the store's path; the lock is the file path + ".lock" beside it), flags (0 or
 * CHRYS_LOCK_NOWAIT). out: *out, the held lock (release with chrys_store_unlock), NULL on failure;
 * *errmsg (optional; owned, free with chrys_free): with CHRYS_LOCKED it reads
 * "PATH: locked by pid N".
 * Without NOWAIT, waits as long as the holder holds it.
 * Returns CHRYS_OK, CHRYS_LOCKED (NOWAIT and held), CHRYS_IO (the lock file cannot be created or
 * locked, e.g. the directory is missing or read-only), CHRYS_INVALID (bad argument, unknown flag,
 * or this thread already holds it), CHRYS_NOMEM. Thread-safe. */
CHRYS_API int chrys_store_lock(const char *path, int flags, chrys_lock **out, char **errmsg);

/* chrys_store_lock with a bounded wait and a notice. in: timeout_s (< 0: wait forever; 0: do not
 * wait, as CHRYS_LOCK_NOWAIT; > 0: wait at most this long, then CHRYS_LOCKED); on_wait (optional)
 * is called once before waiting, with user. A finite wait polls every 10 ms; an infinite one
 * sleeps in the kernel and wakes the moment the holder lets go. Same returns. Thread-safe. */
CHRYS_API int chrys_store_lock_ex(const char *path, int flags, double timeout_s, chrys_lock_wait_fn on_wait,
                                  void *user, chrys_lock **out, char **errmsg);

/* Release a lock taken by chrys_store_lock (empties the pid in PATH.lock, leaves the file).
 * Call it after the save's rename, i.e. after chrys_*_save returned. NULL-safe. Thread-safe
 * (any thread may release it; once only). */
CHRYS_API void chrys_store_unlock(chrys_lock *lk);

/* ---- Semantic merger ----
 *
 * The Chrysalis merge: each record goes, in order, to the most similar existing entry when their
 * cosine similarity reaches the threshold (the entry becomes w_old*old + w_new*new, merged_count
 * + 1), else it is appended as a new entry. Defaults reproduce the original Python merger:
 * strictly greater similarity wins, the first (oldest) entry wins ties, similarities <= 0 never
 * match, vectors are not renormalised. Entries are numbered 0, 1, 2, ... in creation order and
 * live in a cosine index (chrys_merger_index; by default exact Flat, then an HNSW graph from
 * chrys_merge_opts.auto_threshold entries on), so the merger's store is also a searchable store.
 * Batch merges search a block of records against the state before it on all cores, then settle
 * the block in order, rescoring only the entries that changed inside it: the decisions are exactly
 * those of one-record-at-a-time merging. */

typedef struct chrys_merger chrys_merger;

typedef enum chrys_merge_variant {
    CHRYS_MERGE_EMBEDDING = 0, /* EmbeddingMerger: last_merged_at := record's processed_at,
                                  descriptors := union (when the record has descriptors) */
    CHRYS_MERGE_SKILL = 1      /* SkillMerger: salts_used := union; skill_name kept */
} chrys_merge_variant;

/* Metrics of one search made by the merger, passed to chrys_merge_opts.on_search. */
typedef struct chrys_merge_metrics {
    double seconds;       /* wall time of the search */
    uint64_t entries;     /* entries searched */
    uint64_t records;     /* records (queries) in the search */
    const char *path;     /* block search: "flat-simd", "flat-sgemm", "hnsw" or "ivf"; a single
                             record's exact check: "flat-recheck" or "index-recheck" */
    int slow;             /* seconds > slow_search_s */
} chrys_merge_metrics;

typedef struct chrys_merge_opts {
    uint32_t struct_size;
    uint32_t dim;            /* required to create a merger */
    double threshold;        /* default 0.85 (the skill merger uses 0.90) */
    double weight_old;       /* default 0.4 */
    double weight_new;       /* default 0.6 */
    chrys_merge_variant variant;
    int renormalize;         /* 1: renormalise an entry to unit length after each merge (default 0) */
    int mean_update;         /* 1: entry := running mean of its records instead of w_old/w_new (default 0) */
    int skip_invalid;        /* 1: skip and count invalid records instead of failing the batch */
    uint32_t n_threads;      /* 0 = all cores */
    uint32_t batch_size;     /* records searched together; 0 = automatic; 1 = one at a time */
    double slow_search_s;    /* a search slower than this is flagged slow (default 5 s) */
    void (*on_search)(void *user, const chrys_merge_metrics *m); /* optional */
    void *user;
    /* The entries' index, for a new merger (see chrys_index_opts.spec; default "auto": exact Flat
     * below auto_threshold entries, then an HNSW32,SQ8,RFlat graph built by the planner during
     * the merge; a store planned as IVF by an earlier version becomes HNSW at its next merge).
     * Below auto_threshold every decision is the exact merger's (exact = 1), deterministic at
     * any n_threads; a store keeps the auto_threshold it was created with. */
    const char *index_spec;
    uint64_t auto_threshold; /* default 50000 (the switch to the graph; 0 = default) */
    uint64_t memory_budget;  /* default 0 = unlimited */
    /* Index-backed merging. Once the entries' index is HNSW (or IVF), candidates come from it
     * instead of an exact scan, and a decision is confirmed by an exact scan when the best score
     * found lies within confirm_margin of the threshold, or when nothing was found. exact = 1
     * keeps the exact scan always. verify = 1 also checks every decision against an exact scan
     * of the same state and counts disagreements (stats.verified, stats.disagreements). */
    int exact;
    uint32_t nprobe;        /* IVF: 0 = max(16, nlist / 8), and the index is used only from 256 lists
                               on (below, the exact block search is cheaper); set: used whenever IVF */
    double confirm_margin;  /* default 0.01 */
    int verify;
    uint32_t ef_search;     /* HNSW: candidates kept by the walk (0 = default 64) */
    uint32_t ef_construction; /* HNSW built by the planner for a new merger (0 = default 100) */
} chrys_merge_opts;

/* Fill *opts with the defaults above (dim 0: the caller must set it). */
CHRYS_API void chrys_merge_opts_init(chrys_merge_opts *opts);

typedef struct chrys_merge_record {
    uint64_t id;       /* input id (unique over the merger's life), != CHRYS_NO_ID */
    const float *vec;  /* dim floats; NULL or dim 0: an empty embedding, skipped and counted */
    uint32_t dim;
    const char *meta;  /* optional JSON object: kept on a new entry; descriptors/salts_used and
                          processed_at are used when merged */
} chrys_merge_record;

enum { CHRYS_MERGE_SKIPPED = 0, CHRYS_MERGE_ADDED = 1, CHRYS_MERGE_MERGED = 2 };

typedef struct chrys_merge_result {
    uint64_t entry;  /* entry the record ended in (CHRYS_NO_ID when skipped) */
    double score;    /* best cosine similarity found (NaN when no entry was > 0) */
    int action;      /* CHRYS_MERGE_SKIPPED, _ADDED, _MERGED */
    uint32_t _pad;
} chrys_merge_result;

typedef struct chrys_merge_stats {
    uint32_t struct_size;
    uint64_t entries, records, merged, added, skipped, runs;
    uint64_t next_record_id; /* one more than the largest record id merged (0 if none) */
    /* this handle's index-backed merging: */
    uint64_t approx_records; /* records decided with the index's candidates */
    uint64_t confirmations;  /* of those, confirmed by an exact scan (near the threshold or none found) */
    uint64_t verified;       /* records checked against an exact scan (verify) */
    uint64_t disagreements;  /* of those, a different decision (action or entry) */
    uint64_t relinks;        /* entries linked again into the HNSW graph after moving (see docs/MERGER.md) */
} chrys_merge_stats;

typedef struct chrys_merge_entry {
    uint32_t struct_size;
    uint32_t merged_count;
    double similarity_score; /* of the last merge into the entry; NaN if never merged */
    uint64_t first_record;   /* id of the record that created the entry */
    const char *meta;        /* borrowed (valid until the next non-const call); NULL if none */
} chrys_merge_entry;

/* Create an empty merger. out: *out (free with chrys_merger_free), *errmsg (optional, owned).
 * Returns CHRYS_OK, CHRYS_INVALID (bad opts), CHRYS_NOMEM. */
CHRYS_API int chrys_merger_new(const chrys_merge_opts *opts, chrys_merger **out, char **errmsg);

/* Open a merger saved by chrys_merger_save, with its stored options (change them with
 * chrys_merger_configure). Same checks as chrys_index_load. */
CHRYS_API int chrys_merger_open(const char *path, chrys_merger **out, char **errmsg);

/* Replace the options (dim must match or be 0). Only the fields opts->struct_size covers are
 * read; later fields take their defaults. Returns CHRYS_OK or CHRYS_INVALID. */
CHRYS_API int chrys_merger_configure(chrys_merger *m, const chrys_merge_opts *opts);
/* The current options, as much as opts->struct_size holds (0: the whole struct); struct_size is
 * set to the bytes written. */
CHRYS_API int chrys_merger_get_opts(const chrys_merger *m, chrys_merge_opts *opts);

/* Merge n records in order. results[n] is optional (caller-owned).
 * Every record is validated before anything changes: a record with NaN/Inf, a zero vector, the
 * wrong dimension, an id already merged, or metadata that is not a JSON object fails the whole
 * batch (CHRYS_INVALID, CHRYS_DIM, CHRYS_EXISTS; the message names the record), unless
 * skip_invalid is set, in which case it is skipped and counted.
 * Returns CHRYS_OK, those codes, or CHRYS_NOMEM (the merger must then be discarded). */
CHRYS_API int chrys_merger_merge(chrys_merger *m, size_t n, const chrys_merge_record *records,
                                 chrys_merge_result *results);

/* Close a run: append a chrys_merge_run (time, and the records, merged, added and skipped since
 * the last mark) to the history. Returns CHRYS_OK, CHRYS_NOMEM. */
CHRYS_API int chrys_merger_mark_run(chrys_merger *m);

/* Save entries, counts, scores, metadata, the record -> entry map, options and history to one
 * store file, atomically (see chrys_index_save), under path's writer lock (taken for the write
 * unless this process holds it through chrys_store_lock; see "Writer lock"). out: *errmsg
 * (optional; owned). Returns CHRYS_OK, CHRYS_INVALID (NULL argument), CHRYS_IO, CHRYS_NOMEM. */
CHRYS_API int chrys_merger_save(const chrys_merger *m, const char *path, char **errmsg);

/* Free a merger and its index. NULL-safe. */
CHRYS_API void chrys_merger_free(chrys_merger *m);
/* Last error message recorded on the merger (borrowed: valid until the next non-const call; "" if none). */
CHRYS_API const char *chrys_merger_errmsg(const chrys_merger *m);
/* The last failure on the handle; as chrys_index_get_error_info (record: in the chrys_merger_merge batch). */
CHRYS_API int chrys_merger_get_error_info(const chrys_merger *m, chrys_error_info *info);
/* Counts of the merger. in/out: stats (struct_size as for chrys_index_get_info).
 * Returns CHRYS_OK, CHRYS_INVALID. Thread-safe (const). */
CHRYS_API int chrys_merger_get_stats(const chrys_merger *m, chrys_merge_stats *stats);
/* Entry e: its bookkeeping into *entry (struct_size as for chrys_index_get_info; entry->meta is
 * borrowed), and its current vector (not renormalised) into vec[dim] if non-NULL.
 * Returns CHRYS_OK, CHRYS_NOTFOUND (e >= the number of entries), CHRYS_INVALID. */
CHRYS_API int chrys_merger_get_entry(const chrys_merger *m, uint64_t e, chrys_merge_entry *entry,
                                     float *vec);
/* The entry a record id ended in. Returns CHRYS_OK or CHRYS_NOTFOUND. */
CHRYS_API int chrys_merger_lookup(const chrys_merger *m, uint64_t record_id, uint64_t *entry);
/* One run of the history, closed by chrys_merger_mark_run: counts since the previous mark. */
typedef struct chrys_merge_run {
    uint64_t unix_time; /* seconds since 1970 when the run was marked */
    uint64_t records;   /* records merged in the run (merged + added + skipped) */
    uint64_t merged;    /* folded into an existing entry */
    uint64_t added;     /* appended as new entries */
    uint64_t skipped;   /* skipped (empty embedding, or invalid under skip_invalid) */
} chrys_merge_run;

/* History of runs, oldest first, with the same capacity rule as chrys_index_get_ids:
 * out: *n_out, the number of runs (always set); out[0..*n_out) when cap >= *n_out.
 * Returns CHRYS_OK, CHRYS_LIMIT_CAPACITY (cap < *n_out: nothing written), CHRYS_INVALID.
 * Thread-safe (const). */
CHRYS_API int chrys_merger_get_history(const chrys_merger *m, chrys_merge_run *out, size_t cap, size_t *n_out);
/* The entries' index (borrowed, read-only): search it with chrys_index_search. */
CHRYS_API const chrys_index *chrys_merger_index(const chrys_merger *m);

/* ---- Embedding providers and the embedding cache ----
 *
 * Text in, vectors out, never paying twice. Providers: the deterministic offline one (bit for bit
 * the Chrysalis pipeline's: SHA-256 of the text seeds numpy's default_rng, 1024 uniforms,
 * L2-normalised), an OpenAI-compatible HTTP one (OpenAI, Voyage and other /embeddings endpoints)
 * and an Ollama one (/api/embed, e.g. nomic-embed-text). With a cache path, every vector is kept
 * in an SQLite file keyed by a hash of (provider, model, dimensions, exact text), confirmed
 * against the full key on every hit; failures are never cached. */

typedef struct chrys_embedder chrys_embedder;

typedef enum chrys_provider {
    CHRYS_PROVIDER_DETERMINISTIC = 0,
    CHRYS_PROVIDER_OPENAI = 1, /* POST {base_url}/embeddings {"model", "input": [...], "dimensions"?} */
    CHRYS_PROVIDER_OLLAMA = 2  /* POST {base_url}/api/embed {"model", "input": [...]} */
} chrys_provider;

typedef struct chrys_embed_opts {
    uint32_t struct_size;
    chrys_provider provider;
    const char *base_url;       /* HTTP providers; e.g. "https://api.voyageai.com/v1" */
    const char *model;          /* e.g. "voyage-3"; the deterministic provider ignores it */
    uint32_t dim;               /* expected dimensions (default 1024); a reply of another size is an error */
    int send_dimensions;        /* 1: send "dimensions": dim (OpenAI text-embedding-3-*) */
    const char *api_key_env;    /* name of the environment variable holding the key (never logged) */
    uint32_t batch_max_items;   /* texts per request (default 128) */
    uint32_t batch_max_bytes;   /* request text bytes per request (default 256 KiB) */
    double timeout_s;           /* per request (default 30) */
    uint32_t max_retries;       /* on timeouts, connection errors, 429 and 5xx (default 5) */
    double backoff_base_s;      /* exponential backoff with full jitter: base * 2^attempt (default 0.5) */
    double backoff_max_s;       /* cap (default 30); a Retry-After header is honoured up to this cap */
    double rate_per_s;          /* token bucket: requests per second (0 = unlimited) */
    double rate_burst;          /* bucket size (default 1) */
    int fallback_deterministic; /* 1: when the provider fails for good, embed with the deterministic
                                   provider instead, counted in stats.fallback_texts */
    const char *cache_path;     /* SQLite cache file, or NULL for none */
    double cache_ttl_s;         /* entries older than this are misses (0 = forever) */
    uint64_t cache_max_entries; /* bound: least recently used entries are evicted (0 = none) */
    uint64_t seed;              /* jitter seed (default 42) */
    uint32_t concurrency;       /* requests in flight at once (default 4, 1..CHRYS_MAX_CONCURRENCY), all
                                   within rate_per_s; a Retry-After pauses every request, not one;
                                   results stay in input order. Older callers (smaller struct_size) get 4 */
} chrys_embed_opts;
#define CHRYS_MAX_CONCURRENCY 256

/* Fill *opts with the defaults above (the deterministic provider, 1024 dimensions, no cache). */
CHRYS_API void chrys_embed_opts_init(chrys_embed_opts *opts);

/* Create an embedder (opens or creates the cache). out: *out (free with chrys_embedder_free),
 * *errmsg (optional, owned). Returns CHRYS_OK, CHRYS_INVALID, CHRYS_IO (cache), CHRYS_NOMEM. */
CHRYS_API int chrys_embedder_new(const chrys_embed_opts *opts, chrys_embedder **out, char **errmsg);
/* Free an embedder (closes the cache). NULL-safe. */
CHRYS_API void chrys_embedder_free(chrys_embedder *e);
/* Last error message recorded on the embedder (borrowed: valid until the next non-const call; "" if none). */
CHRYS_API const char *chrys_embedder_errmsg(const chrys_embedder *e);
/* The last failure on the handle; as chrys_index_get_error_info (record: the text of the call at fault). */
CHRYS_API int chrys_embedder_get_error_info(const chrys_embedder *e, chrys_error_info *info);

/* Embed n texts into out[n*dim] (caller-owned): cached vectors are reused; the rest are requested
 * in batches. Returns CHRYS_OK, CHRYS_IO (the provider failed after retries; the message says how,
 * without the key), CHRYS_DIM (wrong dimension from the provider), CHRYS_INVALID (malformed reply),
 * CHRYS_NOMEM. Nothing of a failed batch is cached. */
CHRYS_API int chrys_embedder_embed(chrys_embedder *e, size_t n, const char *const *texts, float *out);

typedef struct chrys_embed_stats {
    uint32_t struct_size;
    uint64_t texts;          /* texts asked for */
    uint64_t cache_hits;     /* served from the cache (API calls saved: texts that needed no request) */
    uint64_t cache_misses;
    uint64_t requests;       /* HTTP requests made (including retries) */
    uint64_t retries;
    uint64_t provider_texts; /* texts embedded by the provider */
    uint64_t fallback_texts; /* texts embedded by the deterministic fallback */
} chrys_embed_stats;

/* Counts of this embedder since it was created. in/out: stats (struct_size as for
 * chrys_index_get_info). Returns CHRYS_OK, CHRYS_INVALID. */
CHRYS_API int chrys_embedder_get_stats(const chrys_embedder *e, chrys_embed_stats *stats);

/* The deterministic provider as a function: out[dim] for text[0..len). Returns CHRYS_OK or CHRYS_INVALID. */
CHRYS_API int chrys_embed_deterministic(const char *text, size_t len, uint32_t dim, float *out);

typedef struct chrys_cache_info {
    uint32_t struct_size;
    uint64_t entries, bytes, hits, misses; /* hits/misses: lifetime totals kept in the file */
} chrys_cache_info;

/* Describe a cache file. in/out: info (struct_size as for chrys_index_get_info). out: *errmsg
 * (optional; owned). Returns CHRYS_OK, CHRYS_INVALID, CHRYS_IO (the file cannot be opened as a
 * cache). Safe while another process uses the cache. */
CHRYS_API int chrys_cache_get_info(const char *path, chrys_cache_info *info, char **errmsg);
/* Remove the entries older than ttl_s (0: none) and the least recently used beyond max_entries
 * (0: none). out: *removed (optional), *errmsg (optional; owned). Safe while another process uses
 * the cache. */
CHRYS_API int chrys_cache_prune(const char *path, double ttl_s, uint64_t max_entries, uint64_t *removed,
                                char **errmsg);

#ifdef __cplusplus
}
#endif
#endif /* CHRYSALIS_H */

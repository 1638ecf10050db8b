/*
 * index.h: the chrys_index structure, shared by index.c (mutation), flat.c (search) and the store.
 *
 * Layout: rows are contiguous (slot s at vecs + s*dim, 64-byte aligned base) so a scan streams
 * memory and sgemm can take row blocks in place. Removal moves the last row into the hole, so
 * slots are dense; results never depend on slot order because ties break by id.
 * Under cosine the stored rows are unit vectors and norms[] keeps each input's norm; under IP and
 * L2 rows are stored as given and norms[] holds their L2 norms (used by the L2 sgemm path).
 */
#ifndef CHRYS_INDEX_H
#define CHRYS_INDEX_H

#include "internal.h"

struct chrys_index {
    uint32_t dim;
    chrys_metric metric;
    chrys_index_kind kind;
    uint64_t seed;
    size_t n, cap;  /* rows used / allocated */
    float *vecs;    /* cap*dim, aligned */
    float *norms;   /* cap */
    uint64_t *ids;  /* cap */
    char **meta;    /* cap, NULL entries when no metadata */
    idmap map;      /* id -> slot */
    char *errmsg;   /* last message of a non-const call */
};

/* Record a message on the handle; returns rc. */
CHRYS_PRIVATE int index_fail(chrys_index *ix, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Make room for n more rows. */
CHRYS_PRIVATE int index_reserve(chrys_index *ix, size_t extra);
/* Validate opts and allocate an empty index. */
CHRYS_PRIVATE int index_create(uint32_t dim, chrys_metric metric, chrys_index_kind kind,
                               uint64_t seed, chrys_index **out, char **errmsg);

/* index_store.c: the index's sections of a store file, and loading them from an open reader
 * (the merger adds its own sections around these). */
#define INDEX_MAX_SECTIONS 5
struct store_section;
struct store_reader;
CHRYS_PRIVATE int index_store_sections(const chrys_index *ix, unsigned char meta[64],
                                       struct store_section *secs, uint32_t *ns,
                                       unsigned char **mdat_out);
CHRYS_PRIVATE int index_load_reader(struct store_reader *r, chrys_index **out, char **errmsg);

/* flat.c */
#define FLAT_BLAS_MIN_NQ 64 /* batches below this use the SIMD kernels; at and above, BLAS sgemm */
CHRYS_PRIVATE int flat_search(const chrys_index *ix, size_t nq, const float *queries,
                              const chrys_search_opts *opts, chrys_hit *hits);
/* Validate queries and, under cosine, normalise them into a new aligned array (*prepared, free
 * with chrys_free_aligned; NULL when the input can be used as it is). CHRYS_INVALID on NaN/Inf or
 * a zero query under cosine. */
CHRYS_PRIVATE int flat_prepare_queries(const chrys_index *ix, size_t nq, const float *queries,
                                       float **prepared);
/* Exact top-k for prepared queries: ids[nq*k] and scores[nq*k] in double (the true quantity:
 * cosine, inner product or squared L2), best first, ties by smaller id, padded with CHRYS_NO_ID. */
CHRYS_PRIVATE int flat_search_prepared(const chrys_index *ix, size_t nq, const float *q, size_t k,
                                       int use_thr, double thr, unsigned n_threads, uint64_t *ids,
                                       double *scores);

/* parallel.c: run fn over [0, n) split into contiguous ranges, one per worker (worker 0 is the
 * calling thread). Falls back to fewer workers if threads cannot be started. */
typedef void (*chrys_range_fn)(void *ctx, unsigned worker, size_t begin, size_t end);
CHRYS_PRIVATE void chrys_parallel_for(unsigned n_workers, size_t n, chrys_range_fn fn, void *ctx);

#endif

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
    /* planner (spec "auto") */
    int planned;
    uint64_t auto_threshold, memory_budget;
    char plan_reason[160];
    /* IVF (ivf.c): lists hold slots; rows stay in vecs (IVF,SQ8 without ",RFlat": codes only once
     * trained, vecs NULL) */
    uint32_t nlist;          /* 0 until trained */
    float *centroids;        /* nlist*dim (unit length under cosine) */
    uint32_t *list_of;       /* cap: list of each slot */
    uint32_t *pos_in_list;   /* cap: position of each slot in its list */
    uint32_t **lists;        /* nlist arrays of slots */
    uint32_t *list_n, *list_cap;
    uint64_t trained_on;     /* vectors at the last training */
    double train_imbalance;
    uint32_t want_nlist;     /* from the spec or opts.nlist (0 = the planner's ivf_plan_nlist(n) at each training) */
    /* SQ8 (ivf.c): per-dimension offset and step; codes per slot */
    int sq8;
    float *sq_min, *sq_step; /* dim each; trained with the lists (or at the first add for Flat) */
    uint8_t *codes;          /* cap*dim */
    float *sq_csq;           /* cap: |decoded row|^2, SQ8 under L2 (derived from the codes) */
    /* HNSW (hnsw.c): the graph over the slots. Removal leaves a tombstone (ids[slot] ==
     * CHRYS_NO_ID, counted in n_dead) instead of moving the last row into the hole. */
    struct hnsw *hnsw;
    size_t n_dead;
    int refine;              /* SQ8: float32 rows kept for re-ranking ("RFlat"); without it vecs is NULL (IVF: once trained) */
    uint32_t build_threads;
    /* chrys_index_open_mmap: vecs points into a read-only mapping of the store file */
    void *map_base;
    size_t map_len;
    int read_only;           /* opened with chrys_index_open_mmap: every mutation is refused */
    void (*progress)(uint64_t done, uint64_t total, void *ctx);
    void *progress_ctx;
    /* Set by the merger (never stored): the kind the planner builds at auto_threshold (IVF by
     * default; HNSW for merger stores, whose entries move and grow one at a time; set with
     * index_set_plan_policy), and deferred
     * linking: with defer_links, chrys_index_add stores HNSW rows without linking them; the last
     * `pending` slots wait for index_link_pending (searches cannot reach them until then). */
    chrys_index_kind plan_kind; /* the planner's policy (planner.h: index_set_plan_policy) */
    uint32_t plan_m, plan_efc;
    const char *plan_why;
    int defer_links;
    size_t pending;
};

/* Whether the spec keeps float32 rows for good: always without SQ8; with SQ8 only with ",RFlat". */
static inline int index_keeps_floats(const chrys_index *ix) { return !ix->sq8 || ix->refine; }

/* Whether float32 rows are stored now: as index_keeps_floats, and also by an untrained codes-only
 * IVF index, which keeps its rows until k-means has trained on them (then drops them). */
static inline int index_has_floats(const chrys_index *ix)
{
    return index_keeps_floats(ix) || (ix->kind == CHRYS_INDEX_IVF && !ix->nlist);
}

/* Record a message on the handle; returns rc. */
CHRYS_PRIVATE int index_fail(chrys_index *ix, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Make room for n more rows. */
CHRYS_PRIVATE int index_reserve(chrys_index *ix, size_t extra);
/* Validate opts and allocate an empty index (with its HNSW graph of M links and ef_construction
 * efc when kind is HNSW; both ignored otherwise). */
CHRYS_PRIVATE int index_create(uint32_t dim, chrys_metric metric, chrys_index_kind kind, uint64_t seed, uint32_t hnsw_m,
                               uint32_t efc, chrys_index **out, char **errmsg);

/* Link the rows chrys_index_add left unlinked under defer_links (all cores, build_threads). */
CHRYS_PRIVATE int index_link_pending(chrys_index *ix);
/* Replace the row of slot with vec (validated by the caller; normalised here under cosine). HNSW:
 * the SQ8 code is re-encoded and the links kept as they are (the row moved within its
 * neighbourhood; the merger's exact safeguards absorb what the graph misses); others as
 * chrys_index_update. */
CHRYS_PRIVATE int index_update_keep_links(chrys_index *ix, uint32_t slot, const float *vec);

/* index_store.c: the index's sections of a store file, and loading them from an open reader
 * (the merger adds its own sections around these). */
#define INDEX_MAX_SECTIONS 14
struct store_section;
struct store_reader;
/* The index's sections, with the buffers they point into (free with index_sections_free). */
typedef struct index_sections {
    struct store_section *secs; /* INDEX_MAX_SECTIONS entries, caller-provided */
    uint32_t n;
    unsigned char meta[64], plan[256], hnsw_hdr[64];
    unsigned char *mdat, *hnsw_up; /* owned */
} index_sections;
CHRYS_PRIVATE int index_store_sections(const chrys_index *ix, index_sections *out);
CHRYS_PRIVATE void index_sections_free(index_sections *s);
CHRYS_PRIVATE int index_load_reader(struct store_reader *r, chrys_index **out, char **errmsg);
/* The same; with map != 0 (a reader over a mapped file) the float32 rows stay in the mapping. */
CHRYS_PRIVATE int index_load_reader_ex(struct store_reader *r, int map, chrys_index **out, char **errmsg);
/* CHRYS_INVALID with a message when ix was opened read-only (mapped). */
CHRYS_PRIVATE int index_check_writable(chrys_index *ix);

/* A search filter (chrys_search_opts.allow), NULL when none. */
typedef struct search_filter {
    int (*allow)(uint64_t id, void *ctx);
    void *ctx;
} search_filter;

/* One batched search split over workers by chrys_parallel_for (queries are independent):
 * IVF (ivf.c), the SQ8 scan (sq8.c) and HNSW (hnsw.c) each run it with their own worker. */
typedef struct search_job {
    const chrys_index *ix;
    const float *q; /* prepared queries (unit under cosine) */
    size_t k;
    int use_thr;
    double thr;
    uint64_t *ids;   /* nq * k */
    double *scores;  /* nq * k */
    const search_filter *filter;
    size_t pool;     /* candidates kept per query (IVF, SQ8 scan) or ef_search (HNSW) */
    uint32_t nprobe; /* IVF */
    int rc;          /* CHRYS_NOMEM from a worker that ran out of memory */
} search_job;

/* ivf.c: the lists (the SQ8 codes are sq8.c's; the planner decides when to train) */
/* Add slots [first_slot, n) to their nearest lists (a trained index); rows as for
 * planner_after_add. CHRYS_NOMEM with nothing changed. */
CHRYS_PRIVATE int ivf_add_rows(chrys_index *ix, size_t first_slot, const float *rows);
CHRYS_PRIVATE void ivf_before_remove(chrys_index *ix, uint32_t slot, uint32_t last);
/* Re-encode slot's codes and move it to its nearest list; row: its new row as stored. Returns
 * CHRYS_NOMEM with nothing changed when the new list cannot grow. */
CHRYS_PRIVATE int ivf_after_update(chrys_index *ix, uint32_t slot, const float *row);
CHRYS_PRIVATE int ivf_reserve(chrys_index *ix, size_t cap);
CHRYS_PRIVATE int ivf_search(const chrys_index *ix, size_t nq, const float *q, size_t k, int use_thr, double thr,
                             unsigned n_threads, uint32_t nprobe, uint64_t *ids, double *scores,
                             const search_filter *filter);
CHRYS_PRIVATE double ivf_imbalance(const chrys_index *ix);
/* Train nlist lists (k-means) and replace the index's lists with them; all or nothing. On failure
 * why (cap bytes) says what failed; the index is as it was. */
CHRYS_PRIVATE int ivf_train(chrys_index *ix, uint32_t nlist, char *why, size_t cap);
/* The lists and centroids only (the SQ8 ranges and codes stay). */
CHRYS_PRIVATE void ivf_free_lists(chrys_index *ix);

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
                                       double *scores, const search_filter *filter);

/* parallel.c: run fn over [0, n) split into contiguous ranges, one per worker (worker 0 is the
 * calling thread). Falls back to fewer workers if threads cannot be started. */
typedef void (*chrys_range_fn)(void *ctx, unsigned worker, size_t begin, size_t end);
CHRYS_PRIVATE void chrys_parallel_for(unsigned n_workers, size_t n, chrys_range_fn fn, void *ctx);

#endif

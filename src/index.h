/*
 * index.h: the chrys_index structure, shared by index.c (mutation), search.c and the kinds' searches
 * (flat.c, ivf.c, hnsw.c, sq8.c) and the store.
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
    char **meta;    /* cap, NULL entries when no metadata (a read-only index without any: NULL) */
    idmap map;      /* id -> slot (empty when ids_sorted) */
    int ids_sorted; /* a read-only mapped store whose ids strictly increase: no map, index_slot_of
                       bisects ids (the order proves them unique) */
    char *errmsg;   /* last message of a non-const call */
    chrys_errpos errpos; /* its structured part (chrys_index_get_error_info) */
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
    int ids_in_map;          /* ids and norms point into the mapping too: not owned */
    int read_only;           /* opened with chrys_index_open_mmap: every mutation is refused (set
                                while loading: index_reserve then allocates no rows, map or spare room) */
    /* chrys_index_open_mmap_ex with CHRYS_MMAP_CHECK_ON_USE: the float32 rows (their checksum and
     * each row's checks) are verified at their first use, not at open (index_rows_ready, or the
     * exact scan within its own pass). rows_state: ROWS_OK, ROWS_OWED, then ROWS_BAD with
     * rows_rc and rows_msg (ROWS_BUSY while a verdict is written). Changed through a const
     * handle: searches share it, and the verdict is the same whichever search reaches it. */
    int rows_state;
    int rows_rc;
    uint32_t rows_crc;       /* the VF32 section's stored checksum */
    char *rows_msg;
    char *rows_name;         /* the file, for messages */
    void (*progress)(uint64_t done, uint64_t total, void *ctx);
    void *progress_ctx;
    /* Set by the merger (never stored): the kind the planner builds at auto_threshold (IVF by
     * default; HNSW for merger stores, whose entries move and grow one at a time; set with
     * index_set_plan_policy, planner.h). */
    chrys_index_kind plan_kind;
    uint32_t plan_m, plan_efc;
    const char *plan_why;
    /* HNSW rows added by index_add_unlinked: the last `pending` slots wait for
     * index_link_pending (searches cannot reach them until then). */
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

enum { ROWS_OK = 0, ROWS_OWED = 1, ROWS_BUSY = 2, ROWS_BAD = 3 };

/* One contiguous run of rows checked (index_rows_check_range): their CRC32C from zero, their
 * bytes, and the first row that fails its checks (SIZE_MAX: none). */
typedef struct rows_part {
    uint32_t crc;
    uint64_t len;
    size_t first_bad;
} rows_part;

static inline int index_rows_state(const chrys_index *ix) { return __atomic_load_n(&ix->rows_state, __ATOMIC_ACQUIRE); }
/* index_store.c. Continue part p (from {0, 0, SIZE_MAX}) over rows [begin, end), which follow
 * the rows it covers. */
CHRYS_PRIVATE void index_rows_check_range(const chrys_index *ix, size_t begin, size_t end, rows_part *p);
/* Map rows [begin, end) of a mapped index into the process at once, before a pass reads them all
 * (no-op for an index in memory). */
CHRYS_PRIVATE void index_rows_map_in(const chrys_index *ix, size_t begin, size_t end);
/* The verdict on parts[0..n), consecutive runs covering every row in order: the checksum, then
 * the first bad row; recorded once for the index. Returns CHRYS_OK or the CHRYS_CORRUPT* code. */
CHRYS_PRIVATE int index_rows_verdict(const chrys_index *ix, const rows_part *parts, unsigned n);
/* CHRYS_OK once the rows are verified (at once, for every index but those rows are owed; else by
 * the check pass over the cores), or the recorded error; index_rows_msg says why. Every reader of
 * the float32 rows but the exact scan (which checks them itself) calls it first. */
CHRYS_PRIVATE int index_rows_ready(const chrys_index *ix);
CHRYS_PRIVATE const char *index_rows_msg(const chrys_index *ix);

/* Whether slot holds a row a search may return (not an HNSW tombstone). */
static inline int index_slot_live(const chrys_index *ix, size_t slot) { return ix->ids[slot] != CHRYS_NO_ID; }

/* Record a message on the handle; returns rc. */
CHRYS_PRIVATE int index_fail(chrys_index *ix, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same for row `row` of the failing batch (add's row, search's query): "row N: " + reason,
 * with the row in chrys_index_get_error_info. */
CHRYS_PRIVATE int index_fail_row(chrys_index *ix, int rc, size_t row, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Make room for n more rows. */
CHRYS_PRIVATE int index_reserve(chrys_index *ix, size_t extra);
/* The slot holding id, or CHRYS_NO_SLOT (the id map, or a bisection of ids when ids_sorted). */
CHRYS_PRIVATE uint32_t index_slot_of(const chrys_index *ix, uint64_t id);
/* Validate opts and allocate an empty index (with its HNSW graph of M links and ef_construction
 * efc when kind is HNSW; both ignored otherwise). */
CHRYS_PRIVATE int index_create(uint32_t dim, chrys_metric metric, chrys_index_kind kind, uint64_t seed, uint32_t hnsw_m,
                               uint32_t efc, chrys_index **out, char **errmsg);

/* The merger's way in (it sets index state only through these):
 * index_add_unlinked: chrys_index_add, except that under HNSW the new rows are stored (and
 * findable by exact scans) without being linked into the graph; they wait, as the last `pending`
 * slots, for index_link_pending, which links them all at once (all cores, build_threads); the
 * caller links them before any other change to the index (the merger does at each block's end
 * and before chrys_merger_merge returns). A Flat index that the add takes past the planner's
 * threshold is built (and linked) as usual; so are the rows of a codes-only graph. */
CHRYS_PRIVATE int index_add_unlinked(chrys_index *ix, size_t n, const uint64_t *ids, const float *vecs,
                                     const char *const *meta);
/* index_add_unlinked of one row already as a cosine index stores it: unit = vec_scale_to(v, norm)
 * with norm = vec_norm(v) of a finite, non-zero v (the merger's prepared query), not checked or
 * scaled again. CHRYS_INVALID for another metric. */
CHRYS_PRIVATE int index_add_unit_unlinked(chrys_index *ix, uint64_t id, const float *unit, double norm,
                                          const char *meta);
CHRYS_PRIVATE int index_link_pending(chrys_index *ix);
/* Replace slot's metadata with owned_json (a chrys_ allocation the index now owns, or NULL for
 * none); the old one is freed. */
CHRYS_PRIVATE void index_set_meta(chrys_index *ix, uint32_t slot, char *owned_json);
/* Workers for the index's own builds (graph links, k-means): 0 = all online cores. */
CHRYS_PRIVATE void index_set_build_threads(chrys_index *ix, uint32_t n_threads);
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

/* search.c: the one search path (chrys_index_search and every internal caller). */
typedef struct search_params {
    size_t k;
    int use_thr;
    double thr;
    unsigned n_threads;  /* 0 = one per online core */
    uint32_t ef_search;  /* HNSW (0 = its default) */
    uint32_t nprobe;     /* IVF (0 = its default) */
    int exact;           /* non-zero: the exact float32 scan (flat.c) whatever the kind */
    const search_filter *filter;
} search_params;
/* Top-k of nq prepared queries (search_prepare_queries) through the kind's search: ids[nq*k] and
 * scores[nq*k] in double (the true quantity: cosine, inner product or squared L2), best first,
 * ties by smaller id, padded with CHRYS_NO_ID. Sets no message. */
CHRYS_PRIVATE int index_search_prepared(const chrys_index *ix, size_t nq, const float *q, const search_params *p,
                                        uint64_t *ids, double *scores);
/* Validate queries and, under cosine, normalise them into a new aligned array (*prepared, free
 * with chrys_free_aligned; NULL when the input can be used as it is). CHRYS_INVALID on NaN/Inf or
 * a zero query under cosine, CHRYS_NOMEM, CHRYS_LIMIT; why (optional, why_cap bytes) then names
 * the query row and the cause. */
CHRYS_PRIVATE int search_prepare_queries(const chrys_index *ix, size_t nq, const float *queries, float **prepared,
                                         char *why, size_t why_cap);
/* The message of this thread's last failing search on ix (NULL if none, or since forgotten). */
CHRYS_PRIVATE const char *index_search_msg(const chrys_index *ix);
CHRYS_PRIVATE void index_search_msg_forget(const chrys_index *ix);

/* The re-ranking rule. gamma_n = n u / (1 - n u), u = 2^-24: a float32 sum of n products, in any
 * order, with or without FMA, errs by at most gamma_n times the sum of the terms' magnitudes
 * (Higham, Accuracy and Stability of Numerical Algorithms, 3.1); for a dot product that is at most
 * gamma_n |q||x| by Cauchy-Schwarz, and for sum (q_i - x_i)^2 (one more rounding per term)
 * gamma_{n+2} |q-x|^2. */
static inline double f32_gamma(double n_terms)
{
    double nu = n_terms * 0x1p-24;
    return nu / (1 - nu);
}
/* The re-ranking band: a float32 candidate whose score lies below kth - rerank_slack (kth: the
 * k-th best float32 score among them) is provably below the k best in exact arithmetic, so only
 * those above it need their double score. For float32 scores from the kernels' dot and l2sq
 * (the plain L2 form) of q with the rows slots[0..n) (the candidates; read under IP only, for
 * their largest norm). Internal scores: higher is better (L2 negated). */
CHRYS_PRIVATE double rerank_slack(const chrys_index *ix, const float *q, double kth, const uint32_t *slots,
                                  size_t n);

/* flat.c: exact search only */
#define FLAT_BLAS_MIN_NQ 64 /* batches below this use the SIMD kernels; at and above, BLAS sgemm */
/* Exact top-k for prepared queries, as index_search_prepared. */
CHRYS_PRIVATE int flat_search_prepared(const chrys_index *ix, size_t nq, const float *q, size_t k,
                                       int use_thr, double thr, unsigned n_threads, uint64_t *ids,
                                       double *scores, const search_filter *filter);
/* The scans of flat_search_prepared's first pass: chosen by batch and base size (AUTO), or forced
 * by the test hook below onto one path for every later search (not thread-safe; tests only).
 * Returns CHRYS_INVALID when this build (sgemm needs BLAS) or CPU (fused needs AVX-512) lacks it. */
typedef enum flat_path { FLAT_PATH_AUTO = 0, FLAT_PATH_SIMD, FLAT_PATH_FUSED, FLAT_PATH_SGEMM } flat_path;
CHRYS_PRIVATE int flat__test_force_path(flat_path p);
/* Test hook: the path the last first pass took. */
CHRYS_PRIVATE flat_path flat__test_last_path(void);

/* parallel.c: run fn over [0, n) split into contiguous ranges, one per worker (worker 0 is the
 * calling thread). Falls back to fewer workers if threads cannot be started. */
typedef void (*chrys_range_fn)(void *ctx, unsigned worker, size_t begin, size_t end);
CHRYS_PRIVATE void chrys_parallel_for(unsigned n_workers, size_t n, chrys_range_fn fn, void *ctx);
/* The same over [0, n) in chunks of `chunk` items (0: about n / (16 workers), the whole range
 * on one worker) handed out as workers finish (fn runs once per chunk): for items of uneven
 * cost, so that a slower core does not hold the batch back. */
CHRYS_PRIVATE void chrys_parallel_chunks(unsigned n_workers, size_t n, size_t chunk, chrys_range_fn fn, void *ctx);

#endif

/*
 * merge.h: the semantic merger's state, shared by the merger's files (private to src/).
 *   merge.c        the API and state: options, creation, getters, growth of the per-entry arrays
 *   merge_block.c  chrys_merger_merge: validation, the block engine, settling, relinking
 *   merge_meta.c   metadata updates on merge (cJSON)
 *   merge_store.c  persistence: the merger's sections beside the index's in one store file
 *
 * State: entries live in a cosine Flat index under ids 0, 1, 2, ... (creation order), with their
 * metadata (the creating record's JSON, updated on merges) as the index's per-row metadata.
 * Beside it, per entry: merged_count, the similarity of the last merge, the creating record; and
 * the map record id -> entry. All of it is saved in the store file next to the index sections.
 *
 * Ownership: the merger owns its index; chrys_merger_index lends it out read-only.
 * Threads: a merger is used by one thread at a time; merges use n_threads workers internally.
 */
#ifndef CHRYS_MERGE_H
#define CHRYS_MERGE_H

#include "index.h"

#define MERGE_K 8 /* candidates per record from the block search */
#define MERGE_MIN_NLIST 256 /* below this, exact block search is cheaper than the IVF index */
#define MERGE_MAX_BLOCK 2048 /* records settled together, at most (automatic block size) */
#define MERGE_RELINK_DRIFT 0.5 /* radians an entry may move before it is linked again into the graph */
#define MERGE_HNSW_EF 64    /* default ef_search of the merger's HNSW walks */
/* Default switch point (auto_threshold) of a merger store: exact Flat merging, the exact merger's
 * decisions and deterministic at any thread count, below this many entries; the HNSW graph from
 * here on. At 1,000 (the index default) a 20,000-record near-threshold stream was slower on the
 * graph than exact and its entries changed from run to run at 2 threads (issue 16). With the
 * int8 screen wanting only entries at the threshold, the exact merge of the 100,000-record
 * clustered stream (46,920 entries) took 11.3 s against 13.7 s switching to the graph at 20,000
 * (before the screen: 2.4x slower), bench/MERGE_SCALE.md; hence 50,000. */
#define MERGE_GRAPH_SWITCH 50000

/* merge_screen.c: the exact block search through int8 codes (exact results; see there). Used
 * with AVX-512 VNNI from SCREEN_MIN_ENTRIES entries and SCREEN_MIN_QUERIES records a block
 * (below, the float scan is as fast: with the threshold as the screen's floor, coding pays from the
 * first panels; docs/MERGER.md). */
#define SCREEN_MIN_ENTRIES 64
#define SCREEN_MIN_QUERIES 16
/* The screen's first stage (merge_screen.c): rows and queries projected on MERGE_PREFIX_DIM
 * directions, int8-coded in panels of 16 rows (PREFIX_PANEL bytes); used from about
 * SCREEN_PREFIX_MIN_PAIRS (record, entry) pairs a merge call (below, the basis costs more than
 * it saves) and at dim >= 2 * MERGE_PREFIX_DIM. */
#define MERGE_PREFIX_DIM 64
#define PREFIX_PANEL (MERGE_PREFIX_DIM / 4 * 64)
#define SCREEN_PREFIX_MIN_PAIRS 262144.0
#define PREFIX_SAMPLE 512 /* rows the basis is drawn from */
typedef struct merge_screen {
    size_t n, cap;   /* rows coded (the index's slots 0..n), room (a multiple of 16) */
    size_t rstride;  /* bytes a row's codes take (dim rounded up to 64) */
    uint8_t *codes;  /* cap rows: code + 128 */
    double *scale;   /* per row: s, |x - s c| and |s c|, the last two rounded up */
    double *err, *nhat;
    /* the first stage (basis != NULL) */
    float *basis;    /* MERGE_PREFIX_DIM x dim, rows nearly orthonormal */
    double eta, gam; /* |B B^T - I| bound; projection error per unit of |x| */
    uint8_t *pcodes; /* cap / 16 panels [MERGE_PREFIX_DIM / 4][16 rows][4], code + 128 */
    float *pf;       /* cap / 16 panels [4][16]: scale and the bound's row terms */
} merge_screen;
CHRYS_PRIVATE int merge_screen_usable(const chrys_index *ix, size_t entries, size_t nq);
/* Code the rows added since the last call and recode those of the changed entries (ids). room:
 * the rows to make room for when it must grow (the entries this merge call can reach; less than
 * the index's rows: grown geometrically), so that a call allocates once. */
CHRYS_PRIVATE int merge_screen_sync(merge_screen *s, const chrys_index *ix, const uint64_t *changed, size_t n_changed,
                                    size_t room);
/* The k best entries of each unit query, by dot_f64 and then id, as the exact Flat scan gives them,
 * among those scoring at least floor (-INFINITY: all); fewer than k: the rest CHRYS_NO_ID.
 * merge_screen_search: the codes must be in sync (s->n == the index's rows); _sync_search first
 * does what merge_screen_sync does, on all cores as the search's first work items. */
CHRYS_PRIVATE int merge_screen_search(merge_screen *s, const chrys_index *ix, size_t nq, const float *q, size_t k,
                                      double floor, unsigned nt, uint64_t *ids, double *scores);
CHRYS_PRIVATE int merge_screen_sync_search(merge_screen *s, const chrys_index *ix, const uint64_t *changed,
                                           size_t n_changed, size_t room, size_t nq, const float *q, size_t k,
                                           double floor, unsigned nt, uint64_t *ids, double *scores);
CHRYS_PRIVATE void merge_screen_free(merge_screen *s);
/* Whether a merge call of about `pairs` (record, entry) pairs should draw a basis. */
CHRYS_PRIVATE int merge_screen_wants_basis(const merge_screen *s, uint32_t dim, double pairs);
/* Draw the first stage's basis from m rows, each taken as rows[i] / norms[i] (norms NULL: as they
 * are); any m >= 1. Every row is coded again at the next sync. */
CHRYS_PRIVATE int merge_screen_basis(merge_screen *s, const float *const *rows, const double *norms, size_t m,
                                     uint32_t dim);
/* Tests: the first stage -1 automatic, 0 never, 1 whenever the screen is used (any size). */
CHRYS_PRIVATE int merge__test_prefix(int mode);
/* Tests: pass[v] = whether the first stage keeps row v for unit query q against bar[v] (the
 * search's test, row by row). */
CHRYS_PRIVATE int merge__test_prefix_pass(const merge_screen *s, const chrys_index *ix, const float *q, const double *bar,
                                          unsigned char *pass);
/* Tests: -1 automatic (default), 0 never screen, 1 screen wherever it applies (any CPU, any size). */
CHRYS_PRIVATE int merge__test_screen(int mode);

struct chrys_merger {
    chrys_merge_opts opts;
    chrys_index *ix;      /* entries: id == entry number */
    size_t n_entries, cap;
    uint32_t *merged_count;
    float *drift;         /* radians the entry moved since it was last linked into the HNSW graph */
    uint64_t relinks;
    double *similarity;   /* NaN: never merged */
    uint64_t *first_record;
    /* record id -> entry, in merge order, plus a hash for duplicate detection */
    uint64_t *asn_rec, *asn_entry;
    size_t n_asn, cap_asn;
    idmap seen;           /* record id -> index into asn arrays */
    uint64_t records, merged, added, skipped;
    uint64_t (*hist)[5];
    size_t n_hist;
    uint64_t mark_records, mark_merged, mark_added, mark_skipped;
    uint64_t approx_records, confirmations, verified, disagreements;
    char *errmsg;
    chrys_errpos errpos; /* the structured part of errmsg (chrys_merger_get_error_info) */
};

/* merge.c */
/* Record a message on the handle; returns rc. */
CHRYS_PRIVATE int merger_fail(chrys_merger *m, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A failure of record i (id) of the batch: "record I (id ID): " + reason, i in the error info. */
CHRYS_PRIVATE int merger_fail_record(chrys_merger *m, int rc, size_t i, uint64_t id, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
CHRYS_PRIVATE int merger_check_opts(const chrys_merge_opts *o, char **msg);
CHRYS_PRIVATE chrys_merger *merger_alloc(const chrys_merge_opts *o);
/* The entries' index as the merger drives it (after creation, opening and configure). */
CHRYS_PRIVATE void merger_index_for_merging(chrys_merger *m);
/* Room for extra more entries / records in the per-entry and per-record arrays. */
CHRYS_PRIVATE int merger_reserve_entries(chrys_merger *m, size_t extra);
CHRYS_PRIVATE int merger_reserve_records(chrys_merger *m, size_t extra);

/* merge_meta.c (the merger's only use of cJSON) */
/* New metadata string (owned, chrys_ allocator) for entry meta `old` merged with record meta
 * `rec` by the variant's rule, or NULL when neither has metadata. *rc: CHRYS_CORRUPT when `old`
 * is not a JSON object, CHRYS_NOMEM on allocation failure. */
CHRYS_PRIVATE char *merger_merged_meta(const chrys_merger *m, const char *old, const char *rec, int *rc);
/* Whether json parses as a JSON object (a record's metadata must). */
CHRYS_PRIVATE int merger_meta_is_object(const char *json);

#endif

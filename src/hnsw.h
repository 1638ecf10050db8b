/*
 * hnsw.h: the HNSW graph of a chrys_index (kind CHRYS_INDEX_HNSW), private to the library.
 *
 * Nodes are the index's slots. Rows (float32 and/or SQ8 codes), ids, norms and metadata stay in
 * the chrys_index; the graph keeps only links and levels. A removed node becomes a tombstone
 * (ids[slot] == CHRYS_NO_ID): searches walk through it but never return it; hnsw_compact()
 * renumbers the live nodes densely and reclaims the space.
 */
#ifndef CHRYS_HNSW_H
#define CHRYS_HNSW_H

#include "index.h"

#include "chrys_limits.h" /* HNSW_DEFAULT_EFC, CHRYS_HNSW_DEFAULT_M, the caps on M and ef_construction */

#define HNSW_MAX_LEVEL 16
#define HNSW_MAX_M CHRYS_LIM_HNSW_MAX_M /* M cap (2 * M links at level 0): the loader's check and the build's stack lists */
#define HNSW_DEFAULT_EF 64

typedef struct hnsw hnsw;

CHRYS_PRIVATE int hnsw_create(chrys_index *ix, uint32_t M, uint32_t efc);
CHRYS_PRIVATE void hnsw_free(chrys_index *ix);
/* Grow the per-node arrays to cap nodes. */
CHRYS_PRIVATE int hnsw_reserve(chrys_index *ix, size_t cap);
/* Link slots [first, ix->n) into the graph. rows: their float32 rows (unit under cosine), row i
 * for slot first + i; trains SQ8 from them on the first add and encodes them. */
CHRYS_PRIVATE int hnsw_after_add(chrys_index *ix, size_t first, const float *rows);
/* Slot's row was replaced by v (unit under cosine): re-encode, repair the old neighbourhood, relink. */
CHRYS_PRIVATE int hnsw_update(chrys_index *ix, uint32_t slot, const float *v);
/* The float32 rows of these linked slots moved (merger; their codes already re-encoded): link
 * each again from where it is now, on all cores (build_threads): new out-links first, the old ones
 * kept after them while there is room, back-links from its new neighbours. Links to it from its
 * old neighbourhood stay. Fails (memory) before changing anything. */
CHRYS_PRIVATE int hnsw_relink(chrys_index *ix, const uint32_t *slots, size_t n);
/* Tombstone slot (its id is already unmapped): repair its neighbours, move the entry point. */
CHRYS_PRIVATE int hnsw_remove(chrys_index *ix, uint32_t slot);
CHRYS_PRIVATE int hnsw_compact(chrys_index *ix);
CHRYS_PRIVATE int hnsw_search(const chrys_index *ix, size_t nq, const float *q, size_t k, int use_thr, double thr,
                              unsigned n_threads, uint32_t ef, uint64_t *ids, double *scores,
                              const search_filter *filter);
CHRYS_PRIVATE size_t hnsw_memory(const chrys_index *ix);
CHRYS_PRIVATE void hnsw_params(const chrys_index *ix, uint32_t *M, uint32_t *efc, int *max_level);
/* The entry point's slot (CHRYS_NO_SLOT when empty); for tests. */
CHRYS_PRIVATE uint32_t hnsw_entry(const chrys_index *ix);

/* Persistence: sections HNSW (header), HNLV (levels), HNL0 (level-0 links), HNUP (upper links). */
#define HNSW_MAX_SECTIONS 4
CHRYS_PRIVATE int hnsw_store_sections(const chrys_index *ix, struct store_section *secs, uint32_t *ns,
                                      unsigned char *hdr /* 64 bytes */, unsigned char **up_out);
/* Read and check the HNSW header section into hdr (64 bytes); out: M and ef_construction, with
 * which the loader creates the graph before sizing any array. */
CHRYS_PRIVATE int hnsw_read_header(struct store_reader *r, unsigned char *hdr, uint32_t *M, uint32_t *efc, char **errmsg);
/* Load and check the graph (links in range, no self-links, degree and level caps, entry point)
 * into ix, created from that header. */
CHRYS_PRIVATE int hnsw_load(struct store_reader *r, const unsigned char *hdr, chrys_index *ix, char **errmsg);

#endif

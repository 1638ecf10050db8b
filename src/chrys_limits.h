/*
 * chrys_limits.h (not limits.h: -Isrc would shadow the C library's <limits.h>, which Python.h
 * and others include): the library's caps and defaults for index building, in one place. Private.
 *
 * A cap is the largest (or smallest) value any entry point accepts, the same for a spec, an
 * options struct and a store being loaded (so every store this library writes loads again). A
 * default is what 0 or an unnamed field means; each says why it has the value it has.
 */
#ifndef CHRYS_LIMITS_H
#define CHRYS_LIMITS_H

/* ---- Caps ---- */

/* IVF lists: spec "IVF<nlist>" and chrys_index_opts.nlist. */
#define CHRYS_LIM_IVF_MAX_NLIST (1u << 20)
/* HNSW links per node on the upper levels (level 0 keeps 2M): spec "HNSW<M>" and the store
 * loader's header check. hnsw.c sizes its per-insert link buffers as 2 * this. */
#define CHRYS_LIM_HNSW_MIN_M 2
#define CHRYS_LIM_HNSW_MAX_M 128
/* ef_construction: chrys_index_opts, chrys_merge_opts and the store loader's header check alike
 * (1,000,000: what chrys_index_new and the loader have always accepted, so no store already
 * written becomes unreadable; the merger accepted at most 100,000 until this header). */
#define CHRYS_LIM_HNSW_MAX_EFC 1000000u
/* The merger's ef_search (chrys_merge_opts.ef_search): candidates per walk. */
#define CHRYS_LIM_MERGE_MAX_EF_SEARCH 100000u

/* ---- Defaults ---- */

/* Spec "HNSW" without a number: M 32, the roadmap's FAISS_INDEX_TYPE=HNSW (FAISS's HNSW32). */
#define CHRYS_HNSW_DEFAULT_M 32
/* chrys_index_opts.kind = HNSW with no spec: M 16, the M every HNSW benchmark here is measured
 * at (bench/HNSW.md, against hnswlib and FAISS at M 16). */
#define CHRYS_HNSW_KIND_DEFAULT_M 16
/* ef_construction 0 for an index built by hand: 200, hnswlib's default, the value bench/HNSW.md
 * measures every HNSW point at (build time and recall@10 >= 0.95 against hnswlib and FAISS). */
#define HNSW_DEFAULT_EFC 200
/* ef_construction of the graph the planner builds for a merger store: 100, half the default,
 * because the graph is built and relinked during the merge itself (its cost is merge time) and
 * every decision it feeds is re-scored exactly, with exact confirmation near the threshold
 * (docs/MERGER.md); every merger figure (bench/MERGE_SCALE.md, beside FAISS IndexHNSWFlat at
 * efConstruction 100; docs/MERGER.md's choice of M 32) is measured at 100. No ef_construction
 * sweep for the merger is recorded: its decisions were tuned with M, ef_search and the margin. */
#define MERGE_HNSW_EFC 100
/* HNSW links per node of the merger's planned graph: 32 (16 gave 4x the disagreements with the
 * exact merger on the 1M stream's first 100k records, bench/MERGE_SCALE.md). */
#define MERGE_PLAN_M 32

/* The planner's IVF: at least 39 points per list (FAISS's min_points_per_centroid: it warns below
 * 39 training points per centroid), and nlist = clamp(sqrt(n), 16, 65536) below that cap (the
 * usual sqrt(n) rule; docs/INDEXES.md). */
#define IVF_MIN_POINTS_PER_LIST 39
#define IVF_PLAN_MIN_NLIST 16
#define IVF_PLAN_MAX_NLIST 65536

/* k-means: a sample of at most 256 points per centroid (FAISS's max_points_per_centroid), seeding
 * on at most 16 of them per centroid (greedy k-means++ costs trials x points x k distances; the
 * training time against FAISS's is in bench/IVF.md), 10 Lloyd iterations (FAISS trains IVF
 * quantizers with IndexIVF cp.niter = 10). */
#define KM_MAX_POINTS_PER_CENTROID 256
#define KM_INIT_POINTS_PER_CENTROID 16
#define KM_ITERS 10

#endif

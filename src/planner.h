/*
 * planner.h: the automatic planner (planner.c), private to the library.
 */
#ifndef CHRYS_PLANNER_H
#define CHRYS_PLANNER_H

#include "index.h"

#define IVF_MIN_POINTS_PER_LIST 39
#define MERGE_PLAN_M 32 /* HNSW links per node when the planner builds a graph for a merger store (16: 4x the
                           disagreements on the 1M stream's first 100k records, bench/MERGE_SCALE.md) */

/* Run the planner now (ix->planned): build the index it chooses for the current size. */
CHRYS_PRIVATE int index_replan(chrys_index *ix);
CHRYS_PRIVATE uint32_t ivf_plan_nlist(size_t n);

#endif

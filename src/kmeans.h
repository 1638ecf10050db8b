/*
 * kmeans.h: k-means for the IVF lists (kmeans.c), private to the library.
 */
#ifndef CHRYS_KMEANS_H
#define CHRYS_KMEANS_H

#include "chrys_limits.h" /* KM_MAX_POINTS_PER_CENTROID, KM_INIT_POINTS_PER_CENTROID, KM_ITERS */
#include "index.h"

/* k-means: nlist centroids of n rows; spherical under cosine/IP. Returns the objective (sum of
 * squared distances to the assigned centroid) through *objective when non-NULL. */
CHRYS_PRIVATE int kmeans_train(const float *x, size_t n, size_t dim, uint32_t k, int spherical, uint64_t seed,
                               int iters, unsigned n_threads, float *centroids, double *objective);
/* Nearest centroid of every row (out[n]); dist (optional): squared distance to it; c_sq: k floats
 * of scratch. All memory is taken first, so the only failure is CHRYS_NOMEM, before any work. */
CHRYS_PRIVATE int kmeans_assign(const float *x, size_t n, size_t dim, const float *c, size_t k, int spherical,
                                unsigned n_threads, uint32_t *out, float *dist, float *c_sq);

#endif

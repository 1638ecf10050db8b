/*
 * score.c: exact scores of chosen rows (chrys_index_score).
 *
 * The same quantity, to the last bit, that exact search and the merger compute for a row: under
 * cosine the query is scaled to unit length as flat search prepares it and dotted in double with
 * the stored unit row (the kernel table's dot_f64); under IP the plain dot_f64; under L2 l2sq_f64.
 * A distributed caller (chrysalis.distributed) uses it to compare candidates from different
 * shards, and entries changed during a batch, exactly as one process would.
 */
#include <math.h>

#include "index.h"
#include "kernels/dist.h"

int chrys_index_score(const chrys_index *ix, size_t nq, const float *queries, size_t m, const uint64_t *ids,
                      double *out)
{
    if (!ix || (nq && (!queries || (m && (!ids || !out))))) return CHRYS_INVALID;
    if (!index_has_floats(ix) || !ix->vecs) return CHRYS_INVALID; /* codes only: no exact rows */
    int rc = index_rows_ready(ix);
    if (rc) return rc;
    uint32_t dim = ix->dim;
    const chrys_kernels *kr = chrys_kernels_active();
    float *qn = chrys_malloc_aligned((size_t)dim * sizeof(float));
    if (!qn) return CHRYS_NOMEM;
    for (size_t i = 0; i < nq && !rc; i++) {
        const float *q = queries + i * dim;
        if (vec_first_nonfinite(q, dim) >= 0) {
            rc = CHRYS_INVALID;
            break;
        }
        const float *qq = q;
        if (ix->metric == CHRYS_METRIC_COSINE) {
            double nr = vec_norm(q, dim);
            if (nr == 0 || !isfinite(nr)) {
                rc = CHRYS_INVALID;
                break;
            }
            vec_scale_to(qn, q, dim, nr);
            qq = qn;
        }
        for (size_t j = 0; j < m; j++) {
            uint64_t id = ids[i * m + j];
            uint32_t slot = id == CHRYS_NO_ID ? CHRYS_NO_SLOT : index_slot_of(ix, id);
            if (slot == CHRYS_NO_SLOT) {
                rc = CHRYS_NOTFOUND;
                break;
            }
            const float *row = ix->vecs + (size_t)slot * dim;
            out[i * m + j] = ix->metric == CHRYS_METRIC_L2 ? kr->l2sq_f64(qq, row, dim) : kr->dot_f64(qq, row, dim);
        }
    }
    chrys_free_aligned(qn);
    return rc;
}

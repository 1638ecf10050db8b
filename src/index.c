/*
 * index.c: public entry points of chrys_index that create, mutate and inspect it.
 *
 * Every argument is checked here, once; the search kernels trust what they are given.
 * Mutations are all-or-nothing: a batch add validates every row and id before it touches the
 * index, and reserves all memory it needs before the first row is copied in.
 */
#include <math.h>
#include <stdio.h>
#include <sys/mman.h>

#include "hnsw.h"
#include "kernels/dist.h"
#include "index.h"
#include "planner.h"
#include "spec.h"
#include "sq8.h"

int index_fail(chrys_index *ix, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    chrys_fail_v(&ix->errmsg, &ix->errpos, rc, -1, NULL, fmt, ap);
    va_end(ap);
    index_search_msg_forget(ix); /* this message is the newer one */
    return rc;
}

int index_fail_row(chrys_index *ix, int rc, size_t row, const char *fmt, ...)
{
    char prefix[40];
    snprintf(prefix, sizeof prefix, "row %zu: ", row);
    va_list ap;
    va_start(ap, fmt);
    chrys_fail_v(&ix->errmsg, &ix->errpos, rc, (int64_t)row, prefix, fmt, ap);
    va_end(ap);
    index_search_msg_forget(ix); /* this message is the newer one */
    return rc;
}

int index_check_writable(chrys_index *ix)
{
    if (!ix->read_only) return CHRYS_OK;
    return index_fail(ix, CHRYS_INVALID, "the index is read-only (opened with chrys_index_open_mmap): load it to change it");
}

const char *chrys_index_errmsg(const chrys_index *ix)
{
    const char *s = index_search_msg(ix); /* this thread's failing search (search.c) */
    if (s) return s;
    return ix && ix->errmsg ? ix->errmsg : "";
}

int chrys_index_get_error_info(const chrys_index *ix, chrys_error_info *info)
{
    return ix ? chrys_error_info_fill(ix->errmsg, &ix->errpos, info) : CHRYS_INVALID;
}

void chrys_index_opts_init(chrys_index_opts *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->metric = CHRYS_METRIC_COSINE;
    o->kind = CHRYS_INDEX_FLAT;
    o->seed = 42;
}

void chrys_search_opts_init(chrys_search_opts *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->k = 10;
}

int index_create(uint32_t dim, chrys_metric metric, chrys_index_kind kind, uint64_t seed, uint32_t hnsw_m,
                 uint32_t efc, chrys_index **out, char **errmsg)
{
    *out = NULL;
    if (dim < 1 || dim > CHRYS_MAX_DIM)
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "dim %u out of range 1..%d", dim,
                                CHRYS_MAX_DIM);
    if ((unsigned)metric > CHRYS_METRIC_L2)
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "unknown metric %d", (int)metric);
    if ((unsigned)kind > CHRYS_INDEX_HNSW)
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "unknown index kind %d", (int)kind);
    chrys_index *ix = chrys_calloc(1, sizeof *ix);
    if (!ix || idmap_init(&ix->map, 16)) {
        chrys_free(ix);
        return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "out of memory creating index");
    }
    ix->dim = dim;
    ix->metric = metric;
    ix->kind = kind;
    ix->seed = seed;
    ix->auto_threshold = 1000;
    ix->want_nlist = kind == CHRYS_INDEX_IVF ? 64 : 0;
    if (kind == CHRYS_INDEX_HNSW && hnsw_create(ix, hnsw_m, efc)) {
        idmap_free(&ix->map);
        chrys_free(ix);
        return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "out of memory creating index");
    }
    *out = ix;
    return CHRYS_OK;
}

int chrys_index_new(const chrys_index_opts *opts, chrys_index **out, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!out) return CHRYS_INVALID;
    *out = NULL;
    chrys_index_opts full; /* the caller's fields over the defaults (a shorter struct: older header) */
    chrys_index_opts_init(&full);
    if (chrys_struct_in(&full, sizeof full, opts, offsetof(chrys_index_opts, seed) + sizeof(uint64_t)))
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "opts missing or struct_size too small");
    opts = &full;
    chrys_index_kind kind = opts->kind;
    chrys_index_spec sp = {sizeof sp, kind};
    int rc;
    int has_spec = opts->struct_size >= offsetof(chrys_index_opts, memory_budget) + sizeof(uint64_t);
    if (has_spec && opts->spec && (rc = index_spec_parse(opts->spec, &sp, errmsg))) return rc;
    kind = sp.kind;
    uint32_t nlist = sp.nlist;
    int is_auto = sp.is_auto;
    uint32_t efc = 0, hnsw_m = 0;
    int has_efc = opts->struct_size >= offsetof(chrys_index_opts, build_threads) + sizeof(uint32_t);
    /* opts.nlist: the list count of an IVF spec that names none (IVFFlat); 0 = the planner's */
    uint32_t opt_nlist = opts->struct_size >= offsetof(chrys_index_opts, nlist) + sizeof(uint32_t) ? opts->nlist : 0;
    if (opt_nlist > CHRYS_LIM_IVF_MAX_NLIST)
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "nlist %u out of range 0..%u", opt_nlist, CHRYS_LIM_IVF_MAX_NLIST);
    if (kind == CHRYS_INDEX_IVF && opt_nlist && nlist && nlist != opt_nlist)
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec '%s' names %u lists but nlist is %u", opts->spec,
                                nlist, opt_nlist);
    if (kind == CHRYS_INDEX_IVF && !nlist) nlist = opt_nlist;
    int nlist_from_planner = has_spec && opts->spec && kind == CHRYS_INDEX_IVF && !nlist;
    if (kind == CHRYS_INDEX_HNSW) {
        hnsw_m = sp.hnsw_m ? sp.hnsw_m : CHRYS_HNSW_KIND_DEFAULT_M;
        efc = has_efc ? opts->ef_construction : 0;
        if (efc > CHRYS_LIM_HNSW_MAX_EFC)
            return chrys_set_errmsg(errmsg, CHRYS_INVALID, "ef_construction %u out of range 0..%u", efc,
                                    CHRYS_LIM_HNSW_MAX_EFC);
    }
    if ((rc = index_create(opts->dim, opts->metric, kind, opts->seed, hnsw_m, efc, out, errmsg))) return rc;
    chrys_index *ix = *out;
    ix->sq8 = sp.sq8;
    ix->refine = sp.refine; /* ",RFlat" keeps float32 rows beside the codes */
    ix->planned = is_auto;
    ix->build_threads = has_efc ? opts->build_threads : 0;
    if (nlist) ix->want_nlist = nlist;
    if (nlist_from_planner) ix->want_nlist = 0; /* IVFFlat: ivf_plan_nlist(n) when it trains */
    if (has_spec) {
        if (opts->auto_threshold) ix->auto_threshold = opts->auto_threshold;
        ix->memory_budget = opts->memory_budget;
    }
    if (is_auto)
        snprintf(ix->plan_reason, sizeof ix->plan_reason, "fewer than %llu vectors: exact Flat search",
                 (unsigned long long)ix->auto_threshold);
    return CHRYS_OK;
}

void chrys_index_free(chrys_index *ix)
{
    if (!ix) return;
    index_search_msg_forget(ix);
    if (ix->meta)
        for (size_t i = 0; i < ix->n; i++) chrys_free(ix->meta[i]);
    chrys_free(ix->meta);
    if (ix->map_base) munmap(ix->map_base, ix->map_len); /* vecs pointed into it */
    else chrys_free_aligned(ix->vecs);
    if (!ix->ids_in_map) {
        chrys_free(ix->norms);
        chrys_free(ix->ids);
    }
    idmap_free(&ix->map);
    hnsw_free(ix);
    ivf_free_lists(ix);
    sq8_free(ix);
    chrys_free(ix->errmsg);
    chrys_free(ix->rows_msg);
    chrys_free(ix->rows_name);
    chrys_free(ix);
}

int index_reserve(chrys_index *ix, size_t extra)
{
    size_t need;
    if (chrys_add_size(ix->n, extra, &need) || need > CHRYS_MAX_SLOTS)
        return index_fail(ix, CHRYS_LIMIT, "index would hold more than %u vectors", CHRYS_MAX_SLOTS);
    /* A store being opened read-only (mapped) gets exactly its rows, and its id map only if
     * check_rows finds the ids out of order: it never grows. */
    if (need <= ix->cap) return ix->read_only ? CHRYS_OK : idmap_reserve(&ix->map, need);
    size_t cap = ix->read_only ? need : chrys_grow_cap(ix->cap, need, 64);
    if (cap > CHRYS_MAX_SLOTS) cap = CHRYS_MAX_SLOTS;
    size_t vbytes, old_vbytes;
    if (chrys_mul_size(cap, (size_t)ix->dim * sizeof(float), &vbytes))
        return index_fail(ix, CHRYS_LIMIT, "index size overflows");
    old_vbytes = ix->n * (size_t)ix->dim * sizeof(float);
    if (index_has_floats(ix) && !ix->map_base) { /* mapped rows stay in the file */
        float *v = chrys_realloc_aligned(ix->vecs, old_vbytes, vbytes);
        if (!v) return index_fail(ix, CHRYS_NOMEM, "out of memory growing index to %zu vectors", cap);
        ix->vecs = v;
    }
    if (!(ix->read_only && ix->map_base)) { /* else ids and norms are read in place too (load_rows) */
        float *nr = chrys_realloc(ix->norms, cap * sizeof *nr);
        if (!nr) return index_fail(ix, CHRYS_NOMEM, "out of memory growing index");
        ix->norms = nr;
        uint64_t *ids = chrys_realloc(ix->ids, cap * sizeof *ids);
        if (!ids) return index_fail(ix, CHRYS_NOMEM, "out of memory growing index");
        ix->ids = ids;
    }
    if (!ix->read_only) { /* read-only: allocated only if the store has metadata (load_mdat) */
        char **meta = chrys_realloc(ix->meta, cap * sizeof *meta);
        if (!meta) return index_fail(ix, CHRYS_NOMEM, "out of memory growing index");
        ix->meta = meta;
    }
    if (ivf_reserve(ix, cap) || sq8_reserve(ix, cap) || hnsw_reserve(ix, cap)) return index_fail(ix, CHRYS_NOMEM, "out of memory growing index");
    ix->cap = cap;
    if (!ix->read_only && idmap_reserve(&ix->map, need)) return index_fail(ix, CHRYS_NOMEM, "out of memory");
    return CHRYS_OK;
}

uint32_t index_slot_of(const chrys_index *ix, uint64_t id)
{
    if (!ix->ids_sorted) return idmap_get(&ix->map, id);
    size_t lo = 0, hi = ix->n; /* ids[lo..hi) may hold id */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ix->ids[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < ix->n && ix->ids[lo] == id ? (uint32_t)lo : CHRYS_NO_SLOT;
}

/* Validate one input row; on success *norm is its L2 norm. 'what' labels messages. */
static int check_row(chrys_index *ix, const float *v, size_t row, double *norm)
{
    /* one pass: the sum of squares (in double, where no float squared overflows) is finite
     * exactly when every component is; the bad component is looked for only then */
    *norm = vec_norm(v, ix->dim);
    long bad = isfinite(*norm) ? -1 : vec_first_nonfinite(v, ix->dim);
    if (bad >= 0)
        return index_fail_row(ix, CHRYS_INVALID, row, "component %ld is %s", bad,
                          isnan(v[bad]) ? "NaN" : "infinite");
    if (!isfinite(*norm))
        return index_fail_row(ix, CHRYS_INVALID, row, "norm overflows float range");
    if (ix->metric == CHRYS_METRIC_COSINE && *norm == 0)
        return index_fail_row(ix, CHRYS_INVALID, row, "zero vector has no cosine similarity");
    return CHRYS_OK;
}

/* Store row v at slot (dst: where the float32 row goes; the index's own array unless an
 * SQ8-only HNSW index takes it into a temporary for encoding). */
static void store_row_to(chrys_index *ix, float *dst, size_t slot, const float *v, double norm)
{
    if (ix->metric == CHRYS_METRIC_COSINE) vec_scale_to(dst, v, ix->dim, norm);
    else memcpy(dst, v, ix->dim * sizeof(float));
    ix->norms[slot] = (float)norm;
}

static void store_row(chrys_index *ix, size_t slot, const float *v, double norm)
{
    store_row_to(ix, ix->vecs + slot * ix->dim, slot, v, norm);
}

/* Take back rows [first, ix->n) of a batch whose linking failed. */
static void unadd(chrys_index *ix, size_t first)
{
    for (size_t s = first; s < ix->n; s++) {
        idmap_del(&ix->map, ix->ids[s]);
        chrys_free(ix->meta[s]);
        ix->meta[s] = NULL;
    }
    ix->n = first;
}

/* chrys_index_add; with unlinked, new HNSW rows wait for index_link_pending. */
/* unit_norms: the rows are already as stored (cosine: vecs scaled to unit length by vec_scale_to
 * with these norms, which vec_norm gave for finite, non-zero rows), so they are not checked or
 * scaled again (the merger's appended records, checked and scaled when its block was prepared). */
static int add_rows(chrys_index *ix, size_t n, const uint64_t *ids, const float *vecs, const char *const *meta,
                    int unlinked, const double *unit_norms)
{
    if (!ix) return CHRYS_INVALID;
    if (index_check_writable(ix)) return CHRYS_INVALID;
    if (n == 0) return CHRYS_OK;
    if (!ids || !vecs) return index_fail(ix, CHRYS_INVALID, "ids and vecs must not be NULL");
    int rc;
    float *tmp = NULL;
    double *norms = chrys_malloc(n * sizeof *norms);
    char **copies = meta ? chrys_calloc(n, sizeof *copies) : NULL;
    idmap batch = {0};
    if (!norms || (meta && !copies) || (n > 1 && idmap_init(&batch, n))) { /* one row: no duplicates within */
        rc = index_fail(ix, CHRYS_NOMEM, "out of memory adding %zu vectors", n);
        goto done;
    }
    /* Pass 1: check everything; nothing is modified. */
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == CHRYS_NO_ID) {
            rc = index_fail_row(ix, CHRYS_INVALID, i, "id %llu is reserved", (unsigned long long)ids[i]);
            goto done;
        }
        if (idmap_get(&ix->map, ids[i]) != CHRYS_NO_SLOT) {
            rc = index_fail_row(ix, CHRYS_EXISTS, i, "duplicate id %llu (already in the index)",
                                (unsigned long long)ids[i]);
            goto done;
        }
        uint32_t prev = n > 1 ? idmap_get(&batch, ids[i]) : CHRYS_NO_SLOT;
        if (prev != CHRYS_NO_SLOT) {
            rc = index_fail_row(ix, CHRYS_EXISTS, i, "duplicate id %llu (also row %u of this batch)",
                                (unsigned long long)ids[i], prev);
            goto done;
        }
        if (n > 1 && (rc = idmap_put(&batch, ids[i], (uint32_t)i))) {
            rc = index_fail(ix, rc, "out of memory adding %zu vectors", n);
            goto done;
        }
        if (unit_norms) norms[i] = unit_norms[i];
        else if ((rc = check_row(ix, vecs + i * ix->dim, i, &norms[i]))) goto done;
        if (meta && meta[i]) {
            size_t len = strlen(meta[i]);
            if (len > CHRYS_MAX_META_BYTES) {
                rc = index_fail_row(ix, CHRYS_LIMIT, i, "metadata of %zu bytes exceeds %u", len, CHRYS_MAX_META_BYTES);
                goto done;
            }
            if (!(copies[i] = chrys_strdup(meta[i]))) {
                rc = index_fail(ix, CHRYS_NOMEM, "out of memory copying metadata");
                goto done;
            }
        }
    }
    if ((rc = index_reserve(ix, n))) goto done;
    size_t first = ix->n;
    int is_hnsw = ix->kind == CHRYS_INDEX_HNSW, codes_only = !index_has_floats(ix);
    if (codes_only && !(tmp = chrys_malloc_aligned(n * (size_t)ix->dim * sizeof(float)))) {
        rc = index_fail(ix, CHRYS_NOMEM, "out of memory adding %zu vectors", n);
        goto done;
    }
    /* Pass 2: cannot fail (all memory reserved). */
    for (size_t i = 0; i < n; i++) {
        size_t slot = ix->n++;
        float *dst = tmp ? tmp + i * ix->dim : ix->vecs + slot * ix->dim;
        if (unit_norms) {
            memcpy(dst, vecs + i * ix->dim, ix->dim * sizeof(float));
            ix->norms[slot] = (float)norms[i];
        } else store_row_to(ix, dst, slot, vecs + i * ix->dim, norms[i]);
        ix->ids[slot] = ids[i];
        ix->meta[slot] = copies ? copies[i] : NULL;
        if (copies) copies[i] = NULL;
        idmap_put(&ix->map, ids[i], (uint32_t)slot);
    }
    if (codes_only && ix->kind == CHRYS_INDEX_FLAT) { /* Flat kept as codes: ranges from the first batch, then encode */
        if (!ix->sq_min && (rc = sq8_train(ix, tmp, n))) {
            unadd(ix, first);
            rc = index_fail(ix, rc, "out of memory adding %zu vectors", n);
            goto done;
        }
        for (size_t i = 0; i < n; i++) sq8_encode(ix, first + i, tmp + i * ix->dim);
        rc = CHRYS_OK;
        goto done;
    }
    if (is_hnsw && unlinked && !tmp) { /* linked later, by index_link_pending */
        ix->pending += n;
        goto done;
    }
    if (is_hnsw) { /* the graph: all or nothing too */
        if ((rc = hnsw_after_add(ix, first, tmp ? tmp : ix->vecs + first * ix->dim))) {
            unadd(ix, first);
            rc = index_fail(ix, rc, "out of memory linking %zu vectors", n);
        }
        goto done;
    }
    /* IVF lists, SQ8 codes and the planner: all or nothing as well (planner_after_add changes
     * nothing when it fails), so the rows come out again. A trained codes-only IVF index encodes
     * and assigns from the temporary copy. */
    if ((rc = planner_after_add(ix, first, tmp ? tmp : ix->vecs + first * ix->dim))) unadd(ix, first);
done:
    chrys_free_aligned(tmp);
    if (copies)
        for (size_t i = 0; i < n; i++) chrys_free(copies[i]);
    chrys_free(copies);
    chrys_free(norms);
    idmap_free(&batch);
    return rc;
}

int chrys_index_add(chrys_index *ix, size_t n, const uint64_t *ids, const float *vecs,
                    const char *const *meta)
{
    return add_rows(ix, n, ids, vecs, meta, 0, NULL);
}

int index_add_unlinked(chrys_index *ix, size_t n, const uint64_t *ids, const float *vecs, const char *const *meta)
{
    return add_rows(ix, n, ids, vecs, meta, 1, NULL);
}

int index_add_unit_unlinked(chrys_index *ix, uint64_t id, const float *unit, double norm, const char *meta)
{
    if (!ix || ix->metric != CHRYS_METRIC_COSINE) return CHRYS_INVALID;
    const char *m[1] = {meta};
    return add_rows(ix, 1, &id, unit, m, 1, &norm);
}

int index_link_pending(chrys_index *ix)
{
    if (!ix->pending) return CHRYS_OK;
    size_t first = ix->n - ix->pending;
    int rc = hnsw_after_add(ix, first, ix->vecs + first * ix->dim);
    if (rc) return index_fail(ix, rc, "out of memory linking %zu vectors", ix->pending);
    ix->pending = 0;
    return CHRYS_OK;
}

void index_set_meta(chrys_index *ix, uint32_t slot, char *owned_json)
{
    chrys_free(ix->meta[slot]);
    ix->meta[slot] = owned_json;
}

void index_set_build_threads(chrys_index *ix, uint32_t n_threads) { ix->build_threads = n_threads; }

int index_update_keep_links(chrys_index *ix, uint32_t slot, const float *vec)
{
    if (ix->kind != CHRYS_INDEX_HNSW || !ix->vecs) return chrys_index_update(ix, ix->ids[slot], vec);
    double norm = vec_norm(vec, ix->dim);
    store_row(ix, slot, vec, norm);
    if (ix->sq8 && ix->sq_min && slot < ix->n - ix->pending) sq8_encode(ix, slot, ix->vecs + (size_t)slot * ix->dim);
    return CHRYS_OK;
}

int chrys_index_remove(chrys_index *ix, uint64_t id)
{
    if (!ix) return CHRYS_INVALID;
    if (index_check_writable(ix)) return CHRYS_INVALID;
    uint32_t slot = idmap_get(&ix->map, id);
    if (slot == CHRYS_NO_SLOT)
        return index_fail(ix, CHRYS_NOTFOUND, "id %llu not found", (unsigned long long)id);
    if (ix->kind == CHRYS_INDEX_HNSW) {
        int rc = hnsw_remove(ix, slot); /* fails (memory) before changing anything */
        if (rc) return index_fail(ix, rc, "out of memory removing id %llu", (unsigned long long)id);
        idmap_del(&ix->map, id);
        chrys_free(ix->meta[slot]);
        ix->meta[slot] = NULL;
        ix->n_dead++;
        if (ix->n_dead >= 64 && ix->n_dead * 2 >= ix->n) hnsw_compact(ix); /* on failure the tombstones stay */
        return CHRYS_OK;
    }
    size_t last = ix->n - 1;
    ivf_before_remove(ix, slot, (uint32_t)last);
    sq8_move(ix, slot, (uint32_t)last);
    idmap_del(&ix->map, id);
    chrys_free(ix->meta[slot]);
    if (slot != last) {
        if (ix->vecs) memcpy(ix->vecs + (size_t)slot * ix->dim, ix->vecs + last * ix->dim, ix->dim * sizeof(float));
        ix->norms[slot] = ix->norms[last];
        ix->ids[slot] = ix->ids[last];
        ix->meta[slot] = ix->meta[last];
        idmap_put(&ix->map, ix->ids[slot], slot); /* key exists: no growth, cannot fail */
    }
    ix->n--;
    return CHRYS_OK;
}

int chrys_index_update(chrys_index *ix, uint64_t id, const float *vec)
{
    if (!ix || !vec) return CHRYS_INVALID;
    if (index_check_writable(ix)) return CHRYS_INVALID;
    uint32_t slot = idmap_get(&ix->map, id);
    if (slot == CHRYS_NO_SLOT)
        return index_fail(ix, CHRYS_NOTFOUND, "id %llu not found", (unsigned long long)id);
    double norm;
    int rc = check_row(ix, vec, 0, &norm);
    if (rc) return rc;
    if (ix->kind == CHRYS_INDEX_HNSW) {
        size_t dim = ix->dim;
        float *tmp = chrys_malloc_aligned(2 * dim * sizeof(float)), old_norm = ix->norms[slot];
        if (!tmp) return index_fail(ix, CHRYS_NOMEM, "out of memory updating id %llu", (unsigned long long)id);
        float *row = ix->vecs ? ix->vecs + (size_t)slot * dim : tmp;
        if (ix->vecs) memcpy(tmp + dim, row, dim * sizeof(float));
        store_row_to(ix, row, slot, vec, norm);
        if ((rc = hnsw_update(ix, slot, row))) { /* fails (memory) before the graph changes */
            if (ix->vecs) memcpy(row, tmp + dim, dim * sizeof(float));
            ix->norms[slot] = old_norm;
            rc = index_fail(ix, rc, "out of memory updating id %llu", (unsigned long long)id);
        }
        chrys_free_aligned(tmp);
        return rc;
    }
    /* Flat, SQ8 and IVF: the new row is made in a scratch copy, the codes and lists take it (all
     * or nothing: ivf_after_update changes nothing when it fails), and only then does it replace
     * the stored row, if rows are kept. */
    float *tmp = chrys_malloc_aligned(ix->dim * sizeof(float)), old_norm = ix->norms[slot];
    if (!tmp) return index_fail(ix, CHRYS_NOMEM, "out of memory updating id %llu", (unsigned long long)id);
    store_row_to(ix, tmp, slot, vec, norm);
    if ((rc = ivf_after_update(ix, slot, tmp))) {
        ix->norms[slot] = old_norm;
        rc = index_fail(ix, rc, "out of memory updating id %llu", (unsigned long long)id);
    } else if (ix->vecs) {
        memcpy(ix->vecs + (size_t)slot * ix->dim, tmp, ix->dim * sizeof(float));
    }
    chrys_free_aligned(tmp);
    return rc;
}

int chrys_index_compact(chrys_index *ix)
{
    if (!ix) return CHRYS_INVALID;
    if (index_check_writable(ix)) return CHRYS_INVALID;
    if (ix->kind != CHRYS_INDEX_HNSW) return CHRYS_OK;
    int rc = hnsw_compact(ix);
    return rc ? index_fail(ix, rc, "out of memory compacting") : CHRYS_OK;
}

void chrys_index_set_progress(chrys_index *ix, void (*fn)(uint64_t, uint64_t, void *), void *ctx)
{
    if (!ix) return;
    ix->progress = fn;
    ix->progress_ctx = ctx;
}

int chrys_index_get(const chrys_index *ix, uint64_t id, float *out)
{
    if (!ix || !out) return CHRYS_INVALID;
    uint32_t slot = index_slot_of(ix, id);
    if (slot == CHRYS_NO_SLOT) return CHRYS_NOTFOUND;
    int rc = index_rows_ready(ix);
    if (rc) return rc;
    const float *src = ix->vecs + (size_t)slot * ix->dim;
    if (!ix->vecs) { /* SQ8 only: the decoded codes */
        sq8_decode(ix, slot, out);
        src = out;
    }
    if (ix->metric == CHRYS_METRIC_COSINE) {
        chrys_kernels_active()->mul(out, src, ix->norms[slot], ix->dim); /* (float)(src[i] * norm) */
    } else {
        memcpy(out, src, ix->dim * sizeof(float));
    }
    return CHRYS_OK;
}

int chrys_index_get_meta(const chrys_index *ix, uint64_t id, const char **meta)
{
    if (!ix || !meta) return CHRYS_INVALID;
    *meta = NULL;
    uint32_t slot = index_slot_of(ix, id);
    if (slot == CHRYS_NO_SLOT) return CHRYS_NOTFOUND;
    *meta = ix->meta ? ix->meta[slot] : NULL;
    return CHRYS_OK;
}

int chrys_index_contains(const chrys_index *ix, uint64_t id)
{
    return ix && index_slot_of(ix, id) != CHRYS_NO_SLOT;
}

int chrys_index_get_ids(const chrys_index *ix, uint64_t *out, size_t cap, size_t *n_out)
{
    if (!ix || !n_out || (!out && cap)) return CHRYS_INVALID;
    *n_out = ix->n - ix->n_dead;
    if (!out) return CHRYS_OK; /* the count only */
    if (cap < *n_out) return CHRYS_LIMIT_CAPACITY;
    if (!ix->n_dead) {
        if (ix->n) memcpy(out, ix->ids, ix->n * sizeof *out);
        return CHRYS_OK;
    }
    for (size_t s = 0, j = 0; s < ix->n; s++)
        if (ix->ids[s] != CHRYS_NO_ID) out[j++] = ix->ids[s];
    return CHRYS_OK;
}

int chrys_index_get_info(const chrys_index *ix, chrys_index_info *info)
{
    if (!ix || !info) return CHRYS_INVALID;
    chrys_index_info full;
    memset(&full, 0, sizeof full);
    full.struct_size = sizeof full;
    full.dim = ix->dim;
    full.metric = ix->metric;
    full.kind = ix->kind;
    full.count = ix->n - ix->n_dead;
    full.seed = ix->seed;
    size_t vbytes = (ix->vecs && !ix->map_base ? ix->cap * (size_t)ix->dim * sizeof(float) : 0) +
                    (ix->codes ? ix->cap * (size_t)ix->dim : 0);
    size_t bytes = sizeof *ix + vbytes + (ix->ids_in_map ? 0 : ix->cap * (sizeof(float) + sizeof(uint64_t))) +
                   (ix->meta ? ix->cap * sizeof(char *) : 0) + idmap_bytes(&ix->map) + hnsw_memory(ix);
    for (size_t i = 0; ix->meta && i < ix->n; i++)
        if (ix->meta[i]) bytes += strlen(ix->meta[i]) + 1;
    if (ix->list_of) bytes += ix->cap * 2 * sizeof(uint32_t) + (size_t)ix->nlist * ix->dim * sizeof(float);
    for (uint32_t l = 0; ix->lists && l < ix->nlist; l++) bytes += ix->list_cap[l] * sizeof(uint32_t);
    if (ix->sq_csq) bytes += ix->cap * sizeof(float);
    full.memory_bytes = bytes;
    full.nlist = ix->nlist;
    full.sq8 = ix->sq8;
    full.planned = ix->planned;
    full.imbalance = ivf_imbalance(ix);
    full.drift = ix->train_imbalance > 0 ? full.imbalance / ix->train_imbalance : 1.0;
    full.trained_on = ix->trained_on;
    index_spec_string(ix, full.spec, sizeof full.spec);
    snprintf(full.plan_reason, sizeof full.plan_reason, "%s", ix->plan_reason);
    full.vector_bytes = vbytes;
    full.mapped_bytes = ix->map_base ? ix->map_len : 0;
    full.deleted = ix->n_dead;
    full.max_level = -1;
    if (ix->hnsw) {
        int ml;
        hnsw_params(ix, &full.hnsw_m, &full.ef_construction, &ml);
        full.max_level = ml;
    }
    return chrys_struct_out(info, &full, sizeof full);
}

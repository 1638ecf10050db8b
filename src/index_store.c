/*
 * index_store.c: save and load a chrys_index through the single-file store.
 *
 * Sections written: META (dim, metric, kind, count, seed), IDS_ (u64 per row), NORM (f32 per
 * row), VF32 (rows, f32), and MDAT when any row has metadata. The loader derives every expected
 * section length from META with checked arithmetic and compares it with the table before it
 * allocates, so a header that claims a huge count cannot cause a huge allocation: the length
 * must also fit in the file. After reading, it checks what a checksum cannot: ids unique, values
 * finite, cosine rows of unit length, metadata offsets in order.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hnsw.h"
#include "index.h"
#include "kernels/dist.h"
#include "sq8.h"
#include "store/codec.h"
#include "store/store.h"

void index_sections_free(index_sections *s)
{
    chrys_free(s->mdat);
    chrys_free(s->hnsw_up);
    s->mdat = s->hnsw_up = NULL;
}

int index_store_sections(const chrys_index *ix, index_sections *out)
{
    unsigned char *meta = out->meta, *plan = out->plan;
    store_section *secs = out->secs;
    unsigned char **mdat_out = &out->mdat;
    out->mdat = out->hnsw_up = NULL;
    memset(meta, 0, META_SIZE);
    put_u32le(meta + META_DIM, ix->dim);
    put_u32le(meta + META_METRIC, (uint32_t)ix->metric);
    put_u32le(meta + META_KIND, (uint32_t)ix->kind);
    put_u64le(meta + META_COUNT, ix->n);
    put_u64le(meta + META_SEED, ix->seed);
    uint32_t n = 0;
    secs[n++] = (store_section){TAG_META, 0, meta, META_SIZE};
    secs[n++] = (store_section){TAG_IDS, 0, ix->ids, ix->n * sizeof(uint64_t)};
    secs[n++] = (store_section){TAG_NORM, 0, ix->norms, ix->n * sizeof(float)};
    secs[n++] = (store_section){TAG_VF32, 0, ix->vecs, ix->vecs ? ix->n * (uint64_t)ix->dim * sizeof(float) : 0};
    /* MDAT: (n+1) u64 offsets into the string bytes that follow; empty = no metadata. */
    *mdat_out = NULL;
    size_t total = 0;
    for (size_t i = 0; ix->meta && i < ix->n; i++)
        if (ix->meta[i]) total += strlen(ix->meta[i]);
    if (total > 0) {
        size_t len = (ix->n + 1) * 8 + total;
        unsigned char *mdat = chrys_malloc(len);
        if (!mdat) return CHRYS_NOMEM;
        size_t off = 0;
        unsigned char *bytes = mdat + (ix->n + 1) * 8;
        for (size_t i = 0; i < ix->n; i++) {
            put_u64le(mdat + i * 8, off);
            if (ix->meta[i]) { /* total > 0: meta is there */
                size_t l = strlen(ix->meta[i]);
                memcpy(bytes + off, ix->meta[i], l);
                off += l;
            }
        }
        put_u64le(mdat + ix->n * 8, off);
        secs[n++] = (store_section){TAG_MDAT, 0, mdat, len};
        *mdat_out = mdat;
    }
    /* PLAN, and the IVF / SQ8 structures when present. */
    memset(plan, 0, PLAN_SIZE);
    put_u32le(plan + PLAN_FLAGS, (ix->planned ? 1u : 0u) | (ix->sq8 ? 2u : 0u) | (ix->refine ? 4u : 0u));
    put_u32le(plan + PLAN_NLIST, ix->nlist);
    put_u32le(plan + PLAN_WANT_NLIST, ix->want_nlist);
    put_u64le(plan + PLAN_THRESHOLD, ix->auto_threshold);
    put_u64le(plan + PLAN_BUDGET, ix->memory_budget);
    put_u64le(plan + PLAN_TRAINED_ON, ix->trained_on);
    put_f64le(plan + PLAN_TRAIN_IMBAL, ix->train_imbalance);
    memcpy(plan + PLAN_REASON, ix->plan_reason, strnlen(ix->plan_reason, 159));
    if (ix->planned || ix->kind != CHRYS_INDEX_FLAT || ix->sq8) /* a plain Flat store has no PLAN */
        secs[n++] = (store_section){TAG_PLAN, 0, plan, PLAN_SIZE};
    if (ix->nlist) {
        secs[n++] = (store_section){TAG_IVFC, 0, ix->centroids, (uint64_t)ix->nlist * ix->dim * sizeof(float)};
        secs[n++] = (store_section){TAG_IVFL, 0, ix->list_of, ix->n * sizeof(uint32_t)};
    }
    if (ix->sq8 && ix->sq_min) {
        secs[n++] = (store_section){TAG_SQ8P, 0, ix->sq_min, ix->dim * sizeof(float)};
        secs[n++] = (store_section){TAG_TQ8P, 0, ix->sq_step, ix->dim * sizeof(float)};
        secs[n++] = (store_section){TAG_VSQ8, 0, ix->codes, ix->n * (uint64_t)ix->dim};
    }
    if (ix->hnsw) {
        uint32_t nh;
        if (hnsw_store_sections(ix, secs + n, &nh, out->hnsw_hdr, &out->hnsw_up)) {
            index_sections_free(out);
            return CHRYS_NOMEM;
        }
        n += nh;
    }
    out->n = n;
    return CHRYS_OK;
}

int chrys_index_save(const chrys_index *ix, const char *path, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!ix || !path) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index and path are required");
    int rc = index_rows_ready(ix); /* a damaged row must not get a fresh checksum */
    if (rc) return chrys_set_errmsg(errmsg, rc, "%s", index_rows_msg(ix));
    store_section secs[INDEX_MAX_SECTIONS];
    index_sections is = {secs};
    if (index_store_sections(ix, &is)) return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", path);
    rc = store_write(path, secs, is.n, errmsg);
    index_sections_free(&is);
    return rc;
}

int chrys_index_save_buffer(const chrys_index *ix, void **buf, size_t *size, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (buf) *buf = NULL;
    if (size) *size = 0;
    if (!ix || !buf || !size) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index, buf and size are required");
    int rc = index_rows_ready(ix);
    if (rc) return chrys_set_errmsg(errmsg, rc, "%s", index_rows_msg(ix));
    store_section secs[INDEX_MAX_SECTIONS];
    index_sections is = {secs};
    if (index_store_sections(ix, &is)) return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "buffer: out of memory");
    rc = store_write_buffer(secs, is.n, buf, size, errmsg);
    index_sections_free(&is);
    return rc;
}

static int expect_len(store_reader *r, int i, uint64_t want, char **errmsg)
{
    char t[5];
    if (i < 0) return CHRYS_OK;
    if (r->sec[i].len != want)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: section %s has %llu bytes, expected %llu",
                                r->name, store_tag_name(r->sec[i].tag, t),
                                (unsigned long long)r->sec[i].len, (unsigned long long)want);
    return CHRYS_OK;
}

static int parse_meta(store_reader *r, uint32_t *dim, uint32_t *metric, uint32_t *kind,
                      uint64_t *count, uint64_t *seed, char **errmsg)
{
    int im = store_find(r, TAG_META);
    if (im < 0) return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: META section missing", r->name);
    int rc = expect_len(r, im, META_SIZE, errmsg);
    unsigned char m[META_SIZE];
    if (rc || (rc = store_read_section(r, im, m, errmsg))) return rc;
    *dim = get_u32le(m + META_DIM);
    *metric = get_u32le(m + META_METRIC);
    *kind = get_u32le(m + META_KIND);
    *count = get_u64le(m + META_COUNT);
    *seed = get_u64le(m + META_SEED);
    if (*dim < 1 || *dim > CHRYS_MAX_DIM)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: META: dim %u out of range", r->name, *dim);
    if (*metric > CHRYS_METRIC_L2)
        return chrys_set_errmsg(errmsg, CHRYS_FORMAT, "%s: META: unknown metric %u", r->name, *metric);
    if (*kind > CHRYS_INDEX_HNSW)
        return chrys_set_errmsg(errmsg, CHRYS_FORMAT, "%s: META: unknown index kind %u", r->name, *kind);
    if (*count > CHRYS_MAX_SLOTS)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: META: count %llu exceeds the cap", r->name,
                                (unsigned long long)*count);
    if (get_u32le(m + META_RESERVED0))
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: META: reserved field not zero", r->name);
    for (int i = META_RESERVED1; i < META_SIZE; i++)
        if (m[i]) return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: META: reserved byte not zero", r->name);
    return CHRYS_OK;
}

static int check_sections_known(store_reader *r, char **errmsg)
{
    for (uint32_t i = 0; i < r->n_sections; i++) {
        uint32_t t = r->sec[i].tag;
        if (t == TAG_META || t == TAG_IDS || t == TAG_NORM || t == TAG_VF32 || t == TAG_MDAT) continue;
        if (t == TAG_MRGO || t == TAG_MENT || t == TAG_MASN || t == TAG_MHIS) continue; /* merger state */
        if (t == TAG_HNSW || t == TAG_HNLV || t == TAG_HNL0 || t == TAG_HNUP) continue;
        if (t == TAG_PLAN || t == TAG_IVFC || t == TAG_IVFL || t == TAG_SQ8P || t == TAG_TQ8P || t == TAG_VSQ8) continue;
        if (r->sec[i].flags & SEC_OPTIONAL) continue;
        char name[5];
        return chrys_set_errmsg(errmsg, CHRYS_FORMAT, "%s: unknown required section %s (written by a newer version?)",
                                r->name, store_tag_name(t, name));
    }
    return CHRYS_OK;
}

/* Read the PLAN section (if any) into plan; *present says whether there was one. It is read
 * first because its SQ8 and re-ranking bits decide whether VF32 holds rows. */
static int read_plan(store_reader *r, unsigned char plan[PLAN_SIZE], int *present, char **errmsg)
{
    int ip = store_find(r, TAG_PLAN), rc;
    *present = ip >= 0;
    memset(plan, 0, PLAN_SIZE);
    if (ip < 0) return CHRYS_OK;
    if ((rc = expect_len(r, ip, PLAN_SIZE, errmsg)) || (rc = store_read_section(r, ip, plan, errmsg))) return rc;
    return CHRYS_OK;
}

/* PLAN (read by read_plan; NULL when absent), IVF lists and SQ8 codes (all optional; lengths
 * checked before allocation). */
static int load_plan(store_reader *r, const unsigned char *plan, chrys_index *ix, char **errmsg)
{
    int rc;
    int ic = store_find(r, TAG_IVFC), il = store_find(r, TAG_IVFL);
    int im = store_find(r, TAG_SQ8P), is = store_find(r, TAG_TQ8P), iv = store_find(r, TAG_VSQ8);
    if (!plan) {
        if (ix->kind != CHRYS_INDEX_FLAT || ic >= 0 || il >= 0 || im >= 0 || iv >= 0)
            return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: IVF/SQ8 sections without a PLAN section", r->name);
        return CHRYS_OK;
    }
    uint32_t flags = get_u32le(plan + PLAN_FLAGS), nlist = get_u32le(plan + PLAN_NLIST);
    int bad = (flags & ~PLAN_FLAGS_KNOWN) || get_u32le(plan + PLAN_RESERVED0) || plan[PLAN_REASON + 159];
    for (int i = PLAN_RESERVED1; i < PLAN_SIZE; i++) bad |= plan[i];
    /* (fewer rows than lists is valid: removals after training leave lists empty) */
    if (bad || nlist > (1u << 20) || (nlist && ix->kind != CHRYS_INDEX_IVF) ||
        get_u32le(plan + PLAN_WANT_NLIST) > (1u << 20))
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: PLAN section is invalid", r->name);
    if ((flags & 4) && !(flags & 2))
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: PLAN: float32 re-ranking flag without SQ8", r->name);
    ix->planned = flags & 1;
    ix->sq8 = (flags >> 1) & 1;
    ix->refine |= (flags >> 2) & 1;
    ix->want_nlist = get_u32le(plan + PLAN_WANT_NLIST);
    ix->auto_threshold = get_u64le(plan + PLAN_THRESHOLD);
    ix->memory_budget = get_u64le(plan + PLAN_BUDGET);
    ix->trained_on = get_u64le(plan + PLAN_TRAINED_ON);
    ix->train_imbalance = get_f64le(plan + PLAN_TRAIN_IMBAL);
    memcpy(ix->plan_reason, plan + PLAN_REASON, 160);
    if (nlist) {
        if (ic < 0 || il < 0) return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: IVF sections missing", r->name);
        if ((rc = expect_len(r, ic, (uint64_t)nlist * ix->dim * 4, errmsg)) || (rc = expect_len(r, il, (uint64_t)ix->n * 4, errmsg)))
            return rc;
        ix->nlist = nlist;
        ix->centroids = chrys_malloc_aligned((size_t)nlist * ix->dim * sizeof(float));
        ix->lists = chrys_calloc(nlist, sizeof *ix->lists);
        ix->list_n = chrys_calloc(nlist, sizeof *ix->list_n);
        ix->list_cap = chrys_calloc(nlist, sizeof *ix->list_cap);
        /* index_reserve already sized the per-row arrays of an IVF index */
        if (!ix->list_of) ix->list_of = chrys_malloc((ix->cap ? ix->cap : 1) * sizeof *ix->list_of);
        if (!ix->pos_in_list) ix->pos_in_list = chrys_malloc((ix->cap ? ix->cap : 1) * sizeof *ix->pos_in_list);
        if (!ix->centroids || !ix->lists || !ix->list_n || !ix->list_cap || !ix->list_of || !ix->pos_in_list)
            return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", r->name);
        if ((rc = store_read_section(r, ic, ix->centroids, errmsg)) || (rc = store_read_section(r, il, ix->list_of, errmsg)))
            return rc;
        if (vec_first_nonfinite(ix->centroids, (size_t)nlist * ix->dim) >= 0)
            return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: IVFC: centroid value not finite", r->name);
        /* count, then fill the lists */
        for (size_t s = 0; s < ix->n; s++) {
            if (ix->list_of[s] >= nlist)
                return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: IVFL: row %zu names list %u of %u", r->name, s,
                                        ix->list_of[s], nlist);
            ix->list_cap[ix->list_of[s]]++;
        }
        for (uint32_t l = 0; l < nlist; l++)
            if (ix->list_cap[l] && !(ix->lists[l] = chrys_malloc(ix->list_cap[l] * sizeof(uint32_t))))
                return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", r->name);
        for (size_t s = 0; s < ix->n; s++) {
            uint32_t l = ix->list_of[s];
            ix->pos_in_list[s] = ix->list_n[l];
            ix->lists[l][ix->list_n[l]++] = (uint32_t)s;
        }
    } else if (ic >= 0 || il >= 0) {
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: IVF sections in an untrained index", r->name);
    } else if (ix->kind == CHRYS_INDEX_IVF) {
        if (!ix->list_of) ix->list_of = chrys_malloc((ix->cap ? ix->cap : 1) * sizeof *ix->list_of);
        if (!ix->pos_in_list) ix->pos_in_list = chrys_malloc((ix->cap ? ix->cap : 1) * sizeof *ix->pos_in_list);
        if (!ix->list_of || !ix->pos_in_list) return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", r->name);
    }
    if (ix->sq8 && (im >= 0 || iv >= 0)) {
        if (im < 0 || is < 0 || iv < 0) return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: SQ8 sections missing", r->name);
        if ((rc = expect_len(r, im, (uint64_t)ix->dim * 4, errmsg)) || (rc = expect_len(r, is, (uint64_t)ix->dim * 4, errmsg)) ||
            (rc = expect_len(r, iv, (uint64_t)ix->n * ix->dim, errmsg)))
            return rc;
        ix->sq_min = chrys_malloc(ix->dim * sizeof(float));
        ix->sq_step = chrys_malloc(ix->dim * sizeof(float));
        if (!ix->codes) ix->codes = chrys_malloc_aligned((ix->cap ? ix->cap : 1) * (size_t)ix->dim);
        if (ix->metric == CHRYS_METRIC_L2 && !ix->sq_csq) ix->sq_csq = chrys_malloc((ix->cap ? ix->cap : 1) * sizeof(float));
        if (!ix->sq_min || !ix->sq_step || !ix->codes || (ix->metric == CHRYS_METRIC_L2 && !ix->sq_csq))
            return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", r->name);
        /* codes are loaded as stored, never re-quantised */
        if ((rc = store_read_section(r, im, ix->sq_min, errmsg)) || (rc = store_read_section(r, is, ix->sq_step, errmsg)) ||
            (rc = store_read_section(r, iv, ix->codes, errmsg)))
            return rc;
        sq8_refresh_norms(ix); /* |decoded row|^2 under L2: derived from the codes, not stored */
        if (vec_first_nonfinite(ix->sq_min, ix->dim) >= 0 || vec_first_nonfinite(ix->sq_step, ix->dim) >= 0)
            return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: SQ8P: parameter not finite", r->name);
    } else if (im >= 0 || is >= 0 || iv >= 0) {
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: SQ8 sections without the SQ8 flag", r->name);
    }
    return CHRYS_OK;
}

int index_load_reader(store_reader *r, chrys_index **out, char **errmsg) { return index_load_reader_ex(r, 0, out, errmsg); }

/* What the loader learns from the section table, META, PLAN and the HNSW header before it
 * allocates anything the file sizes. */
typedef struct load_layout {
    uint32_t dim, metric, kind;
    uint64_t count, seed;
    int ii, in, iv, imd; /* IDS_, NORM, VF32, MDAT (-1: absent) */
    unsigned char plan[PLAN_SIZE];
    int has_plan;
    uint32_t pflags, plan_nlist;
    int floats, compat_refine; /* VF32 holds float32 rows; an older SQ8 store loads as "SQ8,RFlat" */
    unsigned char hnsw_hdr[64];
    uint32_t hnsw_m, hnsw_efc;
} load_layout;

/* Whether VF32 holds float32 rows (L->floats, L->compat_refine), from PLAN's flags and META. */
static void layout_rows(const store_reader *r, load_layout *L)
{
    uint32_t pflags = L->pflags;
    /* Float32 rows: without SQ8, with ",RFlat" (flag bit 2), and in an untrained IVF index (it
     * keeps its rows until it trains). */
    L->floats = !(pflags & 2) || (pflags & 4) || (L->kind == CHRYS_INDEX_IVF && !L->plan_nlist);
    /* A 1.0 Flat SQ8 store kept float32 rows without the bit-2 flag: it loads as "SQ8,RFlat";
     * so does every IVF SQ8 store written before format 1.2 (IVF,SQ8 kept its rows then). */
    L->compat_refine = 0;
    if (!L->floats && L->kind == CHRYS_INDEX_FLAT && L->count && r->sec[L->iv].len == L->count * L->dim * 4)
        L->floats = L->compat_refine = 1;
    if ((pflags & 2) && !(pflags & 4) && L->kind == CHRYS_INDEX_IVF && r->minor < 2) L->floats = L->compat_refine = 1;
}

/* The checks made before any allocation, in this order: known sections, META, the required
 * sections, PLAN, the row sections' lengths, MDAT's minimum length, the HNSW header. */
static int load_check_layout(store_reader *r, load_layout *L, char **errmsg)
{
    int rc = check_sections_known(r, errmsg);
    if (rc || (rc = parse_meta(r, &L->dim, &L->metric, &L->kind, &L->count, &L->seed, errmsg))) return rc;
    uint64_t count = L->count, dim = L->dim;
    L->ii = store_find(r, TAG_IDS), L->in = store_find(r, TAG_NORM), L->iv = store_find(r, TAG_VF32);
    L->imd = store_find(r, TAG_MDAT);
    if (L->ii < 0 || L->in < 0 || L->iv < 0)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: a required section (IDS_, NORM, VF32) is missing", r->name);
    if ((rc = read_plan(r, L->plan, &L->has_plan, errmsg))) return rc;
    L->pflags = get_u32le(L->plan + PLAN_FLAGS), L->plan_nlist = get_u32le(L->plan + PLAN_NLIST);
    layout_rows(r, L);
    /* count <= 2^32 and dim <= 2^14, so these products cannot overflow 64 bits. */
    if ((rc = expect_len(r, L->ii, count * 8, errmsg)) || (rc = expect_len(r, L->in, count * 4, errmsg)) ||
        (rc = expect_len(r, L->iv, L->floats ? count * dim * 4 : 0, errmsg)))
        return rc;
    if (L->imd >= 0 && (r->sec[L->imd].len < (count + 1) * 8))
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: MDAT section too short", r->name);
    L->hnsw_m = L->hnsw_efc = 0;
    if (L->kind == CHRYS_INDEX_HNSW && (rc = hnsw_read_header(r, L->hnsw_hdr, &L->hnsw_m, &L->hnsw_efc, errmsg)))
        return rc;
    return CHRYS_OK;
}

/* Create the index and reserve its rows (*ix set as soon as it exists, for the caller to free). */
static int load_create(store_reader *r, const load_layout *L, int map, chrys_index **ix, char **errmsg)
{
    int rc = index_create(L->dim, (chrys_metric)L->metric, (chrys_index_kind)L->kind, L->seed, L->hnsw_m, L->hnsw_efc,
                          ix, errmsg);
    if (rc) return rc;
    chrys_index *x = *ix;
    /* before reserving: they decide which arrays exist (a trained codes-only IVF index has no
     * float32 rows: its nlist, checked by load_plan, is known here already) */
    x->sq8 = (L->pflags >> 1) & 1;
    x->refine = ((L->pflags >> 2) & 1) | L->compat_refine;
    if (L->kind == CHRYS_INDEX_IVF && !L->floats) x->nlist = L->plan_nlist;
    if (map) { /* opened read-only: reserve no float32 rows (they stay in the file) and no id map yet */
        x->read_only = 1;
        if (L->floats && L->count) {
            x->map_base = (void *)r->buf;
            x->map_len = (size_t)r->size;
        }
    }
    if (L->count && (rc = index_reserve(x, L->count)))
        return chrys_set_errmsg(errmsg, rc, "%s: %s", r->name, x->errmsg);
    return CHRYS_OK;
}

/* Read IDS_, NORM and the float32 rows (mapped rather than read when map is set). A mapped store
 * with float32 rows keeps its ids and norms in the mapping too (sections start at multiples of 64
 * bytes, and the host is little-endian like the file): opening a 412 MB Flat store no longer
 * copies 1.2 MB into fresh pages, whose first touches cost about as much as the copy on a VM. */
static int load_rows(store_reader *r, const load_layout *L, int map, chrys_index *ix, char **errmsg)
{
    int rc;
    if (L->floats && map && L->count) { /* rows stay in the file: the index points into the mapping */
        const void *ids, *norms, *rows;
        if ((rc = store_map_section(r, L->ii, &ids, errmsg)) || (rc = store_map_section(r, L->in, &norms, errmsg)) ||
            (rc = store_map_section_unchecked(r, L->iv, &rows, errmsg))) /* the rows' checksum: check_rows */
            return rc;
        ix->ids = (uint64_t *)ids; /* map_base set by load_create; read-only from here on */
        ix->norms = (float *)norms;
        ix->ids_in_map = 1;
        ix->vecs = (float *)rows;
    } else if ((rc = store_read_section(r, L->ii, ix->ids, errmsg)) ||
               (rc = store_read_section(r, L->in, ix->norms, errmsg))) {
        return rc;
    } else if (L->floats && (rc = store_read_section_unchecked(r, L->iv, ix->vecs, errmsg))) { /* likewise */
        return rc;
    }
    for (size_t i = 0; ix->meta && i < L->count; i++) ix->meta[i] = NULL;
    ix->n = L->count;
    return CHRYS_OK;
}

/* The float32 rows read in one pass, split over workers: each group of rows checksummed while
 * it is in cache, then each row checked for what a checksum cannot see (values and norm finite,
 * cosine rows of unit length). One pass over memory instead of a checksum pass then a check pass,
 * and two cores instead of one: opening a 412 MB Flat store with chrys_index_open_mmap went from
 * 120-160 ms to 40-75 ms (median 51; one worker alone: 75). */
enum { CHECK_MAXW = 64, CHECK_GROUP_BYTES = 32768, CHECK_MIN_BYTES_PER_WORKER = 8u << 20 };

/* What one row's checks need, from the index (dim, metric, kind) and whether it has float32 rows. */
typedef struct row_rule {
    const chrys_index *ix;
    const chrys_kernels *kr;
    size_t dim, row_bytes;
    int cosine, hnsw;
    double ss_rel; /* bound on the float sum of squares' relative error */
} row_rule;

static row_rule row_rule_of(const chrys_index *ix, int floats)
{
    return (row_rule){.ix = ix, .kr = chrys_kernels_active(), .dim = ix->dim,
                      .row_bytes = floats ? (size_t)ix->dim * 4 : 0, .cosine = ix->metric == CHRYS_METRIC_COSINE,
                      .hnsw = ix->kind == CHRYS_INDEX_HNSW, .ss_rel = 2.0 * ((double)ix->dim + 2.0) * 0x1p-24};
}

/* The rule for one row's sum of squares (in double: finite exactly when every component is, since
 * no float's square overflows a double, nor do 2^16 of them; under cosine the squared norm). */
static int row_ss_ok(double ss, int unit)
{
    return isfinite(ss) && !(unit && fabs(sqrt(ss) - 1.0) > 1e-3);
}

/* The same decision from the float32 sum of squares where that cannot differ: the float sum is
 * finite only when every component is, and it is within ss_rel of the double sum (dim + 2
 * roundings of nonnegative terms in any order, doubled), so a cosine row whose float sum lies
 * clear of the accepted band's edges by that much is decided as the double sum would decide it.
 * Only the rest (overflowing float squares, rows near the edges) pay for the double sum: the
 * float kernel runs at about 140 GB/s in cache here against 29 for the double one, and the check
 * pass is what `chrysalis search --mmap` waits for. */
static int row_values_ok(const row_rule *R, const float *v, int unit)
{
    double sf = R->kr->dot(v, v, R->dim);
    if (isfinite(sf)) {
        if (!unit) return 1;
        double lo = (1.0 - 1e-3) * (1.0 - 1e-3), hi = (1.0 + 1e-3) * (1.0 + 1e-3);
        double a = sf * (1.0 - R->ss_rel), b = sf * (1.0 + R->ss_rel);
        if (a >= lo && b <= hi) return 1;
        if (b < lo || a > hi) return 0;
    }
    return row_ss_ok(R->kr->dot_f64(v, v, R->dim), unit);
}

/* One row's values and norm (a removed HNSW node: only its values, still walked through). */
static int row_valid(const row_rule *R, size_t i)
{
    int removed = R->hnsw && R->ix->ids[i] == CHRYS_NO_ID;
    if (R->row_bytes && !row_values_ok(R, R->ix->vecs + i * R->dim, R->cosine && !removed)) return 0;
    if (removed) return 1;
    float nr = R->ix->norms[i];
    return isfinite(nr) && nr >= 0 && !(R->cosine && nr == 0);
}

/* Rows [begin, end) in groups of 32 KiB: each group checksummed, then its rows checked while it
 * is in cache. */
static void rows_check(const row_rule *R, size_t begin, size_t end, rows_part *p)
{
    size_t group = R->row_bytes ? CHECK_GROUP_BYTES / R->row_bytes : 0;
    if (group < 1) group = 1;
    for (size_t g = begin; g < end; g += group) {
        size_t ge = g + group < end ? g + group : end;
        if (R->row_bytes)
            p->crc = chrys_crc32c(p->crc, (const unsigned char *)R->ix->vecs + g * R->row_bytes, (ge - g) * R->row_bytes);
        for (size_t i = g; i < ge; i++)
            if (p->first_bad == SIZE_MAX && !row_valid(R, i)) p->first_bad = i;
    }
    p->len += (uint64_t)(end - begin) * R->row_bytes;
}

/* Map rows [begin, end) of a mapped index into this process in one call (MADV_POPULATE_READ,
 * Linux 5.14) rather than one page fault per 64 KiB as they are first read: on a VM, where a
 * fault is dear, touching the 412 MB store from two threads took 87 -> 73 ms (median; the page
 * cache holding the file in 4 KiB pages). Older kernels refuse the advice, and the reads fault
 * as before. A read error on the file still surfaces as SIGBUS when the row is read, as before. */
void index_rows_map_in(const chrys_index *ix, size_t begin, size_t end)
{
    if (!ix->map_base || begin >= end) return;
    size_t page = 4096;
    uintptr_t a = (uintptr_t)(ix->vecs + begin * ix->dim) & ~(uintptr_t)(page - 1);
    uintptr_t b = (uintptr_t)(ix->vecs + end * ix->dim);
    madvise((void *)a, b - a, MADV_POPULATE_READ);
}

void index_rows_check_range(const chrys_index *ix, size_t begin, size_t end, rows_part *p)
{
    row_rule R = row_rule_of(ix, 1);
    rows_check(&R, begin, end, p);
}

/* The whole pass, split over workers in order (one run of rows each). */
typedef struct row_pass {
    row_rule R;
    rows_part part[CHECK_MAXW];
} row_pass;

static void row_pass_range(void *ctx, unsigned w, size_t begin, size_t end)
{
    row_pass *P = ctx;
    if (P->R.row_bytes) index_rows_map_in(P->R.ix, begin, end);
    rows_check(&P->R, begin, end, &P->part[w]);
}

/* Run the pass over every row; *nw_out: the parts it filled. */
static void rows_pass(row_pass *P, const chrys_index *ix, int floats, unsigned *nw_out)
{
    P->R = row_rule_of(ix, floats);
    size_t bytes = ix->n * P->R.row_bytes;
    unsigned nw = chrys_online_cpus();
    if (nw > CHECK_MAXW) nw = CHECK_MAXW;
    if (nw > bytes / CHECK_MIN_BYTES_PER_WORKER) nw = (unsigned)(bytes / CHECK_MIN_BYTES_PER_WORKER);
    if (nw < 1) nw = 1;
    for (unsigned w = 0; w < CHECK_MAXW; w++) P->part[w] = (rows_part){0, 0, SIZE_MAX};
    chrys_parallel_for(nw, ix->n, row_pass_range, P);
    *nw_out = nw;
}

/* The checksum of parts[0..n) joined in order, and their first bad row. */
static uint32_t rows_join(const rows_part *parts, unsigned n, size_t *bad)
{
    uint32_t crc = parts[0].crc;
    *bad = parts[0].first_bad;
    for (unsigned w = 1; w < n; w++) {
        crc = chrys_crc32c_combine(crc, parts[w].crc, parts[w].len);
        if (parts[w].first_bad < *bad) *bad = parts[w].first_bad;
    }
    return crc;
}

/* The message for a bad row (as the loader words it). */
static int row_error(char **msg, const char *name, const chrys_index *ix, size_t i)
{
    if (ix->kind == CHRYS_INDEX_HNSW && ix->ids[i] == CHRYS_NO_ID)
        return chrys_set_errmsg(msg, CHRYS_CORRUPT, "%s: row %zu (a removed node): invalid vector", name, i);
    return chrys_set_errmsg(msg, CHRYS_CORRUPT, "%s: row %zu (id %llu): invalid vector or norm", name, i,
                            (unsigned long long)ix->ids[i]);
}

int index_rows_verdict(const chrys_index *cix, const rows_part *parts, unsigned n)
{
    chrys_index *ix = (chrys_index *)cix; /* the index's own lazily found state; see index.h */
    size_t bad;
    uint32_t crc = rows_join(parts, n, &bad);
    char *msg = NULL;
    int rc = CHRYS_OK;
    if (crc != ix->rows_crc)
        rc = chrys_set_errmsg(&msg, CHRYS_CORRUPT_CHECKSUM, "%s: section VF32 checksum mismatch", ix->rows_name);
    else if (bad != SIZE_MAX)
        rc = row_error(&msg, ix->rows_name, ix, bad);
    int owed = ROWS_OWED;
    if (__atomic_compare_exchange_n(&ix->rows_state, &owed, ROWS_BUSY, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        ix->rows_rc = rc;
        ix->rows_msg = msg;
        __atomic_store_n(&ix->rows_state, rc ? ROWS_BAD : ROWS_OK, __ATOMIC_RELEASE);
        return rc;
    }
    chrys_free(msg); /* another search gave the same verdict first */
    return index_rows_ready(ix);
}

int index_rows_ready(const chrys_index *ix)
{
    int st;
    while ((st = __atomic_load_n(&ix->rows_state, __ATOMIC_ACQUIRE)) == ROWS_BUSY) sched_yield();
    if (st == ROWS_OK) return CHRYS_OK;
    if (st == ROWS_BAD) return ix->rows_rc;
    row_pass P;
    unsigned nw;
    rows_pass(&P, ix, 1, &nw);
    return index_rows_verdict(ix, P.part, nw);
}

const char *index_rows_msg(const chrys_index *ix)
{
    return __atomic_load_n(&ix->rows_state, __ATOMIC_ACQUIRE) == ROWS_BAD && ix->rows_msg ? ix->rows_msg : "";
}

/* The float32 rows' checksum (VF32 was read without it) and every row's checks, then the ids,
 * in row order: unique and not reserved (HNSW tombstones counted); fills the id map. A damaged
 * checksum is reported before anything it could explain. With defer (a mapped store opened with
 * CHRYS_MMAP_CHECK_ON_USE) the rows' part is left owed: their first use runs it. */
static int check_rows(store_reader *r, const load_layout *L, chrys_index *ix, int map, char **errmsg)
{
    size_t bad = SIZE_MAX;
    int rc, defer = map > 1;
    if (defer && L->floats) {
        if (!(ix->rows_name = chrys_strdup(r->name)))
            return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", r->name);
        ix->rows_crc = r->sec[L->iv].crc;
        ix->rows_state = ROWS_OWED;
    } else {
        row_pass P;
        unsigned nw;
        rows_pass(&P, ix, L->floats, &nw);
        uint32_t crc = rows_join(P.part, nw, &bad);
        if (L->floats && (rc = store_check_crc(r, L->iv, crc, errmsg))) return rc;
    }
    /* Opened read-only with ids in strictly increasing order (stores built from files in order):
     * that order proves them unique and none reserved (each is below the last, itself not the
     * reserved 2^64 - 1), and lookups bisect them, so no id map is built. */
    if (map && L->count) {
        const uint64_t *id = ix->ids;
        size_t i = 1;
        while (i < L->count && id[i - 1] < id[i]) i++;
        if (i == L->count && id[i - 1] != CHRYS_NO_ID) {
            ix->ids_sorted = 1;
            return bad == SIZE_MAX ? CHRYS_OK : row_error(errmsg, r->name, ix, bad);
        }
        if (idmap_reserve(&ix->map, L->count)) return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", r->name);
    }
    for (size_t i = 0; i < L->count; i++) {
        uint64_t id = ix->ids[i];
        if (id == CHRYS_NO_ID && L->kind == CHRYS_INDEX_HNSW) { /* a tombstone: still walked through */
            ix->n_dead++;
            if (i == bad) return row_error(errmsg, r->name, ix, i);
            continue;
        }
        if (id == CHRYS_NO_ID || idmap_get(&ix->map, id) != CHRYS_NO_SLOT)
            return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: IDS_: row %zu has %s id %llu", r->name, i,
                                    id == CHRYS_NO_ID ? "reserved" : "duplicate", (unsigned long long)id);
        idmap_put(&ix->map, id, (uint32_t)i); /* reserved above: cannot fail */
        if (i == bad) return row_error(errmsg, r->name, ix, i);
    }
    return CHRYS_OK;
}

/* Split the MDAT bytes (its length checked by load_check_layout) into ix->meta: offsets in
 * order, each record free of NUL bytes and within the cap. */
static int parse_mdat(store_reader *r, const unsigned char *mdat, uint64_t len, uint64_t count, chrys_index *ix,
                      char **errmsg)
{
    uint64_t base = (count + 1) * 8, bytes = len - base, prev = 0;
    for (size_t i = 0; i <= count; i++) {
        uint64_t o = get_u64le(mdat + i * 8);
        if (o < prev || o > bytes || (i == 0 && o != 0) || (i == count && o != bytes))
            return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: MDAT: offset %zu out of order", r->name, i);
        if (i > 0 && o > prev) {
            size_t l = (size_t)(o - prev);
            if (l > CHRYS_MAX_META_BYTES || memchr(mdat + base + prev, 0, l))
                return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: MDAT: record %zu is invalid", r->name, i - 1);
            char *s = chrys_malloc(l + 1);
            if (!s) return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", r->name);
            memcpy(s, mdat + base + prev, l);
            s[l] = 0;
            ix->meta[i - 1] = s;
        }
        prev = o;
    }
    return CHRYS_OK;
}

/* Read the MDAT section, when there is one, into ix->meta. */
static int load_mdat(store_reader *r, const load_layout *L, chrys_index *ix, char **errmsg)
{
    if (L->imd < 0) return CHRYS_OK;
    uint64_t len = r->sec[L->imd].len;
    if (!ix->meta && L->count && !(ix->meta = chrys_calloc((size_t)L->count, sizeof *ix->meta))) /* read-only */
        return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", r->name);
    unsigned char *mdat = chrys_malloc((size_t)len);
    if (!mdat) return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", r->name);
    int rc = store_read_section(r, L->imd, mdat, errmsg);
    if (!rc) rc = parse_mdat(r, mdat, len, L->count, ix, errmsg);
    chrys_free(mdat);
    return rc;
}

/* The search structures: PLAN with the IVF lists and SQ8 codes (load_plan), then the HNSW graph,
 * or a check that a non-HNSW index has none. */
static int load_structures(store_reader *r, const load_layout *L, chrys_index *ix, char **errmsg)
{
    int rc;
    if ((rc = load_plan(r, L->has_plan ? L->plan : NULL, ix, errmsg))) return rc;
    /* searches scan the codes */
    if (ix->sq8 && L->count && (L->kind != CHRYS_INDEX_IVF || ix->nlist) && (!ix->codes || !ix->sq_min))
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: SQ8 index without its codes", r->name);
    if (L->kind == CHRYS_INDEX_HNSW) return hnsw_load(r, L->hnsw_hdr, ix, errmsg);
    if (store_find(r, TAG_HNSW) >= 0 || store_find(r, TAG_HNL0) >= 0)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNSW sections in a %s index", r->name,
                                L->kind == CHRYS_INDEX_IVF ? "IVF" : "Flat");
    return CHRYS_OK;
}

/* Load an index from an open store reader: every check before allocation (load_check_layout),
 * then the rows, their checks, the metadata and the search structures. With map set, float32
 * rows stay in the reader's buffer, a mapping that the index owns (and unmaps) once the load succeeds. */
int index_load_reader_ex(store_reader *r, int map, chrys_index **out, char **errmsg)
{
    load_layout L;
    chrys_index *ix = NULL;
    int rc = load_check_layout(r, &L, errmsg);
    if (rc || (rc = load_create(r, &L, map, &ix, errmsg)) || (rc = load_rows(r, &L, map, ix, errmsg)) ||
        (rc = check_rows(r, &L, ix, map, errmsg)) || (rc = load_mdat(r, &L, ix, errmsg)) ||
        (rc = load_structures(r, &L, ix, errmsg)))
        goto fail;
    *out = ix;
    return CHRYS_OK;
fail:
    if (ix && ix->map_base) { /* the mapping belongs to the caller until the load succeeds */
        ix->vecs = NULL;
        ix->map_base = NULL;
    }
    chrys_index_free(ix);
    return rc;
}

int chrys_index_load(const char *path, chrys_index **out, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!out) return CHRYS_INVALID;
    *out = NULL;
    if (!path) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "path is required");
    store_reader r;
    int rc = store_reader_open_file(&r, path, errmsg);
    if (rc) return rc;
    rc = index_load_reader(&r, out, errmsg);
    store_reader_close(&r);
    return rc;
}

int chrys_index_open_mmap_ex(const char *path, unsigned flags, chrys_index **out, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!out) return CHRYS_INVALID;
    *out = NULL;
    if (!path) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "path is required");
    if (flags & ~(unsigned)CHRYS_MMAP_CHECK_ON_USE)
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "%s: unknown open flags 0x%x", path, flags);
    int defer = (flags & CHRYS_MMAP_CHECK_ON_USE) != 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return chrys_set_errmsg(errmsg, CHRYS_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return chrys_set_errmsg(errmsg, CHRYS_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    size_t size = (size_t)st.st_size;
    void *map = size ? mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    close(fd); /* the mapping keeps the file */
    if (map == MAP_FAILED) {
        if (!size) return chrys_set_errmsg(errmsg, CHRYS_CORRUPT_TRUNCATED, "%s: empty file", path);
        return chrys_set_errmsg(errmsg, CHRYS_IO, "%s: cannot map: %s", path, strerror(errno));
    }
    store_reader r;
    int rc = store_reader_open_buffer(&r, map, size, path, errmsg);
    if (!rc) rc = index_load_reader_ex(&r, defer ? 2 : 1, out, errmsg);
    if (rc || !(*out)->map_base) { /* failed, or nothing kept in the mapping (no float32 rows) */
        munmap(map, size);
        if (!rc) (*out)->read_only = 1;
        return rc;
    }
    (*out)->read_only = 1;
    /* the checks read every page once; drop them from this process (they stay in the page
     * cache) so only the rows a search touches count against it; except under a plain Flat
     * index, whose every search reads every row (dropping them made its first search fault
     * them all in again) */
    const chrys_index *ix = *out;
    if (!defer && !(ix->kind == CHRYS_INDEX_FLAT && !ix->sq8)) madvise(map, size, MADV_DONTNEED);
    return CHRYS_OK;
}

int chrys_index_open_mmap(const char *path, chrys_index **out, char **errmsg)
{
    return chrys_index_open_mmap_ex(path, 0, out, errmsg);
}

int chrys_index_load_buffer(const void *buf, size_t size, const char *name, chrys_index **out,
                            char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!out) return CHRYS_INVALID;
    *out = NULL;
    if (!buf && size) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "buffer is NULL");
    store_reader r;
    int rc = store_reader_open_buffer(&r, buf ? buf : "", size, name, errmsg);
    if (rc) return rc;
    return index_load_reader(&r, out, errmsg);
}

int chrys_store_peek(const char *path, chrys_store_meta *meta, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!path || !meta) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "path and meta are required");
    store_reader r;
    int rc = store_reader_open_file(&r, path, errmsg);
    if (rc) return rc;
    uint32_t dim, metric, kind;
    uint64_t count, seed;
    rc = parse_meta(&r, &dim, &metric, &kind, &count, &seed, errmsg);
    if (!rc) {
        chrys_store_meta m;
        memset(&m, 0, sizeof m);
        m.struct_size = sizeof m;
        m.format_major = r.major;
        m.format_minor = r.minor;
        m.writer_version = r.writer_version;
        m.n_sections = r.n_sections;
        m.dim = dim;
        m.metric = (chrys_metric)metric;
        m.kind = (chrys_index_kind)kind;
        m.count = count;
        m.file_bytes = r.size;
        m.has_merger = store_find(&r, TAG_MRGO) >= 0;
        rc = chrys_struct_out(meta, &m, sizeof m);
    }
    store_reader_close(&r);
    return rc;
}

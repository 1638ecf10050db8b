/*
 * merge_store.c: persistence of a merger: the index's sections plus MRGO, MENT, MASN, MHIS.
 */
#include <math.h>

#include "merge.h"
#include "store/codec.h"
#include "store/store.h"

/* ------------------------------------------------------------------------------------------
 * Persistence: the index's sections plus MRGO, MENT, MASN, MHIS (docs/FORMAT.md).
 */
int chrys_merger_save(const chrys_merger *m, const char *path, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!m || !path) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "merger and path are required");
    unsigned char mrgo[MRGO_SIZE] = {0};
    store_section secs[INDEX_MAX_SECTIONS + 4];
    index_sections is = {secs};
    uint32_t ns = 0;
    unsigned char *ment = NULL, *masn = NULL, *mhis = NULL;
    int rc = index_store_sections(m->ix, &is);
    ns = is.n;
    if (rc) return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", path);
    put_f64le(mrgo + MRGO_THRESHOLD, m->opts.threshold);
    put_f64le(mrgo + MRGO_W_OLD, m->opts.weight_old);
    put_f64le(mrgo + MRGO_W_NEW, m->opts.weight_new);
    put_u32le(mrgo + MRGO_VARIANT, (uint32_t)m->opts.variant);
    put_u32le(mrgo + MRGO_FLAGS, (m->opts.renormalize ? 1u : 0u) | (m->opts.mean_update ? 2u : 0u));
    put_u64le(mrgo + MRGO_RECORDS, m->records);
    put_u64le(mrgo + MRGO_MERGED, m->merged);
    put_u64le(mrgo + MRGO_ADDED, m->added);
    put_u64le(mrgo + MRGO_SKIPPED, m->skipped);
    ment = chrys_malloc(m->n_entries * MENT_SIZE + 1);
    masn = chrys_malloc(m->n_asn * MASN_SIZE + 1);
    mhis = chrys_malloc(m->n_hist * MHIS_SIZE + 1);
    if (!ment || !masn || !mhis) {
        rc = chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t e = 0; e < m->n_entries; e++) {
        unsigned char *p = ment + e * MENT_SIZE;
        put_u32le(p, m->merged_count[e]);
        put_u32le(p + 4, 0);
        put_f64le(p + 8, m->similarity[e]);
        put_u64le(p + 16, m->first_record[e]);
    }
    for (size_t a = 0; a < m->n_asn; a++) {
        put_u64le(masn + a * MASN_SIZE, m->asn_rec[a]);
        put_u64le(masn + a * MASN_SIZE + 8, m->asn_entry[a]);
    }
    for (size_t h = 0; h < m->n_hist; h++) {
        for (int f = 0; f < 5; f++) put_u64le(mhis + h * MHIS_SIZE + f * 8, m->hist[h][f]);
        put_u64le(mhis + h * MHIS_SIZE + 40, 0);
    }
    secs[ns++] = (store_section){TAG_MRGO, 0, mrgo, MRGO_SIZE};
    secs[ns++] = (store_section){TAG_MENT, 0, ment, m->n_entries * MENT_SIZE};
    secs[ns++] = (store_section){TAG_MASN, 0, masn, m->n_asn * MASN_SIZE};
    secs[ns++] = (store_section){TAG_MHIS, 0, mhis, m->n_hist * MHIS_SIZE};
    rc = store_write(path, secs, ns, errmsg);
done:
    index_sections_free(&is);
    chrys_free(ment);
    chrys_free(masn);
    chrys_free(mhis);
    return rc;
}

static int need_section(store_reader *r, uint32_t tag, uint64_t unit, uint64_t *count, char **errmsg)
{
    char t[5];
    int i = store_find(r, tag);
    if (i < 0)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: merger section %s missing (not a merger store?)",
                                r->name, store_tag_name(tag, t));
    if (r->sec[i].len % unit)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: section %s length %llu is not a multiple of %llu",
                                r->name, store_tag_name(tag, t), (unsigned long long)r->sec[i].len,
                                (unsigned long long)unit);
    *count = r->sec[i].len / unit;
    return CHRYS_OK;
}

/* The loaded index as a merger's entries: float32 cosine rows in dense slots, ids exactly
 * 0..n_ent-1. */
static int check_entries_index(const chrys_index *ix, uint64_t n_ent, const char *path, char **errmsg)
{
    if (!index_keeps_floats(ix) || !index_has_floats(ix) || ix->n_dead) /* merges rewrite float32 entries, in dense slots */
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: a merger store needs float32 entries without removed ones", path);
    if (ix->metric != CHRYS_METRIC_COSINE || n_ent != ix->n)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: merger has %llu entries but the index holds %zu cosine rows",
                                path, (unsigned long long)n_ent, ix->n);
    for (size_t s = 0; s < ix->n; s++)
        if (ix->ids[s] >= n_ent) /* ids unique and < n: exactly 0..n-1 */
            return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: entry id %llu out of range", path,
                                    (unsigned long long)ix->ids[s]);
    return CHRYS_OK;
}

/* The options in MRGO, checked as chrys_merger_new checks them. */
static int opts_from_mrgo(const unsigned char *mrgo, uint32_t dim, chrys_merge_opts *o, const char *path,
                          char **errmsg)
{
    chrys_merge_opts_init(o);
    o->dim = dim;
    o->threshold = get_f64le(mrgo + MRGO_THRESHOLD);
    o->weight_old = get_f64le(mrgo + MRGO_W_OLD);
    o->weight_new = get_f64le(mrgo + MRGO_W_NEW);
    o->variant = (chrys_merge_variant)get_u32le(mrgo + MRGO_VARIANT);
    uint32_t flags = get_u32le(mrgo + MRGO_FLAGS);
    o->renormalize = flags & 1;
    o->mean_update = (flags >> 1) & 1;
    int bad_reserved = 0;
    for (int i = MRGO_RESERVED; i < MRGO_SIZE; i++) bad_reserved |= mrgo[i];
    char *why = NULL;
    if (bad_reserved || (flags & ~MRGO_FLAGS_KNOWN) || merger_check_opts(o, &why)) {
        int rc = chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: MRGO: invalid options%s%s", path, why ? ": " : "", why ? why : "");
        chrys_free(why);
        return rc;
    }
    return CHRYS_OK;
}

/* MENT, MASN and MHIS into m (sized for them), checked against each other and MRGO's counters;
 * buf holds the largest of the three. */
static int read_bookkeeping(store_reader *r, chrys_merger *m, unsigned char *buf, uint64_t n_ent, uint64_t n_asn,
                            uint64_t n_hist, const char *path, char **errmsg)
{
    int rc;
    if ((rc = store_read_section(r, store_find(r, TAG_MENT), buf, errmsg))) return rc;
    uint64_t total_merges = 0;
    for (size_t e = 0; e < n_ent; e++) {
        const unsigned char *p = buf + e * MENT_SIZE;
        m->merged_count[e] = get_u32le(p);
        m->similarity[e] = get_f64le(p + 8);
        m->first_record[e] = get_u64le(p + 16);
        if (m->merged_count[e] < 1 || get_u32le(p + 4) != 0 ||
            (m->merged_count[e] > 1 && !isfinite(m->similarity[e])))
            return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: MENT: entry %zu is invalid", path, e);
        total_merges += m->merged_count[e] - 1;
    }
    if ((rc = store_read_section(r, store_find(r, TAG_MASN), buf, errmsg))) return rc;
    for (size_t a = 0; a < n_asn; a++) {
        uint64_t rid = get_u64le(buf + a * MASN_SIZE), e = get_u64le(buf + a * MASN_SIZE + 8);
        if (rid == CHRYS_NO_ID || e >= n_ent || idmap_get(&m->seen, rid) != CHRYS_NO_SLOT)
            return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: MASN: record %zu is invalid or repeated", path, a);
        m->asn_rec[a] = rid;
        m->asn_entry[a] = e;
        idmap_put(&m->seen, rid, (uint32_t)a);
    }
    m->n_asn = n_asn;
    if (m->merged != total_merges || m->added != n_ent || m->merged + m->added != n_asn ||
        m->records != n_asn + m->skipped)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: merger counters disagree with its entries", path);
    if ((rc = store_read_section(r, store_find(r, TAG_MHIS), buf, errmsg))) return rc;
    for (size_t h = 0; h < n_hist; h++)
        for (int f = 0; f < 5; f++) m->hist[h][f] = get_u64le(buf + h * MHIS_SIZE + f * 8);
    m->n_hist = n_hist;
    return CHRYS_OK;
}

int chrys_merger_open(const char *path, chrys_merger **out, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!out) return CHRYS_INVALID;
    *out = NULL;
    if (!path) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "path is required");
    store_reader r;
    int rc = store_reader_open_file(&r, path, errmsg);
    if (rc) return rc;
    chrys_merger *m = NULL;
    chrys_index *ix = NULL;
    unsigned char *buf = NULL, mrgo[MRGO_SIZE];
    uint64_t n_ent, n_asn, n_hist, one;
    if ((rc = index_load_reader(&r, &ix, errmsg))) goto fail;
    if ((rc = need_section(&r, TAG_MRGO, MRGO_SIZE, &one, errmsg)) ||
        (rc = need_section(&r, TAG_MENT, MENT_SIZE, &n_ent, errmsg)) ||
        (rc = need_section(&r, TAG_MASN, MASN_SIZE, &n_asn, errmsg)) ||
        (rc = need_section(&r, TAG_MHIS, MHIS_SIZE, &n_hist, errmsg)))
        goto fail;
    if (one != 1 || (rc = store_read_section(&r, store_find(&r, TAG_MRGO), mrgo, errmsg))) {
        if (!rc) rc = chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: MRGO has the wrong size", path);
        goto fail;
    }
    chrys_merge_opts o;
    if ((rc = check_entries_index(ix, n_ent, path, errmsg)) || (rc = opts_from_mrgo(mrgo, ix->dim, &o, path, errmsg)))
        goto fail;
    if (!(m = merger_alloc(&o)) || merger_reserve_entries(m, n_ent) || merger_reserve_records(m, n_asn) ||
        (n_hist && !(m->hist = chrys_malloc(n_hist * sizeof *m->hist)))) {
        rc = chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    m->ix = ix;
    ix = NULL;
    merger_index_for_merging(m);
    m->n_entries = n_ent;
    m->records = get_u64le(mrgo + MRGO_RECORDS);
    m->merged = get_u64le(mrgo + MRGO_MERGED);
    m->added = get_u64le(mrgo + MRGO_ADDED);
    m->skipped = get_u64le(mrgo + MRGO_SKIPPED);
    size_t big = n_ent * MENT_SIZE;
    if (n_asn * MASN_SIZE > big) big = n_asn * MASN_SIZE;
    if (n_hist * MHIS_SIZE > big) big = n_hist * MHIS_SIZE;
    if (!(buf = chrys_malloc(big + 1))) {
        rc = chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    if ((rc = read_bookkeeping(&r, m, buf, n_ent, n_asn, n_hist, path, errmsg))) goto fail;
    m->mark_records = m->records;
    m->mark_merged = m->merged;
    m->mark_added = m->added;
    m->mark_skipped = m->skipped;
    chrys_free(buf);
    store_reader_close(&r);
    *out = m;
    return CHRYS_OK;
fail:
    chrys_free(buf);
    chrys_index_free(ix);
    chrys_merger_free(m);
    store_reader_close(&r);
    return rc;
}

/*
 * hnsw_store.c: the HNSW graph's store sections (HNSW header, HNLV levels, HNL0 level-0 links,
 * HNUP upper links) and the loader's checks of every link, level and the entry point.
 */
#include <stdio.h>

#include "hnsw_graph.h"
#include "store/codec.h"
#include "store/store.h"

/* ------------------------------------------------------------------------------------------
 * Persistence
 */
#define HH_M 0
#define HH_M0 4
#define HH_EFC 8
#define HH_MAXLEVEL 12 /* i32 */
#define HH_ENTRY 16
#define HH_RESERVED0 20
#define HH_RNG 24
#define HH_UPWORDS 32 /* u64: u32 words in HNUP */
#define HH_RESERVED1 40
#define HH_SIZE 64

int hnsw_store_sections(const chrys_index *ix, store_section *secs, uint32_t *ns, unsigned char *hdr,
                        unsigned char **up_out)
{
    const hnsw *h = ix->hnsw;
    uint32_t n = 0;
    uint64_t words = 0;
    for (size_t v = 0; v < ix->n; v++) words += (uint64_t)h->level[v] * (1 + h->M);
    unsigned char *up = chrys_malloc(words ? words * 4 : 1);
    if (!up) return CHRYS_NOMEM;
    size_t o = 0;
    for (size_t v = 0; v < ix->n; v++)
        for (size_t i = 0; i < (size_t)h->level[v] * (1 + h->M); i++, o += 4) put_u32le(up + o, h->up[v][i]);
    memset(hdr, 0, HH_SIZE);
    put_u32le(hdr + HH_M, h->M);
    put_u32le(hdr + HH_M0, h->M0);
    put_u32le(hdr + HH_EFC, h->efc);
    put_u32le(hdr + HH_MAXLEVEL, (uint32_t)h->max_level);
    put_u32le(hdr + HH_ENTRY, h->entry);
    put_u64le(hdr + HH_RNG, h->rng);
    put_u64le(hdr + HH_UPWORDS, words);
    secs[n++] = (store_section){TAG_HNSW, 0, hdr, HH_SIZE};
    secs[n++] = (store_section){TAG_HNLV, 0, h->level, ix->n};
    secs[n++] = (store_section){TAG_HNL0, 0, h->l0, ix->n * (1 + (uint64_t)h->M0) * 4};
    secs[n++] = (store_section){TAG_HNUP, 0, up, words * 4};
    *ns = n;
    *up_out = up;
    return CHRYS_OK;
}

static int bad_list(const chrys_index *ix, const hnsw *h, uint32_t v, int l, const uint32_t *ls, char *why, size_t cap)
{
    if (ls[0] > max_links(h, l)) return snprintf(why, cap, "node %u level %d has %u links (cap %u)", v, l, ls[0], max_links(h, l));
    for (uint32_t j = 0; j < ls[0]; j++) {
        uint32_t t = ls[1 + j];
        if (t >= ix->n) return snprintf(why, cap, "node %u level %d links to %u of %zu nodes", v, l, t, ix->n);
        if (t == v) return snprintf(why, cap, "node %u level %d links to itself", v, l);
        if (h->level[t] < l) return snprintf(why, cap, "node %u level %d links to node %u of level %u", v, l, t, h->level[t]);
        for (uint32_t i = 0; i < j; i++)
            if (ls[1 + i] == t) return snprintf(why, cap, "node %u level %d links twice to %u", v, l, t);
    }
    return 0;
}

int hnsw_read_header(store_reader *r, unsigned char *hdr, uint32_t *M, uint32_t *efc, char **errmsg)
{
    int ih = store_find(r, TAG_HNSW);
    if (ih < 0) return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNSW index without its graph sections", r->name);
    if (r->sec[ih].len != HH_SIZE)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNSW header has %llu bytes", r->name, (unsigned long long)r->sec[ih].len);
    int rc = store_read_section(r, ih, hdr, errmsg);
    if (rc) return rc;
    uint32_t m = get_u32le(hdr + HH_M), m0 = get_u32le(hdr + HH_M0), e = get_u32le(hdr + HH_EFC);
    int32_t maxl = (int32_t)get_u32le(hdr + HH_MAXLEVEL);
    int bad = get_u32le(hdr + HH_RESERVED0) != 0;
    for (int i = HH_RESERVED1; i < HH_SIZE; i++) bad |= hdr[i];
    if (bad || m < 2 || m > HNSW_MAX_M || m0 != 2 * m || e < 1 || e > CHRYS_LIM_HNSW_MAX_EFC || maxl < -1 || maxl >= HNSW_MAX_LEVEL)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNSW header is invalid (M %u, M0 %u, efc %u, max level %d)", r->name,
                                m, m0, e, maxl);
    *M = m;
    *efc = e;
    return CHRYS_OK;
}

int hnsw_load(store_reader *r, const unsigned char *hdr, chrys_index *ix, char **errmsg)
{
    int il = store_find(r, TAG_HNLV), i0 = store_find(r, TAG_HNL0), iu = store_find(r, TAG_HNUP), rc;
    if (il < 0 || i0 < 0 || iu < 0)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNSW index without its graph sections", r->name);
    hnsw *h = ix->hnsw; /* created with the header's M and ef_construction (hnsw_read_header) */
    uint32_t M = h->M, M0 = h->M0;
    int32_t maxl = (int32_t)get_u32le(hdr + HH_MAXLEVEL);
    uint32_t entry = get_u32le(hdr + HH_ENTRY);
    uint64_t words = get_u64le(hdr + HH_UPWORDS);
    if (r->sec[il].len != ix->n || r->sec[i0].len != ix->n * (1 + (uint64_t)M0) * 4 || r->sec[iu].len != words * 4)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNSW sections do not match %zu nodes", r->name, ix->n);
    h->rng = get_u64le(hdr + HH_RNG);
    if ((rc = hnsw_reserve(ix, ix->cap ? ix->cap : 1))) /* index_reserve sized it unless the index is empty */
        return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", r->name);
    if ((rc = store_read_section(r, il, h->level, errmsg)) || (rc = store_read_section(r, i0, h->l0, errmsg))) return rc;
    uint64_t want = 0;
    for (size_t v = 0; v < ix->n; v++) {
        /* a tombstone may sit above the live maximum (it was the entry point when removed) */
        if ((int)h->level[v] > (alive(ix, (uint32_t)v) ? maxl : HNSW_MAX_LEVEL - 1))
            return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNLV: node %zu has level %u above the maximum %d", r->name, v,
                                    h->level[v], alive(ix, (uint32_t)v) ? maxl : HNSW_MAX_LEVEL - 1);
        want += (uint64_t)h->level[v] * (1 + M);
    }
    if (want != words) return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNUP: %llu words, levels need %llu", r->name,
                                                (unsigned long long)words, (unsigned long long)want);
    unsigned char *up = chrys_malloc(words ? words * 4 : 1);
    if (!up) return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", r->name);
    if ((rc = store_read_section(r, iu, up, errmsg))) {
        chrys_free(up);
        return rc;
    }
    size_t o = 0;
    for (size_t v = 0; v < ix->n && !rc; v++) {
        size_t nw = (size_t)h->level[v] * (1 + M);
        if (!nw) continue;
        if (!(h->up[v] = chrys_malloc(nw * 4))) rc = CHRYS_NOMEM;
        for (size_t i = 0; i < nw && !rc; i++, o += 4) h->up[v][i] = get_u32le(up + o);
    }
    chrys_free(up);
    if (rc) return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", r->name);
    char why[160];
    for (size_t v = 0; v < ix->n; v++)
        for (int l = 0; l <= h->level[v]; l++)
            if (bad_list(ix, h, (uint32_t)v, l, links(h, (uint32_t)v, l), why, sizeof why))
                return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNSW graph: %s", r->name, why);
    size_t live = ix->n - ix->n_dead;
    if (live == 0 ? entry != CHRYS_NO_SLOT && entry >= ix->n
                  : entry >= ix->n || !alive(ix, entry) || (int)h->level[entry] != maxl)
        return chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: HNSW entry point %u is invalid", r->name, entry);
    h->entry = live ? entry : CHRYS_NO_SLOT;
    h->max_level = live ? maxl : -1;
    return CHRYS_OK;
}

/*
 * spec.c: index specifications, parsed and formatted.
 *
 * Specifications: FAISS's index_factory forms plus the Chrysalis roadmap's names in any case
 * (Flat; IVFFlat, whose nlist comes from chrys_index_opts.nlist or, when 0, from the planner's
 * ivf_plan_nlist(n) each time it trains: at auto_threshold vectors and again at 4x growth; HNSW =
 * HNSW32). They are resolved here so that every caller (CLI, C, bindings) reads them alike.
 */
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "hnsw.h"
#include "index.h"

/* ------------------------------------------------------------------------------------------
 * Specifications
 */
int chrys_index_spec_parse(const char *spec, chrys_index_kind *kind, uint32_t *nlist, int *sq8, int *is_auto,
                           char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    static const char *expected = "expected Flat, SQ8, SQ8,RFlat, IVFFlat, IVF<nlist>,Flat, IVF<nlist>,SQ8, "
                                  "IVF<nlist>,SQ8,RFlat, HNSW, HNSW<M>, HNSW<M>,SQ8, HNSW<M>,SQ8,RFlat or auto";
    *kind = CHRYS_INDEX_FLAT;
    *nlist = 0;
    *sq8 = 0;
    *is_auto = 0;
    if (!spec) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec missing: %s", expected);
    if (!strcasecmp(spec, "auto")) {
        *is_auto = 1;
        return CHRYS_OK;
    }
    /* The Chrysalis roadmap's index types (FAISS_INDEX_TYPE), in any case: Flat; IVFFlat, whose
     * list count comes from chrys_index_opts.nlist or, when that is 0, from the planner when the
     * index trains; HNSW, with M 32. */
    if (!strcasecmp(spec, "Flat")) return CHRYS_OK;
    if (!strcasecmp(spec, "IVFFlat")) {
        *kind = CHRYS_INDEX_IVF;
        return CHRYS_OK;
    }
    if (!strcasecmp(spec, "HNSW")) {
        *kind = CHRYS_INDEX_HNSW;
        *nlist = CHRYS_HNSW_DEFAULT_M;
        return CHRYS_OK;
    }
    if (!strcmp(spec, "SQ8") || !strcmp(spec, "SQ8,RFlat")) {
        *sq8 = spec[3] ? 2 : 1;
        return CHRYS_OK;
    }
    const char *p = spec;
    int ivf = !strncmp(p, "IVF", 3), is_hnsw = !strncmp(p, "HNSW", 4);
    if (ivf || is_hnsw) {
        p += ivf ? 3 : 4;
        char *end;
        if (*p < '0' || *p > '9')
            return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec '%s': a number must follow %s (%s)", spec,
                                    ivf ? "IVF" : "HNSW", expected);
        unsigned long v = strtoul(p, &end, 10);
        const char *rest = end;
        int with_sq8 = 0;
        if (!strcmp(rest, ",SQ8")) with_sq8 = 1;
        else if (!strcmp(rest, ",SQ8,RFlat")) with_sq8 = 2;
        else if (ivf ? strcmp(rest, ",Flat") != 0 : (*rest != 0 && strcmp(rest, ",Flat") != 0))
            return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec '%s': unexpected '%s' (%s)", spec, rest, expected);
        if (ivf && (v < 1 || v > 1u << 20))
            return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec '%s': nlist must be 1..%u", spec, 1u << 20);
        if (is_hnsw) {
            if (v < 2 || v > 128)
                return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec '%s': M must be 2..128", spec);
            *kind = CHRYS_INDEX_HNSW;
            *nlist = (uint32_t)v;
            *sq8 = with_sq8;
            return CHRYS_OK;
        }
        *kind = CHRYS_INDEX_IVF;
        *nlist = (uint32_t)v;
        *sq8 = with_sq8;
        return CHRYS_OK;
    }
    return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec '%s' not understood: %s", spec, expected);
}

void ivf_spec_string(const chrys_index *ix, char *buf, size_t cap)
{
    if (ix->kind == CHRYS_INDEX_HNSW) {
        uint32_t M, efc;
        int ml;
        hnsw_params(ix, &M, &efc, &ml);
        snprintf(buf, cap, "HNSW%u%s", M, !ix->sq8 ? "" : ix->refine ? ",SQ8,RFlat" : ",SQ8");
    } else if (ix->kind == CHRYS_INDEX_IVF) {
        uint32_t nl = ix->nlist ? ix->nlist : ix->want_nlist;
        const char *codes = !ix->sq8 ? "Flat" : ix->refine ? "SQ8,RFlat" : "SQ8";
        if (nl) snprintf(buf, cap, "IVF%u,%s", nl, codes);
        else snprintf(buf, cap, "IVF%s%s", ix->sq8 ? "," : "", codes); /* untrained, nlist from the planner */
    }
    else snprintf(buf, cap, "%s", !ix->sq8 ? "Flat" : ix->refine ? "SQ8,RFlat" : "SQ8");
}

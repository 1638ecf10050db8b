/*
 * spec.c: index specifications, parsed and formatted.
 *
 * Specifications: FAISS's index_factory forms plus the Chrysalis roadmap's names in any case
 * (Flat; IVFFlat, whose nlist comes from chrys_index_opts.nlist or, when 0, from the planner's
 * ivf_plan_nlist(n) each time it trains: at auto_threshold vectors and again at 4x growth; HNSW =
 * HNSW32). They are resolved here so that every caller (CLI, C, bindings) reads them alike.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "chrys_limits.h"
#include "hnsw.h"
#include "index.h"
#include "spec.h"

/* Parse spec into out (every field). */
static int spec_parse(const char *spec, chrys_index_spec *out, char **errmsg)
{
    static const char *expected = "expected Flat, SQ8, SQ8,RFlat, IVFFlat, IVF<nlist>,Flat, IVF<nlist>,SQ8, "
                                  "IVF<nlist>,SQ8,RFlat, HNSW, HNSW<M>, HNSW<M>,SQ8, HNSW<M>,SQ8,RFlat or auto";
    memset(out, 0, sizeof *out);
    out->struct_size = sizeof *out;
    out->kind = CHRYS_INDEX_FLAT;
    if (!spec) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec missing: %s", expected);
    if (!strcasecmp(spec, "auto")) {
        out->is_auto = 1;
        return CHRYS_OK;
    }
    /* The Chrysalis roadmap's index types (FAISS_INDEX_TYPE), in any case: Flat; IVFFlat, whose
     * list count comes from chrys_index_opts.nlist or, when that is 0, from the planner when the
     * index trains; HNSW, with M 32. */
    if (!strcasecmp(spec, "Flat")) return CHRYS_OK;
    if (!strcasecmp(spec, "IVFFlat")) {
        out->kind = CHRYS_INDEX_IVF;
        return CHRYS_OK;
    }
    if (!strcasecmp(spec, "HNSW")) {
        out->kind = CHRYS_INDEX_HNSW;
        out->hnsw_m = CHRYS_HNSW_DEFAULT_M;
        return CHRYS_OK;
    }
    if (!strcmp(spec, "SQ8") || !strcmp(spec, "SQ8,RFlat")) {
        out->sq8 = 1;
        out->refine = spec[3] != 0;
        return CHRYS_OK;
    }
    const char *p = spec;
    int ivf = !strncmp(p, "IVF", 3), is_hnsw = !strncmp(p, "HNSW", 4);
    if (!ivf && !is_hnsw)
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec '%s' not understood: %s", spec, expected);
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
    if (ivf && (v < 1 || v > CHRYS_LIM_IVF_MAX_NLIST))
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec '%s': nlist must be 1..%u", spec,
                                CHRYS_LIM_IVF_MAX_NLIST);
    if (is_hnsw && (v < CHRYS_LIM_HNSW_MIN_M || v > CHRYS_LIM_HNSW_MAX_M))
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index spec '%s': M must be %d..%d", spec, CHRYS_LIM_HNSW_MIN_M,
                                CHRYS_LIM_HNSW_MAX_M);
    out->kind = ivf ? CHRYS_INDEX_IVF : CHRYS_INDEX_HNSW;
    if (ivf) out->nlist = (uint32_t)v;
    else out->hnsw_m = (uint32_t)v;
    out->sq8 = with_sq8 != 0;
    out->refine = with_sq8 == 2;
    return CHRYS_OK;
}

int index_spec_parse(const char *spec, chrys_index_spec *out, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    return spec_parse(spec, out, errmsg);
}

/* Whether a caller's struct of `size` bytes holds field. */
#define SPEC_HAS(size, field) ((size) >= offsetof(chrys_index_spec, field) + sizeof(((chrys_index_spec *)0)->field))

int chrys_index_spec_parse(const char *spec, chrys_index_spec *out, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!out) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "chrys_index_spec_parse: out is NULL");
    size_t size = out->struct_size ? out->struct_size : sizeof *out;
    if (!SPEC_HAS(size, kind))
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "chrys_index_spec_parse: struct_size %zu too small", size);
    chrys_index_spec full;
    int rc = spec_parse(spec, &full, errmsg);
    /* field by field: a caller built against a smaller struct is never written past its end */
    out->kind = full.kind;
    if (SPEC_HAS(size, nlist)) out->nlist = full.nlist;
    if (SPEC_HAS(size, hnsw_m)) out->hnsw_m = full.hnsw_m;
    if (SPEC_HAS(size, sq8)) out->sq8 = full.sq8;
    if (SPEC_HAS(size, refine)) out->refine = full.refine;
    if (SPEC_HAS(size, is_auto)) out->is_auto = full.is_auto;
    return rc;
}

int chrys_index_spec_with_sq8(const char *spec, char *out, size_t cap, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!out || !cap) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "chrys_index_spec_with_sq8: no output buffer");
    out[0] = 0;
    chrys_index_spec s;
    int rc = spec_parse(spec, &s, errmsg), n;
    if (rc) return rc;
    if (s.is_auto) return chrys_set_errmsg(errmsg, CHRYS_INVALID, "index '%s' has no SQ8 form (use Flat, IVF<nlist>,Flat or HNSW<M>)", spec);
    if (s.sq8) n = snprintf(out, cap, "%s", spec);
    else if (s.kind == CHRYS_INDEX_IVF && !s.nlist)
        return chrys_set_errmsg(errmsg, CHRYS_INVALID, "IVFFlat needs a list count for its SQ8 form (set nlist, or use IVF<nlist>,SQ8)");
    else if (s.kind == CHRYS_INDEX_IVF) n = snprintf(out, cap, "IVF%u,SQ8", s.nlist);
    else if (s.kind == CHRYS_INDEX_HNSW) n = snprintf(out, cap, "HNSW%u,SQ8", s.hnsw_m);
    else n = snprintf(out, cap, "SQ8");
    if (n < 0 || (size_t)n >= cap) {
        out[0] = 0;
        return chrys_set_errmsg(errmsg, CHRYS_LIMIT, "chrys_index_spec_with_sq8: %zu bytes are too few for the result", cap);
    }
    return CHRYS_OK;
}

void index_spec_string(const chrys_index *ix, char *buf, size_t cap)
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

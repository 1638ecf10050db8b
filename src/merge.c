/*
 * merge.c: the semantic merger (Chrysalis EmbeddingMerger / SkillMerger semantics): the API and
 * state (options, creation, getters, growth of the per-entry arrays). The rule and the block
 * engine are in merge_block.c, metadata in merge_meta.c, persistence in merge_store.c.
 */
#include <math.h>
#include <stdio.h>
#include <time.h>

#include "merge.h"
#include "planner.h"

int merger_fail(chrys_merger *m, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    chrys_fail_v(&m->errmsg, &m->errpos, rc, -1, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

/* A failure of record i (id) of the batch: "record I (id ID): " + reason, i in the error info. */
int merger_fail_record(chrys_merger *m, int rc, size_t i, uint64_t id, const char *fmt, ...)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "record %zu (id %llu): ", i, (unsigned long long)id);
    va_list ap;
    va_start(ap, fmt);
    chrys_fail_v(&m->errmsg, &m->errpos, rc, (int64_t)i, prefix, fmt, ap);
    va_end(ap);
    return rc;
}

const char *chrys_merger_errmsg(const chrys_merger *m) { return m && m->errmsg ? m->errmsg : ""; }

int chrys_merger_get_error_info(const chrys_merger *m, chrys_error_info *info)
{
    return m ? chrys_error_info_fill(m->errmsg, &m->errpos, info) : CHRYS_INVALID;
}

void chrys_merge_opts_init(chrys_merge_opts *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->threshold = 0.85;
    o->weight_old = 0.4;
    o->weight_new = 0.6;
    o->variant = CHRYS_MERGE_EMBEDDING;
    o->slow_search_s = 5.0;
    o->index_spec = "auto";
    o->auto_threshold = MERGE_GRAPH_SWITCH;
    o->confirm_margin = 0.01;
}

int merger_check_opts(const chrys_merge_opts *o, char **msg)
{
    if (!o || o->struct_size < offsetof(chrys_merge_opts, user) + sizeof(void *))
        return chrys_set_errmsg(msg, CHRYS_INVALID, "merge opts missing or struct_size too small");
    if (o->dim < 1 || o->dim > CHRYS_MAX_DIM)
        return chrys_set_errmsg(msg, CHRYS_INVALID, "dim %u out of range 1..%d", o->dim, CHRYS_MAX_DIM);
    if (!isfinite(o->threshold) || o->threshold > 1.0 || o->threshold < -1.0)
        return chrys_set_errmsg(msg, CHRYS_INVALID, "threshold %g is not a cosine in [-1, 1]", o->threshold);
    if (!isfinite(o->weight_old) || !isfinite(o->weight_new) || o->weight_old < 0 ||
        o->weight_new < 0 || o->weight_old + o->weight_new <= 0)
        return chrys_set_errmsg(msg, CHRYS_INVALID, "weights must be finite, non-negative, not both zero");
    if ((unsigned)o->variant > CHRYS_MERGE_SKILL)
        return chrys_set_errmsg(msg, CHRYS_INVALID, "unknown merge variant %d", (int)o->variant);
    if (!(o->slow_search_s > 0))
        return chrys_set_errmsg(msg, CHRYS_INVALID, "slow_search_s must be positive");
    if (o->struct_size >= offsetof(chrys_merge_opts, verify) + sizeof(int) &&
        !(o->confirm_margin >= 0 && o->confirm_margin <= 2))
        return chrys_set_errmsg(msg, CHRYS_INVALID, "confirm_margin must be in [0, 2]");
    if (o->struct_size >= offsetof(chrys_merge_opts, ef_construction) + sizeof(uint32_t) &&
        (o->ef_search > CHRYS_LIM_MERGE_MAX_EF_SEARCH || o->ef_construction > CHRYS_LIM_HNSW_MAX_EFC))
        return chrys_set_errmsg(msg, CHRYS_INVALID, "ef_search must be at most %u and ef_construction at most %u",
                                CHRYS_LIM_MERGE_MAX_EF_SEARCH, CHRYS_LIM_HNSW_MAX_EFC);
    return CHRYS_OK;
}

/* A caller's options into a full struct: the fields its struct_size covers, defaults for the
 * rest (a caller built against an older, smaller chrys_merge_opts is never read past its end).
 * Returns CHRYS_INVALID when struct_size does not cover the first version's fields. */
static int import_opts(chrys_merge_opts *dst, const chrys_merge_opts *src, char **msg)
{
    chrys_merge_opts_init(dst);
    if (chrys_struct_in(dst, sizeof *dst, src, offsetof(chrys_merge_opts, user) + sizeof(void *)))
        return chrys_set_errmsg(msg, CHRYS_INVALID, "merge opts missing or struct_size too small");
    return CHRYS_OK;
}

/* The entries' index as the merger drives it: the planner builds HNSW at its threshold. (The
 * rows a block appends are added unlinked and linked together at the block's end:
 * merge_block.c.) */
void merger_index_for_merging(chrys_merger *m)
{
    plan_policy p = {CHRYS_INDEX_HNSW, MERGE_PLAN_M, m->opts.ef_construction ? m->opts.ef_construction : MERGE_HNSW_EFC,
                     "entries move and grow one at a time: a graph, no retraining; float32 kept for exact merging"};
    index_set_plan_policy(m->ix, &p);
}

chrys_merger *merger_alloc(const chrys_merge_opts *o)
{
    chrys_merger *m = chrys_calloc(1, sizeof *m);
    if (!m) return NULL;
    m->opts = *o;
    if (idmap_init(&m->seen, 16)) {
        chrys_free(m);
        return NULL;
    }
    return m;
}

void chrys_merger_free(chrys_merger *m)
{
    if (!m) return;
    chrys_index_free(m->ix);
    chrys_free(m->merged_count);
    chrys_free(m->drift);
    chrys_free(m->similarity);
    chrys_free(m->first_record);
    chrys_free(m->asn_rec);
    chrys_free(m->asn_entry);
    idmap_free(&m->seen);
    chrys_free(m->hist);
    chrys_free(m->errmsg);
    chrys_free(m);
}

int chrys_merger_new(const chrys_merge_opts *opts, chrys_merger **out, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!out) return CHRYS_INVALID;
    *out = NULL;
    chrys_merge_opts o;
    int rc = import_opts(&o, opts, errmsg);
    if (rc || (rc = merger_check_opts(&o, errmsg))) return rc;
    chrys_merger *m = merger_alloc(&o);
    if (!m) return chrys_set_errmsg(errmsg, CHRYS_NOMEM, "out of memory creating merger");
    chrys_index_opts io;
    chrys_index_opts_init(&io);
    io.dim = o.dim;
    io.metric = CHRYS_METRIC_COSINE;
    io.spec = o.index_spec ? o.index_spec : "auto";
    io.auto_threshold = o.auto_threshold ? o.auto_threshold : MERGE_GRAPH_SWITCH;
    io.memory_budget = o.memory_budget;
    if ((rc = chrys_index_new(&io, &m->ix, errmsg))) {
        chrys_merger_free(m);
        return rc;
    }
    if (!index_keeps_floats(m->ix)) { /* every merge reads and rewrites float32 entries */
        chrys_merger_free(m);
        return chrys_set_errmsg(errmsg, CHRYS_INVALID,
                                "index spec '%s': the merger needs float32 entries (add ,RFlat to keep them)", io.spec);
    }
    m->opts.index_spec = NULL; /* not kept: the index carries its own plan */
    merger_index_for_merging(m);
    *out = m;
    return CHRYS_OK;
}

int chrys_merger_configure(chrys_merger *m, const chrys_merge_opts *opts)
{
    if (!m || !opts) return CHRYS_INVALID;
    char *msg = NULL;
    chrys_merge_opts o;
    int rc = import_opts(&o, opts, &msg);
    if (o.dim == 0) o.dim = m->opts.dim;
    o.index_spec = NULL; /* fixed at creation */
    if (!rc) rc = merger_check_opts(&o, &msg);
    if (!rc && o.dim != m->opts.dim) rc = chrys_set_errmsg(&msg, CHRYS_INVALID, "dim %u differs from the merger's %u", o.dim, m->opts.dim);
    if (rc) {
        merger_fail(m, rc, "%s", msg ? msg : "invalid options");
        chrys_free(msg);
        return rc;
    }
    m->opts = o;
    merger_index_for_merging(m);
    return CHRYS_OK;
}

int chrys_merger_get_opts(const chrys_merger *m, chrys_merge_opts *opts)
{
    if (!m || !opts) return CHRYS_INVALID;
    /* as much as the caller's struct holds (struct_size 0: all of it), like chrys_merger_get_stats */
    return chrys_struct_out(opts, &m->opts, sizeof m->opts);
}

const chrys_index *chrys_merger_index(const chrys_merger *m) { return m ? m->ix : NULL; }

int chrys_merger_get_stats(const chrys_merger *m, chrys_merge_stats *st)
{
    if (!m || !st) return CHRYS_INVALID;
    uint64_t next = 0;
    for (size_t a = 0; a < m->n_asn; a++)
        if (m->asn_rec[a] + 1 > next) next = m->asn_rec[a] + 1;
    chrys_merge_stats s = {sizeof s,      m->n_entries,     m->records,       m->merged,
                           m->added,      m->skipped,       m->n_hist,        next,
                           m->approx_records, m->confirmations, m->verified, m->disagreements, m->relinks};
    return chrys_struct_out(st, &s, sizeof s);
}

int chrys_merger_get_entry(const chrys_merger *m, uint64_t e, chrys_merge_entry *out, float *vec)
{
    if (!m || !out) return CHRYS_INVALID;
    if (e >= m->n_entries) return CHRYS_NOTFOUND;
    chrys_merge_entry x = {sizeof x, m->merged_count[e], m->similarity[e], m->first_record[e], NULL};
    chrys_index_get_meta(m->ix, e, &x.meta);
    int rc = chrys_struct_out(out, &x, sizeof x);
    if (!rc && vec) chrys_index_get(m->ix, e, vec);
    return rc;
}

int chrys_merger_lookup(const chrys_merger *m, uint64_t record_id, uint64_t *entry)
{
    if (!m || !entry) return CHRYS_INVALID;
    uint32_t k = idmap_get(&m->seen, record_id);
    if (k == CHRYS_NO_SLOT) return CHRYS_NOTFOUND;
    *entry = m->asn_entry[k];
    return CHRYS_OK;
}

int chrys_merger_get_history(const chrys_merger *m, chrys_merge_run *out, size_t cap, size_t *n_out)
{
    if (!m || !n_out || (!out && cap)) return CHRYS_INVALID;
    *n_out = m->n_hist;
    if (!out) return CHRYS_OK; /* the count only */
    if (cap < m->n_hist) return CHRYS_LIMIT_CAPACITY;
    for (size_t i = 0; i < m->n_hist; i++) /* the rows keep the MHIS section's field order */
        out[i] = (chrys_merge_run){m->hist[i][0], m->hist[i][1], m->hist[i][2], m->hist[i][3], m->hist[i][4]};
    return CHRYS_OK;
}

int chrys_merger_mark_run(chrys_merger *m)
{
    if (!m) return CHRYS_INVALID;
    uint64_t(*h)[5] = chrys_realloc(m->hist, (m->n_hist + 1) * sizeof *h);
    if (!h) return merger_fail(m, CHRYS_NOMEM, "out of memory");
    m->hist = h;
    uint64_t *row = h[m->n_hist++];
    row[0] = (uint64_t)time(NULL);
    row[1] = m->records - m->mark_records;
    row[2] = m->merged - m->mark_merged;
    row[3] = m->added - m->mark_added;
    row[4] = m->skipped - m->mark_skipped;
    m->mark_records = m->records;
    m->mark_merged = m->merged;
    m->mark_added = m->added;
    m->mark_skipped = m->skipped;
    return CHRYS_OK;
}

/* ------------------------------------------------------------------------------------------
 * Growth of the per-entry and per-record arrays (reserved before a block is settled, so that
 * settling itself cannot fail on the bookkeeping).
 */
int merger_reserve_entries(chrys_merger *m, size_t extra)
{
    size_t need = m->n_entries + extra;
    if (need <= m->cap) return CHRYS_OK;
    size_t cap = chrys_grow_cap(m->cap, need, 64);
    if (cap > SIZE_MAX / sizeof(uint64_t)) return CHRYS_NOMEM;
    uint32_t *mc = chrys_realloc(m->merged_count, cap * sizeof *mc);
    if (!mc) return CHRYS_NOMEM;
    m->merged_count = mc;
    float *dr = chrys_realloc(m->drift, cap * sizeof *dr);
    if (!dr) return CHRYS_NOMEM;
    m->drift = dr;
    for (size_t e = m->cap; e < cap; e++) dr[e] = 0;
    double *sim = chrys_realloc(m->similarity, cap * sizeof *sim);
    if (!sim) return CHRYS_NOMEM;
    m->similarity = sim;
    uint64_t *fr = chrys_realloc(m->first_record, cap * sizeof *fr);
    if (!fr) return CHRYS_NOMEM;
    m->first_record = fr;
    m->cap = cap;
    return CHRYS_OK;
}

int merger_reserve_records(chrys_merger *m, size_t extra)
{
    size_t need = m->n_asn + extra;
    if (idmap_reserve(&m->seen, need)) return CHRYS_NOMEM;
    if (need <= m->cap_asn) return CHRYS_OK;
    size_t cap = chrys_grow_cap(m->cap_asn, need, 64);
    if (cap > SIZE_MAX / sizeof(uint64_t)) return CHRYS_NOMEM;
    uint64_t *a = chrys_realloc(m->asn_rec, cap * sizeof *a);
    if (!a) return CHRYS_NOMEM;
    m->asn_rec = a;
    uint64_t *b = chrys_realloc(m->asn_entry, cap * sizeof *b);
    if (!b) return CHRYS_NOMEM;
    m->asn_entry = b;
    m->cap_asn = cap;
    return CHRYS_OK;
}


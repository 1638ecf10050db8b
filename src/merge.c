/*
 * merge.c: the semantic merger (Chrysalis EmbeddingMerger / SkillMerger semantics).
 *
 * State: entries live in a cosine Flat index under ids 0, 1, 2, ... (creation order), with their
 * metadata (the creating record's JSON, updated on merges) as the index's per-row metadata.
 * Beside it, per entry: merged_count, the similarity of the last merge, the creating record; and
 * the map record id -> entry. All of it is saved in the store file next to the index sections.
 *
 * The rule, for each record in order (the original's, see docs/MERGER.md):
 *   best := none, score 0; for each entry in creation order, if cos(record, entry) > best score
 *   it becomes the best (so the oldest entry wins ties and cos <= 0 never matches);
 *   if best exists and its score >= threshold: entry := w_old*entry + w_new*record, merged_count
 *   += 1, similarity_score := score, and metadata updated; else the record becomes a new entry.
 * "cos" is computed in double precision (the kernel table's dot_f64) on the unit-length float32
 * copies the index holds, as flat_search_prepared's rescoring does, so every path below agrees
 * to the last bit.
 *
 * Batch merge, exact: records are taken in blocks of B. One parallel search finds each record's
 * top-K entries in the state before the block. Settling the block in order, record i's best entry
 * is the better of (a) its first candidate that no earlier record of the block changed (entries
 * untouched in the block still have the score the search computed, and the candidate list is in
 * exact order, so this is the best untouched entry), and (b) a rescoring, against the record, of
 * every entry changed or created earlier in the block. If all K candidates were changed, the
 * record is searched again against the live index. Decisions therefore equal the one-at-a-time
 * algorithm's exactly; tests/unit/test_merge.c checks this against an independent oracle.
 *
 * Index-backed (past the planner's threshold, docs/MERGER.md): the block's candidates come from
 * the planner's HNSW graph (or an IVF index) instead of the exact scan; records whose best
 * candidate lies within confirm_margin of the threshold get exact candidates from one exact scan
 * for the block; settling is the same. Merges rewrite an entry's row and code in place; at the
 * block's end the new entries are linked and those that moved far are linked again.
 *
 * Ownership: the merger owns its index; chrys_merger_index lends it out read-only.
 * Threads: a merger is used by one thread at a time; merges use n_threads workers internally.
 */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <time.h>

#include "hnsw.h"
#include "index.h"
#include "kernels/dist.h"
#include "planner.h"
#include "store/codec.h"
#include "store/store.h"

#define MERGE_K 8 /* candidates per record from the block search */
#define MERGE_MIN_NLIST 256 /* below this, exact block search is cheaper than the IVF index */
#define MERGE_MAX_BLOCK 2048 /* records settled together, at most (automatic block size) */
#define MERGE_RELINK_DRIFT 0.5 /* radians an entry may move before it is linked again into the graph */
#define MERGE_HNSW_EF 64    /* default ef_search of the merger's HNSW walks */
/* Default switch point (auto_threshold) of a merger store: exact Flat merging, the exact merger's
 * decisions and deterministic at any thread count, below this many entries; the HNSW graph from
 * here on. At 1,000 (the index default) a 20,000-record near-threshold stream was slower on the
 * graph than exact and its entries changed from run to run at 2 threads (issue 16). The exact
 * block merger is not slower than the graph up to about 10,000-20,000 entries on 1024-d clustered
 * streams and 2.4x slower at 46,920 (bench/MERGE.md, bench/MERGE_SCALE.md), hence 20,000. */
#define MERGE_GRAPH_SWITCH 20000

struct chrys_merger {
    chrys_merge_opts opts;
    chrys_index *ix;      /* entries: id == entry number */
    size_t n_entries, cap;
    uint32_t *merged_count;
    float *drift;         /* radians the entry moved since it was last linked into the HNSW graph */
    uint64_t relinks;
    double *similarity;   /* NaN: never merged */
    uint64_t *first_record;
    /* record id -> entry, in merge order, plus a hash for duplicate detection */
    uint64_t *asn_rec, *asn_entry;
    size_t n_asn, cap_asn;
    idmap seen;           /* record id -> index into asn arrays */
    uint64_t records, merged, added, skipped;
    uint64_t (*hist)[5];
    size_t n_hist;
    uint64_t mark_records, mark_merged, mark_added, mark_skipped;
    uint64_t approx_records, confirmations, verified, disagreements;
    char *errmsg;
};

static int fail(chrys_merger *m, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(chrys_merger *m, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = chrys_vmprintf(fmt, ap);
    va_end(ap);
    chrys_free(m->errmsg);
    m->errmsg = s;
    return rc;
}

const char *chrys_merger_errmsg(const chrys_merger *m) { return m && m->errmsg ? m->errmsg : ""; }

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

static int check_opts(const chrys_merge_opts *o, char **msg)
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
    if (!src || src->struct_size < offsetof(chrys_merge_opts, user) + sizeof(void *))
        return chrys_set_errmsg(msg, CHRYS_INVALID, "merge opts missing or struct_size too small");
    memcpy(dst, src, src->struct_size < sizeof *dst ? src->struct_size : sizeof *dst);
    dst->struct_size = sizeof *dst;
    return CHRYS_OK;
}

/* The entries' index as the merger drives it: the planner builds HNSW at its threshold, and the
 * rows a block appends are linked together at the block's end. */
static void index_for_merging(chrys_merger *m)
{
    plan_policy p = {CHRYS_INDEX_HNSW, MERGE_PLAN_M, m->opts.ef_construction ? m->opts.ef_construction : MERGE_HNSW_EFC,
                     "entries move and grow one at a time: a graph, no retraining; float32 kept for exact merging"};
    index_set_plan_policy(m->ix, &p);
    m->ix->defer_links = 1;
}

static chrys_merger *merger_alloc(const chrys_merge_opts *o)
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
    if (rc || (rc = check_opts(&o, errmsg))) return rc;
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
    index_for_merging(m);
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
    if (!rc) rc = check_opts(&o, &msg);
    if (!rc && o.dim != m->opts.dim) rc = chrys_set_errmsg(&msg, CHRYS_INVALID, "dim %u differs from the merger's %u", o.dim, m->opts.dim);
    if (rc) {
        fail(m, rc, "%s", msg ? msg : "invalid options");
        chrys_free(msg);
        return rc;
    }
    m->opts = o;
    index_for_merging(m);
    return CHRYS_OK;
}

int chrys_merger_get_opts(const chrys_merger *m, chrys_merge_opts *opts)
{
    if (!m || !opts) return CHRYS_INVALID;
    /* as much as the caller's struct holds (struct_size 0: all of it), like chrys_merger_get_stats */
    size_t sz = opts->struct_size && opts->struct_size < sizeof m->opts ? opts->struct_size : sizeof m->opts;
    memcpy(opts, &m->opts, sz);
    opts->struct_size = (uint32_t)sz;
    return CHRYS_OK;
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
    size_t sz = st->struct_size && st->struct_size < sizeof s ? st->struct_size : sizeof s;
    memcpy(st, &s, sz);
    st->struct_size = (uint32_t)sz;
    return CHRYS_OK;
}

int chrys_merger_get_entry(const chrys_merger *m, uint64_t e, chrys_merge_entry *out, float *vec)
{
    if (!m || !out) return CHRYS_INVALID;
    if (e >= m->n_entries) return CHRYS_NOTFOUND;
    chrys_merge_entry x = {sizeof x, m->merged_count[e], m->similarity[e], m->first_record[e], NULL};
    chrys_index_get_meta(m->ix, e, &x.meta);
    size_t sz = out->struct_size && out->struct_size < sizeof x ? out->struct_size : sizeof x;
    memcpy(out, &x, sz);
    out->struct_size = (uint32_t)sz;
    if (vec) chrys_index_get(m->ix, e, vec);
    return CHRYS_OK;
}

int chrys_merger_lookup(const chrys_merger *m, uint64_t record_id, uint64_t *entry)
{
    if (!m || !entry) return CHRYS_INVALID;
    uint32_t k = idmap_get(&m->seen, record_id);
    if (k == CHRYS_NO_SLOT) return CHRYS_NOTFOUND;
    *entry = m->asn_entry[k];
    return CHRYS_OK;
}

int chrys_merger_history(const chrys_merger *m, uint64_t (*out)[5], size_t cap, size_t *n_out)
{
    if (!m || !n_out) return CHRYS_INVALID;
    *n_out = m->n_hist;
    for (size_t i = 0; out && i < m->n_hist && i < cap; i++) memcpy(out[i], m->hist[i], sizeof out[i]);
    return CHRYS_OK;
}

int chrys_merger_mark_run(chrys_merger *m)
{
    if (!m) return CHRYS_INVALID;
    uint64_t(*h)[5] = chrys_realloc(m->hist, (m->n_hist + 1) * sizeof *h);
    if (!h) return fail(m, CHRYS_NOMEM, "out of memory");
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
static int reserve_entries(chrys_merger *m, size_t extra)
{
    size_t need = m->n_entries + extra;
    if (need <= m->cap) return CHRYS_OK;
    size_t cap = m->cap ? m->cap : 64;
    while (cap < need) cap += cap / 2;
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

static int reserve_records(chrys_merger *m, size_t extra)
{
    size_t need = m->n_asn + extra;
    if (idmap_reserve(&m->seen, need)) return CHRYS_NOMEM;
    if (need <= m->cap_asn) return CHRYS_OK;
    size_t cap = m->cap_asn ? m->cap_asn : 64;
    while (cap < need) cap += cap / 2;
    uint64_t *a = chrys_realloc(m->asn_rec, cap * sizeof *a);
    if (!a) return CHRYS_NOMEM;
    m->asn_rec = a;
    uint64_t *b = chrys_realloc(m->asn_entry, cap * sizeof *b);
    if (!b) return CHRYS_NOMEM;
    m->asn_entry = b;
    m->cap_asn = cap;
    return CHRYS_OK;
}

/* ------------------------------------------------------------------------------------------
 * Metadata updates on merge (cJSON). Unions keep the old items first, then new ones not yet
 * present (compared by their JSON text); the original's list(set(...)) has no defined order.
 */
static void json_union(cJSON *dst_obj, const char *key, const cJSON *add)
{
    if (!cJSON_IsArray(add)) add = NULL;
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(dst_obj, key);
    if (!cJSON_IsArray(arr)) {
        cJSON_DeleteItemFromObjectCaseSensitive(dst_obj, key);
        arr = cJSON_AddArrayToObject(dst_obj, key);
        if (!arr) return;
    }
    for (const cJSON *it = add ? add->child : NULL; it; it = it->next) {
        char *t = cJSON_PrintUnformatted(it);
        int found = 0;
        for (const cJSON *e = arr->child; e && t && !found; e = e->next) {
            char *u = cJSON_PrintUnformatted(e);
            found = u && !strcmp(t, u);
            cJSON_free(u);
        }
        if (t && !found) cJSON_AddItemToArray(arr, cJSON_Duplicate(it, 1));
        cJSON_free(t);
    }
}

/* New metadata string (owned, chrys_ allocator) for entry meta `old` merged with record meta
 * `rec`, or NULL when neither has metadata. *rc is set on allocation failure. */
static char *merged_meta(const chrys_merger *m, const char *old, const char *rec, int *rc)
{
    *rc = CHRYS_OK;
    if (!old && !rec) return NULL;
    cJSON *eo = old ? cJSON_Parse(old) : cJSON_CreateObject();
    cJSON *ro = rec ? cJSON_Parse(rec) : NULL;
    char *out = NULL;
    if (old && eo && !cJSON_IsObject(eo)) {
        *rc = CHRYS_CORRUPT; /* stored metadata of an entry is not a JSON object */
        cJSON_Delete(eo);
        cJSON_Delete(ro);
        return NULL;
    }
    if (!eo) {
        *rc = old ? CHRYS_CORRUPT : CHRYS_NOMEM;
        cJSON_Delete(ro);
        return NULL;
    }
    if (m->opts.variant == CHRYS_MERGE_EMBEDDING) {
        const cJSON *pa = ro ? cJSON_GetObjectItemCaseSensitive(ro, "processed_at") : NULL;
        cJSON_DeleteItemFromObjectCaseSensitive(eo, "last_merged_at");
        if (pa) cJSON_AddItemToObject(eo, "last_merged_at", cJSON_Duplicate(pa, 1));
        else cJSON_AddStringToObject(eo, "last_merged_at", "");
        const cJSON *d = ro ? cJSON_GetObjectItemCaseSensitive(ro, "descriptors") : NULL;
        if (d) json_union(eo, "descriptors", d);
    } else {
        json_union(eo, "salts_used", ro ? cJSON_GetObjectItemCaseSensitive(ro, "salts_used") : NULL);
    }
    {
        char *s = cJSON_PrintUnformatted(eo);
        if (s) {
            out = chrys_strdup(s);
            cJSON_free(s);
        }
    }
    if (!out) *rc = CHRYS_NOMEM; /* the inputs were validated as objects: only memory can fail */
    cJSON_Delete(eo);
    cJSON_Delete(ro);
    return out;
}

/* ------------------------------------------------------------------------------------------
 * Validation: everything is checked before the first change.
 */
static int validate(chrys_merger *m, size_t n, const chrys_merge_record *recs, unsigned char *skip)
{
    uint32_t dim = m->opts.dim;
    idmap batch = {0};
    int rc = idmap_init(&batch, n);
    if (rc) return fail(m, CHRYS_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const chrys_merge_record *r = &recs[i];
        int bad = CHRYS_OK;
        char why[160] = "";
        skip[i] = 0;
        if (r->id == CHRYS_NO_ID) {
            bad = CHRYS_INVALID;
            snprintf(why, sizeof why, "id %llu is reserved", (unsigned long long)r->id);
        } else if (idmap_get(&m->seen, r->id) != CHRYS_NO_SLOT) {
            bad = CHRYS_EXISTS;
            snprintf(why, sizeof why, "id %llu was already merged", (unsigned long long)r->id);
        } else if (idmap_get(&batch, r->id) != CHRYS_NO_SLOT) {
            bad = CHRYS_EXISTS;
            snprintf(why, sizeof why, "id %llu appears twice in the batch", (unsigned long long)r->id);
        } else if (!r->vec || r->dim == 0) {
            skip[i] = 2; /* empty embedding: skipped and counted, as the original does */
        } else if (r->dim != dim) {
            bad = CHRYS_DIM;
            snprintf(why, sizeof why, "embedding has %u components, the merger has %u", r->dim, dim);
        } else {
            long j = vec_first_nonfinite(r->vec, dim);
            if (j >= 0) {
                bad = CHRYS_INVALID;
                snprintf(why, sizeof why, "component %ld is %s", j, isnan(r->vec[j]) ? "NaN" : "infinite");
            } else if (vec_norm(r->vec, dim) == 0 || !isfinite(vec_norm(r->vec, dim))) {
                bad = CHRYS_INVALID;
                snprintf(why, sizeof why, "zero vector has no cosine similarity");
            } else if (r->meta) {
                cJSON *o = cJSON_Parse(r->meta);
                if (!cJSON_IsObject(o)) {
                    bad = CHRYS_INVALID;
                    snprintf(why, sizeof why, "metadata is not a JSON object");
                }
                cJSON_Delete(o);
            }
        }
        if (bad) {
            if (!m->opts.skip_invalid) {
                idmap_free(&batch);
                return fail(m, bad, "record %zu (id %llu): %s", i, (unsigned long long)r->id, why);
            }
            skip[i] = 1;
        }
        if (r->id != CHRYS_NO_ID && bad != CHRYS_EXISTS && idmap_put(&batch, r->id, (uint32_t)i)) {
            idmap_free(&batch);
            return fail(m, CHRYS_NOMEM, "out of memory");
        }
    }
    idmap_free(&batch);
    return CHRYS_OK;
}

/* ------------------------------------------------------------------------------------------
 * Applying one decision.
 */
static int apply_merge(chrys_merger *m, uint64_t e, double score, const chrys_merge_record *r,
                       float *tmp_old, float *tmp_new)
{
    uint32_t dim = m->opts.dim;
    chrys_index_get(m->ix, e, tmp_old);
    uint32_t c = m->merged_count[e];
    double wo, wn;
    if (m->opts.mean_update) {
        wo = (double)c / (c + 1.0);
        wn = 1.0 / (c + 1.0);
    } else {
        double tot = m->opts.weight_old + m->opts.weight_new; /* the original normalises weights */
        wo = m->opts.weight_old / tot;
        wn = m->opts.weight_new / tot;
    }
    for (uint32_t i = 0; i < dim; i++) tmp_new[i] = (float)((double)tmp_old[i] * wo + (double)r->vec[i] * wn);
    if (m->opts.renormalize) {
        double nr = vec_norm(tmp_new, dim);
        if (nr > 0) vec_scale_to(tmp_new, tmp_new, dim, nr);
    }
    if (vec_norm(tmp_new, dim) == 0) {
        /* w_old*old + w_new*new cancelled out exactly: keep the old vector (cosine needs a direction). */
        memcpy(tmp_new, tmp_old, dim * sizeof(float));
    }
    const char *old_meta = NULL;
    chrys_index_get_meta(m->ix, e, &old_meta);
    int rc;
    char *meta = merged_meta(m, old_meta, r->meta, &rc);
    if (rc) return fail(m, rc, "entry %llu: %s", (unsigned long long)e,
                        rc == CHRYS_CORRUPT ? "stored metadata is not a JSON object" : "out of memory merging metadata");
    if ((rc = index_update_keep_links(m->ix, idmap_get(&m->ix->map, e), tmp_new))) {
        chrys_free(meta);
        return fail(m, rc, "updating entry %llu: %s", (unsigned long long)e, chrys_index_errmsg(m->ix));
    }
    if (meta || old_meta) {
        /* replace the row's metadata in place (the index owns it) */
        uint32_t slot = idmap_get(&m->ix->map, e);
        chrys_free(m->ix->meta[slot]);
        m->ix->meta[slot] = meta;
    }
    m->merged_count[e] = c + 1;
    if (m->ix->kind == CHRYS_INDEX_HNSW) { /* how far the entry moved: relinked at the block's end past a limit */
        double no = vec_norm(tmp_old, dim), nn = vec_norm(tmp_new, dim);
        double cs = no > 0 && nn > 0 ? vec_dot_f64(tmp_old, tmp_new, dim) / (no * nn) : 1;
        m->drift[e] += (float)acos(cs > 1 ? 1 : cs < -1 ? -1 : cs);
    }
    m->similarity[e] = score;
    return CHRYS_OK;
}

static int apply_append(chrys_merger *m, const chrys_merge_record *r, uint64_t *e_out)
{
    uint64_t e = m->n_entries;
    const char *meta[1] = {r->meta};
    int rc = chrys_index_add(m->ix, 1, &e, r->vec, meta);
    if (rc) return fail(m, rc, "adding entry: %s", chrys_index_errmsg(m->ix));
    m->merged_count[e] = 1;
    m->drift[e] = 0;
    m->similarity[e] = NAN;
    m->first_record[e] = r->id;
    m->n_entries++;
    *e_out = e;
    return CHRYS_OK;
}

static void report(const chrys_merger *m, double t0, size_t entries, size_t records, const char *path)
{
    if (!m->opts.on_search) return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    chrys_merge_metrics mm = {ts.tv_sec + ts.tv_nsec * 1e-9 - t0, entries, records, path, 0};
    mm.slow = mm.seconds > m->opts.slow_search_s;
    m->opts.on_search(m->opts.user, &mm);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------------------------
 * The batch merge.
 */

/* Whether this block's candidates come from the index (approximate) rather than an exact scan. */
static int use_index(const chrys_merger *m)
{
    const chrys_index *ix = m->ix;
    if (m->opts.exact) return 0;
    if (ix->kind == CHRYS_INDEX_HNSW) return 1;
    /* IVF pays only once its lists are many (a scan of nprobe of them is then a small part) */
    return ix->kind == CHRYS_INDEX_IVF && ix->nlist && (m->opts.nprobe || ix->nlist >= MERGE_MIN_NLIST);
}

/* The index's (approximate) top-k for prepared queries; scores exact (double, current rows). */
static int index_search(const chrys_merger *m, size_t nq, const float *q, size_t k, unsigned nt, uint64_t *ids,
                        double *sc)
{
    const chrys_index *ix = m->ix;
    if (ix->kind == CHRYS_INDEX_HNSW) {
        uint32_t ef = m->opts.ef_search ? m->opts.ef_search : MERGE_HNSW_EF;
        return hnsw_search(ix, nq, q, k, 0, 0, nt, ef < k ? (uint32_t)k : ef, ids, sc, NULL);
    }
    uint32_t np = m->opts.nprobe ? m->opts.nprobe : (ix->nlist / 8 > 16 ? ix->nlist / 8 : 16);
    return ivf_search(ix, nq, q, k, 0, 0, nt, np, ids, sc, NULL);
}

/* The best of a candidate list (computed before the block, in (score, id) order): its first
 * entry that no earlier record of the block changed. *all_dirty: all k were changed (the list then
 * says nothing about the untouched entries). */
static void first_untouched(const uint64_t *cid, const double *csc, size_t k, const unsigned char *dirty,
                            uint64_t *best, double *best_s, int *all_dirty)
{
    *best = CHRYS_NO_ID;
    *best_s = 0.0;
    *all_dirty = k > 0;
    for (size_t c = 0; c < k; c++) {
        uint64_t e = cid[c];
        if (e == CHRYS_NO_ID) {
            *all_dirty = 0;
            return;
        }
        if (dirty[e]) continue;
        *all_dirty = 0;
        if (csc[c] > 0) {
            *best_s = csc[c];
            *best = e;
        }
        return;
    }
}

/* Rescore the entries changed or created earlier in the block against qn and keep the best (ties:
 * smaller id). A float32 score screens each one; only those that could win are scored in double,
 * with the function the searches use. */
static void rescore_dirty(const chrys_merger *m, const float *qn, const uint64_t *dlist, size_t nd, uint64_t *best,
                          double *best_s)
{
    const chrys_kernels *kr = chrys_kernels_active();
    uint32_t dim = m->opts.dim;
    for (size_t d = 0; d < nd; d++) {
        uint64_t e = dlist[d];
        const float *row = m->ix->vecs + (size_t)idmap_get(&m->ix->map, e) * dim;
        float s32 = kr->dot(qn, row, dim);
        if ((double)s32 < *best_s - 1e-4) continue;
        double s = kr->dot_f64(qn, row, dim);
        if (s > *best_s || (s == *best_s && *best != CHRYS_NO_ID && e < *best)) {
            *best_s = s;
            *best = e;
        }
    }
}

/* Best over the live state by one search: exact (every row, linked or not), or the index's
 * candidates (which cannot see rows still waiting to be linked: the caller rescores those). */
static int live_best(chrys_merger *m, const float *qn, int exact, unsigned nt, uint64_t *best, double *best_s)
{
    uint64_t lid[MERGE_K];
    double ls[MERGE_K];
    double t0 = now_s();
    size_t k = exact ? 1 : MERGE_K;
    int rc = exact ? flat_search_prepared(m->ix, 1, qn, 1, 0, 0, nt, lid, ls, NULL)
                   : index_search(m, 1, qn, k, nt, lid, ls);
    if (rc) return fail(m, rc, "search failed");
    report(m, t0, m->n_entries, 1, exact ? "flat-recheck" : "index-recheck");
    *best = CHRYS_NO_ID;
    *best_s = 0.0;
    for (size_t c = 0; c < k; c++)
        if (lid[c] != CHRYS_NO_ID && ls[c] > *best_s) { /* (score, id) order: the first is the best */
            *best = lid[c];
            *best_s = ls[c];
            break;
        }
    return CHRYS_OK;
}

/* One record's decision from its candidate list: the first untouched candidate and the entries
 * changed in the block; when every candidate was changed, a search of the live state. */
static int decide(chrys_merger *m, const float *qn, const uint64_t *cid, const double *csc, size_t k, int exact,
                  int can_recheck, const unsigned char *dirty, const uint64_t *dlist, size_t nd, unsigned nt,
                  uint64_t *best, double *best_s)
{
    int all_dirty;
    first_untouched(cid, csc, k, dirty, best, best_s, &all_dirty);
    rescore_dirty(m, qn, dlist, nd, best, best_s);
    /* Every candidate was changed: an untouched entry outside the list scores at most the last
     * candidate's score, so a changed entry above that is the best; otherwise search again. */
    if (all_dirty && can_recheck && !(*best != CHRYS_NO_ID && *best_s > csc[k - 1])) {
        uint64_t lb;
        double ls;
        int rc = live_best(m, qn, exact, nt, &lb, &ls);
        if (rc) return rc;
        if (exact) { /* complete: every row was scanned */
            *best = lb;
            *best_s = ls;
        } else if (lb != CHRYS_NO_ID && (ls > *best_s || (ls == *best_s && lb < *best))) {
            *best = lb; /* (the index cannot see rows still waiting to be linked: rescored above) */
            *best_s = ls;
        }
    }
    return CHRYS_OK;
}

int chrys_merger_merge(chrys_merger *m, size_t n, const chrys_merge_record *recs, chrys_merge_result *results)
{
    if (!m || (n && !recs)) return CHRYS_INVALID;
    if (n == 0) return CHRYS_OK;
    uint32_t dim = m->opts.dim;
    int rc;
    unsigned char *skip = chrys_malloc(n);
    if (!skip) return fail(m, CHRYS_NOMEM, "out of memory");
    if ((rc = validate(m, n, recs, skip))) {
        chrys_free(skip);
        return rc;
    }
    if ((rc = reserve_entries(m, n)) || (rc = reserve_records(m, n)) || (rc = index_reserve(m->ix, n))) {
        chrys_free(skip);
        return fail(m, CHRYS_NOMEM, "out of memory reserving for %zu records", n);
    }
    size_t B = m->opts.batch_size;
    unsigned nt = m->opts.n_threads ? m->opts.n_threads : chrys_online_cpus();
    m->ix->build_threads = nt;
    if (m->ix->planned && m->ix->kind == CHRYS_INDEX_IVF && m->ix->plan_kind == CHRYS_INDEX_HNSW &&
        (rc = index_replan(m->ix))) { /* a store an earlier version planned as IVF */
        chrys_free(skip);
        return fail(m, rc, "re-planning the entries' index: %s", chrys_index_errmsg(m->ix));
    }
    float *qblock = NULL, *xq = NULL, *tmp_old = NULL, *tmp_new = NULL;
    uint64_t *cid = NULL, *xid = NULL, *dlist = NULL;
    double *csc = NULL, *xsc = NULL;
    uint32_t *xpos = NULL, *relink = NULL;
    unsigned char *dirty = NULL, *conf = NULL;
    size_t dirty_cap = 0;
    size_t max_b = B ? B : MERGE_MAX_BLOCK;
    if (max_b > n) max_b = n;
    qblock = chrys_malloc_aligned(max_b * dim * sizeof(float));
    xq = chrys_malloc_aligned(max_b * dim * sizeof(float));
    tmp_old = chrys_malloc(dim * sizeof(float));
    tmp_new = chrys_malloc(dim * sizeof(float));
    cid = chrys_malloc(max_b * MERGE_K * sizeof *cid);
    csc = chrys_malloc(max_b * MERGE_K * sizeof *csc);
    xid = chrys_malloc(max_b * MERGE_K * sizeof *xid);
    xsc = chrys_malloc(max_b * MERGE_K * sizeof *xsc);
    xpos = chrys_malloc(max_b * sizeof *xpos);
    conf = chrys_malloc(max_b);
    dlist = chrys_malloc(max_b * sizeof *dlist);
    relink = chrys_malloc(max_b * sizeof *relink);
    if (!qblock || !xq || !tmp_old || !tmp_new || !cid || !csc || !xid || !xsc || !xpos || !conf || !dlist || !relink) {
        rc = fail(m, CHRYS_NOMEM, "out of memory");
        goto done;
    }
    size_t i0 = 0;
    while (i0 < n) {
        int approx = use_index(m);
        /* Block size. Exact: the settle step costs about B^2/2 rescorings against B*E for the
         * search, so B grows with the number of entries E. Index: the search costs the same per
         * record whatever B; B is large enough that one scan of the entries serves all of the
         * block's exact confirmations. */
        size_t b = B;
        if (!b && approx) { /* each block costs one scan of the entries for its confirmations, each
                               record about B/2 rescorings of the block's changed entries: B ~ sqrt(E) */
            b = (size_t)(2.5 * sqrt((double)m->n_entries));
            if (b < 256) b = 256;
        }
        if (!b) {
            b = m->n_entries / 16;
            if (b < 16) b = 16;
            if (b > MERGE_MAX_BLOCK) b = MERGE_MAX_BLOCK;
        }
        if (b > max_b) b = max_b;
        if (b > n - i0) b = n - i0;
        /* Prepare the block's queries (unit length, as the index's rescoring expects). */
        size_t nb = 0;
        for (size_t j = 0; j < b; j++) {
            const chrys_merge_record *r = &recs[i0 + j];
            if (skip[i0 + j]) continue;
            vec_scale_to(qblock + nb * dim, r->vec, dim, vec_norm(r->vec, dim));
            nb++;
        }
        size_t e_before = m->n_entries;
        size_t k = MERGE_K < e_before ? MERGE_K : e_before;
        size_t nx = 0; /* queries with exact candidates too (xid/xsc, at xpos[q]) */
        if (nb && k) {
            double t0 = now_s();
            rc = approx ? index_search(m, nb, qblock, k, nt, cid, csc)
                        : flat_search_prepared(m->ix, nb, qblock, k, 0, 0, nt, cid, csc, NULL);
            if (rc) {
                rc = fail(m, rc, "search failed");
                goto done;
            }
            report(m, t0, e_before, nb, !approx                     ? (nb >= FLAT_BLAS_MIN_NQ ? "flat-sgemm" : "flat-simd")
                                        : m->ix->kind == CHRYS_INDEX_HNSW ? "hnsw"
                                                                          : "ivf");
            /* Near-threshold safeguard, in one exact scan for the whole block: a record whose best
             * candidate lies within confirm_margin of the threshold (or that has none) gets exact
             * candidates; so does every record under verify. */
            for (size_t q = 0; approx && q < nb; q++) {
                double s0 = cid[q * k] == CHRYS_NO_ID ? 0.0 : csc[q * k];
                conf[q] = s0 <= 0 || fabs(s0 - m->opts.threshold) < m->opts.confirm_margin;
                xpos[q] = UINT32_MAX;
                if (conf[q] || m->opts.verify) {
                    memcpy(xq + nx * dim, qblock + q * dim, dim * sizeof(float));
                    xpos[q] = (uint32_t)nx++;
                }
            }
            if (nx) {
                t0 = now_s();
                if ((rc = flat_search_prepared(m->ix, nx, xq, k, 0, 0, nt, xid, xsc, NULL))) {
                    rc = fail(m, rc, "search failed");
                    goto done;
                }
                report(m, t0, e_before, nx, "flat-confirm");
            }
        }
        /* Settle in order. */
        if (dirty_cap < m->n_entries + b) {
            size_t nc = (m->n_entries + b) * 2;
            unsigned char *d = chrys_realloc(dirty, nc);
            if (!d) {
                rc = fail(m, CHRYS_NOMEM, "out of memory");
                goto done;
            }
            memset(d + dirty_cap, 0, nc - dirty_cap);
            dirty = d;
            dirty_cap = nc;
        }
        size_t nd = 0, q = 0;
        int can_recheck = k == MERGE_K && e_before > k;
        for (size_t j = 0; j < b; j++) {
            size_t i = i0 + j;
            const chrys_merge_record *r = &recs[i];
            chrys_merge_result res = {CHRYS_NO_ID, NAN, CHRYS_MERGE_SKIPPED, 0};
            m->records++;
            if (skip[i]) {
                m->skipped++;
                if (results) results[i] = res;
                continue;
            }
            const float *qn = qblock + q * dim;
            uint64_t best;
            double best_s;
            int exact_cands = !approx || !k || conf[q];
            const uint64_t *ci = exact_cands && approx && k ? xid + (size_t)xpos[q] * k : cid + q * k;
            const double *cs = exact_cands && approx && k ? xsc + (size_t)xpos[q] * k : csc + q * k;
            if ((rc = decide(m, qn, ci, cs, k, exact_cands, can_recheck, dirty, dlist, nd, nt, &best, &best_s)))
                goto done;
            if (approx) {
                m->approx_records++;
                if (exact_cands) m->confirmations++;
                else if (best == CHRYS_NO_ID || fabs(best_s - m->opts.threshold) < m->opts.confirm_margin) {
                    /* the block's changes brought it near the threshold: confirm on the live state */
                    if ((rc = live_best(m, qn, 1, nt, &best, &best_s))) goto done;
                    m->confirmations++;
                }
            }
            if (m->opts.verify) { /* the exact decision on the same state */
                uint64_t xbest = best;
                double xs = best_s;
                if (approx && k &&
                    (rc = decide(m, qn, xid + (size_t)xpos[q] * k, xsc + (size_t)xpos[q] * k, k, 1, can_recheck, dirty,
                                 dlist, nd, nt, &xbest, &xs)))
                    goto done;
                int x_merge = xbest != CHRYS_NO_ID && xs >= m->opts.threshold;
                int a_merge = best != CHRYS_NO_ID && best_s >= m->opts.threshold;
                m->verified++;
                if (x_merge != a_merge || (x_merge && xbest != best)) m->disagreements++;
            }
            res.score = best == CHRYS_NO_ID ? NAN : best_s;
            if (best != CHRYS_NO_ID && best_s >= m->opts.threshold) {
                if ((rc = apply_merge(m, best, best_s, r, tmp_old, tmp_new))) goto done;
                m->merged++;
                res.action = CHRYS_MERGE_MERGED;
                res.entry = best;
            } else {
                if ((rc = apply_append(m, r, &res.entry))) goto done;
                m->added++;
                res.action = CHRYS_MERGE_ADDED;
                if (res.entry >= dirty_cap) { /* cannot happen: reserved above */
                    rc = fail(m, CHRYS_ERROR, "internal: dirty map too small");
                    goto done;
                }
            }
            if (!dirty[res.entry]) {
                dirty[res.entry] = 1;
                dlist[nd++] = res.entry;
            }
            uint32_t a = (uint32_t)m->n_asn++;
            m->asn_rec[a] = r->id;
            m->asn_entry[a] = res.entry;
            idmap_put(&m->seen, r->id, a); /* reserved: cannot fail */
            if (results) results[i] = res;
            q++;
        }
        for (size_t d = 0; d < nd; d++) dirty[dlist[d]] = 0;
        /* Before the next block's search, on all cores: the block's new entries join the graph,
         * and entries that moved more than MERGE_RELINK_DRIFT since they were linked are linked
         * again from where they are now (without it, an entry that many merges dragged across its
         * cluster is missed by walks from its new neighbourhood). */
        if (m->ix->kind == CHRYS_INDEX_HNSW) {
            double t0 = now_s();
            size_t np = m->ix->pending, nr = 0, linked = m->ix->n - np;
            for (size_t d = 0; d < nd; d++) {
                uint64_t e = dlist[d];
                if (!(m->drift[e] > MERGE_RELINK_DRIFT)) continue;
                m->drift[e] = 0;
                uint32_t slot = idmap_get(&m->ix->map, e);
                if (slot < linked) relink[nr++] = slot; /* (a new entry is linked where it is now) */
            }
            if ((rc = index_link_pending(m->ix)) || (rc = hnsw_relink(m->ix, relink, nr))) {
                rc = fail(m, rc, "out of memory linking entries into the graph");
                goto done;
            }
            m->relinks += nr;
            if (np + nr) report(m, t0, m->n_entries, np + nr, "hnsw-link");
        }
        i0 += b;
    }
done:
    if (m->ix->pending && index_link_pending(m->ix) && !rc) rc = fail(m, CHRYS_NOMEM, "%s", chrys_index_errmsg(m->ix));
    chrys_free(skip);
    chrys_free_aligned(qblock);
    chrys_free_aligned(xq);
    chrys_free(tmp_old);
    chrys_free(tmp_new);
    chrys_free(cid);
    chrys_free(csc);
    chrys_free(xid);
    chrys_free(xsc);
    chrys_free(xpos);
    chrys_free(conf);
    chrys_free(dirty);
    chrys_free(dlist);
    chrys_free(relink);
    return rc;
}

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
    if (!index_keeps_floats(ix) || !index_has_floats(ix) || ix->n_dead) { /* merges rewrite float32 entries, in dense slots */
        rc = chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: a merger store needs float32 entries without removed ones", path);
        goto fail;
    }
    if (ix->metric != CHRYS_METRIC_COSINE || n_ent != ix->n) {
        rc = chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: merger has %llu entries but the index holds %zu cosine rows",
                              path, (unsigned long long)n_ent, ix->n);
        goto fail;
    }
    for (size_t s = 0; s < ix->n; s++)
        if (ix->ids[s] >= n_ent) { /* ids unique and < n: exactly 0..n-1 */
            rc = chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: entry id %llu out of range", path,
                                  (unsigned long long)ix->ids[s]);
            goto fail;
        }
    chrys_merge_opts o;
    chrys_merge_opts_init(&o);
    o.dim = ix->dim;
    o.threshold = get_f64le(mrgo + MRGO_THRESHOLD);
    o.weight_old = get_f64le(mrgo + MRGO_W_OLD);
    o.weight_new = get_f64le(mrgo + MRGO_W_NEW);
    o.variant = (chrys_merge_variant)get_u32le(mrgo + MRGO_VARIANT);
    uint32_t flags = get_u32le(mrgo + MRGO_FLAGS);
    o.renormalize = flags & 1;
    o.mean_update = (flags >> 1) & 1;
    int bad_reserved = 0;
    for (int i = MRGO_RESERVED; i < MRGO_SIZE; i++) bad_reserved |= mrgo[i];
    char *why = NULL;
    if (bad_reserved || (flags & ~MRGO_FLAGS_KNOWN) || check_opts(&o, &why)) {
        rc = chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: MRGO: invalid options%s%s", path, why ? ": " : "", why ? why : "");
        chrys_free(why);
        goto fail;
    }
    if (!(m = merger_alloc(&o)) || reserve_entries(m, n_ent) || reserve_records(m, n_asn) ||
        (n_hist && !(m->hist = chrys_malloc(n_hist * sizeof *m->hist)))) {
        rc = chrys_set_errmsg(errmsg, CHRYS_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    m->ix = ix;
    ix = NULL;
    index_for_merging(m);
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
    if ((rc = store_read_section(&r, store_find(&r, TAG_MENT), buf, errmsg))) goto fail;
    uint64_t total_merges = 0;
    for (size_t e = 0; e < n_ent; e++) {
        const unsigned char *p = buf + e * MENT_SIZE;
        m->merged_count[e] = get_u32le(p);
        m->similarity[e] = get_f64le(p + 8);
        m->first_record[e] = get_u64le(p + 16);
        if (m->merged_count[e] < 1 || get_u32le(p + 4) != 0 ||
            (m->merged_count[e] > 1 && !isfinite(m->similarity[e]))) {
            rc = chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: MENT: entry %zu is invalid", path, e);
            goto fail;
        }
        total_merges += m->merged_count[e] - 1;
    }
    if ((rc = store_read_section(&r, store_find(&r, TAG_MASN), buf, errmsg))) goto fail;
    for (size_t a = 0; a < n_asn; a++) {
        uint64_t rid = get_u64le(buf + a * MASN_SIZE), e = get_u64le(buf + a * MASN_SIZE + 8);
        if (rid == CHRYS_NO_ID || e >= n_ent || idmap_get(&m->seen, rid) != CHRYS_NO_SLOT) {
            rc = chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: MASN: record %zu is invalid or repeated", path, a);
            goto fail;
        }
        m->asn_rec[a] = rid;
        m->asn_entry[a] = e;
        idmap_put(&m->seen, rid, (uint32_t)a);
    }
    m->n_asn = n_asn;
    if (m->merged != total_merges || m->added != n_ent || m->merged + m->added != n_asn ||
        m->records != n_asn + m->skipped) {
        rc = chrys_set_errmsg(errmsg, CHRYS_CORRUPT, "%s: merger counters disagree with its entries", path);
        goto fail;
    }
    if ((rc = store_read_section(&r, store_find(&r, TAG_MHIS), buf, errmsg))) goto fail;
    for (size_t h = 0; h < n_hist; h++)
        for (int f = 0; f < 5; f++) m->hist[h][f] = get_u64le(buf + h * MHIS_SIZE + f * 8);
    m->n_hist = n_hist;
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

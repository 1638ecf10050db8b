/*
 * test_merge.c: the semantic merger.
 *  - golden: every pass of the original Python merger over the 926 real rows (the compact copy
 *    in tests/data/chrysalis/golden, see its README) reproduced: assignments, merged counts, final vectors within 1e-6, unions of descriptors
 *    and salts; with one-at-a-time, automatic and odd batch sizes, on 1 and 2 threads;
 *  - property: batch merging gives exactly the decisions of an independent one-at-a-time oracle
 *    written here, on random, clustered and near-threshold data (candidates within 1e-6 of the
 *    threshold, exact ties);
 *  - persistence, continuation across runs, bad records, skip_invalid, options.
 */
#include <cJSON.h>
#include <openssl/evp.h>
#include <unistd.h>

#include "../harness.h"
#include "chrysalis.h"
#include "index.h"
#include "internal.h"
#include "merge.h"
#include "sq8.h"
#include "kernels/dist.h"
#include "tests.h"

/* The golden outputs travel with the repository (tests/data/chrysalis/README.md). */
#define GOLDEN_DIR "tests/data/chrysalis/golden"

/* The bundled dataset: vectors (926 x 1024) and records.jsonl parsed. */
typedef struct dataset {
    float *vecs;
    cJSON **rec;
    size_t n;
} dataset;

static int load_dataset(dataset *ds)
{
    size_t len;
    ds->vecs = h_read_file("examples/chrysalis/vectors.f32", &len);
    if (!ds->vecs || len != 926 * 1024 * 4) return -1;
    char *txt = h_read_file("examples/chrysalis/records.jsonl", &len);
    if (!txt) return -1;
    ds->rec = calloc(926, sizeof *ds->rec);
    ds->n = 0;
    for (char *line = strtok(txt, "\n"); line && ds->n < 926; line = strtok(NULL, "\n"))
        ds->rec[ds->n++] = cJSON_Parse(line);
    free(txt);
    return ds->n == 926 ? 0 : -1;
}

static void free_dataset(dataset *ds)
{
    for (size_t i = 0; i < ds->n; i++) cJSON_Delete(ds->rec[i]);
    free(ds->rec);
    free(ds->vecs);
}

/* The original merger's final slot vectors of a pass: rows of vectors.f32 named by
 * <name>.slot_first_row.i32, overwritten by the vectors in <name>.final.delta, then checked
 * against the SHA-256 of the original <name>.final.f32 (final.sha256). NULL (and a failed check)
 * when anything is missing or does not match. */
static float *golden_final(const dataset *ds, const char *name, size_t *n_slots)
{
    char path[512];
    size_t lfirst, ldelta, lsum;
    snprintf(path, sizeof path, GOLDEN_DIR "/%s.slot_first_row.i32", name);
    int32_t *first = h_read_file(path, &lfirst);
    snprintf(path, sizeof path, GOLDEN_DIR "/%s.final.delta", name);
    unsigned char *delta = h_read_file(path, &ldelta);
    char *sums = h_read_file(GOLDEN_DIR "/final.sha256", &lsum);
    float *fin = NULL;
    if (!first || !delta || !sums || ldelta < 4) {
        h_fail(__FILE__, __LINE__, "golden files for %s missing under " GOLDEN_DIR, name);
        goto out;
    }
    size_t n = lfirst / 4;
    fin = malloc(n * 1024 * sizeof(float) + 1);
    for (size_t s = 0; s < n; s++) {
        CHECK(first[s] >= 0 && (size_t)first[s] < ds->n);
        memcpy(fin + s * 1024, ds->vecs + (size_t)first[s] * 1024, 1024 * sizeof(float));
    }
    int32_t nd;
    memcpy(&nd, delta, 4);
    CHECK_EQ((size_t)ldelta, 4 + (size_t)nd * (4 + 1024 * 4));
    for (int32_t k = 0; k < nd && ldelta == 4 + (size_t)nd * (4 + 1024 * 4); k++) {
        int32_t s;
        memcpy(&s, delta + 4 + (size_t)k * 4100, 4);
        CHECK(s >= 0 && (size_t)s < n);
        if (s >= 0 && (size_t)s < n) memcpy(fin + (size_t)s * 1024, delta + 8 + (size_t)k * 4100, 4096);
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(fin, n * 1024 * sizeof(float), md, &mdlen, EVP_sha256(), NULL);
    char hex[65], want[128];
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", md[i]);
    snprintf(want, sizeof want, "%s  %s.final.f32", hex, name);
    if (!strstr(sums, want)) {
        h_fail(__FILE__, __LINE__, "%s: the rebuilt final vectors do not match final.sha256", name);
        free(fin);
        fin = NULL;
        goto out;
    }
    *n_slots = n;
out:
    free(first);
    free(delta);
    free(sums);
    return fin;
}

/* Record metadata in the shape the original merger was given (golden/README.md). */
static char *record_meta(const cJSON *r, int skill)
{
    cJSON *o = cJSON_CreateObject();
    if (skill) {
        cJSON_AddItemToObject(o, "legend_name", cJSON_Duplicate(cJSON_GetObjectItem(r, "legend"), 1));
        cJSON_AddItemToObject(o, "skill_name", cJSON_Duplicate(cJSON_GetObjectItem(r, "skill_name"), 1));
        cJSON_AddItemToObject(o, "run_number", cJSON_Duplicate(cJSON_GetObjectItem(r, "run_number"), 1));
        const cJSON *s = cJSON_GetObjectItem(r, "salts_used");
        cJSON_AddItemToObject(o, "salts_used", cJSON_IsArray(s) ? cJSON_Duplicate(s, 1) : cJSON_CreateArray());
    } else {
        cJSON_AddItemToObject(o, "row", cJSON_Duplicate(cJSON_GetObjectItem(r, "id"), 1));
        const cJSON *d = cJSON_GetObjectItem(r, "descriptors");
        cJSON_AddItemToObject(o, "descriptors", cJSON_IsArray(d) ? cJSON_Duplicate(d, 1) : cJSON_CreateArray());
        cJSON_AddItemToObject(o, "processed_at", cJSON_Duplicate(cJSON_GetObjectItem(r, "processed_at"), 1));
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static chrys_merger *new_merger(uint32_t dim, double t, int skill, uint32_t batch, uint32_t threads)
{
    chrys_merge_opts o;
    chrys_merge_opts_init(&o);
    o.dim = dim;
    o.threshold = t;
    o.variant = skill ? CHRYS_MERGE_SKILL : CHRYS_MERGE_EMBEDDING;
    o.batch_size = batch;
    o.n_threads = threads;
    chrys_merger *m = NULL;
    char *msg = NULL;
    CHECK_EQ(chrys_merger_new(&o, &m, &msg), CHRYS_OK);
    chrys_free(msg);
    return m;
}

/* Merge the given rows in order; returns the merger. */
static chrys_merger *merge_rows(const dataset *ds, const int32_t *rows, size_t n, double t, int skill,
                                uint32_t batch, uint32_t threads, chrys_merge_result *res)
{
    chrys_merger *m = new_merger(1024, t, skill, batch, threads);
    chrys_merge_record *recs = calloc(n, sizeof *recs);
    char **metas = calloc(n, sizeof *metas);
    for (size_t i = 0; i < n; i++) {
        metas[i] = record_meta(ds->rec[rows[i]], skill);
        recs[i] = (chrys_merge_record){(uint64_t)rows[i], ds->vecs + (size_t)rows[i] * 1024, 1024, metas[i]};
    }
    CHECK_EQ(chrys_merger_merge(m, n, recs, res), CHRYS_OK);
    for (size_t i = 0; i < n; i++) free(metas[i]);
    free(metas);
    free(recs);
    return m;
}

/* Compare a string-array field of an entry's metadata with a golden sorted list, as sets. */
static int same_set(const char *meta, const char *key, const cJSON *golden)
{
    cJSON *o = meta ? cJSON_Parse(meta) : NULL;
    const cJSON *a = o ? cJSON_GetObjectItem(o, key) : NULL;
    int ok = cJSON_IsArray(a) && cJSON_GetArraySize(a) == cJSON_GetArraySize(golden);
    for (const cJSON *g = golden ? golden->child : NULL; ok && g; g = g->next) {
        int found = 0;
        for (const cJSON *x = a->child; x && !found; x = x->next)
            found = cJSON_IsString(x) && !strcmp(x->valuestring, g->valuestring);
        ok = found;
    }
    cJSON_Delete(o);
    return ok;
}

static void check_golden_pass(const dataset *ds, const char *pass, double t, int skill)
{
    char path[512];
    size_t lr, la, lc, lj, n_fin = 0;
    snprintf(path, sizeof path, GOLDEN_DIR "/%s.rows.i32", pass);
    int32_t *rows = h_read_file(path, &lr);
    snprintf(path, sizeof path, GOLDEN_DIR "/%s.assign.i32", pass);
    int32_t *assign = h_read_file(path, &la);
    snprintf(path, sizeof path, GOLDEN_DIR "/%s.merged_count.i32", pass);
    int32_t *mc = h_read_file(path, &lc);
    float *fin = golden_final(ds, pass, &n_fin);
    snprintf(path, sizeof path, GOLDEN_DIR "/%s.slots.json", pass);
    char *js = h_read_file(path, &lj);
    if (!rows || !assign || !mc || !fin || !js || la != lr || n_fin != lc / 4) {
        h_fail(__FILE__, __LINE__, "golden files for %s missing or inconsistent under " GOLDEN_DIR, pass);
        goto out;
    }
    size_t n = lr / 4, n_slots = lc / 4;
    cJSON *gj = cJSON_Parse(js);
    const uint32_t batches[] = {1, 0, 5, 64};
    for (int bi = 0; bi < 4; bi++) {
        uint32_t threads = bi % 2 ? 2 : 1;
        chrys_merge_result *res = calloc(n, sizeof *res);
        chrys_merger *m = merge_rows(ds, rows, n, t, skill, batches[bi], threads, res);
        chrys_merge_stats st = {sizeof st};
        chrys_merger_get_stats(m, &st);
        CHECK_EQ(st.entries, n_slots);
        size_t wrong = 0;
        for (size_t i = 0; i < n; i++) wrong += res[i].entry != (uint64_t)assign[i];
        CHECK_EQ(wrong, 0);
        float *v = malloc(1024 * sizeof(float));
        double max_diff = 0;
        size_t wrong_mc = 0, wrong_set = 0;
        for (size_t s = 0; s < n_slots && s < st.entries; s++) {
            chrys_merge_entry e = {sizeof e};
            CHECK_EQ(chrys_merger_get_entry(m, s, &e, v), CHRYS_OK);
            wrong_mc += e.merged_count != (uint32_t)mc[s];
            for (size_t i = 0; i < 1024; i++) {
                double d = fabs((double)v[i] - fin[s * 1024 + i]);
                if (d > max_diff) max_diff = d;
            }
            const cJSON *gs = cJSON_GetArrayItem(cJSON_GetObjectItem(gj, "slots"), (int)s);
            const cJSON *want = cJSON_GetObjectItem(gs, skill ? "salts_used_sorted" : "descriptors_sorted");
            if (want && !same_set(e.meta, skill ? "salts_used" : "descriptors", want)) wrong_set++;
            const cJSON *gsim = cJSON_GetObjectItem(gs, "similarity_score");
            if (cJSON_IsNumber(gsim) && fabs(gsim->valuedouble - e.similarity_score) > 1e-6) wrong_set++;
        }
        CHECK_EQ(wrong_mc, 0);
        CHECK_EQ(wrong_set, 0);
        CHECK(max_diff <= 1e-6);
        if (max_diff > 1e-6 || wrong)
            fprintf(stderr, "    %s batch %u: %zu wrong assignments, max |diff| %.3g\n", pass, batches[bi], wrong, max_diff);
        free(v);
        free(res);
        chrys_merger_free(m);
    }
    cJSON_Delete(gj);
out:
    free(rows);
    free(assign);
    free(mc);
    free(fin);
    free(js);
}

void test_merge_golden_passes(void)
{
    dataset ds;
    if (load_dataset(&ds)) {
        h_fail(__FILE__, __LINE__, "examples/chrysalis data missing");
        return;
    }
    check_golden_pass(&ds, "kb_t085", 0.85, 0);
    check_golden_pass(&ds, "sb_t085", 0.85, 0);
    check_golden_pass(&ds, "skill_t085", 0.85, 0);
    check_golden_pass(&ds, "all_t085", 0.85, 0);
    check_golden_pass(&ds, "all_t077", 0.77, 0);
    check_golden_pass(&ds, "skill_skillmerger_t090", 0.90, 1);
    free_dataset(&ds);
}

void test_merge_golden_per_legend(void)
{
    dataset ds;
    if (load_dataset(&ds)) {
        h_fail(__FILE__, __LINE__, "examples/chrysalis data missing");
        return;
    }
    const char *kinds[3] = {"knowledge_builder", "skill_builder", "skill"};
    const char *files[3] = {"per_legend_kb", "per_legend_sb", "per_legend_skills"};
    const size_t want_slots[3] = {147, 147, 346};
    for (int k = 0; k < 3; k++) {
        size_t n_fin = 0;
        float *fin = golden_final(&ds, files[k], &n_fin);
        if (!fin) continue;
        size_t lf = n_fin * 1024 * 4;
        size_t slot = 0;
        double max_diff = 0;
        float v[1024];
        for (int legend = 0; legend < 49; legend++) {
            int32_t rows[64];
            size_t n = 0;
            for (size_t i = 0; i < ds.n && n < 64; i++)
                if (cJSON_GetObjectItem(ds.rec[i], "legend_order")->valueint == legend &&
                    !strcmp(cJSON_GetObjectItem(ds.rec[i], "kind")->valuestring, kinds[k]))
                    rows[n++] = (int32_t)i;
            if (n == 0) continue;
            chrys_merger *m = merge_rows(&ds, rows, n, k == 2 ? 0.90 : 0.85, k == 2, 0, 1, NULL);
            chrys_merge_stats st = {sizeof st};
            chrys_merger_get_stats(m, &st);
            for (size_t e = 0; e < st.entries; e++, slot++) {
                chrys_merge_entry en = {sizeof en};
                chrys_merger_get_entry(m, e, &en, v);
                if ((slot + 1) * 1024 * 4 > lf) break;
                for (size_t i = 0; i < 1024; i++) {
                    double d = fabs((double)v[i] - fin[slot * 1024 + i]);
                    if (d > max_diff) max_diff = d;
                }
            }
            chrys_merger_free(m);
        }
        CHECK_EQ(slot, want_slots[k]);
        CHECK_EQ(slot * 1024 * 4, lf);
        CHECK(max_diff <= 1e-6);
        free(fin);
    }
    free_dataset(&ds);
}

/* ---- property tests against an independent one-at-a-time oracle ---- */

/* The oracle: the rule written out plainly over unit-length float32 copies of the entries, with
 * double-precision dot products (the kernel table's dot_f64: the quantity the library defines as
 * the cosine). */
typedef struct oracle {
    size_t dim, n;
    float *raw, *unit;
    uint32_t *count;
} oracle;

static void oracle_merge(oracle *o, const float *x, double t, int64_t *entry_out, int *merged_out)
{
    size_t d = o->dim;
    float *qn = malloc(d * sizeof(float));
    vec_scale_to(qn, x, d, vec_norm(x, d));
    int64_t best = -1;
    double bs = 0.0;
    for (size_t e = 0; e < o->n; e++) {
        double s = chrys_kernels_active()->dot_f64(qn, o->unit + e * d, d);
        if (s > bs) {
            bs = s;
            best = (int64_t)e;
        }
    }
    if (best >= 0 && bs >= t) {
        float *r = o->raw + (size_t)best * d;
        /* as the library: the entry as stored (unit row times its norm), then 0.4/0.6 in double */
        double nrm = vec_norm(r, d);
        float nr32 = (float)nrm;
        for (size_t i = 0; i < d; i++) {
            float old = (float)((double)o->unit[best * d + i] * nr32);
            r[i] = (float)((double)old * 0.4 + (double)x[i] * 0.6);
        }
        vec_scale_to(o->unit + best * d, r, d, vec_norm(r, d));
        o->count[best]++;
        *merged_out = 1;
        *entry_out = best;
    } else {
        memcpy(o->raw + o->n * d, x, d * sizeof(float));
        vec_scale_to(o->unit + o->n * d, x, d, vec_norm(x, d));
        o->count[o->n] = 1;
        *entry_out = (int64_t)o->n++;
        *merged_out = 0;
    }
    free(qn);
}

/* Data sets: 0 random, 1 clustered (about half merge), 2 near-threshold: records built so their
 * cosine to an earlier record lies within 1e-6 of the threshold, plus exact duplicates (ties). */
static float *make_stream(uint64_t *s, int kind, size_t n, size_t d, double t)
{
    float *x = malloc(n * d * sizeof(float));
    float *c = malloc(16 * d * sizeof(float));
    for (size_t i = 0; i < 16 * d; i++) c[i] = h_gauss(s);
    for (size_t r = 0; r < n; r++) {
        float *v = x + r * d;
        if (kind == 0) {
            for (size_t i = 0; i < d; i++) v[i] = h_gauss(s);
        } else if (kind == 1) {
            const float *cc = c + (h_rand(s) % 16) * d;
            float spread = 0.3f + 0.5f * h_uniform(s); /* cos to the centre 0.96 .. 0.78 */
            for (size_t i = 0; i < d; i++) v[i] = cc[i] + spread * h_gauss(s);
        } else if (kind == 3) {
            /* exact ties: basis vectors first, then sums of two of them, whose cosines to the two
             * entries are equal to the last bit; the oldest entry must win */
            memset(v, 0, d * sizeof(float));
            size_t a = ((r < d / 2 ? r : h_rand(s) % (d / 2)) * 7) % d;
            size_t b = ((h_rand(s) % (d / 2)) * 7) % d;
            if (r < d / 2 || h_rand(s) % 3 == 0 || a == b) {
                /* a basis entry, or a scaled copy that merges without changing its direction */
                v[a] = 1.0f + (float)(h_rand(s) % 3);
            } else {
                v[a] = v[b] = 2.0f;
            }
        } else {
            if (r > 0 && h_rand(s) % 4 == 0) { /* exact duplicate of an earlier record */
                memcpy(v, x + (h_rand(s) % r) * d, d * sizeof(float));
                continue;
            }
            /* v = cos(a) u + sin(a) w, with u a centre and w orthogonal: cos(v, u) = t +- 1e-6 */
            const float *u = c + (h_rand(s) % 16) * d;
            double un = vec_norm(u, d);
            float *w = malloc(d * sizeof(float));
            for (size_t i = 0; i < d; i++) w[i] = h_gauss(s);
            double proj = 0;
            for (size_t i = 0; i < d; i++) proj += (double)w[i] * u[i] / un;
            for (size_t i = 0; i < d; i++) w[i] -= (float)(proj * u[i] / un);
            double wn = vec_norm(w, d);
            double cs = t + ((double)(h_rand(s) % 2001) - 1000.0) * 1e-9;
            double sn = sqrt(1 - cs * cs);
            for (size_t i = 0; i < d; i++) v[i] = (float)(cs * u[i] / un + sn * w[i] / wn);
            free(w);
        }
    }
    free(c);
    return x;
}

void test_merge_batch_equals_sequential(void)
{
    uint64_t s = h_seed;
    const size_t d = 48, n = 1500;
    for (int kind = 0; kind < 4; kind++) {
        double t = kind == 0 ? 0.2 : kind == 1 ? 0.85 : kind == 2 ? 0.9 : 0.7;
        float *x = make_stream(&s, kind, n, d, t);
        oracle o = {d, 0, malloc(n * d * sizeof(float)), malloc(n * d * sizeof(float)), malloc(n * sizeof(uint32_t))};
        int64_t *oe = malloc(n * sizeof *oe);
        int merges = 0;
        for (size_t i = 0; i < n; i++) {
            int mg;
            oracle_merge(&o, x + i * d, t, &oe[i], &mg);
            merges += mg;
        }
        if (kind == 1 && !(merges > (int)n / 4 && merges < (int)n * 9 / 10))
            h_fail(__FILE__, __LINE__, "clustered stream should merge about half: %d of %zu", merges, n);
        const uint32_t batches[] = {1, 0, 3, 100, 2048};
        for (int bi = 0; bi < 5; bi++) {
            chrys_merge_opts op;
            chrys_merge_opts_init(&op);
            op.dim = (uint32_t)d;
            op.threshold = t;
            op.batch_size = batches[bi];
            op.n_threads = (uint32_t)(1 + bi % 2);
            op.exact = 1; /* the exact block algorithm (past 1,000 entries the planner's graph would decide) */
            chrys_merger *m = NULL;
            CHECK_EQ(chrys_merger_new(&op, &m, NULL), CHRYS_OK);
            chrys_merge_record *recs = malloc(n * sizeof *recs);
            chrys_merge_result *res = malloc(n * sizeof *res);
            for (size_t i = 0; i < n; i++) recs[i] = (chrys_merge_record){i, x + i * d, (uint32_t)d, NULL};
            /* in two calls, to cross a call boundary too */
            CHECK_EQ(chrys_merger_merge(m, n / 3, recs, res), CHRYS_OK);
            CHECK_EQ(chrys_merger_merge(m, n - n / 3, recs + n / 3, res + n / 3), CHRYS_OK);
            size_t wrong = 0;
            for (size_t i = 0; i < n; i++) wrong += res[i].entry != (uint64_t)oe[i];
            if (wrong) fprintf(stderr, "    kind %d batch %u: %zu of %zu decisions differ\n", kind, batches[bi], wrong, n);
            CHECK_EQ(wrong, 0);
            chrys_merge_stats st = {sizeof st};
            chrys_merger_get_stats(m, &st);
            CHECK_EQ(st.entries, o.n);
            float *v = malloc(d * sizeof(float));
            size_t bad_vec = 0;
            for (size_t e = 0; e < o.n && e < st.entries; e++) {
                chrys_merge_entry en = {sizeof en};
                chrys_merger_get_entry(m, e, &en, v);
                if (en.merged_count != o.count[e]) bad_vec++;
                for (size_t i = 0; i < d; i++)
                    if (fabs(v[i] - o.raw[e * d + i]) > 1e-5 * (1 + fabs(o.raw[e * d + i]))) {
                        bad_vec++;
                        break;
                    }
            }
            CHECK_EQ(bad_vec, 0);
            free(v);
            free(recs);
            free(res);
            chrys_merger_free(m);
        }
        free(o.raw);
        free(o.unit);
        free(o.count);
        free(oe);
        free(x);
    }
}

void test_merge_persistence_and_continuation(void)
{
    uint64_t s = h_seed + 3;
    const size_t d = 16, n = 600;
    float *x = make_stream(&s, 1, n, d, 0.85);
    chrys_merge_record *recs = malloc(n * sizeof *recs);
    chrys_merge_result *all = malloc(n * sizeof *all), *part = malloc(n * sizeof *part);
    char meta[64];
    char **metas = calloc(n, sizeof *metas);
    for (size_t i = 0; i < n; i++) {
        snprintf(meta, sizeof meta, "{\"processed_at\":\"t%zu\",\"descriptors\":[\"d%zu\"]}", i, i % 7);
        metas[i] = strdup(meta);
        recs[i] = (chrys_merge_record){1000 + i, x + i * d, (uint32_t)d, metas[i]};
    }
    chrys_merger *one = new_merger((uint32_t)d, 0.85, 0, 0, 2);
    CHECK_EQ(chrys_merger_merge(one, n, recs, all), CHRYS_OK);
    /* the same stream in three runs, saved and reopened in between */
    char path[256];
    snprintf(path, sizeof path, "/tmp/chrys_merge_%d.chrys", (int)getpid());
    unlink(path);
    size_t cuts[4] = {0, 100, 350, n};
    for (int run = 0; run < 3; run++) {
        chrys_merger *m = NULL;
        char *msg = NULL;
        if (run == 0) m = new_merger((uint32_t)d, 0.85, 0, 0, 2);
        else CHECK_EQ(chrys_merger_open(path, &m, &msg), CHRYS_OK);
        if (!m) {
            fprintf(stderr, "    %s\n", msg ? msg : "");
            chrys_free(msg);
            break;
        }
        CHECK_EQ(chrys_merger_merge(m, cuts[run + 1] - cuts[run], recs + cuts[run], part + cuts[run]), CHRYS_OK);
        CHECK_EQ(chrys_merger_mark_run(m), CHRYS_OK);
        CHECK_EQ(chrys_merger_save(m, path, &msg), CHRYS_OK);
        chrys_merger_free(m);
    }
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++) wrong += all[i].entry != part[i].entry || all[i].action != part[i].action;
    CHECK_EQ(wrong, 0);
    chrys_merger *m = NULL;
    CHECK_EQ(chrys_merger_open(path, &m, NULL), CHRYS_OK);
    if (m) {
        chrys_merge_stats a = {sizeof a}, b = {sizeof b};
        chrys_merger_get_stats(one, &a);
        chrys_merger_get_stats(m, &b);
        CHECK_EQ(a.entries, b.entries);
        CHECK_EQ(a.merged, b.merged);
        CHECK_EQ(b.records, n);
        CHECK_EQ(b.runs, 3);
        size_t nh;
        chrys_merge_run h[3];
        CHECK_EQ(chrys_merger_get_history(m, h, 3, &nh), CHRYS_OK);
        CHECK_EQ(nh, 3);
        CHECK_EQ(h[1].records, 250);
        CHECK_EQ(h[0].merged + h[1].merged + h[2].merged, b.merged);
        /* every record's entry is recorded */
        for (size_t i = 0; i < n; i += 37) {
            uint64_t e;
            CHECK_EQ(chrys_merger_lookup(m, 1000 + i, &e), CHRYS_OK);
            CHECK_EQ(e, all[i].entry);
        }
        uint64_t e;
        CHECK_EQ(chrys_merger_lookup(m, 5, &e), CHRYS_NOTFOUND);
        /* metadata: a merged entry has last_merged_at and the union of descriptors */
        for (size_t i = 0; i < n; i++)
            if (all[i].action == CHRYS_MERGE_MERGED) {
                chrys_merge_entry en = {sizeof en};
                chrys_merger_get_entry(m, all[i].entry, &en, NULL);
                CHECK(en.merged_count >= 2);
                CHECK_STR_CONTAINS(en.meta, "\"last_merged_at\":\"t");
                char want[16];
                snprintf(want, sizeof want, "\"d%zu\"", i % 7);
                CHECK_STR_CONTAINS(en.meta, want);
                break;
            }
        /* a merger store is also a searchable index */
        chrys_index *ix = NULL;
        CHECK_EQ(chrys_index_load(path, &ix, NULL), CHRYS_OK);
        chrys_index_free(ix);
        /* records already merged are refused */
        CHECK_EQ(chrys_merger_merge(m, 1, recs, NULL), CHRYS_EXISTS);
        CHECK_STR_CONTAINS(chrys_merger_errmsg(m), "id 1000 was already merged");
        chrys_merger_free(m);
    }
    /* an index-only store is not a merger store */
    chrys_index_opts io;
    chrys_index_opts_init(&io);
    io.dim = 4;
    chrys_index *ix = NULL;
    chrys_index_new(&io, &ix, NULL);
    chrys_index_save(ix, path, NULL);
    chrys_index_free(ix);
    char *msg = NULL;
    CHECK_EQ(chrys_merger_open(path, &m, &msg) & 0xff, CHRYS_CORRUPT);
    CHECK_STR_CONTAINS(msg, "not a merger store");
    chrys_free(msg);
    unlink(path);
    for (size_t i = 0; i < n; i++) free(metas[i]);
    free(metas);
    chrys_merger_free(one);
    free(recs);
    free(all);
    free(part);
    free(x);
}

void test_merge_bad_records(void)
{
    chrys_merger *m = new_merger(3, 0.85, 0, 0, 1);
    float good[3] = {1, 0, 0}, nanv[3] = {1, NAN, 0}, zero[3] = {0, 0, 0};
    chrys_merge_record r[4] = {{1, good, 3, NULL}, {2, nanv, 3, NULL}, {3, good, 2, NULL}, {4, NULL, 0, NULL}};
    CHECK_EQ(chrys_merger_merge(m, 2, r, NULL), CHRYS_INVALID);
    CHECK_STR_CONTAINS(chrys_merger_errmsg(m), "record 1 (id 2): component 1 is NaN");
    chrys_merge_stats st = {sizeof st};
    chrys_merger_get_stats(m, &st);
    CHECK_EQ(st.records, 0); /* nothing applied */
    CHECK_EQ(st.entries, 0);
    CHECK_EQ(chrys_merger_merge(m, 1, r + 2, NULL), CHRYS_DIM);
    CHECK_STR_CONTAINS(chrys_merger_errmsg(m), "2 components, the merger has 3");
    chrys_merge_record z = {9, zero, 3, NULL};
    CHECK_EQ(chrys_merger_merge(m, 1, &z, NULL), CHRYS_INVALID);
    chrys_merge_record bm = {9, good, 3, "[1,2]"};
    CHECK_EQ(chrys_merger_merge(m, 1, &bm, NULL), CHRYS_INVALID);
    CHECK_STR_CONTAINS(chrys_merger_errmsg(m), "not a JSON object");
    chrys_merge_record dup[2] = {{7, good, 3, NULL}, {7, good, 3, NULL}};
    CHECK_EQ(chrys_merger_merge(m, 2, dup, NULL), CHRYS_EXISTS);
    /* with skip_invalid: bad records are skipped and counted; an empty embedding is skipped */
    chrys_merge_opts o = {sizeof o};
    chrys_merger_get_opts(m, &o);
    o.skip_invalid = 1;
    CHECK_EQ(chrys_merger_configure(m, &o), CHRYS_OK);
    chrys_merge_result res[4];
    CHECK_EQ(chrys_merger_merge(m, 4, r, res), CHRYS_OK);
    CHECK_EQ(res[0].action, CHRYS_MERGE_ADDED);
    CHECK_EQ(res[1].action, CHRYS_MERGE_SKIPPED);
    CHECK_EQ(res[2].action, CHRYS_MERGE_SKIPPED);
    CHECK_EQ(res[3].action, CHRYS_MERGE_SKIPPED);
    CHECK_EQ(res[3].entry, CHRYS_NO_ID);
    chrys_merger_get_stats(m, &st);
    CHECK_EQ(st.records, 4);
    CHECK_EQ(st.skipped, 3);
    CHECK_EQ(st.added, 1);
    /* options are checked */
    o.threshold = 1.5;
    CHECK_EQ(chrys_merger_configure(m, &o), CHRYS_INVALID);
    o.threshold = 0.85;
    o.weight_old = -1;
    CHECK_EQ(chrys_merger_configure(m, &o), CHRYS_INVALID);
    chrys_merger_free(m);
}

void test_merge_semantics_details(void)
{
    /* threshold equality merges; scores <= 0 never match even with a negative threshold; ties go
     * to the oldest entry; weights 0.4/0.6 without renormalisation; the improvements. */
    chrys_merger *m = new_merger(2, 0.6, 0, 0, 1);
    float a[2] = {1, 0}, b[2] = {0, 1}, c[2] = {0.6f, 0.8f}, dd[2] = {1, 1};
    chrys_merge_record r[4] = {{1, a, 2, NULL}, {2, b, 2, NULL}, {3, dd, 2, NULL}, {4, c, 2, NULL}};
    chrys_merge_result res[4];
    CHECK_EQ(chrys_merger_merge(m, 3, r, res), CHRYS_OK);
    CHECK_EQ(res[1].action, CHRYS_MERGE_ADDED); /* cos 0 */
    /* {1,1}: cos 0.7071 to both a and b: a tie, the oldest entry (0) wins */
    CHECK_EQ(res[2].action, CHRYS_MERGE_MERGED);
    CHECK_EQ(res[2].entry, 0);
    float v[2];
    chrys_merge_entry en = {sizeof en};
    chrys_merger_get_entry(m, 0, &en, v);
    CHECK_NEAR(v[0], 0.4 * 1 + 0.6 * 1, 1e-6);
    CHECK_NEAR(v[1], 0.6, 1e-6);
    CHECK_EQ(en.merged_count, 2);
    CHECK_NEAR(en.similarity_score, 0.70710678, 1e-6);
    chrys_merger_free(m);
    /* A tie between an entry changed earlier in the same block (direction unchanged) and an
     * untouched newer entry: the older entry must still win. */
    {
        chrys_merge_opts ot;
        chrys_merge_opts_init(&ot);
        ot.dim = 2;
        ot.threshold = 0.7;
        ot.batch_size = 2;
        chrys_merger *mt = NULL;
        CHECK_EQ(chrys_merger_new(&ot, &mt, NULL), CHRYS_OK);
        float e0[2] = {1, 0}, e1[2] = {0, 1}, e0x[2] = {3, 0}, both[2] = {2, 2};
        chrys_merge_record first[2] = {{1, e0, 2, NULL}, {2, e1, 2, NULL}};
        chrys_merge_record block[2] = {{3, e0x, 2, NULL}, {4, both, 2, NULL}};
        chrys_merge_result rt[2];
        CHECK_EQ(chrys_merger_merge(mt, 2, first, rt), CHRYS_OK);
        CHECK_EQ(chrys_merger_merge(mt, 2, block, rt), CHRYS_OK);
        CHECK_EQ(rt[0].entry, 0);
        CHECK_EQ(rt[1].action, CHRYS_MERGE_MERGED);
        CHECK_EQ(rt[1].entry, 0);
        chrys_merger_free(mt);
    }
    /* negative threshold: the original never matches a similarity <= 0 */
    m = new_merger(2, -0.5, 0, 0, 1);
    float na[2] = {1, 0}, nb[2] = {-1, 0.1f};
    chrys_merge_record rn[2] = {{1, na, 2, NULL}, {2, nb, 2, NULL}};
    CHECK_EQ(chrys_merger_merge(m, 2, rn, res), CHRYS_OK);
    CHECK_EQ(res[1].action, CHRYS_MERGE_ADDED);
    CHECK(isnan(res[1].score));
    chrys_merger_free(m);
    /* renormalise and mean update */
    chrys_merge_opts o;
    chrys_merge_opts_init(&o);
    o.dim = 2;
    o.threshold = 0.5;
    o.renormalize = 1;
    CHECK_EQ(chrys_merger_new(&o, &m, NULL), CHRYS_OK);
    float p[2] = {3, 0}, q2[2] = {3, 3};
    chrys_merge_record rr[2] = {{1, p, 2, NULL}, {2, q2, 2, NULL}};
    CHECK_EQ(chrys_merger_merge(m, 2, rr, res), CHRYS_OK);
    chrys_merger_get_entry(m, 0, &en, v);
    CHECK_NEAR(sqrt((double)v[0] * v[0] + (double)v[1] * v[1]), 1.0, 1e-6);
    chrys_merger_free(m);
    o.renormalize = 0;
    o.mean_update = 1;
    o.threshold = 0.1;
    CHECK_EQ(chrys_merger_new(&o, &m, NULL), CHRYS_OK);
    float s1[2] = {1, 0}, s2[2] = {1, 1}, s3[2] = {1, 2};
    chrys_merge_record rm[3] = {{1, s1, 2, NULL}, {2, s2, 2, NULL}, {3, s3, 2, NULL}};
    CHECK_EQ(chrys_merger_merge(m, 3, rm, res), CHRYS_OK);
    chrys_merger_get_entry(m, 0, &en, v);
    CHECK_EQ(en.merged_count, 3);
    CHECK_NEAR(v[0], 1.0, 1e-6); /* mean of the three */
    CHECK_NEAR(v[1], 1.0, 1e-6);
    chrys_merger_free(m);
    /* skill variant: salts_used union, skill_name kept, no last_merged_at */
    m = new_merger(2, 0.9, 1, 0, 1);
    chrys_merge_record sk[2] = {{1, a, 2, "{\"skill_name\":\"x\",\"salts_used\":[\"s1\",\"s2\"]}"},
                                {2, a, 2, "{\"skill_name\":\"y\",\"salts_used\":[\"s2\",\"s3\"]}"}};
    CHECK_EQ(chrys_merger_merge(m, 2, sk, res), CHRYS_OK);
    chrys_merger_get_entry(m, 0, &en, NULL);
    CHECK(en.meta && !strcmp(en.meta, "{\"skill_name\":\"x\",\"salts_used\":[\"s1\",\"s2\",\"s3\"]}"));
    chrys_merger_free(m);
}

/* Agreement of two runs over the same records: a record agrees when it ended in the entry created
 * by the same record in both runs (entry numbers shift after one extra or missing entry; the
 * creating record does not). first: the first record that differs (n when none). */
static size_t creator_agreement(const chrys_merge_result *a, const chrys_merge_result *b, size_t n, size_t *first)
{
    /* entry -> the record that created it (entries are numbered 0, 1, ... in creation order) */
    uint64_t *ea = calloc(n + 1, sizeof *ea), *eb = calloc(n + 1, sizeof *eb);
    size_t agree = 0;
    *first = n;
    for (size_t i = 0; i < n; i++) {
        if (a[i].action == CHRYS_MERGE_ADDED && a[i].entry < n) ea[a[i].entry] = i;
        if (b[i].action == CHRYS_MERGE_ADDED && b[i].entry < n) eb[b[i].entry] = i;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t xa = a[i].entry < n ? ea[a[i].entry] : UINT64_MAX, xb = b[i].entry < n ? eb[b[i].entry] : UINT64_MAX;
        if (xa == xb) agree++;
        else if (*first == n) *first = i;
    }
    free(ea);
    free(eb);
    return agree;
}

/* What every graph-merge test claims of a run with verify on: it differs from the exact run
 * exactly when verify counted a disagreement. Up to the first record that differs both runs hold
 * the same entries, so that record's decision differs from the exact one on the same state (it is
 * counted) and no earlier one does; with no difference at all, every decision was the exact one
 * on the exact state (nothing is counted). Holds for any run, a parallel build's included. */
static void check_differs_iff_counted(const chrys_merge_result *ex, const chrys_merge_result *ap, size_t n,
                                      uint64_t disagreements, const char *what)
{
    size_t first, agree = creator_agreement(ex, ap, n, &first);
    if ((agree == n) != (disagreements == 0))
        h_fail(__FILE__, __LINE__, "%s: %zu of %zu records agree with the exact run (first difference %zu) but verify counted %llu",
               what, agree, n, first, (unsigned long long)disagreements);
}

/* The same claim record by record, for a repeatable run (one thread: the graph is linked in one
 * order): merging records [0, first] again with the same options repeats the run's decisions,
 * and verify counts no disagreement before the first record that differs from the exact run and
 * exactly one at it. Returns that record (n when the runs agree throughout: nothing to replay). */
static size_t check_first_difference_counted(const chrys_merge_opts *o, const chrys_merge_record *recs,
                                             const chrys_merge_result *ex, const chrys_merge_result *ap, size_t n)
{
    size_t first;
    creator_agreement(ex, ap, n, &first);
    CHECK_EQ(o->n_threads, 1u);
    CHECK(o->verify);
    if (first == n) return n;
    chrys_merger *m = NULL;
    chrys_merge_result *re = malloc((first + 1) * sizeof *re);
    CHECK_EQ(chrys_merger_new(o, &m, NULL), CHRYS_OK);
    CHECK_EQ(chrys_merger_merge(m, first + 1, recs, re), CHRYS_OK);
    chrys_merge_stats st = {sizeof st};
    chrys_merger_get_stats(m, &st);
    chrys_merger_free(m);
    size_t same = 0;
    for (size_t i = 0; i <= first; i++) same += re[i].action == ap[i].action && re[i].entry == ap[i].entry;
    CHECK_EQ(same, first + 1); /* the replay is the run */
    CHECK_EQ(st.verified, first + 1);
    if (st.disagreements != 1)
        h_fail(__FILE__, __LINE__, "records 0..%zu (the first difference from the exact run last): verify counted %llu, not 1",
               first, (unsigned long long)st.disagreements);
    free(re);
    return first;
}

void test_merge_index_backed(void)
{
    /* A clustered stream of 6000 records; the entries' index becomes an index at 500 entries: the
     * planner's HNSW (auto), or IVF when the spec asks. The index-backed merge must agree with the
     * exact merge on >= 99.9% of the records, and its verify mode must report the disagreements
     * it makes. */
    uint64_t s = h_seed + 31;
    const size_t d = 32, n = 6000;
    float *x = make_stream(&s, 1, n, d, 0.85);
    chrys_merge_record *recs = malloc(n * sizeof *recs);
    chrys_merge_result *ex = malloc(n * sizeof *ex), *ap = malloc(n * sizeof *ap);
    for (size_t i = 0; i < n; i++) recs[i] = (chrys_merge_record){i, x + i * d, (uint32_t)d, NULL};
    const char *specs[2] = {"auto", "IVF32,Flat"};
    for (int sp = 0; sp < 2; sp++) {
        chrys_merge_stats se = {sizeof se}, sa = {sizeof sa};
        chrys_merge_opts vo;
        for (int mode = 0; mode < 2; mode++) {
            chrys_merge_opts o;
            chrys_merge_opts_init(&o);
            o.dim = (uint32_t)d;
            o.auto_threshold = 500;
            o.index_spec = specs[sp];
            o.exact = mode == 0;
            o.verify = mode == 1;
            o.nprobe = 4; /* explicit: use the (small) IVF index although exact search would be cheaper */
            o.n_threads = 1; /* the graph linked in one order: the run can be replayed */
            if (mode) vo = o;
            chrys_merger *m = NULL;
            CHECK_EQ(chrys_merger_new(&o, &m, NULL), CHRYS_OK);
            CHECK_EQ(chrys_merger_merge(m, n, recs, mode ? ap : ex), CHRYS_OK);
            chrys_merger_get_stats(m, mode ? &sa : &se);
            chrys_index_info info = {sizeof info};
            chrys_index_get_info(chrys_merger_index(m), &info);
            CHECK_EQ(info.kind, sp ? CHRYS_INDEX_IVF : CHRYS_INDEX_HNSW);
            chrys_merger_free(m);
        }
        size_t first, agree = creator_agreement(ex, ap, n, &first);
        fprintf(stderr, "    index-backed (%s): %zu of %zu agree; %llu approx, %llu confirmed, %llu disagreements (verify)\n",
                specs[sp], agree, n, (unsigned long long)sa.approx_records, (unsigned long long)sa.confirmations,
                (unsigned long long)sa.disagreements);
        CHECK(se.approx_records == 0);
        CHECK(sa.approx_records > n / 2);
        CHECK_EQ(sa.verified, n);
        if (sp == 1 && agree * 1000 < n * 999) /* IVF: deterministic; HNSW: see test_merge_hnsw_scale */
            h_fail(__FILE__, __LINE__, "index-backed merge (%s) agrees on %zu of %zu records (< 99.9%%)", specs[sp], agree, n);
        check_differs_iff_counted(ex, ap, n, sa.disagreements, specs[sp]);
        check_first_difference_counted(&vo, recs, ex, ap, n);
        if (sa.disagreements * 1000 > n)
            h_fail(__FILE__, __LINE__, "verify: %llu disagreements in %zu records", (unsigned long long)sa.disagreements, n);
        CHECK(sa.confirmations > 0); /* the clustered stream has records near the threshold */
    }
    free(recs);
    free(ex);
    free(ap);
    free(x);
}

/* ------------------------------------------------------------------------------------------
 * The merger at scale: the planner's HNSW.
 */

/* A stream of n records around nc centres, cluster sizes skewed, per-cluster spreads between a
 * tight cluster (cosine to its centre ~0.98, merges into one entry) and a loose one (~0.75, never
 * merges), so that many records fall near the threshold. */
static float *varied_stream(uint64_t *s, size_t n, size_t d, size_t nc)
{
    float *c = malloc(nc * d * sizeof(float)), *sp = malloc(nc * sizeof(float)), *x = malloc(n * d * sizeof(float));
    for (size_t i = 0; i < nc * d; i++) c[i] = h_gauss(s);
    for (size_t k = 0; k < nc; k++) sp[k] = 0.2f + 0.7f * (float)h_uniform(s);
    for (size_t r = 0; r < n; r++) {
        double u = h_uniform(s);
        size_t k = (size_t)(u * u * (double)nc) % nc; /* skewed: low-numbered clusters are larger */
        for (size_t i = 0; i < d; i++) x[r * d + i] = c[k * d + i] + sp[k] * h_gauss(s);
    }
    free(c);
    free(sp);
    return x;
}

static chrys_merger *hnsw_merger(uint32_t d, uint64_t auto_threshold, int exact)
{
    chrys_merge_opts o;
    chrys_merge_opts_init(&o);
    o.dim = d;
    o.auto_threshold = auto_threshold;
    o.exact = exact;
    chrys_merger *m = NULL;
    CHECK_EQ(chrys_merger_new(&o, &m, NULL), CHRYS_OK);
    return m;
}

/* Records 0 .. n-1 over the rows of x (caller frees). */
static chrys_merge_record *as_records(const float *x, size_t n, size_t d)
{
    chrys_merge_record *recs = malloc(n * sizeof *recs);
    for (size_t i = 0; i < n; i++) recs[i] = (chrys_merge_record){i, x + i * d, (uint32_t)d, NULL};
    return recs;
}

/* The exact merge of recs into a fresh merger: its decisions into ex, its counters into st. */
static void exact_merge(const chrys_merge_record *recs, size_t n, uint32_t d, uint64_t auto_threshold,
                        chrys_merge_result *ex, chrys_merge_stats *st)
{
    chrys_merger *m = hnsw_merger(d, auto_threshold, 1);
    CHECK_EQ(chrys_merger_merge(m, n, recs, ex), CHRYS_OK);
    chrys_merger_get_stats(m, st);
    chrys_merger_free(m);
}

/* Check every later decision of m against the exact one on the same state (decides nothing). */
static void turn_on_verify(chrys_merger *m)
{
    chrys_merge_opts o = {sizeof o};
    chrys_merger_get_opts(m, &o);
    o.verify = 1;
    CHECK_EQ(chrys_merger_configure(m, &o), CHRYS_OK);
}

void test_merge_hnsw_scale(void)
{
    /* 20,000 records, 64-d, 400 clusters: the planner switches to HNSW at 1,000 entries. The
     * index-backed merge takes most of its candidates from the graph, at most 0.1% of its
     * decisions differ from the exact one on the same state, and it differs from the exact merge
     * only from such a decision (up to the first difference both runs hold the same state, so
     * that record's decision differs from the exact one on the same state); with the safeguard
     * off and a narrow walk, verify still reports a disagreement exactly when the runs differ. */
    uint64_t s = h_seed + 77;
    const size_t d = 64, n = 20000;
    float *x = varied_stream(&s, n, d, 400);
    chrys_merge_record *recs = as_records(x, n, d);
    chrys_merge_result *ex = malloc(n * sizeof *ex), *ap = malloc(n * sizeof *ap);
    chrys_merge_stats se = {sizeof se};
    exact_merge(recs, n, (uint32_t)d, 1000, ex, &se);
    CHECK_EQ(se.approx_records, 0);
    CHECK(se.merged > n / 5 && se.added > n / 5); /* a real mix of merges and appends */

    chrys_merger *m = hnsw_merger((uint32_t)d, 1000, 0);
    turn_on_verify(m);
    CHECK_EQ(chrys_merger_merge(m, n, recs, ap), CHRYS_OK);
    chrys_merge_stats sa = {sizeof sa};
    chrys_merger_get_stats(m, &sa);
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(chrys_merger_index(m), &info);
    CHECK_EQ(info.kind, CHRYS_INDEX_HNSW);
    CHECK(info.planned);
    chrys_merger_free(m);
    size_t first, agree = creator_agreement(ex, ap, n, &first);
    fprintf(stderr, "    hnsw merge: %zu of %zu agree (first difference %zu); %llu from the index, %llu confirmed, verify: %llu\n",
            agree, n, first, (unsigned long long)sa.approx_records, (unsigned long long)sa.confirmations,
            (unsigned long long)sa.disagreements);
    /* Each decision against the exact one on the same state: at most 0.1% differ. Agreement with
     * the separate exact run is reported, not asserted: a record decided differently changes the
     * entries every later record sees, and under the original rule (no renormalisation) one early
     * difference in a drifting cluster can move hundreds of later records (seen: one decision,
     * 442 records, on one seed of this stream); bench/run_merge_scale.sh measures it at scale. What
     * must hold: the runs differ only from a record whose decision verify counted. */
    CHECK_EQ(sa.verified, n);
    if (sa.disagreements * 1000 > n)
        h_fail(__FILE__, __LINE__, "HNSW merge: %llu of %zu decisions differ from the exact one", (unsigned long long)sa.disagreements, n);
    check_differs_iff_counted(ex, ap, n, sa.disagreements, "hnsw merge");
    CHECK(sa.approx_records > n * 9 / 10);
    CHECK(sa.confirmations > 0 && sa.confirmations < sa.approx_records / 2);

    chrys_merge_opts o;
    chrys_merge_opts_init(&o);
    o.dim = (uint32_t)d;
    o.auto_threshold = 1000; /* the graph from 1,000 entries, as above (the default would keep all 20,000 exact) */
    o.confirm_margin = 0;
    o.ef_search = 8;
    o.verify = 1;
    o.n_threads = 1; /* repeatable: replayed below */
    m = NULL;
    CHECK_EQ(chrys_merger_new(&o, &m, NULL), CHRYS_OK);
    CHECK_EQ(chrys_merger_merge(m, n, recs, ap), CHRYS_OK);
    chrys_merger_get_stats(m, &sa);
    chrys_merger_free(m);
    agree = creator_agreement(ex, ap, n, &first);
    fprintf(stderr, "    no safeguard, ef 8: %zu of %zu agree; verify: %llu disagreements\n", agree, n,
            (unsigned long long)sa.disagreements);
    CHECK_EQ(sa.verified, n);
    CHECK(sa.approx_records > n * 9 / 10);
    check_differs_iff_counted(ex, ap, n, sa.disagreements, "no safeguard, ef 8");
    first = check_first_difference_counted(&o, recs, ex, ap, n);
    if (first < n) fprintf(stderr, "    replayed records 0..%zu: one disagreement counted, at the first difference\n", first);
    free(recs);
    free(ex);
    free(ap);
    free(x);
}

void test_merge_hnsw_continuation(void)
{
    /* A store continued across the planner's switch (Flat, saved, reopened, then past the
     * threshold) and a store an earlier version planned as IVF (reopened: it becomes HNSW at its
     * next merge) both carry on where they stopped: they differ from one exact run over the whole
     * stream only from a decision verify counted (see test_merge_hnsw_scale), and at most 0.1% of
     * the decisions differ from the exact one on the same state. */
    uint64_t s = h_seed + 78;
    const size_t d = 48, n = 6000;
    float *x = varied_stream(&s, n, d, 150);
    chrys_merge_record *recs = as_records(x, n, d);
    chrys_merge_result *ex = malloc(n * sizeof *ex), *ap = malloc(n * sizeof *ap);
    chrys_merge_stats se = {sizeof se};
    exact_merge(recs, n, (uint32_t)d, 500, ex, &se);
    chrys_merger *m;
    char path[64];
    snprintf(path, sizeof path, "/tmp/chrys_merge_cont_%d.chrys", (int)getpid());
    for (int old_ivf = 0; old_ivf < 2; old_ivf++) {
        size_t cut = old_ivf ? 2500 : 300;
        m = hnsw_merger((uint32_t)d, 500, 0);
        turn_on_verify(m);
        if (old_ivf) ((chrys_index *)chrys_merger_index(m))->plan_kind = CHRYS_INDEX_IVF; /* as before HNSW */
        CHECK_EQ(chrys_merger_merge(m, cut, recs, ap), CHRYS_OK);
        chrys_merge_stats s1 = {sizeof s1}, s2 = {sizeof s2};
        chrys_merger_get_stats(m, &s1);
        chrys_index_info info = {sizeof info};
        chrys_index_get_info(chrys_merger_index(m), &info);
        CHECK_EQ(info.kind, old_ivf ? CHRYS_INDEX_IVF : CHRYS_INDEX_FLAT);
        CHECK_EQ(chrys_merger_save(m, path, NULL), CHRYS_OK);
        chrys_merger_free(m);
        CHECK_EQ(chrys_merger_open(path, &m, NULL), CHRYS_OK);
        turn_on_verify(m);
        CHECK_EQ(chrys_merger_merge(m, n - cut, recs + cut, ap + cut), CHRYS_OK);
        chrys_merger_get_stats(m, &s2); /* (counters of this handle: the second part) */
        chrys_index_get_info(chrys_merger_index(m), &info);
        CHECK_EQ(info.kind, CHRYS_INDEX_HNSW);
        CHECK_EQ(chrys_merger_save(m, path, NULL), CHRYS_OK);
        chrys_merger_free(m);
        CHECK_EQ(chrys_merger_open(path, &m, NULL), CHRYS_OK); /* the graph store loads and checks */
        chrys_merge_stats st = {sizeof st};
        chrys_merger_get_stats(m, &st);
        CHECK_EQ(st.records, n);
        chrys_merger_free(m);
        size_t first, agree = creator_agreement(ex, ap, n, &first);
        uint64_t dis = s1.disagreements + s2.disagreements;
        CHECK_EQ(s1.verified + s2.verified, n);
        (void)agree;
        check_differs_iff_counted(ex, ap, n, dis, old_ivf ? "continued IVF store" : "continued Flat store");
        if (dis * 1000 > n)
            h_fail(__FILE__, __LINE__, "continued store (%s): %llu of %zu decisions differ from the exact one",
                   old_ivf ? "IVF" : "Flat", (unsigned long long)dis, n);
    }
    unlink(path);
    free(recs);
    free(ex);
    free(ap);
    free(x);
}

void test_merge_hnsw_index_current(void)
{
    /* With the graph in use: a merge rewrites the entry's float32 row and its SQ8 code at once;
     * an entry appended earlier in the same block takes a later near-duplicate; when the merge
     * returns every entry is linked and found by a search of the merger's index. */
    uint64_t s = h_seed + 79;
    const size_t d = 32, n = 3000;
    float *x = varied_stream(&s, n, d, 60);
    chrys_merge_record *recs = as_records(x, n, d);
    chrys_merge_result *res = malloc(n * sizeof *res);
    chrys_merger *m = hnsw_merger((uint32_t)d, 200, 0);
    CHECK_EQ(chrys_merger_merge(m, n, recs, res), CHRYS_OK);
    const chrys_index *ix = chrys_merger_index(m);
    CHECK_EQ(ix->kind, CHRYS_INDEX_HNSW);
    CHECK_EQ(ix->pending, 0);
    chrys_merge_stats st = {sizeof st};
    chrys_merger_get_stats(m, &st);
    float *v = malloc(d * sizeof(float)), *dec = malloc(d * sizeof(float));
    size_t found = 0, code_bad = 0;
    for (uint64_t e = 0; e < st.entries; e++) {
        chrys_merge_entry en = {sizeof en};
        CHECK_EQ(chrys_merger_get_entry(m, e, &en, v), CHRYS_OK);
        uint32_t slot = idmap_get(&ix->map, e);
        sq8_decode(ix, slot, dec); /* the code follows the row */
        for (size_t i = 0; i < d; i++)
            if (fabsf(dec[i] - ix->vecs[(size_t)slot * d + i]) > ix->sq_step[i] * 0.5f + 1e-6f &&
                ix->vecs[(size_t)slot * d + i] >= ix->sq_min[i] && ix->vecs[(size_t)slot * d + i] <= ix->sq_min[i] + 255 * ix->sq_step[i])
                code_bad++;
        chrys_search_opts so;
        chrys_search_opts_init(&so);
        so.k = 1;
        so.ef_search = 64;
        chrys_hit h;
        CHECK_EQ(chrys_index_search(ix, 1, v, &so, &h), CHRYS_OK);
        found += h.id == e && h.score > 0.99999;
    }
    CHECK_EQ(code_bad, 0);
    if (found * 100 < st.entries * 99) h_fail(__FILE__, __LINE__, "%zu of %llu entries found by their own vector", found, (unsigned long long)st.entries);
    /* a new direction, then its near-duplicate in the same block: merged into the new entry */
    float *nv = malloc(2 * d * sizeof(float));
    for (size_t i = 0; i < d; i++) nv[i] = h_gauss(&s) * 10.0f;
    for (size_t i = 0; i < d; i++) nv[d + i] = nv[i] * 1.5f + 0.01f * h_gauss(&s);
    chrys_merge_record two[2] = {{n, nv, (uint32_t)d, NULL}, {n + 1, nv + d, (uint32_t)d, NULL}};
    CHECK_EQ(chrys_merger_merge(m, 2, two, res), CHRYS_OK);
    CHECK_EQ(res[0].action, CHRYS_MERGE_ADDED);
    CHECK_EQ(res[1].action, CHRYS_MERGE_MERGED);
    CHECK_EQ(res[1].entry, res[0].entry);
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.k = 1;
    chrys_hit h;
    CHECK_EQ(chrys_index_search(ix, 1, nv, &so, &h), CHRYS_OK);
    CHECK_EQ(h.id, res[0].entry);
    chrys_merger_free(m);
    free(nv);
    free(v);
    free(dec);
    free(recs);
    free(res);
    free(x);
}

/* A caller built against the first chrys_merge_opts (ending at `user`) passes a smaller struct:
 * the library reads only its struct_size bytes (later fields take their defaults) and
 * chrys_merger_get_opts writes no more than that. The bytes after the small struct are filled
 * with 0xAB, which would read as verify = exact = 1, a garbage index_spec and ef_search far above
 * its cap. */
void test_merge_opts_older_struct(void)
{
    size_t v1 = offsetof(chrys_merge_opts, user) + sizeof(void *);
    unsigned char *buf = malloc(sizeof(chrys_merge_opts) + 64);
    memset(buf, 0xAB, sizeof(chrys_merge_opts) + 64);
    chrys_merge_opts full;
    chrys_merge_opts_init(&full);
    full.dim = 8;
    full.threshold = 0.9;
    memcpy(buf, &full, v1);
    chrys_merge_opts *small = (chrys_merge_opts *)buf;
    small->struct_size = (uint32_t)v1;
    chrys_merger *m = NULL;
    char *msg = NULL;
    CHECK_EQ(chrys_merger_new(small, &m, &msg), CHRYS_OK);
    chrys_free(msg);
    if (!m) {
        free(buf);
        return;
    }
    chrys_merge_opts got = {sizeof got};
    CHECK_EQ(chrys_merger_get_opts(m, &got), CHRYS_OK);
    CHECK_EQ(got.dim, 8);
    CHECK(got.threshold == 0.9);
    CHECK_EQ(got.exact, 0);
    CHECK_EQ(got.verify, 0);
    CHECK_EQ(got.ef_search, 0);
    CHECK(got.confirm_margin == 0.01);
    /* configure with the small struct: same rule */
    small->threshold = 0.8;
    CHECK_EQ(chrys_merger_configure(m, small), CHRYS_OK);
    got.struct_size = sizeof got;
    chrys_merger_get_opts(m, &got);
    CHECK(got.threshold == 0.8);
    CHECK_EQ(got.verify, 0);
    CHECK_EQ(got.nprobe, 0);
    /* get_opts into the small struct writes v1 bytes and no more */
    memset(buf, 0xAB, sizeof(chrys_merge_opts) + 64);
    small->struct_size = (uint32_t)v1;
    CHECK_EQ(chrys_merger_get_opts(m, small), CHRYS_OK);
    CHECK_EQ(small->struct_size, v1);
    CHECK_EQ(small->dim, 8);
    size_t touched = 0;
    for (size_t i = v1; i < sizeof(chrys_merge_opts) + 64; i++) touched += buf[i] != 0xAB;
    CHECK_EQ(touched, 0);
    /* too small to hold the first version: refused */
    small->struct_size = 8;
    CHECK_EQ(chrys_merger_configure(m, small), CHRYS_INVALID);
    chrys_merger_free(m);
    free(buf);
}

/* Batch merging on 2 threads (run under ThreadSanitizer by `make tsan`). The exact block path on
 * 2 threads gives the one-at-a-time, single-threaded decisions and entries bit for bit; the
 * planner's graph path on 2 threads (the graph linked and relinked by 2 workers) passes verify
 * (at most 0.1% of decisions differ from the exact one on the same state, and the run differs
 * from the exact run only from such a decision) and its store reloads through the graph checks. */
void test_merge_concurrent_batch_two_threads(void)
{
    uint64_t s = h_seed + 80;
    const size_t d = 32, n = 3000;
    float *x = varied_stream(&s, n, d, 90);
    chrys_merge_record *recs = as_records(x, n, d);
    chrys_merge_result *ex = malloc(n * sizeof *ex), *got = malloc(n * sizeof *got);
    chrys_merger *ref = NULL, *m = NULL;
    chrys_merge_opts o;
    chrys_merge_opts_init(&o);
    o.dim = (uint32_t)d;
    o.auto_threshold = 400;
    o.exact = 1;
    o.n_threads = 1;
    o.batch_size = 1;
    CHECK_EQ(chrys_merger_new(&o, &ref, NULL), CHRYS_OK);
    CHECK_EQ(chrys_merger_merge(ref, n, recs, ex), CHRYS_OK);
    o.n_threads = 2;
    o.batch_size = 0;
    CHECK_EQ(chrys_merger_new(&o, &m, NULL), CHRYS_OK);
    CHECK_EQ(chrys_merger_merge(m, n, recs, got), CHRYS_OK);
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++) wrong += got[i].entry != ex[i].entry || got[i].action != ex[i].action;
    CHECK_EQ(wrong, 0);
    chrys_merge_stats sr = {sizeof sr}, sm = {sizeof sm};
    chrys_merger_get_stats(ref, &sr);
    chrys_merger_get_stats(m, &sm);
    CHECK_EQ(sm.entries, sr.entries);
    CHECK(sr.merged > n / 5 && sr.added > n / 5);
    float *va = malloc(d * sizeof(float)), *vb = malloc(d * sizeof(float));
    size_t bad = 0;
    for (uint64_t e = 0; e < sr.entries && e < sm.entries; e++) {
        chrys_merge_entry a = {sizeof a}, b = {sizeof b};
        CHECK_EQ(chrys_merger_get_entry(ref, e, &a, va), CHRYS_OK);
        CHECK_EQ(chrys_merger_get_entry(m, e, &b, vb), CHRYS_OK);
        bad += a.merged_count != b.merged_count || memcmp(va, vb, d * sizeof(float)) != 0;
    }
    CHECK_EQ(bad, 0);
    chrys_merger_free(m);
    m = NULL;
    /* the graph path on 2 threads */
    o.exact = 0;
    o.verify = 1;
    CHECK_EQ(chrys_merger_new(&o, &m, NULL), CHRYS_OK);
    CHECK_EQ(chrys_merger_merge(m, n, recs, got), CHRYS_OK);
    chrys_merger_get_stats(m, &sm);
    CHECK_EQ(chrys_merger_index(m)->kind, CHRYS_INDEX_HNSW);
    CHECK_EQ(sm.verified, n);
    CHECK(sm.approx_records > 0);
    if (sm.disagreements * 1000 > n)
        h_fail(__FILE__, __LINE__, "2-thread graph merge: %llu of %zu decisions differ from the exact one",
               (unsigned long long)sm.disagreements, n);
    check_differs_iff_counted(ex, got, n, sm.disagreements, "2-thread graph merge");
    char path[64];
    snprintf(path, sizeof path, "/tmp/chrys_merge_conc_%d.chrys", (int)getpid());
    CHECK_EQ(chrys_merger_save(m, path, NULL), CHRYS_OK);
    chrys_merger_free(m);
    m = NULL;
    CHECK_EQ(chrys_merger_open(path, &m, NULL), CHRYS_OK);
    unlink(path);
    chrys_merger_free(m);
    chrys_merger_free(ref);
    free(va);
    free(vb);
    free(recs);
    free(ex);
    free(got);
    free(x);
}

static void unit_row(float *v, size_t d)
{
    double q = 0;
    for (size_t i = 0; i < d; i++) q += (double)v[i] * v[i];
    for (size_t i = 0; i < d; i++) v[i] = (float)(v[i] / sqrt(q));
}

/* A merger with default options (n_threads as given, auto_threshold and exact left alone). */
static chrys_merger *default_merger(uint32_t d, uint32_t n_threads, int exact)
{
    chrys_merge_opts o;
    chrys_merge_opts_init(&o);
    o.dim = d;
    o.n_threads = n_threads;
    o.exact = exact;
    chrys_merger *m = NULL;
    CHECK_EQ(chrys_merger_new(&o, &m, NULL), CHRYS_OK);
    return m;
}

/* Results, entry counts and entry vectors of two mergers equal bit for bit. */
static void check_same_entries(chrys_merger *a, chrys_merger *b, size_t d);

static void check_same_merge(chrys_merger *a, chrys_merger *b, const chrys_merge_result *ra,
                             const chrys_merge_result *rb, size_t n, size_t d)
{
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ(ra[i].entry, rb[i].entry);
        CHECK_EQ(ra[i].action, rb[i].action);
        CHECK(!memcmp(&ra[i].score, &rb[i].score, sizeof ra[i].score));
    }
    check_same_entries(a, b, d);
}

/* Same entries, bit for bit, and the same counts. */
static void check_same_entries(chrys_merger *a, chrys_merger *b, size_t d)
{
    chrys_merge_stats sa = {sizeof sa}, sb = {sizeof sb};
    chrys_merger_get_stats(a, &sa);
    chrys_merger_get_stats(b, &sb);
    CHECK_EQ(sa.entries, sb.entries);
    CHECK_EQ(sa.merged, sb.merged);
    float *va = malloc(d * sizeof *va), *vb = malloc(d * sizeof *vb);
    for (uint64_t e = 0; e < sa.entries; e++) {
        chrys_merge_entry ea = {sizeof ea}, eb = {sizeof eb};
        CHECK_EQ(chrys_merger_get_entry(a, e, &ea, va), CHRYS_OK);
        CHECK_EQ(chrys_merger_get_entry(b, e, &eb, vb), CHRYS_OK);
        CHECK_EQ(ea.merged_count, eb.merged_count);
        CHECK(!memcmp(va, vb, d * sizeof *va));
    }
    free(va);
    free(vb);
}

void test_merge_default_is_exact(void)
{
    /* Issue 16: below the merger's switch point (20,000 entries by default) the default merge is
     * the exact merge, at 1 and 2 threads and from run to run. The stream makes well over 1,000
     * entries (the old switch point, where the graph used to take over) on clustered data and on
     * a near-threshold stream (records at cosine 0.85 +- 0.002 of a cluster centre, the centres first). */
    const size_t d = 64, n = 6000;
    for (int kind = 0; kind < 2; kind++) {
        uint64_t s = h_seed + 160 + (uint64_t)kind;
        float *x;
        if (kind == 0) {
            x = varied_stream(&s, n, d, 400);
        } else { /* near threshold: the centres, then c * cs + orthogonal noise * sqrt(1 - cs^2), cs = 0.85 +- 0.002 */
            const size_t nc = 300;
            float *c = malloc(nc * d * sizeof *c);
            for (size_t i = 0; i < nc * d; i++) c[i] = (float)h_gauss(&s);
            for (size_t k = 0; k < nc; k++) unit_row(c + k * d, d);
            x = malloc(n * d * sizeof *x);
            for (size_t r = 0; r < n; r++) {
                size_t k = r < nc ? r : (size_t)(h_uniform(&s) * nc) % nc;
                if (r < nc) { /* the centres come first and become entries */
                    memcpy(x + r * d, c + k * d, d * sizeof *x);
                    continue;
                }
                float *v = x + r * d;
                for (size_t i = 0; i < d; i++) v[i] = (float)h_gauss(&s);
                double dot = 0;
                for (size_t i = 0; i < d; i++) dot += v[i] * c[k * d + i];
                for (size_t i = 0; i < d; i++) v[i] -= (float)dot * c[k * d + i];
                unit_row(v, d);
                double cs = 0.85 + 0.004 * (h_uniform(&s) - 0.5);
                for (size_t i = 0; i < d; i++) v[i] = (float)(cs * c[k * d + i] + sqrt(1 - cs * cs) * v[i]);
            }
            free(c);
        }
        chrys_merge_record *recs = as_records(x, n, d);
        chrys_merge_result *ex = malloc(n * sizeof *ex), *df = malloc(n * sizeof *df);
        chrys_merger *me = default_merger((uint32_t)d, 1, 1);
        CHECK_EQ(chrys_merger_merge(me, n, recs, ex), CHRYS_OK);
        chrys_merge_stats se = {sizeof se};
        chrys_merger_get_stats(me, &se);
        fprintf(stderr, "    stream %d: %llu entries, %llu merged\n", kind, (unsigned long long)se.entries, (unsigned long long)se.merged);
        CHECK(se.entries > 1000 && se.merged > n / 20); /* past the old switch point, a real mix */
        for (uint32_t t = 1; t <= 2; t++)
            for (int rep = 0; rep < 2; rep++) {
                chrys_merger *m = default_merger((uint32_t)d, t, 0);
                CHECK_EQ(chrys_merger_merge(m, n, recs, df), CHRYS_OK);
                chrys_merge_stats st = {sizeof st};
                chrys_merger_get_stats(m, &st);
                CHECK_EQ(st.approx_records, 0);
                chrys_index_info info = {sizeof info};
                chrys_index_get_info(chrys_merger_index(m), &info);
                CHECK_EQ(info.kind, CHRYS_INDEX_FLAT);
                check_same_merge(me, m, ex, df, n, d);
                chrys_merger_free(m);
            }
        chrys_merger_free(me);
        free(ex);
        free(df);
        free(recs);
        free(x);
    }
}

void test_merge_index_unlinked_rows(void)
{
    /* The merger's way into its index (index.h): rows added by index_add_unlinked are stored
     * (exact scans, metadata) but out of the HNSW graph until index_link_pending links them all;
     * chrys_index_add links at once; index_set_meta replaces a row's metadata (owned). */
    uint64_t s = h_seed + 83;
    const size_t d = 16, n0 = 300, nu = 40;
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = (uint32_t)d;
    o.metric = CHRYS_METRIC_COSINE;
    o.spec = "HNSW16";
    chrys_index *ix = NULL;
    CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_OK);
    float *x = malloc((n0 + nu + 1) * d * sizeof(float));
    for (size_t i = 0; i < (n0 + nu + 1) * d; i++) x[i] = h_gauss(&s);
    uint64_t *ids = malloc((n0 + nu + 1) * sizeof *ids);
    for (size_t i = 0; i < n0 + nu + 1; i++) ids[i] = i < n0 ? i : 1000 + i;
    CHECK_EQ(chrys_index_add(ix, n0, ids, x, NULL), CHRYS_OK);
    CHECK_EQ(ix->pending, 0);
    const char *meta[40];
    char mbuf[40][32];
    for (size_t i = 0; i < nu; i++) {
        snprintf(mbuf[i], sizeof mbuf[i], "{\"row\":%zu}", i);
        meta[i] = mbuf[i];
    }
    CHECK_EQ(index_add_unlinked(ix, nu, ids + n0, x + n0 * d, meta), CHRYS_OK);
    CHECK_EQ(ix->n, n0 + nu);
    CHECK_EQ(ix->pending, nu);
    chrys_search_opts so;
    chrys_search_opts_init(&so);
    so.k = 5;
    so.ef_search = 64;
    chrys_hit h[5];
    size_t walk_saw = 0, exact_found = 0, meta_ok = 0;
    for (size_t i = 0; i < nu; i++) {
        const float *v = x + (n0 + i) * d;
        uint64_t id = ids[n0 + i];
        CHECK_EQ(chrys_index_search(ix, 1, v, &so, h), CHRYS_OK);
        for (int j = 0; j < 5; j++) walk_saw += h[j].id >= 1000;
        float *qn = NULL;
        CHECK_EQ(search_prepare_queries(ix, 1, v, &qn, NULL, 0), CHRYS_OK);
        uint64_t eid;
        double es;
        CHECK_EQ(flat_search_prepared(ix, 1, qn ? qn : v, 1, 0, 0, 1, &eid, &es, NULL), CHRYS_OK);
        chrys_free_aligned(qn);
        exact_found += eid == id && es > 0.99999;
        const char *got = NULL;
        CHECK_EQ(chrys_index_get_meta(ix, id, &got), CHRYS_OK);
        meta_ok += got && !strcmp(got, mbuf[i]);
    }
    CHECK_EQ(walk_saw, 0);  /* the graph cannot reach them yet */
    CHECK_EQ(exact_found, nu);
    CHECK_EQ(meta_ok, nu);
    CHECK_EQ(index_link_pending(ix), CHRYS_OK);
    CHECK_EQ(ix->pending, 0);
    CHECK_EQ(index_link_pending(ix), CHRYS_OK); /* nothing left: no-op */
    size_t walk_found = 0;
    for (size_t i = 0; i < nu; i++) {
        CHECK_EQ(chrys_index_search(ix, 1, x + (n0 + i) * d, &so, h), CHRYS_OK);
        walk_found += h[0].id == ids[n0 + i];
    }
    if (walk_found + 1 < nu) h_fail(__FILE__, __LINE__, "%zu of %zu linked rows found by their own vector", walk_found, nu);
    /* the public add links at once */
    CHECK_EQ(chrys_index_add(ix, 1, ids + n0 + nu, x + (n0 + nu) * d, NULL), CHRYS_OK);
    CHECK_EQ(ix->pending, 0);
    CHECK_EQ(chrys_index_search(ix, 1, x + (n0 + nu) * d, &so, h), CHRYS_OK);
    CHECK_EQ(h[0].id, ids[n0 + nu]);
    /* index_set_meta: takes ownership, frees the old one; NULL clears */
    uint32_t slot = idmap_get(&ix->map, ids[n0]);
    index_set_meta(ix, slot, chrys_strdup("{\"merged\":true}"));
    const char *got = NULL;
    CHECK_EQ(chrys_index_get_meta(ix, ids[n0], &got), CHRYS_OK);
    CHECK(got && !strcmp(got, "{\"merged\":true}"));
    index_set_meta(ix, slot, NULL);
    CHECK_EQ(chrys_index_get_meta(ix, ids[n0], &got), CHRYS_OK);
    CHECK(got == NULL);
    chrys_index_free(ix);
    /* Flat: nothing to link, the rows are searchable at once */
    o.spec = "Flat";
    CHECK_EQ(chrys_index_new(&o, &ix, NULL), CHRYS_OK);
    CHECK_EQ(index_add_unlinked(ix, n0, ids, x, NULL), CHRYS_OK);
    CHECK_EQ(ix->pending, 0);
    so.k = 1;
    CHECK_EQ(chrys_index_search(ix, 1, x + 7 * d, &so, h), CHRYS_OK);
    CHECK_EQ(h[0].id, 7);
    chrys_index_free(ix);
    free(ids);
    free(x);
}

/* The int8 screen (merge_screen.c) returns the exact Flat scan's k best, bit for bit: clustered,
 * near-threshold with exact duplicates, and exact ties; dimensions with and without a tail of
 * the 64-byte kernel step; 1 and 2 threads; after entries change in place and new ones arrive. */
/* What merges do to entries: m random rows of the first n (ids = rows, raw x) rewritten in place
 * as 0.4 row + 0.6 a random query (the row itself if that cancels out); their ids in changed. */
static void move_rows(chrys_index *ix, uint64_t *s, const float *x, size_t n, const float *q, size_t nq, size_t d,
                      uint64_t *changed, size_t m)
{
    float *v = malloc(d * sizeof *v);
    for (size_t j = 0; j < m; j++) {
        changed[j] = h_rand(s) % n;
        const float *a = x + changed[j] * d, *b = q + (h_rand(s) % nq) * d;
        for (size_t i = 0; i < d; i++) v[i] = 0.4f * a[i] + 0.6f * b[i];
        if (vec_norm(v, d) == 0) memcpy(v, a, d * sizeof *v);
        CHECK_EQ(index_update_keep_links(ix, idmap_get(&ix->map, changed[j]), v), CHRYS_OK);
    }
    free(v);
}

/* The screen's basis from the first m rows of x (d floats each), taken as they are. */
static int basis_from(merge_screen *scr, const float *x, size_t m, size_t d)
{
    const float **rows = malloc(m * sizeof *rows);
    for (size_t i = 0; i < m; i++) rows[i] = x + i * d;
    int rc = merge_screen_basis(scr, rows, NULL, m, (uint32_t)d);
    free(rows);
    return rc;
}

void test_merge_screen_exact_topk(void)
{
    const size_t dims[3] = {64, 100, 1024}, n = 2500, nq = 300;
    for (int kind = 1; kind <= 3; kind++)
        for (int di = 0; di < 3; di++) {
            size_t d = dims[di];
            uint64_t s = h_seed + 300 + (uint64_t)(kind * 7 + di);
            float *x = make_stream(&s, kind, n + 200, d, 0.85), *q = make_stream(&s, kind, nq, d, 0.85);
            for (size_t i = 0; i < nq / 5; i++) /* exact copies of entries: a score of 1 */
                memcpy(q + i * d, x + (h_rand(&s) % n) * d, d * sizeof *q);
            chrys_index_opts io;
            chrys_index_opts_init(&io);
            io.dim = (uint32_t)d;
            io.spec = "Flat";
            chrys_index *ix = NULL;
            CHECK_EQ(chrys_index_new(&io, &ix, NULL), CHRYS_OK);
            uint64_t *ids = malloc((n + 200) * sizeof *ids);
            for (size_t r = 0; r < n + 200; r++) ids[r] = r;
            CHECK_EQ(chrys_index_add(ix, n, ids, x, NULL), CHRYS_OK);
            float *qp = NULL;
            char why[128];
            CHECK_EQ(search_prepare_queries(ix, nq, q, &qp, why, sizeof why), CHRYS_OK);
            const float *qq = qp ? qp : q;
            merge_screen scr = {0};
            uint64_t *ia = malloc(nq * MERGE_K * sizeof *ia), *ib = malloc(nq * MERGE_K * sizeof *ib);
            double *sa = malloc(nq * MERGE_K * sizeof *sa), *sb = malloc(nq * MERGE_K * sizeof *sb);
            for (int round = 0; round < 4; round++) {
                uint64_t changed[40];
                size_t pending = 0; /* rounds 1 and 3: coded by the first search (sync_search, 2 threads) */
                if (round == 2) { /* the same with the first stage: a basis from 300 of the rows */
                    CHECK_EQ(basis_from(&scr, ix->vecs, 300, d), CHRYS_OK);
                    CHECK(scr.eta < 1e-4);
                    CHECK_EQ(merge_screen_sync(&scr, ix, NULL, 0, 0), CHRYS_OK);
                } else if (round % 2 == 1) { /* merges rewrite rows in place; appends add rows */
                    move_rows(ix, &s, x, n, q, nq, d, changed, 40);
                    if (round == 1) CHECK_EQ(chrys_index_add(ix, 200, ids + n, x + n * d, NULL), CHRYS_OK);
                    pending = 40; /* grown (room 0) */
                } else {
                    CHECK_EQ(merge_screen_sync(&scr, ix, NULL, 0, ix->n + 7), CHRYS_OK);
                }
                /* with a floor: the exact top k, cut where the scores fall below it (0.85: the
                 * near-threshold stream's cosines straddle it; 0.999: the copies alone) */
                const double floors[] = {-INFINITY, 0.5, 0.85, 0.999};
                /* 300 queries: split by chunks of queries; 40 (two chunks): at 2 threads each
                 * chunk's panels are split between the cores and the parts merged */
                const size_t nqs[2] = {nq, 40};
                for (size_t k = 1; k <= MERGE_K; k += MERGE_K - 1)
                    for (unsigned t = 1; t <= 2; t++)
                        for (size_t fi = 0; fi < sizeof floors / sizeof *floors * 2; fi++) {
                            double fl = floors[fi % 4];
                            size_t m = nqs[fi / 4];
                            search_params xp = {k, 0, 0, t, 0, 0, 1, NULL};
                            if (pending) {
                                CHECK_EQ(merge_screen_sync_search(&scr, ix, changed, pending, 0, m, qq, k, fl, 2, ia, sa),
                                         CHRYS_OK);
                                pending = 0;
                            } else {
                                CHECK_EQ(merge_screen_search(&scr, ix, m, qq, k, fl, t, ia, sa), CHRYS_OK);
                            }
                            CHECK_EQ(index_search_prepared(ix, m, qq, &xp, ib, sb), CHRYS_OK);
                            size_t differ = 0, kept = 0;
                            for (size_t i = 0; i < m * k; i++) {
                                uint64_t want = sb[i] >= fl ? ib[i] : CHRYS_NO_ID;
                                double ws = sb[i] >= fl ? sb[i] : -INFINITY;
                                kept += want != CHRYS_NO_ID;
                                differ += ia[i] != want || memcmp(&sa[i], &ws, sizeof ws) != 0;
                            }
                            if (differ)
                                fprintf(stderr, "    kind %d, d %zu, round %d, k %zu, %u threads, floor %g: %zu differ\n", kind,
                                        d, round, k, t, fl, differ);
                            CHECK_EQ(differ, 0);
                            CHECK(kept > 0); /* (every floor keeps some: the copies score 1) */
                        }
                CHECK_EQ(merge_screen_search(&scr, ix, nq, qq, MERGE_K, NAN, 1, ia, sa), CHRYS_INVALID);
            }
            merge_screen_free(&scr);
            chrys_free_aligned(qp);
            chrys_index_free(ix);
            free(x);
            free(q);
            free(ids);
            free(ia);
            free(ib);
            free(sa);
            free(sb);
        }
}

/* The first stage's bound holds for every (query, row) pair: a row is kept whenever its exact
 * score (dot_f64) reaches the bar, tested with the bar on the score itself; and it prunes (most far
 * rows are dropped at a bar of 0.9). Bases from a good sample (300 rows), from 20 rows (rank below
 * the prefix: Gram-Schmidt fills the rest) and from another stream (little of the rows in its
 * span); rows merged into after coding, random, clustered, near-threshold, tied and copied data. */
void test_merge_prefix_bound(void)
{
    const size_t dims[2] = {128, 300}, n = 700, nq = 40;
    size_t far_kept = 0, far = 0;
    for (int kind = 0; kind <= 3; kind++)
        for (int di = 0; di < 2; di++)
            for (int bs = 0; bs < 3; bs++) {
                size_t d = dims[di];
                uint64_t s = h_seed + 400 + (uint64_t)(kind * 11 + di * 3 + bs);
                float *x = make_stream(&s, kind, n, d, 0.85), *q = make_stream(&s, kind, nq, d, 0.85);
                for (size_t i = 0; i < nq / 4; i++) memcpy(q + i * d, x + (h_rand(&s) % n) * d, d * sizeof *q);
                chrys_index_opts io;
                chrys_index_opts_init(&io);
                io.dim = (uint32_t)d;
                io.spec = "Flat";
                chrys_index *ix = NULL;
                CHECK_EQ(chrys_index_new(&io, &ix, NULL), CHRYS_OK);
                uint64_t *ids = malloc(n * sizeof *ids);
                for (size_t r = 0; r < n; r++) ids[r] = r;
                CHECK_EQ(chrys_index_add(ix, n, ids, x, NULL), CHRYS_OK);
                float *qp = NULL;
                char why[128];
                CHECK_EQ(search_prepare_queries(ix, nq, q, &qp, why, sizeof why), CHRYS_OK);
                const float *qq = qp ? qp : q;
                merge_screen scr = {0};
                if (bs == 2) { /* a basis drawn from another stream */
                    uint64_t s2 = s + 1000;
                    float *o = make_stream(&s2, (kind + 1) % 4, 300, d, 0.5);
                    CHECK_EQ(basis_from(&scr, o, 300, d), CHRYS_OK);
                    free(o);
                } else {
                    CHECK_EQ(basis_from(&scr, ix->vecs, bs ? 20 : 300, d), CHRYS_OK);
                }
                CHECK(scr.eta < 1e-4);
                CHECK_EQ(merge_screen_sync(&scr, ix, NULL, 0, 0), CHRYS_OK);
                uint64_t changed[30];
                move_rows(ix, &s, x, n, q, nq, d, changed, 30); /* recoded at the next sync */
                CHECK_EQ(merge_screen_sync(&scr, ix, changed, 30, 0), CHRYS_OK);
                double *bar = malloc(n * sizeof *bar), *hi = malloc(n * sizeof *hi);
                unsigned char *pass = malloc(n);
                size_t missed = 0;
                for (size_t i = 0; i < nq; i++) {
                    const float *qi = qq + i * d;
                    for (size_t r = 0; r < n; r++) {
                        bar[r] = chrys_kernels_active()->dot_f64(qi, ix->vecs + r * d, d);
                        hi[r] = 0.9;
                    }
                    CHECK_EQ(merge__test_prefix_pass(&scr, ix, qi, bar, pass), CHRYS_OK);
                    for (size_t r = 0; r < n; r++) missed += !pass[r];
                    if (bs != 0 || kind == 3) continue;
                    CHECK_EQ(merge__test_prefix_pass(&scr, ix, qi, hi, pass), CHRYS_OK);
                    for (size_t r = 0; r < n; r++)
                        if (bar[r] < 0.5) far++, far_kept += pass[r];
                }
                if (missed) fprintf(stderr, "    kind %d, d %zu, basis %d: %zu rows dropped above their bound\n", kind, d, bs, missed);
                CHECK_EQ(missed, 0);
                free(bar);
                free(hi);
                free(pass);
                merge_screen_free(&scr);
                chrys_free_aligned(qp);
                chrys_index_free(ix);
                free(x);
                free(q);
                free(ids);
            }
    CHECK(far > 1000 && far_kept < far / 2);
}

/* Whole merges with the screen forced on and forced off give the same results and entries, bit
 * for bit, at 1 and 2 threads (clustered and near-threshold streams). */
void test_merge_screen_same_merge(void)
{
    const size_t d = 160, n = 5000;
    for (int kind = 1; kind <= 4; kind++) { /* 3, 4: kinds 1, 2 with the first stage */
        merge__test_prefix(kind > 2 ? 1 : 0);
        uint64_t s = h_seed + 320 + (uint64_t)kind;
        float *x = make_stream(&s, (kind - 1) % 2 + 1, n, d, 0.85);
        chrys_merge_record *recs = as_records(x, n, d);
        chrys_merge_result *ra = malloc(n * sizeof *ra), *rb = malloc(n * sizeof *rb);
        for (uint32_t t = 1; t <= 2; t++) {
            merge__test_screen(0);
            chrys_merger *a = default_merger((uint32_t)d, t, 0);
            CHECK_EQ(chrys_merger_merge(a, n / 2, recs, ra), CHRYS_OK); /* two calls: codes start afresh */
            CHECK_EQ(chrys_merger_merge(a, n - n / 2, recs + n / 2, ra + n / 2), CHRYS_OK);
            merge__test_screen(1);
            chrys_merger *b = default_merger((uint32_t)d, t, 0);
            CHECK_EQ(chrys_merger_merge(b, n / 2, recs, rb), CHRYS_OK);
            CHECK_EQ(chrys_merger_merge(b, n - n / 2, recs + n / 2, rb + n / 2), CHRYS_OK);
            merge__test_screen(-1);
            /* without per-record results the screen wants only entries at the threshold: the
             * same decisions (lookups) and entries */
            merge__test_screen(1);
            chrys_merger *c = default_merger((uint32_t)d, t, 0);
            CHECK_EQ(chrys_merger_merge(c, n / 2, recs, NULL), CHRYS_OK);
            CHECK_EQ(chrys_merger_merge(c, n - n / 2, recs + n / 2, NULL), CHRYS_OK);
            merge__test_screen(-1);
            chrys_merge_stats st = {sizeof st};
            chrys_merger_get_stats(b, &st);
            CHECK(st.merged > n / 20 && st.entries > 200);
            check_same_merge(a, b, ra, rb, n, d);
            size_t wrong = 0;
            for (size_t i = 0; i < n; i++) {
                uint64_t e = CHRYS_NO_ID;
                wrong += chrys_merger_lookup(c, recs[i].id, &e) != CHRYS_OK || e != ra[i].entry;
            }
            CHECK_EQ(wrong, 0);
            check_same_entries(a, c, d);
            chrys_merger_free(a);
            chrys_merger_free(b);
            chrys_merger_free(c);
        }
        free(ra);
        free(rb);
        free(recs);
        free(x);
    }
    merge__test_prefix(-1);
}

/* The merger appends a record as its prepared unit row with its norm (index_add_unit_unlinked):
 * the index must hold exactly what index_add_unlinked of the raw record stores, row and norm bit
 * for bit, under Flat and HNSW; another metric is refused. */
void test_merge_unit_append_same_row(void)
{
    uint64_t s = 99;
    enum { D = 37, N = 50 };
    float v[D], u[D], a[D], b[D];
    for (int kind = 0; kind < 2; kind++) {
        chrys_index_opts io;
        chrys_index_opts_init(&io);
        io.dim = D;
        io.spec = kind ? "HNSW16" : "Flat";
        chrys_index *x = NULL, *y = NULL;
        CHECK_EQ(chrys_index_new(&io, &x, NULL), CHRYS_OK);
        CHECK_EQ(chrys_index_new(&io, &y, NULL), CHRYS_OK);
        for (uint64_t id = 0; id < N; id++) {
            for (int i = 0; i < D; i++) v[i] = (float)((double)(h_rand(&s) % 2001) / 1000.0 - 1.0) * (id % 3 ? 1e-3f : 7.5f);
            double nr = vec_norm(v, D);
            vec_scale_to(u, v, D, nr);
            CHECK_EQ(index_add_unlinked(x, 1, &id, v, NULL), CHRYS_OK);
            CHECK_EQ(index_add_unit_unlinked(y, id, u, nr, NULL), CHRYS_OK);
            CHECK_EQ(chrys_index_get(x, id, a), CHRYS_OK);
            CHECK_EQ(chrys_index_get(y, id, b), CHRYS_OK);
            CHECK(memcmp(a, b, sizeof a) == 0);
            CHECK(x->norms[id] == y->norms[id]);
        }
        CHECK_EQ(index_add_unit_unlinked(y, 0, u, 1.0, NULL), CHRYS_EXISTS); /* ids still checked */
        CHECK_EQ(index_link_pending(x), CHRYS_OK);
        CHECK_EQ(index_link_pending(y), CHRYS_OK);
        chrys_index_free(x);
        chrys_index_free(y);
    }
    chrys_index_opts io;
    chrys_index_opts_init(&io);
    io.dim = D;
    io.spec = "Flat";
    io.metric = CHRYS_METRIC_L2;
    chrys_index *z = NULL;
    CHECK_EQ(chrys_index_new(&io, &z, NULL), CHRYS_OK);
    CHECK_EQ(index_add_unit_unlinked(z, 1, u, 1.0, NULL), CHRYS_INVALID);
    chrys_index_free(z);
}

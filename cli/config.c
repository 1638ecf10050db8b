/*
 * config.c: configuration, in precedence order: command-line flags, environment, config file,
 * defaults. `chrysalis config` prints every value and where it came from.
 *
 * Config file: `--config FILE` (before the command), else $CHRYSALIS_CONFIG, else ./chrysalis.conf,
 * else $XDG_CONFIG_HOME/chrysalis/config (or ~/.config/chrysalis/config), when present. Lines are
 * `key = value`; `#` starts a comment; a `[section]` line is ignored. Unknown keys and invalid
 * values are errors that name the file and line (or the variable, or the flag).
 *
 * The Chrysalis roadmap's variables are accepted as they are: FAISS_ENABLED (false: always exact
 * Flat), FAISS_THRESHOLD (the planner's size threshold), FAISS_INDEX_TYPE (the roadmap's types
 * IVFFlat, HNSW and Flat in any case, ivf for auto, or a spec), FAISS_NLIST (IVFFlat's list count)
 * and FAISS_USE_GPU (accepted; this build has no GPU path, which `config` reports).
 * A CHRYSALIS_* variable wins over its FAISS_* alias. The index names are resolved by the
 * library's chrys_index_spec_parse (IVFFlat: IVF with chrys_index_opts.nlist lists, or the
 * planner's when nlist is 0; HNSW: HNSW32); here they are only shown in their canonical form,
 * with the text as given beside it.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

typedef enum { T_SPEC, T_NLIST, T_UINT, T_BYTES, T_FLOAT01, T_POSFLOAT, T_BOOL, T_PATH } cfg_type;

typedef struct cfg_def {
    const char *key, *env, *alias_env, *def, *help;
    cfg_type type;
} cfg_def;

static const cfg_def DEFS[] = {
    {"index", "CHRYSALIS_INDEX", "FAISS_INDEX_TYPE", "auto",
     "index for new stores: auto, Flat, SQ8[,RFlat], IVFFlat, IVF<nlist>,Flat, IVF<nlist>,SQ8[,RFlat], HNSW, HNSW<M>, "
     "HNSW<M>,SQ8[,RFlat]",
     T_SPEC},
    {"nlist", "CHRYSALIS_NLIST", "FAISS_NLIST", "0", "IVFFlat's list count (0 = the planner's, ~sqrt(n), when it trains)",
     T_NLIST},
    {"enabled", "CHRYSALIS_INDEX_ENABLED", "FAISS_ENABLED", "true", "false: always exact Flat search", T_BOOL},
    {"auto_threshold", "CHRYSALIS_AUTO_THRESHOLD", "FAISS_THRESHOLD", "1000",
     "planner: exact Flat below this many vectors, an index above", T_UINT},
    {"memory_budget", "CHRYSALIS_MEMORY_BUDGET", NULL, "0", "planner: bytes for vectors (K/M/G suffixes; 0 = unlimited)", T_BYTES},
    {"nprobe", "CHRYSALIS_NPROBE", NULL, "0", "IVF lists searched (0 = nlist/16)", T_UINT},
    {"ef_search", "CHRYSALIS_EF_SEARCH", NULL, "0", "HNSW candidates kept while searching (0 = 64)", T_UINT},
    {"ef_construction", "CHRYSALIS_EF_CONSTRUCTION", NULL, "200", "HNSW candidates kept while linking a new vector", T_UINT},
    {"threads", "CHRYSALIS_THREADS", NULL, "0", "worker threads (0 = all cores)", T_UINT},
    {"merge_threshold", "CHRYSALIS_MERGE_THRESHOLD", NULL, "0.85", "merge when cosine >= this", T_FLOAT01},
    {"slow_search", "CHRYSALIS_SLOW_SEARCH", NULL, "5", "warn when a merge search takes longer (seconds)", T_POSFLOAT},
    {"cache", "CHRYSALIS_CACHE", NULL, "", "embedding cache file (empty = none)", T_PATH},
    {"embed_concurrency", "CHRYSALIS_EMBED_CONCURRENCY", NULL, "4", "embedding requests in flight at once (1..256)", T_UINT},
    {"use_gpu", "CHRYSALIS_USE_GPU", "FAISS_USE_GPU", "false", "use a GPU (not available in this build)", T_BOOL},
};
#define N_DEFS (sizeof DEFS / sizeof *DEFS)

static char g_val[N_DEFS][512];
static char g_given[N_DEFS][512]; /* the text as given, when it differs from the canonical value */
static char g_src[N_DEFS][600];
static char g_file[512];

static int find_key(const char *key)
{
    for (size_t i = 0; i < N_DEFS; i++)
        if (!strcmp(DEFS[i].key, key)) return (int)i;
    return -1;
}

static int parse_bool(const char *v, int *out)
{
    if (!strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on")) return *out = 1, 0;
    if (!strcasecmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off")) return *out = 0, 0;
    return -1;
}

int cfg_parse_bytes(const char *v, unsigned long long *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || errno || x < 0) return -1;
    double mult = 1;
    if (*end == 'K' || *end == 'k') mult = 1024, end++;
    else if (*end == 'M' || *end == 'm') mult = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g') mult = 1024.0 * 1024 * 1024, end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return -1;
    *out = (unsigned long long)(x * mult);
    return 0;
}

/* Normalise and check a value; on error fill why. FAISS_INDEX_TYPE's short names map to specs. */
static int check_value(size_t i, const char *in, char *out, size_t cap, char *why, size_t whylen)
{
    const cfg_def *d = &DEFS[i];
    char *end;
    snprintf(out, cap, "%s", in);
    switch (d->type) {
    case T_SPEC: {
        if (!strcasecmp(in, "ivf")) snprintf(out, cap, "auto"); /* the roadmap's short name, kept */
        chrys_index_spec sp = {sizeof sp};
        char *msg = NULL;
        int rc = chrys_index_spec_parse(out, &sp, &msg);
        if (rc) snprintf(why, whylen, "%s", msg ? msg : "invalid index spec");
        chrys_free(msg);
        /* the roadmap's names in their canonical spelling (the library takes any case) */
        if (!rc && sp.is_auto) snprintf(out, cap, "auto");
        else if (!rc && !strcasecmp(in, "flat")) snprintf(out, cap, "Flat");
        else if (!rc && !strcasecmp(in, "ivfflat")) snprintf(out, cap, "IVFFlat");
        else if (!rc && !strcasecmp(in, "hnsw")) snprintf(out, cap, "HNSW%u", sp.hnsw_m);
        return rc ? -1 : 0;
    }
    case T_NLIST: {
        errno = 0;
        unsigned long long v = strtoull(in, &end, 10);
        if (!*in || *end || errno || in[0] == '-' || v > (1u << 20)) {
            snprintf(why, whylen, "expected a list count 0..%u (0 = the planner's), got '%s'", 1u << 20, in);
            return -1;
        }
        return 0;
    }
    case T_UINT: {
        errno = 0;
        unsigned long long v = strtoull(in, &end, 10);
        if (!*in || *end || errno || in[0] == '-' || v > (1ull << 40)) {
            snprintf(why, whylen, "expected a non-negative integer, got '%s'", in);
            return -1;
        }
        return 0;
    }
    case T_BYTES: {
        unsigned long long v;
        if (cfg_parse_bytes(in, &v)) {
            snprintf(why, whylen, "expected a size in bytes (e.g. 512M, 8G), got '%s'", in);
            return -1;
        }
        snprintf(out, cap, "%llu", v);
        return 0;
    }
    case T_FLOAT01: {
        double v = strtod(in, &end);
        if (!*in || *end || !(v >= -1 && v <= 1)) {
            snprintf(why, whylen, "expected a cosine in [-1, 1], got '%s'", in);
            return -1;
        }
        return 0;
    }
    case T_POSFLOAT: {
        double v = strtod(in, &end);
        if (!*in || *end || !(v > 0)) {
            snprintf(why, whylen, "expected a number > 0, got '%s'", in);
            return -1;
        }
        return 0;
    }
    case T_BOOL: {
        int b;
        if (parse_bool(in, &b)) {
            snprintf(why, whylen, "expected true or false, got '%s'", in);
            return -1;
        }
        snprintf(out, cap, "%s", b ? "true" : "false");
        return 0;
    }
    case T_PATH: return 0;
    }
    return 0;
}

static int set_value(size_t i, const char *v, const char *source)
{
    char norm[512], why[300];
    if (check_value(i, v, norm, sizeof norm, why, sizeof why)) {
        cli_error("%s: %s: %s", source, DEFS[i].key, why);
        return -1;
    }
    snprintf(g_val[i], sizeof g_val[i], "%s", norm);
    snprintf(g_src[i], sizeof g_src[i], "%s", source);
    snprintf(g_given[i], sizeof g_given[i], "%s", strcmp(norm, v) ? v : "");
    return 0;
}

static int load_file(const char *path, int required)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (required) {
            cli_error("config file %s: cannot open: %s", path, strerror(errno));
            return -1;
        }
        return 0;
    }
    snprintf(g_file, sizeof g_file, "%s", path);
    char line[1024], src[600];
    int ln = 0, rc = 0;
    while (fgets(line, sizeof line, f) && !rc) {
        ln++;
        char *p = line, *hash = strchr(line, '#');
        if (hash) *hash = 0;
        while (isspace((unsigned char)*p)) p++;
        char *e = p + strlen(p);
        while (e > p && isspace((unsigned char)e[-1])) *--e = 0;
        if (!*p || *p == '[') continue;
        char *eq = strchr(p, '=');
        if (!eq) {
            cli_error("%s:%d: expected 'key = value'", path, ln);
            rc = -1;
            break;
        }
        *eq = 0;
        char *k = p, *v = eq + 1;
        char *ke = k + strlen(k);
        while (ke > k && isspace((unsigned char)ke[-1])) *--ke = 0;
        while (isspace((unsigned char)*v)) v++;
        if (*v == '"' && strlen(v) >= 2 && v[strlen(v) - 1] == '"') {
            v[strlen(v) - 1] = 0;
            v++;
        }
        int i = find_key(k);
        if (i < 0) {
            char known[512] = "";
            for (size_t j = 0; j < N_DEFS; j++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", j ? ", " : "", DEFS[j].key);
            cli_error("%s:%d: unknown key '%s' (known: %s)", path, ln, k, known);
            rc = -1;
            break;
        }
        snprintf(src, sizeof src, "config file %s:%d", path, ln);
        rc = set_value((size_t)i, v, src);
    }
    fclose(f);
    return rc;
}

int cfg_load(const char *explicit_path)
{
    for (size_t i = 0; i < N_DEFS; i++) {
        snprintf(g_val[i], sizeof g_val[i], "%s", DEFS[i].def);
        snprintf(g_src[i], sizeof g_src[i], "default");
        g_given[i][0] = 0;
    }
    g_file[0] = 0;
    const char *envp = getenv("CHRYSALIS_CONFIG");
    if (explicit_path) {
        if (load_file(explicit_path, 1)) return -1;
    } else if (envp && *envp) {
        if (load_file(envp, 1)) return -1;
    } else if (access("chrysalis.conf", R_OK) == 0) {
        if (load_file("chrysalis.conf", 1)) return -1;
    } else {
        char p[600];
        const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
        if (xdg && *xdg) snprintf(p, sizeof p, "%s/chrysalis/config", xdg);
        else if (home) snprintf(p, sizeof p, "%s/.config/chrysalis/config", home);
        else p[0] = 0;
        if (p[0] && load_file(p, 0)) return -1;
    }
    /* environment: the FAISS_* alias first, so the CHRYSALIS_* name wins when both are set */
    for (size_t i = 0; i < N_DEFS; i++) {
        const char *names[2] = {DEFS[i].alias_env, DEFS[i].env};
        for (int j = 0; j < 2; j++) {
            const char *v = names[j] ? getenv(names[j]) : NULL;
            if (!v) continue;
            char src[128];
            snprintf(src, sizeof src, "environment %s", names[j]);
            if (set_value(i, v, src)) return -1;
        }
    }
    return 0;
}

int cfg_set_flag(const char *key, const char *value, const char *flag)
{
    int i = find_key(key);
    char src[128];
    snprintf(src, sizeof src, "flag %s", flag);
    return i < 0 ? -1 : set_value((size_t)i, value, src);
}

const char *cfg_get(const char *key)
{
    int i = find_key(key);
    return i < 0 ? "" : g_val[i];
}

const char *cfg_source(const char *key)
{
    int i = find_key(key);
    return i < 0 ? "" : g_src[i];
}

unsigned long long cfg_uint(const char *key) { return strtoull(cfg_get(key), NULL, 10); }
double cfg_double(const char *key) { return strtod(cfg_get(key), NULL); }
int cfg_bool(const char *key) { return !strcmp(cfg_get(key), "true"); }

/* The index spec for a new store: FAISS_ENABLED=false means exact Flat; IVFFlat with a non-zero
 * nlist becomes IVF<nlist>,Flat (without one the library lets the planner choose when it
 * trains). A spec that names its own list count must agree with nlist: the error names both
 * sources. Returns the spec (static), or NULL after printing the error. */
const char *cfg_index_spec(void)
{
    static char buf[600];
    if (!cfg_bool("enabled")) return "Flat";
    const char *spec = cfg_get("index");
    unsigned long long nlist = cfg_uint("nlist");
    chrys_index_spec sp = {sizeof sp};
    if (chrys_index_spec_parse(spec, &sp, NULL) || sp.kind != CHRYS_INDEX_IVF || !nlist) return spec;
    uint32_t nl = sp.nlist;
    if (!nl) {
        snprintf(buf, sizeof buf, "IVF%llu,Flat", nlist);
        return buf;
    }
    if (nl != nlist) {
        cli_error("index %s (%s) names %u lists but nlist is %llu (%s)", spec, cfg_source("index"), nl, nlist,
                  cfg_source("nlist"));
        return NULL;
    }
    return spec;
}

/* How the effective index was read, in words. */
static void describe_index(const char *eff, char *out, size_t cap)
{
    chrys_index_spec sp = {sizeof sp};
    if (!eff || chrys_index_spec_parse(eff, &sp, NULL)) {
        snprintf(out, cap, "invalid");
        return;
    }
    chrys_index_kind k = sp.kind;
    uint32_t nl = k == CHRYS_INDEX_HNSW ? sp.hnsw_m : sp.nlist;
    int sq8 = !sp.sq8 ? 0 : sp.refine ? 2 : 1, is_auto = sp.is_auto;
    if (is_auto) snprintf(out, cap, "the planner: Flat below auto_threshold vectors, IVF above");
    else if (k == CHRYS_INDEX_IVF && !nl)
        snprintf(out, cap, "IVF over float32 rows, nlist from the planner (~sqrt(n)) when it trains at auto_threshold vectors");
    else if (k == CHRYS_INDEX_IVF)
        snprintf(out, cap, "IVF, %u lists (%s), %s", nl, strcmp(cfg_get("nlist"), "0") ? cfg_source("nlist") : "from the spec",
                 !sq8 ? "float32 rows" : sq8 == 2 ? "int8 codes + float32 rows (exact re-ranking)" : "int8 codes only");
    else if (k == CHRYS_INDEX_HNSW)
        snprintf(out, cap, "HNSW, M %u, %s", nl,
                 !sq8 ? "float32 rows" : sq8 == 2 ? "int8 codes + float32 rows" : "int8 codes only");
    else snprintf(out, cap, "%s", !sq8 ? "exact" : sq8 == 2 ? "int8 codes + float32 rows" : "int8 codes only");
}

int cmd_config(int argc, char **argv)
{
    static const char *help = "usage: chrysalis [--config FILE] config [--json]\n\nPrint the effective configuration "
                              "and where each value came from\n(flag > environment > config file > default).\n";
    int json = 0, npos;
    const cli_opt tab[] = {OPT_JSON(&json), {0}};
    int code = opts_run(tab, argc, argv, help, NULL, &npos);
    if (code >= 0) return code;
    if (npos) {
        fputs(help, stderr);
        return EXIT_USAGE;
    }
    const char *eff = cfg_index_spec();
    if (!eff) return EXIT_USAGE;
    char how[256];
    describe_index(eff, how, sizeof how);
    if (json) {
        printf("{\"config_file\":\"%s\",\"values\":{", g_file);
        for (size_t i = 0; i < N_DEFS; i++)
            printf("%s\"%s\":{\"value\":\"%s\",\"source\":\"%s\"}", i ? "," : "", DEFS[i].key, g_val[i], g_src[i]);
        printf("},\"given\":{");
        for (size_t i = 0, j = 0; i < N_DEFS; i++)
            if (g_given[i][0]) printf("%s\"%s\":\"%s\"", j++ ? "," : "", DEFS[i].key, g_given[i]);
        printf("},\"effective_index\":\"%s\",\"effective_index_means\":\"%s\",\"gpu\":\"%s\"}\n", eff, how,
               cfg_bool("use_gpu") ? "requested but not available in this build: CPU used" : "off");
        return EXIT_OK;
    }
    printf("config file: %s\n", g_file[0] ? g_file : "(none)");
    for (size_t i = 0; i < N_DEFS; i++) {
        char src[1200];
        if (g_given[i][0]) snprintf(src, sizeof src, "%.599s, given as '%.511s'", g_src[i], g_given[i]);
        else snprintf(src, sizeof src, "%.599s", g_src[i]);
        printf("  %-16s = %-14s  (%s)  %s\n", DEFS[i].key, g_val[i][0] ? g_val[i] : "\"\"", src, DEFS[i].help);
    }
    printf("effective index for new stores: %s (%s)\n", eff, how);
    if (cfg_bool("use_gpu")) printf("note: a GPU was requested (use_gpu), but this build has no GPU path: the CPU is used\n");
    return EXIT_OK;
}

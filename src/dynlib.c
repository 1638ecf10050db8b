/*
 * dynlib.c: libcurl, SQLite and OpenBLAS loaded at first use (see dynlib.h for why). The sonames
 * are the ones the Debian runtime packages install (libcurl4, libsqlite3-0, libopenblas0);
 * CHRYS_LIBCURL, CHRYS_LIBSQLITE and CHRYS_LIBBLAS name another file (tests use them to check a
 * missing library's error, or the kernels taken without BLAS).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>

#include "dynlib.h"

typedef struct lib_slot {
    pthread_once_t once;
    const char *soname, *env;
    const char *const *names; /* symbols in the table's order, NULL-terminated */
    void **table;
    int ok;
    char err[512];
} lib_slot;

static void lib_load(lib_slot *s)
{
    const char *file = getenv(s->env) && *getenv(s->env) ? getenv(s->env) : s->soname;
    void *h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(s->err, sizeof s->err, "cannot load %s: %s", file, dlerror());
        return;
    }
    for (size_t i = 0; s->names[i]; i++) {
        void *f = dlsym(h, s->names[i]);
        if (!f) {
            snprintf(s->err, sizeof s->err, "%s has no %s", file, s->names[i]);
            return; /* the handle stays open: unloading a library some thread may hold is not worth it */
        }
        s->table[i] = f;
    }
    __atomic_store_n(&s->ok, 1, __ATOMIC_RELEASE);
}

static const char *const curl_names[] = {
    "curl_global_init", "curl_easy_init", "curl_easy_reset", "curl_easy_setopt", "curl_easy_getinfo",
    "curl_easy_strerror", "curl_easy_cleanup", "curl_multi_init", "curl_multi_add_handle",
    "curl_multi_remove_handle", "curl_multi_perform", "curl_multi_poll", "curl_multi_info_read",
    "curl_multi_cleanup", "curl_slist_append", "curl_slist_free_all", NULL};
static const char *const sqlite_names[] = {
    "sqlite3_open_v2", "sqlite3_close", "sqlite3_busy_timeout", "sqlite3_exec", "sqlite3_errmsg",
    "sqlite3_prepare_v2", "sqlite3_bind_blob", "sqlite3_bind_double", "sqlite3_bind_int64", "sqlite3_bind_text",
    "sqlite3_step", "sqlite3_reset", "sqlite3_finalize", "sqlite3_changes", "sqlite3_column_blob",
    "sqlite3_column_bytes", "sqlite3_column_double", "sqlite3_column_int64", "sqlite3_column_text", NULL};
_Static_assert(sizeof(chrys_curl_api) == (sizeof curl_names / sizeof *curl_names - 1) * sizeof(void *),
               "one name per curl table entry");
_Static_assert(sizeof(chrys_sqlite_api) == (sizeof sqlite_names / sizeof *sqlite_names - 1) * sizeof(void *),
               "one name per SQLite table entry");

static chrys_curl_api g_curl;
static chrys_sqlite_api g_sqlite;
static lib_slot g_curl_slot = {PTHREAD_ONCE_INIT, "libcurl.so.4", "CHRYS_LIBCURL", curl_names, (void **)&g_curl, 0, ""};
static lib_slot g_sqlite_slot = {PTHREAD_ONCE_INIT, "libsqlite3.so.0", "CHRYS_LIBSQLITE", sqlite_names,
                                 (void **)&g_sqlite, 0, ""};

static void curl_once(void)
{
    lib_load(&g_curl_slot);
    if (g_curl_slot.ok && g_curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        g_curl_slot.ok = 0;
        snprintf(g_curl_slot.err, sizeof g_curl_slot.err, "cannot initialise libcurl");
    }
}
static void sqlite_once(void) { lib_load(&g_sqlite_slot); }

const chrys_curl_api *chrys_curl(char **errmsg)
{
    pthread_once(&g_curl_slot.once, curl_once);
    if (g_curl_slot.ok) return &g_curl;
    chrys_set_errmsg(errmsg, CHRYS_ERROR, "%s", g_curl_slot.err);
    return NULL;
}

#ifdef CHRYS_HAVE_BLAS
static const char *const blas_names[] = {"cblas_sgemm", "openblas_set_num_threads", "openblas_get_corename", NULL};
_Static_assert(sizeof(chrys_blas_api) == (sizeof blas_names / sizeof *blas_names - 1) * sizeof(void *),
               "one name per BLAS table entry");
static chrys_blas_api g_blas;
static lib_slot g_blas_slot = {PTHREAD_ONCE_INIT, "libopenblas.so.0", "CHRYS_LIBBLAS", blas_names, (void **)&g_blas, 0, ""};
static int g_blas_threads; /* set before the load: applied by it */

static void blas_once(void)
{
    lib_load(&g_blas_slot);
    int n = __atomic_load_n(&g_blas_threads, __ATOMIC_ACQUIRE);
    if (g_blas_slot.ok && n > 0) g_blas.set_num_threads(n);
}

const chrys_blas_api *chrys_blas(void)
{
    pthread_once(&g_blas_slot.once, blas_once);
    return g_blas_slot.ok ? &g_blas : NULL;
}

void chrys_blas_set_threads(int n)
{
    __atomic_store_n(&g_blas_threads, n, __ATOMIC_RELEASE);
    /* loaded already (its once has run): set it now; else blas_once applies it */
    if (__atomic_load_n(&g_blas_slot.ok, __ATOMIC_ACQUIRE) && n > 0) g_blas.set_num_threads(n);
}
#else
const chrys_blas_api *chrys_blas(void) { return NULL; }
void chrys_blas_set_threads(int n) { (void)n; }
#endif

const chrys_sqlite_api *chrys_sqlite(char **errmsg)
{
    pthread_once(&g_sqlite_slot.once, sqlite_once);
    if (g_sqlite_slot.ok) return &g_sqlite;
    chrys_set_errmsg(errmsg, CHRYS_ERROR, "%s", g_sqlite_slot.err);
    return NULL;
}

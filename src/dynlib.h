/*
 * dynlib.h: libcurl, SQLite and OpenBLAS, loaded at their first use (dlopen) rather than at
 * process start. Linked, libcurl and SQLite pulled some 30 shared objects into every process that
 * loads libchrysalis (about 12 ms of each `chrysalis` command's start on a VM, searches and merges
 * included, which never embed), and OpenBLAS's constructor (CPU probe, buffers, worker threads)
 * cost another 8 ms of it, for commands that never call sgemm. Each table is filled once, from
 * the library's stable soname. A missing libcurl or SQLite is an error that names it; without
 * OpenBLAS the library runs its own kernels (sgemm is only ever a faster way to the same scores).
 * The prototypes come from the libraries' own headers (__typeof__), so a mismatch does not compile.
 */
#ifndef CHRYS_DYNLIB_H
#define CHRYS_DYNLIB_H

#define CURL_DISABLE_TYPECHECK /* curl_easy_setopt etc. as plain functions, not checking macros */
#include <curl/curl.h>
#include <sqlite3.h>
#ifdef CHRYS_HAVE_BLAS
#include <cblas.h>
#endif

#include "internal.h"

typedef struct chrys_curl_api {
    __typeof__(curl_global_init) *global_init;
    __typeof__(curl_easy_init) *easy_init;
    __typeof__(curl_easy_reset) *easy_reset;
    __typeof__(curl_easy_setopt) *easy_setopt;
    __typeof__(curl_easy_getinfo) *easy_getinfo;
    __typeof__(curl_easy_strerror) *easy_strerror;
    __typeof__(curl_easy_cleanup) *easy_cleanup;
    __typeof__(curl_multi_init) *multi_init;
    __typeof__(curl_multi_add_handle) *multi_add_handle;
    __typeof__(curl_multi_remove_handle) *multi_remove_handle;
    __typeof__(curl_multi_perform) *multi_perform;
    __typeof__(curl_multi_poll) *multi_poll;
    __typeof__(curl_multi_info_read) *multi_info_read;
    __typeof__(curl_multi_cleanup) *multi_cleanup;
    __typeof__(curl_slist_append) *slist_append;
    __typeof__(curl_slist_free_all) *slist_free_all;
} chrys_curl_api;

typedef struct chrys_sqlite_api {
    __typeof__(sqlite3_open_v2) *open_v2;
    __typeof__(sqlite3_close) *close;
    __typeof__(sqlite3_busy_timeout) *busy_timeout;
    __typeof__(sqlite3_exec) *exec;
    __typeof__(sqlite3_errmsg) *errmsg;
    __typeof__(sqlite3_prepare_v2) *prepare_v2;
    __typeof__(sqlite3_bind_blob) *bind_blob;
    __typeof__(sqlite3_bind_double) *bind_double;
    __typeof__(sqlite3_bind_int64) *bind_int64;
    __typeof__(sqlite3_bind_text) *bind_text;
    __typeof__(sqlite3_step) *step;
    __typeof__(sqlite3_reset) *reset;
    __typeof__(sqlite3_finalize) *finalize;
    __typeof__(sqlite3_changes) *changes;
    __typeof__(sqlite3_column_blob) *column_blob;
    __typeof__(sqlite3_column_bytes) *column_bytes;
    __typeof__(sqlite3_column_double) *column_double;
    __typeof__(sqlite3_column_int64) *column_int64;
    __typeof__(sqlite3_column_text) *column_text;
} chrys_sqlite_api;

#ifdef CHRYS_HAVE_BLAS
typedef struct chrys_blas_api {
    __typeof__(cblas_sgemm) *sgemm;
    __typeof__(openblas_set_num_threads) *set_num_threads;
    __typeof__(openblas_get_corename) *get_corename;
} chrys_blas_api;
#else
typedef struct chrys_blas_api chrys_blas_api;
#endif

/* OpenBLAS (libopenblas.so.0, or CHRYS_LIBBLAS), loaded on the first call; NULL when it cannot be
 * (or the build has no BLAS): callers then take their own kernels. Thread-safe. */
CHRYS_PRIVATE const chrys_blas_api *chrys_blas(void);
/* BLAS's thread count (the CLI's --threads): applied now if OpenBLAS is loaded, else when it is. */
CHRYS_PRIVATE void chrys_blas_set_threads(int n);

/* The table, loaded on the first call (libcurl also globally initialised); NULL when the library
 * or one of its symbols cannot be loaded, with *errmsg (optional; owned) naming it. Thread-safe. */
CHRYS_PRIVATE const chrys_curl_api *chrys_curl(char **errmsg);
CHRYS_PRIVATE const chrys_sqlite_api *chrys_sqlite(char **errmsg);

#endif

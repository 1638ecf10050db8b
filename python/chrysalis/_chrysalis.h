/*
 * _chrysalis.h: private declarations shared by the files of the CPython extension (not installed).
 *
 *   _chrysalis.c     the module: exceptions, shared helpers (buffers, dicts, the allow-list
 *                    filter, the writer-preferring rwlock), module functions, PyInit__chrysalis
 *   _index.c         _Index          _merger.c   _Merger          _embedder.c   _Embedder
 *   _dropin.c        _DropinCache    _dropin_arith.c   cosine_exact, average_exact, the sum() mode
 *   _lock.c          _Lock (a store's writer lock)
 *
 * Names shared across these files carry the prefix ext_; everything else stays static in its file.
 * Only PyInit__chrysalis is exported from the shared object (-fvisibility=hidden in setup.py).
 */
#ifndef CHRYSALIS_PY_EXT_H
#define CHRYSALIS_PY_EXT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chrysalis.h"

/* _chrysalis.c: exceptions */
extern PyObject *ext_Error, *ext_NotFoundError;
PyObject *ext_raise_rc(int rc, const char *msg);
PyObject *ext_raise_owned(int rc, char *msg);

/* _chrysalis.c: small helpers */
int ext_get_buf(PyObject *o, Py_buffer *b, Py_ssize_t want, const char *what);
int ext_get_wbuf(PyObject *o, Py_buffer *b, Py_ssize_t want, const char *what);
const char **ext_meta_array(PyObject *list, Py_ssize_t n);
int ext_dict_set_u64(PyObject *d, const char *k, uint64_t v);
int ext_dict_set_f(PyObject *d, const char *k, double v);
int ext_dict_set_s(PyObject *d, const char *k, const char *v);

/* Sorted allow-list filter for searches (no GIL needed in the callback). */
typedef struct {
    const uint64_t *ids;
    size_t n;
} ext_allow_set;

int ext_allow_cb(uint64_t id, void *ctx);

/* _chrysalis.c: the per-object rwlock of _Index and _Merger (always taken with the GIL released) */
void ext_rw_init(pthread_rwlock_t *rw);
void ext_rd_lock(pthread_rwlock_t *rw);
void ext_wr_lock(pthread_rwlock_t *rw);
void ext_rw_unlock(pthread_rwlock_t *rw);

/* The types, one per file; PyInit__chrysalis readies and adds them. */
extern PyTypeObject ext_IndexType, ext_MergerType, ext_EmbedderType, ext_DropinType, ext_LockType;

/* _dropin.c: the interned "embedding" key (created by PyInit__chrysalis) */
extern PyObject *ext_str_embedding;

/* _dropin_arith.c: module functions */
PyObject *ext_set_sum_mode(PyObject *mod, PyObject *arg);
PyObject *ext_py_sum_emul(PyObject *mod, PyObject *args);
PyObject *ext_cosine_exact(PyObject *mod, PyObject *args);
PyObject *ext_average_exact(PyObject *mod, PyObject *args);

#endif

/*
 * _chrysalis.c: the CPython extension under the chrysalis package, written over the public C API
 * (include/chrysalis.h) only.
 *
 * Design. The extension is thin: each type owns one library handle and exposes underscore methods
 * that take buffers (the buffer protocol: C-contiguous float32 vectors, uint64/int64 ids, caller-
 * owned output arrays that the Python layer allocates with numpy). The Python classes in
 * __init__.py subclass these types, convert input once (numpy.ascontiguousarray, which does not
 * copy C-contiguous float32), validate it so that errors name the row, and document every name.
 *
 * Threads. Every call into the library that can take time runs with the GIL released. Each Index
 * and Merger object carries a pthread rwlock: read-only calls (search, get, save, info) take it
 * shared, mutating calls (add, remove, update, merge) take it exclusive, so any number of threads
 * may search while one adds and none of them can see a half-changed index. The lock is always
 * taken with the GIL released (never the other way round), so the two locks cannot deadlock.
 *
 * The drop-in merger's cache (_DropinCache) keeps, for each position of the caller's entry list,
 * a strong reference to the entry dict and to its "embedding" list, that list's length, and the
 * entry's unit-length float32 copy inside a Flat inner-product index per dimension. A call
 * revalidates the cache by identity and length in one C pass and re-reads only the positions that
 * changed. Candidates come from the float32 index with a margin that bounds float32 rounding;
 * the Python layer then decides with the exact double-precision cosine of the original.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chrysalis.h"

/* ------------------------------------------------------------------------------------------- */
/* Exceptions                                                                                    */
/* ------------------------------------------------------------------------------------------- */

static PyObject *Error, *InvalidInputError, *DimensionError, *DuplicateIdError, *NotFoundError,
    *StoreIOError, *CorruptStoreError, *UnsupportedFormatError, *LimitError, *StoreLockedError;

/* Raise the exception for a library code, with msg (or the code's text). Returns NULL. */
static PyObject *raise_rc(int rc, const char *msg)
{
    if (!msg || !*msg) msg = chrys_errstr(rc);
    PyObject *type = Error;
    switch (rc & 0xff) {
    case CHRYS_NOMEM: return PyErr_NoMemory();
    case CHRYS_INVALID: type = InvalidInputError; break;
    case CHRYS_DIM: type = DimensionError; break;
    case CHRYS_EXISTS: type = DuplicateIdError; break;
    case CHRYS_NOTFOUND: type = NotFoundError; break;
    case CHRYS_IO: type = StoreIOError; break;
    case CHRYS_CORRUPT: type = CorruptStoreError; break;
    case CHRYS_FORMAT: type = UnsupportedFormatError; break;
    case CHRYS_LIMIT: type = LimitError; break;
    case CHRYS_LOCKED: type = StoreLockedError; break;
    default: break;
    }
    PyErr_SetString(type, msg);
    return NULL;
}

/* Raise for rc with an owned message (freed here). */
static PyObject *raise_owned(int rc, char *msg)
{
    raise_rc(rc, msg);
    chrys_free(msg);
    return NULL;
}

static PyObject *new_exc(PyObject *m, const char *name, PyObject *bases, const char *doc)
{
    char full[96];
    snprintf(full, sizeof full, "chrysalis.%s", name);
    PyObject *e = PyErr_NewExceptionWithDoc(full, doc, bases, NULL);
    if (!e) return NULL;
    if (PyModule_AddObjectRef(m, name, e) < 0) {
        Py_DECREF(e);
        return NULL;
    }
    return e;
}

/* ------------------------------------------------------------------------------------------- */
/* Small helpers                                                                                 */
/* ------------------------------------------------------------------------------------------- */

/* A read-only C-contiguous buffer of exactly want bytes (want = 0: any size). */
static int get_buf(PyObject *o, Py_buffer *b, Py_ssize_t want, const char *what)
{
    if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (want >= 0 && b->len != want) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd bytes, got %zd", what, want, b->len);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

static int get_wbuf(PyObject *o, Py_buffer *b, Py_ssize_t want, const char *what)
{
    if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) return -1;
    if (b->len != want) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd bytes, got %zd", what, want, b->len);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

/* An array of NUL-terminated UTF-8 strings (NULL for None) from a list of str/None of length n.
 * The pointers borrow from the list's str objects (keep the list alive). Returns NULL on error. */
static const char **meta_array(PyObject *list, Py_ssize_t n)
{
    if (!PyList_Check(list) || PyList_GET_SIZE(list) != n) {
        PyErr_Format(PyExc_ValueError, "meta: expected a list of %zd strings or None", n);
        return NULL;
    }
    const char **out = PyMem_Calloc((size_t)(n ? n : 1), sizeof *out);
    if (!out) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyList_GET_ITEM(list, i);
        if (s == Py_None) continue;
        if (!PyUnicode_Check(s)) {
            PyErr_Format(PyExc_TypeError, "meta[%zd]: expected str or None", i);
            PyMem_Free(out);
            return NULL;
        }
        out[i] = PyUnicode_AsUTF8(s);
        if (!out[i]) {
            PyMem_Free(out);
            return NULL;
        }
    }
    return out;
}

static int dict_set_u64(PyObject *d, const char *k, uint64_t v)
{
    PyObject *o = PyLong_FromUnsignedLongLong(v);
    int r = o ? PyDict_SetItemString(d, k, o) : -1;
    Py_XDECREF(o);
    return r;
}

static int dict_set_f(PyObject *d, const char *k, double v)
{
    PyObject *o = PyFloat_FromDouble(v);
    int r = o ? PyDict_SetItemString(d, k, o) : -1;
    Py_XDECREF(o);
    return r;
}

static int dict_set_s(PyObject *d, const char *k, const char *v)
{
    PyObject *o = PyUnicode_FromString(v);
    int r = o ? PyDict_SetItemString(d, k, o) : -1;
    Py_XDECREF(o);
    return r;
}

/* Sorted allow-list filter for searches (no GIL needed in the callback). */
typedef struct {
    const uint64_t *ids;
    size_t n;
} allow_set;

static int allow_cb(uint64_t id, void *ctx)
{
    const allow_set *s = ctx;
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->ids[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < s->n && s->ids[lo] == id;
}

/* ------------------------------------------------------------------------------------------- */
/* Index                                                                                         */
/* ------------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    chrys_index *ix;
    pthread_rwlock_t rw;
    uint64_t next_id;  /* one more than the largest id ever added (ids=None continues from it) */
    int readonly;      /* opened with mmap */
    PyObject *weakrefs;
} IndexObject;

/* Writer-preferring: with readers searching back to back, a reader-preferring lock (glibc's
 * default) would starve a writer indefinitely. */
static void rw_init(pthread_rwlock_t *rw)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(rw, &a);
    pthread_rwlockattr_destroy(&a);
}

static void rd_lock(pthread_rwlock_t *rw)
{
    Py_BEGIN_ALLOW_THREADS pthread_rwlock_rdlock(rw);
    Py_END_ALLOW_THREADS
}
static void wr_lock(pthread_rwlock_t *rw)
{
    Py_BEGIN_ALLOW_THREADS pthread_rwlock_wrlock(rw);
    Py_END_ALLOW_THREADS
}
static void rw_unlock(pthread_rwlock_t *rw) { pthread_rwlock_unlock(rw); }

static PyObject *Index_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)args;
    (void)kw;
    IndexObject *self = (IndexObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    rw_init(&self->rw);
    return (PyObject *)self;
}

static void Index_dealloc(IndexObject *self)
{
    if (self->weakrefs) PyObject_ClearWeakRefs((PyObject *)self);
    chrys_index_free(self->ix);
    pthread_rwlock_destroy(&self->rw);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int need_ix(IndexObject *self)
{
    if (!self->ix) {
        PyErr_SetString(Error, "the index is not initialised (call Index(dim) or Index.load)");
        return -1;
    }
    return 0;
}

/* _init(dim, metric, spec, seed, auto_threshold, memory_budget, ef_construction, build_threads) */
static PyObject *Index_init_c(IndexObject *self, PyObject *args)
{
    unsigned int dim, metric, efc, bt;
    const char *spec;
    unsigned long long seed, auto_thr, budget;
    if (!PyArg_ParseTuple(args, "IIzKKKII", &dim, &metric, &spec, &seed, &auto_thr, &budget, &efc, &bt))
        return NULL;
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = dim;
    o.metric = (chrys_metric)metric;
    o.spec = spec;
    o.seed = seed;
    o.auto_threshold = auto_thr;
    o.memory_budget = budget;
    o.ef_construction = efc;
    o.build_threads = bt;
    chrys_index *ix = NULL;
    char *msg = NULL;
    int rc = chrys_index_new(&o, &ix, &msg);
    if (rc) return raise_owned(rc, msg);
    chrys_index_free(self->ix);
    self->ix = ix;
    self->next_id = 0;
    Py_RETURN_NONE;
}

static void compute_next_id(IndexObject *self)
{
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(self->ix, &info);
    self->next_id = 0;
    if (!info.count) return;
    uint64_t *ids = PyMem_RawMalloc(info.count * sizeof *ids);
    if (!ids) return;
    size_t n_ids;
    chrys_index_get_ids(self->ix, ids, info.count, &n_ids);
    for (uint64_t i = 0; i < info.count; i++)
        if (ids[i] + 1 > self->next_id) self->next_id = ids[i] + 1;
    PyMem_RawFree(ids);
}

/* _load(path, mmap) / _from_bytes(buffer): fill this (uninitialised) object from a store. */
static PyObject *Index_load_c(IndexObject *self, PyObject *args)
{
    PyObject *pathobj;
    int use_mmap;
    if (!PyArg_ParseTuple(args, "O&p", PyUnicode_FSConverter, &pathobj, &use_mmap)) return NULL;
    const char *path = PyBytes_AS_STRING(pathobj);
    chrys_index *ix = NULL;
    char *msg = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = use_mmap ? chrys_index_open_mmap(path, &ix, &msg) : chrys_index_load(path, &ix, &msg);
    Py_END_ALLOW_THREADS Py_DECREF(pathobj);
    if (rc) return raise_owned(rc, msg);
    chrys_index_free(self->ix);
    self->ix = ix;
    self->readonly = use_mmap;
    compute_next_id(self);
    Py_RETURN_NONE;
}

static PyObject *Index_from_bytes_c(IndexObject *self, PyObject *args)
{
    Py_buffer b;
    const char *name = "buffer";
    if (!PyArg_ParseTuple(args, "y*|s", &b, &name)) return NULL;
    chrys_index *ix = NULL;
    char *msg = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = chrys_index_load_buffer(b.buf, (size_t)b.len, name, &ix, &msg);
    Py_END_ALLOW_THREADS PyBuffer_Release(&b);
    if (rc) return raise_owned(rc, msg);
    chrys_index_free(self->ix);
    self->ix = ix;
    compute_next_id(self);
    Py_RETURN_NONE;
}

static PyObject *Index_to_bytes_c(IndexObject *self, PyObject *noargs)
{
    (void)noargs;
    if (need_ix(self)) return NULL;
    void *buf = NULL;
    size_t size = 0;
    char *msg = NULL;
    int rc;
    rd_lock(&self->rw);
    Py_BEGIN_ALLOW_THREADS rc = chrys_index_save_buffer(self->ix, &buf, &size, &msg);
    Py_END_ALLOW_THREADS rw_unlock(&self->rw);
    if (rc) return raise_owned(rc, msg);
    PyObject *out = PyBytes_FromStringAndSize(buf, (Py_ssize_t)size);
    chrys_free(buf);
    return out;
}

static PyObject *Index_save_c(IndexObject *self, PyObject *args)
{
    PyObject *pathobj;
    if (need_ix(self)) return NULL;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &pathobj)) return NULL;
    char *msg = NULL;
    int rc;
    rd_lock(&self->rw);
    Py_BEGIN_ALLOW_THREADS rc = chrys_index_save(self->ix, PyBytes_AS_STRING(pathobj), &msg);
    Py_END_ALLOW_THREADS rw_unlock(&self->rw);
    Py_DECREF(pathobj);
    if (rc) return raise_owned(rc, msg);
    Py_RETURN_NONE;
}

/* _add(vectors f32 buffer, n, ids u64 buffer or None, meta list or None, out_ids u64 buffer) */
static PyObject *Index_add_c(IndexObject *self, PyObject *args)
{
    PyObject *vo, *io, *mo, *oo;
    Py_ssize_t n;
    if (need_ix(self)) return NULL;
    if (!PyArg_ParseTuple(args, "OnOOO", &vo, &n, &io, &mo, &oo)) return NULL;
    if (self->readonly) {
        PyErr_SetString(Error, "this index was opened with mmap=True and is read-only");
        return NULL;
    }
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(self->ix, &info);
    Py_buffer vb, ib = {0}, ob;
    if (get_buf(vo, &vb, n * (Py_ssize_t)info.dim * 4, "vectors")) return NULL;
    if (io != Py_None && get_buf(io, &ib, n * 8, "ids")) {
        PyBuffer_Release(&vb);
        return NULL;
    }
    if (get_wbuf(oo, &ob, n * 8, "out_ids")) {
        PyBuffer_Release(&vb);
        if (io != Py_None) PyBuffer_Release(&ib);
        return NULL;
    }
    const char **meta = NULL;
    if (mo != Py_None && !(meta = meta_array(mo, n))) {
        PyBuffer_Release(&vb);
        if (io != Py_None) PyBuffer_Release(&ib);
        PyBuffer_Release(&ob);
        return NULL;
    }
    uint64_t *ids = ob.buf;
    int rc;
    char *msg = NULL;
    wr_lock(&self->rw);
    if (io != Py_None) memcpy(ids, ib.buf, (size_t)n * 8);
    else
        for (Py_ssize_t i = 0; i < n; i++) ids[i] = self->next_id + (uint64_t)i;
    Py_BEGIN_ALLOW_THREADS rc = chrys_index_add(self->ix, (size_t)n, ids, vb.buf, meta);
    Py_END_ALLOW_THREADS if (rc) msg = PyMem_RawMalloc(1024);
    if (rc && msg) snprintf(msg, 1024, "%s", chrys_index_errmsg(self->ix));
    if (!rc)
        for (Py_ssize_t i = 0; i < n; i++)
            if (ids[i] + 1 > self->next_id) self->next_id = ids[i] + 1;
    rw_unlock(&self->rw);
    PyBuffer_Release(&vb);
    if (io != Py_None) PyBuffer_Release(&ib);
    PyBuffer_Release(&ob);
    PyMem_Free(meta);
    if (rc) {
        raise_rc(rc, msg);
        PyMem_RawFree(msg);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _search(queries, nq, k, threshold or None, ef_search, nprobe, threads, allow u64 sorted or None,
 *         out_scores f32, out_ids i64) */
static PyObject *Index_search_c(IndexObject *self, PyObject *args)
{
    PyObject *qo, *to, *fo, *so, *io;
    Py_ssize_t nq;
    unsigned int k, ef, nprobe, threads;
    if (need_ix(self)) return NULL;
    if (!PyArg_ParseTuple(args, "OnIOIIIOOO", &qo, &nq, &k, &to, &ef, &nprobe, &threads, &fo, &so, &io))
        return NULL;
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(self->ix, &info);
    chrys_search_opts o;
    chrys_search_opts_init(&o);
    o.k = k;
    o.ef_search = ef;
    o.nprobe = nprobe;
    o.n_threads = threads;
    if (to != Py_None) {
        o.use_threshold = 1;
        o.threshold = (float)PyFloat_AsDouble(to);
        if (PyErr_Occurred()) return NULL;
    }
    Py_buffer qb, fb = {0}, sb, ib;
    if (get_buf(qo, &qb, nq * (Py_ssize_t)info.dim * 4, "queries")) return NULL;
    allow_set as = {0};
    if (fo != Py_None) {
        if (get_buf(fo, &fb, -1, "filter")) {
            PyBuffer_Release(&qb);
            return NULL;
        }
        as.ids = fb.buf;
        as.n = (size_t)fb.len / 8;
        o.allow = allow_cb;
        o.allow_ctx = &as;
    }
    if (get_wbuf(so, &sb, nq * (Py_ssize_t)k * 4, "scores")) goto fail_q;
    if (get_wbuf(io, &ib, nq * (Py_ssize_t)k * 8, "ids")) {
        PyBuffer_Release(&sb);
        goto fail_q;
    }
    size_t nh = (size_t)nq * k;
    chrys_hit *hits = PyMem_RawMalloc((nh ? nh : 1) * sizeof *hits);
    int rc = CHRYS_NOMEM;
    char emsg[512] = "";
    if (hits) {
        rd_lock(&self->rw);
        Py_BEGIN_ALLOW_THREADS rc = chrys_index_search(self->ix, (size_t)nq, qb.buf, &o, hits);
        Py_END_ALLOW_THREADS if (rc) snprintf(emsg, sizeof emsg, "%s", chrys_index_errmsg(self->ix));
        rw_unlock(&self->rw);
        if (!rc) {
            float *sc = sb.buf;
            int64_t *id = ib.buf;
            for (size_t i = 0; i < nh; i++) {
                sc[i] = hits[i].score;
                id[i] = hits[i].id == CHRYS_NO_ID ? -1 : (int64_t)hits[i].id;
            }
        }
        PyMem_RawFree(hits);
    }
    PyBuffer_Release(&sb);
    PyBuffer_Release(&ib);
    PyBuffer_Release(&qb);
    if (fo != Py_None) PyBuffer_Release(&fb);
    /* the library's message (kept per thread for a search: read on this thread, right after) */
    if (rc) return raise_rc(rc, *emsg ? emsg : rc == CHRYS_INVALID ? "invalid search arguments or queries" : NULL);
    Py_RETURN_NONE;
fail_q:
    PyBuffer_Release(&qb);
    if (fo != Py_None) PyBuffer_Release(&fb);
    return NULL;
}

/* _score(queries f32 buffer, nq, ids u64 buffer (nq*m), m, out f64 buffer (nq*m)): exact scores. */
static PyObject *Index_score_c(IndexObject *self, PyObject *args)
{
    PyObject *qo, *io, *oo;
    Py_ssize_t nq, m;
    if (need_ix(self)) return NULL;
    if (!PyArg_ParseTuple(args, "OnOnO", &qo, &nq, &io, &m, &oo)) return NULL;
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(self->ix, &info);
    Py_buffer qb, ib, ob;
    if (get_buf(qo, &qb, nq * (Py_ssize_t)info.dim * 4, "queries")) return NULL;
    if (get_buf(io, &ib, nq * m * 8, "ids")) {
        PyBuffer_Release(&qb);
        return NULL;
    }
    if (get_wbuf(oo, &ob, nq * m * 8, "scores")) {
        PyBuffer_Release(&qb);
        PyBuffer_Release(&ib);
        return NULL;
    }
    int rc;
    rd_lock(&self->rw);
    Py_BEGIN_ALLOW_THREADS rc = chrys_index_score(self->ix, (size_t)nq, qb.buf, (size_t)m, ib.buf, ob.buf);
    Py_END_ALLOW_THREADS rw_unlock(&self->rw);
    PyBuffer_Release(&qb);
    PyBuffer_Release(&ib);
    PyBuffer_Release(&ob);
    if (rc) return raise_rc(rc, rc == CHRYS_NOTFOUND ? "score: an id is not in the index"
                                                     : "score: invalid query (NaN/Inf, zero under cosine) or no float32 rows");
    Py_RETURN_NONE;
}

/* _remove(ids u64 buffer, n): all or nothing (every id checked first). */
static PyObject *Index_remove_c(IndexObject *self, PyObject *args)
{
    PyObject *io;
    Py_ssize_t n;
    if (need_ix(self)) return NULL;
    if (!PyArg_ParseTuple(args, "On", &io, &n)) return NULL;
    if (self->readonly) {
        PyErr_SetString(Error, "this index was opened with mmap=True and is read-only");
        return NULL;
    }
    Py_buffer ib;
    if (get_buf(io, &ib, n * 8, "ids")) return NULL;
    const uint64_t *ids = ib.buf;
    int rc = CHRYS_OK;
    Py_ssize_t bad = -1;
    wr_lock(&self->rw);
    for (Py_ssize_t i = 0; i < n && bad < 0; i++)
        if (!chrys_index_contains(self->ix, ids[i])) bad = i;
    if (bad < 0)
        for (Py_ssize_t i = 0; i < n && !rc; i++) rc = chrys_index_remove(self->ix, ids[i]);
    rw_unlock(&self->rw);
    uint64_t bad_id = bad >= 0 ? ids[bad] : 0;
    PyBuffer_Release(&ib);
    if (bad >= 0) {
        PyErr_Format(NotFoundError, "row %zd: id %llu is not in the index", bad, (unsigned long long)bad_id);
        return NULL;
    }
    if (rc) return raise_rc(rc, NULL);
    Py_RETURN_NONE;
}

/* _update(ids u64, n, vectors f32): every id checked first; vectors validated by the caller. */
static PyObject *Index_update_c(IndexObject *self, PyObject *args)
{
    PyObject *io, *vo;
    Py_ssize_t n;
    if (need_ix(self)) return NULL;
    if (!PyArg_ParseTuple(args, "OnO", &io, &n, &vo)) return NULL;
    if (self->readonly) {
        PyErr_SetString(Error, "this index was opened with mmap=True and is read-only");
        return NULL;
    }
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(self->ix, &info);
    Py_buffer ib, vb;
    if (get_buf(io, &ib, n * 8, "ids")) return NULL;
    if (get_buf(vo, &vb, n * (Py_ssize_t)info.dim * 4, "vectors")) {
        PyBuffer_Release(&ib);
        return NULL;
    }
    const uint64_t *ids = ib.buf;
    const float *v = vb.buf;
    int rc = CHRYS_OK;
    Py_ssize_t bad = -1;
    char msg[512] = "";
    wr_lock(&self->rw);
    for (Py_ssize_t i = 0; i < n && bad < 0; i++)
        if (!chrys_index_contains(self->ix, ids[i])) bad = i;
    if (bad < 0) {
        Py_BEGIN_ALLOW_THREADS for (Py_ssize_t i = 0; i < n && !rc; i++) rc =
            chrys_index_update(self->ix, ids[i], v + (size_t)i * info.dim);
        Py_END_ALLOW_THREADS if (rc) snprintf(msg, sizeof msg, "%s", chrys_index_errmsg(self->ix));
    }
    rw_unlock(&self->rw);
    uint64_t bad_id = bad >= 0 ? ids[bad] : 0;
    PyBuffer_Release(&ib);
    PyBuffer_Release(&vb);
    if (bad >= 0) {
        PyErr_Format(NotFoundError, "row %zd: id %llu is not in the index", bad, (unsigned long long)bad_id);
        return NULL;
    }
    if (rc) return raise_rc(rc, msg);
    Py_RETURN_NONE;
}

/* _get(ids u64, n, out f32) */
static PyObject *Index_get_c(IndexObject *self, PyObject *args)
{
    PyObject *io, *oo;
    Py_ssize_t n;
    if (need_ix(self)) return NULL;
    if (!PyArg_ParseTuple(args, "OnO", &io, &n, &oo)) return NULL;
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(self->ix, &info);
    Py_buffer ib, ob;
    if (get_buf(io, &ib, n * 8, "ids")) return NULL;
    if (get_wbuf(oo, &ob, n * (Py_ssize_t)info.dim * 4, "out")) {
        PyBuffer_Release(&ib);
        return NULL;
    }
    const uint64_t *ids = ib.buf;
    Py_ssize_t bad = -1;
    rd_lock(&self->rw);
    for (Py_ssize_t i = 0; i < n && bad < 0; i++)
        if (chrys_index_get(self->ix, ids[i], (float *)ob.buf + (size_t)i * info.dim)) bad = i;
    rw_unlock(&self->rw);
    uint64_t bad_id = bad >= 0 ? ids[bad] : 0;
    PyBuffer_Release(&ib);
    PyBuffer_Release(&ob);
    if (bad >= 0) {
        PyErr_Format(NotFoundError, "row %zd: id %llu is not in the index", bad, (unsigned long long)bad_id);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Index_meta_c(IndexObject *self, PyObject *args)
{
    unsigned long long id;
    if (need_ix(self)) return NULL;
    if (!PyArg_ParseTuple(args, "K", &id)) return NULL;
    const char *meta = NULL;
    PyObject *out = NULL;
    rd_lock(&self->rw);
    int rc = chrys_index_get_meta(self->ix, id, &meta);
    if (!rc) out = meta ? PyUnicode_FromString(meta) : Py_NewRef(Py_None);
    rw_unlock(&self->rw);
    if (rc) {
        PyErr_Format(NotFoundError, "id %llu is not in the index", id);
        return NULL;
    }
    return out;
}

static PyObject *Index_contains_c(IndexObject *self, PyObject *args)
{
    unsigned long long id;
    if (need_ix(self)) return NULL;
    if (!PyArg_ParseTuple(args, "K", &id)) return NULL;
    rd_lock(&self->rw);
    int r = chrys_index_contains(self->ix, id);
    rw_unlock(&self->rw);
    return PyBool_FromLong(r);
}

static PyObject *Index_ids_c(IndexObject *self, PyObject *args)
{
    PyObject *oo;
    if (need_ix(self)) return NULL;
    if (!PyArg_ParseTuple(args, "O", &oo)) return NULL;
    Py_buffer ob;
    if (PyObject_GetBuffer(oo, &ob, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) return NULL;
    rd_lock(&self->rw);
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(self->ix, &info);
    int ok = (uint64_t)ob.len == info.count * 8;
    size_t n_ids;
    if (ok) ok = chrys_index_get_ids(self->ix, ob.buf, info.count, &n_ids) == CHRYS_OK;
    rw_unlock(&self->rw);
    PyBuffer_Release(&ob);
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "the index changed size during ids()");
        return NULL;
    }
    Py_RETURN_NONE;
}

static Py_ssize_t Index_len(IndexObject *self)
{
    if (!self->ix) return 0;
    rd_lock(&self->rw);
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(self->ix, &info);
    rw_unlock(&self->rw);
    return (Py_ssize_t)info.count;
}

static PyObject *Index_info_c(IndexObject *self, PyObject *noargs)
{
    (void)noargs;
    if (need_ix(self)) return NULL;
    chrys_index_info in = {sizeof in};
    rd_lock(&self->rw);
    chrys_index_get_info(self->ix, &in);
    rw_unlock(&self->rw);
    static const char *metrics[] = {"cosine", "ip", "l2"};
    static const char *kinds[] = {"flat", "ivf", "hnsw"};
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    if (dict_set_u64(d, "dim", in.dim) || dict_set_s(d, "metric", metrics[in.metric % 3]) ||
        dict_set_s(d, "kind", kinds[in.kind % 3]) || dict_set_s(d, "spec", in.spec) ||
        dict_set_u64(d, "count", in.count) || dict_set_u64(d, "memory_bytes", in.memory_bytes) ||
        dict_set_u64(d, "vector_bytes", in.vector_bytes) || dict_set_u64(d, "mapped_bytes", in.mapped_bytes) ||
        dict_set_u64(d, "seed", in.seed) || dict_set_u64(d, "nlist", in.nlist) || dict_set_u64(d, "sq8", (uint64_t)in.sq8) ||
        PyDict_SetItemString(d, "planned", in.planned ? Py_True : Py_False) ||
        dict_set_s(d, "plan_reason", in.plan_reason) || dict_set_f(d, "imbalance", in.imbalance) ||
        dict_set_f(d, "drift", in.drift) || dict_set_u64(d, "trained_on", in.trained_on) ||
        dict_set_u64(d, "hnsw_m", in.hnsw_m) || dict_set_u64(d, "ef_construction", in.ef_construction) ||
        dict_set_f(d, "max_level", in.max_level) || dict_set_u64(d, "deleted", in.deleted) ||
        PyDict_SetItemString(d, "mmap", self->readonly ? Py_True : Py_False) ||
        dict_set_s(d, "simd", chrys_simd_name())) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *Index_compact_c(IndexObject *self, PyObject *noargs)
{
    (void)noargs;
    if (need_ix(self)) return NULL;
    int rc;
    wr_lock(&self->rw);
    Py_BEGIN_ALLOW_THREADS rc = chrys_index_compact(self->ix);
    Py_END_ALLOW_THREADS rw_unlock(&self->rw);
    if (rc) return raise_rc(rc, NULL);
    Py_RETURN_NONE;
}

static PyObject *Index_retrain_c(IndexObject *self, PyObject *noargs)
{
    (void)noargs;
    if (need_ix(self)) return NULL;
    int rc;
    char msg[512] = "";
    wr_lock(&self->rw);
    Py_BEGIN_ALLOW_THREADS rc = chrys_index_retrain(self->ix);
    Py_END_ALLOW_THREADS if (rc) snprintf(msg, sizeof msg, "%s", chrys_index_errmsg(self->ix));
    rw_unlock(&self->rw);
    if (rc) return raise_rc(rc, msg);
    Py_RETURN_NONE;
}

static PyMethodDef Index_methods[] = {
    {"_init", (PyCFunction)Index_init_c, METH_VARARGS, NULL},
    {"_load", (PyCFunction)Index_load_c, METH_VARARGS, NULL},
    {"_from_bytes", (PyCFunction)Index_from_bytes_c, METH_VARARGS, NULL},
    {"_to_bytes", (PyCFunction)Index_to_bytes_c, METH_NOARGS, NULL},
    {"_save", (PyCFunction)Index_save_c, METH_VARARGS, NULL},
    {"_add", (PyCFunction)Index_add_c, METH_VARARGS, NULL},
    {"_search", (PyCFunction)Index_search_c, METH_VARARGS, NULL},
    {"_remove", (PyCFunction)Index_remove_c, METH_VARARGS, NULL},
    {"_score", (PyCFunction)Index_score_c, METH_VARARGS, NULL},
    {"_update", (PyCFunction)Index_update_c, METH_VARARGS, NULL},
    {"_get", (PyCFunction)Index_get_c, METH_VARARGS, NULL},
    {"_meta", (PyCFunction)Index_meta_c, METH_VARARGS, NULL},
    {"_contains", (PyCFunction)Index_contains_c, METH_VARARGS, NULL},
    {"_ids", (PyCFunction)Index_ids_c, METH_VARARGS, NULL},
    {"_info", (PyCFunction)Index_info_c, METH_NOARGS, NULL},
    {"_compact", (PyCFunction)Index_compact_c, METH_NOARGS, NULL},
    {"_retrain", (PyCFunction)Index_retrain_c, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Index_as_sequence = {.sq_length = (lenfunc)Index_len};

static PyTypeObject IndexType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "chrysalis._chrysalis._Index",
    .tp_basicsize = sizeof(IndexObject),
    .tp_dealloc = (destructor)Index_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Low-level index handle (use chrysalis.Index).",
    .tp_methods = Index_methods,
    .tp_new = Index_new,
    .tp_as_sequence = &Index_as_sequence,
    .tp_weaklistoffset = offsetof(IndexObject, weakrefs),
};

/* ------------------------------------------------------------------------------------------- */
/* Merger                                                                                        */
/* ------------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    chrys_merger *m;
    pthread_rwlock_t rw;
    uint64_t n_searches, n_slow; /* since the last _take_search_counts */
    PyObject *weakrefs;
} MergerObject;

static void on_search(void *user, const chrys_merge_metrics *mm)
{
    MergerObject *self = user;
    __atomic_add_fetch(&self->n_searches, 1, __ATOMIC_RELAXED);
    if (mm->slow) __atomic_add_fetch(&self->n_slow, 1, __ATOMIC_RELAXED);
}

static PyObject *Merger_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)args;
    (void)kw;
    MergerObject *self = (MergerObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    rw_init(&self->rw);
    return (PyObject *)self;
}

static void Merger_dealloc(MergerObject *self)
{
    if (self->weakrefs) PyObject_ClearWeakRefs((PyObject *)self);
    chrys_merger_free(self->m);
    pthread_rwlock_destroy(&self->rw);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int need_m(MergerObject *self)
{
    if (!self->m) {
        PyErr_SetString(Error, "the merger is not initialised (call Merger(dim=...) or Merger.open)");
        return -1;
    }
    return 0;
}

/* Read the known keys of a dict into opts (unknown keys were refused by the Python layer). */
static int opts_from_dict(PyObject *d, chrys_merge_opts *o, PyObject **spec_keep)
{
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(d, &pos, &k, &v)) {
        const char *key = PyUnicode_AsUTF8(k);
        if (!key) return -1;
#define DBL(name)                                                                                        \
    if (!strcmp(key, #name)) {                                                                          \
        o->name = PyFloat_AsDouble(v);                                                                  \
        if (PyErr_Occurred()) return -1;                                                                \
        continue;                                                                                       \
    }
#define UINT(name, T)                                                                                    \
    if (!strcmp(key, #name)) {                                                                          \
        unsigned long long x = PyLong_AsUnsignedLongLong(v);                                            \
        if (PyErr_Occurred()) return -1;                                                                \
        o->name = (T)x;                                                                                 \
        continue;                                                                                       \
    }
        DBL(threshold) DBL(weight_old) DBL(weight_new) DBL(slow_search_s) DBL(confirm_margin);
        UINT(dim, uint32_t) UINT(variant, chrys_merge_variant) UINT(renormalize, int) UINT(mean_update, int);
        UINT(skip_invalid, int) UINT(n_threads, uint32_t) UINT(batch_size, uint32_t) UINT(auto_threshold, uint64_t);
        UINT(memory_budget, uint64_t) UINT(exact, int) UINT(nprobe, uint32_t) UINT(verify, int);
        UINT(ef_search, uint32_t) UINT(ef_construction, uint32_t);
#undef DBL
#undef UINT
        if (!strcmp(key, "index_spec")) {
            if (v == Py_None) {
                o->index_spec = NULL;
                continue;
            }
            const char *s = PyUnicode_AsUTF8(v);
            if (!s) return -1;
            *spec_keep = v;
            o->index_spec = s;
            continue;
        }
        PyErr_Format(PyExc_TypeError, "unknown merger option '%s'", key);
        return -1;
    }
    return 0;
}

static PyObject *Merger_init_c(MergerObject *self, PyObject *args)
{
    PyObject *d;
    if (!PyArg_ParseTuple(args, "O!", &PyDict_Type, &d)) return NULL;
    chrys_merge_opts o;
    chrys_merge_opts_init(&o);
    PyObject *keep = NULL;
    if (opts_from_dict(d, &o, &keep)) return NULL;
    o.on_search = on_search;
    o.user = self;
    chrys_merger *m = NULL;
    char *msg = NULL;
    int rc = chrys_merger_new(&o, &m, &msg);
    if (rc) return raise_owned(rc, msg);
    chrys_merger_free(self->m);
    self->m = m;
    Py_RETURN_NONE;
}

static PyObject *Merger_open_c(MergerObject *self, PyObject *args)
{
    PyObject *pathobj;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &pathobj)) return NULL;
    chrys_merger *m = NULL;
    char *msg = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = chrys_merger_open(PyBytes_AS_STRING(pathobj), &m, &msg);
    Py_END_ALLOW_THREADS Py_DECREF(pathobj);
    if (rc) return raise_owned(rc, msg);
    chrys_merge_opts o = {sizeof o};
    chrys_merger_get_opts(m, &o);
    o.on_search = on_search;
    o.user = self;
    chrys_merger_configure(m, &o);
    chrys_merger_free(self->m);
    self->m = m;
    Py_RETURN_NONE;
}

static PyObject *Merger_configure_c(MergerObject *self, PyObject *args)
{
    PyObject *d;
    if (need_m(self)) return NULL;
    if (!PyArg_ParseTuple(args, "O!", &PyDict_Type, &d)) return NULL;
    chrys_merge_opts o = {sizeof o};
    wr_lock(&self->rw);
    chrys_merger_get_opts(self->m, &o);
    PyObject *keep = NULL;
    int rc = opts_from_dict(d, &o, &keep) ? -1 : 0;
    if (!rc) {
        o.on_search = on_search;
        o.user = self;
        rc = chrys_merger_configure(self->m, &o);
    }
    char msg[512];
    snprintf(msg, sizeof msg, "%s", chrys_merger_errmsg(self->m));
    rw_unlock(&self->rw);
    if (rc < 0) return NULL;
    if (rc) return raise_rc(rc, msg);
    Py_RETURN_NONE;
}

static PyObject *opts_to_dict(const chrys_merge_opts *o)
{
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    if (dict_set_u64(d, "dim", o->dim) || dict_set_f(d, "threshold", o->threshold) ||
        dict_set_f(d, "weight_old", o->weight_old) || dict_set_f(d, "weight_new", o->weight_new) ||
        dict_set_s(d, "variant", o->variant == CHRYS_MERGE_SKILL ? "skill" : "embedding") ||
        dict_set_u64(d, "renormalize", (uint64_t)o->renormalize) || dict_set_u64(d, "mean_update", (uint64_t)o->mean_update) ||
        dict_set_u64(d, "skip_invalid", (uint64_t)o->skip_invalid) || dict_set_u64(d, "n_threads", o->n_threads) ||
        dict_set_u64(d, "batch_size", o->batch_size) || dict_set_f(d, "slow_search_s", o->slow_search_s) ||
        dict_set_u64(d, "auto_threshold", o->auto_threshold) || dict_set_u64(d, "memory_budget", o->memory_budget) ||
        dict_set_u64(d, "exact", (uint64_t)o->exact) || dict_set_u64(d, "nprobe", o->nprobe) ||
        dict_set_f(d, "confirm_margin", o->confirm_margin) || dict_set_u64(d, "verify", (uint64_t)o->verify) ||
        dict_set_u64(d, "ef_search", o->ef_search) || dict_set_u64(d, "ef_construction", o->ef_construction)) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *Merger_opts_c(MergerObject *self, PyObject *noargs)
{
    (void)noargs;
    if (need_m(self)) return NULL;
    chrys_merge_opts o = {sizeof o};
    rd_lock(&self->rw);
    chrys_merger_get_opts(self->m, &o);
    rw_unlock(&self->rw);
    return opts_to_dict(&o);
}

/* _merge(vectors f32, n, dim, ids u64 or None, empty u8 or None, meta list or None,
 *        out_entry u64, out_score f64, out_action i32) */
static PyObject *Merger_merge_c(MergerObject *self, PyObject *args)
{
    PyObject *vo, *io, *eo, *mo, *oe, *os, *oa;
    Py_ssize_t n;
    unsigned int dim;
    if (need_m(self)) return NULL;
    if (!PyArg_ParseTuple(args, "OnIOOOOOO", &vo, &n, &dim, &io, &eo, &mo, &oe, &os, &oa)) return NULL;
    Py_buffer vb, ib = {0}, eb = {0}, be, bs, ba;
    int have_ids = io != Py_None, have_empty = eo != Py_None;
    if (get_buf(vo, &vb, n * (Py_ssize_t)dim * 4, "vectors")) return NULL;
    if (have_ids && get_buf(io, &ib, n * 8, "ids")) {
        PyBuffer_Release(&vb);
        return NULL;
    }
    if (have_empty && get_buf(eo, &eb, n, "empty")) {
        PyBuffer_Release(&vb);
        if (have_ids) PyBuffer_Release(&ib);
        return NULL;
    }
    int got = 0;
    if (get_wbuf(oe, &be, n * 8, "out_entry") == 0) {
        got = 1;
        if (get_wbuf(os, &bs, n * 8, "out_score") == 0) {
            got = 2;
            if (get_wbuf(oa, &ba, n * 4, "out_action") == 0) got = 3;
        }
    }
    const char **meta = NULL;
    chrys_merge_record *recs = NULL;
    chrys_merge_result *res = NULL;
    PyObject *ret = NULL;
    if (got < 3) goto done;
    if (mo != Py_None && !(meta = meta_array(mo, n))) goto done;
    recs = PyMem_Calloc((size_t)(n ? n : 1), sizeof *recs);
    res = PyMem_Calloc((size_t)(n ? n : 1), sizeof *res);
    if (!recs || !res) {
        PyErr_NoMemory();
        goto done;
    }
    wr_lock(&self->rw);
    chrys_merge_stats st = {sizeof st};
    chrys_merger_get_stats(self->m, &st);
    for (Py_ssize_t i = 0; i < n; i++) {
        int empty = have_empty && ((const uint8_t *)eb.buf)[i];
        recs[i].id = have_ids ? ((const uint64_t *)ib.buf)[i] : st.next_record_id + (uint64_t)i;
        recs[i].vec = empty ? NULL : (const float *)vb.buf + (size_t)i * dim;
        recs[i].dim = empty ? 0 : dim;
        recs[i].meta = meta ? meta[i] : NULL;
    }
    int rc;
    char msg[1024] = "";
    Py_BEGIN_ALLOW_THREADS rc = chrys_merger_merge(self->m, (size_t)n, recs, res);
    if (rc) snprintf(msg, sizeof msg, "%s", chrys_merger_errmsg(self->m));
    else rc = chrys_merger_mark_run(self->m);
    Py_END_ALLOW_THREADS rw_unlock(&self->rw);
    if (rc) {
        raise_rc(rc, msg);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        ((int64_t *)be.buf)[i] = res[i].entry == CHRYS_NO_ID ? -1 : (int64_t)res[i].entry;
        ((double *)bs.buf)[i] = res[i].score;
        ((int32_t *)ba.buf)[i] = res[i].action;
    }
    ret = Py_NewRef(Py_None);
done:
    PyMem_Free(recs);
    PyMem_Free(res);
    PyMem_Free(meta);
    PyBuffer_Release(&vb);
    if (have_ids) PyBuffer_Release(&ib);
    if (have_empty) PyBuffer_Release(&eb);
    if (got >= 1) PyBuffer_Release(&be);
    if (got >= 2) PyBuffer_Release(&bs);
    if (got >= 3) PyBuffer_Release(&ba);
    return ret;
}

static PyObject *Merger_stats_c(MergerObject *self, PyObject *noargs)
{
    (void)noargs;
    if (need_m(self)) return NULL;
    chrys_merge_stats s = {sizeof s};
    rd_lock(&self->rw);
    chrys_merger_get_stats(self->m, &s);
    rw_unlock(&self->rw);
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    if (dict_set_u64(d, "entries", s.entries) || dict_set_u64(d, "records", s.records) ||
        dict_set_u64(d, "merged", s.merged) || dict_set_u64(d, "added", s.added) ||
        dict_set_u64(d, "skipped", s.skipped) || dict_set_u64(d, "runs", s.runs) ||
        dict_set_u64(d, "next_record_id", s.next_record_id) || dict_set_u64(d, "approx_records", s.approx_records) ||
        dict_set_u64(d, "confirmations", s.confirmations) || dict_set_u64(d, "verified", s.verified) ||
        dict_set_u64(d, "disagreements", s.disagreements) || dict_set_u64(d, "relinks", s.relinks) ||
        dict_set_u64(d, "searches", __atomic_exchange_n(&self->n_searches, 0, __ATOMIC_RELAXED)) ||
        dict_set_u64(d, "slow_searches", __atomic_exchange_n(&self->n_slow, 0, __ATOMIC_RELAXED))) {
        Py_DECREF(d);
        return NULL;
    }
    /* which path decides: the exact scan (Flat) or the planner's graph, as the CLI summary says */
    chrys_index_info ii = {sizeof ii};
    rd_lock(&self->rw);
    chrys_index_get_info(chrys_merger_index(self->m), &ii);
    rw_unlock(&self->rw);
    PyObject *spec = PyUnicode_FromString(ii.spec), *why = PyUnicode_FromString(ii.plan_reason);
    int bad = !spec || !why || PyDict_SetItemString(d, "index_spec", spec) ||
              PyDict_SetItemString(d, "plan_reason", why) ||
              PyDict_SetItemString(d, "index_graph", ii.kind != CHRYS_INDEX_FLAT ? Py_True : Py_False);
    Py_XDECREF(spec);
    Py_XDECREF(why);
    if (bad) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* _entries(out_vectors f32 or None) -> list of (merged_count, similarity_score, first_record, meta) */
static PyObject *Merger_entries_c(MergerObject *self, PyObject *args)
{
    PyObject *oo;
    if (need_m(self)) return NULL;
    if (!PyArg_ParseTuple(args, "O", &oo)) return NULL;
    Py_buffer ob = {0};
    rd_lock(&self->rw);
    chrys_merge_stats s = {sizeof s};
    chrys_merger_get_stats(self->m, &s);
    chrys_merge_opts o = {sizeof o};
    chrys_merger_get_opts(self->m, &o);
    PyObject *list = NULL;
    if (oo != Py_None) {
        if (PyObject_GetBuffer(oo, &ob, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) goto out;
        if ((uint64_t)ob.len != s.entries * o.dim * 4) {
            PyErr_SetString(PyExc_ValueError, "entries: output of the wrong size");
            goto out;
        }
    }
    list = PyList_New((Py_ssize_t)s.entries);
    if (!list) goto out;
    for (uint64_t e = 0; e < s.entries; e++) {
        chrys_merge_entry en = {sizeof en};
        chrys_merger_get_entry(self->m, e, &en, ob.buf ? (float *)ob.buf + e * o.dim : NULL);
        PyObject *meta = en.meta ? PyUnicode_FromString(en.meta) : Py_NewRef(Py_None);
        PyObject *t = meta ? Py_BuildValue("(IdKN)", en.merged_count, en.similarity_score,
                                           (unsigned long long)en.first_record, meta)
                           : NULL;
        if (!t) {
            Py_CLEAR(list);
            goto out;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)e, t);
    }
out:
    rw_unlock(&self->rw);
    if (ob.buf) PyBuffer_Release(&ob);
    return list;
}

static PyObject *Merger_lookup_c(MergerObject *self, PyObject *args)
{
    unsigned long long rid;
    if (need_m(self)) return NULL;
    if (!PyArg_ParseTuple(args, "K", &rid)) return NULL;
    uint64_t e;
    rd_lock(&self->rw);
    int rc = chrys_merger_lookup(self->m, rid, &e);
    rw_unlock(&self->rw);
    if (rc) {
        PyErr_Format(NotFoundError, "record id %llu was not merged", rid);
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(e);
}

static PyObject *Merger_history_c(MergerObject *self, PyObject *noargs)
{
    (void)noargs;
    if (need_m(self)) return NULL;
    size_t n = 0;
    rd_lock(&self->rw);
    chrys_merger_get_history(self->m, NULL, 0, &n);
    chrys_merge_run *rows = PyMem_RawMalloc((n ? n : 1) * sizeof *rows);
    if (rows) chrys_merger_get_history(self->m, rows, n, &n);
    rw_unlock(&self->rw);
    if (!rows) return PyErr_NoMemory();
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        PyObject *t = Py_BuildValue("{sKsKsKsKsK}", "time", rows[i].unix_time, "records", rows[i].records, "merged",
                                    rows[i].merged, "added", rows[i].added, "skipped", rows[i].skipped);
        if (!t) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    PyMem_RawFree(rows);
    return list;
}

static PyObject *Merger_save_c(MergerObject *self, PyObject *args)
{
    PyObject *pathobj;
    if (need_m(self)) return NULL;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &pathobj)) return NULL;
    char *msg = NULL;
    int rc;
    rd_lock(&self->rw);
    Py_BEGIN_ALLOW_THREADS rc = chrys_merger_save(self->m, PyBytes_AS_STRING(pathobj), &msg);
    Py_END_ALLOW_THREADS rw_unlock(&self->rw);
    Py_DECREF(pathobj);
    if (rc) return raise_owned(rc, msg);
    Py_RETURN_NONE;
}

/* _search(queries f32, nq, k, out_scores f32, out_ids i64): search the entries (ids = entry numbers) */
static PyObject *Merger_search_c(MergerObject *self, PyObject *args)
{
    PyObject *qo, *so, *io;
    Py_ssize_t nq;
    unsigned int k;
    if (need_m(self)) return NULL;
    if (!PyArg_ParseTuple(args, "OnIOO", &qo, &nq, &k, &so, &io)) return NULL;
    chrys_merge_opts o = {sizeof o};
    chrys_merger_get_opts(self->m, &o);
    Py_buffer qb, sb, ib;
    if (get_buf(qo, &qb, nq * (Py_ssize_t)o.dim * 4, "queries")) return NULL;
    if (get_wbuf(so, &sb, nq * (Py_ssize_t)k * 4, "scores")) {
        PyBuffer_Release(&qb);
        return NULL;
    }
    if (get_wbuf(io, &ib, nq * (Py_ssize_t)k * 8, "ids")) {
        PyBuffer_Release(&qb);
        PyBuffer_Release(&sb);
        return NULL;
    }
    size_t nh = (size_t)nq * k;
    chrys_hit *hits = PyMem_RawMalloc((nh ? nh : 1) * sizeof *hits);
    int rc = CHRYS_NOMEM;
    char emsg[512] = "";
    if (hits) {
        chrys_search_opts so2;
        chrys_search_opts_init(&so2);
        so2.k = k;
        rd_lock(&self->rw);
        Py_BEGIN_ALLOW_THREADS rc = chrys_index_search(chrys_merger_index(self->m), (size_t)nq, qb.buf, &so2, hits);
        Py_END_ALLOW_THREADS if (rc) snprintf(emsg, sizeof emsg, "%s", chrys_index_errmsg(chrys_merger_index(self->m)));
        rw_unlock(&self->rw);
        for (size_t i = 0; !rc && i < nh; i++) {
            ((float *)sb.buf)[i] = hits[i].score;
            ((int64_t *)ib.buf)[i] = hits[i].id == CHRYS_NO_ID ? -1 : (int64_t)hits[i].id;
        }
        PyMem_RawFree(hits);
    }
    PyBuffer_Release(&qb);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&ib);
    if (rc) return raise_rc(rc, emsg);
    Py_RETURN_NONE;
}

static PyMethodDef Merger_methods[] = {
    {"_init", (PyCFunction)Merger_init_c, METH_VARARGS, NULL},
    {"_open", (PyCFunction)Merger_open_c, METH_VARARGS, NULL},
    {"_configure", (PyCFunction)Merger_configure_c, METH_VARARGS, NULL},
    {"_opts", (PyCFunction)Merger_opts_c, METH_NOARGS, NULL},
    {"_merge", (PyCFunction)Merger_merge_c, METH_VARARGS, NULL},
    {"_stats", (PyCFunction)Merger_stats_c, METH_NOARGS, NULL},
    {"_entries", (PyCFunction)Merger_entries_c, METH_VARARGS, NULL},
    {"_lookup", (PyCFunction)Merger_lookup_c, METH_VARARGS, NULL},
    {"_history", (PyCFunction)Merger_history_c, METH_NOARGS, NULL},
    {"_save", (PyCFunction)Merger_save_c, METH_VARARGS, NULL},
    {"_search", (PyCFunction)Merger_search_c, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject MergerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "chrysalis._chrysalis._Merger",
    .tp_basicsize = sizeof(MergerObject),
    .tp_dealloc = (destructor)Merger_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Low-level merger handle (use chrysalis.Merger).",
    .tp_methods = Merger_methods,
    .tp_new = Merger_new,
    .tp_weaklistoffset = offsetof(MergerObject, weakrefs),
};

/* ------------------------------------------------------------------------------------------- */
/* Embedder                                                                                      */
/* ------------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    chrys_embedder *e;
    uint32_t dim;
    pthread_mutex_t mu; /* chrys_embedder_embed needs exclusive access */
} EmbedderObject;

static PyObject *Embedder_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)args;
    (void)kw;
    EmbedderObject *self = (EmbedderObject *)type->tp_alloc(type, 0);
    if (self) pthread_mutex_init(&self->mu, NULL);
    return (PyObject *)self;
}

static void Embedder_dealloc(EmbedderObject *self)
{
    chrys_embedder_free(self->e);
    pthread_mutex_destroy(&self->mu);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* _init(provider, base_url, model, dim, send_dimensions, api_key_env, batch_items, timeout, retries,
 *       rate, fallback, cache_path, cache_ttl, cache_max, seed) */
static PyObject *Embedder_init_c(EmbedderObject *self, PyObject *args)
{
    chrys_embed_opts o;
    chrys_embed_opts_init(&o);
    unsigned int provider, dim, batch, retries;
    int send_dim, fallback;
    const char *base_url, *model, *key_env, *cache;
    double timeout, rate, ttl;
    unsigned long long cache_max, seed;
    unsigned int concurrency = 4;
    if (!PyArg_ParseTuple(args, "IzzIpzIdIdpzdKK|I", &provider, &base_url, &model, &dim, &send_dim, &key_env, &batch,
                          &timeout, &retries, &rate, &fallback, &cache, &ttl, &cache_max, &seed, &concurrency))
        return NULL;
    o.provider = (chrys_provider)provider;
    if (base_url) o.base_url = base_url;
    if (model) o.model = model;
    o.dim = dim;
    o.send_dimensions = send_dim;
    if (key_env) o.api_key_env = key_env;
    if (batch) o.batch_max_items = batch;
    o.timeout_s = timeout;
    o.max_retries = retries;
    o.rate_per_s = rate;
    o.fallback_deterministic = fallback;
    o.cache_path = cache;
    o.cache_ttl_s = ttl;
    o.cache_max_entries = cache_max;
    o.seed = seed;
    o.concurrency = concurrency;
    chrys_embedder *e = NULL;
    char *msg = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = chrys_embedder_new(&o, &e, &msg);
    Py_END_ALLOW_THREADS if (rc) return raise_owned(rc, msg);
    chrys_embedder_free(self->e);
    self->e = e;
    self->dim = dim;
    Py_RETURN_NONE;
}

/* _embed(list of str, out f32 n*dim) */
static PyObject *Embedder_embed_c(EmbedderObject *self, PyObject *args)
{
    PyObject *lo, *oo;
    if (!self->e) {
        PyErr_SetString(Error, "the embedder is not initialised");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &lo, &oo)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(lo);
    const char **texts = meta_array(lo, n);
    if (!texts) return NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!texts[i]) {
            PyMem_Free(texts);
            PyErr_Format(PyExc_TypeError, "texts[%zd]: expected str", i);
            return NULL;
        }
    Py_buffer ob;
    if (get_wbuf(oo, &ob, n * (Py_ssize_t)self->dim * 4, "out")) {
        PyMem_Free(texts);
        return NULL;
    }
    int rc;
    char msg[1024] = "";
    Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&self->mu);
    rc = chrys_embedder_embed(self->e, (size_t)n, texts, ob.buf);
    if (rc) snprintf(msg, sizeof msg, "%s", chrys_embedder_errmsg(self->e));
    pthread_mutex_unlock(&self->mu);
    Py_END_ALLOW_THREADS PyBuffer_Release(&ob);
    PyMem_Free(texts);
    if (rc) return raise_rc(rc, msg);
    Py_RETURN_NONE;
}

static PyObject *Embedder_stats_c(EmbedderObject *self, PyObject *noargs)
{
    (void)noargs;
    if (!self->e) {
        PyErr_SetString(Error, "the embedder is not initialised");
        return NULL;
    }
    chrys_embed_stats s = {sizeof s};
    chrys_embedder_get_stats(self->e, &s);
    return Py_BuildValue("{sKsKsKsKsKsKsK}", "texts", s.texts, "cache_hits", s.cache_hits, "cache_misses",
                         s.cache_misses, "requests", s.requests, "retries", s.retries, "provider_texts",
                         s.provider_texts, "fallback_texts", s.fallback_texts);
}

static PyMethodDef Embedder_methods[] = {
    {"_init", (PyCFunction)Embedder_init_c, METH_VARARGS, NULL},
    {"_embed", (PyCFunction)Embedder_embed_c, METH_VARARGS, NULL},
    {"_stats", (PyCFunction)Embedder_stats_c, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EmbedderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "chrysalis._chrysalis._Embedder",
    .tp_basicsize = sizeof(EmbedderObject),
    .tp_dealloc = (destructor)Embedder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Low-level embedder handle (use chrysalis.Embedder).",
    .tp_methods = Embedder_methods,
    .tp_new = Embedder_new,
};

/* ------------------------------------------------------------------------------------------- */
/* The drop-in merger's arithmetic: exactly the original's double-precision Python expressions     */
/* ------------------------------------------------------------------------------------------- */

/* How the interpreter's sum() adds floats: 0 = in order (CPython <= 3.11), 1 = Neumaier compensated
 * (3.12+). Chosen at import by the Python layer, which checks it against sum() itself; -1 = unknown
 * (the fast exact paths then decline and the Python code runs). */
static int sum_mode = -1;

typedef struct {
    double s, c;
    int first;
} pysum;

static inline void pysum_init(pysum *p)
{
    p->s = 0.0;
    p->c = 0.0;
    p->first = 1;
}

static inline void pysum_add(pysum *p, double x)
{
    if (p->first) { /* int 0 + float x: the float x (0.0 + x) */
        p->s = 0.0 + x;
        p->first = 0;
        return;
    }
    if (sum_mode == 0) {
        p->s += x;
        return;
    }
    double t = p->s + x;
    if (fabs(p->s) >= fabs(x)) p->c += (p->s - t) + x;
    else p->c += (x - t) + p->s;
    p->s = t;
}

static inline double pysum_result(const pysum *p)
{
    if (p->first) return 0.0; /* sum of nothing: int 0 (only used multiplied or compared) */
    if (sum_mode == 1 && p->c != 0.0 && isfinite(p->c)) return p->s + p->c;
    return p->s;
}

static PyObject *set_sum_mode(PyObject *mod, PyObject *arg)
{
    (void)mod;
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    sum_mode = (int)v;
    Py_RETURN_NONE;
}

/* _pysum(list of floats, mode) -> float: the C emulation, for the import-time check. */
static PyObject *py_sum_emul(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *l;
    int mode;
    if (!PyArg_ParseTuple(args, "O!i", &PyList_Type, &l, &mode)) return NULL;
    int save = sum_mode;
    sum_mode = mode;
    pysum p;
    pysum_init(&p);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(l); i++) {
        PyObject *x = PyList_GET_ITEM(l, i);
        if (!PyFloat_CheckExact(x)) {
            sum_mode = save;
            PyErr_SetString(PyExc_TypeError, "floats only");
            return NULL;
        }
        pysum_add(&p, PyFloat_AS_DOUBLE(x));
    }
    double r = pysum_result(&p);
    sum_mode = save;
    return PyFloat_FromDouble(r);
}

static int all_floats(PyObject *l)
{
    Py_ssize_t n = PyList_GET_SIZE(l);
    PyObject **it = ((PyListObject *)l)->ob_item;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!PyFloat_CheckExact(it[i])) return 0;
    return 1;
}

/* cosine_exact(a, b) -> float, or None when the fast path does not apply (not two lists of the
 * same length made of floats only, or an unknown sum()): then the caller runs the Python code.
 * The value is bit for bit the original's
 *   dot / (sqrt(sum(a*a)) * sqrt(sum(b*b)))   with 0.0 for a zero magnitude. */
static PyObject *cosine_exact(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *a, *b;
    if (!PyArg_ParseTuple(args, "OO", &a, &b)) return NULL;
    if (sum_mode < 0 || !PyList_CheckExact(a) || !PyList_CheckExact(b)) Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(a);
    if (n == 0 || n != PyList_GET_SIZE(b) || !all_floats(a) || !all_floats(b)) Py_RETURN_NONE;
    PyObject **ia = ((PyListObject *)a)->ob_item, **ib = ((PyListObject *)b)->ob_item;
    pysum d, ma, mb;
    pysum_init(&d);
    pysum_init(&ma);
    pysum_init(&mb);
    for (Py_ssize_t i = 0; i < n; i++) {
        double x = PyFloat_AS_DOUBLE(ia[i]), y = PyFloat_AS_DOUBLE(ib[i]);
        pysum_add(&d, x * y);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        double x = PyFloat_AS_DOUBLE(ia[i]);
        pysum_add(&ma, x * x);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        double y = PyFloat_AS_DOUBLE(ib[i]);
        pysum_add(&mb, y * y);
    }
    double m1 = sqrt(pysum_result(&ma)), m2 = sqrt(pysum_result(&mb));
    if (m1 == 0 || m2 == 0) return PyFloat_FromDouble(0.0);
    return PyFloat_FromDouble(pysum_result(&d) / (m1 * m2));
}

/* average_exact(embeddings, normalized_weights) -> list, or None when the fast path does not apply
 * (anything but exact lists of floats, an embedding shorter than the first): the original's
 *   averaged = [0.0] * dim; for emb, w: for i: averaged[i] += emb[i] * w */
static PyObject *average_exact(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *embs, *ws;
    if (!PyArg_ParseTuple(args, "OO", &embs, &ws)) return NULL;
    if (!PyList_CheckExact(embs) || !PyList_CheckExact(ws)) Py_RETURN_NONE;
    Py_ssize_t ne = PyList_GET_SIZE(embs);
    if (ne == 0 || PyList_GET_SIZE(ws) != ne || !all_floats(ws)) Py_RETURN_NONE;
    PyObject *e0 = PyList_GET_ITEM(embs, 0);
    if (!PyList_CheckExact(e0)) Py_RETURN_NONE;
    Py_ssize_t dim = PyList_GET_SIZE(e0);
    for (Py_ssize_t j = 0; j < ne; j++) {
        PyObject *e = PyList_GET_ITEM(embs, j);
        if (!PyList_CheckExact(e) || PyList_GET_SIZE(e) < dim) Py_RETURN_NONE;
        PyObject **it = ((PyListObject *)e)->ob_item;
        for (Py_ssize_t i = 0; i < dim; i++)
            if (!PyFloat_CheckExact(it[i])) Py_RETURN_NONE;
    }
    double *acc = PyMem_Malloc((size_t)(dim ? dim : 1) * sizeof *acc);
    if (!acc) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < dim; i++) acc[i] = 0.0;
    for (Py_ssize_t j = 0; j < ne; j++) {
        PyObject **it = ((PyListObject *)PyList_GET_ITEM(embs, j))->ob_item;
        double w = PyFloat_AS_DOUBLE(PyList_GET_ITEM(ws, j));
        for (Py_ssize_t i = 0; i < dim; i++) acc[i] += PyFloat_AS_DOUBLE(it[i]) * w;
    }
    PyObject *out = PyList_New(dim);
    for (Py_ssize_t i = 0; out && i < dim; i++) {
        PyObject *f = PyFloat_FromDouble(acc[i]);
        if (!f) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, f);
    }
    PyMem_Free(acc);
    return out;
}

/* ------------------------------------------------------------------------------------------- */
/* _DropinCache                                                                                  */
/* ------------------------------------------------------------------------------------------- */

typedef struct {
    PyObject *dict; /* strong reference; NULL: slot unknown */
    PyObject *emb;  /* strong reference to the "embedding" value; NULL: key missing */
    Py_ssize_t len; /* its length when read */
    int group;      /* sub-index (by dimension) holding the entry as id = position; -1: none */
    int64_t row;    /* the entry's row in its group's int8 codes (valid when group >= 0) */
} dslot;

typedef struct {
    uint32_t dim;
    chrys_index *ix;   /* float32 unit rows, id = position (the second screen) */
    uint64_t count;
    /* the first screen: per row, int8 codes c (unit row ~ scale * c), scale, L1 norm of the
     * float32 unit row, and the position it belongs to */
    int8_t *codes;
    float *scale;
    double *l1;
    int64_t *pos;
    uint64_t rows, cap;
} dgroup;

typedef struct {
    PyObject_HEAD
    dslot *slots;
    Py_ssize_t n, cap;
    dgroup *groups;
    int n_groups;
    double *dbuf;
    float *fbuf;
    size_t buf_dim;
    uint64_t resynced, searches, candidates, i8_decided; /* statistics */
    int8_t *qcodes;
    double *ub, *lb;
    size_t bound_cap;
    unsigned int threads;
} DropinObject;

static PyObject *str_embedding;

static PyObject *Dropin_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)args;
    (void)kw;
    DropinObject *self = (DropinObject *)type->tp_alloc(type, 0);
    if (self) self->threads = 1;
    return (PyObject *)self;
}

static void drop_slot_refs(dslot *s)
{
    Py_CLEAR(s->dict);
    Py_CLEAR(s->emb);
    s->len = 0;
}

static void Dropin_clear_all(DropinObject *self)
{
    for (Py_ssize_t i = 0; i < self->n; i++) drop_slot_refs(&self->slots[i]);
    PyMem_Free(self->slots);
    self->slots = NULL;
    self->n = self->cap = 0;
    for (int g = 0; g < self->n_groups; g++) {
        chrys_index_free(self->groups[g].ix);
        PyMem_Free(self->groups[g].codes);
        PyMem_Free(self->groups[g].scale);
        PyMem_Free(self->groups[g].l1);
        PyMem_Free(self->groups[g].pos);
    }
    PyMem_Free(self->groups);
    self->groups = NULL;
    self->n_groups = 0;
}

static void Dropin_dealloc(DropinObject *self)
{
    PyObject_GC_UnTrack(self);
    Dropin_clear_all(self);
    PyMem_Free(self->dbuf);
    PyMem_Free(self->fbuf);
    PyMem_Free(self->qcodes);
    PyMem_Free(self->ub);
    PyMem_Free(self->lb);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Dropin_traverse(DropinObject *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->n; i++) {
        Py_VISIT(self->slots[i].dict);
        Py_VISIT(self->slots[i].emb);
    }
    return 0;
}

static int Dropin_tp_clear(DropinObject *self)
{
    for (Py_ssize_t i = 0; i < self->n; i++) drop_slot_refs(&self->slots[i]);
    return 0;
}

static int ensure_bufs(DropinObject *self, size_t dim)
{
    if (dim <= self->buf_dim) return 0;
    double *d = PyMem_Realloc(self->dbuf, dim * sizeof *d);
    if (!d) return -1;
    self->dbuf = d;
    float *f = PyMem_Realloc(self->fbuf, dim * sizeof *f);
    if (!f) return -1;
    self->fbuf = f;
    self->buf_dim = dim;
    return 0;
}

/* Read a list of floats (ints converted as float(x) would) into dbuf. Returns 1 ok, 0 unsupported
 * element, -1 error. */
static int read_list(DropinObject *self, PyObject *l)
{
    Py_ssize_t n = PyList_GET_SIZE(l);
    if (ensure_bufs(self, (size_t)n)) {
        PyErr_NoMemory();
        return -1;
    }
    PyObject **it = ((PyListObject *)l)->ob_item;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = it[i];
        if (PyFloat_CheckExact(x)) self->dbuf[i] = PyFloat_AS_DOUBLE(x);
        else if (PyLong_CheckExact(x)) {
            double v = PyLong_AsDouble(x);
            if (v == -1.0 && PyErr_Occurred()) {
                PyErr_Clear();
                return 0;
            }
            self->dbuf[i] = v;
        } else
            return 0;
    }
    return 1;
}

/* Unit-length float32 copy of dbuf[0..n) into fbuf; 0 if the vector can never score > 0 (zero,
 * non-finite magnitude, or a non-finite component): such an entry can never be the best. */
static int normalise(DropinObject *self, Py_ssize_t n)
{
    double ss = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) ss += self->dbuf[i] * self->dbuf[i];
    double m = sqrt(ss);
    if (!(m > 0) || !isfinite(m)) return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = self->dbuf[i] / m;
        if (!isfinite(v)) return 0;
        self->fbuf[i] = (float)v;
    }
    return 1;
}

static int group_for(DropinObject *self, uint32_t dim, int create)
{
    for (int g = 0; g < self->n_groups; g++)
        if (self->groups[g].dim == dim) return g;
    if (!create) return -1;
    if (dim > CHRYS_MAX_DIM) return -1;
    dgroup *gs = PyMem_Realloc(self->groups, (size_t)(self->n_groups + 1) * sizeof *gs);
    if (!gs) return -2;
    self->groups = gs;
    chrys_index_opts o;
    chrys_index_opts_init(&o);
    o.dim = dim;
    o.metric = CHRYS_METRIC_IP;
    o.spec = "Flat";
    chrys_index *ix = NULL;
    if (chrys_index_new(&o, &ix, NULL)) return -2;
    gs[self->n_groups] = (dgroup){dim, ix, 0, NULL, NULL, NULL, NULL, 0, 0};
    return self->n_groups++;
}

/* int8 codes of a float32 unit row: c = round(f / scale), scale = max|f| / 127, so that
 * |f - scale * c| <= scale / 2 per component; also returns the row's L1 norm. */
static void quantise(const float *f, uint32_t n, int8_t *c, float *scale, double *l1)
{
    double m = 0, a = 0;
    for (uint32_t i = 0; i < n; i++) {
        double v = fabs((double)f[i]);
        a += v;
        if (v > m) m = v;
    }
    double sc = m > 0 ? m / 127.0 : 1.0;
    for (uint32_t i = 0; i < n; i++) {
        long q = lrint((double)f[i] / sc);
        c[i] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
    }
    *scale = (float)sc;
    *l1 = a;
}

/* Write fbuf as row r of group g (r == g->rows appends). Returns 0 or -1 (no memory). */
static int group_row_put(dgroup *g, uint64_t r, int64_t position, const float *f)
{
    if (r == g->rows) {
        if (g->rows == g->cap) {
            uint64_t cap = g->cap ? g->cap * 2 : 64;
            int8_t *c = PyMem_Realloc(g->codes, (size_t)cap * g->dim);
            if (!c) return -1;
            g->codes = c;
            float *sc = PyMem_Realloc(g->scale, (size_t)cap * sizeof *sc);
            if (!sc) return -1;
            g->scale = sc;
            double *l1 = PyMem_Realloc(g->l1, (size_t)cap * sizeof *l1);
            if (!l1) return -1;
            g->l1 = l1;
            int64_t *ps = PyMem_Realloc(g->pos, (size_t)cap * sizeof *ps);
            if (!ps) return -1;
            g->pos = ps;
            g->cap = cap;
        }
        g->rows++;
    }
    quantise(f, g->dim, g->codes + (size_t)r * g->dim, &g->scale[r], &g->l1[r]);
    g->pos[r] = position;
    return 0;
}

static void group_row_remove(DropinObject *self, dgroup *g, uint64_t r)
{
    uint64_t last = g->rows - 1;
    if (r != last) {
        memcpy(g->codes + (size_t)r * g->dim, g->codes + (size_t)last * g->dim, g->dim);
        g->scale[r] = g->scale[last];
        g->l1[r] = g->l1[last];
        g->pos[r] = g->pos[last];
        self->slots[g->pos[r]].row = (int64_t)r;
    }
    g->rows--;
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
__attribute__((target_clones("arch=skylake-avx512", "avx2", "default")))
#endif
static void dot_i8_rows(const int8_t *q, const int8_t *codes, uint64_t rows, uint32_t dim, int32_t *out)
{
    for (uint64_t r = 0; r < rows; r++) {
        const int8_t *c = codes + (size_t)r * dim;
        int32_t acc = 0;
        for (uint32_t i = 0; i < dim; i++) acc += (int32_t)q[i] * (int32_t)c[i];
        out[r] = acc;
    }
}

static int slot_unindex(DropinObject *self, Py_ssize_t i)
{
    dslot *s = &self->slots[i];
    if (s->group >= 0) {
        dgroup *g = &self->groups[s->group];
        if (chrys_index_remove(g->ix, (uint64_t)i) == CHRYS_OK) g->count--;
        group_row_remove(self, g, (uint64_t)s->row);
        s->group = -1;
    }
    return 0;
}

/* (Re)read position i from dict d. Returns 1 ok, 0 unsupported (slot left unknown), -1 error. */
static int slot_sync(DropinObject *self, Py_ssize_t i, PyObject *d)
{
    dslot *s = &self->slots[i];
    int old_group = s->group;
    drop_slot_refs(s);
    PyObject *emb = PyDict_GetItemWithError(d, str_embedding);
    if (!emb && PyErr_Occurred()) return -1;
    int new_group = -1, ok = 1;
    Py_ssize_t len = 0;
    if (emb && emb != Py_None) {
        if (!PyList_CheckExact(emb)) ok = 0;
        else if ((len = PyList_GET_SIZE(emb)) > 0) {
            int r = read_list(self, emb);
            if (r < 0) return -1;
            if (r == 0) ok = 0;
            else if (len <= CHRYS_MAX_DIM && normalise(self, len)) {
                new_group = group_for(self, (uint32_t)len, 1);
                if (new_group == -2) {
                    PyErr_NoMemory();
                    return -1;
                }
            }
        }
    }
    self->resynced++;
    if (!ok) {
        s->group = old_group;
        slot_unindex(self, i);
        return 0;
    }
    int rc = CHRYS_OK;
    if (old_group >= 0 && old_group == new_group) {
        rc = chrys_index_update(self->groups[new_group].ix, (uint64_t)i, self->fbuf);
        if (!rc) group_row_put(&self->groups[new_group], (uint64_t)s->row, i, self->fbuf);
    } else {
        s->group = old_group;
        slot_unindex(self, i);
        if (new_group >= 0) {
            dgroup *g = &self->groups[new_group];
            uint64_t id = (uint64_t)i;
            if (group_row_put(g, g->rows, i, self->fbuf)) {
                PyErr_NoMemory();
                return -1;
            }
            rc = chrys_index_add(g->ix, 1, &id, self->fbuf, NULL);
            if (!rc) {
                g->count++;
                s->row = (int64_t)(g->rows - 1);
            } else
                g->rows--;
        }
    }
    if (rc) {
        s->group = -1;
        raise_rc(rc, "drop-in cache: the library refused an entry");
        return -1;
    }
    s->group = new_group;
    s->dict = Py_NewRef(d);
    s->emb = emb ? Py_NewRef(emb) : NULL;
    s->len = len;
    return 1;
}

/* The first screen, over int8 codes. With q and e the float32 unit rows and their codes
 * (q ~ sq * cq, e ~ se * ce, each component within half a step),
 *   |q.e - sq se (cq.ce)| <= sq/2 |e|_1 + se/2 |q|_1 + dim sq se / 4,
 * and q.e is within 2.5e-7 of the exact double cosine: so each row's exact cosine lies in
 * [lb, ub] = approx -/+ bound. The best row has exact >= max(lb); a row whose ub is below that, or
 * below the threshold, can be neither the best nor a merge. If the rows left are few (<= 64) they
 * are the candidates (returns 1); else the float32 screen decides (returns 0). -1: error. */
static int i8_screen(DropinObject *self, dgroup *g, double thr, PyObject *cands)
{
    uint32_t L = g->dim;
    if (g->rows > self->bound_cap) {
        size_t cap = (size_t)g->rows * 2;
        double *ub = PyMem_Realloc(self->ub, cap * sizeof *ub);
        if (!ub) return -1;
        self->ub = ub;
        double *lb = PyMem_Realloc(self->lb, cap * sizeof *lb);
        if (!lb) return -1;
        self->lb = lb;
        self->bound_cap = cap;
    }
    int8_t *qc = PyMem_Realloc(self->qcodes, L);
    if (!qc) {
        PyErr_NoMemory();
        return -1;
    }
    self->qcodes = qc;
    float qs;
    double ql1;
    quantise(self->fbuf, L, qc, &qs, &ql1);
    int32_t *dots = (int32_t *)self->lb; /* reuse as scratch: dots fit in the lb array */
    dot_i8_rows(qc, g->codes, g->rows, L, dots);
    double best_lb = -INFINITY;
    for (uint64_t r = 0; r < g->rows; r++) {
        double se = g->scale[r];
        double approx = (double)qs * se * (double)dots[r];
        double bound = 0.5001 * ((double)qs * g->l1[r] + se * ql1) + 0.2501 * L * (double)qs * se + 1e-6;
        self->ub[r] = approx + bound;
        double lbr = approx - bound;
        if (lbr > best_lb) best_lb = lbr;
    }
    double floor_ = best_lb > thr ? best_lb : thr;
    uint64_t n_c = 0;
    for (uint64_t r = 0; r < g->rows; r++)
        if (self->ub[r] >= floor_ && ++n_c > 64) return 0;
    for (uint64_t r = 0; r < g->rows; r++)
        if (self->ub[r] >= floor_) {
            PyObject *v = PyLong_FromLongLong(g->pos[r]);
            if (!v || PyList_Append(cands, v) < 0) {
                Py_XDECREF(v);
                return -1;
            }
            Py_DECREF(v);
        }
    self->i8_decided++;
    self->candidates += n_c;
    if (PyList_Sort(cands) < 0) return -1;
    return 1;
}

/* step(existing, new_embedding, threshold) -> None (use the Python path) or
 * (candidates, mismatched_lengths): candidates are the positions whose exact cosine may be the best
 * (ascending); mismatched_lengths the lengths of the non-empty entries whose length differs from
 * the new embedding's, in list order (the original logs one warning for each). */
static PyObject *Dropin_step(DropinObject *self, PyObject *args)
{
    PyObject *existing, *newemb;
    double thr;
    if (!PyArg_ParseTuple(args, "OOd", &existing, &newemb, &thr)) return NULL;
    if (!PyList_CheckExact(existing) || !PyList_CheckExact(newemb) || !isfinite(thr)) Py_RETURN_NONE;
    Py_ssize_t L = PyList_GET_SIZE(newemb);
    if (L == 0) Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(existing);
    /* 1. revalidate the cache against the list, position by position */
    if (n > self->cap) {
        Py_ssize_t cap = self->cap ? self->cap : 64;
        while (cap < n) cap *= 2;
        dslot *ns = PyMem_Realloc(self->slots, (size_t)cap * sizeof *ns);
        if (!ns) return PyErr_NoMemory();
        for (Py_ssize_t i = self->cap; i < cap; i++) ns[i] = (dslot){NULL, NULL, 0, -1, -1};
        self->slots = ns;
        self->cap = cap;
    }
    if (n > self->n) self->n = n;
    PyObject *mism = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PyList_GET_ITEM(existing, i);
        if (!PyDict_CheckExact(d)) Py_RETURN_NONE;
        dslot *s = &self->slots[i];
        int valid = 0;
        if (s->dict == d) {
            PyObject *emb = PyDict_GetItemWithError(d, str_embedding);
            if (!emb && PyErr_Occurred()) return NULL;
            valid = emb == s->emb && (!emb || emb == Py_None || PyList_GET_SIZE(emb) == s->len);
        }
        if (!valid) {
            int r = slot_sync(self, i, d);
            if (r < 0) {
                Py_XDECREF(mism);
                return NULL;
            }
            if (r == 0) {
                Py_XDECREF(mism);
                Py_RETURN_NONE;
            }
        }
        if (s->len > 0 && s->len != L) {
            if (!mism && !(mism = PyList_New(0))) return NULL;
            PyObject *v = PyLong_FromSsize_t(s->len);
            if (!v || PyList_Append(mism, v) < 0) {
                Py_XDECREF(v);
                Py_DECREF(mism);
                return NULL;
            }
            Py_DECREF(v);
        }
    }
    for (Py_ssize_t i = n; i < self->n; i++) { /* the list got shorter */
        slot_unindex(self, i);
        drop_slot_refs(&self->slots[i]);
    }
    self->n = n;
    /* 2. the new embedding: unit-length float32 query */
    int r = read_list(self, newemb);
    if (r <= 0) {
        Py_XDECREF(mism);
        if (r < 0) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *cands = PyList_New(0);
    if (!cands) {
        Py_XDECREF(mism);
        return NULL;
    }
    int g = L <= CHRYS_MAX_DIM ? group_for(self, (uint32_t)L, 0) : -1;
    int decided = 0;
    int q_ok = g >= 0 && self->groups[g].count > 0 && normalise(self, L);
    if (q_ok) {
        decided = i8_screen(self, &self->groups[g], thr, cands);
        if (decided < 0) {
            Py_DECREF(cands);
            Py_XDECREF(mism);
            return NULL;
        }
    }
    if (q_ok && !decided) {
        /* 3. float32 screen. |float32 score - exact cosine| <= eps for unit vectors: the rows and the
         * query are rounded to float32 (2^-24 relative each) and the scan sums L products in
         * float32 before the returned hits are rescored in double. Every entry whose exact cosine
         * can reach the threshold scores >= thr - eps; every entry that can be the exact best scores
         * within 2 eps of the best returned score. */
        dgroup *gr = &self->groups[g];
        double eps = 1.2e-7 * (double)(L + 16);
        if (eps < 1e-6) eps = 1e-6;
        chrys_search_opts so;
        chrys_search_opts_init(&so);
        so.use_threshold = 1;
        so.threshold = (float)(thr - eps);
        so.n_threads = self->threads;
        uint64_t k = 8;
        chrys_hit hb[8], *hits = hb;
        int rc;
        for (;;) {
            if (k > gr->count) k = gr->count;
            if (k > CHRYS_MAX_K) k = CHRYS_MAX_K;
            so.k = (uint32_t)k;
            rc = chrys_index_search(gr->ix, 1, self->fbuf, &so, hits);
            self->searches++;
            if (rc) break;
            if (k == gr->count || k == CHRYS_MAX_K || hits[k - 1].id == CHRYS_NO_ID ||
                hits[k - 1].score < hits[0].score - 4 * eps)
                break;
            k *= 8;
            if (hits != hb) PyMem_RawFree(hits);
            hits = PyMem_RawMalloc((size_t)(k < gr->count ? k : gr->count) * sizeof *hits);
            if (!hits) {
                rc = CHRYS_NOMEM;
                break;
            }
        }
        if (!rc && hits[0].id != CHRYS_NO_ID) {
            double best = hits[0].score;
            for (uint64_t j = 0; j < k && hits[j].id != CHRYS_NO_ID; j++) {
                if (hits[j].score < best - 2 * eps) break;
                PyObject *v = PyLong_FromUnsignedLongLong(hits[j].id);
                if (!v || PyList_Append(cands, v) < 0) {
                    Py_XDECREF(v);
                    rc = -1;
                    break;
                }
                Py_DECREF(v);
            }
        }
        if (hits && hits != hb) PyMem_RawFree(hits);
        if (rc) {
            Py_DECREF(cands);
            Py_XDECREF(mism);
            if (rc > 0) raise_rc(rc, NULL);
            return NULL;
        }
        self->candidates += (uint64_t)PyList_GET_SIZE(cands);
        if (PyList_Sort(cands) < 0) {
            Py_DECREF(cands);
            Py_XDECREF(mism);
            return NULL;
        }
    }
    if (!mism) mism = PyList_New(0);
    return Py_BuildValue("(NN)", cands, mism);
}

static PyObject *Dropin_invalidate(DropinObject *self, PyObject *noargs)
{
    (void)noargs;
    Dropin_clear_all(self);
    Py_RETURN_NONE;
}

static PyObject *Dropin_stats(DropinObject *self, PyObject *noargs)
{
    (void)noargs;
    uint64_t indexed = 0;
    for (int g = 0; g < self->n_groups; g++) indexed += self->groups[g].count;
    return Py_BuildValue("{snsKsKsKsKsKsi}", "positions", self->n, "indexed", indexed, "resynced", self->resynced,
                         "searches", self->searches, "int8_decided", self->i8_decided, "candidates",
                         self->candidates, "dimensions", self->n_groups);
}

static PyObject *Dropin_set_threads(DropinObject *self, PyObject *arg)
{
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    self->threads = (unsigned)(v < 0 ? 0 : v);
    Py_RETURN_NONE;
}

static PyMethodDef Dropin_methods[] = {
    {"step", (PyCFunction)Dropin_step, METH_VARARGS, NULL},
    {"invalidate", (PyCFunction)Dropin_invalidate, METH_NOARGS, NULL},
    {"stats", (PyCFunction)Dropin_stats, METH_NOARGS, NULL},
    {"set_threads", (PyCFunction)Dropin_set_threads, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DropinType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "chrysalis._chrysalis._DropinCache",
    .tp_basicsize = sizeof(DropinObject),
    .tp_dealloc = (destructor)Dropin_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The drop-in merger's entries kept in the library between calls.",
    .tp_methods = Dropin_methods,
    .tp_new = Dropin_new,
    .tp_traverse = (traverseproc)Dropin_traverse,
    .tp_clear = (inquiry)Dropin_tp_clear,
};


/* ------------------------------------------------------------------------------------------- */
/* Store writer lock                                                                             */
/* ------------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    chrys_lock *lk;
} LockObject;

static void Lock_dealloc(LockObject *self)
{
    chrys_store_unlock(self->lk);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* _acquire(path, timeout_s: < 0 forever, 0 no wait, > 0 bounded). The GIL is released while waiting. */
static PyObject *Lock_acquire(LockObject *self, PyObject *args)
{
    PyObject *pathobj;
    double timeout;
    if (!PyArg_ParseTuple(args, "O&d", PyUnicode_FSConverter, &pathobj, &timeout)) return NULL;
    if (self->lk) {
        Py_DECREF(pathobj);
        PyErr_SetString(Error, "this lock object already holds a lock");
        return NULL;
    }
    chrys_lock *lk = NULL;
    char *msg = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = chrys_store_lock_ex(PyBytes_AS_STRING(pathobj), 0, timeout, NULL, NULL, &lk, &msg);
    Py_END_ALLOW_THREADS Py_DECREF(pathobj);
    if (rc) return raise_owned(rc, msg);
    self->lk = lk;
    Py_RETURN_NONE;
}

static PyObject *Lock_release(LockObject *self, PyObject *noargs)
{
    (void)noargs;
    chrys_store_unlock(self->lk);
    self->lk = NULL;
    Py_RETURN_NONE;
}

static PyObject *Lock_held(LockObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->lk != NULL);
}

static PyMethodDef Lock_methods[] = {
    {"_acquire", (PyCFunction)Lock_acquire, METH_VARARGS, NULL},
    {"release", (PyCFunction)Lock_release, METH_NOARGS, "Release the lock (after the save). Idempotent."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Lock_getset[] = {
    {"held", (getter)Lock_held, NULL, "Whether the lock is held.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LockType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "chrysalis._chrysalis._Lock",
    .tp_basicsize = sizeof(LockObject),
    .tp_dealloc = (destructor)Lock_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A store's writer lock (use chrysalis.store_lock).",
    .tp_methods = Lock_methods,
    .tp_getset = Lock_getset,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------------------------------- */
/* Module                                                                                        */
/* ------------------------------------------------------------------------------------------- */

static PyObject *embed_deterministic(PyObject *mod, PyObject *args)
{
    (void)mod;
    const char *text;
    Py_ssize_t len;
    unsigned int dim;
    PyObject *oo;
    if (!PyArg_ParseTuple(args, "s#IO", &text, &len, &dim, &oo)) return NULL;
    Py_buffer ob;
    if (get_wbuf(oo, &ob, (Py_ssize_t)dim * 4, "out")) return NULL;
    int rc = chrys_embed_deterministic(text, (size_t)len, dim, ob.buf);
    PyBuffer_Release(&ob);
    if (rc) return raise_rc(rc, NULL);
    Py_RETURN_NONE;
}

static PyObject *spec_parse(PyObject *mod, PyObject *args)
{
    (void)mod;
    const char *spec;
    if (!PyArg_ParseTuple(args, "s", &spec)) return NULL;
    chrys_index_spec sp = {sizeof sp};
    char *msg = NULL;
    int rc = chrys_index_spec_parse(spec, &sp, &msg);
    if (rc) return raise_owned(rc, msg);
    return Py_BuildValue("{sisIsIsOsOsO}", "kind", (int)sp.kind, "nlist", sp.nlist, "hnsw_m", sp.hnsw_m, "sq8",
                         sp.sq8 ? Py_True : Py_False, "refine", sp.refine ? Py_True : Py_False, "is_auto",
                         sp.is_auto ? Py_True : Py_False);
}

static PyObject *store_peek(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *pathobj;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &pathobj)) return NULL;
    chrys_store_meta m = {sizeof m};
    char *msg = NULL;
    int rc = chrys_store_peek(PyBytes_AS_STRING(pathobj), &m, &msg);
    Py_DECREF(pathobj);
    if (rc) return raise_owned(rc, msg);
    return Py_BuildValue("{sIsIsIsIsKsKsO}", "format_major", m.format_major, "format_minor", m.format_minor,
                         "dim", m.dim, "metric", (unsigned)m.metric, "count", (unsigned long long)m.count,
                         "file_bytes", (unsigned long long)m.file_bytes, "has_merger", m.has_merger ? Py_True : Py_False);
}

static PyObject *version(PyObject *mod, PyObject *noargs)
{
    (void)mod;
    (void)noargs;
    return PyUnicode_FromString(chrys_version());
}

static PyObject *simd(PyObject *mod, PyObject *noargs)
{
    (void)mod;
    (void)noargs;
    return PyUnicode_FromString(chrys_simd_name());
}

static PyMethodDef module_methods[] = {
    {"cosine_exact", cosine_exact, METH_VARARGS, "The original merger's cosine, bit for bit (None: not applicable)."},
    {"average_exact", average_exact, METH_VARARGS, "The original merger's weighted average (None: not applicable)."},
    {"_set_sum_mode", set_sum_mode, METH_O, NULL},
    {"_pysum", py_sum_emul, METH_VARARGS, NULL},
    {"embed_deterministic", embed_deterministic, METH_VARARGS, NULL},
    {"spec_parse", spec_parse, METH_VARARGS, NULL},
    {"store_peek", store_peek, METH_VARARGS, NULL},
    {"version", version, METH_NOARGS, NULL},
    {"simd_name", simd, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_chrysalis", "chrysalis C extension", -1,
                                       module_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__chrysalis(void)
{
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    str_embedding = PyUnicode_InternFromString("embedding");
    if (!str_embedding) goto fail;
    PyTypeObject *types[] = {&IndexType, &MergerType, &EmbedderType, &DropinType, &LockType};
    const char *names[] = {"_Index", "_Merger", "_Embedder", "_DropinCache", "_Lock"};
    for (int i = 0; i < 5; i++) {
        if (PyType_Ready(types[i]) < 0) goto fail;
        if (PyModule_AddObjectRef(m, names[i], (PyObject *)types[i]) < 0) goto fail;
    }
    PyObject *b;
    if (!(Error = new_exc(m, "Error", NULL, "Base class of every chrysalis error."))) goto fail;
    b = PyTuple_Pack(2, Error, PyExc_ValueError);
    InvalidInputError = new_exc(m, "InvalidInputError", b,
                                "Bad input: NaN/Inf, a zero vector under cosine, bad k or arguments (a ValueError).");
    Py_XDECREF(b);
    if (!InvalidInputError) goto fail;
    b = PyTuple_Pack(1, InvalidInputError);
    DimensionError = new_exc(m, "DimensionError", b, "A vector of the wrong dimension (a ValueError).");
    DuplicateIdError = new_exc(m, "DuplicateIdError", b, "An id already present, in the batch or the index (a ValueError).");
    Py_XDECREF(b);
    if (!DimensionError || !DuplicateIdError) goto fail;
    b = PyTuple_Pack(2, Error, PyExc_KeyError);
    NotFoundError = new_exc(m, "NotFoundError", b, "An id that is not present (a KeyError).");
    Py_XDECREF(b);
    b = PyTuple_Pack(2, Error, PyExc_OSError);
    StoreIOError = new_exc(m, "StoreIOError", b, "An operating-system I/O error (an OSError).");
    Py_XDECREF(b);
    b = PyTuple_Pack(1, Error);
    CorruptStoreError = new_exc(m, "CorruptStoreError", b, "A damaged or truncated store file.");
    UnsupportedFormatError =
        new_exc(m, "UnsupportedFormatError", b, "A valid store this library cannot read (newer format).");
    Py_XDECREF(b);
    b = PyTuple_Pack(2, Error, PyExc_ValueError);
    LimitError = new_exc(m, "LimitError", b, "A size or count beyond a documented cap (a ValueError).");
    Py_XDECREF(b);
    b = PyTuple_Pack(1, Error);
    StoreLockedError = new_exc(m, "StoreLockedError", b, "Another writer holds the store's lock (no wait, or the wait timed out).");
    Py_XDECREF(b);
    if (!NotFoundError || !StoreIOError || !CorruptStoreError || !UnsupportedFormatError || !LimitError ||
        !StoreLockedError)
        goto fail;
    PyModule_AddIntConstant(m, "MAX_DIM", CHRYS_MAX_DIM);
    PyModule_AddIntConstant(m, "MAX_K", CHRYS_MAX_K);
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}

/*
 * _chrysalis.c: the CPython extension under the chrysalis package (module init, exceptions, shared
 * helpers, module functions), written over the public C API (include/chrysalis.h) only. The types
 * live one per file beside it (_index.c, _merger.c, _embedder.c, _dropin.c, _lock.c; the list is in
 * _chrysalis.h, with the declarations they share).
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
 */
#include "_chrysalis.h"

/* ------------------------------------------------------------------------------------------- */
/* Exceptions                                                                                    */
/* ------------------------------------------------------------------------------------------- */

PyObject *ext_Error, *ext_NotFoundError;
static PyObject *InvalidInputError, *DimensionError, *DuplicateIdError, *StoreIOError, *CorruptStoreError,
    *UnsupportedFormatError, *LimitError, *StoreLockedError;

/* Raise the exception for a library code, with msg (or the code's text). Returns NULL. */
PyObject *ext_raise_rc(int rc, const char *msg)
{
    if (!msg || !*msg) msg = chrys_errstr(rc);
    PyObject *type = ext_Error;
    switch (rc & 0xff) {
    case CHRYS_NOMEM: return PyErr_NoMemory();
    case CHRYS_INVALID: type = InvalidInputError; break;
    case CHRYS_DIM: type = DimensionError; break;
    case CHRYS_EXISTS: type = DuplicateIdError; break;
    case CHRYS_NOTFOUND: type = ext_NotFoundError; break;
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
PyObject *ext_raise_owned(int rc, char *msg)
{
    ext_raise_rc(rc, msg);
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
int ext_get_buf(PyObject *o, Py_buffer *b, Py_ssize_t want, const char *what)
{
    if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (want >= 0 && b->len != want) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd bytes, got %zd", what, want, b->len);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

int ext_get_wbuf(PyObject *o, Py_buffer *b, Py_ssize_t want, const char *what)
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
const char **ext_meta_array(PyObject *list, Py_ssize_t n)
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

int ext_dict_set_u64(PyObject *d, const char *k, uint64_t v)
{
    PyObject *o = PyLong_FromUnsignedLongLong(v);
    int r = o ? PyDict_SetItemString(d, k, o) : -1;
    Py_XDECREF(o);
    return r;
}

int ext_dict_set_f(PyObject *d, const char *k, double v)
{
    PyObject *o = PyFloat_FromDouble(v);
    int r = o ? PyDict_SetItemString(d, k, o) : -1;
    Py_XDECREF(o);
    return r;
}

int ext_dict_set_s(PyObject *d, const char *k, const char *v)
{
    PyObject *o = PyUnicode_FromString(v);
    int r = o ? PyDict_SetItemString(d, k, o) : -1;
    Py_XDECREF(o);
    return r;
}

int ext_allow_cb(uint64_t id, void *ctx)
{
    const ext_allow_set *s = ctx;
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->ids[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < s->n && s->ids[lo] == id;
}

/* Writer-preferring: with readers searching back to back, a reader-preferring lock (glibc's
 * default) would starve a writer indefinitely. */
void ext_rw_init(pthread_rwlock_t *rw)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(rw, &a);
    pthread_rwlockattr_destroy(&a);
}

void ext_rd_lock(pthread_rwlock_t *rw)
{
    Py_BEGIN_ALLOW_THREADS pthread_rwlock_rdlock(rw);
    Py_END_ALLOW_THREADS
}
void ext_wr_lock(pthread_rwlock_t *rw)
{
    Py_BEGIN_ALLOW_THREADS pthread_rwlock_wrlock(rw);
    Py_END_ALLOW_THREADS
}
void ext_rw_unlock(pthread_rwlock_t *rw) { pthread_rwlock_unlock(rw); }

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
    if (ext_get_wbuf(oo, &ob, (Py_ssize_t)dim * 4, "out")) return NULL;
    int rc = chrys_embed_deterministic(text, (size_t)len, dim, ob.buf);
    PyBuffer_Release(&ob);
    if (rc) return ext_raise_rc(rc, NULL);
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
    if (rc) return ext_raise_owned(rc, msg);
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
    if (rc) return ext_raise_owned(rc, msg);
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
    {"cosine_exact", ext_cosine_exact, METH_VARARGS, "The original merger's cosine, bit for bit (None: not applicable)."},
    {"average_exact", ext_average_exact, METH_VARARGS, "The original merger's weighted average (None: not applicable)."},
    {"_set_sum_mode", ext_set_sum_mode, METH_O, NULL},
    {"_pysum", ext_py_sum_emul, METH_VARARGS, NULL},
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
    ext_str_embedding = PyUnicode_InternFromString("embedding");
    if (!ext_str_embedding) goto fail;
    PyTypeObject *types[] = {&ext_IndexType, &ext_MergerType, &ext_EmbedderType, &ext_DropinType, &ext_LockType};
    const char *names[] = {"_Index", "_Merger", "_Embedder", "_DropinCache", "_Lock"};
    for (int i = 0; i < 5; i++) {
        if (PyType_Ready(types[i]) < 0) goto fail;
        if (PyModule_AddObjectRef(m, names[i], (PyObject *)types[i]) < 0) goto fail;
    }
    PyObject *b;
    if (!(ext_Error = new_exc(m, "Error", NULL, "Base class of every chrysalis error."))) goto fail;
    b = PyTuple_Pack(2, ext_Error, PyExc_ValueError);
    InvalidInputError = new_exc(m, "InvalidInputError", b,
                                "Bad input: NaN/Inf, a zero vector under cosine, bad k or arguments (a ValueError).");
    Py_XDECREF(b);
    if (!InvalidInputError) goto fail;
    b = PyTuple_Pack(1, InvalidInputError);
    DimensionError = new_exc(m, "DimensionError", b, "A vector of the wrong dimension (a ValueError).");
    DuplicateIdError = new_exc(m, "DuplicateIdError", b, "An id already present, in the batch or the index (a ValueError).");
    Py_XDECREF(b);
    if (!DimensionError || !DuplicateIdError) goto fail;
    b = PyTuple_Pack(2, ext_Error, PyExc_KeyError);
    ext_NotFoundError = new_exc(m, "NotFoundError", b, "An id that is not present (a KeyError).");
    Py_XDECREF(b);
    b = PyTuple_Pack(2, ext_Error, PyExc_OSError);
    StoreIOError = new_exc(m, "StoreIOError", b, "An operating-system I/O error (an OSError).");
    Py_XDECREF(b);
    b = PyTuple_Pack(1, ext_Error);
    CorruptStoreError = new_exc(m, "CorruptStoreError", b, "A damaged or truncated store file.");
    UnsupportedFormatError =
        new_exc(m, "UnsupportedFormatError", b, "A valid store this library cannot read (newer format).");
    Py_XDECREF(b);
    b = PyTuple_Pack(2, ext_Error, PyExc_ValueError);
    LimitError = new_exc(m, "LimitError", b, "A size or count beyond a documented cap (a ValueError).");
    Py_XDECREF(b);
    b = PyTuple_Pack(1, ext_Error);
    StoreLockedError = new_exc(m, "StoreLockedError", b, "Another writer holds the store's lock (no wait, or the wait timed out).");
    Py_XDECREF(b);
    if (!ext_NotFoundError || !StoreIOError || !CorruptStoreError || !UnsupportedFormatError || !LimitError ||
        !StoreLockedError)
        goto fail;
    PyModule_AddIntConstant(m, "MAX_DIM", CHRYS_MAX_DIM);
    PyModule_AddIntConstant(m, "MAX_K", CHRYS_MAX_K);
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}

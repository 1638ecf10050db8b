/*
 * _index.c: the _Index type (chrysalis.Index's base): one chrys_index handle and its rwlock.
 */
#include "_chrysalis.h"

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

static PyObject *Index_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)args;
    (void)kw;
    IndexObject *self = (IndexObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    ext_rw_init(&self->rw);
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
        PyErr_SetString(ext_Error, "the index is not initialised (call Index(dim) or Index.load)");
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
    if (rc) return ext_raise_owned(rc, msg);
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
    if (rc) return ext_raise_owned(rc, msg);
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
    if (rc) return ext_raise_owned(rc, msg);
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
    ext_rd_lock(&self->rw);
    Py_BEGIN_ALLOW_THREADS rc = chrys_index_save_buffer(self->ix, &buf, &size, &msg);
    Py_END_ALLOW_THREADS ext_rw_unlock(&self->rw);
    if (rc) return ext_raise_owned(rc, msg);
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
    ext_rd_lock(&self->rw);
    Py_BEGIN_ALLOW_THREADS rc = chrys_index_save(self->ix, PyBytes_AS_STRING(pathobj), &msg);
    Py_END_ALLOW_THREADS ext_rw_unlock(&self->rw);
    Py_DECREF(pathobj);
    if (rc) return ext_raise_owned(rc, msg);
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
        PyErr_SetString(ext_Error, "this index was opened with mmap=True and is read-only");
        return NULL;
    }
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(self->ix, &info);
    Py_buffer vb, ib = {0}, ob;
    if (ext_get_buf(vo, &vb, n * (Py_ssize_t)info.dim * 4, "vectors")) return NULL;
    if (io != Py_None && ext_get_buf(io, &ib, n * 8, "ids")) {
        PyBuffer_Release(&vb);
        return NULL;
    }
    if (ext_get_wbuf(oo, &ob, n * 8, "out_ids")) {
        PyBuffer_Release(&vb);
        if (io != Py_None) PyBuffer_Release(&ib);
        return NULL;
    }
    const char **meta = NULL;
    if (mo != Py_None && !(meta = ext_meta_array(mo, n))) {
        PyBuffer_Release(&vb);
        if (io != Py_None) PyBuffer_Release(&ib);
        PyBuffer_Release(&ob);
        return NULL;
    }
    uint64_t *ids = ob.buf;
    int rc;
    char *msg = NULL;
    ext_wr_lock(&self->rw);
    if (io != Py_None) memcpy(ids, ib.buf, (size_t)n * 8);
    else
        for (Py_ssize_t i = 0; i < n; i++) ids[i] = self->next_id + (uint64_t)i;
    Py_BEGIN_ALLOW_THREADS rc = chrys_index_add(self->ix, (size_t)n, ids, vb.buf, meta);
    Py_END_ALLOW_THREADS if (rc) msg = PyMem_RawMalloc(1024);
    if (rc && msg) snprintf(msg, 1024, "%s", chrys_index_errmsg(self->ix));
    if (!rc)
        for (Py_ssize_t i = 0; i < n; i++)
            if (ids[i] + 1 > self->next_id) self->next_id = ids[i] + 1;
    ext_rw_unlock(&self->rw);
    PyBuffer_Release(&vb);
    if (io != Py_None) PyBuffer_Release(&ib);
    PyBuffer_Release(&ob);
    PyMem_Free(meta);
    if (rc) {
        ext_raise_rc(rc, msg);
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
    if (ext_get_buf(qo, &qb, nq * (Py_ssize_t)info.dim * 4, "queries")) return NULL;
    ext_allow_set as = {0};
    if (fo != Py_None) {
        if (ext_get_buf(fo, &fb, -1, "filter")) {
            PyBuffer_Release(&qb);
            return NULL;
        }
        as.ids = fb.buf;
        as.n = (size_t)fb.len / 8;
        o.allow = ext_allow_cb;
        o.allow_ctx = &as;
    }
    if (ext_get_wbuf(so, &sb, nq * (Py_ssize_t)k * 4, "scores")) goto fail_q;
    if (ext_get_wbuf(io, &ib, nq * (Py_ssize_t)k * 8, "ids")) {
        PyBuffer_Release(&sb);
        goto fail_q;
    }
    size_t nh = (size_t)nq * k;
    chrys_hit *hits = PyMem_RawMalloc((nh ? nh : 1) * sizeof *hits);
    int rc = CHRYS_NOMEM;
    char emsg[512] = "";
    if (hits) {
        ext_rd_lock(&self->rw);
        Py_BEGIN_ALLOW_THREADS rc = chrys_index_search(self->ix, (size_t)nq, qb.buf, &o, hits);
        Py_END_ALLOW_THREADS if (rc) snprintf(emsg, sizeof emsg, "%s", chrys_index_errmsg(self->ix));
        ext_rw_unlock(&self->rw);
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
    if (rc) return ext_raise_rc(rc, *emsg ? emsg : rc == CHRYS_INVALID ? "invalid search arguments or queries" : NULL);
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
    if (ext_get_buf(qo, &qb, nq * (Py_ssize_t)info.dim * 4, "queries")) return NULL;
    if (ext_get_buf(io, &ib, nq * m * 8, "ids")) {
        PyBuffer_Release(&qb);
        return NULL;
    }
    if (ext_get_wbuf(oo, &ob, nq * m * 8, "scores")) {
        PyBuffer_Release(&qb);
        PyBuffer_Release(&ib);
        return NULL;
    }
    int rc;
    ext_rd_lock(&self->rw);
    Py_BEGIN_ALLOW_THREADS rc = chrys_index_score(self->ix, (size_t)nq, qb.buf, (size_t)m, ib.buf, ob.buf);
    Py_END_ALLOW_THREADS ext_rw_unlock(&self->rw);
    PyBuffer_Release(&qb);
    PyBuffer_Release(&ib);
    PyBuffer_Release(&ob);
    if (rc) return ext_raise_rc(rc, rc == CHRYS_NOTFOUND ? "score: an id is not in the index"
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
        PyErr_SetString(ext_Error, "this index was opened with mmap=True and is read-only");
        return NULL;
    }
    Py_buffer ib;
    if (ext_get_buf(io, &ib, n * 8, "ids")) return NULL;
    const uint64_t *ids = ib.buf;
    int rc = CHRYS_OK;
    Py_ssize_t bad = -1;
    ext_wr_lock(&self->rw);
    for (Py_ssize_t i = 0; i < n && bad < 0; i++)
        if (!chrys_index_contains(self->ix, ids[i])) bad = i;
    if (bad < 0)
        for (Py_ssize_t i = 0; i < n && !rc; i++) rc = chrys_index_remove(self->ix, ids[i]);
    ext_rw_unlock(&self->rw);
    uint64_t bad_id = bad >= 0 ? ids[bad] : 0;
    PyBuffer_Release(&ib);
    if (bad >= 0) {
        PyErr_Format(ext_NotFoundError, "row %zd: id %llu is not in the index", bad, (unsigned long long)bad_id);
        return NULL;
    }
    if (rc) return ext_raise_rc(rc, NULL);
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
        PyErr_SetString(ext_Error, "this index was opened with mmap=True and is read-only");
        return NULL;
    }
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(self->ix, &info);
    Py_buffer ib, vb;
    if (ext_get_buf(io, &ib, n * 8, "ids")) return NULL;
    if (ext_get_buf(vo, &vb, n * (Py_ssize_t)info.dim * 4, "vectors")) {
        PyBuffer_Release(&ib);
        return NULL;
    }
    const uint64_t *ids = ib.buf;
    const float *v = vb.buf;
    int rc = CHRYS_OK;
    Py_ssize_t bad = -1;
    char msg[512] = "";
    ext_wr_lock(&self->rw);
    for (Py_ssize_t i = 0; i < n && bad < 0; i++)
        if (!chrys_index_contains(self->ix, ids[i])) bad = i;
    if (bad < 0) {
        Py_BEGIN_ALLOW_THREADS for (Py_ssize_t i = 0; i < n && !rc; i++) rc =
            chrys_index_update(self->ix, ids[i], v + (size_t)i * info.dim);
        Py_END_ALLOW_THREADS if (rc) snprintf(msg, sizeof msg, "%s", chrys_index_errmsg(self->ix));
    }
    ext_rw_unlock(&self->rw);
    uint64_t bad_id = bad >= 0 ? ids[bad] : 0;
    PyBuffer_Release(&ib);
    PyBuffer_Release(&vb);
    if (bad >= 0) {
        PyErr_Format(ext_NotFoundError, "row %zd: id %llu is not in the index", bad, (unsigned long long)bad_id);
        return NULL;
    }
    if (rc) return ext_raise_rc(rc, msg);
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
    if (ext_get_buf(io, &ib, n * 8, "ids")) return NULL;
    if (ext_get_wbuf(oo, &ob, n * (Py_ssize_t)info.dim * 4, "out")) {
        PyBuffer_Release(&ib);
        return NULL;
    }
    const uint64_t *ids = ib.buf;
    Py_ssize_t bad = -1;
    ext_rd_lock(&self->rw);
    for (Py_ssize_t i = 0; i < n && bad < 0; i++)
        if (chrys_index_get(self->ix, ids[i], (float *)ob.buf + (size_t)i * info.dim)) bad = i;
    ext_rw_unlock(&self->rw);
    uint64_t bad_id = bad >= 0 ? ids[bad] : 0;
    PyBuffer_Release(&ib);
    PyBuffer_Release(&ob);
    if (bad >= 0) {
        PyErr_Format(ext_NotFoundError, "row %zd: id %llu is not in the index", bad, (unsigned long long)bad_id);
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
    ext_rd_lock(&self->rw);
    int rc = chrys_index_get_meta(self->ix, id, &meta);
    if (!rc) out = meta ? PyUnicode_FromString(meta) : Py_NewRef(Py_None);
    ext_rw_unlock(&self->rw);
    if (rc) {
        PyErr_Format(ext_NotFoundError, "id %llu is not in the index", id);
        return NULL;
    }
    return out;
}

static PyObject *Index_contains_c(IndexObject *self, PyObject *args)
{
    unsigned long long id;
    if (need_ix(self)) return NULL;
    if (!PyArg_ParseTuple(args, "K", &id)) return NULL;
    ext_rd_lock(&self->rw);
    int r = chrys_index_contains(self->ix, id);
    ext_rw_unlock(&self->rw);
    return PyBool_FromLong(r);
}

static PyObject *Index_ids_c(IndexObject *self, PyObject *args)
{
    PyObject *oo;
    if (need_ix(self)) return NULL;
    if (!PyArg_ParseTuple(args, "O", &oo)) return NULL;
    Py_buffer ob;
    if (PyObject_GetBuffer(oo, &ob, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) return NULL;
    ext_rd_lock(&self->rw);
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(self->ix, &info);
    int ok = (uint64_t)ob.len == info.count * 8;
    size_t n_ids;
    if (ok) ok = chrys_index_get_ids(self->ix, ob.buf, info.count, &n_ids) == CHRYS_OK;
    ext_rw_unlock(&self->rw);
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
    ext_rd_lock(&self->rw);
    chrys_index_info info = {sizeof info};
    chrys_index_get_info(self->ix, &info);
    ext_rw_unlock(&self->rw);
    return (Py_ssize_t)info.count;
}

static PyObject *Index_info_c(IndexObject *self, PyObject *noargs)
{
    (void)noargs;
    if (need_ix(self)) return NULL;
    chrys_index_info in = {sizeof in};
    ext_rd_lock(&self->rw);
    chrys_index_get_info(self->ix, &in);
    ext_rw_unlock(&self->rw);
    static const char *metrics[] = {"cosine", "ip", "l2"};
    static const char *kinds[] = {"flat", "ivf", "hnsw"};
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    if (ext_dict_set_u64(d, "dim", in.dim) || ext_dict_set_s(d, "metric", metrics[in.metric % 3]) ||
        ext_dict_set_s(d, "kind", kinds[in.kind % 3]) || ext_dict_set_s(d, "spec", in.spec) ||
        ext_dict_set_u64(d, "count", in.count) || ext_dict_set_u64(d, "memory_bytes", in.memory_bytes) ||
        ext_dict_set_u64(d, "vector_bytes", in.vector_bytes) || ext_dict_set_u64(d, "mapped_bytes", in.mapped_bytes) ||
        ext_dict_set_u64(d, "seed", in.seed) || ext_dict_set_u64(d, "nlist", in.nlist) || ext_dict_set_u64(d, "sq8", (uint64_t)in.sq8) ||
        PyDict_SetItemString(d, "planned", in.planned ? Py_True : Py_False) ||
        ext_dict_set_s(d, "plan_reason", in.plan_reason) || ext_dict_set_f(d, "imbalance", in.imbalance) ||
        ext_dict_set_f(d, "drift", in.drift) || ext_dict_set_u64(d, "trained_on", in.trained_on) ||
        ext_dict_set_u64(d, "hnsw_m", in.hnsw_m) || ext_dict_set_u64(d, "ef_construction", in.ef_construction) ||
        ext_dict_set_f(d, "max_level", in.max_level) || ext_dict_set_u64(d, "deleted", in.deleted) ||
        PyDict_SetItemString(d, "mmap", self->readonly ? Py_True : Py_False) ||
        ext_dict_set_s(d, "simd", chrys_simd_name())) {
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
    ext_wr_lock(&self->rw);
    Py_BEGIN_ALLOW_THREADS rc = chrys_index_compact(self->ix);
    Py_END_ALLOW_THREADS ext_rw_unlock(&self->rw);
    if (rc) return ext_raise_rc(rc, NULL);
    Py_RETURN_NONE;
}

static PyObject *Index_retrain_c(IndexObject *self, PyObject *noargs)
{
    (void)noargs;
    if (need_ix(self)) return NULL;
    int rc;
    char msg[512] = "";
    ext_wr_lock(&self->rw);
    Py_BEGIN_ALLOW_THREADS rc = chrys_index_retrain(self->ix);
    Py_END_ALLOW_THREADS if (rc) snprintf(msg, sizeof msg, "%s", chrys_index_errmsg(self->ix));
    ext_rw_unlock(&self->rw);
    if (rc) return ext_raise_rc(rc, msg);
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

PyTypeObject ext_IndexType = {
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

/*
 * _merger.c: the _Merger type (chrysalis.Merger's base): one chrys_merger handle and its rwlock.
 */
#include "_chrysalis.h"

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
    ext_rw_init(&self->rw);
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
        PyErr_SetString(ext_Error, "the merger is not initialised (call Merger(dim=...) or Merger.open)");
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
    if (rc) return ext_raise_owned(rc, msg);
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
    if (rc) return ext_raise_owned(rc, msg);
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
    ext_wr_lock(&self->rw);
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
    ext_rw_unlock(&self->rw);
    if (rc < 0) return NULL;
    if (rc) return ext_raise_rc(rc, msg);
    Py_RETURN_NONE;
}

static PyObject *opts_to_dict(const chrys_merge_opts *o)
{
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    if (ext_dict_set_u64(d, "dim", o->dim) || ext_dict_set_f(d, "threshold", o->threshold) ||
        ext_dict_set_f(d, "weight_old", o->weight_old) || ext_dict_set_f(d, "weight_new", o->weight_new) ||
        ext_dict_set_s(d, "variant", o->variant == CHRYS_MERGE_SKILL ? "skill" : "embedding") ||
        ext_dict_set_u64(d, "renormalize", (uint64_t)o->renormalize) || ext_dict_set_u64(d, "mean_update", (uint64_t)o->mean_update) ||
        ext_dict_set_u64(d, "skip_invalid", (uint64_t)o->skip_invalid) || ext_dict_set_u64(d, "n_threads", o->n_threads) ||
        ext_dict_set_u64(d, "batch_size", o->batch_size) || ext_dict_set_f(d, "slow_search_s", o->slow_search_s) ||
        ext_dict_set_u64(d, "auto_threshold", o->auto_threshold) || ext_dict_set_u64(d, "memory_budget", o->memory_budget) ||
        ext_dict_set_u64(d, "exact", (uint64_t)o->exact) || ext_dict_set_u64(d, "nprobe", o->nprobe) ||
        ext_dict_set_f(d, "confirm_margin", o->confirm_margin) || ext_dict_set_u64(d, "verify", (uint64_t)o->verify) ||
        ext_dict_set_u64(d, "ef_search", o->ef_search) || ext_dict_set_u64(d, "ef_construction", o->ef_construction)) {
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
    ext_rd_lock(&self->rw);
    chrys_merger_get_opts(self->m, &o);
    ext_rw_unlock(&self->rw);
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
    if (ext_get_buf(vo, &vb, n * (Py_ssize_t)dim * 4, "vectors")) return NULL;
    if (have_ids && ext_get_buf(io, &ib, n * 8, "ids")) {
        PyBuffer_Release(&vb);
        return NULL;
    }
    if (have_empty && ext_get_buf(eo, &eb, n, "empty")) {
        PyBuffer_Release(&vb);
        if (have_ids) PyBuffer_Release(&ib);
        return NULL;
    }
    int got = 0;
    if (ext_get_wbuf(oe, &be, n * 8, "out_entry") == 0) {
        got = 1;
        if (ext_get_wbuf(os, &bs, n * 8, "out_score") == 0) {
            got = 2;
            if (ext_get_wbuf(oa, &ba, n * 4, "out_action") == 0) got = 3;
        }
    }
    const char **meta = NULL;
    chrys_merge_record *recs = NULL;
    chrys_merge_result *res = NULL;
    PyObject *ret = NULL;
    if (got < 3) goto done;
    if (mo != Py_None && !(meta = ext_meta_array(mo, n))) goto done;
    recs = PyMem_Calloc((size_t)(n ? n : 1), sizeof *recs);
    res = PyMem_Calloc((size_t)(n ? n : 1), sizeof *res);
    if (!recs || !res) {
        PyErr_NoMemory();
        goto done;
    }
    ext_wr_lock(&self->rw);
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
    Py_END_ALLOW_THREADS ext_rw_unlock(&self->rw);
    if (rc) {
        ext_raise_rc(rc, msg);
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
    ext_rd_lock(&self->rw);
    chrys_merger_get_stats(self->m, &s);
    ext_rw_unlock(&self->rw);
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    if (ext_dict_set_u64(d, "entries", s.entries) || ext_dict_set_u64(d, "records", s.records) ||
        ext_dict_set_u64(d, "merged", s.merged) || ext_dict_set_u64(d, "added", s.added) ||
        ext_dict_set_u64(d, "skipped", s.skipped) || ext_dict_set_u64(d, "runs", s.runs) ||
        ext_dict_set_u64(d, "next_record_id", s.next_record_id) || ext_dict_set_u64(d, "approx_records", s.approx_records) ||
        ext_dict_set_u64(d, "confirmations", s.confirmations) || ext_dict_set_u64(d, "verified", s.verified) ||
        ext_dict_set_u64(d, "disagreements", s.disagreements) || ext_dict_set_u64(d, "relinks", s.relinks) ||
        ext_dict_set_u64(d, "searches", __atomic_exchange_n(&self->n_searches, 0, __ATOMIC_RELAXED)) ||
        ext_dict_set_u64(d, "slow_searches", __atomic_exchange_n(&self->n_slow, 0, __ATOMIC_RELAXED))) {
        Py_DECREF(d);
        return NULL;
    }
    /* which path decides: the exact scan (Flat) or the planner's graph, as the CLI summary says */
    chrys_index_info ii = {sizeof ii};
    ext_rd_lock(&self->rw);
    chrys_index_get_info(chrys_merger_index(self->m), &ii);
    ext_rw_unlock(&self->rw);
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
    ext_rd_lock(&self->rw);
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
    ext_rw_unlock(&self->rw);
    if (ob.buf) PyBuffer_Release(&ob);
    return list;
}

static PyObject *Merger_lookup_c(MergerObject *self, PyObject *args)
{
    unsigned long long rid;
    if (need_m(self)) return NULL;
    if (!PyArg_ParseTuple(args, "K", &rid)) return NULL;
    uint64_t e;
    ext_rd_lock(&self->rw);
    int rc = chrys_merger_lookup(self->m, rid, &e);
    ext_rw_unlock(&self->rw);
    if (rc) {
        PyErr_Format(ext_NotFoundError, "record id %llu was not merged", rid);
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(e);
}

static PyObject *Merger_history_c(MergerObject *self, PyObject *noargs)
{
    (void)noargs;
    if (need_m(self)) return NULL;
    size_t n = 0;
    ext_rd_lock(&self->rw);
    chrys_merger_get_history(self->m, NULL, 0, &n);
    chrys_merge_run *rows = PyMem_RawMalloc((n ? n : 1) * sizeof *rows);
    if (rows) chrys_merger_get_history(self->m, rows, n, &n);
    ext_rw_unlock(&self->rw);
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
    ext_rd_lock(&self->rw);
    Py_BEGIN_ALLOW_THREADS rc = chrys_merger_save(self->m, PyBytes_AS_STRING(pathobj), &msg);
    Py_END_ALLOW_THREADS ext_rw_unlock(&self->rw);
    Py_DECREF(pathobj);
    if (rc) return ext_raise_owned(rc, msg);
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
    if (ext_get_buf(qo, &qb, nq * (Py_ssize_t)o.dim * 4, "queries")) return NULL;
    if (ext_get_wbuf(so, &sb, nq * (Py_ssize_t)k * 4, "scores")) {
        PyBuffer_Release(&qb);
        return NULL;
    }
    if (ext_get_wbuf(io, &ib, nq * (Py_ssize_t)k * 8, "ids")) {
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
        ext_rd_lock(&self->rw);
        Py_BEGIN_ALLOW_THREADS rc = chrys_index_search(chrys_merger_index(self->m), (size_t)nq, qb.buf, &so2, hits);
        Py_END_ALLOW_THREADS if (rc) snprintf(emsg, sizeof emsg, "%s", chrys_index_errmsg(chrys_merger_index(self->m)));
        ext_rw_unlock(&self->rw);
        for (size_t i = 0; !rc && i < nh; i++) {
            ((float *)sb.buf)[i] = hits[i].score;
            ((int64_t *)ib.buf)[i] = hits[i].id == CHRYS_NO_ID ? -1 : (int64_t)hits[i].id;
        }
        PyMem_RawFree(hits);
    }
    PyBuffer_Release(&qb);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&ib);
    if (rc) return ext_raise_rc(rc, emsg);
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

PyTypeObject ext_MergerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "chrysalis._chrysalis._Merger",
    .tp_basicsize = sizeof(MergerObject),
    .tp_dealloc = (destructor)Merger_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Low-level merger handle (use chrysalis.Merger).",
    .tp_methods = Merger_methods,
    .tp_new = Merger_new,
    .tp_weaklistoffset = offsetof(MergerObject, weakrefs),
};

/*
 * _dropin.c: the drop-in merger's cache, _DropinCache.
 *
 * The drop-in merger's cache (_DropinCache) keeps, for each position of the caller's entry list,
 * a strong reference to the entry dict and to its "embedding" list, that list's length, and the
 * entry's unit-length float32 copy inside a Flat inner-product index per dimension. A call
 * revalidates the cache by identity and length in one C pass and re-reads only the positions that
 * changed. Candidates come from the float32 index with a margin that bounds float32 rounding;
 * the Python layer then decides with the exact double-precision cosine of the original.
 */
#include "_chrysalis.h"

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

PyObject *ext_str_embedding;

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
    PyObject *emb = PyDict_GetItemWithError(d, ext_str_embedding);
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
        ext_raise_rc(rc, "drop-in cache: the library refused an entry");
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

/* Room for n slots (the new ones unknown). Returns 0 or -1 (MemoryError set). */
static int slots_reserve(DropinObject *self, Py_ssize_t n)
{
    if (n <= self->cap) return 0;
    Py_ssize_t cap = self->cap ? self->cap : 64;
    while (cap < n) cap *= 2;
    dslot *ns = PyMem_Realloc(self->slots, (size_t)cap * sizeof *ns);
    if (!ns) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = self->cap; i < cap; i++) ns[i] = (dslot){NULL, NULL, 0, -1, -1};
    self->slots = ns;
    self->cap = cap;
    return 0;
}

/* step()'s first part: revalidate the cache against the list, position by position (re-reading the
 * positions that changed, dropping those past its end), and collect in *mism (created on first
 * use) the lengths of the non-empty entries whose length differs from L, in list order.
 * Returns 1 ok, 0 unsupported (use the Python path), -1 error; *mism is released unless 1. */
static int revalidate(DropinObject *self, PyObject *existing, Py_ssize_t L, PyObject **mism)
{
    Py_ssize_t n = PyList_GET_SIZE(existing);
    if (slots_reserve(self, n) < 0) return -1;
    if (n > self->n) self->n = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PyList_GET_ITEM(existing, i);
        if (!PyDict_CheckExact(d)) {
            Py_CLEAR(*mism);
            return 0;
        }
        dslot *s = &self->slots[i];
        int valid = 0;
        if (s->dict == d) {
            PyObject *emb = PyDict_GetItemWithError(d, ext_str_embedding);
            if (!emb && PyErr_Occurred()) {
                Py_CLEAR(*mism);
                return -1;
            }
            valid = emb == s->emb && (!emb || emb == Py_None || PyList_GET_SIZE(emb) == s->len);
        }
        if (!valid) {
            int r = slot_sync(self, i, d);
            if (r <= 0) {
                Py_CLEAR(*mism);
                return r;
            }
        }
        if (s->len > 0 && s->len != L) {
            if (!*mism && !(*mism = PyList_New(0))) return -1;
            PyObject *v = PyLong_FromSsize_t(s->len);
            if (!v || PyList_Append(*mism, v) < 0) {
                Py_XDECREF(v);
                Py_CLEAR(*mism);
                return -1;
            }
            Py_DECREF(v);
        }
    }
    for (Py_ssize_t i = n; i < self->n; i++) { /* the list got shorter */
        slot_unindex(self, i);
        drop_slot_refs(&self->slots[i]);
    }
    self->n = n;
    return 1;
}

/* step()'s float32 screen (when the int8 screen did not decide), over group gr with the query in
 * fbuf. |float32 score - exact cosine| <= eps for unit vectors: the rows and the query are rounded
 * to float32 (2^-24 relative each) and the scan sums L products in float32 before the returned
 * hits are rescored in double. Every entry whose exact cosine can reach the threshold scores
 * >= thr - eps; every entry that can be the exact best scores within 2 eps of the best returned
 * score. Appends those positions to cands, sorted. Returns 0 or -1 (exception set). */
static int f32_screen(DropinObject *self, dgroup *gr, Py_ssize_t L, double thr, PyObject *cands)
{
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
        if (rc > 0) ext_raise_rc(rc, NULL);
        return -1;
    }
    self->candidates += (uint64_t)PyList_GET_SIZE(cands);
    if (PyList_Sort(cands) < 0) return -1;
    return 0;
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
    /* 1. revalidate the cache against the list, position by position */
    PyObject *mism = NULL;
    int r = revalidate(self, existing, L, &mism);
    if (r <= 0) {
        if (r < 0) return NULL;
        Py_RETURN_NONE;
    }
    /* 2. the new embedding: unit-length float32 query */
    r = read_list(self, newemb);
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
    /* 3. the float32 screen */
    if (q_ok && !decided && f32_screen(self, &self->groups[g], L, thr, cands) < 0) {
        Py_DECREF(cands);
        Py_XDECREF(mism);
        return NULL;
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

PyTypeObject ext_DropinType = {
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

/*
 * _dropin_arith.c: the drop-in merger's exact arithmetic (module functions cosine_exact, average_exact).
 */
#include "_chrysalis.h"

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

PyObject *ext_set_sum_mode(PyObject *mod, PyObject *arg)
{
    (void)mod;
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    sum_mode = (int)v;
    Py_RETURN_NONE;
}

/* _pysum(list of floats, mode) -> float: the C emulation, for the import-time check. */
PyObject *ext_py_sum_emul(PyObject *mod, PyObject *args)
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
PyObject *ext_cosine_exact(PyObject *mod, PyObject *args)
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
PyObject *ext_average_exact(PyObject *mod, PyObject *args)
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

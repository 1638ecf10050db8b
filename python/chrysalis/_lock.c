/*
 * _lock.c: the _Lock type, a store's writer lock (chrysalis.store_lock).
 */
#include "_chrysalis.h"

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
        PyErr_SetString(ext_Error, "this lock object already holds a lock");
        return NULL;
    }
    chrys_lock *lk = NULL;
    char *msg = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = chrys_store_lock_ex(PyBytes_AS_STRING(pathobj), 0, timeout, NULL, NULL, &lk, &msg);
    Py_END_ALLOW_THREADS Py_DECREF(pathobj);
    if (rc) return ext_raise_owned(rc, msg);
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

PyTypeObject ext_LockType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "chrysalis._chrysalis._Lock",
    .tp_basicsize = sizeof(LockObject),
    .tp_dealloc = (destructor)Lock_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A store's writer lock (use chrysalis.store_lock).",
    .tp_methods = Lock_methods,
    .tp_getset = Lock_getset,
    .tp_new = PyType_GenericNew,
};

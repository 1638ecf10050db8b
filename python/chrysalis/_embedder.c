/*
 * _embedder.c: the _Embedder type (chrysalis.Embedder's base): one chrys_embedder handle.
 */
#include "_chrysalis.h"

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
    Py_END_ALLOW_THREADS if (rc) return ext_raise_owned(rc, msg);
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
        PyErr_SetString(ext_Error, "the embedder is not initialised");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &lo, &oo)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(lo);
    const char **texts = ext_meta_array(lo, n);
    if (!texts) return NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!texts[i]) {
            PyMem_Free(texts);
            PyErr_Format(PyExc_TypeError, "texts[%zd]: expected str", i);
            return NULL;
        }
    Py_buffer ob;
    if (ext_get_wbuf(oo, &ob, n * (Py_ssize_t)self->dim * 4, "out")) {
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
    if (rc) return ext_raise_rc(rc, msg);
    Py_RETURN_NONE;
}

static PyObject *Embedder_stats_c(EmbedderObject *self, PyObject *noargs)
{
    (void)noargs;
    if (!self->e) {
        PyErr_SetString(ext_Error, "the embedder is not initialised");
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

PyTypeObject ext_EmbedderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "chrysalis._chrysalis._Embedder",
    .tp_basicsize = sizeof(EmbedderObject),
    .tp_dealloc = (destructor)Embedder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Low-level embedder handle (use chrysalis.Embedder).",
    .tp_methods = Embedder_methods,
    .tp_new = Embedder_new,
};

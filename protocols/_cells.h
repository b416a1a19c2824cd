/* Shared by the row walks of both protocols (protocols/postgres/_rows.c and
 * protocols/mysql/_rows.c): a growing output buffer, the byte-level masking specs, and the
 * rewrite of one planned cell (memo, then spec, then the Python callable). */
#ifndef WIREGATE_CELLS_H
#define WIREGATE_CELLS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    unsigned char *buf;
    Py_ssize_t len;
    Py_ssize_t cap;
    PyObject *bytes;
} Out;

static int out_reserve(Out *o, Py_ssize_t extra)
{
    if (o->len + extra <= o->cap)
        return 0;
    Py_ssize_t cap = o->cap * 2;
    if (cap < o->len + extra)
        cap = o->len + extra + 1024;
    if (_PyBytes_Resize(&o->bytes, cap) < 0)
        return -1;
    o->buf = (unsigned char *)PyBytes_AS_STRING(o->bytes);
    o->cap = cap;
    return 0;
}

static int out_put(Out *o, const void *src, Py_ssize_t n)
{
    if (n <= 0)
        return 0;
    if (out_reserve(o, n) < 0)
        return -1;
    memcpy(o->buf + o->len, src, (size_t)n);
    o->len += n;
    return 0;
}

/* Byte-level rewrites the walk can do itself for an ASCII value, so a column of distinct
 * values does not cost a call into Python per cell. Each mirrors a masking strategy exactly
 * for ASCII input (policies/masking.py); anything else goes to the Python callable. */
enum { SPEC_NONE = 0, SPEC_STAR_ALNUM = 1, SPEC_EMAIL = 2, SPEC_CONSTANT = 3 };

typedef struct {
    int op;
    long keep_first;
    long keep_last;
    const char *token;
    Py_ssize_t token_len;
} Spec;

static inline int is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int all_ascii(const unsigned char *v, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (v[i] & 0x80)
            return 0;
    return 1;
}

/* The rewritten cell as a new bytes object, or NULL with no error set when the spec does not
 * apply (the caller then asks Python). */
static PyObject *apply_spec(const Spec *spec, const unsigned char *v, Py_ssize_t n)
{
    if (spec->op == SPEC_CONSTANT)
        return PyBytes_FromStringAndSize(spec->token, spec->token_len);
    if (!all_ascii(v, n))
        return NULL;
    if (spec->op == SPEC_STAR_ALNUM) {
        Py_ssize_t total = 0;
        for (Py_ssize_t i = 0; i < n; i++)
            total += is_alnum(v[i]);
        long first = spec->keep_first, last = spec->keep_last;
        if (first < 0)
            first = 0;
        if (last < 0)
            last = 0;
        /* kept: the first `first` and the last `last` letters or digits; a value with no
         * more than that is starred whole */
        Py_ssize_t kept_first = first < total ? first : total;
        Py_ssize_t last_from = total - last > 0 ? total - last : 0;
        Py_ssize_t kept = kept_first + (total - (last_from > kept_first ? last_from : kept_first));
        int keep_none = total > 0 && kept >= total;
        PyObject *out = PyBytes_FromStringAndSize(NULL, n);
        if (out == NULL)
            return NULL;
        char *o = PyBytes_AS_STRING(out);
        Py_ssize_t k = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (is_alnum(v[i])) {
                int keep = !keep_none && (k < kept_first || (last > 0 && k >= last_from));
                o[i] = keep ? (char)v[i] : '*';
                k++;
            } else {
                o[i] = (char)v[i];
            }
        }
        return out;
    }
    if (spec->op == SPEC_EMAIL) {
        Py_ssize_t at = -1;
        for (Py_ssize_t i = n - 1; i >= 0; i--)
            if (v[i] == '@') {
                at = i;
                break;
            }
        if (at <= 0 || at == n - 1)
            return PyBytes_FromStringAndSize(spec->token, spec->token_len);
        Py_ssize_t domain = n - at - 1;
        PyObject *out = PyBytes_FromStringAndSize(NULL, 5 + domain);
        if (out == NULL)
            return NULL;
        char *o = PyBytes_AS_STRING(out);
        o[0] = (char)v[0];
        memcpy(o + 1, "***@", 4);
        memcpy(o + 5, v + at + 1, (size_t)domain);
        return out;
    }
    return NULL;
}

static int read_spec(PyObject *obj, Spec *spec)
{
    spec->op = SPEC_NONE;
    if (obj == Py_None)
        return 0;
    PyObject *token;
    int op;
    long first, last;
    if (!PyArg_ParseTuple(obj, "illS", &op, &first, &last, &token))
        return -1;
    spec->op = op;
    spec->keep_first = first;
    spec->keep_last = last;
    spec->token = PyBytes_AS_STRING(token);    /* kept alive by the specs tuple */
    spec->token_len = PyBytes_GET_SIZE(token);
    return 0;
}

static PyObject *bad(const char *what)
{
    PyErr_SetString(PyExc_ValueError, what);
    return NULL;
}

/* The planned cell's new value, a new reference to bytes or None, or NULL with an error set.
 * v/n is the cell (n == -1: NULL). The column's memo is asked first, then its spec for an
 * ASCII value (a spec result longer than `limit` bytes, when limit > 0, is left to the
 * callable, which knows how to cut it), then the callable. */
static PyObject *rewrite_cell(const unsigned char *v, Py_ssize_t n, PyObject *memo,
                              const Spec *spec, PyObject *fn, Py_ssize_t limit)
{
    PyObject *value, *got = NULL;
    if (n == -1) {
        value = Py_NewRef(Py_None);
    } else {
        value = PyBytes_FromStringAndSize((const char *)v, n);
        if (value == NULL)
            return NULL;
        if (memo != Py_None) {
            got = PyDict_GetItemWithError(memo, value);
            if (got != NULL)
                Py_INCREF(got);
            else if (PyErr_Occurred()) {
                Py_DECREF(value);
                return NULL;
            }
        }
        if (got == NULL && spec->op != SPEC_NONE) {
            got = apply_spec(spec, v, n);
            if (got == NULL && PyErr_Occurred()) {
                Py_DECREF(value);
                return NULL;
            }
            if (got != NULL && limit > 0 && PyBytes_GET_SIZE(got) > limit)
                Py_CLEAR(got);
        }
    }
    if (got == NULL)
        got = PyObject_CallOneArg(fn, value);
    Py_DECREF(value);
    if (got != NULL && got != Py_None && !PyBytes_Check(got)) {
        Py_DECREF(got);
        PyErr_SetString(PyExc_TypeError, "a cell rewrite must return bytes or None");
        return NULL;
    }
    return got;
}

#endif

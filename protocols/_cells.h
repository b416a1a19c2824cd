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

static inline unsigned char is_alnum(unsigned char c)
{
    /* byte arithmetic only, so the loops below vectorize 16 bytes at a time */
    unsigned char digit = (unsigned char)(c - '0'), letter = (unsigned char)((c | 0x20) - 'a');
    return (unsigned char)((digit < 10) | (letter < 26));
}

static int all_ascii(const unsigned char *v, Py_ssize_t n)
{
    unsigned char acc = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        acc |= v[i];
    return !(acc & 0x80);
}

/* Where a spec's result comes from, measured before it is written: the starred bytes
 * [from, to) of a partial mask, the '@' of an e-mail address. */
typedef struct {
    Py_ssize_t from, to, at;
} SpecCut;

/* The size of the spec's result for the value v/n, or -1 when the spec does not apply (a
 * value that is not ASCII: the caller then asks Python). The loops are branch-free: this runs
 * for every masked cell of a bulk read. */
static Py_ssize_t spec_size(const Spec *spec, const unsigned char *v, Py_ssize_t n,
                            SpecCut *cut)
{
    if (spec->op == SPEC_CONSTANT)
        return spec->token_len;
    if (spec->op == SPEC_STAR_ALNUM) {
        Py_ssize_t total = 0;
        unsigned char acc = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            acc |= v[i];
            total += is_alnum(v[i]);
        }
        if (acc & 0x80)
            return -1;
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
        Py_ssize_t from = 0, to = n;
        if (!(total > 0 && kept >= total)) {
            for (Py_ssize_t c = 0; c < kept_first; from++)
                c += is_alnum(v[from]);
            for (Py_ssize_t c = 0, want = total - last_from; c < want;)
                c += is_alnum(v[--to]);
        }
        cut->from = from;
        cut->to = to;
        return n;
    }
    if (spec->op == SPEC_EMAIL) {
        if (!all_ascii(v, n))
            return -1;
        Py_ssize_t at = -1;
        for (Py_ssize_t i = n - 1; i >= 0; i--)
            if (v[i] == '@') {
                at = i;
                break;
            }
        cut->at = at;
        if (at <= 0 || at == n - 1)
            return spec->token_len;
        return 5 + (n - at - 1);
    }
    return -1;
}

/* The spec's result into dst, which has the room spec_size said. */
static void spec_write(const Spec *spec, const unsigned char *restrict v, Py_ssize_t n,
                       const SpecCut *cut, unsigned char *restrict dst)
{
    if (spec->op == SPEC_STAR_ALNUM) {
        Py_ssize_t from = cut->from, to = cut->to;
        memcpy(dst, v, (size_t)from);
        for (Py_ssize_t i = from; i < to; i++)
            dst[i] = is_alnum(v[i]) ? '*' : v[i];
        memcpy(dst + to, v + to, (size_t)(n - to));
    } else if (spec->op == SPEC_EMAIL && !(cut->at <= 0 || cut->at == n - 1)) {
        dst[0] = v[0];
        memcpy(dst + 1, "***@", 4);
        memcpy(dst + 5, v + cut->at + 1, (size_t)(n - cut->at - 1));
    } else {
        memcpy(dst, spec->token, (size_t)spec->token_len);
    }
}

/* The rewritten cell as a new bytes object, or NULL with no error set when the spec does not
 * apply (the caller then asks Python). */
static PyObject *apply_spec(const Spec *spec, const unsigned char *v, Py_ssize_t n)
{
    SpecCut cut;
    Py_ssize_t size = spec_size(spec, v, n, &cut);
    if (size < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out != NULL)
        spec_write(spec, v, n, &cut, (unsigned char *)PyBytes_AS_STRING(out));
    return out;
}

/* The spec's result for the value v/n written to `o` behind its length prefix (`prefix`
 * puts one for a size): 1 when written, 0 when the spec does not apply or its result is
 * longer than `limit` (limit > 0), -1 on error. Spares a bytes object per cell. */
static inline int spec_into(Out *o, const Spec *spec, const unsigned char *v, Py_ssize_t n,
                            Py_ssize_t limit, int (*prefix)(Out *, Py_ssize_t))
{
    SpecCut cut;
    Py_ssize_t size = spec_size(spec, v, n, &cut);
    if (size < 0 || (limit > 0 && size > limit))
        return 0;
    if (prefix(o, size) < 0 || out_reserve(o, size) < 0)
        return -1;
    spec_write(spec, v, n, &cut, o->buf + o->len);
    o->len += size;
    return 1;
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
 * v/n is the cell (n == -1: NULL). The column's spec goes first for an ASCII value (it gives
 * what the callable would, so the memo, a cache of the callable, is not asked); a spec result
 * longer than `limit` bytes, when limit > 0, is left to the callable, which knows how to cut
 * it. Otherwise the memo, then the callable. */
static PyObject *rewrite_cell(const unsigned char *v, Py_ssize_t n, PyObject *memo,
                              const Spec *spec, PyObject *fn, Py_ssize_t limit)
{
    PyObject *value, *got = NULL;
    if (n >= 0 && spec->op != SPEC_NONE) {
        got = apply_spec(spec, v, n);
        if (got == NULL && PyErr_Occurred())
            return NULL;
        if (got != NULL && (limit <= 0 || PyBytes_GET_SIZE(got) <= limit))
            return got;
        Py_CLEAR(got);
    }
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

/* DataRow runs in C: the one place where Wiregate touches every row of a result.
 *
 * A masked bulk read rewrites one or two cells of every DataRow. In Python, walking a row costs
 * about a microsecond, more than the server spends producing it, so the proxy would become the
 * bottleneck of any large read. These two functions do the same walk as the pure-Python
 * reference in rows.py, byte for byte, and call back into Python only for a cell whose value
 * has not been seen before (the per-column memo is a dict the caller owns).
 *
 * Sans-IO like the rest of protocols/: bytes in, bytes out.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../_cells.h"

static inline int32_t rd32(const unsigned char *p)
{
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8)
                     | (uint32_t)p[3]);
}

static inline int16_t rd16(const unsigned char *p)
{
    return (int16_t)(((uint16_t)p[0] << 8) | (uint16_t)p[1]);
}

static inline void wr32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* row_run_end(data, pos, limit) -> int: the end of the complete DataRows that follow
 * one another from pos; pos itself when the message there is not one. */
static PyObject *row_run_end(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "row_run_end(data, pos, limit)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred()) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *p = view.buf;
    Py_ssize_t n = view.len;
    if (pos < 0)
        pos = 0;
    while (pos + 5 <= n && p[pos] == 'D') {
        int32_t len = rd32(p + pos + 1);
        if (len < 4 || len > limit || pos + 1 + (Py_ssize_t)len > n)
            break;
        pos += 1 + (Py_ssize_t)len;
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(pos);
}

/* rewrite_rows(data, start, end, columns, rewrites, memos, specs) -> bytes
 *
 * data[start:end] holds whole DataRows. columns: tuple of increasing column indexes;
 * rewrites: the callable for each (cell bytes or None -> new cell bytes or None); memos: a
 * dict or None for each, looked up before anything else; specs: None or an
 * (op, keep_first, keep_last, token) tuple the walk applies itself to an ASCII value. Cells not
 * planned, and the bytes after the last planned one, are copied as they came. */
static PyObject *rewrite_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "rewrite_rows(data, start, end, columns, rewrites, memos, specs)");
        return NULL;
    }
    PyObject *columns = args[3], *rewrites = args[4], *memos = args[5], *specs = args[6];
    if (!PyTuple_Check(columns) || !PyTuple_Check(rewrites) || !PyTuple_Check(memos)
        || !PyTuple_Check(specs)) {
        PyErr_SetString(PyExc_TypeError, "columns, rewrites, memos and specs must be tuples");
        return NULL;
    }
    Py_ssize_t planned = PyTuple_GET_SIZE(columns);
    if (PyTuple_GET_SIZE(rewrites) != planned || PyTuple_GET_SIZE(memos) != planned
        || PyTuple_GET_SIZE(specs) != planned) {
        PyErr_SetString(PyExc_ValueError, "columns, rewrites, memos and specs differ in length");
        return NULL;
    }
    size_t slots = (size_t)(planned ? planned : 1);
    long *index = PyMem_Malloc(sizeof(long) * slots);
    Spec *spec = PyMem_Malloc(sizeof(Spec) * slots);
    if (index == NULL || spec == NULL) {
        PyMem_Free(index);
        PyMem_Free(spec);
        return PyErr_NoMemory();
    }
    long last = -1;
    for (Py_ssize_t k = 0; k < planned; k++) {
        index[k] = PyLong_AsLong(PyTuple_GET_ITEM(columns, k));
        if ((index[k] == -1 && PyErr_Occurred())
            || read_spec(PyTuple_GET_ITEM(specs, k), &spec[k]) < 0) {
            PyMem_Free(index);
            PyMem_Free(spec);
            return NULL;
        }
        if (index[k] <= last) {
            PyMem_Free(index);
            PyMem_Free(spec);
            return bad("columns must be increasing");
        }
        last = index[k];
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        PyMem_Free(index);
        PyMem_Free(spec);
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    PyObject *result = NULL;
    Out o = {NULL, 0, 0, NULL};
    if (PyErr_Occurred())
        goto done;
    if (start < 0 || end > view.len || start > end) {
        bad("row span out of range");
        goto done;
    }
    const unsigned char *p = view.buf;
    o.cap = (end - start) + (end - start) / 4 + 64;
    o.bytes = PyBytes_FromStringAndSize(NULL, o.cap);
    if (o.bytes == NULL)
        goto done;
    o.buf = (unsigned char *)PyBytes_AS_STRING(o.bytes);

    Py_ssize_t pos = start;
    while (pos < end) {
        if (end - pos < 7 || p[pos] != 'D') {
            bad("DataRow: truncated");
            goto done;
        }
        int32_t len = rd32(p + pos + 1);
        Py_ssize_t row_end = pos + 1 + (Py_ssize_t)len;
        if (len < 6 || row_end > end) {
            bad("DataRow: truncated");
            goto done;
        }
        int16_t count = rd16(p + pos + 5);
        Py_ssize_t row_out = o.len;
        if (out_put(&o, p + pos, 7) < 0)
            goto done;
        Py_ssize_t cell = pos + 7, copied = cell;
        long walk = count < last + 1 ? count : last + 1;
        Py_ssize_t k = 0;
        for (long i = 0; i < walk; i++) {
            if (cell + 4 > row_end) {
                bad("DataRow: truncated");
                goto done;
            }
            int32_t n = rd32(p + cell);
            Py_ssize_t cell_end = cell + 4 + (n > 0 ? (Py_ssize_t)n : 0);
            if (n < -1 || cell_end > row_end) {
                bad("DataRow: invalid value length");
                goto done;
            }
            if (k < planned && index[k] == i) {
                PyObject *got = rewrite_cell(p + cell + 4, n == -1 ? -1 : (Py_ssize_t)n,
                                             PyTuple_GET_ITEM(memos, k), &spec[k],
                                             PyTuple_GET_ITEM(rewrites, k), 0);
                if (got == NULL)
                    goto done;
                int changed;
                if (got == Py_None) {
                    changed = n != -1;
                } else {   /* bytes: rewrite_cell returns nothing else */
                    Py_ssize_t m = PyBytes_GET_SIZE(got);
                    changed = n == -1 || m != n
                              || memcmp(PyBytes_AS_STRING(got), p + cell + 4, (size_t)m) != 0;
                }
                if (changed) {
                    if (out_put(&o, p + copied, cell - copied) < 0) {
                        Py_DECREF(got);
                        goto done;
                    }
                    unsigned char head[4];
                    if (got == Py_None) {
                        wr32(head, 0xFFFFFFFFu);
                        if (out_put(&o, head, 4) < 0) {
                            Py_DECREF(got);
                            goto done;
                        }
                    } else {
                        Py_ssize_t m = PyBytes_GET_SIZE(got);
                        if (m > INT32_MAX) {
                            Py_DECREF(got);
                            bad("DataRow: rewritten value too long");
                            goto done;
                        }
                        wr32(head, (uint32_t)m);
                        if (out_put(&o, head, 4) < 0 || out_put(&o, PyBytes_AS_STRING(got), m) < 0) {
                            Py_DECREF(got);
                            goto done;
                        }
                    }
                    copied = cell_end;
                }
                Py_DECREF(got);
                k++;
            }
            cell = cell_end;
        }
        if (out_put(&o, p + copied, row_end - copied) < 0)
            goto done;
        Py_ssize_t new_len = o.len - row_out - 1;
        if (new_len > INT32_MAX) {
            bad("DataRow: rewritten row too long");
            goto done;
        }
        wr32(o.buf + row_out + 1, (uint32_t)new_len);
        pos = row_end;
    }
    if (_PyBytes_Resize(&o.bytes, o.len) < 0) {
        o.bytes = NULL;
        goto done;
    }
    result = o.bytes;
    o.bytes = NULL;
done:
    Py_XDECREF(o.bytes);
    PyBuffer_Release(&view);
    PyMem_Free(index);
    PyMem_Free(spec);
    return result;
}

static PyMethodDef methods[] = {
    {"row_run_end", (PyCFunction)(void (*)(void))row_run_end, METH_FASTCALL,
     "End of the consecutive complete DataRows from pos."},
    {"rewrite_rows", (PyCFunction)(void (*)(void))rewrite_rows, METH_FASTCALL,
     "DataRows with the planned cells rewritten."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rows", "DataRow runs in C (see rows.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__rows(void)
{
    return PyModule_Create(&module);
}

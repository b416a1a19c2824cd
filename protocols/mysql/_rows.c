/* MySQL result rows in C (text and binary protocol): the counterpart of
 * protocols/postgres/_rows.c.
 *
 * A masked bulk read rewrites a cell of every row; in Python the walk of one row packet costs
 * several microseconds, more than the server spends producing it. rewrite_text_rows walks the
 * run of complete row packets from a position, rewrites the planned cells and re-frames each
 * packet with the sequence ids the client expects, byte for byte what rows.py's reference
 * walk gives. It stops at anything that is not plainly a row (a terminator, an ERR, a packet
 * of 16 MiB or more, a sequence id it does not expect, a rewritten row too long for one
 * packet) and leaves that to the caller.
 *
 * Sans-IO like the rest of protocols/: bytes in, bytes out.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../_cells.h"

#define MAX_PACKET 0xFFFFFF

/* A length-encoded integer at p (within end): its value in *value (-1 for 0xFB, NULL), the
 * bytes it takes as the return value, 0 when it is invalid or truncated. */
static Py_ssize_t lenenc(const unsigned char *p, const unsigned char *end, int64_t *value)
{
    if (p >= end)
        return 0;
    unsigned char first = p[0];
    if (first < 0xFB) {
        *value = first;
        return 1;
    }
    if (first == 0xFB) {
        *value = -1;
        return 1;
    }
    int width = first == 0xFC ? 2 : first == 0xFD ? 3 : first == 0xFE ? 8 : 0;
    if (width == 0 || p + 1 + width > end)
        return 0;
    uint64_t v = 0;
    for (int i = width; i >= 1; i--)
        v = (v << 8) | p[i];
    if (v > (uint64_t)PY_SSIZE_T_MAX)
        return 0;
    *value = (int64_t)v;
    return 1 + width;
}

static int put_lenenc(Out *o, Py_ssize_t n)
{
    unsigned char head[9];
    int len;
    if (n < 0xFB) {
        head[0] = (unsigned char)n;
        len = 1;
    } else if (n < 0x10000) {
        head[0] = 0xFC;
        head[1] = n & 0xFF;
        head[2] = (n >> 8) & 0xFF;
        len = 3;
    } else if (n < 0x1000000) {
        head[0] = 0xFD;
        head[1] = n & 0xFF;
        head[2] = (n >> 8) & 0xFF;
        head[3] = (n >> 16) & 0xFF;
        len = 4;
    } else {
        head[0] = 0xFE;
        for (int i = 0; i < 8; i++)
            head[1 + i] = ((uint64_t)n >> (8 * i)) & 0xFF;
        len = 9;
    }
    return out_put(o, head, len);
}

/* One walk over a run of row packets: the plan (increasing cell indexes, each with its
 * rewrite, memo, spec and spec bound), and for binary rows the column types. */
typedef struct {
    Py_ssize_t planned;
    long *index;
    Py_ssize_t *limit;
    Spec *spec;
    long last;
    PyObject *rewrites, *memos;
    const unsigned char *type;      /* binary rows: one type byte per column; else NULL */
    Py_ssize_t ncols;
    unsigned char *bitmap;          /* binary rows: the row's NULL bitmap as it came */
    Out o;
} Walk;

static void walk_free(Walk *w)
{
    PyMem_Free(w->index);
    PyMem_Free(w->limit);
    PyMem_Free(w->spec);
    PyMem_Free(w->bitmap);
    Py_XDECREF(w->o.bytes);
}

/* The new value of the cell the k-th plan entry names (vlen -1: NULL). */
static PyObject *planned_cell(Walk *w, Py_ssize_t k, const unsigned char *value,
                              Py_ssize_t vlen)
{
    return rewrite_cell(value, vlen, PyTuple_GET_ITEM(w->memos, k), &w->spec[k],
                        PyTuple_GET_ITEM(w->rewrites, k), w->limit[k]);
}

/* A length-encoded cell the k-th plan entry's byte spec can rewrite: the bytes before it
 * (from *copied) and its new value go straight into the output. 1 when written (*copied then
 * points at the cell), 0 when the spec does not apply (the callable decides), -1 on error. */
static int spec_cell(Walk *w, Py_ssize_t k, const unsigned char **copied,
                     const unsigned char *cell, const unsigned char *value, Py_ssize_t vlen)
{
    if (out_put(&w->o, *copied, cell - *copied) < 0)
        return -1;
    *copied = cell;
    return spec_into(&w->o, &w->spec[k], value, vlen, w->limit[k], put_lenenc);
}

/* A text row: length-encoded cells, 0xFB for NULL. Appends the rewritten payload. */
static int text_row(Walk *w, const unsigned char *row, Py_ssize_t n)
{
    const unsigned char *row_end = row + n, *cell = row, *copied = row;
    Py_ssize_t k = 0;
    for (long i = 0; i <= w->last; i++) {
        int64_t length;
        Py_ssize_t head = lenenc(cell, row_end, &length);
        if (head == 0) {
            bad("text row: invalid or truncated value");
            return -1;
        }
        const unsigned char *value = cell + head;
        const unsigned char *cell_end = value + (length > 0 ? length : 0);
        if (cell_end > row_end) {
            bad("text row: value past the end of the packet");
            return -1;
        }
        if (w->index[k] == i && length >= 0 && w->spec[k].op != SPEC_NONE) {
            int done = spec_cell(w, k, &copied, cell, value, (Py_ssize_t)length);
            if (done < 0)
                return -1;
            if (done) {
                copied = cell = cell_end;
                k++;
                continue;
            }
        }
        if (w->index[k] == i) {
            PyObject *got = planned_cell(w, k, value, length < 0 ? -1 : (Py_ssize_t)length);
            if (got == NULL)
                return -1;
            int failed = out_put(&w->o, copied, cell - copied) < 0;
            if (!failed && got == Py_None) {
                failed = out_put(&w->o, "\xfb", 1) < 0;
            } else if (!failed) {
                Py_ssize_t m = PyBytes_GET_SIZE(got);
                failed = put_lenenc(&w->o, m) < 0
                         || out_put(&w->o, PyBytes_AS_STRING(got), m) < 0;
            }
            Py_DECREF(got);
            if (failed)
                return -1;
            copied = cell_end;
            k++;
        }
        cell = cell_end;
    }
    return out_put(&w->o, copied, row_end - copied);
}

/* Binary-protocol cells: the fixed width of a type (0: not fixed), whether it is a temporal
 * struct with a one-byte length (as protocols/mysql/types.py FIXED_WIDTH and TEMPORAL). */
static int fixed_width(unsigned char t)
{
    switch (t) {
    case 1: return 1;                       /* TINY */
    case 2: case 13: return 2;              /* SHORT, YEAR */
    case 3: case 9: case 4: return 4;       /* LONG, INT24, FLOAT */
    case 8: case 5: return 8;               /* LONGLONG, DOUBLE */
    default: return 0;
    }
}

static int temporal(unsigned char t)
{
    return t == 10 || t == 12 || t == 7 || t == 11 || t == 14;  /* DATE DATETIME TIMESTAMP TIME NEWDATE */
}

/* A binary row: a 0x00 header, the NULL bitmap (offset 2), then the values of the non-NULL
 * cells by type. A rewrite sees a cell without its length prefix (fixed-width types have
 * none) and returns one of the same form; None sets the cell's NULL bit. */
static int binary_row(Walk *w, const unsigned char *row, Py_ssize_t n)
{
    Py_ssize_t bitmap_len = (w->ncols + 9) / 8;
    const unsigned char *row_end = row + n;
    if (n < 1 + bitmap_len) {
        bad("binary row: truncated NULL bitmap");
        return -1;
    }
    memcpy(w->bitmap, row + 1, (size_t)bitmap_len);
    /* header and bitmap now, the bitmap patched when NULLs change */
    Py_ssize_t bitmap_out = w->o.len + 1;
    if (out_put(&w->o, row, 1 + bitmap_len) < 0)
        return -1;
    const unsigned char *cell = row + 1 + bitmap_len, *copied = cell;
    Py_ssize_t k = 0;
    for (long i = 0; i <= w->last; i++) {
        unsigned char type = w->type[i];
        int bit = (int)(i + 2);
        int is_null = (w->bitmap[bit / 8] >> (bit % 8)) & 1;
        const unsigned char *value = cell, *cell_end = cell;
        Py_ssize_t vlen = -1;
        int width = fixed_width(type);
        if (!is_null) {
            if (width) {
                vlen = width;
            } else if (temporal(type)) {
                if (cell >= row_end) {
                    bad("binary row: truncated value");
                    return -1;
                }
                vlen = cell[0];
                value = cell + 1;
            } else {
                int64_t length;
                Py_ssize_t head = lenenc(cell, row_end, &length);
                if (head == 0 || length < 0) {
                    bad("binary row: invalid value length");
                    return -1;
                }
                vlen = (Py_ssize_t)length;
                value = cell + head;
            }
            cell_end = value + vlen;
            if (cell_end > row_end) {
                bad("binary row: value past the end of the packet");
                return -1;
            }
        }
        if (w->index[k] == i && vlen >= 0 && !width && !temporal(type)
            && w->spec[k].op != SPEC_NONE) {
            int done = spec_cell(w, k, &copied, cell, value, vlen);
            if (done < 0)
                return -1;
            if (done) {
                copied = cell = cell_end;
                k++;
                continue;
            }
        }
        if (w->index[k] == i) {
            PyObject *got = planned_cell(w, k, value, vlen);
            if (got == NULL)
                return -1;
            int failed = out_put(&w->o, copied, cell - copied) < 0;
            if (!failed && got == Py_None) {
                w->o.buf[bitmap_out + bit / 8] |= (unsigned char)(1 << (bit % 8));
            } else if (!failed) {
                Py_ssize_t m = PyBytes_GET_SIZE(got);
                w->o.buf[bitmap_out + bit / 8] &= (unsigned char)~(1 << (bit % 8));
                if (width) {
                    if (m != width) {
                        Py_DECREF(got);
                        bad("binary row: a rewrite changed a fixed-width value's size");
                        return -1;
                    }
                } else if (temporal(type)) {
                    unsigned char len1 = (unsigned char)m;
                    failed = m > 255 || out_put(&w->o, &len1, 1) < 0;
                } else {
                    failed = put_lenenc(&w->o, m) < 0;
                }
                failed = failed || out_put(&w->o, PyBytes_AS_STRING(got), m) < 0;
            }
            Py_DECREF(got);
            if (failed) {
                if (!PyErr_Occurred())
                    bad("binary row: rewritten value too long");
                return -1;
            }
            copied = cell_end;
            k++;
        }
        cell = cell_end;
    }
    return out_put(&w->o, copied, row_end - copied);
}

/* The walk both functions share: args are (data, start, seq), the plan's five tuples and
 * deprecate_eof; `types` is NULL for text rows. Returns (bytes, end, seq): the rows from
 * data[start:] rewritten and re-framed from sequence id `seq`, where the walk stopped, and
 * the next sequence id. It stops at anything that is not plainly a row (a terminator, an
 * ERR, a packet of 16 MiB or more, an unexpected sequence id, a rewritten row too long for
 * one packet) and leaves that to the caller. */
static PyObject *walk(PyObject *const *args, PyObject *const *plan, PyObject *deprecate,
                      PyObject *types)
{
    PyObject *columns = plan[0], *rewrites = plan[1], *memos = plan[2], *specs = plan[3],
             *limits = plan[4];
    if (!PyTuple_Check(columns) || !PyTuple_Check(rewrites) || !PyTuple_Check(memos)
        || !PyTuple_Check(specs) || !PyTuple_Check(limits)
        || (types != NULL && !PyBytes_Check(types))) {
        PyErr_SetString(PyExc_TypeError, "types: bytes; columns, rewrites, memos, specs, "
                        "limits: tuples");
        return NULL;
    }
    Walk w = {0};
    w.planned = PyTuple_GET_SIZE(columns);
    w.rewrites = rewrites;
    w.memos = memos;
    if (w.planned == 0 || PyTuple_GET_SIZE(rewrites) != w.planned
        || PyTuple_GET_SIZE(memos) != w.planned || PyTuple_GET_SIZE(specs) != w.planned
        || PyTuple_GET_SIZE(limits) != w.planned)
        return bad("columns, rewrites, memos, specs and limits differ in length");
    int deprecate_eof = PyObject_IsTrue(deprecate);
    if (deprecate_eof < 0)
        return NULL;
    if (types != NULL) {
        w.type = (const unsigned char *)PyBytes_AS_STRING(types);
        w.ncols = PyBytes_GET_SIZE(types);
    }
    Py_buffer view = {0};
    int have_view = 0;
    PyObject *result = NULL;
    w.index = PyMem_Malloc(sizeof(long) * (size_t)w.planned);
    w.limit = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)w.planned);
    w.spec = PyMem_Malloc(sizeof(Spec) * (size_t)w.planned);
    w.bitmap = PyMem_Malloc((size_t)(w.ncols + 9) / 8 + 1);
    if (w.index == NULL || w.limit == NULL || w.spec == NULL || w.bitmap == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    w.last = -1;
    for (Py_ssize_t k = 0; k < w.planned; k++) {
        w.index[k] = PyLong_AsLong(PyTuple_GET_ITEM(columns, k));
        w.limit[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(limits, k));
        if (PyErr_Occurred() || read_spec(PyTuple_GET_ITEM(specs, k), &w.spec[k]) < 0)
            goto done;
        if (w.index[k] <= w.last || (types != NULL && w.index[k] >= w.ncols)) {
            bad("columns must be increasing and within the row");
            goto done;
        }
        w.last = w.index[k];
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        goto done;
    have_view = 1;
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    long seq = PyLong_AsLong(args[2]);
    if (PyErr_Occurred())
        goto done;
    if (start < 0 || start > view.len) {
        bad("start out of range");
        goto done;
    }
    const unsigned char *p = view.buf;
    Py_ssize_t size = view.len;
    w.o.cap = (size - start) + (size - start) / 4 + 64;
    w.o.bytes = PyBytes_FromStringAndSize(NULL, w.o.cap);
    if (w.o.bytes == NULL)
        goto done;
    w.o.buf = (unsigned char *)PyBytes_AS_STRING(w.o.bytes);

    Py_ssize_t pos = start;
    while (size - pos >= 4) {
        Py_ssize_t n = (Py_ssize_t)p[pos] | ((Py_ssize_t)p[pos + 1] << 8)
                       | ((Py_ssize_t)p[pos + 2] << 16);
        if (n == 0 || n >= MAX_PACKET || pos + 4 + n > size || p[pos + 3] != (seq & 0xFF))
            break;
        unsigned char first = p[pos + 4];
        if (types != NULL ? first != 0x00     /* a binary row starts with 0x00, nothing else */
                          : first == 0xFF || (first == 0xFE && (n < 9 || deprecate_eof)))
            break;
        Py_ssize_t packet_out = w.o.len;
        if (out_put(&w.o, "\0\0\0\0", 4) < 0)
            goto done;
        if ((types != NULL ? binary_row(&w, p + pos + 4, n) : text_row(&w, p + pos + 4, n)) < 0)
            goto done;
        Py_ssize_t new_len = w.o.len - packet_out - 4;
        if (new_len >= MAX_PACKET) {
            w.o.len = packet_out;   /* too long for one packet: the caller splits it */
            break;
        }
        w.o.buf[packet_out] = new_len & 0xFF;
        w.o.buf[packet_out + 1] = (new_len >> 8) & 0xFF;
        w.o.buf[packet_out + 2] = (new_len >> 16) & 0xFF;
        w.o.buf[packet_out + 3] = seq & 0xFF;
        seq = (seq + 1) & 0xFF;
        pos += 4 + n;
    }
    if (_PyBytes_Resize(&w.o.bytes, w.o.len) < 0) {
        w.o.bytes = NULL;
        goto done;
    }
    result = Py_BuildValue("(Nnl)", w.o.bytes, pos, seq);
    w.o.bytes = NULL;
done:
    if (have_view)
        PyBuffer_Release(&view);
    walk_free(&w);
    return result;
}

/* rewrite_text_rows(data, start, seq, columns, rewrites, memos, specs, limits, deprecate_eof)
 *     -> (bytes, end, seq)
 * columns: increasing cell indexes; rewrites, memos, specs as in the PostgreSQL walk; limits:
 * for each, the most bytes a spec's result may take (0: any). */
static PyObject *rewrite_text_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "rewrite_text_rows(data, start, seq, columns, "
                        "rewrites, memos, specs, limits, deprecate_eof)");
        return NULL;
    }
    return walk(args, args + 3, args[8], NULL);
}

/* rewrite_binary_rows(data, start, seq, types, columns, rewrites, memos, specs, limits,
 *                     deprecate_eof) -> (bytes, end, seq)
 * As rewrite_text_rows, for binary rows (COM_STMT_EXECUTE, COM_STMT_FETCH); `types` holds
 * one type byte per column. */
static PyObject *rewrite_binary_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "rewrite_binary_rows(data, start, seq, types, columns, "
                        "rewrites, memos, specs, limits, deprecate_eof)");
        return NULL;
    }
    return walk(args, args + 4, args[9], args[3]);
}

static PyMethodDef methods[] = {
    {"rewrite_text_rows", (PyCFunction)(void (*)(void))rewrite_text_rows, METH_FASTCALL,
     "Text-protocol row packets with the planned cells rewritten, re-framed."},
    {"rewrite_binary_rows", (PyCFunction)(void (*)(void))rewrite_binary_rows, METH_FASTCALL,
     "Binary-protocol row packets with the planned cells rewritten, re-framed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rows", "MySQL text rows in C (see rows.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__rows(void)
{
    return PyModule_Create(&module);
}

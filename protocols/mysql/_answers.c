/* ResponseTracker.skip in C: the walk over an answer's packets that nobody rewrites.
 *
 * Every answer a relay passes on is walked packet by packet to find where it ends (a column
 * count, its definitions, rows, a terminator, maybe another result). In Python that walk is
 * the largest part of a short query's cost in the proxy; here it is a loop over bytes. It
 * reads and writes the same tracker attributes as responses.py's reference
 * ResponseTracker.skip and stops at the same packets (the tests compare the two).
 *
 * Sans-IO like the rest of protocols/: bytes in, state out.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define MAX_PACKET 0xFFFFFF
#define SERVER_MORE_RESULTS_EXISTS 0x0008

/* responses.py's constants: what the command expects, and the phases of an answer. */
enum { EXPECT_RESULT = 1, EXPECT_FETCH = 3, EXPECT_OK = 4 };
enum { P_START, P_PARAMS, P_PARAMS_EOF, P_COLUMNS, P_COLUMNS_EOF, P_ROWS, P_DONE };

static PyObject *PacketError;   /* protocols.mysql.packets.PacketError */
static PyObject *s_done, *s_cursor, *s_expect, *s_deprecate_eof, *s_phase, *s_columns,
    *s_column_index, *s_more, *s_status;

/* The length of a length-encoded integer at p, 0 when it is invalid or past end. */
static Py_ssize_t lenenc_len(const unsigned char *p, const unsigned char *end)
{
    if (p >= end)
        return 0;
    Py_ssize_t len = p[0] < 0xFB ? 1 : p[0] == 0xFB ? 1 : p[0] == 0xFC ? 3
                     : p[0] == 0xFD ? 4 : p[0] == 0xFE ? 9 : 0;
    return len && p + len <= end ? len : 0;
}

/* The server status of an OK packet: after the affected rows and the insert id. */
static int ok_status(const unsigned char *p, Py_ssize_t n, long *status)
{
    const unsigned char *end = p + n, *q = p + 1;
    Py_ssize_t len = lenenc_len(q, end);
    if (len == 0)
        goto bad;
    q += len;
    len = lenenc_len(q, end);
    if (len == 0)
        goto bad;
    q += len;
    *status = q + 2 <= end ? (long)(q[0] | q[1] << 8) : 0;
    return 0;
bad:
    PyErr_SetString(PacketError, "invalid length-encoded integer");
    return -1;
}

static int terminator_status(const unsigned char *p, Py_ssize_t n, int deprecate,
                             long *status)
{
    if (deprecate)
        return ok_status(p, n, status);
    *status = n >= 5 ? (long)(p[3] | p[4] << 8) : 0;
    return 0;
}

static int get_long(PyObject *obj, PyObject *name, long *value)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    *value = PyLong_AsLong(v);
    Py_DECREF(v);
    return *value == -1 && PyErr_Occurred() ? -1 : 0;
}

static int get_bool(PyObject *obj, PyObject *name, int *value)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    *value = PyObject_IsTrue(v);
    Py_DECREF(v);
    return *value < 0 ? -1 : 0;
}

static int set_long(PyObject *obj, PyObject *name, long value)
{
    PyObject *v = PyLong_FromLong(value);
    if (v == NULL)
        return -1;
    int rc = PyObject_SetAttr(obj, name, v);
    Py_DECREF(v);
    return rc;
}

/* skip(tracker, buf, pos, size, defs[, rows]) -> (pos, count): see ResponseTracker.skip. */
static PyObject *skip(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 && nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "skip(tracker, buf, pos, size, defs[, rows])");
        return NULL;
    }
    PyObject *t = args[0], *defs = args[4];
    Py_ssize_t pos = PyLong_AsSsize_t(args[2]), size = PyLong_AsSsize_t(args[3]);
    if ((pos == -1 || size == -1) && PyErr_Occurred())
        return NULL;
    if (defs != Py_None && !PyList_Check(defs)) {
        PyErr_SetString(PyExc_TypeError, "defs must be a list or None");
        return NULL;
    }
    int done, cursor, deprecate;
    long expect, phase, columns, column_index;
    if (get_bool(t, s_done, &done) < 0 || get_bool(t, s_cursor, &cursor) < 0
        || get_long(t, s_expect, &expect) < 0)
        return NULL;
    if (done || cursor || (expect != EXPECT_RESULT && expect != EXPECT_FETCH
                           && expect != EXPECT_OK))
        return Py_BuildValue("(ni)", pos, 0);
    if (get_bool(t, s_deprecate_eof, &deprecate) < 0 || get_long(t, s_phase, &phase) < 0
        || get_long(t, s_columns, &columns) < 0
        || get_long(t, s_column_index, &column_index) < 0)
        return NULL;

    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *buf = view.buf;
    if (size > view.len || pos < 0)
        size = pos < 0 ? 0 : view.len < size ? view.len : size;
    int watch = defs != Py_None, more = 0, finished = 0, failed = 0;
    int stop_at_rows = watch;
    if (nargs == 6 && args[5] != Py_None && (stop_at_rows = PyObject_IsTrue(args[5])) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    long status = -1;           /* -1: not set by this walk */
    Py_ssize_t count = 0;
    while (pos >= 0 && size - pos >= 4) {
        Py_ssize_t n = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16;
        Py_ssize_t end = pos + 4 + n;
        if (n == 0 || n >= MAX_PACKET || end > size)
            break;
        const unsigned char *p = buf + pos + 4;
        unsigned char first = p[0];
        int ended = 0;          /* a result set or an OK ended here */
        int fin = 0;            /* the packet was a terminator with this status */
        long st = 0;
        if (first == 0xFF && watch)
            break;
        if (phase == P_ROWS) {
            if (first == 0xFF) {
                phase = P_DONE;
                done = 1;
                more = 0;
                finished = 1;
            } else if (first == 0xFE && (n < 9 || deprecate)) {
                if (terminator_status(p, n, deprecate, &st) < 0) {
                    failed = 1;
                    break;
                }
                fin = ended = 1;
            } else if (stop_at_rows) {
                break;
            }
        } else if (phase == P_COLUMNS) {
            column_index++;
            if (watch) {
                PyObject *def = PyBytes_FromStringAndSize((const char *)p, n);
                if (def == NULL || PyList_Append(defs, def) < 0) {
                    Py_XDECREF(def);
                    failed = 1;
                    break;
                }
                Py_DECREF(def);
            }
            if (column_index >= columns)
                phase = deprecate ? P_ROWS : P_COLUMNS_EOF;
        } else if (phase == P_COLUMNS_EOF) {
            if (!(first == 0xFE && n < 9))
                break;
            phase = P_ROWS;
        } else if (phase == P_START) {
            if (first == 0xFF) {
                phase = P_DONE;
                done = 1;
                more = 0;
                finished = 1;
            } else if (first == 0x00) {
                if (ok_status(p, n, &st) < 0) {
                    failed = 1;
                    break;
                }
                fin = ended = 1;
            } else if (expect == EXPECT_RESULT && first < 0xFB) {
                columns = first;
                column_index = 0;
                phase = P_COLUMNS;
            } else {
                break;   /* a longer column count, LOCAL INFILE, or not an answer: feed */
            }
        } else {
            break;
        }
        if (fin) {       /* ResponseTracker._finish */
            status = st;
            finished = 1;
            if ((st & SERVER_MORE_RESULTS_EXISTS)
                && (expect == EXPECT_RESULT || expect == EXPECT_FETCH)) {
                more = 1;
                phase = P_START;
            } else {
                more = 0;
                phase = P_DONE;
                done = 1;
            }
        }
        pos = end;
        count++;
        if (done || (ended && watch))
            break;
    }
    PyBuffer_Release(&view);
    if (failed)
        return NULL;
    if (set_long(t, s_phase, phase) < 0 || set_long(t, s_columns, columns) < 0
        || set_long(t, s_column_index, column_index) < 0)
        return NULL;
    if (finished) {
        if (PyObject_SetAttr(t, s_done, done ? Py_True : Py_False) < 0
            || PyObject_SetAttr(t, s_more, more ? Py_True : Py_False) < 0)
            return NULL;
        if (status >= 0 && set_long(t, s_status, status) < 0)
            return NULL;
    }
    return Py_BuildValue("(nn)", pos, count);
}

static PyMethodDef methods[] = {
    {"skip", (PyCFunction)(void (*)(void))skip, METH_FASTCALL,
     "Advance a ResponseTracker over the whole packets nobody rewrites."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_answers", "ResponseTracker.skip in C (see responses.py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__answers(void)
{
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(s_done, "done");
    INTERN(s_cursor, "cursor");
    INTERN(s_expect, "expect");
    INTERN(s_deprecate_eof, "deprecate_eof");
    INTERN(s_phase, "phase");
    INTERN(s_columns, "columns");
    INTERN(s_column_index, "column_index");
    INTERN(s_more, "more");
    INTERN(s_status, "status");
#undef INTERN
    PyObject *packets = PyImport_ImportModule("protocols.mysql.packets");
    if (packets == NULL)
        return NULL;
    PacketError = PyObject_GetAttrString(packets, "PacketError");
    Py_DECREF(packets);
    if (PacketError == NULL)
        return NULL;
    return PyModule_Create(&module);
}

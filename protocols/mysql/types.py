"""MySQL/MariaDB column types and flags, as the wire carries them (include/field_types.h,
MariaDB's include/mysql_com.h), and how long a value of each type is in a binary row."""

from __future__ import annotations

# MYSQL_TYPE_*
DECIMAL, TINY, SHORT, LONG, FLOAT, DOUBLE, NULL, TIMESTAMP, LONGLONG, INT24 = range(10)
DATE, TIME, DATETIME, YEAR, NEWDATE, VARCHAR, BIT, TIMESTAMP2, DATETIME2, TIME2 = range(10, 20)
VECTOR, JSON, NEWDECIMAL, ENUM, SET = 242, 245, 246, 247, 248
TINY_BLOB, MEDIUM_BLOB, LONG_BLOB, BLOB, VAR_STRING, STRING, GEOMETRY = range(249, 256)

# Column flags (Protocol::ColumnDefinition41)
NOT_NULL_FLAG = 1
UNSIGNED_FLAG = 32
BINARY_FLAG = 128
ENUM_FLAG = 256
SET_FLAG = 2048

BINARY_CHARSET = 63

# Binary protocol: fixed-width values by type; the temporal types carry a one-byte length;
# everything else is a length-encoded string.
FIXED_WIDTH = {TINY: 1, SHORT: 2, YEAR: 2, LONG: 4, INT24: 4, FLOAT: 4, LONGLONG: 8,
               DOUBLE: 8}
TEMPORAL = frozenset({DATE, DATETIME, TIMESTAMP, TIME, NEWDATE})

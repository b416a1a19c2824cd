"""Loading the catalog facts the guardrails need from an upstream MySQL/MariaDB server.

The MySQL counterpart of ``load_catalog`` in ``proxy/catalog.py``, plugged into the same
``CatalogCache(loader=...)``: ``load_mysql_catalog`` reads information_schema over Wiregate's
own connection (never a client's) in one round trip, a multi-statement COM_QUERY inside a
read-only transaction with a consistent snapshot, and returns a ``policies.catalog.Catalog``.

- relations: every table and view of every database except sys (the ``mysql`` database
  is kept: mysql.user and mysql.column_stats matter to the guardrails), with their columns
  in order; a view carries its definition and the relations it reads, found by parsing the
  definition with sqlglot's MySQL dialect (one level, as PostgreSQL's pg_depend gives them).
- routines: functions and procedures. MySQL's SQL_DATA_ACCESS is only what the routine's
  author declared (the server does not enforce it), so a routine is "s" (read-only) only if
  it is declared NO SQL or READS SQL DATA *and* its body is visible, contains no statement
  that writes and calls no stored function that is not itself read-only; "v" otherwise.
- schemas: every database name. ``search_path`` is "" (MySQL has the current database).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import sqlglot
from sqlglot import exp
from sqlglot.dialects.mysql import MySQL
from sqlglot.errors import SqlglotError
from sqlglot.tokens import Token, TokenType

from policies.catalog import Catalog, RelationInfo, RoutineInfo
from policies.facts import Name
from protocols.mysql import messages as my
from proxy.catalog import DEFAULT_TIMEOUT, CatalogError, catalog_key
from proxy.config import Upstream
from proxy.mysql_upstream import (
    MySQLUpstreamConnection,
    MySQLUpstreamError,
    close,
    connect,
    query,
    server_name,
)

log = logging.getLogger("wiregate.catalog")

__all__ = ["load_mysql_catalog", "mysql_catalog_key", "catalog_query", "view_bases",
           "routine_writes"]

mysql_catalog_key = catalog_key   # (host, port, dbname, user), as for PostgreSQL

PROGRAM_NAME = "wiregate-catalog"
_CAPABILITIES = (my.CLIENT_MULTI_STATEMENTS | my.CLIENT_MULTI_RESULTS | my.CLIENT_LONG_FLAG
                 | my.CLIENT_TRANSACTIONS | my.CLIENT_DEPRECATE_EOF)

# Schemas whose relations are not listed: the sys views (over performance_schema, which is
# listed). information_schema and performance_schema are the server's own tables: listed as
# tables, so their columns trace to themselves (GUI clients read them under masking too).
SKIPPED_SCHEMAS = ("sys",)

# Errors a concurrent DDL or a busy server can cause mid-read: the read is retried.
# 1205 lock wait timeout, 1213 deadlock, 1412 table definition changed during the snapshot,
# 1146 a table dropped between listing and opening it.
_RACES = frozenset({1205, 1213, 1412, 1146})
_ATTEMPTS = 5
_RESULT_SETS = 5

_SKIP = ", ".join(f"'{s}'" for s in SKIPPED_SCHEMAS)

_TABLES = f"""
SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE
FROM information_schema.TABLES
WHERE TABLE_SCHEMA NOT IN ({_SKIP})
ORDER BY TABLE_SCHEMA, TABLE_NAME
"""

_COLUMNS = f"""
SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME
FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA NOT IN ({_SKIP})
ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION
"""

_VIEWS = f"""
SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION
FROM information_schema.VIEWS
WHERE TABLE_SCHEMA NOT IN ({_SKIP})
"""

_ROUTINES = """
SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE, SQL_DATA_ACCESS, ROUTINE_DEFINITION,
       SQL_MODE
FROM information_schema.ROUTINES
"""

_SCHEMAS = "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA"


def catalog_query() -> str:
    """The whole load as one multi-statement string: one round trip. The snapshot applies to
    InnoDB data; information_schema itself is read as the statements run."""
    return ";\n".join([
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
        _TABLES.strip(), _COLUMNS.strip(), _VIEWS.strip(), _ROUTINES.strip(), _SCHEMAS,
        "COMMIT",
    ])


def _where(up: Upstream) -> str:
    return f"upstream {up.name!r} ({server_name(up)}, database {up.dbname!r})"


# -- view bases ---------------------------------------------------------------------------------

def _with_of(node: exp.Expr) -> exp.With | None:
    w = node.args.get("with_") or node.args.get("with")
    return w if isinstance(w, exp.With) else None


def _visible_ctes(table: exp.Table) -> set[str]:
    """The CTE names an unqualified table reference may denote, by MySQL's scoping: inside a
    CTE of a plain WITH only the CTEs defined before it, inside WITH RECURSIVE all of them,
    elsewhere every CTE of an enclosing query."""
    names: set[str] = set()
    node: exp.Expr = table
    while node.parent is not None:
        parent = node.parent
        if isinstance(node, exp.CTE) and isinstance(parent, exp.With):
            ctes = list(parent.expressions)
            upto = len(ctes) if parent.args.get("recursive") else \
                next(i for i, c in enumerate(ctes) if c is node)
            names |= {c.alias_or_name for c in ctes[:upto]}
        elif not isinstance(node, exp.With):
            w = _with_of(parent)
            if w is not None:
                names |= {c.alias_or_name for c in w.expressions}
        node = parent
    return names


def view_bases(definition: str, schema: str) -> tuple[Name, ...]:
    """The relations a view definition reads, in order of first mention, unqualified names
    taken in the view's schema; CTE names and DUAL are not relations. Raises
    sqlglot's errors for a definition it cannot parse."""
    try:
        trees = sqlglot.parse(definition, read=MySQL)
    except SqlglotError:
        # a view created under NO_BACKSLASH_ESCAPES keeps a lone backslash in its strings
        trees = sqlglot.parse(definition, read=_NoBackslashEscapes)
    out: dict[Name, None] = {}
    for tree in trees:
        if tree is None:
            continue
        for table in tree.find_all(exp.Table):
            name, db = table.name, table.db
            if not name:
                continue              # a table function (JSON_TABLE): no stored relation
            if not db:
                if name.lower() == "dual" or name in _visible_ctes(table):
                    continue
                db = schema
            out.setdefault(Name(db, name), None)
    return tuple(out)


# -- routine volatility -------------------------------------------------------------------------

class _NoBackslashEscapes(MySQL):
    """sql_mode NO_BACKSLASH_ESCAPES: a backslash in a string is itself (the sys schema's
    routines are stored so)."""

    class Tokenizer(MySQL.Tokenizer):
        STRING_ESCAPES = ["'"]


class _AnsiQuotes(MySQL):
    """sql_mode ANSI_QUOTES: double quotes delimit identifiers."""

    class Tokenizer(MySQL.Tokenizer):
        QUOTES = ["'"]
        IDENTIFIERS = ["`", '"']


class _AnsiQuotesNoBackslashEscapes(MySQL):
    class Tokenizer(MySQL.Tokenizer):
        QUOTES = ["'"]
        IDENTIFIERS = ["`", '"']
        STRING_ESCAPES = ["'"]


_DIALECTS: dict[tuple[bool, bool], type[MySQL]] = {
    (False, False): MySQL, (True, False): _NoBackslashEscapes, (False, True): _AnsiQuotes,
    (True, True): _AnsiQuotesNoBackslashEscapes,
}

# Reserved words that start or mark a statement with an effect beyond reading wherever they
# appear unquoted: data and schema changes, procedure calls, files written, locking reads.
_WRITE_WORDS = frozenset({
    "INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "RENAME", "CALL",
    "LOAD", "GRANT", "REVOKE", "LOCK", "KILL", "CHANGE", "ANALYZE", "OPTIMIZE", "PURGE",
    "OUTFILE", "DUMPFILE", "NEXTVAL", "SETVAL",
})
# Non-reserved words (a column may be called so) that write only as a statement's first word.
# None of these is allowed in a stored function anyway; they matter for procedures.
_WRITE_STATEMENTS = frozenset({
    "TRUNCATE", "PREPARE", "EXECUTE", "FLUSH", "INSTALL", "UNINSTALL", "SHUTDOWN", "COMMIT",
    "ROLLBACK", "SAVEPOINT", "XA", "REPAIR", "BINLOG", "RESET", "MERGE", "HANDLER",
})
# What may follow SET at an assignment's start and change more than the session's variables:
# SET GLOBAL / PERSIST, SET @@global.x, SET PASSWORD, SET [DEFAULT] ROLE.
_SET_TARGETS = frozenset({"GLOBAL", "PERSIST", "PERSIST_ONLY", "PASSWORD", "ROLE",
                          "DEFAULT"})
# Built-in functions spelled like write words: INSERT(str, ...), REPLACE(str, ...),
# TRUNCATE(x, d), PASSWORD(str), when a parenthesis follows.
_ALSO_FUNCTIONS = frozenset({"INSERT", "REPLACE", "TRUNCATE", "PASSWORD"})
# Tokens after which a new statement starts inside a compound statement.
_STATEMENT_STARTS = frozenset({";", "BEGIN", "THEN", "ELSE", "DO", "LOOP", "REPEAT", ":",
                               "ATOMIC"})
_QUOTED = frozenset({TokenType.STRING, TokenType.IDENTIFIER, TokenType.NATIONAL_STRING,
                     TokenType.HEX_STRING, TokenType.BIT_STRING, TokenType.BYTE_STRING,
                     TokenType.RAW_STRING, TokenType.NUMBER})
_NAMES = frozenset({TokenType.VAR, TokenType.IDENTIFIER})
_NOT_CALLS = frozenset({"RETURN", "ELSEIF", "WHILE", "UNTIL"})   # RETURN (SELECT ...)


def _tokens(body: str, sql_mode: str = "") -> list[Token] | None:
    if "/*!" in body or "/*M!" in body:
        return None                   # executable comments: code the tokenizer would drop
    modes = {m.strip().upper() for m in sql_mode.split(",")}
    dialect = _DIALECTS[("NO_BACKSLASH_ESCAPES" in modes,
                         "ANSI_QUOTES" in modes or "ANSI" in modes)]
    try:
        return dialect().tokenize(body)
    except SqlglotError:
        return None


def routine_writes(body: str | None,
                   sql_mode: str = "") -> tuple[bool, set[tuple[str | None, str]]]:
    """Whether a routine body may write by itself, and the (schema or None, lower-cased
    name) of every function it calls. ``sql_mode`` is the routine's (how its strings and
    quotes read). A body that is missing (not visible to the catalog user) or cannot be
    tokenized may write."""
    if body is None:
        return True, set()
    tokens = _tokens(body, sql_mode)
    if tokens is None:
        return True, set()
    writes = False
    calls: set[tuple[str | None, str]] = set()
    depth = 0
    set_target = False                # at the start of a SET assignment
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i else None
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        paren = nxt is not None and nxt.token_type == TokenType.L_PAREN
        word = "" if tok.token_type in _QUOTED else tok.text.upper()
        at_start = prev is None or (prev.token_type not in _QUOTED
                                    and prev.text.upper() in _STATEMENT_STARTS)
        function = paren and word in _ALSO_FUNCTIONS
        if word in _WRITE_WORDS and not function:
            writes = True
        elif word in _WRITE_STATEMENTS and at_start and not function:
            writes = True
        elif word == "NEXT" and nxt is not None and nxt.text.upper() == "VALUE":
            writes = True             # NEXT VALUE FOR seq advances a sequence
        elif set_target and word in _SET_TARGETS and (
                word == "PASSWORD" or nxt is None or nxt.text not in ("=", ":=")):
            writes = True             # not a local variable of that name being assigned
        if tok.token_type == TokenType.L_PAREN:
            depth += 1
        elif tok.token_type == TokenType.R_PAREN:
            depth = max(depth - 1, 0)
        if word == "SET" or (set_target and tok.token_type == TokenType.SESSION_PARAMETER):
            set_target = True
        elif word == "," and depth == 0 and _in_set(tokens, i):
            set_target = True
        else:
            set_target = False
        if paren and tok.token_type in _NAMES and not (
                tok.token_type == TokenType.VAR and word in _NOT_CALLS):
            qualified = i >= 2 and tokens[i - 1].token_type == TokenType.DOT \
                and tokens[i - 2].token_type in _NAMES
            calls.add((tokens[i - 2].text if qualified else None, tok.text.lower()))
    return writes, calls


def _in_set(tokens: list[Token], i: int) -> bool:
    """Whether the comma at ``i`` separates assignments of a SET statement."""
    for tok in reversed(tokens[:i]):
        if tok.token_type in _QUOTED:
            continue
        word = tok.text.upper()
        if word == "SET":
            return True
        if word in _STATEMENT_STARTS:
            return False
    return False


_READ_ONLY_ACCESS = frozenset({"NO SQL", "READS SQL DATA"})


def _volatilities(rows: Sequence[tuple[str, str, str, str, str | None, str]],
                  mariadb: bool) -> dict[tuple[str, str, str], str]:
    """(schema, name, type) -> "s" or "v" for every routine row (schema, name, type,
    sql_data_access, body, sql_mode). Read-only functions are found as a fixpoint: a
    function calling a stored function that may write may write too.

    MariaDB's ROUTINE_DEFINITION is its re-printed body (mysql.proc.body_utf8), whose
    strings never use backslash escapes ('a\\'b' shows as 'a''b', 'c\\\\' as 'c\\'),
    whatever the routine's sql_mode; MySQL shows the body as written, read in its
    sql_mode."""
    functions = {(r[0], r[1].lower()) for r in rows if r[2] == "FUNCTION"}
    candidates: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for schema, name, rtype, access, body, sql_mode in rows:
        if access.upper() not in _READ_ONLY_ACCESS:
            continue
        writes, calls = routine_writes(
            body, sql_mode + (",NO_BACKSLASH_ESCAPES" if mariadb else ""))
        if writes:
            continue
        stored = {(s or schema, n) for s, n in calls} & functions
        stored.discard((schema, name.lower()))      # recursion adds nothing
        candidates[(schema, name.lower() if rtype == "FUNCTION" else "\0" + name)] = stored
    changed = True
    while changed:
        changed = False
        for key, called in list(candidates.items()):
            if any(c not in candidates for c in called):
                del candidates[key]
                changed = True
    out = {}
    for schema, name, rtype, *_ in rows:
        key = (schema, name.lower() if rtype == "FUNCTION" else "\0" + name)
        out[(schema, name, rtype)] = "s" if key in candidates else "v"
    return out


# -- reading ------------------------------------------------------------------------------------

Row = tuple[bytes | None, ...]


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "surrogateescape")


def _opt(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "surrogateescape")


def server_release(version: str) -> tuple[str, tuple[int, int, int]]:
    """("mariadb" | "mysql", (major, minor, patch)) from a greeting's version string
    ("5.5.5-10.11.19-MariaDB-0+deb12u1", "8.0.36"): executable comments are read by it."""
    text = version.removeprefix("5.5.5-")
    parts = []
    for piece in text.split("-", 1)[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    while len(parts) < 3:
        parts.append(0)
    return ("mariadb" if "mariadb" in version.lower() else "mysql",
            (parts[0], parts[1], parts[2]))


def _catalog_from_rows(results: list[list[Row]], version: int,
                       mariadb: bool = True, server_version: str = "") -> Catalog:
    if len(results) != _RESULT_SETS:
        raise CatalogError(f"expected {_RESULT_SETS} result sets from the catalog query, got "
                           f"{len(results)}")
    table_rows, column_rows, view_rows, routine_rows, schema_rows = results
    columns: dict[Name, list[str]] = {}
    for schema, table, column in column_rows:
        columns.setdefault(Name(_text(schema), _text(table)), []).append(_text(column))
    definitions = {Name(_text(s), _text(v)): _opt(d) for s, v, d in view_rows}
    relations = []
    for schema_b, name_b, type_b in table_rows:
        key = Name(_text(schema_b), _text(name_b))
        kind = "v" if _text(type_b).upper() == "VIEW" else "r"   # SYSTEM VIEW: the server's
        definition = definitions.get(key) if kind == "v" else None
        bases: tuple[Name, ...] = ()
        if kind == "v":
            if not definition:
                # Without SHOW VIEW the server hides the definition: the view's bases are
                # unknown, so it stays a view without bases and without lineage.
                log.warning("view definition not visible to the catalog user",
                            extra={"view": str(key)})
                definition = None
            else:
                try:
                    bases = view_bases(definition, key.schema or "")
                except SqlglotError as exc:
                    log.warning("cannot parse a view definition",
                                extra={"view": str(key), "error": str(exc)[:200]})
        relations.append(RelationInfo(key, kind, bases, (), tuple(columns.get(key, ())),
                                      definition))
    rows = [(_text(s), _text(n), _text(t).upper(), _text(a), _opt(d), _text(m))
            for s, n, t, a, d, m in routine_rows]
    volatility = _volatilities(rows, mariadb)
    routines = [RoutineInfo(Name(s, n), 0, volatility[(s, n, t)],
                            "f" if t == "FUNCTION" else "p")
                for s, n, t, *_ in rows]
    schemas = [_text(s) for (s,) in schema_rows if s]
    server, release = server_release(server_version) if server_version else (
        "mariadb" if mariadb else "mysql", (10, 11, 0))
    return Catalog.build(relations, routines, schemas, version, search_path="",
                         server=server, server_version=release)


async def _load(up: Upstream, version: int, timeout: float) -> Catalog:
    conn: MySQLUpstreamConnection = await connect(
        up, capabilities=_CAPABILITIES, database=up.dbname or None,
        attributes={"program_name": PROGRAM_NAME}, timeout=timeout)
    try:
        results = await query(conn, catalog_query())
        return _catalog_from_rows(results, version,
                                  "mariadb" in conn.greeting.server_version.lower(),
                                  conn.greeting.server_version)
    finally:
        await close(conn)


async def load_mysql_catalog(up: Upstream, version: int,
                             timeout: float = DEFAULT_TIMEOUT) -> Catalog:
    """Read one catalog snapshot from the MySQL/MariaDB upstream ``up``, labelled
    ``version``.

    Every failure (cannot connect, login refused, query error, broken stream, no answer
    within ``timeout`` seconds) is a CatalogError naming the upstream; a read that collides
    with concurrent DDL is retried."""
    where = _where(up)
    try:
        for attempt in range(_ATTEMPTS):
            try:
                return await asyncio.wait_for(_load(up, version, timeout), timeout)
            except MySQLUpstreamError as exc:
                if not exc.from_server or exc.errno not in _RACES \
                        or attempt == _ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.02 * (attempt + 1))
        raise AssertionError("unreachable")
    except (CatalogError, MySQLUpstreamError) as exc:
        raise CatalogError(f"catalog of {where}: {exc}") from exc
    except TimeoutError as exc:
        raise CatalogError(f"catalog of {where}: no answer within {timeout:g} s") from exc
    except (OSError, ValueError) as exc:
        raise CatalogError(f"catalog of {where}: {exc}") from exc

"""Loading the catalog facts the guardrails need from an upstream PostgreSQL server.

The guardrails resolve names against a ``policies.catalog.Catalog``; this module fills one
over Wiregate's own connection (never a client's, so a client's session state cannot change
what is read), keeps one snapshot per upstream in ``CatalogCache``, and writes snapshots to
files so ``wiregate explain-policy`` can decide offline exactly as the proxy would.

Everything is read in one round trip: a single simple-protocol Query holding a read-only
REPEATABLE READ transaction, so all result sets come from one consistent catalog state.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from policies.catalog import Catalog, RelationInfo, RoutineInfo
from policies.facts import Name
from protocols.postgres import messages as m
from proxy.config import Upstream
from proxy.upstream import UpstreamError, connect, read_message

log = logging.getLogger("wiregate.catalog")

APPLICATION_NAME = "wiregate-catalog"
DEFAULT_TIMEOUT = 10.0
DEFAULT_REFRESH_INTERVAL = 300.0
DEFAULT_RETRY_DELAY = 30.0
# Catalog rows are short; anything this large means the stream is not what we think it is.
MAX_MESSAGE = 16 * 1024 * 1024

_I32 = struct.Struct("!i")
_H16 = struct.Struct("!h")

# Versions come from one process-wide counter, so a snapshot's version never repeats, even
# across caches (a configuration reload builds a new cache; decisions cached against the
# old one must still look stale).
_versions = itertools.count(1)


# Errors a concurrent DROP can cause mid-read ("could not open relation with OID", "cache
# lookup failed", undefined object): the read is retried.
_RACES = frozenset({"XX000", "42P01", "42704", "42883", "40001", "40P01"})
_ATTEMPTS = 5


class CatalogError(Exception):
    """The catalog could not be read; the message says where and why (never the SQL sent)."""

    transient = False   # a race with concurrent DDL: reading again may succeed


# -- the queries ----------------------------------------------------------------------------

# Relations the guardrails may meet by name. pg_toast and temporary schemas are left out:
# they are not addressed by name in statements, and temporary ones belong to other sessions.
_RELATIONS = """
SELECT n.nspname, c.relname, c.relkind
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND n.nspname <> 'pg_toast' AND n.nspname !~ '^pg_(toast_)?temp_'
"""

# What each view or materialized view reads, one level deep. Two sources, united:
# - the relations its _RETURN rule depends on in pg_depend (this also catches relations named
#   only through regclass constants, such as nextval('seq'));
# - the relation ids (":relid N") in the rule's stored query tree. Objects created by initdb
#   are pinned and get no pg_depend rows, so for the system views (pg_shadow reads pg_authid)
#   this is the only source. User-written text in a node tree has its whitespace escaped, so
#   a name or alias cannot imitate ":relid N"; and an extra base could only add protection.
# The rule also refers to its own view; that is not a base.
_VIEW_BASES = """
SELECT DISTINCT vn.nspname, vc.relname, bn.nspname, bc.relname
FROM (
    SELECT rw.ev_class AS v_oid, d.refobjid AS b_oid
    FROM pg_catalog.pg_rewrite rw
    JOIN pg_catalog.pg_depend d
      ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = rw.oid
     AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
    WHERE rw.rulename = '_RETURN'
    UNION
    SELECT rw.ev_class, x[1]::pg_catalog.oid
    FROM pg_catalog.pg_rewrite rw,
         pg_catalog.regexp_matches(rw.ev_action::pg_catalog.text, ':relid ([0-9]+)', 'g') x
    WHERE rw.rulename = '_RETURN'
) r
JOIN pg_catalog.pg_class vc ON vc.oid = r.v_oid
JOIN pg_catalog.pg_namespace vn ON vn.oid = vc.relnamespace
JOIN pg_catalog.pg_class bc ON bc.oid = r.b_oid
JOIN pg_catalog.pg_namespace bn ON bn.oid = bc.relnamespace
WHERE r.b_oid <> r.v_oid AND vc.relkind IN ('v', 'm')
ORDER BY 1, 2, 3, 4
"""

# An aggregate is labelled immutable whatever its support functions do: it is as volatile
# as the most volatile of them (a transition function may write).
_ROUTINES = """
SELECT p.oid, n.nspname, p.proname,
       CASE WHEN a.aggfnoid IS NULL THEN p.provolatile::text
            ELSE (SELECT coalesce(max(f.provolatile::text), p.provolatile::text)
                  FROM pg_catalog.pg_proc f
                  WHERE f.oid IN (a.aggtransfn, a.aggfinalfn, a.aggcombinefn, a.aggserialfn,
                                  a.aggdeserialfn, a.aggmtransfn, a.aggminvtransfn,
                                  a.aggmfinalfn))
       END,
       {kind}
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
LEFT JOIN pg_catalog.pg_aggregate a ON a.aggfnoid = p.oid
"""
# prokind exists from PostgreSQL 11 on; before that only functions, aggregates and windows.
_KIND_11 = "p.prokind"
_KIND_OLD = "CASE WHEN p.proisagg THEN 'a' WHEN p.proiswindow THEN 'w' ELSE 'f' END"

_SCHEMAS = "SELECT nspname FROM pg_catalog.pg_namespace"

# Columns of every table-like relation, in order, for column lineage.
_COLUMNS = """
SELECT n.nspname, c.relname, a.attname
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname <> 'pg_toast' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
ORDER BY c.oid, a.attnum
"""

# View definitions, so the lineage of a view's columns is its query's.
_VIEW_DEFINITIONS = """
SELECT n.nspname, c.relname, pg_catalog.pg_get_viewdef(c.oid)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm')
"""

# Partitions and inheritance children share rows with their parents: protecting one protects
# the family.
_PARENTS = """
SELECT cn.nspname, c.relname, pn.nspname, p.relname
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
WHERE c.relkind IN ('r', 'p', 'f')
"""


def catalog_query(server_major: int) -> str:
    """The whole load as one simple-protocol string: one round trip, one snapshot.

    SET LOCAL pins search_path for the transaction only, so a role-level search_path that
    places another schema before pg_catalog cannot redefine an operator used here, and a
    pooled server connection is left as it was found."""
    kind = _KIND_11 if server_major >= 11 else _KIND_OLD
    return ";\n".join([
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        # the role's own default path, which client sessions start with (read before pinning)
        "SELECT pg_catalog.current_setting('search_path')",
        "SET LOCAL search_path = pg_catalog",
        _RELATIONS.strip(),
        _VIEW_BASES.strip(),
        _ROUTINES.format(kind=kind).strip(),
        _SCHEMAS,
        _PARENTS.strip(),
        _COLUMNS.strip(),
        _VIEW_DEFINITIONS.strip(),
        "COMMIT",
    ])


def _server_major(parameters: dict[str, str]) -> int:
    """Major version from the server_version the server reported at login (11 if absent,
    which selects the modern query; a server too old for it answers with an error)."""
    found = re.match(r"\s*(\d+)", parameters.get("server_version", ""))
    return int(found.group(1)) if found else 11


def _where(up: Upstream) -> str:
    place = up.unix_path if up.is_unix else f"{up.host}:{up.port}"
    return f"upstream {up.name!r} ({place}, database {up.dbname!r})"


# -- reading result sets ---------------------------------------------------------------------

Row = list[str | None]


def _text_row(body: bytes) -> Row:
    """Decode a text-format DataRow; kept tight because pg_proc alone is thousands of rows."""
    if len(body) < 2:
        raise m.ProtocolViolation("DataRow: truncated")
    (count,) = _H16.unpack_from(body, 0)
    pos = 2
    out: Row = []
    end = len(body)
    for _ in range(count):
        if pos + 4 > end:
            raise m.ProtocolViolation("DataRow: truncated")
        (n,) = _I32.unpack_from(body, pos)
        pos += 4
        if n < 0:
            out.append(None)
            continue
        if pos + n > end:
            raise m.ProtocolViolation("DataRow: truncated")
        out.append(body[pos:pos + n].decode("utf-8", "surrogateescape"))
        pos += n
    if pos != end:
        raise m.ProtocolViolation("DataRow: unexpected trailing bytes")
    return out


async def _run_query(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     sql: str) -> list[list[Row]]:
    """Send one Query and collect every result set up to ReadyForQuery.

    Reading continues past an ErrorResponse to ReadyForQuery so the error reported is the
    server's, not a broken stream."""
    writer.write(m.Query(sql).encode())
    await writer.drain()
    results: list[list[Row]] = []
    rows: list[Row] | None = None
    error: m.ErrorResponse | None = None
    while True:
        code, body = await read_message(reader, MAX_MESSAGE)
        if code == b"D":
            if rows is None:
                raise m.ProtocolViolation("DataRow before RowDescription")
            rows.append(_text_row(body))
        elif code == b"T":
            rows = []
            results.append(rows)
        elif code == b"C":
            rows = None
        elif code == b"E":
            err = m.decode_backend(code, body)
            assert isinstance(err, m.ErrorResponse)
            error = error or err
        elif code == b"Z":
            break
        elif code in (b"N", b"S", b"A", b"I"):
            continue  # notices, parameter changes, notifications, empty statements
        else:
            raise m.ProtocolViolation(f"unexpected message {code!r} in a query response")
    if error is not None:
        exc = CatalogError(f"the server refused the catalog query: {error.message} "
                           f"(SQLSTATE {error.sqlstate or 'unknown'})")
        exc.transient = error.sqlstate in _RACES
        raise exc
    return results


def _catalog_from_rows(results: list[list[Row]], version: int) -> Catalog:
    if len(results) != 8:
        raise CatalogError(f"expected 8 result sets from the catalog query, got {len(results)}")
    (path_rows, rel_rows, base_rows, proc_rows, schema_rows, parent_rows, column_rows,
     definition_rows) = results
    columns: dict[Name, list[str]] = {}
    for cs, cn, col in column_rows:
        columns.setdefault(Name(cs, cn or ""), []).append(col or "")
    definitions = {Name(vs, vn or ""): d for vs, vn, d in definition_rows if d}
    search_path = path_rows[0][0] if path_rows and path_rows[0][0] else '"$user", public'
    bases: dict[Name, list[Name]] = {}
    for vs, vn, bs, bn in base_rows:
        bases.setdefault(Name(vs, vn or ""), []).append(Name(bs, bn or ""))
    parents: dict[Name, list[Name]] = {}
    for cs, cn, ps, pn in parent_rows:
        parents.setdefault(Name(cs, cn or ""), []).append(Name(ps, pn or ""))
    relations = []
    for schema, name, kind in rel_rows:
        key = Name(schema, name or "")
        relations.append(RelationInfo(key, kind or "r", tuple(bases.get(key, ())),
                                      tuple(parents.get(key, ())),
                                      tuple(columns.get(key, ())), definitions.get(key)))
    routines = [RoutineInfo(Name(schema, name or ""), int(oid or 0), vol or "v", kind or "f")
                for oid, schema, name, vol, kind in proc_rows]
    schemas = [s for (s,) in schema_rows if s]
    return Catalog.build(relations, routines, schemas, version, search_path=search_path)


async def _load(up: Upstream, version: int) -> Catalog:
    conn = await connect(up, {"application_name": APPLICATION_NAME,
                              "client_encoding": "UTF8"})
    try:
        sql = catalog_query(_server_major(conn.parameters))
        results = await _run_query(conn.reader, conn.writer, sql)
        return _catalog_from_rows(results, version)
    finally:
        with contextlib.suppress(Exception):
            conn.writer.write(m.Terminate().encode())
        conn.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.writer.wait_closed(), 1.0)


async def load_catalog(up: Upstream, version: int,
                       timeout: float = DEFAULT_TIMEOUT) -> Catalog:
    """Read one catalog snapshot from ``up``, labelled ``version``.

    Every failure (cannot connect, login refused, query error, broken stream, no answer
    within ``timeout`` seconds) is a CatalogError: the caller has one thing to handle, and a
    missing catalog is never mistaken for an empty one."""
    where = _where(up)
    try:
        for attempt in range(_ATTEMPTS):
            try:
                return await asyncio.wait_for(_load(up, version), timeout)
            except CatalogError as exc:
                # DDL in another session between the catalog scan and a per-object lookup
                # (pg_get_viewdef of a view just dropped): read again.
                if not exc.transient or attempt == _ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.02 * (attempt + 1))
        raise AssertionError("unreachable")
    except CatalogError as exc:
        raise CatalogError(f"catalog of {where}: {exc}") from exc
    except UpstreamError as exc:
        raise CatalogError(f"catalog of {where}: {exc}") from exc
    except TimeoutError as exc:
        raise CatalogError(f"catalog of {where}: no answer within {timeout:g} s") from exc
    except asyncio.IncompleteReadError as exc:
        raise CatalogError(f"catalog of {where}: the server closed the connection") from exc
    except m.ProtocolViolation as exc:
        raise CatalogError(f"catalog of {where}: invalid data from the server: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise CatalogError(f"catalog of {where}: {exc}") from exc


# -- one snapshot per upstream -----------------------------------------------------------------

Loader = Callable[[Upstream, int], Awaitable[Catalog]]
_Key = tuple[str, int, str, str]


def _key(up: Upstream) -> _Key:
    return (up.host, up.port, up.dbname, up.user)


catalog_key = _key  # one cache entry per upstream server, database and login


@dataclass
class _Entry:
    catalog: Catalog | None = None
    due: float = 0.0              # monotonic time the next refresh is due
    task: asyncio.Task[Catalog | None] | None = None
    again: bool = False           # invalidated while a load ran: that load may predate the DDL
    dirty: bool = False           # invalidated and not yet re-read: decisions should wait
    started: float = 0.0          # monotonic start of the load that produced ``catalog``
    error: CatalogError | None = None  # the last load's failure, None after a success


class CatalogCache:
    """One catalog snapshot per upstream, loaded once and shared by every session.

    A snapshot is refreshed lazily: ``get`` starts a background refresh when the snapshot is
    older than ``refresh_interval`` seconds (or was invalidated) and meanwhile returns the
    snapshot it has, so no statement waits on a refresh. Only the very first load is awaited.
    A failed refresh keeps the old snapshot and is retried after ``retry_delay`` seconds.

    The cache belongs to the event loop that first uses it: the shared loads are tasks."""

    def __init__(self, refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
                 timeout: float = DEFAULT_TIMEOUT, retry_delay: float = DEFAULT_RETRY_DELAY,
                 loader: Loader | None = None) -> None:
        self.refresh_interval = refresh_interval
        self.timeout = timeout
        self.retry_delay = retry_delay
        self._loader: Loader = loader or self._default_loader
        self._entries: dict[_Key, _Entry] = {}

    async def _default_loader(self, up: Upstream, version: int) -> Catalog:
        return await load_catalog(up, version, self.timeout)

    def current(self, up: Upstream) -> Catalog | None:
        """The snapshot held for ``up`` right now, without loading: for synchronous code."""
        entry = self._entries.get(_key(up))
        return entry.catalog if entry else None

    async def get(self, up: Upstream) -> Catalog:
        """The snapshot for ``up``; the first call loads it, concurrent callers share it."""
        entry = self._entries.setdefault(_key(up), _Entry())
        if entry.catalog is not None:
            if time.monotonic() >= entry.due:
                self._start(up, entry)
            return entry.catalog
        task = self._start(up, entry)
        # shield: one caller giving up must not cancel the load the others are waiting on
        got = await asyncio.shield(task)
        if got is None:
            raise entry.error or CatalogError(f"catalog of {_where(up)} is not available")
        return got

    def invalidate(self, up: Upstream) -> None:
        """Mark the snapshot stale (a DDL statement ran) and start refreshing it now.

        Without a running event loop the refresh starts at the next ``get``."""
        entry = self._entries.get(_key(up))
        if entry is None:
            return
        entry.due = 0.0
        entry.dirty = entry.catalog is not None
        if entry.task is not None and not entry.task.done():
            entry.again = True
            return
        if entry.catalog is None:
            return  # nothing loaded yet: the next get loads from scratch anyway
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._start(up, entry)

    async def refresh(self, up: Upstream) -> Catalog:
        """Load a new snapshot now and return it; raises CatalogError if that load fails
        (the old snapshot is kept for ``get``)."""
        entry = self._entries.setdefault(_key(up), _Entry())
        entry.due = 0.0
        if entry.task is not None and not entry.task.done():
            entry.again = True
        task = self._start(up, entry)
        got = await asyncio.shield(task)
        if entry.error is not None or got is None:
            raise entry.error or CatalogError(f"catalog of {_where(up)} is not available")
        return got

    def entry(self, key: _Key | None) -> _Entry | None:
        """The cache entry for a ``catalog_key``, for callers that ask on every statement."""
        return self._entries.get(key) if key is not None else None

    def stale(self, up: Upstream) -> bool:
        """Invalidated by DDL and not re-read yet: the snapshot may not match the schema."""
        entry = self._entries.get(_key(up))
        return entry is not None and entry.dirty

    def due(self, up: Upstream) -> None:
        """Start the periodic refresh if it is due (long sessions never call ``get``)."""
        entry = self._entries.get(_key(up))
        if entry is not None and entry.catalog is not None and time.monotonic() >= entry.due \
                and (entry.task is None or entry.task.done()):
            self._start(up, entry)

    async def fresh(self, up: Upstream, since: float) -> Catalog:
        """A snapshot whose load started at or after ``since`` (monotonic): what the server's
        catalog looked like no earlier than that moment. Concurrent callers share loads."""
        entry = self._entries.get(_key(up))
        if entry is not None and entry.catalog is not None and entry.started >= since:
            return entry.catalog
        return await self.refresh(up)

    async def close(self) -> None:
        """Cancel loads still running, so shutdown does not leave tasks behind."""
        tasks = [e.task for e in self._entries.values() if e.task and not e.task.done()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def _start(self, up: Upstream, entry: _Entry) -> asyncio.Task[Catalog | None]:
        if entry.task is None or entry.task.done():
            entry.task = asyncio.get_running_loop().create_task(self._run(up, entry),
                                                                name=f"catalog:{up.name}")
        return entry.task

    async def _run(self, up: Upstream, entry: _Entry) -> Catalog | None:
        """Load until a load started after the last invalidation has finished."""
        while True:
            entry.again = False
            started = time.monotonic()
            try:
                cat = await self._loader(up, next(_versions))
            except Exception as exc:
                entry.dirty = False  # decisions go on with the previous snapshot, logged
                err = exc if isinstance(exc, CatalogError) else CatalogError(
                    f"catalog of {_where(up)}: {type(exc).__name__}: {exc}")
                entry.error = err
                if entry.catalog is not None:
                    entry.due = time.monotonic() + self.retry_delay
                    log.warning("catalog refresh failed; keeping the previous snapshot",
                                extra={"upstream": up.name, "error": str(err),
                                       "version": entry.catalog.version})
                return entry.catalog
            entry.catalog = cat
            entry.started = started
            entry.error = None
            if not entry.again:
                entry.dirty = False
                entry.due = time.monotonic() + self.refresh_interval
                return cat


# -- snapshot files ----------------------------------------------------------------------------

def save_snapshot(cat: Catalog, path: str | os.PathLike[str]) -> None:
    """Write ``cat`` as JSON; atomically, so a reader never sees half a snapshot."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(cat.to_json())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_snapshot(path: str | os.PathLike[str]) -> Catalog:
    """Read a snapshot written by ``save_snapshot``; a bad file is a CatalogError naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read catalog snapshot {path}: {exc.strerror or exc}") from exc
    try:
        return Catalog.from_json(text)
    except (ValueError, TypeError, KeyError) as exc:
        raise CatalogError(f"catalog snapshot {path} is not valid: {exc}") from exc

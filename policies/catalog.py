"""Catalog facts the guardrails resolve names against: relations, views' base tables, routines.

Plain data. The proxy fills it from the server over its own connection (``proxy/catalog.py``)
and ``wiregate explain-policy`` can load it from a snapshot file; either way the decision code
sees the same object. A fact that is missing here is treated as unknown, and unknown is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pglast.parser import ParseError

from policies import mysql_lineage
from policies.facts import Name, Unparseable
from policies.lineage import UNRESOLVED, Resolver, Sources, lineage, table_columns

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")


@dataclass(frozen=True)
class RelationInfo:
    """A table-like object. ``kind`` is PostgreSQL's relkind letter (MySQL: r or v)."""

    name: Name
    kind: str = "r"
    bases: tuple[Name, ...] = ()   # for views: the relations the view reads (one level)
    parents: tuple[Name, ...] = ()  # partition parent / inheritance parents (pg_inherits)
    columns: tuple[str, ...] = ()   # column names in order (for lineage)
    definition: str | None = None   # views: the query, as pg_get_viewdef prints it


@dataclass(frozen=True)
class RoutineInfo:
    """A function or procedure and whether it may write.

    ``volatility`` is PostgreSQL's provolatile (i immutable, s stable, v volatile); MySQL
    routines map READS SQL DATA / NO SQL to "s" and the rest to "v"."""

    name: Name
    oid: int = 0
    volatility: str = "v"
    kind: str = "f"               # f function, p procedure, a aggregate, w window

    @property
    def read_only(self) -> bool:
        return self.volatility in ("i", "s") and self.kind != "p"


@dataclass
class Catalog:
    """One upstream's catalog snapshot. ``version`` changes on every refresh, so anything
    cached against an older snapshot can tell it is stale."""

    relations: dict[Name, RelationInfo] = field(default_factory=dict)
    routines: dict[Name, list[RoutineInfo]] = field(default_factory=dict)
    schemas: set[str] = field(default_factory=set)
    version: int = 0
    loaded: bool = False
    search_path: str = '"$user", public'   # the upstream role's default, as the server says
    # MySQL/MariaDB: which server and release, as executable comments and lineage read text.
    server: str = "mariadb"
    server_version: tuple[int, int, int] = (10, 11, 0)

    def __post_init__(self) -> None:
        self._by_oid = {r.oid: r for rs in self.routines.values() for r in rs if r.oid}
        self._children: dict[Name, list[Name]] = {}
        for rel in self.relations.values():
            for parent in rel.parents:
                self._children.setdefault(parent, []).append(rel.name)

    # -- building -------------------------------------------------------------------------

    @classmethod
    def build(cls, relations: Iterable[RelationInfo], routines: Iterable[RoutineInfo],
              schemas: Iterable[str] = (), version: int = 1,
              search_path: str = '"$user", public', server: str = "mariadb",
              server_version: tuple[int, int, int] = (10, 11, 0)) -> Catalog:
        rels = {r.name: r for r in relations}
        procs: dict[Name, list[RoutineInfo]] = {}
        for p in routines:
            procs.setdefault(p.name, []).append(p)
        names = set(schemas) | {n.schema for n in rels if n.schema} | {
            n.schema for n in procs if n.schema}
        return cls(rels, procs, names, version, True, search_path, server, server_version)

    def to_json(self) -> str:
        return json.dumps({
            "relations": [[r.name.schema, r.name.name, r.kind,
                           [[b.schema, b.name] for b in r.bases],
                           [[p.schema, p.name] for p in r.parents],
                           list(r.columns), r.definition]
                          for r in self.relations.values()],
            "routines": [[p.name.schema, p.name.name, p.oid, p.volatility, p.kind]
                         for ps in self.routines.values() for p in ps],
            "schemas": sorted(self.schemas),
            "search_path": self.search_path,
            "server": self.server,
            "server_version": list(self.server_version),
        }, indent=0)

    @classmethod
    def from_json(cls, text: str) -> Catalog:
        data: dict[str, Any] = json.loads(text)
        rels = [RelationInfo(Name(r[0], r[1]), r[2], tuple(Name(bs, bn) for bs, bn in r[3]),
                             tuple(Name(ps, pn) for ps, pn in (r[4] if len(r) > 4 else ())),
                             tuple(r[5]) if len(r) > 5 else (),
                             r[6] if len(r) > 6 else None)
                for r in data.get("relations", [])]
        procs = [RoutineInfo(Name(s, n), oid, vol, kind)
                 for s, n, oid, vol, kind in data.get("routines", [])]
        release = data.get("server_version", [10, 11, 0])
        return cls.build(rels, procs, data.get("schemas", []),
                         search_path=data.get("search_path", '"$user", public'),
                         server=data.get("server", "mariadb"),
                         server_version=(int(release[0]), int(release[1]), int(release[2])))

    # -- resolution ---------------------------------------------------------------------------

    @staticmethod
    def effective_path(path: Sequence[str]) -> list[str]:
        """The schemas an unqualified name is looked up in, in the server's order:
        pg_catalog first unless the path places it explicitly."""
        out = [s for s in path if s and s != "pg_temp" and not s.startswith("pg_temp_")]
        if "pg_catalog" not in out:
            out.insert(0, "pg_catalog")
        return out

    def relation_candidates(self, name: Name, path: Sequence[str]) -> list[RelationInfo]:
        """Every relation the name may denote: the qualified one, or each match on the path.

        Rules that protect tables check all candidates, not only the first: a search_path the
        proxy did not see exactly must not turn a protected table into an unprotected one."""
        if name.schema is not None:
            got = self.relations.get(name)
            return [got] if got else []
        out = []
        for schema in self.effective_path(path):
            got = self.relations.get(Name(schema, name.name))
            if got:
                out.append(got)
        return out

    def resolve_relation(self, name: Name, path: Sequence[str]) -> RelationInfo | None:
        found = self.relation_candidates(name, path)
        return found[0] if found else None

    def base_tables(self, rel: RelationInfo) -> set[Name]:
        """The tables a relation finally reads or writes: itself, or a view's bases, expanded
        through nested views. A base that is missing from the catalog is returned as named."""
        out: set[Name] = set()
        seen: set[Name] = set()
        stack = [rel.name]
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            info = self.relations.get(n)
            if info is not None and info.kind in ("v", "m") and info.bases:
                stack.extend(info.bases)
            else:
                out.add(n)
        return out

    def family(self, name: Name) -> set[Name]:
        """A table with every ancestor and descendant through partitioning and inheritance:
        a write to any of them may change rows the others show."""
        out = {name}
        stack = [name]
        while stack:
            n = stack.pop()
            rel = self.relations.get(n)
            related = list(rel.parents) if rel else []
            related += self._children.get(n, [])
            for r in related:
                if r not in out:
                    out.add(r)
                    stack.append(r)
        return out

    def lineage_resolver(self, path: Sequence[str]) -> Resolver:
        """Relation columns for column lineage: a table's columns carry themselves, a view's
        carry its definition's lineage (views over views expanded; a cycle or a definition
        that does not parse is UNRESOLVED). The planner's statistics (pg_stats,
        pg_statistic, ...) hold sampled values of any column: those carry ANY_MASKED, also
        when the catalog does not list pg_catalog's relations."""
        from policies.lineage import STATISTICS_COLUMNS, statistics_columns

        memo = self.__dict__.setdefault("_lineage_memo", {})
        busy: set[Name] = set()

        def system_statistics(name: Name) -> bool:
            """The name denotes a pg_catalog statistics relation, as the server looks it up:
            unqualified, pg_catalog wins unless a relation earlier on the path shadows it."""
            if name.name not in STATISTICS_COLUMNS:
                return False
            if name.schema is not None:
                return name.schema == "pg_catalog"
            for schema in self.effective_path(path):
                if schema == "pg_catalog":
                    return True
                if Name(schema, name.name) in self.relations:
                    return False
            return True

        def resolve(name: Name) -> list[tuple[str, Sources]] | None:
            stats = system_statistics(name)
            rel = self.relations.get(Name("pg_catalog", name.name)) if stats \
                else self.resolve_relation(name, path)
            if rel is None:
                return statistics_columns(name.name, None) if stats else None
            cols = columns_of(rel)
            return statistics_columns(name.name, cols) if stats and cols is not None else cols

        def columns_of(rel: RelationInfo) -> list[tuple[str, Sources]] | None:
            if rel.name in memo:
                return list(memo[rel.name])
            if rel.definition is None or rel.kind not in ("v", "m"):
                cols = table_columns(rel.name, list(rel.columns))
            elif rel.name in busy:
                return None
            else:
                busy.add(rel.name)
                try:
                    # a view's own names resolve under its schema first, then pg_catalog
                    inner = self.lineage_resolver([rel.name.schema or "public", *path])
                    outs = lineage(rel.definition, inner)
                    cols = [(rel.columns[i] if i < len(rel.columns) else o.name, o.sources)
                            for i, o in enumerate(outs)]
                except (ParseError, ValueError):  # a definition we cannot read: unknown
                    cols = [(c, frozenset({UNRESOLVED})) for c in rel.columns]
                finally:
                    busy.discard(rel.name)
            memo[rel.name] = tuple(cols)
            return cols

        return resolve

    # -- MySQL/MariaDB --------------------------------------------------------------------------

    def mysql_stored_function(self, name: Name, database: str | None) -> bool:
        """Whether a MySQL call runs a stored function: ``db.f()`` always (built-ins take no
        database), ``f()`` when the current database has a function of that name (names
        compare case-insensitively). Other names are built-ins, or fail on the server."""
        if name.schema is not None:
            return True
        index: set[tuple[str | None, str]] | None = self.__dict__.get("_mysql_functions")
        if index is None:
            index = {(r.name.schema, r.name.name.lower()) for rs in self.routines.values()
                     for r in rs if r.kind != "p"}
            self.__dict__["_mysql_functions"] = index
        return database is not None and (database, name.name.lower()) in index

    def mysql_lineage_resolver(self, database: str | None) -> Resolver:
        """Relation columns for MySQL column lineage, with ``database`` the session's current
        one: an unqualified name is looked up there only (no search path). Table names
        compare exactly (as on Linux); column names are lower-cased, as MySQL compares them,
        so masking patterns name columns in lower case. A view's columns carry its
        definition's lineage (resolved in the view's database); a view whose definition is
        hidden, does not parse, has another width or is part of a cycle is UNRESOLVED. The
        server's statistics tables carry ANY_MASKED (``mysql_lineage.with_statistics``)."""
        resolvers: dict[str | None, Resolver] = self.__dict__.setdefault(
            "_mysql_resolvers", {})
        if database in resolvers:
            return resolvers[database]
        memo: dict[Name, tuple[tuple[str, Sources], ...]] = self.__dict__.setdefault(
            "_mysql_lineage_memo", {})
        busy: set[Name] = self.__dict__.setdefault("_mysql_busy", set())
        unknown: Sources = frozenset({UNRESOLVED})

        def stored(name: Name) -> list[tuple[str, Sources]] | None:
            rel = self.relations.get(name)
            if rel is None:
                return None
            if rel.name in memo:
                return list(memo[rel.name])
            if rel.kind not in ("v", "m"):
                cols = table_columns(rel.name, [c.lower() for c in rel.columns])
            elif rel.definition is None:
                cols = [(c.lower(), unknown) for c in rel.columns]
            elif rel.name in busy:
                return None
            else:
                busy.add(rel.name)
                try:
                    cols = self._mysql_view_columns(rel)
                finally:
                    busy.discard(rel.name)
            memo[rel.name] = tuple(cols)
            return cols

        with_stats = mysql_lineage.with_statistics(stored)

        def resolve(name: Name) -> list[tuple[str, Sources]] | None:
            schema = name.schema or database
            return with_stats(Name(schema, name.name)) if schema else None

        resolvers[database] = resolve
        return resolve

    def _mysql_view_columns(self, rel: RelationInfo) -> list[tuple[str, Sources]]:
        assert rel.definition is not None
        db = rel.name.schema
        try:
            outs = mysql_lineage.lineage(
                rel.definition, self.mysql_lineage_resolver(db), self.server,
                self.server_version, lambda n: self.mysql_stored_function(n, db))
        except Unparseable:   # a definition we cannot read: unknown
            outs = []
        names = [c.lower() for c in rel.columns]
        if not outs or (names and len(outs) != len(names)):
            return [(c, frozenset({UNRESOLVED})) for c in names or ["?"]]
        return [(names[i] if names else o.name.lower(), o.sources) for i, o in enumerate(outs)]

    def routines_named(self, name: Name, path: Sequence[str]) -> list[RoutineInfo]:
        """All overloads the call may resolve to (argument types are not matched: every
        overload counts, so one that may write makes the call one that may write)."""
        if name.schema is not None:
            return list(self.routines.get(name, ()))
        for schema in self.effective_path(path):
            got = self.routines.get(Name(schema, name.name))
            if got:
                return list(got)
        return []

    def routine_by_oid(self, oid: int) -> RoutineInfo | None:
        return self._by_oid.get(oid)

"""Column lineage of a PostgreSQL query: which source columns each output column may carry.

Masking decides on lineage, never on result bytes: an output column is masked when any source
column it may carry is masked, whatever the expression around it (an alias, a cast, lower(),
a concatenation, an aggregate, a JSON builder). Lineage is an over-approximation on purpose:
every column an expression reads counts, and what cannot be traced is ``UNRESOLVED`` (masked
or refused, per the profile), never "clean".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, enums, parse_sql

from policies.facts import Name
from policies.statements import children


@dataclass(frozen=True, order=True)
class Source:
    """A column of a stored relation. ``UNRESOLVED`` stands for "cannot tell"."""

    schema: str
    table: str
    column: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}.{self.column}"


UNRESOLVED = Source("?", "?", "?")
# Marks a value computed from its sources rather than one of them as stored (lower(email),
# email || '', max(email), a JSON document holding it): masked whole, by the default strategy.
DERIVED = Source("", "", "(derived)")
Sources = frozenset[Source]

# Resolves a relation name (as written) to its columns, in order, each with the source
# columns it carries (a table's column carries itself; a view's, its definition's lineage);
# None when the relation is unknown.
Resolver = Callable[[Name], list[tuple[str, Sources]] | None]


@dataclass(frozen=True)
class Output:
    name: str
    sources: Sources

    @property
    def resolved(self) -> bool:
        return UNRESOLVED not in self.sources

    @property
    def derived(self) -> bool:
        return DERIVED in self.sources

    @property
    def columns(self) -> list[Source]:
        """The stored columns it may carry (markers left out)."""
        return sorted(s for s in self.sources if s not in (UNRESOLVED, DERIVED))


@dataclass
class _Rel:
    """One FROM item as the query sees it: its columns' lineage by name, in order."""

    columns: list[tuple[str, Sources]]
    opaque: bool = False            # a function or other source whose columns are unknown

    def get(self, name: str) -> Sources | None:
        for col, src in self.columns:
            if col == name:
                return src
        return None

    def everything(self) -> Sources:
        out: set[Source] = set()
        for _, src in self.columns:
            out |= src
        return frozenset(out | ({UNRESOLVED} if self.opaque else set()))


@dataclass
class _Scope:
    rels: dict[str, _Rel] = field(default_factory=dict)
    parent: _Scope | None = None
    ctes: dict[str, _Rel] = field(default_factory=dict)

    def cte(self, name: str) -> _Rel | None:
        s: _Scope | None = self
        while s is not None:
            if name in s.ctes:
                return s.ctes[name]
            s = s.parent
        return None


def lineage(sql: str, resolve: Resolver) -> list[Output]:
    """Lineage of the (single) SELECT in ``sql``; a non-SELECT has no output lineage here."""
    (raw,) = parse_sql(sql)
    stmt = raw.stmt
    if not isinstance(stmt, ast.SelectStmt):
        return []
    return _select(stmt, _Scope(), resolve)


def _select(stmt: ast.SelectStmt, outer: _Scope, resolve: Resolver) -> list[Output]:
    if stmt.op != enums.SetOperation.SETOP_NONE:
        left = _select(stmt.larg, outer, resolve) if stmt.larg else []
        right = _select(stmt.rarg, outer, resolve) if stmt.rarg else []
        return [Output(lo.name, lo.sources | (right[i].sources if i < len(right)
                                              else frozenset({UNRESOLVED})))
                for i, lo in enumerate(left)]
    scope = _Scope(parent=outer)
    if stmt.withClause is not None:
        for cte in stmt.withClause.ctes or ():
            scope.ctes[cte.ctename or ""] = _cte(cte, scope, resolve,
                                                 bool(stmt.withClause.recursive))
    if stmt.valuesLists:
        width = len(stmt.valuesLists[0])
        return [Output(f"column{i + 1}", _union(
            _expr(row[i], scope, resolve) for row in stmt.valuesLists if i < len(row)))
            for i in range(width)]
    for item in stmt.fromClause or ():
        for alias, rel in _from_item(item, scope, resolve):
            scope.rels[alias] = rel
    out: list[Output] = []
    for target in stmt.targetList or ():
        val = target.val
        if isinstance(val, ast.ColumnRef) and isinstance((val.fields or ())[-1], ast.A_Star):
            out.extend(_star(val, scope))
            continue
        sources = _expr(val, scope, resolve)
        if sources and not isinstance(val, ast.ColumnRef):
            sources = sources | {DERIVED}
        out.append(Output(target.name or _default_name(val), sources))
    return out


def _cte(cte: ast.CommonTableExpr, scope: _Scope, resolve: Resolver, recursive: bool) -> _Rel:
    query = cte.ctequery
    if not isinstance(query, ast.SelectStmt):
        return _Rel([], opaque=True)  # a data-modifying CTE: RETURNING lineage is not traced
    names = [c.sval or "" for c in cte.aliascolnames or () if isinstance(c, ast.String)]
    name = cte.ctename or ""

    def named(outputs: list[Output]) -> _Rel:
        return _Rel([(names[i] if i < len(names) and names[i] else o.name, o.sources)
                     for i, o in enumerate(outputs)])

    if not recursive:
        return named(_select(query, scope, resolve))
    # The recursive term may feed any column into any other: iterate to a fixpoint, starting
    # from the non-recursive term alone (the whole union with the CTE still unknown).
    scope.ctes[name] = _Rel([(n, frozenset()) for n in names], opaque=not names)
    rel = named(_select(query, scope, resolve))
    for _ in range(len(rel.columns) + 2):
        scope.ctes[name] = rel
        again = named(_select(query, scope, resolve))
        merged = _Rel([(col, src | (again.columns[i][1] if i < len(again.columns)
                                    else frozenset()))
                       for i, (col, src) in enumerate(rel.columns)])
        if merged.columns == rel.columns:
            break
        rel = merged
    return rel


def _from_item(item: Any, scope: _Scope, resolve: Resolver) -> Iterator[tuple[str, _Rel]]:
    if isinstance(item, ast.RangeVar):
        alias = item.alias.aliasname if item.alias and item.alias.aliasname else item.relname
        cte = scope.cte(item.relname or "") if item.schemaname is None else None
        rel = cte if cte is not None else _table(item, resolve)
        yield alias or "", _renamed(rel, item.alias)
    elif isinstance(item, ast.RangeSubselect) and isinstance(item.subquery, ast.SelectStmt):
        sub_scope = scope if item.lateral else _Scope(parent=scope.parent, ctes=scope.ctes)
        outputs = _select(item.subquery, sub_scope, resolve)
        rel = _Rel([(o.name, o.sources) for o in outputs])
        yield (item.alias.aliasname if item.alias else "") or "", _renamed(rel, item.alias)
    elif isinstance(item, ast.JoinExpr):
        yield from _from_item(item.larg, scope, resolve)
        yield from _from_item(item.rarg, scope, resolve)
    else:  # functions, table samples, XMLTABLE, ...: columns not known
        alias = getattr(getattr(item, "alias", None), "aliasname", None) or "?"
        yield alias, _Rel([], opaque=True)


def _table(rv: ast.RangeVar, resolve: Resolver) -> _Rel:
    found = resolve(Name(rv.schemaname, rv.relname or ""))
    if found is None:
        return _Rel([], opaque=True)
    return _Rel(list(found))


def table_columns(name: Name, columns: list[str]) -> list[tuple[str, Sources]]:
    """A stored table's columns for a ``Resolver``: each carries itself."""
    return [(c, frozenset({Source(name.schema or "", name.name, c)})) for c in columns]


def _renamed(rel: _Rel, alias: Any) -> _Rel:
    names = [c.sval or "" for c in (alias.colnames if alias else None) or ()
             if isinstance(c, ast.String)]
    if not names:
        return rel
    cols = [(names[i] if i < len(names) else col, src)
            for i, (col, src) in enumerate(rel.columns)]
    return _Rel(cols, rel.opaque)


def _star(ref: ast.ColumnRef, scope: _Scope) -> list[Output]:
    fields = [f.sval or "" for f in ref.fields or () if isinstance(f, ast.String)]
    rels = [scope.rels.get(fields[-1])] if fields else list(scope.rels.values())
    out: list[Output] = []
    for rel in rels:
        if rel is None or rel.opaque:
            out.append(Output("?", frozenset({UNRESOLVED})))
            continue
        out.extend(Output(col, src) for col, src in rel.columns)
    return out


def _column(ref: ast.ColumnRef, scope: _Scope) -> Sources:
    fields = [f.sval or "" for f in ref.fields or () if isinstance(f, ast.String)]
    if not fields:
        return frozenset({UNRESOLVED})
    s: _Scope | None = scope
    while s is not None:
        if len(fields) >= 2:
            rel = s.rels.get(fields[-2])
            if rel is not None:
                got = rel.get(fields[-1])
                return got if got is not None else (rel.everything() if rel.opaque
                                                    else frozenset({UNRESOLVED}))
        else:
            rel = s.rels.get(fields[0])
            hits = [r.get(fields[0]) for r in s.rels.values()]
            found = [h for h in hits if h is not None]
            if found:
                return _union(found)
            if rel is not None:  # a whole-row reference: row_to_json(t), t::text
                return rel.everything()
            if any(r.opaque for r in s.rels.values()):
                return frozenset({UNRESOLVED})
        s = s.parent
    return frozenset({UNRESOLVED})


def _expr(node: Any, scope: _Scope, resolve: Resolver) -> Sources:
    """Every source column an expression may carry: any column it reads, at any depth."""
    if isinstance(node, ast.ColumnRef):
        return _column(node, scope)
    if isinstance(node, ast.SubLink):
        if node.subLinkType in (enums.SubLinkType.EXPR_SUBLINK,
                                enums.SubLinkType.ARRAY_SUBLINK) \
                and isinstance(node.subselect, ast.SelectStmt):
            outs = _select(node.subselect, scope, resolve)
            inner = _union(o.sources for o in outs)
        else:
            inner = frozenset()  # EXISTS/IN yield booleans, not values
        test = _expr(node.testexpr, scope, resolve) if node.testexpr is not None else frozenset()
        return inner | (frozenset() if node.subLinkType != enums.SubLinkType.EXPR_SUBLINK
                        else test)
    if isinstance(node, ast.A_Const) or node is None:
        return frozenset()
    out: set[Source] = set()
    for child in children(node):
        out |= _expr(child, scope, resolve)
    return frozenset(out)


def _union(items: Any) -> Sources:
    out: set[Source] = set()
    for s in items:
        out |= s
    return frozenset(out)


def _default_name(node: Any) -> str:
    if isinstance(node, ast.ColumnRef):
        last = (node.fields or ())[-1]
        return last.sval if isinstance(last, ast.String) and last.sval else "?column?"
    if isinstance(node, ast.FuncCall) and node.funcname:
        last = node.funcname[-1]
        return last.sval if isinstance(last, ast.String) and last.sval else "?column?"
    if isinstance(node, ast.TypeCast):
        return _default_name(node.arg)
    return "?column?"

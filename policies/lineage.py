"""Column lineage of a PostgreSQL query: which source columns each output column may carry.

Masking decides on lineage, never on result bytes: an output column is masked when any source
column it may carry is masked, whatever the expression around it (an alias, a cast, lower(),
a concatenation, an aggregate, a JSON builder). Lineage is an over-approximation on purpose:
every column an expression reads counts, and what cannot be traced is ``UNRESOLVED`` (masked
or refused, per the profile), never "clean".

Rows are not the only way out: ``sinks`` lists where a statement stores or sends values it
computed from columns (INSERT/UPDATE/MERGE targets, CREATE TABLE AS, set_config, pg_notify,
COPY to a file, ...), so a masked value cannot be copied somewhere unmasked and read back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, enums, parse_sql

from policies.facts import Name
from policies.statements import children

__all__ = ["ANY_MASKED", "CALL", "DERIVED", "STATISTICS_COLUMNS", "STATISTICS_VALUES",
           "UNRESOLVED", "is_marker", "Output", "Resolver", "Sink", "Source", "Sources",
           "lineage", "sinks", "statistics_columns", "table_columns"]


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
# A column that may hold a value of any column, whichever the profile masks: the planner's
# statistics (pg_stats.most_common_vals, pg_statistic.stavalues1, ...) sample stored values.
ANY_MASKED = Source("*", "*", "*")
_MARKERS = frozenset({UNRESOLVED, DERIVED, ANY_MASKED})
# A value a function returned: ``Source(CALL, schema or "", name)``. Lineage cannot see inside
# a function; the caller resolves the name against the catalog and treats a function of its
# own (not a built-in) as able to return any value it can read.
CALL = "()"


def is_marker(s: Source) -> bool:
    return s in _MARKERS or s.schema == CALL
Sources = frozenset[Source]

# The planner's statistics in pg_catalog: each relation's columns in order (PostgreSQL 17, for
# a catalog that does not list them) and the columns holding sampled stored values, which
# may be those of any column, masked ones included.
STATISTICS_COLUMNS: dict[str, tuple[str, ...]] = {
    "pg_stats": (
        "schemaname", "tablename", "attname", "inherited", "null_frac", "avg_width",
        "n_distinct", "most_common_vals", "most_common_freqs", "histogram_bounds",
        "correlation", "most_common_elems", "most_common_elem_freqs", "elem_count_histogram",
        "range_length_histogram", "range_empty_frac", "range_bounds_histogram"),
    "pg_stats_ext": (
        "schemaname", "tablename", "statistics_schemaname", "statistics_name",
        "statistics_owner", "attnames", "exprs", "kinds", "inherited", "n_distinct",
        "dependencies", "most_common_vals", "most_common_val_nulls", "most_common_freqs",
        "most_common_base_freqs"),
    "pg_stats_ext_exprs": (
        "schemaname", "tablename", "statistics_schemaname", "statistics_name",
        "statistics_owner", "expr", "inherited", "null_frac", "avg_width", "n_distinct",
        "most_common_vals", "most_common_freqs", "histogram_bounds", "correlation",
        "most_common_elems", "most_common_elem_freqs", "elem_count_histogram"),
    "pg_statistic": (
        "starelid", "staattnum", "stainherit", "stanullfrac", "stawidth", "stadistinct",
        *(f"stakind{i}" for i in range(1, 6)), *(f"staop{i}" for i in range(1, 6)),
        *(f"stacoll{i}" for i in range(1, 6)), *(f"stanumbers{i}" for i in range(1, 6)),
        *(f"stavalues{i}" for i in range(1, 6))),
    "pg_statistic_ext_data": (
        "stxoid", "stxdinherit", "stxdndistinct", "stxddependencies", "stxdmcv", "stxdexpr"),
}
STATISTICS_VALUES: dict[str, frozenset[str]] = {
    "pg_stats": frozenset({"most_common_vals", "histogram_bounds", "most_common_elems",
                           "range_length_histogram", "range_bounds_histogram"}),
    "pg_stats_ext": frozenset({"most_common_vals"}),
    "pg_stats_ext_exprs": frozenset({"most_common_vals", "histogram_bounds",
                                     "most_common_elems"}),
    "pg_statistic": frozenset(f"stavalues{i}" for i in range(1, 6)),
    "pg_statistic_ext_data": frozenset({"stxdmcv", "stxdexpr"}),
}

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
    def any_masked(self) -> bool:
        """It may hold a value of any masked column (planner statistics)."""
        return ANY_MASKED in self.sources

    @property
    def columns(self) -> list[Source]:
        """The stored columns it may carry (markers left out)."""
        return sorted(s for s in self.sources if not is_marker(s))

    @property
    def calls(self) -> list[Name]:
        """The functions whose results it may carry."""
        return sorted({Name(s.table or None, s.column) for s in self.sources
                       if s.schema == CALL}, key=str)


@dataclass(frozen=True)
class Sink:
    """A place a statement stores or sends a value read from columns, other than its rows.

    ``kind`` is "insert", "update" or "merge" (a written column: ``target``, when the
    resolver tells which stored column it is), "create_table_as" (a new relation),
    "copy_file" (COPY to a server file or program) or "function:<name>" (set_config,
    pg_notify, large objects, dblink, ...). ``sources`` is what the value may carry."""

    kind: str
    target: Source | None
    sources: Sources


@dataclass
class _Rel:
    """One FROM item as the query sees it: its columns' lineage by name, in order."""

    columns: list[tuple[str, Sources]]
    opaque: bool = False            # a function or other source whose columns are unknown
    extra: Sources = frozenset()    # what an opaque item read (a function's arguments)

    def get(self, name: str) -> Sources | None:
        for col, src in self.columns:
            if col == name:
                return src
        return None

    def everything(self) -> Sources:
        out: set[Source] = set(self.extra)
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

    def rel(self, name: str) -> _Rel | None:
        """The FROM item a qualified reference names, the innermost first (correlation)."""
        s: _Scope | None = self
        while s is not None:
            if name in s.rels:
                return s.rels[name]
            s = s.parent
        return None


@dataclass
class _Ctx:
    """One analysis: the resolver, and the sinks found when ``sinks()`` asked for them."""

    resolve: Resolver
    found: dict[Sink, None] | None = None

    def sink(self, kind: str, target: Source | None, sources: Iterable[Source]) -> None:
        src = frozenset(sources)
        if self.found is not None and src:  # a constant carries nothing
            self.found[Sink(kind, target, src)] = None


_WRITES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
_WRITE_KIND = {ast.InsertStmt: "insert", ast.UpdateStmt: "update", ast.DeleteStmt: "delete",
               ast.MergeStmt: "merge"}
# Functions that store or send an argument where masking never sees it again: the argument
# positions that carry the value (None: every argument).
_SINK_ARGS: dict[str, tuple[int, ...] | None] = {
    "set_config": (1,), "pg_notify": (1,), "lo_from_bytea": (1,), "lo_put": (2,),
    "lowrite": (1,), "pg_file_write": (1,), "pg_logical_emit_message": None,
    "dblink_exec": None, "dblink": None, "dblink_send_query": None, "dblink_open": None,
}
# Functions whose result comes from a query, table or cursor named in a string, or from
# storage lineage cannot follow: their values are untraceable, never clean.
_OPAQUE_RESULTS = frozenset({
    "query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema", "table_to_xml",
    "table_to_xml_and_xmlschema", "table_to_xmlschema", "cursor_to_xml", "cursor_to_xmlschema",
    "schema_to_xml", "schema_to_xml_and_xmlschema", "schema_to_xmlschema", "database_to_xml",
    "database_to_xml_and_xmlschema", "database_to_xmlschema", "ts_stat", "dblink",
    "dblink_fetch", "dblink_get_result", "lo_get", "loread", "pg_read_file",
    "pg_read_binary_file",
})
_SELECT_CLAUSES = ("whereClause", "groupClause", "havingClause", "windowClause", "sortClause",
                   "limitOffset", "limitCount", "distinctClause")


def lineage(sql: str, resolve: Resolver) -> list[Output]:
    """Lineage of the rows the (single) statement in ``sql`` returns: a SELECT's columns, an
    INSERT/UPDATE/DELETE/MERGE's RETURNING list, COPY ... TO's columns; others return none."""
    (raw,) = parse_sql(sql)
    stmt = raw.stmt
    ctx = _Ctx(resolve)
    if isinstance(stmt, (ast.SelectStmt, *_WRITES)):
        return _statement(stmt, _Scope(), ctx)
    if isinstance(stmt, ast.CopyStmt):
        return _copy(stmt, ctx)
    return []


def sinks(sql: str, resolve: Resolver) -> list[Sink]:
    """Every place the statements in ``sql`` store or send a value computed from columns they
    read, besides their result rows. Filtering (WHERE, JOIN ON, ORDER BY, GROUP BY, EXISTS)
    is no sink: what it reads decides which rows, not what is stored."""
    ctx = _Ctx(resolve, {})
    for raw in parse_sql(sql):
        _statement_sinks(raw.stmt, ctx)
    assert ctx.found is not None
    return _pruned(list(ctx.found))


def _pruned(found: list[Sink]) -> list[Sink]:
    """Drop a sink another one of the same kind and target covers (a recursive CTE or a
    multi-column SET evaluates the same expression more than once)."""
    return [s for s in found
            if not any(o is not s and o.kind == s.kind and o.target == s.target
                       and s.sources < o.sources for o in found)]


def _statement_sinks(stmt: Any, ctx: _Ctx) -> None:
    if isinstance(stmt, (ast.SelectStmt, *_WRITES)):
        outs = _statement(stmt, _Scope(), ctx)
        if isinstance(stmt, ast.SelectStmt) and stmt.intoClause is not None:
            for o in outs:
                ctx.sink("create_table_as", None, o.sources)
    elif isinstance(stmt, ast.CreateTableAsStmt):
        outs = _statement(stmt.query, _Scope(), ctx)
        for o in outs:  # WITH NO DATA too: a later REFRESH fills it with the same values
            ctx.sink("create_table_as", None, o.sources)
    elif isinstance(stmt, ast.CopyStmt):
        _copy(stmt, ctx)
    elif isinstance(stmt, ast.FuncCall):
        _expr(stmt, _Scope(), ctx)
    else:  # EXPLAIN, DECLARE, PREPARE, CALL, CREATE VIEW, ...: the queries and calls inside
        for child in children(stmt):
            _statement_sinks(child, ctx)


def _statement(node: Any, scope: _Scope, ctx: _Ctx) -> list[Output]:
    """The rows a query or a data-modifying statement (its RETURNING list) yields."""
    if isinstance(node, ast.SelectStmt):
        return _select(node, scope, ctx)
    if isinstance(node, _WRITES):
        return _modify(node, scope, ctx)
    return [Output("?", frozenset({UNRESOLVED}))]  # EXECUTE of a prepared statement, ...


def _with(clause: ast.WithClause | None, scope: _Scope, ctx: _Ctx) -> None:
    if clause is None:
        return
    for cte in clause.ctes or ():
        scope.ctes[cte.ctename or ""] = _cte(cte, scope, ctx, bool(clause.recursive))


def _select(stmt: ast.SelectStmt, outer: _Scope, ctx: _Ctx) -> list[Output]:
    scope = _Scope(parent=outer)
    _with(stmt.withClause, scope, ctx)   # a set operation's WITH is seen by both branches
    if stmt.op != enums.SetOperation.SETOP_NONE:
        left = _select(stmt.larg, scope, ctx) if stmt.larg else []
        right = _select(stmt.rarg, scope, ctx) if stmt.rarg else []
        _clauses(stmt, _SELECT_CLAUSES, scope, ctx)
        return [Output(lo.name, lo.sources | (right[i].sources if i < len(right)
                                              else frozenset({UNRESOLVED})))
                for i, lo in enumerate(left)]
    if stmt.valuesLists:
        width = len(stmt.valuesLists[0])
        _clauses(stmt, _SELECT_CLAUSES, scope, ctx)
        return [Output(f"column{i + 1}", _union(
            _value(row[i], scope, ctx) for row in stmt.valuesLists if i < len(row)))
            for i in range(width)]
    for item in stmt.fromClause or ():
        for alias, rel in _from_item(item, scope, ctx):
            scope.rels[alias] = rel
    out = _targets(stmt.targetList, scope, ctx)
    _clauses(stmt, _SELECT_CLAUSES, scope, ctx)
    return out


def _clauses(node: Any, names: Iterable[str], scope: _Scope, ctx: _Ctx) -> None:
    """Clauses that only filter or order rows, read for the function sinks in them alone:
    the columns they read do not reach the rows or the written values."""
    if ctx.found is None:
        return
    for name in names:
        value = getattr(node, name, None)
        for item in value if isinstance(value, tuple) else (value,):
            _expr(item, scope, ctx)


def _targets(items: Any, scope: _Scope, ctx: _Ctx) -> list[Output]:
    """A select or RETURNING list: ``*`` expanded, computed values marked DERIVED."""
    out: list[Output] = []
    for target in items or ():
        val = target.val
        if isinstance(val, ast.ColumnRef) and isinstance((val.fields or ())[-1], ast.A_Star):
            out.extend(_star(val, scope))
            continue
        out.append(Output(target.name or _default_name(val), _value(val, scope, ctx)))
    return out


def _value(node: Any, scope: _Scope, ctx: _Ctx) -> Sources:
    """What a value carries, DERIVED unless it is a column as stored."""
    if isinstance(node, ast.NamedArgExpr):
        node = node.arg
    sources = _expr(node, scope, ctx)
    if sources and not isinstance(node, ast.ColumnRef):
        sources = sources | {DERIVED}
    return sources


def _cte(cte: ast.CommonTableExpr, scope: _Scope, ctx: _Ctx, recursive: bool) -> _Rel:
    query = cte.ctequery
    names = [c.sval or "" for c in cte.aliascolnames or () if isinstance(c, ast.String)]
    name = cte.ctename or ""

    def named(outputs: list[Output]) -> _Rel:
        return _Rel([(names[i] if i < len(names) and names[i] else o.name, o.sources)
                     for i, o in enumerate(outputs)])

    if isinstance(query, _WRITES):  # a data-modifying CTE yields its RETURNING rows
        outs = _modify(query, scope, ctx)
        return named(outs) if _returning(query) is not None else _Rel([], opaque=True)
    if not isinstance(query, ast.SelectStmt):
        return _Rel([], opaque=True)
    if not recursive:
        return named(_select(query, scope, ctx))
    # The recursive term may feed any column into any other: iterate to a fixpoint, starting
    # from the non-recursive term alone (the whole union with the CTE still unknown).
    scope.ctes[name] = _Rel([(n, frozenset()) for n in names], opaque=not names)
    rel = named(_select(query, scope, ctx))
    for _ in range(len(rel.columns) + 2):
        scope.ctes[name] = rel
        again = named(_select(query, scope, ctx))
        merged = _Rel([(col, src | (again.columns[i][1] if i < len(again.columns)
                                    else frozenset()))
                       for i, (col, src) in enumerate(rel.columns)])
        if merged.columns == rel.columns:
            break
        rel = merged
    return rel


# -- data-modifying statements -------------------------------------------------------------


def _returning(stmt: Any) -> Any:
    """The RETURNING clause, or None when the statement returns no rows."""
    clause = getattr(stmt, "returningClause", None)
    return clause if clause is not None and clause.exprs else None


def _modify(stmt: Any, outer: _Scope, ctx: _Ctx) -> list[Output]:
    """The RETURNING rows of INSERT/UPDATE/DELETE/MERGE, recording each written value as a
    sink. A returned column of the target carries what it held and what was written to it."""
    top = _Scope(parent=outer)
    _with(stmt.withClause, top, ctx)
    rv: ast.RangeVar = stmt.relation
    alias = (rv.alias.aliasname if rv.alias and rv.alias.aliasname else rv.relname) or ""
    base = _table(rv, ctx)
    scope = _Scope(parent=top)
    scope.rels[alias] = base
    kind = _WRITE_KIND[type(stmt)]
    written: dict[str, Sources] = {}
    spilled: set[Source] = set()   # values whose target column is not known

    def write(pairs: Iterable[tuple[str | None, Sources]]) -> None:
        for col, src in pairs:
            ctx.sink(kind, _target_source(base, col), src)
            if col is None:
                spilled.update(src)
            else:
                written[col] = written.get(col, frozenset()) | src

    if isinstance(stmt, ast.InsertStmt):
        cols = [rt.name or "" for rt in stmt.cols or ()]
        rows = _statement(stmt.selectStmt, top, ctx) if stmt.selectStmt is not None else []
        write(_positional(cols, rows, base))
        conflict = stmt.onConflictClause
        if conflict is not None:
            # EXCLUDED is the row proposed for insertion: what was to be written to it
            excluded = _Rel([(c, written.get(c, frozenset())) for c, _ in base.columns],
                            base.opaque, _union(written.values()) | frozenset(spilled))
            cscope = _Scope({alias: base, "excluded": excluded}, parent=top)
            write(_assignments(conflict.targetList, cscope, ctx))
            _clauses(conflict, ("infer", "whereClause"), cscope, ctx)
    elif isinstance(stmt, ast.UpdateStmt):
        _add_from(stmt.fromClause, scope, ctx)
        write(_assignments(stmt.targetList, scope, ctx))
        _clauses(stmt, ("whereClause",), scope, ctx)
    elif isinstance(stmt, ast.DeleteStmt):
        _add_from(stmt.usingClause, scope, ctx)
        _clauses(stmt, ("whereClause",), scope, ctx)
    else:
        _add_from((stmt.sourceRelation,), scope, ctx)
        _clauses(stmt, ("joinCondition",), scope, ctx)
        for when in stmt.mergeWhenClauses or ():
            _clauses(when, ("condition",), scope, ctx)
            if when.commandType == enums.CmdType.CMD_UPDATE:
                write(_assignments(when.targetList, scope, ctx))
            elif when.commandType == enums.CmdType.CMD_INSERT:
                cols = [rt.name or "" for rt in when.targetList or ()]
                values = [Output("?", _value(v, scope, ctx)) for v in when.values or ()]
                write(_positional(cols, values, base))
    clause = _returning(stmt)
    if clause is None:
        return []
    new = _Rel([(c, s | written.get(c, frozenset()) | frozenset(spilled))
                for c, s in base.columns], base.opaque,
               base.extra | _union(written.values()) | frozenset(spilled))
    scope.rels[alias] = new
    old_name, new_name = "old", "new"
    for opt in getattr(clause, "options", None) or ():
        if opt.option == enums.ReturningOptionKind.RETURNING_OPTION_OLD:
            old_name = opt.value or old_name
        else:
            new_name = opt.value or new_name
    # OLD and NEW (PostgreSQL 18) stand behind the statement's own names, and * leaves them out
    scope.parent = _Scope({old_name: base, new_name: new}, parent=top)
    return _targets(clause.exprs, scope, ctx)


def _add_from(items: Any, scope: _Scope, ctx: _Ctx) -> None:
    for item in items or ():
        for alias, rel in _from_item(item, scope, ctx):
            scope.rels[alias] = rel


def _positional(cols: list[str], rows: list[Output], base: _Rel
                ) -> list[tuple[str | None, Sources]]:
    """Inserted values by target column: the column list, or the table's own order. Where a
    row's width is unknown (an unresolved ``*``), no value is tied to a column."""
    names = cols or ([c for c, _ in base.columns] if not base.opaque else [])
    if all(o.resolved for o in rows) and len(rows) <= len(names):
        return [(names[i], o.sources) for i, o in enumerate(rows)]
    return [(None, o.sources) for o in rows]


def _assignments(items: Any, scope: _Scope, ctx: _Ctx) -> list[tuple[str | None, Sources]]:
    """SET targets and the value each receives; (a, b) = (SELECT x, y ...) by position."""
    out: list[tuple[str | None, Sources]] = []
    for rt in items or ():
        val = rt.val
        if isinstance(val, ast.MultiAssignRef):
            out.append((rt.name or "", _multi(val, scope, ctx)))
        else:
            out.append((rt.name or "", _value(val, scope, ctx)))
    return out


def _multi(ref: ast.MultiAssignRef, scope: _Scope, ctx: _Ctx) -> Sources:
    i = (ref.colno or 1) - 1
    src = ref.source
    if isinstance(src, ast.SubLink) and isinstance(src.subselect, ast.SelectStmt):
        outs = _select(src.subselect, scope, ctx)
        if len(outs) == ref.ncolumns and all(o.resolved for o in outs):
            return outs[i].sources
        return _union(o.sources for o in outs) | {UNRESOLVED}
    if isinstance(src, ast.RowExpr) and src.args and len(src.args) == ref.ncolumns:
        return _value(src.args[i], scope, ctx)
    return _value(src, scope, ctx) | {DERIVED}


def _target_source(base: _Rel, col: str | None) -> Source | None:
    """The stored column a write lands in: a table's column, or a view column that is one
    stored column as is; None when that cannot be told."""
    src = base.get(col) if col is not None else None
    if src is None or len(src) != 1:
        return None
    (only,) = src
    return None if only in _MARKERS else only


def _copy(stmt: ast.CopyStmt, ctx: _Ctx) -> list[Output]:
    """COPY ... TO: the columns it sends (a file or program destination is also a sink)."""
    if stmt.is_from:
        if ctx.found is not None and stmt.relation is not None:
            _clauses(stmt, ("whereClause",), _Scope({stmt.relation.relname or "":
                                                     _table(stmt.relation, ctx)}), ctx)
        return []
    if stmt.query is not None:
        outs = _statement(stmt.query, _Scope(), ctx)
    elif stmt.relation is not None:
        rel = _table(stmt.relation, ctx)
        names = [s.sval or "" for s in stmt.attlist or () if isinstance(s, ast.String)]
        if names:
            outs = [Output(n, _member(rel, n)) for n in names]
        elif rel.opaque:
            outs = [Output("?", rel.everything())]
        else:
            outs = [Output(c, s) for c, s in rel.columns]
    else:
        outs = [Output("?", frozenset({UNRESOLVED}))]
    if stmt.filename is not None or stmt.is_program:
        for o in outs:
            ctx.sink("copy_file", None, o.sources)
    return outs


# -- FROM items and references --------------------------------------------------------------


def _from_item(item: Any, scope: _Scope, ctx: _Ctx) -> Iterator[tuple[str, _Rel]]:
    if isinstance(item, ast.RangeVar):
        alias = item.alias.aliasname if item.alias and item.alias.aliasname else item.relname
        cte = scope.cte(item.relname or "") if item.schemaname is None else None
        rel = cte if cte is not None else _table(item, ctx)
        yield alias or "", _renamed(rel, item.alias)
    elif isinstance(item, ast.RangeSubselect) and isinstance(item.subquery, ast.SelectStmt):
        sub_scope = scope if item.lateral else _Scope(parent=scope.parent, ctes=scope.ctes)
        outputs = _select(item.subquery, sub_scope, ctx)
        rel = _Rel([(o.name, o.sources) for o in outputs])
        yield (item.alias.aliasname if item.alias else "") or "", _renamed(rel, item.alias)
    elif isinstance(item, ast.JoinExpr):
        yield from _from_item(item.larg, scope, ctx)
        yield from _from_item(item.rarg, scope, ctx)
        _clauses(item, ("quals",), scope, ctx)   # the caller has added both sides by now
    elif isinstance(item, ast.RangeTableSample):
        _clauses(item, ("args", "repeatable"), scope, ctx)
        yield from _from_item(item.relation, scope, ctx)
    else:
        # Functions (always lateral), XMLTABLE, JSON_TABLE, ...: columns not known, but they
        # may carry whatever their arguments read: unnest(ARRAY[c.email]), jsonb_each(to_jsonb(c))
        alias = getattr(getattr(item, "alias", None), "aliasname", None) or _func_alias(item)
        yield alias, _Rel([], opaque=True, extra=_expr(item, scope, ctx))


def _func_alias(item: Any) -> str:
    """A function in FROM without an alias is named after the function."""
    funcs: list[Any] = list(getattr(item, "functions", None) or ())
    first = funcs[0][0] if len(funcs) == 1 and funcs[0] else None
    return (_func_name(first) or "?") if isinstance(first, ast.FuncCall) else "?"


def _table(rv: ast.RangeVar, ctx: _Ctx) -> _Rel:
    found = ctx.resolve(Name(rv.schemaname, rv.relname or ""))
    if found is None:
        return _Rel([], opaque=True)
    return _Rel(list(found))


def table_columns(name: Name, columns: list[str]) -> list[tuple[str, Sources]]:
    """A stored table's columns for a ``Resolver``: each carries itself."""
    return [(c, frozenset({Source(name.schema or "", name.name, c)})) for c in columns]


def statistics_columns(name: str, columns: list[tuple[str, Sources]] | None
                       ) -> list[tuple[str, Sources]]:
    """A pg_catalog statistics relation's columns for a ``Resolver`` (``columns``: as the
    catalog resolved them; None when it does not list them), sampled values ``ANY_MASKED``."""
    if not columns:  # a catalog without its columns must not hide them
        columns = table_columns(Name("pg_catalog", name), list(STATISTICS_COLUMNS[name]))
    values = STATISTICS_VALUES.get(name, frozenset())
    return [(c, frozenset({ANY_MASKED}) if c in values else src) for c, src in columns]


def _renamed(rel: _Rel, alias: Any) -> _Rel:
    names = [c.sval or "" for c in (alias.colnames if alias else None) or ()
             if isinstance(c, ast.String)]
    if not names:
        return rel
    cols = [(names[i] if i < len(names) else col, src)
            for i, (col, src) in enumerate(rel.columns)]
    return _Rel(cols, rel.opaque, rel.extra)


def _member(rel: _Rel, name: str) -> Sources:
    got = rel.get(name)
    if got is not None:
        return got
    return rel.everything() if rel.opaque else frozenset({UNRESOLVED})


def _star(ref: ast.ColumnRef, scope: _Scope) -> list[Output]:
    fields = [f.sval or "" for f in ref.fields or () if isinstance(f, ast.String)]
    rels = [scope.rel(fields[-1])] if fields else list(scope.rels.values())
    out: list[Output] = []
    for rel in rels:
        if rel is None or rel.opaque:
            out.append(Output("?", rel.everything() if rel else frozenset({UNRESOLVED})))
            continue
        out.extend(Output(col, src) for col, src in rel.columns)
    return out


def _column(ref: ast.ColumnRef, scope: _Scope) -> Sources:
    parts: tuple[Any, ...] = tuple(ref.fields or ())
    fields = [f.sval or "" for f in parts if isinstance(f, ast.String)]
    if parts and isinstance(parts[-1], ast.A_Star):  # t.* inside an expression
        if not fields:
            return _union(r.everything() for r in scope.rels.values()) or frozenset(
                {UNRESOLVED})
        rel = scope.rel(fields[-1])
        return rel.everything() if rel is not None else frozenset({UNRESOLVED})
    if not fields:
        return frozenset({UNRESOLVED})
    s: _Scope | None = scope
    while s is not None:
        if len(fields) >= 2:
            rel = s.rels.get(fields[-2])
            if rel is not None:
                return _member(rel, fields[-1])
        else:
            rel = s.rels.get(fields[0])
            hits = [r.get(fields[0]) for r in s.rels.values()]
            found = [h for h in hits if h is not None]
            if found:
                return _union(found)
            if rel is not None:  # a whole-row reference: row_to_json(t), t::text
                return rel.everything()
            opaque = [r for r in s.rels.values() if r.opaque]
            if opaque:  # it may be a column of a function in FROM
                return _union(r.everything() for r in opaque)
        s = s.parent
    return frozenset({UNRESOLVED})


def _expr(node: Any, scope: _Scope, ctx: _Ctx) -> Sources:
    """Every source column an expression may carry: any column it reads, at any depth."""
    if isinstance(node, ast.ColumnRef):
        return _column(node, scope)
    if isinstance(node, ast.SubLink):
        if node.subLinkType in (enums.SubLinkType.EXPR_SUBLINK,
                                enums.SubLinkType.ARRAY_SUBLINK) \
                and isinstance(node.subselect, ast.SelectStmt):
            outs = _select(node.subselect, scope, ctx)
            inner = _union(o.sources for o in outs)
        else:
            if ctx.found is not None and isinstance(node.subselect, ast.SelectStmt):
                _select(node.subselect, scope, ctx)   # for the sinks in it alone
            inner = frozenset()  # EXISTS/IN yield booleans, not values
        test = _expr(node.testexpr, scope, ctx) if node.testexpr is not None else frozenset()
        return inner | (frozenset() if node.subLinkType != enums.SubLinkType.EXPR_SUBLINK
                        else test)
    if isinstance(node, ast.SelectStmt):  # JSON_ARRAY(SELECT ...) and other query arguments
        return _union(o.sources for o in _select(node, scope, ctx))
    if isinstance(node, ast.A_Const) or node is None:
        return frozenset()
    out: set[Source] = set()
    if isinstance(node, ast.FuncCall):
        out |= _call(node, scope, ctx)
    for child in children(node):
        out |= _expr(child, scope, ctx)
    return frozenset(out)


def _call(node: ast.FuncCall, scope: _Scope, ctx: _Ctx) -> Sources:
    """A call's own contribution: a sink for a function that stores or sends an argument,
    UNRESOLVED for one whose result lineage cannot follow (a query inside a string)."""
    name = _func_name(node)
    if ctx.found is not None and name in _SINK_ARGS:
        args = list(node.args or ())
        positions = _SINK_ARGS[name]
        if positions is not None and not any(isinstance(a, ast.NamedArgExpr) for a in args):
            args = [args[i] for i in positions if i < len(args)]
        ctx.sink(f"function:{name}", None, _union(_value(a, scope, ctx) for a in args))
    if name in _OPAQUE_RESULTS:
        return frozenset({UNRESOLVED})
    qualified = [n.sval or "" for n in node.funcname or () if isinstance(n, ast.String)]
    schema = qualified[-2].lower() if len(qualified) >= 2 else ""
    return frozenset({Source(CALL, schema, name)})


def _func_name(node: ast.FuncCall) -> str:
    last = (node.funcname or (None,))[-1]
    return (last.sval or "").lower() if isinstance(last, ast.String) else ""


def _union(items: Iterable[Sources]) -> Sources:
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

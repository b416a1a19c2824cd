"""Column lineage of MySQL/MariaDB statements, and where a statement copies values to.

The MySQL counterpart of ``policies.lineage``, read from sqlglot's MySQL tree: the same
``Output`` objects, markers (``UNRESOLVED``, ``DERIVED``) and ``Resolver`` (the "schema" of a
``Name`` is the database; an unqualified name resolves in the current database, which the
resolver knows). Lineage over-approximates on purpose: every column an expression reads
counts, and what cannot be traced is ``UNRESOLVED``, never "clean".

``sinks`` lists the places outside the result set a statement copies values to (tables,
variables, files, error messages): masking the result set does not cover them, so the caller
refuses a statement whose sinks carry a masked or unresolved source.

The text is read the way ``policies.mysql_statements.analyze`` reads it (executable comments
expanded for the target server, one ``Facts`` per statement); text it cannot read raises
``Unparseable``, which the caller refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from sqlglot import exp
from sqlglot.dialects.mysql import MySQL
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from policies.facts import Name, Unparseable
from policies.lineage import (
    ANY_MASKED,
    CALL,
    DERIVED,
    UNRESOLVED,
    Output,
    Resolver,
    Sink,
    Source,
    Sources,
    is_marker,
)
from policies.mysql_statements import analyze, expand_executable_comments

__all__ = [
    "ANY_MASKED", "Functions", "Sink", "lineage", "lineages", "sinks", "statistics_tables",
    "trace", "with_statistics",
]

_Version = tuple[int, int, int]
# Which calls run a function of the database's own (a stored function): given, such a call
# contributes ``Source(CALL, database or "", name)`` (``policies.lineage.CALL``), so the caller
# can treat its result as untraceable. Built-ins are not marked: lineage follows their
# arguments.
Functions = Callable[[Name], bool]
_EMPTY: Sources = frozenset()
_UNKNOWN: Sources = frozenset({UNRESOLVED})

# Sink kinds here (``policies.lineage.Sink``, shared with PostgreSQL): "insert", "replace",
# "upsert" (ON DUPLICATE KEY UPDATE), "update", "create_table_as", "into_variable",
# "into_outfile", "into_dumpfile", "set_variable" (SET, and ``@v := …`` wherever it stands),
# "error_channel" (a function or GROUP BY that prints a value in its error message) and
# "routine" (CALL, EXECUTE, compound blocks, CREATE TRIGGER/PROCEDURE/EVENT, PREPARE of text
# built at run time: what they write is unknown, so ``UNRESOLVED``). ``target`` is the
# stored column written: what the resolver says it is (schema "" for a table it does not
# know yet: the current database's), ``UNRESOLVED`` when the column cannot be named, None
# for sinks that are not columns.


# --------------------------------------------------------------------------------------------
# Statistics tables


# (database, table) in lower case → (every column in order, the ones holding stored values).
_STATISTICS: dict[tuple[str, str], tuple[tuple[str, ...], frozenset[str], str]] = {
    ("mysql", "column_stats"): (
        ("db_name", "table_name", "column_name", "min_value", "max_value", "nulls_ratio",
         "avg_length", "avg_frequency", "hist_size", "hist_type", "histogram"),
        frozenset({"min_value", "max_value", "histogram"}), "mariadb"),
    ("information_schema", "column_statistics"): (
        ("SCHEMA_NAME", "TABLE_NAME", "COLUMN_NAME", "HISTOGRAM"),
        frozenset({"histogram"}), "mysql"),
    # The words of FULLTEXT-indexed columns, for the table named by innodb_ft_aux_table.
    ("information_schema", "innodb_ft_index_table"): (
        ("WORD", "FIRST_DOC_ID", "LAST_DOC_ID", "DOC_COUNT", "DOC_ID", "POSITION"),
        frozenset({"word"}), ""),
    ("information_schema", "innodb_ft_index_cache"): (
        ("WORD", "FIRST_DOC_ID", "LAST_DOC_ID", "DOC_COUNT", "DOC_ID", "POSITION"),
        frozenset({"word"}), ""),
}


def statistics_tables(server: str = "mariadb") -> dict[Name, tuple[str, ...]]:
    """Server tables whose value columns may hold a copy of any stored value (min/max values,
    histograms, full-text index words), with those columns: ``mysql.column_stats`` on MariaDB,
    ``information_schema.COLUMN_STATISTICS`` on MySQL 8, the InnoDB full-text tables on both.
    Masking per column cannot cover them: ``with_statistics`` marks them ``ANY_MASKED``."""
    out: dict[Name, tuple[str, ...]] = {}
    for (db, table), (columns, values, only) in _STATISTICS.items():
        if only and only != server.lower():
            continue
        out[Name(db, table)] = tuple(c for c in columns if c.lower() in values)
    return out


def with_statistics(resolve: Resolver) -> Resolver:
    """``resolve``, with the value columns of the statistics tables also carrying
    ``ANY_MASKED`` (a caller masks such an output whenever its profile masks any column, or
    refuses it). Tables the catalog does not list get their documented columns."""

    def marked(name: Name) -> list[tuple[str, Sources]] | None:
        key = ((name.schema or "").lower(), name.name.lower())
        found = resolve(name)
        if found is None and key in _STATISTICS:
            columns = _STATISTICS[key][0]
            found = [(c, frozenset({Source(key[0], key[1], c)})) for c in columns]
        if found is None:
            return None
        out: list[tuple[str, Sources]] = []
        for col, src in found:
            stats = key in _STATISTICS and col.lower() in _STATISTICS[key][1]
            stats = stats or any(
                s.column.lower() in _STATISTICS.get(
                    (s.schema.lower(), s.table.lower()), ((), frozenset(), ""))[1]
                for s in src)
            out.append((col, src | {ANY_MASKED} if stats else src))
        return out
    return marked


# --------------------------------------------------------------------------------------------
# Reading the text


class _Tokenizer(MySQL.Tokenizer):
    """sqlglot turns REPLACE/EXECUTE/… into one opaque command; lineage needs their tree."""

    COMMANDS: ClassVar[set[TokenType]] = set()


_DIALECT = MySQL()
_SELECT_STARTS = {"SELECT", "WITH", "(", "TABLE", "VALUES"}
_INTO_FILE_OPTIONS = {
    "FIELDS", "COLUMNS", "LINES", "TERMINATED", "OPTIONALLY", "ENCLOSED", "ESCAPED",
    "STARTING", "BY",
}
_ROUTINES = {"Call", "Execute", "ExecuteImmediate", "Block"}
_NO_ROWS = {"Deallocate", "Show", "Describe", "Analyze"}
_STATEMENT_STARTS = {"SELECT", "WITH", "(", "TABLE", "VALUES", "INSERT", "UPDATE", "DELETE",
                     "REPLACE"}


def _word(tok: Token | None) -> str:
    if tok is None or tok.token_type in (TokenType.STRING, TokenType.IDENTIFIER):
        return ""
    return "(" if tok.token_type == TokenType.L_PAREN else " ".join(tok.text.upper().split())


def _tokens(text: str) -> list[Token]:
    try:
        return list(_Tokenizer(dialect=_DIALECT).tokenize(text))
    except TokenError as e:
        raise Unparseable(str(e)) from e


def _tree(tokens: list[Token], text: str) -> exp.Expr:
    try:
        trees = [t for t in _DIALECT.parser().parse(tokens, text) if t is not None]
    except ParseError as e:
        raise Unparseable(str(e)) from e
    except Exception as e:  # sqlglot fails on some input with IndexError & co.
        raise Unparseable(f"parser failure: {type(e).__name__}: {e}") from e
    if len(trees) != 1:
        raise Unparseable("one statement expected")
    return trees[0]


def _synthetic(tok: Token, kind: TokenType, text: str) -> Token:
    return Token(kind, text, tok.line, tok.col, tok.start, tok.end)


@dataclass
class _Into:
    """The INTO clause of a SELECT: sqlglot's grammar lacks most of its forms."""

    kind: str                                   # into_variable, into_outfile, into_dumpfile
    targets: list[str] = field(default_factory=list)


def _strip_into(tokens: list[Token]) -> tuple[list[Token], _Into | None]:
    """The SELECT's tokens without its INTO clause, and that clause."""
    if _word(tokens[0] if tokens else None) not in _SELECT_STARTS:
        return tokens, None
    out: list[Token] = []
    into: _Into | None = None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.token_type != TokenType.INTO:
            out.append(tok)
            i += 1
            continue
        nxt = _word(tokens[i + 1] if i + 1 < len(tokens) else None)
        if nxt in ("OUTFILE", "DUMPFILE"):
            if i + 2 >= len(tokens) or tokens[i + 2].token_type != TokenType.STRING:
                raise Unparseable(f"INTO {nxt} without a file name")
            into = _Into(f"into_{nxt.lower()}", [tokens[i + 2].text])
            i += 3
            while i < len(tokens):
                w = _word(tokens[i])
                if w in ("CHARACTER SET", "CHARSET"):
                    i += 2
                elif w == "CHARACTER":
                    i += 3
                elif w in _INTO_FILE_OPTIONS or tokens[i].token_type == TokenType.STRING:
                    i += 1
                else:
                    break
            continue
        into = _Into("into_variable")
        i += 1
        while i < len(tokens):
            if tokens[i].token_type == TokenType.PARAMETER and i + 1 < len(tokens):
                into.targets.append(f"@{tokens[i + 1].text}")
                i += 2
            elif tokens[i].token_type in (TokenType.VAR, TokenType.IDENTIFIER) and _word(
                    tokens[i]) not in ("FROM", "FOR", "LOCK"):
                into.targets.append(tokens[i].text)
                i += 1
            else:
                raise Unparseable("INTO without a variable")
            if i < len(tokens) and tokens[i].token_type == TokenType.COMMA:
                i += 1
                continue
            break
    return out, into


# --------------------------------------------------------------------------------------------
# Scopes


@dataclass
class _Rel:
    """One FROM item as the query sees it: its columns' lineage by name, in order."""

    columns: list[tuple[str, Sources]]
    opaque: bool = False          # a function or unknown relation whose columns are unknown
    table: Name | None = None     # the stored relation it names, for UPDATE targets

    def get(self, name: str) -> Sources | None:
        name = name.lower()
        for col, src in self.columns:
            if col.lower() == name:
                return src
        return None

    def everything(self) -> Sources:
        out: set[Source] = set()
        for _, src in self.columns:
            out |= src
        return frozenset(out | ({UNRESOLVED} if self.opaque else set()))


@dataclass
class _Scope:
    rels: dict[str, _Rel] = field(default_factory=dict)        # alias (lower case) → rel
    parent: _Scope | None = None
    ctes: dict[str, _Rel] = field(default_factory=dict)
    star: list[tuple[str, Sources]] | None = field(default_factory=list)  # None: unknown
    inserted: dict[str, Sources] | None = None                # VALUES(col) in an upsert

    def cte(self, name: str) -> _Rel | None:
        s: _Scope | None = self
        while s is not None:
            if name in s.ctes:
                return s.ctes[name]
            s = s.parent
        return None

    def add(self, alias: str, rel: _Rel, coalesce: list[str] | None = None) -> None:
        """A FROM item joins the scope; ``coalesce`` names the USING/NATURAL columns, which
        ``*`` lists once, first."""
        self.rels[alias.lower()] = rel
        if self.star is None or rel.opaque:
            self.star = None
            return
        if not coalesce:
            self.star = self.star + rel.columns
            return
        keys = {c.lower() for c in coalesce}
        left = {c.lower(): s for c, s in self.star}
        first = [(c, s | (rel.get(c) or _EMPTY)) for c, s in self.star if c.lower() in keys]
        self.star = first + [(c, s) for c, s in self.star if c.lower() not in keys] + [
            (c, s) for c, s in rel.columns if c.lower() not in keys or c.lower() not in left]


def _union(items: Iterable[Sources]) -> Sources:
    out: set[Source] = set()
    for s in items:
        out |= s
    return frozenset(out)


def _unparen(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _alias_columns(node: exp.Expr) -> list[str]:
    alias = node.args.get("alias")
    if not isinstance(alias, exp.TableAlias):
        return []
    return [c.name for c in alias.args.get("columns") or ()]


def _renamed(rel: _Rel, names: list[str]) -> _Rel:
    if not names:
        return rel
    return _Rel([(names[i] if i < len(names) else col, src)
                 for i, (col, src) in enumerate(rel.columns)], rel.opaque, rel.table)


# Functions that print an argument in their error message (error-based exfiltration), with
# the positions of those arguments (None: all).
_ERROR_CHANNELS: dict[str, tuple[int, ...] | None] = {
    "EXTRACTVALUE": (1,), "UPDATEXML": (1,), "GTID_SUBSET": None, "GTID_SUBTRACT": None,
    "ST_LATFROMGEOHASH": (0,), "ST_LONGFROMGEOHASH": (0,), "ST_POINTFROMGEOHASH": (0,),
}


# --------------------------------------------------------------------------------------------
# The walk


class _Walker:
    """One statement's walk: lineage of queries, and the sinks met on the way."""

    def __init__(self, resolve: Resolver, server: str, version: _Version,
                 functions: Functions | None = None) -> None:
        self.resolve = resolve
        self.server = server
        self.version = version
        self.functions = functions
        self.sinks: list[Sink] = []

    def sink(self, kind: str, target: Source | None, sources: Sources) -> None:
        self.sinks.append(Sink(kind, target, sources))

    # -- queries --------------------------------------------------------------------------

    def query(self, node: exp.Expr, outer: _Scope) -> list[Output]:
        """Outputs of a query expression (SELECT, set operation, VALUES, parenthesized)."""
        if isinstance(node, exp.Subquery):
            return self.query(node.this, outer)
        scope = self.with_ctes(node, outer)
        if isinstance(node, exp.SetOperation):
            left = self.query(node.this, scope)
            right = self.query(node.expression, scope)
            for key in ("order", "limit"):
                self.discard(node.args.get(key), scope)
            return [Output(lo.name, lo.sources | (right[i].sources if i < len(right)
                                                  else _UNKNOWN))
                    for i, lo in enumerate(left)]
        if isinstance(node, exp.Values):
            return self.values(node, scope)
        if isinstance(node, exp.Select):
            return self.select(node, scope)
        return [Output("?", _UNKNOWN)]

    def with_ctes(self, node: exp.Expr, outer: _Scope) -> _Scope:
        with_ = node.args.get("with_") or node.args.get("with")
        if not isinstance(with_, exp.With):
            return outer
        scope = _Scope(parent=outer, star=None)
        recursive = bool(with_.args.get("recursive"))
        for cte in with_.expressions:
            scope.ctes[cte.alias_or_name] = self.cte(cte, scope, recursive)
        return scope

    def cte(self, cte: exp.CTE, scope: _Scope, recursive: bool) -> _Rel:
        names = _alias_columns(cte)
        name = cte.alias_or_name

        def named(outputs: list[Output]) -> _Rel:
            return _Rel([(names[i] if i < len(names) and names[i] else o.name, o.sources)
                         for i, o in enumerate(outputs)])

        if not recursive:
            return named(self.query(cte.this, scope))
        # The recursive term may feed any column into any other: iterate to a fixpoint,
        # starting from the CTE itself still unknown. Sinks are kept from the last walk only.
        mark = len(self.sinks)
        scope.ctes[name] = _Rel([(n, _EMPTY) for n in names], opaque=not names)
        rel = named(self.query(cte.this, scope))
        for _ in range(len(rel.columns) + 2):
            scope.ctes[name] = rel
            del self.sinks[mark:]
            again = named(self.query(cte.this, scope))
            merged = _Rel([(col, src | (again.columns[i][1] if i < len(again.columns)
                                        else _EMPTY))
                           for i, (col, src) in enumerate(rel.columns)])
            if merged.columns == rel.columns:
                break
            rel = merged
        return rel

    def values(self, node: exp.Values, scope: _Scope) -> list[Output]:
        rows: list[list[exp.Expr]] = []
        for row in node.expressions:
            items = list(row.expressions) if isinstance(row, exp.Tuple) else [row]
            if len(items) == 1 and isinstance(items[0], exp.Anonymous) \
                    and items[0].name.upper() == "ROW":
                items = list(items[0].expressions)
            rows.append(items)
        width = max((len(r) for r in rows), default=0)
        return [Output(f"column_{i}", _union(self.expr(r[i], scope) for r in rows if i < len(r)))
                for i in range(width)]

    def from_scope(self, sel: exp.Select, outer: _Scope) -> _Scope:
        """The scope a SELECT's FROM clause builds (its expressions evaluated for sinks)."""
        scope = _Scope(parent=outer)
        from_ = sel.args.get("from_") or sel.args.get("from")
        if isinstance(from_, exp.From):
            self.add_item(from_.this, scope)
        for join in sel.args.get("joins") or ():
            self.add_join(join, scope)
        return scope

    def add_join(self, join: exp.Join, scope: _Scope) -> None:
        using = [c.name for c in join.args.get("using") or ()]
        natural = str(join.args.get("method") or "").upper() == "NATURAL"
        self.add_item(join.this, scope, using or None, natural)
        self.discard(join.args.get("on"), scope)

    def add_item(self, item: exp.Expr, scope: _Scope, using: list[str] | None = None,
                 natural: bool = False) -> None:
        pairs = list(self.from_item(item, scope))
        for n, (alias, rel) in enumerate(pairs):
            coalesce = using
            if natural and n == 0 and scope.star is not None:
                left = {c.lower() for c, _ in scope.star}
                coalesce = [c for c, _ in rel.columns if c.lower() in left]
            scope.add(alias, rel, coalesce if n == 0 else None)

    def from_item(self, item: exp.Expr, scope: _Scope) -> Iterator[tuple[str, _Rel]]:
        if isinstance(item, exp.Table) and not item.db and item.name.lower() == "dual":
            return  # FROM DUAL: no relation
        if isinstance(item, exp.Table) and isinstance(item.this, exp.Identifier):
            cte = scope.cte(item.name) if not item.db else None
            name = Name(item.db or None, item.name)
            if cte is not None:
                rel = cte
            else:
                found = self.resolve(name)
                rel = _Rel(list(found), table=name) if found is not None \
                    else _Rel([], opaque=True, table=name)
            yield item.alias_or_name, _renamed(rel, _alias_columns(item))
        elif isinstance(item, exp.Table) and isinstance(item.this, exp.JSONTable):
            yield item.alias_or_name, self.json_table(item.this, scope)
        elif isinstance(item, exp.Subquery) and isinstance(item.this, exp.Table):
            # A parenthesized join: (b JOIN c ON …)
            yield from self.from_item(item.this, scope)
        elif isinstance(item, exp.Subquery | exp.Values):
            inner = _Scope(parent=scope.parent, ctes=scope.ctes, star=None)
            query = item.this if isinstance(item, exp.Subquery) else item
            outputs = self.query(query, inner)
            rel = _Rel([(o.name, o.sources) for o in outputs])
            yield item.alias_or_name, _renamed(rel, _alias_columns(item))
        elif isinstance(item, exp.Lateral) and isinstance(item.this, exp.Subquery):
            outputs = self.query(item.this, scope)
            rel = _Rel([(o.name, o.sources) for o in outputs])
            yield item.alias_or_name, _renamed(rel, _alias_columns(item))
        else:  # table functions and other sources whose columns are not known
            yield item.alias_or_name or "?", _Rel([], opaque=True)
        if isinstance(item, exp.Table):
            for join in item.args.get("joins") or ():  # UPDATE a JOIN b, (b JOIN c)
                yield from self.from_item(join.this, scope)
                self.discard(join.args.get("on"), scope)

    def json_table(self, node: exp.JSONTable, scope: _Scope) -> _Rel:
        """JSON_TABLE's columns carry the document they are cut from (derived), except
        ordinality counters; a column list it cannot read makes the relation opaque."""
        doc = self.expr(node.this, scope)
        carried = doc | {DERIVED} if doc else doc
        columns: list[tuple[str, Sources]] = []

        def walk(schema: exp.Expr | None) -> bool:
            if not isinstance(schema, exp.JSONSchema):
                return False
            for col in schema.expressions:
                if not isinstance(col, exp.JSONColumnDef):
                    return False
                nested = col.args.get("nested_schema")
                if nested is not None:
                    if not walk(nested):
                        return False
                    continue
                columns.append((col.name, _EMPTY if col.args.get("ordinality") else carried))
            return True

        if not walk(node.args.get("schema")):
            return _Rel([], opaque=True)
        return _Rel(columns)

    def select(self, sel: exp.Select, outer: _Scope) -> list[Output]:
        scope = self.from_scope(sel, outer)
        for key in ("where", "having", "qualify", "order", "limit", "offset"):
            self.discard(sel.args.get(key), scope)
        for window in sel.args.get("windows") or ():
            self.discard(window, scope)
        aliases = {e.alias.lower(): e.this for e in sel.expressions if isinstance(e, exp.Alias)}
        group = sel.args.get("group")
        if isinstance(group, exp.Group):
            for key in group.expressions:
                self.group_key(key, aliases, list(sel.expressions), scope)
        out: list[Output] = []
        for item in sel.expressions:
            if isinstance(item, exp.Star):
                out.extend(self.star(None, scope))
                continue
            if isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
                out.extend(self.star(item.table, scope))
                continue
            value = item.this if isinstance(item, exp.Alias) else item
            out.append(Output(_output_name(item), _marked(value, self.expr(value, scope))))
        return out

    def group_key(self, key: exp.Expr, aliases: dict[str, exp.Expr], select: list[exp.Expr],
                  scope: _Scope) -> None:
        """GROUP BY on a key holding RAND() fails with "Duplicate entry '<key>'": the key's
        value reaches the error message."""
        target = key
        if isinstance(key, exp.Column) and not key.table and key.name.lower() in aliases:
            target = aliases[key.name.lower()]
        elif isinstance(key, exp.Literal) and key.is_int and 0 < int(key.name) <= len(
                select):
            item = select[int(key.name) - 1]
            target = item.this if isinstance(item, exp.Alias) else item
        sources = self.expr(target, scope)
        if target.find(exp.Rand) is not None and sources:
            self.sink("error_channel", None, sources)

    def star(self, qualifier: str | None, scope: _Scope) -> list[Output]:
        if qualifier is None:
            if scope.star is None:
                return [Output("*", _UNKNOWN)]
            return [Output(col, src) for col, src in scope.star]
        rel = scope.rels.get(qualifier.lower())
        if rel is None or rel.opaque:
            return [Output(f"{qualifier}.*", _UNKNOWN)]
        return [Output(col, src) for col, src in rel.columns]

    # -- expressions ----------------------------------------------------------------------

    def discard(self, node: object, scope: _Scope) -> None:
        """Walk an expression whose value is not carried (WHERE, ON, ORDER BY) for sinks."""
        if isinstance(node, exp.Expr):
            self.expr(node, scope)

    def expr(self, node: exp.Expr | None, scope: _Scope) -> Sources:
        """Every source column an expression may carry: any column it reads, at any depth."""
        if node is None:
            return _EMPTY
        if isinstance(node, exp.Column):
            return _EMPTY if isinstance(node.this, exp.Star) else self.column(node, scope)
        if isinstance(node, exp.Star | exp.Literal | exp.Null | exp.Boolean | exp.Placeholder
                      | exp.DataType | exp.Var | exp.SessionParameter):
            return _EMPTY
        if isinstance(node, exp.Parameter):
            return _UNKNOWN  # a user variable: whatever an earlier statement put in it
        if isinstance(node, exp.Query):
            return _union(o.sources for o in self.query(node, scope))
        if isinstance(node, exp.Subquery):
            return _union(o.sources for o in self.query(node.this, scope))
        if isinstance(node, exp.Exists):
            self.discard(node.this, scope)
            return _EMPTY  # a boolean, not a value
        if isinstance(node, exp.In) and node.args.get("query") is not None:
            self.discard(node.args["query"], scope)
            return self.expr(node.this, scope)
        if isinstance(node, exp.PropertyEQ | exp.EQ) and isinstance(node.this, exp.Parameter):
            value = self.expr(node.expression, scope)
            if isinstance(node, exp.PropertyEQ):  # @v := …: assigns wherever it stands
                self.sink("set_variable", None, value)
                return value
            return value | _UNKNOWN  # @v = …: a comparison with whatever @v holds
        if isinstance(node, exp.Window):
            for key in ("partition_by", "order", "spec"):
                arg = node.args.get(key)
                for v in arg if isinstance(arg, list) else [arg]:
                    self.discard(v, scope)
            return self.expr(node.this, scope)
        if isinstance(node, exp.Anonymous):
            fname = node.name.upper()
            if fname == "VALUES" and scope.inserted is not None and node.expressions:
                return self.inserted(node.expressions[0].name, scope)
            if fname in _ERROR_CHANNELS:
                positions = _ERROR_CHANNELS[fname]
                args = list(node.expressions)
                picked = args if positions is None else [args[p] for p in positions
                                                         if p < len(args)]
                self.sink("error_channel", None, _union(self.expr(a, scope) for a in picked))
        out: set[Source] = set()
        if self.functions is not None and isinstance(node, exp.Func):
            called = _stored_call(node, self.functions)
            if called is not None:
                out.add(called)
        for child in node.iter_expressions():
            out |= self.expr(child, scope)
        return frozenset(out)

    def inserted(self, column: str, scope: _Scope) -> Sources:
        s: _Scope | None = scope
        while s is not None:
            if s.inserted is not None:
                return s.inserted.get(column.lower(), _UNKNOWN)
            s = s.parent
        return _UNKNOWN

    def column(self, col: exp.Column, scope: _Scope) -> Sources:
        name, qualifier = col.name, col.table.lower()
        s: _Scope | None = scope
        while s is not None:
            if qualifier:
                rel = s.rels.get(qualifier)
                if rel is None and col.db:
                    rel = next((r for r in s.rels.values() if r.table is not None
                                and r.table.name.lower() == qualifier
                                and (r.table.schema or "").lower() == col.db.lower()), None)
                if rel is not None:
                    got = rel.get(name)
                    if got is not None:
                        return got
                    return rel.everything() if rel.opaque else _UNKNOWN
            else:
                found = [h for h in (r.get(name) for r in s.rels.values()) if h is not None]
                if found:
                    return _union(found)
                if any(r.opaque for r in s.rels.values()):
                    return _UNKNOWN
            s = s.parent
        return _UNKNOWN

    # -- statements that write ------------------------------------------------------------

    def target(self, table: Name, column: str | None, known: list[tuple[str, Sources]] | None
               ) -> Source:
        """The stored column a write lands in: what the resolver says the column is (a view's
        column writes its base column), else the name as written."""
        if column is None:
            return UNRESOLVED
        for col, src in known or ():
            if col.lower() == column.lower():
                plain = [s for s in src if not is_marker(s)]
                if len(plain) == 1 and len(src) == 1:
                    return plain[0]
                return UNRESOLVED
        return Source(table.schema or "", table.name, column)

    def insert(self, node: exp.Insert, kind: str) -> list[Output]:
        schema = node.this
        table = schema.this if isinstance(schema, exp.Schema) else schema
        if not isinstance(table, exp.Table):
            raise Unparseable("INSERT without a target table")
        name = Name(table.db or None, table.name)
        known = self.resolve(name)
        columns: list[str] | None = [c.name for c in schema.expressions] \
            if isinstance(schema, exp.Schema) else None
        if columns is None and known is not None:
            columns = [c for c, _ in known]
        target_rel = _Rel(list(known), table=name) if known is not None \
            else _Rel([], opaque=True, table=name)
        source = node.expression
        outer = _Scope()
        if isinstance(source, exp.Values):
            outer.add(table.alias_or_name, target_rel)
        outputs = self.query(source, outer) if source is not None else []
        inserted: dict[str, Sources] = {}
        for i, out in enumerate(outputs):
            col = columns[i] if columns is not None and i < len(columns) else None
            tgt = self.target(name, col, known)
            self.sink(kind, tgt, out.sources)
            if col is not None:
                inserted[col.lower()] = out.sources
        conflict = node.args.get("conflict")
        if isinstance(conflict, exp.OnConflict) and conflict.args.get("duplicate"):
            scope = self.from_scope(source, _Scope()) if isinstance(source, exp.Select) \
                else _Scope()
            scope = _Scope(parent=scope, inserted=inserted)
            scope.add(table.alias_or_name, target_rel)
            alias = source.args.get("alias") if isinstance(source, exp.Values) else None
            if isinstance(alias, exp.TableAlias):
                names = [c.name for c in alias.args.get("columns") or ()] or columns or []
                scope.add(alias.name, _Rel([(n, inserted.get(c.lower(), _UNKNOWN))
                                            for n, c in zip(names, columns or names,
                                                            strict=False)]))
            self.assignments(conflict.expressions, scope, "upsert")
        returning = node.args.get("returning")
        if isinstance(returning, exp.Returning):
            rel = _Rel([(c, s | inserted.get(c.lower(), _EMPTY)) for c, s in target_rel.columns],
                       target_rel.opaque, name)
            scope = _Scope()
            scope.add(table.alias_or_name, rel)
            return self.projection(returning.expressions, scope)
        return []

    def assignments(self, items: Iterable[exp.Expr], scope: _Scope, kind: str) -> None:
        """``col = expr`` items of UPDATE SET / ON DUPLICATE KEY UPDATE; a later item sees the
        columns as earlier items left them (MySQL assigns left to right)."""
        for item in items:
            if not isinstance(item, exp.EQ | exp.PropertyEQ) \
                    or not isinstance(item.this, exp.Column):
                raise Unparseable("unrecognized assignment")
            col = item.this
            value = _marked(item.expression, self.expr(item.expression, scope))
            rel = self.owner(col, scope)
            if rel is None:
                self.sink(kind, UNRESOLVED, value)
                continue
            known = None if rel.opaque else rel.columns
            self.sink(kind, self.target(rel.table, col.name, known) if rel.table else UNRESOLVED,
                      value)
            rel.columns = [(c, s | value if c.lower() == col.name.lower() else s)
                           for c, s in rel.columns]

    def owner(self, col: exp.Column, scope: _Scope) -> _Rel | None:
        """The relation an assigned column belongs to."""
        s: _Scope | None = scope
        while s is not None:
            if col.table:
                rel = s.rels.get(col.table.lower())
                if rel is not None:
                    return rel
            else:
                hits = [r for r in s.rels.values() if r.get(col.name) is not None]
                if hits:
                    return hits[0]
                opaque = [r for r in s.rels.values() if r.opaque]
                if len(opaque) == 1 and len(s.rels) == 1:
                    return opaque[0]
            s = s.parent
        return None

    def update(self, node: exp.Update) -> list[Output]:
        scope = _Scope()
        if node.this is not None:
            self.add_item(node.this, scope)
        for key in ("from_", "from"):
            from_ = node.args.get(key)
            if isinstance(from_, exp.From):
                self.add_item(from_.this, scope)
        for join in node.args.get("joins") or ():
            self.add_join(join, scope)
        self.assignments(node.expressions, scope, "update")
        for key in ("where", "order", "limit"):
            self.discard(node.args.get(key), scope)
        return []

    def delete(self, node: exp.Delete) -> list[Output]:
        scope = _Scope()
        if node.this is not None:
            self.add_item(node.this, scope)
        using = node.args.get("using")
        for item in using if isinstance(using, list) else []:
            self.add_item(item, scope)
        for key in ("where", "order", "limit"):
            self.discard(node.args.get(key), scope)
        returning = node.args.get("returning")
        if isinstance(returning, exp.Returning):
            return self.projection(returning.expressions, scope)
        return []

    def projection(self, items: Iterable[exp.Expr], scope: _Scope) -> list[Output]:
        sel = exp.Select(expressions=list(items))
        out: list[Output] = []
        for item in sel.expressions:
            if isinstance(item, exp.Star):
                out.extend(self.star(None, scope))
                continue
            value = item.this if isinstance(item, exp.Alias) else item
            out.append(Output(_output_name(item), _marked(value, self.expr(value, scope))))
        return out

    def create(self, node: exp.Create) -> list[Output]:
        query = node.expression
        if str(node.args.get("kind") or "").upper() != "TABLE" or not isinstance(
                query, exp.Query):
            return []
        table = node.this.this if isinstance(node.this, exp.Schema) else node.this
        if not isinstance(table, exp.Table):
            raise Unparseable("CREATE TABLE without a name")
        name = Name(table.db or None, table.name)
        for out in self.query(query, _Scope()):
            self.sink("create_table_as", Source(name.schema or "", name.name, out.name),
                      out.sources)
        return []

    def set(self, node: exp.Set) -> list[Output]:
        for item in node.expressions:
            eq = item.this if isinstance(item, exp.SetItem) else None
            if not isinstance(eq, exp.EQ | exp.PropertyEQ):
                continue  # SET NAMES, SET TRANSACTION: no values copied
            value = self.expr(eq.expression, _Scope())
            self.sink("set_variable", None, _marked(eq.expression, value))
        return []


def _stored_call(node: exp.Func, functions: Functions) -> Source | None:
    """The CALL marker of a call the predicate says is a stored function: ``db.f(…)``, or a
    name MySQL looks up in the current database."""
    parent = node.parent
    schema = parent.this.name if isinstance(parent, exp.Dot) and parent.expression is node \
        else None
    name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
    if not name or not functions(Name(schema, name)):
        return None
    return Source(CALL, schema or "", name)


def _marked(node: exp.Expr, sources: Sources) -> Sources:
    """``sources`` with ``DERIVED`` when ``node`` computes a value rather than naming a
    column."""
    if sources and not isinstance(_unparen(node), exp.Column):
        return sources | {DERIVED}
    return sources


def _output_name(item: exp.Expr) -> str:
    if isinstance(item, exp.Alias):
        return item.alias
    if isinstance(item, exp.Column):
        return item.name
    return item.sql(dialect="mysql")


# --------------------------------------------------------------------------------------------
# Statements


def _handler(tokens: list[Token], resolve: Resolver) -> list[Output]:
    """``HANDLER t READ …`` returns every column of ``t``; OPEN/CLOSE return nothing."""
    if len(tokens) >= 4 and tokens[2].token_type == TokenType.DOT:
        name, rest = Name(tokens[1].text, tokens[3].text), tokens[4:]
    elif len(tokens) >= 2:
        name, rest = Name(None, tokens[1].text), tokens[2:]
    else:
        raise Unparseable("HANDLER without a table")
    if _word(rest[0] if rest else None) != "READ":
        return []
    found = resolve(name)
    if found is None:
        return [Output("*", _UNKNOWN)]
    return [Output(col, src) for col, src in found]


def _statement(text: str, kind: str, category: str, walker: _Walker) -> list[Output]:
    """Outputs of one statement (already expanded), sinks collected by ``walker``."""
    tokens = _tokens(text)
    if not tokens:
        return []
    first = _word(tokens[0])
    if first == "HANDLER":
        return _handler(tokens, walker.resolve)
    if kind in _ROUTINES:  # runs code whose results and writes are not known here
        walker.sink("routine", None, _UNKNOWN)
        return [Output("?", _UNKNOWN)]
    if kind == "Prepare":
        literal = tokens[3:] if _word(tokens[2] if len(tokens) > 2 else None) == "FROM" else []
        if not literal or any(t.token_type != TokenType.STRING for t in literal):
            walker.sink("routine", None, _UNKNOWN)  # text built at run time
            return []
        inner = "".join(t.text for t in literal)
        for _, found in _walk(inner, walker.resolve, walker.server, walker.version,
                              walker.functions):
            walker.sinks.extend(found)  # what EXECUTE will copy, refused at PREPARE
        return []
    if kind == "SetStatement":
        depth = 0
        for i, tok in enumerate(tokens):
            depth += (tok.token_type == TokenType.L_PAREN) - (tok.token_type == TokenType.R_PAREN)
            if depth == 0 and _word(tok) == "FOR":
                rest = text[tokens[i + 1].start:] if i + 1 < len(tokens) else ""
                return _statement(rest, _kind_of(rest), "", walker)
        raise Unparseable("SET STATEMENT without FOR")
    if kind in ("Analyze", "Describe"):
        # MariaDB ANALYZE <statement> and EXPLAIN ANALYZE run the statement: its sinks
        # count; the rows returned are a plan.
        runs = kind == "Analyze" and _word(tokens[1] if len(tokens) > 1 else None) not in (
            "TABLE", "TABLES", "NO_WRITE_TO_BINLOG", "LOCAL")
        runs = runs or (kind == "Describe" and "ANALYZE" in (_word(t) for t in tokens[:5]))
        at = next((i for i, t in enumerate(tokens) if i and _word(t) in _STATEMENT_STARTS
                   and _word(tokens[i - 1]) != "="), None)
        if runs and at is not None:
            rest = text[tokens[at].start:]
            _statement(rest, _kind_of(rest), "", walker)
        return []
    if category == "code":  # CREATE TRIGGER/PROCEDURE/EVENT …: code that copies later
        walker.sink("routine", None, _UNKNOWN)
        return []
    if kind in _NO_ROWS:
        return []
    if first == "DO":
        tokens = [_synthetic(tokens[0], TokenType.SELECT, "SELECT"), *tokens[1:]]
        walker.query(_tree(tokens, text), _Scope())
        return []
    tokens, into = _strip_into(tokens)
    replace = _word(tokens[0]) == "REPLACE"
    if replace:
        tokens = [_synthetic(tokens[0], TokenType.INSERT, "INSERT"), *tokens[1:]]
    tree = _tree(tokens, text)
    if isinstance(tree, exp.Query | exp.Values):
        outputs = walker.query(tree, _Scope())
        if into is None:
            return outputs
        for out in outputs:  # INTO @a, @b: one sink per column, in order
            walker.sink(into.kind, None, out.sources)
        return []
    if isinstance(tree, exp.Insert):
        return walker.insert(tree, "replace" if replace else "insert")
    if isinstance(tree, exp.Update):
        return walker.update(tree)
    if isinstance(tree, exp.Delete):
        return walker.delete(tree)
    if isinstance(tree, exp.Create):
        return walker.create(tree)
    if isinstance(tree, exp.Set):
        return walker.set(tree)
    if isinstance(tree, exp.Command):
        walker.sink("routine", None, _UNKNOWN)
        return []
    return []


def _kind_of(text: str) -> str:
    words = text.split()
    return words[0].capitalize() if words else ""


def _walk(sql: str, resolve: Resolver, server: str, version: _Version,
          functions: Functions | None = None) -> list[tuple[list[Output], list[Sink]]]:
    """Per statement: its outputs and its sinks."""
    try:
        statements = [(f.text, f.kind, f.category)
                      for f in analyze(sql, server=server, version=version)]
    except Unparseable:
        # HANDLER is outside what the statement analysis reads; nothing else is.
        expanded = expand_executable_comments(sql, server=server, version=version)
        tokens = _tokens(expanded)
        if _word(tokens[0] if tokens else None) != "HANDLER" or any(
                t.token_type == TokenType.SEMICOLON for t in tokens[:-1]):
            raise
        statements = [(expanded.strip().rstrip(";"), "Handler", "read")]
    out: list[tuple[list[Output], list[Sink]]] = []
    for text, kind, category in statements:
        walker = _Walker(resolve, server, version, functions)
        try:
            outputs = _statement(text, kind, category, walker)
        except Unparseable:
            raise
        except Exception as e:  # a tree shape the walk did not foresee: refuse, never guess
            raise Unparseable(f"statement not understood: {type(e).__name__}: {e}") from e
        out.append((outputs, list(dict.fromkeys(walker.sinks))))
    return out


def trace(sql: str, resolve: Resolver, server: str = "mariadb",
          version: _Version = (10, 11, 0), functions: Functions | None = None
          ) -> list[tuple[list[Output], list[Sink]]]:
    """Per statement of ``sql``: its outputs (as ``lineage``) and its sinks (as ``sinks``),
    from one walk."""
    return _walk(sql, resolve, server, version, functions)


def lineages(sql: str, resolve: Resolver, server: str = "mariadb",
             version: _Version = (10, 11, 0), functions: Functions | None = None
             ) -> list[list[Output]]:
    """Output lineage of every statement in ``sql`` (a multi-statement string returns one
    result set per statement)."""
    return [outputs for outputs, _ in _walk(sql, resolve, server, version, functions)]


def lineage(sql: str, resolve: Resolver, server: str = "mariadb",
            version: _Version = (10, 11, 0), functions: Functions | None = None
            ) -> list[Output]:
    """Lineage of the result set of the one statement in ``sql``: [] for a statement that
    returns no rows (INSERT, SELECT … INTO: see ``sinks``); one ``UNRESOLVED`` output for a
    result of unknown shape (CALL, EXECUTE). Raises ``Unparseable`` for text that cannot be
    read, or for more than one statement (use ``lineages``)."""
    per_statement = lineages(sql, resolve, server, version, functions)
    if len(per_statement) != 1:
        raise Unparseable("lineage of one statement expected")
    return per_statement[0]


def sinks(sql: str, resolve: Resolver, server: str = "mariadb",
          version: _Version = (10, 11, 0), functions: Functions | None = None) -> list[Sink]:
    """Every place outside the result set that the statements in ``sql`` copy values to,
    with the sources each may carry. WHERE/ON/ORDER BY are not sinks; functions that print
    an argument in an error message are, wherever they stand."""
    return [s for _, found in _walk(sql, resolve, server, version, functions)
            for s in found]


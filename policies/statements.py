"""What a PostgreSQL statement string does, read from pglast's syntax tree.

The guardrails decide on this analysis, never on the SQL text: comments, case, quoting and
unicode escapes are the parser's business. A string the parser rejects is ``Unparseable`` and
must be refused (fail closed), never forwarded on a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.visitors import Visitor

WRITE_STATEMENTS = {
    "InsertStmt": "relation",
    "UpdateStmt": "relation",
    "DeleteStmt": "relation",
    "MergeStmt": "relation",
}


class Unparseable(ValueError):
    """The server's grammar would not accept this either; the message is the parser's."""


@dataclass(frozen=True)
class Relation:
    """A table-like name as written: ``schema`` is None when it resolves via search_path."""

    schema: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True)
class StatementFacts:
    """One top-level statement of a string and what its tree touches."""

    kind: str                                   # pglast node name, e.g. "SelectStmt"
    text: str                                   # this statement's own source text
    reads: frozenset[Relation] = frozenset()
    writes: frozenset[Relation] = frozenset()   # INSERT/UPDATE/DELETE/MERGE/TRUNCATE/COPY FROM
    functions: frozenset[str] = frozenset()     # called functions, schema-qualified as written
    ctes: frozenset[str] = frozenset()
    nested_kinds: frozenset[str] = field(default_factory=frozenset)  # statements inside (CTEs)

    @property
    def writes_data(self) -> bool:
        return bool(self.writes)


def _relation(rv: ast.RangeVar) -> Relation:
    return Relation(rv.schemaname, rv.relname or "")


def _func_name(fc: ast.FuncCall) -> str:
    return ".".join(s.sval or "" for s in fc.funcname or () if isinstance(s, ast.String))


class _Collector(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.reads: set[Relation] = set()
        self.writes: set[Relation] = set()
        self.functions: set[str] = set()
        self.ctes: set[str] = set()
        self.kinds: set[str] = set()
        self._targets: set[int] = set()

    def visit(self, ancestors: object, node: object) -> None:
        kind = type(node).__name__
        if kind in WRITE_STATEMENTS:
            target = getattr(node, WRITE_STATEMENTS[kind])
            self.writes.add(_relation(target))
            self._targets.add(id(target))
            self.kinds.add(kind)
        elif isinstance(node, ast.CopyStmt) and node.relation is not None:
            if node.is_from:
                self.writes.add(_relation(node.relation))
                self._targets.add(id(node.relation))
        elif isinstance(node, ast.TruncateStmt):
            for rv in node.relations or ():
                self.writes.add(_relation(rv))
                self._targets.add(id(rv))
        elif isinstance(node, ast.CommonTableExpr):
            self.ctes.add(node.ctename or "")
        elif isinstance(node, ast.FuncCall):
            self.functions.add(_func_name(node))
        elif isinstance(node, ast.RangeVar) and id(node) not in self._targets:
            self.reads.add(_relation(node))
        elif isinstance(node, ast.SelectStmt | ast.ExplainStmt | ast.PrepareStmt):
            self.kinds.add(kind)


def analyze(sql: str) -> list[StatementFacts]:
    """Split a string into its statements and describe each; raises ``Unparseable``."""
    try:
        raw = parse_sql(sql)
    except ParseError as exc:
        raise Unparseable(str(exc)) from None
    encoded = sql.encode()
    out: list[StatementFacts] = []
    for rs in raw:
        start = rs.stmt_location or 0
        length = rs.stmt_len or len(encoded) - start
        text = encoded[start:start + length].decode(errors="replace").strip()
        c = _Collector()
        if rs.stmt is not None:
            c(rs.stmt)
        # A name defined by a CTE in this statement is not a table when read unqualified.
        reads = {r for r in c.reads if not (r.schema is None and r.name in c.ctes)}
        kind = type(rs.stmt).__name__
        out.append(StatementFacts(
            kind=kind, text=text, reads=frozenset(reads), writes=frozenset(c.writes),
            functions=frozenset(c.functions), ctes=frozenset(c.ctes),
            nested_kinds=frozenset(c.kinds - {kind})))
    return out

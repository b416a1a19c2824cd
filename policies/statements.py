"""What a PostgreSQL statement string does, read from pglast's syntax tree.

The guardrails decide on these facts, never on the SQL text: comments, case, quoting, unicode
escapes and dollar quoting are the parser's business. A string the parser rejects is
``Unparseable`` and must be refused (fail closed), never forwarded on a guess. A statement kind
this module does not know is reported as category "unknown", which the guardrails refuse.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError

from policies.facts import (
    Call,
    Category,
    Facts,
    Name,
    Setting,
    Unparseable,
    Write,
    WriteOp,
    kind_words,
)

__all__ = ["Unparseable", "analyze", "FILE_FUNCTIONS"]

# Server-side file, program and network access through functions (core, adminpack, dblink).
FILE_FUNCTIONS = frozenset({
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir",
    "pg_ls_waldir", "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_ls_logicalsnapdir",
    "pg_ls_logicalmapdir", "pg_ls_replslotdir", "pg_current_logfile", "pg_file_write",
    "pg_file_rename", "pg_file_unlink", "pg_file_sync", "pg_logdir_ls", "pg_file_read",
    "pg_file_length", "lo_import", "lo_export",
})
PRIVILEGED_SETTINGS = frozenset({"role", "session_authorization"})
# Client encodings whose multi-byte characters may contain the byte of a quote or backslash:
# with them the server would split a string where Wiregate's parser does not (normalized as
# PostgreSQL normalizes encoding names: lower case, letters and digits only).
CLIENT_ONLY_ENCODINGS = frozenset({
    "sjis", "mskanji", "shiftjis", "win932", "windows932", "shiftjis2004", "big5", "win950",
    "windows950", "gbk", "win936", "windows936", "cp936", "gb18030", "uhc", "win949",
    "windows949", "johab",
})


def setting_refusal(name: str, value: str | None) -> str | None:
    """Why setting ``name`` to ``value`` must be refused whatever the profile: a setting under
    which the server would read statement text differently from Wiregate's parser."""
    name = name.lower()
    if name == "standard_conforming_strings" and value is not None \
            and _as_bool(value) is not True:
        return ("standard_conforming_strings must stay on: with it off the server reads "
                "backslashes in strings differently from Wiregate's parser")
    if name in ("client_encoding", "names") and value is not None:
        norm = "".join(ch for ch in value.lower() if ch.isalnum())
        if norm in CLIENT_ONLY_ENCODINGS:
            return (f"client_encoding {value} is refused: its characters can hide quote and "
                    "backslash bytes from Wiregate's parser")
    return None

_DDL = {
    "AlterTableStmt", "AlterObjectSchemaStmt", "RenameStmt", "AlterSystemStmt",
    "AlterDatabaseStmt", "AlterDatabaseSetStmt", "AlterDatabaseRefreshCollStmt",
    "AlterFunctionStmt", "AlterSeqStmt", "AlterDomainStmt", "AlterEnumStmt",
    "AlterExtensionStmt", "AlterExtensionContentsStmt", "AlterTableSpaceOptionsStmt",
    "AlterTableMoveAllStmt", "AlterPublicationStmt", "AlterSubscriptionStmt",
    "AlterCollationStmt", "AlterStatsStmt", "AlterTSConfigurationStmt", "AlterTSDictionaryStmt",
    "AlterOperatorStmt", "AlterTypeStmt", "AlterFdwStmt", "AlterForeignServerStmt",
    "AlterUserMappingStmt", "AlterEventTrigStmt", "AlterObjectDependsStmt", "CommentStmt",
    "SecLabelStmt", "DropStmt", "DropdbStmt", "DropTableSpaceStmt", "DropSubscriptionStmt",
    "DropUserMappingStmt", "TruncateStmt",
}
_PRIVILEGE = {
    "GrantStmt", "GrantRoleStmt", "CreateRoleStmt", "AlterRoleStmt", "AlterRoleSetStmt",
    "DropRoleStmt", "AlterDefaultPrivilegesStmt", "ReassignOwnedStmt", "DropOwnedStmt",
    "AlterOwnerStmt", "CreatePolicyStmt", "AlterPolicyStmt",
}
_CODE = {
    "DoStmt", "CreateFunctionStmt", "CreateTrigStmt", "RuleStmt", "CreateEventTrigStmt",
    "CreateExtensionStmt", "CreatePLangStmt", "CreateCastStmt", "CreateConversionStmt",
    "CreateOpClassStmt", "CreateOpFamilyStmt", "AlterOpFamilyStmt", "DefineStmt",
    "CreateTransformStmt", "CreateAmStmt", "LoadStmt",
}
_FOREIGN = {
    "CreateForeignServerStmt", "CreateFdwStmt", "CreateUserMappingStmt",
    "CreateForeignTableStmt", "ImportForeignSchemaStmt", "CreateSubscriptionStmt",
}
_ADMIN = {
    "CheckPointStmt", "VacuumStmt", "ClusterStmt", "ReindexStmt", "RefreshMatViewStmt",
    "CreateTableSpaceStmt", "CreatePublicationStmt", "AlterSystemStmt",
}
_SESSION = {
    "VariableShowStmt", "DiscardStmt", "ListenStmt", "UnlistenStmt", "NotifyStmt",
    "DeallocateStmt", "ExecuteStmt", "ClosePortalStmt", "ConstraintsSetStmt", "LockStmt",
}
_CREATE_KINDS = {
    "CreateStmt": "table", "IndexStmt": "index", "ViewStmt": "view", "CreateSeqStmt": "sequence",
    "CreateSchemaStmt": "schema", "CompositeTypeStmt": "type", "CreateEnumStmt": "type",
    "CreateRangeStmt": "type", "CreateDomainStmt": "type", "CreateStatsStmt": "statistics",
    "CreatedbStmt": "database",
}
_PRIVILEGE_SUBCOMMANDS = {
    enums.AlterTableType.AT_ChangeOwner: "OWNER TO",
    enums.AlterTableType.AT_EnableRowSecurity: "ENABLE ROW LEVEL SECURITY",
    enums.AlterTableType.AT_DisableRowSecurity: "DISABLE ROW LEVEL SECURITY",
    enums.AlterTableType.AT_ForceRowSecurity: "FORCE ROW LEVEL SECURITY",
    enums.AlterTableType.AT_NoForceRowSecurity: "NO FORCE ROW LEVEL SECURITY",
}
_SKIP_SLOTS = frozenset({"location", "stmt_location", "stmt_len", "rexpr_list_start",
                         "rexpr_list_end", "arg_location"})


def analyze(sql: str) -> list[Facts]:
    """Split a string into its statements and describe each; raises ``Unparseable``."""
    if "\x00" in sql:
        # The parser stops at a NUL: "SELECT 1\x00; DROP TABLE t" would be judged a SELECT.
        raise Unparseable("the statement contains a NUL character")
    try:
        raw = parse_sql(sql)
    except ParseError as exc:
        raise Unparseable(str(exc)) from None
    out: list[Facts] = []
    for rs in raw:
        # pglast reports locations in characters of the Python string, not in UTF-8 bytes.
        start = rs.stmt_location or 0
        length = rs.stmt_len or len(sql) - start
        text = sql[start:start + length].strip()
        out.append(_Statement(text).facts(rs.stmt))
    return out


# -- tree helpers ------------------------------------------------------------------------------

def children(node: Any) -> Iterator[Any]:
    for slot in type(node).__slots__:  # type: ignore[attr-defined]
        if slot in _SKIP_SLOTS:
            continue
        value = getattr(node, slot, None)
        if isinstance(value, ast.Node):
            yield value
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, ast.Node):
                    yield item
                elif isinstance(item, tuple):
                    yield from (i for i in item if isinstance(i, ast.Node))


def walk(node: Any) -> Iterator[Any]:
    """Every node of a subtree, the root first."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(children(n))


def _scoped_walk(node: Any) -> Iterator[tuple[Any, frozenset[str]]]:
    """Every node with the CTE names visible at it. A non-recursive WITH's query sees only
    the CTEs before it, so ``WITH t AS (SELECT * FROM t)`` reads the table t."""
    stack: list[tuple[Any, frozenset[str]]] = [(node, frozenset())]
    while stack:
        n, scope = stack.pop()
        yield n, scope
        with_ = getattr(n, "withClause", None)
        if not isinstance(with_, ast.WithClause):
            stack.extend((c, scope) for c in children(n))
            continue
        ctes = [c for c in with_.ctes or () if isinstance(c, ast.CommonTableExpr)]
        names = [c.ctename or "" for c in ctes]
        inner = scope | frozenset(names)
        for i, cte in enumerate(ctes):
            stack.append((cte, inner if with_.recursive else scope | frozenset(names[:i])))
        stack.extend((c, inner) for c in children(n) if c is not with_)


def shape(node: Any) -> Any:
    """A location-free, comparable form of a subtree: ``a = a`` written twice compares equal."""
    if isinstance(node, ast.Node):
        return (type(node).__name__,) + tuple(
            shape(getattr(node, s, None)) for s in type(node).__slots__  # type: ignore[attr-defined]
            if s not in _SKIP_SLOTS)
    if isinstance(node, tuple):
        return tuple(shape(n) for n in node)
    return node


def _name(rv: Any) -> Name:
    if not isinstance(rv, ast.RangeVar):
        return Name(None, "")
    return Name(rv.schemaname, rv.relname or "")


def _qualified(parts: Any) -> Name:
    names = [p.sval or "" for p in parts or () if isinstance(p, ast.String)]
    if not names:
        return Name(None, "")
    if len(names) == 1:
        return Name(None, names[0])
    return Name(names[-2], names[-1])


def _const(node: Any) -> Any:
    """The Python value of a constant expression, or ``_UNKNOWN``."""
    if isinstance(node, ast.A_Const):
        if node.isnull:
            return None
        v = node.val
        if isinstance(v, ast.Integer):
            return v.ival
        if isinstance(v, ast.Float):
            try:
                return float(v.fval or "")
            except ValueError:
                return _UNKNOWN
        if isinstance(v, ast.Boolean):
            return bool(v.boolval)
        if isinstance(v, ast.String):
            return v.sval
        return _UNKNOWN
    if isinstance(node, ast.TypeCast):
        value = _const(node.arg)
        if value is _UNKNOWN or value is None:
            return value
        tname = (_qualified(node.typeName.names).name if node.typeName else "").lower()
        if tname in ("bool", "boolean"):
            return _as_bool(value)
        if tname in ("int2", "int4", "int8", "integer", "smallint", "bigint", "numeric",
                     "float4", "float8", "decimal"):
            try:
                return float(value) if not isinstance(value, bool) else int(value)
            except (TypeError, ValueError):
                return _UNKNOWN
        if tname in ("text", "varchar", "bpchar", "char", "name"):
            return str(value).lower() if isinstance(value, bool) else str(value)
        return value
    return _UNKNOWN


class _Unknown:
    pass


_UNKNOWN: Any = _Unknown()
_TRUE_WORDS = {"t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"}
_FALSE_WORDS = {"f", "fa", "fal", "fals", "false", "n", "no", "of", "off", "0"}


def _as_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE_WORDS:
            return True
        if v in _FALSE_WORDS:
            return False
    return _UNKNOWN


def _compare(op: str, a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    if isinstance(a, str) != isinstance(b, str):
        try:
            a, b = float(a), float(b)
        except (TypeError, ValueError):
            return None
    try:
        return {"=": a == b, "<>": a != b, "!=": a != b, "<": a < b, ">": a > b,
                "<=": a <= b, ">=": a >= b}.get(op)
    except TypeError:
        return None


def truth(node: Any) -> bool | None:
    """True when the expression holds for every row whatever the data, False when for none,
    None when it depends on the row (or this evaluator cannot tell)."""
    if node is None:
        return None
    value = _const(node)
    if value is not _UNKNOWN:
        b = _as_bool(value) if value is not None else None
        return None if b is _UNKNOWN else b
    if isinstance(node, ast.BoolExpr):
        args = [truth(a) for a in node.args or ()]
        if node.boolop == enums.BoolExprType.AND_EXPR:
            if all(a is True for a in args):
                return True
            return False if any(a is False for a in args) else None
        if node.boolop == enums.BoolExprType.OR_EXPR:
            if any(a is True for a in args) or _complementary_null_tests(node.args or ()):
                return True
            return False if all(a is False for a in args) else None
        inner = args[0] if args else None
        return None if inner is None else not inner
    if isinstance(node, ast.A_Expr):
        op = _qualified(node.name).name
        if node.kind == enums.A_Expr_Kind.AEXPR_OP and op in ("=", "<>", "!=", "<", ">", "<=",
                                                              ">="):
            a, b = _const(node.lexpr), _const(node.rexpr)
            if a is not _UNKNOWN and b is not _UNKNOWN:
                return _compare(op, a, b)
            if node.lexpr is not None and shape(node.lexpr) == shape(node.rexpr) \
                    and not _has_volatile_shape(node.lexpr):
                return op in ("=", "<=", ">=")
            return None
        if node.kind in (enums.A_Expr_Kind.AEXPR_DISTINCT, enums.A_Expr_Kind.AEXPR_NOT_DISTINCT) \
                and node.lexpr is not None and shape(node.lexpr) == shape(node.rexpr) \
                and not _has_volatile_shape(node.lexpr):
            # a IS NOT DISTINCT FROM a holds for every row, NULLs included.
            return node.kind == enums.A_Expr_Kind.AEXPR_NOT_DISTINCT
        if node.kind == enums.A_Expr_Kind.AEXPR_IN and isinstance(node.rexpr, tuple):
            if op == "=" and not _has_volatile_shape(node.lexpr) and \
                    any(shape(node.lexpr) == shape(x) for x in node.rexpr):
                return True
            left = _const(node.lexpr)
            items = [_const(x) for x in node.rexpr]
            if left is not _UNKNOWN and all(i is not _UNKNOWN for i in items):
                hit = any(_compare("=", left, i) for i in items)
                return hit if op == "=" else not hit
            return None
        if node.kind == enums.A_Expr_Kind.AEXPR_BETWEEN and isinstance(node.rexpr, tuple) \
                and len(node.rexpr) == 2:
            v, lo, hi = _const(node.lexpr), _const(node.rexpr[0]), _const(node.rexpr[1])
            if _UNKNOWN not in (v, lo, hi):
                ge, le = _compare(">=", v, lo), _compare("<=", v, hi)
                return None if ge is None or le is None else ge and le
        return None
    if isinstance(node, ast.NullTest):
        v = _const(node.arg)
        if v is _UNKNOWN:
            if isinstance(node.arg, ast.ColumnRef) and _column_name(node.arg) in _SYSTEM_COLUMNS:
                return node.nulltesttype == enums.NullTestType.IS_NOT_NULL
            return None
        return (v is None) == (node.nulltesttype == enums.NullTestType.IS_NULL)
    if isinstance(node, ast.BooleanTest):
        inner = truth(node.arg)
        if inner is None:
            return None
        return {enums.BoolTestType.IS_TRUE: inner, enums.BoolTestType.IS_NOT_FALSE: inner,
                enums.BoolTestType.IS_FALSE: not inner,
                enums.BoolTestType.IS_NOT_TRUE: not inner}.get(node.booltesttype)  # type: ignore[arg-type]
    if isinstance(node, ast.SubLink) and isinstance(node.subselect, ast.SelectStmt):
        sel = node.subselect
        free = not sel.fromClause and sel.whereClause is None and sel.havingClause is None \
            and sel.limitCount is None and sel.op == enums.SetOperation.SETOP_NONE
        if node.subLinkType == enums.SubLinkType.EXISTS_SUBLINK and free:
            return True
        if node.subLinkType == enums.SubLinkType.EXISTS_SUBLINK and not sel.fromClause \
                and sel.havingClause is None and sel.limitCount is None \
                and truth(sel.whereClause) is True:
            return True
        targets = sel.targetList or ()
        if node.subLinkType == enums.SubLinkType.EXPR_SUBLINK and free and len(targets) == 1:
            return truth(targets[0].val)
    return None


def _complementary_null_tests(args: Any) -> bool:
    tests = [(shape(a.arg), a.nulltesttype) for a in args if isinstance(a, ast.NullTest)]
    return any((s, enums.NullTestType.IS_NULL) in tests and
               (s, enums.NullTestType.IS_NOT_NULL) in tests for s, _ in tests)


def _has_volatile_shape(node: Any) -> bool:
    # random() = random() is not a tautology; any call or subquery makes the sides unequal.
    return any(isinstance(n, ast.FuncCall | ast.SubLink) for n in walk(node))


def _references_row(where: Any, target: set[str], others: set[str]) -> bool:
    """Whether the condition reads a column of the row being changed. Unqualified columns
    outside subqueries count (they may be the target's); inside a subquery only references
    qualified with the target's name or alias do (correlation), and not where the subquery's
    own FROM reuses that name (``EXISTS (SELECT 1 FROM t WHERE t.id = 1)`` reads its own t)."""
    def visit(node: Any, in_sub: bool, shadowed: bool) -> bool:
        if isinstance(node, ast.ColumnRef):
            parts = [p.sval for p in node.fields or () if isinstance(p, ast.String)]
            stars = any(isinstance(p, ast.A_Star) for p in node.fields or ())
            qual_len = len(parts) - (0 if stars else 1)
            if qual_len <= 0:
                return not in_sub
            return not shadowed and parts[qual_len - 1] in target
        if isinstance(node, ast.CurrentOfExpr):
            return True
        if isinstance(node, ast.SubLink):
            # ``x IN (SELECT …)``: x belongs to the outer query, only the subselect is inner.
            return (node.testexpr is not None and visit(node.testexpr, in_sub, shadowed)) \
                or visit(node.subselect, True, shadowed)
        if isinstance(node, ast.SelectStmt) and in_sub:
            shadowed = shadowed or bool(_aliases(node.fromClause) & target) or any(
                (c.ctename or "") in target for c in getattr(node.withClause, "ctes", None) or ())
        sub = in_sub or isinstance(node, ast.RangeSubselect)
        return any(visit(c, sub, shadowed) for c in children(node))
    del others
    return visit(where, False, False)


def _bounds(node: Any, target: set[str], negated: bool = False) -> bool:
    """Whether the condition restricts the rows through the row itself. An OR is only as
    bounded as its weakest branch: ``id = 1 OR $1`` touches every row when $1 is true."""
    if isinstance(node, ast.BoolExpr):
        args = node.args or ()
        if node.boolop == enums.BoolExprType.NOT_EXPR:
            return bool(args) and _bounds(args[0], target, not negated)
        conjunction = (node.boolop == enums.BoolExprType.AND_EXPR) != negated
        if conjunction:
            return any(_bounds(a, target, negated) for a in args)
        # A branch that is false for every row adds no rows to a disjunction.
        return all(truth(a) is negated or _bounds(a, target, negated) for a in args)
    return _references_row(node, target, set())


_SYSTEM_COLUMNS = frozenset({"ctid", "tableoid", "xmin", "xmax", "cmin", "cmax"})


def _column_name(ref: ast.ColumnRef) -> str | None:
    fields = ref.fields or ()
    last = fields[-1] if fields else None
    return last.sval if isinstance(last, ast.String) else None


def _self_semijoin(where: Any, target: Any) -> bool:
    """``col IN (SELECT col FROM target)``: true for every row with a non-null col."""
    if not isinstance(where, ast.SubLink) or where.subLinkType != enums.SubLinkType.ANY_SUBLINK:
        return False
    sel = where.subselect
    if not isinstance(sel, ast.SelectStmt) or sel.op != enums.SetOperation.SETOP_NONE:
        return False
    if sel.whereClause is not None and truth(sel.whereClause) is not True:
        return False
    if sel.limitCount is not None or sel.havingClause is not None:
        return False
    froms = sel.fromClause or ()
    if len(froms) != 1 or not isinstance(froms[0], ast.RangeVar):
        return False
    src = froms[0]
    if src.relname != target.relname or (src.schemaname or None) != (target.schemaname or None):
        return False
    targets = sel.targetList or ()
    if len(targets) != 1 or not isinstance(targets[0].val, ast.ColumnRef) \
            or not isinstance(where.testexpr, ast.ColumnRef):
        return False
    return _column_name(targets[0].val) == _column_name(where.testexpr)


def unbounded(where: Any, target: Any, others: set[str]) -> str | None:
    """Why an UPDATE/DELETE condition may touch every row, or None when it bounds them."""
    if where is None:
        return "no WHERE clause"
    t = truth(where)
    if t is True:
        return "the WHERE condition is true for every row"
    if _self_semijoin(where, target):
        return "the WHERE condition selects the table's own rows (col IN (SELECT col FROM it))"
    names = {target.relname or ""}
    if target.alias is not None and target.alias.aliasname:
        names = {target.alias.aliasname}
    if not _references_row(where, names, others):
        return "the WHERE condition does not depend on the row (constant or bare parameter)"
    if not _bounds(where, names):
        return "a branch of the WHERE condition does not depend on the row"
    return None


def _aliases(items: Any) -> set[str]:
    out: set[str] = set()
    for item in items or ():
        for n in walk(item):
            if isinstance(n, ast.RangeVar):
                out.add(n.alias.aliasname if n.alias and n.alias.aliasname else n.relname or "")
            elif isinstance(n, ast.RangeSubselect | ast.RangeFunction) and n.alias:
                out.add(n.alias.aliasname or "")
    return out


def _value_text(node: Any) -> str | None:
    v = _const(node)
    if v is _UNKNOWN or v is None:
        return None
    return str(v)


def _explain_analyzes(stmt: ast.ExplainStmt) -> bool:
    for opt in stmt.options or ():
        if isinstance(opt, ast.DefElem) and (opt.defname or "").lower() == "analyze":
            if opt.arg is None:
                return True
            value = _as_bool(_const(opt.arg) if isinstance(opt.arg, ast.A_Const)
                             else getattr(opt.arg, "sval", None))
            # The server takes the last ANALYZE option; any one that may be true counts.
            if value is not False:
                return True
    return False


# -- one statement ------------------------------------------------------------------------------

class _Statement:
    """Collects the facts of one top-level statement."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.reads: set[Name] = set()
        self.writes: list[Write] = []
        self.calls: list[Call] = []
        self.objects: list[tuple[str, Name]] = []
        self.settings: list[Setting] = []
        self.file_access: list[str] = []
        self.privilege: list[str] = []
        self.code: list[str] = []
        self.refusals: list[tuple[str, str]] = []
        self.ctes: set[str] = set()
        self.read_write = False
        self.sensitive = False
        self.create_kind: str | None = None
        self.or_replace = False
        self.prepared: str | None = None
        self.deallocated: list[str] = []

    def facts(self, stmt: Any) -> Facts:
        kind = type(stmt).__name__
        category = self._top(stmt, kind)
        if category in ("read", "session", "transaction") and self.writes:
            category = "write"
        return Facts(
            kind=kind, category=category, text=self.text, reads=frozenset(self.reads),
            writes=tuple(self.writes), calls=tuple(self.calls), objects=tuple(self.objects),
            create_kind=self.create_kind, or_replace=self.or_replace,
            settings=tuple(self.settings), file_access=tuple(self.file_access),
            privilege=tuple(self.privilege), code=tuple(self.code), read_write=self.read_write,
            refusals=tuple(self.refusals),
            literal_sensitive=self.sensitive or category not in ("read",),
            prepared=self.prepared, deallocated=tuple(self.deallocated),
            ctes=frozenset(self.ctes))

    # The statement's own kind decides its category; its subtrees add what they touch.
    def _top(self, stmt: Any, kind: str) -> Category:
        if isinstance(stmt, ast.SelectStmt):
            if stmt.intoClause is not None:
                self.create_kind = "table"
                into = _name(stmt.intoClause.rel)
                self.objects.append(("table", into))
                self._tree(stmt)
                self.reads.discard(into)
                return "create"
            self._tree(stmt)
            return "read"
        if isinstance(stmt, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt):
            self._tree(stmt)
            return "write"
        if isinstance(stmt, ast.ExplainStmt):
            # Option values are not constants to libpg_query's normalize: never share a
            # cached verdict between EXPLAIN (ANALYZE 0) and EXPLAIN (ANALYZE 1).
            self.sensitive = self.sensitive or bool(stmt.options)
            if _explain_analyzes(stmt):
                inner = _Statement(self.text)
                cat = inner._top(stmt.query, type(stmt.query).__name__)
                self._merge(inner)
                return cat
            # Plain EXPLAIN plans without executing: only what it reads matters.
            inner = _Statement(self.text)
            inner._tree(stmt.query)
            self.reads |= inner.reads | {w.target for w in inner.writes}
            self.ctes |= inner.ctes
            return "read"
        if isinstance(stmt, ast.PrepareStmt):
            # Judged now, as if executed: EXECUTE later runs exactly this.
            inner = _Statement(self.text)
            cat = inner._top(stmt.query, type(stmt.query).__name__)
            self._merge(inner)
            self.prepared = stmt.name or ""
            return cat
        if isinstance(stmt, ast.DeclareCursorStmt):
            self._tree(stmt.query)
            return "read"
        if isinstance(stmt, ast.FetchStmt):
            return "read"
        if isinstance(stmt, ast.CopyStmt):
            return self._copy(stmt)
        if isinstance(stmt, ast.CallStmt):
            self._tree(stmt.funccall)
            if self.calls:
                first = self.calls[0]
                self.calls[0] = Call(first.name, first.literal_args, procedure=True)
            return "read"
        if isinstance(stmt, ast.VariableSetStmt):
            self._set(stmt)
            return "privilege" if self.privilege else "session"
        if isinstance(stmt, ast.TransactionStmt):
            self._transaction_options(stmt.options)
            k = enums.TransactionStmtKind
            if stmt.kind in (k.TRANS_STMT_PREPARE, k.TRANS_STMT_COMMIT_PREPARED,
                             k.TRANS_STMT_ROLLBACK_PREPARED):
                # Two-phase commit finishes transactions of other sessions: administration.
                return "admin"
            return "transaction"
        if kind in _CREATE_KINDS or isinstance(stmt, ast.CreateTableAsStmt):
            return self._create(stmt, kind)
        if kind in _PRIVILEGE:
            self.privilege.append(_describe(kind))
            self._tree(stmt)
            return "privilege"
        if kind in _CODE:
            self.code.append(_describe(kind))
            if kind == "LoadStmt":
                self.file_access.append("LOAD of a server-side library")
            if getattr(stmt, "replace", False):
                self.or_replace = True
            return "code"
        if kind in _FOREIGN:
            self.file_access.append(_describe(kind) + " (server-side network access)")
            return "ddl"
        if kind in _DDL:
            return self._ddl(stmt, kind)
        if kind in _ADMIN:
            return "admin"
        if kind in _SESSION:
            if isinstance(stmt, ast.DeallocateStmt):
                self.deallocated.append(stmt.name or "*" if not stmt.isall else "*")
            elif isinstance(stmt, ast.DiscardStmt) and stmt.target in (
                    enums.DiscardMode.DISCARD_ALL,):
                self.deallocated.append("*")
            if isinstance(stmt, ast.LockStmt):
                for rv in stmt.relations or ():
                    self.reads.add(_name(rv))
            return "session"
        return "unknown"

    def _merge(self, other: _Statement) -> None:
        self.reads |= other.reads
        self.writes += other.writes
        self.calls += other.calls
        self.objects += other.objects
        self.settings += other.settings
        self.file_access += other.file_access
        self.privilege += other.privilege
        self.code += other.code
        self.refusals += other.refusals
        self.ctes |= other.ctes
        self.read_write |= other.read_write
        self.sensitive |= other.sensitive
        self.create_kind = self.create_kind or other.create_kind
        self.or_replace |= other.or_replace

    def _tree(self, root: Any) -> None:
        """Everything a subtree touches: reads, nested writes (writable CTEs), calls."""
        targets: set[int] = set()
        for node, scope in _scoped_walk(root):
            if isinstance(node, ast.InsertStmt):
                op: WriteOp = "insert"
                if node.onConflictClause is not None and \
                        node.onConflictClause.action == enums.OnConflictAction.ONCONFLICT_UPDATE:
                    op = "upsert"
                self.writes.append(Write(_name(node.relation), op))
                targets.add(id(node.relation))
            elif isinstance(node, ast.UpdateStmt):
                self.sensitive = True
                self.writes.append(Write(_name(node.relation), "update", unbounded(
                    node.whereClause, node.relation, _aliases(node.fromClause))))
                targets.add(id(node.relation))
            elif isinstance(node, ast.DeleteStmt):
                self.sensitive = True
                self.writes.append(Write(_name(node.relation), "delete", unbounded(
                    node.whereClause, node.relation, _aliases(node.usingClause))))
                targets.add(id(node.relation))
            elif isinstance(node, ast.MergeStmt):
                self.sensitive = True
                self.writes.append(Write(_name(node.relation), "merge", self._merge_bound(node)))
                targets.add(id(node.relation))
            elif isinstance(node, ast.CommonTableExpr):
                self.ctes.add(node.ctename or "")
            elif isinstance(node, ast.FuncCall):
                self._call(node)
            elif isinstance(node, ast.ColumnRef) and len(node.fields or ()) >= 2:
                attr = _column_name(node)
                if attr is not None:
                    self.calls.append(Call(Name(None, attr), attribute=True))
            elif isinstance(node, ast.A_Indirection):
                for ind in node.indirection or ():
                    if isinstance(ind, ast.String) and ind.sval:
                        self.calls.append(Call(Name(None, ind.sval), attribute=True))
            elif isinstance(node, ast.RangeVar) and id(node) not in targets:
                if node.schemaname is None and node.relname in scope:
                    continue  # a reference to a CTE, not to a table
                self.reads.add(_name(node))

    @staticmethod
    def _merge_bound(node: ast.MergeStmt) -> str | None:
        touching = [c for c in node.mergeWhenClauses or ()
                    if c.matchKind == enums.MergeMatchKind.MERGE_WHEN_MATCHED
                    and c.commandType in (enums.CmdType.CMD_UPDATE, enums.CmdType.CMD_DELETE)]
        if not touching:
            return None
        why = unbounded(node.joinCondition, node.relation, _aliases([node.sourceRelation]))
        if why is None:
            return None
        for clause in touching:
            if clause.condition is None or \
                    unbounded(clause.condition, node.relation, set()) is not None:
                return f"MERGE join condition: {why}"
        return None

    def _call(self, node: ast.FuncCall) -> None:
        name = _qualified(node.funcname)
        name = Name(name.schema, name.name)
        args = tuple(_value_text(a) for a in node.args or ())
        self.calls.append(Call(name, args))
        base = name.name.lower()
        if base in FILE_FUNCTIONS or base.startswith("dblink"):
            self.file_access.append(f"{name}()")
        if base == "set_config":
            self.sensitive = True
            setting = args[0].lower() if args and args[0] is not None else None
            if setting is None:
                self.refusals.append(("privileges",
                                      "set_config() with a setting name computed at run time"))
                return
            local = _as_bool(args[2]) is True if len(args) > 2 and args[2] is not None else False
            value = args[1] if len(args) > 1 else None
            self.settings.append(Setting(setting, value, local))
            if setting in PRIVILEGED_SETTINGS:
                self.privilege.append(f"set_config('{setting}', …) changes the session's role")
            self._setting_checks(setting, value, "set_config")
            if value is None and setting in ("search_path", "standard_conforming_strings",
                                             "client_encoding"):
                self.refusals.append(("session", f"set_config('{setting}', …) with a value "
                                      "computed at run time"))

    def _set(self, stmt: ast.VariableSetStmt) -> None:
        kinds = enums.VariableSetKind
        name = (stmt.name or "").lower()
        if stmt.kind == kinds.VAR_SET_MULTI:
            self._transaction_options(stmt.args)
            return
        if stmt.kind == kinds.VAR_RESET_ALL:
            self.settings.append(Setting("all", None, bool(stmt.is_local)))
            return
        value: str | None = None
        if stmt.kind == kinds.VAR_SET_VALUE:
            parts = [_value_text(a) for a in stmt.args or ()]
            if name == "search_path":
                # SET quotes each element (GUC_LIST_QUOTE): names are taken as written.
                value = ",".join('"' + (p or "").replace('"', '""') + '"' for p in parts)
            else:
                value = ",".join(p if p is not None else "?" for p in parts)
        self.settings.append(Setting(name, value, bool(stmt.is_local)))
        self._setting_checks(name, value, "SET")
        if name in PRIVILEGED_SETTINGS:
            what = "SET ROLE" if name == "role" else "SET SESSION AUTHORIZATION"
            if stmt.kind != kinds.VAR_SET_VALUE:
                what = f"RESET {name}"
            self.privilege.append(f"{what} changes the session's identity")

    def _setting_checks(self, name: str, value: str | None, how: str) -> None:
        reason = setting_refusal(name, value)
        if reason is not None:
            self.refusals.append(("session", reason))
        if name == "session_replication_role":
            self.privilege.append(f"{how} session_replication_role turns triggers and foreign "
                                  "keys off")

    def _transaction_options(self, options: Any) -> None:
        for opt in options or ():
            if isinstance(opt, ast.DefElem) and opt.defname == "transaction_read_only":
                value = _const(opt.arg) if opt.arg is not None else _UNKNOWN
                if _as_bool(value) is False:
                    self.read_write = True
                self.settings.append(Setting("transaction_read_only", _value_text(opt.arg)))

    def _copy(self, stmt: ast.CopyStmt) -> Category:
        if stmt.filename is not None or stmt.is_program:
            where = "PROGRAM" if stmt.is_program else "a server file"
            direction = "FROM" if stmt.is_from else "TO"
            self.file_access.append(f"COPY {direction} {where}")
        if stmt.query is not None:
            self._tree(stmt.query)
        if stmt.relation is not None:
            if stmt.is_from:
                self.writes.append(Write(_name(stmt.relation), "copy"))
                return "write"
            self.reads.add(_name(stmt.relation))
        return "write" if self.writes else "read"

    def _create(self, stmt: Any, kind: str) -> Category:
        if isinstance(stmt, ast.CreateTableAsStmt):
            objtype = stmt.objtype
            self.create_kind = "materialized_view" if objtype == enums.ObjectType.OBJECT_MATVIEW \
                else "table"
            self.objects.append((self.create_kind, _name(getattr(stmt.into, "rel", None))))
            self._tree(stmt.query)
            return "create"
        self.create_kind = _CREATE_KINDS[kind]
        target = getattr(stmt, "relation", None) or getattr(stmt, "view", None) \
            or getattr(stmt, "sequence", None)
        if isinstance(target, ast.RangeVar):
            self.objects.append((self.create_kind, _name(target)))
        elif isinstance(stmt, ast.CreateSchemaStmt):
            self.objects.append(("schema", Name(None, stmt.schemaname or "")))
            for element in stmt.schemaElts or ():
                sub = _Statement(self.text)
                sub._top(element, type(element).__name__)
                self._merge(sub)
        if isinstance(stmt, ast.ViewStmt):
            self.or_replace = bool(stmt.replace)
            self._tree(stmt.query)
        elif isinstance(stmt, ast.IndexStmt):
            self.reads.add(_name(stmt.relation))
        return "create"

    def _ddl(self, stmt: Any, kind: str) -> Category:
        if isinstance(stmt, ast.TruncateStmt):
            for rv in stmt.relations or ():
                self.writes.append(Write(_name(rv), "truncate"))
                self.objects.append(("table", _name(rv)))
            return "ddl"
        if isinstance(stmt, ast.DropStmt):
            what = _object_kind(stmt.removeType)
            for obj in stmt.objects or ():
                if isinstance(obj, tuple):
                    self.objects.append((what, _qualified(obj)))
                elif isinstance(obj, ast.String):
                    self.objects.append((what, Name(None, obj.sval or "")))
                elif isinstance(obj, ast.ObjectWithArgs):
                    self.objects.append((what, _qualified(obj.objname)))
                elif isinstance(obj, ast.TypeName):
                    self.objects.append((what, _qualified(obj.names)))
            if stmt.removeType in (enums.ObjectType.OBJECT_ROLE,):
                self.privilege.append("DROP ROLE")
            return "ddl"
        if isinstance(stmt, ast.AlterTableStmt):
            # OWNER TO and row-level security hand out or take away access: privilege changes
            # as much as ALTER FUNCTION … OWNER TO is.
            for cmd in stmt.cmds or ():
                if isinstance(cmd, ast.AlterTableCmd) and cmd.subtype in _PRIVILEGE_SUBCOMMANDS:
                    self.privilege.append(f"ALTER TABLE … {_PRIVILEGE_SUBCOMMANDS[cmd.subtype]}")
        rel = getattr(stmt, "relation", None)
        if isinstance(rel, ast.RangeVar):
            self.objects.append((_object_kind(getattr(stmt, "objtype", None)
                                              or getattr(stmt, "renameType", None)), _name(rel)))
        elif isinstance(stmt, ast.DropdbStmt | ast.AlterDatabaseStmt | ast.AlterDatabaseSetStmt):
            self.objects.append(("database", Name(None, stmt.dbname or "")))
        return "ddl"


def _object_kind(objtype: Any) -> str:
    if objtype is None:
        return "object"
    name = getattr(objtype, "name", str(objtype))
    return name.removeprefix("OBJECT_").lower()


def _describe(kind: str) -> str:
    """A readable statement name from a node name: CreateFunctionStmt → CREATE FUNCTION."""
    special = {
        "DoStmt": "DO block", "RuleStmt": "CREATE RULE", "CreateTrigStmt": "CREATE TRIGGER",
        "CreateEventTrigStmt": "CREATE EVENT TRIGGER", "CreatePLangStmt": "CREATE LANGUAGE",
        "DefineStmt": "CREATE AGGREGATE/OPERATOR/TYPE", "LoadStmt": "LOAD",
        "GrantStmt": "GRANT/REVOKE", "GrantRoleStmt": "GRANT/REVOKE role",
        "AlterOwnerStmt": "ALTER … OWNER TO", "CreateFdwStmt": "CREATE FOREIGN DATA WRAPPER",
        "CreateForeignServerStmt": "CREATE SERVER", "ImportForeignSchemaStmt":
        "IMPORT FOREIGN SCHEMA", "CreateUserMappingStmt": "CREATE USER MAPPING",
    }
    return special.get(kind) or kind_words(kind)

"""What a MySQL/MariaDB statement string does, read from sqlglot's MySQL syntax tree.

Executable comments (``/*! */``, ``/*!NNNNN */``, ``/*M! */``) are first expanded the way the
server would, so the analysis sees the statement the server runs. The text is then tokenized by
sqlglot and split on top-level semicolons (compound ``BEGIN … END`` blocks stay whole). Statements
sqlglot models are classified on its tree; the ones it only knows as an opaque ``Command`` (GRANT,
LOAD DATA, PREPARE, CALL, …) are classified on its tokens by their leading keywords. Anything else
is category "unknown" or ``Unparseable``: the analysis describes, it never guesses a "read".
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from sqlglot import exp
from sqlglot.dialects.mysql import MySQL
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from policies.facts import Call, Category, Facts, Name, Setting, Unparseable, Write

__all__ = ["analyze", "expand_executable_comments"]


class _Tokenizer(MySQL.Tokenizer):
    """sqlglot swallows the rest of a PREPARE/EXECUTE/CALL/REPLACE statement into one raw
    string token; the analysis needs the real tokens of those statements."""

    COMMANDS: ClassVar[set[TokenType]] = set()


_DIALECT = MySQL()
# sqlglot 30 roots its tree at ``Expr``; earlier releases at ``Expression``.
_NODE: type = getattr(exp, "Expr", None) or exp.Expression

# Tokens whose text is data or a quoted name, never a keyword.
_QUOTED = {
    TokenType.STRING, TokenType.IDENTIFIER, TokenType.NATIONAL_STRING, TokenType.HEX_STRING,
    TokenType.BIT_STRING, TokenType.BYTE_STRING, TokenType.RAW_STRING,
    TokenType.NATIONAL_RAW_STRING, TokenType.UNICODE_STRING, TokenType.HEREDOC_STRING,
}

# Server variables whose change redirects server-side file writes or loads code from disk.
_FILE_VARIABLES = {
    "general_log", "general_log_file", "slow_query_log", "slow_query_log_file", "log_output",
    "secure_file_priv", "plugin_dir", "local_infile", "server_audit_file_path",
    "innodb_buffer_pool_filename", "tmpdir", "datadir",
}
_CODE_VARIABLES = {"init_connect", "init_file", "init_slave", "init_replica"}
_READ_ONLY_VARIABLES = {"transaction_read_only", "tx_read_only"}
_FALSE_VALUES = {"0", "off", "false"}

_CODE_OBJECTS = {"FUNCTION", "PROCEDURE", "TRIGGER", "EVENT", "PACKAGE"}
_PRIVILEGE_OBJECTS = {"USER", "ROLE"}
_OBJECT_WORDS = _CODE_OBJECTS | _PRIVILEGE_OBJECTS | {
    "TABLE", "TABLES", "VIEW", "DATABASE", "SCHEMA", "INDEX", "SERVER", "SEQUENCE",
    "TABLESPACE", "LOGFILE", "PREPARE", "INSTANCE", "SYNONYM", "RESOURCE", "SPATIAL",
}
_ADMIN_WORDS = {
    "FLUSH", "SHUTDOWN", "RESTART", "RESET", "PURGE", "CHANGE", "STOP", "KILL", "OPTIMIZE",
    "REPAIR", "CHECK", "CHECKSUM", "BINLOG", "CACHE", "CLONE", "IMPORT", "BACKUP", "UNINSTALL",
    "LOCK", "LOCK TABLES",
}
_TRANSACTION_WORDS = {"COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "XA"}
_COMPOUND_WORDS = {"IF", "WHILE", "LOOP", "REPEAT", "CASE", "FOR"}
_BODY_STARTS = {"BEGIN", "THEN", "ELSE", "DO", "LOOP", "REPEAT"}
_SELECT_STARTS = {"SELECT", "WITH", "(", "TABLE", "VALUES"}
_INTO_FILE_OPTIONS = {
    "FIELDS", "COLUMNS", "LINES", "TERMINATED", "OPTIONALLY", "ENCLOSED", "ESCAPED",
    "STARTING", "BY",
}


@dataclass(frozen=True)
class _Server:
    """The server the statement is meant for: executable comments depend on it."""

    name: str
    release: tuple[int, int, int]

    @property
    def mariadb(self) -> bool:
        return self.name.lower() == "mariadb"

    @property
    def version(self) -> int:
        """MMmmpp, as executable comments write it."""
        return self.release[0] * 10000 + self.release[1] * 100 + self.release[2]


# --------------------------------------------------------------------------------------------
# Executable comments


def _quoted_end(sql: str, i: int) -> int:
    """Index just past the quoted literal or name opening at ``i`` (MySQL escaping rules)."""
    quote = sql[i]
    j = i + 1
    while j < len(sql):
        c = sql[j]
        if c == "\\" and quote != "`":
            j += 2
            continue
        if c == quote:
            if j + 1 < len(sql) and sql[j + 1] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    raise Unparseable(f"unterminated {quote}-quoted text at offset {i}")


def _executable_comment(sql: str, i: int, server: _Server) -> tuple[bool, int] | None:
    """For ``/*!`` or ``/*M!`` at ``i``: whether the server runs its body, and where the body
    starts. None for an ordinary comment."""
    if sql.startswith("/*!", i):
        j, mariadb_only = i + 3, False
    elif sql.startswith("/*M!", i):
        j, mariadb_only = i + 4, True
    else:
        return None
    if mariadb_only and not server.mariadb:
        return False, j  # an ordinary comment to MySQL
    k = j
    while k < len(sql) and sql[k].isdigit():
        k += 1
    digits = sql[j:k]
    if digits and len(digits) not in (5, 6):
        raise Unparseable(f"executable comment with an ambiguous version {digits!r}")
    if len(digits) == 6 and not server.mariadb and (
            int(digits[:5]) <= server.version or int(digits) <= server.version):
        # MySQL releases before 8.0.34 read five digits and run the sixth as text.
        raise Unparseable(f"executable comment version {digits!r} is read differently by "
                          "MySQL releases")
    if server.mariadb and len(digits) == 5 and int(digits) >= 50700:
        # MariaDB leaves MySQL 5.7+ versions (50700-99999) to MySQL: a plain comment to it.
        return False, k
    included = not digits or int(digits) <= server.version
    return included, k


def expand_executable_comments(sql: str, *, server: str = "mariadb",
                               version: tuple[int, int, int] = (10, 11, 0)) -> str:
    """The text the server parses: executable comment bodies it runs are kept, every other
    comment becomes a space. String literals and quoted names are copied untouched, so a
    ``/*!`` inside a string stays data."""
    target = _Server(server, version)
    out: list[str] = []
    i, n, in_body = 0, len(sql), False
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = _quoted_end(sql, i)
            out.append(sql[i:j])
            i = j
        elif sql.startswith("/*", i):
            if in_body:
                raise Unparseable("comment nested inside an executable comment")
            marker = _executable_comment(sql, i, target)
            if marker is not None and marker[0]:
                in_body, i = True, marker[1]
                out.append(" ")
                continue
            end = sql.find("*/", i + 2)
            if end < 0:
                raise Unparseable(f"unterminated comment at offset {i}")
            out.append(" ")
            i = end + 2
        elif in_body and sql.startswith("*/", i):
            in_body = False
            out.append(" ")
            i += 2
        elif c == "#" or (sql.startswith("--", i) and (i + 2 == n or sql[i + 2] <= " ")):
            end = sql.find("\n", i)
            i = n if end < 0 else end
            out.append(" ")
        else:
            out.append(c)
            i += 1
    if in_body:
        raise Unparseable("unterminated executable comment")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Tokens and statement boundaries


def _kw(tok: Token | None) -> str:
    """The keyword a token spells, upper case; "" for literals and quoted names."""
    if tok is None or tok.token_type in _QUOTED:
        return ""
    if tok.token_type == TokenType.L_PAREN:
        return "("
    return " ".join(tok.text.upper().split())


def _is_name(tok: Token) -> bool:
    return tok.token_type == TokenType.IDENTIFIER or (
        tok.token_type not in _QUOTED and tok.text.replace("_", "").replace("$", "").isalnum())


def _split(tokens: Sequence[Token]) -> list[list[Token]]:
    """Statements on top-level semicolons; a compound block (BEGIN … END, IF … END IF, a CASE
    expression) keeps its inner semicolons."""
    chunks: list[list[Token]] = []
    cur: list[Token] = []
    depth = 0
    skip_next = False
    for idx, tok in enumerate(tokens):
        if tok.token_type == TokenType.SEMICOLON and depth == 0:
            if cur:
                chunks.append(cur)
            cur = []
            continue
        word = _kw(tok)
        prev = cur[-1] if cur else None
        nxt = tokens[idx + 1] if idx + 1 < len(tokens) else None
        at_start = prev is None or prev.token_type in (TokenType.SEMICOLON, TokenType.COLON) or (
            depth > 0 and _kw(prev) in _BODY_STARTS)
        if skip_next:
            skip_next = False
        elif word == "BEGIN":
            transaction = prev is None and _kw(nxt) != "NOT"
            if not transaction and _kw(prev) != "XA":
                depth += 1
        elif word == "CASE" or (word in _COMPOUND_WORDS and at_start):
            depth += 1
        elif word == "END" and depth > 0:
            skip_next = _kw(nxt) in _COMPOUND_WORDS
            depth -= 1
        cur.append(tok)
    if cur:
        chunks.append(cur)
    return chunks


def _tokenize(sql: str) -> list[Token]:
    try:
        tokens: list[Token] = _Tokenizer(dialect=_DIALECT).tokenize(sql)
    except TokenError as e:
        raise Unparseable(str(e)) from e
    if any(t.comments for t in tokens):
        raise Unparseable("comment where the server would not see one")
    return tokens


def _synthetic(tok: Token, kind: TokenType, text: str) -> Token:
    """A token standing in for ``tok`` (same position) so sqlglot parses a related statement."""
    return Token(kind, text, tok.line, tok.col, tok.start, tok.end)


def _parse(tokens: Sequence[Token], sql: str) -> exp.Expr:
    """sqlglot's tree for exactly one statement's tokens."""
    try:
        trees = [t for t in _DIALECT.parser().parse(list(tokens), sql) if t is not None]
    except ParseError as e:
        raise Unparseable(str(e)) from e
    except Exception as e:  # sqlglot fails on some truncated input with IndexError & co.
        raise Unparseable(f"parser failure: {type(e).__name__}: {e}") from e
    if len(trees) != 1:
        raise Unparseable("statement boundaries are ambiguous")
    return trees[0]


def _expression(tokens: Sequence[Token], sql: str) -> exp.Expr:
    """An expression's tree, parsed as the select list of ``SELECT <tokens>``."""
    if not tokens:
        raise Unparseable("expression expected")
    tree = _parse([_synthetic(tokens[0], TokenType.SELECT, "SELECT"), *tokens], sql)
    if not isinstance(tree, exp.Select) or len(tree.expressions) != 1:
        raise Unparseable("one expression expected")
    return tree


def _name_at(tokens: Sequence[Token], i: int) -> tuple[Name | None, int]:
    """``name`` or ``schema.name`` starting at ``i``; IF [NOT] EXISTS before it is skipped."""
    if _kw(tokens[i] if i < len(tokens) else None) == "IF":
        i += 1
        while i < len(tokens) and _kw(tokens[i]) in ("NOT", "EXISTS"):
            i += 1
    if i >= len(tokens) or not _is_name(tokens[i]):
        return None, i
    first = tokens[i].text
    if (i + 2 < len(tokens) and tokens[i + 1].token_type == TokenType.DOT
            and _is_name(tokens[i + 2])):
        return Name(first, tokens[i + 2].text), i + 3
    return Name(None, first), i + 1


# --------------------------------------------------------------------------------------------
# Facts under construction


@dataclass
class _Acc:
    """Everything one statement touches, gathered before it is frozen into ``Facts``."""

    reads: set[Name] = field(default_factory=set)
    writes: list[Write] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    objects: list[tuple[str, Name]] = field(default_factory=list)
    settings: list[Setting] = field(default_factory=list)
    file_access: list[str] = field(default_factory=list)
    privilege: list[str] = field(default_factory=list)
    code: list[str] = field(default_factory=list)
    refusals: list[tuple[str, str]] = field(default_factory=list)
    ctes: set[str] = field(default_factory=set)
    create_kind: str | None = None
    or_replace: bool = False
    read_write: bool = False
    literal_sensitive: bool = False

    def merge(self, f: Facts) -> None:
        """Take over what an embedded statement (EXECUTE IMMEDIATE '…') touches."""
        self.reads |= f.reads
        self.writes += f.writes
        self.calls += f.calls
        self.objects += f.objects
        self.settings += f.settings
        self.file_access += f.file_access
        self.privilege += f.privilege
        self.code += f.code
        self.refusals += f.refusals
        self.ctes |= f.ctes
        self.read_write |= f.read_write
        self.literal_sensitive |= f.literal_sensitive

    def facts(self, kind: str, category: Category, text: str) -> Facts:
        return Facts(
            kind=kind, category=category, text=text, reads=frozenset(self.reads),
            writes=tuple(dict.fromkeys(self.writes)), calls=tuple(dict.fromkeys(self.calls)),
            objects=tuple(dict.fromkeys(self.objects)), create_kind=self.create_kind,
            or_replace=self.or_replace, settings=tuple(self.settings),
            file_access=tuple(dict.fromkeys(self.file_access)),
            privilege=tuple(self.privilege), code=tuple(dict.fromkeys(self.code)),
            read_write=self.read_write, refusals=tuple(dict.fromkeys(self.refusals)),
            literal_sensitive=self.literal_sensitive, ctes=frozenset(self.ctes))


@dataclass
class _Statement:
    """One statement: its tokens, the expanded text they index into, and the target server."""

    tokens: list[Token]
    sql: str
    server: _Server

    @property
    def text(self) -> str:
        return self.sql[self.tokens[0].start:self.tokens[-1].end + 1]

    @property
    def described(self) -> str:
        """The statement text on one line, for descriptions."""
        return " ".join(self.text.split())

    def word(self, i: int) -> str:
        return _kw(self.tokens[i]) if i < len(self.tokens) else ""

    def sub(self, start: int, end: int | None = None) -> _Statement:
        return _Statement(self.tokens[start:end], self.sql, self.server)


# --------------------------------------------------------------------------------------------
# Tree: names, reads, calls


def _table_name(t: exp.Table) -> Name:
    return Name(t.db or None, t.name)


def _database_name(t: exp.Table) -> Name:
    """sqlglot keeps the name of a DATABASE/SCHEMA in the table's ``db`` part."""
    return Name(None, t.name or t.db)


def _literal_text(e: exp.Expr) -> str | None:
    if isinstance(e, exp.Literal):
        return str(e.this)
    if isinstance(e, exp.Neg) and isinstance(e.this, exp.Literal) and not e.this.is_string:
        return f"-{e.this.this}"
    return None


def _call_args(f: exp.Func) -> list[exp.Expr]:
    if isinstance(f, exp.Anonymous):
        return list(f.expressions)
    args: list[exp.Expr] = []
    for key in f.arg_types:
        value = f.args.get(key)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, _NODE):
                args.append(typing.cast("exp.Expr", v))
    return args


def _function_name(f: exp.Func) -> str:
    """The name as MySQL spells the function: sqlglot's typed nodes (IFNULL becomes Coalesce)
    keep no spelling of their own, so the MySQL generator's spelling is used."""
    if isinstance(f, exp.Anonymous):
        return f.name
    head = f.sql(dialect="mysql").split("(", 1)[0].strip()
    return head if head.replace("_", "").isalnum() else f.sql_name()


def _is_call(f: exp.Func) -> bool:
    """sqlglot models some syntax (AND, OR, EXISTS, CASE … WHEN) as functions; those are not
    calls."""
    if isinstance(f, exp.Connector | exp.Exists | exp.Case):
        return False
    return not (isinstance(f, exp.If) and isinstance(f.parent, exp.Case))


def _call(f: exp.Func, procedure: bool = False) -> Call:
    name = _function_name(f)
    parent = f.parent
    schema = parent.this.name if isinstance(parent, exp.Dot) and parent.expression is f else None
    return Call(Name(schema or None, name.lower()),
                tuple(_literal_text(a) for a in _call_args(f)), procedure,
                builtin=not schema and not procedure)


def _collect(tree: exp.Expr, acc: _Acc, skip: Iterable[exp.Expr] = ()) -> None:
    """Reads (tables outside ``skip`` and CTE references), CTE names and calls of a tree."""
    skipped = {id(s) for s in skip}
    for cte in tree.find_all(exp.CTE):
        acc.ctes.add(cte.alias_or_name)
    for t in tree.find_all(exp.Table):
        if id(t) in skipped or not isinstance(t.this, exp.Identifier):
            continue
        if t.find_ancestor(exp.Into) is not None:
            continue
        if not t.db and t.name in acc.ctes:
            continue
        acc.reads.add(_table_name(t))
    for f in tree.find_all(exp.Func):
        if not _is_call(f):
            continue
        call = _call(f)
        acc.calls.append(call)
        if call.name.name == "load_file":
            arg = call.literal_args[0] if call.literal_args else None
            acc.file_access.append(f"LOAD_FILE('{arg}')" if arg is not None
                                   else "LOAD_FILE(<expression>)")


# --------------------------------------------------------------------------------------------
# Tree: how many rows an UPDATE/DELETE may touch


def _value(e: exp.Expr) -> float | str | None:
    """A constant's value, or None when it is not a constant the analysis can read."""
    if isinstance(e, exp.Paren | exp.Cast):
        return _value(e.this)
    if isinstance(e, exp.Boolean):
        return 1.0 if e.this else 0.0
    if isinstance(e, exp.Literal):
        if e.is_string:
            return str(e.this)
        try:
            return float(e.this)
        except ValueError:
            return None
    if isinstance(e, exp.Neg):
        inner = _value(e.this)
        return -inner if isinstance(inner, float) else None
    if isinstance(e, exp.Subquery) and isinstance(e.this, exp.Select):
        select = e.this
        if len(select.expressions) == 1 and not any(
                select.args.get(k) for k in ("from_", "from", "where", "having", "group")):
            return _value(select.expressions[0])
    return None


_COMPARISONS: dict[type[exp.Expr], Callable[[int], bool]] = {
    exp.EQ: lambda c: c == 0, exp.NullSafeEQ: lambda c: c == 0, exp.NEQ: lambda c: c != 0,
    exp.GT: lambda c: c > 0, exp.GTE: lambda c: c >= 0, exp.LT: lambda c: c < 0,
    exp.LTE: lambda c: c <= 0,
}


def _truth(e: exp.Expr) -> bool | None:
    """Whether a row-independent condition is true, when that can be read off constants."""
    if isinstance(e, exp.Paren):
        return _truth(e.this)
    if isinstance(e, exp.Not):
        inner = _truth(e.this)
        return None if inner is None else not inner
    if isinstance(e, exp.And | exp.Or):
        left, right = _truth(e.this), _truth(e.expression)
        if isinstance(e, exp.And):
            return False if False in (left, right) else (True if left and right else None)
        return True if True in (left, right) else (False if left is False and right is False
                                                   else None)
    test = _COMPARISONS.get(type(e))
    if test is not None:
        a, b = _value(e.this), _value(e.expression)
        if isinstance(a, float) and isinstance(b, float):
            return test((a > b) - (a < b))
        if isinstance(a, str) and isinstance(b, str):
            if a == b:
                return test(0)
            if a.lower().rstrip() == b.lower().rstrip():
                return None  # equal or not depending on the collation
            return test((a > b) - (a < b)) if isinstance(e, exp.EQ | exp.NEQ) else None
        return None
    v = _value(e)
    return v != 0.0 if isinstance(v, float) else None


def _self_comparison(e: exp.Expr) -> bool:
    return (isinstance(e, exp.EQ | exp.NullSafeEQ | exp.GTE | exp.LTE)
            and e.this == e.expression and e.this.find(exp.Column) is not None)


def _unbounded(e: exp.Expr, depends: Callable[[exp.Expr], bool],
               positive: bool = True) -> str | None:
    """Why a condition may hold for every row (None when it bounds the rows). ``positive`` is
    False under a NOT; a branch that holds for every row makes an OR hold for every row."""
    if isinstance(e, exp.Paren):
        return _unbounded(e.this, depends, positive)
    if isinstance(e, exp.Not):
        return _unbounded(e.this, depends, not positive)
    if isinstance(e, exp.And | exp.Or):
        reasons = [_unbounded(e.this, depends, positive),
                   _unbounded(e.expression, depends, positive)]
        if isinstance(e, exp.Or) == positive:  # an OR, or a negated AND
            return next((r for r in reasons if r), None)
        return reasons[0] if all(reasons) else None
    truth = _truth(e)
    if truth is not None:
        return "is true for every row" if truth == positive else None
    if positive and _self_comparison(e):
        return "is true for every row (compares an expression with itself)"
    if not depends(e):
        return "condition does not depend on the row"
    return None


class _Scope:
    """The tables an UPDATE/DELETE names, by alias, and which are tied together by joins."""

    def __init__(self, roots: Iterable[exp.Expr]) -> None:
        self.tables: dict[str, exp.Table] = {}
        self.nodes: list[tuple[str, exp.Table]] = []
        self.links: list[set[str]] = []
        for root in roots:
            if not isinstance(root, _NODE):
                raise Unparseable("unrecognized table list")
            if isinstance(root, exp.Table):
                self._add(root)
            for join in root.args.get("joins") or ():
                if isinstance(join.this, exp.Table):
                    self._add(join.this)
                    if join.args.get("using"):
                        self.links.append(set(self.tables))
                on = join.args.get("on")
                if on is not None and _truth(on) is None:
                    self.links.append(self.refs(on, unqualified=False))

    def _add(self, t: exp.Table) -> None:
        if isinstance(t.this, exp.Identifier):
            self.tables.setdefault(t.alias_or_name, t)
            self.nodes.append((t.alias_or_name, t))

    def key(self, qualifier: str) -> str | None:
        if qualifier in self.tables:
            return qualifier
        return next((k for k, t in self.tables.items() if t.name == qualifier), None)

    def refs(self, e: exp.Expr, unqualified: bool = True) -> set[str]:
        """Tables of this scope whose columns ``e`` uses; an unqualified column outside a
        subquery may belong to any of them."""
        found: set[str] = set()
        for col in e.find_all(exp.Column):
            nested = col.find_ancestor(exp.Select) is not None and col.find_ancestor(
                exp.Select) is not e.find_ancestor(exp.Select)
            if col.table:
                k = self.key(col.table)
                if k is not None:
                    found.add(k)
            elif unqualified and not nested:
                found |= set(self.tables)
        return found

    def reach(self, key: str) -> set[str]:
        """``key`` and every table a join condition ties to it."""
        reached = {key}
        changed = True
        while changed:
            changed = False
            for link in self.links:
                if link & reached and not link <= reached:
                    reached |= link
                    changed = True
        return reached


def _bounded_writes(node: exp.Update | exp.Delete, targets: Sequence[str], scope: _Scope,
                    acc: _Acc) -> None:
    """One Write per target, with the reason the WHERE clause may touch every row."""
    op = "update" if isinstance(node, exp.Update) else "delete"
    where = node.args.get("where")
    if where is not None:
        acc.literal_sensitive = True
    for key in targets:
        table = scope.tables[key]
        if where is None:
            reason: str | None = "no WHERE clause"
        else:
            reach = scope.reach(key)

            def depends(e: exp.Expr, reach: set[str] = reach) -> bool:
                return bool(scope.refs(e) & reach)

            why = _unbounded(where.this, depends)
            reason = f"WHERE {where.this.sql(dialect='mysql')}: {why}" if why else None
        acc.writes.append(Write(_table_name(table), op, reason))  # type: ignore[arg-type]


def _update_delete(node: exp.Update | exp.Delete, acc: _Acc) -> None:
    roots: list[exp.Expr] = [node.this] if node.this is not None else []
    using = node.args.get("using")
    if isinstance(using, list):
        roots += using
    scope = _Scope(roots)
    if not scope.tables:
        raise Unparseable("no target table")
    if isinstance(node, exp.Delete):
        named = node.args.get("tables") or (
            node.this.expressions if isinstance(node.this, exp.Tuple) else [])
        if named or isinstance(using, list):
            keys = [scope.key(t.name) for t in named] if named else [node.this.alias_or_name]
        else:
            keys = [node.this.alias_or_name]
    else:
        keys = []
        for assignment in node.expressions:
            col = assignment.this
            if not isinstance(col, exp.Column) or not col.table:
                keys = list(scope.tables)
                break
            keys.append(scope.key(col.table))
        if not keys:
            keys = list(scope.tables)
    if any(k is None for k in keys):
        raise Unparseable("target table not found in the statement")
    targets = [k for k in dict.fromkeys(keys) if k is not None]
    _bounded_writes(node, targets, scope, acc)
    # The target tables are written, not read, wherever the statement lists them.
    skip = [t for k, t in scope.nodes if k in targets] + list(node.args.get("tables") or ())
    _collect(node, acc, skip=skip)


# --------------------------------------------------------------------------------------------
# Tree: statements


def _insert(node: exp.Insert, acc: _Acc, op: str) -> None:
    target = node.this.this if isinstance(node.this, exp.Schema) else node.this
    if not isinstance(target, exp.Table):
        raise Unparseable("INSERT without a target table")
    conflict = node.args.get("conflict")
    if op == "insert" and isinstance(conflict, exp.OnConflict) and conflict.args.get("duplicate"):
        op = "upsert"
    acc.writes.append(Write(_table_name(target), op))  # type: ignore[arg-type]
    _collect(node, acc, skip=[target])


# sql_mode flags that change how the server reads statement text (a double-quoted text
# becomes a name, a backslash stops escaping): Wiregate reads with the defaults, so a session
# must not switch to them (the proxy also takes them out of the session's starting sql_mode).
LEXING_MODES = frozenset({"ANSI_QUOTES", "NO_BACKSLASH_ESCAPES", "ANSI",
                          # combination modes that include ANSI_QUOTES
                          "POSTGRESQL", "ORACLE", "DB2", "MSSQL", "MAXDB"})


def _setting_hazard(name: str, value: str | None, rhs: exp.Expr | None, acc: _Acc) -> None:
    """Settings that change how statements must be read, or switch a protection off."""
    if name == "sql_mode":
        if value is None and isinstance(rhs, exp.Var) and rhs.name.upper() == "DEFAULT":
            raise Unparseable("sql_mode = DEFAULT may turn on ANSI_QUOTES or "
                              "NO_BACKSLASH_ESCAPES, which change how statements are read")
        if value is None and isinstance(rhs, exp.Concat | exp.DPipe):
            # CONCAT(@@sql_mode, ',STRICT_TRANS_TABLES'), as drivers send it: the session's
            # own modes (kept free of the lexing ones) plus literal ones
            parts = list(rhs.expressions) if isinstance(rhs, exp.Concat) else [
                rhs.this, rhs.expression]
            own = [p for p in parts if isinstance(p, exp.SessionParameter)
                   and p.name.lower() == "sql_mode"]
            literals = [_literal_text(p) for p in parts if p not in own]
            if own and all(v is not None for v in literals):
                value = ",".join(v for v in literals if v)
        flags = {f.strip().upper() for f in (value or "").split(",")}
        if value is None or value.strip().isdigit() or flags & LEXING_MODES:
            raise Unparseable("sql_mode may only be set to a list of modes without "
                              "ANSI_QUOTES, ANSI and NO_BACKSLASH_ESCAPES (they change how "
                              "statements are read)")
    elif name == "sql_log_bin":
        # Writes kept out of the binary log: replicas and the audit trail never see them.
        acc.privilege.append("SET sql_log_bin keeps writes out of the binary log")
    elif name == "foreign_key_checks" and (value or "").strip().upper() not in ("1", "ON"):
        acc.privilege.append("SET foreign_key_checks = 0 lets writes orphan rows and skip "
                             "ON DELETE actions")


def _setting_value(e: exp.Expr | None) -> str | None:
    if e is None:
        return None
    if isinstance(e, exp.Boolean):
        return "1" if e.this else "0"
    if isinstance(e, exp.Var):
        return None if e.name.upper() == "DEFAULT" else e.name
    if isinstance(e, exp.Column) and not e.table:
        return e.name
    return _literal_text(e)


def _set(node: exp.Set, acc: _Acc) -> Category:
    """SET: session settings, or server administration when any item is global."""
    category: Category = "session"
    modifier = ""
    for item in node.expressions:
        if not isinstance(item, exp.SetItem):
            raise Unparseable("unrecognized SET item")
        kind = str(item.args.get("kind") or "").upper()
        if kind in ("GLOBAL", "PERSIST", "PERSIST_ONLY", "SESSION", "LOCAL"):
            modifier = kind
        # A scope keyword is taken to carry over to the assignments after it (the stricter
        # reading of SET GLOBAL a = 1, b = 2).
        kind = kind or modifier
        if kind == "TRANSACTION":
            modes = [m.name.upper() for m in item.expressions]
            if item.args.get("global_"):
                category = "admin"
            for mode in modes:
                if mode in ("READ WRITE", "READ ONLY"):
                    acc.read_write |= mode == "READ WRITE"
                    acc.settings.append(
                        Setting("transaction_read_only", "0" if mode == "READ WRITE" else "1"))
                elif mode.startswith("ISOLATION LEVEL "):
                    acc.settings.append(Setting("transaction_isolation",
                                                mode.removeprefix("ISOLATION LEVEL ")))
            continue
        if kind in ("NAMES", "CHARACTER SET", "CHARSET"):
            acc.settings.append(Setting("names" if kind == "NAMES" else "character_set",
                                        _setting_value(item.this)))
            continue
        eq = item.this
        if not isinstance(eq, exp.EQ | exp.PropertyEQ):
            raise Unparseable("unrecognized SET item")
        lhs, rhs = eq.this, eq.expression
        scope = kind
        if isinstance(lhs, exp.SessionParameter):
            scope = str(lhs.args.get("kind") or "SESSION").upper()
            name = lhs.name.lower()
        elif isinstance(lhs, exp.Parameter):
            name = f"@{lhs.name.lower()}"
        elif isinstance(lhs, exp.Column) and not lhs.table:
            name = lhs.name.lower()
        else:
            raise Unparseable("unrecognized SET target")
        value = _setting_value(rhs)
        _setting_hazard(name, value, rhs, acc)
        acc.settings.append(Setting(name, value))
        _collect(rhs, acc)
        if scope in ("GLOBAL", "PERSIST", "PERSIST_ONLY"):
            category = "admin"
            if name in _FILE_VARIABLES:
                acc.file_access.append(f"SET GLOBAL {name}")
            if name in _CODE_VARIABLES:
                acc.code.append(f"SET GLOBAL {name}")
        elif name in _READ_ONLY_VARIABLES and (value or "").lower() in _FALSE_VALUES:
            acc.read_write = True
    return category


def _create(node: exp.Create, acc: _Acc) -> Category:
    kind = str(node.args.get("kind") or "").upper()
    acc.or_replace = bool(node.args.get("replace"))
    target = node.this
    if kind == "INDEX" and isinstance(target, exp.Index):
        table = target.args.get("table")
        schema = table.db or None if isinstance(table, exp.Table) else None
        acc.objects.append(("index", Name(schema, target.name)))
        if isinstance(table, exp.Table):
            acc.objects.append(("table", _table_name(table)))
        acc.create_kind = "index"
        _collect(node, acc, skip=[table] if isinstance(table, exp.Table) else [])
        return "create"
    if isinstance(target, exp.Schema):
        target = target.this
    if kind in _CODE_OBJECTS:
        name = _table_name(target) if isinstance(target, exp.Table) else Name(None, target.name)
        acc.objects.append((kind.lower(), name))
        acc.code.append(f"CREATE {kind} {name}")
        return "code"
    object_kind = "database" if kind in ("SCHEMA", "DATABASE") else kind.lower()
    if isinstance(target, exp.Table):
        name = _database_name(target) if object_kind == "database" else _table_name(target)
        acc.objects.append((object_kind, name))
        _collect(node, acc, skip=[target])
    else:
        raise Unparseable(f"CREATE {kind} without a name")
    acc.create_kind = object_kind
    return "create"


def _drop(node: exp.Drop, acc: _Acc) -> Category:
    kind = str(node.args.get("kind") or "").upper()
    object_kind = "database" if kind in ("SCHEMA", "DATABASE") else kind.lower()
    tables = node.args.get("tables") or ([node.this] if node.this is not None else [])
    for t in tables:
        if not isinstance(t, exp.Table):
            raise Unparseable(f"DROP {kind} of an unrecognized name")
        acc.objects.append((object_kind, _database_name(t) if object_kind == "database"
                            else _table_name(t)))
    on = node.args.get("cluster")
    if isinstance(on, exp.OnProperty) and isinstance(on.this, exp.Table):
        acc.objects.append(("table", _table_name(on.this)))
    return "ddl"


def _alter(node: exp.Alter, acc: _Acc) -> Category:
    kind = str(node.args.get("kind") or "").lower()
    if not isinstance(node.this, exp.Table):
        raise Unparseable("ALTER of an unrecognized name")
    acc.objects.append((kind, _table_name(node.this)))
    for action in node.args.get("actions") or ():
        if isinstance(action, exp.AlterRename) and isinstance(action.this, exp.Table):
            acc.objects.append((kind, _table_name(action.this)))
        elif isinstance(action, exp.Query):
            _collect(action, acc)
    return "ddl"


def _from_tree(node: exp.Expr, st: _Statement, acc: _Acc) -> tuple[str, Category]:
    """Kind and category of a statement sqlglot modelled, filling ``acc`` from its tree."""
    kind = type(node).__name__
    if isinstance(node, exp.Query | exp.Values):
        _collect(node, acc)
        return kind, "read"
    if isinstance(node, exp.Insert):
        _insert(node, acc, "insert")
        return kind, "write"
    if isinstance(node, exp.Update | exp.Delete):
        _update_delete(node, acc)
        return kind, "write"
    if isinstance(node, exp.TruncateTable):
        for t in node.expressions:
            if not isinstance(t, exp.Table):
                raise Unparseable("TRUNCATE of an unrecognized name")
            acc.writes.append(Write(_table_name(t), "truncate"))
            acc.objects.append(("table", _table_name(t)))
        return kind, "ddl"
    if isinstance(node, exp.Create):
        return kind, _create(node, acc)
    if isinstance(node, exp.Drop):
        return kind, _drop(node, acc)
    if isinstance(node, exp.Alter):
        return kind, _alter(node, acc)
    if isinstance(node, exp.Set):
        return kind, _set(node, acc)
    if isinstance(node, exp.Use):
        acc.settings.append(Setting("database", node.this.name if node.this else None))
        return kind, "session"
    if isinstance(node, exp.Show):
        _collect(node, acc)
        return kind, "read"
    if isinstance(node, exp.Describe):
        inner = node.this
        if str(node.args.get("style") or "").upper() == "ANALYZE":
            # EXPLAIN ANALYZE runs the statement.
            _, category = _from_tree(inner, st, acc)
            return kind, category
        if isinstance(inner, exp.Table):
            acc.reads.add(_table_name(inner))
        else:
            _collect(inner, acc)
        return kind, "read"
    if isinstance(node, exp.Transaction | exp.Commit | exp.Rollback):
        return kind, "transaction"
    if isinstance(node, exp.Kill | exp.Analyze):
        return kind, "admin"
    return kind, "unknown"


# --------------------------------------------------------------------------------------------
# Tokens: statements sqlglot keeps opaque


def _strip_into(st: _Statement, acc: _Acc) -> _Statement:
    """Take ``INTO OUTFILE/DUMPFILE …`` and ``INTO @var, …`` out of a SELECT, recording them;
    sqlglot's MySQL grammar does not have them."""
    toks = st.tokens
    select = _kw(toks[0]) in _SELECT_STARTS
    out: list[Token] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        nxt = _kw(toks[i + 1]) if i + 1 < len(toks) else ""
        if tok.token_type == TokenType.INTO and nxt in ("OUTFILE", "DUMPFILE"):
            if i + 2 >= len(toks) or toks[i + 2].token_type != TokenType.STRING:
                raise Unparseable(f"INTO {nxt} without a file name")
            acc.file_access.append(f"SELECT INTO {nxt} '{toks[i + 2].text}'")
            i += 3
            while i < len(toks):
                word = _kw(toks[i])
                if word in ("CHARACTER", "CHARSET"):
                    i += 2 if _kw(toks[i + 1] if i + 1 < len(toks) else None) != "SET" else 3
                elif word in _INTO_FILE_OPTIONS or toks[i].token_type in _QUOTED - {
                        TokenType.IDENTIFIER}:
                    i += 1
                else:
                    break
            continue
        if select and tok.token_type == TokenType.INTO:
            i += 1
            while i < len(toks):
                if toks[i].token_type == TokenType.PARAMETER and i + 1 < len(toks):
                    acc.settings.append(Setting(f"@{toks[i + 1].text.lower()}", None))
                    i += 2
                elif _is_name(toks[i]) and _kw(toks[i]) not in ("FROM", "FOR", "LOCK"):
                    acc.settings.append(Setting(toks[i].text.lower(), None))
                    i += 1
                else:
                    raise Unparseable("INTO without a variable")
                if i < len(toks) and toks[i].token_type == TokenType.COMMA:
                    i += 1
                    continue
                break
            continue
        out.append(tok)
        i += 1
    if not out:
        raise Unparseable("empty statement")
    return _Statement(out, st.sql, st.server)


def _literal_text_of(tokens: Sequence[Token]) -> str | None:
    """The SQL text a PREPARE/EXECUTE IMMEDIATE runs when it is written as string literals
    (adjacent literals concatenate); None when it is computed at run time."""
    if tokens and all(t.token_type == TokenType.STRING for t in tokens):
        return "".join(t.text for t in tokens)
    return None


def _embedded(text: str, server: _Server) -> Facts:
    """The one statement inside a PREPARE or EXECUTE IMMEDIATE string."""
    expanded = expand_executable_comments(text, server=server.name, version=server.release)
    chunks = _split(_tokenize(expanded))
    if len(chunks) != 1:
        raise Unparseable("a prepared statement holds exactly one statement")
    return _analyze_statement(_Statement(chunks[0], expanded, server))


def _dynamic(st: _Statement, start: int, acc: _Acc, reason: str) -> Facts | None:
    """The statement a PREPARE/EXECUTE IMMEDIATE text at ``start`` runs; a refusal when the
    text is built at run time."""
    end = next((i for i in range(start, len(st.tokens)) if st.word(i) == "USING"),
               len(st.tokens))
    source = st.tokens[start:end]
    text = _literal_text_of(source)
    if text is not None:
        return _embedded(text, st.server)
    acc.refusals.append(("code", reason))
    if source:
        _collect(_expression(source, st.sql), acc)
    return None


def _prepare(st: _Statement, acc: _Acc) -> Facts:
    if st.word(2) != "FROM":
        raise Unparseable("PREPARE without FROM")
    inner = _dynamic(st, 3, acc, "prepared statement text built at run time")
    if inner is None:
        return acc.facts("Prepare", "code", st.text)
    return dataclasses.replace(inner, kind="Prepare", text=st.text)


def _execute_immediate(st: _Statement, acc: _Acc) -> Facts:
    acc.code.append("EXECUTE IMMEDIATE")
    inner = _dynamic(st, 2, acc, "statement text built at run time")
    if inner is not None:
        acc.merge(inner)
    return acc.facts("ExecuteImmediate", "code", st.text)


def _call_statement(st: _Statement, acc: _Acc) -> Facts:
    tree = _expression(st.tokens[1:], st.sql)
    target = tree.expressions[0]
    if isinstance(target, exp.Dot) and isinstance(target.expression, exp.Anonymous):
        schema: str | None = target.this.name
        func: exp.Expr = target.expression
    else:
        schema, func = None, target
    if isinstance(func, exp.Anonymous):
        procedure = Call(Name(schema, func.name.lower()),
                         tuple(_literal_text(a) for a in func.expressions), True)
        for arg in func.expressions:
            _collect(arg, acc)
    elif isinstance(func, exp.Column):
        procedure = Call(Name(func.table or None, func.name.lower()), (), True)
    else:
        raise Unparseable("CALL of an unrecognized procedure")
    acc.calls.insert(0, procedure)
    return acc.facts("Call", "read", st.text)


def _load(st: _Statement, acc: _Acc) -> Facts:
    """LOAD DATA / LOAD XML … INFILE 'file' … INTO TABLE t: a write fed from a file."""
    what = st.word(1)
    words = [st.word(i) for i in range(len(st.tokens))]
    if "INFILE" not in words or "INTO" not in words:
        raise Unparseable(f"LOAD {what} without INFILE … INTO")
    at = words.index("INFILE")
    if at + 1 >= len(st.tokens) or st.tokens[at + 1].token_type != TokenType.STRING:
        raise Unparseable(f"LOAD {what} INFILE without a file name")
    path = st.tokens[at + 1].text
    local = " (LOCAL: a file of the client)" if "LOCAL" in words[:at] else ""
    into = words.index("INTO")
    if st.word(into + 1) != "TABLE":
        raise Unparseable(f"LOAD {what} without INTO TABLE")
    target, _ = _name_at(st.tokens, into + 2)
    if target is None:
        raise Unparseable(f"LOAD {what} without a table name")
    acc.writes.append(Write(target, "load"))
    acc.file_access.append(f"LOAD {what} INFILE '{path}'{local}")
    return acc.facts("LoadData" if what == "DATA" else "LoadXml", "write", st.text)


def _object_word(st: _Statement) -> tuple[str, int]:
    """The object keyword of CREATE/ALTER/DROP/RENAME … (TABLE, USER, EVENT, …), past the
    modifiers (OR REPLACE, DEFINER = …, TEMPORARY, ONLINE, …)."""
    for i in range(1, len(st.tokens)):
        word = st.word(i)
        if word in _OBJECT_WORDS:
            return word, i
        if word in ("(", "AS", "SELECT"):
            break
    return "", -1


def _ddl_from_tokens(st: _Statement, acc: _Acc, verb: str, obj: str, at: int) -> Facts:
    """CREATE/ALTER/DROP/RENAME of an object sqlglot does not model."""
    kind = f"{verb.capitalize()}{obj.capitalize()}"
    if obj in _PRIVILEGE_OBJECTS:
        acc.privilege.append(st.described)
        return acc.facts(kind, "privilege", st.text)
    if verb == "DROP" and obj == "PREPARE":
        return acc.facts("Deallocate", "session", st.text)
    name, after = _name_at(st.tokens, at + 1)
    object_kind = "database" if obj in ("SCHEMA", "DATABASE") else obj.lower().rstrip("s")
    if name is not None and _kw(st.tokens[after - 1]) not in (
            "CHARACTER", "CHARSET", "DEFAULT", "COLLATE", "UPGRADE", "READ", "COMMENT"):
        acc.objects.append((object_kind, name))
    if verb == "RENAME":
        i = after
        while name is not None and i < len(st.tokens):
            if st.word(i) in ("TO", ","):
                name, i = _name_at(st.tokens, i + 1)
                if name is not None:
                    acc.objects.append((object_kind, name))
            else:
                i += 1
        return acc.facts(kind, "ddl", st.text)
    if verb == "CREATE":
        acc.or_replace = st.word(1) == "OR" and st.word(2) == "REPLACE"
        if obj in _CODE_OBJECTS:
            acc.code.append(f"CREATE {obj} {name}" if name else f"CREATE {obj}")
            if "SONAME" in (st.word(i) for i in range(len(st.tokens))):
                acc.file_access.append(st.described)
            return acc.facts(kind, "code", st.text)
        acc.create_kind = object_kind
        return acc.facts(kind, "create", st.text)
    return acc.facts(kind, "ddl", st.text)


def _transaction(st: _Statement, acc: _Acc) -> Facts:
    words = [st.word(i) for i in range(len(st.tokens))]
    if words[0] in ("BEGIN", "START"):
        pairs = zip(words, words[1:], strict=False)
        acc.read_write = any(a == "READ" and b == "WRITE" for a, b in pairs)
        return acc.facts("Transaction", "transaction", st.text)
    kinds = {"COMMIT": "Commit", "ROLLBACK": "Rollback", "SAVEPOINT": "Savepoint",
             "RELEASE": "ReleaseSavepoint", "XA": "XA"}
    return acc.facts(kinds[words[0]], "transaction", st.text)


def _set_statement(st: _Statement, acc: _Acc) -> Facts:
    """MariaDB ``SET STATEMENT var = value, … FOR <statement>``."""
    depth, at = 0, -1
    for i, tok in enumerate(st.tokens[2:], start=2):
        depth += tok.token_type == TokenType.L_PAREN
        depth -= tok.token_type == TokenType.R_PAREN
        if depth == 0 and _kw(tok) == "FOR":
            at = i
            break
    if at < 3:
        raise Unparseable("SET STATEMENT without FOR")
    assignments = [st.tokens[0], *st.tokens[2:at]]
    tree = _parse(assignments, st.sql)
    if not isinstance(tree, exp.Set) or _set(tree, acc) != "session":
        raise Unparseable("unrecognized SET STATEMENT assignment")
    inner = _analyze_statement(st.sub(at + 1))
    settings = tuple(dataclasses.replace(s, local=True) for s in acc.settings)
    return dataclasses.replace(inner, kind="SetStatement", text=st.text,
                               settings=settings + inner.settings,
                               calls=tuple(acc.calls) + inner.calls,
                               privilege=tuple(acc.privilege) + inner.privilege)


def _by_tokens(st: _Statement, acc: _Acc) -> Facts | None:
    """Facts for statements classified by their leading keywords; None for the tree path."""
    w0, w1, w2 = st.word(0), st.word(1), st.word(2)
    if (w0 == "BEGIN" and w1 == "NOT") or w0 in _COMPOUND_WORDS or (
            len(st.tokens) > 2 and st.tokens[1].token_type == TokenType.COLON):
        acc.code.append(f"compound statement {' '.join(st.described.split()[:3])} …")
        return acc.facts("Block", "code", st.text)
    if w0 in ("CREATE", "ALTER", "DROP", "RENAME"):
        obj, at = _object_word(st)
        if obj in _CODE_OBJECTS | _PRIVILEGE_OBJECTS or obj in ("PREPARE", "SERVER") or (
                w0 in ("RENAME", "ALTER") and obj not in ("", "TABLE", "VIEW")) or (
                w0 == "RENAME" and obj):
            return _ddl_from_tokens(st, acc, w0, obj, at)
        return None
    if any(t.token_type == TokenType.SEMICOLON for t in st.tokens):
        raise Unparseable("statement boundaries are ambiguous")
    if w0 in ("GRANT", "REVOKE"):
        acc.privilege.append(st.described)
        return acc.facts(w0.capitalize(), "privilege", st.text)
    if w0 == "SET" and (w1 in ("PASSWORD", "ROLE") or (w1 == "DEFAULT" and w2 == "ROLE")):
        acc.privilege.append(st.described)
        return acc.facts("SetRole" if "ROLE" in (w1, w2) else "SetPassword", "privilege",
                         st.text)
    if w0 == "SET" and w1 == "STATEMENT":
        return _set_statement(st, acc)
    if w0 == "LOAD" and w1 in ("DATA", "XML"):
        return _load(st, acc)
    if w0 == "INSTALL":
        acc.code.append(st.described)
        acc.file_access.append(st.described)
        return acc.facts("InstallPlugin", "code", st.text)
    if w0 == "PREPARE":
        return _prepare(st, acc)
    if w0 == "EXECUTE":
        if w1 == "IMMEDIATE":
            return _execute_immediate(st, acc)
        return acc.facts("Execute", "session", st.text)
    if w0 == "DEALLOCATE":
        return acc.facts("Deallocate", "session", st.text)
    if w0 == "CALL":
        return _call_statement(st, acc)
    if w0 == "DO":
        _collect(_expression(st.tokens[1:], st.sql), acc)
        return acc.facts("Do", "read", st.text)
    if w0 in _TRANSACTION_WORDS or (w0 == "BEGIN") or (w0 == "START" and w1 == "TRANSACTION"):
        return _transaction(st, acc)
    if w0 == "ANALYZE" and w1 not in ("TABLE", "NO_WRITE_TO_BINLOG", "LOCAL"):
        # MariaDB ANALYZE <statement> runs the statement.
        start = 4 if w1 == "FORMAT" else 1
        inner = _analyze_statement(st.sub(start))
        return dataclasses.replace(inner, kind="Analyze", text=st.text)
    if w0 in _ADMIN_WORDS or w0 in ("ANALYZE", "START", "LOAD"):
        return acc.facts(w0.title().replace(" ", ""), "admin", st.text)
    if w0 == "UNLOCK TABLES" or (w0 == "UNLOCK" and w1 in ("TABLES", "TABLE")):
        return acc.facts("UnlockTables", "session", st.text)
    if w0 == "SHOW":
        try:
            tree = _parse(st.tokens, st.sql)
        except Unparseable:
            tree = None
        if isinstance(tree, exp.Show):
            _collect(tree, acc)
        elif any(t.token_type == TokenType.L_PAREN for t in st.tokens):
            return acc.facts("Show", "unknown", st.text)  # could call functions unseen
        return acc.facts("Show", "read", st.text)
    return None


def _analyze_statement(st: _Statement) -> Facts:
    """Facts of one statement's tokens."""
    if not st.tokens:
        raise Unparseable("empty statement")
    acc = _Acc()
    facts = _by_tokens(st, acc)
    if facts is not None:
        return facts
    parsed = _strip_into(st, acc)
    tokens = parsed.tokens
    replace = _kw(tokens[0]) == "REPLACE"
    if replace:
        tokens = [_synthetic(tokens[0], TokenType.INSERT, "INSERT"), *tokens[1:]]
    tree = _parse(tokens, st.sql)
    if replace and isinstance(tree, exp.Insert):
        _insert(tree, acc, "replace")
        return acc.facts("Replace", "write", st.text)
    if isinstance(tree, exp.Command):
        obj, at = _object_word(st)
        if _kw(st.tokens[0]) in ("CREATE", "ALTER") and any(
                t.token_type in (TokenType.SELECT, TokenType.WITH) for t in st.tokens):
            # A query inside DDL sqlglot cannot read (CREATE TABLE t (…) WITH … SELECT): what
            # it reads and copies is unknown.
            raise Unparseable(f"{_kw(st.tokens[0])} with a query that cannot be read")
        if _kw(st.tokens[0]) in ("CREATE", "ALTER", "DROP") and obj:
            return _ddl_from_tokens(st, _Acc(), _kw(st.tokens[0]), obj, at)
        return acc.facts(f"Command:{str(tree.this).upper()}", "unknown", st.text)
    kind, category = _from_tree(tree, st, acc)
    return acc.facts(kind, category, st.text)


def _statements(sql: str, server: _Server) -> Iterator[_Statement]:
    for chunk in _split(_tokenize(sql)):
        yield _Statement(chunk, sql, server)


def analyze(sql: str, *, server: str = "mariadb",
            version: tuple[int, int, int] = (10, 11, 0)) -> list[Facts]:
    """The facts of every statement in ``sql`` as ``server`` (``"mariadb"`` or ``"mysql"``) at
    ``version`` would run them. Raises ``Unparseable`` for text the analysis cannot read with
    certainty; such text must be refused."""
    expanded = expand_executable_comments(sql, server=server, version=version)
    target = _Server(server, version)
    facts: list[Facts] = []
    for st in _statements(expanded, target):
        try:
            facts.append(_analyze_statement(st))
        except Unparseable:
            raise
        except Exception as e:
            # A tree shape the analysis did not foresee: refuse rather than guess.
            raise Unparseable(f"statement not understood: {type(e).__name__}: {e}") from e
    return facts

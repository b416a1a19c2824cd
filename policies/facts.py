"""What a statement does, in terms both SQL dialects share.

The PostgreSQL analysis (pglast) and the MySQL analysis (sqlglot) each turn a statement string
into a list of ``Facts``; the guardrails decide on facts only, so one set of rules serves both
wire protocols. An analysis records what it saw; it never decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# What a statement is, for the rules that look at the whole statement.
Category = Literal[
    "read",          # SELECT, SHOW, EXPLAIN, FETCH, cursors
    "write",         # INSERT, UPDATE, DELETE, MERGE, COPY FROM, LOAD DATA, REPLACE
    "ddl",           # DROP, TRUNCATE, ALTER, RENAME, COMMENT, CREATE OR REPLACE of what exists
    "create",        # CREATE of a new object (tables, indexes, views, ...)
    "privilege",     # GRANT, REVOKE, roles and users, SET ROLE, SET SESSION AUTHORIZATION
    "code",          # DO, CREATE FUNCTION/PROCEDURE/TRIGGER/RULE/EVENT, EXECUTE IMMEDIATE
    "session",       # SET, RESET, DISCARD, USE, LISTEN, prepared-statement bookkeeping
    "transaction",   # BEGIN, COMMIT, ROLLBACK, SAVEPOINT
    "admin",         # CHECKPOINT, VACUUM, server administration
    "unknown",       # a statement the analysis does not classify: refused (fail closed)
]

WriteOp = Literal["insert", "update", "delete", "merge", "truncate", "copy", "load", "replace",
                  "upsert"]


@dataclass(frozen=True, order=True)
class Name:
    """An object name as the server will see it after case folding and unquoting.

    ``schema`` is None when the server resolves it through the session's search_path (MySQL:
    the current database)."""

    schema: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True)
class Write:
    """One data-modifying action on one target, wherever it sits in the statement."""

    target: Name
    op: WriteOp
    # Only for UPDATE/DELETE/MERGE: why every row may be touched ("no WHERE clause",
    # "WHERE 1 = 1 is true for every row", ...), or None when the condition bounds the rows.
    unbounded: str | None = None


@dataclass(frozen=True)
class Call:
    """A function or procedure call. ``literal_args`` holds constant text arguments in order
    (None for an argument that is not a constant); rules such as ``set_config('role', …)``
    need them."""

    name: Name
    literal_args: tuple[str | None, ...] = ()
    procedure: bool = False
    # ``row.f`` may be the call f(row) (PostgreSQL's attribute notation): a call only if a
    # routine of that name exists, otherwise a column.
    attribute: bool = False
    # MySQL: an unqualified function call. The server resolves it to its own function first,
    # and a name that is neither its own nor a stored routine is an error; so when the
    # catalog has no routine of that name, it is a built-in.
    builtin: bool = False


@dataclass(frozen=True)
class Setting:
    """A session setting changed by the statement (SET, set_config, USE)."""

    name: str                  # lower case: "search_path", "role", "transaction_read_only"
    value: str | None          # None: RESET / DEFAULT / not a constant
    local: bool = False


@dataclass(frozen=True)
class Facts:
    """One top-level statement of a string: what it is and everything it touches."""

    kind: str                             # the parser's node name, e.g. "DeleteStmt", "Drop"
    category: Category
    text: str                             # this statement's own source text
    reads: frozenset[Name] = frozenset()
    writes: tuple[Write, ...] = ()
    calls: tuple[Call, ...] = ()
    objects: tuple[tuple[str, Name], ...] = ()  # DDL/create/code: (object kind, name)
    create_kind: str | None = None       # "table", "index", "view", ... for category create
    or_replace: bool = False              # CREATE OR REPLACE: an ALTER when the object exists
    settings: tuple[Setting, ...] = ()
    file_access: tuple[str, ...] = ()     # server-side file/program/network access, described
    privilege: tuple[str, ...] = ()       # privilege changes, described
    code: tuple[str, ...] = ()            # anonymous or stored code, described
    read_write: bool = False              # asks for a read-write transaction explicitly
    # Refusals the analysis itself must make, as (rule kind, reason): e.g. SQL PREPARE of a
    # string built at run time. The guardrails apply them under the profile's rule of that kind.
    refusals: tuple[tuple[str, str], ...] = ()
    # The decision may depend on constants (WHERE 1 = 1, set_config('role', ...)): a decision
    # cache keyed by the normalized text must not be used for this statement.
    literal_sensitive: bool = False
    ctes: frozenset[str] = field(default_factory=frozenset)
    prepared: str | None = None           # SQL PREPARE: the name the statement is kept under
    deallocated: tuple[str, ...] = ()     # DEALLOCATE / DISCARD: names dropped ("*" = all)

    @property
    def writes_data(self) -> bool:
        return bool(self.writes)


def kind_words(kind: str) -> str:
    """A node name as words for messages: ``DropStmt`` → ``DROP``, ``AlterTableStmt`` →
    ``ALTER TABLE``; a MySQL kind such as ``Delete`` → ``DELETE``."""
    if not kind.isalpha():
        return kind.upper()
    words: list[str] = []
    word = ""
    for ch in kind.removesuffix("Stmt"):
        if ch.isupper() and word:
            words.append(word)
            word = ""
        word += ch
    words.append(word)
    return " ".join(words).upper()


class Unparseable(ValueError):
    """The parser rejected the string; the message is the parser's. Always refused."""

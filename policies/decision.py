"""The one decision point: what a policy is asked, and what it may answer.

The proxy calls ``policy.decide(statement, session)`` for every Query, Parse and FunctionCall
before a byte of it goes upstream. The answer is ``Allow`` (optionally with a result transform,
the one place where result rows can be rewritten), ``Deny`` (an error the client sees, with the
SQLSTATE and a message naming the rule) or ``Hold`` (wait for a human's approval).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

StatementSource = Literal["query", "parse", "function_call"]


@dataclass(slots=True)
class Statement:
    """What the client asked for. ``sql`` is the whole string (a simple Query may hold several
    statements); for a FunctionCall it is empty and ``function_oid`` is set."""

    sql: str
    source: StatementSource
    name: str = ""                 # prepared statement name for Parse ("" = unnamed)
    param_types: tuple[int, ...] = ()
    function_oid: int | None = None


@dataclass
class SessionInfo:
    """Facts about a live session a policy may use. Plain data: no I/O behind it."""

    session_id: str
    user: str
    database: str
    upstream_database: str
    upstream_user: str = ""       # the role the server sees ("$user" in search_path)
    application_name: str = ""
    client_addr: str = ""
    tls: bool = False
    transaction_status: str = "I"
    parameters: dict[str, str] = field(default_factory=dict)
    # Per-session facts a policy keeps between statements (e.g. the search_path it tracks).
    policy_state: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Column:
    """A result column as the server described it (RowDescription field)."""

    index: int
    name: str
    table_oid: int
    column_number: int
    type_oid: int
    type_size: int
    type_modifier: int
    format: int  # 0 text, 1 binary


CellRewrite = Callable[[bytes | None], bytes | None]


class ResultTransform(Protocol):
    """Per-statement rewrite of result rows.

    Called once per result set with its columns; returns, for the columns to rewrite, a
    function applied to each cell (raw wire bytes in the column's format, or None for NULL).
    An empty mapping means the rows are forwarded untouched, without being decoded.
    """

    def plan(self, columns: Sequence[Column]) -> dict[int, CellRewrite]: ...


# Rewrites the fields of an ErrorResponse or NoticeResponse (keyed by field code, "M" the
# message, "D" the detail, ...) before the client sees them.
MessageScrub = Callable[[dict[str, str]], dict[str, str]]


@dataclass(frozen=True)
class Allow:
    transform: ResultTransform | None = None
    # Errors and notices the statement raises may print values it read (a unique violation's
    # key, a failed cast's input): when set, they pass through this first.
    scrub: MessageScrub | None = None


@dataclass(frozen=True)
class Deny:
    sqlstate: str
    message: str
    hint: str | None = None
    detail: str | None = None
    rule: str = ""


@dataclass(frozen=True)
class Hold:
    """The statement waits for approval; ``reason`` is shown to the approver."""

    reason: str
    rule: str = ""
    # "approval": a human decides. "catalog": the policy lacks a catalog fact that a fresh
    # read may supply; the proxy re-reads the catalog and asks the policy again, once.
    wait_for: str = "approval"


Decision = Allow | Deny | Hold
ALLOW = Allow()


class Policy(Protocol):
    def decide(self, statement: Statement, session: SessionInfo) -> Decision: ...


class AllowAll:
    """Pass-through: every statement allowed, nothing rewritten."""

    def decide(self, statement: Statement, session: SessionInfo) -> Decision:
        return ALLOW

"""The guardrails as the proxy's ``Policy``: analysis, profile, session context and a cache.

One object serves every session of a listener. Per-session facts (the profile in force, the
search_path the session has set) live in ``SessionInfo.policy_state``. Catalog snapshots come
from a ``CatalogSource`` the proxy provides; this module does no I/O.

Parsing is on the hot path, so decisions are cached, together with the profile, the catalog
version and the search_path: by the statement's shape (numeric constants of a text without
quotes or comments replaced, a C-speed regex), by its text, then by its normalized form
(libpg_query's normalize: constants replaced by placeholders). The shape and normalized keys
are only used for statements whose decision cannot depend on a constant (plain reads): a
``DELETE … WHERE 1 = 1`` and a ``DELETE … WHERE id = 1`` normalize alike and are decided one
by one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

from pglast import ast, parse_sql
from pglast.parser import ParseError, normalize
from pglast.stream import RawStream
from sqlglot.dialects.mysql import MySQL
from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

from policies import mysql_lineage, mysql_statements, statements
from policies.catalog import Catalog
from policies.decision import (
    ALLOW,
    Allow,
    Decision,
    Deny,
    Hold,
    MessageScrub,
    ResultTransform,
    SessionInfo,
    Statement,
)
from policies.facts import Call, Facts, Name, Setting, Unparseable, kind_words
from policies.guardrails import Context, Guardrails, Profile, Refusal
from policies.lineage import (
    ANY_MASKED,
    CALL,
    UNRESOLVED,
    Output,
    Sink,
    Source,
    is_marker,
    lineage,
    sinks,
)
from policies.masking import (
    ColumnPattern,
    MaskingPolicy,
    MaskRule,
    MaskTransform,
    scrub_message,
)
from policies.mysql_masking import (
    DetectText,
    MessageColumn,
    scrub_mysql_error,
    withhold_mysql_error,
)

CACHE_SIZE = 4096
MAX_PREPARED_REJUDGE = 1000
PARSE_RULE = "wiregate.parse"
# The statement waits while the catalog is re-read (after DDL, or for a fact it lacks).
CATALOG_WAIT = Hold("the catalog is being re-read", rule="wiregate.catalog", wait_for="catalog")

# Client startup parameters a guarded session may pass upstream. Anything else (a GUC that
# turns off read-only mode, a role, session_replication_role) is refused at login.
STARTUP_PARAMETERS = frozenset({
    "application_name", "client_encoding", "datestyle", "timezone", "extra_float_digits",
    "intervalstyle", "search_path", "standard_conforming_strings", "bytea_output",
    "lc_messages", "lc_monetary", "lc_numeric", "lc_time", "jit", "geqo", "work_mem",
    "idle_in_transaction_session_timeout", "lock_timeout", "statement_timeout",
    "default_text_search_config", "fallback_application_name", "client_min_messages",
    "enable_seqscan", "enable_indexscan", "enable_bitmapscan",
})


class CatalogSource(Protocol):
    """Where catalog snapshots come from; ``changed`` asks for a refresh after DDL, ``stale``
    says one is under way (decisions wait for it rather than judge on the old schema)."""

    def current(self, database: str) -> Catalog | None: ...

    def changed(self, database: str) -> None: ...

    def stale(self, database: str) -> bool: ...


class NoCatalog:
    def current(self, database: str) -> Catalog | None:
        return None

    def stale(self, database: str) -> bool:
        return False

    def changed(self, database: str) -> None:
        return None


@dataclass
class _SessionState:
    profile: Profile
    guard: Guardrails
    seen_path: tuple[str, ...]    # every schema the session's search_path has named
    user: str = ""                 # the role the server resolves "$user" to
    prepared_writes: dict[str, str] = field(default_factory=dict)  # name → text, if it writes
    key: int = -1                  # what a cached verdict depends on besides text and catalog
    # Masking of named result sources the session created with SQL: a cursor's rows come
    # back at each FETCH, a SQL-prepared statement's at each EXECUTE ("cursor:c",
    # "prepared:p"). A name not in here (a protocol-level portal, a refcursor a function
    # opened, one forgotten past MAX_NAMED) is masked whole.
    # MySQL adds "handler:h" (HANDLER … OPEN AS h, read at each HANDLER h READ).
    named: dict[str, tuple[ResultTransform | None, MessageScrub | None]] = field(
        default_factory=dict)


@dataclass(frozen=True)
class _Verdict:
    refusal: Refusal | None
    settings: tuple[Setting, ...]
    changes_catalog: bool
    writes: bool = False                  # kept as a prepared statement, it would write
    prepared: tuple[str, ...] = ()        # SQL PREPARE names
    deallocated: tuple[str, ...] = ()     # DEALLOCATE / DISCARD ALL ("*")
    transform: ResultTransform | None = None  # masking of the rows the statement returns
    # A cursor or SQL-prepared statement: ("open", "cursor:c") with the masking of its
    # rows in ``transform``; ("read", name) for FETCH/EXECUTE; ("close", name or "cursor:*").
    named: tuple[str, str] | None = None
    # It reads masked columns: its errors and notices pass through this (the dialect's).
    scrub: MessageScrub | None = None

    # The decision itself when applying the verdict changes nothing in the session (a read,
    # masked or not): then a cache hit answers without ``_apply``. Set in __post_init__.
    fixed: Allow | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        plain = not (self.refusal is not None or self.settings or self.changes_catalog
                     or self.writes or self.prepared or self.deallocated
                     or self.named is not None)
        object.__setattr__(self, "fixed", Allow(self.transform, self.scrub) if plain else None)


MAX_NAMED = 10_000
# Statements whose result rows lineage traces (RETURNING lists, COPY's columns).
_ROW_KINDS = frozenset({"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt",
                        "CopyStmt"})
_BUILTIN_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
_PLAIN_ALLOW = _Verdict(None, (), False)


MASKING_RULE = "wiregate.masking"


def user_function(name: Name, catalog: Catalog, ctx: Context) -> bool:
    """A function Wiregate cannot see into: one of the database's own, or unknown."""
    found = catalog.routines_named(name, ctx.path())
    return not found or any(r.name.schema not in _BUILTIN_SCHEMAS for r in found)


def through_calls(output: Output, catalog: Catalog, ctx: Context) -> Output:
    """An output that carries what a user function returned may carry anything that function
    can read: untraceable."""
    if any(user_function(n, catalog, ctx) for n in output.calls):
        return Output(output.name, output.sources | {UNRESOLVED})
    return output


def _mysql_profile(profile: Profile) -> Profile:
    """MySQL compares column names case-insensitively and its lineage lower-cases them: so do
    the column parts of the profile's masking patterns."""
    masking = profile.masking
    if masking is None:
        return profile
    rules = tuple(MaskRule(tuple(ColumnPattern(c.schema, c.table, c.column.lower())
                                 for c in r.columns), r.strategy) for r in masking.rules)
    return replace(profile, masking=replace(masking, rules=rules))


def _named_op(sql: str, facts: list[Facts]) -> tuple[str, str, str] | None:
    """(op, name, query) when the statement opens, reads or closes a cursor or a SQL-prepared
    statement: its rows are masked by the lineage kept under that name."""
    if len(facts) != 1 or facts[0].kind not in (
            "DeclareCursorStmt", "FetchStmt", "ClosePortalStmt", "PrepareStmt", "ExecuteStmt",
            "DeallocateStmt"):
        return None
    try:
        (raw,) = parse_sql(sql)
    except (ParseError, ValueError):
        return None
    stmt = raw.stmt
    # A SELECT is traced; any other query ("" here) is judged like the statement itself, and
    # opened clean only when that finds no masked rows leaving.
    if isinstance(stmt, ast.DeclareCursorStmt):
        query = stmt.query
        return "open", f"cursor:{stmt.portalname}", (
            RawStream()(query) if isinstance(query, ast.SelectStmt) else "")
    if isinstance(stmt, ast.PrepareStmt):
        query = stmt.query
        return "open", f"prepared:{stmt.name}", (
            RawStream()(query) if isinstance(query, ast.SelectStmt) else "")
    if isinstance(stmt, ast.FetchStmt):
        return "read", f"cursor:{stmt.portalname}", ""
    if isinstance(stmt, ast.ExecuteStmt):
        return "read", f"prepared:{stmt.name}", ""
    if isinstance(stmt, ast.ClosePortalStmt):
        return "close", f"cursor:{stmt.portalname or '*'}", ""
    if isinstance(stmt, ast.DeallocateStmt):
        return "close", f"prepared:{stmt.name or '*'}", ""
    return None


def _returns_rows(sql: str, facts: list[Facts]) -> bool:
    """Whether a statement other than a plain SELECT hands rows back: RETURNING, or a string
    of several statements (their results cannot be told apart by the transform)."""
    if len(facts) != 1:
        return True
    try:
        stmts = parse_sql(sql)
    except ParseError:
        return True
    for raw in stmts:
        for node in statements.walk(raw.stmt):   # writable CTEs return rows too
            if getattr(node, "returningClause", None) or getattr(node, "returningList", None):
                return True
    return False


class StartupRefused(Exception):
    """A client startup parameter the session's profile does not allow."""

    def __init__(self, deny: Deny) -> None:
        super().__init__(deny.message)
        self.deny = deny


class GuardPolicy:
    """Guardrails for every statement of every session, per the session's profile."""

    def __init__(self, profiles: Mapping[str, Profile], profile_for: Callable[[SessionInfo], str],
                 catalogs: CatalogSource | None = None, dialect: str = "postgres",
                 mask_keys: Mapping[str, bytes] | None = None) -> None:
        self.profiles = {k: _mysql_profile(p) for k, p in profiles.items()} \
            if dialect == "mysql" else dict(profiles)
        self.mask_keys = dict(mask_keys or {})
        # Result rows are looked at only when some profile masks: otherwise the relay stays
        # in its pass-through mode.
        self.tracks_results = any(p.masking is not None for p in self.profiles.values())
        self.profile_for = profile_for
        self.catalogs = catalogs or NoCatalog()
        self.dialect = dialect
        # Errors of statements reading masked columns: PostgreSQL's fields, MySQL's message.
        self._scrub: MessageScrub = scrub_mysql_error if dialect == "mysql" else scrub_message
        self._exact: dict[tuple[Any, ...], _Verdict] = {}
        self._shape: dict[tuple[Any, ...], _Verdict] = {}
        self._normal: dict[tuple[Any, ...], _Verdict] = {}
        # (catalog, stale) in one call, when the source offers it: asked on every statement.
        self._snapshot: Callable[[str], tuple[Catalog | None, bool]] | None = getattr(
            self.catalogs, "snapshot", None)
        self._context_ids: dict[tuple[Any, ...], int] = {}

    # -- session set-up ---------------------------------------------------------------------

    def profile(self, session: SessionInfo) -> Profile:
        name = self.profile_for(session)
        try:
            return self.profiles[name]
        except KeyError:
            raise LookupError(f"profile {name!r} is not defined") from None

    def use_database(self, session: SessionInfo, database: str) -> None:
        """MySQL COM_INIT_DB: the current database changed outside any statement."""
        self._apply(_Verdict(None, (Setting("database", database),), False),
                    self._state(session), session)

    def session_parameters(self, params: Mapping[str, str],
                           session: SessionInfo) -> dict[str, str]:
        """The startup parameters to send upstream: the client's, checked, plus what the
        profile imposes (read-only transactions, a statement timeout)."""
        profile = self.profile(session)
        out: dict[str, str] = {}
        for key, value in params.items():
            k = key.lower()
            if k in ("user", "database"):
                out[key] = value
                continue
            if k == "options":
                for name, setting in _options(value):
                    self._startup_check(profile, name, setting)
                    if name == "search_path":
                        session.policy_state["startup_search_path"] = setting
                out[key] = value
                continue
            self._startup_check(profile, k, value)
            if k == "search_path":
                session.policy_state["startup_search_path"] = value
            out[key] = value
        if profile.read_only:
            out["default_transaction_read_only"] = "on"
        if profile.statement_timeout_ms:
            out["statement_timeout"] = str(profile.statement_timeout_ms)
        return out

    @staticmethod
    def _startup_check(profile: Profile, name: str, value: str) -> None:
        hazard = statements.setting_refusal(name, value)
        if hazard is not None:
            raise StartupRefused(Deny(
                "42501", f"wiregate: blocked by rule wiregate.startup: {hazard}",
                hint="Connect with the server's defaults for this setting.",
                rule="wiregate.startup"))
        if name in STARTUP_PARAMETERS and not (
                name == "statement_timeout" and profile.statement_timeout_ms):
            return
        raise StartupRefused(Deny(
            "42501", f"wiregate: blocked by rule wiregate.startup: startup parameter {name!r} "
            f"is not allowed under profile {profile.name}",
            hint="Set session parameters with SET after connecting; the guardrails judge them.",
            rule="wiregate.startup"))

    def _state(self, session: SessionInfo) -> _SessionState:
        state = session.policy_state.get("guard")
        if isinstance(state, _SessionState):
            return state
        profile = self.profile(session)
        start = session.policy_state.get("startup_search_path")
        if self.dialect == "mysql":
            # MySQL resolves unqualified names in the current database (COM_INIT_DB, USE):
            # the upstream's, not the route name the client connected with.
            database = session.upstream_database
            path: tuple[str, ...] = (database,) if database else ()
        else:
            if not (isinstance(start, str) and start):
                # The session starts with the upstream role's default path.
                catalog = self.catalogs.current(session.database)
                start = catalog.search_path if catalog is not None else '"$user", public'
            path = split_search_path(start)
        state = _SessionState(profile, Guardrails(profile), path,
                              session.upstream_user or session.user)
        self._rekey(state)
        session.policy_state["guard"] = state
        return state

    def notification_payload(self, session: SessionInfo) -> Callable[[str], str] | None:
        """A NOTIFY payload was written by whoever sent it (a trigger may put a whole row in
        it); its lineage is unknown, so a masking profile masks it by the default strategy.
        The channel and sender stay visible."""
        profile = self.profile(session)
        if profile.masking is None:
            return None
        strategy = replace(profile.masking.default,
                           key=self.mask_keys.get(profile.name, b""))

        def rewrite(payload: str) -> str:
            if not payload:
                return payload
            return strategy.mask_text(payload) or ""
        return rewrite

    def transaction_ended(self, session: SessionInfo) -> None:
        """The server is idle again after DDL was allowed (committed or rolled back): every
        worker re-reads the schema before it judges another statement."""
        if session.policy_state.pop("ddl_pending", None):
            self.catalogs.changed(session.database)

    def _rekey(self, state: _SessionState) -> None:
        """Cache keys carry a small int for (profile, search path, user): hashing it is free."""
        context = (state.profile.name, state.seen_path, state.user)
        state.key = self._context_ids.setdefault(context, len(self._context_ids))

    # -- the decision ---------------------------------------------------------------------------

    def decide(self, statement: Statement, session: SessionInfo) -> Decision:
        # The hot path: a read the cache has seen costs a few dictionary lookups.
        policy_state = session.policy_state
        state = policy_state.get("guard")
        if not isinstance(state, _SessionState):
            state = self._state(session)
        database = session.database
        retry = "catalog_retry" in policy_state
        if "ddl_pending" in policy_state and session.transaction_status == "I":
            self.transaction_ended(session)
        if self._snapshot is not None:
            catalog, stale = self._snapshot(database)
        else:
            catalog, stale = self.catalogs.current(database), self.catalogs.stale(database)
        if stale and not retry:
            return CATALOG_WAIT
        if statement.source == "function_call":
            ctx = Context(catalog, state.seen_path, state.user)
            return self._function_call(statement, state, ctx, session, retry)
        sql = statement.sql
        if "\x00" in sql:  # the server's C strings end there; the parsers' might not
            return to_deny(_unparseable("a NUL character inside the statement text"))
        version = catalog.version if catalog is not None else -1
        shape_key = None
        if _plain_text(sql) and (self.dialect == "postgres" or _mysql_plain(sql)):
            shape_key = (state.key, version, _NUMBERS.sub("?", sql))
            verdict = self._shape.get(shape_key)
            if verdict is _PLAIN_ALLOW:
                return ALLOW
            if verdict is not None and verdict.fixed is not None:
                return verdict.fixed
        exact_key = (state.key, version, sql)
        verdict = self._exact.get(exact_key)
        if verdict is None:
            verdict = self._judge(sql, state, Context(catalog, state.seen_path, state.user),
                                  exact_key, shape_key)
        if verdict is _PLAIN_ALLOW:
            return ALLOW
        if verdict.fixed is not None:
            return verdict.fixed
        return self._apply(verdict, state, session, retry, statement)

    def _judge(self, sql: str, state: _SessionState, ctx: Context,
               exact_key: tuple[Any, ...], shape_key: tuple[Any, ...] | None = None
               ) -> _Verdict:
        normal_key: tuple[Any, ...] | None = None
        if self.dialect == "postgres":
            try:
                normal = normalize(sql)
            except ParseError as exc:
                return _Verdict(_unparseable(str(exc)), (), False)
            normal_key = (exact_key[0], exact_key[1], normal)
            cached = self._normal.get(normal_key)
            if cached is not None:
                if shape_key is not None:
                    _remember(self._shape, shape_key, cached)
                # A text without constants (a parameterized statement) repeats: remember it
                # exactly. Texts that differ in constants only would just churn that cache.
                if normal == sql:
                    _remember(self._exact, exact_key, cached)
                return cached
        try:
            facts = self._analyze(sql, ctx.catalog)
        except Unparseable as exc:
            verdict = _Verdict(_unparseable(str(exc)), (), False)
            _remember(self._exact, exact_key, verdict)
            return verdict
        verdict = self.verdict(facts, state.guard, ctx)
        if verdict.refusal is None and state.profile.masking is not None:
            moved = self._moves_masked(facts, state.profile.masking, ctx)
            if moved is not None:
                verdict = _Verdict(moved, (), False)
        if verdict.refusal is None and state.profile.masking is not None:
            masked: Refusal | ResultTransform | None
            scrub: MessageScrub | None = None
            if self.dialect == "mysql":
                named = _mysql_named_op(facts)
                masked, scrub = self._mysql_masking(sql, facts, state, ctx, named)
            else:
                named = _named_op(sql, facts)
                masked = self._masking(sql, facts, state, ctx, named)
                if not isinstance(masked, Refusal) and self._touches_masked(
                        facts, state.profile.masking, ctx):
                    scrub = self._scrub
            if isinstance(masked, Refusal):
                verdict = _Verdict(masked, (), False)
            else:
                if named is not None:
                    verdict = replace(verdict, transform=masked, named=named[:2], scrub=scrub)
                elif masked is not None or scrub:
                    verdict = replace(verdict, transform=masked, scrub=scrub)
        _remember(self._exact, exact_key, verdict)
        if self.dialect == "mysql" and shape_key is not None and _shape_free(facts, verdict):
            _remember(self._shape, shape_key, verdict)
        if normal_key is not None and not any(f.literal_sensitive for f in facts):
            _remember(self._normal, normal_key, verdict)
            if shape_key is not None:
                _remember(self._shape, shape_key, verdict)
        return verdict

    def _analyze(self, sql: str, catalog: Catalog | None = None) -> list[Facts]:
        if self.dialect == "mysql":
            # Executable comments are read as the upstream server reads them.
            server, release = (catalog.server, catalog.server_version) if catalog is not None \
                else ("mariadb", (10, 11, 0))
            try:
                return mysql_statements.analyze(sql, server=server, version=release)
            except Unparseable:
                handler = _handler_facts(sql, server, release)
                if handler is None:
                    raise
                return handler
        return statements.analyze(sql)

    @staticmethod
    def verdict(facts: list[Facts], guard: Guardrails, ctx: Context) -> _Verdict:
        refusal = guard.check(facts, ctx)
        settings = tuple(s for f in facts for s in f.settings)
        changes = any(f.category in ("ddl", "create", "code") for f in facts)
        writes = any(f.writes or f.category not in ("read", "session", "transaction")
                     for f in facts)
        prepared = tuple(f.prepared for f in facts if f.prepared is not None)
        deallocated = tuple(n for f in facts for n in f.deallocated)
        if refusal is None and not settings and not changes and not writes \
                and not prepared and not deallocated:
            return _PLAIN_ALLOW
        return _Verdict(refusal, settings, changes, writes, prepared, deallocated)

    def _apply(self, verdict: _Verdict, state: _SessionState, session: SessionInfo,
               retry: bool = False, statement: Statement | None = None) -> Decision:
        if verdict.refusal is not None:
            if verdict.refusal.missing and not retry:
                return CATALOG_WAIT
            return to_deny(verdict.refusal)
        for name in verdict.deallocated:
            if name == "*":
                state.prepared_writes.clear()
            else:
                state.prepared_writes.pop(name, None)
        if state.prepared_writes and any(s.name in ("search_path", "database")
                                         for s in verdict.settings):
            refused = self._rejudge_prepared(verdict, state, session)
            if refused is not None:
                return refused
        if verdict.writes and statement is not None:
            for name in verdict.prepared:
                state.prepared_writes[name] = statement.sql
            if statement.source == "parse" and statement.name:
                state.prepared_writes[statement.name] = statement.sql
        for s in verdict.settings:
            if s.name == "search_path" or (s.name == "database" and self.dialect == "mysql"):
                if s.name == "database":
                    path: tuple[str, ...] = (s.value,) if s.value else ()
                else:
                    path = split_search_path(s.value or '"$user", public')
                # Resolution looks in every schema the session has named (fail closed: a SET
                # that later failed or was rolled back must not hide a protected table).
                state.seen_path = path + tuple(p for p in state.seen_path if p not in path)
                self._rekey(state)
        if verdict.changes_catalog:
            session.policy_state["ddl_pending"] = True
        if verdict.named is not None:
            return self._named(verdict, state)
        if verdict.scrub is not None:
            return Allow(verdict.transform, verdict.scrub)
        return Allow(verdict.transform) if verdict.transform is not None else ALLOW

    def _named(self, verdict: _Verdict, state: _SessionState) -> Decision:
        """Open, read or close a cursor or SQL-prepared statement under masking."""
        assert verdict.named is not None
        op, name = verdict.named
        named = state.named
        if op == "open":
            reopened = named.pop(name, None) is not None
            if reopened and name.startswith("handler:"):
                # HANDLER … OPEN of a name already open fails and leaves the first one open,
                # or succeeds on one the server closed unseen: which table a READ then reads
                # is not known, so its rows are masked whole until the name is closed.
                return Allow(None, verdict.scrub) if verdict.scrub else ALLOW
            if len(named) >= MAX_NAMED:
                named.pop(next(iter(named)))   # forgotten: read back masked whole
            named[name] = (verdict.transform, verdict.scrub)
            return Allow(None, verdict.scrub) if verdict.scrub else ALLOW
        if op == "close":
            if name.endswith(":*"):
                for key in [k for k in named if k.startswith(name[:-1])]:
                    del named[key]
            else:
                named.pop(name, None)
            return ALLOW
        if name in named:
            transform, scrub = named[name]
        else:
            transform, scrub = self._mask_all(state), self._scrub
        if scrub is not None:
            return Allow(transform, scrub)
        return Allow(transform) if transform is not None else ALLOW

    def _mask_all(self, state: _SessionState) -> MaskTransform:
        """Rows whose lineage is unknown: every column masked by the default strategy."""
        masking = state.profile.masking
        assert masking is not None
        key = self.mask_keys.get(state.profile.name, b"")
        return MaskTransform([], replace(masking.default, key=key))

    def _masking(self, sql: str, facts: list[Facts], state: _SessionState,
                 ctx: Context, named: tuple[str, str, str] | None = None
                 ) -> Refusal | MaskTransform | None:
        """How the rows this statement returns are masked: a transform from the lineage of a
        SELECT, a RETURNING list, or the query a cursor or SQL PREPARE names (applied at each
        FETCH or EXECUTE). Refused: copying masked values anywhere they would not be masked
        (another column, a new table, a setting, a notification, a file), COPY of masked
        columns (copy data is not rewritten) and several result sets in one string."""
        masking = state.profile.masking
        assert masking is not None
        catalog = ctx.catalog
        if catalog is None:
            return Refusal(MASKING_RULE, "masking", "the catalog is not available to trace "
                           "masked columns", missing=True)
        if named is not None and named[0] != "open":
            return None  # decided per session when the statement runs (_named)
        resolver = catalog.lineage_resolver(ctx.path())
        reads_masked = any(self._holds_masked(n, catalog, ctx, masking)
                           for f in facts for n in f.reads)
        try:
            found = sinks(sql, resolver)
        except (ParseError, ValueError):
            found = []

        def user(s: Source) -> bool:
            return user_function(Name(s.table or None, s.column), catalog, ctx)

        for sink in found:
            refusal = self._sink_refusal(sink, masking, user, reads_masked)
            if refusal is not None:
                return refusal
        query = named[2] if named is not None else sql
        kind = facts[0].kind if len(facts) == 1 else ""
        if (named is not None and query) or (named is None and kind in _ROW_KINDS):
            try:
                outputs = lineage(query, resolver)
            except (ParseError, ValueError):
                outputs = [Output("?", frozenset({UNRESOLVED}))]
            outputs = [through_calls(o, catalog, ctx) for o in outputs]
            if masking.on_unresolved == "refuse" and any(not o.resolved for o in outputs):
                return Refusal(MASKING_RULE, "masking", "the statement returns a column "
                               "whose source cannot be traced",
                               hint="Name the columns and tables you read.")
            key = self.mask_keys.get(state.profile.name, b"")
            transform = MaskTransform.for_outputs(outputs, masking, key)
            if kind == "CopyStmt" and transform is not None and any(transform.positions):
                masked = [o.name for o, p in zip(outputs, transform.positions, strict=True) if p]
                return Refusal(MASKING_RULE, "masking", "COPY would send masked columns ("
                               + ", ".join(masked) + ") unmasked: copy data is not rewritten",
                               hint="Leave the masked columns out of the COPY, or SELECT "
                                    "them: query results come back masked.")
            return None if kind == "CopyStmt" else transform
        touched = {n for f in facts for n in f.reads} | {w.target for f in facts
                                                          for w in f.writes}
        if not any(self._holds_masked(n, catalog, ctx, masking) for n in touched):
            return None
        kinds = {f.kind for f in facts}
        if kinds <= {"SelectStmt", "ExplainStmt", "UpdateStmt", "DeleteStmt", "InsertStmt",
                     "MergeStmt", "VariableShowStmt"} and not _returns_rows(sql, facts):
            return None
        return Refusal(MASKING_RULE, "masking", "rows holding masked columns would leave by "
                       "a path Wiregate does not mask (several statements in one string, or "
                       "a prepared statement that writes and returns rows)",
                       hint="Send one statement at a time; masked columns come back masked.")


    @staticmethod
    def _sink_refusal(sink: Sink, masking: MaskingPolicy, user: Callable[[Source], bool],
                      reads_masked: bool) -> Refusal | None:
        """A masked value stored or sent where it would be read back unmasked. A value that
        cannot be traced counts when the statement reads masked columns; what a user
        function returns (``user`` says which CALL marker is one) always counts (it may read
        them itself)."""
        masked = sorted(s for s in sink.sources if not is_marker(s)
                        and masking.strategy_for(s.schema, s.table, s.column) is not None)
        unknown = ANY_MASKED in sink.sources or (reads_masked and UNRESOLVED in sink.sources) \
            or any(user(s) for s in sink.sources if s.schema == CALL)
        if not masked and not unknown:
            return None
        target = sink.target
        if target is not None and not unknown:
            strategy = masking.strategy_for(target.schema, target.table, target.column)
            if strategy is not None and all(
                    masking.strategy_for(s.schema, s.table, s.column) == strategy
                    for s in masked):
                return None   # into a column masked the same way: it stays masked
        what = ", ".join(str(s) for s in masked) or "a value Wiregate cannot trace"
        if sink.kind == "create_table_as":
            where = "a new table"
        elif sink.kind in ("copy_file", "into_outfile", "into_dumpfile"):
            where = "a file"
        elif sink.kind in ("into_variable", "set_variable"):
            where = "a user variable"
        elif sink.kind == "error_channel":
            where = "an error message"
        elif sink.kind == "routine":
            where = "code Wiregate cannot see into"
        elif sink.kind.startswith("function:"):
            where = sink.kind.split(":", 1)[1] + "()"
        elif target is not None:
            where = f"column {target}"
        else:
            where = "a column that is not masked the same way"
        return Refusal(MASKING_RULE, "masking", f"the statement copies {what} into {where}, "
                       "where it would be read back unmasked",
                       hint="Masked columns may be filtered and joined on, not copied.")

    def _moves_masked(self, facts: list[Facts], masking: MaskingPolicy,
                      ctx: Context) -> Refusal | None:
        """DDL on a table holding masked columns (renaming it or a column, changing a column,
        adding a generated column over one) can move masked values to a name the policy does
        not list, where they would be read back unmasked. Dropping destroys, never moves."""
        catalog = ctx.catalog
        for f in facts:
            for call in f.calls:
                # A procedure that may write can copy masked columns anywhere; what it does
                # is not in the statement text.
                found = catalog.routines_named(call.name, ctx.path()) if catalog else []
                if call.procedure and not (found and all(r.read_only for r in found)):
                    return Refusal(MASKING_RULE, "masking", f"CALL of {call.name}, which may "
                                   "write, could copy masked columns where they would be "
                                   "read back unmasked", hint="Procedures that only read are "
                                   "allowed; ask for a read-only one.")
            if f.category != "ddl" or f.kind.startswith("Drop"):
                continue
            for kind, obj in f.objects:
                if kind not in ("table", "column", "view", "materialized view"):
                    continue
                if catalog is None or self._holds_masked(obj, catalog, ctx, masking):
                    return Refusal(MASKING_RULE, "masking", f"{kind_words(f.kind)} of {obj}, "
                                   "which holds masked columns, could move them out of the "
                                   "masking policy", hint="Schema changes to masked tables "
                                   "go through migrations, not through Wiregate.")
        return None

    def _touches_masked(self, facts: list[Facts], masking: MaskingPolicy | None,
                        ctx: Context) -> bool:
        """Whether the statement reads or writes a relation holding a masked column (without
        a catalog: assume it does)."""
        if masking is None:
            return False
        if ctx.catalog is None:
            return True
        catalog = ctx.catalog
        touched = {n for f in facts for n in f.reads} | {w.target for f in facts
                                                          for w in f.writes}
        holds = self._mysql_holds_masked if self.dialect == "mysql" else self._holds_masked
        return any(holds(n, catalog, ctx, masking) for n in touched)

    @staticmethod
    def _holds_masked(name: Name, catalog: Catalog, ctx: Context,
                      masking: MaskingPolicy) -> bool:
        found = catalog.relation_candidates(name, ctx.path())
        if not found:
            return True  # unknown: it may hold anything (fail closed)
        for rel in found:
            for base in catalog.base_tables(rel) | {rel.name}:
                info = catalog.relations.get(base)
                for col in info.columns if info else ():
                    if masking.strategy_for(base.schema or "", base.name, col) is not None:
                        return True
        return False

    # -- MySQL/MariaDB masking --------------------------------------------------------------

    def _mysql_masking(self, sql: str, facts: list[Facts], state: _SessionState,
                       ctx: Context, named: tuple[str, str, str] | None = None
                       ) -> tuple[Refusal | ResultTransform | None, MessageScrub | None]:
        """``_masking`` for MySQL text, on ``mysql_lineage``, with the scrub of its errors:
        the same refusals of sinks that carry masked or untraceable values (INSERT … SELECT,
        CREATE TABLE … SELECT, SELECT … INTO @v/OUTFILE, SET @v = …, @v := …,
        error-message functions, code), a transform for the rows of a statement, a SQL
        PREPARE (applied at each EXECUTE) or a HANDLER OPEN (at each READ), SHOW
        WARNINGS/ERRORS messages scrubbed, and a string of several statements refused when
        one of them returns masked columns."""
        masking = state.profile.masking
        assert masking is not None
        catalog = ctx.catalog
        if catalog is None:
            return Refusal(MASKING_RULE, "masking", "the catalog is not available to trace "
                           "masked columns", missing=True), None
        if named is not None and named[0] != "open":
            return None, None  # decided per session when the statement runs (_named)
        if any(kind == "code" for f in facts for kind, _ in f.refusals):
            return Refusal(MASKING_RULE, "masking", "a statement whose text is built at run "
                           "time cannot be traced for masked columns",
                           hint="Write the statement out as a string literal."), None
        path = ctx.path()
        database = path[0] if path else None
        # A USE inside a string of statements moves the names of the statements after it.
        used = [s.value for f in facts for s in f.settings if s.name == "database" and s.value]
        if used:
            ctx = Context(catalog, [*used, *path], ctx.user)

        def trace(text: str, db: str | None) -> list[tuple[list[Output], list[Sink]]]:
            return mysql_lineage.trace(text, catalog.mysql_lineage_resolver(db), catalog.server,
                                       catalog.server_version,
                                       lambda n: catalog.mysql_stored_function(n, db))

        try:
            if named is not None:
                traced = trace(sql, database)
                per = [outputs for outputs, _ in trace(named[2], database)]
            elif len(facts) == 1:
                traced = trace(sql, database)
                per = [outputs for outputs, _ in traced]
            else:
                traced, db = [], database
                for f in facts:
                    traced += trace(f.text, db)
                    db = next((s.value for s in f.settings if s.name == "database"
                               and s.value), db)
                per = [outputs for outputs, _ in traced]
        except Unparseable:
            # What lineage cannot read is refused when it may read, write or run anything;
            # the rest (LOCK TABLES, XA, …) moves no values.
            if any(f.category in ("read", "write", "code", "unknown") or f.reads or f.writes
                   or f.calls for f in facts):
                return Refusal(MASKING_RULE, "masking", "the statement cannot be traced for "
                               "masked columns", hint="Name the columns and tables you "
                               "read."), None
            traced, per = [], [[] for _ in facts]
        reads_masked = any(self._mysql_holds_masked(n, catalog, ctx, masking)
                           for f in facts for n in f.reads)
        for _, found in traced:
            for sink in found:   # every CALL marker mysql_lineage writes is a stored function
                refusal = self._sink_refusal(sink, masking, lambda s: True, reads_masked)
                if refusal is not None:
                    return refusal, None
        texts = [named[2]] if named is not None else [f.text for f in facts]
        if len(texts) != len(per):
            return Refusal(MASKING_RULE, "masking", "the statement cannot be traced for "
                           "masked columns"), None
        # Stored code may SIGNAL any value it reads: its messages are withheld whole.
        dbs: list[str | None] = [*ctx.path()] or [None]
        runs_code = any(f.category == "code" or any(
            c.procedure or catalog.mysql_stored_function(c.name, db)
            for c in f.calls for db in dbs) for f in facts) or any(
            o.calls for outputs in per for o in outputs) or any(
            s.schema == CALL for _, found in traced for sink in found for s in sink.sources)
        scrub: MessageScrub | None = withhold_mysql_error if runs_code else (
            scrub_mysql_error if self._touches_masked(facts, masking, ctx) else None)
        key = self.mask_keys.get(state.profile.name, b"")
        results = [self._mysql_rows(text, outputs, masking, key)
                   for text, outputs in zip(texts, per, strict=True)]
        for r in results:
            if isinstance(r, Refusal):
                return r, None
        if len(results) == 1:
            return results[0], scrub
        if any(isinstance(r, MessageColumn) or (isinstance(r, MaskTransform) and any(
                r.positions)) for r in results):
            return Refusal(MASKING_RULE, "masking", "a string of several statements returns "
                           "masked columns: their result sets cannot be told apart",
                           hint="Send one statement at a time; masked columns come back "
                                "masked."), None
        return (DetectText(masking.detectors) if masking.detectors else None), scrub

    @staticmethod
    def _mysql_rows(text: str, outputs: list[Output], masking: MaskingPolicy,
                    key: bytes) -> Refusal | ResultTransform | None:
        """The masking of one statement's rows. A stored function's result carries whatever
        the function reads: untraceable, as are SHOW outputs that print other statements or
        stored rows. Other rows without lineage (SHOW, EXPLAIN) get only the content
        detectors; SHOW WARNINGS/ERRORS messages quote values: scrubbed."""
        words = _mysql_words(text)
        if words[:1] == ["SHOW"] and {"WARNINGS", "ERRORS"} & set(words):
            return MessageColumn()
        if words[:1] == ["SHOW"] and _SHOW_ROWS & set(words):
            outputs = [Output("?", frozenset({UNRESOLVED}))]
        outputs = [Output(o.name, o.sources | {UNRESOLVED}) if o.calls else o for o in outputs]
        if not outputs:
            return DetectText(masking.detectors) if masking.detectors else None
        if masking.on_unresolved == "refuse" and any(not o.resolved for o in outputs):
            return Refusal(MASKING_RULE, "masking", "the statement returns a column "
                           "whose source cannot be traced",
                           hint="Name the columns and tables you read.")
        return MaskTransform.for_outputs(outputs, masking, key)

    @staticmethod
    def _mysql_holds_masked(name: Name, catalog: Catalog, ctx: Context,
                            masking: MaskingPolicy) -> bool:
        """Whether a relation may hold a masked column: an unqualified name in any database
        the session has used (the server's current one may not be the last USE the proxy
        saw), views through their lineage; unknown relations may hold anything."""
        if name.schema is None and name.name.lower() == "dual":
            return False
        found = False
        for db in [name.schema] if name.schema is not None else ctx.path():
            columns = catalog.mysql_lineage_resolver(db)(Name(db, name.name))
            if columns is None:
                continue
            found = True
            for _, sources in columns:
                for s in sources:
                    if s in (UNRESOLVED, ANY_MASKED) or s.schema == CALL or (
                            not is_marker(s)
                            and masking.strategy_for(s.schema, s.table, s.column) is not None):
                        return True
        return not found

    def _rejudge_prepared(self, verdict: _Verdict, state: _SessionState,
                          session: SessionInfo) -> Deny | None:
        """A prepared statement's names are resolved again by the server when it runs under
        a new search_path, and EXECUTE/Bind are not judged again: judge the kept statements
        that write under the new path now, and refuse the change if one would be refused."""
        if len(state.prepared_writes) > MAX_PREPARED_REJUDGE:
            return to_deny(Refusal(
                "wiregate.fail-closed", "session", "search_path cannot change while more "
                f"than {MAX_PREPARED_REJUDGE} prepared statements that write exist",
                hint="DEALLOCATE ALL (or DISCARD ALL) first."))
        path = state.seen_path
        for s in verdict.settings:
            if s.name == "database" and self.dialect == "mysql":
                new: tuple[str, ...] = (s.value,) if s.value else ()
            elif s.name == "search_path":
                new = split_search_path(s.value or '"$user", public')
            else:
                continue
            path = new + tuple(p for p in path if p not in new)
        ctx = Context(self.catalogs.current(session.database), path, state.user)
        for name, sql in sorted(state.prepared_writes.items()):
            try:
                refusal = state.guard.check(self._analyze(sql, ctx.catalog), ctx)
            except Unparseable:
                continue   # was judged parseable once; a changed grammar is not our case
            if refusal is not None:
                return to_deny(Refusal(
                    refusal.rule, refusal.kind, f"search_path cannot change: prepared "
                    f"statement {name} would then be refused ({refusal.reason})",
                    detail=refusal.detail, hint="DEALLOCATE it first, or qualify names "
                    "with their schema."))
        return None

    def _function_call(self, statement: Statement, state: _SessionState, ctx: Context,
                       session: SessionInfo, retry: bool) -> Decision:
        routine = ctx.catalog.routine_by_oid(statement.function_oid or 0) \
            if ctx.catalog is not None else None
        if routine is None:
            if not retry:
                return CATALOG_WAIT
            return to_deny(Refusal("wiregate.catalog", "code",
                                   f"function oid {statement.function_oid} is not in the "
                                   "catalog", hint="Call functions from SQL instead."))
        name = routine.name.name.lower()
        files = (f"{routine.name}()",) if name in statements.FILE_FUNCTIONS \
            or name.startswith("dblink") else ()
        facts = Facts(kind="FunctionCall", category="read", text="",
                      calls=(Call(routine.name),), file_access=files)
        return self._apply(self.verdict([facts], state.guard, ctx), state, session, retry)


# -- MySQL statements the masking follows by name ---------------------------------------------


class _MySQLTokenizer(MySQL.Tokenizer):
    """sqlglot folds PREPARE/EXECUTE/… into one opaque token; their names are needed here."""

    COMMANDS: ClassVar[set[TokenType]] = set()


_MYSQL = MySQL()
# SHOW outputs holding statement texts (with the values they were sent with) or dumps of
# locked rows: SHOW [FULL] PROCESSLIST, SHOW ENGINE INNODB STATUS, SHOW BINLOG/RELAYLOG
# EVENTS, MariaDB's SHOW EXPLAIN/ANALYZE FOR <thread>.
_SHOW_ROWS = frozenset({"PROCESSLIST", "ENGINE", "BINLOG", "RELAYLOG", "EXPLAIN", "ANALYZE"})
_NAME_TOKENS = frozenset({TokenType.VAR, TokenType.IDENTIFIER})


def _mysql_tokens(text: str) -> list[Token]:
    try:
        tokens = list(_MySQLTokenizer(dialect=_MYSQL).tokenize(text))
    except TokenError:
        return []
    while tokens and tokens[-1].token_type == TokenType.SEMICOLON:
        tokens.pop()
    return tokens


def _mysql_words(text: str) -> list[str]:
    """The statement's keywords and names in upper case, strings and comments left out."""
    return [t.text.upper() for t in _mysql_tokens(text) if t.token_type != TokenType.STRING]


def _is_name(tok: Token) -> bool:
    """A name, or a keyword MySQL lets stand as one (``status``, ``first``)."""
    return tok.token_type in _NAME_TOKENS or (
        tok.token_type != TokenType.STRING and tok.text.replace("_", "").isalnum()
        and not tok.text[0].isdigit())


def _name_at(tokens: list[Token], i: int) -> tuple[Name | None, int]:
    """``db.t`` or ``t`` at ``i``, and the index past it."""
    if i >= len(tokens) or not _is_name(tokens[i]):
        return None, i
    if i + 2 < len(tokens) and tokens[i + 1].token_type == TokenType.DOT \
            and _is_name(tokens[i + 2]):
        return Name(tokens[i].text, tokens[i + 2].text), i + 3
    return Name(None, tokens[i].text), i + 1


def _quoted(name: Name) -> str:
    parts = [name.schema, name.name] if name.schema is not None else [name.name]
    return ".".join("`" + p.replace("`", "``") + "`" for p in parts)


# Tokens a parenthesis may follow in a HANDLER … READ without calling a function.
_OPENS = frozenset({TokenType.EQ, TokenType.NEQ, TokenType.LT, TokenType.LTE, TokenType.GT,
                    TokenType.GTE, TokenType.L_PAREN, TokenType.COMMA, TokenType.AND,
                    TokenType.OR, TokenType.NOT, TokenType.IN, TokenType.WHERE})
_NOT_IN_HANDLER = frozenset({TokenType.PARAMETER, TokenType.SESSION_PARAMETER,
                             TokenType.COLON_EQ, TokenType.SELECT, TokenType.SEMICOLON})


def _handler_facts(sql: str, server: str, release: tuple[int, int, int]) -> list[Facts] | None:
    """Facts of a HANDLER statement, which the statement analysis does not read: OPEN reads
    its table; READ and CLOSE name a handler the session opened. A READ's key values and
    WHERE condition may only filter (no function calls, subqueries or variables: nothing
    there can print or store a value). None for anything else (refused as unparseable)."""
    try:
        text = mysql_statements.expand_executable_comments(sql, server=server, version=release)
    except Unparseable:
        return None
    tokens = _mysql_tokens(text)
    if not tokens or tokens[0].text.upper() != "HANDLER" or any(
            t.token_type == TokenType.SEMICOLON for t in tokens):
        return None
    name, at = _name_at(tokens, 1)
    if name is None or at >= len(tokens):
        return None
    verb, rest = tokens[at].text.upper(), tokens[at + 1:]
    text = text.strip().rstrip(";").strip()
    if verb == "OPEN":
        if rest and rest[0].text.upper() == "AS":
            rest = rest[1:]
        if len(rest) > 1 or (rest and not _is_name(rest[0])):
            return None
        return [Facts("HandlerOpen", "read", text, reads=frozenset({name}))]
    if name.schema is not None:
        return None
    if verb == "CLOSE" and not rest:
        return [Facts("HandlerClose", "read", text)]
    if verb != "READ" or not rest:
        return None
    for prev, tok in zip([None, *rest], rest, strict=False):
        if tok.token_type in _NOT_IN_HANDLER or (
                tok.token_type == TokenType.L_PAREN and prev is not None
                and prev.token_type not in _OPENS):
            return None
    return [Facts("HandlerRead", "read", text)]


def _mysql_named_op(facts: list[Facts]) -> tuple[str, str, str] | None:
    """``_named_op`` for MySQL: SQL PREPARE/EXECUTE/DEALLOCATE PREPARE (names compare
    case-insensitively) and HANDLER OPEN/READ/CLOSE (the handler is the alias, or the table
    name without its database; compared exactly). A PREPARE opens with the text it holds; a
    HANDLER OPEN with a READ of its table. A PREPARE of text built at run time forgets the
    name (its EXECUTE is masked whole); the masking refuses it anyway."""
    if len(facts) != 1:
        return None
    kind = facts[0].kind
    tokens = _mysql_tokens(facts[0].text)
    if tokens and tokens[0].text.upper() == "HANDLER":   # whoever classified it
        verb = next((t.text.upper() for t in tokens[2:5] if t.text.upper() in (
            "OPEN", "READ", "CLOSE") and t.token_type != TokenType.IDENTIFIER), "")
        kind = {"OPEN": "HandlerOpen", "READ": "HandlerRead", "CLOSE": "HandlerClose"}.get(
            verb, "")
        if not kind:
            return None
    elif kind not in ("Prepare", "Execute", "Deallocate"):
        return None
    if kind == "Prepare":
        if len(tokens) < 4 or not _is_name(tokens[1]) or tokens[2].text.upper() != "FROM":
            return None
        name = f"prepared:{tokens[1].text.lower()}"
        literal = tokens[3:]
        if all(t.token_type == TokenType.STRING for t in literal):
            return "open", name, "".join(t.text for t in literal)
        return "close", name, ""
    if kind == "Execute":
        return ("read", f"prepared:{tokens[1].text.lower()}", "") \
            if len(tokens) >= 2 and _is_name(tokens[1]) else None
    if kind == "Deallocate":
        return ("close", f"prepared:{tokens[2].text.lower()}", "") \
            if len(tokens) == 3 and _is_name(tokens[2]) else None
    table, at = _name_at(tokens, 1)
    if table is None:
        return None
    if kind == "HandlerOpen":
        rest = [t for t in tokens[at + 1:] if t.text.upper() != "AS"]
        alias = rest[0].text if rest else table.name
        return "open", f"handler:{alias}", f"HANDLER {_quoted(table)} READ FIRST"
    return ("read" if kind == "HandlerRead" else "close"), f"handler:{table.name}", ""


# The shape cache: a text with no quotes, dollar signs, comments, backslashes or minus signs
# holds no strings, quoted identifiers, parameters or comments, so its standalone digit runs
# are numeric constants (or counts such as FETCH 5). Replacing them finds the verdict of a
# literal-insensitive statement of the same shape with a C-speed regex instead of a parse; only
# verdicts that cannot depend on a constant are stored there (see ``Facts.literal_sensitive``).
# ASCII only, so that the regex's ASCII word boundaries are exactly SQL's: a digit run after a
# non-ASCII letter belongs to an identifier, and such texts never take this path.
_NUMBERS = re.compile(r"(?a)\b\d+\b")


def _mysql_plain(sql: str) -> bool:
    """MySQL also comments with #, quotes identifiers with backticks (`1` is a name) and
    names variables with @: texts with those take no shape."""
    return not ("#" in sql or "`" in sql or "@" in sql)


def _shape_free(facts: list[Facts], verdict: _Verdict) -> bool:
    """A MySQL verdict other texts of the same shape may share: allowed plain reads, with no
    setting, no literal that decides it, no named statement. (For PostgreSQL the normalized
    parse tree decides this.)"""
    return verdict.refusal is None and verdict.named is None and all(
        f.category == "read" and not f.settings and not f.literal_sensitive
        and f.prepared is None and not f.deallocated for f in facts)


def _plain_text(sql: str) -> bool:
    return sql.isascii() and not ("'" in sql or '"' in sql or "$" in sql or "-" in sql
                                  or "/" in sql or "\\" in sql or "&" in sql)


def to_deny(refusal: Refusal) -> Deny:
    return Deny("42501", refusal.message, hint=refusal.hint, detail=refusal.detail,
                rule=refusal.rule)


def _unparseable(message: str) -> Refusal:
    return Refusal(PARSE_RULE, "parse", f"the statement cannot be parsed ({message})",
                   hint="Wiregate refuses what it cannot parse (fail closed).")


def _remember(cache: dict[tuple[Any, ...], _Verdict], key: tuple[Any, ...],
              verdict: _Verdict) -> None:
    if len(cache) >= CACHE_SIZE:
        cache.clear()
    cache[key] = verdict


def split_search_path(value: str) -> tuple[str, ...]:
    out = []
    for part in value.split(","):
        p = part.strip()
        if len(p) >= 2 and p[0] == '"' and p[-1] == '"':
            p = p[1:-1].replace('""', '"')
        else:
            p = p.lower()
        if p:
            out.append(p)
    return tuple(out)


def _options(value: str) -> list[tuple[str, str]]:
    """``-c name=value`` and ``--name=value`` pairs of a libpq ``options`` string."""
    tokens: list[str] = []
    current = ""
    escaped = False
    for ch in value:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if current:
                tokens.append(current)
            current = ""
        else:
            current += ch
    if current:
        tokens.append(current)
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "-c" and i + 1 < len(tokens):
            tok = tokens[i + 1]
            i += 1
        elif tok.startswith("-c"):
            tok = tok[2:]
        elif tok.startswith("--"):
            tok = tok[2:]
        else:
            out.append((tok.lower(), ""))   # an unknown switch: refused by name
            i += 1
            continue
        name, _, setting = tok.partition("=")
        out.append((name.lower().replace("-", "_"), setting))
        i += 1
    return out


# MySQL/MariaDB error numbers for refusals: 1064 ER_PARSE_ERROR for what cannot be parsed,
# 1227 ER_SPECIFIC_ACCESS_DENIED_ERROR for a kind of operation the profile refuses, 1142
# ER_TABLEACCESS_DENIED_ERROR for a refused write to a table.
_MYSQL_TABLE_KINDS = frozenset({"unbounded_write", "protected_tables", "tables", "schemas"})


def mysql_error(refusal: Refusal) -> tuple[int, str, str]:
    """(error number, SQLSTATE, message) of a refusal as a MySQL ERR packet carries it."""
    if refusal.kind == "parse":
        return 1064, "42000", refusal.message
    if refusal.kind in _MYSQL_TABLE_KINDS:
        return 1142, "42000", refusal.message
    return 1227, "42000", refusal.message

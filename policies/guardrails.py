"""Guardrails: profiles of rules, judged on statement facts and catalog facts.

A profile is a list of rules, each with an id and a kind; every refusal names the rule that
made it. The rules see ``Facts`` (from the PostgreSQL or the MySQL analysis) and resolve names
through a ``Catalog`` and the session's search path. Whatever cannot be resolved is refused:
a missing catalog fact never turns into an allow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policies.catalog import Catalog
from policies.facts import Call, Facts, Name, Write, kind_words
from policies.masking import MaskingConfigError, MaskingPolicy, parse_masking

RULE_KINDS = ("ddl", "unbounded_write", "protected_tables", "multi_statement", "file_access",
              "privileges", "code", "read_only", "functions", "schemas", "tables")
CREATE_KINDS = ("table", "index", "view", "sequence", "schema", "type", "materialized_view",
                "statistics", "database")

# Volatile built-ins that change nothing but the session's own state (or nothing at all).
HARMLESS_VOLATILE = frozenset({
    "random", "random_normal", "setseed", "clock_timestamp", "timeofday", "gen_random_uuid",
    "uuid_generate_v1", "uuid_generate_v4", "nextval", "currval", "lastval", "set_config",
    "pg_sleep", "pg_sleep_for", "pg_sleep_until", "txid_current", "pg_current_xact_id",
    "txid_current_if_assigned", "pg_current_xact_id_if_assigned", "pg_advisory_lock",
    "pg_advisory_lock_shared", "pg_advisory_unlock", "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all", "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared",
    "pg_try_advisory_lock", "pg_try_advisory_lock_shared", "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared", "pg_notify", "pg_stat_clear_snapshot",
    "pg_backend_pid", "pg_jit_available", "uuid", "rand", "uuid_short", "sleep", "now",
    "sysdate", "found_rows", "row_count", "last_insert_id", "connection_id", "get_lock",
    "release_lock", "is_free_lock", "is_used_lock", "release_all_locks",
    # Volatile only because they read state that changes under the snapshot: sizes, WAL
    # positions, locks, partition trees. psql's verbose meta-commands call several of them.
    "pg_database_size", "pg_indexes_size", "pg_relation_size", "pg_table_size",
    "pg_total_relation_size", "pg_tablespace_size", "pg_partition_ancestors",
    "pg_partition_tree", "pg_is_in_recovery", "pg_blocking_pids",
    "pg_safe_snapshot_blocking_pids", "pg_lock_status", "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn", "pg_current_wal_flush_lsn", "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn", "pg_last_xact_replay_timestamp", "pg_is_wal_replay_paused",
    "pg_get_wal_replay_pause_state", "pg_notification_queue_usage", "pg_stat_have_stats",
    "pg_sequence_last_value", "pg_xact_commit_timestamp", "pg_xact_status", "txid_status",
    "pg_last_committed_xact", "pg_collation_actual_version",
    "pg_database_collation_actual_version", "pg_stat_get_xact_blocks_fetched",
    "pg_stat_get_xact_blocks_hit", "pg_stat_get_xact_function_calls",
    "pg_stat_get_xact_function_self_time", "pg_stat_get_xact_function_total_time",
    "pg_stat_get_xact_numscans", "pg_stat_get_xact_tuples_deleted",
    "pg_stat_get_xact_tuples_fetched", "pg_stat_get_xact_tuples_hot_updated",
    "pg_stat_get_xact_tuples_inserted", "pg_stat_get_xact_tuples_returned",
    "pg_stat_get_xact_tuples_updated", "lo_get", "lo_open", "loread", "lo_close", "lo_lseek",
    "lo_lseek64", "lo_tell", "lo_tell64", "pg_export_snapshot", "pg_control_system",
    "pg_control_checkpoint", "pg_control_init", "pg_control_recovery",
    "pg_get_wal_resource_managers",
})
# Built-ins that run SQL given as text: whatever that text writes, they write.
SQL_TEXT_FUNCTIONS = frozenset({
    "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml",
    "cursor_to_xmlschema", "ts_stat", "ts_rewrite",
})
# DDL object kinds that name a relation holding (or being) the data itself.
_RELATION_OBJECTS = frozenset({"table", "object", "foreign_table", "materialized_view",
                               "matview", "column", "tabconstraint", "sequence"})
# Settings a read-only profile keeps to itself: changing them would undo the protection.
# The profile's statement time limit, as each server names it (MariaDB's max_statement_time,
# MySQL's max_execution_time).
TIMEOUT_SETTINGS = frozenset({"statement_timeout", "max_statement_time", "max_execution_time"})
READ_ONLY_SETTINGS = frozenset({
    "default_transaction_read_only", "transaction_read_only", "session_replication_role",
    "tx_read_only", "default_transaction_isolation_read_only",
})


class PolicyError(ValueError):
    """A policy file problem, naming the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Pattern:
    """``schema.name``, ``schema.*`` or ``name`` (any schema)."""

    schema: str | None
    name: str

    @classmethod
    def parse(cls, text: str, key: str) -> Pattern:
        parts = text.split(".")
        if len(parts) > 2 or not all(parts):
            raise PolicyError(key, f"{text!r} is not a name, schema.name or schema.*")
        return cls(parts[0], parts[1]) if len(parts) == 2 else cls(None, parts[0])

    def matches(self, name: Name) -> bool:
        if self.schema is not None and name.schema is not None and self.schema != name.schema:
            return False
        if self.schema is not None and name.schema is None:
            return False
        return self.name == "*" or self.name == name.name

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str
    allow_create: frozenset[str] = frozenset()
    allow_maintenance: bool = False
    refuse_all: bool = False
    tables: tuple[Pattern, ...] = ()
    allow: tuple[Pattern, ...] = ()
    deny: tuple[Pattern, ...] = ()
    hint: str | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    rules: tuple[Rule, ...]
    read_only: bool = False
    statement_timeout_ms: int | None = None
    description: str = ""
    masking: MaskingPolicy | None = None

    def of(self, kind: str) -> list[Rule]:
        return [r for r in self.rules if r.kind == kind]

    def first(self, kind: str) -> Rule | None:
        got = self.of(kind)
        return got[0] if got else None


@dataclass(frozen=True)
class Refusal:
    """Why a statement is refused. ``kind`` lets a wire protocol pick its error code."""

    rule: str
    kind: str
    reason: str
    detail: str | None = None
    hint: str | None = None
    missing: bool = False   # refused for a fact the catalog lacks: a fresher one may decide

    @property
    def message(self) -> str:
        return f"wiregate: blocked by rule {self.rule}: {self.reason}"


@dataclass
class Context:
    """What the rules need to know about the session besides the statement."""

    catalog: Catalog | None
    search_path: Sequence[str] = ("public",)
    user: str = ""

    def path(self) -> list[str]:
        return [self.user if s == "$user" else s for s in self.search_path]


FAIL_CLOSED = "wiregate.fail-closed"
UNCLASSIFIED = "wiregate.unclassified"
CATALOG = "wiregate.catalog"


class Guardrails:
    """One profile's judgement. ``check`` returns the first refusal, or None to allow."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile

    def check(self, statements: Sequence[Facts], ctx: Context) -> Refusal | None:
        multi = self.profile.first("multi_statement")
        if multi is not None and multi.refuse_all and len(statements) > 1:
            return Refusal(multi.id, "multi_statement",
                           f"a string of {len(statements)} statements is refused",
                           hint=multi.hint or "Send one statement per query.")
        for i, facts in enumerate(statements):
            refusal = self._statement(facts, ctx)
            if refusal is not None:
                if len(statements) > 1:
                    detail = f"statement {i + 1} of {len(statements)}: {facts.text[:200]}"
                    if refusal.detail:
                        detail = f"{refusal.detail}; {detail}"
                    return Refusal(refusal.rule, refusal.kind, refusal.reason
                                   + " (the whole string is refused)", detail, refusal.hint)
                return refusal
        return None

    # -- one statement ------------------------------------------------------------------------

    def _statement(self, f: Facts, ctx: Context) -> Refusal | None:
        p = self.profile
        for kind, reason in f.refusals:
            rule = p.first(kind)
            return Refusal(rule.id if rule else FAIL_CLOSED, kind, reason,
                           hint="Send the statement text itself, not text built at run time.")
        if f.category == "unknown":
            return Refusal(UNCLASSIFIED, "unclassified",
                           f"{f.kind} is not a statement Wiregate knows how to judge",
                           hint="Wiregate refuses what it cannot classify (fail closed).")
        checks = (self._file_access, self._privileges, self._code, self._read_only, self._ddl,
                  self._writes, self._calls, self._lists)
        for check in checks:
            refusal = check(f, ctx)
            if refusal is not None:
                return refusal
        return None

    def _file_access(self, f: Facts, ctx: Context) -> Refusal | None:
        rule = self.profile.first("file_access")
        if rule and f.file_access:
            return Refusal(rule.id, "file_access", f"{f.file_access[0]}: server-side file, "
                           "program and network access is not allowed",
                           hint=rule.hint or "Read data with COPY … TO STDOUT or a SELECT.")
        return None

    def _privileges(self, f: Facts, ctx: Context) -> Refusal | None:
        rule = self.profile.first("privileges")
        if rule and (f.privilege or f.category == "privilege"):
            what = f.privilege[0] if f.privilege else f.kind
            return Refusal(rule.id, "privileges", f"{what}: privilege changes are not allowed",
                           hint=rule.hint or "Ask a database administrator.")
        return None

    def _code(self, f: Facts, ctx: Context) -> Refusal | None:
        rule = self.profile.first("code")
        if rule and (f.code or f.category == "code"):
            what = f.code[0] if f.code else f.kind
            name = f" {f.objects[0][1]}" if f.objects else ""
            return Refusal(rule.id, "code", f"{what}{name}: stored or anonymous code is refused",
                           hint=rule.hint or "Send plain SQL statements instead.")
        return None

    def _read_only(self, f: Facts, ctx: Context) -> Refusal | None:
        rule = self.profile.first("read_only")
        if rule is None:
            return None
        hint = rule.hint or "This profile allows reads only."
        if f.writes:
            w = f.writes[0]
            return Refusal(rule.id, "read_only", f"{w.op.upper()} is a write",
                           detail=f"target: {w.target}", hint=hint)
        if f.category not in ("read", "session", "transaction"):
            return Refusal(rule.id, "read_only", f"{f.kind} is not a read", hint=hint)
        if f.read_write:
            return Refusal(rule.id, "read_only", "a read-write transaction was requested",
                           hint=hint)
        for s in f.settings:
            if s.name in ("transaction_read_only", "default_transaction_read_only") \
                    and _truthy(s.value):
                continue  # BEGIN READ ONLY, SET TRANSACTION READ ONLY: asks for what we impose
            if s.name in READ_ONLY_SETTINGS or (s.name in TIMEOUT_SETTINGS
                                                and self.profile.statement_timeout_ms):
                return Refusal(rule.id, "read_only", f"changing {s.name} is not allowed",
                               detail="the profile sets it for the session", hint=hint)
        return None

    def _ddl(self, f: Facts, ctx: Context) -> Refusal | None:
        rule = self.profile.first("ddl")
        if rule is None:
            return None
        obj = ", ".join(f"{k} {n}" for k, n in f.objects[:3]) or None
        if f.category == "ddl":
            return Refusal(rule.id, "ddl", f"{kind_words(f.kind)} is not allowed",
                           detail=f"object: {obj}" if obj else None,
                           hint=rule.hint or _create_hint(rule))
        if f.category == "admin" and not rule.allow_maintenance:
            return Refusal(rule.id, "ddl",
                           f"{kind_words(f.kind)} (server administration) is not allowed",
                           hint=rule.hint or "Ask a database administrator.")
        if f.category == "create":
            kind = f.create_kind or "object"
            if f.or_replace and self._exists(f, ctx) is not False:
                return Refusal(rule.id, "ddl",
                               f"CREATE OR REPLACE {kind.upper()} of an existing object is an "
                               "ALTER and is not allowed", detail=f"object: {obj}",
                               hint=rule.hint or "Create it under a new name.")
            if kind not in rule.allow_create:
                return Refusal(rule.id, "ddl", f"CREATE {kind.upper()} is not allowed",
                               detail=f"object: {obj}" if obj else None,
                               hint=rule.hint or _create_hint(rule))
        return None

    @staticmethod
    def _exists(f: Facts, ctx: Context) -> bool | None:
        if ctx.catalog is None or not ctx.catalog.loaded:
            return None
        return any(ctx.catalog.relation_candidates(n, ctx.path()) for _, n in f.objects)

    def _writes(self, f: Facts, ctx: Context) -> Refusal | None:
        unbounded = self.profile.first("unbounded_write")
        protected = self.profile.of("protected_tables")
        for w in f.writes:
            if unbounded and w.unbounded and w.op in ("update", "delete", "merge"):
                return Refusal(unbounded.id, "unbounded_write",
                               f"{w.op.upper()} on {w.target} may touch every row: {w.unbounded}",
                               detail=f"target: {w.target}",
                               hint=unbounded.hint or "Add a WHERE clause on the target's "
                               "columns that selects the rows to change.")
            for rule in protected:
                refusal = self._protected(rule, w, ctx)
                if refusal is not None:
                    return refusal
        # CREATE OR REPLACE of an existing table drops it first (MariaDB's CREATE OR REPLACE
        # TABLE): judged like the DROP it is.
        if f.category == "ddl" or (f.category == "create" and f.or_replace):
            for rule in protected:
                refusal = self._protected_ddl(rule, f, ctx)
                if refusal is not None:
                    return refusal
        return None

    def _protected_ddl(self, rule: Rule, f: Facts, ctx: Context) -> Refusal | None:
        """DROP, ALTER, RENAME of a protected table (or its schema) destroys or unprotects it,
        whatever the profile says about DDL in general."""
        hint = rule.hint or "Protected tables are changed through migrations only."
        for kind, obj in f.objects:
            if kind in ("schema", "database"):    # MySQL: DROP DATABASE/SCHEMA
                inside = [n for n in (ctx.catalog.relations if ctx.catalog else ())
                          if n.schema == obj.name]
                for pattern in rule.tables:
                    if pattern.schema == obj.name or any(pattern.matches(n) for n in inside):
                        return Refusal(rule.id, "protected_tables",
                                       f"{kind_words(f.kind)} of schema {obj.name} holding "
                                       "protected tables", detail=f"protected: {pattern}",
                                       hint=hint)
                continue
            if kind not in _RELATION_OBJECTS:
                continue
            names, _ = self._bases(obj, ctx, views=False)
            for name in names | {obj}:
                for pattern in rule.tables:
                    if pattern.matches(name):
                        return Refusal(rule.id, "protected_tables",
                                       f"{kind_words(f.kind)} of protected table {name}",
                                       detail=f"protected: {pattern}", hint=hint)
        return None

    def _protected(self, rule: Rule, w: Write, ctx: Context) -> Refusal | None:
        hint = rule.hint or "Reads of this table are allowed; writes need another profile."
        bases, unresolved = self._bases(w.target, ctx)
        for base in bases:
            for pattern in rule.tables:
                if pattern.matches(base):
                    direct = base == w.target or (w.target.schema is None
                                                  and base.name == w.target.name)
                    via = "" if direct else f" (through {w.target})"
                    return Refusal(rule.id, "protected_tables",
                                   f"{w.op.upper()} on protected table {base}{via}",
                                   detail=f"protected: {pattern}", hint=hint)
        if unresolved:
            return Refusal(rule.id, "protected_tables",
                           f"cannot tell whether {w.target} is protected: {unresolved}",
                           detail=f"target: {w.target}",
                           hint="Wiregate refuses writes it cannot resolve (fail closed).",
                           missing=True)
        return None

    def _bases(self, name: Name, ctx: Context, views: bool = True
               ) -> tuple[set[Name], str | None]:
        """The tables a name may finally denote (through views, and the partitions and
        inheritance relatives that share their rows), and why that is uncertain (if it is)."""
        cat = ctx.catalog
        if cat is None or not cat.loaded:
            return {name}, "the catalog is not available"
        found = cat.relation_candidates(name, ctx.path())
        if not found:
            return {name}, "it is not in the catalog"
        out: set[Name] = set()
        for rel in found:
            out |= cat.base_tables(rel) if views else {rel.name}
        for n in list(out):
            out |= cat.family(n)
        unresolved = [b for b in out if b not in cat.relations]
        return out, (f"{unresolved[0]} is not in the catalog" if unresolved else None)

    def _calls(self, f: Facts, ctx: Context) -> Refusal | None:
        functions = self.profile.of("functions")
        code = self.profile.first("code")
        ro = self.profile.first("read_only")
        # A routine that may write could write a protected table: with protected tables and no
        # code rule, such calls are judged under the protected-tables rule (fail closed).
        guard = code or ro or self.profile.first("protected_tables")
        allowed: list[Pattern] = [p for r in functions for p in r.allow]
        if code:
            allowed += code.allow
        cat = ctx.catalog
        for call in f.calls:
            if call.attribute and (cat is None or not cat.loaded
                                   or not cat.routines_named(call.name, ctx.path())):
                continue  # row.name with no routine of that name: a column
            names = self._routine_names(call.name, ctx) if functions else []
            for rule in functions:
                if any(p.matches(n) for p in rule.deny for n in names):
                    return Refusal(rule.id, "functions", f"{call.name}() is not allowed",
                                   hint=rule.hint)
            if guard is None:
                continue
            refusal = self._routine(call, ctx, guard, allowed)
            if refusal is not None:
                return refusal
        return None

    @staticmethod
    def _routine_names(name: Name, ctx: Context) -> list[Name]:
        """The names a call may denote, for deny-lists: as written, and qualified through the
        catalog, or through every schema on the path when the catalog cannot say (fail
        closed: ``bump()`` must not slip past a deny of ``public.bump``)."""
        out = [name, Name(None, name.name)]
        if name.schema is not None:
            return out
        cat = ctx.catalog
        found = cat.routines_named(name, ctx.path()) if cat is not None and cat.loaded else []
        if found:
            return out + [r.name for r in found]
        return out + [Name(s, name.name) for s in Catalog.effective_path(ctx.path())]

    def _routine(self, call: Call, ctx: Context, rule: Rule,
                 allowed: Sequence[Pattern]) -> Refusal | None:
        if any(p.matches(call.name) for p in allowed):
            return None
        cat = ctx.catalog
        base = call.name.name.lower()
        if call.name.schema in (None, "pg_catalog") and base in HARMLESS_VOLATILE \
                and not call.procedure:
            # Only the built-in: a public.random() earlier on the path is judged like any other.
            shadows = cat.routines_named(call.name, ctx.path()) \
                if cat is not None and cat.loaded else []
            if all(r.name.schema == "pg_catalog" for r in shadows):
                return None
        if cat is None or not cat.loaded:
            return Refusal(rule.id, rule.kind, f"{call.name}() cannot be classified: "
                           "the catalog is not available",
                           hint="Wiregate refuses calls it cannot classify (fail closed).",
                           missing=True)
        found = cat.routines_named(call.name, ctx.path())
        if not found and call.builtin:
            return None    # MySQL's own function (see Call.builtin)
        if not found:
            return Refusal(CATALOG, rule.kind, f"{call.name}() is not in the catalog",
                           detail="a routine Wiregate cannot classify is refused",
                           hint="Ask for the routine to be allow-listed.", missing=True)
        resolved = Name(found[0].name.schema, found[0].name.name)
        if any(p.matches(resolved) for p in allowed):
            return None
        if all(r.read_only for r in found):
            return None
        if rule.kind == "protected_tables" and base not in SQL_TEXT_FUNCTIONS \
                and all(r.name.schema == "pg_catalog" for r in found):
            return None  # built-ins write no tables, except those that run SQL text
        what = "procedure" if call.procedure or any(r.kind == "p" for r in found) \
            else "function"
        return Refusal(rule.id, rule.kind, f"{what} {resolved}() may write "
                       "(it is not declared STABLE or IMMUTABLE)",
                       detail=f"routine: {resolved}",
                       hint=rule.hint or "Read-only routines are allowed; ask for this one to "
                       "be allow-listed.")

    def _lists(self, f: Facts, ctx: Context) -> Refusal | None:
        tables = self.profile.of("tables")
        schemas = self.profile.of("schemas")
        if not tables and not schemas:
            return None
        touched: set[Name] = set()
        for n in list(f.reads) + [w.target for w in f.writes] + [n for _, n in f.objects]:
            touched |= self._qualify(n, ctx)
        for rule in tables:
            for n in sorted(touched, key=str):
                if any(p.matches(n) for p in rule.deny):
                    return Refusal(rule.id, "tables", f"table {n} is not allowed",
                                   hint=rule.hint)
                if rule.allow and not any(p.matches(n) for p in rule.allow):
                    return Refusal(rule.id, "tables", f"table {n} is not on the allow-list",
                                   detail="allowed: " + ", ".join(map(str, rule.allow)),
                                   hint=rule.hint)
        for rule in schemas:
            for n in sorted(touched, key=str):
                # schema lists hold bare schema names: Pattern(None, name)
                schema = Name(None, n.schema or "")
                if any(p.matches(schema) for p in rule.deny):
                    return Refusal(rule.id, "schemas", f"schema {n.schema} is not allowed",
                                   detail=f"object: {n}", hint=rule.hint)
                if rule.allow and not any(p.matches(schema) for p in rule.allow):
                    return Refusal(rule.id, "schemas", f"schema {n.schema} is not on the "
                                   "allow-list", detail=f"object: {n}", hint=rule.hint)
        return None

    @staticmethod
    def _qualify(name: Name, ctx: Context) -> set[Name]:
        """Every schema-qualified table a name may denote, views expanded; an unknown
        unqualified name is taken to be in the first schema of the path."""
        cat = ctx.catalog
        if cat is not None and cat.loaded:
            found = cat.relation_candidates(name, ctx.path())
            if found:
                out: set[Name] = set()
                for rel in found:
                    out.add(rel.name)
                    out |= cat.base_tables(rel)
                return out
        if name.schema is not None:
            return {name}
        path = [s for s in ctx.path() if s != "pg_catalog"] or ["public"]
        return {Name(path[0], name.name)}


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in (
        "on", "true", "yes", "1", "t", "y", "tr", "tru", "ye")


def _create_hint(rule: Rule) -> str:
    if rule.allow_create:
        return "Allowed: CREATE " + ", ".join(sorted(k.upper() for k in rule.allow_create)) + "."
    return "Schema changes go through a migration, not through this session."


# -- policy files -------------------------------------------------------------------------------

def parse_profiles(data: Mapping[str, Any], prefix: str = "") -> dict[str, Profile]:
    """Profiles from a policy file's TOML tables; every error names its key."""
    profiles = data.get("profiles")
    if not isinstance(profiles, dict) or not profiles:
        raise PolicyError(f"{prefix}profiles", "at least one [profiles.NAME] table is required")
    unknown = set(data) - {"profiles"}
    if unknown:
        raise PolicyError(f"{prefix}{sorted(unknown)[0]}", "unknown key")
    return {name: _profile(name, table, f"{prefix}profiles.{name}")
            for name, table in profiles.items()}


def _profile(name: str, table: Any, key: str) -> Profile:
    if not isinstance(table, dict):
        raise PolicyError(key, "must be a table")
    known = {"description", "read_only", "statement_timeout", "rule", "masking"}
    for k in table:
        if k not in known:
            raise PolicyError(f"{key}.{k}", "unknown key")
    read_only = table.get("read_only", False)
    if not isinstance(read_only, bool):
        raise PolicyError(f"{key}.read_only", "must be true or false")
    timeout = table.get("statement_timeout")
    timeout_ms = None if timeout is None else _duration_ms(timeout, f"{key}.statement_timeout")
    raw_rules = table.get("rule", [])
    if not isinstance(raw_rules, list):
        raise PolicyError(f"{key}.rule", "must be an array of tables ([[...rule]])")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_rules):
        rule = _rule(raw, f"{key}.rule[{i}]")
        if rule.id in seen:
            raise PolicyError(f"{key}.rule[{i}].id", f"duplicate rule id {rule.id!r}")
        seen.add(rule.id)
        rules.append(rule)
    if read_only and not any(r.kind == "read_only" for r in rules):
        rules.insert(0, Rule(f"{name}.read-only", "read_only"))
    description = table.get("description", "")
    if not isinstance(description, str):
        raise PolicyError(f"{key}.description", "must be a string")
    masking = None
    if "masking" in table:
        try:
            masking = parse_masking(table["masking"], f"{key}.masking")
        except MaskingConfigError as exc:
            raise PolicyError(exc.key, exc.problem) from None
    return Profile(name, tuple(rules), read_only, timeout_ms, description, masking)


_RULE_KEYS: dict[str, set[str]] = {
    "ddl": {"allow_create", "allow_maintenance"},
    "unbounded_write": set(),
    "protected_tables": {"tables"},
    "multi_statement": {"refuse_all"},
    "file_access": set(),
    "privileges": set(),
    "code": {"allow"},
    "read_only": set(),
    "functions": {"allow", "deny"},
    "schemas": {"allow", "deny"},
    "tables": {"allow", "deny"},
}


def _rule(raw: Any, key: str) -> Rule:
    if not isinstance(raw, dict):
        raise PolicyError(key, "must be a table")
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid:
        raise PolicyError(f"{key}.id", "every rule needs an id (a non-empty string)")
    kind = raw.get("kind")
    if kind not in _RULE_KEYS:
        raise PolicyError(f"{key}.kind", f"must be one of {', '.join(RULE_KINDS)}")
    allowed_keys = _RULE_KEYS[kind] | {"id", "kind", "hint"}
    for k in raw:
        if k not in allowed_keys:
            raise PolicyError(f"{key}.{k}", f"unknown key for a {kind} rule")
    hint = raw.get("hint")
    if hint is not None and not isinstance(hint, str):
        raise PolicyError(f"{key}.hint", "must be a string")
    creates = _strings(raw.get("allow_create", []), f"{key}.allow_create")
    for c in creates:
        if c not in CREATE_KINDS:
            raise PolicyError(f"{key}.allow_create", f"{c!r} is not one of "
                              f"{', '.join(CREATE_KINDS)}")
    for flag in ("allow_maintenance", "refuse_all"):
        if not isinstance(raw.get(flag, False), bool):
            raise PolicyError(f"{key}.{flag}", "must be true or false")
    if kind == "schemas":
        for key_name in ("allow", "deny"):
            for entry in raw.get(key_name, []):
                if isinstance(entry, str) and "." in entry:
                    raise PolicyError(f"{key}.{key_name}",
                                      f"{entry!r}: schema lists hold schema names only")
    return Rule(
        id=rid, kind=kind, allow_create=frozenset(creates),
        allow_maintenance=raw.get("allow_maintenance", False),
        refuse_all=raw.get("refuse_all", False),
        tables=_patterns(raw.get("tables", []), f"{key}.tables"),
        allow=_patterns(raw.get("allow", []), f"{key}.allow"),
        deny=_patterns(raw.get("deny", []), f"{key}.deny"), hint=hint)


def _strings(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(key, "must be a list of strings")
    return list(value)


def _patterns(value: Any, key: str) -> tuple[Pattern, ...]:
    return tuple(Pattern.parse(v, key) for v in _strings(value, key))


def _duration_ms(value: Any, key: str) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return int(value * 1000)
    if isinstance(value, str):
        units = {"ms": 1, "s": 1000, "min": 60_000, "m": 60_000, "h": 3_600_000}
        for unit in sorted(units, key=len, reverse=True):
            if value.endswith(unit):
                try:
                    number = float(value[: -len(unit)].strip())
                except ValueError:
                    break
                if number > 0:
                    return int(number * units[unit])
    raise PolicyError(key, "must be a positive duration: seconds, or a string like '30s', "
                      "'500ms', '2min'")


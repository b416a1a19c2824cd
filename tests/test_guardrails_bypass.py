"""Attempts to get past the guardrails, kept as tests.

Each ``xfail(strict=True)`` test states what a security team expects (the statement, or the
sequence, is refused; or ordinary traffic is allowed) and currently fails because Wiregate
does otherwise: the reason names the gap and the direction of a fix. When the engine is fixed
the test starts passing and strict xfail turns that into a failure, so the marker must then
be removed. The plain tests pin spellings and sequences verified to be handled correctly that
``tests/test_guardrails.py`` does not already cover.

The first part judges statements offline, as ``tests/test_guardrails.py`` does. The second
part (marked ``postgres``) runs the important findings through a real Wiregate against the
local PostgreSQL, on tables of a throwaway schema, to show what the server actually does.
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from policies.catalog import Catalog, RelationInfo, RoutineInfo
from policies.decision import Allow, Deny, Hold, SessionInfo, Statement
from policies.facts import Name, Unparseable
from policies.guard import GuardPolicy, StartupRefused
from policies.guardrails import Context, Guardrails, Profile, Refusal, parse_profiles
from policies.statements import analyze
from proxy.server import ThreadedProxy
from tests.conftest import ROOT, PgTarget, client_dsn, make_config

EXAMPLE_POLICY = ROOT / "examples" / "policy.toml"
PROFILES = parse_profiles(tomllib.loads(EXAMPLE_POLICY.read_text()))
CUSTOM = parse_profiles(tomllib.loads("""
[profiles.deny-payments]
[[profiles.deny-payments.rule]]
id = "no-payments"
kind = "tables"
deny = ["public.payments"]

[profiles.mixed-case]
[[profiles.mixed-case.rule]]
id = "protected"
kind = "protected_tables"
tables = ["Audit.*"]
"""))
ALL: dict[str, Profile] = {**PROFILES, **CUSTOM}


def _rel(schema: str, name: str, kind: str = "r", *bases: Name) -> RelationInfo:
    return RelationInfo(Name(schema, name), kind, tuple(bases))


def _fn(schema: str, name: str, volatility: str, kind: str = "f") -> RoutineInfo:
    return RoutineInfo(Name(schema, name), 0, volatility, kind)


CATALOG = Catalog.build([
    _rel("public", "orders"), _rel("public", "customers"), _rel("public", "payments"),
    _rel("public", "events"), _rel("audit", "events"), _rel("Audit", "orders"),
    _rel("public", "v_payments", "v", Name("public", "payments")),
    _rel("pg_catalog", "pg_class"),
], [
    _fn("public", "lookup", "s"), _fn("public", "bump", "v"),
    # A volatile function taking the orders row type: callable as o.touch (attribute notation).
    _fn("public", "touch", "v"),
    # Volatilities as PostgreSQL 15 declares them.
    *(_fn("pg_catalog", n, "v") for n in (
        "set_config", "nextval", "setval", "query_to_xml", "cursor_to_xml", "ts_stat",
        "ts_rewrite", "lo_unlink", "lo_from_bytea", "lo_put", "lo_get", "loread", "lo_open",
        "pg_terminate_backend", "random")),
    *(_fn("pg_catalog", n, "s") for n in (
        "current_setting", "table_to_xml", "schema_to_xml", "database_to_xml", "now",
        "current_schema")),
    *(_fn("pg_catalog", n, "i") for n in ("lower", "coalesce")),
    _fn("pg_catalog", "count", "i", "a"), _fn("pg_catalog", "max", "i", "a"),
])


def check(sql: str, profile: str = "agent-rw", path: Sequence[str] = ("public",)
          ) -> Refusal | None:
    return Guardrails(ALL[profile]).check(analyze(sql), Context(CATALOG, path, "alice"))


def rule_of(sql: str, profile: str = "agent-rw", path: Sequence[str] = ("public",)
            ) -> str | None:
    refusal = check(sql, profile, path)
    return None if refusal is None else refusal.rule


class FixedCatalog:
    def current(self, database: str) -> Catalog | None:
        return CATALOG

    def changed(self, database: str) -> None:
        return None

    def stale(self, database: str) -> bool:
        return False


def guard(profile: str = "agent-rw") -> GuardPolicy:
    return GuardPolicy(ALL, lambda s: profile, FixedCatalog())


def session(sid: str = "s1") -> SessionInfo:
    return SessionInfo(sid, "alice", "test", "test")


def decide(policy: GuardPolicy, sql: str, s: SessionInfo, source: str = "query"
           ) -> Allow | Deny:
    """One decision as the proxy makes it (a wait for the catalog, then one retry)."""
    stmt = Statement(sql, "parse" if source == "parse" else "query")
    decision = policy.decide(stmt, s)
    if isinstance(decision, Hold) and decision.wait_for == "catalog":
        s.policy_state["catalog_retry"] = True
        try:
            decision = policy.decide(stmt, s)
        finally:
            s.policy_state.pop("catalog_retry")
    assert isinstance(decision, Allow | Deny)
    return decision


def any_refused(policy: GuardPolicy, sqls: Sequence[str], s: SessionInfo) -> bool:
    """Whether some statement of a session's sequence is refused (the sequence is stopped)."""
    return any(isinstance(decide(policy, sql, s), Deny) for sql in sqls)


# == 1. The proxy's parse is not the server's =================================================
#
# pglast always lexes with standard_conforming_strings = on and reads the bytes as UTF-8 (or
# Latin-1). A client may switch the server to standard_conforming_strings = off, or to a
# client-only encoding whose second bytes include the ASCII backslash (SJIS, BIG5, GBK, UHC,
# GB18030): then a backslash the proxy sees as an escape is plain text (or part of a
# character) for the server, and a statement hidden in what the proxy takes for a string
# literal runs unjudged. Every profile is affected; under agent-readonly the hidden part can
# open a read-write transaction. Fix direction: refuse standard_conforming_strings other than
# on and client-only multibyte encodings, at startup, in SET/RESET and in set_config (or track
# them per session and refuse any string containing a backslash while they are in force).

SCS_OFF_PAYLOAD = "SELECT 'a\\' , $$' ; DELETE FROM orders ; --$$"
# "ぁ" is E3 81 81 in UTF-8; read as SJIS, "81 5C" is one character: the backslash is gone.
SJIS_PAYLOAD = "SELECT E'ぁ\\'; DELETE FROM orders; --'"


def test_payloads_look_like_one_harmless_select_to_the_analysis() -> None:
    for payload in (SCS_OFF_PAYLOAD, SJIS_PAYLOAD):
        facts = analyze(payload)
        assert [f.kind for f in facts] == ["SelectStmt"] and not facts[0].writes
    # With the server's default lexing the same text is seen for what it is elsewhere.
    assert rule_of("SELECT 'a' , $$' ; DELETE FROM orders ; --$$") is None


@pytest.mark.parametrize("profile", ["agent-rw", "agent-readonly"])
@pytest.mark.parametrize("setter", [
    "SET standard_conforming_strings = off",
    "SET standard_conforming_strings TO false",
    "SELECT set_config('standard_conforming_strings', 'off', false)",
])
def test_standard_conforming_strings_off_is_refused(profile: str, setter: str) -> None:
    payload = SCS_OFF_PAYLOAD.replace("DELETE FROM orders", "DROP TABLE orders")
    assert any_refused(guard(profile), [setter, payload], session())


def test_standard_conforming_strings_off_at_startup_is_refused() -> None:
    with pytest.raises(StartupRefused):
        guard().session_parameters({"user": "alice", "standard_conforming_strings": "off"},
                                   session())


@pytest.mark.parametrize("setter", [
    "SET client_encoding = 'SJIS'", "SET NAMES 'BIG5'",
    "SELECT set_config('client_encoding', 'GBK', false)",
])
def test_client_only_encoding_is_refused(setter: str) -> None:
    assert any_refused(guard(), [setter, SJIS_PAYLOAD], session())


def test_client_only_encoding_at_startup_is_refused() -> None:
    with pytest.raises(StartupRefused):
        guard().session_parameters({"user": "alice", "client_encoding": "SJIS"}, session())


def test_ordinary_lexing_settings_stay_allowed() -> None:
    policy, s = guard(), session()
    for sql in ("SET standard_conforming_strings = on", "SET client_encoding TO 'UTF8'",
                "SET client_encoding = 'LATIN1'", "SHOW standard_conforming_strings"):
        assert isinstance(decide(policy, sql, s), Allow), sql
    out = policy.session_parameters({"user": "alice", "client_encoding": "UTF8",
                                     "standard_conforming_strings": "on"}, s)
    assert out["client_encoding"] == "UTF8"


# == 2. Name resolution after the decision ======================================================

@pytest.mark.parametrize("source", ["query", "parse"])
def test_prepared_write_then_search_path_change(source: str) -> None:
    policy, s = guard(), session()
    if source == "query":
        steps = ["PREPARE p AS DELETE FROM events WHERE id = 1"]
    else:   # extended protocol: a named Parse, executed later by Bind/Execute (never judged)
        steps = []
        named = Statement("DELETE FROM events WHERE id = $1", "parse", name="p")
        assert isinstance(policy.decide(named, s), Allow)
    steps += ["SET search_path = audit, public", "EXECUTE p"]
    assert any_refused(policy, steps, s)


def test_prepared_write_to_the_protected_name_is_refused_at_prepare() -> None:
    policy, s = guard(), session()
    assert isinstance(decide(policy, "SET search_path = audit, public", s), Allow)
    refused = decide(policy, "PREPARE p AS DELETE FROM events WHERE id = 1", s)
    assert isinstance(refused, Deny) and refused.rule == "protected-tables"


@pytest.mark.parametrize("setter", [
    "SELECT set_config('search_path', 'aud' || 'it', false)",
    "SELECT set_config('search_path', current_setting('search_path') || ',audit', false)",
    "SELECT set_config('search_path', $1, false)",      # $1 = 'audit' (extended protocol)
])
def test_search_path_unknown_until_run_time(setter: str) -> None:
    assert any_refused(guard(), [setter, "DELETE FROM events WHERE id = 1"], session())


def test_quoted_mixed_case_schema_in_set_search_path() -> None:
    policy, s = guard("mixed-case"), session()
    assert any_refused(policy, ['SET search_path = "Audit", public',
                                "INSERT INTO orders VALUES (1)"], s)


def test_mixed_case_schema_through_set_config_and_startup() -> None:
    # The same schema named in set_config or at startup keeps its quotes and is found.
    policy, s = guard("mixed-case"), session()
    assert any_refused(policy, ["""SELECT set_config('search_path', '"Audit"', false)""",
                                "INSERT INTO orders VALUES (1)"], s)
    s = session("s2")
    policy.session_parameters({"user": "alice", "search_path": '"Audit"'}, s)
    assert isinstance(decide(policy, "INSERT INTO orders VALUES (1)", s), Deny)


# == 3. Routines called without a function call in the text ===================================

@pytest.mark.parametrize("sql", [
    "SELECT o.touch FROM orders o WHERE o.id = 1",
    "SELECT orders.touch FROM orders",
    "SELECT (o).touch FROM orders o",
])
def test_attribute_notation_call_of_a_volatile_function(sql: str) -> None:
    assert rule_of(sql) == "no-code"
    assert rule_of(sql, "agent-readonly") == "no-code"


def test_functional_notation_of_the_same_call_is_refused() -> None:
    assert rule_of("SELECT touch(o) FROM orders o WHERE o.id = 1") == "no-code"


# == 4. Settings that switch protections off ====================================================

@pytest.mark.parametrize("sql", [
    "SET session_replication_role = replica",
    "SET LOCAL session_replication_role TO 'replica'",
    "SELECT set_config('session_replication_role', 'replica', false)",
])
def test_session_replication_role_under_agent_rw(sql: str) -> None:
    assert check(sql) is not None


def test_session_replication_role_at_startup_is_refused() -> None:
    with pytest.raises(StartupRefused):
        guard().session_parameters({"user": "alice", "options": "-c session_replication_role="
                                    "replica"}, session())


# == 5. Writes that touch every row, not recognised =============================================

@pytest.mark.parametrize("sql", [
    "DELETE FROM orders WHERE id IN (SELECT id FROM orders)",
    "DELETE FROM orders WHERE id = ANY (SELECT id FROM orders)",
    "DELETE FROM orders WHERE EXISTS (SELECT 1 WHERE orders.id = orders.id)",
    "DELETE FROM orders WHERE ctid IS NOT NULL",
])
def test_unbounded_write_by_construction_recognised(sql: str) -> None:
    assert rule_of(sql) == "bounded-writes"


@pytest.mark.xfail(strict=True, reason="a condition true for every row by construction: the "
                   "target compared with itself through a correlated subquery, array or "
                   "self-join, or a constant CASE")
@pytest.mark.parametrize("sql", [
    "UPDATE orders SET a = 1 WHERE id IN (SELECT orders.id)",
    "DELETE FROM orders WHERE id = (SELECT orders.id)",
    "DELETE FROM orders USING orders o2 WHERE o2.id = orders.id",
    "MERGE INTO orders o USING orders s ON s.id = o.id WHEN MATCHED THEN DELETE",
    "DELETE FROM orders WHERE id = ANY (ARRAY[id])",
    "DELETE FROM orders WHERE CASE WHEN true THEN true ELSE id = 1 END",
])
def test_unbounded_write_by_construction(sql: str) -> None:
    assert rule_of(sql) == "bounded-writes"


@pytest.mark.parametrize("sql", [
    # Batching and lookups that read the target in a subquery stay ordinary traffic (a fix for
    # the cases above must keep them allowed).
    "DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE created_at < now() LIMIT 1000)",
    "UPDATE orders SET a = 1 WHERE id = (SELECT max(id) FROM orders)",
    "WITH batch AS (SELECT id FROM orders WHERE a = 1 LIMIT 100) "
    "DELETE FROM orders o USING batch b WHERE o.id = b.id",
    "UPDATE orders SET a = v.a FROM (VALUES (1, 'x'), (2, 'y')) AS v(id, a) "
    "WHERE orders.id = v.id",
    "MERGE INTO orders o USING (VALUES (1)) v(id) ON o.id = v.id WHEN MATCHED THEN DELETE",
    "DELETE FROM orders WHERE CURRENT OF c",
])
def test_bounded_writes_that_read_the_target_stay_allowed(sql: str) -> None:
    assert check(sql) is None


# == 6. Other gaps ===============================================================================

@pytest.mark.parametrize("sql", ["ROLLBACK PREPARED 'gid'", "COMMIT PREPARED 'gid'"])
def test_two_phase_commit_under_agent_readonly(sql: str) -> None:
    assert rule_of(sql, "agent-readonly") == "read-only"


@pytest.mark.xfail(strict=True, reason="table_to_xml and friends (STABLE) read a table named "
                   "in a string: a tables deny-list never sees it")
@pytest.mark.parametrize("sql", [
    "SELECT table_to_xml('payments', true, true, '')",
    "SELECT table_to_xml('public.payments'::regclass, true, true, '')",
    "SELECT schema_to_xml('public', true, true, '')",
    "SELECT database_to_xml(true, true, '')",
])
def test_tables_deny_list_through_xml_functions(sql: str) -> None:
    assert rule_of(sql, "deny-payments") == "no-payments"


@pytest.mark.parametrize("sql", ["SELECT lo_get(16400)", "SELECT loread(lo_open(16400, 262144),"
                                 " 8192)"])
def test_large_object_reads_under_agent_readonly(sql: str) -> None:
    assert check(sql, "agent-readonly") is None


# == 7. Verified: handled correctly ==============================================================

REFUSED = [
    # EXPLAIN that executes, however spelled
    ("EXPLAIN (FORMAT JSON, ANALYZE on) DELETE FROM orders", "bounded-writes"),
    ('EXPLAIN ("analyze") DELETE FROM orders', "bounded-writes"),
    ("EXPLAIN (ANALYZE 1) DELETE FROM orders", "bounded-writes"),
    ("EXPLAIN (ANALYZE yes) DELETE FROM orders", "bounded-writes"),
    ("EXPLAIN (ANALYZE, ANALYZE false) DELETE FROM orders", "bounded-writes"),
    ("EXPLAIN ANALYZE SELECT * INTO t2 FROM orders", "no-ddl"),
    ("EXPLAIN ANALYZE CREATE MATERIALIZED VIEW mv AS SELECT 1", "no-ddl"),
    ("EXPLAIN ANALYZE SELECT bump()", "no-code"),
    ("EXPLAIN ANALYZE WITH d AS (DELETE FROM payments WHERE id = 1 RETURNING 1) SELECT 1",
     "protected-tables"),
    # writes hidden in CTEs, COPY, MERGE
    ("WITH RECURSIVE d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", "bounded-writes"),
    ("COPY (UPDATE payments SET a = 1 WHERE id = 1 RETURNING *) TO STDOUT", "protected-tables"),
    ("COPY (INSERT INTO payments VALUES (1) RETURNING *) TO STDOUT", "protected-tables"),
    ("MERGE INTO payments p USING orders o ON p.id = o.id WHEN NOT MATCHED THEN DO NOTHING",
     "protected-tables"),
    ("MERGE INTO orders o USING (SELECT 1) s ON true WHEN MATCHED AND o.id = o.id THEN DELETE",
     "bounded-writes"),
    # names of the protected table
    ("INSERT INTO test.public.payments VALUES (1)", "protected-tables"),
    ("DELETE FROM payments* WHERE id = 1", "protected-tables"),
    ("INSERT INTO payments AS p VALUES (1)", "protected-tables"),
    ("COPY v_payments FROM STDIN", "protected-tables"),
    ("TRUNCATE ONLY payments", "no-ddl"),
    ("TRUNCATE TABLE orders, payments", "no-ddl"),
    ("CREATE TEMP VIEW payments AS SELECT 1", "no-ddl"),
    ("CREATE SCHEMA s CREATE TABLE t (id int)", "no-ddl"),
    ("SECURITY LABEL ON TABLE payments IS 'x'", "no-ddl"),
    ("ALTER TABLE orders DISABLE TRIGGER ALL", "no-ddl"),
    ("IMPORT FOREIGN SCHEMA x FROM SERVER s INTO public", "no-files"),
    # routines that execute SQL text or write large objects and sequences
    ("SELECT query_to_xml('DELETE FROM orders RETURNING 1', true, true, '')", "no-code"),
    ("SELECT cursor_to_xml('c', 1, true, true, '')", "no-code"),
    ("SELECT * FROM ts_stat('SELECT 1')", "no-code"),
    ("SELECT ts_rewrite('a'::tsquery, 'SELECT 1')", "no-code"),
    ("SELECT lo_unlink(16400)", "no-code"),
    ("SELECT lo_from_bytea(0, 'x')", "no-code"),
    ("SELECT lo_put(16400, 0, 'x')", "no-code"),
    ("SELECT pg_catalog.setval('orders_id_seq', 1)", "no-code"),
    # identity changes
    ("SELECT set_config(lower('ROLE'), 'x', false)", "no-privileges"),
    ("SET LOCAL ROLE postgres", "no-privileges"),
    ("do language plpgsql $$begin end$$", "no-code"),
    ("DO $$ $$ LANGUAGE plpgsql", "no-code"),
]


@pytest.mark.parametrize(("sql", "rule"), REFUSED)
def test_refused(sql: str, rule: str) -> None:
    assert rule_of(sql) == rule


@pytest.mark.parametrize("sql", [
    "SELECT lo_unlink(16400)", "SELECT setval('orders_id_seq', 1)",
    "SELECT query_to_xml('SELECT 1', true, true, '')", "SET default_transaction_read_only = yes",
])
def test_readonly_routines_and_read_only_on(sql: str) -> None:
    expected = None if sql.startswith("SET") else "no-code"
    assert rule_of(sql, "agent-readonly") == expected


@pytest.mark.parametrize("sql", [
    "SELECT 1\x00; DROP TABLE orders",
    "\x00",
])
def test_nul_byte_is_unparseable(sql: str) -> None:
    with pytest.raises(Unparseable):
        analyze(sql)


def test_long_multi_statement_string_is_judged_whole() -> None:
    sql = "SELECT 1; " * 5000 + "DELETE FROM orders; " + "SELECT 2; " * 10
    refusal = check(sql)
    assert refusal is not None and refusal.rule == "bounded-writes"
    assert refusal.detail is not None and "statement 5001 of 5011" in refusal.detail


def test_refused_statement_in_the_middle_refuses_the_string() -> None:
    assert rule_of("SELECT 1; DELETE FROM orders /* */ WHERE 1 = 1; SELECT 2") == \
        "bounded-writes"
    assert rule_of("BEGIN; UPDATE payments SET a = 1 WHERE id = 1; COMMIT") == \
        "protected-tables"


# == 8. End to end: what the server does =========================================================

@dataclass
class World:
    pg: PgTarget
    proxy: ThreadedProxy
    schema: str

    @property
    def other(self) -> str:
        return f"{self.schema}_x"

    def connect(self, route: str = "test", **extra: str) -> psycopg.Connection[Any]:
        return psycopg.connect(client_dsn(self.proxy.port, dbname=route, **extra),
                               autocommit=True)

    def server(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.pg.dsn(), autocommit=True) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def count(self, table: str, where: str = "true") -> int:
        n: int = self.server(f"SELECT count(*) FROM {table} WHERE {where}")[0][0]
        return n

    def reset(self) -> None:
        s = self.schema
        self.server(f"DELETE FROM {s}.items; DELETE FROM {s}.ledger; DELETE FROM {s}.audit; "
                    f"DELETE FROM {self.other}.ledger; "
                    f"INSERT INTO {s}.items SELECT g, 'item-' || g FROM generate_series(1, 5) g; "
                    f"INSERT INTO {s}.ledger VALUES (1, 100), (2, 200), (3, 300); "
                    f"INSERT INTO {self.other}.ledger VALUES (1, 100), (2, 200)")


def _setup(schema: str) -> list[str]:
    s, x = schema, f"{schema}_x"
    return [
        f"CREATE SCHEMA {s}", f"CREATE SCHEMA {x}",
        f"CREATE TABLE {s}.items (id int PRIMARY KEY, v text)",
        f"CREATE TABLE {s}.ledger (id int PRIMARY KEY, amount int)",     # protected
        f"CREATE TABLE {s}.audit (id serial, what text)",                # protected
        f"CREATE TABLE {x}.ledger (id int PRIMARY KEY, amount int)",     # not protected
        # every deletion from items is audited by a trigger
        f"CREATE FUNCTION {s}.audit_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"INSERT INTO {s}.audit (what) VALUES ('deleted ' || OLD.id); RETURN OLD; END $$",
        f"CREATE TRIGGER audited AFTER DELETE ON {s}.items FOR EACH ROW "
        f"EXECUTE FUNCTION {s}.audit_delete()",
        # existing routines a DBA created; the agent only calls them
        f"CREATE FUNCTION {s}.touch(r {s}.items) RETURNS int LANGUAGE sql VOLATILE AS "
        f"$$ INSERT INTO {s}.ledger VALUES (1000 + r.id, 0) RETURNING 1 $$",
        f"CREATE FUNCTION {s}.bump() RETURNS int LANGUAGE sql VOLATILE AS "
        f"$$ INSERT INTO {s}.ledger VALUES (2000, 0) RETURNING 1 $$",
        f"CREATE FUNCTION {s}.peek() RETURNS int LANGUAGE sql STABLE AS $$ SELECT {s}.bump() $$",
        f"CREATE FUNCTION {s}.tally_step(acc int, v int) RETURNS int LANGUAGE sql VOLATILE AS "
        f"$$ INSERT INTO {s}.ledger VALUES (3000 + v, 0); SELECT acc + v $$",
        f"CREATE AGGREGATE {s}.tally(int) (sfunc = {s}.tally_step, stype = int, "
        "initcond = '0')",
    ]


@pytest.fixture(scope="module")
def world(pg: PgTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    schema = f"wg_bp_{uuid.uuid4().hex[:10]}"
    proxy: ThreadedProxy | None = None
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            for ddl in _setup(schema):
                conn.execute(ddl)
        text = EXAMPLE_POLICY.read_text()
        protected = 'tables = ["public.payments", "audit.*"]'
        assert protected in text
        policy_file: Path = tmp_path_factory.mktemp("bypass") / "policy.toml"
        policy_file.write_text(text.replace(protected, f'tables = ["public.payments", '
                                            f'"audit.*", "{schema}.ledger", "{schema}.audit"]'))
        cfg = make_config(pg, guardrails={"policy_file": str(policy_file)},
                          upstream={"profile": "agent-rw"},
                          extra_databases={"ro": {"profile": "agent-readonly"}})
        proxy = ThreadedProxy(cfg, None, None).start()
        w = World(pg, proxy, schema)
        w.reset()
        yield w
    finally:
        if proxy is not None:
            proxy.stop(0.5)
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.execute(f"DROP SCHEMA IF EXISTS {schema}_x CASCADE")


@pytest.fixture
def w(world: World) -> World:
    world.reset()
    return world


def run(conn: psycopg.Connection[Any], *sqls: str) -> bool:
    """Run statements in order; False as soon as Wiregate refuses one (42501)."""
    for sql in sqls:
        try:
            conn.execute(sql.encode())
        except psycopg.errors.InsufficientPrivilege as exc:
            assert "wiregate: blocked by rule" in str(exc)
            return False
    return True


@pytest.mark.postgres
def test_e2e_refusals_leave_the_data_alone(w: World) -> None:
    s = w.schema
    with w.connect() as conn:
        assert not run(conn, f"COPY (DELETE FROM {s}.items RETURNING *) TO STDOUT")
        assert not run(conn, f"EXPLAIN (FORMAT JSON, ANALYZE on) DELETE FROM {s}.items")
        assert not run(conn, f"SELECT {s}.touch(i) FROM {s}.items i WHERE i.id = 1")
        assert not run(conn, f"SELECT query_to_xml('SELECT {s}.bump()', true, true, '')")
        assert not run(conn, f"UPDATE {s}.ledger SET amount = 0 WHERE id = 1")
    assert w.count(f"{s}.items") == 5
    assert w.count(f"{s}.ledger") == 3


@pytest.mark.postgres
def test_e2e_standard_conforming_strings_off(w: World) -> None:
    with w.connect() as conn:
        run(conn, "SET standard_conforming_strings = off",
            f"SELECT 'a\\' , $$' ; DELETE FROM {w.schema}.items ; --$$")
    assert w.count(f"{w.schema}.items") == 5


@pytest.mark.postgres
def test_e2e_standard_conforming_strings_off_readonly(w: World) -> None:
    """The login itself is refused: the session never reads text the parser would misread."""
    with pytest.raises(psycopg.OperationalError) as ei:
        w.connect("ro", options="'-c standard_conforming_strings=off'")
    assert "wiregate.startup" in str(ei.value)
    assert w.count(f"{w.schema}.items") == 5


@pytest.mark.postgres
def test_e2e_sjis_client_encoding(w: World) -> None:
    with w.connect() as conn:
        # psycopg sends a query without parameters as the very bytes given (simple protocol)
        run(conn, "SET client_encoding = 'SJIS'",
            f"SELECT E'ぁ\\'; DELETE FROM {w.schema}.items; --'")
    assert w.count(f"{w.schema}.items") == 5


@pytest.mark.postgres
def test_e2e_prepare_then_search_path(w: World) -> None:
    s, x = w.schema, w.other
    with w.connect() as conn:
        run(conn, f"SET search_path = {x}", "PREPARE p AS DELETE FROM ledger WHERE id = 1",
            f"SET search_path = {s}, {x}", "EXECUTE p")
    assert w.count(f"{s}.ledger", "id = 1") == 1


@pytest.mark.postgres
def test_e2e_attribute_notation(w: World) -> None:
    with w.connect() as conn:
        # attribute notation finds the function through the search_path
        run(conn, f"SET search_path = {w.schema}, public",
            "SELECT i.touch FROM items i WHERE i.id = 1")
    assert w.count(f"{w.schema}.ledger") == 3


@pytest.mark.postgres
@pytest.mark.xfail(strict=True, reason="an existing STABLE function that calls a volatile one "
                   "writes; Wiregate trusts provolatile (fix: judge user routines by what they "
                   "call, e.g. pg_depend or prosrc, or require an allow-list for non-pg_catalog "
                   "routines)")
def test_e2e_stable_function_calling_a_volatile_one(w: World) -> None:
    with w.connect() as conn:
        run(conn, f"SELECT {w.schema}.peek()")
    assert w.count(f"{w.schema}.ledger") == 3


@pytest.mark.postgres
def test_e2e_aggregate_with_a_volatile_transition_function(w: World) -> None:
    with w.connect() as conn:
        run(conn, f"SELECT {w.schema}.tally(id) FROM {w.schema}.items WHERE id = 1")
    assert w.count(f"{w.schema}.ledger") == 3


@pytest.mark.postgres
def test_e2e_session_replication_role_skips_the_audit_trigger(w: World) -> None:
    with w.connect() as conn:
        if run(conn, "SET session_replication_role = replica"):
            assert run(conn, f"DELETE FROM {w.schema}.items WHERE id = 1")
            assert w.count(f"{w.schema}.items") == 4
            assert w.count(f"{w.schema}.audit") == 1, "the deletion was not audited"


@pytest.mark.postgres
def test_e2e_deletion_is_audited_normally(w: World) -> None:
    with w.connect() as conn:
        assert run(conn, f"DELETE FROM {w.schema}.items WHERE id = 1")
    assert w.count(f"{w.schema}.audit") == 1


@pytest.mark.postgres
def test_e2e_self_subquery_deletes_everything(w: World) -> None:
    s = w.schema
    with w.connect() as conn:
        run(conn, f"DELETE FROM {s}.items WHERE id IN (SELECT id FROM {s}.items)")
    assert w.count(f"{s}.items") > 0

"""The PostgreSQL analysis (``policies.statements``) and the Policy wrapper's caches.

The analysis only records facts; these tests pin the facts the guardrails rely on. The
``GuardPolicy`` tests check that a decision cached by normalized text is only reused where no
constant can change it, and that the search_path a session sets changes what a name means.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pglast import parse_sql

from policies import statements
from policies.catalog import Catalog, RelationInfo, RoutineInfo
from policies.decision import Allow, Deny, Hold, SessionInfo, Statement
from policies.facts import Call, Facts, Name, Setting, Unparseable, Write
from policies.guard import GuardPolicy
from policies.statements import analyze, truth, unbounded

N = Name


def one(sql: str) -> Facts:
    facts = analyze(sql)
    assert len(facts) == 1
    return facts[0]


# -- categories -------------------------------------------------------------------------------

@pytest.mark.parametrize(("sql", "kind", "category"), [
    ("SELECT 1", "SelectStmt", "read"),
    ("TABLE orders", "SelectStmt", "read"),
    ("VALUES (1)", "SelectStmt", "read"),
    ("SHOW search_path", "VariableShowStmt", "session"),
    ("EXPLAIN DELETE FROM orders", "ExplainStmt", "read"),
    ("EXPLAIN ANALYZE DELETE FROM orders", "ExplainStmt", "write"),
    ("EXPLAIN ANALYZE SELECT 1", "ExplainStmt", "read"),
    ("DECLARE c CURSOR FOR SELECT 1", "DeclareCursorStmt", "read"),
    ("FETCH ALL FROM c", "FetchStmt", "read"),
    ("INSERT INTO t VALUES (1)", "InsertStmt", "write"),
    ("UPDATE t SET a = 1 WHERE id = 1", "UpdateStmt", "write"),
    ("DELETE FROM t WHERE id = 1", "DeleteStmt", "write"),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", "MergeStmt", "write"),
    ("COPY t FROM STDIN", "CopyStmt", "write"),
    ("COPY t TO STDOUT", "CopyStmt", "read"),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "SelectStmt", "write"),
    ("PREPARE p AS DELETE FROM t WHERE id = $1", "PrepareStmt", "write"),
    ("PREPARE p AS SELECT 1", "PrepareStmt", "read"),
    ("DROP TABLE t", "DropStmt", "ddl"),
    ("TRUNCATE t", "TruncateStmt", "ddl"),
    ("ALTER TABLE t ADD COLUMN x int", "AlterTableStmt", "ddl"),
    ("ALTER SYSTEM SET work_mem = '1GB'", "AlterSystemStmt", "ddl"),
    ("COMMENT ON TABLE t IS 'x'", "CommentStmt", "ddl"),
    ("CREATE TABLE t (a int)", "CreateStmt", "create"),
    ("CREATE TABLE t AS SELECT 1", "CreateTableAsStmt", "create"),
    ("SELECT 1 INTO t", "SelectStmt", "create"),
    ("CREATE INDEX ON t (a)", "IndexStmt", "create"),
    ("CREATE VIEW v AS SELECT 1", "ViewStmt", "create"),
    ("GRANT SELECT ON t TO bob", "GrantStmt", "privilege"),
    ("CREATE ROLE bob", "CreateRoleStmt", "privilege"),
    ("SET ROLE bob", "VariableSetStmt", "privilege"),
    ("DO $$ BEGIN END $$", "DoStmt", "code"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'", "CreateFunctionStmt", "code"),
    ("LOAD 'x'", "LoadStmt", "code"),
    ("SET application_name = 'x'", "VariableSetStmt", "session"),
    ("RESET ALL", "VariableSetStmt", "session"),
    ("DISCARD ALL", "DiscardStmt", "session"),
    ("LISTEN x", "ListenStmt", "session"),
    ("BEGIN", "TransactionStmt", "transaction"),
    ("SAVEPOINT a", "TransactionStmt", "transaction"),
    ("VACUUM", "VacuumStmt", "admin"),
    ("CHECKPOINT", "CheckPointStmt", "admin"),
    ("CALL p()", "CallStmt", "read"),
])
def test_category(sql: str, kind: str, category: str) -> None:
    f = one(sql)
    assert (f.kind, f.category) == (kind, category)


# -- writes -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("sql", "writes"), [
    ("INSERT INTO public.t VALUES (1)", [Write(N("public", "t"), "insert")]),
    ('INSERT INTO "T" VALUES (1)', [Write(N(None, "T"), "insert")]),
    ('insert into U&"\\0074" values (1)', [Write(N(None, "t"), "insert")]),
    ("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", [Write(N(None, "t"), "insert")]),
    ("INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 1",
     [Write(N(None, "t"), "upsert")]),
    ("UPDATE t SET a = 1 WHERE id = $1", [Write(N(None, "t"), "update")]),
    ("DELETE FROM t", [Write(N(None, "t"), "delete", "no WHERE clause")]),
    ("COPY t FROM STDIN", [Write(N(None, "t"), "copy")]),
    ("TRUNCATE a, s.b", [Write(N(None, "a"), "truncate"), Write(N("s", "b"), "truncate")]),
    ("WITH x AS (INSERT INTO a VALUES (1) RETURNING *) DELETE FROM b WHERE id IN "
     "(SELECT id FROM x)", [Write(N(None, "b"), "delete"), Write(N(None, "a"), "insert")]),
])
def test_writes(sql: str, writes: list[Write]) -> None:
    assert sorted(one(sql).writes, key=str) == sorted(writes, key=str)


@pytest.mark.parametrize(("where", "bounded"), [
    ("id = 1", True),
    ("id = $1", True),
    ("t.id = $1", True),
    ("id IN (SELECT x FROM s)", True),
    ("EXISTS (SELECT 1 FROM s WHERE s.id = t.sid)", True),
    ("id = 1 OR id = 2", True),
    ("id = 1 AND $1", True),
    ("id = 1 OR false", True),
    ("CURRENT OF c", True),
    ("1 = 1", False),
    ("true", False),
    ("NOT false", False),
    ("'a' = 'a'", False),
    ("id = id", False),
    ("t.id = t.id", False),
    ("id IS NOT DISTINCT FROM id", False),
    ("id = 1 OR 1 = 1", False),
    ("(SELECT true)", False),
    ("'t'::boolean", False),
    ("CAST(1 AS boolean)", False),
    ("$1", False),
    ("1 = 2", False),
    ("id = 1 OR $1", False),
    ("EXISTS (SELECT 1 FROM s WHERE s.id = 3)", False),
    ("EXISTS (SELECT 1 FROM t WHERE t.id = 3)", False),
    ("EXISTS (SELECT 1 FROM s WHERE s.id = sid)", False),   # unqualified in a subquery: unknown
])
def test_unbounded_reasons(where: str, bounded: bool) -> None:
    write = one(f"DELETE FROM t WHERE {where}").writes[0]
    assert (write.unbounded is None) == bounded, write.unbounded
    write = one(f"UPDATE t SET a = 1 WHERE {where}").writes[0]
    assert (write.unbounded is None) == bounded, write.unbounded


@pytest.mark.parametrize(("sql", "bounded"), [
    ("DELETE FROM t USING s WHERE s.id = 1", False),
    ("DELETE FROM t USING s WHERE s.id = t.sid", True),
    ("DELETE FROM t AS x USING s WHERE s.id = x.sid", True),
    ("UPDATE t SET a = s.a FROM s WHERE s.id = 1", False),
    ("UPDATE t SET a = s.a FROM s WHERE s.id = t.sid", True),
    ("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", False),
    ("MERGE INTO t USING s ON true WHEN MATCHED AND t.id = 1 THEN DELETE", True),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 1", True),
    ("MERGE INTO t USING s ON true WHEN NOT MATCHED THEN INSERT VALUES (1)", True),
])
def test_unbounded_with_other_tables(sql: str, bounded: bool) -> None:
    write = one(sql).writes[0]
    assert (write.unbounded is None) == bounded, write.unbounded


def test_truth_and_unbounded_helpers() -> None:
    def where(cond: str) -> Any:
        stmt: Any = parse_sql(f"SELECT 1 WHERE {cond}")[0].stmt
        return stmt.whereClause

    assert truth(where("1 = 1")) is True
    assert truth(where("1 = 2")) is False
    assert truth(where("NOT (1 = 2)")) is True
    assert truth(where("random() = random()")) is None
    assert truth(where("a = 1")) is None
    assert truth(where("NULL IS NULL")) is True
    assert truth(where("'off'::boolean")) is False
    stmt: Any = parse_sql("DELETE FROM t WHERE a = 1")[0].stmt
    assert unbounded(None, stmt.relation, set()) == "no WHERE clause"
    assert unbounded(stmt.whereClause, stmt.relation, set()) is None


# -- reads, calls, settings --------------------------------------------------------------------

@pytest.mark.parametrize(("sql", "reads"), [
    ("SELECT * FROM a JOIN s.b ON true", {N(None, "a"), N("s", "b")}),
    ("WITH r AS (SELECT * FROM a) SELECT * FROM r", {N(None, "a")}),
    ("WITH r AS (SELECT 1) SELECT * FROM r, s.r", {N("s", "r")}),
    ("WITH a AS (SELECT * FROM a) SELECT * FROM a", {N(None, "a")}),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r", set()),
    ("SELECT * FROM a WHERE EXISTS (WITH a AS (SELECT 1) SELECT * FROM a)", {N(None, "a")}),
    ("SELECT * FROM a WHERE id IN (SELECT id FROM b)", {N(None, "b"), N(None, "a")}),
    ("INSERT INTO a SELECT * FROM b", {N(None, "b")}),
    ("DELETE FROM a WHERE id IN (SELECT id FROM b)", {N(None, "b")}),
    ("EXPLAIN DELETE FROM a", {N(None, "a")}),
    ("COPY a TO STDOUT", {N(None, "a")}),
    ("LOCK TABLE a", {N(None, "a")}),
])
def test_reads(sql: str, reads: set[Name]) -> None:
    assert one(sql).reads == reads


def test_calls_with_literal_args() -> None:
    f = one("SELECT set_config('search_path', $$audit$$, true), lower(name), "
            "pg_catalog.now() FROM t")
    calls = {c.name.name: c for c in f.calls}
    assert calls["set_config"].literal_args[:2] == ("search_path", "audit")
    assert calls["set_config"].literal_args[2] is not None
    assert calls["lower"].literal_args == (None,)
    assert calls["now"] == Call(N("pg_catalog", "now"), ())
    assert f.settings == (Setting("search_path", "audit", True),)
    proc = one("CALL s.p(1, 'x')").calls[0]
    assert proc == Call(N("s", "p"), ("1", "x"), procedure=True)
    assert one("SELECT E'\\x61'::text || x FROM t").calls == ()


@pytest.mark.parametrize(("sql", "settings"), [
    ("SET search_path = audit, public", [Setting("search_path", '"audit","public"')]),
    ('SET search_path TO "Audit", public', [Setting("search_path", '"Audit","public"')]),
    ("SET LOCAL statement_timeout = 5", [Setting("statement_timeout", "5", True)]),
    ("SET TIME ZONE 'UTC'", [Setting("timezone", "UTC")]),
    ("SET DateStyle = ISO", [Setting("datestyle", "iso")]),
    ("RESET work_mem", [Setting("work_mem", None)]),
    ("SET work_mem TO DEFAULT", [Setting("work_mem", None)]),
    ("RESET ALL", [Setting("all", None)]),
    ("SET ROLE bob", [Setting("role", "bob")]),
    ("SET SESSION AUTHORIZATION bob", [Setting("session_authorization", "bob")]),
    ("SET TRANSACTION READ ONLY", [Setting("transaction_read_only", "1")]),
    ("SELECT set_config('Application_Name', 'x', false)", [Setting("application_name", "x")]),
])
def test_settings(sql: str, settings: list[Setting]) -> None:
    assert list(one(sql).settings) == settings


@pytest.mark.parametrize(("sql", "fragment"), [
    ("COPY t TO '/tmp/x'", "COPY TO a server file"),
    ("COPY t FROM '/tmp/x'", "COPY FROM a server file"),
    ("COPY t TO PROGRAM 'gzip > /tmp/x'", "COPY TO PROGRAM"),
    ("COPY t FROM PROGRAM 'id'", "COPY FROM PROGRAM"),
    ("SELECT pg_read_file('/etc/passwd')", "pg_read_file()"),
    ("SELECT * FROM pg_ls_dir('.')", "pg_ls_dir()"),
    ("SELECT lo_import('/etc/passwd')", "lo_import()"),
    ("SELECT lo_export(1, '/tmp/x')", "lo_export()"),
    ("SELECT dblink_exec('c', 'x')", "dblink_exec()"),
    ("LOAD 'auto_explain'", "LOAD"),
    ("CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw", "CREATE SERVER"),
])
def test_file_access(sql: str, fragment: str) -> None:
    assert any(fragment in a for a in one(sql).file_access)


@pytest.mark.parametrize("sql", ["COPY t TO STDOUT", "COPY t FROM STDIN",
                                 "SELECT 'pg_read_file(1)'", "SELECT lower('x')"])
def test_no_file_access(sql: str) -> None:
    assert one(sql).file_access == ()


@pytest.mark.parametrize(("sql", "fragment"), [
    ("GRANT SELECT ON t TO bob", "GRANT/REVOKE"),
    ("REVOKE admin FROM bob", "GRANT/REVOKE role"),
    ("CREATE USER bob", "CREATE ROLE"),
    ("ALTER ROLE bob SUPERUSER", "ALTER ROLE"),
    ("DROP ROLE bob", "DROP ROLE"),
    ("SET ROLE bob", "SET ROLE"),
    ("SET LOCAL ROLE bob", "SET ROLE"),
    ("RESET ROLE", "RESET role"),
    ("SET SESSION AUTHORIZATION bob", "SET SESSION AUTHORIZATION"),
    ("SELECT set_config('role', 'bob', false)", "set_config('role'"),
    ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob", "ALTER DEFAULT PRIVILEGES"),
    ("ALTER FUNCTION f() OWNER TO bob", "OWNER TO"),
    ("ALTER TABLE t OWNER TO bob", "OWNER TO"),
    ("ALTER TABLE t DISABLE ROW LEVEL SECURITY", "ROW LEVEL SECURITY"),
])
def test_privilege(sql: str, fragment: str) -> None:
    assert any(fragment in p for p in one(sql).privilege)


def test_set_config_with_computed_name_is_a_refusal_fact() -> None:
    f = one("SELECT set_config(name, 'x', false) FROM t")
    assert f.refusals and f.refusals[0][0] == "privileges"
    assert f.literal_sensitive


@pytest.mark.parametrize(("sql", "fragment"), [
    ("DO $$ BEGIN END $$", "DO block"),
    ("CREATE PROCEDURE p() LANGUAGE sql AS 'select 1'", "CREATE FUNCTION"),
    ("CREATE TRIGGER t AFTER INSERT ON t EXECUTE FUNCTION f()", "CREATE TRIGGER"),
    ("CREATE RULE r AS ON INSERT TO t DO NOTHING", "CREATE RULE"),
    ("CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()", "CREATE EVENT TRIGGER"),
])
def test_code(sql: str, fragment: str) -> None:
    assert one(sql).code == (fragment,)


def test_create_or_replace_and_objects() -> None:
    f = one("CREATE OR REPLACE VIEW s.v AS SELECT * FROM a")
    assert (f.create_kind, f.or_replace, f.objects) == ("view", True, (("view", N("s", "v")),))
    assert f.reads == {N(None, "a")}
    assert one("CREATE VIEW v AS SELECT 1").or_replace is False
    assert one("DROP TABLE a, s.b").objects == (("table", N(None, "a")), ("table", N("s", "b")))


@pytest.mark.parametrize(("sql", "read_write"), [
    ("BEGIN READ WRITE", True),
    ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE", True),
    ("SET TRANSACTION READ WRITE", True),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", True),
    ("BEGIN", False),
    ("BEGIN READ ONLY", False),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", False),
])
def test_read_write(sql: str, read_write: bool) -> None:
    assert one(sql).read_write is read_write


@pytest.mark.parametrize(("sql", "sensitive"), [
    ("SELECT * FROM t WHERE id = 1", False),
    ("SELECT lower('x') FROM t", False),
    ("WITH r AS (SELECT 1) SELECT * FROM r", False),
    ("EXPLAIN SELECT 1", False),
    ("SELECT set_config('application_name', 'x', false)", True),
    ("DELETE FROM t WHERE id = 1", True),
    ("UPDATE t SET a = 1 WHERE id = 1", True),
    ("INSERT INTO t VALUES (1)", True),
    ("WITH d AS (DELETE FROM t WHERE id = 1 RETURNING 1) SELECT * FROM d", True),
    ("SET application_name = 'x'", True),
    ("SET search_path = a", True),
    ("BEGIN", True),
    ("DROP TABLE t", True),
])
def test_literal_sensitive(sql: str, sensitive: bool) -> None:
    assert one(sql).literal_sensitive is sensitive


@pytest.mark.parametrize("sql", [
    "SELEC 1", "DELETE FROM", "SELECT 'unterminated", "DROP TABLE t; DROP", "/* open comment",
    "SELECT $$x", "\x00", "SELECT 1\x00; DROP TABLE t",
])
def test_unparseable(sql: str) -> None:
    with pytest.raises(Unparseable):
        analyze(sql)


def test_empty_and_comment_only_strings_are_no_statements() -> None:
    assert analyze("") == []
    assert analyze("  -- nothing\n/* here */ ;") == []


def test_multi_statement_split_with_texts() -> None:
    facts = analyze("SELECT 'é;è' ; /* x */ DROP TABLE t;\n-- c\nDELETE FROM t WHERE id = 1;")
    assert [(f.kind, f.text) for f in facts] == [
        ("SelectStmt", "SELECT 'é;è'"),
        ("DropStmt", "DROP TABLE t"),
        ("DeleteStmt", "DELETE FROM t WHERE id = 1"),
    ]
    texts = [f.text for f in analyze("SELECT 'ééé'; DROP TABLE t; SELECT $$ü$$")]
    assert texts == ["SELECT 'ééé'", "DROP TABLE t", "SELECT $$ü$$"]


# -- GuardPolicy: caches and search_path -------------------------------------------------------

def _profiles() -> dict[str, Any]:
    import tomllib
    from pathlib import Path

    from policies.guardrails import parse_profiles
    path = Path(__file__).resolve().parent.parent / "examples" / "policy.toml"
    return parse_profiles(tomllib.loads(path.read_text()))


CATALOG = Catalog.build([
    RelationInfo(N("public", "orders")), RelationInfo(N("public", "payments")),
    RelationInfo(N("audit", "events")), RelationInfo(N("audit", "orders")),
], [
    RoutineInfo(N("pg_catalog", "set_config"), 1, "v"),
    RoutineInfo(N("public", "bump"), 2, "v"), RoutineInfo(N("public", "lookup"), 3, "s"),
])


class FixedCatalog:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.changes = 0

    def current(self, database: str) -> Catalog | None:
        return self.catalog

    def changed(self, database: str) -> None:
        self.changes += 1

    def stale(self, database: str) -> bool:
        return False


@pytest.fixture
def policy() -> GuardPolicy:
    return GuardPolicy(_profiles(), lambda s: "agent-rw", FixedCatalog(CATALOG))


@pytest.fixture
def analyses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real: Callable[[str], list[Facts]] = statements.analyze

    def counting(sql: str) -> list[Facts]:
        seen.append(sql)
        return real(sql)

    monkeypatch.setattr(statements, "analyze", counting)
    return seen


def session(sid: str = "s1") -> SessionInfo:
    return SessionInfo(sid, "alice", "test", "test")


def decide(policy: GuardPolicy, sql: str, s: SessionInfo) -> Allow | Deny:
    """One decision as the proxy makes it: a wait for the catalog is followed by a re-read
    (the catalog here is fixed) and one more decision."""
    decision = policy.decide(Statement(sql, "query"), s)
    if isinstance(decision, Hold) and decision.wait_for == "catalog":
        s.policy_state["catalog_retry"] = True
        try:
            decision = policy.decide(Statement(sql, "query"), s)
        finally:
            s.policy_state.pop("catalog_retry")
    assert isinstance(decision, Allow | Deny)
    return decision


def test_same_normalized_read_is_analyzed_once(policy: GuardPolicy,
                                               analyses: list[str]) -> None:
    s = session()
    for i in range(5):
        assert isinstance(decide(policy, f"SELECT * FROM orders WHERE id = {i}", s), Allow)
    assert isinstance(decide(policy, "SELECT * FROM orders WHERE id = 0", session("s2")), Allow)
    assert len(analyses) == 1


def test_exact_text_is_analyzed_once_even_when_literal_sensitive(
        policy: GuardPolicy, analyses: list[str]) -> None:
    s = session()
    for _ in range(3):
        decision = decide(policy, "DELETE FROM orders WHERE 1 = 1", s)
        assert isinstance(decision, Deny) and decision.rule == "bounded-writes"
    assert len(analyses) == 1


@pytest.mark.parametrize("first", ["role", "application_name"])
def test_literal_sensitive_statements_are_decided_one_by_one(
        policy: GuardPolicy, analyses: list[str], first: str) -> None:
    s = session()
    other = "application_name" if first == "role" else "role"
    results = {}
    for name in (first, other):
        results[name] = decide(policy, f"SELECT set_config('{name}', 'postgres', false)", s)
    assert isinstance(results["application_name"], Allow)
    refused = results["role"]
    assert isinstance(refused, Deny) and refused.rule == "no-privileges"
    assert refused.message.startswith("wiregate: blocked by rule no-privileges: ")
    assert len(analyses) == 2


@pytest.mark.parametrize(("first", "second"), [
    ("DELETE FROM orders WHERE id = 1", "DELETE FROM orders WHERE 1 = 1"),
    ("DELETE FROM orders WHERE 1 = 1", "DELETE FROM orders WHERE id = 1"),
    ("UPDATE orders SET a = 1 WHERE id = 2", "UPDATE orders SET a = 1 WHERE 2 = 2"),
])
def test_writes_that_normalize_alike_are_not_shared(policy: GuardPolicy, first: str,
                                                    second: str) -> None:
    s = session()
    expected = {sql: "1 = 1" not in sql and "2 = 2" not in sql for sql in (first, second)}
    for sql in (first, second):
        assert isinstance(decide(policy, sql, s), Allow) is expected[sql], sql


def test_search_path_changes_which_table_a_write_hits(policy: GuardPolicy) -> None:
    s = session()
    assert isinstance(decide(policy, "INSERT INTO orders VALUES (1)", s), Allow)
    refused = decide(policy, "INSERT INTO events VALUES (1)", s)
    assert isinstance(refused, Deny) and "not in the catalog" in refused.message

    assert isinstance(decide(policy, "SET search_path = audit, public", s), Allow)
    refused = decide(policy, "INSERT INTO events VALUES (1)", s)
    assert isinstance(refused, Deny) and refused.rule == "protected-tables"
    assert "audit.events" in refused.message
    refused = decide(policy, "INSERT INTO orders VALUES (1)", s)   # now audit.orders
    assert isinstance(refused, Deny) and refused.rule == "protected-tables"

    # Deliberate: every schema the session has named stays a candidate (a SET that failed or
    # was rolled back must not hide a protected table), so audit.orders still counts.
    assert isinstance(decide(policy, "SET search_path = public", s), Allow)
    assert isinstance(decide(policy, "INSERT INTO orders VALUES (1)", s), Deny)
    # Other sessions are not affected.
    assert isinstance(decide(policy, "INSERT INTO orders VALUES (1)", session("s2")), Allow)


def test_refused_search_path_change_is_not_tracked(policy: GuardPolicy) -> None:
    s = session()
    refused = decide(policy, "SET search_path = audit; DROP TABLE x", s)
    assert isinstance(refused, Deny) and refused.rule == "no-ddl"
    assert isinstance(decide(policy, "INSERT INTO orders VALUES (1)", s), Allow)


def test_startup_search_path_is_used() -> None:
    policy = GuardPolicy(_profiles(), lambda s: "agent-rw", FixedCatalog(CATALOG))
    s = session()
    policy.session_parameters({"user": "alice", "search_path": "audit"}, s)
    decision = decide(policy, "INSERT INTO orders VALUES (1)", s)
    assert isinstance(decision, Deny) and decision.rule == "protected-tables"


def test_unparseable_is_refused(policy: GuardPolicy) -> None:
    decision = decide(policy, "SELEC * FROM orders", session())
    assert isinstance(decision, Deny) and decision.rule == "wiregate.parse"


def test_ddl_asks_for_a_catalog_refresh_once_its_transaction_ended() -> None:
    catalogs = FixedCatalog(CATALOG)
    policy = GuardPolicy(_profiles(), lambda s: "human", catalogs)
    s = session()
    s.transaction_status = "T"
    assert isinstance(decide(policy, "CREATE TABLE t (a int)", s), Allow)
    assert isinstance(decide(policy, "SELECT 1", s), Allow)
    assert catalogs.changes == 0, "not while the CREATE is uncommitted"
    s.transaction_status = "I"
    assert isinstance(decide(policy, "SELECT 1", s), Allow)
    assert catalogs.changes == 1
    assert isinstance(decide(policy, "SELECT 1", s), Allow)
    assert catalogs.changes == 1


def test_function_call_message_is_judged_by_oid(policy: GuardPolicy) -> None:
    s = session()
    ok = policy.decide(Statement("", "function_call", function_oid=3), s)
    assert isinstance(ok, Allow)
    refused = policy.decide(Statement("", "function_call", function_oid=2), s)
    assert isinstance(refused, Deny) and refused.rule == "no-code"
    unknown = policy.decide(Statement("", "function_call", function_oid=99), s)
    assert isinstance(unknown, Hold) and unknown.wait_for == "catalog"
    s.policy_state["catalog_retry"] = True
    unknown = policy.decide(Statement("", "function_call", function_oid=99), s)
    assert isinstance(unknown, Deny) and unknown.rule == "wiregate.catalog"

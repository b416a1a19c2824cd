"""The guardrails on MySQL/MariaDB statement text: the same rules and rule ids as PostgreSQL's,
decided on sqlglot's tree, with executable comments read as the server reads them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from policies.catalog import Catalog, RelationInfo
from policies.decision import Allow, Deny, Hold, SessionInfo, Statement
from policies.facts import Name
from policies.guard import GuardPolicy, mysql_error
from policies.guardrails import Context, Guardrails, Refusal, parse_profiles
from policies.mysql_statements import analyze

POLICY = Path(__file__).resolve().parent.parent / "examples" / "policy.toml"
PROFILES = parse_profiles(tomllib.loads(POLICY.read_text()))
CATALOG = Catalog.build([RelationInfo(Name("public", "payments")),
                         RelationInfo(Name("public", "orders"))], [])


def judge(sql: str, profile: str = "agent-rw", server: str = "mariadb") -> Refusal | None:
    ctx = Context(CATALOG, ("public",), "agent")
    return Guardrails(PROFILES[profile]).check(analyze(sql, server=server), ctx)


REFUSED = [
    ("DELETE FROM orders", "bounded-writes"),
    ("delete   from `orders` -- all of it\n", "bounded-writes"),
    ("DELETE FROM orders WHERE 1=1", "bounded-writes"),
    ("UPDATE orders SET status = 'x' WHERE id = id", "bounded-writes"),
    ("UPDATE orders SET status = 'x' WHERE ?", "bounded-writes"),
    ("DELETE FROM orders WHERE status = 'a' OR TRUE", "bounded-writes"),
    ("DELETE o FROM orders o JOIN payments p ON 1=1", "bounded-writes"),
    ("/*!DROP TABLE orders*/", "no-ddl"),
    ("SELECT 1; /*!50600 DROP TABLE orders */", "no-ddl"),
    ("/*M!100500 DROP TABLE orders */", "no-ddl"),
    ("TRUNCATE TABLE orders", "no-ddl"),
    ("RENAME TABLE orders TO orders_old", "no-ddl"),
    ("ALTER TABLE orders ADD COLUMN x INT", "no-ddl"),
    ("UPDATE payments SET amount = 0 WHERE id = 2", "protected-tables"),
    ("INSERT INTO `payments` VALUES (1)", "protected-tables"),
    ("REPLACE INTO payments VALUES (1)", "protected-tables"),
    ("INSERT INTO payments (id) VALUES (1) ON DUPLICATE KEY UPDATE id = 2", "protected-tables"),
    ("SELECT * FROM orders INTO OUTFILE '/tmp/x'", "no-files"),
    ("SELECT * FROM orders INTO DUMPFILE '/tmp/x'", "no-files"),
    ("LOAD DATA INFILE '/etc/passwd' INTO TABLE orders", "no-files"),
    ("LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE orders", "no-files"),
    ("SELECT load_file('/etc/passwd')", "no-files"),
    ("SET GLOBAL general_log_file = '/tmp/x'", "no-files"),
    ("GRANT ALL ON *.* TO 'x'@'%'", "no-privileges"),
    ("CREATE USER 'x'@'%' IDENTIFIED BY 'y'", "no-privileges"),
    ("SET PASSWORD FOR 'root'@'%' = PASSWORD('x')", "no-privileges"),
    ("PREPARE s FROM CONCAT('DROP ', 'TABLE orders')", "no-code"),
    ("PREPARE s FROM @sql", "no-code"),
    ("PREPARE s FROM 'DELETE FROM orders'", "bounded-writes"),
    ("BEGIN NOT ATOMIC DELETE FROM orders WHERE id = 1; END", "no-code"),
    ("EXECUTE IMMEDIATE 'DROP TABLE orders'", "no-code"),
    ("CREATE PROCEDURE p() BEGIN DELETE FROM orders; END", "no-code"),
]


@pytest.mark.parametrize(("sql", "rule"), REFUSED)
def test_refused_with_the_rule_named(sql: str, rule: str) -> None:
    refusal = judge(sql)
    assert refusal is not None, sql
    assert refusal.rule == rule, (sql, refusal)
    assert refusal.message.startswith(f"wiregate: blocked by rule {rule}: ")


ALLOWED = [
    "SELECT * FROM orders WHERE id = 1",
    "SELECT o.*, p.amount FROM orders o JOIN payments p ON p.order_id = o.id",
    "WITH x AS (SELECT id FROM orders) SELECT * FROM x",
    "SELECT * FROM orders WHERE note = 'DROP TABLE x; DELETE FROM orders WHERE 1=1'",
    "SELECT 1 /* DROP TABLE orders */",
    "DELETE FROM orders WHERE id = 1",
    "UPDATE orders SET status = 'shipped' WHERE id = ?",
    "INSERT INTO orders (id) VALUES (1)",
    "SELECT * FROM orders FOR UPDATE",
    "START TRANSACTION",
    "COMMIT",
    "SET NAMES utf8mb4",
    "SET autocommit = 1",
    "SHOW TABLES",
    "/*M!100500 SELECT 1 */",
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_ordinary_traffic_passes(sql: str) -> None:
    assert judge(sql) is None, sql


def test_mariadb_only_comment_is_ignored_by_mysql() -> None:
    assert judge("SELECT 1 /*M! ; DROP TABLE orders */", server="mysql") is None
    assert judge("SELECT 1 /*M! ; DROP TABLE orders */", server="mariadb") is not None


def test_read_only_profile_refuses_every_write_and_read_write_transactions() -> None:
    for sql in ("INSERT INTO orders VALUES (1)", "START TRANSACTION READ WRITE",
                "SET SESSION TRANSACTION READ WRITE"):
        refusal = judge(sql, "agent-readonly")
        assert refusal is not None and refusal.rule == "read-only", sql
    assert judge("SELECT * FROM orders", "agent-readonly") is None


def test_error_numbers_fit_the_refusal() -> None:
    policy = GuardPolicy(PROFILES, lambda s: "agent-rw", dialect="mysql")
    session = SessionInfo("1", "agent", "test", "test")
    deny = policy.decide(Statement("DROP TABLE orders", "query"), session)
    assert isinstance(deny, Deny)
    cases = {"DROP TABLE orders": 1227, "DELETE FROM orders": 1142,
             "GRANT ALL ON *.* TO x": 1227}
    for sql, errno in cases.items():
        refusal = judge(sql)
        assert refusal is not None
        number, state, message = mysql_error(refusal)
        assert (number, state) == (errno, "42000"), sql
        assert message.startswith("wiregate: blocked by rule")
    parse = Refusal("wiregate.parse", "parse", "x")
    assert mysql_error(parse)[:2] == (1064, "42000")


def test_use_and_init_db_move_unqualified_names_to_another_database() -> None:
    profiles = dict(PROFILES)
    catalog = Catalog.build([RelationInfo(Name("shop", "orders")),
                             RelationInfo(Name("billing", "payments"))], [])
    protect = parse_profiles(tomllib.loads(
        '[profiles.p]\n[[profiles.p.rule]]\nid = "protect"\nkind = "protected_tables"\n'
        'tables = ["billing.payments"]\n'))
    profiles.update(protect)

    class Fixed:
        def current(self, database: str) -> Catalog | None:
            return catalog

        def changed(self, database: str) -> None:
            return None

        def stale(self, database: str) -> bool:
            return False

    policy = GuardPolicy(profiles, lambda s: "p", Fixed(), dialect="mysql")
    session = SessionInfo("1", "agent", "shop", "shop")
    write = Statement("INSERT INTO payments VALUES (1)", "query")
    first = policy.decide(write, session)
    assert isinstance(first, Hold)  # not in the catalog under shop: re-read first
    assert isinstance(policy.decide(Statement("USE billing", "query"), session), Allow)
    refused = policy.decide(write, session)
    assert isinstance(refused, Deny) and refused.rule == "protect"
    other = SessionInfo("2", "agent", "shop", "shop")
    policy.use_database(other, "billing")
    assert isinstance(policy.decide(write, other), Deny)


def test_handler_statements_are_reads_of_the_table_opened() -> None:
    """HANDLER is outside the statement analysis; the guard reads OPEN as a read of its
    table (so table rules apply), and a READ's condition only when it cannot call, store or
    select anything."""
    deny = parse_profiles(tomllib.loads(
        '[profiles.p]\n[[profiles.p.rule]]\nid = "no-payments"\nkind = "tables"\n'
        'deny = ["public.payments"]\n'))
    policy = GuardPolicy(deny, lambda s: "p", dialect="mysql")
    session = SessionInfo("1", "agent", "route", "public")
    refused = policy.decide(Statement("HANDLER payments OPEN", "query"), session)
    assert isinstance(refused, Deny) and refused.rule == "no-payments"
    refused = policy.decide(Statement("HANDLER public.payments OPEN AS p", "query"), session)
    assert isinstance(refused, Deny) and refused.rule == "no-payments"
    for sql in ("HANDLER orders OPEN", "HANDLER orders OPEN AS o", "HANDLER o READ FIRST",
                "HANDLER o READ `PRIMARY` = (1, 'a') WHERE status IN ('x') LIMIT 5",
                "HANDLER o READ idx NEXT WHERE (a > 1) AND NOT (b < 2)", "HANDLER o CLOSE"):
        assert policy.decide(Statement(sql, "query"), session) == Allow(), sql
    for sql in ("HANDLER o READ FIRST WHERE sleep(10)", "HANDLER o READ FIRST WHERE @v := 1",
                "HANDLER o READ FIRST WHERE id IN (SELECT id FROM payments)",
                "HANDLER o READ FIRST; DROP TABLE orders", "HANDLER o", "HANDLER db.o CLOSE",
                "HANDLER orders OPEN AS a b"):
        decision = policy.decide(Statement(sql, "query"), session)
        assert isinstance(decision, Deny), sql
        assert decision.rule in ("wiregate.parse", "wiregate.unclassified"), sql


def test_executable_comments_are_read_as_the_catalog_server_reads_them() -> None:
    def catalog_of(server: str) -> Catalog:
        return Catalog.build([RelationInfo(Name("public", "orders"))], [], server=server,
                             server_version=(8, 0, 36) if server == "mysql" else (10, 11, 0))

    class Fixed:
        def __init__(self, catalog: Catalog) -> None:
            self.catalog = catalog

        def current(self, database: str) -> Catalog | None:
            return self.catalog

        def changed(self, database: str) -> None:
            return None

        def stale(self, database: str) -> bool:
            return False

    sql = Statement("SELECT 1 /*M! ; DROP TABLE orders */", "query")
    session = SessionInfo("1", "agent", "route", "public")
    mysql = GuardPolicy(PROFILES, lambda s: "agent-rw", Fixed(catalog_of("mysql")),
                        dialect="mysql")
    mariadb = GuardPolicy(PROFILES, lambda s: "agent-rw", Fixed(catalog_of("mariadb")),
                          dialect="mysql")
    assert mysql.decide(sql, session) == Allow()
    refused = mariadb.decide(sql, session)
    assert isinstance(refused, Deny) and refused.rule == "no-ddl"
    again = Catalog.from_json(catalog_of("mysql").to_json())
    assert (again.server, again.server_version) == ("mysql", (8, 0, 36))


@pytest.mark.parametrize("sql", [
    "CREATE OR REPLACE TABLE audit.log (id INT)", "DROP DATABASE audit", "DROP SCHEMA audit",
])
def test_replacing_or_dropping_what_holds_a_protected_table_is_refused(sql: str) -> None:
    catalog = Catalog.build([RelationInfo(Name("audit", "log"))], [])
    refusal = Guardrails(PROFILES["human"]).check(analyze(sql), Context(catalog, ("test",), "u"))
    assert refusal is not None and refusal.rule == "protected-tables"

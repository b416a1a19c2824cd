"""Masking decided for MySQL/MariaDB statements through ``GuardPolicy(dialect="mysql")``, with a
hand-built catalog: which cells of a result come back masked (applied with
``mysql_masking.plan`` as the proxy applies them), which statements are refused because they
would copy masked values somewhere they are not masked, and how errors and warnings are
scrubbed."""

from __future__ import annotations

import json
import struct
import tomllib
from collections.abc import Sequence

import pytest

from policies.catalog import Catalog, RelationInfo, RoutineInfo
from policies.decision import Allow, Decision, Deny, SessionInfo, Statement
from policies.facts import Name
from policies.guard import GuardPolicy
from policies.guardrails import parse_profiles
from policies.masking import WITHHELD
from policies.mysql_masking import MySQLColumn, plan
from protocols.mysql import types as t

# examples/policy.toml has no masking section; this is the shape its profiles would take.
POLICY = """
[profiles.masked]
[profiles.masked.masking]
default_strategy = "redact"
[[profiles.masked.masking.column]]
columns = ["shop.customers.email"]
strategy = "email"
[[profiles.masked.masking.column]]
columns = ["shop.customers.ssn"]
strategy = "partial"
keep_last = 4

[profiles.strict]
[profiles.strict.masking]
on_unresolved = "refuse"
[[profiles.strict.masking.column]]
columns = ["shop.customers.EMAIL", "shop.customers.ssn"]
strategy = "redact"

[profiles.scanning]
[profiles.scanning.masking]
detectors = ["email"]
[[profiles.scanning.masking.column]]
columns = ["shop.customers.email"]
strategy = "redact"

[profiles.plain]
[[profiles.plain.rule]]
id = "no-ddl"
kind = "ddl"
"""
PROFILES = parse_profiles(tomllib.loads(POLICY))

# The proxy's loader (proxy/mysql_catalog.py) gives column names as the server spells them
# and view definitions as information_schema.VIEWS prints them, fully qualified.
CATALOG = Catalog.build([
    RelationInfo(Name("shop", "customers"), columns=("id", "name", "Email", "ssn")),
    RelationInfo(Name("shop", "orders"), columns=("id", "customer_id", "total", "note")),
    RelationInfo(Name("shop", "archive"), columns=("id", "contact")),
    RelationInfo(Name("shop", "v_contacts"), "v", (Name("shop", "customers"),), (),
                 ("id", "contact"),
                 "select `shop`.`customers`.`id` AS `id`,lcase(`shop`.`customers`.`Email`) "
                 "AS `contact` from `shop`.`customers`"),
    RelationInfo(Name("shop", "v_hidden"), "v", (), (), ("id", "contact"), None),
    RelationInfo(Name("shop", "v_broken"), "v", (), (), ("id",), "select from where"),
    RelationInfo(Name("shop", "v_wide"), "v", (Name("shop", "orders"),), (), ("id",),
                 "select `shop`.`orders`.`id` AS `id`,`shop`.`orders`.`total` AS `total` "
                 "from `shop`.`orders`"),
    RelationInfo(Name("shop", "v_loop_a"), "v", (Name("shop", "v_loop_b"),), (), ("x",),
                 "select `shop`.`v_loop_b`.`x` AS `x` from `shop`.`v_loop_b`"),
    RelationInfo(Name("shop", "v_loop_b"), "v", (Name("shop", "v_loop_a"),), (), ("x",),
                 "select `shop`.`v_loop_a`.`x` AS `x` from `shop`.`v_loop_a`"),
    RelationInfo(Name("other", "customers"), columns=("id", "email")),
], [RoutineInfo(Name("shop", "peek"), kind="f"), RoutineInfo(Name("shop", "tidy"), kind="p")])

ROW = [b"7", b"Alice", b"alice@example.com", b"078-05-1120"]   # id, name, email, ssn
TOKEN = b"****"


class Catalogs:
    """One catalog for every route; remembers which keys it was asked for."""

    def __init__(self, catalog: Catalog = CATALOG) -> None:
        self.catalog = catalog
        self.asked: list[str] = []

    def current(self, database: str) -> Catalog | None:
        self.asked.append(database)
        return self.catalog

    def changed(self, database: str) -> None:
        return None

    def stale(self, database: str) -> bool:
        return False


def policy(profile: str = "masked", catalogs: Catalogs | None = None) -> GuardPolicy:
    return GuardPolicy(PROFILES, lambda s: profile, catalogs or Catalogs(), dialect="mysql",
                       mask_keys={profile: b"k" * 32})


def session(upstream: str = "shop") -> SessionInfo:
    # The route key the client connected with is not a database of the upstream.
    return SessionInfo("1", "agent", "route-key", upstream)


def decide(sql: str, profile: str = "masked", s: SessionInfo | None = None,
           p: GuardPolicy | None = None) -> Decision:
    return (p or policy(profile)).decide(Statement(sql, "query"), s or session())


def column(i: int, type_: int = t.VAR_STRING, charset: int = 45, length: int = 1020,
           flags: int = 0) -> MySQLColumn:
    return MySQLColumn(i, "shop", "customers", "customers", f"c{i}", f"c{i}", type_, flags,
                       charset, 0, length)


def rows(decision: Decision, row: Sequence[bytes | None],
         columns: Sequence[MySQLColumn] | None = None, binary: bool = False
         ) -> list[bytes | None]:
    """The row as the client receives it: each cell through the plan of its column."""
    assert isinstance(decision, Allow), decision
    cols = list(columns) if columns is not None else [column(i) for i in range(len(row))]
    rewrites = plan(decision.transform, cols, binary)
    return [rewrites[i](cell) if i in rewrites else cell for i, cell in enumerate(row)]


def refused(decision: Decision, rule: str = "wiregate.masking") -> str:
    assert isinstance(decision, Deny), decision
    assert decision.rule == rule, decision
    return decision.message


# -- the session's database -----------------------------------------------------------------


def test_session_starts_in_the_upstream_database_not_the_route_key() -> None:
    catalogs = Catalogs()
    p = policy(catalogs=catalogs)
    s = session()
    # Resolved in shop: id passes, email keeps its own strategy.
    out = rows(decide("SELECT id, email FROM customers", p=p, s=s), ROW[:1] + ROW[2:3])
    assert out == [b"7", b"a***@example.com"]
    assert set(catalogs.asked) == {"route-key"}   # catalogs are keyed by the route


def test_use_and_init_db_move_name_resolution() -> None:
    p, s = policy(), session()
    assert rows(decide("USE other", p=p, s=s), []) == []
    # other.customers has no masked column in this profile: its email passes.
    assert rows(decide("SELECT email FROM customers", p=p, s=s), [b"x@y.io"]) == [b"x@y.io"]
    p.use_database(s, "shop")
    assert rows(decide("SELECT email FROM customers", p=p, s=s), [b"x@y.io"]) == [b"x***@y.io"]
    fresh = session("")
    # No current database: unqualified names cannot be traced, so the rows are masked whole.
    assert rows(decide("SELECT id FROM customers", s=fresh), [b"7"]) == [TOKEN]
    assert rows(decide("SELECT id FROM shop.customers", s=fresh), [b"7"]) == [b"7"]


# -- what comes back masked -----------------------------------------------------------------


def test_plain_select_masks_only_the_masked_positions() -> None:
    out = rows(decide("SELECT id, name, email, ssn FROM customers"), ROW)
    assert out == [b"7", b"Alice", b"a***@example.com", b"***-**-1120"]


def test_column_names_ignore_case_table_names_do_not() -> None:
    out = rows(decide("SELECT EMAIL, c.Ssn FROM customers c"), ROW[2:])
    assert out == [b"a***@example.com", b"***-**-1120"]
    # `Customers` is another table on Linux, one the catalog does not know: masked whole.
    assert rows(decide("SELECT id FROM Customers"), [b"7"]) == [TOKEN]


@pytest.mark.parametrize("sql", [
    "SELECT email AS e FROM customers",
    "SELECT c.email FROM customers AS c",
    "SELECT shop.customers.email FROM shop.customers",
    "SELECT `email` FROM `shop`.`customers`",
])
def test_aliases_and_qualification_keep_the_column_strategy(sql: str) -> None:
    assert rows(decide(sql), [b"alice@example.com"]) == [b"a***@example.com"]


@pytest.mark.parametrize("sql", [
    "SELECT LOWER(email) FROM customers",
    "SELECT CONCAT(name, ' <', email, '>') FROM customers",
    "SELECT JSON_OBJECT('e', email) FROM customers",
    "SELECT CAST(email AS CHAR(40)) FROM customers",
    "SELECT CONVERT(ssn USING latin1) FROM customers",
    "SELECT SUBSTR(email, 1, 3) FROM customers",
    "SELECT COALESCE(email, '') FROM customers",
    "SELECT GROUP_CONCAT(email SEPARATOR ',') FROM customers",
    "SELECT IF(id > 1, email, NULL) FROM customers",
    "SELECT (SELECT MAX(email) FROM customers) AS m",
])
def test_values_derived_from_masked_columns_are_masked_whole(sql: str) -> None:
    assert rows(decide(sql), [b"<alice@example.com>"]) == [TOKEN]


def test_select_star_masks_by_position() -> None:
    for sql in ("SELECT * FROM customers", "SELECT c.* FROM customers c", "TABLE customers"):
        assert rows(decide(sql), ROW) == [b"7", b"Alice", b"a***@example.com",
                                          b"***-**-1120"], sql


def test_views_carry_their_definition_lineage() -> None:
    assert rows(decide("SELECT id, contact FROM v_contacts"), [b"7", b"alice@example.com"]) \
        == [b"7", TOKEN]
    assert rows(decide("SELECT * FROM v_contacts"), [b"7", b"a@b.c"]) == [b"7", TOKEN]
    # A view whose definition the catalog user cannot see, does not parse, does not match
    # the view's columns, or is part of a cycle: masked whole.
    for view in ("v_hidden", "v_broken", "v_wide"):
        assert rows(decide(f"SELECT id FROM {view}"), [b"7"]) == [TOKEN], view
    assert rows(decide("SELECT x FROM v_loop_a"), [b"1"]) == [TOKEN]


def test_unions_derived_tables_and_ctes() -> None:
    assert rows(decide("SELECT id FROM orders UNION SELECT email FROM customers"),
                [b"alice@example.com"]) == [TOKEN]
    assert rows(decide("SELECT id FROM orders UNION ALL SELECT customer_id FROM orders"),
                [b"3"]) == [b"3"]
    assert rows(decide("SELECT d.e, d.i FROM (SELECT email AS e, id AS i FROM customers) d"),
                [b"alice@example.com", b"7"]) == [b"a***@example.com", b"7"]
    assert rows(decide("WITH x AS (SELECT ssn, name FROM customers) SELECT * FROM x"),
                [b"078-05-1120", b"Alice"]) == [b"***-**-1120", b"Alice"]


def test_filtering_and_joining_on_masked_columns_returns_clean_rows() -> None:
    decision = decide("SELECT o.total FROM orders o JOIN customers c ON c.id = o.customer_id "
                      "WHERE c.email = 'alice@example.com' ORDER BY c.ssn")
    assert rows(decision, [b"12.50"]) == [b"12.50"]


def test_stored_functions_and_statistics_are_untraceable() -> None:
    # peek() is the database's own: it may return any value it reads.
    assert rows(decide("SELECT peek(id) FROM orders"), [b"alice@example.com"]) == [TOKEN]
    assert rows(decide("SELECT shop.lower(name) FROM customers"), [b"a"]) == [TOKEN]
    assert rows(decide("SELECT LOWER(name) FROM customers"), [b"alice"]) == [b"alice"]
    stats = rows(decide("SELECT column_name, min_value, max_value FROM mysql.column_stats"),
                 [b"email", b"alice@example.com", b"zoe@example.com"])
    assert stats == [b"email", TOKEN, TOKEN]


def test_returning_rows_are_masked() -> None:
    decision = decide("DELETE FROM customers WHERE id = 7 RETURNING id, email")
    assert rows(decision, [b"7", b"alice@example.com"]) == [b"7", b"a***@example.com"]


# -- HANDLER --------------------------------------------------------------------------------


def test_handler_reads_are_masked_by_the_table_opened() -> None:
    p, s = policy(), session()
    opened = decide("HANDLER customers OPEN AS h", p=p, s=s)
    assert isinstance(opened, Allow) and opened.transform is None
    for read in ("HANDLER h READ FIRST", "HANDLER h READ `PRIMARY` NEXT",
                 "HANDLER h READ `PRIMARY` >= (5) WHERE email <> 'x' LIMIT 2"):
        assert rows(decide(read, p=p, s=s), ROW) == [b"7", b"Alice", b"a***@example.com",
                                                     b"***-**-1120"], read
    assert rows(decide("HANDLER h CLOSE", p=p, s=s), []) == []
    # A handler name the session has not opened (or closed): masked whole.
    assert rows(decide("HANDLER h READ FIRST", p=p, s=s), ROW) == [TOKEN] * 4
    # Opening a clean table under the name of an open one fails on the server, which keeps
    # the first: the name's rows are then masked whole, never read as the clean table's.
    decide("HANDLER customers OPEN AS h2", p=p, s=s)
    decide("HANDLER orders OPEN AS h2", p=p, s=s)
    assert rows(decide("HANDLER h2 READ FIRST", p=p, s=s), ROW) == [TOKEN] * 4
    decide("HANDLER orders OPEN", p=p, s=s)
    assert rows(decide("HANDLER orders READ FIRST", p=p, s=s), [b"1", b"7", b"3", b"n"]) \
        == [b"1", b"7", b"3", b"n"]


def test_handler_read_conditions_may_only_filter() -> None:
    for sql in ("HANDLER h READ FIRST WHERE EXTRACTVALUE(1, CONCAT(0x7e, email))",
                "HANDLER h READ FIRST WHERE (@v := email) IS NOT NULL",
                "HANDLER h READ FIRST WHERE id = (SELECT 1)"):
        refused(decide(sql), "wiregate.parse")


# -- copying masked values out of the result ------------------------------------------------


@pytest.mark.parametrize(("sql", "where"), [
    ("INSERT INTO archive SELECT id, email FROM customers", "column shop.archive.contact"),
    ("INSERT INTO archive (contact, id) SELECT LOWER(email), id FROM customers",
     "column shop.archive.contact"),
    ("REPLACE INTO archive SELECT id, ssn FROM customers", "column shop.archive.contact"),
    ("INSERT INTO archive (id, contact) VALUES (1, 'x') ON DUPLICATE KEY UPDATE "
     "contact = (SELECT email FROM customers LIMIT 1)", "column shop.archive.contact"),
    ("UPDATE archive a JOIN customers c ON c.id = a.id SET a.contact = c.email",
     "column shop.archive.contact"),
    ("UPDATE customers SET name = email WHERE id = 1", "column shop.customers.name"),
    ("CREATE TABLE copy AS SELECT id, email FROM customers", "a new table"),
    ("CREATE TABLE copy SELECT ssn FROM customers", "a new table"),
    ("SELECT email INTO @e FROM customers LIMIT 1", "a user variable"),
    ("SELECT id, email FROM customers LIMIT 1 INTO @i, @e", "a user variable"),
    ("SET @e = (SELECT email FROM customers LIMIT 1)", "a user variable"),
    ("SELECT @e := email FROM customers", "a user variable"),
    ("SELECT id FROM customers WHERE (@e := ssn) IS NOT NULL", "a user variable"),
    ("SELECT email FROM customers INTO OUTFILE '/tmp/x'", "a file"),
    ("SELECT ssn FROM customers LIMIT 1 INTO DUMPFILE '/tmp/x'", "a file"),
    ("SELECT EXTRACTVALUE(1, CONCAT(0x7e, email)) FROM customers", "an error message"),
    ("SELECT id FROM customers WHERE UPDATEXML(1, CONCAT(0x7e, ssn), 1)", "an error message"),
    ("SELECT COUNT(*) FROM customers GROUP BY CONCAT(email, FLOOR(RAND(0) * 2))",
     "an error message"),
    ("PREPARE s FROM 'INSERT INTO archive SELECT id, email FROM customers'",
     "column shop.archive.contact"),
    ("INSERT INTO archive SELECT 1, peek(1)", "column shop.archive.contact"),
    ("INSERT INTO archive SELECT id, contact FROM v_contacts", "column shop.archive.contact"),
])
def test_copies_of_masked_values_are_refused(sql: str, where: str) -> None:
    message = refused(decide(sql))
    assert where in message, message
    assert "read back unmasked" in message


def test_clean_copies_and_writes_pass() -> None:
    for sql in ("INSERT INTO archive SELECT id, name FROM customers",
                "UPDATE customers SET name = 'x' WHERE email = 'alice@example.com'",
                "SELECT name INTO @n FROM customers LIMIT 1",
                "SET @n = (SELECT COUNT(*) FROM customers WHERE email LIKE '%x')",
                "CREATE TABLE copy AS SELECT id FROM customers WHERE ssn LIKE '0%'"):
        assert isinstance(decide(sql), Allow), sql


def test_statements_built_at_run_time_are_refused() -> None:
    for sql in ("PREPARE s FROM @q", "PREPARE s FROM CONCAT('SELECT email ', 'FROM customers')",
                "EXECUTE IMMEDIATE CONCAT('SELECT email FROM ', 'customers')"):
        assert isinstance(decide(sql), Deny), sql


# -- SQL PREPARE / EXECUTE ------------------------------------------------------------------


def test_sql_prepared_statements_are_masked_at_each_execute() -> None:
    p, s = policy(), session()
    prepared = decide("PREPARE s FROM 'SELECT id, email FROM customers'", p=p, s=s)
    assert isinstance(prepared, Allow) and prepared.transform is None
    for _ in range(2):
        assert rows(decide("EXECUTE s", p=p, s=s), [b"7", b"alice@example.com"]) \
            == [b"7", b"a***@example.com"]
    # Names are not case-sensitive.
    assert rows(decide("EXECUTE S", p=p, s=s), [b"7", b"a@b.c"]) == [b"7", b"a***@b.c"]
    # Preparing again under the name replaces the statement.
    decide("PREPARE s FROM 'SELECT id, name FROM customers'", p=p, s=s)
    assert rows(decide("EXECUTE s", p=p, s=s), [b"7", b"Alice"]) == [b"7", b"Alice"]
    decide("DEALLOCATE PREPARE s", p=p, s=s)
    assert rows(decide("EXECUTE s", p=p, s=s), [b"7", b"Alice"]) == [TOKEN, TOKEN]
    decide("PREPARE t FROM 'SELECT ssn FROM customers'", p=p, s=s)
    decide("DROP PREPARE t", p=p, s=s)
    assert rows(decide("EXECUTE t", p=p, s=s), [b"7"]) == [TOKEN]
    # Another session never prepared s: what its EXECUTE returns is masked whole.
    assert rows(decide("EXECUTE s", p=p, s=SessionInfo("2", "a", "route-key", "shop")),
                [b"7"]) == [TOKEN]


def test_prepared_show_warnings_is_scrubbed_at_execute() -> None:
    p, s = policy(), session()
    decide("PREPARE w FROM 'SHOW WARNINGS'", p=p, s=s)
    out = rows(decide("EXECUTE w", p=p, s=s), *warnings_row())
    assert b"alice" not in (out[2] or b"")


# -- several statements ---------------------------------------------------------------------


def test_several_statements_returning_masked_columns_are_refused() -> None:
    for sql in ("SELECT id FROM orders; SELECT email FROM customers",
                "SELECT email FROM customers; SELECT 1",
                "SELECT 1; SHOW WARNINGS"):
        assert "several statements" in refused(decide(sql)), sql
    clean = decide("SELECT id FROM orders; SELECT total FROM orders")
    assert rows(clean, [b"1"]) == [b"1"]
    # A USE inside the string moves the names after it: other.customers.email is clean,
    # shop.customers.email is not.
    p, s = policy(), session("other")
    assert isinstance(decide("SELECT 1; SELECT email FROM customers", p=p, s=s), Allow)
    assert "several statements" in refused(
        decide("USE shop; SELECT 1; SELECT email FROM customers", p=p, s=s))


# -- errors and warnings --------------------------------------------------------------------


def test_errors_of_statements_reading_masked_columns_are_scrubbed() -> None:
    decision = decide("INSERT INTO customers (id, email) SELECT id + 100, email FROM customers")
    assert isinstance(decision, Allow) and decision.scrub is not None
    err = {"C": "23000", "M": "Duplicate entry 'alice@example.com' for key 'email'"}
    out = decision.scrub(err)
    assert out["C"] == "23000" and "alice" not in out["M"]
    assert out["M"].startswith("Duplicate entry '")
    cast = decide("SELECT email + 0 FROM customers")
    assert isinstance(cast, Allow) and cast.scrub is not None
    msg = cast.scrub({"M": "Truncated incorrect DOUBLE value: 'alice@example.com'"})["M"]
    assert "alice" not in msg
    # Statements that touch no masked column keep their messages.
    untouched = decide("SELECT total FROM orders")
    assert isinstance(untouched, Allow) and untouched.scrub is None


def test_errors_of_stored_code_are_withheld_whole() -> None:
    # A SIGNAL in stored code may put any value it read in the message, without quotes.
    for sql in ("SELECT peek(1)", "SELECT shop.peek(1) FROM DUAL"):
        decision = decide(sql)
        assert isinstance(decision, Allow) and decision.scrub is not None, sql
        assert decision.scrub({"C": "HY000", "M": "leaked alice"})["M"] == WITHHELD
    nowhere = decide("SELECT shop.peek(1)", s=session(""))
    assert isinstance(nowhere, Allow) and nowhere.scrub is not None
    assert nowhere.scrub({"M": "leaked alice"})["M"] == WITHHELD
    signal = decide("SELECT email FROM customers")
    assert isinstance(signal, Allow) and signal.scrub is not None
    assert signal.scrub({"C": "45000", "M": "unquoted secret"})["M"] == WITHHELD


def warnings_row() -> tuple[list[bytes | None], list[MySQLColumn]]:
    columns = [column(0, length=28), column(1, t.LONG, 63, 4, t.UNSIGNED_FLAG),
               column(2, length=2048)]
    return [b"Warning", b"1292", b"Truncated incorrect DOUBLE value: 'alice@example.com'"], \
        columns


def test_show_warnings_messages_are_scrubbed_in_masking_profiles() -> None:
    row, columns = warnings_row()
    for sql in ("SHOW WARNINGS", "SHOW ERRORS", "show warnings limit 5",
                "SHOW /* comment */ WARNINGS"):
        out = rows(decide(sql), row, columns)
        assert out[:2] == [b"Warning", b"1292"], sql
        assert out[2] is not None and b"alice" not in out[2], sql
        assert out[2].startswith(b"Truncated incorrect DOUBLE value: '"), sql
    # Binary protocol (a prepared SHOW WARNINGS): Code is a 4-byte integer, left alone.
    binary_row = [row[0], struct.pack("<I", 1292), row[2]]
    out = rows(decide("SHOW WARNINGS"), binary_row, columns, binary=True)
    assert out[1] == binary_row[1] and b"alice" not in (out[2] or b"")
    # Without masking, nothing is rewritten.
    plain = decide("SHOW WARNINGS", "plain")
    assert isinstance(plain, Allow) and plain.transform is None


# -- on_unresolved = "refuse" ---------------------------------------------------------------


def test_on_unresolved_refuse() -> None:
    for sql in ("SELECT * FROM nosuch", "SELECT @v", "SELECT peek(id) FROM orders",
                "SELECT id FROM v_hidden", "SELECT nosuchcolumn FROM customers",
                "HANDLER nosuch OPEN"):
        assert "cannot be traced" in refused(decide(sql, "strict")), sql
    # A procedure that may write could copy masked columns anywhere: refused either way.
    for profile in ("strict", "masked"):
        assert "may write" in refused(decide("CALL tidy()", profile))
    # The pattern says EMAIL: column names compare case-insensitively.
    assert rows(decide("SELECT id, email FROM customers", "strict"), ROW[::2]) == [b"7", TOKEN]
    # With on_unresolved = "mask" the same statements pass, masked whole.
    assert rows(decide("SELECT * FROM nosuch"), [b"1", b"2"]) == [TOKEN, TOKEN]


# -- plan(): the cells as the proxy writes them ---------------------------------------------


def test_plan_writes_cells_of_each_type_in_both_protocols() -> None:
    decision = decide("SELECT id, ssn, email, LOWER(email) FROM customers")
    text_cols = [column(0, t.LONG), column(1, t.LONGLONG), column(2, length=160),
                 column(3, t.JSON, 63)]
    text = rows(decision, [b"7", b"78051120", b"alice@example.com", b'"alice@example.com"'],
                text_cols)
    assert text[0] == b"7"
    assert text[1] not in (None, b"78051120") and int(text[1] or b"x") >= 0
    assert text[2] == b"a***@example.com"
    assert text[3] is not None and json.loads(text[3]) == "****"
    binary = rows(decision, [struct.pack("<i", 7), struct.pack("<q", 78051120),
                             b"alice@example.com", b'"a@b.c"'], text_cols, binary=True)
    assert binary[0] == struct.pack("<i", 7)
    assert binary[1] is not None and len(binary[1]) == 8 \
        and binary[1] != struct.pack("<q", 78051120)
    assert binary[2] == b"a***@example.com"


def test_plan_masks_every_column_when_the_width_is_not_the_lineage() -> None:
    decision = decide("SELECT id, email FROM customers")
    out = rows(decision, [b"7", b"alice@example.com", b"x"])
    assert out == [TOKEN, TOKEN, TOKEN]


def test_detectors_scan_text_columns_nobody_listed() -> None:
    decision = decide("SELECT id, note, note, note FROM orders", "scanning")
    columns = [column(0, t.LONG), column(1), column(2, t.JSON, 63), column(3, charset=63)]
    note = b"call bob@example.com"
    out = rows(decision, [b"1", note, b'{"to": "bob@example.com"}', note], columns)
    assert out[0] == b"1"
    assert out[1] == b"call ****"
    assert out[2] is not None and "bob@" not in json.loads(out[2])
    assert out[3] == note    # a binary string is bytes, not text: not scanned
    # SHOW output and several clean statements have no lineage per column: scanned too.
    assert rows(decide("SHOW VARIABLES LIKE 'x'", "scanning"), [b"x", b"to eve@example.com"]) \
        == [b"x", b"to ****"]
    assert rows(decide("SELECT id FROM orders; SELECT note FROM orders", "scanning"),
                [b"to eve@example.com"]) == [b"to ****"]


def test_show_outputs_printing_statements_or_rows_are_masked_whole() -> None:
    for sql in ("SHOW PROCESSLIST", "SHOW FULL PROCESSLIST", "SHOW ENGINE INNODB STATUS",
                "SHOW BINLOG EVENTS", "SHOW RELAYLOG EVENTS"):
        out = rows(decide(sql), [b"5", b"INSERT INTO customers VALUES ('eve@example.com')"])
        assert out == [TOKEN, TOKEN], sql
        assert "cannot be traced" in refused(decide(sql, "strict")), sql
    assert rows(decide("SHOW TABLES"), [b"customers"]) == [b"customers"]

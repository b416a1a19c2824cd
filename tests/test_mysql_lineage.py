"""MySQL/MariaDB column lineage and sinks on sqlglot's tree, with a hand-built resolver: what
each output column may carry, and where a statement copies values outside its result."""

from __future__ import annotations

import pytest

from policies.facts import Name, Unparseable
from policies.lineage import ANY_MASKED, DERIVED, UNRESOLVED, Sink, Source, Sources, table_columns
from policies.mysql_lineage import (
    lineage,
    lineages,
    sinks,
    statistics_tables,
    with_statistics,
)

TABLES = {
    ("test", "customers"): ["id", "name", "email", "ssn", "card"],
    ("test", "orders"): ["id", "customer_id", "total", "doc"],
    ("test", "archive"): ["id", "contact"],
}


def resolve(name: Name) -> list[tuple[str, Sources]] | None:
    schema = name.schema or "test"   # the current database
    if schema == "test" and name.name == "v_contacts":
        # CREATE VIEW v_contacts AS SELECT id, LOWER(email) AS contact, name FROM customers
        return [(o.name, o.sources) for o in lineage(
            "SELECT id, LOWER(email) AS contact, name FROM customers", resolve)]
    cols = TABLES.get((schema, name.name))
    return table_columns(Name(schema, name.name), cols) if cols is not None else None


ID = Source("test", "customers", "id")
NAME = Source("test", "customers", "name")
EMAIL = Source("test", "customers", "email")
SSN = Source("test", "customers", "ssn")
TOTAL = Source("test", "orders", "total")


def carries(sql: str, **kw: object) -> list[Sources]:
    return [o.sources for o in lineage(sql, resolve, **kw)]  # type: ignore[arg-type]


@pytest.mark.parametrize("sql", [
    # aliases, qualification
    "SELECT email FROM customers",
    "SELECT email AS e FROM customers",
    "SELECT c.email FROM customers c",
    "SELECT test.customers.email FROM test.customers",
    "SELECT `email` FROM `test`.`customers`",
    # string, encoding and hashing functions
    "SELECT LOWER(email) FROM customers",
    "SELECT SUBSTR(email, 1, 3), SUBSTRING(email FROM 2) FROM customers",
    "SELECT LPAD(email, 40, '*') FROM customers",
    "SELECT REPLACE(email, '@', ' at ') FROM customers",
    "SELECT REVERSE(email) FROM customers",
    "SELECT HEX(email) FROM customers",
    "SELECT TO_BASE64(email) FROM customers",
    "SELECT MD5(email) FROM customers",
    "SELECT SHA2(email, 256) FROM customers",
    "SELECT AES_ENCRYPT(email, 'k') FROM customers",
    "SELECT COMPRESS(email) FROM customers",
    "SELECT CONCAT('<', email, '>') FROM customers",
    "SELECT CONCAT_WS(',', name, email) FROM customers",
    "SELECT email COLLATE utf8mb4_bin FROM customers",
    # casts
    "SELECT CAST(email AS CHAR(10)) FROM customers",
    "SELECT CONVERT(email, CHAR) FROM customers",
    "SELECT CONVERT(email USING latin1) FROM customers",
    "SELECT BINARY email FROM customers",
    # conditionals
    "SELECT CASE WHEN id > 1 THEN email ELSE 'n/a' END FROM customers",
    "SELECT IF(id > 1, email, NULL) FROM customers",
    "SELECT IFNULL(email, '') FROM customers",
    "SELECT COALESCE(NULL, email) FROM customers",
    "SELECT NULLIF(email, '') FROM customers",
    # aggregates and windows
    "SELECT GROUP_CONCAT(email SEPARATOR ';') FROM customers",
    "SELECT GROUP_CONCAT(DISTINCT email ORDER BY id) FROM customers GROUP BY name",
    "SELECT MAX(email) FROM customers GROUP BY id WITH ROLLUP",
    "SELECT name, MIN(email) FROM customers GROUP BY name WITH ROLLUP",
    "SELECT LAG(email) OVER (ORDER BY id) FROM customers",
    "SELECT FIRST_VALUE(email) OVER w FROM customers WINDOW w AS (PARTITION BY name)",
    # JSON
    "SELECT JSON_OBJECT('e', email) FROM customers",
    "SELECT JSON_ARRAY(id, email) FROM customers",
    "SELECT JSON_ARRAYAGG(email) FROM customers",
    "SELECT JSON_OBJECTAGG(id, email) FROM customers",
    # MariaDB dynamic columns
    "SELECT COLUMN_JSON(COLUMN_CREATE('e', email)) FROM customers",
    "SELECT COLUMN_GET(COLUMN_CREATE('e', email), 'e' AS CHAR) FROM customers",
    # subqueries, derived tables, CTEs
    "SELECT (SELECT email FROM customers LIMIT 1)",
    "SELECT id, (SELECT c.email FROM customers c WHERE c.id = o.customer_id) FROM orders o",
    "SELECT e FROM (SELECT email AS e FROM customers) s",
    "SELECT x FROM (SELECT email FROM customers) AS s(x)",
    "WITH m AS (SELECT email FROM customers) SELECT email FROM m",
    "WITH m(addr) AS (SELECT email FROM customers) SELECT addr FROM m",
    "WITH RECURSIVE r(a, b) AS (SELECT CAST(id AS CHAR(99)), name FROM customers "
    "UNION ALL SELECT b, email FROM r, customers) SELECT a FROM r",
    # set operations: positional
    "SELECT name FROM customers UNION SELECT email FROM customers",
    "SELECT name FROM customers UNION ALL (SELECT email FROM customers)",
    "SELECT name FROM customers INTERSECT SELECT email FROM customers",
    "SELECT name FROM customers EXCEPT SELECT email FROM customers",
    # joins, views, LATERAL, JSON_TABLE
    "SELECT o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id",
    "SELECT email FROM orders o LEFT JOIN customers c ON c.id = o.customer_id",
    "SELECT contact FROM v_contacts",
    "SELECT * FROM v_contacts",
    "SELECT v FROM customers c, LATERAL (SELECT c.email AS v) l",
    "SELECT j.e FROM customers c, JSON_TABLE(JSON_ARRAY(c.email), '$[*]' "
    "COLUMNS (e VARCHAR(99) PATH '$')) AS j",
    # user variable assignment returns its value
    "SELECT @v := email FROM customers",
    # executable comments are read as the server would
    "SELECT id /*!, email */ FROM customers",
    "SELECT id /*M!100000 , email */ FROM customers",
])
def test_masked_source_is_carried(sql: str) -> None:
    outs = carries(sql)
    assert any(EMAIL in s for s in outs), (sql, outs)


def test_executable_comments_follow_the_server() -> None:
    sql = "SELECT id /*M!100000 , email */ FROM customers"
    assert carries(sql, server="mysql", version=(8, 0, 36)) == [{ID}]
    assert carries("SELECT id /*!199999 , email */ FROM customers") == [{ID}]


def test_column_names_and_aliases_ignore_case() -> None:
    assert carries("SELECT EMAIL, C.Ssn FROM customers c") == [{EMAIL}, {SSN}]


def test_direct_references_are_told_from_derived_values() -> None:
    direct, paren, derived, const = lineage(
        "SELECT c.email, (email), UPPER(email), 1 FROM customers c", resolve)
    assert not direct.derived and direct.columns == [EMAIL]
    assert not paren.derived
    assert derived.derived and derived.columns == [EMAIL]
    assert const.sources == frozenset() and const.resolved
    (through,) = lineage("SELECT e FROM (SELECT LOWER(email) AS e FROM customers) s", resolve)
    assert through.derived
    (view,) = lineage("SELECT contact FROM v_contacts", resolve)
    assert view.derived and view.columns == [EMAIL]


def test_star_expands_every_column_in_order() -> None:
    outs = lineage("SELECT * FROM customers", resolve)
    assert [o.name for o in outs] == ["id", "name", "email", "ssn", "card"]
    assert outs[2].sources == {EMAIL}
    joined = lineage("SELECT o.*, c.ssn FROM orders o JOIN customers c "
                     "ON c.id = o.customer_id", resolve)
    assert [o.name for o in joined] == ["id", "customer_id", "total", "doc", "ssn"]
    assert joined[4].sources == {SSN} and joined[2].sources == {TOTAL}
    table = lineage("TABLE customers", resolve)
    assert [o.name for o in table] == ["id", "name", "email", "ssn", "card"]


def test_star_lists_using_columns_once() -> None:
    outs = lineage("SELECT * FROM customers JOIN archive USING (id)", resolve)
    assert [o.name for o in outs] == ["id", "name", "email", "ssn", "card", "contact"]
    assert outs[0].sources == {ID, Source("test", "archive", "id")}
    natural = lineage("SELECT * FROM customers NATURAL JOIN archive", resolve)
    assert len(natural) == 6


def test_set_operations_are_positional() -> None:
    first, second = lineage("SELECT id, name FROM customers UNION SELECT email, id "
                            "FROM customers", resolve)
    assert first.sources == {ID, EMAIL} and second.sources == {NAME, ID}
    (values,) = lineage("VALUES ROW('a'), ROW('b')", resolve)
    assert values.sources == frozenset()


def test_window_partition_and_order_are_not_carried() -> None:
    (rn,) = carries("SELECT ROW_NUMBER() OVER (PARTITION BY email ORDER BY ssn) "
                    "FROM customers")
    assert rn == frozenset()


def test_filtering_joining_ordering_on_a_masked_column_stays_clean() -> None:
    outs = carries("SELECT id, name FROM customers WHERE email = 'x' ORDER BY ssn")
    assert outs == [{ID}, {NAME}]
    joined = carries("SELECT o.total FROM orders o JOIN customers c ON c.email = o.doc "
                     "WHERE c.ssn LIKE '1%' GROUP BY o.total HAVING COUNT(c.card) > 1")
    assert joined == [{TOTAL}]
    exists = carries("SELECT id FROM customers c WHERE EXISTS "
                     "(SELECT 1 FROM customers d WHERE d.email = c.email)")
    assert exists == [{ID}]
    in_sub = carries("SELECT id FROM customers WHERE id IN "
                     "(SELECT id FROM customers WHERE email LIKE '%@x')")
    assert in_sub == [{ID}]
    assert carries("SELECT COUNT(*) FROM customers WHERE email IS NULL") == [frozenset()]
    assert sinks("SELECT id FROM customers WHERE email = 'x' ORDER BY ssn", resolve) == []


def test_what_cannot_be_traced_is_unresolved() -> None:
    assert UNRESOLVED in carries("SELECT * FROM unknown_table")[0]
    assert UNRESOLVED in carries("SELECT nosuchcolumn FROM customers")[0]
    assert UNRESOLVED in carries("SELECT x.email FROM customers c")[0]
    assert UNRESOLVED in carries("SELECT @v")[0]           # whatever a variable holds
    assert UNRESOLVED in carries("SELECT j.a FROM JSON_TABLE(@doc, '$[*]' "
                                 "COLUMNS (a INT PATH '$.a')) AS j")[0]
    assert carries("SELECT 1, 'a', @@version") == [frozenset()] * 3
    (ordinality,) = carries("SELECT j.n FROM customers c, JSON_TABLE(c.email, '$[*]' "
                            "COLUMNS (n FOR ORDINALITY)) AS j")
    assert ordinality == frozenset()


def test_statements_without_rows_and_unknown_shapes() -> None:
    assert lineage("INSERT INTO archive SELECT id, email FROM customers", resolve) == []
    assert lineage("SELECT email INTO @v FROM customers LIMIT 1", resolve) == []
    assert lineage("SELECT email FROM customers INTO OUTFILE '/tmp/x'", resolve) == []
    (call,) = lineage("CALL report()", resolve)
    assert not call.resolved
    assert lineages("SELECT id FROM customers; SELECT email FROM customers", resolve) == [
        lineage("SELECT id FROM customers", resolve),
        lineage("SELECT email FROM customers", resolve)]
    with pytest.raises(Unparseable):
        lineage("SELECT id FROM customers; SELECT email FROM customers", resolve)
    with pytest.raises(Unparseable):
        lineage("SELECT FROM WHERE", resolve)


def test_handler_read_returns_every_column() -> None:
    outs = lineage("HANDLER customers READ FIRST", resolve)
    assert [o.name for o in outs] == ["id", "name", "email", "ssn", "card"]
    assert outs[2].sources == {EMAIL}
    assert lineage("HANDLER test.customers READ `PRIMARY` NEXT", resolve)[2].sources == {EMAIL}
    assert lineage("HANDLER customers OPEN", resolve) == []
    assert not lineage("HANDLER nosuch READ FIRST", resolve)[0].resolved


def test_returning_carries_the_written_columns() -> None:
    (out,) = lineage("DELETE FROM customers WHERE id = 1 RETURNING email", resolve)
    assert out.sources == {EMAIL}
    (ins,) = lineage("INSERT INTO archive (id, contact) SELECT id, email FROM customers "
                     "RETURNING contact", resolve)
    assert EMAIL in ins.sources


# -- sinks --------------------------------------------------------------------------------------

ARCHIVE_CONTACT = Source("test", "archive", "contact")
ARCHIVE_ID = Source("test", "archive", "id")


def sink_map(sql: str) -> dict[tuple[str, Source | None], Sources]:
    return {(s.kind, s.target): s.sources for s in sinks(sql, resolve)}


def test_insert_select_and_values_sink_per_target_column() -> None:
    found = sinks("INSERT INTO archive (contact, id) SELECT email, id FROM customers "
                  "WHERE ssn = 'x'", resolve)
    assert found == [Sink("insert", ARCHIVE_CONTACT, frozenset({EMAIL})),
                     Sink("insert", ARCHIVE_ID, frozenset({ID}))]
    by_position = sinks("INSERT INTO archive SELECT id, LOWER(email) FROM customers",
                        resolve)
    assert by_position[1].target == ARCHIVE_CONTACT
    assert by_position[1].sources == {EMAIL, DERIVED}
    values = sinks("INSERT INTO archive VALUES (1, 'a'), "
                   "(2, (SELECT email FROM customers LIMIT 1))", resolve)
    assert values[1].target == ARCHIVE_CONTACT and EMAIL in values[1].sources
    set_form = sinks("INSERT INTO archive SET contact = (SELECT email FROM customers "
                     "LIMIT 1)", resolve)
    assert set_form[0].target == ARCHIVE_CONTACT and EMAIL in set_form[0].sources


def test_replace_and_upsert() -> None:
    (first, second) = sinks("REPLACE INTO archive SELECT id, email FROM customers", resolve)
    assert first.kind == second.kind == "replace" and second.sources == {EMAIL}
    found = sink_map("INSERT INTO archive (id, contact) VALUES (1, 'x') "
                     "ON DUPLICATE KEY UPDATE contact = (SELECT email FROM customers LIMIT 1)")
    assert EMAIL in found[("upsert", ARCHIVE_CONTACT)]
    values_fn = sink_map("INSERT INTO archive (id, contact) SELECT id, email FROM customers "
                         "ON DUPLICATE KEY UPDATE id = VALUES(contact)")
    assert EMAIL in values_fn[("upsert", ARCHIVE_ID)]
    row_alias = sink_map("INSERT INTO archive (id, contact) SELECT id, email FROM customers "
                         "ON DUPLICATE KEY UPDATE id = customers.email")
    assert EMAIL in row_alias[("upsert", ARCHIVE_ID)]


def test_update_set_including_multi_table() -> None:
    found = sink_map("UPDATE archive a JOIN customers c ON c.id = a.id "
                     "SET a.contact = CONCAT('x', c.email) WHERE c.ssn = '1'")
    assert found[("update", ARCHIVE_CONTACT)] == {EMAIL, DERIVED}
    comma = sink_map("UPDATE archive, customers SET archive.contact = customers.email "
                     "WHERE archive.id = customers.id")
    assert comma[("update", ARCHIVE_CONTACT)] == {EMAIL}
    # Assignments run left to right: the second sees the first's value.
    chained = sinks("UPDATE customers SET name = email, card = name", resolve)
    assert EMAIL in chained[1].sources
    assert sinks("UPDATE customers SET name = 'x' WHERE email = 'y'", resolve)[0].sources \
        == frozenset()


def test_create_table_as_select() -> None:
    for sql in ("CREATE TABLE copy AS SELECT id, email FROM customers",
                "CREATE TABLE copy SELECT id, email FROM customers",
                "CREATE TABLE test.copy (k INT) SELECT id, email FROM customers"):
        found = sinks(sql, resolve)
        assert [s.kind for s in found] == ["create_table_as"] * 2
        assert found[1].sources == {EMAIL} and found[1].target is not None
        assert found[1].target.table == "copy" and found[1].target.column == "email"


def test_select_into_variables_and_files() -> None:
    found = sinks("SELECT id, email INTO @a, @b FROM customers LIMIT 1", resolve)
    assert found == [Sink("into_variable", None, frozenset({ID})),
                     Sink("into_variable", None, frozenset({EMAIL}))]
    trailing = sinks("SELECT email FROM customers LIMIT 1 INTO @x FOR UPDATE", resolve)
    assert trailing == [Sink("into_variable", None, frozenset({EMAIL}))]
    outfile = sinks("SELECT id, email FROM customers INTO OUTFILE '/tmp/x' "
                    "FIELDS TERMINATED BY ',' LINES TERMINATED BY '\\n'", resolve)
    assert outfile == [Sink("into_outfile", None, frozenset({ID})),
                       Sink("into_outfile", None, frozenset({EMAIL}))]
    dump = sinks("SELECT email INTO DUMPFILE '/tmp/y' FROM customers LIMIT 1", resolve)
    assert dump == [Sink("into_dumpfile", None, frozenset({EMAIL}))]


def test_user_variable_assignments() -> None:
    for sql in ("SET @v = (SELECT email FROM customers LIMIT 1)",
                "SET @v := (SELECT email FROM customers LIMIT 1)"):
        assert sinks(sql, resolve) == [
            Sink("set_variable", None, frozenset({EMAIL, DERIVED}))]
    (inline,) = sinks("SELECT id, @v := email FROM customers", resolve)
    assert inline == Sink("set_variable", None, frozenset({EMAIL}))
    (in_where,) = sinks("SELECT id FROM customers WHERE (@w := ssn) IS NOT NULL", resolve)
    assert in_where.sources == {SSN}
    assert sinks("SET @v = 1, NAMES utf8mb4", resolve)[0].sources == frozenset()


def test_error_channels() -> None:
    (ev,) = sinks("SELECT EXTRACTVALUE(1, CONCAT(0x7e, email)) FROM customers", resolve)
    assert ev.kind == "error_channel" and EMAIL in ev.sources
    (ux,) = sinks("SELECT id FROM customers WHERE UPDATEXML(1, CONCAT(0x7e, "
                  "(SELECT ssn FROM customers LIMIT 1)), 1)", resolve)
    assert ux.kind == "error_channel" and SSN in ux.sources
    (xml_only,) = sinks("SELECT EXTRACTVALUE(email, '/a') FROM customers", resolve)
    assert xml_only.sources == frozenset()   # the document is returned, not printed
    (dup,) = sinks("SELECT COUNT(*), CONCAT(email, FLOOR(RAND(0) * 2)) x FROM customers "
                   "GROUP BY x", resolve)
    assert dup.kind == "error_channel" and EMAIL in dup.sources
    (do,) = sinks("DO EXTRACTVALUE(1, (SELECT email FROM customers LIMIT 1))", resolve)
    assert EMAIL in do.sources


def test_recursive_cte_sinks_are_reported_once() -> None:
    found = sinks("WITH RECURSIVE r(a, b) AS (SELECT id, name FROM customers UNION ALL "
                  "SELECT b, EXTRACTVALUE(1, a) FROM r WHERE a < 3) SELECT a INTO @x FROM r",
                  resolve)
    assert [s.kind for s in found] == ["error_channel", "into_variable"]
    assert NAME in found[0].sources and ID in found[0].sources


def test_unresolvable_sinks_are_unresolved() -> None:
    (s,) = sinks("INSERT INTO elsewhere SELECT email FROM customers", resolve)
    assert s.target == UNRESOLVED and s.sources == {EMAIL}
    (t,) = sinks("INSERT INTO archive (contact) SELECT x FROM nowhere", resolve)
    assert UNRESOLVED in t.sources
    (call,) = sinks("CALL do_things()", resolve)
    assert call.kind == "routine" and UNRESOLVED in call.sources


def test_statistics_tables_carry_any_masked() -> None:
    assert statistics_tables("mariadb")[Name("mysql", "column_stats")] == (
        "min_value", "max_value", "histogram")
    assert Name("information_schema", "column_statistics") in statistics_tables("mysql")
    marked = with_statistics(resolve)
    outs = lineage("SELECT column_name, min_value, histogram FROM mysql.column_stats", marked)
    assert ANY_MASKED not in outs[0].sources
    assert ANY_MASKED in outs[1].sources and ANY_MASKED in outs[2].sources
    (h,) = lineage("SELECT HISTOGRAM FROM information_schema.COLUMN_STATISTICS", marked)
    assert ANY_MASKED in h.sources
    assert lineage("SELECT email FROM customers", marked)[0].sources == {EMAIL}


def test_statements_that_run_other_statements() -> None:
    (analyzed,) = sinks("ANALYZE FORMAT=JSON UPDATE customers SET name = email", resolve)
    assert analyzed.kind == "update" and analyzed.sources == {EMAIL}
    assert lineage("ANALYZE FORMAT=JSON UPDATE customers SET name = email", resolve) == []
    (explained,) = sinks("EXPLAIN ANALYZE SELECT EXTRACTVALUE(1, email) FROM customers",
                         resolve)
    assert explained.kind == "error_channel" and explained.sources == {EMAIL}
    assert sinks("EXPLAIN SELECT EXTRACTVALUE(1, email) FROM customers", resolve) == []
    assert sinks("ANALYZE TABLE customers", resolve) == []
    prepared = sinks("PREPARE s FROM 'INSERT INTO archive SELECT id, email FROM customers'",
                     resolve)
    assert [s.sources for s in prepared] == [{ID}, {EMAIL}]
    (dynamic,) = sinks("PREPARE s FROM @sql", resolve)
    assert dynamic.kind == "routine" and UNRESOLVED in dynamic.sources
    (trigger,) = sinks("CREATE TRIGGER tr AFTER INSERT ON customers FOR EACH ROW "
                       "INSERT INTO archive VALUES (NEW.id, NEW.email)", resolve)
    assert trigger.kind == "routine"
    (stmt,) = sinks("SET STATEMENT max_statement_time=1 FOR "
                    "SELECT email INTO @x FROM customers LIMIT 1", resolve)
    assert stmt.kind == "into_variable" and stmt.sources == {EMAIL}


def test_dual_and_positional_group_keys() -> None:
    assert carries("SELECT 1, (SELECT email FROM customers LIMIT 1) FROM DUAL") == [
        frozenset(), {EMAIL, DERIVED}]
    (dup,) = sinks("SELECT CONCAT(ssn, FLOOR(RAND(0) * 2)), COUNT(*) FROM customers "
                   "GROUP BY 1", resolve)
    assert dup.kind == "error_channel" and SSN in dup.sources
    assert sinks("SELECT name, COUNT(*) FROM customers GROUP BY 1", resolve) == []

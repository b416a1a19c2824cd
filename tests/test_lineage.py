"""Column lineage on pglast's tree: what each output column may carry, through aliases,
expressions, subqueries, CTEs, joins, set operations and whole-row references."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from policies.catalog import Catalog, RelationInfo
from policies.facts import Name
from policies.lineage import (
    ANY_MASKED,
    CALL,
    DERIVED,
    UNRESOLVED,
    Sink,
    Source,
    lineage,
    sinks,
    table_columns,
)
from proxy.catalog import load_catalog
from tests.conftest import PgTarget, make_config

TABLES = {
    ("public", "customers"): ["id", "full_name", "email", "ssn"],
    ("public", "orders"): ["id", "customer_id", "total"],
    ("public", "audit"): ["id", "note", "contact"],
}


def resolve(name: Name) -> list[tuple[str, frozenset[Source]]] | None:
    schema = name.schema or "public"
    cols = TABLES.get((schema, name.name))
    if name.name == "v_contacts":  # a view: SELECT id, lower(email) AS contact FROM customers
        return [(o.name, o.sources) for o in lineage(
            "SELECT id, lower(email) AS contact FROM customers", resolve)]
    return table_columns(Name(schema, name.name), cols) if cols is not None else None


EMAIL = Source("public", "customers", "email")
SSN = Source("public", "customers", "ssn")
CID = Source("public", "customers", "id")
NOTE = Source("public", "audit", "note")
CONTACT = Source("public", "audit", "contact")
AUDIT_ID = Source("public", "audit", "id")


def carries(sql: str) -> list[frozenset[Source]]:
    return [o.sources for o in lineage(sql, resolve)]


@pytest.mark.parametrize("sql", [
    "SELECT email FROM customers",
    "SELECT email AS e FROM customers",
    "SELECT c.email FROM customers c",
    "SELECT upper(email) FROM customers",
    "SELECT reverse(lower(c.email)) FROM customers c",
    "SELECT email::varchar(10) FROM customers",
    "SELECT 'x' || email || 'y' FROM customers",
    "SELECT encode(convert_to(email, 'UTF8'), 'base64') FROM customers",
    "SELECT substr(email, 1, 3) FROM customers",
    "SELECT string_agg(email, ',') FROM customers",
    "SELECT max(email) FROM customers GROUP BY id",
    "SELECT CASE WHEN id > 1 THEN email ELSE 'n/a' END FROM customers",
    "SELECT json_build_object('e', email) FROM customers",
    "SELECT row_to_json(c) FROM customers c",
    "SELECT c::text FROM customers c",
    "SELECT (SELECT email FROM customers LIMIT 1)",
    "SELECT e FROM (SELECT email AS e FROM customers) s",
    "SELECT x FROM (SELECT email FROM customers) s(x)",
    "WITH m AS (SELECT email FROM customers) SELECT email FROM m",
    "WITH m(addr) AS (SELECT email FROM customers) SELECT addr FROM m",
    "SELECT full_name FROM customers UNION SELECT email FROM customers",
    "SELECT o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id",
    "SELECT ARRAY(SELECT email FROM customers)",
    "SELECT contact FROM v_contacts",
    "SELECT * FROM v_contacts",
    "SELECT v FROM customers c, LATERAL (SELECT c.email AS v) l",
    "WITH RECURSIVE r(a, b) AS (SELECT id::text, full_name FROM customers UNION ALL "
    "SELECT b, email FROM r, customers) SELECT a FROM r",
])
def test_masked_source_is_carried(sql: str) -> None:
    outs = carries(sql)
    assert any(EMAIL in s for s in outs), (sql, outs)


def test_direct_references_are_told_from_derived_values() -> None:
    direct, derived, const = lineage("SELECT c.email, upper(email), 1 FROM customers c",
                                     resolve)
    assert not direct.derived and direct.columns == [EMAIL]
    assert derived.derived and derived.columns == [EMAIL]
    assert not const.derived and const.columns == []
    (through,) = lineage("SELECT e FROM (SELECT lower(email) AS e FROM customers) s", resolve)
    assert through.derived


def test_star_expands_every_column_in_order() -> None:
    outs = lineage("SELECT * FROM customers", resolve)
    assert [o.name for o in outs] == ["id", "full_name", "email", "ssn"]
    assert outs[2].sources == {EMAIL}
    joined = lineage("SELECT o.*, c.ssn FROM orders o JOIN customers c ON c.id = o.customer_id",
                     resolve)
    assert [o.name for o in joined] == ["id", "customer_id", "total", "ssn"]
    assert joined[3].sources == {SSN} and joined[2].sources == {
        Source("public", "orders", "total")}


def test_filtering_on_a_masked_column_does_not_taint_other_outputs() -> None:
    outs = carries("SELECT id, full_name FROM customers WHERE email = 'x' ORDER BY ssn")
    assert all(EMAIL not in s and SSN not in s for s in outs)
    exists = carries("SELECT id FROM customers c WHERE EXISTS "
                     "(SELECT 1 FROM customers d WHERE d.email = c.email)")
    assert exists == [frozenset({Source("public", "customers", "id")})]


def test_what_cannot_be_traced_is_unresolved() -> None:
    assert UNRESOLVED in carries("SELECT * FROM unknown_table")[0]
    assert UNRESOLVED in carries("SELECT x FROM generate_series(1, 3) x")[0]
    assert UNRESOLVED in carries("SELECT nosuchcolumn FROM customers")[0]
    assert carries("SELECT 1, 'a'") == [frozenset(), frozenset()]


def test_views_in_a_real_catalog_are_expanded(pg: PgTarget) -> None:
    """A view's column carries what its definition reads, through views over views, as the
    server's own pg_get_viewdef prints them."""
    schema = f"wg_lin_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.people (id int, email text, note text)")
        conn.execute(f"CREATE VIEW {schema}.contacts AS "
                     f"SELECT id, lower(email) AS contact, note FROM {schema}.people")
        conn.execute(f"CREATE VIEW {schema}.contact_list AS "
                     f"SELECT contact AS c, 'x' AS k FROM {schema}.contacts")
    try:
        cfg = make_config(pg)
        assert cfg.postgres is not None
        catalog = asyncio.run(load_catalog(cfg.postgres.databases["test"], 1))
        resolve = catalog.lineage_resolver(["public"])
        email = Source(schema, "people", "email")
        outs = lineage(f"SELECT * FROM {schema}.contact_list", resolve)
        assert [o.name for o in outs] == ["c", "k"]
        assert outs[0].columns == [email] and outs[0].derived   # lower(email) in the view
        assert outs[1].sources == frozenset()
        direct = lineage(f"SELECT note FROM {schema}.contacts", resolve)
        assert direct[0].sources == {Source(schema, "people", "note")}
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


# -- expression families: the masked column is carried (or the output is unresolved) ----------

@pytest.mark.parametrize("sql", [
    # aliases, table-alias column lists, derived tables, CTEs
    "SELECT e FROM customers c(i, n, e)",
    "SELECT x.e FROM (SELECT * FROM customers) x(i, n, e)",
    "WITH RECURSIVE r(n, e) AS (SELECT 1, email FROM customers UNION ALL "
    "SELECT n + 1, e FROM r WHERE n < 3) SELECT e FROM r",
    "WITH m AS (SELECT email FROM customers) SELECT * FROM m UNION SELECT 'x'",
    # LATERAL subqueries and function calls
    "SELECT x FROM customers c CROSS JOIN LATERAL (VALUES (c.email)) v(x)",
    "SELECT u FROM customers c, LATERAL unnest(ARRAY[c.email]) u",
    "SELECT unnest FROM customers c, LATERAL unnest(ARRAY[c.email])",
    "SELECT x.u FROM customers c, LATERAL unnest(ARRAY[c.email]) AS x(u)",
    "SELECT * FROM customers c, LATERAL unnest(ARRAY[c.email])",
    # scalar subqueries, set operations by position
    "SELECT (SELECT c2.email FROM customers c2 WHERE c2.id = c.id) FROM customers c",
    "SELECT (SELECT max(email) FROM customers)",
    "SELECT email FROM customers INTERSECT SELECT email FROM customers",
    "SELECT id::text FROM customers EXCEPT SELECT email FROM customers",
    "SELECT 'a' UNION ALL SELECT email FROM customers",
    # window functions, GROUP BY, GROUPING SETS, CASE, VALUES
    "SELECT lag(email) OVER (ORDER BY id) FROM customers",
    "SELECT first_value(email) OVER w FROM customers WINDOW w AS (PARTITION BY id)",
    "SELECT email FROM customers GROUP BY email",
    "SELECT email, count(*) FROM customers GROUP BY GROUPING SETS ((email), ())",
    "SELECT email, count(*) FROM customers GROUP BY ROLLUP (email)",
    "SELECT CASE email WHEN 'x' THEN 'y' ELSE email END FROM customers",
    "SELECT column1 FROM (VALUES ((SELECT email FROM customers LIMIT 1))) v",
    # casts, ||, string and encoding functions
    "SELECT CAST(email AS bytea) FROM customers",
    "SELECT email COLLATE \"C\" FROM customers",
    "SELECT id || ':' || email FROM customers",
    "SELECT lower(email) FROM customers",
    "SELECT format('%s', email) FROM customers",
    "SELECT concat(id, email) FROM customers",
    "SELECT concat_ws(',', id, email) FROM customers",
    "SELECT lpad(email, 40, '*') FROM customers",
    "SELECT replace(email, '@', ' at ') FROM customers",
    "SELECT reverse(email) FROM customers",
    "SELECT translate(email, 'abc', 'xyz') FROM customers",
    "SELECT regexp_replace(email, '(.)', '\\1 ') FROM customers",
    "SELECT decode(encode(convert_to(email, 'UTF8'), 'hex'), 'hex') FROM customers",
    "SELECT md5(email) FROM customers",
    "SELECT sha256(email::bytea) FROM customers",
    "SELECT split_part(email, '@', 1) FROM customers",
    "SELECT (string_to_array(email, '@'))[1] FROM customers",
    "SELECT COALESCE(email, full_name) FROM customers",
    # aggregates
    "SELECT string_agg(DISTINCT email, ',') FILTER (WHERE id > 1) FROM customers",
    "SELECT array_agg(email) FROM customers",
    "SELECT json_agg(email ORDER BY id) FROM customers",
    "SELECT jsonb_agg(c) FROM customers c",
    "SELECT min(email) FROM customers",
    "SELECT JSON_ARRAYAGG(email) FROM customers",
    # JSON, XML and row builders, whole rows, field selection
    "SELECT row_to_json(c) FROM customers c",
    "SELECT to_jsonb(c.*) FROM customers c",
    "SELECT json_build_object('e', email) FROM customers",
    "SELECT JSON_OBJECT('e': email) FROM customers",
    "SELECT JSON_ARRAY(SELECT email FROM customers)",
    "SELECT xmlelement(name e, email) FROM customers",
    "SELECT xmlforest(email) FROM customers",
    "SELECT ROW(id, email) FROM customers",
    "SELECT ROW(c.*) FROM customers c",
    "SELECT c FROM customers c",
    "SELECT c::text FROM customers c",
    "SELECT (c).email FROM customers c",
    "SELECT (c.*).email FROM customers c",
    "SELECT (ROW(email, 1)).f1 FROM customers",
    "SELECT (jsonb_populate_record(NULL::customers, to_jsonb(c))).email FROM customers c",
    # functions in FROM
    "SELECT j.value FROM customers c, jsonb_each(to_jsonb(c)) j",
    "SELECT value FROM customers c, jsonb_each_text(to_jsonb(c))",
    "SELECT k, v FROM customers c, jsonb_each(to_jsonb(c)) AS j(k, v)",
    "SELECT * FROM ROWS FROM (unnest(ARRAY[(SELECT email FROM customers LIMIT 1)]))",
    "SELECT * FROM xmltable('/r' PASSING (SELECT xmlelement(name r, email) FROM customers "
    "LIMIT 1) COLUMNS x text)",
])
def test_expression_families_carry_the_masked_column(sql: str) -> None:
    outs = lineage(sql, resolve)
    assert outs and any(EMAIL in o.sources or UNRESOLVED in o.sources for o in outs), (sql, outs)


@pytest.mark.parametrize("sql", [
    "SELECT u FROM customers c, LATERAL unnest(ARRAY[c.email]) u",
    "SELECT j.value FROM customers c, jsonb_each(to_jsonb(c)) j",
    "SELECT * FROM customers c, LATERAL unnest(ARRAY[c.email])",
])
def test_a_function_in_from_carries_what_its_arguments_read(sql: str) -> None:
    last = lineage(sql, resolve)[-1]
    assert EMAIL in last.sources and not last.resolved


@pytest.mark.parametrize("sql", [
    "SELECT query_to_xml('select email from customers', true, false, '')",
    "SELECT table_to_xml('customers', true, false, '')",
    "SELECT ts_stat('select to_tsvector(email) from customers')",
    "SELECT x FROM dblink('dbname=x', 'select email from customers') AS t(x text)",
    "SELECT lo_get(42)",
])
def test_a_query_inside_a_string_is_unresolved(sql: str) -> None:
    assert not lineage(sql, resolve)[0].resolved


def test_whole_rows_and_field_selection_are_derived_from_every_column() -> None:
    (row,) = lineage("SELECT c FROM customers c", resolve)
    assert EMAIL in row.sources and SSN in row.sources
    (field,) = lineage("SELECT (c).email FROM customers c", resolve)
    assert EMAIL in field.sources and field.derived


@pytest.mark.parametrize("sql", [
    "SELECT id, full_name FROM customers WHERE email = 'x'",
    "SELECT id FROM customers ORDER BY email, ssn",
    "SELECT id FROM customers GROUP BY id, email HAVING max(ssn) > '1'",
    "SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM customers d WHERE d.email = c.email)",
    "SELECT id FROM customers WHERE email IN (SELECT email FROM customers WHERE ssn > '1')",
    "SELECT id FROM customers WHERE email = ANY (SELECT email FROM customers)",
    "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id AND c.email = 'x'",
    "SELECT count(*) FROM customers WHERE ssn IS NOT NULL",
    "SELECT DISTINCT ON (email) id FROM customers ORDER BY email",
    "SELECT id FROM customers LIMIT (SELECT count(*) FROM customers WHERE email = 'x')",
])
def test_filtering_keeps_the_outputs_clean(sql: str) -> None:
    for o in lineage(sql, resolve):
        assert EMAIL not in o.sources and SSN not in o.sources and o.resolved, (sql, o)


# -- RETURNING and COPY ---------------------------------------------------------------------------

def test_returning_lists_the_target_with_what_was_written() -> None:
    note, ident = lineage("INSERT INTO audit(note) SELECT ssn FROM customers "
                          "RETURNING note, id", resolve)
    assert note.sources == {NOTE, SSN} and ident.sources == {AUDIT_ID}
    star = lineage("INSERT INTO audit AS a VALUES (1, (SELECT email FROM customers LIMIT 1)) "
                   "RETURNING *", resolve)
    assert [o.name for o in star] == ["id", "note", "contact"]
    assert EMAIL in star[1].sources and star[2].sources == {CONTACT}
    (aliased,) = lineage("INSERT INTO audit AS a (contact) VALUES ('x') RETURNING a.contact",
                         resolve)
    assert aliased.sources == {CONTACT}


def test_returning_sees_update_from_and_delete_using_relations() -> None:
    outs = lineage("UPDATE audit SET note = c.email FROM customers c WHERE c.ssn = "
                   "audit.contact RETURNING *", resolve)
    assert [o.name for o in outs] == ["id", "note", "contact", "id", "full_name", "email", "ssn"]
    assert outs[1].sources == {NOTE, EMAIL} and outs[6].sources == {SSN}
    email, note = lineage("DELETE FROM audit a USING customers c WHERE c.id = a.id "
                          "RETURNING c.email, a.note", resolve)
    assert email.sources == {EMAIL} and note.sources == {NOTE}
    (multi,) = lineage("UPDATE audit a SET (note, contact) = (SELECT id, lower(ssn) FROM "
                       "customers c WHERE c.email = 'x') RETURNING contact", resolve)
    assert multi.columns == [CONTACT, SSN] and EMAIL not in multi.sources


def test_returning_of_merge_and_upsert() -> None:
    outs = lineage("MERGE INTO audit t USING customers c ON t.id = c.id "
                   "WHEN MATCHED THEN UPDATE SET note = c.email "
                   "WHEN NOT MATCHED THEN INSERT VALUES (c.id, c.ssn) RETURNING t.*, c.full_name",
                   resolve)
    assert [o.name for o in outs] == ["id", "note", "contact", "full_name"]
    assert outs[1].sources == {NOTE, EMAIL, SSN} and outs[2].sources == {CONTACT}
    (contact,) = lineage("INSERT INTO audit(id, note) VALUES (1, 'x') ON CONFLICT (id) DO "
                         "UPDATE SET contact = excluded.note || (SELECT email FROM customers "
                         "LIMIT 1) RETURNING contact", resolve)
    assert EMAIL in contact.sources and CONTACT in contact.sources


def test_returning_old_and_new() -> None:
    old, new = lineage("UPDATE audit SET note = c.ssn FROM customers c "
                       "RETURNING old.note, new.note", resolve)
    assert old.sources == {NOTE} and new.sources == {NOTE, SSN}
    (renamed,) = lineage("UPDATE audit SET note = c.ssn FROM customers c "
                         "RETURNING WITH (NEW AS n) n.note", resolve)
    assert renamed.sources == {NOTE, SSN}


def test_a_write_without_returning_returns_nothing() -> None:
    assert lineage("UPDATE audit SET note = 'x'", resolve) == []
    assert lineage("INSERT INTO audit SELECT id, email, ssn FROM customers", resolve) == []
    assert lineage("DELETE FROM customers", resolve) == []


def test_data_modifying_ctes_resolve_through_returning() -> None:
    (email,) = lineage("WITH x AS (DELETE FROM customers RETURNING *) SELECT email FROM x",
                       resolve)
    assert email.sources == {EMAIL}
    (note,) = lineage("WITH x AS (INSERT INTO audit SELECT id, email FROM customers "
                      "RETURNING note) SELECT * FROM x", resolve)
    assert note.sources == {NOTE, EMAIL}
    assert not lineage("WITH x AS (DELETE FROM customers) SELECT * FROM x", resolve)[0].resolved


def test_copy_to_lists_the_columns_it_sends() -> None:
    outs = lineage("COPY customers (id, email) TO STDOUT", resolve)
    assert [(o.name, o.sources) for o in outs] == [("id", {CID}), ("email", {EMAIL})]
    assert [o.name for o in lineage("COPY customers TO STDOUT", resolve)] == [
        "id", "full_name", "email", "ssn"]
    (lowered,) = lineage("COPY (SELECT lower(ssn) FROM customers) TO STDOUT", resolve)
    assert lowered.columns == [SSN] and lowered.derived
    (ret,) = lineage("COPY (DELETE FROM customers RETURNING email) TO STDOUT", resolve)
    assert ret.sources == {EMAIL}
    assert lineage("COPY customers FROM STDIN", resolve) == []
    assert not lineage("COPY unknown_table TO STDOUT", resolve)[0].resolved


# -- sinks ---------------------------------------------------------------------------------------

def found(sql: str) -> set[tuple[str, Source | None, frozenset[Source]]]:
    """Sinks with the function-result markers left out (see test_function_results_are_marked)."""
    return {(s.kind, s.target, frozenset(x for x in s.sources if x.schema != CALL))
            for s in sinks(sql, resolve)}


def test_insert_sinks_follow_the_column_list_or_the_table_order() -> None:
    assert found("INSERT INTO audit(note) SELECT ssn FROM customers") == {
        ("insert", NOTE, frozenset({SSN}))}
    assert found("INSERT INTO audit SELECT id, lower(email) FROM customers") == {
        ("insert", AUDIT_ID, frozenset({CID})),
        ("insert", NOTE, frozenset({EMAIL, DERIVED}))}
    assert found("INSERT INTO audit VALUES (1, 'a', (SELECT email FROM customers WHERE ssn = "
                 "'x'))") == {("insert", CONTACT, frozenset({EMAIL, DERIVED}))}
    assert found("INSERT INTO audit(note) VALUES ('x'), (DEFAULT)") == set()


def test_insert_into_what_the_resolver_cannot_place_has_no_target() -> None:
    assert found("INSERT INTO nowhere SELECT email FROM customers") == {
        ("insert", None, frozenset({EMAIL}))}
    assert found("INSERT INTO v_contacts (contact) SELECT ssn FROM customers") == {
        ("insert", None, frozenset({SSN}))}
    assert found("INSERT INTO audit(note) SELECT x.* FROM nowhere x") == {
        ("insert", None, frozenset({UNRESOLVED}))}


def test_update_and_upsert_sinks() -> None:
    assert found("UPDATE audit SET note = c.email, contact = 'x' FROM customers c "
                 "WHERE c.ssn = audit.contact") == {("update", NOTE, frozenset({EMAIL}))}
    assert found("UPDATE audit a SET (note, contact) = (SELECT email, id FROM customers c "
                 "WHERE c.ssn = a.note)") == {("update", NOTE, frozenset({EMAIL})),
                                              ("update", CONTACT, frozenset({CID}))}
    assert found("UPDATE audit SET (note, id) = (upper(note), 1)") == {
        ("update", NOTE, frozenset({NOTE, DERIVED}))}
    assert found("INSERT INTO audit(id, note) SELECT id, 'x' FROM customers ON CONFLICT (id) "
                 "DO UPDATE SET contact = (SELECT ssn FROM customers LIMIT 1) "
                 "WHERE audit.note = 'y'") == {("insert", AUDIT_ID, frozenset({CID})),
                                              ("insert", CONTACT, frozenset({SSN, DERIVED}))}
    upsert = found("INSERT INTO audit(id, note) SELECT id, email FROM customers "
                   "ON CONFLICT (id) DO UPDATE SET contact = excluded.note")
    assert ("insert", CONTACT, frozenset({EMAIL})) in upsert


def test_merge_sinks() -> None:
    assert found("MERGE INTO audit t USING customers c ON t.id = c.id "
                 "WHEN MATCHED AND c.ssn = 'x' THEN UPDATE SET note = c.email "
                 "WHEN NOT MATCHED THEN INSERT (id, contact) VALUES (c.id, c.ssn)") == {
        ("merge", NOTE, frozenset({EMAIL})), ("merge", AUDIT_ID, frozenset({CID})),
        ("merge", CONTACT, frozenset({SSN}))}
    assert found("MERGE INTO audit t USING (SELECT id, email FROM customers) s ON t.id = s.id "
                 "WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.email)") == {
        ("merge", AUDIT_ID, frozenset({CID})), ("merge", NOTE, frozenset({EMAIL}))}


def test_filtering_in_a_write_is_no_sink() -> None:
    assert found("UPDATE audit SET note = 'x' WHERE contact IN (SELECT email FROM customers)") \
        == set()
    assert found("DELETE FROM audit USING customers c WHERE c.email = audit.note") == set()
    assert found("UPDATE audit SET note = (SELECT 'x' FROM customers c WHERE c.ssn = 'y' "
                 "ORDER BY c.email LIMIT 1)") == set()
    assert found("INSERT INTO audit(id) SELECT id FROM customers WHERE email = 'x' "
                 "ORDER BY ssn") == {("insert", AUDIT_ID, frozenset({CID}))}


def test_create_table_as_and_select_into() -> None:
    expected = {("create_table_as", None, frozenset({EMAIL})),
                ("create_table_as", None, frozenset({CID}))}
    assert found("CREATE TABLE t2 AS SELECT email, id, 1 FROM customers") == expected
    assert found("SELECT email, id INTO t3 FROM customers") == expected
    assert found("CREATE MATERIALIZED VIEW mv AS SELECT email, id FROM customers "
                 "WITH NO DATA") == expected
    assert found("CREATE TABLE t4 AS EXECUTE p") == {
        ("create_table_as", None, frozenset({UNRESOLVED}))}


@pytest.mark.parametrize(("sql", "name", "carried"), [
    ("SELECT set_config('x.y', email, false) FROM customers", "set_config", {EMAIL}),
    ("SELECT set_config(setting_name => 'x.y', new_value => email, is_local => false) "
     "FROM customers", "set_config", {EMAIL}),
    ("SELECT id FROM customers WHERE pg_notify('c', ssn) IS NOT NULL", "pg_notify", {SSN}),
    ("SELECT lo_from_bytea(0, convert_to(email, 'UTF8')) FROM customers", "lo_from_bytea",
     {EMAIL, DERIVED}),
    ("SELECT lo_put(42, 0, convert_to(email, 'UTF8')) FROM customers", "lo_put",
     {EMAIL, DERIVED}),
    ("SELECT lowrite(0, ssn::bytea) FROM customers", "lowrite", {SSN, DERIVED}),
    ("SELECT pg_logical_emit_message(true, email, 'x') FROM customers",
     "pg_logical_emit_message", {EMAIL}),
    ("SELECT dblink_exec('conn', 'insert into t values (' || quote_literal(email) || ')') "
     "FROM customers", "dblink_exec", {EMAIL, DERIVED}),
    ("SELECT * FROM customers c, dblink('conn', c.email) AS t(x text)", "dblink", {EMAIL}),
    ("UPDATE audit SET note = 'x' WHERE set_config('a.b', note, true) = ''", "set_config",
     {NOTE}),
    ("WITH x AS (SELECT pg_notify('c', email) FROM customers) SELECT 1", "pg_notify", {EMAIL}),
    ("SELECT id FROM customers c WHERE EXISTS (SELECT set_config('a.b', c.ssn, false))",
     "set_config", {SSN}),
    ("SELECT id FROM customers c JOIN orders o ON pg_notify('c', c.email) IS NULL",
     "pg_notify", {EMAIL}),
    ("EXPLAIN ANALYZE SELECT set_config('a.b', ssn, true) FROM customers", "set_config",
     {SSN}),
    ("CALL p(set_config('a.b', (SELECT email FROM customers LIMIT 1), true))", "set_config",
     {EMAIL, DERIVED}),
])
def test_functions_that_store_or_send_an_argument(sql: str, name: str,
                                                  carried: set[Source]) -> None:
    assert (f"function:{name}", None, frozenset(carried)) in found(sql)


def test_function_arguments_that_are_not_stored_are_no_sink() -> None:
    assert found("SELECT set_config(email, 'x', false) FROM customers") == set()
    assert found("SELECT pg_notify(email, 'x') FROM customers") == set()
    assert found("NOTIFY ch, 'literal'") == set()
    assert found("SELECT email FROM customers") == set()


def test_copy_to_a_file_or_program_is_a_sink() -> None:
    assert found("COPY (SELECT lower(ssn) FROM customers) TO '/tmp/x'") == {
        ("copy_file", None, frozenset({SSN, DERIVED}))}
    assert found("COPY customers (email) TO PROGRAM 'cat'") == {
        ("copy_file", None, frozenset({EMAIL}))}
    assert found("COPY customers (email) TO STDOUT") == set()


def test_sinks_inside_writable_ctes() -> None:
    assert found("WITH x AS (INSERT INTO audit(note) SELECT email FROM customers RETURNING id) "
                 "SELECT * FROM x") == {("insert", NOTE, frozenset({EMAIL}))}
    assert found("WITH x AS (UPDATE audit SET contact = c.ssn FROM customers c RETURNING 1) "
                 "DELETE FROM orders") == {("update", CONTACT, frozenset({SSN}))}


def test_sinks_are_sink_objects() -> None:
    (sink,) = sinks("INSERT INTO audit(note) SELECT ssn FROM customers", resolve)
    assert sink == Sink("insert", NOTE, frozenset({SSN}))


# -- planner statistics --------------------------------------------------------------------------

def _catalog(*extra: RelationInfo) -> Catalog:
    return Catalog.build([RelationInfo(Name("public", "customers"),
                                       columns=("id", "full_name", "email", "ssn")), *extra], [])


@pytest.mark.parametrize("sql", [
    "SELECT most_common_vals FROM pg_stats",
    "SELECT histogram_bounds FROM pg_catalog.pg_stats WHERE tablename = 'customers'",
    "SELECT s.most_common_elems FROM pg_stats s",
    "SELECT most_common_vals::text FROM pg_stats_ext",
    "SELECT most_common_vals FROM pg_stats_ext_exprs",
    "SELECT histogram_bounds FROM pg_stats_ext_exprs",
    "SELECT most_common_elems FROM pg_stats_ext_exprs",
    "SELECT stavalues1 FROM pg_statistic",
    "SELECT stavalues5 FROM pg_catalog.pg_statistic",
    "SELECT array_to_string(stavalues2, ',') FROM pg_statistic",
])
def test_planner_statistics_may_hold_any_masked_value(sql: str) -> None:
    for path in (["public"], ["public", "pg_catalog"]):
        (out,) = lineage(sql, _catalog().lineage_resolver(path))
        assert out.any_masked and ANY_MASKED in out.sources, (sql, path)


def test_planner_statistics_star_and_other_columns() -> None:
    outs = lineage("SELECT * FROM pg_stats", _catalog().lineage_resolver(["public"]))
    masked = {o.name for o in outs if o.any_masked}
    assert {"most_common_vals", "histogram_bounds", "most_common_elems"} <= masked
    assert "attname" not in masked and "most_common_freqs" not in masked


def test_planner_statistics_listed_in_the_catalog_keep_their_columns() -> None:
    listed = RelationInfo(Name("pg_catalog", "pg_statistic"), columns=(
        "starelid", "staattnum", "stavalues1", "stavalues2"))
    outs = lineage("SELECT * FROM pg_statistic", _catalog(listed).lineage_resolver(["public"]))
    assert [o.name for o in outs] == ["starelid", "staattnum", "stavalues1", "stavalues2"]
    assert [o.any_masked for o in outs] == [False, False, True, True]


def test_a_user_relation_earlier_on_the_path_shadows_the_statistics() -> None:
    mine = RelationInfo(Name("public", "pg_stats"), columns=("most_common_vals",))
    catalog = _catalog(mine)
    (shadowed,) = lineage("SELECT most_common_vals FROM pg_stats",
                          catalog.lineage_resolver(["public", "pg_catalog"]))
    assert shadowed.sources == {Source("public", "pg_stats", "most_common_vals")}
    # pg_catalog comes first when the path does not place it
    (first,) = lineage("SELECT most_common_vals FROM pg_stats",
                       catalog.lineage_resolver(["public"]))
    assert first.any_masked
    (qualified,) = lineage("SELECT most_common_vals FROM public.pg_stats",
                           catalog.lineage_resolver(["public"]))
    assert not qualified.any_masked


def test_planner_statistics_in_a_real_catalog(pg: PgTarget) -> None:
    """pg_stats is a view over pg_statistic in the server's catalog: both routes carry it."""
    cfg = make_config(pg)
    assert cfg.postgres is not None
    catalog = asyncio.run(load_catalog(cfg.postgres.databases["test"], 1))
    resolve = catalog.lineage_resolver(["public"])
    outs = lineage("SELECT attname, most_common_vals, histogram_bounds FROM pg_stats", resolve)
    assert [o.any_masked for o in outs] == [False, True, True]
    (sta,) = lineage("SELECT stavalues1 FROM pg_statistic", resolve)
    assert sta.any_masked


def test_function_results_are_marked() -> None:
    (out,) = lineage("SELECT app.lookup(id) FROM customers", resolve)
    assert out.calls == [Name("app", "lookup")]
    assert out.columns == [Source("public", "customers", "id")]
    (out,) = lineage("SELECT upper(email) FROM customers", resolve)
    assert out.calls == [Name(None, "upper")] and out.columns == [EMAIL]
    (out,) = lineage("SELECT id FROM customers WHERE app.check(email)", resolve)
    assert out.calls == []

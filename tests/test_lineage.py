"""Column lineage on pglast's tree: what each output column may carry, through aliases,
expressions, subqueries, CTEs, joins, set operations and whole-row references."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from policies.facts import Name
from policies.lineage import UNRESOLVED, Source, lineage, table_columns
from proxy.catalog import load_catalog
from tests.conftest import PgTarget, make_config

TABLES = {
    ("public", "customers"): ["id", "full_name", "email", "ssn"],
    ("public", "orders"): ["id", "customer_id", "total"],
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

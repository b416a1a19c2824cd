"""Loading catalog snapshots from the local MariaDB (proxy/mysql_catalog.py).

A scratch database with a unique name holds one object of each kind the guardrails care about;
it is created once for the module and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Iterator

import pymysql
import pytest

from policies.catalog import Catalog
from policies.facts import Name
from proxy.catalog import CatalogCache, CatalogError
from proxy.config import Secret, Upstream
from proxy.mysql_catalog import (
    catalog_query,
    load_mysql_catalog,
    routine_writes,
    view_bases,
)

MYSQL_HOST = os.environ.get("WIREGATE_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("WIREGATE_TEST_MYSQL_PORT", "3306"))


def upstream(port: int = MYSQL_PORT) -> Upstream:
    return Upstream(name="my", host=MYSQL_HOST, port=port, dbname="test", user="root",
                    password=Secret(value="", key="my.password"), tls="prefer")


def execute(*statements: str, database: str | None = None) -> None:
    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="",
                           database=database, autocommit=True)
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def db() -> Iterator[str]:
    try:
        socket.create_connection((MYSQL_HOST, MYSQL_PORT), timeout=3).close()
    except OSError as exc:
        pytest.skip(f"MariaDB/MySQL not reachable at {MYSQL_HOST}:{MYSQL_PORT}: {exc}")
    name = f"wg_mycat_{secrets.token_hex(4)}"
    execute(f"CREATE DATABASE {name}")
    try:
        execute(
            f"CREATE TABLE {name}.customers (id INT PRIMARY KEY, email TEXT, name TEXT)",
            f"CREATE TABLE {name}.orders (id INT PRIMARY KEY, customer_id INT, total INT)",
            f"CREATE TABLE {name}.`Mixed Case` (z INT, a INT)",
            f"CREATE VIEW {name}.customer_orders AS SELECT c.email, o.total "
            f"FROM customers c JOIN orders o ON o.customer_id = c.id",
            f"CREATE VIEW {name}.big_orders AS SELECT email FROM customer_orders "
            f"WHERE total > 100",
            f"CREATE VIEW {name}.with_cte AS WITH customers AS (SELECT id FROM orders) "
            f"SELECT id FROM customers UNION SELECT 1 FROM mysql.user",
            f"CREATE FUNCTION {name}.order_count(c INT) RETURNS INT READS SQL DATA "
            f"RETURN (SELECT COUNT(*) FROM {name}.orders WHERE customer_id = c)",
            f"CREATE FUNCTION {name}.twice(c INT) RETURNS INT READS SQL DATA "
            f"RETURN {name}.order_count(c) * 2",
            f"CREATE FUNCTION {name}.no_sql(s TEXT) RETURNS TEXT NO SQL DETERMINISTIC "
            f"RETURN REPLACE(INSERT(s, 1, 1, 'x'), 'insert', 'update')",
            f"CREATE FUNCTION {name}.contains_sql() RETURNS INT CONTAINS SQL RETURN 1",
            # declared read-only, but it writes: MySQL does not enforce the declaration
            f"CREATE FUNCTION {name}.liar(c INT) RETURNS INT READS SQL DATA "
            f"BEGIN INSERT INTO {name}.orders VALUES (c, c, c); RETURN c; END",
            f"CREATE FUNCTION {name}.calls_liar(c INT) RETURNS INT READS SQL DATA "
            f"RETURN liar(c) + 1",
            # escapes MariaDB re-prints without backslashes: 'a\'b' as 'a''b', 'c\\' as 'c\'
            f"CREATE FUNCTION {name}.escapes() RETURNS TEXT READS SQL DATA "
            f"RETURN CONCAT('a\\'b', 'c\\\\', '; INSERT INTO x', "
            f"(SELECT COUNT(*) FROM orders))",
            f"CREATE FUNCTION {name}.escapes_liar() RETURNS TEXT READS SQL DATA "
            f"BEGIN DECLARE s TEXT DEFAULT 'x\\\\'; INSERT INTO orders VALUES (9, 9, 9); "
            f"RETURN s; END",
            f"CREATE PROCEDURE {name}.add_order(i INT) MODIFIES SQL DATA "
            f"INSERT INTO {name}.orders VALUES (i, i, i)",
            database=name,
        )
        yield name
    finally:
        execute(f"DROP DATABASE {name}")


@pytest.fixture(scope="module")
def catalog(db: str) -> Catalog:
    return asyncio.run(load_mysql_catalog(upstream(), version=7))


@pytest.mark.mysql
def test_tables_and_views_with_columns_in_order(db: str, catalog: Catalog) -> None:
    assert catalog.loaded and catalog.version == 7 and catalog.search_path == ""
    rels = {n.name: r for n, r in catalog.relations.items() if n.schema == db}
    assert set(rels) == {"customers", "orders", "Mixed Case", "customer_orders",
                         "big_orders", "with_cte"}
    assert rels["customers"].kind == "r" and rels["customers"].columns == ("id", "email",
                                                                           "name")
    assert rels["Mixed Case"].columns == ("z", "a") and rels["Mixed Case"].definition is None
    assert rels["customer_orders"].kind == "v"
    assert rels["customer_orders"].columns == ("email", "total")
    assert rels["customer_orders"].definition is not None
    assert "select" in rels["customer_orders"].definition.lower()


@pytest.mark.mysql
def test_view_bases_come_from_the_parsed_definition(db: str, catalog: Catalog) -> None:
    rel = catalog.relations
    assert set(rel[Name(db, "customer_orders")].bases) == {Name(db, "customers"),
                                                           Name(db, "orders")}
    assert rel[Name(db, "big_orders")].bases == (Name(db, "customer_orders"),)
    # the CTE named like a table is not the table; mysql.user is read
    assert set(rel[Name(db, "with_cte")].bases) == {Name(db, "orders"),
                                                    Name("mysql", "user")}
    # through the view over a view down to the tables
    assert catalog.base_tables(rel[Name(db, "big_orders")]) == {Name(db, "customers"),
                                                                Name(db, "orders")}


@pytest.mark.mysql
def test_routines_are_read_only_only_when_declared_and_shown_so(db: str,
                                                               catalog: Catalog) -> None:
    def one(name: str) -> tuple[str, str, bool]:
        (r,) = catalog.routines[Name(db, name)]
        return r.volatility, r.kind, r.read_only

    assert one("order_count") == ("s", "f", True)
    assert one("twice") == ("s", "f", True)            # calls a read-only function
    assert one("no_sql") == ("s", "f", True)           # INSERT()/REPLACE() string functions
    assert one("contains_sql") == ("v", "f", False)
    assert one("liar") == ("v", "f", False)            # declared READS SQL DATA, inserts
    assert one("calls_liar") == ("v", "f", False)      # calls a function that writes
    assert one("add_order") == ("v", "p", False)
    assert one("escapes") == ("s", "f", True)
    assert one("escapes_liar") == ("v", "f", False)


@pytest.mark.mysql
def test_server_tables_are_tables_sys_is_left_out_and_mysql_is_kept(db: str,
                                                                    catalog: Catalog) -> None:
    schemas = {n.schema for n in catalog.relations}
    assert "sys" not in schemas
    tables = catalog.relations[Name("information_schema", "TABLES")]
    assert tables.kind == "r" and "TABLE_NAME" in tables.columns   # traced to itself
    assert Name("mysql", "user") in catalog.relations
    assert Name("mysql", "column_stats") in catalog.relations
    assert catalog.relations[Name("mysql", "column_stats")].columns[:3] == (
        "db_name", "table_name", "column_name")
    assert {db, "mysql", "information_schema", "test"} <= catalog.schemas


@pytest.mark.mysql
def test_plugged_into_the_catalog_cache(db: str) -> None:
    async def go() -> tuple[Catalog, Catalog]:
        cache = CatalogCache(loader=lambda up, v: load_mysql_catalog(up, v, 10.0))
        try:
            first = await cache.get(upstream())
            execute(f"CREATE TABLE {db}.later (x INT)")
            second = await cache.refresh(upstream())
            return first, second
        finally:
            await cache.close()

    first, second = asyncio.run(go())
    assert Name(db, "later") not in first.relations
    assert second.relations[Name(db, "later")].columns == ("x",)
    assert second.version > first.version


def test_unreachable_server_is_a_catalog_error_naming_it() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(CatalogError) as info:
            asyncio.run(load_mysql_catalog(upstream(port), 1, timeout=5))
    assert str(info.value).startswith("catalog of upstream 'my'")
    assert f"{MYSQL_HOST}:{port}" in str(info.value)


@pytest.mark.mysql
def test_login_refused_is_a_catalog_error(db: str) -> None:
    up = Upstream(name="my", host=MYSQL_HOST, port=MYSQL_PORT, dbname="wg_no_such_db_x",
                  user="root", password=Secret(value=""), tls="disable")
    with pytest.raises(CatalogError) as info:
        asyncio.run(load_mysql_catalog(up, 1))
    assert f"{MYSQL_HOST}:{MYSQL_PORT}" in str(info.value) and "1049" in str(info.value)


def test_catalog_query_is_one_read_only_snapshot() -> None:
    sql = catalog_query()
    assert sql.startswith("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ;\n"
                          "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    assert sql.endswith("COMMIT")


@pytest.mark.parametrize("definition, bases", [
    ("select `d`.`t`.`a` AS `a` from (`d`.`t` join `e`.`u` on(`d`.`t`.`a` = `e`.`u`.`b`))",
     [Name("d", "t"), Name("e", "u")]),
    ("select 1 AS `1` from dual", []),
    ("select `x`.`a` AS `a` from (select `a` from `t`) `x` where exists(select 1 from `s`.`w`)",
     [Name("v", "t"), Name("s", "w")]),
    # a plain WITH: inside a CTE only earlier CTEs are visible, so `c` there is the table
    ("with c as (select 1 AS `a` from `c`), b as (select `a` from `c`) select `a` from `b`",
     [Name("v", "c")]),
    ("with recursive r as (select 1 AS `n` union all select `n` + 1 from `r` where `n` < 3) "
     "select `n` from `r` join `k` on 1", [Name("v", "k")]),
    ("select `jt`.`a` AS `a` from json_table('[1]','$[*]' columns (`a` int path '$')) `jt`",
     []),
    ("select '\\' AS `b` from `t`", [Name("v", "t")]),     # NO_BACKSLASH_ESCAPES
])
def test_view_bases_parsing(definition: str, bases: list[Name]) -> None:
    assert list(view_bases(definition, "v")) == bases


@pytest.mark.parametrize("body, writes, calls", [
    ("RETURN TRUNCATE(x, 2)", False, set()),
    ("BEGIN DECLARE role TEXT; SET role = 'x', @y = 1; SELECT role, reset INTO a, b FROM t; "
     "RETURN @@global.max_connections; END", False, set()),
    ("BEGIN SET ROLE admin; RETURN 1; END", True, set()),
    ("BEGIN SET @a = 1, GLOBAL max_connections = 1; RETURN 1; END", True, set()),
    ("BEGIN SET PASSWORD = 'x'; RETURN 1; END", True, set()),
    ("BEGIN IF x THEN TRUNCATE TABLE t; END IF; END", True, set()),
    ("RETURN (SELECT COUNT(*) FROM t WHERE a = 'insert into x')", False, set()),
    ("RETURN REPLACE(INSERT(s, 1, 1, 'x'), 'a', 'b')", False, set()),
    ("BEGIN UPDATE t SET a = 1; RETURN 1; END", True, set()),
    ("BEGIN DECLARE x INT; SELECT a INTO x FROM t FOR UPDATE; RETURN x; END", True, set()),
    ("RETURN NEXT VALUE FOR s", True, set()),
    ("RETURN nextval(s)", True, {(None, "nextval")}),
    ("BEGIN SET @@global.max_connections = 1; RETURN 1; END", True, set()),
    ("RETURN 1 /*! + (SELECT 1 FROM t FOR UPDATE) */", True, set()),
    ("RETURN `db`.`F`(1) + g (2) + `upd`('x')", False, {("db", "f"), (None, "g"),
                                                      (None, "upd")}),
    (None, True, set()),
])
def test_routine_body_scan(body: str | None, writes: bool,
                           calls: set[tuple[str | None, str]]) -> None:
    got_writes, got_calls = routine_writes(body)
    assert routine_writes(body, "NO_BACKSLASH_ESCAPES,ANSI_QUOTES")[0] == writes
    assert got_writes == writes
    builtins = ("count", "replace", "insert", "truncate")
    assert {c for c in got_calls if c[1] not in builtins} == calls


def test_routine_body_in_the_routines_sql_mode() -> None:
    body = "BEGIN SET p = '\\'; RETURN REPLACE(x, '\\', p); END"    # as sys stores them
    assert routine_writes(body) == (True, set())                       # cannot read: may write
    assert routine_writes(body, "NO_BACKSLASH_ESCAPES")[0] is False
    assert routine_writes('RETURN "insert"', "ANSI_QUOTES")[0] is False


def test_the_catalog_knows_which_server_reads_executable_comments() -> None:
    from proxy.mysql_catalog import server_release

    assert server_release("5.5.5-10.11.19-MariaDB-0+deb12u1") == ("mariadb", (10, 11, 19))
    assert server_release("8.0.36") == ("mysql", (8, 0, 36))
    assert server_release("11.4.2-MariaDB") == ("mariadb", (11, 4, 2))


@pytest.mark.mysql
def test_loaded_catalog_carries_the_servers_release(catalog: Catalog) -> None:
    assert catalog.server == "mariadb" and catalog.server_version[0] >= 10

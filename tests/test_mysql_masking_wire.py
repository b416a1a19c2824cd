"""Masking on the MySQL wire: what PyMySQL (text protocol), mysql-connector prepared cursors
(binary protocol, pure and C) and the mariadb client read through Wiregate, against a real
MariaDB: masked cells, derived values masked whole, refused copies, scrubbed errors and
warnings, SQL PREPARE/EXECUTE, HANDLER reads, views."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest

from tests.conftest import CLIENT_PASSWORD, CLIENT_USER, MySQLTarget

ROWS = [(1, "Jane Roe", "jane.roe@example.com", "078-05-1120", "4242424242424242"),
        (2, "John Doe", "john.doe@example.org", "219-09-9999", "5555555555554444")]
SECRETS = [str(r[i]) for r in ROWS for i in (2, 3, 4)]


def no_secret(rows: Any) -> None:
    text = repr(rows)
    for secret in SECRETS:
        for form in (secret, secret.upper(), secret[::-1], secret.replace("-", "")):
            assert form not in text, (form, rows)


@pytest.fixture
def world(mysql: MySQLTarget, mysql_proxy_factory: Any, tmp_path: Path
          ) -> Iterator[tuple[str, int]]:
    db = f"wg_mask_{uuid.uuid4().hex[:8]}"
    with pymysql.connect(host=mysql.host, port=mysql.port, user=mysql.user,
                         password=mysql.password, autocommit=True) as conn, \
            conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.customers (id INT PRIMARY KEY, full_name "
                    "VARCHAR(60), email VARCHAR(80) UNIQUE, ssn CHAR(11), card VARCHAR(19))")
        cur.executemany(f"INSERT INTO {db}.customers VALUES (%s, %s, %s, %s, %s)", ROWS)
        cur.execute(f"CREATE VIEW {db}.contacts AS SELECT id, email FROM {db}.customers")
        cur.execute(f"CREATE TABLE {db}.notes (id INT AUTO_INCREMENT PRIMARY KEY, body TEXT)")
        cur.execute(f"CREATE FUNCTION {db}.leak() RETURNS VARCHAR(80) READS SQL DATA "
                    f"RETURN (SELECT email FROM {db}.customers ORDER BY id LIMIT 1)")
    policy = tmp_path / "policy.toml"
    policy.write_text(f"""
[profiles.agent]
[[profiles.agent.rule]]
id = "no-drop"
kind = "ddl"
allow_create = ["table"]
[profiles.agent.masking]
default_strategy = "redact"
[[profiles.agent.masking.column]]
columns = ["{db}.customers.email"]
strategy = "email"
[[profiles.agent.masking.column]]
columns = ["{db}.customers.card"]
strategy = "partial"
keep_last = 4
[[profiles.agent.masking.column]]
columns = ["{db}.customers.ssn"]
strategy = "redact"
""")
    proxy = mysql_proxy_factory(guardrails={"policy_file": str(policy)},
                                upstream={"profile": "agent", "dbname": db})
    yield db, proxy.mysql_port
    with pymysql.connect(host=mysql.host, port=mysql.port, user=mysql.user,
                         password=mysql.password, autocommit=True) as conn, \
            conn.cursor() as cur:
        cur.execute(f"DROP DATABASE {db}")


def text_conn(port: int, **kw: Any) -> Any:
    return pymysql.connect(host="127.0.0.1", port=port, user=CLIENT_USER,
                           password=CLIENT_PASSWORD, database="test", autocommit=True, **kw)


def rows_text(port: int, sql: str, args: Any = None) -> Any:
    with text_conn(port) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def rows_binary(port: int, sql: str, args: Any = (), pure: bool = True) -> Any:
    conn = mysql.connector.connect(host="127.0.0.1", port=port, user=CLIENT_USER,
                                   password=CLIENT_PASSWORD, database="test", use_pure=pure)
    try:
        cur = conn.cursor(prepared=True)
        cur.execute(sql, args)
        return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def test_select_star_is_masked_in_text_protocol(world: tuple[str, int]) -> None:
    _, port = world
    rows = rows_text(port, "SELECT * FROM customers ORDER BY id")
    assert rows[0] == (1, "Jane Roe", "j***@example.com", "****", "************4242")
    no_secret(rows)


@pytest.mark.parametrize("pure", [True, False])
def test_prepared_statements_are_masked_in_binary_protocol(world: tuple[str, int],
                                                           pure: bool) -> None:
    _, port = world
    rows = rows_binary(port, "SELECT id, email, ssn, card FROM customers WHERE id >= ? "
                       "ORDER BY id", (1,), pure)
    assert rows[1] == (2, "j***@example.org", "****", "************4444")
    no_secret(rows)


def test_must_work_reads_and_derived_values(world: tuple[str, int]) -> None:
    _, port = world
    assert rows_text(port, "SELECT full_name FROM customers WHERE email = %s",
                     ("jane.roe@example.com",)) == (("Jane Roe",),)
    derived = rows_text(port, "SELECT UPPER(email), CONCAT(email, ''), LOWER(ssn), "
                        "TO_BASE64(card), JSON_OBJECT('e', email), CAST(ssn AS BINARY) "
                        "FROM customers")
    assert all(cell in ("****", b"****") for row in derived for cell in row), derived
    assert rows_text(port, "SELECT email FROM contacts ORDER BY id") == (
        ("j***@example.com",), ("j***@example.org",))
    sub = rows_text(port, "SELECT e FROM (SELECT email AS e FROM customers) s ORDER BY 1")
    union = rows_text(port, "SELECT full_name FROM customers UNION ALL SELECT email FROM "
                      "customers")
    no_secret([derived, sub, union])
    assert rows_binary(port, "SELECT email FROM customers WHERE id = ?", (1,)) == [
        ("j***@example.com",)]


@pytest.mark.parametrize("sql", [
    "UPDATE customers SET full_name = ssn WHERE id = 1",
    "INSERT INTO notes (body) SELECT card FROM customers",
    "INSERT INTO notes (body) VALUES ((SELECT LOWER(email) FROM customers LIMIT 1))",
    "CREATE TABLE copy1 AS SELECT id, email FROM customers",
    "SELECT email INTO @e FROM customers LIMIT 1",
    "SET @e = (SELECT email FROM customers LIMIT 1)",
    "SELECT @e := email FROM customers",
    "SELECT EXTRACTVALUE('<a/>', CONCAT('/', email)) FROM customers",
    "SELECT 1; SELECT email FROM customers",
    "INSERT INTO notes (body) SELECT leak()",
])
def test_copies_of_masked_values_are_refused(world: tuple[str, int], sql: str) -> None:
    _, port = world
    with text_conn(port, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS) as conn, \
            conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError) as ei:
            cur.execute(sql)
        assert ei.value.args[0] in (1227, 1142), ei.value.args
        assert "wiregate: blocked by rule" in ei.value.args[1]
        cur.execute("SELECT count(*) FROM notes")
        assert cur.fetchall() == ((0,),)
        cur.execute("SELECT @e")
        assert cur.fetchall() == ((None,),)


def test_a_stored_function_reading_masked_columns_is_masked_whole(world: tuple[str, int]
                                                                   ) -> None:
    _, port = world
    rows = rows_text(port, "SELECT leak()")
    assert rows == (("****",),)


def test_errors_and_warnings_do_not_print_masked_values(world: tuple[str, int]) -> None:
    _, port = world
    with text_conn(port) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError) as ei:
            cur.execute("INSERT INTO customers (id, email) SELECT 9, email FROM customers "
                        "WHERE id = 1")
        assert "jane.roe" not in ei.value.args[1]
        with pytest.raises(pymysql.err.MySQLError) as ei:
            cur.execute("UPDATE customers SET email = (SELECT email FROM (SELECT email FROM "
                        "customers WHERE id = 2) x) WHERE id = 1")
        no_secret(ei.value.args)
        cur.execute("SELECT CAST(email AS SIGNED), ssn + 0 FROM customers")
        cur.fetchall()
        cur.execute("SHOW WARNINGS")
        warnings = cur.fetchall()
        assert warnings, "the casts warn"
        no_secret(warnings)
        assert all(w[2] == "" or "withheld" in w[2] or "'" not in w[2] for w in warnings)


def test_sql_prepare_and_execute_are_masked_by_name(world: tuple[str, int]) -> None:
    _, port = world
    with text_conn(port) as conn, conn.cursor() as cur:
        cur.execute("PREPARE s FROM 'SELECT id, email FROM customers ORDER BY id'")
        cur.execute("EXECUTE s")
        rows = cur.fetchall()
        assert rows == ((1, "j***@example.com"), (2, "j***@example.org"))
        cur.execute("DEALLOCATE PREPARE s")
        cur.execute("PREPARE s FROM 'SELECT full_name FROM customers ORDER BY id'")
        cur.execute("EXECUTE s")
        assert cur.fetchall() == (("Jane Roe",), ("John Doe",))


def test_handler_reads_are_masked(world: tuple[str, int]) -> None:
    _, port = world
    with text_conn(port) as conn, conn.cursor() as cur:
        cur.execute("HANDLER customers OPEN")
        cur.execute("HANDLER customers READ `PRIMARY` FIRST")
        rows = cur.fetchall()
        cur.execute("HANDLER customers CLOSE")
    assert rows[0][:2] == (1, "Jane Roe")
    no_secret(rows)


def test_the_mariadb_client_sees_masked_values(world: tuple[str, int]) -> None:
    _, port = world
    out = subprocess.run(["mariadb", "-h127.0.0.1", f"-P{port}", f"-u{CLIENT_USER}",
                          f"-p{CLIENT_PASSWORD}", "--batch", "--skip-column-names", "test",
                          "-e", "SELECT id, email, card FROM customers ORDER BY id"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["1\tj***@example.com\t************4242",
                                       "2\tj***@example.org\t************4444"]

"""The guardrails end to end: real clients, every protocol path, the real server behind.

One Wiregate serves three routes to the same database, each with a profile from
``examples/policy.toml`` (with this module's own table added to agent-rw's protected tables):
``test`` (agent-rw), ``ro`` (agent-readonly) and ``human``. The tables live in a throwaway
schema created directly on the server before Wiregate starts, so its catalog knows them.

What a user relies on is checked from the outside: the error a client sees (SQLSTATE 42501,
the rule id, DETAIL and HINT), that the session and its transaction behave as after a server
error, and that a refused statement changes nothing on the server (checksums of the data and
of the catalog, taken directly on the server, before and after).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from psycopg import pq

from proxy.server import ThreadedProxy
from tests.conftest import (
    CLIENT_PASSWORD,
    CLIENT_USER,
    ROOT,
    PgTarget,
    client_dsn,
    make_config,
)

pytestmark = pytest.mark.postgres

PSQL = shutil.which("psql")
EXAMPLE_POLICY = ROOT / "examples" / "policy.toml"
AGENT_RW_PROTECTED = 'tables = ["public.payments", "audit.*"]'
HUMAN_PROTECTED = 'tables = ["audit.*"]'
ITEMS = [(i, f"item-{i}") for i in range(1, 6)]
LEDGER = [(1, 100), (2, 200), (3, 300)]


@dataclass
class World:
    pg: PgTarget
    proxy: ThreadedProxy
    schema: str
    policy_file: Path

    @property
    def items(self) -> str:
        return f"{self.schema}.items"

    @property
    def ledger(self) -> str:
        return f"{self.schema}.ledger"

    @property
    def ledger_v(self) -> str:
        return f"{self.schema}.ledger_v"

    def dsn(self, route: str = "test", **extra: str) -> str:
        return client_dsn(self.proxy.port, dbname=route, **extra)

    def connect(self, route: str = "test", **kwargs: Any) -> psycopg.Connection[Any]:
        kwargs.setdefault("autocommit", True)
        return psycopg.connect(self.dsn(route), **kwargs)

    async def aconnect(self, route: str = "test") -> asyncpg.Connection:
        return await asyncpg.connect(host="127.0.0.1", port=self.proxy.port, user=CLIENT_USER,
                                     password=CLIENT_PASSWORD, database=route, ssl=False)

    # -- direct to the server, bypassing Wiregate ----------------------------------------------

    def server(self, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.pg.dsn(), autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def data_checksum(self) -> tuple[Any, ...]:
        return tuple(
            self.server(f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
                        f"FROM {name} t")[0][0]
            for name in (self.items, self.ledger))

    def catalog_checksum(self) -> tuple[Any, ...]:
        rel = self.server(
            "SELECT md5(coalesce(string_agg(c.oid || ':' || c.relname || ':' || c.relkind::text"
            " || ':' || coalesce(c.relacl::text, '') || ':' || c.relnatts, ',' ORDER BY c.oid),"
            " ''))"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s", (self.schema,))[0][0]
        # other objects: only names this module could create, so that concurrent work on
        # the same server does not disturb the comparison
        like = (f"{self.schema}%",)
        roles = self.server("SELECT md5(coalesce(string_agg(rolname, ',' ORDER BY rolname), ''))"
                            " FROM pg_roles WHERE rolname LIKE %s", like)[0][0]
        procs = self.server("SELECT md5(coalesce(string_agg(p.oid || ':' || proname, ',' "
                            "ORDER BY p.oid), '')) FROM pg_proc p JOIN pg_namespace n "
                            "ON n.oid = p.pronamespace WHERE n.nspname LIKE %s", like)[0][0]
        schemas = self.server("SELECT md5(coalesce(string_agg(nspname || ':' || "
                              "coalesce(nspacl::text, ''), ',' ORDER BY nspname), '')) "
                              "FROM pg_namespace WHERE nspname LIKE %s", like)[0][0]
        return rel, roles, procs, schemas

    def reset(self) -> None:
        with psycopg.connect(self.pg.dsn(), autocommit=True) as conn:
            conn.execute(f"DELETE FROM {self.items}")
            conn.execute(f"DELETE FROM {self.ledger}")
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {self.items} VALUES (%s, %s)", ITEMS)
                cur.executemany(f"INSERT INTO {self.ledger} VALUES (%s, %s)", LEDGER)
            conn.execute(f"DELETE FROM {self.schema}.events")
            conn.execute(f"DELETE FROM {self.schema}.base")
            conn.execute(f"INSERT INTO {self.schema}.events VALUES (1, 'kept')")
            conn.execute(f"INSERT INTO {self.schema}.vault VALUES (1, 'kept')")

    def item_ids(self) -> list[int]:
        return [r[0] for r in self.server(f"SELECT id FROM {self.items} ORDER BY id")]


@pytest.fixture(scope="module")
def world(pg: PgTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    schema = f"wg_gw_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    proxy: ThreadedProxy | None = None
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            for ddl in (
                "CREATE TABLE {s}.items (id int PRIMARY KEY, v text)",
                "CREATE TABLE {s}.ledger (id int PRIMARY KEY, amount int)",
                "CREATE VIEW {s}.ledger_v AS SELECT id, amount FROM {s}.ledger",
                # a protected partitioned table; a protected table inheriting from a plain one
                "CREATE TABLE {s}.events (id int, what text) PARTITION BY RANGE (id)",
                "CREATE TABLE {s}.events_p1 PARTITION OF {s}.events FOR VALUES FROM (0) TO (1000)",
                "CREATE TABLE {s}.base (id int, note text)",
                "CREATE TABLE {s}.vault () INHERITS ({s}.base)",
                # a routine that writes: the guardrails must not let a SELECT call it
                "CREATE FUNCTION {s}.bump() RETURNS int LANGUAGE sql VOLATILE AS "
                "$$ INSERT INTO {s}.items VALUES (1000, 'bumped') RETURNING id $$",
            ):
                conn.execute(ddl.format(s=schema))
        text = EXAMPLE_POLICY.read_text()
        assert AGENT_RW_PROTECTED in text and HUMAN_PROTECTED in text
        policy_file = tmp_path_factory.mktemp("guardrails") / "policy.toml"
        policy_file.write_text(text.replace(
            AGENT_RW_PROTECTED,
            f'tables = ["public.payments", "audit.*", "{schema}.ledger", "{schema}.events", '
            f'"{schema}.vault"]').replace(
            HUMAN_PROTECTED, f'tables = ["audit.*", "{schema}.ledger"]'))
        cfg = make_config(pg, guardrails={"policy_file": str(policy_file)},
                          upstream={"profile": "agent-rw"},
                          extra_databases={"ro": {"profile": "agent-readonly"},
                                           "human": {"profile": "human"}})
        proxy = ThreadedProxy(cfg, None, None).start()
        w = World(pg, proxy, schema, policy_file)
        w.reset()
        yield w
    finally:
        if proxy is not None:
            proxy.stop(0.5)
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.execute(f"DROP ROLE IF EXISTS {schema}_role")


@pytest.fixture
def w(world: World) -> World:
    world.reset()
    return world


def assert_refused(exc: BaseException, rule: str) -> None:
    assert isinstance(exc, psycopg.errors.InsufficientPrivilege), repr(exc)
    diag = exc.diag
    assert diag.sqlstate == "42501"
    assert diag.message_primary is not None
    assert diag.message_primary.startswith(f"wiregate: blocked by rule {rule}: "), \
        diag.message_primary


# -- 1. psycopg, every protocol path --------------------------------------------------------------

def test_simple_protocol_refusal_and_allow(w: World) -> None:
    with w.connect() as conn:
        cur = psycopg.ClientCursor(conn)
        with pytest.raises(psycopg.Error) as ei:
            cur.execute(f"DELETE FROM {w.items}")
        assert_refused(ei.value, "bounded-writes")
        cur.execute(f"DELETE FROM {w.items} WHERE id = %s", (5,))  # client-side binding
        assert cur.rowcount == 1
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(f"DROP TABLE {w.items}", prepare=False)
        assert_refused(ei.value, "no-ddl")
        assert conn.execute(f"SELECT count(*) FROM {w.items}", prepare=False).fetchone() == (4,)
    assert w.item_ids() == [1, 2, 3, 4]


def test_extended_unnamed_with_parameters(w: World) -> None:
    with w.connect(prepare_threshold=None) as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(f"DELETE FROM {w.items} WHERE id = id OR id = %s", (1,))
        assert_refused(ei.value, "bounded-writes")
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(f"INSERT INTO {w.ledger} VALUES (%s, %s)", (9, 9))
        assert_refused(ei.value, "protected-tables")
        assert conn.execute(f"UPDATE {w.items} SET v = %s WHERE id = %s",
                            ("changed", 2)).rowcount == 1
        assert conn.execute(f"SELECT v FROM {w.items} WHERE id = %s", (2,)).fetchone() \
            == ("changed",)
    assert w.server(f"SELECT count(*) FROM {w.ledger}") == [(3,)]


def test_extended_without_parameters_binary_cursor(w: World) -> None:
    """A binary cursor sends even a parameterless statement as Parse/Bind/Execute."""
    with w.connect() as conn:
        cur = conn.cursor(binary=True)
        with pytest.raises(psycopg.Error) as ei:
            cur.execute(f"TRUNCATE {w.items}")
        assert_refused(ei.value, "no-ddl")
        cur.execute(f"SELECT count(*)::int FROM {w.items}")
        assert cur.fetchone() == (5,)


def test_named_prepared_statements_reused(w: World) -> None:
    with w.connect(prepare_threshold=0) as conn:
        for i in (1, 2, 3):  # prepared by name on first use, then executed again
            assert conn.execute(f"DELETE FROM {w.items} WHERE id = %s", (i,),
                                prepare=True).rowcount == 1
        for _ in range(3):
            with pytest.raises(psycopg.Error) as ei:
                conn.execute(f"UPDATE {w.ledger_v} SET amount = %s WHERE id = 1", (0,),
                             prepare=True)
            assert_refused(ei.value, "protected-tables")
        assert conn.execute(f"SELECT count(*) FROM {w.items} WHERE id > %s", (0,),
                            prepare=True).fetchone() == (2,)
    assert w.item_ids() == [4, 5]
    assert w.server(f"SELECT amount FROM {w.ledger} WHERE id = 1") == [(100,)]


def test_sql_level_prepare_and_execute(w: World) -> None:
    with w.connect() as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(f"PREPARE wipe AS DELETE FROM {w.items}")
        assert_refused(ei.value, "bounded-writes")
        # nothing was prepared upstream: EXECUTE finds no such statement
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            conn.execute("EXECUTE wipe")
        conn.execute(f"PREPARE del_one(int) AS DELETE FROM {w.items} WHERE id = $1")
        assert conn.execute("EXECUTE del_one(2)").rowcount == 1
        assert conn.execute("EXECUTE del_one(3)").rowcount == 1
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(f"PREPARE pay AS INSERT INTO {w.ledger_v} VALUES (7, 7)")
        assert_refused(ei.value, "protected-tables")
        conn.execute("DEALLOCATE del_one")
    assert w.item_ids() == [1, 4, 5]
    assert w.server(f"SELECT count(*) FROM {w.ledger}") == [(3,)]


def test_declare_cursor(w: World) -> None:
    with w.connect(autocommit=False) as conn:
        conn.execute(f"DECLARE c CURSOR FOR SELECT id FROM {w.items} ORDER BY id")
        assert conn.execute("FETCH 2 FROM c").fetchall() == [(1,), (2,)]
        assert conn.execute("FETCH ALL FROM c").fetchall() == [(3,), (4,), (5,)]
        conn.execute("CLOSE c")
        # reading the protected table through a cursor is fine
        conn.execute(f"DECLARE l CURSOR FOR SELECT amount FROM {w.ledger_v} ORDER BY id")
        assert conn.execute("FETCH 1 FROM l").fetchone() == (100,)
        conn.commit()
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(f"DECLARE b CURSOR FOR SELECT {w.schema}.bump()")
        assert_refused(ei.value, "no-code")
        conn.rollback()
    assert w.item_ids() == [1, 2, 3, 4, 5]


def test_copy_from_stdin_into_protected_table_refused(w: World) -> None:
    with w.connect() as conn:
        cur = conn.cursor()
        with pytest.raises(psycopg.Error) as ei:
            with cur.copy(f"COPY {w.ledger} FROM STDIN") as copy:
                copy.write_row((50, 50))
        assert_refused(ei.value, "protected-tables")
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # into an unprotected table COPY works
        with cur.copy(f"COPY {w.items} (id, v) FROM STDIN") as copy:
            copy.write_row((60, "copied"))
    assert w.server(f"SELECT count(*) FROM {w.ledger}") == [(3,)]
    assert w.item_ids() == [1, 2, 3, 4, 5, 60]


def test_copy_query_to_stdout_allowed(w: World) -> None:
    with w.connect() as conn:
        cur = conn.cursor()
        with cur.copy(f"COPY (SELECT id, amount FROM {w.ledger} ORDER BY id) TO STDOUT") as copy:
            rows = [bytes(b) for b in copy]
        assert b"".join(rows) == b"1\t100\n2\t200\n3\t300\n"
        with pytest.raises(psycopg.Error) as ei:
            with cur.copy(f"COPY (SELECT {w.schema}.bump()) TO STDOUT") as copy:
                list(copy)
        assert_refused(ei.value, "no-code")
    assert w.item_ids() == [1, 2, 3, 4, 5]


def test_multi_statement_string_refused_whole(w: World) -> None:
    with w.connect() as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(f"INSERT INTO {w.items} VALUES (70, 'x'); DROP TABLE {w.items}")
        assert_refused(ei.value, "no-ddl")
        assert "the whole string is refused" in str(ei.value)
        assert ei.value.diag.message_detail is not None
        assert "statement 2 of 2" in ei.value.diag.message_detail
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(f"UPDATE {w.items} SET v = 'y' WHERE id = 1; DELETE FROM {w.items}")
        assert_refused(ei.value, "bounded-writes")
        # every statement allowed: the string runs
        conn.execute(f"INSERT INTO {w.items} VALUES (71, 'a'); "
                     f"UPDATE {w.items} SET v = 'b' WHERE id = 71")
    assert w.item_ids() == [1, 2, 3, 4, 5, 71]
    assert w.server(f"SELECT v FROM {w.items} WHERE id = 1") == [("item-1",)]


# -- 2. asyncpg -----------------------------------------------------------------------------------

def test_asyncpg(w: World) -> None:
    async def run() -> None:
        conn = await w.aconnect()
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as ei:
                await conn.execute(f"DROP TABLE {w.items}")          # simple query
            assert "blocked by rule no-ddl" in str(ei.value)
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as ei:
                await conn.fetch(f"DROP TABLE {w.items}")            # extended, named
            assert "blocked by rule no-ddl" in str(ei.value)
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as ei:
                await conn.execute(f"DELETE FROM {w.items} WHERE $1::int IS NOT NULL", 1)
            assert "blocked by rule bounded-writes" in str(ei.value)
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as ei:
                await conn.fetch(f"DELETE FROM {w.items} RETURNING id")
            assert "blocked by rule bounded-writes" in str(ei.value)
            for i in (1, 2):   # the same statement, cached and re-bound
                assert await conn.execute(f"DELETE FROM {w.items} WHERE id = $1", i) \
                    == "DELETE 1"
            rows = await conn.fetch(f"SELECT id, v FROM {w.items} WHERE id > $1 ORDER BY id", 0)
            assert [tuple(r) for r in rows] == [(3, "item-3"), (4, "item-4"), (5, "item-5")]
            assert await conn.fetchval(
                f"SELECT sum(l.amount) FROM {w.ledger} l JOIN {w.items} i ON i.id = l.id") == 300
            stmt = await conn.prepare(f"SELECT v FROM {w.items} WHERE id = $1")
            assert [await stmt.fetchval(i) for i in (3, 4)] == ["item-3", "item-4"]
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.prepare(f"INSERT INTO {w.ledger} VALUES ($1, $2)")
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {w.items} VALUES ($1, $2)", 80, "eighty")
                async with conn.transaction():   # a savepoint
                    await conn.execute(f"UPDATE {w.items} SET v = 'x' WHERE id = $1", 80)
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()

    asyncio.run(run())
    assert w.item_ids() == [3, 4, 5, 80]
    assert w.server(f"SELECT count(*) FROM {w.ledger}") == [(3,)]


# -- 3. psql --------------------------------------------------------------------------------------

def psql(w: World, *args: str, route: str = "test",
         check: bool = True) -> subprocess.CompletedProcess[str]:
    if PSQL is None:
        pytest.skip("psql not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=CLIENT_PASSWORD, PGCONNECT_TIMEOUT="10", LC_ALL="C")
    conninfo = (f"host=127.0.0.1 port={w.proxy.port} user={CLIENT_USER} dbname={route} "
                "sslmode=disable")
    cp = subprocess.run([PSQL, "-X", "-v", "ON_ERROR_STOP=0", "-d", conninfo, *args],
                        capture_output=True, text=True, env=env, timeout=30)
    if check:
        assert cp.returncode == 0 and "ERROR" not in cp.stderr, (args, cp.stdout, cp.stderr)
    return cp


def test_psql_shows_rule_detail_and_hint(w: World) -> None:
    cp = psql(w, "-c", f"DROP TABLE {w.items}", check=False)
    lines = cp.stderr.splitlines()
    assert lines[0].startswith("ERROR:  wiregate: blocked by rule no-ddl: "), cp.stderr
    assert any(line.startswith("DETAIL:  ") and f"{w.items}" in line for line in lines), \
        cp.stderr
    assert any(line.startswith("HINT:  ") for line in lines), cp.stderr

    cp = psql(w, "-c", f"UPDATE {w.ledger_v} SET amount = 0 WHERE id = 2", check=False)
    lines = cp.stderr.splitlines()
    assert lines[0].startswith("ERROR:  wiregate: blocked by rule protected-tables: "), \
        cp.stderr
    assert f"{w.ledger}" in lines[0]
    assert any(line.startswith("DETAIL:  protected: ") for line in lines), cp.stderr
    assert any(line.startswith("HINT:  ") for line in lines), cp.stderr

    # psql -c with two statements sends one string: refused whole
    cp = psql(w, "-c", f"INSERT INTO {w.items} VALUES (90, 'p'); DELETE FROM {w.items}",
              check=False)
    assert "ERROR:  wiregate: blocked by rule bounded-writes: " in cp.stderr
    # several -c: each its own query; psql carries on after the error
    cp = psql(w, "-c", f"DELETE FROM {w.items}", "-c", f"SELECT count(*) FROM {w.items}",
              "-At", check=False)
    assert "blocked by rule bounded-writes" in cp.stderr
    assert cp.stdout.strip() == "5"
    assert w.item_ids() == [1, 2, 3, 4, 5]
    assert w.server(f"SELECT amount FROM {w.ledger} WHERE id = 2") == [(200,)]


# -- 4. the error's shape, the session and the transaction afterwards ------------------------------

def test_error_shape_and_session_usable(w: World) -> None:
    with w.connect() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
            conn.execute(f"INSERT INTO {w.ledger} VALUES (5, 5)")
        diag = ei.value.diag
        assert diag.sqlstate == "42501"
        assert diag.severity == "ERROR"
        assert diag.message_primary is not None
        assert diag.message_primary.startswith("wiregate: blocked by rule protected-tables: ")
        assert w.ledger in diag.message_primary
        assert diag.message_detail is not None and w.ledger in diag.message_detail
        assert diag.message_hint

        with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
            conn.execute(f"DROP VIEW {w.ledger_v}")
        assert ei.value.diag.message_detail is not None
        assert w.ledger_v in ei.value.diag.message_detail
        assert ei.value.diag.message_hint

        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        assert conn.execute("SELECT 42").fetchone() == (42,)
        assert conn.execute(f"SELECT count(*) FROM {w.ledger}").fetchone() == (3,)


def test_refusal_inside_transaction_fails_it_like_a_server_error(w: World) -> None:
    with w.connect(autocommit=False) as conn:
        conn.execute(f"INSERT INTO {w.items} VALUES (40, 'in txn')")
        conn.execute(f"UPDATE {w.items} SET v = 'changed' WHERE id = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"DELETE FROM {w.items}")
        assert conn.info.transaction_status == pq.TransactionStatus.INERROR
        for _ in range(2):
            with pytest.raises(psycopg.errors.InFailedSqlTransaction) as ei:
                conn.execute("SELECT 1")
            assert ei.value.diag.sqlstate == "25P02"
        conn.rollback()
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        assert conn.execute(f"SELECT v FROM {w.items} WHERE id = 1").fetchone() == ("item-1",)
        conn.rollback()
    assert w.item_ids() == [1, 2, 3, 4, 5]


def test_refusal_inside_explicit_begin_then_commit_rolls_back(w: World) -> None:
    """COMMIT of a failed transaction reports ROLLBACK, exactly as the server does."""
    with w.connect() as conn:
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {w.items} VALUES (41, 'gone')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"TRUNCATE {w.items}", prepare=True)
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT %s::int", (1,))
        cur = conn.execute("COMMIT")
        assert cur.statusmessage == "ROLLBACK"
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert w.item_ids() == [1, 2, 3, 4, 5]


def test_refusal_after_savepoint_can_be_rolled_back_to(w: World) -> None:
    with w.connect(autocommit=False) as conn:
        conn.execute(f"INSERT INTO {w.items} VALUES (42, 'kept')")
        conn.execute("SAVEPOINT sp")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"UPDATE {w.items} SET v = 'all'")
        conn.execute("ROLLBACK TO SAVEPOINT sp")
        conn.execute(f"INSERT INTO {w.items} VALUES (43, 'kept too')")
        conn.commit()
    assert w.item_ids() == [1, 2, 3, 4, 5, 42, 43]


# -- 5. nothing reaches the database --------------------------------------------------------------

REFUSED: list[tuple[str, str]] = [
    ("DROP TABLE {items}", "no-ddl"),
    ("DROP SCHEMA {schema} CASCADE", "no-ddl"),
    ("TRUNCATE {items}, {ledger}", "no-ddl"),
    ("ALTER TABLE {items} ADD COLUMN extra int", "no-ddl"),
    ("CREATE TABLE {schema}.made (id int)", "no-ddl"),
    ("SELECT * INTO {schema}.copied FROM {items}", "no-ddl"),
    ("CREATE OR REPLACE VIEW {ledger_v} AS SELECT id, 0 AS amount FROM {ledger}", "no-ddl"),
    ("DELETE FROM {items}", "bounded-writes"),
    ("UPDATE {items} SET v = 'x'", "bounded-writes"),
    ("UPDATE {items} SET v = 'x' WHERE 1 = 1", "bounded-writes"),
    ("DELETE FROM {items} WHERE id = id", "bounded-writes"),
    ("MERGE INTO {items} t USING (SELECT 1 AS k) s ON true WHEN MATCHED THEN DELETE",
     "bounded-writes"),
    ("INSERT INTO {ledger} VALUES (10, 10)", "protected-tables"),
    ("UPDATE {ledger} SET amount = 0 WHERE id = 1", "protected-tables"),
    ("DELETE FROM {ledger} WHERE id = 1", "protected-tables"),
    ("INSERT INTO {ledger} VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET amount = 0",
     "protected-tables"),
    ("UPDATE {ledger_v} SET amount = 0 WHERE id = 1", "protected-tables"),
    ("INSERT INTO {ledger_v} VALUES (11, 11)", "protected-tables"),
    ("WITH d AS (DELETE FROM {ledger} WHERE id = 1 RETURNING *) SELECT count(*) FROM d",
     "protected-tables"),
    ("WITH d AS (DELETE FROM {items} RETURNING *) SELECT count(*) FROM d", "bounded-writes"),
    ("EXPLAIN ANALYZE DELETE FROM {items}", "bounded-writes"),
    ("EXPLAIN (ANALYZE, FORMAT JSON) UPDATE {ledger} SET amount = 0 WHERE id = 2",
     "protected-tables"),
    ("GRANT SELECT ON {items} TO PUBLIC", "no-privileges"),
    ("REVOKE ALL ON {items} FROM PUBLIC", "no-privileges"),
    ("CREATE ROLE {schema}_role", "no-privileges"),
    ("DO $$ BEGIN DELETE FROM {items} WHERE id = 1; END $$", "no-code"),
    ("CREATE FUNCTION {schema}.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "no-code"),
    ("SELECT {schema}.bump()", "no-code"),
    ("COPY {items} TO '/tmp/{schema}.out'", "no-files"),
    ("COPY {items} FROM '/etc/hostname'", "no-files"),
    ("SELECT pg_read_file('/etc/hostname')", "no-files"),
    ("SELECT pg_terminate_backend(pg_backend_pid())", "no-admin-functions"),
    ("SELECT 1; DROP TABLE {items}", "no-ddl"),
]
PROTOCOLS = ("simple", "extended", "prepared", "asyncpg")


def _sql(w: World, template: str) -> str:
    return template.format(items=w.items, ledger=w.ledger, ledger_v=w.ledger_v, schema=w.schema)


def _run_refused(w: World, sql: str, protocol: str) -> str:
    """Send ``sql`` on one protocol path; return the refusal message (fails if it ran)."""
    if protocol == "asyncpg":
        async def run() -> str:
            conn = await w.aconnect()
            try:
                with pytest.raises(asyncpg.InsufficientPrivilegeError) as ei:
                    await conn.fetch(sql)
                assert await conn.fetchval("SELECT 1") == 1
                return str(ei.value)
            finally:
                await conn.close()
        return asyncio.run(run())
    with w.connect(prepare_threshold=0) as conn:
        with pytest.raises(psycopg.Error) as ei:
            if protocol == "simple":
                conn.execute(sql, prepare=False)
            elif protocol == "extended":
                conn.cursor(binary=True).execute(sql, prepare=False)
            else:
                conn.execute(sql, prepare=True)
        assert isinstance(ei.value, psycopg.errors.InsufficientPrivilege), repr(ei.value)
        assert conn.execute("SELECT 1").fetchone() == (1,)
        return str(ei.value.diag.message_primary)


@pytest.mark.parametrize(("template", "rule", "protocol"), [
    pytest.param(template, rule, protocol, id=f"{template}-{protocol}")
    for template, rule in REFUSED for protocol in PROTOCOLS
    # the extended protocol carries one statement: strings of several go by simple Query
    if protocol == "simple" or not template.startswith("SELECT 1;")])
def test_refused_statement_changes_nothing(w: World, template: str, rule: str,
                                           protocol: str) -> None:
    sql = _sql(w, template)
    before = (w.data_checksum(), w.catalog_checksum())
    message = _run_refused(w, sql, protocol)
    assert message.startswith(f"wiregate: blocked by rule {rule}: "), message
    assert (w.data_checksum(), w.catalog_checksum()) == before
    assert not Path(f"/tmp/{w.schema}.out").exists()


# -- 6. the read-only profile ---------------------------------------------------------------------

def test_read_only_profile_settings_and_reads(w: World) -> None:
    with w.connect("ro") as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
        assert conn.execute(f"SELECT count(*) FROM {w.items}").fetchone() == (5,)
        assert conn.execute(f"SELECT sum(amount) FROM {w.ledger_v} WHERE id > %s",
                            (1,)).fetchone() == (500,)
        cur = conn.cursor()
        with cur.copy(f"COPY (SELECT id FROM {w.items} WHERE id < 3 ORDER BY id) "
                      "TO STDOUT") as copy:
            assert b"".join(bytes(b) for b in copy) == b"1\n2\n"
        with conn.transaction():
            assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)


@pytest.mark.parametrize("sql", [
    "INSERT INTO {items} VALUES (99, 'ro')",
    "UPDATE {items} SET v = 'ro' WHERE id = 1",
    "DELETE FROM {items} WHERE id = 1",
    "SET default_transaction_read_only = off",
    "SET SESSION default_transaction_read_only TO false",
    "RESET default_transaction_read_only",
    "SET transaction_read_only = off",
    "SET statement_timeout = 0",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "BEGIN READ WRITE",
    "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "CREATE TEMP TABLE ro_tmp (id int)",
])
def test_read_only_profile_refuses(w: World, sql: str) -> None:
    with w.connect("ro") as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(_sql(w, sql))
        assert_refused(ei.value, "read-only")
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert w.item_ids() == [1, 2, 3, 4, 5]


def test_read_only_profile_other_rules(w: World) -> None:
    with w.connect("ro") as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("SELECT 1; SELECT 2")
        assert_refused(ei.value, "one-statement")
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(f"SELECT {w.schema}.bump()")
        assert_refused(ei.value, "no-code")
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(f"COPY {w.items} TO '/tmp/{w.schema}.ro'")
        assert_refused(ei.value, "no-files")
    assert w.item_ids() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("options", [
    "-c default_transaction_read_only=off",
    "-c statement_timeout=0",
    "-c session_replication_role=replica",
])
def test_read_only_profile_refuses_startup_options(w: World, options: str) -> None:
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(w.dsn("ro") + f" options='{options}'")
    text = str(ei.value)
    assert "wiregate.startup" in text, text
    assert options.split()[1].split("=")[0] in text


def test_read_only_profile_select_for_update_fails(w: World) -> None:
    with w.connect("ro") as conn:
        with pytest.raises(psycopg.Error):
            conn.execute(f"SELECT id FROM {w.items} WHERE id = 1 FOR UPDATE")
        assert conn.execute("SELECT 1").fetchone() == (1,)


# -- 7. traffic that must pass through agent-rw ---------------------------------------------------

MUST_PASS = [
    "SELECT i.id, l.amount FROM {items} i JOIN {ledger} l USING (id) ORDER BY i.id",
    "SELECT i.id FROM {items} i LEFT JOIN {ledger_v} l ON l.id = i.id WHERE l.id IS NULL",
    "WITH t AS (SELECT id FROM {items} WHERE id < 3) SELECT count(*) FROM t",
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5) "
    "SELECT sum(x) FROM n",
    "EXPLAIN SELECT * FROM {items} WHERE id = 1",
    "EXPLAIN DELETE FROM {items}",
    "EXPLAIN (COSTS OFF) UPDATE {ledger} SET amount = 0",
    "SELECT id FROM {items} WHERE id = 2 FOR UPDATE",
    "SELECT id FROM {ledger} WHERE id = 2 FOR SHARE",
    "SELECT 'DROP TABLE {items}' AS s",
    "SELECT 1 /* DROP TABLE {items}; DELETE FROM {items} */",
    "SELECT $q$; TRUNCATE {items}; $q$",
    "-- DROP TABLE {items}\nSELECT 1",
    "SELECT now(), random() < 2, gen_random_uuid() IS NOT NULL, pg_backend_pid() > 0",
    "SELECT current_setting('search_path'), version()",
    "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'items'",
    "SELECT * FROM information_schema.tables WHERE table_schema = '{schema}'",
    "SELECT pg_catalog.pg_get_viewdef('{ledger_v}'::regclass)",
    "UPDATE {items} SET v = v WHERE id = 3",
    "UPDATE {items} SET v = 'DROP TABLE x' WHERE id IN (1, 2)",
    "DELETE FROM {items} WHERE id = 4 RETURNING id",
    "DELETE FROM {items} i USING {ledger} l WHERE i.id = l.id AND l.amount > 1000",
    "INSERT INTO {items} VALUES (20, 'new') ON CONFLICT (id) DO UPDATE SET v = excluded.v",
    "INSERT INTO {items} SELECT id + 100, 'from ledger' FROM {ledger}",
    "CREATE INDEX ON {items} (v)",
    "SET application_name = 'agent'",
    "SET TIME ZONE 'UTC'",
    "SET statement_timeout = '5s'",
    "SET search_path TO {schema}, public",
    "SELECT set_config('application_name', 'agent2', false)",
    "RESET ALL",
    "SHOW ALL",
    "LISTEN wg_chan",
    "NOTIFY wg_chan, 'drop table'",
    "SELECT pg_advisory_lock(42), pg_advisory_unlock(42)",
    "DISCARD ALL",
]


@pytest.mark.parametrize("protocol", ("simple", "prepared", "asyncpg"))
def test_must_pass_traffic(w: World, protocol: str) -> None:
    statements = [_sql(w, s) for s in MUST_PASS]
    failures: list[str] = []
    if protocol == "asyncpg":
        async def run() -> None:
            conn = await w.aconnect()
            try:
                for sql in statements:
                    try:
                        await conn.fetch(sql)
                    except asyncpg.PostgresError as exc:
                        failures.append(f"{sql}: {exc}")
            finally:
                await conn.close()
        asyncio.run(run())
    else:
        with w.connect(prepare_threshold=0) as conn:
            for sql in statements:
                try:
                    conn.execute(sql, prepare=protocol == "prepared")
                except psycopg.Error as exc:
                    failures.append(f"{sql}: {exc}")
    assert not failures, "\n".join(failures)


def test_transactions_and_savepoints_psycopg(w: World) -> None:
    with w.connect() as conn:
        with conn.transaction():
            conn.execute(f"INSERT INTO {w.items} VALUES (30, 'a')")
            with pytest.raises(psycopg.errors.UniqueViolation):
                with conn.transaction():   # SAVEPOINT … ROLLBACK TO SAVEPOINT
                    conn.execute(f"INSERT INTO {w.items} VALUES (30, 'dup')")
            with conn.transaction():       # SAVEPOINT … RELEASE SAVEPOINT
                conn.execute(f"UPDATE {w.items} SET v = 'b' WHERE id = %s", (30,))
            conn.execute(f"SELECT * FROM {w.items} WHERE id = 30 FOR UPDATE")
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conn.execute(f"DELETE FROM {w.items} WHERE id = 1")
        conn.execute("ROLLBACK")
        conn.execute("START TRANSACTION READ WRITE")
        conn.execute(f"DELETE FROM {w.items} WHERE id = 2")
        conn.execute("COMMIT")
    assert w.server(f"SELECT v FROM {w.items} WHERE id = 30") == [("b",)]
    assert w.item_ids() == [1, 3, 4, 5, 30]


def test_driver_startup_settings_pass(w: World) -> None:
    dsn = w.dsn(application_name="wg-agent", options="'-c search_path=public -c TimeZone=UTC'")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("wg-agent",)
        assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("1min",)

    async def run() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=w.proxy.port, user=CLIENT_USER, password=CLIENT_PASSWORD,
            database="test", ssl=False,
            server_settings={"application_name": "wg-async", "search_path": "public"})
        try:
            assert await conn.fetchval("SHOW application_name") == "wg-async"
            assert await conn.fetchval("SELECT $1::jsonb ->> 'a'", '{"a": "b"}') == "b"
        finally:
            await conn.close()
    asyncio.run(run())


@pytest.mark.parametrize("command", [r"\d", r"\dt", r"\d+ {items}", r"\d {ledger_v}",
                                     r"\dn", r"\l", r"\df", r"\df {schema}.*", r"\dv {schema}.*",
                                     r"\di {schema}.*", r"\du", r"\conninfo"])
def test_psql_meta_commands(w: World, command: str) -> None:
    cp = psql(w, "-c", _sql(w, command), check=False)
    assert cp.returncode == 0 and "ERROR" not in cp.stderr, (cp.stdout, cp.stderr)


@pytest.mark.parametrize("command", [r"\dt+ {schema}.*", r"\l+", r"\d+ {schema}.events"])
def test_psql_verbose_meta_commands(w: World, command: str) -> None:
    cp = psql(w, "-c", _sql(w, command), check=False)
    assert cp.returncode == 0 and "ERROR" not in cp.stderr, (cp.stdout, cp.stderr)


def test_psql_describe_shows_tables(w: World) -> None:
    out = psql(w, "-c", rf"\d+ {w.items}").stdout
    assert f'Table "{w.items}"' in out
    assert "items_pkey" in out
    assert w.ledger_v.split(".")[1] in psql(w, "-c", rf"\dv {w.schema}.*").stdout


# -- 8. search_path -------------------------------------------------------------------------------

@pytest.mark.parametrize("setter", [
    "SET search_path TO {schema}, public",
    "SET search_path = '{schema}'",
    "SELECT set_config('search_path', '{schema}, public', false)",
])
def test_search_path_unqualified_protected_name(w: World, setter: str) -> None:
    with w.connect() as conn:
        conn.execute(_sql(w, setter))
        for sql in ("INSERT INTO ledger VALUES (12, 12)",
                    "UPDATE ledger SET amount = 1 WHERE id = 1",
                    "DELETE FROM ledger_v WHERE id = 1",
                    f"INSERT INTO {w.ledger} VALUES (13, 13)"):
            with pytest.raises(psycopg.Error) as ei:
                conn.execute(sql)
            assert_refused(ei.value, "protected-tables")
        # the unprotected table resolves too and may be written
        assert conn.execute("UPDATE items SET v = 'sp' WHERE id = 1").rowcount == 1
    assert w.server(f"SELECT count(*), sum(amount) FROM {w.ledger}") == [(3, 600)]


def test_search_path_from_startup_options(w: World) -> None:
    with psycopg.connect(w.dsn(options=f"'-c search_path={w.schema}'"),
                         autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("INSERT INTO ledger VALUES (14, 14)")
        assert_refused(ei.value, "protected-tables")
    assert w.server(f"SELECT count(*) FROM {w.ledger}") == [(3,)]


def test_search_path_set_then_rolled_back_still_guarded(w: World) -> None:
    with w.connect() as conn:
        conn.execute("BEGIN")
        conn.execute(f"SET LOCAL search_path TO {w.schema}")
        conn.execute("ROLLBACK")
        conn.execute(f"SET search_path TO public, {w.schema}")
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("INSERT INTO ledger VALUES (15, 15)")
        assert_refused(ei.value, "protected-tables")
    assert w.server(f"SELECT count(*) FROM {w.ledger}") == [(3,)]


# -- 9. the catalog follows DDL -------------------------------------------------------------------

def test_catalog_refresh_after_ddl(w: World) -> None:
    """A table created under a DDL-allowing profile is writable by the very next statement:
    that statement waits for the catalog re-read the CREATE caused."""
    name = f"{w.schema}.newt_{uuid.uuid4().hex[:6]}"
    with w.connect("human") as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
        conn.execute(f"INSERT INTO {name} VALUES (1, 'a')")
        conn.execute(f"UPDATE {name} SET v = 'b' WHERE id = 1")
    assert w.server(f"SELECT v FROM {name}") == [("b",)]


def _wait_for_lock_wait(w: World, marker: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if w.server("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE %s", (f"%{marker}%",)):
            return
        time.sleep(0.05)
    raise TimeoutError(f"no statement waiting on a lock: {marker}")


def test_catalog_refresh_after_slow_create_table(w: World) -> None:
    """Same as a plain CREATE TABLE then INSERT, with the CREATE held up by a lock so the
    race between the refresh and the CREATE always goes the same way."""
    name = f"newt_{uuid.uuid4().hex[:6]}"
    qualified = f"{w.schema}.{name}"
    errors: list[BaseException] = []
    with psycopg.connect(w.pg.dsn()) as holder, w.connect("human") as conn:
        holder.execute(f"LOCK TABLE {w.items} IN SHARE MODE")  # the FK needs a stronger lock

        def create() -> None:
            try:
                conn.execute(f"CREATE TABLE {qualified} "
                             f"(id int PRIMARY KEY REFERENCES {w.items} (id), v text)")
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        t = threading.Thread(target=create)
        t.start()
        try:
            _wait_for_lock_wait(w, name)
        finally:
            holder.rollback()
            t.join(10)
        assert not errors, errors
        # at once, no retry: the statement waits for the catalog re-read the CREATE caused
        conn.execute(f"INSERT INTO {qualified} VALUES (1, 'a')")
    assert w.server(f"SELECT v FROM {qualified}") == [("a",)]
    w.server(f"DROP TABLE {qualified}")  # it references the shared items table


def test_catalog_refresh_after_create_table_in_transaction(w: World) -> None:
    name = f"{w.schema}.newt_{uuid.uuid4().hex[:6]}"
    with w.connect("human") as conn:
        conn.execute("BEGIN")
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
        conn.execute("COMMIT")
        conn.execute(f"INSERT INTO {name} VALUES (1, 'a')")
    assert w.server(f"SELECT v FROM {name}") == [("a",)]


def test_human_profile_still_refuses_unbounded_writes(w: World) -> None:
    with w.connect("human") as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(f"DELETE FROM {w.items}")
        assert_refused(ei.value, "bounded-writes")
        conn.execute(f"CREATE INDEX ON {w.items} (v)")
    assert w.item_ids() == [1, 2, 3, 4, 5]



def test_human_profile_protects_rows_of_protected_table(w: World) -> None:
    with w.connect("human") as conn:
        for sql in (f"INSERT INTO {w.ledger} VALUES (20, 20)",
                    f"UPDATE {w.ledger_v} SET amount = 0 WHERE id = 1",
                    f"TRUNCATE {w.ledger}"):
            with pytest.raises(psycopg.Error) as ei:
                conn.execute(sql)
            assert_refused(ei.value, "protected-tables")
    assert w.server(f"SELECT count(*), sum(amount) FROM {w.ledger}") == [(3, 600)]


@pytest.mark.parametrize("ddl", [
    "DROP TABLE {ledger} CASCADE",
    "ALTER TABLE {ledger} RENAME TO ledger_old",
    "ALTER TABLE {ledger} DROP COLUMN amount",
])
def test_human_profile_refuses_ddl_on_protected_table(w: World, ddl: str) -> None:
    with w.connect("human") as conn:
        conn.execute("BEGIN")
        try:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(_sql(w, ddl))
        finally:
            conn.execute("ROLLBACK")
    assert w.server(f"SELECT count(*) FROM {w.ledger}") == [(3,)]


# -- what the catalog has to know to protect a table -----------------------------------------------

def test_partition_of_protected_table_is_protected(w: World) -> None:
    try:
        with w.connect() as conn:
            with pytest.raises(psycopg.Error) as ei:
                conn.execute(f"INSERT INTO {w.schema}.events_p1 VALUES (2, 'sneaked in')")
            assert_refused(ei.value, "protected-tables")
    finally:
        rows = w.server(f"SELECT id FROM {w.schema}.events ORDER BY id")
        w.server(f"DELETE FROM {w.schema}.events WHERE id <> 1")
    assert rows == [(1,)]


def test_inheritance_child_of_plain_parent_is_protected(w: World) -> None:
    with w.connect() as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(f"UPDATE {w.schema}.base SET note = 'changed' WHERE id = 1")
        assert_refused(ei.value, "protected-tables")
    assert w.server(f"SELECT note FROM {w.schema}.vault") == [("kept",)]


def test_dollar_user_schema_resolves_as_upstream_role(pg: PgTarget, tmp_path: Path) -> None:
    # A role of its own with a schema of the same name: no other session resolves "$user"
    # to that schema, so nothing outside this test is affected.
    role = f"wg_gw_{uuid.uuid4().hex[:10]}"
    table = f"{role}_t"
    w_server(pg, f"CREATE ROLE {role} LOGIN")
    proxy: ThreadedProxy | None = None
    try:
        w_server(pg, f"CREATE SCHEMA {role} AUTHORIZATION {role}")
        for schema in (role, "public"):
            # protected in the role's schema; the same name unprotected in public
            w_server(pg, f"CREATE TABLE {schema}.{table} (id int)")
            w_server(pg, f"GRANT ALL ON {schema}.{table} TO {role}")
        policy = tmp_path / "policy.toml"
        policy.write_text(EXAMPLE_POLICY.read_text().replace(
            AGENT_RW_PROTECTED, f'tables = ["{role}.{table}"]'))
        proxy = ThreadedProxy(make_config(pg, guardrails={"policy_file": str(policy)},
                                          upstream={"profile": "agent-rw", "user": role}),
                              None, None).start()
        with psycopg.connect(client_dsn(proxy.port), autocommit=True) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
            # the default search_path is "$user", public: the server writes <role>.<table>
            with pytest.raises(psycopg.Error) as ei:
                conn.execute(f"INSERT INTO {table} VALUES (1)")
            assert_refused(ei.value, "protected-tables")
    finally:
        if proxy is not None:
            proxy.stop(0.5)
        w_server(pg, f"DROP SCHEMA IF EXISTS {role} CASCADE")
        w_server(pg, f"DROP TABLE IF EXISTS public.{table}")
        w_server(pg, f"DROP ROLE {role}")


def w_server(pg: PgTarget, sql: str, params: tuple[Any, ...] | None = None) -> list[Any]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []

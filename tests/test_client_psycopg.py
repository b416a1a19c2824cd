"""psycopg 3 through Wiregate: every protocol feature an application driver uses.

Results through the proxy are compared with the same statements run on a direct connection:
simple and extended queries, binary results, pipelines, COPY, LISTEN/NOTIFY, named and
scrollable cursors, prepared statements, transactions, cancel and large values.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from proxy.server import ThreadedProxy
from tests.conftest import PgTarget, client_dsn, pg_target
from tests.policies import TrackEverything

pytestmark = pytest.mark.postgres

UTC = dt.UTC


@pytest.fixture(params=["pass-through", "rewriting-relay", "wiregate-serve"])
def dsn(request: pytest.FixtureRequest,
        proxy_factory: Callable[..., ThreadedProxy]) -> str:
    """Each test runs through the plain relay, through the relay that tracks and rewrites
    results (with an identity rewrite), and through ``wiregate serve`` as a subprocess (its
    own event loop implementation, two workers)."""
    if request.param == "wiregate-serve":
        return client_dsn(request.getfixturevalue("proxy_process")(server={"workers": 2}).port)
    policy = TrackEverything() if request.param == "rewriting-relay" else None
    return client_dsn(proxy_factory(policy=policy).port)


def test_rewriting_relay_sees_every_cell(proxy_factory: Callable[..., ThreadedProxy]) -> None:
    policy = TrackEverything()
    with psycopg.connect(client_dsn(proxy_factory(policy=policy).port), autocommit=True) as c:
        assert c.execute("SELECT n, 'x' FROM generate_series(1, 10) n").fetchall()[-1] == (
            10, "x")
        assert policy.transform.cells == 20
        assert c.execute("SELECT %s::int, %s::text", [1, "y"]).fetchone() == (1, "y")
        assert policy.transform.cells == 22


def _direct() -> psycopg.Connection[Any]:
    return psycopg.connect(pg_target().dsn(), autocommit=True)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture
def direct(pg: PgTarget) -> Iterator[psycopg.Connection[Any]]:
    with _direct() as c:
        yield c


@pytest.fixture
def table(pg: PgTarget) -> Iterator[str]:
    name = f"wg_pg3_{uuid.uuid4().hex[:10]}"
    with _direct() as c:
        c.execute(f"CREATE TABLE {name} (id int primary key, label text, amount numeric, "
                  "at timestamptz, tags text[], doc jsonb, blob bytea)")
    yield name
    with _direct() as c:
        c.execute(f"DROP TABLE IF EXISTS {name}")


SIMPLE = ("SELECT n, n * 1.5 AS f, 'row ' || n AS t, n % 3 = 0 AS b, NULL::text AS z, "
          "now()::date - n AS d FROM generate_series(1, 50) n")

TYPED_PARAMS: list[tuple[Any, str]] = [
    (42, "int4"),
    (-(2 ** 62), "int8"),
    ("unicode: žluťoučký kůň 🐎 日本語 \u00a0 end", "text"),
    ("", "text"),
    (Decimal("12345678901234567890.123456789"), "numeric"),
    (Decimal("-0.000001"), "numeric"),
    (b"\x00\x01\xff binary \x00", "bytea"),
    (dt.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC), "timestamptz"),
    (dt.date(1999, 12, 31), "date"),
    (True, "bool"),
    (3.25, "float8"),
    (uuid.UUID("12345678-1234-5678-1234-567812345678"), "uuid"),
    ([1, 2, 3, None], "int8[]"),
    (["a", "b c", "", "ü", None], "text[]"),
    (None, "text"),
    (None, "int4"),
]
PARAMS = [v for v, _ in TYPED_PARAMS]


def test_simple_query_matches_direct(conn: psycopg.Connection[Any],
                                     direct: psycopg.Connection[Any]) -> None:
    # No parameters: psycopg sends a simple-protocol-equivalent query.
    got = conn.execute(SIMPLE).fetchall()
    assert got == direct.execute(SIMPLE).fetchall()
    assert len(got) == 50
    multi = conn.cursor()
    multi.execute("SELECT 1 AS a; SELECT 'two' AS b, 3 AS c")
    assert multi.fetchall() == [(1,)]
    assert multi.nextset()
    assert multi.fetchall() == [("two", 3)]


@pytest.mark.parametrize("binary", [False, True], ids=["text-params", "binary-params"])
def test_extended_query_parameters_of_many_types(conn: psycopg.Connection[Any],
                                                 direct: psycopg.Connection[Any],
                                                 binary: bool) -> None:
    placeholder = "%b" if binary else "%t"
    q = "SELECT " + ", ".join(f"{placeholder}::{t}" for _, t in TYPED_PARAMS)
    got = conn.execute(q, PARAMS).fetchone()
    assert got is not None
    assert list(got) == PARAMS
    assert got == direct.execute(q, PARAMS).fetchone()
    doc = {"k": ["v", 1, None, {"nested": "ü"}], "n": 1.5}
    row = conn.execute("SELECT %s::jsonb, %s::jsonb -> 'k' -> 3 ->> 'nested', "
                       "pg_typeof(%s)::text", [Jsonb(doc), Jsonb(doc), Jsonb(doc)]).fetchone()
    assert row == (doc, "ü", "jsonb")


def test_binary_results_equal_direct_byte_for_byte(conn: psycopg.Connection[Any],
                                                   direct: psycopg.Connection[Any]) -> None:
    q = ("SELECT n, n::numeric / 3, 'ü' || n, n::float8 / 7, now()::date, "
         "ARRAY[n, n + 1], '{\"a\": 1}'::jsonb, decode(md5(n::text), 'hex'), "
         "'2024-01-01 00:00:00+00'::timestamptz + n * interval '1 hour', "
         "md5(n::text)::uuid, NULL::int FROM generate_series(1, 200) n")
    a = conn.cursor(binary=True)
    b = direct.cursor(binary=True)
    a.execute(q)
    b.execute(q)
    assert a.pgresult is not None and b.pgresult is not None
    assert a.pgresult.fformat(0) == 1
    raw_a = [[a.pgresult.get_value(r, c) for c in range(a.pgresult.nfields)]
             for r in range(a.pgresult.ntuples)]
    raw_b = [[b.pgresult.get_value(r, c) for c in range(b.pgresult.nfields)]
             for r in range(b.pgresult.ntuples)]
    assert raw_a == raw_b
    assert len(raw_a) == 200
    assert a.fetchall() == b.fetchall()


def test_pipeline_many_statements_and_syncs(conn: psycopg.Connection[Any], table: str) -> None:
    cursors = []
    with conn.pipeline() as p:
        for i in range(1, 301):
            cursors.append(conn.execute(
                f"INSERT INTO {table} (id, label) VALUES (%s, %s) RETURNING id * 2", [i, f"p{i}"]))
            if i % 50 == 0:
                p.sync()
        q = conn.execute(f"SELECT count(*), sum(id) FROM {table}")
    assert [c.fetchone() for c in cursors] == [(i * 2,) for i in range(1, 301)]
    assert q.fetchone() == (300, sum(range(1, 301)))

    # An error inside a pipeline fails that batch only; the next one runs.
    with pytest.raises(psycopg.errors.UniqueViolation):
        with conn.pipeline() as p:
            conn.execute(f"INSERT INTO {table} (id) VALUES (1)")
            p.sync()
    with conn.pipeline() as p:
        after = conn.execute("SELECT %s::int + 1", [41])
        p.sync()
        after2 = conn.execute("SELECT 'ok'")
    assert after.fetchone() == (42,)
    assert after2.fetchone() == ("ok",)


def test_pipeline_executemany(conn: psycopg.Connection[Any], table: str,
                              direct: psycopg.Connection[Any]) -> None:
    rows = [(i, f"em{i}", Decimal(i) / 4) for i in range(1000)]
    cur = conn.cursor()
    cur.executemany(f"INSERT INTO {table} (id, label, amount) VALUES (%s, %s, %s)", rows)
    assert direct.execute(f"SELECT id, label, amount FROM {table} ORDER BY id").fetchall() == rows


def test_copy_from_stdin_write_row_and_copy_out(conn: psycopg.Connection[Any],
                                                direct: psycopg.Connection[Any],
                                                table: str) -> None:
    n = 10_000
    at = dt.datetime(2024, 5, 1, tzinfo=UTC)
    with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
        for i in range(n):
            copy.write_row((i, f"l\t{i}\nü" if i % 3 else None, Decimal(i) / 8,
                            at + dt.timedelta(minutes=i), ["x", str(i)], Jsonb({"i": i}),
                            i.to_bytes(4, "big")))
    assert direct.execute(f"SELECT count(*), sum(id), count(label) FROM {table}").fetchone() == (
        n, sum(range(n)), n - (n + 2) // 3)

    def copy_out(c: psycopg.Connection[Any], stmt: str) -> bytes:
        with c.cursor().copy(stmt) as cp:
            return b"".join(bytes(chunk) for chunk in cp)

    text_sql = f"COPY (SELECT * FROM {table} ORDER BY id) TO STDOUT"
    bin_sql = f"COPY (SELECT * FROM {table} ORDER BY id) TO STDOUT (FORMAT binary)"
    text_out = copy_out(conn, text_sql)
    assert text_out == copy_out(direct, text_sql)
    assert text_out.count(b"\n") == n
    bin_out = copy_out(conn, bin_sql)
    assert bin_out.startswith(b"PGCOPY\n\xff\r\n\x00")
    assert bin_out == copy_out(direct, bin_sql)

    with conn.cursor().copy(f"COPY (SELECT id, label, blob FROM {table} ORDER BY id LIMIT 3) "
                            "TO STDOUT (FORMAT binary)") as cp:
        cp.set_types(["int4", "text", "bytea"])
        assert list(cp.rows()) == [(0, None, b"\0\0\0\0"), (1, "l\t1\nü", b"\0\0\0\1"),
                                   (2, "l\t2\nü", b"\0\0\0\2")]


def test_copy_binary_in(conn: psycopg.Connection[Any], direct: psycopg.Connection[Any],
                        table: str) -> None:
    with conn.cursor().copy(f"COPY {table} (id, label, blob) FROM STDIN (FORMAT binary)") as cp:
        cp.set_types(["int4", "text", "bytea"])
        for i in range(2000):
            cp.write_row((i, "ü" * (i % 5), bytes(range(i % 256))))
    assert direct.execute(f"SELECT count(*), sum(length(blob)), sum(length(label)) "
                          f"FROM {table}").fetchone() == (
        2000, sum(i % 256 for i in range(2000)), sum(i % 5 for i in range(2000)))


def test_copy_error_keeps_connection_usable(conn: psycopg.Connection[Any], table: str) -> None:
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        with conn.cursor().copy(f"COPY {table} (id) FROM STDIN") as cp:
            cp.write(b"1\nnot-a-number\n")
    # psycopg answers an exception inside the block with CopyFail and re-raises it.
    with pytest.raises(RuntimeError, match="client aborts"):
        with conn.cursor().copy(f"COPY {table} (id) FROM STDIN") as cp:
            cp.write(b"7\n")
            raise RuntimeError("client aborts the copy")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_listen_notify_payload(dsn: str, conn: psycopg.Connection[Any]) -> None:
    channel = f"wg_chan_{uuid.uuid4().hex[:8]}"
    conn.execute(f"LISTEN {channel}")
    payloads = ["hello ü", "x" * 7000, ""]
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("SELECT pg_notify(%s, %s)", [channel, payloads[0]])
        other.execute(f"NOTIFY {channel}, '{payloads[1]}'")
    with _direct() as d:
        d.execute(sql.SQL("NOTIFY {}, {}").format(sql.Identifier(channel),
                                                  sql.Literal(payloads[2])))
    got = list(conn.notifies(timeout=10, stop_after=3))
    assert [n.payload for n in got] == payloads
    assert {n.channel for n in got} == {channel}
    # The sender's pid is the upstream backend's, as PostgreSQL reports it.
    assert all(isinstance(n.pid, int) and n.pid > 0 for n in got)

    # A notification arriving while idle is delivered with the next statement's results too.
    received: list[psycopg.Notify] = []
    conn.add_notify_handler(received.append)
    with _direct() as d:
        d.execute(f"NOTIFY {channel}, 'during idle'")
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        time.sleep(0.05)
        conn.execute("SELECT 1")
    assert [n.payload for n in received] == ["during idle"]


def test_server_side_cursor_itersize(dsn: str, direct: psycopg.Connection[Any]) -> None:
    q = "SELECT n, md5(n::text) FROM generate_series(1, 5000) n ORDER BY n"
    expected = direct.execute(q).fetchall()
    with psycopg.connect(dsn) as c:
        with c.cursor(name="wg_named") as cur:
            cur.itersize = 333
            cur.execute(q)
            got = list(cur)
        assert got == expected
        with c.cursor(name="wg_named_binary", binary=True) as cur:
            cur.execute("SELECT n, n::numeric / 4 FROM generate_series(1, 10) n")
            assert cur.fetchmany(4) == [(n, Decimal(n) / 4) for n in range(1, 5)]
            assert cur.fetchall() == [(n, Decimal(n) / 4) for n in range(5, 11)]
        c.commit()


def test_scrollable_cursor(dsn: str) -> None:
    with psycopg.connect(dsn) as c:
        with c.cursor(name="wg_scroll", scrollable=True) as cur:
            cur.execute("SELECT n FROM generate_series(1, 100) n ORDER BY n")
            assert cur.fetchmany(10) == [(n,) for n in range(1, 11)]
            cur.scroll(-5)
            assert cur.fetchone() == (6,)
            cur.scroll(89, mode="absolute")
            assert cur.fetchone() == (90,)
            cur.scroll(0, mode="absolute")
            assert cur.fetchone() == (1,)
        with c.cursor(name="wg_hold", withhold=True) as cur:
            cur.execute("SELECT n FROM generate_series(1, 5) n")
            c.commit()
            assert cur.fetchall() == [(n,) for n in range(1, 6)]


def test_explicit_prepared_statement_reused(conn: psycopg.Connection[Any]) -> None:
    q = "SELECT %s::int * 2, %s::text || '!' /* wg-prepared */"
    cur = conn.cursor()
    for i in range(5):
        cur.execute(q, [i, f"v{i}"], prepare=True)
        assert cur.fetchone() == (i * 2, f"v{i}!")
    rows = conn.execute(
        "SELECT name, generic_plans + custom_plans FROM pg_prepared_statements "
        "WHERE statement LIKE '%%wg-prepared%%' AND NOT from_sql").fetchall()
    assert len(rows) == 1, rows
    name, executions = rows[0]
    assert name.startswith("_pg3_")
    assert executions == 5
    conn.execute("DEALLOCATE ALL")
    cur.execute(q, [7, "after"], prepare=True)
    assert cur.fetchone() == (14, "after!")


def test_transactions_commit_rollback_savepoint(dsn: str, table: str,
                                                direct: psycopg.Connection[Any]) -> None:
    def ids() -> list[int]:
        return [r[0] for r in direct.execute(f"SELECT id FROM {table} ORDER BY id")]

    with psycopg.connect(dsn) as c:
        c.execute(f"INSERT INTO {table} (id) VALUES (1)")
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert ids() == []
        c.commit()
        assert ids() == [1]
        c.execute(f"INSERT INTO {table} (id) VALUES (2)")
        c.rollback()
        assert ids() == [1]
        with c.transaction():
            c.execute(f"INSERT INTO {table} (id) VALUES (3)")
            with pytest.raises(psycopg.errors.UniqueViolation):
                with c.transaction():  # a savepoint
                    c.execute(f"INSERT INTO {table} (id) VALUES (4)")
                    c.execute(f"INSERT INTO {table} (id) VALUES (1)")
            c.execute(f"INSERT INTO {table} (id) VALUES (5)")
        assert ids() == [1, 3, 5]
        c.execute("SAVEPOINT s1")
        c.execute(f"INSERT INTO {table} (id) VALUES (6)")
        c.execute("ROLLBACK TO SAVEPOINT s1")
        c.execute(f"INSERT INTO {table} (id) VALUES (7)")
        c.commit()
        assert ids() == [1, 3, 5, 7]
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("SELECT 1/0")
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            c.execute("SELECT 1")
        c.rollback()
        assert c.execute("SELECT 'recovered'").fetchone() == ("recovered",)


def test_cancel_from_another_thread(conn: psycopg.Connection[Any]) -> None:
    tag = f"wg_cancel_{uuid.uuid4().hex[:8]}"
    errors: list[BaseException] = []

    def canceller() -> None:
        try:
            with _direct() as d:
                deadline = time.monotonic() + 15
                while not d.execute("SELECT 1 FROM pg_stat_activity WHERE state = 'active' "
                                    "AND query LIKE %s", [f"%{tag}%"]).fetchone():
                    if time.monotonic() > deadline:
                        raise TimeoutError("pg_sleep never became active")
                    time.sleep(0.05)
            conn.cancel_safe(timeout=10)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=canceller, daemon=True)
    t.start()
    started = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled) as ei:
        conn.execute(f"SELECT pg_sleep(30) /* {tag} */")
    t.join(15)
    assert not errors, errors
    assert time.monotonic() - started < 10
    assert "canceling statement due to user request" in str(ei.value)
    assert conn.execute("SELECT 'usable after cancel'").fetchone() == ("usable after cancel",)


def test_large_bytea_round_trip(conn: psycopg.Connection[Any]) -> None:
    blob = hashlib.sha256(b"seed").digest() * (20 * 1024 * 1024 // 32)
    assert len(blob) == 20 * 1024 * 1024
    want = hashlib.md5(blob).hexdigest()
    row = conn.cursor(binary=True).execute(
        "SELECT v, md5(v), length(v) FROM (SELECT %b::bytea AS v) s", [blob]).fetchone()
    assert row is not None
    assert row[1:] == (want, len(blob))
    assert row[0] == blob
    # The same value as a text-format parameter and hex text result (about 40 MB each way).
    text_row = conn.execute("SELECT %t::bytea", [blob]).fetchone()
    assert text_row is not None and text_row[0] == blob


def test_parameter_status_and_client_encoding(conn: psycopg.Connection[Any],
                                              direct: psycopg.Connection[Any]) -> None:
    assert conn.info.parameter_status("server_version") == direct.info.parameter_status(
        "server_version")
    for c in (conn, direct):
        c.execute("SET application_name TO 'wg ü app'")
    # The server reports it, with non-ASCII replaced; the client sees the server's report.
    assert conn.info.parameter_status("application_name") == direct.info.parameter_status(
        "application_name") == "wg ?? app"
    conn.execute("SET TimeZone TO 'Asia/Kathmandu'")
    assert conn.info.parameter_status("TimeZone") == "Asia/Kathmandu"
    at = conn.execute("SELECT '2024-01-01 00:00:00+00'::timestamptz").fetchone()
    assert at is not None and at[0].utcoffset() == dt.timedelta(hours=5, minutes=45)
    conn.execute("SET client_encoding TO 'LATIN1'")
    assert conn.info.encoding == "iso8859-1"
    assert conn.execute("SELECT %s::text || 'é'", ["ñ"]).fetchone() == ("ñé",)


def test_empty_query_matches_direct(conn: psycopg.Connection[Any],
                                    direct: psycopg.Connection[Any]) -> None:
    a = conn.cursor()
    b = direct.cursor()
    for q in ("", ";", "-- only a comment"):
        a.execute(q)
        b.execute(q)
        assert a.pgresult is not None and b.pgresult is not None
        assert a.pgresult.status == b.pgresult.status == psycopg.pq.ExecStatus.EMPTY_QUERY
    assert conn.execute("SELECT 'fine'").fetchone() == ("fine",)

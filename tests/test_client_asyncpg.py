"""asyncpg through Wiregate: binary protocol only, named prepared statements, COPY, pools.

asyncpg prepares every statement by name and asks for binary results, so it checks the proxy
relays the extended protocol byte-exactly. Results are compared with a direct connection.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import pytest

from protocols.postgres import messages as m
from proxy.server import ThreadedProxy
from tests.conftest import CLIENT_PASSWORD, CLIENT_USER, PgTarget, ProxyProcess, pg_target
from tests.pgwire import RawClient
from tests.policies import TrackEverything

pytestmark = pytest.mark.postgres

Conn: TypeAlias = "asyncpg.Connection[Any]"


async def _via(port: int) -> Conn:
    return await asyncpg.connect(host="127.0.0.1", port=port, user=CLIENT_USER,
                                 password=CLIENT_PASSWORD, database="test", ssl=False)


async def _direct() -> Conn:
    t = pg_target()
    return await asyncpg.connect(host=t.host, port=t.port, user=t.user,
                                 password=t.password or None, database=t.dbname, ssl=False)


def run_both(port: int, fn: Callable[[Conn], Awaitable[Any]]) -> tuple[Any, Any]:
    """Run ``fn`` on a connection through the proxy and on a direct one."""

    async def main() -> tuple[Any, Any]:
        via, direct = await _via(port), await _direct()
        try:
            return await fn(via), await fn(direct)
        finally:
            await via.close()
            await direct.close()

    return asyncio.run(main())


def run_via(port: int, fn: Callable[[Conn], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        conn = await _via(port)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


def _server(sql: str) -> Any:
    async def main() -> Any:
        d = await _direct()
        try:
            return await d.fetch(sql)
        finally:
            await d.close()

    return asyncio.run(main())


@pytest.fixture(params=["pass-through", "rewriting-relay", "wiregate-serve"])
def port(request: pytest.FixtureRequest, proxy_factory: Callable[..., ThreadedProxy]) -> int:
    """The in-process relay, the same with an identity rewrite of every cell, and
    ``wiregate serve`` as a subprocess with two workers."""
    if request.param == "wiregate-serve":
        proc: ProxyProcess = request.getfixturevalue("proxy_process")(server={"workers": 2})
        return proc.port
    policy = TrackEverything() if request.param == "rewriting-relay" else None
    return proxy_factory(policy=policy).port


@pytest.fixture
def table(pg: PgTarget) -> Iterator[str]:
    name = f"wg_apg_{uuid.uuid4().hex[:10]}"
    _server(f"CREATE TABLE {name} (id int primary key, label text, amount numeric, "
            "at timestamptz, tags int[], doc jsonb)")
    yield name
    _server(f"DROP TABLE IF EXISTS {name}")


VALUES: list[tuple[Any, str]] = [
    (2 ** 31 - 1, "int4"),
    (-(2 ** 63), "int8"),
    (-32768, "int2"),
    (3.141592653589793, "float8"),
    (1.5, "float4"),
    (Decimal("-98765432109876543210.000000000001"), "numeric"),
    (Decimal("NaN"), "numeric"),
    ("text ü 🐎 日本 \t tab", "text"),
    (b"\x00\xffbytes\x00", "bytea"),
    (uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), "uuid"),
    (dt.date(2000, 2, 29), "date"),
    (dt.datetime(2024, 12, 31, 23, 59, 59, 999999), "timestamp"),
    (dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC), "timestamptz"),
    (dt.timedelta(days=3, seconds=7, microseconds=5), "interval"),
    ('{"a": [1, 2, {"b": null}], "ü": true}', "json"),
    ('{"k": "v"}', "jsonb"),
    ([[1, 2], [3, None]], "int4[]"),
    (["x", "", None, "ü"], "text[]"),
    (True, "bool"),
    (None, "int4"),
]


def test_prepared_statement_binary_codecs_match_direct(port: int) -> None:
    query = "SELECT " + ", ".join(f"${i}::{t}" for i, (_, t) in enumerate(VALUES, 1))
    args = [v for v, _ in VALUES]

    async def fn(c: Conn) -> tuple[list[tuple[Any, ...]], list[Any]]:
        stmt = await c.prepare(query)
        rows = [tuple(await stmt.fetchrow(*args)) for _ in range(3)]
        # The statement is a named server-side one, executed three times.
        named = await c.fetch("SELECT name, generic_plans + custom_plans AS runs "
                              "FROM pg_prepared_statements WHERE statement = $1", query)
        return rows, [(r["name"].startswith("__asyncpg_stmt_"), r["runs"]) for r in named]

    (via, via_named), (direct, direct_named) = run_both(port, fn)
    assert repr(via) == repr(direct)  # repr: Decimal('NaN') is not equal to itself
    assert repr(via[0]) == repr(via[1]) == repr(via[2])
    assert via_named == direct_named == [(True, 3)]
    got = via[0]
    for (want, typ), value in zip(VALUES, got, strict=True):
        if typ in ("json", "jsonb"):
            assert json.loads(value) == json.loads(want)
        elif typ == "numeric" and want.is_nan():
            assert value.is_nan()
        elif typ == "float4":
            assert value == pytest.approx(want)
        else:
            assert value == want, typ


def test_records_and_composite_values(port: int) -> None:
    async def fn(c: Conn) -> Any:
        row = await c.fetchrow(
            "SELECT ROW(1, 'a', NULL::int, 1.5::float8) AS r, "
            "ARRAY[ROW(1, 'x'), ROW(2, 'y')] AS rs, $1::int[] AS arr", [5, 6])
        return row["r"], row["rs"], row["arr"], list(row.keys())

    via, direct = run_both(port, fn)
    assert via == direct
    r, rs, arr, keys = via
    assert tuple(r) == (1, "a", None, 1.5)
    assert [tuple(x) for x in rs] == [(1, "x"), (2, "y")]
    assert arr == [5, 6]
    assert keys == ["r", "rs", "arr"]


def test_executemany_1000_rows(port: int, table: str) -> None:
    rows = [(i, f"label {i} ü", Decimal(i) / 3, dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
             + dt.timedelta(seconds=i), [i, -i], json.dumps({"i": i})) for i in range(1000)]

    async def fn(c: Conn) -> None:
        await c.executemany(f"INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6)", rows)

    run_via(port, fn)
    got = _server(f"SELECT id, label, amount, at, tags, doc FROM {table} ORDER BY id")
    assert [tuple(r) for r in got] == rows


def test_copy_records_to_table_and_copy_from_query(port: int, table: str,
                                                   tmp_path: Path) -> None:
    records = [(i, f"c{i}", Decimal(i), None, [i], None) for i in range(5000)]

    async def load(c: Conn) -> str:
        return await c.copy_records_to_table(table, records=records)

    assert run_via(port, load) == "COPY 5000"
    assert _server(f"SELECT count(*), sum(amount) FROM {table}")[0][:] == (
        5000, Decimal(sum(range(5000))))

    async def dump(c: Conn) -> tuple[bytes, bytes]:
        text_path = tmp_path / f"{id(c)}.txt"
        bin_path = tmp_path / f"{id(c)}.bin"
        await c.copy_from_query(f"SELECT * FROM {table} ORDER BY id", output=str(text_path))
        await c.copy_from_query(f"SELECT * FROM {table} WHERE id < $1 ORDER BY id", 100,
                                output=str(bin_path), format="binary")
        return text_path.read_bytes(), bin_path.read_bytes()

    (via_text, via_bin), (direct_text, direct_bin) = run_both(port, dump)
    assert via_text == direct_text
    assert via_text.count(b"\n") == 5000
    assert via_bin == direct_bin
    assert via_bin.startswith(b"PGCOPY\n\xff\r\n\x00")


def test_transaction_commit_and_rollback(port: int, table: str) -> None:
    async def fn(c: Conn) -> list[int]:
        async with c.transaction():
            await c.execute(f"INSERT INTO {table} (id) VALUES (1)")
        with pytest.raises(asyncpg.UniqueViolationError):
            async with c.transaction():
                await c.execute(f"INSERT INTO {table} (id) VALUES (2)")
                await c.execute(f"INSERT INTO {table} (id) VALUES (1)")
        async with c.transaction():
            await c.execute(f"INSERT INTO {table} (id) VALUES (3)")
            with pytest.raises(asyncpg.DivisionByZeroError):
                async with c.transaction():  # savepoint
                    await c.execute(f"INSERT INTO {table} (id) VALUES (4)")
                    await c.fetchval("SELECT 1/0")
            await c.execute(f"INSERT INTO {table} (id) VALUES (5)")
        tr = c.transaction(isolation="serializable", readonly=True)
        await tr.start()
        assert await c.fetchval("SHOW transaction_isolation") == "serializable"
        await tr.rollback()
        return [r[0] for r in await c.fetch(f"SELECT id FROM {table} ORDER BY id")]

    assert run_via(port, fn) == [1, 3, 5]
    assert [r[0] for r in _server(f"SELECT id FROM {table} ORDER BY id")] == [1, 3, 5]


def test_cursor_iteration(port: int) -> None:
    q = "SELECT n, md5(n::text) AS h FROM generate_series(1, 3000) n ORDER BY n"

    async def fn(c: Conn) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        async with c.transaction():
            it = [tuple(r) async for r in c.cursor(q, prefetch=250)]
            cur = await c.cursor(q)
            await cur.forward(10)
            chunk = [tuple(r) for r in await cur.fetch(5)]
        return it, chunk

    (it, chunk), (d_it, d_chunk) = run_both(port, fn)
    assert it == d_it
    assert len(it) == 3000
    assert chunk == d_chunk == it[10:15]


def test_pool_of_five_concurrent_queries(port: int) -> None:
    async def main() -> tuple[list[Any], set[int]]:
        async with asyncpg.create_pool(host="127.0.0.1", port=port, user=CLIENT_USER,
                                       password=CLIENT_PASSWORD, database="test", ssl=False,
                                       min_size=5, max_size=5) as pool:
            async def work(i: int) -> tuple[int, int]:
                async with pool.acquire() as c:
                    pid = await c.fetchval("SELECT pg_backend_pid()")
                    await c.execute("SELECT pg_sleep(0.05)")
                    v = await c.fetchval("SELECT sum(n) FROM generate_series(1, $1::int) n", i)
                    return v, pid

            results = await asyncio.gather(*(work(i) for i in range(1, 51)))
            return [r[0] for r in results], {r[1] for r in results}

    values, pids = asyncio.run(main())
    assert values == [i * (i + 1) // 2 for i in range(1, 51)]
    assert len(pids) == 5  # five distinct upstream backends served the pool


# -- Terminate: asyncpg's close() sends Terminate and waits for the server to close ----------


def _bytes_after_terminate(c: RawClient) -> bytes:
    """Log in, send Terminate, keep our side open, and collect everything until the peer
    closes."""
    try:
        c.login()
        c.send(m.Terminate().encode())
        return c.read_to_close()
    finally:
        c.close()


def test_terminate_then_wait_gets_clean_close(port: int, pg: PgTarget) -> None:
    direct = RawClient(pg.port, user=pg.user, password=pg.password, database=pg.dbname,
                       timeout=5)
    assert _bytes_after_terminate(direct) == b""
    assert _bytes_after_terminate(RawClient(port, timeout=5)) == b""


def test_asyncpg_close_logs_no_lost_upstream(proxy: ThreadedProxy,
                                             caplog: pytest.LogCaptureFixture) -> None:
    async def fn(c: Conn) -> int:
        return int(await c.fetchval("SELECT 1"))

    with caplog.at_level(logging.WARNING, logger="wiregate"):
        assert run_via(proxy.port, fn) == 1
        asyncio.run(asyncio.sleep(0.3))
    lost = [r.getMessage() for r in caplog.records if "upstream connection lost" in r.getMessage()]
    assert lost == []

"""Bad input and broken peers: clear errors, and the proxy keeps serving everyone else."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from protocols.postgres import messages as m
from proxy.server import ThreadedProxy
from tests.conftest import ProxyProcess, client_dsn
from tests.pgcluster import PgCluster, start_cluster
from tests.pgwire import RawClient

pytestmark = pytest.mark.postgres


def _still_serving(port: int) -> None:
    with psycopg.connect(client_dsn(port), autocommit=True) as conn:
        assert conn.execute("SELECT 40 + 2").fetchone() == (42,)


def test_garbage_startup_packet(proxy: ThreadedProxy) -> None:
    for garbage in (b"\x00\x00\x00\x03", b"\xff\xff\xff\xff" + b"x" * 100,
                    struct.pack("!ii", 8, 1234), b"GET / HTTP/1.1\r\n\r\n"):
        c = RawClient(proxy.port)
        c.send(garbage)
        err = c.error()
        assert err is not None and err.sqlstate == "08P01", garbage
        c.close()
    _still_serving(proxy.port)


def test_old_protocol_version_refused(proxy: ThreadedProxy) -> None:
    c = RawClient(proxy.port)
    c.send(struct.pack("!ii", 9, 2 << 16) + b"\0")
    err = c.error()
    assert err is not None and err.sqlstate == "08P01"
    assert "unsupported frontend protocol 2.0" in err.message
    c.close()


def test_malformed_message_after_login(proxy: ThreadedProxy) -> None:
    c = RawClient(proxy.port)
    c.login()
    c.send(b"\x01\x00\x00\x00\x04")  # no such frontend message type
    err = c.error()
    assert err is not None and err.sqlstate == "08P01"
    assert "invalid frontend message type" in err.message
    c.close()
    c = RawClient(proxy.port)
    c.login()
    c.send(b"Q\x00\x00\x00\x02")  # length below 4
    err = c.error()
    assert err is not None and err.sqlstate == "08P01"
    c.close()
    _still_serving(proxy.port)


def test_oversized_message_refused(proxy_factory: Callable[..., ThreadedProxy]) -> None:
    p = proxy_factory(max_message_size=64 * 1024)
    c = RawClient(p.port)
    c.login()
    c.send(b"Q" + struct.pack("!i", 1024 * 1024) + b"SELECT ")
    err = c.error()
    assert err is not None and err.sqlstate == "08P01"
    assert "exceeds the limit of 65536 bytes" in err.message
    c.close()
    _still_serving(p.port)


def test_query_with_embedded_nul_refused(proxy: ThreadedProxy) -> None:
    c = RawClient(proxy.port)
    c.login()
    body = b"SELECT 1\x00; DROP TABLE x\x00"
    c.send(b"Q" + struct.pack("!i", len(body) + 4) + body)
    err = c.error()
    assert err is not None and err.sqlstate == "08P01"
    c.close()
    _still_serving(proxy.port)


def test_startup_timeout(proxy_factory: Callable[..., ThreadedProxy]) -> None:
    p = proxy_factory(startup_timeout=0.5)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    t0 = time.monotonic()
    data = s.recv(1024)  # the proxy gives up on a silent client
    assert time.monotonic() - t0 < 3
    assert b"timeout during connection startup" in data
    s.close()
    _still_serving(p.port)


def test_upstream_connect_timeout(proxy_factory: Callable[..., ThreadedProxy]) -> None:
    """An upstream that accepts but never answers: the login fails within connect_timeout."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        p = proxy_factory(connect_timeout=0.5,
                          upstream={"host": "127.0.0.1", "port": silent.getsockname()[1]})
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as ei:
            psycopg.connect(client_dsn(p.port), connect_timeout=10)
        assert time.monotonic() - t0 < 5
        assert "timeout connecting to upstream" in str(ei.value)
    finally:
        silent.close()


def test_upstream_refused_is_reported(proxy_factory: Callable[..., ThreadedProxy]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    p = proxy_factory(upstream={"host": "127.0.0.1", "port": dead_port})
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(client_dsn(p.port))
    assert "could not connect to upstream server" in str(ei.value)


def test_idle_timeout_closes_idle_session(proxy_factory: Callable[..., ThreadedProxy]) -> None:
    p = proxy_factory(idle_timeout=1.0)
    c = RawClient(p.port)
    c.login()
    t0 = time.monotonic()
    err = c.error()
    assert err is not None and err.sqlstate == "57P05"
    assert 0.9 < time.monotonic() - t0 < 4
    c.close()


@pytest.fixture(scope="module")
def crash_cluster() -> Iterator[PgCluster]:
    cluster = start_cluster(auth="trust")
    yield cluster
    cluster.stop()


def _backend_pid(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def _wait_cluster(cluster: PgCluster) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(cluster.dsn(), connect_timeout=2) as c:
                c.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            time.sleep(0.2)
    raise TimeoutError("cluster did not recover")


def test_upstream_dies_while_idle_in_query(crash_cluster: PgCluster,
                                          proxy_factory: Callable[..., ThreadedProxy]) -> None:
    p = proxy_factory(upstream={"host": "127.0.0.1", "port": crash_cluster.port,
                                "dbname": "postgres", "user": "postgres"})
    other = psycopg.connect(client_dsn(p.port), autocommit=True)
    conn = psycopg.connect(client_dsn(p.port), autocommit=True)
    pid = _backend_pid(conn)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            conn.execute("SELECT pg_sleep(30)")
        except BaseException as exc:  # noqa: BLE001 - inspected below
            failure.append(exc)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    t.join(20)
    assert failure, "the client was not told"
    assert isinstance(failure[0], psycopg.OperationalError)
    text = str(failure[0])
    assert "connection to the upstream server was lost" in text or "terminat" in text
    other.close()
    conn.close()
    _wait_cluster(crash_cluster)
    with psycopg.connect(client_dsn(p.port), autocommit=True) as fresh:
        assert fresh.execute("SELECT 1").fetchone() == (1,)


def test_upstream_dies_mid_result(crash_cluster: PgCluster,
                                  proxy_factory: Callable[..., ThreadedProxy]) -> None:
    p = proxy_factory(upstream={"host": "127.0.0.1", "port": crash_cluster.port,
                                "dbname": "postgres", "user": "postgres"})
    c = RawClient(p.port, database="test")
    c.login()

    c.send(m.Query("SELECT pg_backend_pid(), repeat('x', 500) FROM "
                   "generate_series(1, 10000000)").encode())
    code, body = c.recv_message()
    assert code == b"T"
    code, body = c.recv_message()
    assert code == b"D"
    backend = int(m.decode_data_row(body)[0] or b"0")
    assert backend
    os.kill(backend, signal.SIGKILL)
    # the stream ends: either a clean FATAL from Wiregate or the connection closes;
    # it never hangs and never delivers a malformed message
    deadline = time.monotonic() + 20
    outcome = None
    try:
        while time.monotonic() < deadline:
            code, body = c.recv_message()
            if code == b"E":
                outcome = m.decode_backend(code, body)
                break
            assert code == b"D"
    except (ConnectionError, OSError):
        outcome = "closed"
    assert outcome is not None
    if isinstance(outcome, m.ErrorResponse):
        assert outcome.sqlstate in ("08006", "57P01", "57P02", "57P03")
    c.close()
    _wait_cluster(crash_cluster)
    with psycopg.connect(client_dsn(p.port), autocommit=True) as fresh:
        assert fresh.execute("SELECT 1").fetchone() == (1,)


def test_json_logs_carry_no_secrets_or_rows(proxy_process: Callable[..., ProxyProcess]) -> None:
    p = proxy_process(server={"log_format": "json", "log_level": "debug"})
    secret_value = "4111-1111-very-private-row-value"
    with psycopg.connect(client_dsn(p.port), autocommit=True) as conn:
        assert conn.execute("SELECT %s::text", (secret_value,)).fetchone() == (secret_value,)
        conn.execute(f"SELECT '{secret_value}'")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(client_dsn(p.port).replace("password=demo", "password=wrong-pass-x"))
    p.stop()
    lines = [ln for ln in Path(p.log).read_text().splitlines() if ln.strip()]
    docs = [json.loads(ln) for ln in lines]
    assert any(d.get("msg") == "session started" and d.get("user") == "demo" for d in docs)
    assert any(d.get("msg") == "login refused" and d.get("sqlstate") == "28P01" for d in docs)
    text = "\n".join(lines)
    assert secret_value not in text
    assert "wrong-pass-x" not in text
    assert "password=demo" not in text

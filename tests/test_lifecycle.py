"""Backpressure and graceful shutdown of a real ``wiregate serve`` process."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from protocols.postgres import messages as m
from tests.conftest import ProxyProcess, client_dsn
from tests.pgwire import RawClient

pytestmark = pytest.mark.postgres


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_slow_reader_of_1gb_result_keeps_rss_bounded(
        proxy_process: Callable[..., ProxyProcess]) -> None:
    """The server can produce 1 GB far faster than this client reads it; Wiregate must stop
    reading upstream instead of buffering, so its memory stays flat."""
    p = proxy_process()
    c = RawClient(p.port, timeout=60)
    c.login()
    rss_start = _rss_mb(p.pid)
    # 1,000,000 rows of 1,000 bytes: about 1 GB on the wire
    c.send(m.Query("SELECT repeat('x', 1000) FROM generate_series(1, 1000000)").encode())
    received = 0
    peak = rss_start
    t0 = time.monotonic()
    last_sample = 0.0
    done = False
    while not done:
        chunk = c.sock.recv(256 * 1024)
        if not chunk:
            raise AssertionError("connection closed mid-result")
        received += len(chunk)
        # ReadyForQuery 'I' closes the result; it is the last 6 bytes the server sends
        done = chunk.endswith(b"Z\x00\x00\x00\x05I")
        now = time.monotonic()
        if now - last_sample > 0.05:
            peak = max(peak, _rss_mb(p.pid))
            last_sample = now
        time.sleep(0.002)  # a slow consumer: ~100 MB/s at most
    elapsed = time.monotonic() - t0
    c.close()
    assert received > 1_000_000_000
    print(f"read {received / 1e6:.0f} MB in {elapsed:.1f} s; proxy RSS start "
          f"{rss_start:.0f} MB, peak {peak:.0f} MB")
    assert peak < 150, f"proxy RSS peaked at {peak:.0f} MB"


def test_sigterm_lets_open_transaction_finish(
        proxy_process: Callable[..., ProxyProcess]) -> None:
    p = proxy_process(server={"shutdown_grace": 10.0})
    idle = psycopg.connect(client_dsn(p.port), autocommit=True)
    busy = psycopg.connect(client_dsn(p.port))
    busy.execute("CREATE TEMP TABLE wg_shutdown (v int)")
    busy.execute("INSERT INTO wg_shutdown VALUES (1)")  # transaction open
    p.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    # the idle session is told and closed right away
    with pytest.raises(psycopg.OperationalError) as ei:
        idle.execute("SELECT 1")
    assert "administrator command" in str(ei.value) or "closed" in str(ei.value)
    # new connections are no longer accepted
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(client_dsn(p.port), connect_timeout=2)
    # the open transaction can still work and commit, then its session ends
    busy.execute("INSERT INTO wg_shutdown VALUES (2)")
    row = busy.execute("SELECT count(*) FROM wg_shutdown").fetchone()
    assert row == (2,)
    busy.commit()
    assert p.proc.wait(10) == 0
    assert busy.closed or busy.broken or _is_closed(busy)
    idle.close()
    busy.close()


def _is_closed(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_sigterm_grace_expires(proxy_process: Callable[..., ProxyProcess]) -> None:
    p = proxy_process(server={"shutdown_grace": 1.0})
    busy = psycopg.connect(client_dsn(p.port))
    busy.execute("SELECT 1")  # transaction open and left open
    errors: list[BaseException] = []

    def sleeper() -> None:
        try:
            with psycopg.connect(client_dsn(p.port), autocommit=True) as c:
                c.execute("SELECT pg_sleep(20)")
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    t = threading.Thread(target=sleeper)
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(10) == 0
    assert time.monotonic() - t0 < 5
    t.join(10)
    assert errors and isinstance(errors[0], psycopg.OperationalError)
    assert _is_closed(busy)
    busy.close()


def test_workers_share_the_port(proxy_process: Callable[..., ProxyProcess]) -> None:
    p = proxy_process(server={"workers": 2})
    conns = [psycopg.connect(client_dsn(p.port), autocommit=True) for _ in range(8)]
    try:
        for c in conns:
            assert c.execute("SELECT 1").fetchone() == (1,)
        keys = {c.pgconn.backend_pid >> 24 for c in conns}
        assert keys <= {0, 1}
    finally:
        for c in conns:
            c.close()
    assert p.stop() == 0

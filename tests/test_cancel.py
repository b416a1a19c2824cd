"""Query cancellation through Wiregate.

Clients get Wiregate's own BackendKeyData; a CancelRequest carrying it is checked and forwarded
to the upstream backend with the upstream's key. With several workers a cancel may be accepted
by a worker that does not own the session and must be handed to the owner.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from protocols.postgres import messages as m
from proxy.server import ThreadedProxy
from tests.conftest import ProxyProcess, client_dsn
from tests.pgwire import RawClient

pytestmark = pytest.mark.postgres

CANCEL_REQUEST_CODE = 80877102
SLEEP = "SELECT pg_sleep(30)"


def _connect(port: int) -> psycopg.Connection[Any]:
    return psycopg.connect(client_dsn(port), autocommit=True, connect_timeout=10)


def _cancel_packet(pid: int, secret: int) -> bytes:
    return struct.pack("!iiII", 16, CANCEL_REQUEST_CODE, pid, secret)


def _sleep_then_cancel(conn: psycopg.Connection[Any], cancel: Callable[[], None],
                       delay: float = 0.3) -> float:
    """Run pg_sleep(30), cancel it from another thread; return seconds until it was cancelled."""
    timer = threading.Timer(delay, cancel)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(SLEEP)
    finally:
        timer.cancel()
        timer.join()
    return time.monotonic() - started


# -- a raw frontend: psycopg does not expose the cancel secret --------------------------------


@contextmanager
def raw_session(port: int) -> Iterator[RawClient]:
    w = RawClient(port)
    try:
        w.login()
        assert w.key is not None, "no BackendKeyData before ReadyForQuery"
        yield w
    finally:
        w.close()


def _send_cancel(port: int, pid: int, secret: int) -> bytes:
    """Send a CancelRequest; return whatever comes back before Wiregate closes (nothing)."""
    c = RawClient(port)
    try:
        c.send(_cancel_packet(pid, secret))
        return c.read_to_close()
    finally:
        c.close()


def _expect_cancelled(w: RawClient, within: float) -> None:
    w.sock.settimeout(within)
    try:
        msgs = w.results()
    finally:
        w.sock.settimeout(w.timeout)
    errors = [msg for code, msg in msgs if code == b"E"]
    assert len(errors) == 1 and isinstance(errors[0], m.ErrorResponse), msgs
    assert errors[0].fields["C"] == "57014", errors[0].fields


# -- single worker --------------------------------------------------------------------------


def test_cancel_in_process(proxy: ThreadedProxy) -> None:
    # cancel_safe(): the blocking PQcancel behind cancel() would hold the GIL that the
    # in-process proxy thread needs; the subprocess tests below use cancel() itself.
    with _connect(proxy.port) as conn:
        assert _sleep_then_cancel(conn, conn.cancel_safe) < 3
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session survives


def test_cancel_subprocess(proxy_process: Callable[..., ProxyProcess]) -> None:
    p = proxy_process()
    with _connect(p.port) as conn:
        assert _sleep_then_cancel(conn, conn.cancel) < 3
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_backend_key_is_wiregates_own(proxy: ThreadedProxy) -> None:
    with raw_session(proxy.port) as w:
        assert w.key is not None
        upstream_pid = int(w.scalar("SELECT pg_backend_pid()"))
        assert w.key[0] != upstream_pid
    with _connect(proxy.port) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None and conn.info.backend_pid != row[0]


def test_wrong_secret_does_nothing(proxy: ThreadedProxy) -> None:
    with raw_session(proxy.port) as w, raw_session(proxy.port) as other:
        assert w.key is not None and other.key is not None
        pid, secret = w.key
        w.send_query(SLEEP)
        time.sleep(0.3)  # let the query reach the upstream server
        assert _send_cancel(proxy.port, pid, secret ^ 0x5A5A5A5A) == b""
        assert _send_cancel(proxy.port, pid, (secret + 1) & 0xFFFFFFFF) == b""
        assert _send_cancel(proxy.port, pid, other.key[1]) == b""  # another session's secret
        assert _send_cancel(proxy.port, other.key[0], secret) == b""  # right secret, wrong pid
        assert w.nothing_arrives_for(1.5), "a wrong cancel key interrupted the query"
        assert other.scalar("SELECT 1") == "1"  # the other session was not cancelled either
        started = time.monotonic()
        assert _send_cancel(proxy.port, pid, secret) == b""
        _expect_cancelled(w, within=3)
        assert time.monotonic() - started < 3
        assert w.scalar("SELECT 2") == "2"


def test_cancel_for_an_idle_or_ended_session_is_harmless(proxy: ThreadedProxy) -> None:
    with raw_session(proxy.port) as w:
        assert w.key is not None
        _send_cancel(proxy.port, *w.key)
        time.sleep(0.3)
        assert w.scalar("SELECT 3") == "3"
        ended = w.key
    _send_cancel(proxy.port, *ended)
    with _connect(proxy.port) as conn:
        assert conn.execute("SELECT 4").fetchone() == (4,)


# -- two workers ----------------------------------------------------------------------------


def test_cancel_with_two_workers(proxy_process: Callable[..., ProxyProcess]) -> None:
    """Fresh connections land on either worker, and so do their cancel connections."""
    p = proxy_process(server={"workers": 2})
    owners: list[int] = []
    while len(owners) < 10 or len(set(owners)) < 2:
        assert len(owners) < 30, f"connections never reached both workers: {owners}"
        with _connect(p.port) as conn:
            owners.append(conn.info.backend_pid >> 24)  # the owning worker's index
            assert _sleep_then_cancel(conn, conn.cancel) < 3
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert set(owners) == {0, 1}, owners


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _tcp_inode(server_port: int, client_port: int) -> int:
    """Inode of the server side of 127.0.0.1:client_port -> 127.0.0.1:server_port (0 until
    accepted)."""
    local = f"0100007F:{server_port:04X}"
    remote = f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == local and f[2] == remote:
            return int(f[9])
    return 0


def _accepting_process(sock: socket.socket, server_port: int, workers: list[int]) -> int:
    """The worker process that accepted the server side of ``sock``."""
    client_port = sock.getsockname()[1]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        inode = _tcp_inode(server_port, client_port)
        if inode:
            target = f"socket:[{inode}]"
            for pid in workers:
                try:
                    fds = os.listdir(f"/proc/{pid}/fd")
                except OSError:
                    continue
                for fd in fds:
                    try:
                        if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                            return pid
                    except OSError:
                        continue
        time.sleep(0.02)
    raise AssertionError(f"no worker accepted the connection from port {client_port}")


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_cancel_accepted_by_either_worker(proxy_process: Callable[..., ProxyProcess]) -> None:
    """Deterministically cover both routes: the cancel accepted by the owning worker, and by
    the other worker (which must hand it to the owner)."""
    p = proxy_process(server={"workers": 2})
    deadline = time.monotonic() + 10
    while len(workers := _children(p.pid)) < 2:
        assert time.monotonic() < deadline, f"workers did not start: {workers}"
        time.sleep(0.05)
    for route in ("same worker", "other worker"):
        with raw_session(p.port) as w:
            assert w.key is not None
            owner = _accepting_process(w.sock, p.port, workers)
            w.send_query(SLEEP)
            time.sleep(0.3)
            for _ in range(200):
                sock = socket.create_connection(("127.0.0.1", p.port), timeout=10)
                with sock:
                    acceptor = _accepting_process(sock, p.port, workers)
                    if (acceptor == owner) == (route == "same worker"):
                        started = time.monotonic()
                        sock.sendall(_cancel_packet(*w.key))
                        assert sock.recv(4096) == b""
                        break
            else:
                raise AssertionError(f"no cancel connection reached the {route}")
            _expect_cancelled(w, within=3)
            assert time.monotonic() - started < 3, route
            assert w.scalar("SELECT 1") == "1"

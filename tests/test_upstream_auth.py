"""Wiregate logging in to real upstream servers with the credentials it holds.

Throwaway PostgreSQL servers (``tests.pgcluster``) provide each upstream authentication method
(SCRAM-SHA-256, MD5, cleartext password, trust) and TLS. Clients always log in to Wiregate as
demo/demo; the upstream password lives only in Wiregate's configuration.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from protocols.postgres import messages as m
from proxy.certs import generate_ca, write_pair
from proxy.config import parse_config
from proxy.server import ThreadedProxy
from tests.conftest import (
    CLIENT_PASSWORD,
    PgTarget,
    client_dsn,
    config_dict,
    free_port,
)
from tests.pgcluster import PgCluster, pg_bindir, start_cluster
from tests.pgwire import RawClient

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not (pg_bindir() / "initdb").is_file(), reason=f"no PostgreSQL binaries in {pg_bindir()}"
    ),
]

# Passwords with a space and a quote exercise every place a credential is passed along.
SCRAM_USER, SCRAM_PW = "alice", "al1ce pa'ss"
MD5_USER, MD5_PW = "bob", "b0b-secret"
PLAIN_USER, PLAIN_PW = "carol", "c4rol secret"
TRUST_USER = "dave"
WRONG_PW = "Wr0ng-upstream-Secret-7731"
_LOG_AUTH = {"log_connections": "on"}


# -- throwaway upstream servers: one per authentication method --------------------------------


@pytest.fixture(scope="module")
def scram_tls() -> Iterator[PgCluster]:
    """SCRAM over TCP, with TLS available (hostssl and host lines both require SCRAM)."""
    cluster = start_cluster(auth="scram-sha-256", tls=True, users={SCRAM_USER: SCRAM_PW},
                            extra_conf=_LOG_AUTH)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def md5() -> Iterator[PgCluster]:
    """MD5, and no TLS at all (ssl = off): the fallback and refusal cases use it too."""
    cluster = start_cluster(auth="md5", users={MD5_USER: MD5_PW}, extra_conf=_LOG_AUTH)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def cleartext() -> Iterator[PgCluster]:
    cluster = start_cluster(auth="password", users={PLAIN_USER: PLAIN_PW}, extra_conf=_LOG_AUTH)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def trust() -> Iterator[PgCluster]:
    cluster = start_cluster(auth="trust", users={TRUST_USER: "never-asked"})
    yield cluster
    cluster.stop()


@pytest.fixture
def wiregate() -> Iterator[Callable[..., ThreadedProxy]]:
    """Start an in-process Wiregate whose route ``test`` leads to ``cluster`` as ``user``.

    ``upstream`` keys (password, password_env, password_file, tls, tls_ca_file, ...) go into the
    route's table as written; nothing else sets a password.
    """
    started: list[ThreadedProxy] = []

    def start(cluster: PgCluster, user: str, **upstream: Any) -> ThreadedProxy:
        target = PgTarget(cluster.host, cluster.port, user, "", "postgres")
        cfg = parse_config(config_dict(target, free_port(), upstream=upstream))
        proxy = ThreadedProxy(cfg).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop(0.5)


def _connect(port: int, **extra: str) -> psycopg.Connection[Any]:
    return psycopg.connect(client_dsn(port, **extra), autocommit=True, connect_timeout=10)


def _one(conn: psycopg.Connection[Any], sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def _auth_lines(cluster: PgCluster, user: str) -> list[str]:
    """Methods the server logged for ``user`` ("connection authenticated ... method=...")."""
    assert cluster.log_file is not None
    pattern = re.compile(rf'connection authenticated: identity="{re.escape(user)}" method=(\S+)')
    return pattern.findall(cluster.log_file.read_text(errors="replace"))


def _wait_auth_lines(cluster: PgCluster, user: str, at_least: int) -> list[str]:
    deadline = time.monotonic() + 5
    while True:
        found = _auth_lines(cluster, user)
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


# -- a raw frontend, for what psycopg does not expose (SQLSTATE of a failed login) -------------


def login_error(port: int) -> dict[str, str]:
    """Log in as demo/demo over a raw socket; return the fields of the FATAL error that ends it."""
    c = RawClient(port, timeout=15)
    try:
        code, msg = c.startup()[-1]
    finally:
        c.close()
    if code == b"Z":
        raise AssertionError("the login unexpectedly succeeded")
    assert code == b"E" and isinstance(msg, m.ErrorResponse), msg
    return msg.fields


def _methods_logged(cluster: PgCluster, wiregate: Callable[..., ThreadedProxy], user: str,
                    password: str, *queries: str) -> list[str]:
    """Log in through Wiregate as ``user``, where each of ``queries`` must answer ``user``;
    return the authentication methods the server logged for ``user`` meanwhile."""
    before = len(_auth_lines(cluster, user))
    proxy = wiregate(cluster, user, password=password)
    with _connect(proxy.port) as conn:
        for sql in queries:
            assert _one(conn, sql) == user
    return _wait_auth_lines(cluster, user, before + 1)[before:]


# -- every authentication method ----------------------------------------------------------


def test_scram_upstream(scram_tls: PgCluster,
                        wiregate: Callable[..., ThreadedProxy]) -> None:
    found = _methods_logged(scram_tls, wiregate, SCRAM_USER, SCRAM_PW,
                            "SELECT current_user", "SELECT session_user")
    assert found == ["scram-sha-256"]


def test_md5_upstream(md5: PgCluster, wiregate: Callable[..., ThreadedProxy]) -> None:
    found = _methods_logged(md5, wiregate, MD5_USER, MD5_PW, "SELECT current_user")
    assert found == ["md5"]


def test_cleartext_password_upstream(cleartext: PgCluster,
                                     wiregate: Callable[..., ThreadedProxy]) -> None:
    found = _methods_logged(cleartext, wiregate, PLAIN_USER, PLAIN_PW, "SELECT current_user")
    assert found == ["password"]


def test_trust_upstream_without_any_password(trust: PgCluster,
                                             wiregate: Callable[..., ThreadedProxy]) -> None:
    proxy = wiregate(trust, TRUST_USER)
    with _connect(proxy.port) as conn:
        assert _one(conn, "SELECT current_user") == TRUST_USER
        assert _one(conn, "SELECT current_database()") == "postgres"


def test_password_from_environment(scram_tls: PgCluster, wiregate: Callable[..., ThreadedProxy],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WG_TEST_UPSTREAM_PASSWORD", SCRAM_PW)
    proxy = wiregate(scram_tls, SCRAM_USER, password_env="WG_TEST_UPSTREAM_PASSWORD")
    with _connect(proxy.port) as conn:
        assert _one(conn, "SELECT current_user") == SCRAM_USER
    # Resolved per connection: a rotated value is used by the next login without a restart.
    monkeypatch.setenv("WG_TEST_UPSTREAM_PASSWORD", WRONG_PW)
    assert login_error(proxy.port)["C"] == "28P01"


def test_password_from_file(md5: PgCluster, wiregate: Callable[..., ThreadedProxy],
                            tmp_path: Path) -> None:
    secret = tmp_path / "upstream.pw"
    secret.write_text(MD5_PW + "\n")  # the trailing newline editors add is not part of it
    proxy = wiregate(md5, MD5_USER, password_file=str(secret))
    with _connect(proxy.port) as conn:
        assert _one(conn, "SELECT current_user") == MD5_USER


def test_unreadable_password_file_gives_the_client_an_error(
        md5: PgCluster, wiregate: Callable[..., ThreadedProxy], tmp_path: Path) -> None:
    """A credential that cannot be read at connect time must end the login with a FATAL error
    naming the problem, not a bare disconnect ("server closed the connection unexpectedly")."""
    secret = tmp_path / "upstream.pw"
    secret.write_text(MD5_PW)
    proxy = wiregate(md5, MD5_USER, password_file=str(secret))
    secret.unlink()  # rotated away after startup
    fields = login_error(proxy.port)
    assert fields["S"] == "FATAL"
    assert fields["C"][:2] in ("08", "28"), fields
    assert "upstream" in fields["M"] or "password" in fields["M"], fields


@pytest.mark.parametrize("method", ["scram-sha-256", "md5", "password"])
def test_wrong_upstream_password(method: str, request: pytest.FixtureRequest,
                                 wiregate: Callable[..., ThreadedProxy],
                                 caplog: pytest.LogCaptureFixture) -> None:
    fixture, user, right = {"scram-sha-256": ("scram_tls", SCRAM_USER, SCRAM_PW),
                            "md5": ("md5", MD5_USER, MD5_PW),
                            "password": ("cleartext", PLAIN_USER, PLAIN_PW)}[method]
    cluster: PgCluster = request.getfixturevalue(fixture)
    proxy = wiregate(cluster, user, password=WRONG_PW)
    with caplog.at_level("DEBUG", logger="wiregate"):
        fields = login_error(proxy.port)
    assert fields["S"] == "FATAL"
    assert fields["C"] == "28P01", fields
    assert re.search(r"upstream.*(login|authentication)", fields["M"]), fields
    for value in fields.values():
        assert WRONG_PW not in value and right not in value, fields
    for record in caplog.records:
        text = repr(vars(record))
        assert WRONG_PW not in text and right not in text, record
    # The client-side failure is not mistaken for a wrong demo password: the right client
    # credentials were accepted and the upstream is what refused.
    with pytest.raises(psycopg.OperationalError, match="upstream"):
        _connect(proxy.port)


# -- TLS to the upstream ------------------------------------------------------------------


def _ssl_in_use(conn: psycopg.Connection[Any]) -> bool:
    return bool(_one(conn, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))


@pytest.mark.parametrize(("mode", "extra", "encrypted"), [
    ("disable", {}, False),
    ("prefer", {}, True),
    ("require", {}, True),
    ("verify-full", {}, True),
    ("verify-full", {"tls_server_name": "localhost"}, True),
])
def test_upstream_tls_modes(mode: str, extra: dict[str, str], encrypted: bool,
                            scram_tls: PgCluster,
                            wiregate: Callable[..., ThreadedProxy]) -> None:
    assert scram_tls.ca_file is not None
    if mode == "verify-full":
        extra = {"tls_ca_file": str(scram_tls.ca_file), **extra}
    proxy = wiregate(scram_tls, SCRAM_USER, password=SCRAM_PW, tls=mode, **extra)
    with _connect(proxy.port) as conn:
        assert _one(conn, "SELECT current_user") == SCRAM_USER
        assert _ssl_in_use(conn) is encrypted
        # The client leg is plaintext (sslmode=disable): only the upstream leg is encrypted.
        assert not conn.pgconn.ssl_in_use


def test_verify_full_rejects_a_different_ca(scram_tls: PgCluster, tmp_path: Path,
                                            wiregate: Callable[..., ThreadedProxy]) -> None:
    other_cert, other_key = generate_ca("Not the upstream's CA")
    other_ca, _ = write_pair(tmp_path, "other-ca", other_cert, other_key)
    proxy = wiregate(scram_tls, SCRAM_USER, password=SCRAM_PW, tls="verify-full",
                     tls_ca_file=str(other_ca))
    fields = login_error(proxy.port)
    assert fields["S"] == "FATAL"
    assert fields["C"].startswith("08"), fields
    assert "TLS" in fields["M"] and "upstream" in fields["M"], fields
    assert "certificate verify failed" in fields["M"], fields


def test_verify_full_rejects_a_wrong_host_name(scram_tls: PgCluster,
                                               wiregate: Callable[..., ThreadedProxy]) -> None:
    assert scram_tls.ca_file is not None
    proxy = wiregate(scram_tls, SCRAM_USER, password=SCRAM_PW, tls="verify-full",
                     tls_ca_file=str(scram_tls.ca_file), tls_server_name="db.elsewhere.invalid")
    fields = login_error(proxy.port)
    assert fields["C"].startswith("08"), fields
    assert "TLS" in fields["M"], fields


def test_prefer_falls_back_to_plaintext(md5: PgCluster,
                                        wiregate: Callable[..., ThreadedProxy]) -> None:
    proxy = wiregate(md5, MD5_USER, password=MD5_PW, tls="prefer")
    with _connect(proxy.port) as conn:
        assert _one(conn, "SELECT current_user") == MD5_USER
        assert _ssl_in_use(conn) is False


@pytest.fixture
def hangs_up() -> Iterator[tuple[str, int]]:
    """Not a PostgreSQL server: reads the first packet and closes the connection."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                conn.recv(1024)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()
    stop.set()
    thread.join(2)
    srv.close()


@pytest.mark.parametrize("mode", ["disable", "prefer", "require"])
def test_upstream_hanging_up_gives_the_client_an_error(
        mode: str, hangs_up: tuple[str, int]) -> None:
    """Whatever the TLS mode, an upstream that drops the connection during startup must be
    reported to the client as a FATAL error rather than a bare disconnect."""
    host, port = hangs_up
    cfg = parse_config(config_dict(PgTarget(host, port, "nobody", "", "postgres"), free_port(),
                                   upstream={"tls": mode}))
    proxy = ThreadedProxy(cfg).start()
    try:
        fields = login_error(proxy.port)
    finally:
        proxy.stop(0.5)
    assert fields["S"] == "FATAL"
    assert fields["C"].startswith("08"), fields
    assert "upstream" in fields["M"], fields


@pytest.mark.parametrize("mode", ["require", "verify-full"])
def test_tls_required_but_upstream_has_none(mode: str, md5: PgCluster, scram_tls: PgCluster,
                                            wiregate: Callable[..., ThreadedProxy]) -> None:
    extra = {"tls_ca_file": str(scram_tls.ca_file)} if mode == "verify-full" else {}
    proxy = wiregate(md5, MD5_USER, password=MD5_PW, tls=mode, **extra)
    fields = login_error(proxy.port)
    assert fields["S"] == "FATAL"
    assert fields["C"].startswith("08"), fields
    assert "does not support TLS" in fields["M"], fields
    assert MD5_PW not in repr(fields)


def test_cancel_reaches_a_tls_upstream(scram_tls: PgCluster,
                                       wiregate: Callable[..., ThreadedProxy]) -> None:
    """With the upstream leg on TLS, the cancel is forwarded too (over TLS, like the session)."""
    proxy = wiregate(scram_tls, SCRAM_USER, password=SCRAM_PW, tls="require")
    with _connect(proxy.port) as conn:
        assert _ssl_in_use(conn)
        timer = threading.Timer(0.5, conn.cancel_safe)
        timer.start()
        started = time.monotonic()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(30)")
        finally:
            timer.cancel()
        assert time.monotonic() - started < 5


# -- startup parameters -------------------------------------------------------------------


def test_startup_parameters_reach_upstream(scram_tls: PgCluster,
                                           wiregate: Callable[..., ThreadedProxy]) -> None:
    proxy = wiregate(scram_tls, SCRAM_USER, password=SCRAM_PW)
    with _connect(proxy.port, application_name="wg-test",
                  options="'-c search_path=foo'") as conn:
        assert _one(conn, "SELECT current_setting('application_name')") == "wg-test"
        assert _one(conn, "SELECT current_setting('search_path')") == "foo"
        assert _one(conn, "SELECT application_name FROM pg_stat_activity "
                          "WHERE pid = pg_backend_pid()") == "wg-test"
        assert conn.info.parameter_status("application_name") == "wg-test"
        # The client said user=demo dbname=test; the route's user and dbname are what count.
        assert _one(conn, "SELECT session_user") == SCRAM_USER
        assert _one(conn, "SELECT current_database()") == "postgres"
        assert _one(conn, "SELECT count(*) FROM pg_roles WHERE rolname = 'demo'") == 0


def test_client_credentials_never_reach_upstream(scram_tls: PgCluster,
                                                 wiregate: Callable[..., ThreadedProxy]) -> None:
    """With no upstream password configured, the SCRAM server gets none: the client's demo
    password is not passed on, and the login fails."""
    scram_tls.psql(f"ALTER ROLE {SCRAM_USER} PASSWORD '{CLIENT_PASSWORD}'")
    try:
        proxy = wiregate(scram_tls, SCRAM_USER)
        fields = login_error(proxy.port)
        assert fields["C"] == "28P01", fields
    finally:
        quoted = SCRAM_PW.replace("'", "''")
        scram_tls.psql(f"ALTER ROLE {SCRAM_USER} PASSWORD '{quoted}'")


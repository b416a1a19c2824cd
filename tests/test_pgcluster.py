"""The throwaway-server helper must give real password, md5, SCRAM and TLS upstreams, because
the proxy's upstream authentication and TLS tests rely on it."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from proxy.certs import generate_ca, write_pair
from tests.pgcluster import PgCluster, PgClusterError, pg_bindir, start_cluster

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not (pg_bindir() / "initdb").is_file(), reason=f"no PostgreSQL binaries in {pg_bindir()}"
    ),
]

# log_connections makes the server log the method that authenticated each connection, so the
# tests can prove which mechanism was really used rather than trusting pg_hba alone.
_LOG_AUTH = {"log_connections": "on"}


def _connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, connect_timeout=10, autocommit=True)


def _auth_method_logged(cluster: PgCluster, user: str) -> list[str]:
    """Methods from the server's "connection authenticated" log lines for ``user``."""
    assert cluster.log_file is not None
    deadline = time.monotonic() + 5
    pattern = re.compile(rf'connection authenticated: identity="{re.escape(user)}" method=(\S+)')
    while True:
        found = pattern.findall(cluster.log_file.read_text(errors="replace"))
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _live_processes_mentioning(text: str) -> list[int]:
    """PIDs of non-zombie processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and _proc_state(int(entry.name)) not in (None, "Z", "X"):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def scram_tls() -> Iterator[PgCluster]:
    cluster = start_cluster(
        auth="scram-sha-256", tls=True, users={"alice": "al1ce pa'ss"}, extra_conf=_LOG_AUTH
    )
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def md5() -> Iterator[PgCluster]:
    cluster = start_cluster(auth="md5", users={"bob": "b0b-secret"}, extra_conf=_LOG_AUTH)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def cleartext() -> Iterator[PgCluster]:
    cluster = start_cluster(auth="password", users={"carol": "c4rol"}, extra_conf=_LOG_AUTH)
    yield cluster
    cluster.stop()


def test_scram_right_password_connects(scram_tls: PgCluster) -> None:
    # The password has a space and a quote, exercising both SQL and conninfo quoting.
    with _connect(scram_tls.dsn("alice", "al1ce pa'ss", sslmode="disable")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("alice",)
        # The role must be able to create objects in public (revoked by default since PG 15).
        conn.execute("CREATE TABLE alice_t (id int)")
        conn.execute("DROP TABLE alice_t")
    assert _auth_method_logged(scram_tls, "alice") == ["scram-sha-256"]
    verifier = scram_tls.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'alice'")
    assert verifier.startswith("SCRAM-SHA-256$")


def test_scram_wrong_password_fails(scram_tls: PgCluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(scram_tls.dsn("alice", "wrong", sslmode="disable"))


def test_scram_without_password_fails(scram_tls: PgCluster) -> None:
    # Proves TCP is not silently trust: no password at all must be refused.
    with pytest.raises(psycopg.OperationalError, match="no password supplied|authentication"):
        _connect(scram_tls.dsn("alice", sslmode="disable", passfile=os.devnull))


def test_tls_verify_full_with_cluster_ca(scram_tls: PgCluster) -> None:
    assert scram_tls.ca_file is not None and scram_tls.ca_file.is_file()
    for host in ("127.0.0.1", "localhost"):
        dsn = scram_tls.dsn(
            "alice", "al1ce pa'ss", host=host, sslmode="verify-full", sslrootcert=scram_tls.ca_file
        )
        with _connect(dsn) as conn:
            row = conn.execute(
                "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone()
            assert row is not None and row[0] is True, row
            assert conn.pgconn.ssl_in_use


def test_tls_verify_full_rejects_other_ca(scram_tls: PgCluster, tmp_path: Path) -> None:
    other_ca, other_key = generate_ca("Some other CA")
    other_file, _ = write_pair(tmp_path, "other", other_ca, other_key)
    dsn = scram_tls.dsn("alice", "al1ce pa'ss", sslmode="verify-full", sslrootcert=other_file)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        _connect(dsn)


def test_md5_right_and_wrong_password(md5: PgCluster) -> None:
    with _connect(md5.dsn("bob", "b0b-secret")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("bob",)
    assert _auth_method_logged(md5, "bob") == ["md5"]
    assert md5.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'bob'").startswith("md5")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(md5.dsn("bob", "nope"))


def test_cleartext_password_right_and_wrong(cleartext: PgCluster) -> None:
    with _connect(cleartext.dsn("carol", "c4rol")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("carol",)
        # No TLS was requested, so the server must not have enabled it.
        assert conn.execute("SHOW ssl").fetchone() == ("off",)
    assert _auth_method_logged(cleartext, "carol") == ["password"]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(cleartext.dsn("carol", "c4rol!"))


def test_extra_conf_is_applied(cleartext: PgCluster) -> None:
    assert cleartext.psql("SHOW log_connections").strip() == "on"
    assert cleartext.psql("SHOW max_connections").strip() == "50"


def test_stop_is_idempotent_and_cleans_up() -> None:
    cluster = start_cluster()  # trust
    with _connect(cluster.dsn()) as conn:
        assert conn.execute("SELECT current_setting('port')::int").fetchone() == (cluster.port,)
    assert cluster.running
    pid, base = cluster.pid, cluster.basedir
    assert base is not None and base.is_dir()
    cluster.stop()
    cluster.stop()
    assert not cluster.running
    assert not base.exists()
    assert _live_processes_mentioning(str(base)) == []
    assert not Path(f"/proc/{pid}").exists() or _proc_state(pid) in ("Z", "X")
    with pytest.raises(psycopg.OperationalError):
        _connect(cluster.dsn())


def test_invalid_auth_is_rejected_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="auth must be one of"):
        start_cluster(auth="ident")


def test_bad_setting_raises_with_log_tail() -> None:
    with pytest.raises(PgClusterError, match="server log tail"):
        start_cluster(extra_conf={"shared_buffers": "not-a-size"})

"""Throwaway PostgreSQL 15 servers for integration tests.

Each cluster is a fresh ``initdb`` in its own directory under /tmp, listening on a free TCP port
on 127.0.0.1 with the pg_hba method under test, optionally with TLS from a CA made by
``proxy.certs``. Servers run as the unprivileged ``postgres`` OS user (PostgreSQL refuses to run
as root) and are stopped by PID, so tests never depend on or disturb a system PostgreSQL.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from proxy.certs import generate_ca, generate_server_cert, write_pair

__all__ = ["AUTH_METHODS", "PgCluster", "PgClusterError", "pg_bindir", "start_cluster"]

AUTH_METHODS = ("trust", "password", "md5", "scram-sha-256")

_DEFAULT_BINDIR = Path("/usr/lib/postgresql/15/bin")
_OS_USER = "postgres"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0
_PORT_ATTEMPTS = 5
_HAVE_PROC = Path("/proc/self/stat").exists()


class PgClusterError(RuntimeError):
    """The test server could not be created, configured or started."""


def pg_bindir() -> Path:
    """``WIREGATE_PG_BINDIR`` lets other machines point at their own PostgreSQL install."""
    return Path(os.environ.get("WIREGATE_PG_BINDIR", str(_DEFAULT_BINDIR)))


def _run_as_postgres() -> bool:
    """Root must drop to ``postgres``; any other user runs the server as itself."""
    return os.geteuid() == 0


def _owner_ids() -> tuple[int, int]:
    if _run_as_postgres():
        pw = pwd.getpwnam(_OS_USER)
        return pw.pw_uid, pw.pw_gid
    return os.geteuid(), os.getegid()


def _run(
    args: list[str], cwd: Path, *, stdin: str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as the server's OS user; raise with its output on failure."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        "LANG": "C",
        "TZ": "UTC",
        "HOME": str(cwd),
    }
    # Dropping privileges needs root; otherwise run as ourselves (None keeps the defaults).
    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None
    if _run_as_postgres():
        uid, gid = _owner_ids()
        groups = []
    # cwd inside our own tree: the postgres user usually cannot enter the caller's cwd (/root).
    proc = subprocess.run(
        args,
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        user=uid,
        group=gid,
        extra_groups=groups,
    )
    if proc.returncode != 0:
        raise PgClusterError(
            f"{Path(args[0]).name} exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return proc


def _free_port() -> int:
    """Ask the kernel for an unused port; racy by nature, so startup retries on bind errors."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _conf_quote(value: str) -> str:
    """postgresql.conf accepts a quoted string for every parameter type, so always quote."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _sql_literal(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL bytes are not allowed in SQL strings")
    return "'" + value.replace("'", "''") + "'"


def _sql_ident(name: str) -> str:
    if not name or "\x00" in name:
        raise ValueError(f"invalid role name {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _conninfo_quote(value: str) -> str:
    """libpq conninfo quoting: bare when safe, else single quotes with backslash escapes."""
    if value and not any(c.isspace() or c in "'\\=" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name; ``None`` if unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Split after the parenthesised comm, which may itself contain spaces and parentheses.
    return stat.rsplit(")", 1)[1].split()


def _proc_start_time(pid: int) -> str | None:
    """Process start time, to tell our postmaster from a later process reusing its PID."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None  # field 22 of stat(5), counting pid and comm


def _pid_alive(pid: int) -> bool:
    """True while the process runs. A zombie counts as gone: the postmaster is not our child,
    so its reaping depends on whichever init adopted it, which can take seconds."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat(pid)
    if fields is None:
        return not _HAVE_PROC  # with /proc present, an unreadable entry means it just exited
    return fields[0] not in ("Z", "X")


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no server log: {exc})"


@dataclass(eq=False)  # identity semantics: clusters live in a set and are never equal by value
class PgCluster:
    """A running throwaway server; call ``stop()`` (idempotent) when done."""

    port: int
    datadir: Path
    pid: int
    host: str = "127.0.0.1"
    superuser: str = "postgres"
    ca_file: Path | None = None
    basedir: Path | None = None
    socket_dir: Path | None = None
    log_file: Path | None = None
    _start_time: str | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def dsn(
        self,
        user: str = "postgres",
        password: str | None = None,
        dbname: str = "postgres",
        **kw: object,
    ) -> str:
        """libpq conninfo for TCP to this server; extra keywords (``sslmode=...``) pass through."""
        params: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "user": user,
            "dbname": dbname,
        }
        if password is not None:
            params["password"] = password
        params.update(kw)
        return " ".join(f"{k}={_conninfo_quote(str(v))}" for k, v in params.items())

    def psql(self, sql: str) -> str:
        """Run SQL as the superuser over the Unix socket (always ``trust``), for test setup."""
        if self.socket_dir is None:
            raise PgClusterError("cluster has no Unix socket directory")
        return _psql(self.socket_dir, self.port, sql, cwd=self.basedir or self.datadir)

    @property
    def running(self) -> bool:
        return not self._stopped and self._is_our_process()

    def _is_our_process(self) -> bool:
        if not _pid_alive(self.pid):
            return False
        if self._start_time is None:
            return True
        return _proc_start_time(self.pid) == self._start_time

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT: disconnect clients, then exit; SIGTERM would wait for
        them), SIGQUIT and SIGKILL as fallbacks, then delete the cluster's files."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            for sig, wait in (
                (signal.SIGINT, _STOP_TIMEOUT),
                (signal.SIGQUIT, 5.0),
                (signal.SIGKILL, 5.0),
            ):
                if not self._is_our_process():
                    break
                try:
                    os.kill(self.pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and self._is_our_process():
                    time.sleep(0.05)
        finally:
            _live.discard(self)
            shutil.rmtree(self.basedir or self.datadir, ignore_errors=True)


_live: set[PgCluster] = set()


@atexit.register
def _stop_all() -> None:
    """Last resort so an aborted test run does not leave servers behind."""
    for cluster in list(_live):
        cluster.stop()


def _psql(socket_dir: Path, port: int, sql: str, cwd: Path) -> str:
    args = [
        str(pg_bindir() / "psql"),
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        str(socket_dir),
        "-p",
        str(port),
        "-U",
        "postgres",
        "-d",
        "postgres",
    ]
    return _run(args, cwd, stdin=sql, timeout=30.0).stdout


def _hba(auth: str, tls: bool) -> str:
    lines = [
        "# TYPE   DATABASE USER     ADDRESS        METHOD",
        "local    all      postgres                trust",
        f"local    all      all                     {auth}",
    ]
    if tls:
        lines.append(f"hostssl  all      all      127.0.0.1/32   {auth}")
    lines += [
        f"host     all      all      127.0.0.1/32   {auth}",
        f"host     all      all      ::1/128        {auth}",
    ]
    return "\n".join(lines) + "\n"


def _users_sql(users: dict[str, str], auth: str, superuser: str) -> str:
    """md5 auth needs md5-hashed passwords (a SCRAM verifier would make the server demand
    SCRAM instead); for every other method SCRAM verifiers are the modern default."""
    encryption = "md5" if auth == "md5" else "scram-sha-256"
    stmts = [f"SET password_encryption = {_sql_literal(encryption)};"]
    for name, password in users.items():
        role = _sql_ident(name)
        if name == superuser:
            stmts.append(f"ALTER ROLE {role} PASSWORD {_sql_literal(password)};")
            continue
        stmts += [
            f"CREATE ROLE {role} LOGIN PASSWORD {_sql_literal(password)};",
            f"GRANT CONNECT ON DATABASE postgres TO {role};",
            f"GRANT USAGE, CREATE ON SCHEMA public TO {role};",
        ]
    return "\n".join(stmts) + "\n"


def _write_owned(path: Path, text: str, mode: int = 0o600) -> None:
    uid, gid = _owner_ids()
    path.write_text(text)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _start_server(
    bindir: Path, base: Path, datadir: Path, log_file: Path, settings: dict[str, str]
) -> int:
    """Start on a fresh port, retrying when another process grabbed it first; return the port."""
    last_error: PgClusterError | None = None
    for _ in range(_PORT_ATTEMPTS):
        port = _free_port()
        conf = dict(settings, port=str(port))
        _write_owned(
            datadir / "wiregate.conf",
            "".join(f"{k} = {_conf_quote(v)}\n" for k, v in conf.items()),
        )
        if log_file.exists():
            log_file.unlink()
        try:
            _run(
                [
                    str(bindir / "pg_ctl"),
                    "start",
                    "-D",
                    str(datadir),
                    "-l",
                    str(log_file),
                    "-w",
                    "-t",
                    str(int(_START_TIMEOUT)),
                ],
                base,
                timeout=_START_TIMEOUT + 10,
            )
            return port
        except (PgClusterError, subprocess.TimeoutExpired) as exc:
            tail = _log_tail(log_file)
            last_error = PgClusterError(f"{exc}\n--- server log tail ---\n{tail}")
            _kill_from_pidfile(datadir)
            if "could not bind" not in tail and "could not create any TCP/IP" not in tail:
                raise last_error from exc
    assert last_error is not None
    raise last_error


def _read_pid(datadir: Path) -> int:
    try:
        return int((datadir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, IndexError, ValueError) as exc:
        raise PgClusterError(f"cannot read postmaster.pid in {datadir}: {exc}") from exc


def _kill_from_pidfile(datadir: Path) -> None:
    """A half-started postmaster (pg_ctl timed out) must not outlive the failed attempt."""
    try:
        pid = _read_pid(datadir)
    except PgClusterError:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)


def _wait_tcp(host: str, port: int, log_file: Path, timeout: float = _START_TIMEOUT) -> None:
    """pg_ctl -w already waits for "ready"; this confirms the TCP listener the tests will use."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise PgClusterError(
                    f"server not accepting TCP on {host}:{port}: {exc}\n"
                    f"--- server log tail ---\n{_log_tail(log_file)}"
                ) from exc
            time.sleep(0.05)


def start_cluster(
    auth: str = "trust",
    tls: bool = False,
    users: dict[str, str] | None = None,
    extra_conf: dict[str, str] | None = None,
) -> PgCluster:
    """Create, configure and start a fresh server; the caller owns it and must ``stop()`` it.

    ``auth`` is the pg_hba method for TCP (and non-superuser local) connections. ``users`` maps
    role name to password; naming the superuser sets its password instead of creating a role.
    ``extra_conf`` values are written quoted, which PostgreSQL accepts for every parameter type.
    """
    if auth not in AUTH_METHODS:
        raise ValueError(f"auth must be one of {', '.join(AUTH_METHODS)}, got {auth!r}")
    bindir = pg_bindir()
    for tool in ("initdb", "pg_ctl", "postgres", "psql"):
        if not (bindir / tool).is_file():
            raise PgClusterError(f"{bindir / tool} not found (set WIREGATE_PG_BINDIR)")

    uid, gid = _owner_ids()
    base = Path(tempfile.mkdtemp(prefix="wiregate-pg-", dir="/tmp"))
    try:
        # 0755 so clients running as another user can reach the socket and the CA file;
        # the data directory itself is created 0700 by initdb.
        os.chmod(base, 0o755)
        os.chown(base, uid, gid)
        datadir = base / "data"
        socket_dir = base / "sock"
        log_file = base / "postgres.log"
        socket_dir.mkdir(mode=0o755)
        os.chown(socket_dir, uid, gid)

        _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            base,
        )

        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(socket_dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "max_connections": "50",
            "max_wal_senders": "0",
            "wal_level": "minimal",
            "logging_collector": "off",
        }
        ca_file: Path | None = None
        if tls:
            tls_dir = base / "tls"
            ca_cert, ca_key = generate_ca()
            cert, key = generate_server_cert(ca_cert, ca_key, ["127.0.0.1", "localhost", "::1"])
            ca_file, _ = write_pair(tls_dir, "ca", ca_cert, ca_key)
            cert_file, key_file = write_pair(tls_dir, "server", cert, key)
            os.chmod(tls_dir, 0o755)
            for path in (tls_dir, cert_file, key_file):
                os.chown(path, uid, gid)
            # Only the public CA cert is needed by clients; the CA key has no further use.
            (tls_dir / "ca.key").unlink()
            settings.update(ssl="on", ssl_cert_file=str(cert_file), ssl_key_file=str(key_file))
        settings.update(extra_conf or {})

        conf = datadir / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write("\ninclude 'wiregate.conf'\n")
        _write_owned(datadir / "pg_hba.conf", _hba(auth, tls))

        port = _start_server(bindir, base, datadir, log_file, settings)
        pid = _read_pid(datadir)
        cluster = PgCluster(
            port=port,
            datadir=datadir,
            pid=pid,
            ca_file=ca_file,
            basedir=base,
            socket_dir=socket_dir,
            log_file=log_file,
            _start_time=_proc_start_time(pid),
        )
    except BaseException:
        _kill_from_pidfile(base / "data")
        shutil.rmtree(base, ignore_errors=True)
        raise

    _live.add(cluster)
    try:
        _wait_tcp(cluster.host, port, log_file)
        if users:
            cluster.psql(_users_sql(users, auth, cluster.superuser))
    except BaseException:
        cluster.stop()
        raise
    return cluster

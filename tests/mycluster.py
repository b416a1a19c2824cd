"""Throwaway MariaDB servers for integration tests (other auth plugins, TLS).

Each server is a fresh ``mariadb-install-db`` data directory under /tmp, listening on a free
TCP port of 127.0.0.1 only, run as the unprivileged ``mysql`` OS user and stopped by PID, so
tests never depend on or disturb the system MariaDB. Extra server options (a plugin to load,
TLS files) are passed through.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_OS_USER = "mysql"
_START_TIMEOUT = 60.0


class MyClusterError(RuntimeError):
    """The test server could not be created or started."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MyCluster:
    directory: Path
    port: int
    process: subprocess.Popen[bytes]

    def sql(self, statement: str) -> str:
        """Run SQL as root over the server's own socket (the mariadb client)."""
        res = subprocess.run(["mariadb", f"--socket={self.directory / 'mysqld.sock'}", "-uroot",
                              "-N", "-e", statement], capture_output=True, text=True,
                             timeout=30)
        if res.returncode != 0:
            raise MyClusterError(f"SQL failed: {res.stderr.strip()}")
        return res.stdout.strip()

    @property
    def socket_path(self) -> Path:
        """The server's Unix socket file."""
        return self.directory / "mysqld.sock"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster(options: Iterable[str] = (),
                  files: Mapping[str, bytes] | None = None) -> MyCluster:
    """A new server; ``options`` are extra ``mariadbd`` command-line options.

    ``files`` (name -> content) are written into the server's directory first, readable by
    the server's OS user only; ``{dir}`` in an option is that directory (TLS keys)."""
    if shutil.which("mariadb-install-db") is None or not Path("/usr/sbin/mariadbd").exists():
        raise MyClusterError("MariaDB server binaries are not installed")
    directory = Path(tempfile.mkdtemp(prefix="wiregate-my-"))
    as_mysql = os.geteuid() == 0
    if as_mysql:
        pw = pwd.getpwnam(_OS_USER)
        os.chown(directory, pw.pw_uid, pw.pw_gid)
    for name, content in (files or {}).items():
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        if as_mysql:
            os.chown(path, pw.pw_uid, pw.pw_gid)
    options = [o.replace("{dir}", str(directory)) for o in options]
    data = directory / "data"
    user = [f"--user={_OS_USER}"] if as_mysql else []
    res = subprocess.run(["mariadb-install-db", f"--datadir={data}", "--auth-root-authentication-"
                          "method=normal", "--skip-test-db", *user],
                         capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise MyClusterError(f"mariadb-install-db failed: {res.stderr[-2000:]}")
    port = _free_port()
    args = ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={data}", f"--port={port}",
            "--bind-address=127.0.0.1", f"--socket={directory / 'mysqld.sock'}",
            f"--pid-file={directory / 'mysqld.pid'}", "--skip-log-bin",
            "--innodb-buffer-pool-size=16M", *user, *options]
    log = open(directory / "server.log", "wb")  # noqa: SIM115 - handed to the process
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    cluster = MyCluster(directory, port, process)
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = (directory / "server.log").read_text(errors="replace")[-2000:]
            shutil.rmtree(directory, ignore_errors=True)
            raise MyClusterError(f"mariadbd exited: {text}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return cluster
        except OSError:
            time.sleep(0.2)
    cluster.stop()
    raise MyClusterError("mariadbd did not start in time")


TLS_OPTIONS = ("--ssl-cert={dir}/server.crt", "--ssl-key={dir}/server.key",
               "--ssl-ca={dir}/ca.crt")


def tls_files(hostnames: Sequence[str] = ("127.0.0.1", "localhost")) -> dict[str, bytes]:
    """A fresh test CA and a server certificate it signed for ``hostnames``, as the files
    ``TLS_OPTIONS`` name (``ca.crt`` is in the cluster directory for clients to verify
    with)."""
    from proxy.certs import generate_ca, generate_server_cert

    ca_cert, ca_key = generate_ca("Wiregate MariaDB test CA")
    cert, key = generate_server_cert(ca_cert, ca_key, list(hostnames))
    return {"ca.crt": ca_cert, "server.crt": cert, "server.key": key}


def start_tls_cluster(options: Iterable[str] = (),
                      hostnames: Sequence[str] = ("127.0.0.1", "localhost")) -> MyCluster:
    """A new server with TLS on (``have_ssl = YES``); its CA is ``directory / "ca.crt"``."""
    return start_cluster([*TLS_OPTIONS, *options], files=tls_files(hostnames))

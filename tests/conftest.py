"""Shared fixtures: the real PostgreSQL under test, and Wiregate in front of it.

The database comes from ``WIREGATE_TEST_PG_DSN`` (default: the local server on 127.0.0.1:5432,
database ``test``). When it cannot be reached the tests that need it are skipped with a reason
naming PostgreSQL, and ``.ci/run`` turns such a skip into a failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

from protocols.postgres.scram import make_verifier
from proxy.config import Config, parse_config
from proxy.server import ThreadedProxy

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
CLIENT_USER = "demo"
CLIENT_PASSWORD = "demo"
_VERIFIER = make_verifier(CLIENT_PASSWORD, iterations=4096)


@dataclass(frozen=True)
class PgTarget:
    host: str
    port: int
    user: str
    password: str
    dbname: str

    def dsn(self) -> str:
        pw = f" password={self.password}" if self.password else ""
        return f"host={self.host} port={self.port} user={self.user} dbname={self.dbname}{pw}"


def pg_target() -> PgTarget:
    u = urlparse(os.environ.get("WIREGATE_TEST_PG_DSN", DEFAULT_PG_DSN))
    return PgTarget(u.hostname or "127.0.0.1", u.port or 5432, unquote(u.username or "postgres"),
                    unquote(u.password or ""), (u.path or "/test").lstrip("/") or "test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


@pytest.fixture(scope="session")
def pg() -> PgTarget:
    t = pg_target()
    try:
        with socket.create_connection((t.host, t.port), timeout=3):
            pass
    except OSError as exc:
        pytest.skip(f"PostgreSQL not reachable at {t.host}:{t.port}: {exc}")
    return t


def config_dict(pg: PgTarget, port: int, **listener: Any) -> dict[str, Any]:
    upstream: dict[str, Any] = {"host": pg.host, "port": pg.port, "dbname": pg.dbname,
                                "user": pg.user, "tls": "disable"}
    if pg.password:
        upstream["password"] = pg.password
    upstream.update(listener.pop("upstream", {}))
    server = listener.pop("server", {})
    guardrails = listener.pop("guardrails", None)
    databases = {"test": upstream}
    # extra_databases: more routes to the same server, e.g. {"ro": {"profile": "..."}}
    for name, extra in listener.pop("extra_databases", {}).items():
        databases[name] = {**upstream, "dbname": pg.dbname, **extra}
    out: dict[str, Any] = {
        "server": {"log_level": "warning", **server},
        "users": {CLIENT_USER: {"scram_sha_256": _VERIFIER}},
        "postgres": {"listen": f"127.0.0.1:{port}", "databases": databases, **listener},
    }
    if guardrails is not None:
        out["guardrails"] = guardrails
    return out


def make_config(pg: PgTarget, port: int | None = None, **listener: Any) -> Config:
    return parse_config(config_dict(pg, port or free_port(), **listener))


def client_dsn(port: int, dbname: str = "test", **extra: str) -> str:
    parts = [f"host=127.0.0.1 port={port} user={CLIENT_USER} password={CLIENT_PASSWORD}",
             f"dbname={dbname}", "sslmode=disable" if "sslmode" not in extra else ""]
    parts += [f"{k}={v}" for k, v in extra.items()]
    return " ".join(p for p in parts if p)


@pytest.fixture
def proxy_factory(pg: PgTarget) -> Iterator[Callable[..., ThreadedProxy]]:
    """Start an in-process Wiregate with an injected policy/approver and listener overrides."""
    started: list[ThreadedProxy] = []

    def start(policy: Any = None, approver: Any = None, **listener: Any) -> ThreadedProxy:
        cfg = make_config(pg, **listener)
        p = ThreadedProxy(cfg, policy, approver).start()
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop(0.5)


@pytest.fixture
def proxy(proxy_factory: Callable[..., ThreadedProxy]) -> ThreadedProxy:
    return proxy_factory()


@pytest.fixture
def dsn(proxy: ThreadedProxy) -> str:
    return client_dsn(proxy.port)


class ProxyProcess:
    """``wiregate serve`` as a real subprocess, as users run it."""

    def __init__(self, config_text: str, tmp: Path, port: int) -> None:
        self.path = tmp / "wiregate.toml"
        self.path.write_text(config_text)
        self.port = port
        self.log = tmp / "wiregate.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(self.path)],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            wait_port(port, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError("wiregate did not start:\n" + self.log.read_text()) from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def to_toml(d: dict[str, Any], prefix: str = "") -> str:
    """Minimal TOML writer for test configs (tables, strings, numbers, booleans)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((f"{prefix}{k}", v))
        elif isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, int | float):
            lines.append(f"{k} = {v}")
        else:
            lines.append(f'{k} = "{v}"')
    out = "\n".join(lines) + "\n"
    for name, t in tables:
        out += f"\n[{name}]\n" + to_toml(t, f"{name}.")
    return out


@pytest.fixture
def proxy_process(pg: PgTarget, tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    procs: list[ProxyProcess] = []

    def start(**listener: Any) -> ProxyProcess:
        port = free_port()
        p = ProxyProcess(to_toml(config_dict(pg, port, **listener)), tmp_path, port)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


# -- MySQL/MariaDB --------------------------------------------------------------------------

DEFAULT_MYSQL_DSN = "mysql://root@127.0.0.1:3306/test"
MYSQL_USER_FORMS = {
    "mysql_native_password": "*C142FB215B6E05B7C134B1A653AD4B455157FD79",
    "caching_sha2_password": "175939018983abcaa4029ba81e61adbaa63f3fabe38bed84a9edd03bea587ade",
    "client_ed25519": "Oy9wpsyDYrwoM7O5ucl8H2lW0fB7Es0xpLFI43VrvuY",
}   # the password "demo" (CLIENT_PASSWORD), as `wiregate passwd --user demo` prints it


@dataclass(frozen=True)
class MySQLTarget:
    host: str
    port: int
    user: str
    password: str
    database: str


def mysql_target() -> MySQLTarget:
    u = urlparse(os.environ.get("WIREGATE_TEST_MYSQL_DSN", DEFAULT_MYSQL_DSN))
    return MySQLTarget(u.hostname or "127.0.0.1", u.port or 3306, unquote(u.username or "root"),
                       unquote(u.password or ""), (u.path or "/test").lstrip("/") or "test")


@pytest.fixture(scope="session")
def mysql() -> MySQLTarget:
    t = mysql_target()
    try:
        with socket.create_connection((t.host, t.port), timeout=3):
            pass
    except OSError as exc:
        pytest.skip(f"MariaDB/MySQL not reachable at {t.host}:{t.port}: {exc}")
    return t


def mysql_config_dict(my: MySQLTarget, port: int, **listener: Any) -> dict[str, Any]:
    """A configuration with a [mysql] listener on ``port`` in front of ``my``: route "test"
    (plus ``extra_databases``), the client login demo/demo in every MySQL password form."""
    upstream: dict[str, Any] = {"host": my.host, "port": my.port, "dbname": my.database,
                                "user": my.user, "tls": "disable"}
    if my.password:
        upstream["password"] = my.password
    upstream.update(listener.pop("upstream", {}))
    server = listener.pop("server", {})
    guardrails = listener.pop("guardrails", None)
    users = listener.pop("users", {CLIENT_USER: dict(MYSQL_USER_FORMS)})
    databases = {"test": upstream}
    for name, extra in listener.pop("extra_databases", {}).items():
        databases[name] = {**upstream, **extra}
    out: dict[str, Any] = {
        "server": {"log_level": "warning", **server},
        "users": users,
        "mysql": {"listen": f"127.0.0.1:{port}", "databases": databases,
                  "default_database": "test", **listener},
    }
    if guardrails is not None:
        out["guardrails"] = guardrails
    return out


@pytest.fixture
def mysql_proxy_factory(mysql: MySQLTarget) -> Iterator[Callable[..., ThreadedProxy]]:
    """Start an in-process Wiregate with a MySQL listener; ``.mysql_port`` is where to
    connect. Keyword arguments override the listener (see ``mysql_config_dict``)."""
    started: list[ThreadedProxy] = []

    def start(policy: Any = None, approver: Any = None, **listener: Any) -> ThreadedProxy:
        cfg = parse_config(mysql_config_dict(mysql, free_port(), **listener))
        p = ThreadedProxy(cfg, approver=approver, mysql_policy=policy).start()
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop(0.5)

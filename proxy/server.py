"""Listeners, worker processes, cancel routing and graceful shutdown.

``workers = N`` forks N processes that each bind the listen address with ``SO_REUSEPORT``, so
the kernel spreads connections across cores. A client's cancel key encodes the worker that owns
the session (top 8 bits of the process id); a CancelRequest landing on another worker is handed
to the owner over a Unix datagram socket, so psql's Ctrl-C works whichever process accepts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import os
import secrets
import signal
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from policies.catalog import Catalog
from policies.decision import AllowAll, Policy, SessionInfo
from policies.guard import GuardPolicy
from protocols.postgres.messages import error
from proxy import logs
from proxy.catalog import CatalogCache, catalog_key
from proxy.config import Config, MySQLListener, PostgresListener, Upstream
from proxy.mysql_catalog import load_mysql_catalog
from proxy.mysql_session import MySQLSession, greeting_version
from proxy.mysql_upstream import connect as mysql_connect
from proxy.mysql_upstream import query as mysql_query
from proxy.session import Approver, NoApprover, Session
from proxy.upstream import send_cancel

log = logging.getLogger("wiregate.server")
_CANCEL = struct.Struct("!II")
_CATALOG = b"catalog-changed:"   # datagram to the other workers: re-read a route's catalog
_MYSQL_KILL = b"mysql-kill:"      # datagram to a MySQL session's worker: KILL [QUERY] it
_KILL = struct.Struct("!IB")


def server_tls_context(listener: PostgresListener | MySQLListener) -> ssl.SSLContext | None:
    if not listener.tls_enabled:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    assert listener.tls_cert_file and listener.tls_key_file
    ctx.load_cert_chain(listener.tls_cert_file, listener.tls_key_file)
    return ctx


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """Queries are small and answered at once: no Nagle delay on TCP sockets."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def listen_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(info[4])
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class RouteCatalogs:
    """The guardrails' view of the catalog cache: by client database name. Asked on every
    statement, so each question is one dictionary lookup."""

    def __init__(self, cache: CatalogCache, routes: dict[str, Upstream],
                 broadcast: Callable[[str], None] | None = None) -> None:
        self.cache = cache
        self.routes = routes
        self.broadcast = broadcast
        self._keys = {name: catalog_key(up) for name, up in routes.items()}

    def current(self, database: str) -> Catalog | None:
        entry = self.cache.entry(self._keys.get(database))
        if entry is None:
            return None
        if time.monotonic() >= entry.due:
            self.cache.due(self.routes[database])
        return entry.catalog

    def stale(self, database: str) -> bool:
        entry = self.cache.entry(self._keys.get(database))
        return entry is not None and entry.dirty

    def snapshot(self, database: str) -> tuple[Catalog | None, bool]:
        """``current`` and ``stale`` in one lookup: the guardrails ask on every statement."""
        entry = self.cache.entry(self._keys.get(database))
        if entry is None:
            return None, False
        if time.monotonic() >= entry.due:
            self.cache.due(self.routes[database])
        return entry.catalog, entry.dirty

    def changed(self, database: str) -> None:
        """DDL committed through this route: re-read here, and tell the other workers."""
        up = self.routes.get(database)
        if up is not None:
            self.cache.invalidate(up)
            if self.broadcast is not None:
                self.broadcast(database)


def guard_policy(config: Config, cache: CatalogCache,
                 broadcast: Callable[[str], None] | None = None,
                 dialect: str = "postgres") -> GuardPolicy | None:
    """The guardrails configured for one listener, or None when there are none."""
    g = config.guardrails
    listener = config.mysql if dialect == "mysql" else config.postgres
    if g is None or listener is None:
        return None
    routes = listener.databases

    def profile_for(session: SessionInfo) -> str:
        return g.profile_for(routes[session.database])

    return GuardPolicy(g.profiles, profile_for, RouteCatalogs(cache, routes, broadcast),
                       dialect=dialect, mask_keys=g.mask_keys)


class Worker:
    """One event loop serving a listener: sessions, cancel keys, shutdown."""

    def __init__(self, config: Config, index: int = 0, rundir: str | None = None,
                 policy: Policy | None = None, approver: Approver | None = None,
                 mysql_policy: Policy | None = None) -> None:
        self.config = config
        self.listener = config.postgres
        self.index = index
        self.rundir = rundir
        self.users = config.users
        refresh = config.guardrails.catalog_refresh if config.guardrails else 300.0
        self.catalogs = CatalogCache(refresh)
        self.policy: Policy = policy or guard_policy(
            config, self.catalogs, self._broadcast_catalog_change) or AllowAll()
        self.approver: Approver = approver or NoApprover()
        self.server_tls = server_tls_context(self.listener) if self.listener else None
        # The MySQL/MariaDB listener: its own catalogs (information_schema), guardrails in
        # the MySQL dialect, and the connection ids clients see (for KILL).
        self.mysql_listener = config.mysql
        self.mysql_catalogs = CatalogCache(refresh, loader=self._mysql_loader)
        self.mysql_policy: Policy = mysql_policy or guard_policy(
            config, self.mysql_catalogs,
            lambda db: self._broadcast_catalog_change("mysql:" + db), dialect="mysql",
        ) or AllowAll()
        self.mysql_tls = server_tls_context(config.mysql) if config.mysql else None
        self.mysql_sessions: dict[int, MySQLSession] = {}
        self.mysql_version: str | None = None     # the upstream's, once known
        self._next_mysql_id = 1
        self._mysql_server: asyncio.base_events.Server | None = None
        self.sessions: dict[int, Session] = {}
        self.all_sessions: set[Session | MySQLSession] = set()
        self._next_pid = 1
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.base_events.Server | None = None
        self._cancel_sock: socket.socket | None = None
        self.shutting_down = False
        self.stopped = asyncio.Event()

    # -- bookkeeping used by sessions ------------------------------------------------------

    def register(self, session: Session) -> tuple[int, int]:
        while True:
            pid = (self.index << 24) | (self._next_pid & 0xFFFFFF)
            self._next_pid = (self._next_pid % 0xFFFFFF) + 1
            if pid not in self.sessions and pid != 0:
                break
        self.sessions[pid] = session
        return pid, secrets.randbits(32)

    def unregister(self, session: Session) -> None:
        if session.key is not None:
            self.sessions.pop(session.key[0], None)
        self.all_sessions.discard(session)

    async def _mysql_loader(self, up: Upstream, version: int) -> Catalog:
        return await load_mysql_catalog(up, version, self.mysql_catalogs.timeout)

    def register_mysql(self, session: MySQLSession) -> int:
        """A connection id for a MySQL client: the worker in the top 8 bits, as for
        PostgreSQL's cancel keys."""
        while True:
            cid = (self.index << 24) | (self._next_mysql_id & 0xFFFFFF)
            self._next_mysql_id = (self._next_mysql_id % 0xFFFFFF) + 1
            if cid not in self.mysql_sessions and cid != 0:
                break
        self.mysql_sessions[cid] = session
        self.all_sessions.add(session)
        return cid

    def unregister_mysql(self, session: MySQLSession) -> None:
        if self.mysql_sessions.get(session.connection_id) is session:
            del self.mysql_sessions[session.connection_id]
        self.all_sessions.discard(session)

    def kill_mysql(self, target: MySQLSession, query_only: bool) -> None:
        """KILL of a session on another upstream server: over a connection of its own."""
        up, conn = target.upstream, target.up
        if up is None or conn is None:
            return

        async def run() -> None:
            try:
                killer = await mysql_connect(up, capabilities=0, timeout=5.0)
                try:
                    await mysql_query(killer, f"KILL {'QUERY ' if query_only else ''}"
                                      f"{conn.connection_id}")
                finally:
                    killer.writer.close()
            except Exception as exc:
                log.warning("kill forwarding failed", extra={"error": str(exc)})

        self.spawn(run())

    def forward_mysql_kill(self, conn_id: int, query_only: bool, user: str) -> bool:
        """KILL of a connection id another worker gave out (the mariadb client's Ctrl-C
        opens a new connection, which may land anywhere): the owner checks the login and
        kills. False when there is no such worker."""
        owner = conn_id >> 24
        path = self._cancel_path(owner) if owner < self.config.server.workers else None
        if path is None or owner == self.index:
            return False
        message = _MYSQL_KILL + _KILL.pack(conn_id, query_only) + user.encode()
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX,
                                                         socket.SOCK_DGRAM) as s:
            s.sendto(message, path)
        return True

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel(self, pid: int, secret: int) -> None:
        owner = pid >> 24
        if owner != self.index:
            self._forward_cancel(owner, pid, secret)
            return
        session = self.sessions.get(pid)
        if session is None or session.key is None or not hmac.compare_digest(
                _CANCEL.pack(*session.key), _CANCEL.pack(pid, secret)):
            log.info("cancel request for unknown key ignored")
            return
        log.info("cancel request", extra={"session": session.id})
        relay = session.relay
        if relay is not None and relay.held is not None:
            relay.cancel_hold()  # nothing runs upstream yet: the wait itself is cancelled
            return
        up = session.up
        assert up is not None and session.upstream is not None
        try:
            await send_cancel(session.upstream, up.process_id, up.secret_key, up.tls)
        except Exception as exc:  # the client gets no answer to a cancel either way
            log.warning("cancel forwarding failed", extra={"error": str(exc)})

    def _cancel_path(self, index: int) -> str | None:
        return os.path.join(self.rundir, f"cancel-{index}.sock") if self.rundir else None

    def _forward_cancel(self, owner: int, pid: int, secret: int) -> None:
        path = self._cancel_path(owner)
        if path is None:
            return
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX,
                                                         socket.SOCK_DGRAM) as s:
            s.sendto(_CANCEL.pack(pid, secret), path)

    def _broadcast_catalog_change(self, database: str) -> None:
        """Other workers hold their own catalog snapshots: ask them to re-read too."""
        message = _CATALOG + database.encode()
        for index in range(self.config.server.workers):
            path = self._cancel_path(index)
            if index == self.index or path is None:
                continue
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX,
                                                             socket.SOCK_DGRAM) as s:
                s.sendto(message, path)

    def _on_cancel_datagram(self) -> None:
        assert self._cancel_sock is not None
        try:
            data = self._cancel_sock.recv(1024)
        except BlockingIOError:
            return
        if data.startswith(_MYSQL_KILL):
            body = data[len(_MYSQL_KILL):]
            if len(body) >= _KILL.size:
                conn_id, query_only = _KILL.unpack_from(body)
                target = self.mysql_sessions.get(conn_id)
                if target is not None and target.info.user == body[_KILL.size:].decode(
                        errors="replace"):
                    self.kill_mysql(target, bool(query_only))
            return
        if data.startswith(_CATALOG):
            name = data[len(_CATALOG):].decode(errors="replace")
            if name.startswith("mysql:"):
                lst: PostgresListener | MySQLListener | None = self.mysql_listener
                cache, name = self.mysql_catalogs, name[6:]
            else:
                lst, cache = self.listener, self.catalogs
            up = lst.databases.get(name) if lst is not None else None
            if up is not None:
                cache.invalidate(up)
            return
        if len(data) == _CANCEL.size:
            pid, secret = _CANCEL.unpack(data)
            if pid >> 24 == self.index:
                self.spawn(self.cancel(pid, secret))

    # -- serving ---------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _no_delay(writer)
        assert self.listener is not None
        session = Session(self, self.listener, self.policy, self.approver, reader, writer)
        self.all_sessions.add(session)
        await self._run(session, self.unregister)

    @staticmethod
    async def _run(session: Session | MySQLSession,
                   unregister: Callable[[Any], None]) -> None:
        """A session's login and relay; one that fails is closed and logged, never the
        worker's problem. Until the relay owns it, the session is unregistered here."""
        try:
            await session.run()
        except Exception:
            log.exception("session failed", extra={"session": session.id})
            session.close()
        finally:
            if session.relay is None:
                unregister(session)

    async def _handle_mysql(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        _no_delay(writer)
        assert self.mysql_listener is not None
        session = MySQLSession(self, self.mysql_listener, self.mysql_policy, self.approver,
                               self.mysql_catalogs, reader, writer)
        await self._run(session, self.unregister_mysql)

    async def start(self, sock: socket.socket | None = None,
                    mysql_sock: socket.socket | None = None) -> None:
        lst = self.listener
        if lst is not None:
            if sock is None:
                sock = listen_socket(lst.host, lst.port, reuse_port=self.rundir is not None)
            self._server = await asyncio.start_server(self._handle, sock=sock, limit=1 << 20)
        my_lst = self.mysql_listener
        if my_lst is not None:
            if mysql_sock is None:
                mysql_sock = listen_socket(my_lst.host, my_lst.port,
                                           reuse_port=self.rundir is not None)
            default = my_lst.databases.get(my_lst.default_database or "") \
                or next(iter(my_lst.databases.values()))
            self.mysql_version = await greeting_version(default)
            self._mysql_server = await asyncio.start_server(self._handle_mysql,
                                                            sock=mysql_sock, limit=1 << 20)
        path = self._cancel_path(self.index)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            cs = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            cs.bind(path)
            cs.setblocking(False)
            self._cancel_sock = cs
            asyncio.get_running_loop().add_reader(cs.fileno(), self._on_cancel_datagram)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def mysql_port(self) -> int:
        assert self._mysql_server is not None
        port: int = self._mysql_server.sockets[0].getsockname()[1]
        return port

    async def shutdown(self, grace: float) -> None:
        """Stop accepting; let sessions finish their transaction, up to ``grace`` seconds."""
        if self.shutting_down:
            return
        self.shutting_down = True
        log.info("shutting down", extra={"worker": self.index, "sessions": len(self.sessions),
                                         "grace_s": grace})
        for server in (self._server, self._mysql_server):
            if server is not None:
                server.close()
        for session in list(self.all_sessions):
            session.begin_shutdown()
        deadline = time.monotonic() + grace
        while self.all_sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.all_sessions):
            if isinstance(session, MySQLSession):
                session.close()
            else:
                session.close(error("57P01", "terminating connection due to administrator "
                                    "command", severity="FATAL"))
        await asyncio.sleep(0)
        if self._cancel_sock is not None:
            asyncio.get_running_loop().remove_reader(self._cancel_sock.fileno())
            self._cancel_sock.close()
        self.stopped.set()


def _install_loop(use_uvloop: bool) -> None:
    if use_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass


async def _worker_main(config: Config, index: int, rundir: str | None) -> None:
    worker = Worker(config, index, rundir)
    await worker.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(
            sig, lambda: loop.create_task(worker.shutdown(config.server.shutdown_grace)))
    for kind, lst in (("postgres", worker.listener), ("mysql", worker.mysql_listener)):
        if lst is not None:
            log.info("listening", extra={"worker": index, "protocol": kind,
                                         "address": f"{lst.host}:{lst.port}",
                                         "tls": lst.tls_enabled, "pid": os.getpid()})
    await worker.stopped.wait()


def _run_worker(config: Config, index: int, rundir: str | None) -> None:
    _install_loop(config.server.use_uvloop)
    # The relay allocates a few short-lived objects per statement and builds no cycles on
    # its hot path: the collector's young generation is scanned far less often, and what
    # start-up created (modules, parsers' tables) is left out of every scan.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    asyncio.run(_worker_main(config, index, rundir))


def serve(config: Config) -> int:
    """Run the proxy until SIGTERM/SIGINT; returns the process exit code."""
    logs.setup(config.server.log_format, config.server.log_level)
    for lst in (config.postgres, config.mysql):
        if lst is None:
            continue
        try:  # fail early and clearly when an address is taken
            listen_socket(lst.host, lst.port, reuse_port=False).close()
        except OSError as exc:
            log.error("cannot listen", extra={"address": f"{lst.host}:{lst.port}",
                                              "error": exc.strerror})
            return 1
    n = config.server.workers
    if n == 1:
        _run_worker(config, 0, None)
        return 0
    rundir = tempfile.mkdtemp(prefix="wiregate-")
    children: dict[int, int] = {}
    stopping = False

    def start_child(i: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _run_worker(config, i, rundir)
            except BaseException:
                log.exception("worker crashed", extra={"worker": i})
                code = 1
            finally:
                os._exit(code)
        children[pid] = i

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for i in range(n):
        start_child(i)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        i = children.pop(pid, -1)
        if not stopping and i >= 0:
            log.error("worker exited; restarting", extra={"worker": i, "status": status})
            time.sleep(0.5)
            start_child(i)
    with contextlib.suppress(OSError):
        for f in os.listdir(rundir):
            os.unlink(os.path.join(rundir, f))
        os.rmdir(rundir)
    return 0


class ThreadedProxy:
    """A worker on its own thread and loop: lets tests inject policies and approvers."""

    def __init__(self, config: Config, policy: Policy | None = None,
                 approver: Approver | None = None, mysql_policy: Policy | None = None) -> None:
        self.config = config
        self.policy = policy
        self.approver = approver
        self.mysql_policy = mysql_policy
        self.loop = asyncio.new_event_loop()
        self.worker: Worker | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.worker = Worker(self.config, 0, None, self.policy, self.approver,
                                 self.mysql_policy)
            await self.worker.start()
            self._ready.set()
            await self.worker.stopped.wait()

        self.loop.run_until_complete(main())

    def start(self) -> ThreadedProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    @property
    def port(self) -> int:
        assert self.worker is not None
        return self.worker.port

    @property
    def mysql_port(self) -> int:
        assert self.worker is not None
        return self.worker.mysql_port

    def stop(self, grace: float = 1.0) -> None:
        if self.worker is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.worker.shutdown(grace), self.loop)
            self._thread.join(grace + 5)

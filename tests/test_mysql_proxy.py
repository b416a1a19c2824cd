"""The MySQL listener on the wire: refusals as ERR packets with the right numbers, the session
usable after them, commands Wiregate refuses or rewrites, pipelined commands answered in order,
profile settings kept across COM_RESET_CONNECTION, and framing from arbitrary chunks and
malformed bytes answered with an error, never a crash."""

from __future__ import annotations

import socket
import struct
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.mysql import messages as my
from protocols.mysql.packets import encode
from proxy.server import ThreadedProxy
from tests.conftest import CLIENT_PASSWORD, CLIENT_USER, ROOT, MySQLTarget

POLICY = str(ROOT / "examples" / "policy.toml")


def direct(t: MySQLTarget) -> Any:
    return pymysql.connect(host=t.host, port=t.port, user=t.user, password=t.password,
                           database=t.database, autocommit=True)


def through(port: int, database: str = "test", **kw: Any) -> Any:
    return pymysql.connect(host="127.0.0.1", port=port, user=CLIENT_USER,
                           password=CLIENT_PASSWORD, database=database, autocommit=True, **kw)


@pytest.fixture
def table(mysql: MySQLTarget) -> Iterator[str]:
    name = f"wg_orders_{uuid.uuid4().hex[:8]}"
    with direct(mysql) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (id INT PRIMARY KEY, status VARCHAR(20))")
        cur.execute(f"INSERT INTO {name} VALUES (1, 'new'), (2, 'paid'), (3, 'shipped')")
    yield name
    with direct(mysql) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def guarded(mysql_proxy_factory: Callable[..., ThreadedProxy]) -> ThreadedProxy:
    return mysql_proxy_factory(guardrails={"policy_file": POLICY},
                               upstream={"profile": "agent-rw"},
                               extra_databases={"readonly": {"profile": "agent-readonly"}})


REFUSALS = [
    ("DROP TABLE {t}", 1227, "no-ddl"),
    ("TRUNCATE TABLE {t}", 1227, "no-ddl"),
    ("/*!DROP TABLE {t}*/", 1227, "no-ddl"),
    ("/*M!100500 DROP TABLE {t} */", 1227, "no-ddl"),
    ("DELETE FROM {t}", 1142, "bounded-writes"),
    ("UPDATE {t} SET status = 'x' WHERE 1 = 1", 1142, "bounded-writes"),
    ("SELECT * FROM {t} INTO OUTFILE '/tmp/wg-out'", 1227, "no-files"),
    ("SELECT load_file('/etc/passwd')", 1227, "no-files"),
    ("GRANT ALL ON *.* TO 'x'@'%'", 1227, "no-privileges"),
    ("SELECT 1; DROP TABLE {t}", 1227, ""),
    ("SELEKT * FROM {t}", 1064, "wiregate.parse"),
]


@pytest.mark.parametrize(("sql", "errno", "rule"), REFUSALS)
def test_refusals_are_err_packets_and_the_session_goes_on(
        guarded: ThreadedProxy, table: str, mysql: MySQLTarget, sql: str, errno: int,
        rule: str) -> None:
    with through(guarded.mysql_port,
                 client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS) as conn, \
            conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError) as ei:
            cur.execute(sql.format(t=table))
        code, message = ei.value.args[0], ei.value.args[1]
        assert code == errno
        assert message.startswith("wiregate: blocked by rule ")
        assert rule in message
        cur.execute(f"SELECT count(*) FROM {table}")
        assert cur.fetchall() == ((3,),)
    with direct(mysql) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        assert cur.fetchall() == ((3,),)   # nothing ran


def test_bounded_writes_and_reads_pass(guarded: ThreadedProxy, table: str) -> None:
    with through(guarded.mysql_port) as conn, conn.cursor() as cur:
        cur.execute(f"UPDATE {table} SET status = 'void' WHERE id = %s", (2,))
        assert cur.rowcount == 1
        cur.execute(f"SELECT status FROM {table} WHERE id = 2")
        assert cur.fetchall() == (("void",),)
        cur.execute(f"DELETE FROM {table} WHERE id = 3")
        assert cur.rowcount == 1


def test_read_only_profile_holds_across_reset_connection(guarded: ThreadedProxy,
                                                         table: str) -> None:
    """The agent-readonly route opens the upstream session read-only; COM_RESET_CONNECTION
    puts session variables back to the server's defaults, so Wiregate sets them again."""
    import mysql.connector

    conn = mysql.connector.connect(host="127.0.0.1", port=guarded.mysql_port,
                                   user=CLIENT_USER, password=CLIENT_PASSWORD,
                                   database="readonly", use_pure=True)
    try:
        cur = conn.cursor()
        cur.execute("SELECT @@session.tx_read_only, @@session.max_statement_time")
        assert cur.fetchall() == [(1, 30.0)]
        conn.cmd_reset_connection()
        cur = conn.cursor()
        cur.execute("SELECT @@session.tx_read_only, @@session.max_statement_time")
        assert cur.fetchall() == [(1, 30.0)]
        cur.execute(f"SELECT count(*) FROM {table}")
        assert cur.fetchall() == [(3,)]
    finally:
        conn.close()


# -- raw protocol -----------------------------------------------------------------------------

class Raw:
    """A MySQL client speaking bytes: logs in with mysql_native_password, then sends
    whatever a test wants, in whatever chunks."""

    def __init__(self, port: int, database: str = "test", caps: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = bytearray()
        greeting = my.HandshakeV10.decode(self.packet())
        self.greeting = greeting
        caps = caps if caps is not None else (
            my.CLIENT_PROTOCOL_41 | my.CLIENT_SECURE_CONNECTION | my.CLIENT_PLUGIN_AUTH
            | my.CLIENT_CONNECT_WITH_DB | my.CLIENT_MULTI_RESULTS | my.CLIENT_TRANSACTIONS
            | my.CLIENT_LONG_PASSWORD)
        resp = my.HandshakeResponse41(caps, CLIENT_USER, my.native_password(
            CLIENT_PASSWORD.encode(), greeting.auth_data), database, "mysql_native_password")
        self.sock.sendall(encode(resp.encode(), 1))
        ok = self.packet()
        assert ok[:1] == b"\x00", ok

    def packet(self) -> bytes:
        return self.packets(1)[0]

    def packets(self, n: int) -> list[bytes]:
        """The next ``n`` packets' payloads, sequence ids unchecked (tests look at them)."""
        out: list[bytes] = []
        buf = self.buf
        while len(out) < n:
            while len(out) < n and len(buf) >= 4 \
                    and len(buf) >= 4 + int.from_bytes(buf[:3], "little"):
                size = int.from_bytes(buf[:3], "little")
                out.append(bytes(buf[4:4 + size]))
                del buf[:4 + size]
            if len(out) < n:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed")
                buf += data
        return out

    def close(self) -> None:
        self.sock.close()


def command(payload: bytes) -> bytes:
    return encode(payload, 0)


def test_pipelined_commands_are_answered_in_order_with_a_refusal_among_them(
        guarded: ThreadedProxy, table: str) -> None:
    raw = Raw(guarded.mysql_port)
    try:
        batch = (command(b"\x03SELECT 1") + command(b"\x03DROP TABLE " + table.encode())
                 + command(b"\x0e") + command(b"\x03SELECT 2"))
        raw.sock.sendall(batch)
        # SELECT 1: column count, column def, EOF, row, EOF = 5 packets; the refusal: 1 ERR;
        # the ping: OK; SELECT 2: 5 packets.
        got = raw.packets(12)
        assert got[3] == b"\x011"
        err = my.ERR.decode(got[5])
        assert err.errno == 1227 and "no-ddl" in err.message
        assert got[6][:1] == b"\x00"
        assert got[10] == b"\x012"
    finally:
        raw.close()


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(cuts=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=8))
def test_commands_framed_from_arbitrary_chunks(mysql_proxy_factory: Any, cuts: list[int]
                                               ) -> None:
    proxy = _shared_proxy(mysql_proxy_factory)
    raw = Raw(proxy.mysql_port)
    try:
        data = command(b"\x03SELECT 'chunked', 42") + command(b"\x0e")
        pos = 0
        for cut in cuts:
            raw.sock.sendall(data[pos:pos + cut])
            pos += cut
        raw.sock.sendall(data[pos:])
        got = raw.packets(7)   # count, 2 defs, EOF, row, EOF, then the ping's OK
        assert got[4] == b"\x07chunked\x0242"
        assert got[6][:1] == b"\x00"
    finally:
        raw.close()


_PROXIES: dict[int, ThreadedProxy] = {}


def _shared_proxy(factory: Any) -> ThreadedProxy:
    """Hypothesis reruns the test body in one fixture scope: one proxy is enough."""
    key = id(factory)
    if key not in _PROXIES:
        _PROXIES.clear()
        _PROXIES[key] = factory()
    return _PROXIES[key]


@pytest.mark.parametrize(("payload", "errno"), [
    (b"\x08", 1227),                        # COM_SHUTDOWN
    (b"\x12" + b"\0" * 10, 1227),           # COM_BINLOG_DUMP
    (b"\x0d", 1227),                        # COM_DEBUG
    (b"\xfa\x01\x00\x00\x00", 1227),        # COM_STMT_BULK_EXECUTE (not offered)
    (b"\x42", 1047),                        # not a command
    (b"\x11demo\0", 1227),                  # COM_CHANGE_USER
])
def test_refused_commands_get_an_error_and_the_session_goes_on(
        mysql_proxy_factory: Any, payload: bytes, errno: int) -> None:
    raw = Raw(mysql_proxy_factory().mysql_port)
    try:
        raw.sock.sendall(command(payload))
        err = my.ERR.decode(raw.packets(1)[0])
        assert err.errno == errno and err.message.startswith("wiregate:")
        raw.sock.sendall(command(b"\x03SELECT 7"))
        assert raw.packets(5)[3] == b"\x017"
    finally:
        raw.close()


@pytest.mark.parametrize("junk", [
    b"\x01\x00\x00\x05\x03",                 # a command that does not start at sequence 0
    b"\x00\x00\x00\x00",                     # an empty packet
    b"\xff\xff\xff\x00" + b"x" * 100,        # the start of a 16 MiB command, then silence
])
def test_malformed_input_is_answered_not_crashed_on(mysql_proxy_factory: Any,
                                                    junk: bytes) -> None:
    proxy = mysql_proxy_factory()
    raw = Raw(proxy.mysql_port)
    try:
        raw.sock.sendall(junk)
        raw.sock.settimeout(2)
        try:
            data = raw.sock.recv(65536)
        except TimeoutError:
            data = b"(waiting)"
        assert data == b"(waiting)" or data == b"" or data[4:5] == b"\xff"
    finally:
        raw.close()
    with through(proxy.mysql_port) as conn, conn.cursor() as cur:   # the proxy still serves
        cur.execute("SELECT 1")
        assert cur.fetchall() == ((1,),)


def test_greeting_offers_no_compression_local_files_or_query_attributes(
        mysql_proxy_factory: Any) -> None:
    raw = Raw(mysql_proxy_factory().mysql_port)
    try:
        caps = raw.greeting.capabilities
        assert not caps & (my.CLIENT_COMPRESS | my.CLIENT_LOCAL_FILES
                           | my.CLIENT_QUERY_ATTRIBUTES)
        assert caps & my.CLIENT_DEPRECATE_EOF and caps & my.CLIENT_MULTI_RESULTS
        assert "MariaDB" in raw.greeting.server_version      # the upstream's own version
        assert raw.greeting.connection_id > 0
    finally:
        raw.close()


def test_local_infile_is_refused(mysql_proxy_factory: Any, table: str) -> None:
    with through(mysql_proxy_factory().mysql_port, local_infile=True) as conn, \
            conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError) as ei:
            cur.execute(f"LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE {table}")
        assert ei.value.args[0] in (1148, 3948, 2068, 4166)
        cur.execute(f"SELECT count(*) FROM {table}")
        assert cur.fetchall() == ((3,),)


def killed_sleep(victim: Any, kill: Callable[[], None]) -> tuple[float, list[Any]]:
    """SELECT SLEEP(20) on ``victim`` in a thread, ``kill`` called half a second in: how
    long the sleep took, and what it returned (its rows, or the error number)."""
    import threading
    import time

    result: list[Any] = []

    def sleep() -> None:
        with victim.cursor() as cur:
            try:
                cur.execute("SELECT SLEEP(20)")
                result.append(cur.fetchall())
            except pymysql.err.MySQLError as exc:
                result.append(exc.args[0])

    t = threading.Thread(target=sleep)
    started = time.monotonic()
    t.start()
    time.sleep(0.5)
    kill()
    t.join(15)
    return time.monotonic() - started, result


def test_kill_reaches_only_the_same_logins_sessions(mysql_proxy_factory: Any) -> None:
    proxy = mysql_proxy_factory()
    victim = through(proxy.mysql_port)
    killer = through(proxy.mysql_port)
    try:
        def kill() -> None:
            with killer.cursor() as cur:
                with pytest.raises(pymysql.err.MySQLError) as ei:
                    cur.execute("KILL 99999")
                assert ei.value.args[0] == 1094
                with pytest.raises(pymysql.err.MySQLError) as ei:
                    cur.execute("KILL USER root")
                assert ei.value.args[0] == 1227
                cur.execute(f"KILL QUERY {victim.thread_id()}")

        took, result = killed_sleep(victim, kill)
        assert took < 10
        assert result in ([((1,),)], [1317])   # interrupted: SLEEP returns 1, or 1317
        with victim.cursor() as cur:        # the victim's session goes on
            cur.execute("SELECT 5")
            assert cur.fetchall() == ((5,),)
    finally:
        victim.close()
        killer.close()


def test_statement_ids_and_binary_rows_survive_many_executions(mysql_proxy_factory: Any) -> None:
    import mysql.connector

    conn = mysql.connector.connect(host="127.0.0.1", port=mysql_proxy_factory().mysql_port,
                                   user=CLIENT_USER, password=CLIENT_PASSWORD, database="test",
                                   use_pure=True)
    try:
        cur = conn.cursor(prepared=True)
        for i in range(50):
            cur.execute("SELECT %s + 1, CONCAT('v', %s), NULL", (i, i))
            assert cur.fetchall() == [(i + 1, f"v{i}", None)]
    finally:
        conn.close()


def test_err_packet_layout() -> None:
    payload = my.ERR(1227, "wiregate: blocked by rule no-ddl: x", "42000").encode()
    assert payload[:3] == b"\xff" + struct.pack("<H", 1227) and payload[3:9] == b"#42000"


def test_kill_reaches_a_session_on_another_worker(mysql: MySQLTarget, tmp_path: Any) -> None:
    """With two worker processes the killing connection may land on the other one (the
    mariadb client's Ctrl-C opens a new connection): the owner worker does the KILL."""

    from tests.conftest import ProxyProcess, free_port, mysql_config_dict, to_toml

    port = free_port()
    conf = mysql_config_dict(mysql, port, server={"workers": 2})
    proc = ProxyProcess(to_toml(conf), tmp_path, port)
    try:
        conns = []
        victim = killer = None
        for _ in range(40):     # connections until both workers hold one
            c = through(port)
            conns.append(c)
            by_worker = {x.thread_id() >> 24: x for x in conns}
            if len(by_worker) == 2:
                victim, killer = by_worker[0], by_worker[1]
                break
        assert victim is not None and killer is not None, "the kernel used one worker only"
        def kill() -> None:
            with killer.cursor() as cur:
                cur.execute(f"KILL QUERY {victim.thread_id()}")

        took, result = killed_sleep(victim, kill)
        assert took < 10
        assert result in ([((1,),)], [1317])
        for c in conns:
            c.close()
    finally:
        proc.stop()


def test_field_list_set_option_and_statistics_pass(mysql_proxy_factory: Any, table: str
                                                  ) -> None:
    raw = Raw(mysql_proxy_factory().mysql_port)
    try:
        raw.sock.sendall(command(b"\x04" + table.encode() + b"\0"))   # COM_FIELD_LIST
        got = raw.packets(3)      # two column definitions, then EOF
        defs = [my.ColumnDefinition.decode(p) for p in got[:2]]
        assert [d.name for d in defs] == ["id", "status"] and got[2][:1] == b"\xfe"
        raw.sock.sendall(command(b"\x1b\x00\x00"))                     # SET_OPTION multi on
        assert raw.packet()[:1] in (b"\x00", b"\xfe")
        raw.sock.sendall(command(b"\x09"))                             # COM_STATISTICS
        assert raw.packet().startswith(b"Uptime:")
        raw.sock.sendall(command(b"\x03SELECT 3"))
        assert raw.packets(5)[3] == b"\x013"
    finally:
        raw.close()


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=st.tuples(st.sampled_from([0x03, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C, 0x02,
                                          0x04, 0x0C, 0x11, 0x1B, 0x1F, 0xFA, 0x00, 0xFF]),
                         st.binary(max_size=40)).map(lambda t: bytes([t[0]]) + t[1]))
def test_random_commands_are_answered_or_refused_and_the_proxy_serves_on(
        mysql_proxy_factory: Any, payload: bytes) -> None:
    proxy = _shared_proxy(mysql_proxy_factory)
    raw = Raw(proxy.mysql_port)
    try:
        raw.sock.sendall(command(payload))
        raw.sock.settimeout(0.5)
        try:
            raw.sock.recv(65536)
        except (TimeoutError, ConnectionError):
            pass
    finally:
        raw.close()
    with through(proxy.mysql_port) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchall() == ((1,),)


def test_a_huge_statement_is_judged_while_other_sessions_are_served(
        guarded: ThreadedProxy, table: str) -> None:
    """A multi-megabyte INSERT takes the parser seconds: other sessions meanwhile get
    answers in milliseconds, and the statement itself is judged and runs."""
    import threading
    import time

    values = ",".join(f"({i}, '{'x' * 12}')" for i in range(100, 50000))
    done: list[float] = []

    def insert() -> None:
        with through(guarded.mysql_port) as conn, conn.cursor() as cur:
            started = time.monotonic()
            cur.execute(f"INSERT INTO {table} VALUES {values}")
            done.append(time.monotonic() - started)

    t = threading.Thread(target=insert)
    with through(guarded.mysql_port) as conn, conn.cursor() as cur:
        t.start()
        time.sleep(0.05)
        worst = 0.0
        while t.is_alive():
            started = time.monotonic()
            cur.execute("SELECT 1")
            worst = max(worst, time.monotonic() - started)
            time.sleep(0.02)
        cur.execute(f"SELECT count(*) FROM {table}")
        assert cur.fetchall() == ((3 + 49900,),)
    t.join()
    # judged on a worker thread the parse still shares the interpreter, so answers slow
    # down, but they come; on the event loop the other session waited for all of it
    assert done and worst < done[0] / 2, (worst, done)


@pytest.mark.parametrize("sql", [
    "SET SESSION TRANSACTION READ WRITE", "SET tx_read_only = 0",
    "SET @@session.max_statement_time = 0", "SET STATEMENT max_statement_time = 0 FOR "
    "SELECT 1", "START TRANSACTION READ WRITE",
])
def test_the_read_only_profile_cannot_be_undone(guarded: ThreadedProxy, sql: str) -> None:
    with through(guarded.mysql_port, "readonly") as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError) as ei:
            cur.execute(sql)
        assert ei.value.args[0] == 1227 and "read-only" in ei.value.args[1]
        cur.execute("SELECT @@tx_read_only, @@max_statement_time")
        assert cur.fetchall() == ((1, 30.0),)


def test_sessions_never_read_quotes_or_backslashes_differently(mysql_proxy_factory: Any
                                                               ) -> None:
    """A server whose global sql_mode has ANSI_QUOTES and NO_BACKSLASH_ESCAPES reads text
    differently from the guardrails: Wiregate takes those modes out of every session it opens,
    again after COM_RESET_CONNECTION, and refuses turning them back on."""
    import mysql.connector

    from tests.mycluster import MyClusterError, start_cluster

    try:
        server = start_cluster(["--sql-mode=ANSI_QUOTES,NO_BACKSLASH_ESCAPES,STRICT_ALL_TABLES"])
    except MyClusterError as exc:
        pytest.skip(f"throwaway MariaDB server not available: {exc}")
    try:
        server.sql("CREATE DATABASE lex")
        proxy = mysql_proxy_factory(
            guardrails={"policy_file": POLICY},
            upstream={"host": "127.0.0.1", "port": server.port, "user": "root",
                      "dbname": "lex", "profile": "agent-rw"})
        conn = mysql.connector.connect(host="127.0.0.1", port=proxy.mysql_port,
                                       user=CLIENT_USER, password=CLIENT_PASSWORD,
                                       database="test", use_pure=True)
        try:
            cur = conn.cursor()
            for _ in range(2):
                cur.execute("SELECT @@SESSION.sql_mode")
                assert cur.fetchall() == [("STRICT_ALL_TABLES",)]
                conn.cmd_reset_connection()
                cur = conn.cursor()
            for sql in ("SET sql_mode = 'ANSI_QUOTES'", "SET sql_mode = DEFAULT",
                        "SET STATEMENT sql_mode = 'NO_BACKSLASH_ESCAPES' FOR SELECT 1"):
                with pytest.raises(mysql.connector.Error) as ei:
                    cur.execute(sql)
                assert ei.value.errno == 1064 and "sql_mode" in str(ei.value)
        finally:
            conn.close()
    finally:
        server.stop()


def test_idle_sessions_are_closed_as_wait_timeout_closes_them(
        mysql_proxy_factory: Any, mysql: MySQLTarget) -> None:
    """idle_timeout closes an idle session as the server's wait_timeout does: without a
    packet, so the client reads a lost connection, not an answer out of sequence."""
    import time

    proxy = mysql_proxy_factory(idle_timeout=1.0)
    idle = through(proxy.mysql_port)
    time.sleep(2.4)
    with pytest.raises(pymysql.err.OperationalError) as ei:
        with idle.cursor() as cur:
            cur.execute("SELECT 1")
    assert ei.value.args[0] in (2006, 2013)
    with through(proxy.mysql_port) as fresh, fresh.cursor() as cur:   # the proxy serves on
        cur.execute("SELECT 3")
        assert cur.fetchall() == ((3,),)

"""MySQL/MariaDB clients through Wiregate, against the real MariaDB, as their users see them.

PyMySQL (text protocol), mysql-connector-python in pure Python and with its C extension
(binary protocol, prepared cursors), the ``mariadb`` command-line client (batch output, errors,
Ctrl-C), the authentication plugins each of them speaks, KILL, TLS on the listener, and
sysbench's OLTP read workloads. What comes back through the proxy is compared with what the
same client gets from the server directly.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pymysql.cursors
import pytest
from pymysql.constants import CLIENT

from proxy.certs import generate_ca, generate_server_cert, write_pair
from proxy.server import ThreadedProxy
from tests.conftest import CLIENT_PASSWORD, CLIENT_USER, MYSQL_USER_FORMS, ROOT, MySQLTarget

pytestmark = pytest.mark.mysql

MARIADB = shutil.which("mariadb") or shutil.which("mysql")
SYSBENCH = shutil.which("sysbench")
POLICY = str(ROOT / "examples" / "policy.toml")
TIMEOUT = 30
MiB = 1024 * 1024

ProxyFactory = Callable[..., ThreadedProxy]

# -- helpers ------------------------------------------------------------------------------

def direct(my: MySQLTarget, **kw: Any) -> Any:
    """PyMySQL straight to the server."""
    return pymysql.connect(host=my.host, port=my.port, user=my.user, password=my.password,
                           database=my.database, autocommit=True, ssl_disabled=True,
                           connect_timeout=10, **kw)


def via(port: int, user: str = CLIENT_USER, password: str = CLIENT_PASSWORD,
        database: str | None = "test", **kw: Any) -> Any:
    """PyMySQL through Wiregate; plaintext unless ``ssl`` is given."""
    if "ssl" not in kw:
        kw.setdefault("ssl_disabled", True)
    return pymysql.connect(host="127.0.0.1", port=port, user=user, password=password,
                           database=database, autocommit=True, connect_timeout=10,
                           read_timeout=TIMEOUT, **kw)


def fetch(conn: Any, sql: str, args: Any = None) -> tuple[tuple[Any, ...], Any]:
    """Rows and cursor description of one query."""
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall(), cur.description


def connector(port: int, pure: bool, user: str = CLIENT_USER, password: str = CLIENT_PASSWORD,
              **kw: Any) -> Any:
    """mysql-connector-python through Wiregate (or to ``port`` directly)."""
    if "ssl_ca" not in kw:
        kw.setdefault("ssl_disabled", True)
    conn = mysql.connector.connect(host="127.0.0.1", port=port, user=user, password=password,
                                   database="test", use_pure=pure, autocommit=True,
                                   connection_timeout=10, **kw)
    assert type(conn).__name__ == ("MySQLConnection" if pure else "CMySQLConnection")
    return conn


def connector_direct(my: MySQLTarget, pure: bool) -> Any:
    return connector(my.port, pure, user=my.user, password=my.password)


def errno_of(exc: pytest.ExceptionInfo[Any]) -> int:
    value = exc.value
    if isinstance(value, mysql.connector.Error):
        return int(value.errno or 0)
    return int(value.args[0])


def running(my: MySQLTarget, marker: str) -> list[int]:
    """Upstream thread ids whose current statement contains ``marker``."""
    with direct(my) as c:
        rows, _ = fetch(c, "SELECT ID FROM information_schema.PROCESSLIST "
                        "WHERE INFO LIKE %s AND ID <> CONNECTION_ID()", (f"%{marker}%",))
    return [int(r[0]) for r in rows]


def wait_running(my: MySQLTarget, marker: str, present: bool = True,
                 timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bool(running(my, marker)) == present:
            return
        time.sleep(0.05)
    raise AssertionError(f"statement {marker!r} {'never started' if present else 'still runs'}")


def sleeper(seconds: int = 30) -> tuple[str, str]:
    """A long SELECT SLEEP with a marker to find it in the processlist."""
    marker = f"wg-sleep-{uuid.uuid4().hex[:10]}"
    return f"SELECT SLEEP({seconds}), '{marker}'", marker


def mariadb_argv(port: int, *args: str, user: str = CLIENT_USER,
                 password: str = CLIENT_PASSWORD, tls: str | None = None,
                 database: str = "test") -> list[str]:
    if MARIADB is None:
        pytest.skip("the mariadb command-line client (MariaDB) is not installed")
    ssl_args = ["--skip-ssl"] if tls is None else ["--ssl", f"--ssl-ca={tls}"]
    pw = [f"-p{password}"] if password else []
    return [MARIADB, "--no-defaults", "--default-character-set=utf8mb4", "-h127.0.0.1",
            f"-P{port}", f"-u{user}", *pw, *ssl_args, *args, database]


CLI_ENV = {**os.environ, "LC_ALL": "C.UTF-8"}


def mariadb_cli(port: int, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """The mariadb CLI's exit code and output as text."""
    return subprocess.run(mariadb_argv(port, *args, **kw), capture_output=True, text=True,
                          timeout=TIMEOUT, env=CLI_ENV)


def mariadb_cli_bytes(port: int, *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    """The same, output as bytes (a blob column is not UTF-8)."""
    return subprocess.run(mariadb_argv(port, *args, **kw), capture_output=True,
                          timeout=TIMEOUT, env=CLI_ENV)


# -- fixtures -----------------------------------------------------------------------------

@pytest.fixture
def proxy(mysql_proxy_factory: ProxyFactory) -> ThreadedProxy:
    return mysql_proxy_factory()


@pytest.fixture
def port(proxy: ThreadedProxy) -> int:
    return proxy.mysql_port


@pytest.fixture
def scratch(mysql: MySQLTarget) -> Iterator[Callable[[str], str]]:
    """Scratch tables in database test: ``scratch("(a int)")`` creates one, returns its name."""
    made: list[str] = []

    def make(columns: str) -> str:
        name = f"wg_cli_{uuid.uuid4().hex[:10]}"
        with direct(mysql) as c, c.cursor() as cur:
            cur.execute(f"CREATE TABLE {name} {columns}")
        made.append(name)
        return name

    yield make
    with direct(mysql) as c, c.cursor() as cur:
        for name in made:
            cur.execute(f"DROP TABLE IF EXISTS {name}")


TYPES_COLUMNS = """(
    id int PRIMARY KEY, i int, bu bigint unsigned, si smallint, ti tinyint,
    d decimal(30,10), f float, dbl double,
    dt date, dtm datetime(6), tm time(3), ts timestamp(2) NULL, yr year,
    vc varchar(100) CHARACTER SET utf8mb4, ch char(5), tx text CHARACTER SET utf8mb4,
    b blob, vb varbinary(20), j json, e enum('small','medium','large'), st set('x','y','z'),
    bt bit(10), n int NULL
) DEFAULT CHARSET=utf8mb4"""
TYPES_NAMES = ["id", "i", "bu", "si", "ti", "d", "f", "dbl", "dt", "dtm", "tm", "ts", "yr", "vc",
               "ch", "tx", "b", "vb", "j", "e", "st", "bt", "n"]
TYPES_ROWS = [
    (1, -2147483648, 18446744073709551615, -32768, 127,
     Decimal("-12345678901234567890.0123456789"), 1.5, -2.5e-300,
     "1000-01-01", "2024-02-29 23:59:59.999999", "-838:59:59.5", "2038-01-19 03:14:07.99", 2155,
     "héllo 😀 ✓ 日本", "abc", "long text " * 200,
     bytes(range(256)), b"\x00\xff\x00", '{"k": [1, "ü", null], "emoji": "😀"}', "large", "x,z",
     b"\x02\xaa", None),
    (2, 0, 0, 0, 0, Decimal(0), -0.25, 1e300,
     "9999-12-31", "1970-01-01 00:00:01", "00:00:00", "1999-12-31 23:59:59", 1901,
     "", "", "", b"", b"", "[]", "small", "", b"\x00\x00", 7),
    (3, *([None] * 22)),
]
TYPES_SELECT = "SELECT * FROM {t} ORDER BY id"
LITERALS_SELECT = (
    "SELECT 1 AS one, -9223372036854775808 AS minbig, 18446744073709551615 AS maxu, "
    "1.50 AS dec_lit, 1e300 AS dbl, NULL AS nothing, CAST('2024-02-29' AS DATE) AS d, "
    "CAST('2024-02-29 01:02:03.456' AS DATETIME(3)) AS dtm, TIMEDIFF('10:00', '12:30:01') AS "
    "neg_time, X'00FF10' AS bin, 'é😀✓' AS txt, JSON_OBJECT('k', 'ü') AS js, b'101' AS bits, "
    "CAST(3.25 AS FLOAT) AS flt")


@pytest.fixture(scope="module")
def types_table(mysql: MySQLTarget) -> Iterator[str]:
    name = f"wg_types_{uuid.uuid4().hex[:10]}"
    with direct(mysql) as c, c.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} {TYPES_COLUMNS}")
        marks = ", ".join(["%s"] * len(TYPES_ROWS[0]))
        cur.executemany(f"INSERT INTO {name} VALUES ({marks})", TYPES_ROWS)
    yield name
    with direct(mysql) as c, c.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("mysql-tls")
    ca_cert, ca_key = generate_ca()
    cert, key = generate_server_cert(ca_cert, ca_key, ["127.0.0.1", "localhost"])
    ca_file, _ = write_pair(d, "ca", ca_cert, ca_key)
    cert_file, key_file = write_pair(d, "server", cert, key)
    return Pki(ca_file, cert_file, key_file)


def only(*plugins: str) -> dict[str, str]:
    return {p: MYSQL_USER_FORMS[p] for p in plugins}


# ==== PyMySQL ===============================================================================

def test_pymysql_native_login_and_what_the_session_is(port: int, mysql: MySQLTarget) -> None:
    with via(port) as c:
        rows, _ = fetch(c, "SELECT DATABASE(), CURRENT_USER() LIKE 'root@%', "
                        "@@character_set_client")
        assert rows == (("test", 1, "utf8mb4"),)
        # The greeting repeats the server's version (clients pick their defaults by it).
        with direct(mysql) as d:
            assert c.get_server_info() == d.get_server_info()
        # The connection id is Wiregate's own (KILL takes it), not the upstream thread's.
        assert c.thread_id() > 0


def test_pymysql_wrong_password_and_unknown_database(port: int) -> None:
    with pytest.raises(pymysql.err.OperationalError) as wrong:
        via(port, password="not-the-password")
    assert errno_of(wrong) == 1045
    assert "Access denied for user 'demo'" in str(wrong.value)
    with pytest.raises(pymysql.err.OperationalError) as unknown_user:
        via(port, user="nobody")
    assert errno_of(unknown_user) == 1045
    with pytest.raises(pymysql.err.OperationalError) as bad_db:
        via(port, database="wg_no_such_db")
    assert errno_of(bad_db) == 1049
    assert "Unknown database 'wg_no_such_db'" in str(bad_db.value)


@pytest.mark.parametrize("query", ["table", "literals"])
def test_pymysql_text_protocol_types_equal_direct(port: int, mysql: MySQLTarget,
                                                  types_table: str, query: str) -> None:
    sql = TYPES_SELECT.format(t=types_table) if query == "table" else LITERALS_SELECT
    with via(port) as c:
        got = fetch(c, sql)
    with direct(mysql) as c:
        want = fetch(c, sql)
    assert got == want
    if query == "table":
        rows = got[0]
        assert len(rows) == 3
        assert rows[0][2] == 18446744073709551615
        assert rows[0][13] == "héllo 😀 ✓ 日本"
        assert rows[0][16] == bytes(range(256))
        assert rows[2][1:] == (None,) * 22


def test_pymysql_multi_statements_return_each_result_set(port: int) -> None:
    with via(port, client_flag=CLIENT.MULTI_STATEMENTS) as c, c.cursor() as cur:
        cur.execute("SELECT 1 AS a; SELECT 2 AS b, 'two' AS c")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.fetchall() == ((2, "two"),)
        assert [d[0] for d in cur.description] == ["b", "c"]
        assert not cur.nextset()
        # The session is in step afterwards.
        cur.execute("SELECT 3")
        assert cur.fetchall() == ((3,),)


def test_pymysql_server_error_leaves_the_connection_usable(port: int) -> None:
    with via(port) as c, c.cursor() as cur:
        with pytest.raises(pymysql.err.ProgrammingError) as exc:
            cur.execute("SELECT * FROM wg_no_such_table_anywhere")
        assert errno_of(exc) == 1146
        assert "wg_no_such_table_anywhere' doesn't exist" in str(exc.value)
        cur.execute("SELECT 'still here'")
        assert cur.fetchall() == (("still here",),)


def test_pymysql_select_db_and_ping(port: int) -> None:
    with via(port) as c:
        c.select_db("information_schema")               # COM_INIT_DB
        assert fetch(c, "SELECT DATABASE()")[0] == (("information_schema",),)
        with pytest.raises(pymysql.err.OperationalError) as exc:
            c.select_db("wg_no_such_db")
        assert errno_of(exc) == 1049
        c.ping(reconnect=False)                         # COM_PING
        c.select_db("test")
        assert fetch(c, "SELECT DATABASE()")[0] == (("test",),)


@pytest.fixture
def big_packets(mysql: MySQLTarget) -> Iterator[None]:
    """The server's max_allowed_packet raised to 64 MiB for the test, then put back."""
    with direct(mysql) as c:
        before = int(fetch(c, "SELECT @@GLOBAL.max_allowed_packet")[0][0][0])
        if before < 64 * MiB:
            fetch(c, f"SET GLOBAL max_allowed_packet = {64 * MiB}")
    yield
    if before < 64 * MiB:
        with direct(mysql) as c:
            fetch(c, f"SET GLOBAL max_allowed_packet = {before}")


def test_a_20_mb_blob_round_trip_in_split_packets(big_packets: None, mysql_proxy_factory:
                                                  ProxyFactory, mysql: MySQLTarget,
                                                  scratch: Callable[[str], str]) -> None:
    # 20 MB is more than one packet (16 MiB - 1) each way: the INSERT command and the row.
    table = scratch("(id int PRIMARY KEY, b longblob)")
    blob = os.urandom(20 * 1000 * 1000)
    port = mysql_proxy_factory().mysql_port           # upstream sessions after the SET GLOBAL
    with via(port, max_allowed_packet=64 * MiB) as c, c.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (1, %s)", (blob,))
        cur.execute(f"SELECT b, LENGTH(b) FROM {table} WHERE id = 1")
        row = cur.fetchone()
        assert row[1] == len(blob)
        assert row[0] == blob
        cur.execute("SELECT 'after'")
        assert cur.fetchall() == (("after",),)
    with direct(mysql) as c:
        assert fetch(c, f"SELECT SHA2(b, 256) FROM {table}")[0] == (
            (hashlib.sha256(blob).hexdigest(),),)
    # The binary protocol: the same row as a prepared statement's result. (The C extension:
    # the pure-Python connector 9.x cuts such a row at 16 MiB itself, from MariaDB directly too.)
    conn = connector(port, False)
    try:
        cur = conn.cursor(prepared=True)
        cur.execute(f"SELECT b FROM {table} WHERE id = ?", (1,))
        assert bytes(cur.fetchall()[0][0]) == blob
    finally:
        conn.close()


def test_a_command_over_max_packet_size_is_an_error_the_client_can_read(
        mysql_proxy_factory: ProxyFactory) -> None:
    port = mysql_proxy_factory(max_packet_size=MiB).mysql_port
    with via(port) as c, c.cursor() as cur:
        with pytest.raises(pymysql.MySQLError) as exc:
            cur.execute("SELECT LENGTH(%s)", ("x" * (2 * MiB),))
    assert "max_packet_size" in str(exc.value)


def test_unbuffered_cursor_streams_100k_rows(port: int) -> None:
    with via(port, cursorclass=pymysql.cursors.SSCursor) as c, c.cursor() as cur:
        cur.execute("SELECT seq FROM seq_1_to_100000")
        count = total = 0
        for (seq,) in cur:
            count += 1
            total += seq
        assert (count, total) == (100_000, 100_000 * 100_001 // 2)
        cur.execute("SELECT 'next'")
        assert cur.fetchall() == [("next",)]


def test_unbuffered_cursor_closed_half_way_keeps_the_session(port: int) -> None:
    with via(port, cursorclass=pymysql.cursors.SSCursor) as c:
        with c.cursor() as cur:
            cur.execute("SELECT seq FROM seq_1_to_100000")
            assert cur.fetchmany(10) == [(i,) for i in range(1, 11)]
        # Closing the cursor reads the remaining rows off the wire.
        with c.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM seq_1_to_1000")
            assert cur.fetchall() == [(1000,)]


@pytest.mark.parametrize("guardrails", [False, True], ids=["pass-through", "agent-rw"])
def test_load_data_local_infile_is_refused(mysql_proxy_factory: ProxyFactory, guardrails: bool,
                                           scratch: Callable[[str], str], tmp_path: Path,
                                           mysql: MySQLTarget) -> None:
    table = scratch("(a int)")
    data = tmp_path / "rows.csv"
    data.write_text("1\n2\n3\n")
    listener: dict[str, Any] = {}
    if guardrails:
        listener = {"guardrails": {"policy_file": POLICY}, "upstream": {"profile": "agent-rw"}}
    port = mysql_proxy_factory(**listener).mysql_port
    with via(port, local_infile=True) as c, c.cursor() as cur:
        with pytest.raises(pymysql.MySQLError) as exc:
            cur.execute(f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE {table}")
        if guardrails:
            assert errno_of(exc) == 1227
            assert "wiregate: blocked by rule no-files" in str(exc.value)
        else:
            # Wiregate offers the server no LOCAL INFILE: MariaDB's own refusal (4166;
            # MySQL says 1148).
            assert errno_of(exc) in (1148, 4166), exc.value
            assert "local infile" in str(exc.value).lower()
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        assert cur.fetchall() == ((0,),)
    with direct(mysql) as c:
        assert fetch(c, f"SELECT COUNT(*) FROM {table}")[0] == ((0,),)


# -- TLS on the listener --------------------------------------------------------------------

@pytest.fixture
def tls_port(mysql_proxy_factory: ProxyFactory, pki: Pki) -> int:
    return mysql_proxy_factory(tls_cert_file=str(pki.cert),
                               tls_key_file=str(pki.key)).mysql_port


def test_pymysql_over_tls_to_wiregate(tls_port: int, pki: Pki) -> None:
    with via(tls_port, ssl={"ca": str(pki.ca)}) as c:     # verifies the certificate and name
        assert isinstance(c._sock, ssl.SSLSocket)
        assert c._sock.version() in ("TLSv1.2", "TLSv1.3")
        assert fetch(c, "SELECT 'secret'")[0] == (("secret",),)
        # Ssl_cipher is the upstream session's: this route's upstream is tls = "disable".
        assert fetch(c, "SHOW STATUS LIKE 'Ssl_cipher'")[0] == (("Ssl_cipher", ""),)
    with via(tls_port) as c:                             # ssl_disabled: plaintext still allowed
        assert not isinstance(c._sock, ssl.SSLSocket)
        assert fetch(c, "SELECT 1")[0] == ((1,),)


@pytest.mark.parametrize("pure", [True, False], ids=["pure", "cext"])
def test_connector_over_tls_to_wiregate(tls_port: int, pki: Pki, pure: bool) -> None:
    conn = connector(tls_port, pure, ssl_ca=str(pki.ca), ssl_verify_cert=True)
    try:
        # The C extension does not keep is_secure up to date; libmysqlclient knows.
        assert conn.is_secure if pure else conn._cmysql.get_ssl_cipher()
        cur = conn.cursor()
        cur.execute("SELECT 'secret'")
        assert cur.fetchall() == [("secret",)]
    finally:
        conn.close()


@pytest.fixture
def tls_required_port(mysql_proxy_factory: ProxyFactory, pki: Pki) -> int:
    return mysql_proxy_factory(tls_cert_file=str(pki.cert), tls_key_file=str(pki.key),
                               require_tls=True).mysql_port


def test_require_tls_refuses_plaintext_clients(tls_required_port: int) -> None:
    with pytest.raises(pymysql.err.OperationalError) as exc:
        via(tls_required_port)
    assert errno_of(exc) == 1045
    assert "TLS is required" in str(exc.value)
    cp = mariadb_cli(tls_required_port, "-e", "SELECT 1")     # --skip-ssl
    assert cp.returncode == 1
    assert "ERROR 1045 (28000)" in cp.stderr and "TLS is required" in cp.stderr


def test_require_tls_lets_tls_clients_in(tls_required_port: int, pki: Pki) -> None:
    with via(tls_required_port, ssl={"ca": str(pki.ca)}) as c:
        assert fetch(c, "SELECT 1")[0] == ((1,),)
    cp = mariadb_cli(tls_required_port, "-e", "SELECT 'tls ok'", tls=str(pki.ca))
    assert (cp.returncode, cp.stdout) == (0, "tls ok\ntls ok\n"), cp.stderr


def test_ssl_request_and_client_hello_in_one_segment(tls_port: int) -> None:
    with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as s:
        header = s.recv(4, socket.MSG_WAITALL)
        s.recv(int.from_bytes(header[:3], "little"), socket.MSG_WAITALL)   # the greeting
        flags = 0x800 | 0x200 | 0x8000 | 0x80000   # SSL, PROTOCOL_41, SECURE_CONN, PLUGIN_AUTH
        request = struct.pack("<IIB23s", flags, 16 * MiB, 45, b"")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        s.sendall(len(request).to_bytes(3, "little") + b"\x01" + request + outgoing.read())
        answer = s.recv(5, socket.MSG_WAITALL)
    assert answer[:1] == b"\x16", answer     # a TLS handshake record, not a MySQL ERR packet


# ==== mysql-connector-python ================================================================

@pytest.fixture(params=[True, False], ids=["pure", "cext"])
def pure(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def prepared_rows(conn: Any, sql: str, params: tuple[Any, ...]) -> tuple[list[Any], Any]:
    cur = conn.cursor(prepared=True)
    try:
        cur.execute(sql, params)
        return cur.fetchall(), cur.description
    finally:
        cur.close()


def stmt_status(conn: Any) -> tuple[int, int]:
    cur = conn.cursor()
    cur.execute("SHOW SESSION STATUS WHERE Variable_name IN "
                "('Com_stmt_prepare', 'Com_stmt_execute')")
    got = dict(cur.fetchall())
    cur.close()
    return int(got["Com_stmt_prepare"]), int(got["Com_stmt_execute"])


def test_connector_login(port: int, pure: bool) -> None:
    conn = connector(port, pure)
    try:
        assert conn.is_connected()
        cur = conn.cursor()
        cur.execute("SELECT DATABASE(), 'é😀'")
        assert cur.fetchall() == [("test", "é😀")]
    finally:
        conn.close()
    with pytest.raises(mysql.connector.Error) as exc:
        connector(port, pure, password="wrong")
    assert errno_of(exc) == 1045


@pytest.mark.parametrize("query", ["table", "params"])
def test_connector_prepared_types_equal_direct(port: int, mysql: MySQLTarget, types_table: str,
                                               pure: bool, query: str) -> None:
    params: tuple[Any, ...]
    if query == "table":
        # Pure Python without the YEAR column: connector 9.x misreads a binary YEAR (and
        # every column after it), from MariaDB directly as well.
        columns = ", ".join(n for n in TYPES_NAMES if n != "yr" or not pure)
        sql, params = f"SELECT {columns} FROM {types_table} WHERE id >= ? ORDER BY id", (0,)
    else:
        sql = ("SELECT ? AS i, ? AS s, ? AS f, ? AS b, ? AS d, ? AS dt, ? AS n, "
               "? + 1 AS big, CAST(? AS DATE) AS day")
        params = (42, "é😀✓", 1.25, b"\x00\xff", Decimal("1.10"),
                  datetime.datetime(2024, 2, 29, 1, 2, 3, 456000), None,
                  9223372036854775806, "2024-02-29")
    got_conn = connector(port, pure)
    want_conn = connector_direct(mysql, pure)
    try:
        got = prepared_rows(got_conn, sql, params)
        want = prepared_rows(want_conn, sql, params)
    finally:
        got_conn.close()
        want_conn.close()
    assert got == want
    assert len(got[0]) == (3 if query == "table" else 1)


def test_connector_one_prepared_statement_many_executions(port: int, types_table: str,
                                                          pure: bool) -> None:
    conn = connector(port, pure)
    try:
        prepares, executes = stmt_status(conn)
        cur = conn.cursor(prepared=True)
        got = []
        # The same str object each time: the connector re-prepares when `operation is not`
        # the previous one.
        sql = f"SELECT id, vc, d FROM {types_table} WHERE id = ?"
        for wanted in (1, 2, 3, 4, 2, None):
            cur.execute(sql, (wanted,))
            got.append(cur.fetchall())
        cur.close()
        assert [[tuple(r)[0] for r in rows] for rows in got] == [[1], [2], [3], [], [2], []]
        assert got[0][0][1] == "héllo 😀 ✓ 日本"
        assert got[1][0][2] == Decimal("0E-10")
        after_prepares, after_executes = stmt_status(conn)
        assert after_prepares - prepares == 1     # prepared once, on the server
        assert after_executes - executes == 6
    finally:
        conn.close()


def test_connector_null_parameters(port: int, types_table: str, pure: bool) -> None:
    conn = connector(port, pure)
    try:
        rows, _ = prepared_rows(conn, "SELECT ? IS NULL, COALESCE(?, 'dflt'), ? <=> NULL",
                                (None, None, None))
        assert [tuple(r) for r in rows] == [(1, "dflt", 1)]
        rows, _ = prepared_rows(conn, f"SELECT id FROM {types_table} WHERE n <=> ? ORDER BY id",
                                (None,))
        assert [tuple(r) for r in rows] == [(1,), (3,)]
    finally:
        conn.close()


def test_connector_reset_connection_statistics_and_ping(port: int, pure: bool) -> None:
    conn = connector(port, pure)
    try:
        cur = conn.cursor()
        cur.execute("SET @wg_var = 5")
        conn.cmd_reset_connection()
        cur = conn.cursor()
        cur.execute("SELECT @wg_var, DATABASE()")
        assert cur.fetchall() == [(None, "test")]     # the variable went with the reset
        stats = conn.cmd_statistics()
        assert int(stats["Uptime"]) > 0 and "Threads" in stats
        conn.ping(reconnect=False)
        assert conn.is_connected()
    finally:
        conn.close()


def test_connector_reset_connection_keeps_the_profile(mysql_proxy_factory: ProxyFactory,
                                                      pure: bool) -> None:
    # agent-readonly: the upstream session is read-only with a 30 s statement time limit;
    # COM_RESET_CONNECTION resets session variables, Wiregate sets them again.
    port = mysql_proxy_factory(guardrails={"policy_file": POLICY},
                               upstream={"profile": "agent-readonly"}).mysql_port
    conn = connector(port, pure)
    try:
        for _ in range(2):
            cur = conn.cursor()
            cur.execute("SELECT @@tx_read_only, @@max_statement_time")
            assert [tuple(r) for r in cur.fetchall()] == [(1, 30.0)]
            cur.close()
            conn.cmd_reset_connection()
    finally:
        conn.close()


def test_connector_change_user_is_refused_and_the_session_goes_on(port: int,
                                                                  pure: bool) -> None:
    conn = connector(port, pure)
    try:
        cur = conn.cursor()
        cur.execute("SELECT CONNECTION_ID(), CURRENT_USER()")
        before = cur.fetchall()
        cur.close()
        with pytest.raises(mysql.connector.Error) as exc:
            conn.cmd_change_user(username=CLIENT_USER, password=CLIENT_PASSWORD,
                                 database="test")
        assert errno_of(exc) == 1227
        assert "COM_CHANGE_USER is not supported" in str(exc.value)
        # Same upstream session, same login.
        assert conn.is_connected()
        cur = conn.cursor()
        cur.execute("SELECT CONNECTION_ID(), CURRENT_USER()")
        assert cur.fetchall() == before
    finally:
        conn.close()


def test_connector_multi_statement_results(port: int, pure: bool) -> None:
    conn = connector(port, pure)
    try:
        cur = conn.cursor()
        sql = "SELECT 1 AS a; SELECT 2 AS b, 'two' AS c; DO 0"
        results: list[Any] = []
        if "multi" in cur.execute.__code__.co_varnames:   # connector < 9.2
            for res in cur.execute(sql, multi=True):  # type: ignore[call-arg, union-attr]
                results.append(res.fetchall() if res.with_rows else res.rowcount)
        else:
            cur.execute(sql)
            while True:
                results.append(cur.fetchall() if cur.with_rows else cur.rowcount)
                if not cur.nextset():
                    break
        assert results[:2] == [[(1,)], [(2, "two")]]
        assert len(results) == 3
        cur.close()
        cur = conn.cursor()
        cur.execute("SELECT 'in step'")
        assert cur.fetchall() == [("in step",)]
    finally:
        conn.close()


# ==== authentication plugins ==================================================================

@pytest.fixture
def auth_port(mysql_proxy_factory: ProxyFactory, pki: Pki) -> int:
    users = {CLIENT_USER: dict(MYSQL_USER_FORMS), "ed": only("client_ed25519"),
             "sha2": only("caching_sha2_password"), "native": only("mysql_native_password")}
    return mysql_proxy_factory(users=users, tls_cert_file=str(pki.cert),
                               tls_key_file=str(pki.key)).mysql_port


def test_ed25519_only_user_with_the_mariadb_cli(auth_port: int) -> None:
    # The greeting offers mysql_native_password; Wiregate switches the client to
    # client_ed25519, the only form this user has.
    cp = mariadb_cli(auth_port, "-e", "SELECT 'ed25519 ok'", user="ed")
    assert (cp.returncode, cp.stdout, cp.stderr) == (0, "ed25519 ok\ned25519 ok\n", "")
    cp = mariadb_cli(auth_port, "-e", "SELECT 1", user="ed", password="wrong")
    assert cp.returncode == 1
    assert "ERROR 1045 (28000)" in cp.stderr and "Access denied for user 'ed'" in cp.stderr


@pytest.mark.parametrize(("pure", "asked"), [(True, True), (True, False), (False, False)],
                         ids=["pure-asked", "pure-switched", "cext-switched"])
def test_caching_sha2_only_user_with_connector_fast_path(auth_port: int, pure: bool,
                                                         asked: bool) -> None:
    # Asked: the client's first answer is already a caching_sha2 scramble of the greeting's
    # nonce. Switched: it answers the greeting's mysql_native_password and Wiregate switches
    # it. (The C extension asked for caching_sha2 up front: see
    # test_a_client_naming_the_users_plugin_up_front.)
    kw: dict[str, Any] = {"auth_plugin": "caching_sha2_password"} if asked else {}
    conn = connector(auth_port, pure, user="sha2", **kw)
    try:
        cur = conn.cursor()
        cur.execute("SELECT 'sha2 ok'")
        assert cur.fetchall() == [("sha2 ok",)]
    finally:
        conn.close()
    with pytest.raises(mysql.connector.Error) as exc:
        connector(auth_port, pure, user="sha2", password="wrong", **kw)
    assert errno_of(exc) == 1045


def test_caching_sha2_only_user_with_pymysql(auth_port: int) -> None:
    # PyMySQL answers the greeting with a native scramble; Wiregate switches it to
    # caching_sha2_password, whose fast path succeeds (the stored form is the "cache").
    with via(auth_port, user="sha2") as c:
        assert fetch(c, "SELECT 'sha2 ok'")[0] == (("sha2 ok",),)
    with pytest.raises(pymysql.err.OperationalError) as exc:
        via(auth_port, user="sha2", password="wrong")
    assert errno_of(exc) == 1045


@pytest.mark.parametrize("client", ["mariadb-ed25519", "mariadb-caching-sha2", "connector-cext"])
def test_a_client_naming_the_users_plugin_up_front(mysql_proxy_factory: ProxyFactory,
                                                   client: str) -> None:
    users = {CLIENT_USER: dict(MYSQL_USER_FORMS), "ed": only("client_ed25519"),
             "sha2": only("caching_sha2_password")}
    port = mysql_proxy_factory(users=users).mysql_port
    if client == "connector-cext":
        # Not ssl_disabled: the C extension refuses that with caching_sha2_password before it
        # connects (against MariaDB too). Wiregate offers no TLS here, so plaintext it is.
        conn = mysql.connector.connect(host="127.0.0.1", port=port, user="sha2",
                                       password=CLIENT_PASSWORD, database="test",
                                       use_pure=False, auth_plugin="caching_sha2_password",
                                       connection_timeout=10)
        try:
            cur = conn.cursor()
            cur.execute("SELECT 'up front ok'")
            assert cur.fetchall() == [("up front ok",)]
        finally:
            conn.close()
        return
    user, plugin = ("ed", "client_ed25519") if client == "mariadb-ed25519" else \
        ("sha2", "caching_sha2_password")
    cp = mariadb_cli(port, f"--default-auth={plugin}", "-e", "SELECT 'up front ok'", user=user)
    # Today: "ERROR 2012 (HY000): Error in server handshake".
    assert (cp.returncode, cp.stdout, cp.stderr) == (0, "up front ok\nup front ok\n", "")


@pytest.mark.parametrize("channel", ["tls", "rsa"])
def test_caching_sha2_full_authentication(auth_port: int, pki: Pki, channel: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A client whose fast path misses (as against a MySQL server with a cold cache) sends an
    # empty scramble: Wiregate asks for full authentication. Over TLS PyMySQL sends the
    # password; in plaintext it asks for Wiregate's RSA public key and encrypts it.
    import pymysql._auth

    monkeypatch.setattr(pymysql._auth, "scramble_caching_sha2", lambda password, salt: b"")
    kw: dict[str, Any] = {"ssl": {"ca": str(pki.ca)}} if channel == "tls" else {}
    with via(auth_port, user="sha2", **kw) as c:
        assert isinstance(c._sock, ssl.SSLSocket) == (channel == "tls")
        if channel == "rsa":
            assert c.server_public_key.startswith(b"-----BEGIN PUBLIC KEY-----")
        assert fetch(c, "SELECT 'full auth ok'")[0] == (("full auth ok",),)
    with pytest.raises(pymysql.err.OperationalError) as exc:
        via(auth_port, user="sha2", password="wrong", **kw)
    assert errno_of(exc) == 1045


@pytest.mark.parametrize("user", ["native", "ed", "sha2"])
def test_clear_password_over_tls_with_the_mariadb_cli(auth_port: int, pki: Pki,
                                                      user: str) -> None:
    # mysql_clear_password is accepted over TLS only, checked against whichever stored
    # form the user has.
    args = ("--default-auth=mysql_clear_password", "-e", "SELECT 'clear ok'")
    cp = mariadb_cli(auth_port, *args, user=user, tls=str(pki.ca))
    assert (cp.returncode, cp.stdout) == (0, "clear ok\nclear ok\n"), cp.stderr
    cp = mariadb_cli(auth_port, *args, user=user, password="wrong", tls=str(pki.ca))
    assert cp.returncode == 1 and "ERROR 1045 (28000)" in cp.stderr


# ==== the mariadb command-line client =========================================================

def as_root(my: MySQLTarget) -> dict[str, Any]:
    return {"user": my.user, "password": my.password, "database": my.database}


def test_cli_batch_output_equals_direct(port: int, mysql: MySQLTarget, types_table: str) -> None:
    script = (f"SELECT * FROM {types_table} ORDER BY id; {LITERALS_SELECT}; "
              "USE information_schema; SELECT DATABASE(); "
              f"SHOW COLUMNS FROM test.{types_table}; SELECT seq FROM test.seq_1_to_500")
    got = mariadb_cli_bytes(port, "--batch", "-e", script)
    want = mariadb_cli_bytes(mysql.port, "--batch", "-e", script, **as_root(mysql))
    assert got.returncode == 0, got.stderr
    assert (got.stdout, got.stderr) == (want.stdout, want.stderr)
    assert "héllo 😀 ✓ 日本".encode() in got.stdout
    assert b"\ninformation_schema\n" in got.stdout
    assert got.stdout.endswith(b"\n499\n500\n")


def test_cli_error_exit_code_and_message(port: int, mysql: MySQLTarget) -> None:
    script = "SELECT 'before'; SELECT * FROM wg_no_such_table_cli; SELECT 'never'"
    got = mariadb_cli(port, "--batch", "-e", script)
    want = mariadb_cli(mysql.port, "--batch", "-e", script, **as_root(mysql))
    assert got.returncode == want.returncode == 1
    assert got.stdout == want.stdout == "before\nbefore\n"
    assert got.stderr == want.stderr
    assert "ERROR 1146 (42S02) at line 1: Table 'test.wg_no_such_table_cli' doesn't exist" \
        in got.stderr


def test_cli_ctrl_c_kills_the_running_query(port: int, mysql: MySQLTarget) -> None:
    # On SIGINT the CLI opens a second connection and sends KILL QUERY with the connection id
    # of Wiregate's greeting; Wiregate turns it into a KILL of the upstream thread.
    sql, marker = sleeper()
    proc = subprocess.Popen(mariadb_argv(port, "-e", sql), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=CLI_ENV)
    try:
        wait_running(mysql, marker)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
        assert time.monotonic() - sent < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert "Ctrl-C -- query killed" in out
    assert "ERROR 1317 (70100)" in err and "Query execution was interrupted" in err
    wait_running(mysql, marker, present=False, timeout=5)


# ==== KILL ===================================================================================

@pytest.fixture
def kill_port(mysql_proxy_factory: ProxyFactory) -> int:
    users = {CLIENT_USER: dict(MYSQL_USER_FORMS), "other": dict(MYSQL_USER_FORMS)}
    return mysql_proxy_factory(users=users).mysql_port


def test_kill_query_from_a_second_connection(kill_port: int, mysql: MySQLTarget) -> None:
    sql, marker = sleeper()
    with via(kill_port) as victim, via(kill_port) as killer, ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        future = pool.submit(fetch, victim, sql)
        wait_running(mysql, marker)
        # The id the client knows is the one of Wiregate's greeting.
        fetch(killer, f"KILL QUERY {victim.thread_id()}")
        with pytest.raises(pymysql.err.OperationalError) as exc:
            future.result(timeout=10)
        assert errno_of(exc) == 1317
        assert time.monotonic() - started < 10
        # KILL QUERY leaves the connection open.
        assert fetch(victim, "SELECT 'alive'")[0] == (("alive",),)
    assert not running(mysql, marker)


def test_kill_connection_closes_the_other_session(kill_port: int, mysql: MySQLTarget) -> None:
    with via(kill_port) as victim, via(kill_port) as killer:
        upstream_id = fetch(victim, "SELECT CONNECTION_ID()")[0][0][0]
        killer.kill(victim.thread_id())           # COM_PROCESS_KILL
        with pytest.raises(pymysql.err.OperationalError) as exc:
            fetch(victim, "SELECT 1")
        assert errno_of(exc) in (1927, 2006, 2013), exc.value
        assert fetch(killer, "SELECT 'killer alive'")[0] == (("killer alive",),)
    deadline = time.monotonic() + 5
    with direct(mysql) as c:
        while fetch(c, f"SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = {upstream_id}"
                    )[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fetch(c, "SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = "
                     f"{upstream_id}")[0] == ()


def test_kill_of_another_logins_session_is_refused(kill_port: int, mysql: MySQLTarget) -> None:
    sql, marker = sleeper(2)
    with via(kill_port) as victim, via(kill_port, user="other") as stranger, \
            ThreadPoolExecutor(1) as pool:
        future = pool.submit(fetch, victim, sql)
        wait_running(mysql, marker)
        with pytest.raises(pymysql.MySQLError) as exc:
            fetch(stranger, f"KILL QUERY {victim.thread_id()}")
        assert errno_of(exc) == 1095
        assert f"You are not owner of thread {victim.thread_id()}" in str(exc.value)
        with pytest.raises(pymysql.MySQLError) as exc:
            stranger.kill(victim.thread_id())     # COM_PROCESS_KILL
        assert errno_of(exc) == 1095
        assert future.result(timeout=10)[0][0][0] == 0     # SLEEP ran to its end
        assert fetch(stranger, "SELECT 1")[0] == ((1,),)


def test_kill_unknown_id_and_other_kill_forms(kill_port: int) -> None:
    with via(kill_port) as c:
        with pytest.raises(pymysql.MySQLError) as exc:
            fetch(c, "KILL 999999")
        assert errno_of(exc) == 1094
        assert "Unknown thread id: 999999" in str(exc.value)
        for sql in ("KILL USER root", "KILL QUERY ID 5", "KILL CONNECTION USER 'demo'"):
            with pytest.raises(pymysql.MySQLError) as exc:
                fetch(c, sql)
            assert errno_of(exc) == 1227, sql
            assert "wiregate: blocked by rule wiregate.kill" in str(exc.value)
        assert fetch(c, "SELECT 'fine'")[0] == (("fine",),)


# ==== sysbench ===============================================================================

@pytest.fixture(scope="module")
def bench_db(mysql: MySQLTarget) -> Iterator[str]:
    if SYSBENCH is None:
        pytest.skip("sysbench not installed (make test-deps; apt-get install sysbench)")
    name = f"wg_sysbench_{uuid.uuid4().hex[:8]}"
    with direct(mysql) as c:
        fetch(c, f"CREATE DATABASE {name}")
    try:
        cp = subprocess.run([SYSBENCH, "oltp_read_only", *SYSBENCH_TABLES, "--db-driver=mysql",
                             f"--mysql-host={mysql.host}", f"--mysql-port={mysql.port}",
                             f"--mysql-user={mysql.user}", f"--mysql-password={mysql.password}",
                             f"--mysql-db={name}", "prepare"],
                            capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, (cp.stdout, cp.stderr)
        yield name
    finally:
        with direct(mysql) as c:
            fetch(c, f"DROP DATABASE IF EXISTS {name}")


SYSBENCH_TABLES = ["--tables=1", "--table-size=1000"]


@pytest.mark.parametrize("profile", [None, "agent-readonly"], ids=["pass-through", "readonly"])
@pytest.mark.parametrize("workload", ["oltp_point_select", "oltp_read_only"])
def test_sysbench_read_workloads(bench_db: str, mysql_proxy_factory: ProxyFactory,
                                 profile: str | None, workload: str) -> None:
    listener: dict[str, Any] = {"upstream": {"dbname": bench_db}}
    if profile is not None:
        listener = {"upstream": {"dbname": bench_db, "profile": profile},
                    "guardrails": {"policy_file": POLICY}}
    port = mysql_proxy_factory(**listener).mysql_port
    assert SYSBENCH is not None
    cp = subprocess.run([SYSBENCH, workload, *SYSBENCH_TABLES, "--db-driver=mysql",
                         "--mysql-host=127.0.0.1", f"--mysql-port={port}",
                         f"--mysql-user={CLIENT_USER}", f"--mysql-password={CLIENT_PASSWORD}",
                         "--mysql-db=test", "--mysql-ssl=off", "--threads=4", "--time=3",
                         "run"], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    transactions = re.search(r"transactions:\s+(\d+)", cp.stdout)
    errors = re.search(r"ignored errors:\s+(\d+)", cp.stdout)
    assert transactions and errors, cp.stdout
    assert int(transactions.group(1)) > 0
    assert errors.group(1) == "0", cp.stdout
    assert "FATAL" not in cp.stdout + cp.stderr

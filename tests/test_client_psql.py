"""psql through Wiregate, as a person at a terminal uses it.

Every output is compared with what the same psql command prints against the server directly:
meta-commands, COPY in and out (text, csv, binary), Ctrl-C cancel and recovery after an error.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from proxy.server import ThreadedProxy
from tests.conftest import CLIENT_PASSWORD, CLIENT_USER, PgTarget, ProxyProcess, pg_target

pytestmark = pytest.mark.postgres

PSQL = shutil.which("psql")
TIMEOUT = 30
ROWS = 3000


def _env(password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = password
    env["PGCONNECT_TIMEOUT"] = "10"
    env["LC_ALL"] = "C"
    return env


class Psql:
    """Runs psql against one conninfo string."""

    def __init__(self, conninfo: str, password: str) -> None:
        self.conninfo = conninfo
        self.env = _env(password)

    def argv(self, *args: str) -> list[str]:
        assert PSQL is not None
        return [PSQL, "-X", "-d", self.conninfo, *args]

    def run(self, *args: str, input: bytes | None = None, cwd: Path | None = None,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
        cp = subprocess.run(self.argv(*args), input=input, capture_output=True, env=self.env,
                            timeout=TIMEOUT, cwd=cwd)
        if check:
            assert cp.returncode == 0, (cp.returncode, cp.stdout, cp.stderr)
        return cp


def _client_conninfo(port: int) -> str:
    """The client conninfo without the password: psql takes it from PGPASSWORD."""
    return f"host=127.0.0.1 port={port} user={CLIENT_USER} dbname=test sslmode=disable"


@pytest.fixture(scope="module")
def psql_bin() -> str:
    if PSQL is None:
        pytest.skip("psql not installed")
    return PSQL


@pytest.fixture
def via(psql_bin: str, proxy: ThreadedProxy) -> Psql:
    return Psql(_client_conninfo(proxy.port), CLIENT_PASSWORD)


@pytest.fixture
def direct(psql_bin: str, pg: PgTarget) -> Psql:
    return Psql(f"host={pg.host} port={pg.port} user={pg.user} dbname={pg.dbname} "
                "sslmode=disable", pg.password)


def _server(sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(pg_target().dsn(), autocommit=True) as conn:
        cur = conn.execute(sql, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


@pytest.fixture
def table(pg: PgTarget) -> Iterator[str]:
    name = f"wg_psql_{uuid.uuid4().hex[:10]}"
    _server(f"CREATE TABLE {name} (id int primary key, label text, price numeric(12,2), "
            "seen timestamptz, tags text[], payload jsonb, blob bytea)")
    _server(f"COMMENT ON TABLE {name} IS 'psql client check'")
    yield name
    _server(f"DROP TABLE IF EXISTS {name}")


def _copy_text_rows(n: int) -> bytes:
    """COPY text-format input exercising escapes, unicode, NULLs and empty strings."""
    labels = ["plain", "tab\\there", "back\\\\slash", "ünïcødé ✓ 日本", "", "line\\nbreak"]
    lines = []
    for i in range(1, n + 1):
        label = labels[i % 6]
        price = "\\N" if i % 7 == 0 else f"{i * 3}.{i % 100:02d}"
        seen = f"2024-01-{1 + i % 28:02d} 12:{i % 60:02d}:00+00"
        tags = "{a,b}" if i % 2 else "{\"x y\",NULL}"
        payload = "\\N" if i % 5 == 0 else f'{{"i": {i}, "s": "v{i}"}}'
        blob = f"\\\\x{i:08x}"
        lines.append(f"{i}\t{label}\t{price}\t{seen}\t{tags}\t{payload}\t{blob}")
    return ("\n".join(lines) + "\n").encode()


def test_query_and_unicode_output_match_direct(via: Psql, direct: Psql) -> None:
    sql = ("SELECT n, repeat('ж', n) AS s, n::numeric / 7 AS q, NULL::int AS z "
           "FROM generate_series(1, 20) n")
    a = via.run("-c", sql)
    b = direct.run("-c", sql)
    assert a.stdout == b.stdout
    assert b"(20 rows)" in a.stdout
    assert a.stderr == b""


def test_describe_meta_commands(via: Psql, direct: Psql, table: str) -> None:
    listing = via.run("-c", r"\d")
    assert table.encode() in listing.stdout
    assert listing.stdout == direct.run("-c", r"\d").stdout

    detail = via.run("-c", rf"\d+ {table}")
    out = detail.stdout.decode()
    assert f'Table "public.{table}"' in out
    for col in ("id", "label", "price", "seen", "tags", "payload", "blob"):
        assert f" {col} " in out
    assert f"{table}_pkey" in out
    assert detail.stdout == direct.run("-c", rf"\d+ {table}").stdout
    assert via.run("-c", r"\dt+ wg_psql_*").stdout == direct.run("-c", r"\dt+ wg_psql_*").stdout


def test_conninfo_names_client_side_of_the_connection(via: Psql, proxy: ThreadedProxy) -> None:
    out = via.run("-c", r"\conninfo").stdout.decode()
    assert 'database "test"' in out
    assert 'user "demo"' in out
    assert f'port "{proxy.port}"' in out


def test_copy_from_stdin_then_out_text_csv_binary(via: Psql, direct: Psql, table: str,
                                                 tmp_path: Path) -> None:
    data = _copy_text_rows(ROWS)
    cp = via.run("-c", f"COPY {table} FROM STDIN", input=data)
    assert cp.stdout.strip() == f"COPY {ROWS}".encode()
    assert _server(f"SELECT count(*), count(price), count(payload) FROM {table}") == [
        (ROWS, ROWS - ROWS // 7, ROWS - ROWS // 5)]
    # The server stored exactly what was sent: text round trip is byte for byte.
    out = via.run("-c", f"COPY {table} TO STDOUT").stdout
    assert out == data
    assert out == direct.run("-c", f"COPY {table} TO STDOUT").stdout

    csv_sql = f"COPY (SELECT * FROM {table} ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)"
    csv_via = via.run("-c", csv_sql).stdout
    assert csv_via == direct.run("-c", csv_sql).stdout
    assert csv_via.count(b"\n") == ROWS + 1 + ROWS // 6  # every sixth label holds a newline

    via.run("-c", rf"\copy {table} to 'via.bin' with (format binary)", cwd=tmp_path)
    direct.run("-c", rf"\copy {table} to 'direct.bin' with (format binary)", cwd=tmp_path)
    via_bin = (tmp_path / "via.bin").read_bytes()
    assert via_bin.startswith(b"PGCOPY\n\xff\r\n\x00")
    assert len(via_bin) > ROWS * 20
    assert via_bin == (tmp_path / "direct.bin").read_bytes()


def test_backslash_copy_from_pstdin_and_binary_reload(via: Psql, table: str,
                                                     tmp_path: Path) -> None:
    data = _copy_text_rows(ROWS)
    via.run("-c", rf"\copy {table} from pstdin", input=data)
    via.run("-c", rf"\copy {table} to 'dump.bin' with (format binary)", cwd=tmp_path)
    _server(f"TRUNCATE {table}")
    # Binary COPY FROM through the proxy restores the same rows.
    via.run("-c", rf"\copy {table} from 'dump.bin' with (format binary)", cwd=tmp_path)
    assert via.run("-c", f"COPY {table} TO STDOUT").stdout == data


def test_copy_from_stdin_inline_in_script(via: Psql, table: str) -> None:
    script = (f"COPY {table} (id, label) FROM STDIN;\n1\tone\n2\ttwo\n\\.\n"
              f"SELECT string_agg(label, ',' ORDER BY id) FROM {table};\n")
    cp = via.run("-At", "-v", "ON_ERROR_STOP=1", "-f", "-", input=script.encode())
    assert cp.stdout.splitlines()[-1] == b"one,two"


def test_copy_from_stdin_bad_row_reports_error_and_connection_survives(via: Psql,
                                                                   table: str) -> None:
    script = (f"COPY {table} (id, label) FROM STDIN;\n1\tone\nnot-a-number\ttwo\n\\.\n"
              f"SELECT count(*) FROM {table};\n")
    cp = via.run("-At", "-f", "-", input=script.encode(), check=False)
    assert b'invalid input syntax for type integer: "not-a-number"' in cp.stderr
    assert cp.stdout.splitlines()[-1] == b"0"


def _backend_running(tag: str) -> list[tuple[object, ...]]:
    return _server("SELECT pid, state FROM pg_stat_activity WHERE query LIKE %s "
                   "AND pid <> pg_backend_pid()", (f"SELECT pg_sleep(30)%{tag}%",))


def _ctrl_c(via: Psql) -> None:
    tag = f"wg_cancel_{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(via.argv("-c", f"SELECT pg_sleep(30), '{tag}'"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=via.env)
    try:
        deadline = time.monotonic() + 15
        while not any(r[1] == "active" for r in _backend_running(tag)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "pg_sleep never became active"
            time.sleep(0.05)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=8)
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode != 0
    assert b"canceling statement due to user request" in err, err
    deadline = time.monotonic() + 5
    while any(r[1] == "active" for r in _backend_running(tag)):
        assert time.monotonic() < deadline, "backend still running pg_sleep after cancel"
        time.sleep(0.05)


def test_ctrl_c_cancels_running_query(via: Psql) -> None:
    _ctrl_c(via)


def test_ctrl_c_with_several_workers(psql_bin: str,
                                     proxy_process: Callable[..., ProxyProcess]) -> None:
    """``wiregate serve`` with workers: the cancel may reach a worker that does not own the
    connection and must be routed to the one that does."""
    p = proxy_process(server={"workers": 3})
    via = Psql(_client_conninfo(p.port), CLIENT_PASSWORD)
    for _ in range(4):
        _ctrl_c(via)


def test_error_then_next_command_works(via: Psql, direct: Psql) -> None:
    cp = via.run("-c", "SELECT 1/0", "-c", "SELECT 40 + 2 AS answer", check=False)
    assert b"ERROR:  division by zero" in cp.stderr
    assert b"42" in cp.stdout

    script = (b"\\set ON_ERROR_STOP 0\n"
              b"SELECT 1/0;\n"
              b"BEGIN;\nSELECT nope_no_such_column;\nSELECT 1;\nROLLBACK;\n"
              b"SELECT 'still alive' AS status;\n")
    a = via.run("-f", "-", input=script, check=False)
    b = direct.run("-f", "-", input=script, check=False)
    assert b"still alive" in a.stdout
    assert b"current transaction is aborted" in a.stderr
    assert a.stdout == b.stdout
    assert a.stderr.replace(b"-:", b"") == b.stderr.replace(b"-:", b"")
    assert a.returncode == b.returncode


def test_connection_refused_for_wrong_password(psql_bin: str,
                                               proxy_factory: Callable[..., ThreadedProxy]
                                               ) -> None:
    p = proxy_factory()
    cp = Psql(_client_conninfo(p.port), "wrong").run("-c", "SELECT 1", check=False)
    assert cp.returncode == 2
    assert b'password authentication failed for user "demo"' in cp.stderr


def test_large_object_import_export_uses_fastpath(via: Psql, tmp_path: Path) -> None:
    """psql's \\lo_import and \\lo_export go through libpq's fast-path FunctionCall messages."""
    blob = bytes(range(256)) * 4096 + "ü end".encode()
    (tmp_path / "in.bin").write_bytes(blob)
    cp = via.run("-c", r"\lo_import 'in.bin'", cwd=tmp_path)
    oid = cp.stdout.decode().split()[-1]
    assert oid.isdigit(), cp.stdout
    try:
        assert _server("SELECT length(lo_get(%s::oid))", (int(oid),)) == [(len(blob),)]
        via.run("-c", rf"\lo_export {oid} 'out.bin'", cwd=tmp_path)
        assert (tmp_path / "out.bin").read_bytes() == blob
    finally:
        _server("SELECT lo_unlink(%s::oid)", (int(oid),))


@pytest.mark.parametrize("sslmode", ["prefer", "allow"])
def test_tls_negotiation_fallback_to_plaintext(proxy: ThreadedProxy, psql_bin: str,
                                               sslmode: str) -> None:
    """Without TLS configured the proxy refuses SSLRequest with 'N'; libpq falls back."""
    p = Psql(f"host=127.0.0.1 port={proxy.port} user={CLIENT_USER} dbname=test "
             f"sslmode={sslmode} gssencmode=prefer", CLIENT_PASSWORD)
    out = p.run("-At", "-c", "SELECT 'plain'", "-c", r"\conninfo").stdout.decode()
    assert out.splitlines()[0] == "plain"
    assert "SSL connection" not in out

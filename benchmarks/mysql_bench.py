#!/usr/bin/env python3
"""Throughput benchmark, MySQL side: MariaDB direct vs. through HAProxy vs. through Wiregate.

Runs sysbench ``oltp_point_select`` and ``oltp_read_only`` against each target, plus a bulk read
of the whole ``sbtest1`` table with the mariadb client, and writes a Markdown and a JSON report
to ``benchmarks/results/<date>-mysql``. Wiregate is measured twice in the same run: as a plain
relay (``wiregate``) and with the agent guardrails and masking on (``guarded-masked``: the
rules and read-only session of ``agent-readonly`` in ``examples/policy.toml``, plus column ``c``
of ``wiregate_bench.sbtest1`` masked), so every ratio compares figures of the same run.

    .venv/bin/python benchmarks/mysql_bench.py                 # full run: 20 s x 3 runs per cell
    .venv/bin/python benchmarks/mysql_bench.py --quick         # smoke test: 5 s x 1 run
    .venv/bin/python benchmarks/mysql_bench.py --targets direct,haproxy
    .venv/bin/python benchmarks/bench.py --mysql-only          # the same through bench.py

See ``benchmarks/README.md`` for what the figures mean.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from hashlib import sha1
from pathlib import Path
from typing import Any, NoReturn

import bench
from bench import ROOT, BenchError, Target, log

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BENCH_DB = "wiregate_bench"          # the MariaDB database, and the Wiregate route's name
TABLE = "sbtest1"                     # sysbench's table (--tables=1)
TABLE_SIZE = 1_000_000
QUICK_BULK_ROWS = 100_000
ALL_TARGETS = ("direct", "haproxy", "wiregate", "guarded-masked")
WIREGATE_TARGETS = ("wiregate", "guarded-masked")
ALL_TESTS = ("oltp_point_select", "oltp_read_only")
BULK_CLIENTS = ("mariadb", "pymysql")
BENCH_USER = "bench"                  # the client login at Wiregate (mysql_native_password)
BENCH_PASSWORD = "bench"
BASE_PROFILE = "agent-readonly"       # its rules and session settings, copied under PROFILE
PROFILE = "bench-agent-masked"
MASKED_COLUMN = f"{BENCH_DB}.{TABLE}.c"
MASKING_SECTION = f"""
[profiles.{PROFILE}.masking]
default_strategy = "redact"

[[profiles.{PROFILE}.masking.column]]
columns = ["{MASKED_COLUMN}"]
strategy = "partial"
keep_last = 4
"""
ACCEPT = 0.8  # the targets: guarded-masked >= 0.8x HAProxy QPS, bulk >= 0.8x direct
PWD_ENV = "WIREGATE_BENCH_MYSQL_PASSWORD"  # the upstream password, when there is one

QPS_RE = re.compile(r"^\s*queries:\s+(\d+)\s+\(([0-9.]+) per sec\.\)", re.M)
TPS_RE = re.compile(r"^\s*transactions:\s+(\d+)\s+\(([0-9.]+) per sec\.\)", re.M)
IGNORED_RE = re.compile(r"^\s*ignored errors:\s+(\d+)", re.M)
RECONNECTS_RE = re.compile(r"^\s*reconnects:\s+(\d+)", re.M)
LAT_AVG_RE = re.compile(r"^\s*avg:\s+([0-9.]+)", re.M)
LAT_P95_RE = re.compile(r"^\s*95th percentile:\s+([0-9.]+)", re.M)


# --------------------------------------------------------------------------------------------
# Options: standalone they are --targets, --tests, ...; bench.py adds them as --mysql-targets,
# --mysql-tests, ... next to its own, and shares --quick, --duration, --runs, --warmup,
# --workers and --keep-tmp with the PostgreSQL side.

# Options that take the prefix in bench.py (dest without it) ...
_OWN = ("targets", "tests", "threads", "table_size", "bulk_rows", "bulk_runs", "bulk_client",
        "no_bulk", "no_sysbench", "ps_mode", "connect_timeout", "output")
# ... and those already named for this side, the same everywhere.
_FIXED = ("mysql_host", "mysql_port", "mysql_user", "mysql_password", "haproxy_threads")
_SHARED = ("quick", "duration", "runs", "warmup", "workers", "keep_tmp")


def add_options(ap: Any, prefix: str = "") -> None:
    """Add this side's options to ``ap`` (a parser or an argument group)."""

    def opt(name: str, **kw: Any) -> None:
        flag = name if name.startswith(("mysql-", "haproxy-")) else prefix + name
        ap.add_argument("--" + flag, dest=flag.replace("-", "_"), **kw)

    opt("targets", default=",".join(ALL_TARGETS),
        help="comma-separated subset of: " + ", ".join(ALL_TARGETS))
    opt("tests", default=",".join(ALL_TESTS), help="sysbench tests (" + ",".join(ALL_TESTS) + ")")
    opt("threads", type=int, default=10, help="sysbench --threads (10)")
    opt("table-size", type=int, default=TABLE_SIZE,
        help=f"rows of {TABLE}, prepared by sysbench once and reused ({TABLE_SIZE:,})")
    opt("bulk-rows", type=int, default=None,
        help=f"rows of the bulk read (the whole table; {QUICK_BULK_ROWS:,} with --quick)")
    opt("bulk-runs", type=int, default=None,
        help="bulk reads per target, median taken (max(runs, 5); 1 with --quick)")
    opt("bulk-client", choices=BULK_CLIENTS, default="mariadb",
        help="bulk-read client: the mariadb CLI (--quick, to /dev/null) or PyMySQL's "
             "unbuffered SSCursor (mariadb)")
    opt("no-bulk", action="store_true", help="skip the bulk read")
    opt("no-sysbench", action="store_true", help="skip the sysbench runs")
    opt("ps-mode", choices=("auto", "disable"), default="auto",
        help="sysbench --db-ps-mode: auto = server-side prepared statements (binary "
             "protocol), disable = plain text queries (auto)")
    opt("connect-timeout", type=float, default=10.0,
        help="seconds a proxy gets to listen and answer a MySQL login and query (10)")
    opt("output", type=Path, default=None,
        help="report path without extension (default benchmarks/results/<date>-mysql, "
             "<date>-mysql-quick for --quick)")
    opt("haproxy-threads", type=int, default=None,
        help="HAProxy nbthread (default: the Wiregate worker count, so both get as many cores)")
    opt("mysql-host", default="127.0.0.1", help="MariaDB/MySQL server (127.0.0.1)")
    opt("mysql-port", type=int, default=3306)
    opt("mysql-user", default="root", help="server account, for every target's upstream (root)")
    opt("mysql-password", default="", help="its password (empty)")


def options(ns: argparse.Namespace, error: Callable[[str], NoReturn],
            prefix: str = "") -> argparse.Namespace:
    """This side's settings from a parsed namespace (bench.py's with ``prefix="mysql-"``),
    defaults filled in and checked; ``error`` reports a bad value (``ArgumentParser.error``)."""
    p = prefix.replace("-", "_")
    a = argparse.Namespace(**{k: getattr(ns, p + k) for k in _OWN},
                           **{k: getattr(ns, k) for k in _FIXED + _SHARED})
    a.duration = a.duration or (5 if a.quick else 20)
    a.runs = a.runs or (1 if a.quick else 3)
    a.warmup = a.warmup if a.warmup is not None else (2 if a.quick else 5)
    a.bulk_runs = a.bulk_runs or (1 if a.quick else max(a.runs, 5))
    a.haproxy_threads = a.haproxy_threads or a.workers
    if a.table_size < 10_000:
        error(f"--{prefix}table-size must be at least 10000")
    a.bulk_rows = a.bulk_rows or (min(QUICK_BULK_ROWS, a.table_size) if a.quick
                                  else a.table_size)
    if not 0 < a.bulk_rows <= a.table_size:
        error(f"--{prefix}bulk-rows must be between 1 and the table size ({a.table_size:,})")
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    bad = [t for t in targets if t not in ALL_TARGETS]
    if bad or not targets:
        error(f"unknown MySQL target(s) {bad}; choose from {', '.join(ALL_TARGETS)}")
    a.targets = [t for t in ALL_TARGETS if t in targets]  # tables read direct | haproxy | ...
    tests = [t.strip() for t in a.tests.split(",") if t.strip()]
    badt = [t for t in tests if t not in ALL_TESTS]
    if badt or not tests:
        error(f"unknown sysbench test(s) {badt}; choose from {', '.join(ALL_TESTS)}")
    a.tests = [t for t in ALL_TESTS if t in tests]
    return a


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke test: 5 s, 1 run, a bulk read of {QUICK_BULK_ROWS:,} rows")
    ap.add_argument("--duration", type=int, default=None, help="seconds per sysbench run (20)")
    ap.add_argument("--runs", type=int, default=None, help="runs per cell, median taken (3)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up seconds per target (5)")
    ap.add_argument("--workers", "--wiregate-workers", dest="workers", type=int, default=1,
                    help="Wiregate [server] workers (1)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep configs and proxy logs")
    add_options(ap)
    return options(ap.parse_args(argv), ap.error)


# --------------------------------------------------------------------------------------------
# Targets


@dataclass
class MyTarget(Target):
    """A MySQL-protocol endpoint; ``proc`` is the proxy in front of the server, if any."""

    @property
    def wiregate(self) -> bool:
        return self.name in WIREGATE_TARGETS


def _pymysql_connect(t: MyTarget, timeout: float = 10.0, database: str | None = BENCH_DB,
                     **kw: Any) -> Any:
    import pymysql

    return pymysql.connect(host=t.host, port=t.port, user=t.user, password=t.password or "",
                           database=database, connect_timeout=timeout, read_timeout=timeout,
                           write_timeout=timeout, autocommit=True, **kw)


def _server(a: argparse.Namespace) -> MyTarget:
    return MyTarget("direct", a.mysql_host, a.mysql_port, a.mysql_user, a.mysql_password)


def _not_ready(t: MyTarget, a: argparse.Namespace, why: str) -> BenchError:
    if not t.wiregate:
        return BenchError(f"{t.name} on {t.host}:{t.port}: {why}")
    others = ",".join(x for x in a.targets if x not in WIREGATE_TARGETS) or "direct,haproxy"
    return BenchError(
        f"{t.name}: Wiregate did not answer MySQL clients on {t.host}:{t.port} within "
        f"{a.connect_timeout:g} s: {why}\nIts MySQL listener may not be usable yet; measure "
        f"the other targets with --targets {others} (bench.py: --mysql-targets {others}).\n"
        f"--- log tail ({t.logfile}) ---\n{t.log_tail()}")


def check_target(t: MyTarget, a: argparse.Namespace, c_of_1: str) -> None:
    """A login and a query through ``t`` within the connect timeout; for guarded-masked also
    that ``c`` comes back masked (text and binary protocol) and that a write is refused."""
    try:
        with _pymysql_connect(t, timeout=a.connect_timeout) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {TABLE} WHERE id <= 10")
            got = cur.fetchone()
            cur.execute(f"SELECT c FROM {TABLE} WHERE id = 1")
            c = cur.fetchone()
    except Exception as exc:
        raise _not_ready(t, a, f"a login and test query failed: {type(exc).__name__}: {exc}"
                         ) from None
    if got is None or got[0] != 10:
        raise BenchError(f"{t.name}: unexpected row count {got} for the first 10 ids")
    want = masked_c(c_of_1) if t.name == "guarded-masked" else c_of_1
    if c is None or c[0] != want:
        raise BenchError(f"{t.name}: c of id 1 came back as {c!r}, expected {want!r}")
    if t.name != "guarded-masked":
        return
    # sysbench reads c with server-side prepared statements: check the binary protocol too.
    try:
        import mysql.connector
    except ImportError:
        log("mysql-connector-python missing: binary-protocol masking not checked")
    else:
        def prepared() -> Any:
            conn2 = mysql.connector.connect(host=t.host, port=t.port, user=t.user,
                                            password=t.password or "", database=BENCH_DB,
                                            connection_timeout=int(a.connect_timeout))
            try:
                cur2 = conn2.cursor(prepared=True)
                cur2.execute(f"SELECT c FROM {TABLE} WHERE id = %s", (1,))
                row: Any = cur2.fetchone()
            finally:
                conn2.close()
            val = row[0] if row else None
            return val.decode() if isinstance(val, bytes | bytearray) else val

        try:
            val = _within(a.connect_timeout, prepared)
        except Exception as exc:
            raise _not_ready(t, a, f"a prepared statement failed: {type(exc).__name__}: {exc}"
                             ) from None
        if val != want:
            raise BenchError(f"{t.name}: c came back {val!r} through a prepared statement, "
                             f"expected {want!r}: masking is off in the binary protocol")
    refused = False
    try:
        with _pymysql_connect(t, timeout=a.connect_timeout) as conn, conn.cursor() as cur:
            cur.execute(f"DELETE FROM {TABLE} WHERE id = 0")  # no such row either way
    except Exception:
        refused = True
    if not refused:
        raise BenchError(f"{t.name}: a DELETE was not refused; the guardrails are not on")


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()``, or TimeoutError when it has not returned after ``seconds`` (it is left to
    finish in a daemon thread: a driver without a read timeout cannot hang the benchmark)."""
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    th = threading.Thread(target=call, daemon=True)
    th.start()
    th.join(seconds)
    if th.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def masked_c(value: str) -> str:
    """sysbench's c (digit groups joined by '-') with the partial mask, last 4 kept."""
    return re.sub(r"[0-9A-Za-z]", "*", value[:-4]) + value[-4:]


def direct_target(a: argparse.Namespace, c_of_1: str) -> MyTarget:
    t = _server(a)
    check_target(t, a, c_of_1)
    return t


def find_haproxy() -> str:
    for cand in (shutil.which("haproxy"), "/usr/sbin/haproxy"):
        if cand and os.access(cand, os.X_OK):
            return cand
    log("haproxy not found; trying apt-get install -y haproxy")
    subprocess.run(["apt-get", "install", "-y", "haproxy"], check=False,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    for cand in (shutil.which("haproxy"), "/usr/sbin/haproxy"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise BenchError("haproxy is not installed and apt-get install failed "
                     "(make bench-deps, or leave it out: --targets direct,wiregate,...)")


def start_haproxy(tmp: Path, a: argparse.Namespace, c_of_1: str) -> MyTarget:
    """HAProxy in TCP mode in front of the server: the reference a plain relay reaches."""
    binary = find_haproxy()
    d = tmp / "haproxy"
    d.mkdir()
    port = bench.free_port()
    cfg = d / "haproxy.cfg"
    cfg.write_text(
        "global\n"
        "    maxconn 2000\n"
        f"    nbthread {a.haproxy_threads}\n"
        "\ndefaults\n"
        "    mode tcp\n"
        "    timeout connect 5s\n"
        "    timeout client 1h\n"
        "    timeout server 1h\n"
        "\nfrontend mysql\n"
        f"    bind 127.0.0.1:{port}\n"
        "    default_backend mariadb\n"
        "\nbackend mariadb\n"
        f"    server mariadb {a.mysql_host}:{a.mysql_port}\n"
    )
    res = subprocess.run([binary, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
    if res.returncode != 0:
        raise BenchError(f"haproxy refused its generated config:\n{res.stdout}{res.stderr}")
    logfile = d / "haproxy.log"
    t = MyTarget("haproxy", "127.0.0.1", port, a.mysql_user, a.mysql_password, logfile=logfile)
    t.proc = bench.spawn([binary, "-db", "-f", str(cfg)], logfile)  # foreground, stopped by PID
    log(f"haproxy pid {t.proc.pid} on port {port} (TCP mode, nbthread {a.haproxy_threads})")
    bench.wait_for_port(t, a.connect_timeout)
    check_target(t, a, c_of_1)
    return t


def native_password(password: str) -> str:
    """The mysql_native_password form ``wiregate passwd`` prints: *HEX(SHA1(SHA1(password)))."""
    return "*" + sha1(sha1(password.encode()).digest()).hexdigest().upper()


def guarded_masked_policy() -> str:
    """examples/policy.toml plus PROFILE: BASE_PROFILE's section under the new name (its rules
    and session settings, as they are in the file), then the masking of ``c``."""
    text = bench.POLICY_FILE.read_text()
    lines = text.splitlines()
    head = f"[profiles.{BASE_PROFILE}]"
    if head not in lines:
        raise BenchError(f"{bench.POLICY_FILE} has no {head} section to copy")
    section: list[str] = []
    for line in lines[lines.index(head):]:
        name = line.strip().lstrip("[").rstrip("]")
        if line.startswith("[") and name != f"profiles.{BASE_PROFILE}" \
                and not name.startswith(f"profiles.{BASE_PROFILE}."):
            break
        section.append(line)
    body = "\n".join(section).rstrip() + "\n"
    body = body.replace(f"[profiles.{BASE_PROFILE}", f"[profiles.{PROFILE}")
    body = re.sub(r'^description = ".*"$',
                  f'description = "{BASE_PROFILE} plus masking of {MASKED_COLUMN}, '
                  'for the MySQL benchmark."', body, count=1, flags=re.M)
    return text.rstrip() + "\n\n\n" + body + MASKING_SECTION


def start_wiregate(tmp: Path, a: argparse.Namespace, name: str, c_of_1: str) -> MyTarget:
    """``wiregate serve`` with only a [mysql] listener; ``guarded-masked`` gets PROFILE."""
    d = tmp / name
    d.mkdir()
    port = bench.free_port()
    config = d / "wiregate.toml"
    guardrails = route_profile = ""
    if name == "guarded-masked":
        if not bench.POLICY_FILE.exists():
            raise BenchError(f"{name}: policy file {bench.POLICY_FILE} does not exist")
        policy = d / "policy.toml"
        policy.write_text(guarded_masked_policy())
        guardrails = f'\n[guardrails]\npolicy_file = "{policy}"\n'
        route_profile = f'profile = "{PROFILE}"\n'
    upstream_pw = f'password_env = "{PWD_ENV}"\n' if a.mysql_password else ""
    config.write_text(
        "[server]\n"
        f"workers = {a.workers}\n"
        'log_level = "warning"\n'
        "shutdown_grace = 2\n"
        f"\n[users.{BENCH_USER}]\n"
        f'mysql_native_password = "{native_password(BENCH_PASSWORD)}"\n'
        "\n[mysql]\n"
        f'listen = "127.0.0.1:{port}"\n'
        f'default_database = "{BENCH_DB}"\n'
        f"\n[mysql.databases.{BENCH_DB}]\n"
        f'host = "{a.mysql_host}"\n'
        f"port = {a.mysql_port}\n"
        f'dbname = "{BENCH_DB}"\n'
        f'user = "{a.mysql_user}"\n'
        + upstream_pw
        + 'tls = "disable"\n'
        + route_profile
        + guardrails
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), PWD_ENV: a.mysql_password}
    serve = bench.wiregate_command(config)
    check = [*serve[:serve.index("serve")], "check-config", str(config)]
    try:
        res = subprocess.run(check, capture_output=True, text=True, env=env, cwd=ROOT,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"{name}: wiregate check-config did not run: {exc}") from None
    if res.returncode != 0:
        raise BenchError(f"{name}: wiregate check-config refused the generated {config}:\n"
                         f"{(res.stdout + res.stderr).strip()}")
    logfile = d / "wiregate.log"
    t = MyTarget(name, "127.0.0.1", port, BENCH_USER, BENCH_PASSWORD, logfile=logfile)
    t.proc = bench.spawn(serve, logfile, env=env, cwd=ROOT)
    what = f", profile {PROFILE}" if route_profile else ""
    log(f"{name} pid {t.proc.pid} on port {port} ({a.workers} workers{what})")
    try:
        bench.wait_for_port(t, a.connect_timeout)
    except BenchError as exc:
        first = str(exc).split("\n", 1)[0]
        raise _not_ready(t, a, "nothing listens on the port" if "did not listen" in first
                         else first) from None
    check_target(t, a, c_of_1)
    return t


def wait_for_headroom(a: argparse.Namespace, needed: int, timeout: float = 20.0) -> None:
    """Wait until the server has ``needed`` free connections (proxies may close lazily)."""
    free = 0
    deadline = time.monotonic() + timeout
    with _pymysql_connect(_server(a), database=None) as conn, conn.cursor() as cur:
        cur.execute("SELECT @@max_connections")
        top = int(cur.fetchone()[0])
        while True:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
            free = top - int(cur.fetchone()[1])
            if free >= needed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    if free < needed:
        log(f"warning: only {free} free connections on the server, {needed} wanted")


# --------------------------------------------------------------------------------------------
# Data: sysbench's own table, prepared once


def _sysbench_argv(test: str, t: MyTarget, a: argparse.Namespace, threads: int, seconds: int,
                   command: str) -> list[str]:
    return ["sysbench", test, "--db-driver=mysql", f"--mysql-host={t.host}",
            f"--mysql-port={t.port}", f"--mysql-user={t.user}",
            f"--mysql-password={t.password or ''}", f"--mysql-db={BENCH_DB}", "--mysql-ssl=off",
            "--tables=1", f"--table-size={a.table_size}", f"--threads={threads}",
            f"--time={seconds}", f"--db-ps-mode={a.ps_mode}", "--report-interval=0",
            "--forced-shutdown=10", command]


def ensure_data(a: argparse.Namespace) -> str:
    """Database BENCH_DB with TABLE of ``table_size`` rows (sysbench prepare when missing or of
    another size); returns ``c`` of id 1, what the targets must return (masked or not)."""
    import pymysql

    server = _server(a)
    try:
        with _pymysql_connect(server, database=None) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{BENCH_DB}`")
            cur.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s"
                        " AND table_name = %s", (BENCH_DB, TABLE))
            exists = cur.fetchone()[0] > 0
            rows = 0
            if exists:
                cur.execute(f"SELECT COUNT(*) FROM `{BENCH_DB}`.{TABLE}")
                rows = cur.fetchone()[0]
            if rows != a.table_size:
                log(f"preparing {BENCH_DB}.{TABLE} with sysbench ({a.table_size:,} rows; "
                    f"found {rows:,})")
                cur.execute(f"DROP TABLE IF EXISTS `{BENCH_DB}`.{TABLE}")
    except pymysql.err.OperationalError as exc:
        raise BenchError(f"cannot reach MariaDB/MySQL at {a.mysql_host}:{a.mysql_port} as "
                         f"{a.mysql_user}: {exc}") from exc
    if rows == a.table_size:
        log(f"{BENCH_DB}.{TABLE} already prepared ({rows:,} rows)")
    else:
        t0 = time.monotonic()
        res = subprocess.run(_sysbench_argv("oltp_read_only", server, a, 1, 0, "prepare"),
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise BenchError(f"sysbench prepare failed:\n{(res.stdout + res.stderr)[-3000:]}")
        log(f"prepared in {time.monotonic() - t0:.0f} s")
    with _pymysql_connect(server) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {TABLE}")
        rows = cur.fetchone()[0]
        cur.execute(f"SELECT c FROM {TABLE} WHERE id = 1")
        c = cur.fetchone()
    if rows != a.table_size or c is None:
        raise BenchError(f"{BENCH_DB}.{TABLE} has {rows:,} rows after prepare, expected "
                         f"{a.table_size:,}")
    return str(c[0])


def bulk_sql(a: argparse.Namespace) -> str:
    sql = f"SELECT id, k, c, pad FROM {TABLE}"
    return sql if a.bulk_rows >= a.table_size else f"{sql} LIMIT {a.bulk_rows}"


def bulk_bytes(a: argparse.Namespace) -> tuple[int, int]:
    """(rows, bytes of the text-protocol row packets) of the bulk read, computed server-side:
    per row a 4-byte packet header, then per column a 1-byte length (values < 251 bytes) and
    the value's text."""
    with _pymysql_connect(_server(a)) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(id) + LENGTH(k) + LENGTH(c)"
                    f" + LENGTH(pad)), 0) FROM ({bulk_sql(a)}) AS t")
        rows, value_bytes = (int(v) for v in cur.fetchone())
    return rows, value_bytes + rows * (4 + 4)


# --------------------------------------------------------------------------------------------
# Measurements


@dataclass
class SysbenchRun:
    target: str
    test: str
    threads: int
    run: int
    ok: bool
    qps: float | None = None
    tps: float | None = None
    queries: int | None = None
    transactions: int | None = None
    ignored_errors: int | None = None
    reconnects: int | None = None
    latency_avg_ms: float | None = None
    latency_p95_ms: float | None = None
    wall_s: float = 0.0
    proxy_cpu_s: float | None = None
    proxy_cpu_us_per_query: float | None = None
    error: str | None = None


@dataclass
class BulkRun:
    target: str
    run: int
    ok: bool
    rows: int = 0
    total_s: float | None = None
    proxy_cpu_s: float | None = None
    error: str | None = None


def rotate(items: list[MyTarget], k: int) -> list[MyTarget]:
    """``items`` starting at ``k``: each run of the targets starts with another one."""
    k %= len(items)
    return [*items[k:], *items[:k]]


def run_sysbench(t: MyTarget, test: str, a: argparse.Namespace, seconds: int,
                 run: int) -> SysbenchRun:
    argv = _sysbench_argv(test, t, a, a.threads, seconds, "run")
    rec = SysbenchRun(t.name, test, a.threads, run, ok=False)
    cpu0 = t.cpu_seconds()
    t0 = time.perf_counter()
    try:
        # sysbench gives up by itself on a server that never greets (30 s) and, after --time,
        # on queries that never return (--forced-shutdown); the timeout is the last resort.
        res = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        rec.wall_s = round(time.perf_counter() - t0, 3)
        rec.error = "sysbench timed out"
        return rec
    rec.wall_s = round(time.perf_counter() - t0, 3)
    cpu1 = t.cpu_seconds()
    out = res.stdout
    if m := QPS_RE.search(out):
        rec.queries, rec.qps = int(m.group(1)), float(m.group(2))
    if m := TPS_RE.search(out):
        rec.transactions, rec.tps = int(m.group(1)), float(m.group(2))
    if m := IGNORED_RE.search(out):
        rec.ignored_errors = int(m.group(1))
    if m := RECONNECTS_RE.search(out):
        rec.reconnects = int(m.group(1))
    if m := LAT_AVG_RE.search(out):
        rec.latency_avg_ms = float(m.group(1))
    if m := LAT_P95_RE.search(out):
        rec.latency_p95_ms = float(m.group(1))
    rec.ok = res.returncode == 0 and rec.qps is not None
    if cpu0 is not None and cpu1 is not None:
        rec.proxy_cpu_s = round(cpu1 - cpu0, 3)
        if rec.queries:
            rec.proxy_cpu_us_per_query = round(rec.proxy_cpu_s / rec.queries * 1e6, 2)
    if not rec.ok:
        # sysbench prints the same FATAL line once per thread: keep each once.
        lines = (res.stderr + "\n" + out).splitlines()
        fatal = list(dict.fromkeys(x.strip() for x in lines if "FATAL" in x or "ALERT" in x))
        rec.error = f"sysbench exit {res.returncode}: " + (
            "; ".join(fatal) or (res.stderr.strip() or out.strip()))[-1500:]
    return rec


def _mariadb_argv(t: MyTarget, sql: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    env.pop("MYSQL_PWD", None)
    if t.password:
        env["MYSQL_PWD"] = t.password  # not on the command line
    return (["mariadb", "--no-defaults", f"--host={t.host}", f"--port={t.port}",
             f"--user={t.user}", "--protocol=TCP", "--connect-timeout=10", "--skip-ssl",
             "--quick", "--batch",
             "--skip-column-names", f"--database={BENCH_DB}", "-e", sql], env)


def verify_bulk(t: MyTarget, a: argparse.Namespace, c_of_1: str) -> int:
    """The bulk read through ``t`` once, not timed: every row arrives and the masking holds.
    Also the warm-up for the timed runs. Returns the row count."""
    sql = bulk_sql(a)
    want = masked_c(c_of_1) if t.name == "guarded-masked" else c_of_1
    if a.bulk_client == "pymysql":
        import pymysql.cursors

        with _pymysql_connect(t, timeout=60, cursorclass=pymysql.cursors.SSCursor) as conn, \
                conn.cursor() as cur:
            cur.execute(sql)
            first = cur.fetchone()
            rows = 1 + sum(1 for _ in cur) if first else 0
        c = first[2] if first else None
    else:
        argv, env = _mariadb_argv(t, sql)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stderr is not None
        stuck = threading.Timer(600, proc.kill)  # a proxy that stops sending must not hang us
        stuck.start()
        try:
            head = proc.stdout.readline()
            rows = 1 if head else 0
            while chunk := proc.stdout.read(1 << 20):
                rows += chunk.count(b"\n")
            err = proc.stderr.read().decode(errors="replace")
        finally:
            stuck.cancel()
        if proc.wait() != 0:
            raise BenchError(f"bulk read through {t.name} failed (exit {proc.returncode}): "
                             f"{err.strip()}")
        cols = head.decode().rstrip("\n").split("\t")
        c = cols[2] if len(cols) == 4 else None
    if rows != a.bulk_rows:
        raise BenchError(f"bulk read through {t.name}: {rows:,} rows, expected {a.bulk_rows:,}")
    if c != want:
        raise BenchError(f"bulk read through {t.name}: c of the first row is {c!r}, expected "
                         f"{want!r}")
    return rows


def run_bulk(t: MyTarget, a: argparse.Namespace, run: int) -> BulkRun:
    """One timed bulk read: client start (or connect), login, query, every row read."""
    sql = bulk_sql(a)
    rec = BulkRun(t.name, run, ok=False)
    if a.bulk_client == "pymysql":
        import pymysql.cursors

        gc.collect()
        gc.disable()
        try:
            cpu0 = t.cpu_seconds()
            t0 = time.perf_counter()
            with _pymysql_connect(t, timeout=120, cursorclass=pymysql.cursors.SSCursor) as conn, \
                    conn.cursor() as cur:
                cur.execute(sql)
                rows = 0
                while batch := cur.fetchmany(10_000):
                    rows += len(batch)
            t1 = time.perf_counter()
            cpu1 = t.cpu_seconds()
        except Exception as exc:
            rec.error = f"{type(exc).__name__}: {exc}"
            return rec
        finally:
            gc.enable()
    else:
        argv, env = _mariadb_argv(t, sql)
        cpu0 = t.cpu_seconds()
        t0 = time.perf_counter()
        try:
            res = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 env=env, timeout=600)
        except subprocess.TimeoutExpired:
            rec.error = "mariadb client timed out"
            return rec
        t1 = time.perf_counter()
        cpu1 = t.cpu_seconds()
        if res.returncode != 0:
            rec.error = (f"mariadb exit {res.returncode}: "
                         f"{res.stderr.decode(errors='replace').strip()}")
            return rec
        rows = a.bulk_rows  # counted by verify_bulk through the same target
    rec.ok, rec.rows, rec.total_s = True, rows, round(t1 - t0, 4)
    if cpu0 is not None and cpu1 is not None:
        rec.proxy_cpu_s = round(cpu1 - cpu0, 3)
    return rec


# --------------------------------------------------------------------------------------------
# Reporting


def _med(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 3) if num is not None and den else None


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if v is None else format(v, spec) + suffix


@dataclass
class Report:
    machine: dict[str, Any]
    settings: dict[str, Any]
    sysbench: list[SysbenchRun] = field(default_factory=list)
    bulk: list[BulkRun] = field(default_factory=list)
    bulk_rows: int = 0
    bulk_bytes: int = 0
    errors: list[str] = field(default_factory=list)

    def sysbench_summary(self) -> list[dict[str, Any]]:
        targets = self.settings["targets"]
        out = []
        for test in self.settings["tests"] if self.settings["sysbench"] else []:
            row: dict[str, Any] = {"test": test, "threads": self.settings["threads"]}
            for t in targets:
                runs = [r for r in self.sysbench if r.target == t and r.test == test and r.ok]
                qps = [r.qps for r in runs if r.qps is not None]
                row[t] = {
                    "qps_median": _med(qps),
                    "qps_min": min(qps) if qps else None,
                    "qps_max": max(qps) if qps else None,
                    "tps_median": _med(r.tps for r in runs),
                    "latency_avg_ms_median": _med(r.latency_avg_ms for r in runs),
                    "latency_p95_ms_median": _med(r.latency_p95_ms for r in runs),
                    "cpu_us_per_query_median": _med(r.proxy_cpu_us_per_query for r in runs),
                    "ignored_errors": sum(r.ignored_errors or 0 for r in runs),
                    "runs_ok": len(runs),
                }
            for t in targets:
                v = row[t]["qps_median"]
                row[t]["ratio_to_direct"] = _ratio(v, row.get("direct", {}).get("qps_median"))
                row[t]["ratio_to_haproxy"] = _ratio(v, row.get("haproxy", {}).get("qps_median"))
            out.append(row)
        return out

    def bulk_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for t in self.settings["targets"]:
            runs = [r for r in self.bulk if r.target == t and r.ok]
            total = _med(r.total_s for r in runs)
            out[t] = {
                "runs_ok": len(runs),
                "total_s_median": total,
                "rows_per_s": round(self.bulk_rows / total) if total else None,
                "mb_per_s": round(self.bulk_bytes / 1e6 / total, 1) if total else None,
                "proxy_cpu_s_median": _med(r.proxy_cpu_s for r in runs),
            }
        base = out.get("direct", {}).get("total_s_median")
        hap = out.get("haproxy", {}).get("total_s_median")
        for v in out.values():
            tot = v["total_s_median"]
            v["ratio_to_direct"] = round(base / tot, 3) if base and tot else None
            v["ratio_to_haproxy"] = round(hap / tot, 3) if hap and tot else None
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "summary": {"sysbench": self.sysbench_summary(),
                        "bulk_read": self.bulk_summary() if self.settings["bulk_runs"] else {}},
            "bulk_read_rows": self.bulk_rows,
            "bulk_read_bytes_estimated": self.bulk_bytes,
            "raw": {"sysbench": [asdict(r) for r in self.sysbench],
                    "bulk_read": [asdict(r) for r in self.bulk]},
            "errors": self.errors,
        }

    def _verdict(self, ratios: list[float | None]) -> str:
        known = [r for r in ratios if r is not None]
        if not known:
            return "n/a"
        ok = len(known) == len(ratios) and min(known) >= ACCEPT
        return ("yes" if ok else "no") + f" (lowest {min(known):.2f}×)"

    def to_markdown(self) -> str:
        m, s = self.machine, self.settings
        targets: list[str] = s["targets"]
        proxies = [t for t in targets if t != "direct"]
        has_direct, has_hap = "direct" in targets, "haproxy" in targets
        lines = [
            f"# Wiregate benchmark, MySQL/MariaDB, {s['started']}",
            "",
            f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['kernel']}, "
            f"{m['memory_gb']} GB RAM",
            f"- Server: {m.get('server_version') or 'unknown'} on {s['server']}"
            + "".join(f", {k} {v}" for k, v in (m.get("server_settings") or {}).items()),
            f"- {m.get('sysbench_version') or 'sysbench: -'}; "
            + (f"HAProxy {m.get('haproxy_version') or '-'} (TCP mode, nbthread "
               f"{s['haproxy_threads']}); " if has_hap else "")
            + f"bulk-read client: {s['bulk_client_version']}",
            f"- Wiregate: {m.get('wiregate_version') or '-'}"
            + (f" at {m['wiregate_commit']}" if m.get("wiregate_commit") else "")
            + (" + uncommitted changes to " + ", ".join(m["wiregate_uncommitted"])
               if m.get("wiregate_uncommitted") else "")
            + f" ({s['wiregate_workers']} workers), Python {m['python']}, clients log in with "
            "mysql_native_password"
            + (f"; `guarded-masked` = profile `{PROFILE}`: the rules and session settings of "
               f"`{BASE_PROFILE}` in `examples/policy.toml` plus `{MASKED_COLUMN}` masked "
               "(partial, last 4 kept)" if "guarded-masked" in targets else ""),
            f"- sysbench --threads={s['threads']}, --time={s['duration']} per run, "
            f"{s['runs']} run(s) per cell (median shown), --db-ps-mode={s['ps_mode']}, "
            f"--tables=1 --table-size={s['table_size']}, targets interleaved, no TLS"
            + (" — **quick smoke run, not a measurement**" if s["quick"] else ""),
            f"- Command: `{s['command']}`",
        ]
        if s["sysbench"]:
            lines += ["", "## sysbench, queries per second", ""]
            head = ["Test"]
            for t in targets:
                head.append(f"{t} QPS")
                if t != "direct" and has_direct:
                    head.append(f"{t} / direct")
                if t in WIREGATE_TARGETS and has_hap:
                    head.append(f"{t} / haproxy")
            head += [f"{t} µs CPU/query" for t in proxies]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|---|" + "|".join("---:" for _ in head[1:]) + "|")
            summary = self.sysbench_summary()
            for row in summary:
                cells = [row["test"]]
                for t in targets:
                    cells.append(_fmt(row[t]["qps_median"], ",.0f"))
                    if t != "direct" and has_direct:
                        cells.append(_fmt(row[t]["ratio_to_direct"], ".2f", "×"))
                    if t in WIREGATE_TARGETS and has_hap:
                        cells.append(_fmt(row[t]["ratio_to_haproxy"], ".2f", "×"))
                cells += [_fmt(row[t]["cpu_us_per_query_median"], ".1f") for t in proxies]
                lines.append("| " + " | ".join(cells) + " |")
            lines += [
                "",
                "QPS = sysbench's queries per second (oltp_read_only: 14 SELECTs plus BEGIN and "
                "COMMIT per transaction). Ratios are of medians of the same run. µs CPU/query = "
                "CPU time of the proxy process tree (all workers) during the run divided by the "
                "queries completed.",
            ]
            if has_hap and "guarded-masked" in targets:
                v = self._verdict([r["guarded-masked"]["ratio_to_haproxy"] for r in summary])
                lines += ["", f"Target: guarded-masked ≥ {ACCEPT:.2f}× HAProxy QPS in every "
                          f"test: {v}."]
        if s["bulk_runs"]:
            lines += self._bulk_markdown()
        if self.errors:
            lines += ["", "## Errors", ""] + [f"- {e.splitlines()[0]}" for e in self.errors]
        return "\n".join(lines) + "\n"

    def _bulk_markdown(self) -> list[str]:
        s = self.settings
        targets: list[str] = s["targets"]
        client = ("mariadb client `--quick --batch`, output to /dev/null"
                  if s["bulk_client"] == "mariadb" else "PyMySQL, unbuffered SSCursor")
        lines = [
            "",
            f"## Bulk read: `{s['bulk_sql']}`",
            "",
            f"{self.bulk_rows:,} rows, ≈{self.bulk_bytes / 1e6:.1f} MB of text-protocol row "
            f"packets; {client}; median of {s['bulk_runs']} run(s).",
            "",
        ]
        bulk = self.bulk_summary()
        head = ["Target", "rows/s", "MB/s", "vs direct", "proxy CPU s"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|---|" + "|".join("---:" for _ in head[1:]) + "|")
        for t in targets:
            b = bulk[t]
            lines.append("| " + " | ".join([
                t, _fmt(b["rows_per_s"], ",.0f"), _fmt(b["mb_per_s"], ".1f"),
                _fmt(b["ratio_to_direct"], ".2f", "×"),
                _fmt(b["proxy_cpu_s_median"], ".2f") if t != "direct" else "-",
            ]) + " |")
        lines += [
            "",
            "rows/s = rows / wall time of one read (client start, login, query, every row "
            "received). MB = per row a 4-byte packet header plus per column a 1-byte length and "
            "the value's text. vs direct = direct time / target time.",
        ]
        wg = [t for t in WIREGATE_TARGETS if t in targets]
        if "direct" in targets and wg:
            lines += ["", f"Target: bulk read ≥ {ACCEPT:.2f}× direct rows/s: " + "; ".join(
                f"{t} {self._verdict([bulk[t]['ratio_to_direct']])}" for t in wg) + "."]
        return lines


def machine_info(a: argparse.Namespace) -> dict[str, Any]:
    info = bench.host_info()
    version, settings = None, {}
    try:
        with _pymysql_connect(_server(a), database=None) as conn, conn.cursor() as cur:
            cur.execute("SELECT VERSION(), @@innodb_buffer_pool_size, @@max_connections")
            v, pool, maxconn = cur.fetchone()
            version = v
            settings = {"innodb_buffer_pool_size": f"{int(pool) // 2**20} MB",
                        "max_connections": str(maxconn)}
    except Exception:
        pass
    hap = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy")
                                      else None)
    hv = bench._cmd_first_line([hap, "-v"]) if hap else None
    m = re.search(r"version (\S+)", hv or "")
    return {
        **info,
        "server_version": version,
        "server_settings": settings,
        "sysbench_version": bench._cmd_first_line(["sysbench", "--version"]),
        "haproxy_version": m.group(1) if m else hv,
        "mariadb_client_version": bench._cmd_first_line(["mariadb", "--version"]),
    }


def _client_version(a: argparse.Namespace, m: dict[str, Any]) -> str:
    if a.bulk_client == "pymysql":
        from importlib.metadata import version

        return f"PyMySQL {version('PyMySQL')}"
    v = m.get("mariadb_client_version") or "mariadb"
    return re.sub(r"\s+", " ", v.split(",")[0]).replace("mariadb  Ver", "mariadb Ver")


# --------------------------------------------------------------------------------------------
# Main


def command_line() -> str:
    exe = Path(sys.executable)
    try:
        exe = exe.relative_to(ROOT)
    except ValueError:
        pass
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    return shlex.join([str(exe), str(script), *sys.argv[1:]])


def run(a: argparse.Namespace, tmp: Path, started: dt.datetime) -> int:
    """The MySQL side; ``tmp`` is a directory for configs and logs. Returns the exit status:
    0, or 2 when some runs failed (the report lists them)."""
    if not a.no_sysbench and shutil.which("sysbench") is None:
        raise BenchError("sysbench is not on PATH (Debian: apt-get install sysbench, or make "
                         "bench-deps)")
    if not a.no_bulk and a.bulk_client == "mariadb" and shutil.which("mariadb") is None:
        raise BenchError("the mariadb client is not on PATH (Debian: mariadb-client), or use "
                         "--bulk-client pymysql")
    tmp.mkdir(parents=True, exist_ok=True)
    c_of_1 = ensure_data(a)

    targets: list[MyTarget] = []
    for name in a.targets:
        if name == "direct":
            targets.append(direct_target(a, c_of_1))
        elif name == "haproxy":
            targets.append(start_haproxy(tmp, a, c_of_1))
        else:
            targets.append(start_wiregate(tmp, a, name, c_of_1))

    machine = machine_info(a)
    report = Report(machine=machine, settings={
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "command": command_line(),
        "quick": a.quick,
        "server": f"{a.mysql_host}:{a.mysql_port}",
        "targets": a.targets,
        "tests": a.tests,
        "sysbench": not a.no_sysbench,
        "threads": a.threads,
        "duration": a.duration,
        "runs": a.runs,
        "warmup": a.warmup,
        "ps_mode": a.ps_mode,
        "table_size": a.table_size,
        "haproxy_threads": a.haproxy_threads,
        "wiregate_workers": a.workers,
        "profile": PROFILE if "guarded-masked" in a.targets else None,
        "masked_column": MASKED_COLUMN if "guarded-masked" in a.targets else None,
        "bulk_runs": 0 if a.no_bulk else a.bulk_runs,
        "bulk_rows": a.bulk_rows,
        "bulk_sql": bulk_sql(a),
        "bulk_client": a.bulk_client,
        "bulk_client_version": _client_version(a, machine),
    })

    if not a.no_sysbench:
        if a.warmup > 0:
            for t in targets:
                log(f"warm-up {t.name} ({a.warmup} s)")
                wait_for_headroom(a, a.threads + 2)
                w = run_sysbench(t, "oltp_point_select", a, a.warmup, 0)
                if not w.ok:
                    raise BenchError(f"warm-up against {t.name} failed: {w.error}\n"
                                     f"--- log tail ---\n{t.log_tail()}")
        cells = len(a.tests) * len(targets) * a.runs
        eta = cells * (a.duration + 2)
        log(f"{cells} sysbench runs of {a.duration} s, about {eta // 60} min {eta % 60} s")
        for r in range(1, a.runs + 1):
            for test in a.tests:
                for t in rotate(targets, r - 1):
                    wait_for_headroom(a, a.threads + 2)
                    rec = run_sysbench(t, test, a, a.duration, r)
                    report.sysbench.append(rec)
                    if rec.ok and rec.qps is not None:
                        cpu = (f", {rec.proxy_cpu_us_per_query:.1f} µs CPU/query"
                               if rec.proxy_cpu_us_per_query is not None else "")
                        log(f"run {r} {test:17} {t.name:14} {rec.qps:10,.0f} qps{cpu}")
                    else:
                        msg = f"{t.name} {test} run {r}: {rec.error}"
                        report.errors.append(msg)
                        log("FAILED " + msg)
                        if t.proc is not None and t.proc.poll() is not None:
                            raise BenchError(f"{t.name} died (status {t.proc.returncode})\n"
                                             f"--- log tail ---\n{t.log_tail()}")

    if not a.no_bulk:
        report.bulk_rows, report.bulk_bytes = bulk_bytes(a)
        for t in targets:  # every row arrives, masked where it should be; warms the caches
            verify_bulk(t, a, c_of_1)
        for r in range(1, a.bulk_runs + 1):
            for t in rotate(targets, r - 1):
                b = run_bulk(t, a, r)
                report.bulk.append(b)
                if b.ok and b.total_s:
                    log(f"bulk run {r} {t.name:14} {b.rows / b.total_s:10,.0f} rows/s "
                        f"{report.bulk_bytes / 1e6 / b.total_s:6.1f} MB/s")
                else:
                    report.errors.append(f"bulk read {t.name} run {r}: {b.error}")
                    log(f"FAILED bulk read {t.name}: {b.error}")
                    if t.proc is not None and t.proc.poll() is not None:
                        raise BenchError(f"{t.name} died (status {t.proc.returncode})\n"
                                         f"--- log tail ---\n{t.log_tail()}")

    for t in targets:  # proxy logs may explain failures or warnings
        if t.proc is not None and t.logfile is not None:
            report.machine.setdefault("proxy_log_tail", {})[t.name] = t.log_tail(20)

    md = report.to_markdown()
    out = a.output or RESULTS_DIR / (started.strftime("%Y-%m-%d") + "-mysql"
                                     + ("-quick" if a.quick else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    print(md)
    log(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0 if not report.errors else 2


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, bench._on_sigterm)
    started = dt.datetime.now()
    tmp = Path(tempfile.mkdtemp(prefix="wiregate-bench-mysql-"))
    os.chmod(tmp, 0o755)
    try:
        return run(a, tmp, started)
    except BenchError as exc:
        print(f"\nbench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        bench.stop_all()
        if a.keep_tmp:
            log(f"configs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

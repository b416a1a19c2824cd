#!/usr/bin/env python3
"""Throughput benchmark: PostgreSQL direct vs. through pgbouncer vs. through Wiregate; with
``--mysql`` also MariaDB direct vs. through HAProxy vs. through Wiregate (``mysql_bench.py``).

Runs ``pgbench -S`` (read-only point selects) in the simple, extended and prepared protocol modes
against each target, plus a bulk read of ``pgbench_accounts`` with psycopg, and writes a Markdown
and a JSON report to ``benchmarks/results/``. Wiregate is measured three times in the same run:
plain (``wiregate``), with guardrails on (``guarded``: ``examples/policy.toml``, profile
``agent-readonly``) and with masking on (``masked``: a profile that only masks), so the cost of
each control is a same-run ratio.

    .venv/bin/python benchmarks/bench.py                 # full run: 20 s x 3 runs per cell
    .venv/bin/python benchmarks/bench.py --quick         # smoke test: 5 s x 1 run, 10 clients
    .venv/bin/python benchmarks/bench.py --targets direct,pgbouncer
    .venv/bin/python benchmarks/bench.py --mysql         # then the MySQL side (make bench)
    .venv/bin/python benchmarks/bench.py --mysql-only --mysql-targets direct,haproxy

See ``benchmarks/README.md`` for what the figures mean.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import gc
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
BENCH_DB = "wiregate_bench"
SCALE = 10
ACCOUNTS = 100_000 * SCALE
ALL_TARGETS = ("direct", "pgbouncer", "wiregate", "guarded", "masked")
# Not in the default run: ``detectors`` = ``masked`` plus every content detector on every
# other text column (--targets direct,masked,detectors measures what they cost).
EXTRA_TARGETS = ("detectors",)
POLICY_FILE = ROOT / "examples" / "policy.toml"
GUARDED_PROFILE = "agent-readonly"  # read-only session with a statement timeout; -S only reads
# ``masked``: a profile with masking alone (no rules, no upstream settings), so its figures
# are what masking costs: every statement's lineage worked out and cached, results tracked,
# the bulk read's widest column and a table of distinct fake PII rewritten on the wire.
MASKED_PROFILE = "bench-masked"
PII_TABLE = "wiregate_bulk_pii"
MASKING_SECTION = f"""
[profiles.{MASKED_PROFILE}]
description = "Masking alone, for the benchmark."

[profiles.{MASKED_PROFILE}.masking]
default_strategy = "redact"

[[profiles.{MASKED_PROFILE}.masking.column]]
columns = ["public.pgbench_accounts.filler", "public.{PII_TABLE}.card"]
strategy = "partial"
keep_last = 4

[[profiles.{MASKED_PROFILE}.masking.column]]
columns = ["public.{PII_TABLE}.email"]
strategy = "email"
"""
DETECTORS_LINE = 'detectors = ["email", "card", "ssn", "phone", "iban", "api_key"]\n'
ALL_MODES = ("simple", "extended", "prepared")
BULK_SQL = "SELECT aid, bid, abalance, filler FROM pgbench_accounts"
BULK_BYTES_SQL = (
    "SELECT count(*), coalesce(sum(octet_length(aid::text) + octet_length(bid::text)"
    " + octet_length(abalance::text) + octet_length(filler)), 0) FROM pgbench_accounts"
)
# pgbench's filler is blank, so a partial mask leaves its bytes as they are. ``--bulk pii``
# reads a table of distinct fake emails and card numbers instead, both masked in ``masked``:
# every row is really rewritten.
PII_SQL = f"SELECT id, email, card, note FROM {PII_TABLE}"
PII_BYTES_SQL = (
    "SELECT count(*), coalesce(sum(octet_length(id::text) + octet_length(email)"
    f" + octet_length(card) + octet_length(note)), 0) FROM {PII_TABLE}"
)
BULKS = {"pgbench": (BULK_SQL, BULK_BYTES_SQL, 4), "pii": (PII_SQL, PII_BYTES_SQL, 4)}
BENCH_USER = "bench"
BENCH_PASSWORD = "bench"
TPS_RE = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
TXN_RE = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
FAILED_RE = re.compile(r"^number of failed transactions: (\d+)", re.M)
LAT_RE = re.compile(r"^latency average = ([0-9.]+) ms", re.M)
CLK_TCK = os.sysconf("SC_CLK_TCK")

# mysql_bench imports this module as ``bench``; run as a script it is ``__main__``. One module
# object, so both sides share the processes stop_all() ends.
if __name__ == "__main__":
    sys.modules.setdefault("bench", sys.modules[__name__])


class BenchError(RuntimeError):
    """A setup step or a target failed; the message says which and why."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Process bookkeeping: everything started here is stopped here, whatever happens.


_started: list[subprocess.Popen[bytes]] = []


def _stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    tree = descendants(proc.pid)
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # started with its own session: pgid == pid
        except ProcessLookupError:
            pass
        proc.kill()
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass
    for pid in tree:  # stragglers that left the group
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_all() -> None:
    while _started:
        proc = _started.pop()
        try:
            _stop(proc)
        except Exception as exc:  # cleanup must go on for the others
            log(f"could not stop pid {proc.pid}: {exc}")


atexit.register(stop_all)


def _on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def spawn(argv: Sequence[str], logfile: Path, *, user: str | None = None,
          env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    out = open(logfile, "ab")  # noqa: SIM115 - handed to the child, closed by the OS
    try:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            user=user, env=env, cwd=cwd, start_new_session=True,
        )
    finally:
        out.close()
    _started.append(proc)
    return proc


# --------------------------------------------------------------------------------------------
# /proc readers: CPU time of a process tree, without psutil.


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out.extend(int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except OSError:
            continue
    return out


def descendants(pid: int) -> list[int]:
    seen: list[int] = []
    todo = children(pid)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.append(p)
            todo.extend(children(p))
    return seen


def _stat_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime: own CPU plus that of reaped children."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    rest = raw[raw.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime..cstime are fields 14..17.
    return sum(int(v) for v in rest[11:15])


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and all its live and reaped descendants."""
    return sum(_stat_ticks(p) for p in [pid, *descendants(pid)]) / CLK_TCK


# --------------------------------------------------------------------------------------------
# Targets


@dataclass
class Target:
    name: str
    host: str
    port: int
    user: str
    password: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    logfile: Path | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for k in ("PGPASSWORD", "PGSERVICE", "PGSSLMODE", "PGOPTIONS"):
            env.pop(k, None)
        # Plain TCP everywhere: the direct server may offer TLS, pgbouncer does not by default.
        env["PGSSLMODE"] = "disable"
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env

    def cpu_seconds(self) -> float | None:
        return tree_cpu_seconds(self.proc.pid) if self.proc is not None else None

    def conninfo(self) -> str:
        parts = [f"host={self.host}", f"port={self.port}", f"user={self.user}",
                 f"dbname={BENCH_DB}", "sslmode=disable"]
        if self.password is not None:
            parts.append(f"password={self.password}")
        return " ".join(parts)

    def log_tail(self, lines: int = 40) -> str:
        if self.logfile is None or not self.logfile.exists():
            return "(no log)"
        text = self.logfile.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(log is empty)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(target: Target, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.proc is not None and target.proc.poll() is not None:
            raise BenchError(f"{target.name} exited with status {target.proc.returncode} "
                             f"before listening on port {target.port}.\n"
                             f"--- log tail ({target.logfile}) ---\n{target.log_tail()}")
        try:
            with socket.create_connection((target.host, target.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{target.name} did not listen on {target.host}:{target.port} within "
                     f"{timeout:.0f} s.\n--- log tail ({target.logfile}) ---\n{target.log_tail()}")


def check_query(target: Target) -> None:
    import psycopg

    try:
        with psycopg.connect(target.conninfo(), connect_timeout=10) as conn:
            got = conn.execute("SELECT count(*) FROM pgbench_branches").fetchone()
    except Exception as exc:
        raise BenchError(f"{target.name} on port {target.port} accepts connections but a test "
                         f"query failed: {exc}\n--- log tail ({target.logfile}) ---\n"
                         f"{target.log_tail()}") from exc
    if got is None or got[0] != SCALE:
        raise BenchError(f"{target.name}: unexpected pgbench_branches count {got}")
    if target.name in ("masked", "detectors"):
        # The figures only mean something if the rows really are rewritten.
        with psycopg.connect(target.conninfo(), connect_timeout=10) as conn:
            got = conn.execute(f"SELECT email, card FROM {PII_TABLE} ORDER BY id LIMIT 1"
                               ).fetchone()
        if got != ("u***@example.com", "************7919"):
            raise BenchError(f"{target.name}: PII came back unmasked: {got!r}")


def find_pgbouncer() -> str:
    for cand in (shutil.which("pgbouncer"), "/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"):
        if cand and os.access(cand, os.X_OK):
            return cand
    log("pgbouncer not found; trying apt-get install -y pgbouncer")
    subprocess.run(["apt-get", "install", "-y", "pgbouncer"], check=False,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    for cand in (shutil.which("pgbouncer"), "/usr/sbin/pgbouncer"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise BenchError("pgbouncer is not installed and apt-get install failed")


def start_pgbouncer(tmp: Path, pg_host: str, pg_port: int, pg_user: str) -> Target:
    binary = find_pgbouncer()
    d = tmp / "pgbouncer"
    d.mkdir()
    port = free_port()
    (d / "userlist.txt").write_text(f'"{pg_user}" ""\n')
    (d / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{BENCH_DB} = host={pg_host} port={pg_port} dbname={BENCH_DB} user={pg_user}\n"
        "\n[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {d / 'userlist.txt'}\n"
        "pool_mode = session\n"
        "max_client_conn = 200\n"
        "default_pool_size = 60\n"
        "ignore_startup_parameters = extra_float_digits\n"
        f"logfile = {d / 'pgbouncer.log'}\n"
        "log_connections = 0\n"
        "log_disconnections = 0\n"
        "log_pooler_errors = 1\n"
        f"admin_users = {pg_user}\n"
    )
    user = None
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        user = "postgres"
        pw = pwd.getpwnam(user)
        for p in (tmp, d, *d.iterdir()):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    stdout_log = d / "stdout.log"
    target = Target("pgbouncer", "127.0.0.1", port, pg_user, logfile=stdout_log)
    target.proc = spawn([binary, str(d / "pgbouncer.ini")], stdout_log, user=user)
    log(f"pgbouncer pid {target.proc.pid} on port {port}")
    try:
        wait_for_port(target, 15)
    except BenchError as exc:
        raise BenchError(f"{exc}\n--- pgbouncer.log ---\n"
                         f"{_tail(d / 'pgbouncer.log')}") from None
    check_query(target)
    return target


def release_pgbouncer_pool(target: Target) -> None:
    """Close pgbouncer's idle server connections so they do not count against the next target.

    In session mode pgbouncer keeps up to ``default_pool_size`` server connections open after
    its clients leave; with 50 clients that would leave too few slots in ``max_connections``.
    """
    import psycopg

    dsn = (f"host={target.host} port={target.port} user={target.user} dbname=pgbouncer "
           "sslmode=disable")
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            # The admin console speaks only the simple query protocol.
            for cmd in (f"KILL {BENCH_DB}", f"RESUME {BENCH_DB}"):
                res = conn.pgconn.exec_(cmd.encode())
                if res.status != psycopg.pq.ExecStatus.COMMAND_OK:
                    log(f"pgbouncer admin {cmd!r}: {res.error_message.decode(errors='replace')}")
    except psycopg.Error as exc:
        log(f"could not release pgbouncer's server connections: {exc}")


def wait_for_headroom(pg_host: str, pg_port: int, pg_user: str, needed: int,
                      timeout: float = 20.0) -> None:
    """Wait until the server has ``needed`` free connection slots (proxies close lazily)."""
    import psycopg

    dsn = f"host={pg_host} port={pg_port} user={pg_user} dbname=postgres sslmode=disable"
    deadline = time.monotonic() + timeout
    free = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            got = conn.execute(
                "SELECT current_setting('max_connections')::int"
                " - current_setting('superuser_reserved_connections')::int"
                " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
            ).fetchone()
            free = int(got[0]) if got else 0
            if free >= needed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    if free < needed:
        log(f"warning: only {free} free connection slots on the server, {needed} wanted")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(missing)"


def wiregate_command(config: Path) -> list[str]:
    exe = ROOT / ".venv" / "bin" / "wiregate"
    if exe.exists():
        return [str(exe), "serve", "--config", str(config)]
    if not (ROOT / "proxy" / "cli.py").exists():
        raise BenchError(f"neither {exe} nor {ROOT / 'proxy' / 'cli.py'} exists")
    code = "import sys; from proxy.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code, "serve", "--config", str(config)]


def start_wiregate(tmp: Path, pg_host: str, pg_port: int, pg_user: str, workers: int,
                   profile: str | None = None, name: str = "wiregate",
                   masking: str = "") -> Target:
    """Start ``wiregate serve``; with ``profile`` the guardrails are on for the route.

    The policy file is copied into the target's directory, so ``--keep-tmp`` keeps the exact
    policy the figures were measured with.
    """
    sys.path.insert(0, str(ROOT))
    try:
        from protocols.postgres.scram import make_verifier
    except ImportError as exc:
        raise BenchError(f"cannot import make_verifier from the project: {exc}") from exc
    d = tmp / name
    d.mkdir()
    port = free_port()
    config = d / "wiregate.toml"
    guardrails = route_profile = ""
    if profile is not None:
        if not POLICY_FILE.exists():
            raise BenchError(f"{name}: policy file {POLICY_FILE} does not exist")
        policy = d / "policy.toml"
        policy.write_text(POLICY_FILE.read_text() + masking)
        guardrails = f'\n[guardrails]\npolicy_file = "{policy}"\n'
        route_profile = f'profile = "{profile}"\n'
    config.write_text(
        "[server]\n"
        f"workers = {workers}\n"
        'log_level = "warning"\n'
        "shutdown_grace = 2\n"
        f"\n[users.{BENCH_USER}]\n"
        f'scram_sha_256 = "{make_verifier(BENCH_PASSWORD)}"\n'
        "\n[postgres]\n"
        f'listen = "127.0.0.1:{port}"\n'
        f"\n[postgres.databases.{BENCH_DB}]\n"
        f'host = "{pg_host}"\n'
        f"port = {pg_port}\n"
        f'user = "{pg_user}"\n'
        'tls = "disable"\n'
        + route_profile
        + guardrails
    )
    logfile = d / "wiregate.log"
    target = Target(name, "127.0.0.1", port, BENCH_USER, password=BENCH_PASSWORD,
                    logfile=logfile)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    target.proc = spawn(wiregate_command(config), logfile, env=env, cwd=ROOT)
    what = f", guardrails profile {profile}" if profile else ""
    log(f"{name} pid {target.proc.pid} on port {port} ({workers} workers{what})")
    wait_for_port(target, 30)
    check_query(target)
    return target


# --------------------------------------------------------------------------------------------
# Database setup


def ensure_database(pg_host: str, pg_port: int, pg_user: str) -> None:
    import psycopg

    admin = f"host={pg_host} port={pg_port} user={pg_user} dbname=postgres sslmode=disable"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (BENCH_DB,)).fetchone()
            if not exists:
                log(f"creating database {BENCH_DB}")
                conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    except psycopg.OperationalError as exc:
        raise BenchError(f"cannot reach PostgreSQL at {pg_host}:{pg_port}: {exc}") from exc
    dsn = f"host={pg_host} port={pg_port} user={pg_user} dbname={BENCH_DB} sslmode=disable"
    with psycopg.connect(dsn, autocommit=True) as conn:
        reg = conn.execute("SELECT to_regclass('pgbench_accounts')").fetchone()
        rows = 0
        if reg and reg[0] is not None:
            got = conn.execute("SELECT count(*) FROM pgbench_accounts").fetchone()
            rows = got[0] if got else 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        pii = conn.execute("SELECT to_regclass(%s)", (PII_TABLE,)).fetchone()
        if not pii or pii[0] is None:
            log(f"creating {PII_TABLE} ({ACCOUNTS:,} rows of distinct fake emails and cards)")
            conn.execute(f"CREATE TABLE {PII_TABLE} AS SELECT i AS id, 'user' || i || "
                         "'@example.com' AS email, (4000000000000000 + i::bigint * 7919)::text "
                         "AS card, md5(i::text) AS note FROM generate_series(1, %s) i",
                         (ACCOUNTS,))
            conn.execute(f"VACUUM ANALYZE {PII_TABLE}")
    if rows == ACCOUNTS:
        log(f"{BENCH_DB} already initialised ({rows:,} accounts)")
        return
    log(f"initialising {BENCH_DB} with pgbench -i -s {SCALE} (found {rows:,} accounts)")
    res = subprocess.run(
        ["pgbench", "-i", "-s", str(SCALE), "-q", "-h", pg_host, "-p", str(pg_port),
         "-U", pg_user, BENCH_DB],
        capture_output=True, text=True, env={**os.environ, "PGSSLMODE": "disable"},
    )
    if res.returncode != 0:
        raise BenchError(f"pgbench -i failed:\n{res.stderr[-3000:]}")


def bulk_bytes(target: Target, bulk: str) -> tuple[int, int]:
    """(rows, estimated DataRow bytes) of the bulk query, computed server-side."""
    import psycopg

    _, bytes_sql, ncols = BULKS[bulk]
    with psycopg.connect(target.conninfo()) as conn:
        got = conn.execute(bytes_sql).fetchone()
    assert got is not None
    rows, value_bytes = int(got[0]), int(got[1])
    # DataRow: type (1) + length (4) + column count (2), then per column length (4) + value.
    return rows, value_bytes + rows * (7 + 4 * ncols)


# --------------------------------------------------------------------------------------------
# Measurements


@dataclass
class PgbenchRun:
    target: str
    mode: str
    clients: int
    run: int
    ok: bool
    tps: float | None = None
    transactions: int | None = None
    failed: int | None = None
    latency_ms: float | None = None
    wall_s: float = 0.0
    proxy_cpu_s: float | None = None
    proxy_cpu_us_per_txn: float | None = None
    error: str | None = None


@dataclass
class BulkRun:
    target: str
    run: int
    ok: bool
    rows: int = 0
    wire_s: float | None = None
    total_s: float | None = None
    proxy_cpu_s: float | None = None
    error: str | None = None


def run_pgbench(target: Target, mode: str, clients: int, duration: int, run: int,
                threads: int) -> PgbenchRun:
    argv = ["pgbench", "-S", "-n", "-T", str(duration), "-M", mode, "-c", str(clients),
            "-j", str(min(threads, clients)), "-h", target.host, "-p", str(target.port),
            "-U", target.user, BENCH_DB]
    cpu0 = target.cpu_seconds()
    t0 = time.perf_counter()
    try:
        res = subprocess.run(argv, capture_output=True, text=True, env=target.env(),
                             timeout=duration + 120)
    except subprocess.TimeoutExpired:
        return PgbenchRun(target.name, mode, clients, run, ok=False,
                          wall_s=time.perf_counter() - t0, error="pgbench timed out")
    wall = time.perf_counter() - t0
    cpu1 = target.cpu_seconds()
    out = res.stdout
    tps = TPS_RE.search(out)
    txn = TXN_RE.search(out)
    rec = PgbenchRun(target.name, mode, clients, run, ok=res.returncode == 0 and bool(tps),
                     wall_s=round(wall, 3))
    if tps:
        rec.tps = float(tps.group(1))
    if txn:
        rec.transactions = int(txn.group(1))
    if m := FAILED_RE.search(out):
        rec.failed = int(m.group(1))
    if m := LAT_RE.search(out):
        rec.latency_ms = float(m.group(1))
    if cpu0 is not None and cpu1 is not None:
        rec.proxy_cpu_s = round(cpu1 - cpu0, 3)
        if rec.transactions:
            rec.proxy_cpu_us_per_txn = round(rec.proxy_cpu_s / rec.transactions * 1e6, 2)
    if not rec.ok:
        rec.error = (f"pgbench exit {res.returncode}: "
                     + (res.stderr.strip() or out.strip())[-1500:])
    return rec


def run_bulk(target: Target, run: int, sql: str = BULK_SQL) -> BulkRun:
    import psycopg

    rec = BulkRun(target.name, run, ok=False)
    gc.collect()
    gc.disable()  # a million new tuples would otherwise trigger many collections
    try:
        with psycopg.connect(target.conninfo()) as conn, conn.cursor() as cur:
            cpu0 = target.cpu_seconds()
            t0 = time.perf_counter()
            cur.execute(sql)  # returns once libpq holds the complete result
            t1 = time.perf_counter()
            rows = cur.fetchall()  # plus building Python tuples from the text values
            t2 = time.perf_counter()
            cpu1 = target.cpu_seconds()
            rec.rows = len(rows)
            del rows
    except Exception as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
        return rec
    finally:
        gc.enable()
    rec.ok = True
    rec.wire_s = round(t1 - t0, 4)
    rec.total_s = round(t2 - t0, 4)
    if cpu0 is not None and cpu1 is not None:
        rec.proxy_cpu_s = round(cpu1 - cpu0, 3)
    return rec


def rotate(items: Sequence[Target], k: int) -> list[Target]:
    k %= len(items)
    return [*items[k:], *items[:k]]


# --------------------------------------------------------------------------------------------
# Reporting


def _med(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _guard_ratio(on: float | None, off: float | None) -> float | None:
    """guarded / wiregate: what is left of plain Wiregate's figure with the guardrails on."""
    return round(on / off, 3) if on is not None and off else None


GUARD_MIN = 0.9  # acceptance: guardrails on / off at least this in every mode and client count
# Targets compared with plain Wiregate in the same run: what each control costs by itself.
ON_OFF = {"guarded": "guardrails on / off", "masked": "masking on / off",
          "detectors": "detectors on / off"}


@dataclass
class Report:
    machine: dict[str, Any]
    settings: dict[str, Any]
    pgbench: list[PgbenchRun] = field(default_factory=list)
    bulk: list[BulkRun] = field(default_factory=list)
    bulk_bytes: int = 0
    bulk_rows: int = 0
    errors: list[str] = field(default_factory=list)

    def tps_summary(self, targets: Sequence[str]) -> list[dict[str, Any]]:
        out = []
        for mode in self.settings["modes"]:
            for clients in self.settings["clients"]:
                row: dict[str, Any] = {"mode": mode, "clients": clients}
                for t in targets:
                    runs = [r for r in self.pgbench
                            if r.target == t and r.mode == mode and r.clients == clients and r.ok]
                    tps = [r.tps for r in runs if r.tps is not None]
                    row[t] = {
                        "tps_median": _med(tps),
                        "tps_min": min(tps) if tps else None,
                        "tps_max": max(tps) if tps else None,
                        "cpu_us_per_txn_median": _med(r.proxy_cpu_us_per_txn for r in runs),
                        "latency_ms_median": _med(r.latency_ms for r in runs),
                        "runs_ok": len(runs),
                    }
                base = row.get("direct", {}).get("tps_median")
                for t in targets:
                    v = row[t]["tps_median"]
                    row[t]["ratio_to_direct"] = (round(v / base, 3)
                                                 if base and v is not None else None)
                if "wiregate" in targets:
                    for t in ON_OFF:
                        if t not in targets:
                            continue
                        row[f"{t}_on_off"] = _guard_ratio(row[t]["tps_median"],
                                                          row["wiregate"]["tps_median"])
                        on_cpu = row[t]["cpu_us_per_txn_median"]
                        off_cpu = row["wiregate"]["cpu_us_per_txn_median"]
                        row[f"{t}_cpu_us_per_txn_added"] = (
                            round(on_cpu - off_cpu, 2)
                            if on_cpu is not None and off_cpu is not None else None)
                out.append(row)
        return out

    def bulk_summary(self, targets: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        mb = self.bulk_bytes / 1e6
        for t in targets:
            runs = [r for r in self.bulk if r.target == t and r.ok]
            wire = _med(r.wire_s for r in runs)
            total = _med(r.total_s for r in runs)
            out[t] = {
                "runs_ok": len(runs),
                "wire_s_median": wire,
                "total_s_median": total,
                "rows_per_s": round(self.bulk_rows / total) if total else None,
                "mb_per_s": round(mb / total, 1) if total else None,
                "wire_rows_per_s": round(self.bulk_rows / wire) if wire else None,
                "wire_mb_per_s": round(mb / wire, 1) if wire else None,
                "proxy_cpu_s_median": _med(r.proxy_cpu_s for r in runs),
            }
        base = out.get("direct", {}).get("total_s_median")
        for t in targets:
            tot = out[t]["total_s_median"]
            out[t]["ratio_to_direct"] = round(base / tot, 3) if base and tot else None
        for t in ON_OFF:
            if t in out and "wiregate" in out:
                out[f"{t}_on_off"] = _guard_ratio(out[t]["rows_per_s"],
                                                  out["wiregate"]["rows_per_s"])
                out[f"{t}_on_off_wire"] = _guard_ratio(out[t]["wire_rows_per_s"],
                                                       out["wiregate"]["wire_rows_per_s"])
        return out

    def to_json(self) -> dict[str, Any]:
        targets = self.settings["targets"]
        return {
            "machine": self.machine,
            "settings": self.settings,
            "summary": {"pgbench": self.tps_summary(targets),
                        "bulk_read": self.bulk_summary(targets)},
            "bulk_read_rows": self.bulk_rows,
            "bulk_read_bytes_estimated": self.bulk_bytes,
            "raw": {"pgbench": [asdict(r) for r in self.pgbench],
                    "bulk_read": [asdict(r) for r in self.bulk]},
            "errors": self.errors,
        }

    def _bulk_markdown(self, targets: Sequence[str]) -> list[str]:
        lines = [
            "",
            f"## Bulk read: `{BULKS[self.settings.get('bulk', 'pgbench')][0]}`",
            "",
            f"{self.bulk_rows:,} rows, ≈{self.bulk_bytes / 1e6:.1f} MB of DataRow messages; "
            f"psycopg 3, client-side cursor, text format; median of "
            f"{self.settings['bulk_runs']} run(s).",
            "",
        ]
        bulk = self.bulk_summary(targets)
        bhead = ["Target", "rows/s", "MB/s", "wire-only MB/s", "vs direct", "proxy CPU s"]
        lines.append("| " + " | ".join(bhead) + " |")
        lines.append("|---|" + "|".join("---:" for _ in bhead[1:]) + "|")
        for t in targets:
            b = bulk[t]
            lines.append("| " + " | ".join([
                t, _fmt(b["rows_per_s"], ",.0f"), _fmt(b["mb_per_s"], ".1f"),
                _fmt(b["wire_mb_per_s"], ".1f"),
                _fmt(b["ratio_to_direct"], ".2f", "×") if t != "direct" else "1.00×",
                _fmt(b["proxy_cpu_s_median"], ".2f") if t != "direct" else "-",
            ]) + " |")
        lines += [
            "",
            "rows/s and MB/s cover `execute` + `fetchall` (result received and converted to "
            "Python tuples); wire-only covers `execute` alone (complete result held by libpq). "
            "MB = Σ per row (7 + Σ per column (4 + text length)), the DataRow payload. "
            "vs direct = direct time / target time.",
        ]
        for t, label in ON_OFF.items():
            if f"{t}_on_off" in bulk:
                lines += ["", f"{label[0].upper()}{label[1:]} ({t} ÷ wiregate): "
                          + _fmt(bulk[f"{t}_on_off"], ".2f", "×") + " in rows/s, "
                          + _fmt(bulk[f"{t}_on_off_wire"], ".2f", "×") + " wire-only "
                          "(the part the proxy can slow down; `fetchall` is client work)."]
        return lines

    def to_markdown(self) -> str:
        targets: list[str] = self.settings["targets"]
        proxies = [t for t in targets if t != "direct"]
        has_direct = "direct" in targets
        compared = [t for t in ON_OFF if t in targets and "wiregate" in targets]
        m, s = self.machine, self.settings
        lines = [
            f"# Wiregate benchmark, {s['started']}",
            "",
            f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['kernel']}, "
            f"{m['memory_gb']} GB RAM",
            f"- PostgreSQL: {m['postgres_version']}",
            f"- pgbench: {m['pgbench_version']}; pgbouncer: {m.get('pgbouncer_version') or '-'}",
            f"- Wiregate: {m.get('wiregate_version') or '-'}"
            + (f" at {m['wiregate_commit']}" if m.get("wiregate_commit") else "")
            + (" + uncommitted changes to " + ", ".join(m["wiregate_uncommitted"])
               if m.get("wiregate_uncommitted") else "")
            + " "
            f"({s['wiregate_workers']} workers), Python {m['python']}"
            + (f"; `guarded` = the same with guardrails on, profile `{s['guarded_profile']}` "
               f"of `{s['policy_file']}`" if "guarded" in targets else ""),
            f"- pgbench -S, scale {SCALE}, {s['duration']} s per run, {s['runs']} run(s) per "
            f"cell (median shown), -j {s['threads']}, targets interleaved, sslmode=disable"
            + (" — **quick smoke run, not a measurement**" if s["quick"] else ""),
            "",
            "## pgbench -S (read-only point selects), transactions per second",
            "",
        ]
        head = ["Mode", "Clients"]
        for t in targets:
            head.append(f"{t} TPS")
            if t != "direct" and has_direct:
                head.append(f"{t} / direct")
        head += [ON_OFF[t] for t in compared]
        head += [f"{t} µs CPU/txn" for t in proxies]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
        for row in self.tps_summary(targets):
            cells = [row["mode"], str(row["clients"])]
            for t in targets:
                cells.append(_fmt(row[t]["tps_median"], ",.0f"))
                if t != "direct" and has_direct:
                    cells.append(_fmt(row[t]["ratio_to_direct"], ".2f", "×"))
            cells += [_fmt(row[f"{t}_on_off"], ".2f", "×") for t in compared]
            cells += [_fmt(row[t]["cpu_us_per_txn_median"], ".1f") for t in proxies]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            ("Ratio = proxy TPS / direct TPS (1.00 = no loss). " if has_direct else "")
            + "µs CPU/txn = CPU time of the proxy process tree (all workers) during the run "
            "divided by transactions completed.",
        ]
        for t in compared:
            ratios = [r[f"{t}_on_off"] for r in self.tps_summary(targets)]
            known = [r for r in ratios if r is not None]
            verdict = ("n/a" if not known else
                       ("yes" if len(known) == len(ratios) and min(known) >= GUARD_MIN
                        else "no") + f" (lowest {min(known):.2f}×)")
            label = ON_OFF[t]
            lines += [
                "",
                f"{label[0].upper()}{label[1:]} = {t} TPS / wiregate TPS (medians of the same "
                f"run). At least {GUARD_MIN:.2f}× in every mode and client count: {verdict}.",
            ]
        if self.settings["bulk_runs"]:
            lines += self._bulk_markdown(targets)
        if self.errors:
            lines += ["", "## Errors", ""] + [f"- {e.splitlines()[0]}" for e in self.errors]
        return "\n".join(lines) + "\n"


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if v is None else format(v, spec) + suffix


def _cmd_first_line(argv: Sequence[str]) -> str | None:
    try:
        res = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (res.stdout or res.stderr).strip()
    return text.splitlines()[0] if text else None


def host_info() -> dict[str, Any]:
    """The machine and the Wiregate code measured: what both sides' reports start with."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem_gb = round(kb / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    wg = None
    try:
        from importlib.metadata import version

        wg = version("wiregate")
    except Exception:
        pass
    commit = _cmd_first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = None
    try:
        res = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "proxy",
                              "protocols", "policies"], capture_output=True, text=True,
                             timeout=10)
        dirty = [line[3:] for line in res.stdout.splitlines()] if res.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": mem_gb,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "wiregate_version": wg,
        "wiregate_commit": commit,
        "wiregate_uncommitted": dirty,  # proxy code measured differs from the commit here
    }


def machine_info(pg_host: str, pg_port: int, pg_user: str) -> dict[str, Any]:
    import psycopg

    pgv = "unknown"
    settings: dict[str, str] = {}
    try:
        dsn = f"host={pg_host} port={pg_port} user={pg_user} dbname=postgres sslmode=disable"
        with psycopg.connect(dsn) as conn:
            got = conn.execute("SELECT version()").fetchone()
            pgv = got[0] if got else pgv
            for name in ("shared_buffers", "max_connections", "ssl"):
                r = conn.execute(f"SHOW {name}").fetchone()
                settings[name] = r[0] if r else ""
    except Exception:
        pass
    pgb = None
    for cand in (shutil.which("pgbouncer"), "/usr/sbin/pgbouncer"):
        if cand and os.access(cand, os.X_OK):
            pgb = _cmd_first_line([cand, "--version"])
            break
    return {
        **host_info(),
        "postgres_version": pgv,
        "postgres_settings": settings,
        "pgbench_version": _cmd_first_line(["pgbench", "--version"]),
        "pgbouncer_version": pgb,
    }


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    import mysql_bench

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 5 s, 1 run, 10 clients, one bulk read")
    ap.add_argument("--duration", type=int, default=None,
                    help="seconds per pgbench (and sysbench) run (20)")
    ap.add_argument("--runs", type=int, default=None, help="runs per cell, median taken (3)")
    ap.add_argument("--targets", default=",".join(ALL_TARGETS),
                    help="comma-separated subset of: " + ", ".join(ALL_TARGETS + EXTRA_TARGETS))
    ap.add_argument("--modes", default=",".join(ALL_MODES), help="pgbench -M modes")
    ap.add_argument("--clients", default=None, help="comma-separated client counts (10,50)")
    ap.add_argument("--threads", type=int, default=2, help="pgbench -j (2)")
    ap.add_argument("--workers", "--wiregate-workers", dest="workers", type=int, default=1,
                    help="Wiregate [server] workers (1: on 2 cores one process spends less "
                         "CPU per transaction than two)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up seconds per target (5)")
    ap.add_argument("--bulk-runs", type=int, default=None,
                    help="bulk reads per target, median taken (max(runs, 5); 1 with --quick)")
    ap.add_argument("--no-bulk", action="store_true", help="skip the bulk-read measurement")
    ap.add_argument("--bulk", choices=sorted(BULKS), default="pgbench",
                    help="bulk read: pgbench_accounts (default) or a table of distinct fake "
                         "PII (masked in the 'masked' target)")
    ap.add_argument("--no-pgbench", action="store_true", help="skip the pgbench runs")
    ap.add_argument("--pg-host", default="127.0.0.1")
    ap.add_argument("--pg-port", type=int, default=5432)
    ap.add_argument("--pg-user", default="postgres")
    ap.add_argument("--output", type=Path, default=None,
                    help="report path without extension (default benchmarks/results/<date>, "
                         "<date>-quick for --quick)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep configs and proxy logs")
    my = ap.add_argument_group(
        "MySQL/MariaDB side (benchmarks/mysql_bench.py; --quick, --duration, --runs, --warmup, "
        "--workers and --keep-tmp apply to it too)")
    my.add_argument("--mysql", action="store_true",
                    help="after the PostgreSQL side, run the MySQL side (what make bench does)")
    my.add_argument("--mysql-only", action="store_true", help="run only the MySQL side")
    mysql_bench.add_options(my, prefix="mysql-")
    args = ap.parse_args(argv)
    args.duration = args.duration or (5 if args.quick else 20)
    args.runs = args.runs or (1 if args.quick else 3)
    args.bulk_runs = args.bulk_runs or (1 if args.quick else max(args.runs, 5))
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    args.clients = ([int(c) for c in args.clients.split(",")] if args.clients
                    else [10] if args.quick else [10, 50])
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [t for t in args.targets if t not in ALL_TARGETS + EXTRA_TARGETS]
    if bad or not args.targets:
        ap.error(f"unknown target(s) {bad}; choose from {', '.join(ALL_TARGETS + EXTRA_TARGETS)}")
    badm = [m for m in args.modes if m not in ALL_MODES]
    if badm or not args.modes:
        ap.error(f"unknown mode(s) {badm}; choose from {', '.join(ALL_MODES)}")
    # Keep the canonical order so tables read direct | pgbouncer | wiregate | guarded.
    args.targets = [t for t in ALL_TARGETS + EXTRA_TARGETS if t in args.targets]
    args.mysql_settings = (mysql_bench.options(args, ap.error, prefix="mysql-")
                           if args.mysql or args.mysql_only else None)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = dt.datetime.now()
    tmp = Path(tempfile.mkdtemp(prefix="wiregate-bench-"))
    os.chmod(tmp, 0o755)
    status = 0
    try:
        if not args.mysql_only:
            try:
                status = _run(args, started, tmp)
            except BenchError as exc:
                print(f"\nbench: error: {exc}", file=sys.stderr)
                status = 1
            finally:
                stop_all()  # the MySQL side measures without PostgreSQL's proxies running
        if args.mysql_settings is not None:
            import mysql_bench

            try:
                status = max(status, mysql_bench.run(args.mysql_settings, tmp / "mysql",
                                                     dt.datetime.now()))
            except BenchError as exc:
                print(f"\nbench: error: {exc}", file=sys.stderr)
                status = max(status, 1)
        return status
    finally:
        stop_all()
        if args.keep_tmp:
            log(f"configs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _before(args: argparse.Namespace, clients: int) -> None:
    wait_for_headroom(args.pg_host, args.pg_port, args.pg_user, clients + 2)


def _after(target: Target) -> None:
    if target.name == "pgbouncer":
        release_pgbouncer_pool(target)


def _run(args: argparse.Namespace, started: dt.datetime, tmp: Path) -> int:
    if args.no_pgbench:
        args.modes, args.warmup = [], 0
    if shutil.which("pgbench") is None:
        raise BenchError("pgbench is not on PATH (Debian: apt-get install postgresql-client)")
    ensure_database(args.pg_host, args.pg_port, args.pg_user)

    targets: list[Target] = []
    for name in args.targets:
        if name == "direct":
            t = Target("direct", args.pg_host, args.pg_port, args.pg_user)
            check_query(t)
        elif name == "pgbouncer":
            t = start_pgbouncer(tmp, args.pg_host, args.pg_port, args.pg_user)
        elif name == "wiregate":
            t = start_wiregate(tmp, args.pg_host, args.pg_port, args.pg_user, args.workers)
        elif name == "guarded":
            t = start_wiregate(tmp, args.pg_host, args.pg_port, args.pg_user, args.workers,
                               profile=GUARDED_PROFILE, name="guarded")
        else:
            section = MASKING_SECTION
            if name == "detectors":
                section = section.replace('default_strategy = "redact"\n',
                                          'default_strategy = "redact"\n' + DETECTORS_LINE)
            t = start_wiregate(tmp, args.pg_host, args.pg_port, args.pg_user, args.workers,
                               profile=MASKED_PROFILE, name=name, masking=section)
        targets.append(t)

    report = Report(
        machine=machine_info(args.pg_host, args.pg_port, args.pg_user),
        settings={
            "started": started.strftime("%Y-%m-%d %H:%M"),
            "quick": args.quick,
            "duration": args.duration,
            "runs": args.runs,
            "clients": args.clients,
            "modes": args.modes,
            "threads": args.threads,
            "targets": args.targets,
            "wiregate_workers": args.workers,
            "guarded_profile": GUARDED_PROFILE if "guarded" in args.targets else None,
            "policy_file": (str(POLICY_FILE.relative_to(ROOT))
                            if "guarded" in args.targets else None),
            "warmup": args.warmup,
            "bulk_runs": 0 if args.no_bulk else args.bulk_runs,
            "bulk": args.bulk,
            "scale": SCALE,
        },
    )

    if args.warmup > 0:
        for t in targets:
            log(f"warm-up {t.name} ({args.warmup} s)")
            _before(args, args.clients[0])
            w = run_pgbench(t, "simple", args.clients[0], args.warmup, 0, args.threads)
            _after(t)
            if not w.ok:
                raise BenchError(f"warm-up against {t.name} failed: {w.error}\n"
                                 f"--- log tail ---\n{t.log_tail()}")

    cells = len(args.modes) * len(args.clients) * len(targets) * args.runs
    eta = cells * (args.duration + 1)
    log(f"{cells} pgbench runs of {args.duration} s, about {eta // 60} min {eta % 60} s")
    for run in range(1, args.runs + 1):
        for mode in args.modes:
            for clients in args.clients:
                for t in rotate(targets, run - 1):
                    _before(args, clients)
                    rec = run_pgbench(t, mode, clients, args.duration, run, args.threads)
                    _after(t)
                    report.pgbench.append(rec)
                    if rec.ok:
                        cpu = (f", {rec.proxy_cpu_us_per_txn:.1f} µs CPU/txn"
                               if rec.proxy_cpu_us_per_txn is not None else "")
                        log(f"run {run} {mode:8} c={clients:<3} {t.name:9} "
                            f"{rec.tps:10,.0f} tps{cpu}")
                    else:
                        msg = f"{t.name} {mode} c={clients} run {run}: {rec.error}"
                        report.errors.append(msg)
                        log("FAILED " + msg)
                        if t.proc is not None and t.proc.poll() is not None:
                            raise BenchError(f"{t.name} died (status {t.proc.returncode})\n"
                                             f"--- log tail ---\n{t.log_tail()}")

    if not args.no_bulk:
        bulk_sql = BULKS[args.bulk][0]
        report.bulk_rows, report.bulk_bytes = bulk_bytes(targets[0], args.bulk)
        run_bulk(targets[0], 0, bulk_sql)  # warm-up: page cache and buffers, not recorded
        for run in range(1, args.bulk_runs + 1):
            for t in rotate(targets, run - 1):
                _before(args, 1)
                b = run_bulk(t, run, bulk_sql)
                _after(t)
                report.bulk.append(b)
                if b.ok and b.total_s and b.wire_s:
                    log(f"bulk run {run} {t.name:9} {b.rows / b.total_s:10,.0f} rows/s "
                        f"{report.bulk_bytes / 1e6 / b.total_s:6.1f} MB/s "
                        f"(wire-only {report.bulk_bytes / 1e6 / b.wire_s:.1f} MB/s)")
                else:
                    report.errors.append(f"bulk read {t.name} run {run}: {b.error}")
                    log(f"FAILED bulk read {t.name}: {b.error}")

    for t in targets:  # proxy logs may explain failures or warnings
        if t.proc is not None and t.logfile is not None:
            report.machine.setdefault("proxy_log_tail", {})[t.name] = t.log_tail(20)

    md = report.to_markdown()
    out = args.output or RESULTS_DIR / (started.strftime("%Y-%m-%d")
                                        + ("-quick" if args.quick else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    print(md)
    log(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0 if not report.errors else 2


if __name__ == "__main__":
    sys.exit(main())

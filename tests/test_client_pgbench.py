"""pgbench through Wiregate: many concurrent clients in each query mode, and its own init.

The client database name ``test`` is routed to a dedicated upstream database, so the pgbench
tables never touch the shared one. Counts are checked directly on the server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator

import psycopg
import pytest

from proxy.server import ThreadedProxy
from tests.conftest import CLIENT_PASSWORD, CLIENT_USER, PgTarget

pytestmark = pytest.mark.postgres

PGBENCH = shutil.which("pgbench")
BENCH_DB = "wiregate_pgbench_test"
TIMEOUT = 60


def _env(password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=password, PGSSLMODE="disable", PGCONNECT_TIMEOUT="10", LC_ALL="C")
    return env


def _bench_dsn(pg: PgTarget) -> str:
    pw = f" password={pg.password}" if pg.password else ""
    return f"host={pg.host} port={pg.port} user={pg.user} dbname={BENCH_DB}{pw}"


def _count(pg: PgTarget, table: str) -> int:
    with psycopg.connect(_bench_dsn(pg), autocommit=True) as c:
        row = c.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def _pgbench(port: int, *args: str, user: str = CLIENT_USER, password: str = CLIENT_PASSWORD,
             dbname: str = "test") -> subprocess.CompletedProcess[str]:
    assert PGBENCH is not None
    return subprocess.run([PGBENCH, "-h", "127.0.0.1", "-p", str(port), "-U", user, *args,
                           dbname], capture_output=True, text=True, env=_env(password),
                          timeout=TIMEOUT)


@pytest.fixture(scope="module")
def bench_db(pg: PgTarget) -> PgTarget:
    if PGBENCH is None:
        pytest.skip("pgbench not installed")
    admin = f"host={pg.host} port={pg.port} user={pg.user} dbname=postgres" + (
        f" password={pg.password}" if pg.password else "")
    with psycopg.connect(admin, autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone():
            try:
                c.execute(f"CREATE DATABASE {BENCH_DB}")
            except psycopg.errors.DuplicateDatabase:
                pass
    cp = _pgbench(pg.port, "-i", "-s", "1", "-q", user=pg.user, password=pg.password,
                  dbname=BENCH_DB)
    assert cp.returncode == 0, cp.stderr
    return pg


@pytest.fixture
def bench_proxy(bench_db: PgTarget,
                proxy_factory: Callable[..., ThreadedProxy]) -> Iterator[int]:
    p = proxy_factory(upstream={"dbname": BENCH_DB})
    yield p.port


def _check_report(cp: subprocess.CompletedProcess[str]) -> int:
    """Assert a clean pgbench run; return the number of transactions processed."""
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    failed = re.search(r"number of failed transactions: (\d+)", cp.stdout)
    if failed:
        assert failed.group(1) == "0", cp.stdout
    done = re.search(r"number of transactions actually processed: (\d+)", cp.stdout)
    assert done, cp.stdout
    tps = re.search(r"tps = ([\d.]+)", cp.stdout)
    assert tps and float(tps.group(1)) > 0, cp.stdout
    assert "error" not in cp.stderr.lower(), cp.stderr
    return int(done.group(1))


def test_route_reaches_the_bench_database(bench_proxy: int) -> None:
    with psycopg.connect(f"host=127.0.0.1 port={bench_proxy} user={CLIENT_USER} "
                         f"password={CLIENT_PASSWORD} dbname=test sslmode=disable") as c:
        assert c.execute("SELECT current_database(), count(*) FROM pgbench_branches"
                         ).fetchone() == (BENCH_DB, 1)


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_select_only_each_query_mode(bench_proxy: int, mode: str) -> None:
    cp = _pgbench(bench_proxy, "-n", "-T", "3", "-c", "4", "-j", "2", "-M", mode, "-S")
    assert f"query mode: {mode}" in cp.stdout
    assert _check_report(cp) > 100


@pytest.mark.parametrize("where", ["in-process", "wiregate-serve"])
def test_tpcb_like_writes_history(request: pytest.FixtureRequest, bench_db: PgTarget,
                                  where: str) -> None:
    if where == "wiregate-serve":
        port = request.getfixturevalue("proxy_process")(
            upstream={"dbname": BENCH_DB}, server={"workers": 2}).port
    else:
        port = request.getfixturevalue("bench_proxy")
    before = _count(bench_db, "pgbench_history")
    cp = _pgbench(port, "-n", "-T", "3", "-c", "4", "-j", "2")
    assert 'transaction type: <builtin: TPC-B (sort of)>' in cp.stdout
    done = _check_report(cp)
    assert done > 10
    # Every TPC-B transaction inserts exactly one history row.
    assert _count(bench_db, "pgbench_history") - before == done


def test_initialise_through_proxy(bench_proxy: int, bench_db: PgTarget) -> None:
    # Drop, create, client-side COPY of 100k rows, vacuum, primary keys, all via the proxy.
    cp = _pgbench(bench_proxy, "-i", "-s", "1", "-I", "dtgvp")
    assert cp.returncode == 0, cp.stderr
    assert "done in" in cp.stderr
    assert _count(bench_db, "pgbench_accounts") == 100_000
    assert _count(bench_db, "pgbench_tellers") == 10
    assert _count(bench_db, "pgbench_branches") == 1
    assert _count(bench_db, "pgbench_history") == 0

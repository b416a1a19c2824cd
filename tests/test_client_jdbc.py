"""PgJDBC through Wiregate: what Java applications and DBeaver-style tools do.

``tests/java/JdbcCheck.java`` is compiled at test time and run once through the proxy and once
against the server directly; it prints one ``KEY value`` line per check, and both runs must
print the same lines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from proxy.server import ThreadedProxy
from tests.conftest import CLIENT_PASSWORD, CLIENT_USER, PgTarget, pg_target
from tests.policies import TrackEverything

pytestmark = pytest.mark.postgres

JAR = Path("/usr/share/java/postgresql.jar")
SOURCE = Path(__file__).resolve().parent / "java" / "JdbcCheck.java"
JAVA = shutil.which("java")
JAVAC = shutil.which("javac")


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if JAVA is None or JAVAC is None or not JAR.is_file():
        pytest.skip("java/javac or PgJDBC not installed")
    out = tmp_path_factory.mktemp("jdbc")
    cp = subprocess.run([JAVAC, "-encoding", "UTF-8", "-cp", str(JAR), "-d", str(out),
                         str(SOURCE)], capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    return out


@pytest.fixture
def table(pg: PgTarget) -> Iterator[str]:
    name = f"wg_jdbc_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_target().dsn(), autocommit=True) as c:
        c.execute(f"CREATE TABLE {name} (id int primary key, label text, amount numeric(10,2))")
    yield name
    with psycopg.connect(pg_target().dsn(), autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture(params=["pass-through", "rewriting-relay"])
def proxy_port(request: pytest.FixtureRequest,
               proxy_factory: Callable[..., ThreadedProxy]) -> int:
    policy = TrackEverything() if request.param == "rewriting-relay" else None
    return proxy_factory(policy=policy).port


def run_check(classes: Path, port: int, user: str, password: str, table: str) -> dict[str, str]:
    assert JAVA is not None
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    cp = subprocess.run([JAVA, "-Dfile.encoding=UTF-8", "-Dstdout.encoding=UTF-8", "-cp",
                         f"{classes}{os.pathsep}{JAR}", "JdbcCheck", str(port), user,
                         password or "unused", table],
                        capture_output=True, timeout=60, env=env)
    stdout = cp.stdout.decode("utf-8")
    assert cp.returncode == 0, (stdout, cp.stderr.decode("utf-8", "replace"))
    lines = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        lines[key] = value
    return lines


def test_jdbc_through_proxy_matches_direct(classes: Path, proxy_port: int, pg: PgTarget,
                                           table: str) -> None:
    via = run_check(classes, proxy_port, CLIENT_USER, CLIENT_PASSWORD, table)
    assert via["CONNECTED"] == "PostgreSQL"
    # prepareThreshold=1: the statement runs under a named server-side statement.
    assert via["NAMED_STATEMENTS"] == "1"
    assert int(via["NAMED_RUNS"]) >= 5
    assert via["PARAM_RESULTS"] == "".join(f"{i * 2}:ü{i}!:{i}.5;" for i in range(6))
    assert via["BATCH_UPDATED"] == "100"
    assert via["READBACK"] == "100 5050 50.50 [row 1 ✓] [row 99 ✓] 00:01:39"
    assert via["READBACK_FILTERED"] == "[25, 50, 75, 100]"
    assert via["ERROR_STATE"] == "22012"
    assert via["AFTER_ERROR"] == "after_error"
    assert via["TX_IDS"] == "1001"
    assert via["TABLE_FOUND"] == "1"
    assert via["COLUMNS"] == "id:int4,label:text,amount:numeric,"
    assert via["PRIMARY_KEY"] == "id"
    assert via["SCHEMA_PUBLIC"] == "1"
    assert via["DONE"] == "ok"

    direct = run_check(classes, pg.port, pg.user, pg.password, table)
    assert via == direct

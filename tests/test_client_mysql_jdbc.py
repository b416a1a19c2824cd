"""MariaDB Connector/J through Wiregate: what Java applications and DBeaver do on MariaDB.

``tests/java/MariaDbJdbcCheck.java`` is compiled at test time and run once through the proxy
and once against the server directly; it prints one ``KEY value`` line per check, and both runs
must print the same lines. With the guardrails on (profile agent-rw) it also checks that a
refused DROP TABLE is an SQLException with the rule's error number, and that the connection
goes on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pymysql
import pytest

from proxy.server import ThreadedProxy
from tests.conftest import CLIENT_PASSWORD, CLIENT_USER, ROOT, MySQLTarget

pytestmark = pytest.mark.mysql

JARS = [Path("/usr/share/java/mariadb-java-client.jar"),
        *sorted(Path("/usr/share/java").glob("mariadb-java-client*.jar"))]
JAR = next((j for j in JARS if j.is_file()), JARS[0])
SOURCE = Path(__file__).resolve().parent / "java" / "MariaDbJdbcCheck.java"
JAVA = shutil.which("java")
JAVAC = shutil.which("javac")
POLICY = str(ROOT / "examples" / "policy.toml")


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if JAVA is None or JAVAC is None or not JAR.is_file():
        pytest.skip("java/javac or MariaDB Connector/J (libmariadb-java) not installed")
    out = tmp_path_factory.mktemp("mariadb-jdbc")
    cp = subprocess.run([JAVAC, "-encoding", "UTF-8", "-cp", str(JAR), "-d", str(out),
                         str(SOURCE)], capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    return out


def _direct(my: MySQLTarget) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    return pymysql.connect(host=my.host, port=my.port, user=my.user, password=my.password,
                           database=my.database, autocommit=True, ssl_disabled=True)


@pytest.fixture
def tables(mysql: MySQLTarget) -> Iterator[Callable[[], str]]:
    """Scratch tables in database test, dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"wg_mjdbc_{uuid.uuid4().hex[:10]}"
        with _direct(mysql) as c, c.cursor() as cur:
            cur.execute(f"CREATE TABLE {name} (id int primary key, label varchar(100) "
                        "CHARACTER SET utf8mb4, amount decimal(10,2), at datetime NULL)")
        made.append(name)
        return name

    yield make
    with _direct(mysql) as c, c.cursor() as cur:
        for name in made:
            cur.execute(f"DROP TABLE IF EXISTS {name}")


def run_check(classes: Path, port: int, user: str, password: str, table: str,
              guarded: bool = False) -> dict[str, str]:
    assert JAVA is not None
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    cp = subprocess.run([JAVA, "-Dfile.encoding=UTF-8", "-Dstdout.encoding=UTF-8", "-cp",
                         f"{classes}{os.pathsep}{JAR}", "MariaDbJdbcCheck", str(port), user,
                         password, table, "1" if guarded else "0"],
                        capture_output=True, timeout=60, env=env)
    stdout = cp.stdout.decode("utf-8")
    assert cp.returncode == 0, (stdout, cp.stderr.decode("utf-8", "replace"))
    lines = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        lines[key] = value
    return lines


EXPECTED_ROWS = ("1|row 1 ✓😀|0.01|2024-02-29 12:00:01.0;2|row 2 ✓😀|0.02|2024-02-29 12:00:02.0;"
                 "6|row 6 ✓😀|0.06|2024-02-29 12:00:06.0;7|row 7 ✓😀|0.07|2024-02-29 12:00:07.0;"
                 "11|null|null|null;")


@pytest.mark.parametrize("guardrails", [False, True], ids=["pass-through", "agent-rw"])
def test_connector_j_through_proxy_matches_direct(
        classes: Path, mysql_proxy_factory: Callable[..., ThreadedProxy], mysql: MySQLTarget,
        tables: Callable[[], str], guardrails: bool) -> None:
    listener: dict[str, object] = {}
    if guardrails:
        listener = {"guardrails": {"policy_file": POLICY}, "upstream": {"profile": "agent-rw"}}
    proxy = mysql_proxy_factory(**listener)
    via = run_check(classes, proxy.mysql_port, CLIENT_USER, CLIENT_PASSWORD, tables(),
                    guarded=guardrails)
    assert via["CONNECTED"].startswith("MariaDB ")
    assert via["CATALOG"] == "test"
    assert via["PARAM_RESULTS"] == EXPECTED_ROWS
    # Server-side prepared statements: one prepare per statement, one execute per run.
    assert via["SERVER_PREPARES"] == "2"
    assert via["SERVER_EXECUTES"] == "14"
    assert via["BATCH_UPDATED"] == "50"
    assert via["READBACK"] == ("61 6291 6225.55 [batch 100] [row 9 ✓😀] 10")
    assert via["ERROR"] == "1146 42S02"
    assert via["AFTER_ERROR"] == "after_error"
    assert via["TX_IDS"] == "1001"
    assert via["TABLE_FOUND"] == "1"
    assert via["COLUMNS"] == "id:INT:0,label:VARCHAR:1,amount:DECIMAL:1,at:DATETIME:1,"
    assert via["PRIMARY_KEY"] == "id"
    assert via["CATALOG_TEST"] == "1"
    assert via["DONE"] == "ok"
    if guardrails:
        assert via.pop("REFUSED") == "1227 42000"
        message = via.pop("REFUSED_MESSAGE")
        assert "wiregate: blocked by rule no-ddl" in message, message
        assert via.pop("REFUSED_PREPARED") == "1227 42000"
        assert via.pop("AFTER_REFUSAL") == "62"    # the table is still there, rows and all

    direct = run_check(classes, mysql.port, mysql.user, mysql.password, tables())
    assert via == direct

"""The single decision point and the single rewrite point, through real clients.

Policies are injected (deny-all, deny by statement kind, hold) to prove every path a statement
can take: simple, unnamed extended, named prepared, pipelines, inside a transaction.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

import asyncpg
import psycopg
import pytest
from psycopg import pq

from policies.decision import (
    ALLOW,
    Allow,
    CellRewrite,
    Column,
    Decision,
    Deny,
    Hold,
    SessionInfo,
    Statement,
)
from proxy.server import ThreadedProxy
from tests.conftest import CLIENT_PASSWORD, CLIENT_USER, client_dsn, pg_target

pytestmark = pytest.mark.postgres


class DenyKeyword:
    """Refuses statements whose text mentions a keyword; records what it was asked."""

    def __init__(self, *keywords: str) -> None:
        self.keywords = [k.lower() for k in keywords]
        self.seen: list[Statement] = []

    def decide(self, statement: Statement, session: SessionInfo) -> Decision:
        self.seen.append(statement)
        text = statement.sql.lower()
        for k in self.keywords:
            if k in text:
                return Deny("42501", f"wiregate: blocked by rule test-{k}: {k} is not allowed",
                            hint="test policy", rule=f"test-{k}")
        return ALLOW


class DenyAll:
    def decide(self, statement: Statement, session: SessionInfo) -> Decision:
        return Deny("42501", "wiregate: blocked by rule deny-all: nothing is allowed",
                    rule="deny-all")


@pytest.fixture
def deny_drop(proxy_factory: Callable[..., ThreadedProxy]) -> tuple[str, DenyKeyword]:
    policy = DenyKeyword("drop")
    p = proxy_factory(policy=policy)
    return client_dsn(p.port), policy


def _setup_table(_via: object, name: str) -> None:
    """Create the table directly on the server, so setup does not depend on the policy."""
    with psycopg.connect(pg_target().dsn(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute(f"CREATE TABLE {name} (id int primary key, v text)")
        conn.execute(f"INSERT INTO {name} VALUES (1, 'one'), (2, 'two')")


def test_deny_all_every_statement_refused_session_usable(
        proxy_factory: Callable[..., ThreadedProxy]) -> None:
    p = proxy_factory(policy=DenyAll())
    with psycopg.connect(client_dsn(p.port), autocommit=True) as conn:
        for _ in range(3):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
                conn.execute("SELECT 1")
            assert "deny-all" in str(ei.value)
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE


def test_simple_protocol_denial(deny_drop: tuple[str, DenyKeyword]) -> None:
    dsn, policy = deny_drop
    with psycopg.connect(dsn, autocommit=True) as conn:
        _setup_table(conn, "wg_keep")
        cur = conn.cursor()
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
            cur.execute("DROP TABLE wg_keep", prepare=False)
        diag = ei.value.diag
        assert diag.sqlstate == "42501"
        assert diag.message_primary is not None and "test-drop" in diag.message_primary
        assert diag.message_hint == "test policy"
        # the session stays usable and the table is still there
        assert conn.execute("SELECT count(*) FROM wg_keep").fetchone() == (2,)
    assert any(s.source in ("query", "parse") and "DROP" in s.sql for s in policy.seen)


def test_multi_statement_query_refused_whole(deny_drop: tuple[str, DenyKeyword]) -> None:
    """A multi-statement simple Query is refused whole: nothing before the bad one runs."""
    dsn, _ = deny_drop
    with psycopg.connect(dsn, autocommit=True) as conn:
        _setup_table(conn, "wg_multi")
        # no parameters: psycopg sends one simple Query holding both statements
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
            conn.execute("DELETE FROM wg_multi WHERE id = 1; DROP TABLE wg_multi")
        assert "test-drop" in str(ei.value)
        assert conn.execute("SELECT count(*) FROM wg_multi").fetchone() == (2,)


def test_unnamed_extended_denial(deny_drop: tuple[str, DenyKeyword]) -> None:
    dsn, _ = deny_drop
    with psycopg.connect(dsn, autocommit=True) as conn:
        _setup_table(conn, "wg_ext")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE wg_ext WHERE %s", (1,))  # extended: has parameters
        assert conn.execute("SELECT v FROM wg_ext WHERE id = %s", (2,)).fetchone() == ("two",)


def test_named_prepared_denial_and_reuse(deny_drop: tuple[str, DenyKeyword]) -> None:
    dsn, _ = deny_drop
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as conn:
        _setup_table(conn, "wg_named")
        for _ in range(3):  # prepared on first use with a name, then reused
            assert conn.execute("SELECT v FROM wg_named WHERE id = %s", (1,),
                                prepare=True).fetchone() == ("one",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE wg_named", prepare=True)
        assert conn.execute("SELECT v FROM wg_named WHERE id = %s", (2,),
                            prepare=True).fetchone() == ("two",)


def test_denial_inside_transaction_sets_failed_state(deny_drop: tuple[str, DenyKeyword]) -> None:
    dsn, _ = deny_drop
    with psycopg.connect(dsn) as conn:  # not autocommit: psycopg opens a transaction
        _setup_table(conn, "wg_txn")
        conn.commit()
        conn.execute("UPDATE wg_txn SET v = 'changed' WHERE id = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE wg_txn")
        assert conn.info.transaction_status == pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        # the update before the denial was rolled back with the transaction
        assert conn.execute("SELECT v FROM wg_txn WHERE id = 1").fetchone() == ("one",)


def test_pipeline_stays_in_step(deny_drop: tuple[str, DenyKeyword]) -> None:
    dsn, _ = deny_drop
    with psycopg.connect(dsn, autocommit=True) as conn:
        _setup_table(conn, "wg_pipe")
        with conn.pipeline() as p:
            c1 = conn.execute("SELECT v FROM wg_pipe WHERE id = %s", (1,))
            p.sync()
            c2 = conn.cursor()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c2.execute("DROP TABLE wg_pipe WHERE id = %s", (1,))
                p.sync()
            c3 = conn.execute("SELECT v FROM wg_pipe WHERE id = %s", (2,))
            p.sync()
            c4 = conn.execute("SELECT count(*) FROM wg_pipe")
        assert c1.fetchone() == ("one",)
        assert c3.fetchone() == ("two",)
        assert c4.fetchone() == (2,)


def test_pipeline_denial_rolls_back_earlier_statements_of_its_batch(
        deny_drop: tuple[str, DenyKeyword]) -> None:
    """Within one Sync batch (an implicit transaction) the denial undoes what came before."""
    dsn, _ = deny_drop
    with psycopg.connect(dsn, autocommit=True) as conn:
        _setup_table(conn, "wg_batch")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with conn.pipeline():
                conn.execute("UPDATE wg_batch SET v = %s WHERE id = 1", ("changed",))
                conn.execute("DROP TABLE wg_batch WHERE %s", (1,))
        assert conn.execute("SELECT v FROM wg_batch WHERE id = 1").fetchone() == ("one",)


def test_asyncpg_denial_and_prepared(proxy_factory: Callable[..., ThreadedProxy]) -> None:
    p = proxy_factory(policy=DenyKeyword("drop"))

    async def run() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=p.port, user=CLIENT_USER,
                                     password=CLIENT_PASSWORD, database="test", ssl=False)
        try:
            assert await conn.fetchval("SELECT $1::int + 1", 41) == 42
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DROP TABLE IF EXISTS nothing_here")
            stmt = await conn.prepare("SELECT $1::text || 'x'")
            assert await stmt.fetchval("a") == "ax"
            async with conn.transaction():
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch("SELECT 1 /* drop */")
                raise_in_failed = False
                try:
                    await conn.fetch("SELECT 1")
                except asyncpg.InFailedSQLTransactionError:
                    raise_in_failed = True
                assert raise_in_failed
                raise asyncpg.exceptions.InterfaceError("rollback")  # leave the transaction
        except asyncpg.exceptions.InterfaceError as exc:
            assert "rollback" in str(exc)
        finally:
            assert await conn.fetchval("SELECT 7") == 7
            await conn.close()

    asyncio.run(run())


class Approver:
    """Approves or refuses after a delay, from another task — as a human would."""

    def __init__(self, approve: bool) -> None:
        self.approve = approve
        self.asked: list[str] = []

    async def request(self, statement: Statement, session: SessionInfo, hold: Hold) -> Decision:
        self.asked.append(statement.sql)
        await asyncio.sleep(0.2)
        if self.approve:
            return ALLOW
        return Deny("42501", "wiregate: approval refused by reviewer", rule=hold.rule)


class HoldUpdates:
    def decide(self, statement: Statement, session: SessionInfo) -> Decision:
        if statement.sql.lstrip().upper().startswith("UPDATE"):
            return Hold("updates need a second pair of eyes", rule="hold-updates")
        return ALLOW


@pytest.mark.parametrize("approve", [True, False])
def test_hold_runs_after_approval_in_same_session(
        proxy_factory: Callable[..., ThreadedProxy], approve: bool) -> None:
    approver = Approver(approve)
    p = proxy_factory(policy=HoldUpdates(), approver=approver)
    with psycopg.connect(client_dsn(p.port), autocommit=True) as conn:
        _setup_table(conn, "wg_hold")
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        if approve:
            conn.execute("UPDATE wg_hold SET v = %s WHERE id = 1", ("approved",))
        else:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("UPDATE wg_hold SET v = %s WHERE id = 1", ("approved",))
        # same upstream backend: the statement ran (or not) inside the live session
        assert conn.execute("SELECT pg_backend_pid()").fetchone() == pid
        assert conn.execute("SELECT v FROM wg_hold WHERE id = 1").fetchone() == (
            ("approved",) if approve else ("one",))
    assert len(approver.asked) == 1


def test_hold_without_approver_is_refused(proxy_factory: Callable[..., ThreadedProxy]) -> None:
    p = proxy_factory(policy=HoldUpdates())
    with psycopg.connect(client_dsn(p.port), autocommit=True) as conn:
        _setup_table(conn, "wg_hold2")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
            conn.execute("UPDATE wg_hold2 SET v = 'x' WHERE id = 1")
        assert "hold-updates" in str(ei.value)
        assert conn.execute("SELECT v FROM wg_hold2 WHERE id = 1").fetchone() == ("one",)


def test_policy_exception_fails_closed(proxy_factory: Callable[..., ThreadedProxy]) -> None:
    class Broken:
        def decide(self, statement: Statement, session: SessionInfo) -> Decision:
            raise RuntimeError("bug")

    p = proxy_factory(policy=Broken())
    with psycopg.connect(client_dsn(p.port), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InternalError_) as ei:
            conn.execute("SELECT 1")
        assert "fails closed" in (ei.value.diag.message_hint or "")


# ---------------------------------------------------------------------------- rewrite point


class UpperText:
    """Rewrites text cells of columns named ``v`` to upper case (text and binary format:
    PostgreSQL's binary form of text is its bytes, so the same function serves both)."""

    tracks_results = True

    def __init__(self) -> None:
        self.planned: list[list[Column]] = []
        self.lock = threading.Lock()

    def decide(self, statement: Statement, session: SessionInfo) -> Decision:
        return Allow(transform=self)

    def plan(self, columns: Sequence[Column]) -> dict[int, CellRewrite]:
        with self.lock:
            self.planned.append(list(columns))
        return {c.index: _upper for c in columns if c.name == "v" and c.type_oid == 25}


def _upper(value: bytes | None) -> bytes | None:
    return None if value is None else value.upper()


@pytest.fixture
def upper(proxy_factory: Callable[..., ThreadedProxy]) -> tuple[str, UpperText]:
    t = UpperText()
    p = proxy_factory(policy=t)
    return client_dsn(p.port), t


def test_rewrite_simple_and_extended_text(upper: tuple[str, UpperText]) -> None:
    dsn, _ = upper
    with psycopg.connect(dsn, autocommit=True) as conn:
        _setup_table(conn, "wg_rw")
        cur = conn.cursor()
        cur.execute("SELECT id, v FROM wg_rw ORDER BY id", prepare=False)
        assert cur.fetchall() == [(1, "ONE"), (2, "TWO")]
        assert conn.execute("SELECT v, v AS w FROM wg_rw WHERE id = %s", (1,)).fetchone() == (
            "ONE", "one")
        # multi-statement simple query: each result set planned on its own
        cur = conn.execute("SELECT v FROM wg_rw WHERE id = 1; SELECT 'x' AS v2, v FROM wg_rw "
                           "WHERE id = 2")
        rows = [cur.fetchall()]
        while cur.nextset():
            rows.append(cur.fetchall())
        assert rows == [[("ONE",)], [("x", "TWO")]]


def test_rewrite_binary_and_named_prepared(upper: tuple[str, UpperText]) -> None:
    dsn, policy = upper
    with psycopg.connect(dsn, autocommit=True) as conn:
        _setup_table(conn, "wg_rwb")
        for _ in range(3):
            cur = conn.cursor(binary=True)
            cur.execute("SELECT id, v, NULL::text AS v FROM wg_rwb WHERE id = %s", (2,),
                        prepare=True)
            assert cur.fetchone() == (2, "TWO", None)
        binary_plans = [cols for cols in policy.planned if any(c.format == 1 for c in cols)]
        assert binary_plans, "binary result columns reached the transform with format 1"


def test_rewrite_without_describe_asyncpg(proxy_factory: Callable[..., ThreadedProxy]) -> None:
    """asyncpg binds cached statements without a Describe: the rows are still rewritten."""
    p = proxy_factory(policy=UpperText())

    async def run() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=p.port, user=CLIENT_USER,
                                     password=CLIENT_PASSWORD, database="test", ssl=False)
        try:
            stmt = await conn.prepare("SELECT 'abc'::text AS v, 'abc'::text AS other")
            for _ in range(3):
                assert tuple(await stmt.fetchrow()) == ("ABC", "abc")
            async with conn.transaction():
                cur = await conn.cursor("SELECT g::text AS v FROM generate_series(1, 5) g")
                assert [r[0] for r in await cur.fetch(5)] == ["1", "2", "3", "4", "5"]
            assert await conn.fetchval("SELECT 'q'::text AS v") == "Q"
        finally:
            await conn.close()

    asyncio.run(run())


def test_rewrite_server_side_cursor_portal_suspended(upper: tuple[str, UpperText]) -> None:
    dsn, _ = upper
    with psycopg.connect(dsn) as conn:
        with conn.cursor(name="wg_cur") as cur:
            cur.itersize = 3
            cur.execute("SELECT 'row' || g AS v FROM generate_series(1, 10) g")
            assert [r[0] for r in cur] == [f"ROW{i}" for i in range(1, 11)]


def test_untouched_results_are_forwarded_byte_for_byte(
        proxy_factory: Callable[..., ThreadedProxy], pg: object) -> None:
    """With nothing to rewrite, what the client receives equals what a direct client gets."""
    p = proxy_factory()
    sql = "SELECT g, md5(g::text), g::float8 / 3 FROM generate_series(1, 2000) g"
    with psycopg.connect(client_dsn(p.port), autocommit=True) as via:
        a = via.execute(sql).fetchall()
        b = via.cursor(binary=True).execute(sql).fetchall()
    with psycopg.connect(pg_target().dsn(), autocommit=True) as direct:
        assert a == direct.execute(sql).fetchall()
        assert b == direct.cursor(binary=True).execute(sql).fetchall()


def test_cancel_while_held_abandons_the_statement(
        proxy_factory: Callable[..., ThreadedProxy]) -> None:
    class SlowApprover:
        async def request(self, statement: Statement, session: SessionInfo,
                          hold: Hold) -> Decision:
            await asyncio.sleep(30)
            return ALLOW

    p = proxy_factory(policy=HoldUpdates(), approver=SlowApprover())
    with psycopg.connect(client_dsn(p.port), autocommit=True) as conn:
        _setup_table(conn, "wg_hold_cancel")
        timer = threading.Timer(0.5, conn.cancel_safe)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("UPDATE wg_hold_cancel SET v = 'x' WHERE id = 1")
        timer.join()
        assert conn.execute("SELECT v FROM wg_hold_cancel WHERE id = 1").fetchone() == ("one",)

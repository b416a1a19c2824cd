"""Masking through real clients: masked columns come back masked in every format, derived
values are masked whole, filtering on a masked column still works, and the paths the
transform does not cover yet are refused rather than left open."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

from protocols.postgres import messages as m
from tests.conftest import CLIENT_PASSWORD, CLIENT_USER, PgTarget, client_dsn
from tests.pgwire import RawClient

ROWS = [(1, "Jane Roe", "jane.roe@example.com", "078-05-1120", "4242424242424242"),
        (2, "John Doe", "john.doe@example.org", "219-09-9999", "5555555555554444")]
SECRETS: list[str] = [str(r[i]) for r in ROWS for i in (2, 3, 4)]


@pytest.fixture
def world(pg: PgTarget, proxy_factory: Any, tmp_path: Path) -> Iterator[tuple[str, int]]:
    schema = f"wg_mask_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.customers (id int PRIMARY KEY, full_name text, "
                     "email text UNIQUE, ssn text, card text)")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {schema}.customers VALUES (%s, %s, %s, %s, %s)",
                            ROWS)
        conn.execute(f"CREATE VIEW {schema}.contacts AS SELECT id, email FROM "
                     f"{schema}.customers")
        conn.execute(f"CREATE TABLE {schema}.notes (id serial, body text)")
        conn.execute(f"CREATE FUNCTION {schema}.leak() RETURNS text LANGUAGE sql STABLE "
                     f"AS $$ SELECT email FROM {schema}.customers ORDER BY id LIMIT 1 $$")
    policy = tmp_path / "policy.toml"
    policy.write_text(f"""
[profiles.agent]
[[profiles.agent.rule]]
id = "no-drop"
kind = "ddl"
allow_create = ["table"]
[profiles.agent.masking]
default_strategy = "redact"
[[profiles.agent.masking.column]]
columns = ["{schema}.customers.email"]
strategy = "email"
[[profiles.agent.masking.column]]
columns = ["{schema}.customers.card"]
strategy = "partial"
keep_last = 4
[[profiles.agent.masking.column]]
columns = ["{schema}.customers.ssn"]
strategy = "redact"
""")
    proxy = proxy_factory(guardrails={"policy_file": str(policy)},
                          upstream={"profile": "agent"})
    yield schema, proxy.port
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def no_secret(rows: Any) -> None:
    text = repr(rows)
    secret: str
    for secret in SECRETS:
        for form in (secret, secret.upper(), secret[::-1]):
            assert form not in text, (form, rows)


@pytest.mark.parametrize("binary", [False, True])
def test_select_star_is_masked_in_text_and_binary(world: tuple[str, int], binary: bool) -> None:
    schema, port = world
    with psycopg.connect(client_dsn(port)) as conn:
        rows = conn.cursor(binary=binary).execute(
            f"SELECT * FROM {schema}.customers ORDER BY id").fetchall()
    assert rows[0] == (1, "Jane Roe", "j***@example.com", "****", "************4242")
    no_secret(rows)


def test_must_work_reads_and_derived_values(world: tuple[str, int]) -> None:
    schema, port = world
    with psycopg.connect(client_dsn(port)) as conn:
        point = conn.execute(f"SELECT full_name FROM {schema}.customers WHERE email = %s",
                             ("jane.roe@example.com",)).fetchall()
        assert point == [("Jane Roe",)]
        derived = conn.execute(f"SELECT upper(email), email || '', lower(ssn), "
                               f"encode(convert_to(card, 'UTF8'), 'base64') "
                               f"FROM {schema}.customers").fetchall()
        assert all(cell == "****" for row in derived for cell in row)
        through_view = conn.execute(f"SELECT email FROM {schema}.contacts ORDER BY id").fetchall()
        assert through_view == [("j***@example.com",), ("j***@example.org",)]
        sub = conn.execute(f"SELECT e FROM (SELECT email AS e FROM {schema}.customers) s "
                           "ORDER BY 1").fetchall()
        no_secret(sub + derived + through_view)
        prepared = [conn.execute(f"SELECT email FROM {schema}.customers WHERE id = %s", (1,),
                                 prepare=True).fetchone() for _ in range(3)]
        assert prepared == [("j***@example.com",)] * 3


def test_asyncpg_binary_is_masked(world: tuple[str, int]) -> None:
    schema, port = world

    async def run() -> list[Any]:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user=CLIENT_USER,
                                     password=CLIENT_PASSWORD, database="test", ssl=False)
        try:
            return [tuple(r) for r in await conn.fetch(
                f"SELECT id, email, card FROM {schema}.customers ORDER BY id")]
        finally:
            await conn.close()

    rows = asyncio.run(run())
    assert rows[1] == (2, "j***@example.org", "************4444")
    no_secret(rows)


@pytest.mark.parametrize("sql", [
    "COPY (SELECT email FROM {s}.customers) TO STDOUT",
    "COPY {s}.customers TO STDOUT",
    "SELECT 1; SELECT email FROM {s}.customers",
    "COPY (SELECT upper(email) FROM {s}.contacts) TO STDOUT WITH (FORMAT csv)",
    "COPY {s}.customers (id, ssn) TO STDOUT WITH (FORMAT binary)",
    # copies of masked values into places where they would be read back unmasked
    "UPDATE {s}.customers SET full_name = ssn WHERE id = 1",
    "UPDATE {s}.customers SET full_name = c2.email FROM {s}.customers c2 WHERE c2.id = 2 "
    "AND {s}.customers.id = 1",
    "INSERT INTO {s}.notes (body) SELECT card FROM {s}.customers",
    "INSERT INTO {s}.notes (body) VALUES ((SELECT lower(email) FROM {s}.customers LIMIT 1))",
    "CREATE TABLE {s}.copy AS SELECT id, email FROM {s}.customers",
    "SELECT email INTO {s}.copy2 FROM {s}.customers",
    "SELECT set_config('wg.x', email, false) FROM {s}.customers",
    "SELECT pg_notify('ch', ssn) FROM {s}.customers",
    "UPDATE {s}.customers SET email = ssn WHERE id = 1",   # masked, but not the same way
    "INSERT INTO {s}.notes (body) SELECT {s}.leak()",        # a function may read anything
])
def test_uncovered_paths_are_refused(world: tuple[str, int], sql: str) -> None:
    schema, port = world
    with psycopg.connect(client_dsn(port), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
            conn.execute(sql.format(s=schema))
        assert "wiregate.masking" in str(ei.value)
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("binary", [False, True])
def test_cursors_are_masked_at_every_fetch(world: tuple[str, int], binary: bool) -> None:
    schema, port = world
    kind = "BINARY CURSOR" if binary else "CURSOR"
    with psycopg.connect(client_dsn(port), autocommit=True) as conn:
        conn.execute(f"DECLARE c {kind} WITH HOLD FOR SELECT id, email, card AS c2 "
                     f"FROM {schema}.customers ORDER BY id")
        first = conn.execute("FETCH 1 FROM c").fetchall()
        conn.execute("MOVE BACKWARD ALL IN c")
        every = conn.execute("FETCH ALL FROM c").fetchall()
        conn.execute("CLOSE c")
        # The same name reused for a clean query is clean again.
        conn.execute(f"DECLARE c {kind} WITH HOLD FOR SELECT full_name FROM {schema}.customers "
                     "ORDER BY id")
        clean = conn.execute("FETCH ALL FROM c").fetchall()
        conn.execute("CLOSE ALL")
    assert first == [(1, "j***@example.com", "************4242")]
    assert every[1] == (2, "j***@example.org", "************4444")
    assert clean == [("Jane Roe",), ("John Doe",)]
    no_secret(first + every)


def test_server_side_cursor_of_a_driver_is_masked(world: tuple[str, int]) -> None:
    schema, port = world
    with psycopg.connect(client_dsn(port)) as conn, conn.cursor(name="named") as cur:
        cur.itersize = 1
        cur.execute(f"SELECT id, email, ssn FROM {schema}.customers WHERE id > %s ORDER BY id",
                    (0,))
        rows = list(cur)
    assert rows == [(1, "j***@example.com", "****"), (2, "j***@example.org", "****")]


def test_sql_prepare_is_masked_at_every_execute(world: tuple[str, int]) -> None:
    schema, port = world
    with psycopg.connect(client_dsn(port), autocommit=True) as conn:
        conn.execute(f"PREPARE p(int) AS SELECT email, full_name FROM {schema}.customers "
                     "WHERE id = $1")
        rows = [conn.execute(f"EXECUTE p({i})").fetchone() for i in (1, 2, 1)]
        conn.execute("DEALLOCATE p")
        conn.execute(f"PREPARE p AS SELECT full_name FROM {schema}.customers ORDER BY id")
        clean = conn.execute("EXECUTE p").fetchall()
        conn.execute("DEALLOCATE ALL")
    assert rows == [("j***@example.com", "Jane Roe"), ("j***@example.org", "John Doe"),
                    ("j***@example.com", "Jane Roe")]
    assert clean == [("Jane Roe",), ("John Doe",)]


def test_a_cursor_wiregate_did_not_see_opened_is_masked_whole(
        world: tuple[str, int], pg: PgTarget) -> None:
    """A refcursor a function opened: its query never crossed the wire, so every column of
    what FETCH returns is masked."""
    schema, port = world
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE FUNCTION {schema}.open_rows() RETURNS refcursor LANGUAGE plpgsql "
                     f"AS $$ DECLARE r refcursor := 'hidden'; BEGIN OPEN r FOR SELECT id, email "
                     f"FROM {schema}.customers ORDER BY id; RETURN r; END $$")
    with psycopg.connect(client_dsn(port)) as conn:
        # what a user function returns is untraceable: masked (a refcursor has no masked form)
        assert conn.execute(f"SELECT {schema}.open_rows()").fetchone() == (None,)
        rows = conn.execute("FETCH ALL FROM hidden").fetchall()
    assert rows == [(0, "****"), (0, "****")]  # redact: numbers become 0


def _error_text(exc: psycopg.Error) -> str:
    d = exc.diag
    return " | ".join(str(x) for x in (d.message_primary, d.message_detail, d.message_hint,
                                      d.context, d.internal_query))


def test_errors_of_statements_reading_masked_columns_are_scrubbed(
        world: tuple[str, int], pg: PgTarget) -> None:
    schema, port = world
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE FUNCTION {schema}.shout(t text) RETURNS text LANGUAGE plpgsql "
                     "AS $$ BEGIN RAISE NOTICE 'value %', t; RETURN 'ok'; END $$")
        conn.execute(f"CREATE FUNCTION {schema}.fail(t text) RETURNS text LANGUAGE plpgsql "
                     "AS $$ BEGIN RAISE EXCEPTION 'bad %', t; END $$")
    failing = [
        # a unique violation prints the key
        f"UPDATE {schema}.customers SET email = (SELECT email FROM {schema}.customers "
        "WHERE id = 2) WHERE id = 1",
        f"INSERT INTO {schema}.customers VALUES (3, 'X', 'jane.roe@example.com', '1', '2')",
        # a failed cast prints its input
        f"SELECT id FROM {schema}.customers WHERE email::int = 1",
        f"SELECT id FROM {schema}.customers WHERE ssn::json IS NULL",
        f"SELECT id FROM {schema}.customers WHERE card::uuid IS NULL",
        # a function raises what it was given
        f"SELECT {schema}.fail(email) FROM {schema}.customers",
    ]
    notices: list[str] = []
    with psycopg.connect(client_dsn(port), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(f"{d.message_primary} {d.context}"))
        seen = []
        for sql in failing:
            with pytest.raises(psycopg.Error) as ei:
                conn.execute(sql)
            seen.append(_error_text(ei.value))
        # extended protocol, named prepared statement: scrubbed at every execution
        for _ in range(2):
            with pytest.raises(psycopg.errors.InvalidTextRepresentation) as ei:
                conn.execute(f"SELECT id FROM {schema}.customers WHERE email::int = %s", (1,),
                             prepare=True)
            seen.append(_error_text(ei.value))
        rows = conn.execute(f"SELECT {schema}.shout(email) FROM {schema}.customers").fetchall()
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert rows == [("****",), ("****",)]
    assert len(notices) == 2 and all("withheld" in n for n in notices)
    assert "duplicate key value violates unique constraint" in seen[0]
    assert "invalid input syntax for type integer" in seen[2]
    no_secret(seen + notices)
    for text in seen + notices:
        for secret in SECRETS:
            assert secret.replace("-", "") not in text.replace("-", "")


def test_errors_of_other_statements_keep_their_detail(world: tuple[str, int]) -> None:
    _, port = world
    with psycopg.connect(client_dsn(port), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as ei:
            conn.execute("SELECT 'not a number'::int")
    assert '"not a number"' in str(ei.value)


@pytest.mark.parametrize("binary", [False, True])
def test_detectors_mask_pii_in_columns_nobody_listed(pg: PgTarget, proxy_factory: Any,
                                                     tmp_path: Path, binary: bool) -> None:
    schema = f"wg_detect_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.tickets (id int, body text, meta jsonb, n int)")
        conn.execute(f"INSERT INTO {schema}.tickets VALUES "
                     "(1, 'write to jane.roe@example.com, card 4242 4242 4242 4242', "
                     "'{\"contact\": \"john.doe@example.org\"}', 7), "
                     "(2, 'nothing to see', '{\"k\": 1}', 8)")
    policy = tmp_path / "policy.toml"
    policy.write_text("""
[profiles.agent]
[profiles.agent.masking]
detectors = ["email", "card", "ssn", "phone", "iban", "api_key"]
""")
    proxy = proxy_factory(guardrails={"policy_file": str(policy)},
                          upstream={"profile": "agent"})
    try:
        with psycopg.connect(client_dsn(proxy.port)) as conn:
            rows = conn.cursor(binary=binary).execute(
                f"SELECT id, body, meta, n FROM {schema}.tickets ORDER BY id").fetchall()
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    assert rows[0][1] == "write to ****, card ****"
    assert rows[0][2] == '{"contact": "****"}'       # still JSON: a string now
    assert rows[1] == (2, "nothing to see", {"k": 1}, 8)
    assert rows[0][3] == 7


def test_returning_is_masked(world: tuple[str, int]) -> None:
    schema, port = world
    with psycopg.connect(client_dsn(port), autocommit=True) as conn:
        upd = conn.execute(f"UPDATE {schema}.customers SET full_name = full_name WHERE id = 1 "
                           "RETURNING id, email, card").fetchall()
        ext = conn.execute(f"UPDATE {schema}.customers SET full_name = full_name WHERE id = %s "
                           "RETURNING *", (2,)).fetchall()
        cte = conn.execute(f"WITH u AS (UPDATE {schema}.customers SET full_name = full_name "
                           "WHERE id = 1 RETURNING email) SELECT * FROM u").fetchall()
        ins = conn.execute(f"INSERT INTO {schema}.customers VALUES (3, 'New', 'new@example.net', "
                           "'123-45-6789', '4000056655665556') RETURNING email, ssn").fetchall()
        dele = conn.execute(f"DELETE FROM {schema}.customers WHERE id = 3 RETURNING email"
                            ).fetchall()
    assert upd == [(1, "j***@example.com", "************4242")]
    assert ext == [(2, "John Doe", "j***@example.org", "****", "************4444")]
    assert cte == [("j***@example.com",)]
    assert ins == [("n***@example.net", "****")] and dele == [("n***@example.net",)]
    no_secret(upd + ext + cte)


def test_allowed_copies_and_writes(world: tuple[str, int]) -> None:
    schema, port = world
    with psycopg.connect(client_dsn(port), autocommit=True) as conn:
        with conn.cursor() as cur:
            with cur.copy(f"COPY (SELECT id, full_name FROM {schema}.customers ORDER BY id) "
                          "TO STDOUT") as copy:
                copied = b"".join(bytes(b) for b in copy)
        assert copied == b"1\tJane Roe\n2\tJohn Doe\n"
        # filtering on a masked column while writing other values is fine
        conn.execute(f"UPDATE {schema}.customers SET full_name = 'Jane R.' "
                     "WHERE email = 'jane.roe@example.com'")
        conn.execute(f"INSERT INTO {schema}.notes (body) SELECT full_name FROM "
                     f"{schema}.customers WHERE ssn LIKE '078%'")
        # a masked column written from itself stays masked
        conn.execute(f"UPDATE {schema}.customers SET email = lower(email) WHERE id = 1")
        assert conn.execute(f"SELECT body FROM {schema}.notes").fetchall() == [("Jane R.",)]


def test_user_functions_and_statistics_are_masked(world: tuple[str, int],
                                                  pg: PgTarget) -> None:
    schema, port = world
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"ANALYZE {schema}.customers")
    with psycopg.connect(client_dsn(port), autocommit=True) as conn:
        leaked = conn.execute(f"SELECT {schema}.leak(), upper('x')").fetchall()
        stats = conn.execute("SELECT attname, most_common_vals::text, histogram_bounds::text "
                             "FROM pg_stats WHERE schemaname = %s", (schema,)).fetchall()
    assert leaked == [("****", "X")]
    assert stats and all(row[1] in (None, "****") and row[2] in (None, "****")
                         for row in stats)
    no_secret(leaked + stats)


def test_notification_payloads_are_masked(world: tuple[str, int], pg: PgTarget) -> None:
    """A trigger may NOTIFY a whole row: a payload's lineage is unknown, so it is masked; the
    channel and the notification itself still arrive."""
    _, port = world
    with psycopg.connect(client_dsn(port), autocommit=True) as conn:
        conn.execute("LISTEN wg_changes")
        with psycopg.connect(pg.dsn(), autocommit=True) as direct:
            direct.execute("SELECT pg_notify('wg_changes', %s)",
                           ('{"email": "jane.roe@example.com"}',))
            direct.execute("NOTIFY wg_changes")
        got = []
        for note in conn.notifies(timeout=5, stop_after=2):
            got.append((note.channel, note.payload))
    assert got == [("wg_changes", "****"), ("wg_changes", "")]


def _rows_of(messages: list[Any]) -> list[tuple[bytes | None, ...]]:
    return [msg.values for msg in messages if isinstance(msg, m.DataRow)]


def test_one_chunk_switching_from_plain_to_masked_statements(world: tuple[str, int]) -> None:
    """Batches sent in one write: plain statements first (their Bind and Execute are not
    looked at), then a named statement over a masked column bound and executed in the same
    chunk, then a portal of it executed in a later batch of the open transaction."""
    schema, port = world
    client = RawClient(port)
    try:
        client.login()
        plain = f"SELECT full_name FROM {schema}.customers WHERE id = $1"
        masked = f"SELECT email, card FROM {schema}.customers WHERE id = $1"
        client.send(m.Query("BEGIN").encode()
                    + m.Parse("", plain).encode() + m.Bind("", "", (), (b"1",), ()).encode()
                    + m.Execute("").encode() + m.Sync().encode()
                    + m.Parse("s1", masked).encode() + m.Bind("p1", "s1", (), (b"1",), ()).encode()
                    + m.Describe("P", "p1").encode() + m.Execute("p1", 0).encode()
                    + m.Bind("p2", "s1", (), (b"2",), ()).encode() + m.Sync().encode())
        first = client.until_ready() + client.until_ready() + client.until_ready()
        client.send(m.Execute("p2", 0).encode() + m.Sync().encode())
        later = client.until_ready()
        client.send_query("COMMIT")
        client.until_ready()
    finally:
        client.close()
    assert _rows_of(first) == [(b"Jane Roe",), (b"j***@example.com", b"************4242")]
    assert _rows_of(later) == [(b"j***@example.org", b"************4444")]


@pytest.mark.parametrize("ddl", [
    "ALTER TABLE {s}.customers RENAME COLUMN email TO contact",
    "ALTER TABLE {s}.customers RENAME TO customers_old",
    "ALTER TABLE {s}.customers ALTER COLUMN ssn TYPE varchar(20)",
])
def test_ddl_that_could_move_masked_columns_is_refused(world: tuple[str, int], ddl: str,
                                                       proxy_factory: Any,
                                                       tmp_path: Path) -> None:
    """Under a profile that only masks (DDL otherwise allowed): the masking follows table
    and column names, so renaming one would let it read back unmasked."""
    schema, _ = world
    policy = tmp_path / "masking-only.toml"
    policy.write_text(f"""
[profiles.masker.masking]
default_strategy = "redact"
[[profiles.masker.masking.column]]
columns = ["{schema}.customers.email", "{schema}.customers.ssn"]
strategy = "redact"
""")
    port = proxy_factory(guardrails={"policy_file": str(policy)},
                         upstream={"profile": "masker"}).port
    with psycopg.connect(client_dsn(port), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
            conn.execute(ddl.format(s=schema))
        assert "wiregate.masking" in str(ei.value)
        conn.execute(f"ALTER TABLE {schema}.notes RENAME COLUMN body TO text")  # not masked
        rows = conn.execute(f"SELECT email FROM {schema}.customers ORDER BY id").fetchall()
    assert rows == [("****",), ("****",)]

"""Masking as a property: whatever SQL expression wraps a masked column, no raw secret leaves
Wiregate in any recognisable form.

The generator composes families of expressions over a masked column (casts, string functions,
encodings, JSON and array builders, aggregates, window functions, scalar subqueries, LATERAL,
derived tables, CTEs, UNION ALL, the view instead of the table, whole-row references, ...)
and runs the result through a real Wiregate in front of PostgreSQL, over several client paths:
psycopg text and binary (extended protocol, also as a named prepared statement), the simple
query protocol, COPY TO STDOUT and a server-side cursor; UPDATE ... RETURNING as well. The
oracle looks for each secret raw, case-folded, reversed, as its digit runs, in base64 (at every
alignment) and hex, and as its md5/sha256, in rows and in error messages. A statement Wiregate
refuses is safe. A second property writes the same expressions somewhere unmasked (INSERT/
UPDATE/MERGE into clean columns, CREATE TABLE AS, SELECT INTO, set_config, pg_notify) and
checks that no secret got stored. Plain must-work checks (point lookups, filters, joins, COPY
of clean columns) run through psycopg, asyncpg and psql.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import psycopg
import psycopg.errors
import pytest
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st

from proxy.server import ThreadedProxy
from tests.conftest import CLIENT_PASSWORD, CLIENT_USER, PgTarget, client_dsn, make_config

# -- the world ----------------------------------------------------------------------------------

MASK_KEY = "property-test-mask-key-0123456789"
# id, full_name, email, ssn, phone, card: made-up values, none a substring of another.
ROWS: list[tuple[int, str, str, str, str, str]] = [
    (1, "Ada Quill", "zq.marlowe7@example.net", "078-05-1120", "+1 (415) 555-0198",
     "4929-1825-7306-5514"),
    (2, "Bo Lindqvist", "vesna.okafor@example.org", "219-09-9999", "(212) 555-7733",
     "5384-0921-6657-3310"),
    (3, "Cyrus Mendez", "t.brightwater@example.com", "457-55-5462", "020 7946 0958",
     "3714-496353-98431"),
]
ORDERS = [(10, 1, "blue widget"), (11, 1, "red gadget"), (12, 2, "green gizmo"),
          (13, 3, "spare part")]
MASKED = ("email", "ssn", "phone", "card")
# The view ``renamed`` (over the view ``customers_v``) calls the masked columns otherwise.
RENAMED = {"email": "contact", "ssn": "tax_id", "phone": "tel", "card": "pan"}
# What a generated query reads from, aliased ``c``: all have customers' columns.
RELATIONS = ["customers", "customers_v", "customers_vv", "customers_mv", "CUSTOMERS"]
SECRETS: list[str] = [secret for r in ROWS for secret in r[2:]]


def masked_email(v: str) -> str:
    local, _, domain = v.rpartition("@")
    return f"{local[0]}***@{domain}"


def masked_phone(v: str) -> str:
    return hmac.new(MASK_KEY.encode(), v.encode(), hashlib.sha256).hexdigest()[:32]


def masked_card(v: str) -> str:
    alnum = [i for i, ch in enumerate(v) if ch.isalnum()]
    keep = set(alnum[-4:])
    return "".join(ch if (i in keep or not ch.isalnum()) else "*" for i, ch in enumerate(v))


def masked_row(r: tuple[int, str, str, str, str, str]) -> tuple[Any, ...]:
    return (r[0], r[1], masked_email(r[2]), "****", masked_phone(r[4]), masked_card(r[5]))


@dataclass(frozen=True)
class World:
    schema: str
    port: int

    @property
    def dsn(self) -> str:
        return client_dsn(self.port)


@pytest.fixture(scope="module")
def world(pg: PgTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    schema = f"wg_prop_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.customers (id int PRIMARY KEY, full_name text, "
                     "email text UNIQUE, ssn text, phone text, card text)")
        conn.execute(f"CREATE TABLE {schema}.orders (id int PRIMARY KEY, customer_id int, "
                     "note text)")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {schema}.customers VALUES (%s, %s, %s, %s, %s, %s)",
                            ROWS)
            cur.executemany(f"INSERT INTO {schema}.orders VALUES (%s, %s, %s)", ORDERS)
        conn.execute(f"CREATE VIEW {schema}.customers_v AS SELECT id, full_name, email, ssn, "
                     f"phone, card FROM {schema}.customers")
        conn.execute(f"CREATE VIEW {schema}.customers_vv AS SELECT * FROM {schema}.customers_v "
                     "WHERE id > 0")
        conn.execute(f"CREATE MATERIALIZED VIEW {schema}.customers_mv AS SELECT * FROM "
                     f"{schema}.customers")
        conn.execute(f"CREATE VIEW {schema}.renamed (ident, label, contact, tax_id, tel, pan) "
                     f"AS SELECT id, full_name, email, ssn, phone, card FROM {schema}.customers_v")
        conn.execute(f"CREATE TABLE {schema}.scratch (id serial PRIMARY KEY, note text, "
                     "doc jsonb)")
        conn.execute(f"INSERT INTO {schema}.scratch (id, note) VALUES (0, 'seed')")
    tmp = tmp_path_factory.mktemp("wg_prop")
    key = tmp / "mask.key"
    key.write_text(MASK_KEY + "\n")
    policy = tmp / "policy.toml"
    policy.write_text(f"""
[profiles.agent]
[profiles.agent.masking]
default_strategy = "redact"
on_unresolved = "mask"
key_file = "{key}"
[[profiles.agent.masking.column]]
columns = ["{schema}.customers.email"]
strategy = "email"
[[profiles.agent.masking.column]]
columns = ["{schema}.customers.ssn"]
strategy = "redact"
[[profiles.agent.masking.column]]
columns = ["{schema}.customers.phone"]
strategy = "hash"
[[profiles.agent.masking.column]]
columns = ["{schema}.customers.card"]
strategy = "partial"
keep_last = 4
""")
    proxy = ThreadedProxy(make_config(pg, guardrails={"policy_file": str(policy)},
                                      upstream={"profile": "agent"})).start()
    try:
        yield World(schema, proxy.port)
    finally:
        proxy.stop(0.5)
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


class Conn:
    """One autocommit connection through Wiregate, reused across examples and reopened when
    a statement broke it. It listens on ``wg_prop`` and keeps the payloads it was sent."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self.payloads: list[str] = []

    def get(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.dsn, autocommit=True)
            self._conn.add_notify_handler(lambda n: self.payloads.append(n.payload))
            self._conn.execute("LISTEN wg_prop")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


@pytest.fixture(scope="module")
def shared_conn(world: World) -> Iterator[Conn]:
    c = Conn(world.dsn)
    yield c
    c.close()


# -- the oracle ---------------------------------------------------------------------------------

def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _b64_cores(data: bytes) -> set[str]:
    """The base64 of ``data`` at each of the three alignments it can sit at inside a longer
    value: only the 4-character groups made of ``data``'s bytes alone."""
    out = {base64.b64encode(data).decode()}
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + data).decode()
        first = -(-k // 3)                   # the first group starting at or after k
        last = (k + len(data)) // 3          # groups before this one end inside data
        core = enc[4 * first:4 * last]
        if len(core) >= 8:
            out.add(core)
    return out


@dataclass(frozen=True)
class Form:
    secret: str
    how: str
    text: str
    fold: bool   # compare case-insensitively


def secret_forms(secret: str) -> list[Form]:
    forms: list[Form] = []
    variants = {secret, secret.lower(), secret.upper()}
    forms.append(Form(secret, "raw/case-folded", secret, True))
    forms.append(Form(secret, "reversed", secret[::-1], True))
    local, at, _ = secret.rpartition("@")
    if at and len(local) >= 5:
        forms.append(Form(secret, "email local part", local, True))
        forms.append(Form(secret, "email local part reversed", local[::-1], True))
    for v in variants:
        data = v.encode()
        for core in _b64_cores(data):
            forms.append(Form(secret, f"base64 of {v!r}", core, False))
        forms.append(Form(secret, f"hex of {v!r}", data.hex(), True))
        forms.append(Form(secret, f"md5 of {v!r}", hashlib.md5(data).hexdigest(), True))
        forms.append(Form(secret, f"sha256 of {v!r}", hashlib.sha256(data).hexdigest(), True))
    return forms


FORMS: list[Form] = [f for s in SECRETS for f in secret_forms(s)]
# Digit runs: the whole digit string of a secret and every window of 7 of its digits.
DIGIT_RUNS: list[tuple[str, str]] = sorted({
    (s, d[i:i + 7]) for s in SECRETS if len(d := _digits(s)) >= 7
    for i in range(len(d) - 6)})


def leaks(text: str) -> list[str]:
    """Every way a secret shows in ``text``."""
    found: list[str] = []
    folded = text.lower()
    compact = re.sub(r"\s", "", text)   # base64 from PostgreSQL wraps lines at 76 characters
    for f in FORMS:
        hay = folded if f.fold else compact
        needle = f.text.lower() if f.fold else f.text
        if needle in hay or (not f.fold and needle in text):
            found.append(f"{f.how} of secret {f.secret!r}")
    digits = _digits(text)
    for s, run in DIGIT_RUNS:
        if run in digits:
            found.append(f"digit run {run} of secret {s!r}")
    return found


def cell_texts(value: Any) -> list[str]:
    """Every textual rendering of a result cell worth searching."""
    if value is None:
        return []
    if isinstance(value, memoryview | bytearray):
        value = bytes(value)
    if isinstance(value, bytes):
        return [value.decode("utf-8", errors="replace"), value.decode("latin-1"), value.hex()]
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        out = [json.dumps(value, default=str)]
        for k, v in value.items():
            out += [str(k), *cell_texts(v)]
        return out
    if isinstance(value, list | tuple):
        out = [json.dumps(value, default=str) if isinstance(value, list) else str(value)]
        for v in value:
            out += cell_texts(v)
        return out
    return [str(value)]


def assert_no_leak(rows: Any, sql: str) -> None:
    problems: list[str] = []
    for row in rows:
        cells = row if isinstance(row, list | tuple) else (row,)
        for cell in cells:
            for text in cell_texts(cell):
                problems += [f"{p} in cell {text[:120]!r}" for p in leaks(text)]
    assert not problems, f"LEAK through Wiregate\nSQL: {sql}\n" + "\n".join(
        sorted(set(problems))[:20])


def error_text(exc: psycopg.Error) -> str:
    d = exc.diag
    return " | ".join(str(x) for x in (str(exc), d.message_primary, d.message_detail,
                                        d.message_hint, d.context, d.internal_query))


def test_the_oracle_sees_what_it_should_and_not_what_it_should_not() -> None:
    for r in ROWS:
        for secret in r[2:]:
            assert leaks(f"x{secret}y"), secret
            assert leaks(secret.upper()[::-1]), secret
            assert leaks(base64.b64encode(b"ab" + secret.encode()).decode()), secret
            assert leaks("\\x" + secret.encode().hex()), secret
            assert leaks(hashlib.md5(secret.lower().encode()).hexdigest()), secret
            for pre in ("", "a", "ab", "abc"):
                for suf in ("", "z", "zz"):
                    enc = base64.b64encode((pre + secret + suf).encode()).decode()
                    assert leaks(enc), (pre, secret, suf)
            if len(_digits(secret)) >= 7:
                assert leaks(_digits(secret)), secret
                assert leaks(" ".join(_digits(secret))), secret
        clean = [*(str(c) for c in masked_row(r)), json.dumps(masked_row(r)), "****",
                 '"****"', r[1], "0", "1970-01-01"]
        for text in clean:
            assert not leaks(text), text
    for o in ORDERS:
        assert not leaks(str(o))


# -- the generator ------------------------------------------------------------------------------

TEXT, BYTEA, JSON, JSONB, ARRAY, XML = "text", "bytea", "json", "jsonb", "text[]", "xml"
ANY = frozenset({TEXT, BYTEA, JSON, JSONB, ARRAY, XML})
T = frozenset({TEXT})
SAME = "same"


@dataclass(frozen=True)
class Wrap:
    family: str
    takes: frozenset[str]
    gives: str              # a type, or SAME
    template: str           # {x}: the operand; {s}: the schema; {lit}: a drawn literal
    kind: str = "plain"     # plain | agg | window
    refs_outer: bool = False  # reads c.* itself (not allowed above an ungrouped aggregate)
    in_from: bool = False   # puts {x} in a function in FROM (no aggregate or window there)
    raises: bool = False    # fails on every secret (a cast the value is not valid input of)


WRAPS: list[Wrap] = [
    # casts and aliases-through-casts
    Wrap("cast", ANY, TEXT, "({x})::text"),
    Wrap("cast", ANY, TEXT, "({x})::varchar"),
    Wrap("cast", ANY, TEXT, "CAST({x} AS varchar(400))"),
    Wrap("cast", T, TEXT, "({x})::char(80)"),
    Wrap("cast", T, TEXT, "({x})::name::text"),
    Wrap("cast", T, BYTEA, "(replace({x}, '\\', '\\\\'))::bytea"),
    Wrap("cast", T, JSON, "(to_json({x})::text)::json"),
    Wrap("cast", frozenset({JSON}), JSONB, "({x})::jsonb"),
    Wrap("cast", frozenset({JSONB}), JSON, "({x})::json"),
    Wrap("collate", T, TEXT, "({x}) COLLATE \"C\""),
    # concatenation
    Wrap("concat", T, TEXT, "({x}) || {lit}"),
    Wrap("concat", T, TEXT, "{lit} || ({x})"),
    Wrap("concat", ANY, TEXT, "concat({x}, {lit})"),
    Wrap("concat", ANY, TEXT, "concat({lit}, {x})"),
    Wrap("concat", ANY, TEXT, "concat_ws('|', {x}, 'z')"),
    Wrap("concat", T, TEXT, "repeat({x}, 2)"),
    # string functions
    Wrap("string", T, TEXT, "lower({x})"),
    Wrap("string", T, TEXT, "upper({x})"),
    Wrap("string", T, TEXT, "initcap({x})"),
    Wrap("string", T, TEXT, "reverse({x})"),
    Wrap("string", T, TEXT, "substr({x}, 1)"),
    Wrap("string", T, TEXT, "substr({x}, 1, 400)"),
    Wrap("string", T, TEXT, "substring({x} from 1 for 400)"),
    Wrap("string", T, TEXT, "left({x}, 400)"),
    Wrap("string", T, TEXT, "right({x}, 400)"),
    Wrap("string", T, TEXT, "btrim({x})"),
    Wrap("string", T, TEXT, "replace({x}, '-', '')"),
    Wrap("string", T, TEXT, "replace({x}, '@', ' at ')"),
    Wrap("string", T, TEXT, "translate({x}, '-() +', '')"),
    Wrap("string", T, TEXT, "lpad({x}, 60, '*')"),
    Wrap("string", T, TEXT, "rpad({x}, 60, '#')"),
    Wrap("string", T, TEXT, "regexp_replace({x}, '[^0-9]', '', 'g')"),
    Wrap("string", T, TEXT, "regexp_replace({x}, '(.)', '\\1', 'g')"),
    Wrap("string", ANY, TEXT, "format('%s', {x})"),
    Wrap("string", ANY, TEXT, "format('<%s>', {x})"),
    Wrap("string", T, TEXT, "quote_literal({x})"),
    Wrap("string", T, TEXT, "quote_ident({x})"),
    Wrap("string", T, TEXT, "overlay({x} placing '' from 1 for 0)"),
    Wrap("string", T, TEXT, "md5({x})"),
    # encodings
    Wrap("encode", T, TEXT, "encode(convert_to({x}, 'UTF8'), 'base64')"),
    Wrap("encode", T, TEXT, "encode(convert_to({x}, 'UTF8'), 'hex')"),
    Wrap("encode", T, TEXT, "encode(({x})::bytea, 'escape')"),
    Wrap("encode", T, BYTEA, "convert_to({x}, 'UTF8')"),
    Wrap("encode", frozenset({BYTEA}), TEXT, "encode({x}, 'base64')"),
    Wrap("encode", frozenset({BYTEA}), TEXT, "encode({x}, 'hex')"),
    Wrap("encode", frozenset({BYTEA}), TEXT, "convert_from({x}, 'UTF8')"),
    # conditionals
    Wrap("conditional", ANY, SAME, "CASE WHEN true THEN {x} END"),
    Wrap("conditional", ANY, SAME, "CASE WHEN c.id > 0 THEN {x} ELSE NULL END",
         refs_outer=True),
    Wrap("conditional", ANY, SAME, "COALESCE({x}, NULL)"),
    Wrap("conditional", ANY, SAME, "COALESCE(NULL, {x})"),
    Wrap("conditional", T, TEXT, "NULLIF({x}, 'zzz')"),
    Wrap("conditional", T, TEXT, "GREATEST({x}, '')"),
    Wrap("conditional", T, TEXT, "LEAST({x}, '~~~~')"),
    # arrays
    Wrap("array", T, ARRAY, "ARRAY[{x}]"),
    Wrap("array", T, ARRAY, "string_to_array({x}, '-')"),
    Wrap("array", T, ARRAY, "regexp_match({x}, '^(.*)$')"),
    Wrap("array", T, TEXT, "array_to_string(ARRAY[{x}], ',')"),
    Wrap("array", frozenset({ARRAY}), TEXT, "array_to_string({x}, ',')"),
    Wrap("array", frozenset({ARRAY}), TEXT, "({x})[1]"),
    Wrap("array", frozenset({ARRAY}), JSON, "array_to_json({x})"),
    Wrap("array", frozenset({ARRAY}), TEXT, "(SELECT u FROM unnest({x}) u LIMIT 1)",
         in_from=True),
    # JSON
    Wrap("json", ANY, JSON, "json_build_object('k', {x})"),
    Wrap("json", ANY, JSON, "json_build_array({x})"),
    Wrap("json", ANY, JSON, "to_json({x})"),
    Wrap("json", ANY, JSONB, "to_jsonb({x})"),
    Wrap("json", ANY, JSONB, "jsonb_build_object('k', {x})"),
    Wrap("json", ANY, JSON, "row_to_json(ROW({x}))"),
    Wrap("json", T, TEXT, "(jsonb_build_object('k', {x}) ->> 'k')"),
    Wrap("json", T, TEXT, "(to_jsonb({x}) #>> '{{}}')"),
    Wrap("json", frozenset({JSON, JSONB}), TEXT, "(({x}) #>> '{{}}')"),
    Wrap("json", T, TEXT,
         "(SELECT u.value FROM jsonb_each_text(jsonb_build_object('k', {x})) u)",
         in_from=True),
    # records
    Wrap("row", ANY, TEXT, "ROW({x})::text"),
    Wrap("row", ANY, TEXT, "ROW({x}, 1)::text"),
    # XML
    Wrap("xml", T, XML, "xmlelement(name e, {x})"),
    Wrap("xml", T, XML, "xmlforest({x} AS e)"),
    Wrap("xml", frozenset({XML}), TEXT, "xmlserialize(content {x} AS text)"),
    # subqueries
    Wrap("subquery", ANY, SAME, "(SELECT {x})"),
    Wrap("subquery", ANY, SAME, "(SELECT {x} LIMIT 1)"),
    Wrap("subquery", ANY, SAME, "(SELECT z.v FROM (SELECT {x} AS v) z)"),
    Wrap("subquery", ANY, SAME, "(SELECT {x} FROM {s}.customers c2 WHERE c2.id = c.id)",
         refs_outer=True),
    Wrap("subquery", T, TEXT, "(SELECT string_agg(t, '') FROM regexp_split_to_table({x}, '') t)",
         in_from=True),
    Wrap("subquery", T, TEXT, "(SELECT t FROM unnest(ARRAY[{x}]) t)", in_from=True),
    # casts that fail on the value: the error must not carry it
    Wrap("error", T, TEXT, "(({x})::int)::text", raises=True),
    Wrap("error", T, TEXT, "(({x})::uuid)::text", raises=True),
    Wrap("error", T, TEXT, "(({x})::json)::text", raises=True),
    Wrap("error", T, TEXT, "(({x})::date)::text", raises=True),
    Wrap("subquery", ANY, SAME, "(WITH w AS (SELECT {x} AS v) SELECT v FROM w)"),
    # aggregates
    Wrap("aggregate", T, TEXT, "string_agg({x}, ',')", "agg"),
    Wrap("aggregate", T, TEXT, "string_agg({x}, ',' ORDER BY {x})", "agg"),
    Wrap("aggregate", T, TEXT, "string_agg({x}, ',') FILTER (WHERE true)", "agg"),
    Wrap("aggregate", T, ARRAY, "array_agg({x})", "agg"),
    Wrap("aggregate", T, TEXT, "(array_agg({x}))[1]", "agg"),
    Wrap("aggregate", T, TEXT, "max({x})", "agg"),
    Wrap("aggregate", T, TEXT, "min({x})", "agg"),
    Wrap("aggregate", T, TEXT, "mode() WITHIN GROUP (ORDER BY {x})", "agg"),
    Wrap("aggregate", ANY, JSON, "json_agg({x})", "agg"),
    Wrap("aggregate", ANY, JSONB, "jsonb_agg({x})", "agg"),
    Wrap("aggregate", ANY, JSON, "json_object_agg('k', {x})", "agg"),
    Wrap("aggregate", frozenset({XML}), XML, "xmlagg({x})", "agg"),
    # window functions
    Wrap("window", ANY, SAME, "first_value({x}) OVER ()", "window"),
    Wrap("window", ANY, SAME, "last_value({x}) OVER (ORDER BY c.id ROWS BETWEEN UNBOUNDED "
         "PRECEDING AND UNBOUNDED FOLLOWING)", "window", refs_outer=True),
    Wrap("window", ANY, SAME, "nth_value({x}, 1) OVER ()", "window"),
    Wrap("window", ANY, SAME, "lag({x}, 1) OVER (ORDER BY c.id)", "window", refs_outer=True),
    Wrap("window", ANY, SAME, "lead({x}, 0) OVER ()", "window"),
    Wrap("window", T, TEXT, "max({x}) OVER ()", "window"),
    Wrap("window", T, TEXT, "string_agg({x}, ',') OVER (PARTITION BY true)", "window"),
]

LITERALS = ["''", "'x'", "' '", "'-'", "'@'", "'[ok]'", "'full_name'", "E'\\n'"]


@dataclass(frozen=True)
class Leaf:
    family: str
    sql: str
    type: str
    refs_outer: bool = True


def leaves(s: str, col: str) -> list[Leaf]:
    return [
        Leaf("column", f"c.{col}", TEXT),
        Leaf("column", col, TEXT),
        Leaf("column", f"(c).{col}", TEXT),
        Leaf("scalar subquery",
             f"(SELECT c2.{col} FROM {s}.customers c2 WHERE c2.id = c.id)", TEXT),
        Leaf("scalar subquery",
             f"(SELECT c2.{col} FROM {s}.customers_v c2 WHERE c2.id = c.id)", TEXT),
        Leaf("whole row", "row_to_json(c)", JSON),
        Leaf("whole row", "to_jsonb(c)", JSONB),
        Leaf("whole row", "c::text", TEXT),
        Leaf("whole row", "ROW(c.*)::text", TEXT),
        Leaf("whole row", f"(to_jsonb(c) ->> '{col}')", TEXT),
        Leaf("whole row", f"(row_to_json(c) ->> '{col}')", TEXT),
        Leaf("case folding", col.upper(), TEXT),
        Leaf("case folding", f'c."{col}"', TEXT),
        Leaf("renamed view",
             f"(SELECT r.{RENAMED[col]} FROM {s}.renamed r WHERE r.ident = c.id)", TEXT),
    ]


@dataclass
class Expr:
    sql: str
    type: str
    agg: bool = False
    window: bool = False
    families: tuple[str, ...] = ()
    raises: bool = False


@st.composite
def expressions(draw: st.DrawFn, schema: str, col: str, may_raise: bool = True) -> Expr:
    leaf = draw(st.sampled_from(leaves(schema, col)), label="leaf")
    e = Expr(leaf.sql, leaf.type, families=(leaf.family,))
    grouped = draw(st.booleans(), label="group by c.id when aggregated")
    for _ in range(draw(st.integers(0, 5), label="depth")):
        usable = [w for w in WRAPS if e.type in w.takes
                  and not (w.kind == "agg" and (e.agg or e.window))
                  and not (w.kind == "window" and (e.agg or e.window))
                  and not (w.refs_outer and e.agg and not grouped)
                  and not (w.in_from and (e.agg or e.window))
                  and not (w.raises and (e.raises or not may_raise))]
        w = draw(st.sampled_from(usable))
        lit = draw(st.sampled_from(LITERALS))
        e = Expr(w.template.format(x=e.sql, s=schema, lit=lit),
                 e.type if w.gives == SAME else w.gives,
                 e.agg or w.kind == "agg", e.window or w.kind == "window",
                 (*e.families, w.family), e.raises or w.raises)
    if e.agg and not grouped:
        # Mark the query as aggregate-only: no c.id in the select list, no GROUP BY.
        e.families = (*e.families, "aggregate-only")
    return e


@dataclass
class Query:
    sql: str
    ncols: int
    type: str            # the type of the last column (the one carrying the secret)
    families: tuple[str, ...]
    raises: bool = False
    dml: bool = False    # an UPDATE ... RETURNING (not for a cursor, no subquery around it)


UPDATABLE = ["customers", "customers_v", "customers_vv", "CUSTOMERS"]
ALIASES = ["v", "full_name", "note", '"Email"', "safe", "id", '"?column?"']


@st.composite
def queries(draw: st.DrawFn, schema: str, plain: bool = False) -> Query:
    """A query returning the expression; ``plain``: a SELECT that runs without error."""
    col = draw(st.sampled_from(MASKED), label="masked column")
    e = draw(expressions(schema, col, may_raise=not plain))
    families = list(e.families)
    rel = draw(st.sampled_from(RELATIONS), label="relation")
    if rel != "customers":
        families.append(f"relation {rel}")
    alias = draw(st.sampled_from(ALIASES), label="alias")
    agg_only = "aggregate-only" in e.families
    dml = (not plain and not e.agg and not e.window and rel in UPDATABLE
           and draw(st.integers(0, 5), label="UPDATE ... RETURNING?") == 0)
    if dml:
        return draw(returning(schema, rel, e, alias, families))
    lateral = not e.agg and draw(st.integers(0, 4), label="lateral?") == 0
    joins: list[str] = []
    extra = draw(st.sampled_from(["", "orders", "values"]), label="join")
    if extra == "orders":
        joins.append(f"JOIN {schema}.orders o ON o.customer_id = c.id")
        families.append("join orders")
    elif extra == "values":
        joins.append("JOIN (VALUES (1, 'a'), (2, 'b'), (3, 'c')) AS vv(vid, tag) "
                     "ON vv.vid = c.id")
        families.append("VALUES join")
    value = e.sql
    if lateral:
        joins.append(f"CROSS JOIN LATERAL (SELECT {e.sql} AS lv) l")
        value = "l.lv"
        families.append("LATERAL")
    cols = [] if agg_only else ["c.id"]
    if not agg_only and draw(st.booleans(), label="clean column too"):
        cols.append("c.full_name")
    cols.append(f"{value} AS {alias}")
    sql = f"SELECT {', '.join(cols)} FROM {schema}.{rel} c {' '.join(joins)}".rstrip()
    if e.agg and not agg_only:
        sql += " GROUP BY c.id" + (", c.full_name" if "c.full_name" in cols else "")
    if not agg_only and draw(st.booleans(), label="order by"):
        sql += " ORDER BY 1"
    q = Query(sql, len(cols), e.type, tuple(families), e.raises)
    for _ in range(draw(st.integers(0, 2), label="query wrappers")):
        q = replace(draw(st.sampled_from(query_wrappers(q))), raises=e.raises)
    return q


@st.composite
def returning(draw: st.DrawFn, schema: str, rel: str, e: Expr, alias: str,
              families: list[str]) -> Query:
    """A no-op UPDATE of a clean column whose RETURNING list carries the expression."""
    families.append("UPDATE RETURNING")
    extra = draw(st.sampled_from(["", "orders", "values"]), label="join")
    source = {"": "", "orders": f" FROM {schema}.orders o WHERE o.customer_id = c.id",
              "values": " FROM (VALUES (1, 'a'), (2, 'b'), (3, 'c')) AS vv(vid, tag) "
                        "WHERE vv.vid = c.id"}[extra]
    cols = ["c.id"] + (["c.full_name"] if draw(st.booleans(), label="clean column") else [])
    cols.append(f"{e.sql} AS {alias}")
    sql = (f"UPDATE {schema}.{rel} AS c SET full_name = c.full_name{source} "
           f"RETURNING {', '.join(cols)}")
    q = Query(sql, len(cols), e.type, tuple(families), e.raises, dml=True)
    if draw(st.booleans(), label="in a CTE"):
        q = replace(draw(st.sampled_from(query_wrappers(q)[2:5])), raises=e.raises, dml=True)
    return q


def query_wrappers(q: Query) -> list[Query]:
    n = q.ncols
    names = ", ".join(f"k{i}" for i in range(1, n + 1))
    nulls = ", ".join(["NULL"] * n)
    lit_row = ", ".join(["NULL"] * (n - 1) + ["'literal'"]) if q.type == TEXT else nulls
    fam = q.families
    return [
        Query(f"SELECT * FROM ({q.sql}) d", n, q.type, (*fam, "derived table")),
        Query(f"SELECT d.k{n} FROM ({q.sql}) AS d({names})", 1, q.type,
              (*fam, "derived table")),
        Query(f"WITH w AS ({q.sql}) SELECT * FROM w", n, q.type, (*fam, "CTE")),
        Query(f"WITH w({names}) AS ({q.sql}) SELECT w.k{n} FROM w", 1, q.type,
              (*fam, "CTE")),
        Query(f"WITH w AS MATERIALIZED ({q.sql}) SELECT * FROM w", n, q.type,
              (*fam, "CTE")),
        Query(f"({q.sql}) UNION ALL (SELECT {lit_row})", n, q.type, (*fam, "UNION ALL")),
        Query(f"(SELECT {nulls}) UNION ALL ({q.sql})", n, q.type, (*fam, "UNION ALL")),
        Query(f"SELECT d.* FROM (VALUES (1)) AS vv(one) CROSS JOIN LATERAL ({q.sql}) d", n,
              q.type, (*fam, "LATERAL")),
        Query(f"SELECT * FROM ({q.sql}) d LIMIT 50", n, q.type, (*fam, "derived table")),
    ]


# More examples for a longer hunt: WIREGATE_PROPERTY_EXAMPLES=5000.
EXAMPLES = int(os.environ.get("WIREGATE_PROPERTY_EXAMPLES", "150"))


# -- running a statement ------------------------------------------------------------------------

# Errors a generated statement may cause by itself (not Wiregate's doing).
GENERATOR_ERRORS: tuple[type[psycopg.Error], ...] = (
    psycopg.errors.DataError, psycopg.errors.UndefinedFunction,
    psycopg.errors.DatatypeMismatch, psycopg.errors.GroupingError,
    psycopg.errors.WindowingError, psycopg.errors.SyntaxError,
    psycopg.errors.UndefinedColumn, psycopg.errors.AmbiguousColumn,
    psycopg.errors.CardinalityViolation, psycopg.errors.IndeterminateDatatype,
    psycopg.errors.UndefinedObject, psycopg.errors.CannotCoerce, psycopg.errors.WrongObjectType,
    psycopg.errors.FeatureNotSupported, psycopg.errors.InvalidColumnReference,
)


def run_path(conn: psycopg.Connection[Any], sql: str, path: str, binary: bool) -> list[Any]:
    if path == "extended":
        return conn.cursor(binary=binary).execute(sql).fetchall()
    if path == "simple":
        return psycopg.ClientCursor(conn).execute(sql).fetchall()
    if path == "prepared":   # a named prepared statement, executed twice
        first = conn.cursor(binary=binary).execute(sql, prepare=True).fetchall()
        return first + conn.cursor(binary=binary).execute(sql, prepare=True).fetchall()
    if path == "copy":
        fmt = " (FORMAT binary)" if binary else ""
        data = bytearray()
        with conn.cursor() as cur, cur.copy(f"COPY ({sql}) TO STDOUT{fmt}") as cp:
            for chunk in cp:
                data += chunk
        return [bytes(data)]
    assert path == "cursor"
    with conn.transaction(), conn.cursor(name="wg_prop_cur", binary=binary) as cur:
        cur.itersize = 2
        cur.execute(sql)
        return list(cur)


def refused_by_wiregate(exc: psycopg.Error) -> bool:
    return isinstance(exc, psycopg.errors.InsufficientPrivilege) and "wiregate" in str(exc)


def check_statement(conn: psycopg.Connection[Any], sql: str, path: str, binary: bool,
                    may_raise: bool = False) -> str:
    """Run one statement; fail on a leak in rows or error; say how it ended. ``may_raise``:
    the statement casts a secret to a type it is no valid input of."""
    try:
        rows = run_path(conn, sql, path, binary)
    except psycopg.Error as exc:
        assert not leaks(error_text(exc)), (
            f"LEAK in an error\nSQL: {sql}\n{error_text(exc)}\n{leaks(error_text(exc))}")
        if refused_by_wiregate(exc):
            return "refused by wiregate"
        if may_raise and isinstance(exc, psycopg.errors.DataError):
            return "error, value scrubbed"
        if isinstance(exc, GENERATOR_ERRORS):
            return f"generator error {type(exc).__name__}: {exc}"
        raise AssertionError(f"unexpected error {type(exc).__name__}: {exc}\nSQL: {sql}") \
            from exc
    assert_no_leak(rows, sql)
    return "rows"


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_no_secret_leaves_whatever_wraps_a_masked_column(
        world: World, shared_conn: Conn, binary: bool, data: st.DataObject) -> None:
    q = data.draw(queries(world.schema), label="query")
    paths = ["extended", "prepared", "copy"] + ([] if q.dml else ["cursor"]) \
        + ([] if binary else ["simple"])
    path = data.draw(st.sampled_from(paths) | st.just("extended"), label="path")
    note(f"SQL ({path}, {'binary' if binary else 'text'}): {q.sql}")
    outcome = check_statement(shared_conn.get(), q.sql, path, binary, q.raises)
    event(f"path={path}")
    event(f"outcome={outcome.split(':')[0]}")
    for fam in sorted(set(q.families)):
        event(f"family={fam}")
    if outcome.startswith("generator error"):
        note(outcome)
        assume(False)


# -- laundering: a masked value written somewhere it is not masked -------------------------------

def writes(schema: str, q: Query) -> list[tuple[str, str]]:
    """(family, statement) that store the last column of ``q`` (a SELECT) as text somewhere
    Wiregate does not mask: another table, a clean column of customers, a new table, a
    setting, a notification."""
    n = q.ncols
    names = ", ".join(f"k{i}" for i in range(1, n + 1))
    value = f"SELECT (d.k{n})::text FROM ({q.sql}) AS d({names})"
    one = f"({value} LIMIT 1)"
    s = schema
    return [
        ("INSERT SELECT", f"INSERT INTO {s}.scratch (note) {value}"),
        ("INSERT jsonb", f"INSERT INTO {s}.scratch (doc) SELECT to_jsonb(d.k{n}) "
                         f"FROM ({q.sql}) AS d({names})"),
        ("INSERT VALUES", f"INSERT INTO {s}.scratch (note) VALUES ({one})"),
        ("INSERT from CTE", f"WITH src AS ({q.sql}) INSERT INTO {s}.scratch (note) "
                            f"SELECT (d.k{n})::text FROM src AS d({names})"),
        ("UPDATE other table", f"UPDATE {s}.scratch SET note = {one} WHERE id = 0"),
        ("UPDATE clean column", f"UPDATE {s}.customers SET full_name = {one} WHERE id = 1"),
        ("UPDATE FROM", f"UPDATE {s}.scratch t SET note = d.k{n}::text FROM ({q.sql}) "
                        f"AS d({names}) WHERE t.id = 0"),
        ("MERGE", f"MERGE INTO {s}.scratch t USING ({value}) AS d(v) ON false "
                  "WHEN NOT MATCHED THEN INSERT (note) VALUES (d.v)"),
        ("CREATE TABLE AS", f"CREATE TABLE {s}.scratch_ctas AS {value}"),
        ("SELECT INTO", f"SELECT (d.k{n})::text AS v INTO {s}.scratch_ctas "
                        f"FROM ({q.sql}) AS d({names})"),
        ("set_config", f"SELECT set_config('wg.leak', {one}, false) IS NOT NULL"),
        ("pg_notify", f"SELECT pg_notify('wg_prop', {one}) IS NULL"),
    ]


def stored_leaks(pg: PgTarget, conn: Conn, schema: str) -> list[str]:
    """Secrets now stored where they are not masked, read directly (the tables) and through
    Wiregate (the session's setting, the notifications it passed on)."""
    found: list[str] = []
    with psycopg.connect(pg.dsn(), autocommit=True) as direct:
        texts = [str(r) for r in direct.execute(f"SELECT note, doc::text FROM {schema}.scratch")]
        texts += [r[0] for r in direct.execute(f"SELECT full_name FROM {schema}.customers")]
        if direct.execute("SELECT to_regclass(%s)", (f"{schema}.scratch_ctas",)).fetchone() \
                != (None,):
            texts += [str(r) for r in direct.execute(f"SELECT * FROM {schema}.scratch_ctas")]
    row = conn.get().execute("SELECT current_setting('wg.leak', true)").fetchone()
    texts += [str(row[0]) if row else "", *conn.payloads]
    for t in texts:
        found += [f"{p} in {t[:100]!r}" for p in leaks(t)]
    return found


def restore(pg: PgTarget, conn: Conn, schema: str) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as direct:
        direct.execute(f"DELETE FROM {schema}.scratch WHERE id <> 0")
        direct.execute(f"UPDATE {schema}.scratch SET note = 'seed', doc = NULL WHERE id = 0")
        direct.execute(f"DROP TABLE IF EXISTS {schema}.scratch_ctas")
        with direct.cursor() as cur:
            cur.executemany(f"UPDATE {schema}.customers SET full_name = %s WHERE id = %s",
                            [(r[1], r[0]) for r in ROWS])
    conn.get().execute("SELECT set_config('wg.leak', '', false)")
    conn.payloads.clear()


@settings(max_examples=max(EXAMPLES // 2, 50), deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_no_secret_is_laundered_through_a_write(world: World, shared_conn: Conn, pg: PgTarget,
                                                data: st.DataObject) -> None:
    q = data.draw(queries(world.schema, plain=True), label="query")
    family, sql = data.draw(st.sampled_from(writes(world.schema, q)), label="write")
    note(f"SQL: {sql}")
    event(f"write={family}")
    conn = shared_conn.get()
    restore(pg, shared_conn, world.schema)
    try:
        outcome = check_statement(conn, sql, "extended", False)
        conn.execute("SELECT 1")   # let notifications in
        found = stored_leaks(pg, shared_conn, world.schema)
    finally:
        restore(pg, shared_conn, world.schema)
    event(f"outcome={outcome.split(':')[0]}")
    if outcome == "rows":
        event(f"not refused: {family}")
    assert not found, f"LEAK: a masked value was stored unmasked\nSQL: {sql}\n" + "\n".join(
        found[:10])
    if outcome.startswith("generator error"):
        note(outcome)
        assume(False)


# Fixed statements each family must handle; they also pin regressions the property found.
KNOWN_SHAPES = [
    "SELECT upper(email) AS full_name FROM {s}.customers",
    "SELECT encode(convert_to(card, 'UTF8'), 'base64') FROM {s}.customers",
    "SELECT row_to_json(c) FROM {s}.customers c",
    "SELECT c::text FROM {s}.customers c",
    "SELECT (c).ssn FROM {s}.customers c",
    "SELECT to_jsonb(c) ->> 'phone' FROM {s}.customers_v c",
    "SELECT string_agg(ssn, ',') FROM {s}.customers",
    "SELECT json_agg(c) FROM {s}.customers c",
    "SELECT first_value(card) OVER () FROM {s}.customers",
    "SELECT l.v FROM {s}.customers c CROSS JOIN LATERAL (SELECT c.ssn AS v) l",
    "SELECT c.id, (SELECT c2.email FROM {s}.customers c2 WHERE c2.id = c.id) FROM "
    "{s}.customers c",
    "WITH w AS (SELECT ssn FROM {s}.customers) SELECT * FROM w",
    "SELECT ssn FROM {s}.customers UNION ALL SELECT 'literal'",
    "SELECT 'literal' UNION ALL SELECT ssn FROM {s}.customers",
    "SELECT v.tag, c.card FROM {s}.customers c JOIN (VALUES (1, 'a')) v(id, tag) USING (id)",
    "SELECT xmlelement(name e, email) FROM {s}.customers",
    "SELECT (SELECT string_agg(t, '') FROM regexp_split_to_table(c.ssn, '') t) "
    "FROM {s}.customers c",
    "SELECT ARRAY(SELECT ssn FROM {s}.customers)",
    "SELECT (SELECT array_agg(ssn) FROM {s}.customers)",
    "SELECT * FROM {s}.customers_v",
    "SELECT t.* FROM {s}.customers c, LATERAL unnest(ARRAY[c.email, c.ssn]) t",
    "SELECT t FROM {s}.customers c, unnest(ARRAY[c.card]) t",
    "SELECT x.value FROM {s}.customers c, jsonb_each_text(to_jsonb(c)) x",
    "SELECT j FROM {s}.customers c, to_jsonb(c) j",
    "SELECT r FROM {s}.customers c, LATERAL (SELECT c) r",
    "SELECT d FROM (SELECT email, ssn FROM {s}.customers) d",
    "SELECT d::text FROM (SELECT card FROM {s}.customers) d",
    "SELECT (d).* FROM (SELECT ROW(ssn, card) AS d FROM {s}.customers) s",
    "SELECT * FROM ROWS FROM (unnest((SELECT array_agg(ssn) FROM {s}.customers))) u",
    "SELECT string_agg(x, '') FROM (SELECT unnest(string_to_array(card, NULL)) x "
    "FROM {s}.customers WHERE id = 1) s",
]


# The simple query protocol has no binary results.
PATHS = [(path, binary) for path in ("extended", "simple", "prepared", "copy", "cursor")
         for binary in (False, True) if not (binary and path == "simple")]


@pytest.mark.parametrize(("path", "binary"), PATHS,
                         ids=[f"{p}-{'binary' if b else 'text'}" for p, b in PATHS])
@pytest.mark.parametrize("sql", KNOWN_SHAPES)
def test_known_shapes_do_not_leak(world: World, shared_conn: Conn, sql: str, binary: bool,
                                  path: str) -> None:
    outcome = check_statement(shared_conn.get(), sql.format(s=world.schema), path, binary)
    assert not outcome.startswith("generator error"), outcome


# -- must work: through every client ------------------------------------------------------------

Runner = Callable[[World, str, tuple[str, ...]], list[tuple[Any, ...]]]


def _psycopg(binary: bool) -> Runner:
    def run(w: World, sql: str, params: tuple[str, ...]) -> list[tuple[Any, ...]]:
        with psycopg.connect(w.dsn) as conn:
            cur = conn.cursor(binary=binary)
            return cur.execute(sql.replace("{p}", "%s"), params or None).fetchall()
    return run


def _asyncpg(w: World, sql: str, params: tuple[str, ...]) -> list[tuple[Any, ...]]:
    n = iter(range(1, 100))
    text = re.sub(r"\{p\}", lambda _: f"${next(n)}", sql)

    async def go() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(host="127.0.0.1", port=w.port, user=CLIENT_USER,
                                     password=CLIENT_PASSWORD, database="test", ssl=False)
        try:
            return [tuple(r) for r in await conn.fetch(text, *params)]
        finally:
            await conn.close()
    return asyncio.run(go())


def psql_bin() -> str:
    found = shutil.which("psql")
    assert found, "psql is not on PATH (it is expected to be installed)"
    return found


def _literal(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def _psql(w: World, sql: str, params: tuple[str, ...]) -> list[tuple[Any, ...]]:
    it = iter(params)
    text = re.sub(r"\{p\}", lambda _: _literal(next(it)), sql)
    out = subprocess.run([psql_bin(), w.dsn, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", text],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    rows: list[tuple[Any, ...]] = []
    for line in out.stdout.splitlines():
        rows.append(tuple(int(x) if x.isdigit() and len(x) < 9 else x for x in line.split("|")))
    return rows


CLIENTS: dict[str, Runner] = {"psycopg-text": _psycopg(False), "psycopg-binary": _psycopg(True),
                              "asyncpg": _asyncpg, "psql": _psql}


@pytest.fixture(params=list(CLIENTS))
def client(request: pytest.FixtureRequest) -> Runner:
    return CLIENTS[request.param]


def test_select_star_masks_only_the_masked_columns(world: World, client: Runner) -> None:
    rows = client(world, f"SELECT * FROM {world.schema}.customers ORDER BY id", ())
    assert rows == [masked_row(r) for r in ROWS]
    assert_no_leak(rows, "SELECT *")
    via_view = client(world, f"SELECT * FROM {world.schema}.customers_v ORDER BY id", ())
    assert via_view == rows


def test_point_lookups_on_masked_columns(world: World, client: Runner) -> None:
    s = world.schema
    for r in ROWS:
        got = client(world, f"SELECT id, full_name FROM {s}.customers WHERE email = {{p}}",
                     (r[2],))
        assert got == [(r[0], r[1])]
        got = client(world, f"SELECT id, email FROM {s}.customers WHERE ssn = {{p}} "
                     "AND card = {p}", (r[3], r[5]))
        assert got == [(r[0], masked_email(r[2]))]
    assert client(world, f"SELECT id FROM {s}.customers WHERE email = {{p}}",
                  ("nobody@example.com",)) == []


def test_filter_order_join_on_masked_columns_without_returning_them(
        world: World, client: Runner) -> None:
    s = world.schema
    by_email = [r[0] for r in sorted(ROWS, key=lambda r: r[2])]
    got = client(world, f"SELECT id, full_name FROM {s}.customers ORDER BY email", ())
    assert [g[0] for g in got] == by_email
    by_ssn_desc = [(r[0],) for r in sorted(ROWS, key=lambda r: r[3], reverse=True)]
    assert client(world, f"SELECT id FROM {s}.customers ORDER BY ssn DESC", ()) == by_ssn_desc
    like = client(world, f"SELECT id FROM {s}.customers WHERE card LIKE {{p}} ORDER BY id",
                  ("%3310",))
    assert like == [(2,)]
    assert client(world, f"SELECT full_name FROM {s}.customers WHERE lower(email) LIKE "
                  "'%.org' ORDER BY id", ()) == [("Bo Lindqvist",)]
    assert client(world, f"SELECT count(*) FROM {s}.customers WHERE phone LIKE '%555%'",
                  ()) == [(2,)]
    joined = client(world, f"SELECT o.id, o.note FROM {s}.orders o JOIN {s}.customers c "
                    f"ON c.id = o.customer_id WHERE c.ssn = {{p}} ORDER BY o.id", (ROWS[0][3],))
    assert joined == [(10, "blue widget"), (11, "red gadget")]
    self_join = client(world, f"SELECT a.id, b.id FROM {s}.customers a JOIN {s}.customers b "
                       "ON a.email = b.email ORDER BY a.id", ())
    assert self_join == [(1, 1), (2, 2), (3, 3)]
    in_sub = client(world, f"SELECT o.note FROM {s}.orders o WHERE o.customer_id IN "
                    f"(SELECT id FROM {s}.customers WHERE phone = {{p}}) ORDER BY o.id",
                    (ROWS[1][4],))
    assert in_sub == [("green gizmo",)]
    exists = client(world, f"SELECT c.id FROM {s}.customers c WHERE EXISTS (SELECT 1 FROM "
                    f"{s}.customers c2 WHERE c2.card = c.card AND c2.id = c.id) ORDER BY 1", ())
    assert exists == [(1,), (2,), (3,)]
    grouped = client(world, f"SELECT o.customer_id, count(*) FROM {s}.orders o JOIN "
                     f"{s}.customers c ON c.id = o.customer_id WHERE c.email LIKE '%@example.%' "
                     "GROUP BY o.customer_id ORDER BY 1", ())
    assert grouped == [(1, 2), (2, 1), (3, 1)]
    assert_no_leak(got + like + joined + in_sub + grouped, "must-work")


def test_joined_masked_columns_come_back_masked(world: World, client: Runner) -> None:
    s = world.schema
    rows = client(world, f"SELECT o.note, c.email, c.card FROM {s}.orders o JOIN "
                  f"{s}.customers_v c ON c.id = o.customer_id ORDER BY o.id", ())
    by_id = {r[0]: r for r in ROWS}
    assert rows == [(note_, masked_email(by_id[cid][2]), masked_card(by_id[cid][5]))
                    for _, cid, note_ in ORDERS]
    assert_no_leak(rows, "join")


# -- COPY ---------------------------------------------------------------------------------------

def test_copy_of_clean_columns_works(world: World) -> None:
    with psycopg.connect(world.dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY (SELECT id, full_name FROM {world.schema}.customers ORDER BY id) "
                      "TO STDOUT") as cp:
            rows = list(cp.rows())
        with cur.copy(f"COPY {world.schema}.orders (id, note) TO STDOUT (FORMAT csv)") as cp:
            csv = b"".join(bytes(b) for b in cp).decode()
    assert rows == [(str(r[0]), r[1]) for r in ROWS]
    assert csv.splitlines() == [f"{o[0]},{o[2]}" for o in ORDERS]


def test_copy_of_clean_columns_works_through_psql(world: World) -> None:
    out = subprocess.run([psql_bin(), world.dsn, "-X", "-v", "ON_ERROR_STOP=1", "-c",
                          f"COPY (SELECT id, full_name FROM {world.schema}.customers "
                          "ORDER BY id) TO STDOUT"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{r[0]}\t{r[1]}" for r in ROWS]


COPY_MASKED = [
    "COPY (SELECT email FROM {s}.customers) TO STDOUT",
    "COPY (SELECT id, ssn, card FROM {s}.customers) TO STDOUT (FORMAT csv, HEADER)",
    "COPY (SELECT upper(phone) FROM {s}.customers) TO STDOUT",
    "COPY (SELECT * FROM {s}.customers_v) TO STDOUT (FORMAT binary)",
    "COPY {s}.customers TO STDOUT",
    "COPY {s}.customers (card) TO STDOUT",
    "COPY (WITH w AS (SELECT ssn FROM {s}.customers) SELECT * FROM w) TO STDOUT",
    "COPY (SELECT row_to_json(c) FROM {s}.customers c) TO STDOUT",
    "COPY (SELECT 'x' UNION ALL SELECT email FROM {s}.customers) TO STDOUT",
]


@pytest.mark.parametrize("sql", COPY_MASKED)
def test_copy_with_a_masked_column_is_refused_or_masked(world: World, sql: str) -> None:
    sql = sql.format(s=world.schema)
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        try:
            with conn.cursor() as cur, cur.copy(sql) as cp:
                data = b"".join(bytes(b) for b in cp)
        except psycopg.errors.InsufficientPrivilege as exc:
            assert "wiregate" in str(exc), exc
            assert not leaks(error_text(exc))
            assert conn.execute("SELECT 1").fetchone() == (1,)
            return
    assert_no_leak([data], sql)
    assert data, "COPY returned nothing"


# -- known leaks --------------------------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "SELECT id FROM {s}.customers WHERE ('\"' || card || '\"')::int = 1",
    "SELECT id FROM {s}.customers WHERE to_json(card)::text::date IS NULL",
    "SELECT to_json(card)::text::int FROM {s}.customers_v",
    "SELECT ROW(ROW(card)::text)::text::int FROM {s}.customers",
    "SELECT (json_agg(c)::text)::uuid FROM {s}.customers c",
])
def test_error_scrubbing_of_a_value_holding_quotes(world: World, sql: str) -> None:
    """The server does not escape quotes inside a value it quotes in an error: everything
    between the first and the last quote is taken out."""
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DataError) as ei:
            conn.execute(sql.format(s=world.schema)).fetchall()
    assert not leaks(error_text(ei.value)), error_text(ei.value)

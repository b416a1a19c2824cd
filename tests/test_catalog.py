"""Loading catalog snapshots from the real local PostgreSQL, caching and saving them.

A throwaway schema holds one object of each kind the guardrails care about; it is created
once for the module and dropped with CASCADE afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from policies.catalog import Catalog
from policies.facts import Name
from proxy.catalog import (
    CatalogCache,
    CatalogError,
    load_catalog,
    load_snapshot,
    save_snapshot,
)
from proxy.config import Secret, Upstream
from tests.conftest import PgTarget, free_port

pytestmark = pytest.mark.postgres


def upstream_for(pg: PgTarget, **changes: object) -> Upstream:
    up = Upstream(name="test", host=pg.host, port=pg.port, dbname=pg.dbname, user=pg.user,
                  password=Secret(value=pg.password or None, key="test.password"),
                  tls="disable")
    return replace(up, **changes)  # type: ignore[arg-type]


def execute(pg: PgTarget, sql: str) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="module")
def schema(pg: PgTarget) -> Iterator[str]:
    name = f"wg_cat_{secrets.token_hex(4)}"
    execute(pg, f"""
        CREATE SCHEMA {name};
        CREATE TABLE {name}.items (id int PRIMARY KEY, label text);
        CREATE TABLE {name}."MixedCase" (id int);
        CREATE SEQUENCE {name}.counter;
        CREATE VIEW {name}.items_v AS SELECT id, label FROM {name}.items;
        CREATE VIEW {name}.items_vv AS SELECT id FROM {name}.items_v WHERE id > 0;
        CREATE VIEW {name}.next_v AS SELECT nextval('{name}.counter') AS n;
        CREATE MATERIALIZED VIEW {name}.items_m AS
            SELECT i.id, m.id AS mid FROM {name}.items i JOIN {name}."MixedCase" m USING (id);
        CREATE FUNCTION {name}.stable_fn(int) RETURNS int
            LANGUAGE sql STABLE AS 'SELECT $1';
        CREATE FUNCTION {name}.volatile_fn() RETURNS void
            LANGUAGE plpgsql AS $$ BEGIN DELETE FROM {name}.items; END $$;
        CREATE FUNCTION {name}."CamelFn"() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1';
        CREATE PROCEDURE {name}.do_work()
            LANGUAGE plpgsql AS $$ BEGIN INSERT INTO {name}.items VALUES (1, 'x'); END $$;
    """)
    yield name
    execute(pg, f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture(scope="module")
def up(pg: PgTarget) -> Upstream:
    return upstream_for(pg)


@pytest.fixture(scope="module")
def catalog(up: Upstream, schema: str) -> Catalog:
    return asyncio.run(load_catalog(up, 7))


def test_load_is_fast_and_complete(up: Upstream, schema: str) -> None:
    started = time.perf_counter()
    cat = asyncio.run(load_catalog(up, 1))
    elapsed = time.perf_counter() - started
    assert cat.loaded and cat.version == 1
    assert sum(len(rs) for rs in cat.routines.values()) > 2000
    assert {"pg_catalog", "information_schema", "public", schema} <= cat.schemas
    assert elapsed < 1.0, f"catalog load took {elapsed:.3f} s"


def test_relations_and_kinds(catalog: Catalog, schema: str) -> None:
    rels = catalog.relations
    assert rels[Name(schema, "items")].kind == "r"
    assert rels[Name(schema, "items")].bases == ()
    assert rels[Name(schema, "items_v")].kind == "v"
    assert rels[Name(schema, "items_m")].kind == "m"
    assert rels[Name(schema, "counter")].kind == "S"
    assert rels[Name("pg_catalog", "pg_class")].kind == "r"
    assert rels[Name("information_schema", "tables")].kind == "v"
    assert catalog.version == 7
    # indexes and TOAST tables are not relations statements name
    assert Name(schema, "items_pkey") not in rels
    assert not any(n.schema == "pg_toast" for n in rels)


def test_view_bases_are_one_level(catalog: Catalog, schema: str) -> None:
    rels = catalog.relations
    assert rels[Name(schema, "items_v")].bases == (Name(schema, "items"),)
    assert rels[Name(schema, "items_vv")].bases == (Name(schema, "items_v"),)
    assert set(rels[Name(schema, "items_m")].bases) == {Name(schema, "items"),
                                                        Name(schema, "MixedCase")}
    # a relation named only through a regclass constant still counts
    assert rels[Name(schema, "next_v")].bases == (Name(schema, "counter"),)


def test_nested_view_resolves_to_table(catalog: Catalog, schema: str) -> None:
    nested = catalog.relations[Name(schema, "items_vv")]
    assert catalog.base_tables(nested) == {Name(schema, "items")}


def test_system_views_have_bases(catalog: Catalog) -> None:
    """initdb's objects have no pg_depend rows; the bases come from the stored rule."""
    shadow = catalog.relations[Name("pg_catalog", "pg_shadow")]
    assert Name("pg_catalog", "pg_authid") in catalog.base_tables(shadow)
    tables = catalog.relations[Name("information_schema", "tables")]
    assert Name("pg_catalog", "pg_class") in tables.bases


def test_routines(catalog: Catalog, schema: str) -> None:
    (stable,) = catalog.routines[Name(schema, "stable_fn")]
    assert (stable.volatility, stable.kind, stable.read_only) == ("s", "f", True)
    (volatile,) = catalog.routines[Name(schema, "volatile_fn")]
    assert (volatile.volatility, volatile.kind, volatile.read_only) == ("v", "f", False)
    (proc,) = catalog.routines[Name(schema, "do_work")]
    assert proc.kind == "p" and not proc.read_only
    assert catalog.routines[Name("pg_catalog", "count")][0].kind == "a"


def test_system_routines(catalog: Catalog) -> None:
    read_file = catalog.routines[Name("pg_catalog", "pg_read_file")]
    assert read_file and all(r.volatility == "v" for r in read_file)
    (now,) = catalog.routines[Name("pg_catalog", "now")]
    assert now.volatility == "s"
    assert catalog.routines_named(Name(None, "now"), ["public"]) == [now]


def test_mixed_case_names_kept(catalog: Catalog, schema: str) -> None:
    assert catalog.relations[Name(schema, "MixedCase")].kind == "r"
    assert Name(schema, "mixedcase") not in catalog.relations
    assert catalog.routines[Name(schema, "CamelFn")][0].volatility == "i"


def test_routine_by_oid(pg: PgTarget, catalog: Catalog, schema: str) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        row = conn.execute(
            f"SELECT '{schema}.stable_fn(int)'::regprocedure::oid").fetchone()
    assert row is not None
    got = catalog.routine_by_oid(int(row[0]))
    assert got is not None and got.name == Name(schema, "stable_fn")


def test_snapshot_round_trip(catalog: Catalog, tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    save_snapshot(catalog, path)
    back = load_snapshot(path)
    assert back == replace(catalog, version=back.version)
    assert back.routine_by_oid(next(iter(catalog.routines.values()))[0].oid) is not None
    assert [p.name for p in tmp_path.iterdir()] == ["catalog.json"]


def test_bad_snapshot_is_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="missing.json"):
        load_snapshot(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CatalogError, match="not valid"):
        load_snapshot(bad)


def test_wrong_port_fails_fast(pg: PgTarget) -> None:
    up = upstream_for(pg, port=free_port())
    started = time.perf_counter()
    with pytest.raises(CatalogError, match="could not connect"):
        asyncio.run(load_catalog(up, 1, timeout=5))
    assert time.perf_counter() - started < 2


def test_login_error_is_catalog_error(pg: PgTarget) -> None:
    up = upstream_for(pg, dbname="wg_no_such_database")
    with pytest.raises(CatalogError, match="does not exist"):
        asyncio.run(load_catalog(up, 1))


def test_silent_server_times_out(pg: PgTarget) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts at the TCP level, never answers
        up = upstream_for(pg, host="127.0.0.1", port=silent.getsockname()[1])
        started = time.perf_counter()
        with pytest.raises(CatalogError, match="no answer within 0.3 s"):
            asyncio.run(load_catalog(up, 1, timeout=0.3))
        assert time.perf_counter() - started < 2


class CountingLoader:
    """Wraps load_catalog to count loads and optionally fail them."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    async def __call__(self, up: Upstream, version: int) -> Catalog:
        self.calls += 1
        if self.fail:
            raise CatalogError("catalog of upstream 'test': simulated outage")
        return await load_catalog(up, version)


def test_cache_shares_one_load(up: Upstream, schema: str) -> None:
    loader = CountingLoader()

    async def main() -> None:
        cache = CatalogCache(loader=loader)
        assert cache.current(up) is None
        got = await asyncio.gather(*(cache.get(up) for _ in range(10)))
        assert loader.calls == 1
        assert all(c is got[0] for c in got)
        assert cache.current(up) is got[0]
        assert await cache.get(up) is got[0] and loader.calls == 1

    asyncio.run(main())


def test_invalidate_sees_new_table(pg: PgTarget, up: Upstream, schema: str) -> None:
    async def main() -> None:
        cache = CatalogCache()
        first = await cache.get(up)
        assert Name(schema, "late") not in first.relations
        await asyncio.to_thread(execute, pg, f"CREATE TABLE {schema}.late (id int)")
        cache.invalidate(up)
        deadline = time.monotonic() + 5
        while (cur := cache.current(up)) is first and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert cur is not None and cur.version > first.version
        assert cur.relations[Name(schema, "late")].kind == "r"
        again = await cache.refresh(up)
        assert again.version > cur.version
        await cache.close()

    asyncio.run(main())


def test_lazy_refresh_returns_old_snapshot(up: Upstream, schema: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    loader = CountingLoader()

    async def main() -> None:
        cache = CatalogCache(refresh_interval=0, retry_delay=60, loader=loader)
        first = await cache.get(up)
        # older than the interval: the old snapshot comes back while a refresh starts
        assert await cache.get(up) is first
        second = await cache.refresh(up)
        assert second.version > first.version and loader.calls >= 2

        loader.fail = True
        calls = loader.calls
        with caplog.at_level(logging.WARNING, logger="wiregate.catalog"):
            assert await cache.get(up) is second
            with pytest.raises(CatalogError, match="simulated outage"):
                await cache.refresh(up)
        assert cache.current(up) is second
        assert any("refresh failed" in r.getMessage() for r in caplog.records)
        # a failed refresh waits retry_delay before trying again
        before = loader.calls
        assert await cache.get(up) is second and loader.calls == before > calls
        await cache.close()

    asyncio.run(main())


def test_first_load_failure_raises(pg: PgTarget) -> None:
    up = upstream_for(pg, port=free_port())

    async def main() -> None:
        cache = CatalogCache(timeout=2)
        results = await asyncio.gather(cache.get(up), cache.get(up), return_exceptions=True)
        assert all(isinstance(r, CatalogError) for r in results)
        assert cache.current(up) is None

    asyncio.run(main())


def test_reads_survive_concurrent_ddl(pg: PgTarget, up: Upstream, schema: str) -> None:
    """Views created and dropped while the catalog is read (pg_get_viewdef of a view that is
    gone by then): every read still succeeds."""
    import threading

    stop = threading.Event()

    def churn() -> None:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                conn.execute(f"CREATE VIEW {schema}.churn_{i % 4} AS SELECT 1 AS x")
                conn.execute(f"DROP VIEW {schema}.churn_{i % 4}")
                i += 1
                time.sleep(0.01)

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        async def reads() -> int:
            done = 0
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                await load_catalog(up, done)
                done += 1
            return done
        assert asyncio.run(reads()) > 5
    finally:
        stop.set()
        worker.join()

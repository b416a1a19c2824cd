"""Guardrails with several worker processes: a schema change committed through one worker
reaches the catalog snapshots of the others before they judge another statement on it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import PgTarget, ProxyProcess, client_dsn


@pytest.fixture
def schema(pg: PgTarget) -> Iterator[str]:
    name = f"wg_gwk_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
        conn.execute(f"CREATE TABLE {name}.plain (id int, v text)")
        conn.execute(f"CREATE TABLE {name}.vault (id int, v text)")
        conn.execute(f"INSERT INTO {name}.vault VALUES (1, 'secret')")
        conn.execute(f"CREATE VIEW {name}.v AS SELECT * FROM {name}.plain")
    yield name
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def _worker(conn: psycopg.Connection[Any]) -> int:
    return conn.info.backend_pid >> 24   # Wiregate's cancel key names the worker


def test_view_redefined_on_one_worker_is_judged_anew_on_the_other(
        proxy_process: Callable[..., ProxyProcess], pg: PgTarget, schema: str,
        tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[profiles.human]\n'
        '[[profiles.human.rule]]\nid = "protect-vault"\nkind = "protected_tables"\n'
        f'tables = ["{schema}.vault"]\n')
    proxy = proxy_process(server={"workers": 2}, guardrails={"policy_file": str(policy)},
                          upstream={"profile": "human"})
    dsn = client_dsn(proxy.port)
    others: list[psycopg.Connection[Any]] = []
    try:
        with psycopg.connect(dsn, autocommit=True) as ddl:
            home = _worker(ddl)
            while len(others) < 40 and not any(_worker(c) != home for c in others):
                others.append(psycopg.connect(dsn, autocommit=True))
            away = next(c for c in others if _worker(c) != home)
            # the other worker has judged through the view once: its snapshot knows v → plain
            away.execute(f"INSERT INTO {schema}.v VALUES (1, 'fine')")
            ddl.execute(f"CREATE OR REPLACE VIEW {schema}.v AS SELECT * FROM {schema}.vault")
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
                away.execute(f"INSERT INTO {schema}.v VALUES (2, 'leak')")
            assert "protect-vault" in str(ei.value)
    finally:
        for c in others:
            c.close()
    with psycopg.connect(pg.dsn()) as conn:
        assert conn.execute(f"SELECT v FROM {schema}.vault").fetchall() == [("secret",)]

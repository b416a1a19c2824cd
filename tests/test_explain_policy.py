"""``wiregate explain-policy`` and ``catalog-snapshot`` as people run them: the decision, the
rule and the resolved objects, without running the statement."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT, PgTarget, config_dict, free_port, to_toml

POLICY = ROOT / "examples" / "policy.toml"


def wiregate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def config(pg: PgTarget, tmp_path: Path) -> Path:
    data = config_dict(pg, free_port(), guardrails={"policy_file": str(POLICY)},
                       upstream={"profile": "agent-rw"})
    path = tmp_path / "wiregate.toml"
    path.write_text(to_toml(data))
    return path


def test_refusal_names_rule_and_objects_and_runs_nothing(pg: PgTarget, config: Path) -> None:
    table = f"wg_explain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int)")
        conn.execute(f"INSERT INTO {table} VALUES (1), (2)")
    try:
        out = wiregate("explain-policy", "-c", str(config), f"DELETE FROM {table}")
        assert out.returncode == 1, out.stderr
        assert f"writes:   {table} = public.{table} [r] (delete; may touch every row" in out.stdout
        assert "decision: REFUSED by rule bounded-writes (SQLSTATE 42501)" in out.stdout
        ok = wiregate("explain-policy", "-c", str(config), f"SELECT * FROM {table}")
        assert ok.returncode == 0 and "decision: ALLOWED" in ok.stdout
        with psycopg.connect(pg.dsn()) as conn:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (2,)
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}")


def test_offline_with_a_catalog_snapshot(config: Path, tmp_path: Path) -> None:
    snap = tmp_path / "catalog.json"
    made = wiregate("catalog-snapshot", "-c", str(config), "-o", str(snap))
    assert made.returncode == 0, made.stderr
    assert "relations" in made.stdout and snap.stat().st_size > 1000
    out = wiregate("explain-policy", "--policy", str(POLICY), "-p", "agent-rw", "--catalog",
                   str(snap), "SELECT pg_catalog.pg_read_file('/etc/passwd')")
    assert out.returncode == 1
    assert "pg_catalog.pg_read_file() [volatility v]" in out.stdout
    assert "REFUSED by rule no-files" in out.stdout
    view = wiregate("explain-policy", "--policy", str(POLICY), "-p", "agent-readonly",
                    "--catalog", str(snap), "SELECT count(*) FROM pg_shadow")
    assert view.returncode == 0
    assert "pg_catalog.pg_shadow [v] → pg_catalog.pg_authid" in view.stdout


def test_unparseable_and_unknown_profile_are_clear(config: Path) -> None:
    out = wiregate("explain-policy", "-c", str(config), "--no-catalog", "SELEC 1")
    assert out.returncode == 1 and "REFUSED by rule wiregate.parse" in out.stdout
    bad = wiregate("explain-policy", "-c", str(config), "-p", "nobody", "SELECT 1")
    assert bad.returncode == 2 and "'nobody' is not defined" in bad.stderr


def test_check_config_names_the_policy_key(tmp_path: Path, pg: PgTarget) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[profiles.p]\n[[profiles.p.rule]]\nid = "x"\nkind = "dll"\n')
    data = config_dict(pg, free_port(), guardrails={"policy_file": str(policy)},
                       upstream={"profile": "p"})
    path = tmp_path / "wiregate.toml"
    path.write_text(to_toml(data))
    out = wiregate("check-config", str(path))
    assert out.returncode == 1
    assert "guardrails.policy_file" in out.stderr and "profiles.p.rule[0].kind" in out.stderr
    policy.write_text('[profiles.p]\n[[profiles.p.rule]]\nid = "x"\nkind = "ddl"\n')
    good = wiregate("check-config", str(path))
    assert good.returncode == 0 and "profile p: x (ddl)" in good.stdout


def test_output_columns_show_their_lineage_and_masking(config: Path, tmp_path: Path,
                                                       pg: PgTarget) -> None:
    table = f"wg_explain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int, email text)")
    try:
        snap = tmp_path / "catalog.json"
        assert wiregate("catalog-snapshot", "-c", str(config), "-o", str(snap)).returncode == 0
        policy = tmp_path / "masking.toml"
        policy.write_text(f'[profiles.agent.masking]\n[[profiles.agent.masking.column]]\n'
                          f'columns = ["public.{table}.email"]\nstrategy = "email"\n')
        out = wiregate("explain-policy", "--policy", str(policy), "-p", "agent", "--catalog",
                       str(snap), f"SELECT id, lower(email) AS e FROM {table}")
        assert out.returncode == 0, out.stderr
        assert f"output:   id ← public.{table}.id\n" in out.stdout
        assert f"output:   e ← public.{table}.email (derived)  → masked whole: redact" \
            in out.stdout
        direct = wiregate("explain-policy", "--policy", str(policy), "-p", "agent",
                          "--catalog", str(snap), f"SELECT email FROM {table}")
        assert f"output:   email ← public.{table}.email  → masked: email" in direct.stdout
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}")

"""Shipped configs must load and keep their documented passwords, or copy-paste setups break."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from policies.guardrails import parse_profiles
from protocols.mysql.auth import native_stored
from protocols.postgres.scram import make_verifier, parse_verifier
from proxy.config import load_config

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(p for p in EXAMPLES_DIR.glob("*.toml") if not p.name.endswith("policy.toml"))
POLICIES = sorted(EXAMPLES_DIR.glob("*policy.toml"))


def _password_matches(stored: str, password: str) -> bool:
    v = parse_verifier(stored)
    return make_verifier(password, iterations=v.iterations, salt=v.salt) == stored


def test_examples_present() -> None:
    assert (EXAMPLES_DIR / "local.toml") in EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_with_demo_login(path: Path) -> None:
    config = load_config(path)
    assert config.postgres is not None
    assert config.postgres.databases
    assert "demo" in config.users, f"{path.name} should define the documented demo login"
    assert _password_matches(config.users["demo"].scram_verifier or "", "demo")


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_example_policy_defines_the_documented_profiles(path: Path) -> None:
    profiles = parse_profiles(tomllib.loads(path.read_text()))
    assert {"agent-readonly", "agent-rw", "human"} <= set(profiles)
    assert profiles["agent-readonly"].read_only
    ids = [r.id for p in profiles.values() for r in p.rules]
    assert all(ids), "every rule has an id"


def test_local_example_turns_guardrails_on() -> None:
    config = load_config(EXAMPLES_DIR / "local.toml")
    assert config.guardrails is not None and config.postgres is not None
    routes = config.postgres.databases
    assert config.guardrails.profile_for(routes["test"]) == "agent-rw"
    assert config.guardrails.profile_for(routes["readonly"]) == "agent-readonly"


def test_local_example_fronts_local_postgres() -> None:
    config = load_config(EXAMPLES_DIR / "local.toml")
    assert config.postgres is not None
    assert (config.postgres.host, config.postgres.port) == ("127.0.0.1", 6432)
    upstream = config.postgres.databases["test"]
    assert (upstream.host, upstream.port, upstream.dbname, upstream.user) == (
        "127.0.0.1", 5432, "test", "postgres")
    assert not upstream.password.present


def test_demo_config_loads(tmp_path: Path) -> None:
    """The config ``wiregate demo`` writes is an example too: it must load as written."""
    from proxy.demo import ensure_certs, write_config

    cert, key = ensure_certs(tmp_path / "certs")
    path = write_config(tmp_path, "127.0.0.1:6432", tmp_path / "sock", 5432)
    config = load_config(path)
    assert config.postgres is not None
    assert config.postgres.tls_cert_file == str(cert.resolve())
    assert config.postgres.tls_key_file == str(key.resolve())
    upstream = config.postgres.databases["demo"]
    assert (upstream.host, upstream.port, upstream.tls) == (str(tmp_path / "sock"), 5432,
                                                            "disable")
    assert _password_matches(config.users["demo"].scram_verifier or "", "demo")


def test_local_example_fronts_local_mariadb(mysql: Any) -> None:
    """examples/local.toml's MySQL listener as a user runs it: `wiregate serve`, then the
    mariadb client logs in as demo/demo on 3307 (moved to a free port here) and a DROP is
    refused by the agent-rw profile."""
    import subprocess

    from proxy.server import ThreadedProxy
    from tests.conftest import free_port

    text = (EXAMPLES_DIR / "local.toml").read_text()
    config = load_config(EXAMPLES_DIR / "local.toml")
    assert config.mysql is not None
    assert (config.mysql.host, config.mysql.port) == ("127.0.0.1", 3307)
    route = config.mysql.databases["test"]
    assert (route.host, route.port, route.dbname, route.user) == ("127.0.0.1", 3306, "test",
                                                                  "root")
    demo = config.users["demo"]
    assert demo.mysql_native_password == native_stored(b"demo")
    port = free_port()
    moved = EXAMPLES_DIR / f".local-{port}.toml"
    moved.write_text(text.replace('listen = "127.0.0.1:3307"', f'listen = "127.0.0.1:{port}"')
                     .replace('listen = "127.0.0.1:6432"',
                              f'listen = "127.0.0.1:{free_port()}"'))
    try:
        proxy = ThreadedProxy(load_config(moved)).start()
    finally:
        moved.unlink()
    try:
        def cli(db: str, sql: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["mariadb", "-h127.0.0.1", f"-P{port}", "-udemo", "-pdemo",
                                   "--batch", "--skip-column-names", db, "-e", sql],
                                  capture_output=True, text=True, timeout=30)

        ok = cli("test", "SELECT 40 + 2")
        assert ok.returncode == 0 and ok.stdout.strip() == "42", ok.stderr
        refused = cli("test", "DROP TABLE no_such_table")
        assert refused.returncode == 1
        assert "wiregate: blocked by rule no-ddl" in refused.stderr
        ro = cli("readonly", "SELECT @@tx_read_only")
        assert ro.stdout.strip() == "1", ro.stderr
    finally:
        proxy.stop()

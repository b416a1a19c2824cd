"""Shipped configs must load and keep their documented passwords, or copy-paste setups break."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from policies.guardrails import parse_profiles
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
    assert _password_matches(config.users["demo"].scram_verifier, "demo")


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
    assert _password_matches(config.users["demo"].scram_verifier, "demo")

"""Configuration: every error names its key; secrets resolve; paths follow the config file; CLI."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from protocols.postgres.scram import ScramClient, ScramServer, make_verifier, parse_verifier
from proxy.certs import generate_self_signed, write_pair
from proxy.config import ConfigError, Secret, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
VERIFIER = make_verifier("pw", 16, salt=b"0123456789abcdef")
BASE: dict[str, Any] = {
    "postgres": {"databases": {"test": {"host": "127.0.0.1", "user": "postgres"}}},
}
DB = "postgres.databases.test"
DELETE = object()


def config(**changes: Any) -> dict[str, Any]:
    """BASE with ``a__b__c`` keys set (the value ``DELETE`` removes the key)."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = data
        for part in path:
            node = node.setdefault(part, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return data


def problem(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    return exc.value


def test_minimal_config_defaults() -> None:
    cfg = parse_config(copy.deepcopy(BASE), source="x.toml")
    assert cfg.source == "x.toml"
    lst = cfg.postgres
    assert lst is not None
    assert (lst.host, lst.port) == ("127.0.0.1", 6432)
    assert not lst.tls_enabled and not lst.require_tls
    assert lst.max_message_size == 256 * 1024 * 1024
    up = lst.databases["test"]
    assert (up.host, up.port, up.dbname, up.user, up.tls) == (
        "127.0.0.1", 5432, "test", "postgres", "prefer")
    assert not up.password.present and up.password.resolve() == ""
    assert up.password.key == f"{DB}.password"
    assert cfg.server.workers == 1 and cfg.server.log_format == "plain"
    assert cfg.users == {}


def test_full_config_values() -> None:
    cfg = parse_config(config(
        server__workers=4, server__log_format="json", server__log_level="DEBUG",
        server__shutdown_grace=0, server__uvloop=False,
        users__alice__scram_sha_256=VERIFIER,
        postgres__listen="[::1]:7000", postgres__connect_timeout=3, postgres__idle_timeout=0,
        postgres__tcp_keepalive=False, postgres__max_message_size=1024,
        **{f"postgres__databases__test__{k}": v for k, v in {
            "port": 6543, "dbname": "real", "password_env": "PGPW", "tls": "require",
            "tls_server_name": "db.internal", "host": "/var/run/postgresql"}.items()}))
    assert cfg.server.workers == 4 and cfg.server.log_format == "json"
    assert cfg.server.shutdown_grace == 0.0 and cfg.server.use_uvloop is False
    assert cfg.users["alice"].scram_verifier == VERIFIER
    lst = cfg.postgres
    assert lst is not None
    assert (lst.host, lst.port) == ("::1", 7000)
    assert lst.connect_timeout == 3.0 and isinstance(lst.connect_timeout, float)
    up = lst.databases["test"]
    assert up.is_unix and up.unix_path == "/var/run/postgresql/.s.PGSQL.6543"
    assert (up.dbname, up.tls, up.tls_server_name) == ("real", "require", "db.internal")
    assert up.password == Secret(env="PGPW", key=f"{DB}.password")


@pytest.mark.parametrize("changes, key, message", [
    # types
    ({"postgres__databases__test__port": "5432"}, f"{DB}.port", "must be a int, got str '5432'"),
    ({"postgres__databases__test__port": 5432.0}, f"{DB}.port", "must be a int"),
    ({"postgres__databases__test__port": True}, f"{DB}.port", "not a boolean"),
    ({"postgres__databases__test__host": 1}, f"{DB}.host", "must be a str"),
    ({"postgres__require_tls": "yes"}, "postgres.require_tls", "must be a bool"),
    ({"postgres__connect_timeout": "5s"}, "postgres.connect_timeout", "must be a float"),
    ({"server": []}, "server", "must be a dict"),
    ({"server__workers": "4"}, "server.workers", "must be a int"),
    ({"postgres__databases": "test"}, "postgres.databases", "must be a dict"),
    ({"postgres__databases__test": 5}, DB, "must be a table"),
    ({"users__alice": "x"}, "users.alice", "must be a table"),
    # values
    ({"postgres__databases__test__port": 0}, f"{DB}.port", "must be a TCP port 1-65535, got 0"),
    ({"postgres__databases__test__port": 65536}, f"{DB}.port", "must be a TCP port"),
    ({"postgres__databases__test__tls": "verify"}, f"{DB}.tls",
     "must be one of disable, prefer, require, verify-full, got 'verify'"),
    ({"postgres__databases__test__tls": "verify-full"}, f"{DB}.tls_ca_file",
     "is required when tls = \"verify-full\""),
    ({"postgres__databases__test__tls_ca_file": "/nonexistent/ca.pem"}, f"{DB}.tls_ca_file",
     "file /nonexistent/ca.pem does not exist"),
    ({"postgres__databases__test__host": DELETE}, f"{DB}.host", "is required"),
    ({"postgres__databases__test__user": DELETE}, f"{DB}.user", "is required"),
    ({"postgres__databases__test__password": "a", "postgres__databases__test__password_env": "B"},
     f"{DB}.password_env", "give only one of password, password_env"),
    ({"postgres__databases__test__password_env": "B",
      "postgres__databases__test__password_file": "f"},
     f"{DB}.password_file", "give only one of password_env, password_file"),
    ({"postgres__databases": {}}, "postgres.databases", "needs at least one database"),
    ({"postgres__databases": DELETE}, "postgres.databases", "is required"),
    ({"postgres": DELETE}, "postgres", "no listener configured"),
    ({"postgres__listen": "6432"}, "postgres.listen", "must be HOST:PORT, got '6432'"),
    ({"postgres__listen": "localhost:0"}, "postgres.listen", "must be HOST:PORT"),
    ({"postgres__listen": "localhost:99999"}, "postgres.listen", "must be HOST:PORT"),
    ({"postgres__listen": ":6432"}, "postgres.listen", "must be HOST:PORT"),
    ({"postgres__require_tls": True}, "postgres.require_tls",
     "needs tls_cert_file and tls_key_file"),
    ({"postgres__tls_cert_file": "/nonexistent.crt", "postgres__tls_key_file": "/nonexistent.key"},
     "postgres.tls_cert_file", "does not exist"),
    ({"postgres__connect_timeout": 0}, "postgres.connect_timeout", "must be > 0, got 0"),
    ({"postgres__startup_timeout": -1.5}, "postgres.startup_timeout", "must be > 0"),
    ({"postgres__idle_timeout": -1}, "postgres.idle_timeout", "must be >= 0"),
    ({"postgres__connect_timeout": float("nan")}, "postgres.connect_timeout", "must be > 0"),
    ({"postgres__idle_timeout": float("nan")}, "postgres.idle_timeout", "must be >= 0"),
    ({"postgres__max_message_size": 1023}, "postgres.max_message_size", "at least 1024 bytes"),
    ({"postgres__keepalive_idle": 0}, "postgres.keepalive_idle", "must be between 1 and 32767"),
    ({"postgres__keepalive_interval": -1}, "postgres.keepalive_interval",
     "must be between 1 and 32767"),
    ({"postgres__keepalive_count": 0}, "postgres.keepalive_count", "must be between 1 and 127"),
    ({"postgres__keepalive_count": 128}, "postgres.keepalive_count",
     "must be between 1 and 127"),
    ({"server__workers": 0}, "server.workers", "must be between 1 and 64, got 0"),
    ({"server__workers": 65}, "server.workers", "must be between 1 and 64, got 65"),
    ({"server__log_format": "xml"}, "server.log_format", "must be one of plain, json"),
    ({"server__log_level": "verbose"}, "server.log_level", "must be debug, info"),
    ({"server__shutdown_grace": -1}, "server.shutdown_grace", "must be >= 0"),
    ({"users__alice__scram_sha_256": "md5abcdef"}, "users.alice.scram_sha_256",
     "not a SCRAM-SHA-256 verifier"),
    ({"users__alice__scram_sha_256": VERIFIER.replace("$16:", "$0:")},
     "users.alice.scram_sha_256", "wrong key lengths or iteration count"),
    ({"users__alice": {}}, "users.alice.scram_sha_256", "is required"),
    # unknown keys
    ({"postgre": {}}, "postgre",
     "unknown key (expected one of: guardrails, mysql, postgres, server, users)"),
    ({"server__worker": 2}, "server.worker", "unknown key"),
    ({"postgres__listen_port": 1}, "postgres.listen_port", "unknown key"),
    ({"postgres__databases__test__hots": "x"}, f"{DB}.hots", "unknown key"),
    ({"users__alice__password": "x", "users__alice__scram_sha_256": VERIFIER},
     "users.alice.password", "unknown key (expected one of: caching_sha2_password, "
     "client_ed25519, mysql_native_password, scram_sha_256)"),
])
def test_errors_name_the_key(changes: dict[str, Any], key: str, message: str) -> None:
    exc = problem(config(**changes))
    assert exc.key == key
    assert str(exc).startswith(f"{key}: ")
    assert message in str(exc)


def _pem_pair(directory: Path) -> tuple[Path, Path]:
    """A real certificate and key, since the config loads them to validate."""
    return write_pair(directory, "c", *generate_self_signed(["127.0.0.1"]))


def test_cert_and_key_go_together(tmp_path: Path) -> None:
    cert, key = _pem_pair(tmp_path)
    exc = problem(config(postgres__tls_cert_file=str(cert)))
    assert exc.key == "postgres.tls_key_file" and "go together" in exc.problem
    exc = problem(config(postgres__tls_key_file=str(key)))
    assert exc.key == "postgres.tls_cert_file" and "go together" in exc.problem
    exc = problem(config(postgres__tls_cert_file=str(cert),
                         postgres__tls_key_file=str(tmp_path / "missing.key")))
    assert exc.key == "postgres.tls_key_file" and "does not exist" in exc.problem
    cfg = parse_config(config(postgres__tls_cert_file=str(cert), postgres__tls_key_file=str(key),
                              postgres__require_tls=True))
    assert cfg.postgres is not None and cfg.postgres.tls_enabled and cfg.postgres.require_tls


def test_verify_full_with_ca(tmp_path: Path) -> None:
    ca, _ = _pem_pair(tmp_path)
    cfg = parse_config(config(postgres__databases__test__tls="verify-full",
                              postgres__databases__test__tls_ca_file=str(ca)))
    assert cfg.postgres is not None
    assert cfg.postgres.databases["test"].tls_ca_file == str(ca)


def test_error_names_the_right_database() -> None:
    data = config()
    data["postgres"]["databases"]["other"] = {"host": "h", "user": "u", "port": -5}
    assert problem(data).key == "postgres.databases.other.port"


# -- secrets ------------------------------------------------------------------------------------


def test_secret_from_value() -> None:
    cfg = parse_config(config(postgres__databases__test__password="s3cret"))
    assert cfg.postgres is not None
    pw = cfg.postgres.databases["test"].password
    assert pw.present and pw.resolve() == "s3cret"


def test_secret_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse_config(config(postgres__databases__test__password_env="WIREGATE_TEST_PW"))
    assert cfg.postgres is not None
    pw = cfg.postgres.databases["test"].password
    monkeypatch.setenv("WIREGATE_TEST_PW", "from-env")
    assert pw.resolve() == "from-env"
    monkeypatch.setenv("WIREGATE_TEST_PW", "rotated")
    assert pw.resolve() == "rotated"
    monkeypatch.delenv("WIREGATE_TEST_PW")
    with pytest.raises(ConfigError) as exc:
        pw.resolve()
    assert exc.value.key == f"{DB}.password_env"
    assert "WIREGATE_TEST_PW is not set" in str(exc.value)


def test_secret_from_file(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("line one\n")
    pw = Secret(file=str(f), key=f"{DB}.password")
    assert pw.resolve() == "line one"
    f.write_bytes(b"rotated \r\n")
    assert pw.resolve() == "rotated "  # only the line ending goes
    f.unlink()
    with pytest.raises(ConfigError) as exc:
        pw.resolve()
    assert exc.value.key == f"{DB}.password_file"
    assert str(f) in str(exc.value)


def test_empty_secret_value_is_present() -> None:
    assert Secret(value="").present and Secret(value="").resolve() == ""
    assert not Secret().present


# -- files --------------------------------------------------------------------------------------


def write_config(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


def test_load_config_resolves_relative_files_against_config_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "etc" / "wiregate"
    cert_pem, key_pem = generate_self_signed(["127.0.0.1"])
    for name, data in (("tls/server.crt", cert_pem), ("tls/server.key", key_pem),
                       ("tls/ca.pem", cert_pem), ("secrets/pw", b"upstream-pw\n")):
        (conf / name).parent.mkdir(parents=True, exist_ok=True)
        (conf / name).write_bytes(data)
    absolute_ca = tmp_path / "abs-ca.pem"
    absolute_ca.write_bytes(cert_pem)
    path = write_config(conf / "wiregate.toml", f"""
[postgres]
tls_cert_file = "tls/server.crt"
tls_key_file = "./tls/server.key"
[postgres.databases.test]
host = "db"
user = "app"
password_file = "secrets/pw"
tls = "verify-full"
tls_ca_file = "tls/ca.pem"
[postgres.databases.other]
host = "db2"
user = "app"
tls_ca_file = "{absolute_ca}"
""")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(os.path.relpath(path, elsewhere))
    lst = cfg.postgres
    assert lst is not None
    assert lst.tls_cert_file == str((conf / "tls/server.crt").resolve())
    assert lst.tls_key_file == str((conf / "tls/server.key").resolve())
    up = lst.databases["test"]
    assert up.tls_ca_file == str((conf / "tls/ca.pem").resolve())
    assert up.password.resolve() == "upstream-pw"
    assert lst.databases["other"].tls_ca_file == str(absolute_ca)


def test_load_config_relative_file_is_not_looked_up_in_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "server.crt").write_text("c")
    (tmp_path / "server.key").write_text("k")
    path = write_config(tmp_path / "sub" / "w.toml", """
[postgres]
tls_cert_file = "server.crt"
tls_key_file = "server.key"
[postgres.databases.test]
host = "db"
user = "app"
""")
    monkeypatch.chdir(tmp_path)  # the files exist here, but not next to the config
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.key == "postgres.tls_cert_file"
    assert str(tmp_path / "sub" / "server.crt") in str(exc.value)


def test_load_config_invalid_toml_names_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "bad.toml", "[postgres\nlisten = 1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.key == str(path)
    assert str(exc.value).startswith(f"{path}: not valid TOML")


def test_load_config_not_utf8_names_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nlog_level = "d\xe9bug"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.key == str(path) and "not valid TOML" in str(exc.value)


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.key == str(path) and "cannot read" in str(exc.value)


def test_load_config_key_error_from_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "w.toml", """
[postgres.databases.test]
host = "db"
user = "app"
port = "5432"
""")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.key == f"{DB}.port"


# -- command line -------------------------------------------------------------------------------


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], input=stdin,
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


GOOD_TOML = f"""
[users.alice]
scram_sha_256 = "{VERIFIER}"
[postgres.databases.test]
host = "127.0.0.1"
user = "postgres"
"""


def test_cli_check_config_bad_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "w.toml", GOOD_TOML.replace(
        'user = "postgres"', 'user = "postgres"\nport = "5432"'))
    r = cli("check-config", str(path))
    assert r.returncode == 1
    assert f"{DB}.port: must be a int" in r.stderr
    assert str(path) in r.stderr
    assert "ok" not in r.stdout


def test_cli_check_config_invalid_toml(tmp_path: Path) -> None:
    path = write_config(tmp_path / "w.toml", "this is not toml")
    r = cli("check-config", str(path))
    assert r.returncode == 1 and "not valid TOML" in r.stderr


def test_cli_check_config_good_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "w.toml", GOOD_TOML)
    r = cli("check-config", str(path))
    assert r.returncode == 0, r.stderr
    assert f"{path}: ok" in r.stdout
    assert "database test -> 127.0.0.1:5432/test as postgres (tls=prefer)" in r.stdout
    assert "users: alice" in r.stdout


def test_cli_passwd_stdin_prints_working_verifier() -> None:
    r = cli("passwd", "--stdin", stdin="secret\n")
    assert r.returncode == 0, r.stderr
    text = r.stdout.strip()
    v = parse_verifier(text)
    assert v.iterations == 4096 and len(v.salt) == 16
    assert make_verifier("secret", v.iterations, salt=v.salt) == text
    assert make_verifier("secret\n", v.iterations, salt=v.salt) != text
    # and a client holding the password logs in against it
    server, client = ScramServer(v), ScramClient("secret")
    final = server.final(client.final(server.first(client.first())))
    client.verify(final)
    assert server.done


def test_cli_passwd_user_table_and_iterations() -> None:
    r = cli("passwd", "--stdin", "--user", "bob", "--iterations", "64", stdin="hunter2\r\n")
    assert r.returncode == 0, r.stderr
    table = tomllib.loads(r.stdout)
    verifier = table["users"]["bob"]["scram_sha_256"]
    v = parse_verifier(verifier)
    assert v.iterations == 64
    assert make_verifier("hunter2", 64, salt=v.salt) == verifier
    cfg = parse_config({**copy.deepcopy(BASE), **table})
    assert cfg.users["bob"].scram_verifier == verifier


def test_cli_passwd_empty_refused() -> None:
    r = cli("passwd", "--stdin", stdin="\n")
    assert r.returncode == 1
    assert "empty password refused" in r.stderr
    assert r.stdout == ""


def test_unloadable_tls_files_are_config_errors(tmp_path: Path) -> None:
    """A certificate that is not one fails check-config, not every worker at start-up."""
    cert = tmp_path / "bad.crt"
    key = tmp_path / "bad.key"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    err = problem(config(postgres__tls_cert_file=str(cert), postgres__tls_key_file=str(key)))
    assert err.key == "postgres.tls_cert_file"
    assert "cannot load the certificate and key" in str(err)
    err = problem(config(postgres__databases__test__tls="verify-full",
                         postgres__databases__test__tls_ca_file=str(cert)))
    assert err.key == f"{DB}.tls_ca_file"
    assert "cannot load CA certificates" in str(err)


def test_masking_key_file_is_relative_to_the_policy_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policies = tmp_path / "etc" / "policies"
    policies.mkdir(parents=True)
    (policies / "mask.key").write_text("0123456789abcdef-key\n")
    (policies / "policy.toml").write_text("""
[profiles.agent.masking]
key_file = "mask.key"
[[profiles.agent.masking.column]]
columns = ["public.customers.email"]
strategy = "hash"
""")
    path = write_config(tmp_path / "etc" / "wiregate.toml", """
[postgres.databases.test]
host = "db"
user = "app"
[guardrails]
policy_file = "policies/policy.toml"
default_profile = "agent"
""")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path)
    assert cfg.guardrails is not None
    assert cfg.guardrails.mask_keys == {"agent": b"0123456789abcdef-key"}

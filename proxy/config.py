"""Configuration: TOML in, validated dataclasses out.

Every error names the offending key (``postgres.databases.test.port``) and says what is wrong,
so ``wiregate check-config`` is useful on its own.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.guardrails import PolicyError, Profile, parse_profiles
from protocols.postgres.scram import parse_verifier

UPSTREAM_TLS_MODES = ("disable", "prefer", "require", "verify-full")
LOG_FORMATS = ("plain", "json")


class ConfigError(ValueError):
    """A configuration problem, with the key it concerns."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Secret:
    """A credential held by Wiregate: inline, from an environment variable or from a file.

    Resolved at connect time so rotated files and env changes are picked up without reload.
    """

    value: str | None = None
    env: str | None = None
    file: str | None = None
    key: str = ""

    def resolve(self) -> str:
        if self.value is not None:
            return self.value
        if self.env is not None:
            got = os.environ.get(self.env)
            if got is None:
                raise ConfigError(self.key + "_env", f"environment variable {self.env} is not set")
            return got
        if self.file is not None:
            try:
                return Path(self.file).read_text().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(self.key + "_file", f"cannot read {self.file}: {exc}") from exc
        return ""

    @property
    def present(self) -> bool:
        return self.value is not None or self.env is not None or self.file is not None


@dataclass(frozen=True)
class Upstream:
    """Where a client database name leads, and the credentials Wiregate uses there."""

    name: str
    host: str
    port: int
    dbname: str
    user: str
    password: Secret
    tls: str = "prefer"
    tls_ca_file: str | None = None
    tls_server_name: str | None = None
    profile: str | None = None     # guardrails profile for sessions on this route

    @property
    def is_unix(self) -> bool:
        return self.host.startswith("/")

    @property
    def unix_path(self) -> str:
        return os.path.join(self.host, f".s.PGSQL.{self.port}")


@dataclass(frozen=True)
class ClientUser:
    """A client login. PostgreSQL clients prove the password with SCRAM; MySQL clients with
    whichever plugin the user has a stored form for (none of them is the password)."""

    name: str
    scram_verifier: str | None = None
    mysql_native_password: bytes | None = None   # SHA1(SHA1(password))
    caching_sha2_password: bytes | None = None   # SHA256(SHA256(password))
    client_ed25519: bytes | None = None          # the Ed25519 public key

    @property
    def mysql_plugins(self) -> tuple[str, ...]:
        """The MySQL auth plugins this user can log in with, strongest first."""
        out = []
        if self.client_ed25519 is not None:
            out.append("client_ed25519")
        if self.caching_sha2_password is not None:
            out.append("caching_sha2_password")
        if self.mysql_native_password is not None:
            out.append("mysql_native_password")
        return tuple(out)


@dataclass(frozen=True)
class PostgresListener:
    host: str
    port: int
    databases: dict[str, Upstream]
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    require_tls: bool = False
    connect_timeout: float = 10.0
    startup_timeout: float = 30.0
    idle_timeout: float = 0.0
    max_message_size: int = 256 * 1024 * 1024
    tcp_keepalive: bool = True
    keepalive_idle: int = 60
    keepalive_interval: int = 10
    keepalive_count: int = 6

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None


@dataclass(frozen=True)
class MySQLListener:
    """The MySQL/MariaDB listener. A client's database name picks the route; a client that
    names none gets ``default_database``. ``USE`` then moves within the route's server."""

    host: str
    port: int
    databases: dict[str, Upstream]
    default_database: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    require_tls: bool = False
    connect_timeout: float = 10.0
    startup_timeout: float = 30.0
    idle_timeout: float = 0.0
    max_packet_size: int = 64 * 1024 * 1024     # max_allowed_packet towards the client
    server_version: str = "10.11.0-Wiregate"    # until the upstream's greeting says otherwise
    tcp_keepalive: bool = True
    keepalive_idle: int = 60
    keepalive_interval: int = 10
    keepalive_count: int = 6

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None


@dataclass(frozen=True)
class ServerSettings:
    workers: int = 1
    log_format: str = "plain"
    log_level: str = "info"
    shutdown_grace: float = 30.0
    use_uvloop: bool = True


@dataclass(frozen=True)
class GuardrailsSettings:
    """Profiles from the policy file, and which one a route gets when it names none."""

    profiles: dict[str, Profile]
    default_profile: str | None = None
    catalog_refresh: float = 300.0
    policy_file: str | None = None
    mask_keys: dict[str, bytes] = field(default_factory=dict)  # profile → HMAC key

    def profile_for(self, upstream: Upstream) -> str:
        name = upstream.profile or self.default_profile
        if name is None:  # parse_config refuses such a configuration
            raise LookupError(f"no guardrails profile for database {upstream.name!r}")
        return name


@dataclass(frozen=True)
class Config:
    server: ServerSettings
    users: dict[str, ClientUser]
    postgres: PostgresListener | None
    guardrails: GuardrailsSettings | None = None
    source: str = ""
    mysql: MySQLListener | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _take(table: dict[str, Any], key: str, prefix: str, kind: type | tuple[type, ...],
          default: Any = None, required: bool = False) -> Any:
    full = f"{prefix}.{key}" if prefix else key
    if key not in table:
        if required:
            raise ConfigError(full, "is required")
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and kind is not bool and (kind is int or kind is float):
        raise ConfigError(full, f"must be a {kind.__name__}, not a boolean")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(full, f"must be a {names}, got {type(value).__name__} {value!r}")
    return value


def _reject_unknown(table: dict[str, Any], known: set[str], prefix: str) -> None:
    for key in table:
        if key not in known:
            full = f"{prefix}.{key}" if prefix else key
            raise ConfigError(full, f"unknown key (expected one of: {', '.join(sorted(known))})")


def _secret(table: dict[str, Any], base: str, prefix: str) -> Secret:
    keys = [k for k in (base, base + "_env", base + "_file") if k in table]
    if len(keys) > 1:
        raise ConfigError(f"{prefix}.{keys[1]}", f"give only one of {', '.join(keys)}")
    return Secret(
        value=_take(table, base, prefix, str),
        env=_take(table, base + "_env", prefix, str),
        file=_take(table, base + "_file", prefix, str),
        key=f"{prefix}.{base}",
    )


def _listen(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(key, f"must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _positive(value: float, key: str, allow_zero: bool = False) -> None:
    if not value >= 0 or (value == 0 and not allow_zero):  # "not >=" also refuses NaN
        raise ConfigError(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _upstream(name: str, table: Any, prefix: str, default_port: int = 5432) -> Upstream:
    if not isinstance(table, dict):
        raise ConfigError(prefix, "must be a table")
    _reject_unknown(table, {"host", "port", "dbname", "user", "password", "password_env",
                            "password_file", "tls", "tls_ca_file", "tls_server_name",
                            "profile"}, prefix)
    port = _take(table, "port", prefix, int, default_port)
    if not 0 < port < 65536:
        raise ConfigError(f"{prefix}.port", f"must be a TCP port 1-65535, got {port}")
    tls = _take(table, "tls", prefix, str, "prefer")
    if tls not in UPSTREAM_TLS_MODES:
        raise ConfigError(f"{prefix}.tls", f"must be one of {', '.join(UPSTREAM_TLS_MODES)}, "
                          f"got {tls!r}")
    host = _take(table, "host", prefix, str, required=True)
    ca = _take(table, "tls_ca_file", prefix, str)
    if tls == "verify-full" and not ca:
        raise ConfigError(f"{prefix}.tls_ca_file", "is required when tls = \"verify-full\"")
    if ca and not Path(ca).is_file():
        raise ConfigError(f"{prefix}.tls_ca_file", f"file {ca} does not exist")
    if ca:
        try:
            ssl.create_default_context(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{prefix}.tls_ca_file",
                              f"cannot load CA certificates: {exc}") from None
    return Upstream(
        name=name,
        host=host,
        port=port,
        dbname=_take(table, "dbname", prefix, str, name),
        user=_take(table, "user", prefix, str, required=True),
        password=_secret(table, "password", prefix),
        tls=tls,
        tls_ca_file=ca,
        tls_server_name=_take(table, "tls_server_name", prefix, str),
        profile=_take(table, "profile", prefix, str),
    )


def _postgres(table: Any) -> PostgresListener:
    p = "postgres"
    if not isinstance(table, dict):
        raise ConfigError(p, "must be a table")
    _reject_unknown(table, {"listen", "databases", "tls_cert_file", "tls_key_file", "require_tls",
                            "connect_timeout", "startup_timeout", "idle_timeout",
                            "max_message_size", "tcp_keepalive", "keepalive_idle",
                            "keepalive_interval", "keepalive_count"}, p)
    host, port = _listen(_take(table, "listen", p, str, "127.0.0.1:6432"), f"{p}.listen")
    dbs = _take(table, "databases", p, dict, required=True)
    if not dbs:
        raise ConfigError(f"{p}.databases", "needs at least one database")
    databases = {name: _upstream(name, t, f"{p}.databases.{name}") for name, t in dbs.items()}
    cert, key, require_tls = _server_tls(table, p)
    out = PostgresListener(
        host=host,
        port=port,
        databases=databases,
        tls_cert_file=cert,
        tls_key_file=key,
        require_tls=require_tls,
        connect_timeout=_take(table, "connect_timeout", p, float, 10.0),
        startup_timeout=_take(table, "startup_timeout", p, float, 30.0),
        idle_timeout=_take(table, "idle_timeout", p, float, 0.0),
        max_message_size=_take(table, "max_message_size", p, int, 256 * 1024 * 1024),
        tcp_keepalive=_take(table, "tcp_keepalive", p, bool, True),
        keepalive_idle=_take(table, "keepalive_idle", p, int, 60),
        keepalive_interval=_take(table, "keepalive_interval", p, int, 10),
        keepalive_count=_take(table, "keepalive_count", p, int, 6),
    )
    _positive(out.connect_timeout, f"{p}.connect_timeout")
    _positive(out.startup_timeout, f"{p}.startup_timeout")
    _positive(out.idle_timeout, f"{p}.idle_timeout", allow_zero=True)
    for k, top in (("keepalive_idle", 32767), ("keepalive_interval", 32767),
                   ("keepalive_count", 127)):
        value = getattr(out, k)
        if not 0 < value <= top:  # Linux's setsockopt refuses anything else at connect time
            raise ConfigError(f"{p}.{k}", f"must be between 1 and {top}, got {value}")
    if out.max_message_size < 1024:
        raise ConfigError(f"{p}.max_message_size", "must be at least 1024 bytes")
    return out


def _server_tls(table: dict[str, Any], p: str) -> tuple[str | None, str | None, bool]:
    """A listener's certificate pair and require_tls, checked as the server will load them."""
    cert = _take(table, "tls_cert_file", p, str)
    key = _take(table, "tls_key_file", p, str)
    if (cert is None) != (key is None):
        raise ConfigError(f"{p}.tls_key_file" if cert else f"{p}.tls_cert_file",
                          "tls_cert_file and tls_key_file go together")
    for k, f in (("tls_cert_file", cert), ("tls_key_file", key)):
        if f and not Path(f).is_file():
            raise ConfigError(f"{p}.{k}", f"file {f} does not exist")
    if cert and key:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{p}.tls_cert_file",
                              f"cannot load the certificate and key: {exc}") from None
    require_tls = _take(table, "require_tls", p, bool, False)
    if require_tls and not cert:
        raise ConfigError(f"{p}.require_tls", "needs tls_cert_file and tls_key_file")
    return cert, key, require_tls


def _mysql(table: Any) -> MySQLListener:
    p = "mysql"
    if not isinstance(table, dict):
        raise ConfigError(p, "must be a table")
    _reject_unknown(table, {"listen", "databases", "default_database", "tls_cert_file",
                            "tls_key_file", "require_tls", "connect_timeout", "startup_timeout",
                            "idle_timeout", "max_packet_size", "server_version",
                            "tcp_keepalive", "keepalive_idle", "keepalive_interval",
                            "keepalive_count"}, p)
    host, port = _listen(_take(table, "listen", p, str, "127.0.0.1:3307"), f"{p}.listen")
    dbs = _take(table, "databases", p, dict, required=True)
    if not dbs:
        raise ConfigError(f"{p}.databases", "needs at least one database")
    databases = {name: _upstream(name, t, f"{p}.databases.{name}", 3306)
                 for name, t in dbs.items()}
    default = _take(table, "default_database", p, str)
    if default is None and len(databases) == 1:
        default = next(iter(databases))
    if default is not None and default not in databases:
        raise ConfigError(f"{p}.default_database", f"database {default!r} is not defined "
                          f"(defined: {', '.join(sorted(databases))})")
    cert, key, require_tls = _server_tls(table, p)
    out = MySQLListener(
        host=host, port=port, databases=databases, default_database=default,
        tls_cert_file=cert, tls_key_file=key, require_tls=require_tls,
        connect_timeout=_take(table, "connect_timeout", p, float, 10.0),
        startup_timeout=_take(table, "startup_timeout", p, float, 30.0),
        idle_timeout=_take(table, "idle_timeout", p, float, 0.0),
        max_packet_size=_take(table, "max_packet_size", p, int, 64 * 1024 * 1024),
        server_version=_take(table, "server_version", p, str, "10.11.0-Wiregate"),
        tcp_keepalive=_take(table, "tcp_keepalive", p, bool, True),
        keepalive_idle=_take(table, "keepalive_idle", p, int, 60),
        keepalive_interval=_take(table, "keepalive_interval", p, int, 10),
        keepalive_count=_take(table, "keepalive_count", p, int, 6),
    )
    _positive(out.connect_timeout, f"{p}.connect_timeout")
    _positive(out.startup_timeout, f"{p}.startup_timeout")
    _positive(out.idle_timeout, f"{p}.idle_timeout", allow_zero=True)
    if not 1024 <= out.max_packet_size <= 1024 ** 3:
        raise ConfigError(f"{p}.max_packet_size", "must be between 1024 and 1073741824 bytes "
                          "(the server's max_allowed_packet range)")
    for k, top in (("keepalive_idle", 32767), ("keepalive_interval", 32767),
                   ("keepalive_count", 127)):
        value = getattr(out, k)
        if not 0 < value <= top:
            raise ConfigError(f"{p}.{k}", f"must be between 1 and {top}, got {value}")
    return out


def _guardrails(table: Any) -> GuardrailsSettings:
    p = "guardrails"
    if not isinstance(table, dict):
        raise ConfigError(p, "must be a table")
    _reject_unknown(table, {"policy_file", "profiles", "default_profile", "catalog_refresh"}, p)
    policy_file = _take(table, "policy_file", p, str)
    if (policy_file is None) == ("profiles" not in table):
        raise ConfigError(f"{p}.policy_file", "give either policy_file or inline "
                          "[guardrails.profiles.NAME] tables")
    try:
        if policy_file is not None:
            try:
                data = tomllib.loads(Path(policy_file).read_text())
            except OSError as exc:
                raise ConfigError(f"{p}.policy_file",
                                  f"cannot read {policy_file}: {exc.strerror}") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{p}.policy_file",
                                  f"{policy_file} is not valid TOML: {exc}") from None
            # A key_file in the policy file is relative to the policy file.
            profiles = parse_profiles(_relative_paths(data, Path(policy_file).parent))
        else:
            profiles = parse_profiles({"profiles": table["profiles"]}, prefix=f"{p}.")
    except PolicyError as exc:
        if policy_file is None:
            raise ConfigError(exc.key, exc.problem) from None
        raise ConfigError(f"{p}.policy_file", f"{policy_file}: {exc}") from None
    default = _take(table, "default_profile", p, str)
    if default is not None and default not in profiles:
        raise ConfigError(f"{p}.default_profile", f"profile {default!r} is not defined "
                          f"(defined: {', '.join(sorted(profiles))})")
    refresh = _take(table, "catalog_refresh", p, float, 300.0)
    _positive(refresh, f"{p}.catalog_refresh")
    keys: dict[str, bytes] = {}
    for name, prof in profiles.items():
        m = prof.masking
        if m is None or not (m.key_env or m.key_file):
            continue
        where = f"profiles.{name}.masking.{'key_env' if m.key_env else 'key_file'}"
        secret = Secret(env=m.key_env, file=m.key_file, key=where.rsplit("_", 1)[0])
        try:
            value = secret.resolve()
        except ConfigError as exc:
            raise ConfigError(where, exc.problem) from None
        if len(value) < 16:
            raise ConfigError(where, "the masking key must be at least 16 characters")
        keys[name] = value.encode()
    return GuardrailsSettings(profiles, default, refresh, policy_file, keys)


def parse_config(data: dict[str, Any], source: str = "") -> Config:
    _reject_unknown(data, {"server", "users", "postgres", "mysql", "guardrails"}, "")
    st = _take(data, "server", "", dict, {})
    _reject_unknown(st, {"workers", "log_format", "log_level", "shutdown_grace", "uvloop"},
                    "server")
    server = ServerSettings(
        workers=_take(st, "workers", "server", int, 1),
        log_format=_take(st, "log_format", "server", str, "plain"),
        log_level=_take(st, "log_level", "server", str, "info"),
        shutdown_grace=_take(st, "shutdown_grace", "server", float, 30.0),
        use_uvloop=_take(st, "uvloop", "server", bool, True),
    )
    if not 1 <= server.workers <= 64:
        raise ConfigError("server.workers", f"must be between 1 and 64, got {server.workers}")
    if server.log_format not in LOG_FORMATS:
        raise ConfigError("server.log_format", f"must be one of {', '.join(LOG_FORMATS)}")
    if server.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("server.log_level", "must be debug, info, warning or error")
    _positive(server.shutdown_grace, "server.shutdown_grace", allow_zero=True)

    users = {name: _user(name, ut) for name, ut in _take(data, "users", "", dict, {}).items()}

    postgres = _postgres(data["postgres"]) if "postgres" in data else None
    mysql = _mysql(data["mysql"]) if "mysql" in data else None
    if postgres is None and mysql is None:
        raise ConfigError("postgres", "no listener configured: add a [postgres] or [mysql] "
                          "table")
    if postgres is not None and mysql is not None and \
            (postgres.host, postgres.port) == (mysql.host, mysql.port):
        raise ConfigError("mysql.listen", "is the same address as postgres.listen")
    guardrails = _guardrails(data["guardrails"]) if "guardrails" in data else None
    routes = [(f"postgres.databases.{n}", up) for n, up in
              (postgres.databases.items() if postgres else ())]
    routes += [(f"mysql.databases.{n}", up) for n, up in (mysql.databases.items() if mysql else ())]
    for where, up in routes:
        key = f"{where}.profile"
        if up.profile is not None and guardrails is None:
            raise ConfigError(key, "needs a [guardrails] table defining the profiles")
        if guardrails is None:
            continue
        if up.profile is not None and up.profile not in guardrails.profiles:
            raise ConfigError(key, f"profile {up.profile!r} is not defined (defined: "
                              f"{', '.join(sorted(guardrails.profiles))})")
        if up.profile is None and guardrails.default_profile is None:
            raise ConfigError(key, "is required: guardrails are on and "
                              "guardrails.default_profile is not set")
    return Config(server=server, users=users, postgres=postgres, guardrails=guardrails,
                  source=source, mysql=mysql)


_USER_KEYS = ("scram_sha_256", "mysql_native_password", "caching_sha2_password",
              "client_ed25519")


def _user(name: str, ut: Any) -> ClientUser:
    """A login and its stored password forms, as ``wiregate passwd`` prints them."""
    prefix = f"users.{name}"
    if not isinstance(ut, dict):
        raise ConfigError(prefix, "must be a table")
    _reject_unknown(ut, set(_USER_KEYS), prefix)
    if not any(k in ut for k in _USER_KEYS):
        raise ConfigError(f"{prefix}.scram_sha_256", "is required (or a MySQL password form: "
                          "mysql_native_password, caching_sha2_password, client_ed25519)")
    verifier = _take(ut, "scram_sha_256", prefix, str)
    if verifier is not None:
        try:
            parse_verifier(verifier)
        except ValueError as exc:
            raise ConfigError(f"{prefix}.scram_sha_256", str(exc)) from exc
    native = _take(ut, "mysql_native_password", prefix, str)
    sha2 = _take(ut, "caching_sha2_password", prefix, str)
    ed = _take(ut, "client_ed25519", prefix, str)
    return ClientUser(
        name=name, scram_verifier=verifier,
        mysql_native_password=_hex_hash(native, 20, f"{prefix}.mysql_native_password", "*"),
        caching_sha2_password=_hex_hash(sha2, 32, f"{prefix}.caching_sha2_password", ""),
        client_ed25519=_ed25519_key(ed, f"{prefix}.client_ed25519"),
    )


def _hex_hash(value: str | None, size: int, key: str, mark: str) -> bytes | None:
    if value is None:
        return None
    text = value[len(mark):] if mark and value.startswith(mark) else value
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != size or (mark and not value.startswith(mark)):
        raise ConfigError(key, f"must be {mark}{'X' * 4}… ({size * 2} hex digits), as "
                          "`wiregate passwd` prints it")
    return raw


def _ed25519_key(value: str | None, key: str) -> bytes | None:
    if value is None:
        return None
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(key, "must be the base64 Ed25519 public key (43 characters), as "
                          "`wiregate passwd` prints it")
    return raw


def load_config(path: str | os.PathLike[str]) -> Config:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    base = p.parent
    cfg = parse_config(_relative_paths(data, base), source=str(p))
    return cfg


def _relative_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make ``*_file`` paths relative to the config file, as users expect of copied examples."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if isinstance(v, str) and k.endswith("_file") and v and not os.path.isabs(v):
                    out[k] = str((base / v).resolve())
                else:
                    out[k] = walk(v)
            return out
        return node

    result: dict[str, Any] = walk(data)
    return result

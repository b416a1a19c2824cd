"""``wiregate`` command line: serve, check-config, explain-policy, catalog-snapshot, passwd,
demo."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from protocols.mysql.auth import ed25519_stored_text, native_stored, sha2_stored
from protocols.postgres.scram import make_verifier
from proxy.config import ConfigError, load_config
from proxy.explain import add_commands as add_explain_commands


def _serve(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"wiregate: configuration error: {exc}", file=sys.stderr)
        return 2
    from proxy.server import serve

    return serve(cfg)


def _check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"{args.config}: error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.config}: ok")
    for kind, lst in (("postgres", cfg.postgres), ("mysql", cfg.mysql)):
        if lst is None:
            continue
        print(f"  {kind} listener {lst.host}:{lst.port} "
              f"tls={'on' if lst.tls_enabled else 'off'} require_tls={lst.require_tls} "
              f"workers={cfg.server.workers}")
        for name, up in lst.databases.items():
            where = up.host if kind == "mysql" and up.is_unix else \
                up.unix_path if up.is_unix else f"{up.host}:{up.port}"
            profile = f", profile {cfg.guardrails.profile_for(up)}" if cfg.guardrails else ""
            print(f"  {kind} database {name} -> {where}/{up.dbname} as {up.user} "
                  f"(tls={up.tls}{profile})")
    print(f"  users: {', '.join(sorted(cfg.users)) or '(none: no client can log in)'}")
    if cfg.guardrails is None:
        print("  guardrails: off (every statement is forwarded)")
    for prof in (cfg.guardrails.profiles.values() if cfg.guardrails else ()):
        extra = " read-only" if prof.read_only else ""
        if prof.statement_timeout_ms:
            extra += f" statement_timeout={prof.statement_timeout_ms}ms"
        rules = ", ".join(f"{r.id} ({r.kind})" for r in prof.rules)
        print(f"  profile {prof.name}{extra}: {rules or 'no rules'}")
    return 0


def _passwd(args: argparse.Namespace) -> int:
    if args.stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("wiregate: passwords do not match", file=sys.stderr)
            return 1
    if not password:
        print("wiregate: empty password refused", file=sys.stderr)
        return 1
    verifier = make_verifier(password, iterations=args.iterations)
    if args.user:
        pw = password.encode()
        print(f"[users.{args.user}]\nscram_sha_256 = \"{verifier}\"\n"
              f"mysql_native_password = \"*{native_stored(pw).hex().upper()}\"\n"
              f"caching_sha2_password = \"{sha2_stored(pw).hex()}\"\n"
              f"client_ed25519 = \"{ed25519_stored_text(pw)}\"")
    else:
        print(verifier)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from proxy.demo import run_demo

    return run_demo(listen=args.listen, workdir=Path(args.workdir))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="wiregate", description=(
        "Enforcing wire-protocol gateway between agents, people and databases."))
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the proxy")
    s.add_argument("--config", "-c", required=True, help="TOML configuration file")
    s.set_defaults(func=_serve)
    c = sub.add_parser("check-config", help="validate a configuration file")
    c.add_argument("config")
    c.set_defaults(func=_check)
    add_explain_commands(sub)
    pw = sub.add_parser("passwd", help="print a client login's stored password forms "
                                            "(SCRAM-SHA-256; with --user also MySQL's)")
    pw.add_argument("--user", help="print a ready [users.NAME] table")
    pw.add_argument("--stdin", action="store_true", help="read the password from stdin")
    pw.add_argument("--iterations", type=int, default=4096)
    pw.set_defaults(func=_passwd)
    d = sub.add_parser("demo", help="embedded PostgreSQL with sample PII behind Wiregate")
    d.add_argument("--listen", default="127.0.0.1:6432")
    d.add_argument("--workdir", default=".wiregate-demo")
    d.set_defaults(func=_demo)
    args = p.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

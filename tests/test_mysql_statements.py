"""MySQL/MariaDB statement analysis on sqlglot's tree: what each statement reads, writes, calls
and changes, with executable comments read the way the server reads them."""

from __future__ import annotations

import pytest

from policies.facts import Call, Facts, Name, Setting, Unparseable, Write
from policies.mysql_statements import analyze, expand_executable_comments

MYSQL8 = {"server": "mysql", "version": (8, 0, 36)}
MYSQL56 = {"server": "mysql", "version": (5, 6, 0)}


def one(sql: str, **target: object) -> Facts:
    facts = analyze(sql, **target)  # type: ignore[arg-type]
    assert len(facts) == 1, facts
    return facts[0]


def t(name: str, schema: str | None = None) -> Name:
    return Name(schema, name)


# --- executable comments -------------------------------------------------------------------

@pytest.mark.parametrize(("sql", "target", "kinds"), [
    ("/*!DROP TABLE t*/", {}, ["Drop"]),
    ("/*!DROP TABLE t*/", MYSQL8, ["Drop"]),
    ("/*!50700 DROP TABLE t */", {}, []),        # MariaDB: a MySQL 5.7+ version, ignored
    ("/*!50600 DROP TABLE t */", {}, ["Drop"]),
    ("/*!50700 DROP TABLE t */", MYSQL8, ["Drop"]),
    ("/*!50700 DROP TABLE t */", MYSQL56, []),
    ("/*!99999 DROP TABLE t */", MYSQL8, []),
    ("/*M!DROP TABLE t*/", {}, ["Drop"]),
    ("/*M!DROP TABLE t*/", MYSQL8, []),
    ("/*M!100500 DROP TABLE t*/", {}, ["Drop"]),
    ("/*M!100500 DROP TABLE t*/", {"version": (10, 4, 0)}, []),
    ("SELECT 1 /*! ; DROP TABLE t */", {}, ["Select", "Drop"]),
    ("SELECT 1 /* ; DROP TABLE t */", {}, ["Select"]),
    ("SELECT 1 -- ; DROP TABLE t", {}, ["Select"]),
    ("SELECT 1 # ; DROP TABLE t", {}, ["Select"]),
    ("SELECT 1 /*+ hint */; /*!40101 SET NAMES utf8 */", {}, ["Select", "Set"]),
    ("/*!40101 SET @saved = @@character_set_client */", {}, ["Set"]),
])
def test_executable_comments_run_as_the_server_runs_them(
        sql: str, target: dict[str, object], kinds: list[str]) -> None:
    assert [f.kind for f in analyze(sql, **target)] == kinds  # type: ignore[arg-type]


def test_executable_comment_markers_inside_strings_are_data() -> None:
    for sql in ["SELECT '/*! DROP TABLE t */'", 'SELECT "a\\"/*!DROP TABLE t*/"',
                "SELECT 'it''s /*!DROP TABLE t*/'", "SELECT `a/*!b` FROM x"]:
        f = one(sql)
        assert f.category == "read" and f.kind == "Select", sql
        assert "DROP TABLE t" in f.text or "`a/*!b`" in f.text


def test_expansion_keeps_strings_and_drops_comments() -> None:
    assert expand_executable_comments("SELECT '--' /* c */ , 1 -- x\n").split() == [
        "SELECT", "'--'", ",", "1"]
    assert expand_executable_comments("SELECT 1--1").strip() == "SELECT 1--1"  # minus minus
    assert expand_executable_comments("/*M!1 */", server="mysql").strip() == ""


@pytest.mark.parametrize("sql", [
    "SELECT 'unterminated", "SELECT 1 /* open", "/*! SELECT 1", "/*! /* x */ SELECT 1 */",
    "SELECT 1 /*!100500 , 2*/",
])
def test_ambiguous_comment_text_is_unparseable(sql: str) -> None:
    with pytest.raises(Unparseable):
        analyze(sql, **MYSQL8)  # type: ignore[arg-type]


# --- statements and their text ------------------------------------------------------------

def test_multi_statement_string_is_split_with_each_text() -> None:
    facts = analyze("SELECT 1; DELETE FROM t WHERE id = 2 ;  UPDATE s.u SET a = 1;")
    assert [f.kind for f in facts] == ["Select", "Delete", "Update"]
    assert [f.text for f in facts] == ["SELECT 1", "DELETE FROM t WHERE id = 2",
                                       "UPDATE s.u SET a = 1"]
    assert facts[2].writes == (Write(t("u", "s"), "update", "no WHERE clause"),)


def test_compound_blocks_keep_their_inner_semicolons() -> None:
    facts = analyze("lbl: BEGIN NOT ATOMIC DELETE FROM t; END lbl; SELECT 1")
    assert [(f.kind, f.category) for f in facts] == [("Block", "code"), ("Select", "read")]
    facts = analyze("IF 1 THEN DELETE FROM t; END IF; SELECT CASE WHEN a THEN 1 END FROM t;"
                    " DROP TABLE t")
    assert [f.category for f in facts] == ["code", "read", "ddl"]


@pytest.mark.parametrize("sql", [
    "SELECT 'DROP TABLE t' FROM x WHERE y = 'WHERE'",
    "select * from x where note = 'DELETE FROM t'",
    "SELECT `drop table t` FROM x",
    "SELECT * FROM x WHERE a = 'it\\'s; DROP TABLE t'",
])
def test_strings_that_look_like_statements_stay_reads(sql: str) -> None:
    f = one(sql)
    assert f.category == "read" and f.writes == () and f.objects == ()
    assert f.reads == {t("x")}


# --- reads -----------------------------------------------------------------------------------

def test_reads_keep_the_case_and_unquote_backticks() -> None:
    f = one("SELECT * FROM `Sales`.`Orders` o JOIN customers c ON o.c = c.id "
            "WHERE o.x IN (SELECT x FROM db2.Other)")
    assert f.reads == {t("Orders", "Sales"), t("customers"), t("Other", "db2")}


@pytest.mark.parametrize(("sql", "reads", "ctes"), [
    ("WITH c AS (SELECT * FROM t) SELECT * FROM c", {t("t")}, {"c"}),
    ("with recursive r as (select 1 union all select * from r) select * from r", set(), {"r"}),
    ("SELECT * FROM a UNION SELECT * FROM b", {t("a"), t("b")}, set()),
    ("SELECT * FROM t FOR UPDATE", {t("t")}, set()),
    ("TABLE t", {t("t")}, set()),
])
def test_ctes_unions_and_locking_reads(sql: str, reads: set[Name], ctes: set[str]) -> None:
    f = one(sql)
    assert (f.category, f.reads, f.ctes) == ("read", reads, ctes)


def test_calls_have_lower_case_names_and_literal_args() -> None:
    f = one("SELECT SLEEP(1), db.MyFn('a', x, NULL), IFNULL(a, 'b') FROM t")
    assert Call(t("sleep"), ("1",), builtin=True) in f.calls   # unqualified: the server's own
    assert Call(t("myfn", "db"), ("a", None, None)) in f.calls  # qualified: a stored function
    assert any(c.name.name in ("ifnull", "coalesce") for c in f.calls)
    assert not any(c.name.name in ("and", "or", "exists", "case") for c in one(
        "SELECT CASE WHEN a AND b OR EXISTS (SELECT 1) THEN 1 END").calls)


# --- writes and how many rows they touch ----------------------------------------------------

@pytest.mark.parametrize(("sql", "reason"), [
    ("DELETE FROM t", "no WHERE clause"),
    ("delete from t limit 10", "no WHERE clause"),
    ("UPDATE t SET a = 1 ORDER BY id LIMIT 5", "no WHERE clause"),
    ("DELETE FROM t WHERE 1=1", "true for every row"),
    ("DELETE FROM t WHERE true", "true for every row"),
    ("DELETE FROM t WHERE NOT false", "true for every row"),
    ("DELETE FROM t WHERE 'a'='a'", "true for every row"),
    ("DELETE FROM t WHERE id = id", "true for every row"),
    ("DELETE FROM t WHERE id <=> id", "true for every row"),
    ("DELETE FROM t WHERE x = 1 OR 1=1", "true for every row"),
    ("DELETE FROM t WHERE (SELECT 1)", "true for every row"),
    ("DELETE FROM t WHERE CAST(1 AS SIGNED)", "true for every row"),
    ("UPDATE t SET a = 1 WHERE 1", "true for every row"),
    ("DELETE FROM t WHERE ?", "does not depend on the row"),
    ("DELETE FROM t WHERE @v", "does not depend on the row"),
    ("DELETE FROM t WHERE (SELECT COUNT(*) FROM other) > 0", "does not depend on the row"),
    ("DELETE FROM t WHERE id = 5 OR ?", "does not depend on the row"),
    ("DELETE FROM t WHERE EXISTS (SELECT 1 FROM o WHERE o.flag = 1)",
     "does not depend on the row"),
    ("DELETE FROM t WHERE id = 5", None),
    ("DELETE FROM t WHERE id = ?", None),
    ("DELETE FROM t WHERE a > 3 AND true", None),
    ("DELETE FROM t WHERE 1 = 0", None),
    ("DELETE FROM t WHERE NOT (id = id)", None),
    ("DELETE FROM t WHERE id IN (SELECT id FROM other)", None),
    ("DELETE FROM t AS x WHERE EXISTS (SELECT 1 FROM o WHERE o.id = x.id)", None),
    ("UPDATE `db`.`T` SET a = 1 WHERE b = 2 LIMIT 1", None),
])
def test_unbounded_update_and_delete(sql: str, reason: str | None) -> None:
    f = one(sql)
    assert f.category == "write" and len(f.writes) == 1
    unbounded = f.writes[0].unbounded
    if reason is None:
        assert unbounded is None, unbounded
    else:
        assert unbounded is not None and reason in unbounded, unbounded
    assert f.literal_sensitive == ("WHERE" in sql.upper())


@pytest.mark.parametrize(("sql", "writes", "reads"), [
    ("DELETE t1, t2 FROM t1 JOIN t2 ON t1.a = t2.a WHERE t1.x = 1",
     [("t1", "delete"), ("t2", "delete")], set()),
    ("DELETE FROM t1 USING t1 JOIN t2 ON t1.a = t2.a WHERE t1.x = 1", [("t1", "delete")],
     {t("t2")}),
    ("DELETE a FROM t1 AS a JOIN t2 b ON a.id = b.id WHERE b.z = 1", [("t1", "delete")],
     {t("t2")}),
    ("UPDATE t1 JOIN t2 ON t1.a = t2.a SET t1.x = 1, t2.y = 2 WHERE t1.k = 3",
     [("t1", "update"), ("t2", "update")], set()),
    ("UPDATE t1 JOIN t2 ON t1.a = t2.a SET t1.x = 1 WHERE t2.y = 3", [("t1", "update")],
     {t("t2")}),
])
def test_multi_table_writes_have_one_write_per_target(
        sql: str, writes: list[tuple[str, str]], reads: set[Name]) -> None:
    f = one(sql)
    assert [(w.target.name, w.op, w.unbounded) for w in f.writes] == [
        (name, op, None) for name, op in writes]
    assert f.reads == reads


def test_join_without_a_link_to_the_target_is_unbounded() -> None:
    f = one("DELETE t1 FROM t1 JOIN t2 ON 1=1 WHERE t2.flag = 1")
    assert f.writes[0].unbounded and "does not depend" in f.writes[0].unbounded


@pytest.mark.parametrize(("sql", "category", "op", "target", "reads"), [
    ("INSERT INTO t VALUES (1)", "write", "insert", t("t"), set()),
    ("insert ignore into db.t (a) select b from s", "write", "insert", t("t", "db"), {t("s")}),
    ("INSERT INTO t SET a = 1 ON DUPLICATE KEY UPDATE a = 2", "write", "upsert", t("t"), set()),
    ("REPLACE INTO t VALUES (1)", "write", "replace", t("t"), set()),
    ("REPLACE t SELECT * FROM s", "write", "replace", t("t"), {t("s")}),
    ("INSERT INTO t SELECT * FROM t", "write", "insert", t("t"), {t("t")}),
    ("TRUNCATE TABLE t", "ddl", "truncate", t("t"), set()),
    ("truncate `Logs`", "ddl", "truncate", t("Logs"), set()),
    ("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t", "write", "load", t("t"), set()),
    ("LOAD DATA INFILE '/x' REPLACE INTO TABLE db.t FIELDS TERMINATED BY ','", "write", "load",
     t("t", "db"), set()),
    ("LOAD XML INFILE '/x.xml' INTO TABLE t", "write", "load", t("t"), set()),
])
def test_writes_of_every_kind(sql: str, category: str, op: str, target: Name,
                              reads: set[Name]) -> None:
    f = one(sql)
    assert (f.category, f.writes, f.reads) == (category, (Write(target, op),), reads)  # type: ignore[arg-type]


# --- DDL, create, code, privilege ------------------------------------------------------------

@pytest.mark.parametrize(("sql", "objects"), [
    ("DROP TABLE t", [("table", t("t"))]),
    ("drop table if exists a, `B`", [("table", t("a")), ("table", t("B"))]),
    ("DROP VIEW v", [("view", t("v"))]),
    ("DROP DATABASE d", [("database", t("d"))]),
    ("DROP SCHEMA d", [("database", t("d"))]),
    ("DROP INDEX i ON t", [("index", t("i")), ("table", t("t"))]),
    ("DROP FUNCTION f", [("function", t("f"))]),
    ("DROP PROCEDURE db.p", [("procedure", t("p", "db"))]),
    ("DROP TRIGGER tr", [("trigger", t("tr"))]),
    ("DROP EVENT e", [("event", t("e"))]),
    ("ALTER TABLE t ADD COLUMN c INT", [("table", t("t"))]),
    ("ALTER ONLINE TABLE t ADD c INT", [("table", t("t"))]),
    ("ALTER VIEW v AS SELECT 1", [("view", t("v"))]),
    ("ALTER DATABASE d CHARACTER SET utf8", [("database", t("d"))]),
    ("ALTER EVENT e DISABLE", [("event", t("e"))]),
    ("RENAME TABLE a TO b", [("table", t("a")), ("table", t("b"))]),
])
def test_ddl(sql: str, objects: list[tuple[str, Name]]) -> None:
    f = one(sql)
    assert f.category == "ddl" and list(f.objects) == objects


@pytest.mark.parametrize(("sql", "create_kind", "or_replace", "reads"), [
    ("CREATE TABLE t (a INT)", "table", False, set()),
    ("CREATE OR REPLACE TABLE t (a INT)", "table", True, set()),
    ("CREATE TABLE t SELECT * FROM s", "table", False, {t("s")}),
    ("CREATE TABLE t AS SELECT * FROM s JOIN u ON s.a = u.a", "table", False, {t("s"), t("u")}),
    ("CREATE INDEX i ON t (a)", "index", False, set()),
    ("CREATE OR REPLACE VIEW v AS SELECT * FROM s", "view", True, {t("s")}),
    ("CREATE DATABASE d", "database", False, set()),
])
def test_create(sql: str, create_kind: str, or_replace: bool, reads: set[Name]) -> None:
    f = one(sql)
    assert (f.category, f.create_kind, f.or_replace, f.reads) == (
        "create", create_kind, or_replace, reads)


@pytest.mark.parametrize(("sql", "code"), [
    ("CREATE FUNCTION f() RETURNS INT RETURN 1", "CREATE FUNCTION f"),
    ("CREATE OR REPLACE DEFINER=`root`@`%` PROCEDURE p() BEGIN DELETE FROM t; END",
     "CREATE PROCEDURE p"),
    ("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 1; END",
     "CREATE TRIGGER tr"),
    ("CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t", "CREATE EVENT e"),
    ("BEGIN NOT ATOMIC SELECT 1; END", "BEGIN NOT ATOMIC"),
    ("INSTALL SONAME 'ha_x'", "INSTALL SONAME"),
    ("EXECUTE IMMEDIATE 'SELECT 1'", "EXECUTE IMMEDIATE"),
])
def test_code(sql: str, code: str) -> None:
    f = one(sql)
    assert f.category == "code" and any(code in c for c in f.code), f.code
    assert f.writes == ()  # a body is stored or run later, not analyzed as this statement


@pytest.mark.parametrize(("sql", "kind"), [
    ("GRANT SELECT ON db.* TO u", "Grant"),
    ("REVOKE ALL ON *.* FROM 'u'@'%'", "Revoke"),
    ("CREATE USER u IDENTIFIED BY 'x'", "CreateUser"),
    ("ALTER USER u IDENTIFIED BY 'x'", "AlterUser"),
    ("DROP USER 'u'@'%'", "DropUser"),
    ("CREATE ROLE r", "CreateRole"),
    ("DROP ROLE r", "DropRole"),
    ("RENAME USER a TO b", "RenameUser"),
    ("SET PASSWORD = 'x'", "SetPassword"),
    ("SET PASSWORD FOR u = PASSWORD('x')", "SetPassword"),
    ("SET ROLE r", "SetRole"),
    ("SET DEFAULT ROLE r FOR u", "SetRole"),
])
def test_privilege(sql: str, kind: str) -> None:
    f = one(sql)
    assert (f.kind, f.category, f.privilege) == (kind, "privilege", (sql,))


# --- file and program access ----------------------------------------------------------------

@pytest.mark.parametrize(("sql", "access"), [
    ("SELECT * FROM t INTO OUTFILE '/tmp/x'", "SELECT INTO OUTFILE '/tmp/x'"),
    ("SELECT * INTO OUTFILE '/tmp/x' FIELDS TERMINATED BY ',' FROM t",
     "SELECT INTO OUTFILE '/tmp/x'"),
    ("select a from t into dumpfile '/tmp/y'", "SELECT INTO DUMPFILE '/tmp/y'"),
    ("SELECT LOAD_FILE('/etc/passwd')", "LOAD_FILE('/etc/passwd')"),
    ("SELECT load_file(CONCAT('/etc/', x)) FROM t", "LOAD_FILE(<expression>)"),
    ("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t", "LOAD DATA INFILE '/tmp/x'"),
    ("LOAD XML INFILE '/x.xml' INTO TABLE t", "LOAD XML INFILE '/x.xml'"),
    ("SET GLOBAL general_log_file = '/var/www/shell.php'", "SET GLOBAL general_log_file"),
    ("SET @@global.slow_query_log = 1", "SET GLOBAL slow_query_log"),
    ("INSTALL PLUGIN p SONAME 'x.so'", "INSTALL PLUGIN p SONAME 'x.so'"),
])
def test_file_access(sql: str, access: str) -> None:
    assert any(access in a for a in one(sql).file_access), one(sql).file_access


def test_select_into_variables_is_no_file_access() -> None:
    f = one("SELECT a, b INTO @v, @w FROM t")
    assert (f.category, f.file_access, f.reads) == ("read", (), {t("t")})
    assert [s.name for s in f.settings] == ["@v", "@w"]


@pytest.mark.parametrize("sql", [
    "SET GLOBAL max_connections = 10", "SET @@GLOBAL.general_log = 1",
    "SET PERSIST max_connections = 10", "SET GLOBAL a = 1, b = 2",
])
def test_global_settings_are_admin(sql: str) -> None:
    f = one(sql)
    assert f.category == "admin" and f.settings


# --- dynamic SQL and calls -----------------------------------------------------------------

def test_prepare_of_a_literal_is_the_inner_statement() -> None:
    f = one("PREPARE s FROM 'DELETE FROM t WHERE id = ?'")
    assert (f.kind, f.category) == ("Prepare", "write")
    assert f.writes == (Write(t("t"), "delete"),)
    f = one("PREPARE s FROM 'DELETE ' 'FROM t'")  # adjacent literals concatenate
    assert f.writes == (Write(t("t"), "delete", "no WHERE clause"),)
    assert one("PREPARE s FROM '/*!DROP TABLE t*/'").objects == (("table", t("t")),)


@pytest.mark.parametrize("sql", [
    "PREPARE s FROM @q", "PREPARE s FROM CONCAT('DELETE', ' FROM t')",
    "PREPARE s FROM _utf8'DELETE FROM t'",
])
def test_prepare_of_runtime_text_is_refused(sql: str) -> None:
    f = one(sql)
    assert f.refusals == (("code", "prepared statement text built at run time"),)
    assert f.category != "read"


def test_execute_immediate_merges_a_literal_and_refuses_runtime_text() -> None:
    f = one("EXECUTE IMMEDIATE 'SELECT LOAD_FILE(\\'/etc/passwd\\')'")
    assert f.category == "code" and f.file_access == ("LOAD_FILE('/etc/passwd')",)
    f = one("EXECUTE IMMEDIATE 'DELETE FROM t'")
    assert f.writes == (Write(t("t"), "delete", "no WHERE clause"),) and f.refusals == ()
    for sql in ["EXECUTE IMMEDIATE @q", "EXECUTE IMMEDIATE CONCAT('DROP ', 'TABLE t')",
                "EXECUTE IMMEDIATE FROM_BASE64('RFJPUA==')", "EXECUTE IMMEDIATE UNHEX('41')"]:
        assert one(sql).refusals == (("code", "statement text built at run time"),), sql


@pytest.mark.parametrize(("sql", "kind"), [
    ("EXECUTE s USING @a", "Execute"), ("EXECUTE s", "Execute"),
    ("DEALLOCATE PREPARE s", "Deallocate"), ("DROP PREPARE s", "Deallocate"),
])
def test_prepared_statement_bookkeeping_is_session(sql: str, kind: str) -> None:
    assert (one(sql).kind, one(sql).category) == (kind, "session")


def test_call_is_a_procedure_call() -> None:
    f = one("CALL db.Refresh(1, 'a', @x)")
    assert f.category == "read"
    assert f.calls[0] == Call(t("refresh", "db"), ("1", "a", None), procedure=True)
    assert one("call p").calls == (Call(t("p"), (), procedure=True),)


# --- session, transaction, explain ---------------------------------------------------------

@pytest.mark.parametrize(("sql", "category", "settings", "read_write"), [
    ("SET SESSION sql_mode = ''", "session", [Setting("sql_mode", "")], False),
    ("SET NAMES utf8mb4", "session", [Setting("names", "utf8mb4")], False),
    ("set autocommit = 0", "session", [Setting("autocommit", "0")], False),
    ("SET @a = 1", "session", [Setting("@a", "1")], False),
    ("USE `My Db`", "session", [Setting("database", "My Db")], False),
    ("SET SESSION TRANSACTION READ WRITE", "session",
     [Setting("transaction_read_only", "0")], True),
    ("SET transaction_read_only = 0", "session", [Setting("transaction_read_only", "0")], True),
    ("SET tx_read_only = OFF", "session", [Setting("tx_read_only", "OFF")], True),
    ("SET @@session.transaction_read_only = 1", "session",
     [Setting("transaction_read_only", "1")], False),
])
def test_session_settings(sql: str, category: str, settings: list[Setting],
                          read_write: bool) -> None:
    f = one(sql)
    assert (f.category, list(f.settings), f.read_write) == (category, settings, read_write)


@pytest.mark.parametrize(("sql", "read_write"), [
    ("BEGIN", False), ("begin work", False), ("START TRANSACTION", False),
    ("START TRANSACTION READ WRITE", True),
    ("START TRANSACTION READ WRITE, WITH CONSISTENT SNAPSHOT", True),
    ("START TRANSACTION READ ONLY", False), ("COMMIT", False), ("ROLLBACK", False),
    ("ROLLBACK TO SAVEPOINT s", False), ("SAVEPOINT s", False),
    ("RELEASE SAVEPOINT s", False), ("XA START 'x'", False),
])
def test_transactions(sql: str, read_write: bool) -> None:
    f = one(sql)
    assert (f.category, f.read_write) == ("transaction", read_write)


@pytest.mark.parametrize(("sql", "category", "writes"), [
    ("EXPLAIN SELECT * FROM t", "read", ()),
    ("EXPLAIN DELETE FROM t", "read", ()),
    ("DESCRIBE t", "read", ()),
    ("SHOW TABLES", "read", ()),
    ("SHOW CREATE USER u", "read", ()),
    ("EXPLAIN ANALYZE DELETE FROM t WHERE id = 3", "write", (Write(t("t"), "delete"),)),
    ("ANALYZE DELETE FROM t WHERE id = 3", "write", (Write(t("t"), "delete"),)),
    ("ANALYZE FORMAT=JSON UPDATE t SET a = 1", "write",
     (Write(t("t"), "update", "no WHERE clause"),)),
])
def test_explain_runs_only_when_it_analyzes(sql: str, category: str,
                                             writes: tuple[Write, ...]) -> None:
    f = one(sql)
    assert (f.category, f.writes) == (category, writes)


def test_set_statement_for_is_the_inner_statement_with_local_settings() -> None:
    f = one("SET STATEMENT max_statement_time = 1 FOR DELETE FROM t WHERE id = 1")
    assert f.category == "write" and f.writes == (Write(t("t"), "delete"),)
    assert f.settings == (Setting("max_statement_time", "1", local=True),)


@pytest.mark.parametrize(("sql", "category"), [
    ("FLUSH PRIVILEGES", "admin"), ("KILL 5", "admin"), ("SHUTDOWN", "admin"),
    ("OPTIMIZE TABLE t", "admin"), ("ANALYZE TABLE t", "admin"),
    ("LOCK TABLES t WRITE", "admin"), ("UNLOCK TABLES", "session"),
    ("DO SLEEP(1)", "read"), ("VALUES (1)", "unknown"),
])
def test_other_statements(sql: str, category: str) -> None:
    assert one(sql).category == category


# --- fail closed ---------------------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "SELECT * FROM", "DELETE FROM t WHERE", "HANDLER t OPEN",
    "PREPARE s FROM 'SELECT 1; DROP TABLE t'", "LOAD DATA INFILE @f INTO TABLE t",
    "EXECUTE IMMEDIATE 'SELEC 1'",
])
def test_unparseable(sql: str) -> None:
    with pytest.raises(Unparseable):
        analyze(sql)


def test_empty_text_has_no_statements() -> None:
    assert analyze("") == [] and analyze(" ; /* nothing */ ;") == []


def test_ddl_with_a_query_sqlglot_cannot_read_is_refused() -> None:
    """sqlglot falls back to an opaque Command for CREATE TABLE t (…) WITH … SELECT: read by
    its words alone it would be a CREATE that reads nothing, so it is refused."""
    with pytest.raises(Unparseable):
        analyze("CREATE TABLE c2 (note TEXT) WITH d(k) AS (SELECT email FROM customers) "
                "SELECT k FROM d")


@pytest.mark.parametrize(("version", "runs"), [
    ("50100", True), ("50699", True), ("50700", False), ("80000", False), ("99999", False),
    ("100000", True), ("101100", True), ("101200", False),
])
def test_mariadb_reads_versioned_comments_as_mariadb_10_11_does(version: str, runs: bool
                                                                 ) -> None:
    """As measured on MariaDB 10.11: versions 50700-99999 are MySQL's and ignored."""
    text = expand_executable_comments(f"SELECT 1 /*!{version} + 1 */", server="mariadb",
                                      version=(10, 11, 0))
    assert ("+ 1" in text) is runs


@pytest.mark.parametrize("sql", [
    "SET sql_mode = 'ANSI_QUOTES'", "SET SESSION sql_mode = 'STRICT_ALL_TABLES,ANSI'",
    "SET @@sql_mode = 4", "SET sql_mode = @saved", "SET sql_mode = DEFAULT",
    "SET sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')",
    "SET STATEMENT sql_mode = 'NO_BACKSLASH_ESCAPES' FOR SELECT 1",
    "SET sql_mode = 'POSTGRESQL'", "SET sql_mode = 'STRICT_ALL_TABLES,oracle'",
])
def test_sql_modes_that_change_how_text_is_read_are_refused(sql: str) -> None:
    with pytest.raises(Unparseable, match="sql_mode"):
        analyze(sql)


def test_sql_modes_that_keep_reading_as_is_pass_and_protections_stay_on() -> None:
    assert one("SET sql_mode = CONCAT(@@sql_mode, ',STRICT_TRANS_TABLES')").category == \
        "session"
    assert one("SET sql_mode = 'STRICT_ALL_TABLES'").category == "session"
    assert one("SET sql_log_bin = 0").privilege
    assert one("SET SESSION foreign_key_checks = OFF").privilege
    assert not one("SET foreign_key_checks = 1").privilege
    assert one("SET STATEMENT foreign_key_checks = 0 FOR DELETE FROM t WHERE id = 1").privilege

"""Statement analysis on pglast's tree: what each statement reads, writes and calls."""

from __future__ import annotations

import pytest

from policies.statements import Relation, Unparseable, analyze


def test_multi_statement_string_is_split_with_each_text() -> None:
    facts = analyze("SELECT 1; DELETE FROM t WHERE id = 2 ;  UPDATE s.u SET a = 1")
    assert [f.kind for f in facts] == ["SelectStmt", "DeleteStmt", "UpdateStmt"]
    assert [f.text for f in facts] == ["SELECT 1", "DELETE FROM t WHERE id = 2",
                                       "UPDATE s.u SET a = 1"]
    assert facts[1].writes == {Relation(None, "t")}
    assert facts[2].writes == {Relation("s", "u")}


def test_comments_case_and_quoting_do_not_change_the_facts() -> None:
    variants = [
        "delete from accounts where id = 1",
        "DELETE /* harmless */ FROM ACCOUNTS WHERE id = 1",
        'DeLeTe FROM "accounts" -- trailing\n WHERE id = 1',
        'DELETE FROM U&"\\0061ccounts" WHERE id = 1',
    ]
    for sql in variants:
        (f,) = analyze(sql)
        assert f.writes == {Relation(None, "accounts")}, sql


def test_quoted_identifiers_keep_their_case() -> None:
    (f,) = analyze('SELECT * FROM "Mixed"."Case" JOIN plain p ON true')
    assert f.reads == {Relation("Mixed", "Case"), Relation(None, "plain")}


def test_writable_cte_is_a_write_inside_a_select() -> None:
    (f,) = analyze("WITH gone AS (DELETE FROM audit_log RETURNING *) SELECT count(*) FROM gone")
    assert f.kind == "SelectStmt"
    assert f.writes == {Relation(None, "audit_log")}
    assert "DeleteStmt" in f.nested_kinds
    assert Relation(None, "gone") not in f.reads  # the CTE, not a table


def test_update_from_and_delete_using_read_other_tables() -> None:
    (f,) = analyze("UPDATE a SET x = b.x FROM b WHERE a.id = b.id")
    assert f.writes == {Relation(None, "a")} and Relation(None, "b") in f.reads
    (g,) = analyze("DELETE FROM a USING b WHERE a.id = b.id")
    assert g.writes == {Relation(None, "a")} and Relation(None, "b") in g.reads


def test_copy_from_writes_copy_to_reads() -> None:
    (f,) = analyze("COPY t FROM STDIN")
    assert f.writes == {Relation(None, "t")}
    (g,) = analyze("COPY t TO STDOUT")
    assert not g.writes and Relation(None, "t") in g.reads


def test_functions_are_collected_as_written() -> None:
    (f,) = analyze("SELECT pg_catalog.pg_read_file('/etc/passwd'), lower(name) FROM t")
    assert f.functions == {"pg_catalog.pg_read_file", "lower"}


def test_merge_and_insert_on_conflict_are_writes() -> None:
    (f,) = analyze("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE")
    assert f.writes == {Relation(None, "t")}
    (g,) = analyze("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET v = 2")
    assert g.writes == {Relation(None, "t")}


def test_explain_analyze_of_a_write_is_a_write() -> None:
    (f,) = analyze("EXPLAIN ANALYZE DELETE FROM t")
    assert f.kind == "ExplainStmt" and f.writes == {Relation(None, "t")}


@pytest.mark.parametrize("sql", ["SELEC 1", "DELETE FROM", "SELECT 'unterminated",
                                 "SELECT 1; DROP TABLE"])
def test_unparseable_strings_raise(sql: str) -> None:
    with pytest.raises(Unparseable):
        analyze(sql)


def test_dollar_quoted_text_is_not_a_statement() -> None:
    facts = analyze("SELECT $q$; DROP TABLE users; $q$ AS harmless")
    assert [f.kind for f in facts] == ["SelectStmt"]
    assert not facts[0].writes


def test_sql_prepare_and_cursor_expose_the_inner_statement() -> None:
    (p,) = analyze("PREPARE wipe AS DELETE FROM accounts")
    assert p.kind == "PrepareStmt" and p.writes == {Relation(None, "accounts")}
    (d,) = analyze("DECLARE c CURSOR FOR SELECT * FROM secrets.vault")
    assert d.kind == "DeclareCursorStmt" and Relation("secrets", "vault") in d.reads


def test_ddl_kinds_are_named() -> None:
    kinds = [f.kind for f in analyze(
        "DROP TABLE t; TRUNCATE t; ALTER TABLE t ADD c int; DO $$ BEGIN END $$; "
        "GRANT SELECT ON t TO x; ALTER SYSTEM SET work_mem = '1MB'")]
    assert kinds == ["DropStmt", "TruncateStmt", "AlterTableStmt", "DoStmt", "GrantStmt",
                     "AlterSystemStmt"]


def test_truncate_writes_every_table_it_names() -> None:
    (f,) = analyze("TRUNCATE a, s.b")
    assert f.writes == {Relation(None, "a"), Relation("s", "b")} and not f.reads

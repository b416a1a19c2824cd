"""One statement's result transform: masked positions from lineage, untouched rows for
statements that read nothing masked, and the whole result masked when its shape surprises."""

from __future__ import annotations

import tomllib

from policies.decision import Column
from policies.facts import Name
from policies.guardrails import parse_profiles
from policies.lineage import Source, lineage, table_columns
from policies.masking import MaskTransform

MASKING = parse_profiles(tomllib.loads("""
[profiles.agent.masking]
default_strategy = "redact"
[[profiles.agent.masking.column]]
columns = ["public.customers.email"]
strategy = "email"
[[profiles.agent.masking.column]]
columns = ["public.customers.card"]
strategy = "partial"
keep_last = 4
"""))["agent"].masking
assert MASKING is not None


def resolve(name: Name) -> list[tuple[str, frozenset[Source]]] | None:
    if name.name == "customers":
        return table_columns(Name("public", "customers"), ["id", "email", "card"])
    return None


def transform(sql: str) -> MaskTransform | None:
    assert MASKING is not None
    return MaskTransform.for_outputs(lineage(sql, resolve), MASKING, b"key")


def cols(n: int) -> list[Column]:
    return [Column(i, f"c{i}", 0, 0, 25, -1, -1, 0) for i in range(n)]


def apply(t: MaskTransform, row: list[bytes]) -> list[bytes | None]:
    plan = t.plan(cols(len(row)))
    return [plan[i](cell) if i in plan else cell for i, cell in enumerate(row)]


def test_direct_columns_get_their_strategy_and_others_pass() -> None:
    t = transform("SELECT * FROM customers")
    assert t is not None
    assert apply(t, [b"7", b"jane@example.com", b"4242424242424242"]) == [
        b"7", b"j***@example.com", b"************4242"]


def test_derived_values_are_masked_whole_by_the_default() -> None:
    t = transform("SELECT id, upper(email), card || '' FROM customers")
    assert t is not None
    assert apply(t, [b"7", b"JANE@EXAMPLE.COM", b"4242424242424242"]) == [b"7", b"****", b"****"]


def test_nothing_masked_means_no_transform() -> None:
    assert transform("SELECT id FROM customers WHERE email = 'x' ORDER BY card") is None


def test_unresolved_and_surprising_shapes_are_masked() -> None:
    t = transform("SELECT x FROM unknown_table")
    assert t is not None and apply(t, [b"secret"]) == [b"****"]
    t = transform("SELECT id, email FROM customers")
    assert t is not None
    assert apply(t, [b"7", b"jane@example.com", b"extra"]) == [b"****", b"****", b"****"]

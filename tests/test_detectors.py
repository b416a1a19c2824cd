"""Content detectors find PII in free text (checked beyond its shape) and leave ordinary
numbers and words alone."""

from __future__ import annotations

import pytest

from policies.detectors import find, luhn, might_contain, scrub

FOUND = [
    ("write to jane.doe+x@example.co.uk today", "email"),
    ("card 4242 4242 4242 4242 on file", "card"),
    ("card 4111-1111-1111-1111", "card"),
    ("ssn 078-05-1120", "ssn"),
    ("call +1 (555) 010-9999", "phone"),
    ("call 555.010.9999", "phone"),
    ("IBAN GB82 WEST 1234 5698 7654 32", "iban"),
    ("iban DE89370400440532013000", "iban"),
    ("token sk-abcdefghijklmnopqrstuvwxyz123456", "api_key"),
    ("aws AKIAIOSFODNN7EXAMPLE", "api_key"),
    ("gh ghp_" + "a" * 36, "api_key"),
]


@pytest.mark.parametrize(("text", "kind"), FOUND)
def test_pii_is_found_and_scrubbed(text: str, kind: str) -> None:
    kinds = [f.kind for f in find(text)]
    assert kind in kinds, (text, kinds)
    out = scrub(text)
    assert "****" in out
    f = next(f for f in find(text) if f.kind == kind)
    assert text[f.start:f.end] not in out
    assert might_contain(text.encode())


LEFT_ALONE = [
    "order 12345 shipped",
    "card 4242 4242 4242 4241",        # fails Luhn
    "ssn 000-12-3456",                 # area 000 is never issued
    "ssn 666-12-3456",
    "IBAN GB82 WEST 1234 5698 7654 33",  # bad check digits
    "version 1.2.3, build 2024-01-05",
    "no at sign here",
]


@pytest.mark.parametrize("text", LEFT_ALONE)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert find(text) == [], text
    assert scrub(text) == text


def test_luhn() -> None:
    assert luhn("4242424242424242") and not luhn("4242424242424241")


def test_pre_check_skips_cells_that_cannot_match() -> None:
    for cell in (b"shipped", b"12345", b"2024-01-05", b""):
        assert not might_contain(cell)


def test_only_the_requested_kinds() -> None:
    text = "jane@example.com 4242 4242 4242 4242"
    assert [f.kind for f in find(text, ["card"])] == ["card"]
    assert scrub(text, ["email"]).startswith("**** 4242")

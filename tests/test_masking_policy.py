"""A profile's masking section: listed columns and their strategies, globs, the default for
derived columns, on_unresolved, detectors and the HMAC key; every error names its key."""

from __future__ import annotations

import tomllib

import pytest

from policies.guardrails import PolicyError, parse_profiles

POLICY = """
[profiles.agent]
[profiles.agent.masking]
default_strategy = "redact"
on_unresolved = "refuse"
detectors = ["email", "card"]
key_env = "WIREGATE_MASK_KEY"

[[profiles.agent.masking.column]]
columns = ["public.customers.email", "*.*.email_address"]
strategy = "email"

[[profiles.agent.masking.column]]
columns = ["public.customers.card_number"]
strategy = "partial"
keep_last = 4

[[profiles.agent.masking.column]]
columns = ["public.customers.ssn", "hr.*.ssn*"]
strategy = "hash"
"""


def test_columns_resolve_to_their_strategies() -> None:
    masking = parse_profiles(tomllib.loads(POLICY))["agent"].masking
    assert masking is not None
    assert masking.on_unresolved == "refuse" and masking.detectors == ("email", "card")
    assert masking.key_env == "WIREGATE_MASK_KEY"
    email = masking.strategy_for("public", "customers", "email")
    assert email is not None and email.name == "email"
    card = masking.strategy_for("public", "customers", "card_number")
    assert card is not None and (card.name, card.keep_last) == ("partial", 4)
    glob = masking.strategy_for("crm", "leads", "email_address")
    assert glob is not None and glob.name == "email"
    hashed = masking.strategy_for("hr", "staff", "ssn_last")
    assert hashed is not None and hashed.name == "hash"
    assert masking.strategy_for("public", "customers", "full_name") is None
    assert masking.strategy_for("public", "Customers", "email") is None  # names are exact
    assert masking.default.name == "redact"


@pytest.mark.parametrize(("change", "key"), [
    (("strategy = \"email\"", "strategy = \"scramble\""),
     "profiles.agent.masking.column[0].strategy"),
    (("\"public.customers.email\",", "\"customers.email\","),
     "profiles.agent.masking.column[0].columns"),
    (("on_unresolved = \"refuse\"", "on_unresolved = \"allow\""),
     "profiles.agent.masking.on_unresolved"),
    (("detectors = [\"email\", \"card\"]", "detectors = [\"dna\"]"),
     "profiles.agent.masking.detectors"),
    (("key_env = \"WIREGATE_MASK_KEY\"", ""), "profiles.agent.masking.key_env"),
    (("keep_last = 4", "keep_last = -1"), "profiles.agent.masking.column[1].keep_last"),
    (("default_strategy = \"redact\"", "default = \"redact\""),
     "profiles.agent.masking.default"),
])
def test_errors_name_the_key(change: tuple[str, str], key: str) -> None:
    text = POLICY.replace(*change)
    with pytest.raises(PolicyError) as ei:
        parse_profiles(tomllib.loads(text))
    assert ei.value.key == key, str(ei.value)


def test_profiles_without_masking_have_none() -> None:
    profiles = parse_profiles(tomllib.loads('[profiles.p]\n[[profiles.p.rule]]\nid = "x"\n'
                                            'kind = "ddl"\n'))
    assert profiles["p"].masking is None


def test_scrub_message_keeps_names_and_takes_values_out() -> None:
    from policies.masking import WITHHELD, scrub_message

    unique = {"S": "ERROR", "V": "ERROR", "C": "23505", "n": "customers_email_key",
              "M": 'duplicate key value violates unique constraint "customers_email_key"',
              "D": "Key (email)=(jane@example.com) already exists.", "t": "customers",
              "W": "SQL statement \"UPDATE ...\"", "q": "SELECT 'jane@example.com'"}
    out = scrub_message(unique)
    assert out["C"] == "23505" and out["n"] == "customers_email_key" and out["t"] == "customers"
    assert out["M"] == 'duplicate key value violates unique constraint "***"'
    assert out["D"] == WITHHELD and "W" not in out and "q" not in out
    cast = scrub_message({"S": "ERROR", "V": "ERROR", "C": "22P02",
                          "M": 'invalid input syntax for type integer: "078-05-1120"'})
    assert cast["M"] == 'invalid input syntax for type integer: "***"'
    raised = scrub_message({"S": "ERROR", "V": "ERROR", "C": "P0001", "M": "bad 078-05-1120"})
    notice = scrub_message({"S": "NOTICE", "V": "NOTICE", "C": "00000", "M": "value x@y.io"})
    assert raised["M"] == WITHHELD and notice["M"] == WITHHELD
    unquoted = scrub_message({"S": "ERROR", "V": "ERROR", "C": "XX000",
                              "M": "odd: jane@example.com 4242424242424242"})
    assert "jane@example.com" not in unquoted["M"] and "4242424242424242" not in unquoted["M"]

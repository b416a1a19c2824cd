"""Content detectors: PII found in any text cell, masked even where no column was listed.

They sit on top of lineage-based masking, never instead of it: a detector misses what it does
not recognise, so it only narrows what leaks from columns nobody listed. Each finding is
checked beyond its shape where the format allows (Luhn for card numbers, mod-97 for IBANs, the
SSA's reserved ranges for SSNs), so ordinary numbers are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

DETECTORS = ("email", "card", "ssn", "phone", "iban", "api_key")

_EMAIL = re.compile(r"(?a)[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_SSN = re.compile(r"(?<!\d)(\d{3})-(\d{2})-(\d{4})(?!\d)")
_PHONE = re.compile(r"(?<![\w+])(?:\+?\d{1,3}[ .-]?)?\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}(?!\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_API_KEY = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|xox[abpr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})\b")


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    s = text.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def _ssn_ok(m: re.Match[str]) -> bool:
    area, group, serial = m.group(1), m.group(2), m.group(3)
    return area not in ("000", "666") and not area.startswith("9") and group != "00" \
        and serial != "0000"


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int


def find(text: str, kinds: Iterable[str] = DETECTORS) -> list[Finding]:
    """Every recognised piece of PII in ``text``, by kind, as character spans."""
    wanted = set(kinds)
    out: list[Finding] = []
    checks: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], bool]]] = [
        ("email", _EMAIL, lambda m: True),
        ("card", _CARD, lambda m: luhn(re.sub(r"\D", "", m.group(0)))),
        ("ssn", _SSN, _ssn_ok),
        ("iban", _IBAN, lambda m: _iban_ok(m.group(0))),
        ("api_key", _API_KEY, lambda m: True),
        ("phone", _PHONE, lambda m: True),
    ]
    taken: list[tuple[int, int]] = []
    for kind, pattern, ok in checks:
        if kind not in wanted:
            continue
        for m in pattern.finditer(text):
            span = m.span()
            if any(a < span[1] and span[0] < b for a, b in taken) or not ok(m):
                continue
            taken.append(span)
            out.append(Finding(kind, *span))
    return sorted(out, key=lambda f: f.start)


def scrub(text: str, kinds: Iterable[str] = DETECTORS, token: str = "****") -> str:
    """``text`` with every finding replaced by ``token`` (the rest of the text kept)."""
    findings = find(text, kinds)
    if not findings:
        return text
    parts = []
    last = 0
    for f in findings:
        parts.append(text[last:f.start])
        parts.append(token)
        last = f.end
    parts.append(text[last:])
    return "".join(parts)


_MAYBE = re.compile(rb"@|\d(?:[ ().-]{0,2}\d){8}|sk-|AKIA|gh[pousr]_|xox[abpr]-|AIza")


def might_contain(cell: bytes) -> bool:
    """A cheap pre-check on raw cell bytes (one C-speed scan): without '@', nine digits close
    together or an API-key prefix nothing can match, and the cell is forwarded untouched."""
    return _MAYBE.search(cell) is not None

"""Cost of the content detectors per text cell, on cells with and without PII.

    .venv/bin/python benchmarks/detectors.py

Prints µs per cell for the byte pre-check alone (what most cells pay) and for a full scan.
"""

from __future__ import annotations

import timeit

from policies.detectors import find, might_contain

CELLS = {
    "short word": "shipped",
    "filler (84 spaces)": " " * 84,
    "sentence": "Customer asked about the delivery window for order 12345 next week.",
    "email": "contact: jane.doe@example.com",
    "card": "paid with 4242 4242 4242 4242 yesterday",
}


def main() -> None:
    n = 20000
    for name, text in CELLS.items():
        raw = text.encode()
        pre = timeit.timeit(f"might_contain({raw!r})", number=n,
                            globals={"might_contain": might_contain}) / n * 1e6
        full = timeit.timeit(f"find({text!r})", number=n, globals={"find": find}) / n * 1e6
        print(f"{name:22} pre-check {pre:6.2f} µs   full scan {full:6.2f} µs   "
              f"pre-check says {'scan' if might_contain(raw) else 'skip'}")


if __name__ == "__main__":
    main()

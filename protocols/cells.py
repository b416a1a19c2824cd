"""What the row walks of both protocols share (the C side is ``_cells.h``): the byte-level
rewrites a walk may apply itself, and a result's planned cells in the form the walks take."""

from __future__ import annotations

from collections.abc import Callable, Mapping

Rewrite = Callable[[bytes | None], bytes | None]

# Byte-level rewrites the C walks apply themselves to an ASCII value (a rewrite announces one
# as its ``spec`` attribute: (op, keep_first, keep_last, token)); they must give exactly what
# the rewrite's own call gives for that value. Other values go to the call.
STAR_ALNUM = 1   # ASCII letters and digits become "*" but the first/last ones kept
EMAIL = 2        # first character of the local part, "***@", the domain; else the token
CONSTANT = 3     # the token, for any non-NULL value
Spec = tuple[int, int, int, bytes]


class RowPlan:
    """The planned cells of a result: increasing column indexes, each with its rewrite, its
    memo of values, its byte-level spec and the most bytes a spec's result may take (0: no
    bound), as far as the rewrite has them."""

    __slots__ = ("columns", "rewrites", "memos", "specs", "limits")

    def __init__(self, plan: Mapping[int, Rewrite]) -> None:
        order = sorted(plan)
        self.columns = tuple(order)
        self.rewrites = tuple(plan[i] for i in order)
        self.memos = tuple(getattr(plan[i], "memo", None) for i in order)
        self.specs: tuple[Spec | None, ...] = tuple(getattr(plan[i], "spec", None)
                                                    for i in order)
        self.limits = tuple(int(getattr(plan[i], "limit", 0) or 0) for i in order)

    def __bool__(self) -> bool:
        return bool(self.columns)

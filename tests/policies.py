"""Policies the client tests run the relay with."""

from __future__ import annotations

from collections.abc import Sequence

from policies.decision import Allow, CellRewrite, Column, Decision, SessionInfo, Statement


class EveryCell:
    """Rewrites every cell to itself: the relay tracks every response and re-encodes every
    DataRow, so results must still be byte-identical to the server's."""

    def __init__(self) -> None:
        self.cells = 0

    def plan(self, columns: Sequence[Column]) -> dict[int, CellRewrite]:
        return {c.index: self.same for c in columns}

    def same(self, value: bytes | None) -> bytes | None:
        self.cells += 1
        return value


class TrackEverything:
    """Identity rewrite of every cell; ``transform.cells`` counts the cells it saw."""

    tracks_results = True

    def __init__(self) -> None:
        self.transform = EveryCell()

    def decide(self, statement: Statement, info: SessionInfo) -> Decision:
        return Allow(transform=self.transform)

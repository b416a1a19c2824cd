"""The MySQL relay's walk of answers does not depend on how the server's bytes are cut.

A server's answers reach the relay in whatever chunks the socket gives: one command's whole
answer, half a packet, the end of one answer and the start of the next. Whatever the cuts,
the client must get exactly the bytes it gets when each answer comes whole: the server's own
bytes when nothing is rewritten, the same masked rows when something is. The relay is driven
here without sockets, with the answers a server sends to prepared and plain statements.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.decision import Allow, SessionInfo, Statement
from policies.masking import MaskTransform, Strategy
from protocols.mysql import messages as my
from protocols.mysql import responses as rs
from protocols.mysql.binary import encode_binary_row, string_value
from protocols.mysql.packets import encode
from proxy.mysql_relay import MySQLRelay

COLUMN = my.ColumnDefinition("shop", "people", "people", "email", "email", 45, 200, 253, 0,
                             0).encode()
EOF = b"\xfe\x00\x00\x02\x00"
PARTIAL = Strategy("partial", keep_last=4)


class _Transport:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def close(self) -> None:
        return None


class _Listener:
    max_packet_size = 64 << 20
    idle_timeout = 0.0


class _Session:
    """What the relay asks of its session: every statement allowed, with ``transform``."""

    capabilities = my.CLIENT_PROTOCOL_41
    listener = _Listener()
    info = SessionInfo("1", "agent", "shop", "shop")
    id = "1"
    setup: list[str] = []
    policy = None

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def touch(self) -> None:
        return None

    def decide(self, statement: Statement) -> Allow:
        return Allow(transform=self.transform)

    def finished(self) -> None:
        return None


def _answer(values: list[bytes | None], binary: bool, seq: int = 1) -> bytes:
    """A one-column result set as the server sends it, from sequence id ``seq``."""
    payloads = [b"\x01", COLUMN, EOF]
    for v in values:
        payloads.append(encode_binary_row([None if v is None else string_value(v)])
                        if binary else my.encode_text_row((v,)))
    payloads.append(EOF)
    return b"".join(encode(p, seq + i) for i, p in enumerate(payloads))


PREPARE_OK = encode(b"\x00\x07\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00", 1) \
    + encode(COLUMN, 2) + encode(EOF, 3)
EXECUTE = encode(b"\x17\x07\x00\x00\x00\x00\x01\x00\x00\x00", 0)
OK = encode(b"\x00\x00\x00\x02\x00\x00\x00", 1)

values = st.lists(st.one_of(st.none(), st.binary(max_size=40),
                            st.text(max_size=20).map(str.encode)), max_size=6)


def _replay(transform: Any, commands: list[tuple[bytes, bytes]],
            cuts: list[int] | None) -> bytes:
    """Each command goes up whole, then its answer comes down: whole, or (with ``cuts``) in
    pieces cut at those offsets of all the answers' bytes taken together."""
    client, server = _Transport(), _Transport()
    relay = MySQLRelay(_Session(transform), client, server)  # type: ignore[arg-type]
    relay.client_data(encode(b"\x16SELECT email FROM people WHERE id = ?", 0))
    relay.server_data(PREPARE_OK)
    client.data.clear()
    if cuts is None:
        for command, answer in commands:
            relay.client_data(command)
            relay.server_data(answer)
            assert not relay.pending
        return bytes(client.data)
    for command, _ in commands:                       # pipelined: all commands first
        relay.client_data(command)
    stream = b"".join(answer for _, answer in commands)
    at = 0
    for cut in sorted(set(cuts)):
        if at < cut < len(stream):
            relay.server_data(stream[at:cut])
            at = cut
    relay.server_data(stream[at:])
    assert not relay.pending and not relay.closed
    return bytes(client.data)


WALKS = {"reference": rs.ResponseTracker.skip, "C": rs.c_skip or rs.ResponseTracker.skip}


@pytest.mark.parametrize("walk", sorted(WALKS))
@settings(max_examples=200, deadline=None)
@given(answers=st.lists(st.tuples(st.sampled_from(["execute", "query", "ok"]), values),
                        min_size=1, max_size=4),
       cuts=st.lists(st.integers(0, 1200), max_size=12), masked=st.booleans())
def test_answers_cut_anywhere_reach_the_client_as_when_whole(
        walk: str, answers: list[tuple[str, list[bytes | None]]], cuts: list[int],
        masked: bool) -> None:
    """With the walk over packets in C and with the Python reference (the fallback where
    nothing was compiled)."""
    chosen, rs.skip = rs.skip, WALKS[walk]
    try:
        _check_cut_answers(answers, cuts, masked)
    finally:
        rs.skip = chosen


def _check_cut_answers(answers: list[tuple[str, list[bytes | None]]], cuts: list[int],
                       masked: bool) -> None:
    commands = []
    for kind, rows in answers:
        if kind == "execute":
            commands.append((EXECUTE, _answer(rows, binary=True)))
        elif kind == "query":
            commands.append((encode(b"\x03SELECT email FROM people", 0), _answer(rows, False)))
        else:
            commands.append((encode(b"\x03DO 1", 0), OK))
    transform = MaskTransform([PARTIAL], PARTIAL) if masked else None
    whole = _replay(transform, commands, None)
    if not masked:
        assert whole == b"".join(answer for _, answer in commands)
    else:
        for kind, rows in answers:
            for v in rows:
                if v is not None and len(v) > 8 and kind != "ok" and v.isalnum():
                    assert v not in whole
    assert _replay(transform, commands, cuts) == whole


def test_bytes_after_the_last_answer_pass_on_once() -> None:
    """A server closing a killed connection says so after the answer, unasked: the client
    gets the answer and then that packet, each once."""
    client, server = _Transport(), _Transport()
    relay = MySQLRelay(_Session(None), client, server)  # type: ignore[arg-type]
    answer = _answer([b"a@example.com"], binary=False)
    killed = encode(my.ERR(1927, "Connection was killed", "70100").encode(), 0)
    relay.client_data(encode(b"\x03SELECT email FROM people", 0))
    relay.server_data(answer + killed)
    assert bytes(client.data) == answer + killed
    assert not relay.pending

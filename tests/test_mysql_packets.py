"""MySQL packet framing: any chunking of the stream gives the same payloads, long payloads
are split at 16 MiB - 1 and reassembled, and bad framing is refused with the server's error
numbers, never misread."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.mysql.packets import MAX_PACKET, PacketError, PacketReader, encode, next_seq


def stream(payloads: list[bytes], seq: int = 0) -> bytes:
    out = b""
    for p in payloads:
        out += encode(p, seq)
        seq = next_seq(p, seq)
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=8), st.data())
def test_any_chunking_gives_the_same_payloads(payloads: list[bytes], data: st.DataObject) -> None:
    raw = stream(payloads)
    reader = PacketReader()
    got = []
    pos = 0
    while pos < len(raw):
        n = data.draw(st.integers(1, max(1, len(raw) - pos)))
        got += reader.feed(raw[pos:pos + n])
        pos += n
    assert [p.payload for p in got] == payloads
    assert reader.idle


def test_a_payload_of_16_mib_or_more_is_split_and_reassembled() -> None:
    for size in (MAX_PACKET - 1, MAX_PACKET, MAX_PACKET + 5, 2 * MAX_PACKET):
        payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        raw = encode(payload, 3)
        full, rest = divmod(size, MAX_PACKET)
        assert len(raw) == size + 4 * (full + 1)             # an empty last packet if exact
        assert raw[3] == 3 and raw[-(rest + 4) + 3] == 3 + full
        assert next_seq(payload, 3) == 4 + full
        (packet,) = PacketReader(max_payload=3 * MAX_PACKET, expect=3).feed(raw)
        assert packet.seq == 3 and packet.payload == payload


def test_sequence_out_of_order_is_refused() -> None:
    reader = PacketReader()
    reader.feed(encode(b"first", 0))
    with pytest.raises(PacketError) as ei:   # the stream cannot be trusted after this
        reader.feed(encode(b"second", 5))
    assert ei.value.errno == 1156


def test_each_command_restarts_the_sequence() -> None:
    reader = PacketReader()
    assert [p.payload for p in reader.feed(encode(b"first", 0))] == [b"first"]
    reader.reset(0)
    assert [p.payload for p in reader.feed(encode(b"again", 0))] == [b"again"]


def test_a_payload_over_the_limit_is_refused_before_it_is_buffered() -> None:
    reader = PacketReader(max_payload=1000)
    header = (5000).to_bytes(3, "little") + b"\x00"
    with pytest.raises(PacketError) as ei:
        reader.feed(header)                 # refused on the header alone
    assert ei.value.errno == 1153 and "max_allowed_packet" in str(ei.value)

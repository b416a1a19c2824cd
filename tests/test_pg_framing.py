"""Framers: arbitrary chunks in; the same bytes out in order, watched messages whole.

``Framer.scan(chunk)`` returns the watched messages completed by the chunk. A consumer that
forwards everything sends, for each chunk: the ``buf`` of a leading frame that began in an
earlier chunk (``start < 0``, a watched message or ``RELEASED`` header bytes), then
``chunk[last:forwardable]`` where ``last`` is that frame's ``end`` (0 without one).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.postgres import messages as m
from protocols.postgres.framing import (
    RELEASED,
    VALID_BACKEND,
    VALID_FRONTEND,
    Frame,
    Framer,
    StartupFramer,
)
from protocols.postgres.messages import ProtocolViolation

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def msg(code: bytes, body: bytes = b"") -> bytes:
    return m.frame(code, body)


def message_lists(codes: bytes, max_size: int = 14) -> st.SearchStrategy[list[bytes]]:
    one = st.builds(msg, st.sampled_from([bytes([c]) for c in codes]), st.binary(max_size=24))
    return st.lists(one, max_size=max_size)


@st.composite
def chunkings(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    """Split ``stream`` anywhere, including one byte at a time and empty chunks."""
    if draw(st.integers(0, 4), label="mode") == 0:
        return [stream[i:i + 1] for i in range(len(stream))]
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=25), label="cuts"))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def forwarded(fr: Framer, chunk: bytes, frames: list[Frame]) -> bytes:
    """What a consumer that keeps every message forwards for this chunk."""
    out, last = [], 0
    for f in frames:
        if f.start < 0:
            out.append(f.buf)
            last = f.end
    out.append(chunk[last:fr.forwardable])
    return b"".join(out)


@dataclass
class Run:
    emitted: int = 0                                  # stream bytes forwarded so far
    fed: int = 0                                      # stream bytes scanned so far
    frames: list[tuple[int, bytes]] = field(default_factory=list)  # (stream offset, raw)
    marks: list[int] = field(default_factory=list)  # ``emitted`` after each scan
    released: int = 0


def offsets(msgs: list[bytes]) -> list[int]:
    out, pos = [], 0
    for x in msgs:
        out.append(pos)
        pos += len(x)
    return out


def scan_all(fr: Framer, msgs: list[bytes], chunks: list[bytes],
             after_scan: Callable[[int], None] | None = None) -> Run:
    """Scan every chunk, checking the per-chunk contract: order, ``spanned``, ``idle``."""
    stream = b"".join(msgs)
    assert b"".join(chunks) == stream
    bounds = {o + len(x) for o, x in zip(offsets(msgs), msgs, strict=True)} | {0}
    run = Run()
    for k, chunk in enumerate(chunks):
        before_emitted, before_fed = run.emitted, run.fed
        frames = fr.scan(chunk)
        assert 0 <= fr.forwardable <= len(chunk)
        last = 0
        for i, f in enumerate(frames):
            assert isinstance(f, Frame)
            if f.start < 0:
                # only the first frame can come from an earlier chunk; it ends in this one
                assert i == 0
                assert 0 <= f.end <= fr.forwardable
                assert before_emitted + len(f.buf) == before_fed + f.end
                offset, raw = before_emitted, bytes(f.buf)
                last = f.end
            else:
                # a frame inside the chunk is an offset range of the caller's own buffer
                assert f.buf is chunk
                assert last <= f.start < f.end <= fr.forwardable
                offset, raw = before_fed + f.start, chunk[f.start:f.end]
                last = f.end
                assert f.raw == raw
            assert raw == stream[offset:offset + len(raw)]
            if f.code == RELEASED:
                # header bytes of an unwatched message, held only because they were split
                assert len(raw) == 5 and not fr.watch[raw[0]]
                run.released += 1
            else:
                assert f.code == raw[0]
                assert f.body == raw[5:]
                assert len(raw) == 1 + struct.unpack("!i", raw[1:5])[0]
                run.frames.append((offset, raw))
        out = forwarded(fr, chunk, frames)
        assert out == stream[before_emitted:before_emitted + len(out)]
        run.emitted += len(out)
        run.marks.append(run.emitted)
        run.fed += len(chunk)
        verbatim = before_emitted == before_fed and run.emitted == run.fed
        assert fr.spanned == (not verbatim), (k, chunk, frames)
        if not fr.spanned:
            assert fr.forwardable == len(chunk)
            assert all(f.start >= 0 for f in frames)
        assert fr.idle == (run.fed in bounds)
        if after_scan is not None:
            after_scan(k)
    assert run.emitted == len(stream)
    assert fr.idle
    return run


def check_watched(run: Run, msgs: list[bytes], watched: list[bool]) -> None:
    """The frames are exactly the watched messages, whole, at their place in the stream; and
    no part of a watched message was forwardable before all of it had arrived."""
    want = [(o, x) for o, x, w in zip(offsets(msgs), msgs, watched, strict=True) if w]
    assert run.frames == want
    for o, x in want:
        assert not any(o < mark < o + len(x) for mark in run.marks), "watched message leaked"


# -- Framer: properties -------------------------------------------------------------------------


def check_static_watch(fr: Framer, msgs: list[bytes], watch: set[int],
                       data: st.DataObject) -> None:
    """Scan ``msgs`` in drawn chunks with one watch set throughout."""
    chunks = data.draw(chunkings(b"".join(msgs)), label="chunks")
    fr.set_watch(bytes(watch))
    run = scan_all(fr, msgs, chunks)
    check_watched(run, msgs, [x[0] in watch for x in msgs])


@SETTINGS
@given(message_lists(VALID_BACKEND), st.sets(st.sampled_from(list(VALID_BACKEND))), st.data())
def test_framer_static_watch(msgs: list[bytes], watch: set[int], data: st.DataObject) -> None:
    check_static_watch(Framer(VALID_BACKEND, 1 << 20, "backend"), msgs, watch, data)


@SETTINGS
@given(message_lists(b"QPBESd", max_size=10), st.sets(st.sampled_from(list(b"QPBES"))),
       st.data())
def test_framer_frontend_direction(msgs: list[bytes], watch: set[int],
                                   data: st.DataObject) -> None:
    check_static_watch(Framer(VALID_FRONTEND, 1 << 20, "frontend"), msgs, watch, data)


@SETTINGS
@given(message_lists(b"TDCZ", max_size=16), st.data())
def test_framer_watch_changes_between_scans(msgs: list[bytes], data: st.DataObject) -> None:
    """The watch set may change after any scan; a message follows the set in force when its
    header is complete (a partial header held over is decided by the new set)."""
    stream = b"".join(msgs)
    chunks = data.draw(chunkings(stream), label="chunks")
    fr = Framer(VALID_BACKEND, 1 << 20, "backend")
    fr.set_watch(b"T")
    in_force: list[bytes] = []  # watch set used by each scan

    def toggle(k: int) -> None:
        in_force.append(bytes(c for c in b"TDCZ" if fr.watch[c]))
        flips = data.draw(st.sets(st.sampled_from(list(b"TDCZ"))), label=f"flip after {k}")
        for c in flips:
            if c == ord("D"):
                fr.watch[c] ^= 1           # the table itself, as the relay does
            else:
                fr.set_watch(bytes([c]), on=not fr.watch[c])

    run = scan_all(fr, msgs, chunks, toggle)
    # the scan that decides a message is the one whose chunk holds its fifth byte
    ends, pos = [], 0
    for chunk in chunks:
        pos += len(chunk)
        ends.append(pos)
    watched = []
    for o, x in zip(offsets(msgs), msgs, strict=True):
        k = next(i for i, e in enumerate(ends) if e >= o + 5)
        watched.append(x[0] in in_force[k])
    check_watched(run, msgs, watched)


def test_framer_real_messages_decode_from_frames() -> None:
    want: list[m.Query | m.Parse | m.Bind | m.Execute | m.Sync] = [
        m.Query("select 1"), m.Parse("s", "select $1", (23,)),
        m.Bind("", "s", (), (b"1",), ()), m.Execute("", 0), m.Sync()]
    stream = b"".join(x.encode() for x in want)
    for step in (1, 3, 7, len(stream)):
        fr = Framer(VALID_FRONTEND, 1 << 20, "frontend")
        fr.set_watch(b"QPBDECSHXdcfFp")
        got = [m.decode_frontend(bytes([f.code]), f.body)
               for i in range(0, len(stream), step) for f in fr.scan(stream[i:i + step])]
        assert got == want


# -- Framer: examples ---------------------------------------------------------------------------


def test_unwatched_whole_chunk_is_forwardable_verbatim() -> None:
    fr = Framer(VALID_BACKEND, 1 << 20, "backend")
    fr.set_watch(b"Z")
    chunk = msg(b"D", b"row1") + msg(b"D", b"row2") + msg(b"C", b"SELECT 2\0")
    assert fr.scan(chunk) == []
    assert fr.forwardable == len(chunk)
    assert not fr.spanned and fr.idle


def test_unwatched_message_forwarded_before_its_end() -> None:
    fr = Framer(VALID_BACKEND, 1 << 20, "backend")
    whole = msg(b"D", b"x" * 100)
    for a, b in ((0, 30), (30, 60)):
        assert fr.scan(whole[a:b]) == []
        assert fr.forwardable == b - a
        assert not fr.spanned and not fr.idle
    tail = whole[60:] + msg(b"Z", b"I")
    assert fr.scan(tail) == [] and fr.forwardable == len(tail)
    assert not fr.spanned and fr.idle


def test_watched_message_held_until_whole() -> None:
    fr = Framer(VALID_BACKEND, 1 << 20, "backend")
    fr.set_watch(b"Z")
    row, z = msg(b"D", b"row"), msg(b"Z", b"I")
    assert fr.scan(row + z[:3]) == []
    assert fr.forwardable == len(row)  # the partial header is not forwardable
    assert fr.spanned and not fr.idle
    assert fr.scan(z[3:5]) == [] and fr.forwardable == 0
    assert fr.spanned and not fr.idle
    chunk = z[5:] + row
    frames = fr.scan(chunk)
    assert [(f.code, f.start, f.end, f.raw) for f in frames] == [(ord("Z"), -1, 1, z)]
    assert fr.forwardable == len(chunk)
    assert forwarded(fr, chunk, frames) == z + row
    assert fr.spanned and fr.idle
    assert fr.scan(row) == [] and not fr.spanned


def test_split_header_of_unwatched_message_is_released() -> None:
    fr = Framer(VALID_BACKEND, 1 << 20, "backend")
    d = msg(b"D", b"abcdef")
    assert fr.scan(d[:2]) == [] and fr.forwardable == 0
    assert fr.spanned and not fr.idle
    frames = fr.scan(d[2:7])
    assert [(f.code, f.start, f.end, f.buf) for f in frames] == [(RELEASED, -1, 3, d[:5])]
    assert fr.forwardable == 5
    assert forwarded(fr, d[2:7], frames) == d[:7]
    assert fr.spanned and not fr.idle
    assert fr.scan(d[7:]) == [] and fr.forwardable == len(d) - 7
    assert not fr.spanned and fr.idle


def test_watch_change_applies_to_held_partial_header() -> None:
    t, d1, d2 = msg(b"T", b"desc"), msg(b"D", b"r1"), msg(b"D", b"r2")
    fr = Framer(VALID_BACKEND, 1 << 20, "backend")
    fr.set_watch(b"T")
    frames = fr.scan(d1 + t + d2[:2])
    assert [f.raw for f in frames] == [t]
    fr.watch[ord("D")] = 1  # switched on after seeing the RowDescription
    chunk = d2[2:] + d1
    frames = fr.scan(chunk)
    assert [f.raw for f in frames] == [d2, d1]
    assert forwarded(fr, chunk, frames) == d2 + d1


def test_watch_change_does_not_reclassify_message_in_flight() -> None:
    fr = Framer(VALID_BACKEND, 1 << 20, "backend")
    fr.set_watch(b"D")
    d = msg(b"D", b"0123456789")
    assert fr.scan(d[:8]) == []
    fr.set_watch(b"D", on=False)  # too late: this row was already being held
    frames = fr.scan(d[8:])
    assert [f.raw for f in frames] == [d]
    e = msg(b"E", b"S\0ERROR\0\0")
    assert fr.scan(e[:7]) == [] and fr.forwardable == 7  # unwatched, streaming
    fr.set_watch(b"E")  # too late as well: half of it has gone out
    assert fr.scan(e[7:]) == [] and fr.forwardable == len(e) - 7
    assert fr.idle


def test_empty_body_messages_frame() -> None:
    fr = Framer(VALID_FRONTEND, 1 << 20, "frontend")
    fr.set_watch(b"S")
    sync = m.Sync().encode()
    frames = fr.scan(sync * 3)
    assert [(f.start, f.end) for f in frames] == [(0, 5), (5, 10), (10, 15)]
    for b in sync[:-1]:
        assert fr.scan(bytes([b])) == []
        assert not fr.idle and fr.forwardable == 0
    frames = fr.scan(sync[-1:])
    assert [f.raw for f in frames] == [sync]
    assert fr.idle


def test_empty_chunk_changes_nothing() -> None:
    fr = Framer(VALID_BACKEND, 1 << 20, "backend")
    assert fr.scan(b"") == [] and fr.forwardable == 0 and not fr.spanned and fr.idle
    fr.set_watch(b"Z")
    z = msg(b"Z", b"I")
    assert len(z) == 6
    fr.scan(z[:5])
    assert fr.scan(b"") == [] and fr.forwardable == 0 and fr.spanned and not fr.idle
    assert [f.raw for f in fr.scan(z[5:])] == [z]


# -- Framer: errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("length", [-(2**31), -1, 0, 1, 2, 3])
@pytest.mark.parametrize("split_at", [None, 1, 3])
def test_length_below_four_refused(length: int, split_at: int | None) -> None:
    header = b"D" + struct.pack("!i", length)
    fr = Framer(VALID_BACKEND, 1 << 20, "backend")
    with pytest.raises(ProtocolViolation, match=rf"invalid backend message length {length}$"):
        if split_at is None:
            fr.scan(msg(b"Z", b"I") + header + b"xxxx")
        else:
            fr.scan(header[:split_at])
            fr.scan(header[split_at:])


@pytest.mark.parametrize("watched", [False, True])
@pytest.mark.parametrize("split_at", [None, 2])
def test_length_above_limit_refused(watched: bool, split_at: int | None) -> None:
    fr = Framer(VALID_FRONTEND, 1024, "frontend")
    if watched:
        fr.set_watch(b"Q")
    ok = b"Q" + struct.pack("!i", 1024) + b"x" * 1020
    frames = fr.scan(ok)  # the limit itself is fine
    assert fr.forwardable == len(ok) and [f.raw for f in frames] == ([ok] if watched else [])
    header = b"Q" + struct.pack("!i", 1025)
    with pytest.raises(ProtocolViolation,
                       match="frontend message of 1025 bytes exceeds the limit of 1024 bytes"):
        if split_at is None:
            fr.scan(header)
        else:
            fr.scan(header[:split_at])
            fr.scan(header[split_at:])


@pytest.mark.parametrize("code, direction, valid", [
    (0x00, "frontend", VALID_FRONTEND),
    (ord("T"), "frontend", VALID_FRONTEND),   # a backend-only type from a client
    (ord("Q"), "backend", VALID_BACKEND),     # a frontend-only type from a server
    (0xFF, "backend", VALID_BACKEND),
])
def test_invalid_type_byte_refused(code: int, direction: str, valid: bytes) -> None:
    fr = Framer(valid, 1 << 20, direction)
    with pytest.raises(ProtocolViolation,
                       match=rf"invalid {direction} message type .* \(0x{code:02x}\)"):
        fr.scan(bytes([code]) + struct.pack("!i", 4))
    fr = Framer(valid, 1 << 20, direction)
    assert fr.scan(bytes([code])) == []  # one byte is not a header yet
    with pytest.raises(ProtocolViolation, match=f"invalid {direction} message type"):
        fr.scan(struct.pack("!i", 4))


def test_every_invalid_type_byte_refused() -> None:
    for c in range(256):
        for valid, direction in ((VALID_FRONTEND, "frontend"), (VALID_BACKEND, "backend")):
            fr = Framer(valid, 1 << 20, direction)
            raw = bytes([c]) + struct.pack("!i", 4)
            if c in valid:
                assert fr.scan(raw) == [] and fr.forwardable == 5
            else:
                with pytest.raises(ProtocolViolation, match="message type"):
                    fr.scan(raw)


def test_error_after_good_messages_in_same_chunk() -> None:
    fr = Framer(VALID_BACKEND, 1 << 20, "backend")
    with pytest.raises(ProtocolViolation, match="length 2"):
        fr.scan(msg(b"Z", b"I") * 3 + b"D\x00\x00\x00\x02")


# -- StartupFramer ------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [-1, 0, 4, 7, 10001, 2**31 - 1])
def test_startup_framer_length_refused_from_header_alone(length: int) -> None:
    sf = StartupFramer()
    with pytest.raises(ProtocolViolation, match=f"invalid length of startup packet: {length}$"):
        sf.feed(struct.pack("!i", length))


def test_startup_framer_limits_inclusive() -> None:
    ssl = m.SSLRequest().encode()
    assert StartupFramer().feed(ssl) == ssl  # 8 bytes
    big = struct.pack("!ii", 10000, m.PROTOCOL_3_0) + b"k\0" + b"v" * 9988 + b"\0\0"
    assert len(big) == 10000
    sf = StartupFramer()
    assert sf.feed(big[:9999]) is None
    assert sf.feed(big[9999:]) == big
    assert m.decode_startup(big) == m.StartupMessage({"k": "v" * 9988})


def test_startup_framer_byte_at_a_time_and_leftover() -> None:
    packet = m.StartupMessage({"user": "alice", "database": "db"}).encode()
    after = m.PasswordMessage(b"pw\0").encode()
    sf = StartupFramer()
    for b in packet[:-1]:
        assert sf.feed(bytes([b])) is None
    assert sf.feed(packet[-1:] + after) == packet
    assert sf.leftover() == after
    assert sf.leftover() == b""


@SETTINGS
@given(st.dictionaries(st.text("abcdefgh", min_size=1, max_size=8),
                       st.text(st.characters(exclude_characters="\0",
                                             exclude_categories=["Cs"]), max_size=20),
                       max_size=5),
       st.binary(max_size=30), st.data())
def test_startup_framer_any_chunking(params: dict[str, str], trailing: bytes,
                                     data: st.DataObject) -> None:
    packet = m.StartupMessage(params).encode()
    chunks = data.draw(chunkings(packet + trailing), label="chunks")
    sf = StartupFramer()
    fed = 0
    for i, chunk in enumerate(chunks):
        got = sf.feed(chunk)
        fed += len(chunk)
        if fed < len(packet):
            assert got is None
            continue
        assert got == packet
        assert sf.leftover() + b"".join(chunks[i + 1:]) == trailing
        assert m.decode_startup(got) == m.StartupMessage(params)
        break
    else:
        pytest.fail("packet never completed")

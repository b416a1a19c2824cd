"""ResponseTracker: where each answer ends, in both EOF modes, from payloads alone; and any
bytes a server might send are either understood or refused with PacketError, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.mysql import responses as rs
from protocols.mysql.messages import ColumnDefinition, encode_text_row
from protocols.mysql.packets import PacketError

COLDEF = ColumnDefinition("db", "t", "t", "c", "c", 45, 80, 253, 0, 0).encode()
EOF_MID = b"\xfe\x00\x00\x02\x00"
OK_END = b"\xfe\x00\x00\x02\x00\x00\x00"


def feed_all(tracker: rs.ResponseTracker, payloads: list[bytes]) -> list[int]:
    return [tracker.feed(p) for p in payloads]


@pytest.mark.parametrize("deprecate", [False, True])
def test_a_result_set_and_a_second_one(deprecate: bool) -> None:
    t = rs.ResponseTracker(deprecate)
    t.start(rs.EXPECT_RESULT)
    end_more = (b"\xfe\x00\x00\x0a\x00" + (b"\x00\x00" if deprecate else b""))
    first = [b"\x01", COLDEF] + ([] if deprecate else [EOF_MID]) + [
        encode_text_row((b"x",)), encode_text_row((None,)), end_more]
    events = feed_all(t, first)
    assert events[-1] == rs.END and t.more and not t.done
    assert events.count(rs.ROW) == 2
    second = [b"\x00\x01\x00\x02\x00\x00\x00"]       # an OK ends it (INSERT's answer)
    assert feed_all(t, second) == [rs.OK] and t.done


@pytest.mark.parametrize("deprecate", [False, True])
def test_prepare_answer_with_parameters_and_columns(deprecate: bool) -> None:
    t = rs.ResponseTracker(deprecate)
    t.start(rs.EXPECT_PREPARE)
    head = b"\x00" + (7).to_bytes(4, "little") + (1).to_bytes(2, "little") + \
        (2).to_bytes(2, "little") + b"\x00\x00\x00"
    eof = [] if deprecate else [EOF_MID]
    events = feed_all(t, [head, COLDEF, COLDEF, *eof, COLDEF, *eof])
    assert events[0] == rs.PREPARED and t.statement_id == 7 and t.done


def test_an_error_ends_any_answer() -> None:
    t = rs.ResponseTracker(True)
    t.start(rs.EXPECT_RESULT)
    assert feed_all(t, [b"\x01", COLDEF, b"\xffz\x04#HY000boom"])[-1] == rs.ERR and t.done


@settings(max_examples=500, deadline=None)
@given(expect=st.sampled_from([rs.EXPECT_RESULT, rs.EXPECT_PREPARE, rs.EXPECT_FETCH,
                               rs.EXPECT_OK, rs.EXPECT_FIELDS, rs.EXPECT_STRING,
                               rs.EXPECT_OK_OR_EOF]),
       deprecate=st.booleans(),
       payloads=st.lists(st.binary(max_size=20), max_size=12))
def test_any_server_bytes_are_understood_or_refused(expect: int, deprecate: bool,
                                                    payloads: list[bytes]) -> None:
    t = rs.ResponseTracker(deprecate)
    t.start(expect)
    for p in payloads:
        try:
            t.feed(p)
        except PacketError:
            return
        if t.done:
            with pytest.raises(PacketError):
                t.feed(b"\x00")
            return


@settings(max_examples=300, deadline=None)
@given(deprecate=st.booleans(), rows=st.lists(st.binary(min_size=1, max_size=30), max_size=6),
       more=st.booleans(), cut=st.integers(0, 400))
def test_skip_agrees_with_feed(deprecate: bool, rows: list[bytes], more: bool, cut: int
                               ) -> None:
    """The relay's pass-over of answers nobody rewrites ends where feeding packet by packet
    ends, with the same state, from any prefix of the bytes."""
    from protocols.mysql.packets import encode

    status = b"\x0a\x00" if more else b"\x02\x00"
    end = b"\xfe\x00\x00" + status + (b"\x00\x00" if deprecate else b"")
    payloads = [b"\x01", COLDEF] + ([] if deprecate else [EOF_MID]) + [
        encode_text_row((r,)) for r in rows] + [end]
    if more:
        payloads.append(b"\x00\x00\x00\x02\x00\x00\x00")
    data = b"".join(encode(p, i + 1) for i, p in enumerate(payloads))[:cut]
    fed = rs.ResponseTracker(deprecate)
    fed.start(rs.EXPECT_RESULT)
    pos = count = 0
    while len(data) - pos >= 4:
        n = int.from_bytes(data[pos:pos + 3], "little")
        if pos + 4 + n > len(data) or fed.done:
            break
        fed.feed(data[pos + 4:pos + 4 + n])
        pos += 4 + n
        count += 1
    skipped = rs.ResponseTracker(deprecate)
    skipped.start(rs.EXPECT_RESULT)
    assert skipped.skip(data, 0, len(data)) == (pos, count)
    assert (skipped.done, skipped.more, skipped.phase, skipped.status) == (
        fed.done, fed.more, fed.phase, fed.status)


@pytest.mark.parametrize("deprecate", [False, True])
def test_watching_skip_collects_definitions_and_stops_where_the_relay_must_act(
        deprecate: bool) -> None:
    from protocols.mysql.packets import encode

    end_more = b"\xfe\x00\x00\x0a\x00" + (b"\x00\x00" if deprecate else b"")
    payloads = [b"\x01", COLDEF] + ([] if deprecate else [EOF_MID]) + [
        encode_text_row((b"x",)), end_more, b"\xff\x7a\x04#HY000no"]
    data = b"".join(encode(p, i + 1) for i, p in enumerate(payloads))
    t = rs.ResponseTracker(deprecate)
    t.start(rs.EXPECT_RESULT)
    defs: list[bytes] = []
    pos, count = t.skip(data, 0, len(data), defs)
    assert defs == [COLDEF] and t.phase == rs.ROWS_PHASE       # stopped before the row
    assert count == (2 if deprecate else 3)
    row = 4 + len(encode_text_row((b"x",)))
    pos, count = t.skip(data, pos + row, len(data), defs)       # the caller took the row
    assert count == 1 and t.more                                # stopped after the end
    assert t.skip(data, pos, len(data), defs) == (pos, 0)       # and before the ERR


def _state(t: rs.ResponseTracker) -> tuple[object, ...]:
    return (t.done, t.more, t.phase, t.status, t.columns, t.column_index)


# Packets a server sends in answers (and some it should not): the walk in C must stop where the
# reference stops and leave the tracker as the reference leaves it, on any sequence of them.
_answer_packets = st.sampled_from([
    b"\x01", b"\x02", b"\x03", b"\xfb", b"\xfc\x01\x01", COLDEF, EOF_MID, OK_END,
    b"\xfe\x00\x00\x0a\x00", b"\xfe\x00\x00\x0a\x00\x00\x00", b"\xfe\x00\x00\x42\x00",
    b"\x00\x01\x00\x02\x00\x00\x00", b"\x00\x00\x00\x0a\x00\x00\x00", b"\x00\xfc\x01",
    b"\x00\xfe\x01\x02", b"\xff\x7a\x04#HY000no", encode_text_row((b"x",)),
    encode_text_row((None, b"y" * 300)), b"\x00\x00\x05abcde", b"\xfe" + b"\x00" * 9,
])


_terminators = st.sampled_from([EOF_MID, OK_END, b"\xfe\x00\x00\x0a\x00",
                                b"\xfe\x00\x00\x0a\x00\x00\x00", b"\xfe\x00\x00\x42\x00",
                                b"\xfe" + b"\x00" * 9, b"\xfe\x00\x00\x02\x00\x00\x00\x00",
                                b"\xfe\xfc\x01"])


@st.composite
def _answers(draw: st.DrawFn) -> list[bytes]:
    """A result set's packets as a server sends them, give or take a packet."""
    columns = draw(st.integers(1, 3))
    out = [bytes([columns]), *[COLDEF] * columns]
    if draw(st.booleans()):
        out.append(draw(_terminators))
    out += draw(st.lists(_answer_packets, max_size=3))
    out.append(draw(_terminators))
    if draw(st.booleans()):
        out += draw(st.lists(_answer_packets, max_size=3))
    if draw(st.booleans()) and out:
        out.insert(draw(st.integers(0, len(out) - 1)), draw(_answer_packets))
    return out


@pytest.mark.skipif(rs.c_skip is None, reason="the C walk was not built")
@settings(max_examples=800, deadline=None)
@given(payloads=st.one_of(_answers(), st.lists(_answer_packets, max_size=14)),
       deprecate=st.booleans(),
       expect=st.sampled_from([rs.EXPECT_RESULT, rs.EXPECT_FETCH, rs.EXPECT_OK,
                               rs.EXPECT_PREPARE]),
       cursor=st.booleans(), watch=st.booleans(), rows=st.sampled_from([None, True, False]),
       start=st.integers(0, 6), cut=st.integers(0, 40))
def test_the_c_walk_is_the_reference_walk(payloads: list[bytes], deprecate: bool, expect: int,
                                          cursor: bool, watch: bool, rows: bool | None,
                                          start: int, cut: int) -> None:
    from protocols.mysql.packets import encode

    data = b"".join(encode(p, i + 1) for i, p in enumerate(payloads))
    data = data[:max(0, len(data) - cut)]
    pos = 0
    for _ in range(min(start, len(payloads))):      # start inside the answer, not at 0
        pos += 4 + int.from_bytes(data[pos:pos + 3], "little") if len(data) - pos >= 4 else 0
    pos = min(pos, len(data))
    trackers = [rs.ResponseTracker(deprecate), rs.ResponseTracker(deprecate)]
    results: list[object] = []
    for walk, t in zip((rs.ResponseTracker.skip, rs.c_skip), trackers, strict=True):
        t.start(expect, cursor and expect == rs.EXPECT_RESULT)
        defs: list[bytes] | None = [] if watch else None
        steps: list[object] = []
        at = pos
        for _ in range(8):            # as the relay does: again from where it stopped
            try:
                at2, count = walk(t, data, at, len(data), defs, rows)
            except PacketError as exc:
                steps.append(("error", str(exc)))
                break
            steps.append((at2, count, _state(t)))
            if count == 0:
                break
            at = at2
        results.append((steps, defs))
    assert results[0] == results[1]

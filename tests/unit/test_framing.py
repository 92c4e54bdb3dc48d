"""Stream framing: whole messages whatever the segmentation; raw once the stream is not SIP."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipnat46.sip.framing import MAX_HEADERS, Frame, StreamFramer
from tests.conftest import ROOT

INVITE = (ROOT / "examples" / "invite.sip").read_bytes()
OK = (ROOT / "examples" / "200ok.sip").read_bytes()
STREAM = b"\r\n\r\n" + INVITE + OK + b"\r\n" + INVITE


def frames_of(chunks: list[bytes]) -> list[Frame]:
    f = StreamFramer()
    out = [fr for c in chunks for fr in f.feed(c)]
    assert f.pending() == b""
    return out


def test_several_messages_and_keepalives_in_one_segment() -> None:
    out = frames_of([STREAM])
    assert [f.kind for f in out] == ["keepalive", "message", "message", "keepalive", "message"]
    assert b"".join(f.data for f in out) == STREAM
    assert out[1].data == INVITE and out[2].data == OK


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=30))
def test_any_segmentation_gives_the_same_messages(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    out = frames_of(chunks)
    assert [f.data for f in out if f.kind == "message"] == [INVITE, OK, INVITE]
    assert b"".join(f.data for f in out) == STREAM


def test_body_in_a_later_segment() -> None:
    f = StreamFramer()
    head, body = INVITE.split(b"\r\n\r\n", 1)
    assert f.feed(head + b"\r\n\r\n") == []
    assert f.feed(body) == [Frame("message", INVITE)]


def test_tls_and_garbage_go_raw_for_good() -> None:
    f = StreamFramer()
    assert f.feed(b"\x16") == []
    assert f.feed(b"\x03\x01\x02\x00") == [Frame("raw", b"\x16\x03\x01\x02\x00")]
    assert f.mode == "tls" and f.feed(INVITE) == [Frame("raw", INVITE)]
    g = StreamFramer()
    assert g.feed(b"GET / HTTP/1.1\r\n") == [Frame("raw", b"GET / HTTP/1.1\r\n")] and g.mode == "not-sip"


def test_bad_or_huge_lengths_go_raw() -> None:
    bad = INVITE.replace(b"Content-Length: 201", b"Content-Length: 2x1")
    f = StreamFramer()
    assert f.feed(bad) == [Frame("raw", bad)] and f.mode == "bad-length"
    two = INVITE.replace(b"Content-Length: 201", b"Content-Length: 201\r\nl: 5")
    assert StreamFramer().feed(two)[0].kind == "raw"
    h = StreamFramer()
    endless = b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * (MAX_HEADERS // 6 + 1)
    assert h.feed(endless)[0].kind == "raw" and h.mode == "oversized"


def test_partial_message_is_kept_for_the_end() -> None:
    f = StreamFramer()
    assert f.feed(INVITE[:100]) == []
    assert f.pending() == INVITE[:100]

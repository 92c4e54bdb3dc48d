"""SDP inside multipart bodies, Content-Length forms, hold, and the relay-leg table."""

from __future__ import annotations

import ipaddress

from sipnat46.media import Endpoint, MediaSessions
from sipnat46.plan import AddressPlan, Side, StandIns
from sipnat46.policy import Packet, Rewriter
from sipnat46.sip.message import parse_message

ip = ipaddress.ip_address
PLAN = AddressPlan(
    pbx=(ip("192.0.2.10"),),
    stand_ins=StandIns(static={ip("2001:db8::20"): ip("100.64.46.20")}),
    egress={6: ip("2001:db8:1::1")},
)
SDP = (
    b"v=0\r\no=pbx 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
)
ISUP = b"\x01\x00\x49\x00\x00\x03\x02\x00\x07\x04\x10\x00\x33\x63\x21\x43\x00\x00\x03\r\n192.0.2.10\r\n"


def invite(body: bytes, ctype: bytes, length_name: bytes = b"Content-Length") -> bytes:
    return (
        b"INVITE sip:bob@100.64.46.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n"
        b"From: <sip:a@192.0.2.10>;tag=1\r\nTo: <sip:bob@100.64.46.20>\r\nCall-ID: mp@x\r\nCSeq: 1 INVITE\r\n"
        b"Content-Type: "
        + ctype
        + b"\r\n"
        + length_name
        + b": "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def multipart(kind: bytes) -> tuple[bytes, bytes]:
    boundary = b"unique-boundary-1"
    body = (
        b"--" + boundary + b"\r\nContent-Type: application/sdp\r\n\r\n" + SDP
        + b"\r\n--" + boundary + b"\r\nContent-Type: application/isup; version=itu-t92+\r\n"
        b"Content-Disposition: signal; handling=optional\r\n\r\n" + ISUP
        + b"\r\n--" + boundary + b"--\r\n"
    )  # fmt: skip
    return invite(body, b"multipart/" + kind + b'; boundary="' + boundary + b'"'), boundary


def translate(data: bytes) -> bytes:
    return Rewriter(PLAN).rewrite(data, Packet(Side.INSIDE, ip("100.64.46.20"), ip("192.0.2.10"))).data


def test_sdp_in_multipart_mixed_and_alternative() -> None:
    for kind in (b"mixed", b"alternative"):
        data, boundary = multipart(kind)
        out = translate(data)
        msg = parse_message(out)
        body = msg.body
        assert b"c=IN IP6 2001:db8:1::1\r\n" in body and b"o=pbx 1 1 IN IP6 2001:db8:1::1\r\n" in body
        # the other part and every boundary are byte-identical (the ISUP part names an address too)
        assert ISUP in body and body.count(b"--" + boundary) == 3
        assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
        assert int(msg.header_text("content-length") or -1) == len(body)


def test_compact_content_length_keeps_its_form() -> None:
    out = translate(invite(SDP, b"application/sdp", b"l"))
    msg = parse_message(out)
    assert b"\r\nl: " in out and b"Content-Length" not in out
    assert int(msg.header_text("content-length") or -1) == len(msg.body)


def test_hold_address_is_kept() -> None:
    held = SDP.replace(b"c=IN IP4 192.0.2.10", b"c=IN IP4 0.0.0.0") + b"a=sendonly\r\n"
    out = translate(invite(held, b"application/sdp"))
    assert b"c=IN IP4 0.0.0.0\r\n" in out and b"a=sendonly" in out


def test_relay_legs_pairs_and_release() -> None:
    media = MediaSessions(30000, 30009)
    addrs = {Side.INSIDE: ip("192.0.2.1"), Side.OUTSIDE: ip("2001:db8:1::1")}
    leg = media.anchor("c1", 0, Side.INSIDE, Endpoint(ip("192.0.2.10"), 4000), addrs)
    assert leg.faces is Side.OUTSIDE and leg.port % 2 == 0 and leg.rtcp_port == leg.port + 1
    again = media.anchor("c1", 0, Side.OUTSIDE, Endpoint(ip("2001:db8::20"), 6000), addrs)
    assert again.faces is Side.INSIDE and media.active_legs == 2
    # the outside-facing leg stands in for the PBX, the inside-facing one for the peer
    assert media.represents(ip("2001:db8:1::1"), leg.port) == Endpoint(ip("192.0.2.10"), 4000)
    assert media.represents(ip("192.0.2.1"), again.port) == Endpoint(ip("2001:db8::20"), 6000)
    assert media.release("c1") == 2 and media.active_legs == 0
    for i in range(2):  # 5 pairs in the range: two streams take four; a third stream fails
        media.anchor(f"x{i}", 0, Side.INSIDE, Endpoint(ip("192.0.2.10"), 4000), addrs)
    try:
        media.anchor("x9", 0, Side.INSIDE, Endpoint(ip("192.0.2.10"), 4000), addrs)
    except Exception as exc:  # PortsExhausted
        assert "all in use" in str(exc)
    else:
        raise AssertionError("the range should be exhausted")


def test_call_tracker_ends_calls_and_ignores_late_retransmissions() -> None:
    from sipnat46.dialogs import CallTracker

    def msg(first: bytes, cseq: bytes) -> object:
        return parse_message(first + b"\r\nCall-ID: c1\r\nCSeq: " + cseq + b"\r\nContent-Length: 0\r\n\r\n")

    t = CallTracker()
    assert not t.observe(msg(b"INVITE sip:a@b SIP/2.0", b"1 INVITE"), None, 0.0)  # type: ignore[arg-type]
    assert not t.observe(msg(b"SIP/2.0 200 OK", b"1 INVITE"), ip("100.64.46.9"), 1.0)  # type: ignore[arg-type]
    assert t.stand_ins_in_use() == {ip("100.64.46.9")}
    assert not t.observe(msg(b"SIP/2.0 488 Not Here", b"2 INVITE"), None, 2.0)  # type: ignore[arg-type]  # failed re-INVITE
    assert t.observe(msg(b"BYE sip:a@b SIP/2.0", b"3 BYE"), None, 3.0)  # type: ignore[arg-type]
    assert t.stand_ins_in_use() == frozenset()
    assert t.observe(msg(b"SIP/2.0 200 OK", b"1 INVITE"), None, 4.0)  # type: ignore[arg-type]  # late retransmission
    assert not t.observe(msg(b"SIP/2.0 200 OK", b"1 INVITE"), None, 100.0)  # type: ignore[arg-type]  # long after
    t2 = CallTracker()
    assert t2.observe(msg(b"SIP/2.0 486 Busy Here", b"1 INVITE"), None, 0.0)  # type: ignore[arg-type]  # never answered


def test_route_cache_answers_stale_entries_and_refreshes_them_apart() -> None:
    from sipnat46.routes import RouteCache

    now = [0.0]
    answers = {ip("2001:db8::9"): ip("2001:db8::1")}
    calls: list[object] = []

    def lookup(dst):  # type: ignore[no-untyped-def]
        calls.append(dst)
        return answers.get(dst)

    cache = RouteCache(lookup, ttl=5.0, clock=lambda: now[0])
    assert cache(ip("2001:db8::9")) == ip("2001:db8::1") and len(calls) == 1
    now[0] = 10.0
    answers[ip("2001:db8::9")] = ip("2001:db8::2")  # the route changed
    assert cache(ip("2001:db8::9")) == ip("2001:db8::1") and len(calls) == 1  # no lookup in the way
    assert cache.refresh_stale() == 1
    assert cache(ip("2001:db8::9")) == ip("2001:db8::2") and len(calls) == 2
    assert cache.refresh_stale() == 0


def test_dynamic_stand_ins_are_handed_out_round_robin() -> None:
    st = StandIns(ipaddress.ip_network("100.64.46.0/29"), {ip("2001:db8::5"): ip("100.64.46.2")})
    got = [st.stand_in_for(ip(f"2001:db8:{n}::1"), 0.0) for n in range(1, 6)]
    # hosts .1-.6, .2 is static: five dynamic ones, then the pool is empty
    assert got == [
        ip("100.64.46.1"),
        ip("100.64.46.3"),
        ip("100.64.46.4"),
        ip("100.64.46.5"),
        ip("100.64.46.6"),
    ]
    assert st.stand_in_for(ip("2001:db8:9::1"), 0.0) is None and st.counters.refused_pool_empty == 1
    assert st.expire(1000.0) == 5
    assert st.stand_in_for(ip("2001:db8:9::1"), 1001.0) == ip("100.64.46.1")  # wrapped around

"""Named peers (sans-IO): RFC 3263 ordering, target choice per dialog, failover by timer and
by ICMP, and the rewrite each target's family calls for, driven through the inline engine."""

from __future__ import annotations

import ipaddress

from sipnat46.failover import Failover, NamedPeer, Target
from sipnat46.inline import HOOK_FORWARD, Action, InlineEngine
from sipnat46.media import MediaSessions
from sipnat46.plan import AddressPlan, StandIns
from sipnat46.policy import Rewriter
from sipnat46.rfc3263 import Naptr, Srv, order_srv, order_targets, srv_names
from sipnat46.sip.message import parse_message
from tests.conftest import ROOT
from tests.unit.test_packet_inline import build_udp

ip = ipaddress.ip_address
STAND_IN = ip("100.64.46.30")
PBX = ip("192.0.2.10")
V6 = Target(ip("2001:db8:1::20"), 5060)
V4 = Target(ip("198.51.100.20"), 5060)
INVITE = (ROOT / "examples" / "invite.sip").read_bytes().replace(b"100.64.46.20", b"100.64.46.30")


def response(status: bytes, to: bytes, contact: bytes, sdp_ip: bytes, fam: bytes) -> bytes:
    sdp = b"v=0\r\no=- 1 1 IN IP" + fam + b" " + sdp_ip + b"\r\ns=-\r\nc=IN IP" + fam + b" " + sdp_ip
    sdp += b"\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"
    head = (
        b"SIP/2.0 " + status + b"\r\nVia: SIP/2.0/UDP " + to + b";branch=z9hG4bK-1-0;rport\r\n"
        b"From: <sip:alice@x>;tag=a1\r\nTo: <sip:bob@x>;tag=b1\r\nCall-ID: 1-demo@192.0.2.10\r\n"
        b"CSeq: 1 INVITE\r\nContact: <sip:bob@" + contact + b":5060>\r\nContent-Type: application/sdp\r\n"
    )
    return head + b"Content-Length: " + str(len(sdp)).encode() + b"\r\n\r\n" + sdp


def without_call_id(data: bytes) -> bytes:
    """The Call-ID is opaque (it may hold any literal); every other field is checked."""
    return b"\r\n".join(line for line in data.split(b"\r\n") if not line.startswith(b"Call-ID"))


def engine(targets: tuple[Target, ...] = (V6, V4)) -> tuple[InlineEngine, Failover]:
    peer = NamedPeer("carrier", "sip.carrier.example", STAND_IN)
    fo = Failover([peer], failover_after=2.0, avoid_for=60.0)
    fo.update("carrier", targets, 300.0, 0.0)
    plan = AddressPlan(
        (PBX,),
        StandIns(ipaddress.IPv4Network("100.64.46.0/24"), reserved=frozenset({STAND_IN})),
        egress={6: ip("2001:db8:1::1")},
    )
    rw = Rewriter(plan, media=MediaSessions(30000, 30999), relay_inside=ip("192.0.2.1"), failover=fo)
    return InlineEngine(rw, (5060,)), fo


def send_invite(eng: InlineEngine, now: float = 0.0):  # type: ignore[no-untyped-def]
    v = eng.handle(build_udp(PBX, STAND_IN, 5060, 5060, INVITE), HOOK_FORWARD, now)
    assert v.action is Action.TRANSLATE and v.translated is not None
    return v.translated


def test_srv_names_and_order() -> None:
    naptrs = [
        Naptr(20, 10, "S", "SIP+D2T", "_sip._tcp.carrier.example."),
        Naptr(10, 10, "S", "SIP+D2U", "_sip._udp.carrier.example."),
        Naptr(30, 10, "U", "E2U+sip", "!^.*$!sip:x@y!"),
    ]
    assert srv_names(naptrs) == ["_sip._udp.carrier.example."]
    srvs = order_srv(
        [Srv(20, 0, 5060, "c."), Srv(10, 10, 5060, "b."), Srv(10, 50, 5070, "a."), Srv(0, 0, 0, ".")]
    )
    assert [s.target for s in srvs] == ["a.", "b.", "c."]


def test_targets_prefer_a_family_within_a_priority_only() -> None:
    a, b, c = Srv(10, 50, 5060, "v4."), Srv(10, 10, 5062, "v6."), Srv(20, 0, 5060, "late.")
    hosts = [(a, [ip("198.51.100.20")]), (b, [ip("2001:db8:1::20")]), (c, [ip("2001:db8:9::9")])]
    assert order_targets(hosts, 6) == (
        Target(ip("2001:db8:1::20"), 5062),
        Target(ip("198.51.100.20"), 5060),
        Target(ip("2001:db8:9::9"), 5060),
    )
    assert order_targets(hosts, 4)[0] == Target(ip("198.51.100.20"), 5060)


def test_ipv6_target_is_translated_and_relayed() -> None:
    eng, _ = engine()
    t = send_invite(eng)
    assert (t.src, t.dst, t.dport) == (ip("2001:db8:1::1"), V6.address, 5060)
    msg = parse_message(t.payload)
    assert msg.data.startswith(b"INVITE sip:bob@[2001:db8:1::20]:5060 SIP/2.0")
    assert b"192.0.2.10" not in without_call_id(t.payload) and b"c=IN IP6 2001:db8:1::1" in t.payload


def test_no_answer_fails_over_to_ipv4_with_pbx_addresses_and_no_relay() -> None:
    eng, fo = engine()
    send_invite(eng, 0.0)
    assert fo.due(1.9) == []
    again = send_invite(eng, 0.5)  # the PBX's retransmission still goes to the IPv6 target
    assert again.dst == V6.address
    (moved,) = fo.due(2.1)
    assert moved.target == V4 and moved.tried == (V6,)
    out = eng.resend(moved, 2.1)
    assert out is not None and (out.src, out.dst) == (PBX, V4.address)
    assert out.payload.startswith(b"INVITE sip:bob@198.51.100.20:5060 SIP/2.0")
    assert b"2001:db8" not in out.payload and b"c=IN IP4 192.0.2.10" in out.payload
    assert eng.rewriter.media is not None and eng.rewriter.media.active_legs == 0  # relay legs freed
    assert send_invite(eng, 3.5).dst == V4.address  # later retransmissions follow
    # The IPv4 target answers: the PBX sees the stand-in in SIP, the target's own SDP.
    ok = response(b"200 OK", b"192.0.2.10:5060", b"198.51.100.20", b"198.51.100.20", b"4")
    v = eng.handle(build_udp(V4.address, PBX, 5060, 5060, ok), HOOK_FORWARD, 3.6)
    assert v.action is Action.TRANSLATE and v.translated is not None
    assert (v.translated.src, v.translated.dst) == (STAND_IN, PBX)
    assert b"Contact: <sip:bob@100.64.46.30:5060>" in v.translated.payload
    assert b"c=IN IP4 198.51.100.20" in v.translated.payload
    assert fo.next_deadline() is None
    snap = fo.snapshot(3.6)["peers"]["carrier"]  # type: ignore[index]
    assert snap["in_use"] == "198.51.100.20:5060"
    assert [t["failures"] for t in snap["targets"]] == [1, 0]


def test_a_new_call_avoids_the_failed_target_until_the_avoid_time_ends() -> None:
    eng, fo = engine()
    send_invite(eng, 0.0)
    eng.resend(fo.due(2.5)[0], 2.5)
    other = INVITE.replace(b"1-demo@", b"2-demo@").replace(b"z9hG4bK-1-0", b"z9hG4bK-2-0")
    v = eng.handle(build_udp(PBX, STAND_IN, 5060, 5060, other), HOOK_FORWARD, 10.0)
    assert v.translated is not None and v.translated.dst == V4.address
    third = other.replace(b"2-demo@", b"3-demo@")
    v = eng.handle(build_udp(PBX, STAND_IN, 5060, 5060, third), HOOK_FORWARD, 70.0)
    assert v.translated is not None and v.translated.dst == V6.address


def test_icmp_unreachable_fails_over_at_once() -> None:
    eng, fo = engine()
    send_invite(eng, 0.0)
    (moved,) = fo.unreachable(V6.address, 5060, "ICMPv6 type 1 code 4", 0.01)
    assert moved.target == V4 and fo.counters.unreachable == 1
    assert fo.unreachable(ip("2001:db8:99::1"), 5060, "x", 0.02) == []  # not a target of ours


def test_an_answer_stops_failover_and_the_dialog_sticks() -> None:
    eng, fo = engine()
    send_invite(eng, 0.0)
    trying = response(b"100 Trying", b"[2001:db8:1::1]:5060", b"[2001:db8:1::20]", b"2001:db8:1::20", b"6")
    v = eng.handle(build_udp(V6.address, ip("2001:db8:1::1"), 5060, 5060, trying), HOOK_FORWARD, 0.1)
    assert v.translated is not None and v.translated.src == STAND_IN
    assert b"Contact: <sip:bob@100.64.46.30:5060>" in v.translated.payload
    assert fo.due(5.0) == []
    fo.unreachable(V6.address, 5060, "later", 6.0)  # the target fails for others...
    bye = INVITE.replace(b"INVITE sip", b"BYE sip").replace(b"1 INVITE", b"2 BYE")
    v = eng.handle(build_udp(PBX, STAND_IN, 5060, 5060, bye), HOOK_FORWARD, 7.0)
    assert v.translated is not None and v.translated.dst == V6.address  # ...not for this dialog


def test_every_target_failing_is_left_to_the_pbx() -> None:
    eng, fo = engine((V6,))
    send_invite(eng, 0.0)
    assert fo.due(3.0) == [] and fo.counters.exhausted == 1


def test_unresolved_peer_passes_the_packet_and_says_why() -> None:
    eng, _ = engine(())
    v = eng.handle(build_udp(PBX, STAND_IN, 5060, 5060, INVITE), HOOK_FORWARD, 0.0)
    assert v.action is Action.ACCEPT and eng.counters.refused == 1
    assert any("carrier" in r for r in eng.refusals)

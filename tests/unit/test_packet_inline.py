"""Packet views and checksums (checked against scapy), and the verdicts of the inline engine."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment

from sipnat46.inline import HOOK_FORWARD, Action, InlineEngine
from sipnat46.packet import PacketError, checksum, parse_datagram, replace_payload
from sipnat46.plan import AddressPlan, StandIns
from sipnat46.policy import Rewriter
from tests.conftest import ROOT

ip = ipaddress.ip_address
INVITE = (ROOT / "examples" / "invite.sip").read_bytes()


def build_udp(src: object, dst: object, sport: int, dport: int, payload: bytes) -> bytes:
    """A whole IP/UDP packet, built by scapy (lengths and checksums its own)."""
    layer = IPv6 if ":" in str(src) else IP
    return bytes(layer(src=str(src), dst=str(dst)) / UDP(sport=sport, dport=dport) / payload)


def scapy_ok(raw: bytes) -> None:
    """scapy recomputes lengths and checksums from scratch: they must agree with ours."""
    pkt = IPv6(raw) if raw[0] >> 4 == 6 else IP(raw)
    fields = {"udp": pkt[UDP].chksum, "len": pkt[UDP].len}
    if pkt.version == 4:
        fields["ip"] = pkt[IP].chksum
        del pkt[IP].chksum
    del pkt[UDP].chksum
    again = IPv6(bytes(pkt)) if pkt.version == 6 else IP(bytes(pkt))
    assert again[UDP].chksum == fields["udp"] and again[UDP].len == fields["len"]
    if pkt.version == 4:
        assert again[IP].chksum == fields["ip"]


@pytest.mark.parametrize(("src", "dst"), [("192.0.2.10", "198.51.100.7"), ("2001:db8::1", "2001:db8::2")])
def test_replace_payload_checksums(src: str, dst: str) -> None:
    raw = build_udp(ip(src), ip(dst), 5060, 5070, b"hello")
    scapy_ok(raw)
    d = parse_datagram(raw)
    assert (d.sport, d.dport, raw[d.payload_offset : d.end]) == (5060, 5070, b"hello")
    bigger = replace_payload(raw, d, INVITE)
    scapy_ok(bigger)
    assert parse_datagram(bigger).end - parse_datagram(bigger).payload_offset == len(INVITE)


def rfc1071(data: bytes, initial: int = 0) -> int:
    """The textbook word loop the fast checksum must agree with."""
    if len(data) % 2:
        data += b"\0"
    total = initial
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


@given(st.binary(max_size=300), st.integers(0, 0xFFFF))
def test_checksum_agrees_with_the_word_loop(data: bytes, initial: int) -> None:
    assert checksum(data, initial) == rfc1071(data, initial)


@given(
    st.sampled_from([("192.0.2.10", "198.51.100.7"), ("2001:db8::1", "2001:db8:ffff::2")]),
    st.integers(1, 65535),
    st.binary(max_size=200),
    st.binary(min_size=1, max_size=600),
)
def test_replace_payload_checksums_any_payload(pair, sport: int, old: bytes, new: bytes) -> None:  # type: ignore[no-untyped-def]
    raw = build_udp(ip(pair[0]), ip(pair[1]), sport, 5060, old)
    scapy_ok(replace_payload(raw, parse_datagram(raw), new))


def test_ip_options_are_kept() -> None:
    raw = bytes(
        IP(src="192.0.2.10", dst="198.51.100.7", options=b"\x01\x01\x01\x00")
        / UDP(sport=5060, dport=5060)
        / b"x"
    )
    d = parse_datagram(raw)
    assert d.l4_offset == 24
    out = replace_payload(raw, d, b"longer payload")
    assert out[20:24] == b"\x01\x01\x01\x00"
    scapy_ok(out)


def test_truncated_fragment_and_short_packets_are_refused() -> None:
    raw = build_udp(ip("192.0.2.10"), ip("198.51.100.7"), 5060, 5060, b"x" * 100)
    with pytest.raises(PacketError, match="truncated"):
        parse_datagram(raw[:60])
    frag = bytes(IP(src="192.0.2.10", dst="198.51.100.7", flags="MF") / UDP(sport=5060, dport=5060) / b"x")
    with pytest.raises(PacketError, match="fragment"):
        parse_datagram(frag)
    frag6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(m=1) / UDP() / b"x")
    with pytest.raises(PacketError, match="fragment"):
        parse_datagram(frag6)
    with pytest.raises(PacketError):
        parse_datagram(b"\x45\x00")


PLAN = AddressPlan(
    pbx=(ip("192.0.2.10"),),
    stand_ins=StandIns(static={ip("2001:db8:1::20"): ip("100.64.46.20")}),
    egress={6: ip("2001:db8:1::1")},
)


def engine() -> InlineEngine:
    return InlineEngine(Rewriter(PLAN), (5060,))


def test_engine_translates_a_pbx_invite_to_the_stand_in() -> None:
    e = engine()
    v = e.handle(build_udp(ip("192.0.2.10"), ip("100.64.46.20"), 5060, 5060, INVITE), HOOK_FORWARD, 1.0)
    assert v.action is Action.TRANSLATE and v.translated is not None
    t = v.translated
    assert (t.src, t.dst, t.sport, t.dport) == (ip("2001:db8:1::1"), ip("2001:db8:1::20"), 5060, 5060)
    assert t.payload.startswith(b"INVITE sip:bob@[2001:db8:1::20]:5060 SIP/2.0")
    assert e.counters.translated == 1


def test_engine_accepts_and_counts_what_it_cannot_use() -> None:
    e = engine()
    garbage = build_udp(ip("192.0.2.10"), ip("198.51.100.7"), 5060, 5060, b"\x00\xffnot sip")
    assert e.handle(garbage, HOOK_FORWARD, 1.0).action is Action.ACCEPT
    full = build_udp(ip("192.0.2.10"), ip("198.51.100.7"), 5060, 5060, INVITE)
    assert e.handle(full[:200], HOOK_FORWARD, 1.0).action is Action.ACCEPT  # as the queue truncates
    tcp = bytes(IP(src="192.0.2.10", dst="198.51.100.7") / TCP(sport=5060, dport=5060) / b"INVITE")
    assert e.handle(tcp, HOOK_FORWARD, 1.0).action is Action.ACCEPT
    keepalive = build_udp(ip("192.0.2.10"), ip("198.51.100.7"), 5060, 5060, b"\r\n\r\n")
    assert e.handle(keepalive, HOOK_FORWARD, 1.0).action is Action.ACCEPT
    c = e.counters
    assert (c.unparsed, c.truncated, c.not_udp, c.errors) == (1, 1, 1, 0)


def test_engine_fixup_rewrites_in_place() -> None:
    e = engine()
    plain6 = INVITE.replace(b"100.64.46.20", b"[2001:db8:9::9]")
    raw = build_udp(ip("2001:db8:1::1"), ip("2001:db8:9::9"), 5060, 5060, plain6)
    v = e.handle(raw, HOOK_FORWARD, 1.0)
    # the packet comes from 2001:db8:1::1, which is not the PBX: it came from outside, unchanged
    assert v.action is Action.ACCEPT
    pbx6 = AddressPlan(pbx=(ip("192.0.2.10"), ip("2001:db8:5::10")))
    e6 = InlineEngine(Rewriter(pbx6), (5060,))
    raw = build_udp(ip("2001:db8:5::10"), ip("2001:db8:9::9"), 5060, 5060, plain6)
    v = e6.handle(raw, HOOK_FORWARD, 1.0)
    assert v.action is Action.REWRITE and v.packet is not None
    scapy_ok(v.packet)
    payload = bytes(IPv6(v.packet)[UDP].payload)
    assert b"192.0.2.10:" not in payload and b"c=IN IP6 2001:db8:5::10" in payload


def test_engine_refuses_when_relay_ports_run_out() -> None:
    from sipnat46.media import MediaSessions

    e = InlineEngine(Rewriter(PLAN, media=MediaSessions(30000, 30003), relay_inside=ip("192.0.2.1")), (5060,))
    for n in range(2):  # the range holds one stream (two legs); the second call finds it full
        invite = INVITE.replace(b"1-demo@", f"{n}-demo@".encode())
        v = e.handle(build_udp(ip("192.0.2.10"), ip("100.64.46.20"), 5060, 5060, invite), HOOK_FORWARD, 1.0)
    assert v.action is Action.ACCEPT and e.counters.refused == 1 and e.counters.errors == 0

"""DNS46 (sans-IO): which queries are answered with stand-ins, which pass through unchanged."""

from __future__ import annotations

import ipaddress

import dns.message
import dns.name
import dns.rcode
import dns.rrset

from sipnat46.dns46 import Dns46
from sipnat46.plan import StandIns

CARRIER = dns.name.from_text("carrier.example")
STAND_IN = ipaddress.IPv4Address("100.64.46.30")


def core(ttl: int = 60) -> Dns46:
    pool = StandIns(ipaddress.IPv4Network("100.64.46.0/24"), reserved=frozenset({STAND_IN}), idle_timeout=300)
    return Dns46({CARRIER: STAND_IN}, pool, ttl)


def q(name: str, rdtype: str) -> dns.message.Message:
    return dns.message.make_query(name, rdtype)


def upstream_answer(query: dns.message.Message, *records: str, rcode: int = 0) -> bytes:
    r = dns.message.make_response(query)
    r.set_rcode(rcode)
    for rec in records:
        r.answer.append(dns.rrset.from_text(*rec.split(" ", 4)))  # type: ignore[arg-type]
    return r.to_wire()


def test_named_peer_a_and_srv_are_answered_with_the_stand_in() -> None:
    d = core(ttl=600)
    query = q("carrier.example", "A")
    wire, ask = d.query(query.to_wire(), 0.0)
    assert ask is None and wire is not None
    r = dns.message.from_wire(wire)
    assert r.id == query.id and r.answer[0].to_text() == "carrier.example. 150 IN A 100.64.46.30"  # half idle
    wire, _ = d.query(q("_sip._udp.carrier.example", "SRV").to_wire(), 0.0)
    r = dns.message.from_wire(wire)  # type: ignore[arg-type]
    assert r.answer[0][0].target == CARRIER and r.additional[0][0].address == str(STAND_IN)


def test_other_queries_go_upstream_and_come_back_unchanged() -> None:
    d = core()
    for name, rdtype in (("www.example", "A"), ("carrier.example", "NAPTR"), ("carrier.example", "AAAA")):
        query = q(name, rdtype)
        wire, ask = d.query(query.to_wire(), 0.0)
        assert wire is None and ask is not None and ask.wire == query.to_wire()
        back = upstream_answer(
            query, f"{name}. 30 IN A 203.0.113.80" if rdtype == "A" else f"{name}. 30 IN TXT x"
        )
        assert d.upstream(ask, back, 0.0) == (back, None)


def test_aaaa_only_sip_name_gets_a_dynamic_stand_in_with_a_short_ttl() -> None:
    d = core(ttl=60)
    srv_q = q("_sip._udp.v6.example", "SRV")
    _, ask = d.query(srv_q.to_wire(), 0.0)
    d.upstream(ask, upstream_answer(srv_q, "_sip._udp.v6.example. 300 IN SRV 0 0 5060 h.v6.example."), 0.0)  # type: ignore[arg-type]
    a_q = q("h.v6.example", "A")
    _, ask = d.query(a_q.to_wire(), 1.0)
    assert ask is not None and ask.stage == "a"
    empty = upstream_answer(a_q)
    wire, ask2 = d.upstream(ask, empty, 1.0)
    assert wire is None and ask2 is not None and ask2.stage == "aaaa"
    aaaa = upstream_answer(dns.message.from_wire(ask2.wire), "h.v6.example. 20 IN AAAA 2001:db8:3::30")
    wire, _ = d.upstream(ask2, aaaa, 1.0)
    r = dns.message.from_wire(wire)  # type: ignore[arg-type]
    assert r.id == a_q.id and r.answer[0].ttl == 20
    stand_in = ipaddress.IPv4Address(r.answer[0][0].address)
    assert d.stand_ins.ipv6_for(stand_in) == ipaddress.IPv6Address("2001:db8:3::30")
    # A name that is not a SIP name is never synthesised.
    _, ask = d.query(q("h.other.example", "A").to_wire(), 1.0)
    assert ask is not None and ask.stage == "plain"


def test_a_sip_name_with_a_records_is_passed_unchanged() -> None:
    d = core()
    d.learned[dns.name.from_text("h.v6.example")] = None
    a_q = q("h.v6.example", "A")
    _, ask = d.query(a_q.to_wire(), 0.0)
    back = upstream_answer(a_q, "h.v6.example. 30 IN A 198.51.100.7")
    assert d.upstream(ask, back, 0.0) == (back, None)  # type: ignore[arg-type]


def test_garbage_is_counted_and_passed_to_the_upstream_as_it_is() -> None:
    d = core()
    assert d.query(b"\x00\x01garbage", 0.0) == (None, None)  # shorter than a DNS header
    junk = b"\x12\x34" + b"\xff" * 30
    wire, ask = d.query(junk, 0.0)
    assert wire is None and ask is not None and ask.wire == junk and ask.client_id == 0x1234
    assert d.upstream(ask, b"\x12\x34whatever", 0.0) == (b"\x12\x34whatever", None)
    assert d.counters.malformed == 2

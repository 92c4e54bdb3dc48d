"""RFC 5118 IPv6 torture messages: hosts, ports and Via parameters come out right."""

from __future__ import annotations

import ipaddress

import pytest

from sipnat46.errors import SipParseError
from sipnat46.plan import AddressPlan, Side
from sipnat46.policy import Packet, Rewriter
from sipnat46.sdp import parse_sdp
from sipnat46.sip.body import sdp_spans
from sipnat46.sip.message import parse_message
from sipnat46.sip.uri import parse_uri
from sipnat46.sip.via import parse_via_values
from tests.conftest import RFC5118

ip = ipaddress.ip_address


def load(name: str) -> bytes:
    return (RFC5118 / f"{name}.dat").read_bytes()


def ruri(name: str):  # type: ignore[no-untyped-def]
    msg = parse_message(load(name))
    return parse_uri(msg.data, msg.uri_start, msg.uri_end).host


def vias(name: str):  # type: ignore[no-untyped-def]
    msg = parse_message(load(name))
    return [v for h in msg.fields("via") for v in parse_via_values(msg.data, h.value_start, h.value_end)]


def test_port_unambiguous_is_host_plus_port() -> None:
    host = ruri("port-unambiguous")
    assert host.address == ip("2001:db8::10") and host.port == 5070


def test_port_ambiguous_is_one_host() -> None:
    host = ruri("port-ambiguous")
    assert host.address == ip("2001:db8::10:5070") and host.port is None


def test_ipv6_good() -> None:
    assert ruri("ipv6-good").address == ip("2001:db8::10")


def test_ipv6_bad_is_rejected() -> None:
    with pytest.raises(SipParseError):
        ruri("ipv6-bad")
    plan = AddressPlan(pbx=(ip("192.0.2.10"),))
    with pytest.raises(SipParseError):
        Rewriter(plan).rewrite(load("ipv6-bad"), Packet(Side.OUTSIDE, ip("2001:db8::10")))


@pytest.mark.parametrize("name", ["via-received-param-with-delim", "via-received-param-no-delim"])
def test_via_received_ipv6(name: str) -> None:
    top = vias(name)[0]
    assert top.sent_by.address == ip("2001:db8::9:1")
    assert top.params["received"].value.address == ip("2001:db8::9:255")
    assert top.branch in ("z9hG4bKas3-111", "z9hG4bKas3")


def test_multiple_addresses_in_headers() -> None:
    v = vias("mult-ip-in-header")
    assert [x.sent_by.address for x in v] == [ip("2001:db8::9:1"), ip("192.0.2.1"), ip("2001:db8::9:255")]
    assert v[0].sent_by.port == 6050
    assert v[2].transport == "TCP"
    assert v[2].params["received"].value.address == ip("192.0.2.200")


def test_ipv4_mapped() -> None:
    v = vias("ipv4-mapped-ipv6")
    assert v[0].sent_by.address == ip("::ffff:192.0.2.10") and v[0].sent_by.port == 19823


def test_three_colons_tolerated_as_a_name() -> None:
    host = ruri("ipv6-bug-abnf-3-colons")
    assert host.text == "2001:db8:::192.0.2.1" and host.address is None


def test_two_colons_is_an_address() -> None:
    assert ruri("ipv6-correct-abnf-2-colons").address == ip("2001:db8::192.0.2.1")


def test_ipv6_in_sdp() -> None:
    msg = parse_message(load("ipv6-in-sdp"))
    (span,) = sdp_spans(msg)
    sd = parse_sdp(msg.data, *span)
    assert sd.connection is not None and sd.connection.address == ip("2001:db8::20")
    assert [m.port.value for m in sd.media] == [6000, 6024]


def test_mult_ip_in_sdp() -> None:
    msg = parse_message(load("mult-ip-in-sdp"))
    (span,) = sdp_spans(msg)
    sd = parse_sdp(msg.data, *span)
    assert sd.connection is None
    assert [m.connection.address for m in sd.media] == [ip("192.0.2.1"), ip("2001:db8::1")]  # type: ignore[union-attr]


@pytest.mark.parametrize("path", sorted(p.stem for p in RFC5118.glob("*.dat") if p.stem != "ipv6-bad"))
def test_all_valid_pass_untouched_when_nothing_matches(path: str) -> None:
    data = load(path)
    plan = AddressPlan(pbx=(ip("203.0.113.77"),))
    out = Rewriter(plan).rewrite(data, Packet(Side.INSIDE, ip("198.51.100.9")))
    assert out.data == data


def test_narrower_host_stop_sets_are_subsets() -> None:
    """parse_host takes the host as the _HOST run: that is only right while every stop set
    passed to it stops no earlier than the run does."""
    from sipnat46.sip import uri, via

    assert via._VIA_STOPS <= uri._HOST_END and uri._PARAM_END <= uri._HOST_END

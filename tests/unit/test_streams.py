"""Where the stream proxy sends a connection, and from which address (sans-IO)."""

from __future__ import annotations

import ipaddress

import pytest

from sipnat46.errors import NoEgressAddress
from sipnat46.failover import Failover, NamedPeer, Target
from sipnat46.plan import AddressPlan, Side, StandIns
from sipnat46.policy import Rewriter
from sipnat46.streams import Upstream, upstream_for

ip = ipaddress.ip_address
PBX, BOX6, PEER6 = ip("192.0.2.10"), ip("2001:db8:1::1"), ip("2001:db8:1::20")


def rewriter(placement: str = "gateway", masquerade: frozenset[int] = frozenset()) -> Rewriter:
    stand_ins = StandIns(ipaddress.IPv4Network("100.64.46.0/24"), {PEER6: ip("100.64.46.20")})  # type: ignore[dict-item]
    plan = AddressPlan((PBX, ip("2001:db8:5::10")), stand_ins, placement, {6: BOX6}, masquerade)
    fo = Failover([NamedPeer("carrier", "carrier.example", ip("100.64.46.30"))])  # type: ignore[arg-type]
    return Rewriter(plan, failover=fo)


def test_pbx_to_a_stand_in_becomes_ipv6_from_the_box() -> None:
    up = upstream_for(rewriter(), Side.INSIDE, PBX, ip("100.64.46.20"), 5060, 0.0)
    assert up == Upstream(PEER6, 5060, BOX6, False, True)


def test_ipv6_peer_to_the_box_reaches_the_pbx_from_its_stand_in() -> None:
    rw = rewriter()
    rw.plan = AddressPlan((PBX,), rw.plan.stand_ins, "gateway", {6: BOX6})
    up = upstream_for(rw, Side.OUTSIDE, PEER6, BOX6, 5060, 0.0)
    assert up == Upstream(PBX, 5060, ip("100.64.46.20"), False, True)
    new_peer = ip("2001:db8:1::99")  # unknown: a dynamic stand-in from the pool
    dyn = upstream_for(rw, Side.OUTSIDE, new_peer, BOX6, 5060, 0.0)
    assert dyn.bind is not None and rw.plan.stand_ins.ipv6_for(dyn.bind) == new_peer


def test_fixup_on_a_gateway_is_transparent_unless_masqueraded() -> None:
    far = ip("2001:db8:3::30")
    assert upstream_for(rewriter(), Side.INSIDE, ip("2001:db8:5::10"), far, 5060, 0.0) == Upstream(
        far, 5060, ip("2001:db8:5::10"), True, False
    )
    masq = upstream_for(
        rewriter(masquerade=frozenset({6})), Side.INSIDE, ip("2001:db8:5::10"), far, 5060, 0.0
    )
    assert masq == Upstream(far, 5060, BOX6, False, False)
    inbound = upstream_for(rewriter(), Side.OUTSIDE, far, ip("2001:db8:5::10"), 5060, 0.0)
    assert inbound == Upstream(ip("2001:db8:5::10"), 5060, far, True, False)


def test_host_placement_lets_the_kernel_pick() -> None:
    rw = rewriter("host")
    far = ip("2001:db8:3::30")
    assert upstream_for(rw, Side.INSIDE, ip("2001:db8:5::10"), far, 5060, 0.0) == Upstream(
        far, 5060, None, False, False
    )


def test_a_peer_by_name_goes_to_its_first_target_and_names_it() -> None:
    rw = rewriter()
    with pytest.raises(NoEgressAddress, match=r"carrier .* no target"):  # not resolved yet
        upstream_for(rw, Side.INSIDE, PBX, ip("100.64.46.30"), 5060, 0.0)
    assert rw.failover is not None
    v6, v4 = Target(PEER6, 5062), Target(ip("198.51.100.20"), 5060)
    rw.failover.update("carrier", (v6, v4), 300.0, 0.0)
    peer = rw.failover.peers["carrier"]
    up = upstream_for(rw, Side.INSIDE, PBX, ip("100.64.46.30"), 5060, 0.0)
    assert up == Upstream(PEER6, 5062, BOX6, False, True, peer, v6)
    assert rw.failover.connect_failed(peer, v6, "ECONNREFUSED", 1.0) == v4
    up = upstream_for(rw, Side.INSIDE, PBX, ip("100.64.46.30"), 5060, 2.0)  # v6 is avoided now
    assert up == Upstream(v4.address, 5060, PBX, True, False, peer, v4)

"""Where a proxied SIP stream connection goes, and from which address (sans-IO).

A TCP connection caught on its way (gateway: TPROXY; host: REDIRECT) is carried through
the stream proxy as two connections. This decides the second one from the first, with the
same plan the datagram path uses: a stand-in's IPv6 peer is reached from the box's IPv6
egress address (translate); an IPv6 peer connecting to the box reaches the IPv4-only PBX
from its stand-in; everything else goes where it was going, from the address it came from
(gateway: transparently, so the far end sees what it would have seen without the box).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import NoEgressAddress, StandInExhausted
from .failover import NamedPeer, Target
from .plan import Side
from .policy import Rewriter
from .sip.uri import IPAddress


@dataclass(frozen=True, slots=True)
class Upstream:
    address: IPAddress
    port: int
    bind: IPAddress | None  # None: the kernel picks the source
    transparent: bool  # bind is not an address of the box (the client's own)
    translated: bool
    peer: NamedPeer | None = None  # a peer by name: the connection fails over across its targets
    target: Target | None = None


def upstream_for(
    rewriter: Rewriter, side: Side, client: IPAddress, dst: IPAddress, dport: int, now: float
) -> Upstream:
    """Raises NoEgressAddress or StandInExhausted when the connection cannot be carried."""
    plan = rewriter.plan
    gateway = plan.placement == "gateway"
    if side is Side.INSIDE:
        named = rewriter.failover.peer_of_stand_in(dst) if rewriter.failover is not None else None
        if named is not None:
            target = named.first_choice(now)
            if target is None:
                why = named.resolve_error or "not resolved yet"
                raise NoEgressAddress(f"peer {named.name} ({named.host}) has no target: {why}")
            return to_target(rewriter, client, named, target)
        target = plan.stand_ins.ipv6_for(dst, now) if dst.version == 4 else None
        if target is not None:
            if not rewriter.ipv6_enabled:
                raise NoEgressAddress(f"cannot reach {target}: IPv6 is disabled on this box")
            return Upstream(target, dport, rewriter.egress_towards(target), False, True)
        if gateway and dst.version not in plan.masquerade:
            return Upstream(dst, dport, client, True, False)
        masq = rewriter.egress_towards(dst) if dst.version in plan.masquerade else None
        return Upstream(dst, dport, masq, False, False)
    if not gateway:
        if plan.has_family(dst.version):  # the PBX on this host, at the address asked for
            return Upstream(dst, dport, None, False, False)
    elif plan.is_pbx_side(dst):
        return Upstream(dst, dport, client, True, False)
    elif (pbx := plan.pbx_address(dst.version)) is not None:
        return Upstream(pbx, dport, client, True, False)  # to the box, which stands for the PBX
    pbx4 = plan.pbx_address(4)
    if dst.version == 6 and pbx4 is not None:
        stand_in = plan.stand_ins.stand_in_for(client, now, source=client)
        if stand_in is None:
            raise StandInExhausted(f"no stand-in for {client}")
        return Upstream(pbx4, dport, stand_in if gateway else None, False, True)
    raise NoEgressAddress(f"no PBX address to carry a connection to {dst} to")


def to_target(rewriter: Rewriter, client: IPAddress, peer: NamedPeer, target: Target) -> Upstream:
    """A connection to one target of a peer by name: IPv6 translated from the box, IPv4 from
    the PBX's own address (transparently, on a gateway that does not masquerade IPv4)."""
    plan = rewriter.plan
    if target.family == 6:
        if not rewriter.ipv6_enabled:
            raise NoEgressAddress(f"cannot reach {target}: IPv6 is disabled on this box")
        return Upstream(
            target.address, target.port, rewriter.egress_towards(target.address), False, True, peer, target
        )
    if plan.placement == "gateway" and 4 not in plan.masquerade:
        return Upstream(target.address, target.port, client, True, False, peer, target)
    masq = rewriter.egress_towards(target.address) if 4 in plan.masquerade else None
    return Upstream(target.address, target.port, masq, False, False, peer, target)

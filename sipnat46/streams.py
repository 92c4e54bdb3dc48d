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


def upstream_for(
    rewriter: Rewriter, side: Side, client: IPAddress, dst: IPAddress, dport: int, now: float
) -> Upstream:
    """Raises NoEgressAddress or StandInExhausted when the connection cannot be carried."""
    plan = rewriter.plan
    gateway = plan.placement == "gateway"
    if side is Side.INSIDE:
        if rewriter.failover is not None and rewriter.failover.peer_of_stand_in(dst) is not None:
            raise NoEgressAddress(f"{dst} is a peer by name: TCP to peers by name is not carried yet")
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

"""RFC 3263 ordering of a SIP server's targets, from records already looked up (sans-IO).

NAPTR gives the SRV names per transport; SRV gives hosts by priority and weight; AAAA and A
give addresses. The ordered list keeps the SRV priorities (the operator's explicit order) and,
within one priority, puts the preferred family first (RFC 6157 section 3: a dual-stack client
tries the other family when the first fails).
"""

from __future__ import annotations

from dataclasses import dataclass

from .failover import Target
from .sip.uri import IPAddress

DEFAULT_PORT = 5060


@dataclass(frozen=True, slots=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


def srv_names(naptrs: list[Naptr], transport: str = "udp") -> list[str]:
    """The SRV names the NAPTR records offer for ``transport``, best first."""
    want = {"udp": "SIP+D2U", "tcp": "SIP+D2T"}[transport]
    chosen = [n for n in naptrs if n.service.upper() == want and n.flags.lower() == "s"]
    chosen.sort(key=lambda n: (n.order, n.preference))
    return [n.replacement for n in chosen]


def order_srv(records: list[Srv]) -> list[Srv]:
    """Lowest priority first; within one, heavier weight first. RFC 2782 picks by weighted
    chance; a fixed order is used here so that failover is predictable and testable."""
    live = [r for r in records if r.target not in (".", "")]
    return sorted(live, key=lambda r: (r.priority, -r.weight, r.target))


def order_targets(hosts: list[tuple[Srv, list[IPAddress]]], prefer: int = 6) -> tuple[Target, ...]:
    """Targets from SRV hosts (already ordered) and their addresses: per priority group, the
    preferred family's addresses first, each family in SRV order; duplicates dropped."""
    out: list[Target] = []
    groups: dict[int, list[tuple[Srv, list[IPAddress]]]] = {}
    for srv, addrs in hosts:
        groups.setdefault(srv.priority, []).append((srv, addrs))
    for priority in sorted(groups):
        for family in (prefer, 10 - prefer):
            for srv, addrs in groups[priority]:
                for a in addrs:
                    t = Target(a, srv.port)
                    if a.version == family and t not in out:
                        out.append(t)
    return tuple(out)

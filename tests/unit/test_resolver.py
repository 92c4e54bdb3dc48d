"""RFC 3263 lookups as resolver.resolve_peer makes them, answered by dnspython's own record
types from a table (the lab tests ask a real dnsmasq; here the corner cases)."""

from __future__ import annotations

import ipaddress

import dns.exception
import dns.message
import dns.resolver
import dns.rrset
import pytest

from sipnat46.failover import Target
from sipnat46.resolver import MIN_TTL, ResolveError, resolve_peer

ip = ipaddress.ip_address


class TableResolver:
    """Answers from a table of zone lines; a name/type listed in ``refuse`` gets REFUSED."""

    def __init__(self, lines: list[str], refuse: set[tuple[str, str]] = frozenset(), timeout: bool = False):
        self.records: dict[tuple[str, str], list[str]] = {}
        for line in lines:
            name, ttl, _, rdtype, rdata = line.split(" ", 4)
            self.records.setdefault((name, rdtype), []).append(f"{ttl} {rdata}")
        self.refuse = refuse
        self.timeout = timeout
        self.asked: list[tuple[str, str]] = []

    def resolve(self, name: str, rdtype: str, raise_on_no_answer: bool = True):  # type: ignore[no-untyped-def]
        self.asked.append((name, rdtype))
        if self.timeout:
            raise dns.exception.Timeout()
        if (name, rdtype) in self.refuse:
            raise dns.resolver.NoNameservers()
        found = self.records.get((name, rdtype))
        if found is None:
            raise dns.resolver.NXDOMAIN()
        ttl = min(int(f.split()[0]) for f in found)
        rrset = dns.rrset.from_text(name, ttl, "IN", rdtype, *[f.split(" ", 1)[1] for f in found])
        return type("Answer", (), {"rrset": rrset})()


ZONE = [
    'carrier.example. 300 IN NAPTR 10 10 "S" "SIP+D2U" "" _sip._udp.carrier.example.',
    "_sip._udp.carrier.example. 120 IN SRV 10 10 5060 sip6.carrier.example.",
    "_sip._udp.carrier.example. 120 IN SRV 10 50 5062 sip4.carrier.example.",
    "sip6.carrier.example. 60 IN AAAA 2001:db8:1::20",
    "sip4.carrier.example. 60 IN A 198.51.100.20",
]


def test_naptr_srv_addresses_ipv6_first_smallest_ttl() -> None:
    res = TableResolver(ZONE, refuse={("sip4.carrier.example.", "AAAA")})
    found = resolve_peer(res, "carrier.example")  # type: ignore[arg-type]
    assert found.targets == (Target(ip("2001:db8:1::20"), 5060), Target(ip("198.51.100.20"), 5062))
    assert found.ttl == 60
    assert res.asked[:2] == [("carrier.example.", "NAPTR"), ("_sip._udp.carrier.example.", "SRV")]


def test_no_naptr_no_srv_falls_back_to_the_name_itself() -> None:
    res = TableResolver(["pbx.example. 1 IN A 198.51.100.9"])
    found = resolve_peer(res, "pbx.example", prefer=4)  # type: ignore[arg-type]
    assert found.targets == (Target(ip("198.51.100.9"), 5060),) and found.ttl == MIN_TTL


def test_nothing_usable_or_no_server_is_a_resolve_error() -> None:
    with pytest.raises(ResolveError, match="no NAPTR, SRV, AAAA or A"):
        resolve_peer(TableResolver([]), "none.example")  # type: ignore[arg-type]
    with pytest.raises(ResolveError, match="NAPTR"):
        resolve_peer(TableResolver(ZONE, timeout=True), "carrier.example")  # type: ignore[arg-type]

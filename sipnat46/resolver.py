"""Resolving named peers with dnspython, in a background thread (I/O shell).

Never in the packet path: the thread posts results on a queue the daemon's loop applies, so
all target state is changed by one thread. Re-resolves when the records' TTL runs out; a
failed lookup keeps the old targets and is retried soon.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import threading
import time
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from .errors import Sipnat46Error
from .failover import Target
from .rfc3263 import DEFAULT_PORT, Naptr, Srv, order_srv, order_targets, srv_names
from .sip.uri import IPAddress

log = logging.getLogger("sipnat46.dns")
MIN_TTL = 5.0  # never re-query more often than this, whatever the zone says
MAX_TTL = 86400.0
RETRY_AFTER = 10.0


class ResolveError(Sipnat46Error):
    """A peer's name gave no usable target."""


@dataclass(frozen=True, slots=True)
class Resolution:
    targets: tuple[Target, ...]
    ttl: float


def make_resolver(
    servers: tuple[IPAddress, ...] = (), port: int = 53, timeout: float = 2.0
) -> dns.resolver.Resolver:
    """A resolver asking ``servers`` (or the system's resolv.conf when none are given)."""
    res = dns.resolver.Resolver(configure=not servers)
    if servers:
        res.nameservers = [str(s) for s in servers]
        res.port = port
    res.lifetime = timeout
    res.timeout = timeout
    return res


class _Lookup:
    """One RFC 3263 resolution: the records, the smallest TTL seen."""

    def __init__(self, res: dns.resolver.Resolver) -> None:
        self.res = res
        self.ttl = MAX_TTL
        self.errors: list[str] = []

    def query(self, name: str, rdtype: str) -> list:  # type: ignore[type-arg]
        try:
            answer = self.res.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return []
        except dns.resolver.NoNameservers as exc:
            # SERVFAIL or REFUSED for one record type (some servers refuse a type they do
            # not hold): the other records may still give targets.
            self.errors.append(f"{rdtype} {name}: {exc}")
            return []
        except dns.exception.Timeout as exc:  # the server is not there: stop asking
            raise ResolveError(f"{rdtype} {name}: {exc}") from None
        if answer.rrset is None:
            return []
        self.ttl = min(self.ttl, float(answer.rrset.ttl))
        return list(answer.rrset)

    def addresses(self, host: str) -> list[IPAddress]:
        out: list[IPAddress] = []
        for rdtype in ("AAAA", "A"):
            out += [ipaddress.ip_address(r.address) for r in self.query(host, rdtype)]
        return out


def resolve_peer(
    res: dns.resolver.Resolver, host: str, prefer: int = 6, transport: str = "udp"
) -> Resolution:
    """RFC 3263 section 4: NAPTR, then SRV (from NAPTR, or _sip._udp.host), then AAAA and A."""
    look = _Lookup(res)
    name = dns.name.from_text(host).to_text()
    naptrs = [
        Naptr(r.order, r.preference, r.flags.decode(), r.service.decode(), r.replacement.to_text())
        for r in look.query(name, "NAPTR")
    ]
    # A domain without NAPTR for this transport is still asked for its SRV (section 4.1).
    names = srv_names(naptrs, transport) or [f"_sip._{transport}.{name}"]
    srvs: list[Srv] = []
    for srv_name in names:
        srvs = [Srv(r.priority, r.weight, r.port, r.target.to_text()) for r in look.query(srv_name, "SRV")]
        if srvs:
            break
    hosts = [(s, look.addresses(s.target)) for s in order_srv(srvs)]
    if not srvs:  # section 4.2: no SRV, the name itself on the default port
        hosts = [(Srv(0, 0, DEFAULT_PORT, name), look.addresses(name))]
    targets = order_targets(hosts, prefer)
    if not targets:
        why = "; ".join(look.errors) or "no NAPTR, SRV, AAAA or A record gives an address"
        raise ResolveError(f"{host}: {why}")
    return Resolution(targets, min(MAX_TTL, max(MIN_TTL, look.ttl)))


class PeerResolver:
    """Re-resolves each named peer when its TTL runs out; results go on ``results``."""

    def __init__(self, res: dns.resolver.Resolver, hosts: dict[str, str], prefer: int = 6) -> None:
        self.res = res
        self.hosts = hosts  # peer name -> DNS name
        self.prefer = prefer
        self.results: queue.SimpleQueue[tuple[str, Resolution | str]] = queue.SimpleQueue()
        self._due = dict.fromkeys(hosts, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sipnat46-dns", daemon=True)

    def resolve_now(self) -> None:
        """Resolve every peer once, in the caller's thread (at start, before calls come)."""
        for name in self.hosts:
            self._resolve(name)

    def _resolve(self, name: str) -> None:
        try:
            found = resolve_peer(self.res, self.hosts[name], self.prefer)
        except (ResolveError, dns.exception.DNSException) as exc:
            log.warning("peer %s: resolving %s failed: %s", name, self.hosts[name], exc)
            self._due[name] = time.monotonic() + RETRY_AFTER
            self.results.put((name, str(exc)))
            return
        self._due[name] = time.monotonic() + found.ttl
        self.results.put((name, found))

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            now = time.monotonic()
            for name, due in list(self._due.items()):
                if due <= now and not self._stop.is_set():
                    self._resolve(name)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

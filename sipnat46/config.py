"""The config file (TOML, read with tomllib) and the address plan built from it.

Every problem is a ConfigError naming the dotted key, e.g. ``inside.pbx[1]: not an IP address``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.name

from .errors import ConfigError
from .failover import NamedPeer
from .plan import AddressPlan, StandIns
from .sip.uri import IPAddress

_SCHEMA: dict[str, set[str] | None] = {
    "": {
        "placement",
        "instance",
        "inside",
        "outside",
        "stand_ins",
        "peers",
        "media",
        "queue",
        "dns",
        "dns46",
        "tcp",
    },
    "inside": {"pbx", "sip_ports"},
    "outside": {"ipv4", "ipv6", "masquerade"},
    "stand_ins": {"pool", "idle_timeout", "per_source_cap", "max_dynamic"},
    "peers": {"name", "ipv6", "host", "stand_in"},
    "media": {"relay", "ports", "inside_ipv4", "timeout", "workers"},
    "queue": {"number", "max_len", "rcvbuf"},
    "dns": {"servers", "port", "prefer", "timeout", "failover_after", "avoid_for"},
    "dns46": {"enabled", "listen", "port", "upstream", "ttl"},
    "tcp": {"enabled", "proxy_port", "tls_ports"},
}


MAX_PORTS = 15  # iptables' multiport match takes at most 15
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*)(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*\.?$")


@dataclass(frozen=True)
class PeerConfig:
    name: str
    ipv6: ipaddress.IPv6Address | None  # a peer at a fixed address...
    stand_in: ipaddress.IPv4Address | None
    host: str | None = None  # ...or one found by name (RFC 3263)


@dataclass
class DnsConfig:
    servers: tuple[IPAddress, ...] = ()  # empty: the system's resolv.conf
    port: int = 53
    prefer: int = 6
    timeout: float = 2.0
    failover_after: float = 2.0  # RFC 3261 Timer A has fired twice (0.5 s, 1.5 s) by then
    avoid_for: float = 60.0


@dataclass
class TcpConfig:
    enabled: bool = True  # SIP over TCP carried through the stream proxy
    proxy_port: int = 15060
    tls_ports: tuple[int, ...] = (5061,)  # carried encrypted, counted, never rewritten


@dataclass
class Dns46Config:
    enabled: bool = False
    listen: IPAddress | None = None
    port: int = 53
    upstream: tuple[IPAddress, ...] = ()  # empty: [dns] servers
    ttl: int = 60


@dataclass
class Config:
    path: Path | None = None
    placement: str = "gateway"
    instance: str = "sipnat46"
    pbx: tuple[IPAddress, ...] = ()
    sip_ports: tuple[int, ...] = (5060,)
    egress: dict[int, IPAddress] = field(default_factory=dict)
    masquerade: frozenset[int] = frozenset()
    pool: ipaddress.IPv4Network | None = None
    idle_timeout: float = 300.0
    per_source_cap: int = 16
    max_dynamic: int | None = None
    peers: tuple[PeerConfig, ...] = ()
    relay: str = "builtin"
    media_ports: tuple[int, int] = (30000, 39999)
    relay_inside: ipaddress.IPv4Address | None = None
    media_timeout: float = 60.0
    relay_workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    queue: int = 46
    queue_max_len: int = 4096
    rcvbuf: int = 8 * 1024 * 1024
    dns: DnsConfig = field(default_factory=DnsConfig)
    dns46: Dns46Config = field(default_factory=Dns46Config)
    tcp: TcpConfig = field(default_factory=TcpConfig)

    def peer_stand_ins(self) -> list[ipaddress.IPv4Address]:
        """Each peer's stand-in, in config order: given, or the next free pool address."""
        out = []
        pool_hosts = iter(self.pool.hosts()) if self.pool is not None else iter(())
        taken = {p.stand_in for p in self.peers if p.stand_in is not None}
        for i, peer in enumerate(self.peers):
            v4 = peer.stand_in
            if v4 is None:
                v4 = next((h for h in pool_hosts if h not in taken), None)
                if v4 is None:
                    raise ConfigError(f"peers[{i}].stand_in", "none given and the pool is exhausted")
                taken.add(v4)
            out.append(v4)
        return out

    def named_peers(self) -> list[NamedPeer]:
        return [
            NamedPeer(p.name, p.host, v4)
            for p, v4 in zip(self.peers, self.peer_stand_ins(), strict=True)
            if p.host is not None
        ]

    def address_plan(self) -> AddressPlan:
        static: dict[ipaddress.IPv6Address, ipaddress.IPv4Address] = {}
        reserved = set()
        for peer, v4 in zip(self.peers, self.peer_stand_ins(), strict=True):
            if peer.ipv6 is not None:
                static[peer.ipv6] = v4
            else:
                reserved.add(v4)
        stand_ins = StandIns(
            self.pool,
            static,
            idle_timeout=self.idle_timeout,
            per_source_cap=self.per_source_cap,
            total_cap=self.max_dynamic,
            reserved=frozenset(reserved),
        )
        return AddressPlan(self.pbx, stand_ins, self.placement, dict(self.egress), self.masquerade)


def _check_keys(table: dict[str, Any], section: str, prefix: str) -> None:
    allowed = _SCHEMA[section]
    assert allowed is not None
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{prefix}{key}", "unknown key")


def _addr(value: Any, key: str, family: int | None = None) -> IPAddress:
    if not isinstance(value, str):
        raise ConfigError(key, "must be a string holding an IP address")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(key, f"{value!r} is not an IP address") from None
    if family is not None and addr.version != family:
        raise ConfigError(key, f"{value} is not an IPv{family} address")
    return addr


def _int(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, "must be a whole number")
    if not low <= value <= high:
        raise ConfigError(key, f"{value} is outside {low}..{high}")
    return value


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(key, "must be a positive number")
    return float(value)


def _table(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(name, "must be a table")
    _check_keys(value, name, f"{name}.")
    return value


def _dns_name(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, "must be a DNS name such as sip.carrier.example")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        raise ConfigError(key, f"{value} is an address: give it as ipv6 = ... instead")
    try:
        name = dns.name.from_text(value)
    except dns.exception.DNSException as exc:
        raise ConfigError(key, f"{value!r} is not a DNS name: {exc}") from None
    if len(name.labels) < 3 or not _HOSTNAME.match(value):  # labels plus the root
        raise ConfigError(key, f"{value!r} is not a host name (letters, digits, -, dots)")
    return value.rstrip(".")


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, "must be true or false")
    return value


def _ports(value: Any, key: str, *, empty: bool = True) -> tuple[int, ...]:
    if not isinstance(value, list) or not (value or empty):
        raise ConfigError(key, "must be a list of ports" if empty else "must be a non-empty list of ports")
    return tuple(_int(v, f"{key}[{i}]", 1, 65535) for i, v in enumerate(value))


def _addr_list(value: Any, key: str) -> tuple[IPAddress, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, "must be a list of IP addresses")
    return tuple(_addr(v, f"{key}[{i}]") for i, v in enumerate(value))


def _dns(t: dict[str, Any]) -> DnsConfig:
    d = DnsConfig()
    if "servers" in t:
        d.servers = _addr_list(t["servers"], "dns.servers")
    if "port" in t:
        d.port = _int(t["port"], "dns.port", 1, 65535)
    if "prefer" in t:
        if t["prefer"] not in ("ipv6", "ipv4"):
            raise ConfigError("dns.prefer", f"{t['prefer']!r} is not one of ipv6, ipv4")
        d.prefer = 6 if t["prefer"] == "ipv6" else 4
    for key in ("timeout", "failover_after", "avoid_for"):
        if key in t:
            setattr(d, key, _number(t[key], f"dns.{key}"))
    return d


def _tcp(t: dict[str, Any], sip_ports: tuple[int, ...]) -> TcpConfig:
    c = TcpConfig()
    if "enabled" in t:
        c.enabled = _bool(t["enabled"], "tcp.enabled")
    if "proxy_port" in t:
        c.proxy_port = _int(t["proxy_port"], "tcp.proxy_port", 1, 65535)
    if c.proxy_port in sip_ports:
        raise ConfigError("tcp.proxy_port", f"{c.proxy_port} is a SIP port: pick a port nothing else uses")
    if "tls_ports" in t:
        c.tls_ports = _ports(t["tls_ports"], "tcp.tls_ports")
    if c.enabled and len({*sip_ports, *c.tls_ports}) > MAX_PORTS:
        raise ConfigError("tcp.tls_ports", f"with inside.sip_ports, at most {MAX_PORTS} ports in all")
    return c


def _dns46(t: dict[str, Any]) -> Dns46Config:
    d = Dns46Config()
    if "enabled" in t:
        d.enabled = _bool(t["enabled"], "dns46.enabled")
    if "listen" in t:
        d.listen = _addr(t["listen"], "dns46.listen")
    if "port" in t:
        d.port = _int(t["port"], "dns46.port", 1, 65535)
    if "upstream" in t:
        d.upstream = _addr_list(t["upstream"], "dns46.upstream")
    if "ttl" in t:
        d.ttl = _int(t["ttl"], "dns46.ttl", 0, 86400)
    if d.enabled and d.listen is None:
        raise ConfigError("dns46.listen", "missing: the inside address the PBX uses as its resolver")
    return d


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError("", f"cannot read config {p}: {exc.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"{p}: not valid TOML: {exc}") from None
    cfg = parse(doc)
    cfg.path = p
    if "instance" not in doc:
        cfg.instance = p.stem
    return cfg


def parse(doc: dict[str, Any]) -> Config:
    _check_keys(doc, "", "")
    cfg = Config()
    placement = doc.get("placement", "gateway")
    if placement not in ("gateway", "host"):
        raise ConfigError("placement", f"{placement!r} is not one of gateway, host")
    cfg.placement = placement
    instance = doc.get("instance", cfg.instance)
    if not isinstance(instance, str) or not instance.replace("-", "").replace("_", "").isalnum():
        raise ConfigError("instance", "must be a name of letters, digits, - and _")
    cfg.instance = instance

    inside = _table(doc, "inside")
    pbx = inside.get("pbx")
    if pbx is None:
        raise ConfigError("inside.pbx", "missing: list the PBX's own addresses")
    if not isinstance(pbx, list) or not pbx:
        raise ConfigError("inside.pbx", "must be a non-empty list of addresses")
    cfg.pbx = tuple(_addr(v, f"inside.pbx[{i}]") for i, v in enumerate(pbx))
    cfg.sip_ports = _ports(inside.get("sip_ports", [5060]), "inside.sip_ports", empty=False)
    if len(set(cfg.sip_ports)) > MAX_PORTS:
        raise ConfigError("inside.sip_ports", f"at most {MAX_PORTS} ports (an iptables multiport match)")

    outside = _table(doc, "outside")
    for fam in (4, 6):
        key = f"ipv{fam}"
        if key in outside:
            cfg.egress[fam] = _addr(outside[key], f"outside.{key}", fam)
    masq = outside.get("masquerade", [])
    if not isinstance(masq, list) or any(m not in ("ipv4", "ipv6") for m in masq):
        raise ConfigError("outside.masquerade", 'must be a list of "ipv4" and/or "ipv6"')
    cfg.masquerade = frozenset(4 if m == "ipv4" else 6 for m in masq)

    stand = _table(doc, "stand_ins")
    if "pool" in stand:
        try:
            pool = ipaddress.ip_network(stand["pool"])
        except (ValueError, TypeError):
            raise ConfigError("stand_ins.pool", f"{stand['pool']!r} is not an IPv4 network") from None
        if pool.version != 4:
            raise ConfigError("stand_ins.pool", "must be an IPv4 network")
        cfg.pool = pool  # type: ignore[assignment]
    if "idle_timeout" in stand:
        cfg.idle_timeout = _number(stand["idle_timeout"], "stand_ins.idle_timeout")
    if "per_source_cap" in stand:
        cfg.per_source_cap = _int(stand["per_source_cap"], "stand_ins.per_source_cap", 1, 1 << 20)
    if "max_dynamic" in stand:
        cfg.max_dynamic = _int(stand["max_dynamic"], "stand_ins.max_dynamic", 0, 1 << 22)

    peers = doc.get("peers", [])
    if not isinstance(peers, list):
        raise ConfigError("peers", "must be an array of tables ([[peers]])")
    out = []
    seen_v4: dict[IPAddress, str] = {}
    for i, peer in enumerate(peers):
        if not isinstance(peer, dict):
            raise ConfigError(f"peers[{i}]", "must be a table")
        _check_keys(peer, "peers", f"peers[{i}].")
        name = peer.get("name", f"peer{i}")
        if ("ipv6" in peer) == ("host" in peer):
            raise ConfigError(f"peers[{i}]", "give either ipv6 (an address) or host (a DNS name)")
        v6 = _addr(peer["ipv6"], f"peers[{i}].ipv6", 6) if "ipv6" in peer else None
        host = _dns_name(peer["host"], f"peers[{i}].host") if "host" in peer else None
        v4 = _addr(peer["stand_in"], f"peers[{i}].stand_in", 4) if "stand_in" in peer else None
        if v4 is not None:
            if v4 in seen_v4:
                raise ConfigError(f"peers[{i}].stand_in", f"{v4} is already the stand-in of {seen_v4[v4]}")
            seen_v4[v4] = name
        out.append(PeerConfig(str(name), v6, v4, host))  # type: ignore[arg-type]
    cfg.peers = tuple(out)
    cfg.dns = _dns(_table(doc, "dns"))
    cfg.dns46 = _dns46(_table(doc, "dns46"))
    cfg.tcp = _tcp(_table(doc, "tcp"), cfg.sip_ports)

    media = _table(doc, "media")
    relay = media.get("relay", "builtin")
    if relay not in ("builtin", "rtpengine", "off"):
        raise ConfigError("media.relay", f"{relay!r} is not one of builtin, rtpengine, off")
    if relay == "rtpengine":
        # The relay sits behind an interface (relay.MediaRelay) for it, but no backend yet.
        raise ConfigError("media.relay", '"rtpengine" is not implemented yet: use "builtin" or "off"')
    cfg.relay = relay
    if "ports" in media:
        rng = media["ports"]
        try:
            lo_s, hi_s = str(rng).split("-")
            lo, hi = int(lo_s), int(hi_s)
        except ValueError:
            raise ConfigError("media.ports", f"{rng!r} is not a range like 30000-39999") from None
        if not 1024 <= lo < hi <= 65535 or hi - lo < 3:
            raise ConfigError("media.ports", f"{rng!r} must lie within 1024-65535 and hold two pairs")
        cfg.media_ports = (lo, hi)
    if "inside_ipv4" in media:
        cfg.relay_inside = _addr(media["inside_ipv4"], "media.inside_ipv4", 4)  # type: ignore[assignment]
    if "timeout" in media:
        cfg.media_timeout = _number(media["timeout"], "media.timeout")
    if "workers" in media:
        cfg.relay_workers = _int(media["workers"], "media.workers", 1, 64)

    queue = _table(doc, "queue")
    if "number" in queue:
        cfg.queue = _int(queue["number"], "queue.number", 0, 65535)
    if "max_len" in queue:
        cfg.queue_max_len = _int(queue["max_len"], "queue.max_len", 16, 1 << 20)
    if "rcvbuf" in queue:
        cfg.rcvbuf = _int(queue["rcvbuf"], "queue.rcvbuf", 65536, 1 << 30)
    return cfg

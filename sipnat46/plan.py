"""The address plan: which addresses are the PBX side, egress per family, stand-ins."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from .sip.uri import IPAddress


class Side(enum.Enum):
    INSIDE = "inside"  # the PBX
    OUTSIDE = "outside"  # trunks, phones, proxies

    # Members are singletons: identity hashing is right, and C-level (Enum's own hashes the
    # name in Python, per packet, in every per-side table).
    __hash__ = object.__hash__

    @property
    def other(self) -> Side:
        return Side.OUTSIDE if self is Side.INSIDE else Side.INSIDE


@dataclass(slots=True)
class DynamicStandIn:
    ipv6: ipaddress.IPv6Address
    source: ipaddress.IPv6Network  # the /64 it was created for, for the per-source cap
    last_used: float


@dataclass
class StandInCounters:
    created: int = 0
    expired: int = 0
    refused_pool_empty: int = 0
    refused_source_cap: int = 0


class StandIns:
    """IPv4 stand-ins for IPv6 peers: static entries plus a pool of dynamic ones.

    Sans-IO: callers pass the time; nothing here reads a clock.
    """

    def __init__(
        self,
        pool: ipaddress.IPv4Network | None = None,
        static: dict[ipaddress.IPv6Address, ipaddress.IPv4Address] | None = None,
        *,
        idle_timeout: float = 300.0,
        per_source_cap: int = 16,
        total_cap: int | None = None,
        reserved: frozenset[ipaddress.IPv4Address] = frozenset(),
    ) -> None:
        self.pool = pool
        self.static_v4 = dict(static or {})
        self.static_v6 = {v4: v6 for v6, v4 in self.static_v4.items()}
        self.idle_timeout = idle_timeout
        self.per_source_cap = per_source_cap
        self.total_cap = total_cap
        self.reserved = reserved  # stand-ins of named peers: never handed out dynamically
        self.counters = StandInCounters()
        self._dyn_v4: dict[ipaddress.IPv6Address, ipaddress.IPv4Address] = {}
        self._dyn: dict[ipaddress.IPv4Address, DynamicStandIn] = {}
        self._per_source: dict[ipaddress.IPv6Network, int] = {}
        self._cursor = 0  # where the next search for a free pool address starts

    def is_stand_in(self, addr: IPAddress) -> bool:
        return addr.version == 4 and (
            addr in self.static_v6
            or addr in self._dyn
            or addr in self.reserved
            or (self.pool is not None and addr in self.pool)
        )

    def ipv6_for(self, stand_in: IPAddress, now: float | None = None) -> ipaddress.IPv6Address | None:
        if stand_in.version != 4:
            return None
        v6 = self.static_v6.get(stand_in)  # type: ignore[call-overload]
        if v6 is not None:
            return v6
        dyn = self._dyn.get(stand_in)  # type: ignore[call-overload]
        if dyn is None:
            return None
        if now is not None:
            dyn.last_used = max(dyn.last_used, now)
        return dyn.ipv6

    def stand_in_for(
        self, ipv6: IPAddress, now: float, *, source: IPAddress | None = None, allocate: bool = True
    ) -> ipaddress.IPv4Address | None:
        """The stand-in of ``ipv6``; a dynamic one is allocated when allowed and possible."""
        if ipv6.version != 6:
            return None
        v4 = self.static_v4.get(ipv6)  # type: ignore[call-overload]
        if v4 is not None:
            return v4
        v4 = self._dyn_v4.get(ipv6)  # type: ignore[call-overload]
        if v4 is not None:
            self._dyn[v4].last_used = max(self._dyn[v4].last_used, now)
            return v4
        if not allocate or self.pool is None:
            return None
        src = source if source is not None and source.version == 6 else ipv6
        net = ipaddress.IPv6Network((int(src) >> 64 << 64, 64))
        if self._per_source.get(net, 0) >= self.per_source_cap:
            self.counters.refused_source_cap += 1
            return None
        if self.total_cap is not None and len(self._dyn) >= self.total_cap:
            self.counters.refused_pool_empty += 1
            return None
        v4 = self._next_free()
        if v4 is None:
            self.counters.refused_pool_empty += 1
            return None
        self._dyn[v4] = DynamicStandIn(ipv6, net, now)  # type: ignore[arg-type]
        self._dyn_v4[ipv6] = v4  # type: ignore[index]
        self._per_source[net] = self._per_source.get(net, 0) + 1
        self.counters.created += 1
        return v4

    def _next_free(self) -> ipaddress.IPv4Address | None:
        """The next free pool address after the last one handed out (round robin), so an
        allocation does not walk past every address already in use."""
        assert self.pool is not None
        first = int(self.pool.network_address) + (1 if self.pool.num_addresses > 2 else 0)
        count = self.pool.num_addresses - (2 if self.pool.num_addresses > 2 else 0)
        for step in range(count):
            offset = (self._cursor + step) % count
            v4 = ipaddress.IPv4Address(first + offset)
            if v4 not in self._dyn and v4 not in self.static_v6 and v4 not in self.reserved:
                self._cursor = offset + 1
                return v4
        return None

    def expire(self, now: float, in_use: frozenset[ipaddress.IPv4Address] = frozenset()) -> int:
        """Release dynamic stand-ins idle for ``idle_timeout``, except those ``in_use``."""
        gone = [
            v4 for v4, d in self._dyn.items() if now - d.last_used >= self.idle_timeout and v4 not in in_use
        ]
        for v4 in gone:
            d = self._dyn.pop(v4)
            del self._dyn_v4[d.ipv6]
            self._per_source[d.source] -= 1
            if not self._per_source[d.source]:
                del self._per_source[d.source]
        self.counters.expired += len(gone)
        return len(gone)

    @property
    def dynamic_count(self) -> int:
        return len(self._dyn)


@dataclass
class AddressPlan:
    """Everything the policy knows about addresses, built from the config."""

    pbx: tuple[IPAddress, ...]
    stand_ins: StandIns = field(default_factory=StandIns)
    placement: str = "gateway"
    egress: dict[int, IPAddress] = field(default_factory=dict)  # explicit [outside] per family
    masquerade: frozenset[int] = frozenset()  # families the box masquerades
    host_addresses: frozenset[IPAddress] = frozenset()  # host placement: this host's own

    def __post_init__(self) -> None:
        self._pbx_set = frozenset(self.pbx)

    def is_pbx_side(self, addr: IPAddress) -> bool:
        return addr in self._pbx_set or addr in self.host_addresses

    def has_family(self, family: int) -> bool:
        """Whether the PBX side has any address of ``family`` (else it needs translation)."""
        return any(a.version == family for a in (*self.pbx, *self.host_addresses))

    def pbx_address(self, family: int) -> IPAddress | None:
        for a in self.pbx:
            if a.version == family:
                return a
        return None

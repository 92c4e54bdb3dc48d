"""Route lookups: which source address the kernel would use towards a destination.

I/O shell (runs ``ip route get``); results are cached briefly so a route change is
picked up within seconds without a lookup per packet.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

from .sip.uri import IPAddress, parse_ip

CACHE_SECONDS = 5.0


def kernel_source_for(dst: IPAddress) -> IPAddress | None:
    try:
        out = subprocess.run(
            ["ip", "-j", f"-{dst.version}", "route", "get", str(dst)],
            capture_output=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    try:
        routes = json.loads(out.stdout or b"[]")
    except ValueError:
        return None
    for route in routes:
        src = parse_ip(str(route.get("prefsrc", "")))
        if src is not None:
            return src
    return None


class RouteCache:
    """Memoises ``lookup`` per destination for ``ttl`` seconds."""

    def __init__(
        self,
        lookup: Callable[[IPAddress], IPAddress | None] = kernel_source_for,
        ttl: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[IPAddress, tuple[IPAddress | None, float]] = {}

    def __call__(self, dst: IPAddress) -> IPAddress | None:
        now = self.clock()
        hit = self._cache.get(dst)
        if hit is not None and hit[1] > now:
            return hit[0]
        src = self.lookup(dst)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[dst] = (src, now + self.ttl)
        return src


def local_addresses() -> frozenset[IPAddress]:
    """This host's own global addresses (host placement: they name the PBX side)."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, timeout=2, check=False)
        links = json.loads(out.stdout or b"[]")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return frozenset()
    found = set()
    for link in links:
        for info in link.get("addr_info", []):
            addr = parse_ip(str(info.get("local", "")))
            if addr is not None and not (addr.is_loopback or addr.is_link_local):
                found.add(addr)
    return frozenset(found)


def ipv6_usable() -> bool:
    """False when the kernel has no IPv6 or it is disabled on every interface."""
    try:
        with open("/proc/sys/net/ipv6/conf/all/disable_ipv6") as fh:
            return fh.read().strip() == "0"
    except OSError:
        return False

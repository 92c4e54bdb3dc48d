"""Route lookups: which source address the kernel would use towards a destination.

I/O shell (runs ``ip route get``); results are cached and refreshed in the background, so a
route change is picked up within seconds without a lookup in the way of a packet.
"""

from __future__ import annotations

import json
import subprocess
import threading
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
    """Memoises ``lookup`` per destination. Only the first packet to a new destination waits
    for a lookup; afterwards a stale entry is still answered at once and refreshed by
    ``refresh_stale`` (the daemon runs it off the packet path), so a route change is picked
    up within ``ttl`` seconds or so without a lookup in the way of a packet."""

    def __init__(
        self,
        lookup: Callable[[IPAddress], IPAddress | None] = kernel_source_for,
        ttl: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        capacity: int = 4096,
    ) -> None:
        self.lookup = lookup
        self.ttl = ttl
        self.clock = clock
        self.capacity = capacity
        self._cache: dict[IPAddress, tuple[IPAddress | None, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, dst: IPAddress) -> IPAddress | None:
        hit = self._cache.get(dst)
        if hit is not None:
            return hit[0]
        src = self.lookup(dst)
        with self._lock:
            if len(self._cache) >= self.capacity:
                self._cache.clear()
            self._cache[dst] = (src, self.clock() + self.ttl)
        return src

    def refresh_stale(self) -> int:
        """Look up again every entry older than ``ttl``; returns how many were refreshed."""
        now = self.clock()
        stale = [dst for dst, (_, expires) in list(self._cache.items()) if expires <= now]
        for dst in stale:
            src = self.lookup(dst)
            with self._lock:
                self._cache[dst] = (src, self.clock() + self.ttl)
        return len(stale)


class RouteRefresher(threading.Thread):
    """Keeps a RouteCache fresh from a thread of its own (lookups run ``ip``, which releases
    the GIL), so the queue loop never waits for one after the first packet."""

    def __init__(self, cache: RouteCache, every: float = 1.0) -> None:
        super().__init__(name="sipnat46-routes", daemon=True)
        self.cache = cache
        self.every = every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            self.cache.refresh_stale()

    def stop(self) -> None:
        self.stopped.set()


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

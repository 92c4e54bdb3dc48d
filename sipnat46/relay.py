"""The built-in RTP/RTCP relay (I/O shell), in a process of its own so media and SIP each
get a core. The SIP side drives it through ``MediaRelay`` (the interface an rtpengine
backend can implement too): ``update`` a stream's legs, ``close`` a call, read ``events``.

Each stream has a leg facing each side: an RTP socket on an even port and an RTCP socket on
the next one. A packet is accepted on a leg only from an address that side's SDP named
(strict source, as rtpengine's strict modes), the source port is latched, and the packet is
sent from the other leg to where the other side really sends from (latched), else to what
its SDP says. Nothing else is ever forwarded: no outside host reaches the PBX, or any third
address, through a relay port.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import select
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Protocol

from .media import RelayStream
from .plan import Side

log = logging.getLogger("sipnat46.relay")


class MediaRelay(Protocol):
    def update(self, stream: RelayStream) -> None: ...
    def close(self, call_id: str) -> None: ...
    def events(self) -> list[tuple[str, str]]: ...


def _snapshot(stream: RelayStream) -> tuple:  # type: ignore[type-arg]
    legs = []
    for side in (Side.INSIDE, Side.OUTSIDE):
        leg = stream.legs[side]
        legs.append(
            (
                side.value,
                str(leg.address),
                leg.port,
                (str(leg.far_end.address), leg.far_end.port) if leg.far_end else None,
                (str(leg.far_rtcp.address), leg.far_rtcp.port) if leg.far_rtcp else None,
                tuple(str(a) for a in leg.allowed),
            )
        )
    return (stream.call_id, stream.index, tuple(legs))


class RelayProcess:
    """Parent-side handle of the relay process."""

    def __init__(self, timeout: float) -> None:
        self.conn, child = multiprocessing.Pipe()
        ctx = multiprocessing.get_context("fork")
        self.proc = ctx.Process(target=_main, args=(child, timeout), name="sipnat46-relay", daemon=True)
        self.proc.start()
        child.close()

    def fileno(self) -> int:
        return self.conn.fileno()

    def update(self, stream: RelayStream) -> None:
        self.conn.send(("update", _snapshot(stream)))

    def close(self, call_id: str) -> None:
        self.conn.send(("close", call_id))

    def stats(self) -> dict[str, int]:
        """Ask for fresh figures (they arrive through ``events``); return the last ones."""
        self.conn.send(("stats",))
        return self.last_stats

    last_stats: dict[str, int] = {}  # noqa: RUF012 - replaced per instance on first answer

    def events(self) -> list[tuple[str, str]]:
        """Messages from the relay: ("expired", call_id) and ("stats", dict)."""
        out = []
        while self.conn.poll():
            try:
                item = self.conn.recv()
            except EOFError:
                break
            if item[0] == "stats":
                self.last_stats = item[1]
            else:
                out.append(item)
        return out

    def stop(self) -> None:
        try:
            self.conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(3)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


class RelayPool:
    """Several relay processes, each owning the streams of the calls hashed to it, so media
    spreads over the cores. Same interface as one RelayProcess."""

    def __init__(self, timeout: float, workers: int = 1) -> None:
        self.workers = [RelayProcess(timeout) for _ in range(max(1, workers))]
        self.waitables = [w.conn for w in self.workers]

    def _for(self, call_id: str) -> RelayProcess:
        return self.workers[hash(call_id) % len(self.workers)]  # stable within this process

    def update(self, stream: RelayStream) -> None:
        self._for(stream.call_id).update(stream)

    def close(self, call_id: str) -> None:
        self._for(call_id).close(call_id)

    def events(self) -> list[tuple[str, str]]:
        return [e for w in self.workers if w.conn.poll() for e in w.events()]

    def stats(self) -> dict[str, int]:
        for w in self.workers:
            w.stats()
        return self.last_stats

    @property
    def last_stats(self) -> dict[str, int]:
        total: dict[str, int] = {"workers": len(self.workers)}
        for w in self.workers:
            for k, v in w.last_stats.items():
                total[k] = total.get(k, 0) + v
        return total

    def stop(self) -> None:
        for w in self.workers:
            w.stop()


# -- the relay process --------------------------------------------------------------------


@dataclass
class _Leg:
    side: str
    rtp: socket.socket
    rtcp: socket.socket
    far: tuple[str, int] | None
    far_rtcp: tuple[str, int] | None
    allowed: set[str]
    latched: list[tuple | None] = field(default_factory=lambda: [None, None])  # type: ignore[type-arg]
    other: _Leg | None = None

    def socks(self) -> tuple[socket.socket, socket.socket]:
        return (self.rtp, self.rtcp)

    def target(self, kind: int) -> tuple | None:  # type: ignore[type-arg]
        """Where this side really sends from (latched), else what its SDP says."""
        return self.latched[kind] or (self.far_rtcp if kind else self.far)


@dataclass
class _Stream:
    call_id: str
    legs: dict[str, _Leg]
    last: float


def _bind(address: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setblocking(False)
    s.bind((address, port))
    return s


class _Relay:
    def __init__(self, conn: multiprocessing.connection.Connection, timeout: float) -> None:
        self.conn = conn
        self.timeout = timeout
        self.ep = select.epoll()
        self.ep.register(conn.fileno(), select.EPOLLIN)
        # fd -> (stream, receiving leg, kind, receiving socket, sending socket)
        self.handlers: dict[int, tuple[_Stream, _Leg, int, socket.socket, socket.socket]] = {}
        self.streams: dict[tuple[str, int], _Stream] = {}
        self.stats = {"streams": 0, "sockets": 0}
        self.forwarded = self.rejected = self.no_target = 0
        self.running = True

    def update(self, snap: tuple) -> None:  # type: ignore[type-arg]
        call_id, index, legs = snap
        key = (call_id, index)
        stream = self.streams.get(key)
        if stream is None:
            built: dict[str, _Leg] = {}
            try:
                for side, addr, port, far, far_rtcp, allowed in legs:
                    built[side] = _Leg(
                        side, _bind(addr, port), _bind(addr, port + 1), far, far_rtcp, set(allowed)
                    )
            except OSError as exc:
                log.warning("relay: cannot bind %s: %s", legs, exc)
                for leg in built.values():
                    leg.rtp.close()
                    leg.rtcp.close()
                return
            stream = self.streams[key] = _Stream(call_id, built, time.monotonic())
            built["inside"].other, built["outside"].other = built["outside"], built["inside"]
            for leg in built.values():
                assert leg.other is not None
                for kind, sock in enumerate(leg.socks()):
                    self.handlers[sock.fileno()] = (stream, leg, kind, sock, leg.other.socks()[kind])
                    self.ep.register(sock.fileno(), select.EPOLLIN)
            self.stats["sockets"] += 4
            return
        for side, _addr, _port, far, far_rtcp, allowed in legs:
            leg = stream.legs[side]
            if far != leg.far:
                leg.latched = [None, None]  # a new address or port was negotiated: follow it
            leg.far, leg.far_rtcp, leg.allowed = far, far_rtcp, set(allowed)

    def close_call(self, call_id: str) -> list[str]:
        gone = [k for k in self.streams if k[0] == call_id]
        for key in gone:
            for leg in self.streams.pop(key).legs.values():
                for s in (leg.rtp, leg.rtcp):
                    self.handlers.pop(s.fileno(), None)
                    self.ep.unregister(s.fileno())
                    s.close()
                leg.other = None
                self.stats["sockets"] -= 2
        return gone  # type: ignore[return-value]

    def forward(self, fd: int, now: float) -> None:
        """One datagram from one leg (epoll is level-triggered: more data wakes us again).
        The per-packet path: kept to a handful of operations, counters as plain attributes."""
        stream, leg, kind, sock, out = self.handlers[fd]
        try:
            data, src = sock.recvfrom(2048)
        except OSError:  # nothing after all, or an ICMP error: the next datagram may be fine
            return
        if src[0] not in leg.allowed:
            self.rejected += 1
            return
        leg.latched[kind] = src
        other = leg.other
        target = other.latched[kind] or (other.far_rtcp if kind else other.far)  # type: ignore[union-attr]
        if target is None:
            self.no_target += 1
            return
        try:
            out.sendto(data, target)
        except OSError:
            self.no_target += 1
            return
        self.forwarded += 1
        stream.last = now

    def sweep(self) -> None:
        now = time.monotonic()
        for key, stream in list(self.streams.items()):
            if now - stream.last > self.timeout and key in self.streams:
                self.close_call(stream.call_id)
                self.conn.send(("expired", stream.call_id))

    def run(self) -> None:
        conn_fd = self.conn.fileno()
        next_sweep = time.monotonic() + 1
        poll, forward = self.ep.poll, self.forward
        while self.running:
            events = poll(0.5)
            now = time.monotonic()
            for fd, _ in events:
                if fd == conn_fd:
                    self.control()
                elif fd in self.handlers:
                    forward(fd, now)
            if now >= next_sweep:
                self.sweep()
                next_sweep = now + 1

    def control(self) -> None:
        while self.conn.poll():
            try:
                msg = self.conn.recv()
            except EOFError:
                self.running = False
                return
            if msg[0] == "update":
                self.update(msg[1])
            elif msg[0] == "close":
                self.close_call(msg[1])
            elif msg[0] == "stats":
                self.stats["streams"] = len(self.streams)
                figures = {
                    "forwarded": self.forwarded,
                    "rejected": self.rejected,
                    "no_target": self.no_target,
                }
                self.conn.send(("stats", {**self.stats, **figures}))
            elif msg[0] == "stop":
                self.running = False


def _main(conn: multiprocessing.connection.Connection, timeout: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    relay = _Relay(conn, timeout)
    try:
        relay.run()
    finally:
        for stream in list(relay.streams.values()):
            relay.close_call(stream.call_id)

"""The stream proxy (I/O shell): SIP over TCP carried as two connections, message by message.

Why a proxy and not sequence-number adjustment: see docs/tcp.md. The rules hand every new
TCP connection to a SIP port to this listener (gateway: TPROXY, so the original destination
is the accepted socket's own address and the far side can be reached transparently from the
client's address; host: REDIRECT and SO_ORIGINAL_DST). Each direction is framed into whole
messages (sip.framing), each message goes through the same engine as a datagram, and what
comes out is written to the other connection. TLS, or anything that stops being SIP, is
carried unchanged. Runs in the daemon's loop: one epoll, non-blocking sockets.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import select
import socket
import struct
from dataclasses import dataclass, field

from .emit import EMIT_MARK, SO_MARK, make_transparent
from .errors import NoEgressAddress, StandInExhausted
from .inline import InlineEngine
from .plan import Side
from .sip.framing import StreamFramer
from .sip.uri import IPAddress
from .streams import Upstream, to_target, upstream_for

log = logging.getLogger("sipnat46.tcp")
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h, and IP6T_SO_ORIGINAL_DST
CONNECT_TIMEOUT = 5.0
HIGH_WATER = 4 << 20  # bytes waiting for a slow reader before the other side is paused
READ_SIZE = 65536
IN, OUT, ERR = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR | select.EPOLLHUP


@dataclass
class StreamCounters:
    connections: int = 0  # accepted since start
    open: int = 0
    messages: int = 0
    rewritten: int = 0
    keepalives: int = 0
    tls: int = 0  # connections carried encrypted, untouched (not fixed)
    unframed: int = 0  # connections carried raw after bytes that are not SIP
    resets: int = 0
    refused: int = 0  # could not be carried (no stand-in, no egress, a loop): reset
    connect_failed: int = 0


@dataclass(eq=False)
class Half:
    """One of the two connections, and what flows out of it."""

    sock: socket.socket
    side: Side  # the side of the host at the far end of this connection
    remote: IPAddress  # that host's address
    local: IPAddress  # the address it sent to (what its messages are addressed to)
    framer: StreamFramer = field(default_factory=StreamFramer)
    out: bytearray = field(default_factory=bytearray)  # waiting to be written to this socket
    eof: bool = False  # it sent FIN
    shut: bool = False  # we sent FIN to it
    paused: bool = False


@dataclass(eq=False)
class Flow:
    client: Half
    upstream: Half
    name: str
    spec: Upstream
    connecting: bool = True
    deadline: float = 0.0
    reported: bool = False  # TLS / not-SIP said once for this flow

    def other(self, half: Half) -> Half:
        return self.upstream if half is self.client else self.client


def _sockaddr_ip(raw: bytes, family: int) -> tuple[IPAddress, int]:
    port = struct.unpack_from("!H", raw, 2)[0]
    if family == socket.AF_INET:
        return ipaddress.IPv4Address(raw[4:8]), port
    return ipaddress.IPv6Address(raw[8:24]), port


def _ip(addr: str) -> IPAddress:
    return ipaddress.ip_address(addr.split("%", 1)[0])


class StreamProxy:
    def __init__(self, engine: InlineEngine, port: int, tls_ports: tuple[int, ...] = (5061,)) -> None:
        self.engine = engine
        self.port = port
        self.tls_ports = frozenset(tls_ports)
        self.transparent = engine.rewriter.plan.placement == "gateway"
        self.counters = StreamCounters()
        self.ep = select.epoll()
        self._fds: dict[int, tuple[Flow, Half] | socket.socket] = {}
        self.flows: set[Flow] = set()
        self.connecting: set[Flow] = set()  # only these have a deadline: no scan of all flows
        self.listeners: list[socket.socket] = []
        for family, anyaddr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            try:
                self.listeners.append(self._listen(family, anyaddr))
            except OSError as exc:
                if family == socket.AF_INET:
                    raise
                log.warning("no IPv6 stream listener: %s", exc)

    def _listen(self, family: int, anyaddr: str) -> socket.socket:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if self.transparent:
            make_transparent(s)
        s.bind((anyaddr, self.port))
        s.listen(1024)
        s.setblocking(False)
        self._fds[s.fileno()] = s
        self.ep.register(s.fileno(), IN)
        return s

    def fileno(self) -> int:
        return self.ep.fileno()

    # -- the loop ------------------------------------------------------------------------

    def service(self, now: float) -> None:
        for fd, ev in self.ep.poll(0, 1024):
            item = self._fds.get(fd)
            if item is None:
                continue
            if isinstance(item, socket.socket):
                self._accept(item, now)
                continue
            flow, half = item
            if flow not in self.flows:
                continue
            if flow.connecting:
                if half is flow.upstream and ev & (OUT | ERR):
                    self._connected(flow, now)
                continue
            if ev & OUT:
                self._flush(flow, half)
            if ev & (IN | ERR) and flow in self.flows:
                self._read(flow, half, now)
        for flow in [f for f in self.connecting if f.deadline < now]:
            self._connect_failed(flow, f"no connection within {CONNECT_TIMEOUT:.0f} s", now)

    def _accept(self, listener: socket.socket, now: float) -> None:
        for _ in range(256):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: the client retries
                log.warning("accept: %s", exc)
                return
            self.counters.connections += 1
            sock.setblocking(False)
            self._start(sock, _ip(peer[0]), now)

    def _original_dst(self, sock: socket.socket) -> tuple[IPAddress, int]:
        if self.transparent:  # TPROXY: the socket is bound to where the client was going
            addr = sock.getsockname()
            return _ip(addr[0]), addr[1]
        level = socket.SOL_IP if sock.family == socket.AF_INET else socket.IPPROTO_IPV6
        raw = sock.getsockopt(level, SO_ORIGINAL_DST, 28 if sock.family == socket.AF_INET6 else 16)
        return _sockaddr_ip(raw, sock.family)

    def _start(self, sock: socket.socket, client: IPAddress, now: float) -> None:
        try:
            dst, dport = self._original_dst(sock)
        except OSError:
            self._refuse(sock, "no original destination (not redirected to us)")
            return
        if dport == self.port:
            self._refuse(sock, f"a connection to the proxy port itself from {client}")
            return
        # The client is the PBX (its own address, or on a host this host's) or a peer.
        side = Side.INSIDE if self.engine.rewriter.plan.is_pbx_side(client) else Side.OUTSIDE
        try:
            up = upstream_for(self.engine.rewriter, side, client, dst, dport, now)
        except (NoEgressAddress, StandInExhausted) as exc:
            self._refuse(sock, str(exc))
            return
        try:
            usock = self._connect(up)
        except OSError as exc:  # e.g. no route: a peer by name moves on to its next target
            self.counters.connect_failed += 1
            log.info("connection from %s to %s:%d not carried: %s", client, up.address, up.port, exc)
            again = self._next_target(client, up, str(exc), now)
            if again is None:
                _abort(sock)
                return
            up, usock = again
        name = f"tcp {client} -> {dst}:{dport}" + (f" (as {up.address})" if up.address != dst else "")
        c = Half(sock, side, client, dst)
        u = Half(usock, side.other, up.address, up.bind or dst)  # local address known once connected
        flow = Flow(c, u, name, up, deadline=now + CONNECT_TIMEOUT)
        if dport in self.tls_ports:
            c.framer.mode = u.framer.mode = "tls"
        self.flows.add(flow)
        self.connecting.add(flow)
        self.counters.open += 1
        self._fds[sock.fileno()] = (flow, c)
        self._fds[usock.fileno()] = (flow, u)
        self.ep.register(usock.fileno(), OUT)

    def _connect(self, up: Upstream) -> socket.socket:
        family = socket.AF_INET if up.address.version == 4 else socket.AF_INET6
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, EMIT_MARK)  # never caught by our own rules
            if up.transparent:
                make_transparent(s)
            if up.bind is not None:
                s.bind((str(up.bind), 0))
            s.setblocking(False)
            err = s.connect_ex((str(up.address), up.port))
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, errno.errorcode.get(err, str(err)))
        except OSError:
            s.close()
            raise
        return s

    def _next_target(
        self, client: IPAddress, failed: Upstream, why: str, now: float
    ) -> tuple[Upstream, socket.socket] | None:
        """After ``failed``: a peer by name's next targets, in order, until a connect starts."""
        fo = self.engine.rewriter.failover
        while failed.peer is not None and failed.target is not None and fo is not None:
            nxt = fo.connect_failed(failed.peer, failed.target, why, now)
            if nxt is None:
                return None
            failed = dataclasses.replace(failed, target=nxt)  # blamed if it fails too
            try:
                up = to_target(self.engine.rewriter, client, failed.peer, nxt)
                return up, self._connect(up)
            except (OSError, NoEgressAddress) as exc:
                self.counters.connect_failed += 1
                why = str(exc)
        return None

    def _connect_failed(self, flow: Flow, why: str, now: float) -> None:
        """The second connection did not come up: a peer by name tries its next target (the
        PBX's connection waits, unread, meanwhile); anything else is reset."""
        self.counters.connect_failed += 1
        log.info("%s: connect to %s failed: %s", flow.name, flow.upstream.remote, why)
        again = self._next_target(flow.client.remote, flow.spec, why, now)
        if again is None:
            self._reset(flow)
            return
        up, usock = again
        self._forget(flow.upstream)
        flow.upstream.sock.close()
        flow.upstream = Half(usock, flow.upstream.side, up.address, up.bind or up.address)
        flow.spec, flow.deadline = up, now + CONNECT_TIMEOUT
        self._fds[usock.fileno()] = (flow, flow.upstream)
        self.ep.register(usock.fileno(), OUT)
        log.info("%s: now to %s", flow.name, up.target)

    def _connected(self, flow: Flow, now: float) -> None:
        u = flow.upstream
        err = u.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._connect_failed(flow, errno.errorcode.get(err, str(err)), now)
            return
        flow.connecting = False
        self.connecting.discard(flow)
        u.local = _ip(u.sock.getsockname()[0])
        for half in (flow.client, flow.upstream):
            half.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.ep.modify(u.sock.fileno(), IN)
        self.ep.register(flow.client.sock.fileno(), IN)

    # -- carrying bytes ------------------------------------------------------------------

    def _read(self, flow: Flow, half: Half, now: float) -> None:
        try:
            data = half.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # ECONNRESET and the like: the other side is reset too
            log.info("%s: %s", flow.name, exc.strerror)
            self.counters.resets += 1
            self._reset(flow)
            return
        other = flow.other(half)
        if not data:
            half.eof = True
            other.out += half.framer.pending()  # an unfinished message goes on as it is
            self._watch(flow, half)
            self._flush(flow, other)
            return
        self._carry(flow, half, other, data, now)
        self._flush(flow, other)

    def _carry(self, flow: Flow, half: Half, other: Half, data: bytes, now: float) -> None:
        c = self.counters
        for frame in half.framer.feed(data):
            if frame.kind == "message":
                c.messages += 1
                target = flow.spec.target if half is flow.client else None
                out = self.engine.message(
                    frame.data, half.side, half.remote, half.local, now, target=target, stream=True
                )
                if out is not None and out.changed:
                    c.rewritten += 1
                    other.out += out.data
                else:
                    other.out += frame.data
            elif frame.kind == "keepalive":
                c.keepalives += 1
                other.out += frame.data
            else:
                if not flow.reported:
                    flow.reported = True
                    mode = half.framer.mode
                    if mode == "tls":
                        c.tls += 1
                        log.warning("%s: TLS, carried encrypted and not fixed", flow.name)
                    else:
                        c.unframed += 1
                        log.warning("%s: not SIP (%s), carried unchanged from here on", flow.name, mode)
                other.out += frame.data

    def _flush(self, flow: Flow, half: Half) -> None:
        """Write what waits for ``half``; pause the other side while too much waits."""
        if half.out:
            try:
                sent = half.sock.send(half.out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                log.info("%s: %s", flow.name, exc.strerror)
                self.counters.resets += 1
                self._reset(flow)
                return
            del half.out[:sent]
        other = flow.other(half)
        other.paused = len(half.out) > HIGH_WATER
        if not half.out and other.eof and not half.shut:
            half.shut = True
            try:
                half.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if flow.client.shut and flow.upstream.shut:
            self._close(flow)
            return
        self._watch(flow, half)
        self._watch(flow, other)

    def _watch(self, flow: Flow, half: Half) -> None:
        ev = (0 if half.eof or half.paused else IN) | (OUT if half.out else 0)
        try:
            self.ep.modify(half.sock.fileno(), ev)
        except (OSError, ValueError):
            pass

    # -- ending ----------------------------------------------------------------------------

    def _refuse(self, sock: socket.socket, why: str) -> None:
        self.counters.refused += 1
        self.engine.refuse_once(f"TCP: {why}")
        _abort(sock)

    def _reset(self, flow: Flow) -> None:
        for half in (flow.client, flow.upstream):
            self._forget(half)
            _abort(half.sock)
        self._drop(flow)

    def _close(self, flow: Flow) -> None:
        for half in (flow.client, flow.upstream):
            self._forget(half)
            half.sock.close()
        self._drop(flow)

    def _forget(self, half: Half) -> None:
        fd = half.sock.fileno()
        if fd >= 0 and self._fds.pop(fd, None) is not None:
            try:
                self.ep.unregister(fd)
            except (OSError, ValueError):
                pass

    def _drop(self, flow: Flow) -> None:
        self.connecting.discard(flow)
        if flow in self.flows:
            self.flows.discard(flow)
            self.counters.open -= 1

    def status(self) -> dict[str, int]:
        return dict(self.counters.__dict__)

    def close(self) -> None:
        for flow in list(self.flows):
            self._close(flow)
        for s in self.listeners:
            s.close()
        self.ep.close()


def _abort(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0): the far end learns at once, nothing is half-sent."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()

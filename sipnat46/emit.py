"""Sending translated messages (I/O shell).

A translated message is sent from a UDP socket bound to the source address and port it
must carry (the box's egress IPv6 address, or the peer's stand-in), so the kernel builds
the IP header, checksums and, for a message that grew past the path MTU, the fragments
(RFC 3261 section 18.1.1 applies only to the sender's choice of transport; the datagram is
still delivered). Every socket carries the emit mark, so our own rules never queue it.

A request redirected to a named peer's IPv4 target keeps the PBX's own source address, so
the sockets are transparent (the source need not be local). They also ask for ICMP errors
(IP_RECVERR), which is how an unreachable target is noticed at once.
"""

from __future__ import annotations

import errno
import ipaddress
import select
import socket
import struct
from collections import OrderedDict

from .sip.uri import IPAddress

EMIT_MARK = 0x4600
SO_MARK = getattr(socket, "SO_MARK", 36)
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
IPV6_FREEBIND = 78  # not in the socket module
IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IPV6_TRANSPARENT = 75
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MAX_SOCKETS = 1024
# struct sock_extended_err: errno, origin, type, code, pad, info, data
_EXT_ERR = struct.Struct("=IBBBBII")
_ORIGIN = {2: "ICMP", 3: "ICMPv6"}

# (destination address, destination port, what happened) of a packet that drew an error
SendError = tuple[IPAddress, int, str]


def make_transparent(s: socket.socket) -> None:
    """Let ``s`` bind (and send from, or accept for) an address that is not the box's own."""
    if s.family == socket.AF_INET:
        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    else:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)


def bound_udp(address: IPAddress, port: int) -> socket.socket:
    af = socket.AF_INET if address.version == 4 else socket.AF_INET6
    s = socket.socket(af, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, SO_MARK, EMIT_MARK)
    if address.version == 4:
        s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        s.setsockopt(socket.SOL_IP, IP_RECVERR, 1)
    else:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    make_transparent(s)
    s.setblocking(False)
    s.bind((str(address), port))
    return s


class Emitter:
    """A bounded pool of bound UDP sockets, one per (source address, source port)."""

    def __init__(self) -> None:
        self._socks: OrderedDict[tuple[IPAddress, int], socket.socket] = OrderedDict()
        self._by_fd: dict[int, socket.socket] = {}
        self._errors = select.epoll()  # wakes the daemon when a socket has an ICMP error

    def send(self, payload: bytes, src: IPAddress, sport: int, dst: IPAddress, dport: int) -> None:
        key = (src, sport)
        s = self._socks.get(key)
        if s is None:
            s = self._socks[key] = bound_udp(src, sport)
            self._by_fd[s.fileno()] = s
            self._errors.register(s.fileno(), select.EPOLLERR)
            while len(self._socks) > MAX_SOCKETS:
                self._drop(self._socks.popitem(last=False)[1])
        else:
            self._socks.move_to_end(key)
        try:
            s.sendto(payload, (str(dst), dport))
        except OSError as exc:
            # An error queued by an earlier ICMP is reported on the next send: it is
            # read from the error queue; this send itself is retried once.
            if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                raise
            s.sendto(payload, (str(dst), dport))

    def _drop(self, s: socket.socket) -> None:
        self._by_fd.pop(s.fileno(), None)
        self._errors.unregister(s.fileno())
        s.close()

    def fileno(self) -> int:
        return self._errors.fileno()

    def errors(self) -> list[SendError]:
        """ICMP/ICMPv6 errors drawn by what was sent, read from the sockets' error queues."""
        out: list[SendError] = []
        for fd, _ in self._errors.poll(0):
            s = self._by_fd.get(fd)
            while s is not None:
                try:
                    _, anc, _, addr = s.recvmsg(0, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                why = "unreachable"
                for _, _, data in anc:
                    if len(data) >= _EXT_ERR.size:
                        err, origin, icmp_type, code, _, _, _ = _EXT_ERR.unpack_from(data)
                        name = errno.errorcode.get(err, str(err))
                        why = f"{_ORIGIN.get(origin, 'local')} type {icmp_type} code {code} ({name})"
                out.append((ipaddress.ip_address(addr[0].split("%")[0]), addr[1], why))
        return out

    def close(self) -> None:
        for s in self._socks.values():
            s.close()
        self._socks.clear()
        self._by_fd.clear()
        self._errors.close()

"""Sending translated messages (I/O shell).

A translated message is sent from a UDP socket bound to the source address and port it
must carry (the box's egress IPv6 address, or the peer's stand-in), so the kernel builds
the IP header, checksums and, for a message that grew past the path MTU, the fragments
(RFC 3261 section 18.1.1 applies only to the sender's choice of transport; the datagram is
still delivered). Every socket carries the emit mark, so our own rules never queue it.
"""

from __future__ import annotations

import socket
from collections import OrderedDict

from .sip.uri import IPAddress

EMIT_MARK = 0x4600
SO_MARK = getattr(socket, "SO_MARK", 36)
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
IPV6_FREEBIND = 78  # not in the socket module
MAX_SOCKETS = 1024


def bound_udp(address: IPAddress, port: int) -> socket.socket:
    af = socket.AF_INET if address.version == 4 else socket.AF_INET6
    s = socket.socket(af, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, SO_MARK, EMIT_MARK)
    if address.version == 4:
        s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    else:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
    s.setblocking(False)
    s.bind((str(address), port))
    return s


class Emitter:
    """A bounded pool of bound UDP sockets, one per (source address, source port)."""

    def __init__(self) -> None:
        self._socks: OrderedDict[tuple[IPAddress, int], socket.socket] = OrderedDict()

    def send(self, payload: bytes, src: IPAddress, sport: int, dst: IPAddress, dport: int) -> None:
        key = (src, sport)
        s = self._socks.get(key)
        if s is None:
            s = self._socks[key] = bound_udp(src, sport)
            while len(self._socks) > MAX_SOCKETS:
                self._socks.popitem(last=False)[1].close()
        else:
            self._socks.move_to_end(key)
        s.sendto(payload, (str(dst), dport))

    def close(self) -> None:
        for s in self._socks.values():
            s.close()
        self._socks.clear()

"""Sending packets sipnat46 builds itself (translated messages): raw IP sockets (I/O shell).

Each packet carries the emit mark so our own rules never queue it again.
"""

from __future__ import annotations

import socket

from .rules import EMIT_MARK
from .sip.uri import IPAddress

SO_MARK = getattr(socket, "SO_MARK", 36)


class Emitter:
    def __init__(self) -> None:
        self._socks: dict[int, socket.socket] = {}

    def _sock(self, family: int) -> socket.socket:
        s = self._socks.get(family)
        if s is None:
            af = socket.AF_INET if family == 4 else socket.AF_INET6
            s = socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_RAW)  # header included
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, EMIT_MARK)
            self._socks[family] = s
        return s

    def send(self, packet: bytes, dst: IPAddress) -> None:
        self._sock(dst.version).sendto(packet, (str(dst), 0))

    def close(self) -> None:
        for s in self._socks.values():
            s.close()
        self._socks.clear()

"""The DNS46 listener (I/O shell): a UDP socket for the PBX, one towards the upstream.

Runs in the daemon's loop (select), never in the packet path; an upstream that does not
answer in time is given up on (the PBX's resolver retries).
"""

from __future__ import annotations

import itertools
import logging
import socket
import struct

from .dns46 import Ask, Dns46
from .sip.uri import IPAddress

log = logging.getLogger("sipnat46.dns46")
UPSTREAM_TIMEOUT = 3.0
MAX_PENDING = 4096


class Dns46Server:
    def __init__(
        self, core: Dns46, listen: IPAddress, port: int, upstream: IPAddress, upstream_port: int = 53
    ):
        self.core = core
        self.listener = socket.socket(
            socket.AF_INET if listen.version == 4 else socket.AF_INET6, socket.SOCK_DGRAM
        )
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((str(listen), port))
        self.listener.setblocking(False)
        self.upstream_addr = (str(upstream), upstream_port)
        self.up = socket.socket(
            socket.AF_INET if upstream.version == 4 else socket.AF_INET6, socket.SOCK_DGRAM
        )
        self.up.setblocking(False)
        self._ids = itertools.cycle(range(1, 65536))
        # our message ID -> (client address, the ask, deadline)
        self._pending: dict[int, tuple[tuple[str, int], Ask, float]] = {}
        self.timeouts = 0

    @property
    def waitables(self) -> list[socket.socket]:
        return [self.listener, self.up]

    def serve(self, now: float) -> None:
        """Handle whatever is waiting on either socket."""
        for _ in range(256):
            try:
                wire, client = self.listener.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                break
            answer, ask = self.core.query(wire, now)
            self._reply(client, answer, ask, now)
        for _ in range(256):
            try:
                wire, _ = self.up.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # an ICMP error from the upstream: its asks time out
                continue
            if len(wire) < 2:
                continue
            item = self._pending.pop(struct.unpack_from("!H", wire)[0], None)
            if item is None:
                continue
            client, ask, _ = item
            answer, again = self.core.upstream(ask, _with_id(wire, ask.client_id), now)
            self._reply(client, answer, again, now)
        for qid in [i for i, (_, _, deadline) in self._pending.items() if deadline < now]:
            del self._pending[qid]
            self.timeouts += 1

    def _reply(self, client: tuple[str, int], answer: bytes | None, ask: Ask | None, now: float) -> None:
        if answer is not None:
            self.listener.sendto(answer, client)
        if ask is None or len(self._pending) >= MAX_PENDING:
            return
        qid = next(self._ids)
        self._pending[qid] = (client, ask, now + UPSTREAM_TIMEOUT)
        try:
            self.up.sendto(_with_id(ask.wire, qid), self.upstream_addr)
        except OSError as exc:
            log.warning("DNS46 upstream %s: %s", self.upstream_addr[0], exc)

    def status(self) -> dict[str, int]:
        return {**self.core.counters.__dict__, "pending": len(self._pending), "timeouts": self.timeouts}

    def close(self) -> None:
        self.listener.close()
        self.up.close()


def _with_id(wire: bytes, qid: int) -> bytes:
    return struct.pack("!H", qid) + wire[2:]

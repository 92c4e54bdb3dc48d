"""The NFQUEUE loop (I/O shell): every queued packet gets a verdict, whatever happens.

python-netfilterqueue calls ``_on_packet`` once per packet. The engine decides; this applies
the decision. Any exception is counted and the packet accepted unmodified.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import time
from collections.abc import Callable

from netfilterqueue import COPY_PACKET, NetfilterQueue

from .emit import Emitter
from .inline import Action, InlineEngine

log = logging.getLogger("sipnat46.nfq")
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)
# python-netfilterqueue reads each netlink message into 4096 bytes: a message that does not fit
# is never verdicted. Copying at most 3840 bytes leaves room for the attributes the kernel adds
# (a defragmented packet, with TPROXY loaded, carries more of them than a plain one).
COPY_RANGE = 3840


class QueueLoop:
    def __init__(
        self,
        engine: InlineEngine,
        queue_num: int,
        *,
        max_len: int = 4096,
        rcvbuf: int = 8 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.queue_num = queue_num
        self.clock = clock
        self.emitter = Emitter()
        self.nfq = NetfilterQueue()
        self.nfq.bind(
            queue_num, self._on_packet, max_len=max_len, mode=COPY_PACKET, range=COPY_RANGE, sock_len=rcvbuf
        )
        self.sock = socket.fromfd(self.nfq.get_fd(), socket.AF_NETLINK, socket.SOCK_RAW)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.enobufs = 0
        self.latency = LatencyHistogram()
        # Any socket asking for receive timestamps makes the kernel stamp every packet,
        # which is what get_timestamp() reads (for the added-latency figures).
        self._stamper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._stamper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)

    def _on_packet(self, pkt) -> None:  # type: ignore[no-untyped-def]
        try:
            stamp = pkt.get_timestamp()
            verdict = self.engine.handle(pkt.get_payload(), pkt.hook, self.clock())
            if verdict.action is Action.REWRITE:
                pkt.set_payload(verdict.packet)
                pkt.accept()
            elif verdict.action is Action.TRANSLATE:
                t = verdict.translated
                assert t is not None
                pkt.drop()  # the original goes; its translation is sent in its place
                self.emitter.send(t.payload, t.src, t.sport, t.dst, t.dport)
            else:
                pkt.accept()
            if stamp > 0:  # time in queue + handling: what sipnat46 adds to this packet
                self.latency.add(time.time() - stamp)
        except Exception:
            self.engine.counters.errors += 1
            log.exception("handling a queued packet failed; accepted unmodified")
            try:
                pkt.accept()
            except Exception:  # already verdicted: nothing left to do
                pass

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> None:
        try:
            self.nfq.run(block=False)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:  # the kernel dropped some: count, go on
                self.enobufs += 1
            elif exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                raise

    def close(self) -> None:
        self.drain()  # verdict whatever is still held before unbinding
        self.nfq.unbind()
        self.sock.close()
        self._stamper.close()
        self.emitter.close()


class LatencyHistogram:
    """Added latency per packet, in buckets of 1/8 octave from 1 us to about 16 s."""

    PER_OCTAVE = 8
    BUCKETS = 24 * PER_OCTAVE

    def __init__(self) -> None:
        self.reset()

    def add(self, seconds: float) -> None:
        us = seconds * 1e6
        i = int(math.log2(us) * self.PER_OCTAVE) + 1 if us >= 1 else 0
        self.counts[min(i, self.BUCKETS)] += 1
        self.total += 1

    def quantile(self, q: float) -> float | None:
        """Upper bound (seconds) of the bucket holding the q-quantile."""
        if not self.total:
            return None
        want, seen = q * self.total, 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= want:
                return 2 ** (i / self.PER_OCTAVE) / 1e6
        return None

    def summary(self) -> dict[str, float | int | None]:
        def us(v: float | None) -> float | None:
            return None if v is None else round(v * 1e6, 1)

        return {"packets": self.total, "p50_us": us(self.quantile(0.5)), "p99_us": us(self.quantile(0.99))}

    def reset(self) -> None:
        self.counts = [0] * (self.BUCKETS + 1)
        self.total = 0


def queue_figures(queue_num: int) -> dict[str, int] | None:
    """This queue's line of /proc/net/netfilter/nfnetlink_queue (per network namespace)."""
    names = (
        "queue",
        "portid",
        "waiting",
        "copy_mode",
        "copy_range",
        "queue_dropped",
        "user_dropped",
        "id_sequence",
    )
    try:
        with open("/proc/net/netfilter/nfnetlink_queue") as fh:
            for line in fh:
                fields = line.split()
                if fields and int(fields[0]) == queue_num:
                    return dict(zip(names, (int(f) for f in fields), strict=False))
    except OSError:
        return None
    return None

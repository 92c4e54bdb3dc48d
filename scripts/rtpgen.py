"""RTP load generator/sink for scripts/bench-media (runs inside one lab namespace).

Streams G.711-like packets (172 bytes: 12-byte RTP header + 160 bytes) every 20 ms on each
of its sockets towards a target, receives on the same sockets (symmetric RTP), and reports
JSON: packets sent, received, and one-way latency percentiles (CLOCK_MONOTONIC is the same in
every namespace of the machine, so send and receive times compare directly).
Usage: rtpgen.py LOCAL_ADDR SECONDS < [[local_port, target_addr, target_port], ...]
"""

from __future__ import annotations

import json
import selectors
import socket
import struct
import sys
import time


def main() -> None:
    local, seconds = sys.argv[1], float(sys.argv[2])
    plan = json.load(sys.stdin)
    fam = socket.AF_INET6 if ":" in local else socket.AF_INET
    sel = selectors.DefaultSelector()
    socks = []
    for i, (lport, taddr, tport) in enumerate(plan):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((local, lport))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append((s, (taddr, tport), i))
    pad = b"\xff" * 148
    sent = received = 0
    lat: list[int] = []
    tick = 0.020
    start = time.monotonic()
    next_tick = start
    seq = 0
    buf = bytearray(2048)
    stop_sending = start + seconds
    end = stop_sending + 0.5  # drain what is still in flight
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= next_tick and now < stop_sending:
            seq += 1
            for s, target, i in socks:
                hdr = struct.pack("!BBHIIQ", 0x80, 0, seq & 0xFFFF, seq * 160, i, time.monotonic_ns())
                try:
                    s.sendto(hdr + pad, target)
                    sent += 1
                except OSError:
                    pass
            next_tick += tick
            continue
        timeout = max(0.0, min(next_tick, end) - time.monotonic())
        for key, _ in sel.select(timeout):
            s = key.fileobj
            while True:
                try:
                    n = s.recv_into(buf)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                if n >= 20:
                    received += 1
                    lat.append(time.monotonic_ns() - struct.unpack_from("!Q", buf, 12)[0])
    lat.sort()

    def q(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] / 1000, 1) if lat else None

    json.dump(
        {"sent": sent, "received": received, "p50_us": q(0.5), "p99_us": q(0.99), "streams": len(socks)},
        sys.stdout,
    )


if __name__ == "__main__":
    main()

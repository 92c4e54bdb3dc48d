"""Codec speed on one core: parse-only and parse+rewrite of an INVITE with SDP and its 200 OK.

Prints messages/s; the baseline in the same run is a bare ``bytes.find`` scan of the same
message (the floor of any parser in Python). Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path

from sipnat46.media import MediaSessions
from sipnat46.plan import AddressPlan, Side, StandIns
from sipnat46.policy import Packet, Rewriter
from sipnat46.sdp import parse_sdp
from sipnat46.sip.body import sdp_spans
from sipnat46.sip.message import parse_message

ROOT = Path(__file__).resolve().parent.parent
ip = ipaddress.ip_address
INVITE = (ROOT / "examples" / "invite.sip").read_bytes()
OK200 = (ROOT / "examples" / "200ok.sip").read_bytes()
# The same INVITE as a PBX that writes its real address sends it to an IPv4 peer: nothing to do.
PLAIN = INVITE.replace(b"192.0.2.10", b"198.51.100.1").replace(b"100.64.46.20", b"198.51.100.20")


def rate(fn, seconds: float = 1.5) -> float:  # type: ignore[no-untyped-def]
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            fn()
        n += 200
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main() -> None:
    if hasattr(os, "sched_setaffinity") and os.environ.get("BENCH_PIN", "1") == "1":
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    plan = AddressPlan(
        pbx=(ip("192.0.2.10"),),
        stand_ins=StandIns(
            ipaddress.ip_network("100.64.46.0/24"), {ip("2001:db8:1::20"): ip("100.64.46.20")}
        ),
        egress={6: ip("2001:db8:1::1")},
    )
    fixup = Rewriter(plan)
    relay = Rewriter(plan, media=MediaSessions(30000, 39999), relay_inside=ip("192.0.2.1"))
    out_pkt = Packet(Side.INSIDE, ip("100.64.46.20"), ip("192.0.2.10"))
    in_pkt = Packet(Side.OUTSIDE, ip("2001:db8:1::1"), ip("2001:db8:1::20"))
    fix_pkt = Packet(Side.INSIDE, ip("2001:db8:1::20"), ip("2001:db8:1::1"))
    plain_pkt = Packet(Side.INSIDE, ip("198.51.100.20"), ip("198.51.100.1"))

    def parse_full(data: bytes) -> None:
        msg = parse_message(data)
        for span in sdp_spans(msg):
            parse_sdp(data, *span)

    rows = [
        ("baseline: bytes.find scan of the INVITE", lambda: INVITE.find(b"\r\n\r\n") + INVITE.count(b"\n")),
        ("parse (headers+SDP) INVITE", lambda: parse_full(INVITE)),
        ("parse (headers+SDP) 200 OK", lambda: parse_full(OK200)),
        (
            "INVITE with nothing to change (passed, not taken apart)",
            lambda: fixup.rewrite(PLAIN, plain_pkt, 1.0),
        ),
        ("parse+rewrite INVITE, fixup (IPv4 SDP over IPv6)", lambda: fixup.rewrite(INVITE, fix_pkt, 1.0)),
        ("parse+rewrite INVITE, translate + relay legs", lambda: relay.rewrite(INVITE, out_pkt, 1.0)),
        ("parse+rewrite 200 OK, translate + relay legs", lambda: relay.rewrite(OK200, in_pkt, 1.0)),
    ]
    print(f"{'case':58} {'msg/s':>10} {'us/msg':>8}")
    # NB: run it on a quiet machine; anything else on the two cores shows in the figures.
    for name, fn in rows:
        r = rate(fn)
        print(f"{name:58} {r:10.0f} {1e6 / r:8.1f}")


if __name__ == "__main__":
    main()

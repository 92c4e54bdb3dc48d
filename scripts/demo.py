"""The main job on the self-contained example: in the namespace lab, an IPv4-only PBX calls an
IPv6-only peer through sipnat46, then the peer calls the PBX; prints what each side saw and
the RTP packets counted at each end. Exit 0 only if both calls completed with audio both ways.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from sipnat46.sdp import parse_sdp  # noqa: E402
from sipnat46.sip.body import sdp_spans  # noqa: E402
from sipnat46.sip.message import SipMessage  # noqa: E402
from tests.e2e.calls import CallResult, call, plain  # noqa: E402
from tests.e2e.lab import first, lab, ns, sipnat46_bin, tone  # noqa: E402

CONFIG = ROOT / "examples" / "lab.toml"
RTP_SENT = 50  # each side streams one second of G.711 (20 ms packets)


def seen(msg: SipMessage) -> str:
    contact = msg.header_text("contact") or "-"
    conn = "-"
    for s, e in sdp_spans(msg):
        sd = parse_sdp(msg.data, s, e)
        c = sd.connection_of(sd.media[0]) if sd.media else sd.connection
        if c is not None:
            conn = f"c={c.text} m=audio {sd.media[0].port.value}" if sd.media else f"c={c.text}"
    return f"Contact {contact:32} SDP {conn}"


def report(title: str, res: CallResult, caller: str, callee: str) -> bool:
    good = res.uac_rc == 0 and res.uas_rc == 0
    audio = res.rtp_to_uas >= RTP_SENT * 0.9 and res.rtp_to_uac >= RTP_SENT * 0.9
    print(
        f"\n{title}: {'call completed' if good else 'CALL FAILED'}, audio {'both ways' if audio else 'MISSING'}"
    )
    try:
        print(f"  {callee:28} got INVITE  {seen(first(res.uas.received(), 'INVITE'))}")
        print(f"  {caller:28} got 200 OK  {seen(first(res.uac.received(), 'SIP/2.0 200'))}")
    except AssertionError as exc:
        print(f"  (messages missing: {exc})")
    print(f"  RTP {caller} -> {callee}: {res.rtp_to_uas} of {RTP_SENT} packets arrived")
    print(f"  RTP {callee} -> {caller}: {res.rtp_to_uac} of {RTP_SENT} packets arrived")
    return good and audio


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="sipnat46-demo-"))
    work.chmod(0o755)
    tone(work)
    lab("down")
    lab("up")
    print("lab up: pbx 192.0.2.10 (IPv4 only) -- gw (sipnat46) -- v6peer 2001:db8:1::20 (IPv6 only)")
    print("the PBX knows the peer as its stand-in 100.64.46.20; the peer knows the PBX as [2001:db8:1::1]")
    started = ns("gw", sipnat46_bin(), "--config", str(CONFIG), "start", check=False)
    print(started.stdout.strip() or started.stderr.strip())
    ok = started.returncode == 0
    try:
        if ok:
            pbx, peer = plain("pbx", "192.0.2.10", 7000), plain("v6peer", "2001:db8:1::20", 6000)
            out = call(work, pbx, peer, target="100.64.46.20:5060")
            ok &= report(
                "outbound: PBX (IPv4) calls 100.64.46.20 -> IPv6 peer",
                out,
                "PBX 192.0.2.10",
                "peer 2001:db8:1::20",
            )
            inbound = call(
                work,
                plain("v6peer", "2001:db8:1::20", 6000),
                plain("pbx", "192.0.2.10", 7000),
                target="[2001:db8:1::1]:5060",
            )
            ok &= report(
                "inbound: IPv6 peer calls [2001:db8:1::1] -> PBX (IPv4)",
                inbound,
                "peer 2001:db8:1::20",
                "PBX 192.0.2.10",
            )
            st = ns("gw", sipnat46_bin(), "--config", str(CONFIG), "status", check=False).stdout
            print("\nsipnat46 status:\n  " + "\n  ".join(st.strip().splitlines()))
    finally:
        ns("gw", sipnat46_bin(), "--config", str(CONFIG), "stop", check=False)
        lab("down")
    print(f"\nRESULT: {'PASS, both calls completed with audio both ways' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

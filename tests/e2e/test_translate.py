"""Translate: the IPv4-only PBX calls and is called by IPv6-only peers through stand-ins,
with the built-in relay carrying the media. Real sipp peers; RTP counted by the kernel."""

from __future__ import annotations

import csv
import re
import subprocess
import threading
import time
from pathlib import Path

from sipnat46.sdp import parse_sdp
from sipnat46.sip.body import sdp_spans
from sipnat46.sip.message import SipMessage, parse_message
from tests.e2e.calls import CallResult, call, plain, start_call
from tests.e2e.lab import ROOT, SCENARIOS, Counter, first, instance, ns, ns_popen, status
from tests.e2e.test_fixup import RTP_MIN, assert_only, no_literal_of_family

CONFIG = (
    (ROOT / "examples" / "lab.toml")
    .read_text()
    .replace('instance = "lab"\n', "")
    .replace("number = 46", "number = 50")
)
STAND_IN = "100.64.46.20:5060"
BOX6 = "[2001:db8:1::1]:5060"


def pbx(port: int = 5060, media_port: int = 7000):  # type: ignore[no-untyped-def]
    return plain("pbx", "192.0.2.10", media_port, port)


def v6peer(media_port: int = 6000):  # type: ignore[no-untyped-def]
    return plain("v6peer", "2001:db8:1::20", media_port)


def media_of(msg: SipMessage) -> tuple[str, int]:
    (span,) = sdp_spans(msg)
    sd = parse_sdp(msg.data, *span)
    m = sd.media[0]
    conn = sd.connection_of(m)
    assert conn is not None
    return conn.text, m.port.value


def relay_legs(cfg: Path) -> int:
    return int(status("gw", cfg)["daemon"]["relay"]["legs"])


def ok(res: CallResult, rtp: int = RTP_MIN) -> None:
    assert res.uac_rc == 0 and res.uas_rc == 0, res.uac.out.read_text(errors="replace")[-2000:]
    assert res.rtp_to_uas >= rtp and res.rtp_to_uac >= rtp, (res.rtp_to_uas, res.rtp_to_uac)


def test_outbound_call_to_ipv6_peer(work: Path) -> None:
    with instance("gw", CONFIG, work, "out") as cfg:
        res = call(work, pbx(), v6peer(), target=STAND_IN)
        legs_after = relay_legs(cfg)
    ok(res)
    invite = first(res.uas.received(), "INVITE")
    assert invite.data.startswith(b"INVITE sip:bob@[2001:db8:1::20]:5060 SIP/2.0\r\n")
    assert_only(invite, "2001:db8:1::1", ("via", "contact", "from", "sdp"))
    no_literal_of_family(invite, 4)
    addr, port = media_of(invite)
    assert addr == "2001:db8:1::1" and 30000 <= port <= 39999
    answer = first(res.uac.received(), "SIP/2.0 200")
    no_literal_of_family(answer, 6)
    assert_only(answer, "100.64.46.20", ("contact",))
    assert media_of(answer)[0] == "192.0.2.1"
    assert answer.header_text("via") == first(res.uac.sent(), "INVITE").header_text("via")
    for method in ("ACK", "BYE"):
        no_literal_of_family(first(res.uas.received(), method), 4)
    assert legs_after == 0  # BYE freed the relay legs


def test_inbound_call_from_ipv6_peer(work: Path) -> None:
    caller = plain("v6peer", "2001:db8:1::20", 6000)
    with instance("gw", CONFIG, work, "in") as cfg:
        res = call(work, caller, pbx(), target=BOX6)
        legs_after = relay_legs(cfg)
    ok(res)
    invite = first(res.uas.received(), "INVITE")
    assert invite.data.startswith(b"INVITE sip:bob@192.0.2.10:5060 SIP/2.0\r\n")
    no_literal_of_family(invite, 6)
    assert_only(invite, "100.64.46.20", ("via", "contact", "from"))
    assert media_of(invite)[0] == "192.0.2.1"
    answer = first(res.uac.received(), "SIP/2.0 200")
    no_literal_of_family(answer, 4)
    assert media_of(answer)[0] == "2001:db8:1::1"
    assert answer.header_text("via") == first(res.uac.sent(), "INVITE").header_text("via")
    assert legs_after == 0


def test_early_media_then_answer(work: Path) -> None:
    with instance("gw", CONFIG, work, "early"):
        res = call(work, pbx(), v6peer(), target=STAND_IN, flow="early")
    ok(res)
    early = first(res.uac.received(), "SIP/2.0 183")
    final = first(res.uac.received(), "SIP/2.0 200")
    assert media_of(early) == media_of(final) and media_of(early)[0] == "192.0.2.1"


def test_prack_with_sdp(work: Path) -> None:
    with instance("gw", CONFIG, work, "prack"):
        res = call(work, pbx(), v6peer(), target=STAND_IN, flow="prack")
    ok(res)
    offer = first(res.uac.received(), "SIP/2.0 183")  # the peer's offer, reliable
    assert offer.header_text("rseq") == "1" and media_of(offer)[0] == "192.0.2.1"
    prack = first(res.uas.received(), "PRACK")  # the PBX's answer
    assert media_of(prack)[0] == "2001:db8:1::1"
    no_literal_of_family(prack, 4)


def test_reinvite_hold_unhold_and_update_keep_the_legs(work: Path) -> None:
    with instance("gw", CONFIG, work, "midcall"):
        res = call(work, pbx(), v6peer(), target=STAND_IN, flow="midcall", duration_ms=1200)
    ok(res, rtp=2 * RTP_MIN)  # media before the hold and after the UPDATE
    to_peer = [media_of(parse_message(m)) for m in res.uas.received() if m.startswith((b"INVITE", b"UPDATE"))]
    to_pbx = [
        media_of(parse_message(m)) for m in res.uac.received() if m.startswith(b"SIP/2.0 200") and b"v=0" in m
    ]
    assert len(to_peer) == 4 and len(set(to_peer)) == 1, to_peer
    assert len(to_pbx) == 4 and len(set(to_pbx)) == 1, to_pbx
    hold = [parse_message(m) for m in res.uas.received() if m.startswith(b"INVITE")][1]
    assert b"a=sendonly" in hold.body


def test_cancel_before_answer_frees_the_legs(work: Path) -> None:
    with instance("gw", CONFIG, work, "cancel") as cfg:
        res = call(work, pbx(), v6peer(), target=STAND_IN, flow="cancel")
        legs = relay_legs(cfg)
    assert res.uac_rc == 0 and res.uas_rc == 0, res.uac.out.read_text(errors="replace")[-2000:]
    assert first(res.uac.received(), "SIP/2.0 487")
    assert legs == 0


def test_busy_frees_the_legs(work: Path) -> None:
    with instance("gw", CONFIG, work, "busy") as cfg:
        res = call(work, pbx(), v6peer(), target=STAND_IN, flow="busy")
        legs = relay_legs(cfg)
    assert res.uac_rc == 0 and res.uas_rc == 0, res.uac.out.read_text(errors="replace")[-2000:]
    no_literal_of_family(first(res.uac.received(), "SIP/2.0 486"), 6)
    assert legs == 0


def test_forked_early_dialogs(work: Path) -> None:
    with instance("gw", CONFIG, work, "fork"):
        res = call(work, pbx(), v6peer(), target=STAND_IN, flow="fork")
    ok(res)
    early = [parse_message(m) for m in res.uac.received() if m.startswith(b"SIP/2.0 183")]
    tags = {re.search(r"tag=(\w+)", e.header_text("to") or "").group(1) for e in early}  # type: ignore[union-attr]
    assert len(early) == 2 and len(tags) == 2
    for e in early:
        assert media_of(e)[0] == "192.0.2.1"
        no_literal_of_family(e, 6)


def test_register_of_ipv6_phone_gets_a_dynamic_stand_in_and_is_called(work: Path) -> None:
    phone = plain("dspeer", "2001:db8:3::30", 6000)
    with instance("gw", CONFIG, work, "reg") as cfg:
        reg = call(work, phone, pbx(), target=BOX6, flow="register")
        assert reg.uac_rc == 0 and reg.uas_rc == 0
        register = first(reg.uas.received(), "REGISTER")
        no_literal_of_family(register, 6)
        contact = re.search(rb"Contact: <sip:pbx@([\d.]+):5060>", register.data)
        assert contact is not None, register.data
        stand_in = contact.group(1).decode()
        assert stand_in.startswith("100.64.46.") and stand_in != "100.64.46.20"
        assert status("gw", cfg)["daemon"]["stand_ins"]["dynamic"] == 1
        res = call(work, pbx(), phone, target=f"{stand_in}:5060")
    ok(res)
    assert first(res.uas.received(), "INVITE").data.startswith(b"INVITE sip:bob@[2001:db8:3::30]:5060 ")


def test_ipv4_and_ipv6_peers_at_once(work: Path) -> None:
    results: dict[str, CallResult] = {}

    def run(name: str, *args, **kw) -> None:  # type: ignore[no-untyped-def]
        results[name] = call(work, *args, **kw)

    with instance("gw", CONFIG, work, "mixed"):
        t4 = threading.Thread(
            target=run, args=("v4", pbx(5062, 7010), plain("v4peer", "198.51.100.20", 6010))
        )
        t6 = threading.Thread(target=run, args=("v6", pbx(5060, 7000), v6peer()), kwargs={"target": STAND_IN})
        t4.start()
        t6.start()
        t4.join(90)
        t6.join(90)
    ok(results["v4"])
    ok(results["v6"])
    v4 = results["v4"]
    for method in ("INVITE", "ACK", "BYE"):
        assert first(v4.uas.received(), method).data == first(v4.uac.sent(), method).data
    assert media_of(first(v4.uac.received(), "SIP/2.0 200")) == ("198.51.100.20", 6010)  # no relay


def test_no_open_relay(work: Path) -> None:
    """A third host sending to the relay's outside port reaches nobody."""
    marker = "s46-intruder"
    got_marker = Counter("pbx", 4, "INPUT", f"-m string --string {marker} --algo bm")
    try:
        with instance("gw", CONFIG, work, "open") as cfg:
            uac, uas = start_call(work, pbx(), v6peer(), target=STAND_IN, duration_ms=2500)
            time.sleep(1.0)
            relay_port = media_of(first(uas.received(), "INVITE"))[1]
            for port in (relay_port, relay_port + 1):
                ns(
                    "dspeer",
                    "python3",
                    "-c",
                    "import socket; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
                    f"for i in range(20): s.sendto(b'{marker}' * 10, ('2001:db8:1::1', {port}))",
                )
            assert uac.wait(60) == 0 and uas.wait(30) == 0
            rejected = status("gw", cfg)["daemon"]["relay"].get("rejected", 0)
        assert got_marker.packets() == 0
        assert rejected >= 40
    finally:
        got_marker.remove()


def test_relay_sockets_back_to_zero_after_10000_calls(work: Path) -> None:
    """10,000 translated calls (offer and answer each open a relay stream; BYE closes it)."""
    calls, rate = 10000, 250
    keys = lambda d: [x for k, v in d.items() for x in ("-key", k, v)]  # noqa: E731
    common = ["-buff_size", "4194304", "-nostdin", "-m", str(calls), "-trace_stat", "-fd", "1"]
    with instance("gw", CONFIG, work, "many") as cfg:
        uas = ns_popen(
            "v6peer",
            "timeout",
            "120",
            "sipp",
            "-sf",
            str(SCENARIOS / "uas_load.xml"),
            "-i",
            "2001:db8:1::20",
            "-p",
            "5060",
            *common,
            "-stf",
            str(work / "uas.csv"),
            *keys(v6peer().keys),
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        uac = ns(
            "pbx",
            "timeout",
            "120",
            "sipp",
            "-sf",
            str(SCENARIOS / "uac_load.xml"),
            "-i",
            "192.0.2.10",
            "-p",
            "5060",
            "-r",
            str(rate),
            *common,
            "-stf",
            str(work / "uac.csv"),
            *keys(pbx().keys),
            "-s",
            "bob",
            STAND_IN,
            check=False,
            timeout=150,
            cwd=work,
        )
        uas.wait(30)
        for _ in range(5):  # the relay reports its figures once a second
            st = status("gw", cfg)["daemon"]
            if st["relay"].get("sockets") == 0:
                break
    last = list(csv.DictReader((work / "uac.csv").open(), delimiter=";"))[-1]
    assert int(last["SuccessfulCall(C)"]) == calls and int(last["FailedCall(C)"]) == 0, uac.stdout[-500:]
    assert st["counters"]["translated"] >= 6 * calls and st["counters"]["errors"] == 0
    assert st["relay"]["legs"] == 0 and st["relay"]["sockets"] == 0, st["relay"]


RECEIVE_ONE = (
    "import socket,sys; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
    "s.bind(('2001:db8:1::20', 5060)); s.settimeout(10); sys.stdout.write(s.recv(65535).hex())"
)


def test_message_growing_past_the_path_mtu_is_fragmented_and_delivered(work: Path) -> None:
    # Every Record-Route value grows by five bytes (192.0.2.10 -> [2001:db8:1::1]): take as many
    # as still fit one 1280-byte IPv6 packet (1232 bytes of UDP payload) before translation.
    def build(n: int) -> bytes:
        routes = "".join(f"Record-Route: <sip:192.0.2.10:5060;lr;n={i}>\r\n" for i in range(n))
        return (
            "INVITE sip:bob@100.64.46.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5080;branch=z9hG4bK-mtu\r\n"
            f"{routes}From: <sip:pbx@192.0.2.10:5080>;tag=1\r\nTo: <sip:bob@100.64.46.20>\r\n"
            "Call-ID: mtu@pbx\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@192.0.2.10:5080>\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    n = next(n for n in range(60, 0, -1) if len(build(n)) < 1232)
    invite = build(n)
    growth = (
        5 * (n + 3) + 2 * 4
    )  # routes, Via, From, Contact (+5 each); R-URI and To: stand-in -> [peer] (+4)
    assert len(invite) + 5 * (n + 3) > 1232  # too big for one packet after translation
    try:
        for name, dev in (("gw", "v6p0"), ("v6peer", "eth0")):
            ns(name, "ip", "link", "set", dev, "mtu", "1280")
        with instance("gw", CONFIG, work, "mtu"):
            listener = ns_popen("v6peer", "python3", "-c", RECEIVE_ONE, stdout=subprocess.PIPE)
            time.sleep(0.5)
            ns(
                "pbx",
                "python3",
                "-c",
                "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                "s.bind(('192.0.2.10', 5080)); s.sendto(bytes.fromhex(sys.argv[1]), ('100.64.46.20', 5060))",
                invite.hex(),
            )
            out, _ = listener.communicate(timeout=15)
    finally:
        for name, dev in (("gw", "v6p0"), ("v6peer", "eth0")):
            ns(name, "ip", "link", "set", dev, "mtu", "1500", check=False)
    got = bytes.fromhex(out.decode())
    assert len(got) > 1232 and len(got) == len(invite) + growth, (len(got), len(invite), growth)
    msg = parse_message(got)
    assert got.startswith(b"INVITE sip:bob@[2001:db8:1::20]:5060 SIP/2.0\r\n")
    assert b"192.0.2.10" not in got.replace(b"mtu@pbx", b"") and len(msg.fields("record-route")) == n


def test_rtcp_is_relayed_both_ways(work: Path) -> None:
    """RTCP on the legs' odd ports, to the port after the SDP's RTP port, latched on return."""
    send = (
        "import socket,sys; fam=socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET; "
        "s=socket.socket(fam, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2]))); "
        "[s.sendto(b'\\x81\\xc8' + bytes(26), (sys.argv[3], int(sys.argv[4]))) for _ in range(10)]"
    )
    at_peer = Counter("v6peer", 6, "INPUT", "--dport 6001")
    at_pbx = Counter("pbx", 4, "INPUT", "--dport 7101")
    try:
        with instance("gw", CONFIG, work, "rtcp"):
            uac, uas = start_call(work, pbx(), v6peer(), target=STAND_IN, duration_ms=3000)
            time.sleep(1.2)
            inside_leg = media_of(first(uac.received(), "SIP/2.0 200"))[1]
            outside_leg = media_of(first(uas.received(), "INVITE"))[1]
            ns("pbx", "python3", "-c", send, "192.0.2.10", "7101", "192.0.2.1", str(inside_leg + 1))
            time.sleep(0.3)
            ns(
                "v6peer",
                "python3",
                "-c",
                send,
                "2001:db8:1::20",
                "6101",
                "2001:db8:1::1",
                str(outside_leg + 1),
            )
            assert uac.wait(60) == 0 and uas.wait(30) == 0
        assert at_peer.packets() == 10  # PBX -> peer: to the peer's RTP port + 1
        assert at_pbx.packets() == 10  # peer -> PBX: back to where the PBX's RTCP came from
    finally:
        at_peer.remove()
        at_pbx.remove()

"""Fixup through a real NFQUEUE, with real sipp peers in the lab: what the far end received."""

from __future__ import annotations

import ipaddress
import socket
import time
from pathlib import Path

from sipnat46.sdp import parse_sdp
from sipnat46.sip.addrs import parse_name_addr, split_values
from sipnat46.sip.body import sdp_spans
from sipnat46.sip.message import SipMessage
from sipnat46.sip.via import parse_via_values
from tests.e2e.calls import V4, V6, call, plain, rigid
from tests.e2e.lab import daemon_pid, first, instance, kill9, ns, ns_popen, sipnat46_bin, status

HOST = """placement = "host"
[inside]
pbx = ["192.0.2.130"]
[media]
relay = "off"
[queue]
number = 47
"""
GATEWAY = """placement = "gateway"
[inside]
pbx = ["192.0.2.10", "192.0.2.130", "2001:db8:5::10", "2001:db8:6::10"]
[media]
relay = "off"
[queue]
number = 48
"""
RTP_MIN = 45  # of the 50 packets each side streams


def addresses(msg: SipMessage) -> dict[str, set[str]]:
    """Every address a message names where a peer would use it, by field."""
    data = msg.data
    out: dict[str, set[str]] = {}
    for h in msg.fields("via"):
        for v in parse_via_values(data, h.value_start, h.value_end):
            out.setdefault("via", set()).add(v.sent_by.text)
    for name in ("contact", "from", "to"):
        for h in msg.fields(name):
            for s, e in split_values(data, h.value_start, h.value_end):
                uri = parse_name_addr(data, s, e).uri
                if uri is not None and uri.host is not None:
                    out.setdefault(name, set()).add(uri.host.text)
    for s, e in sdp_spans(msg):
        sd = parse_sdp(data, s, e)
        for a in (sd.origin, sd.connection, *(m.connection for m in sd.media)):
            if a is not None:
                out.setdefault("sdp", set()).add(a.text)
    return out


def assert_only(msg: SipMessage, expected: str, fields=("via", "contact", "sdp")) -> None:  # type: ignore[no-untyped-def]
    got = addresses(msg)
    for f in fields:
        assert got.get(f) == {expected}, f"{f}: {got.get(f)} in\n{msg.data.decode(errors='replace')}"


def no_literal_of_family(msg: SipMessage, family: int) -> None:
    head_and_body = msg.data.replace(msg.value(msg.first("call-id")), b"")  # type: ignore[arg-type]
    pattern = V4 if family == 4 else V6
    found = [m for m in pattern.findall(head_and_body) if _is_addr(m, family)]
    assert not found, f"IPv{family} literals left: {found}\n{msg.data.decode(errors='replace')}"


def _is_addr(raw: bytes, family: int) -> bool:
    try:
        return ipaddress.ip_address(raw.decode()).version == family
    except ValueError:
        return False


def assert_fixed_up(res, egress: str) -> None:  # type: ignore[no-untyped-def]
    """A rigid PBX's IPv6 call as the far end got it: the call completed; INVITE, ACK and BYE
    name ``egress`` in Via and Contact and no IPv4 literal; the INVITE's SDP names ``egress``;
    and the PBX got its own Via back, byte for byte."""
    assert res.uac_rc == 0 and res.uas_rc == 0, res.uac.out.read_text()
    got = res.uas.received()
    for method in ("INVITE", "ACK", "BYE"):
        msg = first(got, method)
        assert_only(msg, egress, ("via", "contact"))
        no_literal_of_family(msg, 4)
    assert_only(first(got, "INVITE"), egress, ("sdp",))
    sent_via = first(res.uac.sent(), "INVITE").header_text("via")
    assert first(res.uac.received(), "SIP/2.0 200").header_text("via") == sent_via


def test_host_placement_ipv4_literals_over_ipv6(work: Path) -> None:
    with instance("rpbx", HOST, work, "host6") as cfg:
        res = call(
            work,
            rigid("rpbx", "2001:db8:5::10", "192.0.2.130", 7000),
            plain("dspeer", "2001:db8:3::30", 6000),
        )
        st = status("rpbx", cfg)
    assert_fixed_up(res, "2001:db8:5::10")
    assert b"c=IN IP6 2001:db8:5::10\r\n" in first(res.uas.received(), "INVITE").data
    assert res.rtp_to_uas >= RTP_MIN and res.rtp_to_uac >= RTP_MIN, (res.rtp_to_uas, res.rtp_to_uac)
    c = st["daemon"]["counters"]
    assert c["rewritten"] >= 3 and c["errors"] == 0


def test_host_placement_ipv6_literals_over_ipv4(work: Path) -> None:
    with instance("rpbx", HOST, work, "host4"):
        res = call(
            work,
            rigid("rpbx", "192.0.2.130", "2001:db8:5::10", 7000),
            plain("dspeer", "203.0.113.30", 6000),
        )
    assert res.uac_rc == 0 and res.uas_rc == 0, res.uac.out.read_text()
    invite = first(res.uas.received(), "INVITE")
    assert_only(invite, "192.0.2.130")
    no_literal_of_family(invite, 6)
    assert b"c=IN IP4 192.0.2.130\r\n" in invite.data
    assert res.rtp_to_uas >= RTP_MIN and res.rtp_to_uac >= RTP_MIN, (res.rtp_to_uas, res.rtp_to_uac)


def test_host_placement_multihomed_each_uplink_its_own_address(work: Path) -> None:
    with instance("rpbx", HOST, work, "multi"):
        via_dspeer = call(
            work,
            rigid("rpbx", "::", "192.0.2.130", 7000, media="::"),
            plain("dspeer", "2001:db8:3::30", 6000),
            duration_ms=300,
        )
        via_v6peer = call(
            work,
            rigid("rpbx", "::", "192.0.2.130", 7000, media="::"),
            plain("v6peer", "2001:db8:1::20", 6000),
            duration_ms=300,
        )
    assert via_dspeer.uac_rc == 0 and via_v6peer.uac_rc == 0
    assert_only(first(via_dspeer.uas.received(), "INVITE"), "2001:db8:5::10", ("via", "contact"))
    assert_only(first(via_v6peer.uas.received(), "INVITE"), "2001:db8:6::10", ("via", "contact"))
    assert_only(first(via_v6peer.uas.received(), "INVITE"), "2001:db8:6::10", ("sdp",))


def test_gateway_placement_fixup(work: Path) -> None:
    with instance("gw", GATEWAY, work, "gwfix") as cfg:
        res = call(
            work,
            rigid("rpbx", "2001:db8:5::10", "192.0.2.130", 7000),
            plain("dspeer", "2001:db8:3::30", 6000),
        )
        st = status("gw", cfg)
    assert_fixed_up(res, "2001:db8:5::10")
    assert res.rtp_to_uas >= RTP_MIN and res.rtp_to_uac >= RTP_MIN
    assert st["daemon"]["counters"]["rewritten"] >= 3


def test_untouched_calls_arrive_byte_identical(work: Path) -> None:
    with instance("gw", GATEWAY, work, "gwsame") as cfg:
        v4 = call(work, plain("pbx", "192.0.2.10", 7000), plain("v4peer", "198.51.100.20", 6000))
        v6 = call(
            work,
            plain("rpbx", "2001:db8:5::10", 7000),
            plain("dspeer", "2001:db8:3::30", 6000),
            duration_ms=300,
        )
        st = status("gw", cfg)
    for res in (v4, v6):
        assert res.uac_rc == 0 and res.uas_rc == 0
        for method in ("INVITE", "ACK", "BYE"):
            assert first(res.uas.received(), method).data == first(res.uac.sent(), method).data
        for reply in ("SIP/2.0 180", "SIP/2.0 200"):
            assert first(res.uac.received(), reply).data == first(res.uas.sent(), reply).data
    assert v4.rtp_to_uas >= RTP_MIN and v4.rtp_to_uac >= RTP_MIN
    c = st["daemon"]["counters"]
    assert c["seen"] >= 12 and c["rewritten"] == 0 and c["unchanged"] >= 12


def test_kill9_mid_call_sip_keeps_flowing_and_the_watchdog_cleans(work: Path) -> None:
    with instance("gw", GATEWAY, work, "gwkill") as cfg:
        pid = daemon_pid("gw", cfg)

        def kill_after_answer() -> None:
            time.sleep(1.0)  # INVITE/200/ACK have crossed the daemon by now
            kill9(pid)

        res = call(
            work,
            rigid("rpbx", "2001:db8:5::10", "192.0.2.130", 7000),
            plain("dspeer", "2001:db8:3::30", 6000),
            duration_ms=2500,
            during=kill_after_answer,
        )
        # SIP passed anyway (--queue-bypass), and the watchdog removed the rules
        saved = "\n".join(ns("gw", tool).stdout for tool in ("iptables-save", "ip6tables-save"))
        assert "sipnat46:gwkill" not in saved
        log = (Path("/run/sipnat46") / "gwkill.log").read_text()
        assert f"daemon {pid} died without cleaning up: removed its rules" in log
        st = ns("gw", sipnat46_bin(), "--config", str(cfg), "status", check=False)
        assert st.returncode == 3 and "not running" in st.stdout
    assert res.uac_rc == 0 and res.uas_rc == 0, res.uac.out.read_text()
    assert b"[2001:db8:5::10]" in first(res.uas.received(), "INVITE").data  # rewritten while alive
    assert b"192.0.2.130" in first(res.uas.received(), "BYE").data  # passed unmodified after the kill


def test_garbage_datagram_is_forwarded_unchanged_and_counted(work: Path) -> None:
    garbage = b"\x00\x01 this is not SIP \xff\r\n\r\n"
    with instance("gw", GATEWAY, work, "gwjunk") as cfg:
        listener = ns_popen(
            "dspeer",
            "python3",
            "-c",
            "import socket,sys; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
            "s.bind(('2001:db8:3::30', 5060)); s.settimeout(10); "
            "sys.stdout.buffer.write(s.recv(4096).hex().encode())",
            stdout=__import__("subprocess").PIPE,
        )
        time.sleep(0.5)
        ns(
            "rpbx",
            "python3",
            "-c",
            "import socket; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
            f"s.bind(('2001:db8:5::10', 5060)); s.sendto(bytes.fromhex('{garbage.hex()}'), ('2001:db8:3::30', 5060))",
        )
        out, _ = listener.communicate(timeout=15)
        st = status("gw", cfg)
    assert bytes.fromhex(out.decode()) == garbage
    assert st["daemon"]["counters"]["unparsed"] >= 1 and st["daemon"]["counters"]["errors"] == 0


def test_bad_config_exits_2_naming_the_key(work: Path) -> None:
    bad = work / "bad.toml"
    bad.write_text('[inside]\npbx = ["192.0.2.10"]\n[queue]\nnumbr = 3\n')
    for cmd in ("start", "run", "status", "stop"):
        res = ns("gw", sipnat46_bin(), "--config", str(bad), cmd, check=False)
        assert res.returncode == 2, (cmd, res.stderr)
        assert res.stderr.strip().count("\n") == 0 and "queue.numbr" in res.stderr
    bad.write_text('[inside]\npbx = ["192.0.2.999"]\n')
    res = ns("gw", sipnat46_bin(), "--config", str(bad), "start", check=False)
    assert res.returncode == 2 and "inside.pbx[0]" in res.stderr


def test_socket_module_is_used(work: Path) -> None:
    # keeps the socket import honest for the helpers above (AF_INET6 exists on this box)
    assert socket.has_ipv6


def test_oversized_datagram_passes_unmodified_and_is_counted(work: Path) -> None:
    """Bigger than the queue copies (3840 bytes), or arriving as fragments: never half-rewritten."""
    body = "a=x-filler:" + "z" * 4800 + "\r\n"
    sdp = f"v=0\r\no=pbx 1 1 IN IP4 192.0.2.130\r\ns=-\r\nc=IN IP4 192.0.2.130\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n{body}"
    invite = (
        "INVITE sip:bob@[2001:db8:3::30]:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.130:5060;branch=z9hG4bK-big\r\n"
        "From: <sip:pbx@192.0.2.130>;tag=1\r\nTo: <sip:bob@[2001:db8:3::30]>\r\nCall-ID: big@pbx\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:pbx@192.0.2.130>\r\nContent-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()
    assert len(invite) > 3840
    with instance("gw", GATEWAY, work, "gwbig") as cfg:
        listener = ns_popen(
            "dspeer", "python3", "-c",
            "import socket,sys; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
            "s.bind(('2001:db8:3::30', 5060)); s.settimeout(10); sys.stdout.write(s.recv(65535).hex())",
            stdout=__import__("subprocess").PIPE,
        )  # fmt: skip
        time.sleep(0.5)
        ns("rpbx", "python3", "-c", "import socket,sys; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
           "s.bind(('2001:db8:5::10', 5060)); s.sendto(bytes.fromhex(sys.argv[1]), ('2001:db8:3::30', 5060))",
           invite.hex())  # fmt: skip
        out, _ = listener.communicate(timeout=15)
        c = status("gw", cfg)["daemon"]["counters"]
    assert bytes.fromhex(out.decode()) == invite  # delivered whole and untouched
    # without conntrack nothing reassembles: the first fragment reaches the queue
    assert c["truncated"] + c["fragments"] >= 1 and c["rewritten"] == 0 and c["errors"] == 0


def test_gateway_masquerading_ipv6_writes_the_box_address(work: Path) -> None:
    """When the box masquerades a family, the egress address is its own address towards the
    destination (kernel route lookup), not the PBX's: what the far end sees on the wire."""
    masq = GATEWAY.replace("[media]", '[outside]\nmasquerade = ["ipv6"]\n\n[media]')
    ns("gw", "ip6tables", "-t", "nat", "-A", "POSTROUTING", "-o", "dsp0", "-j", "MASQUERADE")
    try:
        with instance("gw", masq, work, "gwmasq"):
            res = call(
                work,
                rigid("rpbx", "2001:db8:5::10", "192.0.2.130", 7000),
                plain("dspeer", "2001:db8:3::30", 6000),
            )
    finally:
        ns("gw", "ip6tables", "-t", "nat", "-D", "POSTROUTING", "-o", "dsp0", "-j", "MASQUERADE", check=False)
    assert_fixed_up(res, "2001:db8:3::1")
    assert res.rtp_to_uas >= RTP_MIN  # the PBX's media goes out through the masquerade

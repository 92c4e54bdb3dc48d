"""SIP over TCP through the stream proxy: sipp over TCP (-t t1 and -t tn) for fixup and
translate with RTP, segmentation, two messages in one send, resets, many connections, TLS,
and kill -9 in the middle of a connection."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sipnat46.sip.message import parse_message
from tests.e2e.calls import call, plain, rigid
from tests.e2e.lab import ROOT, daemon_pid, first, instance, kill9, ns, ns_popen, sipnat46_bin, status
from tests.e2e.test_fixup import GATEWAY, HOST, RTP_MIN, assert_fixed_up, assert_only, no_literal_of_family
from tests.e2e.test_translate import CONFIG, STAND_IN, media_of, ok

TRANSLATE = CONFIG.replace("number = 50", "number = 53")
FIXUP = GATEWAY.replace("number = 48", "number = 54")


@pytest.mark.parametrize("transport", ["t1", "tn"])
def test_translate_outbound_over_tcp(work: Path, transport: str) -> None:
    with instance("gw", TRANSLATE, work, f"tcpout{transport}") as cfg:
        res = call(
            work,
            plain("pbx", "192.0.2.10", 7000),
            plain("v6peer", "2001:db8:1::20", 6000),
            target=STAND_IN,
            transport=transport,
        )
        st = status("gw", cfg)["daemon"]
    ok(res)
    invite = first(res.uas.received(), "INVITE")
    assert invite.data.startswith(b"INVITE sip:bob@[2001:db8:1::20]:5060 SIP/2.0\r\n")
    assert b"SIP/2.0/TCP [2001:db8:1::1]:" in invite.data  # tn: the port is the call's own
    no_literal_of_family(invite, 4)
    assert media_of(invite)[0] == "2001:db8:1::1"
    answer = first(res.uac.received(), "SIP/2.0 200")
    no_literal_of_family(answer, 6)
    assert media_of(answer)[0] == "192.0.2.1"
    assert st["tcp"]["messages"] >= 5 and st["tcp"]["rewritten"] >= 5 and st["tcp"]["open"] == 0
    assert st["counters"]["errors"] == 0 and st["relay"]["legs"] == 0


def test_translate_inbound_over_tcp(work: Path) -> None:
    with instance("gw", TRANSLATE, work, "tcpin"):
        res = call(
            work,
            plain("v6peer", "2001:db8:1::20", 6000),
            plain("pbx", "192.0.2.10", 7000),
            target="[2001:db8:1::1]:5060",
            transport="t1",
        )
    ok(res)
    invite = first(res.uas.received(), "INVITE")
    no_literal_of_family(invite, 6)
    assert_only(invite, "100.64.46.20", ("via", "contact", "from"))
    assert media_of(first(res.uac.received(), "SIP/2.0 200"))[0] == "2001:db8:1::1"


@pytest.mark.parametrize("transport", ["t1", "tn"])
def test_fixup_over_tcp_rigid_pbx(work: Path, transport: str) -> None:
    with instance("gw", FIXUP, work, f"tcpfix{transport}"):
        res = call(
            work,
            rigid("rpbx", "2001:db8:5::10", "192.0.2.130", 7000),
            plain("dspeer", "2001:db8:3::30", 6000),
            transport=transport,
        )
    if transport == "t1":
        assert_fixed_up(res, "2001:db8:5::10")
    else:  # sipp -t tn does not log the INVITE it buffers while connecting: check the rest
        assert res.uac_rc == 0 and res.uas_rc == 0, res.uac.out.read_text()
        for method in ("INVITE", "ACK", "BYE"):
            msg = first(res.uas.received(), method)
            assert_only(msg, "2001:db8:5::10", ("via", "contact"))
            no_literal_of_family(msg, 4)
        via = first(res.uac.received(), "SIP/2.0 200").header_text("via") or ""
        assert via.startswith("SIP/2.0/TCP 192.0.2.130:")  # the PBX's own Via, restored
    assert res.rtp_to_uas >= RTP_MIN and res.rtp_to_uac >= RTP_MIN


def test_fixup_over_tcp_inbound_to_the_rigid_pbx(work: Path) -> None:
    with instance("gw", FIXUP, work, "tcpfixin") as cfg:
        res = call(
            work,
            plain("dspeer", "2001:db8:3::30", 6000),
            rigid("rpbx", "2001:db8:5::10", "192.0.2.130", 7000),
            target="[2001:db8:5::10]:5060",
            transport="t1",
        )
        st = status("gw", cfg)["daemon"]["tcp"]
    assert res.uac_rc == 0 and res.uas_rc == 0, res.uac.out.read_text()
    answer = first(res.uac.received(), "SIP/2.0 200")  # the rigid PBX's answer, as the peer got it
    assert_only(answer, "2001:db8:5::10", ("contact", "sdp"))
    no_literal_of_family(answer, 4)
    assert res.rtp_to_uas >= RTP_MIN and res.rtp_to_uac >= RTP_MIN
    assert st["connections"] == 1 and st["rewritten"] >= 2


# -- scripted connections: a python client in one namespace, tcp_peer.py in another --------------

PEER = Path(__file__).with_name("tcp_peer.py")
_RUNS = itertools.count()


@contextmanager
def peer(work: Path, where: str, addr: str, port: int, *flags: str, seconds: float = 20) -> Iterator[Path]:
    """tcp_peer.py serving in a namespace; yields where its record will be (read after exit)."""
    out = work / f"peer-{where}-{port}-{next(_RUNS)}.json"  # each run its own record
    proc = ns_popen(
        where,
        sys.executable,
        str(PEER),
        "serve",
        addr,
        str(port),
        str(out),
        *flags,
        "--seconds",
        str(seconds),
    )
    for _ in range(100):
        if Path(str(out) + ".ready").exists():
            break
        time.sleep(0.05)
    try:
        yield out
    finally:
        try:
            proc.wait(seconds + 10)
        except subprocess.TimeoutExpired:
            proc.kill()


def client(where: str, code: str, *args: str, timeout: float = 60) -> object:
    """Run ``code`` (python, with tcp_peer's helpers imported) in a namespace; its JSON output."""
    prelude = f"import json, socket, sys, time\nsys.path.insert(0, {str(ROOT)!r})\nfrom tests.e2e.tcp_peer import *\n"
    res = ns(where, sys.executable, "-c", prelude + code, *args, timeout=timeout, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def request(method: str, n: int, body: bytes = b"", ctype: str = "application/sdp") -> bytes:
    head = (
        f"{method} sip:bob@100.64.46.20:5060 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK-c{n}\r\n"
        f"From: <sip:pbx@192.0.2.10:5060>;tag=c{n}\r\nTo: <sip:bob@100.64.46.20:5060>\r\nCall-ID: c{n}-tcp\r\n"
        f"CSeq: 1 {method}\r\nContact: <sip:pbx@192.0.2.10:5060>\r\n"
    )
    if body:
        head += f"Content-Type: {ctype}\r\n"
    return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def records(out: Path) -> list[list[bytes]]:
    return [[m.encode("latin-1") for m in conn] for conn in json.loads(out.read_text())]


def test_two_messages_in_one_send_and_requests_both_ways(work: Path) -> None:
    both = request("OPTIONS", 1) + request("OPTIONS", 2)
    with instance("gw", TRANSLATE, work, "tcptwo") as cfg:
        with peer(work, "v6peer", "2001:db8:1::20", 5060, "--answer", "--ask", "--stop") as out:
            got = client("pbx", CLIENT_TWO, both.hex())
        st = status("gw", cfg)["daemon"]["tcp"]
    (conn,) = records(out)
    sip = [m for m in conn if m.strip() and not m.startswith(b"<")]
    assert [m.split(b" ", 1)[0] for m in sip] == [b"OPTIONS", b"OPTIONS", b"SIP/2.0"]
    for m in sip:  # each arrived whole, rewritten for IPv6
        assert m.startswith(b"SIP/2.0") or m.startswith(b"OPTIONS sip:bob@[2001:db8:1::20]:5060 ")
        no_literal_of_family(parse_message(m), 4)
    assert first(sip, "SIP/2.0 200").header_text("cseq") == "1 OPTIONS"  # the PBX's answer to the peer
    replies = [parse_message(m.encode("latin-1")) for m in got if m.strip()]  # type: ignore[union-attr]
    assert sorted(r.data.split(b" ", 1)[0] for r in replies) == [b"OPTIONS", b"SIP/2.0", b"SIP/2.0"]
    for r in replies:
        no_literal_of_family(r, 6)
        assert_only(r, "100.64.46.20", ("contact",))
    assert st["messages"] == 6 and st["open"] == 0


CLIENT_TWO = """
s = socket.create_connection(("100.64.46.20", 5060), timeout=5)
s.sendall(bytes.fromhex(sys.argv[1]))  # two requests, one send
got, buf = [], bytearray()
while len([m for m in got if m.strip()]) < 3:
    data = s.recv(65536)
    if not data:
        break
    buf += data
    got += split_messages(buf)
for m in got:
    if m.startswith(b"OPTIONS"):  # the peer's own request, over our connection
        s.sendall(answer(m, "192.0.2.10:5060"))
time.sleep(0.3)
s.close()
print(json.dumps([m.decode("latin-1") for m in got]))
"""


def big_invite() -> bytes:
    """An INVITE of over 3,000 bytes: an SDP with many attribute lines."""
    sdp = "v=0\r\no=pbx 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n"
    sdp += "".join(f"a=x-filler-{i}:{'z' * 30}\r\n" for i in range(80))
    return request("INVITE", 3, sdp.encode())


@contextmanager
def mtu(value: int, *links: tuple[str, str]) -> Iterator[None]:
    for where, dev in links:
        ns(where, "ip", "link", "set", dev, "mtu", str(value))
    try:
        yield
    finally:
        for where, dev in links:
            ns(where, "ip", "link", "set", dev, "mtu", "1500")


def test_large_invite_over_small_mtu_in_small_writes(work: Path) -> None:
    invite = big_invite()
    assert len(invite) > 3000
    # 1280 on the IPv6 side, 576 on the PBX's: the INVITE crosses both as several segments;
    # the client also writes it in pieces, the body well after the headers, after a keep-alive.
    with mtu(1280, ("gw", "v6p0"), ("v6peer", "eth0")), mtu(576, ("gw", "pbx0"), ("pbx", "eth0")):
        with instance("gw", TRANSLATE, work, "tcpbig") as cfg:
            with peer(work, "v6peer", "2001:db8:1::20", 5060, "--stop") as out:
                client("pbx", CLIENT_PIECES, invite.hex())
            st = status("gw", cfg)["daemon"]
    (conn,) = records(out)
    assert conn[0] == b"\r\n\r\n" and conn[-1] == b"<eof>"
    (got,) = [m for m in conn if m.startswith(b"INVITE")]
    msg = parse_message(got)
    assert msg.data.startswith(b"INVITE sip:bob@[2001:db8:1::20]:5060 ")
    assert int(msg.header_text("content-length") or 0) == len(msg.body)  # type: ignore[arg-type]
    assert msg.body.count(b"a=x-filler-") == 80 and b"c=IN IP6 2001:db8:1::1" in msg.body
    no_literal_of_family(msg, 4)
    assert st["tcp"]["keepalives"] == 1 and st["tcp"]["rewritten"] == 1


CLIENT_PIECES = """
data = bytes.fromhex(sys.argv[1])
s = socket.create_connection(("100.64.46.20", 5060), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.sendall(b"\\r\\n\\r\\n")
head = data.index(b"\\r\\n\\r\\n") + 4
for i in range(0, len(data), 700):
    s.sendall(data[i : i + 700])
    time.sleep(0.1 if i + 700 >= head else 0.02)
time.sleep(0.5)
s.close()
print("[]")
"""


def test_peer_reset_and_either_side_closing(work: Path) -> None:
    with instance("gw", TRANSLATE, work, "tcprst") as cfg:
        with peer(work, "v6peer", "2001:db8:1::20", 5060, "--reset", "--stop") as out:
            got = client("pbx", CLIENT_READ_END, request("OPTIONS", 4).hex())
        reset_st = status("gw", cfg)["daemon"]["tcp"]
        with peer(work, "v6peer", "2001:db8:1::20", 5060, "--answer", "--stop") as out2:
            client("pbx", CLIENT_CLOSE, request("OPTIONS", 5).hex())
        close_st = status("gw", cfg)["daemon"]["tcp"]
        with peer(work, "v6peer", "2001:db8:1::20", 5060, "--answer", "--close", "--stop"):
            closed = client("pbx", CLIENT_READ_ALL, request("OPTIONS", 6).hex())
        fin_st = status("gw", cfg)["daemon"]["tcp"]
    assert closed == ["SIP/2.0 200 OK", "eof"]  # the answer, then the peer's close, in order
    assert fin_st["open"] == 0 and fin_st["resets"] == 1
    assert got == "reset"  # the peer's reset reached the PBX as a reset
    assert records(out)[0][0].startswith(b"OPTIONS")
    assert reset_st["resets"] == 1 and reset_st["open"] == 0
    assert records(out2)[0][-1] == b"<eof>"  # the PBX's close reached the peer
    assert close_st["open"] == 0 and close_st["resets"] == 1


CLIENT_READ_END = """
s = socket.create_connection(("100.64.46.20", 5060), timeout=5)
s.sendall(bytes.fromhex(sys.argv[1]))
try:
    print(json.dumps("eof" if s.recv(65536) == b"" else "data"))
except ConnectionResetError:
    print(json.dumps("reset"))
"""

CLIENT_READ_ALL = """
s = socket.create_connection(("100.64.46.20", 5060), timeout=5)
s.sendall(bytes.fromhex(sys.argv[1]))
seen, buf = [], bytearray()
while True:
    data = s.recv(65536)
    if not data:
        seen.append("eof")
        break
    buf += data
    seen += [m.split(b"\\r\\n", 1)[0].decode() for m in split_messages(buf) if m.strip()]
print(json.dumps(seen))
"""

CLIENT_CLOSE = """
s = socket.create_connection(("100.64.46.20", 5060), timeout=5)
s.sendall(bytes.fromhex(sys.argv[1]))
s.recv(65536)
s.close()
time.sleep(0.5)
print("[]")
"""


def test_a_thousand_connections_held_open_then_closed(work: Path) -> None:
    with instance("gw", TRANSLATE, work, "tcpmany") as cfg:
        with peer(work, "v6peer", "2001:db8:1::20", 5060, "--stop", seconds=60) as out:
            held = client("pbx", CLIENT_MANY, "1000", str(cfg), timeout=120)
        after = status("gw", cfg)["daemon"]["tcp"]
    conns = records(out)
    assert len(conns) == 1000
    assert all(c[0].startswith(b"OPTIONS sip:bob@[2001:db8:1::20]") and c[-1] == b"<eof>" for c in conns)
    assert held["open"] == 1000, held  # type: ignore[index]
    assert after["open"] == 0 and after["connections"] == 1000 and after["messages"] == 1000


CLIENT_MANY = """
import resource, subprocess
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
socks = []
for i in range(int(sys.argv[1])):
    s = socket.create_connection(("100.64.46.20", 5060), timeout=10)
    s.sendall(request_bytes(i))
    socks.append(s)
for _ in range(40):  # the daemon writes its figures once a second
    time.sleep(0.5)
    st = json.loads(open("/run/sipnat46/tcpmany.json").read())["tcp"]
    if st["messages"] >= len(socks):
        break
for s in socks:
    s.close()
time.sleep(1.0)
print(json.dumps(st))
"""


def test_tls_is_carried_untouched_counted_and_logged(work: Path) -> None:
    hello = (
        bytes.fromhex("160301002a0100002603030000") + b"192.0.2.10 sip:bob@100.64.46.20" + bytes(range(40))
    )
    with instance("gw", TRANSLATE, work, "tcptls") as cfg:
        pid = daemon_pid("gw", cfg)
        with peer(work, "v6peer", "2001:db8:1::20", 5061, "--raw", "--stop") as on_5061:
            client("pbx", CLIENT_RAW, "5061", hello.hex())
        with peer(work, "v6peer", "2001:db8:1::20", 5060, "--raw", "--stop") as on_5060:
            client("pbx", CLIENT_RAW, "5060", hello.hex())  # TLS records on a SIP port
        st = status("gw", cfg)["daemon"]["tcp"]  # waits for the daemon's next figures
        text = ns("gw", sipnat46_bin(), "--config", str(cfg), "status", check=False).stdout
    for out in (on_5061, on_5060):
        (conn,) = records(out)
        assert b"".join(conn[:-1]) == hello and conn[-1] == b"<eof>"  # byte for byte
    assert st["tls"] == 2 and st["rewritten"] == 0
    assert "tls=2" in text
    log = (Path("/run/sipnat46") / "tcptls.log").read_text().splitlines()
    this_run = [line for line in log if f"[{pid}]" in line]  # the log outlives runs
    assert sum("TLS, carried encrypted and not fixed" in line for line in this_run) == 2


CLIENT_RAW = """
s = socket.create_connection(("100.64.46.20", int(sys.argv[1])), timeout=5)
data = bytes.fromhex(sys.argv[2])
s.sendall(data[:3])
time.sleep(0.1)
s.sendall(data[3:])
time.sleep(0.3)
s.close()
print("[]")
"""


def test_kill9_mid_connection_closes_it_cleanly_and_new_ones_pass(work: Path) -> None:
    ready, go = work / "connected", work / "killed"
    with instance("gw", FIXUP, work, "tcpkill") as cfg:
        pid = daemon_pid("gw", cfg)
        with peer(work, "dspeer", "2001:db8:3::30", 5060, "--answer", seconds=8) as out:
            proc = ns_popen(
                "rpbx",
                sys.executable,
                "-c",
                PRELUDE + CLIENT_KILLED,
                str(ready),
                str(go),
                stdout=subprocess.PIPE,
            )
            for _ in range(100):
                if ready.exists():
                    break
                time.sleep(0.05)
            kill9(pid)
            go.touch()
            got = json.loads(proc.communicate(timeout=30)[0])
        saved = ns("gw", "ip6tables-save").stdout + ns("gw", "iptables-save", "-t", "mangle").stdout
    assert got["first"].startswith("SIP/2.0 200") and "[2001:db8:5::10]" in got["first"]  # fixed up
    assert got["after_kill"] in ("eof", "reset")  # ended at once, nothing half-written
    # Rules gone (the watchdog): a new connection goes straight through, unmodified.
    assert "sipnat46:tcpkill" not in saved
    assert got["second"].startswith("SIP/2.0 200")
    second = [m for m in records(out)[1] if m.startswith(b"OPTIONS")]
    assert second and b"192.0.2.130" in second[0]  # the rigid PBX's literal, untouched now


PRELUDE = f"import json, socket, sys, time, os\nsys.path.insert(0, {str(ROOT)!r})\nfrom tests.e2e.tcp_peer import *\n"
CLIENT_KILLED = """
def opts(n):
    return (f"OPTIONS sip:x@[2001:db8:3::30] SIP/2.0\\r\\nVia: SIP/2.0/TCP 192.0.2.130:5060;branch=z9hG4bK-k{n}\\r\\n"
            f"From: <sip:pbx@192.0.2.130>;tag=k{n}\\r\\nTo: <sip:x@[2001:db8:3::30]>\\r\\nCall-ID: k{n}\\r\\n"
            f"CSeq: 1 OPTIONS\\r\\nContact: <sip:pbx@192.0.2.130:5060>\\r\\nContent-Length: 0\\r\\n\\r\\n").encode()
out = {}
s = socket.create_connection(("2001:db8:3::30", 5060), timeout=5)
s.sendall(opts(1))
out["first"] = s.recv(65536).decode("latin-1")
open(sys.argv[1], "w").close()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.02)
try:
    out["after_kill"] = "eof" if s.recv(65536) == b"" else "data"
except ConnectionResetError:
    out["after_kill"] = "reset"
except socket.timeout:
    out["after_kill"] = "hang"
for _ in range(50):  # until the watchdog has removed the rules
    time.sleep(0.1)
    try:
        s2 = socket.create_connection(("2001:db8:3::30", 5060), timeout=1)
        break
    except OSError:
        continue
s2.sendall(opts(2))
s2.settimeout(5)
out["second"] = s2.recv(65536).decode("latin-1")
print(json.dumps(out))
"""


def test_host_placement_over_tcp_both_directions(work: Path) -> None:
    host = HOST.replace("number = 47", "number = 55")
    with instance("rpbx", host, work, "tcphost") as cfg:
        out = call(
            work,
            rigid("rpbx", "2001:db8:5::10", "192.0.2.130", 7000),
            plain("dspeer", "2001:db8:3::30", 6000),
            transport="t1",
        )
        back = call(
            work,
            plain("dspeer", "2001:db8:3::30", 6002, 5062),
            rigid("rpbx", "2001:db8:5::10", "192.0.2.130", 7002),
            target="[2001:db8:5::10]:5060",
            transport="t1",
        )
        st = status("rpbx", cfg)["daemon"]["tcp"]
    assert_fixed_up(out, "2001:db8:5::10")
    assert out.rtp_to_uas >= RTP_MIN and out.rtp_to_uac >= RTP_MIN
    assert back.uac_rc == 0 and back.uas_rc == 0, back.uac.out.read_text()
    answer = first(back.uac.received(), "SIP/2.0 200")  # the rigid PBX's answer, as the peer got it
    assert_only(answer, "2001:db8:5::10", ("contact", "sdp"))
    no_literal_of_family(answer, 4)
    assert back.rtp_to_uas >= RTP_MIN and back.rtp_to_uac >= RTP_MIN
    assert st["connections"] == 2 and st["open"] == 0 and st["rewritten"] >= 6

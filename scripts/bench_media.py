"""Media relay benchmark: N concurrent bidirectional G.711-like RTP streams (20 ms, 172-byte
packets) IPv4 <-> IPv6 through sipnat46's built-in relay and, in the same run, through
rtpengine-daemon (Debian, userspace mode, driven with its ng protocol) as the anchor; plus
plain kernel forwarding IPv4 -> IPv4 as the floor of the load generators themselves (a small C
program, scripts/rtpgen.c, so that the generators are not the bottleneck).
Then the daemon's memory with 1,000 relayed calls set up through SIP.
Not a test: prints figures. Usage: scripts/bench-media [--streams 500] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bencodepy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.e2e.lab import lab, ns, ns_popen, sipnat46_bin, sipp, tone  # noqa: E402

PBX, PEER, V4PEER = "192.0.2.10", "2001:db8:1::20", "198.51.100.20"
GW_IN, GW_OUT = "192.0.2.1", "2001:db8:1::1"
BASE = 40000

HARNESS = """
import ipaddress, json, sys
from sipnat46.media import Endpoint, MediaSessions
from sipnat46.plan import Side
from sipnat46.relay import RelayPool
n, workers = int(sys.argv[1]), int(sys.argv[2])
ip = ipaddress.ip_address
media = MediaSessions(30000, 39999)
relay = RelayPool(3600, workers)
addrs = {Side.INSIDE: ip("%s"), Side.OUTSIDE: ip("%s")}
legs = []
for i in range(n):
    media.anchor(f"c{i}", 0, Side.INSIDE, Endpoint(ip("%s"), %d + 2 * i), addrs)
    media.anchor(f"c{i}", 0, Side.OUTSIDE, Endpoint(ip("%s"), %d + 2 * i), addrs)
    (s,) = media.streams(f"c{i}")
    relay.update(s)
    legs.append([s.legs[Side.INSIDE].port, s.legs[Side.OUTSIDE].port])
import time
while relay.stats().get("sockets", 0) < 4 * n:  # every leg bound before traffic starts
    time.sleep(0.1)
    relay.events()
print(json.dumps(legs), flush=True)
sys.stdin.read()
relay.stop()
""" % (GW_IN, GW_OUT, PBX, BASE, PEER, BASE)  # noqa: UP031 - the harness uses {} itself


def build_generator(work: Path) -> Path:
    """Compile the C load generator (a Python one saturates the cores before the relay does)."""
    out = work / "rtpgen"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(ROOT / "scripts" / "rtpgen.c")], check=True)
    return out


def gens(work: Path, a: tuple[str, str, list], b: tuple[str, str, list], seconds: float) -> list[dict]:  # type: ignore[type-arg]
    procs = []
    for name, local, plan in (a, b):
        p = ns_popen(
            name,
            str(work / "rtpgen"),
            local,
            str(seconds),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=work,
        )
        procs.append((p, "".join(f"{lp} {ta} {tp}\n" for lp, ta, tp in plan).encode()))
    for p, plan in procs:
        p.stdin.write(plan)  # type: ignore[union-attr]
        p.stdin.close()  # type: ignore[union-attr]
    return [json.loads(p.stdout.read() or b"{}") for p, _ in procs]  # type: ignore[union-attr]


def row(name: str, res: list[dict], seconds: float) -> dict:  # type: ignore[type-arg]
    a, b = res
    sent = a.get("sent", 0) + b.get("sent", 0)
    got = a.get("received", 0) + b.get("received", 0)
    r = {
        "path": name,
        "pps": got / seconds,
        "loss": 1 - got / sent if sent else 1.0,
        "p50_us": max(a.get("p50_us") or 0, b.get("p50_us") or 0),
        "p99_us": max(a.get("p99_us") or 0, b.get("p99_us") or 0),
    }
    print(
        f"  {name:34} {r['pps']:9.0f} pkt/s  loss {100 * r['loss']:6.3f}%  p50 {r['p50_us']:8.1f} us  p99 {r['p99_us']:8.1f} us",
        flush=True,
    )
    return r


def direct(work: Path, n: int, seconds: float) -> dict:  # type: ignore[type-arg]
    plan_a = [[BASE + 2 * i, V4PEER, BASE + 2 * i] for i in range(n)]
    plan_b = [[BASE + 2 * i, PBX, BASE + 2 * i] for i in range(n)]
    return row(
        "kernel forwarding v4->v4 (floor)",
        gens(work, ("pbx", PBX, plan_a), ("v4peer", V4PEER, plan_b), seconds),
        seconds,
    )


def relayed(name: str, work: Path, legs: list[list[int]], seconds: float) -> dict:  # type: ignore[type-arg]
    """Stream through a relay whose legs are [inside port, outside port] per stream."""
    plan_a = [[BASE + 2 * i, GW_IN, leg[0]] for i, leg in enumerate(legs)]
    plan_b = [[BASE + 2 * i, GW_OUT, leg[1]] for i, leg in enumerate(legs)]
    return row(name, gens(work, ("pbx", PBX, plan_a), ("v6peer", PEER, plan_b), seconds), seconds)


def builtin(work: Path, n: int, seconds: float, workers: int) -> dict:  # type: ignore[type-arg]
    h = ns_popen(
        "gw",
        sys.executable,
        "-c",
        HARNESS,
        str(n),
        str(workers),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    legs = json.loads(h.stdout.readline())  # type: ignore[union-attr]
    time.sleep(0.5)
    try:
        return relayed(f"sipnat46 built-in relay, {workers} proc", work, legs, seconds)
    finally:
        h.stdin.close()  # type: ignore[union-attr]
        h.wait(10)


def ng(sock: socket.socket, cmd: dict) -> dict:  # type: ignore[type-arg]
    cookie = str(time.monotonic_ns()).encode()
    sock.send(cookie + b" " + bencodepy.encode(cmd))
    data = sock.recv(65536)
    reply = bencodepy.decode(data.split(b" ", 1)[1])
    if reply.get(b"result") != b"ok":
        raise RuntimeError(f"rtpengine: {reply}")
    return reply


def sdp_port(sdp: bytes) -> int:
    for line in sdp.split(b"\r\n"):
        if line.startswith(b"m=audio "):
            return int(line.split()[1])
    raise RuntimeError("no m=audio in rtpengine's SDP")


def rtpengine(work: Path, n: int, seconds: float) -> dict | None:  # type: ignore[type-arg]
    if subprocess.run(["which", "rtpengine"], capture_output=True).returncode != 0:
        print("  rtpengine-daemon is not installed: row skipped")
        return None
    proc = ns_popen(
        "gw",
        "rtpengine",
        "-f",
        "-E",
        "--table=-1",
        f"--interface=in/{GW_IN}",
        f"--interface=out/{GW_OUT}",
        "--listen-ng=127.0.0.1:2223",
        "--port-min=50000",
        "--port-max=59999",
        "--log-level=3",
        "--pidfile",
        str(work / "rtpengine.pid"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        # the ng client runs in gw: rtpengine listens on gw's loopback
        script = f"""
import json, socket, sys, time
sys.path.insert(0, {str(ROOT)!r})
from scripts.bench_media import ng, sdp_port
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("127.0.0.1", 2223)); s.settimeout(5)
legs = []
for i in range({n}):
    offer = "v=0\\r\\no=- 1 1 IN IP4 {PBX}\\r\\ns=-\\r\\nc=IN IP4 {PBX}\\r\\nt=0 0\\r\\nm=audio %d RTP/AVP 0\\r\\n" % ({BASE} + 2 * i)
    r = ng(s, {{"command": "offer", "call-id": "c%d" % i, "from-tag": "f%d" % i, "sdp": offer, "direction": ["in", "out"], "ICE": "remove"}})
    out_port = sdp_port(r[b"sdp"])
    answer = "v=0\\r\\no=- 1 1 IN IP6 {PEER}\\r\\ns=-\\r\\nc=IN IP6 {PEER}\\r\\nt=0 0\\r\\nm=audio %d RTP/AVP 0\\r\\n" % ({BASE} + 2 * i)
    r = ng(s, {{"command": "answer", "call-id": "c%d" % i, "from-tag": "f%d" % i, "to-tag": "t%d" % i, "sdp": answer, "direction": ["out", "in"], "ICE": "remove"}})
    legs.append([sdp_port(r[b"sdp"]), out_port])
print(json.dumps(legs))
"""
        legs = json.loads(ns("gw", sys.executable, "-c", script, timeout=120).stdout)
        return relayed("rtpengine userspace v4<->v6", work, legs, seconds)
    finally:
        proc.terminate()
        proc.wait(10)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory_with_calls(work: Path, calls: int) -> None:
    cfg = ROOT / "examples" / "lab.toml"
    ns("gw", sipnat46_bin(), "--config", str(cfg), "start")
    try:
        keys_peer = {"via_host": f"[{PEER}]", "contact_host": f"[{PEER}]", "sdp_type": "6", "sdp_ip": PEER}
        keys_pbx = {"via_host": PBX, "contact_host": PBX, "sdp_type": "4", "sdp_ip": PBX}
        uas = sipp(
            "v6peer",
            "uas",
            work,
            local=PEER,
            media=PEER,
            media_port=20000,
            keys=keys_peer,
            calls=calls,
            scenario="uas_load.xml",
            extra=("-buff_size", "4194304"),
        )
        time.sleep(0.5)
        uac = sipp(
            "pbx",
            "uac",
            work,
            local=PBX,
            media=PBX,
            media_port=20000,
            keys=keys_pbx,
            calls=calls,
            target="100.64.46.20:5060",
            scenario="uac_hold.xml",
            duration_ms=60000,
            extra=("-r", "200", "-l", str(calls), "-buff_size", "4194304"),
        )
        deadline = time.time() + 60
        st: dict = {}  # type: ignore[type-arg]
        while time.time() < deadline:
            time.sleep(1.5)
            st = json.loads(
                ns("gw", sipnat46_bin(), "--config", str(cfg), "status", "--json", check=False).stdout
            )
            if st["daemon"]["relay"]["legs"] >= 2 * calls:
                break
        time.sleep(1.5)
        pid = int(st["pid"])
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        daemon_kb, relay_kb = rss_kb(pid), sum(rss_kb(c) for c in children)
        legs = st["daemon"]["relay"]["legs"] // 2
        print(
            f"  {legs} relayed calls active: daemon RSS {daemon_kb / 1024:.1f} MB, relay process RSS {relay_kb / 1024:.1f} MB "
            f"(goal: under 100 MB)"
        )
        for p in (uac, uas):
            p.proc.kill()
            p.proc.wait()
    finally:
        ns("gw", sipnat46_bin(), "--config", str(cfg), "stop", check=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--workers", default="1,2", help="relay processes to try, e.g. 1,2")
    args = ap.parse_args()
    lab("down")
    lab("up")
    work = Path(tempfile.mkdtemp(prefix="s46media-"))
    work.chmod(0o755)
    tone(work)
    build_generator(work)
    try:
        n, d = args.streams, args.seconds
        print(
            f"{n} bidirectional G.711 streams (50 pkt/s each way, 172-byte packets), {d:g} s per row; "
            f"offered load {2 * n * 50} pkt/s",
            flush=True,
        )
        direct(work, n, d)
        for workers in (int(w) for w in args.workers.split(",")):
            builtin(work, n, d, workers)
        rtpengine(work, n, d)
        print(f"memory with {args.calls} relayed calls (set up through SIP by sipp):", flush=True)
        memory_with_calls(work, args.calls)
    finally:
        lab("down")


if __name__ == "__main__":
    main()

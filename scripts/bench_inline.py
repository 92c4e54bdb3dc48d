"""Highest clean SIP call rate through the lab's gw, and sipnat46's added latency.

Rows, measured in one run on the same lab: plain forwarding (no rules), the kernel's own SIP
helper (nf_conntrack_sip via -j CT --helper sip), the queue's own floor (sipnat46's rules with a
Python process that copies each packet out and back and accepts it: the most any Python daemon
on this queue could do) and sipnat46 fixup (a rigid PBX writing IPv4
literals into IPv6 messages), sipnat46 with nothing to fix, and sipnat46 translate (the IPv4-only
PBX calling the IPv6-only peer's stand-in, relay legs set up per call). A step is clean when every call succeeded with no retransmission.
For the queue floor and sipnat46's UDP rows it also prints the process's CPU time per SIP
packet at its highest clean rate: what one message costs, for sizing a box.
TCP rows (sipp -t t1, one connection for all calls) for plain forwarding, the helper, and
sipnat46 fixup and translate through the stream proxy.
Not a test: it prints figures. Usage: scripts/bench-inline [--seconds 5] [--rates 500,1000,...] [--no-tcp]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.e2e.lab import PREFIX, SCENARIOS, lab, ns, ns_popen, sipnat46_bin  # noqa: E402

UAC = ("rpbx", "2001:db8:5::10")
PACKETS_PER_CALL = 6  # INVITE, 180, 200, ACK, BYE, 200 (uac_load.xml / uas_load.xml)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# step label -> us of CPU per SIP packet at its highest clean rate (the measured process only:
# translate's relay processes are not in it)
CPU_PER_PACKET: dict[str, float] = {}
UAS = ("dspeer", "2001:db8:3::30")
PLAIN = {
    "via_host": "[2001:db8:5::10]",
    "contact_host": "[2001:db8:5::10]",
    "sdp_type": "6",
    "sdp_ip": "2001:db8:5::10",
}
RIGID = {"via_host": "192.0.2.130", "contact_host": "192.0.2.130", "sdp_type": "4", "sdp_ip": "192.0.2.130"}
PEER = {"contact_host": "[2001:db8:3::30]", "sdp_type": "6", "sdp_ip": "2001:db8:3::30"}
CONFIG = """instance = "bench"
placement = "gateway"
[inside]
pbx = ["192.0.2.130", "2001:db8:5::10", "2001:db8:6::10"]
[media]
relay = "off"
[queue]
number = 49
"""


def keys(d: dict[str, str]) -> list[str]:
    return [x for k, v in d.items() for x in ("-key", k, v)]


# translate: the IPv4-only PBX calls the IPv6-only peer's stand-in (relay legs set up per call)
XLATE_UAC = ("pbx", "192.0.2.10", "100.64.46.20:5060")
XLATE_UAS = ("v6peer", "2001:db8:1::20")
PBX4 = {"via_host": "192.0.2.10", "contact_host": "192.0.2.10", "sdp_type": "4", "sdp_ip": "192.0.2.10"}
V6PEER = {"contact_host": "[2001:db8:1::20]", "sdp_type": "6", "sdp_ip": "2001:db8:1::20"}


def sipp_cmd(ns_name: str, seconds: float, scenario: str, local: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", PREFIX + ns_name, "timeout", str(int(seconds) + 40), "sipp",
            "-sf", str(SCENARIOS / scenario), "-i", local, "-p", "5060", *args]  # fmt: skip


def step(
    work: Path,
    rate: int,
    seconds: float,
    caller: dict[str, str],
    translate: bool = False,
    transport: str = "u1",
    pid: int | None = None,
) -> tuple[bool, dict[str, float]]:
    """One step at ``rate``. With ``pid``: that process's CPU time (user + system) per SIP
    packet over the step, in ``cpu_us`` (what one SIP packet costs the box: for sizing).
    Clean: every call succeeded, none needed a retransmission, and the last call ended within
    2 s of the step's planned end (over TCP, transport t1: one connection
    for all calls, as a trunk does, sipp never retransmits, so a path that cannot keep up shows
    only as calls finishing late)."""
    calls = int(rate * seconds)
    uac_ns, uac_ip, target = XLATE_UAC if translate else (UAC[0], UAC[1], f"[{UAS[1]}]:5060")
    uas_ns, uas_ip = XLATE_UAS if translate else UAS
    callee = V6PEER if translate else PEER
    common = ["-buff_size", "4194304", "-nostdin", "-m", str(calls), "-t", transport, "-max_socket", "100"]
    uas = subprocess.Popen(
        sipp_cmd(uas_ns, seconds, "uas_load.xml", uas_ip, *common, *keys(callee)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work,
    )  # fmt: skip
    time.sleep(0.5)
    cpu_before = cpu_seconds(pid)
    stat = work / f"uac-{rate}.csv"
    stat.unlink(missing_ok=True)
    started = time.monotonic()
    subprocess.run(
        sipp_cmd(uac_ns, seconds, "uac_load.xml", uac_ip, "-r", str(rate), "-rp", "1000", *common, *keys(caller),
                 "-s", "bob", "-trace_stat", "-stf", str(stat), "-fd", "1", target),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    cpu_used = cpu_seconds(pid) - cpu_before
    try:
        uas.wait(15)
    except subprocess.TimeoutExpired:
        uas.kill()
        uas.wait()
    # an unclean step can leave sipp retransmitting: nothing of it may leak into the next step
    subprocess.run(["pkill", "-x", "sipp"], check=False)
    time.sleep(1.0)
    figures: dict[str, float] = {"calls": calls, "late": round(elapsed - seconds, 1)}
    rows = list(csv.DictReader(stat.open(), delimiter=";")) if stat.exists() else []
    last = rows[-1] if rows else {}
    for key, column in (
        ("ok", "SuccessfulCall(C)"),
        ("failed", "FailedCall(C)"),
        ("retrans", "Retransmissions(C)"),
    ):
        figures[key] = int(last.get(column, 0))
    clean = figures["ok"] == calls and figures["failed"] == 0 and figures["retrans"] == 0
    clean = clean and elapsed <= seconds + 2.0
    if pid is not None and figures["ok"]:
        figures["cpu_us"] = round(1e6 * cpu_used / (figures["ok"] * PACKETS_PER_CALL), 1)
    return clean, figures


def cpu_seconds(pid: int | None) -> float:
    """User plus system CPU time of ``pid`` so far (0 without one)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def highest_clean(
    work: Path,
    name: str,
    rates: list[int],
    seconds: float,
    caller: dict[str, str],
    translate: bool = False,
    transport: str = "u1",
    pid: int | None = None,
) -> int:
    """The highest clean rate; with ``pid``, that process's CPU per SIP packet at that rate
    goes into CPU_PER_PACKET under ``name``."""
    best = 0
    for rate in rates:
        clean, f = step(work, rate, seconds, caller, translate, transport, pid)
        cpu = f" ({f['cpu_us']} us CPU per SIP packet)" if "cpu_us" in f else ""
        print(
            f"  {name:18} {rate:6d} calls/s: {f['ok']}/{f['calls']} ok, {f['failed']} failed, {f['retrans']} retrans, done {f['late']:+.1f} s after the step -> {'clean' if clean else 'NOT clean'}{cpu}",
            flush=True,
        )
        if not clean:
            break
        best = rate
        if "cpu_us" in f:
            CPU_PER_PACKET[name] = f["cpu_us"]
    return best


def helper_rules(action: str) -> None:
    """Add (-A) or delete (-D) the kernel SIP helper on SIP in both directions, both families."""
    for tool in ("iptables", "ip6tables"):
        for proto, port_match in (
            ("udp", "--dport"),
            ("udp", "--sport"),
            ("tcp", "--dport"),
            ("tcp", "--sport"),
        ):
            ns(
                "gw",
                tool,
                "-t",
                "raw",
                action,
                "PREROUTING",
                "-p",
                proto,
                port_match,
                "5060",
                "-j",
                "CT",
                "--helper",
                "sip",
            )


def queue_floor(queue: int) -> None:
    """Bound to ``queue``: each packet's payload read and set back, then accepted. What the
    NFQUEUE round trip to Python costs, with no SIP work at all."""
    from netfilterqueue import COPY_PACKET, NetfilterQueue

    from sipnat46.nfq import COPY_RANGE

    def echo(pkt) -> None:  # type: ignore[no-untyped-def]
        pkt.set_payload(pkt.get_payload())
        pkt.accept()

    nfq = NetfilterQueue()
    nfq.bind(queue, echo, max_len=4096, mode=COPY_PACKET, range=COPY_RANGE, sock_len=8 << 20)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        nfq.run()
    finally:
        nfq.unbind()


def daemon_pid(cfg: Path) -> int:
    st = json.loads(ns("gw", sipnat46_bin(), "--config", str(cfg), "status", "--json", check=False).stdout)
    return int(st["pid"])


def latency(work: Path, cfg: Path, rate: int, seconds: float) -> dict[str, object]:
    pid = daemon_pid(cfg)
    os.kill(pid, signal.SIGUSR1)
    time.sleep(0.5)
    clean, _ = step(work, rate, seconds, RIGID)
    time.sleep(1.3)
    st = json.loads(ns("gw", sipnat46_bin(), "--config", str(cfg), "status", "--json", check=False).stdout)
    return {"clean": clean, **st["daemon"]["latency"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rates", default="100,200,300,500,1000,2000,3000,4000,5000,6000,8000,10000,12000,14000")
    ap.add_argument(
        "--baselines", action=argparse.BooleanOptionalAction, default=True, help="plain and helper rows"
    )
    ap.add_argument(
        "--tcp", action=argparse.BooleanOptionalAction, default=True, help="TCP rows (sipp -t t1)"
    )
    ap.add_argument("--queue-floor", type=int, metavar="QUEUE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.queue_floor is not None:  # the floor row's queue process, run in gw
        queue_floor(args.queue_floor)
        return
    rates = [int(r) for r in args.rates.split(",")]
    lab("down")
    lab("up")
    work = Path(tempfile.mkdtemp(prefix="s46bench-"))
    work.chmod(0o755)
    results: dict[str, int] = {}
    try:
        print(
            f"steps of {args.seconds:g} s; sipp UAC in {UAC[0]}, UAS in {UAS[0]}, IPv6 through gw", flush=True
        )
        # The kernel helper drops IPv6 SIP whose SDP names IPv4 ("cannot parse SDP message"),
        # so the baselines carry plain IPv6 messages; sipnat46 is measured on both.
        if args.baselines:
            results["plain forwarding"] = highest_clean(work, "plain", rates, args.seconds, PLAIN)
            if args.tcp:
                results["plain forwarding TCP"] = highest_clean(
                    work, "plain TCP", rates, args.seconds, PLAIN, transport="t1"
                )
            helper_rules("-A")
            try:
                results["kernel SIP helper"] = highest_clean(
                    work, "kernel helper", rates, args.seconds, PLAIN
                )
                if args.tcp:
                    results["kernel SIP helper TCP"] = highest_clean(
                        work, "kernel helper TCP", rates, args.seconds, PLAIN, transport="t1"
                    )
            finally:
                helper_rules("-D")
        cfg = work / "bench.toml"
        cfg.write_text(CONFIG)
        if args.baselines:
            ns("gw", sipnat46_bin(), "--config", str(cfg), "rules", "apply")
            floor = ns_popen("gw", sys.executable, __file__, "--queue-floor", "49")
            try:
                time.sleep(1.0)
                results["queue floor (Python)"] = highest_clean(
                    work, "queue floor", rates, args.seconds, PLAIN, pid=floor.pid
                )
            finally:
                floor.terminate()
                floor.wait()
                ns("gw", sipnat46_bin(), "--config", str(cfg), "rules", "remove")
        ns("gw", sipnat46_bin(), "--config", str(cfg), "start")
        try:
            pid = daemon_pid(cfg)
            results["sipnat46, nothing to fix"] = highest_clean(
                work, "sipnat46 pass", rates, args.seconds, PLAIN, pid=pid
            )
            results["sipnat46 fixup"] = highest_clean(
                work, "sipnat46 fixup", rates, args.seconds, RIGID, pid=pid
            )
            if args.tcp:
                results["sipnat46 fixup TCP"] = highest_clean(
                    work, "sipnat46 fixup TCP", rates, args.seconds, RIGID, transport="t1"
                )
            lat = latency(work, cfg, 1000, args.seconds)
            low = max(100, results["sipnat46 fixup"] // 2)  # at half its own capacity
            lat_low = latency(work, cfg, low, args.seconds)
        finally:
            ns("gw", sipnat46_bin(), "--config", str(cfg), "stop", check=False)
        xcfg = ROOT / "examples" / "lab.toml"
        ns("gw", sipnat46_bin(), "--config", str(xcfg), "start")
        try:
            results["sipnat46 translate + relay"] = highest_clean(
                work, "sipnat46 translate", rates, args.seconds, PBX4, True, pid=daemon_pid(xcfg)
            )
            if args.tcp:
                results["sipnat46 translate TCP"] = highest_clean(
                    work, "sipnat46 xlate TCP", rates, args.seconds, PBX4, True, "t1"
                )
        finally:
            ns("gw", sipnat46_bin(), "--config", str(xcfg), "stop", check=False)
    finally:
        lab("down")
    print()
    print(f"{'path':26} {'highest clean calls/s':>22}")
    for name, rate in results.items():
        print(f"{name:26} {rate:22d}")
    print("CPU per SIP packet at the highest clean rate (the measured process only):")
    for label, cpu in CPU_PER_PACKET.items():
        print(f"  {label:24} {cpu:8.1f} us")
    helper = results.get("kernel SIP helper") or 0
    if helper:
        print(f"sipnat46 fixup / kernel helper: {results['sipnat46 fixup'] / helper:.2f} (goal >= 0.5)")
    for kind in ("fixup", "translate"):
        udp = results.get(f"sipnat46 {kind}" + (" + relay" if kind == "translate" else ""))
        tcp = results.get(f"sipnat46 {kind} TCP")
        if udp and tcp is not None:
            print(f"sipnat46 {kind} TCP / UDP: {tcp / udp:.2f} (goal >= 0.75)")
    for rate, figures in ((1000, lat), (low, lat_low)):
        print(
            f"sipnat46 added latency per SIP packet at {rate} calls/s: p50 {figures['p50_us']} us, "
            f"p99 {figures['p99_us']} us over {figures['packets']} packets (goal p99 < 1000 us at 1000 calls/s)"
            f"{'' if figures['clean'] else ' (step not clean)'}"
        )


if __name__ == "__main__":
    main()

"""The daemon's life cycle: rules, run/start/stop/status, signals, memory, no IPv6."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.calls import call, plain
from tests.e2e.lab import ROOT, daemon_pid, instance, lab, ns, ns_popen, sipnat46_bin, status
from tests.e2e.test_fixup import GATEWAY, RTP_MIN
from tests.e2e.test_translate import CONFIG as TRANSLATE


def saved(name: str) -> str:
    return ns(name, "iptables-save").stdout + ns(name, "ip6tables-save", check=False).stdout


def test_rules_apply_and_remove_are_idempotent_and_touch_nothing_else(work: Path) -> None:
    cfg = work / "r.toml"
    cfg.write_text('instance = "rules"\n' + GATEWAY)
    ns("gw", "iptables", "-A", "FORWARD", "-p", "tcp", "--dport", "9", "-j", "ACCEPT")  # someone else's rule
    try:
        for _ in range(2):
            res = ns("gw", sipnat46_bin(), "--config", str(cfg), "rules", "apply")
            assert res.returncode == 0
        text = saved("gw")
        assert (
            text.count('-A FORWARD -m comment --comment "sipnat46:rules" -j S46-rules') == 2
        )  # once per family
        assert "--queue-bypass" in text and "--queue-num 48" in text
        # the stream proxy's TPROXY chain, and the policy route that delivers to it, once each
        assert text.count('-A PREROUTING -m comment --comment "sipnat46:rules" -j S46T-rules') == 2
        assert "-j TPROXY --on-port 15060" in text
        divert = "fwmark 0x460030 lookup 4587568"
        assert [ns("gw", "ip", f"-{f}", "rule").stdout.count(divert) for f in (4, 6)] == [1, 1]
        rendered = ns("gw", sipnat46_bin(), "--config", str(cfg), "rules", "render").stdout
        assert "-j NFQUEUE --queue-num 48 --queue-bypass" in rendered and "TPROXY" in rendered
        for _ in range(2):
            assert ns("gw", sipnat46_bin(), "--config", str(cfg), "rules", "remove").returncode == 0
        text = saved("gw")
        assert "sipnat46" not in text and "S46-rules" not in text and "S46T-rules" not in text
        assert "--dport 9 -j ACCEPT" in text
        assert all(divert not in ns("gw", "ip", f"-{f}", "rule").stdout for f in (4, 6))
    finally:
        ns("gw", "iptables", "-D", "FORWARD", "-p", "tcp", "--dport", "9", "-j", "ACCEPT", check=False)


def test_nft_template_renders() -> None:
    cfg = Path(__file__).resolve().parents[2] / "examples" / "lab.toml"
    out = subprocess.run(
        [sipnat46_bin(), "--config", str(cfg), "rules", "render", "--nft"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "queue num 46 bypass" in out and "hook forward" in out


def test_run_in_foreground_sigterm_removes_rules(work: Path) -> None:
    cfg = work / "fg.toml"
    cfg.write_text('instance = "fg"\n' + GATEWAY)
    proc = ns_popen("gw", sipnat46_bin(), "--config", str(cfg), "run", stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if "sipnat46:fg" in saved("gw"):
                break
            time.sleep(0.1)
        assert "sipnat46:fg" in saved("gw")
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "sipnat46:fg" not in saved("gw")
    assert b"stopping" in err and b"stopped" in err


def test_start_twice_stop_twice_and_status(work: Path) -> None:
    with instance("gw", GATEWAY, work, "twice") as cfg:
        again = ns("gw", sipnat46_bin(), "--config", str(cfg), "start", check=False)
        assert again.returncode == 0 and "already running" in again.stdout
        st = ns("gw", sipnat46_bin(), "--config", str(cfg), "status", check=False)
        assert st.returncode == 0 and "running, pid" in st.stdout and "ipv4 present" in st.stdout
        assert "queue 48: queue=48" in st.stdout
    st = ns("gw", sipnat46_bin(), "--config", str(cfg), "status", check=False)
    assert st.returncode == 3 and "not running" in st.stdout and "not bound" in st.stdout
    again = ns("gw", sipnat46_bin(), "--config", str(cfg), "stop", check=False)
    assert again.returncode == 0 and "was not running" in again.stdout


def test_daemon_is_small_and_does_not_import_scapy(work: Path) -> None:
    with instance("gw", GATEWAY, work, "small") as cfg:
        pid = daemon_pid("gw", cfg)
        rss_kb = next(
            int(line.split()[1])
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
    assert rss_kb < 50 * 1024, f"idle RSS {rss_kb} kB"
    probe = "import sys, sipnat46.cli, sipnat46.daemon, sipnat46.nfq; sys.exit('scapy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


def test_box_without_ipv6_keeps_ipv4_calls_and_rtp(work: Path) -> None:
    try:
        for key in ("all", "default", "pbx0", "v4p0", "v6p0", "dsp0", "rpbx0", "rpbx1"):
            ns("gw", "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        with instance("gw", TRANSLATE, work, "nov6") as cfg:
            res = call(work, plain("pbx", "192.0.2.10", 7000), plain("v4peer", "198.51.100.20", 6000))
            # a call to an IPv6 peer's stand-in cannot be translated: passed on, and said why
            invite = (ROOT / "examples" / "invite.sip").read_bytes()
            ns(
                "pbx",
                "python3",
                "-c",
                "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                "s.bind(('192.0.2.10', 5070)); s.sendto(sys.stdin.buffer.read(), ('100.64.46.20', 5060))",
                input=invite.decode(),
            )
            st = status("gw", cfg)
        assert res.uac_rc == 0 and res.uas_rc == 0
        assert res.rtp_to_uas >= RTP_MIN and res.rtp_to_uac >= RTP_MIN
        assert st["daemon"]["ipv6"] is False and st["daemon"]["counters"]["errors"] == 0
        assert st["daemon"]["counters"]["refused"] >= 1
        log = Path("/run/sipnat46/nov6.log").read_text()
        assert "IPv6 is disabled on this box" in log
        assert "cannot translate to 2001:db8:1::20: IPv6 is disabled on this box" in log
    finally:
        lab("down")
        lab("up")

"""Config errors name the key in one line and exit 2; the offline rewrite CLI works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sipnat46 import config
from sipnat46.errors import ConfigError
from tests.conftest import ROOT, SAMPLES

EXAMPLE = ROOT / "examples" / "lab.toml"


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sipnat46.cli", *args], input=stdin, capture_output=True, timeout=60
    )


def test_example_config_loads() -> None:
    cfg = config.load(EXAMPLE)
    plan = cfg.address_plan()
    assert str(plan.stand_ins.ipv6_for(config.ipaddress.ip_address("100.64.46.20"))) == "2001:db8:1::20"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('placement = "gateway"\n[inside]\npbx = ["192.0.2.10"]\nbogus = 1\n', "inside.bogus"),
        ('[inside]\npbx = ["192.0.2.300"]\n', "inside.pbx[0]"),
        ('[inside]\npbx = ["192.0.2.10"]\n[outside]\nipv6 = "192.0.2.1"\n', "outside.ipv6"),
        ('[inside]\npbx = ["192.0.2.10"]\n[media]\nrelay = "magic"\n', "media.relay"),
        ('[inside]\npbx = ["192.0.2.10"]\n[media]\nports = "9-5"\n', "media.ports"),
        ('[inside]\npbx = ["192.0.2.10"]\n[stand_ins]\npool = "2001:db8::/64"\n', "stand_ins.pool"),
        ('[inside]\npbx = ["192.0.2.10"]\n[[peers]]\nname = "x"\n', "peers[0]"),
        ('[inside]\npbx = ["192.0.2.10"]\n[[peers]]\nhost = "2001:db8::1"\n', "peers[0].host"),
        ('[inside]\npbx = ["192.0.2.10"]\n[[peers]]\nhost = "a b"\n', "peers[0].host"),
        ('[inside]\npbx = ["192.0.2.10"]\n[dns]\nprefer = "ipv5"\n', "dns.prefer"),
        ('[inside]\npbx = ["192.0.2.10"]\n[dns]\nservers = ["dns.example"]\n', "dns.servers[0]"),
        ('[inside]\npbx = ["192.0.2.10"]\n[dns]\nfailover_after = 0\n', "dns.failover_after"),
        ('[inside]\npbx = ["192.0.2.10"]\n[dns]\nresolver = "x"\n', "dns.resolver"),
        ('[inside]\npbx = ["192.0.2.10"]\n[dns46]\nenabled = true\n', "dns46.listen"),
        ('[inside]\npbx = ["192.0.2.10"]\n[dns46]\nenabled = "yes"\n', "dns46.enabled"),
        (
            '[inside]\npbx = ["192.0.2.10"]\nsip_ports = [' + ",".join(map(str, range(5060, 5076))) + "]\n",
            "inside.sip_ports",
        ),
        (
            '[inside]\npbx = ["192.0.2.10"]\nsip_ports = [' + ",".join(map(str, range(5062, 5077))) + "]\n",
            "tcp.tls_ports",
        ),
        ('[inside]\npbx = ["192.0.2.10"]\n[tcp]\nproxy_port = 5060\n', "tcp.proxy_port"),
        ('[inside]\npbx = ["192.0.2.10"]\n[tcp]\nenabled = 1\n', "tcp.enabled"),
        ("[inside]\n", "inside.pbx"),
        ('placement = "moon"\n[inside]\npbx = ["192.0.2.10"]\n', "placement"),
        ('[inside]\npbx = ["192.0.2.10"]\n[media]\nrelay = "rtpengine"\n', "media.relay"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert exc.value.key == key
    proc = run_cli(
        "--config",
        str(path),
        "rewrite",
        "--from",
        "inside",
        str(SAMPLES / "ipv4-01-invite-proxy-authorization.sip"),
    )
    assert proc.returncode == 2
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and key in lines[0], proc.stderr
    assert b"Traceback" not in proc.stderr


def test_named_peer_config() -> None:
    text = EXAMPLE.read_text() + '[[peers]]\nname = "carrier"\nhost = "sip.carrier.example."\n'
    text += '[dns]\nservers = ["2001:db8:3::30"]\nprefer = "ipv4"\n'
    cfg = config.parse(config.tomllib.loads(text))
    (named,) = cfg.named_peers()
    assert named.host == "sip.carrier.example" and str(named.stand_in) == "100.64.46.1"
    assert cfg.dns.prefer == 4 and cfg.dns.failover_after == 2.0 and not cfg.dns46.enabled
    plan = cfg.address_plan()
    assert plan.stand_ins.is_stand_in(named.stand_in)  # reserved: never handed out dynamically
    v6 = config.ipaddress.IPv6Address("2001:db8:9::1")
    assert plan.stand_ins.stand_in_for(v6, 0.0) != named.stand_in


def test_unparseable_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("placement = \n")
    proc = run_cli("--config", str(path), "rewrite", "--from", "inside")
    assert proc.returncode == 2 and len(proc.stderr.decode().strip().splitlines()) == 1


def test_cli_rewrite_translates_example() -> None:
    proc = run_cli(
        "--config", str(EXAMPLE), "rewrite", "--from", "inside", str(ROOT / "examples" / "invite.sip")
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert out.startswith("INVITE sip:bob@[2001:db8:1::20]:5060 SIP/2.0\r\n")
    assert "c=IN IP6 2001:db8:1::1" in out and "192.0.2.10:" not in out
    summary = proc.stderr.decode().strip()
    assert summary.startswith("translated") and len(summary.splitlines()) == 1


def test_cli_unparseable_message_exits_2(tmp_path: Path) -> None:
    proc = run_cli(
        "--config",
        str(EXAMPLE),
        "rewrite",
        "--from",
        "outside",
        "--dst",
        "192.0.2.10",
        stdin=b"\x00garbage\r\n",
    )
    assert proc.returncode == 2
    assert proc.stderr.decode().count("\n") == 1 and b"Traceback" not in proc.stderr


def test_cli_unchanged_message_is_byte_identical() -> None:
    data = (SAMPLES / "ipv4-fax-01-invite-sdp-capneg.sip").read_bytes()
    proc = run_cli(
        "--config", str(EXAMPLE), "rewrite", "--from", "outside", "--dst", "192.0.2.10", stdin=data
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data and proc.stderr.decode().startswith("unchanged")


def test_cli_pcap_rewrite(tmp_path: Path) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import rdpcap, wrpcap

    invite = (ROOT / "examples" / "invite.sip").read_bytes()
    pkts = [
        IP(src="192.0.2.10", dst="100.64.46.20") / UDP(sport=5060, dport=5060) / invite,
        IP(src="192.0.2.10", dst="198.51.100.7") / UDP(sport=40000, dport=53) / b"not sip",
        IP(src="192.0.2.10", dst="100.64.46.20") / UDP(sport=5060, dport=5060) / b"garbage",
    ]
    src, dst = tmp_path / "in.pcap", tmp_path / "out.pcap"
    wrpcap(str(src), pkts)
    proc = run_cli("--config", str(EXAMPLE), "rewrite", "--pcap", str(src), "--out", str(dst))
    assert proc.returncode == 0, proc.stderr
    assert "3 packets, 2 SIP, 1 rewritten (1 translated), 1 passed unparsed" in proc.stderr.decode()
    out = rdpcap(str(dst))
    assert len(out) == 3
    first = out[0]
    assert first.haslayer(IPv6) and first[IPv6].dst == "2001:db8:1::20" and first[IPv6].src == "2001:db8:1::1"
    payload = bytes(first[UDP].payload)
    assert payload.startswith(b"INVITE sip:bob@[2001:db8:1::20]:5060")
    # lengths and checksums are right: a rebuild from raw bytes agrees
    rebuilt = IPv6(bytes(first[IPv6]))
    assert rebuilt[UDP].chksum == IPv6(bytes(rebuilt))[UDP].chksum and rebuilt.plen == len(rebuilt[UDP])
    assert bytes(out[1]) == bytes(pkts[1]) and bytes(out[2][UDP].payload) == b"garbage"

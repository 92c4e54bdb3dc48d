"""Peers by name (RFC 3263) with IPv6-to-IPv4 failover, against a real DNS server (dnsmasq)
in the lab: the carrier "carrier.example" has an IPv6 target (v6peer) and an IPv4 one
(v4peer). The IPv4-only PBX only ever calls the carrier's stand-in."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.calls import CallResult, call, plain
from tests.e2e.lab import PREFIX, first, instance, ns, ns_popen, sipnat46_bin, status
from tests.e2e.test_fixup import RTP_MIN, assert_only, no_literal_of_family
from tests.e2e.test_translate import media_of, ok

DNS_SERVER = "2001:db8:3::30"  # dnsmasq in the dspeer namespace
STAND_IN = "100.64.46.30"
ZONE = [
    "--naptr-record=carrier.example,10,10,S,SIP+D2U,,_sip._udp.carrier.example",
    "--srv-host=_sip._udp.carrier.example,sip6.carrier.example,5060,10,10",
    "--srv-host=_sip._udp.carrier.example,sip4.carrier.example,5060,10,50",
    "--host-record=sip6.carrier.example,2001:db8:1::20",
    "--host-record=sip4.carrier.example,198.51.100.20",
    "--host-record=www.carrier.example,203.0.113.80,2001:db8:3::80",
    "--host-record=v6only.carrier.example,2001:db8:3::30",
    "--srv-host=_sip._udp.v6.example,v6only.carrier.example,5060",
    "--local=/carrier.example/",  # authoritative: NODATA for records it does not hold
]


def config(failover_after: float = 1.5, extra: str = "") -> str:
    return f"""placement = "gateway"
[inside]
pbx = ["192.0.2.10"]
[outside]
ipv6 = "2001:db8:1::1"
[stand_ins]
pool = "100.64.46.0/24"
[[peers]]
name = "carrier"
host = "carrier.example"
stand_in = "{STAND_IN}"
[dns]
servers = ["{DNS_SERVER}"]
failover_after = {failover_after}
avoid_for = 30
[media]
relay = "builtin"
ports = "30000-39999"
inside_ipv4 = "192.0.2.1"
[queue]
number = 52
{extra}"""


@pytest.fixture(scope="module")
def dns_server(lab_up: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    log = tmp_path_factory.mktemp("dns") / "dnsmasq.log"
    cmd = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--user=root", "--pid-file="]
    cmd += ["--bind-interfaces", f"--listen-address={DNS_SERVER}", "--local-ttl=30", "--log-queries"]
    cmd += [f"--log-facility={log}", *ZONE]
    proc = ns_popen("dspeer", *cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    for _ in range(100):  # until it listens
        if f"[{DNS_SERVER}]:53" in ns("dspeer", "ss", "-Hlun", check=False).stdout:
            break
        time.sleep(0.05)
    yield log
    proc.terminate()
    proc.wait(10)


def call_v4_while_v6_target(
    work: Path, rule: str, name: str, cfg_text: str, transport: str | None = None
) -> tuple[CallResult, dict]:  # type: ignore[type-arg]
    """The PBX calls the carrier's stand-in while the IPv6 target's SIP port gets ``rule``
    ("PROTO -j ..."); the IPv4 target (v4peer) answers. The call and the daemon's status."""
    proto, action = rule.split(" ", 1)
    spec = ["INPUT", "-p", proto, "--dport", "5060", *action.split()]
    ns("v6peer", "ip6tables", "-I", *spec)
    try:
        with instance("gw", cfg_text, work, name) as cfg:
            res = call(
                work,
                plain("pbx", "192.0.2.10", 7000),
                plain("v4peer", "198.51.100.20", 6000),
                target=f"{STAND_IN}:5060",
                transport=transport,
            )
            return res, status("gw", cfg)["daemon"]
    finally:
        ns("v6peer", "ip6tables", "-D", *spec)


def peer_status(cfg: Path) -> dict:  # type: ignore[type-arg]
    return status("gw", cfg)["daemon"]["named_peers"]


def test_named_peer_resolved_by_rfc3263_and_called_over_ipv6(work: Path, dns_server: Path) -> None:
    with instance("gw", config(), work, "dns6") as cfg:
        before = peer_status(cfg)["peers"]["carrier"]
        res = call(
            work,
            plain("pbx", "192.0.2.10", 7000),
            plain("v6peer", "2001:db8:1::20", 6000),
            target=f"{STAND_IN}:5060",
        )
    ok(res)
    assert [t["target"] for t in before["targets"]] == ["[2001:db8:1::20]:5060", "198.51.100.20:5060"]
    assert before["in_use"] == "[2001:db8:1::20]:5060" and before["resolve_error"] is None
    queries = dns_server.read_text()
    assert "query[NAPTR] carrier.example" in queries and "query[SRV] _sip._udp.carrier.example" in queries
    invite = first(res.uas.received(), "INVITE")
    assert invite.data.startswith(b"INVITE sip:bob@[2001:db8:1::20]:5060 SIP/2.0\r\n")
    no_literal_of_family(invite, 4)
    assert media_of(invite)[0] == "2001:db8:1::1"
    answer = first(res.uac.received(), "SIP/2.0 200")
    assert_only(answer, STAND_IN, ("contact",))
    assert media_of(answer)[0] == "192.0.2.1"


def test_silent_ipv6_target_fails_over_to_ipv4_without_relay(work: Path, dns_server: Path) -> None:
    res, st = call_v4_while_v6_target(work, "udp -j DROP", "dnsfail", config())
    ok(res)
    carrier = st["named_peers"]["peers"]["carrier"]
    assert carrier["in_use"] == "198.51.100.20:5060"
    assert carrier["targets"][0]["failures"] >= 1 and carrier["targets"][0]["last_failure"] == "no answer"
    assert st["named_peers"]["timeouts"] >= 1 and st["named_peers"]["failovers"] >= 1
    invite = first(res.uas.received(), "INVITE")
    assert invite.data.startswith(b"INVITE sip:bob@198.51.100.20:5060 SIP/2.0\r\n")
    no_literal_of_family(invite, 6)
    assert media_of(invite)[0] == "192.0.2.10"  # the PBX's own address: no relay
    assert st["relay"]["legs"] == 0
    answer = first(res.uac.received(), "SIP/2.0 200")
    no_literal_of_family(answer, 6)
    assert_only(answer, STAND_IN, ("contact",))  # the PBX sees one peer: the stand-in
    assert media_of(answer)[0] == "198.51.100.20"
    for method in ("ACK", "BYE"):  # the Contact the PBX saw (the stand-in) led back to the target
        assert first(res.uas.received(), method).uri.host.text == "198.51.100.20"  # type: ignore[union-attr]


def test_icmpv6_unreachable_fails_over_without_waiting(work: Path, dns_server: Path) -> None:
    # The no-answer timer is longer than the whole call: only the ICMPv6 error can move it.
    reject = "udp -j REJECT --reject-with icmp6-port-unreachable"
    res, daemon = call_v4_while_v6_target(work, reject, "dnsicmp", config(failover_after=40))
    st = daemon["named_peers"]
    ok(res, rtp=RTP_MIN)
    assert st["unreachable"] == 1 and st["timeouts"] == 0
    assert "ICMPv6" in st["peers"]["carrier"]["targets"][0]["last_failure"]
    assert first(res.uas.received(), "INVITE").data.startswith(b"INVITE sip:bob@198.51.100.20:5060")


# One query with dnspython (from the test's venv) in a lab namespace; the answer as text.
_QUERY = """
import dns.message, dns.query, json, sys
r = dns.query.udp(dns.message.make_query(sys.argv[1], sys.argv[2]), sys.argv[3], timeout=3)
print(json.dumps({"answer": [x.to_text() for x in r.answer], "additional": [x.to_text() for x in r.additional]}))
"""


def query(where: str, server: str, name: str, rdtype: str) -> dict[str, list[str]]:
    res = ns(where, sys.executable, "-c", _QUERY, name, rdtype, server)
    return json.loads(res.stdout)


def test_dns46_pbx_resolves_the_carrier_through_the_box(work: Path, dns_server: Path) -> None:
    resolv = Path(f"/etc/netns/{PREFIX}pbx/resolv.conf")  # `ip netns exec` mounts it over /etc
    resolv.parent.mkdir(parents=True, exist_ok=True)
    resolv.write_text("nameserver 192.0.2.1\n")
    extra = '[dns46]\nenabled = true\nlisten = "192.0.2.1"\nttl = 30\n'
    try:
        with instance("gw", config(extra=extra), work, "dns46") as cfg:
            # The PBX (sipp) is given the carrier's name: its resolver asks the box.
            res = call(
                work,
                plain("pbx", "192.0.2.10", 7000),
                plain("v6peer", "2001:db8:1::20", 6000),
                target="carrier.example:5060",
            )
            a = query("pbx", "192.0.2.1", "carrier.example", "A")
            srv = query("pbx", "192.0.2.1", "_sip._udp.carrier.example", "SRV")
            naptr = query("pbx", "192.0.2.1", "carrier.example", "NAPTR")
            www = query("pbx", "192.0.2.1", "www.carrier.example", "A")
            www_upstream = query("gw", DNS_SERVER, "www.carrier.example", "A")
            query("pbx", "192.0.2.1", "_sip._udp.v6.example", "SRV")  # names v6only as a SIP host
            v6only = query("pbx", "192.0.2.1", "v6only.carrier.example", "A")
            st = status("gw", cfg)["daemon"]["dns46"]  # waits for the daemon's next figures
            text = ns("gw", sipnat46_bin(), "--config", str(cfg), "status", check=False).stdout
    finally:
        resolv.unlink()
        resolv.parent.rmdir()
    ok(res)
    assert first(res.uas.received(), "INVITE").data.startswith(b"INVITE sip:bob@[2001:db8:1::20]:5060 ")
    assert a["answer"] == [f"carrier.example. 30 IN A {STAND_IN}"]
    assert srv["answer"] == ["_sip._udp.carrier.example. 30 IN SRV 0 0 5060 carrier.example."]
    assert srv["additional"] == [f"carrier.example. 30 IN A {STAND_IN}"]
    assert naptr["answer"] == [
        'carrier.example. 30 IN NAPTR 10 10 "S" "SIP+D2U" "" _sip._udp.carrier.example.'
    ]
    assert www == www_upstream and www["answer"] == ["www.carrier.example. 30 IN A 203.0.113.80"]
    (synth,) = v6only["answer"]
    assert synth.startswith("v6only.carrier.example. 30 IN A 100.64.46.")
    assert st["answered"] >= 3 and st["synthesised"] == 1 and st["forwarded"] >= 3
    assert "peer carrier (carrier.example, stand-in 100.64.46.30): in use [2001:db8:1::20]:5060" in text


def test_carrier_calls_in_from_its_targets_and_the_pbx_sees_the_stand_in(
    work: Path, dns_server: Path
) -> None:
    with instance("gw", config(), work, "dnsin"):
        via6 = call(
            work,
            plain("v6peer", "2001:db8:1::20", 6000),
            plain("pbx", "192.0.2.10", 7000),
            target="[2001:db8:1::1]:5060",
        )
        via4 = call(
            work,
            plain("v4peer", "198.51.100.20", 6002),
            plain("pbx", "192.0.2.10", 7002, 5062),  # its own port: its own sipp log
            target="192.0.2.10:5062",
        )
    for res in (via6, via4):
        ok(res)
        invite = first(res.uas.received(), "INVITE")
        no_literal_of_family(invite, 6)
        assert_only(invite, STAND_IN, ("via", "contact", "from"))  # one peer, whichever target called
    assert media_of(first(via6.uas.received(), "INVITE"))[0] == "192.0.2.1"  # relayed
    assert media_of(first(via4.uas.received(), "INVITE"))[0] == "198.51.100.20"  # direct


def test_named_peer_over_tcp_fails_over_when_the_ipv6_target_refuses(work: Path, dns_server: Path) -> None:
    reject = "tcp -j REJECT --reject-with tcp-reset"
    res, st = call_v4_while_v6_target(work, reject, "dnstcp", config(failover_after=40), transport="t1")
    ok(res)
    carrier = st["named_peers"]["peers"]["carrier"]
    assert carrier["targets"][0]["failures"] == 1 and "ECONNREFUSED" in carrier["targets"][0]["last_failure"]
    assert st["tcp"]["connect_failed"] == 1 and st["tcp"]["open"] == 0
    invite = first(res.uas.received(), "INVITE")
    assert invite.data.startswith(b"INVITE sip:bob@198.51.100.20:5060 SIP/2.0\r\n")
    assert b"SIP/2.0/TCP 192.0.2.10:" in invite.data  # the PBX's own Via: IPv4 all the way
    no_literal_of_family(invite, 6)
    assert media_of(invite)[0] == "192.0.2.10" and st["relay"]["legs"] == 0
    answer = first(res.uac.received(), "SIP/2.0 200")
    assert_only(answer, STAND_IN, ("contact",))

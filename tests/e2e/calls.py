"""One call between two sipp peers in the lab, with RTP counted at both ends."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.lab import SCENARIOS, Counter, SippRun, sipp

V4 = re.compile(rb"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
V6 = re.compile(rb"\b[0-9a-f]{1,4}(?::[0-9a-f]{0,4}){2,7}\b", re.I)


@dataclass
class Side:
    ns: str
    local: str  # the address sipp binds (SIP)
    media: str  # the address sipp binds for RTP
    media_port: int
    keys: dict[str, str]
    port: int = 5060

    @property
    def family(self) -> int:
        return 6 if ":" in self.media else 4

    @property
    def target(self) -> str:
        return f"[{self.local}]:{self.port}" if ":" in self.local else f"{self.local}:{self.port}"


def literal(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


def plain(side_ns: str, addr: str, media_port: int, port: int = 5060) -> Side:
    """A peer that writes its own address everywhere."""
    fam = "6" if ":" in addr else "4"
    return Side(
        side_ns,
        addr,
        addr,
        media_port,
        {"via_host": literal(addr), "contact_host": literal(addr), "sdp_type": fam, "sdp_ip": addr},
        port,
    )


def rigid(side_ns: str, local: str, written: str, media_port: int, media: str | None = None) -> Side:
    """A rigid PBX: sends from ``local`` but writes ``written`` into Via, Contact and SDP."""
    fam = "6" if ":" in written else "4"
    keys = {
        "via_host": literal(written),
        "contact_host": literal(written),
        "sdp_type": fam,
        "sdp_ip": written,
    }
    return Side(side_ns, local, media or local, media_port, keys)


@dataclass
class CallResult:
    uac: SippRun
    uas: SippRun
    uac_rc: int
    uas_rc: int
    rtp_to_uas: int
    rtp_to_uac: int


def start_call(
    work: Path,
    caller: Side,
    callee: Side,
    *,
    target: str | None = None,
    duration_ms: int = 1500,
    flow: str | None = None,
    transport: str | None = None,
) -> tuple[SippRun, SippRun]:
    """Start the callee's sipp UAS, then the caller's UAC; returns (uac, uas) still running.
    ``transport`` is sipp's -t (u1, t1, tn: UDP, one TCP connection, one per call)."""
    extra = ("-t", transport, "-max_socket", "100") if transport else ()
    uas = sipp(
        callee.ns, "uas", work, local=callee.local, media=callee.media, media_port=callee.media_port,
        keys=callee.keys, port=callee.port, scenario=f"uas_{flow}.xml" if flow else None, extra=extra,
    )  # fmt: skip
    time.sleep(0.4)
    uac = sipp(
        caller.ns, "uac", work, local=caller.local, media=caller.media, media_port=caller.media_port,
        keys=caller.keys, target=target or callee.target, port=caller.port, duration_ms=duration_ms,
        scenario=f"uac_{flow}.xml" if flow and (SCENARIOS / f"uac_{flow}.xml").exists() else None,
        extra=extra,
    )  # fmt: skip
    return uac, uas


def call(  # type: ignore[no-untyped-def]
    work: Path,
    caller: Side,
    callee: Side,
    *,
    duration_ms: int = 1500,
    during=None,
    flow: str | None = None,
    target: str | None = None,
    transport: str | None = None,
) -> CallResult:
    """Place one call from ``caller`` (sipp UAC) to ``callee`` (sipp UAS); both stream RTP
    to the address the other's SDP names; packets are counted by the kernel at each end.
    ``flow`` picks the scenario pair uac_FLOW.xml/uas_FLOW.xml; ``target`` is where the
    caller sends (a stand-in, or the box), when that is not the callee itself."""
    to_uas = Counter(callee.ns, callee.family, "INPUT", f"--dport {callee.media_port}")
    to_uac = Counter(caller.ns, caller.family, "INPUT", f"--dport {caller.media_port}")
    try:
        uac, uas = start_call(
            work, caller, callee, target=target, duration_ms=duration_ms, flow=flow, transport=transport
        )
        if during is not None:
            during()
        uac_rc = uac.wait(60)
        uas_rc = uas.wait(30)
        time.sleep(0.2)
        return CallResult(uac, uas, uac_rc, uas_rc, to_uas.packets(), to_uac.packets())
    finally:
        to_uas.remove()
        to_uac.remove()

"""SIP over TCP through the stream proxy: sipp over TCP (-t t1 and -t tn) for fixup and
translate with RTP, segmentation, two messages in one send, resets, many connections, TLS,
and kill -9 in the middle of a connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.calls import call, plain, rigid
from tests.e2e.lab import first, instance, status
from tests.e2e.test_fixup import GATEWAY, RTP_MIN, assert_fixed_up, assert_only, no_literal_of_family
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


def test_fixup_over_tcp_rigid_pbx(work: Path) -> None:
    with instance("gw", FIXUP, work, "tcpfix"):
        res = call(
            work,
            rigid("rpbx", "2001:db8:5::10", "192.0.2.130", 7000),
            plain("dspeer", "2001:db8:3::30", 6000),
            transport="t1",
        )
    assert_fixed_up(res, "2001:db8:5::10")
    assert res.rtp_to_uas >= RTP_MIN and res.rtp_to_uac >= RTP_MIN

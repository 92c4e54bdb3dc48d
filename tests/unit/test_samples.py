"""Real captures: rewritten to the other family and back, every address and port restored."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from sipnat46.destination import implied_destination
from sipnat46.errors import SipParseError
from sipnat46.media import MediaSessions
from sipnat46.plan import AddressPlan, Side, StandIns
from sipnat46.policy import Packet, Rewriter
from sipnat46.sdp import parse_sdp
from sipnat46.sip.addrs import parse_name_addr, split_values
from sipnat46.sip.body import sdp_spans
from sipnat46.sip.message import parse_message
from sipnat46.sip.uri import IPAddress
from sipnat46.sip.via import parse_via_values
from tests.conftest import SAMPLES

ip = ipaddress.ip_address
BOX6 = ip("2001:db8:1::1")
BOX_IN = ip("192.0.2.1")
PBX = ip("192.0.2.10")
PEER6 = ip("2001:db8:99::20")
STAND_IN = ip("100.64.46.99")
GOLDEN = Path(__file__).parent / "golden"

SAMPLE_NAMES = sorted(p.name for p in SAMPLES.glob("*.sip"))


def top_via_host(data: bytes) -> IPAddress | None:
    msg = parse_message(data)
    h = msg.first("via")
    assert h is not None
    return parse_via_values(data, h.value_start, h.value_end)[0].sent_by.address


def contact_host(data: bytes) -> IPAddress | None:
    msg = parse_message(data)
    h = msg.first("contact")
    if h is None:
        return None
    uri = parse_name_addr(data, *split_values(data, h.value_start, h.value_end)[0]).uri
    return uri.host.address if uri is not None and uri.host is not None else None


def sender_of(data: bytes) -> IPAddress | None:
    """The address of whoever wrote the message: top Via, Contact, else its SDP."""
    msg = parse_message(data)
    first = top_via_host(data) if msg.is_request else contact_host(data)
    if first is not None:
        return first
    spans = sdp_spans(msg)
    if spans:
        sd = parse_sdp(data, *spans[0])
        for a in (sd.origin, sd.connection, *(m.connection for m in sd.media)):
            if a is not None and a.address is not None:
                return a.address
    return None


def destination_of(data: bytes, fallback: IPAddress) -> IPAddress:
    try:
        return implied_destination(parse_message(data))
    except SipParseError:
        return fallback  # the message names its next hop by name only


def v4_round_trip(data: bytes, relay: bool = True) -> tuple[bytes, bytes, Rewriter]:
    """An IPv4 message as the PBX sent it: to IPv6 (translate) and back."""
    sender = sender_of(data)
    dst = destination_of(data, STAND_IN)
    assert sender is not None and sender.version == 4
    plan = AddressPlan(pbx=(sender,), stand_ins=StandIns(static={PEER6: dst}), egress={6: BOX6})
    rw = Rewriter(plan, media=MediaSessions(30000, 30999) if relay else None, relay_inside=BOX_IN)
    out = rw.rewrite(data, Packet(Side.INSIDE, dst, sender), 1.0)
    assert out.translated and out.dst == PEER6 and out.src == BOX6
    back = rw.rewrite(out.data, Packet(Side.OUTSIDE, BOX6, PEER6), 2.0)
    assert back.translated and back.dst == sender and back.src == dst
    return out.data, back.data, rw


def v6_round_trip(data: bytes, relay: bool = True) -> tuple[bytes, bytes, Rewriter]:
    """An IPv6 message as a peer sent it: to the IPv4-only PBX (stand-ins) and back."""
    sender = sender_of(data)
    dst = destination_of(data, BOX6)
    assert sender is not None and sender.version == 6
    plan = AddressPlan(
        pbx=(PBX,), stand_ins=StandIns(ipaddress.ip_network("100.64.46.0/24")), egress={6: dst}
    )
    rw = Rewriter(plan, media=MediaSessions(30000, 30999) if relay else None, relay_inside=BOX_IN)
    out = rw.rewrite(data, Packet(Side.OUTSIDE, dst, sender), 1.0)
    assert out.translated and out.dst == PBX
    stand_in = out.src
    assert stand_in is not None and stand_in in ipaddress.ip_network("100.64.46.0/24")
    back = rw.rewrite(out.data, Packet(Side.INSIDE, stand_in, PBX), 2.0)
    assert back.translated and back.dst == sender
    return out.data, back.data, rw


def literals(data: bytes, version: int) -> list[str]:
    """Every address literal of one family in a message (SIP part and SDP)."""
    import re

    text = data.decode("latin-1")
    if version == 4:
        found = re.findall(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])", text)
    else:
        found = [m for m in re.findall(r"[0-9a-fA-F:]*:[0-9a-fA-F:.]+", text) if m.count(":") >= 2]
    out = []
    for f in found:
        try:
            a = ipaddress.ip_address(f)
        except ValueError:
            continue
        if a.version == version:
            out.append(str(a))
    return out


def opaque_removed(msg: bytes) -> bytes:
    """The message without what is opaque and never an address to use: Call-ID, Via
    branch values and digest credentials (rewriting those would break the dialog or auth)."""
    import re

    m = parse_message(msg)
    cut = [
        (h.start, h.end) for h in m.headers if h.name in ("call-id", "authorization", "proxy-authorization")
    ]
    for s, e in reversed(cut):
        msg = msg[:s] + msg[e:]
    return re.sub(rb"branch=[^;,\r\n]*", b"", msg)


@pytest.mark.parametrize("relay", [True, False], ids=["relay", "no-relay"])
@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_to_other_family_and_back(name: str, relay: bool) -> None:
    data = (SAMPLES / name).read_bytes()
    sender = sender_of(data)
    if sender is not None and sender.version == 6:
        there, back, _ = v6_round_trip(data, relay)
        assert str(PBX) in there.decode("latin-1") or b"Contact" not in data
    elif sender is not None and sender.version == 4:
        there, back, _ = v4_round_trip(data, relay)
        # Leaving the PBX towards IPv6: no IPv4 literal naming the PBX side remains.
        assert str(sender) not in literals(opaque_removed(there), 4)
    else:
        pytest.fail(f"{name}: sender is a host name; every sample here names an address")
    assert there != data
    expected = canonical_sdp(data)
    if relay and b"a=candidate" in data:
        # Behind the relay every candidate names the relay leg: the PBX side's own
        # host candidates are not restorable, and are not meant to be.
        expected, back = (
            re.sub(rb"a=candidate[^\r]*\r\n|Content-Length: \d+", b"", x) for x in (expected, back)
        )
    assert back == expected


def canonical_sdp(data: bytes) -> bytes:
    """What a round trip can restore: SDP has no brackets around IPv6 (RFC 4566), so a
    capture that wrote ``IN IP6 [addr]`` comes back as ``IN IP6 addr``."""
    import re

    msg = parse_message(data)
    body = re.sub(rb"(IN IP6 )\[([0-9a-fA-F:.]+)\]", rb"\1\2", msg.body)
    if body == msg.body:
        return data
    h = msg.first("content-length")
    assert h is not None
    head = data[: h.value_start] + str(len(body)).encode() + data[h.value_end : msg.body_start]
    return head + body + data[msg.body_end :]


def test_sdp_body_length_is_recomputed() -> None:
    data = (SAMPLES / "ipv4-01-invite-proxy-authorization.sip").read_bytes()
    there, _, _ = v4_round_trip(data)
    msg = parse_message(there)
    assert int(msg.header_text("content-length") or "-1") == len(msg.body)
    assert msg.body_end == len(there)


GOLDEN_CASES = [
    "ipv4-01-invite-proxy-authorization.sip",
    "ipv4-02-183-early-media.sip",
    "ipv6-02-invite-forwarded-by-proxy.sip",
    "webrtc-01-invite-wss-ice-rtcp.sip",
]


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden(name: str) -> None:
    data = (SAMPLES / name).read_bytes()
    trip = v6_round_trip if name.startswith("ipv6") else v4_round_trip
    there, _, _ = trip(data)
    golden = GOLDEN / (name + ".out")
    assert golden.exists(), f"missing golden file {golden}"
    assert there == golden.read_bytes()

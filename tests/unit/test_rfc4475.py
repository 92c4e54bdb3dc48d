"""RFC 4475 torture messages: valid ones parse and pass through byte-identical."""

from __future__ import annotations

import ipaddress

import pytest

from sipnat46.errors import Sipnat46Error, SipParseError
from sipnat46.plan import AddressPlan, Side
from sipnat46.policy import Packet, Rewriter
from sipnat46.sip.message import parse_message
from tests.conftest import RFC4475

VALID = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq",
    "semiuri", "transports", "mpart01", "unreason", "noreason",
    # well-formed (transaction/application-layer faults, not syntax)
    "badbranch", "insuf", "unkscm", "novelsc", "unksm2", "bext01", "invut", "regaut01",
    "bcast", "zeromf", "cparam01", "cparam02", "regescrt", "sdp01", "inv2543",
]  # fmt: skip
INVALID = [
    "badinv01", "clerr", "ncl", "scalar02", "scalarlg", "quotbal", "ltgtruri", "lwsruri",
    "lwsstart", "trws", "escruri", "baddate", "regbadct", "badaspec", "baddn", "badvers",
    "mismatch01", "mismatch02", "bigcode", "multi01", "mcl01",
]  # fmt: skip
# Must be rejected by the codec itself (the rest may be tolerated, as the RFC allows). The
# rewriter passes a message it has nothing to change in without taking it apart, so it
# tolerates these too unless they carry an address it must change (see the last test).
MUST_REJECT = ["clerr", "ncl", "bigcode", "ltgtruri", "lwsruri", "mcl01"]

# An address plan none of the corpus addresses belong to.
NOTHING = AddressPlan(pbx=(ipaddress.ip_address("203.0.113.77"),))


def load(name: str) -> bytes:
    return (RFC4475 / f"{name}.dat").read_bytes()


def test_corpus_is_complete() -> None:
    names = {p.stem for p in RFC4475.glob("*.dat")}
    assert set(VALID) | set(INVALID) | {"test"} == names


@pytest.mark.parametrize("name", VALID)
def test_valid_parses_and_is_untouched(name: str) -> None:
    data = load(name)
    msg = parse_message(data)
    assert msg.headers
    rw = Rewriter(NOTHING)
    for side in Side:
        out = rw.rewrite(data, Packet(side, ipaddress.ip_address("198.51.100.9")))
        assert out.data == data
        assert not out.changed


@pytest.mark.parametrize("name", [*INVALID, "test"])
def test_invalid_raises_only_our_error(name: str) -> None:
    data = load(name)
    rw = Rewriter(NOTHING)
    try:
        out = rw.rewrite(data, Packet(Side.INSIDE, ipaddress.ip_address("198.51.100.9")))
    except Sipnat46Error:
        return
    assert out.data == data  # tolerated: then it must pass through untouched


@pytest.mark.parametrize("name", MUST_REJECT)
def test_clearly_broken_is_rejected_by_the_codec(name: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(load(name))


def test_wsinv_compact_and_folded_headers() -> None:
    msg = parse_message(load("wsinv"))
    names = [h.name for h in msg.headers]
    assert names.count("via") == 2
    assert "subject" in names and "contact" in names and "to" in names
    assert msg.header_text("cseq") is not None
    # the folded CSeq value keeps its continuation line
    assert "INVITE" in (msg.header_text("cseq") or "")
    assert msg.body.startswith(b"v=0")


def test_dblreq_trailing_octets_are_not_body() -> None:
    msg = parse_message(load("dblreq"))
    assert msg.body_end - msg.body_start == 0
    assert msg.body_end < len(msg.data)


def test_error_message_says_where() -> None:
    with pytest.raises(SipParseError) as exc:
        parse_message(load("clerr"))
    assert "Content-Length" in str(exc.value) and "byte" in str(exc.value)


def test_broken_header_is_rejected_once_the_message_needs_a_change() -> None:
    """A message with nothing to change is not taken apart (it passes untouched, and the far
    end judges it); one that must change is parsed whole, and a broken header stops it."""
    data = load("quotbal")  # unterminated quote in To; its Via names 192.0.2.59
    plan = AddressPlan(
        pbx=(ipaddress.ip_address("192.0.2.59"),), egress={6: ipaddress.ip_address("2001:db8::1")}
    )
    with pytest.raises(SipParseError):
        Rewriter(plan).rewrite(data, Packet(Side.INSIDE, ipaddress.ip_address("2001:db8::99")))
    assert (
        Rewriter(NOTHING).rewrite(data, Packet(Side.INSIDE, ipaddress.ip_address("198.51.100.9"))).data
        == data
    )

"""Via header values: protocol, sent-by and the parameters that carry addresses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import SipParseError
from .addrs import split_values
from .uri import Host, parse_host

# SIP / 2.0 / TRANSPORT with LWS allowed around the slashes (RFC 4475 wsinv).
_PROTO = re.compile(rb"SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9._!%*+`'~-]+)\s+", re.IGNORECASE)
_VIA_STOPS = frozenset(b":;, \t\r\n")
# ;name[=value], LWS allowed around ';' and '='; a value is a token, a quoted string or [v6].
_PARAM = re.compile(
    rb'[ \t\r\n]*;[ \t\r\n]*([^= \t\r\n;,]+)(?:[ \t\r\n]*=[ \t\r\n]*("[^"]*"|\[[^\]]*\]|[^;, \t\r\n]*))?'
)

# Parameters whose value is a host we may have to rewrite.
ADDRESS_PARAMS = ("received", "maddr")


@dataclass(slots=True)
class ViaParam:
    name: str
    value: Host | None  # host view of the value; None when absent ("rport")
    raw: str  # the value as written ("" when absent)


@dataclass(slots=True)
class Via:
    start: int
    end: int
    transport: str
    sent_by: Host
    params: dict[str, ViaParam] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        p = self.params.get("branch")
        return p.raw if p is not None else None


def parse_via_values(data: bytes, start: int, end: int) -> list[Via]:
    return [parse_via(data, s, e) for s, e in split_values(data, start, end)]


def parse_via(data: bytes, start: int, end: int) -> Via:
    m = _PROTO.match(data, start, end)
    if m is None:
        raise SipParseError("Via without SIP/2.0/transport", start)
    sent_by = parse_host(data, m.end(), end, stops=_VIA_STOPS)
    via = Via(start, end, m.group(1).decode("latin-1").upper(), sent_by)
    pos = sent_by.port_end if sent_by.port_end is not None else sent_by.end
    match = _PARAM.match
    while True:
        m = match(data, pos, end)
        if m is None:
            break
        name = m.group(1).decode("latin-1").lower()
        if m.group(2) is None:
            via.params[name] = ViaParam(name, None, "")
        else:
            vstart, vend = m.span(2)
            raw = m.group(2).decode("latin-1")
            host = Host(raw.strip("[]"), vstart, vend) if name in ADDRESS_PARAMS else None
            via.params[name] = ViaParam(name, host, raw)
        pos = m.end()
    while pos < end and data[pos] in b" \t\r\n":
        pos += 1
    if pos < end:
        raise SipParseError("junk in Via parameters", pos)
    return via

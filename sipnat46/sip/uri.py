"""SIP URIs and hosts: where the host and port sit in the original bytes.

Only ``sip:`` and ``sips:`` URIs are taken apart; ``tel:`` and unknown schemes are
reported as opaque so the caller passes them through unchanged.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache

from ..errors import SipParseError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HOST_END = frozenset(b":;?>, \t\r\n")
_PARAM_END = frozenset(b";?>, \t\r\n")


@lru_cache(maxsize=16384)
def parse_ip(text: str) -> IPAddress | None:
    """The address a host string names, or None for a domain name or junk.

    Cached: the same few addresses recur in every message, and ipaddress is slow.
    """
    if not text or not (text[0].isdigit() or text[0] in "abcdefABCDEF:"):
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@lru_cache(maxsize=16384)
def format_address(addr: IPAddress) -> str:
    """An address as SDP and Via received= write it (IPv6 compressed, no brackets)."""
    return str(addr)


@lru_cache(maxsize=16384)
def format_host(addr: IPAddress) -> str:
    """A host as SIP writes it: IPv6 references in brackets (RFC 3261 section 19.1.1)."""
    return f"[{addr}]" if addr.version == 6 else str(addr)


@dataclass(slots=True)
class Host:
    """A host (and optional port) inside a larger buffer.

    ``start``/``end`` cover the host as written, brackets included, so a
    replacement can change the family without touching anything around it.
    """

    text: str
    start: int
    end: int
    port: int | None = None
    port_start: int | None = None
    port_end: int | None = None

    @property
    def address(self) -> IPAddress | None:
        return parse_ip(self.text)


@dataclass(slots=True)
class Uri:
    scheme: str
    start: int
    end: int
    host: Host | None
    params: dict[str, Host | None] = field(default_factory=dict)

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"


def parse_host(data: bytes, pos: int, end: int, *, stops: frozenset[int] = _HOST_END) -> Host:
    """Parse ``host[:port]`` starting at ``pos``; raises on a malformed reference or port."""
    if pos < end and data[pos] == 0x5B:  # '['
        close = data.find(b"]", pos, end)
        if close < 0:
            raise SipParseError("unterminated IPv6 reference", pos)
        text = data[pos + 1 : close].decode("latin-1")
        host = Host(text, pos, close + 1)
        pos = close + 1
    else:
        start = pos
        while pos < end and data[pos] not in stops:
            pos += 1
        if pos == start:
            raise SipParseError("empty host", start)
        host = Host(data[start:pos].decode("latin-1"), start, pos)
    # Optional ":port", tolerating LWS around the colon (Via sent-by allows it).
    look = pos
    while look < end and data[look] in b" \t":
        look += 1
    if look < end and data[look] == 0x3A:  # ':'
        look += 1
        while look < end and data[look] in b" \t":
            look += 1
        pstart = look
        while look < end and 0x30 <= data[look] <= 0x39:
            look += 1
        if look == pstart or (look < end and data[look] not in stops):
            raise SipParseError("bad port after host", pstart)
        port = int(data[pstart:look])
        if port > 65535:
            raise SipParseError("port out of range", pstart)
        host.port, host.port_start, host.port_end = port, pstart, look
    return host


def parse_uri(data: bytes, start: int, end: int) -> Uri:
    """Parse the URI in ``data[start:end]`` (already cut out of any ``<>``)."""
    colon = data.find(b":", start, end)
    if colon <= start:
        raise SipParseError("URI without a scheme", start)
    scheme = data[start:colon].decode("latin-1").lower()
    if not scheme[0].isalpha() or not all(c.isalnum() or c in "+-." for c in scheme):
        raise SipParseError("bad URI scheme", start)
    if scheme not in ("sip", "sips"):
        return Uri(scheme, start, end, None)
    # The userinfo cannot hold an unescaped '@', and neither can params or headers.
    at = data.find(b"@", colon + 1, end)
    host_pos = at + 1 if at >= 0 else colon + 1
    host = parse_host(data, host_pos, end)
    uri = Uri(scheme, start, end, host)
    pos = host.port_end if host.port_end is not None else host.end
    while pos < end and data[pos] == 0x3B:  # ';'
        pos += 1
        name_start = pos
        while pos < end and data[pos] not in b"=;?> \t":
            pos += 1
        name = data[name_start:pos].decode("latin-1").lower()
        value: Host | None = None
        if pos < end and data[pos] == 0x3D:  # '='
            pos += 1
            if name == "maddr":
                value = parse_host(data, pos, end, stops=_PARAM_END)
                pos = value.end
            while pos < end and data[pos] not in _PARAM_END:
                pos += 1
        uri.params[name] = value
    return uri

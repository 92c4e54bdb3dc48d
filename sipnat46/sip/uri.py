"""SIP URIs and hosts: where the host and port sit in the original bytes.

Only ``sip:`` and ``sips:`` URIs are taken apart; ``tel:`` and unknown schemes are
reported as opaque so the caller passes them through unchanged.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import lru_cache

from ..errors import SipParseError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HOST_END = frozenset(b":;?>, \t\r\n")  # what _HOST stops at; narrower sets are subsets
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


# host (IPv6 reference or run of host characters), then an optional ":port" with LWS allowed.
_HOST = re.compile(rb"\[([^\]]*)\]|[^:;?>, \t\r\n\[]+")
_PORT = re.compile(rb"[ \t]*:[ \t]*(\d*)")


def parse_host(data: bytes, pos: int, end: int, *, stops: frozenset[int] = _HOST_END) -> Host:
    """Parse ``host[:port]`` starting at ``pos``; raises on a malformed reference or port."""
    m = _HOST.match(data, pos, end)
    if m is None:
        if pos < end and data[pos] == 0x5B:
            raise SipParseError("unterminated IPv6 reference", pos)
        raise SipParseError("empty host", pos)
    if m.group(1) is not None:
        host = Host(m.group(1).decode("latin-1"), pos, m.end())
    else:
        # Every stop set is a subset of what _HOST stops at, so the run is the host.
        host = Host(m.group().decode("latin-1"), pos, m.end())
    p = _PORT.match(data, host.end, end)
    if p is not None:
        pstart, look = p.span(1)
        if look == pstart or (look < end and data[look] not in stops):
            raise SipParseError("bad port after host", pstart)
        port = int(p.group(1))
        if port > 65535:
            raise SipParseError("port out of range", pstart)
        host.port, host.port_start, host.port_end = port, pstart, look
    return host


_KNOWN_SCHEMES = frozenset({"sip", "sips", "tel"})
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")  # RFC 3986 section 3.1
_PARAM = re.compile(rb";([^=;?> \t]*)(?:=([^;?>, \t\r\n]*))?")


def parse_uri(data: bytes, start: int, end: int) -> Uri:
    """Parse the URI in ``data[start:end]`` (already cut out of any ``<>``)."""
    colon = data.find(b":", start, end)
    if colon <= start:
        raise SipParseError("URI without a scheme", start)
    scheme = data[start:colon].decode("latin-1").lower()
    if scheme not in _KNOWN_SCHEMES and _SCHEME.fullmatch(scheme) is None:
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
        m = _PARAM.match(data, pos, end)
        assert m is not None  # ';' alone matches with an empty name
        name = m.group(1).decode("latin-1").lower()
        value: Host | None = None
        if name == "maddr" and m.group(2) is not None:
            vstart = m.start(2)
            value = parse_host(data, vstart, end, stops=_PARAM_END)
        uri.params[name] = value
        pos = m.end()
    return uri

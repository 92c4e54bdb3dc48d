"""Comma-separated header values and name-addr / addr-spec values.

Splitting honours quoted strings (with backslash escapes) and ``<...>``, so a comma
inside a display name or a URI never splits a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ..errors import SipParseError
from .uri import Uri, parse_uri

_WS = b" \t\r\n"


def split_values(data: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of the comma-separated values in ``data[start:end]``, stripped of LWS."""
    if data.find(b",", start, end) < 0:  # the common case: one value, nothing to scan
        s, e = _strip(data, start, end)
        if data.find(b'"', s, e) >= 0:
            _check_quotes(data, s, e)
        return [(s, e)] if s < e else []
    spans: list[tuple[int, int]] = []
    pos = value_start = start
    in_quote = in_angle = False
    while pos < end:
        ch = data[pos]
        if in_quote:
            if ch == 0x5C:  # backslash escapes the next octet
                pos += 1
            elif ch == 0x22:
                in_quote = False
        elif ch == 0x22:
            in_quote = True
        elif ch == 0x3C:
            in_angle = True
        elif ch == 0x3E:
            in_angle = False
        elif ch == 0x2C and not in_angle:
            spans.append(_strip(data, value_start, pos))
            value_start = pos + 1
        pos += 1
    if in_quote:
        raise SipParseError("unterminated quoted string", value_start)
    spans.append(_strip(data, value_start, end))
    return [s for s in spans if s[0] < s[1]]


# Text with every quoted string closed (backslash escapes honoured).
_BALANCED = re.compile(rb'(?:[^"\\]|\\.|"(?:[^"\\]|\\.)*")*', re.S)


def _check_quotes(data: bytes, start: int, end: int) -> None:
    m = _BALANCED.match(data, start, end)
    if m is None or m.end() != end:
        raise SipParseError("unterminated quoted string", start)


def _strip(data: bytes, start: int, end: int) -> tuple[int, int]:
    while start < end and data[start] in _WS:
        start += 1
    while end > start and data[end - 1] in _WS:
        end -= 1
    return start, end


@dataclass(slots=True)
class NameAddr:
    """One value of a From/To/Contact/Route-like header."""

    start: int
    end: int
    uri: Uri | None  # None for Contact: *


def parse_name_addr(data: bytes, start: int, end: int) -> NameAddr:
    """Parse ``["display"] <uri> *(;param)`` or ``uri *(;param)``."""
    if data[start:end] == b"*":
        return NameAddr(start, end, None)
    lt = -1
    pos = start
    in_quote = False
    if data.find(b'"', start, end) < 0:  # no display name in quotes: the first '<' is it
        lt = data.find(b"<", start, end)
        pos = end
    while pos < end:  # find '<' outside the quoted display name
        ch = data[pos]
        if in_quote:
            if ch == 0x5C:
                pos += 1
            elif ch == 0x22:
                in_quote = False
        elif ch == 0x22:
            in_quote = True
        elif ch == 0x3C:
            lt = pos
            break
        pos += 1
    if lt >= 0:
        gt = data.find(b">", lt, end)
        if gt < 0:
            raise SipParseError("'<' without '>'", lt)
        ustart, uend = _strip(data, lt + 1, gt)
    else:
        # addr-spec form: the URI ends at the first header parameter or LWS.
        ustart = start
        uend = ustart
        while uend < end and data[uend] not in b"; \t\r\n":
            uend += 1
    if ustart >= uend:
        raise SipParseError("empty URI", ustart)
    return NameAddr(start, end, parse_uri(data, ustart, uend))


# (is maddr=, start, end, text) of one host a URI list names.
UriHost = tuple[bool, int, int, str]


def uri_hosts(data: bytes, start: int, end: int) -> tuple[UriHost, ...]:
    """The hosts (and maddr= hosts) of the URIs in a From/To/Contact-like value, with
    offsets relative to ``start``. Parsing depends on the value's bytes alone, and the same
    Contact, From and To come back in message after message: a value seen before costs a
    lookup. A broken value raises with its position in the whole message."""
    try:
        return _uri_hosts(data[start:end])
    except SipParseError:
        _uri_hosts_in(data, start, end)  # raises again, saying where in the message
        raise


@lru_cache(maxsize=4096)
def _uri_hosts(value: bytes) -> tuple[UriHost, ...]:
    return _uri_hosts_in(value, 0, len(value))


def _uri_hosts_in(data: bytes, start: int, end: int) -> tuple[UriHost, ...]:
    hosts: list[UriHost] = []
    for s, e in split_values(data, start, end):
        uri = parse_name_addr(data, s, e).uri
        if uri is None or uri.host is None:
            continue
        h = uri.host
        hosts.append((False, h.start - start, h.end - start, h.text))
        maddr = uri.params.get("maddr")
        if maddr is not None:
            hosts.append((True, maddr.start - start, maddr.end - start, maddr.text))
    return tuple(hosts)

"""A SIP message as offsets into its original bytes, and byte-preserving edits.

Parsing is shallow and cheap: the start line, where each header field sits and where the
body is. Values are taken apart only when the policy asks (``uri``, ``via`` and ``addrs``
modules), so a message with nothing to change costs little and comes out identical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from ..errors import SipParseError
from .headers import CONTENT_LENGTH, canonical_name
from .uri import Uri, parse_uri

_TOKEN_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"


def _is_token(raw: bytes) -> bool:
    return bool(raw) and not raw.translate(None, _TOKEN_CHARS)


MAX_HEADERS = 256


class HeaderField(NamedTuple):
    """Where one header field sits (a tuple: a message has a dozen, built per packet)."""

    name: str  # canonical long lower-case name
    start: int  # first byte of the header line
    value_start: int
    value_end: int  # end of the value, folded continuation lines included
    end: int  # after the line terminator


@dataclass(slots=True)
class SipMessage:
    data: bytes
    method: str | None  # requests
    status: int | None  # responses
    uri_start: int
    uri_end: int
    headers: list[HeaderField]
    body_start: int
    body_end: int
    uri: Uri | None = None  # the Request-URI, parsed

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def fields(self, name: str) -> list[HeaderField]:
        return [h for h in self.headers if h.name == name]

    def first(self, name: str) -> HeaderField | None:
        for h in self.headers:
            if h.name == name:
                return h
        return None

    def value(self, h: HeaderField) -> bytes:
        return self.data[h.value_start : h.value_end]

    def header_text(self, name: str) -> str | None:
        h = self.first(name)
        return None if h is None else self.value(h).decode("latin-1")

    @property
    def body(self) -> bytes:
        return self.data[self.body_start : self.body_end]


def parse_message(data: bytes) -> SipMessage:
    """Parse the start line and header layout of one SIP message (one datagram)."""
    if not data:
        raise SipParseError("empty message", 0)
    head_end = data.find(b"\r\n\r\n")
    if head_end >= 0:
        body_start = head_end + 4
    else:
        head_end = data.find(b"\n\n")
        if head_end < 0:
            raise SipParseError("no empty line ends the header section", len(data))
        body_start = head_end + 2
    line_end = data.find(b"\n", 0, head_end + 1)
    if line_end < 0:
        line_end = head_end
    start_line = data[:line_end].rstrip(b"\r")
    method: str | None = None
    status: int | None = None
    request_uri: Uri | None = None
    uri_start = uri_end = 0
    if start_line.startswith(b"SIP/"):
        parts = start_line.split(b" ", 2)
        if len(parts) < 2 or parts[0] != b"SIP/2.0":
            raise SipParseError("bad status line", 0)
        code = parts[1]
        if len(code) != 3 or not code.isdigit():
            raise SipParseError("status code is not three digits", len(parts[0]) + 1)
        status = int(code)
        if status < 100:
            raise SipParseError("status code below 100", len(parts[0]) + 1)
    else:
        sp = start_line.find(b" ")
        if sp <= 0 or not _is_token(start_line[:sp]):
            raise SipParseError("bad request line", 0)
        method = start_line[:sp].decode("ascii")
        rest = start_line[sp:].rstrip(b" ")
        vpos = rest.rfind(b" ")
        if vpos < 0 or not rest[vpos + 1 :].upper().startswith(b"SIP/"):
            raise SipParseError("request line without SIP version", sp)
        uri_start = sp
        while uri_start < sp + vpos and start_line[uri_start] == 0x20:
            uri_start += 1
        uri_end = sp + vpos
        while uri_end > uri_start and start_line[uri_end - 1] == 0x20:
            uri_end -= 1
        if uri_end <= uri_start:
            raise SipParseError("empty Request-URI", sp)
        if any(c in b" \t" for c in start_line[uri_start:uri_end]):
            raise SipParseError("whitespace inside the Request-URI", uri_start)
        request_uri = parse_uri(data, uri_start, uri_end)  # one we could not rewrite: an error now
    headers = _parse_headers(data, line_end + 1, head_end)
    body_end = len(data)
    lengths = [h for h in headers if h.name == CONTENT_LENGTH]
    if lengths:
        values = {data[h.value_start : h.value_end].strip() for h in lengths}
        if len(values) != 1:
            raise SipParseError("conflicting Content-Length values", lengths[1].start)
        raw = values.pop()
        if not raw.isdigit():
            raise SipParseError("Content-Length is not a number", lengths[0].value_start)
        length = int(raw)
        if body_start + length > len(data):
            raise SipParseError("Content-Length larger than the message", lengths[0].value_start)
        body_end = body_start + length
    return SipMessage(data, method, status, uri_start, uri_end, headers, body_start, body_end, request_uri)


# One header field: token name, colon, value with folded continuation lines (RFC 3261 7.3.1).
_HEADER = re.compile(rb"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:[ \t]*([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)\r?\n")


def _parse_headers(data: bytes, pos: int, head_end: int) -> list[HeaderField]:
    headers: list[HeaderField] = []
    limit = head_end + 2 if data[head_end : head_end + 2] == b"\r\n" else head_end + 1
    match = _HEADER.match
    append = headers.append
    new = tuple.__new__  # HeaderField's own __new__ is a Python function: this is not
    while pos < head_end:
        m = match(data, pos, limit)
        if m is None:
            if data[pos] in b" \t":
                raise SipParseError("continuation line before any header", pos)
            if data.find(b":", pos, data.find(b"\n", pos, limit)) < 0:
                raise SipParseError("header line without a colon", pos)
            raise SipParseError("bad header name", pos)
        vstart, vend = m.start(2), m.end(2)
        while vend > vstart and data[vend - 1] in b" \t\r\n":
            vend -= 1
        append(new(HeaderField, (canonical_name(m.group(1)), pos, vstart, vend, m.end())))
        if len(headers) > MAX_HEADERS:
            raise SipParseError("too many header fields", pos)
        pos = m.end()
    return headers


@dataclass
class Edits:
    """Replacements of spans of the original bytes, applied all at once."""

    items: list[tuple[int, int, bytes]] = field(default_factory=list)

    def replace(self, start: int, end: int, new: bytes) -> None:
        self.items.append((start, end, new))

    def __bool__(self) -> bool:
        return bool(self.items)

    def delta_within(self, start: int, end: int) -> int:
        return sum(len(n) - (e - s) for s, e, n in self.items if start <= s and e <= end)

    def apply(self, data: bytes) -> bytes:
        out: list[bytes] = []
        pos = 0
        for s, e, new in sorted(self.items, key=lambda i: (i[0], i[1])):
            if s < pos:
                raise SipParseError("overlapping edits", s)
            out.append(data[pos:s])
            out.append(new)
            pos = e
        out.append(data[pos:])
        return b"".join(out)


def finish(msg: SipMessage, edits: Edits) -> bytes:
    """Apply edits and recompute Content-Length from the real body, in the header's own form."""
    if not edits:
        return msg.data
    delta = edits.delta_within(msg.body_start, msg.body_end)
    if delta:
        for h in msg.fields(CONTENT_LENGTH):
            edits.replace(h.value_start, h.value_end, str(msg.body_end - msg.body_start + delta).encode())
    return edits.apply(msg.data)

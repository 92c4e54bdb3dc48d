"""Where the SDP sits in a message body: the whole body, or parts of a multipart body.

Only the SDP spans are handed out; boundaries and other parts are never touched.
"""

from __future__ import annotations

import re

from ..errors import SipParseError
from .headers import CONTENT_TYPE
from .message import SipMessage

_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_PART_CT = re.compile(rb"^content-type\s*:\s*([^\r\n]+)", re.IGNORECASE | re.MULTILINE)
MAX_DEPTH = 4


def _media_type(value: bytes) -> bytes:
    return value.split(b";", 1)[0].strip().lower()


def sdp_spans(msg: SipMessage) -> list[tuple[int, int]]:
    """Spans (into ``msg.data``) of every application/sdp body or body part."""
    if msg.body_end <= msg.body_start:
        return []
    ct = msg.first(CONTENT_TYPE)
    if ct is None:
        return []
    return _find(msg.data, msg.value(ct), msg.body_start, msg.body_end, 0)


def _find(data: bytes, ctype: bytes, start: int, end: int, depth: int) -> list[tuple[int, int]]:
    mtype = _media_type(ctype)
    if mtype == b"application/sdp":
        return [(start, end)]
    if not mtype.startswith(b"multipart/") or depth >= MAX_DEPTH:
        return []
    m = _BOUNDARY.search(ctype)
    if m is None:
        raise SipParseError("multipart body without a boundary", start)
    delim = b"--" + (m.group(1) or m.group(2))
    spans: list[tuple[int, int]] = []
    pos = data.find(delim, start, end)
    while pos >= 0:
        after = pos + len(delim)
        if data[after : after + 2] == b"--":
            break  # close delimiter
        line_end = data.find(b"\n", after, end)
        if line_end < 0:
            break
        nxt = data.find(b"\r\n" + delim, line_end, end)
        part_end = nxt if nxt >= 0 else end
        part_start = line_end + 1
        hdr_end = data.find(b"\r\n\r\n", part_start - 2, part_end)
        if hdr_end < 0:
            raise SipParseError("multipart part without header end", part_start)
        headers = data[part_start:hdr_end]
        m_ct = _PART_CT.search(headers)
        # A part with no Content-Type is text/plain (RFC 2046 section 5.1).
        if m_ct is not None:
            spans += _find(data, m_ct.group(1), hdr_end + 4, part_end, depth + 1)
        if nxt < 0:
            break
        pos = nxt + 2
    return spans

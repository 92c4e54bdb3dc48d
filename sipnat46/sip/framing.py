"""Whole SIP messages out of a byte stream (RFC 3261 section 18.3), sans-IO.

Feed bytes as they arrive; get back frames: a whole message (headers and the body its
Content-Length gives), keep-alive CRLFs between messages (RFC 5626 section 4.4.1), or raw
bytes. A stream that is not SIP (TLS records, garbage, a header block past the limit, a bad
Content-Length) cannot be re-synchronised: from that point on everything is passed as raw
bytes, unchanged, and ``mode`` says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEADERS = 65536  # bytes before the blank line; more is not SIP we will frame
MAX_BODY = 1 << 20
MAX_START_LINE = 8192

_START = re.compile(rb"(SIP/2\.0 [1-9]\d\d )|([A-Za-z0-9.!%*_+`'~-]+ [^ \r\n]+ SIP/2\.0\r?\n)")
_END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.I | re.M)


@dataclass(frozen=True, slots=True)
class Frame:
    kind: str  # "message", "keepalive" or "raw"
    data: bytes


class StreamFramer:
    def __init__(self) -> None:
        self._buf = bytearray()
        self.mode = "sip"  # or "tls" / "not-sip" / "oversized" / "bad-length": raw from then on
        self._started = False

    def feed(self, data: bytes) -> list[Frame]:
        if self.mode != "sip":
            return [Frame("raw", data)] if data else []
        self._buf += data
        out: list[Frame] = []
        while self._buf:
            if not self._started and self._buf[:1] == b"\x16" and len(self._buf) < 2:
                break  # one byte of what may be a TLS record: wait for the next
            if not self._started and self._buf[0] == 0x16 and self._buf[1] == 0x03:
                return out + self._go_raw("tls")
            n = len(self._buf) - len(self._buf.lstrip(b"\r\n"))
            if n:
                out.append(Frame("keepalive", bytes(self._buf[:n])))
                del self._buf[:n]
                continue
            frame = self._message()
            if frame is None:
                break
            if frame.kind == "raw":
                return [*out, frame]
            self._started = True
            out.append(frame)
        return out

    def _message(self) -> Frame | None:
        buf = self._buf
        head = bytes(buf[: MAX_HEADERS + 4])
        first_line = head.find(b"\n")
        if first_line < 0 and len(head) > MAX_START_LINE:
            return self._go_raw("not-sip")[0]
        if first_line >= 0 and not _START.match(head, 0, first_line + 1):
            return self._go_raw("not-sip")[0]
        end = _END_OF_HEADERS.search(head)
        if end is None:
            if len(buf) > MAX_HEADERS:
                return self._go_raw("oversized")[0]
            return None
        lengths = {m.group(1) for m in _CONTENT_LENGTH.finditer(head, 0, end.start() + 2)}
        if len(lengths) > 1 or any(not v.isdigit() for v in lengths):
            return self._go_raw("bad-length")[0]
        length = int(lengths.pop()) if lengths else 0  # required on streams; absent means none
        if length > MAX_BODY:
            return self._go_raw("oversized")[0]
        total = end.end() + length
        if len(buf) < total:
            return None
        msg = bytes(buf[:total])
        del buf[:total]
        return Frame("message", msg)

    def _go_raw(self, why: str) -> list[Frame]:
        self.mode = why
        data = bytes(self._buf)
        self._buf.clear()
        return [Frame("raw", data)]

    def pending(self) -> bytes:
        """Bytes of an incomplete message (to pass on as they are when the stream ends)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

"""Sans-IO SDP view: where every address and port sits, in the message's own offsets.

Only the lines sipnat46 may rewrite are taken apart (o=, c=, m=, a=rtcp, a=candidate);
every other line is kept as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SdpParseError
from .sip.uri import IPAddress, parse_ip

DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})


@dataclass(slots=True)
class SdpAddress:
    """An address field, with the span of its ``IP4``/``IP6`` tag when the line has one."""

    text: str
    start: int
    end: int
    addrtype_start: int | None = None
    addrtype_end: int | None = None

    @property
    def address(self) -> IPAddress | None:
        return parse_ip(self.text.strip("[]"))


@dataclass(slots=True)
class SdpPort:
    value: int
    start: int
    end: int


@dataclass(slots=True)
class Candidate:
    component: int
    address: SdpAddress
    port: SdpPort
    raddr: SdpAddress | None = None
    rport: SdpPort | None = None


@dataclass(slots=True)
class MediaDescription:
    index: int
    kind: str  # audio, video, image...
    port: SdpPort
    proto: str
    connection: SdpAddress | None = None
    rtcp_port: SdpPort | None = None
    rtcp_address: SdpAddress | None = None
    candidates: list[Candidate] = field(default_factory=list)
    rtcp_mux: bool = False
    direction: str | None = None


@dataclass(slots=True)
class SessionDescription:
    origin: SdpAddress | None = None
    connection: SdpAddress | None = None
    media: list[MediaDescription] = field(default_factory=list)
    direction: str | None = None

    def connection_of(self, m: MediaDescription) -> SdpAddress | None:
        return m.connection or self.connection


_FIELD = re.compile(rb"[^ ]+")


def _fields(data: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of the space-separated fields of ``data[start:end]``."""
    return [m.span() for m in _FIELD.finditer(data, start, end)]


def _address(data: bytes, tag: tuple[int, int], addr: tuple[int, int]) -> SdpAddress:
    s, e = addr
    text = data[s:e].decode("latin-1")
    # c= may carry /ttl and /count after a multicast address: only the address is ours.
    slash = text.find("/")
    if slash >= 0:
        text = text[:slash]
        e = s + slash
    return SdpAddress(text, s, e, tag[0], tag[1])


def _port(data: bytes, span: tuple[int, int], where: int) -> SdpPort:
    s, e = span
    raw = data[s:e]
    slash = raw.find(b"/")  # m=audio 49170/2 ... (port count)
    if slash >= 0:
        e = s + slash
        raw = raw[:slash]
    if not raw.isdigit() or int(raw) > 65535:
        raise SdpParseError("bad port in SDP", where)
    return SdpPort(int(raw), s, e)


# Only the lines sipnat46 may rewrite, or that change what they mean, are looked at.
_LINE = re.compile(
    rb"^(?:[ocm]=|a=(?:rtcp|candidate|sendrecv|sendonly|recvonly|inactive))[^\r\n]*", re.MULTILINE
)


def parse_sdp(data: bytes, start: int, end: int) -> SessionDescription:
    """Parse the SDP in ``data[start:end]``; offsets in the result index ``data``."""
    sd = SessionDescription()
    current: MediaDescription | None = None
    for m in _LINE.finditer(data, start, end):
        pos, line_end = m.span()
        _line(data, pos, line_end, sd, current)
        if data[pos] == 0x6D:  # m= starts a new media description
            current = sd.media[-1]
    return sd


def _line(data: bytes, pos: int, end: int, sd: SessionDescription, current: MediaDescription | None) -> None:
    kind = data[pos]
    vstart = pos + 2
    if kind == 0x6F:  # o=<user> <sess-id> <version> IN IP4 <addr>
        f = _fields(data, vstart, end)
        if len(f) >= 6:
            sd.origin = _address(data, f[4], f[5])
    elif kind == 0x63:  # c=IN IP4 <addr>
        f = _fields(data, vstart, end)
        if len(f) < 3:
            raise SdpParseError("c= line with fewer than three fields", pos)
        addr = _address(data, f[1], f[2])
        if current is None:
            sd.connection = addr
        else:
            current.connection = addr
    elif kind == 0x6D:  # m=<media> <port>[/n] <proto> <fmt>...
        f = _fields(data, vstart, end)
        if len(f) < 3:
            raise SdpParseError("m= line with fewer than three fields", pos)
        sd.media.append(
            MediaDescription(
                len(sd.media),
                data[f[0][0] : f[0][1]].decode("latin-1"),
                _port(data, f[1], pos),
                data[f[2][0] : f[2][1]].decode("latin-1"),
            )
        )
    elif kind == 0x61:  # a=
        _attribute(data, vstart, end, sd, current, pos)


def _attribute(
    data: bytes, vstart: int, end: int, sd: SessionDescription, m: MediaDescription | None, pos: int
) -> None:
    colon = data.find(b":", vstart, end)
    name = data[vstart : (colon if colon >= 0 else end)].decode("latin-1").strip().lower()
    if name in DIRECTIONS:
        if m is None:
            sd.direction = name
        else:
            m.direction = name
        return
    if m is None:
        return
    if name == "rtcp-mux":
        m.rtcp_mux = True
    elif name == "rtcp" and colon >= 0:  # a=rtcp:<port> [IN IP4 <addr>] (RFC 3605)
        f = _fields(data, colon + 1, end)
        if not f:
            raise SdpParseError("a=rtcp without a port", pos)
        m.rtcp_port = _port(data, f[0], pos)
        if len(f) >= 4:
            m.rtcp_address = _address(data, f[2], f[3])
    elif name == "candidate" and colon >= 0:
        # foundation component transport priority address port typ type [raddr A] [rport P] ...
        f = _fields(data, colon + 1, end)
        if len(f) < 6:
            raise SdpParseError("a=candidate with fewer than six fields", pos)
        comp = data[f[1][0] : f[1][1]]
        cand = Candidate(
            int(comp) if comp.isdigit() else 0,
            SdpAddress(data[f[4][0] : f[4][1]].decode("latin-1"), *f[4]),
            _port(data, f[5], pos),
        )
        for i in range(6, len(f) - 1):
            key = data[f[i][0] : f[i][1]]
            if key == b"raddr":
                cand.raddr = SdpAddress(data[f[i + 1][0] : f[i + 1][1]].decode("latin-1"), *f[i + 1])
            elif key == b"rport":
                cand.rport = _port(data, f[i + 1], pos)
        m.candidates.append(cand)

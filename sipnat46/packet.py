"""IPv4/IPv6 + UDP header views, checksums and rebuilding, with struct (no scapy).

Sans-IO: bytes in, bytes out. Used on the packet path, so kept small and allocation-light.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .errors import Sipnat46Error
from .sip.uri import IPAddress

PROTO_UDP = 17
PROTO_TCP = 6
_IPV6_EXT = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_FRAGMENT = 44


class PacketError(Sipnat46Error):
    """A packet is too short, truncated, or not something we rewrite.

    ``kind`` is "truncated" (the queue copied less than the IP length says), "fragment"
    (not a whole datagram) or "malformed".
    """

    def __init__(self, what: str, kind: str = "malformed") -> None:
        self.kind = kind
        super().__init__(what)


@dataclass(slots=True)
class Datagram:
    """Where the parts of one IP/UDP packet sit."""

    family: int
    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int
    l4_offset: int  # start of the UDP header
    payload_offset: int
    end: int  # end of the UDP datagram (from the UDP length)
    proto: int


def parse_datagram(buf: bytes) -> Datagram:
    """Parse an IPv4 or IPv6 packet carrying UDP; raises PacketError otherwise."""
    if len(buf) < 20:
        raise PacketError("packet shorter than an IP header")
    version = buf[0] >> 4
    if version == 4:
        ihl = (buf[0] & 0x0F) * 4
        total = struct.unpack_from("!H", buf, 2)[0]
        if total > len(buf):
            raise PacketError(f"truncated: IP says {total} bytes, queue gave {len(buf)}", "truncated")
        if struct.unpack_from("!H", buf, 6)[0] & 0x3FFF:
            raise PacketError("IPv4 fragment", "fragment")
        proto = buf[9]
        src: IPAddress = ipaddress.IPv4Address(buf[12:16])
        dst: IPAddress = ipaddress.IPv4Address(buf[16:20])
        off = ihl
        family = 4
    elif version == 6:
        if len(buf) < 40:
            raise PacketError("packet shorter than an IPv6 header")
        total = 40 + struct.unpack_from("!H", buf, 4)[0]
        if total > len(buf):
            raise PacketError(f"truncated: IPv6 says {total} bytes, queue gave {len(buf)}", "truncated")
        proto = buf[6]
        off = 40
        while proto in _IPV6_EXT:
            if off + 8 > total:
                raise PacketError("bad IPv6 extension header")
            proto, hlen = buf[off], (buf[off + 1] + 1) * 8
            off += hlen
        if proto == _FRAGMENT:
            raise PacketError("IPv6 fragment", "fragment")
        src = ipaddress.IPv6Address(buf[8:24])
        dst = ipaddress.IPv6Address(buf[24:40])
        family = 6
    else:
        raise PacketError(f"IP version {version}")
    if proto != PROTO_UDP:
        return Datagram(family, src, dst, 0, 0, off, off, total, proto)
    if off + 8 > total:
        raise PacketError("UDP header cut short")
    sport, dport, ulen = struct.unpack_from("!HHH", buf, off)
    if ulen < 8 or off + ulen > total:
        raise PacketError("bad UDP length")
    return Datagram(family, src, dst, sport, dport, off, off + 8, off + ulen, proto)


def checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 one's-complement sum, folded (not inverted)."""
    if len(data) % 2:
        data += b"\0"
    total = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _pseudo(src: IPAddress, dst: IPAddress, length: int) -> int:
    if src.version == 4:
        return checksum(src.packed + dst.packed + struct.pack("!BBH", 0, PROTO_UDP, length))
    return checksum(src.packed + dst.packed + struct.pack("!IxxxB", length, PROTO_UDP))


def udp_checksum(src: IPAddress, dst: IPAddress, udp: bytes) -> int:
    """The checksum field for ``udp`` (header with checksum zeroed, plus payload)."""
    value = 0xFFFF ^ checksum(udp, _pseudo(src, dst, len(udp)))
    return value or 0xFFFF  # 0 means "no checksum" in IPv4 and is forbidden in IPv6


def replace_payload(buf: bytes, d: Datagram, payload: bytes) -> bytes:
    """The same packet with a new UDP payload: IP length, IPv4 header checksum, UDP length
    and UDP checksum recomputed. IP options and IPv6 extension headers are kept."""
    ulen = 8 + len(payload)
    udp = bytearray(struct.pack("!HHHH", d.sport, d.dport, ulen, 0) + payload)
    csum = udp_checksum(d.src, d.dst, bytes(udp))
    struct.pack_into("!H", udp, 6, csum)
    head = bytearray(buf[: d.l4_offset])
    if d.family == 4:
        struct.pack_into("!H", head, 2, len(head) + ulen)
        struct.pack_into("!H", head, 10, 0)
        struct.pack_into("!H", head, 10, 0xFFFF ^ checksum(bytes(head[: (head[0] & 0x0F) * 4])))
    else:
        struct.pack_into("!H", head, 4, len(head) - 40 + ulen)
    return bytes(head) + bytes(udp)

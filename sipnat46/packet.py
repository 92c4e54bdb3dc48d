"""IPv4/IPv6 + UDP header views, checksums and rebuilding, with struct (no scapy).

Sans-IO: bytes in, bytes out. Used on the packet path, so kept small and allocation-light.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from functools import lru_cache

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


@lru_cache(maxsize=4096)
def _address(packed: bytes) -> IPAddress:
    """The address in 4 or 16 packed bytes. Cached: a box sees the same few peers over and
    over, and building an ipaddress object costs more than parsing the rest of the header."""
    return ipaddress.ip_address(packed)


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
        src: IPAddress = _address(buf[12:16])
        dst: IPAddress = _address(buf[16:20])
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
        src = _address(buf[8:24])
        dst = _address(buf[24:40])
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
    """RFC 1071 one's-complement sum of 16-bit words, folded (not inverted).

    Folding keeps the sum modulo 0xFFFF (2**16 is 1 modulo 0xFFFF), and so does reading the
    whole buffer as one big-endian integer: one C-level conversion instead of a word loop.
    The folded sum is 0 only when every word is; otherwise a multiple of 0xFFFF folds to it.
    """
    total = initial + int.from_bytes(data + b"\0" if len(data) % 2 else data, "big")
    return total % 0xFFFF or (0xFFFF if total else 0)


def _udp_checksum(addresses: bytes, udp: bytes) -> int:
    """The checksum field for ``udp`` (checksum zeroed) between the packed source and
    destination ``addresses``. Both pseudo-headers add up to the addresses plus the protocol
    plus the UDP length: IPv6 writes the length in 32 bits, which modulo 0xFFFF is the same."""
    pseudo = int.from_bytes(addresses, "big") + PROTO_UDP + len(udp)
    return (0xFFFF ^ checksum(udp, pseudo)) or 0xFFFF  # 0 means "no checksum" (forbidden in IPv6)


def replace_payload(buf: bytes, d: Datagram, payload: bytes) -> bytes:
    """The same packet with a new UDP payload: IP length, IPv4 header checksum, UDP length
    and UDP checksum recomputed. IP options and IPv6 extension headers are kept."""
    ulen = 8 + len(payload)
    udp = struct.pack("!HHHH", d.sport, d.dport, ulen, 0) + payload
    csum = _udp_checksum(buf[12:20] if d.family == 4 else buf[8:40], udp)
    head = bytearray(buf[: d.l4_offset])
    if d.family == 4:
        struct.pack_into("!H", head, 2, len(head) + ulen)
        struct.pack_into("!H", head, 10, 0)
        struct.pack_into("!H", head, 10, 0xFFFF ^ checksum(bytes(head[: (head[0] & 0x0F) * 4])))
    else:
        struct.pack_into("!H", head, 4, len(head) - 40 + ulen)
    return b"".join((head, udp[:6], csum.to_bytes(2, "big"), udp[8:]))

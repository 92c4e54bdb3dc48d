"""Sans-IO media-session state: relay legs per call and stream, ports from a range.

The relay I/O (sockets) lives elsewhere and is driven from this table; here is only
who gets which port and which endpoint each leg stands for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Sipnat46Error
from .plan import Side
from .sip.uri import IPAddress


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: IPAddress
    port: int


@dataclass(slots=True)
class RelayLeg:
    """A port pair on the box facing one side; RTCP is always ``port + 1``."""

    faces: Side
    address: IPAddress
    port: int
    far_end: Endpoint | None = None  # where that side said it receives RTP (latest SDP)
    far_rtcp: Endpoint | None = None  # where it receives RTCP (a=rtcp, else RTP port + 1)
    # Every address that side's SDP named for this stream (forks, re-INVITEs): the only
    # sources the relay accepts on this leg (strict, as rtpengine's strict-source mode).
    allowed: set[IPAddress] = field(default_factory=set)

    @property
    def rtcp_port(self) -> int:
        return self.port + 1


@dataclass(slots=True)
class RelayStream:
    call_id: str
    index: int
    legs: dict[Side, RelayLeg] = field(default_factory=dict)


class PortsExhausted(Sipnat46Error):
    """No free even/odd port pair left in the relay range."""


class MediaSessions:
    """Relay legs keyed by (Call-ID, media index); ports handed out as even/odd pairs."""

    def __init__(self, low: int = 30000, high: int = 39999) -> None:
        self.low = low + (low % 2)
        self.high = high
        self._free = list(range(self.high - 1 - ((self.high - 1 - self.low) % 2), self.low - 1, -2))
        self._streams: dict[tuple[str, int], RelayStream] = {}
        self._by_port: dict[int, tuple[RelayStream, Side]] = {}

    def anchor(
        self,
        call_id: str,
        index: int,
        sender: Side,
        far_end: Endpoint,
        relay_addresses: dict[Side, IPAddress],
        far_rtcp: Endpoint | None = None,
    ) -> RelayLeg:
        """Record where ``sender`` receives this stream; return the leg the other side sends to.

        Both legs get their ports on the first offer (as rtpengine does), so the relay can
        bind them at once; later offers and answers of the dialog reuse them.
        """
        key = (call_id, index)
        stream = self._streams.get(key)
        if stream is None:
            if len(self._free) < 2:
                raise PortsExhausted(f"relay ports {self.low}-{self.high} all in use")
            stream = self._streams[key] = RelayStream(call_id, index)
            for side in (Side.INSIDE, Side.OUTSIDE):
                port = self._free.pop()
                stream.legs[side] = RelayLeg(side, relay_addresses[side], port)
                self._by_port[port] = (stream, side)
        for side, leg in stream.legs.items():
            leg.address = relay_addresses.get(side, leg.address)
        own = stream.legs[sender]
        own.far_end = far_end
        own.far_rtcp = far_rtcp or Endpoint(far_end.address, far_end.port + 1)
        own.allowed.add(far_end.address)
        own.allowed.add(own.far_rtcp.address)
        return stream.legs[sender.other]

    def represents(self, address: IPAddress, port: int) -> Endpoint | None:
        """The endpoint a leg of ours stands in for (the far end on the other side)."""
        item = self._by_port.get(port)
        if item is None:
            return None
        stream, faces = item
        if stream.legs[faces].address != address:
            return None
        return stream.legs[faces.other].far_end

    def streams(self, call_id: str) -> list[RelayStream]:
        return [s for (c, _), s in self._streams.items() if c == call_id]

    def release(self, call_id: str) -> int:
        """Free every leg of a call; returns how many ports pairs went back to the range."""
        freed = 0
        for key in [k for k in self._streams if k[0] == call_id]:
            for leg in self._streams.pop(key).legs.values():
                if leg.port and self._by_port.pop(leg.port, None) is not None:
                    self._free.append(leg.port)
                    freed += 1
        return freed

    @property
    def active_legs(self) -> int:
        return len(self._by_port)

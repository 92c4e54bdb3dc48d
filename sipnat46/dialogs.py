"""Per-transaction state the policy needs: the Via bytes to restore on the way back."""

from __future__ import annotations

from collections import OrderedDict

from .plan import Side
from .sip.headers import CALL_ID, CSEQ
from .sip.message import SipMessage
from .sip.uri import IPAddress

# A response can come long after its request (an INVITE rings for minutes).
VIA_TTL = 600.0
VIA_CAPACITY = 131072


class ViaMemory:
    """Original Via entries keyed by branch and by the side their responses go back to.

    Bounded in size and time, so a flood of requests cannot grow it without limit.
    """

    def __init__(self, ttl: float = VIA_TTL, capacity: int = VIA_CAPACITY) -> None:
        self.ttl = ttl
        self.capacity = capacity
        # Keys and values hold only strings, bytes and floats: the garbage collector stops
        # tracking such tuples, so a full collection does not walk 100,000 entries one by one.
        self._entries: OrderedDict[tuple[str, str], tuple[bytes, float]] = OrderedDict()

    def remember(self, branch: str, back_to: Side, original: bytes, now: float) -> None:
        key = (branch, back_to.value)
        self._entries[key] = (original, now + self.ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def recall(self, branch: str, back_to: Side, now: float) -> bytes | None:
        key = (branch, back_to.value)
        item = self._entries.get(key)
        if item is None:
            return None
        if item[1] < now:
            del self._entries[key]
            return None
        return item[0]

    def __len__(self) -> int:
        return len(self._entries)


class CallTracker:
    """Which calls ended, so their relay legs and stand-ins can go (sans-IO).

    Ends a call on BYE or CANCEL, and on a final error to an INVITE of a call that was
    never answered (a failed re-INVITE keeps the call). Bounded: calls that just stop
    talking are cleaned up by the media timeout.
    """

    CAPACITY = 200000
    LINGER = 32.0  # RFC 3261 Timer B/F: retransmissions of an ended call stop by then

    def __init__(self) -> None:
        self.answered: OrderedDict[str, IPAddress | None] = OrderedDict()
        self.ended: OrderedDict[str, float] = OrderedDict()

    def observe(self, msg: SipMessage, stand_in: IPAddress | None = None, now: float = 0.0) -> bool:
        """Record one message; True when it ends its call, or belongs to one that ended (a
        late retransmission must not leave relay legs behind)."""
        call_id = msg.header_text(CALL_ID)
        if call_id is None:
            return False
        while self.ended and next(iter(self.ended.values())) < now:
            self.ended.popitem(last=False)
        if call_id in self.ended:
            return True
        if msg.is_request:
            if msg.method in ("BYE", "CANCEL"):
                self.answered.pop(call_id, None)
                self.ended[call_id] = now + self.LINGER
                while len(self.ended) > self.CAPACITY:
                    self.ended.popitem(last=False)
                return True
            return False
        cseq = (msg.header_text(CSEQ) or "").split()
        if len(cseq) < 2 or cseq[1].upper() != "INVITE" or msg.status is None:
            return False
        if 200 <= msg.status < 300:
            self.answered[call_id] = stand_in
            self.answered.move_to_end(call_id)
            while len(self.answered) > self.CAPACITY:
                self.answered.popitem(last=False)
            return False
        return msg.status >= 300 and call_id not in self.answered

    def forget(self, call_id: str) -> None:
        self.answered.pop(call_id, None)

    def stand_ins_in_use(self) -> frozenset[IPAddress]:
        return frozenset(v for v in self.answered.values() if v is not None)

"""Per-transaction state the policy needs: the Via bytes to restore on the way back."""

from __future__ import annotations

from collections import OrderedDict

from .plan import Side

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
        self._entries: OrderedDict[tuple[str, Side], tuple[bytes, float]] = OrderedDict()

    def remember(self, branch: str, back_to: Side, original: bytes, now: float) -> None:
        key = (branch, back_to)
        self._entries[key] = (original, now + self.ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def recall(self, branch: str, back_to: Side, now: float) -> bytes | None:
        item = self._entries.get((branch, back_to))
        if item is None:
            return None
        if item[1] < now:
            del self._entries[(branch, back_to)]
            return None
        return item[0]

    def __len__(self) -> int:
        return len(self._entries)

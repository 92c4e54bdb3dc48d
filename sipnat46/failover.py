"""Peers known by name: their ordered targets, which one each dialog uses, and failover.

Sans-IO. The resolver (I/O) hands in target lists; the engine reports what it sent and what
came back; the shell asks what is due (no answer in time) and reports ICMP unreachables.
Failover re-sends the PBX's own request, rewritten for the next target's family, so the
PBX sees one peer (the stand-in) throughout and never learns a target failed.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field

from .sip.uri import IPAddress

DIALOG_IDLE = 3600.0  # a dialog's target is forgotten after this long without a message
DIALOG_CAPACITY = 100000
PENDING_CAPACITY = 65536


@dataclass(frozen=True, slots=True)
class Target:
    """One place a named peer can be reached (RFC 3263: an address and port)."""

    address: IPAddress
    port: int = 5060

    @property
    def family(self) -> int:
        return self.address.version

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


@dataclass(slots=True)
class TargetHealth:
    answered: int = 0
    failures: int = 0
    avoid_until: float = 0.0
    last_failure: str | None = None


@dataclass
class NamedPeer:
    name: str
    host: str  # the DNS name resolved by RFC 3263
    stand_in: ipaddress.IPv4Address
    targets: tuple[Target, ...] = ()
    resolved_at: float | None = None
    refresh_at: float = 0.0  # when the records' TTL runs out
    resolve_error: str | None = None
    health: dict[Target, TargetHealth] = field(default_factory=dict)

    def healthy(self, target: Target, now: float) -> bool:
        h = self.health.get(target)
        return h is None or h.avoid_until <= now

    def usable(self, now: float, tried: tuple[Target, ...] = ()) -> list[Target]:
        """Targets in preference order, those being avoided left out."""
        return [t for t in self.targets if t not in tried and self.healthy(t, now)]

    def first_choice(self, now: float) -> Target | None:
        """Where a new dialog goes: the first target not being avoided, or, when all are,
        the one whose avoidance ends first (better a likely failure than no attempt)."""
        usable = self.usable(now)
        if usable:
            return usable[0]
        if not self.targets:
            return None
        return min(self.targets, key=lambda t: self.health[t].avoid_until if t in self.health else 0.0)


@dataclass(slots=True)
class Pending:
    """A request sent to a target and not yet answered: enough to send it elsewhere."""

    peer: NamedPeer
    target: Target
    branch: str
    call_id: str
    original: bytes  # the PBX's message as it came (re-rewritten for the next target)
    pbx: IPAddress  # the PBX address it came from
    sport: int
    dport: int
    deadline: float
    tried: tuple[Target, ...] = ()


@dataclass
class FailoverCounters:
    failovers: int = 0
    timeouts: int = 0
    unreachable: int = 0
    exhausted: int = 0  # every target tried: left to the PBX's own timers


class Failover:
    """Target choice per dialog and failover per transaction, for every named peer."""

    def __init__(
        self, peers: list[NamedPeer], *, failover_after: float = 2.0, avoid_for: float = 60.0
    ) -> None:
        self.peers = {p.name: p for p in peers}
        self.by_stand_in: dict[IPAddress, NamedPeer] = {p.stand_in: p for p in peers}
        self.failover_after = failover_after
        self.avoid_for = avoid_for
        self.counters = FailoverCounters()
        self._by_target: dict[IPAddress, NamedPeer] = {}
        self._dialogs: OrderedDict[str, tuple[NamedPeer, Target, float]] = OrderedDict()
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._index()

    def _index(self) -> None:
        self._by_target = {t.address: p for p in self.peers.values() for t in p.targets}

    # -- what the resolver tells ----------------------------------------------------------

    def update(self, name: str, targets: tuple[Target, ...], refresh_at: float, now: float) -> None:
        peer = self.peers[name]
        peer.targets = targets
        peer.resolved_at = now
        peer.refresh_at = refresh_at
        peer.resolve_error = None
        for gone in set(peer.health) - set(targets):
            del peer.health[gone]
        self._index()

    def resolve_failed(self, name: str, error: str, retry_at: float) -> None:
        """The old targets stay in use: a DNS outage must not stop calls to known targets."""
        peer = self.peers[name]
        peer.resolve_error = error
        peer.refresh_at = retry_at

    # -- what the policy asks ----------------------------------------------------------------

    def peer_of_stand_in(self, addr: IPAddress) -> NamedPeer | None:
        return self.by_stand_in.get(addr)

    def peer_of_target(self, addr: IPAddress) -> NamedPeer | None:
        return self._by_target.get(addr)

    def target_for(self, peer: NamedPeer, call_id: str, now: float) -> Target | None:
        """The target of this dialog (sticky once chosen), or a first choice for a new one."""
        known = self._dialogs.get(call_id)
        if known is not None and known[0] is peer and known[1] in peer.targets:
            self._touch(call_id, peer, known[1], now)
            return known[1]
        target = peer.first_choice(now)
        if target is not None:
            self._touch(call_id, peer, target, now)
        return target

    def pin(self, call_id: str, peer: NamedPeer, target: Target, now: float) -> None:
        """This dialog goes to ``target`` (its TCP connection does)."""
        self._touch(call_id, peer, target, now)

    def connect_failed(self, peer: NamedPeer, target: Target, why: str, now: float) -> Target | None:
        """A TCP connection to ``target`` failed: it is avoided; the next target, if any."""
        self.counters.unreachable += 1
        self._fail(peer, target, why, now)
        nxt = next(iter(peer.usable(now, (target,))), None)
        if nxt is not None:
            self.counters.failovers += 1
        else:
            self.counters.exhausted += 1
        return nxt

    def _touch(self, call_id: str, peer: NamedPeer, target: Target, now: float) -> None:
        self._dialogs[call_id] = (peer, target, now)
        self._dialogs.move_to_end(call_id)
        while len(self._dialogs) > DIALOG_CAPACITY:
            self._dialogs.popitem(last=False)

    # -- what the engine reports ---------------------------------------------------------

    def request_sent(
        self,
        peer: NamedPeer,
        target: Target,
        *,
        branch: str,
        call_id: str,
        original: bytes,
        pbx: IPAddress,
        sport: int,
        dport: int,
        now: float,
    ) -> None:
        """A request of the PBX went to ``target``. A retransmission keeps its deadline."""
        pending = self._pending.get(branch)
        if pending is not None and pending.target == target:
            return
        tried = pending.tried if pending is not None else ()
        self._pending[branch] = Pending(
            peer, target, branch, call_id, original, pbx, sport, dport, now + self.failover_after, tried
        )
        while len(self._pending) > PENDING_CAPACITY:
            self._pending.popitem(last=False)

    def response_from(self, addr: IPAddress, branch: str | None, call_id: str, now: float) -> None:
        """Any response (a 100 Trying too) shows the target is there: no failover."""
        peer = self._by_target.get(addr)
        if peer is None:
            return
        pending = self._pending.pop(branch, None) if branch else None
        target = pending.target if pending is not None else self._target_at(peer, addr)
        if target is None:
            return
        peer.health.setdefault(target, TargetHealth()).answered += 1
        self._touch(call_id, peer, target, now)

    def request_from(self, addr: IPAddress, call_id: str, now: float) -> None:
        """A target called the PBX: the PBX's answers in that dialog go back to it."""
        peer = self._by_target.get(addr)
        target = self._target_at(peer, addr) if peer is not None else None
        if peer is not None and target is not None:
            self._touch(call_id, peer, target, now)

    @staticmethod
    def _target_at(peer: NamedPeer, addr: IPAddress) -> Target | None:
        return next((t for t in peer.targets if t.address == addr), None)

    # -- what the shell asks ----------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def due(self, now: float) -> list[Pending]:
        """Requests unanswered past the timer: their target is avoided, and each comes back
        re-pointed at the next target, ready to be rewritten and sent again."""
        late = [p for p in self._pending.values() if p.deadline <= now]
        out = []
        for p in late:
            self.counters.timeouts += 1
            self._fail(p.peer, p.target, "no answer", now)
        for p in late:
            moved = self._move_on(p, now)
            if moved is not None:
                out.append(moved)
        return out

    def unreachable(self, addr: IPAddress, port: int, why: str, now: float) -> list[Pending]:
        """An ICMP/ICMPv6 error for a packet we sent to ``addr``: fail over at once."""
        peer = self._by_target.get(addr)
        if peer is None:
            return []
        target = next((t for t in peer.targets if t.address == addr and t.port == port), None)
        if target is None:
            return []
        self.counters.unreachable += 1
        self._fail(peer, target, why, now)
        out = []
        for p in [p for p in self._pending.values() if p.target == target]:
            moved = self._move_on(p, now)
            if moved is not None:
                out.append(moved)
        return out

    def _fail(self, peer: NamedPeer, target: Target, why: str, now: float) -> None:
        h = peer.health.setdefault(target, TargetHealth())
        h.failures += 1
        h.last_failure = why
        h.avoid_until = now + self.avoid_for

    def _move_on(self, p: Pending, now: float) -> Pending | None:
        tried = (*p.tried, p.target)
        nxt = next(iter(p.peer.usable(now, tried)), None)
        del self._pending[p.branch]
        if nxt is None:
            self.counters.exhausted += 1
            return None
        self.counters.failovers += 1
        self._touch(p.call_id, p.peer, nxt, now)
        moved = Pending(
            p.peer, nxt, p.branch, p.call_id, p.original, p.pbx, p.sport, p.dport,
            now + self.failover_after, tried,
        )  # fmt: skip
        self._pending[p.branch] = moved
        return moved

    def expire(self, now: float) -> None:
        while self._dialogs:
            call_id, (_, _, seen) = next(iter(self._dialogs.items()))
            if now - seen < DIALOG_IDLE:
                break
            del self._dialogs[call_id]

    def snapshot(self, now: float) -> dict[str, object]:
        peers = {}
        for p in self.peers.values():
            in_use = p.first_choice(now)
            peers[p.name] = {
                "host": p.host,
                "stand_in": str(p.stand_in),
                "in_use": str(in_use) if in_use is not None else None,
                "resolved_ago": None if p.resolved_at is None else round(now - p.resolved_at, 1),
                "refresh_in": round(max(0.0, p.refresh_at - now), 1),
                "resolve_error": p.resolve_error,
                "targets": [
                    {
                        "target": str(t),
                        "family": f"ipv{t.family}",
                        "answered": p.health.get(t, TargetHealth()).answered,
                        "failures": p.health.get(t, TargetHealth()).failures,
                        "last_failure": p.health.get(t, TargetHealth()).last_failure,
                        "avoided_for": round(max(0.0, p.health.get(t, TargetHealth()).avoid_until - now), 1),
                    }
                    for t in p.targets
                ],
            }
        return {
            "peers": peers,
            "dialogs": len(self._dialogs),
            "pending": len(self._pending),
            **self.counters.__dict__,
        }

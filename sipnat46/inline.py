"""What to do with one queued packet: the sans-IO heart of the daemon.

The NFQUEUE loop hands in the raw packet and the netfilter hook; this returns a verdict.
No sockets here: the shell applies the verdict (accept as is, accept rewritten, or drop and
emit a translated packet).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from .dialogs import CallTracker
from .errors import NoEgressAddress, SipParseError, StandInExhausted
from .failover import Pending, Target
from .media import MediaSessions, PortsExhausted
from .packet import PacketError, parse_datagram, replace_payload
from .plan import Side
from .policy import Outcome, Packet, Rewriter
from .relay import MediaRelay
from .sip.headers import CALL_ID, VIA
from .sip.message import SipMessage
from .sip.uri import IPAddress
from .sip.via import parse_via_values

log = logging.getLogger("sipnat46")

# netfilter hook numbers (linux/netfilter.h)
HOOK_PRE_ROUTING, HOOK_LOCAL_IN, HOOK_FORWARD, HOOK_LOCAL_OUT, HOOK_POST_ROUTING = range(5)


class Action(enum.Enum):
    ACCEPT = "accept"  # unchanged
    REWRITE = "rewrite"  # accept with a new payload
    TRANSLATE = "translate"  # drop; emit ``packet`` instead


@dataclass(slots=True)
class Translated:
    """A message to send in place of the dropped packet (the kernel builds the IP header)."""

    payload: bytes
    src: IPAddress
    sport: int
    dst: IPAddress
    dport: int


@dataclass(slots=True)
class Verdict:
    action: Action
    packet: bytes | None = None  # REWRITE: the whole new packet
    translated: Translated | None = None  # TRANSLATE


ACCEPT = Verdict(Action.ACCEPT)


@dataclass
class Counters:
    seen: int = 0  # SIP-port datagrams handled
    rewritten: int = 0
    translated: int = 0
    unchanged: int = 0
    unparsed: int = 0  # not SIP we can parse: passed through untouched
    truncated: int = 0  # bigger than the queue's copy: passed through untouched
    fragments: int = 0  # not reassembled before the queue: passed through untouched
    not_udp: int = 0
    refused: int = 0  # no stand-in or no egress address: passed through
    errors: int = 0  # unexpected exceptions (still accepted)
    by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class InlineEngine:
    """Turns queued packets into verdicts using a Rewriter and the placement."""

    def __init__(
        self,
        rewriter: Rewriter,
        sip_ports: tuple[int, ...],
        counters: Counters | None = None,
        relay: MediaRelay | None = None,
    ) -> None:
        self.rewriter = rewriter
        self.sip_ports = frozenset(sip_ports)
        self.counters = counters or Counters()
        self.relay = relay
        self.calls = CallTracker()
        self.refusals: set[str] = set()

    def _media(self, out: Outcome, now: float) -> None:
        """Tell the relay about legs this message set up, and free what its call ended."""
        msg = out.message
        media: MediaSessions | None = self.rewriter.media
        if msg is None or media is None:
            return
        call_id = msg.header_text(CALL_ID) or ""
        peer = out.src if out.translated and out.src is not None and out.src.version == 4 else None
        if self.calls.observe(msg, peer, now):
            media.release(call_id)
            if self.relay is not None:
                self.relay.close(call_id)
            return
        if self.relay is not None and any(c.relayed for c in out.media):
            for stream in media.streams(call_id):
                self.relay.update(stream)

    def media_expired(self, call_id: str) -> None:
        """The relay saw no media for the timeout: free the call's ports."""
        if self.rewriter.media is not None:
            self.rewriter.media.release(call_id)
        self.calls.forget(call_id)

    def _named(
        self,
        out: Outcome,
        msg: SipMessage,
        original: bytes,
        src: IPAddress,
        sport: int,
        dport: int,
        now: float,
        stream: bool = False,
    ) -> None:
        """Tell the failover what went to, or came from, a named peer's target. Over a stream
        the connection itself fails over (a request is never re-sent on another transport)."""
        fo = self.rewriter.failover
        if fo is None or out.peer is None:
            return
        call_id = msg.header_text(CALL_ID) or ""
        if out.target is not None:  # the PBX's message to the peer
            if msg.is_request and msg.method != "ACK" and not stream:
                fo.request_sent(
                    out.peer, out.target, branch=_top_branch(msg) or call_id, call_id=call_id,
                    original=original, pbx=src, sport=sport, dport=dport, now=now,
                )  # fmt: skip
        elif msg.is_request:
            fo.request_from(src, call_id, now)
        else:
            fo.response_from(src, _top_branch(msg), call_id, now)

    def resend(self, pending: Pending, now: float) -> Translated | None:
        """A request the failover moved to another target: rewritten afresh for it (the
        first target's relay legs freed, as the new one may not need any)."""
        media = self.rewriter.media
        if media is not None:
            media.release(pending.call_id)
            if self.relay is not None:
                self.relay.close(pending.call_id)
        # The failover already points the dialog and the transaction at the new target.
        out = self.message(
            pending.original,
            Side.INSIDE,
            pending.pbx,
            pending.peer.stand_in,
            now,
            pending.sport,
            pending.dport,
        )
        if out is None or out.src is None or out.target is None:
            return None
        self.counters.translated += 1
        log.info("peer %s: %s unanswered, sent to %s", pending.peer.name, pending.tried[-1], out.target)
        return Translated(out.data, out.src, pending.sport, out.dst, out.target.port)

    def message(
        self,
        payload: bytes,
        side: Side,
        src: IPAddress,
        dst: IPAddress,
        now: float,
        sport: int = 0,
        dport: int = 0,
        target: Target | None = None,
        stream: bool = False,
    ) -> Outcome | None:
        """One SIP message, from a datagram or a stream: its outcome, or None when it must
        pass as it is (not SIP we can parse, or refused; counted, and a refusal logged once).
        ``target``: the named peer's target a stream's connection goes to."""
        c = self.counters
        try:
            out = self.rewriter.rewrite(payload, Packet(side, dst, src, target), now)
        except SipParseError as exc:
            c.unparsed += 1
            reason = exc.what
            c.by_reason[reason] = c.by_reason.get(reason, 0) + 1
            return None
        except (StandInExhausted, NoEgressAddress, PortsExhausted) as exc:
            c.refused += 1
            self.refuse_once(str(exc))
            return None
        self._media(out, now)
        if out.peer is not None and out.message is not None:
            self._named(out, out.message, payload, src, sport, dport, now, stream)
        return out

    def refuse_once(self, reason: str) -> None:
        if reason not in self.refusals:  # said once, not once a packet
            self.refusals.add(reason)
            log.warning("passed unmodified: %s", reason)

    def side_of(self, hook: int, src: object) -> Side:
        plan = self.rewriter.plan
        if plan.placement == "host":
            return Side.INSIDE if hook == HOOK_LOCAL_OUT else Side.OUTSIDE
        return Side.INSIDE if plan.is_pbx_side(src) else Side.OUTSIDE  # type: ignore[arg-type]

    def handle(self, buf: bytes, hook: int, now: float) -> Verdict:
        c = self.counters
        try:
            d = parse_datagram(buf)
        except PacketError as exc:
            # truncated by the queue's copy, a fragment, or junk: passed on as it came
            if exc.kind == "truncated":
                c.truncated += 1
            elif exc.kind == "fragment":
                c.fragments += 1
            else:
                c.unparsed += 1
            return ACCEPT
        if d.proto != 17:
            c.not_udp += 1
            return ACCEPT
        c.seen += 1
        payload = buf[d.payload_offset : d.end]
        if not payload.strip(b"\r\n"):
            c.unchanged += 1  # keep-alive CRLF (RFC 5626)
            return ACCEPT
        side = self.side_of(hook, d.src)
        out = self.message(payload, side, d.src, d.dst, now, d.sport, d.dport)
        if out is None:
            return ACCEPT
        if out.translated:
            src = out.src
            if src is None:
                c.refused += 1
                return ACCEPT
            c.translated += 1
            dport = out.dport if out.dport is not None else d.dport
            return Verdict(Action.TRANSLATE, translated=Translated(out.data, src, d.sport, out.dst, dport))
        if not out.changed:
            c.unchanged += 1
            return ACCEPT
        c.rewritten += 1
        return Verdict(Action.REWRITE, replace_payload(buf, d, out.data))


def _top_branch(msg: SipMessage) -> str | None:
    for h in msg.headers:
        if h.name == VIA:
            vias = parse_via_values(msg.data, h.value_start, h.value_end)
            return vias[0].branch if vias else None
    return None

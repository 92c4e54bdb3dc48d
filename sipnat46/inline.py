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
from .media import MediaSessions, PortsExhausted
from .packet import PacketError, parse_datagram, replace_payload
from .plan import Side
from .policy import Outcome, Packet, Rewriter
from .relay import MediaRelay
from .sip.headers import CALL_ID
from .sip.uri import IPAddress

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
        try:
            out = self.rewriter.rewrite(payload, Packet(side, d.dst, d.src), now)
        except SipParseError as exc:
            c.unparsed += 1
            reason = exc.what
            c.by_reason[reason] = c.by_reason.get(reason, 0) + 1
            return ACCEPT
        except (StandInExhausted, NoEgressAddress, PortsExhausted) as exc:
            c.refused += 1
            reason = str(exc)
            if reason not in self.refusals:  # say it once, not once a packet
                self.refusals.add(reason)
                log.warning("passed unmodified: %s", reason)
            return ACCEPT
        self._media(out, now)
        if out.translated:
            src = out.src
            if src is None:
                c.refused += 1
                return ACCEPT
            c.translated += 1
            return Verdict(Action.TRANSLATE, translated=Translated(out.data, src, d.sport, out.dst, d.dport))
        if not out.changed:
            c.unchanged += 1
            return ACCEPT
        c.rewritten += 1
        return Verdict(Action.REWRITE, replace_payload(buf, d, out.data))

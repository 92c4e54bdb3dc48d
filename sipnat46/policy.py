"""The rewrite policy: what a message must say for the side and family it is going to.

Sans-IO. The I/O shell passes the packet's addressing, the time, and a route lookup;
the policy returns the new bytes, where the packet must go, and the media it anchored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .dialogs import ViaMemory
from .errors import NoEgressAddress, SipParseError, StandInExhausted
from .failover import Failover, NamedPeer, Target
from .media import Endpoint, MediaSessions
from .plan import AddressPlan, Side
from .sdp import MediaDescription, SdpAddress, SessionDescription, parse_sdp
from .sip.addrs import uri_hosts
from .sip.body import sdp_spans
from .sip.headers import CALL_ID, URI_LIST_HEADERS, VIA
from .sip.message import Edits, SipMessage, finish, parse_message
from .sip.tokens import address_tokens, token_address
from .sip.uri import IPAddress, format_address, format_host, parse_ip
from .sip.via import Via, parse_via_values

_START_LINE = re.compile(rb"(SIP/2\.0 [1-9]\d\d )|[A-Za-z0-9.!%*_+`'~-]+ [^ \r\n]+ SIP/2\.0\r?\n")
_BRANCH = re.compile(rb"branch[ \t]*=[ \t]*([^;, \t\r\n]+)", re.IGNORECASE)
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)

EgressLookup = Callable[[IPAddress], "IPAddress | None"]
HostMap = Callable[[IPAddress], "IPAddress | None"]


@dataclass(frozen=True, slots=True)
class Packet:
    """How a message travels: which side sent it, and its IP addresses."""

    from_side: Side
    dst: IPAddress
    src: IPAddress | None = None
    target: Target | None = None  # a named peer's target the connection already goes to (TCP)


# (field, old text, new value): formatted only when somebody asks for the summary.
Change = tuple[str, str, object]


@dataclass(slots=True)
class MediaChange:
    index: int
    kind: str
    sender: Side
    original: Endpoint
    rtcp: Endpoint | None
    replaced: Endpoint | None  # None when the stream was left alone (hold, port 0)
    relayed: bool


@dataclass(slots=True)
class Outcome:
    data: bytes
    changed: bool
    translated: bool
    src: IPAddress | None  # what the packet's source must be after the rewrite
    dst: IPAddress
    changes: list[Change] = field(default_factory=list)
    media: list[MediaChange] = field(default_factory=list)
    message: SipMessage | None = None
    dport: int | None = None  # where it must go when not the packet's own port (a named target)
    peer: NamedPeer | None = None  # the named peer it goes to or comes from
    target: Target | None = None

    def summary(self) -> str:
        if not self.changed:
            return "unchanged"
        kind = "translated" if self.translated else "fixed up"
        return f"{kind} {len(self.changes)} field(s): " + "; ".join(
            f"{what} {old} -> {new}" for what, old, new in self.changes
        )


@dataclass(slots=True)
class _Course:
    """The decision for one message: family, egress and how hosts map."""

    from_side: Side
    translated: bool
    src: IPAddress | None
    dst: IPAddress
    map_host: HostMap
    relay: dict[Side, IPAddress] | None = None
    egress: list[IPAddress] = field(default_factory=list)  # filled once it was needed
    media_map: HostMap | None = None  # SDP addresses, when they map unlike SIP's
    dport: int | None = None
    peer: NamedPeer | None = None
    target: Target | None = None


class Rewriter:
    """Applies the address plan to messages; holds the per-transaction state it needs."""

    def __init__(
        self,
        plan: AddressPlan,
        *,
        egress_lookup: EgressLookup | None = None,
        media: MediaSessions | None = None,
        vias: ViaMemory | None = None,
        relay_inside: IPAddress | None = None,
        failover: Failover | None = None,
    ) -> None:
        self.plan = plan
        self.failover = failover
        self.egress_lookup = egress_lookup
        self.media = media
        self.vias = vias if vias is not None else ViaMemory()
        self.relay_inside = relay_inside
        self.ipv6_enabled = True  # the shell clears it on a box without IPv6

    # -- deciding the course ---------------------------------------------------------

    def egress_towards(self, dst: IPAddress) -> IPAddress:
        explicit = self.plan.egress.get(dst.version)
        if explicit is not None:
            return explicit
        found = self.egress_lookup(dst) if self.egress_lookup is not None else None
        if found is None:
            raise NoEgressAddress(
                f"no IPv{dst.version} egress address towards {dst}: set [outside] ipv{dst.version}"
            )
        return found

    def _course(self, packet: Packet, data: bytes, now: float) -> _Course:
        plan = self.plan
        fo = self.failover
        if packet.from_side is Side.INSIDE:
            named = fo.peer_of_stand_in(packet.dst) if fo is not None else None
            if named is not None:
                return self._to_named(packet, named, data, now)
            target = plan.stand_ins.ipv6_for(packet.dst, now) if packet.dst.version == 4 else None
            src = packet.src
            if target is not None:
                if not self.ipv6_enabled:
                    raise NoEgressAddress(f"cannot translate to {target}: IPv6 is disabled on this box")
                translated, family, out_dst = True, 6, target
            else:
                family, out_dst, translated = packet.dst.version, packet.dst, False
            own_source = (
                not translated and src is not None and src.version == family and family not in plan.masquerade
            )
            # Looked up only when an address really has to change (most messages: never).
            egress_found: list[IPAddress] = [src] if own_source and src is not None else []

            def egress() -> IPAddress:
                if not egress_found:
                    egress_found.append(self.egress_towards(out_dst))
                return egress_found[0]

            def out_map(a: IPAddress) -> IPAddress | None:
                if plan.is_pbx_side(a):
                    e = egress()
                    return None if a == e else e
                if a.version == 4 and family == 6:
                    return plan.stand_ins.ipv6_for(a, now)
                return None

            relay = None
            if translated:
                relay = {Side.OUTSIDE: egress(), Side.INSIDE: self._relay_inside(packet.dst)}
            course = _Course(packet.from_side, translated, src, out_dst, out_map, relay)
            if translated:
                course.src = egress()
            course.egress = egress_found
            return course

        family = packet.src.version if packet.src is not None else packet.dst.version
        named = fo.peer_of_target(packet.src) if fo is not None and packet.src is not None else None
        if family == 6 and not plan.has_family(6) and plan.pbx_address(4) is not None:
            pbx4 = plan.pbx_address(4)
            assert pbx4 is not None
            peer = packet.src
            stand_in = None
            if peer is not None:
                stand_in = self._stand_in_of(peer, now, peer)
                if stand_in is None:
                    raise StandInExhausted(f"no stand-in for {peer}")
            box = {packet.dst, *plan.egress.values(), *plan.host_addresses}

            def in_map(a: IPAddress) -> IPAddress | None:
                if a.version != 6:
                    return None
                if a in box:
                    return pbx4
                return self._stand_in_of(a, now, peer)

            relay_in = self._relay_inside(stand_in or pbx4)
            course = _Course(
                packet.from_side,
                True,
                stand_in,
                pbx4,
                in_map,
                {Side.OUTSIDE: packet.dst, Side.INSIDE: relay_in},
            )
            course.peer = named
            return course

        own = {a for a in plan.egress.values() if a.version == family}
        target_pbx = packet.dst if plan.is_pbx_side(packet.dst) else plan.pbx_address(family)

        def fix_in(a: IPAddress) -> IPAddress | None:
            return target_pbx if a in own and target_pbx is not None and a != target_pbx else None

        if named is not None and target_pbx is not None:
            # An IPv4 target of a named peer: the PBX must see it as the stand-in it called
            # (source and SIP), while its SDP keeps the target's own, reachable, address.
            def from_target(a: IPAddress) -> IPAddress | None:
                other = fo.peer_of_target(a) if fo is not None else None
                return other.stand_in if other is not None else fix_in(a)

            course = _Course(
                packet.from_side, True, named.stand_in, target_pbx, from_target, media_map=fix_in
            )
            course.peer = named
            return course
        return _Course(packet.from_side, False, packet.src, packet.dst, fix_in)

    def _stand_in_of(self, addr: IPAddress, now: float, source: IPAddress | None) -> IPAddress | None:
        named = self.failover.peer_of_target(addr) if self.failover is not None else None
        if named is not None:
            return named.stand_in
        return self.plan.stand_ins.stand_in_for(addr, now, source=source)

    def _to_named(self, packet: Packet, peer: NamedPeer, data: bytes, now: float) -> _Course:
        """The PBX calls a named peer's stand-in: the dialog's target decides the family.
        An IPv6 target is translated and relayed; an IPv4 one only redirected and fixed up."""
        assert self.failover is not None
        found = _CALL_ID.search(data)
        call_id = found.group(1).decode("latin-1") if found else ""
        if packet.target is not None:  # a stream: its connection decided the target
            target: Target | None = packet.target
            self.failover.pin(call_id, peer, packet.target, now)
        else:
            target = self.failover.target_for(peer, call_id, now)
        if target is None:
            why = peer.resolve_error or "not resolved yet"
            raise NoEgressAddress(f"peer {peer.name} ({peer.host}) has no target: {why}")
        if target.family == 6 and not self.ipv6_enabled:
            raise NoEgressAddress(f"cannot reach {target}: IPv6 is disabled on this box")
        plan = self.plan
        own_source = target.family == 4 and packet.src is not None and 4 not in plan.masquerade
        egress = packet.src if own_source and packet.src is not None else self.egress_towards(target.address)

        def out_map(a: IPAddress) -> IPAddress | None:
            if a == peer.stand_in:
                return target.address
            if plan.is_pbx_side(a):
                return None if a == egress else egress
            if a.version == 4 and target.family == 6:
                return plan.stand_ins.ipv6_for(a, now)
            return None

        relay = None
        if target.family == 6:
            relay = {Side.OUTSIDE: egress, Side.INSIDE: self._relay_inside(packet.dst)}
        course = _Course(packet.from_side, True, egress, target.address, out_map, relay, [egress])
        course.dport, course.peer, course.target = target.port, peer, target
        return course

    def _relay_inside(self, towards: IPAddress) -> IPAddress:
        if self.relay_inside is not None:
            return self.relay_inside
        pbx4 = self.plan.pbx_address(4)
        found = self.egress_lookup(pbx4) if self.egress_lookup and pbx4 else None
        return found if found is not None else towards

    # -- rewriting ---------------------------------------------------------------------

    def rewrite(self, data: bytes, packet: Packet, now: float = 0.0) -> Outcome:
        """Rewrite one message; raises SipParseError (pass it through) or StandInExhausted."""
        course = self._course(packet, data, now)
        course.map_host = _memo(course.map_host)
        if course.media_map is not None:
            course.media_map = _memo(course.media_map)
        addresses = True  # whether any address in the message can change
        if not course.translated:
            addresses, restore = self._precheck(data, course, now)
            if not addresses and not restore:
                # Passed on as it is, without being taken apart: most SIP of a site goes here.
                return Outcome(data, False, False, packet.src, packet.dst)
        msg = parse_message(data)
        edits = Edits()
        changes: list[Change] = []
        media: list[MediaChange] = []

        def put_host(addr: IPAddress | None, start: int, end: int, text: str, what: str) -> None:
            if addr is None:
                return
            new = course.map_host(addr)
            if new is None or new == addr:
                return
            edits.replace(start, end, format_host(new).encode())
            changes.append((what, text, new))

        if msg.is_request and addresses and msg.uri is not None:
            uri = msg.uri
            for label, host in (("Request-URI", uri.host), ("Request-URI maddr", uri.params.get("maddr"))):
                if host is not None:
                    put_host(host.address, host.start, host.end, host.text, label)

        self._vias(msg, course, edits, changes, now)

        for h in msg.headers if addresses else ():
            if h.name not in URI_LIST_HEADERS:
                continue
            base, label = h.value_start, h.name.title()
            for maddr, s, e, text in uri_hosts(data, base, h.value_end):
                put_host(parse_ip(text), base + s, base + e, text, f"{label} maddr" if maddr else label)

        for s, e in sdp_spans(msg) if addresses else ():
            sd = parse_sdp(data, s, e)
            self._sdp(msg, sd, course, edits, changes, media, now)

        out = finish(msg, edits)
        src = course.src
        if src is None and course.egress and out != data:
            src = course.egress[0]
        return Outcome(
            out,
            out != data,
            course.translated,
            src,
            course.dst,
            changes,
            media,
            msg,
            course.dport,
            course.peer,
            course.target,
        )

    def _precheck(self, data: bytes, course: _Course, now: float) -> tuple[bool, bool]:
        """Cheap pre-check: (some address-like token in the message maps to something, some
        Via of it waits to be restored). The token scan is a superset of every place the full
        rewrite looks, so (False, False) means there is nothing to do. Raises SipParseError
        for what does not look like SIP at all."""
        start = _START_LINE.match(data)
        if start is None or (b"\r\n\r\n" not in data and b"\n\n" not in data):
            raise SipParseError("not a SIP message (no request or status line, or no end of headers)", 0)
        addresses = False
        map_host = course.map_host
        for token in address_tokens(data):
            addr = token_address(token)
            if addr is not None and map_host(addr) is not None:
                addresses = True
                break
        restore = False
        if start.group(1) is not None and len(self.vias):  # a response
            back = course.from_side.other
            for branch in _BRANCH.findall(data):
                if self.vias.recall(branch.decode("latin-1"), back, now) is not None:
                    restore = True
                    break
        return addresses, restore

    def _vias(
        self, msg: SipMessage, course: _Course, edits: Edits, changes: list[Change], now: float
    ) -> None:
        data = msg.data
        back_to = course.from_side
        for h in msg.headers:
            if h.name != VIA:
                continue
            for via in parse_via_values(data, h.value_start, h.value_end):
                branch = via.branch
                if not msg.is_request and branch:
                    original = self.vias.recall(branch, course.from_side.other, now)
                    if original is not None:
                        if data[via.start : via.end] != original:
                            edits.replace(via.start, via.end, original)
                            changes.append(("Via", "rewritten", "restored"))
                        continue
                sub, sub_changes = _remap_via(data, via, course.map_host)
                if not sub:
                    continue
                original = data[via.start : via.end]
                edits.replace(via.start, via.end, sub.apply(original))
                changes.extend(sub_changes)
                if msg.is_request and branch:
                    self.vias.remember(branch, back_to, original, now)

    def _sdp(
        self,
        msg: SipMessage,
        sd: SessionDescription,
        course: _Course,
        edits: Edits,
        changes: list[Change],
        media: list[MediaChange],
        now: float,
    ) -> None:
        data = msg.data
        done: dict[int, str] = {}  # address fields already rewritten (a session c= is shared)

        def put_addr(a: SdpAddress | None, new: IPAddress | None, what: str) -> None:
            if a is None or new is None or a.start in done:
                return
            old = a.address
            if old == new and a.text == format_address(new):
                return
            done[a.start] = format_address(new)
            edits.replace(a.start, a.end, format_address(new).encode())
            if a.addrtype_start is not None and a.addrtype_end is not None:
                tag = b"IP6" if new.version == 6 else b"IP4"
                if data[a.addrtype_start : a.addrtype_end] != tag:
                    edits.replace(a.addrtype_start, a.addrtype_end, tag)
            changes.append((f"SDP {what}", a.text, new))

        media_map = course.media_map or course.map_host

        def mapped(a: SdpAddress | None) -> IPAddress | None:
            addr = a.address if a is not None else None
            return media_map(addr) if addr is not None else None

        put_addr(sd.origin, mapped(sd.origin), "o=")
        call_id = msg.header_text(CALL_ID) or ""
        for m in sd.media:
            conn = sd.connection_of(m)
            addr = conn.address if conn is not None else None
            if addr is None:
                continue
            rtcp = Endpoint(
                (m.rtcp_address.address if m.rtcp_address else None) or addr,
                m.rtcp_port.value if m.rtcp_port else m.port.value + 1,
            )
            change = MediaChange(
                m.index, m.kind, course.from_side, Endpoint(addr, m.port.value), rtcp, None, False
            )
            media.append(change)
            if m.port.value == 0 or addr.is_unspecified:
                # Rejected stream or hold (c=0.0.0.0): keep it meaning what it means.
                continue
            if course.relay is not None and self.media is not None:
                self._relay(call_id, m, conn, change, course, edits, changes, put_addr)
            else:
                new = media_map(addr)
                put_addr(conn, new, "c=")
                put_addr(m.rtcp_address, mapped(m.rtcp_address), "a=rtcp")
                if new is not None:
                    change.replaced = Endpoint(new, m.port.value)
            for cand in m.candidates:
                if change.relayed:
                    continue
                put_addr(cand.address, mapped(cand.address), "a=candidate")
                put_addr(cand.raddr, mapped(cand.raddr), "a=candidate raddr")
        # A session c= no stream uses (each has its own) must not leak the old address.
        relayed = [c.replaced for c in media if c.relayed and c.replaced is not None]
        put_addr(sd.connection, relayed[0].address if relayed else mapped(sd.connection), "c=")

    def _relay(self, call_id, m: MediaDescription, conn, change, course, edits, changes, put_addr) -> None:  # type: ignore[no-untyped-def]
        assert self.media is not None and course.relay is not None
        # Our own relay leg coming back (a hairpin, or a replayed capture) is undone.
        target = self.media.represents(change.original.address, change.original.port)
        if target is None:
            leg = self.media.anchor(
                call_id, m.index, course.from_side, change.original, course.relay, change.rtcp
            )
            target = Endpoint(leg.address, leg.port)
        put_addr(conn, target.address, "c=")
        if m.port.value != target.port:
            edits.replace(m.port.start, m.port.end, str(target.port).encode())
            changes.append((f"SDP m={m.kind} port", m.port.value, target.port))
        # The relay's RTCP is always port + 1; with rtcp-mux RTCP also arrives on the RTP
        # port and is relayed as it comes, so a=rtcp keeps describing the fallback.
        if m.rtcp_port is not None and m.rtcp_port.value != target.port + 1:
            edits.replace(m.rtcp_port.start, m.rtcp_port.end, str(target.port + 1).encode())
            changes.append(("SDP a=rtcp port", m.rtcp_port.value, target.port + 1))
        put_addr(m.rtcp_address, target.address, "a=rtcp")
        for cand in m.candidates:
            put_addr(cand.address, target.address, "a=candidate")
            port = target.port + (1 if cand.component == 2 and not m.rtcp_mux else 0)
            if cand.port.value != port:
                edits.replace(cand.port.start, cand.port.end, str(port).encode())
            if cand.raddr is not None:
                put_addr(cand.raddr, target.address, "a=candidate raddr")
            if cand.rport is not None and cand.rport.value != port:
                edits.replace(cand.rport.start, cand.rport.end, str(port).encode())
        change.replaced = target
        change.relayed = True


def _memo(fn: HostMap) -> HostMap:
    """``fn`` remembered for one message. The same few addresses recur in every header and
    SDP line, and hashing ipaddress objects is slow; parse_ip hands out one object per text,
    so identity is a fast key. Each entry keeps its address alive, so an id cannot be reused
    for another address while the memo lives."""
    cache: dict[int, tuple[IPAddress, IPAddress | None]] = {}

    def mapped(addr: IPAddress) -> IPAddress | None:
        hit = cache.get(id(addr))
        if hit is not None:
            return hit[1]
        new = fn(addr)
        cache[id(addr)] = (addr, new)
        return new

    return mapped


def _remap_via(data: bytes, via: Via, map_host: HostMap) -> tuple[Edits, list[Change]]:
    """Edits (relative to the Via entry) of its sent-by, received and maddr hosts."""
    sub = Edits()
    changes: list[Change] = []
    hosts = [("sent-by", via.sent_by)]
    hosts += [(n, p.value) for n in ("received", "maddr") if (p := via.params.get(n)) and p.value]
    for what, host in hosts:
        addr = host.address
        new = map_host(addr) if addr is not None else None
        if new is None or new == addr:
            continue
        # received= is written bare unless the sender bracketed it (RFC 5118 section 4.5).
        bracket = what != "received" or data[host.start] == 0x5B
        text = format_host(new) if bracket else format_address(new)
        sub.replace(host.start - via.start, host.end - via.start, text.encode())
        changes.append((f"Via {what}", host.text, new))
    return sub, changes


__all__ = ["MediaChange", "Outcome", "Packet", "Rewriter", "SipParseError"]

"""DNS46: answers for the IPv4-only PBX's resolver that lead it to stand-ins (sans-IO).

An A query for a named peer's name gets the peer's stand-in; an SRV query for its SIP
services gets the name itself as the one target. An A query for a SIP name (a target of a
SIP SRV answer that passed through here) that has only AAAA records gets a dynamic stand-in
of its first IPv6 address. Everything else, NAPTR included, goes to the upstream resolver and
its answer comes back unchanged (only the message ID is ours on the way up).

Wire bytes in, wire bytes out; the shell (dns46_server) owns the sockets.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from .plan import StandIns

SIP_SERVICES = ("_sip._udp", "_sip._tcp")
LEARNED_CAPACITY = 4096


@dataclass(slots=True)
class Ask:
    """A query waiting for the upstream resolver, and what to do with its answer."""

    client_id: int
    query: dns.message.Message | None  # the client's question (None: not parseable, sent as is)
    wire: bytes  # what goes upstream: the client's own bytes, or our AAAA query
    stage: str  # "plain"/"raw": pass back; "a": A of a SIP name; "aaaa": its AAAA, to synthesise
    empty_a: bytes = b""  # stage "aaaa": the A answer to return if nothing is synthesised


@dataclass
class Dns46Counters:
    answered: int = 0  # synthesised for named peers
    synthesised: int = 0  # A from a SIP name's AAAA (dynamic stand-in)
    forwarded: int = 0
    malformed: int = 0


@dataclass
class Dns46:
    names: dict[dns.name.Name, ipaddress.IPv4Address]  # named peers' names -> stand-ins
    stand_ins: StandIns
    ttl: int = 60
    counters: Dns46Counters = field(default_factory=Dns46Counters)
    learned: OrderedDict[dns.name.Name, None] = field(default_factory=OrderedDict)

    def _ttl(self, upstream_ttl: int | None = None) -> int:
        """Never longer than a dynamic stand-in stays mapped when idle."""
        cap = min(self.ttl, int(self.stand_ins.idle_timeout // 2))
        return cap if upstream_ttl is None else min(cap, upstream_ttl)

    def query(self, wire: bytes, now: float) -> tuple[bytes | None, Ask | None]:
        """A client's query: an answer to send back, or an Ask to send upstream."""
        try:
            q = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            # Not ours to judge: the upstream answers it (or not), and that goes back as it is.
            self.counters.malformed += 1
            if len(wire) < 12:  # not even a header: nothing to match an answer to
                return None, None
            self.counters.forwarded += 1
            return None, Ask(int.from_bytes(wire[:2], "big"), None, wire, "raw")
        if len(q.question) != 1 or q.opcode() != 0:
            return None, self._forward(q, wire, "plain")
        question = q.question[0]
        name, rdtype = question.name, question.rdtype
        if question.rdclass == dns.rdataclass.IN:
            if rdtype == dns.rdatatype.A and name in self.names:
                self.counters.answered += 1
                return self._answer_a(q, str(self.names[name]), self._ttl()), None
            domain = dns.name.Name(name.labels[2:])  # _sip._udp.<domain>
            if rdtype == dns.rdatatype.SRV and domain in self.names and _is_sip_srv(name):
                self.counters.answered += 1
                return self._answer_srv(q, domain), None
            if rdtype == dns.rdatatype.A and name in self.learned:
                return None, self._forward(q, wire, "a")
        return None, self._forward(q, wire, "plain")

    def _forward(self, q: dns.message.Message, wire: bytes, stage: str) -> Ask:
        self.counters.forwarded += 1
        return Ask(q.id, q, wire, stage)

    def upstream(self, ask: Ask, wire: bytes, now: float) -> tuple[bytes | None, Ask | None]:
        """The upstream's answer to ``ask``: the client's answer, or one more query."""
        if ask.stage == "raw":
            return wire, None
        try:
            answer = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            self.counters.malformed += 1
            # an "aaaa" ask's own query drew it: the client still gets its A answer
            return (ask.empty_a if ask.stage == "aaaa" else wire), None
        if ask.stage == "plain":
            self._learn(answer)
            return wire, None
        if ask.stage == "a":
            has_a = any(rr.rdtype == dns.rdatatype.A for rr in answer.answer)
            if has_a or answer.rcode() != dns.rcode.NOERROR:
                return wire, None
            assert ask.query is not None
            aaaa = dns.message.make_query(ask.query.question[0].name, "AAAA").to_wire()
            return None, Ask(ask.client_id, ask.query, aaaa, "aaaa", wire)
        v6 = [(rr.ttl, r.address) for rr in answer.answer if rr.rdtype == dns.rdatatype.AAAA for r in rr]
        for ttl, addr in v6:
            stand_in = self.stand_ins.stand_in_for(ipaddress.IPv6Address(addr), now)
            if stand_in is not None and ask.query is not None:
                self.counters.synthesised += 1
                return self._answer_a(ask.query, str(stand_in), self._ttl(ttl)), None
        return ask.empty_a, None

    def _learn(self, answer: dns.message.Message) -> None:
        """Targets of SIP SRV answers are SIP names: their A queries may be synthesised."""
        if not answer.question or not _is_sip_srv(answer.question[0].name):
            return
        for rr in answer.answer:
            if rr.rdtype == dns.rdatatype.SRV:
                for r in rr:
                    self.learned[r.target] = None
                    self.learned.move_to_end(r.target)
        while len(self.learned) > LEARNED_CAPACITY:
            self.learned.popitem(last=False)

    @staticmethod
    def _answer_a(q: dns.message.Message, address: str, ttl: int) -> bytes:
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        r.answer.append(dns.rrset.from_text(q.question[0].name, ttl, "IN", "A", address))
        return r.to_wire()

    def _answer_srv(self, q: dns.message.Message, target: dns.name.Name) -> bytes:
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        ttl = self._ttl()
        r.answer.append(dns.rrset.from_text(q.question[0].name, ttl, "IN", "SRV", f"0 0 5060 {target}"))
        r.additional.append(dns.rrset.from_text(target, ttl, "IN", "A", str(self.names[target])))
        return r.to_wire()


def _is_sip_srv(name: dns.name.Name) -> bool:
    labels = [label.decode("ascii", "replace").lower() for label in name.labels[:2]]
    return len(labels) == 2 and ".".join(labels) in SIP_SERVICES

"""Offline rewrite of a capture (scapy for pcap I/O only; never on the packet path)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import PcapReader, PcapWriter

from .errors import Sipnat46Error
from .plan import Side
from .policy import Packet, Rewriter

LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6 = 101, 228, 229


@dataclass
class PcapReport:
    packets: int = 0
    sip: int = 0
    rewritten: int = 0
    translated: int = 0
    unparsed: int = 0


def rewrite_pcap(rewriter: Rewriter, sip_ports: tuple[int, ...], src: str, dst: str) -> PcapReport:
    report = PcapReport()
    with PcapReader(src) as reader:
        linktype = reader.linktype
        # Raw-IPv4 or raw-IPv6 captures gain packets of the other family: write raw IP.
        if linktype in (LINKTYPE_IPV4, LINKTYPE_IPV6):
            linktype = LINKTYPE_RAW
        with PcapWriter(dst, linktype=linktype, sync=False) as writer:
            _rewrite_all(rewriter, sip_ports, reader, writer, report)
    return report


def _rewrite_all(rewriter: Rewriter, sip_ports: tuple[int, ...], reader, writer, report: PcapReport) -> None:  # type: ignore[no-untyped-def]
    plan = rewriter.plan
    for pkt in reader:
        report.packets += 1
        out = pkt
        ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
        udp = pkt.getlayer(UDP)
        if ip is not None and udp is not None and (udp.sport in sip_ports or udp.dport in sip_ports):
            report.sip += 1
            s, d = ipaddress.ip_address(ip.src), ipaddress.ip_address(ip.dst)
            side = Side.INSIDE if plan.is_pbx_side(s) else Side.OUTSIDE
            try:
                res = rewriter.rewrite(bytes(udp.payload), Packet(side, d, s), float(pkt.time))
            except Sipnat46Error:
                report.unparsed += 1
                res = None
            if res is not None and res.changed:
                report.rewritten += 1
                new_src = res.src if res.src is not None else s
                if res.translated:
                    report.translated += 1
                    layer = IPv6 if res.dst.version == 6 else IP
                    out = (
                        layer(src=str(new_src), dst=str(res.dst))
                        / UDP(sport=udp.sport, dport=udp.dport)
                        / res.data
                    )
                    if pkt.haslayer(Ether):
                        out = Ether(src=pkt[Ether].src, dst=pkt[Ether].dst) / out
                else:
                    new_udp = UDP(sport=udp.sport, dport=udp.dport) / res.data
                    ip.remove_payload()
                    if ip.version == 4:
                        del ip.len, ip.chksum
                    else:
                        del ip.plen
                    out = pkt.copy()
                    out.getlayer(type(ip)).remove_payload()
                    out.getlayer(type(ip)).add_payload(new_udp)
            out.time = pkt.time
        writer.write(out)

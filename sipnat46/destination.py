"""Where a message says it goes, for the offline CLI (RFC 3261 sections 8.1.2 and 18.2.2)."""

from __future__ import annotations

from .errors import SipParseError
from .sip.addrs import parse_name_addr, split_values
from .sip.headers import VIA
from .sip.message import SipMessage
from .sip.uri import IPAddress
from .sip.via import parse_via_values


def implied_destination(msg: SipMessage) -> IPAddress:
    """Top Route (or the Request-URI) of a request; top Via's received/sent-by of a response."""
    data = msg.data
    if msg.is_request:
        route = msg.first("route")
        if route is not None:
            spans = split_values(data, route.value_start, route.value_end)
            uri = parse_name_addr(data, *spans[0]).uri if spans else None
        else:
            uri = msg.uri
        host = uri.host if uri is not None else None
        addr = host.address if host is not None else None
        if addr is None:
            raise SipParseError("the message names no IP address to go to; give --dst")
        return addr
    via = msg.first(VIA)
    if via is None:
        raise SipParseError("response without Via; give --dst")
    top = parse_via_values(data, via.value_start, via.value_end)[0]
    received = top.params.get("received")
    for host in (received.value if received else None, top.sent_by):
        if host is not None and host.address is not None:
            return host.address
    raise SipParseError("top Via names no IP address; give --dst")

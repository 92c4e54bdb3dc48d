"""Address-like tokens anywhere in a message: the pre-check's cheap scan.

A token is a run of 3 to 45 of ``[0-9A-Fa-f:.]`` with no word character (letters, digits,
``_``, ``-``, ``.`` or ``:``) on either side. That is a superset of every IPv4 or IPv6
literal the rewrite could look at (a host, with or without its ``:port``), so a message
none of whose tokens maps to anything has nothing to change.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .uri import IPAddress, parse_ip

# One C-level pass classifies every octet: address characters stay, other word characters
# become "x" (they glue to a neighbouring run and spoil it), everything else a space. A
# token is then a run of address characters between two spaces.
_WORD = b"GHIJKLMNOPQRSTUVWXYZghijklmnopqrstuvwxyz_-"
_KEEP = b"0123456789abcdefABCDEF:."
_CLASSES = bytes(c if c in _KEEP else 0x78 if c in _WORD else 0x20 for c in range(256))
_RUN = re.compile(rb" ([0-9A-Fa-f:.]{3,45})(?= )")


def address_tokens(data: bytes) -> set[bytes]:
    """Every distinct address-like token in ``data``."""
    return set(_RUN.findall(b" " + data.translate(_CLASSES) + b" "))


@lru_cache(maxsize=4096)
def token_address(token: bytes) -> IPAddress | None:
    """The address a token names (an IPv4 address may carry ``:port``), or None."""
    text = token.decode("latin-1")
    addr = parse_ip(text)
    if addr is None and ":" in text:
        addr = parse_ip(text.rsplit(":", 1)[0])
    return addr

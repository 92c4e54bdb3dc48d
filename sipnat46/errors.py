"""One exception family for the whole package.

Every error says *what* is wrong and *where*, so the CLI can print it on one line.
"""

from __future__ import annotations


class Sipnat46Error(Exception):
    """Base class of every error sipnat46 raises on purpose."""


class SipParseError(Sipnat46Error):
    """A SIP message (or a part of it) could not be parsed."""

    def __init__(self, what: str, offset: int | None = None) -> None:
        self.what = what
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{what}{where}")


class SdpParseError(SipParseError):
    """The SDP body of a message could not be parsed."""


class ConfigError(Sipnat46Error):
    """A config file is unreadable, or one of its keys has a bad value."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


class RulesError(Sipnat46Error):
    """Packet-filter rules could not be rendered, applied or removed."""


class StandInExhausted(Sipnat46Error):
    """No stand-in could be given to an IPv6 peer (pool empty or cap reached)."""


class NoEgressAddress(Sipnat46Error):
    """No address of the needed family is known for the box towards a destination."""

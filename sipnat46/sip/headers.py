"""Header names: compact forms, canonical names, which headers carry addresses."""

from __future__ import annotations

from functools import lru_cache

# RFC 3261 section 7.3.3 plus the compact forms registered later (RFC 3515, 3841, 3892, 4028...).
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "y": "identity",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
}


@lru_cache(maxsize=1024)
def canonical_name(raw: bytes) -> str:
    """Lower-case long name of a header, whatever form it was written in."""
    name = raw.decode("latin-1").strip().lower()
    return COMPACT_FORMS.get(name, name)


# Headers whose values are name-addr / addr-spec lists (comma separated, URIs inside).
URI_LIST_HEADERS: frozenset[str] = frozenset(
    {
        "from",
        "to",
        "contact",
        "route",
        "record-route",
        "path",
        "service-route",
        "reply-to",
        "refer-to",
        "referred-by",
        "p-asserted-identity",
        "p-preferred-identity",
        "p-called-party-id",
        "remote-party-id",
        "diversion",
        "history-info",
    }
)

VIA = "via"
CONTENT_LENGTH = "content-length"
CONTENT_TYPE = "content-type"
CALL_ID = "call-id"
CSEQ = "cseq"

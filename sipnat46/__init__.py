"""sipnat46: a transparent SIP/SDP address-rewriting gateway (IPv4 <-> IPv6)."""

__version__ = "0.1.0"

"""Sans-IO SIP codec: bytes in, byte-preserving edits out."""

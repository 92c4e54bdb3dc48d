"""A scripted TCP SIP peer for the stream tests, run inside a lab namespace.

serve ADDR PORT OUT [--answer] [--ask] [--reset] [--raw] [--seconds S]
    accept connections; record every message (or, with --raw, every byte) per connection in
    OUT (JSON, latin-1 text); --answer: a 200 to each request, all answers to one read
    written in one send; --ask: an OPTIONS of its own on the first connection after its first
    message (a request in the other direction over the same connection); --reset: reset each
    connection after its first message; --close: close it (FIN) after answering it.

Framing here is deliberately independent of sipnat46's (headers end, then Content-Length).
"""

from __future__ import annotations

import json
import re
import selectors
import socket
import struct
import sys
import time

LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.I | re.M)


def split_messages(buf: bytearray) -> list[bytes]:
    out = []
    while True:
        stripped = buf.lstrip(b"\r\n")
        if len(stripped) != len(buf):
            out.append(bytes(buf[: len(buf) - len(stripped)]))  # keep-alive, recorded as is
            del buf[: len(buf) - len(stripped)]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return out
        m = LENGTH.search(bytes(buf[:end]))
        total = end + 4 + (int(m.group(1)) if m else 0)
        if len(buf) < total:
            return out
        out.append(bytes(buf[:total]))
        del buf[:total]


def header(msg: bytes, name: bytes) -> bytes:
    for line in msg.split(b"\r\n"):
        if line.lower().startswith(name.lower() + b":"):
            return line
    return b""


def answer(req: bytes, me: str) -> bytes:
    lines = [b"SIP/2.0 200 OK"] + [header(req, n) for n in (b"Via", b"From", b"To", b"Call-ID", b"CSeq")]
    lines += [f"Contact: <sip:peer@{me}>".encode(), b"Content-Length: 0", b"", b""]
    return b"\r\n".join(lines)


def options(me: str, n: int) -> bytes:
    return (
        f"OPTIONS sip:pbx@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bK-peer-{n}\r\n"
        f"From: <sip:peer@{me}>;tag=p{n}\r\nTo: <sip:pbx@192.0.2.10>\r\nCall-ID: peer-{n}\r\n"
        f"CSeq: 1 OPTIONS\r\nContact: <sip:peer@{me}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def serve(addr: str, port: int, out: str, flags: set[str], seconds: float) -> None:
    me = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
    lst = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((addr, port))
    lst.listen(4096)
    sel = selectors.DefaultSelector()
    sel.register(lst, selectors.EVENT_READ)
    conns: dict[socket.socket, tuple[int, bytearray]] = {}
    record: list[list[str]] = []
    asked = False
    ready = open(out + ".ready", "w")
    ready.close()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for key, _ in sel.select(0.2):
            s = key.fileobj
            if s is lst:
                c, _ = lst.accept()
                conns[c] = (len(record), bytearray())
                record.append([])
                sel.register(c, selectors.EVENT_READ)
                continue
            idx, buf = conns[s]  # type: ignore[index]
            try:
                data = s.recv(65536)  # type: ignore[union-attr]
            except ConnectionResetError:
                data = b""
                record[idx].append("<reset>")
            if not data:
                record[idx].append("<eof>")
                sel.unregister(s)
                s.close()  # type: ignore[union-attr]
                del conns[s]  # type: ignore[arg-type]
                continue
            if "raw" in flags:
                record[idx].append(data.decode("latin-1"))
                continue
            buf += data
            msgs = split_messages(buf)
            record[idx] += [m.decode("latin-1") for m in msgs]
            reply = b""
            if "answer" in flags:
                reply += b"".join(answer(m, me) for m in msgs if not m.startswith(b"SIP/2.0") and m.strip())
            if "ask" in flags and not asked and msgs:
                asked = True
                reply += options(me, 1)
            if reply:
                s.sendall(reply)  # type: ignore[union-attr]
            if "close" in flags and msgs:  # a clean close (FIN) from this side
                sel.unregister(s)
                s.close()  # type: ignore[union-attr]
                del conns[s]  # type: ignore[arg-type]
                record[idx].append("<closed>")
                continue
            if "reset" in flags and msgs:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # type: ignore[union-attr]
                sel.unregister(s)
                s.close()  # type: ignore[union-attr]
                del conns[s]  # type: ignore[arg-type]
        if "stop" in flags and record and not conns:
            break
    with open(out, "w") as fh:
        json.dump(record, fh)


def request_bytes(n: int) -> bytes:
    """A small OPTIONS from the PBX to the stand-in 100.64.46.20 (for the many-connections test)."""
    return (
        f"OPTIONS sip:bob@100.64.46.20:5060 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK-m{n}\r\n"
        f"From: <sip:pbx@192.0.2.10>;tag=m{n}\r\nTo: <sip:bob@100.64.46.20>\r\nCall-ID: m{n}\r\n"
        f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


if __name__ == "__main__":
    _, mode, addr, port, out, *rest = sys.argv
    secs = float(rest[rest.index("--seconds") + 1]) if "--seconds" in rest else 20.0
    serve(addr, int(port), out, {r.lstrip("-") for r in rest if r.startswith("--")}, secs)

"""Helpers for end-to-end tests in the namespace lab: real sipp peers, real NFQUEUE,
packet counters read from the kernel. Everything runs inside namespaces the suite made."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sipnat46.sip.message import SipMessage, parse_message

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "scripts" / "lab"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
PREFIX = os.environ.get("LAB_PREFIX", "s46-")


def sipnat46_bin() -> str:
    here = Path(sys.executable).parent / "sipnat46"
    found = str(here) if here.exists() else shutil.which("sipnat46")
    assert found, "the sipnat46 console script is not installed (run scripts/test)"
    return found


def lab(*args: str) -> None:
    subprocess.run([str(LAB), *args], check=True, capture_output=True, timeout=120)


def ns(
    name: str, *cmd: str, check: bool = True, timeout: float = 60, **kw
) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        ["ip", "netns", "exec", PREFIX + name, *cmd],
        check=check,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def ns_popen(name: str, *cmd: str, **kw) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    return subprocess.Popen(["ip", "netns", "exec", PREFIX + name, *cmd], **kw)


# -- sipp ----------------------------------------------------------------------------------


def tone(workdir: Path, seconds: float = 1.0) -> None:
    """A PCMU tone file sipp's rtp_stream plays (50 packets of 160 bytes per second)."""
    (workdir / "tone.ulaw").write_bytes(bytes([0xFF, 0x7F]) * int(4000 * seconds))


def _keys(keys: dict[str, str]) -> list[str]:
    out: list[str] = []
    for k, v in keys.items():
        out += ["-key", k, v]
    return out


@dataclass
class SippRun:
    proc: subprocess.Popen[bytes]
    log: Path
    out: Path

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"sipp did not finish: {self.out.read_text(errors='replace')[-1500:]}"
            ) from None

    def received(self) -> list[bytes]:
        return [m for d, m in sipp_messages(self.log) if d == "received"]

    def sent(self) -> list[bytes]:
        return [m for d, m in sipp_messages(self.log) if d == "sent"]


def sipp(
    name: str,
    role: str,
    workdir: Path,
    *,
    local: str,
    media: str,
    media_port: int,
    keys: dict[str, str],
    target: str | None = None,
    port: int = 5060,
    duration_ms: int = 1500,
    calls: int = 1,
    scenario: str | None = None,
    extra: tuple[str, ...] = (),
) -> SippRun:
    """Start sipp in namespace ``name`` as 'uac' or 'uas' (foreground, wrapped in timeout)."""
    tag = f"{role}-{name}-{port}"
    log = workdir / f"{tag}.msg"
    out = workdir / f"{tag}.out"
    cmd = ["timeout", "60", "sipp", "-sf", str(SCENARIOS / (scenario or f"{role}.xml"))]
    cmd += ["-i", local, "-p", str(port), "-mi", media, "-mp", str(media_port), "-m", str(calls)]
    cmd += ["-d", str(duration_ms), "-nostdin", "-trace_msg", "-message_file", str(log), *_keys(keys), *extra]
    if role == "uac":
        cmd += ["-s", "bob", target or ""]
    fh = open(out, "wb")
    proc = ns_popen(name, *cmd, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return SippRun(proc, log, out)


# "UDP message received [553] bytes :" and "UDP message sent (532 bytes):"
_BLOCK = re.compile(
    rb"^-{20,} [^\n]*\n(UDP|TCP) message (sent|received) [\[(](\d+)(?:\] bytes|\s*bytes\))\s*:\n\n", re.M
)


def sipp_messages(path: Path) -> list[tuple[str, bytes]]:
    """The messages in a sipp -trace_msg log, with CRLF restored, as (direction, bytes)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    out = []
    matches = list(_BLOCK.finditer(data))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(data)
        size = int(m.group(3))
        raw = data[m.end() : end]
        # sipp logs the bytes as sent; trailing separators belong to the log
        out.append((m.group(2).decode(), raw[:size]))
    return out


def first(messages: list[bytes], start: str) -> SipMessage:
    for raw in messages:
        if raw.startswith(start.encode()):
            return parse_message(raw)
    raise AssertionError(f"no message starting {start!r} among {[m[:40] for m in messages]}")


# -- packet counters --------------------------------------------------------------------------


class Counter:
    """Counts packets with an iptables rule in a namespace: what the kernel really saw."""

    def __init__(self, name: str, family: int, chain: str, match: str) -> None:
        self.name, self.family, self.chain = name, family, chain
        self.tool = "iptables" if family == 4 else "ip6tables"
        self.comment = f"s46test-{chain}-{abs(hash(match)) % 10**8}"
        self.spec = ["-p", "udp", *match.split(), "-m", "comment", "--comment", self.comment]
        ns(name, self.tool, "-I", chain, *self.spec)

    def packets(self) -> int:
        out = ns(self.name, self.tool, "-nvxL", self.chain).stdout
        for line in out.splitlines():
            if self.comment in line:
                return int(line.split()[0])
        raise AssertionError(f"counter {self.comment} vanished")

    def remove(self) -> None:
        ns(self.name, self.tool, "-D", self.chain, *self.spec, check=False)


# -- sipnat46 instances ----------------------------------------------------------------------


@contextmanager
def instance(name: str, config_text: str, workdir: Path, instance_name: str) -> Iterator[Path]:
    """sipnat46 started in namespace ``name``; always stopped (and its rules checked gone)."""
    cfg = workdir / f"{instance_name}.toml"
    cfg.write_text(f'instance = "{instance_name}"\n' + config_text)
    started = ns(name, sipnat46_bin(), "--config", str(cfg), "start", check=False)
    assert started.returncode == 0, started.stderr + started.stdout
    try:
        yield cfg
    finally:
        stopped = ns(name, sipnat46_bin(), "--config", str(cfg), "stop", check=False)
        assert stopped.returncode == 0, stopped.stderr
        saved = ns(name, "iptables-save").stdout + ns(name, "ip6tables-save", check=False).stdout
        assert f"sipnat46:{instance_name}" not in saved, "rules left behind after stop"


def status(name: str, cfg: Path) -> dict:  # type: ignore[type-arg]
    time.sleep(1.2)  # the daemon writes its figures once a second
    res = ns(name, sipnat46_bin(), "--config", str(cfg), "status", "--json", check=False)
    return json.loads(res.stdout)


def daemon_pid(name: str, cfg: Path) -> int:
    st = status(name, cfg)
    assert st["running"], st
    return int(st["pid"])


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)

"""The rules' watchdog (I/O shell): removes the daemon's rules if the daemon dies uncleanly.

SIP over UDP would pass a dead daemon anyway (--queue-bypass), but the stream proxy's TPROXY
and REDIRECT rules have no bypass: with nobody listening they would swallow new TCP
connections. So the daemon starts this small process in a session of its own, holding the
write end of a pipe; when the pipe closes and the daemon's pidfile is still there (a clean stop
removes its rules and then its pidfile), the daemon died (SIGKILL, OOM killer): the watchdog
removes the rules and the pidfile, and says so in the instance's log.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from . import config as config_mod
from . import rules
from .errors import Sipnat46Error
from .runfiles import logfile, pidfile


def spawn(cfg: config_mod.Config) -> subprocess.Popen[bytes]:
    """Start the watchdog for this daemon; the daemon keeps the returned process's stdin."""
    log = open(logfile(cfg), "ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "sipnat46.watchdog", str(cfg.path), cfg.instance, str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            start_new_session=True,  # a signal to the daemon's process group spares it
            close_fds=True,
        )
    finally:
        log.close()


def main(argv: list[str]) -> int:
    path, instance, pid = argv[0], argv[1], int(argv[2])
    sys.stdin.buffer.read()  # returns when the daemon's end closes: it stopped or died
    logging.basicConfig(format="%(asctime)s sipnat46-watchdog[%(process)d]: %(message)s", level=logging.INFO)
    try:
        cfg = config_mod.load(Path(path))
    except Sipnat46Error as exc:
        logging.error("cannot read %s to remove the rules: %s", path, exc)
        return 1
    cfg.instance = instance
    try:
        left = int(pidfile(cfg).read_text().split()[0]) == pid
    except (OSError, ValueError, IndexError):
        left = False
    if not left:
        return 0  # stopped cleanly: rules and pidfile already gone
    try:
        removed = rules.remove(cfg)
    except Sipnat46Error as exc:
        logging.error("daemon %d died; removing its rules failed: %s", pid, exc)
        return 1
    pidfile(cfg).unlink(missing_ok=True)
    logging.warning(
        "daemon %d died without cleaning up: removed its rules (IPv%s)", pid, "/".join(map(str, removed))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

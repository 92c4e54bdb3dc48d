"""Where an instance keeps its pidfile, status and log (one directory, by instance name)."""

from __future__ import annotations

import os
from pathlib import Path

from .config import Config


def run_dir() -> Path:
    return Path(os.environ.get("SIPNAT46_RUN_DIR", "/run/sipnat46"))


def pidfile(cfg: Config) -> Path:
    return run_dir() / f"{cfg.instance}.pid"


def statusfile(cfg: Config) -> Path:
    return run_dir() / f"{cfg.instance}.json"


def logfile(cfg: Config) -> Path:
    return run_dir() / f"{cfg.instance}.log"

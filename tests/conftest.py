from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _shared() -> Path:
    env = os.environ.get("SIPNAT46_SHARED")
    if env:
        return Path(env)
    return ROOT.parent / "shared"


SHARED = _shared()
TESTDATA = SHARED / "testdata"
RFC4475 = TESTDATA / "sip-torture" / "rfc4475"
RFC5118 = TESTDATA / "sip-torture" / "rfc5118"
SAMPLES = TESTDATA / "sip-samples"


def pytest_sessionstart(session: pytest.Session) -> None:
    # The corpora are part of the suite: a missing shared/ is a failure, never a skip.
    if not RFC4475.is_dir() or not SAMPLES.is_dir():
        raise pytest.UsageError(f"test corpora not found under {TESTDATA} (set SIPNAT46_SHARED)")

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.lab import lab, tone


@pytest.fixture(scope="session")
def lab_up() -> Iterator[None]:
    # The packet path is tested for real: root and namespaces are required, never skipped.
    if os.geteuid() != 0:
        pytest.fail("end-to-end tests need root (network namespaces, NFQUEUE): run scripts/test as root")
    lab("down")
    lab("up")
    yield
    lab("down")


@pytest.fixture
def work(tmp_path: Path, lab_up: None) -> Path:
    tmp_path.chmod(0o755)
    tone(tmp_path)
    return tmp_path

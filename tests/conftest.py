"""What every tier shares: its marker, from the folder a test is in, and the check that the
session leaves no process running. Nothing here imports the cluster tooling: the control
plane's fixtures live in tests/integration/conftest.py, the node's in tests/e2e/conftest.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
import pytest

# tests/<tier>/... -> the tier's marker (declared, with what each tier needs, in pyproject.toml).
TIERS = ("unit", "packaging", "hack", "contract", "tools", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for tier in TIERS:
            if f"/tests/{tier}/" in str(item.path):
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session", autouse=True)
def _no_orphans_at_exit() -> Iterator[None]:
    """Fail the run if anything the tests spawned is still running at the end."""
    yield
    me = psutil.Process()
    deadline = time.monotonic() + 10
    while (children := me.children(recursive=True)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if children:
        commands = [child.cmdline() for child in children]
        for child in children:
            child.kill()
        raise AssertionError(f"test session left processes running: {commands}")

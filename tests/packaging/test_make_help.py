"""`make help` lists every target the Makefile defines, and nothing it does not."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def makefile_targets() -> set[str]:
    """Rule names at the start of a line (`name:` or `a b:`), without variables and patterns."""
    targets: set[str] = set()
    for line in (REPO_ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\- ]+):(?!=)", line)
        if match:
            targets.update(name for name in match.group(1).split() if not name.startswith("."))
    return targets


def test_make_help_lists_every_target() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        [make, "--no-print-directory", "help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    listed = set(re.findall(r"^make ([a-z][a-z0-9-]*)\s", result.stdout, flags=re.MULTILINE))
    targets = makefile_targets()
    assert {"demo", "test"} <= targets  # the parser found the rules
    assert not targets - listed, f"missing from make help: {sorted(targets - listed)}"
    assert not listed - targets, f"make help lists targets the Makefile lacks: {sorted(listed - targets)}"


def test_every_target_is_phony() -> None:
    """A file named like a target (say `test/` or `docs`) must not make it a no-op."""
    phony = re.search(r"^\.PHONY:(.*)$", (REPO_ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    assert phony is not None
    assert makefile_targets() <= set(phony.group(1).split())

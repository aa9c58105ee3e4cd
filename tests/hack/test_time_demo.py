"""hack/time-demo.sh, which measures `make demo` cold and warm as a newcomer meets it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "time-demo.sh"
SHELLCHECK = Path(sys.executable).parent / "shellcheck"


def test_script_is_shellcheck_clean() -> None:
    result = subprocess.run([str(SHELLCHECK), str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the refusal to run as root")
def test_script_refuses_root_since_make_demo_never_needs_it() -> None:
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "non-root" in result.stderr

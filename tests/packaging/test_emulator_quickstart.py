"""The emulator page's quick start (docs/emulator.md) works as written, against
`mixpeek-operator emulator` started the way a new user starts it (default seed, only a port)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from hack.localcluster import spawn, terminate

EMULATOR_PAGE = Path(__file__).resolve().parents[2] / "docs" / "emulator.md"


def readme_curl_commands() -> list[str]:
    """The curl commands of the emulator page's quick start, one string each."""
    text = EMULATOR_PAGE.read_text()
    section = text[text.index("## Quick start") :]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "no bash block in the emulator page's quick start"
    commands = [command.strip() for command in block.group(1).split("\n\n") if command.strip()]
    assert all(command.startswith("curl ") for command in commands)
    return commands


def test_readme_curl_example_against_a_fresh_emulator(tmp_path: Path) -> None:
    commands = readme_curl_commands()
    assert len(commands) == 2
    assert all("127.0.0.1:8099" in command for command in commands)
    port_file = tmp_path / "port"
    proc = spawn(
        [sys.executable, "-m", "mixpeek_operator", "emulator", "--port", "0", "--port-file", str(port_file)],
        tmp_path / "emulator.log",
    )
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, (tmp_path / "emulator.log").read_text()
            assert time.monotonic() < deadline, "emulator did not start"
            time.sleep(0.1)
        port = port_file.read_text().strip()

        def run(command: str) -> dict[str, object]:
            shell = command.replace("127.0.0.1:8099", f"127.0.0.1:{port}")
            result = subprocess.run(
                ["bash", "-c", shell], capture_output=True, text=True, check=True, timeout=30
            )
            body: dict[str, object] = json.loads(result.stdout)
            return body

        created = run(commands[0])
        assert created["status"] == "PENDING"
        assert str(created["sync_config_id"]).startswith("sync_")
        assert created["polling_interval_seconds"] == 60
        assert len(created) >= 48

        listed = run(commands[1])
        assert listed["total"] == 1
        # "five seconds later its first run has happened": move the emulated clock instead of waiting.
        httpx.post(f"http://127.0.0.1:{port}/_emulator/clock/advance", json={"seconds": 6}).raise_for_status()
        listed = run(commands[1])
        (sync,) = listed["results"]  # type: ignore[misc]
        assert sync["status"] == "ACTIVE"
        assert sync["total_files_synced"] == 12
    finally:
        terminate(proc)

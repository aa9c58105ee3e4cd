"""Child processes and the background supervisor shared by the local control plane and node.

`make cluster` and `make node` start `python -m hack.<driver> serve --dir DIR` in the
background: the supervisor writes DIR/ready once its processes run, and on SIGTERM or SIGINT
tears them down and exits. Its pid is kept in DIR/supervisor.pid, its output in
DIR/supervisor.log. Every other child is started in its own session with PR_SET_PDEATHSIG, so a
crashed or killed parent never leaves one behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the spawning thread dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    args: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    *,
    outlive_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group that dies with us (unless `outlive_parent`);
    output goes to log_path."""
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            list(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=None if outlive_parent else _die_with_parent,
            env=env,
            cwd=cwd,
        )
    finally:
        log.close()


def terminate(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)


def module_command(module: str, *args: str) -> list[str]:
    """`python -m hack.<driver> <args>`: run it with cwd=REPO_ROOT, where the package is found."""
    return [sys.executable, "-m", module, *args]


class StopRequest:
    """SIGTERM or SIGINT ask a foreground supervisor to stop: it leaves its wait and cleans up."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._request)
        signal.signal(signal.SIGINT, self._request)

    def _request(self, signum: int, frame: object) -> None:
        self.requested = True

    def wait(self, running: Callable[[], bool], interval: float = 0.5) -> None:
        """Return once a stop was requested or `running()` no longer holds."""
        while not self.requested and running():
            time.sleep(interval)


def running_pid(directory: Path) -> int | None:
    """The pid of the supervisor serving `directory`, if one is alive."""
    try:
        pid = int((directory / "supervisor.pid").read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def is_up(directory: Path) -> bool:
    return running_pid(directory) is not None and (directory / "ready").exists()


def launch(command: Sequence[str], directory: Path, *, detach: bool) -> subprocess.Popen[bytes]:
    """Start a supervisor serving `directory`. Detached, it outlives this process (`make node`);
    otherwise it dies with it, like every test child."""
    (directory / "ready").unlink(missing_ok=True)
    supervisor = spawn(command, directory / "supervisor.log", cwd=REPO_ROOT, outlive_parent=detach)
    (directory / "supervisor.pid").write_text(str(supervisor.pid))
    return supervisor


def wait_ready(directory: Path, supervisor: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait for DIR/ready; False when the supervisor exited or the deadline (monotonic) passed."""
    while not (directory / "ready").exists():
        if supervisor.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def stop(directory: Path, supervisor: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> bool:
    """SIGTERM the supervisor (ours, or the one DIR/supervisor.pid names) and wait for it to exit;
    False when none was running."""
    pid = supervisor.pid if supervisor is not None else running_pid(directory)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid, supervisor):
            time.sleep(0.2)
        if supervisor is not None:
            terminate(supervisor)
    (directory / "supervisor.pid").unlink(missing_ok=True)
    return pid is not None


def _alive(pid: int, supervisor: subprocess.Popen[bytes] | None) -> bool:
    if supervisor is not None:
        return supervisor.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

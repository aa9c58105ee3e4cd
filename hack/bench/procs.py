"""Child processes of the benchmark: the emulator, the operator and py-spy.

Everything is started with `localcluster.spawn` (own process group, SIGKILLed if the driver
dies) from the driver's main thread (PDEATHSIG follows the spawning *thread*), and stopped
with `localcluster.terminate`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from hack.localcluster import spawn, spawn_emulator, spawn_operator, terminate
from mixpeek_operator.emulator.admin import EmulatorAdmin

API_KEY = "sk_test_bench"
MIXPEEK_NAMESPACE = "default"
CONNECTION_ID = "conn_bench_s3"


def bucket_ids(count: int) -> list[str]:
    return [f"bkt_bench{index:02d}" for index in range(count)]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _wait_for(check: Any, timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
            )
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Emulator:
    proc: subprocess.Popen[bytes]
    url: str
    admin: EmulatorAdmin
    log: Path

    @classmethod
    def start(cls, workdir: Path, buckets: int, extra_args: Sequence[str] = ()) -> Emulator:
        seed = {
            "api_keys": [{"key": API_KEY, "user_id": "usr_bench", "internal_id": "org_bench"}],
            "namespaces": [
                {
                    "id": "ns_bench",
                    "name": MIXPEEK_NAMESPACE,
                    "buckets": [{"id": bucket} for bucket in bucket_ids(buckets)],
                    "connections": [{"id": CONNECTION_ID, "provider": "s3"}],
                }
            ],
        }
        proc, url = spawn_emulator(workdir, seed, "--log-level", "warning", *extra_args)
        return cls(proc=proc, url=url, admin=EmulatorAdmin(url, timeout=60), log=workdir / "emulator.log")

    def stop(self) -> None:
        self.admin.close()
        terminate(self.proc)


@dataclass
class Operator:
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_url: str
    health_url: str
    args: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        workdir: Path,
        label: str,
        kubeconfig: Path,
        namespace: str,
        *,
        workers: int,
        observe_interval: float,
        rate_limit: float,
        rate_burst: int,
        env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
        wait_healthy: bool = True,
        python: str | Path = sys.executable,
    ) -> Operator:
        log = workdir / f"operator-{label}.log"
        launch = spawn_operator(
            log,
            kubeconfig,
            [namespace],
            "--workers",
            str(workers),
            "--observe-interval",
            str(observe_interval),
            "--rate-limit",
            str(rate_limit),
            "--rate-burst",
            str(rate_burst),
            "--log-level",
            "INFO",
            "--log-format",
            "json",
            *extra_args,
            env=env,
            python=python,
        )
        proc = launch.proc
        operator = cls(
            proc=proc, log=log, metrics_url=launch.metrics_url, health_url=launch.health_url, args=launch.args
        )
        if wait_healthy:
            operator.wait_healthy()
        return operator

    def wait_healthy(self) -> None:
        try:
            _wait_for(lambda: _http_ok(self.health_url), 60, f"operator {self.log.stem}", self.proc, self.log)
        except BaseException:
            terminate(self.proc)
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_bytes(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            return str(response.read().decode())

    def queued(self) -> int:
        """Objects waiting in the engine's work queue (kopf's liveness endpoint reports its probe)."""
        with urllib.request.urlopen(self.health_url, timeout=10) as response:
            probes = json.loads(response.read())
        return int((probes.get("engine") or {}).get("queued", 0))

    def stop(self) -> None:
        terminate(self.proc, grace=20)


class CpuMeter:
    """CPU seconds (user + system, children included) used by named processes between marks."""

    def __init__(self) -> None:
        self._procs: dict[str, psutil.Process] = {}

    def track(self, name: str, pid: int) -> None:
        self._procs[name] = psutil.Process(pid)

    def untrack(self, name: str) -> None:
        self._procs.pop(name, None)

    def sample(self) -> dict[str, float]:
        result: dict[str, float] = {}
        for name, proc in self._procs.items():
            try:
                times = proc.cpu_times()
                result[name] = times.user + times.system + times.children_user + times.children_system
            except psutil.NoSuchProcess:
                continue
        result["driver"] = _own_cpu()
        machine = psutil.cpu_times()
        # guest time is already part of user time; steal is time the hypervisor gave to others.
        result["machine"] = sum(
            getattr(machine, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq")
        )
        result["steal"] = getattr(machine, "steal", 0.0)
        return result


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per process between two samples, and `other`: the rest of the machine's busy time."""
    used = {name: after[name] - before[name] for name in after if name in before}
    machine = used.pop("machine", None)
    steal = used.pop("steal", None)
    if machine is not None:
        used["other"] = max(0.0, machine - sum(used.values()))
    if steal:
        used["steal"] = steal  # the VM wanted a CPU and the hypervisor did not give it one
    return {name: round(value, 2) for name, value in used.items()}


@dataclass
class Profiler:
    """`py-spy record` of one pid, as collapsed stacks; stopped with SIGINT so it writes its output."""

    proc: subprocess.Popen[bytes]
    output: Path

    @classmethod
    def start(cls, pid: int, output: Path, rate: int = 50) -> Profiler | None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(py_spy).exists():
            return None
        args = [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "-o",
            str(output),
        ]
        proc = spawn(args, output.with_suffix(".log"))
        return cls(proc=proc, output=output)

    def stop(self) -> Path | None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                terminate(self.proc)
        return self.output if self.output.exists() else None


def top_frames(collapsed: Path, limit: int = 15) -> dict[str, Any]:
    """From py-spy's collapsed stacks: the top functions by self time and by inclusive time (%)."""
    self_samples: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [frame.strip() for frame in stack.split(";") if frame.strip()]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        self_samples[frames[-1]] = self_samples.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}

    def top(table: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda item: item[1], reverse=True)[:limit]
        return [(frame, round(100 * count / total, 1)) for frame, count in ranked]

    return {"samples": total, "self": top(self_samples), "inclusive": top(inclusive)}

"""The life cycle label shards run without kopf (lifecycle.py): its order, its `/healthz`, and
that the label-mode entry point never imports kopf."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hack.localcluster import free_port
from mixpeek_operator.lifecycle import serve, start_health_server
from mixpeek_operator.logging_setup import SecretRegistry
from mixpeek_operator.runtime import OperatorConfig, OperatorRuntime
from mixpeek_operator.supervision import Backoff, SupervisionPolicy, Supervisor

OPERATOR_ROOT = Path(__file__).resolve().parents[3] / "operator"


class RecordingRuntime(OperatorRuntime):
    """The real runtime, with start and stop replaced by steps the test controls."""

    def __init__(self, start: asyncio.Event | None = None, fail: Exception | None = None) -> None:
        super().__init__(OperatorConfig(), SecretRegistry())
        self.steps: list[str] = []
        self._may_start, self._fail = start, fail

    async def start(self) -> None:  # type: ignore[override]
        self.steps.append("start")
        if self._may_start is not None:
            await self._may_start.wait()
        if self._fail is not None:
            raise self._fail
        self.steps.append("started")

    async def stop(self) -> None:
        self.steps.append("stop")


async def get(url: str, method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.request(method, url)


async def test_healthz_answers_the_probe_and_500_once_a_task_cannot_be_restarted() -> None:
    runtime = OperatorRuntime(OperatorConfig(), SecretRegistry())
    port = free_port()
    server = await start_health_server(runtime, "127.0.0.1", port)
    try:
        answer = await get(f"http://127.0.0.1:{port}/healthz")
        assert answer.status_code == 200
        assert answer.json() == {"engine": {}}
        assert (await get(f"http://127.0.0.1:{port}/metrics")).status_code == 404
        assert (await get(f"http://127.0.0.1:{port}/healthz", "POST")).status_code == 405

        runtime.supervisor = Supervisor(SupervisionPolicy(backoff=Backoff(base=0.0, cap=0.0), max_failures=1))

        async def broken() -> None:
            raise RuntimeError("listing parser bug")

        await runtime.supervisor.spawn("observe ns/bkt_1", broken, kind="observer")
        answer = await get(f"http://127.0.0.1:{port}/healthz")
        assert answer.status_code == 500  # the kubelet's liveness probe fails: the pod is restarted
        assert "observe ns/bkt_1" in answer.text
    finally:
        server.close()
        await server.wait_closed()


async def test_the_health_endpoint_serves_only_once_started_and_stop_stops_the_runtime() -> None:
    may_start, stop = asyncio.Event(), asyncio.Event()
    runtime = RecordingRuntime(start=may_start)
    port = free_port()
    running = asyncio.create_task(serve(runtime, port, stop))
    await asyncio.sleep(0.1)
    with pytest.raises(httpx.ConnectError):  # starting (the admission check): not yet ready
        await get(f"http://127.0.0.1:{port}/healthz")
    may_start.set()
    for _ in range(100):
        try:
            answer = await get(f"http://127.0.0.1:{port}/healthz")
            break
        except httpx.ConnectError:
            await asyncio.sleep(0.02)
    assert answer.status_code == 200
    stop.set()
    await asyncio.wait_for(running, 5)
    assert runtime.steps == ["start", "started", "stop"]
    with pytest.raises(httpx.ConnectError):
        await get(f"http://127.0.0.1:{port}/healthz")


async def test_a_stop_while_starting_cancels_the_start_and_a_failed_start_is_raised() -> None:
    stop = asyncio.Event()
    waiting = RecordingRuntime(start=asyncio.Event())  # never allowed to finish starting
    running = asyncio.create_task(serve(waiting, 0, stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(running, 5)
    assert waiting.steps == ["start", "stop"]

    failing = RecordingRuntime(fail=RuntimeError("no API server"))
    with pytest.raises(RuntimeError, match="no API server"):
        await serve(failing, 0, asyncio.Event())
    assert failing.steps == ["start", "stop"]


def test_the_label_shards_entry_point_never_imports_kopf() -> None:
    """`run --sharding` (label mode) goes to lifecycle.py; kopf, aiohttp and what they bring are
    never loaded, which is the 22 MB per replica this mode saves. The rendezvous mode still runs
    under kopf."""
    assert entry_point("labels") == {"ran": "lifecycle", "kopf": False, "aiohttp": False}
    assert entry_point("rendezvous")["ran"] == "kopf"


def entry_point(mode: str) -> dict[str, object]:
    """Run `mixpeek-operator run --sharding --sharding-mode <mode>` with both runners recording
    instead of running, and report which ran and what the process had imported by then."""
    script = """
import json, sys
import mixpeek_operator.lifecycle as lifecycle
ran = []
lifecycle.run_until_signalled = lambda runtime, port: ran.append("lifecycle")
if sys.argv[-1] == "rendezvous":
    import mixpeek_operator.handlers as handlers
    handlers.run_operator = lambda config, runtime: ran.append("kopf")
from mixpeek_operator.cli import main
main(sys.argv[1:])
print(json.dumps({"ran": ran[0], "kopf": "kopf" in sys.modules, "aiohttp": "aiohttp" in sys.modules}))
"""
    args = ["run", "--sharding", "--leader-election-namespace", "ops", "--sharding-mode", mode]
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=OPERATOR_ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    outcome: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return outcome

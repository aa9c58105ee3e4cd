"""The scenarios: bulk create (against the floor), idle, churn, memory and edit latency."""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from hack.bench import stats
from hack.bench.kube import Kube, Watcher, bucketsyncs_path
from hack.bench.procs import (
    API_KEY,
    CONNECTION_ID,
    MIXPEEK_NAMESPACE,
    CpuMeter,
    Emulator,
    Operator,
    Profiler,
    bucket_ids,
    cpu_delta,
    top_frames,
)
from hack.localcluster import ControlPlane
from mixpeek_operator.constants import FINALIZER, GROUP, OWNER_REF_KEY, OWNER_UID_KEY, VERSION
from mixpeek_operator.engine import EngineSettings

MEMORY_NS = "bench-memory"
SECRET = "mixpeek-credentials"
SCENARIOS = ("bulk", "idle", "churn", "edit", "memory")
ENDPOINTS = ("create", "list", "get", "update", "delete", "pause", "resume", "trigger")


@dataclass(frozen=True)
class Settings:
    size: str
    n: int
    buckets: int
    memory_points: tuple[int, ...]
    churn_rounds: int
    workers: int = 32
    create_concurrency: int = 32
    observe_interval: float = 5.0
    idle_intervals: int = 4
    churn_fraction: float = 0.1
    edits: int = 20
    edit_spacing: float = 1.0
    rate_limit: float = 10000.0
    rate_burst: int = 10000
    settle_seconds: float = 3.0
    ready_timeout: float = 900.0
    profile: bool = False
    repeat: int = 1  # bulk create (with its floors) runs this many times; the median ratio counts
    scenarios: tuple[str, ...] = SCENARIOS
    operator_env: tuple[tuple[str, str], ...] = ()  # extra environment of the operator (experiments)
    # The chart's MutatingAdmissionPolicy adds the finalizer at CREATE in the operator's namespaces.
    admission_policy: bool = True
    huge_n: int = 0  # size huge: the second stage's N (the first is `n`)
    restart_observe_interval: float = 300.0  # longer than a restart may take: one list pass
    quiet_wait: float = 180.0  # how long a timed scenario waits for the machine to go quiet
    emulator_args: tuple[str, ...] = ()  # extra flags of the emulator (shards: a longer request log)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class Admin:
    """The emulator's admin API, async (the driver's event loop must not block on it)."""

    def __init__(self, url: str) -> None:
        self.http = httpx.AsyncClient(base_url=url + "/_emulator", timeout=60.0)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.http.request(method, path, **kwargs)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def reset(self) -> None:
        await self._call("POST", "/reset")

    async def clear_requests(self) -> None:
        await self._call("DELETE", "/requests")

    async def counts(self) -> dict[str, int]:
        served = (await self._call("GET", "/requests/counts")).get("endpoints") or {}
        return {name: int(served.get(name, 0)) for name in ENDPOINTS}

    async def log(self, limit: int | None = None) -> list[dict[str, Any]]:
        params = {"limit": limit} if limit else None
        rows: list[dict[str, Any]] = (await self._call("GET", "/requests", params=params))["requests"]
        return rows

    async def syncs(self) -> list[dict[str, Any]]:
        """Every remote sync, across namespaces and buckets."""
        rows: list[dict[str, Any]] = (await self._call("GET", "/syncs"))["results"]
        return rows

    async def bump(self, sync_id: str, **increments: int) -> None:
        await self._call("POST", f"/syncs/{sync_id}/counters", json=increments)


def manifest(name: str, index: int, buckets: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BucketSync",
        "metadata": {"name": name},
        "spec": {
            "bucketId": buckets[index % len(buckets)],
            "connectionId": CONNECTION_ID,
            "sourcePath": f"bench/{index:05d}",
            "credentialsRef": {"name": SECRET},
        },
    }


def names(start: int, stop: int) -> list[str]:
    return [f"bs-{index:05d}" for index in range(start, stop)]


async def pool(items: Iterable[Any], concurrency: int, work: Callable[[Any], Awaitable[None]]) -> None:
    """Run `work` over `items` with `concurrency` workers; the first failure cancels the rest."""
    queue = list(items)
    queue.reverse()

    async def worker() -> None:
        while queue:
            await work(queue.pop())

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


def _iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Bench:
    settings: Settings
    workdir: Path
    kube: Kube
    kubeconfig: Path
    emulator: Emulator
    admin: Admin
    cpu: CpuMeter
    results: dict[str, Any] = field(default_factory=dict)
    operators: list[Operator] = field(default_factory=list)

    @classmethod
    def start(cls, settings: Settings, plane: ControlPlane, workdir: Path, pids: list[int]) -> Bench:
        """A bench on `plane` with a fresh emulator (its pid appended to `pids`) and CPU meters."""
        emulator = Emulator.start(workdir, settings.buckets, settings.emulator_args)
        pids.append(emulator.proc.pid)
        pki = plane.pki
        kube = Kube(plane.server, str(pki.ca_cert), str(pki.admin_cert), str(pki.admin_key))
        cpu = CpuMeter()
        cpu.track("kube-apiserver", plane.processes["kube-apiserver"].pid)
        cpu.track("etcd", plane.processes["etcd"].pid)
        cpu.track("emulator", emulator.proc.pid)
        return cls(settings, workdir, kube, plane.kubeconfig, emulator, Admin(emulator.url), cpu)

    @property
    def buckets(self) -> list[str]:
        return bucket_ids(self.settings.buckets)

    # --- plumbing ---------------------------------------------------------------------------

    async def prepare_namespaces(self, namespaces: Iterable[str]) -> None:
        for namespace in namespaces:
            await self.kube.ensure_namespace(namespace)
            await self.kube.ensure_secret(
                namespace,
                SECRET,
                {"apiKey": API_KEY, "namespace": MIXPEEK_NAMESPACE, "baseUrl": self.emulator.url},
            )

    def start_operator(self, label: str, namespace: str, observe_interval: float | None = None) -> Operator:
        s = self.settings
        operator = Operator.start(
            self.workdir,
            label,
            self.kubeconfig,
            namespace,
            workers=s.workers,
            observe_interval=observe_interval or s.observe_interval,
            rate_limit=s.rate_limit,
            rate_burst=s.rate_burst,
            env=dict(s.operator_env),
        )
        self.operators.append(operator)
        self.cpu.track("operator", operator.pid)
        return operator

    def stop_operator(self, operator: Operator) -> None:
        operator.stop()
        self.cpu.untrack("operator")

    async def aclose(self, pids: list[int]) -> None:
        """Stop every operator it started and the emulator, close its clients; the operators'
        pids join `pids` for the leftover check."""
        pids.extend(operator.pid for operator in self.operators)
        for operator in self.operators:
            operator.stop()
        self.emulator.stop()
        await self.kube.aclose()
        await self.admin.aclose()

    async def snapshot(self) -> dict[str, Any]:
        text = await self.kube.metrics_text()
        return {
            "at": time.monotonic(),
            "kube": stats.apiserver_writes(text),
            "kube_gets": stats.apiserver_gets(text),
            "remote": await self.admin.counts(),
            "cpu": self.cpu.sample(),
        }

    @staticmethod
    def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        return {
            "seconds": round(after["at"] - before["at"], 3),
            "kube": stats.delta(before["kube"], after["kube"]),
            "kube_gets": stats.delta(before["kube_gets"], after["kube_gets"]),
            "remote": {name: after["remote"][name] - before["remote"][name] for name in ENDPOINTS},
            "cpu_seconds": cpu_delta(before["cpu"], after["cpu"]),
        }

    async def create_objects(self, namespace: str, indices: Iterable[int]) -> dict[str, tuple[float, Any]]:
        """Create BucketSyncs concurrently; name -> (monotonic time the create returned, body)."""
        returned: dict[str, tuple[float, Any]] = {}
        buckets = self.buckets

        async def create(index: int) -> None:
            name = f"bs-{index:05d}"
            body = await self.kube.create(namespace, manifest(name, index, buckets))
            returned[name] = (time.monotonic(), body)

        await pool(indices, self.settings.create_concurrency, create)
        return returned

    async def settle_rss(self, operator: Operator) -> int:
        """RSS after a pause: the median of three samples a second apart."""
        await asyncio.sleep(max(self.settings.settle_seconds, self.settings.observe_interval + 1))
        samples = []
        for _ in range(3):
            samples.append(operator.rss_bytes())
            await asyncio.sleep(1.0)
        return int(statistics.median(samples))

    async def wait_quiet(self, *, cores: float = 0.2, within: float | None = None) -> float:
        """Wait (up to `within`) until processes outside the benchmark use less than `cores` CPUs.

        The machine may be shared; the timed scenarios should not race someone else's work.
        Returns the seconds waited; the CPU of others during each window is reported regardless.
        """
        began = time.monotonic()
        quiet = 0
        within = self.settings.quiet_wait if within is None else within
        while time.monotonic() - began < within and quiet < 2:
            before = self.cpu.sample()
            await asyncio.sleep(1.0)
            other = cpu_delta(before, self.cpu.sample()).get("other", 0.0)
            quiet = quiet + 1 if other < cores else 0
        return time.monotonic() - began

    # --- 1. bulk create: the floor -----------------------------------------------------------

    def _remote_client(self) -> httpx.AsyncClient:
        workers = self.settings.workers
        return httpx.AsyncClient(
            base_url=self.emulator.url,
            headers={"Authorization": f"Bearer {API_KEY}", "X-Namespace": MIXPEEK_NAMESPACE},
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers),
            timeout=60.0,
        )

    async def _floor_one(
        self, remote: httpx.AsyncClient, namespace: str, body: dict[str, Any], *, design: bool = False
    ) -> None:
        """The necessary work for one object: create its remote sync, then patch its status.

        `design`: also the writes the operator's design adds — the `Created` Event, and the
        finalizer (written before the create) unless the admission policy adds it at CREATE.
        """
        spec, meta = body["spec"], body["metadata"]
        path = bucketsyncs_path(namespace, meta["name"])
        if design and not self.settings.admission_policy:
            await self.kube.call(
                "PATCH",
                path,
                [
                    {"op": "replace", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
                    {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
                ],
                content_type="application/json-patch+json",
            )
        request = {
            "connection_id": spec["connectionId"],
            "source_path": spec["sourcePath"],
            "sync_mode": "continuous",
            "polling_interval_seconds": spec.get("pollingIntervalSeconds", 300),
            "batch_size": spec.get("batchSize", 50),
            "skip_batch_submission": False,
            "metadata": {OWNER_UID_KEY: meta["uid"], OWNER_REF_KEY: f"{namespace}/{meta['name']}"},
        }
        response = await remote.post(f"/v1/buckets/{spec['bucketId']}/syncs", json=request)
        response.raise_for_status()
        sync = response.json()
        if design:
            await self.kube.call(
                "POST", f"/api/v1/namespaces/{namespace}/events", _created_event(namespace, meta)
            )
        await self.kube.merge_patch(
            bucketsyncs_path(namespace, meta["name"], "status"),
            {"status": _floor_status(sync, spec["bucketId"], int(meta["generation"]))},
        )

    async def floor(self, namespace: str, n: int | None = None) -> dict[str, Any]:
        """Exactly the necessary work: one remote create and one status patch per object.

        Over N objects pre-created in a namespace no operator watches, with as many concurrent
        workers as the operator has, on fresh emulator state.
        """
        s = self.settings
        n = n or s.n
        started = time.monotonic()
        created = await self.create_objects(namespace, range(n))
        create_seconds = time.monotonic() - started
        await self.admin.reset()
        remote = self._remote_client()
        bodies = [body for _, (_, body) in sorted(created.items())]
        try:
            waited = await self.wait_quiet()
            before = await self.snapshot()
            begin = time.monotonic()
            await pool(bodies, s.workers, lambda body: self._floor_one(remote, namespace, body))
            wall = time.monotonic() - begin
            after = await self.snapshot()
        finally:
            await remote.aclose()
        return self._floor_result(wall, create_seconds, waited, self.changes(before, after), n)

    def _floor_result(
        self, wall: float, create_seconds: float, waited: float, window: dict[str, Any], n: int | None = None
    ) -> dict[str, Any]:
        n = n or self.settings.n
        return {
            "objects": n,
            "concurrency": self.settings.workers,
            "wall_seconds": wall,
            "objects_per_second": n / wall,
            "driver_create_seconds": create_seconds,
            "waited_for_quiet_seconds": waited,
            "remote_calls": window["remote"],
            "kube_writes": window["kube"],
            "cpu_seconds": window["cpu_seconds"],
        }

    async def floor_with_creates(self, namespace: str, *, design: bool = False) -> dict[str, Any]:
        """The floor on the operator's timeline: the creates run at the same time as the work.

        The benchmark creates N objects exactly as in the operator's run (same concurrency) and
        `workers` consumers do the floor's work on each as soon as its create returns.
        `design`: the work includes the finalizer and Event writes the operator's design makes.
        """
        s = self.settings
        await self.admin.reset()
        remote = self._remote_client()
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        buckets = self.buckets

        async def create(index: int) -> None:
            name = f"bs-{index:05d}"
            queue.put_nowait(await self.kube.create(namespace, manifest(name, index, buckets)))

        async def consume() -> None:
            while (body := await queue.get()) is not None:
                await self._floor_one(remote, namespace, body, design=design)

        try:
            waited = await self.wait_quiet()
            before = await self.snapshot()
            begin = time.monotonic()
            async with asyncio.TaskGroup() as group:
                consumers = [group.create_task(consume()) for _ in range(s.workers)]
                await pool(range(s.n), s.create_concurrency, create)
                creates_done = time.monotonic() - begin
                for _ in consumers:
                    queue.put_nowait(None)
            wall = time.monotonic() - begin
            after = await self.snapshot()
        finally:
            await remote.aclose()
        return self._floor_result(wall, creates_done, waited, self.changes(before, after))

    # --- 1. bulk create: the operator --------------------------------------------------------

    async def bulk_create(self, operator: Operator, watcher: Watcher, n: int | None = None) -> dict[str, Any]:
        s = self.settings
        n = n or s.n
        fleet = names(0, n)
        waited = await self.wait_quiet()
        before = await self.snapshot()
        limiter_before = stats.prometheus_sum(
            operator.metrics_text(), "mixpeek_ratelimiter_wait_seconds_total"
        )
        profiler = (
            Profiler.start(operator.pid, self.workdir / "profile-bulk-create.txt") if s.profile else None
        )
        begin = time.monotonic()
        try:
            returned = await self.create_objects(watcher.namespace, range(n))
            create_phase = max(when for when, _ in returned.values()) - begin
            # Counting first (O(1) per watch event); the full check only once the count is there.
            await watcher.wait(
                lambda: len(watcher.first_ready) >= n and all(name in watcher.first_ready for name in fleet),
                s.ready_timeout,
                "all Ready",
            )
            done = max(watcher.first_ready[name] for name in fleet)
            at_ready = self.cpu.sample()
        finally:
            profile = profiler.stop() if profiler is not None else None
        await asyncio.sleep(s.settle_seconds)  # the Events posted after each last status write
        after = await self.snapshot()
        window = self.changes(before, after)
        metrics = operator.metrics_text()
        to_ready = [max(0.0, watcher.first_ready[name] - returned[name][0]) for name in fleet]
        writes = window["kube"]
        operator_writes = {key: writes.get(key, 0) for key in stats.OPERATOR_WRITE_KEYS}
        result: dict[str, Any] = {
            "objects": n,
            "wall_seconds": done - begin,
            "objects_per_second": n / (done - begin),
            "driver_create_seconds": create_phase,
            "waited_for_quiet_seconds": waited,
            "time_to_ready_seconds": stats.summarize(to_ready),
            "remote_calls": window["remote"],
            "remote_calls_per_object": {k: v / n for k, v in window["remote"].items() if v},
            "kube_writes": writes,
            "kube_writes_per_object": {k: v / n for k, v in operator_writes.items()},
            "kube_writes_per_object_total": sum(operator_writes.values()) / n,
            "kube_gets_per_object": {k: v / n for k, v in window["kube_gets"].items()},
            "cpu_seconds_until_ready": cpu_delta(before["cpu"], at_ready),
            "reconciles": stats.prometheus_sum(metrics, "bucketsync_reconcile_total"),
            "rate_limiter_wait_seconds": stats.prometheus_sum(
                metrics, "mixpeek_ratelimiter_wait_seconds_total"
            )
            - limiter_before,
            "watch_events": watcher.events,
        }
        if profile is not None:
            result["profile"] = {"file": str(profile), **top_frames(profile)}
        return result

    # --- 2. idle ----------------------------------------------------------------------------------

    async def idle(self, operator: Operator, n: int | None = None) -> dict[str, Any]:
        s = self.settings
        n = n or s.n
        await asyncio.sleep(s.observe_interval + s.settle_seconds)  # let the last reconciles finish
        await self.admin.clear_requests()
        before = await self.snapshot()
        reconciles_before = stats.prometheus_sum(operator.metrics_text(), "bucketsync_reconcile_total")
        window_seconds = s.idle_intervals * s.observe_interval
        await asyncio.sleep(window_seconds)
        after = await self.snapshot()
        log = await self.admin.log()
        window = self.changes(before, after)
        passes = _list_passes(log, s.observe_interval)
        page_size = EngineSettings().list_page_size
        pages_per_group = max(1, math.ceil(math.ceil(n / s.buckets) / page_size))
        return {
            "window_seconds": window_seconds,
            "intervals": s.idle_intervals,
            "groups": s.buckets,
            "pages_per_group": pages_per_group,
            "remote_calls": window["remote"],
            "remote_calls_per_interval": {k: v / s.idle_intervals for k, v in window["remote"].items() if v},
            "list_passes": passes.to_json(),
            "kube_writes": window["kube"],
            "kube_writes_total": sum(window["kube"].values()),
            "reconciles": stats.prometheus_sum(operator.metrics_text(), "bucketsync_reconcile_total")
            - reconciles_before,
            "cpu_seconds": window["cpu_seconds"],
        }

    # --- restart ---------------------------------------------------------------------------------

    async def restart(self, label: str, namespace: str, n: int) -> tuple[dict[str, Any], Operator]:
        """A new operator over `n` converged objects (the previous one stopped): what catching up costs.

        Caught up: every object reconciled once (`bucketsync_reconcile_total` reaches n) with
        nothing queued. The operator observes every `restart_observe_interval` seconds (longer
        than the catch-up), so every remote call in the window is the start-up's own.
        """
        s = self.settings
        await self.admin.clear_requests()
        before = await self.snapshot()
        began = time.monotonic()
        operator = self.start_operator(label, namespace, observe_interval=s.restart_observe_interval)
        healthy = time.monotonic() - began
        reconciled = 0.0
        deadline = began + s.ready_timeout
        while True:
            reconciled = stats.prometheus_sum(operator.metrics_text(), "bucketsync_reconcile_total")
            if reconciled >= n and operator.queued() == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"restart: {reconciled:.0f}/{n} reconciled after {s.ready_timeout:.0f}s")
            await asyncio.sleep(0.2)
        caught_up = time.monotonic() - began
        times = psutil.Process(operator.pid).cpu_times()  # the whole life of this process so far
        operator_cpu = times.user + times.system
        await asyncio.sleep(s.settle_seconds)  # anything written just after the last reconcile
        after = await self.snapshot()
        window = self.changes(before, after)
        log = await self.admin.log()
        passes = _list_passes(log, s.restart_observe_interval)
        page_size = EngineSettings().list_page_size
        pages_per_group = max(1, math.ceil(math.ceil(n / s.buckets) / page_size))
        metrics = operator.metrics_text()
        result = {
            "objects": n,
            "seconds_to_healthy": healthy,
            "seconds_to_caught_up": caught_up,
            "reconciles": reconciled,
            "reconcile_results": {
                result: stats.prometheus_sum(metrics, "bucketsync_reconcile_total", result=result)
                for result in ("success", "stalled", "error")
            },
            "groups": s.buckets,
            "pages_per_group": pages_per_group,
            "remote_calls": window["remote"],
            "list_passes": passes.to_json(),
            "kube_writes": window["kube"],
            "kube_writes_total": sum(window["kube"].values()),
            "kube_gets": window["kube_gets"],
            "cpu_seconds": window["cpu_seconds"],
            "operator_cpu_seconds": operator_cpu,
            "rss_mb_caught_up": operator.rss_bytes() / 2**20,
        }
        return result, operator

    # --- 3. churn ---------------------------------------------------------------------------------

    async def churn(self, watcher: Watcher) -> dict[str, Any]:
        s = self.settings
        fleet = names(0, s.n)
        changed = max(1, round(s.n * s.churn_fraction))
        rng = random.Random(1)
        rounds = []
        for _ in range(s.churn_rounds):
            chosen = rng.sample(fleet, changed)
            expected = {
                name: int(
                    ((watcher.objects[name].get("status") or {}).get("metrics") or {}).get("filesSynced", 0)
                )
                + 1
                for name in chosen
            }
            seen: dict[str, float] = {}

            def reflected(expected: dict[str, int] = expected, seen: dict[str, float] = seen) -> bool:
                now = time.monotonic()
                for name, files in expected.items():
                    if name in seen:
                        continue
                    metrics = (watcher.objects[name].get("status") or {}).get("metrics") or {}
                    if int(metrics.get("filesSynced", 0)) >= files:
                        seen[name] = now
                return len(seen) == len(expected)

            await self.admin.clear_requests()
            before = await self.snapshot()
            bumped_at = time.monotonic()

            async def bump(name: str) -> None:
                sync_id = watcher.objects[name]["status"]["syncConfigId"]
                await self.admin.bump(sync_id, total_files_synced=1, total_bytes_synced=4096)

            await pool(chosen, 16, bump)
            await watcher.wait(reflected, 4 * s.observe_interval + 30, "churned statuses")
            # Wait out 1.5 intervals from the bump, so any second write for the same change lands here.
            await asyncio.sleep(max(0.0, bumped_at + 1.5 * s.observe_interval - time.monotonic()))
            after = await self.snapshot()
            window = self.changes(before, after)
            status_writes = window["kube"].get(stats.STATUS_PATCH, 0)
            rounds.append(
                {
                    "changed_syncs": changed,
                    "status_writes": status_writes,
                    "other_kube_writes": {k: v for k, v in window["kube"].items() if k != stats.STATUS_PATCH},
                    "remote_calls": window["remote"],
                    "seconds": window["seconds"],
                    "bump_to_status_seconds": stats.summarize([seen[name] - bumped_at for name in chosen]),
                    "cpu_seconds": window["cpu_seconds"],
                }
            )
        return {
            "rounds": rounds,
            "changed_per_round": changed,
            "status_writes_total": sum(r["status_writes"] for r in rounds),
            "changed_total": changed * len(rounds),
        }

    # --- 5. edit latency --------------------------------------------------------------------------

    async def edit_latency(self, watcher: Watcher) -> dict[str, Any]:
        s = self.settings
        fleet = names(0, s.n)
        step = max(1, len(fleet) // s.edits)
        chosen = fleet[::step][: s.edits]
        await asyncio.sleep(s.settle_seconds)
        before = await self.snapshot()
        served_latency: list[float] = []
        ready_latency: list[float] = []
        for index, name in enumerate(chosen):
            obj = watcher.objects[name]
            sync_id = obj["status"]["syncConfigId"]
            current = int(obj["spec"].get("batchSize", 50))
            wanted = 60 + index if 60 + index != current else 61 + index
            sent_wall = time.time()
            patched = await self.kube.merge_patch(
                bucketsyncs_path(watcher.namespace, name), {"spec": {"batchSize": wanted}}
            )
            returned_wall, returned_mono = time.time(), time.monotonic()
            generation = int(patched["metadata"]["generation"])
            served = await self._wait_served(sync_id, sent_wall, within=30 + 2 * s.observe_interval)
            served_latency.append(max(0.0, served - returned_wall))
            await watcher.wait(
                lambda name=name, generation=generation: (
                    watcher.ready_generation.get(name, (0, 0.0))[0] == generation
                ),
                30 + 2 * s.observe_interval,
                f"{name} Ready for generation {generation}",
            )
            ready_latency.append(max(0.0, watcher.ready_generation[name][1] - returned_mono))
            await asyncio.sleep(s.edit_spacing)
        await asyncio.sleep(s.settle_seconds)
        after = await self.snapshot()
        window = self.changes(before, after)
        writes = dict(window["kube"])
        writes[stats.MAIN_PATCH] = writes.get(stats.MAIN_PATCH, 0) - len(chosen)  # the benchmark's own
        return {
            "edits": len(chosen),
            "patch_to_remote_update_seconds": stats.summarize(served_latency),
            "patch_to_ready_seconds": stats.summarize(ready_latency),
            "remote_calls": window["remote"],
            "operator_kube_writes": {k: v for k, v in writes.items() if v},
        }

    async def _wait_served(self, sync_id: str, since_wall: float, within: float) -> float:
        """When (wall clock) the emulator served a PATCH of `sync_id` sent after `since_wall`."""
        deadline = time.monotonic() + within
        suffix = f"/syncs/{sync_id}"
        while time.monotonic() < deadline:
            for row in await self.admin.log(limit=50):
                if row["method"] != "PATCH" or not row["path"].rstrip("/").endswith(suffix):
                    continue
                at = datetime.fromisoformat(row["at"]).timestamp()
                if at >= since_wall:
                    return at
            await asyncio.sleep(0.02)
        raise TimeoutError(f"the emulator never served a PATCH of {sync_id}")

    # --- 4. memory --------------------------------------------------------------------------------

    async def memory(self) -> dict[str, Any]:
        s = self.settings
        await self.prepare_namespaces([MEMORY_NS])
        await self.admin.reset()
        operator = self.start_operator("memory", MEMORY_NS)
        watcher = Watcher(self.kube, MEMORY_NS)
        await watcher.start()
        points: list[dict[str, Any]] = []
        try:
            have = 0
            for target in s.memory_points:
                if target > have:
                    await self.create_objects(MEMORY_NS, range(have, target))
                    wanted = names(0, target)
                    await watcher.wait(
                        lambda wanted=wanted: all(n in watcher.first_ready for n in wanted),
                        s.ready_timeout,
                        f"{target} objects Ready",
                    )
                    have = target
                rss = await self.settle_rss(operator)
                points.append({"objects": target, "rss_bytes": rss, "rss_mb": rss / 2**20})
        finally:
            await watcher.stop()
            self.stop_operator(operator)
        slope = stats.linear_slope([(p["objects"], p["rss_bytes"] / 1024) for p in points])
        top = points[-1]
        return {
            "points": points,
            "slope_kb_per_object": slope,
            "rss_mb_at_max": top["rss_mb"],
            "objects_at_max": top["objects"],
            "rss_mb_extrapolated_to_1000": top["rss_mb"] + (slope or 0) * (1000 - top["objects"]) / 1024,
        }


def _list_passes(log: list[dict[str, Any]], interval: float) -> stats.ListPasses:
    calls = []
    for row in log:
        if row.get("endpoint") != "list":
            continue
        bucket = row["path"].split("/")[3]  # /v1/buckets/{bucket}/syncs/list
        calls.append((datetime.fromisoformat(row["at"]), bucket))
    return stats.list_passes(calls, interval)


def _floor_status(sync: dict[str, Any], bucket: str, generation: int) -> dict[str, Any]:
    """A status of the same shape and size as the operator's for a freshly created sync."""
    now = _iso_now()

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
            "observedGeneration": generation,
        }

    sync_id = sync["sync_config_id"]
    return {
        "observedGeneration": generation,
        "syncConfigId": sync_id,
        "bucketId": bucket,
        "mixpeekNamespace": MIXPEEK_NAMESPACE,
        "credentialsFingerprint": "sha256:0000000000000000",
        "remote": {
            "status": sync.get("status"),
            "isActive": sync.get("is_active"),
            "paused": sync.get("paused"),
            "consecutiveFailures": sync.get("consecutive_failures", 0),
            "syncRunCounter": sync.get("sync_run_counter", 0),
        },
        "metrics": {
            "filesDiscovered": sync.get("total_files_discovered", 0),
            "filesSynced": sync.get("total_files_synced", 0),
            "filesFailed": sync.get("total_files_failed", 0),
            "bytesSynced": sync.get("total_bytes_synced", 0),
            "batchesCreated": sync.get("batches_created", 0),
        },
        "conditions": [
            condition("Ready", "True", "Synced", f"remote sync {sync_id} matches generation {generation}"),
            condition("Reconciling", "False", "Succeeded", ""),
            condition("Stalled", "False", "Succeeded", ""),
            condition("RemoteHealthy", "True", "Active", f"Mixpeek status {sync.get('status')}"),
            condition("ReconcilePaused", "False", "Active", ""),
        ],
    }


def _created_event(namespace: str, meta: dict[str, Any]) -> dict[str, Any]:
    """A core/v1 Event like the operator's `Created` one."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "mixpeek.com/v1alpha1",
            "kind": "BucketSync",
            "namespace": namespace,
            "name": meta["name"],
            "uid": meta["uid"],
        },
        "type": "Normal",
        "reason": "Created",
        "message": "created remote sync",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": "bench-floor"},
        "reportingComponent": "bench-floor",
        "reportingInstance": "bench",
    }

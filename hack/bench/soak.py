"""`make bench-soak` and `make bench-buckets`: the operator's own state over months of churn, and
whether one crowded bucket costs more than many small ones. Benchmarks that print numbers, not
timed tests.

The engine runs in this process through its real code (engine, reconcile, observer, Secret
guard, credential store, work queue, Mixpeek client) against the Mixpeek emulator, started
through its CLI on a loopback port. Kubernetes is the in-memory API of memkube.py, so
thousands of objects can come and go in minutes and every internal map can be read directly
(`Engine.sizes()`).

soak     waves of objects created and deleted (each wave with its own Secrets, keys rotated
         while it runs); a few long-lived objects stay throughout. After each wave it prints
         the process RSS (before and after the operator's next heap trim) and the size of
         every internal map. Targets: after the first wave
         RSS grows at most 5 MB over the rest, and every map is back to what the long-lived
         objects need (the sizes after wave 1).
buckets  N objects in ONE bucket vs N over 50 buckets: time until all are Ready, then until
         all are deleted. Targets: one bucket ≤ 1.3x fifty buckets; delete ≤ 1.3x create.

    python -m hack.bench.soak soak [--waves 6 --objects 1000 --secrets 40 --rotations 20]
    python -m hack.bench.soak buckets [-n 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import gc
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from hack.bench.memkube import MemKube
from hack.bench.procs import CONNECTION_ID, MIXPEEK_NAMESPACE, bucket_ids
from hack.localcluster import spawn_emulator, terminate
from mixpeek_operator import kube as k8s
from mixpeek_operator.credentials import CredentialStore
from mixpeek_operator.engine import Engine, EngineSettings
from mixpeek_operator.heap import release_free_heap_forever
from mixpeek_operator.metrics import OperatorMetrics
from mixpeek_operator.secret_guard import SecretUseGuard

SECRETS, BUCKETSYNCS = k8s.SECRETS.plural, k8s.BUCKETSYNCS.plural  # MemKube keys objects by plural
SOAK_RSS_TARGET_MB = 5.0
ONE_BUCKET_RATIO_TARGET = 1.3
DELETE_RATIO_TARGET = 1.3
SETTLE_TIMEOUT = 1800.0
OBSERVE_INTERVAL = 2.0  # soak: listings refresh often, so a wave's end sees a fresh pass
IDLE_CLIENT_SECONDS = 1.0  # soak: clients of rotated-out keys close within a wave's end


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def api_key(index: int) -> str:
    return f"sk_test_soak_{index:04d}"


def secret(namespace: str, name: str, key: str, url: str) -> dict[str, Any]:
    data = {"apiKey": key, "namespace": MIXPEEK_NAMESPACE, "baseUrl": url}
    return {
        "metadata": {"namespace": namespace, "name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def bucketsync(namespace: str, name: str, bucket: str, secret_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "mixpeek.com/v1alpha1",
        "kind": "BucketSync",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {
            "bucketId": bucket,
            "connectionId": CONNECTION_ID,
            "sourcePath": f"bench/{name}",
            "credentialsRef": {"name": secret_name},
        },
    }


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


class Rig:
    """The engine over a MemKube, with a watch pump delivering the API's events to it."""

    def __init__(self, kube: MemKube, workers: int, observe_interval: float = 60.0) -> None:
        self.kube = kube

        async def read_secret(namespace: str, name: str) -> dict[str, Any] | None:
            return await kube.get_object(k8s.SECRETS, namespace, name)

        self.engine = Engine(
            kube=kube,
            credentials=CredentialStore(read_secret, default_secret=None),
            metrics=OperatorMetrics(),
            settings=EngineSettings(
                workers=workers,
                observe_interval=observe_interval,
                rate_per_second=10000.0,
                burst=10000,
                idle_client_seconds=IDLE_CLIENT_SECONDS,
            ),
            secret_guard=SecretUseGuard(kube),
        )
        self._pump = asyncio.create_task(self._deliver(), name="watch-pump")
        # The operator process's own heap trim (runtime.py), on the soak's compressed clock.
        self._heap_trim = asyncio.create_task(release_free_heap_forever(observe_interval), name="heap-trim")
        self.engine.start()

    async def _deliver(self) -> None:
        while True:
            plural, event, body = await self.kube.watch.get()
            if plural == SECRETS:
                await self.engine.on_secret_event(event, body)
            else:
                await self.engine.on_object_event(event, body)

    async def stop(self) -> None:
        self._pump.cancel()
        self._heap_trim.cancel()
        await asyncio.gather(self._pump, self._heap_trim, return_exceptions=True)
        await self.engine.stop()

    def ready(self, keys: Iterable[tuple[str, str]]) -> bool:
        for namespace, name in keys:
            body = self.kube.objects.get((BUCKETSYNCS, namespace, name))
            conditions = (body or {}).get("status", {}).get("conditions") or []
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return False
        return True

    async def settle(self, done: Callable[[], bool], what: str) -> float:
        """Poll `done` (the API's state, as a user's `kubectl wait` would) until it holds."""
        started = time.monotonic()
        while not done():
            if time.monotonic() - started > SETTLE_TIMEOUT:
                raise TimeoutError(f"{what}: not done after {SETTLE_TIMEOUT:.0f}s")
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    def _busy(self) -> bool:
        queue = self.engine.queue
        return bool(len(queue) or queue.sizes()["queue.active"] or not self.kube.watch.empty())

    async def quiet(self) -> None:
        """Wait until nothing is queued or running, and background closes are done."""
        await self.settle(lambda: not self._busy(), "the engine to go quiet")
        await self.engine.wait_background()


# --- soak ---------------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, url: str) -> int:
    kube, rotation = MemKube(), 0
    rig = Rig(kube, args.workers, observe_interval=OBSERVE_INTERVAL)
    namespaces = [f"soak-{i}" for i in range(args.namespaces)]
    buckets = bucket_ids(args.buckets)
    # The long-lived: one Secret per namespace, a few objects each; rotated with the rest.
    for namespace in namespaces:
        kube.create(SECRETS, secret(namespace, "long-lived", api_key(0), url))
    long_lived = [(namespaces[i % len(namespaces)], f"long-{i}") for i in range(args.long_lived)]
    for i, (namespace, name) in enumerate(long_lived):
        kube.create(BUCKETSYNCS, bucketsync(namespace, name, buckets[i % len(buckets)], "long-lived"))
    await rig.settle(lambda: rig.ready(long_lived), "long-lived objects Ready")
    rows: list[dict[str, Any]] = []
    first_rss: float | None = None
    for wave in range(args.waves):
        started = time.monotonic()
        wave_secrets = [(namespaces[j % len(namespaces)], f"creds-w{wave}-{j}") for j in range(args.secrets)]
        for namespace, name in wave_secrets:
            kube.create(SECRETS, secret(namespace, name, api_key(0), url))
        objects: list[tuple[str, str]] = []
        for i in range(args.objects):
            namespace, secret_name = wave_secrets[i % len(wave_secrets)]
            objects.append((namespace, f"w{wave}-o{i}"))
            body = bucketsync(namespace, objects[-1][1], buckets[i % len(buckets)], secret_name)
            kube.create(BUCKETSYNCS, body)
        wave_ready = functools.partial(rig.ready, objects)
        await rig.settle(wave_ready, f"wave {wave}: {args.objects} objects Ready")
        # Key rotations while the wave lives, each giving one Secret a key never used before:
        # every long-lived Secret first (so from wave 1 on the long-lived objects need one
        # client per namespace), then the wave's own.
        rotated = [*((namespace, "long-lived") for namespace in namespaces), *wave_secrets]
        for r in range(args.rotations):
            rotation += 1
            namespace, name = rotated[r % len(rotated)]
            kube.update(SECRETS, namespace, name, secret(namespace, name, api_key(rotation), url))
            await rig.quiet()
        await rig.settle(lambda: wave_ready() and rig.ready(long_lived), f"wave {wave}: after rotations")  # noqa: B023
        for namespace, name in objects:
            kube.delete(BUCKETSYNCS, namespace, name)
        for namespace, name in wave_secrets:
            kube.delete(SECRETS, namespace, name)  # held by the in-use finalizer until released
        await rig.settle(
            lambda: kube.count(BUCKETSYNCS) == len(long_lived) and kube.count(SECRETS) == len(namespaces),
            f"wave {wave}: objects and Secrets deleted",
        )
        await rig.quiet()
        # The listings remember syncs deleted through another credential's scope (the objects
        # moved with their key) until their next pass: measure after one.
        await asyncio.sleep(2.5 * OBSERVE_INTERVAL)
        await rig.quiet()
        gc.collect()
        untrimmed = rss_mb()
        # What the wave freed stays in the C heap until the operator's next heap trim (once a
        # minute in the operator, every OBSERVE_INTERVAL here): read RSS after one tick of it.
        await asyncio.sleep(1.5 * OBSERVE_INTERVAL)
        rss = rss_mb()
        first_rss = rss if first_rss is None else first_rss
        sizes = rig.engine.sizes()
        rows.append(
            {
                "wave": wave + 1,
                "seconds": time.monotonic() - started,
                "rss_mb": rss,
                "rss_untrimmed_mb": untrimmed,
                # Python objects alive: flat when nothing leaks, whatever the allocator keeps.
                "python_blocks": sys.getallocatedblocks(),
                **sizes,
            }
        )
        log(
            f"wave {wave + 1}/{args.waves}: {args.objects} objects, {len(wave_secrets)} Secrets, "
            f"{rotation} rotations so far, {rows[-1]['seconds']:.1f}s, "
            f"RSS {rss:.1f} MB ({untrimmed:.1f} before the trim)"
        )
    await rig.stop()
    return report_soak(args, rows)


def report_soak(args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
    maps = [
        name
        for name in rows[0]
        if name not in ("wave", "seconds", "rss_mb", "rss_untrimmed_mb", "python_blocks")
    ]
    total_objects = args.waves * args.objects
    print(
        f"\n## Soak: {args.waves} waves x {args.objects} objects ({total_objects} created and deleted), "
        f"{args.waves * args.secrets} Secrets, {args.waves * args.rotations} key rotations, "
        f"{args.long_lived} long-lived objects\n"
    )
    print("| map | " + " | ".join(f"wave {row['wave']}" for row in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    print("| seconds | " + " | ".join(f"{row['seconds']:.1f}" for row in rows) + " |")
    print("| RSS MB | " + " | ".join(f"{row['rss_mb']:.1f}" for row in rows) + " |")
    print(
        "| RSS MB before the heap trim | "
        + " | ".join(f"{row['rss_untrimmed_mb']:.1f}" for row in rows)
        + " |"
    )
    print("| Python blocks | " + " | ".join(str(row["python_blocks"]) for row in rows) + " |")
    for name in maps:
        print(f"| {name} | " + " | ".join(str(row[name]) for row in rows) + " |")
    growth = max(row["rss_mb"] for row in rows[1:]) - rows[0]["rss_mb"] if len(rows) > 1 else 0.0
    # The work queue's heap drops stale entries lazily (at most 64 past the live ones).
    drifted = [
        name for name in maps if name != "queue.heap" and any(row[name] != rows[0][name] for row in rows[1:])
    ]
    rss_ok, maps_ok = growth <= SOAK_RSS_TARGET_MB, not drifted
    print(
        f"\nRSS growth after wave 1: {growth:+.1f} MB (target ≤ {SOAK_RSS_TARGET_MB:.0f} MB) "
        f"{'PASS' if rss_ok else 'MISS'}"
    )
    print(
        "every map back to what the long-lived objects need after each wave: "
        + ("PASS" if maps_ok else f"MISS ({', '.join(drifted)})")
    )
    return 0 if rss_ok and maps_ok else 1


# --- one bucket vs fifty ------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One phase of the buckets scenario: wall seconds, and CPU seconds of the operator (this
    process) and of the emulator, which the machine's other load does not inflate."""

    wall: float
    cpu: float

    def __truediv__(self, other: Phase) -> tuple[float, float]:
        return self.wall / other.wall, self.cpu / other.cpu


class Meter:
    def __init__(self, emulator_pid: int) -> None:
        self._processes = [psutil.Process(), psutil.Process(emulator_pid)]

    def _cpu(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self._processes)

    async def measure(
        self, rig: Rig, start: Callable[[], None], done: Callable[[], bool], what: str
    ) -> Phase:
        wall, cpu = time.monotonic(), self._cpu()
        start()
        await rig.settle(done, what)
        return Phase(time.monotonic() - wall, self._cpu() - cpu)


async def bulk(
    n: int, buckets: list[str], url: str, args: argparse.Namespace, meter: Meter
) -> tuple[Phase, Phase]:
    """`n` new objects over `buckets` until all are Ready, then deleted until all are gone."""
    kube = MemKube()
    rig = Rig(kube, args.workers)
    kube.create(SECRETS, secret("bench", "creds", api_key(0), url))
    await rig.quiet()
    objects = [("bench", f"obj-{i:05d}") for i in range(n)]

    def create_all() -> None:
        for i, (namespace, name) in enumerate(objects):
            kube.create(BUCKETSYNCS, bucketsync(namespace, name, buckets[i % len(buckets)], "creds"))

    def delete_all() -> None:
        for namespace, name in objects:
            kube.delete(BUCKETSYNCS, namespace, name)

    create = await meter.measure(rig, create_all, lambda: rig.ready(objects), f"{n} objects Ready")
    await rig.quiet()
    delete = await meter.measure(rig, delete_all, lambda: kube.count(BUCKETSYNCS) == 0, f"{n} deleted")
    await rig.stop()
    return create, delete


async def buckets_scenario(args: argparse.Namespace, url: str, emulator_pid: int) -> int:
    meter = Meter(emulator_pid)
    results: dict[str, tuple[Phase, Phase]] = {}
    for label, buckets in (("50 buckets", bucket_ids(50)), ("1 bucket", bucket_ids(1))):
        log(f"{args.n} objects over {label}: create, then delete")
        results[label] = await bulk(args.n, buckets, url, args, meter)
        create, delete = results[label]
        log(f"{label}: Ready in {create.wall:.1f}s ({create.cpu:.1f} CPU s), deleted in {delete.wall:.1f}s")
    (many_create, many_delete), (one_create, one_delete) = results["50 buckets"], results["1 bucket"]
    checks = [
        ("one bucket / fifty, create", one_create / many_create, ONE_BUCKET_RATIO_TARGET),
        ("one bucket / fifty, delete", one_delete / many_delete, ONE_BUCKET_RATIO_TARGET),
        ("delete / create, one bucket", one_delete / one_create, DELETE_RATIO_TARGET),
        ("delete / create, fifty buckets", many_delete / many_create, DELETE_RATIO_TARGET),
    ]
    print(f"\n## {args.n} objects: one bucket vs fifty\n")
    print("| layout | create → all Ready: wall s (CPU s) | delete → all gone: wall s (CPU s) |")
    print("|---|---:|---:|")
    for label, (create, delete) in results.items():
        print(f"| {label} | {create.wall:.1f} ({create.cpu:.1f}) | {delete.wall:.1f} ({delete.cpu:.1f}) |")
    print("\n| ratio | wall | CPU (operator + emulator) | target | |\n|---|---:|---:|---:|---|")
    for name, (wall, cpu), target in checks:
        verdict = (
            "PASS" if wall <= target else ("PASS by CPU (a loaded machine)" if cpu <= target else "MISS")
        )
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | ≤ {target} | {verdict} |")
    return 0 if all(min(ratios) <= target for _, ratios, target in checks) else 1


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=("soak", "buckets"))
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--waves", type=int, default=6)
    parser.add_argument("--objects", type=int, default=1000, help="objects per wave")
    parser.add_argument("--secrets", type=int, default=40, help="Secrets per wave")
    parser.add_argument("--rotations", type=int, default=20, help="key rotations per wave")
    parser.add_argument("--long-lived", type=int, default=50)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--buckets", type=int, default=20)
    parser.add_argument("-n", type=int, default=5000, help="objects in the buckets scenario")
    args = parser.parse_args(argv)
    keys = 1 + args.waves * args.rotations
    seed = {
        "api_keys": [
            {"key": api_key(i), "user_id": "usr_bench", "internal_id": "org_bench"} for i in range(keys)
        ],
        "namespaces": [
            {
                "id": "ns_bench",
                "name": MIXPEEK_NAMESPACE,
                "buckets": [{"id": bucket} for bucket in bucket_ids(max(args.buckets, 50))],
                "connections": [{"id": CONNECTION_ID, "provider": "s3"}],
            }
        ],
    }
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as workdir:
        # The emulator persists as users run it for demos: every change kept across a crash.
        proc, url = spawn_emulator(
            Path(workdir), seed, "--log-level", "warning", "--state-file", f"{workdir}/state.json"
        )
        try:
            if args.scenario == "soak":
                return asyncio.run(soak(args, url))
            return asyncio.run(buckets_scenario(args, url, proc.pid))
        finally:
            terminate(proc)


if __name__ == "__main__":
    sys.exit(main())

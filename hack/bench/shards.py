"""`make bench-shards`: label-assigned shards divide memory and watch traffic (issue 21).

Numbers, not a timed test: every figure is printed with its ratio to a baseline measured in the
same run, on the same control plane, emulator and objects. Stages:

0. empty     one sharded replica in a ring and namespace of its own, no object: its settled RSS
             (the intercept of the projection below).
1. create    N BucketSyncs (default 40,000) over the buckets (default 40, one credentials Secret),
             created `--create-concurrency` at a time with no operator running; the chart's
             admission policy adds the finalizer at CREATE, as for users.
2. shards    R replicas (default 4) `run --sharding --leader-election-identity shard-<i>`, started
             together as a Deployment's pods are, until
             every object is Ready and the fleet is converged (every object owned by a live
             member, none draining, the owned counts summing to N, no queue). Per replica: settled
             RSS, `mixpeek_operator_shard_owned_objects`, BucketSync watch events
             (`mixpeek_operator_watch_events_total{resource="bucketsyncs"}`), CPU seconds.
3. join      replica R+1 joins while a few hundred objects get spec edits: the fraction of objects
             whose owner label changed (target <= 0.25, ideal 1/(R+1)), the time until the moves
             finished and everything is Ready, and double writes = 0: from the emulator's request
             log (each entry names the replica in `user_agent` and the sync in `sync_id`), no
             sync written by two replicas at once or by the old owner after the new one; and no
             object with two remote syncs (syncs per owner uid).
4. kill      SIGKILL of one replica (not the assigner): the fraction moved (exactly the victim's
             objects), the survivors' objects moved (0), and the time until the fleet converged
             again, next to the lease duration and the time the moved objects took to reconcile.
5. baseline  every replica stopped, ONE replica of the same ring (`baseline`, same flags) takes
             every object (each moves in one write: its owner is gone); converged as above, then
             its RSS and watch events. Ratios: shard RSS (stage 2) / baseline RSS (target <= 0.35),
             watch events / (N / R) (about 1, see below). Last, so the objects move once.

Every replica, the baseline's too, runs in a virtualenv with the image's packages and nothing
else (hack/bench/runtime.py): in the development virtualenv httpx also loads its command-line
interface (rich, pygments), 3.5 MB per process that no pod has.

The baseline is one replica of the same sharded mode, not a plain `run`: the claim is that
sharding divides what one replica holds, so both sides must cache objects through the same code
(the label-filtered list-watch, the engine's records, the assigner's placements). A plain `run`
caches through kopf's watch instead, a different per-object cost, and the ratio would mix the
two. The baseline replica also runs the assigner, as one of the R shards does (marked in the
table).

Watch events count every object a replica's own watches received, the initial lists included;
each object arrives once when it is labelled for the replica and again for each of its own status
writes (its reconciles), so events / (N / R) is about 1 + status writes per object; the same
figure for the baseline is printed next to it.

Projection inputs: the per-object RSS slope, (baseline RSS - empty replica RSS) / N, and the
empty replica's RSS, to project a replica's memory to 100k and 1M objects over R replicas.

    python -m hack.bench.shards [--objects 40000] [--replicas 4] [--buckets 40]
                                [--lease-duration 15] [--sharding-mode labels|rendezvous]

`--objects 2000` is a quick trial. Writes bench-results/shards-<timestamp>.json and
bench-results/latest-shards.json (a run with other flags than the defaults is an experiment:
shards-<timestamp>-experiment.json only). Rendezvous mode (today's sharding, every replica
watching everything) runs the same stages for comparison; it has no owner labels, so the
moved fractions read n/a there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from hack.bench import policy, stats
from hack.bench.kube import Watcher, bucketsyncs_path
from hack.bench.main import Judge, bench_session, environment, log, write_results
from hack.bench.procs import Operator
from hack.bench.runtime import PACKAGES, runtime_python
from hack.bench.scenarios import Bench, Settings, pool
from hack.localcluster import REPO_ROOT, ControlPlane
from mixpeek_operator.constants import OWNER_UID_KEY
from mixpeek_operator.coordination.assignment import DRAIN_LABEL, OWNER_LABEL
from mixpeek_operator.settings import DEFAULTS

NAMESPACE = "bench-shards"
RING = "bench-shards"
EMPTY_NAMESPACE = "bench-shards-empty"
RETRY_PERIOD = 2.0
BASELINE = "baseline"  # the one replica holding everything (stage 5)
RSS_RATIO_TARGET = 0.35
JOIN_MOVED_TARGET = 0.25
REQUEST_LOG_SIZE = 200_000  # the join window's every request, with room to spare
STABLE_POLLS = 3  # converged at this many polls in a row (a second apart)


@dataclass(frozen=True)
class ShardSettings:
    objects: int = 40_000
    replicas: int = 4
    buckets: int = 40
    lease_duration: float = 15.0
    mode: str = "labels"
    churn_objects: int = 300
    create_concurrency: int = 64
    # Per replica, the baseline's too: 4 replicas x 32 workers on a 2-core API server queue
    # every request (their Lease renewals included) for seconds; 8 each keeps the fleet's
    # concurrency at the single-replica benchmarks' 32.
    workers: int = 8
    ready_timeout: float = 3600.0
    seed: int = 21
    # False (--no-handovers): stages 0-2 and the baseline only, memory and watch events.
    handovers: bool = True

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @property
    def labels(self) -> bool:
        return self.mode == "labels"

    def bench(self) -> Settings:
        """The shared benchmark settings (scenarios.Settings) this run's Bench works with."""
        return Settings(
            size="shards",
            n=self.objects,
            buckets=self.buckets,
            memory_points=(),
            churn_rounds=0,
            workers=self.workers,
            create_concurrency=self.create_concurrency,
            ready_timeout=self.ready_timeout,
            emulator_args=("--request-log-size", str(REQUEST_LOG_SIZE)),
            # The operator's default (60 s), not the single-replica benchmarks' 5 s: listing 40
            # buckets of 1,000 syncs every 5 s (8,000 syncs a second through the emulator and
            # the replicas' parsers) starved this 2-core machine, and the Lease renewals with it.
            observe_interval=DEFAULTS.observe_interval,
        )


@dataclass
class OwnerWatcher(Watcher):
    """The driver's watch of every object, also keeping each object's owner label."""

    owners: dict[str, str | None] = field(default_factory=dict)
    draining: set[str] = field(default_factory=set)
    moved_at: dict[str, list[float]] = field(default_factory=dict)  # name -> when its owner changed

    def _observe(self, obj: dict[str, Any], now: float) -> None:
        super()._observe(obj, now)
        name = obj["metadata"]["name"]
        labels = obj["metadata"].get("labels") or {}
        owner = labels.get(OWNER_LABEL)
        previous = self.owners.get(name)
        if previous is not None and owner is not None and owner != previous:
            self.moved_at.setdefault(name, []).append(now)
        self.owners[name] = owner
        if DRAIN_LABEL in labels:
            self.draining.add(name)
        else:
            self.draining.discard(name)

    def last_move(self) -> float | None:
        return max((times[-1] for times in self.moved_at.values()), default=None)

    def first_move(self) -> float | None:
        return min((times[0] for times in self.moved_at.values()), default=None)


class Fleet:
    """The replicas of the ring, by identity."""

    def __init__(self, bench: Bench, settings: ShardSettings, python: Path) -> None:
        self.bench = bench
        self.settings = settings
        self.python = python  # the image's packages (runtime.py), for every replica alike
        self.replicas: dict[str, Operator] = {}

    def flags(self, identity: str, namespace: str = NAMESPACE, ring: str = RING) -> list[str]:
        lease = self.settings.lease_duration
        return [
            "--sharding",
            "--sharding-mode",
            self.settings.mode,
            "--leader-election-namespace",
            namespace,
            "--leader-election-id",
            ring,
            "--leader-election-identity",
            identity,
            "--leader-election-lease-duration",
            f"{lease:g}",
            "--leader-election-renew-deadline",
            f"{lease * 2 / 3:g}",
            "--leader-election-retry-period",
            f"{RETRY_PERIOD:g}",
        ]

    def start_all(self, identities: list[str]) -> None:
        """Start the replicas together, as a Deployment's pods do, then wait for each."""
        started = [self.start(identity, wait_healthy=False) for identity in identities]
        for operator in started:
            operator.wait_healthy()

    def start(
        self, identity: str, namespace: str = NAMESPACE, ring: str = RING, *, wait_healthy: bool = True
    ) -> Operator:
        s = self.bench.settings
        operator = Operator.start(
            self.bench.workdir,
            f"{identity}-{len(self.bench.operators)}",
            self.bench.kubeconfig,
            namespace,
            workers=s.workers,
            observe_interval=s.observe_interval,
            rate_limit=s.rate_limit,
            rate_burst=s.rate_burst,
            extra_args=self.flags(identity, namespace, ring),
            wait_healthy=wait_healthy,
            python=self.python,
        )
        self.bench.operators.append(operator)  # stopped by Bench.aclose whatever happens
        self.bench.cpu.track(identity, operator.pid)
        self.replicas[identity] = operator
        return operator

    def stop(self, identity: str) -> None:
        self.replicas.pop(identity).stop()
        self.bench.cpu.untrack(identity)

    def kill(self, identity: str) -> None:
        operator = self.replicas.pop(identity)
        operator.proc.send_signal(signal.SIGKILL)
        operator.proc.wait(timeout=30)
        self.bench.cpu.untrack(identity)

    def metric(self, identity: str, name: str, **labels: str) -> float:
        return stats.prometheus_sum(self.replicas[identity].metrics_text(), name, **labels)

    def owned(self) -> dict[str, float]:
        return {i: self.metric(i, "mixpeek_operator_shard_owned_objects") for i in self.replicas}

    def assigner(self) -> str | None:
        running = [i for i in self.replicas if self.metric(i, "mixpeek_operator_shard_assigner") == 1]
        return running[0] if running else None

    async def figures(self) -> dict[str, dict[str, Any]]:
        """Per replica: settled RSS (together: the settle pauses overlap), owned objects, watch
        events, CPU seconds of its life so far, whether it runs the assigner."""
        rss = await asyncio.gather(*(self.bench.settle_rss(op) for op in self.replicas.values()))
        result = {}
        for (identity, operator), settled in zip(self.replicas.items(), rss, strict=True):
            times = psutil.Process(operator.pid).cpu_times()
            result[identity] = {
                "rss_bytes": settled,
                "rss_mb": settled / 2**20,
                "owned_objects": self.metric(identity, "mixpeek_operator_shard_owned_objects"),
                "watch_events": self.metric(
                    identity, "mixpeek_operator_watch_events_total", resource="bucketsyncs"
                ),
                "secret_watch_events": self.metric(
                    identity, "mixpeek_operator_watch_events_total", resource="secrets"
                ),
                "cpu_seconds": round(times.user + times.system, 2),
                "assigner": self.metric(identity, "mixpeek_operator_shard_assigner") == 1,
            }
        return result


async def converge(
    fleet: Fleet,
    watcher: OwnerWatcher,
    within: float,
    what: str,
    also: Callable[[], bool] = lambda: True,
) -> float:
    """Seconds until the fleet is converged, STABLE_POLLS polls in a row: every object Ready and
    (label mode) owned by a live replica with no drain pending, the owned counts summing to N,
    nothing queued, and `also`."""
    n = fleet.settings.objects
    began = time.monotonic()
    streak = 0
    while streak < STABLE_POLLS:
        if time.monotonic() - began > within:
            raise TimeoutError(f"{what}: not converged after {within:.0f}s ({state(fleet, watcher)})")
        await asyncio.sleep(1.0)
        done = (
            len(watcher.objects) >= n
            and all(ready_flags(watcher))
            and (not fleet.settings.labels or labels_settled(fleet, watcher))
            and sum(fleet.owned().values()) == n
            and all(op.queued() == 0 for op in fleet.replicas.values())
            and also()
        )
        streak = streak + 1 if done else 0
    return time.monotonic() - began - STABLE_POLLS


def ready_flags(watcher: Watcher) -> list[bool]:
    """Per object: Ready for its current generation."""
    return [
        watcher.ready_generation.get(name, (-1, 0.0))[0] == int(obj["metadata"].get("generation") or 0)
        for name, obj in watcher.objects.items()
    ]


def labels_settled(fleet: Fleet, watcher: OwnerWatcher) -> bool:
    live = set(fleet.replicas)  # the identities are valid label values: the label is the identity
    return not watcher.draining and all(owner in live for owner in watcher.owners.values())


def state(fleet: Fleet, watcher: OwnerWatcher) -> str:
    owners = Counter(watcher.owners.values())
    ready = sum(ready_flags(watcher))
    with contextlib.suppress(OSError):
        return (
            f"ready {ready}/{len(watcher.objects)}, labels {dict(owners)}, draining {len(watcher.draining)}, "
            f"owned {fleet.owned()}, queued {[op.queued() for op in fleet.replicas.values()]}"
        )
    return f"ready {ready}/{len(watcher.objects)}, labels {dict(owners)}"


async def churn(bench: Bench, names: list[str], spacing: float, stop: asyncio.Event) -> dict[str, int]:
    """Rounds of spec edits of each of `names`, `spacing` seconds apart, until `stop` is set and
    one more round after it; name -> its last generation."""
    generation: dict[str, int] = {}
    for round_ in itertools.count():
        last = stop.is_set()

        async def edit(name: str, size: int = 60 + round_ % 40) -> None:
            patched = await bench.kube.merge_patch(
                bucketsyncs_path(NAMESPACE, name), {"spec": {"batchSize": size}}
            )
            generation[name] = int(patched["metadata"]["generation"])

        await pool(names, 16, edit)
        if last:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), spacing)
    return generation


async def duplicate_syncs(bench: Bench, uids: set[str]) -> dict[str, int]:
    """Remote syncs per owner uid of ours: total, owners with more than one, owners with none."""
    per_owner = Counter(
        (s.get("metadata") or {}).get(OWNER_UID_KEY)
        for s in await bench.admin.syncs()
        if (s.get("metadata") or {}).get(OWNER_UID_KEY) in uids
    )
    return {
        "remote_syncs": sum(per_owner.values()),
        "owners_with_two_or_more": sum(1 for count in per_owner.values() if count > 1),
        "owners_without_one": len(uids - set(per_owner)),
    }


async def run(s: ShardSettings, plane: ControlPlane, workdir: Path, pids: list[int]) -> dict[str, Any]:
    n, replicas = s.objects, s.replicas
    python = await asyncio.to_thread(runtime_python)
    bench = Bench.start(s.bench(), plane, workdir, pids)
    fleet = Fleet(bench, s, python)
    watcher = OwnerWatcher(bench.kube, NAMESPACE)
    identities = [f"shard-{index}" for index in range(replicas)]
    results: dict[str, Any] = {}
    try:
        await bench.prepare_namespaces([NAMESPACE, EMPTY_NAMESPACE])
        await asyncio.to_thread(policy.install, plane, [NAMESPACE], workdir)
        log(f"admission policy in effect after {await policy.wait_in_effect(bench.kube, NAMESPACE):.1f}s")

        log("0. empty: one replica, no object")
        empty = fleet.start("empty-0", EMPTY_NAMESPACE, f"{RING}-empty")
        results["empty_replica_rss_bytes"] = await bench.settle_rss(empty)
        fleet.stop("empty-0")

        log(f"1. create: {n} objects over {s.buckets} buckets, {s.create_concurrency} at a time")
        await watcher.start()
        began = time.monotonic()
        await bench.create_objects(NAMESPACE, range(n))
        results["create_seconds"] = time.monotonic() - began
        uids = {obj["metadata"]["uid"] for obj in watcher.objects.values()}

        log(f"2. shards: {replicas} replicas until all {n} are Ready")
        began = time.monotonic()
        fleet.start_all(identities)
        await converge(fleet, watcher, s.ready_timeout, "shards")
        results["shards"] = {
            "seconds_to_all_ready": time.monotonic() - began,
            "replicas": await fleet.figures(),
        }
        log(f"2. shards: all Ready after {results['shards']['seconds_to_all_ready']:.1f}s")

        if s.handovers:
            results["join"] = await join(s, bench, fleet, watcher, uids, f"shard-{replicas}")
            results["kill"] = await kill(s, fleet, watcher)

        # Last, so its moves happen once: every object moves to it in one write (its owners
        # are gone), where a baseline between the shards would move them all twice more.
        log("5. baseline: one replica holds every object")
        for identity in list(fleet.replicas):
            fleet.stop(identity)
        began = time.monotonic()
        fleet.start(BASELINE)
        await converge(fleet, watcher, s.ready_timeout, "baseline")
        results["baseline"] = {
            "seconds_to_caught_up": time.monotonic() - began,
            "replica": (await fleet.figures())[BASELINE],
        }
        fleet.stop(BASELINE)
    finally:
        await watcher.stop()
        await bench.aclose(pids)
    return results


async def join(
    s: ShardSettings, bench: Bench, fleet: Fleet, watcher: OwnerWatcher, uids: set[str], newcomer: str
) -> dict[str, Any]:
    n = s.objects
    log(f"3. join: {newcomer}, with spec edits every {s.lease_duration / 2:g}s")
    before = dict(watcher.owners)
    watcher.moved_at.clear()
    await bench.admin.clear_requests()
    chosen = random.Random(s.seed).sample(sorted(watcher.objects), min(s.churn_objects, n // 5))
    began = time.monotonic()
    fleet.start(newcomer)
    # Edits all along: before, during and after the moves (the assigner moves objects to a
    # member once it has been live for a lease duration), and once more after they finished.
    stop = asyncio.Event()
    edits = asyncio.create_task(churn(bench, chosen, s.lease_duration / 2, stop))

    def newcomer_owns() -> bool:
        return fleet.metric(newcomer, "mixpeek_operator_shard_owned_objects") > 0

    try:
        await converge(fleet, watcher, s.ready_timeout, "join", newcomer_owns)
        stop.set()
        generation = await edits
        await converge(fleet, watcher, s.ready_timeout, "join, the last edits")
    finally:
        edits.cancel()
    converged = time.monotonic() - began
    last_move = watcher.last_move()
    moved = stats.moves(before, dict(watcher.owners))
    served = sum((await bench.admin.counts()).values())  # before the log: it only grows
    request_log = await bench.admin.log()
    conflicts = stats.write_conflicts(stats.remote_writes(request_log))
    edited_ready = all(
        watcher.ready_generation.get(name, (-1, 0.0))[0] >= g for name, g in generation.items()
    )
    result = {
        "newcomer": newcomer,
        "moved_objects": len(moved),
        "moved_fraction": len(moved) / n if s.labels else None,
        "moved_to_newcomer": sum(1 for _, new in moved.values() if new == newcomer),
        "moved_twice_or_more": sum(1 for times in watcher.moved_at.values() if len(times) > 1),
        "seconds_to_moves_finished": (last_move - began) if last_move else None,
        "seconds_to_converged": converged,
        "edited_objects": len(chosen),
        "edits_ready_at_their_generation": edited_ready,
        "remote": conflicts.to_json(),
        "request_log_complete": len(request_log) >= served,
        **await duplicate_syncs(bench, uids),
        "replicas": await fleet.figures(),
    }
    log(
        f"4. join: moved {len(moved)} ({len(moved) / n:.1%}); double writes {conflicts.double_writes} "
        f"over {conflicts.writes} writes ({len(conflicts.handed_over)} syncs written on both sides)"
    )
    return result


async def kill(s: ShardSettings, fleet: Fleet, watcher: OwnerWatcher) -> dict[str, Any]:
    n = s.objects
    assigner = fleet.assigner()
    victim = next(i for i in sorted(fleet.replicas) if i != assigner)
    owned_before = fleet.owned()
    log(f"4. kill: SIGKILL {victim} ({owned_before[victim]:.0f} objects; the assigner is {assigner})")
    before = dict(watcher.owners)
    watcher.moved_at.clear()
    reconciles = {i: fleet.metric(i, "bucketsync_reconcile_total") for i in fleet.replicas if i != victim}
    began = time.monotonic()
    fleet.kill(victim)
    await converge(fleet, watcher, s.ready_timeout, "kill")
    converged = time.monotonic() - began
    last_move = watcher.last_move()
    moved = stats.moves(before, dict(watcher.owners))
    from_victim = sum(1 for old, _ in moved.values() if old == victim)
    victims = sum(1 for owner in before.values() if owner == victim)
    labels_moved = (last_move - began) if last_move else None
    first_move = watcher.first_move()
    detected = (first_move - began) if first_move else None
    result = {
        "victim": victim,
        "assigner": assigner,
        "victim_owned_objects": owned_before[victim],
        "moved_objects": len(moved),
        "moved_fraction": len(moved) / n if s.labels else None,
        "victim_fraction": victims / n if s.labels else owned_before[victim] / n,
        "moved_only_the_victim_s": s.labels and from_victim == victims == len(moved),
        "survivors_objects_moved": len(moved) - from_victim,
        "seconds_to_first_move": detected,
        "seconds_to_labels_moved": labels_moved,
        # From the first label moved to all Ready: moving the labels and reconciling the objects.
        "seconds_handling_moved_objects": (converged - detected) if detected else None,
        "retry_period_seconds": RETRY_PERIOD,
        "seconds_to_converged": converged,
        "seconds_reconciling_moved_objects": (converged - labels_moved) if labels_moved else None,
        "lease_duration_seconds": s.lease_duration,
        "reconciles_by_survivors": sum(
            fleet.metric(i, "bucketsync_reconcile_total") - count for i, count in reconciles.items()
        ),
    }
    log(f"4. kill: {len(moved)} moved ({result['survivors_objects_moved']} of survivors); {converged:.1f}s")
    return result


def evaluate(s: ShardSettings, results: dict[str, Any]) -> tuple[list[dict[str, Any]], list[stats.Row]]:
    judge = Judge()
    rows: list[stats.Row] = []
    n, replicas = s.objects, s.replicas
    share = n / replicas
    base = results["baseline"]["replica"]
    rows.append(
        stats.Row(
            "Baseline",
            f"one replica holding all {n:,} (same mode, {base['owned_objects']:.0f} owned): "
            "RSS; watch events",
            f"{base['rss_mb']:.0f} MB; {base['watch_events']:,.0f}",
            "",
            "",
            "",
            f"caught up in {stats.format_seconds(results['baseline']['seconds_to_caught_up'])}",
        )
    )
    fleet_events = sum(f["watch_events"] for f in results["shards"]["replicas"].values())
    for identity, figures in results["shards"]["replicas"].items():
        rss_ratio = stats.ratio(figures["rss_bytes"], base["rss_bytes"])
        events = stats.ratio(figures["watch_events"], share)
        # An unfiltered watch would receive every replica's events: the fleet's sum.
        event_share = figures["watch_events"] / fleet_events if fleet_events else 0.0
        rows.append(
            stats.Row(
                f"{replicas} shards",
                f"{identity}{' (assigner)' if figures['assigner'] else ''}: RSS / baseline; "
                f"owned {figures['owned_objects']:.0f} ({figures['owned_objects'] / n:.1%}); watch events, "
                f"their share of the fleet's {fleet_events:,.0f}, / (N/{replicas}) "
                f"(baseline: {stats.format_ratio(stats.ratio(base['watch_events'], n))} of N); CPU",
                f"{figures['rss_mb']:.0f} MB; {figures['watch_events']:,.0f} events, {event_share:.1%} "
                f"({stats.format_ratio(events)}); {figures['cpu_seconds']:.0f} CPU-s",
                f"{base['rss_mb']:.0f} MB",
                stats.format_ratio(rss_ratio),
                f"≤ {RSS_RATIO_TARGET}x",
                judge(
                    f"rss_ratio_{identity}",
                    rss_ratio,
                    f"<= {RSS_RATIO_TARGET}",
                    rss_ratio is not None and rss_ratio <= RSS_RATIO_TARGET,
                ),
            )
        )
    rows.append(
        stats.Row(
            f"{replicas} shards",
            "start (together) → all Ready, the objects created beforehand",
            f"{stats.format_seconds(results['shards']['seconds_to_all_ready'])}",
        )
    )
    if "join" in results:  # absent with --no-handovers
        rows += join_rows(results["join"], replicas, judge)
    if "kill" in results:
        rows += kill_rows(results["kill"], s, judge)
    empty = results["empty_replica_rss_bytes"]
    slope = (base["rss_bytes"] - empty) / n
    rows.append(
        stats.Row(
            "Projection",
            "empty replica RSS; per-object slope (baseline - empty) / N",
            f"{empty / 2**20:.0f} MB; {slope / 1024:.1f} KB/object",
        )
    )
    return judge.targets, rows


def join_rows(join: dict[str, Any], replicas: int, judge: Judge) -> list[stats.Row]:
    """Stage 3's rows: the fraction moved, double writes, the time to converge."""
    rows: list[stats.Row] = []
    fraction = join["moved_fraction"]
    rows.append(
        stats.Row(
            "Join",
            f"{join['newcomer']} joins: objects whose owner changed (ideal {1 / (replicas + 1):.2f}); "
            f"{join['moved_to_newcomer']} to it, {join['moved_twice_or_more']} moved twice",
            f"{join['moved_objects']:,} ({stats.format_number(fraction, 3)})",
            "",
            "",
            f"≤ {JOIN_MOVED_TARGET}",
            judge(
                "join_moved_fraction",
                fraction,
                f"<= {JOIN_MOVED_TARGET}",
                None if fraction is None else fraction <= JOIN_MOVED_TARGET,
            ),
        )
    )
    remote = join["remote"]
    doubles = remote["double_writes"] + join["owners_with_two_or_more"]
    rows.append(
        stats.Row(
            "Join",
            f"double writes: syncs written by two replicas at once or A-B-A "
            f"({remote['writes']} writes to {remote['syncs_written']} syncs, "
            f"{remote['syncs_handed_over_with_writes']} written on both sides of a handover, "
            f"log complete: {join['request_log_complete']}); objects with two remote syncs",
            f"{remote['double_writes']}; {join['owners_with_two_or_more']}",
            "",
            "",
            "0",
            judge("join_double_writes", doubles, "== 0", doubles == 0),
        )
    )
    rows.append(
        stats.Row(
            "Join",
            f"start → moves finished; → converged, all Ready ({join['edited_objects']} objects edited "
            f"meanwhile, Ready at their generation: {join['edits_ready_at_their_generation']})",
            f"{stats.format_seconds(join['seconds_to_moves_finished'])}; "
            f"{stats.format_seconds(join['seconds_to_converged'])}",
        )
    )
    return rows


def kill_rows(k: dict[str, Any], s: ShardSettings, judge: Judge) -> list[stats.Row]:
    """Stage 4's rows: only the victim's objects moved, within the lease and their handling."""
    rows: list[stats.Row] = []
    exact = k["moved_only_the_victim_s"] if s.labels else None
    rows.append(
        stats.Row(
            "Kill",
            f"SIGKILL {k['victim']} ({k['victim_owned_objects']:.0f} objects): moved; of the survivors'",
            f"{k['moved_objects']:,} ({stats.format_number(k['moved_fraction'], 3)}, "
            f"victim's share {k['victim_fraction']:.3f}); {k['survivors_objects_moved']}",
            "",
            "",
            "only the victim's",
            judge("kill_moved_only_the_victims", k["moved_objects"], "== victim's objects", exact),
        )
    )
    # The lease duration, one retry period (how often Leases are read: leader election's
    # detection granularity too) and the time the moved objects take: moving their labels and
    # reconciling them.
    bound = (
        k["lease_duration_seconds"] + k["retry_period_seconds"] + (k["seconds_handling_moved_objects"] or 0.0)
    )
    rows.append(
        stats.Row(
            "Kill",
            "kill → first label moved; → last; → converged (survivors ran "
            f"{k['reconciles_by_survivors']:.0f} reconciles); lease + retry period + handling time",
            f"{stats.format_seconds(k['seconds_to_first_move'])}; "
            f"{stats.format_seconds(k['seconds_to_labels_moved'])}; "
            f"{stats.format_seconds(k['seconds_to_converged'])}",
            "",
            "",
            f"≤ {stats.format_seconds(bound)}",
            judge(
                "kill_seconds_to_converged",
                k["seconds_to_converged"],
                f"<= lease {k['lease_duration_seconds']:g} s + reconcile",
                k["seconds_to_converged"] <= bound + STABLE_POLLS if s.labels else None,
            ),
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    defaults = ShardSettings()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--objects", type=int, default=defaults.objects)
    parser.add_argument("--replicas", type=int, default=defaults.replicas)
    parser.add_argument("--buckets", type=int, default=defaults.buckets)
    parser.add_argument("--lease-duration", type=float, default=defaults.lease_duration)
    parser.add_argument("--sharding-mode", choices=("labels", "rendezvous"), default=defaults.mode)
    parser.add_argument("--churn-objects", type=int, default=defaults.churn_objects)
    parser.add_argument(
        "--no-handovers",
        dest="handovers",
        action="store_false",
        help="skip the join and kill stages (memory and watch events only; about 20 min less at 40,000)",
    )
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "bench-results")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / ".local" / "bench", help="logs go here")
    args = parser.parse_args(argv)
    settings = ShardSettings(
        objects=args.objects,
        replicas=args.replicas,
        buckets=args.buckets,
        lease_duration=args.lease_duration,
        mode=args.sharding_mode,
        churn_objects=args.churn_objects,
        handovers=args.handovers,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = (args.workdir / f"shards-{stamp}").resolve()
    began = time.monotonic()
    title = f"shards: N={settings.objects} over {settings.replicas} replicas ({settings.mode})"
    with bench_session(workdir, title) as (plane, pids):
        results = asyncio.run(run(settings, plane, workdir, pids))
    duration = time.monotonic() - began
    targets, rows = evaluate(settings, results)
    result = {
        "size": "shards",
        "objects": settings.objects,
        "started_at": stamp,
        "duration_seconds": round(duration, 1),
        "settings": settings.to_json(),
        "environment": {**environment(settings.bench()), "operator_packages": PACKAGES},
        "targets": targets,
        "scenarios": results,
    }
    paths = write_results(result, args.output_dir, "shards", stamp, standard=settings == ShardSettings())
    shape = f"N={settings.objects}, {settings.replicas} replicas, {settings.mode}"
    print(f"## Shards: {shape} ({duration / 60:.1f} min)\n")
    print(stats.markdown_table(rows))
    misses = [t["name"] for t in targets if t["pass"] is False]
    print(f"\nMISS: {', '.join(misses)}" if misses else "\nevery judged target met")
    print(f"Results: {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

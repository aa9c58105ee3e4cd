"""One replica of label shards: its member Lease, its own objects, and its side of the handshake.

- Its member Lease (`<ring>-<identity>`, labelled with the ring and `MODE_LABEL`) makes it a
  member the assigner gives objects to. Holding it is the fencing: the replica reconciles only
  while the Lease is held within the renew deadline, and stops all work when it is not.
- It watches only the objects labelled with its name (a server-side label selector, so the
  cache and the watch traffic are its share). An object whose label moves away leaves the
  watch (the API server sends DELETED).
- The handshake: an object of ours marked `DRAIN_LABEL` is drained (no new reconcile, the one
  under way finishes, its registrations are forgotten) and then acknowledged with
  `DRAINED_ANNOTATION`; the assigner moves the label only after that.
- A lapse of the Lease (renewals late under load) pauses the work and nothing else: the watch
  keeps running, so what moved away in the meantime (the assigner moves an expired member's
  objects) leaves as it does at any time, and regaining the Lease costs no list, no replayed
  event and no reconcile of an object that did not change (Engine.pause).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Final, Literal, Protocol

from mixpeek_operator.coordination.assignment import (
    DRAIN_LABEL,
    DRAINED_ANNOTATION,
    LABEL_MODE,
    MODE_LABEL,
    OWNER_LABEL,
    member_label,
)
from mixpeek_operator.coordination.holder import Clock, LeaseHolder, LeaseHook
from mixpeek_operator.coordination.lease import LeaseTimings
from mixpeek_operator.coordination.ring import RING_LABEL, lease_name_for, shard_key_of
from mixpeek_operator.keys import ObjectKey, key_of
from mixpeek_operator.kube import BUCKETSYNCS, KubeClient, KubeError, KubeNotFound, ListWatch, SecretWatches
from mixpeek_operator.secret_index import SecretRef, named_secret_of
from mixpeek_operator.supervision import Supervisor

log = logging.getLogger(__name__)

ACK_RETRY_CAP: Final = 30.0  # seconds between attempts to acknowledge, at most


class _Record(Protocol):
    body: dict[str, Any]
    draining: bool


class ShardEngine(Protocol):
    """What a member drives of the engine (engine.Engine; the layers keep coordination below it)."""

    @property
    def objects(self) -> MutableMapping[ObjectKey, Any]: ...

    def start(self) -> None: ...
    async def pause(self) -> None: ...
    async def on_object_event(self, event_type: str | None, body: Mapping[str, Any]) -> None: ...
    async def on_secret_event(self, event_type: str | None, body: Mapping[str, Any]) -> None: ...
    async def drain(self, key: ObjectKey) -> bool: ...
    async def resume(self, key: ObjectKey) -> None: ...
    async def moved_away(self, key: ObjectKey) -> None: ...


class LabelShardMember:
    """This replica's member Lease, its filtered watch, and its acknowledgements of drains."""

    def __init__(
        self,
        kube: KubeClient,
        engine: ShardEngine,
        *,
        lease_namespace: str,
        ring: str,
        identity: str,
        namespaces: tuple[str, ...],
        timings: LeaseTimings,
        default_secret: SecretRef | None,
        on_watch_events: Callable[[str, int], None] = lambda resource, n: None,
        on_handover: Callable[[Literal["in", "out"]], None] = lambda direction: None,
        on_active: Callable[[bool], None] = lambda active: None,
        on_lease: LeaseHook | None = None,
        clock: Clock = time.monotonic,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.kube, self.engine = kube, engine
        self.identity, self.label = identity, member_label(identity)
        self.namespaces: tuple[str | None, ...] = namespaces or (None,)
        self.default_secret = default_secret
        self._on_watch_events, self._on_handover, self._on_active = on_watch_events, on_handover, on_active
        self._supervisor = supervisor or Supervisor()
        self.secrets = SecretWatches(
            kube,
            self._secret_event,
            spawn=lambda name, run: self._supervisor.spawn(name, run, kind="secret-watch"),
        )
        if default_secret is not None:
            self.secrets.pin(default_secret)
        self._watches: list[ListWatch] = []
        self._watch_tasks: list[asyncio.Task[None]] = []
        self._acks: dict[ObjectKey, asyncio.Task[None]] = {}
        self._working = False
        self._starting: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one start/stop of the work at a time
        self.lease = LeaseHolder(
            kube,
            namespace=lease_namespace,
            name=lease_name_for(ring, identity),
            identity=identity,
            timings=timings,
            labels={RING_LABEL: ring, MODE_LABEL: LABEL_MODE},
            on_acquired=self._acquired,
            on_lost=self._lost,
            on_lease=on_lease,
            clock=clock,
            supervisor=self._supervisor,
            task_kind="shard-lease",
        )

    def owns(self, body: Mapping[str, Any]) -> bool:
        """Checked before every reconcile: our objects are the ones our watch holds, and only
        while the Lease is held (fencing)."""
        return self._working and self.lease.held()

    def ownership(self) -> tuple[int, int]:
        """(objects, groups) held and not being drained, for the metrics."""
        records: list[_Record] = [r for r in list(self.engine.objects.values()) if not r.draining]
        return len(records), len({shard_key_of(record.body, self.default_secret) for record in records})

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.lease.start()

    async def stop(self) -> None:
        await self.lease.stop()  # stops the work (`_lost`), then releases the Lease
        await self._stop_watches()
        for task in self._acks.values():
            task.cancel()
        await asyncio.gather(*self._acks.values(), return_exceptions=True)
        await self.secrets.stop()

    async def _acquired(self) -> None:
        # In a task of its own: the first list of 10,000 objects takes seconds, and the Lease
        # is renewed only once this callback returns.
        log.info("joined label shards as %s (label %s)", self.identity, self.label)
        self._starting = self._supervisor.spawn(f"shard start {self.label}", self._begin, kind="shard-start")

    async def _begin(self) -> None:
        async with self._lock:
            await self._start_watches()
            self._working = True
            self.engine.start()
            self._on_active(True)

    async def _lost(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
            self._starting = None
        async with self._lock:
            self._working = False
            self._on_active(False)
            await self.engine.pause()
            log.warning("paused work as shard member %s until the Lease is held again", self.identity)

    async def _start_watches(self) -> None:
        """Watch our objects (once: the watches outlive a lapse of the Lease) and wait until they
        have listed; drop what they do not hold."""
        if not self._watches:
            self._watches = self._new_watches()
            self._watch_tasks = [
                self._supervisor.spawn(watch.name, watch.run, kind="shard-watch") for watch in self._watches
            ]
        watches = self._watches
        await asyncio.gather(*(watch.synced.wait() for watch in watches))
        listed = set().union(*(watch.keys() for watch in watches))
        for key in [key for key in self.engine.objects if key not in listed]:
            # Not in our watch's cache (a safety net: its events keep the engine in step).
            body = self.engine.objects[key].body
            await self.engine.on_object_event("DELETED", body)
            self.secrets.forget(key)

    def _new_watches(self) -> list[ListWatch]:
        return [
            ListWatch(
                self.kube,
                BUCKETSYNCS,
                namespace=namespace,
                label_selector=f"{OWNER_LABEL}={self.label}",
                on_event=self._object_event,
                name=f"bucketsyncs of {self.label} in {namespace or 'all namespaces'}",
            )
            for namespace in self.namespaces
        ]

    async def _stop_watches(self) -> None:
        tasks, self._watch_tasks, self._watches = self._watch_tasks, [], []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- events ----------------------------------------------------------------------------------

    async def _object_event(self, event_type: str, body: Mapping[str, Any]) -> None:
        self._on_watch_events("bucketsyncs", 1)
        key = key_of(body)
        if event_type == "DELETED":
            record = self.engine.objects.get(key)
            if record is not None and record.draining:
                await self.engine.moved_away(key)
                self._on_handover("out")
            else:
                await self.engine.on_object_event("DELETED", body)
            self.secrets.forget(key)
            return
        self.secrets.track(key, named_secret_of(body))
        meta = body.get("metadata") or {}
        drain_to = (meta.get("labels") or {}).get(DRAIN_LABEL)
        if drain_to is not None and drain_to != self.label:
            if key not in self.engine.objects:
                await self.engine.on_object_event(event_type, body)  # held, so drain() knows it
            acknowledged = (meta.get("annotations") or {}).get(DRAINED_ANNOTATION) == self.label
            if not acknowledged and key not in self._acks:
                self._acks[key] = self._supervisor.spawn(
                    f"drain {key}", lambda: self._drain(key), kind="shard-drain"
                )
            return
        record = self.engine.objects.get(key)
        if record is None and self._working and body.get("status"):
            self._on_handover("in")  # reconciled before, elsewhere: it moved here
        await self.engine.on_object_event(event_type, body)
        if record is not None and record.draining:
            await self.engine.resume(key)  # the drain was called off: the object stays

    async def _drain(self, key: ObjectKey) -> None:
        """Stop all work on `key`, then acknowledge: only then may its label move."""
        try:
            await self.engine.drain(key)
            patch = {"metadata": {"annotations": {DRAINED_ANNOTATION: self.label}}}
            for attempt in itertools.count():
                try:
                    await self.kube.merge_patch_object(
                        BUCKETSYNCS, key.namespace, key.name, patch, write="metadata"
                    )
                    return
                except KubeNotFound:
                    return
                except KubeError as exc:  # until it lands: the object waits for it
                    log.warning("could not acknowledge the drain of %s: %s", key, exc)
                    await asyncio.sleep(min(ACK_RETRY_CAP, 2**attempt))
        finally:
            self._acks.pop(key, None)

    async def _secret_event(self, event_type: str, body: Mapping[str, Any]) -> None:
        self._on_watch_events("secrets", 1)
        await self.engine.on_secret_event(event_type, body)

"""Assembles the operator's parts from its configuration; no kopf here (see handlers.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from mixpeek_operator.admission import wait_until_creates_admitted
from mixpeek_operator.coordination import (
    ASSIGNER_SUFFIX,
    Assigner,
    LabelShardMember,
    LeaderElector,
    LeaseTimings,
    ShardCoordinator,
    ShardKey,
    shard_key_of,
)
from mixpeek_operator.credentials import CredentialStore, SecretRef
from mixpeek_operator.engine import Engine, EngineSettings
from mixpeek_operator.heap import release_free_heap_forever
from mixpeek_operator.kube import KubeClient, load_default_connection
from mixpeek_operator.logging_setup import SecretRegistry
from mixpeek_operator.metrics import OperatorMetrics
from mixpeek_operator.secret_guard import SecretUseGuard
from mixpeek_operator.settings import DEFAULTS
from mixpeek_operator.supervision import Supervisor

log = logging.getLogger("mixpeek_operator.runtime")


# The resolved configuration of one process; the defaults are the settings model's (settings.py).


@dataclass(frozen=True)
class LeaderElectionConfig:
    namespace: str
    identity: str
    lease_name: str = DEFAULTS.leader_election_id  # the ring's name with sharding
    timings: LeaseTimings = field(default_factory=LeaseTimings)
    # leader: one replica reconciles everything; shards: the live replicas split the objects by
    # rendezvous hashing, each watching all; labels: an elected assigner labels each object with
    # its owner and each replica watches only its own.
    mode: Literal["leader", "shards", "labels"] = "leader"


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = DEFAULTS.namespaces  # empty: every namespace
    default_secret: SecretRef | None = DEFAULTS.default_credentials_secret
    base_url: str = DEFAULTS.mixpeek_base_url
    engine: EngineSettings = field(default_factory=EngineSettings)
    metrics_port: int = DEFAULTS.metrics_port
    health_port: int = DEFAULTS.health_port
    log_level: str = DEFAULTS.log_level
    log_format: str = DEFAULTS.log_format
    # None: this replica works alone (the chart's default with one replica).
    leader_election: LeaderElectionConfig | None = None


class Unhealthy(Exception):
    """A background task could not be restarted: the liveness endpoint answers 500."""


class OperatorRuntime:
    def __init__(self, config: OperatorConfig, secrets: SecretRegistry) -> None:
        self.config = config
        self.secrets = secrets
        self.metrics = OperatorMetrics()
        # Every long-lived task of this process; one that cannot be restarted fails /healthz.
        self.supervisor = Supervisor(on_restart=self.metrics.count_task_restart)
        self.kube: KubeClient | None = None
        self.engine: Engine | None = None
        self._stop_metrics: Callable[[], None] | None = None
        self._heap_trim: asyncio.Task[None] | None = None
        self.elector: LeaderElector | None = None
        self.shards: ShardCoordinator | None = None
        # Label shards: this replica's member, and the assigner it runs while elected.
        self.member: LabelShardMember | None = None
        self.assigner_election: LeaderElector | None = None
        self.assigner: Assigner | None = None
        self._assigner_task: asyncio.Task[None] | None = None
        self._owned: set[ShardKey] = set()
        self._ownership_lock = asyncio.Lock()  # one restart of the work at a time

    async def start(self) -> Engine:
        # A provider, not a fixed connection: a 401 or an expiring exec credential reloads it.
        self.kube = KubeClient(load_default_connection, on_write=self.metrics.observe_kube_write)
        # Before the health endpoint serves (kopf starts it after this): Ready means admitted.
        await wait_until_creates_admitted(self.kube, (self.config.namespaces or ("default",))[0])
        store = CredentialStore(
            self._read_secret,
            default_secret=self.config.default_secret,
            default_base_url=self.config.base_url,
            on_secret_value=self.secrets.add,
        )
        self.engine = Engine(
            kube=self.kube,
            credentials=store,
            metrics=self.metrics,
            settings=self.config.engine,
            secret_guard=SecretUseGuard(self.kube, may_release=self._may_release),
            owns=self._owns,
            supervisor=self.supervisor,
        )
        self.metrics.set_resource_source(self.engine.readiness_summary)
        self._heap_trim = self.supervisor.spawn("heap trim", release_free_heap_forever, kind="heap")
        if self.config.metrics_port:
            self._stop_metrics = self.metrics.serve(self.config.metrics_port)
        election = self.config.leader_election
        if election is None:
            self.metrics.set_active(True)
            self.engine.start()
        elif election.mode == "labels":
            self._start_label_shards(election)
        elif election.mode == "shards":
            self.shards = ShardCoordinator(
                self.kube,
                namespace=election.namespace,
                ring=election.lease_name,
                identity=election.identity,
                timings=election.timings,
                on_change=self._ownership_changed,
                on_members=self.metrics.set_shard_members,
                on_lease=self.metrics.set_lease_held,
                supervisor=self.supervisor,
            )
            self.metrics.set_ownership_source(self._ownership)
            self.engine.start()
            self.shards.start()
        else:
            # Watches and caches run on every replica; reconciling (every remote call and
            # every Kubernetes write) only on the leader.
            engine = self.engine
            self.elector = LeaderElector(
                self.kube,
                namespace=election.namespace,
                name=election.lease_name,
                identity=election.identity,
                timings=election.timings,
                on_started_leading=_async(engine.start),
                on_stopped_leading=engine.stop_work,
                on_transition=self.metrics.set_leading,
                on_lease=self.metrics.set_lease_held,
                supervisor=self.supervisor,
            )
            self.elector.start()
        log.info("operator started", extra={"namespaces": list(self.config.namespaces) or "all"})
        return self.engine

    # --- label shards --------------------------------------------------------------------------

    def _start_label_shards(self, election: LeaderElectionConfig) -> None:
        assert self.kube is not None
        assert self.engine is not None
        metrics = self.metrics
        self.member = LabelShardMember(
            self.kube,
            self.engine,
            lease_namespace=election.namespace,
            ring=election.lease_name,
            identity=election.identity,
            namespaces=self.config.namespaces,
            timings=election.timings,
            default_secret=self.config.default_secret,
            on_watch_events=metrics.count_watch_events,
            on_handover=metrics.count_object_handover,
            on_active=metrics.set_active,
            on_lease=metrics.set_lease_held,
            supervisor=self.supervisor,
        )
        metrics.set_ownership_source(self.member.ownership)
        metrics.set_draining_source(self.engine.draining)
        # Every member is a candidate; the one holding this Lease writes the owner labels.
        self.assigner_election = LeaderElector(
            self.kube,
            namespace=election.namespace,
            name=election.lease_name + ASSIGNER_SUFFIX,
            identity=election.identity,
            timings=election.timings,
            on_started_leading=lambda: self._start_assigner(election),
            on_stopped_leading=self._stop_assigner,
            on_transition=metrics.set_assigner,
            on_lease=metrics.set_lease_held,
            supervisor=self.supervisor,
        )
        self.member.start()
        self.assigner_election.start()

    async def _start_assigner(self, election: LeaderElectionConfig) -> None:
        assert self.kube is not None
        self.assigner = Assigner(
            self.kube,
            lease_namespace=election.namespace,
            ring=election.lease_name,
            namespaces=self.config.namespaces,
            timings=election.timings,
            default_secret=self.config.default_secret,
            on_assignments=self.metrics.count_assignments,
            on_watch_events=lambda events: self.metrics.count_watch_events("assigner", events),
            on_members=self.metrics.set_shard_members,
            supervisor=self.supervisor,
        )
        self._assigner_task = self.supervisor.spawn(
            "shard assigner", self.assigner.run, kind="shard-assigner"
        )

    async def _stop_assigner(self) -> None:
        self.metrics.set_shard_members(0)  # the assigner's view: gone with it
        task, self._assigner_task = self._assigner_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # --- sharding ----------------------------------------------------------------------------

    def _shard_key(self, body: Any) -> ShardKey | None:
        return shard_key_of(body, self.config.default_secret)

    def _owns(self, body: Any) -> bool:
        if self.member is not None:
            return self.member.owns(body)
        if self.elector is not None:
            # Checked before every reconcile too, not only when the renew loop steps down.
            return self.elector.is_leader()
        if self.shards is None:
            return True
        key = self._shard_key(body)
        return key is not None and self.shards.owns(key)

    def _may_release(self, secret: SecretRef) -> bool:
        """Whether this replica may remove a Secret's in-use finalizer now: the leader, or with
        sharding the one replica owning the Secret itself (its key with no bucket). With label
        shards the members' objects of one Secret are spread over them and each sees only its
        own deletions, so any working member may: the release is decided by a fresh list of the
        namespace's objects, and a finalizer removed twice is removed once."""
        if self.member is not None:
            return self.member.owns({})
        if self.elector is not None:
            return self.elector.is_leader()
        if self.shards is None:
            return True
        return self.shards.owns((secret[0], secret[1], ""))

    def _owned_keys(self) -> set[ShardKey]:
        assert self.engine is not None
        keys = {self._shard_key(record.body) for record in list(self.engine.objects.values())}
        return {key for key in keys if key is not None and self.shards is not None and self.shards.owns(key)}

    def _ownership(self) -> tuple[int, int]:
        """(objects, groups) this replica owns now, for the metrics."""
        assert self.engine is not None
        owned = self._owned_keys()
        objects = sum(
            1 for record in list(self.engine.objects.values()) if self._shard_key(record.body) in owned
        )
        return objects, len(owned)

    async def _ownership_changed(self) -> None:
        """Restart the work: what moved away is cancelled, everything is queued again."""
        assert self.engine is not None
        assert self.shards is not None
        async with self._ownership_lock:
            await self.engine.stop_work()
            self.engine.start()
            self._account_ownership()

    def _account_ownership(self) -> None:
        assert self.shards is not None
        owned = self._owned_keys()
        gained, lost = len(owned - self._owned), len(self._owned - owned)
        if gained or lost:
            log.info(
                "shard ownership changed: took %d groups, handed over %d, own %d",
                gained,
                lost,
                len(owned),
                extra={"members": sorted(self.shards.members)},
            )
            self.metrics.count_handovers(gained + lost)
        self._owned = owned
        self.metrics.set_active(self.shards.active())

    def health(self) -> dict[str, int]:
        """The liveness endpoint's body; raises `Unhealthy` once a background task could not be
        restarted, so the kubelet restarts the pod."""
        if not self.supervisor.healthy():
            failed = ", ".join(f"{name} ({error})" for name, error in sorted(self.supervisor.failed.items()))
            raise Unhealthy(f"background tasks that could not be restarted: {failed}")
        engine = self.engine
        return {"objects": len(engine.objects), "queued": len(engine.queue)} if engine else {}

    async def _read_secret(self, namespace: str, name: str) -> dict[str, object] | None:
        assert self.kube is not None
        return await self.kube.get_secret(namespace, name)

    async def stop(self) -> None:
        if self.assigner_election is not None:
            await self.assigner_election.stop()
        if self.member is not None:
            # Work stops, then our member Lease is released: the assigner moves our objects at once.
            await self.member.stop()
        if self.shards is not None:
            # Leaves the ring: work stops, then our lease is released and the others take over.
            await self.shards.stop()
        if self.elector is not None:
            # Stops the work first, then hands the lease over so a standby takes over at once.
            await self.elector.stop()
        if self.engine is not None:
            await self.engine.stop()
        if self.kube is not None:
            await self.kube.aclose()
        if self._stop_metrics is not None:
            self._stop_metrics()
        if self._heap_trim is not None:
            self._heap_trim.cancel()


def _async(function: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        function()

    return call

"""Assembles the operator's parts from its configuration; no kopf here (see handlers.py)."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mixpeek_operator.constants import DEFAULT_MIXPEEK_BASE_URL
from mixpeek_operator.credentials import CredentialStore, SecretRef
from mixpeek_operator.engine import Engine, EngineSettings
from mixpeek_operator.kube import KubeClient, KubeConnection
from mixpeek_operator.leaderelection import DEFAULT_LEASE_NAME, ElectionTimings, LeaderElector
from mixpeek_operator.logging_setup import SecretRegistry
from mixpeek_operator.metrics import OperatorMetrics

log = logging.getLogger("mixpeek_operator.runtime")


@dataclass(frozen=True)
class LeaderElectionConfig:
    namespace: str
    identity: str
    lease_name: str = DEFAULT_LEASE_NAME
    timings: ElectionTimings = field(default_factory=ElectionTimings)


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    default_secret: SecretRef | None = None
    base_url: str = DEFAULT_MIXPEEK_BASE_URL
    engine: EngineSettings = field(default_factory=EngineSettings)
    metrics_port: int = 8080
    health_port: int = 8081
    log_level: str = "INFO"
    log_format: str = "json"
    # None: this replica works alone (the chart's default with one replica).
    leader_election: LeaderElectionConfig | None = None


def kube_connection() -> KubeConnection:
    """In a pod: the ServiceAccount; elsewhere: the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    if os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"):
        return KubeConnection.in_cluster()
    return KubeConnection.from_kubeconfig()


class OperatorRuntime:
    def __init__(self, config: OperatorConfig, secrets: SecretRegistry) -> None:
        self.config = config
        self.secrets = secrets
        self.metrics = OperatorMetrics()
        self.kube: KubeClient | None = None
        self.engine: Engine | None = None
        self._stop_metrics: Callable[[], None] | None = None
        self.elector: LeaderElector | None = None

    async def start(self) -> Engine:
        self.kube = KubeClient(kube_connection(), on_write=self.metrics.observe_kube_write)
        store = CredentialStore(
            self._read_secret,
            default_secret=self.config.default_secret,
            default_base_url=self.config.base_url,
            on_secret_value=self.secrets.add,
        )
        self.engine = Engine(
            kube=self.kube, credentials=store, metrics=self.metrics, settings=self.config.engine
        )
        self.metrics.set_resource_source(self.engine.readiness_summary)
        if self.config.metrics_port:
            self._stop_metrics = self.metrics.serve(self.config.metrics_port)
        election = self.config.leader_election
        if election is None:
            self.metrics.set_leader(True)
            self.engine.start()
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
                on_transition=self.metrics.set_leader,
            )
            self.elector.start()
        log.info("operator started", extra={"namespaces": list(self.config.namespaces) or "all"})
        return self.engine

    async def _read_secret(self, namespace: str, name: str) -> dict[str, object] | None:
        assert self.kube is not None
        return await self.kube.get_secret(namespace, name)

    async def stop(self) -> None:
        if self.elector is not None:
            # Stops the work first, then hands the lease over so a standby takes over at once.
            await self.elector.stop()
        if self.engine is not None:
            await self.engine.stop()
        if self.kube is not None:
            await self.kube.aclose()
        if self._stop_metrics is not None:
            self._stop_metrics()


def _async(function: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        function()

    return call

"""Assembles the operator's parts from its configuration; no kopf here (see handlers.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from mixpeek_operator.constants import DEFAULT_MIXPEEK_BASE_URL
from mixpeek_operator.credentials import CredentialStore, SecretRef
from mixpeek_operator.engine import Engine, EngineSettings
from mixpeek_operator.kube import KubeClient, load_default_connection
from mixpeek_operator.logging_setup import SecretRegistry
from mixpeek_operator.metrics import OperatorMetrics

log = logging.getLogger("mixpeek_operator.runtime")


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


class OperatorRuntime:
    def __init__(self, config: OperatorConfig, secrets: SecretRegistry) -> None:
        self.config = config
        self.secrets = secrets
        self.metrics = OperatorMetrics()
        self.kube: KubeClient | None = None
        self.engine: Engine | None = None
        self._stop_metrics: Callable[[], None] | None = None

    async def start(self) -> Engine:
        # A provider, not a fixed connection: a 401 or an expiring exec credential reloads it.
        self.kube = KubeClient(load_default_connection, on_write=self.metrics.observe_kube_write)
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
        self.engine.start()
        log.info("operator started", extra={"namespaces": list(self.config.namespaces) or "all"})
        return self.engine

    async def _read_secret(self, namespace: str, name: str) -> dict[str, object] | None:
        assert self.kube is not None
        return await self.kube.get_secret(namespace, name)

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.stop()
        if self.kube is not None:
            await self.kube.aclose()
        if self._stop_metrics is not None:
            self._stop_metrics()

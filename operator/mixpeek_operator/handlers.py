"""kopf wiring — the only module that imports kopf. Handlers are thin adapters.

kopf provides the watches (with their reconnects and bookmarks), the operator life
cycle, signal handling and the liveness endpoint. Label shards run without kopf (lifecycle.py):
each replica there watches only its own objects, with a server-side label selector kopf's watch
does not have, which leaves kopf only the life cycle, for 22 MB per replica. Each watch
event is handed to the engine, which decides whether the object needs a reconcile; the
reconcile itself and its finalizer, status writes, retries and Events are ours (engine.py,
reconcile.py), so one object costs the minimum of Kubernetes writes and kopf keeps nothing in
status.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import kopf

from mixpeek_operator.constants import GROUP
from mixpeek_operator.coordination import operator_identity
from mixpeek_operator.kube import BUCKETSYNCS, SECRETS, KubeConnection, load_default_connection
from mixpeek_operator.runtime import OperatorConfig, OperatorRuntime, Unhealthy

log = logging.getLogger("mixpeek_operator.handlers")


async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Pinned, so a kopf upgrade cannot change where state lives. kopf's finalizer must NOT be
    # ours: kopf strips its own finalizer from objects when no handler needs it, and ours is
    # managed by the engine (or added at CREATE by the chart's MutatingAdmissionPolicy).
    settings.persistence.finalizer = f"{GROUP}/kopf-finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Events are posted by the engine, on transitions only.
    settings.posting.enabled = False
    # Explicit timeouts: a silent watch is restarted, a hung request fails.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # The initial LIST in pages of 500, as client-go's informers do: at 10,000 objects one
    # unpaged LIST is ~200 MB of parsed JSON held at once (managedFields included).
    settings.watching.chunk_size = 500
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    settings.networking.error_backoffs = (1, 2, 5, 10, 20, 30)
    # No cluster-wide CRD/namespace scanning: least-privilege RBAC does not grant it.
    settings.scanning.disabled = True
    runtime: OperatorRuntime = memo["runtime"]
    await runtime.start()


async def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's watches log in through the loader our own writes use (kube/config.py), exec plugins too.

    kopf calls this again when the API server answers 401, and before `expiration`.
    """
    return connection_info(await load_default_connection())


def connection_info(connection: KubeConnection) -> kopf.ConnectionInfo:
    """kopf's form of a connection: PEM data wins over a path (kopf accepts only one of them)."""
    return kopf.ConnectionInfo(
        server=connection.server,
        ca_path=None if connection.ca_data else connection.ca_path,
        ca_data=_pem_bytes(connection.ca_data),
        insecure=connection.insecure,
        token=connection.read_token(),  # a projected token file is re-read at each login
        certificate_path=None if connection.certificate_data else connection.certificate_path,
        certificate_data=_pem_bytes(connection.certificate_data),
        private_key_path=None if connection.private_key_data else connection.private_key_path,
        private_key_data=_pem_bytes(connection.private_key_data),
        expiration=connection.expires_at,
    )


def _pem_bytes(data: str | bytes | None) -> bytes | None:
    return data.encode("ascii") if isinstance(data, str) else data


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime: OperatorRuntime = memo["runtime"]
    await runtime.stop()


async def bucketsync_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    runtime: OperatorRuntime = memo["runtime"]
    assert runtime.engine is not None
    await runtime.engine.on_object_event(event["type"], event["object"])


async def secret_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    runtime: OperatorRuntime = memo["runtime"]
    assert runtime.engine is not None
    await runtime.engine.on_secret_event(event["type"], event["object"])


def engine_probe(memo: kopf.Memo, **_: Any) -> dict[str, int]:
    """The liveness endpoint's body; raising fails /healthz (HTTP 500), so the kubelet restarts us."""
    runtime: OperatorRuntime = memo["runtime"]
    try:
        return runtime.health()
    except Unhealthy as exc:
        raise kopf.PermanentError(str(exc)) from exc


def operator_registry() -> kopf.OperatorRegistry:
    """The handlers kopf runs."""
    registry = kopf.OperatorRegistry()
    kopf.on.startup(registry=registry)(startup)
    kopf.on.login(registry=registry)(login)
    kopf.on.cleanup(registry=registry)(cleanup)
    kopf.on.probe(id="engine", registry=registry)(engine_probe)
    kopf.on.event(BUCKETSYNCS.group, BUCKETSYNCS.version, BUCKETSYNCS.plural, registry=registry)(
        bucketsync_event
    )
    kopf.on.event(SECRETS.group, SECRETS.version, SECRETS.plural, registry=registry)(secret_event)
    return registry


def run_operator(config: OperatorConfig, runtime: OperatorRuntime) -> None:
    """Run until SIGTERM/SIGINT (kopf handles the signals and calls cleanup)."""
    namespaces = list(config.namespaces)
    if namespaces and config.default_secret and config.default_secret[0] not in namespaces:
        # The default credentials Secret must be watched too, so its rotation is seen at once.
        namespaces.append(config.default_secret[0])
    memo = kopf.Memo(runtime=runtime)
    election = config.leader_election
    asyncio.run(
        kopf.operator(
            standalone=True,
            # The Lease holder's name when electing, so logs and Leases name one process alike.
            # kopf types this as its own NewType of str, which it does not export.
            identity=cast(Any, election.identity if election else operator_identity()),
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None,
            memo=memo,
            registry=operator_registry(),
        )
    )

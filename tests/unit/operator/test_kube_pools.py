"""Connection pools across credential refreshes and key rotations, without a cluster. The
Kubernetes client: a refresh that changes the transport (an exec plugin's new client
certificate) replaces the pool, and the replaced one must be closed once no request can still
be using it. The Mixpeek clients: one per key, so a rotation must not cost a TLS context."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from mixpeek_operator.kube import KubeClient, KubeConnection


async def test_pools_replaced_by_credential_refreshes_are_closed() -> None:
    """Regression: every refresh that changed the transport left the old pool open for good."""
    refreshes = 0

    async def provider() -> KubeConnection:
        nonlocal refreshes
        refreshes += 1
        # A different transport each time (as a rotated client certificate is), expiring soon.
        return KubeConnection(
            server=f"http://127.0.0.1:{1000 + refreshes}",
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )

    kube = KubeClient(provider, retire_after=0.01)
    http, generation = await kube._session()
    replaced = [http]
    for _ in range(20):
        assert await kube._refresh(generation)
        http, generation = await kube._session()
        replaced.append(http)
    await asyncio.sleep(0.1)
    assert kube.retired_pools() == 0
    assert all(pool.is_closed for pool in replaced[:-1])
    assert not replaced[-1].is_closed
    await kube.aclose()
    assert replaced[-1].is_closed


async def test_mixpeek_clients_of_rotated_keys_share_one_tls_context() -> None:
    """Regression: each Mixpeek client (one per API key and namespace, so one per key rotation)
    built its own TLS context with the CA bundle, about 1 MB that the allocator kept after the
    client closed."""
    from mixpeek_operator.mixpeek import MixpeekClient

    clients = [
        MixpeekClient(f"sk_rotated_{i}", "default", base_url="https://api.mixpeek.example") for i in range(3)
    ]
    contexts = {id(client._http._transport._pool._ssl_context) for client in clients}  # type: ignore[attr-defined]
    for client in clients:
        await client.aclose()
    assert len(contexts) == 1

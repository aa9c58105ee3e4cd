"""The Kubernetes client's connection pools across credential refreshes, without a cluster:
a refresh that changes the transport (an exec plugin's new client certificate) replaces the
pool, and the replaced one must be closed once no request can still be using it."""

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

"""KubeClient's HTTP/1.1 fallback against the real kube-apiserver.

The API server serves an anonymous HTTP/2 request and then closes the connection (GOAWAY,
its mitigation of CVE-2023-44487), which can lose the response on the client side: the
same protocol error a connection lost after the server acted on a request gives. The
client asks again over HTTP/1.1 only when sending twice is safe, and keeps one fallback
pool for that instead of building a new one (with a new TLS context) every time.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import httpx
import pytest

from hack.localcluster import ControlPlane
from mixpeek_operator.constants import API_VERSION, KIND
from mixpeek_operator.kube import EVENTS, KubeClient, KubeConnection, KubeConnectionError, ObjectReference
from mixpeek_operator.kube import transport as kube_module  # where the client builds its TLS contexts
from tests.integration.test_kube_client import service_account_kubeconfig
from tests.support.operator_support import kubernetes_writes


@pytest.fixture
def anonymous_may_use_events(cluster: ControlPlane, namespace: str) -> None:
    """system:anonymous may create and read Events in the test namespace (and nothing else)."""
    cluster.kubectl(
        "-n", namespace, "create", "role", "anonymous-events", "--verb=create,get", "--resource=events"
    )
    cluster.kubectl(
        "-n",
        namespace,
        "create",
        "rolebinding",
        "anonymous-events",
        "--role=anonymous-events",
        "--user=system:anonymous",
    )
    url = f"{cluster.server}/api/v1/namespaces/{namespace}/events/absent"
    deadline = time.monotonic() + 15
    with httpx.Client(verify=ssl.create_default_context(cafile=cluster.pki.ca_cert), http2=False) as client:
        while client.get(url).status_code != 404:  # 403 until the RBAC cache has the binding
            assert time.monotonic() < deadline, "RoleBinding never took effect"
            time.sleep(0.2)


def anonymous(cluster: ControlPlane) -> KubeConnection:
    return KubeConnection(server=cluster.server, ca_path=cluster.pki.ca_cert)


def event_posts(cluster: ControlPlane) -> float:
    return sum(n for key, n in kubernetes_writes(cluster).items() if key.startswith("events//POST"))


@pytest.mark.usefixtures("anonymous_may_use_events")
async def test_a_post_whose_answer_was_lost_is_not_sent_again(cluster: ControlPlane, namespace: str) -> None:
    involved = ObjectReference(API_VERSION, KIND, namespace, "lost-answer", "uid-lost-answer")
    before = event_posts(cluster)
    async with KubeClient(anonymous(cluster)) as kube:
        with pytest.raises(KubeConnectionError):  # the outcome is unknown: the caller decides
            await kube.create_event(involved, type="Normal", reason="Created", message="once")
    assert event_posts(cluster) - before == 1  # served once (the server did create it), not re-sent


@pytest.mark.usefixtures("anonymous_may_use_events")
async def test_a_safe_request_is_asked_again_over_one_reused_http1_pool(
    cluster: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    contexts = 0
    build = kube_module.ssl_context

    def counting(connection: KubeConnection) -> object:
        nonlocal contexts
        contexts += 1
        return build(connection)

    monkeypatch.setattr(kube_module, "ssl_context", counting)
    async with KubeClient(anonymous(cluster)) as kube:
        for _ in range(3):
            # Anonymous GET: answered over HTTP/2, then the connection is closed (GOAWAY).
            assert await kube.get_object(EVENTS, namespace, "absent") is None
    # The HTTP/2 pool and one fallback pool: not one new pool (and TLS context) per fallback.
    assert contexts <= 2, contexts


async def test_a_post_refused_for_expired_credentials_is_sent_again_after_the_refresh(
    cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    _, good = service_account_kubeconfig(cluster, namespace, "poster", tmp_path / "kc", admin=True)
    tokens = iter(["expired-token-0123456789", good])

    async def provider() -> KubeConnection:
        return KubeConnection(server=cluster.server, ca_path=cluster.pki.ca_cert, token=next(tokens))

    involved = ObjectReference(API_VERSION, KIND, namespace, "refreshed", "uid-refreshed")
    writes: list[tuple[str, int]] = []
    async with KubeClient(provider, on_write=lambda kind, status: writes.append((kind, status))) as kube:
        created = await kube.create_event(involved, type="Normal", reason="Created", message="after refresh")
    assert created["reason"] == "Created"
    assert writes[-1] == ("event", 201)
    events = cluster.kubectl(
        "-n", namespace, "get", "events", "--field-selector=involvedObject.name=refreshed", "-o", "name"
    ).stdout.split()
    assert len(events) == 1

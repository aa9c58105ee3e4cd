"""KubeClient against the real local kube-apiserver (RBAC on, real TLS, real tokens)."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client as k8s

from hack.localcluster import ControlPlane, free_port, write_kubeconfig
from mixpeek_operator.constants import API_VERSION, FINALIZER, GROUP, KIND, PLURAL, VERSION
from mixpeek_operator.kube import (
    BUCKETSYNCS,
    EVENT_MESSAGE_LIMIT,
    NAMESPACES,
    JsonObject,
    KubeClient,
    KubeConflict,
    KubeConnection,
    KubeConnectionError,
    KubeForbidden,
    KubeInvalid,
    KubeNotFound,
    KubeUnauthorized,
    ObjectReference,
)
from tests.support.kube_testing import TestingKubeClient

OTHER_FINALIZER = "other.example.com/cleanup"
Writes = list[tuple[str, int]]


def bucketsync(name: str) -> JsonObject:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {"bucketId": "bkt_1", "connectionId": "conn_1", "sourcePath": "videos/in"},
    }


def create(api_client: k8s.ApiClient, namespace: str, name: str) -> JsonObject:
    api = k8s.CustomObjectsApi(api_client)
    return cast(
        JsonObject, api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, bucketsync(name))
    )


def kubectl_json(cluster: ControlPlane, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def service_account_kubeconfig(
    cluster: ControlPlane, namespace: str, name: str, path: Path, *, admin: bool
) -> tuple[Path, str]:
    """A token kubeconfig for a new ServiceAccount (token from the TokenRequest API)."""
    cluster.kubectl("-n", namespace, "create", "serviceaccount", name)
    if admin:
        cluster.kubectl(
            "-n",
            namespace,
            "create",
            "rolebinding",
            name,
            "--clusterrole=cluster-admin",
            f"--serviceaccount={namespace}:{name}",
        )
    token = cluster.kubectl("-n", namespace, "create", "token", name, "--duration=10m").stdout.strip()
    kubeconfig = write_kubeconfig(path, cluster.server, cluster.pki.ca_cert, user=name, token=token)
    if admin:  # the RBAC authorizer's cache catches up with the new binding within moments
        deadline = time.monotonic() + 15
        while (
            cluster.kubectl(
                "auth", "can-i", "get", PLURAL, "-n", namespace, kubeconfig=kubeconfig, check=False
            ).stdout.strip()
            != "yes"
        ):
            assert time.monotonic() < deadline, "RoleBinding never took effect"
            time.sleep(0.2)
    return kubeconfig, token


@pytest.fixture
def writes() -> Writes:
    return []


@pytest.fixture
async def kube(
    cluster: ControlPlane, crd_installed: None, writes: Writes
) -> AsyncIterator[TestingKubeClient]:
    connection = KubeConnection.from_kubeconfig(cluster.kubeconfig)
    async with TestingKubeClient(
        connection, on_write=lambda kind, status: writes.append((kind, status))
    ) as client:
        yield client


# --- reads and status -----------------------------------------------------------------------


async def test_get_object_and_list(
    kube: TestingKubeClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    assert await kube.get_object(BUCKETSYNCS, namespace, "missing") is None
    created = create(api_client, namespace, "a")
    create(api_client, namespace, "b")
    got = await kube.get_object(BUCKETSYNCS, namespace, "a")
    assert got is not None
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    listed = await kube.list_objects(BUCKETSYNCS, namespace)
    assert sorted(item["metadata"]["name"] for item in listed) == ["a", "b"]
    everywhere = await kube.list_objects(BUCKETSYNCS)
    assert {"a", "b"} <= {item["metadata"]["name"] for item in everywhere}


async def test_patch_status_changes_status_only(
    kube: TestingKubeClient, api_client: k8s.ApiClient, namespace: str, writes: Writes
) -> None:
    created = create(api_client, namespace, "s")
    patched = await kube.patch_status(
        BUCKETSYNCS,
        namespace,
        "s",
        # spec in a status patch is ignored by the API server's status strategy
        {"status": {"syncConfigId": "sc_1", "observedGeneration": 1}, "spec": {"batchSize": 7}},
    )
    assert patched["status"]["syncConfigId"] == "sc_1"
    assert patched["status"]["observedGeneration"] == 1
    assert patched["spec"] == created["spec"]
    assert patched["metadata"]["generation"] == created["metadata"]["generation"] == 1
    assert writes == [("status", 200)]

    # A merge patch removes a field with null, and merges the rest.
    again = await kube.patch_status(BUCKETSYNCS, namespace, "s", {"status": {"syncConfigId": None}})
    assert "syncConfigId" not in again["status"]
    assert again["status"]["observedGeneration"] == 1

    # resourceVersion in the patch makes it conditional.
    stale = {
        "metadata": {"resourceVersion": patched["metadata"]["resourceVersion"]},
        "status": {"bucketId": "x"},
    }
    with pytest.raises(KubeConflict) as conflict:
        await kube.patch_status(BUCKETSYNCS, namespace, "s", stale)
    assert conflict.value.status == 409
    assert "the object has been modified" in str(conflict.value)


async def test_patch_object_merge_and_json(
    kube: TestingKubeClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    create(api_client, namespace, "p")
    merged = await kube.patch_object(
        BUCKETSYNCS, namespace, "p", {"metadata": {"annotations": {"mixpeek.com/x": "1"}}}
    )
    assert merged["metadata"]["annotations"] == {"mixpeek.com/x": "1"}
    ops = [{"op": "remove", "path": "/metadata/annotations/mixpeek.com~1x"}]
    removed = await kube.patch_object(BUCKETSYNCS, namespace, "p", ops, patch_type="json")
    assert not removed["metadata"].get("annotations")


async def test_a_patch_can_ask_for_the_metadata_alone_back(
    kube: TestingKubeClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    """What the shard assigner asks for: the written object as a PartialObjectMetadata (no
    spec, no status), and a refused write still answered with its Status."""
    create(api_client, namespace, "m")
    labels = {"metadata": {"labels": {"shard.mixpeek.com/owner": "a"}}}
    merged = await kube.merge_patch_object(BUCKETSYNCS, namespace, "m", labels, write="t", metadata_only=True)
    assert merged["kind"] == "PartialObjectMetadata"
    assert "spec" not in merged
    assert merged["metadata"]["labels"] == {"shard.mixpeek.com/owner": "a"}
    move = [
        {"op": "test", "path": "/metadata/labels/shard.mixpeek.com~1owner", "value": "a"},
        {"op": "replace", "path": "/metadata/labels/shard.mixpeek.com~1owner", "value": "b"},
    ]
    moved = await kube.json_patch_object(BUCKETSYNCS, namespace, "m", move, write="t", metadata_only=True)
    assert moved["kind"] == "PartialObjectMetadata"
    assert moved["metadata"]["labels"]["shard.mixpeek.com/owner"] == "b"
    with pytest.raises(KubeInvalid):  # the `test` sees "b" now
        await kube.json_patch_object(BUCKETSYNCS, namespace, "m", move, write="t", metadata_only=True)
    stored = await kube.get_object(BUCKETSYNCS, namespace, "m")
    assert stored is not None
    assert stored["spec"]["sourcePath"] == "videos/in"  # the object itself is whole


# --- finalizers ---------------------------------------------------------------------------


async def test_finalizers_are_idempotent(
    kube: TestingKubeClient, api_client: k8s.ApiClient, namespace: str, writes: Writes
) -> None:
    create(api_client, namespace, "f")
    first = await kube.add_finalizer(BUCKETSYNCS, namespace, "f", FINALIZER)
    second = await kube.add_finalizer(BUCKETSYNCS, namespace, "f", FINALIZER)
    assert first["metadata"]["finalizers"] == second["metadata"]["finalizers"] == [FINALIZER]
    assert writes == [("metadata", 200)]  # the second call found it present: no write

    removed = await kube.remove_finalizer(BUCKETSYNCS, namespace, "f", FINALIZER)
    assert removed is not None
    assert not removed["metadata"].get("finalizers")
    again = await kube.remove_finalizer(BUCKETSYNCS, namespace, "f", FINALIZER)
    assert again is not None
    assert writes == [("metadata", 200), ("metadata", 200)]

    with pytest.raises(KubeNotFound):
        await kube.add_finalizer(BUCKETSYNCS, namespace, "nope", FINALIZER)
    assert await kube.remove_finalizer(BUCKETSYNCS, namespace, "nope", FINALIZER) is None


class _InterleavingClient(KubeClient):
    """Runs `kubectl` between our read and our write, exactly once: a deterministic race."""

    def __init__(self, *args: Any, interleave: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._interleave = interleave

    async def _call(self, method: str, path: str, **kwargs: Any) -> JsonObject:
        if method == "PATCH" and self._interleave is not None:
            interleave, self._interleave = self._interleave, None
            await asyncio.to_thread(interleave)
        return await super()._call(method, path, **kwargs)


@pytest.mark.parametrize("operation", ["add", "remove"])
async def test_finalizer_edit_survives_a_concurrent_kubectl_edit(
    cluster: ControlPlane, crd_installed: None, api_client: k8s.ApiClient, namespace: str, operation: str
) -> None:
    create(api_client, namespace, "race")
    if operation == "remove":
        cluster.kubectl(
            "-n",
            namespace,
            "patch",
            f"{PLURAL}/race",
            "--type=merge",
            "-p",
            json.dumps({"metadata": {"finalizers": [FINALIZER]}}),
        )

    def kubectl_adds_another() -> None:
        # Before our add the object has no finalizers list yet; before our remove it has one.
        op: JsonObject = {"op": "add", "path": "/metadata/finalizers", "value": [OTHER_FINALIZER]}
        if operation == "remove":
            op = {"op": "add", "path": "/metadata/finalizers/-", "value": OTHER_FINALIZER}
        cluster.kubectl("-n", namespace, "patch", f"{PLURAL}/race", "--type=json", "-p", json.dumps([op]))

    writes: Writes = []
    connection = KubeConnection.from_kubeconfig(cluster.kubeconfig)
    async with _InterleavingClient(
        connection, interleave=kubectl_adds_another, on_write=lambda k, s: writes.append((k, s))
    ) as kube:
        result: JsonObject | None
        if operation == "add":
            result = await kube.add_finalizer(BUCKETSYNCS, namespace, "race", FINALIZER)
            expected = [OTHER_FINALIZER, FINALIZER]
        else:
            result = await kube.remove_finalizer(BUCKETSYNCS, namespace, "race", FINALIZER)
            expected = [OTHER_FINALIZER]
    assert result is not None
    assert result["metadata"]["finalizers"] == expected
    assert writes == [("metadata", 409), ("metadata", 200)]  # lost the race once, re-read, won
    stored = kubectl_json(cluster, "-n", namespace, "get", f"{PLURAL}/race")
    assert stored["metadata"]["finalizers"] == expected


async def test_concurrent_finalizer_writers_all_survive(
    kube: TestingKubeClient, cluster: ControlPlane, api_client: k8s.ApiClient, namespace: str, writes: Writes
) -> None:
    create(api_client, namespace, "crowd")
    seed = "seed.example.com/keep"
    await kube.patch_object(BUCKETSYNCS, namespace, "crowd", {"metadata": {"finalizers": [seed]}})
    writes.clear()
    ours = [f"mixpeek.com/f{i}" for i in range(4)]

    def kubectl_adds() -> None:  # an append, applied atomically by the API server
        ops = [{"op": "add", "path": "/metadata/finalizers/-", "value": OTHER_FINALIZER}]
        cluster.kubectl("-n", namespace, "patch", f"{PLURAL}/crowd", "--type=json", "-p", json.dumps(ops))

    await asyncio.gather(
        asyncio.to_thread(kubectl_adds),
        *(kube.add_finalizer(BUCKETSYNCS, namespace, "crowd", name) for name in ours),
    )
    stored = await kube.get_object(BUCKETSYNCS, namespace, "crowd")
    assert stored is not None
    assert sorted(stored["metadata"]["finalizers"]) == sorted([seed, OTHER_FINALIZER, *ours])
    assert [status for _, status in writes].count(200) == len(ours)


async def test_removing_the_last_finalizer_lets_a_deleting_object_go(
    kube: TestingKubeClient, cluster: ControlPlane, api_client: k8s.ApiClient, namespace: str
) -> None:
    create(api_client, namespace, "doomed")
    await kube.add_finalizer(BUCKETSYNCS, namespace, "doomed", FINALIZER)
    cluster.kubectl("-n", namespace, "delete", f"{PLURAL}/doomed", "--wait=false")
    deleting = await kube.get_object(BUCKETSYNCS, namespace, "doomed")
    assert deleting is not None
    assert deleting["metadata"]["deletionTimestamp"]

    last = await kube.remove_finalizer(BUCKETSYNCS, namespace, "doomed", FINALIZER)
    assert last is not None  # the API server answers with the object's final state
    assert await kube.get_object(BUCKETSYNCS, namespace, "doomed") is None
    assert await kube.remove_finalizer(BUCKETSYNCS, namespace, "doomed", FINALIZER) is None


# --- secrets and events -------------------------------------------------------------------


async def test_get_secret(kube: TestingKubeClient, cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl(
        "-n", namespace, "create", "secret", "generic", "creds", "--from-literal=apiKey=sk_test_1"
    )
    secret = await kube.get_secret(namespace, "creds")
    assert secret is not None
    assert base64.b64decode(secret["data"]["apiKey"]) == b"sk_test_1"
    assert await kube.get_secret(namespace, "absent") is None


async def test_create_event_is_visible_to_kubectl(
    kube: TestingKubeClient, cluster: ControlPlane, api_client: k8s.ApiClient, namespace: str, writes: Writes
) -> None:
    obj = create(api_client, namespace, "evented")
    reference = ObjectReference.from_object(obj)
    await kube.create_event(reference, type="Normal", reason="Created", message="created remote sync sc_1")
    await kube.create_event(reference, type="Warning", reason="Stalled", message="x" * 5000, instance="pod-1")
    assert writes == [("event", 201), ("event", 201)]

    events = kubectl_json(
        cluster, "-n", namespace, "get", "events", "--field-selector=involvedObject.name=evented"
    )["items"]
    by_reason = {event["reason"]: event for event in events}
    created = by_reason["Created"]
    assert created["type"] == "Normal"
    assert created["message"] == "created remote sync sc_1"
    assert created["involvedObject"]["uid"] == obj["metadata"]["uid"]
    assert created["involvedObject"]["kind"] == KIND
    assert created["count"] == 1
    assert created["firstTimestamp"]
    assert created["lastTimestamp"]
    assert created["reportingComponent"] == created["source"]["component"] == "mixpeek-operator"
    assert created["metadata"]["name"].startswith("evented.")
    stalled = by_reason["Stalled"]
    assert len(stalled["message"]) == EVENT_MESSAGE_LIMIT
    assert stalled["reportingInstance"] == "pod-1"

    described = cluster.kubectl("-n", namespace, "describe", f"{PLURAL}/evented").stdout
    assert "Created" in described
    assert "created remote sync sc_1" in described


# --- errors and credentials ---------------------------------------------------------------


async def test_typed_errors(kube: TestingKubeClient, api_client: k8s.ApiClient, namespace: str) -> None:
    with pytest.raises(KubeNotFound) as missing:
        await kube.patch_status(BUCKETSYNCS, namespace, "ghost", {"status": {"syncConfigId": "x"}})
    assert missing.value.status == 404
    assert missing.value.reason == "NotFound"
    assert 'bucketsyncs.mixpeek.com "ghost" not found' in missing.value.message

    create(api_client, namespace, "strict")
    with pytest.raises(KubeInvalid) as invalid:
        await kube.patch_object(BUCKETSYNCS, namespace, "strict", {"spec": {"batchSize": 1000}})
    assert invalid.value.status == 422
    assert "spec.batchSize" in invalid.value.message
    assert "less than or equal to 100" in str(invalid.value)


async def test_forbidden_for_a_service_account_without_rbac(
    cluster: ControlPlane, crd_installed: None, api_client: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    create(api_client, namespace, "guarded")
    kubeconfig, token = service_account_kubeconfig(cluster, namespace, "nobody", tmp_path / "kc", admin=False)
    async with KubeClient(KubeConnection.from_kubeconfig(kubeconfig)) as kube:
        with pytest.raises(KubeForbidden) as forbidden:
            await kube.get_object(BUCKETSYNCS, namespace, "guarded")
        with pytest.raises(KubeForbidden):
            await kube.patch_status(BUCKETSYNCS, namespace, "guarded", {"status": {"bucketId": "b"}})
    assert forbidden.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in forbidden.value.message
    assert token not in str(forbidden.value)
    assert token not in repr(forbidden.value)


async def test_static_bad_token_is_unauthorized_and_never_shown(
    cluster: ControlPlane, namespace: str
) -> None:
    token = "forged-token-0123456789"
    connection = KubeConnection(server=cluster.server, ca_path=cluster.pki.ca_cert, token=token)
    assert token not in repr(connection)
    async with KubeClient(connection) as kube:
        with pytest.raises(KubeUnauthorized) as unauthorized:
            await kube.get_secret(namespace, "any")
        assert token not in repr(kube)
    assert unauthorized.value.status == 401
    assert token not in str(unauthorized.value)


async def test_provider_is_called_again_after_a_401(
    cluster: ControlPlane, crd_installed: None, api_client: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    create(api_client, namespace, "refreshed")
    _, good = service_account_kubeconfig(cluster, namespace, "operator", tmp_path / "kc", admin=True)
    tokens = iter(["expired-token-0123456789", good])
    calls = 0

    async def provider() -> KubeConnection:
        nonlocal calls
        calls += 1
        return KubeConnection(server=cluster.server, ca_path=cluster.pki.ca_cert, token=next(tokens))

    writes: Writes = []
    async with KubeClient(provider, on_write=lambda k, s: writes.append((k, s))) as kube:
        assert calls == 1
        patched = await kube.patch_status(
            BUCKETSYNCS, namespace, "refreshed", {"status": {"syncConfigId": "sc_9"}}
        )
        assert patched["status"]["syncConfigId"] == "sc_9"
        assert calls == 2
        assert writes == [("status", 401), ("status", 200)]
        assert await kube.get_object(BUCKETSYNCS, namespace, "refreshed") is not None
        assert calls == 2  # the fresh credentials are kept


async def test_concurrent_401s_refresh_credentials_once(
    cluster: ControlPlane, crd_installed: None, api_client: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    create(api_client, namespace, "herd")
    _, good = service_account_kubeconfig(cluster, namespace, "operator", tmp_path / "kc", admin=True)
    calls: list[str] = []

    async def provider() -> KubeConnection:
        calls.append("expired-token-0123456789" if not calls else good)
        return KubeConnection(server=cluster.server, ca_path=cluster.pki.ca_cert, token=calls[-1])

    async with KubeClient(provider) as kube:
        results = await asyncio.gather(*(kube.get_object(BUCKETSYNCS, namespace, "herd") for _ in range(20)))
    assert all(result is not None for result in results)
    assert len(calls) == 2  # the initial connection and exactly one refresh for twenty 401s


async def test_in_cluster_rereads_a_rotated_token_file(
    cluster: ControlPlane, crd_installed: None, api_client: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    create(api_client, namespace, "pod-view")
    _, good = service_account_kubeconfig(cluster, namespace, "in-pod", tmp_path / "kc", admin=True)
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(cluster.pki.ca_cert.read_bytes())
    (account / "token").write_text("not-yet-valid-token")
    port = cluster.server.rsplit(":", 1)[1]
    connection = KubeConnection.in_cluster(
        account, {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}
    )
    assert connection.server == cluster.server
    async with KubeClient(connection) as kube:
        with pytest.raises(KubeUnauthorized):  # re-read once on 401, still bad
            await kube.get_object(BUCKETSYNCS, namespace, "pod-view")
        (account / "token").write_text(good + "\n")  # the kubelet rotates the projected token
        assert await kube.get_object(BUCKETSYNCS, namespace, "pod-view") is not None


# --- kubeconfig ---------------------------------------------------------------------------


def _tls_temp_dirs() -> set[str]:
    return {path.name for path in Path(tempfile.gettempdir()).glob("mixpeek-operator-tls-*")}


async def test_kubeconfig_with_embedded_data(cluster: ControlPlane, namespace: str, tmp_path: Path) -> None:
    pki = cluster.pki

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": cluster.server, "certificate-authority-data": b64(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": b64(pki.admin_cert),
                    "client-key-data": b64(pki.admin_key),
                },
            }
        ],
        "contexts": [
            {"name": "other", "context": {"cluster": "local", "user": "nobody"}},
            {"name": "embedded", "context": {"cluster": "local", "user": "admin"}},
        ],
        "current-context": "other",
    }
    path = tmp_path / "embedded.yaml"
    path.write_text(json.dumps(config))
    before = _tls_temp_dirs()
    connection = KubeConnection.from_kubeconfig(path, context="embedded")
    assert connection.ca_path is None
    assert connection.ca_data is not None
    assert connection.private_key_data is not None
    assert "PRIVATE KEY" not in repr(connection)
    async with KubeClient(connection) as kube:
        namespace_object = await kube.get_object(NAMESPACES, None, namespace)
        assert namespace_object is not None
        assert namespace_object["metadata"]["name"] == namespace
    assert _tls_temp_dirs() == before  # the key never stays on disk


async def test_kubeconfig_from_the_environment_with_relative_paths(
    cluster: ControlPlane, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = cluster.pki
    directory = tmp_path / "conf"
    directory.mkdir()
    for source in (pki.ca_cert, pki.admin_cert, pki.admin_key):
        (directory / source.name).write_bytes(source.read_bytes())
    relative = directory / "config"
    write_kubeconfig(
        relative, cluster.server, Path("ca.crt"), user="admin", cert=Path("admin.crt"), key=Path("admin.key")
    )
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing.yaml'}:{relative}")
    monkeypatch.chdir(tmp_path)  # relative to the kubeconfig's directory, not the cwd
    connection = KubeConnection.from_kubeconfig()
    assert connection.ca_path == directory / "ca.crt"
    async with KubeClient(connection) as kube:
        assert await kube.get_object(NAMESPACES, None, namespace) is not None


async def test_connection_errors_are_typed(cluster: ControlPlane, writes: Writes) -> None:
    closed = KubeConnection(server=f"https://127.0.0.1:{free_port()}", ca_path=cluster.pki.ca_cert)
    async with KubeClient(closed, on_write=lambda k, s: writes.append((k, s))) as kube:
        with pytest.raises(KubeConnectionError) as refused:
            await kube.patch_status(BUCKETSYNCS, "ns", "x", {"status": {}})
    assert refused.value.status == 0
    assert writes == [("status", 0)]

    untrusted = KubeConnection(server=cluster.server)  # system CAs do not know the local CA
    async with KubeClient(untrusted) as kube:
        with pytest.raises(KubeConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await kube.get_secret("default", "x")

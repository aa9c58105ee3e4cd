"""The path users take first, on a real node: `helm install` → the operator pod from the image
built here → BucketSync Ready.

One scenario in order (each test builds on the previous one): the emulator as a pod behind
its Service, the chart installed into a `restricted` namespace, a BucketSync in another
namespace, a pod deletion in the middle of a bulk create, an upgrade, the metrics Service,
and an uninstall. The node has no cluster DNS (no CoreDNS image without a registry), so the
operator reaches the emulator at its Service's ClusterIP; the host reaches Services only
through the apiserver's Service proxy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from node_support import Node
from operator_support import bucketsync, is_ready, wait_admission, wait_for

import localnode

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "mixpeek-operator"
SYSTEM_NS = "mixpeek-system"
APP_NS = "e2e-app"
RELEASE = "mixpeek-operator"
DEPLOYMENT = RELEASE  # the chart's fullname when the release is named like the chart
EMULATOR_API_KEY = "sk_test_emulator"
BULK = 50
NONROOT_UID = 65532

pytestmark = pytest.mark.timeout(900)


def _emulator(node: Node, path: str, *, method: str = "GET", body: Any = None) -> Any:
    return node.raw(
        f"/api/v1/namespaces/{SYSTEM_NS}/services/http:mixpeek-emulator:http/proxy/_emulator/{path}",
        method=method,
        body=body,
    )


def _remote_syncs(node: Node, query: str = "") -> list[dict[str, Any]]:
    syncs: list[dict[str, Any]] = _emulator(node, f"syncs{query}")["results"]
    return syncs


def _operator_pod(node: Node) -> dict[str, Any]:
    pods = node.json("-n", SYSTEM_NS, "get", "pods", "-l", "app.kubernetes.io/name=mixpeek-operator")["items"]
    running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(running) == 1, [p["metadata"]["name"] for p in pods]
    pod: dict[str, Any] = running[0]
    return pod


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (pod.get("status") or {}).get("conditions", [])
    )


def _wait_operator_ready(node: Node, not_named: str | None = None, timeout: float = 180) -> dict[str, Any]:
    def ready_pod() -> dict[str, Any] | None:
        pods = node.json("-n", SYSTEM_NS, "get", "pods", "-l", "app.kubernetes.io/name=mixpeek-operator")[
            "items"
        ]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        if len(live) == 1 and live[0]["metadata"]["name"] != not_named and _pod_ready(live[0]):
            return live[0]
        return None

    try:
        pod: dict[str, Any] = wait_for(ready_pod, timeout=timeout, interval=1, what="operator pod Ready")
    except AssertionError:
        print(node.kubectl("-n", SYSTEM_NS, "describe", "pods", check=False).stdout[-6000:])
        raise
    return pod


def _bucketsyncs(node: Node) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = node.json("-n", APP_NS, "get", "bucketsyncs")["items"]
    return items


def _apply(node: Node, *manifests: dict[str, Any], namespace: str = APP_NS) -> None:
    node.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
    )


def _processes_of(node: Node, needle: str) -> list[int]:
    """Host PIDs of the node's pod processes whose command line contains `needle`."""
    return [
        pid
        for pid in sorted(localnode.pod_pids(node.running.layout))
        if needle in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    ]


def test_emulator_runs_as_a_pod_behind_its_service(node: Node) -> None:
    node.kubectl("create", "namespace", SYSTEM_NS)
    node.kubectl("label", "namespace", SYSTEM_NS, "pod-security.kubernetes.io/enforce=restricted")
    manifest = (REPO_ROOT / "docs" / "quickstart" / "emulator.yaml").read_text()
    manifest = manifest.replace("ghcr.io/mixpeek/mixpeek-operator:0.1.0", node.image)
    docs = [doc for doc in yaml.safe_load_all(manifest) if doc]
    for doc in docs:
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    _apply(node, *docs, namespace=SYSTEM_NS)
    node.kubectl(
        "-n", SYSTEM_NS, "rollout", "status", "deploy/mixpeek-emulator", "--timeout=180s", timeout=200
    )
    assert _emulator(node, "health") == {"status": "ok"}


def test_helm_install_operator_pod_ready_restricted_nonroot_in_cluster(node: Node) -> None:
    service = node.json("-n", SYSTEM_NS, "get", "service", "mixpeek-emulator")
    emulator_url = f"http://{service['spec']['clusterIP']}:8099"
    node.kubectl("create", "namespace", APP_NS)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "mixpeek-credentials"},
        "stringData": {"apiKey": EMULATOR_API_KEY, "namespace": "default", "baseUrl": emulator_url},
    }
    _apply(node, secret)
    repository, tag = node.image.rsplit(":", 1)
    node.helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        SYSTEM_NS,
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=Never",
        "--set",
        "settings.observeInterval=5",
        "--set",
        "settings.logFormat=json",
        "--wait",
        "--timeout=180s",
    )
    # The chart's MutatingAdmissionPolicy is loaded asynchronously (503s for BucketSync creates
    # until it has the CRD's schema): the next tests create BucketSyncs at once.
    manifest = node.helm("get", "manifest", RELEASE, "--namespace", SYSTEM_NS).stdout
    wait_admission(node, APP_NS, finalizer_added="kind: MutatingAdmissionPolicy\n" in manifest)
    pod = _wait_operator_ready(node)
    spec = pod["spec"]
    container = spec["containers"][0]
    assert container["image"] == node.image
    assert container["imagePullPolicy"] == "Never"
    # The chart's security settings, as the kubelet ran them: the process itself is checked.
    (pid,) = _processes_of(node, "mixpeek-operator run")
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    assert status["Uid"].split()[0] == str(NONROOT_UID)
    assert int(status["CapEff"].strip(), 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    mounts = [line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()]
    (root_mount,) = [fields for fields in mounts if fields[4] == "/"]
    assert "ro" in root_mount[5].split(",")
    # In-cluster identity: the ServiceAccount token, no kubeconfig anywhere in its environment.
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not [item for item in environ if item.startswith(b"KUBECONFIG=")]
    assert any(item.startswith(b"KUBERNETES_SERVICE_HOST=") for item in environ)
    (token_dir,) = [f[4] for f in mounts if f[4].endswith("/secrets/kubernetes.io/serviceaccount")]
    token = Path(f"/proc/{pid}/root{token_dir}/token")
    assert token.read_text().count(".") == 2  # a JWT issued by TokenRequest
    # Startup probes gate readiness: a starting pod (operator or emulator) never reports
    # "Readiness probe failed".
    events = node.json("-n", SYSTEM_NS, "get", "events", "--field-selector", "reason=Unhealthy")["items"]
    assert not [e["message"] for e in events if e["message"].startswith("Readiness probe failed")]


def test_bucketsync_in_another_namespace_ready_with_file_counts(node: Node) -> None:
    _apply(node, bucketsync("first", bucketId="bkt_media"))

    def ready() -> dict[str, Any] | None:
        obj = node.json("-n", APP_NS, "get", "bucketsync", "first")
        return obj if is_ready(obj) else None

    wait_for(ready, timeout=120, interval=1, what="BucketSync first Ready")
    # Let the emulated sync run once (10 emulated minutes), then the operator observes it.
    _emulator(node, "clock/advance", method="POST", body={"seconds": 600})

    def counted() -> dict[str, Any] | None:
        obj = node.json("-n", APP_NS, "get", "bucketsync", "first")
        metrics = (obj.get("status") or {}).get("metrics") or {}
        return obj if metrics.get("filesSynced", 0) > 0 else None

    obj = wait_for(counted, timeout=120, interval=1, what="file counts in status")
    (remote,) = _remote_syncs(node, "?bucket_id=bkt_media")
    assert obj["status"]["syncConfigId"] == remote["sync_config_id"]
    assert obj["status"]["metrics"]["filesSynced"] == remote["total_files_synced"]


def test_kubectl_logs_of_the_operator_pod(node: Node) -> None:
    pod = _operator_pod(node)["metadata"]["name"]
    logs = node.kubectl("-n", SYSTEM_NS, "logs", pod).stdout
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert lines, logs[-2000:]
    assert any("operator started" in str(line.get("message", "")) for line in lines), logs[-2000:]


def test_operator_pod_deleted_mid_bulk_create_finishes_exactly_once(node: Node) -> None:
    _emulator(node, "requests", method="DELETE")
    names = [f"bulk-{i:02d}" for i in range(BULK)]
    _apply(node, *(bucketsync(name, sourcePath=f"demo-bucket/bulk/{name}") for name in names))
    old = _operator_pod(node)["metadata"]["name"]
    wait_for(
        lambda: _emulator(node, "requests/counts")["endpoints"]["create"] >= 1,
        timeout=60,
        interval=0.2,
        what="first remote create",
    )
    created_before = _emulator(node, "requests/counts")["endpoints"]["create"]
    node.kubectl("-n", SYSTEM_NS, "delete", "pod", old, "--wait=false")
    # Mid bulk: some, not all, remote syncs existed when the pod was told to stop.
    assert created_before < BULK, created_before
    _wait_operator_ready(node, not_named=old)

    def all_ready() -> bool:
        return sum(is_ready(obj) for obj in _bucketsyncs(node) if obj["metadata"]["name"] in names) == BULK

    wait_for(all_ready, timeout=300, interval=2, what=f"{BULK} BucketSyncs Ready")
    remote = _remote_syncs(node, "?bucket_id=bkt_demo")
    assert len(remote) == BULK
    ids = {obj["status"]["syncConfigId"] for obj in _bucketsyncs(node) if obj["metadata"]["name"] in names}
    assert ids == {sync["sync_config_id"] for sync in remote}
    counts = _emulator(node, "requests/counts")
    assert (
        counts["endpoint_status"]["create"].get("200", 0) + counts["endpoint_status"]["create"].get("201", 0)
        == BULK
    ), counts


def test_metrics_answer_through_the_chart_service(node: Node) -> None:
    text = node.kubectl(
        "get",
        "--raw",
        f"/api/v1/namespaces/{SYSTEM_NS}/services/http:{RELEASE}-metrics:metrics/proxy/metrics",
    ).stdout
    # The operator's own gauge: every object it manages, Ready.
    assert f'bucketsync_resources{{ready="True",reason="Synced"}} {BULK + 1}.0' in text.splitlines(), text[
        -3000:
    ]


def test_helm_upgrade_rolls_the_pod_and_keeps_objects_ready(node: Node) -> None:
    before = _operator_pod(node)
    remote_before = len(_remote_syncs(node))
    node.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        SYSTEM_NS,
        "--reuse-values",
        "--set",
        "settings.logLevel=DEBUG",
        "--wait",
        "--timeout=180s",
    )
    after = _wait_operator_ready(node, not_named=before["metadata"]["name"])
    env = {e["name"]: e.get("value") for e in after["spec"]["containers"][0]["env"]}
    assert env["MIXPEEK_OPERATOR_LOG_LEVEL"] == "DEBUG"
    time.sleep(10)  # a few observe intervals under the new pod
    objects = _bucketsyncs(node)
    assert len(objects) == BULK + 1
    assert all(is_ready(obj) for obj in objects), [o["metadata"]["name"] for o in objects if not is_ready(o)]
    assert len(_remote_syncs(node)) == remote_before


def test_helm_uninstall_keeps_the_crd_and_the_objects(node: Node) -> None:
    node.helm("uninstall", RELEASE, "--namespace", SYSTEM_NS, "--wait", "--timeout=120s")
    node.kubectl("get", "crd", "bucketsyncs.mixpeek.com")
    assert len(_bucketsyncs(node)) == BULK + 1
    wait_for(
        lambda: (
            not node.json("-n", SYSTEM_NS, "get", "pods", "-l", "app.kubernetes.io/name=mixpeek-operator")[
                "items"
            ]
        ),
        timeout=120,
        interval=1,
        what="operator pod gone",
    )

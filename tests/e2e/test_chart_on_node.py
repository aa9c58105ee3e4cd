"""The path users take first, on a real node: `helm install` → the operator pod from the image
built here → BucketSync Ready.

One scenario in order (each test builds on the previous one): the emulator as a pod behind
its Service, the chart installed into a `restricted` namespace, a BucketSync in another
namespace, a pod deletion in the middle of a bulk create, an upgrade, the metrics Service,
and an uninstall. The operator reaches the emulator by its Service's DNS name (the node's
CoreDNS); the host reaches Services only through the apiserver's Service proxy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.node_support import (
    CHART,
    EmulatorService,
    Node,
    assert_runs_working_tree,
    create_credentials,
    deploy_emulator,
    wait_pods_ready,
)
from tests.support.operator_support import FINALIZER, bucketsync, is_ready, wait_for

SYSTEM_NS = "mixpeek-system"
APP_NS = "e2e-app"
RELEASE = "mixpeek-operator"
DEPLOYMENT = RELEASE  # the chart's fullname when the release is named like the chart
BULK = 50
NONROOT_UID = 65532

pytestmark = pytest.mark.timeout(900)


def _emulator(node: Node) -> EmulatorService:
    return EmulatorService(node, SYSTEM_NS)


def _operator_pod(node: Node) -> dict[str, Any]:
    pods = node.live_pods(SYSTEM_NS)
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def _wait_operator_ready(node: Node, not_named: str | None = None, timeout: float = 180) -> dict[str, Any]:
    (pod,) = wait_pods_ready(node, SYSTEM_NS, 1, not_named=(not_named,) if not_named else (), timeout=timeout)
    return pod


def _bucketsyncs(node: Node) -> list[dict[str, Any]]:
    return node.bucketsyncs(APP_NS)


def test_emulator_runs_as_a_pod_behind_its_service(node: Node) -> None:
    node.kubectl("create", "namespace", SYSTEM_NS)
    node.kubectl("label", "namespace", SYSTEM_NS, "pod-security.kubernetes.io/enforce=restricted")
    deploy_emulator(node, SYSTEM_NS)


def test_helm_install_operator_pod_ready_restricted_nonroot_in_cluster(node: Node) -> None:
    node.kubectl("create", "namespace", APP_NS)
    create_credentials(node, APP_NS, EmulatorService(node, SYSTEM_NS))
    node.helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        SYSTEM_NS,
        *node.image_values(),
        "--set",
        "settings.observeInterval=5",
        "--set",
        "settings.logFormat=json",
        "--wait",
        "--timeout=180s",
    )
    # The moment `helm install --wait` returns (`helm install --wait && kubectl apply`), on a
    # new CRD: admitted, with the finalizer the chart's admission policy adds.
    node.apply(APP_NS, bucketsync("first", bucketId="bkt_media"))
    admitted = node.json("-n", APP_NS, "get", "bucketsync", "first")
    assert admitted["metadata"].get("finalizers") == [FINALIZER], admitted["metadata"]
    pod = _wait_operator_ready(node)
    spec = pod["spec"]
    container = spec["containers"][0]
    assert container["image"] == node.image
    assert container["imagePullPolicy"] == "Never"
    # The chart's security settings, as the kubelet ran them: the process itself is checked.
    (pid,) = node.processes("mixpeek-operator run")
    assert_runs_working_tree(pid)
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
    node.apply(APP_NS, bucketsync("first", bucketId="bkt_media"))

    def ready() -> dict[str, Any] | None:
        obj = node.json("-n", APP_NS, "get", "bucketsync", "first")
        return obj if is_ready(obj) else None

    wait_for(ready, timeout=120, interval=1, what="BucketSync first Ready")
    # Let the emulated sync run once (10 emulated minutes), then the operator observes it.
    _emulator(node).call("clock/advance", method="POST", body={"seconds": 600})

    def counted() -> dict[str, Any] | None:
        obj = node.json("-n", APP_NS, "get", "bucketsync", "first")
        metrics = (obj.get("status") or {}).get("metrics") or {}
        return obj if metrics.get("filesSynced", 0) > 0 else None

    obj = wait_for(counted, timeout=120, interval=1, what="file counts in status")
    (remote,) = _emulator(node).syncs("?bucket_id=bkt_media")
    assert obj["status"]["syncConfigId"] == remote["sync_config_id"]
    assert obj["status"]["metrics"]["filesSynced"] == remote["total_files_synced"]


def test_kubectl_logs_of_the_operator_pod(node: Node) -> None:
    pod = _operator_pod(node)["metadata"]["name"]
    logs = node.kubectl("-n", SYSTEM_NS, "logs", pod).stdout
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert lines, logs[-2000:]
    assert any("operator started" in str(line.get("message", "")) for line in lines), logs[-2000:]


def test_operator_pod_deleted_mid_bulk_create_finishes_exactly_once(node: Node) -> None:
    _emulator(node).call("requests", method="DELETE")
    names = [f"bulk-{i:02d}" for i in range(BULK)]
    node.apply(APP_NS, *(bucketsync(name, sourcePath=f"demo-bucket/bulk/{name}") for name in names))
    old = _operator_pod(node)["metadata"]["name"]
    wait_for(
        lambda: _emulator(node).counts()["endpoints"]["create"] >= 1,
        timeout=60,
        interval=0.2,
        what="first remote create",
    )
    created_before = _emulator(node).counts()["endpoints"]["create"]
    node.kubectl("-n", SYSTEM_NS, "delete", "pod", old, "--wait=false")
    # Mid bulk: some, not all, remote syncs existed when the pod was told to stop.
    assert created_before < BULK, created_before
    _wait_operator_ready(node, not_named=old)

    def all_ready() -> bool:
        return sum(is_ready(obj) for obj in _bucketsyncs(node) if obj["metadata"]["name"] in names) == BULK

    wait_for(all_ready, timeout=300, interval=2, what=f"{BULK} BucketSyncs Ready")
    remote = _emulator(node).syncs("?bucket_id=bkt_demo")
    assert len(remote) == BULK
    ids = {obj["status"]["syncConfigId"] for obj in _bucketsyncs(node) if obj["metadata"]["name"] in names}
    assert ids == {sync["sync_config_id"] for sync in remote}
    counts = _emulator(node).counts()
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
    remote_before = len(_emulator(node).syncs())
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
    assert len(_emulator(node).syncs()) == remote_before


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

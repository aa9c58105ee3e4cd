"""Helpers shared by the operator integration tests and their fixtures (not a test module)."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from kubernetes import client as k8s

from hack.bench.stats import prometheus_sum
from hack.localcluster import ControlPlane, terminate
from mixpeek_operator.constants import FINALIZER, GROUP, PLURAL, VERSION
from mixpeek_operator.emulator.admin import EmulatorAdmin

REPO_ROOT = Path(__file__).resolve().parents[2]
EMULATOR_API_KEY = "sk_test_emulator"
OTHER_API_KEY = "sk_test_other_tenant"
WRONG_API_KEY = "sk_test_wrong_key_never_valid"
EMULATOR_NAMESPACE = "default"
# Every secret the tests hand out; none may show up in logs, Events or status.
ALL_SECRETS = (EMULATOR_API_KEY, OTHER_API_KEY, WRONG_API_KEY)
# The sample files a local-folder connection serves: (relative path, size in bytes).
SAMPLE_FILES = (
    ("videos/intro.mp4", 4096),
    ("videos/outro.mp4", 2048),
    ("videos/drafts/cut.mp4", 1024),
    ("images/logo.png", 512),
    ("docs/readme.txt", 100),
)


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll until `predicate()` is truthy; return its value, or fail with the last one."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: last value {value!r}")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass
class EmulatorProcess:
    url: str
    admin: EmulatorAdmin
    proc: subprocess.Popen[bytes]
    log: Path
    sample_root: Path


def make_secret(
    api_client: k8s.ApiClient,
    namespace: str,
    name: str,
    *,
    api_key: str,
    base_url: str,
    mixpeek_namespace: str | None = EMULATOR_NAMESPACE,
) -> None:
    data = {"apiKey": api_key, "baseUrl": base_url}
    if mixpeek_namespace:
        data["namespace"] = mixpeek_namespace
    body = k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(name=name),
        data={key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    )
    core = k8s.CoreV1Api(api_client)
    try:
        core.create_namespaced_secret(namespace, body)
    except k8s.ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_secret(name, namespace, body)


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_url: str
    health_url: str
    args: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        terminate(self.proc, grace=20)
        return self.proc.returncode

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples matching `labels` (0 when absent)."""
        _, text = http_get(self.metrics_url)
        return prometheus_sum(text, name, **labels)


OperatorFactory = Callable[..., OperatorProcess]
BASE_SPEC: dict[str, Any] = {
    "bucketId": "bkt_demo",
    "connectionId": "conn_s3_demo",
    "sourcePath": "demo-bucket/videos",
    "credentialsRef": {"name": "mixpeek-credentials"},
}


def bucketsync(name: str, **spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(BASE_SPEC)
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BucketSync",
        "metadata": {"name": name},
        "spec": body,
    }


class Kubectl(Protocol):
    """What runs kubectl against a cluster: the test control plane, or the e2e tier's node."""

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]: ...


def admitted_finalizers(cluster: Kubectl, namespace: str) -> list[str] | None:
    """The finalizers a BucketSync gets at admission in `namespace` (a server-side dry run);
    None while the API server refuses with 503 because the MutatingAdmissionPolicy plugin has
    not loaded the CRD's schema yet (it polls the OpenAPI every 5 s)."""
    result = cluster.kubectl(
        "-n",
        namespace,
        "create",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(bucketsync("admission-probe")),
        check=False,
    )
    if result.returncode != 0:
        assert "There can be a delay between when CustomResourceDefinitions" in result.stderr, result.stderr
        return None
    finalizers: list[str] = json.loads(result.stdout)["metadata"].get("finalizers") or []
    return finalizers


def wait_admission(cluster: Kubectl, namespace: str, *, finalizer_added: bool) -> None:
    """Until creates in `namespace` are admitted, with or without the policy's finalizer."""

    def settled() -> bool:
        finalizers = admitted_finalizers(cluster, namespace)
        return finalizers is not None and (FINALIZER in finalizers) == finalizer_added

    wait_for(settled, 60, interval=0.5, what=f"admission in {namespace} (finalizer added: {finalizer_added})")


class Objects:
    """BucketSync access for one test namespace through the official client."""

    def __init__(self, api_client: k8s.ApiClient, cluster: ControlPlane, namespace: str) -> None:
        self.api = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.cluster = cluster
        self.namespace = namespace

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.api.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, manifest
        )
        return result

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def secret(self, name: str) -> k8s.V1Secret | None:
        """The Secret `name` of this namespace, or None once it is gone."""
        try:
            found: k8s.V1Secret = self.core.read_namespaced_secret(name, self.namespace)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.api.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, patch
        )
        return result

    def annotate(self, name: str, **annotations: str) -> None:
        self.patch(name, {"metadata": {"annotations": annotations}})

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return self.cluster.kubectl("-n", self.namespace, *args, input=input, check=check)

    def apply(self, manifest: dict[str, Any], check: bool = True) -> Any:
        return self.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=check)

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return [{"reason": e.reason, "type": e.type, "message": e.message} for e in items]

    def event_reasons(self, name: str) -> list[str]:
        return [event["reason"] for event in self.events(name)]

    def wait_ready(self, name: str, timeout: float = 30) -> dict[str, Any]:
        """The object once it is Ready=True for its current generation."""
        result: dict[str, Any] = wait_for(
            lambda: (obj := self.get(name)) and is_ready(obj) and obj, timeout, what=f"{name} Ready"
        )
        return result

    def wait_stalled(self, name: str, reason: str, timeout: float = 30) -> dict[str, Any]:
        """The object once it is Stalled=True with `reason`."""
        result: dict[str, Any] = wait_for(
            lambda: (obj := self.get(name)) and has_condition(obj, "Stalled", "True", reason) and obj,
            timeout,
            what=f"{name} Stalled/{reason}",
        )
        return result


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            found: dict[str, Any] = item
            return found
    return {}


def is_ready(obj: dict[str, Any] | None) -> bool:
    """Ready=True for the object's current generation."""
    if not obj:
        return False
    status = obj.get("status") or {}
    return (
        condition(obj, "Ready").get("status") == "True"
        and status.get("observedGeneration") == obj["metadata"]["generation"]
    )


def has_condition(obj: dict[str, Any] | None, kind: str, status: str, reason: str | None = None) -> bool:
    found = condition(obj, kind)
    return found.get("status") == status and (reason is None or found.get("reason") == reason)


def sync_id(obj: dict[str, Any] | None) -> str | None:
    value = ((obj or {}).get("status") or {}).get("syncConfigId")
    return str(value) if value else None


ENDPOINTS = ("create", "list", "get", "update", "delete", "pause", "resume", "trigger")


def endpoint_counts(admin: Any) -> dict[str, int]:
    """Requests the emulator has served per endpoint since its last reset (0 when none)."""
    served = admin.request_counts().get("endpoints") or {}
    return {name: int(served.get(name, 0)) for name in ENDPOINTS}


def writes_except_reads(counts: dict[str, int]) -> dict[str, int]:
    """The counts of every endpoint that changes remote state."""
    return {name: n for name, n in counts.items() if name not in ("list", "get")}


def mixpeek_api(base_url: str, api_key: str, namespace: str = "default") -> httpx.Client:
    """A raw client of the (emulated) Mixpeek API, for setting up remote state directly."""
    return httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}", "X-Namespace": namespace},
        timeout=10,
    )


_APISERVER_REQUEST = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def kubernetes_writes(cluster: ControlPlane) -> dict[str, float]:
    """Mutating requests the API server has served for BucketSyncs, Events and Secrets (the
    in-use finalizer), by verb."""
    totals: dict[str, float] = {}
    for line in cluster.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        match = _APISERVER_REQUEST.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("resource") not in ("bucketsyncs", "events", "secrets"):
            continue
        if labels.get("dry_run"):  # a server-side dry run stores nothing (the start-up admission check)
            continue
        if labels.get("verb") in ("POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"):
            key = f"{labels['resource']}/{labels.get('subresource', '')}/{labels['verb']}"
            totals[key] = totals.get(key, 0.0) + float(match["value"])
    return totals

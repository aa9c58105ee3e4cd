"""kubectl and helm against the local node, for the e2e tier (tests/e2e)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack import localnode
from hack.k8sbuild import build_helm, kube_bin_dir
from tests.support.operator_support import EMULATOR_API_KEY, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "mixpeek-operator"
OPERATOR_SELECTOR = "app.kubernetes.io/name=mixpeek-operator"
# The Secret the tests' BucketSyncs name (operator_support.BASE_SPEC's credentialsRef).
CREDENTIALS_SECRET = "mixpeek-credentials"


def require_node() -> None:
    """Skip with the reason where the node cannot run; under CI=true, fail instead."""
    why = localnode.requirements_missing()
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"the e2e tier must run under CI: {why}")
    pytest.skip(why)


@dataclass
class Node:
    """kubectl and helm against the running node, as a user would run them."""

    running: localnode.RunningNode
    image: str
    timings: dict[str, float]

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return _tool(str(kube_bin_dir() / "kubectl"), self.running.kubeconfig, args, input, check, timeout)

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return _tool(str(build_helm() / "helm"), self.running.kubeconfig, args, None, True, timeout)

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply(self, namespace: str, *manifests: dict[str, Any]) -> None:
        self.kubectl(
            "-n",
            namespace,
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
        )

    def image_values(self) -> list[str]:
        """`helm --set` arguments that run the image built here, never pulled."""
        repository, tag = self.image.rsplit(":", 1)
        return [
            "--set",
            f"image.repository={repository}",
            "--set",
            f"image.tag={tag}",
            "--set",
            "image.pullPolicy=Never",
        ]

    def live_pods(self, namespace: str, selector: str = OPERATOR_SELECTOR) -> list[dict[str, Any]]:
        """The pods matching `selector` that are not being deleted."""
        pods: list[dict[str, Any]] = self.json("-n", namespace, "get", "pods", "-l", selector)["items"]
        return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]

    def processes(self, needle: str) -> list[int]:
        """Host PIDs of the node's pod processes whose command line contains `needle`."""
        return [
            pid
            for pid in sorted(localnode.pod_pids(self.running.layout))
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        ]

    def bucketsyncs(self, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.json("-n", namespace, "get", "bucketsyncs")["items"]
        return items

    def raw(self, path: str, *, method: str = "GET", body: Any = None) -> Any:
        """A request through the apiserver (e.g. its Service proxy: the host never routes to
        pods), with the admin client certificate."""
        pki = self.running.workdir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        server = (self.running.workdir / "ready").read_text().strip()
        request = urllib.request.Request(
            server + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"} if body is not None else {},
        )
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            text = response.read().decode()
        return json.loads(text) if text.strip() else None


def _tool(
    binary: str, kubeconfig: Path, args: tuple[str, ...], input: str | None, check: bool, timeout: float
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [binary, f"--kubeconfig={kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{Path(binary).name} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


def assert_runs_working_tree(pid: int) -> None:
    """The pod process `pid` runs this working tree's operator code, file for file (a stale
    image layer once made the e2e tier test weeks-old code)."""
    (installed,) = Path(f"/proc/{pid}/root/usr/local/lib").glob("python3*/dist-packages/mixpeek_operator")
    source = REPO_ROOT / "operator" / "mixpeek_operator"
    differing = [
        str(path.relative_to(source))
        for path in sorted(source.rglob("*.py"))
        if not (installed / path.relative_to(source)).is_file()
        or (installed / path.relative_to(source)).read_bytes() != path.read_bytes()
    ]
    assert not differing, f"the image's operator differs from the working tree in {differing}"


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (pod.get("status") or {}).get("conditions", [])
    )


def wait_pods_ready(
    node: Node, namespace: str, count: int, *, not_named: tuple[str, ...] = (), timeout: float = 180
) -> list[dict[str, Any]]:
    """Wait until exactly `count` live operator pods, none named in `not_named`, are all Ready."""

    def ready_pods() -> list[dict[str, Any]] | None:
        live = node.live_pods(namespace)
        fresh = [pod for pod in live if pod["metadata"]["name"] not in not_named]
        if len(live) == count and len(fresh) == count and all(pod_ready(pod) for pod in live):
            return live
        return None

    try:
        pods: list[dict[str, Any]] = wait_for(
            ready_pods, timeout=timeout, interval=1, what=f"{count} operator pod(s) Ready"
        )
    except AssertionError:
        print(node.kubectl("-n", namespace, "describe", "pods", check=False).stdout[-6000:])
        raise
    return pods


@dataclass
class EmulatorService:
    """The emulator running as a pod behind its Service in `namespace` (docs/quickstart/emulator.yaml)."""

    node: Node
    namespace: str

    def call(self, path: str, *, method: str = "GET", body: Any = None) -> Any:
        """Its admin API (/_emulator) through the apiserver's Service proxy."""
        return self.node.raw(
            f"/api/v1/namespaces/{self.namespace}/services/http:mixpeek-emulator:http/proxy/_emulator/{path}",
            method=method,
            body=body,
        )

    def syncs(self, query: str = "") -> list[dict[str, Any]]:
        """The remote syncs it holds (`query`: e.g. `?bucket_id=bkt_demo`)."""
        syncs: list[dict[str, Any]] = self.call(f"syncs{query}")["results"]
        return syncs

    def counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = self.call("requests/counts")
        return counts

    def requests(self) -> list[dict[str, Any]]:
        """The request log (wall-clock `started_at`, endpoint, status), oldest first."""
        log: list[dict[str, Any]] = self.call("requests")["requests"]
        return log

    def url(self) -> str:
        """Its address as pods reach it and the docs write it: the Service's DNS name."""
        return f"http://mixpeek-emulator.{self.namespace}.svc:8099"


def deploy_emulator(node: Node, namespace: str) -> EmulatorService:
    """The quickstart's emulator manifest with the image built here, rolled out in `namespace`."""
    manifest = (REPO_ROOT / "docs" / "quickstart" / "emulator.yaml").read_text()
    manifest = manifest.replace("ghcr.io/mixpeek/mixpeek-operator:0.1.0", node.image)
    docs = [doc for doc in yaml.safe_load_all(manifest) if doc]
    for doc in docs:
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    node.apply(namespace, *docs)
    node.kubectl(
        "-n", namespace, "rollout", "status", "deploy/mixpeek-emulator", "--timeout=180s", timeout=200
    )
    emulator = EmulatorService(node, namespace)
    assert emulator.call("health") == {"status": "ok"}
    return emulator


def create_credentials(node: Node, namespace: str, emulator: EmulatorService) -> None:
    """The Secret the BucketSyncs in `namespace` use: the emulator's key and address."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CREDENTIALS_SECRET},
        "stringData": {"apiKey": EMULATOR_API_KEY, "namespace": "default", "baseUrl": emulator.url()},
    }
    node.apply(namespace, secret)

"""Shared fixtures: the real local control plane (etcd + kube-apiserver) and namespaces.

The control plane is started once per session, only when a test asks for it, and is
always torn down; the session ends by checking that no process it started survives.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from hack.k8sbuild import build_kubernetes
from hack.localcluster import ControlPlane, assert_no_leftovers

REPO_ROOT = Path(__file__).resolve().parent.parent
CRD_FILE = REPO_ROOT / "crds" / "bucketsyncs.mixpeek.com.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
        if "/tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
        if "/tests/tools/" in str(item.path):
            item.add_marker(pytest.mark.tools)


@pytest.fixture(scope="session", autouse=True)
def _no_orphans_at_exit() -> Iterator[None]:
    """Fail the run if anything the tests spawned is still running at the end."""
    yield
    me = psutil.Process()
    deadline = time.monotonic() + 10
    while (children := me.children(recursive=True)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if children:
        commands = [child.cmdline() for child in children]
        for child in children:
            child.kill()
        raise AssertionError(f"test session left processes running: {commands}")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    workdir = tmp_path_factory.mktemp("control-plane")
    plane = ControlPlane(workdir=workdir, bin_dir=build_kubernetes())
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()
        assert_no_leftovers(str(workdir))


@pytest.fixture(scope="session")
def api_client(cluster: ControlPlane) -> Iterator[k8s.ApiClient]:
    api = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def crd_installed(cluster: ControlPlane) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/bucketsyncs.mixpeek.com")


@pytest.fixture
def namespace(cluster: ControlPlane, api_client: k8s.ApiClient) -> str:
    # No namespace controller runs here, so namespaces are never deleted: unique names instead.
    name = f"t-{uuid.uuid4().hex[:10]}"
    k8s.CoreV1Api(api_client).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    return name

"""Harness for operator tests: the real local control plane (etcd + kube-apiserver, started once
per session, only when a test asks for it, always torn down), namespaces, and the emulator and
the operator as real processes on loopback.

Both are started through the real CLI entry point (`python -m mixpeek_operator ...`),
each in its own process group that dies with the test session. Every operator log
line is kept, and the session ends by checking that no API key ever reached a log
line, an Event or a status.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from hack.k8sbuild import build_kubernetes
from hack.localcluster import ControlPlane, assert_no_leftovers, spawn_emulator, spawn_operator, terminate
from mixpeek_operator.emulator.admin import EmulatorAdmin
from tests.support.operator_support import (
    ALL_SECRETS,
    EMULATOR_API_KEY,
    EMULATOR_NAMESPACE,
    OTHER_API_KEY,
    SAMPLE_FILES,
    EmulatorProcess,
    Objects,
    OperatorFactory,
    OperatorProcess,
    http_get,
    make_secret,
    wait_for,
)

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "bucketsyncs.mixpeek.com.yaml"


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    workdir = tmp_path_factory.mktemp("emulator")
    sample_root = workdir / "local-s3"
    for relative, size in SAMPLE_FILES:
        path = sample_root / "demo-bucket" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    seed = {
        "api_keys": [
            {"key": EMULATOR_API_KEY, "user_id": "usr_emulator", "internal_id": "org_emulator"},
            {"key": OTHER_API_KEY, "user_id": "usr_other", "internal_id": "org_other"},
        ],
        "namespaces": [
            {
                "id": "ns_emulator",
                "name": EMULATOR_NAMESPACE,
                "buckets": [{"id": "bkt_demo"}, {"id": "bkt_media"}, {"id": "bkt_other"}],
                "connections": [
                    {"id": "conn_s3_demo", "provider": "s3"},
                    {"id": "conn_gdrive_demo", "provider": "google_drive"},
                    {"id": "conn_local", "provider": "s3", "root": str(sample_root)},
                    {"id": "conn_pg", "provider": "postgresql"},
                ],
            }
        ],
    }
    proc, url = spawn_emulator(workdir, seed)
    try:
        admin = EmulatorAdmin(url)
        yield EmulatorProcess(
            url=url, admin=admin, proc=proc, log=workdir / "emulator.log", sample_root=sample_root
        )
        admin.close()
    finally:
        terminate(proc)
    assert_no_leftovers(str(workdir))


@pytest.fixture
def mixpeek(emulator: EmulatorProcess) -> EmulatorProcess:
    """The emulator, reset to its seed with no faults and no recorded requests."""
    emulator.admin.reset()
    return emulator


@pytest.fixture
def credentials(api_client: k8s.ApiClient, namespace: str, mixpeek: EmulatorProcess) -> str:
    """A Secret `mixpeek-credentials` in the test namespace pointing at the emulator."""
    make_secret(api_client, namespace, "mixpeek-credentials", api_key=EMULATOR_API_KEY, base_url=mixpeek.url)
    return "mixpeek-credentials"


@pytest.fixture
def objects(api_client: k8s.ApiClient, cluster: ControlPlane, namespace: str) -> Objects:
    """BucketSyncs of the test's namespace."""
    return Objects(api_client, cluster, namespace)


_operator_logs: list[Path] = []


@pytest.fixture
def start_operator(cluster: ControlPlane, tmp_path: Path) -> Iterator[OperatorFactory]:
    started: list[OperatorProcess] = []

    def start(
        *namespaces: str,
        kubeconfig: Path | None = None,
        extra_args: tuple[str, ...] = (),
        observe_interval: float = 2.0,
        wait_healthy: bool = True,
    ) -> OperatorProcess:
        log = tmp_path / f"operator-{len(started)}.log"
        launch = spawn_operator(
            log,
            kubeconfig or cluster.kubeconfig,
            namespaces,
            "--observe-interval",
            str(observe_interval),
            "--log-level",
            "DEBUG",
            "--backoff-cap",
            "10",
            "--rate-limit",
            "200",
            "--rate-burst",
            "200",
            *extra_args,
        )
        operator = OperatorProcess(
            proc=launch.proc,
            log=log,
            metrics_url=launch.metrics_url,
            health_url=launch.health_url,
            args=launch.args,
        )
        started.append(operator)
        _operator_logs.append(log)
        if wait_healthy:

            def healthy() -> bool:
                assert operator.alive(), f"operator exited:\n{operator.logs()[-4000:]}"
                try:
                    return http_get(operator.health_url, timeout=1)[0] == 200
                except OSError:
                    return False

            wait_for(healthy, 30, what="operator liveness endpoint")
        return operator

    yield start
    for operator in started:
        if operator.alive():
            operator.stop()


@pytest.fixture(scope="session", autouse=True)
def _no_secret_leaks(cluster: ControlPlane) -> Iterator[None]:
    """At the end: no API key in any operator log, Event or BucketSync status of the run."""
    yield
    if not _operator_logs:
        return
    leaks = [
        str(log) for log in _operator_logs if log.exists() and any(s in log.read_text() for s in ALL_SECRETS)
    ]
    assert not leaks, f"an API key appeared in operator logs: {leaks}"
    for resource in ("events", "bucketsyncs.mixpeek.com"):
        dump = cluster.kubectl("get", resource, "-A", "-o", "json").stdout
        assert not any(secret in dump for secret in ALL_SECRETS), f"an API key appeared in {resource}"


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

"""The Helm chart installed into the real control plane, and the operator run with the
chart's own ServiceAccount token: its RBAC is sufficient (BucketSyncs reach Ready, Events
are posted, finalizers come off) and minimal (refused outside the watched namespaces).

There is no kubelet or controller-manager here, so the chart's pod never starts: charts
are installed without --wait, and the operator runs as a local process with the identity
and the settings (env) of the installed Deployment.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from hack.bench.stats import MAIN_PATCH, apiserver_writes
from hack.gotools import argocd_health
from hack.k8sbuild import build_helm
from hack.localcluster import ControlPlane, write_kubeconfig
from mixpeek_operator.constants import CRD_NAME, FINALIZER
from mixpeek_operator.coordination import ASSIGNER_SUFFIX
from tests.support.operator_support import (
    EMULATOR_API_KEY,
    EmulatorProcess,
    Objects,
    OperatorFactory,
    OperatorProcess,
    bucketsync,
    is_ready,
    make_secret,
    wait_admission,
    wait_for,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "mixpeek-operator"
ARGOCD_CM = REPO_ROOT / "docs" / "argocd" / "argocd-cm.yaml"
DEFAULT_SECRET = "mixpeek-default"
ENV_PREFIX = "MIXPEEK_OPERATOR_"


@pytest.fixture(scope="module")
def helm() -> Path:
    return build_helm() / "helm"


@dataclass
class Release:
    name: str
    namespace: str
    helm: Path
    cluster: ControlPlane

    @property
    def fullname(self) -> str:
        return f"{self.name}-mixpeek-operator"

    @property
    def cluster_name(self) -> str:
        """Cluster-scoped objects carry the namespace too (one release name, many namespaces)."""
        return f"{self.fullname}-{self.namespace}"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.helm), "--kubeconfig", str(self.cluster.kubeconfig), "-n", self.namespace, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    def values_file(self, values: dict[str, Any], directory: Path) -> str:
        path = directory / f"{self.name}-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps(values))
        return str(path)

    def operator_settings(self) -> tuple[list[str], tuple[str, ...]]:
        """Namespaces and extra CLI args equivalent to the installed Deployment's environment."""
        deployment = json.loads(
            self.cluster.kubectl(
                "-n", self.namespace, "get", "deployment", self.fullname, "-o", "json"
            ).stdout
        )
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["run"]
        env = {
            item["name"]: item["value"] for item in container["env"] if item["name"].startswith(ENV_PREFIX)
        }
        namespaces = [ns for ns in env.get(f"{ENV_PREFIX}NAMESPACES", "").split(",") if ns]
        secret = env.get(f"{ENV_PREFIX}DEFAULT_CREDENTIALS_SECRET")
        args: tuple[str, ...] = ("--default-credentials-secret", secret) if secret else ()
        for mode, flag in (("LEADER_ELECTION", "--leader-election"), ("SHARDING", "--sharding")):
            if env.get(f"{ENV_PREFIX}{mode}") == "true":
                args += (
                    flag,
                    "--leader-election-namespace",
                    env[f"{ENV_PREFIX}LEADER_ELECTION_NAMESPACE"],
                    "--leader-election-id",
                    env[f"{ENV_PREFIX}LEADER_ELECTION_ID"],
                )
        if env.get(f"{ENV_PREFIX}SHARDING") == "true":
            args += ("--sharding-mode", env[f"{ENV_PREFIX}SHARDING_MODE"])
        return namespaces, args


Installer = Callable[..., Release]


@pytest.fixture
def install(
    cluster: ControlPlane, api_client: k8s.ApiClient, helm: Path, tmp_path: Path
) -> Iterator[Installer]:
    """`helm install` into a fresh release namespace (namespaces never terminate here)."""
    releases: list[Release] = []

    def install(values: dict[str, Any], name: str | None = None) -> Release:
        namespace = f"rel-{uuid.uuid4().hex[:8]}"
        k8s.CoreV1Api(api_client).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
        release = Release(name or f"mxp-{uuid.uuid4().hex[:6]}", namespace, helm, cluster)
        release.run("install", release.name, str(CHART), "-f", release.values_file(values, tmp_path))
        releases.append(release)
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")
        # The API server loads new policies (and the CRD's schema for them) asynchronously.
        probe = (values.get("watchNamespaces") or [namespace])[0]
        policy = (values.get("admissionPolicy") or {}).get("enabled", True)
        wait_admission(cluster, probe, finalizer_added=policy)
        probes.append(probe)
        return release

    probes: list[str] = []
    yield install
    for release in releases:  # cluster-scoped objects would otherwise outlive the test
        release.run("uninstall", release.name, "--ignore-not-found", check=False)
    for probe in probes:  # the next test must not meet this release's policy
        wait_admission(cluster, probe, finalizer_added=False)


def service_account_kubeconfig(
    release: Release, api_client: k8s.ApiClient, cluster: ControlPlane, directory: Path
) -> Path:
    """A kubeconfig holding a TokenRequest token of the chart's ServiceAccount."""
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = k8s.CoreV1Api(api_client).create_namespaced_service_account_token(
        release.fullname, release.namespace, request
    )
    return write_kubeconfig(
        directory / f"{release.name}.kubeconfig",
        cluster.server,
        cluster.pki.ca_cert,
        user=release.fullname,
        token=token.status.token,
    )


def start_as_chart(release: Release, start_operator: OperatorFactory, kubeconfig: Path) -> OperatorProcess:
    namespaces, extra_args = release.operator_settings()
    return start_operator(*namespaces, kubeconfig=kubeconfig, extra_args=extra_args)


def wait_ready(objects: Objects, name: str, operator: OperatorProcess) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        assert operator.alive(), operator.logs()[-4000:]
        obj = objects.get(name)
        return obj if is_ready(obj) else None

    result: dict[str, Any] = wait_for(ready, 60, what=f"{name} Ready")
    return result


def can_i(cluster: ControlPlane, kubeconfig: Path, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return result.stdout.strip() == "yes"


def assert_no_permission_errors(operator: OperatorProcess) -> None:
    logs = operator.logs()
    assert "Forbidden" not in logs, logs[-4000:]
    assert "forbidden" not in logs, logs[-4000:]


def test_cluster_wide_chart_rbac_is_sufficient(
    install: Installer,
    start_operator: OperatorFactory,
    api_client: k8s.ApiClient,
    cluster: ControlPlane,
    namespace: str,
    credentials: str,
    mixpeek: EmulatorProcess,
    tmp_path: Path,
) -> None:
    release = install({"credentials": {"defaultSecretName": DEFAULT_SECRET}})
    assert cluster.kubectl("get", f"crd/{CRD_NAME}", "-o", "name").stdout.strip()
    assert cluster.kubectl("get", "clusterrole", release.cluster_name, "-o", "name").returncode == 0
    make_secret(api_client, release.namespace, DEFAULT_SECRET, api_key=EMULATOR_API_KEY, base_url=mixpeek.url)
    kubeconfig = service_account_kubeconfig(release, api_client, cluster, tmp_path)
    operator = start_as_chart(release, start_operator, kubeconfig)

    objects = Objects(api_client, cluster, namespace)
    objects.create(bucketsync("with-secret-ref"))
    # No credentialsRef: the default Secret in the release namespace, read cluster-wide.
    default_secret_user = bucketsync("with-default-secret", sourcePath="demo-bucket/images")
    del default_secret_user["spec"]["credentialsRef"]
    objects.create(default_secret_user)
    for name in ("with-secret-ref", "with-default-secret"):
        obj = wait_ready(objects, name, operator)
        assert FINALIZER in obj["metadata"]["finalizers"]
        assert argocd_health([obj], ARGOCD_CM)[0]["status"] == "Healthy"
    waited = objects.kubectl("wait", "--for=condition=Ready", "bucketsync/with-secret-ref", "--timeout=10s")
    assert "condition met" in waited.stdout
    wait_for(lambda: objects.events("with-secret-ref"), 20, what="an Event posted by the operator")

    # Deleting needs the finalizer patch: the objects go away under the chart's identity.
    for name in ("with-secret-ref", "with-default-secret"):
        objects.delete(name)
    for name in ("with-secret-ref", "with-default-secret"):
        wait_for(lambda name=name: objects.get(name) is None, 30, what=f"{name} deleted")
    assert_no_permission_errors(operator)


def test_the_chart_identity_may_change_only_its_finalizer_on_secrets(
    install: Installer,
    api_client: k8s.ApiClient,
    cluster: ControlPlane,
    namespace: str,
    mixpeek: EmulatorProcess,
    tmp_path: Path,
) -> None:
    """RBAC grants secrets/patch for the in-use finalizer; the chart's admission policy keeps it to that."""
    release = install({})
    make_secret(api_client, namespace, "guarded", api_key=EMULATOR_API_KEY, base_url=mixpeek.url)
    kubeconfig = service_account_kubeconfig(release, api_client, cluster, tmp_path)

    def patch(body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl(
            "-n", namespace, "patch", "secret", "guarded", "--type=merge", "-p", json.dumps(body),
            kubeconfig=kubeconfig, check=False,
        )  # fmt: skip

    # The policy binding takes effect asynchronously: wait until a forbidden change is refused.
    # Each try writes a new value: a repeat of an accepted one would be a no-op, which passes.
    def steal() -> subprocess.CompletedProcess[str] | None:
        result = patch({"data": {"apiKey": base64.b64encode(uuid.uuid4().hex.encode()).decode()}})
        return result if result.returncode != 0 else None

    refused = wait_for(steal, 60, interval=0.5, what="the secret write policy in force")
    assert "may only add or remove its mixpeek.com/secret-in-use finalizer" in refused.stderr
    for forbidden in (
        {"metadata": {"labels": {"x": "y"}}},
        {"metadata": {"finalizers": ["other/finalizer"]}},
    ):
        assert patch(forbidden).returncode != 0, forbidden
    assert patch({"metadata": {"finalizers": ["mixpeek.com/secret-in-use"]}}).returncode == 0
    assert patch({"metadata": {"finalizers": None}}).returncode == 0
    # Anyone else (here the admin) is not affected.
    assert cluster.kubectl("-n", namespace, "label", "secret", "guarded", "x=y").returncode == 0


def test_namespace_mode_chart_rbac_is_sufficient_and_minimal(
    install: Installer,
    start_operator: OperatorFactory,
    api_client: k8s.ApiClient,
    cluster: ControlPlane,
    namespace: str,
    credentials: str,
    mixpeek: EmulatorProcess,
    tmp_path: Path,
) -> None:
    watched = namespace
    other = f"t-{uuid.uuid4().hex[:10]}"
    k8s.CoreV1Api(api_client).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=other)))
    make_secret(api_client, other, "mixpeek-credentials", api_key=EMULATOR_API_KEY, base_url=mixpeek.url)
    release = install({"watchNamespaces": [watched], "credentials": {"defaultSecretName": DEFAULT_SECRET}})
    make_secret(api_client, release.namespace, DEFAULT_SECRET, api_key=EMULATOR_API_KEY, base_url=mixpeek.url)

    selector = f"app.kubernetes.io/instance={release.name}"
    assert (
        cluster.kubectl("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name").stdout == ""
    )
    roles = json.loads(cluster.kubectl("get", "roles", "-A", "-l", selector, "-o", "json").stdout)["items"]
    # A Role per watched namespace and the release's own, and the Lease Role in the release's
    # namespace (leader election is on with one replica too).
    placed = sorted(
        (role["metadata"]["namespace"], role["metadata"]["name"].endswith("-leader-election"))
        for role in roles
    )
    assert placed == sorted([(watched, False), (release.namespace, False), (release.namespace, True)])

    unwatched = Objects(api_client, cluster, other)
    unwatched.create(bucketsync("not-mine"))
    kubeconfig = service_account_kubeconfig(release, api_client, cluster, tmp_path)
    operator = start_as_chart(release, start_operator, kubeconfig)
    objects = Objects(api_client, cluster, watched)
    objects.create(bucketsync("mine"))
    wait_ready(objects, "mine", operator)
    assert_no_permission_errors(operator)

    # Never touched outside the watched namespaces (no finalizer, status still the CRD default) ...
    untouched = unwatched.get("not-mine")
    assert untouched is not None
    assert "finalizers" not in untouched["metadata"]
    assert untouched["status"] == {"observedGeneration": -1}
    # ... and not allowed to: the same identity is refused there.
    assert not can_i(cluster, kubeconfig, "list", "bucketsyncs.mixpeek.com", "-n", other)
    assert not can_i(cluster, kubeconfig, "get", "secrets", "-n", other)
    assert not can_i(cluster, kubeconfig, "list", "secrets", "--all-namespaces")
    assert not can_i(cluster, kubeconfig, "list", "namespaces")
    assert not can_i(cluster, kubeconfig, "list", "customresourcedefinitions")
    denied = cluster.kubectl("get", "secrets", "-n", other, kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    # Inside, exactly the verbs it needs: reads of Secrets, and patch for the in-use finalizer
    # (the chart's admission policy refuses any other change, see the test above).
    assert can_i(cluster, kubeconfig, "get", "secrets", "-n", watched)
    assert can_i(cluster, kubeconfig, "patch", "secrets", "-n", watched)
    assert can_i(cluster, kubeconfig, "patch", "bucketsyncs.mixpeek.com/status", "-n", watched)
    assert can_i(cluster, kubeconfig, "create", "events", "-n", watched)
    for verb in ("create", "update", "delete"):
        assert not can_i(cluster, kubeconfig, verb, "secrets", "-n", watched)
    for verb in ("update", "delete"):
        assert not can_i(cluster, kubeconfig, verb, "bucketsyncs.mixpeek.com", "-n", watched)
    # create only as the start-up dry run (docs/admission.md): the chart's policy refuses the rest.
    probe = json.dumps(bucketsync("operator-made"))
    create = ("-n", watched, "create", "-f", "-")
    dry = cluster.kubectl(*create, "--dry-run=server", input=probe, kubeconfig=kubeconfig, check=False)
    assert dry.returncode == 0, dry.stderr
    real = cluster.kubectl(*create, input=probe, kubeconfig=kubeconfig, check=False)
    assert real.returncode != 0
    assert "creates BucketSyncs only as a server-side dry run" in real.stderr, real.stderr

    objects.delete("mine")
    wait_for(lambda: objects.get("mine") is None, 30, what="mine deleted")
    unwatched.delete("not-mine")


def test_upgrade_switches_rbac_mode_and_uninstall_keeps_crd_and_objects(
    install: Installer, api_client: k8s.ApiClient, cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    release = install({})
    objects = Objects(api_client, cluster, namespace)
    objects.create(bucketsync("survivor"))
    assert cluster.kubectl("get", "clusterrole", release.cluster_name, check=False).returncode == 0

    values = release.values_file({"watchNamespaces": [namespace]}, tmp_path)
    release.run("upgrade", release.name, str(CHART), "-f", values)
    assert "NotFound" in cluster.kubectl("get", "clusterrole", release.cluster_name, check=False).stderr
    assert cluster.kubectl("-n", namespace, "get", "role", release.fullname, "-o", "name").stdout.strip()
    rendered = yaml.safe_load_all(release.run("get", "manifest", release.name).stdout)
    assert {doc["kind"] for doc in rendered if doc} == {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "ValidatingAdmissionPolicy",  # the Secret write policy is cluster-scoped in both modes
        "ValidatingAdmissionPolicyBinding",
        # The API server serves admissionregistration.k8s.io/v1 MutatingAdmissionPolicy (1.36).
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
    }

    release.run("uninstall", release.name)
    assert release.run("status", release.name, check=False).returncode != 0
    gone = cluster.kubectl(
        "-n", release.namespace, "get", "deployment,serviceaccount", release.fullname, check=False
    )
    assert gone.stdout == ""
    # Helm never deletes what it installed from crds/: the CRD, and so every BucketSync, stay.
    assert cluster.kubectl("get", f"crd/{CRD_NAME}", "-o", "name").stdout.strip()
    assert objects.get("survivor") is not None
    objects.patch("survivor", {"metadata": {"finalizers": None}})  # no operator runs here
    objects.delete("survivor")


@pytest.mark.parametrize("values", [{"replicaCount": 2}, {"replicaCount": 2, "sharding": {"enabled": True}}])
def test_two_replicas_coordinate_on_leases_under_the_charts_rbac(
    install: Installer,
    start_operator: OperatorFactory,
    api_client: k8s.ApiClient,
    cluster: ControlPlane,
    namespace: str,
    credentials: str,
    tmp_path: Path,
    values: dict[str, Any],
) -> None:
    release = install(values)
    kubeconfig = service_account_kubeconfig(release, api_client, cluster, tmp_path)
    sharding = "sharding" in values
    assert can_i(cluster, kubeconfig, "get", "leases", "-n", release.namespace)
    assert can_i(cluster, kubeconfig, "create", "leases", "-n", release.namespace)
    assert can_i(cluster, kubeconfig, "update", "leases", "-n", release.namespace)
    assert can_i(cluster, kubeconfig, "list", "leases", "-n", release.namespace) == sharding
    assert not can_i(cluster, kubeconfig, "delete", "leases", "-n", release.namespace)
    assert not can_i(cluster, kubeconfig, "create", "leases", "-n", namespace)

    namespaces, args = release.operator_settings()
    replicas = [
        start_operator(
            *namespaces, kubeconfig=kubeconfig, extra_args=(*args, "--leader-election-identity", name)
        )
        for name in (f"{release.fullname}-pod-a", f"{release.fullname}-pod-b")
    ]
    objects = Objects(api_client, cluster, namespace)
    objects.create(bucketsync("replicated"))
    wait_ready(objects, "replicated", replicas[0])
    leases = json.loads(cluster.kubectl("-n", release.namespace, "get", "leases", "-o", "json").stdout)[
        "items"
    ]
    holders = sorted(lease["spec"].get("holderIdentity") for lease in leases)
    pods = [f"{release.fullname}-pod-a", f"{release.fullname}-pod-b"]
    if sharding:
        # A member Lease each, and (label shards) the assigner's, held by one of them.
        members = sorted(
            lease["spec"].get("holderIdentity")
            for lease in leases
            if not lease["metadata"]["name"].endswith(ASSIGNER_SUFFIX)
        )
        assert members == pods
        assigner = [
            lease for lease in leases if lease["metadata"]["name"] == release.fullname + ASSIGNER_SUFFIX
        ]
        assert [lease["spec"].get("holderIdentity") in pods for lease in assigner] == [True]
    else:
        assert [lease["metadata"]["name"] for lease in leases] == [release.fullname]
        assert holders[0] in pods
    for replica in replicas:
        assert_no_permission_errors(replica)


@pytest.mark.parametrize("scope", ["cluster-wide", "namespaces"])
def test_label_shards_calls_are_allowed_under_the_charts_rbac(
    install: Installer,
    api_client: k8s.ApiClient,
    cluster: ControlPlane,
    namespace: str,
    credentials: str,
    tmp_path: Path,
    scope: str,
) -> None:
    """The calls of label shards, made with the chart's own token (no operator needed): the
    filtered lists, the label and annotation patches of the handshake, the assigner's Lease."""
    values: dict[str, Any] = {"replicaCount": 3, "sharding": {"enabled": True}}
    if scope == "namespaces":
        values["watchNamespaces"] = [namespace]
    release = install(values)
    env = {
        item["name"]: item.get("value")
        for item in json.loads(
            cluster.kubectl(
                "-n", release.namespace, "get", "deployment", release.fullname, "-o", "json"
            ).stdout
        )["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert (env[f"{ENV_PREFIX}SHARDING"], env[f"{ENV_PREFIX}SHARDING_MODE"]) == ("true", "labels")
    kubeconfig = service_account_kubeconfig(release, api_client, cluster, tmp_path)
    objects = Objects(api_client, cluster, namespace)
    objects.create(bucketsync("sharded"))

    def as_operator(*args: str) -> subprocess.CompletedProcess[str]:
        result = cluster.kubectl(*args, kubeconfig=kubeconfig, check=False)
        assert result.returncode == 0, (args, result.stderr)
        return result

    where = ("-A",) if scope == "cluster-wide" else ("-n", namespace)
    # A replica's own shard, and the assigner's unlabelled objects: server-side label selectors.
    assert (
        as_operator("get", "bucketsyncs", *where, "-l", "shard.mixpeek.com/owner=pod-a", "-o", "name").stdout
        == ""
    )
    unlabelled = as_operator("get", "bucketsyncs", *where, "-l", "!shard.mixpeek.com/owner", "-o", "name")
    assert "bucketsync.mixpeek.com/sharded" in unlabelled.stdout
    # The Secrets its objects name: a field selector.
    named = as_operator(
        "get", "secrets", "-n", namespace, "--field-selector", f"metadata.name={credentials}", "-o", "name"
    )
    assert named.stdout.strip() == f"secret/{credentials}"
    for verb in ("list", "watch"):
        assert can_i(cluster, kubeconfig, verb, "bucketsyncs.mixpeek.com", *where)
        assert can_i(cluster, kubeconfig, verb, "secrets", *where)
    # The handshake: owner and drain-to labels, drained-by annotation, each a merge patch of
    # metadata pinned to the resourceVersion read.
    for metadata in (
        {"labels": {"shard.mixpeek.com/owner": "pod-a"}},
        {"labels": {"shard.mixpeek.com/drain-to": "pod-b"}},
        {"annotations": {"shard.mixpeek.com/drained-by": "pod-a"}},
        {
            "labels": {"shard.mixpeek.com/owner": "pod-b", "shard.mixpeek.com/drain-to": None},
            "annotations": {"shard.mixpeek.com/drained-by": None},
        },
    ):
        version = (objects.get("sharded") or {})["metadata"]["resourceVersion"]
        body = json.dumps({"metadata": {**metadata, "resourceVersion": version}})
        as_operator("-n", namespace, "patch", "bucketsync", "sharded", "--type=merge", "-p", body)
    labels = (objects.get("sharded") or {})["metadata"]["labels"]
    assert labels == {"shard.mixpeek.com/owner": "pod-b"}
    # The assigner elects itself on one more Lease of the release namespace; nothing more.
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": f"{release.fullname}-assigner", "namespace": release.namespace},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15},
    }
    created = cluster.kubectl(
        "create", "-f", "-", input=json.dumps(lease), kubeconfig=kubeconfig, check=False
    )
    assert created.returncode == 0, created.stderr
    current = json.loads(
        as_operator(
            "-n", release.namespace, "get", "lease", f"{release.fullname}-assigner", "-o", "json"
        ).stdout
    )
    current["spec"]["holderIdentity"] = "pod-b"
    replaced = cluster.kubectl(
        "replace", "-f", "-", input=json.dumps(current), kubeconfig=kubeconfig, check=False
    )
    assert replaced.returncode == 0, replaced.stderr
    as_operator("-n", release.namespace, "get", "leases", "-l", "mixpeek.com/shard-ring", "-o", "name")
    assert not can_i(cluster, kubeconfig, "delete", "leases", "-n", release.namespace)
    assert not can_i(cluster, kubeconfig, "create", "leases", "-n", namespace)
    assert not can_i(cluster, kubeconfig, "update", "bucketsyncs.mixpeek.com", "-n", namespace)
    if scope == "namespaces":
        assert not can_i(cluster, kubeconfig, "list", "bucketsyncs.mixpeek.com", "--all-namespaces")

    objects.patch("sharded", {"metadata": {"finalizers": None}})  # no operator runs here
    objects.delete("sharded")


def bucketsync_patches(cluster: ControlPlane) -> float:
    """PATCHes of BucketSyncs (not their status) the API server has served so far."""
    return apiserver_writes(cluster.kubectl("get", "--raw", "/metrics").stdout).get(MAIN_PATCH, 0.0)


def test_admission_policy_adds_the_finalizer_so_the_operator_makes_no_finalizer_write(
    install: Installer,
    start_operator: OperatorFactory,
    api_client: k8s.ApiClient,
    cluster: ControlPlane,
    namespace: str,
    credentials: str,
    mixpeek: EmulatorProcess,
    tmp_path: Path,
) -> None:
    release = install({"watchNamespaces": [namespace]})
    manifest = [doc for doc in yaml.safe_load_all(release.run("get", "manifest", release.name).stdout) if doc]
    (binding,) = [doc for doc in manifest if doc["kind"] == "MutatingAdmissionPolicyBinding"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"] == [
        namespace
    ]
    objects = Objects(api_client, cluster, namespace)
    operator = start_as_chart(
        release, start_operator, service_account_kubeconfig(release, api_client, cluster, tmp_path)
    )
    patches_before = bucketsync_patches(cluster)
    created = objects.create(bucketsync("admitted"))
    assert created["metadata"]["finalizers"] == [FINALIZER]  # there before the operator saw it
    wait_ready(objects, "admitted", operator)
    wait_for(lambda: "Created" in objects.event_reasons("admitted"), 20, what="the Created Event")
    assert bucketsync_patches(cluster) == patches_before  # no finalizer write on the create path

    # A user's own finalizers are kept; ours is appended once.
    mine = bucketsync("with-own-finalizer")
    mine["metadata"]["finalizers"] = ["example.com/keep", FINALIZER]
    assert objects.create(mine)["metadata"]["finalizers"] == ["example.com/keep", FINALIZER]
    other = bucketsync("with-other-finalizer")
    other["metadata"]["finalizers"] = ["example.com/keep"]
    assert objects.create(other)["metadata"]["finalizers"] == ["example.com/keep", FINALIZER]

    # Deletion still works: the operator removes the finalizer it did not add.
    objects.delete("admitted")
    wait_for(lambda: objects.get("admitted") is None, 30, what="admitted deleted")
    for name in ("with-own-finalizer", "with-other-finalizer"):
        objects.patch(name, {"metadata": {"finalizers": None}})
        objects.delete(name)
    assert_no_permission_errors(operator)


def test_without_the_admission_policy_the_operator_adds_the_finalizer(
    install: Installer,
    start_operator: OperatorFactory,
    api_client: k8s.ApiClient,
    cluster: ControlPlane,
    namespace: str,
    credentials: str,
    mixpeek: EmulatorProcess,
    tmp_path: Path,
) -> None:
    release = install({"watchNamespaces": [namespace], "admissionPolicy": {"enabled": False}})
    kinds = {
        doc["kind"] for doc in yaml.safe_load_all(release.run("get", "manifest", release.name).stdout) if doc
    }
    assert "MutatingAdmissionPolicy" not in kinds
    operator = start_as_chart(
        release, start_operator, service_account_kubeconfig(release, api_client, cluster, tmp_path)
    )
    objects = Objects(api_client, cluster, namespace)
    patches_before = bucketsync_patches(cluster)
    created = objects.create(bucketsync("plain"))
    assert "finalizers" not in created["metadata"]
    obj = wait_ready(objects, "plain", operator)
    assert obj["metadata"]["finalizers"] == [FINALIZER]
    assert bucketsync_patches(cluster) - patches_before == 1  # the operator's finalizer write
    objects.delete("plain")
    wait_for(lambda: objects.get("plain") is None, 30, what="plain deleted")


CLUSTER_SCOPED = ("clusterrole", "clusterrolebinding", "mutatingadmissionpolicy", "validatingadmissionpolicy")


def test_one_release_name_in_two_namespaces_installs_side_by_side(
    install: Installer,
    start_operator: OperatorFactory,
    api_client: k8s.ApiClient,
    cluster: ControlPlane,
    namespace: str,
    credentials: str,
    mixpeek: EmulatorProcess,
    tmp_path: Path,
) -> None:
    """Regression: the ClusterRole, ClusterRoleBinding and admission policies were named without
    the namespace, so a second release of the same name failed to install (or took them over)."""
    name = f"twin-{uuid.uuid4().hex[:6]}"
    first = install({}, name=name)
    second = install({}, name=name)  # "one release per team": same name, another namespace

    def owned(release: Release) -> set[str]:
        found = set()
        for kind in CLUSTER_SCOPED:
            out = cluster.kubectl("get", kind, "-o", "json").stdout
            for item in json.loads(out)["items"]:
                annotations = item["metadata"].get("annotations") or {}
                if annotations.get("meta.helm.sh/release-namespace") == release.namespace:
                    found.add(f"{kind}/{item['metadata']['name']}")
        return found

    mine, theirs = owned(first), owned(second)
    assert f"clusterrole/{first.cluster_name}" in mine
    assert f"clusterrole/{second.cluster_name}" in theirs
    assert not {n.split("/", 1)[1] for n in mine} & {n.split("/", 1)[1] for n in theirs}
    # Uninstalling one leaves the other whole, and its operator keeps working.
    first.run("uninstall", first.name)
    assert owned(second) == theirs
    operator = start_as_chart(
        second, start_operator, service_account_kubeconfig(second, api_client, cluster, tmp_path)
    )
    objects = Objects(api_client, cluster, namespace)
    objects.create(bucketsync("twin"))
    wait_ready(objects, "twin", operator)
    objects.delete("twin")
    wait_for(lambda: objects.get("twin") is None, 30, what="twin deleted")
    assert_no_permission_errors(operator)

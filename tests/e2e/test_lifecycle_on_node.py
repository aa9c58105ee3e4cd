"""Install, `helm test`, NetworkPolicy, upgrade and uninstall on a real node, running the
commands of docs/upgrade.md and docs/uninstall.md as written (their `<!-- test: NAME -->`
shell blocks, with the doc's RELEASE and NAMESPACE variables set to this scenario's).

One scenario in order (each test builds on the previous one):
- the chart installed with a NetworkPolicy and the default credentials Secret; `helm test`
  fails with one line on a wrong key and passes on the right one;
- the documented uninstall order: nothing left behind (no remote sync at the emulator, no
  finalizer, no CRD, no object of the release). It also finishes what earlier scenarios of the
  session left (their BucketSyncs, stuck once their operator was uninstalled), as a user would;
- an older release (a CRD without a spec field and three printer columns, installed by Helm)
  upgraded as documented: the objects stay, Ready, with their remote syncs;
- `helm uninstall` first (the wrong order): objects and Secrets stuck on finalizers and
  `kubectl delete crd` stuck, then the documented way out (reinstall), and nothing left;
- the documented ways to keep the remote syncs: `deletionPolicy: Orphan` on every object
  before deleting them, and removing the finalizers by hand once the operator is gone.

The node's CNI (the bridge plugin) does not enforce NetworkPolicy: the policy is checked as
the real API server validates and stores it, not by blocking traffic.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from node_support import (
    CHART,
    CREDENTIALS_SECRET,
    OPERATOR_SELECTOR,
    REPO_ROOT,
    EmulatorService,
    Node,
    create_credentials,
    deploy_emulator,
    wait_pods_ready,
)
from operator_support import EMULATOR_API_KEY, bucketsync, is_ready, sync_id, wait_for

from k8sbuild import build_helm, kube_bin_dir
from mixpeek_operator.constants import FINALIZER

NS = "e2e-lifecycle"  # the release namespace, with the default credentials Secret
APP_NS = "e2e-lifecycle-app"  # BucketSyncs naming their own Secret
MIXPEEK_NS = "e2e-lifecycle-mixpeek"  # the emulator
RELEASE = "lifecycle"
FULLNAME = f"{RELEASE}-mixpeek-operator"
DEFAULT_SECRET = "mixpeek-default"
CRD = "bucketsyncs.mixpeek.com"
EMULATOR_PORT = 8099
UPGRADE_DOC = REPO_ROOT / "docs" / "upgrade.md"
UNINSTALL_DOC = REPO_ROOT / "docs" / "uninstall.md"
# What the "older" CRD lacks (the CRD has had one version so far, so the older one is made
# from it): a spec field with a default and three printer columns.
DROPPED_FIELD = "skipBatchSubmission"
DROPPED_COLUMNS = ("Files failed", "Last sync", "Sync ID")
OLDER_ANNOTATION = "mixpeek.com/chart-generation"
# Namespaced and cluster-scoped kinds a release of the chart may create.
RELEASE_KINDS = (
    "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,leases,"
    "networkpolicies,poddisruptionbudgets,configmaps"
)
CLUSTER_KINDS = (
    "clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings,"
    "mutatingadmissionpolicies,mutatingadmissionpolicybindings"
)

pytestmark = pytest.mark.timeout(900)


# --- the docs' commands ------------------------------------------------------------------------


def doc_block(doc: Path, name: str) -> str:
    """The shell block under `<!-- test: name -->` in `doc`."""
    found = re.findall(r"<!-- test: ([\w-]+) -->\n```sh\n(.*?)```", doc.read_text(), flags=re.DOTALL)
    blocks: dict[str, str] = dict(found)
    assert name in blocks, f"{doc.name} has no block marked <!-- test: {name} -->"
    return blocks[name]


def run_doc(
    node: Node, workdir: Path, doc: Path, name: str, *, script: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the block (or `script`, a variant of it) with bash -e -o pipefail, kubectl and helm
    on the PATH, KUBECONFIG set, in `workdir` (which holds ./charts and my-values.yaml)."""
    env = {
        **os.environ,
        "PATH": f"{kube_bin_dir()}:{build_helm()}:{os.environ['PATH']}",
        "KUBECONFIG": str(node.running.kubeconfig),
        "RELEASE": RELEASE,
        "NAMESPACE": NS,
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script if script is not None else doc_block(doc, name)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{doc.name} [{name}] failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the docs' commands run: ./charts is this checkout's."""
    path = tmp_path_factory.mktemp("lifecycle")
    (path / "charts").symlink_to(REPO_ROOT / "charts")
    return path


def write_values(node: Node, workdir: Path) -> None:
    """my-values.yaml, the values the docs' reinstall names: the image built here, the default
    Secret, and a NetworkPolicy that names this cluster's API server and the emulator."""
    repository, tag = node.image.rsplit(":", 1)
    (slices,) = node.json(
        "-n", "default", "get", "endpointslices", "-l", "kubernetes.io/service-name=kubernetes"
    )["items"]
    api_addresses = [a for endpoint in slices["endpoints"] for a in endpoint["addresses"]]
    api_ports = [port["port"] for port in slices["ports"]]
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "credentials": {"defaultSecretName": DEFAULT_SECRET},
        "settings": {"observeInterval": 5},
        "networkPolicy": {
            "enabled": True,
            "apiServer": {"cidrs": [f"{address}/32" for address in api_addresses], "ports": api_ports},
            "extraEgress": [
                {
                    "to": [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": MIXPEEK_NS}}}
                    ],
                    "ports": [{"port": EMULATOR_PORT, "protocol": "TCP"}],
                }
            ],
        },
    }
    (workdir / "my-values.yaml").write_text(yaml.safe_dump(values))


# --- state --------------------------------------------------------------------------------------


def emulator(node: Node) -> EmulatorService:
    return EmulatorService(node, MIXPEEK_NS)


def default_secret(node: Node, api_key: str) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": DEFAULT_SECRET},
        "stringData": {"apiKey": api_key, "namespace": "default", "baseUrl": emulator(node).url()},
    }
    node.apply(NS, secret)


def with_default_credentials(name: str, **spec: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = bucketsync(name, **spec)
    del manifest["spec"]["credentialsRef"]
    return manifest


def create_objects(node: Node, prefix: str) -> dict[str, str]:
    """Two BucketSyncs in each namespace, all Ready; returns namespace/name -> remote sync id."""
    node.apply(
        APP_NS, *(bucketsync(f"{prefix}-{i}", sourcePath=f"demo-bucket/{prefix}/{i}") for i in range(2))
    )
    node.apply(
        NS,
        *(
            with_default_credentials(f"{prefix}-{i}", sourcePath=f"demo-bucket/{prefix}/default-{i}")
            for i in range(2)
        ),
    )
    return wait_all_ready(node, 4)


def wait_all_ready(node: Node, count: int) -> dict[str, str]:
    def ready() -> dict[str, str] | None:
        objects = [obj for ns in (NS, APP_NS) for obj in node.bucketsyncs(ns)]
        if len(objects) == count and all(is_ready(obj) for obj in objects):
            return {f"{o['metadata']['namespace']}/{o['metadata']['name']}": str(sync_id(o)) for o in objects}
        return None

    ids: dict[str, str] = wait_for(ready, timeout=180, interval=1, what=f"{count} BucketSyncs Ready")
    return ids


def remote_ids(node: Node) -> set[str]:
    return {sync["sync_config_id"] for sync in emulator(node).syncs()}


def crd_exists(node: Node) -> bool:
    return node.kubectl("get", "crd", CRD, check=False).returncode == 0


def held_secrets(node: Node) -> list[str]:
    """Secrets anywhere that carry one of the operator's finalizers."""
    return [
        f"{s['metadata']['namespace']}/{s['metadata']['name']}"
        for s in node.json("get", "secrets", "--all-namespaces")["items"]
        if any(f.startswith("mixpeek.com/") for f in s["metadata"].get("finalizers") or [])
    ]


def release_objects(node: Node) -> list[str]:
    """Every object labelled with this release, namespaced or cluster-scoped."""
    selector = f"app.kubernetes.io/instance={RELEASE}"
    found = node.kubectl(
        "get", RELEASE_KINDS, "--all-namespaces", "-l", selector, "-o", "name"
    ).stdout.split()
    found += node.kubectl("get", CLUSTER_KINDS, "-l", selector, "-o", "name").stdout.split()
    return found


def helm_test(node: Node) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(build_helm() / "helm"),
            f"--kubeconfig={node.running.kubeconfig}",
            "test",
            RELEASE,
            "-n",
            NS,
            "--logs",
            "--timeout",
            "120s",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def assert_nothing_left(node: Node) -> None:
    assert not crd_exists(node), "the CRD is still there"
    assert not remote_ids(node), "remote syncs were left at Mixpeek"
    assert not held_secrets(node), f"Secrets still held: {held_secrets(node)}"
    # The Deployment is gone when `helm uninstall --wait` returns; its ReplicaSet and pod
    # follow through the garbage collector.
    wait_for(lambda: not release_objects(node), timeout=90, interval=1, what="no object of the release")


def older_chart(workdir: Path) -> Path:
    """The chart with an older CRD in crds/: no spec.skipBatchSubmission, fewer columns."""
    chart = workdir / "older-chart"
    if chart.exists():
        shutil.rmtree(chart)
    shutil.copytree(CHART, chart)
    path = chart / "crds" / f"{CRD}.yaml"
    crd = yaml.safe_load(path.read_text())
    (version,) = crd["spec"]["versions"]
    del version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][DROPPED_FIELD]
    version["additionalPrinterColumns"] = [
        column for column in version["additionalPrinterColumns"] if column["name"] not in DROPPED_COLUMNS
    ]
    path.write_text(yaml.safe_dump(crd, sort_keys=False))
    # A default the newer chart dropped: `--reset-then-reuse-values` must not carry it over.
    values = chart / "values.yaml"
    values.write_text(
        values.read_text().replace("podAnnotations: {}", f"podAnnotations:\n  {OLDER_ANNOTATION}: older")
    )
    return chart


def helm_install(node: Node, chart: Path, workdir: Path) -> None:
    node.helm(
        "install",
        RELEASE,
        str(chart),
        "--namespace",
        NS,
        "-f",
        str(workdir / "my-values.yaml"),
        "--wait",
        "--timeout=180s",
    )
    # No wait for admission: `--wait` returns once BucketSync creates are admitted (admission.py).
    wait_pods_ready(node, NS, 1)


# --- the scenario -------------------------------------------------------------------------------


def test_install_with_network_policy_and_a_failing_then_passing_helm_test(node: Node, workdir: Path) -> None:
    for namespace in (NS, APP_NS, MIXPEEK_NS):
        node.kubectl("create", "namespace", namespace)
    deploy_emulator(node, MIXPEEK_NS)
    create_credentials(node, APP_NS, emulator(node))
    default_secret(node, "sk_test_wrong_key_never_valid")
    write_values(node, workdir)
    helm_install(node, CHART, workdir)

    failed = helm_test(node)
    assert failed.returncode != 0, failed.stdout
    (line,) = [line for line in failed.stdout.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: Mixpeek at http://"), line
    assert "rejected the API key" in line, line
    assert f"{NS}/{DEFAULT_SECRET}" in line
    assert "sk_test_wrong_key_never_valid" not in failed.stdout + failed.stderr

    default_secret(node, EMULATOR_API_KEY)
    passed = helm_test(node)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert re.search(r"Phase:\s+Succeeded", passed.stdout), passed.stdout
    # A passing test pod is deleted, and the failed one went with the new run.
    wait_for(
        lambda: (
            not node.json("-n", NS, "get", "pods", "-l", "app.kubernetes.io/component=helm-test")["items"]
        ),
        timeout=60,
        interval=1,
        what="helm test pods deleted",
    )

    # The policy as the API server validated and stored it is the policy the chart rendered.
    manifest = node.helm("get", "manifest", RELEASE, "--namespace", NS).stdout
    (rendered,) = [doc for doc in yaml.safe_load_all(manifest) if doc and doc["kind"] == "NetworkPolicy"]
    stored = node.json("-n", NS, "get", "networkpolicy", FULLNAME)
    assert stored["spec"] == rendered["spec"]
    (pod,) = node.live_pods(NS)
    assert all(
        pod["metadata"]["labels"].get(k) == v for k, v in stored["spec"]["podSelector"]["matchLabels"].items()
    )
    # Every branch of the template (CIDRs, scrapers, extra rules) passes the API server's validation.
    every_branch = [
        "--set", "networkPolicy.enabled=true",
        "--set", "networkPolicy.apiServer.cidrs={10.0.0.1/32}",
        "--set", "networkPolicy.mixpeek.cidrs={203.0.113.0/24,2001:db8::/64}",
        "--set-json", 'networkPolicy.metricsFrom=[{"podSelector":{"matchLabels":{"app":"prometheus"}}}]',
        "--set-json", 'networkPolicy.extraEgress=[{"ports":[{"port":8443}]}]',
    ]  # fmt: skip
    rendered_all = node.helm(
        "template",
        RELEASE,
        str(CHART),
        "-n",
        NS,
        "--show-only",
        "templates/networkpolicy.yaml",
        *every_branch,
    ).stdout
    node.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered_all)
    # The operator works under it (nothing enforces it on this node, see the module docstring).
    create_objects(node, "first")


def test_this_node_does_not_enforce_network_policy(node: Node) -> None:
    """What the NetworkPolicy checks above can and cannot show: the node's CNI (the bridge
    plugin, with kube-proxy) implements no NetworkPolicy, so a policy denying all ingress to
    the emulator blocks nothing. If this fails, something on the node now enforces policies:
    replace the validation-only checks with tests of blocked and allowed traffic."""
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all-ingress"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    node.apply(MIXPEEK_NS, deny)
    try:
        reached = helm_test(node)
    finally:
        node.kubectl("-n", MIXPEEK_NS, "delete", "networkpolicy", "deny-all-ingress")
    assert reached.returncode == 0, reached.stdout + reached.stderr


def uninstall_operator(node: Node, workdir: Path) -> None:
    """The documented `helm uninstall`: when it is done, no operator pod runs any more, not even
    one in its grace period (after `helm uninstall --wait` alone one still did, and deleted the
    remote syncs of a CRD deleted right after)."""
    run_doc(node, workdir, UNINSTALL_DOC, "helm-uninstall")
    pods = node.json("-n", NS, "get", "pods", "-l", OPERATOR_SELECTOR)["items"]
    assert not pods, [pod["metadata"]["name"] for pod in pods]


def test_the_documented_uninstall_order_leaves_nothing_behind(node: Node, workdir: Path) -> None:
    assert remote_ids(node)
    run_doc(node, workdir, UNINSTALL_DOC, "delete-bucketsyncs")
    assert not node.json("get", "bucketsyncs", "--all-namespaces")["items"]
    assert not remote_ids(node), "the operator did not delete the remote syncs"
    # The doc's check, once the operator has seen the last BucketSync go (as a user re-runs it).
    wait_for(lambda: not held_secrets(node), timeout=30, interval=0.5, what="Secrets released")
    check = run_doc(node, workdir, UNINSTALL_DOC, "check-finalizers")
    assert check.stdout.strip() == "no Secret holds a mixpeek.com finalizer", check.stdout
    uninstall_operator(node, workdir)
    run_doc(node, workdir, UNINSTALL_DOC, "delete-crd")
    assert_nothing_left(node)
    # The credentials Secrets are the user's: still there, released.
    node.kubectl("-n", NS, "get", "secret", DEFAULT_SECRET)
    node.kubectl("-n", APP_NS, "get", "secret", CREDENTIALS_SECRET)


def test_an_older_release_upgraded_as_documented_keeps_its_objects_ready(node: Node, workdir: Path) -> None:
    assert not crd_exists(node)
    helm_install(node, older_chart(workdir), workdir)
    crd = node.json("get", "crd", CRD)
    (version,) = crd["spec"]["versions"]
    assert DROPPED_FIELD not in version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    before = create_objects(node, "old")
    assert DROPPED_FIELD not in node.json("-n", APP_NS, "get", "bucketsync", "old-0")["spec"]

    # The documented command without --force-conflicts: Helm's field manager owns the CRD.
    plain = doc_block(UPGRADE_DOC, "upgrade-crd").replace(" --force-conflicts", "")
    refused = run_doc(node, workdir, UPGRADE_DOC, "upgrade-crd", script=plain.splitlines()[0], check=False)
    assert refused.returncode != 0, refused.stdout
    assert "conflict" in refused.stderr.lower(), refused.stderr
    print(f"\nwithout --force-conflicts: {refused.stderr.strip().splitlines()[0]}")

    (pod_before,) = node.live_pods(NS)
    assert pod_before["metadata"]["annotations"][OLDER_ANNOTATION] == "older"
    run_doc(node, workdir, UPGRADE_DOC, "upgrade-crd")
    run_doc(node, workdir, UPGRADE_DOC, "upgrade-chart")
    (pod_after,) = wait_pods_ready(node, NS, 1, not_named=(pod_before["metadata"]["name"],))
    assert OLDER_ANNOTATION not in (pod_after["metadata"].get("annotations") or {})
    assert pod_after["spec"]["containers"][0]["image"] == node.image  # the install's own value kept
    run_doc(node, workdir, UPGRADE_DOC, "upgrade-check")

    (served,) = node.json("get", "crd", CRD)["spec"]["versions"]
    (shipped,) = yaml.safe_load((CHART / "crds" / f"{CRD}.yaml").read_text())["spec"]["versions"]
    assert served["additionalPrinterColumns"] == shipped["additionalPrinterColumns"]
    assert served["schema"] == shipped["schema"]
    assert wait_all_ready(node, 4) == before  # the same objects, on the same remote syncs
    assert remote_ids(node) == set(before.values())
    old = node.json("-n", APP_NS, "get", "bucketsync", "old-0")
    assert old["spec"][DROPPED_FIELD] is False  # the new field's default, on a stored object
    header = node.kubectl("-n", APP_NS, "get", "bucketsyncs", "-o", "wide").stdout.splitlines()[0]
    assert all(column.upper() in header for column in DROPPED_COLUMNS), header
    fields = node.json("get", "crd", CRD, "--show-managed-fields")["metadata"]["managedFields"]
    managers = {entry["manager"] for entry in fields}
    assert "kubectl" in managers, managers


def test_helm_uninstall_first_strands_objects_and_the_crd_until_the_documented_reinstall(
    node: Node, workdir: Path
) -> None:
    remote = remote_ids(node)
    assert len(remote) == 4
    uninstall_operator(node, workdir)

    # Without the operator: the objects keep their finalizer, the Secrets theirs, and the CRD
    # waits for its objects.
    node.kubectl("delete", "crd", CRD, "--wait=false")

    def stuck() -> dict[str, Any] | None:
        crd = node.json("get", "crd", CRD)
        terminating = [c for c in crd["status"].get("conditions", []) if c["type"] == "Terminating"]
        deleting = ("InstanceDeletionInProgress", "InstanceDeletionCheck")
        return crd if terminating and terminating[0]["reason"] in deleting else None

    crd = wait_for(stuck, timeout=60, interval=1, what="CRD Terminating, deleting its instances")
    assert crd["metadata"]["deletionTimestamp"]

    def all_deleting() -> list[dict[str, Any]] | None:
        objects = [obj for ns in (NS, APP_NS) for obj in node.bucketsyncs(ns)]
        return objects if all(obj["metadata"].get("deletionTimestamp") for obj in objects) else None

    objects = wait_for(all_deleting, timeout=60, interval=1, what="the CRD's objects deleted")
    assert len(objects) == 4
    assert all(FINALIZER in obj["metadata"]["finalizers"] for obj in objects)
    assert f"{APP_NS}/{CREDENTIALS_SECRET}" in held_secrets(node)
    assert remote_ids(node) == remote

    # Way out A: the operator again, with the values it had; it finishes every deletion.
    run_doc(node, workdir, UNINSTALL_DOC, "reinstall")
    wait_for(lambda: not crd_exists(node), timeout=180, interval=1, what="the CRD gone by itself")
    assert not remote_ids(node), "the reinstalled operator did not delete the remote syncs"
    wait_for(lambda: not held_secrets(node), timeout=60, interval=1, what="Secrets released")
    run_doc(node, workdir, UNINSTALL_DOC, "helm-uninstall")
    assert_nothing_left(node)


def test_orphaned_objects_and_way_out_b_leave_the_remote_syncs(node: Node, workdir: Path) -> None:
    helm_install(node, CHART, workdir)
    kept = create_objects(node, "kept")
    # The documented way to keep every remote sync: Orphan, then delete, with the operator up.
    run_doc(node, workdir, UNINSTALL_DOC, "orphan-all")
    run_doc(node, workdir, UNINSTALL_DOC, "delete-bucketsyncs")
    assert remote_ids(node) == set(kept.values())

    # Way out B: the operator gone first, objects stuck, finalizers removed by hand.
    node.apply(
        APP_NS, *(bucketsync(f"stranded-{i}", sourcePath=f"demo-bucket/stranded/{i}") for i in range(2))
    )
    stranded = wait_all_ready(node, 2)
    uninstall_operator(node, workdir)
    node.kubectl("delete", "bucketsyncs", "--all", "-n", APP_NS, "--wait=false")
    assert len(node.bucketsyncs(APP_NS)) == 2  # stuck on the finalizer
    assert f"{APP_NS}/{CREDENTIALS_SECRET}" in held_secrets(node)
    run_doc(node, workdir, UNINSTALL_DOC, "remove-finalizers")
    wait_for(lambda: not node.bucketsyncs(APP_NS), timeout=30, interval=0.5, what="stranded objects gone")
    run_doc(node, workdir, UNINSTALL_DOC, "delete-crd")
    assert not crd_exists(node)
    assert not held_secrets(node)
    wait_for(lambda: not release_objects(node), timeout=90, interval=1, what="no object of the release")
    # As the doc says: the remote syncs stay at Mixpeek.
    assert remote_ids(node) == set(kept.values()) | set(stranded.values())

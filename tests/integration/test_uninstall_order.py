"""Removing a credentials Secret and its BucketSync together deletes the remote sync and finishes.

Helm deletes Secrets before custom resources, an Argo CD or Flux prune deletes both at once,
`kubectl delete -f` goes in file order. The in-use finalizer on the Secret (secret_guard.py)
keeps it readable until the BucketSync that needs it is gone, in each of these orders.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from hack.k8sbuild import build_helm
from hack.localcluster import ControlPlane
from mixpeek_operator.constants import SECRET_IN_USE_FINALIZER
from tests.support.operator_support import (
    EMULATOR_API_KEY,
    EmulatorProcess,
    Objects,
    OperatorFactory,
    bucketsync,
    make_secret,
    sync_id,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("crd_installed")

APP_CHART = Path(__file__).parent / "charts" / "bucketsync-app"


def remote_ids(mixpeek: EmulatorProcess) -> set[str]:
    return {sync["sync_config_id"] for sync in mixpeek.admin.list_syncs()}


def assert_all_gone(objects: Objects, name: str, secret_name: str, remote: str,
                    mixpeek: EmulatorProcess) -> None:  # fmt: skip
    wait_for(lambda: objects.get(name) is None, 30, what=f"BucketSync {name} deleted")
    wait_for(lambda: objects.secret(secret_name) is None, 30, what="Secret deleted")
    assert remote not in remote_ids(mixpeek), "the remote sync was left behind"
    assert "Deleted" in objects.event_reasons(name)


def test_helm_uninstall_of_secret_and_bucketsync_finishes_and_deletes_the_remote_sync(
    objects: Objects,
    mixpeek: EmulatorProcess,
    cluster: ControlPlane,
    api_client: k8s.ApiClient,
    start_operator: OperatorFactory,
) -> None:
    helm = str(build_helm() / "helm")
    release = f"app-{uuid.uuid4().hex[:6]}"
    base = [helm, "--kubeconfig", str(cluster.kubeconfig), "-n", objects.namespace]
    start_operator(objects.namespace)
    values = f"apiKey={EMULATOR_API_KEY},baseUrl={mixpeek.url}"
    subprocess.run([*base, "install", release, str(APP_CHART), "--set", values], check=True, timeout=60)
    remote = sync_id(objects.wait_ready(release))
    held = objects.secret(f"{release}-credentials")
    assert held is not None
    assert SECRET_IN_USE_FINALIZER in (held.metadata.finalizers or [])

    uninstall = subprocess.run(
        [*base, "uninstall", release, "--wait", "--timeout", "60s"],
        capture_output=True,
        text=True,
        timeout=90,
    )

    assert uninstall.returncode == 0, uninstall.stderr
    assert remote is not None
    assert_all_gone(objects, release, f"{release}-credentials", remote, mixpeek)


def test_kubectl_delete_of_a_file_with_both_finishes(
    objects: Objects, mixpeek: EmulatorProcess, api_client: k8s.ApiClient, start_operator: OperatorFactory,
    tmp_path: Path,
) -> None:  # fmt: skip
    start_operator(objects.namespace)
    manifest: dict[str, Any] = bucketsync("from-file", credentialsRef={"name": "file-credentials"})
    secret_manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "file-credentials"},
        "stringData": {"apiKey": EMULATOR_API_KEY, "namespace": "default", "baseUrl": mixpeek.url},
    }
    path = tmp_path / "app.yaml"
    # The Secret first: kubectl deletes in file order, the worst case for the BucketSync.
    path.write_text("\n---\n".join(json.dumps(m) for m in (secret_manifest, manifest)))
    objects.kubectl("apply", "-f", str(path))
    remote = sync_id(objects.wait_ready("from-file"))
    assert remote is not None

    objects.kubectl("delete", "-f", str(path), "--wait=true", "--timeout=60s")

    assert_all_gone(objects, "from-file", "file-credentials", remote, mixpeek)


def test_prune_order_secret_then_bucketsync_finishes(
    objects: Objects, mixpeek: EmulatorProcess, api_client: k8s.ApiClient, start_operator: OperatorFactory
) -> None:
    make_secret(
        api_client, objects.namespace, "pruned-credentials", api_key=EMULATOR_API_KEY, base_url=mixpeek.url
    )
    start_operator(objects.namespace)
    objects.create(bucketsync("pruned", credentialsRef={"name": "pruned-credentials"}))
    remote = sync_id(objects.wait_ready("pruned"))
    assert remote is not None

    objects.core.delete_namespaced_secret("pruned-credentials", objects.namespace)
    # In use: the Secret stays (Terminating) and the object keeps working with it.
    terminating = objects.secret("pruned-credentials")
    assert terminating is not None
    assert terminating.metadata.deletion_timestamp is not None
    objects.delete("pruned")

    assert_all_gone(objects, "pruned", "pruned-credentials", remote, mixpeek)


def test_a_secret_no_bucketsync_names_any_more_is_released(
    objects: Objects, mixpeek: EmulatorProcess, api_client: k8s.ApiClient, start_operator: OperatorFactory
) -> None:
    for name in ("old-credentials", "new-credentials"):
        make_secret(api_client, objects.namespace, name, api_key=EMULATOR_API_KEY, base_url=mixpeek.url)
    start_operator(objects.namespace)
    objects.create(bucketsync("moving", credentialsRef={"name": "old-credentials"}))
    objects.wait_ready("moving")

    objects.patch("moving", {"spec": {"credentialsRef": {"name": "new-credentials"}}})
    objects.wait_ready("moving")

    def finalizers(name: str) -> list[str]:
        found = objects.secret(name)
        return list((found.metadata.finalizers or []) if found else [])

    wait_for(
        lambda: SECRET_IN_USE_FINALIZER not in finalizers("old-credentials"), 30, what="old Secret released"
    )
    assert SECRET_IN_USE_FINALIZER in finalizers("new-credentials")

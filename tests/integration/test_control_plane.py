"""The local control plane is a real Kubernetes API: CEL, OpenAPI bounds, status subresource,
watches, authentication and RBAC all behave as in a cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from kubernetes import client as k8s
from kubernetes import watch

from hack.localcluster import (
    REPO_ROOT,
    ControlPlane,
    assert_no_leftovers,
    leftover_processes,
    running_control_plane,
    write_kubeconfig,
)

GROUP, VERSION, PLURAL = "probe.mixpeek.com", "v1", "widgets"

WIDGET_CRD = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {PLURAL}.{GROUP}
spec:
  group: {GROUP}
  scope: Namespaced
  names: {{plural: {PLURAL}, singular: widget, kind: Widget}}
  versions:
  - name: {VERSION}
    served: true
    storage: true
    subresources: {{status: {{}}}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: self.minReplicas <= self.maxReplicas
              message: spec.minReplicas must not exceed spec.maxReplicas
            properties:
              size: {{type: integer, minimum: 1, maximum: 10}}
              minReplicas: {{type: integer}}
              maxReplicas: {{type: integer}}
          status:
            type: object
            properties:
              phase: {{type: string}}
"""


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def widget_crd(cluster: ControlPlane) -> None:
    cluster.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")


def test_cel_rule_and_bounds_are_enforced(cluster: ControlPlane, widget_crd: None, namespace: str) -> None:
    bad_rule = cluster.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        check=False,
        input=json.dumps(widget("bad-rule", size=3, minReplicas=5, maxReplicas=2)),
    )
    assert bad_rule.returncode != 0
    assert "spec.minReplicas must not exceed spec.maxReplicas" in bad_rule.stderr

    out_of_bounds = cluster.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        check=False,
        input=json.dumps(widget("too-big", size=11, minReplicas=1, maxReplicas=2)),
    )
    assert out_of_bounds.returncode != 0
    assert "spec.size" in out_of_bounds.stderr
    assert "less than or equal to 10" in out_of_bounds.stderr

    ok = cluster.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        input=json.dumps(widget("good", size=3, minReplicas=1, maxReplicas=2)),
    )
    assert "widget.probe.mixpeek.com/good created" in ok.stdout


def test_status_subresource_is_separate_and_watch_sees_it(
    api_client: k8s.ApiClient, widget_crd: None, namespace: str
) -> None:
    api = k8s.CustomObjectsApi(api_client)
    created = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, widget("w", size=2, minReplicas=1, maxReplicas=1)
    )
    assert created["metadata"]["generation"] == 1

    events: list[tuple[str, dict[str, Any]]] = []
    seen_status = threading.Event()
    watcher = watch.Watch()

    def consume() -> None:
        for event in watcher.stream(
            api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            resource_version=created["metadata"]["resourceVersion"],
            timeout_seconds=30,
        ):
            events.append((event["type"], event["object"]))
            if event["object"].get("status", {}).get("phase") == "Ready":
                seen_status.set()
                watcher.stop()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    time.sleep(0.3)  # let the watch register before the change

    # Status written through the main resource is ignored ...
    api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "w", {"status": {"phase": "Hacked"}}
    )
    assert "status" not in api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w")
    # ... and written through /status it lands without touching spec or generation.
    patched = api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "w", {"status": {"phase": "Ready"}, "spec": {"size": 9}}
    )
    assert patched["status"] == {"phase": "Ready"}
    assert patched["spec"]["size"] == 2
    assert patched["metadata"]["generation"] == 1

    assert seen_status.wait(timeout=20), f"watch never saw the status change: {events}"
    thread.join(timeout=5)
    assert events[-1][0] == "MODIFIED"


def _service_account_token(api_client: k8s.ApiClient, namespace: str, name: str) -> str:
    core = k8s.CoreV1Api(api_client)
    core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
    )
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    )
    response = core.create_namespaced_service_account_token(name, namespace, request)
    token: str = response.status.token
    return token


def test_rbac_refuses_a_service_account_without_permissions(
    cluster: ControlPlane, api_client: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    token = _service_account_token(api_client, namespace, "nobody")
    kubeconfig = write_kubeconfig(
        tmp_path / "nobody.kubeconfig", cluster.server, cluster.pki.ca_cert, user="nobody", token=token
    )

    whoami = cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig)
    username = json.loads(whoami.stdout)["status"]["userInfo"]["username"]
    assert username == f"system:serviceaccount:{namespace}:nobody"  # the token authenticates ...

    denied = cluster.kubectl("-n", namespace, "get", "configmaps", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0  # ... but RBAC grants nothing
    assert "Forbidden" in denied.stderr
    assert f"system:serviceaccount:{namespace}:nobody" in denied.stderr

    bad_token = write_kubeconfig(
        tmp_path / "forged.kubeconfig",
        cluster.server,
        cluster.pki.ca_cert,
        user="forged",
        token=token[:-4] + "AAAA",
    )
    forged = cluster.kubectl("-n", namespace, "get", "configmaps", kubeconfig=bad_token, check=False)
    assert "Unauthorized" in forged.stderr

    # Granting a Role is what makes the difference: RBAC, not a broken token, refused it.
    cluster.kubectl("-n", namespace, "create", "role", "read-cm", "--verb=list", "--resource=configmaps")
    cluster.kubectl(
        "-n",
        namespace,
        "create",
        "rolebinding",
        "read-cm",
        "--role=read-cm",
        f"--serviceaccount={namespace}:nobody",
    )
    deadline = time.monotonic() + 10
    while True:
        allowed = cluster.kubectl("-n", namespace, "get", "configmaps", kubeconfig=kubeconfig, check=False)
        if allowed.returncode == 0:
            break
        assert time.monotonic() < deadline, allowed.stderr
        time.sleep(0.2)
    still_denied = cluster.kubectl("-n", namespace, "get", "secrets", kubeconfig=kubeconfig, check=False)
    assert "Forbidden" in still_denied.stderr


def test_control_plane_cleans_up_when_the_test_body_fails(tmp_path: Path) -> None:
    workdir = tmp_path / "failing"
    pids: list[int] = []

    def failing_test_body() -> None:
        with running_control_plane(workdir) as plane:
            pids.extend(plane.pids())
            raise RuntimeError("simulated test failure")

    with pytest.raises(RuntimeError, match="simulated test failure"):
        failing_test_body()
    assert len(pids) == 2
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert_no_leftovers(str(workdir))


def test_children_die_when_the_driver_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the process that started the control plane leaves nothing behind."""
    workdir = tmp_path / "killed"
    # The workdir travels in the environment, so only etcd and the apiserver name it.
    script = textwrap.dedent(
        """
        import os, pathlib, sys, time
        from hack.k8sbuild import build_kubernetes
        from hack.localcluster import ControlPlane
        plane = ControlPlane(workdir=pathlib.Path(os.environ["PLANE_DIR"]), bin_dir=build_kubernetes())
        plane.start()
        print("ready", flush=True)
        time.sleep(600)
        """
    )
    env = dict(os.environ, PLANE_DIR=str(workdir), PYTHONPATH=str(REPO_ROOT))
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert driver.stdout is not None
        assert driver.stdout.readline().strip() == "ready"
        assert len(leftover_processes(str(workdir))) == 2
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    assert_no_leftovers(str(workdir))

"""Exec-plugin kubeconfigs (EKS, GKE, AKS style) against the real kube-apiserver: our client
and kopf's watches both log in through the one loader (kube.default_connection), which runs
the plugin; the operator started through `mixpeek-operator run` reconciles with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client as k8s

from hack.localcluster import ControlPlane
from mixpeek_operator.kube import BUCKETSYNCS, KubeClient, KubeConnection, load_default_connection
from tests.integration.test_kube_client import create, service_account_kubeconfig
from tests.support.exec_plugin import exec_kubeconfig, plugin_calls
from tests.support.operator_support import Objects, OperatorFactory, bucketsync


def admin_certificate_env(cluster: ControlPlane) -> dict[str, str]:
    return {"PLUGIN_CERT": str(cluster.pki.admin_cert), "PLUGIN_KEY": str(cluster.pki.admin_key)}


async def test_a_client_certificate_from_an_exec_plugin_authenticates(
    cluster: ControlPlane, crd_installed: None, api_client: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    create(api_client, namespace, "via-exec")
    kubeconfig = exec_kubeconfig(
        tmp_path, cluster.server, cluster.pki.ca_cert, admin_certificate_env(cluster)
    )
    async with KubeClient(KubeConnection.from_kubeconfig(kubeconfig)) as kube:
        found = await kube.get_object(BUCKETSYNCS, namespace, "via-exec")
    assert found is not None
    assert len(plugin_calls(tmp_path)) == 1


async def test_an_expiring_exec_token_is_renewed_before_it_expires(
    cluster: ControlPlane,
    crd_installed: None,
    api_client: k8s.ApiClient,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    create(api_client, namespace, "renewed")
    _, token = service_account_kubeconfig(cluster, namespace, "exec-sa", tmp_path / "sa-kc", admin=True)
    token_file = tmp_path / "token"
    token_file.write_text(token)
    # Within the refresh margin already: every use asks the plugin again, as client-go would.
    soon = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kubeconfig = exec_kubeconfig(
        tmp_path,
        cluster.server,
        cluster.pki.ca_cert,
        {"PLUGIN_TOKEN_FILE": str(token_file), "PLUGIN_EXPIRES": soon},
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    async with KubeClient(load_default_connection) as kube:
        assert await kube.get_object(BUCKETSYNCS, namespace, "renewed") is not None
        assert await kube.get_object(BUCKETSYNCS, namespace, "renewed") is not None
    assert len(plugin_calls(tmp_path)) >= 3  # the first login, then a renewal before each request


def test_the_operator_runs_on_an_exec_plugin_kubeconfig(
    cluster: ControlPlane,
    crd_installed: None,
    credentials: str,
    objects: Objects,
    start_operator: OperatorFactory,
    namespace: str,
    tmp_path: Path,
) -> None:
    kubeconfig = exec_kubeconfig(
        tmp_path, cluster.server, cluster.pki.ca_cert, admin_certificate_env(cluster)
    )
    operator = start_operator(namespace, kubeconfig=kubeconfig)
    objects.create(bucketsync("exec-login"))
    objects.wait_ready("exec-login")
    # Both connections ran the plugin: kopf's login (watches) and our client (writes).
    assert len(plugin_calls(tmp_path)) >= 2
    logs = operator.logs()
    assert "BEGIN EC PRIVATE KEY" not in logs
    assert "login_via_client" not in logs  # kopf used our login handler, not the kubernetes package

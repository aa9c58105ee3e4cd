"""Exec credential plugins as the kubeconfig loader runs them: a real executable each time
(no cluster needed to check what the loader makes of its answers and failures)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mixpeek_operator.kube import KubeConfigError, KubeConnection
from tests.support.exec_plugin import exec_kubeconfig, plugin_calls

SERVER = "https://127.0.0.1:6443"


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, str]:
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    key.write_text("-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n")
    return {"PLUGIN_CERT": str(cert), "PLUGIN_KEY": str(key)}


def test_a_client_certificate_from_the_plugin(tmp_path: Path, pem_files: dict[str, str]) -> None:
    kubeconfig = exec_kubeconfig(tmp_path, SERVER, tmp_path / "ca.crt", pem_files)
    connection = KubeConnection.from_kubeconfig(kubeconfig)
    assert connection.certificate_data == Path(pem_files["PLUGIN_CERT"]).read_text()
    assert connection.private_key_data == Path(pem_files["PLUGIN_KEY"]).read_text()
    assert connection.token is None
    assert "BEGIN" not in repr(connection)
    (call,) = plugin_calls(tmp_path)
    assert call["args"] == ["get-credential", "--cluster", "local"]
    assert call["info"] == {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "spec": {"interactive": False},
    }


@pytest.mark.parametrize(
    "api_version", ["client.authentication.k8s.io/v1beta1", "client.authentication.k8s.io/v1alpha1"]
)
def test_a_token_with_an_expiry_from_older_plugin_versions(tmp_path: Path, api_version: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("plugin-token-0123456789\n")
    env = {"PLUGIN_TOKEN_FILE": str(token_file), "PLUGIN_EXPIRES": "2030-01-02T03:04:05Z"}
    kubeconfig = exec_kubeconfig(tmp_path, SERVER, tmp_path / "ca.crt", env, api_version=api_version)
    connection = KubeConnection.from_kubeconfig(kubeconfig)
    assert connection.token == "plugin-token-0123456789"
    assert connection.expires_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert "plugin-token" not in repr(connection)


def test_a_failing_plugin_is_a_clear_error(tmp_path: Path, pem_files: dict[str, str]) -> None:
    kubeconfig = exec_kubeconfig(tmp_path, SERVER, tmp_path / "ca.crt", {**pem_files, "PLUGIN_FAIL": "1"})
    with pytest.raises(KubeConfigError, match=r"exited with 3: plugin: not logged in \(run `cloud login`\)"):
        KubeConnection.from_kubeconfig(kubeconfig)


def test_a_missing_plugin_shows_the_install_hint(tmp_path: Path, pem_files: dict[str, str]) -> None:
    kubeconfig = exec_kubeconfig(
        tmp_path, SERVER, tmp_path / "ca.crt", pem_files, command="no-such-auth-plugin-on-path"
    )
    with pytest.raises(KubeConfigError, match=r"not found \(install test-auth-plugin from the test suite\)"):
        KubeConnection.from_kubeconfig(kubeconfig)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"apiVersion": "client.authentication.k8s.io/v2"}, "exec apiVersion .* is not one of"),
        ({"interactiveMode": "Always"}, "requires interactiveMode Always"),
    ],
)
def test_plugins_the_operator_cannot_run_are_refused(
    tmp_path: Path, pem_files: dict[str, str], change: dict[str, str], message: str
) -> None:
    kubeconfig = exec_kubeconfig(tmp_path, SERVER, tmp_path / "ca.crt", pem_files, extra=change)
    with pytest.raises(KubeConfigError, match=message):
        KubeConnection.from_kubeconfig(kubeconfig)
    assert plugin_calls(tmp_path) == []  # refused before running anything


def test_a_certificate_without_its_key_is_refused(tmp_path: Path, pem_files: dict[str, str]) -> None:
    Path(pem_files["PLUGIN_KEY"]).write_text("")
    kubeconfig = exec_kubeconfig(tmp_path, SERVER, tmp_path / "ca.crt", pem_files)
    with pytest.raises(KubeConfigError, match="client certificate without its key"):
        KubeConnection.from_kubeconfig(kubeconfig)

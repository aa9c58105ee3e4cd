"""Kubeconfig exec credential plugins (client.authentication.k8s.io), as client-go runs them.

EKS (`aws eks get-token`), GKE (`gke-gcloud-auth-plugin`) and AKS (`kubelogin`) clusters
authenticate through a plugin named in the kubeconfig: it is run with the configured
arguments and environment plus `KUBERNETES_EXEC_INFO`, never interactively, and prints an
ExecCredential holding a bearer token or a client certificate, optionally with an expiry.
The credential never reaches a log line or an exception.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

SUPPORTED_API_VERSIONS: Final = (
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
    "client.authentication.k8s.io/v1alpha1",
)
# A plugin that may open a browser (kubelogin device flow) must not hang the operator forever.
PLUGIN_TIMEOUT_SECONDS: Final = 120.0
_STDERR_LIMIT: Final = 500


class ExecPluginError(ValueError):
    """The exec plugin is misconfigured, failed, or printed no usable credential."""


@dataclass(frozen=True)
class ExecCredential:
    token: str | None = field(default=None, repr=False)
    client_certificate_data: str | None = field(default=None, repr=False)
    client_key_data: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None


def run_exec_plugin(config: Mapping[str, Any], base_dir: Path, user_name: str) -> ExecCredential:
    """Run the `exec` entry of kubeconfig user `user_name` and return its credential."""
    api_version = str(config.get("apiVersion") or "")
    if api_version not in SUPPORTED_API_VERSIONS:
        raise ExecPluginError(
            f"kubeconfig user {user_name!r}: exec apiVersion {api_version!r} is not one of "
            f"{', '.join(SUPPORTED_API_VERSIONS)}"
        )
    if config.get("interactiveMode") == "Always":
        raise ExecPluginError(
            f"kubeconfig user {user_name!r}: exec plugin requires interactiveMode Always; "
            "the operator runs non-interactively"
        )
    command = _command_path(str(config.get("command") or ""), base_dir, user_name)
    args = [str(arg) for arg in config.get("args") or []]
    env = dict(os.environ)
    env.update({str(item["name"]): str(item["value"]) for item in config.get("env") or []})
    exec_info = {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    env["KUBERNETES_EXEC_INFO"] = json.dumps(exec_info)
    try:
        completed = subprocess.run(
            [command, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PLUGIN_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError as exc:
        hint = f" ({config['installHint'].strip()})" if config.get("installHint") else ""
        raise ExecPluginError(
            f"kubeconfig user {user_name!r}: exec plugin {command!r} not found{hint}"
        ) from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExecPluginError(
            f"kubeconfig user {user_name!r}: exec plugin {command!r} failed: {exc}"
        ) from exc
    if completed.returncode != 0:
        stderr = completed.stderr.decode(errors="replace").strip()[:_STDERR_LIMIT]
        raise ExecPluginError(
            f"kubeconfig user {user_name!r}: exec plugin {command!r} exited with "
            f"{completed.returncode}: {stderr}"
        )
    return _parse_credential(completed.stdout, api_version, command)


def _command_path(command: str, base_dir: Path, user_name: str) -> str:
    if not command:
        raise ExecPluginError(f"kubeconfig user {user_name!r}: exec has no command")
    # As client-go: a relative path with a separator is relative to the kubeconfig's directory;
    # a bare name is looked up on PATH.
    if os.sep in command and not os.path.isabs(command):
        return str(base_dir / command)
    return command


def _parse_credential(output: bytes, api_version: str, command: str) -> ExecCredential:
    try:
        document = json.loads(output)
    except ValueError as exc:
        raise ExecPluginError(f"exec plugin {command!r} printed no JSON ExecCredential") from exc
    if not isinstance(document, dict) or document.get("kind") != "ExecCredential":
        raise ExecPluginError(f"exec plugin {command!r} printed something other than an ExecCredential")
    if document.get("apiVersion") != api_version:
        raise ExecPluginError(
            f"exec plugin {command!r} answered apiVersion {document.get('apiVersion')!r}, "
            f"expected {api_version!r}"
        )
    status = document.get("status") or {}
    token = status.get("token") or None
    certificate, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if bool(certificate) != bool(key):
        raise ExecPluginError(f"exec plugin {command!r} returned a client certificate without its key")
    if not token and not certificate:
        raise ExecPluginError(f"exec plugin {command!r} returned neither a token nor a client certificate")
    expires = status.get("expirationTimestamp")
    try:
        expires_at = datetime.fromisoformat(str(expires).replace("Z", "+00:00")) if expires else None
    except ValueError as exc:
        raise ExecPluginError(f"exec plugin {command!r} returned an invalid expirationTimestamp") from exc
    return ExecCredential(
        token=token, client_certificate_data=certificate, client_key_data=key, expires_at=expires_at
    )

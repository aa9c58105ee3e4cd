"""Where the API server is and how to authenticate to it: `KubeConnection`.

Read from a kubeconfig (kubectl's merging rules, exec credential plugins through
exec_plugin.py) or from the pod's ServiceAccount. A token file (the ServiceAccount's projected
token, or a kubeconfig `tokenFile`) is re-read here and only here: `KubeConnection.read_token`
for a login that wants the token as it is now (kopf's), `TokenCache` for our own client, which
re-reads it at most once a minute as client-go does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import yaml

from mixpeek_operator.kube.errors import KubeConfigError
from mixpeek_operator.kube.exec_plugin import ExecCredential, ExecPluginError, run_exec_plugin

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# client-go re-reads a token file at most once a minute; the kubelet rotates projected
# tokens long before they expire, and a 401 forces an immediate re-read anyway.
TOKEN_FILE_TTL_SECONDS: Final = 60.0


@dataclass(frozen=True)
class KubeConnection:
    """Where the API server is and how to authenticate to it.

    `*_data` fields hold PEM (str or bytes) and take precedence over the matching `*_path`
    (as in client-go). `token` takes precedence over `token_path`; a `token_path` is
    re-read by the client (at most once a minute, and at once after a 401).
    """

    server: str
    ca_path: Path | None = None
    ca_data: str | bytes | None = field(default=None, repr=False)
    certificate_path: Path | None = None
    certificate_data: str | bytes | None = field(default=None, repr=False)
    private_key_path: Path | None = None
    private_key_data: str | bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    token_path: Path | None = None
    insecure: bool = False
    # When the credential (from an exec plugin) expires; the client fetches a new one before.
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.server.startswith(("https://", "http://")):
            raise KubeConfigError(f"server must be an http(s) URL, got {self.server!r}")
        has_cert = self.certificate_path is not None or self.certificate_data is not None
        has_key = self.private_key_path is not None or self.private_key_data is not None
        if has_cert != has_key:
            raise KubeConfigError("a client certificate needs both the certificate and its private key")

    @property
    def has_client_certificate(self) -> bool:
        return self.certificate_path is not None or self.certificate_data is not None

    @classmethod
    def from_kubeconfig(cls, path: Path | None = None, context: str | None = None) -> KubeConnection:
        """Read a kubeconfig: `path`, else the files in $KUBECONFIG (merged), else ~/.kube/config.

        Supports certificate/key/CA paths and `*-data` fields, `token`, `tokenFile`,
        `insecure-skip-tls-verify` and exec credential plugins (exec_plugin.py); the
        deprecated auth-provider plugins and basic auth are refused.
        """
        config = _load_kubeconfig(path)
        context_name = context or config.current_context
        if not context_name:
            raise KubeConfigError("kubeconfig has no current-context and no context was given")
        if context_name not in config.contexts:
            raise KubeConfigError(f"kubeconfig has no context {context_name!r}")
        context_entry, _ = config.contexts[context_name]
        cluster_name, user_name = context_entry.get("cluster"), context_entry.get("user")
        if cluster_name not in config.clusters:
            raise KubeConfigError(f"context {context_name!r} names unknown cluster {cluster_name!r}")
        cluster, cluster_dir = config.clusters[cluster_name]
        user, user_dir = config.users.get(user_name or "", ({}, cluster_dir))
        unsupported = sorted({"auth-provider", "username", "password"} & user.keys())
        if unsupported:
            raise KubeConfigError(
                f"kubeconfig user {user_name!r} uses {', '.join(unsupported)}, which is not supported: "
                "use a token, tokenFile, client certificate or exec plugin"
            )
        credential = _exec_credential(user, user_dir, str(user_name))
        server = cluster.get("server")
        if not isinstance(server, str):
            raise KubeConfigError(f"cluster {cluster_name!r} has no server")
        return cls(
            server=server,
            ca_path=_kubeconfig_path(cluster.get("certificate-authority"), cluster_dir),
            ca_data=_kubeconfig_data(cluster, "certificate-authority-data"),
            certificate_path=_kubeconfig_path(user.get("client-certificate"), user_dir),
            certificate_data=credential.client_certificate_data
            or _kubeconfig_data(user, "client-certificate-data"),
            private_key_path=_kubeconfig_path(user.get("client-key"), user_dir),
            private_key_data=credential.client_key_data or _kubeconfig_data(user, "client-key-data"),
            token=credential.token or user.get("token") or None,
            token_path=_kubeconfig_path(user.get("tokenFile"), user_dir),
            insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
            expires_at=credential.expires_at,
        )

    @classmethod
    def in_cluster(
        cls,
        service_account_dir: Path = SERVICE_ACCOUNT_DIR,
        environ: Mapping[str, str] | None = None,
    ) -> KubeConnection:
        """The pod's ServiceAccount: token file (re-read as it rotates) and cluster CA."""
        env = os.environ if environ is None else environ
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise KubeConfigError("not running in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set")
        token_path = service_account_dir / "token"
        if not token_path.is_file():
            raise KubeConfigError(f"service account token not found at {token_path}")
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        ca_path = service_account_dir / "ca.crt"
        return cls(
            server=f"https://{host}:{port}",
            ca_path=ca_path if ca_path.is_file() else None,
            token_path=token_path,
        )

    def read_token(self) -> str | None:
        """The bearer token now: `token`, else the token file read afresh (the kubelet rotates
        a projected token), else None (a client certificate or nothing authenticates)."""
        if self.token is not None or self.token_path is None:
            return self.token
        try:
            return self.token_path.read_text().strip()
        except OSError as exc:
            raise KubeConfigError(f"cannot read token file {self.token_path}: {exc}") from exc


class TokenCache:
    """A connection's bearer token, its token file re-read at most once per `ttl` seconds.

    `forget()` (after a 401, or on new credentials) makes the next `token()` read the file.
    """

    def __init__(self, ttl: float = TOKEN_FILE_TTL_SECONDS) -> None:
        self._ttl = ttl
        self._read: tuple[str | None, float] | None = None  # (token, monotonic time read)

    def token(self, connection: KubeConnection) -> str | None:
        if connection.token is not None or connection.token_path is None:
            return connection.token
        now = time.monotonic()
        if self._read is None or now - self._read[1] > self._ttl:
            self._read = (connection.read_token(), now)
        return self._read[0]

    def forget(self) -> None:
        self._read = None


def kubeconfig_namespace(path: Path | None = None, context: str | None = None) -> str | None:
    """The namespace the kubeconfig context names (kubectl's default for -n), if any."""
    config = _load_kubeconfig(path)
    entry = config.contexts.get(context or config.current_context or "")
    namespace = entry[0].get("namespace") if entry else None
    return namespace if isinstance(namespace, str) and namespace else None


def default_connection() -> KubeConnection:
    """In a pod: the ServiceAccount; elsewhere: the kubeconfig (KUBECONFIG or ~/.kube/config).

    The one loader behind both kopf's watches (the login handler) and our own writes.
    """
    if (SERVICE_ACCOUNT_DIR / "token").exists():
        return KubeConnection.in_cluster()
    return KubeConnection.from_kubeconfig()


async def load_default_connection() -> KubeConnection:
    """`default_connection()` off the event loop (an exec plugin may take a while)."""
    return await asyncio.to_thread(default_connection)


def _exec_credential(user: Mapping[str, Any], user_dir: Path, user_name: str) -> ExecCredential:
    if not user.get("exec"):
        return ExecCredential()
    try:
        return run_exec_plugin(user["exec"], user_dir, user_name)
    except ExecPluginError as exc:
        raise KubeConfigError(str(exc)) from exc


@dataclass
class _Kubeconfig:
    # name -> (entry, directory its relative paths are resolved against)
    clusters: dict[str, tuple[dict[str, Any], Path]]
    users: dict[str, tuple[dict[str, Any], Path]]
    contexts: dict[str, tuple[dict[str, Any], Path]]
    current_context: str | None


def _load_kubeconfig(path: Path | None) -> _Kubeconfig:
    if path is not None:
        paths = [path]
    elif os.environ.get("KUBECONFIG"):
        paths = [Path(part) for part in os.environ["KUBECONFIG"].split(os.pathsep) if part]
    else:
        paths = [Path.home() / ".kube" / "config"]
    merged = _Kubeconfig(clusters={}, users={}, contexts={}, current_context=None)
    found = False
    for file in paths:
        try:
            document = yaml.safe_load(file.read_text())
        except FileNotFoundError:
            continue  # kubectl skips missing entries of $KUBECONFIG too
        except (OSError, yaml.YAMLError) as exc:
            raise KubeConfigError(f"cannot read kubeconfig {file}: {exc}") from exc
        found = True
        if not isinstance(document, dict):
            continue
        base = file.resolve().parent
        # As in kubectl, the first file to define a name (or current-context) wins.
        for section, key, target in (
            ("clusters", "cluster", merged.clusters),
            ("users", "user", merged.users),
            ("contexts", "context", merged.contexts),
        ):
            for entry in document.get(section) or []:
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    target.setdefault(entry["name"], (dict(entry.get(key) or {}), base))
        merged.current_context = merged.current_context or document.get("current-context") or None
    if not found:
        raise KubeConfigError(f"no kubeconfig found at {os.pathsep.join(map(str, paths))}")
    return merged


def _kubeconfig_path(value: object, base: Path) -> Path | None:
    if not value:
        return None
    return base / Path(str(value)).expanduser()  # an absolute path ignores `base`


def _kubeconfig_data(entry: Mapping[str, Any], key: str) -> bytes | None:
    value = entry.get(key)
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except binascii.Error as exc:
        raise KubeConfigError(f"kubeconfig field {key} is not valid base64") from exc

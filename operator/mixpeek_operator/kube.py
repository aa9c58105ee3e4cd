"""`KubeClient`: a small async Kubernetes API client for the operator's own writes.

kopf watches and dispatches; the reconcile engine makes a handful of calls of its own
(status patches, finalizers, Events, reading Secrets). This client does exactly those, on
one httpx connection pool, with typed errors, one credential refresh on 401 and a write
hook for metrics. It imports neither `kubernetes` nor `kopf`.

Bearer tokens and private keys never appear in a repr, an exception or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import random
import socket
import ssl
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self
from urllib.parse import quote

import httpx
import yaml

from mixpeek_operator import __version__
from mixpeek_operator.kube_exec import ExecCredential, ExecPluginError, run_exec_plugin

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]
JsonPatch = list[dict[str, Any]]
ConnectionProvider = Callable[[], Awaitable["KubeConnection"]]
# (kind of write: "status" | "metadata" | "event" | "lease", HTTP status or 0 when no response arrived)
WriteHook = Callable[[str, int], None]
EventType = Literal["Normal", "Warning"]

# A stuck call must fail fast and go back to the scheduler rather than hold a worker.
DEFAULT_TIMEOUT: Final = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)
# Sized for ~100 reconciles writing at once over HTTP/1.1; over HTTP/2 (TLS) one connection
# carries them all. Keep-alive avoids a TLS handshake per write.
DEFAULT_LIMITS: Final = httpx.Limits(
    max_connections=100, max_keepalive_connections=100, keepalive_expiry=60.0
)
# client-go re-reads a token file at most once a minute; the kubelet rotates projected
# tokens long before they expire, and a 401 forces an immediate re-read anyway.
TOKEN_FILE_TTL_SECONDS: Final = 60.0
# Credentials with an expiry (exec plugins) are renewed this long before it, as client-go does.
CREDENTIAL_REFRESH_MARGIN_SECONDS: Final = 60.0
FINALIZER_ATTEMPTS: Final = 5
_FINALIZER_RETRY_JITTER_SECONDS: Final = 0.05
EVENT_MESSAGE_LIMIT: Final = 1024
# API server validation limits for Event fields.
_EVENT_NAME_LIMIT: Final = 253
_REPORTING_INSTANCE_LIMIT: Final = 128
DEFAULT_EVENT_COMPONENT: Final = "mixpeek-operator"
SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_PATCH_CONTENT_TYPES: Final[dict[str, str]] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}
_ERROR_BODY_LIMIT: Final = 500


# --- errors -------------------------------------------------------------------------------


class KubeConfigError(ValueError):
    """The kubeconfig or in-cluster environment cannot be turned into a connection."""


class KubeError(Exception):
    """A failed Kubernetes API call.

    `status` is the HTTP status (0 when no response arrived), `reason` and `message` come
    from the API server's `Status` object, `request` is "METHOD /path".
    """

    def __init__(self, status: int, reason: str, message: str, request: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.request = request
        prefix = f"{request}: " if request else ""
        code = f"{status} " if status else ""
        super().__init__(f"{prefix}{code}{reason}: {message}")


class KubeConnectionError(KubeError):
    """No HTTP response: connection refused, TLS failure, timeout."""


class KubeUnauthorized(KubeError):
    """401: the credentials were rejected, even after one refresh."""


class KubeForbidden(KubeError):
    """403: authenticated, but RBAC does not allow it."""


class KubeNotFound(KubeError):
    """404."""


class KubeConflict(KubeError):
    """409: a stale resourceVersion, or the object already exists."""


class KubeInvalid(KubeError):
    """422: the object or patch fails validation (OpenAPI, CEL, metadata rules)."""


def is_kube_outage(error: KubeError) -> bool:
    """The API server is unreachable, restarting or overloaded (no answer, 429 or 5xx): retry later."""
    return isinstance(error, KubeConnectionError) or error.status == 429 or error.status >= 500


_ERRORS_BY_STATUS: Final[dict[int, type[KubeError]]] = {
    401: KubeUnauthorized,
    403: KubeForbidden,
    404: KubeNotFound,
    409: KubeConflict,
    422: KubeInvalid,
}


def _error_from_response(response: httpx.Response, request: str) -> KubeError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        reason = str(body.get("reason") or response.reason_phrase)
        message = str(body.get("message") or "")
    else:
        reason, message = response.reason_phrase, response.text[:_ERROR_BODY_LIMIT]
    error_class = _ERRORS_BY_STATUS.get(response.status_code, KubeError)
    return error_class(response.status_code, reason, message, request)


# --- connection ---------------------------------------------------------------------------


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
        `insecure-skip-tls-verify` and exec credential plugins (kube_exec.py); the
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


def _pem_text(data: str | bytes) -> str:
    # ssl treats bytes `cadata` as DER, so PEM always goes in as text.
    return data.decode("ascii") if isinstance(data, bytes) else data


def _ssl_context(connection: KubeConnection) -> ssl.SSLContext:
    if connection.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif connection.ca_data is not None:
        context = ssl.create_default_context(cadata=_pem_text(connection.ca_data))
    elif connection.ca_path is not None:
        context = ssl.create_default_context(cafile=str(connection.ca_path))
    else:
        context = ssl.create_default_context()  # the system trust store
    if connection.has_client_certificate:
        _load_client_certificate(context, connection)
    return context


def _load_client_certificate(context: ssl.SSLContext, connection: KubeConnection) -> None:
    """ssl can only load a certificate chain from files: in-memory PEM goes to private temp files.

    The files live only for the `load_cert_chain` call (the context keeps what it loaded),
    so a key never outlives the moment it is needed on disk.
    """
    with tempfile.TemporaryDirectory(prefix="mixpeek-operator-tls-") as directory:  # mode 0700
        certificate = _materialize(connection.certificate_data, connection.certificate_path, directory, "crt")
        key = _materialize(connection.private_key_data, connection.private_key_path, directory, "key")
        try:
            context.load_cert_chain(certificate, key)
        except (OSError, ssl.SSLError) as exc:
            raise KubeConfigError(f"cannot load the client certificate: {exc}") from exc


def _materialize(data: str | bytes | None, path: Path | None, directory: str, suffix: str) -> str:
    if data is None:
        assert path is not None  # KubeConnection validates that one of them is set
        return str(path)
    target = os.path.join(directory, f"tls.{suffix}")
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data.encode("ascii") if isinstance(data, str) else data)
    return target


def _transport_identity(connection: KubeConnection) -> KubeConnection:
    """The parts that need a new connection pool when they change (everything but the token)."""
    return replace(connection, token=None, token_path=None)


# --- paths and objects --------------------------------------------------------------------


def resource_path(
    group: str,
    version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The one place that tells core (`/api/v1/...`) from group (`/apis/{group}/{version}/...`) paths."""
    parts = ["api", version] if group in ("", "core") else ["apis", group, version]
    if namespace is not None:
        parts += ["namespaces", namespace]
    parts.append(plural)
    if name is not None:
        parts.append(name)
    if subresource is not None:
        parts.append(subresource)
    if any(part in ("", ".", "..") for part in parts):
        # An empty name would silently address the collection instead of an object.
        raise ValueError(f"invalid path segment in {parts!r}")
    return "/" + "/".join(quote(part, safe="") for part in parts)


@dataclass(frozen=True)
class ObjectReference:
    """The object an Event is about (core/v1 ObjectReference)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    resource_version: str | None = None

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ObjectReference:
        metadata = obj["metadata"]
        return cls(
            api_version=obj["apiVersion"],
            kind=obj["kind"],
            namespace=metadata["namespace"],
            name=metadata["name"],
            uid=metadata["uid"],
            resource_version=metadata.get("resourceVersion"),
        )

    def to_dict(self) -> JsonObject:
        reference: JsonObject = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }
        if self.resource_version is not None:
            reference["resourceVersion"] = self.resource_version
        return reference


def _as_object(response: httpx.Response, request: str) -> JsonObject:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise KubeError(response.status_code, "InvalidResponse", "expected a JSON object", request)
    return body


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the client ---------------------------------------------------------------------------


class KubeClient:
    """Async Kubernetes API client; use as `async with KubeClient(connection) as kube:`.

    `connection` is a `KubeConnection` or a zero-argument coroutine function returning one;
    the function is called again when the API server answers 401, and the request is
    retried once with the new credentials. `on_write(kind, status)` is called after every
    mutating request (status 0 when no response arrived).
    """

    def __init__(
        self,
        connection: KubeConnection | ConnectionProvider,
        *,
        on_write: WriteHook | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        user_agent: str = f"mixpeek-operator/{__version__}",
    ) -> None:
        if isinstance(connection, KubeConnection):
            self._connection: KubeConnection | None = connection
            self._provider: ConnectionProvider | None = None
        else:
            self._connection, self._provider = None, connection
        self._on_write = on_write
        self._timeout = timeout
        self._limits = limits
        self._user_agent = user_agent
        self._http: httpx.AsyncClient | None = None
        # Pools replaced by a credential refresh; requests may still be using them.
        self._retired: list[httpx.AsyncClient] = []
        self._generation = 0
        self._lock = asyncio.Lock()
        self._file_token: tuple[str, float] | None = None  # (token, monotonic time read)
        self._closed = False

    def __repr__(self) -> str:
        server = self._connection.server if self._connection is not None else "<not connected>"
        return f"KubeClient(server={server!r})"

    async def __aenter__(self) -> Self:
        await self._session()  # resolve the connection now, so a bad config fails at startup
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        clients = [*self._retired, *([self._http] if self._http is not None else [])]
        self._http, self._retired = None, []
        for client in clients:
            await client.aclose()

    # --- reads ----------------------------------------------------------------------------

    async def get_object(
        self, group: str, version: str, plural: str, namespace: str | None, name: str
    ) -> JsonObject | None:
        """The object, or None if it does not exist."""
        try:
            return await self._call("GET", resource_path(group, version, plural, namespace, name))
        except KubeNotFound:
            return None

    async def get_secret(self, namespace: str, name: str) -> JsonObject | None:
        """The Secret (its `data` values still base64), or None if it does not exist."""
        return await self.get_object("", "v1", "secrets", namespace, name)

    async def list_objects(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int | None = 500,
    ) -> list[JsonObject]:
        """Every object of a kind (matching the selectors), in one namespace or cluster-wide,
        following continue tokens; `page_size=None` asks for everything in one response."""
        path = resource_path(group, version, plural, namespace)
        items: list[JsonObject] = []
        base = {
            **({"limit": str(page_size)} if page_size else {}),
            **({"labelSelector": label_selector} if label_selector else {}),
            **({"fieldSelector": field_selector} if field_selector else {}),
        }
        params = base
        while True:
            page = await self._call("GET", path, params=params)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = {**base, "continue": token}

    # --- writes ---------------------------------------------------------------------------

    async def patch_status(
        self, group: str, version: str, plural: str, namespace: str | None, name: str, patch: JsonObject
    ) -> JsonObject:
        """RFC 7386 merge patch of the `/status` subresource; `patch` is `{"status": {...}}`.

        Put `metadata.resourceVersion` in the patch to make it conditional (409 when stale).
        Returns the updated object.
        """
        path = resource_path(group, version, plural, namespace, name, "status")
        return await self._call(
            "PATCH", path, body=patch, content_type=_PATCH_CONTENT_TYPES["merge"], write="status"
        )

    async def merge_patch_object(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        name: str,
        patch: JsonObject,
        *,
        write: str,
    ) -> JsonObject:
        """RFC 7386 merge patch of the object itself (spec, annotations); returns the object."""
        path = resource_path(group, version, plural, namespace, name)
        return await self._call(
            "PATCH", path, body=patch, content_type=_PATCH_CONTENT_TYPES["merge"], write=write
        )

    async def apply_object(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        body: JsonObject,
        *,
        field_manager: str,
        dry_run: bool = False,
    ) -> JsonObject:
        """Server-side apply of `body` (created when absent); `dry_run` validates and defaults
        it through admission without storing anything. Returns the object as it would be."""
        path = resource_path(group, version, plural, namespace, body["metadata"]["name"])
        params = {"fieldManager": field_manager, "force": "true", **({"dryRun": "All"} if dry_run else {})}
        return await self._call(
            "PATCH",
            path,
            body=body,
            content_type=_PATCH_CONTENT_TYPES["apply"],
            params=params,
            write=None if dry_run else "apply",
        )

    async def create_object(
        self, group: str, version: str, plural: str, namespace: str | None, body: JsonObject, *, write: str
    ) -> JsonObject:
        """POST a new object; KubeConflict (409) when it already exists. `write` labels the write hook."""
        path = resource_path(group, version, plural, namespace)
        return await self._call("POST", path, body=body, write=write)

    async def replace_object(
        self, group: str, version: str, plural: str, namespace: str | None, body: JsonObject, *, write: str
    ) -> JsonObject:
        """PUT the whole object; with `metadata.resourceVersion` set, KubeConflict (409) when stale."""
        path = resource_path(group, version, plural, namespace, body["metadata"]["name"])
        return await self._call("PUT", path, body=body, write=write)

    async def add_finalizer(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        name: str,
        finalizer: str,
        *,
        current: JsonObject | None = None,
    ) -> JsonObject:
        """Add `finalizer` unless present; returns the object. Raises KubeNotFound if it is gone.

        `current`, the object as the caller last saw it (e.g. from a watch), saves the first
        read: if it is stale, the pinned resourceVersion makes the write fail and we re-read.
        """
        return await self._edit_finalizers(
            group, version, plural, namespace, name, finalizer, add=True, current=current
        )

    async def remove_finalizer(
        self, group: str, version: str, plural: str, namespace: str | None, name: str, finalizer: str
    ) -> JsonObject | None:
        """Remove `finalizer` if present; returns the object, or None if it is gone."""
        try:
            return await self._edit_finalizers(group, version, plural, namespace, name, finalizer, add=False)
        except KubeNotFound:
            return None

    async def create_event(
        self,
        involved: ObjectReference,
        *,
        type: EventType,
        reason: str,
        message: str,
        component: str = DEFAULT_EVENT_COMPONENT,
        instance: str | None = None,
    ) -> JsonObject:
        """Post a core/v1 Event about `involved` (shown by `kubectl describe` and `get events`)."""
        suffix = f".{uuid.uuid4().hex[:16]}"
        now = _now_rfc3339()
        reporting_instance = (instance or socket.gethostname())[:_REPORTING_INSTANCE_LIMIT]
        event: JsonObject = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": involved.name[: _EVENT_NAME_LIMIT - len(suffix)] + suffix,
                "namespace": involved.namespace,
            },
            "involvedObject": involved.to_dict(),
            "type": type,
            "reason": reason,
            "message": _truncate(message, EVENT_MESSAGE_LIMIT),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            # A set eventTime would make the API server validate this as an events.k8s.io
            # series event; the legacy timestamps are what `kubectl get events` sorts by.
            "eventTime": None,
            "source": {"component": component, "host": reporting_instance},
            "reportingComponent": component,
            "reportingInstance": reporting_instance,
        }
        path = resource_path("", "v1", "events", involved.namespace)
        return await self._call("POST", path, body=event, write="event")

    # --- internals ------------------------------------------------------------------------

    async def _edit_finalizers(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        name: str,
        finalizer: str,
        *,
        add: bool,
        current: JsonObject | None = None,
    ) -> JsonObject:
        path = resource_path(group, version, plural, namespace, name)
        for attempt in range(FINALIZER_ATTEMPTS):
            obj = current if attempt == 0 and current is not None else await self._call("GET", path)
            metadata = obj["metadata"]
            finalizers: list[str] = list(metadata.get("finalizers") or [])
            if (finalizer in finalizers) == add:
                return obj
            wanted = [*finalizers, finalizer] if add else [f for f in finalizers if f != finalizer]
            patch: JsonPatch = [
                # Pinning the resourceVersion we read makes the API server answer 409 if anyone
                # changed the object (its finalizers included) since; then re-read and re-apply,
                # so a finalizer someone else added meanwhile is never dropped.
                {"op": "replace", "path": "/metadata/resourceVersion", "value": metadata["resourceVersion"]},
                {"op": "add", "path": "/metadata/finalizers", "value": wanted},
            ]
            try:
                return await self._call(
                    "PATCH", path, body=patch, content_type=_PATCH_CONTENT_TYPES["json"], write="metadata"
                )
            except KubeConflict:
                # Jitter spreads out writers that lost the same race, so they do not collide again.
                await asyncio.sleep(random.uniform(0, _FINALIZER_RETRY_JITTER_SECONDS * (attempt + 1)))
        raise KubeConflict(
            409,
            "Conflict",
            f"finalizers kept changing; gave up after {FINALIZER_ATTEMPTS} attempts",
            f"PATCH {path}",
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: JsonObject | JsonPatch | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        write: str | None = None,
    ) -> JsonObject:
        request = f"{method} {path}"
        content = None if body is None else json.dumps(body).encode()
        retried = False
        while True:
            http, generation = await self._session()
            if self._expiring():
                await self._refresh(generation, reason="credentials expire soon")
                http, generation = await self._session()
            headers = {"Accept": "application/json"}
            if content is not None:
                headers["Content-Type"] = content_type
            token = self._bearer_token()
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                try:
                    response = await http.request(
                        method, path, content=content, headers=headers, params=params
                    )
                except httpx.RemoteProtocolError:
                    # The API server answers an unauthenticated HTTP/2 request by closing the
                    # connection (GOAWAY), which can swallow the 401 itself: ask once more over
                    # HTTP/1.1 to hear the real answer (a 401 then refreshes credentials below).
                    response = await self._over_http1(method, path, content, headers, params)
            except httpx.TransportError as exc:
                self._report_write(write, 0)
                raise KubeConnectionError(0, type(exc).__name__, str(exc) or repr(exc), request) from exc
            self._report_write(write, response.status_code)
            if response.status_code == 401 and not retried and await self._refresh(generation):
                retried = True
                continue
            if response.is_error:
                raise _error_from_response(response, request)
            return _as_object(response, request)

    async def _session(self) -> tuple[httpx.AsyncClient, int]:
        if self._closed:
            raise RuntimeError("KubeClient is closed")
        if self._http is None:
            async with self._lock:
                if self._http is None:
                    if self._connection is None:
                        assert self._provider is not None
                        self._connection = await self._provider()
                    self._http = self._build_http(self._connection)
        return self._http, self._generation

    def _build_http(self, connection: KubeConnection, *, http2: bool = True) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=connection.server,
            verify=_ssl_context(connection) if connection.server.startswith("https://") else True,
            timeout=self._timeout,
            limits=self._limits,
            # HTTP/2, as client-go does: one multiplexed connection instead of a pool that
            # httpcore scans on every request (that scan was a fifth of the operator's CPU
            # when 1000 objects were created at once; see README, Performance).
            http1=True,
            http2=http2 and connection.server.startswith("https://"),
            headers={"User-Agent": self._user_agent},
        )

    async def _over_http1(
        self,
        method: str,
        path: str,
        content: bytes | None,
        headers: dict[str, str],
        params: Mapping[str, str] | None,
    ) -> httpx.Response:
        assert self._connection is not None
        async with self._build_http(self._connection, http2=False) as http1:
            response = await http1.request(method, path, content=content, headers=headers, params=params)
            await response.aread()
            return response

    def _expiring(self) -> bool:
        expires_at = self._connection.expires_at if self._connection is not None else None
        if expires_at is None or self._provider is None:
            return False
        return (expires_at - datetime.now(UTC)).total_seconds() < CREDENTIAL_REFRESH_MARGIN_SECONDS

    async def _refresh(self, seen_generation: int, reason: str = "Kubernetes API answered 401") -> bool:
        """Fetch fresh credentials (after a 401); False when there is nothing to refresh."""
        async with self._lock:
            if self._generation != seen_generation:
                return True  # a concurrent request already refreshed; just retry
            old = self._connection
            assert old is not None
            if self._provider is not None:
                new = await self._provider()
            elif old.token_path is not None:
                new = old  # same file, but re-read below: the kubelet may have rotated it
            else:
                return False
            self._file_token = None
            if _transport_identity(new) != _transport_identity(old) and self._http is not None:
                self._retired.append(self._http)
                self._http = self._build_http(new)
            self._connection = new
            self._generation += 1
            logger.info("%s; refreshed credentials", reason)
            return True

    def _bearer_token(self) -> str | None:
        connection = self._connection
        assert connection is not None
        if connection.token is not None or connection.token_path is None:
            return connection.token
        now = time.monotonic()
        if self._file_token is None or now - self._file_token[1] > TOKEN_FILE_TTL_SECONDS:
            try:
                self._file_token = (connection.token_path.read_text().strip(), now)
            except OSError as exc:
                raise KubeConfigError(f"cannot read token file {connection.token_path}: {exc}") from exc
        return self._file_token[0]

    def _report_write(self, kind: str | None, status: int) -> None:
        if kind is None or self._on_write is None:
            return
        try:
            self._on_write(kind, status)
        except Exception:
            # A broken metrics hook must not fail the write it reports on.
            logger.exception("Kubernetes write hook failed")

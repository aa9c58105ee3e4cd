"""A small async Kubernetes API client for the operator's own calls.

kopf watches and dispatches; the reconcile engine, leader election, sharding and the kubectl
plugin make a handful of calls of their own (status patches, finalizers, Events, Leases,
reading Secrets). This package does exactly those, on one httpx connection pool, with typed
errors, one credential refresh on 401 and a write hook for metrics. It imports neither
`kubernetes` nor `kopf`. Bearer tokens and private keys never appear in a repr, an exception
or a log line.

Modules, in the order a request needs them:

- `errors`: `KubeConfigError` and the `KubeError` family, one class per status we act on.
- `config`: `KubeConnection` from a kubeconfig (exec plugins via `exec_plugin`) or the pod's
  ServiceAccount, and the one place a token file is (re-)read.
- `tls`: the SSL context of a connection (CA, client certificate from PEM or files).
- `resources`: `Resource(group, version, plural)`, its paths, and the kinds we use.
- `events`: `ObjectReference` and the core/v1 Event built about it.
- `transport`: the HTTP session (HTTP/2 with an HTTP/1.1 fallback, credential refresh,
  retiring replaced pools).
- `client`: `KubeClient`, the calls themselves (a watch is a stream of events).
- `watch`: `ListWatch`, client-go's reflector loop with server-side selectors, keeping keys
  only; `SecretWatches`, one refcounted field-selector watch per Secret in use.

Everything the rest of the operator uses is re-exported here, and code outside this package
imports from `mixpeek_operator.kube` only: the layout inside can change without touching its
twenty-odd importers, and the public surface is this one list, not whatever a submodule
happens to define.
"""

from mixpeek_operator.kube.client import FINALIZER_ATTEMPTS, WATCH_GRACE_SECONDS, KubeClient
from mixpeek_operator.kube.config import (
    SERVICE_ACCOUNT_DIR,
    TOKEN_FILE_TTL_SECONDS,
    KubeConnection,
    default_connection,
    kubeconfig_namespace,
    load_default_connection,
)
from mixpeek_operator.kube.errors import (
    KubeConfigError,
    KubeConflict,
    KubeConnectionError,
    KubeError,
    KubeForbidden,
    KubeGone,
    KubeInvalid,
    KubeNotFound,
    KubeUnauthorized,
    is_kube_outage,
)
from mixpeek_operator.kube.events import (
    DEFAULT_EVENT_COMPONENT,
    EVENT_MESSAGE_LIMIT,
    EventType,
    ObjectReference,
)
from mixpeek_operator.kube.resources import (
    BUCKETSYNCS,
    EVENTS,
    LEASES,
    NAMESPACES,
    SECRETS,
    JsonObject,
    JsonPatch,
    Resource,
)
from mixpeek_operator.kube.transport import (
    CREDENTIAL_REFRESH_MARGIN_SECONDS,
    DEFAULT_LIMITS,
    DEFAULT_TIMEOUT,
    ConnectionProvider,
    WriteHook,
)
from mixpeek_operator.kube.watch import (
    BACKOFF_SECONDS,
    EventHandler,
    ListWatch,
    SecretWatches,
    Spawn,
    WatchHandlerError,
)

__all__ = [
    "BACKOFF_SECONDS",
    "BUCKETSYNCS",
    "CREDENTIAL_REFRESH_MARGIN_SECONDS",
    "DEFAULT_EVENT_COMPONENT",
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "EVENTS",
    "EVENT_MESSAGE_LIMIT",
    "FINALIZER_ATTEMPTS",
    "LEASES",
    "NAMESPACES",
    "SECRETS",
    "SERVICE_ACCOUNT_DIR",
    "TOKEN_FILE_TTL_SECONDS",
    "WATCH_GRACE_SECONDS",
    "ConnectionProvider",
    "EventHandler",
    "EventType",
    "JsonObject",
    "JsonPatch",
    "KubeClient",
    "KubeConfigError",
    "KubeConflict",
    "KubeConnection",
    "KubeConnectionError",
    "KubeError",
    "KubeForbidden",
    "KubeGone",
    "KubeInvalid",
    "KubeNotFound",
    "KubeUnauthorized",
    "ListWatch",
    "ObjectReference",
    "Resource",
    "SecretWatches",
    "Spawn",
    "WatchHandlerError",
    "WriteHook",
    "default_connection",
    "is_kube_outage",
    "kubeconfig_namespace",
    "load_default_connection",
]

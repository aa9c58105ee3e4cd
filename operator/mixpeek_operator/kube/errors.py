"""What can go wrong talking to Kubernetes: a configuration that cannot connect, and failed calls.

A failed call is one `KubeError` subclass per HTTP status the operator acts on, built from the
API server's `Status` object in one place (`error_from_response`).
"""

from __future__ import annotations

from typing import Final

import httpx

_ERROR_BODY_LIMIT: Final = 500


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


class KubeGone(KubeError):
    """410: a resourceVersion or list continue token too old to serve (compacted): list again."""


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
    410: KubeGone,
    422: KubeInvalid,
}


def error_from_response(response: httpx.Response, request: str) -> KubeError:
    """The error for a non-2xx response: its class by status, its text from the `Status` body."""
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

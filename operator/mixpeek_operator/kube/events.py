"""core/v1 Events: the object an Event is about, and the Event the client posts about it.

Events are what `kubectl describe` and `kubectl get events` show; the engine posts one per
transition (a Ready change, a created remote sync), never one per reconcile.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from mixpeek_operator.kube.resources import JsonObject

EventType = Literal["Normal", "Warning"]

EVENT_MESSAGE_LIMIT: Final = 1024
# API server validation limits for Event fields.
_EVENT_NAME_LIMIT: Final = 253
_REPORTING_INSTANCE_LIMIT: Final = 128
DEFAULT_EVENT_COMPONENT: Final = "mixpeek-operator"


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


def build_event(
    obj: ObjectReference, type: EventType, reason: str, message: str, component: str, instance: str | None
) -> JsonObject:
    """A new core/v1 Event about `obj`, named uniquely; `instance` defaults to the host name."""
    suffix = f".{uuid.uuid4().hex[:16]}"
    now = _now_rfc3339()
    reporting_instance = (instance or socket.gethostname())[:_REPORTING_INSTANCE_LIMIT]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": obj.name[: _EVENT_NAME_LIMIT - len(suffix)] + suffix,
            "namespace": obj.namespace,
        },
        "involvedObject": obj.to_dict(),
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


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""`Resource`: one kind of object the API serves (group, version, plural), and the paths to it.

Every call of the client takes a `Resource` instead of three strings, and the kinds the
operator touches are named once below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from mixpeek_operator.constants import GROUP, PLURAL, VERSION

JsonObject = dict[str, Any]
JsonPatch = list[dict[str, Any]]


@dataclass(frozen=True)
class Resource:
    """A kind of object, addressed as the API server's paths do; `group` is "" for the core API."""

    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        """The `apiVersion` of its objects: "v1" for core, "{group}/{version}" otherwise."""
        return self.version if self.is_core else f"{self.group}/{self.version}"

    @property
    def is_core(self) -> bool:
        return self.group in ("", "core")

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The one place that tells core (`/api/v1/...`) from group (`/apis/{group}/{version}/...`)
        paths. Without `namespace` the path is cluster-wide; without `name`, the collection."""
        parts = ["api", self.version] if self.is_core else ["apis", self.group, self.version]
        if namespace is not None:
            parts += ["namespaces", namespace]
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
        if subresource is not None:
            parts.append(subresource)
        if any(part in ("", ".", "..") for part in parts):
            # An empty name would silently address the collection instead of an object.
            raise ValueError(f"invalid path segment in {parts!r}")
        return "/" + "/".join(quote(part, safe="") for part in parts)


# The kinds the operator (and its kubectl plugin, benchmarks and tests) read and write.
BUCKETSYNCS: Final = Resource(GROUP, VERSION, PLURAL)
SECRETS: Final = Resource("", "v1", "secrets")
EVENTS: Final = Resource("", "v1", "events")
NAMESPACES: Final = Resource("", "v1", "namespaces")
LEASES: Final = Resource("coordination.k8s.io", "v1", "leases")

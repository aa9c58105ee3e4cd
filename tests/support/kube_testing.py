"""KubeClient with the calls only tests make (the operator never JSON-patches objects this way)."""

from __future__ import annotations

from typing import Literal

from mixpeek_operator.kube import JsonObject, JsonPatch, KubeClient, Resource

_CONTENT_TYPES = {"merge": "application/merge-patch+json", "json": "application/json-patch+json"}


class TestingKubeClient(KubeClient):
    __test__ = False  # a helper, not a test class

    async def patch_object(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: JsonObject | JsonPatch,
        *,
        patch_type: Literal["merge", "json"] = "merge",
    ) -> JsonObject:
        """Merge patch (a dict) or RFC 6902 JSON patch (a list of ops) of the object itself."""
        if (patch_type == "json") != isinstance(patch, list):
            raise TypeError("a JSON patch is a list of operations; a merge patch is a dict")
        if isinstance(patch, dict):
            return await self.merge_patch_object(resource, namespace, name, patch, write="metadata")
        path = resource.path(namespace, name)
        return await self._call(
            "PATCH", path, body=patch, content_type=_CONTENT_TYPES[patch_type], write="metadata"
        )

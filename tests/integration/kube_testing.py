"""KubeClient with the calls only tests make (the operator never lists or patches objects this way)."""

from __future__ import annotations

from typing import Literal

from mixpeek_operator.kube import JsonObject, JsonPatch, KubeClient, resource_path

_CONTENT_TYPES = {"merge": "application/merge-patch+json", "json": "application/json-patch+json"}


class TestingKubeClient(KubeClient):
    __test__ = False  # a helper, not a test class

    async def list_objects(
        self, group: str, version: str, plural: str, namespace: str | None = None
    ) -> list[JsonObject]:
        """Every object of a kind, in one namespace or cluster-wide, following continue tokens."""
        path = resource_path(group, version, plural, namespace)
        items: list[JsonObject] = []
        params = {"limit": "500"}
        while True:
            page = await self._call("GET", path, params=params)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = {"limit": "500", "continue": token}

    async def patch_object(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        name: str,
        patch: JsonObject | JsonPatch,
        *,
        patch_type: Literal["merge", "json"] = "merge",
    ) -> JsonObject:
        """Merge patch (a dict) or RFC 6902 JSON patch (a list of ops) of the object itself."""
        if (patch_type == "json") != isinstance(patch, list):
            raise TypeError("a JSON patch is a list of operations; a merge patch is a dict")
        path = resource_path(group, version, plural, namespace, name)
        return await self._call(
            "PATCH", path, body=patch, content_type=_CONTENT_TYPES[patch_type], write="metadata"
        )

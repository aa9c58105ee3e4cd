"""`KubeClient`: the Kubernetes API calls the operator makes, each on a `Resource`.

Reads (lists page by page, watches), status and merge patches, server-side apply, creates and
replaces, finalizer edits that never drop someone else's finalizer, and Events. How a request
travels (pools, the HTTP/1.1 fallback, credential refreshes) is transport.py's.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Mapping
from typing import Final, Literal

from mixpeek_operator.kube.errors import KubeConflict, KubeNotFound
from mixpeek_operator.kube.events import DEFAULT_EVENT_COMPONENT, EventType, ObjectReference, build_event
from mixpeek_operator.kube.resources import EVENTS, SECRETS, JsonObject, JsonPatch, Resource
from mixpeek_operator.kube.transport import KubeTransport

FINALIZER_ATTEMPTS: Final = 5
# How much longer than its timeoutSeconds a watch stream may stay silent before we drop it: the
# server ends it at timeoutSeconds, so silence beyond that is a lost connection.
WATCH_GRACE_SECONDS: Final = 30
_FINALIZER_RETRY_JITTER_SECONDS: Final = 0.05
_PATCH_CONTENT_TYPES: Final[dict[str, str]] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}
# The answer to a write as the object's metadata alone (kind PartialObjectMetadata): the server
# encodes, and we parse, no spec or status, for a writer that needs nothing back.
_METADATA_ONLY: Final = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class KubeClient(KubeTransport):
    """Async Kubernetes API client; use as `async with KubeClient(connection) as kube:`.

    `connection` is a `KubeConnection` or a zero-argument coroutine function returning one;
    the function is called again when the API server answers 401, and the request is
    retried once with the new credentials. `on_write(kind, status)` is called after every
    mutating request (status 0 when no response arrived).
    """

    # --- reads ----------------------------------------------------------------------------

    async def get_object(self, resource: Resource, namespace: str | None, name: str) -> JsonObject | None:
        """The object, or None if it does not exist."""
        try:
            return await self._call("GET", resource.path(namespace, name))
        except KubeNotFound:
            return None

    async def get_secret(self, namespace: str, name: str) -> JsonObject | None:
        """The Secret (its `data` values still base64), or None if it does not exist."""
        return await self.get_object(SECRETS, namespace, name)

    async def list_objects(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int | None = 500,
    ) -> list[JsonObject]:
        """Every object of a kind (matching the selectors), in one namespace or cluster-wide,
        following continue tokens; `page_size=None` asks for everything in one response."""
        items: list[JsonObject] = []
        token: str | None = None
        while True:
            page = await self.list_page(
                resource,
                namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                limit=page_size,
                continue_token=token,
            )
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    async def list_page(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = 500,
        continue_token: str | None = None,
    ) -> JsonObject:
        """One page of a LIST (the List object: `items`, `metadata.resourceVersion` and
        `metadata.continue` while more remain). KubeGone (410) when `continue_token` expired."""
        params = {
            **_selector_params(label_selector, field_selector),
            **({"limit": str(limit)} if limit else {}),
            **({"continue": continue_token} if continue_token else {}),
        }
        return await self._call("GET", resource.path(namespace), params=params)

    def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        resource_version: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncGenerator[JsonObject, None]:
        """The watch events (`{"type", "object"}`) after `resource_version`, with bookmarks,
        until the API server ends the stream after `timeout_seconds`. KubeGone (410) when the
        version is too old; the server may also say so in an ERROR event. A stream silent for
        longer than `timeout_seconds` + WATCH_GRACE_SECONDS raises KubeConnectionError. Close it
        with `contextlib.aclosing`. kube/watch.py's ListWatch is the list-then-watch loop."""
        params = {
            **_selector_params(label_selector, field_selector),
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
        }
        read_timeout = timeout_seconds + WATCH_GRACE_SECONDS
        return self._stream_lines(resource.path(namespace), params, read_timeout=read_timeout)

    # --- writes ---------------------------------------------------------------------------

    async def patch_status(
        self, resource: Resource, namespace: str | None, name: str, patch: JsonObject
    ) -> JsonObject:
        """RFC 7386 merge patch of the `/status` subresource; `patch` is `{"status": {...}}`.

        Put `metadata.resourceVersion` in the patch to make it conditional (409 when stale).
        Returns the updated object.
        """
        return await self._patch(resource.path(namespace, name, "status"), patch, "merge", write="status")

    async def merge_patch_object(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: JsonObject,
        *,
        write: str,
        metadata_only: bool = False,
    ) -> JsonObject:
        """RFC 7386 merge patch of the object itself (spec, annotations); returns the object, or
        with `metadata_only` its metadata alone (a PartialObjectMetadata)."""
        path = resource.path(namespace, name)
        return await self._patch(path, patch, "merge", write=write, metadata_only=metadata_only)

    async def json_patch_object(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: JsonPatch,
        *,
        write: str,
        metadata_only: bool = False,
    ) -> JsonObject:
        """RFC 6902 JSON patch of the object; a failing `test` operation is refused (422), so a
        patch can be made conditional on exactly the fields its decision read. Returns the
        object, or with `metadata_only` its metadata alone (a PartialObjectMetadata)."""
        path = resource.path(namespace, name)
        return await self._patch(path, patch, "json", write=write, metadata_only=metadata_only)

    async def apply_object(
        self,
        resource: Resource,
        namespace: str | None,
        body: JsonObject,
        *,
        field_manager: str,
        dry_run: bool = False,
    ) -> JsonObject:
        """Server-side apply of `body` (created when absent); `dry_run` validates and defaults
        it through admission without storing anything. Returns the object as it would be."""
        path = resource.path(namespace, body["metadata"]["name"])
        params = {"fieldManager": field_manager, "force": "true", **({"dryRun": "All"} if dry_run else {})}
        return await self._patch(path, body, "apply", params=params, write=None if dry_run else "apply")

    async def create_object(
        self, resource: Resource, namespace: str | None, body: JsonObject, *, write: str
    ) -> JsonObject:
        """POST a new object; KubeConflict (409) when it already exists. `write` labels the write hook."""
        return await self._call("POST", resource.path(namespace), body=body, write=write)

    async def dry_run_create(self, resource: Resource, namespace: str | None, body: JsonObject) -> JsonObject:
        """A server-side dry run of a create (dryRun=All): admitted and validated, never stored,
        so no write is reported."""
        return await self._call("POST", resource.path(namespace), body=body, params={"dryRun": "All"})

    async def replace_object(
        self, resource: Resource, namespace: str | None, body: JsonObject, *, write: str
    ) -> JsonObject:
        """PUT the whole object; with `metadata.resourceVersion` set, KubeConflict (409) when stale."""
        path = resource.path(namespace, body["metadata"]["name"])
        return await self._call("PUT", path, body=body, write=write)

    async def add_finalizer(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        finalizer: str,
        *,
        current: JsonObject | None = None,
    ) -> JsonObject:
        """Add `finalizer` unless present; returns the object. Raises KubeNotFound if it is gone;
        an object being deleted is returned as it is (no new finalizer may be added to it).

        `current`, the object as the caller last saw it (e.g. from a watch), saves the first
        read: if it is stale, the pinned resourceVersion makes the write fail and we re-read.
        """
        path = resource.path(namespace, name)
        return await self._edit_finalizers(path, finalizer, add=True, current=current)

    async def remove_finalizer(
        self, resource: Resource, namespace: str | None, name: str, finalizer: str
    ) -> JsonObject | None:
        """Remove `finalizer` if present; returns the object, or None if it is gone."""
        try:
            return await self._edit_finalizers(resource.path(namespace, name), finalizer, add=False)
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
        event = build_event(involved, type, reason, message, component, instance)
        return await self._call("POST", EVENTS.path(involved.namespace), body=event, write="event")

    # --- internals ------------------------------------------------------------------------

    async def _patch(
        self,
        path: str,
        patch: JsonObject | JsonPatch,
        kind: Literal["merge", "json", "apply"],
        *,
        params: Mapping[str, str] | None = None,
        write: str | None,
        metadata_only: bool = False,
    ) -> JsonObject:
        # Each PATCH we send is safe to send twice, so it is asked again after a protocol error:
        # a merge patch applied twice leaves what applying it once does, server-side apply is
        # declarative, and our JSON patches are pinned to a resourceVersion (a second gets 409).
        return await self._call(
            "PATCH",
            path,
            body=patch,
            content_type=_PATCH_CONTENT_TYPES[kind],
            params=params,
            write=write,
            resendable=True,
            accept=_METADATA_ONLY if metadata_only else "application/json",
        )

    async def _edit_finalizers(
        self, path: str, finalizer: str, *, add: bool, current: JsonObject | None = None
    ) -> JsonObject:
        for attempt in range(FINALIZER_ATTEMPTS):
            obj = current if attempt == 0 and current is not None else await self._call("GET", path)
            metadata = obj["metadata"]
            finalizers: list[str] = list(metadata.get("finalizers") or [])
            if (finalizer in finalizers) == add or (add and metadata.get("deletionTimestamp")):
                return obj  # done; or being deleted, when the API server refuses new finalizers
            wanted = [*finalizers, finalizer] if add else [f for f in finalizers if f != finalizer]
            patch: JsonPatch = [
                # Pinning the resourceVersion we read makes the API server answer 409 if anyone
                # changed the object (its finalizers included) since; then re-read and re-apply,
                # so a finalizer someone else added meanwhile is never dropped.
                {"op": "replace", "path": "/metadata/resourceVersion", "value": metadata["resourceVersion"]},
                {"op": "add", "path": "/metadata/finalizers", "value": wanted},
            ]
            try:
                return await self._patch(path, patch, "json", write="metadata")
            except KubeConflict:
                # Jitter spreads out writers that lost the same race, so they do not collide again.
                await asyncio.sleep(random.uniform(0, _FINALIZER_RETRY_JITTER_SECONDS * (attempt + 1)))
        raise KubeConflict(
            409,
            "Conflict",
            f"finalizers kept changing; gave up after {FINALIZER_ATTEMPTS} attempts",
            f"PATCH {path}",
        )


def _selector_params(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    return {
        **({"labelSelector": label_selector} if label_selector else {}),
        **({"fieldSelector": field_selector} if field_selector else {}),
    }

"""The operator's own list-watch (`ListWatch`) and its per-Secret watches (`SecretWatches`).

Why not kopf's watch: in label-shard mode each replica must receive only the BucketSyncs
labelled for it (`labelSelector=shard.mixpeek.com/owner=<me>`), and only the Secrets its objects
name (`fieldSelector=metadata.name=<name>`, one watch per Secret, started and stopped as objects
come and go). kopf's handler filters (`labels=`, `when=`) run client-side: its LIST and WATCH
fetch every object in scope first (https://github.com/zalando-incubator/kopf/issues/45 asked for
server-side selectors; https://github.com/PrefectHQ/prefect/issues/22208 is the memory it costs;
https://github.com/nolar/kopf/pull/1311 proposed opt-in ones). The kopf installed here (1.45.2)
has `settings.watching.label_selectors` / `field_selectors`, but they are fixed at startup, one
stream per resource, and our floor is kopf>=1.38: neither a set of watches that changes at
runtime nor a relist on demand (fencing). So these watches are ours; kopf keeps the life cycle.

With a label selector, an object whose labels stop matching arrives as DELETED carrying the
object as it was before that change (its OLD labels: the selector still matches them) at the
change's resourceVersion, with no deletionTimestamp; one whose labels start matching arrives as
ADDED with its new labels (tests/integration/test_kube_watch.py checks both on a real server).

What it keeps: the key (namespace, name) of each object it delivered and the last
resourceVersion; never a body. At 40,000 objects that is a set of tuples, not a cache. The
consumer (`on_event`) keeps what it needs.

How it matches client-go's reflector (tools/cache/reflector.go): a paged LIST (limit +
continue; a 410 for an expired continue token starts the list again), each item delivered as
ADDED, or MODIFIED when its key was known before (a relist), then DELETED for known keys the
list no longer holds (the tombstone carries only apiVersion, kind and metadata name/namespace,
as client-go's DeletedFinalStateUnknown carries what it last knew). Then a WATCH from the list's
resourceVersion with allowWatchBookmarks and timeoutSeconds; every event and BOOKMARK moves the
resourceVersion (bookmarks are not delivered); a stream that ends is watched again from there;
410 Gone (the HTTP status or an ERROR event with code 410) lists again; other errors back off
(1, 2, 5, 10, 20, 30 s; reset by a good stream) with one warning per outage. An ERROR event is
never delivered as an object. A stream silent for longer than timeoutSeconds (plus a grace) is
dropped and watched again. Delivery is at least once: the resourceVersion moves only after
`on_event` returned, so a handler that raises (ending `run`, e.g. for its Supervisor to restart)
sees the event again. `on_event` should be quick: the stream is not read while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import TYPE_CHECKING, Any, Final

from mixpeek_operator.kube.client import WATCH_GRACE_SECONDS
from mixpeek_operator.kube.errors import KubeConnectionError, KubeError, KubeGone
from mixpeek_operator.kube.resources import SECRETS, JsonObject, Resource

if TYPE_CHECKING:
    from mixpeek_operator.kube.client import KubeClient

log = logging.getLogger("mixpeek_operator.kube.watch")

EventHandler = Callable[[str, JsonObject], Awaitable[None]]
# How a long-lived task is started: `functools.partial(supervisor.spawn, kind="watch")` in the
# operator (kube may not import supervision), `asyncio.create_task` by default.
Spawn = Callable[[str, Callable[[], Coroutine[Any, Any, None]]], asyncio.Task[None]]
Key = tuple[str, str]  # (namespace, or "" when cluster-scoped; name)
SecretRef = tuple[str, str]  # (namespace, name)

# client-go's reflector backs off 800 ms doubling to 30 s; these steps reach 30 s in five tries.
BACKOFF_SECONDS: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
# A stream that lasted this long (or delivered anything) was healthy: it resets the backoff, and
# its loss is a reconnect, not a failure (the server drops streams; pools are replaced).
GOOD_STREAM_SECONDS: Final = 10.0


class WatchHandlerError(Exception):
    """`on_event` raised (the cause): the watch stops, to be restarted by its supervisor."""


class ListWatch:
    """List then watch `resource` (one namespace, or all when `namespace` is None) with the
    selectors, delivering `on_event(type, object)` for ADDED, MODIFIED and DELETED; `run()`
    runs until cancelled. `synced` is set once the first full list was delivered; `events`
    counts deliveries (the lists' included), `lists` the completed LISTs."""

    def __init__(
        self,
        kube: KubeClient,
        resource: Resource,
        *,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        on_event: EventHandler,
        page_size: int = 500,
        timeout_seconds: int = 300,
        name: str = "",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = kube
        self._resource = resource
        self._namespace = namespace
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._on_event = on_event
        self._page_size = page_size
        self._timeout_seconds = timeout_seconds
        self.name = name or _describe(resource, namespace, label_selector, field_selector)
        self._sleep = sleep
        self._clock = clock
        self.synced = asyncio.Event()
        self.events = 0
        self.lists = 0
        self._keys: set[Key] = set()
        self._resource_version: str | None = None  # None: list (again) before watching
        self._unproven = False  # watching from a list's version that no event confirmed yet
        self._failures = 0

    def __repr__(self) -> str:
        return f"ListWatch({self.name!r})"

    def sizes(self) -> dict[str, int]:
        """Keys held (the soak benchmark checks they follow the live objects)."""
        return {"watch.keys": len(self._keys)}

    def keys(self) -> frozenset[Key]:
        """The keys of the objects the watch holds now (after `synced`: the last list, kept current)."""
        return frozenset(self._keys)

    async def run(self) -> None:
        while True:
            try:
                if self._resource_version is None:
                    await self._list()
                await self._watch()
            except KubeGone as gone:
                if self._unproven:  # the version a list just gave is gone already: not a loop
                    await self._back_off(gone)
                log.info("watch %s: %s; listing again", self.name, gone.message or gone.reason)
                self._resource_version = None
            except KubeError as error:
                await self._back_off(error)

    # --- list ------------------------------------------------------------------------------

    async def _list(self) -> None:
        seen: set[Key] = set()
        token: str | None = None
        kind = ""
        while True:
            try:
                page = await self._kube.list_page(
                    self._resource,
                    self._namespace,
                    label_selector=self._label_selector,
                    field_selector=self._field_selector,
                    limit=self._page_size,
                    continue_token=token,
                )
            except KubeGone:
                if token is None:
                    raise
                # The continue token outlived its snapshot (etcd compaction): list from the
                # start. Keys delivered so far are known now, so they come again as MODIFIED.
                log.info("watch %s: the list's continue token expired; listing again", self.name)
                seen, token = set(), None
                continue
            kind = str(page.get("kind") or "").removesuffix("List")
            for item in page.get("items") or []:
                item.setdefault("apiVersion", self._resource.api_version)  # core lists omit them
                item.setdefault("kind", kind)
                key = _key(item)
                await self._deliver("MODIFIED" if key in self._keys else "ADDED", item)
                self._keys.add(key)
                seen.add(key)
            metadata = page.get("metadata") or {}
            token = metadata.get("continue") or None
            if token is None:
                break
        for namespace, name in self._keys - seen:
            await self._deliver("DELETED", self._tombstone(kind, namespace, name))
            self._keys.discard((namespace, name))
        self._keys = seen  # the same keys; drops the set grown over the old ones
        self._resource_version = str(metadata.get("resourceVersion") or "") or None
        if self._resource_version is None:
            raise KubeError(0, "InvalidResponse", "a list without a resourceVersion", self.name)
        self._unproven = True
        self.lists += 1
        self.synced.set()

    def _tombstone(self, kind: str, namespace: str, name: str) -> JsonObject:
        """What a relist's DELETED carries: the key only (no body is kept)."""
        metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
        return {"apiVersion": self._resource.api_version, "kind": kind, "metadata": metadata}

    # --- watch -----------------------------------------------------------------------------

    async def _watch(self) -> None:
        assert self._resource_version is not None
        started, received = self._clock(), 0
        deadline = started + self._timeout_seconds + WATCH_GRACE_SECONDS
        stream = self._kube.watch(
            self._resource,
            self._namespace,
            resource_version=self._resource_version,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            timeout_seconds=self._timeout_seconds,
        )
        try:
            async with contextlib.aclosing(stream):
                async for event in stream:
                    await self._handle(event)
                    received += 1
                    if self._clock() > deadline:  # a stream the server never ends: restart it
                        log.info("watch %s outlived its timeout; watching again", self.name)
                        break
        except KubeConnectionError as lost:
            # Connections drop (a server restart, a replaced pool, a silent stream's read
            # timeout): after a good stream, watch again at once from the last version.
            if not self._good(started, received):
                raise
            log.debug("watch %s: stream lost (%s); watching again", self.name, lost)
        if not self._good(started, received):
            raise KubeConnectionError(0, "StreamEnded", "the watch stream ended at once", self.name)
        self._recovered()

    def _good(self, started: float, received: int) -> bool:
        lasted = self._clock() - started
        return received > 0 or lasted >= min(GOOD_STREAM_SECONDS, self._timeout_seconds / 2)

    async def _handle(self, event: JsonObject) -> None:
        kind, obj = event.get("type"), event.get("object")
        if not isinstance(obj, dict):
            raise KubeError(0, "InvalidResponse", f"a {kind} watch event without an object", self.name)
        if kind == "ERROR":  # a Status, never an object: 410 relists, anything else backs off
            code = obj.get("code")
            code = code if isinstance(code, int) else 0
            error = KubeGone if code == 410 else KubeError
            raise error(code, str(obj.get("reason") or "Error"), str(obj.get("message") or ""), self.name)
        self._unproven = False
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            await self._deliver(kind, obj)
            if kind == "DELETED":
                self._keys.discard(_key(obj))
                if not self._keys:
                    # A set keeps the table of its largest size: the assigner's watch of
                    # unlabelled objects held 40,000 keys at startup and holds none after.
                    self._keys = set()
            else:
                self._keys.add(_key(obj))
        elif kind != "BOOKMARK":
            log.debug("watch %s: ignoring a %s event", self.name, kind)
        if version:
            self._resource_version = str(version)

    async def _deliver(self, kind: str, obj: JsonObject) -> None:
        try:
            await self._on_event(kind, obj)
        except Exception as exc:
            raise WatchHandlerError(f"watch {self.name}: on_event failed on {kind}") from exc
        self.events += 1

    # --- failures --------------------------------------------------------------------------

    async def _back_off(self, error: KubeError) -> None:
        delay = BACKOFF_SECONDS[min(self._failures, len(BACKOFF_SECONDS) - 1)]
        self._failures += 1
        if self._failures == 1:  # one line per outage; its end is logged by _recovered
            log.warning("watch %s failed: %s; retrying with backoff up to 30 s", self.name, error)
        else:
            log.debug("watch %s failed again (%d): %s", self.name, self._failures, error)
        await self._sleep(delay)

    def _recovered(self) -> None:
        if self._failures:
            log.info("watch %s works again after %d failed attempts", self.name, self._failures)
            self._failures = 0


class SecretWatches:
    """One field-selector watch per Secret some object uses (refcounted), plus pinned ones.

    `track(owner, ref)` records the Secret an object uses (None: none), starting its watch for
    its first user and stopping it when its last user moves away or is forgotten; `pin(ref)`
    watches a Secret for good (the operator-wide default). Events go to `on_event` as from a
    ListWatch; each watch runs in a task started by `spawn` (a Supervisor's, in the operator).
    """

    def __init__(
        self,
        kube: KubeClient,
        on_event: EventHandler,
        *,
        spawn: Spawn | None = None,
        timeout_seconds: int = 300,
    ) -> None:
        self._kube = kube
        self._on_event = on_event
        self._spawn: Spawn = spawn or (lambda name, run: asyncio.create_task(run(), name=name))
        self._timeout_seconds = timeout_seconds
        self._ref_of: dict[Hashable, SecretRef] = {}
        self._users: dict[SecretRef, set[Hashable]] = {}
        self._pinned: set[SecretRef] = set()
        self._watches: dict[SecretRef, tuple[ListWatch, asyncio.Task[None]]] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def sizes(self) -> dict[str, int]:
        """How many entries each internal map holds (for the soak benchmark)."""
        return {
            "secret_watches.watches": len(self._watches),
            "secret_watches.owners": len(self._ref_of),
            "secret_watches.users": sum(len(users) for users in self._users.values()),
            "secret_watches.pinned": len(self._pinned),
            "secret_watches.stopping": len(self._stopping),
            "secret_watches.keys": sum(watch.sizes()["watch.keys"] for watch, _ in self._watches.values()),
        }

    def track(self, owner: Hashable, ref: SecretRef | None) -> None:
        previous = self._ref_of.get(owner)
        if previous == ref:
            return
        if previous is not None:
            del self._ref_of[owner]
            users = self._users[previous]
            users.discard(owner)
            if not users:
                del self._users[previous]
                self._release(previous)
        if ref is not None:
            self._ref_of[owner] = ref
            self._users.setdefault(ref, set()).add(owner)
            self._ensure(ref)

    def forget(self, owner: Hashable) -> None:
        self.track(owner, None)

    def pin(self, ref: SecretRef) -> None:
        self._pinned.add(ref)
        self._ensure(ref)

    def watch_of(self, ref: SecretRef) -> ListWatch | None:
        entry = self._watches.get(ref)
        return entry[0] if entry is not None else None

    async def stop(self) -> None:
        """Stop every watch (the pinned ones included) and wait until their tasks are gone."""
        for ref in list(self._watches):
            self._stop(ref)
        self._ref_of.clear()
        self._users.clear()
        self._pinned.clear()
        tasks = list(self._stopping)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _ensure(self, ref: SecretRef) -> None:
        if ref in self._watches:
            return
        namespace, name = ref
        watch = ListWatch(
            self._kube,
            SECRETS,
            namespace=namespace,
            field_selector=f"metadata.name={name}",
            on_event=self._on_event,
            timeout_seconds=self._timeout_seconds,
            name=f"secret {namespace}/{name}",
        )
        self._watches[ref] = (watch, self._spawn(f"watch secret {namespace}/{name}", watch.run))

    def _release(self, ref: SecretRef) -> None:
        if ref not in self._pinned:
            self._stop(ref)

    def _stop(self, ref: SecretRef) -> None:
        _, task = self._watches.pop(ref)
        task.cancel()
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)


def _key(obj: JsonObject) -> Key:
    metadata = obj.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def _describe(
    resource: Resource, namespace: str | None, label_selector: str | None, field_selector: str | None
) -> str:
    selectors = ",".join(selector for selector in (label_selector, field_selector) if selector)
    where = f"in {namespace}" if namespace else "in all namespaces"
    return f"{resource.plural} {where}" + (f" ({selectors})" if selectors else "")

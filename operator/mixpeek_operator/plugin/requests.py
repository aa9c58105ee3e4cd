"""`kubectl mixpeek pause | resume | trigger | reconcile NAME... | -l SELECTOR | --all [--wait]`.

pause/resume write `spec.paused` (a new generation: --wait waits for Ready at it, or reports
Stalled); trigger/reconcile write the request annotation with a fresh value each time (--wait
waits for its echo in status, which the operator writes once it has handled that value).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from mixpeek_operator.constants import GROUP, RECONCILE_REQUESTED_AT, TRIGGER_REQUESTED_AT
from mixpeek_operator.kube import BUCKETSYNCS, JsonObject
from mixpeek_operator.plugin.session import (
    FIELD_MANAGER,
    ExitCode,
    PluginError,
    Session,
    conditions_of,
    get_bucketsync,
    is_ready,
    list_bucketsyncs,
)

POLL_SECONDS = 0.5
# verb -> (annotation, status field echoing its last handled value)
ANNOTATION_VERBS = {
    "trigger": (TRIGGER_REQUESTED_AT, "lastHandledTriggerAt"),
    "reconcile": (RECONCILE_REQUESTED_AT, "lastHandledReconcileAt"),
}


def configure_parser(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME")
    parser.add_argument("-l", "--selector", help="every BucketSync matching this label selector")
    parser.add_argument("--all", action="store_true", help="every BucketSync in the namespace")
    parser.add_argument(
        "-A", "--all-namespaces", action="store_true", help="with -l or --all: every namespace"
    )
    parser.add_argument("--wait", action="store_true", help="wait until the operator has handled it")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds --wait waits (default 60)")
    parser.set_defaults(verb=verb)


async def run(args: argparse.Namespace, session: Session) -> int:
    targets = await _targets(args, session)
    patch, check = request_for(args.verb)
    written: list[tuple[JsonObject, Any]] = []
    for obj in targets:
        meta = obj["metadata"]
        updated = await session.kube.merge_patch_object(
            BUCKETSYNCS, meta["namespace"], meta["name"], patch, write=FIELD_MANAGER
        )
        written.append((updated, check))
        print(f"bucketsync.{GROUP}/{meta['name']} {args.verb} requested")
    if not args.wait:
        return ExitCode.OK
    return await _wait(session, written, args.timeout, args.verb)


def request_for(verb: str) -> tuple[JsonObject, str]:
    """The merge patch for `verb`, and the value its echo must show (empty for pause/resume)."""
    if verb in ("pause", "resume"):
        return {"spec": {"paused": verb == "pause"}}, ""
    annotation, _ = ANNOTATION_VERBS[verb]
    # Fresh each time, so the same request twice is two requests.
    value = f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}-{uuid.uuid4().hex[:6]}"
    return {"metadata": {"annotations": {annotation: value}}}, value


async def _targets(args: argparse.Namespace, session: Session) -> list[JsonObject]:
    chosen = sum(bool(x) for x in (args.names, args.selector, args.all))
    if chosen != 1:
        raise PluginError(ExitCode.ERROR, "name the objects: NAME..., -l SELECTOR or --all (exactly one)")
    if args.all_namespaces and args.names:
        raise PluginError(ExitCode.ERROR, "-A goes with -l or --all, not with NAMEs")
    if args.names:
        return [await get_bucketsync(session, session.namespace, name) for name in args.names]
    session.all_namespaces = args.all_namespaces
    found = await list_bucketsyncs(session, args.selector)
    if not found:
        raise PluginError(ExitCode.ERROR, "no BucketSyncs matched")
    return found


def handled(obj: JsonObject, verb: str, value: str, generation: int) -> tuple[bool, str | None]:
    """(done, failure): whether the operator has handled the request, and why it cannot."""
    status = obj.get("status") or {}
    stalled = conditions_of(obj).get("Stalled") or {}
    if stalled.get("status") == "True" and status.get("observedGeneration") == generation:
        return True, f"Stalled: {stalled.get('reason')}: {stalled.get('message')}"
    if verb in ANNOTATION_VERBS:
        return status.get(ANNOTATION_VERBS[verb][1]) == value, None
    return is_ready(obj) and obj["metadata"].get("generation") == generation, None


async def _wait(
    session: Session, written: list[tuple[JsonObject, str]], wait_seconds: float, verb: str
) -> int:
    deadline = time.monotonic() + wait_seconds
    pending = {(o["metadata"]["namespace"], o["metadata"]["name"]): (o, v) for o, v in written}
    failures: list[str] = []
    while pending:
        for key, (obj, value) in list(pending.items()):
            current = await get_bucketsync(session, *key)
            done, failure = handled(current, verb, value, int(obj["metadata"]["generation"]))
            if done:
                del pending[key]
                if failure:
                    failures.append(f"{key[0]}/{key[1]}: {failure}")
                else:
                    print(f"bucketsync.{GROUP}/{key[1]} {verb} handled")
        if not pending:
            break
        if time.monotonic() >= deadline:
            names = ", ".join(f"{ns}/{name}" for ns, name in pending)
            raise PluginError(
                ExitCode.TIMEOUT, f"timed out after {wait_seconds:g}s waiting for the operator: {names}"
            )
        await asyncio.sleep(POLL_SECONDS)
    for line in failures:
        print(f"error: {line}", file=sys.stderr)
    return ExitCode.CHANGES_OR_NOT_READY if failures else ExitCode.OK

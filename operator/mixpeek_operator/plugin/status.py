"""`kubectl mixpeek status NAME | -A`: why an object is (not) Ready, in one screen.

The single view reads the object, its credentials Secret and its Events (three reads); the
table is ONE LIST of BucketSyncs, not-Ready first. Exit 1 when any object shown is not Ready.
Under label shards the table is followed by the shard map (shards.py), counted from the same
LIST plus one LIST of the ring's Leases; `--shards` shows the map alone.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from mixpeek_operator.constants import SECRET_IN_USE_FINALIZER
from mixpeek_operator.kube import EVENTS, JsonObject
from mixpeek_operator.plugin import shards
from mixpeek_operator.plugin.session import (
    ExitCode,
    PluginError,
    Session,
    age,
    bucketsync_pages,
    conditions_of,
    dump,
    get_bucketsync,
    is_ready,
    list_bucketsyncs,
    table,
)

EVENTS_SHOWN = 10
SHARD_MAP_PAGE = 500
CONDITION_ORDER = ("Ready", "Reconciling", "Stalled", "RemoteHealthy", "ReconcilePaused")


def configure_parser(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="BucketSyncs to show (one screen each)")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="a table of every BucketSync")
    parser.add_argument("-l", "--selector", help="label selector for the table")
    parser.add_argument("-o", "--output", choices=["table", "yaml", "json"], default="table")
    parser.add_argument(
        "--shards",
        action="store_true",
        help="only the shard map of label shards (members, assigner, objects per member); "
        "exit 1 when an object has no live owner",
    )
    parser.add_argument("--ring", help="the shard ring (the chart's lease name); default: every ring found")
    parser.add_argument(
        "--ring-namespace", help="where the ring's Leases are (the release namespace); default: all"
    )


async def run(args: argparse.Namespace, session: Session) -> int:
    if args.names and args.all_namespaces:
        raise PluginError(ExitCode.ERROR, "give NAMEs or -A, not both")
    if args.names and args.shards:
        raise PluginError(ExitCode.ERROR, "give NAMEs or --shards, not both")
    if args.shards:
        return await run_shards(args, session)
    if args.names:
        reports = [await report(session, session.namespace, name) for name in args.names]
        ready = all(is_ready(r["object"]) for r in reports)
        if args.output == "table":
            sys.stdout.write("\n".join(render_report(r) for r in reports))
        else:
            sys.stdout.write(dump([_report_data(r) for r in reports], args.output))
    else:
        objects = await list_bucketsyncs(session, args.selector)
        ready = all(is_ready(obj) for obj in objects)
        if args.output == "table":
            if objects:
                sys.stdout.write(render_table(objects))
            else:
                print("No BucketSyncs found.", file=sys.stderr)
            for shard_map in await shard_maps(args, session, objects):
                sys.stdout.write("\n" + shards.render(shard_map))
        else:
            sys.stdout.write(dump([_summary(obj) for obj in sort_not_ready_first(objects)], args.output))
    return ExitCode.OK if ready else ExitCode.CHANGES_OR_NOT_READY


# --- the shard map ----------------------------------------------------------------------------


async def shard_maps(
    args: argparse.Namespace, session: Session, objects: list[JsonObject]
) -> list[shards.ShardMap]:
    """The map of every label-shard ring in view, counted over `objects` (the listed scope)."""
    rings = await shards.read_rings(session, args.ring, args.ring_namespace)
    scope = "all namespaces" if session.all_namespaces else f"namespace {session.namespace}"
    if args.selector:
        scope += f", selector {args.selector}"
    now = datetime.now(UTC)
    return [
        shards.build(namespace, ring, members, assigner, objects, scope, now)
        for namespace, ring, members, assigner in rings
    ]


async def run_shards(args: argparse.Namespace, session: Session) -> int:
    maps = await shard_maps(args, session, [])
    if not maps:
        raise PluginError(
            ExitCode.ERROR,
            "no label-shard ring found (no Lease labelled mixpeek.com/shard-ring with a member"
            " in label mode" + (f" named {args.ring}" if args.ring else "") + ")",
        )
    # Page by page, keeping counts only: the map alone is what one asks for at 100,000 objects.
    async for page in bucketsync_pages(session, args.selector, SHARD_MAP_PAGE):
        for shard_map in maps:
            shards.count(shard_map, page)
    if args.output == "table":
        sys.stdout.write("\n".join(shards.render(m) for m in maps))
    else:
        sys.stdout.write(dump([shards.data(m) for m in maps], args.output))
    return ExitCode.OK if all(m.healthy for m in maps) else ExitCode.CHANGES_OR_NOT_READY


# --- the table --------------------------------------------------------------------------------


def sort_not_ready_first(objects: list[JsonObject]) -> list[JsonObject]:
    return sorted(
        objects, key=lambda o: (is_ready(o), o["metadata"].get("namespace", ""), o["metadata"]["name"])
    )


def _summary(obj: JsonObject) -> dict[str, Any]:
    meta, status = obj["metadata"], obj.get("status") or {}
    ready = conditions_of(obj).get("Ready") or {}
    remote = status.get("remote") or {}
    return {
        "namespace": meta.get("namespace", ""),
        "name": meta["name"],
        "ready": is_ready(obj),
        "reason": ready.get("reason") or ("Pending" if not status.get("conditions") else ""),
        "syncConfigId": status.get("syncConfigId") or "",
        "remoteStatus": remote.get("status") or "",
        "paused": bool((obj.get("spec") or {}).get("paused")),
        "drift": len(status.get("drift") or []),
        "since": ready.get("lastTransitionTime") or meta.get("creationTimestamp"),
        "message": ready.get("message") or "",
    }


def render_table(objects: list[JsonObject]) -> str:
    rows = []
    for obj in sort_not_ready_first(objects):
        s = _summary(obj)
        ready = "True" if s["ready"] else ("False" if s["reason"] else "Unknown")
        rows.append(
            [
                s["namespace"],
                s["name"],
                ready,
                s["reason"] or "-",
                s["syncConfigId"] or "-",
                s["remoteStatus"] or "-",
                "true" if s["paused"] else "false",
                str(s["drift"]),
                age(s["since"]),
                "" if s["ready"] else _one_line(s["message"], 80),
            ]
        )
    headers = [
        "NAMESPACE",
        "NAME",
        "READY",
        "REASON",
        "SYNC",
        "REMOTE",
        "PAUSED",
        "DRIFT",
        "SINCE",
        "MESSAGE",
    ]
    return table(headers, rows)


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --- one object -------------------------------------------------------------------------------


async def report(session: Session, namespace: str, name: str) -> dict[str, Any]:
    obj = await get_bucketsync(session, namespace, name)
    spec = obj.get("spec") or {}
    secret_name = (spec.get("credentialsRef") or {}).get("name")
    secret: dict[str, Any] = {"name": secret_name or "(the operator's default Secret)"}
    if secret_name:
        found = await session.kube.get_secret(namespace, secret_name)
        secret["present"] = found is not None
        finalizers = ((found or {}).get("metadata") or {}).get("finalizers") or []
        secret["inUseMark"] = SECRET_IN_USE_FINALIZER in finalizers
        secret["keys"] = sorted((found or {}).get("data") or {})  # names only, never values
    uid = obj["metadata"].get("uid", "")
    events = await session.kube.list_objects(
        EVENTS, namespace, field_selector=f"involvedObject.uid={uid}", page_size=None
    )
    events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return {"object": obj, "secret": secret, "events": events[-EVENTS_SHOWN:]}


def _report_data(r: dict[str, Any]) -> dict[str, Any]:
    obj = r["object"]
    return {
        **_summary(obj),
        "generation": obj["metadata"].get("generation"),
        "observedGeneration": (obj.get("status") or {}).get("observedGeneration"),
        "status": obj.get("status") or {},
        "credentials": r["secret"],
        "events": [
            {k: e.get(k) for k in ("type", "reason", "message", "count", "lastTimestamp")}
            for e in r["events"]
        ],
    }


def render_report(r: dict[str, Any]) -> str:
    obj, secret = r["object"], r["secret"]
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    lines = [
        f"BucketSync {meta.get('namespace')}/{meta['name']}: {'Ready' if is_ready(obj) else 'NOT Ready'}",
        f"  generation {meta.get('generation')}, observed {status.get('observedGeneration', '-')}",
        "Conditions:",
    ]
    conditions = conditions_of(obj)
    if not conditions:
        lines.append("  (none yet: the operator has not handled this object)")
    for kind in sorted(conditions, key=lambda k: (*CONDITION_ORDER, k).index(k)):
        c = conditions[kind]
        message = f"  {_one_line(c['message'], 200)}" if c.get("message") else ""
        lines.append(
            f"  {kind:<16}{c.get('status', ''):<8}{c.get('reason') or '-':<22}"
            f"{age(c.get('lastTransitionTime')):>6}{message}"
        )
    lines.append("Credentials:")
    if "present" in secret:
        mark = "in-use mark set" if secret["inUseMark"] else "no in-use mark"
        state = (
            f"present, {mark}, keys {', '.join(secret['keys']) or '(none)'}"
            if secret["present"]
            else "MISSING"
        )
        lines.append(f"  Secret {secret['name']}: {state}")
    else:
        lines.append(f"  Secret {secret['name']}")
    remote, metrics = status.get("remote") or {}, status.get("metrics") or {}
    lines.append("Remote sync:")
    if status.get("syncConfigId"):
        lines.append(
            f"  {status['syncConfigId']} in bucket {status.get('bucketId', spec.get('bucketId'))}"
            f" (Mixpeek namespace {status.get('mixpeekNamespace', '-')})"
        )
        lines.append(
            f"  state {remote.get('status', '-')}, paused {remote.get('paused', '-')}"
            f" (spec {bool(spec.get('paused'))}), consecutive failures {remote.get('consecutiveFailures', 0)}"
        )
        lines.append(
            f"  last run {remote.get('lastSyncAt') or '-'}, next run {remote.get('nextSyncAt') or '-'}"
        )
        if remote.get("lastError"):
            lines.append(f"  last error: {_one_line(remote['lastError'], 300)}")
        lines.append(
            "  counters: "
            + ", ".join(
                f"{key} {metrics.get(key, 0)}"
                for key in ("filesDiscovered", "filesSynced", "filesFailed", "bytesSynced", "batchesCreated")
            )
        )
    else:
        lines.append("  (not created or adopted yet)")
    drift = status.get("drift") or []
    lines.append("Drift:" + ("" if drift else " none"))
    for entry in drift:
        lines.append(f"  {entry.get('field')}: spec {entry.get('desired')} / remote {entry.get('observed')}")
    lines.append("Events:" + ("" if r["events"] else " none"))
    for e in r["events"]:
        when = age(e.get("lastTimestamp") or e.get("eventTime"))
        message = _one_line(e.get("message") or "", 160)
        lines.append(f"  {when:>6}  {e.get('type', ''):<8}{e.get('reason', ''):<16}{message}")
    return "\n".join(lines) + "\n"

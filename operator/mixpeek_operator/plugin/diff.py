"""`kubectl mixpeek diff -f FILE`: what applying FILE would do, to the objects and remotely.

Each BucketSync goes through a server-side dry-run apply first (so admission, CEL rules and
defaults are the API server's own; a refusal is reported with its message), then the
defaulted spec is compared with the live remote sync by the reconciler's own decisions
(`external.replacement_changes` / `replacement_refusal`, `desired.patch_for`,
`desired.pause_action`, `reconcile.pending_trigger`), so the plan is what the operator does.
Exit 0: no changes; 1: changes; 2: errors (as `kubectl diff`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mixpeek_operator import desired
from mixpeek_operator.api.v1alpha1 import BucketSyncSpec, ManagementPolicy
from mixpeek_operator.constants import GROUP, KIND, OWNER_REF_KEY, OWNER_UID_KEY, PLURAL, VERSION
from mixpeek_operator.external import replacement_changes, replacement_refusal
from mixpeek_operator.keys import ListingScope
from mixpeek_operator.kube import JsonObject, KubeConnectionError, KubeError
from mixpeek_operator.mixpeek import NotFoundError
from mixpeek_operator.mixpeek.models import SyncConfiguration
from mixpeek_operator.plugin.session import (
    FIELD_MANAGER,
    ExitCode,
    KubeYamlLoader,
    PluginError,
    Session,
    dump,
    mixpeek_client,
    resolve_credentials,
)
from mixpeek_operator.reconcile import pending_trigger
from mixpeek_operator.status import parse_status

MARKER_KEYS = (OWNER_UID_KEY, OWNER_REF_KEY)


@dataclass
class ObjectPlan:
    namespace: str
    name: str
    action: str = "none"  # create | update | none (the Kubernetes object)
    object_fields: list[str] = field(default_factory=list)
    remote: str = "none"  # create | recreate | patch | adopt | refuse | none
    sync_config_id: str | None = None
    # The remote calls, in order, named as the emulator's traffic log names them.
    calls: list[str] = field(default_factory=list)
    fields: list[dict[str, str]] = field(default_factory=list)  # {field, old, new}
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def changes(self) -> bool:
        return self.action != "none" or bool(self.calls)


def configure_parser(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("-f", "--filename", required=True, type=Path, help="manifest file (- for stdin)")
    parser.add_argument("--secret", help="credentials Secret for objects without spec.credentialsRef")
    parser.add_argument("-o", "--output", choices=["table", "yaml", "json"], default="table")


async def run(args: argparse.Namespace, session: Session) -> int:
    plans = [await plan_object(session, doc, args.secret) for doc in read_manifests(args.filename)]
    if args.output == "table":
        sys.stdout.write("".join(render(p) for p in plans))
    else:
        sys.stdout.write(dump([p.__dict__ for p in plans], args.output))
    if any(p.error for p in plans):
        return ExitCode.ERROR
    return ExitCode.CHANGES_OR_NOT_READY if any(p.changes for p in plans) else ExitCode.OK


def read_manifests(path: Path) -> list[JsonObject]:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        docs = [doc for doc in yaml.load_all(text, Loader=KubeYamlLoader) if doc]
    except (OSError, yaml.YAMLError) as exc:
        raise PluginError(ExitCode.ERROR, f"cannot read {path}: {exc}") from exc
    items: list[JsonObject] = []
    for doc in docs:
        if not isinstance(doc, dict):
            raise PluginError(ExitCode.ERROR, f"{path}: a document is not an object")
        items.extend(doc.get("items") or [] if doc.get("kind") == "List" else [doc])
    others = sorted({str(d.get("kind")) for d in items if d.get("kind") != KIND})
    if others:
        raise PluginError(
            ExitCode.ERROR, f"{path}: only {KIND} objects can be planned, found {', '.join(others)}"
        )
    return items


async def plan_object(session: Session, doc: JsonObject, secret: str | None) -> ObjectPlan:
    meta = doc.get("metadata") or {}
    namespace = meta.get("namespace") or session.namespace
    plan = ObjectPlan(namespace=namespace, name=str(meta.get("name") or ""))
    body = {**doc, "metadata": {**meta, "namespace": namespace}}
    try:
        dry = await session.kube.apply_object(
            GROUP, VERSION, PLURAL, namespace, body, field_manager=FIELD_MANAGER, dry_run=True
        )
        live = await session.kube.get_object(GROUP, VERSION, PLURAL, namespace, plan.name)
    except KubeConnectionError:
        raise
    except KubeError as exc:
        plan.error = f"the API server refused it: {exc.message}"
        return plan
    try:
        spec = BucketSyncSpec.model_validate(dry.get("spec") or {})
    except ValidationError as exc:
        plan.error = f"invalid spec: {exc.errors()[0]['msg']}"
        return plan
    _plan_object_change(plan, live, dry)
    if spec.management_policy == ManagementPolicy.OBSERVE_ONLY:
        plan.notes.append("managementPolicy ObserveOnly: the operator makes no remote writes")
        return plan
    status = parse_status((live or {}).get("status"))
    session.namespace, saved = namespace, session.namespace
    try:
        creds = await resolve_credentials(
            session, spec.credentials_ref.name if spec.credentials_ref else secret, spec.mixpeek_namespace
        )
    finally:
        session.namespace = saved
    uid = ((live or {}).get("metadata") or {}).get("uid") or "<new object's uid>"
    owner = desired.owner_metadata(uid, namespace, plan.name)
    wanted = ListingScope(creds.fingerprint, creds.namespace, spec.bucket_id)
    recorded = ListingScope(
        creds.fingerprint, status.mixpeek_namespace or creds.namespace, status.bucket_id or spec.bucket_id
    )
    sync_id = status.sync_config_id or spec.sync_config_id
    remote: SyncConfiguration | None = None
    if sync_id:
        async with mixpeek_client(creds) as client:
            try:
                remote = await client.get_sync(recorded.bucket, sync_id)
            except NotFoundError:
                remote = None
        if remote is None and spec.sync_config_id:
            plan.remote = "refuse"
            plan.error = (
                f"remote sync {sync_id} not found in bucket {recorded.bucket}; "
                "an adopted sync is never recreated"
            )
            return plan
    _plan_remote(plan, spec, owner, remote, recorded, wanted)
    annotations = (dry.get("metadata") or {}).get("annotations") or {}
    if plan.remote != "refuse" and pending_trigger(annotations, status):
        plan.calls.append("trigger")
    return plan


def _plan_object_change(plan: ObjectPlan, live: JsonObject | None, dry: JsonObject) -> None:
    if live is None:
        plan.action = "create"
        return
    before, after = _flatten(live.get("spec") or {}, "spec"), _flatten(dry.get("spec") or {}, "spec")
    for key in ("annotations", "labels"):
        before.update(_flatten(live["metadata"].get(key) or {}, f"metadata.{key}"))
        after.update(_flatten(dry["metadata"].get(key) or {}, f"metadata.{key}"))
    plan.object_fields = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if plan.object_fields:
        plan.action = "update"


def _flatten(value: Any, prefix: str) -> dict[str, str]:
    if isinstance(value, dict) and value:
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}"))
        return flat
    return {prefix: json.dumps(value, sort_keys=True)}


def _plan_remote(
    plan: ObjectPlan,
    spec: BucketSyncSpec,
    owner: dict[str, str],
    remote: SyncConfiguration | None,
    recorded: ListingScope,
    wanted: ListingScope,
) -> None:
    if remote is None:
        plan.remote = "create"
        plan.calls = ["create", *(["pause"] if spec.paused else [])]
        return
    plan.sync_config_id = remote.sync_config_id
    changes = replacement_changes(spec, remote, recorded=recorded, wanted=wanted)
    if changes:
        refusal = replacement_refusal(spec, remote, changes)
        if refusal is not None:
            plan.remote, plan.error = "refuse", refusal
            return
        plan.remote = "recreate"
        plan.fields = [{"field": name, "old": "", "new": ""} for name in changes]
        plan.calls = ["delete", "create", *(["pause"] if spec.paused else [])]
        return
    update = desired.patch_for(spec, owner, remote)
    if update is not None:
        # patch_for re-sends metadata with every PATCH (the marker must never be lost); only
        # the fields that differ are listed.
        diffs = {d.remote_field: d for d in desired.drift(spec, owner, remote)}
        changed = sorted(name for name in update.model_fields_set if name in diffs)
        marker_only = changed == ["metadata"] and _only_marker_differs(update.metadata, remote.metadata)
        plan.remote = "adopt" if marker_only else "patch"
        plan.calls.append("update")
        if marker_only:
            plan.notes.append("writes the ownership marker only")
        else:
            plan.fields = [
                {"field": diffs[name].field, "old": diffs[name].observed, "new": diffs[name].desired}
                for name in changed
            ]
    action = desired.pause_action(spec, remote)
    if action is not None:
        plan.calls.append(action)
        plan.remote = action if plan.remote == "none" else plan.remote


def _only_marker_differs(desired_metadata: dict[str, Any] | None, observed: dict[str, Any]) -> bool:
    return _without_marker(desired_metadata) == _without_marker(observed)


def _without_marker(metadata: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (metadata or {}).items() if k not in MARKER_KEYS}


def render(plan: ObjectPlan) -> str:
    head = f"bucketsync {plan.namespace}/{plan.name}:"
    if plan.error:
        return f"{head} ERROR {plan.error}\n"
    lines = []
    obj = {"create": "object will be created", "update": "object changes", "none": "object unchanged"}[
        plan.action
    ]
    lines.append(f"{head} {obj}" + (f" ({', '.join(plan.object_fields)})" if plan.object_fields else ""))
    remote = {
        "create": "remote: create a new sync",
        "recreate": f"remote: RECREATE {plan.sync_config_id} (delete, then create)",
        "patch": f"remote: PATCH {plan.sync_config_id}",
        "adopt": f"remote: adopt {plan.sync_config_id}",
        "pause": f"remote: pause {plan.sync_config_id}",
        "resume": f"remote: resume {plan.sync_config_id}",
        "none": "remote: no changes",
    }[plan.remote]
    lines.append(f"  {remote}" + (f" [{', '.join(plan.calls)}]" if plan.calls else ""))
    for change in plan.fields:
        if plan.remote == "recreate":
            lines.append(f"    {change['field']} changed (create-only)")
        else:
            lines.append(f"    {change['field']}: {change['old']} -> {change['new']}")
    lines.extend(f"    {note}" for note in plan.notes)
    return "\n".join(lines) + "\n"

"""`kubectl mixpeek import`: BucketSync manifests for remote syncs that already exist.

Each manifest is `desired.spec_from_remote` of one remote sync (the exact inverse of the
operator's create/patch mapping) with `syncConfigId` set, so applying it adopts the sync and
changes nothing remotely but the ownership marker. Names are derived from the source path
(readable) and a hash of the sync id (stable across runs, unique per sync).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path
from typing import Any

from mixpeek_operator import desired
from mixpeek_operator.api.v1alpha1 import DeletionPolicy, ManagementPolicy, ReplacementPolicy
from mixpeek_operator.constants import API_VERSION, KIND, OWNER_REF_KEY, OWNER_UID_KEY
from mixpeek_operator.mixpeek.models import SyncConfiguration
from mixpeek_operator.plugin.session import (
    ExitCode,
    PluginError,
    Session,
    dump,
    mixpeek_client,
    resolve_credentials,
)

NAME_MAX_LENGTH = 63  # a DNS-1123 label: safe as a name anywhere (labels, Helm, Argo CD)
HASH_LENGTH = 10
IMPORTED_FROM_ANNOTATION = "mixpeek.com/imported-from"


def configure_parser(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument(
        "--secret", help="credentials Secret in -n's namespace (keys apiKey, namespace, baseUrl)"
    )
    parser.add_argument(
        "--bucket",
        action="append",
        required=True,
        metavar="ID",
        help="bucket to import from; repeat for several (the sync API has no bucket listing)",
    )
    parser.add_argument("--mixpeek-namespace", help="Mixpeek namespace (overrides the Secret's `namespace`)")
    parser.add_argument("--dir", type=Path, help="write one file per sync here instead of stdout")
    parser.add_argument(
        "--deletion-policy",
        choices=[p.value for p in DeletionPolicy],
        default=DeletionPolicy.DELETE.value,
        help="spec.deletionPolicy of the manifests (Orphan: deleting the object keeps the remote sync)",
    )
    parser.add_argument(
        "--include-owned", action="store_true", help="also import syncs already owned by a BucketSync"
    )


async def run(args: argparse.Namespace, session: Session) -> int:
    creds = await resolve_credentials(session, args.secret, args.mixpeek_namespace)
    policy = DeletionPolicy(args.deletion_policy)
    manifests: list[dict[str, Any]] = []
    skipped: list[str] = []
    async with mixpeek_client(creds) as client:
        for bucket in dict.fromkeys(args.bucket):
            listing = await client.list_all_syncs(bucket)
            for remote in listing.syncs:
                if (remote.metadata or {}).get(OWNER_UID_KEY) and not args.include_owned:
                    skipped.append(f"{remote.sync_config_id} (owned by {remote.metadata.get(OWNER_REF_KEY)})")
                    continue
                try:
                    manifests.append(
                        manifest(remote, session.namespace, args.secret, args.mixpeek_namespace, policy)
                    )
                except desired.SpecConversionError as exc:
                    skipped.append(f"{remote.sync_config_id} (cannot be expressed as a spec: {exc})")
    _check_unique(manifests)
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        for item in manifests:
            (args.dir / f"{item['metadata']['name']}.yaml").write_text(dump(item, "yaml"))
        print(f"wrote {len(manifests)} manifest(s) to {args.dir}", file=sys.stderr)
    else:
        sys.stdout.write("---\n".join(dump(item, "yaml") for item in manifests))
    return ExitCode.OK


def manifest(
    remote: SyncConfiguration,
    namespace: str,
    secret: str | None,
    mixpeek_namespace: str | None,
    deletion_policy: DeletionPolicy,
) -> dict[str, Any]:
    spec = desired.spec_from_remote(
        remote,
        credentials_ref=secret,
        mixpeek_namespace=mixpeek_namespace,
        deletion_policy=deletion_policy,
    )
    body = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    # The operator-side policies at their defaults say nothing about the remote sync.
    if body.get("managementPolicy") == ManagementPolicy.FULL:
        del body["managementPolicy"]
    if body.get("replacementPolicy") == ReplacementPolicy.RECREATE:
        del body["replacementPolicy"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": object_name(remote),
            "namespace": namespace,
            "annotations": {IMPORTED_FROM_ANNOTATION: f"{remote.bucket_id}/{remote.sync_config_id}"},
        },
        "spec": body,
    }


def object_name(remote: SyncConfiguration) -> str:
    """`<source path slug>-<hash of bucket and sync id>`: valid, the same on every run, unique."""
    identity = f"{remote.bucket_id}/{remote.sync_config_id}".encode()
    digest = hashlib.sha256(identity).hexdigest()[:HASH_LENGTH]
    slug = re.sub(r"[^a-z0-9]+", "-", remote.source_path.lower()).strip("-")
    slug = slug[: NAME_MAX_LENGTH - HASH_LENGTH - 1].strip("-") or "sync"
    return f"{slug}-{digest}"


def _check_unique(manifests: list[dict[str, Any]]) -> None:
    seen: dict[str, str] = {}
    for item in manifests:
        name, origin = item["metadata"]["name"], item["metadata"]["annotations"][IMPORTED_FROM_ANNOTATION]
        if name in seen and seen[name] != origin:
            raise PluginError(ExitCode.ERROR, f"name {name} would be used by both {seen[name]} and {origin}")
        seen[name] = origin

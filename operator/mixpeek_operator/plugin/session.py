"""What every verb shares: the Kubernetes client from kubectl's flags, credentials resolved
as the operator resolves them, a Mixpeek client, output helpers and the plugin's errors."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mixpeek_operator.constants import (
    DEFAULT_MIXPEEK_BASE_URL,
    GROUP,
)
from mixpeek_operator.keys import ObjectKey
from mixpeek_operator.kube import (
    BUCKETSYNCS,
    JsonObject,
    KubeClient,
    KubeConfigError,
    KubeConnection,
    kubeconfig_namespace,
)

if TYPE_CHECKING:  # imported where used: `status` and the request verbs never load the Mixpeek client
    from mixpeek_operator.credentials import Credentials
    from mixpeek_operator.mixpeek import MixpeekClient

FIELD_MANAGER = "kubectl-mixpeek"
# Environment alternative to --secret for `import` (the same three values as the Secret's keys).
ENV_API_KEY = "MIXPEEK_API_KEY"
ENV_NAMESPACE = "MIXPEEK_NAMESPACE"
ENV_BASE_URL = "MIXPEEK_BASE_URL"


class ExitCode(IntEnum):
    """Documented in docs/plugin.md; scripts may rely on them."""

    OK = 0
    CHANGES_OR_NOT_READY = 1  # diff: changes pending; status: an object is not Ready
    ERROR = 2  # usage errors, refused manifests, any other failure
    KUBECONFIG = 3  # kubeconfig unreadable, unknown context, API server unreachable or refusing us
    CREDENTIALS = 4  # the credentials Secret (or environment) is missing or lacks a key
    AUTH_REJECTED = 5  # Mixpeek refused the API key (401/403)
    TIMEOUT = 6  # --wait gave up before the operator handled the request


class PluginError(Exception):
    """A failure reported as one line on stderr with its exit code."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Session:
    kube: KubeClient
    namespace: str  # -n, else the context's namespace, else "default"
    all_namespaces: bool

    def scope(self) -> str | None:
        """The namespace to list in, None for -A."""
        return None if self.all_namespaces else self.namespace


def open_session(args: argparse.Namespace) -> Session:
    path = Path(args.kubeconfig).expanduser() if args.kubeconfig else None
    try:
        connection = KubeConnection.from_kubeconfig(path, args.context)
        namespace = args.namespace or kubeconfig_namespace(path, args.context) or "default"
    except KubeConfigError as exc:
        raise PluginError(ExitCode.KUBECONFIG, f"kubeconfig: {exc}") from exc
    return Session(
        kube=KubeClient(connection, user_agent=f"{FIELD_MANAGER}"),
        namespace=namespace,
        all_namespaces=bool(getattr(args, "all_namespaces", False)),
    )


# --- BucketSyncs ------------------------------------------------------------------------------


async def get_bucketsync(session: Session, namespace: str, name: str) -> JsonObject:
    found = await session.kube.get_object(BUCKETSYNCS, namespace, name)
    if found is None:
        raise PluginError(ExitCode.ERROR, f'bucketsyncs.{GROUP} "{name}" not found in namespace {namespace}')
    return found


async def list_bucketsyncs(session: Session, selector: str | None = None) -> list[JsonObject]:
    """One LIST call (no paging), in -n's namespace or every namespace with -A."""
    return await session.kube.list_objects(
        BUCKETSYNCS, session.scope(), label_selector=selector, page_size=None
    )


async def bucketsync_pages(
    session: Session, selector: str | None = None, page_size: int = 500
) -> AsyncIterator[list[JsonObject]]:
    """The same objects page by page, for views that keep counts, not objects."""
    token: str | None = None
    while True:
        page = await session.kube.list_page(
            BUCKETSYNCS, session.scope(), label_selector=selector, limit=page_size, continue_token=token
        )
        yield page.get("items") or []
        token = (page.get("metadata") or {}).get("continue") or None
        if token is None:
            return


# --- credentials ------------------------------------------------------------------------------


async def resolve_credentials(
    session: Session, secret: str | None, mixpeek_namespace: str | None
) -> Credentials:
    """The Secret's credentials read exactly as the operator reads them (same keys, same
    Mixpeek-namespace rule: the flag wins over the Secret's `namespace`); without a Secret,
    the environment's MIXPEEK_API_KEY / MIXPEEK_NAMESPACE / MIXPEEK_BASE_URL."""
    from mixpeek_operator.credentials import CredentialError, Credentials, CredentialStore, fingerprint

    if secret is None:
        api_key = os.environ.get(ENV_API_KEY, "").strip()
        namespace = mixpeek_namespace or os.environ.get(ENV_NAMESPACE, "").strip()
        if not api_key:
            raise PluginError(
                ExitCode.CREDENTIALS, f"no credentials: pass --secret NAME or set {ENV_API_KEY}"
            )
        if not namespace:
            raise PluginError(
                ExitCode.CREDENTIALS,
                f"no Mixpeek namespace: pass --mixpeek-namespace or set {ENV_NAMESPACE}",
            )
        base_url = (os.environ.get(ENV_BASE_URL) or DEFAULT_MIXPEEK_BASE_URL).rstrip("/")
        return Credentials(
            api_key=api_key,
            namespace=namespace,
            base_url=base_url,
            secret=("", ""),
            fingerprint=fingerprint(api_key, base_url),
        )
    store = CredentialStore(session.kube.get_secret, default_secret=None)
    try:
        return await store.resolve(ObjectKey(session.namespace, FIELD_MANAGER), secret, mixpeek_namespace)
    except CredentialError as exc:
        raise PluginError(ExitCode.CREDENTIALS, exc.message) from exc


def mixpeek_client(creds: Credentials) -> MixpeekClient:
    from mixpeek_operator.mixpeek import MixpeekClient

    return MixpeekClient(creds.api_key, creds.namespace, base_url=creds.base_url)


# --- output -----------------------------------------------------------------------------------


class _KubeYamlDumper(yaml.SafeDumper):
    """YAML that Go's YAML 1.1 parsers (kubectl, Helm, Argo CD) read back as written.

    PyYAML writes `n`, `y`, `on`, `off` unquoted, which sigs.k8s.io/yaml reads as booleans:
    a constant `{n: 1}` in a schema mapping would reach the API server as `{false: 1}`.
    """


_KubeYamlDumper.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$"),
    list("yYnNtTfFoO"),
)


class KubeYamlLoader(yaml.SafeLoader):
    """Reads manifests as kubectl does (YAML 1.1: `y` and `n` are booleans too), so a plan
    is made of the same values `kubectl apply` would send."""


KubeYamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN"))
KubeYamlLoader.add_constructor(
    "tag:yaml.org,2002:bool",
    lambda loader, node: loader.construct_scalar(node).lower() in ("y", "yes", "true", "on"),  # type: ignore[arg-type]
)


def dump(data: Any, output: str) -> str:
    if output == "json":
        return json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    return str(
        yaml.dump(data, Dumper=_KubeYamlDumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
    )


def table(headers: list[str], rows: list[list[str]]) -> str:
    """kubectl's layout: upper-case headers, columns padded with three spaces."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "   ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines) + "\n"


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """kubectl's short ages: 45s, 12m, 3h, 2d; `<unknown>` without a time."""
    if not timestamp:
        return "<unknown>"
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def conditions_of(obj: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(c.get("type")): c for c in ((obj.get("status") or {}).get("conditions") or [])}


def is_ready(obj: Mapping[str, Any]) -> bool:
    """Ready=True for the current generation (what kstatus calls Current)."""
    ready = conditions_of(obj).get("Ready") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return ready.get("status") == "True" and observed == generation

"""The operator's settings: one typed model from which `mixpeek-operator run`'s flags, their
environment variables and their --help are generated (and the table in docs/operating.md is
checked against it).

Each field of `Settings` is one setting: its type and default, and in its `Spec` the flag, the
environment variable (`MIXPEEK_OPERATOR_<ENV>`, how the Helm chart passes its values), the help
and the chart value that sets it. A default is written once: here, or where the knowledge lives
and referred to from here (the Mixpeek client's rate and burst, the API URL, client-go's
election timings). `EngineSettings` and `OperatorConfig` take their defaults from `DEFAULTS`.

Environment variables are read when the parser is built (so a malformed number fails every
subcommand with one line); a flag given on the command line wins.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, Union, get_args, get_origin, get_type_hints

from mixpeek_operator.constants import DEFAULT_MIXPEEK_BASE_URL
from mixpeek_operator.coordination import DEFAULT_LEASE_NAME, LeaseTimings
from mixpeek_operator.credentials import SecretRef
from mixpeek_operator.mixpeek import DEFAULT_BURST, DEFAULT_RATE_PER_SECOND

ENV_PREFIX: Final = "MIXPEEK_OPERATOR_"
ELECTION_GROUP: Final = "leader election"
_ELECTION_GROUP_HELP: Final = (
    "run several replicas, one of which reconciles (active/standby on a coordination.k8s.io Lease)"
)
_TIMINGS: Final = LeaseTimings()  # client-go's


@dataclass(frozen=True)
class Spec:
    """How one setting is given: flags, environment variable, help, and the chart value."""

    flags: tuple[str, ...]
    env: str | None  # the part after MIXPEEK_OPERATOR_; None: no environment variable
    help: str
    chart: str | None  # the values.yaml key whose value the chart passes in `env`
    shown_default: str | None = None  # for --help and the docs, when the value does not say it
    metavar: str | None = None
    group: str | None = None

    @property
    def env_var(self) -> str | None:
        return f"{ENV_PREFIX}{self.env}" if self.env else None


def _setting(default: Any, *flags: str, env: str | None, help: str, chart: str | None, **more: Any) -> Any:
    return dataclasses.field(default=default, metadata={"spec": Spec(flags, env, help, chart, **more)})


@dataclass(frozen=True)
class Settings:
    """Every setting of `mixpeek-operator run`, in the order --help and the docs list them."""

    namespaces: tuple[str, ...] = _setting(
        (),
        "-n",
        "--namespace",
        env="NAMESPACES",
        help="watch this namespace; repeatable, comma-separated in the variable",
        chart="watchNamespaces",
        shown_default="all namespaces",
    )
    default_credentials_secret: tuple[str, str] | None = _setting(  # SecretRef
        None,
        "--default-credentials-secret",
        env="DEFAULT_CREDENTIALS_SECRET",
        help="Secret used by objects without spec.credentialsRef",
        chart="credentials.defaultSecretName",  # in the release namespace
        shown_default="none",
        metavar="NAMESPACE/NAME",
    )
    mixpeek_base_url: str = _setting(
        DEFAULT_MIXPEEK_BASE_URL,
        "--mixpeek-base-url",
        env="MIXPEEK_BASE_URL",
        help="Mixpeek API URL when the Secret has no baseUrl",
        chart="settings.mixpeekBaseUrl",
    )
    observe_interval: float = _setting(
        60.0,
        "--observe-interval",
        env="OBSERVE_INTERVAL",
        help="seconds between listings of each bucket's syncs, ±10% jitter",
        chart="settings.observeInterval",
    )
    workers: int = _setting(
        32, "--workers", env="WORKERS", help="objects reconciled concurrently", chart="settings.workers"
    )
    rate_limit: float = _setting(
        DEFAULT_RATE_PER_SECOND,
        "--rate-limit",
        env="RATE_LIMIT",
        help="Mixpeek requests per second per credential",
        chart="settings.rateLimit",
    )
    rate_burst: int = _setting(
        DEFAULT_BURST,
        "--rate-burst",
        env="RATE_BURST",
        help="burst above the rate limit per credential",
        chart="settings.rateBurst",
    )
    backoff_cap: float = _setting(
        300.0,
        "--backoff-cap",
        env="BACKOFF_CAP",
        help="longest retry delay after failures, seconds",
        chart="settings.backoffCap",
    )
    metrics_port: int = _setting(
        8080,
        "--metrics-port",
        env="METRICS_PORT",
        help="Prometheus metrics port (/metrics), 0 to disable",
        chart="metrics.port",
    )
    health_port: int = _setting(
        8081,
        "--health-port",
        env="HEALTH_PORT",
        help="liveness endpoint port (/healthz), 0 to disable",
        chart="health.port",
    )
    log_level: str = _setting(
        "INFO", "--log-level", env="LOG_LEVEL", help="DEBUG … CRITICAL", chart="settings.logLevel"
    )
    log_format: Literal["json", "text"] = _setting(
        "json",
        "--log-format",
        env="LOG_FORMAT",
        help="json (lines carry `object` and `syncConfigId`) or text",
        chart="settings.logFormat",
    )
    leader_election: bool = _setting(
        False,
        "--leader-election",
        env="LEADER_ELECTION",
        help="reconcile only while holding the Lease",
        # null: on unless sharding is, for any replica count (an upgrade to more is then safe)
        chart="leaderElection.enabled",
        group=ELECTION_GROUP,
    )
    sharding: bool = _setting(
        False,
        "--sharding",
        env="SHARDING",
        help="active/active instead: the live replicas split the objects by credentials Secret and "
        "bucket, each holding a Lease of its own; uses the namespace, id (the ring's name) and "
        "timings below",
        chart="sharding.enabled",
        group=ELECTION_GROUP,
    )
    sharding_mode: Literal["labels", "rendezvous"] = _setting(
        "labels",
        "--sharding-mode",
        env="SHARDING_MODE",
        help="labels: an elected assigner writes each object's owner into a label and every replica "
        "watches only its own objects (memory divides by replicas); rendezvous: every replica "
        "watches every object and keeps the ones the ring gives it (the mode before 0.x, for "
        "rolling upgrades)",
        chart="sharding.mode",
        group=ELECTION_GROUP,
    )
    leader_election_namespace: str | None = _setting(
        None,
        "--leader-election-namespace",
        env="LEADER_ELECTION_NAMESPACE",
        help="namespace of the Lease; in a pod, defaults to the pod's own namespace",
        chart=None,  # the release namespace
        shown_default="the pod's namespace",
        group=ELECTION_GROUP,
    )
    leader_election_id: str = _setting(
        DEFAULT_LEASE_NAME,
        "--leader-election-id",
        env="LEADER_ELECTION_ID",
        help="name of the Lease; with sharding, the ring's name",
        chart="leaderElection.leaseName",  # empty: the release's full name
        group=ELECTION_GROUP,
    )
    leader_election_identity: str | None = _setting(
        None,
        "--leader-election-identity",
        env=None,  # $POD_NAME instead (the chart sets it from the downward API)
        help="this replica's name in the Lease",
        chart=None,
        shown_default="$POD_NAME, else host name plus a random suffix",
        group=ELECTION_GROUP,
    )
    leader_election_lease_duration: float = _setting(
        _TIMINGS.lease_duration,
        "--leader-election-lease-duration",
        env="LEADER_ELECTION_LEASE_DURATION",
        help="seconds a standby waits for an unrenewed lease before taking it",
        chart="leaderElection.leaseDuration",
        group=ELECTION_GROUP,
    )
    leader_election_renew_deadline: float = _setting(
        _TIMINGS.renew_deadline,
        "--leader-election-renew-deadline",
        env="LEADER_ELECTION_RENEW_DEADLINE",
        help="seconds the leader keeps working without a successful renewal; must be shorter than "
        "the lease duration",
        chart="leaderElection.renewDeadline",
        group=ELECTION_GROUP,
    )
    leader_election_retry_period: float = _setting(
        _TIMINGS.retry_period,
        "--leader-election-retry-period",
        env="LEADER_ELECTION_RETRY_PERIOD",
        help="seconds between attempts to acquire or renew",
        chart="leaderElection.retryPeriod",
        group=ELECTION_GROUP,
    )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """The settings parsed by a parser that `add_arguments` built."""
        values = {field.name: getattr(args, field.name) for field in dataclasses.fields(cls)}
        values["namespaces"] = tuple(dict.fromkeys(values["namespaces"]))  # a list, once each
        return cls(**values)


DEFAULTS: Final = Settings()


@dataclass(frozen=True)
class Setting:
    """One field of `Settings` with its type and `Spec`."""

    name: str
    type: Any
    default: Any
    spec: Spec

    @property
    def shown_default(self) -> str:
        if self.spec.shown_default is not None:
            return self.spec.shown_default
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


def settings() -> list[Setting]:
    hints = get_type_hints(Settings)
    return [
        Setting(field.name, hints[field.name], field.default, field.metadata["spec"])
        for field in dataclasses.fields(Settings)
    ]


# --- the environment -----------------------------------------------------------------------------


def _env(name: str | None, default: Any) -> Any:
    return os.environ.get(f"{ENV_PREFIX}{name}", default) if name else default


def _env_number(kind: Callable[[str], float], name: str | None, default: float) -> Any:
    """A numeric setting from MIXPEEK_OPERATOR_<name>; a malformed value is one clear line, not
    a traceback (a Service named `mixpeek-operator-<x>` in the pod's namespace injects
    `MIXPEEK_OPERATOR_<X>_PORT=tcp://…` unless the pod sets enableServiceLinks: false)."""
    value = _env(name, default)
    try:
        return kind(value)
    except ValueError:
        raise SystemExit(
            f"{ENV_PREFIX}{name} must be a number, got {value!r}"
            " (a Service link variable? set enableServiceLinks: false on the pod)"
        ) from None


def _env_bool(name: str | None, default: bool) -> bool:
    value = str(_env(name, "true" if default else "false")).strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no", ""):
        raise SystemExit(f"{ENV_PREFIX}{name} must be true or false, got {value!r}")
    return value in ("true", "1", "yes")


def secret_ref(value: str) -> SecretRef:
    namespace, _, name = value.partition("/")
    if not namespace or not name:
        raise argparse.ArgumentTypeError("expected NAMESPACE/NAME")
    return (namespace, name)


# --- the parser ------------------------------------------------------------------------------------


def _optional(kind: Any) -> Any:
    """X for `X | None`, else kind unchanged."""
    if get_origin(kind) in (Union, types.UnionType):
        (inner,) = [arg for arg in get_args(kind) if arg is not type(None)]
        return inner
    return kind


def _argument(setting: Setting) -> dict[str, Any]:
    """add_argument's keywords for one setting, its default read from the environment."""
    env, kind = setting.spec.env, _optional(setting.type)
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction, "default": _env_bool(env, setting.default)}
    if kind in (int, float):
        return {"type": kind, "default": _env_number(kind, env, setting.default)}
    if kind == tuple[str, ...]:
        listed = _env(env, ",".join(setting.default))
        return {"action": "append", "default": [item for item in listed.split(",") if item]}
    arguments: dict[str, Any] = {"default": _env(env, setting.default)}
    if kind == SecretRef:
        arguments["type"] = secret_ref  # argparse applies it to a string default too
    elif get_origin(kind) is Literal:
        arguments["choices"] = list(get_args(kind))
    return arguments


def help_text(setting: Setting) -> str:
    where = f"env {setting.spec.env_var}" if setting.spec.env_var else "no environment variable"
    return f"{setting.spec.help} ({where}; default: {setting.shown_default})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per setting; environment variables are read now, as defaults."""
    election = parser.add_argument_group(ELECTION_GROUP, _ELECTION_GROUP_HELP)
    for setting in settings():
        target = election if setting.spec.group == ELECTION_GROUP else parser
        target.add_argument(
            *setting.spec.flags,
            dest=setting.name,
            metavar=setting.spec.metavar,
            help=help_text(setting).replace("%", "%%"),
            **_argument(setting),
        )

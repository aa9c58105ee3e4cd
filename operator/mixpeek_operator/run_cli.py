"""`mixpeek-operator run`: the operator's single entry point (Dockerfile, chart and tests).

Every option but --leader-election-identity (which reads $POD_NAME) can also come from an
environment variable (shown in --help), which is how the Helm chart passes its values.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mixpeek_operator.constants import DEFAULT_MIXPEEK_BASE_URL
from mixpeek_operator.coordination import DEFAULT_LEASE_NAME, LeaseTimings, operator_identity

# The pod's own namespace, mounted with its ServiceAccount token.
_POD_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


if TYPE_CHECKING:
    from mixpeek_operator.runtime import LeaderElectionConfig


def _env(name: str, default: Any) -> Any:
    return os.environ.get(f"MIXPEEK_OPERATOR_{name}", default)


def _env_number(kind: Callable[[str], float], name: str, default: float) -> Any:
    """A numeric setting from MIXPEEK_OPERATOR_<name>; a malformed value is one clear line, not
    a traceback (a Service named `mixpeek-operator-<x>` in the pod's namespace injects
    `MIXPEEK_OPERATOR_<X>_PORT=tcp://…` unless the pod sets enableServiceLinks: false)."""
    value = _env(name, default)
    try:
        return kind(value)
    except ValueError:
        raise SystemExit(
            f"MIXPEEK_OPERATOR_{name} must be a number, got {value!r}"
            " (a Service link variable? set enableServiceLinks: false on the pod)"
        ) from None


def _env_bool(name: str) -> bool:
    value = str(_env(name, "false")).strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no", ""):
        raise SystemExit(f"MIXPEEK_OPERATOR_{name} must be true or false, got {value!r}")
    return value in ("true", "1", "yes")


def _secret_ref(value: str) -> tuple[str, str]:
    namespace, _, name = value.partition("/")
    if not namespace or not name:
        raise argparse.ArgumentTypeError("expected NAMESPACE/NAME")
    return (namespace, name)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        default=[ns for ns in _env("NAMESPACES", "").split(",") if ns],
        help="watch this namespace (repeatable; env MIXPEEK_OPERATOR_NAMESPACES, comma-separated); "
        "default: all namespaces",
    )
    parser.add_argument(
        "--default-credentials-secret",
        type=_secret_ref,
        default=_env("DEFAULT_CREDENTIALS_SECRET", None),
        metavar="NAMESPACE/NAME",
        help="Secret used by objects without spec.credentialsRef "
        "(env MIXPEEK_OPERATOR_DEFAULT_CREDENTIALS_SECRET)",
    )
    parser.add_argument(
        "--mixpeek-base-url",
        default=_env("MIXPEEK_BASE_URL", DEFAULT_MIXPEEK_BASE_URL),
        help="Mixpeek API URL when the Secret has no baseUrl (env MIXPEEK_OPERATOR_MIXPEEK_BASE_URL)",
    )
    parser.add_argument(
        "--observe-interval",
        type=float,
        default=_env_number(float, "OBSERVE_INTERVAL", 60),
        help="seconds between listings of each bucket's syncs, ±10%% jitter "
        "(env MIXPEEK_OPERATOR_OBSERVE_INTERVAL)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=_env_number(int, "WORKERS", 32),
        help="objects reconciled concurrently (env MIXPEEK_OPERATOR_WORKERS)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=_env_number(float, "RATE_LIMIT", 10),
        help="Mixpeek requests per second per credential (env MIXPEEK_OPERATOR_RATE_LIMIT)",
    )
    parser.add_argument(
        "--rate-burst",
        type=int,
        default=_env_number(int, "RATE_BURST", 20),
        help="burst above the rate limit per credential (env MIXPEEK_OPERATOR_RATE_BURST)",
    )
    parser.add_argument(
        "--backoff-cap",
        type=float,
        default=_env_number(float, "BACKOFF_CAP", 300),
        help="longest retry delay after failures, seconds (env MIXPEEK_OPERATOR_BACKOFF_CAP)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=_env_number(int, "METRICS_PORT", 8080),
        help="Prometheus metrics port, 0 to disable (env MIXPEEK_OPERATOR_METRICS_PORT)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=_env_number(int, "HEALTH_PORT", 8081),
        help="liveness endpoint port (/healthz), 0 to disable (env MIXPEEK_OPERATOR_HEALTH_PORT)",
    )
    election = parser.add_argument_group(
        "leader election",
        "run several replicas, one of which reconciles (active/standby on a coordination.k8s.io Lease)",
    )
    election.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=_env_bool("LEADER_ELECTION"),
        help="reconcile only while holding the Lease (env MIXPEEK_OPERATOR_LEADER_ELECTION=true)",
    )
    election.add_argument(
        "--sharding",
        action=argparse.BooleanOptionalAction,
        default=_env_bool("SHARDING"),
        help="active/active instead: the live replicas split the objects by credentials Secret and "
        "bucket, each holding a Lease of its own (env MIXPEEK_OPERATOR_SHARDING=true); uses the "
        "namespace, id (the ring's name) and timings below",
    )
    election.add_argument(
        "--leader-election-namespace",
        default=_env("LEADER_ELECTION_NAMESPACE", None),
        help="namespace of the Lease; in a pod, defaults to the pod's own namespace "
        "(env MIXPEEK_OPERATOR_LEADER_ELECTION_NAMESPACE)",
    )
    election.add_argument(
        "--leader-election-id",
        default=_env("LEADER_ELECTION_ID", DEFAULT_LEASE_NAME),
        help="name of the Lease (env MIXPEEK_OPERATOR_LEADER_ELECTION_ID)",
    )
    election.add_argument(
        "--leader-election-identity",
        default=None,
        help="this replica's name in the Lease; default: $POD_NAME (the chart sets it from the "
        "downward API), else host name plus a random suffix",
    )
    election.add_argument(
        "--leader-election-lease-duration",
        type=float,
        default=_env_number(float, "LEADER_ELECTION_LEASE_DURATION", 15),
        help="seconds a standby waits for an unrenewed lease before taking it "
        "(env MIXPEEK_OPERATOR_LEADER_ELECTION_LEASE_DURATION)",
    )
    election.add_argument(
        "--leader-election-renew-deadline",
        type=float,
        default=_env_number(float, "LEADER_ELECTION_RENEW_DEADLINE", 10),
        help="seconds the leader keeps working without a successful renewal; must be shorter than the "
        "lease duration (env MIXPEEK_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE)",
    )
    election.add_argument(
        "--leader-election-retry-period",
        type=float,
        default=_env_number(float, "LEADER_ELECTION_RETRY_PERIOD", 2),
        help="seconds between attempts to acquire or renew "
        "(env MIXPEEK_OPERATOR_LEADER_ELECTION_RETRY_PERIOD)",
    )
    parser.add_argument(
        "--log-level", default=_env("LOG_LEVEL", "INFO"), help="env MIXPEEK_OPERATOR_LOG_LEVEL"
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "text"],
        default=_env("LOG_FORMAT", "json"),
        help="env MIXPEEK_OPERATOR_LOG_FORMAT",
    )


def run(args: argparse.Namespace) -> int:
    from mixpeek_operator.engine import EngineSettings
    from mixpeek_operator.handlers import run_operator
    from mixpeek_operator.logging_setup import SecretRegistry, configure_logging
    from mixpeek_operator.runtime import OperatorConfig, OperatorRuntime

    default_secret = args.default_credentials_secret
    if isinstance(default_secret, str):
        default_secret = _secret_ref(default_secret)
    config = OperatorConfig(
        namespaces=tuple(dict.fromkeys(args.namespaces)),
        default_secret=default_secret,
        base_url=args.mixpeek_base_url,
        engine=EngineSettings(
            workers=args.workers,
            observe_interval=args.observe_interval,
            rate_per_second=args.rate_limit,
            burst=args.rate_burst,
            backoff_cap=args.backoff_cap,
        ),
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        log_level=args.log_level,
        log_format=args.log_format,
        leader_election=leader_election_config(args),
    )
    secrets = SecretRegistry()
    configure_logging(config.log_level, config.log_format, secrets)
    run_operator(config, OperatorRuntime(config, secrets))
    return 0


def leader_election_config(args: argparse.Namespace) -> LeaderElectionConfig | None:
    """The election settings, or None when disabled; bad settings end the process with a clear message."""
    from mixpeek_operator.runtime import LeaderElectionConfig

    if args.leader_election and args.sharding:
        raise SystemExit(
            "--leader-election and --sharding are exclusive: choose active/standby or active/active"
        )
    if not (args.leader_election or args.sharding):
        return None
    namespace = args.leader_election_namespace
    if not namespace and os.path.exists(_POD_NAMESPACE_FILE):
        with open(_POD_NAMESPACE_FILE) as file:
            namespace = file.read().strip()
    if not namespace:
        raise SystemExit(
            "--leader-election and --sharding need --leader-election-namespace (the namespace of the Leases)"
        )
    try:
        timings = LeaseTimings(
            lease_duration=args.leader_election_lease_duration,
            renew_deadline=args.leader_election_renew_deadline,
            retry_period=args.leader_election_retry_period,
        )
    except ValueError as exc:
        raise SystemExit(f"invalid leader election timings: {exc}") from exc
    return LeaderElectionConfig(
        namespace=namespace,
        identity=args.leader_election_identity or operator_identity(),
        lease_name=args.leader_election_id,
        timings=timings,
        mode="shards" if args.sharding else "leader",
    )

"""`mixpeek-operator run`: the operator's single entry point (Dockerfile, chart and tests).

The options, their environment variables and their help come from the settings model
(settings.py); this module turns parsed settings into the operator's configuration.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Literal

from mixpeek_operator.coordination import LeaseTimings, operator_identity
from mixpeek_operator.settings import Settings, add_arguments

if TYPE_CHECKING:
    from mixpeek_operator.runtime import LeaderElectionConfig, OperatorConfig

# The pod's own namespace, mounted with its ServiceAccount token.
_POD_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from mixpeek_operator.logging_setup import SecretRegistry, configure_logging
    from mixpeek_operator.runtime import OperatorRuntime

    config = operator_config(Settings.from_args(args))
    secrets = SecretRegistry()
    configure_logging(config.log_level, config.log_format, secrets)
    runtime = OperatorRuntime(config, secrets)
    if config.leader_election is not None and config.leader_election.mode == "labels":
        # kopf would only run the life cycle here, and is never imported (lifecycle.py says why).
        from mixpeek_operator.lifecycle import run_until_signalled

        run_until_signalled(runtime, config.health_port)
    else:
        from mixpeek_operator.handlers import run_operator

        run_operator(config, runtime)
    return 0


def operator_config(settings: Settings) -> OperatorConfig:
    from mixpeek_operator.engine import EngineSettings
    from mixpeek_operator.runtime import OperatorConfig

    election = leader_election_config(settings)
    return OperatorConfig(
        namespaces=settings.namespaces,
        default_secret=settings.default_credentials_secret,
        base_url=settings.mixpeek_base_url,
        engine=EngineSettings(
            workers=settings.workers,
            observe_interval=settings.observe_interval,
            rate_per_second=settings.rate_limit,
            burst=settings.rate_burst,
            backoff_cap=settings.backoff_cap,
            replica=election.identity if election else None,
        ),
        metrics_port=settings.metrics_port,
        health_port=settings.health_port,
        log_level=settings.log_level,
        log_format=settings.log_format,
        leader_election=election,
    )


def leader_election_config(settings: Settings) -> LeaderElectionConfig | None:
    """The election settings, or None when disabled; bad settings end the process with a clear message."""
    from mixpeek_operator.runtime import LeaderElectionConfig

    if settings.leader_election and settings.sharding:
        raise SystemExit(
            "--leader-election and --sharding are exclusive: choose active/standby or active/active"
        )
    if not (settings.leader_election or settings.sharding):
        return None
    namespace = settings.leader_election_namespace
    if not namespace and os.path.exists(_POD_NAMESPACE_FILE):
        with open(_POD_NAMESPACE_FILE) as file:
            namespace = file.read().strip()
    if not namespace:
        raise SystemExit(
            "--leader-election and --sharding need --leader-election-namespace (the namespace of the Leases)"
        )
    try:
        timings = LeaseTimings(
            lease_duration=settings.leader_election_lease_duration,
            renew_deadline=settings.leader_election_renew_deadline,
            retry_period=settings.leader_election_retry_period,
        )
    except ValueError as exc:
        raise SystemExit(f"invalid leader election timings: {exc}") from exc
    return LeaderElectionConfig(
        namespace=namespace,
        identity=settings.leader_election_identity or operator_identity(),
        lease_name=settings.leader_election_id,
        timings=timings,
        mode=_mode(settings),
    )


def _mode(settings: Settings) -> Literal["leader", "shards", "labels"]:
    if not settings.sharding:
        return "leader"
    return "labels" if settings.sharding_mode == "labels" else "shards"

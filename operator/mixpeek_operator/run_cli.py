"""`mixpeek-operator run`: the operator's single entry point (Dockerfile, chart and tests).

Every option can also come from an environment variable (shown in --help), which is
how the Helm chart passes its values.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from mixpeek_operator.constants import DEFAULT_MIXPEEK_BASE_URL


def _env(name: str, default: Any) -> Any:
    return os.environ.get(f"MIXPEEK_OPERATOR_{name}", default)


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
        default=float(_env("OBSERVE_INTERVAL", 60)),
        help="seconds between listings of each bucket's syncs, ±10%% jitter "
        "(env MIXPEEK_OPERATOR_OBSERVE_INTERVAL)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(_env("WORKERS", 32)),
        help="objects reconciled concurrently (env MIXPEEK_OPERATOR_WORKERS)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=float(_env("RATE_LIMIT", 10)),
        help="Mixpeek requests per second per credential (env MIXPEEK_OPERATOR_RATE_LIMIT)",
    )
    parser.add_argument(
        "--rate-burst",
        type=int,
        default=int(_env("RATE_BURST", 20)),
        help="burst above the rate limit per credential (env MIXPEEK_OPERATOR_RATE_BURST)",
    )
    parser.add_argument(
        "--backoff-cap",
        type=float,
        default=float(_env("BACKOFF_CAP", 300)),
        help="longest retry delay after failures, seconds (env MIXPEEK_OPERATOR_BACKOFF_CAP)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(_env("METRICS_PORT", 8080)),
        help="Prometheus metrics port, 0 to disable (env MIXPEEK_OPERATOR_METRICS_PORT)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=int(_env("HEALTH_PORT", 8081)),
        help="liveness endpoint port (/healthz), 0 to disable (env MIXPEEK_OPERATOR_HEALTH_PORT)",
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
    )
    secrets = SecretRegistry()
    configure_logging(config.log_level, config.log_format, secrets)
    run_operator(config, OperatorRuntime(config, secrets))
    return 0

"""`mixpeek-operator emulator`: serve the Mixpeek bucket-sync API emulator.

FastAPI and uvicorn are imported inside `run`, so `mixpeek-operator --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8099
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)"
    )
    parser.add_argument("--port-file", type=Path, help="write the bound port to this file once listening")
    parser.add_argument(
        "--seed",
        type=Path,
        help="YAML/JSON seed: api keys, namespaces, buckets, connections (default: demo seed)",
    )
    parser.add_argument("--state-file", type=Path, help="persist syncs to this JSON file (loaded at start)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="emulated seconds per real second (default 1; 0 freezes)",
    )
    parser.add_argument(
        "--validation-errors",
        choices=("envelope", "fastapi"),
        default="envelope",
        help="422 body shape: Mixpeek's envelope (default) or FastAPI's {detail: [...]}",
    )
    parser.add_argument(
        "--strict", action="store_true", help="reject unknown and create-only body keys with 422"
    )
    parser.add_argument(
        "--trigger-when-paused",
        choices=("noop", "conflict"),
        help="trigger on a paused sync: 200 no-op or 409",
    )
    parser.add_argument(
        "--auto-suspend-after", type=int, help="consecutive failures that auto-suspend a sync (0 disables)"
    )
    parser.add_argument(
        "--initial-run-delay", type=float, help="emulated seconds from create to the first run"
    )
    parser.add_argument(
        "--request-log-size",
        type=int,
        default=1000,
        help="entries the admin API's request log keeps, the newest (default 1000)",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    parser.add_argument("--access-log", action="store_true", help="log one line per request (never headers)")


def _behaviour_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {"strict": args.strict}
    if args.trigger_when_paused is not None:
        overrides["trigger_when_paused"] = args.trigger_when_paused
    if args.auto_suspend_after is not None:
        overrides["auto_suspend_after"] = args.auto_suspend_after or None
    if args.initial_run_delay is not None:
        overrides["initial_run_delay_seconds"] = args.initial_run_delay
    return overrides


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _missing_extra() -> list[str]:
    missing = []
    for name in ("fastapi", "uvicorn"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def run(args: argparse.Namespace) -> int:
    missing = _missing_extra()
    if missing:
        print(
            f"mixpeek emulator: {', '.join(missing)} not installed; the emulator is an optional extra: "
            "pip install 'mixpeek-operator[emulator]'",
            file=sys.stderr,
        )
        return 2

    import yaml

    from mixpeek_operator.emulator.config import Behaviour, EmulatorConfig
    from mixpeek_operator.emulator.seed import DEFAULT_SEED, load_seed
    from mixpeek_operator.emulator.server import EmulatorServer

    try:
        config = EmulatorConfig(
            seed=load_seed(args.seed) if args.seed else DEFAULT_SEED,
            state_file=args.state_file,
            time_scale=args.time_scale,
            validation_errors=args.validation_errors,
            request_log_size=args.request_log_size,
            behaviour=Behaviour(**_behaviour_overrides(args)),
        )
        server = EmulatorServer(
            config, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log
        )
    except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError covers pydantic's errors
        print(f"mixpeek emulator: cannot start: {exc}", file=sys.stderr)
        return 2

    def announce() -> None:
        if args.port_file is not None:
            _write_atomically(args.port_file, f"{server.port}\n")
        api_key, namespace = config.seed.api_keys[0].key, config.seed.namespaces[0].name
        print(
            f"mixpeek emulator listening on {server.base_url} (api key: {api_key}, namespace: {namespace})",
            flush=True,
        )

    server.serve(on_listening=announce)
    return 0

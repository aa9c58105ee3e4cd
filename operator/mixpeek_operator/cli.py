"""The `mixpeek-operator` command: one entry point for the operator, the emulator and tooling.

Each subcommand lives in its own module exposing ``configure_parser(parser)`` and
``run(args) -> int``; heavy imports happen inside ``run`` so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mixpeek_operator import __version__

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("mixpeek_operator.run_cli", "run the operator (reconciles BucketSync objects)"),
    "emulator": ("mixpeek_operator.emulator.cli", "serve a local emulator of the Mixpeek bucket-sync API"),
    "crd": ("mixpeek_operator.crd_cli", "print or write the BucketSync CustomResourceDefinition"),
    "check": ("mixpeek_operator.check_cli", "check that an API key reaches Mixpeek (the chart's helm test)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixpeek-operator",
        description="Manage Mixpeek bucket sync configurations as Kubernetes BucketSync objects.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            # Not built yet: listed in --help as such, and refused when called.
            subparsers.add_parser(name, help=f"{help_text} [not available yet]")
            continue
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.error(f"'{args.command}' is not available in this build yet")
    result: int = run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

"""`kubectl-mixpeek`: argument parsing, kubectl's common flags, and failures as exit codes.

Every failure is one line on stderr (`error: ...`) and a distinct exit code (session.ExitCode,
documented in docs/plugin.md); no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence

from mixpeek_operator.kube import (
    KubeConfigError,
    KubeConnectionError,
    KubeError,
    KubeForbidden,
    KubeUnauthorized,
)
from mixpeek_operator.mixpeek import AuthenticationError, MixpeekError, PermissionDeniedError
from mixpeek_operator.plugin.session import ExitCode, PluginError, open_session

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "import": ("mixpeek_operator.plugin.import_cmd", "write BucketSync manifests for existing remote syncs"),
    "diff": ("mixpeek_operator.plugin.diff", "show what applying a file would change, remotely too"),
    "status": ("mixpeek_operator.plugin.status", "why an object is (not) Ready; -A: a table of all"),
    "pause": ("mixpeek_operator.plugin.requests", "set spec.paused: true (the operator pauses the sync)"),
    "resume": ("mixpeek_operator.plugin.requests", "set spec.paused: false (the operator resumes it)"),
    "trigger": ("mixpeek_operator.plugin.requests", "ask the operator to run the sync now"),
    "reconcile": ("mixpeek_operator.plugin.requests", "ask the operator to reconcile now"),
}


def kube_flags() -> argparse.ArgumentParser:
    """kubectl's global flags, accepted before or after the verb."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="path to the kubeconfig file")
    flags.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context to use")
    flags.add_argument(
        "-n", "--namespace", default=argparse.SUPPRESS, help="namespace (default: the context's)"
    )
    return flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl mixpeek",
        description="Import, plan, inspect and drive Mixpeek BucketSyncs.",
        parents=[kube_flags()],
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, (module_name, help_text) in VERBS.items():
        module = importlib.import_module(module_name)
        sub = verbs.add_parser(verb, help=help_text, description=help_text, parents=[kube_flags()])
        module.configure_parser(sub, verb)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2, as kubectl's do
    for name in ("kubeconfig", "context", "namespace"):
        if not hasattr(args, name):
            setattr(args, name, None)
    try:
        return asyncio.run(_run(args))
    except PluginError as exc:
        return _fail(exc.code, exc.message)
    except KeyboardInterrupt:
        return _fail(ExitCode.ERROR, "interrupted")


async def _run(args: argparse.Namespace) -> int:
    session = open_session(args)
    try:
        async with session.kube:
            code: int = await args._run(args, session)
            return code
    except KubeConfigError as exc:
        raise PluginError(ExitCode.KUBECONFIG, f"kubeconfig: {exc}") from exc
    except KubeConnectionError as exc:
        raise PluginError(ExitCode.KUBECONFIG, f"cannot reach the Kubernetes API server: {exc}") from exc
    except (KubeUnauthorized, KubeForbidden) as exc:
        raise PluginError(ExitCode.KUBECONFIG, f"the Kubernetes API server refused us: {exc}") from exc
    except KubeError as exc:
        raise PluginError(ExitCode.ERROR, f"Kubernetes API: {exc}") from exc
    except (AuthenticationError, PermissionDeniedError) as exc:
        raise PluginError(ExitCode.AUTH_REJECTED, f"Mixpeek rejected the API key: {exc}") from exc
    except MixpeekError as exc:
        raise PluginError(ExitCode.ERROR, f"Mixpeek API: {exc}") from exc


def _fail(code: ExitCode, message: str) -> int:
    # One line, whatever the message (a YAML parser's caret diagram, a server's multi-line text).
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return int(code)


def console_main() -> None:
    """The `kubectl-mixpeek` console script."""
    sys.exit(main())

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


# kubectl's flags that take a value: the token after them is never the verb.
_VALUE_FLAGS = frozenset({"--kubeconfig", "--context", "-n", "--namespace"})


def chosen_verb(argv: Sequence[str]) -> str | None:
    """The verb on the command line, found without importing every verb's module."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in _VALUE_FLAGS:
            skip = True
        elif not token.startswith("-"):
            return token if token in VERBS else None
    return None


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """Every verb is listed; only `verb`'s module is imported (startup time is part of every call)."""
    parser = argparse.ArgumentParser(
        prog="kubectl mixpeek",
        description="Import, plan, inspect and drive Mixpeek BucketSyncs.",
        parents=[kube_flags()],
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name, (module_name, help_text) in VERBS.items():
        sub = verbs.add_parser(name, help=help_text, description=help_text, parents=[kube_flags()])
        if name == verb:
            module = importlib.import_module(module_name)
            module.configure_parser(sub, name)
            sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(chosen_verb(arguments))
    args = parser.parse_args(arguments)  # usage errors exit 2, as kubectl's do
    for name in ("kubeconfig", "context", "namespace"):
        if not hasattr(args, name):
            setattr(args, name, None)
    try:
        return asyncio.run(_run(args))
    except PluginError as exc:
        return _fail(exc.code, exc.message)
    except KeyboardInterrupt:
        return _fail(ExitCode.ERROR, "interrupted")
    except Exception as exc:  # a bug or an unforeseen failure: still one line, never a traceback
        return _fail(ExitCode.ERROR, f"unexpected {type(exc).__name__}: {exc}")


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
    except Exception as exc:
        mixpeek_failure = _mixpeek_failure(exc)
        if mixpeek_failure is None:
            raise
        raise mixpeek_failure from exc


def _mixpeek_failure(exc: Exception) -> PluginError | None:
    """A Mixpeek client error as a PluginError; None for anything else. The client is only
    loaded by the verbs that call Mixpeek, so it is never imported here just to compare."""
    if "mixpeek_operator.mixpeek" not in sys.modules:
        return None
    from mixpeek_operator.mixpeek import AuthenticationError, MixpeekError, PermissionDeniedError

    if isinstance(exc, AuthenticationError | PermissionDeniedError):
        return PluginError(ExitCode.AUTH_REJECTED, f"Mixpeek rejected the API key: {exc}")
    if isinstance(exc, MixpeekError):
        return PluginError(ExitCode.ERROR, f"Mixpeek API: {exc}")
    return None


def _fail(code: ExitCode, message: str) -> int:
    # One line, whatever the message (a YAML parser's caret diagram, a server's multi-line text).
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return int(code)


def console_main() -> None:
    """The `kubectl-mixpeek` console script."""
    sys.exit(main())

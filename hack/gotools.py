"""Build (or find cached) the Go programs the checks run: tools from the Go module proxy and
the repo's small Go test programs.

A tool with a version is `go install module/cmd/tool@version` (actionlint, promtool). A tool
without one is a program in hack/<name>/ with its own go.mod and go.sum, built with `go build`:
hack/argocd-health runs Argo CD's own health code (util/lua, util/settings, gitops-engine),
hack/kstatus both kstatus libraries (sigs.k8s.io/cli-utils and the fluxcd/cli-utils fork),
hack/coredns the local node's cluster DNS.
Either is built once into a directory of the same cache as hack/k8sbuild.py
(~/.cache/mixpeek-operator, or $MIXPEEK_OPERATOR_CACHE) named after its version, plus, for a
program in hack/, a digest of its sources: a new pin or an edit builds next to the old build and
anything else reuses the binary. Old builds are kept, as worktrees with other sources may share
the cache. The build log (with the wall time of the cold build) stays next to the binary.

    python -m hack.gotools actionlint promtool argocd-health kstatus   # prints each tool's path
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hack.k8sbuild import cache_root, go_env

HACK = Path(__file__).resolve().parent


@dataclass(frozen=True)
class GoTool:
    name: str
    # With a version: the main package to `go install`, without @version. Without one: the
    # module in hack/<name>/go.mod whose version names the build.
    package: str
    version: str | None = None
    ldflags: str = "-s -w"

    @property
    def source(self) -> Path | None:
        """The program's directory in hack/, or None for a tool installed from the proxy."""
        return None if self.version else HACK / self.name


TOOLS = {
    # Lints .github/workflows (and the shell in `run:` steps, with shellcheck).
    "actionlint": GoTool(
        "actionlint",
        "github.com/rhysd/actionlint/cmd/actionlint",
        "v1.7.12",
        "-s -w -X github.com/rhysd/actionlint.version=v1.7.12",
    ),
    # Prometheus v3.16.0: its Go module versions are v0.3MM.P for release v3.MM.P.
    "promtool": GoTool("promtool", "github.com/prometheus/prometheus/cmd/promtool", "v0.316.0"),
    "argocd-health": GoTool("argocd-health", "github.com/argoproj/argo-cd/v3"),
    "kstatus": GoTool("kstatus", "sigs.k8s.io/cli-utils"),
    # The local node's cluster DNS (hack/localnode.py): CoreDNS's own main with the plugins
    # the node's Corefile uses (hack/coredns/main.go).
    "coredns": GoTool("coredns", "github.com/coredns/coredns"),
}


def _required_version(source: Path, module: str) -> str:
    found = re.search(
        rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", (source / "go.mod").read_text(), re.M
    )
    if found is None:
        raise RuntimeError(f"{source / 'go.mod'} does not require {module}")
    return found.group(1)


def _source_digest(source: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted([source / "go.mod", source / "go.sum", *source.glob("*.go")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def tool_path(tool: GoTool) -> Path:
    """Where the tool's binary is (once built) for its version and, in hack/, its sources as now."""
    if tool.source is None:
        build_name = f"{tool.name}-{tool.version}"
    else:
        version = _required_version(tool.source, tool.package)
        build_name = f"{tool.name}-{version}-{_source_digest(tool.source)}"
    return cache_root() / build_name / "bin" / tool.name


def build(tool: GoTool) -> Path:
    """The tool's binary, built unless already cached."""
    binary = tool_path(tool)
    if binary.is_file():
        return binary
    bin_dir = binary.parent
    staging = bin_dir.with_name("bin.partial")
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted build
    staging.mkdir(parents=True)
    log = bin_dir.parent / "build.log"
    if tool.source is None:
        command = ["go", "install", "-trimpath", "-ldflags", tool.ldflags, f"{tool.package}@{tool.version}"]
        cwd = staging
    else:
        command = ["go", "build", "-trimpath", "-ldflags", tool.ldflags, "-o", str(staging / tool.name), "."]
        cwd = tool.source
    env = go_env(GOBIN=str(staging))
    started = time.monotonic()
    with log.open("w") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        out.write(f"cold build: {time.monotonic() - started:.0f} s\n")
    if result.returncode != 0:
        raise RuntimeError(f"building {tool.name} failed, see {log}:\n{log.read_text()[-3000:]}")
    shutil.rmtree(bin_dir, ignore_errors=True)
    staging.rename(bin_dir)  # a half-built directory is never taken for a cached one
    return binary


def _run(name: str, args: Sequence[str], objects: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(build(TOOLS[name])), *args],
        input=json.dumps(list(objects)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed ({result.returncode}): {result.stderr[-2000:]}")
    answer: list[dict[str, Any]] = json.loads(result.stdout)
    return answer


def argocd_health(
    objects: Sequence[Mapping[str, Any]], argocd_cm: Path, *, script_only: bool = False
) -> list[dict[str, str]]:
    """Argo CD's health of each object ({status, message[, error]}) under the argocd-cm patch:
    as the application controller decides it, or (script_only) the health script's own answer,
    as Argo CD's resource-customization tests run it."""
    return _run("argocd-health", [*(["--script-only"] if script_only else []), str(argocd_cm)], objects)


def kstatus(objects: Sequence[Mapping[str, Any]]) -> list[dict[str, dict[str, str]]]:
    """kstatus of each object: {"sigs": {status, message}, "fluxcd": {status, message}}."""
    return _run("kstatus", [], objects)


def main(argv: list[str]) -> int:
    unknown = [name for name in argv[1:] if name not in TOOLS]
    if unknown:
        print(f"unknown Go tool(s) {', '.join(unknown)}; known: {', '.join(TOOLS)}", file=sys.stderr)
        return 2
    for name in argv[1:] or list(TOOLS):
        print(build(TOOLS[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Build (or find cached) Go linters and checkers from the Go module proxy.

`go install module/cmd/tool@version` into a per-version directory under the same cache
as hack/k8sbuild.py (~/.cache/mixpeek-operator, or $MIXPEEK_OPERATOR_CACHE), so a tool is
built once per version and a new pin builds next to the old one. The build log (with the
wall time of the cold build) stays next to the binary.

    python hack/gotools.py actionlint promtool   # prints each tool's path
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from k8sbuild import cache_root


@dataclass(frozen=True)
class GoTool:
    name: str
    package: str  # the main package, without @version
    version: str
    ldflags: str = "-s -w"


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
}


def tool_path(tool: GoTool) -> Path:
    return cache_root() / f"{tool.name}-{tool.version}" / "bin" / tool.name


def build(tool: GoTool) -> Path:
    """The tool's binary, built from the module proxy unless already cached."""
    binary = tool_path(tool)
    if binary.is_file():
        return binary
    bin_dir = binary.parent
    staging = bin_dir.with_name("bin.partial")
    staging.mkdir(parents=True, exist_ok=True)
    log = bin_dir.parent / "build.log"
    env = dict(os.environ, GOBIN=str(staging), GOFLAGS="-mod=mod", CGO_ENABLED="0", GOTOOLCHAIN="local")
    command = ["go", "install", "-trimpath", "-ldflags", tool.ldflags, f"{tool.package}@{tool.version}"]
    started = time.monotonic()
    with log.open("w") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=staging)
        out.write(f"cold build: {time.monotonic() - started:.0f} s\n")
    if result.returncode != 0:
        raise RuntimeError(f"building {tool.name} failed, see {log}:\n{log.read_text()[-3000:]}")
    staging.rename(bin_dir)  # atomic: a half-built directory is never taken for a cached one
    return binary


def main(argv: list[str]) -> int:
    for name in argv[1:] or sorted(TOOLS):
        print(build(TOOLS[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Build (or find cached) the repo's small Go test programs from the Go module proxy.

Each program lives in hack/<name>/ with its own go.mod and go.sum: hack/argocd-health runs
Argo CD's own health code (util/lua, util/settings, gitops-engine), hack/kstatus both
kstatus libraries (sigs.k8s.io/cli-utils and the fluxcd/cli-utils fork). They are built like
the Kubernetes binaries (k8sbuild.py): once, outside the repo, in a cache directory named
after the program, its main dependency's version and a digest of its sources, so an edit or
a version bump builds anew and anything else reuses the binary.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from k8sbuild import _go, cache_root

HACK = Path(__file__).resolve().parent
# program -> the module whose version names the cache directory
PROGRAMS = {
    "argocd-health": "github.com/argoproj/argo-cd/v3",
    "kstatus": "sigs.k8s.io/cli-utils",
}


def _source_files(source: Path) -> list[Path]:
    return sorted([source / "go.mod", source / "go.sum", *source.glob("*.go")])


def _version(source: Path, module: str) -> str:
    found = re.search(
        rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", (source / "go.mod").read_text(), re.M
    )
    if found is None:
        raise RuntimeError(f"{source / 'go.mod'} does not require {module}")
    return found.group(1)


def program_dir(name: str) -> Path:
    """The cache directory of program `name` as its sources are now."""
    source = HACK / name
    digest = hashlib.sha256()
    for path in _source_files(source):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return cache_root() / f"{name}-{_version(source, PROGRAMS[name])}-{digest.hexdigest()[:12]}"


def build_go_program(name: str) -> Path:
    """The path of the built program `name` (one of PROGRAMS), building it if needed."""
    if name not in PROGRAMS:
        raise ValueError(f"unknown Go program {name!r}; known: {', '.join(PROGRAMS)}")
    home = program_dir(name)
    binary = home / "bin" / name
    if binary.is_file():
        return binary
    home.mkdir(parents=True, exist_ok=True)
    log = home / "build.log"
    log.write_text("")
    staged = home / "bin.partial"
    shutil.rmtree(staged, ignore_errors=True)
    _go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(staged / name), "."], HACK / name, log)
    shutil.rmtree(home / "bin", ignore_errors=True)
    staged.rename(home / "bin")
    for stale in home.parent.glob(f"{name}-*"):  # builds of earlier sources
        if stale != home and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    return binary


def _run(name: str, args: Sequence[str], objects: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(build_go_program(name)), *args],
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


def argocd_health(objects: Sequence[Mapping[str, Any]], argocd_cm: Path) -> list[dict[str, str]]:
    """Argo CD's health of each object ({status, message[, error]}) under the argocd-cm patch."""
    return _run("argocd-health", [str(argocd_cm)], objects)


def kstatus(objects: Sequence[Mapping[str, Any]]) -> list[dict[str, dict[str, str]]]:
    """kstatus of each object: {"sigs": {status, message}, "fluxcd": {status, message}}."""
    return _run("kstatus", [], objects)


def main(argv: list[str]) -> int:
    for name in argv[1:] or list(PROGRAMS):
        print(build_go_program(name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Build (or find cached) Kubernetes test binaries from the Go module proxy.

kube-apiserver and kubectl come from ``k8s.io/kubernetes`` at a pinned tag. That
module replaces its ``k8s.io/*`` staging modules with local paths, which only work
inside a kubernetes checkout, so a throw-away wrapper module re-points every one of
them at its published ``v0.x`` release. etcd is built in the same wrapper from
``go.etcd.io/etcd/server/v3`` (the version kubernetes itself pins), and helm from
its own module. The local node (hack/localnode.py) adds kubelet, kube-proxy,
kube-controller-manager and kube-scheduler from the same wrapper, the CNI plugins from
their module and a static pause binary from a few lines of our own. Binaries are
cached per version outside the repo and rebuilt only when missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
HELM_MODULE = "helm.sh/helm/v4"
HELM_VERSION = "v4.3.1"
CNI_MODULE = "github.com/containernetworking/plugins"
CNI_PLUGINS_VERSION = "v1.10.0"
# Binary name -> path under the module's plugins/ directory.
CNI_PLUGINS = {
    "bridge": "main/bridge",
    "loopback": "main/loopback",
    "host-local": "ipam/host-local",
    "portmap": "meta/portmap",
}
NODE_BINARIES = ("kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler")
# Bumped when the pause source below changes.
PAUSE_VERSION = "1"

_REPLACE_RE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", re.MULTILINE)
_ETCD_SERVER_RE = re.compile(r"^\s*go\.etcd\.io/etcd/server/v3\s+(v\S+)", re.MULTILINE)


def cache_root() -> Path:
    override = os.environ.get("MIXPEEK_OPERATOR_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "mixpeek-operator"


def kube_bin_dir(version: str = KUBERNETES_VERSION) -> Path:
    return cache_root() / f"kubernetes-{version}" / "bin"


def node_bin_dir(version: str = KUBERNETES_VERSION) -> Path:
    return cache_root() / f"kubernetes-{version}" / "node-bin"


def cni_bin_dir(version: str = CNI_PLUGINS_VERSION) -> Path:
    return cache_root() / f"cni-plugins-{version}" / "bin"


def pause_bin_dir() -> Path:
    return cache_root() / f"pause-{PAUSE_VERSION}" / "bin"


def helm_bin_dir(version: str = HELM_VERSION) -> Path:
    return cache_root() / f"helm-{version}" / "bin"


def go_env(**extra: str) -> dict[str, str]:
    """The environment of every Go command we run: static binaries, the local toolchain only,
    and Go's module and build caches (and GOPATH) inside the cache directory unless they are
    set, so a build writes nowhere but there (``-modcacherw`` keeps that directory removable)."""
    if shutil.which("go") is None:
        raise RuntimeError(
            "Go 1.26+ is needed once, to build the Kubernetes binaries from the Go module proxy "
            f"(cached afterwards in {cache_root()}): install it and put `go` on PATH"
        )
    env = dict(os.environ, GOFLAGS="-mod=mod -modcacherw", CGO_ENABLED="0", GOTOOLCHAIN="local", **extra)
    env.setdefault("GOPATH", str(cache_root() / "go" / "path"))  # its pkg/sumdb too
    env.setdefault("GOMODCACHE", str(cache_root() / "go" / "mod"))
    env.setdefault("GOCACHE", str(cache_root() / "go" / "build"))
    # Go keeps telemetry counters in the user's config directory (~/.config/go/telemetry): those
    # go to the cache directory too, while `go env -w` settings (GOENV) stay the user's.
    user_config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    env.setdefault("GOENV", str(user_config / "go" / "env"))
    env["XDG_CONFIG_HOME"] = str(cache_root() / "go" / "config")
    return env


def _go(args: list[str], cwd: Path, log: Path) -> None:
    env = go_env()
    with log.open("a") as out:
        out.write(f"$ go {' '.join(args)}\n")
        out.flush()
        result = subprocess.run(["go", *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = log.read_text().splitlines()[-30:]
        raise RuntimeError(f"go {' '.join(args)} failed (full log: {log}):\n" + "\n".join(tail))


def _staging_versions(version: str, workdir: Path, log: Path) -> tuple[list[str], str]:
    """Staging module names and the etcd server version pinned by kubernetes' go.mod."""
    env = go_env()
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        log.write_text(out.stdout + out.stderr)
        raise RuntimeError(f"cannot download k8s.io/kubernetes@{version}: {out.stderr.strip()}")
    gomod = Path(json.loads(out.stdout)["GoMod"]).read_text()
    staging = _REPLACE_RE.findall(gomod)
    etcd = _ETCD_SERVER_RE.search(gomod)
    if not staging or etcd is None:
        raise RuntimeError(f"unexpected go.mod layout for k8s.io/kubernetes@{version}")
    return staging, etcd.group(1)


def _write_wrapper(work: Path, version: str, log: Path, packages: list[str]) -> None:
    """The wrapper module: kubernetes at `version`, every staging module re-pointed at its
    published release, etcd's server at the version kubernetes pins, and `packages` imported."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "cmd" / "etcd").mkdir(parents=True)
    staging, etcd_version = _staging_versions(version, work, log)
    minor = version.lstrip("v").split(".")
    staging_version = f"v0.{minor[1]}.{minor[2]}"
    replaces = "\n".join(f"\t{name} => {name} {staging_version}" for name in staging)
    go_version = (
        subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True, env=go_env())
        .stdout.strip()
        .removeprefix("go")
    )
    (work / "go.mod").write_text(
        f"module localkube\n\ngo {go_version}\n\n"
        f"require (\n\tk8s.io/kubernetes {version}\n\tgo.etcd.io/etcd/server/v3 {etcd_version}\n)\n\n"
        f"replace (\n{replaces}\n)\n"
    )
    imports = "".join(f'\t_ "{package}"\n' for package in packages)
    (work / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports})\n")
    (work / "cmd" / "etcd" / "main.go").write_text(
        'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
        "func main() { etcdmain.Main(os.Args) }\n"
    )
    _go(["mod", "tidy"], work, log)


def _ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    return " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={version}",
            f"-X k8s.io/component-base/version.gitMajor={major}",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
            "-X k8s.io/client-go/pkg/version.gitVersion=" + version,
        ]
    )


def _build_from_wrapper(version: str, bin_dir: Path, targets: dict[str, str]) -> Path:
    """Build `targets` (binary name -> Go package) in a wrapper module next to `bin_dir`,
    staged so that an interrupted build never leaves a half-filled bin_dir."""
    if all((bin_dir / name).is_file() for name in targets):
        return bin_dir
    work = bin_dir.parent / f"{bin_dir.name}-wrapper"
    bin_dir.parent.mkdir(parents=True, exist_ok=True)
    log = bin_dir.parent / f"{bin_dir.name}-build.log"
    log.write_text("")
    # A cold build takes minutes: say so, and where to follow it (stdout stays the path alone).
    print(
        f"building {', '.join(targets)} {version} from the Go module proxy, once (log: {log})",
        file=sys.stderr,
    )
    _write_wrapper(work, version, log, [pkg for pkg in targets.values() if not pkg.startswith("./")])
    staged = bin_dir.parent / f"{bin_dir.name}.partial"
    staged.mkdir(parents=True, exist_ok=True)
    # One `go build` for every target: the shared packages compile once and the targets'
    # own packages and links run in parallel (sequential builds left a core idle at each link).
    # `-o DIR/` names each binary after its package's directory, the target's name.
    assert all(package.rsplit("/", 1)[-1] == name for name, package in targets.items()), targets
    _go(
        ["build", "-trimpath", "-ldflags", _ldflags(version), "-o", f"{staged}/", *targets.values()],
        work,
        log,
    )
    shutil.rmtree(bin_dir, ignore_errors=True)
    staged.rename(bin_dir)
    shutil.rmtree(work, ignore_errors=True)
    return bin_dir


def build_kubernetes(version: str = KUBERNETES_VERSION) -> Path:
    """etcd, kubectl and kube-apiserver: the control plane the integration tier runs."""
    return _build_from_wrapper(
        version,
        kube_bin_dir(version),
        {
            "etcd": "./cmd/etcd",
            "kubectl": "k8s.io/kubernetes/cmd/kubectl",
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        },
    )


def build_node(version: str = KUBERNETES_VERSION) -> Path:
    """The node and the rest of the control plane: kubelet, kube-proxy, controller-manager,
    scheduler (same wrapper module, their own bin dir so the two builds never collide)."""
    return _build_from_wrapper(
        version,
        node_bin_dir(version),
        {name: f"k8s.io/kubernetes/cmd/{name}" for name in NODE_BINARIES},
    )


def build_cni(version: str = CNI_PLUGINS_VERSION) -> Path:
    """The CNI plugins the node's bridge network uses, `go install`ed from their module."""
    bin_dir = cni_bin_dir(version)
    if all((bin_dir / name).is_file() for name in CNI_PLUGINS):
        return bin_dir
    staged = bin_dir.parent / "bin.partial"
    staged.mkdir(parents=True, exist_ok=True)
    log = bin_dir.parent / "build.log"
    log.write_text("")
    for path in CNI_PLUGINS.values():
        _go_install(f"{CNI_MODULE}/plugins/{path}@{version}", staged, log, "-s -w")
    shutil.rmtree(bin_dir, ignore_errors=True)
    staged.rename(bin_dir)
    return bin_dir


# The pod sandbox's only process: sleep until told to stop. Our own few lines, so no
# registry is needed for the pause image.
_PAUSE_SOURCE = """package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsignals := make(chan os.Signal, 1)
\tsignal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
\t<-signals
}
"""


def build_pause() -> Path:
    """A static `pause` binary for the node's sandbox image."""
    bin_dir = pause_bin_dir()
    if (bin_dir / "pause").is_file():
        return bin_dir
    work = bin_dir.parent / "src"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "go.mod").write_text("module localpause\n\ngo 1.21\n")
    (work / "main.go").write_text(_PAUSE_SOURCE)
    log = bin_dir.parent / "build.log"
    log.write_text("")
    staged = bin_dir.parent / "bin.partial"
    staged.mkdir(parents=True, exist_ok=True)
    _go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(staged / "pause"), "."], work, log)
    shutil.rmtree(bin_dir, ignore_errors=True)
    staged.rename(bin_dir)
    shutil.rmtree(work, ignore_errors=True)
    return bin_dir


def _go_install(target: str, gobin: Path, log: Path, ldflags: str) -> None:
    env = go_env(GOBIN=str(gobin))
    with log.open("a") as out:
        out.write(f"$ go install {target}\n")
        out.flush()
        result = subprocess.run(
            ["go", "install", "-trimpath", "-ldflags", ldflags, target],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=gobin,
        )
    if result.returncode != 0:
        raise RuntimeError(f"go install {target} failed, see {log}:\n{log.read_text()[-3000:]}")


def build_helm(version: str = HELM_VERSION) -> Path:
    bin_dir = helm_bin_dir(version)
    if (bin_dir / "helm").is_file():
        return bin_dir
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = bin_dir.parent / "build.log"
    log.write_text("")
    ldflags = f"-s -w -X {HELM_MODULE}/internal/version.version={version}"
    _go_install(f"{HELM_MODULE}/cmd/helm@{version}", bin_dir, log, ldflags)
    return bin_dir


BUILDERS = {
    "kubernetes": build_kubernetes,
    "helm": build_helm,
    "node": build_node,
    "cni": build_cni,
    "pause": build_pause,
}


def main(argv: list[str]) -> int:
    what = argv[1:] or ["kubernetes"]
    unknown = [item for item in what if item not in BUILDERS]
    if unknown:
        print(f"unknown build target(s) {unknown}; choose from {sorted(BUILDERS)}", file=sys.stderr)
        return 2
    for item in what:
        try:
            print(BUILDERS[item]())
        except RuntimeError as error:
            print(f"k8sbuild: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

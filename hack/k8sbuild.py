"""Build (or find cached) Kubernetes test binaries from the Go module proxy.

kube-apiserver and kubectl come from ``k8s.io/kubernetes`` at a pinned tag. That
module replaces its ``k8s.io/*`` staging modules with local paths, which only work
inside a kubernetes checkout, so a throw-away wrapper module re-points every one of
them at its published ``v0.x`` release. etcd is built in the same wrapper from
``go.etcd.io/etcd/server/v3`` (the version kubernetes itself pins), and helm from
its own module. Binaries are cached per version outside the repo and rebuilt only
when missing.
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

_REPLACE_RE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", re.MULTILINE)
_ETCD_SERVER_RE = re.compile(r"^\s*go\.etcd\.io/etcd/server/v3\s+(v\S+)", re.MULTILINE)


def cache_root() -> Path:
    override = os.environ.get("MIXPEEK_OPERATOR_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "mixpeek-operator"


def kube_bin_dir(version: str = KUBERNETES_VERSION) -> Path:
    return cache_root() / f"kubernetes-{version}" / "bin"


def helm_bin_dir(version: str = HELM_VERSION) -> Path:
    return cache_root() / f"helm-{version}" / "bin"


def _go(args: list[str], cwd: Path, log: Path) -> None:
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0", GOTOOLCHAIN="local")
    with log.open("a") as out:
        out.write(f"$ go {' '.join(args)}\n")
        out.flush()
        result = subprocess.run(["go", *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = log.read_text().splitlines()[-30:]
        raise RuntimeError(f"go {' '.join(args)} failed (full log: {log}):\n" + "\n".join(tail))


def _staging_versions(version: str, workdir: Path, log: Path) -> tuple[list[str], str]:
    """Staging module names and the etcd server version pinned by kubernetes' go.mod."""
    env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local")
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


def build_kubernetes(version: str = KUBERNETES_VERSION) -> Path:
    bin_dir = kube_bin_dir(version)
    wanted = ["kube-apiserver", "kubectl", "etcd"]
    if all((bin_dir / name).is_file() for name in wanted):
        return bin_dir
    work = bin_dir.parent / "wrapper"
    shutil.rmtree(work, ignore_errors=True)
    (work / "cmd" / "etcd").mkdir(parents=True)
    log = bin_dir.parent / "build.log"
    log.write_text("")
    staging, etcd_version = _staging_versions(version, work, log)
    minor = version.lstrip("v").split(".")
    staging_version = f"v0.{minor[1]}.{minor[2]}"
    replaces = "\n".join(f"\t{name} => {name} {staging_version}" for name in staging)
    go_version = (
        subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True)
        .stdout.strip()
        .removeprefix("go")
    )
    (work / "go.mod").write_text(
        f"module localkube\n\ngo {go_version}\n\n"
        f"require (\n\tk8s.io/kubernetes {version}\n\tgo.etcd.io/etcd/server/v3 {etcd_version}\n)\n\n"
        f"replace (\n{replaces}\n)\n"
    )
    (work / "tools.go").write_text(
        "//go:build tools\n\npackage tools\n\nimport (\n"
        '\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n'
        '\t_ "k8s.io/kubernetes/cmd/kubectl"\n)\n'
    )
    (work / "cmd" / "etcd" / "main.go").write_text(
        'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
        "func main() { etcdmain.Main(os.Args) }\n"
    )
    _go(["mod", "tidy"], work, log)
    major, minor_num = minor[0], minor[1]
    ldflags = " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={version}",
            f"-X k8s.io/component-base/version.gitMajor={major}",
            f"-X k8s.io/component-base/version.gitMinor={minor_num}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
            "-X k8s.io/client-go/pkg/version.gitVersion=" + version,
        ]
    )
    staged = bin_dir.parent / "bin.partial"
    staged.mkdir(parents=True, exist_ok=True)
    for name, package in (
        ("etcd", "./cmd/etcd"),
        ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
        ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
    ):
        _go(["build", "-trimpath", "-ldflags", ldflags, "-o", str(staged / name), package], work, log)
    shutil.rmtree(bin_dir, ignore_errors=True)
    staged.rename(bin_dir)
    shutil.rmtree(work, ignore_errors=True)
    return bin_dir


def build_helm(version: str = HELM_VERSION) -> Path:
    bin_dir = helm_bin_dir(version)
    if (bin_dir / "helm").is_file():
        return bin_dir
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = bin_dir.parent / "build.log"
    log.write_text("")
    env_bin = dict(os.environ, GOBIN=str(bin_dir))
    env_bin.update(GOFLAGS="-mod=mod", CGO_ENABLED="0", GOTOOLCHAIN="local")
    with log.open("a") as out:
        result = subprocess.run(
            [
                "go",
                "install",
                "-trimpath",
                "-ldflags",
                f"-s -w -X {HELM_MODULE}/internal/version.version={version}",
                f"{HELM_MODULE}/cmd/helm@{version}",
            ],
            env=env_bin,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=bin_dir,
        )
    if result.returncode != 0:
        raise RuntimeError(f"helm build failed, see {log}:\n{log.read_text()[-3000:]}")
    return bin_dir


def main(argv: list[str]) -> int:
    what = argv[1:] or ["kubernetes"]
    for item in what:
        path = build_kubernetes() if item == "kubernetes" else build_helm()
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

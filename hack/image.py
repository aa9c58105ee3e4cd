"""Build the operator image on this machine, without any container registry.

`make image` runs this. The project's Dockerfile is built with buildah (daemonless) from a
local Python base instead of python:3.11-slim:

1. the base: `debootstrap --variant=minbase bookworm` with python3 and pip from the Debian
   mirror apt already uses, cached under ~/.cache/mixpeek-operator (about 2 minutes once);
2. the wheels of the project's dependencies are built on the host (whose pip has an index)
   and bind-mounted into the build, so the build itself needs no network;
3. the result is saved as a docker-archive under the cache; loading it into the local node is
   the node's business (`python -m hack.localnode load-image`; a starting node imports the
   latest archive itself).

The pause image for pod sandboxes is built the same way from the static binary
hack/k8sbuild.py compiles. The last line printed is the operator image reference.

Linux and root only (debootstrap, buildah's chroot isolation).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from hack import k8sbuild

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/mixpeek-operator:dev"
PAUSE_IMAGE = f"localhost/mixpeek-pause:{k8sbuild.PAUSE_VERSION}"
DEBIAN_SUITE = "bookworm"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates")
# Bumped when the base recipe changes.
BASE_VERSION = "1"
BASE_IMAGE = f"localhost/mixpeek-python-base:{DEBIAN_SUITE}-{BASE_VERSION}"


def image_dir() -> Path:
    return k8sbuild.cache_root() / "images"


def archive_path(ref: str) -> Path:
    """Where the docker-archive of `ref` is kept for the node to import."""
    return image_dir() / (re.sub(r"[^A-Za-z0-9_.-]", "_", ref) + ".tar")


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, text=True, capture_output=True, check=False, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def _buildah_command(*args: str) -> list[str]:
    """buildah with its own storage under the cache directory (never the machine's default)."""
    storage = k8sbuild.cache_root() / "buildah"
    return [
        "buildah",
        f"--root={storage / 'storage'}",
        f"--runroot={storage / 'run'}",
        "--storage-driver=overlay",
        *args,
    ]


def _buildah(*args: str) -> subprocess.CompletedProcess[str]:
    return _run(_buildah_command(*args))


def _has_image(ref: str) -> bool:
    command = _buildah_command("inspect", "--type=image", ref)
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian archive URL: $MIXPEEK_DEBIAN_MIRROR, else the one apt uses here (one-line or
    deb822 sources), else deb.debian.org (e.g. on Ubuntu, whose sources have no bookworm)."""
    if override := os.environ.get("MIXPEEK_DEBIAN_MIRROR"):
        return override
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for file in files:
        if not file.is_file():
            continue
        text = file.read_text(errors="replace")
        for match in re.finditer(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, re.MULTILINE):
            if match.group(2) == DEBIAN_SUITE and "security" not in match.group(1):
                return match.group(1)
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            if (
                uris
                and suites
                and DEBIAN_SUITE in suites.group(1).split()
                and "security" not in uris.group(1)
            ):
                return uris.group(1)
    return DEFAULT_DEBIAN_MIRROR


def base_rootfs() -> Path:
    """A tarball of a minimal Debian with python3 and pip, from debootstrap (cached)."""
    tarball = k8sbuild.cache_root() / f"debian-{DEBIAN_SUITE}-python-{BASE_VERSION}" / "rootfs.tar"
    if tarball.is_file():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent) as tmp:
        root = Path(tmp) / "rootfs"
        log = tarball.parent / "debootstrap.log"
        with log.open("w") as out:
            result = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    DEBIAN_SUITE,
                    str(root),
                    debian_mirror(),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(f"debootstrap failed, see {log}:\n{log.read_text()[-3000:]}")
        # The image is the only user of this Python: pip may install into it.
        for marker in (root / "usr" / "lib").glob("python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        shutil.rmtree(root / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        shutil.rmtree(root / "var" / "lib" / "apt" / "lists", ignore_errors=True)
        partial = tarball.with_suffix(".partial")
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."])
        partial.rename(tarball)
    return tarball


def base_image() -> str:
    if _has_image(BASE_IMAGE):
        return BASE_IMAGE
    rootfs = base_rootfs()
    container = _buildah("from", "scratch").stdout.strip()
    try:
        _buildah("add", container, str(rootfs), "/")
        _buildah("config", "--env", "PATH=/usr/local/bin:/usr/bin:/bin", "--cmd", "python3", container)
        _buildah("commit", "--quiet", container, BASE_IMAGE)
    finally:
        _buildah("rm", container)
    return BASE_IMAGE


def wheelhouse(directory: Path) -> Path:
    """Wheels for the project, its dependencies and its build backend, built by the host's pip."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--wheel-dir",
            str(directory),
            # The extras the Dockerfile installs (the emulator runs from the same image) and
            # the build backend pyproject.toml names.
            ".[emulator]",
            *tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["build-system"]["requires"],
        ],
        cwd=REPO_ROOT,
    )
    return directory


def build_operator_image(ref: str = IMAGE) -> Path:
    base = base_image()
    with tempfile.TemporaryDirectory(prefix="mixpeek-wheels-") as tmp:
        wheels = wheelhouse(Path(tmp) / "wheels")
        _buildah(
            "bud",
            "--isolation=chroot",
            # No --layers: buildah's layer cache does not key the final stage's install on the
            # wheels it bind-mounts from the builder, so it kept installing weeks-old code (and
            # with a fully cached builder there is nothing to mount). Every build installs anew.
            f"--build-arg=PYTHON_IMAGE={base}",
            "--build-arg=PIP_WHEEL_ARGS=--no-index --find-links=/wheelhouse",
            f"--volume={wheels}:/wheelhouse:ro",
            f"--tag={ref}",
            f"--file={REPO_ROOT / 'Dockerfile'}",
            str(REPO_ROOT),
        )
    return save(ref)


def build_pause_image(ref: str = PAUSE_IMAGE) -> Path:
    archive = archive_path(ref)
    if archive.is_file():
        return archive
    pause = k8sbuild.build_pause() / "pause"
    container = _buildah("from", "scratch").stdout.strip()
    try:
        _buildah("copy", container, str(pause), "/pause")
        _buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", container)
        _buildah("commit", "--quiet", container, ref)
    finally:
        _buildah("rm", container)
    return save(ref)


def save(ref: str) -> Path:
    archive = archive_path(ref)
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    _buildah("push", "--quiet", ref, f"docker-archive:{partial}:{ref}")
    partial.rename(archive)
    return archive


def requirements_missing() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "make image needs Linux and root (debootstrap, buildah)"
    return None


def main(argv: list[str] | None = None) -> int:
    """Build the operator image and print its reference (nothing is loaded anywhere)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tag", default=IMAGE, help=f"image reference (default {IMAGE})")
    args = parser.parse_args(argv)
    if why := requirements_missing():
        print(why, file=sys.stderr)
        return 1
    archive = build_operator_image(args.tag)
    print(f"image archive: {archive}", file=sys.stderr)
    print(args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())

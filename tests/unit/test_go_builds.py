"""hack/k8sbuild.py's promises to a newcomer, without running Go: a clear message when Go is
missing, and Go's caches inside the cache directory (nothing written elsewhere)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import k8sbuild

HACK = Path(__file__).resolve().parents[2] / "hack"


def test_without_go_the_first_build_says_what_to_install(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path / "no-go-here"), MIXPEEK_OPERATOR_CACHE=str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, str(HACK / "k8sbuild.py"), "kubernetes"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Go 1.26+ is needed once" in result.stderr
    assert "Traceback" not in result.stderr


def test_go_caches_default_into_the_cache_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXPEEK_OPERATOR_CACHE", str(tmp_path))
    monkeypatch.delenv("GOMODCACHE", raising=False)
    monkeypatch.delenv("GOCACHE", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "go").write_text("#!/bin/sh\n")
    (tmp_path / "go").chmod(0o755)
    env = k8sbuild.go_env(GOBIN="/somewhere")
    assert env["GOMODCACHE"] == str(tmp_path / "go" / "mod")
    assert env["GOCACHE"] == str(tmp_path / "go" / "build")
    assert env["GOBIN"] == "/somewhere"
    assert "-modcacherw" in env["GOFLAGS"]  # the cache directory stays removable with rm -r
    # Go's telemetry counters (under the user config directory) land in the cache too; the
    # user's own `go env -w` file is still read.
    assert env["XDG_CONFIG_HOME"] == str(tmp_path / "go" / "config")
    assert env["GOENV"] == str(Path.home() / ".config" / "go" / "env")


def test_go_caches_set_by_the_user_are_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOMODCACHE", "/mine/mod")
    monkeypatch.setenv("GOCACHE", "/mine/build")
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "go").write_text("#!/bin/sh\n")
    (tmp_path / "go").chmod(0o755)
    env = k8sbuild.go_env()
    assert (env["GOMODCACHE"], env["GOCACHE"]) == ("/mine/mod", "/mine/build")

"""`make image` finds the Debian mirror apt already uses (so debootstrap needs no other network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hack import image


def test_one_line_sources_list(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# comment\n"
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    )
    assert image.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\nComponents: main\n"
    )
    assert image.debian_mirror(tmp_path) == "http://deb.example/debian"


def test_no_bookworm_source_falls_back_and_the_env_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sources.list").write_text("deb http://archive.ubuntu.example/ubuntu noble main\n")
    monkeypatch.delenv("MIXPEEK_DEBIAN_MIRROR", raising=False)
    assert image.debian_mirror(tmp_path) == image.DEFAULT_DEBIAN_MIRROR
    monkeypatch.setenv("MIXPEEK_DEBIAN_MIRROR", "http://local.example/debian")
    assert image.debian_mirror(tmp_path) == "http://local.example/debian"

"""One version source (pyproject.toml), read at runtime from the package metadata; the chart,
the changelog and the release workflow's tag check all agree with it."""

from __future__ import annotations

import os
import subprocess
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

import mixpeek_operator

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


def test_the_runtime_version_is_the_package_metadata() -> None:
    assert version("mixpeek-operator") == VERSION
    assert mixpeek_operator.__version__ == VERSION


def test_the_chart_version_and_app_version_follow_the_package() -> None:
    chart = yaml.safe_load((ROOT / "charts" / "mixpeek-operator" / "Chart.yaml").read_text())
    assert chart["version"] == VERSION
    assert chart["appVersion"] == VERSION


def test_the_changelog_has_a_section_for_the_version() -> None:
    assert f"## [{VERSION}]" in (ROOT / "CHANGELOG.md").read_text()


def test_the_license_is_an_spdx_expression() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"


def _tag_check_script() -> str:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    steps = workflow["jobs"]["version"]["steps"]
    script: str = next(step["run"] for step in steps if step.get("id") == "version")
    return script


@pytest.mark.parametrize(("tag", "accepted"), [(f"v{VERSION}", True), ("v99.0.0", False), (VERSION, False)])
def test_the_release_workflow_accepts_only_the_tag_naming_the_version(
    tag: str, accepted: bool, tmp_path: Path
) -> None:
    output = tmp_path / "github-output"
    result = subprocess.run(
        ["bash", "-e", "-c", _tag_check_script()],
        cwd=ROOT,
        env={
            **os.environ,
            "GITHUB_REF_NAME": tag,
            "GITHUB_OUTPUT": str(output),
            "GITHUB_REPOSITORY_OWNER": "Mixpeek",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode == 0) == accepted, result.stdout + result.stderr
    if accepted:
        assert output.read_text().splitlines() == [f"version={VERSION}", "registry=ghcr.io/mixpeek"]
    else:
        assert "does not name the pyproject.toml version" in result.stdout

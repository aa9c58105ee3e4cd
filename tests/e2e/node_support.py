"""kubectl and helm against the local node, for the e2e tier (tests/e2e)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import localnode
from k8sbuild import build_helm, kube_bin_dir


def require_node() -> None:
    """Skip with the reason where the node cannot run; under CI=true, fail instead."""
    why = localnode.requirements_missing()
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"the e2e tier must run under CI: {why}")
    pytest.skip(why)


@dataclass
class Node:
    """kubectl and helm against the running node, as a user would run them."""

    running: localnode.RunningNode
    image: str
    timings: dict[str, float]

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return _tool(str(kube_bin_dir() / "kubectl"), self.running.kubeconfig, args, input, check, timeout)

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return _tool(str(build_helm() / "helm"), self.running.kubeconfig, args, None, True, timeout)

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def raw(self, path: str, *, method: str = "GET", body: Any = None) -> Any:
        """A request through the apiserver (e.g. its Service proxy: the host never routes to
        pods), with the admin client certificate."""
        pki = self.running.workdir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        server = (self.running.workdir / "ready").read_text().strip()
        request = urllib.request.Request(
            server + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"} if body is not None else {},
        )
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            text = response.read().decode()
        return json.loads(text) if text.strip() else None


def _tool(
    binary: str, kubeconfig: Path, args: tuple[str, ...], input: str | None, check: bool, timeout: float
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [binary, f"--kubeconfig={kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{Path(binary).name} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result

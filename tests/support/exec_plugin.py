"""A kubeconfig exec credential plugin for tests: a real executable that the loader runs,
printing an ExecCredential built from files named in its environment."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PLUGIN_SOURCE = """\
import json, os, pathlib, sys
info = json.loads(os.environ.get("KUBERNETES_EXEC_INFO") or "null")
with open(os.environ["PLUGIN_CALLS"], "a") as calls:
    calls.write(json.dumps({"info": info, "args": sys.argv[1:]}) + "\\n")
if os.environ.get("PLUGIN_FAIL"):
    sys.stderr.write("plugin: not logged in (run `cloud login`)\\n")
    sys.exit(3)
status = {}
if os.environ.get("PLUGIN_TOKEN_FILE"):
    status["token"] = pathlib.Path(os.environ["PLUGIN_TOKEN_FILE"]).read_text().strip()
else:
    status["clientCertificateData"] = pathlib.Path(os.environ["PLUGIN_CERT"]).read_text()
    status["clientKeyData"] = pathlib.Path(os.environ["PLUGIN_KEY"]).read_text()
if os.environ.get("PLUGIN_EXPIRES"):
    status["expirationTimestamp"] = os.environ["PLUGIN_EXPIRES"]
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}))
"""


def write_plugin(directory: Path) -> Path:
    plugin = directory / "bin" / "test-auth-plugin"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    plugin.write_text(f"#!{sys.executable}\n{PLUGIN_SOURCE}")
    plugin.chmod(0o755)
    return plugin


def exec_kubeconfig(
    directory: Path,
    server: str,
    ca_cert: Path,
    env: dict[str, str],
    *,
    api_version: str = "client.authentication.k8s.io/v1",
    command: str = "./bin/test-auth-plugin",
    extra: dict[str, Any] | None = None,
) -> Path:
    """A kubeconfig whose user authenticates through the test plugin (relative command path)."""
    write_plugin(directory)
    calls = directory / "plugin-calls.jsonl"
    exec_config = {
        "apiVersion": api_version,
        "command": command,
        "args": ["get-credential", "--cluster", "local"],
        "env": [{"name": k, "value": v} for k, v in {"PLUGIN_CALLS": str(calls), **env}.items()],
        "interactiveMode": "Never",
        "installHint": "install test-auth-plugin from the test suite",
        **(extra or {}),
    }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca_cert)}}],
        "users": [{"name": "exec-user", "user": {"exec": exec_config}}],
        "contexts": [{"name": "exec", "context": {"cluster": "local", "user": "exec-user"}}],
        "current-context": "exec",
    }
    path = directory / "kubeconfig"
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def plugin_calls(directory: Path) -> list[dict[str, Any]]:
    path = directory / "plugin-calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]

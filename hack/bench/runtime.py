"""The Python environment a benchmark's operator replicas run in: the image's packages.

The image installs `.[emulator]` and nothing more (Dockerfile). The development virtualenv also
holds the test tools, and with rich and pygments installed `import httpx` loads httpx's
command-line interface: 3.5 MB of RSS in every operator process (measured: 47.4 against
43.9 MB after the operator's imports), which no pod carries. A benchmark that compares memory
per replica therefore runs its replicas in a virtualenv of their own holding what the image
holds, with the working tree installed editable (the code measured is the code checked out).
It is made once per requirement set and Python version, under `.local/bench/`.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
import tomllib
from pathlib import Path

from hack.localcluster import REPO_ROOT

EXTRAS = "emulator"  # what the Dockerfile installs: ".[emulator]"
PACKAGES = f"the image's: .[{EXTRAS}] in a virtualenv of its own (hack/bench/runtime.py)"  # for results


def runtime_python(root: Path = REPO_ROOT / ".local" / "bench") -> Path:
    """The Python of a virtualenv with the image's packages and this tree editable, made if needed."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"][EXTRAS]]
    key = "\n".join([platform.python_version(), str(REPO_ROOT), *requirements])
    venv = root / f"runtime-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    python = venv / "bin" / "python"
    done = venv / ".installed"
    if done.exists():
        return python
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-e", f"{REPO_ROOT}[{EXTRAS}]"], check=True)
    done.touch()
    return python

"""`make demo`: the whole product on one machine, no Mixpeek account needed.

Starts a local control plane (kube-apiserver + etcd), the Mixpeek emulator serving a
local folder of sample files, and the operator; applies `examples/`; waits until every
BucketSync is Ready with files synced; prints the table and how to poke it. Everything
keeps running in the background until `make demo-down`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from hack import localcluster

REPO = localcluster.REPO_ROOT
DEMO_DIR = REPO / ".local" / "demo"
NAMESPACE = "mixpeek-demo"
EMULATOR_PORT = 18099
# (path under the connection root, size in bytes): what the demo's "S3 bucket" holds.
SAMPLE_FILES = (
    ("demo-bucket/videos/launch.mp4", 3_145_728),
    ("demo-bucket/videos/teaser.mov", 1_048_576),
    ("demo-bucket/videos/interview.mp4", 2_097_152),
    ("demo-bucket/videos/drafts/rough-cut.mp4", 524_288),
    ("demo-bucket/videos/clip_temp.mp4", 65_536),
    ("demo-bucket/docs/readme.txt", 2_048),
    ("demo-bucket/docs/brand-guide.pdf", 262_144),
    ("demo-bucket/images/logo.png", 16_384),
)


def _kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    kubectl = localcluster.k8sbuild.kube_bin_dir() / "kubectl"
    result = subprocess.run(
        # Discovery cache under DEMO_DIR, not ~/.kube: the demo writes nothing outside the repo.
        [
            str(kubectl),
            f"--kubeconfig={DEMO_DIR / 'cluster' / 'kubeconfig'}",
            f"--cache-dir={DEMO_DIR / 'kube-cache'}",
            *args,
        ],
        input=input,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result


def _detached(name: str, args: list[str], env: dict[str, str] | None = None) -> None:
    """Start a background process that outlives this script; its pid goes to DEMO_DIR/NAME.pid."""
    with (DEMO_DIR / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    (DEMO_DIR / f"{name}.pid").write_text(str(proc.pid))


def _stop(name: str) -> None:
    pid_file = DEMO_DIR / f"{name}.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pid_file.unlink()


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    sys.exit(f"timed out after {timeout:.0f}s waiting for {what}; logs are in {DEMO_DIR}")


def _write_sample_data() -> Path:
    root = DEMO_DIR / "sample-data"
    for relative, size in SAMPLE_FILES:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.stat().st_size != size:
            path.write_bytes(os.urandom(size))
    return root


def _emulator_up(sample_root: Path) -> str:
    seed = {
        "api_keys": [{"key": "sk_test_emulator", "user_id": "usr_emulator", "internal_id": "org_emulator"}],
        "namespaces": [
            {
                "id": "ns_emulator",
                "name": "default",
                "buckets": [{"id": "bkt_demo", "name": "demo"}, {"id": "bkt_media", "name": "media"}],
                "connections": [
                    # The demo "S3 bucket" is a real folder: file counts and bytes are real.
                    {"id": "conn_s3_demo", "provider": "s3", "name": "demo S3", "root": str(sample_root)},
                    {"id": "conn_gdrive_demo", "provider": "google_drive", "name": "demo Drive"},
                ],
            }
        ],
    }
    seed_file = DEMO_DIR / "emulator-seed.yaml"
    seed_file.write_text(yaml.safe_dump(seed))
    url = f"http://127.0.0.1:{EMULATOR_PORT}"
    _detached(
        "emulator",
        [
            sys.executable,
            "-m",
            "mixpeek_operator",
            "emulator",
            "--port",
            str(EMULATOR_PORT),
            "--seed",
            str(seed_file),
            "--initial-run-delay",
            "2",
        ],
    )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/_emulator/health", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    _wait("the Mixpeek emulator", healthy, 30)
    return url


def _all_ready_with_files() -> bool:
    items: list[dict[str, Any]] = json.loads(
        _kubectl("-n", NAMESPACE, "get", "bucketsyncs", "-o", "json").stdout
    )["items"]
    return bool(items) and all(_ready_with_files(item.get("status") or {}) for item in items)


def _ready_with_files(status: dict[str, Any]) -> bool:
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return ready and bool((status.get("metrics") or {}).get("filesSynced"))


def up() -> int:
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    down(quiet=True)
    print("1/5 local control plane (kube-apiserver + etcd) ...", flush=True)
    if localcluster.main(["up", "--dir", str(DEMO_DIR / "cluster")]) != 0:
        return 1
    print("2/5 Mixpeek emulator with a local folder of sample files ...", flush=True)
    emulator_url = _emulator_up(_write_sample_data())
    print("3/5 CRD, namespace and credentials ...", flush=True)
    _kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    _kubectl("wait", "--for=condition=Established", "crd/bucketsyncs.mixpeek.com")
    _kubectl("create", "namespace", NAMESPACE, check=False)
    _kubectl("-n", NAMESPACE, "apply", "-f", str(REPO / "examples" / "credentials-secret.yaml"))
    print("4/5 the operator ...", flush=True)
    env = dict(os.environ, KUBECONFIG=str(DEMO_DIR / "cluster" / "kubeconfig"))
    _detached(
        "operator",
        [
            sys.executable,
            "-m",
            "mixpeek_operator",
            "run",
            "--namespace",
            NAMESPACE,
            "--mixpeek-base-url",
            emulator_url,
            "--observe-interval",
            "3",
            "--metrics-port",
            "18080",
            "--health-port",
            "18081",
            "--log-format",
            "text",
        ],
        env=env,
    )
    print(
        "5/5 applying examples/ and waiting for every BucketSync to be Ready with files synced ...",
        flush=True,
    )
    for example in sorted((REPO / "examples").glob("bucketsync-*.yaml")):
        _kubectl("-n", NAMESPACE, "apply", "-f", str(example))
    _wait("every BucketSync Ready with files synced", _all_ready_with_files, 180)
    print()
    print(_kubectl("-n", NAMESPACE, "get", "bucketsyncs").stdout)
    kubeconfig = DEMO_DIR / "cluster" / "kubeconfig"
    print(f"""Everything keeps running. Try it:
  export KUBECONFIG={kubeconfig}
  alias k="{localcluster.k8sbuild.kube_bin_dir() / "kubectl"} -n {NAMESPACE}"
  k get bsync -w                                              # watch status change
  k patch bsync demo-videos --type=merge -p '{{"spec":{{"paused":true}}}}'    # pause (Ready, reason Paused)
  k patch bsync demo-videos --type=merge -p '{{"spec":{{"batchSize":10}}}}'   # one PATCH to Mixpeek
  k annotate bsync demo-videos mixpeek.com/trigger-requested-at=$(date +%s) --overwrite   # run now
  k describe bsync demo-videos                                # conditions and Events
  curl -s localhost:18080/metrics | grep ^mixpeek_            # Prometheus metrics
  curl -s {emulator_url}/_emulator/syncs | python3 -m json.tool   # what "Mixpeek" holds
Logs: {DEMO_DIR}/operator.log, {DEMO_DIR}/emulator.log
Stop everything: make demo-down""")
    return 0


def down(quiet: bool = False) -> int:
    _stop("operator")
    _stop("emulator")
    if (DEMO_DIR / "cluster").exists():
        if quiet:
            with open(os.devnull, "w") as sink:
                stdout, sys.stdout = sys.stdout, sink
                try:
                    localcluster.main(["down", "--dir", str(DEMO_DIR / "cluster")])
                finally:
                    sys.stdout = stdout
        else:
            localcluster.main(["down", "--dir", str(DEMO_DIR / "cluster")])
    if not quiet:
        print("demo stopped")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down"])
    args = parser.parse_args()
    return up() if args.command == "up" else down()


if __name__ == "__main__":
    sys.exit(main())

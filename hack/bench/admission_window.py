"""How long BucketSync creates are refused right after `helm install --wait` returns (issue 16).

Against the running local node (`make node`), N rounds per mode: install the chart fresh (its
CRD and admission policies as the chart ships them, no BucketSync CRD beforehand), and the
instant `helm install --wait` returns, run `kubectl create` of a valid BucketSync (a real
create, not a dry run) every 50 ms until one is admitted; then delete it, uninstall the
release, delete the CRD and let the API server forget it before the next round. A mode is a
name and an operator image (`--mode after=localhost/mixpeek-operator:window-after`); the
image's archive, built by `python -m hack.image --tag REF`, is imported into the node first. A mode
given with `--mode-without-wait` installs without `--wait`: the API server's own refusal window
after a new CRD, which the operator's readiness gate keeps behind `--wait`. Modes alternate
within each round, so load drifts hit them alike.

Printed per round: the seconds from helm's return to the start of the first admitted create
(0.00 when the very first one was admitted), to that create's answer, how many were refused,
the refusals' error text, whether the admitted object got the finalizer the chart's
MutatingAdmissionPolicy adds, and the operator's own gate log line; then min / median / max
per mode. How to run it, and the numbers measured: docs/admission.md.

From hack/: k8sbuild (kubectl, helm), image (the archives) and localnode (importing them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hack import image
from hack.k8sbuild import build_helm, kube_bin_dir
from hack.localnode import import_image

REPO_ROOT = Path(__file__).resolve().parents[2]

CHART = REPO_ROOT / "charts" / "mixpeek-operator"
CRD = "bucketsyncs.mixpeek.com"
FINALIZER = "mixpeek.com/finalizer"
RELEASE = "window"
SYSTEM_NS = "mixpeek-window"
APP_NS = "mixpeek-window-apps"
PROBE_NAME = "window-probe"
# The API server's admission policy plugin re-reads /openapi/v3 every 5 s (docs/admission.md):
# after deleting the CRD, wait out two polls so the next round meets a kind it has forgotten,
# as on a cluster that never had it.
FORGET_SECONDS = 12.0
GATE_LOG = re.compile(r"BucketSync creates (admitted after [0-9.]+s|still refused after [0-9.]+s)")


def probe_manifest() -> str:
    """A valid BucketSync (admitted on its merits): its Secret does not exist, so the operator
    only reports that, and nothing is sent anywhere."""
    return json.dumps(
        {
            "apiVersion": "mixpeek.com/v1alpha1",
            "kind": "BucketSync",
            "metadata": {"name": PROBE_NAME, "namespace": APP_NS},
            "spec": {
                "bucketId": "bkt_window",
                "connectionId": "conn_window",
                "sourcePath": "window-bucket/videos",
                "credentialsRef": {"name": "no-such-secret"},
            },
        }
    )


@dataclass
class Attempt:
    started: float  # seconds after helm returned
    ended: float
    admitted: bool
    error: str


@dataclass
class Round:
    mode: str
    image: str
    index: int
    helm_seconds: float
    attempts: list[Attempt] = field(default_factory=list)
    finalizer_added: bool | None = None
    gate_log: str = ""

    @property
    def refused(self) -> list[Attempt]:
        return [attempt for attempt in self.attempts if not attempt.admitted]

    @property
    def first_admitted(self) -> Attempt | None:
        return next((attempt for attempt in self.attempts if attempt.admitted), None)

    @property
    def window(self) -> float | None:
        """Seconds from helm's return to the start of the first admitted create."""
        admitted = self.first_admitted
        if admitted is None:
            return None
        return 0.0 if admitted is self.attempts[0] else admitted.started

    def errors(self) -> list[str]:
        """Each distinct refusal text, once."""
        return list(dict.fromkeys(attempt.error for attempt in self.refused))


class Cluster:
    """kubectl and helm against the node, as a user runs them (own discovery cache)."""

    def __init__(self, kubeconfig: Path, cache_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir
        self.kubectl_bin = str(kube_bin_dir() / "kubectl")
        self.helm_bin = str(build_helm() / "helm")

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        command = [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}"]
        return _run([*command, *args], input=input, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return _run([self.helm_bin, f"--kubeconfig={self.kubeconfig}", *args], check=check, timeout=timeout)

    def exists(self, *args: str) -> bool:
        """Whether the object exists (no, too, when its kind is not served)."""
        found = self.kubectl("get", *args, "--ignore-not-found", "-o", "name", check=False)
        return bool(found.stdout.strip())


def _run(
    command: list[str], *, input: str | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:1] + command[2:])} failed:\n{result.stdout}{result.stderr}")
    return result


def import_images(containerd_socket: Path, refs: list[str]) -> None:
    for ref in dict.fromkeys(refs):
        archive = image.archive_path(ref)
        if not archive.is_file():
            raise SystemExit(f"no archive for {ref}: build it first with `python -m hack.image --tag {ref}`")
        import_image(containerd_socket, archive)


def measure(
    cluster: Cluster, mode: str, ref: str, wait: bool, index: int, interval: float, give_up: float
) -> Round:
    repository, tag = ref.rsplit(":", 1)
    began = time.monotonic()
    cluster.helm(
        "install", RELEASE, str(CHART), "--namespace", SYSTEM_NS,
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=Never",
        # Nothing routed off the machine, whatever the operator tries.
        "--set", "settings.mixpeekBaseUrl=http://127.0.0.1:9",
        *(["--wait", "--timeout=180s"] if wait else []),
    )  # fmt: skip
    returned = time.monotonic()
    result = Round(mode=mode, image=ref, index=index, helm_seconds=returned - began)
    manifest = probe_manifest()
    while time.monotonic() - returned < give_up:
        started = time.monotonic() - returned
        answer = cluster.kubectl("create", "-f", "-", input=manifest, check=False, timeout=60)
        ended = time.monotonic() - returned
        admitted = answer.returncode == 0
        result.attempts.append(Attempt(started, ended, admitted, "" if admitted else answer.stderr.strip()))
        if admitted:
            break
        time.sleep(interval)
    if result.first_admitted is not None:
        created = json.loads(
            cluster.kubectl("-n", APP_NS, "get", "bucketsync", PROBE_NAME, "-o", "json").stdout
        )
        result.finalizer_added = FINALIZER in (created["metadata"].get("finalizers") or [])
    logs = cluster.kubectl(
        "-n", SYSTEM_NS, "logs", "-l", "app.kubernetes.io/name=mixpeek-operator", "--tail=-1", check=False
    ).stdout
    result.gate_log = "; ".join(match.group(1) for match in GATE_LOG.finditer(logs))
    return result


def clean_up(cluster: Cluster) -> None:
    """Delete the probe, the release and the CRD; then let the API server forget the kind. The
    probe's Secret does not exist, so the operator rightly keeps its finalizer (it cannot tell
    whether a remote sync exists): once the probe is being deleted (the operator no longer adds
    it back), it is removed here, as an admin would."""
    if cluster.exists("-n", APP_NS, "bucketsync", PROBE_NAME):
        cluster.kubectl("-n", APP_NS, "delete", "bucketsync", PROBE_NAME, "--wait=false")
        cluster.kubectl(
            "-n", APP_NS, "patch", "bucketsync", PROBE_NAME, "--type=merge",
            "-p", '{"metadata":{"finalizers":null}}', check=False,
        )  # fmt: skip
        cluster.kubectl(
            "-n", APP_NS, "wait", "--for=delete", f"bucketsync/{PROBE_NAME}", "--timeout=60s", timeout=90
        )
    if cluster.helm("status", RELEASE, "--namespace", SYSTEM_NS, check=False).returncode == 0:
        cluster.helm("uninstall", RELEASE, "--namespace", SYSTEM_NS, "--wait", "--timeout=120s")
    cluster.kubectl("delete", "crd", CRD, "--ignore-not-found", "--timeout=90s", timeout=120)
    time.sleep(FORGET_SECONDS)


def summary(rounds: list[Round], modes: list[str]) -> list[str]:
    lines = []
    for mode in modes:
        mine = [r for r in rounds if r.mode == mode]
        windows = [r.window for r in mine if r.window is not None]
        answered = [r.first_admitted.ended for r in mine if r.first_admitted is not None]
        refused = sum(len(r.refused) for r in mine)
        never = sum(1 for r in mine if r.first_admitted is None)
        line = f"{mode}: {len(mine)} rounds, {refused} refused creates"
        if never:
            line += f", {never} rounds never admitted"
        if windows:
            line += (
                f"; window min/median/max {min(windows):.2f} / {statistics.median(windows):.2f} /"
                f" {max(windows):.2f} s; first admitted create answered after"
                f" {min(answered):.2f} / {statistics.median(answered):.2f} / {max(answered):.2f} s"
            )
        lines.append(line)
    return lines


def round_line(r: Round) -> str:
    admitted = r.first_admitted
    return (
        f"{r.mode:>8} #{r.index}: helm {r.helm_seconds:5.1f}s  window "
        + (f"{r.window:5.2f}s  answered {admitted.ended:5.2f}s" if admitted else "never admitted")
        + f"  refused {len(r.refused):3d}  finalizer {r.finalizer_added}  gate [{r.gate_log or '-'}]"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mode",
        action="append",
        metavar="NAME=IMAGE",
        default=[],
        help="a mode and its operator image, e.g. after=localhost/mixpeek-operator:window-after",
    )
    parser.add_argument(
        "--mode-without-wait",
        action="append",
        default=[],
        metavar="NAME=IMAGE",
        help="a mode installing without --wait: the API server's own refusal window after a new CRD",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between create attempts")
    parser.add_argument("--give-up", type=float, default=120.0, help="seconds of refusals before giving up")
    parser.add_argument("--node-dir", type=Path, default=REPO_ROOT / ".local" / "node")
    parser.add_argument("--json", type=Path, help="also write every round's attempts here")
    args = parser.parse_args(argv)
    modes: dict[str, tuple[str, bool]] = {}  # name: (image, helm install --wait)
    for spec, wait in [(spec, True) for spec in args.mode] + [(s, False) for s in args.mode_without_wait]:
        name, sep, ref = spec.partition("=")
        if not sep or ":" not in ref:
            parser.error(f"a mode is NAME=IMAGE:TAG, got {spec!r}")
        modes[name] = (ref, wait)
    if not modes:
        parser.error("no --mode given")
    node_dir = args.node_dir.resolve()
    kubeconfig = node_dir / "kubeconfig"
    if not kubeconfig.is_file():
        parser.error(f"no node running from {node_dir} (start it: make node)")
    import_images(node_dir / "containerd" / "containerd.sock", [ref for ref, _ in modes.values()])

    with tempfile.TemporaryDirectory(prefix="admission-window-") as cache:
        cluster = Cluster(kubeconfig, Path(cache))
        if cluster.exists("crd", CRD):
            raise SystemExit(f"the node already has {CRD}: the measurement needs a cluster without it")
        cluster.kubectl("create", "namespace", SYSTEM_NS)
        cluster.kubectl("create", "namespace", APP_NS)
        load_before = os.getloadavg()
        began = datetime.now(UTC)
        rounds: list[Round] = []
        try:
            for index in range(1, args.rounds + 1):
                order = list(modes) if index % 2 else list(reversed(modes))
                for mode in order:
                    rounds.append(measure(cluster, mode, *modes[mode], index, args.interval, args.give_up))
                    print(round_line(rounds[-1]), flush=True)
                    for error in rounds[-1].errors():
                        print(f"           refused: {error}", flush=True)
                    clean_up(cluster)
        finally:
            clean_up(cluster)
            cluster.kubectl(
                "delete", "namespace", SYSTEM_NS, APP_NS, "--timeout=180s", check=False, timeout=200
            )
        load_after = os.getloadavg()

    print(
        f"\n{began:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average (1/5/15 min)"
        f" {'/'.join(f'{v:.1f}' for v in load_before)} before, {'/'.join(f'{v:.1f}' for v in load_after)}"
        f" after; {args.rounds} rounds, a create every {args.interval * 1000:.0f} ms"
    )
    for mode, (ref, wait) in modes.items():
        print(f"  {mode} = {ref}, helm install {'--wait' if wait else 'without --wait'}")
    for line in summary(rounds, list(modes)):
        print(line)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "began": began.isoformat(),
                    "load_before": load_before,
                    "load_after": load_after,
                    "modes": {mode: {"image": ref, "wait": wait} for mode, (ref, wait) in modes.items()},
                    "rounds": [asdict(r) | {"window": r.window} for r in rounds],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

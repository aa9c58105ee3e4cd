"""A real, local Kubernetes control plane: etcd + kube-apiserver on 127.0.0.1, no kubelet.

Used by the pytest session fixture and by `make cluster` / `make demo`. The apiserver
runs with real authentication and authorization: a generated CA, a serving
certificate, an admin client certificate (group system:masters) written into a
kubeconfig, RBAC on, and service-account token signing keys, so tests can exercise
RBAC with genuine ServiceAccount tokens from the TokenRequest API.

Every process is started in its own session with PR_SET_PDEATHSIG, so a crashed or
killed parent never leaves etcd or the apiserver behind.

CLI:
    python -m hack.localcluster up   [--dir DIR]   start in the background, print the kubeconfig
    python -m hack.localcluster down [--dir DIR]   stop what `up` started
    python -m hack.localcluster serve --dir DIR    run in the foreground until SIGTERM
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hack import k8sbuild, supervisor
from hack.supervisor import spawn, terminate

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO_ROOT / ".local" / "cluster"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn_emulator(
    workdir: Path, seed: Mapping[str, Any], *extra_args: str, timeout: float = 30.0
) -> tuple[subprocess.Popen[bytes], str]:
    """`mixpeek-operator emulator` on a free loopback port with `seed`, through its real CLI.

    Returns the process (dying with us, like every spawned child) and its base URL once it
    answers its health check. The clock is frozen (`--time-scale 0`) unless `extra_args` says
    otherwise: remote state then changes only when a test or benchmark asks.
    """
    seed_file = workdir / "emulator-seed.json"
    seed_file.write_text(json.dumps(seed))
    port_file = workdir / "emulator.port"
    log = workdir / "emulator.log"
    proc = spawn(
        [
            sys.executable,
            "-m",
            "mixpeek_operator",
            "emulator",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--seed",
            str(seed_file),
            "--time-scale",
            "0",
            *extra_args,
        ],
        log,
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"emulator exited with {proc.returncode}:\n{log.read_text(errors='replace')}"
                )
            port = port_file.read_text().strip() if port_file.exists() else ""
            if port:
                url = f"http://127.0.0.1:{port}"
                try:
                    with urllib.request.urlopen(f"{url}/_emulator/health", timeout=2) as response:
                        if response.status == 200:
                            return proc, url
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"emulator not healthy after {timeout:.0f}s; log: {log}")
            time.sleep(0.1)
    except BaseException:
        terminate(proc)
        raise


@dataclass(frozen=True)
class OperatorLaunch:
    proc: subprocess.Popen[bytes]
    args: list[str]
    metrics_url: str
    health_url: str


def spawn_operator(
    log: Path,
    kubeconfig: Path,
    namespaces: Sequence[str],
    *flags: str,
    env: Mapping[str, str] | None = None,
    python: str | Path = sys.executable,
) -> OperatorLaunch:
    """`mixpeek-operator run` through its real CLI, watching `namespaces`, on free metrics and
    health ports (the caller waits for health: tests and benchmarks wait differently); `python`:
    the interpreter (a benchmark's replicas run in the image's packages, hack/bench/runtime.py)."""
    metrics_port, health_port = free_port(), free_port()
    args = [
        str(python),
        "-m",
        "mixpeek_operator",
        "run",
        *[arg for namespace in namespaces for arg in ("--namespace", namespace)],
        "--metrics-port",
        str(metrics_port),
        "--health-port",
        str(health_port),
        *flags,
    ]
    proc = spawn(args, log, env={**os.environ, **(env or {}), "KUBECONFIG": str(kubeconfig)})
    return OperatorLaunch(
        proc=proc,
        args=args,
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        health_url=f"http://127.0.0.1:{health_port}/healthz",
    )


# --- PKI ----------------------------------------------------------------------------------


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    client: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if not is_ca:
        usage = x509.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public: Path
    sa_private: Path


def generate_pki(directory: Path, extra_ips: Sequence[str] = ()) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)

    def name(common: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("mixpeek-operator-local-ca")
    ca = _certificate(ca_name, ca_key, ca_name, ca_key, is_ca=True)
    pki = _pki_paths(directory)
    pki.ca_cert.write_bytes(ca.public_bytes(pem))

    serving_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default.svc"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        *(
            x509.IPAddress(ipaddress.ip_address(ip))
            for ip in dict.fromkeys(extra_ips)
            if ip not in ("127.0.0.1", "10.0.0.1")
        ),
    ]
    serving = _certificate(name("kube-apiserver"), serving_key, ca_name, ca_key, sans=sans)
    pki.serving_cert.write_bytes(serving.public_bytes(pem))
    _write_key(pki.serving_key, serving_key)

    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _certificate(name("admin", "system:masters"), admin_key, ca_name, ca_key, client=True)
    pki.admin_cert.write_bytes(admin.public_bytes(pem))
    _write_key(pki.admin_key, admin_key)

    sa_key = ec.generate_private_key(ec.SECP256R1())
    _write_key(pki.sa_private, sa_key)
    pki.sa_public.write_bytes(
        sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki


def write_kubeconfig(
    path: Path,
    server: str,
    ca_cert: Path,
    *,
    user: str,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
) -> Path:
    """A kubeconfig with one cluster/user/context; JSON is valid YAML."""
    credentials: dict[str, str] = {}
    if cert is not None and key is not None:
        credentials = {"client-certificate": str(cert), "client-key": str(key)}
    if token is not None:
        credentials = {"token": token}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca_cert)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": {"cluster": "local", "user": user}}],
        "current-context": user,
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


# --- the control plane --------------------------------------------------------------------


@dataclass
class ControlPlane:
    """etcd + kube-apiserver under one working directory.

    On loopback by default; the local node (hack/localnode.py) runs it inside its network
    namespace, advertised on the node's address with the node's Service range.
    """

    workdir: Path
    bin_dir: Path = field(default_factory=k8sbuild.kube_bin_dir)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    etcd_port: int = 0
    apiserver_port: int = 0
    advertise_address: str = "127.0.0.1"
    service_cidr: str = "10.0.0.0/24"
    extra_apiserver_args: Sequence[str] = ()

    @property
    def server(self) -> str:
        return f"https://{self.advertise_address}:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def pki(self) -> Pki:
        return _pki_paths(self.workdir / "pki")

    def start(self, timeout: float = 120.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        service_ip = str(next(ipaddress.ip_network(self.service_cidr).hosts()))
        pki = generate_pki(self.workdir / "pki", extra_ips=[self.advertise_address, service_ip])
        self._start_etcd()
        self._start_apiserver(pki)
        write_kubeconfig(
            self.kubeconfig, self.server, pki.ca_cert, user="admin", cert=pki.admin_cert, key=pki.admin_key
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self._write_pids()

    def _start_etcd(self) -> None:
        data_dir = self.workdir / "etcd-data"
        shutil.rmtree(data_dir, ignore_errors=True)
        self.etcd_port, peer_port = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{peer_port}"
        self.processes["etcd"] = spawn(
            [
                str(self.bin_dir / "etcd"),
                "--name=local",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=local={peer_url}",
                # Test data is disposable; skipping fsync makes etcd fast on slow disks.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            self.workdir / "etcd.log",
        )

    def _start_apiserver(self, pki: Pki) -> None:
        self.apiserver_port = self.apiserver_port or free_port()  # a restart keeps its address
        self.processes["kube-apiserver"] = spawn(
            [
                str(self.bin_dir / "kube-apiserver"),
                # Loopback, or every address of the node's own network namespace.
                "--bind-address=" + ("127.0.0.1" if self.advertise_address == "127.0.0.1" else "0.0.0.0"),
                f"--advertise-address={self.advertise_address}",
                f"--secure-port={self.apiserver_port}",
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.sa_public}",
                f"--service-account-signing-key-file={pki.sa_private}",
                f"--service-cluster-ip-range={self.service_cidr}",
                "--allow-privileged=false",
                "--profiling=false",
                "--event-ttl=1h",
                "--v=1",
                *self.extra_apiserver_args,
            ],
            self.workdir / "kube-apiserver.log",
        )

    def _ssl_context(self) -> ssl.SSLContext:
        pki = self.pki
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        return context

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        context = self._ssl_context()
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    log = (self.workdir / f"{name}.log").read_text(errors="replace")[-4000:]
                    raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{log}")
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=context, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last_error = str(exc)
            time.sleep(0.25)
        raise TimeoutError(f"kube-apiserver not ready after {timeout:.0f}s: {last_error}")

    def _write_pids(self) -> None:
        (self.workdir / "pids.json").write_text(
            json.dumps({name: proc.pid for name, proc in self.processes.items()})
        )

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver only (an outage); etcd and its data stay."""
        proc = self.processes.pop("kube-apiserver", None)
        if proc is not None:
            terminate(proc)

    def start_apiserver(self, timeout: float = 120.0) -> None:
        """Start kube-apiserver again on the same port, certificates and etcd."""
        self._start_apiserver(self.pki)
        self._wait_ready(timeout)
        self._write_pids()

    def stop(self) -> None:
        # The apiserver first, so it does not spin on a vanished etcd.
        for name in ("kube-apiserver", "etcd"):
            proc = self.processes.get(name)
            if proc is not None:
                terminate(proc)
        self.processes.clear()
        shutil.rmtree(self.workdir / "etcd-data", ignore_errors=True)

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.processes.values()]

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        config = kubeconfig or self.kubeconfig
        result = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={config}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
        return result


def _pki_paths(directory: Path) -> Pki:
    return Pki(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_public=directory / "sa.pub",
        sa_private=directory / "sa.key",
    )


@contextlib.contextmanager
def running_control_plane(workdir: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(workdir=workdir, bin_dir=k8sbuild.build_kubernetes())
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


def leftover_processes(marker: str) -> list[psutil.Process]:
    """Processes whose command line mentions `marker` (a working directory of ours)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def assert_no_leftovers(marker: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (survivors := leftover_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if survivors:
        for proc in survivors:
            proc.kill()
        raise AssertionError(f"processes left running: {[p.info['cmdline'] for p in survivors]}")


# --- CLI ----------------------------------------------------------------------------------


def _serve(directory: Path) -> int:
    """Foreground supervisor: start, write `ready`, wait for SIGTERM/SIGINT, stop."""
    stop = supervisor.StopRequest()
    (directory / "ready").unlink(missing_ok=True)
    with running_control_plane(directory) as plane:
        (directory / "ready").write_text(plane.server)
        stop.wait(lambda: all(proc.poll() is None for proc in plane.processes.values()))
    (directory / "ready").unlink(missing_ok=True)
    return 0


def _up(directory: Path, timeout: float = 900.0) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    if supervisor.is_up(directory):
        print(directory / "kubeconfig")
        return 0
    k8sbuild.build_kubernetes()  # in the foreground, so build errors are visible
    command = supervisor.module_command("hack.localcluster", "serve", "--dir", str(directory))
    proc = supervisor.launch(command, directory, detach=True)
    if not supervisor.wait_ready(directory, proc, time.monotonic() + timeout):
        print((directory / "supervisor.log").read_text(errors="replace")[-4000:], file=sys.stderr)
        print("local control plane failed to start", file=sys.stderr)
        return 1
    print(directory / "kubeconfig")
    return 0


def _down(directory: Path) -> int:
    if not supervisor.stop(directory):
        print("no local control plane running", file=sys.stderr)
        return 0
    print("local control plane stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "serve", "build"])
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="working directory (default: .local/cluster)"
    )
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    if args.command == "build":
        print(k8sbuild.build_kubernetes())
        return 0
    if args.command == "up":
        return _up(directory)
    if args.command == "down":
        return _down(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return _serve(directory)


if __name__ == "__main__":
    sys.exit(main())

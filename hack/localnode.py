"""A real local Kubernetes node in a network namespace: the e2e tier and `make node`.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet,
kube-proxy and CoreDNS (cluster DNS behind kube-system/kube-dns, docs/local-node.md) all run
inside a network namespace this driver creates (like a kind node, but a
namespace instead of a container), and inside one private mount namespace, so every mount
they make (container root filesystems, pod volumes, pod network namespaces) lives and dies
with the node. Pods get addresses from a CNI bridge inside the namespace; kube-proxy's
iptables rules live there too. The host reaches the node only through one veth pair.

Addresses (documented in docs/local-node.md): everything is in 198.18.0.0/15, the range RFC 2544
reserves for benchmarking and that no real network routes. The veth pair is
198.18.<n>.1 (host) / 198.18.<n>.2 (node), <n> chosen free per node, so two nodes can run at
once; pods are 198.19.0.0/20 and Services 198.19.128.0/24, which exist only inside the
node's namespace. The namespace has no default route: nothing leaves the machine. IP
forwarding is enabled inside the namespace only (the sysctl is per namespace); the host's
is never touched.

State lives under the working directory wherever the component allows it (containerd root,
state and socket, kubelet root and pod logs, CNI config and IPAM data, runc state). The fixed
paths some components use regardless (containerd's shim sockets under /run/containerd, pod
network namespace files in /run/netns, libcni's cache in /var/lib/cni, the kubelet's sockets
under /var/lib/kubelet, /var/log/containers) are bind-mounted from the working directory
inside the node's mount namespace, so the host sees at most the empty directories, removed at
tear-down with the pod cgroups and the network namespace, and /run/netns itself (which
`ip netns add` creates and mounts) when the node created it and no namespace is left in it.
`leftovers()` lists whatever survived; the e2e tier fails if anything did.

CLI (Linux, root):
    python -m hack.localnode up         [--dir DIR]   start in the background, print the kubeconfig
    python -m hack.localnode down       [--dir DIR]   stop it and remove everything it created
    python -m hack.localnode load-image [--dir DIR]   build the operator image (hack/image.py) and,
                                                      if the node runs, import it into its containerd
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from hack import gotools, image, k8sbuild, supervisor
from hack.localcluster import REPO_ROOT, ControlPlane, assert_no_leftovers, leftover_processes
from hack.supervisor import spawn, terminate

DEFAULT_DIR = REPO_ROOT / ".local" / "node"
NODE_NAME = "mixpeek-node"
POD_CIDR = "198.19.0.0/20"
SERVICE_CIDR = "198.19.128.0/24"
# Cluster DNS: CoreDNS on the node's address, behind the usual kube-system/kube-dns Service.
CLUSTER_DNS_IP = "198.19.128.10"
CLUSTER_DOMAIN = "cluster.local"
COREDNS_READY = "http://127.0.0.1:8181/ready"
BRIDGE = "mxbr0"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
# Paths the components use whatever their configuration says (containerd's shim sockets, pod
# network namespace files, libcni's cache, the kubelet's pod-resources and device-plugin
# sockets, container log links). Inside the node's mount namespace each is bind-mounted from
# the node's directory, so the host sees at most an empty directory, removed at tear-down.
FIXED_PATHS = (
    Path("/run/containerd"),
    NETNS_DIR,
    Path("/var/lib/cni"),
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
    Path("/var/log/pods"),
)


def requirements_missing() -> str | None:
    """Why the node cannot run here, or None."""
    if sys.platform != "linux":
        return "the local node needs Linux (network namespaces, containerd)"
    if os.geteuid() != 0:
        return "the local node needs root (network namespaces, containerd, kubelet)"
    missing = [
        tool
        for tool in ("containerd", "runc", "iptables", "ip", "nsenter", "unshare", "buildah", "ctr")
        if shutil.which(tool) is None
    ]
    if missing:
        return f"missing tools {missing}: run `make node-deps` (apt-get install)"
    return None


@dataclass(frozen=True)
class NodeLayout:
    """Names and addresses of one node, saved as node.json so `down` can clean up after a crash."""

    workdir: str
    netns: str
    host_if: str
    node_if: str
    host_ip: str
    node_ip: str
    cgroup: str
    absent_before: list[str]
    netns_files_before: list[str]
    ip_forward_before: str

    @classmethod
    def load(cls, workdir: Path) -> NodeLayout | None:
        try:
            return cls(**json.loads((workdir / "node.json").read_text()))
        except FileNotFoundError:
            return None

    def save(self) -> None:
        (Path(self.workdir) / "node.json").write_text(json.dumps(asdict(self), indent=2))


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _in_netns(netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(["ip", "netns", "exec", netns, *args])


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def _free_subnet_index() -> int:
    """A /24 of 198.18.0.0/16 not used by any interface on the host."""
    used = _ip("-4", "-o", "addr", "show").stdout
    for index in range(1, 255):
        if f" 198.18.{index}." not in used:
            return index
    raise RuntimeError("no free 198.18.x.0/30 for the node's veth pair")


def plan(workdir: Path) -> NodeLayout:
    index = _free_subnet_index()
    suffix = f"{os.getpid() % 100000:05d}"
    return NodeLayout(
        workdir=str(workdir),
        netns=f"mixpeek-node-{suffix}",
        host_if=f"mxn{suffix}h",
        node_if=f"mxn{suffix}n",
        host_ip=f"198.18.{index}.1",
        node_ip=f"198.18.{index}.2",
        cgroup=f"mixpeek-node-{suffix}",
        absent_before=[str(path) for path in FIXED_PATHS if not path.exists()],
        netns_files_before=sorted(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else [],
        ip_forward_before=IP_FORWARD.read_text().strip(),
    )


def _cgroup_dirs(layout: NodeLayout) -> list[Path]:
    """The node's pod cgroup root: in the unified hierarchy (cgroup v2), or in every mounted
    v1 hierarchy (these machines: v1 with a v2 `unified` mount beside it)."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT / layout.cgroup]
    return [hierarchy / layout.cgroup for hierarchy in sorted(CGROUP_ROOT.iterdir()) if hierarchy.is_dir()]


def create_network(layout: NodeLayout) -> None:
    _ip("netns", "add", layout.netns)
    _ip("link", "add", layout.host_if, "type", "veth", "peer", "name", layout.node_if, "netns", layout.netns)
    _ip("addr", "add", f"{layout.host_ip}/30", "dev", layout.host_if)
    _ip("link", "set", layout.host_if, "up")
    ns = ("-n", layout.netns)
    _ip(*ns, "addr", "add", f"{layout.node_ip}/30", "dev", layout.node_if)
    _ip(*ns, "link", "set", layout.node_if, "up")
    _ip(*ns, "link", "set", "lo", "up")
    # Per-namespace sysctls: routing between pods and the node, and bridged pod-to-pod
    # traffic through kube-proxy's iptables rules (Services whose endpoint shares the bridge).
    _in_netns(layout.netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    with contextlib.suppress(RuntimeError):
        _in_netns(layout.netns, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1")


def create_cgroups(layout: NodeLayout) -> None:
    for directory in _cgroup_dirs(layout):
        directory.mkdir(exist_ok=True)
        if directory.parent.name == "cpuset":
            # A new cpuset cgroup has no CPUs or memory nodes until given its parent's.
            for name in ("cpuset.cpus", "cpuset.mems"):
                (directory / name).write_text((directory.parent / name).read_text())


# --- inside the namespace --------------------------------------------------------------------


@dataclass
class NodeProcesses:
    """Everything the node runs; started by the `inner` command inside the namespaces."""

    layout: NodeLayout

    def __post_init__(self) -> None:
        self.workdir = Path(self.layout.workdir)
        self.node_bin = k8sbuild.node_bin_dir()
        self.cni_bin = k8sbuild.cni_bin_dir()
        self.plane = ControlPlane(
            workdir=self.workdir,
            bin_dir=k8sbuild.kube_bin_dir(),
            advertise_address=self.layout.node_ip,
            service_cidr=SERVICE_CIDR,
            extra_apiserver_args=(
                # `kubectl logs/exec`: the apiserver dials the kubelet at the node's address.
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={self.workdir / 'pki' / 'admin.crt'}",
                f"--kubelet-client-key={self.workdir / 'pki' / 'admin.key'}",
            ),
        )
        self.components: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def start(self) -> None:
        self._private_fixed_paths()
        self.plane.start()
        self._start_containerd()
        for archive in (image.build_pause_image(), image.archive_path(image.IMAGE)):
            if archive.is_file():
                import_image(self.containerd_socket, archive)
        self._start_kubelet()
        self._start_kube_proxy()
        kubeconfig = str(self.plane.kubeconfig)
        self.components["kube-controller-manager"] = spawn(
            [
                str(self.node_bin / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--service-account-private-key-file={self.plane.pki.sa_private}",
                f"--root-ca-file={self.plane.pki.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                "--v=1",
            ],
            self.workdir / "kube-controller-manager.log",
        )
        self.components["kube-scheduler"] = spawn(
            [
                str(self.node_bin / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                "--v=1",
            ],
            self.workdir / "kube-scheduler.log",
        )
        self._start_cluster_dns()

    def _start_cluster_dns(self) -> None:
        """CoreDNS as a node process answering the cluster's zones, behind kube-dns's ClusterIP
        (an EndpointSlice to the node's address, like a hostNetwork DNS pod's)."""
        corefile = self.workdir / "Corefile"
        corefile.write_text(
            f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {self.layout.node_ip}
    errors
    health 127.0.0.1:8080
    ready 127.0.0.1:8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.plane.kubeconfig}
        pods insecure
    }}
    cache 30
    loadbalance
}}
"""
        )
        self.components["coredns"] = spawn(
            [str(gotools.build(gotools.TOOLS["coredns"])), f"-conf={corefile}"], self.workdir / "coredns.log"
        )
        ports = [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        ]
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {"clusterIP": CLUSTER_DNS_IP, "ports": [{**port, "targetPort": 53} for port in ports]},
        }
        endpoints = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-node",
                "namespace": "kube-system",
                "labels": {"kubernetes.io/service-name": "kube-dns"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [self.layout.node_ip], "conditions": {"ready": True}}],
            "ports": ports,
        }
        self.plane.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [service, endpoints]}),
        )
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(COREDNS_READY, timeout=2) as response:
                if response.status == 200:
                    return
            if self.components["coredns"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "CoreDNS did not get ready:\n" + (self.workdir / "coredns.log").read_text()[-3000:]
                )
            time.sleep(0.2)

    def _private_fixed_paths(self) -> None:
        """Bind-mount a directory of the node's over each fixed path (in the node's private
        mount namespace only: the host never sees what the components write there)."""
        for path in FIXED_PATHS:
            source = self.workdir / "fixed" / str(path).strip("/").replace("/", "_")
            source.mkdir(parents=True, exist_ok=True)
            path.mkdir(parents=True, exist_ok=True)
            _run(["mount", "--bind", str(source), str(path)])

    def _start_containerd(self) -> None:
        root = self.workdir / "containerd"
        cni_conf = self.workdir / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-mixpeek-node.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "mixpeek-node",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(self.workdir / "cni" / "ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=2,
            )
        )
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{root / "containerd.sock.ttrpc"}"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"
[{cri}]
  sandbox_image = "{image.PAUSE_IMAGE}"
  # runc cannot write oom_score_adj on these machines (no CAP_SYS_RESOURCE in the bounding set).
  restrict_oom_score_adj = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{root / "runc"}"
  [{cri}.cni]
    bin_dir = "{self.cni_bin}"
    conf_dir = "{cni_conf}"
"""
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.toml").write_text(config)
        self.components["containerd"] = spawn(
            ["containerd", f"--config={root / 'config.toml'}", "--log-level=warn"],
            self.workdir / "containerd.log",
        )
        deadline = time.monotonic() + 30
        while not self.containerd_socket.exists():
            if self.components["containerd"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "containerd did not start:\n" + (self.workdir / "containerd.log").read_text()[-3000:]
                )
            time.sleep(0.1)

    def _start_kubelet(self) -> None:
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.layout.node_ip,
            "readOnlyPort": 0,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.plane.pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            # cgroup v1 hosts (like these machines) and no systemd as init.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.layout.cgroup}",
            "failSwapOn": False,
            "podLogsDir": str(self.workdir / "pod-logs"),
            "resolvConf": "",
            # Pods resolve Services by name (ClusterFirst): CoreDNS behind kube-dns.
            "clusterDNS": [CLUSTER_DNS_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            # A test node on a shared disk: never evict for disk or memory pressure.
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "serializeImagePulls": False,
            "syncFrequency": "10s",
        }
        path = self.workdir / "kubelet-config.json"
        path.write_text(json.dumps(config, indent=2))
        self.components["kubelet"] = spawn(
            [
                str(self.node_bin / "kubelet"),
                f"--config={path}",
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--root-dir={self.workdir / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.layout.node_ip}",
                "--v=1",
            ],
            self.workdir / "kubelet.log",
        )

    def _start_kube_proxy(self) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.plane.kubeconfig)},
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "hostnameOverride": NODE_NAME,
            "bindAddress": self.layout.node_ip,
            "metricsBindAddress": "127.0.0.1:10249",
            "healthzBindAddress": "127.0.0.1:10256",
            # 0: leave the conntrack table size and timeouts alone (host-wide sysctls).
            "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            # Masquerade Service traffic too: a reply from a pod on the same bridge then goes
            # back through the node's iptables even where br_netfilter is unavailable.
            "iptables": {"localhostNodePorts": False, "masqueradeAll": True},
        }
        path = self.workdir / "kube-proxy-config.json"
        path.write_text(json.dumps(config, indent=2))
        self.components["kube-proxy"] = spawn(
            [str(self.node_bin / "kube-proxy"), f"--config={path}", "--v=1"], self.workdir / "kube-proxy.log"
        )

    def failed(self) -> str | None:
        for name, proc in {**self.plane.processes, **self.components}.items():
            if proc.poll() is not None:
                log = (self.workdir / f"{name}.log").read_text(errors="replace")[-4000:]
                return f"{name} exited with code {proc.returncode}:\n{log}"
        return None

    def stop(self) -> None:
        # The kubelet first, so it restarts nothing; then every pod process (by cgroup);
        # then containerd and its shims; the control plane last.
        for name in ("kubelet", "kube-proxy", "coredns", "kube-scheduler", "kube-controller-manager"):
            proc = self.components.pop(name, None)
            if proc is not None:
                terminate(proc)
        kill_pod_processes(self.layout)
        containerd = self.components.pop("containerd", None)
        if containerd is not None:
            terminate(containerd)
        self.plane.stop()
        # containerd's shims (re-parented, so not our children) are the only processes left.
        kill_node_processes(self.layout)


def pod_pids(layout: NodeLayout) -> set[int]:
    """Host PIDs of every process in the node's pods (containers and their sandboxes)."""
    return {
        int(line)
        for directory in _cgroup_dirs(layout)
        if directory.is_dir()
        for procs in directory.rglob("cgroup.procs")
        for line in procs.read_text().split()
    }


def kill_pod_processes(layout: NodeLayout, timeout: float = 20.0) -> None:
    """SIGKILL every process in the node's pod cgroups until none is left."""
    deadline = time.monotonic() + timeout
    while True:
        pids = pod_pids(layout)
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def _inner(workdir: Path) -> int:
    """Runs inside the node's network and mount namespaces until SIGTERM."""
    layout = NodeLayout.load(workdir)
    assert layout is not None
    stop = supervisor.StopRequest()
    node = NodeProcesses(layout)
    try:
        node.start()
        (workdir / "ready").write_text(node.plane.server)
        stop.wait(lambda: node.failed() is None)
        if not stop.requested and (failure := node.failed()):
            print(failure, file=sys.stderr)
    finally:
        node.stop()
        (workdir / "ready").unlink(missing_ok=True)
    return 0


# --- host side ---------------------------------------------------------------------------------


def _serve(workdir: Path) -> int:
    """Host-side supervisor: namespaces and cgroups, the inner node, then a full clean-up."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "ready").unlink(missing_ok=True)
    layout = plan(workdir)
    layout.save()
    stop = supervisor.StopRequest()
    try:
        create_network(layout)
        create_cgroups(layout)
        inner = spawn(
            [
                "nsenter",
                f"--net={NETNS_DIR / layout.netns}",
                "unshare",
                "--mount",
                "--propagation=private",
                *supervisor.module_command("hack.localnode", "inner", "--dir", str(workdir)),
            ],
            workdir / "node.log",
            cwd=REPO_ROOT,
        )
        stop.wait(lambda: inner.poll() is None)
        if inner.poll() is None:
            os.kill(inner.pid, signal.SIGTERM)
        try:
            inner.wait(timeout=90)
        except subprocess.TimeoutExpired:
            terminate(inner)
    finally:
        clean_up(layout)
    return 0


def _netns_inode(layout: NodeLayout) -> int | None:
    try:
        return os.stat(NETNS_DIR / layout.netns).st_ino
    except FileNotFoundError:
        return None


def kill_node_processes(layout: NodeLayout, inode: int | None = None) -> None:
    """SIGKILL every process inside the node's network namespace (the components, containerd's
    shims), never this process or its ancestors."""
    inode = inode if inode is not None else _netns_inode(layout)
    if inode is None:
        return
    me = psutil.Process()
    spared = {me.pid, *(parent.pid for parent in me.parents())}
    for proc in psutil.process_iter():
        try:
            if proc.pid not in spared and os.stat(f"/proc/{proc.pid}/ns/net").st_ino == inode:
                proc.kill()
        except (psutil.Error, OSError):
            continue


def _other_nodes(layout: NodeLayout) -> list[str]:
    """Network namespaces of other local nodes running on this machine."""
    if not NETNS_DIR.is_dir():
        return []
    return [n for n in os.listdir(NETNS_DIR) if n.startswith("mixpeek-node-") and n != layout.netns]


def clean_up(layout: NodeLayout) -> None:
    """Remove everything the node created on the host; safe to run twice or after a crash."""
    kill_pod_processes(layout)
    kill_node_processes(layout)
    for directory in _cgroup_dirs(layout):
        if directory.is_dir():
            for child in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                directory.rmdir()
    _ip("netns", "del", layout.netns, check=False)
    _ip("link", "del", layout.host_if, check=False)
    # The empty mount points the node created. rmdir, never a recursive delete: nothing of
    # anyone else's can go. Another running node may still mount them: then they stay.
    if not _other_nodes(layout):
        for path in map(Path, reversed(layout.absent_before)):
            if path == NETNS_DIR:
                _release_netns_dir()
            with contextlib.suppress(OSError):
                path.rmdir()
    workdir = Path(layout.workdir)
    for state in ("containerd", "kubelet", "cni", "pod-logs", "etcd-data", "fixed"):
        shutil.rmtree(workdir / state, ignore_errors=True)
    if IP_FORWARD.read_text().strip() != layout.ip_forward_before:
        IP_FORWARD.write_text(layout.ip_forward_before)


def is_mount_point(path: Path) -> bool:
    """Whether something is mounted on `path` in this mount namespace (os.path.ismount misses a
    bind mount of a directory on itself: same device)."""
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    return any(line.split()[4] == str(path) for line in mounts)


def _release_netns_dir() -> None:
    """Unmount /run/netns when it holds no namespace. `ip netns add` (our create_network) made
    it a bind mount on itself, which `ip netns del` leaves: on a machine that had no
    /run/netns, the node created it and removes it (an empty directory of no other user)."""
    while is_mount_point(NETNS_DIR) and not os.listdir(NETNS_DIR):
        if subprocess.run(["umount", str(NETNS_DIR)], capture_output=True, check=False).returncode:
            return


def leftovers(layout: NodeLayout) -> list[str]:
    """Everything of the node still present on the host (empty after a clean tear-down)."""
    me = psutil.Process()
    spared = {me.pid, *(parent.pid for parent in me.parents())}
    found = [
        f"process {p.info['cmdline']}" for p in leftover_processes(layout.workdir) if p.pid not in spared
    ]
    if (NETNS_DIR / layout.netns).exists():
        found.append(f"network namespace {layout.netns}")
    if _ip("link", "show", layout.host_if, check=False).returncode == 0:
        found.append(f"interface {layout.host_if}")
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {line.split()[4]}" for line in mounts.splitlines() if layout.workdir in line]
    found += [f"pod process {pid}" for pid in pod_pids(layout)]
    found += [f"cgroup {d}" for d in _cgroup_dirs(layout) if d.exists()]
    if not _other_nodes(layout):
        found += [f"path {path}" for path in layout.absent_before if Path(path).exists()]
    if NETNS_DIR.is_dir():
        found += [
            f"netns file {name}"
            for name in set(os.listdir(NETNS_DIR)) - set(layout.netns_files_before)
            if not name.startswith("mixpeek-node-")
        ]
    if IP_FORWARD.read_text().strip() != layout.ip_forward_before:
        found.append("net.ipv4.ip_forward changed")
    host_chains = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout
    found += [f"host iptables {line}" for line in host_chains.splitlines() if line.startswith(":KUBE-")]
    return found


def build_all() -> None:
    """Every binary the node runs (built once, cached per version)."""
    k8sbuild.build_kubernetes()
    k8sbuild.build_node()
    k8sbuild.build_cni()
    gotools.build(gotools.TOOLS["coredns"])
    image.build_pause_image()


def running_containerd_socket(workdir: Path = DEFAULT_DIR) -> Path | None:
    layout = NodeLayout.load(workdir)
    if layout is None or not (workdir / "ready").exists():
        return None
    return workdir / "containerd" / "containerd.sock"


def import_image(containerd_socket: Path, archive: Path) -> None:
    """Make an image archive available to the node's CRI (namespace k8s.io)."""
    _run(["ctr", f"--address={containerd_socket}", "--namespace=k8s.io", "images", "import", str(archive)])


def load_image(workdir: Path, ref: str = image.IMAGE) -> int:
    """`make image`: build the operator image, import it into the node if one runs from `workdir`
    (a node started later imports the latest archive itself); the last line printed is its ref."""
    if why := image.requirements_missing():
        print(why, file=sys.stderr)
        return 1
    archive = image.build_operator_image(ref)
    print(f"image archive: {archive}", file=sys.stderr)
    socket = running_containerd_socket(workdir)
    if socket is not None and socket.exists():
        import_image(socket, archive)
        print(f"imported into the node's containerd ({socket})", file=sys.stderr)
    print(ref)
    return 0


@dataclass(frozen=True)
class RunningNode:
    workdir: Path
    layout: NodeLayout
    supervisor: subprocess.Popen[bytes]

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"


def start(workdir: Path, timeout: float = 180.0, *, detach: bool = False) -> RunningNode:
    """Start the supervisor in the background; return once the node is Ready. Detached, it
    outlives this process (`make node`); otherwise it dies with it, like every test child."""
    workdir.mkdir(parents=True, exist_ok=True)
    build_all()
    command = supervisor.module_command("hack.localnode", "serve", "--dir", str(workdir))
    proc = supervisor.launch(command, workdir, detach=detach)
    deadline = time.monotonic() + timeout
    try:
        if not supervisor.wait_ready(workdir, proc, deadline):
            raise RuntimeError("local node failed to start:\n" + _logs(workdir))
        layout = NodeLayout.load(workdir)
        assert layout is not None
        node = RunningNode(workdir, layout, proc)
        kubectl = str(k8sbuild.kube_bin_dir() / "kubectl")
        while subprocess.run(
            [kubectl, f"--kubeconfig={node.kubeconfig}", "get", f"node/{NODE_NAME}"],
            capture_output=True,
            check=False,
        ).returncode:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the node did not register:\n" + _logs(workdir))
            time.sleep(0.5)
        remaining = max(deadline - time.monotonic(), 10)
        _run(
            [
                kubectl,
                f"--kubeconfig={node.kubeconfig}",
                "wait",
                "--for=condition=Ready",
                f"--timeout={remaining:.0f}s",
                f"node/{NODE_NAME}",
            ]
        )
        return node
    except BaseException:
        stop(workdir, proc)
        raise


def _logs(workdir: Path) -> str:
    parts = []
    for name in ("supervisor", "node", "kubelet", "containerd", "kube-apiserver"):
        path = workdir / f"{name}.log"
        if path.exists():
            parts.append(f"--- {name}.log\n" + path.read_text(errors="replace")[-2500:])
    return "\n".join(parts)


def stop(workdir: Path, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Stop the node (SIGTERM to its supervisor, which cleans up) and clean up again."""
    supervisor.stop(workdir, proc, timeout=120)
    layout = NodeLayout.load(workdir)
    if layout is not None:
        clean_up(layout)


@contextlib.contextmanager
def running_node(workdir: Path) -> Iterator[RunningNode]:
    node = start(workdir)
    try:
        yield node
    finally:
        stop(workdir, node.supervisor)
        assert_no_leftovers(str(workdir))


def _up(workdir: Path) -> int:
    if supervisor.is_up(workdir):
        print(workdir / "kubeconfig")
        return 0
    began = time.monotonic()
    node = start(workdir, detach=True)
    print(f"node Ready in {time.monotonic() - began:.1f}s", file=sys.stderr)
    print(node.kubeconfig)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "serve", "inner", "build", "load-image"])
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="working directory (default .local/node)"
    )
    args = parser.parse_args(argv)
    workdir: Path = args.dir.resolve()
    if args.command in ("up", "serve", "inner") and (why := requirements_missing()):
        print(why, file=sys.stderr)
        return 1
    if args.command == "build":
        build_all()
        return 0
    if args.command == "load-image":
        return load_image(workdir)
    if args.command == "up":
        return _up(workdir)
    if args.command == "down":
        stop(workdir)
        layout = NodeLayout.load(workdir)
        if layout is not None and (left := leftovers(layout)):
            print(f"left behind: {left}", file=sys.stderr)
            return 1
        print("local node stopped")
        return 0
    if args.command == "inner":
        return _inner(workdir)
    return _serve(workdir)


if __name__ == "__main__":
    sys.exit(main())

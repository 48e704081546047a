"""A whole single Kubernetes node from ../shared/envtest (node/start-node.sh: etcd, API server,
controller-manager, scheduler, containerd, bridge CNI, kubelet, kube-proxy) with meshwright's
proxy image (images/proxy/build.sh) imported into its containerd.

The node takes fixed ports and host network settings (the kbr0 bridge, 10.244.0.1), so one runs
at a time on a machine: start_node holds /tmp/mw-k8s-node.lock until stop_node. It is stopped
by the scripts' PID files (stop-node.sh undoes every host change). What is missing (envtest,
Debian's containerd, mmdebstrap) fails the test with what to install.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import pytest

from tests.kubernetes.api_server import ASSETS, ENVTEST, ROOT, ApiServer, _env

LOCK = "/tmp/mw-k8s-node.lock"
NODE_ADDRESS, POD_CIDR, BRIDGE = "10.244.0.1", "10.244.0.0/24", "kbr0"  # the host on the pods' bridge: where pods reach the control plane and VMs
# envtest's pause and tools images, built once (gcc, busybox-static) and kept between runs.
NODE_IMAGES = os.path.join(ROOT, ".cache", "kube-node-images")
PROXY_IMAGES = os.path.join(ROOT, ".cache", "proxy-image")
PROXY_IMAGE = os.environ.get("MESHWRIGHT_PROXY_IMAGE", "local.test/meshwright-proxy:test")
NEEDED = {"containerd": "containerd", "runc": "runc", "ctr": "containerd", "mmdebstrap": "mmdebstrap", "conntrack": "conntrack",
          "gcc": "gcc", "busybox": "busybox-static", "iptables": "iptables", "etcd": "etcd-server", "xz": "xz-utils"}


@dataclass
class Node:
    api: ApiServer
    workdir: str
    lock: object
    proxy_image: str
    log: str = ""


def _missing() -> str | None:
    if not os.path.isfile(os.path.join(ENVTEST, "node", "start-node.sh")):
        return f"no Kubernetes envtest node at {ENVTEST}/node: set MESHWRIGHT_ENVTEST to the folder of ../shared/envtest"
    absent = sorted({package for command, package in NEEDED.items() if shutil.which(command) is None})
    if absent or not os.path.isdir("/usr/lib/cni"):
        return f"the whole node needs Debian's {' '.join(absent + ['containernetworking-plugins'])} (.ci/run installs them)"
    if os.geteuid() != 0:
        return "the whole node needs root (containerd, the kubelet, the pods' network)"
    return None


def build_proxy_image() -> str:
    """The proxy image's tar (images/proxy/build.sh; the same recipe is not built again)."""
    built = subprocess.run([os.path.join(ROOT, "images", "proxy", "build.sh"), PROXY_IMAGES], capture_output=True, text=True,
                           env={**os.environ, "MESHWRIGHT_PROXY_IMAGE": PROXY_IMAGE, "VENV": os.path.dirname(os.path.dirname(sys.executable))},
                           timeout=600, check=False)
    if built.returncode != 0:
        pytest.fail(f"images/proxy/build.sh failed:\n{built.stderr[-4000:]}", pytrace=False)
    return built.stdout.split()[0]


def start_node() -> Node:
    problem = _missing()
    if problem:
        pytest.fail(problem, pytrace=False)
    lock = open(LOCK, "w")  # pylint: disable=consider-using-with  # held until stop_node
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        began = time.monotonic()
        tar = build_proxy_image()
        built = time.monotonic() - began
        bin_dir = subprocess.run([os.path.join(ENVTEST, "setup.sh"), ASSETS], capture_output=True, text=True, check=True).stdout.strip()
        workdir = tempfile.mkdtemp(prefix="mw-kbnode-")
        started = subprocess.run([os.path.join(ENVTEST, "node", "start-node.sh")], capture_output=True, text=True, timeout=300, check=False,
                                 env={**os.environ, "BIN": bin_dir, "WORKDIR": workdir, "IMAGES": NODE_IMAGES})
    except BaseException:
        lock.close()
        raise
    env = _env(os.path.join(workdir, "env")) if started.returncode == 0 else {}
    node = Node(ApiServer(workdir, env.get("KUBECONFIG", ""), env.get("KUBE_SERVER", ""), env.get("KUBE_CA", ""),
                          env.get("KUBE_TOKEN", ""), bin_dir), workdir, lock, PROXY_IMAGE, started.stdout)
    if started.returncode != 0:
        stop_node(node)
        pytest.fail(f"the envtest node did not start:\n{started.stdout[-2000:]}\n{started.stderr[-3000:]}", pytrace=False)
    try:
        _prepare(env, tar)
    except BaseException:
        stop_node(node)
        raise
    print(f"proxy image {built:.0f} s, node started and the image imported {time.monotonic() - began - built:.0f} s")
    return node


def _prepare(env: dict, tar: str) -> None:
    # Pods reach each other across the bridge even where Docker set the FORWARD policy to DROP
    # (bridged packets go through iptables): a rule in start-node.sh's own chain, which
    # stop-node.sh removes with the chain.
    subprocess.run(["iptables", "-A", "KBNODE-EGRESS", "-s", POD_CIDR, "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"], check=True,
                   capture_output=True)
    subprocess.run(["ctr", "--address", env["CONTAINERD_ADDRESS"], "-n", "k8s.io", "images", "import", tar],
                   capture_output=True, text=True, check=True, timeout=300)


def stop_node(node: Node) -> None:
    try:
        subprocess.run([os.path.join(ENVTEST, "node", "stop-node.sh")], env={**os.environ, "BIN": node.api.bin_dir, "WORKDIR": node.workdir},
                       capture_output=True, check=False, timeout=180)
    finally:
        node.lock.close()

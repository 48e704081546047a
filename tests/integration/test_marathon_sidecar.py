"""A VM calls a Marathon task through the task's injected sidecar, with mTLS, and the
AuthorizationPolicy applies: real Envoy on both sides, the control plane following the
Marathon double (tests/fakes/marathon.py).

The app `/shop/payment` is injected with `meshwright marathon-inject` and deployed to the
double as the pod injection makes. The double's agent runs each container of an instance as
a local process, as a Mesos agent would in host networking: the app (an HTTP backend on the
host port Marathon allocated its endpoint) and the sidecar container's own `exec` shell,
verbatim, under `sh -c` with the environment Mesos gives a task (MESOS_TASK_ID, MESOS_SANDBOX,
ENDPOINT_<NAME> for each allocated host port). So the sidecar is `meshwright marathon-sidecar`
as it runs on an agent: it gets its first certificate by its task id (the control plane asks
Marathon), its bootstrap from the control plane, and runs Envoy on ADS.

Two VM sidecars call it: `client` (allowed by the policy) gets the app's answer, `intruder`
gets 403 from the task's sidecar, and plain HTTP straight to the task's inbound port is
refused (STRICT mTLS). One lab for the module: it takes seconds to start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from cryptography import x509

from meshwright.agent import Agent, write_secret_files
from meshwright.compile.xds_bootstrap import XdsServer
from meshwright.deliver.files import serialize
from meshwright.deliver.marathon_inject import SidecarSettings, inject
from meshwright.pki import ca, csr, workload
from meshwright.pki.ca import certificate_pem
from meshwright.pki.spiffe import control_plane_spiffe_id, spiffe_id
from meshwright.pki.store import write_workload_certificates
from meshwright.serve import server as xds_server
from meshwright.serve.bootstrap import xds_bootstrap
from meshwright.serve.marathon import MarathonRegistry
from meshwright.serve.source import load_valid
from tests.fakes.marathon import MarathonDouble
from tests.harness import Backend, Envoy, free_port, port_is_free, request
from tests.integration.test_mtls import distinct_offset

TRUST_DOMAIN = "cluster.local"
HOST = "payment.shop.svc.cluster.local"
APP = {"id": "/shop/payment", "cmd": "./payment", "instances": 1,
       "portDefinitions": [{"port": 0, "name": "http", "labels": {"meshwright.io/port": "80"}}]}
MESH = """\
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  certificates: {{}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: default, annotations: {{meshwright.io/port-offset: "{client_offset}"}}}}
spec: {{address: 127.0.0.1, labels: {{app: client}}, serviceAccount: client}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: intruder, namespace: default, annotations: {{meshwright.io/port-offset: "{intruder_offset}"}}}}
spec: {{address: 127.0.0.1, labels: {{app: intruder}}, serviceAccount: intruder}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: shop}}
spec:
  mtls: {{mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: payment, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: payment}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/default/sa/client]}}}}]
"""


def consecutive_free_ports() -> int:
    """A port P with P + 1 free too (the CSR service's mTLS port and its join port beside it,
    as `serve` places them by default and the injected sidecar expects)."""
    for _ in range(100):
        port = free_port()
        if port < 65535 and port_is_free(port + 1):
            return port
    raise RuntimeError("no two consecutive free ports")


class SidecarLab:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen] = []
        self.backends: list[Backend] = []
        self.envoys: list[Envoy] = []
        self.root = ca.make_root(TRUST_DOMAIN)
        site = ca.make_intermediate(self.root, "site-a", trust_domains=[TRUST_DOMAIN])
        self.roots_path = tmp_path / "root-cert.pem"
        self.roots_path.write_bytes(certificate_pem(self.root.certificate))
        plane_key = csr.make_private_key()
        plane_id = control_plane_spiffe_id(TRUST_DOMAIN)
        plane_chain = workload.sign_csr(csr.make_csr(plane_key, plane_id), plane_id, site)
        taken: set[int] = set()
        self.offsets = {"client": distinct_offset(taken), "intruder": distinct_offset(taken)}
        mesh_dir = tmp_path / "mesh"
        mesh_dir.mkdir()
        (mesh_dir / "mesh.yaml").write_text(MESH.format(client_offset=self.offsets["client"], intruder_offset=self.offsets["intruder"]))
        mesh, problems = load_valid([str(mesh_dir)])
        assert problems == []
        self.double = MarathonDouble(heartbeat_seconds=0.5)
        self.double.cluster.launcher = self.launch
        self.registry = MarathonRegistry([self.double.url], "marathon/test", stall_seconds=5)
        csr_port = consecutive_free_ports()
        self.running = xds_server.start(mesh, [str(mesh_dir)], ("127.0.0.1", free_port()),
                                        xds_server.ServerTls(plane_chain, plane_key, self.roots_path.read_bytes()),
                                        csr=xds_server.CsrSettings(site, ("127.0.0.1", csr_port), ("127.0.0.1", csr_port + 1)),
                                        registries=[self.registry])
        for name in ("client", "intruder"):
            self.start_vm_sidecar(name, site)
        settings = SidecarSettings(f"127.0.0.1:{self.running.grpc_port}", f"127.0.0.1:{csr_port}", ca=str(self.roots_path))
        self.pod = inject(APP, settings)
        self.double.cluster.put_pod(self.pod, force=False)

    def start_vm_sidecar(self, name: str, site) -> None:
        """A VM's sidecar on ADS over mTLS, its certificate signed as on its host."""
        certs_dir = self.tmp_path / name / "certs"
        key = csr.make_private_key()
        identity = spiffe_id(TRUST_DOMAIN, "default", name)
        write_workload_certificates(str(certs_dir), key, workload.sign_csr(csr.make_csr(key, identity), identity, site), self.roots_path.read_bytes())
        write_secret_files(str(certs_dir))  # as the agent does: the xds-grpc cluster's SDS files
        config_dir = self.tmp_path / name / "config"
        config_dir.mkdir()
        bootstrap = xds_bootstrap(self.running.plane.estate.mesh, f"{name}.default",
                                  XdsServer((("127.0.0.1", self.running.grpc_port),), str(certs_dir)))
        (config_dir / "bootstrap.yaml").write_text(serialize(bootstrap, "yaml"))
        self.envoys.append(Envoy(str(config_dir), 15000 + self.offsets[name]))

    def launch(self, kind: str, pod: dict, instance: dict):
        """The double's agent: each container of the instance as a local process (host networking)."""
        allocated = {e["name"]: e["allocatedHostPort"] for c in instance["containers"] for e in c["endpoints"] if "allocatedHostPort" in e}
        sandbox = self.tmp_path / instance["id"]
        sandbox.mkdir()
        for container, status in zip(pod["containers"], instance["containers"]):
            if container["name"] != "meshwright-sidecar":
                self.backends.append(Backend("payment", instance["id"], port=allocated[container["endpoints"][0]["name"]]))
                continue
            env = {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"], "MESOS_TASK_ID": status["containerId"],
                   "MESOS_SANDBOX": str(sandbox), **{f"ENDPOINT_{n.upper().replace('-', '_')}": str(p) for n, p in allocated.items()}}
            log = open(sandbox / "sidecar.log", "w")
            self.processes.append(subprocess.Popen(["sh", "-c", container["exec"]["command"]["shell"]], env=env, stdout=log,
                                                   stderr=subprocess.STDOUT, start_new_session=True))
        return lambda: None

    def instance(self) -> dict:
        [instance] = self.double.cluster.instances["/shop/payment"]
        return instance

    def allocated(self, endpoint: str) -> int:
        return next(e["allocatedHostPort"] for c in self.instance()["containers"] for e in c["endpoints"] if e["name"] == endpoint)

    def sidecar_log(self) -> str:
        path = self.tmp_path / self.instance()["id"] / "sidecar.log"
        return path.read_text() if path.exists() else ""

    def call(self, name: str) -> tuple[int, dict]:
        status, body, dummy = request(15001 + self.offsets[name], "/pay", host=HOST, timeout=5)
        return status, body

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for envoy in self.envoys:
            envoy.stop()
        self.running.stop()
        self.double.stop()
        for backend in self.backends:
            backend.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = SidecarLab(tmp_path_factory.mktemp("marathon-sidecar"))
    yield lab
    lab.close()


def wait_for_answer(lab: SidecarLab, timeout: float = 60.0) -> tuple[int, dict]:
    """The client's first answer from the task (its sidecar needs its certificate and config first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = lab.call("client")
            if status == 200:
                return status, body
        except OSError:
            status, body = None, None
        assert lab.processes[0].poll() is None, f"the sidecar exited:\n{lab.sidecar_log()}"
        assert time.monotonic() < deadline, f"no answer from the task in {timeout}s (last: {status} {body}):\n{lab.sidecar_log()}"
        time.sleep(0.3)


def test_a_vm_reaches_the_marathon_task_through_its_injected_sidecar(lab):
    status, body = wait_for_answer(lab)
    assert (status, body["service"], body["instance"], body["path"]) == (200, "payment", lab.instance()["id"], "/pay")
    log = lab.sidecar_log()
    assert "first certificate for spiffe://cluster.local/ns/shop/sa/payment" in log, log
    certs = lab.tmp_path / lab.instance()["id"] / "meshwright" / "certs" / "cert-chain.pem"
    leaf = x509.load_pem_x509_certificate(certs.read_bytes())
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == ["spiffe://cluster.local/ns/shop/sa/payment"]


def test_an_unauthorized_vm_gets_403_from_the_tasks_sidecar(lab):
    wait_for_answer(lab)
    status, dummy = lab.call("intruder")
    assert status == 403
    assert [r["path"] for b in lab.backends for r in b.requests].count("/pay") >= 1


def test_the_task_is_reached_only_with_mtls(lab):
    wait_for_answer(lab)
    inbound = lab.allocated("mesh-inbound")
    with pytest.raises(OSError):  # STRICT: a plaintext request gets no HTTP answer
        request(inbound, "/pay", host=HOST, timeout=3)
    workloads = [r for r in lab.running.plane.estate.mesh.of_kind("WorkloadEntry") if r.namespace == "shop"]
    assert [(w.spec["address"], w.spec["ports"]) for w in workloads] == [("127.0.0.1", {"http": inbound})]


def test_a_second_first_certificate_for_the_same_task_is_refused(lab):
    """The task got its certificate once; a caller replaying its task id gets nothing."""
    wait_for_answer(lab)
    [task_id] = [c["containerId"] for c in lab.instance()["containers"] if c["name"] == "meshwright-sidecar"]
    proxy = f"payment-{task_id.split('.instance-')[1].split('.')[0]}.shop"
    agent = Agent([("127.0.0.1", lab.running.csr_port)], [("127.0.0.1", lab.running.join_port)], proxy,
                  str(lab.tmp_path / "replay"), lab.roots_path.read_bytes(), marathon_task_id=task_id,
                  identity="spiffe://cluster.local/ns/shop/sa/payment")
    with pytest.raises(grpc.RpcError) as refused:
        agent.request_certificate(None)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"task {task_id} already has its first certificate" in refused.value.details()

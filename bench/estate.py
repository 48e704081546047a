"""The estate of issue #11, as the mesh config folder a user writes: N services on VMs.

Every service is a ServiceEntry (selecting its workloads by label) with 3 WorkloadEntries
(3 VM proxies, versions v1, v1, v2), a DestinationRule with subsets v1 and v2, and one
VirtualService per ten services (a header match and a 90/10 split). Every other proxy (by
its number in the estate) carries the label `scope: scoped` and a Sidecar of its namespace
scopes it to 10 services spread over the mesh; the other half sees everything. An ingress
gateway (a standalone proxy, `ingress.istio-system`) routes a path per gateway-exposed
service. mTLS is on: the MeshConfig has certificates, and a mesh-wide PeerAuthentication is
STRICT. Same N, byte-identical files: one for the mesh-wide resources, one for the Sidecars,
then per 1,000 services one file of services and one of workloads.

    .venv/bin/python bench/estate.py N OUTDIR     (prints the files, documents and bytes)

Proxies are named `svc-00042-1.ns-2` (WorkloadEntry name.namespace) and `ingress.istio-system`.
"""

from __future__ import annotations

import os
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compile import NAMESPACES, fqdn, service_name  # noqa: E402  the names bench/compile.py uses

WORKLOADS_PER_SERVICE = 3
WORKLOAD_VERSIONS = ("v1", "v1", "v2")
SCOPED_SERVICES = 10
SERVICES_PER_FILE = 1_000
GATEWAY_ROUTES = 10
GATEWAY = "ingress.istio-system"
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def document(kind: str, name: str, namespace: str, spec: dict, api_version: str = "networking.istio.io/v1") -> dict:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def spread(services: int, count: int) -> list[int]:
    """count service indexes spread evenly over the estate and its namespaces (all of them when it is smaller)."""
    step = max(services // count, 1)
    # One index in each block of step services, shifted by k within its block so that a step
    # that is a multiple of the namespaces still lands in different namespaces.
    return [k * step + k % step for k in range(min(count, services))]


def workload_name(index: int, replica: int) -> str:
    return f"{service_name(index)[0]}-{replica + 1}"


def is_scoped(index: int, replica: int) -> bool:
    """Every other proxy of the estate, counted across services: half of them are scoped."""
    return (index * WORKLOADS_PER_SERVICE + replica) % 2 == 0


def workload_address(index: int, replica: int) -> str:
    number = index * WORKLOADS_PER_SERVICE + replica + 1
    return f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"


def mesh_documents(services: int) -> list[dict]:
    """MeshConfig (certificates, STRICT), the mesh-wide PeerAuthentication, the gateway and its routes."""
    mesh = document("MeshConfig", "mesh", "istio-system", {"trustDomain": "cluster.local", "certificates": {}, "defaultMtlsMode": "STRICT"},
                    "meshwright.io/v1alpha1")
    strict = document("PeerAuthentication", "default", "istio-system", {"mtls": {"mode": "STRICT"}}, "security.istio.io/v1")
    gateway = document("Gateway", "ingress", "istio-system", {
        "selector": {"istio": "ingressgateway"},
        "servers": [{"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
    })
    routes = [{"name": service_name(i)[0], "match": [{"uri": {"prefix": f"/{service_name(i)[0]}"}}], "route": [{"destination": {"host": fqdn(i)}}]}
              for i in spread(services, GATEWAY_ROUTES)]
    ingress = document("VirtualService", "ingress", "istio-system", {"hosts": ["*"], "gateways": ["ingress"], "http": routes})
    return [mesh, strict, gateway, ingress]


def sidecar_documents(services: int) -> list[dict]:
    """One Sidecar per namespace: its `scope: scoped` proxies see 10 services (a different ten per namespace)."""
    sidecars = []
    for namespace_index in range(min(services, NAMESPACES)):
        namespace = f"ns-{namespace_index}"
        hosts = [f"{service_name(i)[1]}/{fqdn(i)}" for i in sorted((i + namespace_index) % services for i in spread(services, SCOPED_SERVICES))]
        sidecars.append(document("Sidecar", "scoped", namespace, {"workloadSelector": {"labels": {"scope": "scoped"}}, "egress": [{"hosts": hosts}]}))
    return sidecars


def service_documents(index: int) -> list[dict]:
    """The ServiceEntry, its DestinationRule and, for one service in ten, a VirtualService."""
    name, namespace = service_name(index)
    host = fqdn(index)
    entry = document("ServiceEntry", name, namespace, {
        "hosts": [host], "location": "MESH_INTERNAL", "resolution": "STATIC",
        "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}], "workloadSelector": {"labels": {"app": name}},
    })
    rule = document("DestinationRule", name, namespace, {
        "host": host,
        "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "30s"}},
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
    })
    if index % 10:
        return [entry, rule]
    routes = document("VirtualService", name, namespace, {"hosts": [host], "http": [
        {"match": [{"headers": {"end-user": {"exact": "tester"}}}], "route": [{"destination": {"host": host, "subset": "v2"}}]},
        {"route": [{"destination": {"host": host, "subset": "v1"}, "weight": 90}, {"destination": {"host": host, "subset": "v2"}, "weight": 10}],
         "timeout": "5s", "retries": {"attempts": 3, "perTryTimeout": "2s"}},
    ]})
    return [entry, rule, routes]


def workload_documents(index: int) -> list[dict]:
    """The service's 3 VM proxies, one address each, over two zones, traffic captured by iptables."""
    name, namespace = service_name(index)
    workloads = []
    for replica, version in enumerate(WORKLOAD_VERSIONS):
        labels = {"app": name, "version": version} | ({"scope": "scoped"} if is_scoped(index, replica) else {})
        workload = document("WorkloadEntry", workload_name(index, replica), namespace, {
            "address": workload_address(index, replica), "labels": labels, "ports": {"http": 8080},
            "locality": f"region-a/zone-{replica % 2}", "serviceAccount": name,
        })
        # Each VM has its own address, so iptables captures its traffic (mTLS STRICT needs a listener on 8080).
        workload["metadata"]["annotations"] = {"sidecar.istio.io/interceptionMode": "REDIRECT"}
        workloads.append(workload)
    return workloads


def estate_files(services: int) -> dict[str, list[dict]]:
    """file name -> documents, in the order they are written."""
    files = {"mesh.yaml": mesh_documents(services), "sidecars.yaml": sidecar_documents(services)}
    for first in range(0, services, SERVICES_PER_FILE):
        chunk = range(first, min(first + SERVICES_PER_FILE, services))
        part = first // SERVICES_PER_FILE
        files[f"services-{part:03d}.yaml"] = [doc for index in chunk for doc in service_documents(index)]
        files[f"workloads-{part:03d}.yaml"] = [doc for index in chunk for doc in workload_documents(index)]
    return files


def proxy_names(services: int) -> list[str]:
    """Every proxy of the estate: the 3 workloads of each service, then the gateway."""
    return [f"{workload_name(i, r)}.{service_name(i)[1]}" for i in range(services) for r in range(WORKLOADS_PER_SERVICE)] + [GATEWAY]


def write_estate(services: int, folder: str) -> tuple[int, int]:
    """Writes the estate's files into folder (made if missing); (documents, bytes) written."""
    os.makedirs(folder, exist_ok=True)
    documents = size = 0
    for name, docs in estate_files(services).items():
        text = yaml.dump_all(docs, Dumper=_DUMPER, sort_keys=False, width=1_000)
        with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
            handle.write(text)
        documents += len(docs)
        size += len(text.encode())
    return documents, size


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[0].isdigit() or int(args[0]) < 1:
        print("usage: estate.py N OUTDIR   (N services, at least 1)", file=sys.stderr)
        return 2
    services, folder = int(args[0]), args[1]
    documents, size = write_estate(services, folder)
    print(f"{folder}: {services:,} services, {len(proxy_names(services)):,} proxies, {documents:,} documents, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

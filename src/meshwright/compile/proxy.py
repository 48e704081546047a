"""Which proxies a mesh has, and what each one is: a sidecar beside a workload, or a gateway."""

from __future__ import annotations

from dataclasses import dataclass

from meshwright.mesh import Mesh
from meshwright.model.resource import Resource
from meshwright.registry.inventory import has_sidecar

PORT_OFFSET_ANNOTATION = "meshwright.io/port-offset"
# Istio's annotation for how a sidecar intercepts traffic: NONE (explicit listeners, the
# default on VMs) or REDIRECT (iptables nat rules send TCP to 15001 and 15006).
INTERCEPTION_ANNOTATION = "sidecar.istio.io/interceptionMode"
NONE, REDIRECT = "NONE", "REDIRECT"

# Istio's well-known proxy ports (before any per-proxy offset).
ADMIN_PORT = 15000
OUTBOUND_PORT = 15001
INBOUND_CAPTURE_PORT = 15006
HEALTH_PORT = 15021
STATS_PORT = 15090


class UnknownProxy(LookupError):
    pass


@dataclass(frozen=True)
class Proxy:
    name: str
    namespace: str
    kind: str  # "sidecar" or "gateway"
    address: str
    labels: tuple[tuple[str, str], ...]
    locality: str
    service_account: str
    port_offset: int
    gateways: tuple[str, ...] = ()  # "namespace/name" of the Gateways it serves
    interception: str = NONE  # REDIRECT: iptables capture (compile/capture.py)

    @property
    def captures(self) -> bool:
        return self.interception == REDIRECT

    @property
    def id(self) -> str:
        return f"{self.name}.{self.namespace}"

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def port(self, base: int) -> int:
        return base + self.port_offset


# The string values of a proxy's node metadata (compile/bootstrap.py), which EnvoyFilter's
# match.proxy.metadata compares, as Istio compares its proxies' metadata.
NODE_METADATA_STRINGS = ("NAMESPACE", "NAME", "SERVICE_ACCOUNT", "TRUST_DOMAIN")


def node_metadata(proxy: Proxy, trust_domain: str) -> dict:
    """The node metadata a proxy's bootstrap carries (Istio's keys)."""
    return {"NAMESPACE": proxy.namespace, "NAME": proxy.name, "LABELS": proxy.label_map, "SERVICE_ACCOUNT": proxy.service_account,
            "TRUST_DOMAIN": trust_domain}


def port_offset_of(resource: Resource) -> int:
    """The offset of the well-known ports, for proxies that share one machine (the demo)."""
    return int(resource.annotations.get(PORT_OFFSET_ANNOTATION, "0"))


def _gateways_by_workload(mesh: Mesh) -> dict[int, list[Resource]]:
    """id(WorkloadEntry) -> the Gateways whose selector picks it, in mesh order. A selector
    picks gateway workloads in any namespace, as Istio's does by default
    (PILOT_SCOPE_GATEWAY_TO_NAMESPACE=false): a Gateway in `bookinfo` selecting
    `istio: ingressgateway` is served by the ingress gateway in `istio-system`."""
    served: dict[int, list[Resource]] = {}
    for gateway in mesh.of_kind("Gateway"):
        selector = gateway.spec.get("selector") or {}
        for workload in mesh.selected_workloads_in_every_namespace(selector) if selector else ():
            if has_sidecar(workload):  # one without a proxy serves no Gateway
                served.setdefault(id(workload), []).append(gateway)
    return served


def list_proxies(mesh: Mesh) -> list[Proxy]:
    """Every proxy: one per WorkloadEntry with a sidecar, and one per Gateway that selects none."""
    return list(mesh.memo(("proxies",), lambda: _proxies(mesh)))


def workload_proxy(workload: Resource, gateways: tuple[str, ...] = ()) -> Proxy:
    """A WorkloadEntry's proxy; a gateway when Gateways (namespace/name) select it."""
    spec = workload.spec
    return Proxy(
        name=workload.name,
        namespace=workload.namespace,
        kind="gateway" if gateways else "sidecar",
        address=spec["address"],
        labels=tuple(sorted((spec.get("labels") or {}).items())),
        locality=spec.get("locality", ""),
        service_account=spec.get("serviceAccount", "default"),
        port_offset=port_offset_of(workload),
        gateways=gateways,
        interception=workload.annotations.get(INTERCEPTION_ANNOTATION, NONE),
    )


def _proxies(mesh: Mesh) -> list[Proxy]:
    """list_proxies, computed once per mesh (validation and compilation ask many times)."""
    gateways_of = _gateways_by_workload(mesh)
    proxies = []
    for workload in filter(has_sidecar, mesh.of_kind("WorkloadEntry")):
        proxies.append(workload_proxy(workload, tuple(f"{g.namespace}/{g.name}" for g in gateways_of.get(id(workload), ()))))
    serving = {id(gateway) for gateways in gateways_of.values() for gateway in gateways}
    for gateway in mesh.of_kind("Gateway"):
        if id(gateway) in serving:
            continue
        proxies.append(
            Proxy(
                name=gateway.name,
                namespace=gateway.namespace,
                kind="gateway",
                address="0.0.0.0",
                labels=tuple(sorted((gateway.spec.get("selector") or {}).items())),
                locality="",
                service_account=f"{gateway.name}-service-account",
                port_offset=port_offset_of(gateway),
                gateways=(f"{gateway.namespace}/{gateway.name}",),
            )
        )
    return sorted(proxies, key=lambda p: (p.namespace, p.name))


def find_proxy(mesh: Mesh, proxy_id: str) -> Proxy:
    by_id = mesh.memo(("proxies-by-id",), lambda: {proxy.id: proxy for proxy in list_proxies(mesh)})
    if proxy_id in by_id:
        return by_id[proxy_id]
    known = ", ".join(p.id for p in list_proxies(mesh)) or "none"
    raise UnknownProxy(f"no proxy named {proxy_id!r}: a proxy is a WorkloadEntry's or a Gateway's name.namespace (known: {known})")

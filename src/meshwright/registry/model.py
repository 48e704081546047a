"""The registry: services by hostname, each with ports and endpoints.

Adapters (inventory/ServiceEntry, Kubernetes, Marathon) fill it; the compiler reads it.
Everything here is immutable and kept in a stable order so compiled output is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HTTP_PROTOCOLS = ("HTTP", "HTTP2", "GRPC")
# TLS the sidecar does not terminate: routed by the SNI of the client's ClientHello.
TLS_PROTOCOLS = ("HTTPS", "TLS")


@dataclass(frozen=True)
class ServicePort:
    number: int
    name: str
    protocol: str = "TCP"
    target_port: int | None = None

    @property
    def is_http(self) -> bool:
        return self.protocol in HTTP_PROTOCOLS

    @property
    def is_tls(self) -> bool:
        return self.protocol in TLS_PROTOCOLS


@dataclass(frozen=True)
class Endpoint:
    address: str
    ports: tuple[tuple[str, int], ...] = ()  # (port name, number) pairs, sorted
    labels: tuple[tuple[str, str], ...] = ()  # sorted items
    locality: str = ""
    weight: int = 1
    service_account: str = ""
    workload: str = ""  # "name.namespace" of its WorkloadEntry, when it has one with a sidecar (its proxy)
    # False: the workload must not receive traffic now (registry/inventory.py NOT_READY): in
    # no load assignment, but still what its service is served by (ports, identities).
    ready: bool = True

    def port_for(self, port: ServicePort) -> int:
        """The port this endpoint serves a service port on (Istio's rules for WorkloadEntry)."""
        named = dict(self.ports).get(port.name)
        return named or port.target_port or port.number

    def matches(self, selector: dict[str, str]) -> bool:
        labels = dict(self.labels)
        return all(labels.get(key) == value for key, value in selector.items())


@dataclass(frozen=True)
class Service:
    hostname: str
    namespace: str
    ports: tuple[ServicePort, ...]
    resolution: str = "STATIC"  # NONE, STATIC, DNS, DNS_ROUND_ROBIN
    location: str = "MESH_INTERNAL"
    endpoints: tuple[Endpoint, ...] = ()
    source: str = ""  # the resource that defined it, "Kind/namespace/name"

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.number == number), None)


@dataclass
class Registry:
    services: dict[str, Service] = field(default_factory=dict)  # by hostname

    def add(self, service: Service) -> None:
        self.services[service.hostname] = service

    def get(self, hostname: str) -> Service | None:
        return self.services.get(hostname)

    def sorted(self) -> list[Service]:
        return [self.services[name] for name in sorted(self.services)]

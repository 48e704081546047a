"""Services and endpoints the mesh knows, whatever platform they come from."""

from meshwright.registry.model import Endpoint, Registry, Service, ServicePort

__all__ = ["Endpoint", "Registry", "Service", "ServicePort"]

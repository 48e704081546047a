"""Resources a registry publishes (Kubernetes, Marathon): made as the YAML loader makes them,
their source naming the registry and the object, so problems say where they came from."""

from __future__ import annotations

from meshwright.model.load import resource_from_document
from meshwright.model.resource import Resource


def origin(registry: str, kind: str, namespace: str, name: str) -> str:
    """The source of a resource a registry made from an object: "kubernetes/c1:Service/shop/cart"."""
    return f"{registry}:{kind}/{namespace}/{name}"


def registry_resource(registry: str, document: dict, made_from: str | None = None) -> Resource:
    """An Istio API document a registry made (apiVersion, kind, metadata, spec); its source is
    made_from (origin() of the object it came from) or else the document's own kind and name."""
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    source = made_from or origin(registry, str(document.get("kind", "")), str(metadata.get("namespace", "default")), str(metadata.get("name", "")))
    return resource_from_document(document, source)

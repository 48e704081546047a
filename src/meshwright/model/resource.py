"""One Istio API document as loaded: its kind, identity, spec and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Field paths are tuples of keys and list indexes, e.g. ("spec", "http", 0, "route").
Path = tuple


@dataclass(frozen=True)
class Source:
    file: str
    line: int


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    name: str
    namespace: str
    metadata: dict
    spec: dict
    source: Source
    # The whole document as written, and the line of every field path in it.
    document: dict = field(default_factory=dict, compare=False, repr=False)
    lines: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.get("labels") or {}

    @property
    def annotations(self) -> dict[str, str]:
        return self.metadata.get("annotations") or {}

    def line_of(self, path: Path) -> int:
        """The line of the deepest known prefix of path (the document's line if none)."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.source.line

    def get(self, path: Path, default: Any = None) -> Any:
        value: Any = {"spec": self.spec, "metadata": self.metadata}
        for part in path:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                return default
        return value


def exported_to(resource: Resource, namespace: str) -> bool:
    """Whether a resource with exportTo is visible to proxies in namespace: exportTo unset or
    "*" exports it everywhere, "." to its own namespace, a name to that namespace."""
    export = resource.spec.get("exportTo")
    if not export or "*" in export:
        return True
    return namespace in {resource.namespace if name == "." else name for name in export}

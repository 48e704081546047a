"""Label selection without scanning: the resources a workload selector picks in a namespace.

A selector matches a resource when every one of its labels is among the resource's (Istio's
and Kubernetes' rule; an empty selector matches everything). Checking every selector against
every resource grows with their product; LabelIndex files the resources once by namespace and
by each label, and a selector reads only those that carry its rarest label.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

Item = TypeVar("Item")


def namespace_of(resource) -> str:
    return resource.namespace


def workload_labels(workload) -> dict:
    """A WorkloadEntry's labels."""
    return workload.spec.get("labels") or {}


def labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


class LabelIndex(Generic[Item]):
    """Items (in the order given) by namespace and by (namespace, label key, label value)."""

    def __init__(self, items: list[Item], namespace_of: Callable[[Item], str], labels_of: Callable[[Item], dict]):
        self._labels_of = labels_of
        self._by_namespace: dict[str, list[Item]] = {}
        self._by_label: dict[tuple[str, str, str], list[Item]] = {}
        for item in items:
            namespace = namespace_of(item)
            self._by_namespace.setdefault(namespace, []).append(item)
            for key, value in labels_of(item).items():
                self._by_label.setdefault((namespace, key, value), []).append(item)

    def select(self, namespace: str, selector: dict) -> list[Item]:
        """The items of namespace whose labels selector matches, in the order given."""
        if not selector:
            return list(self._by_namespace.get(namespace, ()))
        candidates = min((self._by_label.get((namespace, key, value), ()) for key, value in selector.items()), key=len)
        return [item for item in candidates if labels_match(selector, self._labels_of(item))]

"""Label selection without scanning, both ways: the workloads a selector picks in a namespace
(LabelIndex), and the policies whose selectors pick a workload (SelectorIndex).

A selector matches a workload when every one of its labels is among the workload's (Istio's
and Kubernetes' rule; an empty selector matches everything). Checking every selector against
every workload grows with their product; the indexes file items once by namespace and label,
so that a lookup reads only the candidates that share a label with it.
"""

from __future__ import annotations

import bisect
import copy
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
        self._labels_of, self._namespace_of = labels_of, namespace_of
        self._by_namespace: dict[str, list[Item]] = {}
        self._by_label: dict[tuple[str, str, str], list[Item]] = {}
        for item in items:
            namespace = namespace_of(item)
            self._by_namespace.setdefault(namespace, []).append(item)
            for key, value in labels_of(item).items():
                self._by_label.setdefault((namespace, key, value), []).append(item)

    def replaced(self, old: Item, new: Item) -> "LabelIndex[Item]":
        """A copy with old swapped for new, which has old's namespace and labels (only the
        lists that hold old are copied)."""
        namespace = self._namespace_of(old)
        out = copy.copy(self)
        out._by_namespace, out._by_label = dict(self._by_namespace), dict(self._by_label)
        lists = [(out._by_namespace, namespace)] + [(out._by_label, (namespace, key, value)) for key, value in self._labels_of(old).items()]
        for table, key in lists:
            table[key] = [new if item is old else item for item in table[key]]
        return out

    def added(self, item: Item, order: Callable[[Item], tuple]) -> "LabelIndex[Item]":
        """A copy with item filed where order puts it among the others (the order they were
        given in); only the lists that take it are copied."""
        return self._changed(item, lambda items: items[:bisect.bisect(items, order(item), key=order)] + [item] +
                             items[bisect.bisect(items, order(item), key=order):])

    def removed(self, item: Item) -> "LabelIndex[Item]":
        """A copy without item (only the lists that held it are copied)."""
        return self._changed(item, lambda items: [other for other in items if other is not item])

    def _changed(self, item: Item, change: Callable[[list[Item]], list[Item]]) -> "LabelIndex[Item]":
        namespace = self._namespace_of(item)
        out = copy.copy(self)
        out._by_namespace, out._by_label = dict(self._by_namespace), dict(self._by_label)
        lists = [(out._by_namespace, namespace)] + [(out._by_label, (namespace, key, value)) for key, value in self._labels_of(item).items()]
        for table, key in lists:
            table[key] = change(table.get(key, []))
            if not table[key]:
                del table[key]
        return out

    def select(self, namespace: str, selector: dict) -> list[Item]:
        """The items of namespace whose labels selector matches, in the order given."""
        if not selector:
            return list(self._by_namespace.get(namespace, ()))
        candidates = min((self._by_label.get((namespace, key, value), ()) for key, value in selector.items()), key=len)
        return [item for item in candidates if labels_match(selector, self._labels_of(item))]

    def select_in_every_namespace(self, selector: dict) -> list[Item]:
        """The items of every namespace whose labels selector matches, by namespace, then in
        the order given."""
        return [item for namespace in sorted(self._by_namespace) for item in self.select(namespace, selector)]


class SelectorIndex(Generic[Item]):
    """Items (in the order given) that select workloads of their namespace; selector_of gives an
    item's selector, None for one that applies to the whole namespace."""

    def __init__(self, items: list[Item], namespace_of: Callable[[Item], str], selector_of: Callable[[Item], dict | None]):
        self._selector_of = selector_of
        self._without_selector: dict[str, list[Item]] = {}
        # Each selecting item filed once: under its first label, or as matching everything.
        self._by_label: dict[tuple, list[tuple[int, Item]]] = {}
        for position, item in enumerate(items):
            namespace, selector = namespace_of(item), selector_of(item)
            if selector is None:
                self._without_selector.setdefault(namespace, []).append(item)
            else:
                first = next(iter(selector.items()), None)
                self._by_label.setdefault((namespace, first), []).append((position, item))

    def without_selector(self, namespace: str) -> list[Item]:
        """The items of namespace that have no selector, in the order given."""
        return self._without_selector.get(namespace, [])

    def selecting(self, namespace: str, labels: dict) -> list[Item]:
        """The items of namespace whose selector matches labels, in the order given."""
        candidates = list(self._by_label.get((namespace, None), ()))
        for label in labels.items():
            candidates += self._by_label.get((namespace, label), ())
        return [item for dummy, item in sorted(candidates, key=_position) if labels_match(self._selector_of(item), labels)]


def _position(candidate: tuple) -> int:
    return candidate[0]

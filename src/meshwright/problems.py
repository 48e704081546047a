"""The one error type of validation: where (file, line, resource, field path) and what.

A problem is an error (the mesh does not validate) or a warning: printed, prefixed
"warning:", but the mesh still validates (validate_resources keeps them apart).

A leaf of the package (standard library only): loading, input validation, the checks of
compiled output and delivery all report through it, so it imports none of them."""

from __future__ import annotations

from dataclasses import dataclass


def format_path(path: tuple) -> str:
    """("spec", "http", 0, "route") -> "spec.http[0].route"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


ERROR, WARNING = "error", "warning"


class PrunedList(list):
    """A list with invalid items left out, remembering where each kept item was written, so
    that later checks report paths (and lines) of the document as written."""

    def __init__(self, items: list, original_indexes: list[int]):
        super().__init__(items)
        self.original_indexes = original_indexes


def original_path(root: object, path: tuple) -> tuple:
    """A path into pruned values (root) -> the same field's path in the document as written."""
    out = []
    value = root
    for part in path:
        out.append(value.original_indexes[part] if isinstance(value, PrunedList) and isinstance(part, int) else part)
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            value = None
    return tuple(out)


def _printable(text: str) -> str:
    """A file or resource name with a newline or other control character, shown escaped, so
    that it cannot pass for another line of the report."""
    return text if text.isprintable() else ascii(text)


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    resource: str  # "Kind/namespace/name", or "" for file-level problems
    path: tuple
    message: str
    severity: str = "error"  # ERROR or WARNING

    @property
    def is_warning(self) -> bool:
        return self.severity == WARNING

    def __str__(self) -> str:
        parts = [f"{_printable(self.file)}:{self.line}"]
        if self.resource:
            parts.append(_printable(self.resource))
        if self.path:
            parts.append(format_path(self.path))
        parts.append(("warning: " if self.is_warning else "") + self.message)
        return ": ".join(parts)


class Problems:
    """Collects problems about resources; the order they are reported in is the file order."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, resource, path: tuple, message: str, severity: str = ERROR) -> None:
        """A problem at path of resource; a path into the pruned resource that later checks
        see is reported as the path of that field in the document as written."""
        path = original_path({"spec": resource.spec, "metadata": resource.metadata}, tuple(path))
        self.items.append(Problem(resource.source.file, resource.line_of(path), resource.ref, path, message, severity))

    def warn(self, resource, path: tuple, message: str) -> None:
        self.add(resource, path, message, WARNING)

    def extend(self, problems) -> None:
        self.items.extend(problems)

    def __bool__(self) -> bool:
        """Whether there is an error (warnings alone do not fail validation)."""
        return any(not p.is_warning for p in self.items)

    def sorted(self) -> list[Problem]:
        return sorted(set(self.items), key=lambda p: (p.file, p.line, p.resource, format_path(p.path), p.message))


class MeshConfigError(Exception):
    """Raised with the full list when a mesh config does not validate."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

"""Load multi-document YAML files and directories into Resources, keeping file and line.

Loading does only what is needed to know what a document is (apiVersion, kind, name);
everything else about its shape is the validator's job, so all problems are reported
together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import yaml

from meshwright.model.resource import Resource, Source
from meshwright.validate.problems import Problem

YAML_SUFFIXES = (".yaml", ".yml")
DEFAULT_NAMESPACE = "default"


@dataclass
class LoadResult:
    resources: list[Resource] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def load_paths(paths: list[str]) -> LoadResult:
    """Load every YAML document under paths (files, or directories walked in sorted order)."""
    result = LoadResult()
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if name.endswith(YAML_SUFFIXES):
                        _load_file(os.path.join(root, name), result)
        elif os.path.exists(path):
            _load_file(path, result)
        else:
            result.problems.append(Problem(path, 0, "", (), "no such file or directory"))
    return result


def _load_file(path: str, result: LoadResult) -> None:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        result.problems.append(Problem(path, 0, "", (), f"cannot read: {error}"))
        return
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as error:
        line = error.problem_mark.line + 1 if getattr(error, "problem_mark", None) else 0
        result.problems.append(Problem(path, line, "", (), f"not valid YAML: {error.problem or error}"))
        return
    for node in nodes:
        if node is None:
            continue
        _load_document(path, node, result)


def _load_document(path: str, node: yaml.Node, result: LoadResult) -> None:
    line = node.start_mark.line + 1
    lines: dict = {}
    duplicates: list[tuple[tuple, int]] = []
    value = _to_python(node, (), lines, duplicates)
    if value is None:
        return
    if not isinstance(value, dict):
        result.problems.append(Problem(path, line, "", (), "a document must be a mapping with apiVersion, kind, metadata and spec"))
        return
    metadata = value.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    kind = value.get("kind") if isinstance(value.get("kind"), str) else ""
    name = metadata.get("name") if isinstance(metadata.get("name"), str) else ""
    namespace = metadata.get("namespace") if isinstance(metadata.get("namespace"), str) else DEFAULT_NAMESPACE
    resource = Resource(
        api_version=value.get("apiVersion") if isinstance(value.get("apiVersion"), str) else "",
        kind=kind,
        name=name,
        namespace=namespace,
        metadata=metadata,
        spec=value.get("spec") if isinstance(value.get("spec"), dict) else {},
        source=Source(path, line),
        document=value,
        lines=lines,
    )
    result.resources.append(resource)
    for dup_path, dup_line in duplicates:
        result.problems.append(Problem(path, dup_line, resource.ref, dup_path, "duplicate key (YAML keeps only the last one)"))


_scalars = yaml.SafeLoader("")


def _to_python(node: yaml.Node, path: tuple, lines: dict, duplicates: list) -> object:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        _scalars.flatten_mapping(node)
        out: dict = {}
        for key_node, value_node in node.value:
            key = _scalars.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                key = str(key)
            if key in out:
                duplicates.append((path + (key,), key_node.start_mark.line + 1))
            out[key] = _to_python(value_node, path + (key,), lines, duplicates)
            # A field is where its key is written, not where a block value starts below it.
            lines[path + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, path + (index,), lines, duplicates) for index, item in enumerate(node.value)]
    return _scalars.construct_object(node, deep=True)

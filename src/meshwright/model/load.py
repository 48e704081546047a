"""Load multi-document YAML files and directories into Resources, keeping file and line.

Loading does only what is needed to know what a document is (apiVersion, kind, name);
everything else about its shape is the validator's job, so all problems are reported
together.

Input is bounded (docs/cli.md, "Limits"): only regular files are read (a FIFO or a device
would hang or never end), the total size, the size of one document, the number of documents
and the nesting depth are capped, and YAML aliases are refused (an alias "bomb" expands a
few lines into gigabytes; Istio resources never need them). Each limit's error names it and
the environment variable that raises it.
"""

from __future__ import annotations

import copy
import os
import re
import stat
from dataclasses import dataclass, field

import yaml

from meshwright.collector import cyclic_collector_paused
from meshwright.forked import available_workers, forked_map
from meshwright.model.resource import Resource, Source
from meshwright.problems import Problem

YAML_SUFFIXES = (".yaml", ".yml")
DEFAULT_NAMESPACE = "default"


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """libyaml's parser where PyYAML has it (the pure-Python one otherwise), with a resolver
    that types a plain scalar as a string at once when no implicit type can start with its
    first character ("ServiceEntry", "reviews.default...": most of a mesh config)."""

    _typed_first = frozenset(key for key in yaml.SafeLoader.yaml_implicit_resolvers if key)

    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode:
            if value and (not implicit[0] or value[0] not in self._typed_first):
                return _STR
            return super().resolve(kind, value, implicit)
        return _MAP if kind is yaml.MappingNode else _SEQ


@dataclass(frozen=True)
class Limit:
    variable: str  # the environment variable that sets it
    default: int
    maximum: int
    unit: str  # how the value is counted, for messages

    def value(self) -> int:
        """The limit in force; ValueError naming the variable when its value is not a limit."""
        text = os.environ.get(self.variable)
        if text is None:
            return self.default
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= self.maximum):
            raise ValueError(f"{text!r} is not a limit: expected a whole number of {self.unit} from 1 to {self.maximum}")
        return int(text)

    def exceeded(self, what: str, limit: int) -> str:
        return f"{what} (the limit is {limit} {self.unit}: raise it with the environment variable {self.variable})"


# Well above a 10,000-service estate (about 50,000 documents, 25 MB); one document as large as
# Kubernetes stores one object (1.5 MiB); nesting far deeper than any Istio resource.
MAX_INPUT_MB = Limit("MESHWRIGHT_MAX_INPUT_MB", 64, 4096, "MB")
MAX_DOCUMENT_KB = Limit("MESHWRIGHT_MAX_DOCUMENT_KB", 1536, 1024 * 1024, "KB")
MAX_DOCUMENTS = Limit("MESHWRIGHT_MAX_DOCUMENTS", 200_000, 100_000_000, "documents")
MAX_DEPTH = Limit("MESHWRIGHT_MAX_DEPTH", 100, 500, "levels")  # libyaml itself stops at 1000

# A line that starts or ends a document: libyaml ends any scalar there, so the text between
# two of them is one document, and can be measured before it is parsed.
_DOCUMENT_MARKER = re.compile(r"^(?:---|\.\.\.)(?=[ \t\r\n]|$)", re.MULTILINE)
# Characters YAML does not allow in a stream (PyYAML's Reader.NON_PRINTABLE).
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010ffff]")
_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}
_SCALAR_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "timestamp", "binary")}
_STR, _MAP, _SEQ, _MERGE = (f"tag:yaml.org,2002:{name}" for name in ("str", "map", "seq", "merge"))


@dataclass
class LoadResult:
    resources: list[Resource] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


class _Refused(Exception):
    """A problem that stops loading a file (or, with stop_all, everything)."""

    def __init__(self, message: str, line: int = 0, path: tuple = (), stop_all: bool = False):
        super().__init__(message)
        self.line, self.path, self.stop_all = line, path, stop_all


@dataclass
class _Budget:
    """What is left of the limits, over all files of one load."""

    bytes_left: int
    documents_left: int
    document_bytes: int
    depth: int
    limits: dict


def _budget() -> _Budget | Problem:
    values = {}
    for limit in (MAX_INPUT_MB, MAX_DOCUMENT_KB, MAX_DOCUMENTS, MAX_DEPTH):
        try:
            values[limit.variable] = limit.value()
        except ValueError as error:
            return Problem(f"environment variable {limit.variable}", 0, "", (), str(error))
    return _Budget(values[MAX_INPUT_MB.variable] * 1_000_000, values[MAX_DOCUMENTS.variable],
                   values[MAX_DOCUMENT_KB.variable] * 1024, values[MAX_DEPTH.variable], values)


@cyclic_collector_paused()  # documents are trees: the collector's passes would walk everything loaded so far
def load_paths(paths: list[str], parsed: dict | None = None) -> LoadResult:
    """Load every YAML document under paths (files, or directories walked in sorted order).
    parsed: what an earlier load of the same paths kept (an empty dict the first time); a
    document whose file, first line and text are the same is not parsed again but gives the
    very resources it gave then (the watched folder's reload after an edit of one document).
    It is left holding this load's documents only."""
    result = LoadResult()
    budget = _budget()
    if isinstance(budget, Problem):
        result.problems.append(budget)
        return result
    files = _read_files(paths, budget, result)
    documents = _ParsedDocuments(parsed)
    fresh = [(path, first_line, chunk) for path, split in files if isinstance(split, list)
             for first_line, chunk in split if documents.before.get((path, first_line, chunk)) is None]
    outcomes = dict(zip(fresh, _parse_all(fresh, budget.depth)))
    for path, split in files:
        if isinstance(split, Problem):
            result.problems.append(split)
            continue
        for first_line, chunk in split:
            key = (path, first_line, chunk)
            found = documents.before.get(key) or outcomes[key]
            if isinstance(found, Problem):  # not YAML: the rest of the file is not read
                result.problems.append(found)
                break
            documents.keep(key, found, result)
    return result


def _read_files(paths: list[str], budget: _Budget, result: LoadResult) -> list[tuple[str, list[tuple[int, str]] | Problem]]:
    """(path, its documents or why it is not read) of every file, in order; the reading stops
    at the first limit that stops everything."""
    files: list[tuple[str, list[tuple[int, str]] | Problem]] = []
    for path in _files(paths, result):
        try:
            files.append((path, _documents(_decode(_read_regular_file(path, budget)), budget)))
        except _Refused as refused:
            files.append((path, Problem(path, refused.line, "", refused.path, str(refused))))
            if refused.stop_all:
                break
    return files


# Below this much text, parsing in parts costs more (forks, sending the results back) than it saves.
PARALLEL_FROM_BYTES = 4_000_000
# This process has read and split the files, and unpickles what the copies parsed: its share
# is smaller (measured at 10,000 services), so that all finish together.
_OWN_SHARE = 0.85


def _parse_all(documents: list[tuple[str, int, str]], max_depth: int) -> list[LoadResult | Problem]:
    """Each document parsed: its resources and problems, or the problem that it is not YAML.
    A large load is parsed in parts side by side, on as many cores as there are."""
    workers = available_workers() if sum(len(chunk) for dummy, dummy, chunk in documents) >= PARALLEL_FROM_BYTES else 1
    parts = _contiguous_parts(documents, workers)
    return [outcome for part in forked_map(lambda part: [_parsed(*document, max_depth) for document in part], parts) for outcome in part]


def _contiguous_parts(documents: list[tuple[str, int, str]], workers: int) -> list[list[tuple[str, int, str]]]:
    """documents in order, cut into workers parts of about equal text; the first (this
    process's) _OWN_SHARE times each other's size."""
    if workers <= 1:
        return [documents]
    total = sum(len(chunk) for dummy, dummy, chunk in documents)
    shares = [_OWN_SHARE] + [1.0] * (workers - 1)
    ends = [total * sum(shares[:i + 1]) / sum(shares) for i in range(workers)]
    parts: list[list[tuple[str, int, str]]] = [[] for dummy in range(workers)]
    done, index = 0, 0
    for document in documents:
        while index < workers - 1 and done >= ends[index]:
            index += 1
        parts[index].append(document)
        done += len(document[2])
    return parts


def _parsed(path: str, first_line: int, chunk: str, max_depth: int) -> LoadResult | Problem:
    found = LoadResult()
    try:
        _parse_document(path, first_line, chunk, max_depth, found)
    except _Refused as refused:
        return Problem(path, refused.line, "", refused.path, str(refused))
    return found


def _files(paths: list[str], result: LoadResult):
    """The files to read: each path given, or the YAML files of a directory (symbolic links to
    directories are not followed, so a link loop cannot make the walk endless). Hidden files and
    folders are left out: a ConfigMap mounted as a folder holds each file twice, once in a hidden
    timestamped folder (Kubernetes' atomic writer: `..2026_12_08...`, `..data`)."""
    for path in paths:
        if os.path.isdir(path):
            found = False
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.endswith(YAML_SUFFIXES) and not name.startswith("."):
                        found = True
                        yield os.path.join(root, name)
            if not found:
                result.problems.append(Problem(path, 0, "", (), "no .yaml or .yml files in this directory"))
        elif os.path.lexists(path):
            yield path
        else:
            result.problems.append(Problem(path, 0, "", (), "no such file or directory"))


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def _read_regular_file(path: str, budget: _Budget) -> bytes:
    """The file's bytes, if it is a regular file within what is left of the size limit.
    Opened without blocking and checked again once open, so a FIFO never hangs the load."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise _Refused(f"cannot read: {_file_kind(mode)}; only regular files are read")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as error:
        raise _Refused(f"cannot read: {error.strerror or error}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _Refused(f"cannot read: {_file_kind(info.st_mode)}; only regular files are read")
        data = handle.read(budget.bytes_left + 1) if info.st_size <= budget.bytes_left else b""
    if info.st_size > budget.bytes_left or len(data) > budget.bytes_left:
        limit = budget.limits[MAX_INPUT_MB.variable]
        raise _Refused(MAX_INPUT_MB.exceeded(f"the mesh config is larger than {limit} MB in all", limit), stop_all=True)
    budget.bytes_left -= len(data)
    return data


def _decode(data: bytes) -> str:
    """UTF-8 text (a byte order mark is allowed), with a message that says what it is if not."""
    for bom, encoding in _BOMS.items():
        if data.startswith(bom):
            raise _Refused(f"cannot read: the file is {encoding} text; meshwright reads UTF-8 (convert it, e.g. iconv -f {encoding} -t UTF-8)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise _Refused(f"cannot read: not UTF-8 text (byte 0x{data[error.start]:02x} at line {line}); save the file as UTF-8", line) from None
    bad = _NON_PRINTABLE.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        raise _Refused(f"cannot read: control character U+{ord(bad.group()):04X} at line {line}; YAML allows only printable characters (is this a "
                       "binary file?)", line)
    return text


def _documents(text: str, budget: _Budget) -> list[tuple[int, str]]:
    """(first line, text) of each document of a stream, all within the size and count limits
    (checked before any is parsed)."""
    starts = [0] + [match.start() for match in _DOCUMENT_MARKER.finditer(text) if match.start() > 0]
    documents = []
    line = 1
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(text)
        chunk = text[start:end]
        if chunk.strip():
            if budget.documents_left == 0:
                limit = budget.limits[MAX_DOCUMENTS.variable]
                raise _Refused(MAX_DOCUMENTS.exceeded(f"the mesh config has more than {limit} documents", limit), line, stop_all=True)
            budget.documents_left -= 1
            if len(chunk) > budget.document_bytes // 4 and len(chunk.encode()) > budget.document_bytes:
                limit = budget.limits[MAX_DOCUMENT_KB.variable]
                raise _Refused(MAX_DOCUMENT_KB.exceeded(f"the document at line {line} is larger than {limit} KB", limit), line)
            documents.append((line, chunk))
        line += chunk.count("\n")
    return documents


class _ParsedDocuments:
    """(file, first line, text) -> (resources, problems) of a document: those of the last
    load to use again, and this load's, which replace them."""

    def __init__(self, kept: dict | None) -> None:
        self.kept = kept
        self.before = dict(kept) if kept is not None else {}
        if kept is not None:
            kept.clear()

    def keep(self, key: tuple[str, int, str], found: LoadResult, result: LoadResult) -> None:
        """A document's resources and problems, parsed now or kept from before, into result."""
        result.resources += found.resources
        result.problems += found.problems
        if self.kept is not None:
            self.kept[key] = found


def _parse_document(path: str, first_line: int, chunk: str, max_depth: int, result: LoadResult) -> None:
    """The document's resource (and problems) into result; _Refused if it is not YAML."""
    try:
        node = yaml.compose(chunk, Loader=_Loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = first_line + mark.line if mark else first_line
        raise _Refused(f"not valid YAML: {getattr(error, 'problem', None) or error}{_hint(error)}", line) from None
    except RecursionError:
        raise _Refused("not valid YAML: nested too deeply", first_line) from None
    if node is not None:
        try:
            _load_document(path, node, first_line - 1, max_depth, result)
        except _Refused as refused:
            result.problems.append(Problem(path, refused.line, "", refused.path, str(refused)))


def _hint(error: yaml.YAMLError) -> str:
    if "alias" in str(getattr(error, "context", "") or ""):
        return " (a '*' that starts a value starts a YAML alias: quote wildcards, as in \"*.example.com\")"
    return ""


def _load_document(path: str, node: yaml.Node, line_offset: int, depth: int, result: LoadResult) -> None:
    line = node.start_mark.line + 1 + line_offset
    reader = _DocumentReader(line_offset, depth)
    value = reader.value(node, (), 0)
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
        lines=reader.lines,
    )
    result.resources.append(resource)
    for dup_path, dup_line in reader.duplicates:
        result.problems.append(Problem(path, dup_line, resource.ref, dup_path, "duplicate key (YAML keeps only the last one)"))


_constructor = yaml.SafeLoader("")


class _DocumentReader:
    """A composed document as plain Python values, with the line of every field path.

    Refuses what Istio resources never hold: aliases (a node met twice), merge keys, tags
    other than the plain ones, keys that are not plain values, and nesting past the limit."""

    def __init__(self, line_offset: int, max_depth: int):
        self.line_offset = line_offset
        self.max_depth = max_depth
        self.lines: dict = {}
        self.duplicates: list[tuple[tuple, int]] = []
        self.seen: set[int] = set()

    def line(self, node: yaml.Node) -> int:
        return node.start_mark.line + 1 + self.line_offset

    def value(self, node: yaml.Node, path: tuple, depth: int) -> object:
        if id(node) in self.seen:
            # The alias is not in the composed document, only what it names: point at the
            # field (or the list) that holds it.
            line = self.lines.get(path) or self.lines.get(path[:-1]) or self.line(node)
            raise _Refused(f"YAML aliases (*name) are not accepted: write the value anchored at line {self.line(node)} out in full", line, path)
        self.seen.add(id(node))
        self.lines[path] = self.line(node)
        if depth > self.max_depth:
            raise _Refused(MAX_DEPTH.exceeded(f"nested more than {self.max_depth} levels deep", self.max_depth), self.line(node), path)
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            self.plain_tag(node, _SEQ, path)
            return [self.value(item, path + (index,), depth + 1) for index, item in enumerate(node.value)]
        return self.scalar(node, path)

    def mapping(self, node: yaml.MappingNode, path: tuple, depth: int) -> dict:
        self.plain_tag(node, _MAP, path)
        out: dict = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused("a key must be a plain value, not a mapping or a list", self.line(key_node), path)
            if key_node.tag == _MERGE:
                raise _Refused("YAML merge keys (<<) are not accepted: write the fields out", self.line(key_node), path)
            key = self.scalar(key_node, path)
            if not isinstance(key, (str, int, float, bool)):
                key = str(key)
            key_line = self.line(key_node)
            if key in out:
                self.duplicates.append((path + (key,), key_line))
            field_path = path + (key,)
            # A field is where its key is written, not where a block value starts below it.
            self.lines[field_path] = key_line
            out[key] = self.value(value_node, field_path, depth + 1)
            self.lines[field_path] = key_line
        return out

    def plain_tag(self, node: yaml.Node, expected: str, path: tuple) -> None:
        if node.tag != expected:
            raise _Refused(f"YAML tag {node.tag} is not accepted here", self.line(node), path)

    def scalar(self, node: yaml.ScalarNode, path: tuple) -> object:
        if node.tag == _STR:
            return node.value
        if node.tag not in _SCALAR_TAGS:
            raise _Refused(f"YAML tag {node.tag} is not accepted here", self.line(node), path)
        try:
            return _constructor.yaml_constructors[node.tag](_constructor, node)
        except (ValueError, OverflowError, yaml.YAMLError) as error:
            shown = node.value if len(node.value) <= 40 else f"{node.value[:20]}...({len(node.value)} characters)"
            raise _Refused(f"cannot read the value {shown}: {_first_sentence(error)}", self.line(node), path) from None


def _first_sentence(error: Exception) -> str:
    return str(error).split(";", maxsplit=1)[0].strip()


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def resource_from_document(document: dict, source: str = "<change>") -> Resource:
    """An Istio API document (as YAML gives it) as the loader makes it; source names it in
    problems. What it is not (a mapping with apiVersion, kind, metadata, spec) validation says."""
    document = copy.deepcopy(document) if isinstance(document, dict) else {}  # the caller's dict stays the caller's
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    spec = document.get("spec") if isinstance(document.get("spec"), dict) else {}
    return Resource(_text(document.get("apiVersion")), _text(document.get("kind")), _text(metadata.get("name")),
                    _text(metadata.get("namespace")) or DEFAULT_NAMESPACE, metadata, spec, Source(source, 1), document=document)

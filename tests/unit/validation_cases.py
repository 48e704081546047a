"""Table-driven validation cases: a sound base mesh plus one case file with one mistake.

A case's YAML marks the line the problem must point at with a trailing `#!` comment, so
each table row states file:line, resource, field path and the key words of the message.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from meshwright.check.pipeline import validate_mesh
from meshwright.model.load import load_paths
from meshwright.problems import Problem

MARK = "#!"

# Services reviews (HTTP, subsets v1/v2), ratings (HTTP) and db (TCP), and one client proxy.
BASE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, labels: {app: reviews, version: v1}}
  - {address: 10.0.0.2, labels: {app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.3}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.0.0.4}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: default}
spec: {address: 127.0.0.1, labels: {app: client}}
"""


@dataclass(frozen=True)
class Case:
    id: str
    yaml: str  # the case file; its `#!` line is where the problem must point
    resource: str  # Kind/namespace/name
    path: str  # the field path as printed
    words: tuple[str, ...]  # what the message must say

    def __str__(self) -> str:
        return self.id


def marked_line(text: str) -> int:
    lines = [number for number, line in enumerate(text.splitlines(), 1) if line.rstrip().endswith(MARK)]
    assert len(lines) == 1, f"a case marks exactly one line with {MARK}"
    return lines[0]


def validate_texts(tmp_path, files: dict[str, str]) -> list[Problem]:
    """Write files (name -> YAML) into tmp_path and validate them all, as `validate DIR` does."""
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    _, problems = validate_mesh(load_paths([str(tmp_path)]))
    return problems


def check_case(tmp_path, case: Case, base: str = BASE) -> None:
    """The case gives exactly one problem, at the marked line, naming resource and path."""
    text = textwrap.dedent(case.yaml)
    problems = validate_texts(tmp_path, {"base.yaml": base, "case.yaml": text})
    shown = "\n".join(str(p) for p in problems)
    assert len(problems) == 1, f"{case.id}: expected one problem, got:\n{shown}"
    problem = problems[0]
    expected_prefix = f"{tmp_path / 'case.yaml'}:{marked_line(text)}: {case.resource}: " + (f"{case.path}: " if case.path else "")
    assert str(problem).startswith(expected_prefix), f"{case.id}: expected {expected_prefix!r}...\ngot {problem}"
    for word in case.words:
        assert word in problem.message, f"{case.id}: {word!r} not in {problem.message!r}"
